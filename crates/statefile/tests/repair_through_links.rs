//! A symlink planted at a document's name never makes the journal's status, a repair
//! (`statefile recover`) or a replay write outside the store's root, or write one
//! document's record into another document.

mod common;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use statefile::journal;
use statefile::{Problem, Report, Store};

use common::{journaled, put, reboot_journal};

/// A store (`base/store`) and a file outside it (`base/outside.json`).
struct Setup {
    _base: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

const OUTSIDE: &[u8] = b"{\"outside\": true}\n";

fn setup() -> Setup {
    let base = tempfile::tempdir().unwrap();
    let b = base.path().canonicalize().unwrap();
    let root = b.join("store");
    std::fs::create_dir(&root).unwrap();
    let outside = b.join("outside.json");
    std::fs::write(&outside, OUTSIDE).unwrap();
    Setup {
        _base: base,
        root,
        outside,
    }
}

/// The last record of `a.json` is a put (`delete`: a delete) and `b.json` is another
/// document, with records of its own; then `a.json` is replaced by a symlink to `to`.
fn plant(root: &Path, delete: bool, to: &Path) {
    let store = journaled(root);
    put(&store, "a.json", json!({"a": 1}));
    put(&store, "b.json", json!({"b": 1}));
    if delete {
        store.doc::<Value>("a.json").unwrap().delete().unwrap();
    } else {
        put(&store, "a.json", json!({"a": 2}));
        std::fs::remove_file(root.join("a.json")).unwrap();
    }
    std::os::unix::fs::symlink(to, root.join("a.json")).unwrap();
}

fn replays(report: &Report) -> Vec<PathBuf> {
    report
        .findings
        .iter()
        .filter(|f| matches!(f.problem, Problem::JournalReplay { .. }))
        .map(|f| f.path.clone())
        .collect()
}

/// Nothing outside the root and no other document was written, and the link is left.
#[track_caller]
fn untouched(s: &Setup, what: &str) {
    assert_eq!(std::fs::read(&s.outside).unwrap(), OUTSIDE, "{what}");
    assert_eq!(
        std::fs::read(s.root.join("b.json")).unwrap(),
        b"{\n  \"b\": 1\n}\n",
        "{what}"
    );
    assert!(
        std::fs::symlink_metadata(s.root.join("a.json"))
            .unwrap()
            .is_symlink(),
        "{what}: the link stays"
    );
    assert!(
        !s.root.join(".b.json.bak").exists() && !s.root.join(".b.json.corrupt").exists(),
        "{what}: b.json was not replaced"
    );
}

/// Status, verify, recover, then the replay after a reboot, each checked.
fn check(s: &Setup, to: &str) {
    let root = &s.root;
    let st = journal::status(root, &common::fresh()).unwrap().unwrap();
    assert!(
        st.to_replay.iter().all(|p| p.path != root.join("a.json")),
        "{to}: a link at the name is nothing a replay writes: {st:?}"
    );
    let verified = statefile::verify(root).unwrap();
    assert!(replays(&verified).is_empty(), "{to}: {verified:?}");
    let recovered = statefile::recover(root).unwrap();
    assert!(replays(&recovered).is_empty(), "{to}: {recovered:?}");
    untouched(s, &format!("{to}: recover"));

    reboot_journal(root);
    let opened = Store::open_with(root, common::fresh()).unwrap();
    assert!(common::replayed(&opened).is_empty(), "{to}: {opened:?}");
    untouched(s, &format!("{to}: replay after a reboot"));
}

// Regression: a delete whose name is now a symlink (to another document, or out of the
// store) was listed "to replay" (verify exit 5), and `recover` followed the link to
// repair whatever document it reached instead.
#[test]
fn a_link_to_another_document_at_a_deleted_documents_name() {
    let s = setup();
    plant(&s.root, true, Path::new("b.json"));
    check(&s, "b.json");
}

// Held before (a put whose name leads elsewhere is never to replay): a guard.
#[test]
fn a_link_to_another_document_at_a_written_documents_name() {
    let s = setup();
    plant(&s.root, false, Path::new("b.json"));
    check(&s, "b.json");
}

#[test]
fn a_link_out_of_the_store_at_a_deleted_documents_name() {
    let s = setup();
    plant(&s.root, true, &s.outside);
    check(&s, "outside");
}

// Held before (the lock's resolution stays in the journal's tree): a guard.
#[test]
fn a_link_out_of_the_store_at_a_written_documents_name() {
    let s = setup();
    plant(&s.root, false, &s.outside);
    check(&s, "outside");
}

// Regression: a delete whose name now holds a FIFO was listed "to replay", and
// `recover`, which never removes one, then reported the delete as a skipped record.
#[test]
fn a_fifo_at_a_deleted_documents_name_is_nothing_to_replay() {
    let s = setup();
    let root = &s.root;
    let store = journaled(root);
    put(&store, "a.json", json!({"a": 1}));
    store.doc::<Value>("a.json").unwrap().delete().unwrap();
    common::mkfifo(&root.join("a.json"));
    let st = journal::status(root, &common::fresh()).unwrap().unwrap();
    assert!(st.to_replay.is_empty(), "{st:?}");
    let recovered = common::within_deadline("recover", {
        let root = root.clone();
        move || statefile::recover(root).unwrap()
    });
    assert!(
        !recovered
            .findings
            .iter()
            .any(|f| matches!(f.problem, Problem::JournalSkipped { .. })),
        "{recovered:?}"
    );
    assert!(
        std::fs::symlink_metadata(root.join("a.json"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

// Regression: `recover` repaired a document through a symlink planted at its name
// between the status and the repair (it repaired the document the link led to, from
// that one's own record), said nothing, and its checkpoint then freed the record of the
// document it was asked to repair: that committed write was lost without a report.
#[test]
fn a_link_planted_before_the_repair_is_not_followed() {
    let s = setup();
    let root = &s.root;
    let store = journaled(root);
    for name in ["a.json", "z.json"] {
        put(&store, name, json!({"v": 1}));
        let old = std::fs::read(root.join(name)).unwrap();
        put(&store, name, json!({"v": 2}));
        std::fs::write(root.join(name), old).unwrap(); // behind its record
    }
    put(&store, "b.json", json!({"b": 1}));
    let tw = common::Twisted::new();
    let planted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (root, planted) = (root.clone(), planted.clone());
        // The repair of a.json, the first to replay, takes its lock: z.json's status
        // is known by then. Then z.json becomes a link to b.json.
        *tw.before_open_lock.lock().unwrap() = Some((
            ".a.json.lock".into(),
            common::Hook(Box::new(move || {
                std::fs::remove_file(root.join("z.json")).unwrap();
                std::os::unix::fs::symlink("b.json", root.join("z.json")).unwrap();
                planted.store(true, std::sync::atomic::Ordering::SeqCst);
            })),
        ));
    }
    let opts = common::fresh().fs(tw as std::sync::Arc<dyn statefile::fs::Fs>);
    let report = statefile::Scan::new(statefile::ScanMode::Repair)
        .options(opts)
        .run(root)
        .unwrap();
    assert!(planted.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(
        std::fs::read(root.join("a.json")).unwrap(),
        b"{\n  \"v\": 2\n}\n",
        "{report:?}"
    );
    let z = report.findings.iter().find(|f| {
        f.path == root.join("z.json") && matches!(f.problem, Problem::JournalSkipped { .. })
    });
    assert!(
        z.is_some_and(|f| format!("{:?}", f.problem).contains("symlink")),
        "z.json's record reported as not applied: {report:?}"
    );
    assert!(report.needs_repair());
    assert_eq!(
        std::fs::read(root.join("b.json")).unwrap(),
        b"{\n  \"b\": 1\n}\n"
    );
    assert!(
        !root.join(".b.json.bak").exists(),
        "b.json was not replaced"
    );
    assert!(
        std::fs::symlink_metadata(root.join("z.json"))
            .unwrap()
            .is_symlink()
    );
}

// Known limit, not fixed (a design decision for the lead): the replay after a reboot
// applies a record through a symlink at its name when the file reached holds a version
// of the document's chain (meant for a document or directory renamed by hand with a link
// left, whose file a power loss left older than the record). A link to another document
// whose bytes happen to equal such a version (both `{}` once, say) is indistinguishable:
// that document gets this one's record. Fails when run.
#[test]
#[ignore = "known limit: the replay after a reboot follows a link to another document holding an equal older version"]
fn a_link_to_another_document_holding_an_equal_older_version() {
    let s = setup();
    let root = &s.root;
    let store = journaled(root);
    put(&store, "b.json", json!({}));
    journal::checkpoint(root, store.options()).unwrap();
    put(&store, "a.json", json!({}));
    put(&store, "a.json", json!({"a": 2}));
    drop(store);
    std::fs::remove_file(root.join("a.json")).unwrap();
    std::os::unix::fs::symlink("b.json", root.join("a.json")).unwrap();
    reboot_journal(root);
    let opened = Store::open_with(root, common::fresh()).unwrap();
    assert!(common::replayed(&opened).is_empty(), "{opened:?}");
    assert_eq!(
        std::fs::read(root.join("b.json")).unwrap(),
        b"{}\n",
        "b.json got a.json's record"
    );
}
