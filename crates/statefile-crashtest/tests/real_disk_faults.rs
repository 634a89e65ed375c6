//! Each step of the write path fails on the real disk (through a wrapper around the
//! real file system): ENOSPC, EIO and EACCES at create, write, fsync, backup link,
//! rename and directory fsync. The original stays byte-identical (or, for the
//! directory fsync after the rename, the new version is visible and the error says its
//! durability is unknown), no temp file remains, and the error kind is the right one.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use statefile::fs::{DirEntry, Fs, FsDir, FsFile, FsLockFile, Metadata, OsFs};
use statefile::{Doc, ErrorKind, Options};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    CreateTemp,
    Write,
    SyncFile,
    BackupLink,
    Rename,
    SyncDir,
}

#[derive(Debug)]
struct FaultFs {
    step: Step,
    errno: i32,
    fired: Arc<AtomicBool>,
}

impl FaultFs {
    fn fire(&self, step: Step) -> io::Result<()> {
        if step == self.step && !self.fired.swap(true, Ordering::SeqCst) {
            Err(io::Error::from_raw_os_error(self.errno))
        } else {
            Ok(())
        }
    }
}

fn is_temp(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().contains(".sf-"))
}

#[derive(Debug)]
struct FaultFile {
    inner: Box<dyn FsFile>,
    fs: Arc<FaultFs>,
}

impl io::Read for FaultFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl io::Write for FaultFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.fs.fire(Step::Write)?;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl FsFile for FaultFile {
    fn sync_all(&mut self) -> io::Result<()> {
        self.fs.fire(Step::SyncFile)?;
        self.inner.sync_all()
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.fs.fire(Step::SyncFile)?;
        self.inner.sync_data()
    }
    fn metadata(&self) -> io::Result<Metadata> {
        self.inner.metadata()
    }
    fn set_mode(&mut self, mode: u32) -> io::Result<()> {
        self.inner.set_mode(mode)
    }
    fn set_owner(&mut self, uid: u32, gid: u32) -> io::Result<()> {
        self.inner.set_owner(uid, gid)
    }
}

#[derive(Debug, Clone)]
struct Wrapped(Arc<FaultFs>);

impl Fs for Wrapped {
    fn open_dir(&self, dir: &Path) -> io::Result<Box<dyn FsDir>> {
        Ok(Box::new(WrappedDir {
            inner: OsFs.open_dir(dir)?,
            fs: self.0.clone(),
        }))
    }
    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        OsFs.metadata(path)
    }
    fn symlink_metadata(&self, path: &Path) -> io::Result<Metadata> {
        OsFs.symlink_metadata(path)
    }
    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        OsFs.read_link(path)
    }
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        OsFs.canonicalize(path)
    }
    fn umask(&self) -> u32 {
        OsFs.umask()
    }
}

#[derive(Debug)]
struct WrappedDir {
    inner: Box<dyn FsDir>,
    fs: Arc<FaultFs>,
}

impl FsDir for WrappedDir {
    fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<Box<dyn FsFile>> {
        if is_temp(Path::new(name)) {
            self.fs.fire(Step::CreateTemp)?;
        }
        let inner = self.inner.create_new(name, mode)?;
        Ok(Box::new(FaultFile {
            inner,
            fs: self.fs.clone(),
        }))
    }
    fn open_read(&self, name: &OsStr) -> io::Result<Box<dyn FsFile>> {
        self.inner.open_read(name)
    }
    fn open_lock(&self, name: &OsStr) -> io::Result<Box<dyn FsLockFile>> {
        self.inner.open_lock(name)
    }
    fn stat(&self, name: &OsStr) -> io::Result<Metadata> {
        self.inner.stat(name)
    }
    fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (from_p, to_p) = (Path::new(from), Path::new(to));
        if is_temp(from_p) && !is_temp(to_p) && !to_p.to_string_lossy().contains(".bak") {
            self.fs.fire(Step::Rename)?;
        }
        self.inner.rename(from, to)
    }
    fn exchange(&self, a: &OsStr, b: &OsStr) -> io::Result<()> {
        if is_temp(Path::new(a)) {
            self.fs.fire(Step::Rename)?;
        }
        self.inner.exchange(a, b)
    }
    fn hard_link(&self, original: &OsStr, link: &OsStr) -> io::Result<()> {
        self.fs.fire(Step::BackupLink)?;
        self.inner.hard_link(original, link)
    }
    fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        self.inner.remove_file(name)
    }
    fn create_dir(&self, name: &OsStr) -> io::Result<()> {
        self.inner.create_dir(name)
    }
    fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        self.inner.remove_dir(name)
    }
    fn open_dir(&self, name: &OsStr) -> io::Result<Box<dyn FsDir>> {
        Ok(Box::new(WrappedDir {
            inner: self.inner.open_dir(name)?,
            fs: self.fs.clone(),
        }))
    }
    fn sync(&self) -> io::Result<()> {
        self.fs.fire(Step::SyncDir)?;
        self.inner.sync()
    }
    fn read_dir(&self) -> io::Result<Vec<DirEntry>> {
        self.inner.read_dir()
    }
    fn check_write_access(&self, name: &OsStr) -> io::Result<()> {
        self.inner.check_write_access(name)
    }
}

fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".sf-"))
        .collect()
}

#[test]
fn every_step_of_the_write_path_fails_cleanly() {
    let steps = [
        Step::CreateTemp,
        Step::Write,
        Step::SyncFile,
        Step::BackupLink,
        Step::Rename,
        Step::SyncDir,
    ];
    let errnos = [
        (28, ErrorKind::NoSpace),
        (5, ErrorKind::Io),
        (13, ErrorKind::PermissionDenied),
    ];
    let mut cases = 0;
    for step in steps {
        for (errno, kind) in errnos {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("state.json");
            let plain: Doc<serde_json::Value> = Doc::open(&p).unwrap();
            plain.write(&json!({"v": "original"})).unwrap();
            let original = std::fs::read(&p).unwrap();
            let fired = Arc::new(AtomicBool::new(false));
            let fs = Wrapped(Arc::new(FaultFs {
                step,
                errno,
                fired: fired.clone(),
            }));
            let doc: Doc<serde_json::Value> =
                Doc::open_with(&p, Options::new().backups(1).fs(Arc::new(fs))).unwrap();
            let e = doc.write(&json!({"v": "new"})).unwrap_err();
            assert!(fired.load(Ordering::SeqCst), "{step:?} was never reached");
            if step == Step::SyncDir {
                // After the rename: visible, durability unknown.
                assert_eq!(e.kind(), ErrorKind::Durability, "{step:?} {errno}: {e}");
                assert_eq!(
                    e.version(),
                    Some(&statefile::Version::of(&std::fs::read(&p).unwrap()))
                );
            } else {
                assert_eq!(e.kind(), kind, "{step:?} errno {errno}: {e}");
                assert_eq!(
                    std::fs::read(&p).unwrap(),
                    original,
                    "{step:?}: original changed"
                );
                assert!(e.to_string().contains("state.json"), "names the file: {e}");
            }
            assert!(
                temps(dir.path()).is_empty(),
                "{step:?} {errno}: temps left {:?}",
                temps(dir.path())
            );
            // History is never lost to a failed write.
            if step != Step::SyncDir {
                let backups = plain.backups().unwrap();
                assert!(backups.iter().all(|b| b.parses));
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 18);
}
