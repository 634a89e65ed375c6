//! Workload 8: from Python. The `statefile` package (crates/statefile-py) against
//! `atomicwrites` and `filelock` from PyPI, plain `json.dump` and the standard
//! library's `sqlite3`, driven by `scripts/bench_py.py` in the package's virtualenv
//! (`crates/statefile-py/scripts/venv.sh`, which `./test python` also uses).
//!
//! Under `CI=true` a Python that cannot run these rows fails the benchmark (the smoke
//! run in CI proves they work); elsewhere the rows are skipped with the reason.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::{Cfg, Out, Summary, human, ratio, scratch};

const SCRIPT: &str = include_str!("../scripts/bench_py.py");

const REPLACE: [(&str, &str); 7] = [
    ("statefile", "yes"),
    ("statefile (1 backup, the default)", "yes"),
    ("statefile (journal)", "yes"),
    ("statefile.atomicwrites (drop-in)", "yes"),
    ("atomicwrites (PyPI)", "yes"),
    (
        "json.dump (no fsync)",
        "no: no fsync, and a crash mid-write tears the file",
    ),
    ("sqlite3 (WAL, synchronous=FULL)", "yes"),
];

const RMW: [&str; 4] = [
    "statefile",
    "statefile (journal)",
    "filelock + atomicwrites",
    "sqlite3 (WAL, synchronous=FULL)",
];

struct Py {
    python: PathBuf,
    script: PathBuf,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The virtualenv: `STATEFILE_PY_VENV`, or `py-venv` in the target directory (where
/// `./test python` makes it).
fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os("STATEFILE_PY_VENV") {
        return PathBuf::from(v);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let target = if target.is_relative() {
        workspace().join(target)
    } else {
        target
    };
    target.join("py-venv")
}

fn check(python: &Path, script: &Path) -> Result<(), String> {
    let out = Command::new(python)
        .arg(script)
        .arg("check")
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} cannot import statefile, atomicwrites and filelock: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ))
    }
}

/// The Python to run, with the package built from this checkout and installed into the
/// virtualenv first (made if missing). Always rebuilt: a virtualenv left by an earlier
/// checkout would otherwise be measured instead of the code at hand (cargo makes the
/// rebuild of an unchanged checkout quick).
fn env() -> &'static Result<Py, String> {
    static ENV: OnceLock<Result<Py, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = scratch("py");
        let script = dir.join("bench_py.py");
        std::fs::write(&script, SCRIPT).map_err(|e| e.to_string())?;
        let venv = venv();
        let python = venv.join("bin/python");
        eprintln!(
            "building the Python package into {} (crates/statefile-py/scripts/venv.sh)...",
            venv.display()
        );
        let wheels = venv.with_file_name("wheels");
        let built = Command::new("bash")
            .arg(workspace().join("crates/statefile-py/scripts/venv.sh"))
            .arg(&venv)
            .arg(&wheels)
            .status()
            .map_err(|e| format!("cannot run venv.sh: {e}"))?;
        if !built.success() {
            return Err(format!(
                "crates/statefile-py/scripts/venv.sh failed ({built})"
            ));
        }
        check(&python, &script)?;
        Ok(Py { python, script })
    })
}

fn run(py: &Py, args: &[String]) -> Value {
    let out = Command::new(&py.python)
        .arg(&py.script)
        .args(args)
        .stderr(Stdio::inherit())
        .output();
    out.ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            serde_json::from_str(text.lines().last()?).ok()
        })
        .unwrap_or(Value::Null)
}

pub fn python_workload(out: &mut Out, cfg: &Cfg) {
    out.line(
        "\n## 8. From Python: the `statefile` package against what a Python service would use\n",
    );
    let py = match env() {
        Ok(py) => py,
        Err(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                eprintln!("statefile-bench: the Python rows cannot run under CI=true: {why}");
                std::process::exit(1);
            }
            out.line(format!("(Skipped: {why}.)"));
            return;
        }
    };
    out.line("Every timed operation includes serializing the dict, as a service saving its state pays for it. `statefile` is `Doc(path, backups=0).write(obj)`; the default keeps one backup (a hard link); `statefile (journal)` is the first in a store in journal mode (`statefile.enable_journal`: one flush of the journal per write, then a rename). `statefile.atomicwrites` is the drop-in module with `atomic_write(path, overwrite=True)` and `json.dump`; `atomicwrites (PyPI)` the original, likewise (it fsyncs the file and its directory). `sqlite3` is the standard library's, one row per document, `INSERT OR REPLACE` in autocommit.\n");
    let sizes: Vec<(usize, usize)> = if cfg.quick {
        vec![(7_000, 20)]
    } else {
        vec![(1_000, 500), (7_000, 500)]
    };
    for (size, n) in sizes {
        replace_table(out, cfg, py, size, n);
    }
    rmw_table(out, cfg, py);
}

fn replace_table(out: &mut Out, cfg: &Cfg, py: &Py, size: usize, n: usize) {
    out.line(format!(
        "\n### 8a. Durable replace of a {} document from Python, {n} times\n",
        human(size)
    ));
    out.line("| alternative | writes/s | p50 | p99 | ratio to statefile | durable? | final document correct |");
    out.line("|---|---|---|---|---|---|---|");
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); REPLACE.len()];
    // Repetitions go round all alternatives in turn (a slow spell of the disk hits all).
    for _ in 0..cfg.reps.min(3) {
        for (i, (alt, _)) in REPLACE.iter().enumerate() {
            let dir = scratch("py-replace");
            runs[i].push(run(
                py,
                &[
                    "replace".into(),
                    (*alt).into(),
                    dir.display().to_string(),
                    size.to_string(),
                    n.to_string(),
                ],
            ));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let results: Vec<Value> = runs
        .into_iter()
        .map(|r| crate::median_by(r, |v| Summary::from_json(&v["lat"]).per_sec()))
        .collect();
    let rate = |i: usize| Summary::from_json(&results[i]["lat"]).per_sec();
    let base = rate(0);
    for (i, (alt, durable)) in REPLACE.iter().enumerate() {
        let s = Summary::from_json(&results[i]["lat"]);
        out.line(format!(
            "| {alt} | {:.0} | {:.0} µs | {:.0} µs | {} | {durable} | {} |",
            s.per_sec(),
            s.p50_us,
            s.p99_us,
            ratio(s.per_sec(), base),
            if results[i]["correct"] == true {
                "yes"
            } else {
                "NO"
            },
        ));
    }
    let aw = rate(
        REPLACE
            .iter()
            .position(|(alt, _)| *alt == "atomicwrites (PyPI)")
            .expect("a row for atomicwrites"),
    );
    out.target(
        format!(
            "Python: durable replace of a {} document ahead of atomicwrites (PyPI)",
            human(size)
        ),
        format!("{} of atomicwrites", ratio(base, aw)),
        base > aw && results[0]["correct"] == true,
    );
}

fn rmw_table(out: &mut Out, cfg: &Cfg, py: &Py) {
    let (threads, per_thread, procs, per_proc) = if cfg.quick {
        (4, 5, 2, 5)
    } else {
        (16, 100, 4, 200)
    };
    out.line(format!(
        "\n### 8b. Concurrent read-modify-write from Python: append to one array\n\n{threads} threads x {per_thread} appends in one process, and {procs} processes x {per_proc}. `statefile` is `doc.update(lambda v: v[\"items\"].append(x))` (`Doc(path, backups=0)`), `statefile (journal)` the same in a store in journal mode; `filelock + atomicwrites` holds a `FileLock` while it reads, appends and `atomic_write`s; `sqlite3` runs `BEGIN IMMEDIATE`, select, update, `COMMIT` (one connection per thread).\n"
    ));
    out.line("| alternative | setup | appends/s | ratio to statefile | lost updates |");
    out.line("|---|---|---|---|---|");
    for (label, np, nt, n) in [
        ("threads", 1, threads, per_thread),
        ("processes", procs, 1, per_proc),
    ] {
        let mut base = 0.0;
        let mut statefile_lost = 0;
        for alt in RMW {
            let runs: Vec<(f64, usize)> = (0..cfg.reps.min(3))
                .map(|_| rmw_once(py, alt, np, nt, n))
                .collect();
            let (rate, lost) = crate::median_by(runs, |r| r.0);
            if alt == "statefile" {
                base = rate;
                statefile_lost = lost;
            }
            out.line(format!(
                "| {alt} | {np} x {nt} thread(s) x {n} ({label}) | {rate:.0} | {} | {} |",
                ratio(rate, base),
                if lost == 0 {
                    "0".to_string()
                } else {
                    format!("**{lost} of {}**", np * nt * n)
                }
            ));
            if alt.starts_with("sqlite3") && label == "threads" {
                out.target(
                    format!("Python: {nt}-thread read-modify-write >= 3x sqlite3, 0 lost"),
                    format!(
                        "{} sqlite3, {statefile_lost} lost",
                        ratio(base, rate).replace('x', "x of")
                    ),
                    base >= 3.0 * rate && statefile_lost == 0,
                );
            }
        }
    }
}

/// One round: `np` Python processes with `nt` threads each appending `n` items.
fn rmw_once(py: &Py, alt: &str, np: usize, nt: usize, n: usize) -> (f64, usize) {
    let dir = scratch("py-rmw");
    run(py, &["setup".into(), alt.into(), dir.display().to_string()]);
    let children: Vec<_> = (0..np)
        .filter_map(|p| {
            Command::new(&py.python)
                .arg(&py.script)
                .args([
                    "rmw",
                    alt,
                    &dir.display().to_string(),
                    &format!("p{p}"),
                    &nt.to_string(),
                    &n.to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .ok()
        })
        .collect();
    // From the first process's first append to the last one's last: interpreter
    // start-up and imports are not the alternative's cost.
    let (mut start, mut end) = (f64::MAX, 0.0_f64);
    for c in children {
        let Ok(o) = c.wait_with_output() else {
            continue;
        };
        let v: Value = String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null);
        start = start.min(v["start"].as_f64().unwrap_or(f64::MAX));
        end = end.max(v["end"].as_f64().unwrap_or(0.0));
    }
    // A round in which no process reported counts as no throughput at all.
    let elapsed = if end > start {
        end - start
    } else {
        f64::INFINITY
    };
    let counted = run(py, &["count".into(), alt.into(), dir.display().to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
    let expected = np * nt * n;
    let distinct = counted["distinct"].as_u64().unwrap_or(0) as usize;
    (expected as f64 / elapsed, expected.saturating_sub(distinct))
}
