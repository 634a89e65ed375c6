//! The library's results as the Python records of `statefile/_types.py`, and the
//! options every handle takes.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::Value;
use statefile::journal::{CheckpointReport, JournalStatus};
use statefile::{
    Action, BackupInfo, Deleted, Durability, Options, Problem, Receipt, Report, TxReceipt,
    Versioned,
};

use crate::convert::to_py;
use crate::errors::class;

/// A path as Python sees file names (`os.fsdecode`: undecodable bytes as surrogates).
pub fn path_str<'py>(py: Python<'py>, p: &Path) -> PyResult<Bound<'py, PyAny>> {
    Ok(p.as_os_str().into_pyobject(py)?.into_any())
}

fn opt_path<'py>(py: Python<'py>, p: Option<&Path>) -> PyResult<Bound<'py, PyAny>> {
    match p {
        Some(p) => path_str(py, p),
        None => Ok(py.None().into_bound(py)),
    }
}

fn record<'py>(
    py: Python<'py>,
    name: &str,
    kw: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    class(py, name)?.call((), Some(kw))
}

pub fn receipt<'py>(py: Python<'py>, r: &Receipt) -> PyResult<Bound<'py, PyAny>> {
    let kw = PyDict::new(py);
    kw.set_item("path", path_str(py, &r.path)?)?;
    kw.set_item("version", r.version.as_str())?;
    kw.set_item("previous", r.previous.as_ref().map(|v| v.as_str()))?;
    kw.set_item("bytes", r.bytes)?;
    kw.set_item("durability", r.durability.as_str())?;
    kw.set_item(
        "backup",
        opt_path(py, r.backup.as_ref().map(|b| b.path.as_path()))?,
    )?;
    kw.set_item("created", r.created)?;
    kw.set_item("unchanged", r.unchanged)?;
    kw.set_item("lock_wait", r.lock_wait.as_secs_f64())?;
    kw.set_item("batch", r.batch)?;
    kw.set_item("queued", r.queued.as_secs_f64())?;
    record(py, "Receipt", &kw)
}

pub fn versioned<'py>(py: Python<'py>, v: &Versioned<Value>) -> PyResult<Bound<'py, PyAny>> {
    let out = class(py, "Versioned")?.call1((to_py(py, &v.value)?, v.version.as_str()))?;
    if let Some(r) = &v.recovered {
        let kw = PyDict::new(py);
        kw.set_item("backup", r.backup)?;
        kw.set_item("path", path_str(py, &r.path)?)?;
        kw.set_item("damaged_version", r.damaged_version.as_str())?;
        kw.set_item("reason", &r.reason)?;
        out.setattr("recovered", record(py, "Recovered", &kw)?)?;
    }
    Ok(out)
}

pub fn deleted<'py>(py: Python<'py>, d: &Deleted) -> PyResult<Bound<'py, PyAny>> {
    let kw = PyDict::new(py);
    kw.set_item("version", d.version.as_str())?;
    kw.set_item("kept_as", opt_path(py, d.kept_as.as_deref())?)?;
    record(py, "Deleted", &kw)
}

pub fn backups<'py>(py: Python<'py>, list: &[BackupInfo]) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for b in list {
        let kw = PyDict::new(py);
        kw.set_item("number", b.number)?;
        kw.set_item("path", path_str(py, &b.path)?)?;
        kw.set_item("version", b.version.as_str())?;
        kw.set_item("size", b.len)?;
        let modified = b
            .modified
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        kw.set_item("modified", modified)?;
        kw.set_item("parses", b.parses)?;
        out.append(record(py, "Backup", &kw)?)?;
    }
    Ok(out)
}

/// A recovery report as plain data (what `statefile verify --json` prints).
pub fn report<'py>(py: Python<'py>, r: &Report) -> PyResult<Bound<'py, PyDict>> {
    let findings = PyList::empty(py);
    for f in &r.findings {
        let d = PyDict::new(py);
        d.set_item("path", path_str(py, &f.path)?)?;
        let (problem, detail, good_backup) = match &f.problem {
            Problem::StaleTemp => ("stale-temp", None, None),
            Problem::CorruptDocument {
                reason,
                good_backup,
            } => (
                "corrupt-document",
                Some(reason.clone()),
                good_backup.as_deref(),
            ),
            Problem::CorruptBackup { reason } => ("corrupt-backup", Some(reason.clone()), None),
            Problem::Unreadable { error } => ("unreadable", Some(error.clone()), None),
            Problem::JournalReplay { version } => (
                "journal-replay",
                Some(
                    version
                        .as_ref()
                        .map_or("deleted".to_owned(), |v| v.to_string()),
                ),
                None,
            ),
            Problem::JournalSkipped { version, reason } => (
                "journal-skipped",
                Some(match version {
                    Some(v) => format!("version {v}: {reason}"),
                    None => reason.clone(),
                }),
                None,
            ),
            Problem::JournalDamaged {
                lsn,
                reason,
                later_records,
            } => (
                "journal-damaged",
                Some(format!(
                    "LSN {lsn}: {reason}; {later_records} valid records after it"
                )),
                None,
            ),
            Problem::JournalSyncFailed => ("journal-sync-failed", None, None),
            _ => ("other", None, None),
        };
        d.set_item("problem", problem)?;
        d.set_item("detail", detail)?;
        d.set_item("good_backup", opt_path(py, good_backup)?)?;
        let (action, action_detail): (&str, Option<String>) = match &f.action {
            Action::None => ("none", None),
            Action::Removed => ("removed", None),
            Action::Restored { from, version } => (
                "restored",
                Some(format!("from {} (version {version})", from.display())),
            ),
            Action::MovedAside { to } => ("moved-aside", Some(to.display().to_string())),
            Action::Would(what) => ("would", Some(what.clone())),
            Action::Failed { error } => ("failed", Some(error.clone())),
            Action::Replayed => ("replayed", None),
            _ => ("other", None),
        };
        d.set_item("action", action)?;
        d.set_item("action_detail", action_detail)?;
        d.set_item("fixed", f.is_fixed())?;
        findings.append(d)?;
    }
    let out = PyDict::new(py);
    out.set_item("healthy", r.is_healthy())?;
    out.set_item("needs_repair", r.needs_repair())?;
    out.set_item("documents", r.documents)?;
    out.set_item("backups", r.backups)?;
    out.set_item("without_backup", r.without_backup)?;
    out.set_item("live_temps", r.live_temps)?;
    out.set_item("findings", findings)?;
    let journals = PyList::empty(py);
    for j in &r.journals {
        journals.append(journal_status(py, j)?)?;
    }
    out.set_item("journals", journals)?;
    Ok(out)
}

/// A journal's state as plain data (what `statefile journal status --json` prints).
pub fn journal_status<'py>(py: Python<'py>, s: &JournalStatus) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("root", path_str(py, &s.root)?)?;
    out.set_item("path", path_str(py, &s.path)?)?;
    out.set_item("format_version", s.format_version)?;
    out.set_item("swap", s.swap)?;
    out.set_item("capacity", s.capacity)?;
    out.set_item("checkpoint_lsn", s.checkpoint_lsn)?;
    out.set_item("end_lsn", s.end_lsn)?;
    out.set_item("records", s.records)?;
    out.set_item("in_flight", s.in_flight)?;
    let to_replay = PyList::empty(py);
    for p in &s.to_replay {
        let d = PyDict::new(py);
        d.set_item("path", path_str(py, &p.path)?)?;
        d.set_item("version", p.version.as_ref().map(|v| v.as_str()))?;
        d.set_item("in_flight", p.in_flight)?;
        to_replay.append(d)?;
    }
    out.set_item("to_replay", to_replay)?;
    let damage = match &s.damage {
        Some(d) => {
            let dd = PyDict::new(py);
            dd.set_item("lsn", d.lsn)?;
            dd.set_item("reason", &d.reason)?;
            dd.set_item("later_records", d.later_records)?;
            dd.into_any()
        }
        None => py.None().into_bound(py),
    };
    out.set_item("damage", damage)?;
    out.set_item("sync_failed", s.sync_failed)?;
    out.set_item("needs_repair", s.needs_repair())?;
    Ok(out)
}

/// What a checkpoint did, as plain data.
pub fn checkpoint<'py>(py: Python<'py>, r: &CheckpointReport) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("freed", r.freed)?;
    out.set_item("documents", r.documents)?;
    out.set_item("directories", r.directories)?;
    out.set_item("adopted", r.adopted)?;
    Ok(out)
}

/// What a transaction committed: a `TxReceipt` of `TxDocument`s.
pub fn tx_receipt<'py>(py: Python<'py>, r: &TxReceipt) -> PyResult<Bound<'py, PyAny>> {
    let docs = PyList::empty(py);
    for d in &r.documents {
        let kw = PyDict::new(py);
        kw.set_item("name", &d.name)?;
        kw.set_item("path", path_str(py, &d.path)?)?;
        kw.set_item("version", d.version.as_ref().map(|v| v.as_str()))?;
        kw.set_item("previous", d.previous.as_ref().map(|v| v.as_str()))?;
        docs.append(record(py, "TxDocument", &kw)?)?;
    }
    let kw = PyDict::new(py);
    kw.set_item("documents", docs.to_tuple())?;
    record(py, "TxReceipt", &kw)
}

/// `lock_timeout=` as a library option.
pub fn lock_timeout(seconds: f64) -> PyResult<Options> {
    Ok(Options::new().lock_timeout(timeout(seconds)?))
}

/// The keyword arguments every handle takes, as library options.
pub fn options(
    backups: usize,
    durability: &str,
    lock_timeout: f64,
    create_dirs: bool,
    fallback: bool,
    max_document_bytes: Option<u64>,
) -> PyResult<Options> {
    let durability: Durability = durability.parse().map_err(PyValueError::new_err)?;
    Ok(Options::new()
        .backups(backups)
        .durability(durability)
        .lock_timeout(timeout(lock_timeout)?)
        .create_dirs(create_dirs)
        .fallback(fallback)
        .max_document_bytes(max_document_bytes.unwrap_or(u64::MAX)))
}

fn timeout(seconds: f64) -> PyResult<Duration> {
    if seconds.is_nan() || seconds < 0.0 {
        return Err(PyValueError::new_err(format!(
            "lock_timeout must be a number of seconds >= 0 (math.inf waits as long as it takes), not {seconds}"
        )));
    }
    // math.inf, or more seconds than a Duration holds: wait as long as it takes.
    Ok(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
}
