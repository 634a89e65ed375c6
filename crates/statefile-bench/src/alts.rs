//! The alternatives, each used the way its documentation recommends, behind one shape:
//! replace a document with bytes, and read-modify-write an array in it.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use statefile::{Doc, Options};

/// Every Rust-side alternative.
pub const REPLACE_ALTS: [&str; 12] = [
    "statefile",
    "statefile (journal)",
    "statefile (journal, swap)",
    "statefile (backups on)",
    "statefile (bytes given)",
    "floor",
    "journal floor",
    "naive",
    "naive-rename",
    "atomicwrites",
    "tempfile",
    "sqlite",
];

pub const RMW_ALTS: [&str; 9] = [
    "statefile",
    "statefile (one write per update)",
    "statefile (journal)",
    "statefile (journal, swap)",
    "sqlite",
    "naive",
    "naive-rename",
    "atomicwrites",
    "tempfile",
];

/// Whether an alternative takes a lock for read-modify-write.
pub fn locks(alt: &str) -> bool {
    alt.starts_with("statefile") || alt == "sqlite"
}

fn sync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
}

/// One document, written again and again by one alternative.
pub enum Writer {
    Statefile(Doc<Value>),
    /// `write_atomic_with`: bytes serialized beforehand, as `floor` gets them.
    StatefileBytes(PathBuf, Options),
    Floor(PathBuf, usize),
    JournalFloor(JournalFloor),
    Naive(PathBuf),
    NaiveRename(PathBuf),
    AtomicWrites(atomicwrites::AtomicFile),
    Tempfile(PathBuf),
    Sqlite(rusqlite::Connection),
}

/// The journal rows: "statefile (journal)" and "statefile (journal, swap)" (a journal
/// enabled with `JournalOptions::swap`).
pub const JOURNAL_ALTS: [&str; 2] = ["statefile (journal)", "statefile (journal, swap)"];

/// Journal mode for the store at `dir` if `alt` is a journal row (a no-op if it is on
/// already), swapping files in for the swap row.
pub fn journal_for(alt: &str, dir: &Path) {
    if JOURNAL_ALTS.contains(&alt) {
        statefile::journal::enable(
            dir,
            &Options::new(),
            statefile::journal::JournalOptions {
                swap: alt.contains("swap"),
                ..statefile::journal::JournalOptions::default()
            },
        )
        .expect("enable the journal");
    }
}

/// The floor of a journal-mode commit: the system calls the protocol makes,
/// and nothing else (no lock, no version, no checksum, no shared state). Append the
/// bytes as a record over a preallocated ring and `fdatasync` it (what SQLite's WAL
/// does per commit), then create a temp file, write it and rename it over the
/// document, unsynced (the plain file every reader sees at once). What statefile's
/// journal mode costs above it is its own; what this costs above SQLite, no
/// implementation of that protocol can avoid. `scripts/journal-floor.c` is the same
/// in C.
pub struct JournalFloor {
    ring: File,
    at: u64,
    path: PathBuf,
    n: u64,
}

impl JournalFloor {
    /// A 16 MiB ring, as statefile's journal by default: written once and synced, so
    /// that records overwrite allocated blocks and a flush changes no metadata.
    const RING: u64 = 16 << 20;
    /// Each record's header (statefile's is 32 bytes too: magic, lengths, LSN, CRC).
    const HEADER: u64 = 32;

    fn new(path: PathBuf) -> JournalFloor {
        let ring_path = path.with_file_name(".journal-floor");
        let mut ring = File::create(&ring_path).expect("create the ring");
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..Self::RING / chunk.len() as u64 {
            ring.write_all(&chunk).expect("fill the ring");
        }
        ring.sync_all().expect("sync the ring");
        JournalFloor {
            ring,
            at: 0,
            path,
            n: 0,
        }
    }

    fn commit(&mut self, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let len = Self::HEADER + bytes.len() as u64;
        assert!(len <= Self::RING, "a record larger than the ring");
        if self.at + len > Self::RING {
            self.at = 0;
        }
        let mut record = Vec::with_capacity(len as usize);
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&self.n.to_le_bytes());
        record.resize(Self::HEADER as usize, 0);
        record.extend_from_slice(bytes);
        self.ring.write_all_at(&record, self.at).expect("append");
        self.ring.sync_data().expect("flush the ring");
        self.at += len;
        self.n += 1;
        let tmp = self
            .path
            .with_file_name(format!(".doc.json.{}.tmp", self.n));
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .expect("create the temp file");
        f.write_all(bytes).expect("write the temp file");
        drop(f);
        fs::rename(&tmp, &self.path).expect("rename");
    }
}

pub fn sqlite_open(dir: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(dir.join("bench.sqlite")).expect("sqlite open");
    // The busy timeout first: switching to WAL takes a lock that a concurrent opener
    // may hold.
    c.busy_timeout(std::time::Duration::from_secs(120)).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "FULL").unwrap();
    c.execute_batch("CREATE TABLE IF NOT EXISTS docs (name TEXT PRIMARY KEY, body TEXT NOT NULL)")
        .unwrap();
    c
}

impl Writer {
    pub fn new(alt: &str, dir: &Path) -> Writer {
        let path = dir.join("doc.json");
        match alt {
            "statefile" => Writer::Statefile(
                Doc::open_with(
                    &path,
                    Options::new()
                        .backups(0)
                        .lock_timeout(std::time::Duration::from_secs(300)),
                )
                .unwrap(),
            ),
            "statefile (journal)" | "statefile (journal, swap)" => {
                journal_for(alt, dir);
                Writer::Statefile(
                    Doc::open_with(
                        &path,
                        Options::new()
                            .backups(0)
                            .lock_timeout(std::time::Duration::from_secs(300)),
                    )
                    .unwrap(),
                )
            }
            "statefile (backups on)" => Writer::Statefile(
                Doc::open_with(
                    &path,
                    Options::new()
                        .backups(1)
                        .lock_timeout(std::time::Duration::from_secs(300)),
                )
                .unwrap(),
            ),
            "statefile (one write per update)" => Writer::Statefile(
                Doc::open_with(
                    &path,
                    Options::new()
                        .backups(0)
                        .max_batch(1, u64::MAX)
                        .lock_timeout(std::time::Duration::from_secs(300)),
                )
                .unwrap(),
            ),
            "statefile (bytes given)" => Writer::StatefileBytes(
                path,
                Options::new()
                    .backups(0)
                    .lock_timeout(std::time::Duration::from_secs(300)),
            ),
            "floor" => Writer::Floor(path, 0),
            "journal floor" => Writer::JournalFloor(JournalFloor::new(path)),
            "naive" => Writer::Naive(path),
            "naive-rename" => Writer::NaiveRename(path),
            "atomicwrites" => Writer::AtomicWrites(atomicwrites::AtomicFile::new(
                &path,
                atomicwrites::OverwriteBehavior::AllowOverwrite,
            )),
            "tempfile" => Writer::Tempfile(path),
            "sqlite" => Writer::Sqlite(sqlite_open(dir)),
            other => panic!("unknown alternative {other}"),
        }
    }

    /// Replace the document with `value` (whose serialized form is `bytes`).
    pub fn replace(&mut self, value: &Value, bytes: &[u8]) {
        match self {
            Writer::Statefile(d) => {
                d.write(value).expect("statefile write");
            }
            Writer::StatefileBytes(path, opts) => {
                statefile::write_atomic_with(&*path, bytes, opts).expect("statefile write");
            }
            Writer::Floor(path, n) => {
                // The bare syscall sequence of a durable replace, bytes prepared.
                *n += 1;
                let dir = path.parent().unwrap();
                let tmp = dir.join(format!(".floor.{n}.tmp"));
                let mut f = File::create(&tmp).unwrap();
                f.write_all(bytes).unwrap();
                f.sync_all().unwrap();
                fs::rename(&tmp, &*path).unwrap();
                sync_dir(dir);
            }
            Writer::JournalFloor(j) => j.commit(bytes),
            Writer::Naive(path) => {
                fs::write(&*path, bytes).unwrap();
            }
            Writer::NaiveRename(path) => {
                let tmp = path.with_extension("json.tmp");
                fs::write(&tmp, bytes).unwrap();
                fs::rename(&tmp, &*path).unwrap();
            }
            Writer::AtomicWrites(af) => {
                af.write(|f| f.write_all(bytes)).unwrap();
            }
            Writer::Tempfile(path) => {
                let mut t = tempfile::NamedTempFile::new_in(path.parent().unwrap()).unwrap();
                t.write_all(bytes).unwrap();
                t.as_file().sync_all().unwrap();
                t.persist(&*path).unwrap();
            }
            Writer::Sqlite(c) => {
                let s = std::str::from_utf8(bytes).unwrap();
                c.execute(
                    "INSERT INTO docs (name, body) VALUES ('doc', ?1) ON CONFLICT(name) DO UPDATE SET body = excluded.body",
                    [s],
                )
                .unwrap();
            }
        }
    }

    /// Read the document back (for correctness checks).
    pub fn read_back(&self, dir: &Path) -> Option<Value> {
        match self {
            Writer::Sqlite(c) => c
                .query_row("SELECT body FROM docs WHERE name = 'doc'", [], |r| {
                    r.get::<_, String>(0)
                })
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok()),
            _ => fs::read(dir.join("doc.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok()),
        }
    }

    /// Append `item` to the array `items`: read, modify, write (locked only where the
    /// alternative locks). For statefile: how many updates the write answered.
    pub fn append(&mut self, item: &str) -> Option<usize> {
        match self {
            Writer::Statefile(d) => {
                let (_, r) = d
                    .update_or_insert_with(
                        || json!({"items": []}),
                        |v| -> statefile::Result<()> {
                            v["items"].as_array_mut().expect("array").push(json!(item));
                            Ok(())
                        },
                    )
                    .expect("statefile update");
                return Some(r.batch);
            }
            Writer::Sqlite(c) => {
                let tx = c
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .unwrap();
                let body: Option<String> = tx
                    .query_row("SELECT body FROM docs WHERE name = 'doc'", [], |r| r.get(0))
                    .ok();
                let mut v: Value = body
                    .and_then(|b| serde_json::from_str(&b).ok())
                    .unwrap_or_else(|| json!({"items": []}));
                v["items"].as_array_mut().unwrap().push(json!(item));
                tx.execute(
                    "INSERT INTO docs (name, body) VALUES ('doc', ?1) ON CONFLICT(name) DO UPDATE SET body = excluded.body",
                    [v.to_string()],
                )
                .unwrap();
                tx.commit().unwrap();
            }
            other => {
                let path = match other {
                    Writer::Floor(p, _)
                    | Writer::Naive(p)
                    | Writer::NaiveRename(p)
                    | Writer::Tempfile(p) => p.clone(),
                    Writer::AtomicWrites(af) => af.path().to_path_buf(),
                    _ => unreachable!(),
                };
                // Unlocked: a torn or missing file reads as empty, the way these
                // services' code did (and lost everything before it).
                let mut v: Value = fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_else(|| json!({"items": []}));
                v["items"].as_array_mut().unwrap().push(json!(item));
                let bytes = serde_json::to_vec(&v).unwrap();
                match other {
                    Writer::NaiveRename(_) => {
                        // Concurrent writers share the fixed temp name: rename may
                        // find it gone; that update is lost.
                        let tmp = path.with_extension("json.tmp");
                        let _ = fs::write(&tmp, &bytes).and_then(|()| fs::rename(&tmp, &path));
                    }
                    _ => {
                        // A writer racing others may fail outright; that update is lost.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            other.replace(&v, &bytes)
                        }));
                    }
                }
            }
        }
        None
    }

    /// The items now in the document.
    pub fn items(&self, dir: &Path) -> Vec<String> {
        self.read_back(dir)
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    }
}
