//! The real binary under `strace -f`: the temp file in the target's directory is
//! fsynced, then renamed over the target, then the directory is fsynced.

mod common;

use std::process::{Command, Stdio};

use common::{BIN, Sandbox};

/// The quoted path arguments of a strace line, in order.
fn quoted(line: &str) -> Vec<String> {
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// The `= N` result of a strace line.
fn result(line: &str) -> Option<i64> {
    line.rsplit("= ")
        .next()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn call(line: &str) -> &str {
    // Lines may start with a pid: "1234 fsync(3) = 0".
    let l = line.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
    l.split('(').next().unwrap_or("")
}

fn arg_fd(line: &str) -> Option<i64> {
    line.split_once('(')?
        .1
        .split([',', ')'])
        .next()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn put_syncs_the_temp_then_renames_then_syncs_the_directory() {
    if Command::new("strace").arg("-V").output().is_err() {
        println!("skipping: strace not installed (CI installs it)");
        return;
    }
    let s = Sandbox::new();
    s.run_in(&["put", "doc.json"], b"{\"v\": 0}").ok();
    let log = s.path("strace.log");
    let input = s.path("in.json");
    std::fs::write(&input, b"{\"v\": 1}").unwrap();
    let status = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=open,openat,fsync,fdatasync,rename,renameat,renameat2,close",
            "-o",
        ])
        .arg(&log)
        .arg(BIN)
        .args(["put", "doc.json"])
        .current_dir(s.dir.path())
        .stdin(Stdio::from(std::fs::File::open(&input).unwrap()))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let dir = s.dir.path().canonicalize().unwrap().display().to_string();
    let target = format!("{dir}/doc.json");

    // 1. The temp file, created exclusively in the target's directory.
    let (open_at, temp, temp_fd) = lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| {
            let path = quoted(l).into_iter().next()?;
            (call(l).starts_with("open") && path.contains("/.doc.json.sf-") && l.contains("O_EXCL"))
                .then(|| (i, path, result(l)))
        })
        .unwrap_or_else(|| panic!("no exclusive temp open in:\n{text}"));
    let temp_fd = temp_fd.expect("temp fd");
    assert_eq!(
        std::path::Path::new(&temp)
            .parent()
            .unwrap()
            .display()
            .to_string(),
        dir,
        "the temp file lives beside the target"
    );
    assert!(temp.ends_with(".tmp"));
    // 2. fsync of that fd before it is closed.
    let sync_at = lines[open_at..]
        .iter()
        .position(|l| {
            matches!(call(l), "fsync" | "fdatasync")
                && arg_fd(l) == Some(temp_fd)
                && result(l) == Some(0)
        })
        .map(|p| p + open_at)
        .unwrap_or_else(|| panic!("the temp file was never fsynced:\n{text}"));
    let close_at = lines[open_at..]
        .iter()
        .position(|l| call(l) == "close" && arg_fd(l) == Some(temp_fd))
        .map_or(usize::MAX, |p| p + open_at);
    assert!(sync_at < close_at, "fsync after close?\n{text}");
    // 3. The rename of the temp over the target.
    let rename_at = lines
        .iter()
        .position(|l| call(l).starts_with("rename") && quoted(l) == [temp.clone(), target.clone()])
        .unwrap_or_else(|| panic!("no rename of {temp} over {target}:\n{text}"));
    assert!(
        sync_at < rename_at,
        "renamed before the data was synced:\n{text}"
    );
    // 4. The directory opened and fsynced after the rename.
    let dir_sync = lines[rename_at..].iter().enumerate().find_map(|(i, l)| {
        let fd = (call(l).starts_with("open") && quoted(l).first() == Some(&dir))
            .then(|| result(l))??;
        lines[rename_at + i..]
            .iter()
            .position(|m| call(m) == "fsync" && arg_fd(m) == Some(fd) && result(m) == Some(0))
    });
    assert!(
        dir_sync.is_some(),
        "the directory was not fsynced after the rename:\n{text}"
    );
    assert_eq!(s.json("doc.json"), serde_json::json!({"v": 1}));
}
