//! Over a real loopback socket: concurrent appends, racing conditional writes, path
//! escapes.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Backend, Conn, Server, header};
use serde_json::{Value, json};
use statefile_server::Config;

#[test]
fn a_thousand_concurrent_appends_from_fifty_connections() {
    concurrent_appends(50, 20);
}

#[test]
fn a_thousand_appends_in_flight_at_once_queue_and_none_is_refused() {
    // One request on each of 1,000 connections, released together: four times the
    // server's concurrency limit (256) arrive at once, and the rest must queue.
    concurrent_appends(1000, 1);
}

#[test]
fn on_postgres_a_thousand_appends_in_flight_at_once_queue_and_none_is_refused() {
    // The same burst on the PostgreSQL backend: 256 requests at once wait for the
    // pool's 16 connections and for the row lock, none refused.
    if let Some(b) = Backend::postgres() {
        concurrent_appends_on(&b, 1000, 1);
    }
}

/// `conns` connections, each sending `per` appends to one array, all started together.
fn concurrent_appends(conns: usize, per: usize) {
    concurrent_appends_on(&Backend::File, conns, per);
}

fn concurrent_appends_on(backend: &Backend, conns: usize, per: usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::serve(backend.app_blocking(Config::new(dir.path())));
    let start = Arc::new(Barrier::new(conns));
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            let (addr, start) = (server.addr, start.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                start.wait();
                let mut indexes = Vec::new();
                for i in 0..per {
                    let body = json!({"client": c, "i": i}).to_string();
                    let (status, _, b) = conn
                        .send(
                            "POST",
                            "/v1/docs/view/resData.json/append?pointer=/cases",
                            &[("content-type", "application/json")],
                            body.as_bytes(),
                        )
                        .unwrap();
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
                    let v: Value = serde_json::from_slice(&b).unwrap();
                    indexes.push(v["index"].as_u64().unwrap());
                }
                indexes
            })
        })
        .collect();
    let mut all_indexes = Vec::new();
    for t in threads {
        all_indexes.extend(t.join().unwrap());
    }
    let mut conn = Conn::open(server.addr);
    let (status, _, body) = conn
        .send("GET", "/v1/docs/view/resData.json", &[], b"")
        .unwrap();
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), conns * per, "every append present");
    let unique: HashSet<String> = cases.iter().map(Value::to_string).collect();
    assert_eq!(unique.len(), conns * per, "each exactly once");
    // Every answer named a distinct index, and each index holds what was appended.
    all_indexes.sort();
    assert_eq!(all_indexes, (0..(conns * per) as u64).collect::<Vec<_>>());
}

#[test]
fn two_hundred_racing_conditional_puts_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    racing_conditional_puts(Config::new(dir.path()));
}

#[test]
fn on_postgres_two_hundred_racing_conditional_puts_one_wins() {
    if let Some(b) = Backend::postgres() {
        let dir = tempfile::tempdir().unwrap();
        racing_conditional_puts_on(b.app_blocking(Config::new(dir.path())));
    }
}

#[test]
fn with_four_requests_at_a_time_the_rest_queue_and_one_still_wins() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.concurrency = 4;
    racing_conditional_puts(config);
}

/// `method path` with a JSON `body` on a new connection: status, Retry-After, problem
/// type (if the body is one), and how long the answer took.
fn timed(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Option<String>, Value, Duration) {
    let started = Instant::now();
    let (status, hs, body) = Conn::open(addr)
        .send(method, path, &[("content-type", "application/json")], body)
        .unwrap();
    let p: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, header(&hs, "retry-after"), p, started.elapsed())
}

fn timed_put(
    addr: std::net::SocketAddr,
    name: &str,
    body: &[u8],
) -> (u16, Option<String>, Value, Duration) {
    timed(addr, "PUT", &format!("/v1/docs/{name}"), body)
}

/// Regression: a write handed to the storage runs to its end whatever becomes of its
/// request, yet at the request's time limit it was answered 503 `request-timeout` with
/// `Retry-After: 1` ("a write that had started still completes"): a client that
/// followed the Retry-After sent it again, and an append or a JSON Patch landed twice.
/// Now the answer waits for the write and says how it ended: here its lock is held for
/// 1.5 s against a 300 ms time limit, and the PUT answers 201 once it has written.
#[test]
fn a_write_handed_to_the_storage_is_answered_how_it_ended_even_past_the_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.request_timeout = Duration::from_millis(300);
    let server = Server::start(config);
    // Hold the document's lock from this process, so the write has to wait.
    let doc = statefile::Doc::<Value>::open(dir.path().join("slow.json")).unwrap();
    let guard = doc.lock().unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(guard);
    });
    let (status, retry, p, took) = timed_put(server.addr, "slow.json", b"{\"late\": true}");
    release.join().unwrap();
    assert_eq!(status, 201, "{p}");
    assert_eq!(retry, None);
    assert!(
        took >= Duration::from_millis(1200),
        "answered after {took:?}"
    );
    assert_eq!(doc.read().unwrap(), json!({"late": true}));
}

/// A write still waiting for its turn when the time runs out (behind another write of
/// the same document, one at a time) never reaches the storage: its 503
/// `request-timeout` says nothing was written, and nothing of it is, ever.
#[test]
fn a_write_still_waiting_for_its_turn_at_the_time_limit_is_503_and_never_lands() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.request_timeout = Duration::from_millis(500);
    config.doc_concurrency = 1;
    let server = Server::start(config);
    let doc = statefile::Doc::<Value>::open(dir.path().join("slow.json")).unwrap();
    let guard = doc.lock().unwrap();
    let addr = server.addr;
    // The first write takes the document's one turn and waits for the lock.
    let first = std::thread::spawn(move || timed_put(addr, "slow.json", b"{\"first\": true}"));
    std::thread::sleep(Duration::from_millis(200));
    let (status, retry, p, took) = timed_put(addr, "slow.json", b"{\"second\": true}");
    assert_eq!(status, 503, "{p}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(p["type"], "urn:statefile:problem:request-timeout");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("this request wrote nothing"),
        "{p}"
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    std::thread::sleep(Duration::from_millis(500));
    drop(guard);
    let (status, _, p, _) = first.join().unwrap();
    assert_eq!(status, 201, "{p}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(doc.read().unwrap(), json!({"first": true}));
}

/// The same for an append, whose write runs in a task of its own (so that a client
/// that leaves does not stop it): past the time limit it is answered when it has
/// landed, once; one still waiting for its turn at the limit is 503 and never lands
/// (unfixed, its task went on, took its turn after the answer and appended).
#[test]
fn appends_past_the_time_limit_land_once_if_answered_so_and_never_if_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.request_timeout = Duration::from_millis(500);
    config.doc_concurrency = 1;
    let server = Server::start(config);
    let doc = statefile::Doc::<Value>::open(dir.path().join("log.json")).unwrap();
    doc.write(&json!([])).unwrap();
    let guard = doc.lock().unwrap();
    let addr = server.addr;
    let first =
        std::thread::spawn(move || timed(addr, "POST", "/v1/docs/log.json/append", b"\"first\""));
    std::thread::sleep(Duration::from_millis(200));
    let (status, retry, p, _) = timed(addr, "POST", "/v1/docs/log.json/append", b"\"second\"");
    assert_eq!(status, 503, "{p}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(p["type"], "urn:statefile:problem:request-timeout");
    std::thread::sleep(Duration::from_millis(700));
    drop(guard);
    let (status, _, p, took) = first.join().unwrap();
    assert_eq!(status, 200, "{p}");
    assert!(
        took >= Duration::from_millis(800),
        "answered after {took:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(doc.read().unwrap(), json!(["first"]));
}

/// A write handed to the storage whose lock is never given up ends at the lock
/// timeout, as 503 `lock-timeout` (nothing written), not at the shorter request time
/// limit with an answer that cannot say whether it will land.
#[test]
fn a_write_past_the_time_limit_that_never_gets_its_lock_is_503_lock_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.request_timeout = Duration::from_millis(300);
    config.options = statefile::Options::new().lock_timeout(Duration::from_secs(1));
    let server = Server::start(config);
    let doc = statefile::Doc::<Value>::open(dir.path().join("slow.json")).unwrap();
    doc.write(&json!({"v": 0})).unwrap();
    let guard = doc.lock().unwrap();
    let (status, retry, p, took) = timed_put(server.addr, "slow.json", b"{\"v\": 1}");
    assert_eq!(status, 503, "{p}");
    assert_eq!(p["type"], "urn:statefile:problem:lock-timeout", "{p}");
    assert!(retry.is_some());
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );
    drop(guard);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(doc.read().unwrap(), json!({"v": 0}));
}

fn racing_conditional_puts(config: Config) {
    racing_conditional_puts_on(statefile_server::App::open(config).unwrap());
}

fn racing_conditional_puts_on(app: std::sync::Arc<statefile_server::App>) {
    let server = Server::serve(app);
    let mut conn = Conn::open(server.addr);
    let (status, hs, _) = conn
        .send(
            "PUT",
            "/v1/docs/cas.json",
            &[("content-type", "application/json")],
            b"{\"owner\": null}",
        )
        .unwrap();
    assert_eq!(status, 201);
    let etag = header(&hs, "etag").unwrap();
    let n = 200;
    let start = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (addr, start, etag) = (server.addr, start.clone(), etag.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                start.wait();
                let body = json!({"owner": i}).to_string();
                conn.send(
                    "PUT",
                    "/v1/docs/cas.json",
                    &[("content-type", "application/json"), ("if-match", &etag)],
                    body.as_bytes(),
                )
                .unwrap()
                .0
            })
        })
        .collect();
    one_wins(threads, n);
}

#[test]
fn nothing_outside_the_directory_is_read_or_written() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("data");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.json"), b"{\"secret\": true}\n").unwrap();
    std::fs::write(base.path().join("top.json"), b"{\"top\": true}\n").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.json"), root.join("leak.json")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
    let server = Server::start(Config::new(&root));
    let mut conn = Conn::open(server.addr);
    let json = ("content-type", "application/json");
    let attempts = [
        "/v1/docs/../top.json",
        "/v1/docs/%2e%2e/top.json",
        "/v1/docs/%2E%2E/top.json",
        "/v1/docs/a/%2e%2e/%2e%2e/top.json",
        "/v1/docs//etc/passwd.json",
        "/v1/docs/%2Fetc%2Fpasswd.json",
        "/v1/docs/..%5Ctop.json",
        "/v1/docs/a\\..\\top.json",
        "/v1/docs/leak.json",
        "/v1/docs/out/secret.json",
        "/v1/docs/out/new.json",
    ];
    for path in attempts {
        let with = |suffix: &str| format!("{path}{suffix}");
        for (method, target, body) in [
            ("GET", with(""), &b""[..]),
            ("PUT", with(""), &b"{\"pwned\": 1}"[..]),
            ("PATCH", with(""), &b"{\"pwned\": 1}"[..]),
            ("DELETE", with(""), &b""[..]),
            ("POST", with("/append?pointer=/x"), &b"1"[..]),
            ("GET", with("/backups"), &b""[..]),
            ("POST", with("/restore?from=1"), &b""[..]),
        ] {
            let ct = if method == "PATCH" {
                ("content-type", "application/merge-patch+json")
            } else {
                json
            };
            let (status, _, b) = conn.send(method, &target, &[ct], body).unwrap();
            assert!(
                status == 400 || (status == 404 && path.ends_with("/top.json")),
                "{method} {target} answered {status}: {}",
                String::from_utf8_lossy(&b)
            );
            let text = String::from_utf8_lossy(&b).replace(' ', "");
            assert!(
                !text.contains("\"secret\":true") && !text.contains("\"top\":true"),
                "{path} leaked: {text}"
            );
        }
    }
    assert_eq!(
        std::fs::read(outside.join("secret.json")).unwrap(),
        b"{\"secret\": true}\n"
    );
    assert_eq!(
        std::fs::read(base.path().join("top.json")).unwrap(),
        b"{\"top\": true}\n"
    );
    let mut outside_names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    outside_names.sort();
    assert_eq!(outside_names, ["secret.json"]);
}

/// Regression: a request refused before its body was read (here a bad name) left the
/// body on the connection, which was then closed, depending on whether the body had
/// arrived yet. Now a small body is read and dropped, and the connection kept; a large
/// one is not waited for, and the answer says `Connection: close`.
#[test]
fn a_request_refused_before_its_body_keeps_the_connection() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Config::new(dir.path()));
    let s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let answer = |r: &mut BufReader<std::net::TcpStream>| {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            assert!(r.read_line(&mut line).unwrap() > 0, "connection closed");
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_ascii_lowercase());
        }
        let len: usize = head
            .iter()
            .find_map(|h| h.strip_prefix("content-length: "))
            .map_or(0, |n| n.parse().unwrap());
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        head
    };
    for _ in 0..3 {
        // The head first; the body only once the answer could already be on its way.
        w.write_all(
            b"PUT /v1/docs/bad%20name.json HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n",
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        w.write_all(b"{\"a\": true}").unwrap();
        let head = answer(&mut r);
        assert!(head[0].starts_with("http/1.1 400"), "{head:?}");
        assert!(!head.contains(&"connection: close".to_string()), "{head:?}");
    }
    w.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    assert!(answer(&mut r)[0].starts_with("http/1.1 200"));
    // A body larger than what is drained: the connection is closed after the answer.
    let big = vec![b' '; 1 << 20];
    write!(
        w,
        "PUT /v1/docs/bad%20name.json HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        big.len()
    )
    .unwrap();
    let _ = w.write_all(&big);
    let head = answer(&mut r);
    assert!(head[0].starts_with("http/1.1 400"), "{head:?}");
    assert!(head.contains(&"connection: close".to_string()), "{head:?}");
}

// Regression (issue 10, item 2): a retry-on-412 client looped forever on a damaged
// document. GET serves the newest good backup with its ETag; a PUT with If-Match that
// ETag now replaces (and so repairs) the document.
#[test]
fn a_put_with_the_etag_served_for_a_damaged_document_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Config::new(dir.path()));
    let mut conn = Conn::open(server.addr);
    let json = ("content-type", "application/json");
    for body in [&b"{\"v\": 1}"[..], b"{\"v\": 2}"] {
        let (status, _, _) = conn
            .send("PUT", "/v1/docs/cfg.json", &[json], body)
            .unwrap();
        assert!(status == 200 || status == 201, "{status}");
    }
    std::fs::write(dir.path().join("cfg.json"), b"{\"v\": 2, \"trun").unwrap();

    let (status, hs, body) = conn.send("GET", "/v1/docs/cfg.json", &[], b"").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        header(&hs, "statefile-recovered-from").as_deref(),
        Some("1")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"v": 1})
    );
    let etag = header(&hs, "etag").expect("an ETag");
    let backup = std::fs::read(dir.path().join(".cfg.json.bak")).unwrap();
    assert_eq!(
        etag,
        statefile::Version::of(&backup).etag(),
        "the backup's ETag"
    );

    let (status, hs, body) = conn
        .send(
            "PUT",
            "/v1/docs/cfg.json",
            &[json, ("if-match", &etag)],
            b"{\"v\": 3}",
        )
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let new_etag = header(&hs, "etag").expect("the new ETag");
    let (status, hs, body) = conn.send("GET", "/v1/docs/cfg.json", &[], b"").unwrap();
    assert_eq!(status, 200);
    assert_eq!(header(&hs, "statefile-recovered-from"), None, "repaired");
    assert_eq!(header(&hs, "etag").as_deref(), Some(new_etag.as_str()));
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"v": 3})
    );
    assert_eq!(
        std::fs::read(dir.path().join(".cfg.json.corrupt")).unwrap(),
        b"{\"v\": 2, \"trun"
    );
    // The old ETag is an old version now: 412, as for any stale If-Match.
    let (status, _, _) = conn
        .send(
            "PUT",
            "/v1/docs/cfg.json",
            &[json, ("if-match", &etag)],
            b"{\"v\": 4}",
        )
        .unwrap();
    assert_eq!(status, 412);
}

/// `POST /v1/tx` on PostgreSQL over real connections: 100 transactions released
/// together, each moving one document's owner to both documents from the same ETags,
/// commit exactly one (the others 412, nothing of theirs written); then 24 connections
/// moving amounts between the two documents with checked transactions keep their sum.
#[test]
fn on_postgres_racing_transactions_one_wins_and_transfers_keep_the_sum() {
    let Some(b) = Backend::postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::serve(b.app_blocking(Config::new(dir.path())));
    let tx = |conn: &mut Conn, ops: &Value| -> (u16, Value) {
        let (status, _, body) = conn
            .send(
                "POST",
                "/v1/tx",
                &[("content-type", "application/json")],
                ops.to_string().as_bytes(),
            )
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    };
    let mut conn = Conn::open(server.addr);
    let (s, made) = tx(
        &mut conn,
        &json!([{"op": "put", "doc": "x.json", "value": {"n": 500, "owner": null}},
                {"op": "put", "doc": "y.json", "value": {"n": 500, "owner": null}}]),
    );
    assert_eq!(s, 200, "{made}");
    let (vx, vy) = (
        made["results"][0]["version"].clone(),
        made["results"][1]["version"].clone(),
    );
    let n = 100;
    let start = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (addr, start, vx, vy) = (server.addr, start.clone(), vx.clone(), vy.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                start.wait();
                let (first, second) = if i % 2 == 0 {
                    ("x.json", "y.json")
                } else {
                    ("y.json", "x.json")
                };
                let (v1, v2) = if i % 2 == 0 { (vx, vy) } else { (vy, vx) };
                tx(
                    &mut conn,
                    &json!([{"op": "patch", "doc": first, "merge": {"owner": i}, "if_match": v1},
                            {"op": "patch", "doc": second, "merge": {"owner": i}, "if_match": v2}]),
                )
                .0
            })
        })
        .collect();
    one_wins(threads, n);
    // New connections: the server closes one left idle past its header timeout.
    let read = json!([{"op": "get", "doc": "x.json"}, {"op": "get", "doc": "y.json"}]);
    let (_, both) = tx(&mut Conn::open(server.addr), &read);
    let owner = &both["results"][0]["value"]["owner"];
    assert!(owner.is_u64(), "{both}");
    assert_eq!(
        owner, &both["results"][1]["value"]["owner"],
        "one winner on both"
    );

    let conns = 24;
    let threads: Vec<_> = (0..conns)
        .map(|c: i64| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let mut out_of_x = 0;
                for k in 0..5 {
                    let amount = c + k;
                    let from_x = (c + k) % 2 == 0;
                    loop {
                        let read = json!([{"op": "get", "doc": "x.json"}, {"op": "get", "doc": "y.json"}]);
                        let (s, r) = tx(&mut conn, &read);
                        assert_eq!(s, 200, "{r}");
                        let r = &r["results"];
                        let delta = if from_x { amount } else { -amount };
                        let x = r[0]["value"]["n"].as_i64().unwrap() - delta;
                        let y = r[1]["value"]["n"].as_i64().unwrap() + delta;
                        let ops = json!([
                            {"op": "patch", "doc": "y.json", "merge": {"n": y}, "if_match": r[1]["version"]},
                            {"op": "patch", "doc": "x.json", "merge": {"n": x}, "if_match": r[0]["version"]}
                        ]);
                        match tx(&mut conn, &ops) {
                            (200, _) => break,
                            (412, _) => continue,
                            (s, body) => panic!("{s}: {body}"),
                        }
                    }
                    out_of_x += if from_x { amount } else { -amount };
                }
                out_of_x
            })
        })
        .collect();
    let moved: i64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let (_, both) = tx(&mut Conn::open(server.addr), &read);
    let x = both["results"][0]["value"]["n"].as_i64().unwrap();
    let y = both["results"][1]["value"]["n"].as_i64().unwrap();
    assert_eq!(x + y, 1000, "{both}");
    assert_eq!(x, 500 - moved, "every committed move, once");
}

#[test]
fn a_transactions_preconditions_see_its_earlier_operations() {
    preconditions_see_earlier_operations(&Backend::File);
}

#[test]
fn on_postgres_a_transactions_preconditions_see_its_earlier_operations() {
    if let Some(b) = Backend::postgres() {
        preconditions_see_earlier_operations(&b);
    }
}

/// The files below `dir` (the journal's `.statefile` and lock files aside) and their
/// bytes.
fn files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name == ".statefile" || name.ends_with(".lock") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// The version `value` has once stored (every backend stores the library's bytes).
fn version_once_stored(value: &Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    statefile::Store::open(dir.path())
        .unwrap()
        .doc::<Value>("v.json")
        .unwrap()
        .write(value)
        .unwrap()
        .version
        .to_string()
}

/// A status, the ETag, the body.
type Sent = (u16, Option<String>, Vec<u8>);

/// `method path` with a JSON `body` on `conn`.
fn send_json(conn: &mut Conn, method: &str, path: &str, body: &[u8]) -> Sent {
    let (status, hs, body) = conn
        .send(method, path, &[("content-type", "application/json")], body)
        .unwrap();
    (status, header(&hs, "etag"), body)
}

// Regression (txpre): `POST /v1/tx` checked each operation's precondition against the
// documents as the transaction locked them, not as its earlier operations left them:
// two creates of one document both passed `if_none_match`, an `if_match` passed after
// a delete of the document, and one naming the version of the transaction's own write
// failed.
fn preconditions_see_earlier_operations(b: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    if b.is_file() {
        let opts = statefile::Options::new();
        statefile::journal::enable(
            dir.path(),
            &opts,
            statefile::journal::JournalOptions::default(),
        )
        .unwrap();
    }
    let server = Server::serve(b.app_blocking(Config::new(dir.path())));
    let mut conn = Conn::open(server.addr);
    let mut send = |method: &str, path: &str, body: &[u8]| send_json(&mut conn, method, path, body);
    let (s, vb, _) = send("PUT", "/v1/docs/b.json", br#"{"n": 1}"#);
    assert_eq!(s, 201);
    let vb = vb.unwrap().trim_matches('"').to_string();
    let state = |send: &mut dyn FnMut(&str, &str, &[u8]) -> Sent| {
        let a = send("GET", "/v1/docs/a.json", b"");
        let b = send("GET", "/v1/docs/b.json", b"");
        ((a.0, a.1), (b.0, b.1, b.2))
    };
    let before = state(&mut send);
    let files_before = files(dir.path());
    for (ops, doc) in [
        (
            json!([{"op": "put", "doc": "a.json", "value": 1, "if_none_match": "*"},
                   {"op": "put", "doc": "a.json", "value": 2, "if_none_match": "*"}]),
            "a.json",
        ),
        (
            json!([{"op": "delete", "doc": "b.json", "if_match": vb},
                   {"op": "put", "doc": "b.json", "value": 3, "if_match": vb}]),
            "b.json",
        ),
        (
            json!([{"op": "put", "doc": "b.json", "value": 4},
                   {"op": "patch", "doc": "b.json", "merge": {"m": 1}, "if_match": vb}]),
            "b.json",
        ),
    ] {
        let (s, _, body) = send("POST", "/v1/tx", ops.to_string().as_bytes());
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(s, 412, "{ops}: {body}");
        assert_eq!(body["type"], "urn:statefile:problem:precondition-failed");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(doc), "{ops}: {detail}");
    }
    assert_eq!(state(&mut send), before, "nothing written");
    if b.is_file() {
        assert_eq!(
            files(dir.path()),
            files_before,
            "no file changed, none left"
        );
    }
    // The version of the transaction's own pending write holds, and a get between
    // reports that same version; after a delete, `if_none_match` holds.
    let pending = version_once_stored(&json!({"n": 2}));
    let ops = json!([
        {"op": "put", "doc": "a.json", "value": {"n": 2}, "if_none_match": "*"},
        {"op": "get", "doc": "a.json"},
        {"op": "patch", "doc": "a.json", "merge": {"n": 3}, "if_match": pending},
        {"op": "delete", "doc": "b.json", "if_match": vb},
        {"op": "put", "doc": "b.json", "value": {"n": 5}, "if_none_match": "*"}
    ]);
    let (s, _, body) = send("POST", "/v1/tx", ops.to_string().as_bytes());
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(s, 200, "{body}");
    let r = &body["results"];
    assert_eq!(r[1]["value"], json!({"n": 2}));
    assert_eq!(r[1]["version"], json!(pending), "{body}");
    assert_eq!(r[1]["etag"], json!(format!("\"{pending}\"")), "{body}");
    let (s, etag, a) = send("GET", "/v1/docs/a.json", b"");
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&a).unwrap(),
        json!({"n": 3})
    );
    assert_eq!(Some(r[2]["etag"].as_str().unwrap().to_string()), etag);
    let (s, etag, b_now) = send("GET", "/v1/docs/b.json", b"");
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&b_now).unwrap(),
        json!({"n": 5})
    );
    assert_eq!(Some(r[4]["etag"].as_str().unwrap().to_string()), etag);
    if b.is_file() {
        assert!(
            files(dir.path()).keys().all(|n| !n.ends_with(".tmp")),
            "no temp file left"
        );
    }
}

/// Of `n` racing conditional requests (the threads' statuses), exactly one is 200 and
/// the rest 412.
#[track_caller]
fn one_wins(threads: Vec<std::thread::JoinHandle<u16>>, n: usize) {
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        n - 1,
        "{statuses:?}"
    );
}
