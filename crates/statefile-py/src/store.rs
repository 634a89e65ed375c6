//! `statefile.Store`: a directory tree of documents, opened with crash recovery.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use serde_json::Value;
use statefile::TxOpError;
use statefile::patch::Limits;

use crate::convert::{to_json, to_py};
use crate::doc::Doc;
use crate::errors::{IntoPy, not_applicable, to_pyerr};
use crate::records::{self, path_str};
use crate::tx;

/// A directory of documents addressed by relative names. See `help(statefile)`.
#[pyclass(module = "statefile", frozen)]
pub struct Store {
    inner: Arc<statefile::Store>,
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
    #[pyo3(signature = (root, *, backups=1, durability="full", lock_timeout=30.0, create_dirs=true, fallback=false, max_document_bytes=None))]
    #[allow(clippy::too_many_arguments)] // one per keyword argument of the Python class
    fn new(
        py: Python<'_>,
        root: PathBuf,
        backups: usize,
        durability: &str,
        lock_timeout: f64,
        create_dirs: bool,
        fallback: bool,
        max_document_bytes: Option<u64>,
    ) -> PyResult<Store> {
        let opts = records::options(
            backups,
            durability,
            lock_timeout,
            create_dirs,
            fallback,
            max_document_bytes,
        )?;
        let inner = py
            .detach(|| statefile::Store::open_with(root, opts))
            .py_err(py)?;
        Ok(Store {
            inner: Arc::new(inner),
        })
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

    /// Run `fn(tx)` as one transaction over the documents it reads and writes through
    /// `tx` (a `Transaction`), and commit its writes together: after a crash at any
    /// moment, every document it wrote has its new version or none has. The store must
    /// be in journal mode (`statefile.enable_journal`) for a transaction that writes.
    /// Returns `(fn's result, TxReceipt)`.
    ///
    /// `fn` may be called more than once: documents are locked in one global order,
    /// and one that sorts before a document already locked makes the attempt start
    /// again with all of them locked first (the earlier call's result or exception is
    /// discarded). So `fn` must do nothing but compute and read and write through `tx`.
    /// If `fn` raises, nothing is written and its exception propagates. A call from
    /// inside `fn` that would wait for a lock the transaction holds (a `Doc` write,
    /// delete, restore or update of a document `tx` has touched, a nested transaction
    /// needing one) raises `Deadlock` at once: use `tx` for those documents.
    #[pyo3(signature = (r#fn, /), text_signature = "(self, fn, /)")]
    fn transaction<'py>(
        &self,
        py: Python<'py>,
        r#fn: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        if !r#fn.is_callable() {
            return Err(PyTypeError::new_err(
                "transaction() takes a function of the transaction (fn(tx))",
            ));
        }
        let (result, receipt) = tx::run(py, &self.inner, r#fn)?;
        PyTuple::new(
            py,
            [result.into_bound(py), records::tx_receipt(py, &receipt)?],
        )
    }

    /// Read the documents `names` under their locks, taken in one global order, so the
    /// values are one consistent state (no transaction half visible). A missing
    /// document gives `default`. Works with or without journal mode.
    #[pyo3(signature = (names, *, default=None))]
    fn read_tx<'py>(
        &self,
        py: Python<'py>,
        names: Vec<String>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let store = &self.inner;
        for name in &names {
            crate::held::refuse(py, &store.root().join(name), "a consistent read", None)?;
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let values = py.detach(|| store.read_tx::<Value>(&refs)).py_err(py)?;
        let default = default.unwrap_or_else(|| py.None().into_bound(py));
        let out = PyList::empty(py);
        for v in values {
            match v {
                Some(v) => out.append(to_py(py, &v)?)?,
                None => out.append(&default)?,
            }
        }
        Ok(out)
    }

    /// Apply a list of operations as one transaction, as `statefile tx` does:
    ///
    ///     store.apply([
    ///         {"op": "put", "doc": "a.json", "value": {"n": 1}},
    ///         {"op": "patch", "doc": "b.json", "merge": {"n": 2}},
    ///         {"op": "patch", "doc": "b.json", "json_patch": [{"op": "add", "path": "/m", "value": 3}]},
    ///         {"op": "append", "doc": "c.json", "pointer": "/items", "value": 4},
    ///         {"op": "delete", "doc": "d.json", "if_match": version},
    ///         {"op": "get", "doc": "e.json"},
    ///     ])
    ///
    /// Each may carry `"if_match": version` or `"if_none_match": "*"`, checked under
    /// the locks against the document as the operations before it left it (after a
    /// put, patch or append of it, the version of the bytes written, which the result
    /// reports for it; after a delete, it does not exist). Returns what `statefile tx` prints: one dict per operation with
    /// `doc`, `op`, `version` (after the transaction; None: deleted), and `value`
    /// (get) or `index` (append). Raises ValueError for a malformed list, Conflict
    /// naming the document whose precondition failed (and the operation's index), NotFound, NotApplicable for a
    /// patch or append that does not apply; nothing is written then.
    fn apply<'py>(&self, py: Python<'py>, ops: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let value = to_json(ops)?;
        let limits = Limits::new();
        let ops = statefile::parse_tx_ops(&value, &limits).map_err(PyValueError::new_err)?;
        drop(value);
        let store = &self.inner;
        for op in &ops {
            crate::held::refuse(py, &store.root().join(&op.doc), "a transaction", None)?;
        }
        let results = py
            .detach(|| store.apply_tx(&ops, &limits))
            .map_err(|e| match e {
                TxOpError::Store(e) => to_pyerr(py, &e),
                TxOpError::NotApplicable { ref doc, .. } => {
                    not_applicable(py, e.to_string(), &store.root().join(doc))
                }
                other => PyRuntimeError::new_err(other.to_string()),
            })?;
        let out: Vec<Value> = results.iter().map(statefile::TxOpResult::to_json).collect();
        to_py(py, &Value::Array(out))
    }
}
