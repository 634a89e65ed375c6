//! Another program with write access to a store's directory changes a document after
//! its writer looked at it (under the lock) and before the writer linked the old
//! version aside as the next backup (found by a hostile review of the write path):
//!
//! - swapped for a symlink (to a file outside the store): the backup link was made of
//!   the symlink itself, so `.name.json.bak` became a symlink out of the store;
//! - removed: in journal mode the write's record could not be withdrawn (the withdraw
//!   read the missing document) and the error said the write "may yet be applied".
//!
//! The writer now keeps aside only the regular file it looked at (same device and
//! inode), and otherwise refuses the write as a `Conflict`, nothing written; in journal
//! mode the record is withdrawn, describing the document as it now is.

mod common;

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use statefile::fs::Fs;
use statefile::journal;
use statefile::{BackupRef, ErrorKind, Options, ReadPolicy, Store};

use common::small;

fn fresh() -> Options {
    common::fresh().backups(3)
}

const SECRET: &[u8] = b"{\"secret\": \"s3cr3t\"}\n";

/// What the other program does to `a.json` once the writer's temp file exists (after
/// the writer's look, before its backup link).
#[derive(Clone, Copy, Debug)]
enum Meddle {
    /// Replace it with a symlink to a JSON file outside the store.
    Symlink,
    /// Remove it.
    Remove,
    /// Replace it with another regular file (a rename over it).
    Replace,
}

struct Scene {
    _dir: tempfile::TempDir,
    root: PathBuf,
    secret: PathBuf,
}

impl Scene {
    /// A store (in journal mode if asked) holding `a.json` = {"v": 2}, with regular
    /// backups `.a.json.bak` = {"v": 1} and `.a.json.bak.2` = {"v": 0}.
    fn new(journaled: bool) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let secret = outside.join("secret.json");
        std::fs::write(&secret, SECRET).unwrap();
        if journaled {
            journal::enable(&root, &fresh(), small()).unwrap();
        }
        let store = Store::open_with(&root, fresh()).unwrap();
        let doc = store.doc::<Value>("a.json").unwrap();
        for v in 0..3 {
            doc.write(&json!({ "v": v })).unwrap();
        }
        Scene {
            _dir: dir,
            root,
            secret,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Options (`base`'s) whose first write's hook does `how` to `a.json`.
    fn meddling(&self, base: Options, how: Meddle) -> Options {
        let target = self.path("a.json");
        let secret = self.secret.clone();
        let other = self.path("other.json");
        let done = AtomicBool::new(false);
        base.on_temp_created(move |_| {
            if done.swap(true, Ordering::SeqCst) {
                return Ok(());
            }
            match how {
                Meddle::Symlink => {
                    std::fs::remove_file(&target)?;
                    symlink(&secret, &target)
                }
                Meddle::Remove => std::fs::remove_file(&target),
                Meddle::Replace => {
                    std::fs::write(&other, b"{\"v\": \"theirs\"}\n")?;
                    std::fs::rename(&other, &target)
                }
            }
        })
    }

    /// Write {"v": 3} through a store whose writes meddle as `how` says.
    fn write_meddled(&self, how: Meddle) -> statefile::Result<statefile::Receipt> {
        self.write_meddled_with(fresh(), how)
    }

    fn write_meddled_with(
        &self,
        base: Options,
        how: Meddle,
    ) -> statefile::Result<statefile::Receipt> {
        let store = Store::open_with(&self.root, self.meddling(base, how)).unwrap();
        store
            .doc::<Value>("a.json")
            .unwrap()
            .write(&json!({"v": 3}))
    }

    fn store(&self) -> Store {
        Store::open_with(&self.root, fresh()).unwrap()
    }

    /// Every backup-like file of `a.json` and what it is: none may be a symlink.
    fn backups_on_disk(&self) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = std::fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(".a.json.bak") || n.starts_with(".a.json.corrupt")
            })
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.file_type().unwrap().is_symlink(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

fn assert_no_secret(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(
        !text.contains("s3cr3t"),
        "{what} disclosed the secret: {text}"
    );
}

/// The swap is refused as a conflict: nothing written, the symlink left where the other
/// program put it, no backup made of it, no temp left, and the old backups whole.
fn check_symlink_swap_refused(journaled: bool) {
    let s = Scene::new(journaled);
    let e = s.write_meddled(Meddle::Symlink).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("a.json"), "{msg}");
    assert!(msg.contains("symlink"), "names what is there now: {msg}");
    assert!(msg.contains("nothing was written"), "{msg}");
    assert_no_secret("the error", msg.as_bytes());
    assert_eq!(
        s.backups_on_disk(),
        [
            (".a.json.bak".to_string(), false),
            (".a.json.bak.2".to_string(), false)
        ],
        "no backup is a symlink, and none was added"
    );
    assert!(
        std::fs::symlink_metadata(s.path("a.json"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the other program's symlink is left alone"
    );
    assert_eq!(std::fs::read(&s.secret).unwrap(), SECRET);
    assert_eq!(common::temps(&s.root), Vec::<String>::new());
    assert_eq!(
        std::fs::read(s.path(".a.json.bak")).unwrap(),
        b"{\n  \"v\": 1\n}\n",
        "the backups are the writer's"
    );
    if journaled {
        // The record was withdrawn: no replay writes {"v": 3} over the symlink.
        common::reboot_journal(&s.root);
        let store = s.store();
        assert_eq!(common::replayed(&store), Vec::<PathBuf>::new());
        assert!(
            std::fs::symlink_metadata(s.path("a.json"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}

#[test]
fn a_document_swapped_for_a_symlink_before_its_backup_link_is_refused_plain() {
    check_symlink_swap_refused(false);
}

#[test]
fn a_document_swapped_for_a_symlink_before_its_backup_link_is_refused_journaled() {
    check_symlink_swap_refused(true);
}

/// A document replaced by another regular file (renamed over it) after the look is not
/// the file looked at: its backup would be a version the writer never saw, and the
/// write would overwrite the other program's change. Refused as a conflict.
fn check_replaced_refused(journaled: bool) {
    let s = Scene::new(journaled);
    let e = s.write_meddled(Meddle::Replace).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains("nothing was written"), "{e}");
    assert_eq!(
        std::fs::read(s.path("a.json")).unwrap(),
        b"{\"v\": \"theirs\"}\n",
        "the other program's file is kept"
    );
    assert_eq!(
        s.backups_on_disk(),
        [
            (".a.json.bak".to_string(), false),
            (".a.json.bak.2".to_string(), false)
        ]
    );
    assert_eq!(common::temps(&s.root), Vec::<String>::new());
    if journaled {
        common::reboot_journal(&s.root);
        let store = s.store();
        assert_eq!(common::replayed(&store), Vec::<PathBuf>::new());
        assert_eq!(
            std::fs::read(s.path("a.json")).unwrap(),
            b"{\"v\": \"theirs\"}\n",
            "no replay applies the refused write"
        );
        assert_eq!(
            common::seen_by_next_update(&store, "a.json"),
            json!({"v": "theirs"}),
            "nor does the next writer"
        );
    }
}

#[test]
fn a_document_replaced_by_another_file_before_its_backup_link_is_refused_plain() {
    check_replaced_refused(false);
}

#[test]
fn a_document_replaced_by_another_file_before_its_backup_link_is_refused_journaled() {
    check_replaced_refused(true);
}

/// A document removed by another program after the look: the write is refused as a
/// conflict saying so (not an I/O error about a backup link), nothing written; in
/// journal mode its record is withdrawn (not "may yet be applied"): no later writer
/// and no replay brings the refused version in.
fn check_removed_refused(journaled: bool) {
    let s = Scene::new(journaled);
    let e = s.write_meddled(Meddle::Remove).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("removed"), "{msg}");
    assert!(msg.contains("nothing was written"), "{msg}");
    assert!(!msg.contains("may yet be applied"), "{msg}");
    assert!(!s.path("a.json").exists(), "left removed");
    assert_eq!(common::temps(&s.root), Vec::<String>::new());
    if journaled {
        let store = s.store();
        let doc = store.doc::<Value>("a.json").unwrap();
        assert_eq!(doc.read().unwrap_err().kind(), ErrorKind::NotFound);
        let next = doc.update(|_| Ok::<_, statefile::Error>(())).unwrap_err();
        assert_eq!(
            next.kind(),
            ErrorKind::NotFound,
            "the next writer finds it missing: the refused write was not applied: {next}"
        );
        assert!(!s.path("a.json").exists());
        common::reboot_journal(&s.root);
        let store = s.store();
        assert_eq!(common::replayed(&store), Vec::<PathBuf>::new());
        assert!(!s.path("a.json").exists(), "no replay brings it back");
        let st = journal::status(&s.root, &fresh()).unwrap().unwrap();
        assert_eq!(st.in_flight, 0, "{st:?}");
        assert!(st.to_replay.is_empty(), "{st:?}");
    }
    // The next write creates it.
    let store = s.store();
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!({"v": 4}))
        .unwrap();
    assert_eq!(
        store.doc::<Value>("a.json").unwrap().read().unwrap(),
        json!({"v": 4})
    );
}

#[test]
fn a_document_removed_before_its_backup_link_is_refused_plain() {
    check_removed_refused(false);
}

#[test]
fn a_document_removed_before_its_backup_link_is_refused_and_withdrawn_journaled() {
    check_removed_refused(true);
}

/// Where the file system refuses hard links the old version is copied aside instead:
/// the copy too is made only of the file looked at.
#[test]
fn a_copied_backup_is_made_only_of_the_file_looked_at() {
    for how in [Meddle::Symlink, Meddle::Replace, Meddle::Remove] {
        let s = Scene::new(false);
        let twisted = common::Twisted::new();
        *twisted.fail_hard_link.lock().unwrap() = Some(1); // EPERM: copy instead
        let e = s
            .write_meddled_with(fresh().fs(twisted as Arc<dyn Fs>), how)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{how:?}: {e}");
        assert!(
            e.to_string().contains("nothing was written"),
            "{how:?}: {e}"
        );
        assert_eq!(
            s.backups_on_disk(),
            [
                (".a.json.bak".to_string(), false),
                (".a.json.bak.2".to_string(), false)
            ],
            "{how:?}"
        );
        assert_eq!(
            std::fs::read(s.path(".a.json.bak")).unwrap(),
            b"{\n  \"v\": 1\n}\n",
            "{how:?}: the old backups are untouched"
        );
        assert_eq!(common::temps(&s.root), Vec::<String>::new(), "{how:?}");
    }
    // Without meddling, the copy is made (the test's file system does refuse links).
    let s = Scene::new(false);
    let twisted = common::Twisted::new();
    *twisted.fail_hard_link.lock().unwrap() = Some(1);
    let store = Store::open_with(&s.root, fresh().fs(twisted as Arc<dyn Fs>)).unwrap();
    let r = store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!({"v": 3}))
        .unwrap();
    assert_eq!(
        r.backup.unwrap().method,
        statefile::BackupMethod::Copy,
        "the copy path was taken"
    );
}

/// Defence in depth: a backup that is a symlink out of the store (as the writer made
/// before the fix, or as anyone with write access to the directory can plant) is never
/// read, served or restored by any consumer, and the refusals say why.
#[test]
fn a_symlinked_backup_is_refused_by_every_consumer_with_a_clear_error() {
    let s = Scene::new(false);
    // The newest backup is a symlink to the secret; the document is damaged.
    std::fs::remove_file(s.path(".a.json.bak")).unwrap();
    symlink(&s.secret, s.path(".a.json.bak")).unwrap();
    std::fs::write(s.path("a.json"), b"{\"trunc").unwrap();
    let store = s.store();
    let doc = store.doc::<Value>("a.json").unwrap();

    // Listing: the symlink is left out; only the regular backup (of {"v": 0}) is there.
    let listed = doc.backups().unwrap();
    assert_eq!(
        listed.iter().map(|b| b.path.clone()).collect::<Vec<_>>(),
        [s.path(".a.json.bak.2")]
    );

    // Reading a backup by a number or version that only the symlink could answer.
    let secret_v = statefile::Version::of(SECRET);
    for which in [BackupRef::Number(2), BackupRef::Version(secret_v.clone())] {
        let e = doc.read_backup(&which).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{which:?}: {e}");
        assert!(
            e.to_string().contains(".a.json.bak") && e.to_string().contains("symlink"),
            "says which backup was left out and why: {e}"
        );
        assert_no_secret("read_backup", e.to_string().as_bytes());
        let e = doc.restore(&which).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{which:?}: {e}");
        assert!(e.to_string().contains("symlink"), "{e}");
    }
    assert_eq!(std::fs::read(s.path("a.json")).unwrap(), b"{\"trunc");

    // A fallback read serves the regular backup, never the symlink's target.
    let fallback = store
        .doc::<Value>("a.json")
        .unwrap()
        .with_read_policy(ReadPolicy::FallbackToBackup);
    let got = fallback.read_versioned().unwrap();
    assert_eq!(got.value, json!({"v": 0}));
    assert_eq!(
        got.recovered.unwrap().path,
        s.path(".a.json.bak.2"),
        "served from the regular backup"
    );

    // Repair restores the regular backup, and reports the symlink.
    let report = store.recover().unwrap();
    assert!(
        report.findings.iter().any(|f| f.path.ends_with(".a.json.bak")
            && matches!(&f.problem, statefile::Problem::Unreadable { error } if error.contains("symlink"))),
        "{report:#?}"
    );
    assert_eq!(
        store.doc::<Value>("a.json").unwrap().read().unwrap(),
        json!({"v": 0}),
        "repaired from the regular backup"
    );
    assert_eq!(std::fs::read(&s.secret).unwrap(), SECRET);
}

/// The same with only the symlink as backup: every consumer refuses, naming it.
#[test]
fn a_symlinked_only_backup_is_never_served_or_restored() {
    let s = Scene::new(false);
    for n in [".a.json.bak", ".a.json.bak.2"] {
        std::fs::remove_file(s.path(n)).unwrap();
    }
    symlink(&s.secret, s.path(".a.json.bak")).unwrap();
    std::fs::write(s.path("a.json"), b"{\"trunc").unwrap();
    let store = s.store();
    let doc = store.doc::<Value>("a.json").unwrap();
    assert!(doc.backups().unwrap().is_empty());
    let fallback = store
        .doc::<Value>("a.json")
        .unwrap()
        .with_read_policy(ReadPolicy::FallbackToBackup);
    let e = fallback.read().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(
        e.to_string().contains(".a.json.bak is a symlink"),
        "says why the backup was not served: {e}"
    );
    assert_no_secret("the fallback read", e.to_string().as_bytes());
    for which in [BackupRef::NewestGood, BackupRef::Number(1)] {
        let e = doc.restore(&which).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(e.to_string().contains(".a.json.bak"), "{e}");
    }
}
