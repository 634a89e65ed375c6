//! rev15 review of c9dde71: the helper threads that block in `flock` for a waiting head
//! (when another process holds a document's lock) come from a per-process pool (an
//! idle thread waits `HELPER_IDLE` = 5 s for the next job, at most `MAX_HELPERS` = 64
//! alive, state reset in a forked child).
//!
//! Every scenario runs in a child process of its own (`child_entry`), so that the
//! threads and descriptors counted are the scenario's alone, not another test's. The
//! "other process" holding a lock is another open file description of the lock file
//! (a `File` of the test's own, `flock`ed), as `lock_helpers.rs` does: the kernel
//! treats it exactly as it would another process's.
//!
//! The fork scenarios (a child forked while a helper is blocked, a child in a nested
//! pid namespace) need `fork(2)`, which the workspace's `unsafe_code = "forbid"` keeps
//! out of Rust tests: they are in crates/statefile-py/tests/test_rev15_review.py,
//! through the Python binding (the processes that fork: gunicorn, multiprocessing).
//!
//! A passing test is evidence; a failing one is a finding.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use statefile::{Doc, ErrorKind, Options, Receipt};

/// `lock.rs`'s `MAX_HELPERS`.
const MAX_HELPERS: usize = 64;
/// `lock.rs`'s `HELPER_IDLE`.
const HELPER_IDLE: Duration = Duration::from_secs(5);

/// How many of this process's threads are named `statefile-flock` (the helpers).
fn flock_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "statefile-flock")
        .count()
}

/// How many of this process's descriptors are open on `file`.
fn fds_on(file: &Path) -> usize {
    let want = std::fs::canonicalize(file).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| *target == want)
        .count()
}

/// Another open file description of `lock`, holding its `flock` (as another process).
fn hold(lock: &Path) -> File {
    let f = File::open(lock).unwrap();
    f.lock().unwrap();
    f
}

/// Whether the lock on `lock` is free: another open file description gets it at once
/// (and lets go).
fn free(lock: &Path) -> bool {
    let f = File::open(lock).unwrap();
    let got = f.try_lock().is_ok();
    drop(f);
    got
}

fn doc(path: &Path, timeout: Duration) -> Doc<u64> {
    Doc::open_with(path, Options::new().lock_timeout(timeout)).unwrap()
}

/// `n` documents `d0.json`.. in `dir`, written once (so their lock files exist): their
/// paths and lock files.
fn documents(dir: &Path, n: usize) -> Vec<(PathBuf, PathBuf)> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("d{i}.json"));
            doc(&path, Duration::from_secs(5)).write(&0).unwrap();
            (path, dir.join(format!(".d{i}.json.lock")))
        })
        .collect()
}

/// Poll `cond` every millisecond until it holds; false if it did not by `limit`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Write `value` to `path` (timeout `timeout`) while another open file description
/// holds its lock for `held`: the outcome and how long the write took.
fn write_while_held(
    path: &Path,
    lock: &Path,
    value: u64,
    held: Duration,
    timeout: Duration,
) -> (statefile::Result<Receipt>, Duration) {
    let holder = hold(lock);
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(held);
        holder.unlock().unwrap();
    });
    let t = Instant::now();
    let r = doc(path, timeout).write(&value);
    let took = t.elapsed();
    releaser.join().unwrap();
    (r, took)
}

/// The child side: `SF_CHILD_ROLE` names the scenario, the first argument is a fresh
/// directory. A scenario panics (the child fails) on a finding.
#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn child_entry() {
    let Some((role, args)) = common::child_role() else {
        return;
    };
    let dir = PathBuf::from(&args[0]);
    match role.as_str() {
        "bound" => bound(&dir),
        "saturated" => saturated(&dir),
        "boundary" => boundary(&dir, args[1].parse().unwrap()),
        "two-jobs-one-idle" => two_jobs_one_idle(&dir),
        "idle-end" => idle_end(&dir),
        "storm" => storm(&dir),
        "given-up-then-free" => given_up_then_free(&dir),
        other => panic!("unknown role {other}"),
    }
}

/// Run scenario `role` in a child process (killed after `limit`: a hang is a failure).
fn scenario(role: &str, extra: &[String], limit: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![dir.path().to_str().unwrap().to_owned()];
    args.extend_from_slice(extra);
    let mut c = common::child(role, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + limit;
    while c.try_wait().unwrap().is_none() {
        if Instant::now() >= end {
            c.kill().unwrap();
            let out = c.wait_with_output().unwrap();
            panic!(
                "scenario {role} {extra:?} hung (killed after {limit:?}):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "scenario {role} {extra:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------
// Bounds under hostile load.

/// 150 documents, each held by "another process", each with a writer waiting here:
/// never more than 64 helper threads; the heads beyond those poll; every write lands
/// once the holders let go, and afterwards no descriptor of any lock file stays open.
#[test]
fn a_hundred_and_fifty_contended_documents_use_at_most_64_threads_and_all_writes_land() {
    scenario("bound", &[], Duration::from_secs(120));
}

fn bound(dir: &Path) {
    const N: usize = 150;
    let docs = documents(dir, N);
    let holders: Vec<File> = docs.iter().map(|(_, lock)| hold(lock)).collect();
    let go = Arc::new(Barrier::new(N + 1));
    let writers: Vec<_> = docs
        .iter()
        .enumerate()
        .map(|(i, (path, _))| {
            let (path, go) = (path.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                doc(&path, Duration::from_secs(60)).write(&(i as u64 + 1))
            })
        })
        .collect();
    go.wait();
    assert!(
        eventually(Duration::from_secs(20), || flock_threads() == MAX_HELPERS),
        "the waits did not start {MAX_HELPERS} helpers: {}",
        flock_threads()
    );
    let mut most = 0;
    let sample_end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < sample_end {
        most = most.max(flock_threads());
    }
    assert!(writers.iter().all(|w| !w.is_finished()));
    let released = Instant::now();
    drop(holders);
    for (i, w) in writers.into_iter().enumerate() {
        w.join()
            .unwrap()
            .unwrap_or_else(|e| panic!("write {i}: {e}"));
        most = most.max(flock_threads());
    }
    println!(
        "all {N} writes landed {:?} after the release",
        released.elapsed()
    );
    assert!(most <= MAX_HELPERS, "{most} helper threads at once");
    for (i, (path, lock)) in docs.iter().enumerate() {
        assert_eq!(
            doc(path, Duration::from_secs(5)).read().unwrap(),
            i as u64 + 1
        );
        assert_eq!(
            fds_on(lock),
            0,
            "a descriptor of {} stayed open",
            lock.display()
        );
        assert!(free(lock), "{} is still locked", lock.display());
    }
}

/// 70 documents whose holders never let go, each abandoned by a head that timed out:
/// 64 helper threads are blocked for good. A wait on another document then polls and
/// gets the lock as soon as it is free; when one abandoned lock is let go, its helper
/// wins with nobody waiting, lets go at once, and is the idle thread the next wait is
/// queued to (the `idle > queue.len()` path while 63 threads stay blocked).
#[test]
fn with_64_helpers_blocked_for_good_other_waits_poll_and_a_freed_helper_is_reused() {
    scenario("saturated", &[], Duration::from_secs(120));
}

fn saturated(dir: &Path) {
    const N: usize = 70;
    let docs = documents(dir, N + 2);
    let holders: Vec<File> = docs[..N].iter().map(|(_, lock)| hold(lock)).collect();
    for (path, _) in &docs[..N] {
        let e = doc(path, Duration::from_millis(20)).write(&1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LockTimeout);
    }
    assert!(
        eventually(Duration::from_secs(5), || flock_threads() == MAX_HELPERS),
        "{} helper threads, not {MAX_HELPERS}",
        flock_threads()
    );
    // Past the bound: the head polls (backoff capped at 8 ms).
    let (path, lock) = &docs[N];
    let (r, took) = write_while_held(
        path,
        lock,
        7,
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    r.unwrap();
    assert!(
        took < Duration::from_secs(2),
        "the polling wait took {took:?}"
    );
    assert!(flock_threads() <= MAX_HELPERS);
    // The first abandoned document got a helper: let its holder go with nobody waiting.
    let (_, lock0) = &docs[0];
    holders[0].unlock().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || fds_on(lock0) == 1),
        "the helper that won {} with nobody waiting kept its descriptor",
        lock0.display()
    );
    assert!(
        free(lock0),
        "the helper that won with nobody waiting kept the lock"
    );
    // 63 threads blocked, one idle: the next wait is queued to it.
    let (path, lock) = &docs[N + 1];
    let (r, took) = write_while_held(
        path,
        lock,
        8,
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    r.unwrap();
    assert!(took < Duration::from_secs(2), "the wait took {took:?}");
    assert_eq!(flock_threads(), MAX_HELPERS);
    drop(holders);
    assert_eq!(doc(&docs[N].0, Duration::from_secs(5)).read().unwrap(), 7);
    assert_eq!(
        doc(&docs[N + 1].0, Duration::from_secs(5)).read().unwrap(),
        8
    );
}

// ---------------------------------------------------------------------------------
// The hand-over to an idle thread.

/// A job handed to idle threads just as their HELPER_IDLE runs out (the offsets sweep
/// the moment they went idle, 8 threads at a time): every wait still ends when the
/// holder lets go, none waits out its deadline.
#[test]
fn jobs_handed_over_as_idle_threads_time_out_are_all_run() {
    // In parallel (each child mostly sleeps): offsets -8 ms .. +7 ms around the end.
    let kids: Vec<_> = (-8i64..8)
        .map(|ms| {
            std::thread::spawn(move || {
                scenario(
                    "boundary",
                    &[(ms * 1000).to_string()],
                    Duration::from_secs(60),
                )
            })
        })
        .collect();
    for k in kids {
        k.join().unwrap();
    }
}

fn boundary(dir: &Path, offset_us: i64) {
    const K: usize = 8;
    let docs = documents(dir, K);
    let contended = |value: u64, timeout: Duration| {
        let go = Arc::new(Barrier::new(K));
        let writers: Vec<_> = docs
            .iter()
            .map(|(path, _)| {
                let (path, go) = (path.clone(), go.clone());
                std::thread::spawn(move || {
                    go.wait();
                    doc(&path, timeout).write(&value)
                })
            })
            .collect();
        writers
    };
    let holders: Vec<File> = docs.iter().map(|(_, l)| hold(l)).collect();
    let writers = contended(1, Duration::from_secs(10));
    assert!(eventually(Duration::from_secs(10), || flock_threads() == K));
    drop(holders);
    for w in writers {
        w.join().unwrap().unwrap();
    }
    // The helpers went idle just before their heads returned.
    let idle_since = Instant::now();
    let holders: Vec<File> = docs.iter().map(|(_, l)| hold(l)).collect();
    let at = if offset_us >= 0 {
        idle_since + HELPER_IDLE + Duration::from_micros(offset_us as u64)
    } else {
        idle_since + HELPER_IDLE - Duration::from_micros(offset_us.unsigned_abs())
    };
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
    let started = Instant::now();
    let writers = contended(2, Duration::from_secs(4));
    std::thread::sleep(Duration::from_millis(100));
    drop(holders);
    for (i, w) in writers.into_iter().enumerate() {
        let r = w.join().unwrap();
        let r = r.unwrap_or_else(|e| {
            panic!(
                "offset {offset_us} us: write {i} failed {:?} after the holders let go: {e}",
                started.elapsed()
            )
        });
        assert!(
            r.lock_wait < Duration::from_secs(2),
            "waited {:?}",
            r.lock_wait
        );
    }
    assert!(flock_threads() <= K);
}

/// One idle thread, two waits at once: the second is not queued behind the first (one
/// thread blocked in one flock cannot run both): a second thread starts; both writes
/// land when their holders let go.
#[test]
fn two_waits_with_one_idle_thread_get_two_threads() {
    scenario("two-jobs-one-idle", &[], Duration::from_secs(60));
}

fn two_jobs_one_idle(dir: &Path) {
    let docs = documents(dir, 3);
    let (r, _) = write_while_held(
        &docs[2].0,
        &docs[2].1,
        1,
        Duration::from_millis(100),
        Duration::from_secs(5),
    );
    r.unwrap();
    assert_eq!(flock_threads(), 1, "the helper is kept idle");
    // Doc 0 stays held for 3 s, doc 1 for 0.3 s: if doc 1's job were queued behind doc
    // 0's flock, it would wait 3 s.
    let h0 = hold(&docs[0].1);
    let h1 = hold(&docs[1].1);
    let (p0, p1) = (docs[0].0.clone(), docs[1].0.clone());
    let w0 = std::thread::spawn(move || doc(&p0, Duration::from_secs(10)).write(&2));
    let w1 = std::thread::spawn(move || doc(&p1, Duration::from_secs(10)).write(&3));
    assert!(eventually(Duration::from_secs(5), || flock_threads() == 2));
    std::thread::sleep(Duration::from_millis(300));
    h1.unlock().unwrap();
    let r1 = w1.join().unwrap().unwrap();
    assert!(
        r1.lock_wait < Duration::from_secs(2),
        "the second wait waited {:?}",
        r1.lock_wait
    );
    std::thread::sleep(Duration::from_millis(2700));
    h0.unlock().unwrap();
    w0.join().unwrap().unwrap();
    drop((h0, h1));
    for (_, lock) in &docs {
        assert_eq!(fds_on(lock), 0);
        assert!(free(lock));
    }
}

/// After HELPER_IDLE without another job, the kept threads end: an idle process keeps
/// no helper thread and no lock file descriptor.
#[test]
fn kept_helpers_end_after_helper_idle() {
    scenario("idle-end", &[], Duration::from_secs(60));
}

fn idle_end(dir: &Path) {
    let docs = documents(dir, 4);
    let holders: Vec<File> = docs.iter().map(|(_, l)| hold(l)).collect();
    let writers: Vec<_> = docs
        .iter()
        .map(|(p, _)| {
            let p = p.clone();
            std::thread::spawn(move || doc(&p, Duration::from_secs(10)).write(&1))
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || flock_threads() == 4));
    drop(holders);
    for w in writers {
        w.join().unwrap().unwrap();
    }
    assert_eq!(flock_threads(), 4, "the helpers are kept");
    for (_, lock) in &docs {
        assert_eq!(fds_on(lock), 0);
    }
    assert!(
        eventually(HELPER_IDLE + Duration::from_secs(3), || flock_threads()
            == 0),
        "{} helper threads still alive after {:?}",
        flock_threads(),
        HELPER_IDLE + Duration::from_secs(3)
    );
}

// ---------------------------------------------------------------------------------
// Adoption, give-ups and races.

/// A head gives up on a lock another process holds; its helper stays blocked. When the
/// holder lets go with nobody waiting, the helper (a pool thread now, which lives on)
/// must let go at once: no descriptor kept, the lock free, and the thread goes on to
/// serve the next wait.
#[test]
fn a_helper_that_wins_after_its_head_gave_up_lets_go_and_is_reused() {
    scenario("given-up-then-free", &[], Duration::from_secs(60));
}

fn given_up_then_free(dir: &Path) {
    let docs = documents(dir, 2);
    let (path, lock) = &docs[0];
    let holder = hold(lock);
    for _ in 0..3 {
        let e = doc(path, Duration::from_millis(30)).write(&1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LockTimeout);
    }
    assert_eq!(
        flock_threads(),
        1,
        "the heads that gave up share one helper"
    );
    assert_eq!(fds_on(lock), 2, "the holder's descriptor and the helper's");
    holder.unlock().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || fds_on(lock) == 1),
        "the helper kept its descriptor after winning with nobody waiting"
    );
    assert!(free(lock), "the helper kept the lock");
    assert_eq!(
        flock_threads(),
        1,
        "the helper thread is kept for the next wait"
    );
    let (r, took) = write_while_held(
        &docs[1].0,
        &docs[1].1,
        5,
        Duration::from_millis(100),
        Duration::from_secs(5),
    );
    r.unwrap();
    assert!(took < Duration::from_secs(2));
    assert_eq!(flock_threads(), 1, "the kept thread served the next wait");
    drop(holder);
}

/// Many threads on a few documents with short timeouts (heads giving up, heads
/// adopting helpers, helpers winning with and without a head), while "another
/// process" takes and lets go of each lock: nothing hangs (the pool mutex, a document's
/// helper slot and a helper's state are taken in every order the code has), and at the
/// end no lock is held, no descriptor open, and every document is writable.
#[test]
fn a_storm_of_give_ups_and_adoptions_neither_hangs_nor_leaves_a_lock_held() {
    scenario("storm", &[], Duration::from_secs(120));
}

fn storm(dir: &Path) {
    const DOCS: usize = 4;
    let docs = Arc::new(documents(dir, DOCS));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, timed_out) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut threads = Vec::new();
    for t in 0..16u64 {
        let (docs, stop, ok, timed_out) =
            (docs.clone(), stop.clone(), ok.clone(), timed_out.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (path, _) = &docs[(i >> 33) as usize % DOCS];
                let timeout = Duration::from_millis(1 + (i >> 40) % 40);
                match doc(path, timeout).write(&i) {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) if e.kind() == ErrorKind::LockTimeout => {
                        timed_out.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => panic!("{e}"),
                };
            }
        }));
    }
    for t in 0..DOCS as u64 {
        let (docs, stop) = (docs.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = t + 99;
            while !stop.load(Ordering::Relaxed) {
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (_, lock) = &docs[(i >> 33) as usize % DOCS];
                let h = hold(lock);
                std::thread::sleep(Duration::from_micros((i >> 40) % 20_000));
                drop(h);
                std::thread::sleep(Duration::from_micros((i >> 20) % 3_000));
            }
        }));
    }
    let end = Instant::now() + Duration::from_secs(4);
    let mut most = 0;
    while Instant::now() < end {
        most = most.max(flock_threads());
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    println!(
        "{} writes, {} timeouts, at most {most} helper threads",
        ok.load(Ordering::Relaxed),
        timed_out.load(Ordering::Relaxed)
    );
    assert!(timed_out.load(Ordering::Relaxed) > 0 && ok.load(Ordering::Relaxed) > 0);
    assert!(most <= MAX_HELPERS, "{most} helper threads");
    // Every helper left behind wins (nobody holds the locks now) and lets go.
    for (path, lock) in docs.iter() {
        assert!(
            eventually(Duration::from_secs(5), || fds_on(lock) == 0),
            "a descriptor of {} stayed open",
            lock.display()
        );
        assert!(free(lock), "{} stayed locked", lock.display());
        doc(path, Duration::from_millis(100)).write(&1).unwrap();
    }
}
