//! [`Fs`] and [`FsDir`] on Unix, through `std` and `rustix` (no `unsafe`).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::num::NonZeroU64;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::{DirEntry, FileType, Fs, FsDir, FsFile, FsLockFile, FsRwFile, LockMode, Metadata};

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsFs;

fn file_type(ft: rfs::FileType) -> FileType {
    match ft {
        rfs::FileType::RegularFile => FileType::File,
        rfs::FileType::Directory => FileType::Dir,
        rfs::FileType::Symlink => FileType::Symlink,
        rfs::FileType::Fifo => FileType::Fifo,
        rfs::FileType::Socket => FileType::Socket,
        _ => FileType::Device,
    }
}

fn std_file_type(ft: fs::FileType) -> FileType {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_dir() {
        FileType::Dir
    } else if ft.is_file() {
        FileType::File
    } else if ft.is_fifo() {
        FileType::Fifo
    } else if ft.is_socket() {
        FileType::Socket
    } else {
        FileType::Device
    }
}

fn convert(m: &fs::Metadata) -> Metadata {
    Metadata {
        file_type: std_file_type(m.file_type()),
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

// The field types of `struct stat` differ between Unix platforms: the casts are needed
// on some of them.
#[allow(clippy::unnecessary_cast)]
fn convert_stat(st: &rfs::Stat) -> Metadata {
    let mode = st.st_mode as u32;
    Metadata {
        file_type: file_type(rfs::FileType::from_raw_mode(mode as _)),
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
    /// As [`OsRw::start_writeback`], over the file up to its last byte, if it is a
    /// regular file of at most [`HINT_MAX`] bytes (one system call per 4 KiB: a huge or
    /// sparse file put in the store must not cost a checkpoint many hints; its sync
    /// writes it anyway). The last byte is left out: Linux drops the partial page at
    /// the end of a range that reaches the end of the file, which would take a small
    /// document out of the cache.
    fn start_writeback(&self) {
        if let Ok(m) = self.0.metadata()
            && m.is_file()
            && m.len() <= HINT_MAX
        {
            hint_writeback(&self.0, 0, m.len().saturating_sub(1));
        }
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
    fn lock(&self) -> io::Result<()> {
        self.0.lock()
    }
    fn unlock(&self) -> io::Result<()> {
        self.0.unlock()
    }
    fn metadata(&self) -> io::Result<Metadata> {
        Ok(convert(&self.0.metadata()?))
    }
}

/// A file for positional reads and writes (the journal's files).
#[derive(Debug)]
struct OsRw(File);

/// `len` bytes at `offset` cut at the middle of every 4 KiB page: pieces of at most
/// 4 KiB, none holding a whole page (see [`OsRw::start_writeback`]).
fn writeback_pieces(offset: u64, len: u64) -> impl Iterator<Item = (u64, NonZeroU64)> {
    const PAGE: u64 = 4096;
    let end = offset.saturating_add(len);
    let mut at = offset;
    std::iter::from_fn(move || {
        let next = ((at + PAGE / 2) / PAGE * PAGE + PAGE / 2).min(end);
        let piece = (at, NonZeroU64::new(next.checked_sub(at)?)?);
        at = next;
        Some(piece)
    })
}

/// The largest file [`OsFile::start_writeback`] hints (64 pieces).
const HINT_MAX: u64 = 256 << 10;

/// `posix_fadvise(POSIX_FADV_DONTNEED)` over `len` bytes at `offset` of `file`, in
/// [`writeback_pieces`] (see [`OsRw::start_writeback`]).
fn hint_writeback(file: &File, offset: u64, len: u64) {
    for (at, n) in writeback_pieces(offset, len) {
        // A hint (see the traits): its failure leaves the flush to the sync after it.
        let _ = rustix::fs::fadvise(file, at, Some(n), rustix::fs::Advice::DontNeed);
    }
}

impl FsRwFile for OsRw {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.0, buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::write_at(&self.0, buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    /// `posix_fadvise(POSIX_FADV_DONTNEED)` over the range, in pieces that never hold a
    /// whole 4 KiB-aligned page: Linux starts writing the dirty pages a piece touches
    /// back (without waiting), then drops the whole pages inside it that are clean. A
    /// piece with no whole page drops nothing (so no page of the journal leaves the
    /// cache, and the kernel never falls back to draining every CPU's page lists for a
    /// page it could not drop). What PostgreSQL falls back to where
    /// `sync_file_range(2)` is missing, which neither rustix nor nix offers. Pages are
    /// at least 4 KiB, so a piece of at most 4 KiB that starts mid-page holds no whole
    /// page of any size.
    fn start_writeback(&self, offset: u64, len: u64) {
        hint_writeback(&self.0, offset, len);
    }
    fn metadata(&self) -> io::Result<Metadata> {
        Ok(convert(&self.0.metadata()?))
    }
    fn try_lock(&self, mode: LockMode) -> io::Result<bool> {
        let r = match mode {
            LockMode::Shared => self.0.try_lock_shared(),
            LockMode::Exclusive => self.0.try_lock(),
        };
        match r {
            Ok(()) => Ok(true),
            Err(fs::TryLockError::WouldBlock) => Ok(false),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
    fn lock(&self, mode: LockMode) -> io::Result<()> {
        match mode {
            LockMode::Shared => self.0.lock_shared(),
            LockMode::Exclusive => self.0.lock(),
        }
    }
    fn unlock(&self) -> io::Result<()> {
        self.0.unlock()
    }
}

impl Fs for OsFs {
    fn open_dir(&self, dir: &Path) -> io::Result<Box<dyn FsDir>> {
        Ok(Box::new(OsDir(open_dir_no_symlinks(dir)?)))
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn mounts_inside(&self, root: &Path) -> io::Result<Vec<PathBuf>> {
        // Bounded: a table larger than this is not read whole (an error, not a guess).
        const MAX: u64 = 16 << 20;
        let mut text = Vec::new();
        File::open("/proc/self/mountinfo")?
            .take(MAX + 1)
            .read_to_end(&mut text)?;
        if text.len() as u64 > MAX {
            return Err(io::Error::other("/proc/self/mountinfo is over 16 MiB"));
        }
        Ok(mount_points(&text)
            .into_iter()
            .filter(|m| m != root && m.starts_with(root))
            .collect())
    }

    fn sync_all_file_systems(&self) {
        rfs::sync();
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
        canonical_without_symlinks(path).map_or_else(|| fs::canonicalize(path), Ok)
    }

    fn umask(&self) -> u32 {
        process_umask()
    }

    fn boot_id(&self) -> Option<u128> {
        static BOOT: OnceLock<Option<u128>> = OnceLock::new();
        *BOOT.get_or_init(|| {
            let text = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
            let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
            (hex.len() == 32)
                .then(|| u128::from_str_radix(&hex, 16).ok())
                .flatten()
        })
    }
}

/// The umask now, from `/proc/self/status` (Linux 4.7+); 022 where unavailable.
/// Reading it with `umask(2)` would need `unsafe` and briefly change it for all threads.
/// Read each time (only a new document asks): a process may change its umask after its
/// first write (a daemon after it forked, gunicorn's `--umask` in its workers), and a
/// value cached then made their new documents readable by everyone.
fn process_umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

/// Open `dir` as a directory handle, refusing any symlink on the way (Linux 5.6+
/// `openat2` with `RESOLVE_NO_SYMLINKS`; a plain `open` where that call is missing or
/// forbidden by a seccomp filter).
fn open_dir_no_symlinks(dir: &Path) -> io::Result<OwnedFd> {
    match rfs::openat2(
        rfs::CWD,
        dir,
        DIR_FLAGS,
        Mode::empty(),
        rfs::ResolveFlags::NO_SYMLINKS | rfs::ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(Errno::NOSYS | Errno::PERM) => {
            Ok(rfs::openat(rfs::CWD, dir, DIR_FLAGS, Mode::empty())?)
        }
        r => Ok(r?),
    }
}

/// `path` itself, as `realpath(3)` would give it, when it is absolute, names no `..`,
/// does not end in `/` or `/.`, and one `openat2` with `RESOLVE_NO_SYMLINKS` finds it
/// with no symlink on the way: then the path is already canonical. One call where `realpath` makes one per
/// component (every write resolves its document's directory). `None` (take
/// `realpath`'s way) on a symlink, a missing file, a relative path, or a kernel
/// without `openat2`.
fn canonical_without_symlinks(path: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::path::Component;
    // `Path::components` drops a trailing `/` or `/.`, which realpath takes as "must be
    // a directory" (ENOTDIR after a file): leave those to it.
    let raw = path.as_os_str().as_bytes();
    if raw.ends_with(b"/") || raw.ends_with(b"/.") {
        return None;
    }
    let mut clean = PathBuf::new();
    for (i, c) in path.components().enumerate() {
        match c {
            Component::RootDir if i == 0 => clean.push("/"),
            Component::Normal(n) if i > 0 => clean.push(n),
            _ => return None,
        }
    }
    rfs::openat2(
        rfs::CWD,
        &clean,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        rfs::ResolveFlags::NO_SYMLINKS | rfs::ResolveFlags::NO_MAGICLINKS,
    )
    .ok()
    .map(|_| clean)
}

/// The mount points of a `/proc/self/mountinfo` table (its fifth field, with the
/// kernel's octal escapes of space, tab, newline and backslash undone), in its order.
pub(crate) fn mount_points(table: &[u8]) -> Vec<PathBuf> {
    table
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| {
            let mut out = Vec::with_capacity(field.len());
            let mut i = 0;
            while i < field.len() {
                let oct = field
                    .get(i + 1..i + 4)
                    .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
                match oct {
                    Some(d) => {
                        let v = d.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                        out.push(v as u8);
                        i += 4;
                    }
                    None => {
                        out.push(field[i]);
                        i += 1;
                    }
                }
            }
            PathBuf::from(OsStr::from_bytes(&out))
        })
        .collect()
}

/// One directory held open: calls on names go through the handle (`*at` calls), never
/// through the directory's path again, and never follow a symlink at the name.
#[derive(Debug)]
struct OsDir(OwnedFd);

impl OsDir {
    fn open(&self, name: &OsStr, flags: OFlags, mode: u32) -> io::Result<File> {
        let fd = rfs::openat(
            &self.0,
            name,
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(mode),
        )?;
        Ok(File::from(fd))
    }

    /// Open without blocking (a FIFO opens at once), then switch back to blocking
    /// I/O: the caller checks the type before reading, and a regular file's reads
    /// never block anyway.
    fn open_nonblocking(&self, name: &OsStr, flags: OFlags, mode: u32) -> io::Result<File> {
        let f = self.open(name, flags | OFlags::NONBLOCK, mode)?;
        let fl = rfs::fcntl_getfl(f.as_fd())?;
        rfs::fcntl_setfl(f.as_fd(), fl - OFlags::NONBLOCK)?;
        Ok(f)
    }
}

impl FsDir for OsDir {
    fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<Box<dyn FsFile>> {
        let f = self.open(name, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, mode)?;
        Ok(Box::new(OsFile(f)))
    }

    /// `O_NONBLOCK`, so that a FIFO at the name opens at once (the caller checks the
    /// type and reads nothing but a regular file), and left set: Linux ignores it for a
    /// regular file's reads, syncs and hints (the one exception, a mandatory lock on a
    /// file system mounted `-o mand`, where a read answers `EAGAIN` rather than wait,
    /// went with Linux 5.15), so clearing it would cost two `fcntl` calls per document
    /// read for nothing.
    fn open_read(&self, name: &OsStr) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(OsFile(self.open(
            name,
            OFlags::RDONLY | OFlags::NONBLOCK,
            0,
        )?)))
    }

    fn open_lock(&self, name: &OsStr) -> io::Result<Box<dyn FsLockFile>> {
        // Read access is enough for flock: try that first so a lock file created by
        // another user (root, 0644) still works; create it only when it is missing.
        // A lock file is never read or written, so it stays O_NONBLOCK (two fcntl
        // calls fewer per write than open_read).
        let flags = OFlags::RDONLY | OFlags::NONBLOCK;
        match self.open(name, flags, 0) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Box::new(OsLock(self.open(
                name,
                OFlags::RDWR | OFlags::CREATE | OFlags::NONBLOCK,
                0o644,
            )?))),
            r => Ok(Box::new(OsLock(r?))),
        }
    }

    fn stat(&self, name: &OsStr) -> io::Result<Metadata> {
        Ok(convert_stat(&rfs::statat(
            &self.0,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?))
    }

    fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        Ok(rfs::renameat(&self.0, from, &self.0, to)?)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn exchange(&self, a: &OsStr, b: &OsStr) -> io::Result<()> {
        Ok(rfs::renameat_with(
            &self.0,
            a,
            &self.0,
            b,
            rfs::RenameFlags::EXCHANGE,
        )?)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn hold(&self, name: &OsStr) -> io::Result<Option<super::Held>> {
        let fd = rfs::openat(
            &self.0,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Some(Box::new(fd)))
    }

    fn hard_link(&self, original: &OsStr, link: &OsStr) -> io::Result<()> {
        Ok(rfs::linkat(
            &self.0,
            original,
            &self.0,
            link,
            AtFlags::empty(),
        )?)
    }

    fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        Ok(rfs::unlinkat(&self.0, name, AtFlags::empty())?)
    }

    fn create_dir(&self, name: &OsStr) -> io::Result<()> {
        Ok(rfs::mkdirat(&self.0, name, Mode::from_raw_mode(0o755))?)
    }

    fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        Ok(rfs::unlinkat(&self.0, name, AtFlags::REMOVEDIR)?)
    }

    fn open_dir(&self, name: &OsStr) -> io::Result<Box<dyn FsDir>> {
        let fd = rfs::openat(&self.0, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
        Ok(Box::new(OsDir(fd)))
    }

    fn sync(&self) -> io::Result<()> {
        Ok(rfs::fsync(&self.0)?)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn sync_fs(&self) -> io::Result<()> {
        Ok(rfs::syncfs(&self.0)?)
    }

    fn read_dir(&self) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in rfs::Dir::read_from(&self.0)? {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let file_type = match entry.file_type() {
                // Some file systems do not fill in d_type: ask.
                rfs::FileType::Unknown => self.stat(name)?.file_type,
                ft => file_type(ft),
            };
            out.push(DirEntry {
                name: name.to_os_string(),
                file_type,
            });
        }
        Ok(out)
    }

    fn open_rw(&self, name: &OsStr, mode: u32, create: bool) -> io::Result<Box<dyn FsRwFile>> {
        let flags = if create {
            OFlags::RDWR | OFlags::CREATE
        } else {
            OFlags::RDWR
        };
        Ok(Box::new(OsRw(self.open_nonblocking(name, flags, mode)?)))
    }

    fn check_write_access(&self, name: &OsStr) -> io::Result<()> {
        // access(2) rather than open(O_WRONLY): opening for write would wake inotify
        // watchers (IN_CLOSE_WRITE) on the old version before it is even replaced.
        Ok(rfs::accessat(
            &self.0,
            name,
            rfs::Access::WRITE_OK,
            AtFlags::EACCESS,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_the_fifth_field_unescaped() {
        let table = b"22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
            40 22 0:35 / /srv/data/my\\040docs rw - tmpfs tmpfs rw\n\
            41 22 0:36 / /srv/a\\134b\\011c rw - tmpfs tmpfs rw\n\
            41 22 0:36 / /srv/not\\08x rw - tmpfs tmpfs rw\n\
            short line\n";
        assert_eq!(
            mount_points(table),
            [
                PathBuf::from("/"),
                PathBuf::from("/srv/data/my docs"),
                PathBuf::from("/srv/a\\b\tc"),
                PathBuf::from("/srv/not\\08x"),
            ]
        );
    }

    #[test]
    fn the_mounts_inside_a_directory_exclude_it_and_those_outside() {
        let inside = OsFs.mounts_inside(Path::new("/proc")).unwrap();
        assert!(
            inside
                .iter()
                .all(|m| m.starts_with("/proc") && m != Path::new("/proc"))
        );
        assert!(
            !OsFs
                .mounts_inside(Path::new("/"))
                .unwrap()
                .contains(&PathBuf::from("/"))
        );
    }

    /// The writeback hint's pieces cover the range exactly, and none holds a whole
    /// 4 KiB-aligned page (which `POSIX_FADV_DONTNEED` could drop from the cache).
    #[test]
    fn writeback_pieces_cover_the_range_without_a_whole_page() {
        for (offset, len) in [
            (0, 1),
            (0, 4096),
            (8192, 10_176),
            (4095, 2),
            (2048, 4096),
            (100, 70_000),
        ] {
            let pieces: Vec<(u64, u64)> = writeback_pieces(offset, len)
                .map(|(at, n)| (at, n.get()))
                .collect();
            assert_eq!(pieces.first().map(|p| p.0), Some(offset));
            let mut at = offset;
            for &(start, n) in &pieces {
                assert_eq!(start, at, "{pieces:?}");
                assert!(n <= 4096, "{pieces:?}");
                let first_whole = start.div_ceil(4096) * 4096;
                assert!(
                    first_whole + 4096 > start + n,
                    "a whole page in {start}+{n}"
                );
                at = start + n;
            }
            assert_eq!(at, offset + len);
        }
        assert_eq!(writeback_pieces(5, 0).count(), 0);
    }

    /// The pages `fincore(1)` (util-linux) says `path` has in the page cache, or `None`
    /// where it cannot run (then the caller skips, except under `CI=true`).
    fn cached_pages(path: &Path) -> Option<u64> {
        let out = std::process::Command::new("fincore")
            .args(["--noheadings", "--raw", "--output", "PAGES"])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().parse().ok(),
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "fincore (util-linux) cannot run: this test needs it under CI=true"
                );
                eprintln!("skipped: fincore (util-linux) cannot run here");
                None
            }
        }
    }

    /// A checkpoint's writeback hint drops no page of a document from the cache, at any
    /// size (the partial page at the end of the file included, which a hint reaching
    /// the end of the file would drop), and a huge sparse file (which an attacker with
    /// write access could put in the store) costs it one `fstat`, not a hint per 4 KiB
    /// (268 million calls for this one).
    #[test]
    fn the_writeback_hint_drops_no_cached_page_and_skips_huge_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = OsFs.open_dir(dir.path()).unwrap();
        for len in [
            1u64, 36, 2006, 2048, 2049, 4095, 4096, 4097, 6006, 13_288, 70_000,
        ] {
            let name = format!("doc-{len}.json");
            let path = dir.path().join(&name);
            let mut f = std::fs::File::create(&path).unwrap();
            std::io::Write::write_all(&mut f, &vec![b'x'; len as usize]).unwrap();
            // Written out: its pages are clean, which is when a hint could drop them.
            f.sync_all().unwrap();
            let Some(before) = cached_pages(&path) else {
                return;
            };
            assert_eq!(before, len.div_ceil(4096), "{len} bytes: all cached first");
            d.open_read(OsStr::new(&name)).unwrap().start_writeback();
            assert_eq!(
                cached_pages(&path),
                Some(before),
                "{len} bytes: a page dropped"
            );
        }

        let huge = std::fs::File::create(dir.path().join("huge.json")).unwrap();
        huge.set_len(1 << 40).unwrap();
        let f = d.open_read(OsStr::new("huge.json")).unwrap();
        let t = std::time::Instant::now();
        f.start_writeback();
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "the hint walked a 1 TiB file: {:?}",
            t.elapsed()
        );
        const { assert!(HINT_MAX < 1 << 40) };
    }

    /// The one-call canonical path agrees with `realpath` wherever it answers, and
    /// leaves symlinks, dot components and relative paths to it.
    #[test]
    fn canonical_paths_without_symlinks_match_realpath() {
        let root = tempfile::tempdir().unwrap();
        let real = fs::canonicalize(root.path()).unwrap();
        fs::create_dir_all(real.join("a/b")).unwrap();
        fs::write(real.join("a/b/doc.json"), "{}").unwrap();
        std::os::unix::fs::symlink(real.join("a"), real.join("link")).unwrap();
        for p in [
            "a",
            "a/b",
            "a/b/doc.json",
            "a//b/",
            "link",
            "link/b",
            "a/./b",
            "a/../a/b",
        ] {
            let path = real.join(p);
            assert_eq!(
                OsFs.canonicalize(&path).unwrap(),
                fs::canonicalize(&path).unwrap(),
                "{p}"
            );
        }
        if has_openat2() {
            assert_eq!(
                canonical_without_symlinks(&real.join("a//b")),
                Some(real.join("a/b"))
            );
        }
        // A trailing slash asks for a directory: realpath's way (ENOTDIR after a file).
        for p in ["a/b/", "a/b/.", "a/b/doc.json/", "a/b/doc.json/."] {
            assert_eq!(canonical_without_symlinks(&real.join(p)), None, "{p}");
        }
        assert!(OsFs.canonicalize(&real.join("a/b/doc.json/")).is_err());
        // (`Path::components` drops a `.` in the middle: "a/./b" is "a/b".)
        for p in ["link", "link/b", "a/../a/b", "missing"] {
            assert_eq!(canonical_without_symlinks(&real.join(p)), None, "{p}");
        }
        assert_eq!(canonical_without_symlinks(Path::new("a/b")), None);
        assert!(OsFs.canonicalize(&real.join("missing")).is_err());
    }

    fn has_openat2() -> bool {
        let probe = rfs::openat2(
            rfs::CWD,
            "/",
            DIR_FLAGS,
            Mode::empty(),
            rfs::ResolveFlags::NO_SYMLINKS,
        );
        !matches!(probe, Err(Errno::NOSYS | Errno::PERM))
    }

    #[test]
    fn a_pinned_directory_swapped_for_a_symlink_still_gets_the_write() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir(&dir).unwrap();
        fs::create_dir(&elsewhere).unwrap();
        let handle = OsFs.open_dir(&dir).unwrap();
        // Someone swaps the directory for a symlink to another place.
        let moved = root.path().join("moved");
        fs::rename(&dir, &moved).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();

        let mut f = handle.create_new(OsStr::new(".a.json.tmp"), 0o600).unwrap();
        f.write_all(b"{}").unwrap();
        f.sync_all().unwrap();
        handle
            .rename(OsStr::new(".a.json.tmp"), OsStr::new("a.json"))
            .unwrap();
        handle.sync().unwrap();
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
        if !has_openat2() {
            println!("skipping: this kernel has no openat2 (Linux 5.6+)");
            return;
        }
        assert!(OsFs.open_dir(&real).is_ok());
        let e = OsFs.open_dir(&link).unwrap_err();
        assert_eq!(Errno::from_io_error(&e), Some(Errno::LOOP), "{e}");
    }

    #[test]
    fn a_pinned_final_component_that_became_a_symlink_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        fs::create_dir(&dir).unwrap();
        fs::write(root.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), dir.join("a.json")).unwrap();
        let handle = OsFs.open_dir(&dir).unwrap();
        let e = handle.open_read(OsStr::new("a.json")).unwrap_err();
        assert_eq!(Errno::from_io_error(&e), Some(Errno::LOOP), "{e}");
        assert_eq!(
            handle.stat(OsStr::new("a.json")).unwrap().file_type,
            FileType::Symlink
        );
    }

    /// The descriptors of this process that point at `path` (deleted or not).
    fn open_at(path: &Path) -> usize {
        let mut deleted = path.as_os_str().to_os_string();
        deleted.push(" (deleted)");
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .filter(|l| l == path || l.as_os_str() == deleted)
            .count()
    }

    #[test]
    fn a_held_file_outlives_its_last_name_until_released() {
        let root = tempfile::tempdir().unwrap();
        let dir = OsFs.open_dir(root.path()).unwrap();
        let doc = root.path().join("held.json");
        fs::write(&doc, b"old").unwrap();
        let held = dir
            .hold(OsStr::new("held.json"))
            .unwrap()
            .expect("Linux holds");
        assert_eq!(open_at(&doc), 1);
        fs::write(root.path().join("new"), b"new").unwrap();
        dir.rename(OsStr::new("new"), OsStr::new("held.json"))
            .unwrap();
        assert_eq!(fs::read(&doc).unwrap(), b"new");
        assert_eq!(open_at(&doc), 1, "the replaced version is still held");
        super::super::release_later(held);
        wait_released(&doc);
    }

    /// Wait (30 s at most) until no process holds the replaced version of `doc` open.
    fn wait_released(doc: &Path) {
        let start = std::time::Instant::now();
        while open_at(doc) != 0 {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "the releasing thread never closed the held {}",
                doc.display()
            );
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// Between writes the releasing thread is not parked and is not woken for what is
    /// queued: a file held right after a flush's batch was closed is still closed
    /// (within the delay), with no flush after it.
    #[test]
    fn a_file_held_after_a_flush_is_released_without_another_flush() {
        let root = tempfile::tempdir().unwrap();
        let dir = OsFs.open_dir(root.path()).unwrap();
        let mut held = Vec::new();
        for name in ["first.json", "second.json"] {
            fs::write(root.path().join(name), b"old").unwrap();
            held.push(dir.hold(OsStr::new(name)).unwrap().expect("Linux holds"));
            fs::write(root.path().join("new"), b"new").unwrap();
            dir.rename(OsStr::new("new"), OsStr::new(name)).unwrap();
        }
        let second = held.pop().unwrap();
        super::super::release_later(held.pop().unwrap());
        super::super::release_now();
        wait_released(&root.path().join("first.json"));
        super::super::release_later(second);
        wait_released(&root.path().join("second.json"));
    }

    #[test]
    fn holding_wakes_no_fifo_and_follows_no_symlink() {
        let root = tempfile::tempdir().unwrap();
        let dir = OsFs.open_dir(root.path()).unwrap();
        rfs::mknodat(
            open_dir_no_symlinks(root.path()).unwrap(),
            "fifo",
            rfs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // A FIFO with no writer: opening it for reading would block.
        assert!(dir.hold(OsStr::new("fifo")).unwrap().is_some());
        std::os::unix::fs::symlink("/nonexistent", root.path().join("link")).unwrap();
        assert!(
            dir.hold(OsStr::new("link")).unwrap().is_some(),
            "the symlink itself is held, its missing target not looked up"
        );
        let e = dir.hold(OsStr::new("missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_blocking_lock_waits_for_the_holder_and_no_longer() {
        let root = tempfile::tempdir().unwrap();
        let dir = OsFs.open_dir(root.path()).unwrap();
        let a = dir.open_rw(OsStr::new("j"), 0o600, true).unwrap();
        let b = dir.open_rw(OsStr::new("j"), 0o600, false).unwrap();
        a.lock(LockMode::Shared).unwrap();
        b.lock(LockMode::Shared).unwrap();
        b.unlock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            b.lock(LockMode::Exclusive).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(100))
                .is_err(),
            "an exclusive lock was granted while a shared one was held"
        );
        a.unlock().unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("the waiter never got the lock once it was released");
        waiter.join().unwrap();
    }

    #[test]
    fn read_dir_through_the_handle_names_every_type() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path();
        fs::write(d.join("f"), b"").unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        std::os::unix::fs::symlink("f", d.join("l")).unwrap();
        let mut got: Vec<(String, FileType)> = OsFs
            .open_dir(d)
            .unwrap()
            .read_dir()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.to_string_lossy().into_owned(), e.file_type))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            [
                ("f".to_string(), FileType::File),
                ("l".to_string(), FileType::Symlink),
                ("sub".to_string(), FileType::Dir),
            ]
        );
    }
}
