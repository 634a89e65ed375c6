//! Review (rev10) of b19a0bc: the disable's revert now goes over the copy its closing
//! header went to; journal files are removed side files first, the journal file last.
//!
//! The fix covers only the disable's own failed closing sync. Every other header write
//! (`write_header_flags`: a checkpoint's, and the disable's closing header itself)
//! still goes to `next_header_copy()` = 1 - the newest copy *as read through the
//! cache*. After a checkpoint's header sync fails with the page kept
//! (`FaultKind::ErrnoKeepPages`, Linux's behaviour: marked clean, never written), the
//! cache shows that checkpoint's header (the new tail) as the newest, while the disk
//! holds the older copy there; the newest *durable* header is the other copy. Worse, no
//! later checkpoint rewrites it: `checkpoint_locked` reads the tail through the cache,
//! finds `page.end == header.tail`, and returns Ok without writing anything. So:
//!
//! - the next header write (here the disable's closing header) goes over the newest
//!   durable copy, the one with the checkpoint tail before the failed checkpoint;
//! - between that write and its sync the header reads closed, so a write from another
//!   process goes outside the journal (durable, acknowledged, no record);
//! - a power loss before the closing sync (the write omitted: the durable tail is the
//!   one before the failed checkpoint) or during it (torn: the copy from before *that*
//!   checkpoint) leaves a header that is not closed, with a tail before B's record:
//!   the replay puts B back over W.

mod common;

use std::sync::Arc;

use common::{after_header_write, stop_where, syncs};
use serde_json::{Value, json};
use statefile::journal::{self, JournalOptions};
use statefile::{Doc, Options};
use statefile_crashtest::explore::{Budget, Ctx, ROOT, Workload, explore};
use statefile_crashtest::sim::{Call, Fault, FaultKind};

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

/// C1 (ok), B, C2 whose header sync fails with the page kept.
fn checkpoint_whose_header_sync_fails(ctx: &Ctx) {
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
    pause.resume();
    // The header write is tried again after its failed sync (the page written again,
    // then synced), so the checkpoint may well succeed: what counts is that no later
    // header goes over the newest durable copy.
    let _ = t.join().expect("the checkpointing thread");
    assert_eq!(ctx.sim.fault_fired(), Some(Call::SyncFile));
    ctx.sim.set_fault(None);
}

/// A checkpoint's header sync fails (page kept). Then `disable`: its checkpoint finds
/// nothing to do (the cached header already has the tail), and its closing header goes
/// over the copy that is the newest on disk (C1's). The disable is stopped before its
/// closing sync; W from another process finds the journal closed and writes outside it,
/// acknowledged (then, if `then_x`, X to c.json likewise). A power loss before that
/// sync completes leaves C1's header (the closing write omitted) or the enable's (torn):
/// both not closed, with a tail before B's record: B is replayed over W.
fn failed_checkpoint_then_disable_and_write_elsewhere(
    ctx: &Ctx,
    then_x: bool,
) -> statefile::Result<()> {
    checkpoint_whose_header_sync_fails(ctx);
    let opts = ctx.opts.clone();
    let (disabler, pause, _) = stop_where(
        ctx,
        move || journal::disable(ROOT, &opts).map(drop),
        after_header_write,
    );
    let wrote = write_with(ctx, &other_process(ctx), "a.json", "W");
    let also = if then_x {
        write_with(ctx, &other_process(ctx), "c.json", "X")
    } else {
        Ok(())
    };
    pause.resume();
    let disabled = disabler.join().expect("the disabling thread");
    println!("disable after the failed checkpoint: {disabled:?}; W: {wrote:?}");
    wrote.and(also)
}

/// X after W makes the crash images after W's acknowledgement differ from those before
/// it (see the next test for why that matters to the explorer).
#[test]
fn a_failed_checkpoint_header_sync_does_not_let_the_closing_header_replay_records_over_a_write_made_meanwhile()
 {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        failed_checkpoint_then_disable_and_write_elsewhere(ctx, true)
    }
    check(
        &Workload {
            name: "checkpoint-header-sync-fails-kept-then-disable-write-elsewhere",
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
fn exists(sim: &statefile_crashtest::sim::SimFs, path: &str) -> bool {
    sim.image().tree().contains_key(path)
}

/// This process has the journal open (a read) and disables it; another, P, writes
/// b.json = P, its first use of the journal. P is stopped right after its open read the
/// header (not closed yet), the disable right after it removed the side files (the
/// journal file not yet). Then P goes on, then the disable. If `reenable`, journal mode
/// is enabled again from a third process and a fourth writes a.json = Q.
fn open_during_removal(ctx: &Ctx, reenable: bool) -> statefile::Result<()> {
    ctx.doc("a.json").read()?;
    let p = other_process(ctx);
    // P's write opens the journal: a header read is open, inspect, two reads.
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
        // The first of the two gone (with the order of b19a0bc, `users`, the last side
        // file; with the earlier order, the journal file).
        move |_| {
            !exists(&sim, "/data/.statefile/journal-users")
                || !exists(&sim, "/data/.statefile/journal")
        },
    );
    p_pause.resume();
    let wrote_p = writer.join().expect("the writing thread");
    d_pause.resume();
    let disabled = disabler.join().expect("the disabling thread");
    let left: Vec<String> = ctx
        .sim
        .image()
        .tree()
        .keys()
        .filter(|k| k.starts_with("/data/.statefile"))
        .cloned()
        .collect();
    println!("P {wrote_p:?}; disable {disabled:?}; left {left:?}");
    if reenable {
        let enabled = journal::enable(ROOT, &other_process(ctx), jopts()).map(drop);
        let wrote_q = write_with(ctx, &other_process(ctx), "a.json", "Q");
        println!("enable {enabled:?}; Q {wrote_q:?}");
        if let Err(err) = &wrote_q {
            ctx.violation(format!(
                "after a disable during which another process opened the journal (it left \
                 {left:?}), journal mode enabled again ({enabled:?}), a write fails: {err}"
            ));
        }
    }
    drop(p);
    Ok(())
}

/// The removal order (side files first, the journal file last) lets `Journal::open`
/// in between create new side files (`create = true`): P's open read the header before
/// the disable closed it and opens the side files once the disable removed them. P is
/// alone by its new `users` lock, recovers from the closed header (`recover_alone`
/// does not look at FLAG_CLOSED), and builds a fresh page in its new `shm`: no
/// DISABLING/DISABLED flag. Its write then binds to the journal (the journal file is
/// still there) and commits into it, acknowledged (a commit syncs only the journal);
/// the disable unlinks the journal file. A power loss then keeps b.json's rename (the
/// directory is synced later) without its data, and no journal replays it: b.json is
/// empty. With the journal file removed first (before b19a0bc), P found the side files
/// (and the DISABLED flag) or no journal file: its write went outside the journal.
#[test]
fn a_write_whose_open_overlaps_the_removal_of_the_journal_files_is_not_lost() {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        open_during_removal(ctx, false)
    }
    check(
        &Workload {
            name: "open-during-removal-write",
            opts,
            setup,
            run,
            deterministic: false,
            recovery_sparsity: 1,
        },
        false,
    );
}

/// Same, then enable again and write. P's side files stay in `.statefile/` (not empty,
/// so not removed), with `journal-boot`; P holds the new `users` shared for as long as
/// it runs (its handle is never marked gone). `enable` keeps the side files it finds;
/// every process that opens the new journal finds `users` held and the page not its
/// journal's (salt), and after INVALID_GRACE fails with "the journal's shared state is
/// not valid ... was .statefile/ changed by hand?": no write in the tree works in
/// journal mode while P lives.
#[test]
fn a_journal_opened_during_the_removal_of_its_files_does_not_leave_side_files_that_break_the_next_journal()
 {
    fn run(ctx: &Ctx) -> statefile::Result<()> {
        open_during_removal(ctx, true)
    }
    check(
        &Workload {
            name: "open-during-removal-then-enable-write",
            opts,
            setup,
            run,
            deterministic: false,
            recovery_sparsity: 1,
        },
        false,
    );
}
