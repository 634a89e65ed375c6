//! `statefile.Doc`: one JSON document, every operation a call into the library with
//! the GIL released while it touches the disk, syncs or waits for the lock.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use serde_json::Value;
use statefile::{BackupRef, Error, Version};

use crate::convert::{encode, to_json, to_py};
use crate::errors::{IntoPy, to_pyerr};
use crate::records::{self, path_str};
use crate::update::Update;

/// A JSON document on disk. See the package documentation (`help(statefile)`).
#[pyclass(module = "statefile", frozen)]
pub struct Doc {
    pub(crate) inner: Arc<statefile::Doc<Value>>,
    /// The same document as `Working` values, for `update(fn)`.
    working: statefile::Doc<Working>,
}

/// The value `update(fn)` works on: a JSON value (the document as read, or the
/// library's undo of a failed change read back), or what the last change of the batch
/// left: its JSON text in the document's format ([`encode`], checked as every value
/// written is) and, while they may stand in for that text read back
/// (`Encoded::reusable`), the Python objects it was made from. The next change of the
/// same batch takes those objects instead of converting the whole document to Python
/// again; the library takes the text as it is, for its undo and for the write, without
/// walking Python objects or taking the GIL.
pub(crate) enum Working {
    Value(Value),
    Encoded {
        text: String,
        objects: Option<Py<PyAny>>,
    },
}

impl serde::Serialize for Working {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Working::Value(v) => v.serialize(s),
            Working::Encoded { text, .. } => Raw(text).serialize(s),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Working {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Working, D::Error> {
        Value::deserialize(d).map(Working::Value)
    }
}

impl Working {
    /// The value as Python objects for a change: those the last change left, or fresh
    /// ones.
    fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        match self {
            Working::Value(value) => to_py(py, &value),
            Working::Encoded {
                objects: Some(objects),
                ..
            } => Ok(objects.into_bound(py)),
            Working::Encoded {
                text,
                objects: None,
            } => {
                let value = serde_json::from_str::<Value>(&text).map_err(|e| {
                    PyValueError::new_err(format!(
                        "statefile: cannot read back a change's JSON: {e}"
                    ))
                })?;
                to_py(py, &value)
            }
        }
    }
}

/// serde_json's name for JSON text it writes as it is (its `RawValue`).
const RAW_VALUE: &str = "$serde_json::private::RawValue";

/// JSON text that serde_json's serializer writes as it is (the protocol of its
/// `RawValue`, a struct of one string field, both named by its token), without the
/// validating parse `RawValue::from_string` makes: the text is [`encode`]'s, made by
/// serde_json from checked objects. Any other serializer sees a struct holding a
/// string (the library's check of a value passes it as one level of nesting).
struct Raw<'a>(&'a str);

impl serde::Serialize for Raw<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut raw = s.serialize_struct(RAW_VALUE, 1)?;
        raw.serialize_field(RAW_VALUE, self.0)?;
        raw.end()
    }
}

impl std::fmt::Debug for Doc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doc")
            .field("path", &self.inner.path())
            .finish()
    }
}

impl Doc {
    /// Refuse `what` (a call that takes the document's lock) from inside a
    /// transaction's function that holds that lock (see `held.rs`).
    fn refuse_held(&self, py: Python<'_>, what: &str) -> PyResult<()> {
        crate::held::refuse(py, self.inner.path(), what, None)
    }

    pub fn wrap(inner: statefile::Doc<Value>) -> Doc {
        Doc {
            working: inner.typed(),
            inner: Arc::new(inner),
        }
    }
}

/// What `update` starts from when the document does not exist.
pub enum Default {
    /// A factory such as `dict`, called under the lock (only when needed).
    Factory(Py<PyAny>),
    /// A value, checked before anything is touched and copied for each use (so the
    /// caller's object is never mutated).
    Value(Value),
}

impl Default {
    /// The starting value, as fresh Python objects.
    pub fn make<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Default::Factory(f) => f.bind(py).call0(),
            Default::Value(v) => to_py(py, v),
        }
    }
}

/// The `default=` keyword of `update`: absent, a value or a factory.
pub fn default_kwarg(
    kwargs: Option<&Bound<'_, PyDict>>,
    method: &str,
) -> PyResult<Option<Default>> {
    let Some(kw) = kwargs else {
        return Ok(None);
    };
    let mut default = None;
    for (k, v) in kw.iter() {
        match k
            .cast::<PyString>()
            .map(|s| s.to_string_lossy().into_owned())
        {
            Ok(name) if name == "default" => {
                default = Some(if v.is_callable() {
                    Default::Factory(v.unbind())
                } else {
                    Default::Value(to_json(&v)?)
                });
            }
            Ok(name) => {
                return Err(PyTypeError::new_err(format!(
                    "{method}() got an unexpected keyword argument '{name}'"
                )));
            }
            Err(_) => return Err(PyTypeError::new_err("keywords must be strings")),
        }
    }
    Ok(default)
}

fn backup_ref(which: Option<&Bound<'_, PyAny>>) -> PyResult<BackupRef> {
    let Some(w) = which else {
        return Ok(BackupRef::NewestGood);
    };
    if w.is_none() {
        return Ok(BackupRef::NewestGood);
    }
    if let Ok(s) = w.cast::<PyString>() {
        // A version here only names the backup (it is compared with nothing), so a weak
        // ETag names it too, as for the CLI's and the server's `from`.
        return Version::parse_weak(&s.to_string_lossy())
            .map(BackupRef::Version)
            .map_err(|e| Error::new(statefile::ErrorKind::InvalidName, e.to_string()))
            .py_err(w.py());
    }
    match w.extract::<usize>() {
        Ok(n) if n >= 1 => Ok(BackupRef::Number(n)),
        _ => Err(PyValueError::new_err(
            "restore() takes a backup number (1 = newest), a version string, or None for the newest backup that parses",
        )),
    }
}

/// A version given by the caller to compare with (`write_if`, `delete(if_version=)`,
/// `expect`); a malformed one, or a weak ETag (`W/"…"`, which never matches, as in an
/// HTTP If-Match), is `InvalidName` (a `ValueError`) naming it and why.
pub(crate) fn version_arg(py: Python<'_>, v: &str) -> PyResult<Version> {
    Version::parse(v)
        .map_err(|e| Error::new(statefile::ErrorKind::InvalidName, e.to_string()))
        .py_err(py)
}

/// Why an update's closure gave up; nothing is written.
pub(crate) enum Abort {
    /// The library refused (or the value read cannot be handed over exactly).
    Library(Error),
    /// The Python function raised, or its result is not JSON: that exception.
    Python(PyErr),
}

impl From<Error> for Abort {
    fn from(e: Error) -> Self {
        Abort::Library(e)
    }
}

#[pymethods]
impl Doc {
    #[new]
    #[pyo3(signature = (path, *, backups=1, durability="full", lock_timeout=30.0, create_dirs=false, fallback=false, max_document_bytes=None))]
    #[allow(clippy::too_many_arguments)] // one per keyword argument of the Python class
    fn new(
        py: Python<'_>,
        path: PathBuf,
        backups: usize,
        durability: &str,
        lock_timeout: f64,
        create_dirs: bool,
        fallback: bool,
        max_document_bytes: Option<u64>,
    ) -> PyResult<Doc> {
        let opts = records::options(
            backups,
            durability,
            lock_timeout,
            create_dirs,
            fallback,
            max_document_bytes,
        )?;
        let inner = statefile::Doc::open_with(path, opts).py_err(py)?;
        Ok(Doc::wrap(inner))
    }

    /// The path this handle was opened with.
    #[getter]
    fn path<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        path_str(py, self.inner.path())
    }

    fn __repr__(&self) -> String {
        format!("statefile.Doc({:?})", self.inner.path())
    }

    fn __fspath__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        path_str(py, self.inner.path())
    }

    /// The document's value. Raises NotFound, Corrupt (unless fallback=True and a
    /// backup parses), or an OS-level error.
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let doc = &self.inner;
        let v = py.detach(|| doc.read_versioned()).py_err(py)?;
        to_py(py, &v.value)
    }

    /// The value and the version it was read at (a `Versioned`: `value, version = ...`).
    fn read_versioned<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let doc = &self.inner;
        let v = py.detach(|| doc.read_versioned()).py_err(py)?;
        records::versioned(py, &v)
    }

    /// The value, or `default` (returned as given) if the document does not exist.
    fn read_or<'py>(
        &self,
        py: Python<'py>,
        default: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let doc = &self.inner;
        match py.detach(|| doc.read_versioned()) {
            Ok(v) => to_py(py, &v.value),
            Err(e) if e.kind() == statefile::ErrorKind::NotFound => Ok(default),
            Err(e) => Err(to_pyerr(py, &e)),
        }
    }

    /// As read(), but parsing only when the file changed since this handle last read it
    /// (validated by the file's identity and timestamps: a write by any process is seen).
    fn read_cached<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let doc = &self.inner;
        let v = py.detach(|| doc.read_cached()).py_err(py)?;
        to_py(py, &v.value)
    }

    /// Whether the document exists.
    fn exists(&self, py: Python<'_>) -> PyResult<bool> {
        let doc = &self.inner;
        py.detach(|| doc.exists()).py_err(py)
    }

    /// The current version (the SHA-256 of the file), without parsing it.
    fn version(&self, py: Python<'_>) -> PyResult<String> {
        let doc = &self.inner;
        let v = py.detach(|| doc.version()).py_err(py)?;
        Ok(v.as_str().to_owned())
    }

    /// How many calls of this process wait for the document's batch in progress to
    /// finish (group commit; not counting the calls in that batch): for monitoring.
    fn queued(&self, py: Python<'_>) -> PyResult<usize> {
        let doc = &self.inner;
        py.detach(|| doc.queued()).py_err(py)
    }

    /// Replace the document with `obj`, atomically and durably, under its lock.
    fn write<'py>(&self, py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.refuse_held(py, "a write")?;
        let value = to_json(obj)?;
        let doc = &self.inner;
        let r = py.detach(|| doc.write(&value)).py_err(py)?;
        records::receipt(py, &r)
    }

    /// Compare-and-swap: write `obj` only if the document is still at `version` (as
    /// `version()` returns it, or its ETag in double quotes). A weak ETag (`W/"..."`)
    /// never matches, as in an HTTP If-Match: ValueError (InvalidName).
    fn write_if<'py>(
        &self,
        py: Python<'py>,
        version: &str,
        obj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.refuse_held(py, "a write")?;
        let expected = version_arg(py, version)?;
        let value = to_json(obj)?;
        let doc = &self.inner;
        let r = py.detach(|| doc.write_if(&expected, &value)).py_err(py)?;
        records::receipt(py, &r)
    }

    /// Write `obj` only if the document does not exist yet (Conflict otherwise).
    fn create<'py>(&self, py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.refuse_held(py, "a write")?;
        let value = to_json(obj)?;
        let doc = &self.inner;
        let r = py.detach(|| doc.create(&value)).py_err(py)?;
        records::receipt(py, &r)
    }

    /// Delete the document under its lock (moved to its backup, so restore() undoes it);
    /// with `if_version`, only if it is still at that version (as `write_if` takes it).
    #[pyo3(signature = (*, if_version=None))]
    fn delete<'py>(
        &self,
        py: Python<'py>,
        if_version: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.refuse_held(py, "a delete")?;
        let doc = &self.inner;
        let d = match if_version {
            Some(v) => {
                let expected = version_arg(py, v)?;
                py.detach(|| doc.delete_if(&expected))
            }
            None => py.detach(|| doc.delete()),
        }
        .py_err(py)?;
        records::deleted(py, &d)
    }

    /// The kept previous versions, newest first.
    fn backups<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyList>> {
        let doc = &self.inner;
        let list = py.detach(|| doc.backups()).py_err(py)?;
        records::backups(py, &list)
    }

    /// Replace the document with a backup: by number (1 = newest), by version, or
    /// (None) the newest that parses. Itself an atomic write, so it can be undone.
    #[pyo3(signature = (which=None))]
    fn restore<'py>(
        &self,
        py: Python<'py>,
        which: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.refuse_held(py, "a restore")?;
        let which = backup_ref(which)?;
        let doc = &self.inner;
        let r = py.detach(|| doc.restore(&which)).py_err(py)?;
        records::receipt(py, &r)
    }

    /// Locked read-modify-write, in two forms:
    ///
    ///     doc.update(fn)                       # fn(data) mutates data; returns fn's result
    ///     with doc.update(default=dict) as data:
    ///         ...                              # written on a clean exit, discarded on an exception
    ///
    /// `default` (a value, or a factory such as `dict`) is used when the document does
    /// not exist; without it a missing document raises NotFound.
    #[pyo3(signature = (r#fn=None, /, **kwargs), text_signature = "(self, fn=None, /, *, default=...)")]
    fn update<'py>(
        &self,
        py: Python<'py>,
        r#fn: Option<Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let default = default_kwarg(kwargs, "update")?;
        match r#fn {
            None => Ok(Bound::new(py, Update::new(self.inner.clone(), default))?.into_any()),
            Some(f) => {
                if !f.is_callable() {
                    return Err(PyTypeError::new_err(
                        "update() takes a function of the document's value, or no argument for a `with` block",
                    ));
                }
                self.refuse_held(py, "an update")?;
                update_with(py, &self.working, f.unbind(), default)
            }
        }
    }
}

/// The function form of update: `f` runs under the document's lock, on the value read
/// under it; its changes are written when it returns, nothing when it raises.
fn update_with<'py>(
    py: Python<'py>,
    doc: &statefile::Doc<Working>,
    f: Py<PyAny>,
    default: Option<Default>,
) -> PyResult<Bound<'py, PyAny>> {
    let missing = AtomicBool::new(false);
    let format = doc.options().get_format();
    let pid = std::process::id();
    // While `f` runs, this thread holds the document's lock (see held.rs).
    let held = crate::held::Held::document(doc.path());
    let body = |v: &mut Working| -> Result<Py<PyAny>, Abort> {
        Python::attach(|py| {
            // Every piece of Python code run under the lock counts as the update's: the
            // default factory, `f`, and what converting the value back runs (a Decimal
            // subclass's `is_finite`, a list subclass's `__iter__`).
            let _running = crate::held::Running::enter(&held);
            let given = std::mem::replace(v, Working::Value(Value::Null));
            // A change's text is about as long as the last one's.
            let size = match &given {
                Working::Encoded { text, .. } => text.len() + text.len() / 8 + 64,
                Working::Value(_) => 0,
            };
            let data = match (&default, missing.load(Ordering::SeqCst)) {
                (Some(d), true) => d.make(py)?,
                _ => given.into_py(py)?,
            };
            let result = f.bind(py).call1((&data,))?;
            if std::process::id() != pid {
                // A child forked under the lock (in `f` or the factory): the parent
                // holds the lock and writes; the child writes nothing.
                return Err(PyRuntimeError::new_err(format!(
                    "statefile: this update was started in process {pid} and cannot be \
                     finished in a child forked inside it (the lock stays with the parent): \
                     nothing was written from this process"
                )));
            }
            crate::errors::refuse_coroutine(py, &result, "doc.update()")?;
            let encoded = encode(&data, format, size)?;
            *v = Working::Encoded {
                text: encoded.text,
                objects: encoded.reusable.then(|| data.unbind()),
            };
            Ok(result.unbind())
        })
        .map_err(Abort::Python)
    };
    let result = py.detach(|| match &default {
        Some(_) => doc.update_or_insert_with(
            || {
                missing.store(true, Ordering::SeqCst);
                Working::Value(Value::Null)
            },
            body,
        ),
        None => doc.update(body),
    });
    match result {
        Ok((r, _)) => Ok(r.into_bound(py)),
        Err(Abort::Python(e)) => Err(e),
        Err(Abort::Library(e)) => Err(to_pyerr(py, &e)),
    }
}
