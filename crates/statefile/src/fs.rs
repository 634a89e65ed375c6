//! The seam between statefile and the operating system.
//!
//! Every file-system call the library makes goes through two traits:
//!
//! - [`Fs`], the file system: it resolves paths (`stat`, `readlink`, `realpath`) and
//!   opens directories;
//! - [`FsDir`], one open directory: everything done to a file (create, open, rename,
//!   link, unlink, stat, sync) is done through the handle of the directory that holds
//!   it, by name (`openat`, `renameat`, `linkat`, `unlinkat`, `fstatat`, `fsync`).
//!
//! The split is the guarantee: once a write has resolved its document's directory, no
//! call can resolve that directory's path again, so a component swapped for a symlink
//! meanwhile cannot redirect the write. And an [`FsDir`] never follows a symlink at the
//! name it is given, nor blocks opening a FIFO: a sidecar or document that is a symlink,
//! FIFO, socket or device is seen as what it is (see [`FsDir::open_read`]).
//!
//! The real implementation is [`OsFs`]; tests plug in implementations that fail any
//! single call or record every operation to replay the states a power loss could leave.
//! Each method is one system call (or the obvious short sequence), so a recording of
//! calls is a recording of what the kernel was asked to do.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::OsFs;

#[cfg(not(unix))]
compile_error!("statefile supports Unix systems only for now (Linux is the tested platform)");

/// The type of a directory entry or file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (only reported where links are not followed).
    Symlink,
    /// A FIFO (named pipe).
    Fifo,
    /// A Unix-domain socket.
    Socket,
    /// A character or block device.
    Device,
}

impl FileType {
    /// What it is, in words, for error messages ("a FIFO", "a symlink").
    pub fn describe(self) -> &'static str {
        match self {
            FileType::File => "a regular file",
            FileType::Dir => "a directory",
            FileType::Symlink => "a symlink",
            FileType::Fifo => "a FIFO",
            FileType::Socket => "a socket",
            FileType::Device => "a device",
        }
    }
}

/// The parts of `stat(2)` that statefile uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// What the path is.
    pub file_type: FileType,
    /// Device number: with `ino`, the file's identity.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Number of hard links; 0 means the file was unlinked while open.
    pub nlink: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub len: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
    /// Status-change time, nanoseconds since the Unix epoch.
    pub ctime_ns: i128,
}

impl Metadata {
    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type == FileType::File
    }
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type == FileType::Dir
    }
    /// Whether this is a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.file_type == FileType::Symlink
    }
}

/// One entry of [`FsDir::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's file name (not a path).
    pub name: OsString,
    /// Its type, without following symlinks.
    pub file_type: FileType,
}

/// An open file: what the write protocol and reads need from a file descriptor.
pub trait FsFile: io::Read + io::Write + Send + fmt::Debug {
    /// `fsync(2)`: file data and metadata.
    fn sync_all(&mut self) -> io::Result<()>;
    /// `fdatasync(2)`: file data and the metadata needed to read it back.
    fn sync_data(&mut self) -> io::Result<()>;
    /// `fstat(2)`.
    fn metadata(&self) -> io::Result<Metadata>;
    /// `fchmod(2)` with permission bits.
    fn set_mode(&mut self, mode: u32) -> io::Result<()>;
    /// `fchown(2)`.
    fn set_owner(&mut self, uid: u32, gid: u32) -> io::Result<()>;
    /// Start writing the file's dirty data out to the device, without waiting, so that
    /// a [`sync_all`](FsFile::sync_all) of it later (through this or another handle)
    /// finds it already on its way. Only a hint, as [`FsRwFile::start_writeback`]: it
    /// makes nothing durable, drops nothing from the cache, consumes no error report,
    /// and its failure is no error. The default does nothing.
    fn start_writeback(&self) {}
}

/// An open lock file: an exclusive advisory lock (`flock(2)` on Unix), released when
/// [`unlock`](FsLockFile::unlock) is called, the value is dropped, or the process dies.
pub trait FsLockFile: Send + fmt::Debug {
    /// Try to take the exclusive lock without blocking: `Ok(false)` if another open
    /// file description holds it.
    fn try_lock(&self) -> io::Result<bool>;
    /// Take the exclusive lock, blocking until it is free (`flock(LOCK_EX)`): the
    /// kernel wakes the caller the moment the holder lets go. statefile calls this only
    /// from a helper thread and enforces its timeout in the waiting thread. The default
    /// polls [`try_lock`](FsLockFile::try_lock) with a backoff up to 8 ms, for file
    /// systems (simulations) that cannot block.
    fn lock(&self) -> io::Result<()> {
        let mut backoff = std::time::Duration::from_micros(50);
        while !self.try_lock()? {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(std::time::Duration::from_millis(8));
        }
        Ok(())
    }
    /// Release the lock.
    fn unlock(&self) -> io::Result<()>;
    /// `fstat(2)` of the lock file, to check it is still the one linked at its name.
    fn metadata(&self) -> io::Result<Metadata>;
}

/// How [`FsRwFile::try_lock`] locks: many holders, or one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// `LOCK_SH`: any number of shared holders, no exclusive one.
    Shared,
    /// `LOCK_EX`: one holder.
    Exclusive,
}

/// A file opened for reading and writing at explicit offsets, which can also be locked
/// shared or exclusive: what the journal uses for its log and its shared state. Calls
/// take `&self` (positional I/O needs no cursor), so one open file serves every thread
/// of a process.
pub trait FsRwFile: Send + Sync + fmt::Debug {
    /// `pread(2)`: up to `buf.len()` bytes at `offset`; fewer at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// `pwrite(2)`: up to `buf.len()` bytes at `offset`, growing the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// `fdatasync(2)`: the data, and the metadata needed to read it back.
    fn sync_data(&self) -> io::Result<()>;
    /// Start writing the `len` bytes at `offset` out to the device, without waiting, so
    /// that the
    /// [`sync_data`](FsRwFile::sync_data) that follows finds them already on their way.
    /// Only a hint: it makes nothing durable, and its failure is no error (the
    /// `sync_data` after it reports a failed write; asking for no wait, it consumes no
    /// error report). The default does nothing.
    fn start_writeback(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }
    /// `fstat(2)`.
    fn metadata(&self) -> io::Result<Metadata>;
    /// `flock(2)` with `LOCK_NB`: `Ok(false)` if another open file description holds
    /// a conflicting lock. Taking the other mode while holding one converts it (not
    /// atomically: the old lock is released first, as `flock` does).
    fn try_lock(&self, mode: LockMode) -> io::Result<bool>;
    /// `flock(2)` without `LOCK_NB`: wait until the lock is granted; the kernel wakes the
    /// caller the moment the holder lets go. The default polls
    /// [`try_lock`](FsRwFile::try_lock) with a backoff up to 1 ms, for file systems
    /// (simulations) that cannot block.
    fn lock(&self, mode: LockMode) -> io::Result<()> {
        let mut backoff = std::time::Duration::from_micros(10);
        while !self.try_lock(mode)? {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(std::time::Duration::from_millis(1));
        }
        Ok(())
    }
    /// `flock(LOCK_UN)`.
    fn unlock(&self) -> io::Result<()>;
}

/// What [`FsDir::hold`] returns: dropping it releases the file (closes the descriptor).
pub type Held = Box<dyn fmt::Debug + Send>;

/// The file system: resolving paths, and opening directories. See the
/// [module docs](self).
pub trait Fs: Send + Sync + fmt::Debug {
    /// Open the directory `dir` as a handle. `dir` must be free of symlinks (canonical,
    /// as [`Fs::canonicalize`] returns it): a symlink found in it is an error (`ELOOP`),
    /// because a write resolves its directory once and must not be redirected later.
    fn open_dir(&self, dir: &Path) -> io::Result<Box<dyn FsDir>>;
    /// `stat(2)`, following symlinks.
    fn metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// `lstat(2)`, not following symlinks.
    fn symlink_metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// `readlink(2)`.
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    /// `realpath(3)`: an absolute path with every symlink and `..` resolved.
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf>;
    /// The process's file-mode creation mask, as it is now (asked only when a new
    /// document is made: a process may change it between two writes).
    fn umask(&self) -> u32;
    /// An identifier of the running boot of the machine (Linux:
    /// `/proc/sys/kernel/random/boot_id`), or `None` where there is none. The journal
    /// uses it to tell a power loss or reboot, after which nothing that was not synced
    /// can be trusted, from a process crash, after which the page cache still holds
    /// everything written.
    fn boot_id(&self) -> Option<u128> {
        None
    }
    /// The mount points strictly inside the directory `root` (canonical), as the system
    /// lists them now (Linux: `/proc/self/mountinfo`); `Unsupported` where it cannot
    /// tell. A journal checkpoint that cannot reach a document where its records name
    /// it syncs these too: the document may have moved with a mount point.
    fn mounts_inside(&self, root: &Path) -> io::Result<Vec<PathBuf>> {
        let _ = root;
        Err(io::ErrorKind::Unsupported.into())
    }
    /// `sync(2)`: every file system of the machine written out. It reports no error, so
    /// it is the last resort, for a file system no directory of which can be opened.
    fn sync_all_file_systems(&self) {}
}

/// One open directory: every call names a file directly inside it, and none follows a
/// symlink at that name. See the [module docs](self).
pub trait FsDir: Send + Sync + fmt::Debug {
    /// Create a new file for writing (`O_CREAT | O_EXCL`, so a name that exists,
    /// a symlink included, is `AlreadyExists`), with permission bits `mode` (before the
    /// umask).
    fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<Box<dyn FsFile>>;
    /// Open an existing file for reading, without following a symlink (`O_NOFOLLOW`:
    /// a symlink is an error, `ELOOP`) and without blocking (`O_NONBLOCK`: a FIFO opens
    /// at once instead of waiting for a writer). Check the type with
    /// [`FsFile::metadata`] before reading: only a regular file is a document.
    fn open_read(&self, name: &OsStr) -> io::Result<Box<dyn FsFile>>;
    /// Open a lock file (as [`FsDir::open_read`] does: no symlinks, no blocking),
    /// creating it (mode 0644 before the umask) if missing. Read access is enough to
    /// lock, so a lock file created by another user still works.
    fn open_lock(&self, name: &OsStr) -> io::Result<Box<dyn FsLockFile>>;
    /// `fstatat(2)` without following a symlink.
    fn stat(&self, name: &OsStr) -> io::Result<Metadata>;
    /// `fstat(2)` of the directory itself: its identity (`dev`, `ino`) tells whether two
    /// handles opened the same directory. By default `fstatat(2)` of `"."`.
    fn metadata(&self) -> io::Result<Metadata> {
        self.stat(OsStr::new("."))
    }
    /// `renameat(2)` within this directory: atomically replaces `to` if it exists.
    fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()>;
    /// `renameat2(2)` with `RENAME_EXCHANGE` within this directory: atomically swaps the
    /// files at `a` and `b` (both must exist; neither is followed if a symlink). The
    /// default, and a file system without it, fail with `Unsupported` (or `EINVAL`):
    /// the caller renames instead.
    fn exchange(&self, a: &OsStr, b: &OsStr) -> io::Result<()> {
        let _ = (a, b);
        Err(io::ErrorKind::Unsupported.into())
    }
    /// A handle on the file now at `name` (a symlink itself, never followed) that keeps
    /// it alive, its blocks included, until the handle is dropped, even once no name
    /// points at it; the file is not opened for reading or writing (Linux: `O_PATH`, so
    /// no permission is checked and a device or FIFO is not woken). A write holds the
    /// version it replaces across the rename: the rename then only unlinks it, and
    /// freeing its blocks (tens of microseconds on ext4 mounted with `discard`) happens
    /// when the handle is closed, off the writer's path. `Ok(None)` (the default) where
    /// the file system has no such handle: the rename frees the old version itself.
    fn hold(&self, name: &OsStr) -> io::Result<Option<Held>> {
        let _ = name;
        Ok(None)
    }
    /// `linkat(2)`: a second name for `original` (a symlink itself is linked, never
    /// followed).
    fn hard_link(&self, original: &OsStr, link: &OsStr) -> io::Result<()>;
    /// `unlinkat(2)`.
    fn remove_file(&self, name: &OsStr) -> io::Result<()>;
    /// `mkdirat(2)` with mode 0755 before the umask; fails if `name` exists.
    fn create_dir(&self, name: &OsStr) -> io::Result<()>;
    /// `unlinkat(2)` with `AT_REMOVEDIR`: remove an empty directory.
    fn remove_dir(&self, name: &OsStr) -> io::Result<()>;
    /// Open the subdirectory `name` (a symlink there is an error, `ELOOP`).
    fn open_dir(&self, name: &OsStr) -> io::Result<Box<dyn FsDir>>;
    /// `fsync(2)` on this directory, making the creations, links, renames and unlinks
    /// of names in it durable.
    fn sync(&self) -> io::Result<()>;
    /// `syncfs(2)` through this directory's handle: everything written to its file
    /// system made durable, without opening a file (for a process out of descriptors).
    /// The default, and a system without it, fail with `Unsupported`.
    fn sync_fs(&self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// The entries, without `.` and `..`, in no particular order.
    fn read_dir(&self) -> io::Result<Vec<DirEntry>>;
    /// Open the file `name` for reading and writing at offsets (`O_RDWR|O_NOFOLLOW`),
    /// creating it with `mode` (before the umask) if `create` and it is missing. Check
    /// the type with [`FsRwFile::metadata`]: only a regular file is a journal. File
    /// systems that cannot provide this (the default) cannot hold a journal: enabling
    /// one fails, and so do writes in a tree that has one, with this error.
    fn open_rw(&self, name: &OsStr, mode: u32, create: bool) -> io::Result<Box<dyn FsRwFile>> {
        let _ = (name, mode, create);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this file system cannot open files for positional writes (no journal here)",
        ))
    }
    /// Whether this process may write the existing file `name` (`faccessat(2)` with
    /// the effective user and group). Replacing a file by rename only needs write
    /// access to its directory; statefile also requires it on the file, so a read-only
    /// document or one owned by another user is refused rather than silently taken over.
    fn check_write_access(&self, name: &OsStr) -> io::Result<()>;
}

/// The file system statefile uses unless told otherwise: the real one.
pub fn default_fs() -> Arc<dyn Fs> {
    static OS: std::sync::OnceLock<Arc<dyn Fs>> = std::sync::OnceLock::new();
    OS.get_or_init(|| Arc::new(OsFs)).clone()
}

/// Run `f` again while it fails with `EINTR`. Opens and lock attempts go through this;
/// reads and writes are retried by std's `read_to_end`/`write_all`. A sync is never
/// retried: after a failed fsync the data may already be gone.
pub(crate) fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Room for a file of `len` bytes, or an error (not an abort) when memory cannot hold it:
/// a sparse file of a terabyte must not take the process down.
pub(crate) fn reserve_for(buf: &mut Vec<u8>, len: u64) -> io::Result<()> {
    usize::try_from(len)
        .ok()
        .and_then(|n| buf.try_reserve_exact(n).ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("the file is {len} bytes, too large to read into memory"),
            )
        })
}

/// How many held files may wait for the releasing thread; past that a writer closes
/// its own (the old version's blocks are then freed on its path, as without a hold).
const RELEASE_QUEUE: usize = 16;

/// How long a held file waits for a flush (see [`release_now`]) before the releasing
/// thread closes it anyway.
const RELEASE_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Default)]
struct Releases {
    queue: Vec<Held>,
    /// Close what is queued now.
    due: bool,
    /// The thread sleeps until woken (nothing was queued for a whole [`RELEASE_DELAY`]):
    /// the next handle queued must wake it. Otherwise it is closing, or waiting at most
    /// that long, and picks up what is queued meanwhile without a wake.
    parked: bool,
    /// The thread's last wait ran out with nothing queued: it parks next.
    idle: bool,
}

struct Releaser {
    state: std::sync::Mutex<Releases>,
    wake: std::sync::Condvar,
}

/// This process's release thread (`None` if it could not be started). A
/// [`crate::process::PerProcess`]: a forked child, which has none of its parent's
/// threads, starts its own, and never waits for the parent's `OnceLock`, which a parent
/// thread may have been initialising (spawning the thread, which takes a while) at the
/// fork: a child that waited for it waited for ever in its first replace.
fn releaser() -> Option<&'static Releaser> {
    static R: crate::process::PerProcess<std::sync::OnceLock<Option<&'static Releaser>>> =
        crate::process::PerProcess::new();
    *R.get().get_or_init(|| {
        let r: &'static Releaser = Box::leak(Box::new(Releaser {
            state: std::sync::Mutex::new(Releases {
                idle: true,
                ..Releases::default()
            }),
            wake: std::sync::Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("statefile-release".into())
            .spawn(move || release_loop(r))
            .ok()
            .map(|_| r)
    })
}

/// The releasing thread. Between writes it waits at most [`RELEASE_DELAY`] (so a writer
/// queueing a handle need not wake it: one wake per write, the flush's, instead of
/// two); after a whole delay with nothing queued it sleeps until woken, so an idle
/// process has no timer firing.
fn release_loop(r: &Releaser) {
    fn lock(m: &std::sync::Mutex<Releases>) -> std::sync::MutexGuard<'_, Releases> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    let mut st = lock(&r.state);
    loop {
        if st.due {
            st.due = false;
            let batch = std::mem::take(&mut st.queue);
            drop(st);
            drop(batch);
            st = lock(&r.state);
            continue;
        }
        if st.queue.is_empty() && st.idle {
            st.parked = true;
            st = r.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            st.parked = false;
            st.idle = false;
            continue;
        }
        let (g, waited) = r
            .wake
            .wait_timeout(st, RELEASE_DELAY)
            .unwrap_or_else(|e| e.into_inner());
        st = g;
        if waited.timed_out() && !st.due {
            if st.queue.is_empty() {
                st.idle = true;
            } else {
                // Held a whole delay without a flush: closed anyway.
                st.due = true;
            }
        }
    }
}

/// Keep `held` (see [`FsDir::hold`]) for the releasing thread, which closes it (freeing
/// the replaced version's blocks, which happens at that last close) at the writer's
/// next flush ([`release_now`]) or after [`RELEASE_DELAY`]: then the freeing runs while
/// the writer waits for the disk, instead of inside its rename or alongside its next
/// file creation (both take the same file-system locks). The thread only closes those
/// handles (which read and write nothing); at most [`RELEASE_QUEUE`] wait for it, so a
/// process never keeps more than that many replaced versions (and their disk space)
/// alive. A forked child has a thread of its own (see [`releaser`]); if the thread
/// cannot be started, the caller drops it itself.
pub(crate) fn release_later(held: Held) {
    let Some(r) = releaser() else {
        drop(held);
        return;
    };
    let mut st = r.state.lock().unwrap_or_else(|e| e.into_inner());
    if st.queue.len() >= RELEASE_QUEUE {
        drop(st);
        drop(held);
        return;
    }
    // A parked thread sleeps without a deadline: the handle must wake it, so that it
    // starts a RELEASE_DELAY wait (it closes nothing before that, or the writer's next
    // flush). Without this wake, a process that stopped writing kept the last replaced
    // versions (and their blocks) until the next flush, forever if none came. A thread
    // not parked is waiting at most that long, or closing, and finds it without one.
    st.queue.push(held);
    if st.queue.len() >= RELEASE_QUEUE / 2 {
        st.due = true;
    }
    let wake = st.due || st.parked;
    drop(st);
    if wake {
        r.wake.notify_one();
    }
}

/// The caller is about to wait for a flush: have the releasing thread close what is
/// queued now, while this thread waits.
pub(crate) fn release_now() {
    let Some(r) = releaser() else { return };
    let mut st = r.state.lock().unwrap_or_else(|e| e.into_inner());
    if st.queue.is_empty() {
        return;
    }
    st.due = true;
    drop(st);
    r.wake.notify_one();
}
