//! `statefile serve` as a real process: killed under a write load and restarted, shut
//! down with SIGTERM, and a client that disconnects in the middle of a write.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{self, BIN};
use serde_json::{Value, json};

fn start(dir: &std::path::Path) -> (Child, SocketAddr) {
    common::serve(dir, &["serve", dir.to_str().unwrap()])
}

/// One request on a fresh connection; `None` if the server is gone.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

#[test]
fn killed_under_load_then_restarted_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = start(dir.path());
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let doc = format!("load/doc{}.json", w % 4);
                    let item = format!("w{w}-{i}");
                    let body = json!(item).to_string();
                    match request(
                        addr,
                        "POST",
                        &format!("/v1/docs/{doc}/append?pointer=/items"),
                        &body,
                    ) {
                        Some((200, _)) => acked.lock().unwrap().push((doc, item)),
                        Some((status, b)) => panic!("unexpected {status}: {b}"),
                        None => break,
                    }
                    // And whole-document replaces of a document per worker.
                    let own = format!("load/own{w}.json");
                    let body = json!({"i": i}).to_string();
                    match request(addr, "PUT", &format!("/v1/docs/{own}"), &body) {
                        Some((200 | 201, _)) => acked.lock().unwrap().push((own, i.to_string())),
                        Some((status, b)) => panic!("unexpected {status}: {b}"),
                        None => break,
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.kill().unwrap();
    server.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "the load ran ({} writes acknowledged)",
        acked.len()
    );

    // Restart: recovery runs on open; every document parses and holds what was acked.
    let (mut server, addr) = start(dir.path());
    let mut latest_put = std::collections::HashMap::new();
    for (doc, item) in &acked {
        if doc.contains("/own") {
            let n: u64 = item.parse().unwrap();
            let e = latest_put.entry(doc.clone()).or_insert(n);
            *e = (*e).max(n);
        }
    }
    for d in 0..4 {
        let doc = format!("load/doc{d}.json");
        let (status, body) = request(addr, "GET", &format!("/v1/docs/{doc}"), "").unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let items: std::collections::HashSet<&str> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        for (_, item) in acked.iter().filter(|(dd, _)| dd == &doc) {
            assert!(
                items.contains(item.as_str()),
                "acknowledged append {item} lost from {doc}"
            );
        }
    }
    for (doc, n) in latest_put {
        let (status, body) = request(addr, "GET", &format!("/v1/docs/{doc}"), "").unwrap();
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        // The last acknowledged replace, or one that was in flight after it.
        assert!(
            v["i"].as_u64().unwrap() >= n,
            "{doc}: acknowledged {n}, found {v}"
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let out = Command::new(BIN)
        .arg("verify")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify after restart: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn sigterm_finishes_in_flight_writes_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path());
    // Hold the document's lock here, so the server's write is in flight (waiting for
    // it) when SIGTERM arrives.
    let doc = statefile::Doc::<Value>::open(dir.path().join("a.json")).unwrap();
    let guard = doc.lock().unwrap();
    let client = std::thread::spawn(move || request(addr, "PUT", "/v1/docs/a.json", "{\"v\": 1}"));
    // Time for the request to reach the server and queue on the lock.
    std::thread::sleep(Duration::from_secs(1));
    let pid = server.id().to_string();
    let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(ok.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(!client.is_finished(), "the write waited for the lock");
    drop(guard);
    let (status, body) = client
        .join()
        .unwrap()
        .expect("an answer, not a dropped connection");
    assert_eq!(status, 201, "{body}");
    let out = server.wait_with_output().unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    assert_eq!(doc.read().unwrap(), json!({"v": 1}), "the write landed");
}

#[test]
fn a_write_that_started_finishes_when_the_client_disconnects() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = start(dir.path());
    for (method, path, content_type, body, landed) in [
        (
            "POST",
            "/v1/docs/d.json/append?pointer=/items",
            "application/json",
            "\"late\"",
            json!({"items": ["late"]}),
        ),
        (
            "PUT",
            "/v1/docs/d.json",
            "application/json",
            "{\"put\": \"late\"}",
            json!({"put": "late"}),
        ),
        (
            "PATCH",
            "/v1/docs/d.json",
            "application/merge-patch+json",
            "{\"patched\": true}",
            json!({"put": "late", "patched": true}),
        ),
    ] {
        finishes_after_disconnect(dir.path(), addr, (method, path, content_type, body));
        let mut now = Value::Null;
        for _ in 0..100 {
            now = serde_json::from_str(&request(addr, "GET", "/v1/docs/d.json", "").unwrap().1)
                .unwrap();
            if now == landed {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            now, landed,
            "the {method} finished although its client left"
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

/// Send `request` while this process holds the document's lock (so the server's write
/// waits inside the request), hang up, then release the lock.
fn finishes_after_disconnect(
    dir: &std::path::Path,
    addr: SocketAddr,
    (method, path, content_type, body): (&str, &str, &str, &str),
) {
    if !dir.join("d.json").exists() {
        assert_eq!(
            request(addr, "PUT", "/v1/docs/d.json", "{\"items\": []}")
                .unwrap()
                .0,
            201
        );
    }
    let doc = statefile::Doc::<Value>::open(dir.join("d.json")).unwrap();
    let guard = doc.lock().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s); // the client gives up
    drop(guard);
}

/// Start `serve` with `args`, wait until it listens, stop it, and return its stderr.
fn stderr_of_serve(dir: &std::path::Path, args: &[&str], token: Option<&str>) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(args)
        .arg(dir)
        .env_remove("STATEFILE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("STATEFILE_TOKEN", t);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("serving"), "not serving: {line:?}");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_non_loopback_address_without_a_token_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let open = stderr_of_serve(dir.path(), &["--addr", "0.0.0.0:0"], None);
    assert!(
        open.contains("warning") && open.contains("without --token"),
        "no warning on stderr: {open:?}"
    );
    let with_token = stderr_of_serve(dir.path(), &["--addr", "0.0.0.0:0"], Some("s3cret"));
    assert!(!with_token.contains("warning"), "{with_token:?}");
    let loopback = stderr_of_serve(dir.path(), &["--addr", "127.0.0.1:0"], None);
    assert!(!loopback.contains("warning"), "{loopback:?}");
}

#[test]
fn serve_help_names_each_limit_and_the_worst_case_memory() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--max-body ",
        "--max-body-memory",
        "--request-timeout",
        "--body-timeout",
        "--header-timeout",
        "--max-connections",
        "--concurrency",
        "--doc-concurrency",
        "--max-patch-ops",
        "Memory, worst case",
        "503 the lock or the request timed out",
        "412",
        "413",
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from serve --help:\n{help}"
        );
    }
    // Regression (issue #10): serve's help spoke of exit codes (--lock-timeout's "exit
    // code 6"), which a server's clients never see.
    assert!(!help.contains("exit code"), "{help}");
}

#[test]
fn serve_refuses_a_body_budget_smaller_than_four_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--max-body",
            "16M",
            "--max-body-memory",
            "32M",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-body-memory") && err.contains("4 times"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["serve", "--max-body", "16 parsecs"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad size is a usage error");
}

/// Wait for `serve`'s "serving" line on its stdout; the address it names.
fn serving_addr(child: &mut Child) -> Option<SocketAddr> {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().rsplit("http://").next()?.parse().ok()
}

/// Regression (issue #10 item 3): `statefile serve DIR` created a mistyped DIR and its
/// parents, and served an empty store. A missing DIR is refused, naming it and --create.
#[test]
fn serve_refuses_a_missing_dir_unless_asked_to_create_it() {
    let base = tempfile::tempdir().unwrap();
    let typo = base.path().join("dtaa/store");
    let out = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .arg(&typo)
        .env_remove("STATEFILE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not exist") && err.contains("--create") && err.contains("dtaa"),
        "{err}"
    );
    assert!(!base.path().join("dtaa").exists(), "nothing created");
    let mut child = Command::new(BIN)
        .args(["serve", "--create", "--addr", "127.0.0.1:0"])
        .arg(&typo)
        .env_remove("STATEFILE_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = serving_addr(&mut child).expect("serving with --create");
    assert!(typo.is_dir());
    assert_eq!(
        request(addr, "PUT", "/v1/docs/a.json", "{}").unwrap().0,
        201
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The README's first command must work on a fresh clone, where ./data does not exist:
/// run it, as written, in an empty directory (on a free port).
#[test]
fn the_readmes_serve_command_works_where_data_does_not_exist_yet() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("cargo run --release -p statefile-cli -- serve"))
        .expect("the README's serve command");
    let args: Vec<&str> = line
        .split_once(" -- ")
        .unwrap()
        .1
        .split('#')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let fresh = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(&args)
        .args(["--addr", "127.0.0.1:0"])
        .current_dir(fresh.path())
        .env_remove("STATEFILE_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = serving_addr(&mut child)
        .unwrap_or_else(|| panic!("`statefile {}` did not start", args.join(" ")));
    assert_eq!(
        request(addr, "PUT", "/v1/docs/a.json", "{}").unwrap().0,
        201
    );
    assert!(fresh.path().join("data/a.json").is_file());
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Regression (issue #10 item 7): `--addr localhost:7999` was refused. A host name
/// is resolved, and each of its addresses served.
#[test]
fn serve_listens_on_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--addr", "localhost:0"])
        .arg(dir.path())
        .env_remove("STATEFILE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = serving_addr(&mut child).expect("serving on localhost");
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_eq!(
        request(addr, "PUT", "/v1/docs/a.json", "{}").unwrap().0,
        201
    );
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("without --token"),
        "localhost is loopback: {err}"
    );
    let out = Command::new(BIN)
        .args(["serve", "--addr", "no-such-host.invalid:7999"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-host.invalid"), "{err}");
}

/// `serve` with `args`, through `run(addr)`, then stopped with SIGTERM: its stderr.
fn serve_log(dir: &std::path::Path, args: &[&str], run: impl FnOnce(SocketAddr)) -> String {
    let (stdout, stderr) = serve_output(dir, "127.0.0.1", args, run);
    assert!(stdout.contains("serving"), "{stdout:?}");
    stderr
}

/// `serve` with `args` on `host` and a free port, through `run(addr)` once it accepts
/// connections on the loopback (found by connecting, not from its stdout, so that a quiet
/// server can be run), then stopped with SIGTERM: its stdout and stderr.
fn serve_output(
    dir: &std::path::Path,
    host: &str,
    args: &[&str],
    run: impl FnOnce(SocketAddr),
) -> (String, String) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .args(["--addr", &format!("{host}:{}", addr.port())])
        .arg(dir)
        .env_remove("STATEFILE_TOKEN")
        .env_remove("STATEFILE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "serve exited");
        assert!(std::time::Instant::now() < deadline, "serve never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    run(addr);
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Regression (issue #10, operator logs): the server logged nothing an operator could
/// use. By default: a line at start, one per request with method, route, status,
/// duration and request id (the one the client got), and a read served from a backup
/// at warn; `--log-format json` gives the same as JSON lines; -q only errors, -v more.
#[test]
fn serve_logs_a_line_at_start_and_one_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let seed = |addr: SocketAddr| {
        request(addr, "PUT", "/v1/docs/job.json", "{\"v\": 1}").unwrap();
        request(addr, "PUT", "/v1/docs/job.json", "{\"v\": 2}").unwrap();
    };
    serve_log(dir.path(), &[], seed);
    std::fs::write(dir.path().join("job.json"), b"{\"v\": ").unwrap();
    let mut ids = Vec::new();
    let log = serve_log(dir.path(), &["--log-format", "json"], |addr| {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET /v1/docs/job.json HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let id = out
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-request-id: ")
                    .map(str::to_string)
            })
            .unwrap();
        ids.push(id);
        request(addr, "GET", "/v1/docs/none.json", "").unwrap();
    });
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "serving" && l["level"] == "INFO"),
        "{log}"
    );
    let requests: Vec<&Value> = lines.iter().filter(|l| l["message"] == "request").collect();
    assert_eq!(requests.len(), 2, "{log}");
    let first = requests[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["route"], "/v1/docs/{name}");
    assert_eq!(first["status"], 200);
    assert!(first["duration_ms"].is_number(), "{first}");
    assert_eq!(first["request_id"], ids[0]);
    assert_eq!(requests[1]["status"], 404);
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["request_id"] == ids[0]
            && l["message"].as_str().unwrap().contains("backup")),
        "a read served from a backup is a warning: {log}"
    );
    // Text by default; -q: errors only; -v: also what the server refuses and why.
    let text = serve_log(dir.path(), &[], |addr| {
        request(addr, "GET", "/v1/docs/none.json", "").unwrap();
    });
    assert!(
        text.contains("INFO") && text.contains("status=404"),
        "{text}"
    );
    // Regression: -q still printed the "serving on" line.
    let (stdout, stderr) = serve_output(dir.path(), "127.0.0.1", &["-q"], |addr| {
        request(addr, "GET", "/v1/docs/none.json", "").unwrap();
    });
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        ("", ""),
        "-q prints only errors"
    );
    let (stdout, stderr) = serve_output(dir.path(), "0.0.0.0", &["-q"], |_| {});
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        ("", ""),
        "-q prints no warnings either"
    );
    let verbose = serve_log(dir.path(), &["-v"], |addr| {
        request(addr, "GET", "/v1/docs/none.json", "").unwrap();
    });
    assert!(
        verbose.contains("DEBUG") && verbose.contains("request refused"),
        "{verbose}"
    );
}
