//! Python objects to JSON values and back.
//!
//! Writing: a value is checked completely before any file is touched. What JSON cannot
//! hold exactly is refused with a `TypeError` (the wrong kind of object: a set, bytes, a
//! non-string key, any other class) or a `ValueError` (the right kind, a value JSON
//! cannot hold: NaN, an infinity, a lone surrogate, a cycle, two keys of one dict with
//! the same text (str subclasses with their own `__eq__`), nesting deeper than the
//! reader accepts, an integer the JSON number type cannot hold exactly), naming the
//! place as a JSON Pointer. Nothing is converted silently: `json.dumps` turns a `1` key
//! into `"1"` and NaN into `NaN`; here both are errors.
//!
//! Numbers are exact both ways (the library keeps each number's text). An int is
//! written as its digits, whatever its size; a float as the shortest text that reads
//! back as the same float; a `decimal.Decimal` as its own digits. Read back, an integer
//! is an int, and any other number a float when the float is the same number (what
//! `repr` writes back is what was read: `1.0`, `0.1`, `1e2`), else a `decimal.Decimal`
//! of its exact digits (`1e-400`, `1e400`, `0.30000000000000000001`), where Python's
//! `json` module would round it.
//!
//! Reading: objects keep their key order (dicts are ordered), integers stay integers.

use std::fmt::Write as _;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};
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
    walk(obj, &mut Walk::new(true))
}

/// Check `obj` as [`to_json`] does (the same errors), without building the value, and
/// say whether `obj` may stand in for `to_py` of that value: whether every object in
/// it is of the exact type `to_py` makes (a `dict`, `list`, `str`, `int`, `float`,
/// `bool` or `None`) and nothing outside refers to any of its dicts and lists (`obj`
/// itself is referred to by the caller's one reference only). Then nobody can change
/// it but through `obj`, and using it again (or serializing it with [`Objects`]) is
/// indistinguishable from converting the value back, without the cost.
pub fn check_reusable(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let mut w = Walk::new(false);
    w.clean = refs(obj) == 1;
    walk(obj, &mut w)?;
    Ok(w.clean)
}

fn walk(obj: &Bound<'_, PyAny>, w: &mut Walk) -> PyResult<Value> {
    from_py(obj, 0, w).map_err(|r| match r {
        Failure::Refused(r) => r.into_pyerr(),
        Failure::Python(e) => e,
    })
}

/// The state of a walk from Python objects to JSON.
struct Walk {
    /// Build the value; otherwise only check (and return placeholders).
    build: bool,
    /// The containers on the path from the root to the object at hand (by identity),
    /// so a container that contains itself is reported as a cycle rather than walked
    /// forever.
    open: Vec<usize>,
    /// So far, the objects may stand in for their value converted back (see
    /// [`check_reusable`]).
    clean: bool,
}

impl Walk {
    fn new(build: bool) -> Walk {
        Walk {
            build,
            open: Vec::new(),
            clean: false,
        }
    }
}

/// The reference count of `obj`. pyo3 deprecates its accessor in favour of the raw
/// `Py_REFCNT`, which this crate (no unsafe code) cannot call.
#[allow(deprecated)]
fn refs(obj: &Bound<'_, PyAny>) -> isize {
    obj.get_refcnt()
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

/// A dict or list below the root, held by its container and by the walk's own handle
/// to it, is referred to from nowhere else when it has exactly this many references.
const INNER_REFS: isize = 2;

fn from_py(obj: &Bound<'_, PyAny>, depth: usize, walk: &mut Walk) -> Result<Value, Failure> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        walk.clean &= obj.is_exact_instance_of::<PyString>();
        let text = string(s)?;
        return Ok(if walk.build {
            Value::String(text.to_owned())
        } else {
            Value::Null
        });
    }
    if obj.is_instance_of::<PyInt>() {
        walk.clean &= obj.is_exact_instance_of::<PyInt>();
        if !walk.build && (obj.extract::<i64>().is_ok() || obj.extract::<u64>().is_ok()) {
            return Ok(Value::Null);
        }
        return integer(obj).map(Value::Number);
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        walk.clean &= obj.is_exact_instance_of::<PyFloat>();
        let x = f.value();
        if !walk.build && x.is_finite() {
            return Ok(Value::Null);
        }
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
        if obj.is_instance(decimal_type(obj.py())?)? {
            walk.clean = false;
            return decimal(obj).map(Value::Number);
        }
        return Err(refuse_type(unsupported(obj)));
    }
    walk.clean &= (obj.is_exact_instance_of::<PyDict>() || obj.is_exact_instance_of::<PyList>())
        && (depth == 0 || refs(obj) == INNER_REFS);
    let id = obj.as_ptr() as usize;
    let open = &mut walk.open;
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
        let mut map = if walk.build {
            Map::with_capacity(d.len())
        } else {
            Map::new()
        };
        for (k, v) in d.iter() {
            let Ok(s) = k.cast::<PyString>() else {
                return Err(refuse_type(format!(
                    "the key {} ({}) is not a string (JSON object keys are strings)",
                    short_repr(&k),
                    type_name(&k)
                )));
            };
            walk.clean &= k.is_exact_instance_of::<PyString>();
            let key = string(s).map_err(|f| f.at(s.to_string_lossy().into_owned()))?;
            if key == statefile::RESERVED_KEY {
                return Err(refuse_value(format!(
                    "the key {key:?} is reserved: the reader would read this dict back as a number"
                )));
            }
            let value = from_py(&v, depth + 1, walk).map_err(|f| f.at(key.to_owned()))?;
            // Only keys of a str subclass with its own `__eq__`/`__hash__` can be two
            // keys of one dict with the same text; a check-only walk leaves them to the
            // conversion (they are not exact strs, so the objects are not reused).
            if walk.build && map.insert(key.to_owned(), value).is_some() {
                return Err(refuse_value(format!(
                    "two keys of this dict are the text {} (a str subclass with its own __eq__ or __hash__), which one JSON object cannot hold",
                    short_repr(&k)
                )));
            }
        }
        Value::Object(map)
    } else {
        let mut items = Vec::with_capacity(if walk.build {
            obj.len().unwrap_or(0)
        } else {
            0
        });
        for (i, v) in obj.try_iter()?.enumerate() {
            let item = from_py(&v?, depth + 1, walk).map_err(|f| f.at(i.to_string()))?;
            if walk.build {
                items.push(item);
            }
        }
        Value::Array(items)
    };
    walk.open.pop();
    Ok(out)
}

fn string<'a>(s: &'a Bound<'_, PyString>) -> Result<&'a str, Failure> {
    match s.to_str() {
        Ok(t) => Ok(t),
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
    // Beyond 64 bits: the digits, kept as text by the library. int's own repr, so a
    // subclass's cannot say something else. It refuses more digits than
    // sys.get_int_max_str_digits() (4300 by default), as json.dumps does.
    let digits: String = obj
        .py()
        .get_type::<PyInt>()
        .call_method1("__repr__", (obj,))
        .map_err(|e| refuse_value(format!("the integer cannot be written in decimal: {e}")))?
        .extract()?;
    exact_text(&digits, "integer")
}

/// `decimal.Decimal`, imported once.
fn decimal_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static DECIMAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    DECIMAL.import(py, "decimal", "Decimal")
}

/// A `decimal.Decimal` (or a subclass) as the JSON number of its digits, exactly.
fn decimal(obj: &Bound<'_, PyAny>) -> Result<Number, Failure> {
    if !obj.call_method0("is_finite")?.is_truthy()? {
        return Err(refuse_value(format!(
            "{} is not a JSON number (JSON has no NaN or infinity)",
            short_repr(obj)
        )));
    }
    let text: String = decimal_type(obj.py())?
        .call_method1("__str__", (obj,))?
        .extract()?;
    exact_text(&text, "Decimal")
}

/// The JSON number of `text` (an int's or a Decimal's digits), kept as given.
fn exact_text(text: &str, what: &str) -> Result<Number, Failure> {
    text.parse::<Number>().map_err(|e| {
        refuse_value(format!(
            "the {what} {} is not a JSON number: {e}",
            abbreviate(text)
        ))
    })
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

/// Python objects [`check_reusable`] accepted, serialized as the JSON value they hold
/// (the same text as serializing their [`to_json`] value), without building that
/// value. Anything else is refused with a serialization error.
pub struct Objects<'a, 'py>(pub &'a Bound<'py, PyAny>);

impl Serialize for Objects<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Nested(self.0, 0).serialize(s)
    }
}

/// An object of [`Objects`] at a depth: bounded, so that objects changed after their
/// check (only reachable then through `gc.get_referrers`, `gc.get_objects` or ctypes,
/// which reference counts cannot see) fail to serialize rather than overflow the stack
/// on a cycle.
struct Nested<'a, 'py>(&'a Bound<'py, PyAny>, usize);

impl Serialize for Nested<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (obj, depth) = (self.0, self.1);
        if obj.is_none() {
            return s.serialize_unit();
        }
        if let Ok(b) = obj.cast::<PyBool>() {
            return s.serialize_bool(b.is_true());
        }
        if let Ok(t) = obj.cast_exact::<PyString>() {
            return s.serialize_str(t.to_str().map_err(S::Error::custom)?);
        }
        if obj.is_exact_instance_of::<PyInt>() {
            if let Ok(i) = obj.extract::<i64>() {
                return s.serialize_i64(i);
            }
            if let Ok(u) = obj.extract::<u64>() {
                return s.serialize_u64(u);
            }
            return match integer(obj) {
                Ok(n) => n.serialize(s),
                Err(_) => Err(S::Error::custom("an integer that is not a JSON number")),
            };
        }
        if let Ok(f) = obj.cast_exact::<PyFloat>() {
            return match Number::from_f64(f.value()) {
                Some(n) => n.serialize(s),
                None => Err(S::Error::custom("a float that is not a JSON number")),
            };
        }
        if depth >= statefile::MAX_DEPTH {
            return Err(S::Error::custom(format!(
                "nested deeper than {} levels, which the reader refuses",
                statefile::MAX_DEPTH
            )));
        }
        if let Ok(d) = obj.cast_exact::<PyDict>() {
            let mut map = s.serialize_map(Some(d.len()))?;
            for (k, v) in d.iter() {
                let k = k.cast_exact::<PyString>().map_err(S::Error::custom)?;
                map.serialize_entry(
                    k.to_str().map_err(S::Error::custom)?,
                    &Nested(&v, depth + 1),
                )?;
            }
            return map.end();
        }
        if let Ok(l) = obj.cast_exact::<PyList>() {
            let mut seq = s.serialize_seq(Some(l.len()))?;
            for v in l.iter() {
                seq.serialize_element(&Nested(&v, depth + 1))?;
            }
            return seq.end();
        }
        Err(S::Error::custom(format!(
            "an object of type {} where only JSON values were expected",
            type_name(obj)
        )))
    }
}

/// A JSON value as Python objects: dicts in key order, ints as ints, other numbers as
/// floats where a float is the same number, else as `decimal.Decimal`s.
pub fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    to_py_at(py, v, &mut Vec::new())
}

/// One step of the path to a value: borrowed, so walking a document allocates nothing
/// for the path (it is spelled out only for the message of a number that fails).
enum Step<'v> {
    Index(usize),
    Key(&'v str),
}

/// `to_py`, with the path to `v` (from the root) for the message when a number cannot
/// be converted. Recursive: a value read from a file nests at most
/// `statefile::MAX_DEPTH` levels.
fn to_py_at<'py, 'v>(
    py: Python<'py>,
    v: &'v Value,
    path: &mut Vec<Step<'v>>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => number(py, n).map_err(|e| {
            let place: String = path
                .iter()
                .map(|s| match s {
                    Step::Index(i) => format!("/{i}"),
                    Step::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
                })
                .collect();
            let err = PyValueError::new_err(format!(
                "cannot read the number {} at {}: {}",
                abbreviate(&n.to_string()),
                if place.is_empty() { "the top" } else { &place },
                e.value(py)
            ));
            err.set_cause(py, Some(e));
            err
        })?,
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                let item = to_py_at(py, item, path);
                path.pop();
                list.append(item?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                path.push(Step::Key(k));
                let item = to_py_at(py, item, path);
                path.pop();
                dict.set_item(k, item?)?;
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
        // An integer beyond 64 bits. int() refuses more digits than
        // sys.get_int_max_str_digits() (4300 by default), as json.loads does.
        return py.get_type::<PyInt>().call1((text,));
    }
    match statefile::exact_f64(n) {
        Some(x) => Ok(PyFloat::new(py, x).into_any()),
        None => decimal_type(py)?.call1((text,)).map_err(|e| {
            // Decimal's exponent stops at about 10^18: beyond, InvalidOperation.
            let err = PyValueError::new_err(
                "its exponent is beyond the range of a Python float and of a decimal.Decimal",
            );
            err.set_cause(py, Some(e));
            err
        }),
    }
}
