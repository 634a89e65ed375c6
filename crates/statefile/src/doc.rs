//! [`Doc<T>`]: one JSON document with typed, versioned, locked reads and writes.

use std::ffi::OsString;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic::{self, Current, Locked, Plan};
use crate::backup::{self, BackupInfo, BackupRef};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::file;
use crate::fs::{FsDir, Metadata};
use crate::group::{self, Fail};
use crate::json;
use crate::lock::LockGuard;
use crate::names::{self, Target};
use crate::options::{Durability, Options, ReadPolicy, Receipt};
use crate::version::Version;

/// A value read from a document, with the version it was read at.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// The version of the bytes it was parsed from: pass it to
    /// [`Doc::write_if`] for compare-and-swap, or send it as an HTTP `ETag`.
    pub version: Version,
    /// Set when the document was damaged and this value came from a backup
    /// (only with [`ReadPolicy::FallbackToBackup`]).
    pub recovered: Option<Recovered>,
}

/// How a fallback read recovered from a damaged document.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovered {
    /// The backup the value came from (1 = newest).
    pub backup: usize,
    /// Its path.
    pub path: PathBuf,
    /// The version of the damaged document.
    pub damaged_version: Version,
    /// What was wrong with the document.
    pub reason: String,
}

/// What [`Doc::delete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Deleted {
    /// The version that was deleted.
    pub version: Version,
    /// Where it went: `.name.bak` (restorable), `.name.corrupt`, or `None` when
    /// backups are off and it was unlinked.
    pub kept_as: Option<PathBuf>,
}

struct CacheEntry<T> {
    /// The document as resolved when it was read (for the journal check of a hit).
    target: Arc<Target>,
    identity: (u64, u64, u64, i128, i128),
    cached_at_ns: i128,
    value: Arc<Versioned<T>>,
}

/// How far a file's mtime must lie before the moment we cached it for the cache to
/// trust it (git's "racily clean" rule): file-system timestamps are coarse (a jiffy,
/// or worse on some file systems), so a write in the same tick could keep the mtime.
const RACY_NS: i128 = 100_000_000;

/// A JSON document on disk holding a `T`.
///
/// Reads need no lock: they open the name and get a complete old or new version.
/// Every write takes the document's lock (`.name.lock`), writes a unique temp file,
/// syncs it, renames it over the document and syncs the directory (see
/// [`Durability`] for what each level promises). Two `Doc`s for the same file, in
/// one process or many, exclude each other.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("jobs.json");
/// use statefile::Doc;
///
/// let doc: Doc<Vec<String>> = Doc::open(&path)?;
/// doc.write(&vec!["build".to_string()])?;
/// doc.update(|jobs| {
///     jobs.push("test".into());
///     Ok(())
/// })?;
/// assert_eq!(doc.read()?, ["build", "test"]);
/// # Ok::<(), statefile::Error>(())
/// ```
pub struct Doc<T> {
    path: PathBuf,
    opts: Options,
    confine: Option<PathBuf>,
    poison: Option<Arc<AtomicBool>>,
    cache: Mutex<Option<CacheEntry<T>>>,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Doc<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doc")
            .field("path", &self.path)
            .field("options", &self.opts)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned> Doc<T> {
    /// A handle to the document at `path` with default [`Options`]. The file need not
    /// exist yet; nothing is touched on disk.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`] when the path does not end in a usable file name
    /// (empty, `..`, NUL, longer than 230 bytes, or one of statefile's sidecar names).
    pub fn open(path: impl AsRef<Path>) -> Result<Doc<T>> {
        Doc::open_with(path, Options::default())
    }

    /// A handle to the document at `path` with the given options.
    ///
    /// # Errors
    /// As [`Doc::open`].
    pub fn open_with(path: impl AsRef<Path>, opts: Options) -> Result<Doc<T>> {
        let path = path.as_ref().to_path_buf();
        names::check_path(&path)?;
        Ok(Doc {
            path,
            opts,
            confine: None,
            poison: None,
            cache: Mutex::new(None),
            _type: PhantomData,
        })
    }

    /// This handle with another read policy (e.g. fallback reads for a server that
    /// must keep answering while strict handles refuse to update a damaged document).
    pub fn with_read_policy(mut self, policy: ReadPolicy) -> Doc<T> {
        self.opts.read_policy = policy;
        self
    }

    /// The same document as values of another type `U`: the same path, options and
    /// store (confinement to its root, its refusal to write after a failed sync), so
    /// it takes the same lock and joins the same group commit as this handle. Its
    /// read cache ([`Doc::read_cached`]) starts empty. A binding uses this to run
    /// updates on a working type of its own (values plus the state it carries
    /// between the changes of one batch) beside a handle of plain JSON values.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let doc = statefile::Doc::<serde_json::Value>::open(dir.path().join("jobs.json"))?;
    /// doc.write(&serde_json::json!(["build"]))?;
    /// let jobs = doc.typed::<Vec<String>>();
    /// jobs.update(|j| {
    ///     j.push("test".into());
    ///     Ok::<_, statefile::Error>(())
    /// })?;
    /// assert_eq!(doc.read()?, serde_json::json!(["build", "test"]));
    /// # Ok::<(), statefile::Error>(())
    /// ```
    pub fn typed<U: Serialize + DeserializeOwned>(&self) -> Doc<U> {
        Doc {
            path: self.path.clone(),
            opts: self.opts.clone(),
            confine: self.confine.clone(),
            poison: self.poison.clone(),
            cache: Mutex::new(None),
            _type: PhantomData,
        }
    }

    /// The path this handle was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Read and parse the document.
    ///
    /// Never returns a torn value: writers replace the file by renaming a complete new
    /// one over it, so this sees the whole old or the whole new version.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if it does not exist; [`ErrorKind::Corrupt`] if it is
    /// empty or not valid JSON (unless the read policy falls back to a backup);
    /// [`ErrorKind::Serialize`] if it is valid JSON that does not fit `T` (never a
    /// reason to fall back); [`ErrorKind::InvalidName`] if it is not a regular file
    /// (a directory, FIFO, socket or device: never read).
    pub fn read(&self) -> Result<T> {
        Ok(self.read_versioned()?.value)
    }

    /// Read the document with its version (for [`Doc::write_if`] or an `ETag`) and
    /// whether it was recovered from a backup.
    ///
    /// # Errors
    /// As [`Doc::read`].
    pub fn read_versioned(&self) -> Result<Versioned<T>> {
        let opened = self.open_for_read()?;
        let (bytes, _) = self.read_in(&opened)?;
        self.parse_or_recover(&opened, bytes)
    }

    /// Read the document, or `T::default()` if it does not exist.
    ///
    /// # Errors
    /// As [`Doc::read`], except that a missing file is not an error.
    pub fn read_or_default(&self) -> Result<T>
    where
        T: Default,
    {
        match self.read() {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(T::default()),
            r => r,
        }
    }

    /// Read through an in-process cache: while the file keeps its identity (device,
    /// inode, size, mtime, ctime) the parsed value is shared instead of re-read. Every
    /// replace creates a new inode, so a write by any process is noticed; a file whose
    /// mtime is within 100 ms of the moment it was cached is re-read anyway, because
    /// timestamps are coarse.
    ///
    /// # Errors
    /// As [`Doc::read_versioned`].
    pub fn read_cached(&self) -> Result<Arc<Versioned<T>>> {
        // The hit costs one stat of the path (and, in a journal tree, one read of the
        // journal's shared state, to apply a dead writer's commit first, as a read
        // does): nothing is opened, and a file that is not the one cached (another
        // inode, a FIFO swapped in) is read as any read is.
        let seen = (self.cache.lock().unwrap_or_else(PoisonError::into_inner))
            .as_ref()
            .map(|e| e.target.clone());
        if let Some(target) = seen {
            crate::journal::before_read(&target, &self.opts)?;
            if let Ok(meta) = self.opts.fs.metadata(&self.path) {
                let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(entry) = cache.as_ref()
                    && entry.identity == identity(&meta)
                    && meta.mtime_ns + RACY_NS < entry.cached_at_ns
                {
                    return Ok(entry.value.clone());
                }
            }
        }
        let opened = self.open_for_read()?;
        let cached_at_ns = now_ns();
        let (bytes, meta) = self.read_in(&opened)?;
        let value = Arc::new(self.parse_or_recover(&opened, bytes)?);
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some(CacheEntry {
            target: Arc::new(opened.target.clone()),
            identity: identity(&meta),
            cached_at_ns,
            value: value.clone(),
        });
        Ok(value)
    }

    /// Read the raw bytes of the document and their version, after checking they parse
    /// (falling back to a backup per the read policy, as [`Doc::read`] does).
    ///
    /// # Errors
    /// As [`Doc::read`].
    pub fn read_bytes(&self) -> Result<Versioned<Vec<u8>>> {
        let opened = self.open_for_read()?;
        let (bytes, _) = self.read_in(&opened)?;
        match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
            Ok(_) => Ok(Versioned {
                version: Version::of(&bytes),
                value: bytes,
                recovered: None,
            }),
            Err(e) => {
                let err = json::parse_error(e, bytes.is_empty(), &opened.shown);
                if err.kind() != ErrorKind::Corrupt {
                    return Err(err);
                }
                let damaged = Version::of(&bytes);
                self.recover_with(&opened, err, damaged, |b| {
                    serde_json::from_slice::<serde::de::IgnoredAny>(b)
                        .ok()
                        .map(|_| b.to_vec())
                })
            }
        }
    }

    /// The document's current version, without parsing it.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if it does not exist; I/O kinds if it cannot be read.
    pub fn version(&self) -> Result<Version> {
        let opened = self.open_for_read()?;
        let (bytes, _) = self.read_in(&opened)?;
        Ok(Version::of(&bytes))
    }

    /// Whether the document exists.
    ///
    /// # Errors
    /// I/O kinds if that cannot be determined.
    pub fn exists(&self) -> Result<bool> {
        let opened = match self.open_for_read() {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            r => r?,
        };
        match opened.dir.stat(&opened.target.name) {
            Ok(m) => Ok(!m.is_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("inspect", &opened.shown, e)),
        }
    }

    /// How many calls of this process wait in the document's group-commit queue for
    /// the batch in progress to finish (not counting the calls in that batch): a
    /// figure for monitoring. See [`Options::max_batch`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`] or an I/O kind if the path cannot be resolved.
    pub fn queued(&self) -> Result<usize> {
        let (target, _) =
            names::resolve(self.opts.fs.as_ref(), &self.path, self.confine.as_deref())?;
        Ok(crate::lock::queued(&target.path))
    }

    /// Take the document's lock and hold it until the guard is dropped: every writer
    /// (in this process or another, and the CLI and server) waits meanwhile. For
    /// coordinating work beyond one read-modify-write; writes through this handle
    /// while holding it would wait for themselves, so use [`Doc::update`] for those.
    ///
    /// # Errors
    /// [`ErrorKind::LockTimeout`] after the lock timeout; I/O kinds.
    pub fn lock(&self) -> Result<LockGuard> {
        Ok(self.locked()?.lock)
    }

    /// Replace the document with `value`: atomically (readers see the old or the new
    /// version, never a mix) and, with the default [`Durability::Full`], durably by the
    /// time this returns. Takes the document's lock, so it serializes with updates.
    ///
    /// If backups are on, the replaced version is kept as `.name.bak` (by hard link).
    /// A crash at any moment leaves the old version or the new one, plus at worst a
    /// temp file that [`recover`](crate::recover) or [`Store::open`](crate::Store::open)
    /// removes.
    ///
    /// Concurrent writes and updates of the document in this process are batched
    /// (group commit, see [`Options::max_batch`]): this write then takes its place in
    /// arrival order, and the batch's one durable write answers every call in it.
    ///
    /// # Errors
    /// [`ErrorKind::Serialize`] if `value` holds a non-finite number or nests deeper
    /// than 127 levels (nothing is written); [`ErrorKind::LockTimeout`];
    /// [`ErrorKind::NoSpace`], [`ErrorKind::PermissionDenied`], [`ErrorKind::Io`] with
    /// the document untouched; [`ErrorKind::Durability`] if the new version was renamed
    /// into place but the directory sync failed; [`ErrorKind::InvalidName`] if what is
    /// at the path is not a regular file (it is left alone).
    pub fn write(&self, value: &T) -> Result<Receipt> {
        self.put(group::Cond::Any, value)
    }

    /// Compare-and-swap: replace the document only if its version is still `expected`.
    ///
    /// A damaged document (empty, or not JSON) reads with
    /// [`ReadPolicy::FallbackToBackup`] as its newest good backup, with that backup's
    /// version: a compare-and-swap naming that version replaces the damaged document
    /// (kept as `.name.corrupt`), as long as it is still damaged and that backup is still
    /// the one such a read serves. So a client that read the recovered value and writes
    /// conditionally succeeds, and repairs the document, instead of conflicting forever.
    ///
    /// ```
    /// use statefile::{Doc, ReadPolicy};
    ///
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("cfg.json");
    /// let doc = Doc::<Vec<u32>>::open(&path)?.with_read_policy(ReadPolicy::FallbackToBackup);
    /// doc.write(&vec![1])?;
    /// doc.write(&vec![1, 2])?;                  // vec![1] is now the backup
    /// std::fs::write(&path, b"[1, 2")?;         // damaged
    /// let served = doc.read_versioned()?;       // the backup, and its version
    /// assert_eq!(served.value, [1]);
    /// doc.write_if(&served.version, &vec![1, 3])?;
    /// assert_eq!(doc.read()?, [1, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] (carrying the version found) if it changed or no longer
    /// exists; otherwise as [`Doc::write`].
    pub fn write_if(&self, expected: &Version, value: &T) -> Result<Receipt> {
        self.put(group::Cond::IfMatch(expected), value)
    }

    /// Write `value` only if the document does not exist yet.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] if it exists; otherwise as [`Doc::write`].
    pub fn create(&self, value: &T) -> Result<Receipt> {
        self.put(group::Cond::Absent, value)
    }

    /// Locked read-modify-write: take the lock, read and parse, call `f` on the value,
    /// write the result with the replace protocol, release. Concurrent updates from
    /// threads and processes never lose each other's changes. If `f` returns an error,
    /// nothing is written and that error is returned. If `f` leaves the value as it
    /// was, the same bytes are written again all the same (no backup is made of the
    /// identical version, and the receipt says `unchanged`): the write still syncs, so
    /// a document an earlier, less durable write left behind is durable afterwards.
    ///
    /// Concurrent calls on the document in this process share one durable write
    /// (group commit, see [`Options::max_batch`]): `f` still runs on this thread, on the
    /// value as the calls queued before this one left it, and this call returns once the
    /// write holding its change is durable (at the strongest [`Durability`] of the
    /// batch's calls). If `f` fails or panics, this call alone fails (the panic resumes
    /// here) and the others go on without its change; if `f` ran on a value earlier
    /// calls of the batch changed, this call first waits for the batch's write (and
    /// fails with the write's error if that fails), so it never returns having seen
    /// changes that are not committed. Keep `f` short: the calls batched after it wait
    /// for it, and the calls before it wait for their write until it returns. The value
    /// moves between threads, hence `T: Send + 'static`.
    ///
    /// # Deadlocks: `f` must never block on what another caller may hold
    ///
    /// **`f` must never wait for anything (a mutex, a channel, a lock, another
    /// document's update) that another caller of this same document may hold while
    /// its own update of it is in progress.** Once its change has run, a call waits
    /// for the write of its batch, and that write waits for every later change of the
    /// batch, with no deadline: [`Options::lock_timeout`] bounds only the wait in the
    /// queue, not this one. A caller holding mutex `M` around `doc.update(..)`, batched
    /// with another thread's update whose `f` takes `M`, waits forever for that `f`,
    /// which waits forever for `M`. Take such locks inside `f` (or not at all), never
    /// around the call; or turn batching off with [`Options::max_batch`]`(1, ..)`.
    ///
    /// `f` returns its own error type `E`, which must hold the library's errors too
    /// (`E: From<statefile::Error>`): a caller's own failure (a patch that does not
    /// apply, a business rule) comes back as it was raised. Where the caller's `?`
    /// converts into [`Error`] itself, `E` is inferred; elsewhere name it
    /// (`Ok::<_, statefile::Error>(..)`).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("counter.json");
    /// let doc = statefile::Doc::<u64>::open(&path)?;
    /// doc.write(&1)?;
    /// let (old, receipt) = doc.update(|n| {
    ///     let old = *n;
    ///     *n += 1;
    ///     Ok(old)
    /// })?;
    /// assert_eq!((old, doc.read()?), (1, 2));
    /// assert_eq!(receipt.version, doc.version()?);
    /// # Ok::<(), statefile::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if the document does not exist (see
    /// [`Doc::update_or_default`]); [`ErrorKind::Corrupt`] if it does not parse (repair
    /// it first: updating a damaged document would build on a guess); whatever `f`
    /// returns; otherwise as [`Doc::write`].
    pub fn update<R, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut T) -> Result<R, E>,
    ) -> Result<(R, Receipt), E>
    where
        T: Send + 'static,
    {
        self.modify(None, None, f)
    }

    /// As [`Doc::update`], starting from `T::default()` when the document is missing.
    /// As there, `f` must never block on anything another caller of this document may
    /// hold (see [`Doc::update`]'s *Deadlocks*).
    ///
    /// # Errors
    /// As [`Doc::update`], except that a missing document is not an error.
    pub fn update_or_default<R, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut T) -> Result<R, E>,
    ) -> Result<(R, Receipt), E>
    where
        T: Default + Send + 'static,
    {
        self.modify(None, Some(&mut T::default), f)
    }

    /// As [`Doc::update`], starting from `init()` when the document is missing.
    /// As there, neither `init` nor `f` may block on anything another caller of this
    /// document may hold (see [`Doc::update`]'s *Deadlocks*).
    ///
    /// # Errors
    /// As [`Doc::update_or_default`].
    pub fn update_or_insert_with<R, E: From<Error>>(
        &self,
        mut init: impl FnMut() -> T,
        f: impl FnOnce(&mut T) -> Result<R, E>,
    ) -> Result<(R, Receipt), E>
    where
        T: Send + 'static,
    {
        self.modify(None, Some(&mut init), f)
    }

    /// As [`Doc::update`], but only if the document is still at version `expected`.
    /// As there, `f` must never block on anything another caller of this document may
    /// hold (see [`Doc::update`]'s *Deadlocks*).
    ///
    /// As for [`Doc::write_if`], `expected` may be the version a fallback read served
    /// for a damaged document: `f` then runs on that backup's value, and the write
    /// repairs the document.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] if it changed; otherwise as [`Doc::update`].
    pub fn update_if<R, E: From<Error>>(
        &self,
        expected: &Version,
        f: impl FnOnce(&mut T) -> Result<R, E>,
    ) -> Result<(R, Receipt), E>
    where
        T: Send + 'static,
    {
        self.modify(Some(expected), None, f)
    }

    /// Delete the document under its lock. With backups on, it is moved to `.name.bak`
    /// (rotating older backups), so [`Doc::restore`] can undo it; a damaged document is
    /// moved to `.name.corrupt`. The lock file stays. Reads afterwards are
    /// [`ErrorKind::NotFound`], whatever the read policy.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if it does not exist; I/O kinds;
    /// [`ErrorKind::Durability`] if the directory sync failed.
    pub fn delete(&self) -> Result<Deleted> {
        self.delete_inner(None)
    }

    /// As [`Doc::delete`], only if the document is still at version `expected`.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] if it changed; otherwise as [`Doc::delete`].
    pub fn delete_if(&self, expected: &Version) -> Result<Deleted> {
        self.delete_inner(Some(expected))
    }

    /// Delete the document and everything statefile keeps beside it: backups, the
    /// `.corrupt` copy, and finally the lock file (only a lock holder that deletes the
    /// document may delete the lock). Not undoable. Missing pieces are skipped.
    ///
    /// Returns the files removed.
    ///
    /// # Errors
    /// I/O kinds; [`ErrorKind::NotFound`] if there was nothing to remove.
    pub fn remove_all(&self) -> Result<Vec<PathBuf>> {
        let w = self.locked()?;
        atomic::refuse_if_poisoned(self.poison.as_deref(), "delete", &w.target.path)?;
        let (t, dir) = (&w.target, w.dir.as_ref());
        match dir.check_write_access(&t.name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).ctx("delete", &t.path);
            }
            _ => {}
        }
        let mut victims = vec![t.name.clone()];
        victims.extend(backup::backup_files(dir, t)?);
        victims.push(t.corrupt_name());
        let mut removed = Vec::new();
        for name in victims {
            match dir.remove_file(&name) {
                Ok(()) => removed.push(t.beside(&name)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("delete", &t.beside(&name), e)),
            }
        }
        if removed.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "cannot delete {}: it does not exist",
                    self.shown(t).display()
                ),
            )
            .with_path(&t.path));
        }
        // Last, while still holding it: waiters notice the unlinked lock and retry.
        match dir.remove_file(&t.lock_name()) {
            Ok(()) => removed.push(t.lock_path()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("delete", &t.lock_path(), e)),
        }
        self.sync_after_delete(&w, &Version::of(b""))?;
        Ok(removed)
    }

    /// The kept previous versions, newest first (numbered from 1). Backups that are not
    /// regular files (a symlink, a FIFO: not made by statefile) are left out, and so are
    /// backups over [`Options::max_document_bytes`] (not read, and not restorable under
    /// that limit).
    ///
    /// # Errors
    /// I/O kinds if the directory or a backup cannot be read.
    pub fn backups(&self) -> Result<Vec<BackupInfo>> {
        let opened = match self.open_for_read() {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            r => r?,
        };
        backup::list(
            opened.dir.as_ref(),
            &opened.target,
            self.opts.max_document_bytes,
        )
    }

    /// The bytes of one kept version (for copying it elsewhere, as `statefile export`
    /// and `import` do), read like every read: through the document's directory, regular
    /// files only. The version is that of the bytes read (a backup rotated meanwhile
    /// shows as another version; hold [`Doc::lock`] to prevent that).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is no such backup; [`ErrorKind::Corrupt`] if it
    /// does not parse (a damaged backup is never copied); I/O kinds if it cannot be read.
    pub fn read_backup(&self, which: &BackupRef) -> Result<Versioned<Vec<u8>>> {
        let opened = self.open_for_read()?;
        let max = self.opts.max_document_bytes;
        let bytes = backup::read_picked(opened.dir.as_ref(), &opened.target, which, max)?;
        Ok(Versioned {
            version: Version::of(&bytes),
            value: bytes,
            recovered: None,
        })
    }

    /// Replace the document with one of its backups, under the lock. This is itself an
    /// atomic write, and the version it replaces becomes the newest backup, so a restore
    /// can be undone by restoring again. Works on a missing or damaged document too (a
    /// damaged one is kept as `.name.corrupt`).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is no such backup; [`ErrorKind::Corrupt`] if it
    /// does not parse; otherwise as [`Doc::write`].
    pub fn restore(&self, which: &BackupRef) -> Result<Receipt> {
        let w = self.locked()?;
        backup::restore_locked(&w, &self.plan(), which, None)
    }

    /// Repair: restore `which` only if the document still has the `damaged` version (or
    /// is still missing, for `None`) under the lock, so a concurrent fix is never undone.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] if it changed; otherwise as [`Doc::restore`].
    pub fn restore_if(&self, damaged: Option<&Version>, which: &BackupRef) -> Result<Receipt> {
        let w = self.locked()?;
        backup::restore_locked(&w, &self.plan(), which, Some(damaged))
    }
}

/// The document resolved and its directory opened, for a read.
struct Opened {
    target: Target,
    dir: Box<dyn FsDir>,
    /// The name errors give it: the path as given, or inside a store the resolved one.
    shown: PathBuf,
}

// Plumbing: resolution, the write path's entry points, reads and recovery.
impl<T: Serialize + DeserializeOwned> Doc<T> {
    pub(crate) fn in_store(
        path: PathBuf,
        opts: Options,
        root: PathBuf,
        poison: Arc<AtomicBool>,
    ) -> Doc<T> {
        Doc {
            path,
            opts,
            confine: Some(root),
            poison: Some(poison),
            cache: Mutex::new(None),
            _type: PhantomData,
        }
    }

    /// Step 0 of every write: resolved, directory open, lock held.
    fn locked(&self) -> Result<Locked> {
        Locked::open(&self.path, self.confine.as_deref(), &self.opts)
    }

    fn plan(&self) -> Plan<'_> {
        Plan::json(&self.opts, self.poison.as_deref())
    }

    fn call(&self) -> group::Call<'_> {
        group::Call {
            path: &self.path,
            confine: self.confine.as_deref(),
            opts: &self.opts,
            poison: self.poison.as_ref(),
        }
    }

    /// A whole-value write, joining the document's group commit.
    fn put(&self, cond: group::Cond<'_>, value: &T) -> Result<Receipt> {
        match group::write(&self.call(), cond, value) {
            Ok(r) => Ok(r),
            Err(Fail::Error(e)) => Err(e),
            Err(Fail::Panic(p)) => std::panic::resume_unwind(p),
            Err(Fail::Own) => unreachable!("a write has no change of the caller's to fail"),
        }
    }

    /// A read-modify-write, joining the document's group commit: `f` runs on this
    /// thread, on the value as the batch has it when this call's turn comes.
    fn modify<R, E: From<Error>>(
        &self,
        expected: Option<&Version>,
        init: Option<&mut dyn FnMut() -> T>,
        f: impl FnOnce(&mut T) -> Result<R, E>,
    ) -> Result<(R, Receipt), E>
    where
        T: Send + 'static,
    {
        let mut f = Some(f);
        let mut out = None;
        let mut change = |v: &mut T| {
            let r = (f.take().expect("a change runs once"))(v);
            let ok = r.is_ok();
            out = Some(r);
            ok
        };
        let done = group::update(&self.call(), expected, init, &mut change);
        match (done, out) {
            (Ok(receipt), Some(Ok(r))) => Ok((r, receipt)),
            (Err(Fail::Own), Some(Err(e))) => Err(e),
            (Err(Fail::Error(e)), _) => Err(e.into()),
            (Err(Fail::Panic(p)), _) => std::panic::resume_unwind(p),
            _ => unreachable!("a call is acknowledged only when its change succeeded"),
        }
    }

    fn delete_inner(&self, expected: Option<&Version>) -> Result<Deleted> {
        let w = self.locked()?;
        atomic::refuse_if_poisoned(self.poison.as_deref(), "delete", &w.target.path)?;
        let (t, dir) = (&w.target, w.dir.as_ref());
        // A file over the size limit is not hashed: with no version to report (or to
        // compare), it is not deleted; a write replaces it, keeping it aside.
        let current = Current::probe(&w, true, self.opts.max_document_bytes)?;
        current.refuse_too_large("delete", &t.path)?;
        let seen = match current {
            Current::File { seen: Some(s), .. } => s,
            _ => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "cannot delete {}: it does not exist",
                        self.shown(t).display()
                    ),
                )
                .with_path(&t.path));
            }
        };
        if let Some(exp) = expected
            && exp != &seen.version
        {
            return Err(conflict(self.shown(t), t, exp, Some(&seen.version)));
        }
        // A document this process may not write, it may not delete either (as for
        // writes: a read-only document is not silently taken away).
        dir.check_write_access(&t.name).ctx("delete", &t.path)?;
        let (kept_as, journaled) =
            atomic::delete(&w, self.opts.durability, self.opts.backups, &seen)?;
        if !journaled {
            self.sync_after_delete(&w, &seen.version)?;
        }
        Ok(Deleted {
            version: seen.version,
            kept_as,
        })
    }

    fn sync_after_delete(&self, w: &Locked, version: &Version) -> Result<()> {
        if self.opts.durability != Durability::Full {
            return Ok(());
        }
        let t = &w.target;
        w.dir.sync().map_err(|e| {
            if let Some(p) = &self.poison {
                p.store(true, Ordering::SeqCst);
            }
            Error::new(
                ErrorKind::Durability,
                format!(
                    "deleted {}, but syncing its directory failed: the deletion may not survive a power loss",
                    self.shown(t).display()
                ),
            )
            .with_path(&t.path)
            .with_version(version.clone())
            .with_source(e)
        })
    }

    /// The path messages name for the resolved `target` (see [`shown`]).
    fn shown<'a>(&'a self, target: &'a Target) -> &'a Path {
        shown(&self.path, self.confine.as_deref(), target)
    }

    /// Resolve the document (inside a store, refusing to leave it) and open its
    /// directory. Reads go through that handle, as writes do.
    fn open_for_read(&self) -> Result<Opened> {
        let fs = self.opts.fs.as_ref();
        let (target, _) = names::resolve(fs, &self.path, self.confine.as_deref())?;
        // After a crash, the journal governing the document may hold a newer version
        // than its file: this process replays it (once) before reading.
        crate::journal::before_read(&target, &self.opts)?;
        let shown = self.shown(&target).to_path_buf();
        match file::open_dir(fs, &target.dir) {
            Ok(dir) => Ok(Opened { target, dir, shown }),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(does_not_exist(
                &shown,
                io::Error::new(io::ErrorKind::NotFound, e.to_string()),
            )),
            Err(e) => Err(e),
        }
    }

    /// The document's bytes and metadata.
    fn read_in(&self, opened: &Opened) -> Result<(Vec<u8>, Metadata)> {
        let t = &opened.target;
        let max = self.opts.max_document_bytes;
        file::read(opened.dir.as_ref(), &t.name, &opened.shown, max).map_err(|e| {
            match e.io_error() {
                Some(io) if io.kind() == io::ErrorKind::NotFound => {
                    does_not_exist(&opened.shown, io::Error::new(io.kind(), io.to_string()))
                }
                _ => e,
            }
        })
    }

    /// Parse `bytes`; on damage, fall back or report per the read policy.
    fn parse_or_recover(&self, opened: &Opened, bytes: Vec<u8>) -> Result<Versioned<T>> {
        match json::parse::<T>(&bytes, &opened.shown) {
            Ok(value) => Ok(Versioned {
                value,
                version: Version::of(&bytes),
                recovered: None,
            }),
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                let damaged = Version::of(&bytes);
                // Only a backup that parses *and* fits the type is a good one.
                self.recover_with(opened, e, damaged, json::parse_ok::<T>)
            }
            Err(e) => Err(e),
        }
    }

    /// Per the read policy: the newest backup that `parse` accepts, or the Corrupt error
    /// annotated with whether a backup exists.
    fn recover_with<U>(
        &self,
        opened: &Opened,
        err: Error,
        damaged: Version,
        parse: impl Fn(&[u8]) -> Option<U>,
    ) -> Result<Versioned<U>> {
        let (t, dir) = (&opened.target, opened.dir.as_ref());
        let backups = backup::backup_files(dir, t)?;
        if self.opts.read_policy == ReadPolicy::FallbackToBackup
            && let Some(good) = newest_good(dir, t, &backups, self.opts.max_document_bytes, &parse)
        {
            let reason = err
                .corrupt_info()
                .map_or_else(|| err.to_string(), |c| c.reason.clone());
            tracing::warn!(
                file = %t.path.display(),
                backup = %good.path.display(),
                reason = %reason,
                "document is damaged; serving its newest good backup"
            );
            return Ok(Versioned {
                value: good.value,
                version: good.version,
                recovered: Some(Recovered {
                    backup: good.number,
                    path: good.path,
                    damaged_version: damaged,
                    reason,
                }),
            });
        }
        let has_backup = !backups.is_empty();
        let mut info = err.corrupt_info().cloned().unwrap_or(crate::CorruptInfo {
            line: 0,
            column: 0,
            reason: err.to_string(),
            backup_exists: false,
        });
        info.backup_exists = has_backup;
        // A fallback read that got here found no good backup; a strict one looks.
        let good = match self.opts.read_policy {
            ReadPolicy::Strict => {
                newest_good(dir, t, &backups, self.opts.max_document_bytes, &parse)
                    .map(|g| g.number)
            }
            ReadPolicy::FallbackToBackup => None,
        };
        let hint = damage_hint(has_backup, good, "read it with fallback");
        let left_out = if good.is_none() {
            backup::left_out_note(dir, t, self.opts.max_document_bytes)
        } else {
            String::new()
        };
        Err(Error::new(
            ErrorKind::Corrupt,
            format!("{}{hint}{left_out}", err.message()),
        )
        .with_path(&t.path)
        .with_corrupt(info)
        .with_version(damaged)
        .with_source(err))
    }
}

/// A backup a fallback read would serve.
pub(crate) struct Good<U> {
    /// Its number, counting regular files only (as [`Doc::backups`] numbers them).
    number: usize,
    path: PathBuf,
    pub(crate) version: Version,
    pub(crate) value: U,
}

/// The newest of `backups` (names in `dir`, newest first) that is a regular file and that
/// `parse` accepts: what a fallback read serves. A backup over `max` bytes is passed
/// over unread, as one that does not parse.
pub(crate) fn newest_good<U>(
    dir: &dyn FsDir,
    t: &Target,
    backups: &[OsString],
    max: u64,
    parse: impl Fn(&[u8]) -> Option<U>,
) -> Option<Good<U>> {
    let mut number = 0;
    for name in backups {
        // Only a regular file: a symlink or FIFO planted as a backup is never read.
        if !dir.stat(name).is_ok_and(|m| m.is_file()) {
            continue;
        }
        number += 1;
        let path = t.beside(name);
        let Ok((bytes, _)) = file::read(dir, name, &path, max) else {
            continue;
        };
        if let Some(value) = parse(&bytes) {
            return Some(Good {
                number,
                path,
                version: Version::of(&bytes),
                value,
            });
        }
    }
    None
}

fn identity(m: &Metadata) -> (u64, u64, u64, i128, i128) {
    (m.dev, m.ino, m.len, m.mtime_ns, m.ctime_ns)
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn does_not_exist(path: &Path, e: io::Error) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("{} does not exist", path.display()),
    )
    .with_path(path)
    .with_source(e)
}

/// What the damage message of a document adds: whether it has backups, and which good
/// one (by number) would `serve` it.
fn damage_hint(has_backup: bool, good: Option<usize>, serve: &str) -> String {
    match (has_backup, good) {
        (false, _) => " (it has no backup: replace it with a write, or fix it by hand)".into(),
        (true, Some(n)) => {
            format!(" (backup {n} is good: {serve}, or put it back with `statefile recover`)")
        }
        (true, None) => {
            " (no backup of it parses either: replace it with a write, or fix it by hand)".into()
        }
    }
}

/// The path messages name for the document a handle opened as `given` (inside the store
/// rooted at `confine`, if any) resolved to `target`: `given`, or inside a store the
/// resolved path (the root joined with the name).
pub(crate) fn shown<'a>(given: &'a Path, confine: Option<&Path>, target: &'a Target) -> &'a Path {
    if confine.is_some() {
        &target.path
    } else {
        given
    }
}

/// The `Corrupt` error of an update of the damaged document locked in `w`, saying what
/// repairs it; its message names the document as `shown` (as the caller named it).
pub(crate) fn cannot_update_damaged(
    w: &Locked,
    shown: &Path,
    version: &Version,
    e: Error,
    max: u64,
) -> Error {
    if e.kind() != ErrorKind::Corrupt {
        return e;
    }
    let what = e.corrupt_info().map_or_else(
        || e.to_string(),
        |c| format!("{} at line {} column {}", c.reason, c.line, c.column),
    );
    let (t, dir) = (&w.target, w.dir.as_ref());
    let backups = backup::backup_files(dir, t).unwrap_or_default();
    let good = newest_good(dir, t, &backups, max, |b| {
        serde_json::from_slice::<serde::de::IgnoredAny>(b).ok()
    });
    let hint = damage_hint(
        !backups.is_empty(),
        good.map(|g| g.number),
        "update the version a fallback read serves",
    );
    Error::new(
        ErrorKind::Corrupt,
        format!("cannot update {}: {what}{hint}", shown.display()),
    )
    .with_path(&t.path)
    .with_version(version.clone())
    .with_source(e)
}

/// The `Conflict` of a precondition that failed on the document locked as `t`; its message
/// names the document as `shown` (as the caller named it), its `path()` is the file.
pub(crate) fn conflict(
    shown: &Path,
    t: &Target,
    expected: &Version,
    found: Option<&Version>,
) -> Error {
    let msg = match found {
        Some(v) => format!(
            "{} changed: expected version {expected}, found {v}",
            shown.display()
        ),
        None => format!(
            "{} does not exist (expected version {expected})",
            shown.display()
        ),
    };
    let e = Error::new(ErrorKind::Conflict, msg).with_path(&t.path);
    match found {
        Some(v) => e.with_version(v.clone()),
        None => e,
    }
}
