//! rev16 review of 1bfd063 / 825d3ed: a checkpoint that cannot reach a recorded
//! document syncs "its" file system through the nearest directory it can open.
//!
//! The claim is that this is the document's file system ("a rename never leaves its
//! file system"). With a mount point inside the store it is not: the nearest openable
//! directory can be on the file system *above* the mount while the document is below
//! it. These tests mount a tmpfs inside the store (they need root; the machine's tests
//! run as root) and check which device the `syncfs` went to against the device the
//! document is on now. tmpfs's syncfs does nothing, which does not matter: the
//! recording file system ([`Twisted`]) shows where the call went.
//!
//! The three findings (a mount moved with its parent, a mount point that may not be
//! opened, `mv` copying onto a mount) pass since the checkpoint's fallback also syncs
//! every file system mounted inside the store (`sync(2)` where one cannot be opened).

mod common;
use common::{Twisted, put};

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::json;
use statefile::journal;
use statefile::{Options, Store};

fn store_at(root: &Path) -> (Store, Arc<Twisted>) {
    let tw = Twisted::new();
    let opts = Options::new()
        .create_dirs(true)
        .fs(tw.clone() as Arc<dyn statefile::fs::Fs>);
    let store = Store::open_with(root, opts).unwrap();
    journal::enable(root, store.options(), common::small()).unwrap();
    (store, tw)
}

/// A tmpfs mounted at each of `at` (lazily unmounted, wherever it went, on drop).
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn tmpfs(at: &Path) -> Mounts {
        let mut m = Mounts(Vec::new());
        m.add(at);
        m
    }
    fn add(&mut self, at: &Path) {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(at)
            .status()
            .expect("mount(8)");
        assert!(
            st.success(),
            "mount a tmpfs at {} (root needed)",
            at.display()
        );
        self.0.push(at.to_path_buf());
    }
    /// The mount at `from` is now at `to` (its parent renamed).
    fn moved(&mut self, from: &Path, to: &Path) {
        for p in &mut self.0 {
            if p == from {
                *p = to.to_path_buf();
            }
        }
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

fn dev(p: &Path) -> u64 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .dev()
}

/// The devices the checkpoint's `syncfs` calls went to (a `sync(2)`, which
/// [`Twisted::synced_all`] counts, covers every one).
fn synced_devs(tw: &Twisted) -> Vec<(PathBuf, u64)> {
    tw.synced_fs
        .lock()
        .unwrap()
        .iter()
        .map(|p| (p.clone(), dev(p)))
        .collect()
}

#[track_caller]
fn assert_synced(tw: &Twisted, doc_now: &Path) {
    let want = dev(doc_now);
    let got = synced_devs(tw);
    let all = *tw.synced_all.lock().unwrap();
    assert!(
        all > 0 || got.iter().any(|(_, d)| *d == want),
        "the document, now at {} (device {want:#x}), is durable nowhere: the checkpoint \
         freed its record after syncing only {got:?}",
        doc_now.display()
    );
}

// FINDING: the directory that holds a mount point is renamed by hand (`mv p q`: a
// rename on the outer file system; the mount goes with it). The records name
// p/m/x/a.json, on the tmpfs. The checkpoint finds p/m/x, p/m and p missing, opens
// the store's root (outer file system) and syncs that: the document, on the inner
// file system, was synced by no one, and its record is freed.
#[test]
fn a_mount_point_moved_with_its_parent_by_hand_gets_the_documents_file_system_synced() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    let mut mounts = Mounts::tmpfs(&root.join("p/m"));
    let (store, tw) = store_at(&root);
    put(&store, "p/m/x/a.json", json!({"v": 1}));
    std::fs::rename(root.join("p"), root.join("q")).unwrap();
    mounts.moved(&root.join("p/m"), &root.join("q/m"));
    let r = journal::checkpoint(&root, store.options()).unwrap();
    assert!(r.freed > 0, "{r:?}");
    let now = root.join("q/m/x/a.json");
    assert!(now.exists());
    assert_synced(&tw, &now);
}

// FINDING: the mount point itself may not be opened (EACCES: a tmpfs root chmod 000 by
// its owner, for a checkpoint running as another user; injected here). Its nearest
// openable ancestor is the store's root, on the outer file system.
#[test]
fn a_mount_point_that_may_not_be_opened_gets_the_documents_file_system_synced() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    let _mounts = Mounts::tmpfs(&root.join("m"));
    let (store, tw) = store_at(&root);
    put(&store, "m/a.json", json!({"v": 1}));
    *tw.fail_open_dir.lock().unwrap() = Some((root.join("m"), libc_eacces()));
    let r = journal::checkpoint(&root, store.options()).unwrap();
    assert_eq!(r.unreachable, vec![root.join("m")], "{r:?}");
    assert_synced(&tw, &root.join("m/a.json"));
}

// FINDING (lower: `mv` copies across file systems, the claim is only for rename(2)):
// a document moved by hand onto a mount inside the store (`mv a.json m/`, a copy and
// an unlink, the copy unsynced) gets the outer file system synced: the copy, the only
// place its bytes are now, is durable nowhere once the record is freed. A sync(2)
// (every file system) would cover it.
#[test]
fn a_document_moved_by_hand_onto_a_mount_inside_the_store_gets_that_file_system_synced() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    let _mounts = Mounts::tmpfs(&root.join("m"));
    let (store, tw) = store_at(&root);
    put(&store, "a.json", json!({"v": 1}));
    // What mv(1) does on EXDEV.
    assert_eq!(
        std::fs::rename(root.join("a.json"), root.join("m/a.json"))
            .unwrap_err()
            .raw_os_error(),
        Some(18)
    );
    std::fs::copy(root.join("a.json"), root.join("m/a.json")).unwrap();
    std::fs::remove_file(root.join("a.json")).unwrap();
    let r = journal::checkpoint(&root, store.options()).unwrap();
    assert_eq!(r.unreachable, vec![root.join("a.json")], "{r:?}");
    assert_synced(&tw, &root.join("m/a.json"));
}

// HOLDS: a directory renamed by hand inside a mount: the nearest openable directory
// is the mount's root, and that file system is synced.
#[test]
fn a_directory_renamed_inside_a_mount_gets_the_mounts_file_system_synced() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    let _mounts = Mounts::tmpfs(&root.join("m"));
    let (store, tw) = store_at(&root);
    put(&store, "m/x/a.json", json!({"v": 1}));
    std::fs::rename(root.join("m/x"), root.join("m/y")).unwrap();
    let r = journal::checkpoint(&root, store.options()).unwrap();
    assert_eq!(r.file_systems_synced, 1, "{r:?}");
    assert_synced(&tw, &root.join("m/y/a.json"));
    assert_ne!(
        dev(&root.join("m")),
        dev(&root),
        "the mount is another device"
    );
}

// HOLDS: a failed syncfs fails the checkpoint and frees nothing; the next one, once
// syncfs works, frees the records.
#[test]
fn a_failed_syncfs_fails_the_checkpoint_and_frees_nothing() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    let (store, tw) = store_at(&root);
    put(&store, "d/a.json", json!({"v": 1}));
    std::fs::rename(root.join("d"), root.join("e")).unwrap();
    let before = journal::status(&root, store.options())
        .unwrap()
        .unwrap()
        .records;
    assert!(before > 0);
    *tw.fail_sync_fs.lock().unwrap() = Some(5);
    let err = journal::checkpoint(&root, store.options()).unwrap_err();
    assert!(
        err.to_string().contains("sync the file system"),
        "the error names the syncfs: {err}"
    );
    let st = journal::status(&root, store.options()).unwrap().unwrap();
    assert_eq!(st.records, before, "nothing freed: {st:?}");
    // And `journal disable` (which checkpoints first) fails too, leaving the journal on.
    assert!(journal::disable(&root, store.options()).is_err());
    assert!(journal::status(&root, store.options()).unwrap().is_some());
    *tw.fail_sync_fs.lock().unwrap() = None;
    let r = journal::checkpoint(&root, store.options()).unwrap();
    assert_eq!(r.file_systems_synced, 1, "{r:?}");
    let st = journal::status(&root, store.options()).unwrap().unwrap();
    assert_eq!(st.records, 0, "{st:?}");
}

fn libc_eacces() -> i32 {
    13
}
