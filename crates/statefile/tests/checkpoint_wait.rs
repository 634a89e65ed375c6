//! Review of commit a50ad10 (the checkpoint lock is waited for at most the lock
//! timeout).

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use statefile::Store;
use statefile::journal;

use common::{fresh, small};

/// A writer that finds the journal full while another thread of its process runs a
/// checkpoint (here: an explicit `journal::checkpoint`, slowed by another process
/// holding the lock a while) waited on the in-process checkpoint mutex with no limit,
/// past its lock timeout; then its own checkpoint freed nothing (the other one freed
/// it all) and, its deadline past, the write failed NoSpace "the journal is full and a
/// checkpoint freed nothing: enable it with a larger --size" -- though the journal was
/// empty. Now it waits at most its lock timeout (LockTimeout), and a NoSpace comes only
/// after one more look at the ring.
#[test]
fn a_full_journal_freed_by_another_checkpoint_is_not_nospace() {
    let dir = tempfile::tempdir().unwrap();
    journal::enable(dir.path(), &fresh(), small()).unwrap();
    let Some(mut holder) = common::hold_checkpoint_lock(dir.path()) else {
        return;
    };
    let opts = fresh().backups(0).lock_timeout(Duration::from_secs(1));
    let store = Store::open_with(dir.path(), opts.clone()).unwrap();
    let doc = store.doc::<Value>("a.json").unwrap();
    // Fill the journal (every due checkpoint is skipped: the lock is held).
    let mut i = 0;
    loop {
        match doc.write(&json!({"i": i, "pad": "x".repeat(1000)})) {
            Ok(_) => i += 1,
            Err(e) => {
                assert_eq!(e.kind(), statefile::ErrorKind::LockTimeout, "{e}");
                break;
            }
        }
        assert!(i < 1000, "the journal never filled");
    }
    // Another thread of this process: an explicit checkpoint, waiting for the lock
    // (its own lock timeout is longer).
    let root = dir.path().to_path_buf();
    let long = opts.clone().lock_timeout(Duration::from_secs(10)); // same fs instance: same Journal
    let ckpt = std::thread::spawn(move || journal::checkpoint(&root, &long));
    std::thread::sleep(Duration::from_millis(200));
    // The writer: finds the journal full.
    let d2 = store.doc::<Value>("a.json").unwrap();
    let writer = std::thread::spawn(move || {
        let started = Instant::now();
        let r = d2.write(&json!({"i": "after", "pad": "x".repeat(1000)}));
        (started.elapsed(), r.map(|_| ()))
    });
    std::thread::sleep(Duration::from_millis(1500));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let report = ckpt.join().unwrap().expect("the explicit checkpoint");
    assert!(report.freed > 0);
    let (took, r) = writer.join().unwrap();
    // Its lock timeout (1 s) ran out while the other thread's checkpoint waited: a
    // LockTimeout naming the checkpoint lock, at about that time; never NoSpace, never
    // a wait past it. Or, had the checkpoint been quicker, the write.
    if let Err(e) = &r {
        assert_eq!(
            e.kind(),
            statefile::ErrorKind::LockTimeout,
            "after {took:?}: {e}"
        );
        assert!(e.to_string().contains("checkpoint lock"), "{e}");
        assert!(
            took < Duration::from_millis(1400),
            "waited {took:?}, past its timeout"
        );
    }
    // The journal emptied, a write goes through at once.
    let again = store.doc::<Value>("a.json").unwrap();
    again.write(&json!({"i": "again"})).unwrap();
    assert_eq!(again.read().unwrap(), json!({"i": "again"}));
}
