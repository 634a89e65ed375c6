//! Review (rev7) of 17e05c9..0165661: journal writes outside the journal, the disable
//! wait, and the replay within `Options::max_document_bytes`.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use statefile::Store;
use statefile::journal::{self, JournalOptions};

fn pretty(v: &Value) -> Vec<u8> {
    statefile::to_vec(v, statefile::Format::Pretty).unwrap()
}

/// A `journal disable` whose checkpoint fails (here: it times out waiting for a live
/// writer's commit in flight) clears "being disabled" and leaves the journal in use,
/// its tail where it was. A writer of another document that found the journal being
/// disabled and waited (`wait_disabled`) then goes on as if it were disabled: it writes
/// its document outside the journal with no `direct` record (`direct(.., false)`), and
/// returns Ok (durability Full). The journal's last record of that document is still an
/// older version, so the replay after the next reboot (or `recover --repair`) puts the
/// older version back over the acknowledged one.
#[test]
fn a_write_that_waited_for_a_failed_disable_survives_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let opts = common::fresh().backups(0);
    journal::enable(&root, &opts, JournalOptions::default()).unwrap();
    {
        let store = Store::open_with(&root, opts.clone()).unwrap();
        store
            .doc::<Value>("y.json")
            .unwrap()
            .write(&json!({"v": 1}))
            .unwrap();
    }
    // W1: a write of x.json paused after its record was appended (in flight, its lock
    // held), in the temp-file hook.
    let (in_tx, in_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let in_tx = Mutex::new(in_tx);
    let go_rx = Mutex::new(go_rx);
    let hooked = opts.clone().on_temp_created(move |_| {
        let _ = in_tx.lock().unwrap().send(());
        let _ = go_rx.lock().unwrap().recv_timeout(Duration::from_secs(30));
        Ok(())
    });
    let w1 = {
        let root = root.clone();
        std::thread::spawn(move || {
            statefile::Doc::<Value>::open_with(root.join("x.json"), hooked)
                .unwrap()
                .write(&json!({"x": 1}))
        })
    };
    in_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("W1 in flight");
    // D: disable, giving up on W1's lock after 1 s.
    let d = {
        let root = root.clone();
        let o = opts.clone().lock_timeout(Duration::from_secs(1));
        std::thread::spawn(move || journal::disable(&root, &o))
    };
    std::thread::sleep(Duration::from_millis(300));
    // W2: y.json = 2, while the journal is being disabled: waits, then writes.
    let w2 = statefile::Doc::<Value>::open_with(root.join("y.json"), opts.clone())
        .unwrap()
        .write(&json!({"v": 2}));
    let disabled = d.join().unwrap();
    go_tx.send(()).unwrap();
    w1.join().unwrap().unwrap();
    assert!(
        disabled.is_err(),
        "the disable was meant to fail: {disabled:?}"
    );
    let receipt = w2.expect("W2 acknowledged");
    println!("W2: {receipt:?}");
    assert_eq!(
        std::fs::read(root.join("y.json")).unwrap(),
        pretty(&json!({"v": 2}))
    );
    let status = journal::status(&root, &opts)
        .unwrap()
        .expect("the journal stays");
    println!("status after the failed disable: {status:#?}");
    drop(opts); // this "process" lets go of the journal
    // A reboot: the replay must not roll y.json back.
    common::reboot_journal(&root);
    let store = Store::open_with(&root, common::fresh().backups(0)).unwrap();
    assert_eq!(
        store.doc::<Value>("y.json").unwrap().read().unwrap(),
        json!({"v": 2}),
        "an acknowledged write (durability Full) rolled back by the replay after a reboot"
    );
}

/// The replay within the caller's size limit, on a file system that refuses hard links
/// (FAT, some FUSE and network file systems, `protected_hardlinks`): a legitimate older
/// version over the replaying process's limit at the document's name (the rename of
/// the last, acknowledged journaled write lost by a power loss; written by a process
/// with a larger limit) cannot be kept aside as `.corrupt`, so the replay skips the
/// document with a warning, leaving the older version; the next checkpoint frees the
/// record: the acknowledged write is gone for good. Before 1bcb207 the replay (no
/// limit) rotated the older version into `.bak` (by copy where links are refused) and
/// applied the record.
#[test]
fn the_replay_applies_an_acknowledged_write_over_an_older_version_over_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let older = json!({"pad": "y".repeat(64 << 10)});
    let newer = json!({"n": 2});
    // A writer with the default limit (64 MiB).
    journal::enable(root, &common::fresh(), JournalOptions::default()).unwrap();
    {
        let store = Store::open_with(root, common::fresh().backups(2)).unwrap();
        let doc = store.doc::<Value>("doc.json").unwrap();
        doc.write(&older).unwrap();
        doc.write(&newer).unwrap();
    }
    let older_bytes = std::fs::read(root.join(".doc.json.bak")).unwrap();
    // The rename of the last write lost: the older version is back at the name.
    std::fs::remove_file(root.join("doc.json")).unwrap();
    std::fs::write(root.join("doc.json"), &older_bytes).unwrap();
    common::reboot_journal(root);
    // A process with a 16 KiB limit opens the store first, on a file system that
    // refuses hard links.
    let twisted = common::Twisted::new();
    *twisted.fail_hard_link.lock().unwrap() = Some(1); // EPERM
    let small = common::fresh()
        .max_document_bytes(16 << 10)
        .backups(2)
        .fs(twisted as Arc<dyn statefile::fs::Fs>);
    let store = Store::open_without_scan(root, small.clone()).unwrap();
    drop(store);
    let _ = journal::checkpoint(root, &small);
    let unlimited = Store::open_with(root, common::fresh().backups(2)).unwrap();
    assert_eq!(
        unlimited.doc::<Value>("doc.json").unwrap().read().unwrap(),
        newer,
        "the acknowledged write was lost: the replay skipped it and the checkpoint freed it"
    );
}
