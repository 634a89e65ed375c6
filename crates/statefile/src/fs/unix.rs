//! [`Fs`] on Unix, through `std` only (no `unsafe`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{DirEntry, FileType, Fs, FsFile, FsLockFile, Metadata};

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsFs;

fn file_type(ft: fs::FileType) -> FileType {
    if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_dir() {
        FileType::Dir
    } else if ft.is_file() {
        FileType::File
    } else {
        FileType::Other
    }
}

fn convert(m: &fs::Metadata) -> Metadata {
    Metadata {
        file_type: file_type(m.file_type()),
        dev: m.dev(),
        ino: m.ino(),
        nlink: m.nlink(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    }
}

#[derive(Debug)]
struct OsFile(File);

impl Read for OsFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for OsFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FsFile for OsFile {
    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn metadata(&self) -> io::Result<Metadata> {
        Ok(convert(&self.0.metadata()?))
    }
    fn set_mode(&mut self, mode: u32) -> io::Result<()> {
        self.0.set_permissions(fs::Permissions::from_mode(mode))
    }
    fn set_owner(&mut self, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::fchown(&self.0, Some(uid), Some(gid))
    }
}

#[derive(Debug)]
struct OsLock(File);

impl FsLockFile for OsLock {
    fn try_lock(&self) -> io::Result<bool> {
        match self.0.try_lock() {
            Ok(()) => Ok(true),
            Err(fs::TryLockError::WouldBlock) => Ok(false),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
    fn unlock(&self) -> io::Result<()> {
        self.0.unlock()
    }
    fn metadata(&self) -> io::Result<Metadata> {
        Ok(convert(&self.0.metadata()?))
    }
}

impl Fs for OsFs {
    fn create_new(&self, path: &Path, mode: u32) -> io::Result<Box<dyn FsFile>> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        Ok(Box::new(OsFile(f)))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(OsFile(File::open(path)?)))
    }

    fn open_lock(&self, path: &Path) -> io::Result<Box<dyn FsLockFile>> {
        // Read access is enough for flock: try that first so a lock file created by
        // another user (root, 0644) still works; create it only when it is missing.
        match File::open(path) {
            Ok(f) => Ok(Box::new(OsLock(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(path)?;
                Ok(Box::new(OsLock(f)))
            }
            Err(e) => Err(e),
        }
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        Ok(convert(&fs::metadata(path)?))
    }

    fn symlink_metadata(&self, path: &Path) -> io::Result<Metadata> {
        Ok(convert(&fs::symlink_metadata(path)?))
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        fs::read_link(path)
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        fs::canonicalize(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        fs::hard_link(original, link)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            out.push(DirEntry {
                name: entry.file_name(),
                file_type: file_type(entry.file_type()?),
            });
        }
        Ok(out)
    }

    fn umask(&self) -> u32 {
        process_umask()
    }

    fn check_write_access(&self, path: &Path) -> io::Result<()> {
        // access(2) rather than open(O_WRONLY): opening for write would wake inotify
        // watchers (IN_CLOSE_WRITE) on the old version before it is even replaced.
        rustix::fs::accessat(
            rustix::fs::CWD,
            path,
            rustix::fs::Access::WRITE_OK,
            rustix::fs::AtFlags::EACCESS,
        )
        .map_err(io::Error::from)
    }
}

/// The umask, read once from `/proc/self/status` (Linux 4.7+); 022 where unavailable.
/// Reading it with `umask(2)` would need `unsafe` and briefly change it for all threads.
fn process_umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    })
}
