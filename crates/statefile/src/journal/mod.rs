//! Journal mode: a write-ahead journal per store, so a durable write costs one flush, and
//! several documents can change together, all or nothing.
//!
//! A store (a directory tree) is in journal mode when its root holds
//! `.statefile/journal`. Every statefile writer looks for it under the document's lock,
//! walking up from the document's resolved directory, on every write: a journal enabled
//! by another process a moment ago is never bypassed, because the walk sees the file
//! system as it is now, not a cached "no journal". Its header names its format version;
//! a version this build does not know makes writes in the tree fail rather than bypass
//! it.
//!
//! A commit, under the locks of every document it changes:
//!
//! ```text
//!  1. settle      dead writers' commits naming these documents are applied first
//!  2. temp files  created and filled beside each document (not synced)
//!  3. append      one record: each document's name, complete new bytes, version, and
//!                 the version replaced (or a delete); checksummed; under the append
//!                 lock; a slot in the shared state marks it in flight
//!  4. flush       fdatasync of the preallocated journal, once for every record
//!                 appended so far, by whoever gets the flush lock first; a writer whose
//!                 record a flush already covered does not flush again
//!  5. rename      each temp over its document, no further syncs
//!  6. finish      the slot is freed; the locks are released; the call returns
//! ```
//!
//! A checkpoint makes the documents written since the previous one durable (their
//! files, then their directories), then writes the new checkpoint position into the
//! header and syncs it; only then is the space before it reused. Recovery replays the
//! records after the checkpoint: a document whose bytes are not those of its last
//! record is rewritten from it. The details (and the on-disk format) are in
//! `docs/design.md`, "Journal mode".

mod boot;
mod format;
mod handle;
mod read;
mod replay;
mod shm;

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::error::{Context, Error, ErrorKind, Result, errno};
use crate::fs::{FileType, Fs, FsDir};
use crate::names::Target;
use crate::options::Options;

pub(crate) use format::{Entry, Op, record_len, withdraw_len};
pub(crate) use handle::{AppendError, Journal, Ticket};
pub(crate) use read::{before_listing, before_read};
pub use replay::{
    CheckpointReport, JournalDamage, JournalStatus, PendingDocument, SkippedRecord,
    UncheckedDocument,
};
pub(crate) use replay::{MAX_SYNCED_BACKUPS, wait_disabled};

/// The directory at a store's root that holds the journal.
pub const META_DIR: &str = ".statefile";
/// The journal file, in [`META_DIR`].
pub(crate) const LOG: &str = "journal";
/// The processes' shared state.
pub(crate) const SHM: &str = "journal-shm";
/// Held shared by every process using the journal; exclusive while one recovers it.
pub(crate) const USERS: &str = "journal-users";
/// Held exclusive while a checkpoint runs.
pub(crate) const CKPT: &str = "journal-ckpt";
/// Readable by everyone and never locked: the boot in which the journal was last
/// replayed ([`boot::Marker`]), for readers who may not open the journal or its shared
/// state.
pub(crate) const BOOT: &str = "journal-boot";

/// `mode` without the read bits of a class (group, others) that may not write: the
/// mode of every journal file. Whoever may open a file may `flock(2)` it, and every
/// commit takes the journal's locks (on `journal-shm` and `journal`): a class that may
/// read them may make every writer of the tree fail (`LockTimeout` after its lock
/// timeout); a class that may write them is trusted with the journal anyway.
pub(crate) fn lockable(mode: u32) -> u32 {
    let mut m = mode & 0o7777;
    for (read, write) in [(0o040, 0o020), (0o004, 0o002)] {
        if m & write == 0 {
            m &= !read;
        }
    }
    m
}

/// The size of a new journal's ring unless told otherwise: 16 MiB.
pub const DEFAULT_CAPACITY: u64 = 16 << 20;

/// How `enable` makes a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalOptions {
    /// Bytes of the ring that holds records (rounded up to 4 KiB; at least 16 KiB). A
    /// record holds the complete new bytes of every document a commit changes; a
    /// document larger than a quarter of this is written without the journal (three
    /// syncs), and a transaction larger than half of it is refused.
    pub capacity: u64,
    /// Permission bits of the journal's files (before nothing: exact). The journal holds
    /// a copy of every document written since the last checkpoint, so it must be no
    /// more readable than the most private document; every writer in the tree must be
    /// able to read and write it. Default 0600. Read for a class (group, others) that
    /// may not write is dropped (0644 gives 0600): whoever may open a journal file may
    /// hold its lock, which every commit takes.
    /// `journal-boot` (the boot in which the journal was last replayed, no document's
    /// content, never locked) gets them plus read for group and others, so that a
    /// reader who may not open the journal can see it was replayed since the boot.
    pub mode: u32,
    /// How often, at most, the journal goes without a checkpoint while it is written to.
    pub checkpoint_age: Duration,
    /// Commit by swapping the new file in (`renameat2` with `RENAME_EXCHANGE`, then
    /// removing the old version's name) instead of renaming it over the document.
    /// Default off. On ext4, a file renamed over another is written out at once
    /// (`auto_da_alloc`): every version of a document reaches the disk, and each flush
    /// of the journal waits behind that I/O. Swapped in, a document's data is written
    /// by the checkpoint (or the kernel's own write-back, within about 30 s), and a
    /// version replaced before then never is. Measured on an ext4 without a journal:
    /// 7.5x the durable writes per second; on an ext4 with one (the default of
    /// mkfs.ext4), no gain (BENCHMARKS.md, "Partial run O"). The cost: after a power
    /// loss, a document written in the last seconds may be empty or older on disk
    /// until statefile opens the store, or reads or writes it, and replays the journal
    /// (every statefile reader does; a program reading the file directly does not).
    /// Choose it when the store's readers all go through statefile (the library, the
    /// CLI, the server, the bindings). A property of the journal on disk, kept until
    /// `disable`: every writer in the tree commits the same way.
    pub swap: bool,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            capacity: DEFAULT_CAPACITY,
            mode: 0o600,
            checkpoint_age: Duration::from_secs(60),
            swap: false,
        }
    }
}

/// Turn on journal mode for the tree at `dir`: create `dir/.statefile/journal`, its ring
/// preallocated by writing zeros (so that a flush never has to record new blocks), and
/// its lock files, all synced. From then on every statefile writer in the tree, in any
/// process, uses it. Enabling a tree that already has a journal at `dir` reports that
/// journal and changes nothing.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use statefile::journal::{self, JournalOptions};
///
/// let store = statefile::Store::open(dir.path())?;
/// journal::enable(dir.path(), &store.options(), JournalOptions::default())?;
/// store.doc::<u32>("n.json")?.write(&7)?; // one flush of the journal, then a rename
/// let status = journal::status(dir.path(), store.options())?.expect("enabled");
/// assert_eq!(status.records, 1);
/// journal::disable(dir.path(), store.options())?; // checkpoint, then remove it
/// assert_eq!(store.doc::<u32>("n.json")?.read()?, 7);
/// # Ok::<(), statefile::Error>(())
/// ```
///
/// # Errors
/// [`ErrorKind::InvalidName`] if `dir` is inside another journal's tree or holds one
/// deeper down (a document must belong to one journal); [`ErrorKind::NotFound`] if
/// `dir` does not exist; I/O kinds (the journal is not created then).
pub fn enable(
    dir: impl AsRef<Path>,
    opts: &Options,
    jopts: JournalOptions,
) -> Result<JournalStatus> {
    replay::enable(dir.as_ref(), opts, jopts)
}

/// Turn journal mode off for the tree at `dir` (the directory holding `.statefile/`):
/// stop new commits, checkpoint everything (every document the journal covers is
/// durable in its own file afterwards), mark the journal closed, and remove it.
/// Writers waiting meanwhile go on without it.
///
/// # Errors
/// [`ErrorKind::NotFound`] if `dir` has no journal; lock timeouts and I/O kinds (the
/// journal stays, intact, if the checkpoint fails).
pub fn disable(dir: impl AsRef<Path>, opts: &Options) -> Result<CheckpointReport> {
    replay::disable(dir.as_ref(), opts)
}

/// Make every document the journal at `dir` covers durable in its own file and reuse
/// the journal's space. Writers go on meanwhile.
///
/// # Errors
/// [`ErrorKind::NotFound`] if `dir` has no journal; lock timeouts and I/O kinds.
pub fn checkpoint(dir: impl AsRef<Path>, opts: &Options) -> Result<CheckpointReport> {
    let root = canonical(opts, dir.as_ref())?;
    let j = open_at(&root, opts)?.ok_or_else(|| no_journal(&root))?;
    j.checkpoint(opts)
}

/// The state of the journal that governs `path` (the nearest `.statefile/journal` at or
/// above it), without changing anything: where the checkpoint is, how many records
/// follow it, which documents a replay would rewrite, and any damage. `None` if the tree
/// is not in journal mode. A document the caller may not look at (a directory of its
/// path that this user may not open, say) is no error: it is listed in
/// [`JournalStatus::unchecked`], and the rest of the status is complete.
///
/// # Errors
/// I/O kinds if the journal cannot be read ([`ErrorKind::PermissionDenied`] naming it
/// if the caller may not open it, or `.statefile/`); [`ErrorKind::Io`] naming the
/// format version if this build does not know it.
pub fn status(path: impl AsRef<Path>, opts: &Options) -> Result<Option<JournalStatus>> {
    let path = path.as_ref();
    let dir = canonical(opts, path)?;
    let dir = match opts.fs.metadata(&dir) {
        Ok(m) if !m.is_dir() => dir.parent().map(Path::to_path_buf).unwrap_or(dir),
        _ => dir,
    };
    match locate(opts.fs.as_ref(), &dir)? {
        Some((root, _)) => replay::status(&opts.fs, &root).map(Some),
        None => Ok(None),
    }
}

fn canonical(opts: &Options, dir: &Path) -> Result<PathBuf> {
    opts.fs.canonicalize(dir).ctx("resolve", dir)
}

fn no_journal(root: &Path) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!(
            "{} has no journal (enable one with `statefile journal enable`)",
            root.display()
        ),
    )
    .with_path(root)
}

/// The nearest ancestor of the canonical directory `dir` (itself included) holding
/// `.statefile/journal`, and the journal's identity as `stat` sees it now. One `stat`
/// per level, every time: never cached, so a journal enabled a moment ago is found.
pub(crate) fn locate(fs: &dyn Fs, dir: &Path) -> Result<Option<(PathBuf, (u64, u64))>> {
    for ancestor in dir.ancestors() {
        let p = ancestor.join(META_DIR).join(LOG);
        match fs.metadata(&p) {
            Ok(m) if m.is_file() => return Ok(Some((ancestor.to_path_buf(), (m.dev, m.ino)))),
            Ok(m) => {
                return Err(Error::new(
                    ErrorKind::InvalidName,
                    format!(
                        "{} is {}, not a journal: refusing to write in its tree",
                        p.display(),
                        m.file_type.describe()
                    ),
                )
                .with_path(&p));
            }
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || errno(&e) == Some(rustix::io::Errno::NOTDIR) => {}
            Err(e) => {
                return Err(Error::io("look for a journal at", &p, e).with_path(&p));
            }
        }
    }
    Ok(None)
}

/// Open journals, per file system instance and journal file, shared by every write of
/// this process. An entry whose file system was dropped (a simulation) is forgotten.
type Registry = Mutex<Vec<(Weak<dyn Fs>, usize, (u64, u64), Arc<Journal>)>>;

/// This process's: a forked child opens its own journals (see [`crate::process`]; the
/// parent's handles' locks are the parent's, shared through the copied descriptors).
fn registry() -> &'static Registry {
    static REG: crate::process::PerProcess<Registry> = crate::process::PerProcess::new();
    REG.get()
}

fn fs_id(fs: &Arc<dyn Fs>) -> usize {
    Arc::as_ptr(fs) as *const () as usize
}

/// The journal at `root` (canonical), opened once per process; `None` if there is none
/// or it was closed by `disable`.
pub(crate) fn open_at(root: &Path, opts: &Options) -> Result<Option<Arc<Journal>>> {
    let fs = &opts.fs;
    let p = root.join(META_DIR).join(LOG);
    let id = match fs.metadata(&p) {
        Ok(m) if m.is_file() => (m.dev, m.ino),
        Ok(_) => return locate(fs.as_ref(), root).map(|_| None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open journal", &p, e)),
    };
    get_or_open(root, id, opts)
}

/// The journal with identity `id` if this process has it open already.
fn lookup(id: (u64, u64), opts: &Options) -> Option<Arc<Journal>> {
    let key = fs_id(&opts.fs);
    let mut reg = registry().lock().unwrap_or_else(PoisonError::into_inner);
    reg.retain(|(w, _, _, j)| w.strong_count() > 0 && !j.is_gone());
    reg.iter()
        .find(|(_, k, i, _)| *k == key && *i == id)
        .map(|(_, _, _, j)| j.clone())
}

fn get_or_open(root: &Path, id: (u64, u64), opts: &Options) -> Result<Option<Arc<Journal>>> {
    let fs = &opts.fs;
    let key = fs_id(fs);
    if let Some(j) = lookup(id, opts) {
        return Ok(Some(j));
    }
    // Opening may recover the journal (replaying records), which takes document locks:
    // never while holding the registry.
    let Some(j) = Journal::open(root, opts)? else {
        return Ok(None);
    };
    let mut reg = registry().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, _, _, other)) = reg.iter().find(|(_, k, i, _)| *k == key && *i == id) {
        // Another thread opened it meanwhile: use one handle.
        return Ok(Some(other.clone()));
    }
    reg.push((Arc::downgrade(fs), key, id, j.clone()));
    Ok(Some(j))
}

/// A write's journal: found under the document's lock, with the document's name in it.
#[derive(Debug, Clone)]
pub(crate) struct Bound {
    pub journal: Arc<Journal>,
    /// The document's path relative to the journal's root.
    pub name: Vec<u8>,
    /// The writer's options (file system, lock timeout), for the journal's own work.
    pub opts: Options,
}

/// What a write finds under its document's lock.
#[derive(Debug)]
pub(crate) enum Binding {
    /// No journal governs the document.
    None,
    /// This one does.
    Bound(Bound),
    /// One does, and this process has yet to open it: opening may replay it, which
    /// takes document locks, so the caller releases its lock, calls
    /// [`Binding::open`], and starts again.
    Unopened(PathBuf, (u64, u64)),
}

impl Binding {
    /// Open the journal that [`Binding::Unopened`] named (no lock held). False if it
    /// turned out closed (disabled, its files not yet removed): the tree is not in
    /// journal mode.
    pub(crate) fn open(root: &Path, id: (u64, u64), opts: &Options) -> Result<bool> {
        get_or_open(root, id, opts).map(|j| j.is_some())
    }
}

/// Find the journal governing the locked `target` (walking up from its directory, as
/// the file system is now) and bind the write to it.
pub(crate) fn bind(target: &Target, opts: &Options, closed: Option<(u64, u64)>) -> Result<Binding> {
    let Some((root, id)) = locate(opts.fs.as_ref(), &target.dir)? else {
        return Ok(Binding::None);
    };
    if closed == Some(id) {
        return Ok(Binding::None);
    }
    let Some(journal) = lookup(id, opts) else {
        return Ok(Binding::Unopened(root, id));
    };
    let name = relative_name(journal.root(), target)?;
    Ok(Binding::Bound(Bound {
        journal,
        name,
        opts: opts.clone(),
    }))
}

/// `target`'s path relative to `root`, as the journal records it.
pub(crate) fn relative_name(root: &Path, target: &Target) -> Result<Vec<u8>> {
    let rel = target.path.strip_prefix(root).map_err(|_| {
        Error::new(
            ErrorKind::InvalidName,
            format!(
                "{} is not inside the journal's tree {}",
                target.path.display(),
                root.display()
            ),
        )
        .with_path(&target.path)
    })?;
    Ok(rel.as_os_str().as_bytes().to_vec())
}

/// A name read from a journal, checked before it is used as a path: relative, no empty,
/// `.` or `..` segment, no NUL. A record that breaks this is damage, never followed.
pub(crate) fn check_recorded_name(name: &[u8]) -> Option<&Path> {
    let ok = !name.is_empty()
        && !name.contains(&0)
        && name
            .split(|b| *b == b'/')
            .all(|seg| !seg.is_empty() && seg != b"." && seg != b"..");
    ok.then(|| Path::new(OsStr::from_bytes(name)))
}

/// Kept by a write after its journal commit: when dropped (after the document's lock,
/// which is dropped first), it runs a checkpoint if the journal's size or age bound says
/// one is due. A failure there is logged: the write it follows is already durable in the
/// journal.
#[derive(Debug, Default)]
pub(crate) struct AfterUnlock {
    due: Mutex<Option<(PathBuf, Options)>>,
}

impl AfterUnlock {
    pub(crate) fn set(&self, journal: &Journal, opts: &Options) {
        *self.due.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((journal.root().to_path_buf(), opts.clone()));
    }
}

impl Drop for AfterUnlock {
    fn drop(&mut self) {
        let due = self
            .due
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((root, opts)) = due
            && let Err(e) = open_at(&root, &opts).and_then(|j| match j {
                // One already running (another writer's, or a stopped process's) is
                // not waited for: this write is durable, and the next finds it due.
                Some(j) => j.checkpoint_unless_running(&opts).map(|_| ()),
                None => Ok(()),
            })
        {
            tracing::warn!(journal = %root.display(), error = %e,
                "checkpoint after a write failed (the write itself is durable in the journal)");
        }
    }
}

/// A lock-free read of a journal's file kind, for hostile trees: only regular files.
pub(crate) fn check_regular(path: &Path, meta: &crate::fs::Metadata) -> Result<()> {
    if meta.file_type != FileType::File {
        return Err(crate::file::not_regular(path, meta.file_type));
    }
    Ok(())
}

/// Open `.statefile/` under `root`, refusing a symlink there.
pub(crate) fn open_meta_dir(fs: &dyn Fs, root: &Path) -> Result<Box<dyn FsDir>> {
    let p = root.join(META_DIR);
    fs.open_dir(&p).map_err(|e| {
        if errno(&e) == Some(rustix::io::Errno::LOOP) {
            Error::new(
                ErrorKind::InvalidName,
                format!(
                    "{} is a symlink: refusing to use a journal there",
                    p.display()
                ),
            )
            .with_path(&p)
            .with_source(e)
        } else {
            Error::io("open", &p, e)
        }
    })
}

/// The journal file of the tree at `root`.
pub(crate) fn shown(root: &Path) -> PathBuf {
    root.join(META_DIR).join(LOG)
}

/// The journal file of the tree at `root`, for reports.
pub(crate) fn log_path(root: &Path) -> PathBuf {
    shown(root)
}

/// What [`recover`] did.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// The documents rewritten, with the version each got (`None`: deleted).
    pub replayed: Vec<(PathBuf, Option<crate::version::Version>)>,
    /// The records left unapplied (by this process's replays and adoptions since the
    /// last recovery scan, and, with `repair`, those the checkpoint then freed).
    pub skipped: Vec<SkippedRecord>,
    /// With `repair`: a sync had failed (see [`JournalStatus::sync_failed`]), and every
    /// file the journal holds was rewritten from its record.
    pub rewrote_after_failed_sync: bool,
}

/// Recover the journal at `root` (canonical): open it (which replays it if no other
/// process uses it), apply the commits of writers that died; with `repair`, also
/// rewrite every file the journal holds if a sync of one failed and it could not be
/// rewritten then ([`JournalStatus::sync_failed`]), rewrite any document that still
/// differs from its last record, then checkpoint (unless the journal is damaged, or some
/// document could not be looked at: its record is kept for a recovery by a user who
/// may).
pub(crate) fn recover(root: &Path, opts: &Options, repair: bool) -> Result<Recovered> {
    let Some(j) = open_at(root, opts)? else {
        return Ok(Recovered::default());
    };
    j.roll_back_poison(opts.lock_timeout)?;
    j.adopt_dead(opts, false)?;
    let mut skipped = Vec::new();
    let mut rewrote_after_failed_sync = false;
    if repair {
        // One that fails leaves the journal marked, which the status below reports: the
        // other repairs go on, and the checkpoint, which the mark refuses, is not tried.
        rewrote_after_failed_sync = j.rewrite_after_failed_sync(opts).unwrap_or_else(|e| {
            tracing::error!(journal = %j.path().display(), error = %e,
                "could not write every file the journal holds again after a failed sync");
            false
        });
        let status = replay::status(&opts.fs, root)?;
        for p in status.to_replay.iter().filter(|p| !p.in_flight) {
            // One that can no longer be written where its record names it is skipped,
            // as a replay skips it: it must not stop the repair of the others, nor the
            // checkpoint after them (which makes it durable wherever it went).
            match j.repair_document(opts, &p.path) {
                Err(e) if replay::cannot_be_reached(&e) => skipped.push(SkippedRecord {
                    path: p.path.clone(),
                    version: p.version.clone(),
                    reason: e.to_string(),
                }),
                r => r?,
            }
        }
        if status.damage.is_none() && status.unchecked.is_empty() && !status.sync_failed {
            j.checkpoint(opts)?;
            // Freed by the checkpoint: reported now or never.
            skipped.extend(status.skipped);
        }
    }
    for s in &skipped {
        tracing::warn!(file = %s.path.display(), reason = %s.reason,
            "a journal record was not applied to the document it names; skipped");
    }
    let mut all = j.take_skipped();
    all.extend(skipped);
    Ok(Recovered {
        replayed: j.take_replayed(),
        skipped: all,
        rewrote_after_failed_sync,
    })
}
