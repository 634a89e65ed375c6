//! The library's errors as Python exceptions: one class per [`ErrorKind`], defined in
//! `statefile/_types.py` so that they can also derive from the standard exceptions a
//! Python program already catches (`FileNotFoundError`, `PermissionError`,
//! `TimeoutError`, `ValueError`, `OSError`).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};
use statefile::{Error, ErrorKind};

/// The Python class for `kind`.
fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "NotFound",
        ErrorKind::Corrupt => "Corrupt",
        ErrorKind::Conflict => "Conflict",
        ErrorKind::LockTimeout => "LockTimeout",
        ErrorKind::NoSpace => "NoSpace",
        ErrorKind::PermissionDenied => "PermissionDenied",
        ErrorKind::InvalidName => "InvalidName",
        ErrorKind::Durability => "Durability",
        ErrorKind::Serialize => "SerializeError",
        ErrorKind::Io => "IoError",
        // A kind added to the library later: the base class still says what happened.
        _ => "Error",
    }
}

/// The errno a kind stands for when the library has no OS error to show.
fn default_errno(kind: ErrorKind) -> Option<i32> {
    match kind {
        ErrorKind::NotFound => Some(2),      // ENOENT
        ErrorKind::NoSpace => Some(28),      // ENOSPC
        ErrorKind::LockTimeout => Some(110), // ETIMEDOUT, as TimeoutError has
        ErrorKind::Durability => Some(5),    // EIO
        _ => None,
    }
}

fn types(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static MODULE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || {
            py.import("statefile._types").map(|m| m.into_any().unbind())
        })
        .map(|m| m.bind(py))
}

/// A class from `statefile._types`.
pub fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(types(py)?.getattr(name)?.cast_into::<PyType>()?)
}

/// Turn a library error into the matching Python exception.
pub fn to_pyerr(py: Python<'_>, e: &Error) -> PyErr {
    build(py, e).unwrap_or_else(|failure| failure)
}

fn build(py: Python<'_>, e: &Error) -> Result<PyErr, PyErr> {
    let cls = class(py, class_name(e.kind()))?;
    let kw = PyDict::new(py);
    kw.set_item("kind", e.kind().as_str())?;
    kw.set_item("path", e.path().map(std::path::Path::as_os_str))?;
    kw.set_item("version", e.version().map(|v| v.as_str()))?;
    let errno = e
        .io_error()
        .and_then(std::io::Error::raw_os_error)
        .or_else(|| default_errno(e.kind()));
    kw.set_item("errno", errno)?;
    if let Some(c) = e.corrupt_info() {
        kw.set_item("line", c.line)?;
        kw.set_item("column", c.column)?;
        kw.set_item("reason", &c.reason)?;
        kw.set_item("backup_exists", c.backup_exists)?;
    }
    let exc = cls.call((e.to_string(),), Some(&kw))?;
    if let Some(io) = e.io_error() {
        let cause =
            pyo3::exceptions::PyOSError::new_err((io.raw_os_error().unwrap_or(0), io.to_string()));
        exc.setattr("__cause__", cause.value(py))?;
    }
    Ok(PyErr::from_value(exc))
}

/// `NotFound` for `path`, raised by the binding itself (the library answered "missing"
/// where the caller asked for a value).
pub fn not_found(py: Python<'_>, message: String, path: &std::path::Path) -> PyErr {
    raise(
        py,
        "NotFound",
        message,
        path,
        default_errno(ErrorKind::NotFound),
    )
}

/// `NotApplicable`: a patch or append of `statefile tx`'s operations that does not
/// apply to the document at `path`.
pub fn not_applicable(py: Python<'_>, message: String, path: &std::path::Path) -> PyErr {
    raise(py, "NotApplicable", message, path, None)
}

/// `Deadlock`: a call from inside a transaction's function that would wait for a lock
/// that transaction holds (see `held.rs`).
pub fn deadlock(py: Python<'_>, message: String, path: &std::path::Path) -> PyErr {
    raise(py, "Deadlock", message, path, None)
}

fn raise(
    py: Python<'_>,
    class_name: &str,
    message: String,
    path: &std::path::Path,
    errno: Option<i32>,
) -> PyErr {
    let built = (|| {
        let kw = PyDict::new(py);
        kw.set_item("path", path.as_os_str())?;
        kw.set_item("errno", errno)?;
        let exc = class(py, class_name)?.call((message,), Some(&kw))?;
        Ok(PyErr::from_value(exc))
    })();
    built.unwrap_or_else(|failure: PyErr| failure)
}

/// Map a library result into a Python one.
pub trait IntoPy<T> {
    /// The value, or the error as its Python exception.
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Error> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_pyerr(py, &e))
    }
}

/// Refuse what an `async def` returns when a function of ours calls it: the un-awaited
/// coroutine never ran, so its changes would silently be lost. `what` names the call.
/// The coroutine is closed (no "never awaited" warning); the caller treats this as the
/// function raising, so nothing is written.
pub(crate) fn refuse_coroutine(
    py: Python<'_>,
    result: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<()> {
    // Most functions return None: no call into Python for it.
    if result.is_none() {
        return Ok(());
    }
    static ISCOROUTINE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let iscoroutine = ISCOROUTINE.get_or_try_init(py, || {
        py.import("inspect")?
            .getattr("iscoroutine")
            .map(Bound::unbind)
    })?;
    if !iscoroutine.bind(py).call1((result,))?.is_truthy()? {
        return Ok(());
    }
    result.call_method0("close")?;
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "the function given to {what} is a coroutine function (async def): it is called \
         synchronously under the locks, so nothing it would do after an await can run there. \
         Pass a plain function; from async code, run the call in a thread \
         (await asyncio.to_thread(...)). Nothing was written"
    )))
}
