//! What the journal's status (`statefile journal status`, `verify`, every
//! `Store::open`) says: only what a replay would do, and what it could not look at.

mod common;

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use statefile::journal::{self, JournalOptions};
use statefile::{Options, Problem, Scan, ScanMode, Store};

use common::{Twisted, put};

/// A document too large for a 64 KiB ring (over a quarter of it): written outside the
/// journal, with a `direct` record saying so.
fn too_large_for_the_ring() -> Value {
    json!({"s": "x".repeat(20_000)})
}

fn journaled_small(root: &Path) -> Store {
    let store = Store::open_with(root, common::fresh()).unwrap();
    journal::enable(root, store.options(), common::small()).unwrap();
    store
}

fn journal_replays(report: &statefile::Report) -> Vec<&Path> {
    report
        .findings
        .iter()
        .filter(|f| matches!(f.problem, Problem::JournalReplay { .. }))
        .map(|f| f.path.as_path())
        .collect()
}

// Regression: a `direct` write (a document too large for the ring) was listed "to
// replay" when its file was over the reader's size limit, though it held that version.
#[test]
fn a_direct_write_over_the_readers_limit_is_not_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().canonicalize().unwrap();
    let store = journaled_small(root);
    put(&store, "big.json", too_large_for_the_ring());
    let status = journal::status(root, &Options::new()).unwrap().unwrap();
    assert_eq!(status.records, 1, "the direct record: {status:?}");
    assert!(status.to_replay.is_empty(), "{:?}", status.to_replay);

    let limited = Options::new().max_document_bytes(1024);
    let status = journal::status(root, &limited).unwrap().unwrap();
    assert!(status.to_replay.is_empty(), "{:?}", status.to_replay);
    assert!(!status.needs_repair());
    let report = Scan::new(ScanMode::Verify)
        .options(limited.clone())
        .run(root)
        .unwrap();
    // (It is reported as over the limit, which is true.)
    assert!(journal_replays(&report).is_empty(), "{report:?}");
}

// Regression: a `direct` write's document changed since by another program was listed
// "to replay", though a replay leaves a direct write's file as it is (and did: `recover`
// replayed nothing, and reported it again until the checkpoint freed the record).
#[test]
fn a_direct_write_changed_since_is_not_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().canonicalize().unwrap();
    let store = journaled_small(root);
    put(&store, "big.json", too_large_for_the_ring());
    std::fs::write(root.join("big.json"), b"{\"by\": \"hand\"}\n").unwrap();
    let status = journal::status(root, &Options::new()).unwrap().unwrap();
    assert!(status.to_replay.is_empty(), "{:?}", status.to_replay);
    assert!(!status.needs_repair());
    let report = statefile::verify(root).unwrap();
    assert!(journal_replays(&report).is_empty(), "{report:?}");

    // What a replay does with it: nothing (the status said so truly).
    common::reboot_journal(root);
    drop(store);
    let reopened = Store::open_with(root, common::fresh()).unwrap();
    assert!(common::replayed(&reopened).is_empty());
    assert_eq!(
        std::fs::read(root.join("big.json")).unwrap(),
        b"{\"by\": \"hand\"}\n"
    );
}

/// Options whose file system refuses to open `denied` (and anything below it) with
/// EACCES, as `chmod 000` does for a user who does not own it: a custom [`statefile::fs::Fs`]
/// binds where permission bits do not (root).
fn denying(denied: &Path) -> Options {
    let tw = Twisted::new();
    *tw.deny.lock().unwrap() = Some(denied.to_path_buf());
    common::fresh().fs(tw as Arc<dyn statefile::fs::Fs>)
}

// Regression: a directory of the store that the reader may not open failed the whole
// journal status with EACCES (and `verify` reported only that the journal was
// unreadable), instead of reporting the rest and naming what it could not look at.
#[test]
fn status_reports_what_it_can_and_names_a_directory_it_may_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().canonicalize().unwrap();
    let store = Store::open_with(root, common::fresh()).unwrap();
    journal::enable(root, store.options(), JournalOptions::default()).unwrap();
    put(&store, "a.json", json!({"v": 1}));
    put(&store, "b.json", json!({"v": 1}));
    std::fs::create_dir(root.join("private")).unwrap();
    put(&store, "private/c.json", json!({"v": 1}));
    put(&store, "z.json", json!({"v": 1}));
    put(&store, "z.json", json!({"v": 2}));
    // b.json is behind its record (the rename lost by a power loss, say).
    let old = std::fs::read(root.join("a.json")).unwrap();
    put(&store, "b.json", json!({"v": 2}));
    std::fs::write(root.join("b.json"), &old).unwrap();

    let opts = denying(&root.join("private"));
    let status = journal::status(root, &opts).unwrap().unwrap();
    let to_replay: Vec<_> = status.to_replay.iter().map(|p| p.path.clone()).collect();
    assert_eq!(to_replay, [root.join("b.json")], "{status:?}");
    let unchecked: Vec<_> = status.unchecked.iter().map(|p| p.path.clone()).collect();
    assert_eq!(unchecked, [root.join("private/c.json")], "{status:?}");
    assert!(
        status.unchecked[0].reason.contains("ermission denied"),
        "{:?}",
        status.unchecked[0]
    );
    assert!(status.needs_repair());

    // Nothing to replay but a document not looked at: not healthy either (unknown).
    std::fs::write(root.join("b.json"), b"{\n  \"v\": 2\n}\n").unwrap();
    let status = journal::status(root, &opts).unwrap().unwrap();
    assert!(status.to_replay.is_empty(), "{status:?}");
    assert_eq!(status.unchecked.len(), 1, "{status:?}");
    assert!(status.needs_repair());

    // verify: the journal's status is in the report, and the document it could not
    // look at is a finding of its own (the journal itself is readable).
    let report = Scan::new(ScanMode::Verify)
        .options(opts.clone())
        .run(root)
        .unwrap();
    assert_eq!(report.journals.len(), 1, "{report:?}");
    let unreadable: Vec<_> = report
        .findings
        .iter()
        .filter(|f| matches!(f.problem, Problem::Unreadable { .. }))
        .map(|f| f.path.clone())
        .collect();
    assert!(
        unreadable.contains(&root.join("private/c.json")),
        "{report:?}"
    );
    assert!(
        !unreadable.contains(&root.join(".statefile/journal")),
        "{report:?}"
    );

    // recover: repairs what it may reach, and keeps the records (no checkpoint) for a
    // recovery by a user who may read the rest.
    std::fs::write(root.join("b.json"), &old).unwrap();
    let report = Scan::new(ScanMode::Repair)
        .options(opts.clone())
        .run(root)
        .unwrap();
    assert_eq!(
        std::fs::read(root.join("b.json")).unwrap(),
        b"{\n  \"v\": 2\n}\n",
        "{report:?}"
    );
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.path == root.join("private/c.json") && !f.is_fixed()),
        "{report:?}"
    );
    let status = journal::status(root, &common::fresh()).unwrap().unwrap();
    assert_eq!(status.records, 6, "not checkpointed: {status:?}");
    assert!(!status.needs_repair(), "{status:?}");
}

// Regression: a `.statefile/` the reader may not search failed the whole `verify` of
// the tree ("look for a journal at ...: Permission denied") instead of checking the
// documents and naming the journal it could not look at.
#[test]
fn verify_names_a_journal_it_may_not_look_at_and_checks_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().canonicalize().unwrap();
    let store = Store::open_with(root, common::fresh()).unwrap();
    journal::enable(root, store.options(), JournalOptions::default()).unwrap();
    put(&store, "a.json", json!({"v": 1}));
    std::fs::write(root.join("hurt.json"), b"{\"trunc").unwrap();

    let opts = denying(&root.join(".statefile"));
    let e = journal::status(root, &opts).unwrap_err();
    assert_eq!(e.kind(), statefile::ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains(".statefile"), "{e}");

    for mode in [ScanMode::Verify, ScanMode::Repair] {
        let report = Scan::new(mode).options(opts.clone()).run(root).unwrap();
        let unreadable: Vec<_> = report
            .findings
            .iter()
            .filter(|f| matches!(f.problem, Problem::Unreadable { .. }))
            .map(|f| f.path.clone())
            .collect();
        assert!(
            unreadable
                .iter()
                .any(|p| p.starts_with(root.join(".statefile"))),
            "{mode:?}: {report:?}"
        );
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.path == root.join("hurt.json")),
            "{mode:?}: the rest is checked: {report:?}"
        );
        assert!(report.needs_repair());
    }
}
