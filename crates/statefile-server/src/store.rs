//! The storage the routes talk to. [`DocStore`] is all a backend must provide; the
//! routes never touch files. [`FileStore`] implements it over a `statefile::Store`; a
//! PostgreSQL backend would implement the same trait.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use statefile::{BackupRef, ReadPolicy, Version};

use crate::problem::ApiError;

/// A precondition on the current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// No precondition.
    Any,
    /// `If-Match`: the document must exist at this version.
    IfMatch(Version),
    /// `If-None-Match: *`: the document must not exist.
    Absent,
}

/// A read: the stored bytes, their version, and the backup served if the document is
/// damaged.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub version: Version,
    /// The backup number (1 = newest) served instead of a damaged document.
    pub recovered_from: Option<usize>,
}

/// A write's outcome.
#[derive(Debug, Clone)]
pub struct Written {
    pub version: Version,
    pub created: bool,
    pub lock_wait: Duration,
}

/// One kept version.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct BackupEntry {
    /// 1 = newest.
    pub number: usize,
    /// Its version (the ETag it had).
    pub version: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Seconds since the Unix epoch when it was written.
    pub modified_unix: u64,
    /// Whether it is valid JSON (a damaged backup is never restored).
    pub parses: bool,
}

/// A read-modify-write step: gets the current value, changes it, returns a result for
/// the response (e.g. the index of an appended element).
pub type Mutator<'a> = Box<dyn FnOnce(&mut Value) -> Result<Value, ApiError> + Send + 'a>;

/// What a storage backend provides. Every method blocks: call it from a blocking thread.
pub trait DocStore: Send + Sync + 'static {
    /// Document names starting with `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>, ApiError>;
    /// Read a document (serving a backup if it is damaged).
    fn get(&self, name: &str) -> Result<Fetched, ApiError>;
    /// Create or replace a document.
    fn put(&self, name: &str, value: &Value, cond: &Condition) -> Result<Written, ApiError>;
    /// Read-modify-write under the document's lock. A missing document starts as
    /// `init` (or is NotFound if `init` is `None`).
    fn update(
        &self,
        name: &str,
        cond: &Condition,
        init: Option<Value>,
        f: Mutator<'_>,
    ) -> Result<(Value, Written), ApiError>;
    /// Delete a document (restorable from its backups).
    fn delete(&self, name: &str, cond: &Condition) -> Result<(), ApiError>;
    /// The kept versions, newest first.
    fn backups(&self, name: &str) -> Result<Vec<BackupEntry>, ApiError>;
    /// Restore a kept version.
    fn restore(&self, name: &str, which: &BackupRef) -> Result<Written, ApiError>;
}

/// [`DocStore`] over a directory, through the statefile library.
#[derive(Debug)]
pub struct FileStore {
    store: statefile::Store,
}

impl FileStore {
    /// Serve the documents of `store`.
    pub fn new(store: statefile::Store) -> FileStore {
        FileStore { store }
    }

    fn doc(&self, name: &str) -> Result<statefile::Doc<Value>, ApiError> {
        self.store
            .doc::<Value>(name)
            .map_err(|e| ApiError::from_lib(&e, name))
    }
}

fn written(r: statefile::Receipt) -> Written {
    Written {
        version: r.version,
        created: r.created,
        lock_wait: r.lock_wait,
    }
}

impl DocStore for FileStore {
    fn list(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        self.store
            .list(prefix)
            .map_err(|e| ApiError::from_lib(&e, prefix))
    }

    fn get(&self, name: &str) -> Result<Fetched, ApiError> {
        let doc = self
            .doc(name)?
            .with_read_policy(ReadPolicy::FallbackToBackup);
        let v = doc.read_bytes().map_err(|e| ApiError::from_lib(&e, name))?;
        Ok(Fetched {
            bytes: v.value,
            version: v.version,
            recovered_from: v.recovered.map(|r| r.backup),
        })
    }

    fn put(&self, name: &str, value: &Value, cond: &Condition) -> Result<Written, ApiError> {
        let doc = self.doc(name)?;
        let r = match cond {
            Condition::Any => doc.write(value),
            Condition::IfMatch(v) => doc.write_if(v, value),
            Condition::Absent => doc.create(value),
        };
        r.map(written).map_err(|e| ApiError::from_lib(&e, name))
    }

    fn update(
        &self,
        name: &str,
        cond: &Condition,
        init: Option<Value>,
        f: Mutator<'_>,
    ) -> Result<(Value, Written), ApiError> {
        let doc = self.doc(name)?;
        let mut failure = None;
        let body = |v: &mut Value| match f(v) {
            Ok(out) => Ok(out),
            Err(e) => {
                failure = Some(e);
                Err(statefile::Error::aborted("abandoned"))
            }
        };
        let res = match (cond, init) {
            (Condition::IfMatch(v), _) => doc.update_if(v, body),
            (Condition::Absent, _) => {
                return Err(ApiError::bad_request(
                    "invalid-precondition",
                    "If-None-Match: * only applies to PUT",
                ));
            }
            (Condition::Any, Some(init)) => doc.update_or_insert_with(move || init.clone(), body),
            (Condition::Any, None) => doc.update(body),
        };
        match res {
            Ok((out, r)) => Ok((out, written(r))),
            Err(e) => Err(failure
                .take()
                .unwrap_or_else(|| ApiError::from_lib(&e, name))),
        }
    }

    fn delete(&self, name: &str, cond: &Condition) -> Result<(), ApiError> {
        let doc = self.doc(name)?;
        let r = match cond {
            Condition::IfMatch(v) => doc.delete_if(v),
            Condition::Any => doc.delete(),
            // "Only if it does not exist": there is then nothing to delete.
            Condition::Absent => {
                return Err(if doc.exists().map_err(|e| ApiError::from_lib(&e, name))? {
                    ApiError::precondition_failed(format!(
                        "document {name} exists, and If-None-Match: * asked that it not"
                    ))
                } else {
                    ApiError::not_found(format!("document {name} does not exist"))
                });
            }
        };
        r.map(drop).map_err(|e| ApiError::from_lib(&e, name))
    }

    fn backups(&self, name: &str) -> Result<Vec<BackupEntry>, ApiError> {
        let doc = self.doc(name)?;
        let list = doc.backups().map_err(|e| ApiError::from_lib(&e, name))?;
        if list.is_empty() && !doc.exists().map_err(|e| ApiError::from_lib(&e, name))? {
            return Err(ApiError::not_found(format!(
                "document {name} does not exist and has no backups"
            )));
        }
        Ok(list
            .into_iter()
            .map(|b| BackupEntry {
                number: b.number,
                version: b.version.as_str().to_string(),
                bytes: b.len,
                modified_unix: b
                    .modified
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                parses: b.parses,
            })
            .collect())
    }

    fn restore(&self, name: &str, which: &BackupRef) -> Result<Written, ApiError> {
        let doc = self.doc(name)?;
        doc.restore(which)
            .map(written)
            .map_err(|e| ApiError::from_lib(&e, name))
    }
}
