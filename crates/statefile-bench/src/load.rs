//! Workload 6: an HTTP load of appends and reads against `statefile serve` (run in child
//! processes), from a keep-alive client written here, on loopback: the file backend, and
//! the PostgreSQL backend with one server and with two servers on one database.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Cfg, Out, Summary, scratch};

struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Conn {
            r: BufReader::new(s),
        })
    }

    fn send(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.r.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut len = 0;
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut b = vec![0; len];
        self.r.read_exact(&mut b)?;
        Ok((status, b))
    }
}

/// One connection's latencies, errors, and acknowledged appends (document, item).
type ConnResult = (Vec<Duration>, usize, Vec<(usize, String)>);

/// `statefile serve` child processes; killed when dropped.
struct Servers {
    children: Vec<std::process::Child>,
    addrs: Vec<SocketAddr>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Servers {
    /// One server per entry of `args` (the child "serve" task's parameters).
    fn start(args: &[Value]) -> Result<Servers, String> {
        let mut s = Servers {
            children: Vec::new(),
            addrs: Vec::new(),
        };
        for a in args {
            let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
                .args(["child", "serve", &a.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start the server ({e})"))?;
            let mut line = String::new();
            let _ = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
            s.children.push(child);
            let addr = line
                .trim()
                .rsplit("http://")
                .next()
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .ok_or_else(|| format!("the server did not start ({line:?})"))?;
            s.addrs.push(addr);
        }
        Ok(s)
    }
}

/// A PostgreSQL database for the benchmark: `STATEFILE_BENCH_PG_URL`, or a throwaway
/// cluster started with test.d/pg-cluster.sh (stopped and removed when dropped).
struct Database {
    url: String,
    cluster: Option<std::path::PathBuf>,
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(dir) = &self.cluster {
            let _ = Command::new(dir.join("ctl"))
                .arg("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Database {
    fn get() -> Result<Database, String> {
        if let Ok(url) = std::env::var("STATEFILE_BENCH_PG_URL") {
            return Ok(Database { url, cluster: None });
        }
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test.d/pg-cluster.sh");
        let out = Command::new("bash")
            .arg("-c")
            .arg(r#"source "$0" && pg_cluster_start && echo "$STATEFILE_TEST_PG_URL $PG_CLUSTER_DIR""#)
            .arg(&script)
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.trim().split_once(' ') {
            Some((url, dir)) if out.status.success() => Ok(Database {
                url: url.to_string(),
                cluster: Some(dir.into()),
            }),
            _ => Err(format!(
                "no PostgreSQL (set STATEFILE_BENCH_PG_URL, or install it): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }

    /// A URL whose sessions use a new, empty schema.
    fn fresh_schema(&self, name: &str) -> Result<String, String> {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).map_err(|e| {
            format!(
                "cannot connect to {}: {e}",
                statefile_server::pg::connect::redacted(&self.url)
            )
        })?;
        let schema = format!("bench_{name}_{}", std::process::id());
        c.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .map_err(|e| e.to_string())?;
        let sep = if self.url.contains('?') { '&' } else { '?' };
        Ok(format!("{}{sep}options=-csearch_path%3D{schema}", self.url))
    }
}

/// What the connections of one row send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// Appends and reads, half each, on eight documents.
    Mixed,
    /// Appends only, all on one document (a fresh one per row, so every row starts
    /// from an empty array).
    Appends,
}

/// One row: `conns` keep-alive connections (spread over `addrs`) sending `load` for
/// `secs`, then every acknowledged append looked for.
fn measure(
    addrs: &[SocketAddr],
    conns: usize,
    secs: f64,
    load: Load,
) -> (Summary, usize, usize, usize) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let results: Vec<ConnResult> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..conns)
            .map(|c| {
                let addr = addrs[c % addrs.len()];
                s.spawn(move || {
                    let mut lat = Vec::new();
                    let mut errors = 0;
                    let mut acked = Vec::new();
                    let Ok(mut conn) = Conn::open(addr) else {
                        return (lat, 1, acked);
                    };
                    let doc = match load {
                        Load::Mixed => c % 8,
                        Load::Appends => 100 + conns,
                    };
                    let mut i = 0;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let r = if load == Load::Appends || i % 2 == 0 {
                            let item = format!("{conns}-{c}-{i}");
                            let r = conn.send(
                                "POST",
                                &format!("/v1/docs/load/{doc}.json/append?pointer=/items"),
                                &json!(item).to_string(),
                            );
                            if matches!(r, Ok((200, _))) {
                                acked.push((doc, item));
                            }
                            r
                        } else {
                            conn.send("GET", &format!("/v1/docs/load/{doc}.json"), "")
                        };
                        lat.push(t.elapsed());
                        match r {
                            Ok((200, _)) => {}
                            _ => errors += 1,
                        }
                        i += 1;
                    }
                    (lat, errors, acked)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut acked: HashMap<usize, Vec<String>> = HashMap::new();
    for (l, e, a) in results {
        lat.extend(l);
        errors += e;
        for (d, item) in a {
            acked.entry(d).or_default().push(item);
        }
    }
    let total_acked: usize = acked.values().map(Vec::len).sum();
    let mut present = 0;
    if let Ok(mut conn) = Conn::open(addrs[0]) {
        for (d, items) in &acked {
            if let Ok((200, b)) = conn.send("GET", &format!("/v1/docs/load/{d}.json"), "") {
                let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                let have: std::collections::HashSet<&str> = v["items"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                present += items.iter().filter(|i| have.contains(i.as_str())).count();
            }
        }
    }
    (Summary::of(lat, elapsed), errors, total_acked, present)
}

pub fn server_workload(out: &mut Out, cfg: &Cfg) {
    let levels: &[usize] = if cfg.quick { &[1, 4] } else { &[1, 16, 64] };
    let secs = if cfg.quick { 0.3 } else { 3.0 };
    out.line(format!(
        "\n## 6. Server: `statefile serve` under a load of appends and reads (half each, eight documents), then of appends only (one document), keep-alive connections on loopback, {secs} s per level\n"
    ));
    out.line("The file backend, then the PostgreSQL backend (a local cluster, `fsync` and `synchronous_commit` on, a pool of 16 connections per server) with one server and with two servers on one database (the connections split across both). The file backend also runs appends only, every connection appending to one document (a new one per row): concurrent appends then share durable writes (group commit; the server lets 16 writes per document reach the library at once, `--doc-concurrency`). \"present\" counts the acknowledged appends found in the documents afterwards.\n");
    out.line("| backend | servers | connections | requests/s | p50 | p99 | errors | appends acknowledged | appends present |");
    out.line("|---|---|---|---|---|---|---|---|---|");
    let mut groups: Vec<(String, Result<Vec<Value>, String>)> = Vec::new();
    let dir = scratch("serve");
    groups.push(("file".into(), Ok(vec![json!({"dir": dir})])));
    let db = Database::get();
    match &db {
        Ok(db) => {
            for servers in [1, 2] {
                let args = db
                    .fresh_schema(&format!("s{servers}"))
                    .map(|url| vec![json!({"dir": dir, "postgres": url}); servers]);
                groups.push(("PostgreSQL".into(), args));
            }
        }
        Err(e) => groups.push(("PostgreSQL".into(), Err(e.clone()))),
    }
    for (backend, args) in groups {
        let started = args.and_then(|a| Servers::start(&a));
        let servers = match started {
            Ok(s) => s,
            Err(e) => {
                out.line(format!("| {backend} | - | - | skipped: {e} | | | | | |"));
                continue;
            }
        };
        for &conns in levels {
            let (s, errors, acked, present) = measure(&servers.addrs, conns, secs, Load::Mixed);
            out.line(format!(
                "| {backend} | {} | {conns} | {:.0} | {:.2} ms | {:.2} ms | {errors} | {acked} | {present} |",
                servers.addrs.len(),
                s.per_sec(),
                s.p50_us / 1000.0,
                s.p99_us / 1000.0
            ));
        }
        if backend == "file" {
            appends_only(out, cfg, &servers.addrs, secs);
        }
    }
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The file backend under appends only, all to one document: concurrent appends share
/// durable writes (group commit). The bar: at 64 connections, 3x SQLite's
/// read-modify-write with 16 threads in this run (table 2).
fn appends_only(out: &mut Out, cfg: &Cfg, addrs: &[SocketAddr], secs: f64) {
    let levels: &[usize] = if cfg.quick {
        &[1, 4]
    } else {
        &[1, 16, 64, 256]
    };
    let mut rows = Vec::new();
    for &conns in levels {
        let (s, errors, acked, present) = measure(addrs, conns, secs, Load::Appends);
        rows.push(format!(
            "| file, appends only, one document | 1 | {conns} | {:.0} | {:.2} ms | {:.2} ms | {errors} | {acked} | {present} |",
            s.per_sec(),
            s.p50_us / 1000.0,
            s.p99_us / 1000.0
        ));
        if conns == 64 {
            let bar = out.sqlite_rmw_16_threads;
            let rate = s.per_sec();
            out.target(
                "server: appends to one document, 64 connections >= 3x SQLite's read-modify-write with 16 threads (table 2), 0 lost, every 2xx present",
                format!(
                    "{rate:.0}/s = {} SQLite's {}; {errors} errors, {} of {acked} acknowledged appends present",
                    bar.map_or("-".into(), |b| format!("{:.2}x of", rate / b)),
                    bar.map_or("(table 2 not run)".into(), |b| format!("{b:.0}/s")),
                    present
                ),
                bar.is_some_and(|b| rate >= 3.0 * b) && errors == 0 && present == acked,
            );
        }
    }
    for r in rows {
        out.line(r);
    }
}
