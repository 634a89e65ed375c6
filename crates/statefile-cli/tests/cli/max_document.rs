//! `--max-document` on the document commands. Regression: the server bounded what one
//! document may cost (`serve --max-document`), but the CLI's own commands had no bound,
//! so `statefile get data/x.json` on a sparse 20 GiB file planted at a document's name
//! reserved 20 GiB to read it, and a conditional write or a delete hashed it for
//! minutes under the document's lock. Every document command now refuses such a file at
//! once (exit 1, naming the file, its size and the limit, nothing changed), with the
//! server's default of 64 MiB; an unconditional `put` replaces it, keeping it aside.
//!
//! Children run capped in memory (`prlimit --as`, as in hostile.rs) and in time, so a
//! regression fails the test instead of taking the machine down or hanging it.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Run, Sandbox};
use crate::hostile::capped;

/// The planted file: 20 GiB, sparse (instant to make, no disk used).
const HUGE: u64 = 20 << 30;
/// `--max-document`'s default, the same as `serve`'s.
const DEFAULT_LIMIT: u64 = 64 << 20;
/// How long a refusal may take: generous, only a sanity check (it takes milliseconds;
/// hashing the planted file takes tens of seconds, reading it more).
const PROMPT: Duration = Duration::from_secs(10);
/// A child still running after this is killed and the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// Make `path` `len` bytes long without writing them.
fn sparse(path: &Path, len: u64) {
    std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// `statefile ARGS` with `stdin`, capped in memory and killed after [`DEADLINE`]: what
/// it said and how long it took.
fn run_bounded(sb: &Sandbox, args: &[&str], stdin: &[u8]) -> (Run, Duration) {
    let started = Instant::now();
    let mut child = capped(sb.dir.path(), args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("statefile {args:?} still ran after {DEADLINE:?}: it reads or hashes the file");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    writer.join().unwrap();
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    (run, took)
}

/// `statefile ARGS` refuses `file`, of `size` bytes, at once: exit 1, naming the file, its
/// size, the limit and the flag that raises it.
fn refused_at_once(sb: &Sandbox, args: &[&str], stdin: &[u8], file: &str, size: u64, limit: u64) {
    let (run, took) = run_bounded(sb, args, stdin);
    let run = run.code(1);
    for needle in [
        file.to_string(),
        format!("{size} bytes"),
        format!("limit of {limit} bytes"),
        "--max-document".to_string(),
    ] {
        assert!(
            run.stderr.contains(&needle),
            "statefile {args:?}: stderr lacks {needle:?}: {}",
            run.stderr
        );
    }
    // In the CLI's terms: its flag, not the library's option.
    assert!(
        !run.stderr.contains("Options::"),
        "statefile {args:?}: {}",
        run.stderr
    );
    assert!(took < PROMPT, "statefile {args:?} took {took:?}");
}

/// The names in the sandbox, lock files left out (taking a lock changes nothing).
fn names(sb: &Sandbox) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(sb.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    names.sort();
    names
}

/// Nothing changed: only `big.json`, still [`HUGE`] bytes (and what `also` names).
fn unchanged(sb: &Sandbox, also: &[&str]) {
    let mut want: Vec<String> = ["big.json"]
        .iter()
        .chain(also)
        .map(|s| s.to_string())
        .collect();
    want.sort();
    assert_eq!(names(sb), want);
    assert_eq!(std::fs::metadata(sb.path("big.json")).unwrap().len(), HUGE);
}

fn planted() -> Sandbox {
    let sb = Sandbox::new();
    sparse(&sb.path("big.json"), HUGE);
    sb
}

#[test]
fn get_refuses_a_planted_huge_file_at_once() {
    let sb = planted();
    for args in [
        vec!["get", "big.json"],
        vec!["get", "--raw", "big.json", "/status"],
        vec!["get", "--lines", "big.json", "/items"],
        vec!["get", "--fallback", "big.json"],
        vec!["version", "big.json"],
    ] {
        refused_at_once(&sb, &args, b"", "big.json", HUGE, DEFAULT_LIMIT);
        unchanged(&sb, &[]);
    }
    // A raised limit is still a limit.
    refused_at_once(
        &sb,
        &["get", "--max-document", "1G", "big.json"],
        b"",
        "big.json",
        HUGE,
        1 << 30,
    );
}

#[test]
fn put_replaces_a_planted_huge_file_at_once_and_refuses_what_needs_its_version() {
    let sb = planted();
    // What needs its version is refused at once (it is never hashed), changing nothing.
    let zeros = "0".repeat(64);
    refused_at_once(
        &sb,
        &["put", "--if-match", &zeros, "big.json"],
        b"[0]",
        "big.json",
        HUGE,
        DEFAULT_LIMIT,
    );
    unchanged(&sb, &[]);
    // --create finds it exists.
    let (run, took) = run_bounded(&sb, &["put", "--create", "big.json"], b"[0]");
    run.code(3);
    assert!(took < PROMPT, "put --create took {took:?}");
    unchanged(&sb, &[]);
    // A plain put replaces it at once, keeping it aside as .big.json.corrupt, never
    // among the backups (as the server's PUT does).
    let (run, took) = run_bounded(&sb, &["put", "big.json"], b"[1]");
    run.ok();
    assert!(took < PROMPT, "put took {took:?}");
    assert_eq!(
        std::fs::metadata(sb.path(".big.json.corrupt"))
            .unwrap()
            .len(),
        HUGE
    );
    assert!(!sb.path(".big.json.bak").exists());
    assert_eq!(sb.json("big.json"), json!([1]));
}

#[test]
fn patch_refuses_a_planted_huge_file_at_once() {
    let sb = planted();
    let cases: [(&[&str], &[u8]); 3] = [
        (&["patch", "big.json"], br#"{"status": "done"}"#),
        (
            &["patch", "--json-patch", "big.json"],
            br#"[{"op": "add", "path": "/a", "value": 1}]"#,
        ),
        (
            &["patch", "--if-match", &"0".repeat(64), "big.json"],
            br#"{"a": 1}"#,
        ),
    ];
    for (args, stdin) in cases {
        refused_at_once(&sb, args, stdin, "big.json", HUGE, DEFAULT_LIMIT);
        unchanged(&sb, &[]);
    }
}

#[test]
fn append_and_set_refuse_a_planted_huge_file_at_once() {
    let sb = planted();
    for args in [
        vec!["append", "big.json", "/list", "1"],
        vec!["append", "--string", "big.json", "", "line"],
        vec!["set", "big.json", "/status", "\"done\""],
    ] {
        refused_at_once(&sb, &args, b"", "big.json", HUGE, DEFAULT_LIMIT);
        unchanged(&sb, &[]);
    }
}

#[test]
fn rm_refuses_a_planted_huge_file_at_once() {
    let sb = planted();
    // Removing a value reads the document; removing the document reports the version it
    // removed, which would mean hashing it.
    for args in [vec!["rm", "big.json", "/tmp"], vec!["rm", "big.json"]] {
        refused_at_once(&sb, &args, b"", "big.json", HUGE, DEFAULT_LIMIT);
        unchanged(&sb, &[]);
    }
    // --all removes it without looking at it.
    let (run, took) = run_bounded(&sb, &["rm", "--all", "big.json"], b"");
    run.ok();
    assert!(took < PROMPT, "rm --all took {took:?}");
    assert!(!sb.path("big.json").exists());
}

#[test]
fn backups_restore_verify_and_recover_pass_over_a_planted_huge_file_at_once() {
    let sb = Sandbox::new();
    sb.run_in(&["put", "doc.json"], b"{\"n\": 1}").ok();
    sb.run_in(&["put", "doc.json"], b"{\"n\": 2}").ok();
    // The backup is replaced by a huge file: left out of the listing, not restored.
    sparse(&sb.path(".doc.json.bak"), 0);
    sparse(&sb.path(".doc.json.bak"), HUGE);
    let (run, took) = run_bounded(&sb, &["backups", "--json", "doc.json"], b"");
    let run = run.ok();
    assert!(took < PROMPT, "backups took {took:?}");
    assert!(!run.stdout.contains("\"parses\":true"), "{}", run.stdout);
    let (run, took) = run_bounded(&sb, &["restore", "doc.json"], b"");
    assert_ne!(run.code, 0, "{run:?}");
    assert!(took < PROMPT, "restore took {took:?}");
    assert_eq!(sb.json("doc.json"), json!({"n": 2}));
    let (run, took) = run_bounded(&sb, &["restore", "--from", "1", "doc.json"], b"");
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains(&HUGE.to_string()), "{}", run.stderr);
    assert!(took < PROMPT, "restore --from 1 took {took:?}");
    assert_eq!(sb.json("doc.json"), json!({"n": 2}));
    // A damaged document whose only backup is huge: what to do is said at once.
    sb.write("doc.json", b"{\"n\": ");
    let (run, took) = run_bounded(&sb, &["get", "--fallback", "doc.json"], b"");
    run.code(5);
    assert!(took < PROMPT, "get --fallback took {took:?}");
    // verify and recover report the huge document at once; recover changes nothing.
    sparse(&sb.path("big.json"), HUGE);
    for args in [
        vec!["verify", "."],
        vec!["recover", "--dry-run", "."],
        vec!["verify", "big.json"],
    ] {
        let (run, took) = run_bounded(&sb, &args, b"");
        assert!(took < PROMPT, "{args:?} took {took:?}");
        let out = format!("{}{}", run.stdout, run.stderr);
        assert!(out.contains("big.json"), "{args:?}: {out}");
        assert!(out.contains("limit of 67108864 bytes"), "{args:?}: {out}");
        assert!(out.contains("(--max-document)"), "{args:?}: {out}");
        assert_eq!(run.code, 5, "{args:?}: {out}");
    }
    assert_eq!(std::fs::metadata(sb.path("big.json")).unwrap().len(), HUGE);
}

#[test]
fn a_transaction_refuses_a_planted_huge_file_at_once() {
    let sb = Sandbox::new();
    sb.run(&["journal", "enable", "--size", "64K", "."]).ok();
    sparse(&sb.path("big.json"), HUGE);
    let ops = [
        r#"[{"op": "get", "doc": "big.json"}]"#,
        r#"[{"op": "append", "doc": "big.json", "pointer": "/l", "value": 1}]"#,
        r#"[{"op": "put", "doc": "ok.json", "value": 1},
            {"op": "patch", "doc": "big.json", "merge": {"a": 1}}]"#,
    ];
    for op in ops {
        refused_at_once(
            &sb,
            &["tx", "."],
            op.as_bytes(),
            "big.json",
            HUGE,
            DEFAULT_LIMIT,
        );
        assert!(!sb.path("ok.json").exists());
        assert_eq!(std::fs::metadata(sb.path("big.json")).unwrap().len(), HUGE);
    }
}

/// A real document just over the default: refused by default, read and written with
/// the limit raised.
#[test]
fn a_document_within_a_raised_max_document_works() {
    let sb = Sandbox::new();
    let text = "x".repeat((DEFAULT_LIMIT + 1024) as usize);
    let doc = json!({"text": text, "list": []});
    sb.write("real.json", &serde_json::to_vec(&doc).unwrap());
    let size = std::fs::metadata(sb.path("real.json")).unwrap().len();
    refused_at_once(
        &sb,
        &["get", "real.json", "/list"],
        b"",
        "real.json",
        size,
        DEFAULT_LIMIT,
    );
    let raised = ["--max-document", "65M", "--durability", "none"];
    let out = sb
        .run(&[&["append"][..], &raised, &["real.json", "/list", "7"]].concat())
        .ok();
    let got: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(got["index"], 0);
    let out = sb
        .run(&[
            "get",
            "--compact",
            "--max-document",
            "65M",
            "real.json",
            "/list",
        ])
        .ok();
    assert_eq!(out.stdout, "[7]\n");
    let out = sb
        .run(&[
            "get",
            "--max-document",
            "65M",
            "--raw",
            "real.json",
            "/text",
        ])
        .ok();
    assert_eq!(out.stdout.len(), text.len() + 1);
    // A document's stored form over the limit is not written.
    let small = Sandbox::new();
    small.run_in(&["put", "a.json"], b"[1]").ok();
    let big = format!("[{}]", "1,".repeat(1000) + "1");
    let out = small
        .run_in(&["put", "--max-document", "1K", "a.json"], big.as_bytes())
        .code(1);
    assert!(out.stderr.contains("a.json"), "{}", out.stderr);
    assert!(out.stderr.contains("1024 bytes"), "{}", out.stderr);
    assert!(out.stderr.contains("--max-document"), "{}", out.stderr);
    assert_eq!(small.json("a.json"), json!([1]));
    small
        .run_in(&["put", "--max-document", "8K", "a.json"], big.as_bytes())
        .ok();
    // The same syntax as serve's: a bad size is a usage error.
    small
        .run(&["get", "--max-document", "12X", "a.json"])
        .code(2)
        .stderr_has("is not a size");
}
