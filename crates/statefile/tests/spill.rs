//! A journal-mode write whose document passes the journal's largest record (a quarter
//! of the ring) streams into its temp file instead of memory, and is written as outside
//! journal mode, with a `direct` record (issue 14). These tests came from a hostile
//! review of that change: every failure while spilled, the protocol's steps, the bound,
//! and what a power loss leaves.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use statefile::journal;
use statefile::{Doc, ErrorKind, Format, Options, Store};

use common::{fresh, small};

/// The largest record of `small()`: a quarter of 64 KiB.
const CAP: usize = (64 << 10) / 4;

fn end_lsn(root: &Path) -> u64 {
    journal::status(root, &fresh()).unwrap().unwrap().end_lsn
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A journal tree (small ring) with a.json = {"v": 1} written through the journal.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    journal::enable(dir.path(), &fresh(), small()).unwrap();
    Doc::<Value>::open_with(dir.path().join("a.json"), fresh())
        .unwrap()
        .write(&json!({"v": 1}))
        .unwrap();
    dir
}

fn big(n: usize) -> Value {
    json!({"big": "x".repeat(n)})
}

// A hook that refused the temp file made by the spill was asked twice (two temp files
// made): the serializer's buffer, dropped with the chunk the failed spill did not take,
// wrote it out on drop, and the spill was tried again.
#[test]
fn a_refused_spill_asks_the_hook_once() {
    let dir = tree();
    let root = dir.path();
    let before = end_lsn(root);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let opts = fresh().on_temp_created(move |_| {
        c.fetch_add(1, SeqCst);
        Err(std::io::Error::other("refused by the test"))
    });
    // Many small values: the spill happens when the 64 KiB buffer flushes.
    let items: Vec<String> = (0..20_000).map(|i| format!("item {i}")).collect();
    let e = Doc::<Value>::open_with(root.join("a.json"), opts)
        .unwrap()
        .write(&json!(items))
        .unwrap_err();
    eprintln!("{:?}: {e}", e.kind());
    assert_eq!(read(&root.join("a.json")), json!({"v": 1}));
    assert_eq!(common::temps(root), Vec::<String>::new());
    assert_eq!(end_lsn(root), before, "nothing appended");
    assert_eq!(
        calls.load(SeqCst),
        1,
        "the hook was asked for more than one temp file"
    );
}

// Same through write_atomic_with (no group commit).
#[test]
fn a_refused_spill_asks_the_hook_once_write_atomic() {
    let dir = tree();
    let root = dir.path();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let opts = fresh().on_temp_created(move |_| {
        c.fetch_add(1, SeqCst);
        Err(std::io::Error::other("refused by the test"))
    });
    // 40 KB: under the 64 KiB buffer, so it reaches the Spill only at into_inner.
    let e =
        statefile::write_atomic_with(root.join("a.json"), &vec![b'x'; 40_000], &opts).unwrap_err();
    eprintln!("{:?}: {e}", e.kind());
    assert_eq!(read(&root.join("a.json")), json!({"v": 1}));
    assert_eq!(common::temps(root), Vec::<String>::new());
    assert_eq!(
        calls.load(SeqCst),
        1,
        "the hook was asked for more than one temp file"
    );
}

/// Serializes fine in statefile's check pass; in the write pass, writes `n` bytes and
/// then fails (a value that changes between passes: a Python object, a shared map).
#[derive(serde::Deserialize, Default)]
struct FailsSecondPass {
    #[serde(skip)]
    passes: AtomicUsize,
    #[serde(skip)]
    n: usize,
}

impl serde::Serialize for FailsSecondPass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let pass = self.passes.fetch_add(1, SeqCst) + 1;
        let mut seq = s.serialize_seq(None)?;
        seq.serialize_element(&"x".repeat(self.n))?;
        if pass == 2 {
            return Err(S::Error::custom("changed between passes"));
        }
        seq.end()
    }
}

// A value whose serialization fails before anything left the 64 KiB buffer: the
// buffer's drop wrote what it held into the spill, which (more than a quarter of the
// ring) made a temp file and called the hook for a write that had already failed.
#[test]
fn a_serializer_failure_before_the_spill_makes_no_temp_file() {
    let dir = tree();
    let root = dir.path();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let opts = fresh().on_temp_created(move |_| {
        c.fetch_add(1, SeqCst);
        Ok(())
    });
    let v = FailsSecondPass {
        passes: AtomicUsize::new(0),
        n: 30_000,
    };
    let e = Doc::<FailsSecondPass>::open_with(root.join("b.json"), opts)
        .unwrap()
        .write(&v)
        .unwrap_err();
    eprintln!("{:?}: {e}", e.kind());
    assert_eq!(e.kind(), ErrorKind::Serialize, "{e}");
    assert_eq!(common::temps(root), Vec::<String>::new());
    assert!(!root.join("b.json").exists());
    assert_eq!(
        calls.load(SeqCst),
        0,
        "a temp file was made for a failed serialization"
    );
}

// A full disk while spilled: NoSpace, no temp, nothing appended, document untouched.
#[test]
fn no_space_while_spilled_is_no_space_and_leaves_nothing() {
    use std::io::Write;
    let outer = tempfile::tempdir().unwrap();
    let Some(_m) = common::tiny_tmpfs(outer.path(), "1m") else {
        return;
    };
    let root = outer.path();
    journal::enable(root, &fresh(), small()).unwrap();
    let doc = Doc::<Value>::open_with(root.join("a.json"), fresh()).unwrap();
    doc.write(&json!({"v": 1})).unwrap();
    let before = end_lsn(root);
    // Streaming past the end of the disk.
    let e = doc.write(&big(4 << 20)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    assert_eq!(common::temps(root), Vec::<String>::new());
    assert_eq!(read(&root.join("a.json")), json!({"v": 1}));
    assert_eq!(end_lsn(root), before);
    // A disk already full: the spill's first write fails.
    let mut f = std::fs::File::create(root.join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    let e = doc.write(&big(100_000)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    assert_eq!(common::temps(root), Vec::<String>::new());
    assert_eq!(read(&root.join("a.json")), json!({"v": 1}));
    assert_eq!(end_lsn(root), before);
    std::fs::remove_file(root.join("filler")).unwrap();
    doc.write(&big(100_000)).unwrap();
    assert!(read(&root.join("a.json")) == big(100_000));
}

// Documents around the bound: in memory and journaled, in memory but too large a
// record (TooLarge -> prepare -> direct), spilled.
#[test]
fn documents_around_the_bound_are_written_and_survive_a_reboot() {
    for len in [
        CAP - 1000,
        CAP - 300,
        CAP - 100,
        CAP - 1,
        CAP,
        CAP + 1,
        CAP + 2,
        (64 << 10) + 7,
    ] {
        let dir = tree();
        let root = dir.path();
        let n = len - 3; // quotes and newline
        let opts = fresh().format(Format::Compact);
        let doc = Doc::<Value>::open_with(root.join("a.json"), opts).unwrap();
        let before = end_lsn(root);
        let r = doc.write(&json!("x".repeat(n))).unwrap();
        let after = end_lsn(root);
        eprintln!("len {len}: record {} bytes", after - before);
        assert_eq!(r.bytes, len as u64);
        assert_eq!(std::fs::read(root.join("a.json")).unwrap().len(), len);
        assert_eq!(r.durability, statefile::Durability::Full);
        assert_eq!(common::temps(root), Vec::<String>::new());
        common::reboot_journal(root);
        let store = Store::open_with(root, fresh()).unwrap();
        assert_eq!(common::replayed(&store), Vec::<std::path::PathBuf>::new());
        assert!(
            read(&root.join("a.json")) == json!("x".repeat(n)),
            "len {len}"
        );
    }
}

// Verification (a lying disk) of a spilled write: refused, nothing left, nothing
// appended.
#[test]
fn a_spilled_write_that_fails_verification_leaves_everything() {
    let dir = tree();
    let root = dir.path();
    let before_names = common::names(root);
    let tw = common::Twisted::new();
    *tw.corrupt_temp_reads.lock().unwrap() = true;
    let opts = fresh()
        .fs(tw.clone() as Arc<dyn statefile::fs::Fs>)
        .verify(true)
        .backups(3);
    let before = end_lsn(root);
    let e = Doc::<Value>::open_with(root.join("a.json"), opts)
        .unwrap()
        .write(&big(100_000))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert_eq!(read(&root.join("a.json")), json!({"v": 1}));
    assert_eq!(common::names(root), before_names);
    assert_eq!(end_lsn(root), before);
}

// Backups, mode, receipt, unchanged, for spilled writes.
#[test]
fn a_spilled_write_keeps_backups_mode_and_a_true_receipt() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    journal::enable(root, &fresh(), small()).unwrap();
    let opts = fresh().backups(2).create_mode(0o600);
    let doc = Doc::<Value>::open_with(root.join("a.json"), opts).unwrap();
    let r1 = doc.write(&json!({"v": 1})).unwrap();
    assert!(r1.created);
    let v2 = big(100_000);
    let r2 = doc.write(&v2).unwrap();
    let bytes = std::fs::read(root.join("a.json")).unwrap();
    assert!(!r2.created && !r2.unchanged);
    assert_eq!(r2.bytes, bytes.len() as u64);
    assert_eq!(r2.version, statefile::Version::of(&bytes));
    assert_eq!(r2.previous.as_ref(), Some(&r1.version));
    assert_eq!(r2.durability, statefile::Durability::Full);
    let b = r2.backup.clone().expect("a backup");
    assert_eq!(b.version, r1.version);
    assert_eq!(read(&b.path), json!({"v": 1}));
    let mode = std::fs::metadata(root.join("a.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let r3 = doc.write(&v2).unwrap();
    assert!(r3.unchanged, "{r3:?}");
    assert_eq!(
        read(&b.path),
        json!({"v": 1}),
        "an unchanged write rotated the backups"
    );
    let v4 = big(120_000);
    let r4 = doc.write(&v4).unwrap();
    let b4 = r4.backup.expect("a backup");
    assert!(read(&b4.path) == v2);
    let bak2 = root.join(".a.json.bak.2");
    assert_eq!(read(&bak2), json!({"v": 1}));
    let mode = std::fs::metadata(root.join("a.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    common::reboot_journal(root);
    let store = Store::open_with(root, fresh()).unwrap();
    assert_eq!(common::replayed(&store), Vec::<std::path::PathBuf>::new());
    assert!(read(&root.join("a.json")) == v4);
}

/// Options whose writes block in the temp-file hook (after their record is appended,
/// so their commit is in flight and their document locked) until `release`.
fn blocking(entered: &Arc<AtomicUsize>, release: &Arc<AtomicBool>) -> Options {
    let (e, r) = (entered.clone(), release.clone());
    fresh()
        .lock_timeout(Duration::from_secs(120))
        .on_temp_created(move |_| {
            e.fetch_add(1, SeqCst);
            while !r.load(SeqCst) {
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
}

fn wait_for(n: usize, entered: &AtomicUsize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while entered.load(SeqCst) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n}",
            entered.load(SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

// The `direct` record cannot be appended (every slot in flight: LockTimeout) after the
// document was renamed and synced: the caller was told the write failed with a kind
// that means "nothing written", yet the new value was there. Now `Durability`.
#[test]
fn a_direct_write_whose_record_cannot_be_appended_does_not_say_nothing_was_written() {
    let dir = tree();
    let root = dir.path();
    let entered = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    let opts = blocking(&entered, &release);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..62)
            .map(|i| {
                let o = opts.clone();
                s.spawn(move || {
                    Doc::<Value>::open_with(root.join(format!("d{i}.json")), o)
                        .unwrap()
                        .write(&json!(i))
                        .unwrap();
                })
            })
            .collect();
        wait_for(62, &entered);
        let r = Doc::<Value>::open_with(
            root.join("a.json"),
            fresh().lock_timeout(Duration::from_secs(1)),
        )
        .unwrap()
        .write(&big(100_000));
        let now = read(&root.join("a.json"));
        release.store(true, SeqCst);
        for h in hs {
            h.join().unwrap();
        }
        match r {
            Ok(r) => eprintln!("ok: {:?}", r.version),
            Err(e) => {
                eprintln!("{:?}: {e}", e.kind());
                assert!(
                    now == json!({"v": 1}) || e.kind() == ErrorKind::Durability,
                    "the write failed with {:?} ({e}), yet a.json holds the new value",
                    e.kind()
                );
            }
        }
    });
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            std::fs::create_dir(to.join(e.file_name())).unwrap();
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else if t.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

// A `disable` has marked the journal disabling and is in its checkpoint (waiting for a
// live writer's commit). A spilled write went direct, its `direct` record was refused
// (Disabled) and ignored, and the write returned Ok without waiting for the disable (a
// write that finds the journal disabling before it starts waits). A power loss then:
// the header's tail was still before a.json's earlier record, which the replay applied
// over the acknowledged write. Now the write waits for the disable (here it times out,
// as the disable waits for a writer held until the write returns: `Durability`).
#[test]
fn a_spilled_write_during_a_disable_survives_a_power_loss() {
    let dir = tree();
    let root = dir.path().to_path_buf();
    let entered = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    let opts = blocking(&entered, &release);
    let writer = fresh();
    // Open the journal in the writer's "process" before the disable starts.
    Doc::<Value>::open_with(root.join("c.json"), writer.clone())
        .unwrap()
        .write(&json!("c"))
        .unwrap();
    let snap = tempfile::tempdir().unwrap();
    let result = Mutex::new(None);
    std::thread::scope(|s| {
        let r = &root;
        let b = s.spawn(move || {
            Doc::<Value>::open_with(r.join("b.json"), opts)
                .unwrap()
                .write(&json!("b"))
                .unwrap();
        });
        wait_for(1, &entered);
        let d =
            s.spawn(move || journal::disable(r, &fresh().lock_timeout(Duration::from_secs(120))));
        std::thread::sleep(Duration::from_millis(1500));
        let w = Doc::<Value>::open_with(root.join("a.json"), writer.clone())
            .unwrap()
            .write(&big(100_000));
        eprintln!("the write: {:?}", w.as_ref().map(|r| &r.version));
        *result.lock().unwrap() = Some(w.is_ok());
        if w.is_ok() {
            copy_tree(&root, snap.path());
        }
        release.store(true, SeqCst);
        b.join().unwrap();
        eprintln!("disable: {:?}", d.join().unwrap());
    });
    if result.into_inner().unwrap() != Some(true) {
        return; // not acknowledged: no promise to keep
    }
    let snap = snap.path();
    assert!(read(&snap.join("a.json")) == big(100_000));
    common::reboot_journal(snap);
    let store = Store::open_with(snap, fresh()).unwrap();
    let replayed = common::replayed(&store);
    let now = read(&snap.join("a.json"));
    assert!(
        now == big(100_000),
        "an acknowledged write was rolled back by the replay ({replayed:?}): a.json is {}",
        if now == json!({"v": 1}) {
            "{\"v\": 1} again"
        } else {
            "something else"
        }
    );
}

// The same without group commit (write_json), where the temp file the buffer's drop
// tried to make could not be made (no inode left): the caller was told NoSpace instead
// of the value's own Serialize error.
#[test]
fn a_serializer_failure_is_reported_as_itself_not_as_the_spill_it_caused() {
    let outer = tempfile::tempdir().unwrap();
    let Some(_m) = common::tiny_tmpfs(outer.path(), "4m,nr_inodes=64") else {
        return;
    };
    let root = outer.path();
    journal::enable(root, &fresh(), small()).unwrap();
    statefile::write_json(root.join("a.json"), &json!({"v": 1})).unwrap();
    let mut i = 0;
    while std::fs::File::create(root.join(format!("f{i}"))).is_ok() {
        i += 1;
    }
    let v = FailsSecondPass {
        passes: AtomicUsize::new(0),
        n: 30_000,
    };
    let e = statefile::write_json(root.join("a.json"), &v).unwrap_err();
    eprintln!("{:?}: {e}", e.kind());
    assert_eq!(read(&root.join("a.json")), json!({"v": 1}));
    assert_eq!(e.kind(), ErrorKind::Serialize, "{e}");
}
