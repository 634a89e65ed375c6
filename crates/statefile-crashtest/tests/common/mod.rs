//! Helpers shared by the tests that look at a document's backups in a simulated store:
//! `/data/a.json`, its versions `{"v": n}`, and its backups by name.
#![allow(dead_code)] // each test binary uses some of them

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use statefile::Options;
use std::time::Duration;

use statefile_crashtest::explore::{Ctx, ROOT};
use statefile_crashtest::sim::{Call, Fault, FaultKind, Pause, SimFs};

/// Options keeping `backups` backups, on `sim`.
pub fn sim_opts(sim: &SimFs, backups: usize) -> Options {
    Options::new().backups(backups).fs(Arc::new(sim.clone()))
}

/// The bytes of version `n`: `{"v": n}`, as the library writes it.
pub fn v(n: i32) -> Vec<u8> {
    statefile::to_vec(&json!({ "v": n }), statefile::Format::Pretty).unwrap()
}

/// `v<n>` for the bytes of a version [`v`] makes, else the bytes; `<missing>` for none.
pub fn name_of(b: Option<&Vec<u8>>) -> String {
    b.map_or("<missing>".into(), |b| {
        (0..100).find(|n| v(*n) == *b).map_or_else(
            || format!("{:?}", String::from_utf8_lossy(b)),
            |n| format!("v{n}"),
        )
    })
}

/// What `/data/a.json`'s first `n` backups hold in `tree`, newest first.
pub fn backups_of(tree: &BTreeMap<String, Vec<u8>>, n: usize) -> Vec<String> {
    (1..=n)
        .map(|k| {
            let p = if k == 1 {
                "/data/.a.json.bak".to_string()
            } else {
                format!("/data/.a.json.bak.{k}")
            };
            name_of(tree.get(&p))
        })
        .collect()
}

/// Start `op` in a thread and stop it before the seam call that follows the first
/// prefix of its calls (counted from now) for which `at(calls)` holds, found by stepping
/// it one call at a time. Returns the thread, the pause it waits in, and the number of
/// that call.
pub fn stop_where(
    ctx: &Ctx,
    op: impl FnOnce() -> statefile::Result<()> + Send + 'static,
    at: impl Fn(&[Call]) -> bool,
) -> (
    std::thread::JoinHandle<statefile::Result<()>>,
    Arc<Pause>,
    u64,
) {
    let n0 = ctx.sim.calls().len();
    let mut cur = ctx.sim.pause_at(n0 as u64);
    let t = std::thread::spawn(op);
    loop {
        assert!(
            cur.wait_paused(Duration::from_secs(30)),
            "the op never got there"
        );
        let calls = ctx.sim.calls();
        if at(&calls[n0..]) {
            return (t, cur, calls.len() as u64);
        }
        let next = ctx.sim.pause_at(calls.len() as u64 + 1);
        cur.resume();
        cur = next;
    }
}

pub fn syncs(calls: &[Call]) -> usize {
    calls.iter().filter(|c| **c == Call::SyncFile).count()
}

/// A header write: the copies read (2), the write (after the poison check).
pub fn after_header_write(calls: &[Call]) -> bool {
    calls.ends_with(&[Call::Read, Call::Read, Call::Write])
}

/// With a thread stopped in `cur` (its calls counted from `n0`), step it one call at a
/// time until `at(calls since n0, the call it is about to make)` holds. Returns the
/// pause it then waits in and the number of that next call (a fault set `at` it hits
/// that very call).
pub fn step_before(
    ctx: &Ctx,
    mut cur: Arc<Pause>,
    n0: usize,
    at: impl Fn(&[Call], Call) -> bool,
) -> (Arc<Pause>, u64) {
    loop {
        assert!(
            cur.wait_paused(Duration::from_secs(30)),
            "the op never got there"
        );
        let calls = ctx.sim.calls();
        let next = cur.call().expect("a stopped thread names its call");
        if at(&calls[n0..], next) {
            return (cur, calls.len() as u64);
        }
        let p = ctx.sim.pause_at(calls.len() as u64 + 1);
        cur.resume();
        cur = p;
    }
}

/// Start `op` in a thread and stop it before the first of its calls for which
/// `at(its calls so far, that call's kind)` holds. Returns the thread, the pause it
/// waits in, and the number of that call.
pub fn stop_before(
    ctx: &Ctx,
    op: impl FnOnce() -> statefile::Result<()> + Send + 'static,
    at: impl Fn(&[Call], Call) -> bool,
) -> (
    std::thread::JoinHandle<statefile::Result<()>>,
    Arc<Pause>,
    u64,
) {
    let n0 = ctx.sim.calls().len();
    let cur = ctx.sim.pause_at(n0 as u64);
    let t = std::thread::spawn(op);
    let (pause, at) = step_before(ctx, cur, n0, at);
    (t, pause, at)
}

/// How many header writes (the pattern of [`after_header_write`]) `calls` holds.
pub fn header_writes(calls: &[Call]) -> usize {
    (1..=calls.len())
        .filter(|i| after_header_write(&calls[..*i]))
        .count()
}

/// Before a header write: the two copies read, the write next.
pub fn before_header_write(calls: &[Call], next: Call) -> bool {
    next == Call::Write && calls.ends_with(&[Call::Read, Call::Read])
}

/// Start `journal disable` of the tree at [`ROOT`] in a thread, its closing header's
/// write failing with EIO: the second header write (the first is its checkpoint's).
/// Returns the thread, the pause it waits in right after that write, and the number of
/// calls made before the disable (for [`step_before`]).
pub fn disable_failing_its_closing_write(
    ctx: &Ctx,
) -> (
    std::thread::JoinHandle<statefile::Result<()>>,
    Arc<Pause>,
    usize,
) {
    let opts = ctx.opts.clone();
    let n0 = ctx.sim.calls().len();
    let (disabler, pause, closing) = stop_before(
        ctx,
        move || statefile::journal::disable(ROOT, &opts).map(drop),
        |c, next| header_writes(c) == 1 && before_header_write(c, next),
    );
    ctx.sim.set_fault(Some(Fault {
        at: closing,
        kind: FaultKind::Errno(5),
    }));
    let next = ctx.sim.pause_at(closing + 1);
    pause.resume();
    (disabler, next, n0)
}
