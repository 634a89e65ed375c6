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

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt::Write as _;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value};
use statefile::Format;

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
    let walk = Walk::new(false);
    let out = Checked::root(obj, &walk).serialize(serde_json::value::Serializer);
    walk.outcome(out)
}

/// Python objects as the JSON text of their value, made by [`encode`].
pub struct Encoded {
    /// The text, in the format asked for, without a trailing newline: what
    /// serializing [`to_json`]'s value in that format writes.
    pub text: String,
    /// Whether the objects may stand in for `to_py` of that value: every object in
    /// them is of the exact type `to_py` makes (a `dict`, `list`, `str`, `int`,
    /// `float`, `bool` or `None`) and nothing outside refers to any of their dicts and
    /// lists (the root itself is referred to by the caller's one reference only).
    /// Then nobody can change them but through the root, and using them again is
    /// indistinguishable from converting the value back, without the cost.
    pub reusable: bool,
}

/// Check `obj` as [`to_json`] does (the same errors, in the same order) and write its
/// value as JSON text in `format`, in the same walk: no JSON value is built. `size` is
/// the text's expected length, if known (room is made for it at once).
pub fn encode(obj: &Bound<'_, PyAny>, format: Format, size: usize) -> PyResult<Encoded> {
    let walk = Walk::new(refs(obj) == 1);
    let mut out = Vec::with_capacity(size);
    let done = match format {
        Format::Pretty => {
            Checked::root(obj, &walk).serialize(&mut serde_json::Serializer::pretty(&mut out))
        }
        Format::Compact => {
            Checked::root(obj, &walk).serialize(&mut serde_json::Serializer::new(&mut out))
        }
    };
    walk.outcome(done)?;
    let text = String::from_utf8(out).map_err(|e| {
        PyValueError::new_err(format!("statefile: JSON text that is not UTF-8: {e}"))
    })?;
    Ok(Encoded {
        text,
        reusable: walk.clean.get(),
    })
}

/// A walk of Python objects ([`Checked`]): what it found so far.
struct Walk {
    /// The containers on the path from the root to the object at hand (by identity),
    /// so a container that contains itself is reported as a cycle rather than walked
    /// forever.
    open: RefCell<Vec<usize>>,
    /// So far, the objects may stand in for their value converted back (see
    /// [`Encoded::reusable`]).
    clean: Cell<bool>,
    /// Why the walk stopped, when it refused the value (the serializer's own error
    /// carries no more than a message).
    failure: RefCell<Option<Failure>>,
}

impl Walk {
    fn new(clean: bool) -> Walk {
        Walk {
            open: RefCell::new(Vec::new()),
            clean: Cell::new(clean),
            failure: RefCell::new(None),
        }
    }

    /// The object at hand is of the exact type `to_py` makes (or not).
    fn exact(&self, exact: bool) {
        if !exact {
            self.clean.set(false);
        }
    }

    /// Stop the walk with `failure`.
    fn fail<E: ser::Error>(&self, failure: Failure) -> E {
        *self.failure.borrow_mut() = Some(failure);
        E::custom("the value cannot be stored as JSON")
    }

    /// The walk stopped below `segment` (a key or an index): a refusal's place gets it.
    fn below<E>(&self, segment: impl FnOnce() -> String, e: E) -> E {
        if let Some(Failure::Refused(r)) = self.failure.borrow_mut().as_mut() {
            r.path.push(segment());
        }
        e
    }

    fn outcome<T>(&self, done: Result<T, serde_json::Error>) -> PyResult<T> {
        done.map_err(|e| match self.failure.borrow_mut().take() {
            Some(Failure::Refused(r)) => r.into_pyerr(),
            Some(Failure::Python(e)) => e,
            None => PyValueError::new_err(format!("cannot store the value as JSON: {e}")),
        })
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

/// Python objects serialized as the JSON value they hold, checked as they are walked:
/// the one walk behind [`to_json`] (into a `serde_json::Value`) and [`encode`] (into
/// text). A refusal stops it; the failure and its place are in the [`Walk`].
struct Checked<'a, 'py> {
    obj: &'a Bound<'py, PyAny>,
    depth: usize,
    walk: &'a Walk,
}

impl<'a, 'py> Checked<'a, 'py> {
    fn root(obj: &'a Bound<'py, PyAny>, walk: &'a Walk) -> Checked<'a, 'py> {
        Checked {
            obj,
            depth: 0,
            walk,
        }
    }

    fn child<'b>(&'b self, obj: &'b Bound<'py, PyAny>) -> Checked<'b, 'py> {
        Checked {
            obj,
            depth: self.depth + 1,
            walk: self.walk,
        }
    }

    fn dict<S: Serializer>(&self, d: &Bound<'py, PyDict>, s: S) -> Result<S::Ok, S::Error> {
        let walk = self.walk;
        let mut map = s.serialize_map(Some(d.len()).filter(|&n| n > 0))?;
        // Only keys of a str subclass with its own `__eq__`/`__hash__` can be two keys
        // of one dict with the same text: once such a key turns up, the texts so far.
        let mut texts: Option<HashSet<String>> = None;
        // Python code the walk runs (a subclass's `__iter__`, a Decimal subclass's
        // method) may change this dict meanwhile; pyo3's iterator panics when it sees
        // that. So, as CPython's own iteration does, the size is checked after each
        // value (before the iterator looks again) and a key beyond the size the dict had
        // is a change of its keys: both a RuntimeError, nothing written.
        let len = d.len();
        let changed = |what: &str| {
            walk.fail(Failure::Python(PyRuntimeError::new_err(format!(
                "dictionary {what} during iteration"
            ))))
        };
        let mut items = d.iter();
        for i in 0..=len {
            let Some((k, v)) = items.next() else { break };
            if i == len {
                return Err(changed("keys changed"));
            }
            let Ok(text) = k.cast::<PyString>() else {
                return Err(walk.fail(refuse_type(format!(
                    "the key {} ({}) is not a string (JSON object keys are strings)",
                    short_repr(&k),
                    type_name(&k)
                ))));
            };
            let exact = k.is_exact_instance_of::<PyString>();
            walk.exact(exact);
            let key =
                string(text).map_err(|f| walk.fail(f.at(text.to_string_lossy().into_owned())))?;
            if statefile::is_reserved_key(key) {
                let reads_as = if key == statefile::RESERVED_KEY {
                    "a number"
                } else {
                    "the JSON its value spells"
                };
                return Err(walk.fail(refuse_value(format!(
                    "the key {key:?} is reserved: the reader would read this dict back as {reads_as}"
                ))));
            }
            if !exact && texts.is_none() {
                // The keys before this one are exact strs, already checked.
                let before = d.keys().iter().take(i).map(|k| {
                    k.cast::<PyString>()
                        .ok()
                        .and_then(|k| k.to_str().ok().map(str::to_owned))
                        .unwrap_or_default()
                });
                texts = Some(before.collect());
            }
            map.serialize_key(key)?;
            map.serialize_value(&self.child(&v))
                .map_err(|e| walk.below(|| key.to_owned(), e))?;
            if let Some(texts) = &mut texts
                && !texts.insert(key.to_owned())
            {
                return Err(walk.fail(refuse_value(format!(
                    "two keys of this dict are the text {} (a str subclass with its own __eq__ or __hash__), which one JSON object cannot hold",
                    short_repr(&k)
                ))));
            }
            if d.len() != len {
                return Err(changed("changed size"));
            }
        }
        map.end()
    }

    fn list<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let walk = self.walk;
        if let Ok(l) = self.obj.cast_exact::<PyList>() {
            let mut seq = s.serialize_seq(Some(l.len()).filter(|&n| n > 0))?;
            for (i, v) in l.iter().enumerate() {
                seq.serialize_element(&self.child(&v))
                    .map_err(|e| walk.below(|| i.to_string(), e))?;
            }
            return seq.end();
        }
        // A tuple, or a subclass of list or tuple: as Python iterates it.
        let mut seq = s.serialize_seq(None)?;
        let items = self
            .obj
            .try_iter()
            .map_err(|e| walk.fail(Failure::Python(e)))?;
        for (i, v) in items.enumerate() {
            let v = v.map_err(|e| walk.fail(Failure::Python(e)))?;
            seq.serialize_element(&self.child(&v))
                .map_err(|e| walk.below(|| i.to_string(), e))?;
        }
        seq.end()
    }
}

impl Serialize for Checked<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (obj, walk) = (self.obj, self.walk);
        // Strings first, and by their exact type (one comparison): most of a document.
        if let Ok(t) = obj.cast_exact::<PyString>() {
            return s.serialize_str(string(t).map_err(|f| walk.fail(f))?);
        }
        if obj.is_none() {
            return s.serialize_unit();
        }
        if let Ok(b) = obj.cast::<PyBool>() {
            return s.serialize_bool(b.is_true());
        }
        if let Ok(t) = obj.cast::<PyString>() {
            walk.exact(obj.is_exact_instance_of::<PyString>());
            return s.serialize_str(string(t).map_err(|f| walk.fail(f))?);
        }
        if obj.is_instance_of::<PyInt>() {
            walk.exact(obj.is_exact_instance_of::<PyInt>());
            if let Ok(i) = obj.extract::<i64>() {
                return s.serialize_i64(i);
            }
            if let Ok(u) = obj.extract::<u64>() {
                return s.serialize_u64(u);
            }
            return integer(obj).map_err(|f| walk.fail(f))?.serialize(s);
        }
        if let Ok(f) = obj.cast::<PyFloat>() {
            walk.exact(obj.is_exact_instance_of::<PyFloat>());
            let x = f.value();
            if !x.is_finite() {
                return Err(walk.fail(refuse_value(format!(
                    "{} is not a JSON number (JSON has no NaN or infinity)",
                    float_name(x)
                ))));
            }
            // The shortest text that reads back as `x`, as `Number::from_f64` holds it.
            return s.serialize_f64(x);
        }
        let is_dict = obj.is_instance_of::<PyDict>();
        if !is_dict && !obj.is_instance_of::<PyList>() && !obj.is_instance_of::<PyTuple>() {
            let is_decimal = decimal_type(obj.py())
                .and_then(|t| obj.is_instance(t.as_any()))
                .map_err(|e| walk.fail(Failure::Python(e)))?;
            if is_decimal {
                walk.exact(false);
                return decimal(obj).map_err(|f| walk.fail(f))?.serialize(s);
            }
            return Err(walk.fail(refuse_type(unsupported(obj))));
        }
        walk.exact(
            (obj.is_exact_instance_of::<PyDict>() || obj.is_exact_instance_of::<PyList>())
                && (self.depth == 0 || refs(obj) == INNER_REFS),
        );
        let id = obj.as_ptr() as usize;
        if walk.open.borrow().contains(&id) {
            return Err(walk.fail(refuse_value(format!(
                "circular reference: this {} contains itself",
                type_name(obj)
            ))));
        }
        if self.depth >= statefile::MAX_DEPTH {
            return Err(walk.fail(refuse_value(format!(
                "nested deeper than {} levels, which the reader refuses",
                statefile::MAX_DEPTH
            ))));
        }
        walk.open.borrow_mut().push(id);
        let out = match obj.cast::<PyDict>() {
            Ok(d) => self.dict(d, s),
            Err(_) => self.list(s),
        }?;
        walk.open.borrow_mut().pop();
        Ok(out)
    }
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
