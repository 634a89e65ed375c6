//! The Node rows: statefile's npm package (`crates/statefile-node`) against
//! `write-file-atomic` (sync and async), `steno`, and `write-file-atomic` +
//! `proper-lockfile`, driven by `scripts/node-bench.js`, each alternative in its own
//! `node` process. The "(journal)" rows put the document's directory in journal mode
//! first (`Store.enableJournal`): a durable write is then one flush of the journal
//! instead of two (the file, then its directory).
//!
//! The package is built from this checkout before the rows run (`npm ci` if its tools
//! are missing, then `npm run build`), so the rows measure the code at hand. Where Node cannot run, the workload says
//! so and is skipped, except under `CI=true`, where that fails the run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::{Cfg, Out, Summary, human, median_by, ratio, scratch};

const SCRIPT: &str = include_str!("../scripts/node-bench.js");

/// The alternatives of the durable-replace table, and whether each syncs the
/// directory after its rename (the difference between durable and probably durable).
const REPLACE: [(&str, &str); 9] = [
    ("statefile Doc.write", "yes: file and directory"),
    ("statefile Doc.writeSync", "yes: file and directory"),
    (
        "statefile Doc.write (journal)",
        "yes: one journal flush (rename replayed after a crash)",
    ),
    (
        "statefile Doc.writeSync (journal)",
        "yes: one journal flush (rename replayed after a crash)",
    ),
    ("statefile writeFileAtomic", "yes: file and directory"),
    ("statefile writeFileAtomicSync", "yes: file and directory"),
    ("write-file-atomic (async)", "file yes, rename not synced"),
    ("write-file-atomic (sync)", "file yes, rename not synced"),
    ("steno", "no: no fsync"),
];

const RMW: [&str; 4] = [
    "statefile Doc.update",
    "statefile Doc.update (journal)",
    "write-file-atomic + proper-lockfile",
    "write-file-atomic (no lock)",
];

struct NodeEnv {
    /// Where the script and its node_modules are.
    dir: PathBuf,
    /// The statefile package directory.
    package: PathBuf,
}

/// Fail under CI=true, otherwise explain the skip in the output.
fn unavailable(out: &mut Out, why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        eprintln!("statefile-bench: the Node workload cannot run under CI=true: {why}");
        std::process::exit(1);
    }
    out.line(format!("\n(Node rows skipped: {why}.)"));
}

fn run_ok(c: &mut Command) -> Result<(), String> {
    let shown = format!("{c:?}");
    let o = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

fn setup() -> Result<NodeEnv, String> {
    run_ok(Command::new("node").arg("--version")).map_err(|e| format!("node: {e}"))?;
    let package = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../statefile-node")
        .canonicalize()
        .map_err(|e| format!("cannot find crates/statefile-node: {e}"))?;
    // Always built: an addon left by an earlier checkout would otherwise be measured
    // instead of the code at hand (an unchanged checkout rebuilds quickly).
    if !package.join("node_modules").exists() {
        eprintln!("statefile-bench: installing the Node package's tools (npm ci)...");
        run_ok(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&package),
        )?;
    }
    eprintln!("statefile-bench: building the Node package (npm run build)...");
    run_ok(
        Command::new("npm")
            .args(["run", "build"])
            .current_dir(&package),
    )?;
    let dir = scratch("node");
    std::fs::write(dir.join("node-bench.js"), SCRIPT).map_err(|e| e.to_string())?;
    run_ok(
        Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(&dir)
            .args(["write-file-atomic@6", "steno@4", "proper-lockfile@4"]),
    )?;
    Ok(NodeEnv { dir, package })
}

fn script(env: &NodeEnv, args: &[String]) -> Result<Value, String> {
    let o = Command::new("node")
        .arg(env.dir.join("node-bench.js"))
        .args(args)
        .env("STATEFILE_NODE", &env.package)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run node: {e}"))?;
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.trim())
        .map_err(|_| format!("node-bench.js {args:?} failed ({}): {text}", o.status))
}

/// Durable replace from Node, and 50 concurrent read-modify-writes in one process.
pub fn node_workload(out: &mut Out, cfg: &Cfg) {
    out.line("\n## 7. From Node.js: the npm package against write-file-atomic, steno and proper-lockfile\n");
    let env = match setup() {
        Ok(e) => e,
        Err(why) => return unavailable(out, &why),
    };
    if let Err(why) = replace_tables(out, cfg, &env).and_then(|()| rmw_table(out, cfg, &env)) {
        unavailable(out, &why);
    }
    let _ = std::fs::remove_dir_all(&env.dir);
}

/// The Node rows of table 10: durable replaces from Node in journal mode against
/// write-file-atomic, in directories under `root` (the ext4 image with a journal), the
/// repetitions going round the alternatives in turn. Targets as in table 7's.
pub fn journaled_rows(out: &mut Out, cfg: &Cfg, root: &Path) {
    const ALTS: [&str; 4] = [
        "statefile Doc.writeSync (journal)",
        "write-file-atomic (sync)",
        "statefile Doc.write (journal)",
        "write-file-atomic (async)",
    ];
    let env = match setup() {
        Ok(e) => e,
        Err(why) => return unavailable(out, &why),
    };
    let sizes: &[(usize, usize)] = if cfg.quick {
        &[(1_000, 20)]
    } else {
        &[(1_000, 2000), (7_000, 2000)]
    };
    out.line("\n### From Node, on the same ext4 with a journal: durable replaces against write-file-atomic\n");
    out.line("The Node package's journal-mode rows of table 7 and the write-file-atomic rows they are measured against, here (one writer, serializing included; write-file-atomic syncs the file and not its directory, statefile makes the rename durable through the journal).\n");
    out.line("| document | alternative | writes/s | p50 | p99 | ratio to write-file-atomic (same API) | final document correct |");
    out.line("|---|---|---|---|---|---|---|");
    for &(size, n) in sizes {
        let results = match replace_runs(&env, cfg, &ALTS, size, n, &|| {
            crate::scratch_in(root, "node-replace")
        }) {
            Ok(r) => r,
            Err(why) => return unavailable(out, &why),
        };
        let rate = |i: usize| Summary::from_json(&results[i]["lat"]).per_sec();
        for (i, alt) in ALTS.iter().enumerate() {
            let s = Summary::from_json(&results[i]["lat"]);
            // Each statefile row against the write-file-atomic row after it, and back.
            let base = if i % 2 == 0 { rate(i + 1) } else { rate(i) };
            out.line(format!(
                "| {} | {alt} | {:.0} | {:.0} µs | {:.0} µs | {} | {} |",
                human(size),
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
        for i in [0, 2] {
            let x = rate(i) / rate(i + 1).max(f64::MIN_POSITIVE);
            let correct = results[i]["correct"] == true;
            out.target(
                format!(
                    "on an ext4 with a journal (table 10): Node durable replace of {}: {} ahead of {}, the rename durable too",
                    human(size),
                    ALTS[i],
                    ALTS[i + 1]
                ),
                format!("{x:.2}x{}", if correct { "" } else { ", **not correct**" }),
                x > 1.0 && correct,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&env.dir);
}

/// `cfg.reps` durable-replace runs of each of `alts` (`n` writes of a `size`-byte
/// document, each run in a new directory from `dir`), going round the alternatives in
/// turn: each alternative's median run.
fn replace_runs(
    env: &NodeEnv,
    cfg: &Cfg,
    alts: &[&str],
    size: usize,
    n: usize,
    dir: &dyn Fn() -> PathBuf,
) -> Result<Vec<Value>, String> {
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); alts.len()];
    for _ in 0..cfg.reps {
        for (i, alt) in alts.iter().enumerate() {
            let dir = dir();
            let r = script(
                env,
                &[
                    "replace".into(),
                    dir.join("doc.json").display().to_string(),
                    n.to_string(),
                    size.to_string(),
                    (*alt).into(),
                ],
            );
            let _ = std::fs::remove_dir_all(&dir);
            runs[i].push(r?);
        }
    }
    Ok(runs
        .into_iter()
        .map(|r| median_by(r, |v| Summary::from_json(&v["lat"]).per_sec()))
        .collect())
}

fn replace_tables(out: &mut Out, cfg: &Cfg, env: &NodeEnv) -> Result<(), String> {
    let sizes: &[(usize, usize)] = if cfg.quick {
        &[(1_000, 20)]
    } else {
        &[(1_000, 2000), (7_000, 2000)]
    };
    for &(size, n) in sizes {
        out.line(format!(
            "\n### Durable replace of a {} document from Node, one writer, {n} times (serializing included)\n",
            human(size)
        ));
        out.line("| alternative | writes/s | p50 | p99 | ratio to write-file-atomic (sync) | durable? | final document correct |");
        out.line("|---|---|---|---|---|---|---|");
        let alts: Vec<&str> = REPLACE.iter().map(|(alt, _)| *alt).collect();
        let results = replace_runs(env, cfg, &alts, size, n, &|| scratch("node-replace"))?;
        let rate = |alt: &str| {
            REPLACE
                .iter()
                .position(|(a, _)| *a == alt)
                .map_or(0.0, |i| Summary::from_json(&results[i]["lat"]).per_sec())
        };
        let base = rate("write-file-atomic (sync)");
        for ((alt, durable), r) in REPLACE.iter().zip(&results) {
            let s = Summary::from_json(&r["lat"]);
            out.line(format!(
                "| {alt} | {:.0} | {:.0} µs | {:.0} µs | {} | {durable} | {} |",
                s.per_sec(),
                s.p50_us,
                s.p99_us,
                ratio(s.per_sec(), base),
                if r["correct"] == true { "yes" } else { "NO" },
            ));
        }
        let wfa_best = rate("write-file-atomic (sync)").max(rate("write-file-atomic (async)"));
        for (ours, theirs) in [
            (
                "statefile Doc.writeSync (journal)",
                "write-file-atomic (sync)",
            ),
            ("statefile Doc.write (journal)", "write-file-atomic (async)"),
        ] {
            let x = rate(ours) / rate(theirs).max(f64::MIN_POSITIVE);
            out.target(
                format!(
                    "Node durable replace of {}: {ours} ahead of {theirs}, the rename durable too",
                    human(size)
                ),
                format!("{x:.2}x"),
                x > 1.0,
            );
        }
        let plain = |ours: &str, theirs: &str| rate(ours) / rate(theirs).max(f64::MIN_POSITIVE);
        out.line(format!(
            "\nWithout journal mode (two flushes per write: the file, then the directory, which \
             write-file-atomic never syncs) `Doc.writeSync` runs at {:.2}x write-file-atomic \
             (sync) and `Doc.write` at {:.2}x write-file-atomic (async).",
            plain("statefile Doc.writeSync", "write-file-atomic (sync)"),
            plain("statefile Doc.write", "write-file-atomic (async)"),
        ));
        let x = rate("statefile writeFileAtomicSync") / wfa_best.max(f64::MIN_POSITIVE);
        out.line(format!(
            "\nThe drop-in `writeFileAtomicSync` runs at {x:.2}x the faster write-file-atomic variant, with one more fsync (the directory's) per write."
        ));
    }
    Ok(())
}

fn rmw_table(out: &mut Out, cfg: &Cfg, env: &NodeEnv) -> Result<(), String> {
    let n = 50;
    out.line(format!(
        "\n### {n} concurrent async read-modify-writes in one Node process, each appending to one array\n"
    ));
    out.line("| alternative | updates/s | lost updates | locked |");
    out.line("|---|---|---|---|");
    // (alternative, lost, updates/s) of statefile's rows.
    let mut ours = Vec::new();
    for alt in RMW {
        let mut runs = Vec::new();
        for _ in 0..cfg.reps {
            let dir = scratch("node-rmw");
            let r = script(
                env,
                &[
                    "rmw".into(),
                    dir.join("doc.json").display().to_string(),
                    n.to_string(),
                    alt.into(),
                ],
            );
            let _ = std::fs::remove_dir_all(&dir);
            runs.push(r?);
        }
        let r = median_by(runs, |v| v["total"].as_f64().unwrap_or(f64::MAX));
        let rate = n as f64 / r["total"].as_f64().unwrap_or(f64::MAX);
        let lost = r["lost"].as_u64().unwrap_or(u64::MAX);
        if alt.starts_with("statefile") {
            ours.push((alt, lost, rate));
        }
        out.line(format!(
            "| {alt} | {rate:.0} | {} | {} |",
            if lost == 0 {
                "0".to_string()
            } else {
                format!("**{lost} of {n}**")
            },
            if alt.contains("no lock") { "no" } else { "yes" }
        ));
    }
    out.target(
        format!("{n} concurrent Node read-modify-writes: 0 lost"),
        ours.iter()
            .map(|(alt, lost, rate)| format!("{alt}: {lost} lost, {rate:.0} updates/s"))
            .collect::<Vec<_>>()
            .join("; "),
        ours.iter().all(|(_, lost, _)| *lost == 0),
    );
    out.line("\nproper-lockfile takes its lock by `mkdir` and waits by polling (1-10 ms here); statefile's updates queue in the library's in-process FIFO and its `flock`.");
    Ok(())
}
