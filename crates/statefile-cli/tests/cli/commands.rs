//! Every command of the built binary: output on success, exit code on each error kind,
//! and the file unchanged whenever a command fails.

use crate::common::{self, Sandbox, temps};
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

// Regression: `--if-match 'W/"<current>"'` replaced the document, reading the weak tag
// as the version it wraps, where an If-Match header (RFC 9110 13.1.1: strong
// comparison) and `tx`'s if_match never match one. Now every version to compare with
// refuses a weak tag, naming it and why (usage, exit 2); `restore --from`, which only
// names a backup, still reads one.
#[test]
fn a_weak_etag_as_if_match_is_refused_naming_why() {
    let s = Sandbox::new();
    s.run_in(&["put", "a.json"], b"1").ok();
    let v = s
        .run_in(&["put", "a.json"], b"2")
        .ok()
        .stdout
        .trim()
        .to_string();
    let weak = format!("W/\"{v}\"");
    for args in [
        vec!["put", "--if-match", &weak, "a.json"],
        vec!["patch", "--if-match", &weak, "a.json"],
    ] {
        s.run_in(&args, b"{\"x\": 3}")
            .code(2)
            .stderr_has(&format!(
                "invalid value '{weak}' for '--if-match <VERSION>'"
            ))
            .stderr_has("is a weak entity tag, which never matches a version")
            .stderr_has("RFC 9110 13.1.1");
    }
    assert_eq!(s.read("a.json"), b"2\n");
    // The same tag quoted strongly is the version.
    s.run_in(&["put", "--if-match", &format!("\"{v}\""), "a.json"], b"3")
        .ok();
    // A backup named by a weak tag of its version is still found.
    s.run(&["restore", "a.json", "--from", &weak]).ok();
    assert_eq!(s.read("a.json"), b"2\n");
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
            &["put", "--backups", "3", "b.json"],
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
    // A restore keeps to --backups like every write (issue 10): these three were kept
    // with 3, and the version the restore replaces makes a fourth.
    s.run(&["restore", "--backups", "4", "b.json", "--from", "2"])
        .ok();
    assert_eq!(s.read("b.json"), b"2\n");
    s.run(&["restore", "--backups", "4", "b.json", "--from", &oldest])
        .ok();
    assert_eq!(s.read("b.json"), b"1\n");
    s.run(&["restore", "b.json", "--from", "9"]).code(4);
    let none = s.run(&["backups", "nothing.json"]).ok().stdout;
    assert_eq!(none, "no backups of nothing.json\n");
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
    let healthy = s.run(&["verify", "."]).ok().stdout;
    assert!(healthy.ends_with(": healthy\n"), "{healthy}");
    // A document with nothing to fall back on is counted (not a problem: backups can be
    // off), so "backups available" is visible at a glance.
    s.run_in(&["put", "--backups", "0", "lone.json"], b"{}")
        .ok();
    let r = s.run(&["verify", "."]).ok().stdout;
    assert!(
        r.contains("2 documents") && r.contains("(1 without a backup)"),
        "{r}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&s.run(&["verify", "--json", "."]).ok().stdout).unwrap();
    assert_eq!(j["reports"][0]["without_backup"], 1);
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
        // Invalid UTF-8 inside a JSON string, on each command that reads stdin.
        (
            vec!["put", "a.json"],
            b"{\"s\": \"\xff\"}",
            2,
            "not valid JSON",
        ),
        (
            vec!["patch", "a.json"],
            b"{\"s\": \"\xc3\"}",
            2,
            "not valid JSON",
        ),
        (
            vec!["patch", "--json-patch", "a.json"],
            b"[{\"op\": \"add\", \"path\": \"/s\", \"value\": \"\xff\"}]",
            2,
            "not valid JSON",
        ),
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
            vec!["put", "--durability", "maybe", "a.json"],
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

    // A value argument that is not UTF-8 is a usage error, the file untouched.
    use std::os::unix::ffi::OsStrExt;
    let not_utf8 = std::ffi::OsStr::from_bytes(b"\"\xff\"");
    for cmd in ["set", "append"] {
        let out = s
            .cmd(&[cmd, "a.json", "/x"])
            .arg(not_utf8)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}: {:?}", out);
        assert_eq!(s.read("a.json"), before, "{cmd} changed the file");
    }

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
fn errors_name_the_file() {
    // Regression: pointer and JSON-input errors of set, append, rm and put named no file.
    let s = Sandbox::new();
    s.run_in(&["put", "a.json"], br#"{"list": [1], "n": 5}"#)
        .ok();
    let exact: Vec<(Vec<&str>, &[u8], i32, &str)> = vec![
        (
            vec!["set", "a.json", "/n/deeper", "1"],
            b"",
            1,
            "a.json: cannot set /n/deeper: /n is neither an object nor an array",
        ),
        (
            vec!["set", "a.json", "no-slash", "1"],
            b"",
            2,
            "a.json: \"no-slash\" is not a JSON Pointer: it must be empty or start with '/'",
        ),
        (
            vec!["append", "a.json", "/n", "1"],
            b"",
            1,
            "a.json: cannot append to /n: it is a number, not an array",
        ),
        (
            vec!["append", "a.json", "/list/x/y", "1"],
            b"",
            4,
            "a.json: /list/x: \"x\" is not an array index",
        ),
        (
            vec!["rm", "a.json", "/nothing"],
            b"",
            4,
            "a.json: /nothing does not exist",
        ),
        (
            vec!["rm", "a.json", "nothing"],
            b"",
            2,
            "a.json: \"nothing\" is not a JSON Pointer: it must be empty or start with '/'",
        ),
        (
            vec!["get", "a.json", "/list/7"],
            b"",
            4,
            "a.json: /list/7: index 7 is out of range (the array has 1 elements)",
        ),
        (
            vec!["put", "a.json"],
            b" \n",
            2,
            "a.json: stdin is empty: expected the new document",
        ),
    ];
    for (args, stdin, code, msg) in exact {
        let r = s.run_in(&args, stdin);
        assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr, format!("statefile: {msg}\n"), "{args:?}");
    }
    // The parser's own words follow the file and what was wrong.
    let prefixed: Vec<(Vec<&str>, &[u8], &str)> = vec![
        (
            vec!["put", "a.json"],
            b"{\"trunc",
            "a.json: stdin is not valid JSON (the new document): ",
        ),
        (
            vec!["patch", "a.json"],
            b"{",
            "a.json: stdin is not valid JSON (the patch): ",
        ),
        (
            vec!["patch", "--json-patch", "a.json"],
            b"{}",
            "a.json: stdin is not an RFC 6902 JSON Patch: ",
        ),
        (
            vec!["set", "a.json", "/x", "bare"],
            b"",
            "a.json: \"bare\" is not valid JSON (",
        ),
        (
            vec!["append", "a.json", "/list", "{"],
            b"",
            "a.json: \"{\" is not valid JSON (",
        ),
    ];
    for (args, stdin, msg) in prefixed {
        let r = s.run_in(&args, stdin);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.starts_with(&format!("statefile: {msg}")) && r.stderr.lines().count() == 1,
            "{args:?}: {}",
            r.stderr
        );
    }
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
            "put",
            "--durability",
            "data",
            "--lock-timeout",
            "1",
            "d.json",
        ],
        b"1",
    )
    .ok();
    s.run_in(&["put", "--lock-timeout", "-1", "d.json"], b"1")
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
            Ok::<_, statefile::Error>(())
        })
        .unwrap();
    });
    rx.recv().unwrap();
    s.run_in(&["put", "--lock-timeout", "0.2", "l.json"], b"2")
        .code(6)
        .stderr_has("lock");
    done_tx.send(()).unwrap();
    t.join().unwrap();
    assert_eq!(s.read("l.json"), b"1\n");
}

#[test]
fn lock_timeout_from_the_environment() {
    let s = Sandbox::new();
    s.run_in(&["put", "l.json"], b"{}").ok();
    let doc = statefile::Doc::<serde_json::Value>::open(s.path("l.json")).unwrap();
    let guard = doc.lock().unwrap();
    let start = std::time::Instant::now();
    let out = s
        .cmd(&["set", "l.json", "/x", "2"])
        .env("STATEFILE_LOCK_TIMEOUT", "0.3")
        .output()
        .unwrap();
    let waited = start.elapsed();
    common::Run::from(out).code(6).stderr_has("lock");
    // Well under the 10 s default: the variable was honoured.
    assert!(
        waited >= std::time::Duration::from_millis(300) && waited.as_secs() < 5,
        "waited {waited:?}"
    );
    drop(guard);
    assert_eq!(s.read("l.json"), b"{}\n");
    // Released: the same command goes through.
    let out = s
        .cmd(&["set", "l.json", "/x", "2"])
        .env("STATEFILE_LOCK_TIMEOUT", "0.3")
        .output()
        .unwrap();
    common::Run::from(out).ok();
    assert_eq!(s.json("l.json"), json!({"x": 2}));
}

#[test]
fn invalid_environment_values_are_usage_errors() {
    let s = Sandbox::new();
    s.run_in(&["put", "e.json"], b"1").ok();
    for (var, value) in [
        ("STATEFILE_DURABILITY", "bogus"),
        ("STATEFILE_LOCK_TIMEOUT", "soon"),
        ("STATEFILE_LOCK_TIMEOUT", "-1"),
        ("STATEFILE_BACKUPS", "many"),
    ] {
        let out = s
            .cmd(&["set", "e.json", "/x", "2"])
            .env(var, value)
            .output()
            .unwrap();
        let r = common::Run::from(out);
        assert_eq!(r.code, 2, "{var}={value}: {}", r.stderr);
        assert!(r.stderr.contains(value), "{var}={value}: {}", r.stderr);
    }
    assert_eq!(s.read("e.json"), b"1\n");
}

#[test]
fn help_completions_and_closed_pipes() {
    let s = Sandbox::new();
    let help = s.run(&["--help"]).ok().stdout;
    assert!(help.contains("Exit codes"), "{help}");
    assert!(help.contains("9  durability unknown"));
    // The top-level help showed only the exit codes, no example.
    assert!(help.contains("Examples:"), "{help}");
    for example in [
        "| statefile put ",
        "statefile get --raw jobs/42.json /status",
        "statefile append ",
        "statefile verify ",
    ] {
        assert!(help.contains(example), "--help lacks {example:?}: {help}");
    }
    for cmd in [
        "get",
        "put",
        "set",
        "append",
        "rm",
        "patch",
        "version",
        "verify",
        "recover",
        "backups",
        "restore",
        "serve",
        "completions",
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
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' get big.json | head -c1",
            common::BIN
        ))
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"[");
    assert!(
        out.stderr.is_empty(),
        "no error for a closed pipe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "exit 0 on a closed pipe: {out:?}");
    s.run_closed_stdout(&["get", "big.json"])
        .ok()
        .stderr_is_empty();
}

#[test]
fn completions_on_a_closed_pipe_exit_0() {
    // Regression: clap_complete::generate panicked (exit 101) when stdout was a closed pipe.
    let s = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        s.run_closed_stdout(&["completions", shell])
            .ok()
            .stderr_is_empty();
    }
}

#[test]
fn verify_and_recover_on_a_closed_pipe_keep_exit_5() {
    // Regression: a failed write of the report skipped the verdict, so
    // `statefile verify damaged | head -c1` exited 0 instead of 5.
    let s = Sandbox::new();
    s.run_in(&["put", "job.json"], b"1").ok();
    s.write("job.json", br#"{"status": "run"#);
    for args in [
        &["verify", "."][..],
        &["verify", "--json", "."],
        &["recover", "--dry-run", "."],
        &["recover", "--dry-run", "--json", "."],
    ] {
        let r = s.run_closed_stdout(args);
        assert_eq!(r.code, 5, "{args:?}: {}", r.stderr);
        assert!(r.stderr.is_empty(), "{args:?}: {}", r.stderr);
    }
    assert_eq!(s.read("job.json"), br#"{"status": "run"#);
    // The same through a shell pipeline, checking statefile's own status.
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' verify . | head -c1; exit ${{PIPESTATUS[0]}}",
            common::BIN
        ))
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    // A healthy tree is still exit 0 on a closed pipe.
    s.run_in(&["put", "job.json"], b"2").ok();
    s.run_closed_stdout(&["verify", "."]).ok().stderr_is_empty();
}

#[test]
fn write_options_belong_to_the_commands_that_write() {
    let s = Sandbox::new();
    s.run_in(&["put", "a.json"], br#"{"l": [1]}"#).ok();
    s.run_in(&["put", "a.json"], br#"{"l": [1, 2]}"#).ok();
    let write = [
        "--durability",
        "none",
        "--backups",
        "2",
        "--lock-timeout",
        "1",
    ];
    let writers: Vec<(Vec<&str>, &[u8])> = vec![
        (vec!["put", "a.json"], br#"{"l": [1, 2, 3]}"#),
        (vec!["set", "a.json", "/n", "1"], b""),
        (vec!["append", "a.json", "/l", "4"], b""),
        (vec!["patch", "a.json"], br#"{"m": 1}"#),
        (vec!["rm", "a.json", "/m"], b""),
        (vec!["restore", "a.json", "--from", "1"], b""),
        (vec!["recover", "."], b""),
        (vec!["rm", "a.json"], b""),
    ];
    for (mut args, stdin) in writers {
        args.splice(1..1, write);
        s.run_in(&args, stdin).ok();
    }
    // Commands that only read refuse them as the usage errors they are.
    s.run_in(&["put", "b.json"], b"1").ok();
    for args in [
        vec!["get", "b.json"],
        vec!["version", "b.json"],
        vec!["backups", "b.json"],
        vec!["verify", "."],
        vec!["completions", "bash"],
    ] {
        for option in write.chunks(2) {
            let mut with = args.clone();
            with.splice(1..1, option.iter().copied());
            s.run(&with)
                .code(2)
                .stderr_has(&format!("unexpected argument '{}'", option[0]));
        }
    }
    // Nor do they belong before the command.
    s.run_in(&["--backups", "3", "put", "b.json"], b"2")
        .code(2)
        .stderr_has("unexpected argument '--backups'");
    assert_eq!(s.read("b.json"), b"1\n");
}

#[test]
fn bad_values_are_usage_errors_naming_the_value() {
    let s = Sandbox::new();
    s.run_in(&["put", "a.json"], b"1").ok();
    s.run_in(&["put", "a.json"], b"2").ok();
    for (args, value) in [
        (vec!["restore", "a.json", "--from", "latest"], "latest"),
        (vec!["restore", "a.json", "--from", "-1"], "-1"),
        (vec!["restore", "a.json", "--from", "0"], "0"),
        (vec!["put", "--if-match", "abc", "a.json"], "abc"),
        (vec!["patch", "--if-match", "abc", "a.json"], "abc"),
        (vec!["put", "--durability", "fast", "a.json"], "fast"),
        (vec!["put", "--lock-timeout", "soon", "a.json"], "soon"),
        (vec!["put", "--lock-timeout", "inf", "a.json"], "inf"),
        (vec!["put", "--backups", "-1", "a.json"], "-1"),
    ] {
        s.run_in(&args, b"3")
            .code(2)
            .stderr_has(&format!("invalid value '{value}'"))
            .stderr_has("try '--help'");
    }
    assert_eq!(s.read("a.json"), b"2\n");
}

#[test]
fn get_lines_prints_an_array_one_element_per_line() {
    let s = Sandbox::new();
    s.run_in(
        &["put", "q.json"],
        br#"{"pending": ["a1", "b 2", {"id": 3}, [4], null], "none": [], "n": 1}"#,
    )
    .ok();
    assert_eq!(
        s.run(&["get", "--lines", "q.json", "/pending"]).ok().stdout,
        "a1\nb 2\n{\"id\":3}\n[4]\nnull\n"
    );
    assert_eq!(
        s.run(&["get", "--lines", "q.json", "/none"]).ok().stdout,
        ""
    );
    s.run_in(&["put", "list.json"], br#"["x", "y"]"#).ok();
    assert_eq!(
        s.run(&["get", "--lines", "list.json"]).ok().stdout,
        "x\ny\n"
    );
    // Not an array, or an element that would span two lines: an error, nothing printed.
    let r = s.run(&["get", "--lines", "q.json", "/n"]).code(1);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr
            .contains("q.json: the value at /n is a number, not an array"),
        "{}",
        r.stderr
    );
    s.run(&["get", "--lines", "q.json"])
        .code(1)
        .stderr_has("the document is an object, not an array");
    s.run(&["set", "--string", "q.json", "/pending/1", "two\nlines"])
        .ok();
    let r = s.run(&["get", "--lines", "q.json", "/pending"]).code(1);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr
            .contains("element 1 of the value at /pending holds a line break"),
        "{}",
        r.stderr
    );
    s.run(&["get", "--lines", "--pretty", "list.json"])
        .code(2)
        .stderr_has("cannot be used with");
}
