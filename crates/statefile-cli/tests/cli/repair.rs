//! Repairing a damaged document from the command line: a compare-and-swap at the
//! version served for it (issue 10, item 2), and a restore that keeps to `--backups`
//! (issue 10, item 6).

use serde_json::json;
use statefile::Version;

use crate::common::Sandbox;

fn damaged(s: &Sandbox) -> String {
    s.run_in(&["put", "cfg.json"], b"{\"v\": 1}").ok();
    s.run_in(&["put", "cfg.json"], b"{\"v\": 2}").ok();
    s.write("cfg.json", b"{\"v\": 2, \"tru");
    // What `get --fallback` serves is the backup; its version is the one to name.
    let out = s.run(&["get", "--fallback", "cfg.json"]).ok();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap(),
        json!({"v": 1})
    );
    Version::of(&s.read(".cfg.json.bak")).to_string()
}

// Regression: `put --if-match` and `patch --if-match` at the served version exited 3
// forever on a damaged document.
#[test]
fn if_match_at_the_version_served_for_a_damaged_document_repairs_it() {
    let s = Sandbox::new();
    let v = damaged(&s);
    s.run_in(&["put", "--if-match", &v, "cfg.json"], b"{\"v\": 3}")
        .ok();
    assert_eq!(s.json("cfg.json"), json!({"v": 3}));
    assert_eq!(s.read(".cfg.json.corrupt"), b"{\"v\": 2, \"tru");
    // Now a stale version: exit 3, as any.
    s.run_in(&["put", "--if-match", &v, "cfg.json"], b"{\"v\": 4}")
        .code(3);

    let v = damaged(&s);
    s.run_in(&["patch", "--if-match", &v, "cfg.json"], b"{\"w\": 5}")
        .ok();
    assert_eq!(
        s.json("cfg.json"),
        json!({"v": 1, "w": 5}),
        "built on what was served"
    );
}

// Regression: a restore with a lower --backups than earlier writes left .bak.3 ... behind.
#[test]
fn restore_with_fewer_backups_removes_the_older_ones() {
    let s = Sandbox::new();
    for n in 0..7 {
        s.run_in(
            &["put", "--backups", "5", "cfg.json"],
            format!("{{\"n\": {n}}}").as_bytes(),
        )
        .ok();
    }
    let baks = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(s.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".bak"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(baks().len(), 5);
    s.run(&["restore", "--backups", "2", "--from", "3", "cfg.json"])
        .ok();
    assert_eq!(s.json("cfg.json"), json!({"n": 3}));
    assert_eq!(baks(), [".cfg.json.bak", ".cfg.json.bak.2"]);
}

// A directory under a temp file's name (a swapped-in write that could not swap a
// directory back leaves one) is reported by verify and recover, as text and JSON, in a
// tree or for its document; never deleted; exit 5 each time, the same answer each run.
#[test]
fn a_directory_under_a_temp_name_is_reported_never_deleted() {
    let s = Sandbox::new();
    s.run_in(&["put", "cfg.json"], b"{\"v\": 1}").ok();
    let odd = ".cfg.json.sf-aaaaaaaaaaaaaaaa.tmp";
    std::fs::create_dir(s.path(odd)).unwrap();
    s.write(&format!("{odd}/keep"), b"data");
    for _ in 0..2 {
        for path in [".", "cfg.json"] {
            for cmd in [
                &["verify", path][..],
                &["recover", path],
                &["recover", "--dry-run", path],
            ] {
                let out = s.run(cmd).code(5);
                let line = out
                    .stdout
                    .lines()
                    .find(|l| l.contains(odd))
                    .unwrap_or_else(|| panic!("{cmd:?}: {}", out.stdout));
                assert!(
                    line.contains("is a directory under a temp file's name")
                        && line.contains("never deletes")
                        && !line.contains("->"),
                    "{cmd:?}: {line}"
                );
                assert!(
                    out.stdout.contains(": 1 need repair"),
                    "{cmd:?}: {}",
                    out.stdout
                );
                let mut json_cmd = cmd.to_vec();
                json_cmd.insert(1, "--json");
                let v: serde_json::Value =
                    serde_json::from_str(&s.run(&json_cmd).code(5).stdout).unwrap();
                let f = &v["reports"][0]["findings"];
                assert_eq!(f.as_array().unwrap().len(), 1, "{cmd:?}: {v}");
                assert_eq!(f[0]["problem"], json!("unreadable"), "{v}");
                assert_eq!(f[0]["action"], json!(null), "{v}");
                assert_eq!(f[0]["fixed"], json!(false), "{v}");
                assert_eq!(s.read(&format!("{odd}/keep")), b"data");
            }
        }
    }
    assert_eq!(s.json("cfg.json"), json!({"v": 1}));
}
