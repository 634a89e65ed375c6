//! Atomic, durable, lock-safe JSON state files.
//!
//! Services that keep their state in JSON files (`servers.json`, `jobs/<id>.json`, a
//! results index) meet the same failures: a crash during a write leaves a truncated
//! file, two requests read-modify-write at once and one update is lost, temp files pile
//! up, permissions are reset, a damaged file turns every request into an error.
//! statefile closes each of these, and the files stay plain JSON that any program can
//! read at any moment.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("servers.json");
//! #[derive(serde::Serialize, serde::Deserialize, Default)]
//! struct Servers { hosts: Vec<String> }
//!
//! let doc = statefile::Doc::<Servers>::open(&path)?;
//! doc.write(&Servers::default())?;                       // atomic, durable replace
//! doc.update(|s| { s.hosts.push("db1".into()); Ok(()) })?; // locked read-modify-write
//! let v = doc.read_versioned()?;                          // value + version (ETag)
//! doc.write_if(&v.version, &v.value)?;                    // compare-and-swap
//! assert_eq!(doc.read()?.hosts, ["db1"]);
//! # Ok::<(), statefile::Error>(())
//! ```
//!
//! # Guarantees
//!
//! - **Atomic**: a write creates a unique temp file beside the document, syncs it and
//!   renames it over the document. Readers, in any process, see the complete old or the
//!   complete new version; a crash at any instant leaves one of them.
//! - **Durable**: with the default [`Durability::Full`] the file and then its directory
//!   are synced before a write returns, so a power loss right after keeps it. A failed
//!   sync is reported, never retried as if it had worked.
//! - **Exclusive**: writes hold the document's lock (`.name.lock`, `flock`), across
//!   threads and processes, with a timeout instead of a hang; a dead holder's lock is
//!   released by the kernel.
//! - **Versioned**: a version is the SHA-256 of the bytes on disk; [`Doc::write_if`]
//!   and [`Doc::update_if`] fail with [`ErrorKind::Conflict`] when it changed.
//! - **Recoverable**: previous versions are kept as `.name.bak`, … (hard links);
//!   reads can fall back to the newest good one; [`Store::open`] and [`recover()`]
//!   clean up after crashed writers and repair damaged documents.
//!
//! # On disk
//!
//! | file | what |
//! |---|---|
//! | `dir/name.json` | the document: plain JSON (2-space indent, trailing newline) |
//! | `dir/.name.json.sf-<16 base32>.tmp` | a write in progress (or a dead writer's) |
//! | `dir/.name.json.lock` | the lock file: never replaced |
//! | `dir/.name.json.bak`, `.bak.2` … | previous versions, newest first |
//! | `dir/.name.json.corrupt` | the last damaged version that was replaced |
//!
//! The full protocol, including how another program can take the same lock, is in the
//! repository's `docs/design.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod atomic;
mod backup;
mod doc;
mod error;
mod file;
pub mod fs;
mod group;
mod install;
pub mod journal;
mod json;
mod lock;
#[cfg(feature = "mutants")]
pub mod mutants;
#[cfg(not(feature = "mutants"))]
mod mutants;
mod names;
mod options;
pub mod patch;
pub mod pointer;
mod process;
mod recover;
mod store;
mod tx;
mod tx_ops;
mod version;

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use backup::{BackupInfo, BackupRef, ParseBackupRefError};
pub use doc::{Deleted, Doc, Recovered, Versioned};
pub use error::{CorruptInfo, Error, ErrorKind, Result, TooLarge};
pub use install::{move_file, replace_file};
pub use json::{
    Format, MAX_DEPTH, RESERVED_KEY, exact_f64, is_reserved_key, parse_json, reserved_key_in,
    to_vec,
};
pub use lock::LockGuard;
pub use names::MAX_NAME_LEN;
pub use options::{BackupMade, BackupMethod, Durability, Options, ReadPolicy, Receipt};
pub use process::after_fork_in_child;
pub use recover::{Action, Finding, Problem, Report, Scan, ScanMode, recover, verify};
pub use store::Store;
pub use tx::{Transaction, TxDocument, TxReceipt};
pub use tx_ops::{MAX_TX_DIRS, MAX_TX_OPS, TxOp, TxOpError, TxOpKind, TxOpResult, parse_tx_ops};
pub use version::{ParseVersionError, Version};

/// Write `value` as JSON to `path` atomically and durably, with default [`Options`]
/// (one backup of the replaced version).
///
/// # Errors
/// As [`Doc::write`].
pub fn write_json<T: Serialize + ?Sized>(path: impl AsRef<Path>, value: &T) -> Result<Receipt> {
    let opts = Options::default();
    atomic::write(
        path.as_ref(),
        None,
        &opts,
        &atomic::Plan::json(&opts, None),
        &mut |w| json::serialize_into(value, opts.format, w),
    )
}

/// Read and parse the JSON document at `path`.
///
/// # Errors
/// As [`Doc::read`].
pub fn read_json<T: Serialize + DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    Doc::<T>::open(path)?.read()
}

/// Replace the file at `path` with `bytes` using the same protocol as documents (lock,
/// unique temp, sync, rename, directory sync), for files that are not JSON. No backups.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("blob.bin");
/// let receipt = statefile::write_atomic(&path, b"\x00\x01")?;
/// assert_eq!(receipt.bytes, 2);
/// assert_eq!(std::fs::read(&path)?, b"\x00\x01");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`Doc::write`].
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<Receipt> {
    write_atomic_with(path, bytes, &Options::default())
}

/// [`write_atomic`] with explicit options (durability, verification, lock timeout,
/// directory creation). Non-JSON files get no backups, whatever `opts` says.
///
/// # Errors
/// As [`Doc::write`].
pub fn write_atomic_with(path: impl AsRef<Path>, bytes: &[u8], opts: &Options) -> Result<Receipt> {
    atomic::write(
        path.as_ref(),
        None,
        opts,
        &atomic::Plan::bytes(opts),
        &mut |w| std::io::Write::write_all(w, bytes).map_err(json::SerializeError::Io),
    )
}

#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
