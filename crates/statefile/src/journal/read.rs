//! Reads in a journal tree. After a power loss a document written since the last
//! checkpoint can be older than its last record, or empty, until the journal is
//! replayed; replay happens when a process opens the journal and finds no other
//! process using it. So before a read, the process makes sure it has opened the
//! journal governing the document once (which replays it if need be), and that no
//! dead writer's commit naming the document is left unapplied.
//!
//! Finding the journal walks up the directories (one `stat` per level); a read must not
//! pay that every time, so what was found is remembered per directory and file system:
//! an open journal until it is disabled (its shared state says so, and every read in
//! the tree reads that state), "no journal" for [`RECHECK`] (a journal enabled
//! meanwhile by another process has nothing a reboot could have lost for this process:
//! a power loss ends this process too, and the next one looks afresh).

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::format::{self, Header};
use super::handle::Journal;
use super::replay::Reading;
use super::shm::{self, Page};
use super::{BOOT, LOG, SHM, boot};
use crate::error::{Error, ErrorKind, Result};
use crate::fs::Fs;
use crate::names::Target;
use crate::options::Options;

/// How long "no journal governs this directory" is trusted before the walk is made
/// again.
const RECHECK: Duration = Duration::from_secs(1);
/// Directories remembered per file system; when full, the memory starts over (each
/// forgotten directory costs one walk at its next read).
const MAX_DIRS: usize = 4096;

/// What governs the documents of one directory, as this process found it.
#[derive(Debug)]
enum Found {
    /// No journal, as of then.
    None(Instant),
    /// This journal, open in this process. Held by the registry of open journals, which
    /// decides how long it stays open (as long as its file system), not by this memory.
    Open(Weak<Journal>),
    /// A journal this process may not open to replay, checked (reading it) to have
    /// been recovered since the machine booted: reads need nothing more from it in
    /// this process's life (a power loss would end this process too).
    Recovered,
}

struct PerFs {
    fs: Weak<dyn Fs>,
    dirs: HashMap<PathBuf, Found>,
}

type Cache = Mutex<HashMap<usize, PerFs>>;

/// This process's (see [`crate::process`]): a forked child must not reach its parent's
/// journal handles through it.
fn cache() -> &'static Cache {
    static CACHE: crate::process::PerProcess<Cache> = crate::process::PerProcess::new();
    CACHE.get()
}

/// Before reading the resolved document `target`: if a journal governs it, make sure
/// this process has opened that journal (which replays it after a crash if no other
/// process uses it) and apply any dead writer's commit naming the document.
///
/// # Errors
/// [`ErrorKind::PermissionDenied`] if a journal governs the document that this process
/// may not open, and cannot be shown (by reading it) to have been recovered since the
/// machine booted; what opening or replaying the journal returns.
pub(crate) fn before_read(target: &Target, opts: &Options) -> Result<()> {
    // A journal found disabled is looked for again, once: a tree whose journal is
    // disabled and enabled again in a loop cannot hold a read back for long.
    for _ in 0..2 {
        let Governs::Open(j) = governing(&target.dir, &target.path, opts)? else {
            return Ok(());
        };
        let name = super::relative_name(j.root(), target)?;
        if j.settle_for_read(opts, Reading::Doc(&name))? {
            return Ok(());
        }
        forget(opts, &target.dir);
    }
    Ok(())
}

/// Before listing the documents of the directory `dir` (canonical): as
/// [`before_read`], for the journal governing it and every document in it or below it:
/// a document created since the last checkpoint may be missing until the journal is
/// replayed, and one a dead writer's commit creates (or deletes) until that commit is
/// applied. A commit that cannot be applied is logged, not an error (see
/// [`Journal::settle_for_read`]).
///
/// # Errors
/// As [`before_read`].
pub(crate) fn before_listing(dir: &Path, opts: &Options) -> Result<()> {
    for _ in 0..2 {
        let Governs::Open(j) = governing(dir, dir, opts)? else {
            return Ok(());
        };
        // The directory's name in the journal: the journal governs it, so it is below
        // the journal's directory; were it not, every commit is looked at.
        let under = dir.strip_prefix(j.root()).unwrap_or(Path::new(""));
        if j.settle_for_read(opts, Reading::Listing(under.as_os_str().as_bytes()))? {
            return Ok(());
        }
        forget(opts, dir);
    }
    Ok(())
}

/// What governs the documents of `dir`, from memory or found now (a journal as a
/// strong handle); `shown` names what is being read in errors.
fn governing(dir: &Path, shown: &Path, opts: &Options) -> Result<Governs> {
    match cached(opts, dir) {
        Some(f) => Ok(f),
        None => find(dir, shown, opts),
    }
}

/// [`Found`], with the journal held for the read.
enum Governs {
    None,
    Open(Arc<Journal>),
}

fn fs_key(fs: &Arc<dyn Fs>) -> usize {
    Arc::as_ptr(fs) as *const () as usize
}

fn cached(opts: &Options, dir: &Path) -> Option<Governs> {
    let cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
    let per = cache.get(&fs_key(&opts.fs))?;
    if per.fs.strong_count() == 0 {
        // Another file system that lived at the same address.
        return None;
    }
    match per.dirs.get(dir)? {
        Found::None(at) => (at.elapsed() < RECHECK).then_some(Governs::None),
        Found::Open(j) => j.upgrade().filter(|j| !j.is_gone()).map(Governs::Open),
        Found::Recovered => Some(Governs::None),
    }
}

fn remember(opts: &Options, dir: &Path, found: Found) {
    let key = fs_key(&opts.fs);
    let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
    cache.retain(|_, per| per.fs.strong_count() > 0);
    let per = cache.entry(key).or_insert_with(|| PerFs {
        fs: Arc::downgrade(&opts.fs),
        dirs: HashMap::new(),
    });
    if per.dirs.len() >= MAX_DIRS && !per.dirs.contains_key(dir) {
        per.dirs.clear();
    }
    per.dirs.insert(dir.to_path_buf(), found);
}

fn forget(opts: &Options, dir: &Path) {
    let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(per) = cache.get_mut(&fs_key(&opts.fs)) {
        per.dirs.remove(dir);
    }
}

/// Walk up from `dir` and open the journal found, if any.
fn find(dir: &Path, shown: &Path, opts: &Options) -> Result<Governs> {
    let fs = &opts.fs;
    let located = match super::locate(fs.as_ref(), dir) {
        // `.statefile/journal` is something else than a file: not a journal, nothing
        // to replay (writers refuse the tree; a read sees the files as they are).
        Err(e) if e.kind() == ErrorKind::InvalidName => None,
        r => r?,
    };
    let (found, governs) = match located {
        None => (Found::None(Instant::now()), Governs::None),
        Some((root, id)) => match super::get_or_open(&root, id, opts) {
            Ok(Some(j)) => (Found::Open(Arc::downgrade(&j)), Governs::Open(j)),
            Ok(None) => (Found::None(Instant::now()), Governs::None),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                read_only(shown, &root, fs.as_ref(), e)?;
                (Found::Recovered, Governs::None)
            }
            Err(e) => return Err(e),
        },
    };
    remember(opts, dir, found);
    Ok(governs)
}

/// This process may not open the journal at `root` to replay it (`denied`). Reading is
/// still safe if the journal's shared state shows a recovery made since the machine
/// booted (every process that opens the journal first after a boot replays it before
/// it rebuilds that state), or if the journal is closed. Otherwise (or if even reading
/// the journal is denied): [`ErrorKind::PermissionDenied`], saying why.
fn read_only(shown: &Path, root: &Path, fs: &dyn Fs, denied: Error) -> Result<()> {
    let why = match recovered_this_boot(root, fs) {
        Ok(true) => return Ok(()),
        Ok(false) => "nothing shows the journal was replayed since the machine booted".to_string(),
        // Nothing this user may read shows it: refused as well.
        Err(e) => format!(
            "nothing it may read shows whether the journal was replayed since the machine \
             booted ({})",
            e.message(),
        ),
    };
    Err(Error::new(
        ErrorKind::PermissionDenied,
        format!(
            "cannot read {}: it is in the journal tree {}, whose journal this process may not \
             open ({}), and {why}: after a power loss the file may be older than its last \
             acknowledged write. Let a process that may write there open the store first \
             (`statefile recover {}`, run at boot, or any write), or read the file itself, as \
             it is on disk",
            shown.display(),
            root.display(),
            denied.message(),
            root.display(),
        ),
    )
    .with_path(shown)
    .with_source(denied))
}

/// Whether the journal at `root`, read without writing, is closed, or has a shared
/// state built since this boot (not marked damaged) for this journal file. Where this
/// process may not read the journal (it holds copies of the documents) the shared state
/// alone decides, as only a process that opened the journal, replaying it first, writes
/// this boot's identity into it; where it may not read the shared state either (as
/// private as the journal), `journal-boot` does, written only once the journal was
/// replayed in this boot and removed when that replay found it damaged.
fn recovered_this_boot(root: &Path, fs: &dyn Fs) -> Result<bool> {
    let Some(boot) = fs.boot_id() else {
        return Ok(false);
    };
    let meta = super::open_meta_dir(fs, root)?;
    let log_path = super::shown(root);
    let mut head = Vec::new();
    let header = match read_prefix(
        meta.as_ref(),
        LOG,
        &log_path,
        format::HEADER_COPIES[1] as usize + format::HEADER_LEN,
        &mut head,
    ) {
        Ok(()) => {
            let copy = |at: u64| head.get(at as usize..).and_then(Header::decode);
            let Some((_, header)) = Header::newest(
                copy(format::HEADER_COPIES[0]),
                copy(format::HEADER_COPIES[1]),
            ) else {
                return Ok(false);
            };
            if header.flags & format::FLAG_CLOSED != 0 {
                return Ok(true);
            }
            Some(header)
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => None,
        Err(e) => return Err(e),
    };
    let mut page = Vec::new();
    let shm_path = root.join(super::META_DIR).join(SHM);
    match read_prefix(meta.as_ref(), SHM, &shm_path, shm::PAGE, &mut page) {
        Ok(()) => {
            return Ok(Page::decode(&page).is_some_and(|p| {
                header.is_none_or(|h| p.salt == h.salt)
                    && p.boot == boot
                    && p.flags & shm::FLAG_DAMAGED == 0
            }));
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {}
        Err(e) => return Err(e),
    }
    // The shared state is as private as the journal (whoever may read it may lock it):
    // `journal-boot`, readable by everyone, tells instead.
    let mut marker = Vec::new();
    let boot_path = root.join(super::META_DIR).join(BOOT);
    match read_prefix(meta.as_ref(), BOOT, &boot_path, boot::LEN, &mut marker) {
        Ok(()) => Ok(boot::Marker::decode(&marker)
            .is_some_and(|m| m.boot == boot && header.is_none_or(|h| m.salt == h.salt))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The first `len` bytes (or fewer, if the file is shorter) of the regular file `name`.
pub(super) fn read_prefix(
    meta: &dyn crate::fs::FsDir,
    name: &str,
    path: &Path,
    len: usize,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let f = crate::fs::retry(|| meta.open_read(std::ffi::OsStr::new(name)))
        .map_err(|e| Error::io("open", path, e))?;
    let m = f.metadata().map_err(|e| Error::io("inspect", path, e))?;
    super::check_regular(path, &m)?;
    f.take(len as u64)
        .read_to_end(buf)
        .map_err(|e: io::Error| Error::io("read", path, e))?;
    Ok(())
}
