//! One error type for the whole library, with a [`ErrorKind`] that the CLI maps to exit
//! codes and the server to HTTP statuses (the table in `docs/design.md`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use crate::version::Version;

/// The OS error number behind `err`, to match with rustix's named constants.
pub(crate) fn errno(err: &io::Error) -> Option<Errno> {
    Errno::from_io_error(err)
}

/// Whether `err` is the process (EMFILE) or the system (ENFILE) running out of file
/// descriptors: a passing condition, after which the caller may retry.
pub(crate) fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(errno(err), Some(Errno::MFILE | Errno::NFILE))
}

/// Whether `err` wraps a [`ErrorKind::LockTimeout`]: a `Durability` error of a commit
/// whose journal flush lock was not had in time (see `Journal::flush`) says nothing
/// about the disk, unlike one from a failed sync.
pub(crate) fn caused_by_lock_timeout(err: &Error) -> bool {
    let mut next = std::error::Error::source(err);
    while let Some(e) = next {
        if e.downcast_ref::<Error>()
            .is_some_and(|e| e.kind() == ErrorKind::LockTimeout)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// [`out_of_descriptors`] for `err` or any error it wraps.
pub(crate) fn caused_by_out_of_descriptors(err: &Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<io::Error>()
            .is_some_and(out_of_descriptors)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Turns an OS error into the library's, naming the operation and the file:
/// `open(..).ctx("read", path)?`.
pub(crate) trait Context<T> {
    /// `op` on `path` failed; the kind follows from the OS error.
    fn ctx(self, op: &str, path: &Path) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, op: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

/// What went wrong, coarsely: the part of an [`Error`] that programs branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The document (or a backup, or a value inside it) does not exist.
    NotFound,
    /// The file exists but is not valid JSON: empty, truncated, or garbage.
    Corrupt,
    /// A conditional write found another version than the one it expected,
    /// or a create-only write found the document already there.
    Conflict,
    /// The document's lock was not acquired within the configured timeout.
    LockTimeout,
    /// The file system is full (ENOSPC) or the quota is exhausted (EDQUOT).
    NoSpace,
    /// The operating system refused access (EACCES, EPERM, EROFS).
    PermissionDenied,
    /// The name is not one statefile will store a document under.
    InvalidName,
    /// The new version was renamed into place, but syncing its directory failed:
    /// it is visible now, yet may not survive a power loss. Or, in journal mode, the
    /// new version is durable in the journal but renaming it into place failed: the
    /// next writer of the document, or a recovery, applies it. Either way the write
    /// happened (the error carries its version): do not retry it as if it had not.
    Durability,
    /// The value cannot be stored or read as asked: a non-finite number, nesting
    /// too deep, valid JSON that does not fit the caller's type, or a document larger
    /// than [`Options::max_document_bytes`](crate::Options::max_document_bytes) allows
    /// ([`Error::too_large`]).
    Serialize,
    /// Any other I/O failure.
    Io,
}

impl ErrorKind {
    /// A stable lowercase name, used by the CLI's JSON output and the server's problem types.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Conflict => "conflict",
            ErrorKind::LockTimeout => "lock-timeout",
            ErrorKind::NoSpace => "no-space",
            ErrorKind::PermissionDenied => "permission-denied",
            ErrorKind::InvalidName => "invalid-name",
            ErrorKind::Durability => "durability",
            ErrorKind::Serialize => "serialize",
            ErrorKind::Io => "io",
        }
    }

    /// The kind an OS error belongs to.
    pub fn of_io(err: &io::Error) -> ErrorKind {
        match err.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => ErrorKind::NoSpace,
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                ErrorKind::PermissionDenied
            }
            // EPERM maps to PermissionDenied in std as well; keep the check for
            // platforms whose mapping differs.
            _ if errno(err) == Some(Errno::PERM) => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a corrupt document went wrong, and what could restore it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptInfo {
    /// 1-based line of the first error (0 for an empty file).
    pub line: usize,
    /// 1-based column of the first error (0 for an empty file).
    pub column: usize,
    /// The parser's description of the problem.
    pub reason: String,
    /// Whether a backup of this document exists (it may be corrupt as well).
    pub backup_exists: bool,
}

/// A document, backup or value larger than [`Options::max_document_bytes`] allows
/// (what [`Error::too_large`] tells of an [`ErrorKind::Serialize`] error).
///
/// [`Options::max_document_bytes`]: crate::Options::max_document_bytes
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// Its size in bytes: a file's length when it was opened; `None` for a write, or
    /// a file that grew while it was read (counting stops past the limit).
    pub size: Option<u64>,
    /// The limit, in bytes.
    pub limit: u64,
}

/// The library's error: a kind, a message that names the file and the operation, and
/// the underlying cause (usually an [`io::Error`]) as its [`source`](std::error::Error::source).
///
/// Boxed inside, so a `Result<T, Error>` stays one pointer wide on the error side.
#[derive(Debug)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    message: String,
    path: Option<PathBuf>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    corrupt: Option<CorruptInfo>,
    version: Option<Version>,
    too_large: Option<TooLarge>,
}

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a message. Prefer the helpers for I/O errors.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                path: None,
                source: None,
                corrupt: None,
                version: None,
                too_large: None,
            }),
        }
    }

    /// `op` on `path` failed with `err`; the kind follows from the OS error.
    pub(crate) fn io(op: &str, path: &Path, err: io::Error) -> Error {
        let kind = ErrorKind::of_io(&err);
        Error::new(kind, format!("cannot {op} {}: {err}", path.display()))
            .with_path(path)
            .with_source(err)
    }

    pub(crate) fn with_path(mut self, path: &Path) -> Error {
        self.inner.path = Some(path.to_path_buf());
        self
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        self.inner.source = Some(Box::new(source));
        self
    }

    pub(crate) fn with_corrupt(mut self, info: CorruptInfo) -> Error {
        self.inner.corrupt = Some(info);
        self
    }

    /// What `op` met at `path` is over the limit: [`ErrorKind::Serialize`], naming the size,
    /// the limit, and how to raise it.
    pub(crate) fn over_limit(op: &str, path: &Path, size: Option<u64>, limit: u64) -> Error {
        let size_text = match size {
            Some(n) => format!("{n} bytes"),
            None => format!("more than {limit} bytes"),
        };
        let mut e = Error::new(
            ErrorKind::Serialize,
            format!(
                "cannot {op} {}: it is {size_text}, too large for the limit of {limit} bytes \
                 on a document's size (raise it with Options::max_document_bytes)",
                path.display()
            ),
        )
        .with_path(path);
        e.inner.too_large = Some(TooLarge { size, limit });
        e
    }

    /// The same error, its message preceded by `what` (`operation 2: ...`).
    pub(crate) fn within(mut self, what: &str) -> Error {
        self.inner.message = format!("{what}: {}", self.inner.message);
        self
    }

    /// The same error, `more` added at the end of its message (`cannot sync ...: EIO;
    /// nothing was written`).
    pub(crate) fn and(mut self, more: &str) -> Error {
        self.inner.message = format!("{}; {more}", self.inner.message);
        self
    }

    pub(crate) fn with_version(mut self, version: Version) -> Error {
        self.inner.version = Some(version);
        self
    }

    /// The same error again, for each of several callers it answers (a batched write
    /// that failed fails every call in it). The cause is copied as far as it can be: an
    /// OS error keeps its error number, anything else its message.
    pub(crate) fn duplicate(&self) -> Error {
        let i = &self.inner;
        let source: Option<Box<dyn std::error::Error + Send + Sync>> =
            i.source
                .as_ref()
                .map(|s| -> Box<dyn std::error::Error + Send + Sync> {
                    match s.downcast_ref::<io::Error>() {
                        Some(io) => Box::new(match io.raw_os_error() {
                            Some(code) => io::Error::from_raw_os_error(code),
                            None => io::Error::new(io.kind(), io.to_string()),
                        }),
                        None => match s.downcast_ref::<Error>() {
                            Some(e) => Box::new(e.duplicate()),
                            None => s.to_string().into(),
                        },
                    }
                });
        Error {
            inner: Box::new(Inner {
                kind: i.kind,
                message: i.message.clone(),
                path: i.path.clone(),
                source,
                corrupt: i.corrupt.clone(),
                version: i.version.clone(),
                too_large: i.too_large,
            }),
        }
    }

    /// What went wrong, coarsely.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The file the failed operation was about, when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The message without the causes (the causes are in `source()`).
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// For [`ErrorKind::Corrupt`]: where the parse failed and whether a backup exists.
    pub fn corrupt_info(&self) -> Option<&CorruptInfo> {
        self.inner.corrupt.as_ref()
    }

    /// For [`ErrorKind::Durability`]: the version that was renamed into place and is
    /// visible now, though it may not survive a power loss. For [`ErrorKind::Conflict`]:
    /// the version actually found.
    pub fn version(&self) -> Option<&Version> {
        self.inner.version.as_ref()
    }

    /// For [`ErrorKind::Serialize`]: the document, backup or value was larger than
    /// [`Options::max_document_bytes`](crate::Options::max_document_bytes) allows.
    pub fn too_large(&self) -> Option<TooLarge> {
        self.inner.too_large
    }

    /// The OS error behind this one, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.inner
            .source
            .as_ref()
            .and_then(|s| s.downcast_ref::<io::Error>())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_kinds() {
        let cases = [
            (28, ErrorKind::NoSpace),          // ENOSPC
            (122, ErrorKind::NoSpace),         // EDQUOT
            (13, ErrorKind::PermissionDenied), // EACCES
            (1, ErrorKind::PermissionDenied),  // EPERM
            (30, ErrorKind::PermissionDenied), // EROFS
            (2, ErrorKind::NotFound),          // ENOENT
            (5, ErrorKind::Io),                // EIO
        ];
        for (errno, kind) in cases {
            let e = Error::io(
                "write",
                Path::new("/d/a.json"),
                io::Error::from_raw_os_error(errno),
            );
            assert_eq!(e.kind(), kind, "errno {errno}");
            assert!(e.to_string().contains("/d/a.json"), "{e}");
            assert!(e.to_string().starts_with("cannot write"), "{e}");
            assert!(e.io_error().is_some());
        }
    }
}
