//! A journal record that a replay leaves unapplied is reported, with the document's
//! name and the reason: by the `Store::open` (or `recover`) whose replay after a reboot,
//! or adoption of a dead writer's commit, skipped it, by every `verify` while the
//! record is in the journal, and by the `recover` whose checkpoint then frees it. It
//! used to be a log line only: the acknowledged write it holds, not at the name it was
//! made to, went unnoticed.

mod common;
use common::{get, journaled, put, reboot_journal};

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::json;
use statefile::journal;
use statefile::{Problem, Report, Store};

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

/// The records `report` says were skipped: (document, reason).
fn skipped(report: &Report) -> Vec<(PathBuf, String)> {
    report
        .findings
        .iter()
        .filter_map(|f| match &f.problem {
            Problem::JournalSkipped { reason, .. } => Some((f.path.clone(), reason.clone())),
            _ => None,
        })
        .collect()
}

#[track_caller]
fn one_skipped(report: &Report, doc: &Path, why: &[&str]) {
    let s = skipped(report);
    assert!(
        matches!(&s[..], [(p, r)] if p == doc && why.iter().all(|w| r.contains(w))),
        "want {} skipped because {why:?}: {:?}",
        doc.display(),
        report.findings
    );
}

// Regression: the replay after a reboot skipped the record of d/a.json (d now a link to
// another directory, whose a.json is another document) with a log line only.
#[test]
fn a_record_the_reboot_replay_skips_is_reported_by_open_verify_and_recover() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    {
        let store = journaled(&root);
        put(&store, "d/a.json", json!({"v": 1}));
        put(&store, "x/a.json", json!({"other": 1}));
    }
    // By hand: d renamed, a link to another directory left in its place.
    std::fs::rename(root.join("d"), root.join("d-old")).unwrap();
    std::os::unix::fs::symlink("x", root.join("d")).unwrap();
    reboot_journal(&root);
    let doc = root.join("d/a.json");
    let to = root.join("x/a.json");
    let why = ["through a symlink", &to.display().to_string()];

    let store = Store::open_with(&root, common::fresh()).unwrap();
    // The replay's own words.
    let replay = [why[0], why[1], "holds no version of the document"];
    one_skipped(store.recovery(), &doc, &replay);
    assert!(store.recovery().needs_repair());
    assert_eq!(
        get(&store, "x/a.json"),
        json!({"other": 1}),
        "not overwritten"
    );

    // While the record is in the journal, verify says so too (it only reads).
    let v = statefile::verify(&root).unwrap();
    let status = [why[0], why[1], "does not hold the record's version"];
    one_skipped(&v, &doc, &status);
    let st = journal::status(&root, store.options()).unwrap().unwrap();
    assert_eq!(st.skipped.len(), 1, "{st:?}");
    assert!(st.needs_repair());

    // recover leaves it unapplied, reports it, and checkpoints (freeing it).
    let r = statefile::recover(&root).unwrap();
    one_skipped(&r, &doc, &status);
    let v = statefile::verify(&root).unwrap();
    assert!(!v.needs_repair(), "{:?}", v.findings);
    assert_eq!(get(&store, "x/a.json"), json!({"other": 1}));
    assert_eq!(get(&store, "d-old/a.json"), json!({"v": 1}));
}

// Regression: a dead writer's commit whose document was then replaced by a FIFO was
// skipped by the adoption with a log line only. (The reason is the adoption's: the
// journal's status, which would also report it, words it otherwise.)
#[test]
fn a_dead_writers_record_the_adoption_skips_is_reported_by_open() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    let store = journaled(&root);
    put(&store, "d/a.json", json!({"v": 1}));
    let status = common::child(
        "die-mid-commit",
        &[
            root.display().to_string(),
            "d/a.json".into(),
            json!({"v": 2}).to_string(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status()
    .unwrap();
    assert!(!status.success(), "the writer was killed");
    // By hand: the document moved away, a FIFO in its place.
    std::fs::rename(root.join("d/a.json"), root.join("d/kept.json")).unwrap();
    common::mkfifo(&root.join("d/a.json"));
    let opened = Store::open_with(&root, common::fresh()).unwrap();
    one_skipped(
        opened.recovery(),
        &root.join("d/a.json"),
        &["is a FIFO, not a regular file"],
    );
    let st = journal::status(&root, opened.options()).unwrap().unwrap();
    assert_eq!(st.in_flight, 0, "adopted: {st:?}");
    drop(store);
}

/// HOLDS: a record a replay applies, and one it need not (the document holds it), are
/// not reported as skipped, even through a link that leads to the document itself.
#[test]
fn nothing_is_reported_skipped_when_every_record_is_applied() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    {
        let store = journaled(&root);
        put(&store, "d/a.json", json!({"v": 1}));
        put(&store, "b.json", json!({"v": 1}));
    }
    std::fs::rename(root.join("d"), root.join("d2")).unwrap();
    std::os::unix::fs::symlink("d2", root.join("d")).unwrap();
    reboot_journal(&root);
    let store = Store::open_with(&root, common::fresh()).unwrap();
    assert!(
        skipped(store.recovery()).is_empty(),
        "{:?}",
        store.recovery()
    );
    assert!(skipped(&statefile::verify(&root).unwrap()).is_empty());
    assert!(skipped(&statefile::recover(&root).unwrap()).is_empty());
}
