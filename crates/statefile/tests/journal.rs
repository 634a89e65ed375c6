//! Journal mode (issue 14): enabling, writing through the journal, replay, checkpoints,
//! disabling.

mod common;

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use statefile::journal::{self, JournalOptions};
use statefile::{Doc, Options, Store};

use common::{fresh, small};

#[test]
fn a_write_in_journal_mode_goes_through_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let opts = fresh();
    let store = Store::open_with(dir.path(), opts.clone()).unwrap();
    let st = journal::enable(dir.path(), &opts, small()).unwrap();
    assert_eq!(st.records, 0);
    assert_eq!(st.capacity, 64 << 10);
    let doc = store.doc::<Value>("a.json").unwrap();
    let r = doc.write(&json!({"v": 1})).unwrap();
    assert_eq!(r.durability, statefile::Durability::Full);
    let st = journal::status(dir.path(), &opts).unwrap().unwrap();
    assert_eq!(st.records, 1, "{st:?}");
    assert!(st.to_replay.is_empty(), "{st:?}");
    assert_eq!(doc.read().unwrap(), json!({"v": 1}));
    doc.update(|v| {
        v["v"] = json!(2);
        Ok::<(), statefile::Error>(())
    })
    .unwrap();
    let st = journal::status(dir.path(), &opts).unwrap().unwrap();
    assert_eq!(st.records, 2);
    let report = journal::checkpoint(dir.path(), &opts).unwrap();
    assert_eq!(report.documents, 1);
    assert!(report.freed > 0);
    let st = journal::status(dir.path(), &opts).unwrap().unwrap();
    assert_eq!(st.records, 0);
    // What a process that died making journal-boot leaves: disable removes it too.
    assert!(dir.path().join(".statefile/journal-boot").exists());
    std::fs::write(dir.path().join(".statefile/journal-boot.new"), b"").unwrap();
    journal::disable(dir.path(), &opts).unwrap();
    assert!(!dir.path().join(".statefile").exists());
    assert_eq!(doc.read().unwrap(), json!({"v": 2}));
    doc.write(&json!({"v": 3})).unwrap();
    assert_eq!(doc.read().unwrap(), json!({"v": 3}));
}

#[test]
fn a_lost_rename_is_replayed_when_the_store_is_opened_after_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    {
        let opts = fresh();
        journal::enable(dir.path(), &opts, small()).unwrap();
        let store = Store::open_with(dir.path(), opts).unwrap();
        let doc = store.doc::<Value>("a.json").unwrap();
        doc.write(&json!({"v": 1})).unwrap();
        let old = std::fs::read(dir.path().join("a.json")).unwrap();
        doc.write(&json!({"v": 2})).unwrap();
        // The power went out before the rename reached the disk: the old bytes are back.
        std::fs::write(dir.path().join("a.json"), old).unwrap();
    }
    // Nobody uses the journal now; the shared state is gone with the reboot.
    common::reboot_journal(dir.path());
    let opts = fresh();
    let store = Store::open_with(dir.path(), opts).unwrap();
    assert_eq!(common::replayed(&store), [store.root().join("a.json")]);
    assert_eq!(
        store.doc::<Value>("a.json").unwrap().read().unwrap(),
        json!({"v": 2})
    );
}

/// CRC-32C, as the journal's header uses it (the test edits a header like another
/// program would, from the format in docs/design.md).
fn crc32c(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in bytes {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn a_journal_of_an_unknown_format_version_refuses_every_write() {
    let dir = tempfile::tempdir().unwrap();
    {
        let opts = fresh();
        journal::enable(dir.path(), &opts, small()).unwrap();
        let store = Store::open_with(dir.path(), opts).unwrap();
        store
            .doc::<Value>("a.json")
            .unwrap()
            .write(&json!(1))
            .unwrap();
    }
    // A later statefile wrote format 2 into both header copies.
    let log = dir.path().join(".statefile/journal");
    let mut bytes = std::fs::read(&log).unwrap();
    for at in [0usize, 4096] {
        if &bytes[at..at + 8] != b"SFJOURNL" {
            continue;
        }
        bytes[at + 8..at + 12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c(&bytes[at..at + 64]);
        bytes[at + 64..at + 68].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(&log, &bytes).unwrap();
    let before = std::fs::read(dir.path().join("a.json")).unwrap();
    let opts = fresh();
    let doc = statefile::Doc::<Value>::open_with(dir.path().join("a.json"), opts.clone()).unwrap();
    let e = doc.write(&json!(2)).unwrap_err();
    assert!(
        e.to_string().contains("format version 2"),
        "the error names the version: {e}"
    );
    let e = doc.delete().unwrap_err();
    assert!(e.to_string().contains("format version 2"), "{e}");
    assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), before);
    // A new document in the tree, too.
    let other = statefile::Doc::<Value>::open_with(dir.path().join("b.json"), opts).unwrap();
    assert!(other.write(&json!(3)).is_err());
    assert!(!dir.path().join("b.json").exists());
}

/// The journal file's records start here (after the two header copies).
const RING_START: usize = 8192;

fn three_records(dir: &Path) -> Options {
    let opts = fresh();
    journal::enable(dir, &opts, small()).unwrap();
    let store = Store::open_with(dir, opts.clone()).unwrap();
    for n in 0..3 {
        store
            .doc::<Value>(&format!("d{n}.json"))
            .unwrap()
            .write(&json!({"n": n, "pad": "x".repeat(300)}))
            .unwrap();
    }
    opts
}

/// The LSN (offset from the ring's start) of each record, following their lengths.
fn record_offsets(log: &[u8], n: usize) -> Vec<usize> {
    let mut at = 0;
    let mut out = Vec::new();
    for _ in 0..n {
        assert_eq!(&log[RING_START + at..RING_START + at + 4], b"SFJR");
        out.push(at);
        at += u64::from_le_bytes(
            log[RING_START + at + 8..RING_START + at + 16]
                .try_into()
                .unwrap(),
        ) as usize;
    }
    out
}

#[test]
fn a_torn_last_record_is_ignored_and_damage_before_it_is_reported() {
    // The last record torn: the journal simply ends before it.
    let dir = tempfile::tempdir().unwrap();
    let opts = three_records(dir.path());
    let log_path = dir.path().join(".statefile/journal");
    let mut log = std::fs::read(&log_path).unwrap();
    let at = record_offsets(&log, 3);
    log[RING_START + at[2] + 60] ^= 0xff;
    std::fs::write(&log_path, &log).unwrap();
    let st = journal::status(dir.path(), &opts).unwrap().unwrap();
    assert_eq!(st.records, 2, "{st:?}");
    assert!(st.damage.is_none(), "a torn tail is not damage: {st:?}");
    assert!(!st.needs_repair(), "{st:?}");

    // The first record damaged, two valid ones after it: damage, reported.
    let dir = tempfile::tempdir().unwrap();
    let opts = three_records(dir.path());
    let log_path = dir.path().join(".statefile/journal");
    let mut log = std::fs::read(&log_path).unwrap();
    let at = record_offsets(&log, 3);
    log[RING_START + at[0] + 60] ^= 0xff;
    std::fs::write(&log_path, &log).unwrap();
    let st = journal::status(dir.path(), &opts).unwrap().unwrap();
    let damage = st.damage.clone().expect("damage reported");
    assert_eq!(damage.lsn, at[0] as u64);
    assert!(damage.later_records >= 1, "{damage:?}");
    assert!(st.needs_repair());
    let report = statefile::Scan::new(statefile::ScanMode::Verify)
        .options(opts)
        .run(dir.path())
        .unwrap();
    assert!(report.needs_repair());
    assert!(
        report
            .findings
            .iter()
            .any(|f| matches!(f.problem, statefile::Problem::JournalDamaged { .. })),
        "{report:?}"
    );
    // After a reboot, the damage is found when the journal is opened: writes are
    // refused (appending would overwrite the valid records after it).
    common::reboot_journal(dir.path());
    let opts = fresh();
    let doc = statefile::Doc::<Value>::open_with(dir.path().join("d2.json"), opts).unwrap();
    let e = doc.write(&json!("new")).unwrap_err();
    assert_eq!(e.kind(), statefile::ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("damaged before its end"), "{e}");
    assert_eq!(doc.read().unwrap()["n"], json!(2));
}

#[test]
fn a_group_commit_batch_is_one_journal_record() {
    let dir = tempfile::tempdir().unwrap();
    let opts = fresh();
    journal::enable(dir.path(), &opts, JournalOptions::default()).unwrap();
    let store = Arc::new(Store::open_with(dir.path(), opts.clone()).unwrap());
    store
        .doc::<Value>("jobs.json")
        .unwrap()
        .write(&json!({"items": []}))
        .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let doc = store.doc::<Value>("jobs.json").unwrap();
                (0..20)
                    .map(|i| {
                        doc.update(|v| {
                            v["items"].as_array_mut().unwrap().push(json!([t, i]));
                            Ok::<(), statefile::Error>(())
                        })
                        .unwrap()
                        .1
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let receipts: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let v = store.doc::<Value>("jobs.json").unwrap().read().unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 160, "no update lost");
    // Every batch wrote once: one version per batch, one record per batch.
    let batches: std::collections::HashSet<_> =
        receipts.iter().map(|r| r.version.clone()).collect();
    let st = journal::status(dir.path(), &opts).unwrap().unwrap();
    assert_eq!(
        st.records,
        batches.len() + 1,
        "one record per batch, and the setup's: {st:?}"
    );
    assert!(
        receipts
            .iter()
            .all(|r| r.durability == statefile::Durability::Full)
    );
    // Eight threads queued on one document while each write flushes: some batches
    // held several updates (else this test would prove nothing about batches).
    assert!(
        batches.len() < receipts.len(),
        "{} batches for {} updates",
        batches.len(),
        receipts.len()
    );
}

/// Makes a file immutable (`chattr +i`) for as long as it lives, if the process may
/// (root, on a file system with the flag).
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(path: &Path) -> std::io::Result<()> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()?
            .success();
        if ok {
            Ok(())
        } else {
            Err(std::io::Error::other("chattr +i refused"))
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

// A rename that failed after the journal flush reported the rename's own kind
// (PermissionDenied here), so a client could retry a write that had happened.
#[test]
fn a_rename_that_fails_after_the_flush_is_reported_as_a_committed_write() {
    let dir = tempfile::tempdir().unwrap();
    let opts = fresh().backups(0);
    let store = Store::open_with(dir.path(), opts.clone()).unwrap();
    journal::enable(dir.path(), &opts, small()).unwrap();
    let path = dir.path().join("a.json");
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!({"v": 1}))
        .unwrap();
    let _cleanup = Immutable(path.clone());
    if Immutable::set(&path).is_err() {
        common::skip::skip("chattr +i needs root and a file system with the flag");
        return;
    }
    std::process::Command::new("chattr")
        .arg("-i")
        .arg(&path)
        .status()
        .unwrap();
    // A real failure: once the temp file exists (after the record is appended, before
    // it is flushed), the document becomes immutable, so the rename over it fails with
    // EPERM after the record was flushed.
    let target = path.clone();
    let hooked = opts.on_temp_created(move |_| Immutable::set(&target));
    let doc = Store::open_with(dir.path(), hooked)
        .unwrap()
        .doc::<Value>("a.json")
        .unwrap();
    let e = doc.write(&json!({"v": 2})).unwrap_err();
    assert_eq!(e.kind(), statefile::ErrorKind::Durability, "{e}");
    assert!(e.to_string().contains("committed in the journal"), "{e}");
    let committed = e.version().expect("the committed version").clone();
    assert_eq!(std::fs::read(&path).unwrap(), b"{\n  \"v\": 1\n}\n");
    drop(_cleanup);
    // The next writer of the document applies the commit before its own change.
    let doc = store.doc::<Value>("a.json").unwrap();
    let seen = std::sync::Mutex::new(None);
    doc.update(|v| {
        *seen.lock().unwrap() = Some(v.clone());
        v["w"] = json!(3);
        Ok::<_, statefile::Error>(())
    })
    .unwrap();
    assert_eq!(seen.into_inner().unwrap(), Some(json!({"v": 2})));
    assert_eq!(doc.read().unwrap(), json!({"v": 2, "w": 3}));
    assert_eq!(
        statefile::Version::of(b"{\n  \"v\": 2\n}\n"),
        committed,
        "the error named the version that was committed"
    );
}

/// What a store opened after a reboot replayed (the shared state is gone with it).
fn replayed_after_a_reboot(root: &Path) -> Vec<std::path::PathBuf> {
    common::reboot_journal(root);
    common::replayed(&Store::open_with(root, fresh()).unwrap())
}

// A write's record is appended before its temp file is made (so that the device writes
// the record meanwhile): a failure making the temp file came after the record, which a
// replay would have applied although the caller was told the write failed. The hook
// runs once the temp file exists, after the append; its refusal is such a failure.
#[test]
fn a_write_that_fails_after_its_record_was_appended_is_never_applied() {
    let dir = tempfile::tempdir().unwrap();
    {
        let opts = fresh();
        journal::enable(dir.path(), &opts, small()).unwrap();
        let store = Store::open_with(dir.path(), opts.clone()).unwrap();
        store
            .doc::<Value>("a.json")
            .unwrap()
            .write(&json!({"v": 1}))
            .unwrap();
        let refusing = opts.on_temp_created(|_| Err(std::io::Error::other("refused by the test")));
        let hooked = Store::open_with(dir.path(), refusing).unwrap();
        for (name, value) in [("a.json", json!({"v": 2})), ("new.json", json!({"n": 1}))] {
            let e = hooked
                .doc::<Value>(name)
                .unwrap()
                .write(&value)
                .unwrap_err();
            assert!(e.to_string().contains("refused by the test"), "{e}");
            assert_ne!(e.kind(), statefile::ErrorKind::Durability, "{e}");
        }
        let st = journal::status(dir.path(), &fresh()).unwrap().unwrap();
        assert!(st.to_replay.is_empty(), "{st:?}");
        // The next writer in this process finds nothing of the failed writes to apply.
        assert_eq!(
            common::seen_by_next_update(&store, "a.json"),
            json!({"v": 1})
        );
        assert!(!dir.path().join("new.json").exists());
    }
    // Nor does a replay of the whole journal after a reboot.
    assert_eq!(
        replayed_after_a_reboot(dir.path()),
        Vec::<std::path::PathBuf>::new()
    );
    let store = Store::open_with(dir.path(), fresh()).unwrap();
    assert_eq!(
        store.doc::<Value>("a.json").unwrap().read().unwrap(),
        json!({"v": 1})
    );
    assert!(!dir.path().join("new.json").exists());
    assert_eq!(common::temps(dir.path()), Vec::<String>::new());
}

// The same with a real failure: a full disk refuses the temp file's bytes after the
// record went into the (preallocated) journal. NoSpace, the document intact, no temp
// left, and nothing replayed over it later.
#[test]
fn a_full_disk_after_the_append_is_no_space_and_never_applied() {
    let mnt = tempfile::tempdir().unwrap();
    let Some(_m) = common::tiny_tmpfs(mnt.path(), "1m") else {
        return;
    };
    let root = mnt.path();
    {
        let opts = fresh().backups(0);
        journal::enable(root, &opts, small()).unwrap();
        let store = Store::open_with(root, opts).unwrap();
        let doc = store.doc::<Value>("a.json").unwrap();
        doc.write(&json!({"v": 1})).unwrap();
        let filler = root.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 4096];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        drop(f);
        let e = doc
            .write(&json!({"v": "two", "pad": "x".repeat(8192)}))
            .unwrap_err();
        assert_eq!(e.kind(), statefile::ErrorKind::NoSpace, "{e}");
        assert_eq!(doc.read().unwrap(), json!({"v": 1}));
        assert_eq!(common::temps(root), Vec::<String>::new());
        std::fs::remove_file(&filler).unwrap();
    }
    assert_eq!(
        replayed_after_a_reboot(root),
        Vec::<std::path::PathBuf>::new()
    );
    let store = Store::open_with(root, fresh()).unwrap();
    assert_eq!(
        store.doc::<Value>("a.json").unwrap().read().unwrap(),
        json!({"v": 1})
    );
}

// Journal mode renames a new file over the document, as the plain protocol does, with
// no sync: a reader that opened the old version reads it whole, the name always holds
// one complete version, the mode is kept, and no temp is left.
#[test]
fn a_journal_write_renames_a_new_file_in_and_leaves_no_temp() {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let opts = fresh().backups(0);
    journal::enable(dir.path(), &opts, small()).unwrap();
    let store = Store::open_with(dir.path(), opts).unwrap();
    let doc = store.doc::<Value>("a.json").unwrap();
    let path = dir.path().join("a.json");
    doc.write(&json!({"v": 0, "pad": "x".repeat(3000)}))
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut old = std::fs::File::open(&path).unwrap();
    let old_ino = old.metadata().unwrap().ino();
    for v in 1..=20 {
        doc.write(&json!({"v": v, "pad": "y".repeat(3000)}))
            .unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file());
        assert_ne!(
            meta.ino(),
            old_ino,
            "a new file each time, never the old one reused"
        );
        assert_eq!(meta.mode() & 0o7777, 0o600, "the mode is kept");
        assert_eq!(
            common::temps(dir.path()),
            Vec::<String>::new(),
            "after write {v}"
        );
    }
    let mut text = String::new();
    old.read_to_string(&mut text).unwrap();
    let seen: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        seen["v"],
        json!(0),
        "the reader's file is the old version, whole"
    );
    assert_eq!(doc.read().unwrap()["v"], json!(20));
    assert_eq!(
        common::seen_by_next_update(&store, "a.json")["v"],
        json!(20)
    );
}

// Another program puts a directory at the document's name after the writer looked: the
// rename refuses to replace it (EISDIR) after the record was flushed, so the write is
// reported as committed, not applied; the directory and what is in it stay, and no temp
// is left.
#[test]
fn a_directory_put_at_the_name_during_a_journal_write_stays_there() {
    let dir = tempfile::tempdir().unwrap();
    let opts = fresh().backups(0);
    journal::enable(dir.path(), &opts, small()).unwrap();
    let store = Store::open_with(dir.path(), opts.clone()).unwrap();
    let path = dir.path().join("a.json");
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!({"v": 1}))
        .unwrap();
    let target = path.clone();
    let hooked = opts.on_temp_created(move |_| {
        std::fs::remove_file(&target)?;
        std::fs::create_dir(&target)?;
        std::fs::write(target.join("inside"), b"kept")
    });
    let doc = Store::open_with(dir.path(), hooked)
        .unwrap()
        .doc::<Value>("a.json")
        .unwrap();
    let e = doc.write(&json!({"v": 2})).unwrap_err();
    assert_eq!(e.kind(), statefile::ErrorKind::Durability, "{e}");
    assert!(e.to_string().contains("committed in the journal"), "{e}");
    assert!(e.to_string().contains("a.json"), "{e}");
    assert!(std::fs::symlink_metadata(&path).unwrap().is_dir());
    assert_eq!(std::fs::read(path.join("inside")).unwrap(), b"kept");
    assert_eq!(common::temps(dir.path()), Vec::<String>::new());
}

// After a reboot (shared state gone), the first process to open the journal recovers it,
// which needs the users lock alone. Something that is no user can hold that lock for a
// moment: a child forked by any process that has the journal open holds its descriptors,
// the lock among them, until it execs. That moment was reported as a damaged shared
// state ("not valid although other processes use the journal", a flaky test here); it
// is now waited out. A holder that stays is still reported, after a second.
#[test]
fn a_lock_holder_for_a_moment_after_a_reboot_does_not_make_the_shared_state_damage() {
    let dir = tempfile::tempdir().unwrap();
    let opts = fresh();
    journal::enable(dir.path(), &opts, small()).unwrap();
    let path = dir.path().join("a.json");
    Doc::<Value>::open_with(&path, opts)
        .unwrap()
        .write(&json!({"v": 1}))
        .unwrap();
    common::reboot_journal(dir.path());
    let users = dir.path().join(".statefile/journal-users");
    let hold = |secs: &str| {
        let child = std::process::Command::new("flock")
            .arg("--shared")
            .arg(&users)
            .args(["sleep", secs])
            .spawn()
            .expect("flock(1) from util-linux");
        // Until the child holds the lock.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::process::Command::new("flock")
            .args(["--exclusive", "--nonblock"])
            .arg(&users)
            .arg("true")
            .status()
            .unwrap()
            .success()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the holder never locked"
            );
        }
        child
    };
    let mut child = hold("0.3");
    let doc = Doc::<Value>::open_with(&path, fresh()).unwrap();
    doc.write(&json!({"v": 2})).unwrap();
    assert_eq!(doc.read().unwrap(), json!({"v": 2}));
    child.wait().unwrap();
    // A holder that stays while the shared state is not valid: damage, said so.
    common::reboot_journal(dir.path());
    let mut child = hold("3");
    let started = std::time::Instant::now();
    let e = Doc::<Value>::open_with(&path, fresh())
        .unwrap()
        .write(&json!({"v": 3}))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("is not valid although other processes use"),
        "{e}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A large array of strings made as it is written, never held whole. Each
/// serialization of it is a pass (statefile checks a value in a first pass, then writes
/// it in a second); the second fails (as a serializer error, which no write can produce
/// otherwise) if, `limit` bytes in, `spilled` is still unset: the bytes were still going
/// to memory.
#[derive(serde::Deserialize)]
struct Large {
    #[serde(skip)]
    passes: Arc<std::sync::atomic::AtomicUsize>,
    #[serde(skip)]
    spilled: Arc<std::sync::atomic::AtomicBool>,
    #[serde(skip)]
    limit: usize,
    #[serde(skip)]
    items: usize,
}

impl serde::Serialize for Large {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        use std::sync::atomic::Ordering::SeqCst;
        let pass = self.passes.fetch_add(1, SeqCst) + 1;
        let item = "x".repeat(1000);
        let mut seq = s.serialize_seq(Some(self.items))?;
        for i in 0..self.items {
            seq.serialize_element(&item)?;
            if pass == 2 && i * 1003 > self.limit && !self.spilled.load(SeqCst) {
                return Err(S::Error::custom(format!(
                    "{} bytes made and still no temp file: they are all in memory",
                    i * 1003
                )));
            }
        }
        seq.end()
    }
}

// In journal mode a document was serialized whole into memory before the journal's
// size check sent one too large for a record to the direct write: a document of a
// gigabyte cost a gigabyte of memory (and one whose serialization never ended, all of
// it), where outside journal mode it streams to its temp file. Past the journal's
// largest record the bytes now go to the temp file too, and the document is written as
// outside journal mode (with a record saying so).
#[test]
fn a_document_too_large_for_the_journal_streams_to_its_temp_file_not_to_memory() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let spilled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = spilled.clone();
    let opts = fresh().backups(0).on_temp_created(move |_| {
        seen.store(true, SeqCst);
        Ok(())
    });
    journal::enable(root, &opts, small()).unwrap();
    let doc = Doc::<Large>::open_with(root.join("a.json"), opts).unwrap();
    let value = Large {
        passes: Arc::default(),
        spilled: spilled.clone(),
        // The journal's largest record is a quarter of its 64 KiB, and the serializer's
        // buffer holds 64 KiB more.
        limit: 1 << 20,
        items: 2 << 10,
    };
    doc.write(&value).unwrap();
    assert_eq!(value.passes.load(SeqCst), 2, "a check, then the write");
    assert!(spilled.load(SeqCst));
    let back: Vec<String> =
        serde_json::from_slice(&std::fs::read(root.join("a.json")).unwrap()).unwrap();
    assert_eq!(back.len(), 2 << 10);
    assert!(
        back.iter()
            .all(|s| s.len() == 1000 && s.bytes().all(|b| b == b'x'))
    );
    assert_eq!(common::temps(root), Vec::<String>::new());
    // After a power loss, the journal's record of the direct write keeps an older
    // record from being replayed over it.
    assert_eq!(
        replayed_after_a_reboot(root),
        Vec::<std::path::PathBuf>::new()
    );
    let again: Vec<String> =
        serde_json::from_slice(&std::fs::read(root.join("a.json")).unwrap()).unwrap();
    assert_eq!(again, back);
}

/// In a journal enabled with `swap`, a write puts its temp in place by exchanging the
/// two names, then unlinks the replaced version (a rename over it makes ext4 write
/// every version out at once, and every flush wait for that I/O). Where the file
/// system cannot exchange (EINVAL, ENOSYS, EOPNOTSUPP; EPERM from a seccomp filter),
/// the write renames instead;
/// either way the document holds the new version and no temp is left. Without `swap`
/// (the default) a write never exchanges.
#[test]
fn a_journal_write_exchanges_the_names_or_renames_where_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let fs = common::Twisted::new();
    let opts = fresh().fs(fs.clone()).backups(0);
    // The default: renames.
    let plain = tempfile::tempdir().unwrap();
    let st = journal::enable(plain.path(), &opts, small()).unwrap();
    assert!(!st.swap);
    let d = Store::open_with(plain.path(), opts.clone()).unwrap();
    for v in 0..3 {
        d.doc::<Value>("a.json").unwrap().write(&json!(v)).unwrap();
    }
    assert_eq!(
        *fs.exchanges.lock().unwrap(),
        0,
        "a journal without swap exchanged"
    );
    let swap = JournalOptions {
        swap: true,
        ..small()
    };
    let st = journal::enable(dir.path(), &opts, swap).unwrap();
    assert!(st.swap);
    let store = Store::open_with(dir.path(), opts.clone()).unwrap();
    let doc = store.doc::<Value>("a.json").unwrap();
    // The first write creates the document: nothing to exchange with.
    doc.write(&json!({"v": 0})).unwrap();
    assert_eq!(*fs.exchanges.lock().unwrap(), 0);
    for v in 1..4 {
        doc.write(&json!({"v": v})).unwrap();
        assert_eq!(doc.read().unwrap(), json!({"v": v}));
    }
    assert_eq!(*fs.exchanges.lock().unwrap(), 3, "each replace exchanged");
    assert!(
        common::temps(dir.path()).is_empty(),
        "{:?}",
        common::temps(dir.path())
    );
    for errno in [1, 22, 38, 95] {
        *fs.fail_exchange.lock().unwrap() = Some(errno);
        doc.write(&json!({"errno": errno})).unwrap();
        assert_eq!(doc.read().unwrap(), json!({"errno": errno}));
        assert!(common::temps(dir.path()).is_empty(), "errno {errno}");
    }
    // Any other failure of the exchange is the rename's failure after the flush: the
    // write is committed (Durability, with its version) and applied by the next writer.
    *fs.fail_exchange.lock().unwrap() = Some(5);
    let e = doc.write(&json!({"v": "committed"})).unwrap_err();
    assert_eq!(e.kind(), statefile::ErrorKind::Durability, "{e}");
    assert!(common::temps(dir.path()).is_empty());
    *fs.fail_exchange.lock().unwrap() = None;
    // (The store that got a Durability error refuses further writes until reopened.)
    let doc = Store::open_with(dir.path(), opts.clone())
        .unwrap()
        .doc::<Value>("a.json")
        .unwrap();
    doc.update(|v| {
        assert_eq!(*v, json!({"v": "committed"}));
        v["next"] = json!(true);
        Ok::<_, statefile::Error>(())
    })
    .unwrap();
    assert_eq!(doc.read().unwrap(), json!({"v": "committed", "next": true}));
    // After a checkpoint every version written is the document's, durable; the
    // journal still swaps (the flag is kept in the header it rewrites).
    journal::checkpoint(dir.path(), &opts).unwrap();
    assert!(journal::status(dir.path(), &opts).unwrap().unwrap().swap);
    assert_eq!(
        std::fs::read(dir.path().join("a.json")).unwrap(),
        b"{\n  \"v\": \"committed\",\n  \"next\": true\n}\n"
    );
}

/// In a journal that swaps files in, with backups on, the rotation of the replaced
/// version into `.bak` is an exchange too (renamed over the older `.bak`, ext4 would
/// write the kept version out at once): `.bak` holds the previous version, the older
/// one is gone, no temp is left. A delete still renames the document to `.bak` (a swap
/// would show the older backup at the document's name for a moment).
#[test]
fn with_backups_a_swapping_journal_swaps_the_backup_in_too() {
    let dir = tempfile::tempdir().unwrap();
    let fs = common::Twisted::new();
    let opts = fresh().fs(fs.clone()).backups(1);
    let swap = JournalOptions {
        swap: true,
        ..small()
    };
    journal::enable(dir.path(), &opts, swap).unwrap();
    let store = Store::open_with(dir.path(), opts.clone()).unwrap();
    let doc = store.doc::<Value>("a.json").unwrap();
    doc.write(&json!({"v": 0})).unwrap();
    doc.write(&json!({"v": 1})).unwrap();
    // The first replace found no .bak: the document swapped, the backup renamed.
    assert_eq!(*fs.exchanges.lock().unwrap(), 1);
    let bak = dir.path().join(".a.json.bak");
    for v in 2..5 {
        doc.write(&json!({"v": v})).unwrap();
        assert_eq!(doc.read().unwrap(), json!({"v": v}));
        let kept: Value = serde_json::from_slice(&std::fs::read(&bak).unwrap()).unwrap();
        assert_eq!(kept, json!({"v": v - 1}));
    }
    assert_eq!(
        *fs.exchanges.lock().unwrap(),
        1 + 2 * 3,
        "document and backup swapped"
    );
    assert!(
        common::temps(dir.path()).is_empty(),
        "{:?}",
        common::temps(dir.path())
    );
    let before = *fs.exchanges.lock().unwrap();
    doc.delete().unwrap();
    assert_eq!(
        *fs.exchanges.lock().unwrap(),
        before,
        "a delete does not swap"
    );
    let kept: Value = serde_json::from_slice(&std::fs::read(&bak).unwrap()).unwrap();
    assert_eq!(kept, json!({"v": 4}));
    assert!(common::temps(dir.path()).is_empty());
}

/// Regression: the checkpoint lock was waited for without a time limit. A writer that
/// found a checkpoint due after its write waited for another process's checkpoint to
/// end, and one that found the journal full waited as long: with that process stopped
/// (SIGSTOP, a debugger), every writer of the store hung for good. Now a due checkpoint
/// that is already running is left to it (the write is durable; the next finds it due),
/// and a full journal fails the write with `LockTimeout` after the lock timeout,
/// nothing written. So does an explicit checkpoint.
#[test]
fn a_process_holding_the_checkpoint_lock_never_hangs_a_writer() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    journal::enable(dir.path(), &fresh(), small()).unwrap();
    let Some(mut holder) = common::hold_checkpoint_lock(dir.path()) else {
        return;
    };
    let opts = fresh().backups(0).lock_timeout(Duration::from_secs(1));
    let store = Store::open_with(dir.path(), opts.clone()).unwrap();
    let doc = store.doc::<Value>("a.json").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for i in 0..200 {
            let started = Instant::now();
            let r = doc.write(&json!({"i": i, "pad": "x".repeat(1000)}));
            let failed = r.is_err();
            let _ = tx.send((i, started.elapsed(), r.map(|_| ())));
            if failed {
                break;
            }
        }
    });
    let mut last_ok = None;
    let mut refused = None;
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok((i, took, Ok(()))) => {
                assert!(
                    took < Duration::from_millis(800),
                    "write {i} took {took:?}: it waited for the checkpoint lock"
                );
                last_ok = Some(i);
            }
            Ok((i, took, Err(e))) => {
                refused = Some((i, took, e));
                break;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = holder.kill();
                panic!(
                    "a write hung while another process held the checkpoint lock \
                     (last acknowledged: {last_ok:?})"
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let last_ok = last_ok.expect("the first writes fit the journal");
    let (i, took, e) = refused.expect("the journal filled up: 64 KiB, 1 KB writes");
    assert_eq!(
        e.kind(),
        statefile::ErrorKind::LockTimeout,
        "write {i}: {e}"
    );
    assert!(e.to_string().contains("checkpoint lock"), "{e}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let read = store.doc::<Value>("a.json").unwrap().read().unwrap();
    assert_eq!(
        read["i"],
        json!(last_ok),
        "the refused write was not written"
    );
    // An explicit checkpoint waits as long, no longer.
    let started = Instant::now();
    let e = journal::checkpoint(dir.path(), &opts).unwrap_err();
    assert_eq!(e.kind(), statefile::ErrorKind::LockTimeout, "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Once the lock is free, the checkpoint runs and writes go on.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let doc = store.doc::<Value>("a.json").unwrap();
    doc.write(&json!({"after": true})).unwrap();
    assert_eq!(doc.read().unwrap(), json!({"after": true}));
}

/// The findings of `report` without what was done: (path, problem).
fn found(report: &statefile::Report) -> Vec<(std::path::PathBuf, statefile::Problem)> {
    report
        .findings
        .iter()
        .map(|f| (f.path.clone(), f.problem.clone()))
        .collect()
}

/// After a power loss a document can be empty on disk (a swapped-in one, or any file
/// whose data was not written out) while the journal holds its committed bytes. A repair
/// replays it from the journal (the journal comes first); its dry run must say so, not
/// offer the older `.bak`, and verify must not either. The repair then does exactly
/// what the dry run said: the same findings, each "would" done. A damaged document the
/// journal does not cover (its records are behind the checkpoint) is still restored
/// from its backup, and both say that.
#[test]
fn a_dry_run_names_the_journal_replay_that_the_repair_makes() {
    use statefile::{Action, Problem, Scan, ScanMode};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    {
        let opts = fresh();
        journal::enable(&root, &opts, small()).unwrap();
        let store = Store::open_with(&root, opts.clone()).unwrap();
        let b = store.doc::<Value>("b.json").unwrap();
        b.write(&json!({"b": 1})).unwrap();
        b.write(&json!({"b": 2})).unwrap();
        journal::checkpoint(&root, &opts).unwrap();
        let a = store.doc::<Value>("a.json").unwrap();
        a.write(&json!({"v": 1})).unwrap();
        a.write(&json!({"v": 2})).unwrap(); // .a.json.bak holds {"v": 1}
    }
    // The power went out: both files came back empty.
    std::fs::write(root.join("a.json"), b"").unwrap();
    std::fs::write(root.join("b.json"), b"").unwrap();
    common::reboot_journal(&root);
    let (a, b) = (root.join("a.json"), root.join("b.json"));

    let verified = Scan::new(ScanMode::Verify)
        .options(fresh())
        .run(&root)
        .unwrap();
    let plan = Scan::new(ScanMode::Repair)
        .dry_run(true)
        .options(fresh())
        .run(&root)
        .unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), b"", "a dry run changes nothing");
    assert_eq!(found(&verified), found(&plan), "{verified:#?} {plan:#?}");
    let replay = Problem::JournalReplay {
        version: Some(statefile::Version::of(b"{\n  \"v\": 2\n}\n")),
    };
    let wanted: Vec<_> = found(&plan).into_iter().map(|(p, _)| p).collect();
    assert_eq!(wanted, [a.clone(), b.clone()], "{plan:#?}");
    assert_eq!(plan.findings[0].problem, replay);
    assert_eq!(
        plan.findings[0].action,
        Action::Would("replay from the journal".into())
    );
    assert!(
        matches!(&plan.findings[1].problem, Problem::CorruptDocument { .. }),
        "{plan:#?}"
    );
    assert_eq!(
        plan.findings[1].action,
        Action::Would(format!(
            "restore from {}",
            root.join(".b.json.bak").display()
        ))
    );
    assert!(verified.findings.iter().all(|f| f.action == Action::None));

    let done = Scan::new(ScanMode::Repair)
        .options(fresh())
        .run(&root)
        .unwrap();
    assert_eq!(found(&done), found(&plan), "{done:#?}");
    for (would, did) in plan.findings.iter().zip(&done.findings) {
        let Action::Would(what) = &would.action else {
            panic!("{would:?}")
        };
        let as_done = match &did.action {
            Action::Replayed => "replay from the journal".to_string(),
            Action::Restored { from, .. } => format!("restore from {}", from.display()),
            other => panic!("{other:?}"),
        };
        assert_eq!(what, &as_done, "{plan:#?} {done:#?}");
    }
    assert!(!done.needs_repair(), "{done:#?}");
    assert_eq!(statefile::read_json::<Value>(&a).unwrap(), json!({"v": 2}));
    assert_eq!(statefile::read_json::<Value>(&b).unwrap(), json!({"b": 1}));
    assert!(
        Scan::new(ScanMode::Verify)
            .options(fresh())
            .run(&root)
            .unwrap()
            .is_healthy()
    );
}
