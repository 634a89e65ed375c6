//! One process's handle on a journal: its open files, the locks between processes (and,
//! in front of each, a mutex between this process's threads), appending, flushing, and
//! the in-flight slots.
//!
//! Locks, all `flock(2)`, each behind an in-process mutex:
//!
//! | lock | file | held |
//! |---|---|---|
//! | append | `journal-shm`, exclusive | while one record is written and the shared state updated (microseconds) |
//! | flush | `journal`, exclusive | while one `fdatasync` of the journal runs |
//! | checkpoint | `journal-ckpt`, exclusive | while one checkpoint runs |
//! | users | `journal-users`, shared | as long as a process has the journal open; exclusive while one recovers it |
//!
//! Order: a document's lock before any of these; checkpoint before flush before append.
//! No one waits for a document's lock while holding the append or flush lock.
//!
//! Every wait for the append, flush or checkpoint lock ends by the caller's lock
//! timeout ([`Options::lock_timeout`](crate::Options::lock_timeout)) with
//! [`ErrorKind::LockTimeout`] naming the lock and its file ([`flock`]): whoever may read
//! these files may `flock(2)` them, and a holder stopped (SIGSTOP, a debugger, a frozen
//! container) would otherwise stop every writer of the tree for good. Each caller
//! states what a timeout leaves behind.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::format::{self, Entry, Header, RecordHeader};
use super::shm::{self, Bloom, Page, Slot};
use super::{CKPT, LOG, SHM, USERS};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::fs::{FsDir, FsRwFile, LockMode};
use crate::lock::{self, HelperSlot, Wait};
use crate::mutants::{self, Mutant};
use crate::options::Options;

/// How long a journal whose users lock is held by others may show a shared state that
/// is not valid before that is called damage: longer than a forked child (which holds
/// its parent's descriptors, and so its locks, until it execs) takes to exec.
const INVALID_GRACE: Duration = Duration::from_secs(1);

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Write all of `buf` at `offset`.
pub(crate) fn write_all_at(f: &dyn FsRwFile, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match f.write_at(buf, offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Read up to `buf.len()` bytes at `offset`; returns how many (fewer at the end).
pub(crate) fn read_full_at(f: &dyn FsRwFile, buf: &mut [u8], mut offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// One of the journal's files as a lock a helper thread can block in (see
/// [`crate::lock::flock_until`]): this process's one descriptor of it, shared by its
/// threads, which take turns behind an in-process lock first.
#[derive(Debug, Clone)]
pub(crate) struct SharedFile {
    file: Arc<dyn FsRwFile>,
    mode: LockMode,
}

impl lock::Flock for SharedFile {
    fn try_lock(&self) -> io::Result<bool> {
        crate::fs::retry(|| self.file.try_lock(self.mode))
    }
    fn lock(&self) -> io::Result<()> {
        crate::fs::retry(|| self.file.lock(self.mode))
    }
    fn unlock(&self) {
        let _ = self.file.unlock();
    }
}

/// Where a helper left blocked in `flock` on one of the journal's files stays for the
/// next waiter of this process to adopt.
pub(crate) type Helpers = Arc<HelperSlot<SharedFile>>;

/// Take the `flock` on `file` (one of the journal's, `what` lock at `path`), waiting as
/// `wait` says. Free: taken at once (one `flock` call, as before there were deadlines).
/// Held: a helper thread blocks in `flock` (the kernel hands it the lock the moment
/// the holder lets go: a writer waiting for another process's flush sees it at once,
/// which polling slept past), while this thread waits for it at most until the
/// deadline. The caller holds the in-process lock that goes with `file` (a mutex, the
/// flush state's `flushing`), so one thread of this process at a time waits here, and a
/// helper a waiter gave up on is adopted by the next (`helpers`).
///
/// # Errors
/// [`ErrorKind::LockTimeout`] naming the lock and `path` when it is not had in time:
/// nothing was done under it. I/O errors of `flock` as `Io`.
pub(crate) fn flock(
    file: &Arc<dyn FsRwFile>,
    helpers: &Helpers,
    mode: LockMode,
    wait: Wait,
    what: &str,
    path: &Path,
) -> Result<()> {
    let shared = SharedFile {
        file: file.clone(),
        mode,
    };
    match lock::flock_until(helpers, shared, wait.deadline) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(lock_timeout(what, path, wait.timeout)),
        Err(e) => Err(Error::io("lock", path, e)),
    }
}

/// [`flock`] only if the lock is free now.
pub(crate) fn try_flock(
    file: &Arc<dyn FsRwFile>,
    helpers: &Helpers,
    mode: LockMode,
    path: &Path,
) -> Result<bool> {
    let shared = SharedFile {
        file: file.clone(),
        mode,
    };
    lock::try_flock(helpers, &shared).map_err(|e| Error::io("lock", path, e))
}

/// The error of a wait for the journal's `what` lock (on `path`) that lasted `timeout`.
pub(crate) fn lock_timeout(what: &str, path: &Path, timeout: Duration) -> Error {
    lock_timeout_as(what, path, timeout, "another process held it")
}

/// [`lock_timeout`] saying who held it.
fn lock_timeout_as(what: &str, path: &Path, timeout: Duration, held: &str) -> Error {
    Error::new(
        ErrorKind::LockTimeout,
        format!(
            "cannot take the journal's {what} lock ({}): {held} for more than {:.1}s",
            path.display(),
            timeout.as_secs_f64()
        ),
    )
    .with_path(path)
}

/// What an error says of a poison that could not be published (see [`Journal::poison`]).
pub(super) fn poison_note(published: &Result<()>) -> String {
    match published {
        Ok(()) => String::new(),
        Err(e) => format!(
            " (it could not be marked so for other processes: {}; they learn it from their \
             own sync)",
            e.message()
        ),
    }
}

/// An appended commit, until its writer has applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub slot: usize,
    pub lsn: u64,
    pub end: u64,
    pub crc: u32,
    /// The shared state's generation when it was appended: a rollback after a failed
    /// flush (which discards unflushed commits) bumps it.
    pub generation: u32,
}

impl Ticket {
    fn of(i: usize, s: &Slot, generation: u32) -> Ticket {
        Ticket {
            slot: i,
            lsn: s.lsn,
            end: s.lsn + s.len,
            crc: s.crc,
            generation,
        }
    }

    /// The commits in flight in `page`.
    pub(super) fn all(page: &Page) -> Vec<Ticket> {
        page.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| Ticket::of(i, s, page.generation)))
            .collect()
    }
}

/// What this process knows of the journal's flushes.
#[derive(Debug, Default)]
struct FlushState {
    /// The journal is durable up to here (as this process last saw), in `generation`.
    flushed: u64,
    generation: u32,
    /// A thread of this process is flushing: wait for it instead of starting another.
    flushing: bool,
}

/// Why an append did not happen.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The journal is being disabled or is disabled: write without it.
    Disabled,
    /// The record can never fit: write without it (one document) or refuse.
    TooLarge,
    Failed(Error),
}

impl From<Error> for AppendError {
    fn from(e: Error) -> Self {
        AppendError::Failed(e)
    }
}

/// One process's handle on the journal of the tree at `root`.
#[derive(Debug)]
pub(crate) struct Journal {
    root: PathBuf,
    /// The journal's path and its shared state's, for messages.
    log_path: PathBuf,
    shm_path: PathBuf,
    /// `.statefile/`.
    pub(super) meta: Box<dyn FsDir>,
    pub(super) log: Arc<dyn FsRwFile>,
    pub(super) shm: Arc<dyn FsRwFile>,
    users: Box<dyn FsRwFile>,
    pub(super) ckpt_file: Arc<dyn FsRwFile>,
    /// A helper left blocked in `flock` on each of the three above by a waiter that
    /// gave up ([`flock`]).
    log_helpers: Helpers,
    shm_helpers: Helpers,
    pub(super) ckpt_helpers: Helpers,
    pub(super) salt: u64,
    /// Commits swap the new file in rather than rename it over the document (the
    /// header's [`format::FLAG_SWAP`]).
    pub(crate) swap: bool,
    pub(super) capacity: u64,
    pub(super) checkpoint_age: Duration,
    append: Mutex<()>,
    flush: Mutex<FlushState>,
    flushed: Condvar,
    pub(super) ckpt: Mutex<()>,
    /// Disabled (or being disabled) as this process last saw: the handle is dropped from
    /// the registry and writers look again.
    gone: AtomicBool,
    /// A sync of the journal failed in this process ([`Journal::poison`]), whether or
    /// not the shared state could be marked so.
    poisoned: AtomicBool,
    /// Documents this handle rewrote from the journal (replays, dead writers' commits),
    /// until a recovery scan reports them.
    pub(super) replayed: Mutex<Vec<(PathBuf, Option<crate::version::Version>)>>,
    /// Records this handle's replays and adoptions left unapplied, and why, until a
    /// recovery scan reports them.
    pub(super) skipped: Mutex<Vec<super::replay::SkippedRecord>>,
}

/// The most replayed or skipped documents a journal handle keeps for the next recovery
/// scan's report.
pub(crate) const MAX_NOTED: usize = 10_000;

impl Journal {
    /// Open the journal at `root` and join its users, recovering it first if this
    /// process is the only one. `None` if it was closed by `disable`.
    pub(crate) fn open(root: &Path, opts: &Options) -> Result<Option<Arc<Journal>>> {
        let meta = super::open_meta_dir(opts.fs.as_ref(), root)?;
        let path = super::shown(root);
        let log = open_file(meta.as_ref(), LOG, &path, false)?;
        let header = read_header(log.as_ref(), &path)?;
        if header.flags & format::FLAG_CLOSED != 0 {
            return Ok(None);
        }
        // Not created here: `enable` makes them before the journal file, and `disable`
        // removes them before it, so a journal file without them is being removed (a
        // process that read its header just before the disable closed it); making them
        // would start a second shared state over a journal about to go.
        let side = |name: &str| {
            let p = root.join(super::META_DIR).join(name);
            match open_file(meta.as_ref(), name, &p, false) {
                Err(e)
                    if e.io_error()
                        .is_some_and(|io| io.kind() == io::ErrorKind::NotFound) =>
                {
                    // Removed by a disable that closed the journal since its header was
                    // read: none. Missing from a journal still open (an enable cut
                    // short by a power loss, a file removed by hand): made again, as a
                    // writer always did before.
                    if read_header(log.as_ref(), &path)?.flags & format::FLAG_CLOSED != 0 {
                        return Ok(None);
                    }
                    open_file(meta.as_ref(), name, &p, true).map(Some)
                }
                r => r.map(Some),
            }
        };
        let (Some(shm), Some(users), Some(ckpt_file)) = (side(SHM)?, side(USERS)?, side(CKPT)?)
        else {
            return Ok(None);
        };
        let j = Arc::new(Journal {
            root: root.to_path_buf(),
            log_path: super::shown(root),
            shm_path: root.join(super::META_DIR).join(SHM),
            shm: shm.into(),
            users,
            ckpt_file: ckpt_file.into(),
            log: log.into(),
            log_helpers: Helpers::default(),
            shm_helpers: Helpers::default(),
            ckpt_helpers: Helpers::default(),
            meta,
            salt: header.salt,
            swap: header.flags & format::FLAG_SWAP != 0,
            capacity: header.capacity,
            checkpoint_age: Duration::from_secs(u64::from(header.checkpoint_age.max(1))),
            append: Mutex::new(()),
            flush: Mutex::new(FlushState::default()),
            flushed: Condvar::new(),
            ckpt: Mutex::new(()),
            gone: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            replayed: Mutex::new(Vec::new()),
            skipped: Mutex::new(Vec::new()),
        });
        // Closed meanwhile (read before the disable's closing header): not used.
        if read_header(j.log.as_ref(), &path)?.flags & format::FLAG_CLOSED != 0 {
            return Ok(None);
        }
        j.join(opts)?;
        j.guard_shared_state(opts);
        Ok(Some(j))
    }

    /// Keep the journal's files readable only by who may write them
    /// ([`super::lockable`]), and `journal-boot` saying this boot once the journal was
    /// replayed in it. Both best effort (a process that does not own the files cannot
    /// change their modes; a reader of another user is then refused, which is safe),
    /// logged.
    ///
    /// `flock(2)` needs only read access, and a process holding the shared state's lock
    /// or the journal's fails every commit in the tree (`LockTimeout`). Journals enabled by statefile
    /// before this rule had a shared state readable by everyone (and any journal could
    /// be enabled readable by others): their modes are narrowed here. That does not take
    /// back a descriptor opened before; `journal disable` then `enable` does.
    /// `journal-boot` tells readers of other users instead (see [`super::boot`]).
    fn guard_shared_state(&self, opts: &Options) {
        let dir = self.root.join(super::META_DIR);
        let want = match self.log.metadata().ctx("inspect", self.path()) {
            Ok(m) => super::lockable(m.mode),
            Err(e) => {
                tracing::warn!(journal = %self.path().display(), error = %e,
                    "could not check the modes of the journal's files, nor write journal-boot");
                return;
            }
        };
        let narrowed = (|| -> Result<()> {
            for name in [LOG, SHM, USERS, CKPT] {
                let path = dir.join(name);
                let mut f = crate::fs::retry(|| self.meta.open_read(std::ffi::OsStr::new(name)))
                    .ctx("open", &path)?;
                let m = f.metadata().ctx("inspect", &path)?;
                super::check_regular(&path, &m)?;
                let mode = m.mode & 0o7777;
                if mode & !want != 0 {
                    f.set_mode(mode & want).ctx("set mode of", &path)?;
                    tracing::info!(file = %path.display(), "a journal file was readable by users who may not write the journal (who could hold its lock): narrowed");
                }
            }
            Ok(())
        })();
        if let Err(e) = narrowed {
            tracing::warn!(journal = %self.path().display(), error = %e,
                "could not narrow the modes of the journal's files: users who may read them but not write them can stop the tree's writers");
        }
        let published = (|| -> Result<()> {
            let Some(boot) = opts.fs.boot_id() else {
                return Ok(());
            };
            let page = self.with_append_lock(Wait::new(opts.lock_timeout), || self.page())?;
            let closing = shm::FLAG_DAMAGED | shm::FLAG_DISABLING | shm::FLAG_DISABLED;
            if page.boot != boot || page.flags & closing != 0 || self.is_gone() {
                return Ok(());
            }
            let marker = super::boot::Marker {
                salt: self.salt,
                boot,
            };
            let mut now = Vec::new();
            let boot_path = dir.join(super::BOOT);
            let read = super::read::read_prefix(
                self.meta.as_ref(),
                super::BOOT,
                &boot_path,
                super::boot::LEN,
                &mut now,
            );
            if read.is_ok() && super::boot::Marker::decode(&now) == Some(marker) {
                return Ok(());
            }
            super::boot::publish(self.meta.as_ref(), &self.root, want, marker).map(drop)
        })();
        if let Err(e) = published {
            tracing::warn!(journal = %self.path().display(), error = %e,
                "could not write journal-boot: readers who may not open the journal are refused until it is written");
        }
    }

    /// A handle for reading only (status): the journal's files opened, no lock taken,
    /// nothing recovered.
    pub(super) fn reader(
        root: &Path,
        meta: Box<dyn FsDir>,
        log: Box<dyn FsRwFile>,
        header: &Header,
    ) -> Result<Journal> {
        let side = |name: &str| {
            let p = root.join(super::META_DIR).join(name);
            open_file(meta.as_ref(), name, &p, false)
        };
        Ok(Journal {
            root: root.to_path_buf(),
            log_path: super::shown(root),
            shm_path: root.join(super::META_DIR).join(SHM),
            shm: side(SHM)?.into(),
            users: side(USERS)?,
            ckpt_file: side(CKPT)?.into(),
            log: log.into(),
            log_helpers: Helpers::default(),
            shm_helpers: Helpers::default(),
            ckpt_helpers: Helpers::default(),
            meta,
            salt: header.salt,
            swap: header.flags & format::FLAG_SWAP != 0,
            capacity: header.capacity,
            checkpoint_age: Duration::from_secs(u64::from(header.checkpoint_age.max(1))),
            append: Mutex::new(()),
            flush: Mutex::new(FlushState::default()),
            flushed: Condvar::new(),
            ckpt: Mutex::new(()),
            gone: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            replayed: Mutex::new(Vec::new()),
            skipped: Mutex::new(Vec::new()),
        })
    }

    /// The directory holding `.statefile/`.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The journal's path (for messages; made once, not at every use).
    pub(crate) fn path(&self) -> &Path {
        &self.log_path
    }

    pub(super) fn shm_path(&self) -> &Path {
        &self.shm_path
    }

    /// The documents rewritten from the journal since the last call.
    pub(crate) fn take_replayed(&self) -> Vec<(PathBuf, Option<crate::version::Version>)> {
        std::mem::take(&mut *guard(&self.replayed))
    }

    /// The records left unapplied since the last call.
    pub(crate) fn take_skipped(&self) -> Vec<super::replay::SkippedRecord> {
        std::mem::take(&mut *guard(&self.skipped))
    }

    /// A record left unapplied: logged, and kept for the next recovery scan's report
    /// (at most [`MAX_NOTED`] of them: a long-lived process that never runs one must
    /// not grow without bound; what is over is only logged).
    pub(super) fn note_skipped(&self, skipped: super::replay::SkippedRecord) {
        tracing::warn!(file = %skipped.path.display(), reason = %skipped.reason,
            "a journal record was not applied to the document it names; skipped");
        let mut kept = guard(&self.skipped);
        if kept.len() < MAX_NOTED {
            kept.push(skipped);
        }
    }

    /// A document rewritten from the journal (`None`: deleted), kept for the next
    /// recovery scan's report, at most [`MAX_NOTED`] (each is logged).
    pub(super) fn note_replayed(&self, path: PathBuf, version: Option<crate::version::Version>) {
        let mut kept = guard(&self.replayed);
        if kept.len() < MAX_NOTED {
            kept.push((path, version));
        }
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    pub(super) fn set_gone(&self) {
        self.gone.store(true, Ordering::SeqCst);
    }

    /// Take the users lock shared. Whoever gets it exclusive first (no other process has
    /// the journal open) recovers the journal: after a reboot, from the journal itself;
    /// after process crashes, from the shared state's in-flight slots.
    fn join(&self, opts: &Options) -> Result<()> {
        let path = self.root.join(super::META_DIR).join(USERS);
        let start = Instant::now();
        // Waiting for another process's recovery may take longer than a lock timeout.
        let deadline = crate::lock::deadline(start, opts.lock_timeout.max(Duration::from_secs(60)));
        let mut backoff = Duration::from_micros(100);
        // When the shared state was first found not valid while others held the lock.
        let mut invalid_since: Option<Instant> = None;
        loop {
            if crate::fs::retry(|| self.users.try_lock(LockMode::Exclusive)).ctx("lock", &path)? {
                let recovered = self.recover_alone(opts);
                // Converting to shared releases first: another process may take it
                // exclusive in between and recover again (harmless), then we retry.
                let shared = crate::fs::retry(|| self.users.try_lock(LockMode::Shared))
                    .ctx("lock", &path)?;
                recovered?;
                if shared {
                    return Ok(());
                }
            } else if crate::fs::retry(|| self.users.try_lock(LockMode::Shared))
                .ctx("lock", &path)?
            {
                // Others use it: its shared state is valid (whoever was first built it).
                // Unless what holds the lock is no user: a child another thread of some
                // process forked holds that process's descriptors (the lock among them)
                // until it execs, so a journal nobody uses can look used for a moment.
                // Let go and try again; only a state still not valid after
                // INVALID_GRACE is damage.
                if self.read_page()?.is_some() {
                    return Ok(());
                }
                let since = *invalid_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= INVALID_GRACE {
                    return Err(self.damaged_state());
                }
                self.users.unlock().ctx("unlock", &path)?;
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::LockTimeout,
                    format!(
                        "cannot open the journal {}: another process has been recovering it for {:.0}s",
                        self.path().display(),
                        start.elapsed().as_secs_f64()
                    ),
                )
                .with_path(&path));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(10));
        }
    }

    pub(super) fn damaged_state(&self) -> Error {
        Error::new(
            ErrorKind::Io,
            format!(
                "the journal's shared state {} is not valid although other processes use the \
                 journal: was .statefile/ changed by hand? Stop every writer and run `statefile recover`",
                self.shm_path().display()
            ),
        )
        .with_path(self.shm_path())
    }

    /// Page 0 of the shared state, if valid and this journal's.
    pub(super) fn read_page(&self) -> Result<Option<Page>> {
        let mut b = [0u8; shm::PAGE];
        let n = read_full_at(self.shm.as_ref(), &mut b, 0).ctx("read", self.shm_path())?;
        if n < shm::PAGE {
            return Ok(None);
        }
        Ok(Page::decode(&b).filter(|p| p.salt == self.salt))
    }

    /// Page 0, which must be valid (a process holding the users lock shared may rely on it).
    pub(super) fn page(&self) -> Result<Page> {
        self.read_page()?.ok_or_else(|| self.damaged_state())
    }

    pub(super) fn write_page(&self, page: &Page, upto: Option<usize>) -> Result<()> {
        write_all_at(self.shm.as_ref(), &page.encode(upto), 0).ctx("write", self.shm_path())
    }

    pub(super) fn write_slot(&self, page: &Page, i: usize) -> Result<()> {
        let (at, bytes) = page.slot_bytes(i);
        write_all_at(self.shm.as_ref(), &bytes, at).ctx("write", self.shm_path())
    }

    /// The flushed LSN in page 1 and the chain value there ((0, 0) if it is not this
    /// journal's).
    pub(super) fn read_flushed(&self) -> Result<(u64, u32)> {
        let mut b = [0u8; 20];
        let n = read_full_at(self.shm.as_ref(), &mut b, shm::FLUSH_PAGE)
            .ctx("read", self.shm_path())?;
        Ok(if n == b.len() {
            shm::decode_flushed(&b, self.salt).unwrap_or((0, 0))
        } else {
            (0, 0)
        })
    }

    pub(super) fn write_flushed(&self, flushed: u64, chain: u32) -> Result<()> {
        write_all_at(
            self.shm.as_ref(),
            &shm::encode_flushed(flushed, chain, self.salt),
            shm::FLUSH_PAGE,
        )
        .ctx("write", self.shm_path())
    }

    /// The index of the newest valid header copy (0 if none), and the copies.
    pub(super) fn header_copies(&self) -> Result<(usize, [Option<Header>; 2])> {
        let path = self.path();
        let mut copies = [None, None];
        for (i, at) in format::HEADER_COPIES.iter().enumerate() {
            let mut b = [0u8; format::HEADER_LEN];
            let n = read_full_at(self.log.as_ref(), &mut b, *at).ctx("read", path)?;
            copies[i] = Header::decode(&b[..n]);
        }
        let newest = Header::newest(copies[0], copies[1]).map_or(0, |(i, _)| i);
        Ok((newest, copies))
    }

    /// Write the newest header copy again, as it reads, over itself, and sync.
    fn rewrite_newest_header(&self) -> Result<()> {
        let path = self.path();
        let (_, copies) = self.header_copies()?;
        let Some((i, h)) = Header::newest(copies[0], copies[1]) else {
            return Ok(());
        };
        write_all_at(self.log.as_ref(), &h.encode(), format::HEADER_COPIES[i])
            .ctx("write", path)?;
        self.log.sync_data().ctx("sync", path)
    }

    /// After a failed flush: roll the journal's end back to what is known durable,
    /// discarding the commits after it (their writers were told they failed, and none
    /// was applied: a commit is applied only after its flush), and clear the poison.
    /// Under the flush and append locks, each waited for at most `timeout`: a timeout
    /// changes nothing.
    pub(super) fn roll_back_poison(&self, timeout: Duration) -> Result<bool> {
        // This process's turn at the flush lock first, as a flush takes it: the lock
        // is the one descriptor's, which a flush of another thread may hold.
        let wait = Wait::new(timeout);
        {
            let mut st = guard(&self.flush);
            while st.flushing {
                let now = Instant::now();
                if now >= wait.deadline {
                    return Err(lock_timeout_as(
                        "flush",
                        self.path(),
                        timeout,
                        "another thread of this process held it (flushing, or waiting for \
                         another process's flush)",
                    ));
                }
                st = self
                    .flushed
                    .wait_timeout(st, wait.deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            st.flushing = true;
        }
        let r = self.roll_back_poison_locked(wait);
        guard(&self.flush).flushing = false;
        self.flushed.notify_all();
        r
    }

    /// [`Journal::roll_back_poison`] with this process's turn at the flush lock.
    fn roll_back_poison_locked(&self, wait: Wait) -> Result<bool> {
        let path = self.path();
        self.flush_lock(wait)?;
        let r = self.with_append_lock(Wait::new(wait.timeout), || {
            let mut page = self.page()?;
            if !self.is_poisoned(&page) {
                return Ok(false);
            }
            let (flushed, chain) = self.read_flushed()?;
            let flushed = flushed.max(page.tail);
            let chain = if flushed == page.tail {
                read_header(self.log.as_ref(), path)?.tail_chain
            } else {
                chain
            };
            for s in page.slots.iter_mut() {
                if s.is_some_and(|s| s.lsn >= flushed) {
                    *s = None;
                }
            }
            // A header whose sync failed twice (see `write_header_copy`) may read as the
            // newest copy through the cache while the disk holds its older bytes: the
            // next header would go over the other copy, the newest durable one. Written
            // again as it reads, and synced, it is what the disk holds; else the journal
            // stays poisoned.
            self.rewrite_newest_header()?;
            tracing::warn!(journal = %path.display(), from = page.end, to = flushed,
                "rolled the journal back to its last successful flush");
            page.end = flushed;
            page.chain = chain;
            page.generation = page.generation.wrapping_add(1);
            page.flags &= !shm::FLAG_POISONED;
            self.write_page(&page, None)?;
            self.poisoned.store(false, Ordering::SeqCst);
            Ok(true)
        });
        let _ = self.log.unlock();
        r
    }

    /// Run `f` under the append lock (this process's threads first take turns), waited
    /// for as `wait` says: [`ErrorKind::LockTimeout`] without running `f` if it is not
    /// had in time. A thread of this process waiting for the in-process turn waits
    /// behind one whose own wait is so bounded, and whose `f` is short (reads and
    /// writes of the shared state, an append's record).
    pub(super) fn with_append_lock<R>(
        &self,
        wait: Wait,
        f: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        let _in = guard(&self.append);
        flock(
            &self.shm,
            &self.shm_helpers,
            LockMode::Exclusive,
            wait,
            "append",
            self.shm_path(),
        )?;
        let r = f();
        let _ = self.shm.unlock();
        r
    }

    /// Take the flush lock (the `flock` of the journal file), waited for as `wait`
    /// says. The caller is this process's only thread taking it (the flush state's
    /// `flushing`, or a recovery alone), and unlocks it.
    fn flush_lock(&self, wait: Wait) -> Result<()> {
        flock(
            &self.log,
            &self.log_helpers,
            LockMode::Exclusive,
            wait,
            "flush",
            self.path(),
        )
    }

    /// The position of a record at `lsn` in the file.
    pub(super) fn offset(&self, lsn: u64) -> u64 {
        format::RING_START + lsn % self.capacity
    }

    /// The largest record a single write may append (larger documents are written
    /// without the journal).
    pub(crate) fn max_record(&self) -> u64 {
        self.capacity / 4
    }

    /// The largest record a transaction may append.
    pub(crate) fn max_transaction(&self) -> u64 {
        self.capacity / 2
    }

    /// Append one commit record for `entries` (documents named `names`, whose locks the
    /// caller holds and has settled), claiming an in-flight slot. Nothing is durable yet:
    /// see [`Journal::flush_to`]. When the ring is full, a checkpoint runs first.
    ///
    /// `reserve` bytes of the ring are left free after the record (when the ring has
    /// them, a checkpoint runs first otherwise): room for the record that would withdraw
    /// it ([`Journal::replace_in_flight`]), which must not need a checkpoint of its own.
    ///
    /// Every wait here (the append lock, a stuck flush lock, a slot, a checkpoint's
    /// locks) ends by `opts.lock_timeout` with [`ErrorKind::LockTimeout`] (or
    /// `NoSpace` for a ring a checkpoint could not free), nothing appended.
    pub(crate) fn append(
        &self,
        opts: &Options,
        entries: &[Entry],
        names: &[&[u8]],
        (limit, reserve): (u64, u64),
    ) -> std::result::Result<Ticket, AppendError> {
        let len = format::record_len(entries);
        if len > limit {
            return Err(AppendError::TooLarge);
        }
        let mut bloom = Bloom::default();
        for n in names {
            bloom.add(n);
        }
        let wait = Wait::new(opts.lock_timeout);
        let deadline = wait.deadline;
        let path = self.path();
        if opts.durability != crate::options::Durability::None {
            self.wait_for_stuck_flush_lock(wait)?;
        }
        let mut waited_for_slot = Duration::from_micros(50);
        let mut freed_nothing_late = false;
        loop {
            enum Next {
                Done(Ticket),
                Full,
                NoSlot,
                Disabled,
            }
            let next = self.with_append_lock(wait, || {
                let mut page = self.page()?;
                if page.flags & (shm::FLAG_DISABLING | shm::FLAG_DISABLED) != 0 {
                    return Ok(Next::Disabled);
                }
                self.refuse_if_unwritable(&page)?;
                if !self.has_room(&page, len, reserve) {
                    return Ok(Next::Full);
                }
                let Some(slot) = page.free_slot() else {
                    return Ok(Next::NoSlot);
                };
                let (lsn, crc) = self.place_record(&mut page, len, entries)?;
                page.slots[slot] = Some(Slot {
                    lsn,
                    len,
                    crc,
                    pid: std::process::id(),
                    names: bloom,
                });
                // One write within one page: a process killed here leaves all or nothing.
                self.write_page(&page, Some(slot))?;
                Ok(Next::Done(Ticket {
                    slot,
                    lsn,
                    end: lsn + len,
                    crc,
                    generation: page.generation,
                }))
            })?;
            match next {
                Next::Done(t) => return Ok(t),
                Next::Disabled => return Err(AppendError::Disabled),
                Next::Full => {
                    // Safe while holding document locks: the checkpoint waits only for
                    // locks of commits already appended, whose writers need none of ours.
                    // Past the deadline with a checkpoint that freed nothing: one more
                    // look (another's checkpoint may have made room meanwhile), then
                    // NoSpace.
                    if freed_nothing_late {
                        return Err(AppendError::Failed(Error::new(
                            ErrorKind::NoSpace,
                            format!(
                                "the journal {} is full and a checkpoint freed nothing: \
                                 enable it with a larger --size",
                                path.display()
                            ),
                        )));
                    }
                    let report = self.checkpoint_until(opts, deadline)?;
                    freed_nothing_late = report.freed == 0 && Instant::now() >= deadline;
                }
                Next::NoSlot => {
                    // Every slot is taken by a commit in flight: they finish within
                    // microseconds, unless their writers died (then adopt them).
                    if Instant::now() >= deadline {
                        return Err(AppendError::Failed(Error::new(
                            ErrorKind::LockTimeout,
                            format!(
                                "the journal {} has {} commits in flight and none finished in time",
                                path.display(),
                                shm::SLOTS
                            ),
                        )));
                    }
                    self.adopt_dead(opts, true)?;
                    std::thread::sleep(waited_for_slot);
                    waited_for_slot = (waited_for_slot * 2).min(Duration::from_millis(5));
                }
            }
        }
    }

    /// Before an append: if this process gave up on the flush lock and the helper it
    /// left blocked in `flock` has not had it yet (someone else has held it for longer
    /// than a lock timeout, and holds it still), wait here for it to be let go, at most
    /// until `wait`'s deadline. A timeout here is [`ErrorKind::LockTimeout`] with nothing
    /// appended, where a record appended now would wait for the flush lock after the
    /// fact and fail `Durability` (its fate unknown, see [`Journal::flush`]): only the
    /// commits under way when the lock got stuck get that answer. Polled (it is a rare
    /// state: the first waiter found the lock held for a whole lock timeout); one check
    /// of an uncontended mutex otherwise.
    fn wait_for_stuck_flush_lock(&self, wait: Wait) -> Result<()> {
        let mut backoff = Duration::from_micros(100);
        while lock::helper_given_up(&self.log_helpers) {
            let now = Instant::now();
            if now >= wait.deadline {
                return Err(lock_timeout("flush", self.path(), wait.timeout));
            }
            std::thread::sleep(backoff.min(wait.deadline - now));
            backoff = (backoff * 2).min(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Refuse to append to a journal that is poisoned (a flush failed) or damaged
    /// before its end.
    fn refuse_if_unwritable(&self, page: &Page) -> Result<()> {
        if self.is_poisoned(page) {
            return Err(self.poisoned_error());
        }
        if page.flags & shm::FLAG_DAMAGED != 0 {
            // Appending at the end found would overwrite the valid records after the
            // damage, which may be all that holds their documents.
            let path = self.path();
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the journal {} is damaged before its end: refusing to write in its \
                     tree (`statefile verify` shows where; a person decides)",
                    path.display()
                ),
            )
            .with_path(path));
        }
        Ok(())
    }

    /// Whether the ring, as `page` says, has room for a record of `len` bytes at its end
    /// (skipping to the ring's start if it does not fit before it) and `reserve` bytes
    /// after it (counted as if they too might have to skip).
    fn has_room(&self, page: &Page, len: u64, reserve: u64) -> bool {
        let lsn = page.end;
        let room = self.capacity - lsn % self.capacity;
        let skip = if room < len { room } else { 0 };
        lsn + skip + len + 2 * reserve - page.tail <= self.capacity
    }

    /// Write a record of `entries` (`len` bytes) at the end of the ring `page` describes
    /// (after a wrap record if it does not fit before the ring's end), and advance the
    /// page's end and chain. Under the append lock; the caller has checked the room.
    /// Returns the record's LSN and checksum.
    fn place_record(&self, page: &mut Page, len: u64, entries: &[Entry]) -> Result<(u64, u32)> {
        let path = self.path();
        let mut lsn = page.end;
        let room = self.capacity - lsn % self.capacity;
        let skip = if room < len { room } else { 0 };
        let flushed_before = {
            let st = guard(&self.flush);
            if st.generation == page.generation {
                st.flushed.min(page.end)
            } else {
                0
            }
        };
        let mut chain = page.chain;
        if skip > 0 {
            if skip >= format::RECORD_HEADER {
                let (w, crc) = format::encode_wrap(self.salt, lsn, flushed_before, chain);
                write_all_at(self.log.as_ref(), &w, self.offset(lsn)).ctx("write", path)?;
                chain = crc;
            }
            lsn += skip;
        }
        let (bytes, crc) = format::encode_commit(self.salt, lsn, flushed_before, chain, entries);
        write_all_at(self.log.as_ref(), &bytes, self.offset(lsn)).ctx("write", path)?;
        page.end = lsn + len;
        page.chain = crc;
        Ok((lsn, crc))
    }

    /// Withdraw the commit `t` in flight: append a record of `entries` that cancels it
    /// for its documents (`names`), and put that record in `t`'s slot in the same write
    /// of the shared state, so that nothing ever sees `t` in flight without it or one
    /// of the two freed without the other. Allowed while the journal is being disabled
    /// (a disable waits for `t`'s writer, and must find the cancelling record); never
    /// runs a checkpoint (which would wait for the locks this writer holds): the room was
    /// reserved by `t`'s append, and if writers since took it, this fails. Nothing is
    /// durable until the returned ticket is flushed. The append lock is waited for at
    /// most `timeout`: a timeout appends nothing, and leaves `t` in flight as it was.
    pub(crate) fn replace_in_flight(
        &self,
        t: &Ticket,
        entries: &[Entry],
        names: &[&[u8]],
        timeout: Duration,
    ) -> Result<Ticket> {
        let len = format::record_len(entries);
        let mut bloom = Bloom::default();
        for n in names {
            bloom.add(n);
        }
        let path = self.path();
        self.with_append_lock(Wait::new(timeout), || {
            let mut page = self.page()?;
            if page.flags & shm::FLAG_DISABLED != 0 {
                return Err(Error::new(
                    ErrorKind::Durability,
                    format!("the journal {} was disabled", path.display()),
                ));
            }
            self.refuse_if_unwritable(&page)?;
            if page.generation != t.generation
                || !page.slots[t.slot].is_some_and(|s| s.lsn == t.lsn && s.crc == t.crc)
            {
                return Err(Error::new(
                    ErrorKind::Durability,
                    format!(
                        "the commit is no longer in flight in the journal {}",
                        path.display()
                    ),
                ));
            }
            if !self.has_room(&page, len, 0) {
                return Err(Error::new(
                    ErrorKind::NoSpace,
                    format!(
                        "the journal {} has no room left to withdraw a commit",
                        path.display()
                    ),
                ));
            }
            let (lsn, crc) = self.place_record(&mut page, len, entries)?;
            page.slots[t.slot] = Some(Slot {
                lsn,
                len,
                crc,
                pid: std::process::id(),
                names: bloom,
            });
            self.write_page(&page, Some(t.slot))?;
            Ok(Ticket {
                slot: t.slot,
                lsn,
                end: lsn + len,
                crc,
                generation: page.generation,
            })
        })
        .map_err(|e| e.with_path(path))
    }

    pub(super) fn poisoned_error(&self) -> Error {
        Error::new(
            ErrorKind::Durability,
            format!(
                "refusing to write: a sync of the journal {} failed (a flush of its records \
                 or a write of its header), so what it holds on disk is unknown; stop every \
                 writer and run `statefile recover`",
                self.path().display()
            ),
        )
        .with_path(self.path())
    }

    /// Start writing `t`'s record out to the device without waiting
    /// ([`crate::fs::FsRwFile::start_writeback`]), so that the writer's
    /// [`flush`](Journal::flush) after its other work finds it on its way. Nothing is
    /// durable before that flush returns.
    pub(crate) fn start_flush(&self, t: &Ticket) {
        self.log.start_writeback(self.offset(t.lsn), t.end - t.lsn);
    }

    /// Make the journal durable up to `t`'s end. A flush by anyone (a thread of this
    /// process, another process) that already covered it is enough; otherwise one
    /// fdatasync covers every record appended so far, and its reach is published for
    /// the others. A failed flush is final: the journal is poisoned for every process,
    /// never flushed again as if the data were safe, until a recovery rolls its end back
    /// to what is known durable (the commits after it were never acknowledged).
    ///
    /// Any failure is [`ErrorKind::Durability`]: the record of `t` is appended, and
    /// another writer's flush may have made it durable, so the next writer of its
    /// documents (which adopts a commit left in flight) or a recovery may apply it; a
    /// caller must not read "nothing written" into a lock's or a read's own error kind.
    /// That includes a flush lock not had within `timeout` (the caller's lock timeout):
    /// its holder, once it goes on, flushes every record appended so far, this one
    /// included.
    pub(crate) fn flush(&self, t: &Ticket, timeout: Duration) -> Result<()> {
        self.flush_to(t.end, t.generation, Wait::new(timeout))
            .map_err(|e| self.flush_failed(e))
    }

    /// The error of a failed flush for the writer of the commit it was for: see
    /// [`Journal::flush`].
    pub(super) fn flush_failed(&self, e: Error) -> Error {
        {
            if e.kind() == ErrorKind::Durability {
                return e;
            }
            let path = e.path().unwrap_or_else(|| self.path()).to_path_buf();
            Error::new(
                ErrorKind::Durability,
                format!(
                    "{} (the commit is in the journal, whose flush did not complete: it may \
                     or may not survive, and the next writer of its documents or a recovery \
                     may apply it)",
                    e.message()
                ),
            )
            .with_path(&path)
            .with_source(e)
        }
    }

    /// Make the journal durable up to `target` (in `generation`): see
    /// [`Journal::flush`]. Waits for another thread's flush, then for the flush lock,
    /// until `wait`'s deadline: [`ErrorKind::LockTimeout`] then, nothing flushed here.
    pub(super) fn flush_to(&self, target: u64, generation: u32, wait: Wait) -> Result<()> {
        {
            let mut st = guard(&self.flush);
            loop {
                if st.generation == generation && st.flushed >= target {
                    return Ok(());
                }
                if !st.flushing {
                    st.flushing = true;
                    break;
                }
                let now = Instant::now();
                if now >= wait.deadline {
                    return Err(lock_timeout_as(
                        "flush",
                        self.path(),
                        wait.timeout,
                        "another thread of this process held it (flushing, or waiting for \
                         another process's flush)",
                    ));
                }
                st = self
                    .flushed
                    .wait_timeout(st, wait.deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        let r = self.flush_across_processes(target, generation, wait);
        let mut st = guard(&self.flush);
        st.flushing = false;
        if let Ok(f) = r {
            if st.generation != generation {
                st.generation = generation;
                st.flushed = 0;
            }
            st.flushed = st.flushed.max(f);
        }
        drop(st);
        self.flushed.notify_all();
        r.map(|_| ())
    }

    fn flush_across_processes(&self, target: u64, generation: u32, wait: Wait) -> Result<u64> {
        let path = self.path();
        self.flush_lock(wait)?;
        let r = (|| {
            // Without the append lock first: the poison flag and the generation change
            // only under the flush lock, which is ours; appends may change the end
            // meanwhile, but the page's head is checksummed, so a read torn by one fails
            // to decode and is made again under the lock; and an end read here was
            // written after its records (records first, under the append lock), so the
            // flush below covers them.
            let page = match self.read_page()? {
                Some(page) => page,
                None => self.with_append_lock(Wait::new(wait.timeout), || self.page())?,
            };
            if self.is_poisoned(&page) {
                return Err(self.poisoned_error());
            }
            if page.generation != generation {
                return Err(Error::new(
                    ErrorKind::Durability,
                    format!(
                        "a flush of the journal {} failed while this commit waited for it: \
                         it was discarded, not written",
                        path.display()
                    ),
                )
                .with_path(path));
            }
            let (flushed, _) = self.read_flushed()?;
            if flushed >= target {
                return Ok(flushed);
            }
            crate::fs::release_now();
            if !mutants::active(Mutant::NoJournalFlush)
                && let Err(e) = self.log.sync_data()
            {
                let published = self.poison(wait.timeout);
                return Err(Error::new(
                    ErrorKind::Durability,
                    format!(
                        "syncing the journal {} failed ({e}): this write may or may not survive \
                         a power loss, and the journal refuses further writes until the store \
                         is opened again{}",
                        path.display(),
                        poison_note(&published)
                    ),
                )
                .with_path(path)
                .with_source(e));
            }
            self.write_flushed(page.end, page.chain)?;
            Ok(page.end)
        })();
        let _ = self.log.unlock();
        r
    }

    /// Mark the journal poisoned: this process refuses to append, flush or write a
    /// header from now on, and so does every process once the shared state says so.
    ///
    /// The shared state is written under the append lock, which this waits for at most
    /// `timeout` like any other wait: the one call that found the failed sync reports
    /// `Durability` within its bound even where another process holds that lock
    /// forever. What then goes unpublished (logged, and said in that error) is covered
    /// thus: this process is poisoned in memory all the same; other processes cannot
    /// append either (the lock they would need is the one held); a flush elsewhere
    /// reads the same failed write-back as an error of its own if it has the journal
    /// open since before it (Linux reports a write-back error to every open file
    /// description then open), and is poisoned by it. Left uncovered: a process that
    /// opened the journal after the failure and flushes before anyone poisons the
    /// shared state; `statefile recover` (or the next process alone) rolls the journal
    /// back to its last good flush in any case.
    pub(super) fn poison(&self, timeout: Duration) -> Result<()> {
        self.poisoned.store(true, Ordering::SeqCst);
        let r = self.with_append_lock(Wait::new(timeout), || {
            let mut page = self.page()?;
            page.flags |= shm::FLAG_POISONED;
            self.write_page(&page, Some(0))
        });
        if let Err(e) = &r {
            tracing::error!(journal = %self.path().display(), error = %e,
                "a sync of the journal failed and the shared state could not be marked poisoned: \
                 this process refuses to write; other processes learn it from their own sync");
        }
        r
    }

    /// Whether this process saw the journal poisoned, or the shared state `page` says so.
    pub(super) fn is_poisoned(&self, page: &Page) -> bool {
        page.flags & shm::FLAG_POISONED != 0 || self.poisoned.load(Ordering::SeqCst)
    }

    /// The writer of `t` has applied it: free its slot, and if a checkpoint is due,
    /// have `after` run one once the document's lock is released. A failure here is
    /// logged, not returned: the commit is durable and applied; a slot left behind is
    /// freed by the next writer of the document, finding nothing to do.
    pub(crate) fn finished(&self, t: &Ticket, after: &super::AfterUnlock, opts: &Options) {
        let r = self
            .finish(t, opts.lock_timeout)
            .map(|page| self.checkpoint_due(&page));
        match r {
            Ok(true) => after.set(self, opts),
            Ok(false) => {}
            Err(e) => tracing::warn!(journal = %self.path().display(), error = %e,
                "could not free a finished commit's slot"),
        }
    }

    /// The commit of `t` is applied: free its slot. Returns the shared state as it
    /// left it. The append lock is waited for at most `timeout`: a timeout leaves the
    /// slot in flight, which the next writer of its documents frees (finding its
    /// commit applied already, it applies nothing).
    pub(crate) fn finish(&self, t: &Ticket, timeout: Duration) -> Result<Page> {
        self.with_append_lock(Wait::new(timeout), || {
            let mut page = self.page()?;
            if page.slots[t.slot].is_some_and(|s| s.lsn == t.lsn && s.crc == t.crc) {
                page.slots[t.slot] = None;
                self.write_slot(&page, t.slot)?;
            }
            Ok(page)
        })
    }

    /// Whether a checkpoint is due, the shared state being `page`: the ring is more than
    /// half full, or the last checkpoint is older than the age bound.
    pub(crate) fn checkpoint_due(&self, page: &Page) -> bool {
        let used = page.end - page.tail;
        let old = now_unix().saturating_sub(page.checkpoint_unix) > self.checkpoint_age.as_secs();
        used > self.capacity / 2 || (used > 0 && old)
    }

    /// Read the header and metadata of the commit record at `lsn`, if one is there with
    /// checksum `crc` (or any valid checksum, for `None`).
    pub(super) fn read_record_meta(
        &self,
        lsn: u64,
        crc: Option<u32>,
    ) -> Result<Option<(RecordHeader, Vec<format::EntryMeta>)>> {
        let path = self.path();
        let mut raw = [0u8; format::RECORD_HEADER as usize];
        let n = read_full_at(self.log.as_ref(), &mut raw, self.offset(lsn)).ctx("read", path)?;
        let Some(h) = RecordHeader::parse(&raw[..n], self.capacity) else {
            return Ok(None);
        };
        if h.lsn != lsn || h.kind != format::KIND_COMMIT || crc.is_some_and(|c| c != h.crc) {
            return Ok(None);
        }
        let mut meta = vec![0u8; h.meta_len as usize];
        let n = read_full_at(
            self.log.as_ref(),
            &mut meta,
            self.offset(lsn) + format::RECORD_HEADER,
        )
        .ctx("read", path)?;
        if n < meta.len() || !h.check(&raw, &meta, self.salt) {
            return Ok(None);
        }
        Ok(format::parse_meta(&meta, h.len).map(|m| (h, m)))
    }

    /// Read `len` bytes of a record's data at `at` (from the record's start).
    pub(super) fn read_data(&self, lsn: u64, at: u64, len: u64) -> Result<Vec<u8>> {
        let path = self.path();
        let mut buf = Vec::new();
        crate::fs::reserve_for(&mut buf, len).ctx("read", path)?;
        buf.resize(len as usize, 0);
        let n =
            read_full_at(self.log.as_ref(), &mut buf, self.offset(lsn) + at).ctx("read", path)?;
        if n < buf.len() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("the journal {} ends inside a record", path.display()),
            ));
        }
        Ok(buf)
    }

    /// The first in-flight commit of a writer that is gone which names one of `names`:
    /// the writer of a commit in flight holds the locks of its documents until it frees
    /// its slot, so under those locks, a slot naming one of them is a dead writer's.
    pub(crate) fn pending(&self, names: &[&[u8]]) -> Result<Option<Ticket>> {
        // Read without the append lock: a dead writer's slot never changes, and a live
        // one's (possibly torn here) is checked against its record below.
        let Some(page) = self.read_page()? else {
            return Err(self.damaged_state());
        };
        for (i, s) in page.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            if !names.iter().any(|n| s.names.may_contain(n)) {
                continue;
            }
            let Some((_, metas)) = self.read_record_meta(s.lsn, Some(s.crc))? else {
                continue;
            };
            if metas.iter().any(|m| names.contains(&m.name.as_slice())) {
                return Ok(Some(Ticket::of(i, s, page.generation)));
            }
        }
        Ok(None)
    }

    /// Whether the slot of `t` still holds `t`'s commit (the append lock waited for at
    /// most `timeout`).
    pub(super) fn still_in_flight(&self, t: &Ticket, timeout: Duration) -> Result<bool> {
        self.with_append_lock(Wait::new(timeout), || {
            let page = self.page()?;
            Ok(page.slots[t.slot].is_some_and(|s| s.lsn == t.lsn && s.crc == t.crc))
        })
    }
}

/// Open one of the journal's files, which must be a regular file.
fn open_file(meta: &dyn FsDir, name: &str, path: &Path, create: bool) -> Result<Box<dyn FsRwFile>> {
    let f = crate::fs::retry(|| meta.open_rw(std::ffi::OsStr::new(name), 0o600, create))
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::new(
                    ErrorKind::Io,
                    format!(
                        "{} is missing although the journal exists: was .statefile/ changed by hand?",
                        path.display()
                    ),
                )
                .with_path(path)
                .with_source(e)
            } else {
                Error::io("open", path, e)
            }
        })?;
    let m = f.metadata().ctx("open", path)?;
    super::check_regular(path, &m)?;
    Ok(f)
}

/// The header to trust, refusing a format version this build does not know.
pub(super) fn read_header(log: &dyn FsRwFile, path: &Path) -> Result<Header> {
    let mut copies = [None, None];
    for (i, at) in format::HEADER_COPIES.iter().enumerate() {
        let mut b = [0u8; format::HEADER_LEN];
        let n = read_full_at(log, &mut b, *at).ctx("read", path)?;
        copies[i] = Header::decode(&b[..n]);
    }
    let Some((_, h)) = Header::newest(copies[0], copies[1]) else {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{} has no valid header: it is damaged or not a statefile journal; refusing to write in its tree",
                path.display()
            ),
        )
        .with_path(path));
    };
    if h.version != format::FORMAT_VERSION {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{} has journal format version {}, which this statefile (format {}) does not \
                 know: refusing to write in its tree rather than bypass the journal; upgrade statefile",
                path.display(),
                h.version,
                format::FORMAT_VERSION
            ),
        )
        .with_path(path));
    }
    if h.capacity < format::MIN_CAPACITY
        || h.capacity > format::MAX_CAPACITY
        || h.capacity % 4096 != 0
    {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{} has an impossible capacity ({} bytes)",
                path.display(),
                h.capacity
            ),
        )
        .with_path(path));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Waits for the append lock that another open file description holds (another
    // process, as far as flock goes) end by their deadline; the helper left blocked in
    // `flock` on this process's one descriptor of journal-shm is adopted by the next
    // waiter, and once the holder lets go with nobody waiting, it lets go too: the lock
    // is not kept by the shared descriptor (which would stop every other process).
    #[test]
    fn append_lock_waits_end_in_time_and_the_helper_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::new();
        super::super::enable(dir.path(), &opts, super::super::JournalOptions::default()).unwrap();
        let j = Journal::open(dir.path(), &opts).unwrap().expect("enabled");
        let shm_path = dir.path().join(super::super::META_DIR).join(SHM);
        let other = std::fs::File::open(&shm_path).unwrap();
        other.lock().unwrap();
        for _ in 0..3 {
            let start = Instant::now();
            let e = j
                .with_append_lock(Wait::new(Duration::from_millis(50)), || Ok(()))
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::LockTimeout);
            assert!(e.message().contains("append lock"), "{e}");
            assert!(start.elapsed() < Duration::from_secs(5));
            assert!(
                lock::helper_given_up(&j.shm_helpers),
                "no helper left blocked"
            );
        }
        drop(other);
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock::helper_given_up(&j.shm_helpers) {
            assert!(Instant::now() < deadline, "the helper never got the lock");
            std::thread::sleep(Duration::from_millis(1));
        }
        let again = std::fs::File::open(&shm_path).unwrap();
        assert!(again.try_lock().is_ok(), "the helper kept the lock");
        drop(again);
        // And a holder that lets go while a waiter waits hands it over at once.
        let other = std::fs::File::open(&shm_path).unwrap();
        other.lock().unwrap();
        let released = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let at = Instant::now();
            drop(other);
            at
        });
        let got = j
            .with_append_lock(Wait::new(Duration::from_secs(30)), || Ok(Instant::now()))
            .unwrap();
        let released = released.join().unwrap();
        assert!(
            got.saturating_duration_since(released) < Duration::from_secs(1),
            "took {:?} after the release",
            got.saturating_duration_since(released)
        );
    }

    #[test]
    fn the_documents_kept_for_the_next_report_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::new();
        super::super::enable(dir.path(), &opts, super::super::JournalOptions::default()).unwrap();
        let j = Journal::open(dir.path(), &opts).unwrap().expect("enabled");
        for i in 0..MAX_NOTED + 5 {
            j.note_skipped(super::super::replay::SkippedRecord {
                path: dir.path().join(format!("{i}.json")),
                version: None,
                reason: "test".into(),
            });
            j.note_replayed(dir.path().join(format!("{i}.json")), None);
        }
        let skipped = j.take_skipped();
        assert_eq!(skipped.len(), MAX_NOTED);
        assert_eq!(
            skipped[0].path,
            dir.path().join("0.json"),
            "the first ones kept"
        );
        assert_eq!(j.take_replayed().len(), MAX_NOTED);
        assert!(j.take_skipped().is_empty() && j.take_replayed().is_empty());
    }
}
