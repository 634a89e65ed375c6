//! Table 10: journal mode against SQLite again, on an ext4 that has a journal of its own.
//!
//! The machine's temp dir may be on a file system unlike the ones services run on: this
//! workplace's root file system is ext4 made without a journal (`/sys/fs/ext4/<dev>/
//! journal_task` reads `<none>`). There every fsync writes the inode's block
//! synchronously, and every file creation scans the inode table for inodes deleted in
//! the last seconds or minutes (ext4's `recently_deleted`, which only a journal-less
//! ext4 does). statefile creates a file for every write (the temp file it renames) and
//! SQLite none, so such a file system weighs on one side only. This workload repeats
//! the SQLite comparisons of tables 1, 2, 5 and 9 on a fresh ext4 with mkfs.ext4's
//! defaults (a journal, data=ordered), in an image file in the temp dir, attached with a
//! loop device doing direct I/O (each write and flush of the image reaches the disk as
//! the host file system's own), in the same run as everything else. The tables above
//! stay as measured in the temp dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::{Cfg, Out, Summary, child, median_by, ratio, rmw_in, scratch, scratch_in};

/// What file system `path` is on, in words: "ext4 (no journal)", "ext4 (with a
/// journal)", "xfs", or "unknown".
pub fn describe(path: &Path) -> String {
    let Some((fstype, source)) = mount_of(path) else {
        return "unknown".into();
    };
    match (fstype.as_str(), ext4_journal(&source)) {
        ("ext4", Some(true)) => "ext4 (with a journal)".into(),
        ("ext4", Some(false)) => "ext4 (no journal)".into(),
        _ => fstype,
    }
}

/// The file system type and source device of the mount holding `path` (findmnt).
fn mount_of(path: &Path) -> Option<(String, String)> {
    let o = Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE,SOURCE", "-T"])
        .arg(path)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(o.stdout).ok()?;
    let mut words = text.split_whitespace();
    Some((words.next()?.to_string(), words.next()?.to_string()))
}

/// Whether the ext4 on `source` (a device path) has a journal: its journal thread, as
/// `/sys/fs/ext4/<device>/journal_task` shows it (`<none>` without a journal).
fn ext4_journal(source: &str) -> Option<bool> {
    let dev = std::fs::canonicalize(source).ok()?;
    let name = dev.file_name()?.to_str()?.to_string();
    let task = std::fs::read_to_string(format!("/sys/fs/ext4/{name}/journal_task")).ok()?;
    Some(task.trim() != "<none>")
}

/// An ext4 image attached and mounted; detached and removed when dropped.
struct Image {
    base: PathBuf,
    device: Option<String>,
    mounted: bool,
}

impl Image {
    fn mnt(&self) -> PathBuf {
        self.base.join("mnt")
    }

    /// Make a 2 GiB ext4 with mkfs.ext4's defaults (inode tables and journal written
    /// now, not by a background thread during the measurements), attach it with direct
    /// I/O and mount it.
    fn make() -> Result<Image, String> {
        let mut img = Image {
            base: scratch("ext4-image"),
            device: None,
            mounted: false,
        };
        let file = img.base.join("ext4.img");
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(2 << 30))
            .map_err(|e| format!("cannot make {}: {e}", file.display()))?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&file))?;
        let dev = run(Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on"])
            .arg(&file))?;
        img.device = Some(dev.trim().to_string());
        std::fs::create_dir(img.mnt()).map_err(|e| e.to_string())?;
        run(Command::new("mount").arg(dev.trim()).arg(img.mnt()))?;
        img.mounted = true;
        let what = describe(&img.mnt());
        if what != "ext4 (with a journal)" {
            return Err(format!(
                "the image mounted as {what}, not ext4 with a journal"
            ));
        }
        Ok(img)
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if self.mounted {
            let _ = run(Command::new("umount").arg(self.mnt()));
        }
        if let Some(dev) = &self.device {
            let _ = run(Command::new("losetup").args(["--detach", dev]));
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Run `c`; its standard output, or why it failed.
fn run(c: &mut Command) -> Result<String, String> {
    let shown = format!("{c:?}");
    let o = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// One alternative's figure in one row: a rate (higher is better) or a time per
/// document (lower is better), and whether what it wrote checked out.
#[derive(Clone, Copy)]
struct Fig {
    value: f64,
    ok: bool,
}

pub fn journaled_workload(out: &mut Out, cfg: &Cfg) {
    out.line("\n## 10. Journal mode against SQLite on an ext4 with a journal\n");
    let here = describe(&std::env::temp_dir());
    if here == "ext4 (with a journal)" {
        out.line(format!(
            "The temp dir is on {here} already: tables 1, 2, 5 and 9 are these figures."
        ));
        return;
    }
    let img = match Image::make() {
        Ok(img) => img,
        Err(why) => {
            out.line(format!(
                "(Not measured: an ext4 image could not be made and mounted here: {why}. It needs root, mkfs.ext4 and a loop device.)"
            ));
            return;
        }
    };
    let mnt = img.mnt();
    out.line(format!(
        "The temp dir above is on {here}. Services' file systems have a journal (mkfs.ext4 makes one by default), and a journal-less ext4 weighs on one side: every file creation there scans the inode table for recently deleted inodes (ext4's `recently_deleted`, which only a journal-less ext4 does), and statefile creates a file (the temp file it renames) for every write where SQLite creates none. So the SQLite comparisons of tables 1, 2, 5 and 9 run again here, in the same run, on a fresh ext4 made with mkfs.ext4's defaults (a journal, data=ordered) in a 2 GiB image file in the temp dir, attached by a loop device with direct I/O, so that every write and flush of it reaches the same disk. The tables above and their targets stay as measured in the temp dir.\n"
    ));
    let (n_replace, n_tx, n_many, (procs, per_proc)) = if cfg.quick {
        (30, 30, 200, (2, 20))
    } else {
        (2000, 2000, 10_000, (4, 500))
    };
    out.line("| workload | statefile (journal) | sqlite | journal mode against SQLite | statefile (default mode) | statefile (journal, swap) | swap against SQLite | journal floor against SQLite | correct, 0 lost |");
    out.line("|---|---|---|---|---|---|---|---|---|");
    // `journal floor` (table 1's note) has figures for the single-document replaces only.
    let alts = [
        "statefile (journal)",
        "sqlite",
        "statefile",
        "statefile (journal, swap)",
        "journal floor",
    ];
    let floor = |alt: &str| alt == "journal floor";
    // Each row: its label, whether lower is better, and the figure of one run.
    let mut rows: Vec<(String, bool, Vec<Vec<Fig>>)> = Vec::new();
    type Once<'a> = Box<dyn Fn(&str) -> Option<Fig> + 'a>;
    let workloads: Vec<(String, bool, Once<'_>)> = vec![
        (
            format!("durable replace of a 1 KB document, {n_replace} times (writes/s)"),
            false,
            Box::new(|alt: &str| replace(&mnt, alt, 1_000, n_replace)),
        ),
        (
            format!("durable replace of a 7 KB document, {n_replace} times (writes/s)"),
            false,
            Box::new(|alt: &str| replace(&mnt, alt, 7_000, n_replace)),
        ),
        (
            format!("read-modify-write, {procs} processes x {per_proc} appends (appends/s)"),
            false,
            Box::new(|alt: &str| {
                if floor(alt) {
                    return None;
                }
                let r = rmw_in(&scratch_in(&mnt, "rmw"), alt, procs, 1, per_proc);
                Some(Fig {
                    value: r.rate,
                    ok: r.lost == 0,
                })
            }),
        ),
        (
            format!("{n_many} small documents written into one store (time per document)"),
            true,
            Box::new(|alt: &str| (!floor(alt)).then(|| many(&mnt, alt, n_many)).flatten()),
        ),
        (
            format!("two-document transactions, {n_tx} times (transactions/s)"),
            false,
            Box::new(|alt: &str| {
                // The transaction workload has no default-mode row: a transaction needs
                // journal mode.
                if alt == "statefile" || floor(alt) {
                    return None;
                }
                let dir = scratch_in(&mnt, "tx");
                let r = child("tx", &json!({"alt": alt, "dir": dir, "n": n_tx}));
                let _ = std::fs::remove_dir_all(&dir);
                Some(Fig {
                    value: Summary::from_json(&r["lat"]).per_sec(),
                    ok: r["correct"] == true,
                })
            }),
        ),
    ];
    for (label, lower, once) in &workloads {
        // Repetitions go round the alternatives in turn, as in the tables above.
        let mut runs: Vec<Vec<Fig>> = vec![Vec::new(); alts.len()];
        for _ in 0..cfg.reps {
            for (i, alt) in alts.iter().enumerate() {
                if let Some(f) = once(alt) {
                    runs[i].push(f);
                }
            }
        }
        rows.push((label.clone(), *lower, runs));
    }
    drop(workloads);
    for (label, lower, runs) in rows {
        let med: Vec<Option<Fig>> = runs
            .into_iter()
            .map(|r| (!r.is_empty()).then(|| median_by(r, |f| f.value)))
            .collect();
        let show = |f: &Option<Fig>| match f {
            None => "-".to_string(),
            Some(f) if lower => format!("{:.0} µs", f.value),
            Some(f) => format!("{:.0}", f.value),
        };
        let Some(q) = med[1] else {
            continue;
        };
        // As a speed: SQLite's time over statefile's where the figure is a time.
        let against = |j: &Fig| -> (f64, String) {
            if lower {
                (
                    q.value / j.value.max(1e-9),
                    format!("{:.2}x of SQLite's time", j.value / q.value.max(1e-9)),
                )
            } else {
                (j.value / q.value.max(1e-9), ratio(j.value, q.value))
            }
        };
        let ok = med.iter().flatten().all(|f| f.ok);
        let shown = |f: &Option<Fig>| f.as_ref().map_or("-".to_string(), |j| against(j).1);
        out.line(format!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} |",
            show(&med[0]),
            show(&med[1]),
            shown(&med[0]),
            show(&med[2]),
            show(&med[3]),
            shown(&med[3]),
            shown(&med[4]),
            if ok { "yes" } else { "**NO**" }
        ));
        for (how, fig) in [("", med[0]), (" (swap)", med[3])] {
            let Some(j) = fig else {
                continue;
            };
            let (speed, said) = against(&j);
            let (goal, met) = if lower {
                (
                    "time per document <= 1.5x SQLite's",
                    j.value <= 1.5 * q.value,
                )
            } else {
                (">= 1.0x SQLite", speed >= 1.0)
            };
            out.target(
                format!("on an ext4 with a journal (table 10): journal mode{how}, {label}: {goal}"),
                format!(
                    "{said}{}{}",
                    med[4].as_ref().map_or(String::new(), |f| format!(
                        "; the protocol's calls alone (`journal floor`): {}",
                        against(f).1
                    )),
                    if j.ok {
                        ""
                    } else {
                        ", **not correct or lost**"
                    }
                ),
                met && j.ok,
            );
        }
    }
    out.line("\nFigures are medians of the repetitions; the ratio is statefile (journal) against SQLite (for the documents row, statefile's time per document over SQLite's). The last column says whether every alternative's final state checked out (the documents hold what was written; no append lost).");
    crate::node::journaled_rows(out, cfg, &mnt);
    drop(img);
}

/// One durable-replace run of `alt` in a new directory under `root`.
fn replace(root: &Path, alt: &str, size: usize, n: usize) -> Option<Fig> {
    let dir = scratch_in(root, "replace");
    let r = child(
        "replace",
        &json!({"alt": alt, "size": size, "n": n, "dir": dir}),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Some(Fig {
        value: Summary::from_json(&r["lat"]).per_sec(),
        ok: r["correct"] == true,
    })
}

/// One many-documents run of `alt`: the write time per document, in microseconds.
fn many(root: &Path, alt: &str, n: usize) -> Option<Fig> {
    let dir = scratch_in(root, "many");
    let r: Value = child("many", &json!({"alt": alt, "dir": dir, "n": n}));
    let _ = std::fs::remove_dir_all(&dir);
    Some(Fig {
        value: r["write_s"].as_f64().unwrap_or(f64::INFINITY) / n as f64 * 1e6,
        ok: r["correct"] == true,
    })
}
