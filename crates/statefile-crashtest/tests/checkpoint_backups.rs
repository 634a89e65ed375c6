//! What a power loss right after a journal checkpoint keeps of the backups made since
//! the one before (regression, from the hostile review of d912365).
//!
//! A journal write does not sync its file; the checkpoint synced only the file now at
//! each document's name. A version replaced before the checkpoint but kept as a backup
//! (`.bak`: a hard link made in step 6, or the file a delete moves there) was synced by
//! no one, while the checkpoint freed the records that held its bytes: after a power loss
//! the backup was empty. ext4 hid it for a journal that renames (it writes a file renamed
//! over another out at once), not for one that swaps files in, nor on file systems
//! without that rule (the simulator here, POSIX's model, has none). The checkpoint now
//! syncs each document's backups too.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::sync::Arc;

use serde_json::{Value, json};
use statefile::fs::Fs;
use statefile::journal::{self, JournalOptions};
use statefile::{Doc, Options, Store};
use statefile_crashtest::sim::{Image, Op, SimFs};

const ROOT: &str = "/data";

fn opts(sim: &SimFs) -> Options {
    Options::new().backups(2).fs(Arc::new(sim.clone()))
}

fn doc(sim: &SimFs, name: &str) -> Doc<Value> {
    Doc::open_with(format!("{ROOT}/{name}"), opts(sim)).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    statefile::to_vec(v, statefile::Format::Pretty).unwrap()
}

/// A store with `a.json` = v0 (written durably) and a journal (`swap` as given).
fn setup(swap: bool) -> Image {
    let sim = SimFs::new();
    sim.open_dir(std::path::Path::new("/"))
        .unwrap()
        .create_dir(OsStr::new("data"))
        .unwrap();
    doc(&sim, "a.json").write(&json!({"v": 0})).unwrap();
    journal::enable(
        ROOT,
        &opts(&sim),
        JournalOptions {
            swap,
            ..JournalOptions::default()
        },
    )
    .unwrap();
    sim.image()
}

/// The state a power loss at the end of `log` leaves: only what a sync made durable.
fn power_loss(base: &Image, log: &[Op]) -> Image {
    let mut keep = HashSet::new();
    for (j, sync) in log.iter().enumerate() {
        if sync.is_sync() {
            for (i, op) in log[..j].iter().enumerate() {
                if op.is_change() && op.covered_by(sync) {
                    keep.insert(i);
                }
            }
        }
    }
    let mut img = base.clone();
    for (i, op) in log.iter().enumerate() {
        if keep.contains(&i) {
            img.apply(op, None);
        }
    }
    img
}

/// Run `run` on the store of `setup(swap)`, then a checkpoint, then a power loss; recover
/// (Store::open) and return the tree.
fn crash_after_checkpoint(
    swap: bool,
    run: impl FnOnce(&SimFs),
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let base = setup(swap);
    let sim = SimFs::from_image(base.clone());
    sim.record(true);
    run(&sim);
    let r = journal::checkpoint(ROOT, &opts(&sim)).unwrap();
    assert!(r.freed > 0, "the checkpoint freed nothing: {r:?}");
    sim.record(false);
    let img = power_loss(&base, &sim.log());
    let after = SimFs::from_image(img);
    Store::open_with(ROOT, opts(&after)).expect("recovery");
    after.image().tree()
}

fn show(b: Option<&Vec<u8>>) -> String {
    b.map_or("<missing>".into(), |b| {
        format!("{:?}", String::from_utf8_lossy(b))
    })
}

/// Two writes in a swap journal (backups(2): on ext4 the rotation then renames the kept
/// version to a free `.bak`, which writes nothing out either), then a checkpoint, then a
/// power loss: the backup (the first write's version) still holds that version.
#[test]
fn swap_backup_of_a_version_replaced_before_a_checkpoint_survives_power_loss() {
    let (v1, v2) = (json!({"v": 1}), json!({"v": 2}));
    let tree = crash_after_checkpoint(true, |sim| {
        doc(sim, "a.json").write(&v1).unwrap();
        doc(sim, "a.json").write(&v2).unwrap();
    });
    assert_eq!(
        tree.get("/data/a.json"),
        Some(&bytes(&v2)),
        "the document: {}",
        show(tree.get("/data/a.json"))
    );
    assert_eq!(
        tree.get("/data/.a.json.bak"),
        Some(&bytes(&v1)),
        "the backup after a power loss: {} (tree: {:?})",
        show(tree.get("/data/.a.json.bak")),
        tree.keys().collect::<Vec<_>>()
    );
}

/// A write, then a delete (which, with backups on, moves the document to `.bak`), then
/// a checkpoint and a power loss: the deleted document's backup holds the version.
#[test]
fn swap_backup_made_by_a_delete_before_a_checkpoint_survives_power_loss() {
    let v1 = json!({"v": 1});
    let tree = crash_after_checkpoint(true, |sim| {
        doc(sim, "a.json").write(&v1).unwrap();
        doc(sim, "a.json").delete().unwrap();
    });
    assert_eq!(tree.get("/data/a.json"), None);
    assert_eq!(
        tree.get("/data/.a.json.bak"),
        Some(&bytes(&v1)),
        "the backup after a power loss: {}",
        show(tree.get("/data/.a.json.bak"))
    );
}

/// The same in a journal that renames: on a file system without ext4's rule (here, the
/// simulator) the backup was lost the same way.
#[test]
fn rename_backup_of_a_version_replaced_before_a_checkpoint_survives_power_loss() {
    let (v1, v2) = (json!({"v": 1}), json!({"v": 2}));
    let tree = crash_after_checkpoint(false, |sim| {
        doc(sim, "a.json").write(&v1).unwrap();
        doc(sim, "a.json").write(&v2).unwrap();
    });
    assert_eq!(tree.get("/data/.a.json.bak"), Some(&bytes(&v1)));
}
