//! Each step of the write path fails on the real disk (through a wrapper around the
//! real file system): ENOSPC, EIO and EACCES at create, write, fsync, backup link,
//! rename and directory fsync. The original stays byte-identical (or, for the
//! directory fsync after the rename, the new version is visible and the error says its
//! durability is unknown), no temp file remains, and the error kind is the right one.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use statefile::fs::{DirEntry, Fs, FsFile, FsLockFile, Metadata, OsFs};
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
    fn create_new(&self, path: &Path, mode: u32) -> io::Result<Box<dyn FsFile>> {
        if is_temp(path) {
            self.0.fire(Step::CreateTemp)?;
        }
        let inner = OsFs.create_new(path, mode)?;
        Ok(Box::new(FaultFile {
            inner,
            fs: self.0.clone(),
        }))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        OsFs.open_read(path)
    }
    fn open_lock(&self, path: &Path) -> io::Result<Box<dyn FsLockFile>> {
        OsFs.open_lock(path)
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
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if is_temp(from) && !is_temp(to) && !to.to_string_lossy().contains(".bak") {
            self.0.fire(Step::Rename)?;
        }
        OsFs.rename(from, to)
    }
    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        self.0.fire(Step::BackupLink)?;
        OsFs.hard_link(original, link)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsFs.remove_file(path)
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        OsFs.create_dir(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        OsFs.remove_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.0.fire(Step::SyncDir)?;
        OsFs.sync_dir(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        OsFs.read_dir(path)
    }
    fn umask(&self) -> u32 {
        OsFs.umask()
    }
    fn check_write_access(&self, path: &Path) -> io::Result<()> {
        OsFs.check_write_access(path)
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
