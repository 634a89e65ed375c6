//! Checking and repairing a tree of documents after a crash.
//!
//! What can be wrong, and what recovery does about it:
//!
//! | finding | how it is recognised | repair |
//! |---|---|---|
//! | a dead writer's temp file | `.name.sf-<16 base32>.tmp` whose document lock is free | delete it |
//! | a live writer's temp file | the same, but the lock is held | nothing: not a problem |
//! | a directory under a temp name | the temp pattern, a directory | nothing: reported, never deleted or moved; a person decides |
//! | a damaged document | empty, or not valid JSON | restore the newest backup that parses, keeping the damaged file as `.name.corrupt` |
//! | a damaged backup | a `.name.bak*` that is not valid JSON | move it to `.name.corrupt` |
//! | journal mode: a document that is not what its last journal record says | compare the record's version with the file | rewrite it from the record (replay) |
//! | journal mode: a record a replay does not apply | its name cannot be reached, holds a FIFO or a directory, or leads through a symlink to a file without the record's version | nothing: reported with the reason; a person decides |
//! | journal mode: damage before the journal's end | a valid record later than an invalid one, written after the invalid one was flushed | nothing: a person decides; writes are refused |
//!
//! Journals come first: a replay may repair what would otherwise look damaged. A
//! damaged document that the journal replays is reported once, as a journal replay, in
//! every mode: a verify or a dry run offering its backup would name a repair that
//! never happens (and a version older than the one committed).
//!
//! Every writer holds the document's lock while its temp file exists, so a temp file
//! whose lock can be taken belongs to a writer that is gone. Repairs take the lock,
//! re-read, and replace only if the document still has the damaged version that was
//! seen, so a concurrent fix is never undone. Lock files are never problems.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::backup::{self, BackupRef};
use crate::doc::Doc;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::file::{self, Seen};
use crate::fs::{FileType, Fs, FsDir};
use crate::lock;
use crate::names::{self, Sidecar, Target, sidecar_of};
use crate::options::{Durability, Options};
use crate::version::Version;

/// What a scan may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanMode {
    /// Change nothing; report.
    Verify,
    /// Delete dead writers' temp files; report damaged documents (what
    /// [`Store::open`](crate::Store::open) does).
    Clean,
    /// Delete dead temp files, restore damaged documents from their newest good
    /// backup, move damaged backups aside.
    Repair,
}

/// A problem found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A temp file left by a writer that is gone.
    StaleTemp,
    /// A document that is empty or not valid JSON.
    CorruptDocument {
        /// What the parser said, with the position.
        reason: String,
        /// The newest backup that parses, if any: what a repair restores.
        good_backup: Option<PathBuf>,
    },
    /// A backup that is not valid JSON.
    CorruptBackup {
        /// What the parser said.
        reason: String,
    },
    /// A file or directory that could not be read at all.
    Unreadable {
        /// The error.
        error: String,
    },
    /// Journal mode: the document's bytes are not those of its last journal record
    /// (its writer died, or the machine lost power, before the file caught up).
    JournalReplay {
        /// The version the record gives it (`None`: the record deletes it).
        version: Option<Version>,
    },
    /// Journal mode: the document's last journal record is not applied where it names the
    /// document, and a replay leaves it so: it cannot be reached there, something
    /// statefile never replaces is at its name, or its name now leads through a symlink
    /// to a file that does not hold the record's version (a directory or the document
    /// renamed by hand, a link left in its place). The write the record holds is not at
    /// the name it was made to: a person looks. Reported by the scan whose replay,
    /// adoption or repair skipped it, and by every scan while the record is in the
    /// journal (the next checkpoint frees it, once the file is durable wherever it
    /// went). See [`crate::journal::SkippedRecord`].
    JournalSkipped {
        /// The version the record gives it.
        version: Option<Version>,
        /// Why it is not applied.
        reason: String,
    },
    /// Journal mode: a record before the end of the journal is damaged; the records
    /// after it cannot be replayed. Writes in the tree are refused until a person
    /// decides.
    JournalDamaged {
        /// Where the damaged record starts.
        lsn: u64,
        /// What is wrong with it.
        reason: String,
        /// Valid records after it.
        later_records: usize,
    },
    /// Journal mode: a sync of a document or backup whose bytes only the journal may
    /// hold failed, and the file could not be rewritten from its record then (the log
    /// says which): its bytes on disk are unknown, so no checkpoint frees a record until
    /// a repair (`statefile recover`) has rewritten every file the journal holds. See
    /// [`crate::journal::JournalStatus::sync_failed`].
    JournalSyncFailed,
}

/// What a scan did about a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Nothing (verify mode, or nothing can be done).
    None,
    /// The stale temp file was deleted.
    Removed,
    /// The document was restored from this backup.
    Restored {
        /// The backup restored.
        from: PathBuf,
        /// The version now in place.
        version: Version,
    },
    /// The damaged file was moved here.
    MovedAside {
        /// Where it went.
        to: PathBuf,
    },
    /// Dry run: what would be done.
    Would(String),
    /// The document was rewritten from its last journal record.
    Replayed,
    /// The repair was attempted and failed.
    Failed {
        /// Why.
        error: String,
    },
}

/// One problem and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The file concerned.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: Problem,
    /// What the scan did.
    pub action: Action,
}

impl Finding {
    /// Whether this scan fixed it.
    pub fn is_fixed(&self) -> bool {
        matches!(
            self.action,
            Action::Removed
                | Action::Restored { .. }
                | Action::MovedAside { .. }
                | Action::Replayed
        )
    }
}

/// The outcome of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Documents checked.
    pub documents: usize,
    /// Backups checked.
    pub backups: usize,
    /// Documents that have no backup to fall back on (not a problem: backups may be off).
    pub without_backup: usize,
    /// Temp files of writers still at work (not problems).
    pub live_temps: usize,
    /// Everything found, in path order.
    pub findings: Vec<Finding>,
    /// Journal mode: the state of each journal covering the scanned path, as it was
    /// when the scan ended.
    pub journals: Vec<crate::journal::JournalStatus>,
}

impl Report {
    /// True when nothing was found at all.
    pub fn is_healthy(&self) -> bool {
        self.findings.is_empty()
    }

    /// True when something found is still not fixed: `verify` exits 5 on this.
    pub fn needs_repair(&self) -> bool {
        self.findings.iter().any(|f| !f.is_fixed())
    }

    /// Findings of damaged documents.
    pub fn corrupt_documents(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| matches!(f.problem, Problem::CorruptDocument { .. }))
    }

    /// Stale temp files found (removed or not).
    pub fn stale_temps(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| matches!(f.problem, Problem::StaleTemp))
    }
}

/// Check `path` (a document or a directory tree) without changing anything.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let root = dir.path();
/// statefile::write_json(root.join("ok.json"), &[1, 2])?;
/// std::fs::write(root.join("hurt.json"), b"{\"trunc")?; // a crash of some other writer
/// let report = statefile::verify(root)?;
/// assert_eq!(report.documents, 2);
/// assert!(report.needs_repair());
/// let hurt: Vec<_> = report.corrupt_documents().map(|f| f.path.clone()).collect();
/// assert_eq!(hurt, [root.join("hurt.json")]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// Only when `path` itself cannot be read; problems inside are findings.
pub fn verify(path: impl AsRef<Path>) -> Result<Report> {
    Scan::new(ScanMode::Verify).run(path.as_ref())
}

/// Recover `path` (a document or a directory tree) after a crash: delete dead writers'
/// temp files, restore damaged documents from their newest good backup, move damaged
/// backups aside. Never touches a temp file whose writer is alive.
///
/// ```
/// use statefile::{Action, Doc};
///
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("jobs.json");
/// let doc = Doc::<Vec<String>>::open(&path)?;
/// doc.write(&vec!["a".into()])?;
/// doc.write(&vec!["a".into(), "b".into()])?; // the first version is now .jobs.json.bak
/// std::fs::write(&path, b"[\"a\", \"b")?;     // damaged behind statefile's back
///
/// let report = statefile::recover(dir.path())?;
/// assert!(matches!(report.findings[0].action, Action::Restored { .. }));
/// assert!(!report.needs_repair());
/// assert_eq!(doc.read()?, ["a"]); // the newest good backup
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// Only when `path` itself cannot be read; problems inside are findings.
pub fn recover(path: impl AsRef<Path>) -> Result<Report> {
    Scan::new(ScanMode::Repair).run(path.as_ref())
}

/// A configurable scan: the mode, a dry run, the options repairs write with, and a
/// progress callback.
///
/// ```
/// use statefile::{Action, Scan, ScanMode};
///
/// # let dir = tempfile::tempdir().unwrap();
/// # let root = dir.path();
/// statefile::write_json(root.join("a.json"), &1)?;
/// statefile::write_json(root.join("a.json"), &2)?; // .a.json.bak holds 1
/// std::fs::write(root.join("a.json"), b"")?;         // an empty file: damaged
///
/// // What would a repair do? Nothing changes.
/// let plan = Scan::new(ScanMode::Repair).dry_run(true).run(root)?;
/// assert!(matches!(&plan.findings[0].action, Action::Would(what) if what.starts_with("restore")));
/// assert!(std::fs::read(root.join("a.json"))?.is_empty());
///
/// let mut seen = 0;
/// let done = Scan::new(ScanMode::Repair).run_with_progress(root, &mut |n, _total| seen = n)?;
/// assert!(done.findings[0].is_fixed());
/// assert_eq!((seen, statefile::read_json::<u32>(root.join("a.json"))?), (1, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Scan {
    mode: ScanMode,
    dry_run: bool,
    opts: Options,
    /// Set by [`Store`](crate::Store): repairs stay inside this root (a symlinked
    /// document pointing out of it is not written through) and honour the store's
    /// poison flag.
    store: Option<(PathBuf, Arc<AtomicBool>)>,
}

type Progress<'a> = &'a mut dyn FnMut(usize, usize);

impl Scan {
    /// A scan in `mode` with default options.
    pub fn new(mode: ScanMode) -> Scan {
        Scan {
            mode,
            dry_run: false,
            opts: Options::default(),
            store: None,
        }
    }

    /// Repairs as the store at `root` would make them (see the field).
    pub(crate) fn in_store(mut self, root: PathBuf, poison: Arc<AtomicBool>) -> Scan {
        self.store = Some((root, poison));
        self
    }

    /// Report what would be done instead of doing it.
    pub fn dry_run(mut self, on: bool) -> Scan {
        self.dry_run = on;
        self
    }

    /// Options for the repairs (durability, lock timeout, file system).
    pub fn options(mut self, opts: Options) -> Scan {
        self.opts = opts;
        self
    }

    /// Run the scan on `path`.
    ///
    /// # Errors
    /// Only when `path` itself cannot be inspected.
    pub fn run(&self, path: &Path) -> Result<Report> {
        self.run_with_progress(path, &mut |_, _| {})
    }

    /// Run the scan, calling `progress(done, total)` after each document.
    ///
    /// # Errors
    /// As [`Scan::run`].
    pub fn run_with_progress(&self, path: &Path, progress: Progress<'_>) -> Result<Report> {
        let fs = self.opts.fs.clone();
        let meta = fs.metadata(path).ctx("inspect", path)?;
        let mut groups: Vec<Group> = Vec::new();
        let mut report = Report::default();
        let mut journals = Vec::new();
        if meta.is_dir() {
            let real = fs.canonicalize(path).ctx("inspect", path)?;
            if let Some(root) = journal_above(fs.as_ref(), &real, &mut report)? {
                journals.push(root);
            }
            walk(
                fs.as_ref(),
                path,
                &real,
                &mut groups,
                &mut report,
                &mut journals,
            );
        } else {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let real = fs.canonicalize(&dir).ctx("inspect", &dir)?;
            if let Some(root) = journal_above(fs.as_ref(), &real, &mut report)? {
                journals.push(root);
            }
            let name = path.file_name().map(OsString::from).unwrap_or_default();
            let entries = fs
                .open_dir(&real)
                .and_then(|d| d.read_dir())
                .ctx("list directory", &dir)?;
            let mut by_doc = group_dir(
                &dir,
                &real,
                entries.into_iter().map(|e| (e.name, e.file_type)),
            );
            let mut g = by_doc
                .remove(&name)
                .unwrap_or_else(|| Group::new(&dir, &real, &name));
            g.is_doc = true;
            groups.push(g);
        }
        journals.sort();
        journals.dedup();
        // Documents a replay rewrites (canonical paths): the journal repairs them, not
        // a backup.
        let mut replays = BTreeSet::new();
        for root in &journals {
            self.check_journal(root, &mut report, &mut replays);
        }
        let total = groups.iter().filter(|g| g.is_doc).count();
        let mut done = 0;
        // Groups come directory by directory: one handle at a time, reused.
        let mut open: Option<(PathBuf, Box<dyn FsDir>)> = None;
        for g in &groups {
            if open.as_ref().is_none_or(|(d, _)| d != &g.real_dir) {
                open = match fs.open_dir(&g.real_dir) {
                    Ok(h) => Some((g.real_dir.clone(), h)),
                    Err(e) => {
                        let e = Error::io("open directory", &g.dir, e);
                        report.findings.push(unreadable(&g.dir, &e));
                        None
                    }
                };
            }
            if let Some((_, dir)) = &open {
                self.check_group(dir.as_ref(), g, &replays, &mut report);
            }
            if g.is_doc {
                done += 1;
                progress(done, total);
            }
        }
        report.findings.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(report)
    }

    /// Journal mode: recover the journal at `root` (Store::open, recover) and report what
    /// is still to replay and any damage. Verify only reads. Adds to `replays` each
    /// document still to replay that no live writer is applying: what a repair replays
    /// (in a dry run or a verify: all of them; after a repair: those it could not).
    fn check_journal(&self, root: &Path, report: &mut Report, replays: &mut BTreeSet<PathBuf>) {
        use crate::journal;
        let opts = &self.opts;
        let recovered = match (self.mode, self.dry_run) {
            (ScanMode::Verify, _) | (_, true) => Ok(Default::default()),
            (ScanMode::Clean, false) => journal::recover(root, opts, false),
            (ScanMode::Repair, false) => journal::recover(root, opts, true),
        };
        let mut skipped = BTreeSet::new();
        let status = recovered.and_then(|done| {
            for (path, version) in done.replayed {
                report.findings.push(Finding {
                    path,
                    problem: Problem::JournalReplay { version },
                    action: Action::Replayed,
                });
            }
            for s in done.skipped {
                if skipped.insert(s.path.clone()) {
                    report.findings.push(skipped_finding(s));
                }
            }
            if done.rewrote_after_failed_sync {
                report.findings.push(Finding {
                    path: journal::log_path(root),
                    problem: Problem::JournalSyncFailed,
                    action: Action::Replayed,
                });
            }
            journal::status(root, opts)
        });
        let status = match status {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                report
                    .findings
                    .push(unreadable(&journal::log_path(root), &e));
                return;
            }
        };
        for p in status.to_replay.iter().filter(|p| !p.in_flight) {
            replays.insert(p.path.clone());
            let action = match (self.mode, self.dry_run) {
                (ScanMode::Repair, true) => Action::Would("replay from the journal".into()),
                _ => Action::None,
            };
            report.findings.push(Finding {
                path: p.path.clone(),
                problem: Problem::JournalReplay {
                    version: p.version.clone(),
                },
                action,
            });
        }
        for s in &status.skipped {
            if skipped.insert(s.path.clone()) {
                report.findings.push(skipped_finding(s.clone()));
            }
        }
        for u in &status.unchecked {
            report.findings.push(Finding {
                path: u.path.clone(),
                problem: Problem::Unreadable {
                    error: format!("not compared with its last journal record: {}", u.reason),
                },
                action: Action::None,
            });
        }
        if status.sync_failed {
            let action = match (self.mode, self.dry_run) {
                (ScanMode::Repair, true) => {
                    Action::Would("rewrite every file the journal holds from its record".into())
                }
                _ => Action::None,
            };
            report.findings.push(Finding {
                path: status.path.clone(),
                problem: Problem::JournalSyncFailed,
                action,
            });
        }
        if let Some(d) = &status.damage {
            report.findings.push(Finding {
                path: status.path.clone(),
                problem: Problem::JournalDamaged {
                    lsn: d.lsn,
                    reason: d.reason.clone(),
                    later_records: d.later_records,
                },
                action: Action::None,
            });
        }
        report.journals.push(status);
    }

    fn check_group(
        &self,
        dir: &dyn FsDir,
        g: &Group,
        replays: &BTreeSet<PathBuf>,
        report: &mut Report,
    ) {
        let t = Target::in_dir(&g.dir, &g.name);
        // Temps first: a live writer may be about to replace the document.
        let mut removed_any = false;
        for temp in &g.temps {
            let path = t.beside(temp);
            match self.check_temp(dir, &t, temp) {
                Ok(TempState::Live) => report.live_temps += 1,
                Ok(TempState::Gone) => {}
                Ok(TempState::Stale(action)) => {
                    removed_any |= action == Action::Removed;
                    report.findings.push(Finding {
                        path,
                        problem: Problem::StaleTemp,
                        action,
                    });
                }
                Err(e) => report.findings.push(unreadable(&path, &e)),
            }
        }
        if removed_any && self.opts.durability == Durability::Full {
            // Not needed for correctness (a resurrected temp is removed again), but it
            // keeps a second recovery from finding the same temp after a power loss.
            let _ = dir.sync();
        }
        // Backups before the document: both may move a damaged file to `.corrupt`, and
        // the one that stays there must be the newest damage (the document's), which is
        // the one worth salvaging.
        for b in &g.backups {
            report.backups += 1;
            self.check_backup(dir, &t, b, report);
        }
        for (name, what) in &g.odd {
            let path = t.beside(name);
            report
                .findings
                .push(unreadable(&path, &odd_sidecar(&path, name, *what)));
        }
        if g.is_doc {
            report.documents += 1;
            if g.backups.is_empty() {
                report.without_backup += 1;
            }
            self.check_document(dir, g, &t, replays, report);
        }
    }

    fn check_temp(&self, dir: &dyn FsDir, t: &Target, temp: &OsStr) -> Result<TempState> {
        let fs = &self.opts.fs;
        let (lock_name, lock_path) = (t.lock_name(), t.lock_path());
        // A writer creates the lock file before its temp file; without one, the
        // writer is gone. With one, it is gone only if its lock is free.
        let guard = match dir.stat(&lock_name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            _ => match lock::try_acquire(fs, dir, &lock_name, &lock_path)? {
                Some(g) => Some(g),
                None => return Ok(TempState::Live),
            },
        };
        let path = t.beside(temp);
        // Its writer may have finished between the directory listing and our lock.
        match dir.stat(temp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(TempState::Gone),
            Err(e) => return Err(Error::io("inspect", &path, e)),
            // Made a directory since the listing: never a writer's temp (see `group_dir`).
            Ok(m) if m.is_dir() => return Err(odd_sidecar(&path, temp, FileType::Dir)),
            Ok(_) => {}
        }
        let action = match (self.mode, self.dry_run) {
            (ScanMode::Verify, _) => Action::None,
            (_, true) => Action::Would("delete".into()),
            _ => match dir.remove_file(temp) {
                Ok(()) => Action::Removed,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Action::Removed,
                Err(e) => Action::Failed {
                    error: Error::io("delete", &path, e).to_string(),
                },
            },
        };
        drop(guard);
        Ok(TempState::Stale(action))
    }

    /// `f` on the document at `t` where a reader finds it: through a symlink if it is
    /// one (its real directory and name), else in `dir` by its name.
    fn at_document<R>(
        &self,
        dir: &dyn FsDir,
        t: &Target,
        f: impl FnOnce(&dyn FsDir, &OsStr) -> Result<R>,
    ) -> Result<R> {
        let linked = dir
            .stat(&t.name)
            .is_ok_and(|m| m.file_type == FileType::Symlink);
        if !linked {
            return f(dir, &t.name);
        }
        let fs = self.opts.fs.as_ref();
        let (real, _) = names::resolve(fs, &t.path, None)?;
        let real_dir = fs.open_dir(&real.dir).ctx("open directory", &real.dir)?;
        f(real_dir.as_ref(), &real.name)
    }

    /// The document's version, whether it parses and whether statefile can read it
    /// back (see [`file::inspect_readable`]).
    fn inspect_document(&self, dir: &dyn FsDir, t: &Target) -> Result<(Seen, Option<String>)> {
        self.at_document(dir, t, |d, name| {
            file::inspect_readable(d, name, &t.path, self.opts.max_document_bytes)
        })
    }

    /// Why the document at `t` does not parse, as the parser says it now.
    fn describe_document(&self, dir: &dyn FsDir, t: &Target) -> String {
        self.at_document(dir, t, |d, name| {
            Ok(describe_damage(
                d,
                name,
                &t.path,
                self.opts.max_document_bytes,
            ))
        })
        .unwrap_or_else(|e| e.to_string())
    }

    /// A damaged document is restored from its newest good backup, unless the journal
    /// replays it (it is in `replays`): its `JournalReplay` finding says so, and a
    /// backup, older than the version the journal committed, is no repair. The replay
    /// comes first in a repair, so a dry run or a verify that offered the backup would
    /// name a repair that never happens.
    fn check_document(
        &self,
        dir: &dyn FsDir,
        g: &Group,
        t: &Target,
        replays: &BTreeSet<PathBuf>,
        report: &mut Report,
    ) {
        let seen = match self.inspect_document(dir, t) {
            Ok((seen, None)) => seen,
            Ok((_, Some(why))) => {
                // Valid JSON that statefile's reads refuse (another program wrote it):
                // reported, never replaced by a backup, which would lose that write.
                let e = Error::new(
                    ErrorKind::Serialize,
                    format!("cannot read {}: {why}", t.path.display()),
                );
                report.findings.push(unreadable(&t.path, &e));
                return;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return,
            Err(e) => {
                report.findings.push(unreadable(&t.path, &e));
                return;
            }
        };
        if seen.parses || self.replayed_by_journal(g, replays) {
            return;
        }
        let reason = self.describe_document(dir, t);
        let damaged = seen.version;
        let good = backup::list(dir, t, self.opts.max_document_bytes)
            .ok()
            .and_then(|l| l.into_iter().find(|b| b.parses));
        let action = match (&good, self.mode, self.dry_run) {
            (None, _, _) | (_, ScanMode::Verify | ScanMode::Clean, _) => Action::None,
            (Some(b), ScanMode::Repair, true) => {
                Action::Would(format!("restore from {}", b.path.display()))
            }
            (Some(b), ScanMode::Repair, false) => {
                let doc = match &self.store {
                    Some((root, poison)) => Ok(Doc::<serde_json::Value>::in_store(
                        t.path.clone(),
                        self.opts.clone(),
                        root.clone(),
                        poison.clone(),
                    )),
                    None => Doc::<serde_json::Value>::open_with(&t.path, self.opts.clone()),
                };
                match doc.and_then(|d| {
                    d.restore_if(Some(&damaged), &BackupRef::Version(b.version.clone()))
                }) {
                    Ok(r) => Action::Restored {
                        from: b.path.clone(),
                        version: r.version,
                    },
                    Err(e) => Action::Failed {
                        error: e.to_string(),
                    },
                }
            }
        };
        report.findings.push(Finding {
            path: t.path.clone(),
            problem: Problem::CorruptDocument {
                reason,
                good_backup: good.map(|b| b.path),
            },
            action,
        });
    }

    /// Whether the document of `g` is one the journal replays (`replays` holds canonical
    /// paths; a symlinked document is the file it points to, as the journal names it).
    fn replayed_by_journal(&self, g: &Group, replays: &BTreeSet<PathBuf>) -> bool {
        if replays.is_empty() {
            return false;
        }
        let path = g.real_dir.join(&g.name);
        replays.contains(&path)
            || self
                .opts
                .fs
                .canonicalize(&path)
                .is_ok_and(|real| replays.contains(&real))
    }

    fn check_backup(&self, dir: &dyn FsDir, t: &Target, b: &OsStr, report: &mut Report) {
        let fs = &self.opts.fs;
        let path = t.beside(b);
        let seen = match file::inspect_readable(dir, b, &path, self.opts.max_document_bytes) {
            Ok((s, None)) if s.parses => return,
            Ok((_, Some(why))) => {
                let e = Error::new(
                    ErrorKind::Serialize,
                    format!("cannot read {}: {why}", path.display()),
                );
                report.findings.push(unreadable(&path, &e));
                return;
            }
            Ok((s, None)) => s,
            Err(e) if e.kind() == ErrorKind::NotFound => return,
            Err(e) => {
                report.findings.push(unreadable(&path, &e));
                return;
            }
        };
        let reason = describe_damage(dir, b, &path, self.opts.max_document_bytes);
        let to = t.corrupt_path();
        let action = match (self.mode, self.dry_run) {
            (ScanMode::Repair, true) => Action::Would(format!("move to {}", to.display())),
            (ScanMode::Repair, false) => {
                // Under the lock, and only if the backup still holds the damage we saw: a
                // writer may have rotated a good version into this name meanwhile.
                let moved = lock::acquire(
                    fs,
                    dir,
                    &t.lock_name(),
                    &t.lock_path(),
                    self.opts.lock_timeout,
                )
                .and_then(|_g| match file::inspect(dir, b, &path) {
                    Ok(now) if !now.parses && now.version == seen.version => dir
                        .rename(b, &t.corrupt_name())
                        .map(|()| true)
                        .ctx("move aside", &path),
                    Ok(_) => Ok(false),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(e),
                });
                match moved {
                    Ok(true) => Action::MovedAside { to },
                    Ok(false) => Action::None,
                    Err(e) => Action::Failed {
                        error: e.to_string(),
                    },
                }
            }
            _ => Action::None,
        };
        report.findings.push(Finding {
            path,
            problem: Problem::CorruptBackup { reason },
            action,
        });
    }
}

enum TempState {
    Live,
    /// Renamed into place (or removed) by its writer between the listing and our lock.
    Gone,
    Stale(Action),
}

/// The finding of a journal record a replay leaves unapplied.
fn skipped_finding(s: crate::journal::SkippedRecord) -> Finding {
    Finding {
        path: s.path,
        problem: Problem::JournalSkipped {
            version: s.version,
            reason: s.reason,
        },
        action: Action::None,
    }
}

/// The root of the journal governing the canonical directory `dir`, if any. One this
/// user may not look for (`.statefile/` of a directory above may not be searched) is a
/// finding, naming it, not the end of the scan: the rest is checked as it is.
fn journal_above(fs: &dyn Fs, dir: &Path, report: &mut Report) -> Result<Option<PathBuf>> {
    match crate::journal::locate(fs, dir) {
        Ok(found) => Ok(found.map(|(root, _)| root)),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            let path = e
                .path()
                .map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
            report.findings.push(unreadable(&path, &e));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn unreadable(path: &Path, e: &Error) -> Finding {
    Finding {
        path: path.to_path_buf(),
        problem: Problem::Unreadable {
            error: e.to_string(),
        },
        action: Action::None,
    }
}

/// The finding's error for a sidecar name holding `what` instead of a regular file.
/// A directory under a temp name is no writer's temp: a write in a journal that swaps
/// files in ([`crate::journal::JournalOptions::swap`]) that found a directory at the
/// document's name and could not swap it back leaves it there (or another program made
/// it). It may hold anyone's data, so recovery reports it and never deletes or moves
/// it: its own name is taken by the version the write committed, and any other name
/// would be one statefile made up.
fn odd_sidecar(path: &Path, name: &OsStr, what: FileType) -> Error {
    if what == FileType::Dir && matches!(sidecar_of(name), Some(Sidecar::Temp(_))) {
        return Error::new(
            ErrorKind::InvalidName,
            format!(
                "{} is a directory under a temp file's name, not a writer's temp file (a \
                 write that found it at the document's name could not put it back, or \
                 another program made it): recovery never deletes or moves it; see what it \
                 holds, then move or remove it yourself",
                path.display()
            ),
        )
        .with_path(path);
    }
    file::not_regular(path, what)
}

/// What is wrong with a file that did not parse, with the position.
fn describe_damage(dir: &dyn FsDir, name: &OsStr, path: &Path, max: u64) -> String {
    match file::read(dir, name, path, max) {
        Ok((bytes, _)) if bytes.is_empty() => "the file is empty".into(),
        Ok((bytes, _)) => match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
            Ok(_) => "the file changed while it was checked".into(),
            Err(e) => {
                let info = crate::json::corrupt_info(&e, false);
                format!(
                    "{} at line {} column {}",
                    info.reason, info.line, info.column
                )
            }
        },
        Err(e) => e.to_string(),
    }
}

/// A document name in one directory and the sidecars found for it (names in `dir`).
#[derive(Debug)]
struct Group {
    /// The directory as the scan was asked about it (what findings name).
    dir: PathBuf,
    /// The same directory, canonical: what is opened.
    real_dir: PathBuf,
    name: OsString,
    is_doc: bool,
    temps: Vec<OsString>,
    backups: Vec<OsString>,
    /// A lock file or `.corrupt` that is not a regular file (a FIFO, a symlink), or a
    /// directory under a temp name.
    odd: Vec<(OsString, FileType)>,
}

impl Group {
    fn new(dir: &Path, real_dir: &Path, name: &OsString) -> Group {
        Group {
            dir: dir.to_path_buf(),
            real_dir: real_dir.to_path_buf(),
            name: name.clone(),
            is_doc: false,
            temps: Vec::new(),
            backups: Vec::new(),
            odd: Vec::new(),
        }
    }
}

/// Whether a visible file name is a document statefile manages in a tree scan.
fn is_document_name(name: &OsString) -> bool {
    name.to_str()
        .is_some_and(|s| !s.starts_with('.') && s.ends_with(".json"))
}

fn group_dir(
    dir: &Path,
    real_dir: &Path,
    entries: impl Iterator<Item = (OsString, FileType)>,
) -> BTreeMap<OsString, Group> {
    fn group<'m>(
        by_doc: &'m mut BTreeMap<OsString, Group>,
        (dir, real_dir): (&Path, &Path),
        doc: &OsString,
    ) -> &'m mut Group {
        by_doc
            .entry(doc.clone())
            .or_insert_with(|| Group::new(dir, real_dir, doc))
    }
    let mut by_doc: BTreeMap<OsString, Group> = BTreeMap::new();
    let at = (dir, real_dir);
    for (name, ft) in entries {
        match sidecar_of(&name) {
            // A directory is no writer's temp: reported, never deleted (`odd_sidecar`).
            Some(Sidecar::Temp(doc)) if ft == FileType::Dir => {
                group(&mut by_doc, at, &doc).odd.push((name, ft));
            }
            Some(Sidecar::Temp(doc)) => group(&mut by_doc, at, &doc).temps.push(name),
            Some(Sidecar::Backup(doc, _)) => group(&mut by_doc, at, &doc).backups.push(name),
            Some(Sidecar::Lock(doc) | Sidecar::Corrupt(doc)) if ft != FileType::File => {
                group(&mut by_doc, at, &doc).odd.push((name, ft));
            }
            Some(Sidecar::Lock(_) | Sidecar::Corrupt(_)) => {}
            // Anything named like a document is one to check, whatever it is: a FIFO
            // or socket there is reported (never read), not passed over as healthy.
            None if ft != FileType::Dir && is_document_name(&name) => {
                group(&mut by_doc, at, &name).is_doc = true;
            }
            None => {}
        }
    }
    by_doc
}

/// Collect groups under `root` (canonical: `real_root`) and every directory below it,
/// depth first in name order, not following symlinked directories, so a scan cannot loop
/// or leave the tree. A loop over a stack of directories, not a recursion: the tree is
/// untrusted, and one thousands of levels deep overflowed the 2 MiB stack of the
/// server's blocking threads. Directories holding a journal (`.statefile/journal`) are
/// collected in `journals`.
fn walk(
    fs: &dyn Fs,
    root: &Path,
    real_root: &Path,
    groups: &mut Vec<Group>,
    report: &mut Report,
    journals: &mut Vec<PathBuf>,
) {
    let mut pending = vec![(root.to_path_buf(), real_root.to_path_buf())];
    while let Some((dir, real)) = pending.pop() {
        let entries = match fs.open_dir(&real).and_then(|d| d.read_dir()) {
            Ok(e) => e,
            Err(e) => {
                report
                    .findings
                    .push(unreadable(&dir, &Error::io("list directory", &dir, e)));
                continue;
            }
        };
        let mut subdirs = Vec::new();
        let mut files = Vec::new();
        for e in entries {
            if e.file_type == FileType::Dir {
                if e.name == crate::journal::META_DIR
                    && fs
                        .symlink_metadata(&real.join(&e.name).join("journal"))
                        .is_ok_and(|m| m.is_file())
                {
                    journals.push(real.clone());
                }
                if matches!(sidecar_of(&e.name), Some(Sidecar::Temp(_))) {
                    // A directory under a temp name: reported with its document's
                    // group, never entered.
                    files.push((e.name, e.file_type));
                } else if !e.name.to_string_lossy().starts_with('.') {
                    subdirs.push(e.name);
                }
            } else {
                files.push((e.name, e.file_type));
            }
        }
        groups.extend(group_dir(&dir, &real, files.into_iter()).into_values());
        subdirs.sort();
        pending.extend(subdirs.iter().rev().map(|d| (dir.join(d), real.join(d))));
    }
}
