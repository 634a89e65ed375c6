//! Reading the journal back: scanning records, applying them to documents (replay and
//! adoption of dead writers' commits), checkpoints, and the public enable / disable /
//! status operations.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::format::{self, Action, EntryMeta, Header, RecordHeader};
use super::handle::{self, Journal, Ticket, read_full_at, write_all_at};
use super::shm::{self, Page};
use super::{BOOT, CKPT, LOG, META_DIR, SHM, USERS};
use crate::atomic::{self, Current, Dirs, Locked, Plan, Verify};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::fs::{FileType, Fs};
use crate::json::SerializeError;
use crate::lock::Wait;
use crate::mutants::{self, Mutant};
use crate::names::random_suffix;
use crate::options::{Durability, Options, Perms};
use crate::version::Version;

/// What a checkpoint did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointReport {
    /// Bytes of the journal made free for reuse.
    pub freed: u64,
    /// Documents synced to disk.
    pub documents: usize,
    /// Directories synced.
    pub directories: usize,
    /// Commits of writers that were gone, applied first.
    pub adopted: usize,
    /// Documents whose last record before the checkpoint put a file there, which could
    /// not be reached where the records name them, so could not be synced one by one:
    /// the directory that holds them (renamed or removed by hand, a symlink or a file
    /// now in its place, one that may not be opened), or the document itself (renamed
    /// by hand, something other than a regular file at its name), in the order met.
    /// Each is logged with the reason.
    pub unreachable: Vec<PathBuf>,
    /// File systems synced whole (`syncfs`) for those, before the records were freed:
    /// once per checkpoint and file system.
    pub file_systems_synced: usize,
}

/// A document whose bytes on disk are not those of its last journal record: what a
/// replay would rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingDocument {
    /// The document.
    pub path: PathBuf,
    /// The version its last record gives it (`None`: the record deletes it).
    pub version: Option<Version>,
    /// Whether a writer of this process or another is applying it right now (its commit
    /// is in flight): then it is not a problem, just a moment.
    pub in_flight: bool,
}

/// A document whose last journal record is not applied where it names the document,
/// and why: it cannot be reached there (its directory is gone, or a file or a symlink
/// loop stands in its path), something statefile never replaces is at its name (a FIFO,
/// a directory), or its name now leads through a symlink to a file that does not hold
/// the record's version (a directory or the document renamed by hand, a link left in
/// its place, which may lead to another document: a replay never writes one document's
/// record over another's). The record stays until the next checkpoint, which makes the
/// file durable wherever it went and frees it; the write it holds is not at the name it
/// was made to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedRecord {
    /// The document, as the record names it.
    pub path: PathBuf,
    /// The version the record gives it.
    pub version: Option<Version>,
    /// Why it is not applied there.
    pub reason: String,
}

/// A document whose last journal record the status could not compare with what is at
/// its name, because the caller may not look there (`EACCES`, `EPERM`: a directory of
/// its path, or the file, that this user may not open). Whether a replay would rewrite
/// it is unknown: a user who may read it can tell (`statefile verify` as that user).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UncheckedDocument {
    /// The document, as the record names it.
    pub path: PathBuf,
    /// The version its last record gives it (`None`: the record deletes it).
    pub version: Option<Version>,
    /// Why it could not be looked at (the error, naming what was refused).
    pub reason: String,
}

/// Damage found before the end of the journal's records.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalDamage {
    /// Where the damaged record starts.
    pub lsn: u64,
    /// What is wrong with it.
    pub reason: String,
    /// Valid records found after it (which a replay cannot reach): the evidence that this
    /// is damage, not the torn end of the journal.
    pub later_records: usize,
}

/// The state of a journal, as [`status`](super::status) reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalStatus {
    /// The directory holding `.statefile/`.
    pub root: PathBuf,
    /// The journal file.
    pub path: PathBuf,
    /// Its format version.
    pub format_version: u32,
    /// Whether commits swap the new file in ([`super::JournalOptions::swap`]).
    pub swap: bool,
    /// Bytes of its ring.
    pub capacity: u64,
    /// Where the last checkpoint is (an LSN).
    pub checkpoint_lsn: u64,
    /// The end of the valid records after it.
    pub end_lsn: u64,
    /// Records between them.
    pub records: usize,
    /// Commits appended but not yet applied by their (live or dead) writers, as the
    /// shared state says (0 when no process has the journal open).
    pub in_flight: usize,
    /// Documents a replay would rewrite.
    pub to_replay: Vec<PendingDocument>,
    /// Documents whose last record a replay would not apply where it names them (see
    /// [`SkippedRecord`]).
    pub skipped: Vec<SkippedRecord>,
    /// Documents this status could not compare with their last record, because the
    /// caller may not look at them (see [`UncheckedDocument`]). The rest of the status
    /// holds all the same.
    pub unchecked: Vec<UncheckedDocument>,
    /// Damage before the end of the records, if any.
    pub damage: Option<JournalDamage>,
    /// A sync of a document or backup whose bytes only the journal may hold failed,
    /// and the file could not be rewritten from its record (the log says which): no
    /// checkpoint frees a record until `statefile recover` has rewritten every file the
    /// journal holds.
    pub sync_failed: bool,
}

impl JournalStatus {
    /// Whether anything needs a recovery: documents to replay that no live writer is
    /// applying, damage, or files to rewrite after a failed sync; or a person's look:
    /// records a replay would skip, or documents this status could not look at (whether
    /// they need a replay is unknown).
    pub fn needs_repair(&self) -> bool {
        self.damage.is_some()
            || self.sync_failed
            || self.to_replay.iter().any(|p| !p.in_flight)
            || !self.skipped.is_empty()
            || !self.unchecked.is_empty()
    }
}

/// A record read at a position: its header and entries (`None` for a wrap record), or
/// why it is not a valid record there.
type Validity = std::result::Result<(RecordHeader, Option<Vec<EntryMeta>>), String>;

/// One valid commit record found by a scan.
#[derive(Debug, Clone)]
pub(super) struct Rec {
    pub lsn: u64,
    pub entries: Vec<EntryMeta>,
}

/// What a scan found.
#[derive(Debug, Clone)]
pub(super) struct Scanned {
    pub records: Vec<Rec>,
    pub end: u64,
    pub chain: u32,
    pub damage: Option<JournalDamage>,
}

impl Scanned {
    /// For each document, every entry naming it, oldest first, with its record's LSN.
    pub(super) fn histories(&self) -> BTreeMap<Vec<u8>, Vec<(u64, &EntryMeta)>> {
        let mut all: BTreeMap<Vec<u8>, Vec<(u64, &EntryMeta)>> = BTreeMap::new();
        for r in &self.records {
            for e in &r.entries {
                all.entry(e.name.clone()).or_default().push((r.lsn, e));
            }
        }
        all
    }

    /// For each document, the last record naming it: (record index, entry index).
    pub(super) fn last_entries(&self) -> BTreeMap<Vec<u8>, (usize, usize)> {
        let mut last = BTreeMap::new();
        for (ri, r) in self.records.iter().enumerate() {
            for (ei, e) in r.entries.iter().enumerate() {
                last.insert(e.name.clone(), (ri, ei));
            }
        }
        last
    }
}

/// What a read that takes no lock is about to look at ([`Journal::settle_for_read`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reading<'a> {
    /// One document, by its name in the journal.
    Doc(&'a [u8]),
    /// The documents of a directory and of those below it, by the directory's name in
    /// the journal (empty for the journal's own directory).
    Listing(&'a [u8]),
}

impl Reading<'_> {
    /// Whether the document named `name` in the journal is part of what is read.
    fn covers(self, name: &[u8]) -> bool {
        match self {
            Reading::Doc(n) => name == n,
            Reading::Listing(d) => {
                d.is_empty()
                    || (name.len() > d.len() && name.starts_with(d) && name[d.len()] == b'/')
            }
        }
    }
}

impl Journal {
    /// Read the records from `from` (whose predecessor's chain value is `chain`) up to
    /// `until`, or to the first invalid one. With `verify_data`, a record counts only if
    /// every document's bytes hash to their recorded version. Without `until`, an invalid
    /// record is looked past: a later valid record that says the invalid one had been
    /// flushed before it was written proves damage, not a torn end.
    pub(super) fn scan(
        &self,
        from: u64,
        chain: u32,
        until: Option<u64>,
        verify_data: bool,
    ) -> Result<Scanned> {
        let cap = self.capacity;
        let mut lsn = from;
        let mut chain = chain;
        let mut records = Vec::new();
        let verify_data = verify_data && !mutants::active(Mutant::TornTailAccepted);
        let reason = loop {
            if until.is_some_and(|u| lsn >= u) || lsn - from >= cap {
                break None;
            }
            let room = cap - lsn % cap;
            if room < format::RECORD_HEADER {
                lsn += room;
                continue;
            }
            match self.read_valid(lsn, chain, room, verify_data)? {
                Ok((h, None)) => {
                    chain = h.crc;
                    lsn += room;
                }
                Ok((h, Some(entries))) => {
                    chain = h.crc;
                    records.push(Rec { lsn, entries });
                    lsn += h.len;
                }
                Err(why) => break Some(why),
            }
        };
        let damage = match (reason, until) {
            (Some(why), None) => self.damage_after(lsn, from, why)?,
            (Some(why), Some(u)) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "the journal {} is damaged at LSN {lsn} (before {u}, which was written): {why}",
                        self.path().display()
                    ),
                )
                .with_path(self.path()));
            }
            (None, _) => None,
        };
        Ok(Scanned {
            records,
            end: lsn,
            chain,
            damage,
        })
    }

    /// The record at `lsn` if it is valid and follows `chain`: its header, and its
    /// entries (`None` for a wrap record). `Err` says why not.
    fn read_valid(&self, lsn: u64, chain: u32, room: u64, verify_data: bool) -> Result<Validity> {
        let path = self.path();
        let mut raw = [0u8; format::RECORD_HEADER as usize];
        let n = read_full_at(self.log.as_ref(), &mut raw, self.offset(lsn)).ctx("read", path)?;
        let Some(h) = RecordHeader::parse(&raw[..n], self.capacity) else {
            return Ok(Err("no valid record header".into()));
        };
        if h.lsn != lsn {
            return Ok(Err(format!("a record of LSN {} (a stale one)", h.lsn)));
        }
        if h.prev != chain {
            return Ok(Err("the record does not follow its predecessor".into()));
        }
        if h.len > room {
            return Ok(Err("the record would cross the end of the ring".into()));
        }
        let mut meta = vec![0u8; h.meta_len as usize];
        let n = read_full_at(
            self.log.as_ref(),
            &mut meta,
            self.offset(lsn) + format::RECORD_HEADER,
        )
        .ctx("read", path)?;
        if n < meta.len() || !h.check(&raw, &meta, self.salt) {
            return Ok(Err("checksum mismatch".into()));
        }
        if h.kind == format::KIND_WRAP {
            return Ok(Ok((h, None)));
        }
        let Some(entries) = format::parse_meta(&meta, h.len) else {
            return Ok(Err("its metadata does not add up".into()));
        };
        if entries
            .iter()
            .any(|e| super::check_recorded_name(&e.name).is_none())
        {
            return Ok(Err("it names an impossible path".into()));
        }
        if verify_data {
            for e in &entries {
                if let Some(p) = e.put() {
                    let data = self.read_data(lsn, p.data_at, p.data_len)?;
                    if Version::of(&data) != p.version {
                        return Ok(Err(format!(
                            "the bytes of {} do not hash to their version",
                            String::from_utf8_lossy(&e.name)
                        )));
                    }
                }
            }
        }
        Ok(Ok((h, Some(entries))))
    }

    /// After an invalid record at `bad`: is there a valid record later in this lap that
    /// was written after `bad` had been flushed? Then `bad` is damage.
    fn damage_after(&self, bad: u64, from: u64, why: String) -> Result<Option<JournalDamage>> {
        let cap = self.capacity;
        let path = self.path();
        let stop = from + cap;
        let mut lsn = bad + format::ALIGN;
        const CHUNK: u64 = 1 << 20;
        while lsn + format::RECORD_HEADER <= stop {
            let room = cap - lsn % cap;
            let n = room.min(CHUNK).min(stop - lsn);
            let mut buf = vec![0u8; n as usize];
            let got =
                read_full_at(self.log.as_ref(), &mut buf, self.offset(lsn)).ctx("read", path)?;
            let mut at = 0usize;
            while at + format::RECORD_HEADER as usize <= got {
                if buf[at..at + 4] == format::RECORD_MAGIC {
                    let cand = lsn + at as u64;
                    if let Some(h) = RecordHeader::parse(&buf[at..], cap)
                        && h.lsn == cand
                        && h.flushed_before > bad
                        && let Some((_, _)) = self.read_record_meta(cand, Some(h.crc))?
                    {
                        let later = self
                            .scan(cand, h.prev, None, false)
                            .map_or(1, |s| s.records.len().max(1));
                        return Ok(Some(JournalDamage {
                            lsn: bad,
                            reason: why,
                            later_records: later,
                        }));
                    }
                }
                at += format::ALIGN as usize;
            }
            lsn += n.max(format::ALIGN);
        }
        Ok(None)
    }

    /// [`apply`](Self::apply), where something other than a regular file (a FIFO, a
    /// socket, a device) is now at the document's name: left alone, with a warning, as
    /// [`lock_entries`](Self::lock_entries) leaves a document that can no longer be
    /// written (its directory gone, or a directory at its name). statefile never
    /// replaces such a file, and refusing would stop every recovery and checkpoint of
    /// the tree (and, once the ring is full, every write in it) for as long as whoever
    /// put it there likes. The other entries of the commit are applied.
    fn apply_or_skip(&self, w: &Locked, lsn: u64, e: &EntryMeta, max: u64) -> Result<bool> {
        match self.apply(w, lsn, e, max) {
            Err(err) if cannot_be_written(&err) => {
                self.skip(&w.target.path, e, err.to_string());
                Ok(false)
            }
            r => r,
        }
    }

    /// The record of `e` is not applied to the document at `path`, for `reason`:
    /// logged; a put (an acknowledged write that is not where it was made) is kept for
    /// the report of the recovery scan ([`SkippedRecord`]).
    fn skip(&self, path: &Path, e: &EntryMeta, reason: String) {
        if let Action::Put(p) = &e.action {
            self.note_skipped(SkippedRecord {
                path: path.to_path_buf(),
                version: Some(p.version.clone()),
                reason,
            });
        } else {
            tracing::warn!(file = %path.display(), %reason,
                "a journal record names a document that can no longer be written; skipped");
        }
    }

    /// How far a replay, an adoption or a repair by a caller whose size limit is `max`
    /// ([`Options::max_document_bytes`]) looks at a file at a document's name or at a
    /// backup's: never less than the largest record the journal takes
    /// ([`Journal::max_transaction`], half its ring). Every version a record holds is
    /// within that, so a caller whose own limit is below it (the first to open the store
    /// after a crash need not be the writer) takes such a version for what it is (one
    /// of the document's, kept as a backup as its writer kept it; the file a link leads
    /// to, which holds one), never for a file over the limit; and a huge file planted
    /// at a name still costs no more than the journal's largest record to look at.
    pub(super) fn looks_within(&self, max: u64) -> u64 {
        max.max(self.max_transaction())
    }

    /// Apply one entry of the record at `lsn` to its locked document: rewrite it from the
    /// record (or delete it) unless it already is what the entry says. Returns whether
    /// anything changed. No journal record is appended: the record exists.
    ///
    /// What is at the document's name is looked at within `max`
    /// ([`Options::max_document_bytes`] of whoever replays), raised to the journal's
    /// largest record ([`Journal::looks_within`]): a file over that is not read (a huge
    /// file planted there would cost every opener of the store minutes), unless it is
    /// exactly as long as the entry's bytes, hashed no further than that. One that is
    /// not the entry's is replaced as a write replaces it ([`Current::TooLarge`]): kept
    /// once as `.name.corrupt`, by hard link, never among the backups; a delete moves
    /// it there.
    pub(super) fn apply(&self, w: &Locked, lsn: u64, e: &EntryMeta, max: u64) -> Result<bool> {
        self.apply_keeping(w, lsn, e, e.backups as usize, max)
    }

    /// [`Journal::apply`], keeping `backups` of what it replaces (0 after
    /// [`Journal::rebuild_backups`], which has put every backup in place already).
    fn apply_keeping(
        &self,
        w: &Locked,
        lsn: u64,
        e: &EntryMeta,
        backups: usize,
        max: u64,
    ) -> Result<bool> {
        // Written durably outside the journal: the file is the truth, not looked at.
        if let Action::Direct(_) = e.action {
            return Ok(false);
        }
        // Within the limit: a replay compares and keeps whatever is there, as its
        // writer did (a write keeps a file over the limit aside, never as a backup).
        let current = Current::probe(w, true, self.looks_within(max))?;
        match &e.action {
            Action::Direct(_) => Ok(false),
            Action::Put(p) => {
                if current.version() == Some(&p.version) {
                    return Ok(false);
                }
                if let Current::TooLarge { meta, .. } = &current
                    && meta.len == p.data_len
                    && crate::file::inspect_within(
                        w.dir.as_ref(),
                        &w.target.name,
                        &w.target.path,
                        p.data_len,
                    )?
                    .is_some_and(|seen| seen.version == p.version)
                {
                    // Over the limit, and the entry's bytes: nothing to do.
                    return Ok(false);
                }
                let data = self.record_bytes(w, lsn, p)?;
                let plan = Plan {
                    durability: Durability::None,
                    backups,
                    verify: Verify::No,
                    perms: Perms {
                        mode: Some(p.mode),
                        owner: Some((p.uid, p.gid)),
                        ..Perms::default()
                    },
                    poison: None,
                    temp_created: None,
                    // What the journal holds was written; whatever its size, it is
                    // applied (the journal bounds its records).
                    max_bytes: u64::MAX,
                };
                let mut body = |out: &mut atomic::TempWriter<'_>| {
                    out.write_all(&data).map_err(SerializeError::Io)
                };
                match (
                    atomic::replace_plain(w, &plan, &current, &mut body),
                    &current,
                ) {
                    // A file over the limit that this file system will not link aside
                    // (a write refuses to copy it): the record is an acknowledged write,
                    // newer than whatever is there (a planted file, or an older version
                    // a process with a larger limit wrote, whose rename the power loss
                    // undid). Skipping it would lose that write at the next checkpoint:
                    // it replaces the file, which is not kept.
                    (Err(err), Current::TooLarge { meta, .. }) if err.too_large().is_some() => {
                        tracing::warn!(file = %w.target.path.display(), size = meta.len,
                            "a file over the size limit at a document's name could not be \
                             linked aside (this file system refuses links): the journal's \
                             record replaced it, and it was not kept");
                        let unseen = Current::File {
                            meta: *meta,
                            seen: None,
                        };
                        atomic::replace_plain(w, &plan, &unseen, &mut body)?;
                    }
                    (r, _) => {
                        r?;
                    }
                }
                tracing::info!(file = %w.target.path.display(), version = %p.version,
                    "replayed a journal record");
                self.note_replayed(w.target.path.clone(), Some(p.version.clone()));
                Ok(true)
            }
            Action::Delete => match current {
                Current::Missing => Ok(false),
                Current::File {
                    seen: Some(seen), ..
                } => {
                    atomic::remove_locked(w, backups, &seen)?;
                    self.note_replayed(w.target.path.clone(), None);
                    Ok(true)
                }
                Current::TooLarge { .. } => {
                    // Not read: kept aside once, as a delete keeps a file that does
                    // not parse.
                    let t = &w.target;
                    w.dir
                        .rename(&t.name, &t.corrupt_name())
                        .ctx("move aside", &t.path)?;
                    tracing::warn!(file = %t.path.display(), kept = %t.corrupt_path().display(),
                        "replayed a delete of a document over the size limit; kept it aside");
                    self.note_replayed(t.path.clone(), None);
                    Ok(true)
                }
                Current::File { seen: None, .. } => unreachable!("probed with a look"),
            },
        }
    }

    /// After a power loss, before the replay rewrites the locked document `w` from the
    /// last of `history` (its entries after the checkpoint, oldest first): put back the
    /// backups its writers made. A commit syncs no file, so a version written since the
    /// checkpoint and then kept as `.bak` by the next commit may have kept its name and
    /// lost its bytes (empty), and the rotations' renames may have been kept or lost
    /// one by one; the replay alone rewrote the document and rotated whatever the power
    /// loss left at its name into `.bak`, so backups came back empty, or one version
    /// twice, or out of order.
    ///
    /// The backups meant to be there are the document's chain after its last entry
    /// ([`chains_since_checkpoint`]): the chain the checkpoint left, changed by each
    /// entry as its writer changed it (a put that replaced one version by another
    /// kept the one replaced, its `previous`, in front; an unchanged one, a new
    /// document's, or one keeping none, moved nothing), as many as the last entry
    /// kept. A version a record wrote is put back from the record's bytes, whatever
    /// other write wrote the same bytes; the one the checkpoint left at the document's
    /// name is the first entry's `previous`, found at any of the names (or in a record:
    /// the same bytes). The older ones the checkpoint made durable are named by no
    /// record: each is taken from a name where some chain since the checkpoint put one
    /// of them, holding a complete version that no known version that may be there
    /// holds (a version that comes back there would be ambiguous: left out, with the
    /// older ones shifted up), each once, in the order of their names. Every durable
    /// one is linked under a temp name first; then each is renamed into place (a
    /// record's written under a temp name first), the oldest first, so that a crash in
    /// between leaves every durable version at or below its place, where the next
    /// replay looks; names past the last are removed.
    ///
    /// Nothing is moved when nothing was lost ([`Journal::nothing_lost`], and every
    /// backup whose version the chain knows holds it). Returns how many backups the
    /// replay's own write must keep: 0 when this rebuilt them, the entry's count when
    /// it left them as they were (nothing lost, or a version written outside the
    /// journal, whose bytes no record holds, or `previous` versions that do not link up).
    ///
    /// Files are looked at within `max` ([`Options::max_document_bytes`] of whoever
    /// replays), raised to the journal's largest record ([`Journal::looks_within`];
    /// the document at its last record, within its length): one over that is never
    /// read. At the document's name it is no version to put back (the replay's write
    /// keeps it aside as `.name.corrupt`); at a backup's name, which version it holds
    /// cannot be told, so the backups stay as they are.
    fn rebuild_backups(
        &self,
        w: &Locked,
        history: &[(u64, &EntryMeta)],
        max: u64,
    ) -> Result<usize> {
        let max = self.looks_within(max);
        let Some(&(_, last)) = history.last() else {
            return Ok(0);
        };
        let keep = last.backups.min(MAX_SYNCED_BACKUPS) as usize;
        if keep == 0 {
            return Ok(0);
        }
        if matches!(last.action, Action::Direct(_)) {
            return Ok(keep);
        }
        // A write outside the journal (a direct entry) synced its document and the
        // backups it kept: the chain starts after the last one, at what it left.
        let history = match history
            .iter()
            .rposition(|(_, e)| matches!(e.action, Action::Direct(_)))
        {
            Some(d) => &history[d + 1..],
            None => history,
        };
        let t = &w.target;
        let dir = w.dir.as_ref();
        // What is on disk now is looked at at the document's name (0) and its backups'
        // (1..=reach): a durable version still wanted was at most at `keep` at the
        // checkpoint and is never moved past the place it is wanted at.
        let reach = keep + 1;
        // A backup over the size limit, never read: it may be a durable version (one
        // its writer, under another limit, kept) or not one at all; telling would take
        // reading it. Left as they are, as after a write outside the journal.
        for n in 1..=reach {
            if let Ok(m) = dir.stat(&t.backup_name(n))
                && m.file_type == crate::fs::FileType::File
                && m.len > max
            {
                tracing::warn!(file = %t.path.display(), backup = %t.backup_path(n).display(),
                    size = m.len, max,
                    "a backup is over the size limit: the replay leaves the backups as they are");
                return Ok(keep);
            }
        }
        let intact = self.nothing_lost(w, last, keep, max)?;
        // The bytes of every put, from its record (damaged: the replay's own read of it
        // reports the damage).
        let Some(data) = self.puts_data(history)? else {
            return Ok(keep);
        };
        // The complete files there, within the limit.
        let name_at = |n: usize| {
            if n == 0 {
                t.name.clone()
            } else {
                t.backup_name(n)
            }
        };
        let mut found: Vec<Option<crate::file::Seen>> = Vec::with_capacity(reach + 1);
        for n in 0..=reach {
            let name = name_at(n);
            found.push(
                match crate::file::inspect_within(dir, &name, &t.beside(&name), max) {
                    Ok(Some(seen)) if seen.parses => Some(seen),
                    Ok(_) => None,
                    Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidName) => {
                        None
                    }
                    Err(e) => return Err(e),
                },
            );
        }
        let Some(chains) = chains_since_checkpoint(history, &data) else {
            // The records' `previous` versions do not link up: something wrote the
            // document outside the journal. Its backups stay as they are.
            return Ok(keep);
        };
        let anchor = history[0].1.previous.as_ref();
        let known = |s: Slot| match s {
            Slot::Record(i) => history[i].1.version(),
            Slot::Durable(0) => anchor,
            Slot::Durable(_) => None,
        };
        let (_, last_chain) = chains.last().expect("the checkpoint's chain at least");
        let mut meant: Vec<Slot> = last_chain.clone();
        meant.truncate(keep);
        // Nothing lost: the document is what its last record made it, its backups are
        // complete, and each whose version the chain knows (a record's, or the one the
        // checkpoint left at the document's name) holds it. A reboot, or a power loss
        // that kept everything: the backups are as the writers left them, and the
        // replay's write changes nothing. (Bytes alone would not tell a backup a
        // rotation put in place from an older version that comes back.)
        if intact
            && meant.iter().enumerate().all(|(i, s)| {
                known(*s).is_none_or(|v| found[i + 1].as_ref().is_some_and(|f| &f.version == v))
            })
        {
            return Ok(keep);
        }
        // The durable backups (`Durable(j)`, j >= 1), whose versions no record names:
        // found where one of them may be (a name some chain since the checkpoint put
        // it at), holding a version that none of the known ones that may be there
        // holds (which would make it ambiguous), each once, in the order of their
        // names (each rename since moved one of them one place up, over the next).
        let mut durable: Vec<(&Version, usize)> = Vec::new();
        for (n, seen) in found.iter().enumerate().skip(1) {
            let Some(seen) = seen else { continue };
            let here = chains.iter().filter_map(|(_, b)| b.get(n - 1).copied());
            let (mut unknown, mut clash) = (false, false);
            for s in here {
                match known(s) {
                    Some(v) => clash |= *v == seen.version,
                    None => unknown = true,
                }
            }
            if unknown
                && !clash
                && anchor != Some(&seen.version)
                && !durable.iter().any(|(v, _)| **v == seen.version)
            {
                durable.push((&seen.version, n));
            }
        }
        enum Source<'a> {
            Record(&'a format::PutMeta, &'a [u8]),
            Durable(usize),
        }
        let mut wanted: Vec<(&Version, Source<'_>)> = Vec::new();
        let mut older = durable.into_iter();
        for slot in meant {
            match slot {
                Slot::Record(i) => {
                    let (Action::Put(p), Some(bytes)) = (&history[i].1.action, &data[i]) else {
                        unreachable!("a backup is a version a put wrote")
                    };
                    wanted.push((&p.version, Source::Record(p, bytes)));
                }
                Slot::Durable(0) => {
                    let v = anchor.expect("the version before the first record");
                    if let Some(n) = found
                        .iter()
                        .position(|f| f.as_ref().is_some_and(|f| &f.version == v))
                    {
                        wanted.push((v, Source::Durable(n)));
                    } else if let Some(i) = (0..history.len())
                        .find(|i| data[*i].is_some() && history[*i].1.version() == Some(v))
                    {
                        let (Action::Put(p), Some(bytes)) = (&history[i].1.action, &data[i]) else {
                            unreachable!("a put")
                        };
                        wanted.push((v, Source::Record(p, bytes)));
                    }
                    // Otherwise lost with the names that held it.
                }
                Slot::Durable(_) => {
                    if let Some((v, n)) = older.next() {
                        wanted.push((v, Source::Durable(n)));
                    }
                }
            }
        }
        // Every durable version placed is linked under a temp name before the first
        // rename, so none is lost to a rename over the name it was found at.
        let mut temps: Vec<Option<OsString>> = Vec::with_capacity(wanted.len());
        let cleanup = |temps: &[Option<OsString>]| {
            for temp in temps.iter().flatten() {
                let _ = dir.remove_file(temp);
            }
        };
        for (_, source) in &wanted {
            let made = match source {
                Source::Durable(n) => {
                    let (name, temp) = (name_at(*n), t.temp_name(&random_suffix()));
                    match dir.hard_link(&name, &temp) {
                        Ok(()) => Ok(Some(temp)),
                        // This file system will not link (as the writer's backup link
                        // falls back): a copy, synced (once the renames begin it may be
                        // all that is left of a durable version).
                        Err(e) if link_refused(&e) => {
                            copy_aside(dir, &name, &t.beside(&name), &temp).map(|()| Some(temp))
                        }
                        Err(e) => Err(e).ctx("link", &t.beside(&temp)),
                    }
                }
                Source::Record(..) => Ok(None),
            };
            match made {
                Ok(temp) => temps.push(temp),
                Err(e) => {
                    cleanup(&temps);
                    return Err(e);
                }
            }
        }
        // Oldest first, so a crash in between leaves each durable version at or below
        // the place it is wanted at, where the next replay looks.
        for i in (0..wanted.len()).rev() {
            let (version, source) = &wanted[i];
            let bak = t.backup_name(i + 1);
            let there = match crate::file::inspect_within(dir, &bak, &t.beside(&bak), max) {
                Ok(found) => found,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidName) => None,
                Err(e) => {
                    cleanup(&temps[..=i]);
                    return Err(e);
                }
            };
            if there.is_some_and(|f| f.parses && &f.version == *version) {
                cleanup(&temps[i..=i]);
                continue;
            }
            let placed = match (source, &temps[i]) {
                (Source::Durable(_), Some(temp)) => Ok(temp.clone()),
                (Source::Record(p, bytes), _) => {
                    let temp = t.temp_name(&random_suffix());
                    let temp_path = t.beside(&temp);
                    (|| {
                        let mut f = dir.create_new(&temp, 0o600).ctx("create", &temp_path)?;
                        let perms = Perms {
                            mode: Some(p.mode),
                            owner: Some((p.uid, p.gid)),
                            ..Perms::default()
                        };
                        atomic::take_permissions(f.as_mut(), &temp_path, None, perms, &|| 0)?;
                        f.write_all(bytes).ctx("write", &temp_path)
                    })()
                    .map(|()| temp.clone())
                    .inspect_err(|_| {
                        let _ = dir.remove_file(&temp);
                    })
                }
                (Source::Durable(_), None) => unreachable!("linked above"),
            }
            .and_then(|temp| {
                dir.rename(&temp, &bak)
                    .ctx("rename", &t.beside(&bak))
                    .inspect_err(|_| {
                        let _ = dir.remove_file(&temp);
                    })
            });
            if let Err(e) = placed {
                cleanup(&temps[..i]);
                return Err(e);
            }
        }
        // Past them: up to `reach`, then while there are more (an earlier, higher
        // setting's), as a write prunes. Only regular files (versions no longer wanted,
        // or ones the power loss emptied); anything else is left for recovery to report.
        for n in wanted.len() + 1.. {
            let name = t.backup_name(n);
            match dir.stat(&name) {
                Ok(m) if m.file_type == crate::fs::FileType::File => {
                    dir.remove_file(&name).ctx("remove", &t.backup_path(n))?;
                }
                Err(_) if n > reach => break,
                _ => {}
            }
        }
        tracing::info!(file = %t.path.display(), backups = wanted.len(),
            "put the backups back from the journal after a power loss");
        Ok(0)
    }

    /// The bytes of each put of `history` (`None` for a delete), read from its record:
    /// `None` if one does not hash to its version (damage) or an entry is a `direct`
    /// write (a version no record holds).
    fn puts_data(&self, history: &[(u64, &EntryMeta)]) -> Result<Option<Vec<Option<Vec<u8>>>>> {
        let mut data = Vec::with_capacity(history.len());
        for &(lsn, e) in history {
            match &e.action {
                Action::Put(p) => {
                    let bytes = self.read_data(lsn, p.data_at, p.data_len)?;
                    if Version::of(&bytes) != p.version {
                        return Ok(None);
                    }
                    data.push(Some(bytes));
                }
                Action::Delete => data.push(None),
                Action::Direct(_) => return Ok(None),
            }
        }
        Ok(Some(data))
    }

    /// Whether the locked document `w` is what its `last` entry made it, and each of
    /// its first `keep` backups that exists is complete and is not the same file as the
    /// one before it: then nothing of it was lost,
    /// and [`Journal::rebuild_backups`] has nothing to put back. (Telling which backups
    /// the checkpoint made durable by their bytes alone is ambiguous when a version
    /// comes back, so backups that need nothing are never moved.)
    ///
    /// The document is hashed within its last entry's length (a file of another length
    /// is not what it made), the backups within `max` (one over it is as one that does
    /// not parse), so that no file over the size limit is read.
    fn nothing_lost(&self, w: &Locked, last: &EntryMeta, keep: usize, max: u64) -> Result<bool> {
        let t = &w.target;
        let dir = w.dir.as_ref();
        let at_last = match &last.action {
            Action::Put(p) => {
                match crate::file::inspect_within(dir, &t.name, &t.path, p.data_len) {
                    Ok(found) => found.is_some_and(|f| f.version == p.version),
                    Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidName) => {
                        false
                    }
                    Err(e) => return Err(e),
                }
            }
            Action::Delete => matches!(
                dir.stat(&t.name),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound
            ),
            Action::Direct(_) => true,
        };
        if !at_last {
            return Ok(false);
        }
        // One file at two neighbouring names: a rebuild or rotation cut short (their
        // links and renames) leaves that, no write does. Two files of one version are
        // writers' work (a delete keeps the document as a backup; the same value
        // created again, then replaced, is a second file of it): nothing lost.
        let mut before: Option<(Version, Option<(u64, u64)>)> = None;
        for n in 1..=keep {
            let name = t.backup_name(n);
            match crate::file::inspect_within(dir, &name, &t.beside(&name), max) {
                Ok(None) => return Ok(false),
                Ok(Some(found)) if !found.parses => return Ok(false),
                Ok(Some(found)) => {
                    let id = dir.stat(&name).ok().map(|m| (m.dev, m.ino));
                    if let Some((version, was)) = &before
                        && *version == found.version
                        && (id.is_none() || *was == id)
                    {
                        return Ok(false);
                    }
                    before = Some((found.version, id));
                }
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidName) => {
                    before = None;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Lock the documents `entries` name, in the global order (their paths), as plain
    /// locks (no journal of their own). With `try_only`, `None` as soon as one is busy.
    /// A document whose directory is gone is left out, with a warning.
    fn lock_entries(
        &self,
        opts: &Options,
        entries: &[EntryMeta],
        try_only: bool,
    ) -> Result<Option<Vec<(usize, Locked)>>> {
        let mut order: Vec<(PathBuf, usize)> = entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                super::check_recorded_name(&e.name).map(|rel| (self.root().join(rel), i))
            })
            .collect();
        order.sort();
        let mut locked = Vec::new();
        let plain = Options {
            create_dirs: false,
            ..opts.clone()
        };
        // The documents of one directory share its handle (see `Dirs`); each `Locked`
        // keeps its own reference, so the map may go when this returns.
        let mut dirs = Dirs::new();
        for (path, i) in order {
            let w = if try_only {
                Locked::try_open_plain(&path, Some(self.root()), &plain, Some(&mut dirs))
            } else {
                Locked::open_plain(&path, Some(self.root()), &plain, Some(&mut dirs)).map(Some)
            };
            match w {
                Ok(Some(w)) => locked.push((i, w)),
                Ok(None) => return Ok(None),
                Err(err)
                    if err.kind() == ErrorKind::NotFound
                        || err.kind() == ErrorKind::InvalidName =>
                {
                    self.skip(&path, &entries[i], err.to_string());
                }
                Err(err) => return Err(err),
            }
        }
        Ok(Some(locked))
    }

    /// Why the replay after a reboot must not apply the last record (at `lsn`) of the
    /// document `name` (its records since the checkpoint: `history`) to the file it now
    /// reaches, `w`; `None` to apply it. A record names the file its writer resolved,
    /// with no symlink on the way (the path was canonical). A symlink standing in that
    /// path now (a file renamed by hand with a link left at its name, a directory
    /// renamed or swapped for a link) may lead to the same document under its new name,
    /// whose bytes may be older than the record after a power loss (apply), or to
    /// another document (its own writes must not be overwritten). Applied through a
    /// link only when the file reached holds a version of this document's chain (one
    /// of its records, or the version the first replaced), and no newer record was
    /// applied to that file already (`applied`: names replay in name order, so a
    /// record of the file's own name, or of another link to it, may come first). The
    /// file is looked at within `max` raised to the journal's largest record
    /// ([`Journal::looks_within`]).
    fn reached_through_link(
        &self,
        w: &Locked,
        name: &[u8],
        history: &[(u64, &EntryMeta)],
        lsn: u64,
        applied: &BTreeMap<PathBuf, u64>,
        max: u64,
    ) -> Option<&'static str> {
        if applied
            .get(&w.target.path)
            .is_some_and(|&newer| newer > lsn)
        {
            return Some("a newer record was applied to it");
        }
        let literal = super::check_recorded_name(name).map(|rel| self.root().join(rel));
        if literal.as_ref() == Some(&w.target.path) {
            return None;
        }
        let holds = match Current::probe(w, true, self.looks_within(max)) {
            Ok(c) => c.version().cloned(),
            Err(_) => None,
        };
        let known = holds.is_some_and(|v| {
            history
                .iter()
                .any(|(_, e)| e.version() == Some(&v) || e.previous.as_ref() == Some(&v))
        });
        (!known).then_some("it holds no version of the document the record names")
    }

    /// Apply the in-flight commit `t` whose writer may be gone: take the locks of its
    /// documents (the writer holds them until its slot is free, so once they are ours
    /// and the slot still holds `t`, the writer is gone), flush the journal up to it,
    /// apply each entry, free the slot. Returns false if `try_only` and a lock was busy.
    pub(crate) fn adopt(&self, opts: &Options, t: Ticket, try_only: bool) -> Result<bool> {
        let Some((_, entries)) = self.read_record_meta(t.lsn, Some(t.crc))? else {
            // The slot names no valid record: a claim torn by a crash. Free it.
            self.free_if(&t, opts)?;
            return Ok(true);
        };
        let Some(locked) = self.lock_entries(opts, &entries, try_only)? else {
            return Ok(false);
        };
        if !self.still_in_flight(&t, opts.lock_timeout)? {
            return Ok(true);
        }
        // A flush lock not had in time is `LockTimeout`, not the `Durability` that
        // `flush` gives the writer of `t`: the caller appended nothing, and `t` stays
        // in flight as it was, for the next one.
        self.flush_to(t.end, t.generation, Wait::new(opts.lock_timeout))
            .map_err(|e| match e.kind() {
                ErrorKind::LockTimeout => e,
                _ => self.flush_failed(e),
            })?;
        for (i, w) in &locked {
            self.apply_or_skip(w, t.lsn, &entries[*i], opts.max_document_bytes)?;
        }
        tracing::warn!(journal = %self.path().display(), lsn = t.lsn,
            "applied the commit of a writer that died before finishing it");
        self.free_if(&t, opts)?;
        Ok(true)
    }

    /// Before a read that takes no lock (of one document, or a listing): apply every
    /// commit in flight naming what it reads whose documents' locks are all free now
    /// (its writer is gone, or its rename failed after the commit and it said so). A
    /// commit whose writer still holds a lock is left alone: it is not acknowledged yet,
    /// and the read sees the version before it, as it would a moment earlier. One read
    /// of the shared state when no commit names the document. False if the journal has
    /// been disabled: the caller looks for the tree's journal again.
    ///
    /// A read of a document fails if a commit naming it cannot be applied (its bytes
    /// would not be what they should). A listing never fails for one: it shows the
    /// documents as they are, logs why, and the read of such a document reports it.
    pub(crate) fn settle_for_read(&self, opts: &Options, reading: Reading<'_>) -> Result<bool> {
        // Read without the append lock, as a writer's check is: a slot is only ever
        // rewritten whole, and the header bytes, checked by their CRC, may be caught
        // half-written by another process's write of the page: read them again.
        let mut page = None;
        for _ in 0..3 {
            page = self.read_page()?;
            if page.is_some() {
                break;
            }
            std::thread::yield_now();
        }
        let page = page.ok_or_else(|| self.damaged_state())?;
        if page.flags & shm::FLAG_DISABLED != 0 {
            self.set_gone();
            return Ok(false);
        }
        for t in Ticket::all(&page) {
            let Some(s) = page.slots[t.slot] else {
                continue;
            };
            if let Reading::Doc(name) = reading
                && !s.names.may_contain(name)
            {
                continue;
            }
            let settled = self
                .read_record_meta(t.lsn, Some(t.crc))
                .and_then(|meta| match meta {
                    Some((_, entries)) if entries.iter().any(|e| reading.covers(&e.name)) => {
                        self.adopt(opts, t, true).map(drop)
                    }
                    _ => Ok(()),
                });
            match (settled, reading) {
                (Ok(()), _) => {}
                (Err(e), Reading::Doc(_)) => return Err(e),
                (Err(e), Reading::Listing(_)) => {
                    tracing::warn!(journal = %self.path().display(), lsn = t.lsn, error = %e,
                        "a listing could not apply a dead writer's commit; it shows the documents as they are");
                }
            }
        }
        Ok(true)
    }

    fn free_if(&self, t: &Ticket, opts: &Options) -> Result<()> {
        self.finish(t, opts.lock_timeout).map(|_| ())
    }

    /// Adopt every in-flight commit whose writer is gone (with `try_only`, only those
    /// whose documents' locks are free now). Returns how many were applied.
    pub(crate) fn adopt_dead(&self, opts: &Options, try_only: bool) -> Result<usize> {
        let mut n = 0;
        for t in Ticket::all(&self.page()?) {
            if self.adopt(opts, t, try_only)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// With the users lock exclusive (no other process has the journal open): bring the
    /// documents up to date with the journal and build the shared state.
    pub(super) fn recover_alone(&self, opts: &Options) -> Result<()> {
        let path = self.path();
        let header = handle::read_header(self.log.as_ref(), path)?;
        let boot = opts.fs.boot_id();
        let page = self.read_page()?;
        if let (Some(page), Some(boot)) = (&page, boot)
            && page.boot == boot
            && page.flags & shm::FLAG_DAMAGED == 0
        {
            // Same boot: only processes died. The page cache kept everything they wrote;
            // what they left undone is in their slots.
            self.roll_back_poison(opts.lock_timeout)?;
            if page.flags & shm::FLAG_DISABLING != 0 {
                // A `disable` died during its checkpoint: writers may go on.
                self.with_append_lock(Wait::new(opts.lock_timeout), || {
                    let mut p = self.page()?;
                    p.flags &= !shm::FLAG_DISABLING;
                    self.write_page(&p, Some(0))
                })?;
            }
            if !mutants::active(Mutant::NoReplay) {
                self.adopt_dead(opts, false)?;
            }
            return Ok(());
        }
        // A reboot (or a power loss), a first use, or damage found before: replay from
        // the journal itself, which is what the disk holds.
        let scanned = self.scan(header.tail, header.tail_chain, None, true)?;
        // What is at a document's name is looked at within the caller's limit.
        let max = opts.max_document_bytes;
        if !mutants::active(Mutant::NoReplay) {
            // The newest record applied to each file reached (see `reached_through_link`).
            let mut applied: BTreeMap<PathBuf, u64> = BTreeMap::new();
            for (name, history) in scanned.histories() {
                let &(lsn, e) = history.last().expect("a document named by a record");
                let locked = self.lock_entries(opts, std::slice::from_ref(e), false)?;
                for (_, w) in locked.into_iter().flatten() {
                    if let Some(why) =
                        self.reached_through_link(&w, &name, &history, lsn, &applied, max)
                    {
                        let literal = super::check_recorded_name(&name)
                            .map_or_else(|| w.target.path.clone(), |rel| self.root().join(rel));
                        self.skip(
                            &literal,
                            e,
                            format!(
                                "its name now leads through a symlink to {}, and {why}",
                                w.target.path.display()
                            ),
                        );
                        continue;
                    }
                    applied.insert(w.target.path.clone(), lsn);
                    // The backups are not worth the document: a failure here is
                    // logged, and the replay rotates as the writer would have.
                    let keep = self
                        .rebuild_backups(&w, &history, max)
                        .unwrap_or_else(|err| {
                            tracing::warn!(file = %w.target.path.display(), error = %err,
                            "could not put the backups back from the journal after a power loss");
                            e.backups as usize
                        });
                    match self.apply_keeping(&w, lsn, e, keep, max) {
                        Err(err) if cannot_be_written(&err) => {
                            self.skip(&w.target.path, e, err.to_string());
                        }
                        r => {
                            r?;
                        }
                    }
                }
            }
        }
        // Records written in an earlier boot and found intact are on disk; a first use
        // of this boot may read some from the page cache: make them durable before
        // anything relies on them.
        self.log.sync_data().ctx("sync", path)?;
        let mut page = Page::new(
            self.salt,
            boot.unwrap_or(0),
            scanned.end,
            header.tail,
            scanned.chain,
            header.checkpoint_unix,
        );
        if let Some(d) = &scanned.damage {
            // Nothing may read as if the journal were replayed (see `boot`).
            super::boot::withdraw(self.meta.as_ref(), self.root())?;
            page.flags |= shm::FLAG_DAMAGED;
            tracing::error!(journal = %path.display(), lsn = d.lsn, later = d.later_records,
                reason = %d.reason, "the journal is damaged before its end: writes refused");
        }
        self.write_flushed(scanned.end, scanned.chain)?;
        self.write_page(&page, None)?;
        Ok(())
    }

    /// Bring the document at `path` (as a record names it, under the journal's root) up
    /// to its last record, under its lock (after applying a dead writer's commit naming
    /// it, if any). Only there: a name that now leads through a symlink (to another
    /// document, or out of the tree, which the lock's resolution refuses) is not
    /// repaired through it, [`ErrorKind::InvalidName`] (the replay after a reboot
    /// decides on such a link, [`Journal::reached_through_link`]).
    pub(crate) fn repair_document(&self, opts: &Options, path: &Path) -> Result<()> {
        let plain = Options {
            create_dirs: false,
            ..opts.clone()
        };
        loop {
            let w = Locked::open_plain(path, Some(self.root()), &plain, None)?;
            if w.target.path != path {
                return Err(Error::new(
                    ErrorKind::InvalidName,
                    format!(
                        "{} now leads through a symlink to {}: not repaired there",
                        path.display(),
                        w.target.path.display()
                    ),
                )
                .with_path(path));
            }
            let name = super::relative_name(self.root(), &w.target)?;
            if let Some(dead) = self.pending(&[&name])? {
                drop(w);
                self.adopt(opts, dead, false)?;
                continue;
            }
            let header = handle::read_header(self.log.as_ref(), self.path())?;
            let scanned = self.scan(header.tail, header.tail_chain, None, true)?;
            if let Some((ri, ei)) = scanned.last_entries().get(&name) {
                let rec = &scanned.records[*ri];
                self.apply(&w, rec.lsn, &rec.entries[*ei], opts.max_document_bytes)?;
            }
            return Ok(());
        }
    }

    /// See [`super::checkpoint`]. Waits for another checkpoint (in this process or
    /// another) at most the lock timeout: a process stopped while it held the lock
    /// fails this with `LockTimeout` instead of hanging it.
    pub(crate) fn checkpoint(&self, opts: &Options) -> Result<CheckpointReport> {
        let deadline = crate::lock::deadline(Instant::now(), opts.lock_timeout);
        self.checkpoint_until(opts, deadline)
    }

    /// A checkpoint, waiting for another one at most until `deadline`.
    pub(crate) fn checkpoint_until(
        &self,
        opts: &Options,
        deadline: Instant,
    ) -> Result<CheckpointReport> {
        let p = self.root().join(META_DIR).join(CKPT);
        // Another thread of this process running one: waited for as another process's
        // is, until the deadline (a checkpoint of many documents takes seconds).
        let mut backoff = std::time::Duration::from_micros(100);
        let _in = loop {
            match self.ckpt.try_lock() {
                Ok(g) => break g,
                Err(std::sync::TryLockError::Poisoned(g)) => break g.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() >= deadline => {
                    return Err(Error::new(
                        ErrorKind::LockTimeout,
                        format!(
                            "cannot take the journal's checkpoint lock ({}): another thread's \
                             checkpoint held it too long",
                            p.display()
                        ),
                    )
                    .with_path(&p));
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(std::time::Duration::from_millis(5));
                }
            }
        };
        handle::flock(
            &self.ckpt_file,
            &self.ckpt_helpers,
            crate::fs::LockMode::Exclusive,
            Wait {
                deadline,
                ..Wait::new(opts.lock_timeout)
            },
            "checkpoint",
            &p,
        )?;
        let r = self.checkpoint_locked(opts);
        let _ = self.ckpt_file.unlock();
        r
    }

    /// A checkpoint unless one is running (here or in another process), which does the
    /// same work: then `None` at once. For the checkpoint a write finds due.
    pub(crate) fn checkpoint_unless_running(
        &self,
        opts: &Options,
    ) -> Result<Option<CheckpointReport>> {
        let _in = match self.ckpt.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(g)) => g.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        let p = self.root().join(META_DIR).join(CKPT);
        let free = handle::try_flock(
            &self.ckpt_file,
            &self.ckpt_helpers,
            crate::fs::LockMode::Exclusive,
            &p,
        )?;
        if !free {
            return Ok(None);
        }
        let r = self.checkpoint_locked(opts);
        let _ = self.ckpt_file.unlock();
        r.map(Some)
    }

    fn checkpoint_locked(&self, opts: &Options) -> Result<CheckpointReport> {
        let path = self.path();
        let fs = &opts.fs;
        let timeout = opts.lock_timeout;
        let page = self.with_append_lock(Wait::new(timeout), || self.page())?;
        let header = handle::read_header(self.log.as_ref(), path)?;
        let (tail, x) = (header.tail, page.end);
        let mut report = CheckpointReport::default();
        if x == tail {
            return Ok(report);
        }
        // A file only the journal holds may be damaged on disk: its record stays.
        if page.flags & (shm::FLAG_SYNC_FAILED | shm::FLAG_REWRITING) != 0 {
            return Err(self.sync_failed_error());
        }
        self.flush_to(x, page.generation, Wait::new(timeout))?;
        // Every commit before X must be applied: wait for live writers (their locks),
        // apply dead ones.
        for t in Ticket::all(&page).into_iter().filter(|t| t.lsn < x) {
            if self.still_in_flight(&t, timeout)? {
                self.adopt(opts, t, false)?;
                report.adopted += 1;
            }
        }
        let scanned = self.scan(tail, header.tail_chain, Some(x), false)?;
        // The files to sync, by directory: each document (true), and its backups
        // (false). A version replaced since the last checkpoint may live on as a backup
        // (a write's link, a delete's move), its bytes never synced: ext4 writes a file
        // renamed over another out at once, but not one swapped in, and other file
        // systems neither; and this frees the record that holds its bytes.
        let mut by_dir: ToSync = BTreeMap::new();
        for r in &scanned.records {
            for e in &r.entries {
                if let Some(rel) = super::check_recorded_name(&e.name) {
                    let full = self.root().join(rel);
                    if let (Some(d), Some(n)) = (full.parent(), full.file_name()) {
                        let files = by_dir.entry(d.to_path_buf()).or_default();
                        // The last record up to X decides what should be there.
                        files.insert(
                            n.to_os_string(),
                            Synced::Document {
                                name: e.name.clone(),
                                put: matches!(e.action, Action::Put(_)),
                            },
                        );
                        let t = crate::names::Target::in_dir(d, n);
                        let kept = e.backups.clamp(1, MAX_SYNCED_BACKUPS);
                        let kept = if mutants::active(Mutant::CheckpointSkipsBackups) {
                            0
                        } else {
                            kept as usize
                        };
                        for k in 1..=kept {
                            files
                                .entry(t.backup_name(k))
                                .or_insert_with(|| Synced::Backup {
                                    doc: n.to_os_string(),
                                    n: k,
                                });
                        }
                    }
                }
            }
        }
        let early = mutants::active(Mutant::CheckpointBeforeSync);
        if early {
            self.write_header(&header, x, scanned.chain, timeout)?;
        }
        start_writeback(fs.as_ref(), &by_dir);
        // What cannot be reached where the records name it is made durable by a sync of
        // its whole file system instead.
        let mut around = Fallback {
            journal: self,
            fs: fs.as_ref(),
            x,
            chain: scanned.chain,
            timeout,
            later: None,
            synced: Vec::new(),
            mounts_synced: false,
        };
        // Each directory's files first, then the directory that names them; one
        // directory open at a time (a checkpoint of documents in thousands of
        // directories must not run out of descriptors).
        for (d, names) in &by_dir {
            let dir = match crate::fs::retry(|| fs.open_dir(d)) {
                Ok(h) => h,
                Err(e) if out_of_reach(&e) => {
                    around.directory(fs.as_ref(), d, names, &e, &mut report)?;
                    continue;
                }
                Err(e) => return Err(Error::io("open directory", d, e)),
            };
            for (n, what) in names {
                let f = d.join(n);
                // Not reached: why, and whether a file may be there all the same.
                let opened = match dir.stat(n) {
                    Ok(m) if m.is_file() => match crate::fs::retry(|| dir.open_read(n)) {
                        Ok(h) => Ok(h),
                        Err(e) if out_of_reach(&e) => Err((e.to_string(), true)),
                        Err(e) => return Err(Error::io("open", &f, e)),
                    },
                    Ok(m) => Err((format!("{} is there", m.file_type.describe()), false)),
                    Err(e) if out_of_reach(&e) => {
                        Err((e.to_string(), e.kind() != std::io::ErrorKind::NotFound))
                    }
                    Err(e) => return Err(Error::io("inspect", &f, e)),
                };
                let mut file = match opened {
                    Ok(h) => h,
                    Err((why, present)) => {
                        around.document(dir.as_ref(), &f, (what, present), &why, &mut report)?;
                        continue;
                    }
                };
                if let Err(e) = file.sync_all() {
                    // A failed fsync may drop the pages it could not write, or keep
                    // them clean in the cache while the disk holds other bytes: put the
                    // record's bytes back in a fresh file, or else mark the journal so
                    // that no checkpoint frees the record before a recovery has.
                    drop(file);
                    match what {
                        Synced::Document { .. } => {
                            self.restore_after_failed_sync(
                                opts,
                                &f,
                                header.tail,
                                header.tail_chain,
                            );
                        }
                        Synced::Backup { doc, n } => {
                            self.restore_backup_after_failed_sync(opts, (d, doc, *n), header.tail);
                        }
                    }
                    return Err(Error::io("sync", &f, e));
                }
                if matches!(what, Synced::Document { .. }) {
                    report.documents += 1;
                }
            }
            dir.sync().ctx("sync directory", d)?;
            report.directories += 1;
        }
        // A sync that failed meanwhile outside this checkpoint (a write outside the
        // journal) whose file could not be rewritten: its record stays.
        if self.sync_failed(timeout)? {
            return Err(self.sync_failed_error());
        }
        if !early {
            self.write_header(&header, x, scanned.chain, timeout)?;
        }
        let now = handle::now_unix();
        // The header (on disk, what a replay starts from) has the new checkpoint; the
        // shared state, what appenders measure the ring's room by, still has the old:
        // a timeout here leaves less room than there is, never more, and the next
        // checkpoint moves it.
        self.with_append_lock(Wait::new(timeout), || {
            let mut p = self.page()?;
            p.tail = p.tail.max(x);
            p.checkpoint_unix = now;
            self.write_page(&p, Some(0))
        })?;
        report.freed = x - tail;
        Ok(report)
    }

    /// After a failed sync of the locked document `w` by a write outside the journal
    /// ([`atomic`]'s `sync_kept`): write its last record since the checkpoint again, as
    /// a fresh file (temp, write, fsync, rename over it, directory fsync), whatever it
    /// reads as now. A failed sync may drop the pages it could not write (the file then
    /// reads empty or older), or, as Linux does, keep them in the cache marked clean:
    /// the file reads as it should while the disk holds other bytes, and no later sync
    /// writes them. The failed file is never synced again as if it were good: it is
    /// replaced. `false` if the journal has no record of it (its file was durable at
    /// the checkpoint) or its last record is not what the writer saw.
    ///
    /// Only the version the writer saw there (`seen`, under the lock) is put back: a
    /// document written outside the journal whose `direct` record could not be appended
    /// (or by a writer that waited for a disable) is newer than its last record, which
    /// must not be applied over it. `since`: the checkpoint's position before the sync
    /// ([`Journal::checkpoint_lsn`]; see [`Journal::records_since`]).
    pub(crate) fn rewrite_locked(
        &self,
        w: &Locked,
        max: u64,
        seen: &Version,
        since: u64,
    ) -> Result<bool> {
        let header = self.records_since(since, &w.target.path)?;
        let name = super::relative_name(self.root(), &w.target)?;
        let scanned = self.scan(header.tail, header.tail_chain, None, true)?;
        if mutants::active(Mutant::RewriteFromFirstRecord) {
            // Broken on purpose: the document's first record since the checkpoint, an
            // older version, whatever the write saw (a rollback the fault judge must see).
            let first = scanned.records.iter().find_map(|r| {
                r.entries
                    .iter()
                    .find(|e| e.name == name)
                    .map(|e| (r.lsn, e))
            });
            return match first {
                Some((lsn, e)) => self.apply(w, lsn, e, max),
                None => Ok(false),
            };
        }
        match scanned.last_entries().get(&name) {
            Some((ri, ei)) => {
                let rec = &scanned.records[*ri];
                match &rec.entries[*ei].action {
                    Action::Put(p) if p.version == *seen => {
                        self.write_fresh_document(w, rec.lsn, p)?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            None => Ok(false),
        }
    }

    /// Write the bytes of the put `p` (of the record at `lsn`) at the locked document's
    /// name as a fresh file, synced, and its directory synced, keeping nothing of what
    /// is there (a file whose sync failed: its bytes are unknown).
    fn write_fresh_document(&self, w: &Locked, lsn: u64, p: &format::PutMeta) -> Result<()> {
        let data = self.record_bytes(w, lsn, p)?;
        let plan = Plan {
            durability: Durability::Full,
            backups: 0,
            verify: Verify::No,
            perms: Perms {
                mode: Some(p.mode),
                owner: Some((p.uid, p.gid)),
                ..Perms::default()
            },
            poison: None,
            temp_created: None,
            max_bytes: u64::MAX,
        };
        // Not looked at: nothing of it is kept.
        let current = Current::probe(w, false, u64::MAX)?;
        let mut body =
            |out: &mut atomic::TempWriter<'_>| out.write_all(&data).map_err(SerializeError::Io);
        atomic::replace_plain(w, &plan, &current, &mut body)?;
        tracing::warn!(file = %w.target.path.display(), version = %p.version,
            "rewrote a document from its journal record after a failed sync of it");
        Ok(())
    }

    /// Where the last checkpoint is (the header's tail): taken before a sync whose
    /// failure the records since would repair ([`Journal::records_since`]).
    pub(crate) fn checkpoint_lsn(&self) -> Result<u64> {
        Ok(handle::read_header(self.log.as_ref(), self.path())?.tail)
    }

    /// The header, if the checkpoint is still at `since` (taken before the sync of
    /// `path` that failed): a checkpoint that ran since, in another process, may have
    /// synced the failed file (with success: nothing is dirty) and freed the records
    /// that held its bytes, which can then no longer be put back. An error then, which
    /// the caller reports (and marks the journal for).
    fn records_since(&self, since: u64, path: &Path) -> Result<Header> {
        let header = handle::read_header(self.log.as_ref(), self.path())?;
        if header.tail != since {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "a checkpoint freed the journal's records (its position moved from {since} \
                     to {}) between the failed sync of {} and its repair: what it holds on \
                     disk may not be the version it held, and the journal no longer has that",
                    header.tail,
                    path.display()
                ),
            )
            .with_path(path));
        }
        Ok(header)
    }

    /// The bytes of the put `p` of the record at `lsn`, checked against its version.
    fn record_bytes(&self, w: &Locked, lsn: u64, p: &format::PutMeta) -> Result<Vec<u8>> {
        let data = self.read_data(lsn, p.data_at, p.data_len)?;
        if Version::of(&data) != p.version {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "the journal {} holds damaged bytes for {} (record at LSN {lsn})",
                    self.path().display(),
                    w.target.path.display()
                ),
            )
            .with_path(&w.target.path));
        }
        Ok(data)
    }

    /// After a failed sync of backup `n` of the locked document `w` (by a write outside
    /// the journal, which syncs the backups it leaves durable, or by a checkpoint):
    /// if its version may be one only the journal holds, write it again from its
    /// record as a fresh file (see [`Journal::rewrite_locked`] for why the failed file
    /// is replaced, never synced again). `Ok(false)` if nothing needed it (no file
    /// there, or a complete version no record since the checkpoint wrote: durable
    /// before, so the failed sync dropped nothing of it). An error if it could not be
    /// rewritten, or if which version it held cannot be told (the caller then marks
    /// the journal: [`Journal::mark_sync_failed`]). `since`: the checkpoint's position
    /// before the sync ([`Journal::records_since`]).
    pub(crate) fn rewrite_backup_locked(
        &self,
        w: &Locked,
        n: usize,
        max: u64,
        since: u64,
    ) -> Result<bool> {
        let header = self.records_since(since, &w.target.backup_path(n))?;
        let name = super::relative_name(self.root(), &w.target)?;
        let scanned = self.scan(header.tail, header.tail_chain, None, true)?;
        let histories = scanned.histories();
        let history = histories.get(&name).map_or(&[][..], Vec::as_slice);
        match self.rewrite_backup(w, history, n, max)? {
            Rewrite::Done => Ok(true),
            Rewrite::NotNeeded => Ok(false),
            Rewrite::CannotTell(why) => {
                Err(Error::new(ErrorKind::Io, why).with_path(&w.target.backup_path(n)))
            }
        }
    }

    /// [`Journal::rewrite_backup_locked`] with the document's entries since the
    /// checkpoint (`history`, oldest first).
    ///
    /// Which version the backup held: the one it reads as, if that is a version a put
    /// since the checkpoint wrote (the pages a failed sync keeps read as they were);
    /// otherwise (it reads empty, torn, or not at all) the one the chain of versions
    /// since the last `direct` entry puts at its place ([`chains_since_checkpoint`], as
    /// the replay after a power loss does), if that is a record's. It is read within
    /// `max` raised to the journal's largest record ([`Journal::looks_within`]).
    fn rewrite_backup(
        &self,
        w: &Locked,
        history: &[(u64, &EntryMeta)],
        n: usize,
        max: u64,
    ) -> Result<Rewrite> {
        if mutants::active(Mutant::NoBackupRewrite) {
            return Ok(Rewrite::NotNeeded);
        }
        let max = self.looks_within(max);
        let t = &w.target;
        let dir = w.dir.as_ref();
        let (bak, path) = (t.backup_name(n), t.backup_path(n));
        match dir.stat(&bak) {
            Ok(m) if m.file_type == FileType::File => {}
            // Nothing there, or something statefile never writes: no version of it.
            Ok(_) => return Ok(Rewrite::NotNeeded),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Rewrite::NotNeeded),
            Err(e) => return Err(Error::io("inspect", &path, e)),
        }
        if history.is_empty() {
            // Nothing of the document since the checkpoint: its backups were durable.
            return Ok(Rewrite::NotNeeded);
        }
        let put_of = |v: &Version| {
            history.iter().find_map(|(lsn, e)| match &e.action {
                Action::Put(p) if p.version == *v => Some((*lsn, p)),
                _ => None,
            })
        };
        // Unreadable (a read error after a failed sync) is as torn.
        let reads = crate::file::inspect_within(dir, &bak, &path, max)
            .ok()
            .flatten()
            .filter(|s| s.parses);
        let (lsn, p) = match reads {
            Some(seen) => match put_of(&seen.version) {
                Some(source) => source,
                None => return Ok(Rewrite::NotNeeded),
            },
            None => {
                let after = match history
                    .iter()
                    .rposition(|(_, e)| matches!(e.action, Action::Direct(_)))
                {
                    Some(d) => &history[d + 1..],
                    None => history,
                };
                let slot = match self.puts_data(after)? {
                    Some(data) => chains_since_checkpoint(after, &data)
                        .and_then(|chains| chains.last().and_then(|(_, b)| b.get(n - 1).copied())),
                    None => None,
                };
                match slot {
                    Some(Slot::Record(i)) => {
                        let (lsn, e) = after[i];
                        let Action::Put(p) = &e.action else {
                            unreachable!("a backup is a version a put wrote")
                        };
                        (lsn, p)
                    }
                    _ => {
                        return Ok(Rewrite::CannotTell(format!(
                            "{} does not read as a complete version, and the journal's records \
                             do not say which version is meant to be there",
                            path.display()
                        )));
                    }
                }
            }
        };
        let data = self.record_bytes(w, lsn, p)?;
        let temp = t.temp_name(&random_suffix());
        let temp_path = t.beside(&temp);
        let placed = (|| {
            let mut f = dir.create_new(&temp, 0o600).ctx("create", &temp_path)?;
            let perms = Perms {
                mode: Some(p.mode),
                owner: Some((p.uid, p.gid)),
                ..Perms::default()
            };
            atomic::take_permissions(f.as_mut(), &temp_path, None, perms, &|| 0)?;
            f.write_all(&data).ctx("write", &temp_path)?;
            f.sync_all().ctx("sync", &temp_path)?;
            dir.rename(&temp, &bak).ctx("rename", &path)
        })();
        if placed.is_err() {
            let _ = dir.remove_file(&temp);
        }
        placed?;
        dir.sync().ctx("sync directory", &t.dir)?;
        tracing::warn!(file = %t.path.display(), backup = %path.display(), version = %p.version,
            "rewrote a backup from its journal record after a failed sync of it");
        Ok(Rewrite::Done)
    }

    /// Mark the journal: a sync of `path`, whose bytes only the journal may hold, failed
    /// and it could not be rewritten (`why`). No checkpoint frees a record until
    /// `statefile recover` has rewritten every file the journal holds
    /// ([`shm::FLAG_SYNC_FAILED`]). If even the mark cannot be written, that is logged:
    /// the caller's error says what happened.
    pub(crate) fn mark_sync_failed(&self, path: &Path, why: &Error, timeout: Duration) {
        tracing::error!(file = %path.display(), error = %why,
            "a sync failed and the file could not be rewritten from the journal: \
             checkpoints are refused until `statefile recover`");
        let marked = self.with_append_lock(Wait::new(timeout), || {
            let mut p = self.page()?;
            p.flags |= shm::FLAG_SYNC_FAILED;
            self.write_page(&p, Some(0))
        });
        if let Err(e) = marked {
            tracing::error!(journal = %self.path().display(), error = %e,
                "could not mark the journal's shared state: a sync failed");
        }
    }

    /// The error of a checkpoint refused after [`Journal::mark_sync_failed`].
    fn sync_failed_error(&self) -> Error {
        Error::new(
            ErrorKind::Io,
            format!(
                "refusing to checkpoint the journal {}: a sync of a document or backup whose \
                 bytes only the journal may hold failed, and the file could not be rewritten \
                 from its record (the log says which), so the journal keeps every record \
                 until `statefile recover {}` has rewritten those files",
                self.path().display(),
                self.root().display()
            ),
        )
        .with_path(self.path())
    }

    /// Whether the shared state says a sync failed and its files are not rewritten yet
    /// (or are being rewritten).
    fn sync_failed(&self, timeout: Duration) -> Result<bool> {
        let page = self.with_append_lock(Wait::new(timeout), || self.page())?;
        Ok(page.flags & (shm::FLAG_SYNC_FAILED | shm::FLAG_REWRITING) != 0)
    }

    /// `statefile recover` after [`Journal::mark_sync_failed`]: rewrite, as fresh files,
    /// every document and backup whose version a record since the checkpoint holds
    /// (which file's sync failed is not recorded), then let checkpoints go on. Returns
    /// whether there was anything to do. While it runs the journal says so
    /// ([`shm::FLAG_REWRITING`], which checkpoints honour too), so that a sync failing
    /// meanwhile marks the journal again rather than being cleared with it; a recovery
    /// that fails or dies leaves the journal marked.
    pub(super) fn rewrite_after_failed_sync(&self, opts: &Options) -> Result<bool> {
        let started = self.with_append_lock(Wait::new(opts.lock_timeout), || {
            let mut p = self.page()?;
            if p.flags & (shm::FLAG_SYNC_FAILED | shm::FLAG_REWRITING) == 0 {
                return Ok(false);
            }
            p.flags = (p.flags & !shm::FLAG_SYNC_FAILED) | shm::FLAG_REWRITING;
            self.write_page(&p, Some(0))?;
            Ok(true)
        })?;
        if !started {
            return Ok(false);
        }
        let r = self.rewrite_held(opts);
        self.with_append_lock(Wait::new(opts.lock_timeout), || {
            let mut p = self.page()?;
            p.flags &= !shm::FLAG_REWRITING;
            if r.is_err() {
                p.flags |= shm::FLAG_SYNC_FAILED;
            }
            self.write_page(&p, Some(0))
        })?;
        r.map(|()| true)
    }

    /// The work of [`Journal::rewrite_after_failed_sync`]: each document a record since
    /// the checkpoint names, under its lock: the document, if it reads as its last
    /// record's version (one that does not is the repair's business: it is rewritten
    /// from the record anyway), and each of its backups, as after a failed sync of it
    /// ([`Journal::rewrite_backup`]). A backup whose version cannot be told is left as
    /// it is, with a warning (recovery reports it if it does not parse). The first
    /// error is returned, after the other documents were done.
    fn rewrite_held(&self, opts: &Options) -> Result<()> {
        let header = handle::read_header(self.log.as_ref(), self.path())?;
        let scanned = self.scan(header.tail, header.tail_chain, None, true)?;
        let max = opts.max_document_bytes;
        let plain = Options {
            create_dirs: false,
            ..opts.clone()
        };
        let mut first = None;
        for (name, history) in scanned.histories() {
            let Some(rel) = super::check_recorded_name(&name) else {
                continue;
            };
            let path = self.root().join(rel);
            let done = (|| {
                let w = match Locked::open_plain(&path, Some(self.root()), &plain, None) {
                    Ok(w) => w,
                    Err(e) if cannot_be_reached(&e) => {
                        tracing::warn!(file = %path.display(), error = %e,
                            "a document the journal holds cannot be reached to be rewritten");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                if w.target.path != path {
                    // Its name leads through a symlink now: the replay's business.
                    return Ok(());
                }
                let &(lsn, last) = history.last().expect("a document named by a record");
                if let Action::Put(p) = &last.action {
                    let holds = crate::file::inspect_within(
                        w.dir.as_ref(),
                        &w.target.name,
                        &w.target.path,
                        p.data_len,
                    )
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.version == p.version);
                    if holds {
                        self.write_fresh_document(&w, lsn, p)?;
                    }
                }
                let width = history
                    .iter()
                    .map(|(_, e)| e.backups.clamp(1, MAX_SYNCED_BACKUPS) as usize)
                    .max()
                    .unwrap_or(1);
                for n in 1..=width {
                    if let Rewrite::CannotTell(why) = self.rewrite_backup(&w, &history, n, max)? {
                        tracing::warn!(file = %path.display(), %why,
                            "a backup could not be rewritten from the journal");
                    }
                }
                Ok(())
            })();
            if let Err(e) = done {
                tracing::error!(file = %path.display(), error = %e,
                    "could not rewrite a document or its backups from the journal");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// After a failed sync of the document at `path` in a checkpoint: rewrite it from
    /// its last record (under its lock, if free now): as a fresh file if it reads as
    /// that record (the pages may be clean in the cache, not on the disk), otherwise as
    /// a replay applies a record. If that cannot be done (the lock is held: its writer
    /// may keep the failed file as a backup; or the rewrite failed), the journal is
    /// marked ([`Journal::mark_sync_failed`]).
    fn restore_after_failed_sync(&self, opts: &Options, path: &Path, tail: u64, chain: u32) {
        let plain = Options {
            create_dirs: false,
            ..opts.clone()
        };
        let r = (|| {
            let Some(w) = Locked::try_open_plain(path, Some(self.root()), &plain, None)? else {
                return Err(Error::new(
                    ErrorKind::LockTimeout,
                    format!("{} is locked by a writer", path.display()),
                ));
            };
            let name = super::relative_name(self.root(), &w.target)?;
            let scanned = self.scan(tail, chain, None, true)?;
            let Some((ri, ei)) = scanned.last_entries().get(&name).copied() else {
                return Ok(());
            };
            let rec = &scanned.records[ri];
            let e = &rec.entries[ei];
            if let Action::Put(p) = &e.action
                && crate::file::inspect_within(w.dir.as_ref(), &w.target.name, path, p.data_len)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.version == p.version)
            {
                return self.write_fresh_document(&w, rec.lsn, p);
            }
            self.apply(&w, rec.lsn, e, opts.max_document_bytes)
                .map(drop)
        })();
        if let Err(e) = r {
            self.mark_sync_failed(path, &e, opts.lock_timeout);
        }
    }

    /// After a failed sync of backup `n` of the document `doc` in the directory `dir`
    /// in a checkpoint: as [`Journal::rewrite_backup_locked`], under the document's lock
    /// if free now; otherwise, or if that fails, the journal is marked.
    fn restore_backup_after_failed_sync(
        &self,
        opts: &Options,
        (dir, doc, n): (&Path, &OsStr, usize),
        tail: u64,
    ) {
        let path = dir.join(doc);
        let plain = Options {
            create_dirs: false,
            ..opts.clone()
        };
        let r = (|| {
            let Some(w) = Locked::try_open_plain(&path, Some(self.root()), &plain, None)? else {
                return Err(Error::new(
                    ErrorKind::LockTimeout,
                    format!("{} is locked by a writer", path.display()),
                ));
            };
            self.rewrite_backup_locked(&w, n, opts.max_document_bytes, tail)
        })();
        if let Err(e) = r {
            self.mark_sync_failed(
                &crate::names::Target::in_dir(dir, doc).backup_path(n),
                &e,
                opts.lock_timeout,
            );
        }
    }

    /// Write a new header with the checkpoint at `tail` over the older copy, and sync
    /// (see [`Journal::write_header_copy`] for `timeout`).
    fn write_header(&self, old: &Header, tail: u64, chain: u32, timeout: Duration) -> Result<()> {
        self.write_header_flags(old, tail, chain, old.flags, timeout)
    }

    pub(super) fn write_header_flags(
        &self,
        old: &Header,
        tail: u64,
        chain: u32,
        flags: u32,
        timeout: Duration,
    ) -> Result<()> {
        let at = self.next_header_copy()?;
        self.write_header_copy(old, (tail, chain, flags), at, timeout)
    }

    /// The header copy a new header goes to: the one that is not the newest, so that a
    /// torn write leaves the other intact.
    fn next_header_copy(&self) -> Result<usize> {
        Ok(1 - self.header_copies()?.0)
    }

    /// Write a new header (`tail`, `chain`, `flags`, a sequence number above both
    /// copies') over copy `at`, and sync. To undo a header whose sync failed, `at` is
    /// the copy that header went to: the other one may be the newest durable header,
    /// which a torn write must not take (the cache may show either copy as the newest
    /// after a failed sync). The append lock, under which the shared state is read
    /// for the poison, is waited for at most `timeout`: a timeout writes nothing.
    fn write_header_copy(
        &self,
        old: &Header,
        (tail, chain, flags): (u64, u32, u32),
        at: usize,
        timeout: Duration,
    ) -> Result<()> {
        let path = self.path();
        // Poisoned (a flush or a header failed): what the disk holds is unknown, and a
        // header written now could go over the newest durable copy. `statefile recover`
        // first (it writes the newest copy again, synced).
        let page = self.with_append_lock(Wait::new(timeout), || self.page())?;
        if self.is_poisoned(&page) {
            return Err(self.poisoned_error());
        }
        let (_, copies) = self.header_copies()?;
        let h = Header {
            seq: old
                .seq
                .max(copies.iter().flatten().map(|c| c.seq).max().unwrap_or(0))
                + 1,
            tail,
            tail_chain: chain,
            flags,
            checkpoint_unix: handle::now_unix(),
            ..*old
        };
        write_all_at(self.log.as_ref(), &h.encode(), format::HEADER_COPIES[at])
            .ctx("write", path)?;
        if let Err(e) = self.log.sync_data() {
            // A failed sync may leave the page in the cache, read as the newest copy,
            // while the disk holds this copy's older bytes: the next header would go
            // over the other copy, the newest durable one, which a torn write then
            // takes (the tail falls back to before a checkpoint whose ring was reused).
            // Written again (the failed sync cleaned the page: syncing alone writes
            // nothing) and synced, this copy is what it reads; failing that, the
            // journal is poisoned: no commit, and no header, until it is opened again.
            let again = write_all_at(self.log.as_ref(), &h.encode(), format::HEADER_COPIES[at])
                .and_then(|()| self.log.sync_data());
            if again.is_ok() {
                return Ok(());
            }
            let published = self.poison(timeout);
            let e = Error::io("sync", path, e);
            return Err(Error::new(
                e.kind(),
                format!("{}{}", e.message(), handle::poison_note(&published)),
            )
            .with_path(path)
            .with_source(e));
        }
        Ok(())
    }
}

/// What [`Journal::rewrite_backup`] did.
#[derive(Debug)]
enum Rewrite {
    /// Wrote the backup's version again from its record, as a fresh file.
    Done,
    /// Nothing there needed it.
    NotNeeded,
    /// The backup does not read as a complete version and the records do not say
    /// which version is meant to be there: why.
    CannotTell(String),
}

/// A place in a document's chain of versions since the last checkpoint: the version
/// the checkpoint left at its name (`Durable(0)`) or at `.bak.j` (`Durable(j)`), or the
/// one the `i`-th of its records since wrote (`Record(i)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Durable(usize),
    Record(usize),
}

/// The document's chain (its version, its backups newest first) at the last checkpoint
/// and after each of its `history` entries since, as its writers made it: a put that
/// replaced a version (its `previous`) by another kept it as `.bak` and the older ones
/// one place up, as many as the entry kept, and so did a delete; a put of an unchanged
/// version, of a new document, or keeping none, moved nothing. `data` holds each put's
/// bytes (an old version that does not parse was set aside, not kept). `None` if the
/// entries' `previous` versions do not link up (a write outside the journal).
fn chains_since_checkpoint(
    history: &[(u64, &EntryMeta)],
    data: &[Option<Vec<u8>>],
) -> Option<Vec<(Option<Slot>, Vec<Slot>)>> {
    let width = history
        .iter()
        .map(|(_, e)| e.backups.min(MAX_SYNCED_BACKUPS) as usize)
        .max()
        .unwrap_or(0);
    let anchor = history.first()?.1.previous.as_ref();
    let mut doc = anchor.map(|_| Slot::Durable(0));
    let mut backups: Vec<Slot> = (1..=width).map(Slot::Durable).collect();
    let mut chains = vec![(doc, backups.clone())];
    for (i, (_, e)) in history.iter().enumerate() {
        let was = doc.map(|s| match s {
            Slot::Record(r) => history[r].1.version(),
            Slot::Durable(_) => anchor,
        });
        // A writer that did not look at the version it replaced kept none of it.
        if e.previous.is_some() && was.flatten() != e.previous.as_ref() {
            return None;
        }
        let parses = |s: Slot| match s {
            Slot::Record(r) => data[r]
                .as_ref()
                .is_some_and(|b| serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()),
            // Kept or set aside by the writer as it was; taken as kept.
            Slot::Durable(_) => true,
        };
        let kept = e.backups.min(MAX_SYNCED_BACKUPS) as usize;
        let replaced = match &e.action {
            Action::Put(p) => e.previous.as_ref().is_some_and(|v| *v != p.version),
            Action::Delete => e.previous.is_some(),
            Action::Direct(_) => return None,
        };
        if let Some(old) = doc
            && replaced
            && kept > 0
            && parses(old)
        {
            backups.insert(0, old);
            backups.truncate(kept);
        }
        doc = match e.action {
            Action::Put(_) => Some(Slot::Record(i)),
            _ => None,
        };
        chains.push((doc, backups.clone()));
    }
    Some(chains)
}

/// Whether applying a record to a document failed because the document can no longer
/// be written: something statefile never replaces is at its name (a FIFO, a socket, a
/// device: [`ErrorKind::InvalidName`]), or a file over the size limit is, on a file
/// system that will not link it aside (a write refuses to copy it: [`Error::too_large`]).
/// A replay or an adoption skips it, with a warning, rather than let whoever put it
/// there stop every recovery of the tree.
fn cannot_be_written(err: &Error) -> bool {
    err.kind() == ErrorKind::InvalidName || err.too_large().is_some()
}

/// Whether bringing a document up to its record failed because it cannot be reached
/// where the record names it (its directory is gone: [`ErrorKind::NotFound`]; a file or
/// a symlink loop in its path: [`ErrorKind::InvalidName`]) or can no longer be written
/// ([`cannot_be_written`]). `statefile recover` skips it, with a warning, as a replay
/// does ([`Journal::lock_entries`], [`Journal::apply_or_skip`]).
pub(super) fn cannot_be_reached(err: &Error) -> bool {
    err.kind() == ErrorKind::NotFound || cannot_be_written(err)
}

/// Whether a hard link failed because the file system (or its policy) will not make
/// one: EPERM (FAT, some FUSE and network file systems, `protected_hardlinks` for a file
/// another user owns), EXDEV, EMLINK, EOPNOTSUPP. The writer's backup copies then, and
/// so does [`Journal::rebuild_backups`].
fn link_refused(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        crate::error::errno(e),
        Some(Errno::PERM | Errno::XDEV | Errno::MLINK | Errno::OPNOTSUPP)
    )
}

/// Copy the regular file `name` of `dir` (`path` in errors) to the new file `temp`,
/// synced; `temp` is removed if that fails.
fn copy_aside(dir: &dyn crate::fs::FsDir, name: &OsStr, path: &Path, temp: &OsStr) -> Result<()> {
    let (mut src, _) = crate::file::open(dir, name, path)?;
    let mut dst = crate::fs::retry(|| dir.create_new(temp, 0o600)).ctx("create copy of", path)?;
    let copied = std::io::copy(&mut src, &mut dst)
        .ctx("copy", path)
        .and_then(|_| dst.sync_all().ctx("sync copy of", path));
    if copied.is_err() {
        let _ = dir.remove_file(temp);
    }
    copied
}

/// The files a checkpoint syncs, by directory.
type ToSync = BTreeMap<PathBuf, BTreeMap<OsString, Synced>>;

/// What a checkpoint syncs at a name.
#[derive(Debug, Clone)]
enum Synced {
    /// A document (`name`: its name in the journal). `put`: its last record up to the
    /// checkpoint put a file there, whose bytes may be durable in the journal only (a
    /// delete left none; a `direct` write synced its own).
    Document { name: Vec<u8>, put: bool },
    /// Backup `n` of the document `doc` (its file name), which may not exist (a
    /// document keeps as many as it has had versions).
    Backup { doc: OsString, n: usize },
}

/// Whether a checkpoint's open or look failed because what the records name is no
/// longer where they name it, or may not be reached there: it is missing (renamed by
/// hand), a symlink (`ELOOP`: [`Fs::open_dir`] and [`crate::fs::FsDir::open_read`]
/// refuse one) or a file (`ENOTDIR`) stands in its path, or it may not be opened
/// (`EACCES`, `EPERM`). Whoever can do that to the tree must not stop its checkpoints,
/// and so, once the ring is full, every write in it: the checkpoint syncs the file
/// system instead ([`Fallback`]).
fn out_of_reach(e: &std::io::Error) -> bool {
    not_at_its_name(e) || e.kind() == std::io::ErrorKind::PermissionDenied
}

/// Whether opening or looking at what a record names failed because it is not there:
/// it is missing, or a symlink (`ELOOP`) or a file (`ENOTDIR`) stands in its path.
fn not_at_its_name(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    e.kind() == std::io::ErrorKind::NotFound
        || matches!(crate::error::errno(e), Some(Errno::LOOP | Errno::NOTDIR))
}

/// A checkpoint's way past what its records name but it cannot reach there (see
/// [`out_of_reach`]). A document whose last record put a file there may hold bytes that
/// only the journal holds durably, wherever the file is now (a rename by hand keeps it
/// on its file system, where its directory was, or a directory renamed with it): the
/// checkpoint is about to free that record, so it syncs that whole file system
/// (`syncfs`) first, through the nearest directory of the recorded path it can open
/// (the journal's own at worst), once per file system. Its error is the
/// checkpoint's: nothing is freed. A document a record since the checkpoint's end names
/// is that record's business (a delete since, say); a delete's or a `direct` write's
/// document has nothing only the journal holds, nor has a backup missing at its name.
/// A directory out of reach that held backups is synced for (a delete's backup is its
/// document's last version, which a put this checkpoint frees may hold alone).
struct Fallback<'j> {
    journal: &'j Journal,
    fs: &'j dyn Fs,
    /// The checkpoint's end, and the chain value there.
    x: u64,
    chain: u32,
    /// The caller's lock timeout.
    timeout: Duration,
    /// The names the records after `x` carry, once read.
    later: Option<std::collections::BTreeSet<Vec<u8>>>,
    /// The file systems synced, by device.
    synced: Vec<u64>,
    /// The file systems mounted inside the store were synced too (see
    /// [`Fallback::mounts`]).
    mounts_synced: bool,
}

impl Fallback<'_> {
    /// Whether the document `what` names must be synced another way, now that it cannot
    /// be reached at its name.
    fn needs_sync(&mut self, what: &Synced) -> Result<bool> {
        let Synced::Document { name, put: true } = what else {
            return Ok(false);
        };
        if self.later.is_none() {
            let j = self.journal;
            let end = j
                .with_append_lock(Wait::new(self.timeout), || j.page())?
                .end;
            let scanned = j.scan(self.x, self.chain, Some(end), false)?;
            self.later = Some(
                scanned
                    .records
                    .iter()
                    .flat_map(|r| r.entries.iter().map(|e| e.name.clone()))
                    .collect(),
            );
        }
        Ok(!self.later.as_ref().is_some_and(|l| l.contains(name)))
    }

    /// The directory `d` (whose files are `names`) could not be opened (`err`).
    fn directory(
        &mut self,
        fs: &dyn Fs,
        d: &Path,
        names: &BTreeMap<OsString, Synced>,
        err: &std::io::Error,
        report: &mut CheckpointReport,
    ) -> Result<()> {
        // A backup counts here (not at its own name, where one missing is normal): a
        // delete's moved its document's last version aside, whose bytes a put this
        // checkpoint frees may hold alone.
        let mut needed = names.values().any(|w| matches!(w, Synced::Backup { .. }));
        for what in names.values() {
            if needed {
                break;
            }
            needed = self.needs_sync(what)?;
        }
        if !needed {
            return Ok(());
        }
        tracing::warn!(directory = %d.display(), error = %err,
            "a checkpoint cannot reach a directory the journal's records name; \
             syncing its whole file system instead");
        report.unreachable.push(d.to_path_buf());
        let root = self.journal.root();
        let nearest = d
            .ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(root))
            .find_map(|a| crate::fs::retry(|| fs.open_dir(a)).ok().map(|h| (h, a)));
        match nearest {
            Some((h, a)) => self.sync_fs(h.as_ref(), a, report)?,
            None => self.sync_fs(self.journal.meta.as_ref(), self.journal.path(), report)?,
        }
        self.mounts(report)
    }

    /// The document or backup `what` at `f`, in the open directory `dir`, could not be
    /// reached (`why`); `present`: a file may be there all the same (it could not be
    /// opened, or looked at), not nothing or something other than a regular file. A
    /// backup there that could not be opened counts (one missing is normal): it may
    /// hold a version replaced since the last checkpoint, whose bytes a record this
    /// checkpoint frees may hold alone.
    fn document(
        &mut self,
        dir: &dyn crate::fs::FsDir,
        f: &Path,
        (what, present): (&Synced, bool),
        why: &str,
        report: &mut CheckpointReport,
    ) -> Result<()> {
        let needed = match what {
            Synced::Backup { .. } => present,
            Synced::Document { .. } => self.needs_sync(what)?,
        };
        if !needed {
            return Ok(());
        }
        tracing::warn!(file = %f.display(), reason = %why,
            "a checkpoint cannot reach a document or backup where the journal's records name it; \
             syncing its whole file system instead");
        report.unreachable.push(f.to_path_buf());
        self.sync_fs(dir, f.parent().unwrap_or(f), report)?;
        self.mounts(report)
    }

    /// Once per checkpoint, after a fallback: the file systems mounted inside the store
    /// too. A document moved by hand may have left its file system's reach from where
    /// the records name it without leaving its file system: a mount point moved with a
    /// directory renamed above it (`mv p q` carries `p/m`), or a directory swapped for a
    /// symlink above one; or left it (`mv a.json m/` copies onto a mount). Each is synced
    /// through its mount point (`syncfs`, its error the checkpoint's). One that cannot be
    /// opened, or a system that cannot list them, gets `sync(2)`, which reports no
    /// error: logged.
    fn mounts(&mut self, report: &mut CheckpointReport) -> Result<()> {
        if std::mem::replace(&mut self.mounts_synced, true) {
            return Ok(());
        }
        let root = self.journal.root().to_path_buf();
        let mounts = match self.fs.mounts_inside(&root) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(store = %root.display(), error = %e,
                    "cannot list the file systems mounted inside the store; \
                     syncing every file system (sync(2), which reports no error)");
                self.fs.sync_all_file_systems();
                return Ok(());
            }
        };
        for m in mounts {
            match crate::fs::retry(|| self.fs.open_dir(&m)) {
                Ok(h) => self.sync_fs(h.as_ref(), &m, report)?,
                Err(e) => {
                    tracing::warn!(mount = %m.display(), error = %e,
                        "cannot open a mount point inside the store; syncing every file \
                         system (sync(2), which reports no error)");
                    self.fs.sync_all_file_systems();
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// `syncfs` through `dir` (`shown` in errors), unless its file system was synced.
    fn sync_fs(
        &mut self,
        dir: &dyn crate::fs::FsDir,
        shown: &Path,
        report: &mut CheckpointReport,
    ) -> Result<()> {
        let dev = dir.metadata().ok().map(|m| m.dev);
        if dev.is_some_and(|d| self.synced.contains(&d)) {
            return Ok(());
        }
        dir.sync_fs().ctx("sync the file system of", shown)?;
        self.synced.extend(dev);
        report.file_systems_synced += 1;
        Ok(())
    }
}

/// The most backups of one document a checkpoint syncs (a record says how many its writer kept; a damaged or hostile one must not
/// make the checkpoint look for billions).
pub(crate) const MAX_SYNCED_BACKUPS: u32 = 64;

/// Have the device start writing every regular file named in `by_dir` (hints only,
/// each file opened and closed in turn, so no more than one descriptor is held): the
/// checkpoint's fsync of each, one after another, then finds its data already on its
/// way instead of writing it and waiting in turn. On ext4, 1,000 small files written
/// and not yet synced take about a third of the time to fsync after such a pass. What
/// cannot be opened or inspected here is left to the sync pass, which reports it.
fn start_writeback(fs: &dyn crate::fs::Fs, by_dir: &ToSync) {
    for (d, names) in by_dir {
        let Ok(dir) = fs.open_dir(d) else { continue };
        for n in names.keys() {
            if dir.stat(n).is_ok_and(|m| m.is_file())
                && let Ok(file) = dir.open_read(n)
            {
                file.start_writeback();
            }
        }
    }
}

/// See [`super::status`]. A document the caller may not look at (a directory of its path
/// or the file refuses it: `EACCES`, `EPERM`) is listed as unchecked, not an error: who
/// may read part of a tree gets the status of that part, and the names of the rest.
pub(super) fn status(fs: &Arc<dyn Fs>, root: &Path) -> Result<JournalStatus> {
    let meta = super::open_meta_dir(fs.as_ref(), root)?;
    let path = super::shown(root);
    let log = meta
        .open_rw(OsStr::new(LOG), 0o600, false)
        .ctx("open", &path)?;
    let header = handle::read_header(log.as_ref(), &path)?;
    let reader = Journal::reader(root, meta, log, &header)?;
    let scanned = reader.scan(header.tail, header.tail_chain, None, true)?;
    let page = reader.read_page().ok().flatten();
    let in_flight: Vec<u64> = page
        .as_ref()
        .map(|p| p.slots.iter().flatten().map(|s| s.lsn).collect())
        .unwrap_or_default();
    let mut to_replay = Vec::new();
    let mut skipped = Vec::new();
    let mut unchecked = Vec::new();
    for (name, (ri, ei)) in scanned.last_entries() {
        let rec = &scanned.records[ri];
        let e = &rec.entries[ei];
        let Some(rel) = super::check_recorded_name(&name) else {
            continue;
        };
        let full = root.join(rel);
        let seen = match look(fs.as_ref(), root, &full, e) {
            Err(err) if err.kind() == ErrorKind::PermissionDenied => {
                unchecked.push(UncheckedDocument {
                    path: full,
                    version: e.version().cloned(),
                    reason: err.to_string(),
                });
                continue;
            }
            seen => seen?,
        };
        match seen {
            Look::Holds => {}
            Look::Differs => to_replay.push(PendingDocument {
                path: full,
                version: e.version().cloned(),
                in_flight: in_flight.contains(&rec.lsn),
            }),
            Look::Skipped(reason) => skipped.push(SkippedRecord {
                path: full,
                version: e.version().cloned(),
                reason,
            }),
        }
    }
    Ok(JournalStatus {
        root: root.to_path_buf(),
        path,
        format_version: header.version,
        swap: header.flags & format::FLAG_SWAP != 0,
        capacity: header.capacity,
        checkpoint_lsn: header.tail,
        end_lsn: scanned.end,
        records: scanned.records.len(),
        in_flight: in_flight.len(),
        to_replay,
        skipped,
        unchecked,
        damage: scanned.damage,
        // Kept in the shared state, which a boot makes stale: the replay after a reboot
        // reads what the disk holds, and rebuilds what was lost.
        sync_failed: page.as_ref().is_some_and(|p| {
            p.flags & (shm::FLAG_SYNC_FAILED | shm::FLAG_REWRITING) != 0
                && fs.boot_id().is_none_or(|b| b == p.boot)
        }),
    })
}

/// What a replay would do with a document's last record: see [`look`].
enum Look {
    /// Nothing: the document holds it, or it is a `direct` write's, which a replay
    /// leaves as it is.
    Holds,
    /// Rewrite the document from it.
    Differs,
    /// Leave it unapplied, for this reason ([`SkippedRecord`]).
    Skipped(String),
}

/// What a replay would do with `e`, the last record of the document at `path` (its
/// name in the journal, under the journal's `root`), as [`Journal::lock_entries`] and
/// [`Journal::apply`] would find it: a put is skipped where its name resolves to
/// nothing it may write (its directory gone, a file or a symlink loop in its path, a
/// FIFO or a directory at its name, a symlink leading out of the tree), and where it
/// now leads through a symlink to a file that does not hold the record's version (the
/// replay after a reboot applies it there if that file holds an older version of the
/// document, [`Journal::reached_through_link`]; until then it is reported all the
/// same, for a person to look). Otherwise, and for deletes, [`differs`] says. A
/// `direct` write's is never replayed (the file was written durably outside the
/// journal, which has none of its bytes: a replay leaves whatever is there), so it is
/// never to replay, and the file is not looked at (it may be larger than any limit).
fn look(fs: &dyn Fs, root: &Path, path: &Path, e: &EntryMeta) -> Result<Look> {
    let verdict = |d: bool| if d { Look::Differs } else { Look::Holds };
    let p = match &e.action {
        Action::Direct(_) => return Ok(Look::Holds),
        Action::Delete => return differs(fs, path, e).map(verdict),
        Action::Put(p) => p,
    };
    let t = match crate::names::resolve_for_write(fs, path, Some(root)) {
        Ok(t) => t,
        Err(err) if cannot_be_reached(&err) => return Ok(Look::Skipped(err.to_string())),
        Err(err) => return Err(err),
    };
    let dir = match fs.open_dir(&t.dir) {
        Ok(d) => d,
        Err(err) if not_at_its_name(&err) => {
            return Ok(Look::Skipped(format!(
                "its directory {} cannot be reached: {err}",
                t.dir.display()
            )));
        }
        Err(err) => return Err(Error::io("open directory", &t.dir, err)),
    };
    if t.path != path {
        let holds = match crate::file::inspect_within(dir.as_ref(), &t.name, &t.path, p.data_len) {
            Ok(seen) => seen.map(|s| s.version),
            Err(err) if cannot_be_reached(&err) => None,
            Err(err) => return Err(err),
        };
        return Ok(if holds.as_ref() == Some(&p.version) {
            Look::Holds
        } else {
            Look::Skipped(format!(
                "its name now leads through a symlink to {}, which does not hold the record's \
                 version",
                t.path.display()
            ))
        });
    }
    match dir.stat(&t.name) {
        Ok(m) if m.file_type != FileType::File => Ok(Look::Skipped(format!(
            "{} is at its name",
            m.file_type.describe()
        ))),
        _ => differs(fs, path, e).map(verdict),
    }
}

/// Whether the document at `path` is not what its last entry `e` (a put or a delete)
/// left (a missing one is what a delete left), read through its directory's handle,
/// regular files only. Looked at no more than that takes, so that a huge file planted
/// at a document's name (this runs at every store's open and verify) costs no more than
/// the document would: a put left exactly its record's bytes, so a file of another
/// length differs unread, and one of its length is hashed; any regular file where a
/// delete left none differs. Anything statefile never writes at its name (a FIFO, a
/// directory, a symlink: records name the file their writer resolved) differs from a
/// put, and is left alone by a delete (a repair never removes it, nor follows a link
/// to remove what it leads to, which may be another document or outside the tree);
/// a directory of its path that is missing, a symlink or a file (a rename by hand): the
/// document is not at its name, as if missing. Neither is an error: whoever can do that
/// to the tree must not stop every `verify` and `recover` of it (a replay skips such a
/// document).
fn differs(fs: &dyn Fs, path: &Path, e: &EntryMeta) -> Result<bool> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(e.version().is_some());
    };
    let d = match fs.open_dir(dir) {
        Ok(d) => d,
        Err(err) if not_at_its_name(&err) => return Ok(e.version().is_some()),
        Err(err) => return Err(Error::io("open directory", dir, err)),
    };
    let bound = match &e.action {
        Action::Put(p) => p.data_len,
        Action::Delete => 0,
        Action::Direct(_) => return Ok(false),
    };
    match d.stat(name) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(e.version().is_some());
        }
        Ok(m) if m.file_type != FileType::File => return Ok(e.version().is_some()),
        Ok(m) if m.len > bound => return Ok(true),
        _ => {}
    }
    match crate::file::inspect_within(d.as_ref(), name, path, bound) {
        Ok(Some(seen)) => Ok(Some(&seen.version) != e.version()),
        Ok(None) => Ok(true),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(e.version().is_some()),
        Err(err) => Err(err),
    }
}

/// See [`super::enable`].
pub(super) fn enable(
    dir: &Path,
    opts: &Options,
    jopts: super::JournalOptions,
) -> Result<JournalStatus> {
    let fs = &opts.fs;
    let root = fs.canonicalize(dir).ctx("enable a journal in", dir)?;
    let m = fs.metadata(&root).ctx("enable a journal in", &root)?;
    if !m.is_dir() {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!("{} is not a directory", root.display()),
        )
        .with_path(&root));
    }
    if let Some((at, _)) = super::locate(fs.as_ref(), &root)? {
        if at == root {
            if header_closed(fs.as_ref(), &root)? {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "the journal {} is closed: a disable is finishing it, or did not \
                         finish (run `statefile journal disable` to finish it); enable \
                         again once it is gone",
                        super::shown(&root).display()
                    ),
                )
                .with_path(&super::shown(&root)));
            }
            return status(fs, &root);
        }
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "{} is inside the tree of the journal at {}: a document belongs to one journal",
                root.display(),
                at.display()
            ),
        )
        .with_path(&root));
    }
    if let Some(below) = journal_below(fs.as_ref(), &root, 0)? {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "{} holds a journal deeper down, at {}: a document belongs to one journal",
                root.display(),
                below.display()
            ),
        )
        .with_path(&root));
    }
    let capacity = jopts
        .capacity
        .clamp(format::MIN_CAPACITY, format::MAX_CAPACITY)
        .div_ceil(4096)
        * 4096;
    let root_dir = fs.open_dir(&root).ctx("open", &root)?;
    match root_dir.create_dir(OsStr::new(META_DIR)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create", &root.join(META_DIR), e)),
    }
    root_dir.sync().ctx("sync directory", &root)?;
    let meta = super::open_meta_dir(fs.as_ref(), &root)?;
    let mode = super::lockable(jopts.mode);
    // A `journal-boot` left by an earlier journal in this boot must not vouch for this one.
    super::boot::withdraw(meta.as_ref(), &root)?;
    for name in [SHM, USERS, CKPT] {
        let p = root.join(META_DIR).join(name);
        match meta.create_new(OsStr::new(name), 0o600) {
            Ok(mut f) => {
                f.set_mode(mode).ctx("set mode of", &p)?;
                f.sync_all().ctx("sync", &p)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", &p, e)),
        }
    }
    let temp = format!(".{LOG}.sf-{}.tmp", random_suffix());
    let temp_path = root.join(META_DIR).join(&temp);
    let made = (|| {
        let mut f = meta
            .create_new(OsStr::new(&temp), 0o600)
            .ctx("create", &temp_path)?;
        f.set_mode(mode).ctx("set mode of", &temp_path)?;
        let mut salt = [0u8; 8];
        getrandom::fill(&mut salt)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot draw a random salt: {e}")))?;
        let salt = u64::from_le_bytes(salt);
        let h = Header {
            version: format::FORMAT_VERSION,
            flags: if jopts.swap { format::FLAG_SWAP } else { 0 },
            seq: 1,
            salt,
            capacity,
            tail: 0,
            tail_chain: Header::initial_chain(salt),
            checkpoint_age: u32::try_from(jopts.checkpoint_age.as_secs())
                .unwrap_or(u32::MAX)
                .max(1),
            checkpoint_unix: handle::now_unix(),
        };
        let mut head = vec![0u8; format::RING_START as usize];
        head[..format::HEADER_LEN].copy_from_slice(&h.encode());
        f.write_all(&head).ctx("write", &temp_path)?;
        // The ring's blocks are written now, so that a flush later carries data only.
        let zeros = vec![0u8; 1 << 20];
        let mut left = capacity;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n]).ctx("write", &temp_path)?;
            left -= n as u64;
        }
        f.sync_all().ctx("sync", &temp_path)?;
        drop(f);
        // The side files' names durable before the journal's: a journal file found
        // after a power loss has them (a writer does not make them: see `Journal::open`).
        meta.sync().ctx("sync directory", &root.join(META_DIR))?;
        match meta.hard_link(OsStr::new(&temp), OsStr::new(LOG)) {
            Ok(()) => Ok(()),
            // Enabled by someone else meanwhile: theirs stands.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) if link_refused(&e) => {
                publish_unlinked(meta.as_ref(), &temp, &root, opts.lock_timeout)
            }
            Err(e) => Err(Error::io("create", &super::shown(&root), e)),
        }
    })();
    let _ = meta.remove_file(OsStr::new(&temp));
    made?;
    meta.sync().ctx("sync directory", &root.join(META_DIR))?;
    tracing::info!(journal = %super::shown(&root).display(), capacity, "journal mode enabled");
    status(fs, &root)
}

/// [`enable`]'s last step where the file system will not make a hard link (FAT and
/// exFAT, some FUSE and network file systems: [`link_refused`]): the new journal `temp`
/// renamed to its name, unless a journal is there already (another enable's, which
/// stands). The check and the rename are under the exclusive `flock` of the shared
/// state file, which every other enable takes for the same step here (a file system
/// that refuses one link refuses them all), so that no journal in use is replaced.
/// That lock is waited for at most `timeout`: a timeout publishes nothing (the caller
/// removes `temp`).
fn publish_unlinked(
    meta: &dyn crate::fs::FsDir,
    temp: &str,
    root: &Path,
    timeout: Duration,
) -> Result<()> {
    let shm_path = root.join(META_DIR).join(SHM);
    let shm: Arc<dyn crate::fs::FsRwFile> = meta
        .open_rw(OsStr::new(SHM), 0o600, false)
        .ctx("open", &shm_path)?
        .into();
    handle::flock(
        &shm,
        &handle::Helpers::default(),
        crate::fs::LockMode::Exclusive,
        Wait::new(timeout),
        "append",
        &shm_path,
    )?;
    let published = match meta.stat(OsStr::new(LOG)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => meta
            .rename(OsStr::new(temp), OsStr::new(LOG))
            .ctx("create", &super::shown(root)),
        Err(e) => Err(Error::io("create", &super::shown(root), e)),
    };
    let _ = shm.unlock();
    published
}

/// A `.statefile/journal` strictly below `dir`, not following symlinked directories.
fn journal_below(fs: &dyn Fs, dir: &Path, depth: usize) -> Result<Option<PathBuf>> {
    if depth > 64 {
        return Ok(None);
    }
    let entries = match fs.open_dir(dir).and_then(|d| d.read_dir()) {
        Ok(e) => e,
        Err(e) => return Err(Error::io("list directory", dir, e)),
    };
    for e in entries {
        if e.file_type != crate::fs::FileType::Dir || e.name == META_DIR {
            continue;
        }
        let sub = dir.join(&e.name);
        if fs.symlink_metadata(&sub.join(META_DIR).join(LOG)).is_ok() {
            return Ok(Some(sub));
        }
        if let Some(found) = journal_below(fs, &sub, depth + 1)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Whether the journal at `root` says it was closed by `disable` (its files not yet
/// removed). `false` if there is none.
fn header_closed(fs: &dyn crate::fs::Fs, root: &Path) -> Result<bool> {
    let meta = match super::open_meta_dir(fs, root) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let path = root.join(META_DIR).join(LOG);
    let log = match crate::fs::retry(|| meta.open_rw(OsStr::new(LOG), 0o600, false)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    super::check_regular(&path, &log.metadata().ctx("inspect", &path)?)?;
    Ok(handle::read_header(log.as_ref(), &path)?.flags & format::FLAG_CLOSED != 0)
}

/// Remove the files of a journal at `root` that `disable` closed (its header says so)
/// but did not remove: a disable that failed after closing it (removing its files, or
/// marking the shared state). Such a journal is over (nothing is replayed from it, and
/// its disable had checkpointed everything), but it stood in the way of `disable` ("no
/// journal") and of `enable` (which finds it and enables nothing) for good. Only while
/// no process has it open (its users lock, taken exclusive here, as a recovery does):
/// a process using it, or the disable still finishing it, keeps it. `false` if there is
/// no such journal. The header is read through the descriptor locked, and the files
/// are removed only if they are still the ones looked at.
fn remove_closed_leftover(fs: &dyn crate::fs::Fs, root: &Path) -> Result<bool> {
    let meta = match super::open_meta_dir(fs, root) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let dir = root.join(META_DIR);
    let open = |name: &str| match crate::fs::retry(|| meta.open_rw(OsStr::new(name), 0o600, false))
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("open", &dir.join(name), e)),
    };
    let Some(log) = open(LOG)? else {
        return Ok(false);
    };
    let log_path = dir.join(LOG);
    let m = log.metadata().ctx("inspect", &log_path)?;
    super::check_regular(&log_path, &m)?;
    if handle::read_header(log.as_ref(), &log_path)?.flags & format::FLAG_CLOSED == 0 {
        return Ok(false);
    }
    if let Some(users) = open(USERS)? {
        let users_path = dir.join(USERS);
        if !crate::fs::retry(|| users.try_lock(crate::fs::LockMode::Exclusive))
            .ctx("lock", &users_path)?
        {
            return Err(Error::new(
                ErrorKind::LockTimeout,
                format!(
                    "the journal {} is closed, but a process still has it open (or its \
                     disable is still finishing): try again once it has let go",
                    log_path.display()
                ),
            )
            .with_path(&log_path));
        }
        // Held until the files are gone (dropped at the end).
        let still = meta
            .stat(OsStr::new(LOG))
            .is_ok_and(|now| (now.dev, now.ino) == (m.dev, m.ino));
        if !still {
            return Ok(false);
        }
        remove_journal_files(fs, root)?;
        drop(users);
        return Ok(true);
    }
    remove_journal_files(fs, root)?;
    Ok(true)
}

/// Remove the files of a journal that is closed or disabled, then `.statefile` if
/// empty, and sync the tree's root so that the removal is durable.
fn remove_journal_files(fs: &dyn crate::fs::Fs, root: &Path) -> Result<()> {
    let meta = super::open_meta_dir(fs, root)?;
    // The journal file last: until it is gone, `enable` finds it (closed) and makes no
    // new journal, which would otherwise take up side files about to be removed here
    // (two shared states over one journal).
    for name in [super::boot::NEW, BOOT, CKPT, SHM, USERS, LOG] {
        match crate::fs::retry(|| meta.remove_file(OsStr::new(name))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &root.join(META_DIR).join(name), e)),
        }
    }
    drop(meta);
    let root_dir = fs.open_dir(root).ctx("open", root)?;
    let _ = root_dir.remove_dir(OsStr::new(META_DIR));
    root_dir.sync().ctx("sync directory", root)
}

/// See [`super::disable`].
pub(super) fn disable(dir: &Path, opts: &Options) -> Result<CheckpointReport> {
    let fs = &opts.fs;
    let root = fs.canonicalize(dir).ctx("disable the journal in", dir)?;
    let Some(j) = super::open_at(&root, opts)? else {
        // A disable that failed after closing the journal: finish it.
        if remove_closed_leftover(fs.as_ref(), &root)? {
            tracing::info!(journal = %super::shown(&root).display(),
                "removed a journal closed by a disable that did not finish");
            return Ok(CheckpointReport::default());
        }
        return Err(super::no_journal(&root));
    };
    let path = j.path();
    let timeout = opts.lock_timeout;
    // No new commits from here on; writers that find this wait for the end, then write
    // without the journal. A timeout here changes nothing.
    j.with_append_lock(Wait::new(timeout), || {
        let mut p = j.page()?;
        p.flags |= shm::FLAG_DISABLING;
        j.write_page(&p, Some(0))
    })?;
    // Whether the header is as it was (not closed) if this fails: then the disable is
    // given up and the journal is in use again.
    let mut header_known = true;
    let done = (|| {
        let report = j.checkpoint(opts)?;
        let header = handle::read_header(j.log.as_ref(), path)?;
        let page = j.page()?;
        let at = j.next_header_copy()?;
        let closed = j.write_header_copy(
            &header,
            (page.end, page.chain, header.flags | format::FLAG_CLOSED),
            at,
            timeout,
        );
        if let Err(e) = closed {
            // The closed header may be on the disk all the same, or in the cache, read
            // by every later look (a failed sync leaves either): a journal in use with
            // it would be taken for closed after a power loss, and its records never
            // replayed. A newer header that is not closed, synced, undoes it; failing
            // that, the disable stays in progress (writers wait for it, and `disable`
            // again finishes it: everything was checkpointed, and no commit came since).
            // It goes over the closed one: the other copy is the newest durable header
            // (the checkpoint's), which a torn write must not take.
            header_known = j
                .write_header_copy(
                    &header,
                    (page.end, page.chain, header.flags & !format::FLAG_CLOSED),
                    at,
                    timeout,
                )
                .is_ok();
            return Err(e);
        }
        Ok::<_, Error>(report)
    })();
    let report = match done {
        Ok(r) => r,
        Err(e) if header_known => {
            // Given up: writers may go on. Waited for as long as anything else (the
            // append lock's holder stops every writer meanwhile anyway); not had in
            // time, the journal stays "being disabled" (writers wait for it, then fail
            // with `LockTimeout`), and the error says to finish the disable.
            let reverted = j.with_append_lock(Wait::new(timeout), || {
                let mut p = j.page()?;
                p.flags &= !shm::FLAG_DISABLING;
                j.write_page(&p, Some(0))
            });
            return Err(match reverted {
                Ok(()) => e,
                Err(r) => Error::new(
                    e.kind(),
                    format!(
                        "{}; and the journal {} could not be marked in use again ({}): it \
                         takes no commits until `statefile journal disable` is run again \
                         to finish the disable",
                        e.message(),
                        path.display(),
                        r.message()
                    ),
                )
                .with_path(path)
                .with_source(e),
            });
        }
        Err(e) => {
            // The revert's own failed sync may have poisoned the journal: then `disable`
            // again refuses until a recovery clears it, and the user is told so now.
            let poisoned = j
                .read_page()
                .ok()
                .flatten()
                .is_some_and(|p| p.flags & shm::FLAG_POISONED != 0);
            let next = if poisoned {
                "a failed sync poisoned it: run `statefile recover`, then \
                 `statefile journal disable` again to finish the disable"
            } else {
                "run `statefile journal disable` again to finish the disable"
            };
            return Err(Error::new(
                e.kind(),
                format!(
                    "{}: the journal {} may be closed on disk, so it takes no more commits; \
                     {next}",
                    e.message(),
                    path.display()
                ),
            )
            .with_path(path)
            .with_source(e));
        }
    };
    // The header says closed already (writers that wait for the disable read it), so
    // a timeout here leaves a closed journal whose files `disable` again removes.
    j.with_append_lock(Wait::new(timeout), || {
        let mut p = j.page()?;
        p.flags = (p.flags & !shm::FLAG_DISABLING) | shm::FLAG_DISABLED;
        j.write_page(&p, Some(0))
    })
    .map_err(|e| {
        Error::new(
            e.kind(),
            format!(
                "{}: the journal {} is closed (nothing more is written to it) but its files \
                 are left; run `statefile journal disable` again to remove them",
                e.message(),
                path.display()
            ),
        )
        .with_path(path)
        .with_source(e)
    })?;
    j.set_gone();
    remove_journal_files(fs.as_ref(), &root)?;
    tracing::info!(journal = %path.display(), "journal mode disabled");
    Ok(report)
}

/// Wait until a journal being disabled is disabled (`true`: writers go on without it),
/// or the disable was given up (`false`: its checkpoint failed, and the journal is in
/// use again, so a write must still be recorded in it, or the replay after a power loss
/// would bring back the document's last record over it).
/// Disabled is what the shared state says, or the journal's header: a `disable` whose
/// checkpoint closed the journal but which failed to mark the shared state (a full
/// disk, an I/O error) left it saying "being disabled" for good, and every writer of the
/// tree, in every process, waited for it until its lock timeout.
pub(crate) fn wait_disabled(j: &Journal, deadline: Instant) -> Result<bool> {
    let mut backoff = std::time::Duration::from_micros(200);
    loop {
        let page = j.page()?;
        if page.flags & shm::FLAG_DISABLED != 0 {
            return Ok(true);
        }
        if page.flags & shm::FLAG_DISABLING == 0 {
            return Ok(false);
        }
        if handle::read_header(j.log.as_ref(), j.path())
            .is_ok_and(|h| h.flags & format::FLAG_CLOSED != 0)
        {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::LockTimeout,
                format!(
                    "the journal {} is being disabled and its checkpoint took too long",
                    j.path().display()
                ),
            ));
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(std::time::Duration::from_millis(10));
    }
}
