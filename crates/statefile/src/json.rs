//! JSON in and out: what a document may contain, and how parse failures are classified.
//!
//! The library never writes a document it cannot read back: before serializing, a value
//! is walked once by [`check`], which refuses non-finite numbers (serde_json would
//! silently write them as `null`) and nesting deeper than the parser accepts.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::ser::{self, Serialize};
use serde_json::{Number, Value};

use crate::error::{CorruptInfo, Error, ErrorKind, Result};

/// The deepest nesting of arrays and objects a document may have. serde_json's parser
/// refuses anything deeper, so the writer refuses it too.
pub const MAX_DEPTH: usize = 127;

/// The struct name serde_json gives a number under `arbitrary_precision`.
const EXACT_NUMBER: &str = "$serde_json::private::Number";

/// The struct name serde_json gives JSON text it copies as it is, under `raw_value`.
const RAW_VALUE: &str = "$serde_json::private::RawValue";

/// The object key statefile cannot store: with exact numbers (serde_json's
/// `arbitrary_precision`, the default feature `exact-numbers`), serde_json reads an
/// object whose key is this text as the number its value spells (`{"$serde_json::
/// private::Number": "12"}` as `12`), so a document holding it would read back as a
/// different value. Writes refuse an object holding it, and reads of text holding it fail
/// ([`reserved_key_in`]) rather than change the value. [`is_reserved_key`] also refuses
/// serde_json's other such key.
pub const RESERVED_KEY: &str = EXACT_NUMBER;

/// Whether statefile refuses `key` as an object key: [`RESERVED_KEY`], and
/// `"$serde_json::private::RawValue"`, which serde_json with its `raw_value` feature (on
/// in a program that enables it anywhere, as the Python package does) reads as the JSON
/// text its value spells (`{"$serde_json::private::RawValue": "[1]"}` as `[1]`). Both
/// are refused in every build, whatever this crate's features or serde_json's: Cargo
/// unifies features, so a program that turns `exact-numbers` off may still get
/// `arbitrary_precision` from another dependency, and a document one program writes must
/// not read as a different value in another (the CLI, the server, the Python package).
pub fn is_reserved_key(key: &str) -> bool {
    key == EXACT_NUMBER || key == RAW_VALUE
}

fn reserved_key_message(key: &str) -> String {
    let reads_as = if key == EXACT_NUMBER {
        "(with exact numbers) reads back as a number"
    } else {
        "(with raw values, as in the Python package) reads back as the JSON text its value holds"
    };
    format!(
        "an object has the key {key:?}, which serde_json {reads_as}, not an object: statefile refuses it rather than store a different value"
    )
}

/// Whether the JSON text `bytes` (already known to be valid JSON) has an object key
/// that [`is_reserved_key`], escaped or not: `Some(message)` naming it if so. Text with
/// neither the keys' literal middle nor a `\u` escape (the only escape their characters
/// can take) cannot hold one and costs one substring search; other text one pass over
/// its bytes.
pub fn reserved_key_in(bytes: &[u8]) -> Option<String> {
    let find = |needle: &[u8]| memchr::memmem::find(bytes, needle).is_some();
    if !find(b"::private::") && !find(b"\\u") {
        return None;
    }
    let mut scan = ReservedScan::default();
    scan.feed(bytes);
    scan.found()
}

/// [`reserved_key_in`] for valid JSON text that arrives in pieces (a file too large to
/// hold in memory, checked as it streams by): feed every piece in order, then ask
/// [`found`](ReservedScan::found). Memory stays bounded: it keeps at most one string
/// token, and only while the token is short enough to be the key.
#[derive(Debug, Default)]
pub(crate) struct ReservedScan {
    at: ScanAt,
    /// The current string token's raw bytes, quotes included, while it can still be
    /// a reserved key (up to 30 characters, at most 6 bytes each when escaped, and
    /// quotes).
    raw: Vec<u8>,
    /// The current string token is longer than that.
    long: bool,
    /// The reserved key found.
    found: Option<String>,
}

/// Where a [`ReservedScan`] is in the text.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ScanAt {
    /// Between tokens.
    #[default]
    Outside,
    /// Inside a string.
    InString,
    /// Inside a string, right after a backslash.
    Escape,
    /// After a string, before the next token: a colon makes it a key.
    AfterString,
}

impl ReservedScan {
    const RAW_MAX: usize = 6 * RAW_VALUE.len() + 2;

    /// Scan the next piece of the text.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        if self.found.is_some() {
            return;
        }
        let mut i = 0;
        while i < bytes.len() {
            match self.at {
                ScanAt::Outside => {
                    let Some(k) = memchr::memchr(b'"', &bytes[i..]) else {
                        return;
                    };
                    self.raw.clear();
                    self.long = false;
                    self.keep(b"\"");
                    self.at = ScanAt::InString;
                    i += k + 1;
                }
                ScanAt::InString => {
                    let Some(k) = memchr::memchr2(b'"', b'\\', &bytes[i..]) else {
                        self.keep(&bytes[i..]);
                        return;
                    };
                    self.keep(&bytes[i..=i + k]);
                    self.at = if bytes[i + k] == b'"' {
                        ScanAt::AfterString
                    } else {
                        ScanAt::Escape
                    };
                    i += k + 1;
                }
                ScanAt::Escape => {
                    self.keep(&bytes[i..=i]);
                    self.at = ScanAt::InString;
                    i += 1;
                }
                ScanAt::AfterString => match bytes[i] {
                    b' ' | b'\t' | b'\n' | b'\r' => i += 1,
                    b':' => {
                        self.found = self.reserved_key();
                        if self.found.is_some() {
                            return;
                        }
                        self.at = ScanAt::Outside;
                        i += 1;
                    }
                    // Not a key: look at this byte again between tokens.
                    _ => self.at = ScanAt::Outside,
                },
            }
        }
    }

    fn keep(&mut self, piece: &[u8]) {
        if self.long {
            return;
        }
        if self.raw.len() + piece.len() > Self::RAW_MAX {
            self.long = true;
            self.raw.clear();
        } else {
            self.raw.extend_from_slice(piece);
        }
    }

    /// The current string token, if it is a reserved key.
    fn reserved_key(&self) -> Option<String> {
        if self.long || self.raw.len() < EXACT_NUMBER.len() + 2 {
            return None;
        }
        serde_json::from_slice::<String>(&self.raw)
            .ok()
            .filter(|k| is_reserved_key(k))
    }

    /// What [`reserved_key_in`] says of all the text fed so far.
    pub(crate) fn found(&self) -> Option<String> {
        self.found.as_deref().map(reserved_key_message)
    }
}

/// How a document is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// 2-space indent and a trailing newline: readable and diffable (the default).
    #[default]
    Pretty,
    /// No whitespace, with a trailing newline.
    Compact,
}

/// Serialize `value` as `format` into `w`, after [`check`]ing it.
pub(crate) fn serialize_into<T: Serialize + ?Sized, W: Write + ?Sized>(
    value: &T,
    format: Format,
    w: &mut W,
) -> std::result::Result<(), SerializeError> {
    check(value)?;
    match format {
        Format::Pretty => serde_json::to_writer_pretty(&mut *w, value),
        Format::Compact => serde_json::to_writer(&mut *w, value),
    }
    .map_err(|e| match e.io_error_kind() {
        Some(_) => SerializeError::Io(io::Error::from(e)),
        None => SerializeError::Value(e.to_string()),
    })?;
    w.write_all(b"\n").map_err(SerializeError::Io)
}

/// Serialize to a byte vector (for callers that need the bytes, like the CLI's output).
pub fn to_vec<T: Serialize + ?Sized>(value: &T, format: Format) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    serialize_into(value, format, &mut out).map_err(|e| match e {
        SerializeError::Value(msg) => Error::new(ErrorKind::Serialize, msg),
        SerializeError::Io(e) => Error::new(ErrorKind::Io, e.to_string()),
    })?;
    Ok(out)
}

/// Why serialization failed: the value (nothing was written) or the writer.
#[derive(Debug)]
pub(crate) enum SerializeError {
    Value(String),
    Io(io::Error),
}

impl From<CheckError> for SerializeError {
    fn from(e: CheckError) -> Self {
        SerializeError::Value(e.0)
    }
}

/// Parse a document's bytes, classifying failures:
/// an empty file or a JSON syntax error is [`ErrorKind::Corrupt`] (with the position);
/// valid JSON that does not fit `T` is [`ErrorKind::Serialize`].
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<T> {
    let reserved = |msg: String| {
        Error::new(
            ErrorKind::Serialize,
            format!("cannot read {}: {msg}", path.display()),
        )
        .with_path(path)
    };
    let value = serde_json::from_slice(bytes).map_err(|e| {
        // A type error can come before a syntax error further on (`null x` read as a
        // struct): damage wins, so check the syntax of the whole file.
        let e = match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Err(syntax) if !is_corruption(&e) && is_corruption(&syntax) => syntax,
            // Valid JSON: a reserved key followed by other keys of its object fails
            // serde_json's read of the number (or raw text) it takes the object for,
            // with a syntax error (`trailing comma`). The file is not damaged.
            Ok(_) => match reserved_key_in(bytes) {
                Some(msg) => return reserved(msg),
                None => e,
            },
            Err(_) => e,
        };
        parse_error(e, bytes.is_empty(), path)
    })?;
    if let Some(msg) = reserved_key_in(bytes) {
        return Err(reserved(msg));
    }
    Ok(value)
}

/// Parse stored JSON text (a document's or a kept version's bytes, read raw) into `T`
/// as statefile's own reads do: an empty file or a syntax error is
/// [`ErrorKind::Corrupt`]; valid JSON that does not fit `T`, or that holds
/// [`RESERVED_KEY`] (which would read back as a different value), is
/// [`ErrorKind::Serialize`]. Errors name `path`.
///
/// # Errors
/// As above.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<T> {
    parse(bytes, path)
}

/// [`parse`] without the error: the value if `bytes` parse as a `T` that reads back as
/// the text says (no [`RESERVED_KEY`]).
pub(crate) fn parse_ok<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes)
        .ok()
        .filter(|_| reserved_key_in(bytes).is_none())
}

/// Check that a stream is one complete JSON value, without building it.
pub(crate) fn validate_reader(r: impl io::Read) -> std::result::Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_reader(io::BufReader::with_capacity(64 * 1024, r));
    serde::de::IgnoredAny::deserialize(&mut de)?;
    de.end()
}

use serde::Deserialize;

/// Whether a parse failure means the file is damaged (as opposed to a type mismatch).
pub(crate) fn is_corruption(e: &serde_json::Error) -> bool {
    matches!(
        e.classify(),
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof
    )
}

pub(crate) fn corrupt_info(e: &serde_json::Error, empty: bool) -> CorruptInfo {
    if empty {
        CorruptInfo {
            line: 0,
            column: 0,
            reason: "the file is empty".into(),
            backup_exists: false,
        }
    } else {
        CorruptInfo {
            line: e.line(),
            column: e.column(),
            reason: strip_position(&e.to_string()),
            backup_exists: false,
        }
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

pub(crate) fn parse_error(e: serde_json::Error, empty: bool, path: &Path) -> Error {
    if is_corruption(&e) {
        let info = corrupt_info(&e, empty);
        let msg = if empty {
            format!("{} is corrupt: the file is empty", path.display())
        } else {
            format!(
                "{} is corrupt: {} at line {} column {}",
                path.display(),
                info.reason,
                info.line,
                info.column
            )
        };
        Error::new(ErrorKind::Corrupt, msg)
            .with_path(path)
            .with_corrupt(info)
            .with_source(e)
    } else {
        Error::new(
            ErrorKind::Serialize,
            format!(
                "{} holds valid JSON that does not fit the expected type: {e}",
                path.display()
            ),
        )
        .with_path(path)
        .with_source(e)
    }
}

/// The length of `v` as compact JSON (what `serde_json::to_vec` would produce) and its
/// nesting depth (a scalar is 0, `[]` is 1, `[[1]]` is 2), in one walk. A loop over an
/// explicit stack, so a value of any depth is measured without recursion.
pub(crate) fn measure(v: &Value) -> (usize, usize) {
    let mut len = 0usize;
    let mut depth = 0usize;
    let mut pending: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((v, level)) = pending.pop() {
        match v {
            Value::Array(a) => {
                depth = depth.max(level + 1);
                len += 2 + a.len().saturating_sub(1);
                pending.extend(a.iter().map(|e| (e, level + 1)));
            }
            Value::Object(m) => {
                depth = depth.max(level + 1);
                len += 2 + m.len().saturating_sub(1);
                for (k, e) in m {
                    len += string_len(k) + 1;
                    pending.push((e, level + 1));
                }
            }
            scalar => len += scalar_len(scalar),
        }
    }
    (len, depth)
}

/// The compact JSON length of a scalar (for a container: 0).
fn scalar_len(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => {
            let mut count = Count(0);
            let _ = fmt::Write::write_fmt(&mut count, format_args!("{n}"));
            count.0
        }
        Value::String(s) => string_len(s),
        Value::Array(_) | Value::Object(_) => 0,
    }
}

/// The length of `s` as a JSON string with serde_json's escapes, quotes included.
pub(crate) fn string_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum::<usize>()
}

struct Count(usize);

impl fmt::Write for Count {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// Whether two numbers are equal in value, as RFC 6902's `test` compares them: `1`,
/// `1.0`, `10e-1` and `0.1e1` are equal; so are `0` and `-0`. Exact for numbers of any
/// length (they are compared as decimals, never through a float); only when an exponent
/// has more than 30 significant digits are the texts compared instead.
pub(crate) fn numbers_equal(a: &Number, b: &Number) -> bool {
    let (a, b) = (a.to_string(), b.to_string());
    match (Decimal::parse(&a), Decimal::parse(&b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The `f64` that stands for the JSON number `n` without changing it, if there is one:
/// a finite double whose shortest round-trip form (what JavaScript's `JSON.stringify`,
/// Python's `repr` and serde_json print) is the same number as `n`. So a program that
/// holds numbers as doubles reads `n` as this and writes back the number it read.
///
/// `None` for a number a double would change: more digits than it keeps
/// (`0.30000000000000000001`, `9007199254740993`, `1152921504606846976`, which prints as
/// `1152921504606847000`), or beyond its range (`1e-400`, `1e400`). `1.0`, `1e2`, `0.1`
/// and `-0` have one. For bindings to languages whose numbers are doubles: the cost is
/// one parse of the number's text, and a formatting only for numbers of more than 15
/// significant digits or at the ends of the range. Never allocates or loops in
/// proportion to an exponent, however large.
///
/// ```
/// use serde_json::Number;
/// let n = |s: &str| s.parse::<Number>().unwrap();
/// assert_eq!(statefile::exact_f64(&n("0.1")), Some(0.1));
/// assert_eq!(statefile::exact_f64(&n("1e2")), Some(100.0));
/// assert_eq!(statefile::exact_f64(&n("9007199254740993")), None);
/// # #[cfg(feature = "exact-numbers")]
/// assert_eq!(statefile::exact_f64(&n("1e-400")), None);
/// ```
pub fn exact_f64(n: &Number) -> Option<f64> {
    let text = n.to_string();
    let decimal = Decimal::parse(&text)?;
    let f: f64 = text.parse().ok().filter(|f: &f64| f.is_finite())?;
    // Up to 15 significant digits, in the range of normal doubles, a decimal is the
    // shortest form of its nearest double (DBL_DIG): no need to print it.
    if decimal.count <= 15 && (-307..=307).contains(&decimal.exponent) {
        return Some(f);
    }
    let shortest = format!("{f:e}");
    (Decimal::parse(&shortest)? == decimal).then_some(f)
}

/// A JSON number's value, borrowing its text: the sign, the significant digits (the
/// `count` digits of `int` followed by `frac`, from index `first`: no leading or
/// trailing zeros) and the power of ten of the first of them. Zero has no digits and
/// no sign.
struct Decimal<'a> {
    negative: bool,
    int: &'a str,
    frac: &'a str,
    first: usize,
    count: usize,
    exponent: i128,
}

impl<'a> Decimal<'a> {
    /// `text` is a JSON number. `None` if its exponent has more than 30 significant
    /// digits (and it is not zero): a value no document can bring back into range.
    fn parse(text: &'a str) -> Option<Decimal<'a>> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, "0"),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits = || int.bytes().chain(frac.bytes());
        let Some(first) = digits().position(|d| d != b'0') else {
            return Some(Decimal {
                negative: false,
                int: "",
                frac: "",
                first: 0,
                count: 0,
                exponent: 0,
            });
        };
        let last = int.len() + frac.len() - 1 - digits().rev().position(|d| d != b'0')?;
        let exp_digits = exp.trim_start_matches(['+', '-']).trim_start_matches('0');
        if exp_digits.len() > 30 {
            return None;
        }
        let mut exponent: i128 = if exp_digits.is_empty() {
            0
        } else {
            exp_digits.parse().ok()?
        };
        if exp.starts_with('-') {
            exponent = -exponent;
        }
        // The first significant digit's power of ten: int.len() - 1 - first.
        exponent += i128::try_from(int.len()).ok()? - 1 - i128::try_from(first).ok()?;
        Some(Decimal {
            negative,
            int,
            frac,
            first,
            count: last + 1 - first,
            exponent,
        })
    }

    fn digits(&self) -> impl Iterator<Item = u8> + 'a {
        self.int
            .bytes()
            .chain(self.frac.bytes())
            .skip(self.first)
            .take(self.count)
    }
}

impl PartialEq for Decimal<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.negative == other.negative
            && self.exponent == other.exponent
            && self.count == other.count
            && self.digits().eq(other.digits())
    }
}

/// Equality of JSON values as RFC 6902's `test` defines it: numbers by value (see
/// [`numbers_equal`]), strings, arrays and objects member by member (objects in any
/// order). Recursive, so only for values within [`MAX_DEPTH`].
pub(crate) fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| values_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Refuse values that would not read back: non-finite floats and nesting deeper than
/// [`MAX_DEPTH`]. Walks the value once without producing output.
pub(crate) fn check<T: Serialize + ?Sized>(value: &T) -> std::result::Result<(), CheckError> {
    value.serialize(Checker {
        depth: 0,
        key: false,
    })
}

#[derive(Debug)]
pub(crate) struct CheckError(String);

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckError {}

impl ser::Error for CheckError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        CheckError(msg.to_string())
    }
}

#[derive(Clone, Copy)]
struct Checker {
    depth: usize,
    /// Checking an object's key.
    key: bool,
}

impl Checker {
    fn nest(self) -> std::result::Result<Checker, CheckError> {
        if self.depth >= MAX_DEPTH {
            Err(CheckError(format!(
                "the value is nested deeper than {MAX_DEPTH} levels, which could not be read back"
            )))
        } else {
            Ok(Checker {
                depth: self.depth + 1,
                key: false,
            })
        }
    }
}

fn finite(v: f64) -> std::result::Result<(), CheckError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(CheckError(format!(
            "the value contains the number {v}, which JSON cannot represent"
        )))
    }
}

type R = std::result::Result<(), CheckError>;

impl ser::Serializer for Checker {
    type Ok = ();
    type Error = CheckError;
    type SerializeSeq = Checker;
    type SerializeTuple = Checker;
    type SerializeTupleStruct = Checker;
    type SerializeTupleVariant = Checker;
    type SerializeMap = Checker;
    type SerializeStruct = Checker;
    type SerializeStructVariant = Checker;

    fn serialize_bool(self, _: bool) -> R {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> R {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> R {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> R {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> R {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> R {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> R {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> R {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> R {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> R {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> R {
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> R {
        finite(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> R {
        finite(v)
    }
    fn serialize_char(self, _: char) -> R {
        Ok(())
    }
    fn serialize_str(self, v: &str) -> R {
        if self.key && is_reserved_key(v) {
            return Err(CheckError(reserved_key_message(v)));
        }
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> R {
        // serde_json writes bytes as an array of numbers: one level of nesting.
        self.nest().map(|_| ())
    }
    fn serialize_none(self) -> R {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        v: &T,
    ) -> R {
        v.serialize(self.nest()?)
    }
    fn serialize_seq(self, _: Option<usize>) -> std::result::Result<Checker, CheckError> {
        self.nest()
    }
    fn serialize_tuple(self, _: usize) -> std::result::Result<Checker, CheckError> {
        self.nest()
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Checker, CheckError> {
        self.nest()
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Checker, CheckError> {
        self.nest()?.nest()
    }
    fn serialize_map(self, _: Option<usize>) -> std::result::Result<Checker, CheckError> {
        self.nest()
    }
    fn serialize_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> std::result::Result<Checker, CheckError> {
        // An exact number (serde_json's `arbitrary_precision`) comes as a struct of one
        // string: a scalar in the JSON, not a level of nesting.
        if name == EXACT_NUMBER {
            return Ok(self);
        }
        self.nest()
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Checker, CheckError> {
        self.nest()?.nest()
    }
}

/// The compound serializers other than maps: each element or field is checked in turn
/// (its nesting was counted when the compound began).
macro_rules! check_each {
    ($($trait:ident :: $method:ident ($($name:ty)?)),* $(,)?) => {$(
        impl ser::$trait for Checker {
            type Ok = ();
            type Error = CheckError;
            fn $method<T: Serialize + ?Sized>(&mut self, $(_: $name,)? v: &T) -> R {
                v.serialize(*self)
            }
            fn end(self) -> R {
                Ok(())
            }
        }
    )*};
}

check_each!(
    SerializeSeq::serialize_element(),
    SerializeTuple::serialize_element(),
    SerializeTupleStruct::serialize_field(),
    SerializeTupleVariant::serialize_field(),
    SerializeStruct::serialize_field(&'static str),
    SerializeStructVariant::serialize_field(&'static str),
);

impl ser::SerializeMap for Checker {
    type Ok = ();
    type Error = CheckError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> R {
        k.serialize(Checker { key: true, ..*self })
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(*self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The key serde_json (exact numbers) reads as a number, and the one it reads as
    /// raw text (with `raw_value`, on in the Python package), are found as keys, however
    /// escaped and wherever nested, and nowhere else; `parse` then refuses the text
    /// instead of returning a different value, and writes refuse an object holding one.
    #[test]
    fn the_reserved_key_is_refused_not_read_as_a_number() {
        let hits = [
            r#"{"$serde_json::private::Number": "12"}"#,
            r#"{"a": [1, {"b": {"$serde_json::private::Number" : "1e999999"}}]}"#,
            "{\"\\u0024serde_json::private::Numbe\\u0072\"\n:\"1\"}",
            r#"{"x": "\u00e9", "\u0024serde_json\u003a:private::Number": "5"}"#,
            // Followed by other keys: serde_json's read of the number fails with a syntax
            // error (`trailing comma`), which was reported as a damaged file.
            r#"{"$serde_json::private::Number": "12", "other": 1}"#,
            r#"[{"\u0024serde_json::private::Number": "12", "other": 1}]"#,
            // Read as the JSON text `[1, 2]` where serde_json has `raw_value`.
            r#"{"$serde_json::private::RawValue": "[1, 2]"}"#,
            r#"{"a": {"\u0024serde_json::private::RawValu\u0065": "5", "b": 1}}"#,
        ];
        for text in hits {
            assert!(reserved_key_in(text.as_bytes()).is_some(), "{text}");
            let e = parse::<Value>(text.as_bytes(), Path::new("d.json")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Serialize, "{text}: {e}");
            assert!(e.to_string().contains("$serde_json::private::"), "{e}");
        }
        let misses = [
            r#"{"k": "$serde_json::private::RawValue"}"#,
            r#"{"$serde_json::private::RawValues": 1, "$serde_json::private::Num": 2}"#,
            r#"{"k": "$serde_json::private::Number"}"#,
            r#"["$serde_json::private::Number", 1.5, {"n": 12}]"#,
            r#"{"\u00e9t\u00e9": "\u2603", "$serde_json::private::Numbers": 1}"#,
            r#"{"a\"b": "c\\", "d": "\\u0024"}"#,
            "12",
        ];
        for text in misses {
            assert_eq!(reserved_key_in(text.as_bytes()), None, "{text}");
            parse::<Value>(text.as_bytes(), Path::new("d.json")).unwrap();
        }
        // Fed in pieces (a file streamed by verify), at every split and byte by byte,
        // the scan says what it says of the whole text.
        for (text, hit) in hits
            .iter()
            .map(|t| (t, true))
            .chain(misses.iter().map(|t| (t, false)))
        {
            let b = text.as_bytes();
            for cut in 0..=b.len() {
                let mut scan = ReservedScan::default();
                scan.feed(&b[..cut]);
                scan.feed(&b[cut..]);
                assert_eq!(scan.found().is_some(), hit, "{text} cut at {cut}");
            }
            let mut scan = ReservedScan::default();
            for byte in b.chunks(1) {
                scan.feed(byte);
            }
            assert_eq!(scan.found().is_some(), hit, "{text} byte by byte");
        }
        // A string longer than the key can be escaped is dropped, not kept whole.
        let long = format!("{{\"{}\": 1, \"k\": \"\\u00e9\"}}", "x".repeat(100_000));
        let mut scan = ReservedScan::default();
        scan.feed(long.as_bytes());
        assert!(scan.found().is_none() && scan.raw.capacity() <= 4 * ReservedScan::RAW_MAX);
        let mut m = serde_json::Map::new();
        m.insert(RESERVED_KEY.to_string(), Value::String("12".into()));
        let object = Value::Array(vec![Value::Object(m)]);
        let e = to_vec(&object, Format::Pretty).unwrap_err();
        assert!(e.to_string().contains(RESERVED_KEY), "{e}");
        let raw = serde_json::json!({"a": {"$serde_json::private::RawValue": "[1]"}});
        let e = to_vec(&raw, Format::Compact).unwrap_err();
        assert!(e.to_string().contains(RAW_VALUE), "{e}");
        // Numbers (which serde_json serializes through that name) still pass.
        to_vec(&serde_json::json!({"n": 12, "f": 1.5}), Format::Compact).unwrap();
    }

    fn nested(depth: usize) -> Value {
        let mut v = Value::Null;
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn the_deepest_value_we_write_is_one_we_can_read() {
        let ok = to_vec(&nested(MAX_DEPTH), Format::Compact).unwrap();
        serde_json::from_slice::<Value>(&ok).unwrap();
        let too_deep = serde_json::to_vec(&nested(MAX_DEPTH + 1)).unwrap();
        assert!(serde_json::from_slice::<Value>(&too_deep).is_err());
        let e = to_vec(&nested(MAX_DEPTH + 1), Format::Compact).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Serialize);
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        #[derive(serde::Serialize)]
        struct S {
            x: f64,
        }
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let e = to_vec(&S { x }, Format::Pretty).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Serialize);
        }
        assert_eq!(
            to_vec(&S { x: 1.5 }, Format::Compact).unwrap(),
            b"{\"x\":1.5}\n"
        );
    }

    #[test]
    fn parse_errors_are_classified() {
        let p = Path::new("/d/a.json");
        let e = parse::<Value>(b"", p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("empty"), "{e}");
        let e = parse::<Value>(b"{\n  \"a\": [1,", p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(e.corrupt_info().unwrap().line, 2);
        let e = parse::<Value>(b"\xff\xfe", p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let e = parse::<Vec<u32>>(b"{\"a\":1}", p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Serialize);
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = parse::<Value>(deep.as_bytes(), p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }

    fn number(s: &str) -> Number {
        s.parse().unwrap()
    }

    #[test]
    fn numbers_are_equal_by_value() {
        let same = [
            ("1", "1.0"),
            ("1", "10e-1"),
            ("1", "0.1e1"),
            ("100", "1E2"),
            ("0", "-0"),
            ("0", "0e99999999999999999999999999999999999999"),
            ("-1.50", "-15e-1"),
            ("1e+0000000000000000000000000000000000000001", "10"),
            (
                "123456789012345678901234567890",
                "1.2345678901234567890123456789e29",
            ),
        ];
        for (a, b) in same {
            assert!(numbers_equal(&number(a), &number(b)), "{a} = {b}");
        }
        assert!(!numbers_equal(&number("1"), &number("-1")));
        // Differences a float would lose.
        #[cfg(feature = "exact-numbers")]
        for (a, b) in [
            ("1", "1.000000000000000000000000001"),
            ("1e-400", "0"),
            ("1e-400", "1e-401"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567891",
            ),
        ] {
            assert!(!numbers_equal(&number(a), &number(b)), "{a} != {b}");
        }
    }

    #[test]
    fn exact_f64_is_the_double_that_writes_back_the_same_number() {
        let exact = [
            ("0", 0.0),
            ("1.0", 1.0),
            ("1E2", 100.0),
            ("0.1", 0.1),
            ("-2.5e-3", -2.5e-3),
            ("9007199254740992", 9_007_199_254_740_992.0),
            ("100000000000000000000", 1e20),
            ("5e-324", 5e-324),
            ("1.7976931348623157e308", f64::MAX),
            ("0.30000000000000004", 0.300_000_000_000_000_04),
            ("0e999999999999999999999999999999999999999", 0.0),
        ];
        for (text, f) in exact {
            assert_eq!(exact_f64(&number(text)), Some(f), "{text}");
        }
        let neg_zero = exact_f64(&number("-0.0")).unwrap();
        assert!(neg_zero == 0.0 && neg_zero.is_sign_negative());
        for text in [
            "9007199254740993",
            "-9007199254740993",
            "1152921504606846976",
        ] {
            assert_eq!(exact_f64(&number(text)), None, "{text}");
        }
        #[cfg(feature = "exact-numbers")]
        for text in [
            "0.30000000000000000001",
            "1e-400",
            "2e-324",
            "1e400",
            "1.7976931348623159e308",
            "123456789012345678901234567890",
            "1e999999999",
            "-1e-99999999999999999999999999999999999999999",
        ] {
            assert_eq!(exact_f64(&number(text)), None, "{text}");
        }
    }

    // Exponents are never looped over or expanded: a number of a few bytes that means
    // 10^(10^40) costs what its text costs (a regression would not finish).
    #[cfg(feature = "exact-numbers")]
    #[test]
    fn huge_exponents_and_long_numbers_cost_their_length() {
        let huge = format!("1e{}", "9".repeat(40));
        assert!(numbers_equal(&number(&huge), &number(&huge)));
        assert_eq!(exact_f64(&number(&huge)), None);
        assert_eq!(exact_f64(&number("1e999999999")), None);
        let long = format!("0.{}1", "0".repeat(1_000_000));
        assert_eq!(exact_f64(&number(&long)), None);
        let digits = "7".repeat(1_000_000);
        assert!(!numbers_equal(
            &number(&digits),
            &number(&format!("{digits}1"))
        ));
    }

    #[test]
    fn pretty_is_two_space_with_newline_and_keeps_key_order() {
        let v: Value = serde_json::from_str(r#"{"z":1,"a":{"y":2,"b":3}}"#).unwrap();
        let out = String::from_utf8(to_vec(&v, Format::Pretty).unwrap()).unwrap();
        assert_eq!(
            out,
            "{\n  \"z\": 1,\n  \"a\": {\n    \"y\": 2,\n    \"b\": 3\n  }\n}\n"
        );
    }
}
