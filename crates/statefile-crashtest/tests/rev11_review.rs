//! Review (rev11) of 5466535: a header write whose sync fails is written and synced
//! again, else the journal is poisoned; `Journal::open` no longer creates the side files
//! and re-reads the header after opening them; `enable` syncs `.statefile/` before the
//! link.
//!
//! - Poisoning does not undo the header's state: the copy whose sync failed twice is
//!   still the newest *as read through the cache* (`ErrnoKeepPages`: clean, never
//!   written), while the disk holds its older bytes. `statefile recover`
//!   (`roll_back_poison`, then a checkpoint that finds `page.end == header.tail` through
//!   the cache and writes nothing) clears the poison and never rewrites the header. The
//!   next header (here the disable's closing one) goes over the other copy, the newest
//!   *durable* header: rev10's loss, one failed sync later.
//!   Likewise a disable whose closing header and revert both failed twice ("run
//!   `statefile journal disable` again"): the disable run again closes over the newest
//!   durable copy.
//! - The side files are opened before the header is read again: a process whose open
//!   read the header before a disable closed it, and opens the side files after the
//!   disable removed them, fails with NotFound ("was .statefile/ changed by hand?")
//!   instead of taking the journal for none: a read or write of the tree fails during a
//!   legit disable.
//! - A journal file whose side files are missing (a journal enabled by statefile before
//!   5466535, whose enable did not sync `.statefile/` before the link, after a power
//!   loss that kept the link; or a side file removed by hand) can no longer be opened,
//!   and no API makes them again: writes, `disable`, `recover` fail; `enable` says it is
//!   enabled.

use std::path::Path;
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    after_header_write, disable_failing_its_closing_write, header_writes, step_before, stop_where,
    syncs,
};
use serde_json::{Value, json};
use statefile::journal::{self, JournalOptions};
use statefile::{Doc, Options, Scan, ScanMode};
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

/// Another process on the same simulated machine (the registry is per `Fs` instance).
fn other_process(ctx: &Ctx) -> Options {
    ctx.opts.clone().fs(Arc::new(ctx.sim.clone()))
}

fn write_with(ctx: &Ctx, opts: &Options, name: &str, v: &str) -> statefile::Result<()> {
    let id = ctx.begin(name, &ver(v));
    Doc::<Value>::open_with(Ctx::path(name), opts.clone())
        .expect("valid name")
        .write(&ver(v))?;
    ctx.ack(id);
    Ok(())
}

fn check(w: &Workload, torn: bool) {
    let r = explore(
        w,
        Budget {
            omissions: true,
            torn,
            random_per_point: 0,
            seed: 1,
            recovery_crash_every: 0,
        },
    );
    println!("{}", r.line());
    assert_eq!(r.violations(), 0, "{:#?}", r.examples);
}

/// C1 (ok), B, C2 whose header sync fails with the page kept, and whose retry's sync
/// (the write again, then the sync: calls +1, +2) fails the same way: poisoned.
fn checkpoint_whose_header_sync_fails_twice(ctx: &Ctx) {
    journal::checkpoint(ROOT, &ctx.opts).expect("first checkpoint");
    write_with(ctx, &ctx.opts, "a.json", "B").expect("write B");
    let opts = ctx.opts.clone();
    let (t, pause, at) = stop_where(
        ctx,
        move || journal::checkpoint(ROOT, &opts).map(drop),
        |c| syncs(c) == 1 && after_header_write(c),
    );
    ctx.sim.set_fault(Some(Fault {
        at,
        kind: FaultKind::ErrnoKeepPages(5),
    }));
    let again = ctx.sim.pause_at(at + 2);
    pause.resume();
    assert!(again.wait_paused(Duration::from_secs(30)), "no retry");
    assert_eq!(ctx.sim.fault_fired(), Some(Call::SyncFile));
    assert_eq!(
        ctx.sim.calls()[at as usize + 1],
        Call::Write,
        "the retry's write"
    );
    ctx.sim.set_fault(Some(Fault {
        at: at + 2,
        kind: FaultKind::ErrnoKeepPages(5),
    }));
    again.resume();
    let r = t.join().expect("the checkpointing thread");
    assert_eq!(ctx.sim.fault_fired(), Some(Call::SyncFile));
    assert!(
        r.is_err(),
        "the checkpoint whose header sync failed twice returned Ok"
    );
    ctx.sim.set_fault(None);
}

/// The journal is poisoned by C2's header; the user does what the error says:
/// `statefile recover` (a repair scan of the tree). Then `disable`, stopped after its
/// closing header's write (before its sync); W from another process finds the header
/// closed and writes a.json outside the journal, acknowledged; X likewise to c.json
/// (so that the crash images after W's acknowledgement differ). A power loss before
/// the closing sync completes leaves a header that is not closed with a tail before
/// B's record (C1's, or the enable's if torn): B is replayed over W.
#[test]
fn a_checkpoint_header_that_poisoned_the_journal_does_not_let_the_closing_header_after_recover_replay_records_over_a_write()
 {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        checkpoint_whose_header_sync_fails_twice(ctx);
        let refused = write_with(ctx, &ctx.opts, "c.json", "P");
        println!("write after the poison: {refused:?}");
        let recovered = Scan::new(ScanMode::Repair)
            .options(ctx.opts.clone())
            .run(Path::new(ROOT))?;
        println!("recover: healthy {}", !recovered.needs_repair());
        let opts = ctx.opts.clone();
        let (disabler, pause, _) = stop_where(
            ctx,
            move || journal::disable(ROOT, &opts).map(drop),
            after_header_write,
        );
        let wrote = write_with(ctx, &other_process(ctx), "a.json", "W");
        let also = write_with(ctx, &other_process(ctx), "c.json", "X");
        pause.resume();
        let disabled = disabler.join().expect("the disabling thread");
        println!("disable after recover: {disabled:?}; W: {wrote:?}; X: {also:?}");
        wrote.and(also)
    }
    check(
        &Workload {
            name: "checkpoint-header-poisons-then-recover-then-disable-write-elsewhere",
            opts,
            setup,
            run,
            deterministic: false,
            recovery_sparsity: 1,
        },
        true,
    );
}

/// Whether `path` is in the live tree of `sim`.
fn exists(sim: &SimFs, path: &str) -> bool {
    sim.image().tree().contains_key(path)
}

/// rev10's race, judged on P's result: P (another process, its first use of the
/// journal) writes b.json; its open is stopped right after it read the header (not
/// closed yet); the disable is stopped once it removed `journal-users` (the first side
/// file it removes that `Journal::open` opens), then P goes on. 5466535 means P to take
/// the journal for none ("closed meanwhile") and write without it; but it opens the side
/// files before it reads the header again, and `journal-shm` is gone: NotFound, and
/// the write fails with "... is missing although the journal exists: was .statefile/
/// changed by hand?". Reads of the tree fail the same way.
#[test]
fn a_write_whose_open_overlaps_the_removal_of_the_side_files_does_not_fail() {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        ctx.doc("a.json").read()?;
        let p = other_process(ctx);
        let (writer, p_pause, _) = {
            let p = p.clone();
            let ctx = ctx.clone();
            stop_where(
                &ctx.clone(),
                move || write_with(&ctx, &p, "b.json", "P"),
                |c| c.ends_with(&[Call::Open, Call::Other, Call::Read, Call::Read]),
            )
        };
        let sim = ctx.sim.clone();
        let opts = ctx.opts.clone();
        let (disabler, d_pause, _) = stop_where(
            ctx,
            move || journal::disable(ROOT, &opts).map(drop),
            move |_| !exists(&sim, "/data/.statefile/journal-users"),
        );
        p_pause.resume();
        let wrote_p = writer.join().expect("the writing thread");
        d_pause.resume();
        let disabled = disabler.join().expect("the disabling thread");
        println!("P {wrote_p:?}; disable {disabled:?}");
        if let Err(e) = &wrote_p {
            ctx.violation(format!(
                "a write whose open read the header just before a disable closed the \
                 journal failed instead of writing without it: {e}"
            ));
        }
        drop(p);
        Ok(())
    }
    check(
        &Workload {
            name: "open-during-removal-write-fails",
            opts,
            setup,
            run,
            deterministic: false,
            recovery_sparsity: 1,
        },
        false,
    );
}

/// A tree whose journal file is there without `journal-ckpt` (any side file does): the
/// state a power loss could leave after an enable by statefile before 5466535 (it
/// synced `.statefile/` only after the link; the simulator's crash images may keep the
/// link and drop the creations), or a side file removed by hand. Before 5466535 the
/// first open made it again (empty: it is a lock file; `journal-shm` is rebuilt by the
/// recovery, `journal-users` is a lock file too). Now every write and read of the tree
/// fails, and no API brings the tree back: `disable` and `recover` fail opening it,
/// `enable` reports it enabled.
#[test]
fn a_journal_whose_side_file_is_missing_can_be_used_or_repaired_through_the_api() {
    let sim = SimFs::new();
    statefile::fs::Fs::open_dir(&sim, Path::new("/"))
        .and_then(|root| root.create_dir(std::ffi::OsStr::new(&ROOT[1..])))
        .expect("mkdir /data");
    {
        let o = opts().fs(Arc::new(sim.clone()));
        Doc::<Value>::open_with(Ctx::path("a.json"), o.clone())
            .unwrap()
            .write(&ver("0"))
            .expect("write 0");
        journal::enable(ROOT, &o, jopts()).expect("enable");
        Doc::<Value>::open_with(Ctx::path("a.json"), o.clone())
            .unwrap()
            .write(&ver("A"))
            .expect("write A");
    }
    // A reboot: the durable tree only, without journal-ckpt.
    let sim = SimFs::from_image(sim.image());
    statefile::fs::Fs::open_dir(&sim, Path::new("/data/.statefile"))
        .and_then(|d| d.remove_file(std::ffi::OsStr::new("journal-ckpt")))
        .expect("remove journal-ckpt");
    let o = opts().fs(Arc::new(sim.clone()));
    let doc = Doc::<Value>::open_with(Ctx::path("a.json"), o.clone()).unwrap();
    let read = doc.read().map(drop);
    let wrote = doc.write(&ver("B")).map(drop);
    let enabled = journal::enable(ROOT, &o, jopts()).map(drop);
    let disabled = journal::disable(ROOT, &o).map(drop);
    let recovered = Scan::new(ScanMode::Repair)
        .options(o.clone())
        .run(Path::new(ROOT));
    let recovered = recovered.map(|r| r.needs_repair());
    let again = doc.write(&ver("C")).map(drop);
    println!(
        "read {read:?}\nwrite {wrote:?}\nenable {enabled:?}\ndisable {disabled:?}\n\
         recover (needs repair) {recovered:?}\nwrite again {again:?}"
    );
    assert!(
        wrote.is_ok() || again.is_ok(),
        "a journal without journal-ckpt cannot be written, nor fixed by enable/disable/recover: \
         write {wrote:?}; enable {enabled:?}; disable {disabled:?}; recover {recovered:?}; \
         write again {again:?}"
    );
}

fn short_timeout_opts() -> Options {
    Options::new()
        .backups(0)
        .lock_timeout(Duration::from_millis(300))
}

/// A disable whose closing header fails to be written (its write) and whose revert's
/// sync fails twice, the page kept both times (the sync, then the retry's sync): the
/// journal is poisoned, and the revert's copy reads as the newest through the cache
/// (not closed, the highest sequence number) while the disk holds that copy's older
/// bytes (the enable's header, its tail before A's record). Every injection point is
/// found by stepping the disable one call at a time: the closing header's write and the
/// revert's are the second and third header writes (the first is the disable's
/// checkpoint's), the syncs are the first two after the revert's write. Returns the
/// disable's result.
fn disable_whose_revert_poisons_the_journal(ctx: &Ctx) -> statefile::Result<()> {
    let (disabler, next, n0) = disable_failing_its_closing_write(ctx);
    // The revert's sync: the first after its write.
    let (pause, revert_sync) = step_before(ctx, next, n0, |c, next| {
        header_writes(c) == 3 && next == Call::SyncFile
    });
    assert_eq!(
        ctx.sim.fault_fired(),
        Some(Call::Write),
        "the closing header's write"
    );
    ctx.sim.set_fault(Some(Fault {
        at: revert_sync,
        kind: FaultKind::ErrnoKeepPages(5),
    }));
    let next = ctx.sim.pause_at(revert_sync + 1);
    pause.resume();
    // The retry: the page written again, then synced.
    let (pause, retry_sync) = step_before(ctx, next, revert_sync as usize + 1, |_, next| {
        next == Call::SyncFile
    });
    assert_eq!(
        ctx.sim.fault_fired(),
        Some(Call::SyncFile),
        "the revert's sync"
    );
    assert_eq!(
        &ctx.sim.calls()[revert_sync as usize + 1..],
        &[Call::Write],
        "the revert's retry writes its page again, then syncs"
    );
    ctx.sim.set_fault(Some(Fault {
        at: retry_sync,
        kind: FaultKind::ErrnoKeepPages(5),
    }));
    pause.resume();
    let r = disabler.join().expect("the disabling thread");
    assert_eq!(
        ctx.sim.fault_fired(),
        Some(Call::SyncFile),
        "the revert's retry's sync"
    );
    ctx.sim.set_fault(None);
    r
}

/// rev11's "disable again after a poisoning header", on today's path. The disable's
/// revert poisons the journal (above); its error says "run `statefile journal disable`
/// again", which refuses while poisoned ("run `statefile recover`"). `statefile
/// recover` (a repair scan) clears the poison, and must first make the revert's copy
/// what the disk holds (`rewrite_newest_header`): else the next header, the disable's
/// closing one, goes over the other copy, the newest durable header (the first
/// disable's checkpoint). `disable` is then stopped after its closing header's write;
/// W and X, from another process, find the header closed and write outside the journal,
/// acknowledged. A power loss that tears the closing write must leave a header whose
/// tail is after A's record: else A is replayed over W.
#[test]
fn a_disable_whose_revert_poisoned_the_journal_is_finished_after_recover_without_replaying_records_over_a_write()
 {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        let first = disable_whose_revert_poisons_the_journal(ctx);
        println!("disable: {first:?}");
        match &first {
            // It says the journal was poisoned, and that recover comes first.
            Err(e)
                if e.to_string().contains("again to finish the disable")
                    && e.to_string().contains("run `statefile recover`, then") => {}
            r => {
                ctx.violation(format!(
                    "a disable whose closing header failed and whose revert's sync failed \
                     twice was not left in progress, saying to recover first: {r:?}"
                ));
                return Ok(());
            }
        }
        let again = journal::disable(ROOT, &ctx.opts).map(drop);
        println!("disable again, poisoned: {again:?}");
        let recovered = Scan::new(ScanMode::Repair)
            .options(ctx.opts.clone())
            .run(Path::new(ROOT))?;
        println!("recover: healthy {}", !recovered.needs_repair());
        let opts = ctx.opts.clone();
        let (disabler, pause, _) = stop_where(
            ctx,
            move || journal::disable(ROOT, &opts).map(drop),
            after_header_write,
        );
        let wrote = write_with(ctx, &other_process(ctx), "a.json", "W");
        let also = write_with(ctx, &other_process(ctx), "c.json", "X");
        pause.resume();
        let finished = disabler.join().expect("the disabling thread");
        println!("disable after recover: {finished:?}; W {wrote:?}; X {also:?}");
        if let Err(e) = &finished {
            ctx.violation(format!(
                "after `statefile recover`, the disable left in progress could not be \
                 finished: {e}"
            ));
        }
        wrote.and(also)
    }
    check(
        &Workload {
            name: "disable-revert-poisons-recover-disable-write-elsewhere",
            opts: short_timeout_opts,
            setup,
            run,
            deterministic: false,
            recovery_sparsity: 1,
        },
        true,
    );
}
