//! A journal that swaps files in (`JournalOptions::swap`), on the real file system:
//! programs that take no lock, and hard links (from the hostile review of d912365).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use statefile::fs::Fs;
use statefile::journal::{self, JournalOptions};
use statefile::{Action, ErrorKind, Options, Problem, Report, Store, Version};

use common::{fresh, small};

fn swap_store(dir: &Path, opts: &Options) -> Store {
    journal::enable(
        dir,
        opts,
        JournalOptions {
            swap: true,
            ..small()
        },
    )
    .unwrap();
    Store::open_with(dir, opts.clone()).unwrap()
}

/// Another program (no lock) puts a non-empty directory at the document's name after the
/// look and before step 7. A rename over it fails and leaves it; the swap must too: the
/// directory is back at its name with its contents, and no temp is left.
#[test]
fn swap_a_directory_put_at_the_name_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let doc_path = root.join("a.json");
    let hostile = doc_path.clone();
    let opts = fresh().backups(0);
    let store = swap_store(&root, &opts);
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!({"v": 0}))
        .unwrap();
    let opts = opts.on_temp_created(move |_| {
        if hostile.is_file() {
            std::fs::remove_file(&hostile)?;
            std::fs::create_dir(&hostile)?;
            std::fs::write(hostile.join("inside"), b"keep me")?;
        }
        Ok(())
    });
    let store = Store::open_with(&root, opts).unwrap();
    let r = store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!({"v": 1}));
    assert!(r.is_err(), "a write over a directory succeeded");
    assert!(doc_path.is_dir(), "the directory is gone from its name");
    assert_eq!(std::fs::read(doc_path.join("inside")).unwrap(), b"keep me");
    assert!(
        common::temps(&root).is_empty(),
        "{:?}",
        common::temps(&root)
    );
}

/// A document with a second hard link elsewhere: after a swapped-in write the other
/// link still holds the old version (as after a rename), and the document the new one.
#[test]
fn swap_a_second_hard_link_keeps_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let opts = fresh().backups(0);
    let store = swap_store(root, &opts);
    let doc = store.doc::<Value>("a.json").unwrap();
    doc.write(&json!({"v": 0})).unwrap();
    std::fs::hard_link(root.join("a.json"), root.join("other")).unwrap();
    doc.write(&json!({"v": 1})).unwrap();
    assert_eq!(doc.read().unwrap(), json!({"v": 1}));
    let other: Value = serde_json::from_slice(&std::fs::read(root.join("other")).unwrap()).unwrap();
    assert_eq!(other, json!({"v": 0}));
    assert_eq!(std::fs::metadata(root.join("other")).unwrap().nlink(), 1);
    assert!(common::temps(root).is_empty());
}

/// The finding about `path` in `report`, which must be the only one about it.
fn only_finding<'r>(report: &'r Report, path: &Path) -> &'r statefile::Finding {
    let about: Vec<_> = report.findings.iter().filter(|f| f.path == path).collect();
    assert_eq!(about.len(), 1, "{report:#?}");
    about[0]
}

/// As above, but the swap back fails too (the fs seam fails the second exchange with
/// EIO). The new version is then at the document's name (its record is committed) and
/// the directory under the temp's name. The write must not claim success, and must say
/// where the directory went; recovery (a tree, the document alone, `Store::open`) must
/// report that directory, never delete or move it, every time it runs, and still do the
/// rest of its work. Before the fix, a scan of the document tried to delete it as a
/// stale temp and failed with EISDIR on every run, and a tree scan did not see it.
#[test]
fn swap_a_directory_that_cannot_be_swapped_back_is_reported_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let doc_path = root.join("a.json");
    let hostile = doc_path.clone();
    let twisted = common::Twisted::new();
    let opts = fresh().backups(0).fs(twisted.clone() as Arc<dyn Fs>);
    let store = swap_store(&root, &opts);
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!({"v": 0}))
        .unwrap();
    let opts = opts.on_temp_created(move |_| {
        if hostile.is_file() {
            std::fs::remove_file(&hostile)?;
            std::fs::create_dir(&hostile)?;
            std::fs::write(hostile.join("inside"), b"keep me")?;
        }
        Ok(())
    });
    let store = Store::open_with(&root, opts).unwrap();
    // The first exchange (the temp in) works; the second (the directory back) fails.
    *twisted.fail_exchange_after.lock().unwrap() = Some((1, 5));
    let e = store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!({"v": 1}))
        .unwrap_err();
    *twisted.fail_exchange_after.lock().unwrap() = None;

    let new = b"{\n  \"v\": 1\n}\n";
    assert_eq!(
        std::fs::read(&doc_path).unwrap(),
        new,
        "the committed version"
    );
    let moved = common::temps(&root);
    assert_eq!(moved.len(), 1, "{moved:?}");
    let moved = root.join(&moved[0]);
    assert_eq!(std::fs::read(moved.join("inside")).unwrap(), b"keep me");
    // Not success, not "nothing written": committed, with the version, and where the
    // directory is now.
    assert_eq!(e.kind(), ErrorKind::Durability, "{e}");
    assert_eq!(e.version(), Some(&Version::of(new)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&moved.display().to_string()), "{msg}");
    assert!(msg.contains("directory"), "{msg}");

    // Another document with a dead writer's temp: the scans still remove it.
    statefile::write_json(root.join("b.json"), &1).unwrap();
    let stale = root.join(".b.json.sf-aaaaaaaaaaaaaaaa.tmp");

    let is_reported = |report: &Report| {
        let f = only_finding(report, &moved);
        assert!(
            matches!(&f.problem, Problem::Unreadable { error }
                if error.contains("directory under a temp file's name")
                    && error.contains("never deletes")),
            "{report:#?}"
        );
        assert_eq!(f.action, Action::None, "{report:#?}");
        assert!(report.needs_repair());
    };
    for run in 0..2 {
        std::fs::write(&stale, b"half").unwrap();
        let verified = statefile::verify(&root).unwrap();
        is_reported(&verified);
        assert!(
            matches!(only_finding(&verified, &stale).problem, Problem::StaleTemp),
            "{verified:#?}"
        );
        let recovered = statefile::recover(&root).unwrap();
        is_reported(&recovered);
        assert_eq!(
            only_finding(&recovered, &stale).action,
            Action::Removed,
            "run {run}"
        );
        assert!(!stale.exists());
        for report in [
            statefile::verify(&doc_path).unwrap(),
            statefile::recover(&doc_path).unwrap(),
            statefile::Scan::new(statefile::ScanMode::Repair)
                .dry_run(true)
                .run(&doc_path)
                .unwrap(),
            Store::open(&root).unwrap().recovery().clone(),
        ] {
            is_reported(&report);
            assert_eq!(report.findings.len(), 1, "{report:#?}");
        }
        assert_eq!(std::fs::read(moved.join("inside")).unwrap(), b"keep me");
        assert_eq!(std::fs::read(&doc_path).unwrap(), new);
    }
    // The document reads and writes as usual.
    let doc = Store::open(&root).unwrap().doc::<Value>("a.json").unwrap();
    assert_eq!(doc.read().unwrap(), json!({"v": 1}));
    doc.write(&json!({"v": 2})).unwrap();
    assert_eq!(doc.read().unwrap(), json!({"v": 2}));
    assert!(moved.is_dir());
}
