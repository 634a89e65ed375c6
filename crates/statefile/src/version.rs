//! Versions: the SHA-256 of a document's stored bytes, in lowercase hex.
//!
//! SHA-256 rather than a faster hash so that any program (Python's `hashlib`, Node's
//! `crypto`, `sha256sum`) can compute the same version from the file without a library.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use ring::digest::{Context, SHA256};

/// A document's version: the lowercase hex SHA-256 of its bytes on disk.
///
/// The same string, in double quotes, is the HTTP `ETag` the server sends.
/// [`Version::parse`] accepts both forms. A weak entity tag (`W/"…"`) is not a version:
/// a compare-and-swap compares strongly, as HTTP's `If-Match` does (RFC 9110 13.1.1),
/// and a weak tag never matches there, so `parse` refuses it, saying why;
/// [`Version::parse_weak`] reads one where weak comparison is meant.
///
/// ```
/// use statefile::Version;
///
/// // printf 'abc' | sha256sum
/// let v = Version::of(b"abc");
/// assert_eq!(v.as_str(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
/// assert_eq!(v.etag(), format!("\"{v}\""));
/// // As the CLI prints it, or as the server's ETag: the same version.
/// assert_eq!(Version::parse(v.as_str())?, v);
/// assert_eq!(Version::parse(&v.etag())?, v);
/// assert!(Version::parse("abc").is_err());
/// // A weak tag names no version to compare with...
/// let weak = format!("W/{}", v.etag());
/// assert!(Version::parse(&weak).unwrap_err().to_string().contains("weak entity tag"));
/// // ...except where a weak comparison is what is asked.
/// assert_eq!(Version::parse_weak(&weak)?, v);
/// # Ok::<(), statefile::ParseVersionError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(String);

impl Version {
    /// The version of `bytes`.
    pub fn of(bytes: &[u8]) -> Version {
        let mut h = Context::new(&SHA256);
        h.update(bytes);
        Version::from_context(h)
    }

    /// The version a hash of the stored bytes ends in.
    fn from_context(h: Context) -> Version {
        let digest = h.finish();
        let mut d = [0u8; 32];
        d.copy_from_slice(digest.as_ref());
        Version::from_digest(d)
    }

    /// The version whose SHA-256 digest is `digest` (as the journal stores it).
    pub(crate) fn from_digest(digest: [u8; 32]) -> Version {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in digest {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        Version(s)
    }

    /// Parse a version as the CLI prints it (bare hex) or as the server's ETag
    /// (`"hex"`). Upper-case hex is accepted and normalised. This is the parse for a
    /// version to compare with, as every compare-and-swap input takes it (`write_if`,
    /// `--if-match`, a transaction's `if_match`).
    ///
    /// # Errors
    /// [`ParseVersionError`] when `s` is not 64 hex digits (optionally quoted), and
    /// when it is a weak entity tag (`W/"hex"`): a precondition compares strongly, as
    /// an HTTP `If-Match` header does (RFC 9110 13.1.1), and a weak tag never matches
    /// there; read as the version it wraps, it would match here and fail in a header.
    pub fn parse(s: &str) -> Result<Version, ParseVersionError> {
        let v = Version::parse_weak(s)?;
        if s.trim_start().starts_with("W/") {
            return Err(ParseVersionError {
                input: s.to_string(),
                weak: true,
            });
        }
        Ok(v)
    }

    /// [`Version::parse`], also reading a weak entity tag (`W/"hex"`) as the version it
    /// wraps: for where a weak comparison is meant (an HTTP `If-None-Match`, RFC 9110
    /// 13.1.2) or a tag only names a version to look up (a backup to restore). Never
    /// for a precondition of a write.
    ///
    /// # Errors
    /// [`ParseVersionError`] when `s` is not 64 hex digits (optionally quoted, and
    /// optionally weak).
    pub fn parse_weak(s: &str) -> Result<Version, ParseVersionError> {
        let t = s.trim();
        let t = t.strip_prefix("W/").unwrap_or(t);
        let t = t
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(t);
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Version(t.to_ascii_lowercase()))
        } else {
            Err(ParseVersionError {
                input: s.to_string(),
                weak: false,
            })
        }
    }

    /// What a journal's `direct` entry records for a file whose version was not
    /// computed: one over the document-size limit, which statefile never hashes (see
    /// [`Options::max_document_bytes`](crate::Options::max_document_bytes)). The digest
    /// of all zeros, which no bytes are known to hash to; never shown as a document's
    /// version.
    pub(crate) fn not_computed() -> Version {
        Version::from_digest([0; 32])
    }

    /// The 32 bytes of the digest (as the journal stores it).
    pub(crate) fn digest(&self) -> [u8; 32] {
        fn nibble(c: u8) -> u8 {
            match c {
                b'0'..=b'9' => c - b'0',
                _ => c - b'a' + 10,
            }
        }
        let hex = self.0.as_bytes();
        std::array::from_fn(|i| nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]))
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
    type Err = ParseVersionError;
    fn from_str(s: &str) -> Result<Version, ParseVersionError> {
        Version::parse(s)
    }
}

/// A string that is not a version: [`Version::parse`]'s error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseVersionError {
    input: String,
    weak: bool,
}

impl ParseVersionError {
    /// The text that did not parse.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Whether it was refused as a weak entity tag (`W/"…"`), which names a version
    /// but never matches one in a precondition.
    pub fn is_weak(&self) -> bool {
        self.weak
    }
}

impl fmt::Display for ParseVersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Quote only a short prefix: the input may be a whole request header.
        let shown: String = self.input.chars().take(80).collect();
        let more = if shown.len() < self.input.len() {
            "..."
        } else {
            ""
        };
        if self.weak {
            write!(
                f,
                "{shown:?}{more} is a weak entity tag, which never matches a version: a \
                 precondition compares strongly, as an HTTP If-Match header does (RFC 9110 \
                 13.1.1); give the version (64 hex digits) or its strong ETag (the same in \
                 double quotes)"
            )
        } else {
            write!(
                f,
                "{shown:?}{more} is not a statefile version (64 hex digits, optionally quoted)"
            )
        }
    }
}

impl std::error::Error for ParseVersionError {}

/// The error a writer gives for content past its limit of `0` bytes
/// ([`Options::max_document_bytes`](crate::Options::max_document_bytes)): nothing past
/// the limit was written. Recognized by [`over_limit`].
#[derive(Debug)]
pub(crate) struct OverLimit(pub u64);

impl fmt::Display for OverLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the content is more than the limit of {} bytes", self.0)
    }
}

impl std::error::Error for OverLimit {}

impl OverLimit {
    pub(crate) fn io(limit: u64) -> io::Error {
        io::Error::other(OverLimit(limit))
    }
}

/// The limit `e` says content went past, if it is an [`OverLimit`].
pub(crate) fn over_limit(e: &io::Error) -> Option<u64> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<OverLimit>())
        .map(|o| o.0)
}

/// A writer that hashes and counts everything passing through it, and refuses
/// ([`OverLimit`]) a write that would take it past its limit.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Context,
    count: u64,
    limit: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter::limited(inner, u64::MAX)
    }

    /// One that passes on at most `limit` bytes.
    pub(crate) fn limited(inner: W, limit: u64) -> Self {
        HashingWriter {
            inner,
            hasher: Context::new(&SHA256),
            count: 0,
            limit,
        }
    }

    pub(crate) fn finish(self) -> (W, Version, u64) {
        (self.inner, Version::from_context(self.hasher), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.limit - self.count {
            return Err(OverLimit::io(self.limit));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what passes through and remembers the first I/O error (the
/// JSON parser reports I/O errors as parse errors, which must not read as corruption).
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: HashingWriter<io::Sink>,
    error: Option<io::Error>,
}

impl<R: io::Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: HashingWriter::new(io::sink()),
            error: None,
        }
    }

    /// The version and length of what was read, or the first read error met.
    pub(crate) fn finish(self) -> io::Result<(Version, u64)> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let (_, v, n) = self.hasher.finish();
        Ok((v, n))
    }
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.hasher.write_all(&buf[..n])?;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let copy = io::Error::new(e.kind(), e.to_string());
                    self.error.get_or_insert(e);
                    return Err(copy);
                }
            }
        }
    }
}

/// Hash a stream (for files too large to hold twice in memory).
pub(crate) fn hash_reader(r: impl io::Read) -> io::Result<(Version, u64)> {
    let mut tee = HashingReader::new(r);
    io::copy(&mut tee, &mut io::sink())?;
    tee.finish()
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
    fn parse_accepts_bare_and_quoted() {
        let v = Version::of(b"x");
        assert_eq!(Version::parse(v.as_str()).unwrap(), v);
        assert_eq!(Version::parse(&v.etag()).unwrap(), v);
        assert_eq!(Version::parse(&v.as_str().to_ascii_uppercase()).unwrap(), v);
        assert!(Version::parse("abc").is_err());
        assert!(Version::parse(&"g".repeat(64)).is_err());
    }

    // Regression: `parse` read `W/"hex"` as the version it wraps, so `--if-match`,
    // Python's `write_if` and Node's `writeIf` matched a weak tag that an If-Match
    // header (and a transaction's if_match) never matches.
    #[test]
    fn parse_refuses_a_weak_tag_naming_it_and_why() {
        let v = Version::of(b"x");
        for weak in [
            format!("W/{}", v.etag()),
            format!("  W/{}", v.etag()),
            format!("W/{v}"),
        ] {
            let e = Version::parse(&weak).unwrap_err();
            assert!(e.is_weak(), "{weak}");
            assert_eq!(e.input(), weak);
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("{weak:?} is a weak entity tag")),
                "{msg}"
            );
            assert!(msg.contains("never matches"), "{msg}");
            assert!(msg.contains("strong ETag"), "{msg}");
            assert!(weak.parse::<Version>().is_err());
            assert_eq!(Version::parse_weak(&weak).unwrap(), v);
        }
        // Not a tag of a version: the plain error, whichever parse.
        for bad in ["W/abc", "w/x", "abc"] {
            assert!(!Version::parse(bad).unwrap_err().is_weak(), "{bad}");
            assert!(!Version::parse_weak(bad).unwrap_err().is_weak(), "{bad}");
        }
        assert!(!Version::parse("abc").unwrap_err().is_weak());
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            // Versions come from If-Match headers and --if-match: never a panic.
            #[test]
            fn parse_never_panics(s in any::<String>()) {
                if let Ok(v) = Version::parse(&s) {
                    prop_assert_eq!(Version::parse_weak(&s).ok(), Some(v));
                }
                if let Ok(v) = Version::parse_weak(&s) {
                    prop_assert_eq!(v.as_str().len(), 64);
                    prop_assert!(v.as_str().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
                }
            }

            // Every printed form of a version parses back to it.
            #[test]
            fn every_form_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                let v = Version::of(&bytes);
                prop_assert_eq!(Version::parse(v.as_str()).unwrap(), v.clone());
                prop_assert_eq!(Version::parse(&v.to_string()).unwrap(), v.clone());
                prop_assert_eq!(Version::parse(&v.etag()).unwrap(), v.clone());
                prop_assert_eq!(Version::parse_weak(&v.etag()).unwrap(), v.clone());
                prop_assert_eq!(Version::parse_weak(&format!("W/{}", v.etag())).unwrap(), v.clone());
                let weak = format!("W/{}", v.etag());
                prop_assert!(Version::parse(&weak).unwrap_err().is_weak());
                prop_assert_eq!(Version::parse(&v.as_str().to_ascii_uppercase()).unwrap(), v.clone());
                prop_assert_eq!(v.as_str().parse::<Version>().unwrap(), v);
            }

            // Anything but 64 hex digits (optionally quoted) is refused, and says what.
            #[test]
            fn wrong_lengths_are_refused(hex in "[0-9a-f]{0,63}|[0-9a-f]{65,80}") {
                let e = Version::parse(&hex).unwrap_err();
                prop_assert_eq!(e.input(), hex.as_str());
                prop_assert!(e.to_string().contains("not a statefile version"));
            }
        }
    }
}
