//! Helpers shared by the library's integration tests.
#![allow(dead_code)]

mod mount;
pub mod skip;

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use statefile::fs::{DirEntry, Fs, FsDir, FsFile, FsLockFile, FsRwFile, Metadata, OsFs};

/// The entry point every test binary that spawns children defines as
/// `#[test] #[ignore] fn child_entry()`; this builds the command that runs it.
pub fn child(role: &str, args: &[String]) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("test binary path"));
    c.args([
        "--ignored",
        "--exact",
        "child_entry",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env("SF_CHILD_ROLE", role)
    .env("SF_CHILD_ARGS", args.join("\u{1f}"));
    c
}

/// Inside `child_entry`: the role and arguments, or `None` when run directly.
pub fn child_role() -> Option<(String, Vec<String>)> {
    let role = std::env::var("SF_CHILD_ROLE").ok()?;
    let args = std::env::var("SF_CHILD_ARGS").unwrap_or_default();
    Some((role, args.split('\u{1f}').map(String::from).collect()))
}

/// Names of the files in `dir` (not recursive), sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The temp files (`.*.sf-*.tmp`) in `dir`.
pub fn temps(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with('.') && n.contains(".sf-") && n.ends_with(".tmp"))
        .collect()
}

#[allow(unused_imports)] // not every test binary mounts or skips
pub use {
    mount::{tiny_tmpfs, try_mount_tmpfs},
    skip::skip,
};

/// A reboot, as the journal sees it: no process uses it, its shared state (never
/// synced) is gone, and `journal-boot` names a boot that is over (removed here: the
/// machine's boot id cannot change).
#[allow(dead_code)] // not every test binary uses a journal
pub fn reboot_journal(root: &std::path::Path) {
    std::fs::write(root.join(".statefile/journal-shm"), vec![0u8; 8192]).unwrap();
    match std::fs::remove_file(root.join(".statefile/journal-boot")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
        _ => {}
    }
}

/// The documents `store`'s opening replayed from its journal.
#[allow(dead_code)]
pub fn replayed(store: &statefile::Store) -> Vec<std::path::PathBuf> {
    store
        .recovery()
        .findings
        .iter()
        .filter(|f| matches!(f.action, statefile::Action::Replayed))
        .map(|f| f.path.clone())
        .collect()
}

/// The value the next locked update of `name` in `store` starts from (it writes nothing
/// new: the update leaves the value as it is).
#[allow(dead_code)]
pub fn seen_by_next_update(store: &statefile::Store, name: &str) -> serde_json::Value {
    let seen = std::sync::Mutex::new(None);
    store
        .doc::<serde_json::Value>(name)
        .unwrap()
        .update(|v| {
            *seen.lock().unwrap() = Some(v.clone());
            Ok::<_, statefile::Error>(())
        })
        .unwrap();
    seen.into_inner().unwrap().expect("the update ran")
}

/// Whether we are root (able to drop to another user for permission tests).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|v| v.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A file system that behaves like the real one except where a test says otherwise:
/// reads of temp files can return flipped bytes (a lying disk) and directory syncs
/// can fail. Cheap to clone: the settings are shared with the directory handles it opens.
#[derive(Debug, Default, Clone)]
pub struct Twisted {
    pub corrupt_temp_reads: Arc<Mutex<bool>>,
    pub fail_sync_dir: Arc<Mutex<Option<i32>>>,
    pub fail_hard_link: Arc<Mutex<Option<i32>>>,
    pub fail_exchange: Arc<Mutex<Option<i32>>>,
    /// `Some((n, errno))`: the next `n` exchanges succeed, every one after fails so.
    pub fail_exchange_after: Arc<Mutex<Option<(usize, i32)>>>,
    pub exchanges: Arc<Mutex<usize>>,
    pub synced_dirs: Arc<Mutex<Vec<PathBuf>>>,
    /// The directories whose file system was synced whole (`syncfs`) through them.
    pub synced_fs: Arc<Mutex<Vec<PathBuf>>>,
    /// How many times every file system was synced (`sync(2)`).
    pub synced_all: Arc<Mutex<usize>>,
    /// `Some(errno)`: every `syncfs` fails so (after being recorded).
    pub fail_sync_fs: Arc<Mutex<Option<i32>>>,
    /// `Some((dir, errno))`: opening `dir` by its path fails so.
    pub fail_open_dir: Arc<Mutex<Option<(PathBuf, i32)>>>,
    /// `Some((dir, hook))`: the next opening of `dir` by its path runs `hook` first.
    pub before_open_dir: Arc<Mutex<Option<(PathBuf, Hook)>>>,
    /// Files opened for reading say they are 1 byte long (whatever their length), as
    /// a file does that grows between its `fstat` and its read.
    pub understate_len: Arc<Mutex<bool>>,
    /// Renames over a file this process has open fail with `EBUSY`, as on Windows
    /// without `FILE_SHARE_DELETE`. (Twisted has no holds: `FsDir::hold` is the
    /// default, `Ok(None)`.)
    pub busy_rename_over_open: Arc<Mutex<bool>>,
    /// `Some(dir)`: `dir` may be looked at but not opened, and nothing below it may be
    /// reached (`EACCES`), as `chmod 000 dir` does for a user other than root.
    pub deny: Arc<Mutex<Option<PathBuf>>>,
    /// `Some((name, hook))`: the next opening of the lock file `name` (in any
    /// directory) runs `hook` first.
    pub before_open_lock: Arc<Mutex<Option<(OsString, Hook)>>>,
}

/// Whether a descriptor of this process is open on the file `m` describes.
fn open_here(m: &Metadata) -> bool {
    std::fs::read_dir("/proc/self/fd").unwrap().any(|e| {
        let p = e.unwrap().path();
        std::fs::metadata(&p).is_ok_and(|s| {
            use std::os::unix::fs::MetadataExt;
            s.dev() == m.dev && s.ino() == m.ino
        })
    })
}

impl Twisted {
    pub fn new() -> Arc<Twisted> {
        Arc::new(Twisted::default())
    }

    /// `EACCES` if `path` is the denied directory (`open` true) or below it.
    fn denied(&self, path: &Path, open: bool) -> io::Result<()> {
        match &*self.deny.lock().unwrap() {
            Some(d) if path.starts_with(d) && (open || path != d) => {
                Err(io::Error::from_raw_os_error(13))
            }
            _ => Ok(()),
        }
    }
}

/// Something [`Twisted`] runs at a given call (another process acting meanwhile).
pub struct Hook(pub Box<dyn FnOnce() + Send>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

#[derive(Debug)]
struct Flipped(Box<dyn FsFile>);

impl io::Read for Flipped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        if n > 0 {
            buf[0] ^= 0x20;
        }
        Ok(n)
    }
}

impl io::Write for Flipped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl FsFile for Flipped {
    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn metadata(&self) -> io::Result<Metadata> {
        self.0.metadata()
    }
    fn set_mode(&mut self, mode: u32) -> io::Result<()> {
        self.0.set_mode(mode)
    }
    fn set_owner(&mut self, uid: u32, gid: u32) -> io::Result<()> {
        self.0.set_owner(uid, gid)
    }
}

impl Fs for Twisted {
    fn open_dir(&self, dir: &Path) -> io::Result<Box<dyn FsDir>> {
        let hook = {
            let mut h = self.before_open_dir.lock().unwrap();
            match h.take() {
                Some((d, hook)) if d == dir => Some(hook),
                other => {
                    *h = other;
                    None
                }
            }
        };
        if let Some(Hook(hook)) = hook {
            hook();
        }
        if let Some((d, errno)) = &*self.fail_open_dir.lock().unwrap()
            && d == dir
        {
            return Err(io::Error::from_raw_os_error(*errno));
        }
        self.denied(dir, true)?;
        Ok(Box::new(TwistedDir {
            inner: OsFs.open_dir(dir)?,
            path: dir.to_path_buf(),
            fs: self.clone(),
        }))
    }
    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        self.denied(path, false)?;
        OsFs.metadata(path)
    }
    fn symlink_metadata(&self, path: &Path) -> io::Result<Metadata> {
        self.denied(path, false)?;
        OsFs.symlink_metadata(path)
    }
    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        self.denied(path, false)?;
        OsFs.read_link(path)
    }
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        self.denied(path, false)?;
        OsFs.canonicalize(path)
    }
    fn umask(&self) -> u32 {
        OsFs.umask()
    }
    fn mounts_inside(&self, root: &Path) -> io::Result<Vec<PathBuf>> {
        OsFs.mounts_inside(root)
    }
    fn sync_all_file_systems(&self) {
        *self.synced_all.lock().unwrap() += 1;
        OsFs.sync_all_file_systems()
    }
}

/// A file that says it is 1 byte long: see [`Twisted::understate_len`].
#[derive(Debug)]
struct Understated(Box<dyn FsFile>);

impl io::Read for Understated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl io::Write for Understated {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl FsFile for Understated {
    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn metadata(&self) -> io::Result<Metadata> {
        self.0.metadata().map(|m| Metadata { len: 1, ..m })
    }
    fn set_mode(&mut self, mode: u32) -> io::Result<()> {
        self.0.set_mode(mode)
    }
    fn set_owner(&mut self, uid: u32, gid: u32) -> io::Result<()> {
        self.0.set_owner(uid, gid)
    }
}

/// A directory opened through [`Twisted`]: the real one, with the twists.
#[derive(Debug)]
struct TwistedDir {
    inner: Box<dyn FsDir>,
    path: PathBuf,
    fs: Twisted,
}

impl FsDir for TwistedDir {
    fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<Box<dyn FsFile>> {
        self.inner.create_new(name, mode)
    }
    fn open_read(&self, name: &OsStr) -> io::Result<Box<dyn FsFile>> {
        let f = self.inner.open_read(name)?;
        let is_temp = name.to_string_lossy().contains(".sf-");
        if is_temp && *self.fs.corrupt_temp_reads.lock().unwrap() {
            Ok(Box::new(Flipped(f)))
        } else if *self.fs.understate_len.lock().unwrap() {
            Ok(Box::new(Understated(f)))
        } else {
            Ok(f)
        }
    }
    fn open_lock(&self, name: &OsStr) -> io::Result<Box<dyn FsLockFile>> {
        let hook = {
            let mut h = self.fs.before_open_lock.lock().unwrap();
            match h.take() {
                Some((n, hook)) if n == name => Some(hook),
                other => {
                    *h = other;
                    None
                }
            }
        };
        if let Some(Hook(hook)) = hook {
            hook();
        }
        self.inner.open_lock(name)
    }
    fn stat(&self, name: &OsStr) -> io::Result<Metadata> {
        self.inner.stat(name)
    }
    fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        if *self.fs.busy_rename_over_open.lock().unwrap()
            && self
                .inner
                .stat(to)
                .is_ok_and(|m| m.is_file() && open_here(&m))
        {
            return Err(io::Error::from_raw_os_error(16));
        }
        self.inner.rename(from, to)
    }
    fn exchange(&self, a: &OsStr, b: &OsStr) -> io::Result<()> {
        if let Some((left, errno)) = self.fs.fail_exchange_after.lock().unwrap().as_mut() {
            if *left == 0 {
                return Err(io::Error::from_raw_os_error(*errno));
            }
            *left -= 1;
        }
        match *self.fs.fail_exchange.lock().unwrap() {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => {
                self.inner.exchange(a, b)?;
                *self.fs.exchanges.lock().unwrap() += 1;
                Ok(())
            }
        }
    }
    fn hard_link(&self, original: &OsStr, link: &OsStr) -> io::Result<()> {
        match *self.fs.fail_hard_link.lock().unwrap() {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => self.inner.hard_link(original, link),
        }
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
        self.fs.denied(&self.path.join(name), true)?;
        Ok(Box::new(TwistedDir {
            inner: self.inner.open_dir(name)?,
            path: self.path.join(name),
            fs: self.fs.clone(),
        }))
    }
    fn sync(&self) -> io::Result<()> {
        match *self.fs.fail_sync_dir.lock().unwrap() {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => {
                self.fs.synced_dirs.lock().unwrap().push(self.path.clone());
                self.inner.sync()
            }
        }
    }
    fn sync_fs(&self) -> io::Result<()> {
        self.fs.synced_fs.lock().unwrap().push(self.path.clone());
        if let Some(errno) = *self.fs.fail_sync_fs.lock().unwrap() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.inner.sync_fs()
    }
    fn read_dir(&self) -> io::Result<Vec<DirEntry>> {
        self.inner.read_dir()
    }
    fn open_rw(&self, name: &OsStr, mode: u32, create: bool) -> io::Result<Box<dyn FsRwFile>> {
        self.inner.open_rw(name, mode, create)
    }
    fn check_write_access(&self, name: &OsStr) -> io::Result<()> {
        self.inner.check_write_access(name)
    }
}

/// Make `dir` (and so its files) reachable by other users, for tests that drop to one.
pub fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub fn os(s: &str) -> OsString {
    OsString::from(s)
}

/// A fresh directory and the (canonical) path of `jobs.json` in it.
pub fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap().join("jobs.json");
    (dir, path)
}

/// The document at `path`, default options.
pub fn jobs(path: &Path) -> statefile::Doc<serde_json::Value> {
    statefile::Doc::open(path).unwrap()
}

/// The strings of the document's `items` array, in order.
pub fn items(path: &Path) -> Vec<String> {
    let v: serde_json::Value = statefile::read_json(path).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// The document's `items`, asserted to be `n` strings, each present once.
#[track_caller]
pub fn items_once(path: &Path, n: usize) -> std::collections::HashSet<String> {
    let items = items(path);
    let unique: std::collections::HashSet<String> = items.iter().cloned().collect();
    assert_eq!(items.len(), n, "every append present");
    assert_eq!(unique.len(), n, "and each exactly once");
    unique
}

/// Append `item` to the document's `items` array (the document is created as
/// `{"items": []}` if missing), as one locked read-modify-write.
pub fn append_item(
    doc: &statefile::Doc<serde_json::Value>,
    item: String,
) -> statefile::Result<statefile::Receipt> {
    doc.update_or_insert_with(
        || serde_json::json!({"items": []}),
        |v| {
            v["items"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::Value::String(item));
            Ok::<_, statefile::Error>(())
        },
    )
    .map(|(_, r)| r)
}

/// Wait until `n` calls are queued for `probe`'s document.
pub fn wait_queued(probe: &statefile::Doc<serde_json::Value>, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while probe.queued().unwrap() != n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} calls never queued (now {})",
            probe.queued().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// A boxed call for [`in_one_batch`].
pub type Call<'a, R> = Box<dyn FnOnce() -> R + Send + 'a>;

/// Run `calls` as one batch, in this order: hold the document's lock while they queue
/// (each queued before the next starts), then let go: the first leads, the rest join
/// its batch in order. Returns their results in the same order.
pub fn in_one_batch<'a, R: Send + 'a>(path: &Path, calls: Vec<Call<'a, R>>) -> Vec<R> {
    let probe = jobs(path);
    let guard = probe.lock().unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = calls
            .into_iter()
            .enumerate()
            .map(|(i, call)| {
                let h = s.spawn(call);
                wait_queued(&probe, i + 1);
                h
            })
            .collect();
        drop(guard);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Options with a file system of their own: another "process" as far as the journal
/// registry and the read cache are concerned (both key by file system instance).
#[allow(dead_code)] // not every test binary uses a journal
pub fn fresh() -> statefile::Options {
    statefile::Options::new()
        .create_dirs(true)
        .fs(std::sync::Arc::new(statefile::fs::OsFs) as std::sync::Arc<dyn statefile::fs::Fs>)
}

/// A 64 KiB journal: small enough that tests fill and wrap it quickly.
#[allow(dead_code)]
pub fn small() -> statefile::journal::JournalOptions {
    statefile::journal::JournalOptions {
        capacity: 64 << 10,
        ..statefile::journal::JournalOptions::default()
    }
}

/// Another process holding the journal's checkpoint lock (`flock(1)`, standing for a
/// process stopped in the middle of a checkpoint) until the returned child is killed;
/// `None` (after [`skip`]) where flock(1) is missing.
pub fn hold_checkpoint_lock(root: &Path) -> Option<std::process::Child> {
    hold_journal_lock(root, "journal-ckpt")
}

/// Another process holding the exclusive `flock` of `.statefile/<file>` under `root`
/// (`journal`: the flush lock; `journal-shm`: the append lock; `journal-ckpt`: the
/// checkpoint lock) until the returned child is killed: a process stopped while it
/// held it, or anyone who may read the file and locks it. `None` (after [`skip`])
/// where flock(1) is missing.
pub fn hold_journal_lock(root: &Path, file: &str) -> Option<std::process::Child> {
    use std::io::BufRead;
    if Command::new("flock").arg("--version").output().is_err() {
        skip("flock(1) (util-linux) is not installed");
        return None;
    }
    let path = root.join(statefile::journal::META_DIR).join(file);
    // -o: the lock is not passed on to `sleep`, which outlives a killed flock otherwise.
    let mut child = Command::new("flock")
        .arg("-x")
        .arg("-o")
        .arg(&path)
        .args(["-c", "echo held; exec sleep 120"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    Some(child)
}

/// Make `path` `len` bytes long without writing them (sparse: instant, no disk used).
pub fn sparse(path: &Path, len: u64) {
    std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Run `f` on another thread and fail the test if it has not returned in 20 s (a FIFO
/// opened for reading blocks until a writer comes: the bug these tests guard against).
pub fn within_deadline<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(r) => r,
        Err(_) => panic!("{what} hung (still blocked after 20 s)"),
    }
}

/// Make a FIFO at `p` (mkfifo(1)).
pub fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("run mkfifo");
    assert!(st.success(), "mkfifo {}", p.display());
}

/// A store at `dir` with `opts`, in journal mode.
pub fn journaled_with(dir: &Path, opts: statefile::Options) -> statefile::Store {
    let store = statefile::Store::open_with(dir, opts).unwrap();
    statefile::journal::enable(
        dir,
        store.options(),
        statefile::journal::JournalOptions::default(),
    )
    .unwrap();
    store
}

/// A store at `dir` in journal mode, with [`fresh`] options.
pub fn journaled(dir: &Path) -> statefile::Store {
    journaled_with(dir, fresh())
}

/// Point the symlink `link` at `to` (another process's `ln -sfn`).
pub fn retarget(link: &Path, to: &str) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(to, link).unwrap();
}

/// Write `v` to the store's document `name`.
pub fn put(store: &statefile::Store, name: &str, v: serde_json::Value) {
    store
        .doc::<serde_json::Value>(name)
        .unwrap()
        .write(&v)
        .unwrap();
}

/// The store's document `name`.
pub fn get(store: &statefile::Store, name: &str) -> serde_json::Value {
    store
        .doc::<serde_json::Value>(name)
        .unwrap()
        .read()
        .unwrap()
}

/// `{"n": n + 1}` for a value `{"n": n}`.
pub fn n_plus_one(v: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({"n": v["n"].as_i64().unwrap() + 1})
}

/// A child process's "die-mid-commit" role: write `value` (JSON) to the document `name`
/// of the store at `root` (as given, maybe through a symlink) and die by SIGKILL once its
/// journal record is appended (its slot in flight), before the rename: a writer killed
/// in the middle of its commit.
pub fn die_mid_commit(root: &str, name: &str, value: &str) -> ! {
    let opts = statefile::Options::new()
        .create_dirs(true)
        .on_temp_created(|_| {
            let me = std::process::id().to_string();
            std::process::Command::new("kill")
                .args(["-9", &me])
                .status()?;
            std::thread::sleep(std::time::Duration::from_secs(60));
            Ok(())
        });
    let store = statefile::Store::open_without_scan(root, opts).unwrap();
    let value: serde_json::Value = serde_json::from_str(value).unwrap();
    let _ = store.doc::<serde_json::Value>(name).unwrap().write(&value);
    std::process::exit(1);
}
