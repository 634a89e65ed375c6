//! The scenarios the explorer runs (issue 6, item 3).

use serde_json::{Value, json};
use statefile::{BackupRef, Options};

use crate::explore::{Ctx, Workload};

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
};

/// Every workload.
pub const ALL: [Workload; 5] = [
    ONE_REPLACE,
    TEN_REPLACES,
    READ_MODIFY_WRITE,
    RESTORE,
    TWO_WRITERS,
];
