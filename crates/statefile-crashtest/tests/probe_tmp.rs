use serde_json::{Value, json};
use statefile::journal::{self, JournalOptions};
use statefile::{Durability, Options, Store};
use statefile_crashtest::explore::{Budget, Ctx, ROOT, Workload, explore, inject_faults};

fn write(ctx: &Ctx, name: &str, v: Value) -> statefile::Result<()> {
    let id = ctx.begin(name, &v);
    ctx.doc(name).write(&v)?;
    ctx.ack(id);
    Ok(())
}
fn en(ctx: &Ctx, swap: bool) {
    journal::enable(
        ROOT,
        &ctx.opts,
        JournalOptions {
            capacity: 16 << 10,
            swap,
            ..JournalOptions::default()
        },
    )
    .unwrap();
}
fn ver(n: &str) -> Value {
    json!({"v": n})
}
fn big(n: &str) -> Value {
    json!({"v": n, "pad": "x".repeat(6000)})
}

const NEW_DIR: Workload = Workload {
    name: "probe: new documents in new directories (journal)",
    opts: || Options::new().backups(1).create_dirs(true),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        en(ctx, false);
    },
    run: |ctx| {
        write(ctx, "jobs/1.json", ver("A"))?;
        write(ctx, "jobs/deep/2.json", ver("B"))?;
        write(ctx, "jobs/1.json", ver("C"))
    },
    deterministic: true,
    recovery_sparsity: 16,
};
const NEW_DIR_SWAP: Workload = Workload {
    name: "probe swap: new documents in new directories",
    opts: || Options::new().backups(1).create_dirs(true),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        en(ctx, true);
    },
    run: NEW_DIR.run,
    deterministic: true,
    recovery_sparsity: 16,
};
const NEW_DIR_PLAIN: Workload = Workload {
    name: "probe plain: new documents in new directories",
    opts: || Options::new().backups(1).create_dirs(true),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
    },
    run: NEW_DIR.run,
    deterministic: true,
    recovery_sparsity: 1,
};
const COND: Workload = Workload {
    name: "probe: write_if, create, delete_if (journal)",
    opts: || Options::new().backups(2),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        en(ctx, false);
    },
    run: |ctx| {
        let d = ctx.doc("a.json");
        let v0 = d.version()?;
        let a = ver("A");
        let id = ctx.begin("a.json", &a);
        let r = d.write_if(&v0, &a)?;
        ctx.ack(id);
        let id = ctx.begin_delete("a.json");
        d.delete_if(&r.version)?;
        ctx.ack(id);
        let b = ver("B");
        let id = ctx.begin("a.json", &b);
        d.create(&b)?;
        ctx.ack(id);
        Ok(())
    },
    deterministic: true,
    recovery_sparsity: 16,
};
const TX_MIX: Workload = Workload {
    name: "probe: transaction with a delete, a create in a subdirectory, a put (journal)",
    opts: || Options::new().backups(1).create_dirs(true),
    setup: |ctx| {
        ctx.initial("queue.json", &json!({"items": [1, 2]}));
        ctx.initial("old.json", &ver("0"));
        en(ctx, false);
    },
    run: |ctx| {
        let store = Store::open_with(ROOT, ctx.opts.clone())?;
        let q = json!({"items": [2]});
        let j = json!({"job": 1});
        let iq = ctx.begin("queue.json", &q);
        let ij = ctx.begin("jobs/1.json", &j);
        let io = ctx.begin_delete("old.json");
        store.transaction(|tx| {
            tx.write("queue.json", &q)?;
            tx.write("jobs/1.json", &j)?;
            tx.delete("old.json").map(|_| ())
        })?;
        ctx.ack(iq);
        ctx.ack(ij);
        ctx.ack(io);
        write(ctx, "queue.json", json!({"items": []}))
    },
    deterministic: true,
    recovery_sparsity: 16,
};
const TX_MIX_SWAP: Workload = Workload {
    name: "probe swap: transaction with a delete, a create in a subdirectory, a put",
    opts: || Options::new().backups(1).create_dirs(true),
    setup: |ctx| {
        ctx.initial("queue.json", &json!({"items": [1, 2]}));
        ctx.initial("old.json", &ver("0"));
        en(ctx, true);
    },
    run: TX_MIX.run,
    deterministic: true,
    recovery_sparsity: 16,
};
const DATA_DUR: Workload = Workload {
    name: "probe: journal with Durability::Data, backups 1, big between",
    opts: || Options::new().backups(1).durability(Durability::Data),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        en(ctx, false);
    },
    run: |ctx| {
        write(ctx, "a.json", ver("A"))?;
        write(ctx, "a.json", big("B"))?;
        write(ctx, "a.json", ver("C"))
    },
    deterministic: true,
    recovery_sparsity: 16,
};
const BIG_SWAP: Workload = Workload {
    name: "probe swap: too large for the journal between writes, backups 2",
    opts: || Options::new().backups(2),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        en(ctx, true);
    },
    run: |ctx| {
        write(ctx, "a.json", ver("A"))?;
        write(ctx, "a.json", ver("B"))?;
        write(ctx, "a.json", big("C"))?;
        write(ctx, "a.json", ver("D"))
    },
    deterministic: true,
    recovery_sparsity: 16,
};
const PLAIN_INSTALL: Workload = Workload {
    name: "probe plain: replace_file between writes, backups 2",
    opts: || Options::new().backups(2),
    setup: statefile_crashtest::workloads::JOURNAL_INSTALL.setup,
    run: statefile_crashtest::workloads::JOURNAL_INSTALL.run,
    deterministic: true,
    recovery_sparsity: 1,
};
const TX_BIG: Workload = Workload {
    name: "probe: transaction too large for the ring, then a small one",
    opts: || Options::new().backups(1),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        ctx.initial("b.json", &ver("0"));
        en(ctx, false);
    },
    run: |ctx| {
        let store = Store::open_with(ROOT, ctx.opts.clone())?;
        let a = json!({"pad": "a".repeat(5000)});
        let b = json!({"pad": "b".repeat(5000)});
        let r = store.transaction(|tx| {
            tx.write("a.json", &a)?;
            tx.write("b.json", &b)
        });
        if r.is_ok() {
            ctx.violation("a transaction over half the ring was accepted".into());
        }
        let a = ver("A");
        let b = ver("B");
        let ia = ctx.begin("a.json", &a);
        let ib = ctx.begin("b.json", &b);
        store.transaction(|tx| {
            tx.write("a.json", &a)?;
            tx.write("b.json", &b)
        })?;
        ctx.ack(ia);
        ctx.ack(ib);
        Ok(())
    },
    deterministic: true,
    recovery_sparsity: 16,
};

const DATA_INSTALL: Workload = Workload {
    name: "probe: journal with Durability::Data, replace_file between writes",
    opts: || Options::new().backups(2).durability(Durability::Data),
    setup: statefile_crashtest::workloads::JOURNAL_INSTALL.setup,
    run: statefile_crashtest::workloads::JOURNAL_INSTALL.run,
    deterministic: true,
    recovery_sparsity: 16,
};

const RESTORE_DELETED: Workload = Workload {
    name: "probe: restore after delete (journal)",
    opts: || Options::new().backups(2),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        en(ctx, false);
    },
    run: |ctx| {
        write(ctx, "a.json", ver("A"))?;
        write(ctx, "a.json", ver("B"))?;
        let id = ctx.begin_delete("a.json");
        ctx.doc("a.json").delete()?;
        ctx.ack(id);
        let bytes = statefile::to_vec(&ver("B"), statefile::Format::Pretty)?;
        let id = ctx.begin_bytes("a.json", bytes);
        ctx.doc("a.json")
            .restore(&statefile::BackupRef::NewestGood)?;
        ctx.ack(id);
        write(ctx, "a.json", ver("C"))
    },
    deterministic: true,
    recovery_sparsity: 16,
};
const RESTORE_DELETED_SWAP: Workload = Workload {
    name: "probe swap: restore after delete",
    opts: || Options::new().backups(2),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        en(ctx, true);
    },
    run: RESTORE_DELETED.run,
    deterministic: true,
    recovery_sparsity: 16,
};
const NONE_MIX: Workload = Workload {
    name: "probe: Durability::None writes then a Full one (journal)",
    opts: || Options::new().backups(1),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        ctx.initial("b.json", &ver("0"));
        en(ctx, false);
    },
    run: |ctx| {
        let none = Options::new()
            .backups(1)
            .durability(Durability::None)
            .fs(std::sync::Arc::new(ctx.sim.clone()));
        let d: statefile::Doc<Value> = statefile::Doc::open_with(Ctx::path("a.json"), none)?;
        d.write(&ver("A"))?; // not acknowledged as durable: no begin/ack pair
        write(ctx, "b.json", ver("B"))?;
        write(ctx, "a.json", ver("C"))
    },
    deterministic: true,
    recovery_sparsity: 16,
};
const REVERTS_SWAP: Workload = Workload {
    name: "probe swap: versions that come back",
    opts: || Options::new().backups(3),
    setup: |ctx| {
        ctx.initial("a.json", &ver("0"));
        en(ctx, true);
    },
    run: statefile_crashtest::workloads::JOURNAL_REVERTS.run,
    deterministic: true,
    recovery_sparsity: 16,
};
const REVERTS_CKPT_SWAP: Workload = Workload {
    name: "probe swap: versions that come back, across a checkpoint",
    opts: || Options::new().backups(3),
    setup: |ctx| {
        for v in ["0", "A", "B"] {
            ctx.initial("a.json", &ver(v));
        }
        en(ctx, true);
    },
    run: statefile_crashtest::workloads::JOURNAL_REVERTS_CHECKPOINT.run,
    deterministic: true,
    recovery_sparsity: 16,
};

const BATCHED_J: Workload = Workload {
    name: "probe: group commit in journal mode",
    opts: || Options::new().backups(1),
    setup: |ctx| {
        (statefile_crashtest::workloads::BATCHED.setup)(ctx);
        en(ctx, false);
    },
    run: statefile_crashtest::workloads::BATCHED.run,
    deterministic: true,
    recovery_sparsity: 16,
};
const BATCHED_SWAP: Workload = Workload {
    name: "probe swap: group commit",
    opts: || Options::new().backups(1),
    setup: |ctx| {
        (statefile_crashtest::workloads::BATCHED.setup)(ctx);
        en(ctx, true);
    },
    run: statefile_crashtest::workloads::BATCHED.run,
    deterministic: true,
    recovery_sparsity: 16,
};
const RMW_SWAP: Workload = Workload {
    name: "probe swap: read-modify-write, backups 1",
    opts: || Options::new().backups(1),
    setup: |ctx| {
        ctx.initial("jobs.json", &json!({"items": []}));
        en(ctx, true);
    },
    run: |ctx| {
        let doc = ctx.doc("jobs.json");
        for n in 0..3 {
            let mut id = None;
            doc.update(|v| {
                v["items"].as_array_mut().expect("array").push(json!(n));
                id = Some(ctx.begin("jobs.json", v));
                Ok(())
            })?;
            ctx.ack(id.expect("ran"));
        }
        Ok(())
    },
    deterministic: true,
    recovery_sparsity: 16,
};

fn all() -> Vec<Workload> {
    vec![
        BATCHED_J,
        BATCHED_SWAP,
        RMW_SWAP,
        RESTORE_DELETED,
        RESTORE_DELETED_SWAP,
        NONE_MIX,
        REVERTS_SWAP,
        REVERTS_CKPT_SWAP,
        DATA_INSTALL,
        NEW_DIR,
        NEW_DIR_SWAP,
        NEW_DIR_PLAIN,
        COND,
        TX_MIX,
        TX_MIX_SWAP,
        DATA_DUR,
        BIG_SWAP,
        PLAIN_INSTALL,
        TX_BIG,
    ]
}

#[test]
fn probe() {
    let which = std::env::var("PROBE").unwrap_or_default();
    let budget = Budget {
        omissions: true,
        torn: true,
        random_per_point: 10,
        seed: 20261128,
        recovery_crash_every: 2,
    };
    let mut bad = 0;
    for w in all() {
        if !which.is_empty() && !w.name.contains(&which) {
            continue;
        }
        let r = explore(&w, budget);
        println!("{}", r.line());
        if r.violations() > 0 {
            println!("{:#?}", r.examples);
            bad += 1;
        }
    }
    assert_eq!(bad, 0);
}

#[test]
fn faults() {
    let which = std::env::var("PROBE").unwrap_or_default();
    let mut bad = 0;
    for w in all() {
        if !which.is_empty() && !w.name.contains(&which) {
            continue;
        }
        let r = inject_faults(&w);
        println!(
            "| {} | {} | {} | {} |",
            r.workload, r.calls, r.tried, r.violations
        );
        if r.violations > 0 {
            println!("{:#?}", r.examples);
            bad += 1;
        }
    }
    assert_eq!(bad, 0);
}
