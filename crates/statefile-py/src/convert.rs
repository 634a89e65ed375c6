//! Python objects to JSON values and back.
//!
//! Writing: a value is checked completely before any file is touched. What JSON cannot
//! hold exactly is refused with a `TypeError` (the wrong kind of object: a set, bytes, a
//! non-string key, any other class) or a `ValueError` (the right kind, a value JSON
//! cannot hold: NaN, an infinity, a lone surrogate, a cycle, nesting deeper than the
//! reader accepts, an integer the JSON number type cannot hold exactly), naming the
//! place as a JSON Pointer. Nothing is converted silently: `json.dumps` turns a `1` key
//! into `"1"` and NaN into `NaN`; here both are errors.
//!
//! Reading: objects keep their key order (dicts are ordered), integers stay integers.

use std::fmt::Write as _;
use std::sync::OnceLock;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// Why a value cannot be stored, and where (pointer segments, innermost first).
struct Refusal {
    type_error: bool,
    what: String,
    path: Vec<String>,
}

impl Refusal {
    fn type_error(what: String) -> Refusal {
        Refusal {
            type_error: true,
            what,
            path: Vec::new(),
        }
    }

    fn value_error(what: String) -> Refusal {
        Refusal {
            type_error: false,
            what,
            path: Vec::new(),
        }
    }

    fn at(mut self, segment: String) -> Refusal {
        self.path.push(segment);
        self
    }

    fn into_pyerr(self) -> PyErr {
        let segments: Vec<String> = self
            .path
            .iter()
            .rev()
            .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
            .collect();
        // A pointer 128 levels deep says less than its ends and its depth.
        let place = if segments.len() > 12 {
            format!(
                "{}/.../{} ({} levels down)",
                segments[..4].concat(),
                segments[segments.len() - 4..]
                    .concat()
                    .trim_start_matches('/'),
                segments.len()
            )
        } else {
            segments.concat()
        };
        let msg = if place.is_empty() {
            format!("cannot store the value as JSON: {}", self.what)
        } else {
            format!("cannot store the value as JSON: {} at {place}", self.what)
        };
        if self.type_error {
            PyTypeError::new_err(msg)
        } else {
            PyValueError::new_err(msg)
        }
    }
}

/// Convert `obj` to a JSON value, refusing anything that would not read back as given.
pub fn to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    let mut open = Vec::new();
    from_py(obj, 0, &mut open).map_err(|r| match r {
        Failure::Refused(r) => r.into_pyerr(),
        Failure::Python(e) => e,
    })
}

enum Failure {
    Refused(Refusal),
    /// Python itself raised (e.g. `__index__` of an int subclass).
    Python(PyErr),
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Failure::Python(e)
    }
}

impl Failure {
    fn at(self, segment: String) -> Failure {
        match self {
            Failure::Refused(r) => Failure::Refused(r.at(segment)),
            other => other,
        }
    }
}

fn refuse_type(what: String) -> Failure {
    Failure::Refused(Refusal::type_error(what))
}

fn refuse_value(what: String) -> Failure {
    Failure::Refused(Refusal::value_error(what))
}

/// `open` holds the containers on the path from the root to `obj` (by identity), so a
/// container that contains itself is reported as a cycle rather than walked forever.
fn from_py(obj: &Bound<'_, PyAny>, depth: usize, open: &mut Vec<usize>) -> Result<Value, Failure> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(string(s)?));
    }
    if obj.is_instance_of::<PyInt>() {
        return integer(obj).map(Value::Number);
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let x = f.value();
        return match Number::from_f64(x) {
            Some(n) => Ok(Value::Number(n)),
            None => Err(refuse_value(format!(
                "{} is not a JSON number (JSON has no NaN or infinity)",
                float_name(x)
            ))),
        };
    }
    let is_dict = obj.is_instance_of::<PyDict>();
    let is_list = obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>();
    if !is_dict && !is_list {
        return Err(refuse_type(unsupported(obj)));
    }
    let id = obj.as_ptr() as usize;
    if open.contains(&id) {
        return Err(refuse_value(format!(
            "circular reference: this {} contains itself",
            type_name(obj)
        )));
    }
    if depth >= statefile::MAX_DEPTH {
        return Err(refuse_value(format!(
            "nested deeper than {} levels, which the reader refuses",
            statefile::MAX_DEPTH
        )));
    }
    open.push(id);
    let out = if is_dict {
        let d = obj.cast::<PyDict>().map_err(PyErr::from)?;
        let mut map = Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = match k.cast::<PyString>() {
                Ok(s) => string(s).map_err(|f| f.at(s.to_string_lossy().into_owned()))?,
                Err(_) => {
                    return Err(refuse_type(format!(
                        "the key {} ({}) is not a string (JSON object keys are strings)",
                        short_repr(&k),
                        type_name(&k)
                    )));
                }
            };
            let value = from_py(&v, depth + 1, open).map_err(|f| f.at(key.clone()))?;
            map.insert(key, value);
        }
        Value::Object(map)
    } else {
        let mut items = Vec::with_capacity(obj.len().unwrap_or(0));
        for (i, v) in obj.try_iter()?.enumerate() {
            items.push(from_py(&v?, depth + 1, open).map_err(|f| f.at(i.to_string()))?);
        }
        Value::Array(items)
    };
    open.pop();
    Ok(out)
}

fn string(s: &Bound<'_, PyString>) -> Result<String, Failure> {
    match s.to_str() {
        Ok(t) => Ok(t.to_owned()),
        Err(_) => {
            let text = s.to_string_lossy();
            let at = text.chars().position(|c| c == '\u{fffd}').unwrap_or(0);
            Err(refuse_value(format!(
                "the string {} holds a lone surrogate (at index {at}), which UTF-8 files cannot hold",
                short_repr(s.as_any())
            )))
        }
    }
}

/// An int (or a subclass, like `IntEnum` or `bool`'s siblings) as an exact JSON number.
fn integer(obj: &Bound<'_, PyAny>) -> Result<Number, Failure> {
    if let Ok(i) = obj.extract::<i64>() {
        return Ok(Number::from(i));
    }
    if let Ok(u) = obj.extract::<u64>() {
        return Ok(Number::from(u));
    }
    // Beyond 64 bits: exact only where serde_json keeps numbers as text
    // (`arbitrary_precision`); otherwise it would become a float, so refuse.
    let py = obj.py();
    let digits: String = py
        .get_type::<PyInt>()
        .call_method1("__repr__", (obj,))?
        .extract()?;
    match digits.parse::<Number>() {
        Ok(n) if n.to_string() == digits => Ok(n),
        _ => Err(refuse_value(format!(
            "the integer {} does not fit in 64 bits, and this build of statefile stores \
             only 64-bit integers exactly",
            abbreviate(&digits)
        ))),
    }
}

fn float_name(x: f64) -> &'static str {
    if x.is_nan() {
        "NaN"
    } else if x > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

fn unsupported(obj: &Bound<'_, PyAny>) -> String {
    let name = type_name(obj);
    let hint = match name.as_str() {
        "set" | "frozenset" => " (use a list)",
        "bytes" | "bytearray" => " (decode it to a str, or store base64 text)",
        "Decimal" => " (use a float, an int or a str)",
        _ => "",
    };
    format!("an object of type {name} is not JSON{hint}")
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "?".into(), |n| n.to_string())
}

fn short_repr(obj: &Bound<'_, PyAny>) -> String {
    let r = obj
        .repr()
        .map_or_else(|_| "?".into(), |r| r.to_string_lossy().into_owned());
    abbreviate(&r)
}

fn abbreviate(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(MAX).collect();
    let _ = write!(out, "... ({} characters)", s.chars().count());
    out
}

/// A JSON value as Python objects: dicts in key order, ints as ints.
pub fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => number(py, n)?,
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

fn number<'py>(py: Python<'py>, n: &Number) -> PyResult<Bound<'py, PyAny>> {
    if let Some(i) = n.as_i64() {
        return Ok(i.into_pyobject(py)?.into_any());
    }
    if let Some(u) = n.as_u64() {
        return Ok(u.into_pyobject(py)?.into_any());
    }
    let text = n.to_string();
    if !text.contains(['.', 'e', 'E']) {
        // An integer beyond 64 bits, kept as text (`arbitrary_precision`).
        return py.get_type::<PyInt>().call1((text,));
    }
    match n.as_f64() {
        Some(x) => Ok(PyFloat::new(py, x).into_any()),
        None => Err(PyValueError::new_err(format!(
            "the number {} cannot be represented as a float",
            abbreviate(&text)
        ))),
    }
}

/// Whether this build's JSON numbers keep integers beyond 64 bits exactly (serde_json's
/// `arbitrary_precision`). Without it, the parser turns such an integer into the
/// nearest float, and what Python got would not be what the file says.
pub fn big_integers_kept() -> bool {
    static KEPT: OnceLock<bool> = OnceLock::new();
    *KEPT.get_or_init(|| {
        const BIG: &str = "123456789012345678901234567890";
        serde_json::from_str::<Value>(BIG).is_ok_and(|v| v.as_number().is_some_and(|n| !n.is_f64()))
    })
}

/// Whether `v` holds a float anywhere (where a big integer may have become one).
pub fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => !n.is_i64() && !n.is_u64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

/// The first integer literal in the JSON text `json` that does not fit in 64 bits,
/// with its line and column (1-based). Only number tokens are looked at: strings are
/// skipped, escapes included.
pub fn first_big_integer(json: &[u8]) -> Option<(String, usize, usize)> {
    let (mut i, mut line, mut line_start) = (0, 1, 0);
    while i < json.len() {
        match json[i] {
            b'"' => {
                i += 1;
                while i < json.len() {
                    match json[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            b'\n' => {
                i += 1;
                line += 1;
                line_start = i;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < json.len()
                    && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = std::str::from_utf8(&json[start..i]).unwrap_or("");
                let integer = !token.contains(['.', 'e', 'E']);
                if integer && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                    return Some((token.to_owned(), line, start - line_start + 1));
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Refuse a value read from `doc` if the file held an integer this build would have
/// handed back as a different number. Only where that can have happened (no
/// `arbitrary_precision`, and a float in the value), at the cost of one more read.
/// `version` is the version the value was read at (`None` under the document's lock,
/// where it cannot change): `Ok(false)` if the file changed since (read again).
pub fn integers_intact(
    doc: &statefile::Doc<Value>,
    value: &Value,
    version: Option<&statefile::Version>,
) -> Result<bool, statefile::Error> {
    if big_integers_kept() || !has_float(value) {
        return Ok(true);
    }
    let raw = doc.read_bytes()?;
    if version.is_some_and(|v| v != &raw.version) {
        return Ok(false);
    }
    match first_big_integer(&raw.value) {
        None => Ok(true),
        Some((n, line, column)) => Err(statefile::Error::new(
            statefile::ErrorKind::Serialize,
            format!(
                "{} holds the integer {} (line {line}, column {column}), which does not fit in \
                 64 bits: this build of statefile reads integers exactly only up to 64 bits, and \
                 will not hand back a different number",
                doc.path().display(),
                abbreviate(&n)
            ),
        )),
    }
}
