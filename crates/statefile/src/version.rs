//! Versions: the SHA-256 of a document's stored bytes, in lowercase hex.
//!
//! SHA-256 rather than a faster hash so that any program (Python's `hashlib`, Node's
//! `crypto`, `sha256sum`) can compute the same version from the file without a library.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind};

/// A document's version: the lowercase hex SHA-256 of its bytes on disk.
///
/// The same string, in double quotes, is the HTTP `ETag` the server sends.
/// [`Version::parse`] accepts both forms.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(String);

impl Version {
    /// The version of `bytes`.
    pub fn of(bytes: &[u8]) -> Version {
        Version::from_digest(Sha256::digest(bytes).into())
    }

    fn from_digest(digest: [u8; 32]) -> Version {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in digest {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        Version(s)
    }

    /// Parse a version as the CLI prints it (bare hex) or as an ETag (`"hex"`, also
    /// `W/"hex"`). Upper-case hex is accepted and normalised.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`] when `s` is not 64 hex digits.
    pub fn parse(s: &str) -> Result<Version, Error> {
        let t = s.trim();
        let t = t.strip_prefix("W/").unwrap_or(t);
        let t = t
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(t);
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Version(t.to_ascii_lowercase()))
        } else {
            Err(Error::new(
                ErrorKind::InvalidName,
                format!("{s:?} is not a statefile version (64 hex digits, optionally quoted)"),
            ))
        }
    }

    /// The bare lowercase hex form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The HTTP `ETag` form: the hex in double quotes.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({})", &self.0[..12.min(self.0.len())])
    }
}

impl FromStr for Version {
    type Err = Error;
    fn from_str(s: &str) -> Result<Version, Error> {
        Version::parse(s)
    }
}

/// A writer that hashes and counts everything passing through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub(crate) fn finish(self) -> (W, Version, u64) {
        (
            self.inner,
            Version::from_digest(self.hasher.finalize().into()),
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hash a stream (for files too large to hold twice in memory).
pub(crate) fn hash_reader(mut r: impl io::Read) -> io::Result<(Version, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n_total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((Version::from_digest(hasher.finalize().into()), n_total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_matches_sha256sum() {
        // printf 'abc' | sha256sum
        assert_eq!(
            Version::of(b"abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parse_accepts_bare_quoted_and_weak() {
        let v = Version::of(b"x");
        assert_eq!(Version::parse(v.as_str()).unwrap(), v);
        assert_eq!(Version::parse(&v.etag()).unwrap(), v);
        assert_eq!(Version::parse(&format!("W/{}", v.etag())).unwrap(), v);
        assert_eq!(Version::parse(&v.as_str().to_ascii_uppercase()).unwrap(), v);
        assert!(Version::parse("abc").is_err());
        assert!(Version::parse(&"g".repeat(64)).is_err());
    }

    #[test]
    fn hashing_writer_equals_of() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (bytes, v, n) = w.finish();
        assert_eq!(n, 11);
        assert_eq!(v, Version::of(&bytes));
        assert_eq!(hash_reader(&bytes[..]).unwrap(), (v, 11));
    }
}
