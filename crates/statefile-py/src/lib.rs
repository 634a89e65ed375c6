//! The native part of the Python package `statefile` (imported as `statefile._statefile`;
//! `python/statefile/__init__.py` is the public face).
//!
//! Every file operation is a call into the `statefile` library: this crate converts
//! values and errors, and releases the GIL while the library reads, writes, syncs or
//! waits for a lock. No part of the protocol is implemented here.
#![forbid(unsafe_code)]

mod convert;
mod doc;
mod errors;
mod files;
mod held;
mod journal;
mod records;
mod store;
mod tx;
mod update;

use pyo3::prelude::*;

#[pymodule]
fn _statefile(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<doc::Doc>()?;
    m.add_class::<store::Store>()?;
    m.add_class::<update::Update>()?;
    m.add_class::<tx::Transaction>()?;
    files::register(m)?;
    journal::register(m)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    Ok(())
}

/// Registered with `os.register_at_fork(after_in_child=...)` by the package: the child
/// of an `os.fork()` (multiprocessing, gunicorn, ...) makes its own lock queues, helper
/// threads and journal handles instead of using its parent's copies, whose mutexes a
/// thread of the parent may have held at the fork and whose `flock` locks are the
/// parent's (see `statefile::after_fork_in_child`; the library also tells a child by its
/// process id, which this covers where the two are equal: pid namespaces).
#[pyfunction]
fn _after_fork_in_child() {
    statefile::after_fork_in_child();
}
