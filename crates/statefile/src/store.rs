//! [`Store`]: a directory tree of documents, addressed by relative names.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::doc::Doc;
use crate::error::{Error, ErrorKind, Result};
use crate::fs::FileType;
use crate::names;
use crate::options::Options;
use crate::recover::{Report, Scan, ScanMode};

/// A directory of documents (`name.json`, `sub/dir/name.json`), opened with crash
/// recovery.
///
/// [`Store::open`] removes the temp files of writers that died and reports damaged
/// documents (and whether a backup can restore each). Documents are addressed by
/// names relative to the root; a name can never reach outside it, not even through a
/// symlink placed inside.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let store = statefile::Store::open(dir.path())?;
/// let jobs = store.doc::<Vec<u32>>("jobs/queue.json")?;
/// jobs.update_or_default(|q| { q.push(7); Ok(()) })?;
/// assert_eq!(store.list("jobs/")?, ["jobs/queue.json"]);
/// assert!(store.recovery().is_healthy());
/// # Ok::<(), statefile::Error>(())
/// ```
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    opts: Options,
    poisoned: Arc<AtomicBool>,
    report: Report,
}

impl Store {
    /// Open the store at `root` with default options (documents get missing parent
    /// directories created inside the store).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if `root` does not exist; I/O kinds if it cannot be read.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(root, Options::default().create_dirs(true))
    }

    /// Open the store at `root`, using `opts` for every document. With
    /// `create_dirs(true)` a missing root is created too.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with(root: impl AsRef<Path>, opts: Options) -> Result<Store> {
        let root = checked_root(root.as_ref(), &opts)?;
        let report = Scan::new(ScanMode::Clean)
            .options(opts.clone())
            .run(&root)?;
        for f in report.corrupt_documents() {
            tracing::warn!(file = %f.path.display(), problem = ?f.problem, "damaged document found on open");
        }
        Ok(Store {
            root,
            opts,
            poisoned: Arc::new(AtomicBool::new(false)),
            report,
        })
    }

    /// Open the store at `root` as [`Store::open_with`] does, without its recovery scan
    /// of the whole tree: for a short-lived caller that touches a few documents of a big
    /// store (`statefile tx`). [`Store::recovery`] is then empty.
    ///
    /// What a write or a transaction needs from recovery it still gets, from each
    /// document's lock: in journal mode, the first lock of a document in this process
    /// opens the journal, which, if no other process has it open, brings every document
    /// up to its last record (replay after a crash); and a commit naming the document
    /// that a writer left unapplied when it died is applied before the document is read
    /// or written. What it leaves to the next [`Store::open_with`] or
    /// [`recover`](crate::recover): dead writers' temp files (which no writer ever reads),
    /// damaged documents it does not touch (one it reads is `Corrupt` as usual), and, in
    /// journal mode, a journal poisoned by a failed flush while other processes still
    /// use it (writes are refused until it is recovered, never made on top of it).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// std::fs::write(dir.path().join("damaged.json"), b"{\"cut")?;
    /// let store = statefile::Store::open_without_scan(dir.path(), statefile::Options::new())?;
    /// assert!(store.recovery().is_healthy(), "the damaged document was not looked at");
    /// store.doc::<u32>("n.json")?.write(&1)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_without_scan(root: impl AsRef<Path>, opts: Options) -> Result<Store> {
        let root = checked_root(root.as_ref(), &opts)?;
        Ok(Store {
            root,
            opts,
            poisoned: Arc::new(AtomicBool::new(false)),
            report: Report::default(),
        })
    }

    /// The store's root directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The options every document of this store uses.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// What recovery found (and cleaned) when the store was opened.
    pub fn recovery(&self) -> &Report {
        &self.report
    }

    /// The flag a failed directory sync sets (for writes made on the store's behalf).
    pub(crate) fn poison_flag(&self) -> &AtomicBool {
        &self.poisoned
    }

    /// True after a directory sync failed: the store refuses writes until reopened.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// A handle to the document `name` (e.g. `"view/resData.json"`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`] unless `name` is relative, `/`-separated, without
    /// empty, `.` or `..` segments, without segments starting with a dot, NUL or
    /// backslash, and with a file name of at most 230 bytes.
    pub fn doc<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Doc<T>> {
        names::check_store_name(name)?;
        Ok(Doc::in_store(
            self.root.join(name),
            self.opts.clone(),
            self.root.clone(),
            self.poisoned.clone(),
        ))
    }

    /// The names of the documents (visible `*.json` files) whose name starts with
    /// `prefix`, sorted. Temp, lock and backup files are never listed; symlinked
    /// directories are not followed.
    ///
    /// # Errors
    /// I/O kinds if a directory cannot be listed.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.walk(prefix, Listing::Documents)
    }

    /// The names of deleted documents whose name starts with `prefix`, sorted: those
    /// that do not exist but have backups (`.name.json.bak`...), which
    /// [`Doc::restore`] can bring back and [`Doc::backups`] lists.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = statefile::Store::open(dir.path())?;
    /// let doc = store.doc::<u32>("a/n.json")?;
    /// doc.write(&1)?;
    /// doc.delete()?;
    /// let kept = store.doc::<u32>("k.json")?;
    /// kept.write(&1)?;
    /// kept.write(&2)?; // a document with a backup: listed by list, not list_deleted
    /// assert_eq!(store.list_deleted("")?, ["a/n.json"]);
    /// assert!(store.list_deleted("k")?.is_empty());
    /// assert_eq!(store.list("")?, ["k.json"]);
    /// # Ok::<(), statefile::Error>(())
    /// ```
    ///
    /// # Errors
    /// I/O kinds if a directory cannot be listed.
    pub fn list_deleted(&self, prefix: &str) -> Result<Vec<String>> {
        self.walk(prefix, Listing::Deleted)
    }

    fn walk(&self, prefix: &str, which: Listing) -> Result<Vec<String>> {
        let mut out = Vec::new();
        // After a crash, a document created since the journal's last checkpoint may be
        // missing until the journal is replayed: this process opens it first (once).
        crate::journal::before_listing(&self.root, &self.opts)?;
        // A loop over a stack of directories, not a recursion: the tree is untrusted.
        let mut pending = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = pending.pop() {
            self.list_dir(&dir, &rel, prefix, which, &mut out, &mut pending)?;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The documents (or deleted documents) of `dir` into `out`, its subdirectories
    /// that may hold names with `prefix` into `pending`.
    fn list_dir(
        &self,
        dir: &Path,
        rel: &str,
        prefix: &str,
        which: Listing,
        out: &mut Vec<String>,
        pending: &mut Vec<(PathBuf, String)>,
    ) -> Result<()> {
        // `dir` is the canonical root joined with names of real directories (not links):
        // opened refusing symlinks, so a directory swapped for one is not followed.
        let read = || match self.opts.fs.open_dir(dir).and_then(|d| d.read_dir()) {
            Ok(e) => Ok(Some(e)),
            // Gone meanwhile, or too deep for a path to reach: no document there can be
            // opened by name, so none is listed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidFilename => Ok(None),
            Err(e) => Err(Error::io("list directory", dir, e)),
        };
        let Some(mut entries) = read()? else {
            return Ok(());
        };
        // A journal's tree below the root: opened (replayed if need be) before its
        // documents are listed.
        if dir != self.root
            && entries
                .iter()
                .any(|e| e.name == crate::journal::META_DIR && e.file_type == FileType::Dir)
        {
            crate::journal::before_listing(dir, &self.opts)?;
            let Some(again) = read()? else {
                return Ok(());
            };
            entries = again;
        }
        if which == Listing::Deleted {
            let present: std::collections::HashSet<&std::ffi::OsStr> =
                entries.iter().map(|e| e.name.as_os_str()).collect();
            for e in &entries {
                if let Some(names::Sidecar::Backup(doc, _)) = names::sidecar_of(&e.name)
                    && e.file_type == FileType::File
                    && !present.contains(doc.as_os_str())
                    && let Some(doc) = doc.to_str()
                    && doc.ends_with(".json")
                    && !doc.starts_with('.')
                {
                    let full = format!("{rel}{doc}");
                    if full.starts_with(prefix) {
                        out.push(full);
                    }
                }
            }
        }
        for e in entries {
            let Some(name) = e.name.to_str() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let full = format!("{rel}{name}");
            match e.file_type {
                FileType::Dir => {
                    let sub = format!("{full}/");
                    // Descend only where names with this prefix can be.
                    if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                        pending.push((dir.join(name), sub));
                    }
                }
                _ if which == Listing::Deleted => {}
                FileType::File if name.ends_with(".json") && full.starts_with(prefix) => {
                    out.push(full);
                }
                // A link is listed only if it stays inside the store (as reads require).
                FileType::Symlink if name.ends_with(".json") && full.starts_with(prefix) => {
                    let inside = self
                        .opts
                        .fs
                        .canonicalize(&dir.join(name))
                        .is_ok_and(|p| p.starts_with(&self.root));
                    if inside {
                        out.push(full);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Check every document of the store without changing anything.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = statefile::Store::open(dir.path())?;
    /// store.doc::<u32>("n.json")?.write(&1)?;
    /// let report = store.verify()?;
    /// assert_eq!((report.documents, report.is_healthy()), (1, true));
    /// # Ok::<(), statefile::Error>(())
    /// ```
    ///
    /// # Errors
    /// Only if the root cannot be read.
    pub fn verify(&self) -> Result<Report> {
        Scan::new(ScanMode::Verify)
            .options(self.opts.clone())
            .run(&self.root)
    }

    /// Repair the store: as [`recover`](crate::recover).
    ///
    /// # Errors
    /// Only if the root cannot be read.
    pub fn recover(&self) -> Result<Report> {
        Scan::new(ScanMode::Repair)
            .options(self.opts.clone())
            .in_store(self.root.clone(), self.poisoned.clone())
            .run(&self.root)
    }
}

/// The store's root, checked to be a directory (created if missing with
/// `create_dirs`), canonical.
fn checked_root(given: &Path, opts: &Options) -> Result<PathBuf> {
    let fs = opts.fs.clone();
    match fs.metadata(given) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::InvalidName,
                format!("{} is not a directory", given.display()),
            )
            .with_path(given));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && opts.create_dirs => {
            create_root(opts, given)?;
        }
        Err(e) => return Err(Error::io("open store", given, e)),
    }
    fs.canonicalize(given)
        .map_err(|e| Error::io("open store", given, e))
}

fn create_root(opts: &Options, root: &Path) -> Result<()> {
    let fs = opts.fs.as_ref();
    // Created through handles of canonical parents: resolve what exists first.
    let root = names::canonicalize_existing_prefix(fs, root)?;
    let mut missing = Vec::new();
    let mut cur = root.as_path();
    loop {
        match fs.metadata(cur) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(cur.to_path_buf()),
            Err(e) => return Err(Error::io("inspect", cur, e)),
        }
        match cur.parent() {
            Some(p) if !p.as_os_str().is_empty() => cur = p,
            _ => break,
        }
    }
    missing.reverse();
    crate::atomic::create_missing_dirs(fs, &missing, opts.durability)
}

/// What [`Store::list_dir`] collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    Documents,
    Deleted,
}
