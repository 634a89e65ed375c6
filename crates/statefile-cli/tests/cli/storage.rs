//! Exit codes 7 (no space) and 8 (permission denied) through the real binary, on a real
//! tiny tmpfs (mounted by the test; skipped with the reason when it may not mount).

use crate::common::{Sandbox, temps};
use crate::mount;
use std::os::unix::fs::FileTypeExt;

#[test]
fn a_full_disk_exits_7_and_keeps_the_original() {
    let s = Sandbox::new();
    let mnt = s.path("tiny");
    std::fs::create_dir(&mnt).unwrap();
    let Some(_m) = mount::tiny_tmpfs(&mnt, "64k") else {
        return;
    };
    assert_eq!(
        s.run_in(&["put", "tiny/state.json"], b"{\"small\": 1}")
            .code,
        0
    );
    let before = s.read("tiny/state.json");
    let big = format!("{{\"blob\": \"{}\"}}", "x".repeat(200_000));
    let r = s.run_in(&["put", "tiny/state.json"], big.as_bytes());
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("statefile: ") && r.stderr.contains("state.json"),
        "names the file: {}",
        r.stderr
    );
    assert_eq!(s.read("tiny/state.json"), before, "the original is intact");
    assert!(temps(&mnt).is_empty(), "no temp file left");
}

#[test]
fn a_read_only_file_system_exits_8_and_keeps_the_original() {
    let s = Sandbox::new();
    let mnt = s.path("ro");
    std::fs::create_dir(&mnt).unwrap();
    let Some(_m) = mount::tiny_tmpfs(&mnt, "1m") else {
        return;
    };
    assert_eq!(s.run_in(&["put", "ro/state.json"], b"{\"v\": 1}").code, 0);
    let before = s.read("ro/state.json");
    let remount = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mnt)
        .output()
        .unwrap();
    if !remount.status.success() {
        crate::skip::skip("cannot remount read-only");
        return;
    }
    for args in [
        &["put", "ro/state.json"][..],
        &["set", "ro/state.json", "/v", "2"],
        &["append", "ro/state.json", "/items", "1"],
    ] {
        let r = s.run_in(args, b"{\"v\": 2}");
        assert_eq!(r.code, 8, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("state.json"), "{}", r.stderr);
    }
    assert_eq!(s.read("ro/state.json"), before);
}

/// Run `statefile args` under coreutils' `timeout`: a hang exits 124 instead of stalling.
fn run_bounded(s: &Sandbox, args: &[&str], stdin: &[u8]) -> crate::common::Run {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = std::process::Command::new("timeout")
        .arg("20")
        .arg(crate::common::BIN)
        .args(args)
        .current_dir(s.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    crate::common::Run::from(child.wait_with_output().unwrap())
}

// Regression (issue 9): get/put/set/version on a FIFO named like a document hung, and
// verify called such a store healthy.
#[test]
fn a_fifo_named_like_a_document_exits_2_and_verify_reports_it() {
    let s = Sandbox::new();
    let fifo = s.path("pipe.json");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::os::unix::fs::symlink("pipe.json", s.path("link.json")).unwrap();
    for file in ["pipe.json", "link.json"] {
        for (args, stdin) in [
            (vec!["get", file], &b""[..]),
            (vec!["put", file], &b"{}"[..]),
            (vec!["set", file, "/a", "1"], &b""[..]),
            (vec!["version", file], &b""[..]),
            (vec!["rm", file], &b""[..]),
        ] {
            let r = run_bounded(&s, &args, stdin);
            assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
            assert!(r.stderr.contains("FIFO"), "{args:?}: {}", r.stderr);
        }
    }
    let r = run_bounded(&s, &["verify", "."], b"");
    assert_eq!(r.code, 5, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("pipe.json") && r.stdout.contains("FIFO"),
        "{}",
        r.stdout
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}
