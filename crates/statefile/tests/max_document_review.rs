//! Review of d0b688c: paths that still hash a planted file over
//! `Options::max_document_bytes` whole, and semantic gaps.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use statefile::journal::{self, JournalOptions};
use statefile::{ErrorKind, Options, Store};

use common::sparse;

const LIMIT: u64 = 1 << 20;
const HUGE: u64 = 20 << 30;

fn limited() -> Options {
    Options::new().max_document_bytes(LIMIT).backups(2)
}

/// As `limited`, for another "process" (a file system instance of its own).
fn limited_fresh() -> Options {
    common::fresh().max_document_bytes(LIMIT).backups(2)
}

fn plant(path: &Path) {
    let _ = std::fs::remove_file(path);
    sparse(path, HUGE);
}

fn assert_quick(started: Instant, what: &str) {
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "{what} took {took:?}: the planted 20 GiB file was read/hashed"
    );
}

/// Journal mode: a write over a planted huge file whose temp file cannot be made after
/// its record was appended (a full disk, a refusing hook) withdraws the record, and the
/// withdraw (`as_it_is_now` -> `sync_document`) hashes the planted file whole, under
/// the lock.
#[test]
fn a_failed_journaled_write_over_a_planted_huge_file_does_not_hash_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open_with(root, limited()).unwrap();
    journal::enable(root, store.options(), JournalOptions::default()).unwrap();
    store
        .doc::<Value>("big.json")
        .unwrap()
        .write(&json!({"n": 1}))
        .unwrap();
    // Opened before the plant: an open's scan hashes it too (see below).
    let refusing = limited().on_temp_created(|_| Err(std::io::Error::other("refused by the test")));
    let hooked = Store::open_with(root, refusing).unwrap();
    plant(&root.join("big.json"));
    let started = Instant::now();
    let e = hooked
        .doc::<Value>("big.json")
        .unwrap()
        .write(&json!({"n": 2}))
        .unwrap_err();
    eprintln!("{:?}: {e}", e.kind());
    assert_quick(started, "a refused write (its withdraw)");
    // The withdraw kept the file as it is, and says so: nothing to replay.
    let status = journal::status(root, &limited()).unwrap().unwrap();
    assert!(status.to_replay.is_empty(), "{:?}", status.to_replay);
    assert_eq!(e.kind(), statefile::ErrorKind::Io, "the hook's error: {e}");
    assert_eq!(
        std::fs::metadata(root.join("big.json")).unwrap().len(),
        HUGE
    );
    // Its entry's version (not computed) is never shown, whatever becomes of the file.
    std::fs::remove_file(root.join("big.json")).unwrap();
    let status = journal::status(root, &limited()).unwrap().unwrap();
    assert!(status.to_replay.is_empty(), "{:?}", status.to_replay);
}

/// The same through a transaction: one document's temp file refused, the withdraw
/// looks at every document of the commit, hashing the planted one whole.
#[test]
fn a_failed_transaction_over_a_planted_huge_file_does_not_hash_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open_with(root, limited()).unwrap();
    journal::enable(root, store.options(), JournalOptions::default()).unwrap();
    store
        .doc::<Value>("big.json")
        .unwrap()
        .write(&json!({"n": 1}))
        .unwrap();
    let refusing = limited().on_temp_created(|temp| {
        if temp.to_string_lossy().contains("b.json") && !temp.to_string_lossy().contains("big") {
            Err(std::io::Error::other("refused by the test"))
        } else {
            Ok(())
        }
    });
    let hooked = Store::open_with(root, refusing).unwrap();
    plant(&root.join("big.json"));
    let started = Instant::now();
    let e = hooked
        .transaction(|tx| {
            tx.write("big.json", &json!({"n": 2}))?;
            tx.write("b.json", &json!(1))?;
            Ok::<_, statefile::Error>(())
        })
        .unwrap_err();
    eprintln!("{:?}: {e}", e.kind());
    assert_quick(started, "a refused transaction (its withdraw)");
    assert_eq!(
        std::fs::metadata(root.join("big.json")).unwrap().len(),
        HUGE
    );
    assert!(!root.join("b.json").exists(), "all or nothing");
    let status = journal::status(root, &limited()).unwrap().unwrap();
    assert!(status.to_replay.is_empty(), "{:?}", status.to_replay);
    // A write then replaces it, keeping it aside.
    store
        .doc::<Value>("big.json")
        .unwrap()
        .write(&json!({"n": 3}))
        .unwrap();
    assert_eq!(
        std::fs::metadata(root.join(".big.json.corrupt"))
            .unwrap()
            .len(),
        HUGE
    );
}

/// Journal mode, after a reboot: a planted huge file at a document the journal has
/// records of since its checkpoint. The replay (`rebuild_backups` -> `nothing_lost`,
/// its scan of the names, then `apply_keeping`'s probe with no limit) hashes it whole,
/// three times, while every opener of the store waits.
#[test]
#[ignore = "known limit: the replay after a power loss (rebuild_backups, apply) looks at what is at the name with no size limit"]
fn the_replay_after_a_reboot_does_not_hash_a_planted_huge_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    {
        let opts = limited_fresh();
        journal::enable(root, &opts, JournalOptions::default()).unwrap();
        let store = Store::open_with(root, opts).unwrap();
        let doc = store.doc::<Value>("big.json").unwrap();
        for n in 1..=3 {
            doc.write(&json!({"n": n})).unwrap();
        }
    }
    plant(&root.join("big.json"));
    common::reboot_journal(root);
    let started = Instant::now();
    // Without the open-time scan (whose `journal::status` hashes it too: see below):
    // the first read opens the journal, which replays it.
    let store = Store::open_without_scan(root, limited_fresh()).unwrap();
    assert_eq!(
        store.doc::<Value>("big.json").unwrap().read().unwrap(),
        json!({"n": 3})
    );
    assert_quick(started, "the journal's replay after a reboot");
    assert_eq!(
        std::fs::metadata(root.join(".big.json.corrupt"))
            .unwrap()
            .len(),
        HUGE,
        "kept aside"
    );
}

/// A transaction's `if_none_match` (`expect(name, None)`) on a planted huge file: it
/// exists, so the precondition fails; a single document's create / If-None-Match: *
/// answers Conflict (412), the transaction a size error (422).
#[test]
fn a_transaction_expecting_no_document_gets_conflict_for_a_planted_huge_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open_with(root, limited()).unwrap();
    journal::enable(root, store.options(), JournalOptions::default()).unwrap();
    plant(&root.join("big.json"));
    let create = store
        .doc::<Value>("big.json")
        .unwrap()
        .create(&json!(1))
        .unwrap_err();
    assert_eq!(create.kind(), ErrorKind::Conflict, "{create}");
    let e = store
        .transaction(|tx| {
            tx.expect("big.json", None)?;
            tx.write("big.json", &json!(1))
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "as create: {e}");
}

/// Journal mode: `journal::status` (which the server calls before every POST of a
/// multi-document transaction, and `verify`/`recover` call) compares each document
/// named since the checkpoint with its last record by hashing it (`doc_version` ->
/// `file::inspect`, no limit): a planted huge file there is hashed whole, per call.
#[test]
fn journal_status_does_not_hash_a_planted_huge_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open_with(root, limited()).unwrap();
    journal::enable(root, store.options(), JournalOptions::default()).unwrap();
    store
        .doc::<Value>("big.json")
        .unwrap()
        .write(&json!({"n": 1}))
        .unwrap();
    plant(&root.join("big.json"));
    let started = Instant::now();
    let status = journal::status(root, store.options()).unwrap().unwrap();
    assert_quick(started, "journal::status");
    eprintln!("to replay: {:?}", status.to_replay);
}

/// The same through `Store::verify` in journal mode.
#[test]
fn verify_in_journal_mode_does_not_hash_a_planted_huge_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open_with(root, limited()).unwrap();
    journal::enable(root, store.options(), JournalOptions::default()).unwrap();
    store
        .doc::<Value>("big.json")
        .unwrap()
        .write(&json!({"n": 1}))
        .unwrap();
    plant(&root.join("big.json"));
    let started = Instant::now();
    let report = store.verify().unwrap();
    assert_quick(started, "Store::verify");
    assert!(!report.is_healthy());
}

/// `Store::open` (its open-time scan runs `journal::status`) in journal mode: a
/// planted huge file at a document written since the checkpoint is hashed whole at every
/// open (every CLI call, the server's start).
#[test]
fn opening_a_journaled_store_does_not_hash_a_planted_huge_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    journal::enable(root, &limited(), JournalOptions::default()).unwrap();
    let store = Store::open_with(root, limited()).unwrap();
    store
        .doc::<Value>("big.json")
        .unwrap()
        .write(&json!({"n": 1}))
        .unwrap();
    plant(&root.join("big.json"));
    let started = Instant::now();
    let again = Store::open_with(root, limited()).unwrap();
    assert_quick(started, "Store::open");
    drop(again);
}

/// Journal mode with backups off: a write over a planted huge file whose temp file is
/// refused after its record was appended. The commit did not look at the file
/// (backups off), so the withdraw (`as_it_is_now` -> `sync_document`) hashed it whole.
#[test]
fn a_failed_journaled_write_with_backups_off_over_a_planted_huge_file_does_not_hash_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let opts = || limited().backups(0);
    let store = Store::open_with(root, opts()).unwrap();
    journal::enable(root, store.options(), JournalOptions::default()).unwrap();
    store
        .doc::<Value>("big.json")
        .unwrap()
        .write(&json!({"n": 1}))
        .unwrap();
    let refusing = opts().on_temp_created(|_| Err(std::io::Error::other("refused by the test")));
    let hooked = Store::open_with(root, refusing).unwrap();
    plant(&root.join("big.json"));
    let started = Instant::now();
    let e = hooked
        .doc::<Value>("big.json")
        .unwrap()
        .write(&json!({"n": 2}))
        .unwrap_err();
    assert_quick(started, "a refused write with backups off (its withdraw)");
    assert_eq!(e.kind(), ErrorKind::Io, "the hook's error: {e}");
    assert_eq!(
        std::fs::metadata(root.join("big.json")).unwrap().len(),
        HUGE
    );
    // The withdraw kept the file as it is, and says so: nothing to replay.
    let status = journal::status(root, &opts()).unwrap().unwrap();
    assert!(status.to_replay.is_empty(), "{:?}", status.to_replay);
    assert!(!root.join(".big.json.corrupt").exists());
}
