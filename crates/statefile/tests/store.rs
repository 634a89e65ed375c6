//! `Store`: names, listing, confinement, and recovery on open; `verify` and `recover`.

mod common;

use serde_json::{Value, json};
use statefile::{Action, ErrorKind, Problem, Scan, ScanMode, Store};

use common::{names, temps};

#[test]
fn names_listing_and_parent_directories() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let store = Store::open(&root).unwrap();
    assert!(root.is_dir(), "a missing root is created");
    for name in [
        "view/resData.json",
        "jobs/1.json",
        "jobs/2.json",
        "servers.json",
    ] {
        store.doc::<Value>(name).unwrap().write(&json!({})).unwrap();
    }
    // Updates leave backups and lock files, which are never listed.
    store
        .doc::<Value>("jobs/1.json")
        .unwrap()
        .write(&json!({"s": 1}))
        .unwrap();
    std::fs::write(root.join("notes.txt"), "not a document").unwrap();
    assert_eq!(
        store.list("").unwrap(),
        [
            "jobs/1.json",
            "jobs/2.json",
            "servers.json",
            "view/resData.json"
        ]
    );
    assert_eq!(store.list("jobs/").unwrap(), ["jobs/1.json", "jobs/2.json"]);
    assert_eq!(store.list("jobs/2").unwrap(), ["jobs/2.json"]);
    assert!(store.list("nothing/").unwrap().is_empty());

    for bad in [
        "../x.json",
        "/abs.json",
        "a//b.json",
        ".hidden.json",
        "a/./b.json",
        "a\\b.json",
        "x\0.json",
        "",
    ] {
        assert_eq!(
            store.doc::<Value>(bad).unwrap_err().kind(),
            ErrorKind::InvalidName,
            "{bad:?}"
        );
    }
}

#[test]
fn a_symlink_inside_the_store_cannot_lead_outside() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.json"), "{\"secret\": 1}\n").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.json"), root.join("leak.json")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();

    let store = Store::open(&root).unwrap();
    for name in ["leak.json", "escape/secret.json", "escape/new.json"] {
        let doc = store.doc::<Value>(name).unwrap();
        assert_eq!(
            doc.read().unwrap_err().kind(),
            ErrorKind::InvalidName,
            "{name}"
        );
        assert_eq!(
            doc.write(&json!({"pwned": true})).unwrap_err().kind(),
            ErrorKind::InvalidName,
            "{name}"
        );
    }
    assert_eq!(names(&outside), ["secret.json"], "nothing written outside");
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.json")).unwrap(),
        "{\"secret\": 1}\n"
    );
    // A link that stays inside is fine.
    store
        .doc::<Value>("real.json")
        .unwrap()
        .write(&json!(1))
        .unwrap();
    std::os::unix::fs::symlink("real.json", root.join("alias.json")).unwrap();
    assert_eq!(
        store.doc::<Value>("alias.json").unwrap().read().unwrap(),
        json!(1)
    );
    // Listing shows the link that stays inside, not the one that leads out.
    assert_eq!(store.list("").unwrap(), ["alias.json", "real.json"]);
}

fn damaged_tree() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let store = Store::open(&root).unwrap();
    let good = store.doc::<Value>("jobs/good.json").unwrap();
    good.write(&json!({"status": "done"})).unwrap();
    let hurt = store.doc::<Value>("jobs/hurt.json").unwrap();
    hurt.write(&json!({"status": "queued"})).unwrap();
    hurt.write(&json!({"status": "running"})).unwrap();
    // A crash left it truncated, and a dead writer left a temp behind.
    std::fs::write(root.join("jobs/hurt.json"), b"{\"status\": \"ru").unwrap();
    std::fs::write(
        root.join("jobs/.good.json.sf-abcdefghijklmnop.tmp"),
        b"{\"half",
    )
    .unwrap();
    // Not ours: a fixed temp name some other tool uses.
    std::fs::write(root.join("jobs/.good.json.tmp"), b"theirs").unwrap();
    // A document damaged beyond repair (no backup), and a damaged backup.
    std::fs::write(root.join("lost.json"), b"").unwrap();
    let other = store.doc::<Value>("other.json").unwrap();
    other.write(&json!(1)).unwrap();
    other.write(&json!(2)).unwrap();
    std::fs::write(root.join(".other.json.bak"), b"[1,").unwrap();
    (dir, root)
}

#[test]
fn verify_reports_without_changing_anything() {
    let (_dir, root) = damaged_tree();
    let before: Vec<_> = walk(&root);
    let report = statefile::verify(&root).unwrap();
    assert_eq!(walk(&root), before, "verify changes nothing");
    assert!(report.needs_repair());
    assert_eq!(report.documents, 4);
    let kinds: Vec<(String, &Problem)> = report
        .findings
        .iter()
        .map(|f| {
            (
                f.path.strip_prefix(&root).unwrap().display().to_string(),
                &f.problem,
            )
        })
        .collect();
    assert_eq!(kinds.len(), 4, "{kinds:#?}");
    assert!(matches!(kinds[0].1, Problem::CorruptBackup { .. }) && kinds[0].0 == ".other.json.bak");
    assert!(matches!(kinds[1].1, Problem::StaleTemp));
    match kinds[2].1 {
        Problem::CorruptDocument {
            reason,
            good_backup,
        } => {
            assert_eq!(kinds[2].0, "jobs/hurt.json");
            assert!(reason.contains("line 1"), "{reason}");
            assert!(good_backup.as_ref().unwrap().ends_with(".hurt.json.bak"));
        }
        p => panic!("{p:?}"),
    }
    match kinds[3].1 {
        Problem::CorruptDocument {
            reason,
            good_backup,
        } => {
            assert_eq!(kinds[3].0, "lost.json");
            assert!(reason.contains("empty"), "{reason}");
            assert!(good_backup.is_none());
        }
        p => panic!("{p:?}"),
    }
    assert!(report.findings.iter().all(|f| f.action == Action::None));
}

#[test]
fn store_open_cleans_temps_and_reports_damage() {
    let (_dir, root) = damaged_tree();
    let store = Store::open(&root).unwrap();
    let r = store.recovery();
    assert_eq!(r.stale_temps().count(), 1);
    assert!(r.stale_temps().all(|f| f.action == Action::Removed));
    assert!(temps(&root.join("jobs")).is_empty());
    // Only statefile's own temp pattern is ever deleted: another program's file stays.
    assert!(root.join("jobs/.good.json.tmp").exists());
    assert_eq!(r.corrupt_documents().count(), 2, "reported, not repaired");
    assert!(r.needs_repair());
    // The damaged document is left as it was for the user to decide.
    assert_eq!(
        std::fs::read(root.join("jobs/hurt.json")).unwrap(),
        b"{\"status\": \"ru"
    );
}

#[test]
fn recover_repairs_what_it_can_and_is_idempotent() {
    let (_dir, root) = damaged_tree();
    let dry = Scan::new(ScanMode::Repair)
        .dry_run(true)
        .run(&root)
        .unwrap();
    assert!(
        dry.findings
            .iter()
            .any(|f| matches!(f.action, Action::Would(_)))
    );
    assert_eq!(
        std::fs::read(root.join("jobs/hurt.json")).unwrap(),
        b"{\"status\": \"ru",
        "a dry run changes nothing"
    );

    let mut calls = Vec::new();
    let report = Scan::new(ScanMode::Repair)
        .run_with_progress(&root, &mut |done, total| calls.push((done, total)))
        .unwrap();
    assert_eq!(calls.last(), Some(&(4, 4)));
    let hurt = report
        .corrupt_documents()
        .find(|f| f.path.ends_with("hurt.json"))
        .unwrap();
    assert!(matches!(hurt.action, Action::Restored { .. }), "{hurt:?}");
    assert_eq!(
        statefile::read_json::<Value>(root.join("jobs/hurt.json")).unwrap(),
        json!({"status": "queued"}),
        "the newest good backup"
    );
    // The damaged bytes are kept aside, not lost.
    assert_eq!(
        std::fs::read(root.join("jobs/.hurt.json.corrupt")).unwrap(),
        b"{\"status\": \"ru"
    );
    let bak = report
        .findings
        .iter()
        .find(|f| matches!(f.problem, Problem::CorruptBackup { .. }))
        .unwrap();
    assert!(matches!(bak.action, Action::MovedAside { .. }));
    // lost.json has no backup: it still needs a human.
    assert!(report.needs_repair());

    std::fs::write(root.join("lost.json"), b"{}\n").unwrap();
    let again = statefile::recover(&root).unwrap();
    assert!(again.is_healthy(), "{again:#?}");
    assert!(statefile::verify(&root).unwrap().is_healthy());
}

// Regression guard: repair re-checks the damaged version under the lock, so a fix made
// in between (here: a fresh write) is never overwritten by an old backup.
#[test]
fn repair_does_not_undo_a_concurrent_fix() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.json");
    let doc = statefile::Doc::<Value>::open(&p).unwrap();
    doc.write(&json!("old")).unwrap();
    doc.write(&json!("newer")).unwrap();
    std::fs::write(&p, b"garbage").unwrap();
    let damaged = statefile::Version::of(b"garbage");
    doc.write(&json!("fixed by hand")).unwrap();
    let e = doc
        .restore_if(Some(&damaged), &statefile::BackupRef::NewestGood)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(doc.read().unwrap(), json!("fixed by hand"));
}

#[test]
fn verify_of_a_single_document() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.json");
    std::fs::write(&p, b"[").unwrap();
    std::fs::write(dir.path().join("b.json"), b"[").unwrap();
    let r = statefile::verify(&p).unwrap();
    assert_eq!(r.documents, 1, "only the named document");
    assert_eq!(r.corrupt_documents().count(), 1);
    assert_eq!(
        statefile::verify(dir.path().join("missing.json"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

fn walk(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn recover_keeps_the_documents_damage_not_an_older_backups() {
    // The document and an older backup are both damaged: after recovery `.corrupt` holds
    // the document's damaged bytes (the newest, the ones worth salvaging).
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.json");
    let doc = statefile::Doc::<Value>::open_with(&p, statefile::Options::new().backups(2)).unwrap();
    for n in 1..=3 {
        doc.write(&json!({"n": n})).unwrap();
    }
    std::fs::write(dir.path().join(".a.json.bak.2"), b"{\"n\": 1, \"old dam").unwrap();
    std::fs::write(&p, b"{\"n\": 3, \"newest dam").unwrap();
    let report = statefile::recover(dir.path()).unwrap();
    assert!(!report.needs_repair(), "{report:?}");
    assert_eq!(statefile::read_json::<Value>(&p).unwrap(), json!({"n": 2}));
    assert_eq!(
        std::fs::read(dir.path().join(".a.json.corrupt")).unwrap(),
        b"{\"n\": 3, \"newest dam"
    );
    assert!(!dir.path().join(".a.json.bak.2").exists());
}

#[test]
fn a_temp_renamed_into_place_meanwhile_is_not_reported() {
    // verify lists the directory, then takes each document's lock: a temp that its
    // writer committed in between must not count as stale. A writer in a loop makes
    // that window common; every scan must stay healthy.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.json");
    let doc = statefile::Doc::<Value>::open(&p).unwrap();
    doc.write(&json!({"n": 0})).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let p = p.clone();
        std::thread::spawn(move || {
            let doc = statefile::Doc::<Value>::open_with(
                &p,
                statefile::Options::new().durability(statefile::Durability::None),
            )
            .unwrap();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                doc.write(&json!({"n": n})).unwrap();
            }
        })
    };
    for _ in 0..200 {
        let report = statefile::verify(dir.path()).unwrap();
        assert!(report.is_healthy(), "{report:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn store_recovery_does_not_repair_through_a_symlink_out_of_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let good = "{\"ok\": 1}\n";
    std::fs::write(outside.join("secret.json"), "{\"damag").unwrap();
    std::fs::write(outside.join(".secret.json.bak"), good).unwrap();
    std::fs::write(root.join(".leak.json.bak"), good).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.json"), root.join("leak.json")).unwrap();

    let store = Store::open(&root).unwrap();
    let report = store.recover().unwrap();
    assert!(
        report
            .findings
            .iter()
            .any(|f| matches!(f.action, Action::Failed { .. })),
        "the repair is refused, and says so: {report:?}"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.json")).unwrap(),
        "{\"damag",
        "nothing outside the root was written"
    );
}

// Regression (issue 9): the scan and the listing recursed once per directory level, and
// a tree 2,000 levels deep overflowed the 2 MiB stack of the server's blocking threads
// (`statefile serve` aborted on start). Both are loops now: run them on a 128 KiB stack.
#[test]
fn a_tree_thousands_of_directories_deep_is_scanned_and_listed_on_a_small_stack() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let mut deep = root.clone();
    // As deep as a path can reach (PATH_MAX is 4096 bytes)...
    while deep.as_os_str().len() < 4_080 {
        deep.push("a");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("x.json"), "{}").unwrap();
    std::fs::write(root.join("top.json"), "{}").unwrap();
    // ...and beyond, made relative to a directory inside it.
    let made = std::process::Command::new("mkdir")
        .args(["-p", &["a"; 30].join("/")])
        .current_dir(&deep)
        .status()
        .unwrap();
    assert!(made.success());
    let levels = deep.strip_prefix(&root).unwrap().components().count();
    assert!(levels > 2_000, "{levels}");
    let (report, listed) = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || {
            let store = Store::open(&root).unwrap();
            (store.verify().unwrap(), store.list("").unwrap())
        })
        .unwrap()
        .join()
        .expect("the scan or the listing overflowed the stack");
    // The only finding: the directory no path can reach, reported, not a crash.
    assert_eq!(report.findings.len(), 1, "{report:?}");
    let Problem::Unreadable { error } = &report.findings[0].problem else {
        panic!("{report:?}");
    };
    assert!(error.contains("File name too long"), "{error}");
    let deepest = format!("{}/x.json", vec!["a"; levels].join("/"));
    assert_eq!(listed, [deepest, "top.json".to_string()]);
}

/// `Store::open_without_scan` (for `statefile tx` on a big store): the tree is not
/// walked (a dead writer's temp file and a damaged document elsewhere are left alone and
/// unreported), yet a transaction still reads the journal's replayed state of what it
/// touches, here a rename lost to a power loss, replayed when the journal is opened.
#[test]
fn opening_without_the_scan_leaves_the_tree_alone_and_transactions_still_replay() {
    use statefile::journal::{self, JournalOptions};
    use std::sync::Arc;
    // A file system of its own: a "process" with its own journal handle.
    let fresh = || {
        statefile::Options::new()
            .create_dirs(true)
            .fs(Arc::new(statefile::fs::OsFs) as Arc<dyn statefile::fs::Fs>)
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    {
        let opts = fresh();
        journal::enable(root, &opts, JournalOptions::default()).unwrap();
        let store = Store::open_with(root, opts).unwrap();
        let doc = store.doc::<Value>("a.json").unwrap();
        doc.write(&json!({"v": 1})).unwrap();
        let old = std::fs::read(root.join("a.json")).unwrap();
        doc.write(&json!({"v": 2})).unwrap();
        std::fs::write(root.join("a.json"), old).unwrap();
    }
    // A reboot: nobody uses the journal, its shared state is gone.
    common::reboot_journal(root);
    std::fs::create_dir(root.join("other")).unwrap();
    std::fs::write(root.join("other/damaged.json"), b"{\"cut").unwrap();
    let dead_temp = root.join("other/.x.json.sf-aaaaaaaaaaaaaaaa.tmp");
    std::fs::write(&dead_temp, b"{}").unwrap();

    let store = Store::open_without_scan(root, fresh()).unwrap();
    assert!(store.recovery().is_healthy(), "{:?}", store.recovery());
    assert_eq!(store.recovery().documents, 0, "nothing was scanned");
    let (seen, _) = store.transaction(|tx| tx.read::<Value>("a.json")).unwrap();
    assert_eq!(seen, Some(json!({"v": 2})), "replayed before the read");
    assert_eq!(
        std::fs::read(root.join("a.json")).unwrap(),
        statefile::to_vec(&json!({"v": 2}), statefile::Format::Pretty).unwrap()
    );
    assert!(dead_temp.exists(), "the tree was not walked");
    assert_eq!(
        std::fs::read(root.join("other/damaged.json")).unwrap(),
        b"{\"cut"
    );

    // Opening with the scan cleans the dead temp and reports the damage.
    let store = Store::open_with(root, fresh()).unwrap();
    assert!(!dead_temp.exists());
    assert_eq!(store.recovery().corrupt_documents().count(), 1);
    // A missing root is refused, as by open_with.
    let e = Store::open_without_scan(root.join("none"), statefile::Options::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn a_typed_view_of_a_store_document_keeps_the_store_s_confinement_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    let store = Store::open_with(
        &root,
        statefile::Options::new().format(statefile::Format::Compact),
    )
    .unwrap();

    let escaping = store.doc::<Value>("escape/new.json").unwrap();
    let typed = escaping.typed::<Vec<String>>();
    assert_eq!(
        typed.write(&vec!["pwned".into()]).unwrap_err().kind(),
        ErrorKind::InvalidName,
        "a typed view is confined to the store's root as its handle is"
    );
    assert_eq!(
        names(&outside),
        Vec::<String>::new(),
        "nothing written outside"
    );

    let doc = store.doc::<Value>("jobs.json").unwrap();
    doc.write(&json!(["build"])).unwrap();
    let jobs = doc.typed::<Vec<String>>();
    assert_eq!(jobs.path(), doc.path());
    jobs.update(|j| {
        j.push("test".into());
        Ok::<_, statefile::Error>(())
    })
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("jobs.json")).unwrap(),
        "[\"build\",\"test\"]\n",
        "the view writes with the store's options"
    );
}

/// A directory under a temp file's name (what a swapped-in write leaves when it finds a
/// directory at the document's name and cannot swap it back) may hold anyone's data:
/// every scan reports it, in a tree or of its document alone, and none deletes, moves
/// or enters it; the rest of the scan goes on. Before, a tree scan skipped it and a
/// scan of the document tried to delete it as a stale temp, failing (EISDIR) every run.
#[test]
fn a_directory_under_a_temp_name_is_reported_and_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let store = Store::open(&root).unwrap();
    store
        .doc::<Value>("jobs/a.json")
        .unwrap()
        .write(&json!(1))
        .unwrap();
    let odd = root.join("jobs/.a.json.sf-aaaaaaaaaaaaaaaa.tmp");
    std::fs::create_dir_all(odd.join("deeper")).unwrap();
    std::fs::write(odd.join("deeper/x.json"), b"{\"cut").unwrap();
    // Beside it, what recovery does repair: a dead writer's temp file.
    let stale = root.join("jobs/.a.json.sf-bbbbbbbbbbbbbbbb.tmp");
    let doc = root.join("jobs/a.json");
    let reported = |r: &statefile::Report, mode: &str| {
        let f: Vec<_> = r.findings.iter().filter(|f| f.path == odd).collect();
        assert_eq!(f.len(), 1, "{mode}: {r:#?}");
        assert!(
            matches!(&f[0].problem, Problem::Unreadable { error }
                if error.contains("is a directory under a temp file's name")),
            "{mode}: {r:#?}"
        );
        assert_eq!(f[0].action, Action::None, "{mode}");
        assert!(r.needs_repair(), "{mode}");
        assert!(
            !r.findings
                .iter()
                .any(|f| f.path.starts_with(&odd) && f.path != odd),
            "{mode}: not entered: {r:#?}"
        );
        assert_eq!(
            std::fs::read(odd.join("deeper/x.json")).unwrap(),
            b"{\"cut",
            "{mode}"
        );
    };
    for path in [&root, &doc] {
        for run in 0..2 {
            std::fs::write(&stale, b"{\"half").unwrap();
            let v = statefile::verify(path).unwrap();
            reported(&v, "verify");
            assert_eq!(v.stale_temps().count(), 1, "{v:#?}");
            let dry = Scan::new(ScanMode::Repair).dry_run(true).run(path).unwrap();
            reported(&dry, "dry run");
            let r = statefile::recover(path).unwrap();
            reported(&r, "recover");
            let removed: Vec<_> = r.stale_temps().map(|f| (&f.path, &f.action)).collect();
            assert_eq!(removed, [(&stale, &Action::Removed)], "{path:?} run {run}");
            let opened = Store::open(&root).unwrap();
            reported(opened.recovery(), "Store::open");
            assert_eq!(opened.recovery().findings.len(), 1);
        }
    }
    // It never stands in the way of the document.
    let a = store.doc::<Value>("jobs/a.json").unwrap();
    a.write(&json!(2)).unwrap();
    assert_eq!(a.read().unwrap(), json!(2));
    assert!(odd.is_dir());
}
