//! Multi-document transactions (journal mode): [`Store::transaction`] and
//! [`Store::read_tx`].
//!
//! A transaction locks each document it touches, in one global order (the documents'
//! resolved paths), so two transactions never wait for each other in a cycle: a
//! document that sorts before one already locked makes the attempt start again with
//! every document seen so far locked up front, in order. Reads are under the locks;
//! writes are kept in memory until the closure returns, then committed as one journal
//! record (see `atomic::commit_many`): after a crash, every document of a transaction
//! has its new version or none has.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic::{self, Change, Current, Dirs, Locked, Part, Plan};
use crate::error::{Error, ErrorKind, Result};
use crate::json::SerializeError;
use crate::names::Target;
use crate::store::Store;
use crate::version::{OverLimit, Version, over_limit};
use crate::{file, json, names};

/// What a committed transaction did to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TxDocument {
    /// The document's name in the store, as the transaction named it.
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// Its new version (`None`: deleted).
    pub version: Option<Version>,
    /// The version it replaced (`None`: it did not exist).
    pub previous: Option<Version>,
}

/// `below` and `above` (a directory of `below`'s path) in one transaction: refused.
fn in_the_way(below: &str, above: &str) -> Error {
    Error::new(
        ErrorKind::InvalidName,
        format!(
            "a transaction cannot write {above} and use {below}, below it: {above} would \
             have to be a document and a directory at once (the transaction wrote nothing)"
        ),
    )
}

/// What [`Store::transaction`] committed: the documents written or deleted, in the
/// order of their paths. Empty for a transaction that only read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TxReceipt {
    /// One per document changed.
    pub documents: Vec<TxDocument>,
}

/// A document the transaction holds the lock of.
#[derive(Debug)]
struct Held {
    name: String,
    w: Locked,
    /// What is there (version looked at), as of when it was locked.
    current: Current,
    /// The bytes `current` was looked at in, kept (within [`KEEP_BYTES`] for the whole
    /// transaction) until the transaction changes the document: what
    /// [`Transaction::read`] parses, rather than reading the file a second time.
    looked: Option<Vec<u8>>,
    /// The change to commit, if any.
    change: Option<Pending>,
}

#[derive(Debug)]
enum Pending {
    Put(Vec<u8>),
    Delete,
}

/// At most this many bytes of the documents a transaction locked are kept from the
/// look at them under the lock (see `Held::looked`); past it, a read reads the file.
const KEEP_BYTES: u64 = 8 << 20;

/// The documents of a running transaction: see [`Store::transaction`].
#[derive(Debug)]
pub struct Transaction<'s> {
    store: &'s Store,
    /// Locked documents by resolved path: the global lock order.
    held: BTreeMap<PathBuf, Held>,
    /// Every name the transaction has bound to a held document, resolved once, when
    /// first held (aliases included: two names may reach one file).
    names: BTreeMap<String, PathBuf>,
    /// A document that sorted before one already locked: the attempt starts again.
    missed: Option<String>,
    /// The bytes kept in `held` (see `Held::looked`), bounded by [`KEEP_BYTES`].
    kept: u64,
    /// The handles of the held documents' directories, one per directory. Declared
    /// last: dropped after the locks.
    dirs: Dirs,
}

impl<'s> Transaction<'s> {
    fn new(store: &'s Store) -> Transaction<'s> {
        Transaction {
            store,
            held: BTreeMap::new(),
            names: BTreeMap::new(),
            missed: None,
            kept: 0,
            dirs: Dirs::new(),
        }
    }

    /// The resolved path of the store's document `name` (the lock order's key): the
    /// one it was held under if the transaction holds it, else resolved now.
    pub(crate) fn key(&self, name: &str) -> Result<PathBuf> {
        self.lookup(name).map(|(key, _)| key)
    }

    /// [`Transaction::key`], and the resolved target if `name` was resolved now (not
    /// bound to a held document): what locking it starts from, rather than resolving
    /// the path a second time.
    fn lookup(&self, name: &str) -> Result<(PathBuf, Option<Target>)> {
        // Held already under this name: the file it locked (and read), without
        // resolving the path again (a symlink changed meanwhile must not send a write
        // to another file than the one read).
        if let Some(key) = self.names.get(name) {
            return Ok((key.clone(), None));
        }
        names::check_store_name(name)?;
        let opts = self.store.options();
        let path = self.store.root().join(name);
        let target = names::resolve_for_write(opts.fs.as_ref(), &path, Some(self.store.root()))?;
        Ok((target.path.clone(), Some(target)))
    }

    /// Lock `name` (blocking, with the lock timeout) if it sorts after every document
    /// held; otherwise mark the attempt for a restart.
    fn hold(&mut self, name: &str) -> Result<&mut Held> {
        let found = self.lookup(name)?;
        self.hold_as(name, found)
    }

    /// [`Transaction::hold`], `name` looked up already ([`Transaction::lookup`]).
    fn hold_as(
        &mut self,
        name: &str,
        (key, target): (PathBuf, Option<Target>),
    ) -> Result<&mut Held> {
        if !self.held.contains_key(&key) {
            if self
                .held
                .last_key_value()
                .is_some_and(|(last, _)| *last > key)
            {
                self.missed = Some(name.to_string());
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "the transaction starts again: {name} sorts before a document it \
                         already locked (locks are taken in one order)"
                    ),
                ));
            }
            // Its lock file would make a directory where this transaction writes a
            // document: refused before the directory is made.
            if let Some(above) = self
                .held
                .iter()
                .find(|(k, h)| key.starts_with(k) && matches!(h.change, Some(Pending::Put(_))))
            {
                return Err(in_the_way(name, &above.1.name));
            }
            self.lock(name, key.clone(), target)?;
        }
        // Bound: later calls naming it (an alias of a document held under another name
        // too) reach this file, whatever the name points at by then.
        self.names.insert(name.to_string(), key.clone());
        Ok(self.held.get_mut(&key).expect("just locked"))
    }

    fn lock(&mut self, name: &str, key: PathBuf, target: Option<Target>) -> Result<()> {
        let path = self.store.root().join(name);
        let w = Locked::open_in(
            &path,
            Some(self.store.root()),
            self.store.options(),
            Some(&mut self.dirs),
            target,
        )?;
        if w.target.path != key {
            // The path resolves elsewhere now (a symlink changed): order by what is locked.
            self.missed = Some(name.to_string());
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("the transaction starts again: {name} moved while it was locked"),
            ));
        }
        let max = self.store.options().max_document_bytes;
        let (current, mut looked) = Current::probe_keeping(&w, true, max, self.kept < KEEP_BYTES)?;
        match &looked {
            Some(b) if b.len() as u64 <= KEEP_BYTES - self.kept => self.kept += b.len() as u64,
            _ => looked = None,
        }
        self.names.insert(name.to_string(), key.clone());
        self.held.insert(
            key,
            Held {
                name: name.to_string(),
                w,
                current,
                looked,
                change: None,
            },
        );
        Ok(())
    }

    /// Lock every document of `names` in the global order.
    fn lock_all(&mut self, names: &BTreeSet<String>) -> Result<()> {
        let mut keyed = Vec::with_capacity(names.len());
        for n in names {
            let (key, target) = self.lookup(n)?;
            keyed.push((key, n.clone(), target));
        }
        keyed.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let aliases: Vec<(PathBuf, String)> = keyed
            .iter()
            .map(|(k, n, _)| (k.clone(), n.clone()))
            .collect();
        keyed.dedup_by(|a, b| a.0 == b.0);
        // Each lock starts from the resolution taken above while no lock before it had
        // to wait: a wait for another writer leaves time for a name to be made or
        // changed into a symlink, and the names after it are resolved again (one that
        // resolves elsewhere by then starts the transaction again, in the new order).
        let mut fresh = true;
        for (key, name, target) in keyed {
            self.lock(&name, key.clone(), target.filter(|_| fresh))?;
            fresh &= !self.held.get(&key).is_some_and(|h| h.w.lock.contended());
        }
        // Every name, aliases too, bound to the file it resolved to and was locked as.
        for (key, name) in aliases {
            self.names.insert(name, key);
        }
        Ok(())
    }

    /// The document `name` as this transaction sees it: its value after the
    /// transaction's own writes, or as it is on disk (read under its lock). `None` if it
    /// does not exist (or the transaction deleted it).
    ///
    /// # Errors
    /// [`ErrorKind::Corrupt`] if the document is damaged, [`ErrorKind::Serialize`] if it
    /// does not fit `T`, [`ErrorKind::LockTimeout`], [`ErrorKind::InvalidName`];
    /// [`ErrorKind::Conflict`] when the transaction must start again (return it: the
    /// closure is called again with more locks held).
    pub fn read<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>> {
        let max = self.store.options().max_document_bytes;
        let h = self.hold(name)?;
        let t = &h.w.target;
        match &h.change {
            Some(Pending::Put(bytes)) => json::parse(bytes, &t.path).map(Some),
            Some(Pending::Delete) => Ok(None),
            None if h.looked.is_some() => {
                json::parse(h.looked.as_deref().unwrap_or_default(), &t.path).map(Some)
            }
            None => match file::read(h.w.dir.as_ref(), &t.name, &t.path, max) {
                Ok((bytes, _)) => json::parse(&bytes, &t.path).map(Some),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// The version of `name` on disk when it was locked (`None`: missing), whatever
    /// this transaction wrote to it since ([`Transaction::version_seen`] and
    /// [`Transaction::expect`] see its writes).
    ///
    /// # Errors
    /// As [`Transaction::read`].
    pub fn version(&mut self, name: &str) -> Result<Option<Version>> {
        let h = self.hold(name)?;
        h.current
            .refuse_too_large("check the version of", &h.w.target.path)?;
        Ok(h.current.version().cloned())
    }

    /// The version of `name` as this transaction sees it, the version of what
    /// [`Transaction::read`] returns: after a write of it, the version of the written
    /// bytes (the document's version once the transaction commits); after a delete,
    /// `None`; otherwise [`Transaction::version`].
    ///
    /// # Errors
    /// As [`Transaction::read`].
    pub fn version_seen(&mut self, name: &str) -> Result<Option<Version>> {
        let h = self.hold(name)?;
        Ok(match &h.change {
            Some(Pending::Put(bytes)) => Some(Version::of(bytes)),
            Some(Pending::Delete) => None,
            None => {
                h.current
                    .refuse_too_large("check the version of", &h.w.target.path)?;
                h.current.version().cloned()
            }
        })
    }

    /// A precondition, checked under the lock: `name` must be at version `expected`
    /// (`None`: must not exist), as this transaction sees it, the document
    /// [`Transaction::read`] returns and [`Transaction::version_seen`] versions: after
    /// a write of it in this transaction, it exists, at the version of the written
    /// bytes (the version it has once the transaction commits), so `None` fails and
    /// only that version holds; after a delete, it does not exist, so `None` holds and
    /// any version fails; otherwise, it is as found on disk when it was locked.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] naming the document if it is not, carrying the version
    /// the check found (see [`Error::version`]): the written bytes' after a write,
    /// none after a delete; as [`Transaction::read`].
    pub fn expect(&mut self, name: &str, expected: Option<&Version>) -> Result<()> {
        let h = self.hold(name)?;
        let path = &h.w.target.path;
        // (the version seen, whether it exists, what the transaction did to it).
        let (now, exists, by) = match &h.change {
            Some(Pending::Put(bytes)) => (
                Some(Version::of(bytes)),
                true,
                ", written earlier in this transaction",
            ),
            Some(Pending::Delete) => (None, false, ", deleted earlier in this transaction"),
            None => {
                // A file over the size limit has no version computed: a version to
                // compare with is refused; that it exists fails an expectation of
                // none, as for any file.
                if expected.is_some() {
                    h.current.refuse_too_large("check the version of", path)?;
                }
                let exists = !matches!(h.current, Current::Missing);
                (h.current.version().cloned(), exists, "")
            }
        };
        if now.as_ref() == expected && (expected.is_some() || !exists) {
            return Ok(());
        }
        let msg = match (expected, &now) {
            (Some(e), Some(n)) => format!(
                "{} is at version {n}{by}, not {e}: the transaction wrote nothing",
                path.display()
            ),
            (Some(e), None) => format!(
                "{} does not exist{by} (expected version {e}): the transaction wrote nothing",
                path.display()
            ),
            (None, _) => format!(
                "{} exists{by} (expected none): the transaction wrote nothing",
                path.display()
            ),
        };
        let e = Error::new(ErrorKind::Conflict, msg).with_path(path);
        Err(match now {
            Some(v) => e.with_version(v),
            None => e,
        })
    }

    /// Write `value` to `name` when the transaction commits (a missing document is
    /// created; its directory must exist unless the store creates directories).
    ///
    /// # Errors
    /// [`ErrorKind::Serialize`] if `value` cannot be stored; [`ErrorKind::InvalidName`]
    /// if the transaction holds a document below `name` (or, for any call, if it writes
    /// a document above the one named): `name` cannot be a document and a directory at
    /// once; as [`Transaction::read`].
    pub fn write<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
        let format = self.store.options().format;
        let found = self.lookup(name)?;
        let key = found.0.clone();
        // A document it holds below this one has this name's directory: the rename
        // could never happen, so nothing may be committed.
        if let Some(below) = self
            .held
            .iter()
            .find(|(k, _)| **k != key && k.starts_with(&key))
        {
            return Err(in_the_way(&below.1.name, name));
        }
        // The bytes every other write of the transaction holds: with these, they must
        // fit in one record (at most half the journal's ring).
        let others: u64 = self
            .held
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(_, h)| match &h.change {
                Some(Pending::Put(b)) => b.len() as u64,
                _ => 0,
            })
            .sum();
        let max = self.store.options().max_document_bytes;
        let h = self.hold_as(name, found)?;
        let path = &h.w.target.path;
        let room = match &h.w.journal {
            Some(b) => b.journal.max_transaction().saturating_sub(others),
            None => u64::MAX,
        };
        let mut out = Bounded {
            bytes: Vec::new(),
            room: usize::try_from(room).unwrap_or(usize::MAX),
            max: usize::try_from(max).unwrap_or(usize::MAX),
        };
        match json::serialize_into(value, format, &mut out) {
            Ok(()) => {}
            Err(SerializeError::Value(msg)) => {
                return Err(Error::new(ErrorKind::Serialize, msg).with_path(path));
            }
            Err(SerializeError::Io(e)) if over_limit(&e).is_some() => {
                return Err(Error::over_limit("write", path, None, max));
            }
            Err(SerializeError::Io(_)) => {
                let journal = h.w.journal.as_ref().map(|b| b.journal.path().to_path_buf());
                return Err(Error::new(
                    ErrorKind::NoSpace,
                    format!(
                        "cannot write {} in the transaction: its documents would be larger \
                         than a record of the journal {} may be (half its ring); nothing \
                         written; enable the journal with a larger --size",
                        path.display(),
                        journal.unwrap_or_default().display()
                    ),
                )
                .with_path(path));
            }
        }
        h.change = Some(Pending::Put(out.bytes));
        self.forget_looked(&key);
        Ok(())
    }

    /// Delete `name` when the transaction commits (to `.bak` with backups on). The
    /// document as this transaction sees it must exist: one the transaction wrote is
    /// deleted too (a document it created is then not written at all), one it deleted
    /// already is missing.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if it does not exist; as [`Transaction::read`].
    pub fn delete(&mut self, name: &str) -> Result<()> {
        let h = self.hold(name)?;
        // As `Doc::delete`: a file over the size limit is not deleted, only replaced
        // (a delete records the version it removes, which is not computed for it).
        h.current.refuse_too_large("delete", &h.w.target.path)?;
        let exists = match &h.change {
            Some(Pending::Put(_)) => true,
            Some(Pending::Delete) => false,
            None => !matches!(h.current, Current::Missing),
        };
        if !exists {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "cannot delete {}: it does not exist",
                    h.w.target.path.display()
                ),
            )
            .with_path(&h.w.target.path));
        }
        h.change = match h.current {
            Current::Missing => None,
            Current::File { .. } => Some(Pending::Delete),
            Current::TooLarge { .. } => unreachable!("refused above"),
        };
        let key = h.w.target.path.clone();
        self.forget_looked(&key);
        Ok(())
    }

    /// Commit the pending changes as one journal record.
    fn commit(self) -> Result<TxReceipt> {
        let Some(last) = self.held.values().last() else {
            return Ok(TxReceipt::default());
        };
        let plan = Plan::json(self.store.options(), Some(self.store.poison_flag()));
        let mut parts = Vec::new();
        let mut docs = Vec::new();
        for h in self.held.values() {
            let change = match &h.change {
                None => continue,
                Some(Pending::Put(bytes)) => Change::Put(bytes.clone()),
                Some(Pending::Delete) => match &h.current {
                    Current::File {
                        seen: Some(seen), ..
                    } => Change::Delete(seen.clone()),
                    _ => unreachable!("a delete is pending only for a document looked at"),
                },
            };
            docs.push(TxDocument {
                name: h.name.clone(),
                path: h.w.target.path.clone(),
                version: None,
                previous: h.current.version().cloned(),
            });
            parts.push(Part {
                w: &h.w,
                current: h.current.clone(),
                change,
            });
        }
        if parts.is_empty() {
            return Ok(TxReceipt::default());
        }
        let versions = atomic::commit_many(parts, &plan, &last.w)?;
        for (d, v) in docs.iter_mut().zip(versions) {
            d.version = v;
        }
        Ok(TxReceipt { documents: docs })
    }

    /// Drop the bytes kept from the look at the document held as `key`: changed by the
    /// transaction, its reads see the change.
    fn forget_looked(&mut self, key: &Path) {
        if let Some(b) = self.held.get_mut(key).and_then(|h| h.looked.take()) {
            self.kept -= b.len() as u64;
        }
    }

    fn names(&self) -> impl Iterator<Item = &String> {
        self.held.values().map(|h| &h.name)
    }
}

impl Store {
    /// Run `f` as one transaction over the documents it reads and writes, and commit
    /// its writes as one journal record: after a crash at any moment, either every
    /// document it wrote has its new version or none has. The store must be in journal
    /// mode (for a transaction that writes).
    ///
    /// Each document is locked when `f` first touches it, in one global order (by
    /// resolved path); a document that sorts before one already locked makes the
    /// attempt stop with a `Conflict` that `f` must return (`?`), and `f` is called
    /// again with every document seen so far locked first. So `f` may run more than
    /// once, and should do nothing but read and write through `tx`. A lock wait past
    /// the lock timeout fails the whole transaction with `LockTimeout`; an error `f`
    /// returns aborts it. Nothing is written until `f` returns `Ok`.
    ///
    /// Readers that take no lock may, for the moment of the renames, see some of the
    /// documents new and others old; [`Store::read_tx`] sees one consistent state.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use statefile::journal::{self, JournalOptions};
    ///
    /// let store = statefile::Store::open(dir.path())?;
    /// journal::enable(dir.path(), store.options(), JournalOptions::default())?;
    /// store.doc::<Vec<u32>>("queue.json")?.write(&vec![7, 8])?;
    /// let (job, receipt) = store.transaction(|tx| {
    ///     let mut queue: Vec<u32> = tx.read("queue.json")?.unwrap_or_default();
    ///     let job = queue.remove(0);
    ///     tx.write("queue.json", &queue)?;
    ///     tx.write(&format!("job-{job}.json"), &serde_json::json!({"id": job}))?;
    ///     Ok::<_, statefile::Error>(job)
    /// })?;
    /// assert_eq!(job, 7);
    /// assert_eq!(receipt.documents.len(), 2);
    /// # Ok::<(), statefile::Error>(())
    /// ```
    ///
    /// # Errors
    /// What `f` returns; [`ErrorKind::Conflict`] for a failed [`Transaction::expect`];
    /// [`ErrorKind::InvalidName`] if the store is not in journal mode;
    /// [`ErrorKind::NoSpace`] if the changes do not fit in half the journal; the kinds
    /// of a write.
    pub fn transaction<R, E: From<Error>>(
        &self,
        mut f: impl FnMut(&mut Transaction<'_>) -> std::result::Result<R, E>,
    ) -> std::result::Result<(R, TxReceipt), E> {
        self.run_tx(BTreeSet::new(), &mut f)
    }

    /// Read the documents `names` under their locks, taken in the global order, so the
    /// values are one consistent state (no transaction is half visible). `None` for a
    /// missing document. Works with or without journal mode.
    ///
    /// # Errors
    /// As [`Transaction::read`].
    pub fn read_tx<T: DeserializeOwned>(&self, names: &[&str]) -> Result<Vec<Option<T>>> {
        let wanted = names.iter().map(|n| n.to_string()).collect();
        self.run_tx(wanted, &mut |tx| names.iter().map(|n| tx.read(n)).collect())
            .map(|(values, _)| values)
    }

    /// Run `f` as a transaction, `wanted` locked (in the global order) before it runs.
    pub(crate) fn run_tx<R, E: From<Error>>(
        &self,
        mut wanted: BTreeSet<String>,
        f: &mut dyn FnMut(&mut Transaction<'_>) -> std::result::Result<R, E>,
    ) -> std::result::Result<(R, TxReceipt), E> {
        loop {
            let mut tx = Transaction::new(self);
            let locked = tx.lock_all(&wanted);
            if let Some(missed) = tx.missed.take() {
                wanted.extend(tx.names().cloned());
                wanted.insert(missed);
                continue;
            }
            locked?;
            let r = f(&mut tx);
            if let Some(missed) = tx.missed.take() {
                // Every restart adds a document not locked before: this ends.
                wanted.extend(tx.names().cloned());
                wanted.insert(missed);
                continue;
            }
            let r = r?;
            let receipt = tx.commit()?;
            return Ok((r, receipt));
        }
    }
}

/// A transaction's document as it is serialized: in memory, up to `room` bytes (what its
/// record may still take); past that an error, so that a document too large for the
/// journal costs no more memory than the journal could take. Past `max` bytes
/// ([`Options::max_document_bytes`](crate::Options::max_document_bytes)), an
/// [`OverLimit`] error.
struct Bounded {
    bytes: Vec<u8>,
    room: usize,
    max: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.max.saturating_sub(self.bytes.len()) {
            return Err(OverLimit::io(self.max as u64));
        }
        if buf.len() > self.room.saturating_sub(self.bytes.len()) {
            return Err(std::io::Error::other(
                "larger than the journal's largest transaction",
            ));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
