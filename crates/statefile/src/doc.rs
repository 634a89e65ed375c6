//! [`Doc<T>`]: one JSON document with typed, versioned, locked reads and writes.

use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic::{self, Current, Plan, Verify};
use crate::backup::{self, BackupInfo, BackupRef};
use crate::error::{Error, ErrorKind, Result};
use crate::fs::{Fs, Metadata, read_all};
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
/// # Ok::<(), Box<dyn std::error::Error>>(())
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

    /// This handle with another read policy (e.g. fallback reads for a server that
    /// must keep answering while strict handles refuse to update a damaged document).
    pub fn with_read_policy(mut self, policy: ReadPolicy) -> Doc<T> {
        self.opts.read_policy = policy;
        self
    }

    /// The path this handle was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    fn fs(&self) -> &Arc<dyn Fs> {
        &self.opts.fs
    }

    /// Resolve symlinks to the real file; refuse to leave the store's root.
    fn target(&self) -> Result<(Target, bool)> {
        let (t, dangling) = names::resolve(self.fs().as_ref(), &self.path)?;
        if let Some(root) = &self.confine
            && !t.path.starts_with(root)
        {
            return Err(Error::new(
                ErrorKind::InvalidName,
                format!(
                    "{} resolves outside the store (through a symlink)",
                    self.path.display()
                ),
            )
            .with_path(&self.path));
        }
        Ok((t, dangling))
    }

    fn write_target(&self) -> Result<Target> {
        let (t, dangling) = self.target()?;
        if dangling {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "cannot write {}: it is a symlink to {}, which does not exist",
                    self.path.display(),
                    t.path.display()
                ),
            )
            .with_path(&self.path));
        }
        Ok(t)
    }

    fn lock_target(&self, t: &Target) -> Result<LockGuard> {
        atomic::lock_target(
            self.fs(),
            t,
            self.opts.create_dirs,
            self.opts.durability,
            self.opts.lock_timeout,
        )
    }

    fn plan<'a>(&'a self, t: &'a Target, current: Current) -> Plan<'a> {
        Plan {
            fs: self.fs().as_ref(),
            target: t,
            durability: self.opts.durability,
            backups: self.opts.backups,
            verify: if self.opts.verify {
                Verify::Json
            } else {
                Verify::No
            },
            current,
            poison: self.poison.as_deref(),
        }
    }

    fn write_value(&self, plan: &Plan<'_>, lock: &LockGuard, value: &T) -> Result<Receipt> {
        let format = self.opts.format;
        atomic::replace(plan, lock, &mut |w| json::serialize_into(value, format, w))
    }

    /// The path reads open: the resolved file inside a store (so a symlink cannot
    /// lead out of it), the path as given otherwise (the kernel follows links).
    fn read_path(&self) -> Result<PathBuf> {
        if self.confine.is_some() {
            Ok(self.target()?.0.path)
        } else {
            Ok(self.path.clone())
        }
    }

    fn read_bytes_at(&self, path: &Path) -> Result<(Vec<u8>, Option<Metadata>)> {
        // Inside a store, `path` was resolved and checked to be inside it: read through
        // the directory's handle, as writes do, so it is not resolved a second time.
        // Outside a store the path is the caller's own and is followed as given.
        let pinned = match (&self.confine, path.parent()) {
            (Some(_), Some(dir)) => self
                .fs()
                .pin_dir(dir)
                .map_err(|e| self.read_error(path, e))?,
            _ => None,
        };
        let fs: &dyn Fs = pinned.as_deref().unwrap_or(self.fs().as_ref());
        let mut f =
            crate::fs::retry(|| fs.open_read(path)).map_err(|e| self.read_error(path, e))?;
        let meta = f.metadata().ok();
        if meta.is_some_and(|m| m.is_dir()) {
            return Err(is_a_directory(path));
        }
        let mut buf = Vec::new();
        crate::fs::reserve_for(&mut buf, meta.map_or(0, |m| m.len))
            .map_err(|e| self.read_error(path, e))?;
        io::Read::read_to_end(&mut f, &mut buf).map_err(|e| self.read_error(path, e))?;
        Ok((buf, meta))
    }

    fn read_error(&self, path: &Path, e: io::Error) -> Error {
        if e.raw_os_error() == Some(21) {
            return is_a_directory(path);
        }
        if e.kind() == io::ErrorKind::NotFound {
            return Error::new(
                ErrorKind::NotFound,
                format!("{} does not exist", path.display()),
            )
            .with_path(path)
            .with_source(e);
        }
        Error::io("read", path, e)
    }

    /// Parse `bytes`; on damage, fall back or report per the read policy.
    fn parse_or_recover(&self, bytes: Vec<u8>, path: &Path) -> Result<Versioned<T>> {
        match json::parse::<T>(&bytes, path) {
            Ok(value) => Ok(Versioned {
                value,
                version: Version::of(&bytes),
                recovered: None,
            }),
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                let damaged = Version::of(&bytes);
                self.recover_read(e, damaged)
            }
            Err(e) => Err(e),
        }
    }

    fn recover_read(&self, err: Error, damaged: Version) -> Result<Versioned<T>> {
        // Only a backup that parses *and* fits the type is a good one.
        self.recover_with(err, damaged, |b| serde_json::from_slice::<T>(b).ok())
    }

    /// Per the read policy: the newest backup that `parse` accepts, or the Corrupt error
    /// annotated with whether a backup exists.
    fn recover_with<U>(
        &self,
        err: Error,
        damaged: Version,
        parse: impl Fn(&[u8]) -> Option<U>,
    ) -> Result<Versioned<U>> {
        let (t, _) = self.target()?;
        let fs = self.fs().as_ref();
        let backups = backup::backup_files(fs, &t)?;
        if self.opts.read_policy == ReadPolicy::FallbackToBackup {
            for (i, path) in backups.iter().enumerate() {
                let Ok(bytes) = read_all(fs, path) else {
                    continue;
                };
                if let Some(value) = parse(&bytes) {
                    let reason = err
                        .corrupt_info()
                        .map_or_else(|| err.to_string(), |c| c.reason.clone());
                    tracing::warn!(
                        file = %t.path.display(),
                        backup = %path.display(),
                        reason = %reason,
                        "document is damaged; serving its newest good backup"
                    );
                    return Ok(Versioned {
                        value,
                        version: Version::of(&bytes),
                        recovered: Some(Recovered {
                            backup: i + 1,
                            path: path.clone(),
                            damaged_version: damaged,
                            reason,
                        }),
                    });
                }
            }
        }
        let has_backup = !backups.is_empty();
        let mut info = err.corrupt_info().cloned().unwrap_or(crate::CorruptInfo {
            line: 0,
            column: 0,
            reason: err.to_string(),
            backup_exists: false,
        });
        info.backup_exists = has_backup;
        let hint = match (has_backup, self.opts.read_policy) {
            (false, _) => " (no backup exists)".to_string(),
            (true, ReadPolicy::Strict) => format!(
                " (a backup exists: {}; read with fallback or run `statefile recover`)",
                backups[0].display()
            ),
            (true, ReadPolicy::FallbackToBackup) => " (and no backup parses either)".to_string(),
        };
        Err(
            Error::new(ErrorKind::Corrupt, format!("{}{hint}", err.message()))
                .with_path(&t.path)
                .with_corrupt(info)
                .with_version(damaged)
                .with_source(err),
        )
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
    /// reason to fall back).
    pub fn read(&self) -> Result<T> {
        Ok(self.read_versioned()?.value)
    }

    /// Read the document with its version (for [`Doc::write_if`] or an `ETag`) and
    /// whether it was recovered from a backup.
    ///
    /// # Errors
    /// As [`Doc::read`].
    pub fn read_versioned(&self) -> Result<Versioned<T>> {
        let path = self.read_path()?;
        let (bytes, _) = self.read_bytes_at(&path)?;
        self.parse_or_recover(bytes, &path)
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
        let path = self.read_path()?;
        let meta = self
            .fs()
            .metadata(&path)
            .map_err(|e| self.read_error(&path, e))?;
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = cache.as_ref()
                && entry.identity == identity(&meta)
                && meta.mtime_ns + RACY_NS < entry.cached_at_ns
            {
                return Ok(entry.value.clone());
            }
        }
        let cached_at_ns = now_ns();
        let (bytes, meta) = self.read_bytes_at(&path)?;
        let value = Arc::new(self.parse_or_recover(bytes, &path)?);
        if let Some(meta) = meta {
            *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some(CacheEntry {
                identity: identity(&meta),
                cached_at_ns,
                value: value.clone(),
            });
        }
        Ok(value)
    }

    /// Read the raw bytes of the document and their version, after checking they parse
    /// (falling back to a backup per the read policy, as [`Doc::read`] does).
    ///
    /// # Errors
    /// As [`Doc::read`].
    pub fn read_bytes(&self) -> Result<Versioned<Vec<u8>>> {
        let path = self.read_path()?;
        let (bytes, _) = self.read_bytes_at(&path)?;
        match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
            Ok(_) => Ok(Versioned {
                version: Version::of(&bytes),
                value: bytes,
                recovered: None,
            }),
            Err(e) => {
                let err = json::parse_error(e, bytes.is_empty(), &path);
                if err.kind() != ErrorKind::Corrupt {
                    return Err(err);
                }
                let damaged = Version::of(&bytes);
                self.recover_with(err, damaged, |b| {
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
        let path = self.read_path()?;
        let (bytes, _) = self.read_bytes_at(&path)?;
        Ok(Version::of(&bytes))
    }

    /// Take the document's lock and hold it until the guard is dropped: every writer
    /// (in this process or another, and the CLI and server) waits meanwhile. For
    /// coordinating work beyond one read-modify-write; writes through this handle
    /// while holding it would wait for themselves, so use [`Doc::update`] for those.
    ///
    /// # Errors
    /// [`ErrorKind::LockTimeout`] after the lock timeout; I/O kinds.
    pub fn lock(&self) -> Result<LockGuard> {
        let t = self.write_target()?;
        self.lock_target(&t)
    }

    /// Whether the document exists.
    ///
    /// # Errors
    /// I/O kinds if that cannot be determined.
    pub fn exists(&self) -> Result<bool> {
        let path = self.read_path()?;
        match self.fs().metadata(&path) {
            Ok(m) => Ok(!m.is_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("inspect", &path, e)),
        }
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
    /// # Errors
    /// [`ErrorKind::Serialize`] if `value` holds a non-finite number or nests deeper
    /// than 127 levels (nothing is written); [`ErrorKind::LockTimeout`];
    /// [`ErrorKind::NoSpace`], [`ErrorKind::PermissionDenied`], [`ErrorKind::Io`] with
    /// the document untouched; [`ErrorKind::Durability`] if the new version was renamed
    /// into place but the directory sync failed.
    pub fn write(&self, value: &T) -> Result<Receipt> {
        let t = self.write_target()?;
        let lock = self.lock_target(&t)?;
        self.write_value(&self.plan(&t, Current::Unknown), &lock, value)
    }

    /// Compare-and-swap: replace the document only if its version is still `expected`.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] (carrying the version found) if it changed or no longer
    /// exists; otherwise as [`Doc::write`].
    pub fn write_if(&self, expected: &Version, value: &T) -> Result<Receipt> {
        let t = self.write_target()?;
        let lock = self.lock_target(&t)?;
        let current = self.current_under_lock(&t)?;
        match &current {
            Current::Read { version, .. } if version == expected => {}
            Current::Read { version, .. } => return Err(conflict(&t, expected, Some(version))),
            _ => return Err(conflict(&t, expected, None)),
        }
        self.write_value(&self.plan(&t, current), &lock, value)
    }

    /// Write `value` only if the document does not exist yet.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] if it exists; otherwise as [`Doc::write`].
    pub fn create(&self, value: &T) -> Result<Receipt> {
        let t = self.write_target()?;
        let lock = self.lock_target(&t)?;
        let current = self.current_under_lock(&t)?;
        if let Current::Read { version, .. } = &current {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("cannot create {}: it already exists", t.path.display()),
            )
            .with_path(&t.path)
            .with_version(version.clone()));
        }
        self.write_value(&self.plan(&t, current), &lock, value)
    }

    fn current_under_lock(&self, t: &Target) -> Result<Current> {
        let fs = self.fs().as_ref();
        match fs.metadata(&t.path) {
            Ok(m) if m.is_dir() => Err(is_a_directory(&t.path)),
            Ok(_) => {
                let (version, parses) = atomic::inspect(fs, &t.path)?;
                Ok(Current::Read { version, parses })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Current::Missing),
            Err(e) => Err(Error::io("inspect", &t.path, e)),
        }
    }

    /// Locked read-modify-write: take the lock, read and parse, call `f` on the value,
    /// write the result with the replace protocol, release. Concurrent updates from
    /// threads and processes never lose each other's changes. If `f` returns an error
    /// nothing is written. If the new bytes equal the old, nothing is written either.
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
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> Result<R>) -> Result<(R, Receipt)> {
        self.modify(None, None, f)
    }

    /// As [`Doc::update`], starting from `T::default()` when the document is missing.
    ///
    /// # Errors
    /// As [`Doc::update`], except that a missing document is not an error.
    pub fn update_or_default<R>(&self, f: impl FnOnce(&mut T) -> Result<R>) -> Result<(R, Receipt)>
    where
        T: Default,
    {
        self.modify(None, Some(&mut T::default), f)
    }

    /// As [`Doc::update`], starting from `init()` when the document is missing.
    ///
    /// # Errors
    /// As [`Doc::update_or_default`].
    pub fn update_or_insert_with<R>(
        &self,
        mut init: impl FnMut() -> T,
        f: impl FnOnce(&mut T) -> Result<R>,
    ) -> Result<(R, Receipt)> {
        self.modify(None, Some(&mut init), f)
    }

    /// As [`Doc::update`], but only if the document is still at version `expected`.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] if it changed; otherwise as [`Doc::update`].
    pub fn update_if<R>(
        &self,
        expected: &Version,
        f: impl FnOnce(&mut T) -> Result<R>,
    ) -> Result<(R, Receipt)> {
        self.modify(Some(expected), None, f)
    }

    fn modify<R>(
        &self,
        expected: Option<&Version>,
        init: Option<&mut dyn FnMut() -> T>,
        f: impl FnOnce(&mut T) -> Result<R>,
    ) -> Result<(R, Receipt)> {
        let t = self.write_target()?;
        let lock = self.lock_target(&t)?;
        let (mut value, current) = match read_all(self.fs().as_ref(), &t.path) {
            Ok(bytes) => {
                let version = Version::of(&bytes);
                if let Some(exp) = expected
                    && exp != &version
                {
                    return Err(conflict(&t, exp, Some(&version)));
                }
                let value = json::parse::<T>(&bytes, &t.path).map_err(|e| {
                    if e.kind() == ErrorKind::Corrupt {
                        Error::new(
                            ErrorKind::Corrupt,
                            format!(
                                "cannot update {}: {} (restore it from a backup first, e.g. `statefile recover`)",
                                t.path.display(),
                                e.corrupt_info().map_or_else(|| e.to_string(), |c| format!("{} at line {} column {}", c.reason, c.line, c.column))
                            ),
                        )
                        .with_path(&t.path)
                        .with_version(version.clone())
                        .with_source(e)
                    } else {
                        e
                    }
                })?;
                (
                    value,
                    Current::Read {
                        version,
                        parses: true,
                    },
                )
            }
            Err(e) if e.raw_os_error() == Some(21) => return Err(is_a_directory(&t.path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(exp) = expected {
                    return Err(conflict(&t, exp, None));
                }
                match init {
                    Some(init) => (init(), Current::Missing),
                    None => {
                        return Err(Error::new(
                            ErrorKind::NotFound,
                            format!("cannot update {}: it does not exist", t.path.display()),
                        )
                        .with_path(&t.path));
                    }
                }
            }
            Err(e) => return Err(Error::io("read", &t.path, e)),
        };
        let r = f(&mut value)?;
        let receipt = self.write_value(&self.plan(&t, current), &lock, &value)?;
        Ok((r, receipt))
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

    fn delete_inner(&self, expected: Option<&Version>) -> Result<Deleted> {
        let t = self.write_target()?;
        atomic::refuse_if_poisoned(self.poison.as_deref(), "delete", &t.path)?;
        let _lock = self.lock_target(&t)?;
        let fs = self.fs().as_ref();
        let (version, parses) = match self.current_under_lock(&t)? {
            Current::Read { version, parses } => (version, parses),
            _ => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("cannot delete {}: it does not exist", t.path.display()),
                )
                .with_path(&t.path));
            }
        };
        if let Some(exp) = expected
            && exp != &version
        {
            return Err(conflict(&t, exp, Some(&version)));
        }
        let kept_as = if !parses {
            let to = t.corrupt_path();
            fs.rename(&t.path, &to)
                .map_err(|e| Error::io("move aside", &t.path, e))?;
            Some(to)
        } else if self.opts.backups > 0 {
            atomic::shift_backups(fs, &t, self.opts.backups)
                .map_err(|e| Error::io("rotate backups of", &t.path, e))?;
            fs.rename(&t.path, &t.backup_path(1))
                .map_err(|e| Error::io("move to backup", &t.path, e))?;
            Some(t.backup_path(1))
        } else {
            fs.remove_file(&t.path)
                .map_err(|e| Error::io("delete", &t.path, e))?;
            None
        };
        self.sync_after_delete(&t, &version)?;
        Ok(Deleted { version, kept_as })
    }

    fn sync_after_delete(&self, t: &Target, version: &Version) -> Result<()> {
        if self.opts.durability != Durability::Full {
            return Ok(());
        }
        self.fs().sync_dir(&t.dir).map_err(|e| {
            if let Some(p) = &self.poison {
                p.store(true, Ordering::SeqCst);
            }
            Error::new(
                ErrorKind::Durability,
                format!(
                    "deleted {}, but syncing its directory failed: the deletion may not survive a power loss",
                    t.path.display()
                ),
            )
            .with_path(&t.path)
            .with_version(version.clone())
            .with_source(e)
        })
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
        let t = self.write_target()?;
        atomic::refuse_if_poisoned(self.poison.as_deref(), "delete", &t.path)?;
        let lock = self.lock_target(&t)?;
        let fs = self.fs().as_ref();
        let mut victims = vec![t.path.clone()];
        victims.extend(backup::backup_files(fs, &t)?);
        victims.push(t.corrupt_path());
        let mut removed = Vec::new();
        for p in victims {
            match fs.remove_file(&p) {
                Ok(()) => removed.push(p),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("delete", &p, e)),
            }
        }
        if removed.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("cannot delete {}: it does not exist", t.path.display()),
            )
            .with_path(&t.path));
        }
        // Last, while still holding it: waiters notice the unlinked lock and retry.
        match fs.remove_file(&t.lock_path()) {
            Ok(()) => removed.push(t.lock_path()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("delete", &t.lock_path(), e)),
        }
        let version = Version::of(b"");
        self.sync_after_delete(&t, &version)?;
        drop(lock);
        Ok(removed)
    }

    /// The kept previous versions, newest first (numbered from 1).
    ///
    /// # Errors
    /// I/O kinds if the directory or a backup cannot be read.
    pub fn backups(&self) -> Result<Vec<BackupInfo>> {
        let (t, _) = self.target()?;
        backup::list(self.fs().as_ref(), &t)
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
        let t = self.write_target()?;
        let lock = self.lock_target(&t)?;
        backup::restore_locked(&self.plan(&t, Current::Unknown), &lock, which, None)
    }

    /// Repair: restore `which` only if the document still has the `damaged` version (or
    /// is still missing, for `None`) under the lock, so a concurrent fix is never undone.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] if it changed; otherwise as [`Doc::restore`].
    pub fn restore_if(&self, damaged: Option<&Version>, which: &BackupRef) -> Result<Receipt> {
        let t = self.write_target()?;
        let lock = self.lock_target(&t)?;
        backup::restore_locked(
            &self.plan(&t, Current::Unknown),
            &lock,
            which,
            Some(damaged),
        )
    }
}

fn identity(m: &Metadata) -> (u64, u64, u64, i128, i128) {
    (m.dev, m.ino, m.len, m.mtime_ns, m.ctime_ns)
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn is_a_directory(path: &Path) -> Error {
    Error::new(
        ErrorKind::InvalidName,
        format!("{} is a directory, not a document", path.display()),
    )
    .with_path(path)
}

fn conflict(t: &Target, expected: &Version, found: Option<&Version>) -> Error {
    let msg = match found {
        Some(v) => format!(
            "{} changed: expected version {expected}, found {v}",
            t.path.display()
        ),
        None => format!(
            "{} does not exist (expected version {expected})",
            t.path.display()
        ),
    };
    let e = Error::new(ErrorKind::Conflict, msg).with_path(&t.path);
    match found {
        Some(v) => e.with_version(v.clone()),
        None => e,
    }
}
