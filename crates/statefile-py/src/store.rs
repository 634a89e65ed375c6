//! `statefile.Store`: a directory tree of documents, opened with crash recovery.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::doc::Doc;
use crate::errors::IntoPy;
use crate::records::{self, path_str};

/// A directory of documents addressed by relative names. See `help(statefile)`.
#[pyclass(module = "statefile", frozen)]
pub struct Store {
    inner: statefile::Store,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root())
            .finish()
    }
}

#[pymethods]
impl Store {
    #[new]
    #[pyo3(signature = (root, *, backups=1, durability="full", lock_timeout=30.0, create_dirs=true, fallback=false))]
    fn new(
        py: Python<'_>,
        root: PathBuf,
        backups: usize,
        durability: &str,
        lock_timeout: f64,
        create_dirs: bool,
        fallback: bool,
    ) -> PyResult<Store> {
        let opts = records::options(backups, durability, lock_timeout, create_dirs, fallback)?;
        let inner = py
            .detach(|| statefile::Store::open_with(root, opts))
            .py_err(py)?;
        Ok(Store { inner })
    }

    /// The store's root directory (canonical).
    #[getter]
    fn root<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        path_str(py, self.inner.root())
    }

    /// What recovery found (and cleaned) when the store was opened.
    #[getter]
    fn recovery<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        records::report(py, self.inner.recovery())
    }

    fn __repr__(&self) -> String {
        format!("statefile.Store({:?})", self.inner.root())
    }

    /// A handle to the document `name` (e.g. "view/resData.json").
    fn doc(&self, py: Python<'_>, name: &str) -> PyResult<Doc> {
        Ok(Doc::wrap(self.inner.doc(name).py_err(py)?))
    }

    /// The names of the documents whose name starts with `prefix`, sorted.
    #[pyo3(signature = (prefix=""))]
    fn list<'py>(&self, py: Python<'py>, prefix: &str) -> PyResult<Bound<'py, PyList>> {
        let store = &self.inner;
        let names = py.detach(|| store.list(prefix)).py_err(py)?;
        PyList::new(py, names)
    }

    /// Check every document without changing anything; a report as plain data.
    fn verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let store = &self.inner;
        let r = py.detach(|| store.verify()).py_err(py)?;
        records::report(py, &r)
    }

    /// Repair: remove dead writers' temp files, restore damaged documents from their
    /// newest good backup, move damaged backups aside. A report as plain data.
    fn recover<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let store = &self.inner;
        let r = py.detach(|| store.recover()).py_err(py)?;
        records::report(py, &r)
    }
}
