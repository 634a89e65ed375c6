//! What the journal's status (`statefile journal status`, `verify`, every
//! `Store::open`) says: only what a replay would do.

mod common;

use std::path::Path;

use serde_json::{Value, json};
use statefile::journal;
use statefile::{Options, Problem, Scan, ScanMode, Store};

use common::put;

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
