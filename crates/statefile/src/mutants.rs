//! Test-only switches that break the write protocol on purpose, so the crash-state
//! explorer (crates/statefile-crashtest) can prove it notices, and a probe it uses to
//! form batches deterministically. Public only with the `mutants` feature; without it
//! every switch is a constant `false` the compiler removes, and the broken protocols
//! below are never reached.

use std::io::Write;

use crate::atomic::Locked;
use crate::error::{Context, Result};
use crate::options::{Durability, Receipt};
use crate::version::Version;

/// A deliberate bug in the write protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mutant {
    /// Skip the fsync of the temp file.
    NoFileFsync = 1,
    /// Skip the fsync of the directory after the rename.
    NoDirFsync = 2,
    /// Delete the target and write the new bytes at its name, no rename.
    InPlace = 3,
    /// Use the fixed temp name `.name.tmp` instead of a unique one.
    FixedTempName = 4,
    /// Journal mode: acknowledge a commit without flushing the journal.
    NoJournalFlush = 5,
    /// Journal mode: a checkpoint marks the journal's space reusable before the
    /// documents it covers are durable.
    CheckpointBeforeSync = 6,
    /// Journal mode: recovery skips the replay of the journal's records.
    NoReplay = 7,
    /// Journal mode: a record at the torn end of the journal counts as committed
    /// (its documents' bytes are not checked against their versions).
    TornTailAccepted = 8,
    /// Journal mode: a checkpoint syncs each document but not its backups, though a
    /// version replaced since the last checkpoint may live on there, its bytes synced by
    /// no one, and the checkpoint frees the record that holds them (the bug that
    /// 62320d3 fixed: a power loss after the checkpoint left the backup empty).
    CheckpointSkipsBackups = 9,
    /// Journal mode: a write too large for the journal whose sync of the current
    /// document failed rewrites that document from its first record since the
    /// checkpoint (an older version) instead of its last: a rollback past acknowledged
    /// writes, which only the fault injector's judge sees (no crash is involved).
    RewriteFromFirstRecord = 10,
    /// Journal mode: a backup whose sync failed (by a write outside the journal, or a
    /// checkpoint) is left as it is, neither written again from its record nor the
    /// journal marked, though the failed sync may have dropped the bytes only the
    /// journal held: the next checkpoint syncs what is left (nothing is dirty any more)
    /// and frees the record (the known limit rev7 found). No crash is involved: only
    /// the fault injector's judge of backups sees it.
    NoBackupRewrite = 11,
}

#[cfg(feature = "mutants")]
static ACTIVE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Turn one mutant on (process-wide), or all off with `None`.
#[cfg(feature = "mutants")]
pub fn set(m: Option<Mutant>) {
    ACTIVE.store(
        m.map_or(0, |m| m as u8),
        std::sync::atomic::Ordering::SeqCst,
    );
}

/// How many calls of this process wait in group-commit queues to write the document
/// at the resolved path `path`, found without a file-system call (so a workload can wait
/// for a batch to form without changing the sequence of calls the explorer replays).
#[cfg(feature = "mutants")]
pub fn queued(path: &std::path::Path) -> usize {
    crate::lock::queued(path)
}

/// Whether mutant `m` is on.
#[cfg(feature = "mutants")]
pub(crate) fn active(m: Mutant) -> bool {
    ACTIVE.load(std::sync::atomic::Ordering::SeqCst) == m as u8
}

/// Whether mutant `m` is on: never, in a build without the `mutants` feature.
#[cfg(not(feature = "mutants"))]
pub(crate) fn active(m: Mutant) -> bool {
    let _ = m;
    false
}

/// The in-place mutant: instead of renaming, delete the target and write the bytes
/// into a fresh file at its name, the way the services that motivated statefile did.
pub(crate) fn write_in_place(
    w: &Locked,
    durability: Durability,
    temp: &std::ffi::OsStr,
    version: Version,
    bytes: u64,
) -> Result<Receipt> {
    let t = &w.target;
    let dir = w.dir.as_ref();
    let (content, _) = crate::file::read(dir, temp, &t.path, u64::MAX)?;
    let _ = dir.remove_file(temp);
    match dir.remove_file(&t.name) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).ctx("remove", &t.path);
        }
        _ => {}
    }
    let mut f = dir.create_new(&t.name, 0o644).ctx("create", &t.path)?;
    f.write_all(&content).ctx("write", &t.path)?;
    f.sync_all().ctx("sync", &t.path)?;
    dir.sync().ctx("sync directory", &t.dir)?;
    Ok(Receipt {
        path: t.path.clone(),
        version,
        previous: None,
        bytes,
        durability,
        backup: None,
        created: false,
        unchanged: false,
        lock_wait: w.lock.waited(),
        batch: 1,
        queued: std::time::Duration::ZERO,
    })
}
