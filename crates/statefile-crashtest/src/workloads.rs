//! The scenarios the explorer runs (issue 6, item 3).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use statefile::journal::{self, JournalOptions};
use statefile::{BackupRef, Options, Store};

use crate::explore::{Ctx, ROOT, Workload};

fn write(ctx: &Ctx, name: &str, v: Value) -> statefile::Result<()> {
    let id = ctx.begin(name, &v);
    ctx.doc(name).write(&v)?;
    ctx.ack(id);
    Ok(())
}

/// One replace of an existing document.
pub const ONE_REPLACE: Workload = Workload {
    name: "one replace",
    opts: || Options::new().backups(0),
    setup: |ctx| ctx.initial("a.json", &json!({"v": 0})),
    run: |ctx| write(ctx, "a.json", json!({"v": 1, "payload": "x".repeat(5000)})),
    deterministic: true,
    recovery_sparsity: 1,
};

/// Ten replaces in a row, keeping three backups.
pub const TEN_REPLACES: Workload = Workload {
    name: "10 replaces, 3 backups",
    opts: || Options::new().backups(3),
    setup: |ctx| ctx.initial("a.json", &json!({"v": 0})),
    run: |ctx| {
        for n in 1..=10 {
            write(ctx, "a.json", json!({"v": n}))?;
        }
        Ok(())
    },
    deterministic: true,
    recovery_sparsity: 1,
};

/// Read-modify-write (appends) with a backup.
pub const READ_MODIFY_WRITE: Workload = Workload {
    name: "read-modify-write, backups",
    opts: || Options::new().backups(1),
    setup: |ctx| ctx.initial("jobs.json", &json!({"items": []})),
    run: |ctx| {
        let doc = ctx.doc("jobs.json");
        for n in 0..3 {
            let mut id = None;
            doc.update(|v| {
                v["items"].as_array_mut().expect("array").push(json!(n));
                id = Some(ctx.begin("jobs.json", v));
                Ok(())
            })?;
            ctx.ack(id.expect("closure ran"));
        }
        Ok(())
    },
    deterministic: true,
    recovery_sparsity: 1,
};

/// Restore from the newest backup.
pub const RESTORE: Workload = Workload {
    name: "restore from backup",
    opts: || Options::new().backups(2),
    setup: |ctx| {
        ctx.initial("cfg.json", &json!({"good": true}));
        ctx.initial("cfg.json", &json!({"good": false}));
    },
    run: |ctx| {
        let bytes = statefile::to_vec(&json!({"good": true}), statefile::Format::Pretty)?;
        let id = ctx.begin_bytes("cfg.json", bytes);
        ctx.doc("cfg.json").restore(&BackupRef::NewestGood)?;
        ctx.ack(id);
        Ok(())
    },
    deterministic: true,
    recovery_sparsity: 1,
};

/// Two writers, each with its own handle, interleaved on one document.
pub const TWO_WRITERS: Workload = Workload {
    name: "two writers interleaved",
    opts: || Options::new().backups(1),
    setup: |ctx| ctx.initial("shared.json", &json!({"w": null})),
    run: |ctx| {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|w| {
                    s.spawn(move || {
                        for n in 0..3 {
                            write(ctx, "shared.json", json!({"w": w, "n": n}))?;
                        }
                        Ok::<(), statefile::Error>(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().expect("writer thread"))
        })
    },
    deterministic: false,
    recovery_sparsity: 1,
};

/// During setup: turn journal mode on for the store, with a small ring (16 KiB) so that
/// a few writes fill half of it and a checkpoint follows.
fn enable_journal(ctx: &Ctx) {
    enable_journal_with(ctx, false);
}

/// [`enable_journal`], committing by swapping files in if `swap`
/// ([`JournalOptions::swap`]).
fn enable_journal_with(ctx: &Ctx, swap: bool) {
    journal::enable(
        ROOT,
        &ctx.opts,
        JournalOptions {
            capacity: 16 << 10,
            swap,
            ..JournalOptions::default()
        },
    )
    .expect("enable the journal");
}

/// A value of about `n` bytes (a record larger than one 512-byte sector, so that a
/// torn journal write can keep a record's header and lose its bytes).
fn payload(tag: &str, n: usize) -> Value {
    json!({"tag": tag, "pad": "x".repeat(n)})
}

/// Journal mode: writes of two documents and a delete, each one record, one flush of
/// the journal and a rename without syncs.
pub const JOURNAL_WRITES: Workload = Workload {
    name: "journal: writes and a delete",
    opts: || Options::new().backups(1),
    setup: |ctx| {
        ctx.initial("a.json", &json!({"v": 0}));
        ctx.initial("b.json", &json!({"w": 0}));
        enable_journal(ctx);
    },
    run: |ctx| {
        write(ctx, "a.json", payload("a1", 900))?;
        write(ctx, "b.json", payload("b1", 700))?;
        write(ctx, "a.json", payload("a2", 600))?;
        let id = ctx.begin_delete("b.json");
        ctx.doc("b.json").delete()?;
        ctx.ack(id);
        Ok(())
    },
    deterministic: true,
    recovery_sparsity: 16,
};

/// Journal mode with a checkpoint in the middle: writes fill more than half of the
/// 16 KiB ring, so the write that crosses it runs a checkpoint (documents synced, then
/// the header), and the writes after it wrap around the ring.
pub const JOURNAL_CHECKPOINT: Workload = Workload {
    name: "journal: checkpoint in the middle",
    opts: || Options::new().backups(0),
    setup: |ctx| {
        ctx.initial("a.json", &json!({"v": 0}));
        ctx.initial("b.json", &json!({"w": 0}));
        enable_journal(ctx);
    },
    run: |ctx| {
        for n in 0..7 {
            let name = if n % 2 == 0 { "a.json" } else { "b.json" };
            write(ctx, name, payload(&format!("{name}{n}"), 2300))?;
        }
        Ok(())
    },
    deterministic: true,
    recovery_sparsity: 16,
};

/// Group commit: four threads' appends through one leader, two rounds, each round one
/// batch. The leader's change waits until the other three are queued behind it (each
/// started only once the one before it is queued), so the calls reach the file system
/// in the same order in every run, as fault injection needs.
///
/// A round is one attempted version (all four appends) acknowledged when the first
/// call returns: at every crash point an acknowledged round is all there, and an
/// unacknowledged one is all there or not at all. Under an injected fault the workload
/// checks its own invariant: the document holds exactly the appends of the calls that
/// succeeded (or got `Durability`: visible, durability unknown), in order; a failed
/// write fails every call of its batch.
pub const BATCHED: Workload = Workload {
    name: "group commit: 4 threads, 2 batches",
    opts: || Options::new().backups(1),
    setup: |ctx| ctx.initial("jobs.json", &json!({"items": []})),
    run: |ctx| {
        for round in 0..2 {
            batch_round(ctx, round, 4)?;
        }
        Ok(())
    },
    deterministic: true,
    recovery_sparsity: 1,
};

fn items_of(bytes: Option<Vec<u8>>) -> Vec<Value> {
    bytes
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

fn pretty(items: &[Value]) -> Vec<u8> {
    statefile::to_vec(&json!({ "items": items }), statefile::Format::Pretty).unwrap()
}

/// Block until `ready` holds, checking now and then.
fn until(ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "a batch never formed");
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn batch_round(ctx: &Ctx, round: usize, calls: usize) -> statefile::Result<()> {
    let name = "jobs.json";
    let path = std::path::PathBuf::from(Ctx::path(name));
    let base = items_of(ctx.peek(name));
    let item = |k: usize| json!(format!("r{round}-{k}"));
    let all: Vec<Value> = base.iter().cloned().chain((0..calls).map(item)).collect();
    let id = ctx.begin_bytes(name, pretty(&all));
    let acked = AtomicBool::new(false);
    let finished = AtomicUsize::new(0);
    let (entered, inside) = mpsc::channel::<()>();
    let (go, wait) = mpsc::channel::<()>();
    let append = |k: usize, gate: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>| {
        let r = ctx.doc(name).update(|v| {
            v["items"].as_array_mut().expect("array").push(item(k));
            if let Some((entered, wait)) = &gate {
                entered.send(()).expect("main waits");
                wait.recv().expect("main lets go");
            }
            Ok::<_, statefile::Error>(())
        });
        if r.is_ok() && !acked.swap(true, Ordering::SeqCst) {
            ctx.ack(id);
        }
        finished.fetch_add(1, Ordering::SeqCst);
        r.map(|_| ())
    };
    let results: Vec<statefile::Result<()>> = std::thread::scope(|s| {
        let (append, finished) = (&append, &finished);
        let leader = s.spawn(move || append(0, Some((entered, wait))));
        // The leader holds the baton (or failed before its change ran).
        until(|| matches!(inside.try_recv(), Ok(())) || finished.load(Ordering::SeqCst) == 1);
        let leader_in_batch = finished.load(Ordering::SeqCst) == 0;
        let mut others = Vec::new();
        for k in 1..calls {
            others.push(s.spawn(move || append(k, None)));
            // Each call is queued (or already done) before the next starts.
            let done_before = usize::from(!leader_in_batch);
            until(|| {
                statefile::mutants::queued(&path) + finished.load(Ordering::SeqCst) - done_before
                    == k
            });
        }
        let _ = go.send(());
        std::iter::once(leader)
            .chain(others)
            .map(|h| h.join().expect("no panic"))
            .collect()
    });
    // The document holds exactly the appends of the calls that succeeded, in order.
    let landed: Vec<Value> = base
        .iter()
        .cloned()
        .chain(results.iter().enumerate().filter_map(|(k, r)| match r {
            Ok(()) => Some(item(k)),
            Err(e) if e.kind() == statefile::ErrorKind::Durability => Some(item(k)),
            Err(_) => None,
        }))
        .collect();
    let want = pretty(&landed);
    let have = ctx.peek(name);
    if landed != all {
        // Under a fault: what should be there is learnt only now. `id` was acknowledged
        // at the first call that succeeded, but for `all`, which did not land: `want` is
        // what that call acknowledged (a batch that succeeds writes every append visible
        // before it, those of calls answered `Durability` included), so it replaces
        // `id` as the round's acknowledged version (the fault injector's judge allows
        // nothing older than the last one). No call succeeded: in flight, if anything.
        let landed_id = ctx.begin_bytes(name, want.clone());
        if results.iter().any(|r| r.is_ok()) {
            ctx.ack(landed_id);
        }
    }
    if have.as_deref() != Some(&want[..]) {
        ctx.violation(format!(
            "round {round}: the calls answered {:?}, but the document holds {:?}",
            results
                .iter()
                .map(|r| r.as_ref().map_err(|e| e.kind()))
                .collect::<Vec<_>>(),
            items_of(have)
        ));
    }
    results.into_iter().collect()
}

/// The two documents of [`JOURNAL_TRANSACTIONS`] hold 10 units between them.
fn sum_is_ten(tree: &std::collections::BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    let n = |name: &str| -> Result<i64, String> {
        let bytes = tree
            .get(&Ctx::path(name))
            .ok_or_else(|| format!("{name} is missing"))?;
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("{name}: {e}"))?;
        v["n"].as_i64().ok_or_else(|| format!("{name} has no n"))
    };
    let (a, b) = (n("a.json")?, n("b.json")?);
    if a + b == 10 {
        Ok(())
    } else {
        Err(format!(
            "half a transaction: a.json n = {a}, b.json n = {b}"
        ))
    }
}

/// Journal mode, two-document transactions: each moves units from a.json to b.json as
/// one record; after any crash both documents are new or both old (their sum is 10).
pub const JOURNAL_TRANSACTIONS: Workload = Workload {
    name: "journal: two-document transactions",
    opts: || Options::new().backups(1),
    setup: |ctx| {
        ctx.initial("a.json", &json!({"n": 10, "pad": "a".repeat(600)}));
        ctx.initial("b.json", &json!({"n": 0, "pad": "b".repeat(600)}));
        enable_journal(ctx);
        ctx.invariant(sum_is_ten);
    },
    run: |ctx| {
        let store = Store::open_with(ROOT, ctx.opts.clone())?;
        for k in 1..=3 {
            let a = json!({"n": 10 - 2 * k, "pad": "a".repeat(600)});
            let b = json!({"n": 2 * k, "pad": "b".repeat(600)});
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
};

/// A journal that swaps files in ([`JournalOptions::swap`]): writes of two documents
/// (backups on, so some swaps replace a file with a second link), a delete, and enough
/// bytes that a checkpoint runs in the middle and the writes after it wrap the ring.
pub const JOURNAL_SWAP: Workload = Workload {
    name: "journal (swap): writes, a delete, a checkpoint",
    opts: || Options::new().backups(1),
    setup: |ctx| {
        ctx.initial("a.json", &json!({"v": 0}));
        ctx.initial("b.json", &json!({"w": 0}));
        enable_journal_with(ctx, true);
    },
    run: |ctx| {
        for n in 0..6 {
            let name = if n % 2 == 0 { "a.json" } else { "b.json" };
            write(ctx, name, payload(&format!("{name}{n}"), 1900))?;
        }
        let id = ctx.begin_delete("b.json");
        ctx.doc("b.json").delete()?;
        ctx.ack(id);
        Ok(())
    },
    deterministic: true,
    recovery_sparsity: 16,
};

/// [`JOURNAL_TRANSACTIONS`] in a journal that swaps files in.
pub const JOURNAL_SWAP_TRANSACTIONS: Workload = Workload {
    name: "journal (swap): two-document transactions",
    opts: || Options::new().backups(0),
    setup: |ctx| {
        ctx.initial("a.json", &json!({"n": 10, "pad": "a".repeat(600)}));
        ctx.initial("b.json", &json!({"n": 0, "pad": "b".repeat(600)}));
        enable_journal_with(ctx, true);
        ctx.invariant(sum_is_ten);
    },
    run: JOURNAL_TRANSACTIONS.run,
    deterministic: true,
    recovery_sparsity: 16,
};

/// Journal mode (renaming), two backups kept, across an explicit checkpoint: two writes
/// (the first version replaced is kept as `.bak`, its bytes in the journal only), a
/// checkpoint (which must sync that backup before it frees the record: after it the
/// backups are settled, [`Ctx::settled`]), and a third write, whose rotation shifts
/// the synced versions to `.bak` and `.bak.2`. Small documents: the journal's torn
/// records are [`JOURNAL_WRITES`]'s business; this one is about the backups.
pub const JOURNAL_BACKUPS: Workload = Workload {
    name: "journal: backups across a checkpoint",
    opts: || Options::new().backups(2),
    setup: |ctx| {
        ctx.initial("a.json", &json!({"v": 0}));
        enable_journal(ctx);
    },
    run: |ctx| {
        write(ctx, "a.json", json!({"v": 1}))?;
        write(ctx, "a.json", json!({"v": 2}))?;
        journal::checkpoint(ROOT, &ctx.opts)?;
        ctx.settled();
        write(ctx, "a.json", json!({"v": 3}))
    },
    deterministic: true,
    recovery_sparsity: 16,
};

/// A version by name: the bytes of `{"v": name}`, so that writing one name twice
/// writes the same bytes (the same version) twice.
fn ver(name: &str) -> Value {
    json!({ "v": name })
}

/// Journal mode (renaming), three backups kept, versions that come back: A, B, A, C, B
/// through the journal, no checkpoint. The replay after a power loss puts the backups
/// back from the records; a version's bytes alone do not say which write made it.
pub const JOURNAL_REVERTS: Workload = Workload {
    name: "journal: versions that come back",
    opts: || Options::new().backups(3),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        enable_journal(ctx);
    },
    run: |ctx| {
        for v in ["A", "B", "A", "C", "B"] {
            write(ctx, "a.json", ver(v))?;
        }
        Ok(())
    },
    deterministic: true,
    recovery_sparsity: 16,
};

/// [`JOURNAL_REVERTS`] across a checkpoint: durable versions (the setup's, made with
/// the plain protocol) come back in the journal, and the journal's come back after
/// the checkpoint made them durable: setup 0, A, B; then A, B, A, a checkpoint, C, B.
pub const JOURNAL_REVERTS_CHECKPOINT: Workload = Workload {
    name: "journal: versions that come back, across a checkpoint",
    opts: || Options::new().backups(3),
    setup: |ctx| {
        for v in ["0", "A", "B"] {
            ctx.initial("a.json", &ver(v));
        }
        enable_journal(ctx);
    },
    run: |ctx| {
        for v in ["A", "B", "A"] {
            write(ctx, "a.json", ver(v))?;
        }
        journal::checkpoint(ROOT, &ctx.opts)?;
        ctx.settled();
        for v in ["C", "B"] {
            write(ctx, "a.json", ver(v))?;
        }
        Ok(())
    },
    deterministic: true,
    recovery_sparsity: 16,
};

/// During setup: the caller's own file `name` in the store's directory, holding `value`
/// (pretty) and synced, as a program writing its temp file for `replace_file` makes it.
fn caller_file(ctx: &Ctx, name: &str, value: &Value) {
    use statefile::fs::Fs;
    use std::io::Write;
    let bytes = statefile::to_vec(value, statefile::Format::Pretty).expect("JSON");
    let made = (|| -> std::io::Result<()> {
        let dir = ctx.sim.open_dir(std::path::Path::new(ROOT))?;
        let mut f = dir.create_new(std::ffi::OsStr::new(name), 0o644)?;
        f.write_all(&bytes)?;
        f.sync_all()
    })();
    made.expect("the caller's file");
}

/// Journal mode (renaming), two backups kept, and a file the caller wrote itself put in
/// place between journaled writes ([`statefile::replace_file`], as the Python package's
/// `atomicwrites` drop-in does): 0 (setup), A, B through the journal, then the caller's
/// C (written in the setup), then D. The put in place keeps no backup and is recorded as
/// a `direct` entry, after which a replay takes the backups as durable: A, kept as
/// `.bak` by B's rotation, had its bytes in the journal only.
pub const JOURNAL_INSTALL: Workload = Workload {
    name: "journal: a file put in place between writes, backups",
    opts: || Options::new().backups(2),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        enable_journal(ctx);
        caller_file(ctx, "c.json.part", &ver("C"));
    },
    run: |ctx| {
        for v in ["A", "B"] {
            write(ctx, "a.json", ver(v))?;
        }
        let bytes = statefile::to_vec(&ver("C"), statefile::Format::Pretty)?;
        let id = ctx.begin_bytes("a.json", bytes);
        statefile::replace_file(Ctx::path("c.json.part"), Ctx::path("a.json"), &ctx.opts)?;
        ctx.ack(id);
        write(ctx, "a.json", ver("D"))
    },
    deterministic: true,
    recovery_sparsity: 16,
};

/// Journal mode (renaming), two backups kept, and a document too large for the
/// journal's records written between journaled ones (outside the journal, then a
/// `direct` record): 0 (setup), A, B, a large C, D. The large write syncs the document
/// it keeps as `.bak` and the backups that move up, whose bytes may be in the journal
/// only; a failed sync of the document must leave it as it was.
pub const JOURNAL_DIRECT: Workload = Workload {
    name: "journal: a document too large for a record between writes, backups",
    opts: || Options::new().backups(2),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        enable_journal(ctx);
    },
    run: |ctx| {
        for v in ["A", "B"] {
            write(ctx, "a.json", ver(v))?;
        }
        // Over a quarter of the 16 KiB ring: too large for a record.
        write(ctx, "a.json", payload("C", 6000))?;
        write(ctx, "a.json", ver("D"))
    },
    deterministic: true,
    recovery_sparsity: 16,
};

/// [`JOURNAL_DIRECT`] and [`JOURNAL_INSTALL`] under `Durability::Data` (no directory
/// syncs outside journal mode; in journal mode a write is durable through the journal's
/// flush): 0 (setup), A, a large B, C, the caller's D put in place, E. A `direct` record
/// says the file and its directory are synced, and a replay leaves the file alone: the
/// directory must be synced under `Data` too, or a power loss brings back the file
/// before A, which no replay puts back.
pub const JOURNAL_DIRECT_DATA: Workload = Workload {
    name: "journal, Durability::Data: writes outside the journal between writes",
    opts: || {
        Options::new()
            .backups(1)
            .durability(statefile::Durability::Data)
    },
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        enable_journal(ctx);
        caller_file(ctx, "d.json.part", &ver("D"));
    },
    run: |ctx| {
        write(ctx, "a.json", ver("A"))?;
        write(ctx, "a.json", payload("B", 6000))?;
        write(ctx, "a.json", ver("C"))?;
        let bytes = statefile::to_vec(&ver("D"), statefile::Format::Pretty)?;
        let id = ctx.begin_bytes("a.json", bytes);
        statefile::replace_file(Ctx::path("d.json.part"), Ctx::path("a.json"), &ctx.opts)?;
        ctx.ack(id);
        write(ctx, "a.json", ver("E"))
    },
    deterministic: true,
    recovery_sparsity: 16,
};

/// Journal mode (renaming), two backups kept, disabled between writes: 0 (setup), A
/// and B through the journal, `journal disable` (a checkpoint, the journal closed and
/// removed; the backups settled), then C without it. A disable that fails after it
/// closed the journal must not leave the tree's writers waiting for it.
pub const JOURNAL_DISABLE: Workload = Workload {
    name: "journal: disabled between writes, backups",
    opts: || Options::new().backups(2),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        enable_journal(ctx);
    },
    run: |ctx| {
        for v in ["A", "B"] {
            write(ctx, "a.json", ver(v))?;
        }
        journal::disable(ROOT, &ctx.opts)?;
        ctx.settled();
        write(ctx, "a.json", ver("C"))
    },
    deterministic: true,
    recovery_sparsity: 16,
};

/// Every workload `tests/crash.rs` explores ([`JOURNAL_REVERTS`],
/// [`JOURNAL_REVERTS_CHECKPOINT`], [`JOURNAL_INSTALL`], [`JOURNAL_DIRECT`],
/// [`JOURNAL_DIRECT_DATA`] and [`JOURNAL_DISABLE`] are
/// explored by `tests/journal_backups.rs` alone, with the same budget: about 20 s each
/// in a debug build, kept out of the crash suite's time).
pub const ALL: [Workload; 12] = [
    ONE_REPLACE,
    TEN_REPLACES,
    READ_MODIFY_WRITE,
    RESTORE,
    TWO_WRITERS,
    BATCHED,
    JOURNAL_WRITES,
    JOURNAL_CHECKPOINT,
    JOURNAL_BACKUPS,
    JOURNAL_TRANSACTIONS,
    JOURNAL_SWAP,
    JOURNAL_SWAP_TRANSACTIONS,
];
