//! Hostile input through the real binary and the real server over a socket: pointers
//! deeper than any document, stores nested thousands of directories deep. Each was a
//! crash (a stack overflow aborts the process) before it was bounded.
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

/// `statefile ARGS` under `prlimit --as=CHILD_AS`, in `dir`.
fn capped(dir: &Path, args: &[&str]) -> Command {
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

// Regression (issue 9): `POST …/append?pointer=` + 60,000 `/` aborted the server.
#[test]
fn server_refuses_pointers_deeper_than_any_document() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let long = "/".repeat(60_000);
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
