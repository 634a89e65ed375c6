//! A real tiny tmpfs for out-of-space and read-only tests (shared with the CLI's and the
//! server's tests through `#[path]`). Needs root (CAP_SYS_ADMIN); see [`tiny_tmpfs`].
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Mount a tmpfs of `size` on `dir` (needs root with CAP_SYS_ADMIN); the error says why
/// not, for the skip message.
pub fn try_mount_tmpfs(dir: &Path, size: &str) -> Result<TmpfsMount, String> {
    let out = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0755"),
            "tmpfs",
        ])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(TmpfsMount(dir.to_path_buf()))
    } else {
        Err(format!(
            "mount -t tmpfs failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A tmpfs of `size` mounted on `dir`, or `None` after [`super::skip::skip`] said why not
/// (under `CI=true`, where the tests run as root, that fails the test instead).
#[track_caller]
pub fn tiny_tmpfs(dir: &Path, size: &str) -> Option<TmpfsMount> {
    match try_mount_tmpfs(dir, size) {
        Ok(m) => Some(m),
        Err(why) => {
            super::skip::skip(&format!("cannot mount a tmpfs ({why})"));
            None
        }
    }
}

/// A mounted tmpfs, unmounted on drop.
pub struct TmpfsMount(pub PathBuf);

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
