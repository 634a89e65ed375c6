//! Exclusion between writers of one document: threads of this process and other
//! processes alike.
//!
//! The lock is an exclusive `flock(2)` (std's `File::lock` family) on the sidecar file
//! `.name.json.lock` beside the document. Never the document itself: every write
//! renames a new inode over it, so a lock on the document's inode protects nothing.
//!
//! Inside one process, threads first queue in a FIFO per lock file (keyed by the lock
//! file's device and inode), so they take turns fairly and only the thread at the head
//! holds a file descriptor for the lock. The head then takes the `flock` through a fresh
//! descriptor, polling with a short backoff until the deadline: the kernel drops the
//! lock of a process that dies, so a crashed holder never blocks anyone for long.
//!
//! After `flock` succeeds we check that the descriptor's (dev, ino) is still the one
//! linked at the lock path: a holder that deleted the document and its lock file may
//! have unlinked it, and a lock on an unlinked file excludes nobody.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::fs::{FileType, Fs, FsDir, FsLockFile};

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

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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

/// FIFOs in use, with the number of threads using each, so idle ones are dropped and a
/// store of many documents does not grow this map forever.
type Registry = Mutex<HashMap<Key, (Arc<Fifo>, usize)>>;

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(Default::default)
}

fn enter(key: Key) -> Arc<Fifo> {
    let mut reg = lock_ignoring_poison(registry());
    let slot = reg.entry(key).or_insert_with(|| (Arc::default(), 0));
    slot.1 += 1;
    slot.0.clone()
}

fn leave(key: Key) {
    let mut reg = lock_ignoring_poison(registry());
    if let Some(slot) = reg.get_mut(&key) {
        slot.1 -= 1;
        if slot.1 == 0 {
            reg.remove(&key);
        }
    }
}

/// The exclusive lock on one document, held until dropped.
#[derive(Debug)]
pub struct LockGuard {
    file: Option<Box<dyn FsLockFile>>,
    fifo: Arc<Fifo>,
    key: Key,
    waited: Duration,
}

impl LockGuard {
    /// How long acquiring the lock took.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            // Closing the descriptor releases the flock even if unlock fails.
            let _ = file.unlock();
        }
        self.fifo.release();
        leave(self.key);
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
    let start = Instant::now();
    // A timeout too large to add (Duration::MAX, `--lock-timeout 1e18`) means "wait as
    // long as it takes", not a panic.
    let deadline = start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(u32::MAX.into()));
    let mut key = identity(fs, dir, name, path)?;
    loop {
        let fifo = enter(key);
        if !fifo.acquire(deadline) {
            leave(key);
            return Err(timeout_error(path, timeout));
        }
        let mut guard = LockGuard {
            file: None,
            fifo,
            key,
            waited: Duration::ZERO,
        };
        let file = open(dir, name, path)?;
        let mut backoff = Duration::from_micros(50);
        loop {
            match file.try_lock() {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).ctx("lock", path),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(timeout_error(path, timeout));
            }
            std::thread::sleep(jitter(backoff).min(deadline - now));
            backoff = (backoff * 2).min(Duration::from_millis(8));
        }
        if still_linked(dir, file.as_ref(), name).ctx("lock", path)? {
            guard.file = Some(file);
            guard.waited = start.elapsed();
            return Ok(guard);
        }
        // The lock file was deleted (with its document) or replaced while we waited:
        // our lock excludes nobody. Start again on the file now at the path.
        drop(file);
        drop(guard);
        key = identity(fs, dir, name, path)?;
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
    let key = identity(fs, dir, name, path)?;
    let fifo = enter(key);
    if !fifo.try_acquire() {
        leave(key);
        return Ok(None);
    }
    let mut guard = LockGuard {
        file: None,
        fifo,
        key,
        waited: Duration::ZERO,
    };
    let file = open(dir, name, path)?;
    loop {
        match file.try_lock() {
            Ok(true) => break,
            Ok(false) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).ctx("lock", path),
        }
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
        let key = g.key;
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
            let key = first.key;
            loop {
                let queued = lock_ignoring_poison(registry())
                    .get(&key)
                    .map(|(f, _)| lock_ignoring_poison(&f.state).queue.len());
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
