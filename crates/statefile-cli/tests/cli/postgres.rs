//! `statefile serve --backend postgres://…` as real processes on one real database: two
//! servers sharing it (no append lost or doubled, one winner of an If-Match race), the
//! database stopped mid-load and started again, backend selection, import and export.
//!
//! Needs STATEFILE_TEST_PG_URL (and STATEFILE_TEST_PG_CTL, a script taking stop|start,
//! for the outage test): `./test postgres` starts a throwaway cluster and sets both.
//! Without them each test says it skipped (and fails if STATEFILE_TEST_PG_REQUIRED is set).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::BIN;

/// The outage test stops the one database every test here uses: it runs alone.
static DATABASE: RwLock<()> = RwLock::new(());

fn base_url() -> Option<String> {
    match std::env::var("STATEFILE_TEST_PG_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var_os("STATEFILE_TEST_PG_REQUIRED").is_some() => {
            panic!("STATEFILE_TEST_PG_REQUIRED is set but STATEFILE_TEST_PG_URL is not")
        }
        _ => {
            println!("skipping: STATEFILE_TEST_PG_URL is not set (./test postgres sets it)");
            None
        }
    }
}

/// A new empty schema; the URL whose sessions use it.
fn fresh_schema(base: &str) -> String {
    let mut c = postgres::Client::connect(base, postgres::NoTls).unwrap();
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("cli_{}_{n}", std::process::id());
    c.batch_execute(&format!("CREATE SCHEMA {schema}")).unwrap();
    format!("{base}?options=-csearch_path%3D{schema}")
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `statefile serve` on port 0 with `args`; waits for its "serving" line.
fn serve(args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .env_remove("STATEFILE_TOKEN")
        .env_remove("STATEFILE_BACKEND")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    assert!(
        line.starts_with("statefile: serving postgres://") || !args.contains(&"--backend"),
        "{line}"
    );
    Server { child, addr }
}

/// One request on a fresh connection: (status, headers, body); `None` if refused.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((status, head.to_ascii_lowercase(), body.to_string()))
}

fn items(addr: SocketAddr, doc: &str) -> Vec<String> {
    let (status, _, body) = request(addr, "GET", &format!("/v1/docs/{doc}"), &[], "").unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_servers_on_one_database_a_thousand_appends_none_lost_none_twice() {
    let Some(base) = base_url() else { return };
    let _db = DATABASE.read().unwrap_or_else(|e| e.into_inner());
    let url = fresh_schema(&base);
    let servers = [
        serve(&["--backend", &url], &[]),
        serve(&["--backend", &url], &[]),
    ];
    let addrs = [servers[0].addr, servers[1].addr];
    let (threads, per) = (20, 50);
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for i in 0..per {
                    // Alternate servers on every request.
                    let addr = addrs[(t + i) % 2];
                    let item = format!("{t}-{i}");
                    let (status, _, body) = request(
                        addr,
                        "POST",
                        "/v1/docs/shared.json/append?pointer=/items",
                        &[],
                        &json!(item).to_string(),
                    )
                    .expect("server answers");
                    assert_eq!(status, 200, "{item}: {body}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for addr in addrs {
        let got = items(addr, "shared.json");
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(got.len(), threads * per, "every append present once");
        assert_eq!(unique.len(), threads * per, "none twice");
    }
}

#[test]
fn a_two_hundred_way_if_match_race_across_two_servers_has_one_winner() {
    let Some(base) = base_url() else { return };
    let _db = DATABASE.read().unwrap_or_else(|e| e.into_inner());
    let url = fresh_schema(&base);
    let servers = [
        serve(&["--backend", &url], &[]),
        serve(&["--backend", &url], &[]),
    ];
    let addrs = [servers[0].addr, servers[1].addr];
    let (status, head, _) =
        request(addrs[0], "PUT", "/v1/docs/race.json", &[], "{\"n\": 0}").unwrap();
    assert_eq!(status, 201);
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_string();
    let n = 200;
    let start = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (start, etag) = (start.clone(), etag.clone());
            std::thread::spawn(move || {
                start.wait();
                request(
                    addrs[i % 2],
                    "PUT",
                    "/v1/docs/race.json",
                    &[("if-match", &etag)],
                    &format!("{{\"n\": {}}}", i + 1),
                )
                .expect("server answers")
                .0
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
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

#[test]
fn the_database_stopped_mid_load_gives_503s_then_recovers_with_every_acknowledged_append() {
    let Some(base) = base_url() else { return };
    let Ok(ctl) = std::env::var("STATEFILE_TEST_PG_CTL") else {
        assert!(
            std::env::var_os("STATEFILE_TEST_PG_REQUIRED").is_none(),
            "STATEFILE_TEST_PG_CTL is not set"
        );
        println!("skipping: STATEFILE_TEST_PG_CTL is not set (./test postgres sets it)");
        return;
    };
    let _db = DATABASE.write().unwrap_or_else(|e| e.into_inner());
    let url = fresh_schema(&base);
    let timeout = Duration::from_secs(5);
    let servers = [
        serve(&["--backend", &url, "--request-timeout", "5"], &[]),
        serve(&["--backend", &url, "--request-timeout", "5"], &[]),
    ];
    let addrs = [servers[0].addr, servers[1].addr];
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let answers = Arc::new(Mutex::new(Vec::<(u16, String, Duration)>::new()));
    let load: Vec<_> = (0..8)
        .map(|t| {
            let (stop, acked, answers) = (stop.clone(), acked.clone(), answers.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let item = format!("{t}-{i}");
                    let began = Instant::now();
                    let r = request(
                        addrs[(t + i) % 2],
                        "POST",
                        "/v1/docs/load.json/append?pointer=/items",
                        &[],
                        &json!(item).to_string(),
                    )
                    .expect("the server itself stays up");
                    let took = began.elapsed();
                    if r.0 == 200 {
                        acked.lock().unwrap().push(item);
                    }
                    answers.lock().unwrap().push((r.0, r.2, took));
                    i += 1;
                }
            })
        })
        .collect();
    let count_ok = || {
        answers
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.0 == 200)
            .count()
    };
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("appends before the outage", &|| count_ok() >= 50);
    let ok = Command::new(&ctl)
        .arg("stop")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "stopping the database");
    let during = answers.lock().unwrap().len();
    wait_for("503s while the database is down", &|| {
        answers.lock().unwrap()[during..]
            .iter()
            .filter(|a| a.0 == 503)
            .count()
            >= 20
    });
    let (status, _, body) = request(addrs[0], "GET", "/healthz", &[], "").unwrap();
    assert_eq!(status, 503, "healthz while the database is down: {body}");
    assert!(body.contains("storage-unavailable"), "{body}");
    let ok = Command::new(&ctl)
        .arg("start")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "starting the database");
    let after = answers.lock().unwrap().len();
    wait_for("appends after the database is back", &|| {
        answers.lock().unwrap()[after..]
            .iter()
            .filter(|a| a.0 == 200)
            .count()
            >= 50
    });
    stop.store(true, Ordering::Relaxed);
    for h in load {
        h.join().unwrap();
    }
    let answers = answers.lock().unwrap();
    let mut unavailable = 0;
    for (status, body, took) in answers.iter() {
        match status {
            200 => {}
            503 => {
                unavailable += 1;
                let p: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
                assert!(
                    p["type"] == "urn:statefile:problem:storage-unavailable"
                        || p["type"] == "urn:statefile:problem:request-timeout",
                    "{p}"
                );
            }
            other => panic!("{other} during the outage (never 500): {body}"),
        }
        assert!(
            *took < timeout + Duration::from_secs(3),
            "an answer took {took:?}, past the request timeout"
        );
    }
    assert!(unavailable >= 20, "{unavailable} 503s");
    let (status, _, _) = request(addrs[1], "GET", "/healthz", &[], "").unwrap();
    assert_eq!(status, 200, "healthz once the database is back");
    let stored = items(addrs[0], "load.json");
    let have: HashSet<&String> = stored.iter().collect();
    assert_eq!(have.len(), stored.len(), "no append twice");
    let acked = acked.lock().unwrap();
    let lost: Vec<&String> = acked.iter().filter(|i| !have.contains(i)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    println!(
        "outage: {} answers, {} acknowledged, {unavailable} answered 503, {} stored",
        answers.len(),
        acked.len(),
        stored.len()
    );
}

#[test]
fn the_backend_comes_from_the_flag_the_environment_or_database_url() {
    let Some(base) = base_url() else { return };
    let _db = DATABASE.read().unwrap_or_else(|e| e.into_inner());
    let url = fresh_schema(&base);
    // STATEFILE_BACKEND, then DATABASE_URL: one database seen through each.
    let a = serve(&[], &[("STATEFILE_BACKEND", &url)]);
    let (status, _, _) = request(a.addr, "PUT", "/v1/docs/x.json", &[], "[1]").unwrap();
    assert_eq!(status, 201);
    let b = serve(&[], &[("DATABASE_URL", &url)]);
    let (status, _, body) = request(b.addr, "GET", "/v1/docs/x.json", &[], "").unwrap();
    assert_eq!((status, body.as_str()), (200, "[\n  1\n]\n"));
    // A directory given explicitly wins over DATABASE_URL.
    let dir = tempfile::tempdir().unwrap();
    let c = serve(&[dir.path().to_str().unwrap()], &[("DATABASE_URL", &url)]);
    let (status, _, _) = request(c.addr, "GET", "/v1/docs/x.json", &[], "").unwrap();
    assert_eq!(status, 404);
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_remove("STATEFILE_BACKEND")
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = run(&["serve"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("serve needs a DIR, or --backend"));
    let out = run(&["serve", "d", "--backend", &url]);
    assert_eq!(out.status.code(), Some(2));
    // An unreachable database: a clear message without the password, exit 1.
    let out = run(&["serve", "--backend", "postgres://me:hunter2@127.0.0.1:1/db"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the database at postgres://me@127.0.0.1:1/db")
            && !err.contains("hunter2"),
        "{err}"
    );
}

/// What `statefile serve --backend url` prints on stderr before it serves.
fn startup_stderr(url: &str) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--backend", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("statefile: serving postgres://"), "{line}");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn synchronous_commit_off_is_warned_about_on_start() {
    let Some(base) = base_url() else { return };
    let _db = DATABASE.read().unwrap_or_else(|e| e.into_inner());
    let url = fresh_schema(&base);
    assert!(!startup_stderr(&url).contains("warning"));
    let err = startup_stderr(&format!("{url}%20-csynchronous_commit%3Doff"));
    assert!(
        err.contains("statefile: warning: the database runs with synchronous_commit off"),
        "{err}"
    );
}

#[test]
fn fsync_off_is_warned_about_on_start() {
    let Some(base) = base_url() else { return };
    // fsync is the whole cluster's setting: nothing else here runs meanwhile.
    let _db = DATABASE.write().unwrap_or_else(|e| e.into_inner());
    let url = fresh_schema(&base);
    /// Sets fsync cluster-wide and waits until new sessions see it.
    fn set_fsync(base: &str, value: &str) {
        let mut c = postgres::Client::connect(base, postgres::NoTls).unwrap();
        let sql = if value == "on" {
            "ALTER SYSTEM RESET fsync".to_string()
        } else {
            format!("ALTER SYSTEM SET fsync = {value}")
        };
        c.batch_execute(&sql).unwrap();
        c.batch_execute("SELECT pg_reload_conf()").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut probe = postgres::Client::connect(base, postgres::NoTls).unwrap();
            let v: String = probe.query_one("SHOW fsync", &[]).unwrap().get(0);
            assert!(Instant::now() < deadline, "fsync stays {v}");
            if v == value {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    /// Puts fsync back on, even if the test fails.
    struct Reset<'a>(&'a str);
    impl Drop for Reset<'_> {
        fn drop(&mut self) {
            set_fsync(self.0, "on");
        }
    }
    set_fsync(&base, "off");
    let reset = Reset(&base);
    let err = startup_stderr(&url);
    drop(reset);
    assert!(
        err.contains("statefile: warning: the database runs with fsync off"),
        "{err}"
    );
}

/// A file holding statefile's reserved key (another program wrote it) is not copied
/// into the database: there every update and export would read it as the number its
/// value spells. The other documents are copied; the import exits 1 naming the key.
#[test]
fn import_refuses_a_document_holding_the_reserved_key() {
    let Some(base) = base_url() else { return };
    let _db = DATABASE.read().unwrap_or_else(|e| e.into_inner());
    let url = fresh_schema(&base);
    let src = tempfile::tempdir().unwrap();
    let key = statefile::RESERVED_KEY;
    std::fs::write(
        src.path().join("foreign.json"),
        format!(r#"{{"a": {{"{key}": "12"}}}}"#),
    )
    .unwrap();
    std::fs::write(src.path().join("ok.json"), "{\"v\": 1}\n").unwrap();
    let out = Command::new(BIN)
        .arg("import")
        .arg(src.path())
        .args(["--to", &url])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("1 copied, 0 unchanged, 1 failed"), "{text}");
    assert!(text.contains(key), "{text}");
}

#[test]
fn import_and_export_through_the_binary() {
    let Some(base) = base_url() else { return };
    let _db = DATABASE.read().unwrap_or_else(|e| e.into_inner());
    let url = fresh_schema(&base);
    let src = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| Command::new(BIN).args(args).output().unwrap();
    for v in ["{\"v\": 1}", "{\"v\": 2}"] {
        let mut c = Command::new(BIN)
            .args(["put", "--parents"])
            .arg(src.path().join("jobs/a.json"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(v.as_bytes()).unwrap();
        assert!(c.wait().unwrap().success());
    }
    let dir = src.path().to_str().unwrap();
    let out = run(&["import", dir, "--to", &url]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 copied, 0 unchanged, 0 failed"), "{text}");
    let out = run(&["import", dir, "--to", &url, "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["unchanged"], 1, "{report}");
    let version = report["documents"][0]["version"]
        .as_str()
        .unwrap()
        .to_string();
    // The same version the file has, and the server serves it as the ETag.
    let file_version = run(&["version", &format!("{dir}/jobs/a.json")]);
    assert_eq!(
        String::from_utf8_lossy(&file_version.stdout).trim(),
        version
    );
    let server = serve(&["--backend", &url], &[]);
    let (_, head, _) = request(server.addr, "GET", "/v1/docs/jobs/a.json", &[], "").unwrap();
    assert!(head.contains(&format!("etag: \"{version}\"")), "{head}");
    let (_, _, body) =
        request(server.addr, "GET", "/v1/docs/jobs/a.json/backups", &[], "").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["backups"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let out_dir = tempfile::tempdir().unwrap();
    let to = out_dir.path().to_str().unwrap();
    let out = run(&["export", &url, "--to", to]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(out_dir.path().join("jobs/a.json")).unwrap(),
        std::fs::read(src.path().join("jobs/a.json")).unwrap()
    );
    assert_eq!(
        std::fs::read(out_dir.path().join("jobs/.a.json.bak")).unwrap(),
        std::fs::read(src.path().join("jobs/.a.json.bak")).unwrap()
    );
    let out = run(&["export", &url, "--to", to]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 copied, 1 unchanged"));
    let out = run(&["import", dir, "--to", "mysql://x"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Regression: `--backend`, `import --to` and `export` took only URLs, and TLS not at all
/// (`sslmode=require` was refused): libpq's key=value form and its TLS settings work
/// through the binary.
#[test]
fn key_value_connection_strings_and_verified_tls_through_the_binary() {
    let Some(base) = base_url() else { return };
    let Some(tls) = std::env::var_os("STATEFILE_TEST_PG_TLS") else {
        assert!(
            std::env::var_os("STATEFILE_TEST_PG_REQUIRED").is_none(),
            "STATEFILE_TEST_PG_TLS is not set"
        );
        println!("skipping: STATEFILE_TEST_PG_TLS is not set (./test postgres sets it)");
        return;
    };
    let _db = DATABASE.read().unwrap_or_else(|e| e.into_inner());
    let url = fresh_schema(&base);
    let schema = url.rsplit("%3D").next().unwrap();
    let c: postgres::Config = base.parse().unwrap();
    let password = String::from_utf8(c.get_password().unwrap().to_vec()).unwrap();
    let pairs = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=statefile password={password} \
         dbname=statefile options='-c search_path={schema}' sslmode=verify-full \
         sslrootcert={}",
        c.get_ports()[0],
        std::path::Path::new(&tls).join("ca.crt").display()
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("STATEFILE_BACKEND", &pairs)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server = Server {
        addr: line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}")),
        child,
    };
    assert!(
        line.starts_with(&format!(
            "statefile: serving postgres://statefile@localhost:{}/statefile (TLS: sslmode=verify-full) on",
            c.get_ports()[0]
        )),
        "{line}"
    );
    assert!(!line.contains(&password), "{line}");
    let (status, _, _) = request(server.addr, "PUT", "/v1/docs/kv.json", &[], "[1]").unwrap();
    assert_eq!(status, 201);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("imported.json"), "{\"x\": 1}\n").unwrap();
    let out = Command::new(BIN)
        .args(["import", src.path().to_str().unwrap(), "--to", &pairs])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _, body) = request(server.addr, "GET", "/v1/docs/imported.json", &[], "").unwrap();
    assert_eq!((status, body.as_str()), (200, "{\"x\": 1}\n"));
    // A directory given to --backend is not mistaken for a database.
    let out = Command::new(BIN)
        .args(["serve", "--backend", "./data"])
        .env_remove("STATEFILE_BACKEND")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("or host=HOST dbname=DB"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Regression: the PG* environment variables and the password file were ignored, so the
/// password had to be in the connection string. `--backend postgres://` takes everything
/// from them, as libpq does (TLS included), and never shows the password.
#[test]
fn libpq_environment_variables_and_the_password_file_through_the_binary() {
    use std::os::unix::fs::PermissionsExt;
    let Some(base) = base_url() else { return };
    let Some(tls) = std::env::var_os("STATEFILE_TEST_PG_TLS") else {
        assert!(
            std::env::var_os("STATEFILE_TEST_PG_REQUIRED").is_none(),
            "STATEFILE_TEST_PG_TLS is not set"
        );
        println!("skipping: STATEFILE_TEST_PG_TLS is not set (./test postgres sets it)");
        return;
    };
    let _db = DATABASE.read().unwrap_or_else(|e| e.into_inner());
    let url = fresh_schema(&base);
    let schema = url.rsplit("%3D").next().unwrap().to_string();
    let c: postgres::Config = base.parse().unwrap();
    let password = String::from_utf8(c.get_password().unwrap().to_vec()).unwrap();
    let port = c.get_ports()[0].to_string();
    let dir = tempfile::tempdir().unwrap();
    let pgpass = dir.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!("localhost:{port}:statefile:someone-else:wrong\n*:{port}:*:statefile:{password}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ca = std::path::Path::new(&tls).join("ca.crt");
    let options = format!("-c search_path={schema}");
    let env = |passfile: &std::path::Path| {
        vec![
            ("PGHOST", "localhost".to_string()),
            ("PGHOSTADDR", "127.0.0.1".to_string()),
            ("PGPORT", port.clone()),
            ("PGUSER", "statefile".to_string()),
            ("PGDATABASE", "statefile".to_string()),
            ("PGPASSFILE", passfile.display().to_string()),
            ("PGOPTIONS", options.clone()),
            ("PGSSLMODE", "verify-full".to_string()),
            ("PGSSLROOTCERT", ca.display().to_string()),
        ]
    };
    let vars = env(&pgpass);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = serve(&["--backend", "postgres://"], &vars);
    let (status, _, _) = request(server.addr, "PUT", "/v1/docs/env.json", &[], "[1]").unwrap();
    assert_eq!(status, 201);
    // In the schema PGOPTIONS named.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM statefile_documents WHERE name = 'env.json'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    drop(server);
    // A password file others may read is not used (as libpq): no password, no start.
    let open = dir.path().join("pgpass-open");
    std::fs::copy(&pgpass, &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--backend", "postgres://"])
        .env_remove("STATEFILE_BACKEND")
        .env_remove("DATABASE_URL")
        .env_remove("PGPASSWORD");
    for (k, v) in env(&open) {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("postgres://statefile@localhost:{port}/statefile")),
        "{stderr}"
    );
    assert!(!stderr.contains(&password), "{stderr}");
}
