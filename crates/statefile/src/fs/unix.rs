//! [`Fs`] on Unix, through `std` and `rustix` (no `unsafe`).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
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

    fn pin_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn Fs>>> {
        let fd = OsFs::open_dir_no_symlinks(dir)?;
        Ok(Some(Box::new(PinnedDir {
            dir: dir.to_path_buf(),
            fd,
        })))
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

impl OsFs {
    /// Open `dir` as a directory handle, refusing any symlink on the way (Linux 5.6+
    /// `openat2` with `RESOLVE_NO_SYMLINKS`; a plain `open` where that call is missing).
    fn open_dir_no_symlinks(dir: &Path) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match rfs::openat2(
            rfs::CWD,
            dir,
            flags,
            Mode::empty(),
            rfs::ResolveFlags::NO_SYMLINKS | rfs::ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                Ok(rfs::openat(rfs::CWD, dir, flags, Mode::empty())?)
            }
            r => Ok(r?),
        }
    }
}

/// [`OsFs`] with one directory held open ([`Fs::pin_dir`]): calls on names directly
/// inside it go through the handle, never through the directory's path again. Final
/// components are not followed when they are symlinks (the write path only ever meets
/// regular files there, so a symlink is someone else's doing).
#[derive(Debug)]
struct PinnedDir {
    dir: PathBuf,
    fd: OwnedFd,
}

impl PinnedDir {
    /// The name of `path` when it is directly inside the pinned directory.
    fn name<'a>(&self, path: &'a Path) -> Option<&'a OsStr> {
        if path.parent() == Some(self.dir.as_path()) {
            path.file_name()
        } else {
            None
        }
    }

    fn open(&self, name: &OsStr, flags: OFlags, mode: u32) -> io::Result<File> {
        let fd = rfs::openat(
            &self.fd,
            name,
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(mode),
        )?;
        Ok(File::from(fd))
    }

    fn stat(&self, name: &OsStr, flags: AtFlags) -> io::Result<Metadata> {
        let st = rfs::statat(&self.fd, name, flags)?;
        let mode = st.st_mode as u32;
        Ok(Metadata {
            file_type: match rfs::FileType::from_raw_mode(mode as _) {
                rfs::FileType::RegularFile => FileType::File,
                rfs::FileType::Directory => FileType::Dir,
                rfs::FileType::Symlink => FileType::Symlink,
                _ => FileType::Other,
            },
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
            mode: mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            len: st.st_size as u64,
            mtime_ns: i128::from(st.st_mtime as i64) * 1_000_000_000
                + i128::from(st.st_mtime_nsec as i64),
            ctime_ns: i128::from(st.st_ctime as i64) * 1_000_000_000
                + i128::from(st.st_ctime_nsec as i64),
        })
    }
}

impl Fs for PinnedDir {
    fn create_new(&self, path: &Path, mode: u32) -> io::Result<Box<dyn FsFile>> {
        match self.name(path) {
            Some(n) => {
                let f = self.open(n, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, mode)?;
                Ok(Box::new(OsFile(f)))
            }
            None => OsFs.create_new(path, mode),
        }
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        match self.name(path) {
            Some(n) => Ok(Box::new(OsFile(self.open(n, OFlags::RDONLY, 0)?))),
            None => OsFs.open_read(path),
        }
    }

    fn open_lock(&self, path: &Path) -> io::Result<Box<dyn FsLockFile>> {
        let Some(n) = self.name(path) else {
            return OsFs.open_lock(path);
        };
        match self.open(n, OFlags::RDONLY, 0) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Box::new(OsLock(self.open(
                n,
                OFlags::RDWR | OFlags::CREATE,
                0o644,
            )?))),
            r => Ok(Box::new(OsLock(r?))),
        }
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        match self.name(path) {
            Some(n) => self.stat(n, AtFlags::empty()),
            None => OsFs.metadata(path),
        }
    }

    fn symlink_metadata(&self, path: &Path) -> io::Result<Metadata> {
        match self.name(path) {
            Some(n) => self.stat(n, AtFlags::SYMLINK_NOFOLLOW),
            None => OsFs.symlink_metadata(path),
        }
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        OsFs.read_link(path)
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        OsFs.canonicalize(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        match (self.name(from), self.name(to)) {
            (Some(a), Some(b)) => Ok(rfs::renameat(&self.fd, a, &self.fd, b)?),
            _ => OsFs.rename(from, to),
        }
    }

    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        match (self.name(original), self.name(link)) {
            (Some(a), Some(b)) => Ok(rfs::linkat(&self.fd, a, &self.fd, b, AtFlags::empty())?),
            _ => OsFs.hard_link(original, link),
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self.name(path) {
            Some(n) => Ok(rfs::unlinkat(&self.fd, n, AtFlags::empty())?),
            None => OsFs.remove_file(path),
        }
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        match self.name(path) {
            Some(n) => Ok(rfs::mkdirat(&self.fd, n, Mode::from_raw_mode(0o755))?),
            None => OsFs.create_dir(path),
        }
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        match self.name(path) {
            Some(n) => Ok(rfs::unlinkat(&self.fd, n, AtFlags::REMOVEDIR)?),
            None => OsFs.remove_dir(path),
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if path == self.dir {
            Ok(rfs::fsync(&self.fd)?)
        } else {
            OsFs.sync_dir(path)
        }
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        OsFs.read_dir(path)
    }

    fn umask(&self) -> u32 {
        OsFs.umask()
    }

    fn check_write_access(&self, path: &Path) -> io::Result<()> {
        match self.name(path) {
            Some(n) => Ok(rfs::accessat(
                &self.fd,
                n,
                rfs::Access::WRITE_OK,
                AtFlags::EACCESS,
            )?),
            None => OsFs.check_write_access(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_directory_swapped_for_a_symlink_still_gets_the_write() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir(&dir).unwrap();
        fs::create_dir(&elsewhere).unwrap();
        let pinned = OsFs.pin_dir(&dir).unwrap().expect("OsFs pins");
        // Someone swaps the directory for a symlink to another place.
        let moved = root.path().join("moved");
        fs::rename(&dir, &moved).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();

        let mut f = pinned.create_new(&dir.join(".a.json.tmp"), 0o600).unwrap();
        f.write_all(b"{}").unwrap();
        f.sync_all().unwrap();
        pinned
            .rename(&dir.join(".a.json.tmp"), &dir.join("a.json"))
            .unwrap();
        pinned.sync_dir(&dir).unwrap();
        assert_eq!(fs::read(moved.join("a.json")).unwrap(), b"{}");
        assert_eq!(
            fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing reached the symlink's target"
        );
    }

    #[test]
    fn pinning_refuses_a_path_with_a_symlink_in_it() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let probe = rfs::openat2(
            rfs::CWD,
            root.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            rfs::ResolveFlags::NO_SYMLINKS,
        );
        if matches!(
            probe,
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM)
        ) {
            println!("skipping: this kernel has no openat2 (Linux 5.6+)");
            return;
        }
        assert!(OsFs.pin_dir(&real).is_ok());
        let e = OsFs.pin_dir(&link).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(40), "ELOOP: {e}");
    }

    #[test]
    fn a_pinned_final_component_that_became_a_symlink_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        fs::create_dir(&dir).unwrap();
        fs::write(root.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), dir.join("a.json")).unwrap();
        let pinned = OsFs.pin_dir(&dir).unwrap().unwrap();
        let e = pinned.open_read(&dir.join("a.json")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(40), "ELOOP: {e}");
        // Names outside the pinned directory still work, by path.
        assert!(pinned.open_read(&root.path().join("secret")).is_ok());
    }
}
