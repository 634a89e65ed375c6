//! Every command of the built binary: output on success, exit code on each error kind,
//! and the file unchanged whenever a command fails.

mod common;

use common::{Sandbox, temps};
use serde_json::json;

#[test]
fn put_get_version() {
    let s = Sandbox::new();
    let r = s
        .run_in(&["put", "a.json"], br#"{"b": 1, "a": [1, 2]}"#)
        .ok();
    let version = r.stdout.trim().to_string();
    assert_eq!(version.len(), 64);
    // Stored pretty, keys in their order; the version is the file's SHA-256.
    assert_eq!(
        String::from_utf8(s.read("a.json")).unwrap(),
        "{\n  \"b\": 1,\n  \"a\": [\n    1,\n    2\n  ]\n}\n"
    );
    assert_eq!(s.run(&["version", "a.json"]).ok().stdout.trim(), version);
    // Piped: compact. --pretty forces pretty.
    assert_eq!(
        s.run(&["get", "a.json"]).ok().stdout,
        "{\"b\":1,\"a\":[1,2]}\n"
    );
    assert_eq!(
        s.run(&["get", "--pretty", "a.json", "/a"]).ok().stdout,
        "[\n  1,\n  2\n]\n"
    );
    assert_eq!(s.run(&["get", "a.json", "/a/1"]).ok().stdout, "2\n");
    s.run_in(&["put", "s.json"], br#"{"name": "x\"y"}"#).ok();
    assert_eq!(
        s.run(&["get", "s.json", "/name"]).ok().stdout,
        "\"x\\\"y\"\n"
    );
    assert_eq!(
        s.run(&["get", "--raw", "s.json", "/name"]).ok().stdout,
        "x\"y\n"
    );
    // -q prints nothing.
    assert_eq!(s.run_in(&["-q", "put", "q.json"], b"1").ok().stdout, "");
}

#[test]
fn put_conditions() {
    let s = Sandbox::new();
    let v1 = s
        .run_in(&["put", "a.json"], b"1")
        .ok()
        .stdout
        .trim()
        .to_string();
    s.run_in(&["put", "--create", "a.json"], b"2")
        .code(3)
        .stderr_has("already exists");
    let v2 = s
        .run_in(&["put", "--if-match", &v1, "a.json"], b"2")
        .ok()
        .stdout
        .trim()
        .to_string();
    // The old version no longer matches; the ETag form is accepted too.
    s.run_in(&["put", "--if-match", &v1, "a.json"], b"3")
        .code(3);
    s.run_in(&["put", "--if-match", &format!("\"{v2}\""), "a.json"], b"3")
        .ok();
    assert_eq!(s.read("a.json"), b"3\n");
    s.run_in(&["put", "--if-match", "zzz", "a.json"], b"4")
        .code(2);
    s.run_in(&["put", "--create", "new.json"], b"5").ok();
}

#[test]
fn set_append_rm_create_what_is_missing() {
    let s = Sandbox::new();
    s.run(&["set", "cfg.json", "/limits/max", "10"]).ok();
    s.run(&["set", "--string", "cfg.json", "/name", "not json"])
        .ok();
    s.run(&["set", "cfg.json", "/name2", "not json"])
        .code(2)
        .stderr_has("--string");
    assert_eq!(
        s.json("cfg.json"),
        json!({"limits": {"max": 10}, "name": "not json"})
    );

    let r = s
        .run(&["append", "jobs.json", "/items", r#"{"id": 1}"#])
        .ok();
    let out: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(out["index"], 0);
    assert_eq!(
        out["version"].as_str().unwrap(),
        s.run(&["version", "jobs.json"]).ok().stdout.trim()
    );
    let r = s
        .run(&["append", "--string", "jobs.json", "/items", "two"])
        .ok();
    assert!(r.stdout.contains("\"index\":1"), "{}", r.stdout);
    s.run(&["append", "root.json", "", "1"]).ok();
    assert_eq!(s.json("root.json"), json!([1]));

    s.run(&["rm", "jobs.json", "/items/0"]).ok();
    assert_eq!(s.json("jobs.json"), json!({"items": ["two"]}));
    s.run(&["rm", "jobs.json", "/nothing"]).code(4);
    s.run(&["rm", "jobs.json"])
        .ok()
        .stderr_has("statefile restore");
    assert!(!s.path("jobs.json").exists());
    s.run(&["get", "jobs.json"]).code(4);
    s.run(&["restore", "jobs.json"]).ok();
    assert_eq!(s.json("jobs.json"), json!({"items": ["two"]}));
    s.run(&["rm", "--all", "jobs.json"]).ok();
    let left: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("jobs"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    s.run(&["rm", "jobs.json"]).code(4);
}

#[test]
fn patch_merge_and_json_patch() {
    let s = Sandbox::new();
    s.run_in(&["patch", "p.json"], br#"{"a": 1, "b": {"c": 2}}"#)
        .ok();
    s.run_in(&["patch", "p.json"], br#"{"a": null, "b": {"d": 3}}"#)
        .ok();
    assert_eq!(s.json("p.json"), json!({"b": {"c": 2, "d": 3}}));
    s.run_in(
        &["patch", "--json-patch", "p.json"],
        br#"[{"op": "add", "path": "/t", "value": [1]}, {"op": "add", "path": "/t/-", "value": 2}]"#,
    )
    .ok();
    assert_eq!(s.json("p.json")["t"], json!([1, 2]));
    let before = s.read("p.json");
    s.run_in(
        &["patch", "--json-patch", "p.json"],
        br#"[{"op": "test", "path": "/b/c", "value": 99}]"#,
    )
    .code(1)
    .stderr_has("does not apply");
    s.run_in(
        &["patch", "--json-patch", "p.json"],
        br#"{"not": "a patch"}"#,
    )
    .code(2);
    s.run_in(&["patch", "--json-patch", "missing.json"], b"[]")
        .code(4);
    let v = s.run(&["version", "p.json"]).ok().stdout.trim().to_string();
    s.run_in(&["patch", "--if-match", &v, "p.json"], br#"{"z": 1}"#)
        .ok();
    s.run_in(&["patch", "--if-match", &v, "p.json"], br#"{"z": 2}"#)
        .code(3);
    assert_ne!(s.read("p.json"), before);
}

#[test]
fn backups_and_restore() {
    let s = Sandbox::new();
    for n in 1..=4 {
        s.run_in(
            &["--backups", "3", "put", "b.json"],
            n.to_string().as_bytes(),
        )
        .ok();
    }
    let list = s.run(&["backups", "b.json"]).ok().stdout;
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(
        list.lines().next().unwrap().trim_start().starts_with("1 "),
        "{list}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&s.run(&["backups", "--json", "b.json"]).ok().stdout).unwrap();
    assert_eq!(j.as_array().unwrap().len(), 3);
    let oldest = j[2]["version"].as_str().unwrap().to_string();
    s.run(&["restore", "b.json", "--from", "2"]).ok();
    assert_eq!(s.read("b.json"), b"2\n");
    s.run(&["restore", "b.json", "--from", &oldest]).ok();
    assert_eq!(s.read("b.json"), b"1\n");
    s.run(&["restore", "b.json", "--from", "9"]).code(4);
    s.run(&["backups", "nothing.json"])
        .ok()
        .stdout
        .contains("no backups");
}

#[test]
fn a_corrupt_file_get_fallback_verify_recover() {
    let s = Sandbox::new();
    s.run_in(&["put", "job.json"], br#"{"status": "queued"}"#)
        .ok();
    s.run_in(&["put", "job.json"], br#"{"status": "running"}"#)
        .ok();
    s.write("job.json", br#"{"status": "run"#);
    s.run(&["get", "job.json"])
        .code(5)
        .stderr_has("job.json")
        .stderr_has("corrupt");
    let r = s.run(&["get", "--fallback", "job.json"]).ok();
    assert_eq!(r.stdout, "{\"status\":\"queued\"}\n");
    assert!(r.stderr.contains("damaged"), "{}", r.stderr);
    // Read-modify-write refuses a damaged file.
    s.run(&["set", "job.json", "/x", "1"]).code(5);

    let r = s.run(&["verify", "."]).code(5);
    assert!(
        r.stdout.contains("job.json: corrupt document"),
        "{}",
        r.stdout
    );
    let j: serde_json::Value =
        serde_json::from_str(&s.run(&["verify", "--json", "."]).code(5).stdout).unwrap();
    assert_eq!(j["healthy"], false);
    assert_eq!(
        j["reports"][0]["findings"][0]["problem"],
        "corrupt-document"
    );

    let dry = s.run(&["recover", "--dry-run", "."]).code(5);
    assert!(dry.stdout.contains("would restore"), "{}", dry.stdout);
    assert_eq!(s.read("job.json"), br#"{"status": "run"#);
    let r = s.run(&["recover", "."]).ok();
    assert!(r.stdout.contains("restored from"), "{}", r.stdout);
    assert_eq!(s.json("job.json"), json!({"status": "queued"}));
    s.run(&["verify", "."]).ok().stdout.contains("healthy");
}

#[test]
fn bad_input_is_refused_and_the_file_is_unchanged() {
    let s = Sandbox::new();
    s.run_in(&["put", "a.json"], br#"{"list": [1], "n": 5}"#)
        .ok();
    let before = s.read("a.json");
    let cases: Vec<(Vec<&str>, &[u8], i32, &str)> = vec![
        (vec!["put", "a.json"], b"{\"trunc", 2, "not valid JSON"),
        (vec!["put", "a.json"], b"", 2, "empty"),
        (vec!["put", "a.json"], b"\xff\xfe\x00", 2, "not valid JSON"),
        (vec!["put", "a.json"], b"1 2", 2, "not valid JSON"),
        (
            vec!["set", "a.json", "no-slash", "1"],
            b"",
            2,
            "JSON Pointer",
        ),
        (vec!["set", "a.json", "/x~2", "1"], b"", 2, "JSON Pointer"),
        (vec!["get", "a.json", "/list/7"], b"", 4, "out of range"),
        (vec!["append", "a.json", "/n", "1"], b"", 1, "not an array"),
        (vec!["set", "a.json", "/n/deeper", "1"], b"", 1, "neither"),
        (
            vec!["--durability", "maybe", "put", "a.json"],
            b"1",
            2,
            "invalid value",
        ),
        (vec!["nonsense"], b"", 2, "unrecognized"),
    ];
    for (args, stdin, code, msg) in cases {
        let r = s.run_in(&args, stdin);
        assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(msg), "{args:?}: {}", r.stderr);
        assert_eq!(s.read("a.json"), before, "{args:?} changed the file");
    }
    assert!(temps(s.dir.path()).is_empty());

    // A directory as FILE.
    std::fs::create_dir(s.path("dir.json")).unwrap();
    s.run(&["get", "dir.json"]).code(2).stderr_has("directory");
    s.run_in(&["put", "dir.json"], b"1")
        .code(2)
        .stderr_has("directory");
    // A FILE in a directory that does not exist: created only with --parents.
    s.run_in(&["put", "new/deep/f.json"], b"1")
        .code(4)
        .stderr_has("--parents");
    assert!(!s.path("new").exists());
    s.run(&["set", "new/deep/f.json", "/a", "1"]).code(4);
    s.run_in(&["put", "--parents", "new/deep/f.json"], b"1")
        .ok();
    s.run(&["append", "--parents", "other/x.json", "/l", "1"])
        .ok();
    // A name that is one of statefile's own.
    s.run(&["get", ".a.json.lock"]).code(2);
    // Errors say which file, on stderr, with the statefile: prefix.
    s.run(&["get", "missing.json"])
        .code(4)
        .stderr_has("statefile: missing.json does not exist");
}

#[test]
fn global_options_and_environment() {
    let s = Sandbox::new();
    for n in 1..=3 {
        s.cmd(&["put", "e.json"])
            .env("STATEFILE_BACKUPS", "0")
            .env("STATEFILE_DURABILITY", "none")
            .stdin(std::process::Stdio::from(
                std::fs::File::open(write_tmp(&s, n)).unwrap(),
            ))
            .output()
            .unwrap();
    }
    assert_eq!(s.read("e.json"), b"3\n");
    assert!(
        !s.path(".e.json.bak").exists(),
        "STATEFILE_BACKUPS=0 honoured"
    );
    s.run_in(
        &[
            "--durability",
            "data",
            "--lock-timeout",
            "1",
            "put",
            "d.json",
        ],
        b"1",
    )
    .ok();
    s.run_in(&["--lock-timeout", "-1", "put", "d.json"], b"1")
        .code(2);
}

fn write_tmp(s: &Sandbox, n: u32) -> std::path::PathBuf {
    let p = s.path(&format!("in-{n}.txt"));
    std::fs::write(&p, n.to_string()).unwrap();
    p
}

#[test]
fn a_held_lock_is_exit_6() {
    let s = Sandbox::new();
    s.run_in(&["put", "l.json"], b"1").ok();
    let doc = statefile::Doc::<serde_json::Value>::open(s.path("l.json")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        doc.update(|_| {
            tx.send(()).unwrap();
            done_rx.recv().unwrap();
            Ok(())
        })
        .unwrap();
    });
    rx.recv().unwrap();
    s.run_in(&["--lock-timeout", "0.2", "put", "l.json"], b"2")
        .code(6)
        .stderr_has("lock");
    done_tx.send(()).unwrap();
    t.join().unwrap();
    assert_eq!(s.read("l.json"), b"1\n");
}

#[test]
fn help_completions_and_closed_pipes() {
    let s = Sandbox::new();
    let help = s.run(&["--help"]).ok().stdout;
    assert!(help.contains("Exit codes"), "{help}");
    assert!(help.contains("9  durability unknown"));
    for cmd in [
        "get", "put", "set", "append", "rm", "patch", "version", "verify", "recover", "backups",
        "restore", "serve",
    ] {
        let h = s.run(&[cmd, "--help"]).ok().stdout;
        assert!(h.contains("Example"), "{cmd} --help has no example");
    }
    for shell in ["bash", "zsh", "fish"] {
        let c = s.run(&["completions", shell]).ok().stdout;
        assert!(c.contains("statefile"), "{shell}");
    }
    // `statefile get big.json | head -c1`: the closed pipe is not an error.
    let big: Vec<u32> = (0..200_000).collect();
    s.write("big.json", serde_json::to_string(&big).unwrap().as_bytes());
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' get big.json | head -c1; exit ${{PIPESTATUS:-0}}",
            common::BIN
        ))
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"[");
    assert!(
        String::from_utf8_lossy(&out.stderr).is_empty(),
        "no error for a closed pipe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' get big.json | head -c1 >/dev/null",
            common::BIN
        ))
        .current_dir(s.dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "exit 0 on a closed pipe");
}
