//! Review of `Journal::rebuild_backups` (the power-loss rebuild of backups from the
//! chain of versions): workloads the rebuild's own test does not cover, each explored
//! with the judge's backup checks at every crash point (and crashes during recovery).

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};
use statefile::fs::Fs;
use statefile::journal::{self, JournalOptions};
use statefile::{Options, Store};
use statefile_crashtest::explore::{Budget, Ctx, ROOT, Report, Workload, explore};

mod common;

use common::{backups_of, name_of, sim_opts, v};

fn write(ctx: &Ctx, name: &str, v: Value) -> statefile::Result<()> {
    let id = ctx.begin(name, &v);
    ctx.doc(name).write(&v)?;
    ctx.ack(id);
    Ok(())
}

fn delete(ctx: &Ctx, name: &str) -> statefile::Result<()> {
    let id = ctx.begin_delete(name);
    ctx.doc(name).delete()?;
    ctx.ack(id);
    Ok(())
}

fn enable_journal(ctx: &Ctx) {
    journal::enable(
        ROOT,
        &ctx.opts,
        JournalOptions {
            capacity: 16 << 10,
            ..JournalOptions::default()
        },
    )
    .expect("enable the journal");
}

fn ver(name: &str) -> Value {
    json!({ "v": name })
}

const BUDGET: Budget = Budget {
    omissions: true,
    torn: true,
    random_per_point: 10,
    seed: 20261124,
    recovery_crash_every: 2,
};

fn run(w: &Workload) -> Report {
    let t = std::time::Instant::now();
    let r = explore(w, BUDGET);
    println!("{} ({:?})\n{:#?}", r.line(), t.elapsed(), r.examples);
    r
}

fn assert_clean(w: Workload) {
    let r = run(&w);
    assert_eq!(r.violations(), 0, "{}: {:#?}", r.workload, r.examples);
}

/// Deletes in the middle of the chain: a delete keeps the document as `.bak`.
#[test]
fn delete_in_the_middle() {
    assert_clean(Workload {
        name: "rev5: A, B, delete, A, C (2 backups)",
        opts: || Options::new().backups(2),
        setup: |ctx| {
            ctx.initial("a.json", &ver("0"));
            enable_journal(ctx);
        },
        run: |ctx| {
            write(ctx, "a.json", ver("A"))?;
            write(ctx, "a.json", ver("B"))?;
            delete(ctx, "a.json")?;
            write(ctx, "a.json", ver("A"))?;
            write(ctx, "a.json", ver("C"))
        },
        deterministic: true,
        recovery_sparsity: 16,
    });
}

/// A document created, deleted, created again, all in the journal.
#[test]
fn create_delete_create() {
    assert_clean(Workload {
        name: "rev5: create A, delete, create A, B, A (2 backups)",
        opts: || Options::new().backups(2),
        setup: |ctx| {
            ctx.initial("other.json", &ver("x"));
            enable_journal(ctx);
        },
        run: |ctx| {
            write(ctx, "a.json", ver("A"))?;
            delete(ctx, "a.json")?;
            write(ctx, "a.json", ver("A"))?;
            write(ctx, "a.json", ver("B"))?;
            write(ctx, "a.json", ver("A"))
        },
        deterministic: true,
        recovery_sparsity: 16,
    });
}

/// One backup, versions that come back, a write that changes nothing.
#[test]
fn one_backup_reverts() {
    assert_clean(Workload {
        name: "rev5: 0 | A, B, B, A, B, A (1 backup)",
        opts: || Options::new().backups(1),
        setup: |ctx| {
            ctx.initial("a.json", &ver("0"));
            enable_journal(ctx);
        },
        run: |ctx| {
            for v in ["A", "B", "B", "A", "B", "A"] {
                write(ctx, "a.json", ver(v))?;
            }
            Ok(())
        },
        deterministic: true,
        recovery_sparsity: 16,
    });
}

/// Two backups, the durable versions come back.
#[test]
fn two_backups_durable_reverts() {
    assert_clean(Workload {
        name: "rev5: 0, A | 0, A, B, 0 (2 backups)",
        opts: || Options::new().backups(2),
        setup: |ctx| {
            ctx.initial("a.json", &ver("0"));
            ctx.initial("a.json", &ver("A"));
            enable_journal(ctx);
        },
        run: |ctx| {
            for v in ["0", "A", "B", "0"] {
                write(ctx, "a.json", ver(v))?;
            }
            Ok(())
        },
        deterministic: true,
        recovery_sparsity: 16,
    });
}

/// Two-document transactions with versions that come back (one document unchanged in
/// one of them).
#[test]
fn transaction_reverts() {
    assert_clean(Workload {
        name: "rev5: transactions of a and b with reverts (2 backups)",
        opts: || Options::new().backups(2),
        setup: |ctx| {
            ctx.initial("a.json", &ver("a0"));
            ctx.initial("b.json", &ver("b0"));
            enable_journal(ctx);
        },
        run: |ctx| {
            let store = Store::open_with(ROOT, ctx.opts.clone())?;
            for (a, b) in [("A", "X"), ("B", "X"), ("A", "Y"), ("a0", "b0")] {
                let (a, b) = (ver(a), ver(b));
                let ia = ctx.begin("a.json", &a);
                let ib = ctx.begin("b.json", &b);
                store.transaction(|tx| {
                    tx.write("a.json", &a)?;
                    tx.write("b.json", &b)
                })?;
                ctx.ack(ia);
                ctx.ack(ib);
            }
            Ok(())
        },
        deterministic: true,
        recovery_sparsity: 16,
    });
}

/// A write too large for the journal (written directly, durably) between journaled ones.
/// Before the direct write synced the backups it keeps, and the rebuild started after
/// it: 491 bad backups (`.bak`, `.bak.2` empty: journaled versions the direct write
/// rotated were never synced, and the rebuild left a history with a direct entry as
/// it was).
#[test]
fn direct_write_between_journal_writes() {
    assert_clean(Workload {
        name: "rev5: 0 | A, B, direct D, C, E (2 backups)",
        opts: || Options::new().backups(2),
        setup: |ctx| {
            ctx.initial("a.json", &ver("0"));
            enable_journal(ctx);
        },
        run: |ctx| {
            write(ctx, "a.json", ver("A"))?;
            write(ctx, "a.json", ver("B"))?;
            write(ctx, "a.json", json!({"v": "D", "pad": "x".repeat(6000)}))?;
            write(ctx, "a.json", ver("C"))?;
            write(ctx, "a.json", ver("E"))
        },
        deterministic: true,
        recovery_sparsity: 16,
    });
}

/// Another program replaces the document (its own temp file, synced, renamed over it,
/// the directory synced) between journal writes. Fails: 569 bad backups and 14 lost
/// acknowledged writes (the replay rolls the outside write back to the last record).
#[test]
#[ignore = "found in review (rev5): a write outside statefile between journal writes"]
fn outside_rename_between_journal_writes() {
    assert_clean(Workload {
        name: "rev5: 0 | A, B, outside O, C, E (2 backups)",
        opts: || Options::new().backups(2),
        setup: |ctx| {
            ctx.initial("a.json", &ver("0"));
            enable_journal(ctx);
        },
        run: |ctx| {
            write(ctx, "a.json", ver("A"))?;
            write(ctx, "a.json", ver("B"))?;
            let bytes = statefile::to_vec(&ver("O"), statefile::Format::Pretty)?;
            let id = ctx.begin_bytes("a.json", bytes.clone());
            let dir = ctx.sim.open_dir(Path::new(ROOT)).expect("dir");
            let mut f = dir
                .create_new(OsStr::new("other.tmp"), 0o644)
                .expect("create");
            f.write_all(&bytes).expect("write");
            f.sync_all().expect("sync");
            drop(f);
            dir.rename(OsStr::new("other.tmp"), OsStr::new("a.json"))
                .expect("rename");
            dir.sync().expect("sync dir");
            ctx.ack(id);
            write(ctx, "a.json", ver("C"))?;
            write(ctx, "a.json", ver("E"))
        },
        deterministic: true,
        recovery_sparsity: 16,
    });
}

/// Two checkpoints, versions coming back across both.
#[test]
fn two_checkpoints() {
    assert_clean(Workload {
        name: "rev5: 0 | A, B, ckpt, A, C, ckpt, B, A (3 backups)",
        opts: || Options::new().backups(3),
        setup: |ctx| {
            ctx.initial("a.json", &ver("0"));
            enable_journal(ctx);
        },
        run: |ctx| {
            write(ctx, "a.json", ver("A"))?;
            write(ctx, "a.json", ver("B"))?;
            journal::checkpoint(ROOT, &ctx.opts)?;
            ctx.settled();
            write(ctx, "a.json", ver("A"))?;
            write(ctx, "a.json", ver("C"))?;
            journal::checkpoint(ROOT, &ctx.opts)?;
            ctx.settled();
            write(ctx, "a.json", ver("B"))?;
            write(ctx, "a.json", ver("A"))
        },
        deterministic: true,
        recovery_sparsity: 16,
    });
}

// ---- Plain reboots (nothing lost): the rebuild must move no backup. ----

use std::collections::BTreeMap;

use statefile::Doc;
use statefile_crashtest::sim::SimFs;

/// Apply `ops` to a.json (n >= 0: write {"v": n}; -1: delete).
fn apply_ops(sim: &SimFs, backups: usize, ops: &[i32]) {
    let d: Doc<Value> = Doc::open_with(format!("{ROOT}/a.json"), sim_opts(sim, backups)).unwrap();
    for n in ops {
        if *n < 0 {
            d.delete().unwrap();
        } else {
            d.write(&json!({ "v": n })).unwrap();
        }
    }
}

fn new_sim() -> SimFs {
    let sim = SimFs::new();
    sim.open_dir(Path::new("/"))
        .unwrap()
        .create_dir(OsStr::new("data"))
        .unwrap();
    sim
}

/// `durable` outside journal mode, the journal enabled, `journaled` through it, a reboot
/// with nothing lost, the store opened: (tree before, tree after).
fn reboot_after(
    backups: usize,
    durable: &[i32],
    journaled: &[i32],
) -> (BTreeMap<String, Vec<u8>>, BTreeMap<String, Vec<u8>>) {
    let sim = new_sim();
    apply_ops(&sim, backups, durable);
    journal::enable(ROOT, &sim_opts(&sim, backups), JournalOptions::default()).unwrap();
    apply_ops(&sim, backups, journaled);
    let before = sim.image().tree();
    let after = SimFs::from_image(sim.image());
    Store::open_with(ROOT, sim_opts(&after, backups)).expect("recovery");
    (before, after.image().tree())
}

/// A delete keeps the document as `.bak`; created again with the same value and then
/// replaced, two neighbouring backups hold one version (written durably, before the
/// journal). `nothing_lost` takes equal neighbours for a rebuild cut short, and the
/// rebuild keeps each durable version once: on a plain reboot it removes `.bak.3`.
#[test]
fn reboot_keeps_equal_durable_neighbours_a_delete_made() {
    let (before, after) = reboot_after(3, &[1, -1, 1, 2], &[3]);
    assert_eq!(
        backups_of(&before, 3),
        ["v2", "v1", "v1"],
        "what the writers left"
    );
    assert_eq!(
        backups_of(&after, 3),
        backups_of(&before, 3),
        "a reboot with nothing lost changed the backups"
    );
}

/// The same through the journal only.
#[test]
fn reboot_keeps_equal_journal_neighbours_a_delete_made() {
    let (before, after) = reboot_after(3, &[5, 6], &[1, -1, 1, 2]);
    assert_eq!(
        backups_of(&after, 3),
        backups_of(&before, 3),
        "a reboot with nothing lost changed the backups"
    );
}

// ---- A file system that refuses hard links (EPERM: FAT, some FUSE and network file
// systems, or Linux's protected_hardlinks for a file another user owns). ----

use statefile_crashtest::sim::{Call, Fault, FaultKind, Image, Op};

/// 0 durable; 1 and 2 through the journal (two backups); the power loss keeps every
/// change to names and loses the data nobody synced. The image to recover.
fn names_kept_data_lost() -> Image {
    let sim = new_sim();
    apply_ops(&sim, 2, &[0]);
    journal::enable(ROOT, &sim_opts(&sim, 2), JournalOptions::default()).unwrap();
    let base = sim.image();
    sim.record(true);
    apply_ops(&sim, 2, &[1, 2]);
    sim.record(false);
    let log = sim.log();
    let mut img = base;
    for (i, op) in log.iter().enumerate() {
        let synced = log[i + 1..].iter().any(|s| s.is_sync() && op.covered_by(s));
        if !matches!(op, Op::Write { .. }) || synced {
            img.apply(op, None);
        }
    }
    img
}

/// The writer copies where the file system will not link (`Aside::link`); the rebuild
/// fails instead, and the replay then rotates as before the rebuild existed: the
/// backup of 1 (emptied by the power loss) stays empty.
#[test]
fn rebuild_on_a_file_system_that_refuses_links() {
    let img = names_kept_data_lost();
    let probe = SimFs::from_image(img.clone());
    Store::open_with(ROOT, sim_opts(&probe, 2)).expect("recovery");
    let links: Vec<u64> = probe
        .calls()
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == Call::Link)
        .map(|(i, _)| i as u64)
        .collect();
    assert!(
        !links.is_empty(),
        "the rebuild links durable versions aside"
    );
    for at in links {
        let sim = SimFs::from_image(img.clone());
        sim.set_fault(Some(Fault {
            at,
            kind: FaultKind::Errno(EPERM),
        }));
        Store::open_with(ROOT, sim_opts(&sim, 2)).expect("recovery");
        let tree = sim.image().tree();
        assert_eq!(tree.get("/data/a.json"), Some(&v(2)), "the document");
        for b in ["/data/.a.json.bak", "/data/.a.json.bak.2"] {
            if let Some(got) = tree.get(b) {
                assert!(
                    [v(0), v(1)].contains(got),
                    "link {at} refused (EPERM): {b} is no complete earlier version: {}",
                    name_of(Some(got))
                );
            }
        }
    }
}

const EPERM: i32 = 1;
