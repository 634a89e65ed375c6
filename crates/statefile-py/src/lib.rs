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
    Ok(())
}
