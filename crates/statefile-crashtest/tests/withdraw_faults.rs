//! A second fault inside the withdraw (a failure after a journal record's append, found
//! by a hostile review): a write refused by its hook (after the append) must either say
//! Durability ("may yet be applied") or never be applied by anyone. The withdraw once
//! freed the cancelling record's slot before the cancelled one's, and only logged a
//! failure to free the latter: the next writer of the document in the same boot then
//! adopted the refused record. Every call of the refused write fails once here.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use statefile::journal::{self, JournalOptions};
use statefile::{ErrorKind, Options, Store};
use statefile_crashtest::sim::{Fault, FaultKind, SimFs};

const ROOT: &str = "/data";

fn opts(sim: &SimFs) -> Options {
    Options::new().fs(Arc::new(sim.clone()))
}

/// A fresh machine with a journaled store holding a.json = {"v": 1}; returns it and the
/// number of seam calls made so far.
fn setup() -> (SimFs, u64) {
    let sim = SimFs::new();
    statefile::fs::Fs::open_dir(&sim, Path::new("/"))
        .and_then(|root| root.create_dir(std::ffi::OsStr::new(&ROOT[1..])))
        .unwrap();
    journal::enable(
        ROOT,
        &opts(&sim),
        JournalOptions {
            capacity: 16 << 10,
            ..JournalOptions::default()
        },
    )
    .unwrap();
    {
        let store = Store::open_with(ROOT, opts(&sim)).unwrap();
        store
            .doc::<Value>("a.json")
            .unwrap()
            .write(&json!({"v": 1}))
            .unwrap();
    }
    let n = sim.calls().len() as u64;
    (sim, n)
}

fn refused_write(sim: &SimFs) -> statefile::Error {
    let hooked = opts(sim).on_temp_created(|_| Err(std::io::Error::other("refused by the test")));
    let r = Store::open_with(ROOT, hooked)
        .and_then(|store| store.doc::<Value>("a.json")?.write(&json!({"v": 2})));
    r.expect_err("the hook refuses every write")
}

#[test]
fn a_second_fault_in_the_withdraw_never_applies_a_write_reported_as_not_durability() {
    let (sim, n0) = setup();
    refused_write(&sim);
    let calls = sim.calls().len() as u64 - n0;
    let mut bad = Vec::new();
    for k in 0..calls {
        let (sim, n) = setup();
        assert_eq!(n, n0, "setup is deterministic");
        sim.set_fault(Some(Fault {
            at: n0 + k,
            kind: FaultKind::Errno(5),
        }));
        let e = refused_write(&sim);
        let fired = sim.fault_fired();
        sim.set_fault(None);
        // The next writer of a.json, in this boot (it settles dead writers' commits).
        let seen = std::sync::Mutex::new(None);
        let next = Store::open_with(ROOT, opts(&sim)).and_then(|s| {
            s.doc::<Value>("a.json")?.update(|v| {
                *seen.lock().unwrap() = Some(v.clone());
                Ok::<_, statefile::Error>(())
            })
        });
        let seen = seen.into_inner().unwrap();
        if e.kind() != ErrorKind::Durability && seen.as_ref() != Some(&json!({"v": 1})) {
            bad.push(format!(
                "call {k} ({fired:?}) failed: the write said {:?} ({e}), yet the next writer \
                 saw {seen:?} ({next:?})",
                e.kind()
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
