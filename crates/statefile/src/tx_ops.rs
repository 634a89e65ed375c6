//! The operations of `statefile tx` and `POST /v1/tx`: a JSON array, parsed and checked
//! here once for both, applied as one [`Store::transaction`].
//!
//! The operations apply in order, and each sees what the ones before it did: a read
//! (patch, append, get) sees their writes, and a precondition (`if_match`,
//! `if_none_match: "*"`) is checked against the document as they left it.
//!
//! ```json
//! [{"op": "put", "doc": "a.json", "value": {"n": 1}},
//!  {"op": "patch", "doc": "b.json", "merge": {"n": 2}},
//!  {"op": "patch", "doc": "b.json", "json_patch": [{"op": "add", "path": "/m", "value": 3}]},
//!  {"op": "append", "doc": "c.json", "pointer": "/items", "value": 4},
//!  {"op": "delete", "doc": "d.json", "if_match": "<version>"},
//!  {"op": "get", "doc": "e.json"}]
//! ```

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind};
use crate::patch::{self, Patch, PatchKind};
use crate::pointer::{self, PointerError};
use crate::store::Store;
use crate::version::Version;

/// The most operations one request may hold.
pub const MAX_TX_OPS: usize = 1000;

/// The most distinct directories the documents of one request may be in (`a/b/c.json`
/// is in `a` and `a/b`): each is a directory to make and lock on the file backend, and a
/// name to record and check on PostgreSQL, so a request of deep names must not cost a
/// thousand times a path's depth. Four per operation on average.
pub const MAX_TX_DIRS: usize = 4 * MAX_TX_OPS;

/// What one operation does.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TxOpKind {
    /// Replace the document with this value.
    Put(Value),
    /// Apply a patch (a merge patch creates a missing document as `{}`; a JSON Patch
    /// needs it to exist).
    Patch(PatchKind, Patch),
    /// Append `value` to the array at `pointer` (a missing document is created).
    Append {
        /// The array's pointer tokens.
        pointer: Vec<String>,
        /// The new element.
        value: Value,
    },
    /// Delete the document.
    Delete,
    /// Read the document under the transaction's locks.
    Get,
}

/// One operation: a document, what to do, and its precondition.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TxOp {
    /// The document's name in the store.
    pub doc: String,
    /// What to do.
    pub kind: TxOpKind,
    /// `if_match`: the document must be at this version, as the operations before
    /// this one left it (after a put, patch or append of it, the version of the bytes
    /// written, which the transaction reports for it; after a delete, none matches).
    pub if_match: Option<Version>,
    /// `if_none_match: "*"`: the document must not exist, as the operations before
    /// this one left it (after a put, patch or append of it, it exists; after a
    /// delete, it does not).
    pub if_none_match: bool,
}

/// What one operation did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TxOpResult {
    /// The document.
    pub doc: String,
    /// The operation (`put`, `patch`, `append`, `delete`, `get`).
    pub op: &'static str,
    /// The document's version after the transaction (`None`: deleted); for `get`, the
    /// version of the value read (after the transaction's own earlier writes of it, the
    /// version those bytes have once committed).
    pub version: Option<Version>,
    /// `get`: the value read.
    pub value: Option<Value>,
    /// `append`: the new element's index.
    pub index: Option<usize>,
}

impl TxOpResult {
    /// The result of operation `op` (`put`, `patch`, `append`, `delete`, `get`) on
    /// `doc`, with no version, value or index yet: for a storage backend outside this
    /// crate that applies the same operations (the server's PostgreSQL backend).
    ///
    /// ```
    /// let mut r = statefile::TxOpResult::new("a.json", "append");
    /// r.index = Some(2);
    /// assert_eq!(
    ///     r.to_json(),
    ///     serde_json::json!({"doc": "a.json", "op": "append", "version": null, "index": 2})
    /// );
    /// ```
    pub fn new(doc: impl Into<String>, op: &'static str) -> TxOpResult {
        TxOpResult {
            doc: doc.into(),
            op,
            version: None,
            value: None,
            index: None,
        }
    }

    /// As JSON: `{"doc", "op", "version"}` plus `value` (get) or `index` (append).
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("doc".into(), json!(self.doc));
        o.insert("op".into(), json!(self.op));
        o.insert(
            "version".into(),
            json!(self.version.as_ref().map(Version::as_str)),
        );
        if let Some(v) = &self.value {
            o.insert("value".into(), v.clone());
        }
        if let Some(i) = self.index {
            o.insert("index".into(), json!(i));
        }
        Value::Object(o)
    }
}

/// Why a transaction of operations did not commit.
#[derive(Debug)]
#[non_exhaustive]
pub enum TxOpError {
    /// A storage error, a failed precondition (`Conflict`, naming the document), a
    /// missing document (`NotFound`).
    Store(Error),
    /// A patch or append that does not apply to the document as it is.
    NotApplicable {
        /// The document.
        doc: String,
        /// Why.
        message: String,
    },
    /// The limits' deadline passed (or their cancellation flag was set) before the
    /// transaction was done: nothing was written, and its locks are released.
    Stopped(String),
}

impl From<Error> for TxOpError {
    fn from(e: Error) -> Self {
        TxOpError::Store(e)
    }
}

impl std::fmt::Display for TxOpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxOpError::Store(e) => write!(f, "{e}"),
            TxOpError::NotApplicable { doc, message } => {
                write!(f, "{doc}: {message} (the transaction wrote nothing)")
            }
            TxOpError::Stopped(message) => {
                write!(f, "{message} (the transaction wrote nothing)")
            }
        }
    }
}

impl std::error::Error for TxOpError {}

/// Parse the operations array. The error names the operation (by index) and what is
/// wrong: a usage error, nothing was touched.
///
/// # Errors
/// A message for anything that is not a well-formed operation, more than
/// [`MAX_TX_OPS`] operations, documents in more than [`MAX_TX_DIRS`] directories, a
/// patch over `limits`, or a bad pointer or version.
pub fn parse_tx_ops(input: &Value, limits: &patch::Limits) -> Result<Vec<TxOp>, String> {
    let Some(items) = input.as_array() else {
        return Err("the transaction must be a JSON array of operations".into());
    };
    if items.is_empty() {
        return Err("the transaction has no operations".into());
    }
    if items.len() > MAX_TX_OPS {
        return Err(format!(
            "the transaction has {} operations; at most {MAX_TX_OPS}",
            items.len()
        ));
    }
    let ops: Vec<TxOp> = items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_one(item, limits).map_err(|e| format!("operation {i}: {e}")))
        .collect::<Result<_, _>>()?;
    let mut dirs = std::collections::HashSet::new();
    for (i, op) in ops.iter().enumerate() {
        for (end, _) in op.doc.match_indices('/') {
            dirs.insert(&op.doc[..end]);
            if dirs.len() > MAX_TX_DIRS {
                return Err(format!(
                    "operation {i}: the transaction's documents are in more than \
                     {MAX_TX_DIRS} distinct directories; at most {MAX_TX_DIRS}"
                ));
            }
        }
    }
    Ok(ops)
}

fn parse_one(item: &Value, limits: &patch::Limits) -> Result<TxOp, String> {
    let Some(o) = item.as_object() else {
        return Err("not an object".into());
    };
    let text = |key: &str| -> Result<Option<&str>, String> {
        match o.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("\"{key}\" must be a string")),
        }
    };
    let op = text("op")?.ok_or("\"op\" is missing")?;
    let doc = text("doc")?.ok_or("\"doc\" is missing")?.to_string();
    let value = || o.get("value").cloned().ok_or("\"value\" is missing");
    let (kind, allowed): (TxOpKind, &[&str]) = match op {
        "put" => (TxOpKind::Put(value()?), &["value"]),
        "patch" => match (o.get("merge"), o.get("json_patch")) {
            (Some(m), None) => (parse_patch(PatchKind::Merge, m, limits)?, &["merge"]),
            (None, Some(p)) => (parse_patch(PatchKind::Json, p, limits)?, &["json_patch"]),
            _ => return Err("a patch takes one of \"merge\" or \"json_patch\"".into()),
        },
        "append" => {
            let ptr = text("pointer")?.unwrap_or("");
            let pointer = pointer::parse(ptr).map_err(|e| e.to_string())?;
            (
                TxOpKind::Append {
                    pointer,
                    value: value()?,
                },
                &["pointer", "value"],
            )
        }
        "delete" => (TxOpKind::Delete, &[]),
        "get" => (TxOpKind::Get, &[]),
        other => {
            return Err(format!(
                "unknown op {other:?} (put, patch, append, delete, get)"
            ));
        }
    };
    for key in o.keys() {
        let common = ["op", "doc", "if_match", "if_none_match"];
        if !common.contains(&key.as_str()) && !allowed.contains(&key.as_str()) {
            return Err(format!("\"{key}\" does not belong in a {op} operation"));
        }
    }
    // As in HTTP's If-Match (RFC 9110 13.1.1, strong comparison), a weak tag never
    // matches: `Version::parse` refuses it, saying why, so one tag means the same in a
    // header and in an operation.
    let if_match = text("if_match")?
        .map(|v| v.parse::<Version>().map_err(|e| format!("if_match: {e}")))
        .transpose()?;
    let if_none_match = match text("if_none_match")? {
        None => false,
        Some("*") => true,
        Some(_) => return Err("if_none_match takes only \"*\"".into()),
    };
    if if_match.is_some() && if_none_match {
        return Err("if_match and if_none_match exclude each other".into());
    }
    Ok(TxOp {
        doc,
        kind,
        if_match,
        if_none_match,
    })
}

fn parse_patch(kind: PatchKind, v: &Value, limits: &patch::Limits) -> Result<TxOpKind, String> {
    let bytes = serde_json::to_vec(v).map_err(|e| e.to_string())?;
    let p = Patch::parse(kind, &bytes, limits).map_err(|e| e.to_string())?;
    Ok(TxOpKind::Patch(kind, p))
}

fn not_applicable(doc: &str, message: String) -> TxOpError {
    TxOpError::NotApplicable {
        doc: doc.to_string(),
        message,
    }
}

fn missing(store: &Store, doc: &str, what: &str) -> TxOpError {
    let path = store.root().join(doc);
    TxOpError::Store(
        Error::new(
            ErrorKind::NotFound,
            format!("cannot {what} {}: it does not exist", path.display()),
        )
        .with_path(&path),
    )
}

/// The length of `v` as compact JSON, counted without holding the text.
fn compact_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a Value to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Whether one of `names` is the directory of another (`a.json` and `a.json/b.json`).
fn names_a_directory_of_another(names: &BTreeSet<String>) -> bool {
    names.iter().any(|n| {
        let dir = format!("{n}/");
        names
            .range(dir.clone()..)
            .next()
            .is_some_and(|m| m.starts_with(&dir))
    })
}

fn pointer_error(doc: &str, e: PointerError) -> TxOpError {
    match e {
        PointerError::NotFound(m) => {
            TxOpError::Store(Error::new(ErrorKind::NotFound, format!("{doc}: {m}")))
        }
        PointerError::Syntax(m) | PointerError::NotApplicable(m) => not_applicable(doc, m),
    }
}

impl Store {
    /// Apply `ops` in order as one [`Store::transaction`]: each operation sees what the
    /// ones before it did, its precondition included ([`Transaction::expect`](crate::Transaction::expect), under
    /// the locks): after an earlier put, patch or append of the document,
    /// `if_none_match` fails and `if_match` holds only for the version of the bytes
    /// written (the version a get then reports, and the document's once committed);
    /// after an earlier delete, `if_none_match` holds and `if_match` fails. One failing
    /// aborts all (nothing written). Returns one result per operation; a written
    /// document's version is its version after the transaction.
    ///
    /// # Errors
    /// [`TxOpError::Store`] with `Conflict` naming the document whose precondition
    /// failed and the operation (`operation 2: ...`, counted from 0), `NotFound` for a get, delete or JSON Patch of a missing document,
    /// `Serialize` when the values the gets answer total more than twice `limits`'
    /// result size (each get counts, also a second one of a document), or the kinds of
    /// [`Store::transaction`]; [`TxOpError::NotApplicable`] for a patch or
    /// append that does not apply.
    pub fn apply_tx(
        &self,
        ops: &[TxOp],
        limits: &patch::Limits,
    ) -> Result<Vec<TxOpResult>, TxOpError> {
        self.apply_tx_answering(ops, limits, &mut |_, _| Ok(()))
    }

    /// As [`Store::apply_tx`], calling `answer` with each get's document name and
    /// value inside the transaction, before anything is written: an error it returns
    /// aborts the transaction (nothing written) and is returned. For a binding whose
    /// language cannot hold every JSON value (a JavaScript number cannot hold `1e400`),
    /// so that a get it could not answer fails the whole transaction, instead of its
    /// answer failing after the writes committed.
    ///
    /// # Errors
    /// As [`Store::apply_tx`], and `answer`'s.
    pub fn apply_tx_answering(
        &self,
        ops: &[TxOp],
        limits: &patch::Limits,
        answer: &mut dyn FnMut(&str, &Value) -> Result<(), TxOpError>,
    ) -> Result<Vec<TxOpResult>, TxOpError> {
        // Every document is locked before the first operation runs, in the global
        // order: run one by one, a document that sorts before one already locked starts
        // the whole transaction again, and operations naming them in descending order
        // cost a restart each (quadratic in their number).
        let names = ops.iter().map(|o| o.doc.clone()).collect();
        let names = if names_a_directory_of_another(&names) {
            // Locking one would make the directory the other is written as (its lock
            // file's): taken one by one, the transaction refuses that first.
            BTreeSet::new()
        } else {
            names
        };
        let mut keys = Vec::with_capacity(ops.len());
        let (mut results, receipt) = self.run_tx(names, &mut |tx| {
            let mut results = Vec::with_capacity(ops.len());
            keys.clear();
            // Bytes of the values the gets answer, each one counted (one document got
            // 1000 times is 1000 copies in the answer).
            let mut answered = 0usize;
            for (i, op) in ops.iter().enumerate() {
                let doc = op.doc.as_str();
                limits.check_time(Some(i)).map_err(|e| {
                    TxOpError::Stopped(format!(
                        "the transaction was stopped before its operation {i} ({doc}): {e}"
                    ))
                })?;
                keys.push(tx.key(doc)?);
                // Against the document as the operations before this one left it
                // (`expect` sees the transaction's own writes and deletes).
                let expected = match (&op.if_match, op.if_none_match) {
                    (Some(v), _) => Some(Some(v)),
                    (None, true) => Some(None),
                    (None, false) => None,
                };
                if let Some(expected) = expected {
                    tx.expect(doc, expected).map_err(|e| {
                        if e.kind() == ErrorKind::Conflict {
                            e.within(&format!("operation {i}"))
                        } else {
                            e
                        }
                    })?;
                }
                let mut r = TxOpResult::new(op.doc.clone(), "");
                match &op.kind {
                    TxOpKind::Put(v) => {
                        r.op = "put";
                        tx.write(doc, v)?;
                    }
                    TxOpKind::Patch(kind, p) => {
                        r.op = "patch";
                        let mut v = match (tx.read::<Value>(doc)?, kind) {
                            (Some(v), _) => v,
                            (None, PatchKind::Merge) => json!({}),
                            (None, _) => return Err(missing(self, doc, "patch")),
                        };
                        p.clone().apply(&mut v, limits).map_err(|e| {
                            if e.kind() == patch::PatchErrorKind::Stopped {
                                TxOpError::Stopped(format!("{doc}: {e}"))
                            } else {
                                not_applicable(doc, e.to_string())
                            }
                        })?;
                        tx.write(doc, &v)?;
                    }
                    TxOpKind::Append { pointer, value } => {
                        r.op = "append";
                        let mut v = match tx.read::<Value>(doc)? {
                            Some(v) => v,
                            None if pointer.is_empty() => json!([]),
                            None => json!({}),
                        };
                        let i = pointer::append(&mut v, pointer, value.clone())
                            .map_err(|e| pointer_error(doc, e))?;
                        r.index = Some(i);
                        tx.write(doc, &v)?;
                    }
                    TxOpKind::Delete => {
                        r.op = "delete";
                        tx.delete(doc)?;
                    }
                    TxOpKind::Get => {
                        r.op = "get";
                        let v = tx
                            .read::<Value>(doc)?
                            .ok_or_else(|| missing(self, doc, "get"))?;
                        answered = answered.saturating_add(compact_len(&v));
                        let most = limits.result_bytes().saturating_mul(2);
                        if answered > most {
                            let path = self.root().join(doc);
                            return Err(TxOpError::Store(
                                Error::new(
                                    ErrorKind::Serialize,
                                    format!(
                                        "cannot answer the transaction's get of {}: its gets \
                                         total more than {most} bytes (twice the patch result \
                                         limit); nothing was written",
                                        path.display()
                                    ),
                                )
                                .with_path(&path),
                            ));
                        }
                        answer(doc, &v)?;
                        r.value = Some(v);
                        r.version = tx.version_seen(doc)?;
                    }
                }
                results.push(r);
            }
            Ok::<_, TxOpError>(results)
        })?;
        // By resolved path: a document written through a symlink in the store is the
        // document the link names, whose receipt carries the other name.
        for (r, key) in results.iter_mut().zip(&keys) {
            if r.op == "get" {
                continue;
            }
            if let Some(d) = receipt.documents.iter().find(|d| d.path == *key) {
                r.version = d.version.clone();
            }
        }
        Ok(results)
    }
}
