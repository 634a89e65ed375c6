//! What a power loss before a journal checkpoint leaves of the backups (found by the
//! crash explorer once its judge checked backups too; they failed until the replay put
//! the backups back from the journal's records, `Journal::rebuild_backups`).
//!
//! docs/design.md: "`.name.json.bak`, `.bak.2`, ... previous versions, newest first;
//! each a complete earlier version". A journal commit syncs no file: the bytes of a
//! version it writes are in the journal's record only, until a checkpoint syncs the
//! documents and their backups. When the next commit replaces that version and keeps it
//! as `.bak` (a hard link), a power loss before the checkpoint may keep the link and
//! lose the bytes (ext4 with delayed allocation does exactly that to a file swapped in;
//! POSIX allows it for a file renamed in too). The replay rewrites the document from its
//! record but leaves the backup as it is: empty.
//!
//! And the replay rotates whatever version the power loss left at the document's name
//! into `.bak`, in front of the newer versions whose rotation survived: the backups are
//! no longer newest first (or hold one version twice).

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

fn v(n: u32) -> Vec<u8> {
    bytes(&json!({ "v": n }))
}

/// A store with `a.json` = v0 (written durably) and a journal (`swap` as given); then
/// v1 and v2 written through the journal, no checkpoint. The starting image and the log.
fn two_journal_writes(swap: bool) -> (Image, Vec<Op>) {
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
    let base = sim.image();
    sim.record(true);
    doc(&sim, "a.json").write(&json!({"v": 1})).unwrap();
    doc(&sim, "a.json").write(&json!({"v": 2})).unwrap();
    sim.record(false);
    (base, sim.log())
}

/// Whether op `i` of `log` was made durable by a later sync.
fn synced(log: &[Op], i: usize) -> bool {
    log[i + 1..]
        .iter()
        .any(|s| s.is_sync() && log[i].covered_by(s))
}

/// Recover (`Store::open`) the image of `log` applied to `base` but the ops `dropped`,
/// and return the tree.
fn recover(
    base: &Image,
    log: &[Op],
    dropped: &HashSet<usize>,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut img = base.clone();
    for (i, op) in log.iter().enumerate() {
        if !dropped.contains(&i) {
            img.apply(op, None);
        }
    }
    let after = SimFs::from_image(img);
    Store::open_with(ROOT, opts(&after)).expect("recovery");
    after.image().tree()
}

fn show(b: Option<&Vec<u8>>) -> String {
    b.map_or("<missing>".into(), |b| {
        format!("{:?}", String::from_utf8_lossy(b))
    })
}

/// The power loss keeps every change to names (a file system that commits its metadata
/// in order keeps them all) and loses the file data nobody synced.
fn names_kept_data_lost(swap: bool) -> std::collections::BTreeMap<String, Vec<u8>> {
    let (base, log) = two_journal_writes(swap);
    let dropped = (0..log.len())
        .filter(|i| matches!(log[*i], Op::Write { .. }) && !synced(&log, *i))
        .collect();
    recover(&base, &log, &dropped)
}

fn assert_complete_backups(tree: &std::collections::BTreeMap<String, Vec<u8>>) {
    assert_eq!(tree.get("/data/a.json"), Some(&v(2)), "the document");
    for b in ["/data/.a.json.bak", "/data/.a.json.bak.2"] {
        if let Some(got) = tree.get(b) {
            assert!(
                [v(0), v(1)].contains(got),
                "{b} after a power loss before a checkpoint is no complete earlier version: \
                 {}",
                show(Some(got))
            );
        }
    }
}

/// A journal that swaps files in (ext4 writes out none of them before the checkpoint):
/// `.bak` (v1, replaced by v2) is empty after the power loss and the replay.
#[test]
fn swap_backup_of_a_version_replaced_since_the_last_checkpoint_survives_power_loss() {
    assert_complete_backups(&names_kept_data_lost(true));
}

/// The same in a journal that renames (ext4's write-out of a file renamed over another
/// hides it there; POSIX does not promise it).
#[test]
fn rename_backup_of_a_version_replaced_since_the_last_checkpoint_survives_power_loss() {
    assert_complete_backups(&names_kept_data_lost(false));
}

/// The power loss loses only the rename that put v2 at the document's name, and keeps
/// the rotation after it (`.bak` = v1, `.bak.2` = v0): the replay rotates the v1 still
/// at the name into `.bak` once more, so `.bak` and `.bak.2` both hold v1 (and v0 is
/// gone). The backups must stay newest first: two backups never hold one version.
#[test]
fn a_replay_after_power_loss_keeps_the_backups_newest_first() {
    let (base, log) = two_journal_writes(false);
    let put_v2 = log
        .iter()
        .rposition(|op| matches!(op, Op::Rename { to, .. } if to == OsStr::new("a.json")))
        .expect("the rename of v2 over a.json");
    let tree = recover(&base, &log, &HashSet::from([put_v2]));
    let (b1, b2) = (
        tree.get("/data/.a.json.bak"),
        tree.get("/data/.a.json.bak.2"),
    );
    assert_eq!(tree.get("/data/a.json"), Some(&v(2)), "the document");
    let order = |b: Option<&Vec<u8>>| b.and_then(|b| (0..3).find(|n| v(*n) == *b));
    assert!(
        b1.is_none() || b2.is_none() || order(b1) > order(b2),
        "backups out of order after a replay: .bak {}, .bak.2 {}",
        show(b1),
        show(b2)
    );
}

/// Versions that come back (A, B, A, C, B; and durable versions written again across a
/// checkpoint), a power loss at every point: the rebuild told durable versions from
/// journaled ones by their bytes, which a version that comes back makes ambiguous.
/// The judge's backup checks (complete, newest first, none newer than the document,
/// unchanged once settled) at every crash state, as `tests/crash.rs` runs them.
#[test]
fn versions_that_come_back_keep_their_backups_in_order() {
    use statefile_crashtest::explore::{Budget, explore};
    use statefile_crashtest::workloads::{JOURNAL_REVERTS, JOURNAL_REVERTS_CHECKPOINT};
    let budget = Budget {
        omissions: true,
        torn: true,
        random_per_point: 10,
        seed: 20261124,
        recovery_crash_every: 2,
    };
    let reports: Vec<_> = [JOURNAL_REVERTS, JOURNAL_REVERTS_CHECKPOINT]
        .iter()
        .map(|w| explore(w, budget))
        .collect();
    for r in &reports {
        println!("{}\n{:#?}", r.line(), r.examples);
    }
    for r in &reports {
        assert_eq!(r.violations(), 0, "{}: {:#?}", r.workload, r.examples);
    }
}

/// Writes outside the journal between journaled ones: a file the caller wrote put in
/// place ([`statefile::replace_file`]) and a document too large for a record, each
/// recorded as a `direct` entry. A power loss at every point: a replay takes the
/// backups a `direct` entry left as durable, so the write must make them so (a backup
/// that a journaled write kept had its bytes in the journal only); the judge's backup
/// checks at every crash state. And a fault at every call: a failed sync of the
/// document the large write keeps as `.bak` may drop its bytes, which were in the
/// journal only; the failed write must leave it as it was. Both under `Durability::Data`
/// too (the `direct` record's directory must be synced). A `journal disable` between
/// writes, likewise (a fault after it closed the journal left every writer waiting).
#[test]
fn writes_outside_the_journal_leave_durable_backups_and_survive_faults() {
    use statefile_crashtest::explore::{Budget, explore, inject_faults};
    use statefile_crashtest::workloads::{
        JOURNAL_DIRECT, JOURNAL_DIRECT_DATA, JOURNAL_DISABLE, JOURNAL_INSTALL,
    };
    let budget = Budget {
        omissions: true,
        torn: true,
        random_per_point: 10,
        seed: 20261128,
        recovery_crash_every: 2,
    };
    for w in [
        JOURNAL_INSTALL,
        JOURNAL_DIRECT,
        JOURNAL_DIRECT_DATA,
        JOURNAL_DISABLE,
    ] {
        let r = explore(&w, budget);
        println!("{}\n{:#?}", r.line(), r.examples);
        assert_eq!(r.violations(), 0, "{}: {:#?}", r.workload, r.examples);
        let f = inject_faults(&w);
        println!(
            "| {} | {} | {} | {} |",
            f.workload, f.calls, f.tried, f.violations
        );
        assert!(f.tried > 0);
        assert_eq!(f.violations, 0, "{}: {:#?}", f.workload, f.examples);
    }
}
