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
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from serve --help:\n{help}"
        );
    }
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
