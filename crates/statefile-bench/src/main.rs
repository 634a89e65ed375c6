//! `statefile-bench`: statefile against the alternatives, side by side in one run.
//!
//! ```text
//! cargo run --release -p statefile-bench -- --out BENCHMARKS.md   # the full run
//! cargo run -p statefile-bench -- --quick --out target/bench-smoke.md  # CI's smoke run
//! ```
//!
//! Every alternative runs in its own child process (this binary re-executed with
//! `child`), so its peak memory is its own. Every run checks what it wrote: an
//! alternative that loses data is reported as losing data, not as fast.

mod alts;
mod ext;
mod journaled;
mod load;
mod node;
mod py;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::alts::{REPLACE_ALTS, RMW_ALTS, Writer};

/// Latency summary of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub ops: usize,
    pub total: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Summary {
    pub fn of(mut lat: Vec<Duration>, total: Duration) -> Summary {
        lat.sort();
        let pick = |q: f64| {
            lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e6)
        };
        Summary {
            ops: lat.len(),
            total: total.as_secs_f64(),
            p50_us: pick(0.50),
            p99_us: pick(0.99),
        }
    }

    pub fn per_sec(&self) -> f64 {
        if self.total > 0.0 {
            self.ops as f64 / self.total
        } else {
            0.0
        }
    }

    pub fn json(&self) -> Value {
        json!({"ops": self.ops, "total": self.total, "p50_us": self.p50_us, "p99_us": self.p99_us})
    }

    pub fn from_json(v: &Value) -> Summary {
        Summary {
            ops: v["ops"].as_u64().unwrap_or(0) as usize,
            total: v["total"].as_f64().unwrap_or(0.0),
            p50_us: v["p50_us"].as_f64().unwrap_or(0.0),
            p99_us: v["p99_us"].as_f64().unwrap_or(0.0),
        }
    }
}

/// This process's peak resident memory (VmHWM), in KiB.
pub fn peak_kb() -> u64 {
    proc_status("VmHWM:")
}

pub fn rss_kb() -> u64 {
    proc_status("VmRSS:")
}

fn proc_status(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// A JSON document of about `size` bytes (pretty-printed), different for each `seq`.
pub fn document(size: usize, seq: u64) -> Value {
    let per = 64;
    let n = (size / per).max(1);
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"id": i, "name": format!("item-{i:06}"), "ok": i % 3 == 0}))
        .collect();
    // Built by hand, not with json!: the macro would copy the item array and leave the
    // original behind as freed-but-resident memory, inflating the value's measured size.
    let mut doc = serde_json::Map::new();
    doc.insert("seq".into(), json!(seq));
    doc.insert(
        "updated".into(),
        json!(format!("2026-11-24T00:00:{:02}Z", seq % 60)),
    );
    doc.insert("items".into(), Value::Array(items));
    Value::Object(doc)
}

/// Run this binary as a child for one task; returns its JSON answer.
fn child(task: &str, args: &Value) -> Value {
    let out = Command::new(std::env::current_exe().expect("own path"))
        .args(["child", task, &args.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn child");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line)
        .unwrap_or_else(|_| json!({"error": format!("child {task} failed: {}", out.status)}))
}

fn median_by<T: Clone>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| {
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    runs[runs.len() / 2].clone()
}

fn scratch(name: &str) -> PathBuf {
    scratch_in(&std::env::temp_dir(), name)
}

/// A new directory for one run, under `root`, kept until the run removes it.
fn scratch_in(root: &Path, name: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(&format!("sfbench-{name}-"))
        .tempdir_in(root)
        .expect("scratch dir")
        .keep()
}

struct Cfg {
    quick: bool,
    reps: usize,
}

struct Out {
    text: String,
    /// The issue's targets as measured in this run: (target, measured, met).
    targets: Vec<(String, String, bool)>,
    /// SQLite's read-modify-write rate with 16 threads in this run (table 2), the bar
    /// for the server's appends (table 6).
    sqlite_rmw_16_threads: Option<f64>,
}

impl Out {
    fn line(&mut self, s: impl AsRef<str>) {
        println!("{}", s.as_ref());
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }

    fn target(&mut self, what: impl Into<String>, measured: impl Into<String>, met: bool) {
        self.targets.push((what.into(), measured.into(), met));
    }

    /// The targets table: every figure the issue sets a bar for, and whether this run met it.
    fn targets_table(&mut self) {
        if self.targets.is_empty() {
            return;
        }
        self.line("\n## Targets, as measured in this run\n");
        self.line("| target | measured | met |");
        self.line("|---|---|---|");
        for (what, measured, met) in std::mem::take(&mut self.targets) {
            self.line(format!(
                "| {what} | {measured} | {} |",
                if met { "yes" } else { "**no**" }
            ));
        }
    }
}

fn ratio(x: f64, base: f64) -> String {
    if base > 0.0 && x > 0.0 {
        format!("{:.2}x", x / base)
    } else {
        "-".into()
    }
}

const USAGE: &str = "\
usage: statefile-bench [--quick] [--out FILE] [--only WORKLOAD]...

Runs every workload for statefile and each alternative and prints Markdown tables.
  --quick          a few seconds: small counts, one repetition (CI's smoke run)
  --out FILE       also write the tables to FILE (e.g. BENCHMARKS.md)
  --only WORKLOAD  run only this workload (repeatable): replace, rmw, reads, big, many, tx, server, node,
                   python, journaled (journal mode against SQLite on an ext4 image with a journal: root)
Build with --release for figures worth reading.";

const WORKLOADS: [&str; 10] = [
    "replace",
    "rmw",
    "reads",
    "big",
    "many",
    "tx",
    "server",
    "node",
    "python",
    "journaled",
];

struct Opts {
    quick: bool,
    help: bool,
    out: Option<PathBuf>,
    only: Vec<String>,
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        quick: false,
        help: false,
        out: None,
        only: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "-h" | "--help" => o.help = true,
            "--out" => o.out = Some(PathBuf::from(it.next().ok_or("--out needs a file")?)),
            "--only" => {
                let w = it.next().ok_or("--only needs a workload")?;
                if !WORKLOADS.contains(&w.as_str()) {
                    return Err(format!("unknown workload {w:?}"));
                }
                o.only.push(w.clone());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let params: Value =
            serde_json::from_str(args.get(3).map_or("{}", String::as_str)).expect("child args");
        let answer = run_child(&args[2], &params);
        println!("{answer}");
        return;
    }
    let opts = match parse_args(&args[1..]) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("statefile-bench: {msg}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if opts.help {
        println!("{USAGE}");
        return;
    }
    let out_path = opts.out;
    let cfg = Cfg {
        quick: opts.quick,
        reps: if opts.quick { 1 } else { 5 },
    };
    let mut out = Out {
        text: String::new(),
        targets: Vec::new(),
        sqlite_rmw_16_threads: None,
    };
    header(&mut out, &cfg);
    let started = Instant::now();
    let wants = |name: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == name);
    type Workload = fn(&mut Out, &Cfg);
    // In the order they are shown; each runs at its place in RUN_ORDER.
    let workloads: [(&str, Workload); 10] = [
        ("replace", replace_workload),
        ("rmw", rmw_workload),
        ("reads", reads_workload),
        ("big", big_workload),
        ("many", many_workload),
        ("tx", tx_workload),
        ("server", load::server_workload),
        ("node", node::node_workload),
        ("python", py::python_workload),
        ("journaled", journaled::journaled_workload),
    ];
    let shown_from = out.text.len();
    // Each workload's text, by its place in `workloads`.
    let mut texts: Vec<Option<String>> = vec![None; workloads.len()];
    let mut first = true;
    for name in RUN_ORDER {
        let Some(i) = workloads.iter().position(|(n, _)| *n == name) else {
            unreachable!("RUN_ORDER names the workloads");
        };
        if wants(name) {
            if !first {
                settle(&cfg);
            }
            first = false;
            let from = out.text.len();
            workloads[i].1(&mut out, &cfg);
            texts[i] = Some(out.text.split_off(from));
        }
    }
    out.text.truncate(shown_from);
    out.text.extend(texts.into_iter().flatten());
    out.targets_table();
    out.line(format!(
        "\nTotal benchmark time: {:.0} s.",
        started.elapsed().as_secs_f64()
    ));
    if let Some(p) = out_path {
        std::fs::write(&p, &out.text).expect("write --out file");
        eprintln!("wrote {}", p.display());
    }
}

fn header(out: &mut Out, cfg: &Cfg) {
    out.line("# statefile benchmarks\n");
    out.line("Generated by one command (about 28 minutes with the Node and Python tables and table 10's ext4 image, which needs root; including 20 s of settling between workloads; keep the machine otherwise idle):\n");
    out.line("```sh\ncargo run --release -p statefile-bench -- --out BENCHMARKS.md\n```\n");
    out.line("Every alternative runs in the same run, on the same data, in its own child process (so peak memory is its own); each figure is the median of the repetitions, which go round all alternatives in turn. Absolute numbers drift on a shared machine: the ratios within one table are what count. Every row also checks that the final document parses and holds what was written; a row that lost data says so instead of being fast. The single-writer figures (durable replaces from Rust, Node and Python; transactions) time the second half of twice as many writes, each alternative in its own directory: the first half brings every alternative to its steady state (SQLite's write-ahead log at its size; statefile's journal ring in use). Micro-benchmarks of the hot paths: `cargo bench -p statefile-bench`.\n");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let fstype = journaled::describe(&std::env::temp_dir());
    out.line(format!(
        "Machine: {cores} cores ({cpu}), Linux {}, temp dir {} on {fstype}. Mode: {}, {} repetition(s) per figure (medians).",
        kernel.trim(),
        std::env::temp_dir().display(),
        if cfg.quick { "quick (smoke test: figures are not meaningful)" } else { "full" },
        cfg.reps
    ));
}

fn replace_workload(out: &mut Out, cfg: &Cfg) {
    let sizes: Vec<(usize, usize)> = if cfg.quick {
        vec![(7_000, 30)]
    } else {
        vec![(1_000, 2000), (7_000, 2000), (1_000_000, 200)]
    };
    for (size, n) in sizes {
        out.line(format!(
            "\n## 1. Durable replace of a {} document, one writer, {n} times\n",
            human(size)
        ));
        out.line("| alternative | writes/s | p50 | p99 | ratio to statefile | durable? | final document correct | peak RSS |");
        out.line("|---|---|---|---|---|---|---|---|");
        // Repetitions go round all alternatives in turn, so that a slow spell of the
        // disk hits every alternative rather than one.
        let mut runs: Vec<Vec<Value>> = vec![Vec::new(); REPLACE_ALTS.len()];
        for _ in 0..cfg.reps {
            for (i, alt) in REPLACE_ALTS.iter().enumerate() {
                let dir = scratch("replace");
                runs[i].push(child(
                    "replace",
                    &json!({"alt": alt, "size": size, "n": n, "dir": dir}),
                ));
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        let results: Vec<Value> = runs
            .into_iter()
            .map(|r| median_by(r, |v| Summary::from_json(&v["lat"]).per_sec()))
            .collect();
        let rate = |alt: &str| {
            REPLACE_ALTS
                .iter()
                .position(|a| *a == alt)
                .map_or(0.0, |i| Summary::from_json(&results[i]["lat"]).per_sec())
        };
        let base = rate("statefile");
        for (alt, r) in REPLACE_ALTS.iter().zip(&results) {
            let s = Summary::from_json(&r["lat"]);
            out.line(format!(
                "| {alt} | {:.0} | {:.0} µs | {:.0} µs | {} | {} | {} | {} |",
                s.per_sec(),
                s.p50_us,
                s.p99_us,
                ratio(s.per_sec(), base),
                durability(alt),
                if r["correct"] == true { "yes" } else { "NO" },
                human_kb(r["peak_kb"].as_u64().unwrap_or(0)),
            ));
        }
        if size <= 7_000 {
            for alt in alts::JOURNAL_ALTS {
                let (j, q, f) = (rate(alt), rate("sqlite"), rate("journal floor"));
                let how = if alt.contains("swap") { " (swap)" } else { "" };
                out.target(
                    format!(
                        "journal mode{how}: durable replace of a {} document >= 1.0x SQLite (WAL, synchronous=FULL)",
                        human(size)
                    ),
                    format!(
                        "{} SQLite; the protocol's calls alone (`journal floor`): {} SQLite, statefile at {:.0}% of them",
                        ratio(j, q).replace('x', "x of"),
                        ratio(f, q).replace('x', "x of"),
                        j / f.max(f64::MIN_POSITIVE) * 100.0
                    ),
                    j >= q,
                );
            }
        }
        let floor = rate("floor").max(f64::MIN_POSITIVE);
        for (alt, how) in [
            ("statefile", "Doc::write, serializing"),
            (
                "statefile (bytes given)",
                "write_atomic, bytes given as to floor",
            ),
        ] {
            let of_floor = rate(alt) / floor;
            out.target(
                format!(
                    "durable replace of a {} document at >= 90% of floor ({how})",
                    human(size)
                ),
                format!("{:.0}% of floor", of_floor * 100.0),
                of_floor >= 0.9,
            );
        }
        if !cfg.quick && size <= 7_000 {
            for row in ext::replace_rows(size, n, base) {
                out.line(row);
            }
        }
    }
    out.line("\n`floor` is the bare syscall sequence (write, fsync, rename, fsync directory) with bytes serialized beforehand; statefile also serializes, hashes, locks and keeps permissions. `statefile (backups on)` additionally reads the old version and links it to `.bak`. `statefile (bytes given)` is `write_atomic` with the same pre-serialized bytes `floor` gets: the protocol's own cost (lock, permissions, hashing for the version) without serialization. `journal floor` is the bare syscall sequence of a journal-mode commit, bytes prepared: the bytes appended as a record over a preallocated 16 MiB ring and one `fdatasync` of it (what SQLite's WAL does per commit), then a temp file created, written and renamed over the document without a sync (the plain file readers see at once); no lock, version, checksum or shared state. Where it is below SQLite, no implementation of journal mode's protocol reaches SQLite on that file system: the create and the rename are what SQLite does not do.");
}

fn durability(alt: &str) -> &'static str {
    match alt {
        "naive" => "no: no fsync, and a crash mid-write tears the file",
        "naive-rename" => "no: no fsync",
        // atomicwrites (PyPI) fsyncs the directory after its rename; these two do not.
        "tempfile" | "write-file-atomic (npm)" => "file yes, rename not synced",
        "statefile (journal, swap)" => {
            "yes, through the journal (the file itself may be empty after a power loss until statefile replays it)"
        }
        "journal floor" => "yes, through its ring (the calls alone: nothing replays it)",
        _ => "yes",
    }
}

fn rmw_workload(out: &mut Out, cfg: &Cfg) {
    let (procs, per_proc) = if cfg.quick { (2, 20) } else { (4, 500) };
    // (threads, appends each): the same 3,200 appends for 16 and 64 threads.
    let threaded: &[(usize, usize)] = if cfg.quick {
        &[(4, 10), (8, 5)]
    } else {
        &[(16, 200), (64, 50)]
    };
    out.line(format!(
        "\n## 2. Concurrent read-modify-write: append to one array\n\n{procs} processes x {per_proc} appends, and {} in one process. `statefile` batches concurrent updates of one document in one process into one durable write (group commit); `statefile (one write per update)` is the same with `Options::max_batch(1, ..)`, every update its own write, as before group commit. Alternatives without a lock run unlocked: their lost updates are the point of the column.\n",
        threaded
            .iter()
            .map(|(t, n)| format!("{t} threads x {n}"))
            .collect::<Vec<_>>()
            .join(" and ")
    ));
    out.line("| alternative | setup | appends/s | ratio to statefile | lost updates | locked | calls per write (mean) |");
    out.line("|---|---|---|---|---|---|---|");
    let setups = std::iter::once(("processes", procs, 1, per_proc))
        .chain(threaded.iter().map(|&(t, n)| ("threads", 1, t, n)));
    for (label, np, nt, n) in setups {
        let mut base = 0.0;
        let mut statefile_lost = 0;
        let mut journal = (0.0, 0);
        let mut swapped = (0.0, 0);
        for alt in RMW_ALTS {
            let runs: Vec<Rmw> = (0..cfg.reps).map(|_| rmw_once(alt, np, nt, n)).collect();
            let r = median_by(runs, |r| r.rate);
            if alt == "statefile" {
                base = r.rate;
                statefile_lost = r.lost;
            }
            if alt == "statefile (journal)" {
                journal = (r.rate, r.lost);
            }
            if alt == "statefile (journal, swap)" {
                swapped = (r.rate, r.lost);
            }
            if alt == "sqlite" && label == "processes" {
                for (how, (rate, lost)) in [("", journal), (" (swap)", swapped)] {
                    out.target(
                        format!(
                            "journal mode{how}: read-modify-write (processes) >= 1.0x SQLite, 0 lost updates"
                        ),
                        format!(
                            "{} SQLite, {lost} lost",
                            ratio(rate, r.rate).replace('x', "x of"),
                        ),
                        rate >= r.rate && lost == 0,
                    );
                }
            }
            if alt == "sqlite" && label == "threads" && nt == threaded[0].0 {
                out.sqlite_rmw_16_threads = Some(r.rate);
                out.target(
                    format!(
                        "read-modify-write, {nt} threads (group commit) >= 3x SQLite, 0 lost updates"
                    ),
                    format!(
                        "{} SQLite, {statefile_lost} lost",
                        ratio(base, r.rate).replace('x', "x of")
                    ),
                    base >= 3.0 * r.rate && statefile_lost == 0,
                );
            }
            if alt == "sqlite" && label == "processes" {
                let h = handover(cfg);
                out.target(
                    "lock handover between processes: the next process holds the lock within ~0.2 ms of its release (median)",
                    format!(
                        "median {:.0} µs, p99 {:.0} µs over {} handovers; read-modify-write with {np} processes: {} SQLite (one write per process and update: each pays its own fsyncs)",
                        h.p50_us,
                        h.p99_us,
                        h.ops,
                        ratio(base, r.rate).replace('x', "x of")
                    ),
                    h.p50_us <= 200.0,
                );
            }
            out.line(format!(
                "| {alt} | {np} x {nt} thread(s) x {n} ({label}) | {:.0} | {} | {} | {} | {} |",
                r.rate,
                ratio(r.rate, base),
                if r.lost == 0 {
                    "0".to_string()
                } else {
                    format!("**{} of {}**", r.lost, np * nt * n)
                },
                if alts::locks(alt) { "yes" } else { "no" },
                r.per_write.map_or("-".into(), |b| format!("{b:.1}")),
            ));
        }
        if !cfg.quick && label == "processes" {
            for row in ext::rmw_rows(np, n, base) {
                out.line(row);
            }
        }
    }
    out.line("\n\"calls per write\" is the mean number of updates one durable write answered (`Receipt::batch`), for statefile. Across processes each update is its own write: group commit batches calls inside one process, and the lock is handed from process to process (the handover figure is in the targets table).");
}

/// The outcome of one RMW round.
#[derive(Debug, Clone, Copy)]
struct Rmw {
    rate: f64,
    lost: usize,
    /// statefile: updates answered per durable write, on average.
    per_write: Option<f64>,
}

/// How long the next process takes to hold a lock another process released: a child
/// holds the document's lock for a while and releases it, this process waits for it
/// through statefile and notes when it got it. Returns microseconds.
fn handover(cfg: &Cfg) -> Summary {
    use std::io::{BufRead, BufReader, Write};
    let dir = scratch("handover");
    let path = dir.join("doc.json");
    statefile::write_json(&path, &json!({})).unwrap();
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args(["child", "hold", &json!({"dir": dir}).to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = holder.stdin.take().unwrap();
    let mut from = BufReader::new(holder.stdout.take().unwrap()).lines();
    let doc: statefile::Doc<Value> = statefile::Doc::open(&path).unwrap();
    let rounds = if cfg.quick { 5 } else { 100 };
    let mut lat = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        writeln!(to, "go").unwrap();
        let _held = from.next();
        let guard = doc.lock().unwrap();
        let taken = unix_ns();
        drop(guard);
        let released: u128 = from
            .next()
            .and_then(|l| l.ok())
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(taken);
        lat.push(Duration::from_nanos(taken.saturating_sub(released) as u64));
    }
    drop(to);
    let _ = holder.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Summary::of(lat, Duration::ZERO)
}

fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Run one RMW round: `np` processes with `nt` threads each appending `n` items.
fn rmw_once(alt: &str, np: usize, nt: usize, n: usize) -> Rmw {
    rmw_in(&scratch("rmw"), alt, np, nt, n)
}

/// As [`rmw_once`], in `dir` (a new directory, removed afterwards).
fn rmw_in(dir: &Path, alt: &str, np: usize, nt: usize, n: usize) -> Rmw {
    if alt == "sqlite" {
        // Create the database and switch it to WAL once, before the writers race.
        drop(alts::sqlite_open(dir));
    }
    alts::journal_for(alt, dir);
    let t = Instant::now();
    let children: Vec<_> = (0..np)
        .map(|p| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "child",
                    "rmw",
                    &json!({"alt": alt, "dir": dir, "id": p, "n": n, "threads": nt}).to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let answers: Vec<Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("child");
            let text = String::from_utf8_lossy(&out.stdout);
            serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or(Value::Null)
        })
        .collect();
    let elapsed = t.elapsed().as_secs_f64();
    let items = Writer::new(alt, dir).items(dir);
    let unique: std::collections::HashSet<&String> = items.iter().collect();
    let expected = np * nt * n;
    let _ = std::fs::remove_dir_all(dir);
    let writes: f64 = answers.iter().filter_map(|a| a["writes"].as_f64()).sum();
    Rmw {
        rate: expected as f64 / elapsed,
        lost: expected.saturating_sub(unique.len()),
        per_write: (writes > 0.0).then(|| expected as f64 / writes),
    }
}

fn reads_workload(out: &mut Out, cfg: &Cfg) {
    let n = if cfg.quick { 2_000 } else { 100_000 };
    out.line(format!(
        "\n## 3. Hot reads: {n} reads of an unchanged 7 KB document\n"
    ));
    out.line("| reader | reads/s | p50 | p99 | ratio to plain read + parse | correct |");
    out.line("|---|---|---|---|---|---|");
    // The journal rows: the same document in a store in journal mode, where every read
    // first checks the journal's shared state (one pread) for a dead writer's commit.
    let alts = [
        "plain read + parse",
        "statefile (cached)",
        "statefile",
        "statefile (cached, journal)",
        "statefile (journal)",
        "sqlite select + parse",
    ];
    let mut base = 0.0;
    let mut rows = Vec::new();
    for alt in alts {
        let runs: Vec<Value> = (0..cfg.reps)
            .map(|_| {
                let dir = scratch("reads");
                let r = child("reads", &json!({"alt": alt, "dir": dir, "n": n}));
                let _ = std::fs::remove_dir_all(&dir);
                r
            })
            .collect();
        let r = median_by(runs, |v| Summary::from_json(&v["lat"]).per_sec());
        let s = Summary::from_json(&r["lat"]);
        if alt == "plain read + parse" {
            base = s.per_sec();
        }
        rows.push((alt, s, r["correct"] == true));
    }
    if let Some((_, cached, _)) = rows.iter().find(|r| r.0 == "statefile (cached)") {
        let x = cached.per_sec() / base.max(f64::MIN_POSITIVE);
        out.target(
            "cached hot reads >= 20x plain read + parse",
            format!("{x:.1}x"),
            x >= 20.0,
        );
    }
    for (alt, s, ok) in rows {
        out.line(format!(
            "| {alt} | {:.0} | {:.1} µs | {:.1} µs | {} | {} |",
            s.per_sec(),
            s.p50_us,
            s.p99_us,
            ratio(s.per_sec(), base),
            if ok { "yes" } else { "NO" }
        ));
    }
}

fn big_workload(out: &mut Out, cfg: &Cfg) {
    let mb = if cfg.quick { 2 } else { 100 };
    out.line(format!(
        "\n## 4. One {mb} MB document: write time and peak memory\n"
    ));
    out.line("| writer | write time | file size | value in memory | peak RSS while writing | peak / value size | memory beyond the value | correct |");
    out.line("|---|---|---|---|---|---|---|---|");
    let mut peak_reset = true;
    for alt in ["statefile", "serde_json::to_vec + fs::write"] {
        let runs: Vec<Value> = (0..cfg.reps)
            .map(|_| {
                let dir = scratch("big");
                let r = child("big", &json!({"alt": alt, "dir": dir, "mb": mb}));
                let _ = std::fs::remove_dir_all(&dir);
                r
            })
            .collect();
        let r = median_by(runs, |v| v["write_s"].as_f64().unwrap_or(0.0));
        let value_kb = r["value_kb"].as_u64().unwrap_or(0);
        let peak = r["peak_kb"].as_u64().unwrap_or(0);
        let before = r["before_write_kb"].as_u64().unwrap_or(0);
        peak_reset &= r["peak_reset"] == true;
        let of_value = peak as f64 / value_kb.max(1) as f64;
        if alt == "statefile" {
            out.target(
                format!("{mb} MB write: peak memory < 1.5x the value's size"),
                format!("{of_value:.2}x"),
                of_value < 1.5 && r["correct"] == true,
            );
        }
        out.line(format!(
            "| {alt} | {:.2} s | {} | {} | {} | {of_value:.2} | {} | {} |",
            r["write_s"].as_f64().unwrap_or(0.0),
            human_kb(r["file_bytes"].as_u64().unwrap_or(0) / 1024),
            human_kb(value_kb),
            human_kb(peak),
            human_kb(peak.saturating_sub(before)),
            if r["correct"] == true { "yes" } else { "NO" }
        ));
    }
    out.line(format!(
        "\nThe document is a `serde_json::Value` (about ten times its file size in memory). The peak is measured from just before the write (`/proc/self/clear_refs`){}; it includes the value itself and the program. statefile streams the serialization through a 64 KiB buffer into the temp file; the alternative builds the whole byte vector first.",
        if peak_reset {
            ""
        } else {
            " -- NOT available here, so the peak also covers building the value"
        }
    ));
}

fn many_workload(out: &mut Out, cfg: &Cfg) {
    let n = if cfg.quick { 200 } else { 10_000 };
    out.line(format!(
        "\n## 5. Many documents: {n} small documents written into one store, then checkpointed (journal mode; SQLite: `wal_checkpoint(TRUNCATE)`) and verified\n"
    ));
    out.line("SQLite checkpoints its WAL into the database by itself every 1,000 pages while it writes (its default), so most of its checkpoint cost is in its write column; statefile's journal checkpoints when its ring is half full or a minute old, neither of which happens during these writes. The write + checkpoint column compares the two whole.\n");
    out.line("| store | write, per document | then checkpoint, per document | write + checkpoint, per document | verify the whole store, per document | correct |");
    out.line("|---|---|---|---|---|---|");
    let mut per_doc = Vec::new();
    for alt in [
        "statefile",
        "statefile (journal)",
        "statefile (journal, swap)",
        "sqlite",
    ] {
        let runs: Vec<Value> = (0..cfg.reps)
            .map(|_| {
                let dir = scratch("many");
                let r = child("many", &json!({"alt": alt, "dir": dir, "n": n}));
                let _ = std::fs::remove_dir_all(&dir);
                r
            })
            .collect();
        let r = median_by(runs, |v| v["write_s"].as_f64().unwrap_or(0.0));
        per_doc.push(r["write_s"].as_f64().unwrap_or(0.0) / n as f64 * 1e6);
        let write_s = r["write_s"].as_f64().unwrap_or(0.0);
        let checkpoint_s = r["checkpoint_s"].as_f64();
        let checkpoint = checkpoint_s.map_or(
            "- (none: each write is durable in its file)".to_string(),
            |c| format!("{:.1} µs", c / n as f64 * 1e6),
        );
        let whole = (write_s + checkpoint_s.unwrap_or(0.0)) / n as f64 * 1e6;
        out.line(format!(
            "| {} | {:.0} µs | {checkpoint} | {whole:.0} µs | {:.1} µs | {} |",
            match alt {
                "sqlite" => "sqlite (one row each, one transaction each; verify = integrity_check)",
                "statefile (journal)" =>
                    "statefile (journal) (Store in journal mode; verify = statefile::verify)",
                "statefile (journal, swap)" =>
                    "statefile (journal, swap) (likewise, the journal enabled with swap)",
                _ => "statefile (Store; verify = statefile::verify)",
            },
            write_s / n as f64 * 1e6,
            r["verify_s"].as_f64().unwrap_or(0.0) / n as f64 * 1e6,
            if r["correct"] == true { "yes" } else { "NO" }
        ));
    }
    if let [_, journal, swapped, sqlite] = per_doc[..] {
        for (how, journal) in [("", journal), (" (swap)", swapped)] {
            out.target(
                format!("journal mode{how}: {n} documents, write per document <= 1.5x SQLite's"),
                format!(
                    "{journal:.0} µs vs {sqlite:.0} µs ({:.2}x)",
                    journal / sqlite.max(1e-9)
                ),
                journal <= 1.5 * sqlite,
            );
        }
    }
}

fn tx_workload(out: &mut Out, cfg: &Cfg) {
    let n = if cfg.quick { 50 } else { 2000 };
    out.line(format!(
        "\n## 9. Two-document transactions: move one unit from a.json to b.json, one writer, {n} times\n"
    ));
    out.line("| alternative | transactions/s | p50 | p99 | ratio to SQLite | durable? | correct |");
    out.line("|---|---|---|---|---|---|---|");
    let alts = ["statefile (journal)", "statefile (journal, swap)", "sqlite"];
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); alts.len()];
    for _ in 0..cfg.reps {
        for (i, alt) in alts.iter().enumerate() {
            let dir = scratch("tx");
            runs[i].push(child("tx", &json!({"alt": alt, "dir": dir, "n": n})));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let results: Vec<Value> = runs
        .into_iter()
        .map(|r| median_by(r, |v| Summary::from_json(&v["lat"]).per_sec()))
        .collect();
    let sqlite = Summary::from_json(&results[2]["lat"]).per_sec();
    for (alt, r) in alts.iter().zip(&results) {
        let s = Summary::from_json(&r["lat"]);
        out.line(format!(
            "| {alt} | {:.0} | {:.0} µs | {:.0} µs | {} | yes | {} |",
            s.per_sec(),
            s.p50_us,
            s.p99_us,
            ratio(s.per_sec(), sqlite),
            if r["correct"] == true { "yes" } else { "NO" },
        ));
    }
    out.line("\nstatefile: `Store::transaction` reading both documents under their locks and writing both as one journal record (one fdatasync of the journal, then two renames), with `backups(0)` as the single-writer rows of table 1 (SQLite keeps no earlier versions; the default one backup per document adds a hard link and a rename for each). SQLite: WAL, synchronous=FULL, `BEGIN IMMEDIATE`, two SELECTs and two UPDATEs of rows holding the same JSON documents, `COMMIT`.");
}

fn child_tx(alt: &str, dir: &Path, n: usize, p_backups: Option<usize>) -> Value {
    let mut lat = Vec::with_capacity(n);
    let mut total = Duration::ZERO;
    let correct;
    if alt == "sqlite" {
        let mut c = alts::sqlite_open(dir);
        for (name, v) in [("a.json", 2 * n), ("b.json", 0)] {
            c.execute(
                "INSERT INTO docs (name, body) VALUES (?1, ?2)",
                [name.to_string(), json!({"n": v}).to_string()],
            )
            .unwrap();
        }
        // n untimed transactions first (see `timed`).
        for i in 0..2 * n {
            let t = Instant::now();
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            for (name, delta) in [("a.json", -1i64), ("b.json", 1)] {
                let body: String = tx
                    .query_row("SELECT body FROM docs WHERE name = ?1", [name], |r| {
                        r.get(0)
                    })
                    .unwrap();
                let mut v: Value = serde_json::from_str(&body).unwrap();
                v["n"] = json!(v["n"].as_i64().unwrap() + delta);
                tx.execute(
                    "UPDATE docs SET body = ?2 WHERE name = ?1",
                    [name.to_string(), v.to_string()],
                )
                .unwrap();
            }
            tx.commit().unwrap();
            let d = t.elapsed();
            if timed(i, n) {
                total += d;
                lat.push(d);
            }
        }
        let get = |name: &str| -> i64 {
            let body: String = c
                .query_row("SELECT body FROM docs WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .unwrap();
            serde_json::from_str::<Value>(&body).unwrap()["n"]
                .as_i64()
                .unwrap()
        };
        correct = get("a.json") == 0 && get("b.json") == 2 * n as i64;
    } else {
        alts::journal_for(alt, dir);
        // No backups, as the single-writer rows of table 1 (SQLite keeps none): the
        // default one backup per document costs a hard link and a rename more each.
        let backups = p_backups.unwrap_or(0);
        let store =
            statefile::Store::open_with(dir, statefile::Options::new().backups(backups)).unwrap();
        store
            .doc::<Value>("a.json")
            .unwrap()
            .write(&json!({"n": 2 * n}))
            .unwrap();
        store
            .doc::<Value>("b.json")
            .unwrap()
            .write(&json!({"n": 0}))
            .unwrap();
        // n untimed transactions first (see `timed`).
        for i in 0..2 * n {
            let t = Instant::now();
            store
                .transaction(|tx| {
                    let mut a: Value = tx.read("a.json")?.unwrap_or_default();
                    let mut b: Value = tx.read("b.json")?.unwrap_or_default();
                    a["n"] = json!(a["n"].as_i64().unwrap_or(0) - 1);
                    b["n"] = json!(b["n"].as_i64().unwrap_or(0) + 1);
                    tx.write("a.json", &a)?;
                    tx.write("b.json", &b)
                })
                .unwrap();
            let d = t.elapsed();
            if timed(i, n) {
                total += d;
                lat.push(d);
            }
        }
        let v = store.read_tx::<Value>(&["a.json", "b.json"]).unwrap();
        correct = v[0].as_ref().map(|a| a["n"] == json!(0)) == Some(true)
            && v[1].as_ref().map(|b| b["n"] == json!(2 * n)) == Some(true);
    }
    json!({"lat": Summary::of(lat, total).json(), "correct": correct})
}

pub fn human(bytes: usize) -> String {
    if bytes >= 1_000_000 {
        format!("{} MB", bytes / 1_000_000)
    } else {
        format!("{} KB", bytes / 1_000)
    }
}

fn human_kb(kb: u64) -> String {
    if kb >= 10_240 {
        format!("{:.0} MiB", kb as f64 / 1024.0)
    } else {
        format!("{kb} KiB")
    }
}

/// The warm-up, in every single-writer workload (durable replaces from Rust, Node and
/// Python, and two-document transactions): each alternative first makes as many
/// untimed writes as it then times, in the same directory, so that the timed ones meet
/// a steady state rather than a fresh one. SQLite's write-ahead log grows during its
/// first 1,000 pages (until its first automatic checkpoint), and a commit that grows
/// the file also has its size flushed: on an ext4 with a journal, SQLite's first 2,000
/// commits of a 1 KB row ran at 2,225/s and every later 2,000 at about 4,200/s
/// (measured by hand). statefile's journal is written in full when it is enabled, so
/// it has no such start. Without the warm-up, the tables compared SQLite's start with
/// statefile's steady state. Whether write `i` of `2 * n` is timed.
fn timed(i: usize, n: usize) -> bool {
    i >= n
}

/// The order the workloads run in (they are shown in table order). The transaction
/// workload runs first: right after the 10,000-document one (whose checkpoint writes
/// every document out, then whose scratch directories go) it measured 0.16x-0.22x of
/// SQLite in full runs against 0.45x-0.49x alone, with SQLite the same either way, and
/// neither `sync` nor 20 s of rest between them restored it.
const RUN_ORDER: [&str; 10] = [
    "tx",
    "replace",
    "rmw",
    "reads",
    "big",
    "many",
    "server",
    "node",
    "python",
    "journaled",
];

/// Between two workloads: write out what the last one left dirty (`sync`) and give the
/// file system time to finish what its deletions started, so that the next workload
/// does not pay for the last one. Measured: the transaction workload right after the
/// 10,000-document one (whose checkpoint writes them all, then whose scratch
/// directories go) ran at 0.19x of SQLite, and at 0.45x after `sync` and 30 s; SQLite
/// the same either way. None in quick mode.
fn settle(cfg: &Cfg) {
    if cfg.quick {
        return;
    }
    let _ = Command::new("sync").status();
    std::thread::sleep(Duration::from_secs(20));
}

/// The child side: one task, one JSON answer.
fn run_child(task: &str, p: &Value) -> Value {
    let dir = PathBuf::from(p["dir"].as_str().unwrap_or("/tmp"));
    match task {
        "replace" => child_replace(
            p["alt"].as_str().unwrap(),
            &dir,
            p["size"].as_u64().unwrap() as usize,
            p["n"].as_u64().unwrap() as usize,
        ),
        "rmw" => {
            let alt = p["alt"].as_str().unwrap().to_string();
            let (id, n, threads) = (
                p["id"].as_u64().unwrap(),
                p["n"].as_u64().unwrap(),
                p["threads"].as_u64().unwrap(),
            );
            // Durable writes made, as the receipts count them: each update's share of
            // the write that answered it (1 / the batch's size).
            let writes: f64 = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|t| {
                        let (alt, dir) = (alt.clone(), dir.clone());
                        s.spawn(move || {
                            let mut w = Writer::new(&alt, &dir);
                            (0..n)
                                .filter_map(|i| w.append(&format!("{id}-{t}-{i}")))
                                .map(|batch| 1.0 / batch as f64)
                                .sum::<f64>()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            json!({"ok": true, "writes": writes})
        }
        "reads" => child_reads(
            p["alt"].as_str().unwrap(),
            &dir,
            p["n"].as_u64().unwrap() as usize,
        ),
        "big" => child_big(
            p["alt"].as_str().unwrap(),
            &dir,
            p["mb"].as_u64().unwrap() as usize,
        ),
        "tx" => child_tx(
            p["alt"].as_str().unwrap(),
            &dir,
            p["n"].as_u64().unwrap() as usize,
            // By hand only (`"backups": 1`): the figure with the default one backup.
            p["backups"].as_u64().map(|b| b as usize),
        ),
        "many" => child_many(
            p["alt"].as_str().unwrap(),
            &dir,
            p["n"].as_u64().unwrap() as usize,
        ),
        "hold" => {
            // For each line on stdin: take the document's lock, say so, hold it 20 ms,
            // note the time and release it, then say when.
            let doc: statefile::Doc<Value> = statefile::Doc::open(dir.join("doc.json")).unwrap();
            for _ in std::io::stdin().lines().map_while(Result::ok) {
                let guard = doc.lock().unwrap();
                println!("held");
                std::thread::sleep(Duration::from_millis(20));
                let released = unix_ns();
                drop(guard);
                println!("{released}");
            }
            json!({"ok": true})
        }
        "serve" => {
            let mut c = statefile_server::Config::new(&dir);
            c.addr = "127.0.0.1:0".parse().unwrap();
            c.concurrency = 512;
            c.postgres = p["postgres"]
                .as_str()
                .map(statefile_server::pg::PgOptions::new);
            if let Err(e) = statefile_server::run(c) {
                eprintln!("serve failed: {e}");
            }
            json!({"ok": true})
        }
        other => json!({"error": format!("unknown task {other}")}),
    }
}

fn child_replace(alt: &str, dir: &Path, size: usize, n: usize) -> Value {
    let mut w = Writer::new(alt, dir);
    let mut lat = Vec::with_capacity(n);
    let mut last = Value::Null;
    let mut total = Duration::ZERO;
    // n untimed writes first (see `timed`).
    for i in 0..2 * n {
        let v = document(size, i as u64);
        let bytes = statefile::to_vec(&v, statefile::Format::Pretty).unwrap();
        let t = Instant::now();
        w.replace(&v, &bytes);
        let d = t.elapsed();
        if timed(i, n) {
            total += d;
            lat.push(d);
        }
        last = v;
    }
    let correct = w.read_back(dir).as_ref() == Some(&last);
    json!({"lat": Summary::of(lat, total).json(), "correct": correct, "peak_kb": peak_kb()})
}

fn child_reads(alt: &str, dir: &Path, n: usize) -> Value {
    let v = document(7_000, 1);
    let path = dir.join("doc.json");
    if alt.ends_with("journal)") {
        alts::journal_for("statefile (journal)", dir);
    }
    statefile::write_json(&path, &v).unwrap();
    // Old enough for the cache to trust its timestamps.
    let old = std::time::SystemTime::now() - Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let doc: statefile::Doc<Value> = statefile::Doc::open(&path).unwrap();
    let conn = (alt == "sqlite select + parse").then(|| {
        let c = alts::sqlite_open(dir);
        c.execute(
            "INSERT INTO docs (name, body) VALUES ('doc', ?1)",
            [v.to_string()],
        )
        .unwrap();
        c
    });
    let mut lat = Vec::with_capacity(n);
    let mut ok = true;
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let got_seq = match alt {
            "plain read + parse" => {
                let b = std::fs::read(&path).unwrap();
                serde_json::from_slice::<Value>(&b).unwrap()["seq"].as_u64()
            }
            "statefile (cached)" | "statefile (cached, journal)" => {
                doc.read_cached().unwrap().value["seq"].as_u64()
            }
            "statefile" | "statefile (journal)" => doc.read().unwrap()["seq"].as_u64(),
            _ => {
                let s: String = conn
                    .as_ref()
                    .unwrap()
                    .query_row("SELECT body FROM docs WHERE name = 'doc'", [], |r| r.get(0))
                    .unwrap();
                serde_json::from_str::<Value>(&s).unwrap()["seq"].as_u64()
            }
        };
        lat.push(t.elapsed());
        ok &= got_seq == Some(1);
    }
    json!({"lat": Summary::of(lat, start.elapsed()).json(), "correct": ok})
}

fn child_big(alt: &str, dir: &Path, mb: usize) -> Value {
    let before = rss_kb();
    // Sized so that the pretty-printed file is about `mb` MB.
    let v = document(mb * 1_000_000 * 4 / 5, 7);
    let value_kb = rss_kb().saturating_sub(before);
    let path = dir.join("big.json");
    // Building the value left its own high-water mark; start the peak afresh (Linux:
    // writing 5 to clear_refs resets VmHWM to the current RSS).
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before_write = rss_kb();
    let t = Instant::now();
    if alt == "statefile" {
        statefile::Doc::<Value>::open_with(&path, statefile::Options::new().backups(0))
            .unwrap()
            .write(&v)
            .unwrap();
    } else {
        let bytes = serde_json::to_vec(&v).unwrap();
        std::fs::write(&path, &bytes).unwrap();
    }
    let write_s = t.elapsed().as_secs_f64();
    let peak = peak_kb();
    let len = std::fs::metadata(&path).map_or(0, |m| m.len());
    // Check it reads back as the same value (outside the measured section).
    let correct = statefile::read_json::<Value>(&path).ok().as_ref() == Some(&v);
    json!({"write_s": write_s, "value_kb": value_kb, "peak_kb": peak, "before_write_kb": before_write,
           "peak_reset": peak_reset, "file_bytes": len, "correct": correct})
}

fn child_many(alt: &str, dir: &Path, n: usize) -> Value {
    let t = Instant::now();
    let correct;
    let verify_s;
    if alt.starts_with("statefile") {
        alts::journal_for(alt, dir);
        let store = statefile::Store::open(dir).unwrap();
        for i in 0..n {
            store
                .doc::<Value>(&format!("jobs/{}/{i}.json", i % 100))
                .unwrap()
                .write(&json!({"id": i, "status": "done"}))
                .unwrap();
        }
        let write_s = t.elapsed().as_secs_f64();
        // Journal mode: what the next checkpoint costs (every document written since
        // the last one made durable in its own file), as SQLite's wal_checkpoint below.
        let checkpoint_s = alts::JOURNAL_ALTS.contains(&alt).then(|| {
            let c = Instant::now();
            let report =
                statefile::journal::checkpoint(dir, &statefile::Options::default()).unwrap();
            assert_eq!(report.documents, n, "the checkpoint synced every document");
            c.elapsed().as_secs_f64()
        });
        let v = Instant::now();
        let report = statefile::verify(dir).unwrap();
        verify_s = v.elapsed().as_secs_f64();
        correct = report.is_healthy() && report.documents == n;
        return json!({"write_s": write_s, "checkpoint_s": checkpoint_s, "verify_s": verify_s, "correct": correct});
    }
    let c = alts::sqlite_open(dir);
    for i in 0..n {
        c.execute(
            "INSERT INTO docs (name, body) VALUES (?1, ?2)",
            [
                format!("jobs/{}/{i}.json", i % 100),
                json!({"id": i, "status": "done"}).to_string(),
            ],
        )
        .unwrap();
    }
    let write_s = t.elapsed().as_secs_f64();
    let cp = Instant::now();
    let (busy, _, _): (i64, i64, i64) = c
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(busy, 0, "the checkpoint ran to the end");
    let checkpoint_s = cp.elapsed().as_secs_f64();
    let v = Instant::now();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let count: i64 = c
        .query_row("SELECT count(*) FROM docs", [], |r| r.get(0))
        .unwrap();
    verify_s = v.elapsed().as_secs_f64();
    correct = ok == "ok" && count as usize == n;
    json!({"write_s": write_s, "checkpoint_s": checkpoint_s, "verify_s": verify_s, "correct": correct})
}
