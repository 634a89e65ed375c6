//! Workload 6: an HTTP load of appends and reads against `statefile serve` (run in a
//! child process), from a keep-alive client written here, on loopback.

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

pub fn server_workload(out: &mut Out, cfg: &Cfg) {
    let dir = scratch("serve");
    let mut server = match Command::new(std::env::current_exe().unwrap())
        .args(["child", "serve", &json!({"dir": dir}).to_string()])
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            out.line(format!(
                "\n## 6. Server\n\nskipped: cannot start the server ({e})"
            ));
            return;
        }
    };
    let mut line = String::new();
    let _ = BufReader::new(server.stdout.take().unwrap()).read_line(&mut line);
    let Some(addr) = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse::<SocketAddr>().ok())
    else {
        out.line(format!(
            "\n## 6. Server\n\nskipped: the server did not start ({line:?})"
        ));
        let _ = server.kill();
        return;
    };
    let levels: &[usize] = if cfg.quick { &[1, 4] } else { &[1, 16, 64] };
    let secs = if cfg.quick { 0.3 } else { 3.0 };
    out.line(format!(
        "\n## 6. Server: `statefile serve` under a load of appends and reads (half each), keep-alive connections on loopback, {secs} s per level\n"
    ));
    out.line("| connections | requests/s | p50 | p99 | errors | appends acknowledged | appends present |");
    out.line("|---|---|---|---|---|---|---|");
    for &conns in levels {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let started = Instant::now();
        let results: Vec<ConnResult> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..conns)
                .map(|c| {
                    s.spawn(move || {
                        let mut lat = Vec::new();
                        let mut errors = 0;
                        let mut acked = Vec::new();
                        let Ok(mut conn) = Conn::open(addr) else {
                            return (lat, 1, acked);
                        };
                        let doc = c % 8;
                        let mut i = 0;
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            let r = if i % 2 == 0 {
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
        let s = Summary::of(lat, elapsed);
        let total_acked: usize = acked.values().map(Vec::len).sum();
        let mut present = 0;
        if let Ok(mut conn) = Conn::open(addr) {
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
        out.line(format!(
            "| {conns} | {:.0} | {:.2} ms | {:.2} ms | {errors} | {total_acked} | {present} |",
            s.per_sec(),
            s.p50_us / 1000.0,
            s.p99_us / 1000.0
        ));
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
