//! Every wait for one of the journal's locks ends by the lock timeout. Before, the flush
//! lock (`flock` of `.statefile/journal`) and, everywhere but in `append`, the append
//! lock (`flock` of `.statefile/journal-shm`) were waited for with no limit: a process
//! stopped while it held one (SIGSTOP, a debugger, a frozen container), or anyone who
//! may read those files and `flock`s them, hung every writer of the tree, every server
//! request, for good. Here another process (`flock(1)`) holds the lock; each operation
//! fails within about its lock timeout, names the lock and its file, leaves the
//! documents and the journal as they were, and works again once the lock is let go.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use statefile::{Doc, ErrorKind, Options, Store, journal};

use common::{fresh, hold_journal_lock, within_deadline};

/// The lock timeout of every operation below.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How much longer than [`TIMEOUT`] an operation may take to give up (a loaded machine,
/// a second short wait after the first): generous, but far from "hung".
const SLACK: Duration = Duration::from_secs(4);

/// The flush lock's file, and the append lock's.
const FLUSH: &str = "journal";
const APPEND: &str = "journal-shm";

fn opts() -> Options {
    fresh().lock_timeout(TIMEOUT)
}

/// Another process holding a journal lock, let go when dropped.
struct Holder(Child);

impl Holder {
    fn new(root: &Path, file: &str) -> Option<Holder> {
        hold_journal_lock(root, file).map(Holder)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `f` (on another thread, so that a hang fails the test rather than blocking it);
/// its result and how long it took.
fn timed<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> (R, Duration) {
    within_deadline(what, move || {
        let start = Instant::now();
        let r = f();
        (r, start.elapsed())
    })
}

/// `e` gave up on the journal's `lock` lock (`file`) within about the timeout.
fn gave_up_on(e: &statefile::Error, took: Duration, lock: &str, file: &str) {
    assert!(
        e.message().contains(&format!("journal's {lock} lock")),
        "the error does not name the {lock} lock: {e}"
    );
    assert!(
        e.message()
            .contains(&format!("{}/{file}", journal::META_DIR)),
        "the error does not name {file}: {e}"
    );
    assert!(
        took >= TIMEOUT - Duration::from_millis(50),
        "gave up early: {took:?}"
    );
    assert!(took < TIMEOUT + SLACK, "took {took:?} to give up");
}

/// A journaled store at a new directory, `a.json` written as `{"v": 1}`, the store
/// closed again (nothing of it kept open in this process).
fn store_with_a() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = common::journaled_with(dir.path(), opts());
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!({"v": 1}))
        .unwrap();
    let root = dir.path().to_path_buf();
    (dir, root)
}

fn on_disk(root: &Path, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(root.join(name)).unwrap()).unwrap()
}

// Bug: opening a journal (here by a write: the first in this process) waited for the
// append lock with no limit; a holder stopped every new process of the tree.
#[test]
fn a_write_that_opens_the_journal_times_out_on_a_held_append_lock() {
    let (_dir, root) = store_with_a();
    let Some(holder) = Holder::new(&root, APPEND) else {
        return;
    };
    let path = root.join("a.json");
    let (r, took) = timed("a write opening the journal", move || {
        Doc::<Value>::open_with(&path, opts())?.write(&json!({"v": 2}))
    });
    let e = r.expect_err("the write went through a held append lock");
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    gave_up_on(&e, took, "append", APPEND);
    assert_eq!(on_disk(&root, "a.json"), json!({"v": 1}));
    drop(holder);
    let doc = Doc::<Value>::open_with(root.join("a.json"), opts()).unwrap();
    doc.write(&json!({"v": 3})).unwrap();
    assert_eq!(doc.read().unwrap(), json!({"v": 3}));
    assert_eq!(on_disk(&root, "a.json"), json!({"v": 3}));
}

// Bug: a commit waited for the flush lock with no limit: a process stopped during its
// flush hung every writer of the tree. Its record is appended by then, so the failure
// is `Durability` (the holder, going on, flushes it; the next writer of the document
// applies it), naming the flush lock; a read that must apply it meanwhile fails with
// `LockTimeout`, having done nothing.
#[test]
fn a_write_times_out_on_a_held_flush_lock_with_durability_and_reads_time_out() {
    let (_dir, root) = store_with_a();
    let store = Store::open_with(&root, opts()).unwrap();
    let doc = Arc::new(store.doc::<Value>("a.json").unwrap());
    assert_eq!(doc.read().unwrap(), json!({"v": 1}));
    let Some(holder) = Holder::new(&root, FLUSH) else {
        return;
    };
    let d = doc.clone();
    let (r, took) = timed("a write", move || d.write(&json!({"v": 2})));
    let e = r.expect_err("a write was acknowledged without its flush");
    assert_eq!(e.kind(), ErrorKind::Durability, "{e}");
    gave_up_on(&e, took, "flush", FLUSH);
    assert_eq!(on_disk(&root, "a.json"), json!({"v": 1}));
    assert!(!store.is_poisoned(), "a lock timeout is no failed sync");
    // The lock still held since a wait gave up on it: the next commit waits before it
    // appends anything, and fails with `LockTimeout`, nothing written.
    let b = store.doc::<Value>("b.json").unwrap();
    let (r, took) = timed("a second write", move || b.write(&json!({"v": 1})));
    let e = r.expect_err("a write was acknowledged without its flush");
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    gave_up_on(&e, took, "flush", FLUSH);
    assert!(!root.join("b.json").exists());
    // The first commit is in flight: applying it takes a flush, which waits for the lock.
    let d = doc.clone();
    let (r, took) = timed("a read", move || d.read());
    let e = r.expect_err("a read applied a commit that is not durable");
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    gave_up_on(&e, took, "flush", FLUSH);
    assert_eq!(on_disk(&root, "a.json"), json!({"v": 1}));
    drop(holder);
    // The failed write may or may not have survived (here: flushed and applied by the
    // read); nothing else is there.
    let seen = doc.read().unwrap();
    assert!(seen == json!({"v": 1}) || seen == json!({"v": 2}), "{seen}");
    doc.write(&json!({"v": 3})).unwrap();
    assert_eq!(doc.read().unwrap(), json!({"v": 3}));
    let status = journal::status(&root, &opts()).unwrap().expect("journaled");
    assert!(
        status.damage.is_none() && status.to_replay.is_empty(),
        "{status:?}"
    );
}

// Bug: as above for a transaction: it hung on the flush lock. Now it fails within its
// lock timeout, and its documents are all new or all old, never some of each.
#[test]
fn a_transaction_times_out_on_a_held_flush_lock_all_or_nothing() {
    let (_dir, root) = store_with_a();
    let store = Arc::new(Store::open_with(&root, opts()).unwrap());
    store
        .doc::<Value>("b.json")
        .unwrap()
        .write(&json!({"v": 1}))
        .unwrap();
    let Some(holder) = Holder::new(&root, FLUSH) else {
        return;
    };
    let s = store.clone();
    let (r, took) = timed("a transaction", move || {
        s.transaction(|tx| {
            tx.write("a.json", &json!({"v": 2}))?;
            tx.write("b.json", &json!({"v": 2}))?;
            Ok::<_, statefile::Error>(())
        })
    });
    let e = r.expect_err("a transaction was acknowledged without its flush");
    assert_eq!(e.kind(), ErrorKind::Durability, "{e}");
    gave_up_on(&e, took, "flush", FLUSH);
    assert_eq!(on_disk(&root, "a.json"), json!({"v": 1}));
    assert_eq!(on_disk(&root, "b.json"), json!({"v": 1}));
    drop(holder);
    let both = store.read_tx::<Value>(&["a.json", "b.json"]).unwrap();
    assert_eq!(both[0], both[1], "half a transaction is visible");
    store
        .transaction(|tx| {
            tx.write("a.json", &json!({"v": 3}))?;
            tx.write("b.json", &json!({"v": 3}))?;
            Ok::<_, statefile::Error>(())
        })
        .unwrap();
    let both = store.read_tx::<Value>(&["a.json", "b.json"]).unwrap();
    assert_eq!(both, [Some(json!({"v": 3})), Some(json!({"v": 3}))]);
}

// Bug: a checkpoint waited for the append lock, then the flush lock, with no limit.
#[test]
fn a_checkpoint_times_out_on_a_held_append_or_flush_lock() {
    for (file, lock) in [(APPEND, "append"), (FLUSH, "flush")] {
        let (_dir, root) = store_with_a();
        let store = Store::open_with(&root, opts()).unwrap();
        store
            .doc::<Value>("b.json")
            .unwrap()
            .write(&json!({"v": 1}))
            .unwrap();
        let Some(holder) = Holder::new(&root, file) else {
            return;
        };
        let r2 = root.clone();
        let (r, took) = timed("a checkpoint", move || journal::checkpoint(&r2, &opts()));
        let e = r.expect_err("a checkpoint went through a held lock");
        assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
        gave_up_on(&e, took, lock, file);
        drop(holder);
        let report = journal::checkpoint(&root, &opts()).unwrap();
        assert!(report.freed > 0, "{report:?}");
        assert_eq!(
            store.doc::<Value>("a.json").unwrap().read().unwrap(),
            json!({"v": 1})
        );
        assert_eq!(
            store.doc::<Value>("b.json").unwrap().read().unwrap(),
            json!({"v": 1})
        );
    }
}

// Bug: `journal disable` waited for the append lock with no limit. A timeout changes
// nothing: the journal stays in use (not "being disabled", which would stop writers).
#[test]
fn a_disable_times_out_on_a_held_append_lock_and_changes_nothing() {
    let (_dir, root) = store_with_a();
    let store = Store::open_with(&root, opts()).unwrap();
    let doc = store.doc::<Value>("a.json").unwrap();
    doc.read().unwrap();
    let Some(holder) = Holder::new(&root, APPEND) else {
        return;
    };
    let r2 = root.clone();
    let (r, took) = timed("a disable", move || journal::disable(&r2, &opts()));
    let e = r.expect_err("a disable went through a held append lock");
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    gave_up_on(&e, took, "append", APPEND);
    drop(holder);
    let before = journal::status(&root, &opts())
        .unwrap()
        .expect("still enabled");
    doc.write(&json!({"v": 2})).unwrap();
    let after = journal::status(&root, &opts())
        .unwrap()
        .expect("still enabled");
    assert_eq!(
        after.records,
        before.records + 1,
        "the write went around the journal"
    );
    journal::disable(&root, &opts()).unwrap();
    assert!(journal::status(&root, &opts()).unwrap().is_none());
    assert_eq!(doc.read().unwrap(), json!({"v": 2}));
}

// Bug: `statefile recover` (and a recovery when a process opens the journal alone)
// waited for the flush lock with no limit.
#[test]
fn a_recovery_times_out_on_a_held_flush_lock() {
    let (_dir, root) = store_with_a();
    let store = Arc::new(Store::open_with(&root, opts()).unwrap());
    let Some(holder) = Holder::new(&root, FLUSH) else {
        return;
    };
    let s = store.clone();
    let (r, took) = timed("a recovery", move || s.recover());
    // A recovery reports what it could not do with the journal as a finding.
    let report = r.unwrap();
    let found = format!("{:?}", report.findings);
    assert!(
        report.findings.len() == 1 && found.contains("journal's flush lock"),
        "{found}"
    );
    assert_eq!(
        report.findings[0].path,
        root.join(journal::META_DIR).join(FLUSH)
    );
    assert!(
        took >= TIMEOUT - Duration::from_millis(50),
        "gave up early: {took:?}"
    );
    assert!(took < TIMEOUT + SLACK, "took {took:?} to give up");
    drop(holder);
    let report = store.recover().unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    let doc = store.doc::<Value>("a.json").unwrap();
    assert_eq!(doc.read().unwrap(), json!({"v": 1}));
    doc.write(&json!({"v": 2})).unwrap();
    assert_eq!(on_disk(&root, "a.json"), json!({"v": 2}));
}
