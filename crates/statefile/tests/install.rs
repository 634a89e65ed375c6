//! `replace_file` and `move_file`: the protocol's last steps for a file the caller
//! wrote (the Python package's `atomicwrites` drop-in commits through them).

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Twisted, names};
use statefile::{ErrorKind, Options, move_file, replace_file};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn replace_takes_the_targets_mode_and_leaves_nothing_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("tmpabc"), dir.path().join("servers.json"));
    std::fs::write(&dst, "old").unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(&src, "new").unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o600)).unwrap();
    replace_file(&src, &dst, &Options::new()).unwrap();
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "new");
    assert_eq!(mode(&dst), 0o640);
    // No lock file, no backup, no temp: only the target.
    assert_eq!(names(dir.path()), ["servers.json"]);
}

#[test]
fn a_new_target_gets_0644_less_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("tmpabc"), dir.path().join("new.json"));
    std::fs::write(&src, "x").unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o600)).unwrap();
    replace_file(&src, &dst, &Options::new()).unwrap();
    let expected = 0o644 & !current_umask();
    assert_eq!(mode(&dst), expected);
}

fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[test]
fn move_refuses_an_existing_target_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("tmpabc"), dir.path().join("a.json"));
    std::fs::write(&dst, "old").unwrap();
    std::fs::write(&src, "new").unwrap();
    let e = move_file(&src, &dst, &Options::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(
        e.io_error().map(std::io::Error::kind),
        Some(std::io::ErrorKind::AlreadyExists)
    );
    assert!(e.to_string().contains("a.json"), "{e}");
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "old");
    assert_eq!(std::fs::read_to_string(&src).unwrap(), "new");
}

#[test]
fn move_to_a_new_name_leaves_only_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("tmpabc"), dir.path().join("a.json"));
    std::fs::write(&src, "new").unwrap();
    move_file(&src, &dst, &Options::new()).unwrap();
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "new");
    assert_eq!(names(dir.path()), ["a.json"]);
}

#[test]
fn a_symlinked_target_is_replaced_through_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.json");
    let link = dir.path().join("link.json");
    std::fs::write(&real, "old").unwrap();
    std::os::unix::fs::symlink("real.json", &link).unwrap();
    let src = dir.path().join("tmpabc");
    std::fs::write(&src, "new").unwrap();
    replace_file(&src, &link, &Options::new()).unwrap();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
}

#[test]
fn the_directory_is_synced_and_a_failed_sync_is_a_durability_error() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("tmpabc"), dir.path().join("a.json"));
    std::fs::write(&src, "new").unwrap();
    let fs = Twisted::new();
    let opts = Options::new().fs(fs.clone());
    replace_file(&src, &dst, &opts).unwrap();
    let synced = fs.synced_dirs.lock().unwrap().clone();
    assert_eq!(synced, [std::fs::canonicalize(dir.path()).unwrap()]);

    std::fs::write(&src, "newer").unwrap();
    *fs.fail_sync_dir.lock().unwrap() = Some(5);
    let e = replace_file(&src, &dst, &opts).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Durability);
    // Renamed into place, durability unknown: the error says so.
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "newer");
}

#[test]
fn a_source_in_another_directory_is_refused_and_nothing_moves() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let (src, dst) = (other.path().join("tmpabc"), dir.path().join("a.json"));
    std::fs::write(&src, "new").unwrap();
    for r in [
        replace_file(&src, &dst, &Options::new()),
        move_file(&src, &dst, &Options::new()),
    ] {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidName);
        assert!(e.to_string().contains("same directory"), "{e}");
    }
    assert!(src.exists() && !dst.exists());
}

#[test]
fn a_missing_or_special_source_is_refused_with_the_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("a.json");
    std::fs::write(&dst, "old").unwrap();
    let e = replace_file(dir.path().join("nope"), &dst, &Options::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let e = replace_file(&sub, &dst, &Options::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidName);
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "old");
}

// In a journal's tree, replace_file and move_file put the file in place without the
// journal: its last record of the document (an earlier journal-mode write) brought
// that older version back at the next replay, a `statefile recover` or a recovery after
// a power loss, over the file the caller was told was committed (and a move to the
// name of a document deleted through the journal was deleted again). Found by a hostile
// test of the Python package, whose `atomicwrites` drop-in commits through them.
#[test]
fn in_a_journal_tree_a_replace_is_never_rolled_back_by_a_replay() {
    use serde_json::{Value, json};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let opts = common::fresh();
    statefile::journal::enable(root, &opts, common::small()).unwrap();
    let store = statefile::Store::open_with(root, opts.clone()).unwrap();
    let a = store.doc::<Value>("a.json").unwrap();
    a.write(&json!({"v": "journaled"})).unwrap();
    std::fs::write(root.join("tmp-a"), "{\"v\": \"installed\"}\n").unwrap();
    replace_file(root.join("tmp-a"), root.join("a.json"), &opts).unwrap();
    // The deleted document's record is a delete: a file moved to its name stays.
    let b = store.doc::<Value>("b.json").unwrap();
    b.write(&json!(1)).unwrap();
    b.delete().unwrap();
    std::fs::write(root.join("tmp-b"), "2\n").unwrap();
    move_file(root.join("tmp-b"), root.join("b.json"), &opts).unwrap();
    let report = statefile::recover(root).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("a.json")).unwrap(),
        "{\"v\": \"installed\"}\n",
        "{report:?}"
    );
    assert_eq!(std::fs::read_to_string(root.join("b.json")).unwrap(), "2\n");
    // A power loss: the shared state is lost and the journal replayed from its records.
    common::reboot_journal(root);
    let after = statefile::Store::open_with(root, common::fresh()).unwrap();
    assert_eq!(common::replayed(&after), Vec::<std::path::PathBuf>::new());
    assert_eq!(
        std::fs::read_to_string(root.join("a.json")).unwrap(),
        "{\"v\": \"installed\"}\n"
    );
    assert_eq!(std::fs::read_to_string(root.join("b.json")).unwrap(), "2\n");
    let status = statefile::journal::status(root, &opts).unwrap().unwrap();
    assert!(status.to_replay.is_empty(), "{status:?}");
}
