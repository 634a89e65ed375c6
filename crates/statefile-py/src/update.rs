//! `with doc.update() as data:` — the library's locked read-modify-write held open
//! across a Python block.
//!
//! A Rust closure cannot pause while Python runs the block, so the update runs in a
//! helper thread, through the library's own `Doc::update` (whatever that does, such as
//! batching with other updates of the document, applies here too):
//!
//! 1. `__enter__` starts the helper, which calls `Doc::update`. The library takes the
//!    lock and reads the document; the closure hands the value to the Python thread
//!    and waits. `__enter__` returns it as Python objects.
//! 2. The block mutates the objects, holding the lock (through the helper).
//! 3. `__exit__` converts them back (a value JSON cannot hold raises here, and nothing
//!    is written) and hands them to the closure, which returns them to the library:
//!    it writes them with the replace protocol and releases the lock. After an
//!    exception in the block the closure fails instead, so nothing is written, and
//!    the block's exception propagates.
//!
//! The helper never touches Python objects, so it needs no GIL; the Python thread
//! releases the GIL whenever it waits for the helper. If the block is abandoned
//! without `__exit__` (a generator that is never resumed), dropping this object drops
//! the channel, the closure fails, and the lock is released without a write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use serde_json::Value;
use statefile::{Error, Receipt};

use crate::convert::{to_json, to_py};
use crate::doc::Default;
use crate::errors::to_pyerr;
use crate::records;

/// From the helper to the Python thread.
enum Report {
    /// The lock is held and this is the document's value (`missing`: start from the default).
    Got { value: Value, missing: bool },
    /// The update failed before it reached the value (lock timeout, corrupt document...).
    Failed(Error),
    /// What the update returned after the block.
    Done(Result<Receipt, Error>),
    /// Nothing was written: the block raised, its value was refused, or it was abandoned.
    Abandoned,
}

/// Why the helper's closure gave up.
enum Abort {
    Library(Error),
    Block,
}

impl From<Error> for Abort {
    fn from(e: Error) -> Self {
        Abort::Library(e)
    }
}

/// The helper's reports, waited for with the GIL released (hence shareable).
type Reports = Mutex<Receiver<Report>>;

/// From the Python thread to the helper: the value to write. Dropping the sender
/// instead means: write nothing.
struct Commit(Value);

struct Active {
    commit: Sender<Commit>,
    reports: Reports,
    helper: JoinHandle<()>,
    data: Py<PyAny>,
    /// The process that entered the block: a child forked inside it has a copy of the
    /// block but not the helper thread, which holds the lock in the parent.
    pid: u32,
    /// While the block runs, this thread holds the document's lock: a call in the block
    /// that would wait for it raises Deadlock (see held.rs). Dropped with the block.
    _running: Option<crate::held::Running>,
}

enum State {
    Idle,
    Entering,
    Active(Active),
}

/// The context manager `Doc.update()` returns.
#[pyclass(module = "statefile", frozen)]
pub struct Update {
    doc: Arc<statefile::Doc<Value>>,
    default: Option<Default>,
    state: Mutex<State>,
    receipt: Mutex<Option<Py<PyAny>>>,
}

impl Update {
    pub(crate) fn new(doc: Arc<statefile::Doc<Value>>, default: Option<Default>) -> Update {
        Update {
            doc,
            default,
            state: Mutex::new(State::Idle),
            receipt: Mutex::new(None),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn helper(
    doc: Arc<statefile::Doc<Value>>,
    with_default: bool,
    commits: Receiver<Commit>,
    reports: Sender<Report>,
) {
    let reached = AtomicBool::new(false);
    let missing = AtomicBool::new(false);
    let to_python = reports.clone();
    let body = |v: &mut Value| -> Result<(), Abort> {
        reached.store(true, Ordering::SeqCst);
        let got = Report::Got {
            value: std::mem::take(v),
            missing: missing.load(Ordering::SeqCst),
        };
        if to_python.send(got).is_ok()
            && let Ok(Commit(new)) = commits.recv()
        {
            *v = new;
            return Ok(());
        }
        Err(Abort::Block)
    };
    let result = if with_default {
        doc.update_or_insert_with(
            || {
                missing.store(true, Ordering::SeqCst);
                Value::Null
            },
            body,
        )
    } else {
        doc.update(body)
    };
    let report = match result {
        Ok((_, receipt)) => Report::Done(Ok(receipt)),
        Err(Abort::Library(e)) if !reached.load(Ordering::SeqCst) => Report::Failed(e),
        Err(Abort::Library(e)) => Report::Done(Err(e)),
        Err(Abort::Block) => Report::Abandoned,
    };
    // Nobody listening means the Python side gave up (interrupted): nothing to tell.
    let _ = reports.send(report);
}

/// Wait for the helper's next report with the GIL released. While waiting for the
/// lock (`interruptible`), check for signals now and then, so Ctrl-C is not held up
/// for the whole lock timeout.
fn next(py: Python<'_>, reports: &Reports, interruptible: bool) -> PyResult<Report> {
    let lost = || PyRuntimeError::new_err("statefile: the update's helper thread stopped");
    let recv = |wait: Option<Duration>| {
        let rx = reports.lock().unwrap_or_else(PoisonError::into_inner);
        match wait {
            Some(d) => rx.recv_timeout(d),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        }
    };
    if !interruptible {
        return py.detach(|| recv(None)).map_err(|_| lost());
    }
    loop {
        match py.detach(|| recv(Some(Duration::from_millis(50)))) {
            Ok(r) => return Ok(r),
            Err(RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(RecvTimeoutError::Disconnected) => return Err(lost()),
        }
    }
}

/// After the block: let the helper finish (with `commit`, or with nothing to write when
/// `None`) and return what the update did (`None`: nothing was written, as asked).
fn finish(
    py: Python<'_>,
    active: Active,
    commit: Option<Value>,
) -> PyResult<Option<Result<Receipt, Error>>> {
    if std::process::id() != active.pid {
        // Waiting for the parent's helper thread would wait forever. The parent's block
        // goes on as if the child had never been.
        return Err(PyRuntimeError::new_err(format!(
            "statefile: this update block was entered in process {} and cannot be finished \
             in a child forked inside it (the lock and its helper thread stay with the \
             parent): nothing was written from this process",
            active.pid
        )));
    }
    if let Some(v) = commit {
        // A send can only fail if the helper is gone; `next` reports that.
        let _ = active.commit.send(Commit(v));
    }
    drop(active.commit);
    let report = next(py, &active.reports, false)?;
    let _ = py.detach(|| active.helper.join());
    match report {
        Report::Done(r) => Ok(Some(r)),
        Report::Failed(e) => Ok(Some(Err(e))),
        Report::Abandoned => Ok(None),
        Report::Got { .. } => Err(PyRuntimeError::new_err(
            "statefile: the update's helper thread answered out of turn",
        )),
    }
}

/// Let the helper finish without writing anything (it reports `Abandoned`, or an
/// error from before the block; nothing was written either way).
fn abandon(py: Python<'_>, active: Active) -> PyResult<()> {
    finish(py, active, None).map(drop)
}

impl std::fmt::Debug for Update {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Update")
            .field("doc", &self.doc.path())
            .finish_non_exhaustive()
    }
}

#[pymethods]
impl Update {
    /// Take the lock and read: returns the document's value (or the default).
    fn __enter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        {
            let mut st = self.state();
            if !matches!(*st, State::Idle) {
                return Err(PyRuntimeError::new_err(
                    "this update block is already in use (a `with` inside the same `with`?)",
                ));
            }
            *st = State::Entering;
        }
        let entered = self.enter(py);
        if entered.is_err() {
            *self.state() = State::Idle;
        }
        entered
    }

    /// Write the block's changes on a clean exit; write nothing after an exception
    /// (which propagates). Releases the lock either way.
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyAny>>,
        _exc_value: Option<Bound<'_, PyAny>>,
        _traceback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let active = match std::mem::replace(&mut *self.state(), State::Idle) {
            State::Active(a) => a,
            other => {
                *self.state() = other;
                return Err(PyRuntimeError::new_err("__exit__ without __enter__"));
            }
        };
        let failed_block = exc_type.is_some_and(|t| !t.is_none());
        if failed_block {
            abandon(py, active)?;
            return Ok(false);
        }
        let value = match to_json(active.data.bind(py)) {
            Ok(v) => v,
            Err(e) => {
                abandon(py, active)?;
                return Err(e);
            }
        };
        match finish(py, active, Some(value))? {
            None => Err(PyRuntimeError::new_err(
                "statefile: the update's helper thread gave up before writing",
            )),
            Some(Ok(r)) => {
                let rec = records::receipt(py, &r)?.unbind();
                *self.receipt.lock().unwrap_or_else(PoisonError::into_inner) = Some(rec);
                Ok(false)
            }
            Some(Err(e)) => Err(to_pyerr(py, &e)),
        }
    }

    /// What the last completed block wrote (a `Receipt`), or None.
    #[getter]
    fn receipt(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.receipt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|r| r.clone_ref(py))
    }
}

impl Update {
    fn enter<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // Before any Python code runs (the default factory may fork).
        let pid = std::process::id();
        crate::held::refuse(py, self.doc.path(), "an update", None)?;
        let (commit, commits) = mpsc::channel();
        let (report, reports) = mpsc::channel();
        let reports = Mutex::new(reports);
        let doc = self.doc.clone();
        let with_default = self.default.is_some();
        let helper = std::thread::Builder::new()
            .name("statefile-update".into())
            .spawn(move || helper(doc, with_default, commits, report))
            .map_err(|e| {
                PyRuntimeError::new_err(format!("cannot start the update's helper thread: {e}"))
            })?;
        let (value, missing) = match next(py, &reports, true)? {
            Report::Got { value, missing } => (value, missing),
            Report::Failed(e) => {
                let _ = py.detach(|| helper.join());
                return Err(to_pyerr(py, &e));
            }
            Report::Done(_) | Report::Abandoned => {
                return Err(PyRuntimeError::new_err(
                    "statefile: the update's helper thread answered out of turn",
                ));
            }
        };
        // The block's code counts from here: the default factory is Python code run
        // under the lock too.
        let held = crate::held::Held::document(self.doc.path());
        let running = crate::held::Running::enter(&held);
        let data = match (&self.default, missing) {
            (Some(d), true) => d.make(py),
            _ => to_py(py, &value),
        };
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                let active = Active {
                    commit,
                    reports,
                    helper,
                    data: py.None(),
                    pid,
                    _running: Some(running),
                };
                abandon(py, active)?;
                return Err(e);
            }
        };
        *self.state() = State::Active(Active {
            commit,
            reports,
            helper,
            data: data.clone().unbind(),
            pid,
            _running: Some(running),
        });
        Ok(data)
    }
}
