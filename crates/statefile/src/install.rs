//! Putting a file the caller wrote in place: the last steps of the replace protocol
//! (owner and mode, sync, rename or link, directory sync) for a caller that creates
//! and writes its own temp file, such as the Python package's drop-in replacement for
//! the `atomicwrites` package.
//!
//! Unlike [`write_atomic`](crate::write_atomic) these keep no backup, and outside a
//! journal's tree take no lock, so nothing is ever left beside the target. In a
//! journal's tree they take the document's lock (its lock file stays) and record the
//! replace in the journal, so that no replay brings an older version back. The caller's temp file is its own: it
//! does not use statefile's temp name pattern, so recovery never mistakes it for a dead
//! writer's (nor deletes it after a crash).

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::{Current, Locked, mark_direct, sync_backups, take_permissions};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::fs::{FileType, FsDir};
use crate::names::{self, Target};
use crate::options::{Durability, Options};
use crate::version::Version;

/// Replace `dst` with the complete file `src`, atomically: readers of `dst` see the
/// old file or `src`'s content, never a mix, and a crash leaves one of them.
///
/// `src` must be a regular file, already written, in the directory `dst` resolves to
/// (a symlink at `dst` is followed: the file it points to is replaced, the link kept).
/// In order, all through one handle on that directory: `src` takes `dst`'s owner
/// (where permitted) and mode, or 0644 less the umask when `dst` is new (unless
/// [`Options::mode`], [`Options::create_mode`] or [`Options::owner`] say otherwise); with
/// [`Durability::Full`] `src` is fsynced (`fdatasync` with [`Durability::Data`]);
/// `rename(src, dst)`; with [`Durability::Full`] the directory is fsynced.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let tmp = dir.path().join("tmp-config");
/// std::fs::write(&tmp, "replicas = 3\n")?;
/// statefile::replace_file(&tmp, dir.path().join("config.toml"), &statefile::Options::new())?;
/// assert_eq!(std::fs::read_to_string(dir.path().join("config.toml"))?, "replicas = 3\n");
/// assert!(!tmp.exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`ErrorKind::NotFound`] if `src` does not exist or `dst` is a dangling symlink;
/// [`ErrorKind::InvalidName`] if `src` is not a regular file in `dst`'s directory, or
/// `dst` is not a regular file; [`ErrorKind::PermissionDenied`] if this process may not
/// write `dst`; the I/O kinds with `dst` untouched if anything fails before the rename
/// (`src` is left for the caller to remove); [`ErrorKind::Durability`] if the directory
/// sync failed after the rename.
pub fn replace_file(src: impl AsRef<Path>, dst: impl AsRef<Path>, opts: &Options) -> Result<()> {
    install(src.as_ref(), dst.as_ref(), opts, Mode::Replace)
}

/// As [`replace_file`], but only if `dst` does not exist: `src` is linked at `dst`
/// (`link(2)`, which fails rather than replace) and then unlinked, so for a moment
/// both names exist.
///
/// # Errors
/// [`ErrorKind::Conflict`] (with the OS error `EEXIST` as its source) if `dst` exists,
/// and nothing is changed; otherwise as [`replace_file`].
pub fn move_file(src: impl AsRef<Path>, dst: impl AsRef<Path>, opts: &Options) -> Result<()> {
    install(src.as_ref(), dst.as_ref(), opts, Mode::NoClobber)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Replace,
    NoClobber,
}

fn install(src: &Path, dst: &Path, opts: &Options, mode: Mode) -> Result<()> {
    let fs = opts.fs.as_ref();
    let t = names::resolve_for_write(fs, dst, None)?;
    if crate::journal::locate(fs, &t.dir)?.is_none() {
        let dir = fs.open_dir(&t.dir).ctx("open directory", &t.dir)?;
        return install_in(dir.as_ref(), &t, src, opts, (mode, false)).map(drop);
    }
    // In a journal's tree, the journal's last record of the document would bring an
    // older version back at the next replay (a recovery, or a power loss): the file is
    // put in place under the document's lock, as a writer's would be, then a `direct`
    // record says the file is the truth (as for a document too large for the journal).
    // This leaves the document's lock file beside it. The replay takes the backups a
    // `direct` record leaves as durable: they are synced first.
    let w = Locked::open(dst, None, opts)?;
    // Its version, for the record (none for a file over the size limit, not hashed).
    let previous = Current::probe(&w, true, opts.max_document_bytes)?;
    if let Some(b) = &w.journal {
        sync_backups(&w, b, opts.durability, opts.max_document_bytes)?;
    }
    let journaled = w.journal.is_some();
    let version = install_in(w.dir.as_ref(), &w.target, src, opts, (mode, journaled))?;
    match &w.journal {
        Some(b) => mark_direct(&w, b, (&version, previous.version()), 0, opts.durability),
        None => Ok(()),
    }
}

/// The steps of [`install`] through `dir`, the handle of `t`'s directory (`journaled`:
/// in a journal's tree, where the directory is synced under `Durability::Data` too).
/// Returns the version of what was put in place.
fn install_in(
    dir: &dyn FsDir,
    t: &Target,
    src: &Path,
    opts: &Options,
    (mode, journaled): (Mode, bool),
) -> Result<Version> {
    let fs = opts.fs.as_ref();
    let src_name = source_in(fs, src, t)?;
    let mut file = crate::fs::retry(|| dir.open_read(src_name)).ctx("open", src)?;
    if file.metadata().ctx("inspect", src)?.file_type != FileType::File {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!("cannot install {}: it is not a regular file", src.display()),
        )
        .with_path(src));
    }
    let old = match dir.stat(&t.name) {
        Ok(m) if m.file_type == FileType::File => Some(m),
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::InvalidName,
                format!(
                    "cannot replace {}: it is not a regular file",
                    t.path.display()
                ),
            )
            .with_path(&t.path));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("inspect", &t.path, e)),
    };
    if old.is_some() {
        if mode == Mode::NoClobber {
            return Err(exists(t, io::Error::from(io::ErrorKind::AlreadyExists)));
        }
        dir.check_write_access(&t.name).ctx("replace", &t.path)?;
    }
    let (version, _) = crate::version::hash_reader(&mut file).ctx("read", src)?;
    take_permissions(file.as_mut(), src, old.as_ref(), opts.perms, &|| fs.umask())?;
    let synced = match opts.durability {
        Durability::Full => file.sync_all(),
        Durability::Data => file.sync_data(),
        Durability::None => Ok(()),
    };
    // A failed sync is final (never retried); the target is untouched.
    synced.ctx("sync", src)?;
    drop(file);

    match mode {
        Mode::Replace => dir
            .rename(src_name, &t.name)
            .ctx(&format!("rename {} over", src.display()), &t.path)?,
        Mode::NoClobber => {
            match dir.hard_link(src_name, &t.name) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(exists(t, e)),
                Err(e) => return Err(Error::io(&format!("link {} as", src.display()), &t.path, e)),
            }
            dir.remove_file(src_name).ctx("remove", src)?;
        }
    }
    // In journal mode the `direct` record that follows says the file and its directory
    // are synced, and a replay leaves the file as it is from then on: under `Data` too
    // (see `atomic::finish_direct`).
    if opts.durability == Durability::Full || journaled && opts.durability == Durability::Data {
        sync_dir(dir, t)?;
    }
    Ok(version)
}

/// `src`'s file name, if `src` is in the directory `t` resolved to: a rename stays
/// atomic (one file system) and goes through the one directory handle.
fn source_in<'a>(fs: &dyn crate::fs::Fs, src: &'a Path, t: &Target) -> Result<&'a OsStr> {
    let name = src.file_name().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidName,
            format!("{} does not name a file", src.display()),
        )
        .with_path(src)
    })?;
    let parent = match src.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = fs.canonicalize(&parent).ctx("resolve directory", &parent)?;
    if dir != t.dir {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "cannot put {} in place of {}: it must be in the same directory ({})",
                src.display(),
                t.path.display(),
                t.dir.display()
            ),
        )
        .with_path(src));
    }
    Ok(name)
}

fn exists(t: &Target, e: io::Error) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!(
            "cannot move a file to {}: it already exists",
            t.path.display()
        ),
    )
    .with_path(&t.path)
    .with_source(e)
}

fn sync_dir(dir: &dyn FsDir, t: &Target) -> Result<()> {
    dir.sync().map_err(|e| {
        Error::new(
            ErrorKind::Durability,
            format!(
                "{} is in place, but syncing its directory {} failed: it may not survive a power loss",
                t.path.display(),
                t.dir.display()
            ),
        )
        .with_path(&t.path)
        .with_source(e)
    })
}
