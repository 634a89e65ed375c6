//! Names on disk: a document's sidecar files (lock, temps, backups), the rules for
//! document names, and resolving a path (through symlinks) to the file it designates.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::io::Errno;

use crate::error::{Error, ErrorKind, Result, errno};
use crate::fs::{FileType, Fs};

/// Bytes a file name may have on common Unix file systems.
const NAME_MAX: usize = 255;
/// `.{name}.sf-{16}.tmp` adds this many bytes to a document's name.
const TEMP_OVERHEAD: usize = 1 + 4 + 16 + 4;
/// The longest document file name whose temp name still fits in `NAME_MAX` (255 bytes).
pub const MAX_NAME_LEN: usize = NAME_MAX - TEMP_OVERHEAD;
/// Symlinks followed before giving up (as Linux's `ELOOP` limit).
const MAX_LINKS: usize = 40;

/// A document resolved to its real location: the directory (canonical, symlinks
/// resolved) and the file name in it. Every sidecar lives in the same directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub dir: PathBuf,
    pub name: OsString,
    pub path: PathBuf,
}

impl Target {
    /// A target from a directory entry: `name` in the (canonical) directory `dir`.
    pub fn in_dir(dir: &Path, name: &OsStr) -> Target {
        Target {
            dir: dir.to_path_buf(),
            name: name.to_os_string(),
            path: dir.join(name),
        }
    }

    fn sidecar(&self, suffix: &str) -> OsString {
        let mut n = OsString::with_capacity(self.name.len() + suffix.len() + 1);
        n.push(".");
        n.push(&self.name);
        n.push(suffix);
        n
    }

    /// `.name.json.lock`: the lock file, never replaced.
    pub fn lock_name(&self) -> OsString {
        self.sidecar(".lock")
    }

    /// `.name.json.sf-<random>.tmp`: a write in progress.
    pub fn temp_name(&self, random: &str) -> OsString {
        self.sidecar(&format!(".sf-{random}.tmp"))
    }

    /// `.name.json.bak` (n = 1), `.name.json.bak.2`, ...: previous versions, newest first.
    pub fn backup_name(&self, n: usize) -> OsString {
        if n <= 1 {
            self.sidecar(".bak")
        } else {
            self.sidecar(&format!(".bak.{n}"))
        }
    }

    /// `.name.json.corrupt`: the last unparseable version that was replaced.
    pub fn corrupt_name(&self) -> OsString {
        self.sidecar(".corrupt")
    }

    /// The path of `name` beside the document, for messages and receipts.
    pub fn beside(&self, name: &OsStr) -> PathBuf {
        self.dir.join(name)
    }

    /// The lock file's path.
    pub fn lock_path(&self) -> PathBuf {
        self.beside(&self.lock_name())
    }

    /// Backup `n`'s path.
    pub fn backup_path(&self, n: usize) -> PathBuf {
        self.beside(&self.backup_name(n))
    }

    /// The `.corrupt` file's path.
    pub fn corrupt_path(&self) -> PathBuf {
        self.beside(&self.corrupt_name())
    }
}

/// What a hidden sidecar name in a directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sidecar {
    Lock(OsString),
    Temp(OsString),
    Backup(OsString, usize),
    Corrupt(OsString),
}

/// Classify a file name: `Some` if it is one of statefile's sidecar names, with the
/// name of the document it belongs to.
pub(crate) fn sidecar_of(file_name: &OsStr) -> Option<Sidecar> {
    let s = file_name.to_str()?;
    let rest = s.strip_prefix('.')?;
    if let Some(doc) = rest.strip_suffix(".lock") {
        return non_empty(doc).map(|d| Sidecar::Lock(d.into()));
    }
    if let Some(doc) = rest.strip_suffix(".corrupt") {
        return non_empty(doc).map(|d| Sidecar::Corrupt(d.into()));
    }
    if let Some(head) = rest.strip_suffix(".tmp") {
        let (doc, random) = head.rsplit_once(".sf-")?;
        let valid = random.len() == 16
            && random
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
        return if valid {
            non_empty(doc).map(|d| Sidecar::Temp(d.into()))
        } else {
            None
        };
    }
    if let Some(doc) = rest.strip_suffix(".bak") {
        return non_empty(doc).map(|d| Sidecar::Backup(d.into(), 1));
    }
    let (doc, n) = rest.rsplit_once(".bak.")?;
    let n: usize = n
        .parse::<usize>()
        .ok()
        .filter(|k| *k >= 2 && k.to_string() == n)?;
    non_empty(doc).map(|d| Sidecar::Backup(d.into(), n))
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// 16 random lowercase base32 characters for a temp file name.
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to time and a counter. Names stay unique
        // because the temp file is created with O_EXCL and retried on collision.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mix = t
            ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(32)
            ^ u64::from(std::process::id());
        bytes[..8].copy_from_slice(&mix.to_le_bytes());
        bytes[8..].copy_from_slice(&mix.rotate_left(17).to_le_bytes());
    }
    bytes
        .iter()
        .map(|b| ALPHABET[(b & 31) as usize] as char)
        .collect()
}

fn invalid(path: &Path, why: &str) -> Error {
    Error::new(
        ErrorKind::InvalidName,
        format!("{:?} is not a valid document path: {why}", path.as_os_str()),
    )
    .with_path(path)
}

/// Check the file name of a document path: present, not `.`/`..`, no NUL, short enough
/// for its temp file name, and not itself one of statefile's sidecar names.
pub(crate) fn check_path(path: &Path) -> Result<()> {
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(invalid(path, "it contains a NUL byte"));
    }
    // Look at the raw last segment: `Path::components` would quietly drop a
    // trailing `.` or `/`.
    let raw = path.as_os_str().as_bytes();
    let last = raw.rsplit(|b| *b == b'/').next().unwrap_or(raw);
    if last.is_empty() || last == b"." || last == b".." {
        return Err(invalid(path, "it does not end in a file name"));
    }
    let name = match path.components().next_back() {
        Some(Component::Normal(n)) => n,
        _ => return Err(invalid(path, "it does not end in a file name")),
    };
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(
            path,
            &format!("its file name is longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    if sidecar_of(name).is_some() {
        return Err(invalid(
            path,
            "that name is reserved for statefile's lock, temp and backup files",
        ));
    }
    Ok(())
}

/// Check a store-relative document name: `/`-separated segments, none empty, `.`,
/// `..` or starting with a dot, no NUL or backslash, not absolute.
pub(crate) fn check_store_name(name: &str) -> Result<()> {
    let p = Path::new(name);
    let bad = |why: &str| invalid(p, why);
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.starts_with('/') {
        return Err(bad("it is absolute; names are relative to the store"));
    }
    if name.contains('\0') || name.contains('\\') {
        return Err(bad("it contains a NUL byte or a backslash"));
    }
    for seg in name.split('/') {
        if seg.is_empty() {
            return Err(bad("it has an empty segment"));
        }
        if seg == "." || seg == ".." {
            return Err(bad("it has a '.' or '..' segment"));
        }
        if seg.starts_with('.') {
            return Err(bad(
                "a segment starts with a dot (hidden names are statefile's)",
            ));
        }
        if seg.len() > NAME_MAX {
            return Err(bad("a segment is longer than 255 bytes"));
        }
    }
    check_path(p)
}

/// Resolve `path` to the file it designates: follow a symlink chain at the final
/// component, then canonicalize the directory. A missing file resolves to where it
/// would be created; a missing directory resolves through its nearest existing ancestor.
///
/// Returns the target and whether the path was (or led through) a dangling symlink.
/// With `confine` (a store's canonical root), a target outside it is
/// [`ErrorKind::InvalidName`].
pub(crate) fn resolve(fs: &dyn Fs, path: &Path, confine: Option<&Path>) -> Result<(Target, bool)> {
    let (t, dangling) = resolve_anywhere(fs, path)?;
    if let Some(root) = confine
        && !t.path.starts_with(root)
    {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "{} resolves outside the store (through a symlink)",
                path.display()
            ),
        )
        .with_path(path));
    }
    Ok((t, dangling))
}

/// As [`resolve`], for a write: a dangling symlink is [`ErrorKind::NotFound`] (a write
/// does not create the file a link points to).
pub(crate) fn resolve_for_write(
    fs: &dyn Fs,
    path: &Path,
    confine: Option<&Path>,
) -> Result<Target> {
    let (t, dangling) = resolve(fs, path, confine)?;
    if dangling {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "cannot write {}: it is a symlink to {}, which does not exist",
                path.display(),
                t.path.display()
            ),
        )
        .with_path(path));
    }
    Ok(t)
}

fn resolve_anywhere(fs: &dyn Fs, path: &Path) -> Result<(Target, bool)> {
    check_path(path)?;
    let mut current = path.to_path_buf();
    let mut followed = false;
    for _ in 0..=MAX_LINKS {
        match fs.symlink_metadata(&current) {
            Ok(m) if m.file_type == FileType::Symlink => {
                let link = fs
                    .read_link(&current)
                    .map_err(|e| Error::io("read symlink", &current, e))?;
                let parent = current.parent().unwrap_or(Path::new(""));
                current = parent.join(link);
                followed = true;
                continue;
            }
            Ok(m) if m.file_type == FileType::Dir => {
                return Err(Error::new(
                    ErrorKind::InvalidName,
                    format!("{} is a directory, not a document", current.display()),
                )
                .with_path(&current));
            }
            Ok(_) => return finish(fs, &current, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return finish(fs, &current, followed);
            }
            // ELOOP: a symlink loop where a directory of the path should be.
            Err(e) if errno(&e) == Some(Errno::LOOP) => return Err(symlink_loop(path, e)),
            // ENOTDIR: a file stands where a directory of the path should be.
            Err(e) if errno(&e) == Some(Errno::NOTDIR) => {
                return Err(Error::new(
                    ErrorKind::InvalidName,
                    format!(
                        "{}: a part of the path that should be a directory is a file",
                        current.display()
                    ),
                )
                .with_path(&current)
                .with_source(e));
            }
            Err(e) => return Err(Error::io("inspect", &current, e)),
        }
    }
    Err(symlink_loop(path, io::Error::from(Errno::LOOP)))
}

fn symlink_loop(path: &Path, e: io::Error) -> Error {
    Error::new(
        ErrorKind::InvalidName,
        format!(
            "{}: too many levels of symbolic links (a symlink loop)",
            path.display()
        ),
    )
    .with_path(path)
    .with_source(e)
}

fn finish(fs: &dyn Fs, file: &Path, dangling: bool) -> Result<(Target, bool)> {
    check_path(file)?;
    let name = file
        .file_name()
        .map(OsStr::to_os_string)
        .ok_or_else(|| invalid(file, "it does not end in a file name"))?;
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = canonicalize_existing_prefix(fs, &parent)?;
    let path = dir.join(&name);
    Ok((Target { dir, name, path }, dangling))
}

/// Canonicalize the longest existing prefix of `dir` and append the rest unchanged.
pub(crate) fn canonicalize_existing_prefix(fs: &dyn Fs, dir: &Path) -> Result<PathBuf> {
    let mut missing: Vec<OsString> = Vec::new();
    let mut cur = dir.to_path_buf();
    loop {
        match fs.canonicalize(&cur) {
            Ok(mut c) => {
                for m in missing.iter().rev() {
                    c.push(m);
                }
                return Ok(c);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A symlink that leads nowhere, where a directory should be: writing
                // through it would create a directory at its target, reading finds
                // nothing; refuse it as a name that cannot hold a document.
                if fs.symlink_metadata(&cur).is_ok_and(|m| m.is_symlink()) {
                    return Err(Error::new(
                        ErrorKind::InvalidName,
                        format!(
                            "{} is a symlink to a directory that does not exist",
                            cur.display()
                        ),
                    )
                    .with_path(&cur)
                    .with_source(e));
                }
                match (cur.file_name(), cur.parent()) {
                    (Some(n), Some(p)) => {
                        missing.push(n.to_os_string());
                        cur = if p.as_os_str().is_empty() {
                            PathBuf::from(".")
                        } else {
                            p.to_path_buf()
                        };
                    }
                    _ => return Err(Error::io("resolve directory", dir, e)),
                }
            }
            Err(e) if errno(&e) == Some(Errno::LOOP) => return Err(symlink_loop(&cur, e)),
            Err(e) => return Err(Error::io("resolve directory", dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_names_round_trip() {
        let t = Target {
            dir: "/d".into(),
            name: "a.json".into(),
            path: "/d/a.json".into(),
        };
        let cases = [
            (t.lock_path(), Sidecar::Lock("a.json".into())),
            (
                t.beside(&t.temp_name(&random_suffix())),
                Sidecar::Temp("a.json".into()),
            ),
            (t.backup_path(1), Sidecar::Backup("a.json".into(), 1)),
            (t.backup_path(7), Sidecar::Backup("a.json".into(), 7)),
            (t.corrupt_path(), Sidecar::Corrupt("a.json".into())),
        ];
        for (p, want) in cases {
            assert_eq!(sidecar_of(p.file_name().unwrap()), Some(want), "{p:?}");
        }
        for not in [
            "a.json",
            ".a.json",
            ".a.json.sf-short.tmp",
            ".a.json.tmp",
            "a.json.tmp",
            ".a.json.sf-ABCDEFGHIJKLMNOP.tmp",
            ".a.json.bak.1",
            ".a.json.bak.x",
        ] {
            assert_eq!(sidecar_of(OsStr::new(not)), None, "{not}");
        }
    }

    #[test]
    fn store_names() {
        for ok in ["a.json", "view/resData.json", "a-b_c.1.json"] {
            check_store_name(ok).unwrap();
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x.json",
            "a/../b.json",
            "a//b.json",
            "./a.json",
            ".hidden.json",
            "a/.x/b.json",
            "a\0b",
            "a\\b.json",
            "dir/",
        ] {
            assert_eq!(
                check_store_name(bad).unwrap_err().kind(),
                ErrorKind::InvalidName,
                "{bad:?}"
            );
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(check_store_name(&long).is_err());
        check_store_name(&"x".repeat(MAX_NAME_LEN)).unwrap();
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A segment a store name may have: not hidden, no separators or NUL.
        fn segment() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9_][a-zA-Z0-9_. -]{0,20}"
                .prop_filter("not . or ..", |s| s != "." && s != "..")
        }

        proptest! {
            // Names come from URLs and command lines: no input may panic the checks.
            #[test]
            fn name_checks_never_panic(name in any::<String>(), raw in proptest::collection::vec(any::<u8>(), 0..300)) {
                let _ = check_store_name(&name);
                let _ = check_path(Path::new(&name));
                let _ = check_path(Path::new(OsStr::from_bytes(&raw)));
                let _ = sidecar_of(OsStr::from_bytes(&raw));
            }

            // What the store accepts stays inside it and is never one of its own files.
            #[test]
            fn an_accepted_store_name_is_relative_plain_and_not_a_sidecar(name in any::<String>()) {
                if check_store_name(&name).is_ok() {
                    prop_assert!(!name.starts_with('/'));
                    prop_assert!(!name.contains('\0') && !name.contains('\\'));
                    for seg in name.split('/') {
                        prop_assert!(!seg.is_empty() && !seg.starts_with('.'));
                        prop_assert!(seg.len() <= NAME_MAX);
                    }
                    let file = name.rsplit('/').next().unwrap();
                    prop_assert!(file.len() <= MAX_NAME_LEN);
                    prop_assert_eq!(sidecar_of(OsStr::new(file)), None);
                }
            }

            // Names built from plain segments are accepted.
            #[test]
            fn plain_segments_make_a_valid_name(segs in proptest::collection::vec(segment(), 1..5)) {
                let name = segs.join("/");
                prop_assert!(check_store_name(&name).is_ok(), "{:?}", name);
            }

            // Every sidecar name of a document classifies back to that document, and is
            // refused as a document name itself.
            #[test]
            fn sidecar_names_round_trip_for_any_document(doc in segment(), n in 1usize..1000) {
                prop_assume!(check_path(Path::new(&doc)).is_ok());
                let t = Target::in_dir(Path::new("/d"), OsStr::new(&doc));
                let d = OsString::from(&doc);
                let cases = [
                    (t.lock_name(), Sidecar::Lock(d.clone())),
                    (t.temp_name(&random_suffix()), Sidecar::Temp(d.clone())),
                    (t.backup_name(n), Sidecar::Backup(d.clone(), n)),
                    (t.corrupt_name(), Sidecar::Corrupt(d.clone())),
                ];
                for (name, want) in cases {
                    prop_assert_eq!(sidecar_of(&name), Some(want));
                    prop_assert!(check_path(Path::new(&name)).is_err());
                }
            }
        }
    }
}
