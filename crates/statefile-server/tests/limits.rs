//! Hostile clients over real sockets (issue #9): memory held by concurrent bodies,
//! connections that never send or send slowly, one document's queue or an outside lock
//! holder starving the others, patches that would hold the lock for minutes, and the
//! answers to malformed requests. Memory and descriptor limits are tested on a server in
//! a child process under `prlimit`, so a regression fails instead of taking the machine
//! down.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Conn, Server, header};
use serde_json::{Value, json};
use statefile_server::Config;

const JSON: (&str, &str) = ("content-type", "application/json");

/// Not a test: the server process of the tests below, which start this test binary
/// again with `--ignored --exact child_server` and its configuration in the
/// environment (`CHILD_*`), under `prlimit`.
#[test]
#[ignore = "the server process that the memory and descriptor tests start"]
fn child_server() {
    let env = |k: &str| std::env::var(k).ok();
    let num = |k: &str| env(k).map(|v| v.parse::<u64>().unwrap());
    let mut c = Config::new(env("CHILD_DIR").expect("CHILD_DIR"));
    c.addr = "127.0.0.1:0".parse().unwrap();
    if let Some(n) = num("CHILD_MAX_BODY") {
        c.max_body = n as usize;
    }
    if let Some(n) = num("CHILD_BODY_MEMORY") {
        c.max_body_memory = n as usize;
    }
    if let Some(n) = num("CHILD_HEADER_TIMEOUT_MS") {
        c.header_timeout = Duration::from_millis(n);
    }
    statefile_server::run(c).unwrap();
}

/// The child server, killed when dropped.
struct Child {
    addr: SocketAddr,
    process: std::process::Child,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Child {
    /// Start it under `prlimit` with `limits`; `None` (said plainly) where prlimit is
    /// missing, and a failure under CI=true.
    fn start(dir: &std::path::Path, limits: &[&str], env: &[(&str, String)]) -> Option<Child> {
        if Command::new("prlimit").arg("--version").output().is_err() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "prlimit is missing (util-linux) and CI=true"
            );
            println!("SKIPPED: prlimit (util-linux) is not installed");
            return None;
        }
        let mut cmd = Command::new("prlimit");
        cmd.args(limits)
            .arg("--")
            .arg(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "child_server", "--nocapture"])
            .env("CHILD_DIR", dir)
            // One malloc arena per thread would reserve 64 MiB of address space each.
            .env("MALLOC_ARENA_MAX", "2")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut process = cmd.spawn().unwrap();
        let mut out = BufReader::new(process.stdout.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "the child server exited before listening"
            );
            if let Some(a) = line.trim().rsplit_once("http://") {
                break a.1.parse().unwrap();
            }
        };
        // Keep reading its stdout so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Some(Child { addr, process })
    }

    /// A line of /proc/PID/status, e.g. `VmHWM`, in bytes.
    fn status_kib(&self, field: &str) -> u64 {
        proc_status_kib(&self.process.id().to_string(), field)
    }

    fn alive(&mut self) -> bool {
        self.process.try_wait().unwrap().is_none()
    }
}

/// `[0,0,...]` of at most `bytes` bytes: the densest JSON for a parser's memory.
fn zeros(bytes: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(bytes);
    b.push(b'[');
    while b.len() + 4 <= bytes {
        b.extend_from_slice(b"0,");
    }
    b.extend_from_slice(b"0]");
    b
}

/// Regression (issue #9 item 5): eight concurrent 16 MiB PUTs peaked at 3.4 GB, forty
/// aborted the process. Thirty concurrent bodies that each parse to ~72 MB, on a
/// server whose body budget is 256 MiB and whose address space is capped at 1 GiB: all
/// are answered, the server lives, and its peak memory stays within the budget.
#[test]
fn concurrent_large_bodies_stay_within_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let budget: u64 = 256 << 20;
    let Some(mut child) = Child::start(
        dir.path(),
        &["--as=1073741824"],
        &[
            ("CHILD_MAX_BODY", (2u64 << 20).to_string()),
            ("CHILD_BODY_MEMORY", budget.to_string()),
        ],
    ) else {
        return;
    };
    let baseline = child.status_kib("VmRSS");
    let body = Arc::new(zeros(2 << 20));
    let n = 30;
    let start = Arc::new(Barrier::new(n));
    let addr = child.addr;
    let clients: Vec<_> = (0..n)
        .map(|i| {
            let (body, start) = (body.clone(), start.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                start.wait();
                conn.send("PUT", &format!("/v1/docs/big{i}.json"), &[JSON], &body)
                    .map(|(status, _, b)| (status, String::from_utf8_lossy(&b).into_owned()))
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in clients {
        let (status, body) = c
            .join()
            .unwrap()
            .expect("an answer, not a dropped connection");
        assert!(
            status == 201 || status == 503,
            "{status}: {body} (201, or 503 when its turn did not come in time)"
        );
        statuses.push(status);
    }
    assert!(child.alive(), "the server survived");
    assert!(statuses.contains(&201), "{statuses:?}");
    let peak = child.status_kib("VmHWM");
    assert!(
        peak < baseline + budget + (96 << 20),
        "peak memory {} MiB over a baseline of {} MiB: more than the {} MiB budget allows",
        peak >> 20,
        baseline >> 20,
        budget >> 20
    );
    let mut conn = Conn::open(child.addr);
    assert_eq!(conn.send("GET", "/v1/docs", &[], b"").unwrap().0, 200);
}

/// Not a test: parses one body shape (`CHILD_SHAPE`) and prints what it took at the
/// peak and what `parsed_size` allowed for it, for the test below.
#[test]
#[ignore = "the process that the parse-size test starts"]
fn parse_child() {
    let shape = std::env::var("CHILD_SHAPE").expect("CHILD_SHAPE");
    let body = shape_body(&shape, 2 << 20);
    let allowed = statefile_server::limits::parsed_size(&body);
    // Reset the peak (VmHWM) to the current resident size, then parse.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = proc_status_kib("self", "VmRSS");
    let v: Value = serde_json::from_slice(&body).unwrap();
    let peak = proc_status_kib("self", "VmHWM");
    drop(v);
    println!("PARSED {} {allowed}", peak.saturating_sub(before));
}

fn proc_status_kib(pid: &str, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {field} in {s}"))
        * 1024
}

/// About `bytes` of JSON of a shape that is costly for a parser in its own way.
fn shape_body(shape: &str, bytes: usize) -> Vec<u8> {
    let (open, item, close): (&str, &dyn Fn(usize) -> String, &str) = match shape {
        "numbers" => ("[", &|_| "0".into(), "]"),
        "empty-objects" => ("[", &|_| "{}".into(), "]"),
        "empty-arrays" => ("[", &|_| "[]".into(), "]"),
        "one-key-objects" => ("[", &|_| "{\"a\":0}".into(), "]"),
        "short-strings" => ("[", &|_| "\"a\"".into(), "]"),
        "many-keys" => ("{", &|i| format!("\"{i:x}\":0"), "}"),
        "long-strings" => ("[", &|i| format!("\"{}\"", "x".repeat(1000 + i % 7)), "]"),
        // Exact numbers keep their digits: long ones cost like strings, and more.
        "long-numbers" => ("[", &|i| "7".repeat(1000 + i % 7), "]"),
        // One item that fills the body, so a second does not fit.
        "one-long-number" => ("", &|_| "7".repeat((2 << 20) - 2), ""),
        "nested" => ("[", &|_| "[[[{\"k\":[1,{\"x\":\"y\"}]}]]]".into(), "]"),
        "escapes" => ("[", &|_| "\"\\u0041\\n\"".into(), "]"),
        _ => panic!("unknown shape {shape}"),
    };
    let mut b = Vec::with_capacity(bytes + 64);
    b.extend_from_slice(open.as_bytes());
    let mut i = 0;
    loop {
        let it = item(i);
        if b.len() + it.len() + 2 > bytes {
            break;
        }
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(it.as_bytes());
        i += 1;
    }
    b.extend_from_slice(close.as_bytes());
    b
}

/// The body budget is only as good as `parsed_size`: for each costly shape, parsing a
/// 2 MiB body (in a fresh process, measured by its peak resident memory) takes no more
/// than it allowed.
#[test]
fn parsed_size_bounds_what_parsing_takes() {
    for shape in [
        "numbers",
        "empty-objects",
        "empty-arrays",
        "one-key-objects",
        "short-strings",
        "many-keys",
        "long-strings",
        "long-numbers",
        "one-long-number",
        "nested",
        "escapes",
    ] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "parse_child", "--nocapture"])
            .env("CHILD_SHAPE", shape)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shape}: {text}");
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("PARSED "))
            .unwrap_or_else(|| panic!("{shape}: {text}"));
        let (took, allowed) = line.split_once(' ').unwrap();
        let (took, allowed): (u64, u64) = (took.parse().unwrap(), allowed.parse().unwrap());
        // 1 MiB for the allocator's own state in a fresh process (a new arena's first
        // pages), which a measurement of resident memory includes once, whatever the size.
        assert!(
            took <= allowed + (1 << 20),
            "{shape}: parsing took {} KiB, parsed_size allowed {} KiB",
            took >> 10,
            allowed >> 10
        );
        println!(
            "{shape}: took {} MiB, allowed {} MiB",
            took >> 20,
            allowed >> 20
        );
    }
}

/// A body that could need more memory to parse than the whole budget is refused before
/// it is parsed, with a problem that names the limit.
#[test]
fn a_body_too_costly_to_parse_is_413_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::new(dir.path());
    c.max_body = 4 << 20;
    c.max_body_memory = 64 << 20;
    let server = Server::start(c);
    let mut conn = Conn::open(server.addr);
    let (status, hs, body) = conn
        .send("PUT", "/v1/docs/a.json", &[JSON], &zeros(4 << 20))
        .unwrap();
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        header(&hs, "content-type").as_deref(),
        Some("application/problem+json")
    );
    let p: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        p["detail"].as_str().unwrap().contains("--max-body-memory"),
        "{p}"
    );
    assert!(!dir.path().join("a.json").exists());
}

/// Regression (issue #9 item 7): idle and slow-header connections were never closed;
/// 1,100 of them made a server with 1,024 descriptors unreachable. Here 400 idle
/// connections against a child whose open-file limit is 256 (and may not be raised):
/// the server keeps its connections under the limit, closes the idle ones after the
/// header timeout, and a new client is answered.
#[test]
fn idle_connections_beyond_the_descriptor_limit_do_not_lock_clients_out() {
    let dir = tempfile::tempdir().unwrap();
    let Some(child) = Child::start(
        dir.path(),
        &["--nofile=256:256"],
        &[("CHILD_HEADER_TIMEOUT_MS", "1500".to_string())],
    ) else {
        return;
    };
    let idle: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect(child.addr).ok())
        .collect();
    assert!(idle.len() >= 300, "only {} connected", idle.len());
    let started = Instant::now();
    let (status, _) = one_request(child.addr, "PUT", "/v1/docs/a.json", b"{\"ok\": true}");
    assert_eq!(status, 201);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered after {:?}",
        started.elapsed()
    );
    // Every idle connection was closed by the server (EOF), not left open.
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(
            s.read(&mut b).unwrap_or(0),
            0,
            "an idle connection got data"
        );
    }
}

/// The soft open-file limit is raised to the hard one at start.
#[test]
fn the_soft_descriptor_limit_is_raised_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let Some(child) = Child::start(dir.path(), &["--nofile=256:4096"], &[]) else {
        return;
    };
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.process.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(soft[3], "4096", "{line}");
}

/// One request on a fresh connection that the server may close.
fn one_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30))
        .expect("the server accepts a connection");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(out.len(), |i| i + 4);
    (status, out[at..].to_vec())
}

/// How long until the server closes `s` (reads until EOF, or a reset), at most `limit`.
/// A server that closes a connection with bytes of ours still unread makes the kernel
/// answer with a reset instead of an orderly end (the dripping client below races the
/// close with its next byte): that is a close too. A read timeout is not.
fn closed_after(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(started.elapsed());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

fn quick_config(dir: &std::path::Path) -> Config {
    let mut c = Config::new(dir);
    c.header_timeout = Duration::from_millis(800);
    c.body_timeout = Duration::from_millis(800);
    c
}

/// Regression (issue #9 item 7): a connection that sends nothing, one that sends its
/// head a byte at a time, and a kept-alive one that goes quiet are all closed after the
/// header timeout.
#[test]
fn silent_slow_and_idle_connections_are_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(quick_config(dir.path()));
    let limit = Duration::from_secs(10);

    let silent = TcpStream::connect(server.addr).unwrap();
    let took = closed_after(silent, limit).expect("a silent connection stayed open");
    assert!(took >= Duration::from_millis(700), "{took:?}");

    let slow = TcpStream::connect(server.addr).unwrap();
    let mut writer = slow.try_clone().unwrap();
    let dripping = std::thread::spawn(move || {
        for b in b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaa" {
            if writer.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    closed_after(slow, limit).expect("a slow head kept its connection");
    dripping.join().unwrap();

    let mut kept = Conn::open(server.addr);
    assert_eq!(kept.send("GET", "/healthz", &[], b"").unwrap().0, 200);
    let s = kept.into_stream();
    closed_after(s, limit).expect("an idle kept-alive connection stayed open");
}

/// Regression (issue #9 item 7): a body that drips in is answered 408 after the body
/// timeout, the connection closed, nothing written.
#[test]
fn a_body_that_drips_in_is_408_after_the_body_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = quick_config(dir.path());
    c.request_timeout = Duration::from_secs(60);
    let server = Server::start(c);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(
        b"PUT /v1/docs/slow.json HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n[1,",
    )
    .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("urn:statefile:problem:body-timeout"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!dir.path().join("slow.json").exists());
}

/// Regression (issue #9 item 7): 260 bodies dripping in filled all 256 request slots and
/// a GET of another document waited 27 s. Bodies are received before a request takes
/// a storage slot, so readers keep being answered.
#[test]
fn bodies_dripping_in_do_not_hold_up_other_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::new(dir.path());
    c.concurrency = 4;
    c.body_timeout = Duration::from_secs(30);
    let server = Server::start(c);
    let mut conn = Conn::open(server.addr);
    assert_eq!(
        conn.send("PUT", "/v1/docs/other.json", &[JSON], b"{}")
            .unwrap()
            .0,
        201
    );
    let drippers: Vec<TcpStream> = (0..12)
        .map(|i| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            write!(
                s,
                "PUT /v1/docs/d{i}.json HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n["
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (status, _, _) = conn.send("GET", "/v1/docs/other.json", &[], b"").unwrap();
    assert_eq!(status, 200);
    let (status, _, _) = conn
        .send("PUT", "/v1/docs/third.json", &[JSON], b"1")
        .unwrap();
    assert_eq!(status, 201);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited {:?} behind slow bodies",
        started.elapsed()
    );
    drop(drippers);
}

/// Regression (issue #9 item 7): one outside lock holder plus 300 PUTs to that document
/// made a GET of another document wait 9 s. Writes queue per document without taking
/// storage slots, so other documents, and reads of this one, keep flowing.
#[test]
fn a_locked_document_with_a_long_queue_does_not_starve_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::new(dir.path());
    c.concurrency = 8;
    c.doc_concurrency = 2;
    c.request_timeout = Duration::from_secs(20);
    let server = Server::start(c);
    let mut conn = Conn::open(server.addr);
    for name in ["busy", "other"] {
        let path = format!("/v1/docs/{name}.json");
        assert_eq!(conn.send("PUT", &path, &[JSON], b"{}").unwrap().0, 201);
    }
    let doc = statefile::Doc::<Value>::open(dir.path().join("busy.json")).unwrap();
    let guard = doc.lock().unwrap();
    let writers: Vec<_> = (0..60)
        .map(|i| {
            let addr = server.addr;
            std::thread::spawn(move || {
                Conn::open(addr)
                    .send(
                        "PUT",
                        "/v1/docs/busy.json",
                        &[JSON],
                        json!({"i": i}).to_string().as_bytes(),
                    )
                    .map(|r| r.0)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    assert_eq!(
        conn.send("GET", "/v1/docs/other.json", &[], b"").unwrap().0,
        200
    );
    assert_eq!(
        conn.send("PUT", "/v1/docs/other.json", &[JSON], b"[1]")
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        conn.send("GET", "/v1/docs/busy.json", &[], b"").unwrap().0,
        200
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited {:?} behind one document's queue",
        started.elapsed()
    );
    drop(guard);
    for w in writers {
        let status = w.join().unwrap().unwrap();
        assert!(status == 200 || status == 503, "{status}");
    }
}

/// Regression (issue #9 item 6): a JSON Patch of O(n^2) work ran for minutes holding
/// the document's lock. Its work stops when the request's time is up: the answer is
/// 503, the document unchanged, and the next writer gets the lock at once.
#[test]
fn a_patch_that_outlives_its_time_stops_and_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    // Written directly, so that only the patch runs against the short time limit.
    statefile::Doc::<Value>::open(dir.path().join("p.json"))
        .unwrap()
        .write(&json!({"a": vec![0; 200_000]}))
        .unwrap();
    let mut c = Config::new(dir.path());
    c.request_timeout = Duration::from_secs(2);
    // No syncs: this is about the lock, and a sync on a busy disk can take seconds.
    c.options = statefile::Options::new().durability(statefile::Durability::None);
    let server = Server::start(c);
    let mut conn = Conn::open(server.addr);
    let ops: Vec<Value> = (0..10_000)
        .map(|i| json!({"op": "add", "path": "/a/0", "value": i}))
        .collect();
    let started = Instant::now();
    let (status, _, body) = conn
        .send(
            "PATCH",
            "/v1/docs/p.json",
            &[("content-type", "application/json-patch+json")],
            serde_json::to_vec(&ops).unwrap().as_slice(),
        )
        .unwrap();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = conn
        .send("PUT", "/v1/docs/p.json", &[JSON], b"{\"after\": true}")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the lock was held {:?}",
        started.elapsed()
    );
    let (_, _, body) = conn.send("GET", "/v1/docs/p.json", &[], b"").unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"after": true})
    );
}

/// The number of operations is checked before the lock is taken: with the lock held
/// elsewhere, a patch over the limit is refused at once.
#[test]
fn too_many_patch_operations_are_refused_before_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::new(dir.path());
    c.max_patch_ops = 100;
    let server = Server::start(c);
    let mut conn = Conn::open(server.addr);
    assert_eq!(
        conn.send("PUT", "/v1/docs/p.json", &[JSON], b"{}")
            .unwrap()
            .0,
        201
    );
    let doc = statefile::Doc::<Value>::open(dir.path().join("p.json")).unwrap();
    let _guard = doc.lock().unwrap();
    let ops: Vec<Value> = (0..101)
        .map(|i| json!({"op": "add", "path": format!("/k{i}"), "value": i}))
        .collect();
    let started = Instant::now();
    let (status, _, body) = conn
        .send(
            "PATCH",
            "/v1/docs/p.json",
            &[("content-type", "application/json-patch+json")],
            serde_json::to_vec(&ops).unwrap().as_slice(),
        )
        .unwrap();
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    let p: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(p["type"], "urn:statefile:problem:patch-too-large");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Regression (issue #9 item 9): invalid UTF-8 in the path was answered in plain text,
/// a 414 had an empty body, and `Authorization: bearer` (lowercase, valid per RFC 9110)
/// was refused.
#[test]
fn malformed_paths_long_targets_and_lowercase_bearer() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::new(dir.path());
    c.token = Some("s3cret".into());
    let server = Server::start(c);
    let mut conn = Conn::open(server.addr);
    let auth = ("authorization", "Bearer s3cret");
    for path in ["/v1/docs/%FF.json", "/v1/docs/a/%C3%28.json/backups"] {
        let (status, hs, body) = conn.send("GET", path, &[auth], b"").unwrap();
        assert_eq!(status, 400, "{path}");
        assert_eq!(
            header(&hs, "content-type").as_deref(),
            Some("application/problem+json"),
            "{path}"
        );
        let p: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(p["type"], "urn:statefile:problem:invalid-name", "{path}");
    }
    let long = format!("/v1/docs/{}.json", "a".repeat(statefile_server::MAX_URI));
    let (status, hs, body) = conn.send("GET", &long, &[auth], b"").unwrap();
    assert_eq!(status, 414);
    assert_eq!(
        header(&hs, "content-type").as_deref(),
        Some("application/problem+json")
    );
    let p: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(p["type"], "urn:statefile:problem:uri-too-long");
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        for gap in [" ", "   "] {
            let value = format!("{scheme}{gap}s3cret");
            let (status, _, _) = conn
                .send("GET", "/v1/docs", &[("authorization", &value)], b"")
                .unwrap();
            assert_eq!(status, 200, "{value:?}");
        }
    }
    for wrong in ["Basic s3cret", "Bearers3cret", "Bearer s3cre", "s3cret"] {
        let (status, _, _) = conn
            .send("GET", "/v1/docs", &[("authorization", wrong)], b"")
            .unwrap();
        assert_eq!(status, 401, "{wrong:?}");
    }
}

/// Regression (issue #9 items 4 and 9): a symlink loop, a socket and a dangling
/// directory link were answered 500 "internal", and a GET of a FIFO blocked a thread
/// forever. Each is 400 `invalid-name`, at once, and the problem names no path.
#[test]
fn special_files_in_the_store_are_400_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::os::unix::fs::symlink(root.join("loop.json"), root.join("loop.json")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/dir", root.join("gone")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(root.join("sock.json")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(root.join("fifo.json"))
        .status()
        .is_ok_and(|s| s.success());
    let server = Server::start(Config::new(root));
    let mut conn = Conn::open(server.addr);
    let mut names = vec!["loop.json", "sock.json", "gone/x.json"];
    if fifo {
        names.push("fifo.json");
    } else {
        println!("no mkfifo here: the FIFO case is not run");
    }
    for name in names {
        for (method, body) in [("GET", &b""[..]), ("PUT", &b"{}"[..])] {
            let started = Instant::now();
            let (status, hs, b) = conn
                .send(method, &format!("/v1/docs/{name}"), &[JSON], body)
                .unwrap();
            let text = String::from_utf8_lossy(&b);
            assert_eq!(status, 400, "{method} {name}: {text}");
            assert_eq!(
                header(&hs, "content-type").as_deref(),
                Some("application/problem+json")
            );
            assert!(text.contains("invalid-name"), "{text}");
            assert!(!text.contains(&root.display().to_string()), "{text}");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{method} {name}"
            );
        }
    }
}

/// Send `bytes` on a new connection; everything the server answers until it closes.
fn raw_answer(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// Regression: hyper answered a request head it cannot parse (431 for a head over
/// 64 KiB, 400 for a bad header, method, version or Content-Length) with an empty body,
/// while every other error of the server is problem+json naming what was wrong.
#[test]
fn unparseable_request_heads_get_problem_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Config::new(dir.path()));
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let ok = "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    let cases: [(&str, String, u16, &str); 6] = [
        ("a head over 64 KiB", big, 431, "header-too-large"),
        (
            "a header line without a colon",
            "GET /healthz HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n".into(),
            400,
            "malformed-request",
        ),
        (
            "a method that is not a token",
            "G(T /healthz HTTP/1.1\r\nhost: x\r\n\r\n".into(),
            400,
            "malformed-request",
        ),
        (
            "an unknown version",
            "GET /healthz HTTP/7.1\r\nhost: x\r\n\r\n".into(),
            400,
            "malformed-request",
        ),
        (
            "a Content-Length that is not a number",
            "PUT /v1/docs/a.json HTTP/1.1\r\nhost: x\r\ncontent-length: ten\r\n\r\n".into(),
            400,
            "malformed-request",
        ),
        (
            "a bad head after a good request on a kept-alive connection",
            format!("{ok}GET /healthz HTTP/1.1\r\nhost x\r\n\r\n"),
            400,
            "malformed-request",
        ),
    ];
    for (what, bytes, status, slug) in cases {
        let out = raw_answer(server.addr, bytes.as_bytes());
        // The kept-alive case: the good request's answer comes first.
        let last = out
            .rfind("HTTP/1.1 ")
            .unwrap_or_else(|| panic!("{what}: {out:?}"));
        let (head, body) = out[last..].split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {out:?}"
        );
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("\r\ncontent-type: application/problem+json"),
            "{what}: {out:?}"
        );
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{what}: {out:?}"
        );
        let p: Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {out:?}"));
        assert_eq!(p["type"], format!("urn:statefile:problem:{slug}"), "{what}");
        assert_eq!(p["status"], status, "{what}");
        assert!(
            p["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}"
        );
        let id = header_value(&head, "x-request-id");
        assert_eq!(p["request_id"].as_str(), id.as_deref(), "{what}");
    }
    // The server goes on answering.
    assert!(
        raw_answer(
            server.addr,
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .starts_with("HTTP/1.1 200 ")
    );
}

/// A field of a lowercased head.
fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
}

/// A store in journal mode holding `p.json`, an array of 200,000 zeros (1.4 MB pretty).
fn a_large_document_in_journal_mode() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    statefile::Doc::<Value>::open(dir.path().join("p.json"))
        .unwrap()
        .write(&json!({"a": vec![0; 200_000]}))
        .unwrap();
    statefile::journal::enable(
        dir.path(),
        &statefile::Options::new(),
        statefile::journal::JournalOptions::default(),
    )
    .unwrap();
    dir
}

/// The patch of `a_patch_that_outlives_its_time_stops_and_releases_the_lock` sent as
/// one operation of `POST /v1/tx` was not stopped by the request's time limit (the
/// transaction's `patch::Limits` had no deadline): the client got 503 but the work
/// went on, holding the document's lock (and a storage slot) for as long as it took, so
/// the next writer timed out.
#[test]
fn a_transaction_patch_that_outlives_its_time_stops_and_releases_the_lock() {
    let dir = a_large_document_in_journal_mode();
    let before = std::fs::read(dir.path().join("p.json")).unwrap();
    let mut c = Config::new(dir.path());
    c.request_timeout = Duration::from_secs(2);
    c.options = statefile::Options::new().durability(statefile::Durability::None);
    let server = Server::start(c);
    let mut conn = Conn::open(server.addr);
    let patch: Vec<Value> = (0..10_000)
        .map(|i| json!({"op": "add", "path": "/a/0", "value": i}))
        .collect();
    let ops = json!([{"op": "patch", "doc": "p.json", "json_patch": patch}]);
    let started = Instant::now();
    let (status, _, body) = conn
        .send("POST", "/v1/tx", &[JSON], ops.to_string().as_bytes())
        .unwrap();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = conn
        .send("PUT", "/v1/docs/p.json", &[JSON], b"{\"after\": true}")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the lock was held {:?}",
        started.elapsed()
    );
    assert_ne!(std::fs::read(dir.path().join("p.json")).unwrap(), before);
}

/// A child server (1 GiB of address space, 2 MiB bodies) over a store in journal mode.
fn tx_child(dir: &std::path::Path) -> Option<Child> {
    statefile::journal::enable(
        dir,
        &statefile::Options::new(),
        statefile::journal::JournalOptions::default(),
    )
    .unwrap();
    Child::start(
        dir,
        &["--as=1073741824"],
        &[
            ("CHILD_MAX_BODY", (2u64 << 20).to_string()),
            ("CHILD_BODY_MEMORY", (256u64 << 20).to_string()),
        ],
    )
}

/// Send `ops` as `POST /v1/tx` to `child`; assert 507 (the record cannot fit in half
/// the 16 MiB ring), nothing written, the server alive and its peak memory near what
/// one record may take, not what the operations could build.
fn assert_tx_refused_within_the_record_limit(
    dir: &std::path::Path,
    mut child: Child,
    ops: &Value,
    most: u64,
) {
    let baseline = child.status_kib("VmRSS");
    let mut conn = Conn::open(child.addr);
    let answer = conn.send("POST", "/v1/tx", &[JSON], ops.to_string().as_bytes());
    // A 503 (request timeout) leaves the transaction running: wait until it ends (a
    // get of its first document stops waiting for the lock), then look at the peak.
    let first = ops[0]["doc"].clone();
    let get = json!([{"op": "get", "doc": first}]).to_string();
    let waited = Instant::now();
    while child.alive() && waited.elapsed() < Duration::from_secs(600) {
        match Conn::open(child.addr).send("POST", "/v1/tx", &[JSON], get.as_bytes()) {
            Ok((404, _, _)) => break,
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    assert!(child.alive(), "the server died: {answer:?}");
    let peak = child.status_kib("VmHWM");
    assert!(
        peak < baseline + most,
        "peak memory {} MiB over a baseline of {} MiB, for a record of at most 8 MiB",
        peak >> 20,
        baseline >> 20
    );
    let (status, _, body) = answer.expect("an answer");
    assert_eq!(status, 507, "{}", String::from_utf8_lossy(&body));
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "nothing written: {names:?}");
    let mut conn = Conn::open(child.addr);
    assert_eq!(conn.send("GET", "/v1/docs", &[], b"").unwrap().0, 200);
}

/// A transaction kept every written document's new bytes in memory until it committed,
/// and only then compared their sum with the record limit (half the journal's ring). A
/// 40 KB body of puts and `copy` patches (each document doubled up to the patch result
/// limit) makes 200 documents of ~2 MiB each: the server held gigabytes (1 GiB address
/// space here: it aborted) before answering 507.
#[test]
fn a_transaction_does_not_hold_more_than_its_record_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let Some(child) = tx_child(dir.path()) else {
        return;
    };
    let mut ops = Vec::new();
    for k in 0..200 {
        let doc = format!("g{k:03}.json");
        ops.push(json!({"op": "put", "doc": doc, "value": {"a": "x".repeat(1024)}}));
        let copies: Vec<Value> = (0..10)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/c{i}")}))
            .collect();
        ops.push(json!({"op": "patch", "doc": doc, "json_patch": copies}));
    }
    assert_tx_refused_within_the_record_limit(dir.path(), child, &json!(ops), 128 << 20);
}

/// `Transaction::write` pretty-printed the whole value into memory (a single
/// journal-mode PUT streams it to its temp file past a quarter of the ring). Pretty
/// output indents each line by its depth: 2 MB of `[[[...[0,0,...]...]]]` 110 levels
/// deep prints as 225 MB, which the CLI (875 MB resident for a 2 MB `statefile tx`) and
/// the server built in full before refusing the record.
#[test]
fn a_transaction_put_is_not_printed_into_memory_past_the_record_limit() {
    let dir = tempfile::tempdir().unwrap();
    let Some(child) = tx_child(dir.path()) else {
        return;
    };
    let depth = 110;
    let mut v = json!(vec![0; 900_000]);
    for _ in 0..depth {
        v = json!([v]);
    }
    let ops = json!([{"op": "put", "doc": "deep.json", "value": v}]);
    // The request's body, parsed (nested arrays of 900,000 numbers), takes about 180
    // MiB: within the body memory the server was given (256 MiB), which bounds it.
    // What is refused is the 225 MB its pretty printing took on top.
    assert_tx_refused_within_the_record_limit(dir.path(), child, &ops, 256 << 20);
}

/// Each operation on a document the transaction already wrote parses its pending bytes
/// again and prints the result again, and nothing checked the request's time between
/// operations: 300 empty merge patches of a 1.4 MB document (a 10 KB body; 1000 of them
/// ran 160 s in a debug build) kept the lock and a storage thread busy long after the
/// 503.
#[test]
fn a_transaction_of_many_cheap_operations_stops_at_its_time() {
    let dir = a_large_document_in_journal_mode();
    let mut c = Config::new(dir.path());
    c.request_timeout = Duration::from_secs(2);
    c.options = statefile::Options::new().durability(statefile::Durability::None);
    let server = Server::start(c);
    let mut conn = Conn::open(server.addr);
    let ops: Vec<Value> = (0..300)
        .map(|_| json!({"op": "patch", "doc": "p.json", "merge": {}}))
        .collect();
    let started = Instant::now();
    let (status, _, body) = conn
        .send("POST", "/v1/tx", &[JSON], json!(ops).to_string().as_bytes())
        .unwrap();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = conn
        .send("PUT", "/v1/docs/p.json", &[JSON], b"{\"after\": true}")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the lock was held {:?}",
        started.elapsed()
    );
}

/// A child server over a store in journal mode whose open-file limit is `nofile`
/// (soft and hard), with a put of `{"i": N}` to each of `docs` sent as one `POST
/// /v1/tx`: the answer (status, body, Retry-After).
fn tx_under_descriptor_limit(
    nofile: u64,
    docs: impl Iterator<Item = String>,
) -> Option<(tempfile::TempDir, u16, String, Option<String>)> {
    let dir = tempfile::tempdir().unwrap();
    statefile::journal::enable(
        dir.path(),
        &statefile::Options::new(),
        statefile::journal::JournalOptions::default(),
    )
    .unwrap();
    let limit = format!("--nofile={nofile}:{nofile}");
    let child = Child::start(dir.path(), &[&limit], &[])?;
    let ops: Vec<Value> = docs
        .enumerate()
        .map(|(i, doc)| json!({"op": "put", "doc": doc, "value": {"i": i}}))
        .collect();
    let mut conn = Conn::open(child.addr);
    let (status, head, body) = conn
        .send(
            "POST",
            "/v1/tx",
            &[JSON],
            &serde_json::to_vec(&ops).unwrap(),
        )
        .expect("an answer");
    let retry = header(&head, "retry-after");
    // The server is still there and answers.
    let (ok, _, _) = Conn::open(child.addr)
        .send("PUT", "/v1/docs/after.json", &[JSON], b"{}")
        .unwrap();
    assert_eq!(ok, 201);
    Some((
        dir,
        status,
        String::from_utf8_lossy(&body).into_owned(),
        retry,
    ))
}

/// Regression: a transaction held two descriptors per document (its directory's and its
/// lock file's): `POST /v1/tx` of the allowed 1,000 operations, on documents of one
/// directory, failed with a generic 500 under an open-file limit of 1,200. The documents
/// of a directory now share its handle.
#[test]
fn a_transaction_of_a_thousand_documents_in_one_directory_fits_1200_descriptors() {
    let Some((dir, status, body, _)) =
        tx_under_descriptor_limit(1200, (0..1000).map(|i| format!("jobs/{i:04}.json")))
    else {
        return;
    };
    assert_eq!(status, 200, "{body}");
    let last: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("jobs/0999.json")).unwrap()).unwrap();
    assert_eq!(last, json!({"i": 999}));
}

/// A transaction that could never be served under the open-file limit (1,000
/// documents in 1,000 directories: 2,000 descriptors, under 1,200) is refused at once,
/// 413 naming the numbers, not a 500 "internal error" (nor a 503 inviting a retry that
/// would fail the same way, holding the server to itself each time); nothing is
/// written, and the server goes on.
#[test]
fn a_transaction_that_can_never_fit_the_descriptor_limit_is_413_at_once() {
    let Some((dir, status, body, retry)) =
        tx_under_descriptor_limit(1200, (0..1000).map(|i| format!("d{i:04}/job.json")))
    else {
        return;
    };
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("transaction-too-large"), "{body}");
    assert!(body.contains("2004 open files"), "{body}");
    assert!(body.contains("may have 1136"), "{body}");
    assert_eq!(retry, None);
    assert!(!dir.path().join("d0000").exists());
}

/// Regression: a sparse 20 GiB file planted at a document's name was read whole on GET
/// (its 20 GiB reserved first): one request took the server down. It is 422
/// `document-too-large` at once, naming its size and the limit, for GET, PATCH and
/// append alike; other documents are served meanwhile, and a PUT replaces it.
#[test]
fn a_sparse_20_gib_document_is_422_at_once_and_a_put_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut config = Config::new(root);
    config.max_body = 1 << 20;
    config.max_document = 4 << 20;
    let server = Server::start(config);
    let mut conn = Conn::open(server.addr);
    let (status, _, _) = conn
        .send("PUT", "/v1/docs/ok.json", &[JSON], b"{\"n\": 1}")
        .unwrap();
    assert_eq!(status, 201);
    let huge: u64 = 20 << 30;
    let planted = |name: &str, len: u64| {
        std::fs::File::create(root.join(name))
            .unwrap()
            .set_len(len)
            .unwrap();
    };
    planted("big.json", huge);
    let merge = ("content-type", "application/merge-patch+json");
    let requests = [
        ("GET", "/v1/docs/big.json", JSON, &b""[..]),
        ("PATCH", "/v1/docs/big.json", merge, b"{\"a\": 1}"),
        ("POST", "/v1/docs/big.json/append?pointer=/list", JSON, b"1"),
    ];
    for (method, path, ctype, body) in requests {
        let started = Instant::now();
        let (status, hs, b) = conn.send(method, path, &[ctype], body).unwrap();
        let text = String::from_utf8_lossy(&b);
        assert_eq!(status, 422, "{method}: {text}");
        assert_eq!(
            header(&hs, "content-type").as_deref(),
            Some("application/problem+json")
        );
        assert!(text.contains("document-too-large"), "{text}");
        assert!(text.contains(&huge.to_string()), "{text}");
        assert!(text.contains(&(4u64 << 20).to_string()), "{text}");
        assert!(!text.contains(&root.display().to_string()), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{method} took {:?}",
            started.elapsed()
        );
        let (status, _, b) = conn.send("GET", "/v1/docs/ok.json", &[], b"").unwrap();
        assert_eq!(
            (status, serde_json::from_slice::<Value>(&b).unwrap()),
            (200, json!({"n": 1}))
        );
    }
    // What needs its version is refused at once too (it is never hashed: that took
    // minutes per request, holding the document's lock), changing nothing.
    let some_etag = format!("\"{}\"", "0".repeat(64));
    let requests = [
        ("DELETE", vec![]),
        ("PUT", vec![("if-match", some_etag.as_str())]),
    ];
    for (method, conditions) in requests {
        let started = Instant::now();
        let mut hs = vec![JSON];
        hs.extend(conditions);
        let (status, _, b) = conn.send(method, "/v1/docs/big.json", &hs, b"[0]").unwrap();
        let text = String::from_utf8_lossy(&b);
        assert_eq!(status, 422, "{method}: {text}");
        assert!(text.contains("document-too-large"), "{text}");
        assert!(text.contains(&huge.to_string()), "{text}");
        assert!(!text.contains(&root.display().to_string()), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{method} took {:?}",
            started.elapsed()
        );
        assert_eq!(
            std::fs::metadata(root.join("big.json")).unwrap().len(),
            huge
        );
    }
    // An If-None-Match: * PUT finds it exists.
    let (status, _, b) = conn
        .send(
            "PUT",
            "/v1/docs/big.json",
            &[JSON, ("if-none-match", "*")],
            b"[0]",
        )
        .unwrap();
    assert_eq!(status, 412, "{}", String::from_utf8_lossy(&b));
    // A PUT replaces it at once, keeping it aside as .big.json.corrupt.
    let started = Instant::now();
    let (status, _, b) = conn
        .send("PUT", "/v1/docs/big.json", &[JSON], b"[1]")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "PUT took {:?}",
        started.elapsed()
    );
    assert_eq!(
        std::fs::metadata(root.join(".big.json.corrupt"))
            .unwrap()
            .len(),
        huge
    );
    let (status, _, b) = conn.send("GET", "/v1/docs/big.json", &[], b"").unwrap();
    assert_eq!(
        (status, serde_json::from_slice::<Value>(&b).unwrap()),
        (200, json!([1]))
    );
    // A PUT of a body within --max-body whose stored form, pretty-printed ten levels
    // deep, is over the limit: 422, nothing written.
    let spread = format!(
        "{}{}1{}",
        "[".repeat(10),
        "1,".repeat(500_000),
        "]".repeat(10)
    );
    let (status, _, b) = conn
        .send("PUT", "/v1/docs/big.json", &[JSON], spread.as_bytes())
        .unwrap();
    let text = String::from_utf8_lossy(&b);
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("document-too-large"), "{text}");
    let (_, _, b) = conn.send("GET", "/v1/docs/big.json", &[], b"").unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&b).unwrap(), json!([1]));
}

#[test]
fn max_document_below_max_body_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.max_document = (config.max_body - 1) as u64;
    let e = statefile_server::run(config).unwrap_err().to_string();
    assert!(
        e.contains("--max-document") && e.contains("--max-body"),
        "{e}"
    );
}
