//! Journal mode from Python: `enable_journal`, `disable_journal`, `checkpoint`,
//! `journal_status`, each a call of the library's `statefile::journal`.

use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use statefile::Options;
use statefile::journal::{self, JournalOptions};

use crate::errors::IntoPy;
use crate::records;

/// Turn on journal mode for the tree at `root` (as `statefile journal enable`): from
/// then on every statefile writer in it, in any process, commits through the journal
/// (one flush per commit) and `Store.transaction` can write. Returns the journal's
/// status; enabling a tree that already has one reports it and changes nothing.
#[pyfunction]
#[pyo3(signature = (root, *, capacity=journal::DEFAULT_CAPACITY, mode=0o600, checkpoint_age=60.0, swap=false))]
fn enable_journal<'py>(
    py: Python<'py>,
    root: PathBuf,
    capacity: u64,
    mode: u32,
    checkpoint_age: f64,
    swap: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let checkpoint_age = Duration::try_from_secs_f64(checkpoint_age).map_err(|_| {
        PyValueError::new_err(format!(
            "checkpoint_age must be a number of seconds >= 0, not {checkpoint_age}"
        ))
    })?;
    if mode > 0o7777 {
        return Err(PyValueError::new_err(format!(
            "mode must be permission bits (at most 0o7777), not {mode:#o}"
        )));
    }
    let jopts = JournalOptions {
        capacity,
        mode,
        checkpoint_age,
        swap,
    };
    let st = py
        .detach(|| journal::enable(&root, &Options::new(), jopts))
        .py_err(py)?;
    records::journal_status(py, &st)
}

/// Turn journal mode off for the tree at `root`: checkpoint everything, then remove
/// the journal. Returns what the checkpoint did.
#[pyfunction]
#[pyo3(signature = (root, *, lock_timeout=30.0))]
fn disable_journal<'py>(
    py: Python<'py>,
    root: PathBuf,
    lock_timeout: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = records::lock_timeout(lock_timeout)?;
    let r = py.detach(|| journal::disable(&root, &opts)).py_err(py)?;
    records::checkpoint(py, &r)
}

/// Make every document the journal at `root` covers durable in its own file, and
/// reuse the journal's space. Writers go on meanwhile.
#[pyfunction]
#[pyo3(signature = (root, *, lock_timeout=30.0))]
fn checkpoint<'py>(
    py: Python<'py>,
    root: PathBuf,
    lock_timeout: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = records::lock_timeout(lock_timeout)?;
    let r = py.detach(|| journal::checkpoint(&root, &opts)).py_err(py)?;
    records::checkpoint(py, &r)
}

/// The state of the journal governing `path` (None: not in journal mode).
#[pyfunction]
fn journal_status<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Option<Bound<'py, PyDict>>> {
    let st = py
        .detach(|| journal::status(&path, &Options::new()))
        .py_err(py)?;
    st.map(|s| records::journal_status(py, &s)).transpose()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(enable_journal, m)?)?;
    m.add_function(wrap_pyfunction!(disable_journal, m)?)?;
    m.add_function(wrap_pyfunction!(checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(journal_status, m)?)?;
    Ok(())
}
