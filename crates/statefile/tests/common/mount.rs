//! A real tiny tmpfs for out-of-space and read-only tests (shared with the CLI's tests
//! through `#[path]`). Needs root; callers skip with a printed reason otherwise.
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

/// A mounted tmpfs, unmounted on drop.
pub struct TmpfsMount(pub PathBuf);

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
