//! Per-document settings and the receipt every write returns.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::fs::{Fs, default_fs};
use crate::json::Format;
use crate::version::Version;

/// How hard a write works to survive a power loss. What each level promises:
///
/// | level | survives a process crash | survives a power loss |
/// |---|---|---|
/// | [`Full`](Durability::Full) | old or new, never torn | the new version, once the write returned |
/// | [`Data`](Durability::Data) | old or new, never torn | old or new, never torn (the rename itself may be lost) |
/// | [`None`](Durability::None) | old or new, never torn | **no promise**: an empty or partial file is possible |
///
/// Whatever the level, readers see either the complete old or the complete new version
/// while the machine is up: the new bytes only become visible through an atomic rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// `fsync` the temp file, rename, then `fsync` the directory (and every directory
    /// the write created, and its parent). The default.
    #[default]
    Full,
    /// `fdatasync` the temp file, rename, no directory sync: after a power loss you get
    /// the old or the new version, complete, but a returned write may be rolled back.
    Data,
    /// No syncs at all. For caches and tests: after a power loss the file may be empty.
    None,
}

impl Durability {
    /// Its name as the CLI spells it: `full`, `data` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Full => "full",
            Durability::Data => "data",
            Durability::None => "none",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Durability::Full),
            "data" => Ok(Durability::Data),
            "none" => Ok(Durability::None),
            _ => Err(format!("unknown durability {s:?}: use full, data or none")),
        }
    }
}

/// What a read does when the document is damaged (empty or not valid JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadPolicy {
    /// Fail with [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt). The default.
    #[default]
    Strict,
    /// Return the newest backup that parses, marked as recovered and logged with
    /// `tracing::warn!`. Valid JSON of the wrong shape is never rolled back.
    FallbackToBackup,
}

/// Owner and permission bits a write gives the file (see [`Options::mode`],
/// [`Options::create_mode`] and [`Options::owner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Perms {
    /// Exact bits for every write; `None` keeps the replaced file's.
    pub mode: Option<u32>,
    /// Bits, before the umask, for a file that does not exist yet.
    pub create_mode: u32,
    /// Owner and group for every write; `None` keeps the replaced file's.
    pub owner: Option<(u32, u32)>,
}

impl Default for Perms {
    fn default() -> Self {
        Perms {
            mode: None,
            create_mode: 0o644,
            owner: None,
        }
    }
}

/// The signature of [`Options::on_temp_created`]'s hook.
type TempHookFn = dyn Fn(&Path) -> io::Result<()> + Send + Sync;

/// What [`Options::on_temp_created`] calls.
#[derive(Clone)]
pub(crate) struct TempHook(Arc<TempHookFn>);

impl TempHook {
    pub(crate) fn call(&self, temp: &Path) -> io::Result<()> {
        (self.0)(temp)
    }

    /// Whether `other` is this very hook (a clone of the same one).
    pub(crate) fn same(&self, other: &TempHook) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for TempHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TempHook(..)")
    }
}

/// Settings for a [`Doc`](crate::Doc) or a [`Store`](crate::Store).
///
/// A builder: start from the defaults ([`Options::new`]) and change what differs.
///
/// ```
/// use std::time::Duration;
/// use statefile::{Doc, Durability, Options};
///
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("cache/index.json");
/// let opts = Options::new()
///     .durability(Durability::Data) // fdatasync the file; no directory sync
///     .backups(3)                   // keep .index.json.bak, .bak.2, .bak.3
///     .lock_timeout(Duration::from_secs(2))
///     .create_dirs(true)            // create cache/ if it is missing
///     .fallback(true);              // a damaged file reads as its newest good backup
/// let doc = Doc::<Vec<u32>>::open_with(&path, opts)?;
/// for n in 0..5 {
///     doc.write(&vec![n])?;
/// }
/// assert_eq!(doc.backups()?.len(), 3);
/// assert_eq!(doc.options().get_backups(), 3);
/// # Ok::<(), statefile::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) durability: Durability,
    pub(crate) backups: usize,
    pub(crate) lock_timeout: Duration,
    pub(crate) read_policy: ReadPolicy,
    pub(crate) verify: bool,
    pub(crate) create_dirs: bool,
    pub(crate) format: Format,
    pub(crate) perms: Perms,
    pub(crate) max_batch_calls: usize,
    pub(crate) max_batch_bytes: u64,
    pub(crate) max_document_bytes: u64,
    pub(crate) fs: Arc<dyn Fs>,
    pub(crate) temp_created: Option<TempHook>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Full,
            backups: 1,
            lock_timeout: Duration::from_secs(10),
            read_policy: ReadPolicy::Strict,
            verify: false,
            create_dirs: false,
            format: Format::Pretty,
            perms: Perms::default(),
            max_batch_calls: 64,
            max_batch_bytes: 16 << 20,
            max_document_bytes: u64::MAX,
            fs: default_fs(),
            temp_created: None,
        }
    }
}

impl Options {
    /// The defaults: full durability, 1 backup, 10 s lock timeout, strict reads, no
    /// verification, no directory creation, pretty output, batches of at most 64 calls
    /// and 16 MiB, no limit on a document's size.
    pub fn new() -> Options {
        Options::default()
    }

    /// How writes are synced (default [`Durability::Full`]).
    pub fn durability(mut self, d: Durability) -> Options {
        self.durability = d;
        self
    }

    /// How many previous versions to keep as `.name.bak`, `.name.bak.2`, ... (default 1;
    /// 0 turns backups off).
    pub fn backups(mut self, n: usize) -> Options {
        self.backups = n;
        self
    }

    /// How long a write waits for the document's lock before failing with
    /// [`ErrorKind::LockTimeout`](crate::ErrorKind::LockTimeout) (default 10 s).
    pub fn lock_timeout(mut self, t: Duration) -> Options {
        self.lock_timeout = t;
        self
    }

    /// What reads do with a damaged document (default [`ReadPolicy::Strict`]).
    pub fn read_policy(mut self, p: ReadPolicy) -> Options {
        self.read_policy = p;
        self
    }

    /// Shorthand for `read_policy(ReadPolicy::FallbackToBackup)` when `on`.
    pub fn fallback(self, on: bool) -> Options {
        self.read_policy(if on {
            ReadPolicy::FallbackToBackup
        } else {
            ReadPolicy::Strict
        })
    }

    /// Re-read the temp file after syncing it and check it hashes to what was written
    /// (and parses, for JSON documents) before renaming it into place: for flaky media
    /// and network file systems. Off by default.
    pub fn verify(mut self, on: bool) -> Options {
        self.verify = on;
        self
    }

    /// Create missing parent directories on write, syncing each one created and its
    /// parent (with full durability). Off by default.
    pub fn create_dirs(mut self, on: bool) -> Options {
        self.create_dirs = on;
        self
    }

    /// How documents are laid out (default pretty: 2-space indent, trailing newline).
    pub fn format(mut self, f: Format) -> Options {
        self.format = f;
        self
    }

    /// Give every written file exactly these permission bits (`0o600`, ...; the umask
    /// does not apply), instead of keeping the replaced file's. The temp file is
    /// created 0600 and gets them before any content is written.
    pub fn mode(mut self, bits: u32) -> Options {
        self.perms.mode = Some(bits & 0o7777);
        self
    }

    /// The permission bits, before the umask, of a file that does not exist yet
    /// (default `0o644`; `0o666` is what `open(2)` callers such as Node's `fs` use).
    /// A replaced file keeps its own mode unless [`Options::mode`] is set.
    pub fn create_mode(mut self, bits: u32) -> Options {
        self.perms.create_mode = bits & 0o7777;
        self
    }

    /// Give every written file this owner and group, instead of the replaced file's.
    /// As with the default, a refusal (only root may give files away) is ignored and
    /// the file keeps the writer's own.
    pub fn owner(mut self, uid: u32, gid: u32) -> Options {
        self.perms.owner = Some((uid, gid));
        self
    }

    /// Call `hook` with the path of each temp file a write creates, right after step 1
    /// of the protocol (the file exists, empty, mode 0600, before its owner, mode and
    /// content are set), on the writing thread and with the document's lock held. For
    /// callers that track temp files, as `write-file-atomic`'s `tmpfileCreated` does.
    /// If `hook` fails, the write stops there: the temp file is removed, the target is
    /// untouched, and the write fails with the hook's error as its source (the kind
    /// follows from it, as for any I/O error).
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use statefile::Options;
    ///
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("servers.json");
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let opts = Options::new().on_temp_created(move |temp| {
    ///     log.lock().unwrap().push(temp.to_path_buf());
    ///     Ok(())
    /// });
    /// statefile::write_atomic_with(&path, b"{}", &opts)?;
    /// let temps = seen.lock().unwrap();
    /// assert_eq!(temps.len(), 1);
    /// assert!(!temps[0].exists(), "renamed into place by now");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_temp_created(
        mut self,
        hook: impl Fn(&Path) -> io::Result<()> + Send + Sync + 'static,
    ) -> Options {
        self.temp_created = Some(TempHook(Arc::new(hook)));
        self
    }

    /// Bounds of group commit: concurrent writes of one document in this process are
    /// batched into one durable write, at most `calls` calls per batch (default 64), and
    /// a batch takes no further call once the values its calls worked on add up to
    /// `bytes` (default 16 MiB: each update counts the document's size, each write its
    /// value's). A batch always takes at least one call; `calls` = 1 gives every call
    /// its own write. A call waits for at most the batches queued before it, so none
    /// starves; the bounds keep each batch's time and memory in check.
    ///
    /// Calls batched together must agree on the document's format, backups and
    /// permissions; the batch syncs at the strongest durability any of them asks for.
    pub fn max_batch(mut self, calls: usize, bytes: u64) -> Options {
        self.max_batch_calls = calls.max(1);
        self.max_batch_bytes = bytes.max(1);
        self
    }

    /// The largest document, in bytes, that is read into memory or written (default:
    /// no limit). For a service that reads files others can write: without a limit, a
    /// sparse 20 GB file at a document's name is read (and the memory for it taken)
    /// whole.
    ///
    /// A read of a document or a backup longer than `n` bytes fails with
    /// [`ErrorKind::Serialize`](crate::ErrorKind::Serialize) before reading any of it,
    /// and never reads more than `n` + 1 bytes, even of a file that grows meanwhile.
    /// Updates, patches, appends and transactions read the document the same way. A
    /// write whose bytes (as laid out by [`Options::format`]) come to more than `n`
    /// fails the same way with nothing written: the temp file is removed, the document
    /// and its backups are untouched. The error's [`Error::too_large`](crate::Error::too_large)
    /// says the size and the limit.
    ///
    /// A write still replaces a document that is too large to read (it is not read).
    /// A journal's replay applies what the journal holds whatever its size (the journal
    /// bounds its records); what it finds at a document's name or a backup's it looks at
    /// within this limit raised to the journal's largest record (half its ring), so that
    /// a version the journal holds is never taken for a file over the limit (a file over
    /// that is the record's bytes only if exactly as long, hashed no further), replacing
    /// a file over it as a write does. [`write_atomic`](crate::write_atomic)'s
    /// bytes, which need not be a document, are not limited.
    ///
    /// ```
    /// use statefile::{Doc, ErrorKind, Options};
    ///
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("big.json");
    /// let doc = Doc::<Vec<u8>>::open_with(&path, Options::new().max_document_bytes(64))?;
    /// doc.write(&vec![1; 8])?;
    /// let err = doc.write(&vec![1; 100]).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Serialize);
    /// assert_eq!(doc.read()?, vec![1; 8]);
    /// std::fs::File::options().write(true).open(&path)?.set_len(1 << 30)?; // sparse: instant
    /// let err = doc.read().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Serialize);
    /// assert_eq!(err.too_large().map(|t| (t.size, t.limit)), Some((Some(1 << 30), 64)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_document_bytes(mut self, n: u64) -> Options {
        self.max_document_bytes = n;
        self
    }

    /// The file system to use: the real one by default; tests pass simulations.
    pub fn fs(mut self, fs: Arc<dyn Fs>) -> Options {
        self.fs = fs;
        self
    }

    /// The configured durability.
    pub fn get_durability(&self) -> Durability {
        self.durability
    }

    /// The configured number of backups.
    pub fn get_backups(&self) -> usize {
        self.backups
    }

    /// The configured layout of documents (other storage backends write the same bytes).
    pub fn get_format(&self) -> Format {
        self.format
    }

    /// The configured group-commit bounds: (calls, bytes) per batch.
    pub fn get_max_batch(&self) -> (usize, u64) {
        (self.max_batch_calls, self.max_batch_bytes)
    }

    /// The configured largest document, in bytes (`u64::MAX`: no limit).
    pub fn get_max_document_bytes(&self) -> u64 {
        self.max_document_bytes
    }

    /// The configured lock timeout.
    pub fn get_lock_timeout(&self) -> Duration {
        self.lock_timeout
    }
}

/// How a backup was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupMethod {
    /// A hard link to the previous version's inode: free and exact.
    Link,
    /// The file system refused hard links, so the previous version was copied and synced.
    Copy,
}

/// The backup a write made of the version it replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupMade {
    /// Where it is now (`.name.bak`).
    pub path: PathBuf,
    /// The replaced version.
    pub version: Version,
    /// Link or copy.
    pub method: BackupMethod,
}

/// What a successful write did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The file written (symlinks resolved).
    pub path: PathBuf,
    /// The version now on disk.
    pub version: Version,
    /// The version it replaced, if there was one and it was read.
    pub previous: Option<Version>,
    /// Bytes written.
    pub bytes: u64,
    /// The durability reached: what a power loss right now would leave.
    pub durability: Durability,
    /// The backup made of the replaced version, if any.
    pub backup: Option<BackupMade>,
    /// True when the document did not exist before.
    pub created: bool,
    /// True when the new bytes equalled the old ones: no backup was made of the identical
    /// version, but the file was still replaced and synced as `durability` says.
    pub unchanged: bool,
    /// How long the write waited for the document's lock: for a call batched with
    /// others (group commit), how long the batch's leader waited for it.
    pub lock_wait: Duration,
    /// How many calls this one write answered: 1 alone, more when concurrent calls
    /// were batched into it (group commit). All of them carry the same `version`.
    pub batch: usize,
    /// How long this call waited in the document's in-process queue before its batch
    /// began taking the lock (earlier batches running meanwhile); `queued + lock_wait`
    /// is the whole wait before its batch held the lock.
    pub queued: Duration,
}
