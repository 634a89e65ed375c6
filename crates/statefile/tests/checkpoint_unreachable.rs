//! A journal checkpoint when something its records name can no longer be reached where
//! they name it: a directory swapped for a symlink or a file, a directory or document
//! renamed by hand, a document replaced by a FIFO or a symlink.
//!
//! The checkpoint used to fail on the first two (`open_dir` refuses a symlink, ELOOP,
//! and a file, ENOTDIR), every time, so that once the ring filled every write in the
//! store stopped; and it skipped the others without syncing anything, then freed the
//! records holding their bytes (an acknowledged write lost to a power loss: see
//! crates/statefile-crashtest/tests/checkpoint_unreachable.rs). It now syncs the whole
//! file system (`syncfs`) once instead, then goes on. The normal path never does.

mod common;
use common::{Twisted, get, mkfifo, put, small};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use statefile::journal;
use statefile::{Options, Problem, Store};

/// A store in journal mode (64 KiB ring) at a fresh directory, on a file system that
/// records its `syncfs` calls.
fn store() -> (tempfile::TempDir, PathBuf, Store, Arc<Twisted>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let tw = Twisted::new();
    let opts = Options::new()
        .create_dirs(true)
        .fs(tw.clone() as Arc<dyn statefile::fs::Fs>);
    let store = Store::open_with(&root, opts).unwrap();
    journal::enable(&root, store.options(), small()).unwrap();
    (dir, root, store, tw)
}

fn syncfs_calls(tw: &Twisted) -> usize {
    tw.synced_fs.lock().unwrap().len()
}

/// `{"pad": ...}` of about 4 KB: 16 of them fill the 64 KiB ring.
fn big(i: usize) -> Value {
    json!({"i": i, "pad": "x".repeat(4000)})
}

/// A checkpoint of `store`'s journal, which must succeed.
#[track_caller]
fn checkpoint(root: &Path, store: &Store) -> journal::CheckpointReport {
    journal::checkpoint(root, store.options()).unwrap()
}

// Regression: the checkpoint failed with ELOOP on a directory swapped for a symlink,
// every time, and once the ring was full every write in the store failed with it.
#[test]
fn a_directory_swapped_for_a_symlink_stops_no_checkpoint_and_no_write() {
    let (_t, root, store, tw) = store();
    put(&store, "d/a.json", json!({"v": 1}));
    std::fs::rename(root.join("d"), root.join("d2")).unwrap();
    std::os::unix::fs::symlink("d2", root.join("d")).unwrap();
    // Several laps of the ring, each write finding a checkpoint due or the ring full.
    for i in 0..80 {
        store
            .doc::<Value>("x.json")
            .unwrap()
            .write(&big(i))
            .unwrap_or_else(|e| panic!("write {i} failed: {e}"));
    }
    // Through the link: its records name d2/a.json.
    put(&store, "d/a.json", json!({"v": 2}));
    checkpoint(&root, &store);
    assert_eq!(get(&store, "d/a.json"), json!({"v": 2}));
    assert_eq!(get(&store, "x.json"), big(79));
    assert_eq!(
        syncfs_calls(&tw),
        1,
        "one syncfs, by the first checkpoint (after it, no record names d/ any more)"
    );
}

// Regression: as above, with an explicit checkpoint, and the report says what it did.
#[test]
fn a_checkpoint_syncs_the_file_system_once_for_a_directory_swapped_for_a_symlink() {
    let (_t, root, store, tw) = store();
    put(&store, "d/a.json", json!({"v": 1}));
    put(&store, "d/b.json", json!({"v": 1}));
    put(&store, "e/c.json", json!({"v": 1}));
    std::fs::rename(root.join("d"), root.join("d2")).unwrap();
    std::os::unix::fs::symlink("d2", root.join("d")).unwrap();
    std::fs::rename(root.join("e"), root.join("e2")).unwrap();
    std::os::unix::fs::symlink("e2", root.join("e")).unwrap();
    let r = checkpoint(&root, &store);
    assert_eq!(r.file_systems_synced, 1, "{r:?}");
    assert_eq!(r.unreachable, vec![root.join("d"), root.join("e")], "{r:?}");
    assert_eq!(syncfs_calls(&tw), 1, "once per checkpoint");
    let st = journal::status(&root, store.options()).unwrap().unwrap();
    assert_eq!(st.records, 0, "the records were freed: {st:?}");
}

// Regression: a directory replaced by a file (ENOTDIR) failed every checkpoint too.
#[test]
fn a_directory_replaced_by_a_file_stops_no_checkpoint() {
    let (_t, root, store, tw) = store();
    put(&store, "d/a.json", json!({"v": 1}));
    std::fs::rename(root.join("d"), root.join("d2")).unwrap();
    std::fs::write(root.join("d"), b"not a directory").unwrap();
    let r = checkpoint(&root, &store);
    assert_eq!(r.unreachable, vec![root.join("d")], "{r:?}");
    assert_eq!(syncfs_calls(&tw), 1);
    for i in 0..40 {
        put(&store, "x.json", big(i));
    }
}

// Regression: a directory renamed by hand was skipped (NotFound) and its records freed
// with nothing synced: the documents now under its new name could lose their
// acknowledged writes to a power loss.
#[test]
fn a_directory_renamed_by_hand_is_synced_through_its_file_system() {
    let (_t, root, store, tw) = store();
    put(&store, "d/a.json", json!({"v": 1}));
    std::fs::rename(root.join("d"), root.join("e")).unwrap();
    let r = checkpoint(&root, &store);
    assert_eq!(r.unreachable, vec![root.join("d")], "{r:?}");
    assert_eq!(r.file_systems_synced, 1, "{r:?}");
    assert_eq!(syncfs_calls(&tw), 1);
    assert_eq!(get(&store, "e/a.json"), json!({"v": 1}));
}

// Regression: a document renamed by hand was skipped, nothing synced, its record freed.
#[test]
fn a_document_renamed_by_hand_is_synced_through_its_file_system() {
    let (_t, root, store, tw) = store();
    put(&store, "d/a.json", json!({"v": 1}));
    put(&store, "d/b.json", json!({"v": 1}));
    std::fs::rename(root.join("d/a.json"), root.join("d/moved.json")).unwrap();
    let r = checkpoint(&root, &store);
    assert_eq!(r.unreachable, vec![root.join("d/a.json")], "{r:?}");
    assert_eq!(r.documents, 1, "b.json synced as usual: {r:?}");
    assert_eq!(syncfs_calls(&tw), 1);
    assert_eq!(
        *tw.synced_fs.lock().unwrap(),
        vec![root.join("d")],
        "through the directory that held it"
    );
}

// Regression: a FIFO (or anything but a regular file) at a document's name was skipped,
// nothing synced, its record freed.
#[test]
fn a_document_replaced_by_a_fifo_is_synced_through_its_file_system() {
    let (_t, root, store, tw) = store();
    put(&store, "a.json", json!({"v": 1}));
    std::fs::rename(root.join("a.json"), root.join("kept.json")).unwrap();
    mkfifo(&root.join("a.json"));
    let r = common::within_deadline("the checkpoint", {
        let (root, opts) = (root.clone(), store.options().clone());
        move || journal::checkpoint(&root, &opts)
    })
    .unwrap();
    assert_eq!(r.unreachable, vec![root.join("a.json")], "{r:?}");
    assert_eq!(syncfs_calls(&tw), 1);
}

// Regression: a document renamed by hand with a symlink left at its name was skipped.
#[test]
fn a_document_replaced_by_a_symlink_is_synced_through_its_file_system() {
    let (_t, root, store, tw) = store();
    put(&store, "a.json", json!({"v": 1}));
    std::fs::rename(root.join("a.json"), root.join("b.json")).unwrap();
    std::os::unix::fs::symlink("b.json", root.join("a.json")).unwrap();
    let r = checkpoint(&root, &store);
    assert_eq!(r.unreachable, vec![root.join("a.json")], "{r:?}");
    assert_eq!(syncfs_calls(&tw), 1);
}

/// HOLDS (before and after): nothing unreachable, no syncfs: documents in several
/// directories, backups, a delete (its document is missing, as the delete left it), a
/// document replaced since.
#[test]
fn the_normal_checkpoint_syncs_no_whole_file_system() {
    let (_t, root, store, tw) = store();
    for i in 0..3 {
        put(&store, "a.json", json!({"v": i}));
        put(&store, "d/b.json", json!({"v": i}));
        put(&store, "d/e/c.json", json!({"v": i}));
    }
    put(&store, "gone.json", json!({"v": 1}));
    store.doc::<Value>("gone.json").unwrap().delete().unwrap();
    let r = checkpoint(&root, &store);
    assert!(r.unreachable.is_empty(), "{r:?}");
    assert_eq!(r.file_systems_synced, 0, "{r:?}");
    assert_eq!(
        r.documents, 3,
        "the deleted one is not there to sync: {r:?}"
    );
    assert_eq!(syncfs_calls(&tw), 0);
    // And the disable's checkpoint alike.
    put(&store, "a.json", json!({"v": 9}));
    journal::disable(&root, store.options()).unwrap();
    assert_eq!(syncfs_calls(&tw), 0);
}

// Regression: `journal disable` checkpoints first, and failed the same way: a store
// with a directory swapped for a symlink could not leave journal mode.
#[test]
fn disable_gets_past_a_directory_swapped_for_a_symlink() {
    let (_t, root, store, tw) = store();
    put(&store, "d/a.json", json!({"v": 1}));
    std::fs::rename(root.join("d"), root.join("d2")).unwrap();
    std::os::unix::fs::symlink("d2", root.join("d")).unwrap();
    let r = journal::disable(&root, store.options()).unwrap();
    assert_eq!(r.unreachable, vec![root.join("d")], "{r:?}");
    assert_eq!(syncfs_calls(&tw), 1);
    assert!(!root.join(".statefile").exists());
    assert_eq!(get(&store, "d/a.json"), json!({"v": 1}));
}

// Regression: a directory that may not be opened (EACCES: its owner took the read bit
// away) failed every checkpoint as a symlink did. (Root reads any directory, so the
// refusal is injected.)
#[test]
fn a_directory_that_may_not_be_opened_stops_no_checkpoint() {
    let (_t, root, store, tw) = store();
    put(&store, "d/a.json", json!({"v": 1}));
    *tw.fail_open_dir.lock().unwrap() = Some((root.join("d"), 13));
    let r = checkpoint(&root, &store);
    assert_eq!(r.unreachable, vec![root.join("d")], "{r:?}");
    assert_eq!(*tw.synced_fs.lock().unwrap(), vec![root.clone()]);
}

/// HOLDS (a guard of the fallback, not a regression): a document deleted by statefile
/// after the checkpoint noted its end, before it reached the document, is missing
/// because a record the checkpoint keeps says so: no syncfs.
#[test]
fn a_document_deleted_during_the_checkpoint_costs_no_syncfs() {
    let (_t, root, store, tw) = store();
    put(&store, "d/a.json", json!({"v": 1}));
    let other = Store::open_with(&root, common::fresh()).unwrap();
    *tw.before_open_dir.lock().unwrap() = Some((
        root.join("d"),
        common::Hook(Box::new(move || {
            other.doc::<Value>("d/a.json").unwrap().delete().unwrap();
        })),
    ));
    let r = checkpoint(&root, &store);
    assert!(
        tw.before_open_dir.lock().unwrap().is_none(),
        "the delete ran"
    );
    assert!(!root.join("d/a.json").exists());
    assert!(r.unreachable.is_empty(), "{r:?}");
    assert_eq!(syncfs_calls(&tw), 0);
    let st = journal::status(&root, store.options()).unwrap().unwrap();
    assert_eq!(st.records, 1, "the delete's record is kept: {st:?}");
}

// The journal's status, `verify` and `recover` met the same things: `status` failed
// (ELOOP, ENOTDIR, or InvalidName for a FIFO at a document's name), so `verify`
// reported the journal unreadable and `recover` could neither repair nor checkpoint;
// for a directory renamed by hand, `recover` failed on the record it could not replay.

/// After `moved` (done by hand to the store holding `d/a.json`): the journal's status
/// reads, and lists the record as one a replay skips (`skipped`, with the words `why`)
/// or, with `why` empty, as nothing to do; `verify` and `recover` report it so (never
/// the journal unreadable), and `recover` checkpoints, leaving no record.
#[track_caller]
fn status_verify_and_recover_get_past(why: &str, moved: impl FnOnce(&Path)) {
    let (_t, root, store, _tw) = store();
    put(&store, "d/a.json", json!({"v": 1}));
    moved(&root);
    let doc = root.join("d/a.json");
    let journal_file = root.join(".statefile/journal");
    let st = journal::status(&root, store.options())
        .expect("the journal's status")
        .unwrap();
    assert!(st.to_replay.is_empty(), "{st:?}");
    let skipped: Vec<(&PathBuf, &str)> = st
        .skipped
        .iter()
        .map(|p| (&p.path, p.reason.as_str()))
        .collect();
    if why.is_empty() {
        assert!(skipped.is_empty(), "{st:?}");
    } else {
        assert!(
            matches!(&skipped[..], [(p, r)] if **p == doc && r.contains(why)),
            "{st:?}"
        );
    }
    let is_skipped = |f: &statefile::Finding| {
        f.path == doc
            && matches!(&f.problem, Problem::JournalSkipped { reason, .. } if reason.contains(why))
    };
    for (what, report) in [
        ("verify", statefile::verify(&root).unwrap()),
        ("recover", statefile::recover(&root).unwrap()),
    ] {
        assert!(
            !report.findings.iter().any(|f| f.path == journal_file),
            "{what}: {:?}",
            report.findings
        );
        assert_eq!(
            report.findings.iter().filter(|f| is_skipped(f)).count(),
            usize::from(!why.is_empty()),
            "{what}: {:?}",
            report.findings
        );
    }
    let st = journal::status(&root, store.options()).unwrap().unwrap();
    assert_eq!(st.records, 0, "recover checkpointed: {st:?}");
    assert!(st.skipped.is_empty(), "{st:?}");
}

// Regression: ELOOP from the journal's status. The link leads to the document, which
// holds the record's version: nothing to replay, nothing skipped.
#[test]
fn status_verify_and_recover_get_past_a_directory_swapped_for_a_symlink() {
    status_verify_and_recover_get_past("", |root| {
        std::fs::rename(root.join("d"), root.join("d2")).unwrap();
        std::os::unix::fs::symlink("d2", root.join("d")).unwrap();
    });
}

// Regression: ENOTDIR from the journal's status.
#[test]
fn status_verify_and_recover_get_past_a_directory_replaced_by_a_file() {
    status_verify_and_recover_get_past("should be a directory is a file", |root| {
        std::fs::rename(root.join("d"), root.join("d2")).unwrap();
        std::fs::write(root.join("d"), b"not a directory").unwrap();
    });
}

// Regression: `recover` failed, "directory ... does not exist".
#[test]
fn recover_gets_past_a_directory_renamed_by_hand() {
    status_verify_and_recover_get_past("cannot be reached", |root| {
        std::fs::rename(root.join("d"), root.join("e")).unwrap();
    });
}

// Regression: InvalidName ("is a FIFO") from the journal's status.
#[test]
fn status_verify_and_recover_get_past_a_fifo_at_a_documents_name() {
    status_verify_and_recover_get_past("a FIFO is at its name", |root| {
        std::fs::rename(root.join("d/a.json"), root.join("d/kept.json")).unwrap();
        mkfifo(&root.join("d/a.json"));
    });
}

// Regression (rev16 review): a document deleted with a backup kept (its last version
// moved aside, bytes written by a put the same checkpoint frees), then its directory
// renamed by hand: only a put was taken to hold bytes the journal alone held, so
// nothing was synced and the backup could be lost to a power loss.
#[test]
fn a_deleted_documents_backup_in_a_directory_renamed_by_hand_is_synced() {
    let (_t, root, store, tw) = store();
    put(&store, "d/a.json", json!({"v": 1}));
    let doc = store.doc::<serde_json::Value>("d/a.json").unwrap();
    doc.delete().unwrap();
    assert!(
        !doc.backups().unwrap().is_empty(),
        "the delete kept the last version as a backup"
    );
    std::fs::rename(root.join("d"), root.join("e")).unwrap();
    let r = checkpoint(&root, &store);
    assert_eq!(r.unreachable, vec![root.join("d")], "{r:?}");
    assert_eq!(syncfs_calls(&tw), 1, "{r:?}");
}
