//! Reading a document or one of its sidecars: always through the handle of the
//! directory that holds it, by name, without following a symlink at that name and
//! without blocking on a FIFO, and only if it is a regular file. A symlink, FIFO,
//! socket, device or directory where a file should be is reported
//! ([`ErrorKind::InvalidName`], naming what it is), never read.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::path::Path;

use crate::error::{Context, Error, ErrorKind, Result, errno};
use crate::fs::{FileType, Fs, FsDir, FsFile, Metadata, reserve_for, retry};
use crate::json;
use crate::version::{HashingReader, Version};

/// What a look at a file's bytes found: their version, and whether they are JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub version: Version,
    pub parses: bool,
}

/// The error for a file at `path` that is `what` instead of a regular file.
pub(crate) fn not_regular(path: &Path, what: FileType) -> Error {
    let hint = match what {
        FileType::Dir => "",
        _ => "; statefile reads and replaces regular files only, and never follows or reads it",
    };
    Error::new(
        ErrorKind::InvalidName,
        format!(
            "{} is {}, not a regular file{hint}",
            path.display(),
            what.describe()
        ),
    )
    .with_path(path)
}

/// Open the (canonical) directory `dir`. A symlink met on the way (one swapped in
/// since the path was resolved) is [`ErrorKind::InvalidName`].
pub(crate) fn open_dir(fs: &dyn Fs, dir: &Path) -> Result<Box<dyn FsDir>> {
    fs.open_dir(dir).map_err(|e| {
        if errno(&e) == Some(rustix::io::Errno::LOOP) {
            Error::new(
                ErrorKind::InvalidName,
                format!(
                    "{}: a part of the path is a symlink where a directory was resolved",
                    dir.display()
                ),
            )
            .with_path(dir)
            .with_source(e)
        } else {
            Error::io("open directory", dir, e)
        }
    })
}

/// Open `name` in `dir` for reading and check that it is a regular file (`path` names
/// it in errors).
pub(crate) fn open(
    dir: &dyn FsDir,
    name: &OsStr,
    path: &Path,
) -> Result<(Box<dyn FsFile>, Metadata)> {
    let f = match retry(|| dir.open_read(name)) {
        Ok(f) => f,
        // O_NOFOLLOW met a symlink (ELOOP), or the name is a socket (ENXIO) or some
        // other thing open refuses: say what it is, rather than the errno.
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(match dir.stat(name) {
                Ok(m) if m.file_type != FileType::File => {
                    not_regular(path, m.file_type).with_source(e)
                }
                _ => Error::io("read", path, e),
            });
        }
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let meta = f.metadata().ctx("read", path)?;
    if meta.file_type != FileType::File {
        return Err(not_regular(path, meta.file_type));
    }
    Ok((f, meta))
}

/// Read the regular file `name` in `dir` whole, if it is at most `max` bytes
/// ([`Options::max_document_bytes`](crate::Options::max_document_bytes)). A longer
/// file is [`ErrorKind::Serialize`] ([`Error::too_large`]) before any of it is read;
/// one that grows past `max` while it is read is refused the same way, after reading
/// `max` + 1 bytes at most.
pub(crate) fn read(
    dir: &dyn FsDir,
    name: &OsStr,
    path: &Path,
    max: u64,
) -> Result<(Vec<u8>, Metadata)> {
    let (f, meta) = open(dir, name, path)?;
    if meta.len > max {
        return Err(Error::over_limit("read", path, Some(meta.len), max));
    }
    let mut buf = Vec::new();
    reserve_for(&mut buf, meta.len).ctx("read", path)?;
    f.take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .ctx("read", path)?;
    if buf.len() as u64 > max {
        return Err(Error::over_limit("read", path, None, max));
    }
    Ok((buf, meta))
}

/// Hash the regular file `name` in `dir` and check whether it parses, streaming (the
/// file may be large).
pub(crate) fn inspect(dir: &dyn FsDir, name: &OsStr, path: &Path) -> Result<Seen> {
    inspect_with(dir, name, path, false, u64::MAX, false).map(|(seen, _, _)| seen)
}

/// [`inspect`] a file that may be larger than `max` bytes
/// ([`Options::max_document_bytes`](crate::Options::max_document_bytes)): `None` if it
/// is, or grows past it while it is read, having hashed no more than `max` + 1 bytes of
/// it. A write looks at the file it replaces this way, so that a huge file planted at a
/// document's name costs it no more than a document within the limit would.
pub(crate) fn inspect_within(
    dir: &dyn FsDir,
    name: &OsStr,
    path: &Path,
    max: u64,
) -> Result<Option<Seen>> {
    Ok(inspect_keeping(dir, name, path, max, false)?.map(|(seen, _)| seen))
}

/// [`inspect_within`], also handing back the bytes looked at if `keep` and the file
/// was small enough to be read whole (up to 16 MiB), so that a caller about to read
/// the file (a transaction's read of a document it locked) need not read it again.
pub(crate) fn inspect_keeping(
    dir: &dyn FsDir,
    name: &OsStr,
    path: &Path,
    max: u64,
    keep: bool,
) -> Result<Option<(Seen, Option<Vec<u8>>)>> {
    match inspect_with(dir, name, path, false, max, keep) {
        Ok((seen, _, bytes)) => Ok(Some((seen, bytes))),
        Err(e) if e.too_large().is_some() => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`inspect`], and whether a file that parses holds [`json::RESERVED_KEY`] (so that
/// statefile's reads refuse it): `Some(why)` if it does. For `statefile verify` and the
/// choice of a backup to restore; the write path, which never reads the old value back,
/// does not pay for the search. A file over `max` bytes is not looked at:
/// [`ErrorKind::Serialize`], as [`read`] says of it.
pub(crate) fn inspect_readable(
    dir: &dyn FsDir,
    name: &OsStr,
    path: &Path,
    max: u64,
) -> Result<(Seen, Option<String>)> {
    inspect_with(dir, name, path, true, max, false).map(|(seen, found, _)| (seen, found))
}

fn inspect_with(
    dir: &dyn FsDir,
    name: &OsStr,
    path: &Path,
    reserved: bool,
    max: u64,
    keep: bool,
) -> Result<(Seen, Option<String>, Option<Vec<u8>>)> {
    /// Up to this size the file is read whole: parsing a slice is several times faster
    /// than parsing a stream. Larger files stream, so memory stays bounded.
    const IN_MEMORY: u64 = 16 << 20;
    let (mut f, meta) = open(dir, name, path)?;
    if meta.len > max {
        return Err(Error::over_limit("read", path, Some(meta.len), max));
    }
    let whole = IN_MEMORY.min(max);
    let inner: Box<dyn Read + '_> = if meta.len <= whole {
        let mut bytes = Vec::with_capacity(meta.len as usize + 1);
        // No further than that, even if the file grew since its length was read:
        // past it, it streams (and meets the limit), starting with what was read.
        (&mut f)
            .take(whole + 1)
            .read_to_end(&mut bytes)
            .ctx("read", path)?;
        if bytes.len() as u64 <= whole {
            let parses = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
            let found = (reserved && parses)
                .then(|| json::reserved_key_in(&bytes))
                .flatten();
            let seen = Seen {
                version: Version::of(&bytes),
                parses,
            };
            return Ok((seen, found, keep.then_some(bytes)));
        }
        Box::new(io::Cursor::new(bytes).chain(f))
    } else {
        Box::new(f)
    };
    let mut scan = json::ReservedScan::default();
    // A file that grows while it is read is read no further than the limit (and one
    // byte, to tell it is over).
    let mut tee = HashingReader::new(Scanned {
        inner: inner.take(max.saturating_add(1)),
        scan: reserved.then_some(&mut scan),
    });
    let parses = json::validate_reader(&mut tee).is_ok();
    // Hash whatever the parser did not consume (trailing bytes of a damaged file).
    io::copy(&mut tee, &mut io::sink()).ctx("read", path)?;
    let (version, count) = tee.finish().ctx("read", path)?;
    if count > max {
        return Err(Error::over_limit("read", path, None, max));
    }
    let found = if parses { scan.found() } else { None };
    Ok((Seen { version, parses }, found, None))
}

/// A reader that shows what it reads to a [`json::ReservedScan`], if given one.
struct Scanned<'a, R> {
    inner: R,
    scan: Option<&'a mut json::ReservedScan>,
}

impl<R: Read> Read for Scanned<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(scan) = self.scan.as_deref_mut() {
            scan.feed(&buf[..n]);
        }
        Ok(n)
    }
}
