//! rev18: hostile review of eec6d0a (journal mode holds the replaced version across
//! the rename with the descriptor opened for a withdraw, not a fresh `O_PATH` one).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fresh, get, journaled_with, put};
use serde_json::json;

/// A loopback FUSE file system (fusepy, so libfuse's high-level API: a file still open
/// when it is renamed over or unlinked is hidden as `.fuse_hidden*`, as sshfs and every
/// other high-level libfuse file system without `hard_remove` do), unmounted on drop.
struct Fuse {
    child: Child,
    mnt: PathBuf,
    _dirs: tempfile::TempDir,
}

impl Fuse {
    fn mount() -> Fuse {
        Fuse::mount_with(&[])
    }

    /// Mounted, or a panic saying what is missing: the tests that need it are ignored
    /// by default (CI machines may have no `/dev/fuse`) and run by hand with
    /// `--ignored`, where a missing piece must not pass for a success.
    fn mount_with(env: &[(&str, &str)]) -> Fuse {
        assert!(
            Path::new("/dev/fuse").exists(),
            "no /dev/fuse (apt-get install fuse3; a container needs --device /dev/fuse)"
        );
        let ok = Command::new("python3")
            .args(["-c", "import fuse"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "no python3 fusepy (pip install fusepy; apt-get install libfuse2)"
        );
        let dirs = tempfile::tempdir().unwrap();
        let back = dirs.path().join("back");
        let mnt = dirs.path().join("mnt");
        std::fs::create_dir(&back).unwrap();
        std::fs::create_dir(&mnt).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rev18/fuse_loop.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(&back)
            .arg(&mnt)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the FUSE file system");
        let f = Fuse {
            child,
            mnt,
            _dirs: dirs,
        };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            if mounts.contains(f.mnt.to_str().unwrap()) {
                return f;
            }
            assert!(
                Instant::now() < until,
                "the FUSE file system did not mount in 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Fuse {
    fn drop(&mut self) {
        let _ = Command::new("fusermount")
            .arg("-uz")
            .arg(&self.mnt)
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hidden(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".fuse_hidden"))
        .collect()
}

/// A journaled write leaves nothing but the document in its directory once it
/// returns. Holding the replaced version across the rename with the descriptor opened
/// for a withdraw (a real open, unlike `O_PATH`) makes libfuse's high-level API see
/// the file as open when it is renamed over: it hides it as `.fuse_hidden*` in the
/// document's directory instead of removing it, until the releasing thread closes it.
#[test]
#[ignore = "needs /dev/fuse, fusermount and python3 with fusepy (libfuse2): run by hand with --ignored"]
fn a_journaled_write_on_fuse_leaves_no_hidden_file_behind() {
    let fuse = Fuse::mount();
    let store = journaled_with(&fuse.mnt, fresh().backups(0));
    let mut seen = Vec::new();
    for i in 0..5 {
        put(&store, "doc.json", json!({ "n": i }));
        seen.extend(hidden(&fuse.mnt));
    }
    assert_eq!(get(&store, "doc.json"), json!({ "n": 4 }));
    assert!(
        seen.is_empty(),
        "journaled writes left the replaced versions hidden in the directory: {seen:?}"
    );
}

/// A document's read descriptor keeps `O_NONBLOCK` (eec6d0a), which a FUSE daemon
/// sees in every open and read request: with a passthrough daemon that opens its
/// backing file with the flags given, reads, and backups copied where links are
/// refused, in and out of journal mode, still work.
#[test]
#[ignore = "needs /dev/fuse, fusermount and python3 with fusepy (libfuse2): run by hand with --ignored"]
fn reads_and_copied_backups_on_a_fuse_passthrough_work_with_o_nonblock() {
    let fuse = Fuse::mount_with(&[("REV18_NO_LINK", "1")]);
    let plain = statefile::Store::open_with(&fuse.mnt, fresh().backups(2)).unwrap();
    for i in 0..4 {
        put(&plain, "plain.json", json!({ "n": i }));
        assert_eq!(get(&plain, "plain.json"), json!({ "n": i }));
    }
    let doc = plain.doc::<serde_json::Value>("plain.json").unwrap();
    assert_eq!(doc.backups().unwrap().len(), 2);
    drop(plain);
    let store = journaled_with(&fuse.mnt, fresh().backups(2));
    for i in 0..4 {
        put(&store, "doc.json", json!({ "n": i }));
        assert_eq!(get(&store, "doc.json"), json!({ "n": i }));
    }
    let doc = store.doc::<serde_json::Value>("doc.json").unwrap();
    let backups = doc.backups().unwrap();
    assert_eq!(backups.len(), 2, "{backups:?}");
    for b in &backups {
        let bytes = std::fs::read(&b.path).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["n"].as_i64().unwrap() < 3, "{v}");
    }
    statefile::journal::checkpoint(&fuse.mnt, store.options()).ok();
    assert_eq!(get(&store, "doc.json"), json!({ "n": 3 }));
}

/// A file system without holds ([`statefile::fs::FsDir::hold`] answers `Ok(None)`:
/// "the rename frees the old version itself") keeps nothing open on the version a
/// journaled write replaces across its rename: eec6d0a held it anyway with the
/// descriptor opened for a withdraw, so such a file system (here one that refuses to
/// rename over a file open in the process, as Windows does) failed every journaled
/// write of an existing document.
#[test]
fn a_file_system_without_holds_gets_nothing_held_across_a_journaled_rename() {
    let dir = tempfile::tempdir().unwrap();
    let fs = common::Twisted::new();
    *fs.busy_rename_over_open.lock().unwrap() = true;
    let store = journaled_with(dir.path(), fresh().backups(0).fs(fs));
    for i in 0..3 {
        put(&store, "doc.json", json!({ "n": i }));
    }
    assert_eq!(get(&store, "doc.json"), json!({ "n": 2 }));
}
