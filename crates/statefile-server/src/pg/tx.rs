//! `POST /v1/tx` on PostgreSQL: the operations of `statefile tx` as one SQL transaction.
//!
//! Locks, in one global order so two transactions never wait for each other in a cycle:
//! first the advisory locks that creators of a name take (`advisory_locks`: every
//! ancestor of every document that could be a document shared, every document
//! exclusive; or, for more than 16 such names, their buckets exclusive, so no
//! transaction holds more than 32 advisory locks however many names it has), whether
//! or not the document exists, so no other transaction or creator can make or take any
//! of them; then the rows that exist, `SELECT ... FOR UPDATE` in name order. A single-document
//! write of an existing row holds only that row and waits for nothing else, so it
//! cannot close a cycle either. A wait past the lock timeout fails the whole transaction.
//!
//! Under the locks the operations run in order on the documents as they were when
//! locked, with the file backend's rules (`Store::apply_tx`): each precondition is
//! checked against the version found at the lock, a read sees the transaction's own
//! earlier writes, a document's bytes are the library's serialization in the store's
//! format, so every version (ETag) is the one the file backend computes. Then the new
//! versions are stored, each replaced or deleted one kept as a backup as a single write
//! keeps it, and the transaction commits. Any refusal or failure rolls back everything.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use statefile::patch::{self, PatchKind};
use statefile::pointer::{self, PointerError};
use statefile::{ErrorKind, TxOp, TxOpKind, TxOpResult, Version};

use super::failure::Failure;
use super::{ADVISORY_LOCKS, Current, PgStore, advisory_locks, begin, document_ancestors};
use crate::store::{StoreError, TxFailed};

/// One document of the transaction.
struct Held {
    /// What was there when it was locked (`None`: missing).
    found: Option<Current>,
    /// The change to store, if any.
    change: Option<Change>,
}

enum Change {
    Put(Vec<u8>),
    Delete,
}

impl Held {
    /// The value the transaction sees: its own last write, else what was stored.
    fn read(&self, name: &str) -> Result<Option<Value>, TxFailed> {
        let bytes = match (&self.change, &self.found) {
            (Some(Change::Put(b)), _) => b.as_slice(),
            (Some(Change::Delete), _) | (None, None) => return Ok(None),
            (None, Some(cur)) => cur.body.as_deref().unwrap_or_default(),
        };
        statefile::parse_json(bytes, std::path::Path::new(name))
            .map(Some)
            .map_err(|e| store_error(name, e.into()))
    }

    fn version(&self) -> Option<&Version> {
        self.found.as_ref().map(|c| &c.version)
    }

    /// The version of what [`Held::read`] returns: of the transaction's own last
    /// write (what the document has once committed), else what was stored.
    fn version_seen(&self) -> Option<Version> {
        match &self.change {
            Some(Change::Put(bytes)) => Some(Version::of(bytes)),
            Some(Change::Delete) => None,
            None => self.version().cloned(),
        }
    }

    /// The length of the bytes [`Held::read`] parses (0: none).
    fn read_len(&self) -> usize {
        match (&self.change, &self.found) {
            (Some(Change::Put(b)), _) => b.len(),
            (Some(Change::Delete), _) | (None, None) => 0,
            (None, Some(cur)) => cur.body.as_ref().map_or(0, Vec::len),
        }
    }
}

fn store_error(doc: &str, error: StoreError) -> TxFailed {
    TxFailed::Store {
        doc: Some(doc.to_string()),
        error,
    }
}

fn missing(doc: &str, what: &str) -> TxFailed {
    store_error(
        doc,
        statefile::Error::new(
            ErrorKind::NotFound,
            format!("cannot {what} {doc}: it does not exist"),
        )
        .into(),
    )
}

/// `doc` cannot be made or used: a document (or a directory) is in the way of its path.
fn clash(doc: &str) -> TxFailed {
    store_error(
        doc,
        statefile::Error::new(
            ErrorKind::InvalidName,
            format!("cannot use {doc}: a document is in the way of its path"),
        )
        .into(),
    )
}

fn not_applicable(doc: &str, message: String) -> TxFailed {
    TxFailed::NotApplicable {
        doc: doc.to_string(),
        message,
    }
}

/// The directories `name` is in, shallowest first (`a/b/c.json`: `a`, `a/b`).
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('/').map(|(i, _)| &name[..i])
}

/// A transaction's outcome inside the database call: committed results, or a refusal
/// (rolled back) for the client.
type Outcome = Result<Vec<TxOpResult>, TxFailed>;

impl PgStore {
    /// The most bytes of documents one transaction reads and writes: twice the
    /// per-document limit, so an operation that works on its own (read a document,
    /// write its new version) works inside a transaction too.
    fn tx_byte_limit(&self) -> usize {
        self.opts.max_document_bytes.saturating_mul(2)
    }

    /// Apply `ops` as one SQL transaction (see the module's docs).
    pub(super) async fn transaction_tx(
        &self,
        ops: &[TxOp],
        limits: &patch::Limits,
    ) -> Result<Outcome, Failure> {
        let names: BTreeSet<&str> = ops.iter().map(|o| o.doc.as_str()).collect();
        let with_body: Vec<&str> = ops
            .iter()
            .filter(|o| !matches!(o.kind, TxOpKind::Put(_) | TxOpKind::Delete))
            .map(|o| o.doc.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // The advisory locks of every name, whether it exists or not: bounded (see
        // `advisory_locks`), in the global order.
        let (keys, exclusive) = advisory_locks(names.iter().copied());
        let all: Vec<&str> = names.iter().copied().collect();
        self.with_conn(async |c| {
            let tx = begin(c).await?;
            let stmt = tx.prepare_cached(ADVISORY_LOCKS).await?;
            tx.query_one(&stmt, &[&keys, &exclusive]).await?;
            let stmt = tx
                .prepare_cached(
                    "SELECT name, version, octet_length(body)::bigint FROM statefile_documents
                     WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE",
                )
                .await?;
            let mut held: BTreeMap<&str, Held> = names
                .iter()
                .map(|n| {
                    (
                        *n,
                        Held {
                            found: None,
                            change: None,
                        },
                    )
                })
                .collect();
            let mut budget = self.tx_byte_limit();
            for row in tx.query(&stmt, &[&all]).await? {
                let name: &str = row.get(0);
                let version: &str = row.get(1);
                let len = usize::try_from(row.get::<_, i64>(2)).unwrap_or(usize::MAX);
                let Some(h) = held.get_mut(name) else {
                    continue;
                };
                if with_body.contains(&name) {
                    match budget.checked_sub(len) {
                        Some(left) => budget = left,
                        None => {
                            tx.rollback().await?;
                            return Ok(Err(self.too_big(name)));
                        }
                    }
                }
                h.found = Some(Current::new(version, None));
            }
            let stmt = tx
                .prepare_cached(
                    "SELECT name, body FROM statefile_documents WHERE name = ANY($1::text[])",
                )
                .await?;
            for row in tx.query(&stmt, &[&with_body]).await? {
                let name: &str = row.get(0);
                if let Some(Held {
                    found: Some(cur), ..
                }) = held.get_mut(name)
                {
                    cur.body = Some(row.get(1));
                }
            }
            // Stored documents in the way of a name's path: as on the file backend,
            // every operation on a name below one is refused (they hold shared
            // advisory locks, so no creator can make one meanwhile).
            let above: Vec<&str> = names
                .iter()
                .flat_map(|n| document_ancestors(n))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut in_the_way = BTreeSet::new();
            if !above.is_empty() {
                let stmt = tx
                    .prepare_cached(
                        "SELECT name FROM statefile_documents WHERE name = ANY($1::text[])",
                    )
                    .await?;
                for row in tx.query(&stmt, &[&above]).await? {
                    in_the_way.insert(row.get::<_, String>(0));
                }
            }
            let results = match self.apply(ops, limits, &mut held, &in_the_way, budget) {
                Ok(r) => r,
                Err(f) => {
                    tx.rollback().await?;
                    return Ok(Err(f));
                }
            };
            if let Some(refused) = self.check_paths(&tx, &held).await? {
                tx.rollback().await?;
                return Ok(Err(refused));
            }
            self.store_all(&tx, &held).await?;
            tx.commit().await?;
            Ok(Ok(results))
        })
        .await
    }

    fn too_big(&self, doc: &str) -> TxFailed {
        let e = statefile::Error::new(
            ErrorKind::Serialize,
            format!(
                "cannot apply the transaction: its documents total more than the backend's \
                 limit of {} bytes per transaction (twice the limit per document)",
                self.tx_byte_limit()
            ),
        );
        store_error(doc, e.into())
    }

    /// The operations, in order, on the locked documents (nothing stored yet), as
    /// `Store::apply_tx` runs them on files. `in_the_way`: the stored documents among
    /// the names' directories. `budget`: bytes left for new versions.
    fn apply(
        &self,
        ops: &[TxOp],
        limits: &patch::Limits,
        held: &mut BTreeMap<&str, Held>,
        in_the_way: &BTreeSet<String>,
        mut budget: usize,
    ) -> Outcome {
        let mut results = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let doc = op.doc.as_str();
            // A write of a document that an earlier operation used as a directory (it
            // named a document below): the file backend holds that one's lock, in
            // this name's directory, and refuses the write, even if this transaction
            // deletes the document again.
            let writes = matches!(
                op.kind,
                TxOpKind::Put(_) | TxOpKind::Patch(..) | TxOpKind::Append { .. }
            );
            if writes
                && ops[..i].iter().any(|o| {
                    o.doc
                        .strip_prefix(doc)
                        .is_some_and(|rest| rest.starts_with('/'))
                })
            {
                return Err(clash(doc));
            }
            // A document (stored, or written by this transaction) where a directory of
            // this name's path would be: the file backend cannot even lock the name.
            if ancestors(doc).any(|a| {
                in_the_way.contains(a)
                    || held
                        .get(a)
                        .is_some_and(|h| matches!(h.change, Some(Change::Put(_))))
            }) {
                return Err(clash(doc));
            }
            let h = held.get_mut(doc).expect("every document is held");
            let expected = match (&op.if_match, op.if_none_match) {
                (Some(v), _) => Some(Some(v)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            // Against the document as the operations before this one left it, as
            // `Transaction::expect` checks on files: after a write of it, the version
            // of the bytes written; after a delete, none.
            let seen = expected.map(|_| h.version_seen());
            if let (Some(expected), Some(seen)) = (expected, seen)
                && seen.as_ref() != expected
            {
                let why = format!(
                    "document {doc} is not at the version its operation expected \
                     (if_match / if_none_match): nothing was written"
                );
                let e = StoreError::new(
                    ErrorKind::Conflict,
                    format!(
                        "operation {i}: {doc} is at version {} as the transaction sees it, \
                         the operation expected {}",
                        seen.as_ref().map_or("none", Version::as_str),
                        expected.map_or("none", Version::as_str)
                    ),
                )
                .with_reason(why);
                return Err(store_error(doc, e));
            }
            let mut r;
            let new = match &op.kind {
                TxOpKind::Put(v) => {
                    r = TxOpResult::new(doc, "put");
                    v.clone()
                }
                TxOpKind::Patch(kind, p) => {
                    r = TxOpResult::new(doc, "patch");
                    let mut v = match (h.read(doc)?, kind) {
                        (Some(v), _) => v,
                        (None, PatchKind::Merge) => json!({}),
                        (None, _) => return Err(missing(doc, "patch")),
                    };
                    p.clone()
                        .apply(&mut v, limits)
                        .map_err(|e| not_applicable(doc, e.to_string()))?;
                    v
                }
                TxOpKind::Append { pointer, value } => {
                    r = TxOpResult::new(doc, "append");
                    let mut v = match h.read(doc)? {
                        Some(v) => v,
                        None if pointer.is_empty() => json!([]),
                        None => json!({}),
                    };
                    let i =
                        pointer::append(&mut v, pointer, value.clone()).map_err(|e| match e {
                            PointerError::NotFound(m) => {
                                TxFailed::PointerNotFound(format!("{doc}: {m}"))
                            }
                            PointerError::Syntax(m) | PointerError::NotApplicable(m) => {
                                not_applicable(doc, m)
                            }
                        })?;
                    r.index = Some(i);
                    v
                }
                TxOpKind::Delete => {
                    // The document as the transaction sees it: one it wrote is deleted
                    // too (one it created is then not stored at all).
                    let exists = match &h.change {
                        Some(Change::Put(_)) => true,
                        Some(Change::Delete) => false,
                        None => h.found.is_some(),
                    };
                    if !exists {
                        return Err(missing(doc, "delete"));
                    }
                    h.change = h.found.as_ref().map(|_| Change::Delete);
                    results.push(TxOpResult::new(doc, "delete"));
                    continue;
                }
                TxOpKind::Get => {
                    // Each get's value is a copy in the answer: it counts every time.
                    match budget.checked_sub(h.read_len()) {
                        Some(left) => budget = left,
                        None => return Err(self.too_big(doc)),
                    }
                    r = TxOpResult::new(doc, "get");
                    r.value = Some(h.read(doc)?.ok_or_else(|| missing(doc, "get"))?);
                    r.version = h.version_seen();
                    results.push(r);
                    continue;
                }
                _ => {
                    return Err(TxFailed::Unsupported(format!(
                        "an operation on {doc} that this server's PostgreSQL backend does not know"
                    )));
                }
            };
            let bytes = self
                .serialize(doc, &new)
                .map_err(|f| store_error(doc, f.into_store()))?;
            match budget.checked_sub(bytes.len()) {
                Some(left) => budget = left,
                None => return Err(self.too_big(doc)),
            }
            h.change = Some(Change::Put(bytes));
            results.push(r);
        }
        // A written document's version is the one it has after the transaction.
        for r in results.iter_mut().filter(|r| r.op != "get") {
            r.version = match &held[r.doc.as_str()].change {
                Some(Change::Put(bytes)) => Some(Version::of(bytes)),
                _ => None,
            };
        }
        Ok(results)
    }

    /// Refuse a document the transaction creates where the file backend could not
    /// make it: below a document (stored, or written by this transaction), or where a
    /// directory of that name was made for other documents (or is made by this one).
    async fn check_paths(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        held: &BTreeMap<&str, Held>,
    ) -> Result<Option<TxFailed>, Failure> {
        let created: Vec<&str> = held
            .iter()
            .filter(|(_, h)| h.found.is_none() && matches!(h.change, Some(Change::Put(_))))
            .map(|(n, _)| *n)
            .collect();
        let writes = |n: &str| {
            held.get(n)
                .is_some_and(|h| matches!(h.change, Some(Change::Put(_))))
        };
        for doc in &created {
            if ancestors(doc).any(writes) || created.iter().any(|o| ancestors(o).any(|a| a == *doc))
            {
                return Ok(Some(clash(doc)));
            }
        }
        let stmt = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM statefile_documents WHERE name = ANY($1::text[])),
                        EXISTS (SELECT 1 FROM statefile_directories WHERE name = $2)",
            )
            .await?;
        for doc in created {
            let up: Vec<&str> = document_ancestors(doc).collect();
            let row = tx.query_one(&stmt, &[&up, &doc]).await?;
            if row.get::<_, bool>(0) || row.get::<_, bool>(1) {
                return Ok(Some(clash(doc)));
            }
        }
        Ok(None)
    }

    /// Store every change, under the locks, in name order; the directories of created
    /// documents first, all in one sorted insert (so two transactions recording the
    /// same directories take them in the same order).
    async fn store_all(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        held: &BTreeMap<&str, Held>,
    ) -> Result<(), Failure> {
        let dirs: BTreeSet<&str> = held
            .iter()
            .filter(|(_, h)| h.found.is_none() && h.change.is_some())
            .flat_map(|(n, _)| ancestors(n))
            .collect();
        if !dirs.is_empty() {
            let dirs: Vec<&str> = dirs.into_iter().collect();
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO statefile_directories (name)
                     SELECT d FROM unnest($1::text[]) AS t(d)
                     WHERE NOT EXISTS (SELECT 1 FROM statefile_directories WHERE name = t.d)
                     ORDER BY d COLLATE \"C\"
                     ON CONFLICT (name) DO NOTHING",
                )
                .await?;
            tx.execute(&stmt, &[&dirs]).await?;
        }
        for (name, h) in held {
            match &h.change {
                None => {}
                Some(Change::Put(bytes)) => {
                    let version = Version::of(bytes);
                    self.store(
                        tx,
                        name,
                        h.found.is_some(),
                        bytes,
                        &version,
                        self.opts.backups,
                    )
                    .await?;
                }
                Some(Change::Delete) => self.remove(tx, name).await?,
            }
        }
        Ok(())
    }
}
