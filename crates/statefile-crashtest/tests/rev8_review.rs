//! Review (rev8) of e9c5d3b..2c46756: `wait_disabled` says whether a disable was given
//! up (3c51e81), and a journal "closed by a disable that did not finish" is removed by
//! `disable` and by `enable` (4684de9).
//!
//! 4684de9 takes a journal whose header says closed for one nobody uses ("no writer
//! uses it, nothing is replayed from it") and removes its files, by name, with no lock.
//! Two ways that is wrong:
//!
//! - The header says closed while the journal is in use. `disable` writes the closed
//!   header, then syncs it; if that sync fails it gives the disable up (clears
//!   `DISABLING`: writers append again). Linux keeps the page it could not write in the
//!   page cache (marked clean) until it is evicted, so every read of the header, in
//!   every process, says closed from then on, and the next checkpoint copies the flag
//!   into a header it syncs. The simulator's plain `Errno` fault drops the page at once
//!   (the eviction), which hides this; `FaultKind::ErrnoKeepPages` (added on this
//!   branch) keeps it.
//! - The disable is not over: between the closed header and its own removal of the
//!   files, another process's `enable` removes them and makes a new journal, and the
//!   disable then removes the new journal's files (`remove_journal_files` by name).
//!   A `Pause` (added on this branch) stops the disabling thread there; any delay does
//!   (the disable waits for the append lock, held by any writer checking the flags).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use statefile::journal::{self, JournalOptions};
use statefile::{Doc, Options};
use statefile_crashtest::explore::{Budget, Ctx, ROOT, Workload, explore};
use statefile_crashtest::sim::{Call, Fault, FaultKind, SimFs};

fn ver(v: &str) -> Value {
    json!({ "v": v })
}

fn jopts() -> JournalOptions {
    JournalOptions {
        capacity: 16 << 10,
        ..JournalOptions::default()
    }
}

fn opts() -> Options {
    Options::new().backups(0)
}

/// a.json = 0 (durable), a 16 KiB journal, then A through it.
fn setup(ctx: &Ctx) {
    ctx.initial("a.json", &ver("0"));
    journal::enable(ROOT, &ctx.opts, jopts()).expect("enable");
    ctx.initial("a.json", &ver("A"));
}

/// The same options on another `Fs` instance of the same simulated machine: another
/// process (the journal registry is per `Fs` instance).
fn other_process(ctx: &Ctx) -> Options {
    ctx.opts.clone().fs(Arc::new(ctx.sim.clone()))
}

/// Seam calls from the start of a `disable` of the tree as it is now to its last file
/// sync (the sync of the closed header), run on a copy.
fn closing_sync_offset(ctx: &Ctx) -> u64 {
    let probe = SimFs::from_image(ctx.sim.image());
    let popts = ctx.opts.clone().fs(Arc::new(probe.clone()));
    let n = probe.calls().len();
    journal::disable(ROOT, &popts).expect("probe disable");
    let kinds = probe.calls();
    let last = (n..kinds.len())
        .rev()
        .find(|i| kinds[*i] == Call::SyncFile)
        .expect("a file sync");
    (last - n) as u64
}

fn write(ctx: &Ctx, name: &str, v: &str) -> statefile::Result<()> {
    let id = ctx.begin(name, &ver(v));
    ctx.doc(name).write(&ver(v))?;
    ctx.ack(id);
    Ok(())
}

/// `disable` whose sync of the closed header fails (the page kept, as Linux keeps it).
fn disable_failing_at_the_closing_sync(ctx: &Ctx) {
    disable_failing_with(ctx, FaultKind::ErrnoKeepPages(5));
}

fn disable_failing_with(ctx: &Ctx, kind: FaultKind) {
    let off = closing_sync_offset(ctx);
    let n0 = ctx.sim.calls().len() as u64;
    ctx.sim.set_fault(Some(Fault { at: n0 + off, kind }));
    // A header whose sync fails is written and synced again (calls +1 and +2): that
    // sync fails too, so the disable gives up (its revert then goes over the same copy).
    let pause = ctx.sim.pause_at(n0 + off + 1);
    let disabler = {
        let opts = ctx.opts.clone();
        std::thread::spawn(move || journal::disable(ROOT, &opts))
    };
    assert!(pause.wait_paused(Duration::from_secs(30)));
    assert_eq!(ctx.sim.fault_fired(), Some(Call::SyncFile));
    ctx.sim.set_fault(Some(Fault {
        at: n0 + off + 2,
        kind,
    }));
    pause.resume();
    let r = disabler.join().expect("the disabling thread");
    assert_eq!(ctx.sim.fault_fired(), Some(Call::SyncFile));
    ctx.sim.set_fault(None);
    if r.is_ok() {
        ctx.violation("the disable whose closing sync failed twice returned Ok".into());
    }
}

/// A header whose sync failed twice poisons the journal: writes (and checkpoints) are
/// refused until `statefile recover` (or wait for the disable left in progress), so
/// nothing more is acknowledged, and the crash states judged are those of the failed
/// disable. `Ok(true)` for such a refusal.
fn refused(r: statefile::Result<()>) -> statefile::Result<bool> {
    match r {
        Ok(()) => Ok(false),
        Err(e) if e.to_string().contains("refusing to write") => Ok(true),
        // The revert refused by the poison: the disable stays in progress, writers wait
        // for it (until their lock timeout), and enable finds the journal closed.
        Err(e)
            if matches!(
                e.kind(),
                statefile::ErrorKind::LockTimeout | statefile::ErrorKind::Conflict
            ) =>
        {
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

fn budget() -> Budget {
    Budget {
        omissions: true,
        torn: false,
        random_per_point: 0,
        seed: 1,
        recovery_crash_every: 0,
    }
}

fn check(w: &Workload) {
    let r = explore(w, budget());
    println!("{}", r.line());
    assert_eq!(r.violations(), 0, "{:#?}", r.examples);
}

/// The disable is given up (its closing sync failed), so the journal is in use again
/// and E and F go through it, acknowledged. Every read of the header says closed; the
/// checkpoint between E and F writes that flag into the header it syncs. A power loss
/// that keeps neither F's rename: no process replays a closed journal
/// (`Journal::open` takes it for none), and F is lost.
#[test]
fn a_disable_given_up_after_its_closing_sync_failed_leaves_no_closed_journal_in_use() {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        disable_failing_at_the_closing_sync(ctx);
        if refused(write(ctx, "a.json", "E"))? {
            return Ok(());
        }
        if refused(journal::checkpoint(ROOT, &ctx.opts).map(drop))? {
            return Ok(());
        }
        if refused(write(ctx, "a.json", "F"))? {
            return Ok(());
        }
        Ok(())
    }
    check(&Workload {
        name: "disable-closing-sync-fails-then-writes",
        opts,
        setup,
        run,
        deterministic: true,
        recovery_sparsity: 1,
    });
}

/// As above with the simulator's usual fault (the page dropped at the failed sync: the
/// live header is not closed). The recorded write of the closed header is still in the
/// log, and E's flush (a sync of the journal) makes it durable in the crash images: a
/// sector whose write failed holds the old bytes or the new. `disable` takes its failed
/// closing sync for "not closed" and lets writers append to a journal that a power loss
/// may leave closed; then nothing replays it, and E, acknowledged, whose document's data
/// the commit did not sync, reads empty.
#[test]
fn a_disable_given_up_after_its_closing_sync_failed_leaves_no_journal_closed_on_disk() {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        disable_failing_with(ctx, FaultKind::Errno(5));
        if refused(write(ctx, "a.json", "E"))? {
            return Ok(());
        }
        if refused(journal::checkpoint(ROOT, &ctx.opts).map(drop))? {
            return Ok(());
        }
        if refused(write(ctx, "a.json", "F"))? {
            return Ok(());
        }
        Ok(())
    }
    check(&Workload {
        name: "disable-closing-sync-eio-then-writes",
        opts,
        setup,
        run,
        deterministic: true,
        recovery_sparsity: 1,
    });
}

/// The same given-up disable, E acknowledged through the journal, then another
/// process enables journal mode: 4684de9 takes the journal for a closed leftover and
/// removes it (E's record with it), then makes a new one. A power loss that does not
/// keep E's rename (a commit syncs only the journal) loses E.
#[test]
fn enable_in_another_process_does_not_remove_a_journal_in_use_whose_header_reads_closed() {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        disable_failing_at_the_closing_sync(ctx);
        if refused(write(ctx, "a.json", "E"))? {
            return Ok(());
        }
        if refused(journal::enable(ROOT, &other_process(ctx), jopts()).map(drop))? {
            return Ok(());
        }
        Ok(())
    }
    check(&Workload {
        name: "disable-closing-sync-fails-then-enable-elsewhere",
        opts,
        setup,
        run,
        deterministic: true,
        recovery_sparsity: 1,
    });
}

/// No fault. A `disable` stops right after its closing sync (before it marks the
/// shared state and removes the files). Meanwhile another process enables journal mode
/// (4684de9: the closed journal is a leftover, removed; a new one is made; `enable`
/// returns Ok) and writes E through the new journal, acknowledged. The disable goes on
/// and removes the journal files by name: the new journal's. The tree is left with no
/// journal though the last call on it enabled one, and a power loss that does not keep
/// E's rename loses E.
#[test]
fn a_disable_finishing_does_not_remove_the_journal_an_enable_made_meanwhile() {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        let off = closing_sync_offset(ctx);
        let n0 = ctx.sim.calls().len() as u64;
        let pause = ctx.sim.pause_at(n0 + off + 1);
        let disabler = {
            let opts = ctx.opts.clone();
            std::thread::spawn(move || journal::disable(ROOT, &opts).map(drop))
        };
        assert!(
            pause.wait_paused(Duration::from_secs(30)),
            "the disable did not reach the call after its closing sync"
        );
        let other = other_process(ctx);
        let enabled = journal::enable(ROOT, &other, jopts());
        let id = ctx.begin("a.json", &ver("E"));
        let wrote = Doc::<Value>::open_with(Ctx::path("a.json"), other.clone())
            .expect("valid name")
            .write(&ver("E"));
        if wrote.is_ok() {
            ctx.ack(id);
        }
        pause.resume();
        let disabled = disabler.join().expect("the disabling thread");
        let status = journal::status(ROOT, &other);
        if enabled.is_ok() && !matches!(status, Ok(Some(_))) {
            ctx.violation(format!(
                "enable (in another process, during a disable) returned Ok and a write \
                 went through its journal ({:?}); the disable then returned {:?}, and the \
                 tree has no journal: status {:?}",
                wrote.as_ref().map_err(|e| e.kind()),
                disabled.as_ref().map_err(|e| e.kind()),
                status.as_ref().map(|s| s.is_some())
            ));
        }
        Ok(())
    }
    check(&Workload {
        name: "disable-paused-enable-elsewhere",
        opts,
        setup,
        run,
        deterministic: false,
        recovery_sparsity: 1,
    });
}

/// A `disable` that fails right after its closing sync (the call after it fails): the
/// closed leftover 4684de9 is about.
fn make_closed_leftover(ctx: &Ctx) {
    let off = closing_sync_offset(ctx);
    let n0 = ctx.sim.calls().len() as u64;
    ctx.sim.set_fault(Some(Fault {
        at: n0 + off + 1,
        kind: FaultKind::Errno(5),
    }));
    let r = journal::disable(ROOT, &ctx.opts);
    assert!(ctx.sim.fault_fired().is_some() && r.is_err(), "{r:?}");
    ctx.sim.set_fault(None);
}

/// No fault in the run. Two `enable`s raced on a tree with a closed leftover: when
/// `enable` removed a closed leftover (4684de9), the first read its header (closed),
/// the second removed it, made a new journal and E went through it; the first then
/// removed that journal by name. Now `enable` never removes a journal: on a closed one
/// it fails with `Conflict`, changing nothing (in any process); `disable` finishes it
/// (in another process only under the journal's users lock: not while this one, whose
/// disable failed, has it open), and then `enable` makes a new one that E goes through.
#[test]
fn an_enable_does_not_remove_the_journal_a_concurrent_enable_made() {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        make_closed_leftover(ctx);
        let other = other_process(ctx);
        for opts in [&ctx.opts, &other] {
            match journal::enable(ROOT, opts, jopts()) {
                Err(e) if e.kind() == statefile::ErrorKind::Conflict => {}
                r => ctx.violation(format!(
                    "enable on a closed leftover returned {:?}, not Conflict",
                    r.map(drop).map_err(|e| e.to_string())
                )),
            }
        }
        // Another process cannot finish it while this one (whose disable failed) has
        // it open; this one can.
        match journal::disable(ROOT, &other) {
            Err(e) if e.kind() == statefile::ErrorKind::LockTimeout => {}
            r => ctx.violation(format!(
                "disable in another process, while the journal is open here, returned {:?}",
                r.map(drop).map_err(|e| e.to_string())
            )),
        }
        journal::disable(ROOT, &ctx.opts)?;
        journal::enable(ROOT, &other, jopts())?;
        write(ctx, "a.json", "E")?;
        match journal::status(ROOT, &other) {
            Ok(Some(s)) if s.records > 0 => {}
            st => ctx.violation(format!(
                "after disable finished the leftover and enable made a journal, E left no \
                 record: {:?}",
                st.map(|s| s.map(|s| s.records)).map_err(|e| e.to_string())
            )),
        }
        Ok(())
    }
    check(&Workload {
        name: "enable-on-a-closed-leftover",
        opts,
        setup,
        run,
        deterministic: true,
        recovery_sparsity: 1,
    });
}
