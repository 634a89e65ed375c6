//! The replace protocol: how new bytes take the place of a file so that a crash at any
//! instant leaves either the complete old version or the complete new one.
//!
//! ```text
//!  0. mkdir missing parents        (only if asked; each one synced into its parent)
//!     open the directory once      every step below goes through this handle (*at
//!                                  calls): the path is never resolved a second time
//!  1. create .name.sf-<rand>.tmp   O_EXCL, 0600: unique per writer, private until step 2
//!  2. fchown + fchmod the temp     the target's owner and mode, or 0644 less the umask
//!  3. stream the bytes into it     through a buffer, hashing and counting them
//!  4. fsync the temp               the data is on disk before any name points at it
//!  5. (verify) re-read the temp    catches media that lie, before anything is replaced
//!  6. link the old version aside   a hard link is a free exact backup; copy if refused
//!  7. rename temp -> name          atomic: readers see old or new, never a mix
//!  8. rotate the backup link       .bak -> .bak.2 ..., the link -> .bak
//!  9. fsync the directory          makes the rename itself (and 8) survive power loss
//! ```
//!
//! Any failure before step 7 removes the temp (and the backup link) and leaves the
//! target untouched. A failed fsync is final: it is reported, never retried, because
//! after a failed fsync the kernel may have dropped the dirty pages (PostgreSQL's
//! lesson). A failure at step 9 means the new version is visible but its durability is
//! unknown: that is [`ErrorKind::Durability`], carrying the new version.
//!
//! The caller holds the document's lock for the whole call (the `&LockGuard` argument):
//! that is how recovery tells a live writer's temp file from a dead one's.

use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, ErrorKind, Result};
use crate::fs::{Fs, FsFile, Metadata};
use crate::json::{self, SerializeError};
use crate::lock::LockGuard;
use crate::names::{Target, random_suffix};
use crate::options::{BackupMade, BackupMethod, Durability, Receipt};
use crate::version::{HashingWriter, Version, hash_reader};

/// What the caller already knows about the file being replaced.
#[derive(Debug, Clone)]
pub(crate) enum Current {
    /// Nothing: stat it (and, if a backup is wanted, read it).
    Unknown,
    /// It was read under the lock just now.
    Read { version: Version, parses: bool },
    /// It was found missing under the lock just now.
    Missing,
}

/// How to check the temp file after syncing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    No,
    /// The bytes hash to what was written.
    Bytes,
    /// ... and they parse as JSON.
    Json,
}

/// Everything one replace needs to know.
#[derive(Debug, Clone)]
pub(crate) struct Plan<'a> {
    pub fs: &'a dyn Fs,
    pub target: &'a Target,
    pub durability: Durability,
    /// How many backups to keep; 0 for none. Only JSON that parses is backed up.
    pub backups: usize,
    pub verify: Verify,
    pub current: Current,
    /// Set when a directory sync fails, so the owning store refuses further writes.
    pub poison: Option<&'a AtomicBool>,
}

/// Removes a file when dropped, unless disarmed: the temp file and the backup link
/// must not outlive a failed write.
struct RemoveOnDrop<'a> {
    fs: &'a dyn Fs,
    path: Option<PathBuf>,
}

impl RemoveOnDrop<'_> {
    fn disarm(&mut self) -> Option<PathBuf> {
        self.path.take()
    }
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            // If even this fails, recovery removes the temp later (the name says so).
            let _ = self.fs.remove_file(&p);
        }
    }
}

/// Where a replace's content goes: a buffer, then the hasher, then the temp file. A
/// concrete type, so the serializer's many small writes compile to inlined buffer
/// copies (through `dyn Write` a pretty 1 MB document took twice as long).
pub(crate) type TempWriter<'a> = BufWriter<HashingWriter<&'a mut Box<dyn FsFile>>>;

/// What produces a replace's content.
pub(crate) type Body<'b> =
    dyn FnMut(&mut TempWriter<'_>) -> std::result::Result<(), SerializeError> + 'b;

/// Run the replace protocol, writing the new content with `body`.
pub(crate) fn replace(plan: &Plan<'_>, lock: &LockGuard, body: &mut Body<'_>) -> Result<Receipt> {
    let t = plan.target;
    refuse_if_poisoned(plan.poison, "write", &t.path)?;
    // Hold the resolved directory open and make every call below relative to it
    // (openat, renameat, ...): the path is not resolved again, so a directory swapped
    // for a symlink meanwhile cannot redirect the write.
    // The lock was normally taken through this handle already; reuse it.
    let own;
    let dir_fs = match lock.dir_handle(&t.dir) {
        Some(h) => h,
        None => {
            own = plan
                .fs
                .pin_dir(&t.dir)
                .map_err(|e| Error::io("open directory", &t.dir, e))?;
            own.as_deref().unwrap_or(plan.fs)
        }
    };
    let plan = &Plan {
        fs: dir_fs,
        ..plan.clone()
    };
    let fs = plan.fs;

    // What is there now, and whether we may replace it.
    let old_meta = stat_current(fs, &t.path)?;
    if old_meta.is_some() {
        fs.check_write_access(&t.path)
            .map_err(|e| Error::io("write", &t.path, e))?;
    }
    let (previous, old_parses) = match (&plan.current, &old_meta) {
        (_, None) | (Current::Missing, _) => (None, false),
        (Current::Read { version, parses }, Some(_)) => (Some(version.clone()), *parses),
        (Current::Unknown, Some(_)) if plan.backups > 0 => {
            let (v, parses) = inspect(fs, &t.path)?;
            (Some(v), parses)
        }
        (Current::Unknown, Some(_)) => (None, false),
    };

    // 1. A temp file only this writer uses, beside the target.
    let (temp_path, mut file) = create_temp(fs, t)?;
    let mut temp = RemoveOnDrop {
        fs,
        path: Some(temp_path.clone()),
    };

    // 2. Owner and mode before any content goes in.
    set_permissions(fs, file.as_mut(), old_meta.as_ref(), &temp_path)?;

    // 3. Stream the content, hashing and counting it.
    let (version, bytes) = {
        // The hasher sits behind the buffer, so it sees 64 KiB chunks rather than the
        // serializer's many small writes.
        let mut w: TempWriter<'_> =
            BufWriter::with_capacity(64 * 1024, HashingWriter::new(&mut file));
        body(&mut w).map_err(|e| match e {
            SerializeError::Value(msg) => Error::new(
                ErrorKind::Serialize,
                format!("cannot write {}: {msg}", t.path.display()),
            )
            .with_path(&t.path),
            SerializeError::Io(e) => Error::io("write temp file for", &t.path, e),
        })?;
        let hashing = w
            .into_inner()
            .map_err(|e| Error::io("write temp file for", &t.path, e.into_error()))?;
        let (_, version, bytes) = hashing.finish();
        (version, bytes)
    };

    // 4. The data must be on disk before a name points at it.
    sync_file(plan, file.as_mut(), &t.path)?;
    drop(file);

    // 5. Read it back if asked.
    if plan.verify != Verify::No {
        verify_temp(
            fs,
            &temp_path,
            &version,
            plan.verify == Verify::Json,
            &t.path,
        )?;
    }

    // Same bytes as now: no backup of an identical version, but the write still goes
    // through rename and directory sync. The current file may never have been made
    // durable (an earlier write at a lower durability, or one whose directory sync
    // failed), and this call promises it is.
    let unchanged = previous.as_ref() == Some(&version);

    // 6. Keep the old version: by hard link (free, exact), or by copy where refused.
    //    An old version that does not parse is kept once as .name.corrupt instead.
    let mut aside = RemoveOnDrop { fs, path: None };
    let mut backup_method = None;
    if old_meta.is_some() && previous.is_some() && !unchanged && (plan.backups > 0 || !old_parses) {
        let link_path = t.temp_path(&random_suffix());
        backup_method = Some(link_aside(plan, &t.path, &link_path)?);
        aside.path = Some(link_path);
    }

    // 7. The atomic step.
    if mutant_in_place() {
        return mutant_write_in_place(plan, lock, &temp_path, version, bytes);
    }
    fs.rename(&temp_path, &t.path)
        .map_err(|e| Error::io("rename temp file over", &t.path, e))?;
    temp.disarm();

    // 8. Rotate the link into the backups (or keep a corrupt old version once).
    let backup = match (aside.disarm(), backup_method) {
        (Some(link), Some(method)) => {
            let made = if old_parses {
                rotate(fs, t, plan.backups, &link)
            } else {
                fs.rename(&link, &t.corrupt_path())
                    .map(|()| t.corrupt_path())
            };
            match made {
                Ok(path) if old_parses => previous.clone().map(|version| BackupMade {
                    path,
                    version,
                    method,
                }),
                Ok(path) => {
                    tracing::warn!(file = %t.path.display(), kept = %path.display(),
                        "replaced a document that did not parse; kept it aside");
                    None
                }
                Err(e) => {
                    // The write itself succeeded; only the history is short one version.
                    let _ = fs.remove_file(&link);
                    tracing::warn!(file = %t.path.display(), error = %e,
                        "could not rotate the backup of the replaced version");
                    None
                }
            }
        }
        _ => None,
    };

    // 9. Make the rename durable.
    let reached = sync_dir(plan, &version)?;

    Ok(Receipt {
        path: t.path.clone(),
        version,
        previous,
        bytes,
        durability: reached,
        backup,
        created: old_meta.is_none(),
        unchanged,
        lock_wait: lock.waited(),
    })
}

/// Step 0, before the lock (the lock file lives in the directory): create missing
/// directories above the target if asked, then take the document's lock.
pub(crate) fn lock_target(
    fs: &Arc<dyn Fs>,
    t: &Target,
    create_dirs: bool,
    durability: Durability,
    timeout: std::time::Duration,
) -> Result<LockGuard> {
    ensure_dir(fs.as_ref(), t, create_dirs, durability)?;
    // The lock file, too, through the resolved directory's handle.
    let pinned = fs
        .pin_dir(&t.dir)
        .map_err(|e| Error::io("open directory", &t.dir, e))?;
    let ops: &dyn Fs = pinned.as_deref().unwrap_or(fs.as_ref());
    let mut guard = crate::lock::acquire_through(fs, ops, &t.lock_path(), timeout)?;
    guard.keep_dir(&t.dir, pinned);
    Ok(guard)
}

/// Create the missing directories above the target, top down, syncing each into its
/// parent with full durability. Together with the directory sync after the rename,
/// that makes every directory the write created durable.
fn ensure_dir(fs: &dyn Fs, t: &Target, create_dirs: bool, durability: Durability) -> Result<()> {
    let dir = &t.dir;
    match fs.metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::InvalidName,
                format!(
                    "cannot write {}: {} is not a directory",
                    t.path.display(),
                    dir.display()
                ),
            )
            .with_path(&t.path));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("inspect directory", dir, e)),
    }
    if !create_dirs {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "cannot write {}: directory {} does not exist",
                t.path.display(),
                dir.display()
            ),
        )
        .with_path(&t.path));
    }
    let mut missing = Vec::new();
    let mut cur = dir.as_path();
    while let Err(e) = fs.metadata(cur) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(Error::io("inspect directory", cur, e));
        }
        missing.push(cur.to_path_buf());
        cur = match cur.parent() {
            Some(p) => p,
            None => break,
        };
    }
    missing.reverse();
    create_missing_dirs(fs, &missing, durability)
}

/// Create `dirs` (parents first), with full durability syncing each into its parent.
///
/// A directory another writer made first is synced into its parent all the same: that
/// writer may not have synced it yet, and this write is about to be acknowledged inside
/// it. A directory whose parent could not be synced is removed again (it is empty), so
/// that the next write creates and syncs it instead of trusting it.
pub(crate) fn create_missing_dirs(
    fs: &dyn Fs,
    dirs: &[PathBuf],
    durability: Durability,
) -> Result<()> {
    for d in dirs {
        let made = match fs.create_dir(d) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(Error::io("create directory", d, e)),
        };
        if durability == Durability::Full {
            let parent = match d.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if let Err(e) = fs.sync_dir(parent) {
                if made {
                    let _ = fs.remove_dir(d);
                }
                return Err(Error::io("sync directory", parent, e));
            }
        }
    }
    Ok(())
}

fn stat_current(fs: &dyn Fs, path: &Path) -> Result<Option<Metadata>> {
    match fs.metadata(path) {
        Ok(m) if m.is_dir() => Err(Error::new(
            ErrorKind::InvalidName,
            format!("cannot write {}: it is a directory", path.display()),
        )
        .with_path(path)),
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("inspect", path, e)),
    }
}

/// Hash the current file and check whether it parses, streaming (the file may be large).
pub(crate) fn inspect(fs: &dyn Fs, path: &Path) -> Result<(Version, bool)> {
    /// Up to this size the file is read whole: parsing a slice is several times faster
    /// than parsing a stream. Larger files stream, so memory stays bounded.
    const IN_MEMORY: u64 = 16 << 20;
    let mut f = crate::fs::retry(|| fs.open_read(path)).map_err(|e| Error::io("read", path, e))?;
    let len = f.metadata().map_err(|e| Error::io("read", path, e))?.len;
    if len <= IN_MEMORY {
        let mut bytes = Vec::with_capacity(len as usize + 1);
        f.read_to_end(&mut bytes)
            .map_err(|e| Error::io("read", path, e))?;
        let parses = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
        return Ok((Version::of(&bytes), parses));
    }
    let mut tee = HashingReader::new(f);
    let parses = json::validate_reader(&mut tee).is_ok();
    // Hash whatever the parser did not consume (trailing bytes of a damaged file).
    io::copy(&mut tee, &mut io::sink()).map_err(|e| Error::io("read", path, e))?;
    if let Some(e) = tee.error.take() {
        return Err(Error::io("read", path, e));
    }
    let (version, _) = tee.finish();
    Ok((version, parses))
}

/// A reader that hashes what passes through and remembers the first I/O error (the
/// JSON parser reports I/O errors as parse errors, which must not read as corruption).
struct HashingReader<R> {
    inner: R,
    hasher: HashingWriter<io::Sink>,
    error: Option<io::Error>,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: HashingWriter::new(io::sink()),
            error: None,
        }
    }
    fn finish(self) -> (Version, u64) {
        let (_, v, n) = self.hasher.finish();
        (v, n)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.hasher.write_all(&buf[..n])?;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let copy = io::Error::new(e.kind(), e.to_string());
                    self.error.get_or_insert(e);
                    return Err(copy);
                }
            }
        }
    }
}

fn create_temp(fs: &dyn Fs, t: &Target) -> Result<(PathBuf, Box<dyn FsFile>)> {
    let mut attempts = 0;
    loop {
        let path = if mutant_fixed_temp() {
            t.dir.join(format!(".{}.tmp", t.name.to_string_lossy()))
        } else {
            t.temp_path(&random_suffix())
        };
        match fs.create_new(&path, 0o600) {
            Ok(f) => return Ok((path, f)),
            // 80 random bits collide only if the random source is broken; try again.
            Err(e)
                if e.kind() == io::ErrorKind::AlreadyExists
                    && attempts < 8
                    && !mutant_fixed_temp() =>
            {
                attempts += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("create temp file for", &t.path, e)),
        }
    }
}

/// The temp file takes the target's owner (where the process may set it) and mode;
/// a new document gets 0644 less the umask. Done before any content is written.
fn set_permissions(
    fs: &dyn Fs,
    file: &mut dyn FsFile,
    old: Option<&Metadata>,
    temp_path: &Path,
) -> Result<()> {
    let mode = match old {
        Some(m) => {
            let mine = file
                .metadata()
                .map_err(|e| Error::io("inspect temp file", temp_path, e))?;
            if (mine.uid, mine.gid) != (m.uid, m.gid) {
                match file.set_owner(m.uid, m.gid) {
                    Ok(()) => {}
                    // Only root (or the owner, for groups it belongs to) may do this.
                    Err(e) if matches!(e.raw_os_error(), Some(1) | Some(13)) => {}
                    Err(e) => return Err(Error::io("set owner of temp file", temp_path, e)),
                }
            }
            m.mode
        }
        None => 0o644 & !fs.umask(),
    };
    if mode != 0o600 {
        file.set_mode(mode)
            .map_err(|e| Error::io("set mode of temp file", temp_path, e))?;
    }
    Ok(())
}

fn sync_file(plan: &Plan<'_>, file: &mut dyn FsFile, target: &Path) -> Result<()> {
    if mutant_no_file_fsync() {
        return Ok(());
    }
    let r = match plan.durability {
        Durability::Full => file.sync_all(),
        Durability::Data => file.sync_data(),
        Durability::None => Ok(()),
    };
    // Never retried: after a failed fsync the page cache may already have dropped the
    // data it could not write, so a second fsync "succeeding" would prove nothing.
    r.map_err(|e| {
        let mut err = Error::io("sync temp file for", target, e);
        err = Error::new(
            err.kind(),
            format!("{} (the document is unchanged)", err.message()),
        )
        .with_path(target)
        .with_source(err);
        err
    })
}

fn verify_temp(fs: &dyn Fs, temp: &Path, want: &Version, json: bool, target: &Path) -> Result<()> {
    let got = if json {
        inspect(fs, temp)?
    } else {
        let f = crate::fs::retry(|| fs.open_read(temp))
            .map_err(|e| Error::io("re-read temp file for", target, e))?;
        let (v, _) = hash_reader(f).map_err(|e| Error::io("re-read temp file for", target, e))?;
        (v, true)
    };
    if &got.0 != want || !got.1 {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "cannot write {}: verification failed, the synced temp file does not read back \
                 as written (the document is unchanged)",
                target.display()
            ),
        )
        .with_path(target));
    }
    Ok(())
}

/// Link (or copy) the current version to `link`, a temp name, before the rename.
fn link_aside(plan: &Plan<'_>, current: &Path, link: &Path) -> Result<BackupMethod> {
    let fs = plan.fs;
    match fs.hard_link(current, link) {
        Ok(()) => Ok(BackupMethod::Link),
        // EPERM, EXDEV, EMLINK, EOPNOTSUPP: this file system will not link; copy.
        Err(e) if matches!(e.raw_os_error(), Some(1) | Some(18) | Some(31) | Some(95)) => {
            copy_file(plan, current, link)?;
            Ok(BackupMethod::Copy)
        }
        Err(e) => Err(Error::io("link backup of", current, e)),
    }
}

fn copy_file(plan: &Plan<'_>, from: &Path, to: &Path) -> Result<()> {
    let fs = plan.fs;
    let mut src =
        crate::fs::retry(|| fs.open_read(from)).map_err(|e| Error::io("read", from, e))?;
    let mut dst = crate::fs::retry(|| fs.create_new(to, 0o600))
        .map_err(|e| Error::io("create backup copy of", from, e))?;
    let mut guard = RemoveOnDrop {
        fs,
        path: Some(to.to_path_buf()),
    };
    io::copy(&mut src, &mut dst).map_err(|e| Error::io("copy backup of", from, e))?;
    sync_file(plan, dst.as_mut(), from)?;
    guard.disarm();
    Ok(())
}

/// Shift `.bak` -> `.bak.2` -> ... (dropping the oldest) and move `link` into `.bak`.
/// Each rename is atomic and replaces its destination, so a crash in between loses at
/// most one old backup, never the document.
fn rotate(fs: &dyn Fs, t: &Target, keep: usize, link: &Path) -> io::Result<PathBuf> {
    shift_backups(fs, t, keep)?;
    let first = t.backup_path(1);
    fs.rename(link, &first)?;
    Ok(first)
}

/// A store whose directory sync failed refuses every change until it is reopened, like a
/// database after a failed fsync: what is on disk is unknown.
pub(crate) fn refuse_if_poisoned(
    poison: Option<&AtomicBool>,
    verb: &str,
    path: &Path,
) -> Result<()> {
    if poison.is_some_and(|p| p.load(Ordering::SeqCst)) {
        return Err(Error::new(
            ErrorKind::Durability,
            format!(
                "refusing to {verb} {}: an earlier directory sync in this store failed, so \
                 what is on disk is unknown; reopen the store after checking the disk",
                path.display()
            ),
        )
        .with_path(path));
    }
    Ok(())
}

/// Make room for a new `.bak`: shift `.bak`, `.bak.2` ... up by one, the last one kept
/// (`.bak.{keep}`) being overwritten. Only backups that exist are touched, so a huge
/// `keep` costs nothing.
pub(crate) fn shift_backups(fs: &dyn Fs, t: &Target, keep: usize) -> io::Result<()> {
    let mut n = 0;
    while n + 1 < keep {
        match fs.symlink_metadata(&t.backup_path(n + 1)) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    for k in (1..=n).rev() {
        match fs.rename(&t.backup_path(k), &t.backup_path(k + 1)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn sync_dir(plan: &Plan<'_>, version: &Version) -> Result<Durability> {
    if plan.durability != Durability::Full {
        return Ok(plan.durability);
    }
    if mutant_no_dir_fsync() {
        return Ok(Durability::Full);
    }
    let dir = &plan.target.dir;
    if let Err(e) = plan.fs.sync_dir(dir) {
        if let Some(p) = plan.poison {
            p.store(true, Ordering::SeqCst);
        }
        return Err(Error::new(
            ErrorKind::Durability,
            format!(
                "wrote {} (version {version}), but syncing directory {} failed: the new \
                 version is visible, yet may not survive a power loss",
                plan.target.path.display(),
                dir.display()
            ),
        )
        .with_path(&plan.target.path)
        .with_version(version.clone())
        .with_source(e));
    }
    Ok(Durability::Full)
}

// ---- Test-only mutants: deliberately broken protocols the crash explorer must catch.

#[cfg(feature = "mutants")]
use crate::mutants::{Mutant, active};

#[cfg(feature = "mutants")]
fn mutant_no_file_fsync() -> bool {
    active(Mutant::NoFileFsync)
}
#[cfg(feature = "mutants")]
fn mutant_no_dir_fsync() -> bool {
    active(Mutant::NoDirFsync)
}
#[cfg(feature = "mutants")]
fn mutant_in_place() -> bool {
    active(Mutant::InPlace)
}
#[cfg(feature = "mutants")]
fn mutant_fixed_temp() -> bool {
    active(Mutant::FixedTempName)
}
#[cfg(not(feature = "mutants"))]
fn mutant_no_file_fsync() -> bool {
    false
}
#[cfg(not(feature = "mutants"))]
fn mutant_no_dir_fsync() -> bool {
    false
}
#[cfg(not(feature = "mutants"))]
fn mutant_in_place() -> bool {
    false
}
#[cfg(not(feature = "mutants"))]
fn mutant_fixed_temp() -> bool {
    false
}

/// The in-place mutant: instead of renaming, delete the target and write the bytes
/// into a fresh file at its name, the way the services that motivated statefile did.
#[cfg_attr(not(feature = "mutants"), allow(unused_variables))]
fn mutant_write_in_place(
    plan: &Plan<'_>,
    lock: &LockGuard,
    temp: &Path,
    version: Version,
    bytes: u64,
) -> Result<Receipt> {
    let fs = plan.fs;
    let t = plan.target;
    let content = crate::fs::read_all(fs, temp).map_err(|e| Error::io("read", temp, e))?;
    let _ = fs.remove_file(temp);
    match fs.remove_file(&t.path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", &t.path, e)),
    }
    let mut f = fs
        .create_new(&t.path, 0o644)
        .map_err(|e| Error::io("create", &t.path, e))?;
    f.write_all(&content)
        .map_err(|e| Error::io("write", &t.path, e))?;
    f.sync_all().map_err(|e| Error::io("sync", &t.path, e))?;
    fs.sync_dir(&t.dir)
        .map_err(|e| Error::io("sync directory", &t.dir, e))?;
    Ok(Receipt {
        path: t.path.clone(),
        version,
        previous: None,
        bytes,
        durability: plan.durability,
        backup: None,
        created: false,
        unchanged: false,
        lock_wait: lock.waited(),
    })
}
