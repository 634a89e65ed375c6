//! `statefile import DIR --to postgres://…` and `statefile export postgres://… --to DIR`:
//! every document and its kept versions copied across, byte for byte, so each version
//! (the ETag) is the same on both sides, and checked after copying.
//!
//! Re-runnable: a document whose current version and kept versions already match on
//! the target is left alone; one that differs is replaced on the target (for import,
//! in one transaction with its backups). Documents only on the target are left alone.
//!
//! A round trip keeps everything the API can reach: deleted documents (backups without
//! a document, which `restore` brings back and `/backups` lists) are copied too, as
//! deleted documents with the same kept versions.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use statefile::{ErrorKind, Version};

use super::{Failure, PgStore, begin};

/// One stored version: its exact bytes and when it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    pub bytes: Vec<u8>,
    /// Seconds since the Unix epoch.
    pub written_unix: f64,
}

impl Kept {
    pub fn version(&self) -> Version {
        Version::of(&self.bytes)
    }
}

/// A document and its kept versions (newest first); `current` is `None` for a deleted
/// document, whose backups are then never empty.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub current: Option<Kept>,
    pub backups: Vec<Kept>,
}

/// A document's version (`None`: deleted) and its backups' versions, newest first.
type Versions = (Option<Version>, Vec<Version>);

impl History {
    fn versions(&self) -> Versions {
        (
            self.current.as_ref().map(Kept::version),
            self.backups.iter().map(Kept::version).collect(),
        )
    }

    /// The current version, as reports show it (`None`: deleted).
    fn shown(&self) -> Option<String> {
        self.current
            .as_ref()
            .map(|k| k.version().as_str().to_string())
    }
}

/// What happened to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Copied (or replaced), and the target's version checked; `version` is `None` for
    /// a deleted document (its backups copied).
    Copied {
        version: Option<String>,
        backups: usize,
    },
    /// The target already had the same version (or was deleted alike) and backups.
    Unchanged { version: Option<String> },
    /// Not copied: why (a damaged document, a name the target refuses, ...).
    Failed(String),
}

/// Every document's outcome, by name.
#[derive(Debug, Default)]
pub struct Report {
    pub documents: Vec<(String, Outcome)>,
    /// Things worth saying that are not failures (a damaged backup left behind...).
    pub notes: Vec<String>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }
    pub fn copied(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Copied { .. }))
    }
    pub fn unchanged(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Unchanged { .. }))
    }
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.documents.iter().filter(|(_, o)| f(o)).count()
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Refuse to copy `what` if its text holds statefile's reserved key: the database would
/// keep it, and every update or export would then read it as a different value.
fn refuse_reserved_key(bytes: &[u8], what: &str) -> Result<(), String> {
    match statefile::reserved_key_in(bytes) {
        Some(msg) => Err(format!("{what} cannot be copied: {msg}")),
        None => Ok(()),
    }
}

/// Read `name` and its backups from the directory store, under the document's lock
/// (so no writer rotates them meanwhile).
fn read_file_history(
    store: &statefile::Store,
    name: &str,
    notes: &mut Vec<String>,
) -> Result<History, String> {
    let doc = store.doc::<Value>(name).map_err(|e| e.to_string())?;
    let _lock = doc.lock().map_err(|e| e.to_string())?;
    let current = if doc.exists().map_err(|e| e.to_string())? {
        let current = doc.read_bytes().map_err(|e| match e.kind() {
            ErrorKind::Corrupt => format!("{e} (repair it with `statefile recover` first)"),
            _ => e.to_string(),
        })?;
        let modified = std::fs::metadata(doc.path())
            .and_then(|m| m.modified())
            .map_err(|e| format!("cannot stat {}: {e}", doc.path().display()))?;
        refuse_reserved_key(&current.value, "it")?;
        Some(Kept {
            bytes: current.value,
            written_unix: unix(modified),
        })
    } else {
        None
    };
    let mut backups = Vec::new();
    for b in doc.backups().map_err(|e| e.to_string())? {
        if !b.parses {
            notes.push(format!(
                "{name}: backup {} ({}) is not valid JSON and was not copied",
                b.number,
                b.path.display()
            ));
            continue;
        }
        let read = doc
            .read_backup(&statefile::BackupRef::Number(b.number))
            .map_err(|e| e.to_string())?;
        if read.version != b.version {
            return Err(format!(
                "backup {} changed while it was read",
                b.path.display()
            ));
        }
        refuse_reserved_key(&read.value, &format!("its backup {}", b.number))?;
        backups.push(Kept {
            bytes: read.value,
            written_unix: unix(b.modified),
        });
    }
    if current.is_none() && backups.is_empty() {
        return Err("deleted, and no backup of it is left to copy".to_string());
    }
    Ok(History { current, backups })
}

/// Copy every document of `from` (and its backups) into `to`.
///
/// # Errors
/// Only when the directory cannot be listed; each document's failure is in the report.
pub fn import(
    from: &statefile::Store,
    to: &PgStore,
    mut progress: impl FnMut(&str),
) -> Result<Report, String> {
    let mut report = Report::default();
    let mut names = from.list("").map_err(|e| e.to_string())?;
    names.extend(from.list_deleted("").map_err(|e| e.to_string())?);
    names.sort();
    names.dedup();
    for name in names {
        progress(&name);
        let outcome = match read_file_history(from, &name, &mut report.notes) {
            Err(why) => Outcome::Failed(why),
            Ok(h) => match to.replace_history(&name, &h) {
                Err(e) => Outcome::Failed(e.log_text()),
                Ok(false) => Outcome::Unchanged { version: h.shown() },
                Ok(true) => match to.history(&name) {
                    Ok(Some(back)) if back.versions() == h.versions() => Outcome::Copied {
                        version: h.shown(),
                        backups: h.backups.len(),
                    },
                    Ok(_) => Outcome::Failed(
                        "the database holds other versions than were copied".to_string(),
                    ),
                    Err(e) => Outcome::Failed(format!("cannot check the copy: {}", e.log_text())),
                },
            },
        };
        report.documents.push((name, outcome));
    }
    Ok(report)
}

/// The directory store's versions of `name` (`(None, [])` if it has none).
fn file_versions(store: &statefile::Store, name: &str) -> Result<Versions, String> {
    let doc = store.doc::<Value>(name).map_err(|e| e.to_string())?;
    let current = if doc.exists().map_err(|e| e.to_string())? {
        Some(doc.version().map_err(|e| e.to_string())?)
    } else {
        None
    };
    let backups = doc
        .backups()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|b| b.version)
        .collect();
    Ok((current, backups))
}

/// Write `h` into the directory store through the library: the backups oldest first,
/// then the document, each an ordinary atomic write of the parsed value that keeps the
/// one before as its backup, so the directory ends with the same document and backups;
/// a deleted document is then deleted (its last version becoming the newest backup).
/// A document that already exists there with other versions is replaced the same way
/// (its old versions are then older backups). Bytes in the store's layout (everything
/// statefile wrote) come out identical; others are laid out anew.
fn write_file_history(store: &statefile::Store, name: &str, h: &History) -> Result<(), String> {
    let path = store
        .doc::<Value>(name)
        .map_err(|e| e.to_string())?
        .path()
        .to_path_buf();
    let opts = store
        .options()
        .clone()
        .backups(store.options().get_backups().max(h.backups.len()))
        .create_dirs(true);
    let doc = statefile::Doc::<Value>::open_with(path, opts).map_err(|e| e.to_string())?;
    for k in h.backups.iter().rev().chain(h.current.as_ref()) {
        let value: Value = statefile::parse_json(&k.bytes, std::path::Path::new(name))
            .map_err(|e| format!("a version in the database cannot be written: {e}"))?;
        doc.write(&value).map_err(|e| e.to_string())?;
    }
    if h.current.is_none() {
        doc.delete().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Copy every document of `from` (and its backups) into the directory store `to`.
///
/// # Errors
/// Only when the database cannot be listed; each document's failure is in the report.
pub fn export(
    from: &PgStore,
    to: &statefile::Store,
    mut progress: impl FnMut(&str),
) -> Result<Report, String> {
    let mut report = Report::default();
    let names = from.names_with_history().map_err(|e| e.log_text())?;
    for name in names {
        progress(&name);
        let outcome = export_one(from, to, &name, &mut report.notes);
        report.documents.push((name, outcome));
    }
    Ok(report)
}

/// The versions `h` has once written into `to`: its own where its bytes are in the
/// store's layout (all that statefile writes), else those of the same values laid out.
/// The outer `Option` of the current version is `None` for a deleted document; the
/// inner one when a version cannot be laid out.
fn expected_in(
    to: &statefile::Store,
    h: &History,
) -> (Option<Option<Version>>, Vec<Option<Version>>) {
    let laid_out = |k: &Kept| {
        statefile::parse_json::<Value>(&k.bytes, std::path::Path::new(""))
            .ok()
            .and_then(|v| statefile::to_vec(&v, to.options().get_format()).ok())
            .map(|b| Version::of(&b))
    };
    (
        h.current.as_ref().map(laid_out),
        h.backups.iter().map(laid_out).collect(),
    )
}

fn export_one(
    from: &PgStore,
    to: &statefile::Store,
    name: &str,
    notes: &mut Vec<String>,
) -> Outcome {
    if let Err(e) = super::check_name(name) {
        return Outcome::Failed(e.log_text());
    }
    let h = match from.history(name) {
        Ok(Some(h)) => h,
        Ok(None) => return Outcome::Failed("deleted while exporting".to_string()),
        Err(e) => return Outcome::Failed(e.log_text()),
    };
    let (expect_current, expect_backups) = expected_in(to, &h);
    let holds_it = |have: &Versions| {
        have.0.as_ref().map(Some) == expect_current.as_ref().map(Option::as_ref)
            && have.1.len() >= expect_backups.len()
            && have
                .1
                .iter()
                .zip(&expect_backups)
                .all(|(b, e)| Some(b) == e.as_ref())
    };
    let unchanged = match file_versions(to, name) {
        Err(e) => return Outcome::Failed(e),
        Ok(have) => holds_it(&have),
    };
    let source = h.current.as_ref().map(Kept::version);
    if !unchanged && let Err(e) = write_file_history(to, name, &h) {
        return Outcome::Failed(e);
    }
    let current = match file_versions(to, name) {
        Ok(have) if holds_it(&have) => have.0,
        Ok(_) => {
            return Outcome::Failed(
                "the directory holds other versions than were copied".to_string(),
            );
        }
        Err(e) => return Outcome::Failed(format!("cannot check the copy: {e}")),
    };
    if let (Some(source), Some(current)) = (&source, &current)
        && current != source
        && !unchanged
    {
        notes.push(format!(
            "{name}: its bytes were not in the directory's layout and were laid out anew \
             (version {source} is {current} there)"
        ));
    }
    let version = current.map(|v| v.as_str().to_string());
    if unchanged {
        Outcome::Unchanged { version }
    } else {
        Outcome::Copied {
            version,
            backups: h.backups.len(),
        }
    }
}

impl PgStore {
    /// The names of the documents and of the deleted documents that have backups,
    /// sorted.
    pub(crate) fn names_with_history(&self) -> Result<Vec<String>, Failure> {
        self.block(async {
            let mut c = self.conn().await?;
            let rows = c
                .query(
                    "SELECT name FROM statefile_documents
                     UNION SELECT name FROM statefile_backups ORDER BY name",
                    &[],
                )
                .await?;
            c.done();
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    /// `name`'s document (if it exists) and kept versions; `None` if it has neither.
    pub(crate) fn history(&self, name: &str) -> Result<Option<History>, Failure> {
        self.block(async {
            let mut c = self.conn().await?;
            let current = c
                .query_opt(
                    "SELECT body, extract(epoch FROM written_at)::float8
                     FROM statefile_documents WHERE name = $1",
                    &[&name],
                )
                .await?;
            let backups = c
                .query(
                    "SELECT body, extract(epoch FROM written_at)::float8
                     FROM statefile_backups WHERE name = $1 ORDER BY seq DESC",
                    &[&name],
                )
                .await?;
            c.done();
            let kept = |r: &tokio_postgres::Row| Kept {
                bytes: r.get(0),
                written_unix: r.get(1),
            };
            if current.is_none() && backups.is_empty() {
                return Ok(None);
            }
            Ok(Some(History {
                current: current.as_ref().map(kept),
                backups: backups.iter().map(kept).collect(),
            }))
        })
    }

    /// Make `name` hold exactly `h` (document and backups, with their times), in one
    /// transaction. `false` if it already held the same versions.
    pub(crate) fn replace_history(&self, name: &str, h: &History) -> Result<bool, Failure> {
        super::check_name(name)?;
        let total: usize = h
            .backups
            .iter()
            .chain(&h.current)
            .map(|k| k.bytes.len())
            .sum();
        if let Some(k) = h
            .backups
            .iter()
            .chain(&h.current)
            .find(|k| k.bytes.len() > self.opts.max_document_bytes)
        {
            return Err(Failure::Lib(statefile::Error::new(
                ErrorKind::Serialize,
                format!(
                    "{name} has a version of {} bytes, over the backend's limit of {} bytes per document",
                    k.bytes.len(),
                    self.opts.max_document_bytes
                ),
            )));
        }
        tracing::debug!(document = name, bytes = total, "importing");
        self.block(self.with_conn(async |c| {
            let tx = begin(c).await?;
            let current = self.lock(&tx, name, false).await?;
            let have: Vec<String> = tx
                .query(
                    "SELECT version FROM statefile_backups WHERE name = $1 ORDER BY seq DESC",
                    &[&name],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let (want_current, want_backups) = h.versions();
            let same = current.as_ref().map(|c| &c.version) == want_current.as_ref()
                && have
                    .iter()
                    .map(String::as_str)
                    .eq(want_backups.iter().map(Version::as_str));
            if same {
                tx.rollback().await?;
                return Ok(false);
            }
            if current.is_none() {
                super::record_directories(&tx, name).await?;
            }
            tx.execute("DELETE FROM statefile_backups WHERE name = $1", &[&name])
                .await?;
            for k in h.backups.iter().rev() {
                tx.execute(
                    "INSERT INTO statefile_backups (name, body, version, written_at)
                     VALUES ($1, $2, $3, to_timestamp($4))",
                    &[&name, &k.bytes, &k.version().as_str(), &k.written_unix],
                )
                .await?;
            }
            match (&h.current, &want_current) {
                (Some(k), Some(v)) => {
                    tx.execute(
                        "INSERT INTO statefile_documents (name, body, version, written_at)
                         VALUES ($1, $2, $3, to_timestamp($4))
                         ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body,
                             version = EXCLUDED.version, written_at = EXCLUDED.written_at",
                        &[&name, &k.bytes, &v.as_str(), &k.written_unix],
                    )
                    .await?;
                }
                _ => {
                    tx.execute("DELETE FROM statefile_documents WHERE name = $1", &[&name])
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(true)
        }))
    }
}
