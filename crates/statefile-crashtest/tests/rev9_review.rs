//! Review (rev9) of 406869b and 15f496a: a disable whose closing header could not be
//! synced writes a newer header that is not closed (the "revert"), synced, before it
//! gives up; a closed leftover is removed by `disable` only under the journal's users
//! lock taken exclusive, and only if its journal file is still the one looked at.
//!
//! - The revert is written over the copy that is the newest *on disk*. With the page
//!   of the failed closing write kept in the cache (`FaultKind::ErrnoKeepPages`, as
//!   Linux keeps it, marked clean, never written), every read takes that closed copy
//!   for the newest, and `write_header_flags` puts the revert into "the other copy":
//!   the one holding the disable's checkpoint, the only durable header with the new
//!   tail. A power loss that tears that write leaves the copy on disk from before the
//!   checkpoint: an older tail, and a replay of records already checkpointed. Between
//!   the failed closing sync and the revert, the header reads closed to every process,
//!   so a write meanwhile goes outside the journal, acknowledged, without a record; the
//!   replay from the older tail then brings the document's last record back over it.
//! - `remove_closed_leftover` checks the journal file's identity, then removes the
//!   files by name, the journal file first: between that unlink and the others, an
//!   `enable` (which now sees no journal) makes a new journal that keeps the old
//!   `shm`, `users` and `ckpt` (it creates them only if missing), and the disable then
//!   unlinks them. A process that opened the new journal meanwhile holds the unlinked
//!   `users` and `shm`; the next process creates new ones, takes the lock exclusive,
//!   believes itself alone, and both append to the one journal file from two shared
//!   states: one overwrites the other's acknowledged record.
//! - A disable whose revert also failed stays in progress. If the revert's write failed
//!   the header reads closed (the kept page), and the handles of every process that had
//!   the journal open are never marked gone (the shared state says "disabling", not
//!   "disabled"): they hold the users lock shared for as long as they run, and
//!   `disable` from any other process (the CLI the error message sends the user to)
//!   fails with LockTimeout, while `enable` refuses with Conflict.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    after_header_write, before_header_write, disable_failing_its_closing_write, header_writes,
    step_before, stop_before, stop_where,
};

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

/// Another process on the same simulated machine (the registry is per `Fs` instance).
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

/// The first seam call (counted from the start of a `disable` in a fresh process on a
/// copy of the tree as it is now) before which the journal file is gone: the call after
/// its unlink. Found by pausing a probe disable before each call in turn.
fn call_after_log_unlink(ctx: &Ctx) -> u64 {
    let image = ctx.sim.image();
    for k in 0..1000u64 {
        let probe = SimFs::from_image(image.clone());
        let popts = ctx.opts.clone().fs(Arc::new(probe.clone()));
        let pause = probe.pause_at(probe.calls().len() as u64 + k);
        let t = std::thread::spawn(move || journal::disable(ROOT, &popts).map(drop));
        let paused = pause.wait_paused(Duration::from_secs(5));
        let tree = probe.image().tree();
        pause.resume();
        let _ = t.join();
        assert!(paused, "the probe disable never removed the journal file");
        // The journal file is now removed last (the side files first), so this is the
        // end of the removal: `enable` made nothing before it.
        if !tree.contains_key("/data/.statefile/journal") {
            return k;
        }
    }
    panic!("no call found");
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

/// The disable's closing sync fails (the page kept in the cache); the disable is
/// stopped right after that, before its revert. Meanwhile the header reads closed, and
/// W, written by `run_write`, goes outside the journal without a record, acknowledged.
/// The revert then goes into the copy holding the disable's checkpoint (the cache says
/// the other copy, closed, is the newest); torn by a power loss, it leaves on disk the
/// copy from before that checkpoint, whose tail is before A's record: the replay puts
/// A back over W.
fn revert_torn_after_a_write_that_saw_closed(
    ctx: &Ctx,
    run_write: fn(&Ctx) -> statefile::Result<()>,
) -> statefile::Result<()> {
    let off = closing_sync_offset(ctx);
    let n0 = ctx.sim.calls().len() as u64;
    ctx.sim.set_fault(Some(Fault {
        at: n0 + off,
        kind: FaultKind::ErrnoKeepPages(5),
    }));
    let pause = ctx.sim.pause_at(n0 + off + 1);
    let disabler = {
        let opts = ctx.opts.clone();
        std::thread::spawn(move || journal::disable(ROOT, &opts).map(drop))
    };
    assert!(
        pause.wait_paused(Duration::from_secs(30)),
        "the disable did not reach the call after its closing sync"
    );
    assert_eq!(ctx.sim.fault_fired(), Some(Call::SyncFile));
    ctx.sim.set_fault(None);
    let wrote = run_write(ctx);
    pause.resume();
    // The closing header is written and synced again after its failed sync, so the
    // disable may well finish: what counts is that W survives every crash state.
    let _ = disabler.join().expect("the disabling thread");
    wrote
}

/// W from another process (it finds the journal closed: `Journal::open` says none).
#[test]
fn a_torn_revert_header_does_not_replay_checkpointed_records_over_a_write_made_meanwhile() {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        revert_torn_after_a_write_that_saw_closed(ctx, |ctx| {
            write_with(ctx, &other_process(ctx), "a.json", "W")
        })
    }
    check(
        &Workload {
            name: "disable-closing-sync-fails-write-elsewhere-revert-torn",
            opts,
            setup,
            run,
            deterministic: false,
            recovery_sparsity: 1,
        },
        true,
    );
}

/// W from this process, another thread: its append finds the disable in progress and
/// `wait_disabled` takes the closed header for the end of it.
#[test]
fn a_torn_revert_header_does_not_replay_checkpointed_records_over_a_write_that_waited() {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        revert_torn_after_a_write_that_saw_closed(ctx, |ctx| {
            write_with(ctx, &ctx.opts, "a.json", "W")
        })
    }
    check(
        &Workload {
            name: "disable-closing-sync-fails-write-here-revert-torn",
            opts,
            setup,
            run,
            deterministic: false,
            recovery_sparsity: 1,
        },
        true,
    );
}

/// A closed leftover nobody has open: a disable (in a process that then ends) closed
/// the journal and marked the shared state, and failed to remove the journal file.
fn make_closed_leftover_nobody_holds(ctx: &Ctx) {
    let px = other_process(ctx);
    let probe_ctx_opts = px.clone();
    // The call that unlinks the journal file in a normal disable: the one before the
    // first call at which it is gone.
    let unlink = {
        let image = ctx.sim.image();
        let mut found = None;
        for k in 0..1000u64 {
            let probe = SimFs::from_image(image.clone());
            // As in the run: this process (ctx.opts) has the journal open.
            let here = ctx.opts.clone().fs(Arc::new(probe.clone()));
            Doc::<Value>::open_with(Ctx::path("a.json"), here.clone())
                .expect("valid name")
                .read()
                .expect("probe read");
            let popts = probe_ctx_opts.clone().fs(Arc::new(probe.clone()));
            let pause = probe.pause_at(probe.calls().len() as u64 + k);
            let t = std::thread::spawn(move || journal::disable(ROOT, &popts).map(drop));
            let paused = pause.wait_paused(Duration::from_secs(5));
            let tree = probe.image().tree();
            pause.resume();
            let _ = t.join();
            drop(here);
            assert!(paused, "the probe disable never removed the journal file");
            if !tree.contains_key("/data/.statefile/journal") {
                found = Some(k - 1);
                break;
            }
        }
        found.expect("the unlink of the journal file")
    };
    // px has not opened the journal yet: its disable makes the same calls as the probe.
    let n0 = ctx.sim.calls().len() as u64;
    ctx.sim.set_fault(Some(Fault {
        at: n0 + unlink,
        kind: FaultKind::Errno(5),
    }));
    let r = journal::disable(ROOT, &px);
    assert!(ctx.sim.fault_fired().is_some() && r.is_err(), "{r:?}");
    ctx.sim.set_fault(None);
    drop(px);
}

/// Setup as above, then the closed leftover (setup is not recorded). This process
/// (`ctx.opts`) let go of its handle: the disable marked the shared state disabled.
fn setup_leftover(ctx: &Ctx) {
    setup(ctx);
    make_closed_leftover_nobody_holds(ctx);
    // A read by this process sees the shared state disabled: its handle is gone, and
    // the next look for the journal drops it (and its lock).
    ctx.doc("a.json").read().expect("read a.json");
}

/// No fault in the run. `disable` finishes the closed leftover (it holds the users lock
/// exclusive and checked the journal file's identity) and is stopped right after it
/// unlinked the journal file. Another process enables journal mode (Ok: no journal
/// there) and starts writing E (it opens the new journal with the old `users` and
/// `shm`, and waits for the lock). The disable goes on, unlinks `shm`, `users`, `ckpt`
/// (the new journal's now) and returns Ok. E goes through the new journal; a third
/// process, finding no `users` nor `shm`, makes new ones, is alone by its lock, writes
/// F through the same journal file; the second process writes G: its shared state
/// knows nothing of F, and G's record goes where F's is. F is acknowledged; a commit
/// syncs only the journal: a power loss that does not keep F's rename loses F.
#[test]
fn finishing_a_closed_leftover_does_not_unlink_the_files_of_a_journal_enabled_meanwhile() {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        let k = call_after_log_unlink(ctx);
        let n0 = ctx.sim.calls().len() as u64;
        let pause = ctx.sim.pause_at(n0 + k);
        let disabler = {
            let opts = ctx.opts.clone();
            std::thread::spawn(move || journal::disable(ROOT, &opts).map(drop))
        };
        assert!(
            pause.wait_paused(Duration::from_secs(30)),
            "the disable did not reach the call after the journal file's unlink"
        );
        let p2 = other_process(ctx);
        let enabled = journal::enable(ROOT, &p2, jopts());
        let writer = {
            let ctx = ctx.clone();
            let p2 = p2.clone();
            std::thread::spawn(move || write_with(&ctx, &p2, "a.json", "E"))
        };
        // Let the writer open the new journal (it then waits for the users lock).
        std::thread::sleep(Duration::from_millis(500));
        pause.resume();
        let disabled = disabler.join().expect("the disabling thread");
        let e = writer.join().expect("the writing thread");
        let p3 = other_process(ctx);
        let f = write_with(ctx, &p3, "a.json", "F");
        let g = write_with(ctx, &p2, "b.json", "G");
        let status = journal::status(ROOT, &p3);
        let files: Vec<String> = ctx
            .sim
            .image()
            .tree()
            .keys()
            .filter(|p| p.starts_with("/data/.statefile/"))
            .cloned()
            .collect();
        // What happened, for the report (the judge finds the loss of F).
        println!(
            "enable {:?}; disable {:?}; E {:?}, F {:?}, G {:?}; status (records, end) {:?}; \
             journal files {files:?}",
            enabled.as_ref().map(drop).map_err(|e| e.to_string()),
            disabled.as_ref().map_err(|e| e.to_string()),
            e.as_ref().map_err(|e| e.to_string()),
            f.as_ref().map_err(|e| e.to_string()),
            g.as_ref().map_err(|e| e.to_string()),
            status
                .as_ref()
                .map(|s| s.as_ref().map(|s| (s.records, s.end_lsn)))
                .map_err(|e| e.to_string()),
        );
        if let Ok(Some(s)) = &status
            && e.is_ok()
            && f.is_ok()
            && g.is_ok()
            && s.records < 3
        {
            ctx.violation(format!(
                "E, F and G went through the journal enabled during the disable, \
                 acknowledged; it holds {} records",
                s.records
            ));
        }
        Ok(())
    }
    check(
        &Workload {
            name: "disable-again-paused-after-log-unlink-enable-elsewhere",
            opts,
            setup: setup_leftover,
            run,
            deterministic: false,
            recovery_sparsity: 1,
        },
        false,
    );
}

/// The disable's closing sync fails (page kept) and so does its revert: `second` is
/// the revert's call to fail, counted from the call after the closing sync (its header
/// reads: 2, 2 more in `write_header_flags`, then the write, then the sync). Returns
/// the disable's result.
fn disable_whose_revert_fails(ctx: &Ctx, second: u64, kind: FaultKind) -> statefile::Result<()> {
    let off = closing_sync_offset(ctx);
    let n0 = ctx.sim.calls().len() as u64;
    ctx.sim.set_fault(Some(Fault {
        at: n0 + off,
        kind: FaultKind::ErrnoKeepPages(5),
    }));
    let pause = ctx.sim.pause_at(n0 + off + 1);
    let disabler = {
        let opts = ctx.opts.clone();
        std::thread::spawn(move || journal::disable(ROOT, &opts).map(drop))
    };
    assert!(pause.wait_paused(Duration::from_secs(30)));
    assert_eq!(ctx.sim.fault_fired(), Some(Call::SyncFile));
    // The revert reads the two header copies once (calls 1 and 2 after the failed
    // sync), then writes (3) and syncs (4): two calls fewer than `second` counts (the
    // header was read again first).
    ctx.sim.set_fault(Some(Fault {
        at: n0 + off + second - 1,
        kind,
    }));
    pause.resume();
    let r = disabler.join().expect("the disabling thread");
    assert_eq!(
        ctx.sim.fault_fired(),
        Some(if second == 4 {
            Call::Write
        } else {
            Call::SyncFile
        }),
        "the revert's fault did not hit its write (4) or its sync (5)"
    );
    ctx.sim.set_fault(None);
    r
}

fn short_timeout_opts() -> Options {
    Options::new()
        .backups(0)
        .lock_timeout(Duration::from_millis(300))
}

/// The revert's write fails: the disable stays in progress, and every read of the
/// header (the closed copy kept in the cache) says closed. Writers go on outside the
/// journal; `enable` refuses (Conflict: "run `statefile journal disable`"). But that
/// `disable`, from any process that did not have the journal open (the CLI), fails
/// with LockTimeout ("try again once it has let go") for as long as this process runs:
/// its handle is never dropped (the shared state says "disabling", not "disabled", so
/// nothing marks it gone), and it holds the users lock shared. Journal mode cannot be
/// finished nor enabled again from outside the processes that had it open.
#[test]
#[ignore = "known limit: a process that had the journal open keeps its users lock until it exits, so `disable` from another process cannot finish a disable left in progress while it runs (no write is lost: writers take the closed header as disabled); `disable` run in that process, or a restart, finishes it"]
fn a_disable_left_in_progress_can_be_finished_from_another_process() {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        let r = disable_whose_revert_fails(ctx, 4, FaultKind::Errno(5));
        assert!(r.is_err(), "{r:?}");
        // Writers are not stuck: the header reads closed.
        write_with(ctx, &ctx.opts, "a.json", "E")?;
        let cli = other_process(ctx);
        let again = journal::disable(ROOT, &cli);
        let enabled = journal::enable(ROOT, &cli, jopts());
        if again.is_err() {
            ctx.violation(format!(
                "after a disable left in progress (its revert failed), `disable` from \
                 another process returned {:?} while the first process lives; enable \
                 then returned {:?}",
                again.as_ref().map(drop).map_err(|e| e.to_string()),
                enabled.as_ref().map(drop).map_err(|e| e.to_string()),
            ));
        }
        Ok(())
    }
    check(
        &Workload {
            name: "disable-revert-write-fails-disable-elsewhere",
            opts: short_timeout_opts,
            setup,
            run,
            deterministic: false,
            recovery_sparsity: 1,
        },
        false,
    );
}

/// The disable's closing header write fails, and so does its revert's: both at their
/// write (the call each makes after reading the two header copies), found by stepping
/// the disable one call at a time. A failed write leaves the journal as it was (nothing
/// to sync, so nothing poisoned): the header reads not closed, the disable stays in
/// progress ("run `statefile journal disable` again"). Returns the disable's result.
///
/// Before 5466535 the same state came from two failed syncs with the pages kept (the
/// closing header's, then its revert's: the revert's page read as the newest copy over
/// older bytes on disk). Since, a failed header sync is written and synced again, and a
/// second failure poisons the journal, which refuses every later header: such a disable
/// is left in progress only poisoned (see rev11_review.rs: `statefile recover` first).
fn disable_whose_closing_and_revert_writes_fail(ctx: &Ctx) -> statefile::Result<()> {
    let (disabler, next, n0) = disable_failing_its_closing_write(ctx);
    // The revert: the next header write, over the same copy.
    let (pause, revert) = step_before(ctx, next, n0, |c, next| {
        header_writes(c) == 2 && before_header_write(c, next)
    });
    assert_eq!(
        ctx.sim.fault_fired(),
        Some(Call::Write),
        "the closing header's write"
    );
    ctx.sim.set_fault(Some(Fault {
        at: revert,
        kind: FaultKind::Errno(5),
    }));
    pause.resume();
    let r = disabler.join().expect("the disabling thread");
    assert_eq!(
        ctx.sim.fault_fired(),
        Some(Call::Write),
        "the revert's write"
    );
    ctx.sim.set_fault(None);
    let calls = ctx.sim.calls();
    assert_eq!(
        header_writes(&calls[n0..]),
        3,
        "the disable wrote its checkpoint's header, the closing one, the revert: {:?}",
        &calls[n0..]
    );
    r
}

/// The disable's closing header and its revert both fail to be written: the disable
/// stays in progress with a header that is not closed. Writers in every process wait
/// for it (LockTimeout: the header is not closed, so a write outside the journal could
/// be replayed over). `disable` from another process (the CLI) finishes it: it is
/// stopped after its closing header's write, W from a third process meanwhile finds the
/// header closed and writes outside the journal, acknowledged; then E and F after the
/// disable. A power loss anywhere (torn writes included) keeps every acknowledged write:
/// the closing header goes over the older copy, never over the newest durable one (the
/// first disable's checkpoint), whose tail is after A's record.
#[test]
fn a_disable_left_in_progress_with_an_open_header_is_finished_by_disable_elsewhere() {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        let r = disable_whose_closing_and_revert_writes_fail(ctx);
        match &r {
            Err(e) if e.to_string().contains("again to finish the disable") => {}
            r => {
                ctx.violation(format!(
                    "a disable whose closing header and revert both failed to be written \
                     was not left in progress: {r:?}"
                ));
                return Ok(());
            }
        }
        let cli = other_process(ctx);
        match write_with(ctx, &cli, "a.json", "X") {
            Err(e) if e.kind() == statefile::ErrorKind::LockTimeout => {}
            r => ctx.violation(format!(
                "a write during the disable left in progress (header not closed): {r:?}"
            )),
        }
        let c = cli.clone();
        let (finisher, pause, _) = stop_where(
            ctx,
            move || journal::disable(ROOT, &c).map(drop),
            after_header_write,
        );
        let wrote = write_with(ctx, &other_process(ctx), "a.json", "W");
        pause.resume();
        let finished = finisher.join().expect("the disabling thread");
        println!("disable elsewhere: {finished:?}; W {wrote:?}");
        if let Err(e) = &finished {
            ctx.violation(format!(
                "`disable` from another process did not finish the disable left in \
                 progress: {e}"
            ));
        }
        wrote?;
        write_with(ctx, &ctx.opts, "a.json", "E")?;
        write_with(ctx, &cli, "a.json", "F")?;
        Ok(())
    }
    check(
        &Workload {
            name: "disable-closing-and-revert-writes-fail-disable-elsewhere",
            opts: short_timeout_opts,
            setup,
            run,
            deterministic: false,
            recovery_sparsity: 1,
        },
        true,
    );
}

/// The construction the test above had before 5466535: the disable's closing header
/// sync fails with the page kept, then the next header sync likewise (then the
/// revert's). Since, that next sync is the retry's (the closing page written again):
/// the journal is poisoned, the revert refused, and the header reads closed (the kept
/// page) to every process: a disable left in progress, but not with an open header;
/// writers take it for disabled and go on outside the journal (the disk's newest copy
/// is the checkpoint's, its tail after A's record: nothing replayed over them). A
/// disable left in progress with an open header now takes failed writes (above).
#[test]
fn two_kept_page_sync_failures_of_a_closing_header_no_longer_leave_it_open() {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        let opts = ctx.opts.clone();
        let n0 = ctx.sim.calls().len();
        let (disabler, pause, closing_sync) = stop_before(
            ctx,
            move || journal::disable(ROOT, &opts).map(drop),
            |c, next| header_writes(c) == 2 && next == Call::SyncFile,
        );
        ctx.sim.set_fault(Some(Fault {
            at: closing_sync,
            kind: FaultKind::ErrnoKeepPages(5),
        }));
        let next = ctx.sim.pause_at(closing_sync + 1);
        pause.resume();
        let (pause, second) = step_before(ctx, next, closing_sync as usize + 1, |_, next| {
            next == Call::SyncFile
        });
        let between = ctx.sim.calls()[closing_sync as usize + 1..].to_vec();
        ctx.sim.set_fault(Some(Fault {
            at: second,
            kind: FaultKind::ErrnoKeepPages(5),
        }));
        pause.resume();
        let r = disabler.join().expect("the disabling thread");
        assert_eq!(ctx.sim.fault_fired(), Some(Call::SyncFile));
        ctx.sim.set_fault(None);
        let calls = ctx.sim.calls();
        println!(
            "calls between the two syncs: {between:?}; header writes {}; disable {r:?}",
            header_writes(&calls[n0..])
        );
        if between != [Call::Write] {
            ctx.violation(format!(
                "the second sync is not the closing header's retry (calls between: {between:?})"
            ));
        }
        if header_writes(&calls[n0..]) != 2 {
            ctx.violation(
                "a revert was written after the closing header's sync failed twice".into(),
            );
        }
        match &r {
            Err(e) if e.to_string().contains("again to finish the disable") => {}
            r => ctx.violation(format!("the disable was not left in progress: {r:?}")),
        }
        // Open, a writer would wait for the disable (LockTimeout, as above); closed,
        // it goes on outside the journal.
        let x = write_with(ctx, &other_process(ctx), "a.json", "X");
        println!("X {x:?}");
        if let Err(e) = x {
            ctx.violation(format!(
                "the header of a disable whose closing sync failed twice (page kept) does \
                 not read closed: a write elsewhere failed: {e}"
            ));
        }
        Ok(())
    }
    check(
        &Workload {
            name: "disable-closing-sync-fails-twice-kept-reads-closed",
            opts: short_timeout_opts,
            setup,
            run,
            deterministic: false,
            recovery_sparsity: 1,
        },
        true,
    );
}
