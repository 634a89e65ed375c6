//! `Options::max_document_bytes`: nothing reads a document or backup longer than the
//! limit into memory, and no write makes one. Regression: a sparse 20 GB file at a
//! document's name was read whole (the memory for it reserved first), so one GET took
//! `statefile serve` down.

mod common;

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use statefile::journal::{self, JournalOptions};
use statefile::{BackupRef, Doc, Error, ErrorKind, Options, Store, TooLarge};

use common::{names, temps};

const LIMIT: u64 = 1 << 20;

/// Make `path` `len` bytes long without writing them (sparse: instant, no disk used).
fn sparse(path: &Path, len: u64) {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn limited() -> Options {
    Options::new().max_document_bytes(LIMIT)
}

/// The error is Serialize, says the size and the limit, and the message names both and
/// how to raise the limit.
fn assert_too_large(e: &Error, size: Option<u64>) {
    assert_eq!(e.kind(), ErrorKind::Serialize, "{e}");
    assert_eq!(e.too_large(), Some(TooLarge { size, limit: LIMIT }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&LIMIT.to_string()), "{msg}");
    if let Some(n) = size {
        assert!(msg.contains(&n.to_string()), "{msg}");
    }
    assert!(msg.contains("max_document_bytes"), "{msg}");
}

#[test]
fn the_default_is_no_limit() {
    assert_eq!(Options::new().get_max_document_bytes(), u64::MAX);
    assert_eq!(limited().get_max_document_bytes(), LIMIT);
}

#[test]
fn a_sparse_8_gib_document_is_refused_at_once_by_every_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), limited()).unwrap();
    let doc = store.doc::<Value>("big.json").unwrap();
    doc.write(&json!({"n": 1})).unwrap();
    let size = 8 << 30;
    sparse(doc.path(), size);
    let started = Instant::now();
    assert_too_large(&doc.read().unwrap_err(), Some(size));
    assert_too_large(&doc.read_bytes().unwrap_err(), Some(size));
    assert_too_large(&doc.read_cached().unwrap_err(), Some(size));
    assert_too_large(
        &store
            .doc::<Value>("big.json")
            .unwrap()
            .with_read_policy(statefile::ReadPolicy::FallbackToBackup)
            .read()
            .unwrap_err(),
        Some(size),
    );
    let e = doc
        .update(|v| {
            v["n"] = json!(2);
            Ok::<_, Error>(())
        })
        .unwrap_err();
    assert_too_large(&e, Some(size));
    // Verify and the open-time scan report it without reading it.
    let report = store.verify().unwrap();
    assert!(!report.is_healthy());
    assert!(Store::open_with(dir.path(), limited()).is_ok());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}: the file was read",
        started.elapsed()
    );
    // A write replaces it, and it reads again. (A write looks at the old version, to
    // back it up, by streaming it through the hasher: not the 8 GiB here.)
    sparse(doc.path(), 0);
    sparse(doc.path(), 2 * LIMIT);
    store
        .doc::<Value>("big.json")
        .unwrap()
        .write(&json!({"n": 3}))
        .unwrap();
    assert_eq!(doc.read().unwrap(), json!({"n": 3}));
}

#[test]
fn a_file_longer_than_it_was_when_opened_is_read_no_further_than_the_limit() {
    // A file that grows during the read is one whose length is more than its stat said;
    // the read stops at limit + 1 bytes either way. Here: exactly over by a few bytes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.json");
    let doc = Doc::<Value>::open_with(&path, limited()).unwrap();
    let fits = vec![b' '; LIMIT as usize - 3];
    std::fs::write(&path, [&b"1"[..], &fits, b"\n"].concat()).unwrap();
    assert_eq!(
        doc.read().unwrap(),
        json!(1),
        "a document of the limit less 1 reads"
    );
    std::fs::write(&path, [&b"1"[..], &fits, b"\n\n"].concat()).unwrap();
    assert_eq!(doc.read().unwrap(), json!(1), "exactly the limit reads");
    std::fs::write(&path, [&b"1"[..], &fits, b"\n\n\n\n\n"].concat()).unwrap();
    assert_too_large(&doc.read().unwrap_err(), Some(LIMIT + 3));
}

#[test]
fn a_write_over_the_limit_fails_and_leaves_the_old_document_and_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), limited().backups(2)).unwrap();
    let doc = store.doc::<Value>("d.json").unwrap();
    doc.write(&json!({"v": "old"})).unwrap();
    let before = names(dir.path());
    let big = json!({"v": "x".repeat(LIMIT as usize)});
    assert_too_large(&doc.write(&big).unwrap_err(), None);
    // Pretty output makes this array of 200,000 small numbers larger than the limit,
    // though its compact form is not.
    let spread = json!((0..250_000).map(|_| 1).collect::<Vec<_>>());
    assert!(serde_json::to_vec(&spread).unwrap().len() < LIMIT as usize);
    assert_too_large(&doc.write(&spread).unwrap_err(), None);
    let e = doc
        .update(|v| {
            v["v"] = json!("y".repeat(LIMIT as usize));
            Ok::<_, Error>(())
        })
        .unwrap_err();
    assert_too_large(&e, None);
    assert_eq!(doc.read().unwrap(), json!({"v": "old"}));
    assert_eq!(names(dir.path()), before, "no file touched, made or left");
    assert!(temps(dir.path()).is_empty());
    // Exactly at the limit is written and reads back.
    let at = |n: usize| json!("z".repeat(n));
    let overhead = serde_json::to_vec(&at(0)).unwrap().len() + 1;
    doc.write(&at(LIMIT as usize - overhead)).unwrap();
    assert_eq!(std::fs::metadata(doc.path()).unwrap().len(), LIMIT);
    assert_eq!(doc.read().unwrap(), at(LIMIT as usize - overhead));
}

#[test]
fn in_a_batch_only_the_update_that_passes_the_limit_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batch.json");
    let doc = Doc::<Value>::open_with(&path, limited()).unwrap();
    doc.write(&json!([])).unwrap();
    let half = "h".repeat(LIMIT as usize / 2);
    let push = |items: Vec<Value>| -> common::Call<'_, statefile::Result<()>> {
        let doc = Doc::<Value>::open_with(&path, limited()).unwrap();
        Box::new(move || {
            doc.update(|v| {
                v.as_array_mut().unwrap().extend(items);
                Ok::<_, Error>(())
            })
            .map(|_| ())
        })
    };
    let results = common::in_one_batch(
        &path,
        vec![
            push(vec![json!("small")]),
            push(vec![json!(half.clone()), json!(half.clone())]),
        ],
    );
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert_too_large(results[1].as_ref().unwrap_err(), None);
    assert_eq!(doc.read().unwrap(), json!(["small"]));
}

#[test]
fn a_transaction_write_over_the_limit_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), limited()).unwrap();
    journal::enable(dir.path(), store.options(), JournalOptions::default()).unwrap();
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!(1))
        .unwrap();
    let e = store
        .transaction(|tx| {
            tx.write("a.json", &json!(2))?;
            tx.write("b.json", &json!("b".repeat(LIMIT as usize)))
        })
        .unwrap_err();
    assert_too_large(&e, None);
    assert_eq!(
        store.doc::<Value>("a.json").unwrap().read().unwrap(),
        json!(1)
    );
    assert!(!dir.path().join("b.json").exists());
    // And a transaction's read of an over-limit document is refused too.
    // (A transaction hashes each document it locks, streaming: a small excess here.)
    sparse(&dir.path().join("a.json"), 2 * LIMIT);
    let e = store
        .transaction(|tx| tx.read::<Value>("a.json"))
        .unwrap_err();
    assert_too_large(&e, Some(2 * LIMIT));
}

#[test]
fn restoring_or_reading_an_over_limit_backup_fails_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    // Written without the limit: the backup is 2 MiB.
    let unlimited = Doc::<Value>::open(&path).unwrap();
    unlimited
        .write(&json!("w".repeat(2 * LIMIT as usize)))
        .unwrap();
    unlimited.write(&json!("small")).unwrap();
    let doc = Doc::<Value>::open_with(&path, limited()).unwrap();
    let size = std::fs::metadata(dir.path().join(".r.json.bak"))
        .unwrap()
        .len();
    assert_too_large(&doc.restore(&BackupRef::Number(1)).unwrap_err(), Some(size));
    assert_too_large(
        &doc.read_backup(&BackupRef::Number(1)).unwrap_err(),
        Some(size),
    );
    assert_eq!(doc.read().unwrap(), json!("small"));
    // A damaged document's fallback passes over that backup: none is good.
    std::fs::write(&path, b"{\"cut").unwrap();
    let e = Doc::<Value>::open_with(&path, limited().fallback(true))
        .unwrap()
        .read()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}

#[test]
fn a_file_that_grew_after_its_length_was_read_is_read_no_further_than_the_limit() {
    // The file system says each file is 1 byte long, as a file does that grows between
    // the fstat and the read: every look at it must still stop at the limit.
    let dir = tempfile::tempdir().unwrap();
    let twisted = common::Twisted::new();
    let opts = limited().fs(twisted.clone());
    let store = Store::open_with(dir.path(), opts.clone()).unwrap();
    let doc = store.doc::<Value>("grown.json").unwrap();
    doc.write(&json!({"n": 1})).unwrap();
    // 2 GiB: read whole and hashed, it takes many seconds (and 2 GiB of memory).
    sparse(doc.path(), 2 << 30);
    *twisted.understate_len.lock().unwrap() = true;
    let started = Instant::now();
    assert_too_large(&doc.read().unwrap_err(), None);
    // The recovery scan looks at each document (its version, whether it parses):
    // it says this one is too large, having read no more than the limit of it.
    let report = store.verify().unwrap();
    assert!(!report.is_healthy(), "{report:?}");
    let said = format!("{report:?}");
    assert!(said.contains("too large"), "{said}");
    assert!(Store::open_with(dir.path(), opts).is_ok());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}: the file was read whole",
        started.elapsed()
    );
}
