//! Journal mode appends a write's record before its temp file is made, and withdraws
//! the record when making the temp file fails. Found by a hostile review: paths where
//! a write its caller saw fail was applied anyway, and a replay that changed a new
//! document's owner.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use statefile::journal;
use statefile::{ErrorKind, Options, Store};

/// The ring of `common::small()`.
const C: u64 = 64 << 10;

use common::small;

fn fresh() -> Options {
    common::fresh().lock_timeout(Duration::from_secs(2))
}

fn used(root: &Path) -> (u64, u64) {
    let st = journal::status(root, &fresh()).unwrap().unwrap();
    (st.checkpoint_lsn, st.end_lsn)
}

/// The length of a transaction's record writing `a.json` = "a" and `b.json` = a string
/// of `n` bytes, measured in a scratch store.
fn tx_len(n: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    journal::enable(dir.path(), &fresh(), small()).unwrap();
    let store = Store::open_with(dir.path(), fresh()).unwrap();
    let (_, e0) = used(dir.path());
    store
        .transaction(|tx| {
            tx.write("a.json", &json!("A"))?;
            tx.write("b.json", &json!("b".repeat(n)))?;
            Ok::<_, statefile::Error>(())
        })
        .unwrap();
    let (_, e1) = used(dir.path());
    e1 - e0
}

/// The length of a put of `pad.json` = a string of `n` bytes.
fn put_len(root: &Path, store: &Store, n: usize) -> u64 {
    let (_, e0) = used(root);
    store
        .doc::<Value>("pad.json")
        .unwrap()
        .write(&json!("p".repeat(n)))
        .unwrap();
    let (_, e1) = used(root);
    e1 - e0
}

// The withdrawing record is appended while the commit it cancels is in flight and its
// writer holds the documents' locks. If the ring is full there, append() runs a
// checkpoint, which waits for the lock of every commit in flight before its end:
// this writer's own. It times out, the withdraw fails, the slot stays in flight, and
// the next writer of the document adopts the commit "of a writer that died": a
// transaction whose caller saw it refused is applied.
/// A store whose ring is exactly half full, holding a.json = "A0", and the size of a
/// string that makes the refused transaction's record exactly the other half.
fn half_full() -> (tempfile::TempDir, Store, usize) {
    // A transaction record of exactly half the ring (the most a transaction may take).
    let n0 = 20_000;
    let l0 = tx_len(n0);
    let n_tx = n0 + (C / 2 - l0) as usize;
    assert_eq!(tx_len(n_tx), C / 2);

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let root = root.as_path();
    journal::enable(root, &fresh(), small()).unwrap();
    let store = Store::open_with(root, fresh()).unwrap();
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!("A0"))
        .unwrap();
    // Fill the ring to exactly half (not more: no checkpoint is due).
    let (tail, end) = used(root);
    let mut rest = C / 2 - (end - tail);
    while rest > 16_000 {
        put_len(root, &store, 12_000);
        let (tail, end) = used(root);
        rest = C / 2 - (end - tail);
    }
    let probe = put_len(root, &store, 100);
    let (tail, end) = used(root);
    let rest = C / 2 - (end - tail);
    assert!(rest >= probe, "{rest} {probe}");
    put_len(root, &store, 100 + (rest - probe) as usize);
    let (tail, end) = used(root);
    assert_eq!(end - tail, C / 2);
    (dir, store, n_tx)
}

#[test]
fn a_withdraw_that_finds_the_ring_full_does_not_wait_for_its_own_lock() {
    let (dir, store, n_tx) = half_full();
    let root = dir.path();
    let refusing = fresh().on_temp_created(|temp| {
        if temp.to_string_lossy().contains("b.json") {
            Err(std::io::Error::other("refused by the test"))
        } else {
            Ok(())
        }
    });
    let hooked = Store::open_with(root, refusing).unwrap();
    let e = hooked
        .transaction(|tx| {
            tx.write("a.json", &json!("A1"))?;
            tx.write("b.json", &json!("b".repeat(n_tx)))?;
            Ok::<_, statefile::Error>(())
        })
        .unwrap_err();
    eprintln!("the transaction failed with {:?}: {e}", e.kind());
    // The next writer of a.json must find the document as it was.
    assert_eq!(
        common::seen_by_next_update(&store, "a.json"),
        json!("A0"),
        "the refused transaction was applied"
    );
    assert!(
        !root.join("b.json").exists(),
        "the refused transaction created b.json"
    );
    assert_ne!(e.kind(), ErrorKind::Durability, "{e}");
}

// A `disable` that starts between the append and the failure: it marks the journal
// disabling (no appends), then checkpoints, which waits for this writer's lock to adopt
// its commit in flight. The withdraw's append is refused (Disabled), the slot stays in
// flight, the lock is released, and the disable's checkpoint applies the write the
// caller saw refused: live, no crash involved.
#[test]
fn a_disable_during_a_failing_write_does_not_apply_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    journal::enable(&root, &fresh(), small()).unwrap();
    let store = Store::open_with(&root, fresh()).unwrap();
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!({"v": 1}))
        .unwrap();
    let disabler = std::sync::Mutex::new(None);
    let r2 = root.clone();
    let hooked = fresh().lock_timeout(Duration::from_secs(10));
    let hooked = hooked.on_temp_created(move |_| {
        let r3 = r2.clone();
        *disabler.lock().unwrap() = Some(std::thread::spawn(move || {
            journal::disable(&r3, &fresh().lock_timeout(Duration::from_secs(10)))
        }));
        // Time for the disable to mark the journal disabling and block on our lock.
        std::thread::sleep(Duration::from_millis(1500));
        Err(std::io::Error::other("refused by the test"))
    });
    let hstore = Store::open_with(&root, hooked).unwrap();
    let e = hstore
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!({"v": 2}))
        .unwrap_err();
    eprintln!("the write failed with {:?}: {e}", e.kind());
    // Let the disable finish.
    std::thread::sleep(Duration::from_millis(3000));
    let got: Value = serde_json::from_slice(&std::fs::read(root.join("a.json")).unwrap()).unwrap();
    assert_eq!(
        got,
        json!({"v": 1}),
        "the refused write was applied by the disable"
    );
    assert_ne!(e.kind(), ErrorKind::Durability, "{e}");
}

// The record of a new document now carries ANY_OWNER ("whoever writes it") instead of
// the owner the live write gave the file. A writer that is not root creates a document
// (0600: a secret); the power goes out before the rename reaches the disk; root opens
// the store (`statefile recover`, as the poisoned-journal message asks a person to run):
// the replay creates the document owned by root, 0600, which its writer can no longer
// read. Before the change the record held the writer's uid and gid, and the replay gave
// them back.
#[test]
fn a_replay_by_root_gives_a_new_document_the_owner_its_writer_gave_it() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let opts = || fresh().create_mode(0o600);
    if let Ok(store) = std::env::var("REVIEW_WRITER_STORE") {
        // The child: the writer, not root.
        journal::enable(&store, &opts(), small()).unwrap();
        let s = Store::open_with(&store, opts()).unwrap();
        s.doc::<Value>("secret.json")
            .unwrap()
            .write(&json!({"token": "t"}))
            .unwrap();
        return;
    }
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        common::skip::skip("needs root to run a writer as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::chown(&root, Some(NOBODY), Some(NOBODY)).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_replay_by_root_gives_a_new_document_the_owner_its_writer_gave_it",
            "--exact",
            "--nocapture",
        ])
        .env("REVIEW_WRITER_STORE", &root)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let live = std::fs::metadata(root.join("secret.json")).unwrap();
    assert_eq!((live.uid(), live.gid()), (NOBODY, NOBODY));
    // The power went out before the rename reached the disk; the shared state is gone.
    std::fs::remove_file(root.join("secret.json")).unwrap();
    common::reboot_journal(&root);
    // Root opens the store: the replay.
    let store = Store::open_with(&root, fresh()).unwrap();
    drop(store);
    let replayed = std::fs::metadata(root.join("secret.json")).unwrap();
    assert_eq!(
        (replayed.uid(), replayed.gid(), replayed.mode() & 0o7777),
        (live.uid(), live.gid(), live.mode() & 0o7777),
        "the replay gave the document another owner than its live write did"
    );
}

// The same with an unbounded lock timeout (a supported setting: transaction.rs's
// an_unbounded_lock_timeout_works_in_journal_mode): the withdraw's checkpoint waits for
// the lock this very thread holds, forever.
#[test]
fn a_withdraw_that_finds_the_ring_full_returns_with_an_unbounded_lock_timeout() {
    let (dir, _store, n_tx) = half_full();
    let root = dir.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let refusing = fresh().lock_timeout(Duration::MAX).on_temp_created(|temp| {
            if temp.to_string_lossy().contains("b.json") {
                Err(std::io::Error::other("refused by the test"))
            } else {
                Ok(())
            }
        });
        let hooked = Store::open_with(&root, refusing).unwrap();
        let r = hooked.transaction(|tx| {
            tx.write("a.json", &json!("A1"))?;
            tx.write("b.json", &json!("b".repeat(n_tx)))?;
            Ok::<_, statefile::Error>(())
        });
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    let r = rx.recv_timeout(Duration::from_secs(30));
    assert!(
        r.is_ok(),
        "the refused transaction has not returned after 30 s (deadlocked on its own lock)"
    );
}
