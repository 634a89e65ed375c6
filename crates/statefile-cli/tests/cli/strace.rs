//! The real binary under `strace -f`: the target's directory is opened once (refusing
//! symlinks), the temp file is created in it through that handle, fsynced, renamed over
//! the target through the same handle, and then the handle itself is fsynced.

use std::process::{Command, Stdio};

use crate::common::{BIN, Sandbox};

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

/// Whether strace is here; if not, the test says so and returns (failing under
/// `CI=true`, where `.ci/run` installs it).
fn have_strace() -> bool {
    let found = Command::new("strace").arg("-V").output().is_ok();
    if !found {
        crate::skip::skip("strace not installed (CI installs it)");
    }
    found
}

/// The log of `statefile <args>` run in `s`'s directory with `input` on stdin, under
/// `strace -f -qq -e trace=<calls>`; the command must succeed.
fn traced(s: &Sandbox, calls: &str, args: &[&str], input: &[u8]) -> String {
    let log = s.path("strace.log");
    let stdin = s.path("in.json");
    std::fs::write(&stdin, input).unwrap();
    let status = Command::new("strace")
        .args(["-f", "-qq", "-e", &format!("trace={calls}"), "-o"])
        .arg(&log)
        .arg(BIN)
        .args(args)
        .current_dir(s.dir.path())
        .stdin(Stdio::from(std::fs::File::open(&stdin).unwrap()))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "statefile {args:?} failed under strace");
    std::fs::read_to_string(&log).unwrap()
}

/// The lines of a strace log, and where things happen in it.
struct Trace<'a> {
    text: &'a str,
    lines: Vec<&'a str>,
}

impl<'a> Trace<'a> {
    fn new(text: &'a str) -> Self {
        Trace {
            text,
            lines: text.lines().collect(),
        }
    }

    /// The index of the first line that `f` accepts; panics naming `what` if none.
    fn at(&self, what: &str, f: impl Fn(&str) -> bool) -> usize {
        self.lines
            .iter()
            .position(|l| f(l))
            .unwrap_or_else(|| panic!("no {what}:\n{}", self.text))
    }

    /// The descriptor the journal was opened read-write as.
    fn journal_fd(&self) -> i64 {
        let open = self.at("read-write open of the journal", |l| {
            call(l).starts_with("open") && l.contains("\"journal\"") && l.contains("O_RDWR")
        });
        result(self.lines[open]).expect("journal fd")
    }

    /// The journal's append and its flush, as line indexes.
    fn append_and_flush(&self) -> (usize, usize) {
        let fd = self.journal_fd();
        let append = self.at("append to the journal", |l| {
            call(l) == "pwrite64" && arg_fd(l) == Some(fd) && l.contains("SFJR")
        });
        let flush = self.at("fdatasync of the journal", |l| {
            call(l) == "fdatasync" && arg_fd(l) == Some(fd) && result(l) == Some(0)
        });
        (append, flush)
    }

    /// Where the descriptor opened at line `open` is closed: on the releasing thread,
    /// or at the process's exit if that comes first (no line: `usize::MAX`).
    fn closed_after(&self, open: usize) -> usize {
        let fd = result(self.lines[open]).expect("held fd");
        self.lines[open..]
            .iter()
            .position(|l| call(l) == "close" && arg_fd(l) == Some(fd))
            .map_or(usize::MAX, |p| p + open)
    }

    fn any(&self, f: impl Fn(&str) -> bool) -> bool {
        self.lines.iter().any(|l| f(l))
    }
}

#[test]
fn put_syncs_the_temp_then_renames_then_syncs_the_directory() {
    if !have_strace() {
        return;
    }
    let s = Sandbox::new();
    s.run_in(&["put", "doc.json"], b"{\"v\": 0}").ok();
    let text = traced(
        &s,
        "open,openat,openat2,fsync,fdatasync,rename,renameat,renameat2,close",
        &["put", "doc.json"],
        b"{\"v\": 1}",
    );
    let lines: Vec<&str> = text.lines().collect();
    let dir = s.dir.path().canonicalize().unwrap().display().to_string();

    // 0. The target's directory, opened once, with symlinks refused where the kernel
    //    has openat2.
    let (dir_at, dir_fd) = lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| {
            (call(l).starts_with("open")
                && quoted(l).first() == Some(&dir)
                && l.contains("O_DIRECTORY"))
            .then(|| (i, result(l)))
        })
        .unwrap_or_else(|| panic!("the directory was never opened as a handle:\n{text}"));
    let dir_fd = dir_fd.expect("directory fd");
    if lines[dir_at].contains("openat2") {
        assert!(
            lines[dir_at].contains("RESOLVE_NO_SYMLINKS"),
            "{}",
            lines[dir_at]
        );
    }
    // 1. The temp file, created exclusively through that handle (so: beside the target).
    let (open_at, temp, temp_fd) = lines[dir_at..]
        .iter()
        .enumerate()
        .find_map(|(i, l)| {
            let name = quoted(l).into_iter().next()?;
            (call(l) == "openat"
                && arg_fd(l) == Some(dir_fd)
                && name.starts_with(".doc.json.sf-")
                && l.contains("O_EXCL"))
            .then(|| (dir_at + i, name, result(l)))
        })
        .unwrap_or_else(|| panic!("no exclusive temp open in the directory:\n{text}"));
    let temp_fd = temp_fd.expect("temp fd");
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
    // 3. The rename of the temp over the target, both names through the handle.
    let rename_at = lines
        .iter()
        .position(|l| {
            call(l).starts_with("renameat")
                && arg_fd(l) == Some(dir_fd)
                && quoted(l) == [temp.clone(), "doc.json".to_string()]
        })
        .unwrap_or_else(|| panic!("no rename of {temp} over doc.json:\n{text}"));
    assert!(
        sync_at < rename_at,
        "renamed before the data was synced:\n{text}"
    );
    // 4. The directory handle fsynced after the rename.
    assert!(
        lines[rename_at..]
            .iter()
            .any(|l| call(l) == "fsync" && arg_fd(l) == Some(dir_fd) && result(l) == Some(0)),
        "the directory was not fsynced after the rename:\n{text}"
    );
    assert_eq!(s.json("doc.json"), serde_json::json!({"v": 1}));
}

/// Journal mode: the record is appended to the journal and the journal fdatasynced
/// before the rename; no file or directory is synced; and the version the rename
/// replaces (its last link: no backups) is held by an `O_PATH` descriptor across the
/// rename, so that freeing its blocks is not inside `rename(2)`.
#[test]
fn a_journal_write_flushes_the_journal_then_renames_holding_the_old_version() {
    if !have_strace() {
        return;
    }
    let s = Sandbox::new();
    s.run(&["journal", "enable", "--size", "64K", "."]).ok();
    s.run_in(&["put", "--backups", "0", "doc.json"], b"{\"v\": 0}")
        .ok();
    let text = traced(
        &s,
        "open,openat,openat2,pwrite64,fsync,fdatasync,rename,renameat,renameat2,close",
        &["put", "--backups", "0", "doc.json"],
        b"{\"v\": 1}",
    );
    let t = Trace::new(&text);
    let (append, flush) = t.append_and_flush();
    let rename = t.at("rename over doc.json", |l| {
        call(l).starts_with("renameat") && quoted(l).get(1).map(String::as_str) == Some("doc.json")
    });
    let hold = t.at("O_PATH open of doc.json", |l| {
        call(l).starts_with("open") && quoted(l) == ["doc.json"] && l.contains("O_PATH")
    });
    let closed = t.closed_after(hold);
    assert!(
        append < flush && flush < rename,
        "append, flush, rename out of order:\n{text}"
    );
    assert!(
        hold < rename && rename < closed,
        "the old version was not held across the rename:\n{text}"
    );
    assert!(
        !t.any(|l| call(l) == "fsync"),
        "journal mode synced a file or directory:\n{text}"
    );
    assert_eq!(s.json("doc.json"), serde_json::json!({"v": 1}));
}

/// A journal enabled with `--swap`: after the flush the temp and the document are
/// exchanged (`renameat2(RENAME_EXCHANGE)`), never renamed over (ext4 writes a file
/// renamed over another out at once, and freeing the replaced file waits for that
/// I/O); no file or directory is synced. The replaced version, now at the temp's name
/// (its last link: no backups), is held by an `O_PATH` descriptor across its unlink, so
/// that freeing its blocks is not inside `unlink(2)`.
#[test]
fn a_journal_write_flushes_the_journal_then_exchanges_and_unlinks_holding_the_old_version() {
    if !have_strace() {
        return;
    }
    let s = Sandbox::new();
    let enabled = s
        .run(&["journal", "enable", "--swap", "--size", "64K", "."])
        .ok();
    assert!(
        enabled.stdout.contains("commits swap files in"),
        "{}",
        enabled.stdout
    );
    s.run_in(&["put", "--backups", "0", "doc.json"], b"{\"v\": 0}")
        .ok();
    let text = traced(
        &s,
        "open,openat,openat2,pwrite64,fsync,fdatasync,rename,renameat,renameat2,unlink,unlinkat,close",
        &["put", "--backups", "0", "doc.json"],
        b"{\"v\": 1}",
    );
    let t = Trace::new(&text);
    let (append, flush) = t.append_and_flush();
    let exchange = t.at("exchange of the temp and doc.json", |l| {
        call(l) == "renameat2"
            && l.contains("RENAME_EXCHANGE")
            && quoted(l).get(1).map(String::as_str) == Some("doc.json")
            && result(l) == Some(0)
    });
    let temp = quoted(t.lines[exchange])[0].clone();
    assert!(temp.starts_with(".doc.json.sf-"), "{temp}");
    assert!(
        !t.any(|l| call(l).starts_with("rename") && !l.contains("RENAME_EXCHANGE")),
        "a rename over the document:\n{text}"
    );
    let hold = t.at("O_PATH open of the replaced version", |l| {
        call(l).starts_with("open") && quoted(l) == [temp.as_str()] && l.contains("O_PATH")
    });
    let unlink = t.at("unlink of the replaced version", |l| {
        call(l).starts_with("unlink") && quoted(l) == [temp.as_str()] && result(l) == Some(0)
    });
    let closed = t.closed_after(hold);
    assert!(
        append < flush && flush < exchange,
        "append, flush, exchange out of order:\n{text}"
    );
    assert!(
        exchange < hold && hold < unlink && unlink < closed,
        "the old version was not held across its unlink:\n{text}"
    );
    assert!(
        !t.any(|l| call(l) == "fsync"),
        "journal mode synced a file or directory:\n{text}"
    );
    assert_eq!(s.json("doc.json"), serde_json::json!({"v": 1}));
    let temps = std::fs::read_dir(s.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".sf-")
        })
        .count();
    assert_eq!(temps, 0, "a temp file is left");
}

/// With backups, the rotation's rename over `.doc.json.bak` drops the previous backup's
/// last name: that backup is held (`O_PATH`) across it, as the document is in a write
/// without backups.
#[test]
fn the_backup_a_rotation_overwrites_is_held_across_it() {
    if !have_strace() {
        return;
    }
    let s = Sandbox::new();
    s.run(&["journal", "enable", "--size", "64K", "."]).ok();
    for v in 0..2 {
        s.run_in(&["put", "doc.json"], format!("{{\"v\": {v}}}").as_bytes())
            .ok();
    }
    assert!(s.path(".doc.json.bak").exists());
    let text = traced(
        &s,
        "openat,renameat,renameat2",
        &["put", "doc.json"],
        b"{\"v\": 2}",
    );
    let t = Trace::new(&text);
    let rotate = t.at("rename over .doc.json.bak", |l| {
        call(l).starts_with("renameat")
            && quoted(l).get(1).map(String::as_str) == Some(".doc.json.bak")
    });
    let hold = t.at("O_PATH open of the overwritten backup", |l| {
        call(l) == "openat" && quoted(l) == [".doc.json.bak"] && l.contains("O_PATH")
    });
    assert!(hold < rotate, "held after the rotation:\n{text}");
    assert_eq!(s.json("doc.json"), serde_json::json!({"v": 2}));
    assert_eq!(s.json(".doc.json.bak"), serde_json::json!({"v": 1}));
}

/// The `flock` calls of `statefile tx .` with `ops` on stdin, under `strace -f`.
fn tx_flocks(s: &Sandbox, ops: &serde_json::Value) -> usize {
    let text = traced(s, "flock", &["tx", "."], ops.to_string().as_bytes());
    text.lines().filter(|l| call(l) == "flock").count()
}

/// A transaction locked each document when an operation first touched it, and one
/// that sorted before a document already locked restarted the whole attempt (every lock
/// released, every document locked and probed again, every operation run again).
/// `statefile tx` and `POST /v1/tx` know every document before they start, yet
/// operations listed in descending order restarted once per document: O(n^2) lock
/// acquisitions, reads and patch applications (1000 puts in descending order took 146
/// s in a debug build, 2.4 s ascending). Now every document is locked first, in order.
/// Here 100 documents: each is locked about once, whatever the order of the operations.
#[test]
fn tx_locks_each_document_once_whatever_the_order_of_its_operations() {
    if !have_strace() {
        return;
    }
    let s = Sandbox::new();
    s.run(&["journal", "enable", "."]).ok();
    let ops = |names: &mut dyn Iterator<Item = usize>| {
        serde_json::Value::Array(
            names
                .map(|k| serde_json::json!({"op": "put", "doc": format!("d{k:03}.json"), "value": k}))
                .collect(),
        )
    };
    let ascending = tx_flocks(&s, &ops(&mut (0..100)));
    let descending = tx_flocks(&s, &ops(&mut (0..100).rev()));
    assert!(
        descending <= 2 * ascending,
        "{descending} flock calls for 100 documents named in descending order, \
         {ascending} in ascending order"
    );
}

/// A transaction looked at each document's file twice under its lock: the look that
/// finds its version opened and read it, then the transaction's read opened and read
/// it again (and its name was resolved twice, once for the lock order, once to lock
/// it). Now the read parses the bytes the look read, and the lock starts from the
/// resolution the order was taken from: each document is opened for reading once, and
/// its name looked up (`statx` of the path, not following a symlink) once (but the
/// first one locked, whose lock opens the journal in this process and starts again).
#[test]
fn tx_opens_and_resolves_each_document_once() {
    if !have_strace() {
        return;
    }
    let s = Sandbox::new();
    s.run(&["journal", "enable", "."]).ok();
    for (doc, v) in [("a.json", r#"{"n": 2}"#), ("b.json", r#"{"n": 0}"#)] {
        s.run_in(&["put", doc], v.as_bytes()).ok();
    }
    let ops = serde_json::json!([
        {"op": "get", "doc": "a.json"},
        {"op": "patch", "doc": "a.json", "merge": {"n": 1}},
        {"op": "patch", "doc": "b.json", "merge": {"n": 1}},
        {"op": "get", "doc": "b.json"},
    ]);
    let text = traced(
        &s,
        "openat,openat2,statx,newfstatat",
        &["tx", "."],
        ops.to_string().as_bytes(),
    );
    for doc in ["a.json", "b.json"] {
        let reads = text
            .lines()
            .filter(|l| {
                call(l) == "openat"
                    && quoted(l).last().is_some_and(|q| q == doc)
                    && !l.contains("O_PATH")
                    && !l.contains("O_CREAT")
                    && result(l).is_some_and(|fd| fd >= 0)
            })
            .count();
        assert_eq!(reads, 1, "{doc} opened for reading {reads} times:\n{text}");
        if doc == "a.json" {
            // The first lock a process takes in a journaled store opens the journal
            // and starts again, resolving anew.
            continue;
        }
        let lookups = text
            .lines()
            .filter(|l| {
                call(l) == "statx"
                    && l.contains("AT_SYMLINK_NOFOLLOW")
                    && quoted(l)
                        .first()
                        .is_some_and(|q| q.ends_with(&format!("/{doc}")))
            })
            .count();
        assert_eq!(
            lookups, 1,
            "{doc}'s path looked up {lookups} times:\n{text}"
        );
    }
    for doc in ["a.json", "b.json"] {
        let out = s.run(&["get", doc]).ok();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v, serde_json::json!({"n": 1}), "{doc}");
    }
}
