//! The writers the motivating services' own stacks reach for: npm's `write-file-atomic`
//! and PyPI's `atomicwrites`, installed into a scratch directory when node and python3
//! are present, driven by the scripts in `scripts/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;

use crate::{Summary, human, scratch};

const JS: &str = include_str!("../scripts/bench.js");
const PY: &str = include_str!("../scripts/bench.py");

struct Env {
    node: Option<PathBuf>,
    python: Option<PathBuf>,
    notes: Vec<String>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let base = scratch("ext");
        let mut notes = Vec::new();
        let node_dir = base.join("node");
        std::fs::create_dir_all(&node_dir).unwrap();
        std::fs::write(node_dir.join("bench.js"), JS).unwrap();
        let node = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&node_dir)
            .arg("write-file-atomic@6")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            .then(|| node_dir.clone());
        if node.is_none() {
            notes.push(
                "write-file-atomic (npm): skipped, node/npm missing or the install failed".into(),
            );
        }
        let py_dir = base.join("py");
        std::fs::create_dir_all(&py_dir).unwrap();
        std::fs::write(py_dir.join("bench.py"), PY).unwrap();
        let python = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&py_dir)
            .arg("atomicwrites")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            .then(|| py_dir.clone());
        if python.is_none() {
            notes.push(
                "atomicwrites (PyPI): skipped, python3/pip missing or the install failed".into(),
            );
        }
        Env {
            node,
            python,
            notes,
        }
    })
}

fn script(which: &str, args: &[String]) -> Option<Command> {
    let e = env();
    let mut c = match which {
        "node" => {
            let dir = e.node.as_ref()?;
            let mut c = Command::new("node");
            c.arg(dir.join("bench.js"))
                .env("NODE_PATH", dir.join("node_modules"));
            c
        }
        _ => {
            let dir = e.python.as_ref()?;
            let mut c = Command::new("python3");
            c.arg(dir.join("bench.py")).env("PYTHONPATH", dir);
            c
        }
    };
    c.args(args).stderr(Stdio::inherit());
    Some(c)
}

const EXTS: [(&str, &str); 2] = [
    ("node", "write-file-atomic (npm)"),
    ("python", "atomicwrites (PyPI)"),
];

/// Rows for workload 1.
pub fn replace_rows(size: usize, n: usize, base: f64) -> Vec<String> {
    let mut rows = Vec::new();
    for (which, label) in EXTS {
        let dir = scratch("ext-replace");
        let file = dir.join("doc.json");
        let Some(mut c) = script(
            which,
            &[
                "replace".into(),
                file.display().to_string(),
                n.to_string(),
                size.to_string(),
            ],
        ) else {
            continue;
        };
        let out = c.output().ok();
        let v: Value = out
            .and_then(|o| serde_json::from_slice(o.stdout.trim_ascii()).ok())
            .unwrap_or(Value::Null);
        let s = Summary::from_json(&v["lat"]);
        rows.push(format!(
            "| {label} | {:.0} | {:.0} µs | {:.0} µs | {} | {} | {} | {} KiB |",
            s.per_sec(),
            s.p50_us,
            s.p99_us,
            crate::ratio(s.per_sec(), base),
            crate::durability(label),
            if v["correct"] == true { "yes" } else { "NO" },
            v["peak_kb"].as_u64().unwrap_or(0)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
    notes(&mut rows, size);
    rows
}

fn notes(rows: &mut Vec<String>, size: usize) {
    for n in &env().notes {
        rows.push(format!("\n({n}; {} table.)", human(size)));
    }
}

/// Rows for workload 2 (processes only: these libraries have no lock).
pub fn rmw_rows(procs: usize, n: usize, base: f64) -> Vec<String> {
    let mut rows = Vec::new();
    for (which, label) in EXTS {
        let dir = scratch("ext-rmw");
        let file = dir.join("doc.json");
        let t = Instant::now();
        let children: Vec<_> = (0..procs)
            .filter_map(|p| {
                script(
                    which,
                    &[
                        "rmw".into(),
                        file.display().to_string(),
                        n.to_string(),
                        p.to_string(),
                    ],
                )
            })
            .map(|mut c| c.stdout(Stdio::null()).spawn())
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        if children.is_empty() {
            continue;
        }
        for mut c in children {
            let _ = c.wait();
        }
        let rate = (procs * n) as f64 / t.elapsed().as_secs_f64();
        let present = items(&file);
        let lost = (procs * n).saturating_sub(present);
        rows.push(format!(
            "| {label} | {procs} x 1 thread(s) x {n} (processes) | {rate:.0} | {} | {} | no | - |",
            crate::ratio(rate, base),
            if lost == 0 {
                "0".into()
            } else {
                format!("**{lost} of {}**", procs * n)
            }
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
    rows
}

fn items(file: &Path) -> usize {
    std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| {
            v["items"]
                .as_array()
                .map(|a| a.iter().collect::<std::collections::HashSet<_>>().len())
        })
        .unwrap_or(0)
}
