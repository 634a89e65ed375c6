//! One-call helpers: write/read a JSON file, and check or repair a file or tree.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{to_json, to_py};
use crate::errors::IntoPy;
use crate::records;

/// Write `obj` as JSON to `path` atomically and durably (one backup by default).
#[pyfunction]
#[pyo3(signature = (path, obj, *, backups=1, durability="full", create_dirs=false))]
fn write_json<'py>(
    py: Python<'py>,
    path: PathBuf,
    obj: &Bound<'py, PyAny>,
    backups: usize,
    durability: &str,
    create_dirs: bool,
) -> PyResult<Bound<'py, PyAny>> {
    crate::held::refuse(py, &path, "a write", None)?;
    let value = to_json(obj)?;
    let opts = records::options(backups, durability, 30.0, create_dirs, false, None)?;
    let doc = statefile::Doc::<serde_json::Value>::open_with(path, opts).py_err(py)?;
    let r = py.detach(|| doc.write(&value)).py_err(py)?;
    records::receipt(py, &r)
}

/// Read and parse the JSON document at `path` (NotFound if it does not exist).
#[pyfunction]
fn _read_json<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
    let doc = statefile::Doc::<serde_json::Value>::open(path).py_err(py)?;
    let v = py.detach(|| doc.read_versioned()).py_err(py)?;
    to_py(py, &v.value)
}

/// Check a document or a directory tree without changing anything.
#[pyfunction]
fn verify<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let r = py.detach(|| statefile::verify(path)).py_err(py)?;
    records::report(py, &r)
}

/// Repair a document or a directory tree (as `statefile recover`).
#[pyfunction]
fn recover<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let r = py.detach(|| statefile::recover(path)).py_err(py)?;
    records::report(py, &r)
}

/// `statefile::replace_file`: put the finished file `src` in place of `dst`.
#[pyfunction]
fn _replace_file(py: Python<'_>, src: PathBuf, dst: PathBuf) -> PyResult<()> {
    // In a journal's tree the replace takes the document's lock: from inside an update
    // of it on this thread, that would wait for itself.
    crate::held::refuse(py, &dst, "an atomic replace", None)?;
    py.detach(|| statefile::replace_file(src, dst, &statefile::Options::new()))
        .py_err(py)
}

/// `statefile::move_file`: as `_replace_file`, failing if `dst` exists.
#[pyfunction]
fn _move_file(py: Python<'_>, src: PathBuf, dst: PathBuf) -> PyResult<()> {
    crate::held::refuse(py, &dst, "an atomic move", None)?;
    py.detach(|| statefile::move_file(src, dst, &statefile::Options::new()))
        .py_err(py)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(write_json, m)?)?;
    m.add_function(wrap_pyfunction!(_read_json, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(recover, m)?)?;
    m.add_function(wrap_pyfunction!(_replace_file, m)?)?;
    m.add_function(wrap_pyfunction!(_move_file, m)?)?;
    Ok(())
}
