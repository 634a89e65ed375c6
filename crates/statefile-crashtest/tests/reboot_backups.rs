//! A reboot (nothing lost) before a checkpoint must leave the backups a writer made,
//! newest first, each a complete earlier version, none lost that a plain write would
//! have kept. Found by a review of `Journal::rebuild_backups` (eea493e), which moved
//! backups that needed nothing; it now acts only when something was lost.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use serde_json::{Value, json};
use statefile::fs::Fs;
use statefile::journal::{self, JournalOptions};
use statefile::{Doc, Store};
use statefile_crashtest::sim::SimFs;

mod common;

use common::{backups_of as backups, name_of, sim_opts as opts};

const ROOT: &str = "/data";

fn doc(sim: &SimFs, backups: usize) -> Doc<Value> {
    Doc::open_with(format!("{ROOT}/a.json"), opts(sim, backups)).unwrap()
}

/// `durable` written outside journal mode (synced), then the journal enabled, then
/// `journaled` written through it; then a reboot with *nothing* lost (every op kept)
/// and the store opened (the replay). Returns (tree before the reboot, tree after).
fn reboot_after(
    backups: usize,
    durable: &[i32],
    journaled: &[i32],
) -> (BTreeMap<String, Vec<u8>>, BTreeMap<String, Vec<u8>>) {
    let sim = SimFs::new();
    sim.open_dir(std::path::Path::new("/"))
        .unwrap()
        .create_dir(OsStr::new("data"))
        .unwrap();
    for n in durable {
        doc(&sim, backups).write(&json!({ "v": n })).unwrap();
    }
    journal::enable(ROOT, &opts(&sim, backups), JournalOptions::default()).unwrap();
    for n in journaled {
        doc(&sim, backups).write(&json!({ "v": n })).unwrap();
    }
    let before = sim.image().tree();
    let after = SimFs::from_image(sim.image());
    Store::open_with(ROOT, opts(&after, backups)).expect("recovery");
    (before, after.image().tree())
}

/// The same value written twice through the journal (an idempotent `set`, a config
/// re-applied): the second write is unchanged and keeps no backup. After a reboot the
/// rebuild puts the first write's version (= the document) at `.bak` and pushes the
/// real previous versions down, dropping the oldest.
#[test]
fn rebuild_unchanged_rewrite_keeps_backups_as_written() {
    let (before, after) = reboot_after(2, &[1, 2], &[3, 3]);
    assert_eq!(backups(&before, 2), ["v2", "v1"], "what the writer left");
    assert_eq!(
        backups(&after, 2),
        backups(&before, 2),
        "a reboot with nothing lost changed the backups (doc {})",
        name_of(after.get("/data/a.json"))
    );
}

/// A write of a version a backup already holds (a restore, a toggled setting), with
/// 4 backups: the rebuild places the oldest wanted version over the name it takes the
/// next one from (`.bak.3`): one version is destroyed, another kept twice.
#[test]
fn rebuild_never_overwrites_a_source_it_still_needs() {
    // durable: doc v4, .bak v3, .bak.2 v2, .bak.3 v1; then v3 again through the journal.
    let (before, after) = reboot_after(4, &[1, 2, 3, 4], &[3]);
    assert_eq!(
        backups(&before, 4),
        ["v4", "v3", "v2", "v1"],
        "what the writer left"
    );
    let got = backups(&after, 4);
    let mut seen = std::collections::HashSet::new();
    for b in &got {
        assert!(
            b == "<missing>" || seen.insert(b.clone()),
            "a reboot with nothing lost left one version twice in the backups: {got:?}"
        );
    }
    assert!(
        got.contains(&"v2".to_string()),
        "a reboot with nothing lost destroyed backup v2: {got:?} (before {:?})",
        backups(&before, 4)
    );
}

/// A toggle back to a version the checkpoint left at the document's name: the writer's
/// `.bak` is v1 then v0; the rebuild leaves out v0 (a recorded version) and keeps an
/// older one instead.
#[test]
fn rebuild_revert_keeps_the_reverted_from_version() {
    let (before, after) = reboot_after(2, &[8, 9, 0], &[1, 0]);
    assert_eq!(backups(&before, 2), ["v1", "v0"], "what the writer left");
    assert_eq!(backups(&after, 2), backups(&before, 2), "after the reboot");
}
