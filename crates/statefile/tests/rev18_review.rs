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
    fn mount() -> Option<Fuse> {
        if !Path::new("/dev/fuse").exists() {
            return None;
        }
        let ok = Command::new("python3")
            .args(["-c", "import fuse"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: no python3 fusepy");
            return None;
        }
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let f = Fuse {
            child,
            mnt,
            _dirs: dirs,
        };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            if mounts.contains(f.mnt.to_str().unwrap()) {
                return Some(f);
            }
            if Instant::now() > until {
                eprintln!("skipped: the FUSE file system did not mount");
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Fuse {
    fn drop(&mut self) {
        let _ = Command::new("fusermount").arg("-u").arg(&self.mnt).status();
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
fn a_journaled_write_on_fuse_leaves_no_hidden_file_behind() {
    let Some(fuse) = Fuse::mount() else { return };
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
