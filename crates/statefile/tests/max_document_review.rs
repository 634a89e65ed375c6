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
/// its scan of the names, then `apply_keeping`'s probe) hashed it whole, three times,
/// while every opener of the store waited; it now decides by its length that it is
/// not the record's bytes, and keeps it aside as a write does.
#[test]
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

/// After a transaction's own write over a planted huge file, `expect` checks what it
/// wrote: the written bytes' version holds (it was refused as too large to version,
/// the check looking at the file found at the lock), and "none" fails.
#[test]
fn a_transaction_expecting_its_own_write_over_a_planted_huge_file_sees_that_write() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open_with(root, limited()).unwrap();
    journal::enable(root, store.options(), JournalOptions::default()).unwrap();
    plant(&root.join("big.json"));
    let ((), receipt) = store
        .transaction(|tx| {
            tx.write("big.json", &json!({"n": 1}))?;
            let pending = tx.version_seen("big.json")?.unwrap();
            tx.expect("big.json", Some(&pending))?;
            let e = tx.expect("big.json", None).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
            Ok::<_, statefile::Error>(())
        })
        .unwrap();
    let doc = store.doc::<Value>("big.json").unwrap();
    assert_eq!(doc.read().unwrap(), json!({"n": 1}));
    assert_eq!(receipt.documents[0].version, Some(doc.version().unwrap()));
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

/// Writes `values` to `name` through the journal of a new store at `root` (a "process"
/// of its own, gone when this returns), with `opts`.
fn journaled_writes(root: &Path, opts: Options, name: &str, values: &[Value]) {
    journal::enable(root, &opts, JournalOptions::default()).unwrap();
    let store = Store::open_with(root, opts).unwrap();
    let doc = store.doc::<Value>(name).unwrap();
    for v in values {
        doc.write(v).unwrap();
    }
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

/// After a reboot, a planted huge file where the journal's last record deleted the
/// document: the replay moves it aside unread (as a delete of a file that does not
/// parse), instead of hashing it to decide where it goes.
#[test]
fn the_replay_of_a_delete_does_not_hash_a_planted_huge_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    {
        let opts = limited_fresh();
        journal::enable(root, &opts, JournalOptions::default()).unwrap();
        let store = Store::open_with(root, opts).unwrap();
        let doc = store.doc::<Value>("big.json").unwrap();
        doc.write(&json!({"n": 1})).unwrap();
        doc.delete().unwrap();
    }
    plant(&root.join("big.json"));
    common::reboot_journal(root);
    let started = Instant::now();
    let store = Store::open_without_scan(root, limited_fresh()).unwrap();
    let e = store.doc::<Value>("big.json").unwrap().read().unwrap_err();
    assert_quick(started, "the replay of a delete after a reboot");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(
        std::fs::metadata(root.join(".big.json.corrupt"))
            .unwrap()
            .len(),
        HUGE,
        "kept aside"
    );
    assert_eq!(
        std::fs::read(root.join(".big.json.bak")).unwrap(),
        b"{\n  \"n\": 1\n}\n",
        "the delete's backup stays"
    );
}

/// After a reboot, a planted huge file at a backup's name of a document with records
/// since the checkpoint: the replay's check of the backups (`nothing_lost`, and the
/// rebuild's scan of the names) hashed it whole. It is left as it is, unread, and so
/// are the other backups; the document is its last record's.
#[test]
fn the_replay_does_not_hash_a_planted_huge_backup() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let values: Vec<Value> = (1..=3).map(|n| json!({"n": n})).collect();
    journaled_writes(root, limited_fresh(), "big.json", &values);
    plant(&root.join(".big.json.bak.2"));
    common::reboot_journal(root);
    let started = Instant::now();
    let store = Store::open_without_scan(root, limited_fresh()).unwrap();
    let doc = store.doc::<Value>("big.json").unwrap();
    assert_eq!(doc.read().unwrap(), json!({"n": 3}));
    assert_quick(started, "the journal's replay after a reboot");
    assert_eq!(
        std::fs::read(root.join(".big.json.bak")).unwrap(),
        b"{\n  \"n\": 2\n}\n"
    );
    assert_eq!(
        std::fs::metadata(root.join(".big.json.bak.2"))
            .unwrap()
            .len(),
        HUGE,
        "left as it is"
    );
    assert!(!root.join(".big.json.corrupt").exists());
}

/// A limit below the journal's records: a document written (through the journal) by a
/// writer with no limit, larger than the limit of whoever replays after a reboot, is
/// still its last record's bytes. The replay hashes it within the record's length and
/// leaves it (and its backup) alone, instead of taking it for a planted file and
/// keeping it aside.
#[test]
fn the_replay_leaves_a_document_over_the_limit_that_is_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let small_limit = 1024;
    let big = json!({"pad": "x".repeat(4000)});
    journaled_writes(
        root,
        common::fresh().backups(2),
        "big.json",
        &[json!({"n": 1}), big.clone()],
    );
    let before = std::fs::read(root.join("big.json")).unwrap();
    assert!(before.len() as u64 > small_limit);
    common::reboot_journal(root);
    let opts = common::fresh().max_document_bytes(small_limit).backups(2);
    let store = Store::open_with(root, opts).unwrap();
    assert!(
        common::replayed(&store).is_empty(),
        "{:?}",
        common::replayed(&store)
    );
    assert_eq!(std::fs::read(root.join("big.json")).unwrap(), before);
    assert!(!root.join(".big.json.corrupt").exists());
    assert_eq!(
        std::fs::read(root.join(".big.json.bak")).unwrap(),
        b"{\n  \"n\": 1\n}\n"
    );
    let e = store.doc::<Value>("big.json").unwrap().read().unwrap_err();
    assert!(e.too_large().is_some(), "read within the limit: {e}");
    let unlimited = Store::open_with(root, common::fresh()).unwrap();
    assert_eq!(
        unlimited.doc::<Value>("big.json").unwrap().read().unwrap(),
        big
    );
}

/// The limit bounds the replay by the caller's limit, not by the record's length: an
/// older durable version larger than the last record (within the limit), found at the
/// document's name after a power loss lost the rename of the last write, is put back
/// as the backup, not kept aside.
#[test]
fn the_replay_keeps_an_older_version_larger_than_the_record_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let older = json!({"pad": "y".repeat(64 << 10)});
    journaled_writes(
        root,
        limited_fresh(),
        "doc.json",
        &[older.clone(), json!({"n": 2})],
    );
    let older_bytes = std::fs::read(root.join(".doc.json.bak")).unwrap();
    // The rename of the last write lost: the older version is back at the name.
    std::fs::remove_file(root.join("doc.json")).unwrap();
    std::fs::write(root.join("doc.json"), &older_bytes).unwrap();
    common::reboot_journal(root);
    let store = Store::open_without_scan(root, limited_fresh()).unwrap();
    assert_eq!(
        store.doc::<Value>("doc.json").unwrap().read().unwrap(),
        json!({"n": 2})
    );
    assert_eq!(
        std::fs::read(root.join(".doc.json.bak")).unwrap(),
        older_bytes
    );
    assert!(!root.join(".doc.json.corrupt").exists());
    assert!(!root.join(".doc.json.bak.2").exists());
}

/// After a reboot, a planted huge file at a document's name on a file system that
/// refuses hard links: the replay cannot keep it aside (a write refuses to copy it).
/// The journal's record is an acknowledged write, newer than whatever is there (which
/// may also be an older version a process with a larger limit wrote: see
/// rev7_review.rs): the replay puts it in place without keeping the file, quickly, and
/// without reading it; skipping the document would lose the write at the next
/// checkpoint.
#[test]
fn the_replay_replaces_a_planted_huge_file_it_cannot_link_aside() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let values: Vec<Value> = (1..=2).map(|n| json!({"n": n})).collect();
    journaled_writes(root, limited_fresh(), "big.json", &values);
    journaled_writes(root, limited_fresh(), "other.json", &values);
    plant(&root.join("big.json"));
    // Another document's last rename lost: the replay rewrites it too.
    std::fs::remove_file(root.join("other.json")).unwrap();
    std::fs::write(root.join("other.json"), b"{\n  \"n\": 1\n}\n").unwrap();
    common::reboot_journal(root);
    let twisted = common::Twisted::new();
    *twisted.fail_hard_link.lock().unwrap() = Some(1); // EPERM
    let opts = limited_fresh().fs(twisted as std::sync::Arc<dyn statefile::fs::Fs>);
    let started = Instant::now();
    let store = Store::open_without_scan(root, opts).unwrap();
    assert_eq!(
        store.doc::<Value>("big.json").unwrap().read().unwrap(),
        json!({"n": 2})
    );
    assert_quick(started, "the journal's replay after a reboot");
    assert_eq!(
        store.doc::<Value>("other.json").unwrap().read().unwrap(),
        json!({"n": 2})
    );
    assert!(!root.join(".big.json.corrupt").exists());
    assert_eq!(common::temps(root), Vec::<String>::new());
}
