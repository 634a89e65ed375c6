//! The storage the routes talk to. [`DocStore`] is all a backend must provide; the
//! routes never touch files. [`FileStore`] implements it over a `statefile::Store`; a
//! PostgreSQL backend implements the same trait.
//!
//! The trait speaks storage, not HTTP: its errors are [`StoreError`]s, and the one place
//! that turns them into statuses is [`ApiError::from_store`](crate::ApiError::from_store).

use std::error::Error as StdError;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use statefile::{BackupRef, ErrorKind, ReadPolicy, Version};

/// Why a storage call failed, in storage terms.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage refused or failed. `kind` picks the answer (the error table in
    /// docs/design.md); `reason`, if any, is a client-safe explanation of what is wrong
    /// with the value (no paths, no hosts); `source` goes to the log only.
    Storage {
        kind: ErrorKind,
        reason: Option<String>,
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The [`Mutator`] given to [`DocStore::update`] refused the value: its own error,
    /// returned unchanged, with nothing written.
    Mutation(Box<dyn StdError + Send + Sync>),
    /// The storage cannot be reached right now (a database restarting, a network
    /// partition) or did not answer in time: retry later. A write that failed this way
    /// may or may not have been applied. `source` goes to the log only.
    Unavailable(Box<dyn StdError + Send + Sync>),
    /// An `Idempotency-Key` given to [`DocStore::update_keyed`] was used before with
    /// another request.
    KeyReused,
    /// A write that named no version found the document changed under it by another
    /// program (one that does not take statefile's lock: it removed the file or put
    /// another at its name while the write held the lock). Nothing was written; the
    /// request may be sent again. `source` goes to the log only.
    Changed(Box<dyn StdError + Send + Sync>),
}

impl StoreError {
    /// A storage failure of `kind`, caused by `source` (logged, never sent to clients).
    pub fn new(kind: ErrorKind, source: impl Into<Box<dyn StdError + Send + Sync>>) -> StoreError {
        StoreError::Storage {
            kind,
            reason: None,
            source: source.into(),
        }
    }

    /// Add a client-safe explanation: why a value cannot be stored (`Serialize`), or
    /// which precondition failed (`Conflict`).
    #[must_use]
    pub fn with_reason(self, why: impl Into<String>) -> StoreError {
        match self {
            StoreError::Storage { kind, source, .. } => StoreError::Storage {
                kind,
                reason: Some(why.into()),
                source,
            },
            other => other,
        }
    }

    /// A mutation's own error, to return from a [`Mutator`].
    pub fn mutation(e: impl StdError + Send + Sync + 'static) -> StoreError {
        StoreError::Mutation(Box::new(e))
    }

    /// The storage cannot be reached or did not answer in time, because of `source`.
    pub fn unavailable(source: impl Into<Box<dyn StdError + Send + Sync>>) -> StoreError {
        StoreError::Unavailable(source.into())
    }

    /// The storage kind, or `None` for the other variants.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            StoreError::Storage { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Storage { kind, source, .. } => write!(f, "{}: {source}", kind.as_str()),
            StoreError::Mutation(e) => write!(f, "mutation refused: {e}"),
            StoreError::Unavailable(e) => write!(f, "storage unavailable: {e}"),
            StoreError::KeyReused => f.write_str("idempotency key reused for another request"),
            StoreError::Changed(e) => write!(f, "changed under the write: {e}"),
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            StoreError::Storage { source, .. } => Some(source.as_ref()),
            StoreError::Mutation(e) | StoreError::Unavailable(e) | StoreError::Changed(e) => {
                Some(e.as_ref())
            }
            StoreError::KeyReused => None,
        }
    }
}

impl From<statefile::Error> for StoreError {
    fn from(e: statefile::Error) -> StoreError {
        let kind = e.kind();
        let reason = (kind == ErrorKind::Serialize).then(|| safe_reason(&e));
        StoreError::Storage {
            kind,
            reason,
            source: Box::new(e),
        }
    }
}

/// The part of a library error that is about the value, without paths.
fn safe_reason(e: &statefile::Error) -> String {
    // Take the path out first: a root directory may itself contain ": ".
    let mut msg = e.message().to_string();
    if let Some(p) = e.path() {
        msg = msg.replace(&p.display().to_string(), "document");
    }
    match msg.find(": ") {
        Some(i) => msg[i + 2..].to_string(),
        None => "it is not representable".to_string(),
    }
}

/// `Result` with [`StoreError`].
pub type StoreResult<T> = Result<T, StoreError>;

/// A precondition on the current version (RFC 9110 13.1.1 and 13.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// No precondition.
    Any,
    /// `If-Match: "v1", "v2"`: the document must exist at one of these versions (none
    /// listed: it never holds).
    IfMatch(Vec<Version>),
    /// `If-Match: *`: the document must exist.
    Exists,
    /// `If-None-Match: *`: the document must not exist.
    Absent,
}

impl Condition {
    /// Whether it holds for a document at `current` (`None`: missing).
    pub fn holds(&self, current: Option<&Version>) -> bool {
        match (self, current) {
            (Condition::Any, _) => true,
            (Condition::IfMatch(list), Some(v)) => list.contains(v),
            (Condition::Exists, Some(_)) | (Condition::Absent, None) => true,
            (Condition::IfMatch(_) | Condition::Exists, None) | (Condition::Absent, Some(_)) => {
                false
            }
        }
    }
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
    /// The answer kept for an `Idempotency-Key` was returned: nothing was written now.
    pub replayed: bool,
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
/// the response (e.g. the index of an appended element). An error (usually
/// [`StoreError::Mutation`]) abandons the update: nothing is written, and the backend
/// returns that error unchanged.
pub type Mutator<'a> = Box<dyn FnOnce(&mut Value) -> StoreResult<Value> + Send + 'a>;

/// What a storage backend provides. Every method blocks: call it from a blocking thread.
///
/// Errors by kind: `NotFound` (no such document or backup), `Conflict` (the
/// [`Condition`] does not hold), `Corrupt` (damaged, no good backup to serve or modify
/// from), `LockTimeout` (busy), `NoSpace`, `PermissionDenied`, `Durability`,
/// `InvalidName` (the name cannot be stored there), `Serialize` (the value cannot be
/// stored, with a reason), anything else `Io`.
/// Why [`DocStore::transaction`] did not commit. Nothing was written.
#[derive(Debug)]
pub enum TxFailed {
    /// A storage error, about document `doc` where one is to blame (a failed
    /// precondition, a missing document).
    Store {
        doc: Option<String>,
        error: StoreError,
    },
    /// A patch or append that does not apply to document `doc` as it is.
    NotApplicable { doc: String, message: String },
    /// Nothing at an operation's pointer (the message names the document and pointer).
    PointerNotFound(String),
    /// This storage cannot run multi-document transactions (as it is configured).
    Unsupported(String),
    /// The request's time ran out before the transaction was done: nothing written.
    Stopped(String),
}

pub trait DocStore: Send + Sync + 'static {
    /// Document names starting with `prefix`, sorted.
    fn list(&self, prefix: &str) -> StoreResult<Vec<String>>;
    /// Read a document (serving a backup if it is damaged).
    fn get(&self, name: &str) -> StoreResult<Fetched>;
    /// Create or replace a document.
    fn put(&self, name: &str, value: &Value, cond: &Condition) -> StoreResult<Written>;
    /// Read-modify-write under the document's lock. A missing document starts as
    /// `init` (or is `NotFound` if `init` is `None`); with [`Condition::Absent`] only a
    /// missing document is modified (`Conflict` otherwise).
    fn update(
        &self,
        name: &str,
        cond: &Condition,
        init: Option<Value>,
        f: Mutator<'_>,
    ) -> StoreResult<(Value, Written)>;
    /// Delete a document (restorable from its backups). With [`Condition::Absent`]:
    /// `Conflict` if it exists, `NotFound` if not (there is nothing to delete either way).
    fn delete(&self, name: &str, cond: &Condition) -> StoreResult<()>;
    /// The kept versions, newest first; `NotFound` if neither the document nor any
    /// backup exists.
    fn backups(&self, name: &str) -> StoreResult<Vec<BackupEntry>>;
    /// Restore a kept version.
    fn restore(&self, name: &str, which: &BackupRef) -> StoreResult<Written>;

    /// Apply `ops` as one transaction: every change or none, even across a crash; each
    /// precondition checked under the locks. The default refuses: a backend without
    /// multi-document transactions.
    fn transaction(
        &self,
        ops: &[statefile::TxOp],
        limits: &statefile::patch::Limits,
    ) -> Result<Vec<statefile::TxOpResult>, TxFailed> {
        let _ = (ops, limits);
        Err(TxFailed::Unsupported(
            "this server's storage backend has no multi-document transactions".into(),
        ))
    }

    /// The most files [`DocStore::transaction`] may hold open at once for `ops`, so
    /// the server can count them against its open-file budget (default: none).
    fn tx_descriptors(&self, ops: &[statefile::TxOp]) -> usize {
        let _ = ops;
        0
    }

    /// [`DocStore::update`] (with [`Condition::Any`]) for a request carrying an
    /// `Idempotency-Key`. A store that keeps keys itself (PostgreSQL: in the transaction
    /// that writes, so every server sharing the database gives a repeat the first answer,
    /// across restarts) returns the kept answer for a repeat and
    /// [`StoreError::KeyReused`] for the key with another request. The default applies
    /// the update: the server's in-memory table answers the repeats it has seen.
    fn update_keyed(
        &self,
        name: &str,
        key: &Keyed<'_>,
        init: Option<Value>,
        f: Mutator<'_>,
    ) -> StoreResult<(Value, Written)> {
        let _ = key;
        self.update(name, &Condition::Any, init, f)
    }

    /// Whether the storage answers, for `/healthz` (default: always; a directory
    /// store's problems show on each request).
    fn health(&self) -> StoreResult<()> {
        Ok(())
    }

    /// The storage's own figures for `/metrics`, in Prometheus text (default: none).
    fn render_metrics(&self, out: &mut String) {
        let _ = out;
    }
}

/// An `Idempotency-Key` and the fingerprint of the request that carries it.
#[derive(Debug, Clone, Copy)]
pub struct Keyed<'a> {
    pub key: &'a str,
    /// SHA-256 of what the request asks for (stable across processes and versions).
    pub request: &'a [u8; 32],
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

    fn doc(&self, name: &str) -> StoreResult<statefile::Doc<Value>> {
        Ok(self.store.doc::<Value>(name)?)
    }

    /// A `Corrupt` error about document `name`, with a client-safe reason that says
    /// what repairs it: its good backup if it has one, else a new version.
    fn damaged(&self, name: &str, e: impl Into<StoreError>) -> StoreError {
        let e = e.into();
        if e.kind() != Some(ErrorKind::Corrupt) {
            return e;
        }
        let backups = self
            .doc(name)
            .and_then(|d| Ok(d.backups()?))
            .unwrap_or_default();
        let why = match backups.iter().find(|b| b.parses) {
            Some(good) => format!(
                "its backup {n} is good (a GET serves it): put it back with POST \
                 /v1/docs/{name}/restore?from={n}, send the write again with If-Match set to \
                 the ETag that GET answers, or replace the document with PUT",
                n = good.number
            ),
            None => {
                let none = if backups.is_empty() {
                    "it has no backup"
                } else {
                    "no backup of it is valid JSON either"
                };
                format!(
                    "{none}: replace it with PUT, or DELETE it (its damaged bytes are kept \
                     aside, not served)"
                )
            }
        };
        e.with_reason(why)
    }
}

fn written(r: statefile::Receipt) -> Written {
    Written {
        version: r.version,
        created: r.created,
        lock_wait: r.lock_wait,
        replayed: false,
    }
}

/// The `Conflict` of a condition that does not hold for document `name`.
fn not_held(name: &str, cond: &Condition) -> StoreError {
    let why = match cond {
        Condition::Exists => "does not exist, and If-Match: * asked that it did",
        Condition::Absent => "exists, and the request asked that it not",
        _ => "is not at a version the request expected",
    };
    conflict(name, why)
}

/// The error of a write that named no version ([`Condition::Any`]): a `Conflict` there
/// is no precondition that failed but another program changing the document under the
/// write ([`StoreError::Changed`]), which HTTP answers 409, not 412.
fn unconditional(e: StoreError) -> StoreError {
    match e {
        StoreError::Storage {
            kind: ErrorKind::Conflict,
            source,
            ..
        } => StoreError::Changed(source),
        other => other,
    }
}

/// How often a write whose precondition held at the check, and was overtaken by another
/// writer before it took the lock, checks again.
const RECHECKS: usize = 16;

/// The document's version now; `None` if it is missing.
fn version_now(doc: &statefile::Doc<Value>) -> StoreResult<Option<Version>> {
    match doc.version() {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The version `cond` holds for now, if any: the document's, or for a damaged document
/// the version reads serve for it (its newest good backup's), which a conditional
/// write may name to replace it (issue #10 item 2).
fn version_holding(
    store: &FileStore,
    name: &str,
    doc: &statefile::Doc<Value>,
    cond: &Condition,
) -> StoreResult<Option<Version>> {
    let Some(current) = version_now(doc)? else {
        return Ok(None);
    };
    if cond.holds(Some(&current)) {
        return Ok(Some(current));
    }
    if !matches!(cond, Condition::IfMatch(_)) {
        return Ok(None);
    }
    let served = match store
        .doc(name)?
        .with_read_policy(ReadPolicy::FallbackToBackup)
        .read_bytes()
    {
        Ok(v) => v.recovered.map(|_| v.version),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(served.filter(|v| cond.holds(Some(v))))
}

/// `op` at the version `cond` holds for now; when another writer got in between (`op`
/// answers `Ok(None)`: overtaken), check again, as RFC 9110 13.1.1 compares `If-Match`
/// with the version current when the request is applied. The same version found twice
/// running is not an overtaking: the condition does not hold.
fn at_version_holding<R>(
    store: &FileStore,
    name: &str,
    doc: &statefile::Doc<Value>,
    cond: &Condition,
    mut op: impl FnMut(&Version) -> StoreResult<Option<R>>,
) -> StoreResult<R> {
    let mut tried: Option<Version> = None;
    for _ in 0..RECHECKS {
        let found = version_holding(store, name, doc, cond)?;
        let Some(current) = found.filter(|v| tried.as_ref() != Some(v)) else {
            return Err(not_held(name, cond));
        };
        if let Some(r) = op(&current)? {
            return Ok(r);
        }
        tried = Some(current);
    }
    Err(StoreError::new(
        ErrorKind::LockTimeout,
        format!("document {name} kept changing while a conditional write checked it"),
    ))
}

/// `r`, or `None` when it is the `Conflict` of a version that changed since it was
/// checked.
fn overtaken<R>(r: statefile::Result<R>) -> StoreResult<Option<R>> {
    match r {
        Err(e) if e.kind() == ErrorKind::Conflict => Ok(None),
        r => Ok(Some(r?)),
    }
}

/// A `Conflict` whose reason the client may read: `document {name} {why}`.
fn conflict(name: &str, why: &str) -> StoreError {
    let why = format!("document {name} {why}");
    StoreError::new(ErrorKind::Conflict, why.clone()).with_reason(why)
}

impl DocStore for FileStore {
    fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        Ok(self.store.list(prefix)?)
    }

    fn get(&self, name: &str) -> StoreResult<Fetched> {
        let doc = self
            .doc(name)?
            .with_read_policy(ReadPolicy::FallbackToBackup);
        let v = doc.read_bytes().map_err(|e| self.damaged(name, e))?;
        Ok(Fetched {
            bytes: v.value,
            version: v.version,
            recovered_from: v.recovered.map(|r| r.backup),
        })
    }

    /// A lock file per document and a handle per directory (documents of one directory
    /// share it), and the operation's own few.
    fn tx_descriptors(&self, ops: &[statefile::TxOp]) -> usize {
        let docs: std::collections::HashSet<&str> = ops.iter().map(|o| o.doc.as_str()).collect();
        let dirs: std::collections::HashSet<&str> = docs
            .iter()
            .map(|d| d.rsplit_once('/').map_or("", |(dir, _)| dir))
            .collect();
        docs.len() + dirs.len() + crate::limits::FDS_PER_OPERATION
    }

    fn transaction(
        &self,
        ops: &[statefile::TxOp],
        limits: &statefile::patch::Limits,
    ) -> Result<Vec<statefile::TxOpResult>, TxFailed> {
        let root = self.store.root();
        let opts = self.store.options();
        match statefile::journal::status(root, opts) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(TxFailed::Unsupported(
                    "the store is not in journal mode: multi-document transactions need its \
                     journal (statefile journal enable DIR)"
                        .into(),
                ));
            }
            Err(e) => {
                return Err(TxFailed::Store {
                    doc: None,
                    error: e.into(),
                });
            }
        }
        self.store.apply_tx(ops, limits).map_err(|e| match e {
            statefile::TxOpError::Store(e)
                if e.kind() == ErrorKind::NotFound && e.path().is_none() =>
            {
                TxFailed::PointerNotFound(e.message().to_string())
            }
            statefile::TxOpError::Store(e) => {
                // The document the error is about, by name (never the server's paths):
                // the operation whose document is at that path, or else (a document
                // reached through a symlink in the store) whose name ends it. Ends alone
                // named `a.json` for an error about `b/a.json` when both are in the
                // transaction.
                let root = self.store.root();
                let doc = e.path().and_then(|p| {
                    ops.iter()
                        .find(|o| root.join(&o.doc) == p)
                        .or_else(|| ops.iter().find(|o| p.ends_with(Path::new(&o.doc))))
                        .map(|o| o.doc.clone())
                });
                let conflict = e.kind() == ErrorKind::Conflict;
                // No operation on the document named a version: the Conflict is another
                // program's change under the write (409), no precondition that failed.
                let conditional = doc.as_ref().is_none_or(|d| {
                    ops.iter()
                        .any(|o| &o.doc == d && (o.if_match.is_some() || o.if_none_match))
                });
                let mut error = StoreError::from(e);
                if conflict && !conditional {
                    error = unconditional(error);
                } else if let (true, Some(d)) = (conflict, &doc) {
                    error = error.with_reason(format!(
                        "document {d} is not at the version its operation expected \
                         (if_match / if_none_match): nothing was written"
                    ));
                }
                TxFailed::Store { doc, error }
            }
            statefile::TxOpError::NotApplicable { doc, message } => {
                TxFailed::NotApplicable { doc, message }
            }
            statefile::TxOpError::Stopped(message) => TxFailed::Stopped(message),
            other => TxFailed::Store {
                doc: None,
                error: StoreError::new(ErrorKind::Io, other.to_string()),
            },
        })
    }

    fn put(&self, name: &str, value: &Value, cond: &Condition) -> StoreResult<Written> {
        let doc = self.doc(name)?;
        match cond {
            Condition::Any => {
                return doc
                    .write(value)
                    .map(written)
                    .map_err(|e| unconditional(e.into()));
            }
            Condition::Absent => return Ok(doc.create(value).map(written)?),
            Condition::IfMatch(list) if list.len() == 1 => {
                return Ok(doc.write_if(&list[0], value).map(written)?);
            }
            Condition::IfMatch(_) | Condition::Exists => {}
        }
        // Several versions, or any: write at the current one if it is listed.
        at_version_holding(self, name, &doc, cond, |v| {
            overtaken(doc.write_if(v, value))
        })
        .map(written)
    }

    fn update(
        &self,
        name: &str,
        cond: &Condition,
        init: Option<Value>,
        f: Mutator<'_>,
    ) -> StoreResult<(Value, Written)> {
        let doc = self.doc(name)?;
        let inserted = std::cell::Cell::new(false);
        let absent_only = *cond == Condition::Absent;
        let body = |v: &mut Value| {
            if absent_only && !inserted.get() {
                Err(not_held(name, cond))
            } else {
                f(v)
            }
        };
        let res = match (cond, init) {
            (Condition::IfMatch(_), _) => {
                // As PUT: at a listed version found now, checking again when another
                // writer got in first. The mutation runs once, in the attempt that finds
                // its version under the lock; an attempt refused before it ran is retried.
                let body = std::cell::Cell::new(Some(body));
                let ran = std::cell::Cell::new(false);
                at_version_holding(self, name, &doc, cond, |v| {
                    let once = |value: &mut Value| {
                        ran.set(true);
                        let f = body
                            .take()
                            .expect("an attempt that ran the mutation is the last one");
                        f(value)
                    };
                    match doc.update_if(v, once) {
                        Err(e) if e.kind() == Some(ErrorKind::Conflict) && !ran.get() => Ok(None),
                        r => r.map(Some),
                    }
                })
            }
            // If-Match: * updates an existing document only, whatever `init` offers.
            (Condition::Exists, _) => match doc.update(body) {
                Err(StoreError::Storage {
                    kind: ErrorKind::NotFound,
                    ..
                }) => return Err(not_held(name, cond)),
                r => r,
            },
            (_, Some(init)) => doc.update_or_insert_with(
                || {
                    inserted.set(true);
                    init.clone()
                },
                body,
            ),
            (_, None) => doc.update(body),
        };
        let (out, r) = res.map_err(|e| match cond {
            Condition::Any => unconditional(self.damaged(name, e)),
            _ => self.damaged(name, e),
        })?;
        Ok((out, written(r)))
    }

    fn delete(&self, name: &str, cond: &Condition) -> StoreResult<()> {
        let doc = self.doc(name)?;
        let r = match cond {
            Condition::IfMatch(list) if list.len() == 1 => doc.delete_if(&list[0]),
            Condition::Any => doc.delete(),
            Condition::IfMatch(_) | Condition::Exists => {
                return at_version_holding(self, name, &doc, cond, |v| overtaken(doc.delete_if(v)))
                    .map(drop);
            }
            // "Only if it does not exist": there is then nothing to delete.
            Condition::Absent => {
                return Err(if doc.exists()? {
                    not_held(name, cond)
                } else {
                    statefile::Error::new(
                        ErrorKind::NotFound,
                        format!("document {name} does not exist"),
                    )
                    .into()
                });
            }
        };
        r.map(drop).map_err(|e| match cond {
            Condition::Any => unconditional(e.into()),
            _ => e.into(),
        })
    }

    fn backups(&self, name: &str) -> StoreResult<Vec<BackupEntry>> {
        let doc = self.doc(name)?;
        let list = doc.backups()?;
        if list.is_empty() && !doc.exists()? {
            return Err(statefile::Error::new(
                ErrorKind::NotFound,
                format!("document {name} does not exist and has no backups"),
            )
            .into());
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

    fn restore(&self, name: &str, which: &BackupRef) -> StoreResult<Written> {
        Ok(self.doc(name)?.restore(which).map(written)?)
    }
}
