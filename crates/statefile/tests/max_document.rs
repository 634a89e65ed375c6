//! `Options::max_document_bytes`: nothing reads a document or backup longer than the
//! limit into memory, and no write makes one. Regression: a sparse 20 GB file at a
//! document's name was read whole (the memory for it reserved first), so one GET took
//! `statefile serve` down.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use statefile::journal::{self, JournalOptions};
use statefile::{BackupRef, Doc, Error, ErrorKind, Options, Store, TooLarge};

use common::{names, sparse, temps};

const LIMIT: u64 = 1 << 20;

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
    // A write replaces it (without reading it: see below), and it reads again.
    store
        .doc::<Value>("big.json")
        .unwrap()
        .write(&json!({"n": 3}))
        .unwrap();
    assert_eq!(doc.read().unwrap(), json!({"n": 3}));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}: the file was read",
        started.elapsed()
    );
}

/// A huge file planted at a document's name costs a write no more than a document
/// within the limit would: it is never read or hashed. Regression: a write (with
/// backups, the default), a conditional write, a delete, a transaction's lock and a
/// restore each streamed the whole file through SHA-256 under the document's lock, at
/// 100-500 MB/s: a minute or more for these 20 GiB, per call.
///
/// An unconditional write replaces it and keeps it once as `.name.corrupt` (the same
/// file, by hard link), never among the backups; whatever needs its version (a
/// precondition, a delete, which reports the version it removed) is refused with the
/// size error, changing nothing.
fn a_planted_huge_file_is_replaced_at_once_and_kept_aside(journaled: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), limited().backups(2)).unwrap();
    if journaled {
        journal::enable(dir.path(), store.options(), JournalOptions::default()).unwrap();
    }
    let doc = store.doc::<Value>("big.json").unwrap();
    let v1 = doc.write(&json!({"n": 1})).unwrap().version;
    let size: u64 = 20 << 30;
    let plant = || {
        let _ = std::fs::remove_file(doc.path());
        sparse(doc.path(), size);
        std::fs::metadata(doc.path()).unwrap()
    };
    let same_file = |a: &std::fs::Metadata, b: &std::fs::Metadata| {
        use std::os::unix::fs::MetadataExt;
        (a.dev(), a.ino()) == (b.dev(), b.ino())
    };
    let planted = plant();
    let started = Instant::now();

    assert_too_large(&doc.write_if(&v1, &json!(2)).unwrap_err(), Some(size));
    assert_too_large(&doc.delete().unwrap_err(), Some(size));
    assert_too_large(&doc.delete_if(&v1).unwrap_err(), Some(size));
    let e = doc.create(&json!(2)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(e.version(), None, "no version was computed: {e}");
    let e = doc
        .restore_if(Some(&v1), &BackupRef::NewestGood)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Serialize, "{e}");
    if journaled {
        let errors = [
            store.transaction(|tx| tx.version("big.json")).map(drop),
            store
                .transaction(|tx| tx.version_seen("big.json"))
                .map(drop),
            store
                .transaction(|tx| tx.expect("big.json", Some(&v1)))
                .map(drop),
            store.transaction(|tx| tx.delete("big.json")).map(drop),
        ];
        for e in errors {
            assert_too_large(&e.unwrap_err(), Some(size));
        }
    }
    let now = std::fs::metadata(doc.path()).unwrap();
    assert!(
        same_file(&now, &planted) && now.len() == size,
        "left as it was"
    );
    assert!(doc.backups().unwrap().is_empty());

    // An unconditional write replaces it, keeping it as `.big.json.corrupt`.
    let corrupt = dir.path().join(".big.json.corrupt");
    let r = doc.write(&json!({"n": 3})).unwrap();
    assert_eq!(
        r.previous, None,
        "no version was computed for the file replaced"
    );
    assert!(r.backup.is_none(), "not a backup: {:?}", r.backup);
    assert_eq!(doc.read().unwrap(), json!({"n": 3}));
    assert!(same_file(&std::fs::metadata(&corrupt).unwrap(), &planted));
    assert!(doc.backups().unwrap().is_empty());

    // So does an update's group commit (whose write looks at the old version too) after
    // a read refused it... (an update reads: refused, as every read)
    let planted = plant();
    let e = doc
        .update(|v| {
            v["n"] = json!(4);
            Ok::<_, Error>(())
        })
        .unwrap_err();
    assert_too_large(&e, Some(size));
    // ...a restore of a good backup (there is none yet: the planted file was not kept
    // as one; write one first)...
    doc.write(&json!({"n": 5})).unwrap();
    doc.write(&json!({"n": 6})).unwrap();
    assert_eq!(
        doc.backups().unwrap().len(),
        1,
        "the planted file is no backup"
    );
    let planted_again = plant();
    assert!(!same_file(&planted, &planted_again));
    doc.restore(&BackupRef::Number(1)).unwrap();
    assert_eq!(doc.read().unwrap(), json!({"n": 5}));
    assert!(same_file(
        &std::fs::metadata(&corrupt).unwrap(),
        &planted_again
    ));
    // ...and, in journal mode, a transaction's write.
    if journaled {
        let planted = plant();
        let receipt = store
            .transaction(|tx| tx.write("big.json", &json!({"n": 7})))
            .unwrap();
        assert_eq!(receipt.1.documents[0].previous, None);
        assert_eq!(doc.read().unwrap(), json!({"n": 7}));
        assert!(same_file(&std::fs::metadata(&corrupt).unwrap(), &planted));
        // A checkpoint after all that keeps the document as written.
        drop(doc);
        journal::checkpoint(dir.path(), store.options()).unwrap();
        assert_eq!(
            store.doc::<Value>("big.json").unwrap().read().unwrap(),
            json!({"n": 7})
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}: the planted file was read",
        started.elapsed()
    );
}

#[test]
fn a_planted_huge_file_is_replaced_at_once_and_kept_aside_default_mode() {
    a_planted_huge_file_is_replaced_at_once_and_kept_aside(false);
}

#[test]
fn a_planted_huge_file_is_replaced_at_once_and_kept_aside_journal_mode() {
    a_planted_huge_file_is_replaced_at_once_and_kept_aside(true);
}

/// A huge file planted among a document's backups is left out of its listing, as a
/// backup that is not a regular file is, without being read: a listing, a restore and
/// a damaged document's repair each hashed every backup whole.
#[test]
fn a_planted_huge_backup_is_left_out_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), limited().backups(3)).unwrap();
    let doc = store.doc::<Value>("b.json").unwrap();
    for n in 1..=3 {
        doc.write(&json!({"n": n})).unwrap();
    }
    let size: u64 = 20 << 30;
    let bak2 = dir.path().join(".b.json.bak.2");
    std::fs::remove_file(&bak2).unwrap();
    sparse(&bak2, size);
    let started = Instant::now();
    let listed = doc.backups().unwrap();
    assert_eq!(
        listed.iter().map(|b| b.path.clone()).collect::<Vec<_>>(),
        [dir.path().join(".b.json.bak")]
    );
    // The number that now names nothing says why, as the read of it would.
    assert_too_large(
        &doc.read_backup(&BackupRef::Number(2)).unwrap_err(),
        Some(size),
    );
    let e = doc
        .read_backup(&BackupRef::Version(statefile::Version::of(b"{}")))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(
        e.to_string().contains(".b.json.bak.2") && e.to_string().contains(&size.to_string()),
        "names what was left out and why: {e}"
    );
    // A damaged document is served from, and repaired from, the good backup.
    std::fs::write(doc.path(), b"{\"cut").unwrap();
    let fallback = store
        .doc::<Value>("b.json")
        .unwrap()
        .with_read_policy(statefile::ReadPolicy::FallbackToBackup);
    assert_eq!(fallback.read().unwrap(), json!({"n": 2}));
    let report = store.recover().unwrap();
    let fixed: Vec<_> = report.corrupt_documents().collect();
    assert!(
        fixed.len() == 1 && fixed[0].is_fixed(),
        "repaired from the good backup: {report:?}"
    );
    assert_eq!(doc.read().unwrap(), json!({"n": 2}));
    doc.restore(&BackupRef::NewestGood).unwrap();
    assert_eq!(doc.read().unwrap(), json!({"n": 2}));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}: the planted backup was read",
        started.elapsed()
    );
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
    // And a transaction's read of an over-limit document is refused too, at once.
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
