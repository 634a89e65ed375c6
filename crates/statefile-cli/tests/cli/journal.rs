//! `statefile journal` and what `verify` / `recover` say in journal mode (issue 14).

use serde_json::{Value, json};

use crate::common::Sandbox;

#[test]
fn enable_write_verify_replay_disable() {
    let s = Sandbox::new();
    let out = s.run(&["journal", "enable", "--size", "64K", "."]).ok();
    assert!(out.stdout.contains("journal mode"), "{}", out.stdout);
    assert!(s.path(".statefile/journal").is_file());
    s.run(&["journal", "enable", "--size", "1x", "."]).code(2);

    s.run_in(&["put", "a.json"], b"{\"v\": 1}").ok();
    let old = s.read("a.json");
    s.run_in(&["put", "a.json"], b"{\"v\": 2}").ok();
    let st: Value =
        serde_json::from_str(&s.run(&["journal", "status", "--json", "."]).ok().stdout).unwrap();
    assert_eq!(st["records"], json!(2), "{st}");
    assert_eq!(st["needs_repair"], json!(false));
    let out = s.run(&["verify", "."]).ok();
    assert!(
        out.stdout.contains("2 records since the checkpoint"),
        "{}",
        out.stdout
    );

    // The rename did not reach the disk before a power loss: the old bytes are back.
    s.write("a.json", &old);
    let out = s.run(&["verify", "."]).code(5);
    assert!(
        out.stdout
            .contains("not yet what its last journal record says"),
        "{}",
        out.stdout
    );
    let out = s.run(&["journal", "status", "."]).code(5);
    assert!(out.stdout.contains("to replay"), "{}", out.stdout);
    let out = s.run(&["recover", "."]).ok();
    assert!(
        out.stdout.contains("replayed from the journal"),
        "{}",
        out.stdout
    );
    assert_eq!(s.json("a.json"), json!({"v": 2}));
    s.run(&["verify", "."]).ok();

    // recover checkpointed; a new write gives the next checkpoint something to do.
    s.run_in(&["put", "b.json"], b"[]").ok();
    let out = s.run(&["journal", "checkpoint", "."]).ok();
    assert!(out.stdout.contains("1 documents"), "{}", out.stdout);
    let out = s.run(&["journal", "disable", "."]).ok();
    assert!(out.stdout.contains("disabled"), "{}", out.stdout);
    assert!(!s.path(".statefile").exists());
    s.run(&["journal", "status", "."]).code(4);
    s.run(&["journal", "disable", "."]).code(4);
    assert_eq!(s.json("a.json"), json!({"v": 2}));
    s.run_in(&["put", "a.json"], b"{\"v\": 3}").ok();
    assert_eq!(s.json("a.json"), json!({"v": 3}));
}
