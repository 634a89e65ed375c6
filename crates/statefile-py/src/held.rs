//! The documents a `store.transaction(fn)` has locked while `fn` runs (and the one a
//! `doc.update(fn)` or a `with doc.update()` block holds while its code runs), so that
//! a call from inside that code that would wait for one of those locks fails at once
//! with `statefile.Deadlock` instead of waiting out its lock timeout (forever with
//! `lock_timeout=inf`) while the lock's holder waits for the code.
//!
//! The code runs on the thread that called `transaction` or `update`, and so does every
//! call it makes directly: the holders whose code runs on a thread are kept in a
//! thread-local stack (innermost last). A call from another thread (one `fn` started)
//! is not recognised and still waits. Documents are compared by their resolved path
//! (the directory's real path and the file name, or the file's real path when it
//! exists), so a second path through a symlink is recognised; a hard link is not.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;

use crate::errors::deadlock;

/// One transaction whose function runs now: its store's root and the names of the
/// documents it has locked so far.
#[derive(Debug)]
pub struct Held {
    root: PathBuf,
    names: Mutex<HashSet<String>>,
    /// Its code has returned (set by [`Running`]'s drop on whatever thread drops it,
    /// so that an entry left on another thread's stack is ignored, and pruned).
    done: AtomicBool,
    /// What a refused caller should do instead.
    advice: &'static str,
}

impl Held {
    pub fn new(root: PathBuf) -> Arc<Held> {
        Arc::new(Held {
            root,
            names: Mutex::new(HashSet::new()),
            done: AtomicBool::new(false),
            advice: "a transaction's function that has locked it would wait for the lock \
                     that transaction holds (and time out): use the function's tx instead",
        })
    }

    /// The lock of the one document at `path` (an update's), held while its code runs.
    pub fn document(path: &Path) -> Arc<Held> {
        let (root, name) = match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => (dir.to_path_buf(), name.to_string_lossy().into_owned()),
            _ => (PathBuf::new(), path.to_string_lossy().into_owned()),
        };
        Arc::new(Held {
            root,
            names: Mutex::new(HashSet::from([name])),
            done: AtomicBool::new(false),
            advice: "its own update (the function, or the `with` block) would wait for the \
                     lock that update holds (and time out): change the value the update hands \
                     you instead",
        })
    }

    /// The transaction now holds the lock of `name`.
    pub fn add(&self, name: &str) {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned());
    }

    /// Whether it holds the lock of the document `at` resolves to.
    fn holds(&self, at: &Path) -> bool {
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        names.iter().any(|n| resolved(&self.root.join(n)) == at)
    }
}

thread_local! {
    static RUNNING: RefCell<Vec<Arc<Held>>> = const { RefCell::new(Vec::new()) };
}

/// While this lives, `held`'s function runs on this thread.
pub struct Running(Arc<Held>);

impl Running {
    pub fn enter(held: &Arc<Held>) -> Running {
        RUNNING.with(|r| r.borrow_mut().push(held.clone()));
        Running(held.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::SeqCst);
        RUNNING.with(|r| {
            let mut r = r.borrow_mut();
            if let Some(at) = r.iter().rposition(|h| Arc::ptr_eq(h, &self.0)) {
                r.remove(at);
            }
        });
    }
}

/// The document at `path` as compared here: the real path of the file if it exists,
/// else of its directory joined with its name, else `path` made absolute.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = std::fs::canonicalize(dir) {
            return d.join(name);
        }
    }
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Refuse `what` (e.g. "a write") of the document at `path` if a transaction whose
/// function runs on this thread (other than `own`, the one making the call) holds its
/// lock: the call would wait for that lock while the transaction waits for the call.
pub fn refuse(py: Python<'_>, path: &Path, what: &str, own: Option<&Arc<Held>>) -> PyResult<()> {
    let running: Vec<Arc<Held>> = RUNNING.with(|r| {
        let mut r = r.borrow_mut();
        r.retain(|h| !h.done.load(Ordering::SeqCst));
        r.iter()
            .filter(|h| own.is_none_or(|o| !Arc::ptr_eq(h, o)))
            .cloned()
            .collect()
    });
    if running.is_empty() {
        return Ok(());
    }
    let at = resolved(path);
    if let Some(h) = running.iter().rev().find(|h| h.holds(&at)) {
        return Err(deadlock(
            py,
            format!(
                "statefile: {what} of {} from inside {}",
                path.display(),
                h.advice
            ),
            path,
        ));
    }
    Ok(())
}
