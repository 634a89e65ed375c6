//! Hostile input through the real binary and the real server over a socket: pointers
//! deeper than any document, stores nested thousands of directories deep, patches that
//! multiply a document or hold its lock for minutes. Each was a crash (a stack overflow
//! aborts the process), an exhaustion of memory, or a lock held for minutes, before it
//! was bounded. And numbers a float would change, which are now kept exactly.
//!
//! Children run under `prlimit --as` where a regression could exhaust memory, so it
//! fails the test instead of taking the machine down.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{BIN, Sandbox};
use serde_json::{Value, json};

/// Address space for a child: enough for the runtime's threads, far below what the
/// attacks would take.
const CHILD_AS: u64 = 1 << 30;

/// `statefile ARGS` under `prlimit --as=CHILD_AS`, in `dir` (max_document.rs runs its
/// children this way too).
pub(crate) fn capped(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("prlimit");
    c.arg(format!("--as={CHILD_AS}"))
        .arg("--")
        .arg(BIN)
        .args(args)
        .current_dir(dir)
        // Fewer malloc arenas: each reserves 64 MiB of address space per thread.
        .env("MALLOC_ARENA_MAX", "2")
        .env_remove("STATEFILE_DURABILITY")
        .env_remove("STATEFILE_BACKUPS")
        .env_remove("STATEFILE_LOCK_TIMEOUT")
        .env_remove("STATEFILE_TOKEN");
    c
}

/// Run a capped `statefile` with `stdin`; (exit code, stdout, stderr).
fn run_capped(dir: &Path, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = capped(dir, args)
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
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A capped `statefile serve DIR EXTRA...` on a free port.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--addr", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = capped(Path::new("/"), &args)
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the server did not start: {line:?}"));
        Server { child, addr }
    }

    /// One request on a fresh connection: (status, body). Panics if the server is gone.
    fn request(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        let mut s = TcpStream::connect(self.addr).expect("the server is gone");
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        // The server may answer before reading a body it refuses.
        let _ = s.write_all(body);
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("no answer to {method} {}: {e}", cut(path)));
        let text = String::from_utf8_lossy(&out);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no answer to {method} {}: {text:?}", cut(path)));
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, "application/json", b"")
    }

    /// The server still answers.
    fn alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the server exited"
        );
        assert_eq!(self.get("/healthz").0, 200);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cut(s: &str) -> &str {
    &s[..s.len().min(80)]
}

/// Assert a problem+json answer of `status` and type `slug`.
fn problem(answer: (u16, Value), status: u16, slug: &str) -> Value {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(
        answer.1["type"],
        format!("urn:statefile:problem:{slug}"),
        "{}",
        answer.1
    );
    answer.1
}

// Regression (issue 9): a pointer of 130,000 `/` overflowed the CLI's stack (a value
// 130,000 levels deep); every pointer-taking command now refuses it as a usage error.
#[test]
fn cli_refuses_pointers_deeper_than_any_document() {
    let sb = Sandbox::new();
    sb.write("d.json", b"{\"a\": 1}\n");
    let before = sb.read("d.json");
    let long = "/".repeat(130_000);
    for args in [
        vec!["append", "--parents", "new.json", &long, "1"],
        vec!["append", "d.json", &long, "1"],
        vec!["set", "d.json", &long, "1"],
        vec!["get", "d.json", &long],
        vec!["rm", "d.json", &long],
    ] {
        let (code, _, stderr) = run_capped(sb.dir.path(), &args, b"");
        assert_eq!(code, 2, "{} {stderr}", args[0]);
        assert!(stderr.contains("at most 127"), "{stderr}");
        assert!(
            stderr.len() < 1_000,
            "the error quotes the pointer: {stderr}"
        );
    }
    assert_eq!(sb.read("d.json"), before);
    assert!(!sb.path("new.json").exists());
    // The deepest pointer allowed builds a value the library then refuses to store.
    let deepest = "/b".repeat(127);
    sb.run(&["set", "d.json", &deepest, "[[1]]"])
        .code(1)
        .stderr_has("nested deeper than 127");
    assert_eq!(sb.read("d.json"), before);
}

// An object whose key is serde_json's exact-number marker was parsed as the number its
// value spells: `echo '{"$serde_json::private::Number":"12"}' | statefile put x.json`
// stored `12`. Every way in refuses it (exit 2, nothing written), and a document that
// holds it (written by another program) is refused on read instead of read as a number.
#[test]
fn the_reserved_number_key_is_refused_not_stored_as_a_number() {
    let sb = Sandbox::new();
    sb.write("d.json", b"{\"a\": []}\n");
    let before = sb.read("d.json");
    let key = statefile::RESERVED_KEY;
    let value = format!(r#"{{"{key}": "12"}}"#);
    let escaped = r#"{"\u0024serde_json::private::Number": "12"}"#;
    for (args, stdin) in [
        (vec!["put", "new.json"], value.clone()),
        (vec!["put", "d.json"], escaped.to_string()),
        (vec!["patch", "d.json"], format!(r#"{{"b": {value}}}"#)),
        (
            vec!["patch", "--json-patch", "d.json"],
            format!(r#"[{{"op": "add", "path": "/b", "value": {value}}}]"#),
        ),
        (
            vec!["tx", "."],
            format!(r#"[{{"op": "put", "doc": "new.json", "value": [{value}]}}]"#),
        ),
    ] {
        let out = sb.run_in(&args, stdin.as_bytes());
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(key), "{args:?}: {}", out.stderr);
    }
    for args in [
        vec!["set", "d.json", "/b", value.as_str()],
        vec!["append", "d.json", "/a", escaped],
    ] {
        let out = sb.run(&args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(key), "{args:?}: {}", out.stderr);
    }
    assert_eq!(sb.read("d.json"), before);
    assert!(!sb.path("new.json").exists());

    sb.write("foreign.json", value.as_bytes());
    let out = sb.run(&["get", "foreign.json"]);
    assert_ne!(out.code, 0, "read as a number: {out:?}");
    assert!(!out.stdout.contains("12"), "{out:?}");
    assert!(out.stderr.contains(key), "{}", out.stderr);
}

// Regression (issue 9): `POST …/append?pointer=` + 60,000 `/` aborted the server.
#[test]
fn server_refuses_pointers_deeper_than_any_document() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    // 60,000 is now over the request-target limit (414); 5,000 still reaches the pointer.
    let (status, _) = server.request(
        "POST",
        &format!("/v1/docs/d.json/append?pointer={}", "/".repeat(60_000)),
        "application/json",
        b"1",
    );
    assert_eq!(status, 414);
    let long = "/".repeat(5_000);
    let p = problem(
        server.request(
            "POST",
            &format!("/v1/docs/d.json/append?pointer={long}"),
            "application/json",
            b"1",
        ),
        400,
        "invalid-pointer",
    );
    assert!(p["detail"].as_str().unwrap().contains("at most 127"), "{p}");
    server.alive();
    assert_eq!(server.get("/v1/docs/d.json").0, 404, "nothing was created");
    server.request("PUT", "/v1/docs/d.json", "application/json", b"{}");
    problem(
        server.get(&format!("/v1/docs/d.json?pointer={long}")),
        400,
        "invalid-pointer",
    );
    server.alive();
}

// Regression (issue 9 item 2, found while bounding recursion): the recovery scan at
// start recursed once per directory level, and a store 2,000 levels deep overflowed a
// blocking thread's stack: `statefile serve` aborted before listening. Listing did too.
#[test]
fn a_store_thousands_of_directories_deep_is_served_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let mut deep = dir.path().to_path_buf();
    while deep.as_os_str().len() < 4_080 {
        deep.push("a");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("x.json"), "{}").unwrap();
    std::fs::write(dir.path().join("top.json"), "{\"n\": 1}").unwrap();
    let (code, out, err) = run_capped(dir.path(), &["verify", "."], b"");
    assert_eq!(code, 0, "{out}{err}");
    let mut server = Server::start(dir.path(), &[]);
    let (status, names) = server.get("/v1/docs");
    assert_eq!(status, 200);
    assert_eq!(names["names"].as_array().unwrap().len(), 2, "{names}");
    assert_eq!(server.get("/v1/docs/top.json").1, json!({"n": 1}));
    server.alive();
}

/// `n` JSON Patch operations copying the whole document into itself: each doubles it.
fn doubling_patch(n: usize) -> Vec<u8> {
    let ops: Vec<Value> = (0..n)
        .map(|i| json!({"op": "copy", "from": "", "path": format!("/c{i}")}))
        .collect();
    serde_json::to_vec(&ops).unwrap()
}

/// 400,000 `add` at `/a/0`: a 15 MB patch, O(n^2) array shifts if applied.
fn shifting_patch(n: usize) -> Vec<u8> {
    let mut body = b"[".to_vec();
    for i in 0..n {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"op":"add","path":"/a/0","value":1}"#);
    }
    body.push(b']');
    body
}

// Regression (issue 9): 40 `copy` from "" (1.6 KB) doubled the document 40 times until
// memory ran out; and 400,000 `add` at /a/0 ran for minutes. Both through the CLI,
// capped at 1 GiB of address space: refused, the file untouched.
#[test]
fn cli_patches_that_multiply_or_grind_are_refused() {
    let sb = Sandbox::new();
    sb.write(
        "d.json",
        format!("{{\"s\": \"{}\"}}\n", "x".repeat(1000)).as_bytes(),
    );
    let before = sb.read("d.json");
    let (code, _, err) = run_capped(
        sb.dir.path(),
        &["patch", "--json-patch", "d.json"],
        &doubling_patch(40),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("over the limit of 16777216 bytes"), "{err}");
    // 1 KB doubled 14 times passes 16 MiB: the 15th copy (operation 14) is refused.
    assert!(err.contains("operation 14 (copy)"), "{err}");
    let (code, _, err) = run_capped(
        sb.dir.path(),
        &["patch", "--json-patch", "--max-size", "100000", "d.json"],
        &doubling_patch(40),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("operation 6 (copy)"), "{err}");
    sb.write("a.json", b"{\"a\": []}\n");
    let arr = sb.read("a.json");
    let (code, _, err) = run_capped(
        sb.dir.path(),
        &["patch", "--json-patch", "a.json"],
        &shifting_patch(400_000),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("more than 10000 operations"), "{err}");
    let (code, _, err) = run_capped(
        sb.dir.path(),
        &["patch", "--json-patch", "--max-ops", "3", "a.json"],
        &shifting_patch(4),
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(sb.read("d.json"), before);
    assert_eq!(sb.read("a.json"), arr);
    sb.run_in(
        &["patch", "--json-patch", "--max-ops", "3", "a.json"],
        &shifting_patch(3),
    )
    .ok();
    assert_eq!(sb.json("a.json"), json!({"a": [1, 1, 1]}));
    assert!(crate::common::temps(sb.dir.path()).is_empty());
}

// Regression: json-patch 5 panicked (exit 101) undoing a move to "" once a later
// operation failed, or a move that failed after removing its source; and its remove
// reordered the other members (swap_remove).
#[test]
fn cli_json_patch_is_all_or_nothing_and_keeps_member_order() {
    let sb = Sandbox::new();
    sb.write("l.json", b"[1]\n");
    sb.run_in(
        &["patch", "--json-patch", "l.json"],
        br#"[{"op": "move", "from": "/0", "path": ""}, {"op": "remove", "path": ""}]"#,
    )
    .code(1)
    .stderr_has("operation 1 (remove): cannot remove the whole document");
    assert_eq!(sb.read("l.json"), b"[1]\n");
    // And when a move fails after removing its source, with an earlier operation to undo.
    sb.run_in(
        &["patch", "--json-patch", "l.json"],
        br#"[{"op": "replace", "path": "/0", "value": 2}, {"op": "move", "from": "/0", "path": "/a"}]"#,
    )
    .code(1)
    .stderr_has("operation 1 (move)");
    assert_eq!(sb.read("l.json"), b"[1]\n");
    sb.write("c.json", br#"{"a": 1, "b": 2, "c": 3, "d": 4}"#);
    sb.run_in(
        &["patch", "--json-patch", "c.json"],
        br#"[{"op": "remove", "path": "/a"}]"#,
    )
    .ok();
    sb.run_in(&["patch", "c.json"], br#"{"b": null, "e": 5}"#)
        .ok();
    assert_eq!(
        String::from_utf8(sb.read("c.json")).unwrap(),
        "{\n  \"c\": 3,\n  \"d\": 4,\n  \"e\": 5\n}\n"
    );
}

// Regression (issue 9): the same attacks over HTTP, against a server capped at 1 GiB.
#[test]
fn server_patches_that_multiply_or_grind_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let doc = json!({"s": "x".repeat(1000)});
    let put = server.request(
        "PUT",
        "/v1/docs/d.json",
        "application/json",
        doc.to_string().as_bytes(),
    );
    assert_eq!(put.0, 201);
    let jp = "application/json-patch+json";
    let p = problem(
        server.request("PATCH", "/v1/docs/d.json", jp, &doubling_patch(40)),
        422,
        "patch-result-too-large",
    );
    assert!(p["detail"].as_str().unwrap().contains("16777216"), "{p}");
    let p = problem(
        server.request("PATCH", "/v1/docs/d.json", jp, &shifting_patch(400_000)),
        413,
        "patch-too-large",
    );
    assert!(p["detail"].as_str().unwrap().contains("10000"), "{p}");
    problem(
        server.request(
            "PATCH",
            "/v1/docs/d.json",
            jp,
            br#"[{"op": "move", "from": "/s", "path": ""}, {"op": "remove", "path": ""}]"#,
        ),
        422,
        "patch-not-applicable",
    );
    problem(
        server.request(
            "PATCH",
            "/v1/docs/d.json",
            jp,
            format!(
                r#"[{{"op": "add", "path": "{}", "value": 1}}]"#,
                "/".repeat(60_000)
            )
            .as_bytes(),
        ),
        400,
        "invalid-patch",
    );
    server.alive();
    assert_eq!(
        server.get("/v1/docs/d.json").1,
        doc,
        "the document is untouched"
    );
}

// Regression (issue 9 item 6): a patch that would run for minutes under the lock stops
// at the request's time limit and gives the lock back (after undoing what it did), so
// the next writer of that document gets through instead of 503 for minutes.
#[test]
fn server_a_slow_patch_stops_at_the_time_limit_and_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    // A million elements: each `add` at /a/0 shifts them all (tens of MB of memmove).
    // Written directly: a PUT of it may itself take more than 3 s on a debug build.
    let big = format!("{{\"a\": [{}1]}}", "1,".repeat(999_999));
    std::fs::write(dir.path().join("big.json"), &big).unwrap();
    let server = Server::start(dir.path(), &["--request-timeout", "3"]);
    let started = std::time::Instant::now();
    let (status, body) = server.request(
        "PATCH",
        "/v1/docs/big.json",
        "application/json-patch+json",
        &shifting_patch(10_000),
    );
    assert_eq!(status, 503, "{body}");
    // Unfixed, the patch held the lock for minutes; now it stops at its 3 s limit and
    // undoes what it did (about as long again). A write gets through well before.
    let replaced = loop {
        let (status, _) = server.request(
            "PUT",
            "/v1/docs/big.json",
            "application/json",
            b"{\"a\": []}",
        );
        if status == 200 {
            break started.elapsed();
        }
        assert_eq!(status, 503);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the patch still holds the lock a minute later"
        );
    };
    assert_eq!(server.get("/v1/docs/big.json").1, json!({"a": []}));
    eprintln!("the document was writable again {replaced:?} after the patch started");
}

/// Numbers a float or a 64-bit integer would change (issue 9 item 8).
const EXACT_NUMBERS: [&str; 7] = [
    "123456789012345678901234567890",
    "18446744073709551616",
    "-9223372036854775809",
    "1e-400",
    "1.0",
    "-0",
    "0.30000000000000000001",
];

// Regression (issue 9): `statefile` stored 123456789012345678901234567890 as
// 1.2345678901234568e+29, 18446744073709551616 as a float and 1e-400 as 0.0, exit 0.
#[test]
fn cli_keeps_numbers_exactly() {
    let sb = Sandbox::new();
    let all = format!("[{}]", EXACT_NUMBERS.join(","));
    sb.run_in(&["put", "p.json"], all.as_bytes()).ok();
    assert_eq!(
        sb.run(&["get", "--compact", "p.json"]).ok().stdout,
        format!("{all}\n")
    );
    for n in EXACT_NUMBERS {
        sb.run(&["set", "s.json", "/n", "--", n]).ok();
        let stored = String::from_utf8(sb.read("s.json")).unwrap();
        assert!(stored.contains(&format!("\"n\": {n}\n")), "{n}: {stored}");
        sb.run(&["append", "a.json", "/list", "--", n]).ok();
        sb.run_in(&["patch", "m.json"], format!("{{\"m\": {n}}}").as_bytes())
            .ok();
        sb.run_in(
            &["patch", "--json-patch", "m.json"],
            format!(r#"[{{"op": "add", "path": "/j", "value": {n}}}, {{"op": "test", "path": "/j", "value": {n}}}]"#)
                .as_bytes(),
        )
        .ok();
        for ptr in ["/m", "/j"] {
            assert_eq!(
                sb.run(&["get", "m.json", ptr]).ok().stdout,
                format!("{n}\n")
            );
        }
    }
    assert_eq!(
        sb.run(&["get", "--compact", "a.json", "/list"]).ok().stdout,
        format!("{all}\n")
    );
}

// Regression (issue 9): the same over HTTP, answered 201.
#[test]
fn server_keeps_numbers_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let all = format!("[{}]", EXACT_NUMBERS.join(","));
    let put = server.request("PUT", "/v1/docs/p.json", "application/json", all.as_bytes());
    assert_eq!(put.0, 201);
    assert_eq!(server.get("/v1/docs/p.json").1.to_string(), all);
    let stored = std::fs::read_to_string(dir.path().join("p.json")).unwrap();
    for n in EXACT_NUMBERS {
        assert!(stored.contains(&format!("  {n}")), "{n}: {stored}");
        let (status, _) = server.request(
            "POST",
            "/v1/docs/a.json/append?pointer=/list",
            "application/json",
            n.as_bytes(),
        );
        assert_eq!(status, 200);
        let merge = format!("{{\"m\": {n}}}");
        let (status, _) = server.request(
            "PATCH",
            "/v1/docs/m.json",
            "application/merge-patch+json",
            merge.as_bytes(),
        );
        assert_eq!(status, 200);
        let ops = format!(
            r#"[{{"op": "add", "path": "/j", "value": {n}}}, {{"op": "test", "path": "/j", "value": {n}}}]"#
        );
        let (status, body) = server.request(
            "PATCH",
            "/v1/docs/m.json",
            "application/json-patch+json",
            ops.as_bytes(),
        );
        assert_eq!(status, 200, "{body}");
        for ptr in ["/m", "/j"] {
            let (_, v) = server.get(&format!("/v1/docs/m.json?pointer={ptr}"));
            assert_eq!(v.to_string(), n);
        }
    }
    assert_eq!(
        server.get("/v1/docs/a.json?pointer=/list").1.to_string(),
        all
    );
}

/// JSON Patch `test` compares numbers by value, exactly: `1` is `1.0`, a big integer is
/// itself and not its neighbour, `1e-400` is not `0`. Each (stored, the same value spelled
/// otherwise, a value a float would confuse with it). The second is spelled as serde_json
/// keeps it, since a merge patch stores it.
const SAME_AND_DIFFERENT: [(&str, &str, &str); 5] = [
    ("1.0", "1", "1.0000000000000000000001"),
    ("100", "1e+2", "100.00000000000000000001"),
    (
        "123456789012345678901234567890",
        "1.2345678901234567890123456789e+29",
        "123456789012345678901234567891",
    ),
    ("1e-400", "10e-401", "0"),
    ("-0", "0.0", "1e-400"),
];

fn test_op(n: &str) -> String {
    format!(
        r#"[{{"op": "test", "path": "/n", "value": {n}}}, {{"op": "add", "path": "/ok", "value": true}}]"#
    )
}

// A `test` that a float comparison would pass (123456789012345678901234567890 against
// ...891, 1e-400 against 0) fails, and one that differs only in spelling passes.
#[test]
fn cli_json_patch_test_compares_numbers_exactly() {
    let sb = Sandbox::new();
    for (stored, same, different) in SAME_AND_DIFFERENT {
        let doc = format!("{{\"n\": {stored}}}\n");
        sb.write("t.json", doc.as_bytes());
        sb.run_in(
            &["patch", "--json-patch", "t.json"],
            test_op(different).as_bytes(),
        )
        .code(1)
        .stderr_has("test failed");
        assert_eq!(sb.read("t.json"), doc.as_bytes(), "{different}");
        sb.run_in(
            &["patch", "--json-patch", "t.json"],
            test_op(same).as_bytes(),
        )
        .ok();
        assert_eq!(
            String::from_utf8(sb.read("t.json")).unwrap(),
            format!("{{\n  \"n\": {stored},\n  \"ok\": true\n}}\n")
        );
        // A merge patch stores the number it is given, spelling and all.
        sb.run_in(
            &["patch", "t.json"],
            format!("{{\"n\": {same}}}").as_bytes(),
        )
        .ok();
        assert_eq!(
            sb.run(&["get", "t.json", "/n"]).ok().stdout,
            format!("{same}\n")
        );
    }
    // The one change serde_json makes to a number's text: its exponent is spelled `e`,
    // with `+` when positive. The same value, as a `test` confirms.
    sb.run_in(&["put", "e.json"], b"[1E2, 1e5, 2.5E-3, 1E+0]")
        .ok();
    assert_eq!(
        sb.run(&["get", "--compact", "e.json"]).ok().stdout,
        "[1e+2,1e+5,2.5e-3,1e+0]\n"
    );
    sb.run_in(
        &["patch", "--json-patch", "e.json"],
        br#"[{"op": "test", "path": "", "value": [100, 100000, 0.0025, 1]}]"#,
    )
    .ok();
}

#[test]
fn server_json_patch_test_compares_numbers_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    for (stored, same, different) in SAME_AND_DIFFERENT {
        let doc = format!("{{\"n\": {stored}}}");
        let put = server.request("PUT", "/v1/docs/t.json", "application/json", doc.as_bytes());
        assert!(put.0 == 200 || put.0 == 201, "{put:?}");
        let before = std::fs::read(dir.path().join("t.json")).unwrap();
        let patch = |ops: String| {
            server.request(
                "PATCH",
                "/v1/docs/t.json",
                "application/json-patch+json",
                ops.as_bytes(),
            )
        };
        let (status, body) = patch(test_op(different));
        assert_eq!(status, 422, "{different}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("test failed"),
            "{body}"
        );
        assert_eq!(std::fs::read(dir.path().join("t.json")).unwrap(), before);
        let (status, body) = patch(test_op(same));
        assert_eq!(status, 200, "{same}: {body}");
        let merge = format!("{{\"n\": {same}}}");
        let (status, _) = server.request(
            "PATCH",
            "/v1/docs/t.json",
            "application/merge-patch+json",
            merge.as_bytes(),
        );
        assert_eq!(status, 200);
        let stored_now = std::fs::read_to_string(dir.path().join("t.json")).unwrap();
        assert_eq!(
            stored_now,
            format!("{{\n  \"n\": {same},\n  \"ok\": true\n}}\n")
        );
    }
}

/// A number literal of `n` digits, and one whose exponent has `n` digits.
fn long_numbers(n: usize) -> [String; 2] {
    [
        format!("-{}.{}", "7".repeat(n / 2), "3".repeat(n / 2)),
        // As serde_json keeps it: a positive exponent gets its `+`.
        format!("1e+{}", "9".repeat(n)),
    ]
}

/// Generous: the linear work takes a few seconds in a debug build; a quadratic step on a
/// million digits would take hours.
const LINEAR: Duration = Duration::from_secs(60);

// A number of a million digits (inside the default limits) is stored, served,
// compared by a JSON Patch test and merged exactly, each in time linear in its length:
// nothing expands an exponent, converts the digits to a float or compares them pairwise.
// Beyond --max-body it is refused (413) before it is parsed.
#[test]
fn server_numbers_of_a_million_digits_cost_their_length() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-body", "4MiB"]);
    for n in long_numbers(1_000_000) {
        let started = std::time::Instant::now();
        let doc = format!("{{\"n\": {n}}}");
        let put = server.request(
            "PUT",
            "/v1/docs/big.json",
            "application/json",
            doc.as_bytes(),
        );
        assert!(put.0 == 200 || put.0 == 201, "{}", put.0);
        let stored = std::fs::read_to_string(dir.path().join("big.json")).unwrap();
        assert!(
            stored == format!("{{\n  \"n\": {n}\n}}\n"),
            "stored: {}",
            cut(&stored)
        );
        let (status, v) = server.get("/v1/docs/big.json?pointer=/n");
        assert_eq!(status, 200);
        let served = v.to_string();
        assert!(served == n, "served: {}", cut(&served));
        let (status, body) = server.request(
            "PATCH",
            "/v1/docs/big.json",
            "application/json-patch+json",
            test_op(&n).as_bytes(),
        );
        assert_eq!(status, 200, "{body}");
        let mut other = n.clone();
        other.push('1');
        let (status, _) = server.request(
            "PATCH",
            "/v1/docs/big.json",
            "application/json-patch+json",
            test_op(&other).as_bytes(),
        );
        assert_eq!(status, 422);
        let (status, _) = server.request(
            "POST",
            "/v1/docs/list.json/append?pointer=/l",
            "application/json",
            n.as_bytes(),
        );
        assert_eq!(status, 200);
        let (status, _) = server.request(
            "PATCH",
            "/v1/docs/big.json",
            "application/merge-patch+json",
            format!("{{\"m\": {n}}}").as_bytes(),
        );
        assert_eq!(status, 200);
        let elapsed = started.elapsed();
        assert!(elapsed < LINEAR, "{} bytes took {elapsed:?}", n.len());
        eprintln!(
            "a number of {} bytes: put, get, test twice, append, merge in {elapsed:?}",
            n.len()
        );
    }
    let over = format!("[{}]", "1".repeat(4 * 1024 * 1024));
    problem(
        server.request(
            "PUT",
            "/v1/docs/over.json",
            "application/json",
            over.as_bytes(),
        ),
        413,
        "body-too-large",
    );
    assert!(!dir.path().join("over.json").exists());
}

#[test]
fn cli_numbers_of_a_million_digits_cost_their_length() {
    let sb = Sandbox::new();
    for n in long_numbers(1_000_000) {
        let started = std::time::Instant::now();
        let doc = format!("{{\"n\": {n}}}");
        let (code, _, err) = run_capped(sb.dir.path(), &["put", "big.json"], doc.as_bytes());
        assert_eq!(code, 0, "{err}");
        let stored = String::from_utf8(sb.read("big.json")).unwrap();
        assert!(
            stored == format!("{{\n  \"n\": {n}\n}}\n"),
            "stored: {}",
            cut(&stored)
        );
        let (code, out, err) = run_capped(sb.dir.path(), &["get", "big.json", "/n"], b"");
        assert!(code == 0 && out == format!("{n}\n"), "{err} {}", cut(&out));
        let (code, _, err) = run_capped(
            sb.dir.path(),
            &["patch", "--json-patch", "big.json"],
            test_op(&n).as_bytes(),
        );
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = run_capped(
            sb.dir.path(),
            &["patch", "big.json"],
            format!("{{\"m\": {n}}}").as_bytes(),
        );
        assert_eq!(code, 0, "{err}");
        let (code, out, err) = run_capped(sb.dir.path(), &["get", "big.json", "/m"], b"");
        assert!(code == 0 && out == format!("{n}\n"), "{err} {}", cut(&out));
        let elapsed = started.elapsed();
        assert!(elapsed < LINEAR, "{} bytes took {elapsed:?}", n.len());
        eprintln!(
            "a number of {} bytes: put, get, test, merge in {elapsed:?}",
            n.len()
        );
    }
}

// Journal mode and `statefile tx` (issue 14) keep numbers exactly too: a put, a merge
// and a JSON Patch (whose `test` compares exactly) and an append in one transaction,
// committed through the journal, and read back by the transaction's `get`.
#[test]
fn cli_transactions_in_journal_mode_keep_numbers_exactly() {
    let sb = Sandbox::new();
    sb.run(&["journal", "enable", "--size", "64K", "."]).ok();
    let all = format!("[{}]", EXACT_NUMBERS.join(","));
    let ops = format!(
        r#"[{{"op": "put", "doc": "p.json", "value": {all}}},
            {{"op": "patch", "doc": "m.json", "merge": {{"m": {all}}}}},
            {{"op": "append", "doc": "a.json", "pointer": "/l", "value": 1e-400}},
            {{"op": "get", "doc": "p.json"}}]"#
    );
    let out = sb.run_in(&["tx", "."], ops.as_bytes()).ok();
    let answers: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(answers[3]["value"].to_string(), all);
    assert_eq!(
        sb.run(&["get", "--compact", "p.json"]).ok().stdout,
        format!("{all}\n")
    );
    assert_eq!(
        sb.run(&["get", "--compact", "m.json", "/m"]).ok().stdout,
        format!("{all}\n")
    );
    assert_eq!(
        sb.run(&["get", "--compact", "a.json", "/l"]).ok().stdout,
        "[1e-400]\n"
    );
    // A test against the float nearest to the stored integer fails the whole transaction.
    let ops = r#"[{"op": "put", "doc": "x.json", "value": 1},
        {"op": "patch", "doc": "p.json", "json_patch": [{"op": "test", "path": "/0", "value": 1.2345678901234568e29}]}]"#;
    sb.run_in(&["tx", "."], ops.as_bytes())
        .code(1)
        .stderr_has("test failed");
    assert!(!sb.dir.path().join("x.json").exists());
}

// A backup that is a symlink out of the store (the write path made one when another
// program swapped the document for a symlink mid-write, found by a hostile review; anyone
// with write access to the directory can plant one): the CLI and the server never list,
// serve or restore what it points to. The regular backup behind it is what they use.
#[test]
fn a_backup_symlinked_out_of_the_store_is_never_served_by_the_cli_or_the_server() {
    let s = Sandbox::new();
    let root = s.path("store");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(s.path("secret.json"), b"{\"secret\": \"s3cr3t\"}\n").unwrap();
    std::fs::write(root.join("a.json"), b"{\"trunc").unwrap();
    std::os::unix::fs::symlink(s.path("secret.json"), root.join(".a.json.bak")).unwrap();
    std::fs::write(root.join(".a.json.bak.2"), b"{\"v\": 0}\n").unwrap();
    let secret_version = statefile::Version::of(b"{\"secret\": \"s3cr3t\"}\n");
    let no_secret = |what: &str, text: &str| {
        assert!(
            !text.contains("s3cr3t"),
            "{what} disclosed the secret: {text}"
        );
    };

    let r = s.run(&["backups", "--json", "store/a.json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    no_secret("backups", &r.stdout);
    let listed: Value = serde_json::from_str(&r.stdout).unwrap();
    let listed = listed
        .as_array()
        .or(listed["backups"].as_array())
        .unwrap()
        .clone();
    assert_eq!(listed.len(), 1, "only the regular backup: {listed:?}");

    let r = s.run(&["get", "--fallback", "store/a.json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&r.stdout).unwrap(),
        json!({"v": 0})
    );
    no_secret("get --fallback", &r.stdout);

    let r = s.run(&["restore", "store/a.json", "--from", secret_version.as_str()]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains(".a.json.bak is a symlink"),
        "{}",
        r.stderr
    );
    no_secret("restore", &r.stderr);
    assert_eq!(std::fs::read(root.join("a.json")).unwrap(), b"{\"trunc");

    let server = Server::start(&root, &["--backups", "2"]);
    let (status, body) = server.get("/v1/docs/a.json/backups");
    assert_eq!(status, 200, "{body}");
    no_secret("GET backups", &body.to_string());
    assert_eq!(body["backups"].as_array().unwrap().len(), 1, "{body}");
    let (status, body) = server.get("/v1/docs/a.json");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"v": 0}), "served from the regular backup");
    let answer = server.request(
        "POST",
        &format!("/v1/docs/a.json/restore?from={secret_version}"),
        "application/json",
        b"",
    );
    let body = problem(answer, 404, "not-found");
    no_secret("POST restore", &body.to_string());
    assert_eq!(std::fs::read(root.join("a.json")).unwrap(), b"{\"trunc");
    let answer = server.request("POST", "/v1/docs/a.json/restore", "application/json", b"");
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(std::fs::read(root.join("a.json")).unwrap(), b"{\"v\": 0}\n");
    assert_eq!(
        std::fs::read(s.path("secret.json")).unwrap(),
        b"{\"secret\": \"s3cr3t\"}\n"
    );
}
