//! The replace protocol: how new bytes take the place of a file so that a crash at any
//! instant leaves either the complete old version or the complete new one. Every write
//! of the library (documents, `write_atomic`, restores) goes through here.
//!
//! ```text
//!  0. resolve, mkdir, open, lock   [`Locked::open`]: the document's directory is
//!                                  resolved once (symlinks followed), created if asked
//!                                  (each new directory synced into its parent), and
//!                                  opened as a handle; every step below goes through
//!                                  that handle (*at calls), so the path is never
//!                                  resolved again. The lock is taken through it too.
//!     look at what is there        [`Current::probe`], under the lock
//!  1. create .name.sf-<rand>.tmp   O_EXCL, 0600: unique per writer, private until step 2;
//!                                  then [`Options::on_temp_created`]'s hook, if any
//!  2. fchown + fchmod the temp     the target's owner and mode, or 0644 less the umask
//!  3. stream the bytes into it     through a buffer, hashing and counting them
//!  4. fsync the temp               the data is on disk before any name points at it
//!  5. (verify) re-read the temp    catches media that lie, before anything is replaced
//!  6. link the old version aside   a hard link is a free exact backup; copy if refused;
//!                                  only of the regular file looked at (else Conflict)
//!  7. rename temp -> name          atomic: readers see old or new, never a mix
//!  8. rotate the backup link       .bak -> .bak.2 ..., the link -> .bak
//!  9. fsync the directory          makes the rename itself (and 8) survive power loss
//! ```
//!
//! [`replace`] is steps 1 to 9, one call per step. Any failure before step 7 removes the
//! temp (and the backup link) and leaves the target untouched. A failed fsync is final:
//! it is reported, never retried, because after a failed fsync the kernel may have
//! dropped the dirty pages (PostgreSQL's lesson). A failure at step 9 means the new
//! version is visible but its durability is unknown: that is [`ErrorKind::Durability`],
//! carrying the new version.
//!
//! The caller holds the document's lock for the whole call (inside [`Locked`]): that is
//! how recovery tells a live writer's temp file from a dead one's.
//!
//! Extending the write path (group commit, a journal): take a [`Locked`] once, decide
//! the content under the lock (e.g. apply every queued mutation to one read), and call
//! [`replace`] once with a [`Body`] that writes it; each step here stays one place.

use std::ffi::{OsStr, OsString};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{
    Context, Error, ErrorKind, Result, caused_by_out_of_descriptors, errno, out_of_descriptors,
};
use crate::file::{self, Seen};
use crate::fs::{FileType, Fs, FsDir, FsFile, Metadata};
use crate::journal::{self, AfterUnlock, AppendError, Binding, Bound, Entry, Op};
use crate::json::SerializeError;
use crate::lock::{self, LockGuard};
use crate::mutants::{self, Mutant};
use crate::names::{self, Target, random_suffix};
use crate::options::{BackupMade, BackupMethod, Durability, Options, Perms, Receipt, TempHook};
use crate::version::{HashingWriter, Version, hash_reader};

/// Directory handles by resolved path, for one caller that holds several documents'
/// locks at once (a transaction): its documents in one directory share one handle, so
/// that a transaction of a thousand documents in one directory holds a thousand and one
/// descriptors, not two thousand. Each handle was opened by resolving its path, as
/// [`Prepared::open`] does, and is kept with the identity (device, inode) of the
/// directory it opened; the caller drops the map with the locks.
pub(crate) type Dirs = std::collections::HashMap<PathBuf, (Arc<dyn FsDir>, (u64, u64))>;

/// The handle of `target`'s directory: from `dirs` if it holds one for the directory
/// now at that path, else opened (and kept in `dirs`, if given). A path whose directory
/// was replaced since its handle was kept (renamed away, out of the store even, and
/// another made in its place) gets a new handle: a handle is shared only by documents
/// whose path leads to its directory when they are locked, as each one's own would be.
fn dir_handle(fs: &dyn Fs, target: &Target, dirs: Option<&mut Dirs>) -> Result<Arc<dyn FsDir>> {
    let Some(dirs) = dirs else {
        return Ok(Arc::from(file::open_dir(fs, &target.dir)?));
    };
    if let Some((dir, id)) = dirs.get(&target.dir)
        && fs
            .symlink_metadata(&target.dir)
            .is_ok_and(|m| m.is_dir() && (m.dev, m.ino) == *id)
    {
        return Ok(dir.clone());
    }
    let dir: Arc<dyn FsDir> = Arc::from(file::open_dir(fs, &target.dir)?);
    let m = dir.metadata().ctx("open directory", &target.dir)?;
    dirs.insert(target.dir.clone(), (dir.clone(), (m.dev, m.ino)));
    Ok(dir)
}

/// A document's directory, opened once, and its lock file's in-process state: step 0
/// up to the lock. Group commit prepares every call this way, outside the lock; the
/// call that leads a batch then takes the lock ([`Prepared::lock`]).
#[derive(Debug)]
pub(crate) struct Prepared {
    pub target: Target,
    pub dir: Arc<dyn FsDir>,
    pub entry: lock::Entry,
    fs: Arc<dyn Fs>,
}

impl Prepared {
    /// Resolve `path` (following a symlink at its end; refusing to leave `confine`, a
    /// store's root), create missing directories if `opts` asks, open the directory
    /// and find the lock file's state (creating the lock file if missing).
    pub(crate) fn open(path: &Path, confine: Option<&Path>, opts: &Options) -> Result<Prepared> {
        Prepared::open_in(path, confine, opts, None)
    }

    /// [`Prepared::open`], taking the directory's handle from `dirs` when it holds one
    /// for the resolved directory (and keeping a new one there).
    fn open_in(
        path: &Path,
        confine: Option<&Path>,
        opts: &Options,
        dirs: Option<&mut Dirs>,
    ) -> Result<Prepared> {
        let target = names::resolve_for_write(opts.fs.as_ref(), path, confine)?;
        Prepared::open_target(target, opts, dirs)
    }

    /// [`Prepared::open_in`] for a path resolved already (by
    /// [`names::resolve_for_write`]).
    fn open_target(
        target: Target,
        opts: &Options,
        mut dirs: Option<&mut Dirs>,
    ) -> Result<Prepared> {
        let fs = &opts.fs;
        // The directory opened first: where it exists (nearly always) that is all it
        // takes. Where it cannot be opened, `ensure_dir` says why (or makes it), as it
        // would have said before the open, and the open is tried again.
        let dir = match dir_handle(fs.as_ref(), &target, dirs.as_deref_mut()) {
            Ok(dir) => dir,
            Err(_) => {
                ensure_dir(fs.as_ref(), &target, opts.create_dirs, opts.durability)?;
                dir_handle(fs.as_ref(), &target, dirs)?
            }
        };
        let entry = lock::Entry::open(fs, dir.as_ref(), &target.lock_name(), &target.lock_path())?;
        Ok(Prepared {
            target,
            dir,
            entry,
            fs: fs.clone(),
        })
    }

    /// Take the document's lock, waiting as `wait` says.
    pub(crate) fn lock(self, wait: lock::Wait) -> Result<Locked> {
        let Prepared {
            target,
            dir,
            entry,
            fs,
        } = self;
        let lock = lock::acquire_in(
            entry,
            &fs,
            dir.as_ref(),
            &target.lock_name(),
            &target.lock_path(),
            wait,
        )?;
        Ok(Locked {
            target,
            dir,
            lock,
            fs: fs.clone(),
            journal: None,
            after: AfterUnlock::default(),
        })
    }
}

/// A document's directory, opened once, with the document's lock held: what every
/// step of a write goes through. Dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct Locked {
    pub target: Target,
    pub dir: Arc<dyn FsDir>,
    pub lock: LockGuard,
    /// For the umask, read only for a new document and then at that moment (a process
    /// may change it: a daemon after it forked, gunicorn's `--umask` in its workers).
    fs: Arc<dyn Fs>,
    /// The journal the tree is in, found under the lock; `None` outside journal mode
    /// (and for a replay's own writes, which must not be journaled again).
    pub journal: Option<Bound>,
    /// Declared after the lock, so dropped after it: runs a checkpoint a commit made
    /// due once the lock is released.
    after: AfterUnlock,
}

impl Locked {
    /// The process's umask now (see [`Fs::umask`]).
    fn umask(&self) -> u32 {
        self.fs.umask()
    }

    /// Step 0: [`Prepared::open`], then take the lock, then bind the write to the
    /// tree's journal ([`Locked::bind`]), starting again if that had to release the lock.
    pub(crate) fn open(path: &Path, confine: Option<&Path>, opts: &Options) -> Result<Locked> {
        Locked::open_in(path, confine, opts, None, None)
    }

    /// [`Locked::open`], sharing directory handles through `dirs` (see [`Dirs`]).
    /// `resolved`: `path` as the caller resolved it just now (with
    /// [`names::resolve_for_write`]), used for the first attempt; an attempt that must
    /// start again resolves `path` anew.
    pub(crate) fn open_in(
        path: &Path,
        confine: Option<&Path>,
        opts: &Options,
        mut dirs: Option<&mut Dirs>,
        mut resolved: Option<Target>,
    ) -> Result<Locked> {
        let wait = lock::Wait::new(opts.lock_timeout);
        let mut closed = None;
        loop {
            let prepared = match resolved.take() {
                Some(target) => Prepared::open_target(target, opts, dirs.as_deref_mut())?,
                None => Prepared::open_in(path, confine, opts, dirs.as_deref_mut())?,
            };
            let w = prepared.lock(wait)?;
            if let Some(w) = w.bind(opts, &mut closed)? {
                return Ok(w);
            }
        }
    }

    /// Under the lock, look for the tree's journal (walking up from the document's
    /// directory, as the file system is now) and bind the write to it. If this process
    /// has yet to open that journal (opening may replay it, which takes document
    /// locks), or a writer that died left a commit naming this document in flight
    /// (applying it takes the locks of its documents, this one included), the lock is
    /// released, that is done, and the caller takes the lock again (`None`).
    /// `closed`: a journal found closed by `disable` (its files not yet removed), which
    /// the next attempt ignores.
    pub(crate) fn bind(
        mut self,
        opts: &Options,
        closed: &mut Option<(u64, u64)>,
    ) -> Result<Option<Locked>> {
        let bound = match journal::bind(&self.target, opts, *closed)? {
            Binding::None => return Ok(Some(self)),
            Binding::Bound(b) => b,
            Binding::Unopened(root, id) => {
                drop(self);
                if !Binding::open(&root, id, opts)? {
                    *closed = Some(id);
                }
                return Ok(None);
            }
        };
        match bound.journal.pending(&[&bound.name])? {
            None => {
                self.journal = Some(bound);
                Ok(Some(self))
            }
            Some(dead) => {
                drop(self);
                bound.journal.adopt(opts, dead, false)?;
                Ok(None)
            }
        }
    }

    /// Step 0 without the journal: for the journal's own replays (sharing directory
    /// handles through `dirs`, if given, when it locks several documents).
    pub(crate) fn open_plain(
        path: &Path,
        confine: Option<&Path>,
        opts: &Options,
        dirs: Option<&mut Dirs>,
    ) -> Result<Locked> {
        Prepared::open_in(path, confine, opts, dirs)?.lock(lock::Wait::new(opts.lock_timeout))
    }

    /// [`Locked::open_plain`], only if the lock is free now (`None` if it is held).
    pub(crate) fn try_open_plain(
        path: &Path,
        confine: Option<&Path>,
        opts: &Options,
        dirs: Option<&mut Dirs>,
    ) -> Result<Option<Locked>> {
        let fs = &opts.fs;
        let target = names::resolve_for_write(fs.as_ref(), path, confine)?;
        let dir = dir_handle(fs.as_ref(), &target, dirs)?;
        let Some(lock) =
            lock::try_acquire(fs, dir.as_ref(), &target.lock_name(), &target.lock_path())?
        else {
            return Ok(None);
        };
        Ok(Some(Locked {
            target,
            dir,
            lock,
            fs: fs.clone(),
            journal: None,
            after: AfterUnlock::default(),
        }))
    }
}

/// What is at the target when a write starts, seen under the lock.
#[derive(Debug, Clone)]
pub(crate) enum Current {
    /// Nothing: the write creates the document.
    Missing,
    /// A regular file; `seen` when its bytes were looked at (needed to back it up, to
    /// compare versions, or to know whether it parses).
    File { meta: Metadata, seen: Option<Seen> },
    /// A regular file over the document-size limit (`max`,
    /// [`Options::max_document_bytes`]), found where its bytes were to be looked at:
    /// not read and not hashed, so a huge file planted at a document's name costs a
    /// write no more than a document within the limit. It has no version here: a write
    /// conditional on one is refused ([`Error::too_large`]); an unconditional write or
    /// delete keeps it once as `.name.corrupt`, as a file that does not parse, never
    /// among the backups.
    TooLarge { meta: Metadata, max: u64 },
}

impl Current {
    /// Look at what is at the target now: its type and metadata without following a
    /// link, and, if `look`, its version and whether it parses. Anything but a regular
    /// file is refused.
    ///
    /// A file over `max` bytes is [`Current::TooLarge`] when looked at, having been
    /// read no further than `max` + 1 bytes.
    pub(crate) fn probe(w: &Locked, look: bool, max: u64) -> Result<Current> {
        Current::probe_keeping(w, look, max, false).map(|(current, _)| current)
    }

    /// [`Current::probe`], also handing back the bytes looked at if `keep` (see
    /// [`file::inspect_keeping`]): for a transaction, whose read of the document would
    /// otherwise open and read it a second time.
    pub(crate) fn probe_keeping(
        w: &Locked,
        look: bool,
        max: u64,
        keep: bool,
    ) -> Result<(Current, Option<Vec<u8>>)> {
        let t = &w.target;
        let meta = match w.dir.stat(&t.name) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Current::Missing, None)),
            Err(e) => return Err(Error::io("inspect", &t.path, e)),
        };
        if meta.file_type != FileType::File {
            return Err(file::not_regular(&t.path, meta.file_type));
        }
        if !look {
            return Ok((Current::File { meta, seen: None }, None));
        }
        if meta.len > max {
            return Ok((Current::TooLarge { meta, max }, None));
        }
        Ok(
            match file::inspect_keeping(w.dir.as_ref(), &t.name, &t.path, max, keep)? {
                Some((seen, bytes)) => (
                    Current::File {
                        meta,
                        seen: Some(seen),
                    },
                    bytes,
                ),
                None => (Current::TooLarge { meta, max }, None),
            },
        )
    }

    /// Where the caller must know the current version (a precondition to compare, a
    /// backup to restore over it): [`Error::too_large`] for a file over the limit,
    /// whose version is not computed, saying `op` cannot be done.
    pub(crate) fn refuse_too_large(&self, op: &str, path: &Path) -> Result<()> {
        match self {
            Current::TooLarge { meta, max } => {
                Err(Error::over_limit(op, path, Some(meta.len), *max))
            }
            _ => Ok(()),
        }
    }

    /// The version, if the file exists and was looked at.
    pub(crate) fn version(&self) -> Option<&Version> {
        match self {
            Current::File { seen: Some(s), .. } => Some(&s.version),
            _ => None,
        }
    }

    fn meta(&self) -> Option<&Metadata> {
        match self {
            Current::File { meta, .. } | Current::TooLarge { meta, .. } => Some(meta),
            Current::Missing => None,
        }
    }
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

/// How one replace is made: everything but the target and its content.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan<'a> {
    pub durability: Durability,
    /// How many backups to keep; 0 for none. Only JSON that parses is backed up.
    pub backups: usize,
    pub verify: Verify,
    /// The owner and mode the new file gets.
    pub perms: Perms,
    /// Set when a directory sync fails, so the owning store refuses further writes.
    pub poison: Option<&'a AtomicBool>,
    /// Told the temp file's path after step 1.
    pub temp_created: Option<&'a TempHook>,
    /// The most bytes the content may come to ([`Options::max_document_bytes`]); more
    /// fails the write with [`ErrorKind::Serialize`] before anything is renamed.
    pub max_bytes: u64,
}

impl<'a> Plan<'a> {
    /// A JSON document's write, as `opts` says.
    pub(crate) fn json(opts: &'a Options, poison: Option<&'a AtomicBool>) -> Plan<'a> {
        Plan {
            durability: opts.durability,
            backups: opts.backups,
            verify: if opts.verify {
                Verify::Json
            } else {
                Verify::No
            },
            perms: opts.perms,
            poison,
            temp_created: opts.temp_created.as_ref(),
            max_bytes: opts.max_document_bytes,
        }
    }

    /// A write of bytes that need not be JSON (`write_atomic`): no backups.
    pub(crate) fn bytes(opts: &'a Options) -> Plan<'a> {
        Plan {
            durability: opts.durability,
            backups: 0,
            verify: if opts.verify {
                Verify::Bytes
            } else {
                Verify::No
            },
            perms: opts.perms,
            poison: None,
            temp_created: opts.temp_created.as_ref(),
            max_bytes: u64::MAX,
        }
    }

    /// Whether the current file's bytes must be looked at before replacing it.
    pub(crate) fn looks_at_current(&self) -> bool {
        self.backups > 0
    }
}

/// Where a replace's content goes: a buffer, then the hasher, then the temp file (or,
/// in journal mode, memory: the record needs the bytes before the temp file does). A
/// concrete type, so the serializer's many small writes compile to inlined buffer
/// copies (through `dyn Write` a pretty 1 MB document took twice as long).
pub(crate) type TempWriter<'a> = BufWriter<HashingWriter<Sink<'a>>>;

/// The end of a [`TempWriter`]: the temp file, or memory. It sees the buffer's 64 KiB
/// chunks, so the dispatch costs nothing.
#[derive(Debug)]
pub(crate) enum Sink<'a> {
    File(&'a mut Box<dyn FsFile>),
    /// Memory up to a bound, then a temp file ([`Spill`]).
    Spill(&'a mut dyn SpillWrite),
}

/// What [`Sink::Spill`] writes to.
pub(crate) trait SpillWrite: io::Write + std::fmt::Debug {}

impl<W: io::Write + std::fmt::Debug> SpillWrite for W {}

impl io::Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Spill(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Spill(s) => s.flush(),
        }
    }
}

/// Where a write in journal mode puts the bytes it makes: memory (they go into the
/// journal record and the temp file), until they pass the largest record the journal
/// takes. Past that the document is written as outside journal mode ([`finish_direct`]):
/// the temp file is made then (steps 1-2), what memory held goes into it, and the rest
/// streams there. So a document too large for the journal, or a value whose
/// serialization never ends (a Python object whose iterator never stops), costs at
/// most that much memory, as outside journal mode it costs none; the first fills the
/// disk at worst, which is refused as any full disk is.
struct Spill<'w, 'p> {
    w: &'w Locked,
    plan: &'p Plan<'p>,
    current: &'w Current,
    cap: usize,
    mem: Vec<u8>,
    temp: Option<Temp<'w>>,
    /// Why the temp file could not be made, to report as it is (the serializer sees an
    /// I/O error).
    failed: Option<Error>,
}

impl<'w, 'p> Spill<'w, 'p> {
    fn new(w: &'w Locked, plan: &'p Plan<'p>, current: &'w Current, cap: u64) -> Self {
        Spill {
            w,
            plan,
            current,
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            mem: Vec::new(),
            temp: None,
            failed: None,
        }
    }

    fn spill(&mut self) -> Result<()> {
        let mut temp = start_temp(self.w, self.plan, self.current)?; //          1-2.
        let target = &self.w.target.path;
        io::Write::write_all(temp.file(), &self.mem).ctx("write temp file for", target)?;
        self.mem = Vec::new();
        self.temp = Some(temp);
        Ok(())
    }
}

impl std::fmt::Debug for Spill<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill")
            .field("target", &self.w.target.path)
            .field("in_memory", &self.mem.len())
            .field("spilled", &self.temp.is_some())
            .finish_non_exhaustive()
    }
}

impl io::Write for Spill<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            // Made once: a second try would call the hook again for the same write.
            return Err(io::Error::other(e.message().to_string()));
        }
        if self.temp.is_none() {
            if buf.len() <= self.cap.saturating_sub(self.mem.len()) {
                self.mem.extend_from_slice(buf);
                return Ok(buf.len());
            }
            if let Err(e) = self.spill() {
                let io = io::Error::other(e.message().to_string());
                self.failed = Some(e);
                return Err(io);
            }
        }
        let temp = self.temp.as_mut().expect("spilled above");
        temp.file().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What produces a replace's content.
pub(crate) type Body<'b> =
    dyn FnMut(&mut TempWriter<'_>) -> std::result::Result<(), SerializeError> + 'b;

/// One unconditional write of `path`, for the one-call helpers and [`Doc::write`]
/// alike: step 0, a look at what is there, then the protocol.
///
/// [`Doc::write`]: crate::Doc::write
pub(crate) fn write(
    path: &Path,
    confine: Option<&Path>,
    opts: &Options,
    plan: &Plan<'_>,
    body: &mut Body<'_>,
) -> Result<Receipt> {
    let w = Locked::open(path, confine, opts)?;
    let current = Current::probe(&w, plan.looks_at_current(), plan.max_bytes)?;
    replace(&w, plan, &current, body)
}

/// Steps 1 to 9: replace the locked target, whose state is `current`, with what `body`
/// writes.
pub(crate) fn replace(
    w: &Locked,
    plan: &Plan<'_>,
    current: &Current,
    body: &mut Body<'_>,
) -> Result<Receipt> {
    if let Some(b) = &w.journal {
        return replace_journaled(w, b, plan, current, body);
    }
    replace_plain(w, plan, current, body)
}

/// [`replace`] with the plain protocol, whether or not the tree is in journal mode: for
/// the journal's own rewrites of a document from its record (a replay), which must not
/// be journaled again.
pub(crate) fn replace_plain(
    w: &Locked,
    plan: &Plan<'_>,
    current: &Current,
    body: &mut Body<'_>,
) -> Result<Receipt> {
    refuse_if_poisoned(plan.poison, "write", &w.target.path)?;
    check_write_access(w, current)?;
    let mut temp = Temp::create(w)?; //                               1.
    temp.announce(plan.temp_created)?;
    temp.take_permissions(current.meta(), plan.perms, &|| w.umask())?; //   2.
    let (version, bytes) = temp.fill(body, plan.max_bytes)?; //       3.
    temp.sync(plan.durability)?; //                                   4.
    temp.verify(plan.verify, &version)?; //                           5.
    let unchanged = current.version() == Some(&version);
    let aside = Aside::link(w, plan, current, unchanged)?; //         6.
    if mutants::active(Mutant::InPlace) {
        return mutants::write_in_place(w, plan.durability, &temp.disarm(), version, bytes);
    }
    temp.rename_over_target(last_link(current, &aside))?; //          7.
    let backup = aside.and_then(|a| a.rotate(plan.backups)); //       8.
    let durability = sync_dir(w, plan, &version)?; //                 9.
    Ok(Receipt {
        path: w.target.path.clone(),
        version,
        previous: current.version().cloned(),
        bytes,
        durability,
        backup,
        created: current.meta().is_none(),
        unchanged,
        lock_wait: w.lock.waited(),
        batch: 1,
        queued: Duration::ZERO,
    })
}

/// The replace protocol in journal mode (see [`crate::journal`]): the new bytes go into
/// one journal record and into the temp file; one flush of the journal makes them
/// durable; the rename follows without a sync. The record is appended first, and its
/// write to the device started, so that the device writes it while the temp file is
/// made; the flush then mostly waits for what is already under way:
///
/// ```text
///       open the document         kept until J2, for a withdraw (see [`Kept`])
///  J1.  append the record         name, bytes, version, the version replaced, and the
///                                 mode and owner the document is meant to have
///       start writing it out      a hint to the kernel; nothing durable yet
///  1-3. temp filled from memory   not synced
///  5.   (verify)                  as above
///  6.   link the old version      as above
///  J2.  flush the journal         unless another flush covered the record already
///  7.   rename temp -> name       visible now; durable through the journal
///  8.   rotate the backup link
///  J3.  free the commit's slot    (and a checkpoint once the lock is released, if due)
/// ```
///
/// A failure in steps 1-6 leaves a record that no one must apply (the caller is told
/// the write failed): [`withdraw`] appends one that cancels it before the error is
/// returned. A document too large for the journal (over a quarter of its ring) is
/// written as outside journal mode, then a small record says so, so that a replay does
/// not roll it back to an older record.
fn replace_journaled(
    w: &Locked,
    b: &Bound,
    plan: &Plan<'_>,
    current: &Current,
    body: &mut Body<'_>,
) -> Result<Receipt> {
    let t = &w.target;
    refuse_if_poisoned(plan.poison, "write", &t.path)?;
    check_write_access(w, current)?;
    let started = std::time::Instant::now();
    let j = &b.journal;
    let mut spill = Spill::new(w, plan, current, j.max_record());
    let made = run_body(Sink::Spill(&mut spill), body, &t.path, plan.max_bytes);
    // A serializer's own error is reported as it is; an I/O error from a temp file that
    // could not be made, as that failure (its kind: a full disk, a refusing hook).
    let (version, len) = made.map_err(|e| match spill.failed.take() {
        Some(failed) if e.kind() != ErrorKind::Serialize => failed,
        _ => e,
    })?;
    if let Some(temp) = spill.temp.take() {
        // Too large for the journal: written as outside journal mode.
        temp.verify(plan.verify, &version)?; //                              5.
        let unchanged = current.version() == Some(&version);
        let aside = Aside::link(w, plan, current, unchanged)?; //            6.
        return finish_direct(w, b, plan, current, (temp, aside), (&version, len), true);
    }
    let bytes = std::mem::take(&mut spill.mem);
    drop(spill);
    let (mode, owner) = intended_permissions(current.meta(), plan.perms, &|| w.umask());
    let (uid, gid) = owner.unwrap_or_else(|| new_file_owner(w));
    let entry = Entry {
        name: b.name.clone(),
        op: Op::Put {
            bytes,
            version: version.clone(),
            mode,
            uid,
            gid,
        },
        previous: current.version().cloned(),
        backups: u32::try_from(plan.backups).unwrap_or(u32::MAX),
    };
    let Op::Put { bytes, .. } = &entry.op else {
        unreachable!("made a put above")
    };
    let names: [&[u8]; 1] = [&b.name];
    let prepare = || prepare_temp(w, plan, current, bytes, &version);
    let direct = |(temp, aside): (Temp<'_>, Option<Aside<'_>>), marker: bool| {
        finish_direct(w, b, plan, current, (temp, aside), (&version, len), marker)
    };
    // Before anything is appended: what a withdraw reads and syncs (see `Kept`).
    let kept = Kept::open(w, current)?;
    let ticket = match j.append(
        &b.opts,
        std::slice::from_ref(&entry),
        &names,
        (j.max_record(), journal::withdraw_len(&names)),
    ) {
        Ok(ticket) => ticket, //                                          J1.
        Err(AppendError::Failed(e)) => return Err(e),
        Err(AppendError::TooLarge) => {
            drop(kept);
            return direct(prepare()?, true);
        }
        Err(AppendError::Disabled) => {
            drop(kept);
            // Disabled: written as outside journal mode. A disable given up meanwhile:
            // the journal is in use again, and the write is recorded as a direct one.
            let disabled = journal::wait_disabled(j, started + b.opts.lock_timeout)?;
            return direct(prepare()?, !disabled);
        }
    };
    if plan.durability != Durability::None {
        j.start_flush(&ticket);
    }
    let (temp, aside) = match prepare() {
        Ok(ready) => ready, //                                            1-6.
        Err(e) => {
            let mut doc = Undo {
                w,
                name: &b.name,
                current,
                kept,
            };
            return Err(withdraw(
                b,
                w,
                std::slice::from_mut(&mut doc),
                (&ticket, Some(&version)),
                e,
            ));
        }
    };
    if plan.durability != Durability::None {
        j.flush(&ticket, b.opts.lock_timeout)?; //                       J2.
    }
    // Closed before the rename, never kept to hold the replaced version across it (step
    // 7 opens it `O_PATH` for that): a file open for reading when it is renamed over or
    // unlinked is, to libfuse's high-level API (sshfs and most FUSE file systems), one
    // to hide as `.fuse_hidden*` in the document's directory rather than remove, and
    // an `O_PATH` open reaches no FUSE daemon (rev18).
    drop(kept);
    let swap = j.swap && current.meta().is_some();
    temp.put_in_place(swap, last_link(current, &aside)) //              7.
        .map_err(|e| committed_not_applied(t, &version, e))?;
    let backup = aside.and_then(|a| a.rotate(plan.backups)); //          8.
    j.finished(&ticket, &w.after, &b.opts); //                           J3.
    let unchanged = current.version() == Some(&version);
    Ok(Receipt {
        path: t.path.clone(),
        version,
        previous: current.version().cloned(),
        bytes: len,
        durability: if plan.durability == Durability::None {
            Durability::None
        } else {
            Durability::Full
        },
        backup,
        created: current.meta().is_none(),
        unchanged,
        lock_wait: w.lock.waited(),
        batch: 1,
        queued: Duration::ZERO,
    })
}

/// Steps 1-6 of a write in journal mode: the temp file made, filled from `bytes`,
/// verified if asked, and the old version linked aside if it is to be kept.
fn prepare_temp<'a>(
    w: &'a Locked,
    plan: &Plan<'_>,
    current: &'a Current,
    bytes: &[u8],
    version: &Version,
) -> Result<(Temp<'a>, Option<Aside<'a>>)> {
    let mut temp = start_temp(w, plan, current)?; //                     1-2.
    temp.fill_bytes(bytes)?; //                                          3.
    temp.verify(plan.verify, version)?; //                               5.
    let unchanged = current.version() == Some(version);
    let aside = Aside::link(w, plan, current, unchanged)?; //            6.
    Ok((temp, aside))
}

/// Steps 1-2 of a write in journal mode: the temp file made, shown to the hook, given
/// its permissions.
fn start_temp<'a>(w: &'a Locked, plan: &Plan<'_>, current: &Current) -> Result<Temp<'a>> {
    let mut temp = Temp::create(w)?; //                                  1.
    temp.announce(plan.temp_created)?;
    temp.take_permissions(current.meta(), plan.perms, &|| w.umask())?; //      2.
    Ok(temp)
}

/// A document of a commit to withdraw: locked, its name in the journal, what it held
/// (it was not touched), and its file as opened before the commit's record was appended.
struct Undo<'a> {
    w: &'a Locked,
    name: &'a [u8],
    current: &'a Current,
    kept: Option<Kept>,
}

/// A document's own file, opened before a commit's record is appended and kept until
/// the record is flushed: what [`withdraw`] reads and syncs if the commit fails in
/// between. Opened first, a write in a process out of descriptors (EMFILE, ENFILE)
/// fails before anything is appended, with nothing to withdraw; and the withdraw needs
/// no descriptor of its own, which the failure it answers (another thread took the
/// last one just before the temp file's turn) may leave it unable to get.
struct Kept {
    file: Box<dyn FsFile>,
    meta: Metadata,
}

impl Kept {
    /// The file at `w`'s document now, if `current` saw one there. `None` where it
    /// cannot be opened for another reason than running out of descriptors (gone
    /// since, unreadable): a withdraw then opens what is there itself.
    fn open(w: &Locked, current: &Current) -> Result<Option<Kept>> {
        if current.meta().is_none() {
            return Ok(None);
        }
        let t = &w.target;
        match crate::fs::retry(|| w.dir.open_read(&t.name)) {
            Ok(file) => Ok(file
                .metadata()
                .ok()
                .filter(|m| m.file_type == FileType::File)
                .map(|meta| Kept { file, meta })),
            Err(e) if out_of_descriptors(&e) => Err(Error::io("open", &t.path, e)),
            Err(_) => Ok(None),
        }
    }
}

/// A commit whose record is appended but whose temp files could not be made ready (a
/// full disk, a refusing hook, a verification that failed, a document another program
/// changed meanwhile): the caller is told the write failed, so no replay may ever apply
/// the record. Append one after it that cancels it for each of its documents, flush
/// that, and free both slots. The commit did not touch its documents, but another
/// program may have since the look: each entry says what is at the name now
/// ([`as_it_is_now`]), so that a replay leaves it so. Until the cancelling record is
/// durable the cancelled one stays in flight, so that a checkpoint of another thread or
/// process waits for this writer (its locks) rather than applying it. `after` is the
/// lock dropped last (a checkpoint the commits made due runs then). Returns the error
/// to report: `cause`, or, if cancelling failed, a `Durability` error saying what
/// became of the record ([`not_withdrawn`]).
fn withdraw(
    b: &Bound,
    after: &Locked,
    docs: &mut [Undo<'_>],
    (ticket, version): (&journal::Ticket, Option<&Version>),
    cause: Error,
) -> Error {
    let j = &b.journal;
    let entries = match docs
        .iter_mut()
        .map(|d| {
            Ok(Entry {
                name: d.name.to_vec(),
                op: as_it_is_now(d.w, d.current, d.kept.as_mut(), b.opts.max_document_bytes)?,
                previous: None,
                backups: 0,
            })
        })
        .collect::<Result<Vec<Entry>>>()
    {
        Ok(entries) => entries,
        Err(e) => return not_withdrawn(after, cause, version, e, Unwithdrawn::Unmade),
    };
    let names: Vec<&[u8]> = docs.iter().map(|d| d.name).collect();
    let undo = match j.replace_in_flight(ticket, &entries, &names, b.opts.lock_timeout) {
        Ok(undo) => undo,
        Err(e) => return not_withdrawn(after, cause, version, e, Unwithdrawn::Refused),
    };
    if let Err(e) = j.flush(&undo, b.opts.lock_timeout) {
        return not_withdrawn(after, cause, version, e, Unwithdrawn::Unflushed);
    }
    // Left in flight, the cancelling record is harmless: whoever adopts it applies
    // nothing, or deletes a document that does not exist.
    j.finished(&undo, &after.after, &b.opts);
    cause
}

/// How far [`withdraw`] got before it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unwithdrawn {
    /// The cancelling record could not be made (a document could not be looked at or
    /// synced): nothing was appended, the commit's record is in flight as it was.
    Unmade,
    /// The journal refused to append it (disabled, no longer in flight, unwritable).
    Refused,
    /// It was appended in the commit's place, but its flush failed.
    Unflushed,
}

/// The error of a write whose record [`withdraw`] could not cancel (`e`, at stage
/// `how`): `Durability`, with the write's own error (`cause`) and what became of the
/// record, so that the caller knows whether the write may still happen.
fn not_withdrawn(
    after: &Locked,
    cause: Error,
    version: Option<&Version>,
    e: Error,
    how: Unwithdrawn,
) -> Error {
    let path = cause
        .path()
        .map_or_else(|| after.target.path.clone(), Path::to_path_buf);
    let what = match version {
        Some(v) => format!("version {v}"),
        None => "the transaction".to_string(),
    };
    let fate = match how {
        Unwithdrawn::Unmade => format!(
            "the record withdrawing its journal record could not be made ({}): the \
             documents were not changed by this write, but its record is left in flight, \
             so the next writer of the document or a recovery applies {what} if it can",
            e.message()
        ),
        Unwithdrawn::Refused => format!(
            "the journal refused the record withdrawing its journal record ({}): the \
             documents were not changed by this write, but a recovery may still apply {what}",
            e.message()
        ),
        Unwithdrawn::Unflushed => format!(
            "the record withdrawing its journal record was appended, but flushing it failed \
             ({}): the documents were not changed by this write, and {what} stays withdrawn \
             unless the system goes down before the journal is flushed, when a recovery may \
             apply it",
            e.message()
        ),
    };
    let err = Error::new(
        ErrorKind::Durability,
        format!("{}; {fate}", cause.message()),
    )
    .with_path(&path)
    .with_source(e);
    match version {
        Some(v) => err.with_version(v.clone()),
        None => err,
    }
}

/// What a withdrawing record says of a document its commit did not touch, made true on
/// disk first: what is at its name now, which may no longer be what the commit looked
/// at (another program, not taking the lock, may have removed it or put something else
/// there). Missing: a `Delete` (a replay leaves it missing). A regular file: a `Direct`
/// of its version, after syncing it and its directory, as `Direct` promises (a replay
/// leaves it alone and applies no older record over it). Anything else (a symlink, a
/// directory), which statefile never reads: a `Direct` of the version last seen there,
/// after syncing the directory (a replay leaves the name alone); if none was seen
/// (backups off), it cannot be described, and the withdraw fails. A file over the size
/// limit (`max`, the writer's [`Options::max_document_bytes`], or the one the commit
/// looked at as [`Current::TooLarge`]) is synced without being read: a `Direct` of
/// [`Version::not_computed`] (with backups off the commit did not look at it, and
/// another program may have put it there since the look). A regular file is read and
/// synced through `kept` when that is still the file at the name; one that cannot be
/// opened for want of descriptors, by [`synced_as_seen`].
fn as_it_is_now(w: &Locked, current: &Current, kept: Option<&mut Kept>, max: u64) -> Result<Op> {
    let t = &w.target;
    match w.dir.stat(&t.name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Op::Delete),
        Err(e) => Err(Error::io("inspect", &t.path, e)),
        Ok(m) if m.file_type == FileType::File => {
            let mut kept = kept.filter(|k| is_same_file(&m, &k.meta));
            // A file over the size limit (the one the commit looked at, or any other):
            // synced, not hashed (another file there by the time it is opened: as any
            // file).
            let limit = match current {
                Current::TooLarge { max: looked, .. } => max.min(*looked),
                _ => max,
            };
            if m.len > limit && sync_unhashed(w, &m, kept.as_deref_mut())? {
                return Ok(Op::Direct {
                    version: Version::not_computed(),
                });
            }
            let version = match sync_document(w, kept) {
                Err(e) if caused_by_out_of_descriptors(&e) => {
                    synced_as_seen(w, current, &m).ok_or(e)?
                }
                r => r?,
            };
            Ok(Op::Direct { version })
        }
        Ok(m) => {
            let version = current
                .version()
                .cloned()
                .ok_or_else(|| file::not_regular(&t.path, m.file_type))?;
            w.dir.sync().ctx("sync the directory of", &t.path)?;
            Ok(Op::Direct { version })
        }
    }
}

/// Make the document `w` holds durable as it is (its file, then its directory), and
/// return its version (of the bytes there now): through `kept`, the file at its name
/// opened earlier and not read from since, or else opened now.
fn sync_document(w: &Locked, kept: Option<&mut Kept>) -> Result<Version> {
    let t = &w.target;
    let mut opened;
    let f: &mut dyn FsFile = match kept {
        Some(k) => k.file.as_mut(),
        None => {
            opened = file::open(w.dir.as_ref(), &t.name, &t.path)?.0;
            opened.as_mut()
        }
    };
    let version = hash_reader(&mut *f).ctx("read", &t.path)?.0;
    f.sync_all().ctx("sync", &t.path)?;
    w.dir.sync().ctx("sync the directory of", &t.path)?;
    Ok(version)
}

/// [`sync_document`] for the file over the size limit at `w`'s name (`now`, as a `stat`
/// found it), whose version is not computed: its file, then its directory. Through
/// `kept` (that file, opened earlier), or opened now; where it cannot be opened for
/// want of descriptors, by syncing its whole file system through the directory's
/// handle (as [`synced_as_seen`]). `false`, with nothing done, if what opens is another
/// file.
fn sync_unhashed(w: &Locked, now: &Metadata, kept: Option<&mut Kept>) -> Result<bool> {
    let t = &w.target;
    let mut opened;
    let f: &mut dyn FsFile = match kept {
        Some(k) => k.file.as_mut(),
        None => match file::open(w.dir.as_ref(), &t.name, &t.path) {
            Ok((f, m)) if is_same_file(&m, now) => {
                opened = f;
                opened.as_mut()
            }
            Ok(_) => return Ok(false),
            Err(e) if caused_by_out_of_descriptors(&e) => {
                w.dir.sync_fs().ctx("sync the file system of", &t.path)?;
                return Ok(true);
            }
            Err(e) => return Err(e),
        },
    };
    f.sync_all().ctx("sync", &t.path)?;
    w.dir.sync().ctx("sync the directory of", &t.path)?;
    Ok(true)
}

/// [`sync_document`] where the document cannot be opened for want of descriptors (a
/// transaction keeps no document's file open for its withdraw): if it is still the file
/// `current` looked at under the lock (same inode, size and modification time;
/// statefile never changes a document in place; not the change time, which the
/// commit's own backup link moved), its version is the one seen then, and syncing its
/// whole file system through the directory's handle (`syncfs`) makes it and its
/// directory durable. `None` where that cannot be told or done.
fn synced_as_seen(w: &Locked, current: &Current, now: &Metadata) -> Option<Version> {
    let Current::File {
        meta,
        seen: Some(seen),
    } = current
    else {
        return None;
    };
    let same = is_same_file(now, meta) && (now.len, now.mtime_ns) == (meta.len, meta.mtime_ns);
    (same && w.dir.sync_fs().is_ok()).then(|| seen.version.clone())
}

/// One document's change in a multi-document commit.
#[derive(Debug)]
pub(crate) enum Change {
    /// The document gets these bytes.
    Put(Vec<u8>),
    /// The document, whose bytes were `Seen`, is deleted (to `.bak` with backups).
    Delete(Seen),
}

/// A document of a multi-document commit: locked, looked at, and its change.
#[derive(Debug)]
pub(crate) struct Part<'a> {
    pub w: &'a Locked,
    pub current: Current,
    pub change: Change,
}

/// What a temp or delete waits for until the commit's record is durable.
enum Staged<'a> {
    Put(Temp<'a>, Option<Aside<'a>>),
    Delete(&'a Seen),
}

/// Commit several locked documents as one journal record (a transaction): every
/// document's temp file is filled (not synced) and its old version linked aside, one
/// record holds every change, one flush makes it durable, then each temp is renamed
/// over its document (or the document deleted), without further syncs. Before the
/// flush returns nothing is visible; after it, a crash leaves the record, which recovery
/// applies to every document it names: all or nothing. `after` is the lock dropped last,
/// which runs a checkpoint the commit made due. Returns each part's new version (`None`:
/// deleted), in order.
///
/// # Errors
/// [`ErrorKind::InvalidName`] if a document is not in journal mode, or not in the same
/// journal as the first; [`ErrorKind::NoSpace`] if the record is larger than half the
/// journal; the kinds of a write. A failure before the flush leaves every document
/// untouched; one after it (a rename) leaves the commit to the next writer of the
/// document or to recovery, and says so.
pub(crate) fn commit_many(
    parts: Vec<Part<'_>>,
    plan: &Plan<'_>,
    after: &Locked,
) -> Result<Vec<Option<Version>>> {
    let Some(first) = parts.first() else {
        return Ok(Vec::new());
    };
    let Some(b) = &first.w.journal else {
        return Err(not_journaled(&first.w.target.path));
    };
    for p in &parts {
        match &p.w.journal {
            Some(o) if Arc::ptr_eq(&o.journal, &b.journal) => {}
            Some(o) => {
                return Err(Error::new(
                    ErrorKind::InvalidName,
                    format!(
                        "{} is in the journal of {}, not of {}: a transaction's documents share one journal",
                        p.w.target.path.display(),
                        o.journal.root().display(),
                        b.journal.root().display()
                    ),
                )
                .with_path(&p.w.target.path));
            }
            None => return Err(not_journaled(&p.w.target.path)),
        }
    }
    refuse_if_poisoned(plan.poison, "write", &first.w.target.path)?;
    let backups = u32::try_from(plan.backups).unwrap_or(u32::MAX);
    let mut entries = Vec::with_capacity(parts.len());
    let mut versions = Vec::with_capacity(parts.len());
    for p in &parts {
        let name =
            p.w.journal
                .as_ref()
                .map(|o| o.name.clone())
                .unwrap_or_default();
        check_write_access(p.w, &p.current)?;
        match &p.change {
            Change::Put(bytes) => {
                let version = Version::of(bytes);
                let (mode, owner) =
                    intended_permissions(p.current.meta(), plan.perms, &|| p.w.umask());
                let (uid, gid) = owner.unwrap_or_else(|| new_file_owner(p.w));
                entries.push(Entry {
                    name,
                    op: Op::Put {
                        bytes: bytes.clone(),
                        version: version.clone(),
                        mode,
                        uid,
                        gid,
                    },
                    previous: p.current.version().cloned(),
                    backups,
                });
                versions.push(Some(version));
            }
            Change::Delete(seen) => {
                entries.push(Entry {
                    name,
                    op: Op::Delete,
                    previous: Some(seen.version.clone()),
                    backups,
                });
                versions.push(None);
            }
        }
    }
    let j = &b.journal;
    let names: Vec<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
    let reserve = journal::withdraw_len(&names);
    let ticket = match j.append(&b.opts, &entries, &names, (j.max_transaction(), reserve)) {
        Ok(t) => t, //                                                        J1.
        Err(AppendError::Failed(e)) => return Err(e),
        Err(AppendError::TooLarge) => {
            return Err(Error::new(
                ErrorKind::NoSpace,
                format!(
                    "the transaction's record ({} bytes) is larger than half the journal {}: \
                     nothing written; enable the journal with a larger --size",
                    journal::record_len(&entries),
                    j.path().display()
                ),
            )
            .with_path(j.path()));
        }
        Err(AppendError::Disabled) => {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "the journal {} is being disabled: the transaction wrote nothing",
                    j.path().display()
                ),
            )
            .with_path(j.path()));
        }
    };
    drop(names);
    drop(entries);
    if plan.durability != Durability::None {
        j.start_flush(&ticket);
    }
    let staged = match stage(&parts, plan, &versions) {
        Ok(staged) => staged, //                                              1-6.
        Err(e) => {
            // No document's file is kept open (a transaction's descriptors stay one per
            // document): each has been looked at, which a withdraw out of descriptors
            // falls back on (`synced_as_seen`).
            let mut docs: Vec<Undo<'_>> = parts
                .iter()
                .map(|p| Undo {
                    w: p.w,
                    name: p.w.journal.as_ref().map_or(&[][..], |o| o.name.as_slice()),
                    current: &p.current,
                    kept: None,
                })
                .collect();
            return Err(withdraw(b, after, &mut docs, (&ticket, None), e));
        }
    };
    if plan.durability != Durability::None {
        j.flush(&ticket, b.opts.lock_timeout)?; //                           J2.
    }
    for ((p, st), v) in parts.iter().zip(staged).zip(&versions) {
        let t = &p.w.target;
        match st {
            Staged::Put(temp, aside) => {
                let v = v.as_ref().expect("a put has a version");
                let swap = j.swap && p.current.meta().is_some();
                temp.put_in_place(swap, last_link(&p.current, &aside)) //    7.
                    .map_err(|e| committed_not_applied(t, v, e))?;
                if let Some(a) = aside {
                    a.rotate(plan.backups); //                                8.
                }
            }
            Staged::Delete(seen) => {
                remove_locked(p.w, plan.backups, seen)
                    .map_err(|e| delete_committed_not_applied(t, e))?;
            }
        }
    }
    j.finished(&ticket, &after.after, &b.opts); //                         J3.
    Ok(versions)
}

/// Steps 1-6 for each part of a multi-document commit (a put's temp file, a delete's
/// nothing yet), in order; `versions[i]` is part `i`'s new version (`None`: deleted).
fn stage<'a>(
    parts: &'a [Part<'_>],
    plan: &Plan<'_>,
    versions: &[Option<Version>],
) -> Result<Vec<Staged<'a>>> {
    let mut staged = Vec::with_capacity(parts.len());
    for (p, v) in parts.iter().zip(versions) {
        staged.push(match (&p.change, v) {
            (Change::Put(bytes), Some(v)) => {
                let (temp, aside) = prepare_temp(p.w, plan, &p.current, bytes, v)?;
                Staged::Put(temp, aside)
            }
            (Change::Delete(seen), _) => Staged::Delete(seen),
            (Change::Put(_), None) => unreachable!("a put has a version"),
        });
    }
    Ok(staged)
}

fn not_journaled(path: &Path) -> Error {
    Error::new(
        ErrorKind::InvalidName,
        format!(
            "{} is not in journal mode: a transaction needs its store's journal \
             (`statefile journal enable DIR`)",
            path.display()
        ),
    )
    .with_path(path)
}

/// A journal-mode write that goes on without the journal (a document too large for it,
/// or a journal being disabled): steps 4, 7, 8, 9 on the filled temp; then, with
/// `marker`, a record saying the document was written this way.
fn finish_direct(
    w: &Locked,
    b: &Bound,
    plan: &Plan<'_>,
    current: &Current,
    (mut temp, aside): (Temp<'_>, Option<Aside<'_>>),
    (version, len): (&Version, u64),
    marker: bool,
) -> Result<Receipt> {
    let t = &w.target;
    if temp.file.is_none() {
        let (f, _) = file::open(w.dir.as_ref(), &temp.name, &temp.path())?;
        temp.file = Some(f);
    }
    temp.sync(plan.durability)?; //                                      4.
    if marker {
        sync_kept(w, b, plan, current)?;
    }
    temp.rename_over_target(last_link(current, &aside))?; //             7.
    let backup = aside.and_then(|a| a.rotate(plan.backups)); //          8.
    // The `direct` record says the file and its directory are synced, and a replay
    // leaves the file as it is from then on: under `Data` too, whose writes in journal
    // mode are durable through the journal's flush (without the directory's sync, a
    // power loss brought back the file before the journaled writes, which no replay
    // put back).
    let durability = if marker && plan.durability == Durability::Data {
        sync_dir_as(w, Durability::Full, plan.poison, version)?
    } else {
        sync_dir(w, plan, version)?
    }; //                                                                9.
    if marker {
        let backups = u32::try_from(plan.backups).unwrap_or(u32::MAX);
        mark_direct(w, b, (version, current.version()), backups, plan.durability)?;
    }
    Ok(Receipt {
        path: t.path.clone(),
        version: version.clone(),
        previous: current.version().cloned(),
        bytes: len,
        durability,
        backup,
        created: current.meta().is_none(),
        unchanged: current.version() == Some(version),
        lock_wait: w.lock.waited(),
        batch: 1,
        queued: Duration::ZERO,
    })
}

/// In journal mode, a write outside the journal also makes durable the versions it
/// keeps as backups: the document as it is (about to become `.bak`) and the backups that
/// move up. They may be versions only the journal had (their files never synced), and
/// after a power loss the replay rebuilds backups from the chain of records after this
/// write's `direct` record, taking what it left as durable. Done before the rename
/// (data does not depend on names; the directory sync after the rotation makes the
/// names durable), so a failure, even running out of descriptors, writes nothing.
///
/// A failed sync may drop the pages it could not write, or keep them in the cache
/// marked clean while the disk holds other bytes, and the file's bytes may be in the
/// journal only: see [`after_failed_sync`].
fn sync_kept(w: &Locked, b: &Bound, plan: &Plan<'_>, current: &Current) -> Result<()> {
    if plan.durability == Durability::None || plan.backups == 0 {
        return Ok(());
    }
    let t = &w.target;
    let since = b.journal.checkpoint_lsn()?;
    if let Some(e) = sync_named(w, &t.name)? {
        // Only the version this write saw there is put back (see `rewrite_locked`).
        let rewritten = match current.version() {
            Some(seen) => b.journal.rewrite_locked(w, plan.max_bytes, seen, since),
            None => Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{} was not read (over the size limit): which version it held is not known",
                    t.path.display()
                ),
            )),
        };
        return Err(after_failed_sync(b, &t.path, e, rewritten));
    }
    let keep = plan.backups.min(journal::MAX_SYNCED_BACKUPS as usize);
    sync_backups_upto(w, b, keep.saturating_sub(1), (plan.max_bytes, since))
}

/// In journal mode, a file put in place outside the journal ([`crate::replace_file`],
/// [`crate::move_file`]) makes the document's backups durable, as [`sync_kept`] does
/// for a write outside it: the replay after a power loss takes the backups a `direct`
/// record left as durable, and the ones journaled writes kept since the last
/// checkpoint had their bytes in the journal only. It keeps none of its own, and does
/// not know how many the document's writers keep: every backup name up to
/// [`journal::MAX_SYNCED_BACKUPS`] that holds a file. Done before the file is put in
/// place, so that a failure changes nothing.
pub(crate) fn sync_backups(w: &Locked, b: &Bound, durability: Durability, max: u64) -> Result<()> {
    if durability == Durability::None {
        return Ok(());
    }
    let since = b.journal.checkpoint_lsn()?;
    sync_backups_upto(w, b, journal::MAX_SYNCED_BACKUPS as usize, (max, since))
}

/// Sync backups 1 to `upto` of the locked document (those that hold a regular file);
/// a failed sync is handled as [`after_failed_sync`] says (`max`: the size limit;
/// `since`: the checkpoint's position before the syncs).
fn sync_backups_upto(w: &Locked, b: &Bound, upto: usize, (max, since): (u64, u64)) -> Result<()> {
    let t = &w.target;
    for n in 1..=upto {
        if let Some(e) = sync_named(w, &t.backup_name(n))? {
            let rewritten = b.journal.rewrite_backup_locked(w, n, max, since);
            return Err(after_failed_sync(b, &t.backup_path(n), e, rewritten));
        }
    }
    Ok(())
}

/// The sync of `path` (the document or one of its backups, about to be left durable
/// by a write outside the journal) failed with `e`, and `rewritten` says what was done
/// about it: the failed sync may have dropped the pages it could not write (the file
/// then reads empty or older), or, as Linux does, kept them in the cache marked clean
/// (it reads as it should while the disk holds other bytes, and no later sync writes
/// them); and a version kept since the last checkpoint has its bytes in the journal
/// only, in a record the next checkpoint would free after syncing what is left, which
/// succeeds (nothing is dirty). So the file is written again from its record as a fresh
/// file (`Ok(true)`; `Ok(false)`: its version is no record's, it was durable before),
/// never synced again as if it were good. If that fails too, the journal is marked
/// ([`journal::Journal::mark_sync_failed`]): no checkpoint frees a record until
/// `statefile recover` has rewritten the files the journal holds. Either way nothing
/// was written, and the error (`e`'s kind) says which.
fn after_failed_sync(b: &Bound, path: &Path, e: Error, rewritten: Result<bool>) -> Error {
    match rewritten {
        Ok(true) => e.and(&format!(
            "nothing was written; {} was written again from its journal record (the failed \
             sync may have dropped its bytes)",
            path.display()
        )),
        Ok(false) => e.and("nothing was written"),
        Err(again) => {
            b.journal
                .mark_sync_failed(path, &again, b.opts.lock_timeout);
            e.and(&format!(
                "nothing was written, but {} could not be written again from its journal \
                 record ({}): the journal keeps its records (checkpoints are refused) until \
                 `statefile recover` rewrites the files it holds",
                path.display(),
                again.message()
            ))
        }
    }
}

/// Sync the regular file `name` in `w`'s directory (a name that holds nothing, or
/// anything but a regular file, is passed over). `Ok(Some(e))`: the sync itself failed
/// (the file's pages may be gone); `Err`: looking at or opening it did (nothing lost).
fn sync_named(w: &Locked, name: &OsStr) -> Result<Option<Error>> {
    let path = w.target.beside(name);
    // Only a regular file is data: a symlink, FIFO or device there is left alone.
    match w.dir.stat(name) {
        Ok(m) if m.file_type != FileType::File => return Ok(None),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("inspect", &path, e)),
    }
    match crate::fs::retry(|| w.dir.open_read(name)) {
        Ok(mut f) => Ok(f.sync_all().err().map(|e| Error::io("sync", &path, e))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("open", &path, e)),
    }
}

/// Record in the journal that the locked document `w` was just written outside it, as
/// `version` (replacing `previous`), its file and directory synced: a `direct` record,
/// flushed, so that a replay never rolls the document back to an older record. If the
/// journal is being disabled, wait for that instead (until its checkpoint is done a
/// replay could still). A failure is [`unmarked`]: `Durability`, the version in place.
pub(crate) fn mark_direct(
    w: &Locked,
    b: &Bound,
    (version, previous): (&Version, Option<&Version>),
    backups: u32,
    durability: Durability,
) -> Result<()> {
    let entry = Entry {
        name: b.name.clone(),
        op: Op::Direct {
            version: version.clone(),
        },
        previous: previous.cloned(),
        backups,
    };
    let names: [&[u8]; 1] = [&b.name];
    let deadline = std::time::Instant::now() + b.opts.lock_timeout;
    let marked = loop {
        match b
            .journal
            .append(&b.opts, std::slice::from_ref(&entry), &names, (u64::MAX, 0))
        {
            Ok(ticket) => {
                let flushed = match durability {
                    Durability::None => Ok(()),
                    _ => b.journal.flush(&ticket, b.opts.lock_timeout),
                };
                b.journal.finished(&ticket, &w.after, &b.opts);
                break flushed;
            }
            // Disabled: no replay will run. A disable given up meanwhile: the journal is
            // in use again, and the record is needed.
            Err(AppendError::Disabled) => match journal::wait_disabled(&b.journal, deadline) {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(e) => break Err(e),
            },
            Err(AppendError::Failed(e)) => break Err(e),
            Err(AppendError::TooLarge) => unreachable!("no limit given"),
        }
    };
    marked.map_err(|e| unmarked(&w.target, version, e))
}

/// A document written outside journal mode (too large for a record, or a file put in
/// place by [`crate::replace_file`]), synced, whose
/// journal record saying so could not be made durable: `Durability`, whatever the
/// cause's kind (a full ring, a lock timeout), since the new version is in place and a
/// caller must not read "nothing written" into it. Until a checkpoint passes the
/// document's older records, a replay after a power loss could bring one back.
fn unmarked(t: &Target, version: &Version, e: Error) -> Error {
    Error::new(
        ErrorKind::Durability,
        format!(
            "{} now holds version {version}, written and synced outside the journal (too \
             large for a record, or a file put in place), but the journal's record of that \
             could not be made \
             durable ({}): after a power loss before the next checkpoint, a replay could \
             bring back the version before it; run `statefile journal checkpoint` once the \
             journal is usable",
            t.path.display(),
            e.message()
        ),
    )
    .with_path(&t.path)
    .with_version(version.clone())
    .with_source(e)
}

/// The rename after a durable journal record failed: the commit stands (a later lock of
/// the document, or a recovery, applies it from the journal). `Durability`, whatever
/// the rename's own error: the write happened, and a caller that took the rename's kind
/// (a full disk, a permission) for "nothing written" would retry it and write twice.
fn committed_not_applied(t: &Target, version: &Version, e: Error) -> Error {
    Error::new(
        ErrorKind::Durability,
        format!(
            "{} (version {version} is committed in the journal and will be applied by the \
             next writer of the document or by recovery)",
            e.message()
        ),
    )
    .with_path(&t.path)
    .with_version(version.clone())
    .with_source(e)
}

/// A delete's file operations failed after its journal record was made durable: as
/// [`committed_not_applied`], the delete stands.
fn delete_committed_not_applied(t: &Target, e: Error) -> Error {
    Error::new(
        ErrorKind::Durability,
        format!(
            "{} (the delete is committed in the journal and will be applied by the next \
             writer of the document or by recovery)",
            e.message()
        ),
    )
    .with_path(&t.path)
    .with_source(e)
}

/// Delete the locked document whose current bytes are `seen`: as [`Doc::delete`]
/// describes (to `.bak`, to `.corrupt` if it does not parse, or unlinked without
/// backups). In journal mode a record says so first, flushed unless `durability` is
/// `None`. Returns where the document went and whether the journal made it durable
/// (otherwise the caller syncs the directory).
///
/// [`Doc::delete`]: crate::Doc::delete
pub(crate) fn delete(
    w: &Locked,
    durability: Durability,
    backups: usize,
    seen: &Seen,
) -> Result<(Option<PathBuf>, bool)> {
    let Some(b) = &w.journal else {
        return Ok((remove_locked(w, backups, seen)?, false));
    };
    let started = std::time::Instant::now();
    let entry = Entry {
        name: b.name.clone(),
        op: Op::Delete,
        previous: Some(seen.version.clone()),
        backups: u32::try_from(backups).unwrap_or(u32::MAX),
    };
    let names: [&[u8]; 1] = [&b.name];
    let ticket = loop {
        match b
            .journal
            .append(&b.opts, std::slice::from_ref(&entry), &names, (u64::MAX, 0))
        {
            Ok(ticket) => break ticket,
            // Disabled: removed as outside journal mode. A disable given up meanwhile:
            // the journal is in use again, and the delete must be recorded in it (the
            // replay would bring back the document's last record).
            Err(AppendError::Disabled) => {
                if journal::wait_disabled(&b.journal, started + b.opts.lock_timeout)? {
                    return Ok((remove_locked(w, backups, seen)?, false));
                }
            }
            Err(AppendError::Failed(e)) => return Err(e),
            Err(AppendError::TooLarge) => unreachable!("no limit given"),
        }
    };
    if durability != Durability::None {
        b.journal.flush(&ticket, b.opts.lock_timeout)?;
    }
    let kept =
        remove_locked(w, backups, seen).map_err(|e| delete_committed_not_applied(&w.target, e))?;
    b.journal.finished(&ticket, &w.after, &b.opts);
    Ok((kept, durability != Durability::None))
}

/// The file operations of a delete, under the lock: a document that does not parse
/// goes to `.corrupt`; with backups it becomes `.bak` (older ones shifted); otherwise it
/// is unlinked. No sync.
pub(crate) fn remove_locked(w: &Locked, backups: usize, seen: &Seen) -> Result<Option<PathBuf>> {
    let (t, dir) = (&w.target, w.dir.as_ref());
    if !seen.parses {
        dir.rename(&t.name, &t.corrupt_name())
            .ctx("move aside", &t.path)?;
        Ok(Some(t.corrupt_path()))
    } else if backups > 0 {
        // Never swapped: the older backup would show at the document's name until
        // unlinked, a deleted document coming back older for a moment.
        let kept = rotate_in(dir, t, backups, &t.name, false).ctx("move to backup", &t.path)?;
        Ok(Some(kept))
    } else {
        dir.remove_file(&t.name).ctx("delete", &t.path)?;
        Ok(None)
    }
}

/// Before step 1: the process must be allowed to write the file it replaces.
fn check_write_access(w: &Locked, current: &Current) -> Result<()> {
    if current.meta().is_some() {
        w.dir
            .check_write_access(&w.target.name)
            .ctx("write", &w.target.path)?;
    }
    Ok(())
}

/// Whether `e`, from [`FsDir::exchange`], means "rename instead": the file system (or
/// kernel) cannot exchange, a seccomp filter refuses `renameat2` (older container
/// runtimes answer EPERM), or the document is no longer there. A rename refused for
/// its own reason (an immutable file) then says so itself.
fn cannot_exchange(e: &io::Error) -> bool {
    use rustix::io::Errno;
    e.kind() == io::ErrorKind::Unsupported
        || matches!(
            errno(e),
            Some(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::NOENT | Errno::PERM)
        )
}

/// Whether the rename of step 7 removes the last name of the current file (it exists,
/// has one link, and no backup link was made of it in step 6).
fn last_link(current: &Current, aside: &Option<Aside<'_>>) -> bool {
    aside.is_none() && current.meta().is_some_and(|m| m.nlink == 1)
}

/// The temp file of one write, removed when dropped unless renamed into place.
struct Temp<'a> {
    w: &'a Locked,
    name: OsString,
    /// Open until synced.
    file: Option<Box<dyn FsFile>>,
    armed: bool,
}

impl<'a> Temp<'a> {
    /// Step 1: a temp file only this writer uses, beside the target.
    fn create(w: &'a Locked) -> Result<Temp<'a>> {
        let t = &w.target;
        let mut attempts = 0;
        loop {
            let name = if mutants::active(Mutant::FixedTempName) {
                let mut n = OsString::from(".");
                n.push(&t.name);
                n.push(".tmp");
                n
            } else {
                t.temp_name(&random_suffix())
            };
            match w.dir.create_new(&name, 0o600) {
                Ok(f) => {
                    return Ok(Temp {
                        w,
                        name,
                        file: Some(f),
                        armed: true,
                    });
                }
                // 80 random bits collide only if the random source is broken; try again.
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists
                        && attempts < 8
                        && !mutants::active(Mutant::FixedTempName) =>
                {
                    attempts += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("create temp file for", &t.path, e)),
            }
        }
    }

    /// Tell the caller's hook where the temp file is; its refusal ends the write (the
    /// temp is removed on drop).
    fn announce(&self, hook: Option<&TempHook>) -> Result<()> {
        match hook {
            Some(h) => h
                .call(&self.path())
                .ctx("hand over the temp file for", &self.w.target.path),
            None => Ok(()),
        }
    }

    fn file(&mut self) -> &mut Box<dyn FsFile> {
        self.file
            .as_mut()
            .expect("the temp file is open until it is synced")
    }

    fn path(&self) -> PathBuf {
        self.w.target.dir.join(&self.name)
    }

    /// Step 2: see [`take_permissions`].
    fn take_permissions(
        &mut self,
        old: Option<&Metadata>,
        perms: Perms,
        umask: &dyn Fn() -> u32,
    ) -> Result<()> {
        let path = self.path();
        take_permissions(self.file().as_mut(), &path, old, perms, umask)
    }

    /// Step 3: stream the content, hashing and counting it, up to `max` bytes.
    fn fill(&mut self, body: &mut Body<'_>, max: u64) -> Result<(Version, u64)> {
        let target = self.w.target.path.clone();
        run_body(Sink::File(self.file()), body, &target, max)
    }

    /// Step 3 in journal mode: the bytes are already made (and the record, with the mode
    /// and owner the document is meant to have, appended). Closes the file.
    fn fill_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let target = self.w.target.path.clone();
        io::Write::write_all(self.file(), bytes).ctx("write temp file for", &target)?;
        self.file = None;
        Ok(())
    }

    /// Step 4: the data must be on disk before a name points at it. Closes the file.
    fn sync(&mut self, durability: Durability) -> Result<()> {
        let mut file = self.file.take().expect("synced once");
        sync_file(file.as_mut(), durability, &self.w.target.path)
    }

    /// Step 5: read the synced temp back, if asked.
    fn verify(&self, how: Verify, want: &Version) -> Result<()> {
        let t = &self.w.target;
        let dir = self.w.dir.as_ref();
        let (got, parses) = match how {
            Verify::No => return Ok(()),
            Verify::Json => {
                let s = file::inspect(dir, &self.name, &self.path())?;
                (s.version, s.parses)
            }
            Verify::Bytes => {
                let (f, _) = file::open(dir, &self.name, &self.path())?;
                let (v, _) = hash_reader(f).ctx("re-read temp file for", &t.path)?;
                (v, true)
            }
        };
        if &got != want || !parses {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "cannot write {}: verification failed, the synced temp file does not read \
                     back as written (the document is unchanged)",
                    t.path.display()
                ),
            )
            .with_path(&t.path));
        }
        Ok(())
    }

    /// Step 7: the atomic step. If it removes the last name of the file there
    /// (`last`), that file is held across the rename ([`FsDir::hold`]) and released in
    /// the background, so that the rename only unlinks it and freeing its blocks is off
    /// the writer's path. A hold that fails (the file already gone, a file system
    /// without holds) changes only who frees the blocks: it is not an error.
    fn rename_over_target(mut self, last: bool) -> Result<()> {
        let t = &self.w.target;
        let held = if last {
            self.w.dir.hold(&t.name).ok().flatten()
        } else {
            None
        };
        let r = self.w.dir.rename(&self.name, &t.name);
        if let Some(h) = held {
            crate::fs::release_later(h);
        }
        r.ctx("rename temp file over", &t.path)?;
        self.armed = false;
        Ok(())
    }

    /// Step 7 in journal mode: [`Temp::rename_over_target`], or, in a journal enabled
    /// with [`crate::journal::JournalOptions::swap`] and a file at the document's name
    /// (`swap`), the names exchanged (`RENAME_EXCHANGE`, as atomic for readers as a
    /// rename) and the replaced file, now at the temp's name, unlinked (held across the
    /// unlink as step 7 holds it, if `last`). On ext4 a file renamed over another is
    /// written out at once (`auto_da_alloc`), and freeing the replaced file then waits
    /// for that I/O; a file swapped in is written out by the checkpoint, or never if it
    /// is replaced first (the journal holds its bytes until then). Where the file
    /// system cannot exchange, or the document is gone since it was looked at, this
    /// renames. A directory found at the document's name, which a rename would not
    /// replace, is swapped back, and the write fails as the rename would have. If even
    /// the swap back fails, the new version stays at the document's name and the
    /// directory under the temp's name (never removed: recovery reports it), and the
    /// error says where it is.
    fn put_in_place(mut self, swap: bool, last: bool) -> Result<()> {
        let t = &self.w.target;
        if !swap {
            return self.rename_over_target(last);
        }
        match self.w.dir.exchange(&self.name, &t.name) {
            Ok(()) => {}
            Err(e) if cannot_exchange(&e) => return self.rename_over_target(last),
            Err(e) => return Err(e).ctx("rename temp file over", &t.path),
        }
        // The temp's name now holds what was at the document's name.
        let held = if last {
            self.w.dir.hold(&self.name).ok().flatten()
        } else {
            None
        };
        let removed = self.w.dir.remove_file(&self.name);
        if let Some(h) = held {
            crate::fs::release_later(h);
        }
        match removed {
            Ok(()) => {
                self.armed = false;
                Ok(())
            }
            // Linux answers EISDIR; POSIX lets others answer EPERM, so look.
            Err(e)
                if errno(&e) == Some(rustix::io::Errno::ISDIR)
                    || self.w.dir.stat(&self.name).is_ok_and(|m| m.is_dir()) =>
            {
                // Put the directory back; the temp, back at its name, goes when dropped.
                match self.w.dir.exchange(&self.name, &t.name) {
                    Ok(()) => Err(e).ctx("rename temp file over", &t.path),
                    Err(back) => {
                        // The new version is at the document's name now, and stays: the
                        // write failed, but not as "nothing happened". The directory
                        // may hold anyone's data: left where it is, never removed
                        // (recovery reports it), and named so a person can move it back.
                        self.armed = false;
                        Err(Error::new(
                            ErrorKind::Io,
                            format!(
                                "cannot replace {}: a directory was at its name, and after \
                                 the swap it could not be put back ({back}): the new version \
                                 is at the document's name, the directory is now at {}",
                                t.path.display(),
                                self.path().display()
                            ),
                        )
                        .with_path(&t.path)
                        .with_source(Error::io(
                            "rename temp file over",
                            &t.path,
                            e,
                        )))
                    }
                }
            }
            Err(e) => {
                // The new version is in place. The old one stays under a temp name,
                // which recovery removes once no writer holds the document's lock.
                self.armed = false;
                tracing::warn!(file = %t.path.display(), error = %e,
                    "cannot remove the replaced version of a document (left under a temp name for recovery)");
                Ok(())
            }
        }
    }

    /// Hand the temp over to someone else (the in-place mutant), unremoved.
    fn disarm(mut self) -> OsString {
        self.armed = false;
        std::mem::take(&mut self.name)
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if self.armed {
            // If even this fails, recovery removes the temp later (the name says so).
            self.file = None;
            let _ = self.w.dir.remove_file(&self.name);
        }
    }
}

/// Step 2: a file about to replace a document takes the target's owner (where the
/// process may set it) and mode; a new document gets 0644 less the umask; `perms`
/// overrides either. Done before any content is written to a temp of ours (`install`
/// does it to the caller's finished file).
pub(crate) fn take_permissions(
    file: &mut dyn FsFile,
    path: &Path,
    old: Option<&Metadata>,
    perms: Perms,
    umask: &dyn Fn() -> u32,
) -> Result<()> {
    let (mode, owner) = intended_permissions(old, perms, umask);
    if let Some((uid, gid)) = owner {
        let mine = file.metadata().ctx("inspect temp file", path)?;
        if (mine.uid, mine.gid) != (uid, gid) {
            match file.set_owner(uid, gid) {
                Ok(()) => {}
                // Only root (or the owner, for groups it belongs to) may do this.
                Err(e)
                    if matches!(
                        errno(&e),
                        Some(rustix::io::Errno::PERM | rustix::io::Errno::ACCESS)
                    ) => {}
                Err(e) => return Err(Error::io("set owner of temp file", path, e)),
            }
        }
    }
    if mode != 0o600 {
        file.set_mode(mode).ctx("set mode of temp file", path)?;
    }
    Ok(())
}

/// Step 2's decision, before any file is made: the permission bits of a document's new
/// file (`perms`' own, or the replaced file's, or the creation mode less the umask),
/// and the owner it is meant to keep (`perms`' own, or the replaced file's; `None` for
/// a new document: whoever writes it). What a journal record carries for a replay.
/// `umask` is asked only for a new document.
fn intended_permissions(
    old: Option<&Metadata>,
    perms: Perms,
    umask: &dyn Fn() -> u32,
) -> (u32, Option<(u32, u32)>) {
    let mode = match (perms.mode, old) {
        (Some(bits), _) => bits,
        (None, Some(m)) => m.mode,
        (None, None) => perms.create_mode & !umask(),
    };
    (mode, perms.owner.or(old.map(|m| (m.uid, m.gid))))
}

/// The owner a new document's temp file gets from the kernel, before anything is made:
/// the writer's effective uid, and the directory's group if the directory is
/// set-group-ID, else the writer's effective gid. What its journal record carries, so
/// that a replay by another user (root running `statefile recover`) gives the file back
/// the owner its writer gave it.
fn new_file_owner(w: &Locked) -> (u32, u32) {
    let uid = rustix::process::geteuid().as_raw();
    let gid = match w.dir.stat(std::ffi::OsStr::new(".")) {
        Ok(m) if m.mode & 0o2000 != 0 => m.gid,
        _ => rustix::process::getegid().as_raw(),
    };
    (uid, gid)
}

/// Run `body` into `sink` through the 64 KiB buffer and the hasher: the version and
/// length of what it wrote. Every write's content passes here, so this is where
/// [`Options::max_document_bytes`] (`max`) is held to: past it, the write fails with
/// [`ErrorKind::Serialize`] ([`Error::too_large`]) and the sink has at most `max` bytes.
fn run_body(
    sink: Sink<'_>,
    body: &mut Body<'_>,
    target: &Path,
    max: u64,
) -> Result<(Version, u64)> {
    // The hasher sits behind the buffer, so it sees 64 KiB chunks rather than the
    // serializer's many small writes.
    let hashing = HashingWriter::limited(sink, max);
    let mut w: TempWriter<'_> = BufWriter::with_capacity(64 * 1024, hashing);
    let too_large = |e: &io::Error| {
        crate::version::over_limit(e).map(|limit| Error::over_limit("write", target, None, limit))
    };
    if let Err(e) = body(&mut w) {
        // What the buffer holds is dropped unwritten: dropping the buffer would write
        // it out, past the failure (a spill would then make a temp file for a write that
        // already failed).
        drop(w.into_parts());
        return Err(match e {
            SerializeError::Value(msg) => Error::new(
                ErrorKind::Serialize,
                format!("cannot write {}: {msg}", target.display()),
            )
            .with_path(target),
            SerializeError::Io(e) => {
                too_large(&e).unwrap_or_else(|| Error::io("write temp file for", target, e))
            }
        });
    }
    let hashing = w.into_inner().map_err(|e| {
        let (e, w) = e.into_parts();
        drop(w.into_parts());
        too_large(&e).unwrap_or_else(|| Error::io("write temp file for", target, e))
    })?;
    let (_, version, bytes) = hashing.finish();
    Ok((version, bytes))
}

/// `fsync` (or `fdatasync`) per `durability`. Never retried: after a failed fsync the
/// page cache may already have dropped the data it could not write, so a second fsync
/// "succeeding" would prove nothing.
fn sync_file(file: &mut dyn FsFile, durability: Durability, target: &Path) -> Result<()> {
    if mutants::active(Mutant::NoFileFsync) {
        return Ok(());
    }
    if durability != Durability::None {
        crate::fs::release_now();
    }
    let r = match durability {
        Durability::Full => file.sync_all(),
        Durability::Data => file.sync_data(),
        Durability::None => Ok(()),
    };
    r.map_err(|e| {
        let err = Error::io("sync temp file for", target, e);
        Error::new(
            err.kind(),
            format!("{} (the document is unchanged)", err.message()),
        )
        .with_path(target)
        .with_source(err)
    })
}

/// The replaced version, linked aside under a temp name before the rename (step 6) and
/// rotated into the backups after it (step 8). Removed when dropped before that.
struct Aside<'a> {
    w: &'a Locked,
    name: Option<OsString>,
    /// What was seen of the old version; `None` for one over the size limit, never
    /// looked at (kept as `.name.corrupt`).
    old: Option<&'a Seen>,
    method: BackupMethod,
}

impl<'a> Aside<'a> {
    /// Step 6: keep the old version by hard link (free, exact), or by copy where
    /// refused. An old version that does not parse is kept once as `.name.corrupt`
    /// instead. Nothing to keep: no file, an identical one, or backups off for a file
    /// that parses. A file over the size limit ([`Current::TooLarge`]) is kept once as
    /// `.name.corrupt` too, by hard link only: where links are refused the write is
    /// ([`Error::too_large`]), rather than copy it (it may be many gigabytes) or lose
    /// it.
    ///
    /// Only the regular file looked at (`current`, under the lock) is kept: the link
    /// (or the copy's source) must be that file (same device and inode). Another
    /// program that does not take the lock may have removed the document since, or put
    /// a symlink (to a file outside the store, say) or another file at its name; a
    /// link of that would be a backup the writer never saw, and a symlink among the
    /// backups. The write is then refused ([`changed_under_lock`]): nothing written.
    fn link(
        w: &'a Locked,
        plan: &Plan<'_>,
        current: &'a Current,
        unchanged: bool,
    ) -> Result<Option<Aside<'a>>> {
        let (old, meta) = match current {
            Current::File {
                meta,
                seen: Some(old),
            } => (Some(old), meta),
            Current::TooLarge { meta, .. } => (None, meta),
            Current::File { seen: None, .. } | Current::Missing => return Ok(None),
        };
        if unchanged || (plan.backups == 0 && old.is_some_and(|o| o.parses)) {
            return Ok(None);
        }
        let t = &w.target;
        let link = t.temp_name(&random_suffix());
        let method = match w.dir.hard_link(&t.name, &link) {
            Ok(()) => {
                // linkat links a symlink itself, and whatever file is at the name now:
                // look at what the new name holds.
                match w.dir.stat(&link) {
                    Ok(m) if is_same_file(&m, meta) => {}
                    Ok(_) => {
                        let _ = w.dir.remove_file(&link);
                        return Err(changed_under_lock(w));
                    }
                    Err(e) => {
                        let _ = w.dir.remove_file(&link);
                        return Err(Error::io("inspect backup link of", &t.path, e));
                    }
                }
                BackupMethod::Link
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(changed_under_lock(w)),
            // This file system will not link: copy.
            Err(e)
                if matches!(
                    errno(&e),
                    Some(
                        rustix::io::Errno::PERM
                            | rustix::io::Errno::XDEV
                            | rustix::io::Errno::MLINK
                            | rustix::io::Errno::OPNOTSUPP
                    )
                ) =>
            {
                current.refuse_too_large("replace", &t.path)?;
                copy_file(w, meta, plan.durability, &link)?;
                BackupMethod::Copy
            }
            Err(e) => return Err(Error::io("link backup of", &t.path, e)),
        };
        Ok(Some(Aside {
            w,
            name: Some(link),
            old,
            method,
        }))
    }

    /// Step 8: rotate the link into the backups (or keep a corrupt old version once).
    /// The write itself has succeeded: a failure here only shortens the history.
    fn rotate(mut self, keep: usize) -> Option<BackupMade> {
        let t = &self.w.target;
        let dir = self.w.dir.as_ref();
        let link = self.name.take()?;
        let kept = self.old.filter(|o| o.parses);
        let made = if kept.is_some() {
            rotate_in(dir, t, keep, &link, swaps(self.w))
        } else {
            dir.rename(&link, &t.corrupt_name())
                .map(|()| t.corrupt_path())
        };
        match (made, kept) {
            (Ok(path), Some(old)) => Some(BackupMade {
                path,
                version: old.version.clone(),
                method: self.method,
            }),
            (Ok(path), None) => {
                let why = match self.old {
                    Some(_) => "did not parse",
                    None => "was over the size limit",
                };
                tracing::warn!(file = %t.path.display(), kept = %path.display(),
                    "replaced a document that {why}; kept it aside");
                None
            }
            (Err(e), _) => {
                let _ = dir.remove_file(&link);
                tracing::warn!(file = %t.path.display(), error = %e,
                    "could not rotate the backup of the replaced version");
                None
            }
        }
    }
}

impl Drop for Aside<'_> {
    fn drop(&mut self) {
        if let Some(link) = self.name.take() {
            let _ = self.w.dir.remove_file(&link);
        }
    }
}

/// Copy the target to `to` (a temp name) and sync the copy: the backup where the file
/// system refuses hard links. The file copied must be the one looked at (`looked`), as
/// for a link.
fn copy_file(w: &Locked, looked: &Metadata, durability: Durability, to: &OsString) -> Result<()> {
    let t = &w.target;
    let mut src = match file::open(w.dir.as_ref(), &t.name, &t.path) {
        Ok((f, m)) if is_same_file(&m, looked) => f,
        // Removed, or something other than a regular file (a symlink, which is never
        // opened), or another file.
        Ok(_) => return Err(changed_under_lock(w)),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidName) => {
            return Err(changed_under_lock(w));
        }
        Err(e) => return Err(e),
    };
    let mut dst =
        crate::fs::retry(|| w.dir.create_new(to, 0o600)).ctx("create backup copy of", &t.path)?;
    let copied = io::copy(&mut src, &mut dst)
        .ctx("copy backup of", &t.path)
        .and_then(|_| sync_file(dst.as_mut(), durability, &t.path));
    if copied.is_err() {
        let _ = w.dir.remove_file(to);
    }
    copied
}

/// Whether `now` is the regular file `looked` described (same device and inode).
fn is_same_file(now: &Metadata, looked: &Metadata) -> bool {
    now.file_type == FileType::File && (now.dev, now.ino) == (looked.dev, looked.ino)
}

/// The error for a document that is no longer the file its writer looked at under the
/// lock (another program, not taking the lock, removed it or put something else at its
/// name): [`ErrorKind::Conflict`], saying what is there now. Nothing was written.
fn changed_under_lock(w: &Locked) -> Error {
    let t = &w.target;
    let now = match w.dir.stat(&t.name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => "removed it".to_string(),
        Err(_) => "changed it".to_string(),
        Ok(m) if m.file_type == FileType::File => "replaced it with another file".to_string(),
        Ok(m) => format!("replaced it with {}", m.file_type.describe()),
    };
    Error::new(
        ErrorKind::Conflict,
        format!(
            "cannot write {}: another program {now} after this write looked at it under the \
             document's lock (without taking the lock itself), before its old version was \
             kept as a backup; nothing was written, and what is at the name now was left alone",
            t.path.display()
        ),
    )
    .with_path(&t.path)
}

/// Make `from` (a name in the document's directory) the newest backup, `.bak`: shift
/// the older ones up (`.bak` -> `.bak.2` ...), then drop those beyond `keep`, so a
/// setting lowered since earlier writes takes effect. Each rename is atomic and
/// replaces its destination, so a crash in between loses at most one old backup,
/// never the document.
pub(crate) fn rotate_in(
    dir: &dyn FsDir,
    t: &Target,
    keep: usize,
    from: &OsStr,
    swap: bool,
) -> io::Result<PathBuf> {
    // The oldest backup kept, if there are that many, is overwritten below and loses
    // its last name: held across the renames, freeing its blocks happens off this path
    // (as for the document in step 7). A hold that fails changes nothing else.
    let held = dir.hold(&t.backup_name(keep)).ok().flatten();
    let r =
        shift_backups(dir, t, keep).and_then(|()| put_backup(dir, from, &t.backup_name(1), swap));
    if let Some(h) = held {
        crate::fs::release_later(h);
    }
    r?;
    if let Err(e) = prune_backups(dir, t, keep) {
        // The rotation is done; only old history outlives the setting.
        tracing::warn!(file = %t.path.display(), error = %e,
            "could not remove backups beyond the number to keep");
    }
    Ok(t.backup_path(1))
}

/// Whether `w`'s write is in a journal that swaps files in.
fn swaps(w: &Locked) -> bool {
    w.journal.as_ref().is_some_and(|b| b.journal.swap)
}

/// `from` becomes `.bak` (`bak`): renamed over it, or, in a journal that swaps files in
/// (`swap`) and with a `.bak` there, exchanged with it and the older backup (now at
/// `from`) unlinked: renamed over another file, the version kept would be written out
/// at once on ext4, which swapping avoids (see [`Temp::put_in_place`]). The checkpoint
/// syncs it. A directory found at `.bak` is swapped back and the rotation fails.
fn put_backup(dir: &dyn FsDir, from: &OsStr, bak: &OsStr, swap: bool) -> io::Result<()> {
    if !swap {
        return dir.rename(from, bak);
    }
    match dir.exchange(from, bak) {
        Ok(()) => {}
        Err(e) if cannot_exchange(&e) => return dir.rename(from, bak),
        Err(e) => return Err(e),
    }
    match dir.remove_file(from) {
        Err(e)
            if errno(&e) == Some(rustix::io::Errno::ISDIR)
                || dir.stat(from).is_ok_and(|m| m.is_dir()) =>
        {
            match dir.exchange(from, bak) {
                Ok(()) => Err(e),
                // The kept version is `.bak` now; the directory stays under the temp
                // name (recovery reports it, never removes it): say where.
                Err(back) => Err(io::Error::new(
                    e.kind(),
                    format!(
                        "a directory was at {}, and after the swap it could not be put back \
                         ({back}): it is now at {}",
                        bak.display(),
                        from.display()
                    ),
                )),
            }
        }
        // Anything else left at `from` is a temp-named file that recovery removes.
        _ => Ok(()),
    }
}

/// Make room for a new `.bak`: shift `.bak`, `.bak.2` ... up by one, the last one kept
/// (`.bak.{keep}`) being overwritten. Only backups that exist are touched, so a huge
/// `keep` costs nothing.
fn shift_backups(dir: &dyn FsDir, t: &Target, keep: usize) -> io::Result<()> {
    let mut n = 0;
    while n + 1 < keep {
        match dir.stat(&t.backup_name(n + 1)) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    for k in (1..=n).rev() {
        match dir.rename(&t.backup_name(k), &t.backup_name(k + 1)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Remove `.bak.{keep+1}`, `.bak.{keep+2}` ... while they exist: backups an earlier,
/// higher setting kept. The first name that is missing (the usual case) ends it.
fn prune_backups(dir: &dyn FsDir, t: &Target, keep: usize) -> io::Result<()> {
    let mut n = keep.max(1) + 1;
    loop {
        match dir.remove_file(&t.backup_name(n)) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Step 9: make the rename durable.
fn sync_dir(w: &Locked, plan: &Plan<'_>, version: &Version) -> Result<Durability> {
    sync_dir_as(w, plan.durability, plan.poison, version)
}

/// [`sync_dir`] at `durability`, a store's failed sync poisoning `poison`.
fn sync_dir_as(
    w: &Locked,
    durability: Durability,
    poison: Option<&AtomicBool>,
    version: &Version,
) -> Result<Durability> {
    if durability != Durability::Full {
        return Ok(durability);
    }
    if mutants::active(Mutant::NoDirFsync) {
        return Ok(Durability::Full);
    }
    let t = &w.target;
    if let Err(e) = w.dir.sync() {
        if let Some(p) = poison {
            p.store(true, Ordering::SeqCst);
        }
        return Err(Error::new(
            ErrorKind::Durability,
            format!(
                "wrote {} (version {version}), but syncing directory {} failed: the new \
                 version is visible, yet may not survive a power loss",
                t.path.display(),
                t.dir.display()
            ),
        )
        .with_path(&t.path)
        .with_version(version.clone())
        .with_source(e));
    }
    Ok(Durability::Full)
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

/// Step 0's directories: create the missing ones above the target if asked, top down,
/// syncing each into its parent with full durability. Together with the directory sync
/// after the rename, that makes every directory the write created durable.
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

/// Create `dirs` (parents first; each parent canonical), with full durability syncing
/// each into its parent, through the parent's handle.
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
        let (Some(parent), Some(name)) = (d.parent(), d.file_name()) else {
            continue;
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let handle = fs.open_dir(parent).ctx("open directory", parent)?;
        let made = match handle.create_dir(name) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(Error::io("create directory", d, e)),
        };
        if durability == Durability::Full
            && let Err(e) = handle.sync()
        {
            if made {
                let _ = handle.remove_dir(name);
            }
            return Err(Error::io("sync directory", parent, e));
        }
    }
    Ok(())
}
