//! A replay restores a committed write, and keeps what it replaces, as its writer did,
//! whatever the size limit (`Options::max_document_bytes`) of the process that replays:
//! the first to open the store after a crash may have a smaller one than the writer.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use serde_json::{Value, json};
use statefile::{Options, Problem, Store};

use common::{Twisted, put, reboot_journal};

/// The child side of the dead-writer test: `SF_CHILD_ROLE` says what to do.
#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn child_entry() {
    let Some((role, args)) = common::child_role() else {
        return;
    };
    match role.as_str() {
        "die-mid-commit" => common::die_mid_commit(&args[0], &args[1], &args[2]),
        other => panic!("unknown role {other}"),
    }
}

/// Far below the documents (3 KB each), far below the journal's records too.
const SMALL: u64 = 1024;

fn v(c: &str) -> Value {
    json!({"s": c.repeat(3000)})
}

fn bytes(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).unwrap();
    b.push(b'\n');
    b
}

fn limited() -> Options {
    common::fresh().max_document_bytes(SMALL)
}

fn skipped(store: &Store) -> Vec<String> {
    store
        .recovery()
        .findings
        .iter()
        .filter_map(|f| match &f.problem {
            Problem::JournalSkipped { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// The document at `path`, parsed (`None` if missing).
fn at(path: &Path) -> Option<Value> {
    std::fs::read(path)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

/// `d/a.json` written (v1) before the tree was put in journal mode, then (v2) through
/// the journal, then a power loss that undid the second write's rename and its
/// backup's rotation: v1 is at its name, no backup, and the journal holds v2 (and not
/// v1: only the document's file has it).
fn power_lost_after_the_second_write(root: &Path) {
    let store = Store::open_with(root, common::fresh()).unwrap();
    put(&store, "d/a.json", v("a"));
    statefile::journal::enable(root, store.options(), Default::default()).unwrap();
    put(&store, "d/a.json", v("b"));
    std::fs::write(root.join("d/a.json"), bytes(&v("a"))).unwrap();
    std::fs::remove_file(root.join("d/.a.json.bak")).unwrap();
    drop(store);
    reboot_journal(root);
}

// Regression: the replay after a power loss by a process whose limit is below the
// version it replaces took that version (v1, a document its writer kept as a backup)
// for a file over the limit: kept as `.a.json.corrupt`, not as `.a.json.bak`.
#[test]
fn a_replay_keeps_what_it_replaces_as_a_backup_whatever_the_openers_limit() {
    for opts in [common::fresh(), limited()] {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        power_lost_after_the_second_write(&root);
        let opened = Store::open_with(&root, opts.clone()).unwrap();
        assert_eq!(common::replayed(&opened), [root.join("d/a.json")]);
        let limit = opts.get_max_document_bytes();
        assert_eq!(at(&root.join("d/a.json")), Some(v("b")), "limit {limit}");
        assert_eq!(
            at(&root.join("d/.a.json.bak")),
            Some(v("a")),
            "limit {limit}: {:?}",
            common::names(&root.join("d"))
        );
        assert!(
            !root.join("d/.a.json.corrupt").exists(),
            "limit {limit}: a version of the document is not damage"
        );
    }
}

// Regression: where the file system refuses hard links, the replay by a process with
// a smaller limit replaced the version over that limit without keeping it (it may not
// be copied aside unread): v1, which its writer kept as a backup, was lost.
#[test]
fn a_replay_where_links_are_refused_loses_no_version_to_the_openers_limit() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    power_lost_after_the_second_write(&root);
    let tw = Twisted::new();
    *tw.fail_hard_link.lock().unwrap() = Some(1); // EPERM, as FAT or a FUSE file system
    let opts = limited().fs(tw as Arc<dyn statefile::fs::Fs>);
    let opened = Store::open_with(&root, opts).unwrap();
    assert_eq!(common::replayed(&opened), [root.join("d/a.json")]);
    assert_eq!(at(&root.join("d/a.json")), Some(v("b")));
    assert_eq!(
        at(&root.join("d/.a.json.bak")),
        Some(v("a")),
        "{:?}",
        common::names(&root.join("d"))
    );
}

// Regression: a record reached through a symlink (its directory renamed by hand, a
// link left at its name) is applied when the file reached holds a version of the
// document; a process whose limit was below that version could not tell, and skipped
// the record, which the next checkpoint then freed: the committed write was lost.
#[test]
fn a_replay_through_a_link_is_not_skipped_for_the_openers_limit() {
    for opts in [common::fresh(), limited()] {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        power_lost_after_the_second_write(&root);
        std::fs::rename(root.join("d"), root.join("d2")).unwrap();
        std::os::unix::fs::symlink("d2", root.join("d")).unwrap();
        let limit = opts.get_max_document_bytes();
        let opened = Store::open_with(&root, opts).unwrap();
        assert!(
            skipped(&opened).is_empty(),
            "limit {limit}: {:?}",
            skipped(&opened)
        );
        assert_eq!(at(&root.join("d2/a.json")), Some(v("b")), "limit {limit}");
    }
}

// Regression: a dead writer's commit applied by a process with a smaller limit kept
// the version it replaced (within its writer's limit) as `.corrupt`, not as a backup.
#[test]
fn a_dead_writers_commit_is_applied_as_its_writer_would_whatever_the_limit() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    let store = Store::open_with(&root, common::fresh()).unwrap();
    put(&store, "d/a.json", v("a"));
    statefile::journal::enable(&root, store.options(), Default::default()).unwrap();
    let status = common::child(
        "die-mid-commit",
        &[
            root.display().to_string(),
            "d/a.json".into(),
            v("b").to_string(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status()
    .unwrap();
    assert!(!status.success(), "the writer was killed");
    let opened = Store::open_with(&root, limited()).unwrap();
    assert_eq!(common::replayed(&opened), [root.join("d/a.json")]);
    assert_eq!(at(&root.join("d/a.json")), Some(v("b")));
    assert_eq!(
        at(&root.join("d/.a.json.bak")),
        Some(v("a")),
        "{:?}",
        common::names(&root.join("d"))
    );
    assert!(!root.join("d/.a.json.corrupt").exists());
    drop(store);
}
