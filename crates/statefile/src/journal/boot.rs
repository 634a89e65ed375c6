//! `.statefile/journal-boot`: the boot in which the journal was last replayed, for
//! readers who may not open the journal or its shared state (another user).
//!
//! A plain read in a journal tree is safe once the journal was replayed since the
//! machine booted (see [`super::read`]). The shared state (`journal-shm`) tells that,
//! but it cannot be readable by everyone: `flock(2)` needs only read access, every
//! commit takes an exclusive lock on the shared state, and so anyone who could open it
//! could hold that lock and stop every writer of the tree. This file is readable by
//! everyone and locked by no one: holding a lock on it stops nothing.
//!
//! It is written by the process that replays the journal after a reboot, once the
//! documents are up to date and the shared state is rebuilt, and removed when that
//! replay finds the journal damaged. It is never synced: like the shared state, it
//! means nothing after a reboot, which its boot id tells.
//!
//! ```text
//!   0   8  magic "SFJBOOT1"
//!   8   8  the journal's salt
//!  16  16  boot id of the machine when the journal was replayed
//!  32   4  CRC-32C of bytes 0..32
//! ```

use std::ffi::OsStr;
use std::path::Path;

use std::io::Write;

use super::BOOT;
use super::format::crc32c;
use crate::error::{Context, Result};
use crate::fs::FsDir;

const MAGIC: [u8; 8] = *b"SFJBOOT1";
pub(crate) const LEN: usize = 36;

/// What `journal-boot` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    pub salt: u64,
    pub boot: u128,
}

impl Marker {
    pub(crate) fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..16].copy_from_slice(&self.salt.to_le_bytes());
        b[16..32].copy_from_slice(&self.boot.to_le_bytes());
        let crc = crc32c(0, &b[..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `None` for anything but a whole, intact marker (a torn write reads as none).
    pub(crate) fn decode(b: &[u8]) -> Option<Marker> {
        let b = b.get(..LEN)?;
        if b[0..8] != MAGIC {
            return None;
        }
        let crc = u32::from_le_bytes(b[32..36].try_into().ok()?);
        if crc != crc32c(0, &b[..32]) {
            return None;
        }
        Some(Marker {
            salt: u64::from_le_bytes(b[8..16].try_into().ok()?),
            boot: u128::from_le_bytes(b[16..32].try_into().ok()?),
        })
    }
}

/// Where a new `journal-boot` is made before it is renamed into place.
pub(crate) const NEW: &str = "journal-boot.new";

/// Make `journal-boot` in `meta` (the journal's directory at `root`) say `marker`,
/// readable by everyone: `mode` (the journal's) plus read for group and others. A new
/// file (created exclusively, its mode set through its own descriptor, so no umask
/// narrows it and no name planted here is written through) renamed over the old one.
/// `Ok(false)` if another process is making one at this moment.
pub(crate) fn publish(meta: &dyn FsDir, root: &Path, mode: u32, marker: Marker) -> Result<bool> {
    let dir = root.join(super::META_DIR);
    let new = dir.join(NEW);
    // A leftover of a process that died making one goes first. (Another opener making
    // one at this moment loses its file: its rename fails and it says so; this one's
    // marker says the same.)
    let _ = meta.remove_file(OsStr::new(NEW));
    let mut f = match crate::fs::retry(|| meta.create_new(OsStr::new(NEW), 0o600)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e).ctx("create", &new),
    };
    let made = (|| {
        f.write_all(&marker.encode()).ctx("write", &new)?;
        f.set_mode((mode & 0o666) | 0o044)
            .ctx("set mode of", &new)?;
        drop(f);
        meta.rename(OsStr::new(NEW), OsStr::new(BOOT))
            .ctx("rename", &dir.join(BOOT))
    })();
    if made.is_err() {
        let _ = meta.remove_file(OsStr::new(NEW));
    }
    made.map(|()| true)
}

/// Take back what `journal-boot` says (a replay found the journal damaged, or a new
/// journal is made: nothing may read as if it were replayed): remove it, or, if that
/// is refused, overwrite it with zeros, which read as no marker.
pub(crate) fn withdraw(meta: &dyn FsDir, root: &Path) -> Result<()> {
    let path = root.join(super::META_DIR).join(BOOT);
    let removed = match meta.remove_file(OsStr::new(BOOT)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    let Err(refused) = removed else {
        return Ok(());
    };
    let zeroed = crate::fs::retry(|| meta.open_rw(OsStr::new(BOOT), 0o600, false))
        .and_then(|f| f.write_at(&[0u8; LEN], 0).map(drop));
    zeroed.map_err(|_| refused).ctx("remove", &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_and_a_damaged_one_reads_as_none() {
        let m = Marker {
            salt: 0x0123_4567_89ab_cdef,
            boot: 0xfeed_beef_u128 << 64 | 42,
        };
        let b = m.encode();
        assert_eq!(Marker::decode(&b), Some(m));
        for i in 0..LEN {
            let mut bad = b;
            bad[i] ^= 1;
            assert_eq!(Marker::decode(&bad), None, "byte {i} flipped");
        }
        assert_eq!(Marker::decode(&b[..LEN - 1]), None, "torn");
        assert_eq!(Marker::decode(&[]), None);
    }
}
