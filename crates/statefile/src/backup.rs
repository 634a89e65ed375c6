//! Previous versions of a document: `.name.bak` (newest), `.name.bak.2`, ...
//!
//! Backups are made by the write protocol (a hard link to the replaced inode, rotated in
//! after the rename; see [`atomic`](crate::atomic)). This module lists them, picks one,
//! and restores it: itself an atomic write, so a restore can be undone from the backups.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::atomic::{self, Current, Locked, Plan, Verify};
use crate::error::{Error, ErrorKind, Result};
use crate::file;
use crate::fs::{FileType, FsDir};
use crate::json;
use crate::names::{Sidecar, Target, sidecar_of};
use crate::options::Receipt;
use crate::version::Version;

/// One kept previous version of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupInfo {
    /// 1 for the newest, 2 for the one before, ... (contiguous, whatever the file names).
    pub number: usize,
    /// The backup file.
    pub path: PathBuf,
    /// Its version (the hash of its bytes).
    pub version: Version,
    /// Its size in bytes.
    pub len: u64,
    /// When that version was written.
    pub modified: SystemTime,
    /// Whether it is valid JSON that statefile reads back as it is written (a backup
    /// that is not, or that holds a [reserved key](crate::is_reserved_key), is never
    /// restored).
    pub parses: bool,
}

/// Which backup to restore.
///
/// Parsed from text as the CLI and the server take it: a number (1 is the newest) or a
/// version (bare or as an ETag; a weak one too, since the version is only looked up).
///
/// ```
/// use statefile::{BackupRef, Version};
///
/// assert_eq!("2".parse::<BackupRef>()?, BackupRef::Number(2));
/// let v = Version::of(b"{}");
/// assert_eq!(v.as_str().parse::<BackupRef>()?, BackupRef::Version(v.clone()));
/// assert_eq!(v.etag().parse::<BackupRef>()?, BackupRef::Version(v.clone()));
/// assert_eq!(format!("W/{}", v.etag()).parse::<BackupRef>()?, BackupRef::Version(v));
/// assert!("0".parse::<BackupRef>().is_err()); // numbered from 1
/// assert!("newest".parse::<BackupRef>().is_err());
/// # Ok::<(), statefile::ParseBackupRefError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupRef {
    /// The newest backup that parses.
    NewestGood,
    /// By number: 1 is the newest.
    Number(usize),
    /// The backup with this version.
    Version(Version),
}

impl FromStr for BackupRef {
    type Err = ParseBackupRefError;

    /// A backup number (decimal digits, from 1) or a version (64 hex digits, bare or
    /// quoted as an ETag, weak or strong: it only names the backup, compared with no
    /// version, so [`Version::parse_weak`]).
    fn from_str(s: &str) -> std::result::Result<BackupRef, ParseBackupRefError> {
        let err = || ParseBackupRefError {
            input: s.chars().take(80).collect(),
        };
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<usize>() {
                Ok(0) | Err(_) => Err(err()),
                Ok(n) => Ok(BackupRef::Number(n)),
            };
        }
        Version::parse_weak(s)
            .map(BackupRef::Version)
            .map_err(|_| err())
    }
}

/// Text that names no backup: [`BackupRef`]'s parse error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseBackupRefError {
    input: String,
}

impl fmt::Display for ParseBackupRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} names no backup: give a backup number (1 is the newest) or a version \
             (64 hex digits)",
            self.input
        )
    }
}

impl std::error::Error for ParseBackupRefError {}

/// The backup files of `t`, newest first, as names in its directory. Gaps are
/// possible after a crash during rotation; the order is what counts.
pub(crate) fn backup_files(dir: &dyn FsDir, t: &Target) -> Result<Vec<OsString>> {
    let entries = match dir.read_dir() {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list backups in", &t.dir, e)),
    };
    let mut found: Vec<(usize, OsString)> = entries
        .into_iter()
        .filter_map(|e| match sidecar_of(&e.name) {
            Some(Sidecar::Backup(doc, n)) if doc == t.name => Some((n, e.name)),
            _ => None,
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, name)| name).collect())
}

/// Every backup of `t` with its version and whether it parses, newest first. A backup
/// over `max` bytes ([`Options::max_document_bytes`]) is left out, as one that is not a
/// regular file is: it is not hashed (statefile makes none such; one planted among the
/// backups would cost every listing, restore and repair the time to hash it), and it
/// could not be restored under the limit.
///
/// [`Options::max_document_bytes`]: crate::Options::max_document_bytes
pub(crate) fn list(dir: &dyn FsDir, t: &Target, max: u64) -> Result<Vec<BackupInfo>> {
    let mut out = Vec::new();
    for name in backup_files(dir, t)? {
        let path = t.beside(&name);
        let meta = match dir.stat(&name) {
            Ok(m) => m,
            // Rotated away by a concurrent writer between listing and stat.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("inspect backup", &path, e)),
        };
        if meta.file_type != FileType::File {
            // Not one statefile made: never read, listed or restored (verify reports it).
            tracing::warn!(backup = %path.display(), is = meta.file_type.describe(),
                "ignoring a backup that is not a regular file");
            continue;
        }
        let (seen, reserved) = match file::inspect_readable(dir, &name, &path, max) {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) if e.too_large().is_some() => {
                tracing::warn!(backup = %path.display(), len = meta.len, limit = max,
                    "ignoring a backup over the size limit");
                continue;
            }
            Err(e) => return Err(e),
        };
        let modified = if meta.mtime_ns >= 0 {
            UNIX_EPOCH + Duration::from_nanos(meta.mtime_ns as u64)
        } else {
            UNIX_EPOCH
        };
        out.push(BackupInfo {
            number: out.len() + 1,
            path,
            version: seen.version,
            len: meta.len,
            modified,
            parses: seen.parses && reserved.is_none(),
        });
    }
    Ok(out)
}

/// What to add to an error about `t`'s backups when [`list`] left some out, not being
/// regular files (a symlink, a FIFO: not made by statefile) or being over `max` bytes:
/// their names and what each is, since one of them may be the backup meant. Empty if
/// none was.
pub(crate) fn left_out_note(dir: &dyn FsDir, t: &Target, max: u64) -> String {
    let skipped: Vec<String> = backup_files(dir, t)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|name| match dir.stat(&name) {
            Ok(m) if m.file_type != FileType::File => Some(format!(
                "{} is {}, which statefile never reads or restores",
                name.to_string_lossy(),
                m.file_type.describe()
            )),
            Ok(m) if m.len > max => Some(format!(
                "{} is {} bytes, over the limit of {max} bytes on a document's size",
                name.to_string_lossy(),
                m.len
            )),
            _ => None,
        })
        .collect();
    if skipped.is_empty() {
        return String::new();
    }
    format!("; left out: {}", skipped.join("; "))
}

/// Pick the backup `which` names from `list` (made by [`list`] from `dir`). If none
/// answers, the error also names the backups left out of `list` and why, since one of
/// them may be the one meant.
pub(crate) fn pick<'a>(
    dir: &dyn FsDir,
    list: &'a [BackupInfo],
    which: &BackupRef,
    t: &Target,
    max: u64,
) -> Result<&'a BackupInfo> {
    let found = match which {
        BackupRef::NewestGood => list.iter().find(|b| b.parses),
        BackupRef::Number(n) => list.iter().find(|b| b.number == *n),
        BackupRef::Version(v) => list.iter().find(|b| &b.version == v),
    };
    let b = found.ok_or_else(|| {
        // A backup left out for its size may be the one a number meant: say so as the
        // size error a read of it gives.
        if let BackupRef::Number(_) = which
            && let Some((name, len)) = backup_files(dir, t)
                .unwrap_or_default()
                .into_iter()
                .find_map(|name| match dir.stat(&name) {
                    Ok(m) if m.file_type == FileType::File && m.len > max => Some((name, m.len)),
                    _ => None,
                })
        {
            return Error::over_limit("read the backup", &t.beside(&name), Some(len), max);
        }
        let what = match which {
            BackupRef::NewestGood => "no backup that parses".to_string(),
            BackupRef::Number(n) => format!("no backup number {n} ({} kept)", list.len()),
            BackupRef::Version(v) => format!("no backup with version {v}"),
        };
        let why = left_out_note(dir, t, max);
        Error::new(
            ErrorKind::NotFound,
            format!("cannot restore {}: {what}{why}", t.path.display()),
        )
        .with_path(&t.path)
    })?;
    if !b.parses {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "cannot restore {} from {}: that backup is not valid JSON (or holds a \
                 reserved key such as {:?}, which reads back as a different value)",
                t.path.display(),
                b.path.display(),
                crate::RESERVED_KEY,
            ),
        )
        .with_path(&b.path));
    }
    Ok(b)
}

/// The bytes of the backup `which` names, read through `dir` (regular files only) and
/// checked to parse: a damaged backup is never handed out or restored.
pub(crate) fn read_picked(
    dir: &dyn FsDir,
    t: &Target,
    which: &BackupRef,
    max: u64,
) -> Result<Vec<u8>> {
    let all = list(dir, t, max)?;
    let chosen = pick(dir, &all, which, t, max)?;
    let name = chosen
        .path
        .file_name()
        .expect("a backup path ends in its name");
    let (bytes, _) = file::read(dir, name, &chosen.path, max)?;
    // The bytes were checked by `list`, but may have been rotated since: check again.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return Err(json::parse_error(e, bytes.is_empty(), &chosen.path));
    }
    Ok(bytes)
}

/// Restore a backup over the locked document. If `expect` is given, the document must
/// still have that version (or be missing, for `None` inside): repair replaces only the
/// damaged bytes it saw.
pub(crate) fn restore_locked(
    w: &Locked,
    plan: &Plan<'_>,
    which: &BackupRef,
    expect: Option<Option<&Version>>,
) -> Result<Receipt> {
    let t = &w.target;
    let dir = w.dir.as_ref();
    let current = Current::probe(w, true, plan.max_bytes)?;
    // A file over the size limit has no version computed: a version to compare with is
    // refused; an expectation of none fails below, as for any file.
    if let Some(Some(_)) = expect {
        current.refuse_too_large("restore over", &t.path)?;
    }
    if let Some(expected) = expect
        && (current.version() != expected
            || (expected.is_none() && !matches!(current, Current::Missing)))
    {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "not restoring {}: it changed since it was checked",
                t.path.display()
            ),
        )
        .with_path(&t.path));
    }
    let bytes = read_picked(dir, t, which, plan.max_bytes)?;
    let plan = Plan {
        // Keep at least one backup so the restore itself can be undone.
        backups: plan.backups.max(1),
        verify: if plan.verify == Verify::No {
            Verify::No
        } else {
            Verify::Json
        },
        ..*plan
    };
    atomic::replace(w, &plan, &current, &mut |out| {
        out.write_all(&bytes).map_err(json::SerializeError::Io)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // `?from=` and `restore FILE FROM` take any text: never a panic.
        #[test]
        fn parse_never_panics(s in any::<String>()) {
            match s.parse::<BackupRef>() {
                Ok(BackupRef::Number(n)) => prop_assert!(n >= 1),
                Ok(BackupRef::Version(_)) | Err(_) => {}
                Ok(BackupRef::NewestGood) => prop_assert!(false, "text never means NewestGood"),
            }
        }

        #[test]
        fn numbers_and_versions_round_trip(n in 1usize.., bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            prop_assert_eq!(n.to_string().parse::<BackupRef>().unwrap(), BackupRef::Number(n));
            let v = Version::of(&bytes);
            prop_assert_eq!(v.as_str().parse::<BackupRef>().unwrap(), BackupRef::Version(v.clone()));
            prop_assert_eq!(v.etag().parse::<BackupRef>().unwrap(), BackupRef::Version(v.clone()));
            // Compared with nothing, a weak tag names the version it wraps, as before
            // `Version::parse` refused weak tags for preconditions.
            prop_assert_eq!(format!("W/{}", v.etag()).parse::<BackupRef>().unwrap(), BackupRef::Version(v));
        }
    }

    #[test]
    fn zero_and_overflowing_numbers_are_refused() {
        for bad in [
            "0",
            "00",
            "",
            "-1",
            "+1",
            "1.5",
            "99999999999999999999999999",
        ] {
            assert!(bad.parse::<BackupRef>().is_err(), "{bad:?}");
        }
    }
}
