//! A process out of file descriptors (EMFILE) in the middle of a write, under a real
//! `RLIMIT_NOFILE`. The server answers EMFILE with a 503 asking to retry, so an error
//! that carries it must mean "nothing written", and a write that went through must
//! answer success (a cleanup that failed afterwards is logged and left for recovery).
//!
//! In a busy process other threads take and free descriptors all the time, so any open
//! of a write may be the one that finds the table full. A child process lowers its
//! limit; for each write path and each open the write makes, the file system seam fills
//! the descriptor table for real just before that open (as another thread taking the
//! last ones would), the write runs on, the table is freed when it returns, and what
//! the caller was told is checked against what the next writer of the document finds.

mod common;

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use statefile::fs::{DirEntry, Fs, FsDir, FsFile, FsLockFile, FsRwFile, Held, Metadata, OsFs};
use statefile::journal;
use statefile::{Error, ErrorKind, Store};

/// The soft limit the child lowers itself to, so that filling the table is quick.
const LIMIT: u64 = 512;

/// Descriptors to fill the table with at the open numbered `at` (counting from 1).
#[derive(Debug, Default)]
struct Crowd {
    opens: u64,
    at: Option<u64>,
    filler: Vec<std::fs::File>,
}

/// The real file system, which fills the process's descriptor table just before the
/// open its [`Crowd`] names: that open, and those after it, meet a real EMFILE until
/// the write frees descriptors of its own or the test empties the table.
#[derive(Debug, Clone, Default)]
struct Crowded(Arc<Mutex<Crowd>>);

impl Crowded {
    fn before_open(&self) {
        let mut c = self.0.lock().unwrap();
        c.opens += 1;
        if c.at == Some(c.opens) {
            loop {
                match std::fs::File::open("/dev/null") {
                    Ok(f) => c.filler.push(f),
                    Err(e) if e.raw_os_error() == Some(24) => break,
                    Err(e) => panic!("filling the descriptor table: {e}"),
                }
            }
        }
    }

    /// Count opens from now on, filling the table at open number `at`.
    fn arm(&self, at: Option<u64>) {
        let mut c = self.0.lock().unwrap();
        c.opens = 0;
        c.at = at;
    }

    /// Stop, free the table, and say how many opens were made since [`Crowded::arm`]
    /// and whether the table was filled.
    fn disarm(&self) -> (u64, bool) {
        let mut c = self.0.lock().unwrap();
        c.at = None;
        let filled = !c.filler.is_empty();
        c.filler.clear();
        (c.opens, filled)
    }
}

#[derive(Debug)]
struct CrowdedDir {
    inner: Box<dyn FsDir>,
    fs: Crowded,
}

impl Fs for Crowded {
    fn open_dir(&self, dir: &Path) -> io::Result<Box<dyn FsDir>> {
        self.before_open();
        Ok(Box::new(CrowdedDir {
            inner: OsFs.open_dir(dir)?,
            fs: self.clone(),
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
    fn boot_id(&self) -> Option<u128> {
        OsFs.boot_id()
    }
}

impl FsDir for CrowdedDir {
    fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<Box<dyn FsFile>> {
        self.fs.before_open();
        self.inner.create_new(name, mode)
    }
    fn open_read(&self, name: &OsStr) -> io::Result<Box<dyn FsFile>> {
        self.fs.before_open();
        self.inner.open_read(name)
    }
    fn open_lock(&self, name: &OsStr) -> io::Result<Box<dyn FsLockFile>> {
        self.fs.before_open();
        self.inner.open_lock(name)
    }
    fn stat(&self, name: &OsStr) -> io::Result<Metadata> {
        self.inner.stat(name)
    }
    fn metadata(&self) -> io::Result<Metadata> {
        self.inner.metadata()
    }
    fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn exchange(&self, a: &OsStr, b: &OsStr) -> io::Result<()> {
        self.inner.exchange(a, b)
    }
    fn hold(&self, name: &OsStr) -> io::Result<Option<Held>> {
        self.fs.before_open();
        self.inner.hold(name)
    }
    fn hard_link(&self, original: &OsStr, link: &OsStr) -> io::Result<()> {
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
        self.fs.before_open();
        Ok(Box::new(CrowdedDir {
            inner: self.inner.open_dir(name)?,
            fs: self.fs.clone(),
        }))
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
    fn sync_fs(&self) -> io::Result<()> {
        self.inner.sync_fs()
    }
    fn read_dir(&self) -> io::Result<Vec<DirEntry>> {
        self.fs.before_open();
        self.inner.read_dir()
    }
    fn open_rw(&self, name: &OsStr, mode: u32, create: bool) -> io::Result<Box<dyn FsRwFile>> {
        self.fs.before_open();
        self.inner.open_rw(name, mode, create)
    }
    fn check_write_access(&self, name: &OsStr) -> io::Result<()> {
        self.inner.check_write_access(name)
    }
}

/// Whether `e` (or an error it wraps) is EMFILE or ENFILE, as the server's
/// `problem::out_of_descriptors` tells them: its 503 `too-many-open-files`.
fn out_of_descriptors(e: &Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = next {
        if let Some(io) = c.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(23 | 24))
        {
            return true;
        }
        next = c.source();
    }
    false
}

#[derive(Clone, Copy, Debug)]
enum Scenario {
    Write,
    Create,
    Update,
    Delete,
    JournalWrite,
    /// Without backups, the write does not look at the document it replaces.
    JournalWriteNoBackups,
    /// Reading the temp file back opens it again, after the record is appended.
    JournalWriteVerified,
    JournalCreate,
    JournalUpdate,
    JournalDelete,
    /// A document too large for a journal record: written outside it, then marked.
    JournalLarge,
    /// The write fills the ring past half: a checkpoint runs once the lock is released,
    /// after the write is durable (its failure is logged, the write succeeds).
    JournalCheckpointDue,
    JournalTx,
}

type Docs = Vec<(&'static str, Option<Value>)>;

impl Scenario {
    const ALL: [Scenario; 13] = [
        Scenario::Write,
        Scenario::Create,
        Scenario::Update,
        Scenario::Delete,
        Scenario::JournalWrite,
        Scenario::JournalWriteNoBackups,
        Scenario::JournalWriteVerified,
        Scenario::JournalCreate,
        Scenario::JournalUpdate,
        Scenario::JournalDelete,
        Scenario::JournalLarge,
        Scenario::JournalCheckpointDue,
        Scenario::JournalTx,
    ];

    fn journaled(self) -> bool {
        !matches!(
            self,
            Scenario::Write | Scenario::Create | Scenario::Update | Scenario::Delete
        )
    }

    /// What the documents hold before the write, and after it if it happened.
    fn before_after(self) -> (Docs, Docs) {
        let one = || Some(json!({"v": 1}));
        let two = || Some(json!({"v": 2}));
        match self {
            Scenario::Create | Scenario::JournalCreate => {
                (vec![("a.json", None)], vec![("a.json", two())])
            }
            Scenario::Delete | Scenario::JournalDelete => {
                (vec![("a.json", one())], vec![("a.json", None)])
            }
            Scenario::JournalLarge => (
                vec![("a.json", one())],
                vec![("a.json", Some(json!({"v": "x".repeat(40 << 10)})))],
            ),
            Scenario::JournalCheckpointDue => (
                vec![("a.json", one())],
                vec![("a.json", Some(json!({"v": "x".repeat(8 << 10)})))],
            ),
            Scenario::JournalTx => (
                vec![("a.json", one()), ("b.json", one())],
                vec![("a.json", two()), ("b.json", two())],
            ),
            _ => (vec![("a.json", one())], vec![("a.json", two())]),
        }
    }

    fn run(self, store: &Store) -> Result<(), Error> {
        let (_, after) = self.before_after();
        let new = after[0].1.clone().unwrap_or_default();
        let doc = store.doc::<Value>("a.json")?;
        match self {
            Scenario::Write
            | Scenario::JournalWrite
            | Scenario::JournalWriteNoBackups
            | Scenario::JournalWriteVerified
            | Scenario::JournalLarge
            | Scenario::JournalCheckpointDue => doc.write(&new).map(drop),
            Scenario::Create | Scenario::JournalCreate => doc.create(&new).map(drop),
            Scenario::Update | Scenario::JournalUpdate => doc
                .update(|v| {
                    v["v"] = json!(2);
                    Ok::<_, Error>(())
                })
                .map(drop),
            Scenario::Delete | Scenario::JournalDelete => doc.delete().map(drop),
            Scenario::JournalTx => store
                .transaction(|tx| {
                    tx.write("a.json", &json!({"v": 2}))?;
                    tx.write("b.json", &json!({"v": 2}))
                })
                .map(drop),
        }
    }
}

/// Options over `fs`, as another process's would be (a registry of its own).
fn opts(fs: &Crowded) -> statefile::Options {
    statefile::Options::new()
        .lock_timeout(Duration::from_secs(2))
        .fs(Arc::new(fs.clone()) as Arc<dyn Fs>)
}

/// The options `s` writes with.
fn opts_for(s: Scenario, fs: &Crowded) -> statefile::Options {
    match s {
        Scenario::JournalWriteNoBackups => opts(fs).backups(0),
        Scenario::JournalWriteVerified => opts(fs).verify(true),
        _ => opts(fs),
    }
}

/// The documents as the next writer of each finds them, in a fresh store (its lock
/// settles what the journal holds for the document).
fn as_next_writer_finds(root: &Path, names: &[&str]) -> Vec<Option<Value>> {
    let store = Store::open_with(root, common::fresh()).unwrap();
    names
        .iter()
        .map(|n| {
            let seen = Mutex::new(None);
            let r = store.doc::<Value>(n).unwrap().update(|v| {
                *seen.lock().unwrap() = Some(v.clone());
                Ok::<_, Error>(())
            });
            match r {
                Ok(_) => seen.into_inner().unwrap(),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => panic!("the next writer of {n}: {e}"),
            }
        })
        .collect()
}

/// Run `s` once in a fresh store, the table filled at open `at` (`None`: never).
/// Returns the number of opens it made and a line for what broke the rule.
fn attempt(s: Scenario, at: Option<u64>) -> (u64, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fs = Crowded::default();
    if s.journaled() {
        journal::enable(root, &opts(&fs), common::small()).unwrap();
    }
    let (before, after) = s.before_after();
    let names: Vec<&str> = before.iter().map(|(n, _)| *n).collect();
    let store = Store::open_with(root, opts_for(s, &fs)).unwrap();
    for (n, v) in &before {
        if let Some(v) = v {
            store.doc::<Value>(n).unwrap().write(v).unwrap();
        }
    }
    if let Scenario::JournalCheckpointDue = s {
        // Records up to just under half the ring (no checkpoint due yet), so that the
        // write's own record takes it past half.
        for _ in 0..3 {
            store
                .doc::<Value>("pad.json")
                .unwrap()
                .write(&json!("p".repeat(9 << 10)))
                .unwrap();
        }
        let st = journal::status(root, &opts(&fs)).unwrap().unwrap();
        let used = st.end_lsn - st.checkpoint_lsn;
        assert!(
            used < st.capacity / 2 && used + (8 << 10) > st.capacity / 2,
            "{used} of {} used",
            st.capacity
        );
    }
    fs.arm(at);
    let r = s.run(&store);
    let (opens, filled) = fs.disarm();
    drop(store);
    if let (Scenario::JournalCheckpointDue, None) = (s, at) {
        let st = journal::status(root, &common::fresh()).unwrap().unwrap();
        assert_eq!(
            st.checkpoint_lsn, st.end_lsn,
            "the write made a checkpoint due"
        );
    }
    let found = as_next_writer_finds(root, &names);
    let was: Vec<Option<Value>> = before.into_iter().map(|(_, v)| v).collect();
    let now: Vec<Option<Value>> = after.into_iter().map(|(_, v)| v).collect();
    let at = at.map_or("never".to_string(), |n| format!("at open {n}"));
    let short = |v: &[Option<Value>]| {
        let s = format!("{v:?}");
        s.chars().take(120).collect::<String>()
    };
    let bad = match &r {
        Ok(()) if found == now => None,
        Ok(()) => Some(format!(
            "{s:?}, table full {at}: the write succeeded, yet the next writer found {}",
            short(&found)
        )),
        Err(e) if !filled => Some(format!("{s:?}, table full {at}: failed unprovoked: {e}")),
        Err(e) if out_of_descriptors(e) && e.kind() != ErrorKind::Durability => (found != was)
            .then(|| {
                format!(
                    "{s:?}, table full {at}: failed as out of descriptors, which asks for a \
                     retry ({e}), yet the next writer found {}",
                    short(&found)
                )
            }),
        Err(e) => Some(format!(
            "{s:?}, table full {at}: {:?} error{}: {e}",
            e.kind(),
            if found == now {
                " for a write that happened"
            } else {
                ""
            }
        )),
    };
    (opens, bad)
}

#[test]
#[ignore = "run by running_out_of_descriptors_mid_write_fails_cleanly_or_succeeds"]
fn child_entry() {
    let Some((role, _)) = common::child_role() else {
        return;
    };
    assert_eq!(role, "emfile");
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let hard = getrlimit(Resource::Nofile).maximum;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard.map_or(LIMIT, |h| h.min(LIMIT))),
            maximum: hard,
        },
    )
    .unwrap();
    for s in Scenario::ALL {
        let (opens, bad) = attempt(s, None);
        assert_eq!(bad, None, "{s:?} fails with descriptors to spare");
        assert!(opens > 0, "{s:?} opened nothing through the seam");
        for at in 1..=opens {
            if let (_, Some(b)) = attempt(s, Some(at)) {
                println!("BAD {b}");
            }
        }
        println!("{s:?}: {opens} opens");
    }
    println!("DONE");
}

/// Every write path, out of descriptors at each open it makes: either success with
/// the new version in place, or an out-of-descriptors error with nothing changed.
#[test]
fn running_out_of_descriptors_mid_write_fails_cleanly_or_succeeds() {
    let out = common::child("emfile", &[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("DONE"),
        "the child failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad: Vec<&str> = text.lines().filter(|l| l.starts_with("BAD ")).collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
