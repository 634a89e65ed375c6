//! The seam between statefile and the operating system.
//!
//! Every file-system call the library makes (writes, reads, directory listing and
//! creation, links, renames, syncs and locks) goes through the [`Fs`] trait. The real
//! implementation is [`OsFs`]; tests plug in implementations that fail any single call
//! or record every operation to replay the states a power loss could leave.
//!
//! The trait is deliberately small and path-based: each method is one system call (or
//! the obvious short sequence, like `open` + `fsync` + `close` for [`Fs::sync_dir`]), so
//! a recording of calls is a recording of what the kernel was asked to do.

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
    /// A symbolic link (only reported by [`Fs::symlink_metadata`] and [`Fs::read_dir`]).
    Symlink,
    /// Anything else: sockets, FIFOs, devices.
    Other,
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

/// One entry of [`Fs::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's file name (not a path).
    pub name: std::ffi::OsString,
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
}

/// An open lock file: an exclusive advisory lock (`flock(2)` on Unix), released when
/// [`unlock`](FsLockFile::unlock) is called, the value is dropped, or the process dies.
pub trait FsLockFile: Send + fmt::Debug {
    /// Try to take the exclusive lock without blocking: `Ok(false)` if another open
    /// file description holds it.
    fn try_lock(&self) -> io::Result<bool>;
    /// Release the lock.
    fn unlock(&self) -> io::Result<()>;
    /// `fstat(2)` of the lock file, to check it is still the one linked at its path.
    fn metadata(&self) -> io::Result<Metadata>;
}

/// The file-system operations statefile performs. See the [module docs](self).
pub trait Fs: Send + Sync + fmt::Debug {
    /// Create a new file for writing with `O_CREAT | O_EXCL` and permission bits `mode`
    /// (before the umask). Fails with `AlreadyExists` if the name is taken.
    fn create_new(&self, path: &Path, mode: u32) -> io::Result<Box<dyn FsFile>>;
    /// Open an existing file for reading (following symlinks).
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Open a lock file, creating it (mode 0644 before the umask) if missing. Read
    /// access is enough to lock, so a lock file created by another user still works.
    fn open_lock(&self, path: &Path) -> io::Result<Box<dyn FsLockFile>>;
    /// `stat(2)`, following symlinks.
    fn metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// `lstat(2)`, not following symlinks.
    fn symlink_metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// `readlink(2)`.
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    /// `realpath(3)`: an absolute path with every symlink and `..` resolved.
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf>;
    /// `rename(2)`: atomically replaces `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// `link(2)`: a second name for `original`.
    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()>;
    /// `unlink(2)`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// `mkdir(2)` with mode 0755 before the umask; fails if `path` exists.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// `rmdir(2)`: remove an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// `fsync(2)` on a directory, making the creations, links, renames and unlinks of
    /// names in it durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// The entries of a directory, without `.` and `..`, in no particular order.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    /// The process's file-mode creation mask.
    fn umask(&self) -> u32;
    /// This file system with the directory `dir` held open: calls on names directly
    /// inside `dir` are made relative to that handle (`openat`, `renameat`, `linkat`,
    /// `unlinkat`, `fstatat`, `fsync`), so a component of `dir` swapped for a symlink
    /// after it was resolved cannot redirect them. `dir` must be free of symlinks
    /// (canonical); one found there is an error. `Ok(None)` where the file system has
    /// no such handles (the default, for simulations): paths are used as they are.
    fn pin_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn Fs>>> {
        let _ = dir;
        Ok(None)
    }
    /// Whether this process may write the existing file at `path` (`access(2)` with
    /// the effective user and group). Replacing a file by rename only needs write
    /// access to its directory; statefile also requires it on the file, so a read-only
    /// document or one owned by another user is refused rather than silently taken over.
    /// The default allows everything (for simulations that do not model permissions).
    fn check_write_access(&self, path: &Path) -> io::Result<()> {
        let _ = path;
        Ok(())
    }
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

/// Read a whole file through the seam.
pub(crate) fn read_all(fs: &dyn Fs, path: &Path) -> io::Result<Vec<u8>> {
    let mut f = retry(|| fs.open_read(path))?;
    let mut buf = Vec::new();
    if let Ok(meta) = f.metadata() {
        reserve_for(&mut buf, meta.len)?;
    }
    io::Read::read_to_end(&mut f, &mut buf)?;
    Ok(buf)
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
