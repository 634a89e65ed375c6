//! Exclusion between writers of one document: threads of this process and other
//! processes alike.
//!
//! The lock is an exclusive `flock(2)` (std's `File::lock` family) on the sidecar file
//! `.name.json.lock` beside the document. Never the document itself: every write
//! renames a new inode over it, so a lock on the document's inode protects nothing.
//!
//! Inside one process, each lock file has one [`Shared`] state, keyed by the lock
//! file's identity (file system instance, device, inode): the FIFO in which threads
//! take turns, so only the thread at the head holds a file descriptor for the lock; the
//! group-commit queue ([`crate::group`]); and at most one helper thread blocked in
//! `flock`. The head takes the `flock` through a fresh descriptor: at once if it is
//! free, else by handing the descriptor to a helper thread that blocks in `flock(LOCK_EX)`,
//! so the kernel wakes it the moment another process lets go, while the head waits
//! for the helper with its own deadline. A head that gives up leaves the helper behind
//! for the next head to adopt; a helper that wins with nobody waiting releases the lock
//! at once. At most [`MAX_HELPERS`] helper threads exist per process (beyond that,
//! heads poll with a backoff capped at 8 ms); one whose `flock` returned waits a few
//! seconds for the next lock to block in, then ends. The worst case is one blocked
//! thread per lock file that another process holds forever after a waiter here gave up
//! on it. The journal's locks ([`crate::journal`]) wait through the same helpers
//! ([`flock_until`]), on the one descriptor of each journal file a process keeps.
//!
//! After `flock` succeeds we check that the descriptor's (dev, ino) is still the one
//! linked at the lock path: a holder that deleted the document and its lock file may
//! have unlinked it, and a lock on an unlinked file excludes nobody.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::fs::{FileType, Fs, FsDir, FsLockFile};
use crate::group;
use crate::process::PerProcess;

/// (file system instance, device, inode) of a lock file.
type Key = (usize, u64, u64);

#[derive(Debug, Default)]
struct FifoState {
    held: bool,
    queue: VecDeque<u64>,
    next_ticket: u64,
}

#[derive(Debug, Default)]
struct Fifo {
    state: Mutex<FifoState>,
    turn: Condvar,
}

pub(crate) fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another thread while it held one of these short critical sections
    // leaves the state consistent (every mutation is a single assignment), so go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Fifo {
    /// Wait for our turn until `deadline`. Returns false on timeout.
    fn acquire(&self, deadline: Instant) -> bool {
        let mut st = lock_ignoring_poison(&self.state);
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push_back(ticket);
        loop {
            if !st.held && st.queue.front() == Some(&ticket) {
                st.queue.pop_front();
                st.held = true;
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                st.queue.retain(|t| *t != ticket);
                drop(st);
                // The one behind us may now be at the head.
                self.turn.notify_all();
                return false;
            }
            st = self
                .turn
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn try_acquire(&self) -> bool {
        let mut st = lock_ignoring_poison(&self.state);
        if !st.held && st.queue.is_empty() {
            st.held = true;
            true
        } else {
            false
        }
    }

    fn release(&self) {
        lock_ignoring_poison(&self.state).held = false;
        self.turn.notify_all();
    }
}

/// What the threads of this process share about one lock file.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    fifo: Fifo,
    /// The document's group-commit queue.
    pub(crate) batch: group::Queue,
    /// A helper blocked in `flock` for a head that gave up, for the next head to adopt.
    helper: HelperSlot<Box<dyn FsLockFile>>,
}

/// The states in use, with the number of users of each (threads waiting or holding,
/// queued calls, helpers), so idle ones are dropped and a store of many documents does
/// not grow this map forever.
type Registry = Mutex<HashMap<Key, (Arc<Shared>, usize)>>;

/// This process's (see [`crate::process`]: a forked child has its own).
fn registry() -> &'static Registry {
    static REG: PerProcess<Registry> = PerProcess::new();
    REG.get()
}

/// A use of one lock file's [`Shared`] state; the state lives while it has users.
#[derive(Debug)]
pub(crate) struct Entry {
    key: Key,
    shared: Arc<Shared>,
}

impl Entry {
    fn enter(key: Key) -> Entry {
        let mut reg = lock_ignoring_poison(registry());
        let slot = reg.entry(key).or_insert_with(|| (Arc::default(), 0));
        slot.1 += 1;
        Entry {
            key,
            shared: slot.0.clone(),
        }
    }

    /// The state of the lock file `name` in `dir` (at `path`; created if missing),
    /// for `fs`. Anything but a regular file there is refused, never opened.
    pub(crate) fn open(
        fs: &Arc<dyn Fs>,
        dir: &dyn FsDir,
        name: &OsStr,
        path: &Path,
    ) -> Result<Entry> {
        Ok(Entry::enter(identity(fs, dir, name, path)?))
    }

    /// The shared state.
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl AsRef<HelperSlot<Box<dyn FsLockFile>>> for Entry {
    fn as_ref(&self) -> &HelperSlot<Box<dyn FsLockFile>> {
        &self.shared.helper
    }
}

impl Clone for Entry {
    fn clone(&self) -> Entry {
        Entry::enter(self.key)
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut reg = lock_ignoring_poison(registry());
        if let Some(slot) = reg.get_mut(&self.key) {
            slot.1 -= 1;
            if slot.1 == 0 {
                reg.remove(&self.key);
            }
        }
    }
}

/// How many calls wait in the group-commit queues of this process to write `path` (a
/// resolved document path).
pub(crate) fn queued(path: &Path) -> usize {
    let shared: Vec<Arc<Shared>> = lock_ignoring_poison(registry())
        .values()
        .map(|(s, _)| s.clone())
        .collect();
    shared.iter().map(|s| s.batch.queued(path)).sum()
}

/// The exclusive lock on one document, held until dropped.
#[derive(Debug)]
pub struct LockGuard {
    file: Option<Box<dyn FsLockFile>>,
    entry: Entry,
    waited: Duration,
    /// Whether taking it had to wait for another holder (this process's or another's).
    contended: bool,
    /// The process that took the lock. A child forked while it was held has a copy of
    /// the guard and of the descriptor, which shares the parent's open file (and so its
    /// `flock`): the child must not unlock it.
    owner: u32,
}

impl LockGuard {
    /// How long acquiring the lock took.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Whether taking the lock had to wait for another holder (in this process or
    /// another): time passed in which anything unlocked (a symlink) may have changed.
    pub(crate) fn contended(&self) -> bool {
        self.contended
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            // Closing the descriptor releases the flock even if unlock fails; in a
            // forked child, closing its copy leaves the parent's lock alone, as it must.
            if std::process::id() == self.owner {
                let _ = FsLockFile::unlock(file.as_ref());
            }
        }
        self.entry.shared.fifo.release();
    }
}

fn fs_id(fs: &Arc<dyn Fs>) -> usize {
    Arc::as_ptr(fs) as *const () as usize
}

/// The lock file's identity, creating the file if it does not exist yet.
/// Anything but a regular file there (a symlink, a FIFO) is refused, never opened.
fn identity(fs: &Arc<dyn Fs>, dir: &dyn FsDir, name: &OsStr, path: &Path) -> Result<Key> {
    let meta = match dir.stat(name) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            drop(crate::fs::retry(|| dir.open_lock(name)).ctx("create lock file", path)?);
            dir.stat(name).ctx("create lock file", path)?
        }
        Err(e) => return Err(e).ctx("create lock file", path),
    };
    if meta.file_type != FileType::File {
        return Err(crate::file::not_regular(path, meta.file_type));
    }
    Ok((fs_id(fs), meta.dev, meta.ino))
}

/// Open the lock file, checking it is (still) a regular file.
fn open(dir: &dyn FsDir, name: &OsStr, path: &Path) -> Result<Box<dyn FsLockFile>> {
    let file = crate::fs::retry(|| dir.open_lock(name)).ctx("open lock file", path)?;
    let meta = file.metadata().ctx("open lock file", path)?;
    if meta.file_type != FileType::File {
        return Err(crate::file::not_regular(path, meta.file_type));
    }
    Ok(file)
}

/// Whether `file` is still the file linked at `name`.
fn still_linked(dir: &dyn FsDir, file: &dyn FsLockFile, name: &OsStr) -> io::Result<bool> {
    let held = file.metadata()?;
    if held.nlink == 0 {
        return Ok(false);
    }
    match dir.stat(name) {
        Ok(now) => Ok(now.dev == held.dev && now.ino == held.ino),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn timeout_error(path: &Path, timeout: Duration) -> Error {
    Error::new(
        ErrorKind::LockTimeout,
        format!(
            "cannot lock {}: another writer held it for more than {:.1}s",
            path.display(),
            timeout.as_secs_f64()
        ),
    )
    .with_path(path)
}

/// When a wait for the lock began, and until when it may last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wait {
    /// The guard's [`LockGuard::waited`] counts from here.
    pub start: Instant,
    /// The wait ends with `LockTimeout` here.
    pub deadline: Instant,
    /// The configured timeout, for the message.
    pub timeout: Duration,
}

impl Wait {
    /// A wait of `timeout` from now.
    pub(crate) fn new(timeout: Duration) -> Wait {
        let start = Instant::now();
        Wait {
            start,
            deadline: deadline(start, timeout),
            timeout,
        }
    }
}

/// `start + timeout`, where a timeout too large to add (Duration::MAX, `--lock-timeout
/// 1e18`) means "wait as long as it takes", not a panic.
pub(crate) fn deadline(start: Instant, timeout: Duration) -> Instant {
    start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(u32::MAX.into()))
}

/// Take the exclusive lock on the lock file `name` in `dir` (at `path`, for messages),
/// waiting at most `timeout`. `fs`, which opened `dir`, keys the in-process queue.
///
/// # Errors
/// [`ErrorKind::LockTimeout`] when the lock is not free in time; the I/O kinds when the
/// lock file cannot be created or opened.
pub(crate) fn acquire(
    fs: &Arc<dyn Fs>,
    dir: &dyn FsDir,
    name: &OsStr,
    path: &Path,
    timeout: Duration,
) -> Result<LockGuard> {
    let wait = Wait::new(timeout);
    let entry = Entry::open(fs, dir, name, path)?;
    acquire_in(entry, fs, dir, name, path, wait)
}

/// [`acquire`] for a lock file whose [`Entry`] the caller already has.
pub(crate) fn acquire_in(
    mut entry: Entry,
    fs: &Arc<dyn Fs>,
    dir: &dyn FsDir,
    name: &OsStr,
    path: &Path,
    wait: Wait,
) -> Result<LockGuard> {
    let Wait {
        start,
        deadline,
        timeout,
    } = wait;
    let mut contended = false;
    loop {
        // Free at once: taken as `acquire` would take it (nobody queued, nobody holds it).
        if !entry.shared.fifo.try_acquire() {
            contended = true;
            if !entry.shared.fifo.acquire(deadline) {
                return Err(timeout_error(path, timeout));
            }
        }
        let mut guard = LockGuard {
            file: None,
            entry,
            waited: Duration::ZERO,
            contended,
            owner: std::process::id(),
        };
        let file = open(dir, name, path)?;
        let Some((file, waited)) = flock_until(&guard.entry, file, deadline).ctx("lock", path)?
        else {
            return Err(timeout_error(path, timeout));
        };
        contended |= waited;
        guard.contended = contended;
        if still_linked(dir, file.as_ref(), name).ctx("lock", path)? {
            guard.file = Some(file);
            guard.waited = start.elapsed();
            return Ok(guard);
        }
        // The lock file was deleted (with its document) or replaced while we waited:
        // our lock excludes nobody. Start again on the file now at the path.
        drop(file);
        entry = Entry::open(fs, dir, name, path)?;
        drop(guard);
    }
}

/// Most helper threads blocked in `flock` at once, in the whole process.
pub(crate) const MAX_HELPERS: usize = 64;

/// A lock a helper thread can block in on a waiter's behalf: a document's lock file
/// (a fresh descriptor per acquisition) or one of the journal's files (one descriptor
/// per process, behind an in-process lock).
pub(crate) trait Flock: Send + Sized + 'static {
    /// `flock` with `LOCK_NB`: whether it was granted.
    fn try_lock(&self) -> io::Result<bool>;
    /// `flock` without `LOCK_NB`: blocks until granted; the kernel wakes the caller the
    /// moment the holder lets go.
    fn lock(&self) -> io::Result<()>;
    /// `flock(LOCK_UN)`, for a lock a helper won with nobody waiting for it any more.
    fn unlock(&self);
}

impl Flock for Box<dyn FsLockFile> {
    fn try_lock(&self) -> io::Result<bool> {
        crate::fs::retry(|| FsLockFile::try_lock(self.as_ref()))
    }
    fn lock(&self) -> io::Result<()> {
        crate::fs::retry(|| FsLockFile::lock(self.as_ref()))
    }
    fn unlock(&self) {
        // Unlocked, not only closed: a child forked meanwhile has a copy of this
        // descriptor, and a flock ends only with the last one closed, so closing alone
        // left the lock held for as long as that child lived.
        let _ = FsLockFile::unlock(self.as_ref());
    }
}

/// Where the helper blocked in `flock` on one lock for a waiter that gave up stays, for
/// the next waiter to adopt.
pub(crate) type HelperSlot<F> = Mutex<Option<Arc<Helper<F>>>>;

/// A thread blocked in `flock` on behalf of a waiting head.
#[derive(Debug)]
pub(crate) struct Helper<F> {
    /// The process whose thread it is.
    pid: u32,
    state: Mutex<HelperState<F>>,
    done: Condvar,
}

impl<F> Helper<F> {
    /// Whether it is a thread of this process (the process id asked only when there is
    /// a helper: no system call on the path where a lock is free).
    fn ours(&self) -> bool {
        self.pid == std::process::id()
    }
}

#[derive(Debug)]
struct HelperState<F> {
    /// A head is waiting for the outcome.
    waiting: bool,
    /// The outcome, once `flock` returned and a head was waiting for it.
    outcome: Option<io::Result<F>>,
    /// `flock` returned: nothing left to adopt (and a lock won with nobody waiting is
    /// released already).
    finished: bool,
    /// A waiter gave up on it: the lock has been held by someone else for at least a
    /// whole wait.
    given_up: bool,
}

/// Take the `flock` on `file` by `deadline`: `Ok(None)` on timeout. With the file,
/// whether it had to wait. `owner` keeps `slot` (this lock's helper slot) alive for a
/// helper that outlives the wait.
///
/// A helper left blocked on this lock by a waiter that gave up is adopted first,
/// before `file` is even tried: where `file` is the very descriptor the helper blocks
/// on (the journal's), a lock taken through it meanwhile would be the helper's too, and
/// released by the helper finding nobody waiting. Otherwise `file` is tried at once
/// (even past the deadline), then handed to a helper thread that blocks in `flock`,
/// so the kernel hands the lock over the moment its holder lets go, while this thread
/// waits for the helper no later than `deadline`. Without a helper to be had (more
/// than [`MAX_HELPERS`] blocked), polled.
pub(crate) fn flock_until<F: Flock, O: AsRef<HelperSlot<F>> + Clone + Send + 'static>(
    owner: &O,
    file: F,
    deadline: Instant,
) -> io::Result<Option<(F, bool)>> {
    let slot = owner.as_ref();
    {
        let held = lock_ignoring_poison(slot);
        // A helper of the process this one was forked from is not here (fork copies no
        // thread): its outcome would never come.
        if let Some(h) = held.as_ref().filter(|h| h.ours()) {
            let mut st = lock_ignoring_poison(&h.state);
            if !st.finished {
                st.waiting = true;
                drop(st);
                let h = h.clone();
                drop(held);
                drop(file);
                return Ok(wait_for_helper(&h, deadline)?.map(|f| (f, true)));
            }
        }
    }
    if file.try_lock()? {
        return Ok(Some((file, false)));
    }
    let waited = match helper_for(owner, file) {
        Ok(helper) => wait_for_helper(&helper, deadline),
        Err(file) => poll(file, deadline),
    };
    Ok(waited?.map(|file| (file, true)))
}

/// [`flock_until`] without waiting: the lock if it is free now, and no helper is left
/// blocked on it (whose win would be this lock's, where they share a descriptor).
pub(crate) fn try_flock<F: Flock>(slot: &HelperSlot<F>, file: &F) -> io::Result<bool> {
    let held = lock_ignoring_poison(slot);
    if held
        .as_ref()
        .filter(|h| h.ours())
        .is_some_and(|h| !lock_ignoring_poison(&h.state).finished)
    {
        return Ok(false);
    }
    // Tried with the slot held: no helper can be started meanwhile.
    let free = file.try_lock();
    drop(held);
    free
}

/// Whether a helper of this process is still blocked in `flock` in `slot` after a
/// waiter gave up on it: the lock has been held by someone else, without a break, since
/// before that waiter's deadline. (A helper that waiters are waiting for, and none gave
/// up on, is the ordinary hand-over between processes.)
pub(crate) fn helper_given_up<F>(slot: &HelperSlot<F>) -> bool {
    lock_ignoring_poison(slot)
        .as_ref()
        .filter(|h| h.ours())
        .is_some_and(|h| {
            let st = lock_ignoring_poison(&h.state);
            st.given_up && !st.finished
        })
}

/// A helper started to block in `flock` on `file`; `Err(file)` when no helper thread
/// may be started. Called with no helper of this process left in the slot.
fn helper_for<F: Flock, O: AsRef<HelperSlot<F>> + Clone + Send + 'static>(
    owner: &O,
    file: F,
) -> Result<Arc<Helper<F>>, F> {
    let mut slot = lock_ignoring_poison(owner.as_ref());
    let helper = Arc::new(Helper {
        pid: std::process::id(),
        state: Mutex::new(HelperState {
            waiting: true,
            outcome: None,
            finished: false,
            given_up: false,
        }),
        done: Condvar::new(),
    });
    let task = Task {
        file,
        helper: helper.clone(),
        owner: owner.clone(),
    };
    match helpers::run(task) {
        Ok(()) => {
            *slot = Some(helper.clone());
            Ok(helper)
        }
        Err(task) => Err(task.file),
    }
}

/// What a helper thread runs: block in `flock` on `file` for `helper`'s waiter.
struct Task<F, O> {
    file: F,
    helper: Arc<Helper<F>>,
    /// Keeps the helper's slot alive (a document's lock state stays registered while
    /// its helper blocks, so the next head adopts it rather than start another).
    owner: O,
}

/// A job for a helper thread.
trait Job: Send {
    fn run(self: Box<Self>);
}

impl<F: Flock, O: AsRef<HelperSlot<F>> + Send + 'static> Job for Task<F, O> {
    fn run(self: Box<Self>) {
        let Task {
            file,
            helper: h,
            owner,
        } = *self;
        let outcome = file.lock().map(|()| file);
        let mut st = lock_ignoring_poison(&h.state);
        st.finished = true;
        if st.waiting {
            st.outcome = Some(outcome);
            h.done.notify_all();
        } else if let Ok(file) = outcome {
            // The head gave up and nobody adopted us: let go at once, before anyone
            // can see this helper finished (and take the lock, where the descriptor is
            // shared).
            file.unlock();
        }
        drop(st);
        let mut slot = lock_ignoring_poison(owner.as_ref());
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &h)) {
            *slot = None;
        }
    }
}

/// The helper threads: started on demand, at most [`MAX_HELPERS`] in the process, each
/// kept after its `flock` returns for [`HELPER_IDLE`] to take the next one (starting a
/// thread for every contended lock cost more than the rest of a hand-over between
/// processes). A thread idle that long ends, so an idle process keeps none. Document
/// locks and the journal's locks share them.
mod helpers {
    use super::{Job, MAX_HELPERS, lock_ignoring_poison};
    use crate::process::PerProcess;
    use std::collections::VecDeque;
    use std::sync::{Condvar, Mutex, PoisonError};
    use std::time::Duration;

    /// How long a helper thread waits for another `flock` to block in before it ends.
    pub(super) const HELPER_IDLE: Duration = Duration::from_secs(5);

    #[derive(Default)]
    struct State {
        /// The process these threads belong to: a child forked from it has none.
        pid: u32,
        /// Jobs handed over and not yet taken by a thread.
        queue: VecDeque<Box<dyn Job>>,
        /// Threads waiting for a job.
        idle: usize,
        /// Threads alive (idle or blocked in a `flock`).
        threads: usize,
    }

    #[derive(Default)]
    struct Pool {
        state: Mutex<State>,
        work: Condvar,
    }

    /// This process's (see [`crate::process`]: a forked child, which has none of these
    /// threads, has its own, and never waits for the mutex a thread of its parent held).
    fn pool() -> &'static Pool {
        static POOL: PerProcess<Pool> = PerProcess::new();
        POOL.get()
    }

    /// Have a helper thread run `job`: an idle one, else a new one if fewer than
    /// [`MAX_HELPERS`] are alive. `Err(job)` when none may run it.
    pub(super) fn run<J: Job + 'static>(job: J) -> Result<(), J> {
        let p = pool();
        let mut st = lock_ignoring_poison(&p.state);
        let pid = std::process::id();
        if st.pid != pid {
            // A child forked after threads started here has none of them: what the
            // parent's counts say is not ours (what it had queued, a copy, is dropped).
            st.queue.clear();
            st.idle = 0;
            st.threads = 0;
            st.pid = pid;
        }
        if st.idle > st.queue.len() {
            st.queue.push_back(Box::new(job));
            drop(st);
            p.work.notify_one();
            return Ok(());
        }
        if st.threads >= MAX_HELPERS {
            return Err(job);
        }
        st.threads += 1;
        drop(st);
        // The job goes to the thread; if the thread cannot start, it comes back.
        let handed = std::sync::Arc::new(Mutex::new(Some(job)));
        let take = handed.clone();
        let spawned = std::thread::Builder::new()
            .name("statefile-flock".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let first = lock_ignoring_poison(&take).take();
                drop(take);
                if let Some(job) = first {
                    Box::new(job).run();
                }
                serve(p);
            });
        match spawned {
            Ok(_) => Ok(()),
            Err(_) => {
                let mut st = lock_ignoring_poison(&p.state);
                if st.pid == pid {
                    st.threads -= 1;
                }
                drop(st);
                let back = lock_ignoring_poison(&handed).take();
                Err(back.expect("the thread never started"))
            }
        }
    }

    /// A helper thread between jobs: take the next one, or end after [`HELPER_IDLE`]
    /// without any.
    fn serve(p: &'static Pool) {
        let mut st = lock_ignoring_poison(&p.state);
        loop {
            if let Some(job) = st.queue.pop_front() {
                drop(st);
                job.run();
                st = lock_ignoring_poison(&p.state);
                continue;
            }
            st.idle += 1;
            let (g, waited) = p
                .work
                .wait_timeout(st, HELPER_IDLE)
                .unwrap_or_else(PoisonError::into_inner);
            st = g;
            st.idle -= 1;
            if waited.timed_out() && st.queue.is_empty() {
                st.threads -= 1;
                return;
            }
        }
    }
}

/// Wait for `helper`'s `flock` until `deadline`; on timeout leave it for the next head
/// (or, if nobody adopts it, to release the lock the moment it wins).
fn wait_for_helper<F>(helper: &Helper<F>, deadline: Instant) -> io::Result<Option<F>> {
    let mut st = lock_ignoring_poison(&helper.state);
    loop {
        if let Some(outcome) = st.outcome.take() {
            st.waiting = false;
            return outcome.map(Some);
        }
        let now = Instant::now();
        if now >= deadline {
            st.waiting = false;
            st.given_up = true;
            return Ok(None);
        }
        st = helper
            .done
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Without a helper: try again and again, with a jittered backoff capped at 8 ms.
fn poll<F: Flock>(file: F, deadline: Instant) -> io::Result<Option<F>> {
    let mut backoff = Duration::from_micros(50);
    loop {
        if file.try_lock()? {
            return Ok(Some(file));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(jitter(backoff).min(deadline - now));
        backoff = (backoff * 2).min(Duration::from_millis(8));
    }
}

/// Take the lock only if it is free right now: `Ok(None)` if anyone (a thread of this
/// process or another process) holds it.
pub(crate) fn try_acquire(
    fs: &Arc<dyn Fs>,
    dir: &dyn FsDir,
    name: &OsStr,
    path: &Path,
) -> Result<Option<LockGuard>> {
    let entry = Entry::open(fs, dir, name, path)?;
    if !entry.shared.fifo.try_acquire() {
        return Ok(None);
    }
    let mut guard = LockGuard {
        file: None,
        entry,
        waited: Duration::ZERO,
        contended: false,
        owner: std::process::id(),
    };
    let file = open(dir, name, path)?;
    if !try_flock(&guard.entry.shared.helper, &file).ctx("lock", path)? {
        return Ok(None);
    }
    if !still_linked(dir, file.as_ref(), name).ctx("lock", path)? {
        return Ok(None);
    }
    guard.file = Some(file);
    Ok(Some(guard))
}

/// A sleep between `d/2` and `d`, so pollers in several processes spread out.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        u16::from_le_bytes(b) as u32
    } else {
        u16::MAX as u32 / 2
    };
    d / 2 + (d / 2) * r / u16::MAX as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::default_fs;

    /// [`super::acquire`] by path, through a handle of the path's directory.
    fn acquire(fs: &Arc<dyn Fs>, path: &Path, timeout: Duration) -> Result<LockGuard> {
        let dir = fs.open_dir(path.parent().unwrap()).unwrap();
        super::acquire(fs, dir.as_ref(), path.file_name().unwrap(), path, timeout)
    }

    /// [`super::try_acquire`] by path.
    fn try_acquire(fs: &Arc<dyn Fs>, path: &Path) -> Result<Option<LockGuard>> {
        let dir = fs.open_dir(path.parent().unwrap()).unwrap();
        super::try_acquire(fs, dir.as_ref(), path.file_name().unwrap(), path)
    }

    #[test]
    fn a_huge_timeout_is_not_an_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let g = acquire(&default_fs(), &dir.path().join(".a.lock"), Duration::MAX).unwrap();
        drop(g);
    }

    #[test]
    fn second_acquire_times_out_then_succeeds_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let fs = default_fs();
        let p = dir.path().join(".a.json.lock");
        let g = acquire(&fs, &p, Duration::from_secs(1)).unwrap();
        let fs2 = fs.clone();
        let p2 = p.clone();
        let t = std::thread::spawn(move || {
            acquire(&fs2, &p2, Duration::from_millis(100))
                .unwrap_err()
                .kind()
        });
        assert_eq!(t.join().unwrap(), ErrorKind::LockTimeout);
        assert!(try_acquire(&fs, &p).unwrap().is_none());
        let key = g.entry.key;
        drop(g);
        let again = try_acquire(&fs, &p).unwrap().unwrap();
        drop(again);
        // Idle FIFOs are forgotten, so a store of many documents does not leak them.
        assert!(!lock_ignoring_poison(registry()).contains_key(&key));
    }

    #[test]
    fn threads_take_turns_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let fs = default_fs();
        let p = dir.path().join(".a.json.lock");
        let first = acquire(&fs, &p, Duration::from_secs(5)).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for i in 0..4 {
            let (fs, p, order) = (fs.clone(), p.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                let _g = acquire(&fs, &p, Duration::from_secs(30)).unwrap();
                order.lock().unwrap().push(i);
            }));
            // Wait until this thread is queued before starting the next.
            let key = first.entry.key;
            loop {
                let queued = lock_ignoring_poison(registry())
                    .get(&key)
                    .map(|(f, _)| lock_ignoring_poison(&f.fifo.state).queue.len());
                if queued == Some(i + 1) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    }

    // A head that gives up on a lock another process holds leaves its helper blocked in
    // flock; later heads adopt that helper instead of starting more (one per lock file),
    // and when the holder lets go with nobody waiting, the helper releases at once.
    #[test]
    fn heads_that_give_up_share_one_helper_which_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".a.json.lock");
        // Another file system instance: another process, as far as the queue knows.
        let other: Arc<dyn Fs> = Arc::new(crate::fs::OsFs);
        let held = acquire(&other, &p, Duration::from_secs(1)).unwrap();
        let fs = default_fs();
        let handle = fs.open_dir(dir.path()).unwrap();
        let entry = Entry::open(&fs, handle.as_ref(), p.file_name().unwrap(), &p).unwrap();
        let helper = || lock_ignoring_poison(&entry.shared.helper).clone();
        let mut first: Option<Arc<Helper<Box<dyn FsLockFile>>>> = None;
        for _ in 0..3 {
            let e = acquire(&fs, &p, Duration::from_millis(30)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::LockTimeout);
            let h = helper().expect("a helper stays blocked in flock");
            if let Some(f) = &first {
                assert!(Arc::ptr_eq(f, &h), "a second helper was started");
            }
            first = Some(h);
        }
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(10);
        while helper().is_some() {
            assert!(Instant::now() < deadline, "the helper never got the lock");
            std::thread::sleep(Duration::from_millis(1));
        }
        // It won with nobody waiting and let go: the lock is free.
        assert!(
            try_acquire(&other, &p).unwrap().is_some(),
            "the helper kept the lock"
        );
    }

    // Regression: a lock file unlinked by its holder must not be trusted by a waiter.
    #[test]
    fn deleted_lock_file_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let fs = default_fs();
        let p = dir.path().join(".a.json.lock");
        let g = acquire(&fs, &p, Duration::from_secs(1)).unwrap();
        let fs2 = fs.clone();
        let p2 = p.clone();
        let t = std::thread::spawn(move || {
            let g2 = acquire(&fs2, &p2, Duration::from_secs(5)).unwrap();
            let held = g2.file.as_ref().unwrap().metadata().unwrap();
            let linked = fs2.metadata(&p2).unwrap();
            (held.ino, linked.ino)
        });
        std::thread::sleep(Duration::from_millis(50));
        std::fs::remove_file(&p).unwrap();
        drop(g);
        let (held, linked) = t.join().unwrap();
        assert_eq!(held, linked);
    }
}
