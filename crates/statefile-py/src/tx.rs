//! `store.transaction(fn)`: the library's multi-document transaction, with a Python
//! function as its body.
//!
//! The library calls the transaction's closure with a `&mut Transaction` that lives
//! only for that call, and a Python object cannot borrow it. So, as for `with
//! doc.update()`, the library's own `Store::transaction` runs in a helper thread, and
//! the Python thread talks to it over channels:
//!
//! 1. The helper calls `Store::transaction`. Each time the library calls its closure
//!    (an attempt; the library starts again when a document sorts before one already
//!    locked), the closure says `Attempt` and serves requests.
//! 2. On `Attempt`, the Python thread calls `fn(tx)` with a fresh `Transaction`. Each
//!    of its methods is one request (read, version, expect, write, delete) answered by
//!    the helper through the library's `Transaction`, which takes the document's lock
//!    on first use; the Python thread waits with the GIL released.
//! 3. When `fn` returns, the Python thread says `Finish(true)` and the closure returns
//!    `Ok`: the library commits, or starts again (then back to 2, `fn`'s result
//!    discarded). When `fn` raises, `Finish(false)`: the closure fails and nothing is
//!    written, unless the library starts again, in which case `fn` runs again and its
//!    exception is discarded. A `BaseException` that is not an `Exception` (Ctrl-C,
//!    `SystemExit`) propagates at once, without waiting for the helper, which then
//!    writes nothing.
//! 4. `Done` carries the library's outcome: the receipt, or its error.
//!
//! The helper never touches Python objects. A `Transaction` object is dead once its
//! attempt ends: it gives up its end of the channels, so a `tx` kept by `fn` can
//! neither use nor hold up the helper.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use pyo3::exceptions::{PyException, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::Value;
use statefile::{Error, ErrorKind, MAX_TX_OPS, TxReceipt, Version};

use crate::convert::{to_json, to_py};
use crate::doc::version_arg;
use crate::errors::{IntoPy, not_found, to_pyerr};
use crate::held::{self, Held, Running};
use crate::records::path_str;

/// One call on the transaction, for the helper to make.
enum Request {
    Read(String),
    Version(String),
    Expect(String, Option<Version>),
    Write(String, Value),
    Delete(String),
}

impl Request {
    fn name(&self) -> &str {
        match self {
            Request::Read(n)
            | Request::Version(n)
            | Request::Expect(n, _)
            | Request::Write(n, _)
            | Request::Delete(n) => n,
        }
    }
}

enum Answer {
    Value(Option<Value>),
    Version(Option<Version>),
    Done,
}

/// From the Python thread to the helper.
enum ToHelper {
    /// A request, numbered so that an answer to an interrupted one is recognized.
    Op(u64, Request),
    /// `fn` returned (`true`: commit) or raised (`false`: write nothing).
    Finish(bool),
}

/// From the helper to the Python thread.
enum FromHelper {
    /// The library called the closure: call `fn`.
    Attempt,
    /// The answer to request number `.0`.
    Reply(u64, Result<Answer, Error>),
    /// The transaction is over: the receipt, the library's error, or (`Err(None)`)
    /// nothing written because `fn` raised.
    Done(Result<TxReceipt, Option<Error>>),
}

/// Why the helper's closure gave up.
enum Abort {
    Library(Error),
    /// `fn` raised, or the Python side is gone: write nothing.
    Python,
}

impl From<Error> for Abort {
    fn from(e: Error) -> Self {
        Abort::Library(e)
    }
}

/// The Python thread's ends of the channels.
struct Link {
    to: Mutex<Sender<ToHelper>>,
    from: Mutex<Receiver<FromHelper>>,
    next: AtomicU64,
}

impl Link {
    fn send(&self, m: ToHelper) -> bool {
        self.to
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(m)
            .is_ok()
    }

    /// The helper's next message, waited for with the GIL released; while
    /// `interruptible`, signals are checked now and then (Ctrl-C during a lock wait).
    fn next(&self, py: Python<'_>, interruptible: bool) -> PyResult<FromHelper> {
        let recv = |wait: Option<Duration>| {
            let rx = self.from.lock().unwrap_or_else(PoisonError::into_inner);
            match wait {
                Some(d) => rx.recv_timeout(d),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            }
        };
        loop {
            let wait = interruptible.then(|| Duration::from_millis(50));
            match py.detach(|| recv(wait)) {
                Ok(m) => return Ok(m),
                Err(RecvTimeoutError::Timeout) => py.check_signals()?,
                Err(RecvTimeoutError::Disconnected) => return Err(lost()),
            }
        }
    }
}

fn lost() -> PyErr {
    PyRuntimeError::new_err("statefile: the transaction's helper thread stopped")
}

/// Said in a child forked inside `fn`: the transaction's locks and its helper thread
/// (which would answer, and commit) stayed in the parent, and waiting for that thread
/// here would wait for ever.
fn forked(pid: u32) -> PyErr {
    PyRuntimeError::new_err(format!(
        "statefile: this transaction was started in process {pid} and cannot be used or \
         finished in a child forked inside its function (its locks and its helper thread \
         stay with the parent, which commits it)"
    ))
}

fn out_of_turn() -> PyErr {
    PyRuntimeError::new_err("statefile: the transaction's helper thread answered out of turn")
}

fn serve(t: &mut statefile::Transaction<'_>, r: Request) -> Result<Answer, Error> {
    match r {
        Request::Read(name) => t.read::<Value>(&name).map(Answer::Value),
        Request::Version(name) => t.version(&name).map(Answer::Version),
        Request::Expect(name, v) => t.expect(&name, v.as_ref()).map(|()| Answer::Done),
        Request::Write(name, v) => t.write(&name, &v).map(|()| Answer::Done),
        Request::Delete(name) => t.delete(&name).map(|()| Answer::Done),
    }
}

fn helper(store: Arc<statefile::Store>, requests: Receiver<ToHelper>, out: Sender<FromHelper>) {
    let result = store.transaction(|t| -> Result<(), Abort> {
        if out.send(FromHelper::Attempt).is_err() {
            return Err(Abort::Python);
        }
        loop {
            match requests.recv() {
                Ok(ToHelper::Op(n, r)) => {
                    if out.send(FromHelper::Reply(n, serve(t, r))).is_err() {
                        return Err(Abort::Python);
                    }
                }
                Ok(ToHelper::Finish(true)) => return Ok(()),
                Ok(ToHelper::Finish(false)) | Err(_) => return Err(Abort::Python),
            }
        }
    });
    let done = match result {
        Ok(((), receipt)) => Ok(receipt),
        Err(Abort::Library(e)) => Err(Some(e)),
        Err(Abort::Python) => Err(None),
    };
    // Nobody listening means the Python side gave up (interrupted): nothing to tell.
    let _ = out.send(FromHelper::Done(done));
}

/// Run `f` as one transaction of `store`: `(f's result, the receipt)`.
pub fn run(
    py: Python<'_>,
    store: &Arc<statefile::Store>,
    f: &Bound<'_, PyAny>,
) -> PyResult<(Py<PyAny>, TxReceipt)> {
    let pid = std::process::id();
    let (to, requests) = mpsc::channel();
    let (out, from) = mpsc::channel();
    let link = Arc::new(Link {
        to: Mutex::new(to),
        from: Mutex::new(from),
        next: AtomicU64::new(0),
    });
    let s = store.clone();
    let helper = std::thread::Builder::new()
        .name("statefile-tx".into())
        .spawn(move || helper(s, requests, out))
        .map_err(|e| {
            PyRuntimeError::new_err(format!("cannot start the transaction's helper thread: {e}"))
        })?;
    let mut outcome: Option<PyResult<Py<PyAny>>> = None;
    // Once `fn` returned, the helper may be committing: wait for its answer whatever
    // happens, as a write call does. Before that, Ctrl-C gives up (nothing written).
    let mut committing = false;
    loop {
        match link.next(py, !committing)? {
            FromHelper::Attempt => {
                let held = Held::new(store.root().to_path_buf());
                let tx = Bound::new(
                    py,
                    Transaction {
                        link: Mutex::new(Some(link.clone())),
                        thread: std::thread::current().id(),
                        pid,
                        root: store.root().to_path_buf(),
                        touched: Mutex::new(HashSet::new()),
                        held: held.clone(),
                    },
                )?;
                let running = Running::enter(&held);
                let r = f
                    .call1((&tx,))
                    .and_then(|r| {
                        crate::errors::refuse_coroutine(py, &r, "store.transaction()")?;
                        Ok(r)
                    })
                    .map(Bound::unbind);
                drop(running);
                tx.get().close();
                if std::process::id() != pid {
                    return Err(forked(pid));
                }
                committing = r.is_ok();
                if !link.send(ToHelper::Finish(committing)) {
                    return Err(lost());
                }
                match r {
                    // Ctrl-C or SystemExit (not an Exception): leave at once, without
                    // waiting for a request still at work (a lock wait). The helper
                    // finds `Finish(false)` next, or cannot announce a restart: either
                    // way it writes nothing, and its locks go when it ends.
                    Err(e) if !e.is_instance_of::<PyException>(py) => return Err(e),
                    r => outcome = Some(r),
                }
            }
            // An answer to a request that an interrupt gave up on.
            FromHelper::Reply(..) => {}
            FromHelper::Done(done) => {
                let _ = py.detach(|| helper.join());
                return match (done, outcome) {
                    (Ok(receipt), Some(Ok(r))) => Ok((r, receipt)),
                    (Err(Some(e)), _) => Err(to_pyerr(py, &e)),
                    (Err(None), Some(Err(e))) => Err(e),
                    _ => Err(out_of_turn()),
                };
            }
        }
    }
}

/// The `tx` a transaction's function is called with. See `Store.transaction`.
#[pyclass(module = "statefile", frozen)]
pub struct Transaction {
    /// `None` once the attempt it was made for is over.
    link: Mutex<Option<Arc<Link>>>,
    /// The thread running the function: the only one that may use it.
    thread: ThreadId,
    /// The process that started the transaction (see [`forked`]).
    pid: u32,
    root: std::path::PathBuf,
    /// The names used so far: at most `MAX_TX_OPS`, as in the operations form (each
    /// document holds a lock and a descriptor until the transaction ends).
    touched: Mutex<HashSet<String>>,
    /// The documents locked so far, for refusing calls from inside `fn` that would
    /// wait for them.
    held: Arc<Held>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Transaction {
    fn close(&self) {
        *self.link.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn call(&self, py: Python<'_>, what: &str, r: Request) -> PyResult<Answer> {
        if std::process::id() != self.pid {
            return Err(forked(self.pid));
        }
        if std::thread::current().id() != self.thread {
            return Err(PyRuntimeError::new_err(
                "a statefile transaction is used only by the thread running its function",
            ));
        }
        let link = self
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                PyRuntimeError::new_err(
                    "this transaction is over: use `tx` only inside the function given to \
                     Store.transaction, while it runs",
                )
            })?;
        {
            let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
            if !touched.contains(r.name()) {
                if touched.len() >= MAX_TX_OPS {
                    return Err(PyValueError::new_err(format!(
                        "a transaction touches at most {MAX_TX_OPS} documents (each holds a \
                         lock and a file descriptor until it ends); {:?} would be one more",
                        r.name()
                    )));
                }
                touched.insert(r.name().to_owned());
            }
        }
        // A transaction started inside another's function would wait for that one's
        // locks.
        let name = r.name().to_owned();
        held::refuse(
            py,
            &self.root.join(&name),
            &format!("a transaction's {what}"),
            Some(&self.held),
        )?;
        let n = link.next.fetch_add(1, Ordering::Relaxed);
        if !link.send(ToHelper::Op(n, r)) {
            return Err(lost());
        }
        loop {
            match link.next(py, true)? {
                FromHelper::Reply(m, answer) if m == n => {
                    // The lock is held once the request succeeded, or failed on what
                    // it found under the lock.
                    let locked = match &answer {
                        Ok(_) => true,
                        Err(e) => matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt),
                    };
                    if locked {
                        self.held.add(&name);
                    }
                    return answer.py_err(py);
                }
                FromHelper::Reply(..) => {}
                FromHelper::Attempt | FromHelper::Done(_) => return Err(out_of_turn()),
            }
        }
    }
}

fn opt_version(v: Option<Version>) -> Option<String> {
    v.map(|v| v.as_str().to_owned())
}

#[pymethods]
impl Transaction {
    /// The document `name` as this transaction sees it (its own writes included), read
    /// under its lock. A missing document returns `default` if given, else raises
    /// NotFound.
    #[pyo3(signature = (name, /, **kwargs), text_signature = "(self, name, /, default=...)")]
    fn read<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let default = default_arg(kwargs)?;
        let Answer::Value(v) = self.call(py, "read", Request::Read(name.to_owned()))? else {
            return Err(out_of_turn());
        };
        match (v, default) {
            (Some(v), _) => to_py(py, &v),
            (None, Some(d)) => Ok(d),
            (None, None) => {
                let path = self.root.join(name);
                Err(not_found(
                    py,
                    format!("{} does not exist (read in a transaction)", path.display()),
                    &path,
                ))
            }
        }
    }

    /// The version of `name` when this transaction locked it (None: missing),
    /// whatever the transaction wrote to it since.
    fn version(&self, py: Python<'_>, name: &str) -> PyResult<Option<String>> {
        match self.call(py, "version", Request::Version(name.to_owned()))? {
            Answer::Version(v) => Ok(opt_version(v)),
            _ => Err(out_of_turn()),
        }
    }

    /// A precondition, checked under the lock: `name` must be at `version` (None: must
    /// not exist) as this transaction sees it, what `read` returns: after its own
    /// `write`, at the version of the bytes written (the document's once committed);
    /// after its own `delete`, missing. Raises Conflict naming the document otherwise; a weak ETag
    /// (`W/"..."`), which never matches, raises ValueError (InvalidName).
    fn expect(&self, py: Python<'_>, name: &str, version: Option<&str>) -> PyResult<()> {
        let expected = version.map(|v| version_arg(py, v)).transpose()?;
        self.call(py, "expect", Request::Expect(name.to_owned(), expected))
            .map(drop)
    }

    /// Write `obj` to `name` when the transaction commits. `obj` is checked (and
    /// copied) now: a value JSON cannot hold raises TypeError/ValueError here.
    fn write(&self, py: Python<'_>, name: &str, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = to_json(obj)?;
        self.call(py, "write", Request::Write(name.to_owned(), value))
            .map(drop)
    }

    /// Delete `name` when the transaction commits (NotFound if it does not exist as the
    /// transaction sees it; one it wrote is deleted, one it created then not written).
    fn delete(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.call(py, "delete", Request::Delete(name.to_owned()))
            .map(drop)
    }

    /// The store's root directory.
    #[getter]
    fn root<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        path_str(py, &self.root)
    }

    fn __repr__(&self) -> String {
        format!("<statefile.Transaction in {:?}>", self.root)
    }
}

/// The `default=` keyword of `Transaction.read`.
fn default_arg<'py>(kwargs: Option<&Bound<'py, PyDict>>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let Some(kw) = kwargs else {
        return Ok(None);
    };
    let mut default = None;
    for (k, v) in kw.iter() {
        match k.extract::<String>() {
            Ok(name) if name == "default" => default = Some(v),
            Ok(name) => {
                return Err(PyTypeError::new_err(format!(
                    "read() got an unexpected keyword argument '{name}'"
                )));
            }
            Err(_) => return Err(PyTypeError::new_err("keywords must be strings")),
        }
    }
    Ok(default)
}
