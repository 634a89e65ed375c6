//! Helpers shared by the tests that look at a document's backups in a simulated store:
//! `/data/a.json`, its versions `{"v": n}`, and its backups by name.
#![allow(dead_code)] // each test binary uses some of them

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use statefile::Options;
use statefile_crashtest::sim::SimFs;

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
