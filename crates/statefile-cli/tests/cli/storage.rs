//! Exit codes 7 (no space) and 8 (permission denied) through the real binary, on a real
//! tiny tmpfs (mounted by the test; skipped with the reason when it may not mount).

use crate::common::{Sandbox, temps};
use crate::mount;

#[test]
fn a_full_disk_exits_7_and_keeps_the_original() {
    let s = Sandbox::new();
    let mnt = s.path("tiny");
    std::fs::create_dir(&mnt).unwrap();
    let _m = match mount::try_mount_tmpfs(&mnt, "64k") {
        Ok(m) => m,
        Err(why) => {
            println!("skipping: cannot mount a tiny tmpfs ({why})");
            return;
        }
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
    let _m = match mount::try_mount_tmpfs(&mnt, "1m") {
        Ok(m) => m,
        Err(why) => {
            println!("skipping: cannot mount a tmpfs ({why})");
            return;
        }
    };
    assert_eq!(s.run_in(&["put", "ro/state.json"], b"{\"v\": 1}").code, 0);
    let before = s.read("ro/state.json");
    let remount = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mnt)
        .output()
        .unwrap();
    if !remount.status.success() {
        println!("skipping: cannot remount read-only");
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
