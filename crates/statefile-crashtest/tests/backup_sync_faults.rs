//! A failed sync of a file whose bytes only the journal holds: a backup that a
//! journaled write kept since the last checkpoint, or the document itself. A write
//! outside the journal (a document too large for a record, `replace_file`) syncs them
//! before its `direct` record, and a checkpoint syncs them before it frees the records.
//! A failed fsync may drop the pages it could not write (the simulation's `Errno`), or,
//! as Linux does, keep them in the cache marked clean (`ErrnoKeepPages`): the file reads
//! whole while the disk holds other bytes, and a later sync succeeds without writing
//! them. Either way the file must be written again from its record (a fresh file), or
//! the journal must keep the record until `statefile recover` has; never may the next
//! checkpoint sync what is left and free the record.
//!
//! Judged where it shows: on the disk after a power loss that follows the next
//! checkpoint (only what was synced, recovered). `rev7_review.rs` judges the tree as the
//! process sees it.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use statefile::fs::Fs;
use statefile::journal::{self, JournalOptions};
use statefile::{Doc, Options, Problem, Scan, ScanMode, Store};
use statefile_crashtest::explore::durable_image;
use statefile_crashtest::sim::{Call, Fault, FaultKind, Image, SimFs};

const ROOT: &str = "/data";

fn opts(sim: &SimFs) -> Options {
    Options::new().backups(2).fs(Arc::new(sim.clone()))
}

fn doc(sim: &SimFs, name: &str) -> Doc<Value> {
    Doc::open_with(format!("{ROOT}/{name}"), opts(sim)).unwrap()
}

fn ver(v: &str) -> Value {
    json!({ "v": v })
}

fn bytes(v: &Value) -> Vec<u8> {
    statefile::to_vec(v, statefile::Format::Pretty).unwrap()
}

/// A document too large for a record of the 16 KiB ring (over a quarter of it).
fn large() -> Value {
    json!({"tag": "C", "pad": "x".repeat(6000)})
}

/// An empty `/data`, recorded from there on (the returned image): a.json = 0 (plain,
/// durable), a 16 KiB journal, A and B through it, no checkpoint: `.a.json.bak` (A) and
/// a.json (B) have their bytes in the journal only. With `part`, the caller's file
/// `c.json.part` (C), synced.
fn world(part: bool) -> (SimFs, Image) {
    let sim = SimFs::new();
    sim.open_dir(Path::new("/"))
        .unwrap()
        .create_dir(OsStr::new("data"))
        .unwrap();
    let base = sim.image();
    sim.record(true);
    doc(&sim, "a.json").write(&ver("0")).unwrap();
    journal::enable(
        ROOT,
        &opts(&sim),
        JournalOptions {
            capacity: 16 << 10,
            ..JournalOptions::default()
        },
    )
    .unwrap();
    for v in ["A", "B"] {
        doc(&sim, "a.json").write(&ver(v)).unwrap();
    }
    if part {
        use std::io::Write;
        let dir = sim.open_dir(Path::new(ROOT)).unwrap();
        let mut f = dir.create_new(OsStr::new("c.json.part"), 0o644).unwrap();
        f.write_all(&bytes(&ver("C"))).unwrap();
        f.sync_all().unwrap();
    }
    (sim, base)
}

/// What a power loss now leaves on the disk (only what was synced since `base`),
/// recovered (`Store::open` replays the journal).
fn after_power_loss(sim: &SimFs, base: &Image) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let lost = SimFs::from_image(durable_image(base, &sim.log()));
    Store::open_with(ROOT, opts(&lost)).map_err(|e| format!("Store::open failed: {e}"))?;
    Ok(lost.image().tree())
}

/// What is wrong with a.json in `tree`: a backup that is not one of the versions
/// `written`, or the document not one of `may_hold`.
fn judge(
    tree: &BTreeMap<String, Vec<u8>>,
    written: &[Vec<u8>],
    may_hold: &[Vec<u8>],
) -> Vec<String> {
    let show = |b: Option<&Vec<u8>>| {
        b.map_or("<missing>".into(), |b| {
            String::from_utf8_lossy(&b[..b.len().min(30)]).into_owned()
        })
    };
    let mut bad = Vec::new();
    for b in ["/data/.a.json.bak", "/data/.a.json.bak.2"] {
        if let Some(got) = tree.get(b)
            && !written.contains(got)
        {
            bad.push(format!("{b} is no complete version: {:?}", show(Some(got))));
        }
    }
    let doc = tree.get("/data/a.json");
    if !doc.is_some_and(|d| may_hold.contains(d)) {
        bad.push(format!("a.json holds {:?}", show(doc)));
    }
    bad
}

/// Fail each call of `op` (run after `world(part)`) once with each of `kinds`; after
/// each, a checkpoint (twice: the first may be refused, or fail on purpose), then a
/// power loss: every backup of a.json must be a complete version (0, A, B or `new`),
/// and a.json B, or `new` unless `op` failed with an error saying nothing was written.
fn each_fault(
    part: bool,
    kinds: &[FaultKind],
    new: Option<&Value>,
    op: impl Fn(&SimFs) -> statefile::Result<()>,
) -> Vec<String> {
    let n0 = world(part).0.calls().len() as u64;
    let mut written: Vec<Vec<u8>> = ["0", "A", "B"].iter().map(|v| bytes(&ver(v))).collect();
    written.extend(new.map(bytes));
    let mut bad = Vec::new();
    let mut tried = 0;
    for &kind in kinds {
        for i in 0.. {
            let (sim, base) = world(part);
            assert_eq!(sim.calls().len() as u64, n0, "the world is deterministic");
            sim.set_fault(Some(Fault { at: n0 + i, kind }));
            let r = op(&sim);
            let Some(call) = sim.fault_fired() else {
                break;
            };
            tried += 1;
            sim.set_fault(None);
            for _ in 0..2 {
                let _ = journal::checkpoint(ROOT, &opts(&sim));
            }
            let mut may_hold = vec![bytes(&ver("B"))];
            let maybe_written = match &r {
                Ok(()) => true,
                Err(e) => e.kind() == statefile::ErrorKind::Durability,
            };
            if maybe_written {
                may_hold.extend(new.map(bytes));
            }
            let found = match after_power_loss(&sim, &base) {
                Ok(tree) => judge(&tree, &written, &may_hold),
                Err(e) => vec![e],
            };
            for what in found {
                bad.push(format!(
                    "call {} ({call:?}) {kind:?}, {:?}: after a checkpoint and a power loss, {what}",
                    n0 + i,
                    r.as_ref().map_err(|e| e.kind()),
                ));
            }
        }
    }
    assert!(tried > 10, "{tried} faults tried");
    bad
}

const KINDS: [FaultKind; 2] = [FaultKind::Errno(5), FaultKind::ErrnoKeepPages(5)];

/// Regression (rev7's known limit): a write too large for the journal syncs a.json (B,
/// about to become `.bak`) and `.bak` (A, about to become `.bak.2`) before its rename.
/// A failed sync of `.bak` left it emptied (or, pages kept, whole in the cache only), and
/// the next checkpoint freed A's record. A failed sync of a.json with its pages kept was
/// not written again either: it read as its record, so the rewrite from it (a0e68dd) did
/// nothing, and a power loss after the checkpoint left a.json empty.
#[test]
fn failed_syncs_by_a_write_too_large_for_the_journal_leave_whole_files_on_disk() {
    let c = large();
    let bad = each_fault(false, &KINDS, Some(&c), |sim| {
        doc(sim, "a.json").write(&c).map(drop)
    });
    assert!(bad.is_empty(), "{bad:#?}");
}

/// Regression (rev7's known limit): `replace_file` in journal mode syncs every backup
/// (`.bak`, A) before it puts the caller's file in place.
#[test]
fn failed_syncs_by_replace_file_leave_whole_backups_on_disk() {
    let bad = each_fault(true, &KINDS, Some(&ver("C")), |sim| {
        statefile::replace_file(
            format!("{ROOT}/c.json.part"),
            format!("{ROOT}/a.json"),
            &opts(sim),
        )
    });
    assert!(bad.is_empty(), "{bad:#?}");
}

/// Regression: a checkpoint whose sync of `.bak` failed took it for a document and
/// rewrote nothing (the next checkpoint freed A's record), and one whose sync of a.json
/// failed with its pages kept rewrote nothing either (it read as its record). And a
/// checkpoint that could not open `.bak` (`EACCES`) took it for out of reach and, a
/// backup, for nothing to sync (one missing is normal), and freed A's record: now a
/// backup there that cannot be opened costs a sync of its file system.
#[test]
fn failed_syncs_and_opens_by_a_checkpoint_leave_whole_files_on_disk() {
    let kinds = [
        FaultKind::Errno(5),
        FaultKind::ErrnoKeepPages(5),
        FaultKind::Errno(13),
    ];
    let bad = each_fault(false, &kinds, None, |sim| {
        journal::checkpoint(ROOT, &opts(sim)).map(drop)
    });
    assert!(bad.is_empty(), "{bad:#?}");
}

/// The call of `op` (after `world(part)`) whose `Errno(5)` fails it with an error
/// naming `what` (the sync of that file), and the calls `op` makes after it then.
fn call_that_syncs(
    part: bool,
    what: &str,
    op: &impl Fn(&SimFs) -> statefile::Result<()>,
) -> (u64, Vec<Call>) {
    let n0 = world(part).0.calls().len() as u64;
    for i in 0.. {
        let (sim, _) = world(part);
        sim.set_fault(Some(Fault {
            at: n0 + i,
            kind: FaultKind::Errno(5),
        }));
        let r = op(&sim);
        let fired = sim.fault_fired();
        assert!(fired.is_some(), "no call of the operation syncs {what}");
        if fired == Some(Call::SyncFile)
            && r.as_ref()
                .is_err_and(|e| e.to_string().contains(&format!("cannot sync {what}")))
        {
            let after = sim.calls()[(n0 + i + 1) as usize..].to_vec();
            return (n0 + i, after);
        }
    }
    unreachable!()
}

/// After `world(false)`: the sync of `.bak` by a write too large for the journal
/// fails, and so does the rename that puts its rewrite in place. Returns the file
/// system, the image its recording starts from, and the write's result.
fn backup_not_written_again() -> (SimFs, Image, statefile::Result<()>) {
    let c = large();
    let op = |sim: &SimFs| doc(sim, "a.json").write(&c).map(drop);
    let (at, after) = call_that_syncs(false, "/data/.a.json.bak", &op);
    let rename = after
        .iter()
        .position(|c| *c == Call::Rename)
        .expect("the rewrite renames its file over the backup") as u64;
    let (sim, base) = world(false);
    sim.set_fault(Some(Fault {
        at,
        kind: FaultKind::Errno(5),
    }));
    let pause = sim.pause_at(at + 1 + rename);
    let writer = {
        let sim = sim.clone();
        std::thread::spawn(move || doc(&sim, "a.json").write(&large()).map(drop))
    };
    assert!(pause.wait_paused(Duration::from_secs(60)));
    assert_eq!(pause.call(), Some(Call::Rename));
    sim.set_fault(Some(Fault {
        at: at + 1 + rename,
        kind: FaultKind::Errno(5),
    }));
    pause.resume();
    let r = writer.join().unwrap();
    sim.set_fault(None);
    (sim, base, r)
}

/// The sync of `.bak` by a write too large for the journal fails, and so does the
/// rename that puts its rewrite in place: the write says the journal keeps its records
/// until `statefile recover`; `verify` and the journal's status report it; checkpoints
/// are refused (the record that holds A stays, so a power loss now loses nothing);
/// `statefile recover` writes the files the journal holds again and lets its checkpoint
/// go on; after a power loss then, the backups are whole.
#[test]
fn a_backup_that_cannot_be_written_again_keeps_its_record_until_recover() {
    let (sim, base, r) = backup_not_written_again();
    let e = r.expect_err("the write failed");
    assert_eq!(e.kind(), statefile::ErrorKind::Io, "{e}");
    assert!(e.to_string().contains("statefile recover"), "{e}");

    let st = journal::status(ROOT, &opts(&sim)).unwrap().unwrap();
    assert!(st.sync_failed && st.needs_repair(), "{st:?}");
    let verify = Scan::new(ScanMode::Verify)
        .options(opts(&sim))
        .run(Path::new(ROOT))
        .unwrap();
    assert!(
        verify
            .findings
            .iter()
            .any(|f| f.problem == Problem::JournalSyncFailed && !f.is_fixed()),
        "{verify:#?}"
    );
    let refused = journal::checkpoint(ROOT, &opts(&sim)).expect_err("refused");
    assert!(
        refused.to_string().contains("statefile recover"),
        "{refused}"
    );
    assert!(journal::status(ROOT, &opts(&sim)).unwrap().unwrap().records > 0);

    let written: Vec<Vec<u8>> = ["0", "A", "B"].iter().map(|v| bytes(&ver(v))).collect();
    let b = [bytes(&ver("B"))];
    let before_recover = after_power_loss(&sim, &base).unwrap();
    assert_eq!(judge(&before_recover, &written, &b), Vec::<String>::new());

    let repaired = Scan::new(ScanMode::Repair)
        .options(opts(&sim))
        .run(Path::new(ROOT))
        .unwrap();
    assert!(
        repaired
            .findings
            .iter()
            .any(|f| f.problem == Problem::JournalSyncFailed && f.is_fixed()),
        "{repaired:#?}"
    );
    assert!(!repaired.needs_repair(), "{repaired:#?}");
    let st = journal::status(ROOT, &opts(&sim)).unwrap().unwrap();
    assert!(!st.sync_failed && st.records == 0, "{st:?}");
    let tree = after_power_loss(&sim, &base).unwrap();
    assert_eq!(judge(&tree, &written, &b), Vec::<String>::new());
    assert_eq!(
        tree.get("/data/.a.json.bak"),
        Some(&bytes(&ver("A"))),
        "A, written again"
    );
}

/// A checkpoint's sync of `.bak` fails while a writer holds a.json's lock (here
/// `Doc::lock`): it cannot write it again now, so it marks the journal, and no
/// checkpoint frees A's record until `statefile recover` has written it again.
#[test]
fn a_checkpoint_that_cannot_lock_the_document_after_a_failed_sync_keeps_its_record_until_recover() {
    let op = |sim: &SimFs| journal::checkpoint(ROOT, &opts(sim)).map(drop);
    let (at, _) = call_that_syncs(false, "/data/.a.json.bak", &op);
    let (sim, base) = world(false);
    let before = sim.calls().len() as u64;
    let held = doc(&sim, "a.json").lock().unwrap();
    // The same call of the checkpoint, the lock's calls made first.
    let at = at + sim.calls().len() as u64 - before;
    sim.set_fault(Some(Fault {
        at,
        kind: FaultKind::ErrnoKeepPages(5),
    }));
    let first = op(&sim);
    assert_eq!(sim.fault_fired(), Some(Call::SyncFile));
    sim.set_fault(None);
    assert!(first.is_err());
    drop(held);
    let st = journal::status(ROOT, &opts(&sim)).unwrap().unwrap();
    assert!(st.sync_failed && st.records > 0, "{st:?}");
    let refused = op(&sim).expect_err("refused");
    assert!(
        refused.to_string().contains("statefile recover"),
        "{refused}"
    );

    let written: Vec<Vec<u8>> = ["0", "A", "B"].iter().map(|v| bytes(&ver(v))).collect();
    let b = [bytes(&ver("B"))];
    let repaired = Scan::new(ScanMode::Repair)
        .options(opts(&sim))
        .run(Path::new(ROOT))
        .unwrap();
    assert!(!repaired.needs_repair(), "{repaired:#?}");
    let st = journal::status(ROOT, &opts(&sim)).unwrap().unwrap();
    assert!(!st.sync_failed && st.records == 0, "{st:?}");
    let tree = after_power_loss(&sim, &base).unwrap();
    assert_eq!(judge(&tree, &written, &b), Vec::<String>::new());
    assert_eq!(tree.get("/data/.a.json.bak"), Some(&bytes(&ver("A"))));
}

/// A `statefile recover` whose own rewrite fails (the first file sync it makes: the
/// fresh copy of a.json) leaves the journal marked, reports it not fixed, and does not
/// checkpoint (the mark would refuse it: the repair is not an error); the next recover
/// finishes.
#[test]
fn a_recover_whose_rewrite_fails_leaves_the_journal_marked() {
    let repair = |sim: &SimFs| {
        Scan::new(ScanMode::Repair)
            .options(opts(sim))
            .run(Path::new(ROOT))
    };
    let (sim, _, _) = backup_not_written_again();
    let n = sim.calls().len();
    repair(&sim).unwrap();
    let first_sync = sim.calls()[n..]
        .iter()
        .position(|c| *c == Call::SyncFile)
        .expect("recover syncs a file") as u64;
    let (sim, base, _) = backup_not_written_again();
    sim.set_fault(Some(Fault {
        at: sim.calls().len() as u64 + first_sync,
        kind: FaultKind::Errno(5),
    }));
    let failed = repair(&sim).unwrap();
    assert_eq!(sim.fault_fired(), Some(Call::SyncFile));
    sim.set_fault(None);
    assert!(
        failed
            .findings
            .iter()
            .any(|f| f.problem == Problem::JournalSyncFailed && !f.is_fixed()),
        "{failed:#?}"
    );
    let st = journal::status(ROOT, &opts(&sim)).unwrap().unwrap();
    assert!(st.sync_failed && st.records > 0, "{st:?}");
    let done = repair(&sim).unwrap();
    assert!(!done.needs_repair(), "{done:#?}");
    let st = journal::status(ROOT, &opts(&sim)).unwrap().unwrap();
    assert!(!st.sync_failed && st.records == 0, "{st:?}");
    let written: Vec<Vec<u8>> = ["0", "A", "B"].iter().map(|v| bytes(&ver(v))).collect();
    let tree = after_power_loss(&sim, &base).unwrap();
    assert_eq!(
        judge(&tree, &written, &[bytes(&ver("B"))]),
        Vec::<String>::new()
    );
}

/// A checkpoint (here another thread's, as another process's would be) runs between
/// the failed sync of `.bak` by a write too large for the journal and its repair: it
/// syncs what is left of `.bak` (with success: nothing is dirty) and frees A's record,
/// which can then no longer be put back. Not silent: the write's error says so, and the
/// journal is marked (verify reports it) for a person to look.
#[test]
fn a_checkpoint_between_a_failed_sync_and_its_repair_is_reported() {
    let c = large();
    let op = |sim: &SimFs| doc(sim, "a.json").write(&c).map(drop);
    let (at, _) = call_that_syncs(false, "/data/.a.json.bak", &op);
    let (sim, _) = world(false);
    sim.set_fault(Some(Fault {
        at,
        kind: FaultKind::Errno(5),
    }));
    let pause = sim.pause_at(at + 1);
    let writer = {
        let sim = sim.clone();
        std::thread::spawn(move || doc(&sim, "a.json").write(&large()).map(drop))
    };
    assert!(pause.wait_paused(Duration::from_secs(60)));
    assert_eq!(sim.fault_fired(), Some(Call::SyncFile));
    sim.set_fault(None);
    let freed = journal::checkpoint(ROOT, &opts(&sim)).unwrap();
    assert!(freed.freed > 0, "{freed:?}");
    pause.resume();
    let e = writer.join().unwrap().expect_err("the write failed");
    assert_eq!(e.kind(), statefile::ErrorKind::Io, "{e}");
    assert!(
        e.to_string()
            .contains("a checkpoint freed the journal's records"),
        "{e}"
    );
    let st = journal::status(ROOT, &opts(&sim)).unwrap().unwrap();
    assert!(st.sync_failed && st.needs_repair(), "{st:?}");
}
