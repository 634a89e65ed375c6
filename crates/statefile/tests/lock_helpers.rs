//! The threads that wait in `flock` for a lock another process (here: another open file
//! description) holds are kept and reused: a contended lock does not start a thread
//! each time. Alone in its test binary, so no other test's helper threads are counted.

use std::collections::BTreeSet;
use std::fs::File;
use std::time::{Duration, Instant};

use statefile::{Doc, Options};

/// The ids of this process's threads named `statefile-flock`.
fn flock_threads() -> BTreeSet<u64> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| {
            let t = t.ok()?;
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            (comm.trim() == "statefile-flock").then(|| t.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

#[test]
fn waits_for_a_lock_held_elsewhere_reuse_one_helper_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.json");
    let doc: Doc<u32> =
        Doc::open_with(&path, Options::new().lock_timeout(Duration::from_secs(30))).unwrap();
    doc.write(&0).unwrap();
    let lock_file = dir.path().join(".a.json.lock");
    let mut seen = BTreeSet::new();
    for i in 1..=20u32 {
        // Another open file description holds the flock, as another process would.
        let other = File::open(&lock_file).unwrap();
        other.lock().unwrap();
        std::thread::scope(|s| {
            let writer = s.spawn(|| doc.write(&i).unwrap());
            // The writer waits through a helper blocked in flock: note which.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let now = flock_threads();
                if !now.is_empty() {
                    seen.extend(now);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "no helper thread waited in flock"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(!writer.is_finished(), "the write did not wait for the lock");
            other.unlock().unwrap();
            let receipt = writer.join().unwrap();
            assert!(receipt.lock_wait > Duration::ZERO);
        });
        assert_eq!(doc.read().unwrap(), i);
    }
    // One thread served all twenty waits (a thread per wait before).
    assert_eq!(seen.len(), 1, "helper threads started: {seen:?}");
}
