//! A document value as the JSON text JavaScript made of it, written without building a
//! `serde_json::Value`.
//!
//! Parsing the text of a 7 KB document into a `Value` costs about 50 µs here (every
//! object a map with hashed keys, every key and every non-integer number a string of
//! its own, all freed again after the write): more than the library spends checking
//! and serializing it. A [`JsonText`] keeps the text and, from one pass of serde_json's
//! parser, a tape of its values in one vector: scalars, and strings as ranges of the
//! text (a string spelled with escapes as a `String` of its own). Each time the library
//! serializes it (once to check it, once to write it), the tape is walked and every
//! value handed to the serializer in the calls `Value`'s own `Serialize` makes, so the
//! bytes written are exactly those a `Value` of the text gives: the same layout, every
//! number with the digits it was written with.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, de::Error as _};
use serde_json::Value;

/// How serde_json (under `arbitrary_precision`, which statefile turns on) hands over a
/// number it keeps as text: parsing, as a map whose one key is this (a `&'static str`,
/// never a slice of the input); serializing, as a struct of this name with one field.
const NUMBER: &str = "$serde_json::private::Number";

/// One JSON value's text and its tape: see [`JsonText::new`].
#[derive(Debug)]
pub(crate) struct JsonText {
    text: String,
    tape: Vec<Tok>,
}

/// One value of a tape. An array or object is followed by its elements (an object's
/// as key, value, key, value, ...); `end` is the index after its last token.
#[derive(Debug)]
enum Tok {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    /// A number serde_json keeps as its text.
    Number(String),
    /// A string (or key) lent by the parser: where it is in the text.
    Lent(Range<usize>),
    /// A string (or key) spelled with escapes.
    Owned(String),
    Array {
        len: usize,
        end: usize,
    },
    Object {
        len: usize,
        end: usize,
    },
}

impl JsonText {
    /// `text` if it is one JSON value (within serde_json's nesting limit) that reads
    /// back as itself: no object repeats a key (a `Value` keeps one of them), and none
    /// has the key serde_json reads as the mark of a number
    /// (`{"$serde_json::private::Number": "5"}` would read back as `5`).
    /// `JSON.stringify` never makes the first, but the native functions take any string.
    pub(crate) fn new(text: String) -> Result<JsonText, serde_json::Error> {
        let tape = tape(&text)?;
        Ok(JsonText { text, tape })
    }

    fn str(&self, i: usize) -> &str {
        match &self.tape[i] {
            Tok::Lent(r) => &self.text[r.clone()],
            Tok::Owned(s) => s,
            other => unreachable!("a key is a string, not {other:?}"),
        }
    }

    /// The index after the value at `i`.
    fn next(&self, i: usize) -> usize {
        match self.tape[i] {
            Tok::Array { end, .. } | Tok::Object { end, .. } => end,
            _ => i + 1,
        }
    }
}

/// Check `text` as [`JsonText::new`] does, keeping nothing.
pub(crate) fn check(text: &str) -> Result<(), serde_json::Error> {
    tape(text).map(drop)
}

fn tape(text: &str) -> Result<Vec<Tok>, serde_json::Error> {
    let mut tape = Vec::with_capacity(text.len() / 8);
    let mut de = serde_json::Deserializer::from_str(text);
    Build {
        text,
        tape: &mut tape,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(tape)
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        At(self, 0).serialize(s)
    }
}

/// The value at a place in the tape.
struct At<'a>(&'a JsonText, usize);

impl Serialize for At<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let At(doc, i) = *self;
        match &doc.tape[i] {
            Tok::Null => s.serialize_unit(),
            Tok::Bool(b) => s.serialize_bool(*b),
            Tok::U64(n) => s.serialize_u64(*n),
            Tok::I64(n) => s.serialize_i64(*n),
            Tok::F64(n) => s.serialize_f64(*n),
            Tok::Number(digits) => {
                // As `serde_json::Number` serializes itself.
                let mut n = s.serialize_struct(NUMBER, 1)?;
                n.serialize_field(NUMBER, digits.as_str())?;
                n.end()
            }
            Tok::Lent(_) | Tok::Owned(_) => s.serialize_str(doc.str(i)),
            Tok::Array { len, .. } => {
                let mut seq = s.serialize_seq(Some(*len))?;
                let mut at = i + 1;
                for _ in 0..*len {
                    seq.serialize_element(&At(doc, at))?;
                    at = doc.next(at);
                }
                seq.end()
            }
            Tok::Object { len, .. } => {
                let mut map = s.serialize_map(Some(*len))?;
                let mut at = i + 1;
                for _ in 0..*len {
                    map.serialize_entry(doc.str(at), &At(doc, at + 1))?;
                    at = doc.next(at + 1);
                }
                map.end()
            }
        }
    }
}

/// For the library's `Doc<T: DeserializeOwned>`, which parses the current document as
/// `T` only to tell whether it is JSON (a compare-and-swap over a damaged document):
/// the value read. Documents are read as `Value`s, never through this.
impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonText, D::Error> {
        let v = Value::deserialize(d)?;
        JsonText::new(v.to_string()).map_err(D::Error::custom)
    }
}

// ---------------------------------------------------------------------------------
// Building the tape

/// Appends the value the parser gives to `tape`.
struct Build<'t, 'de> {
    text: &'de str,
    tape: &'t mut Vec<Tok>,
}

impl<'de> Build<'_, 'de> {
    fn again(&mut self) -> Build<'_, 'de> {
        Build {
            text: self.text,
            tape: self.tape,
        }
    }

    /// A string's token: where it is in the text, if the parser lent it from there.
    fn string(&self, s: Cow<'de, str>) -> Tok {
        let text = self.text.as_bytes().as_ptr_range();
        match s {
            Cow::Borrowed(b) if text.contains(&b.as_ptr()) => {
                let start = b.as_ptr() as usize - text.start as usize;
                Tok::Lent(start..start + b.len())
            }
            other => Tok::Owned(other.into_owned()),
        }
    }

    /// Whether `key`, the first key of a map the parser lent, is the number marker
    /// rather than a key of the document (which may be spelled the same): the marker is
    /// a `&'static str`, not a part of the text. A key spelled with escapes comes owned.
    fn is_number(&self, lent: &str) -> bool {
        lent == NUMBER && !self.text.as_bytes().as_ptr_range().contains(&lent.as_ptr())
    }
}

impl<'de> DeserializeSeed<'de> for Build<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Build<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.tape.push(Tok::Null);
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.tape.push(Tok::Bool(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.tape.push(Tok::I64(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.tape.push(Tok::U64(v));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.tape.push(Tok::F64(v));
        Ok(())
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        let t = self.string(Cow::Borrowed(v));
        self.tape.push(t);
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.tape.push(Tok::Owned(v.to_string()));
        Ok(())
    }
    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.tape.push(Tok::Owned(v));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut a: A) -> Result<(), A::Error> {
        let at = self.tape.len();
        self.tape.push(Tok::Array { len: 0, end: 0 });
        let mut len = 0;
        while a.next_element_seed(self.again())?.is_some() {
            len += 1;
        }
        let end = self.tape.len();
        self.tape[at] = Tok::Array { len, end };
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut a: A) -> Result<(), A::Error> {
        let Some(mut key) = a.next_key_seed(Key)? else {
            let end = self.tape.len() + 1;
            self.tape.push(Tok::Object { len: 0, end });
            return Ok(());
        };
        if matches!(key, Cow::Borrowed(k) if self.is_number(k)) {
            let digits = a.next_value_seed(Key)?;
            self.tape.push(Tok::Number(digits.into_owned()));
            return Ok(());
        }
        let at = self.tape.len();
        self.tape.push(Tok::Object { len: 0, end: 0 });
        let mut len = 0;
        loop {
            if key == NUMBER {
                return Err(A::Error::custom(format_args!(
                    "the key \"{NUMBER}\" is reserved: serde_json, which statefile reads \
                     documents with, would read the object back as a number"
                )));
            }
            let k = self.string(key);
            self.tape.push(k);
            a.next_value_seed(self.again())?;
            len += 1;
            match a.next_key_seed(Key)? {
                Some(k) => key = k,
                None => break,
            }
        }
        let end = self.tape.len();
        self.tape[at] = Tok::Object { len, end };
        match repeated(self.text, self.tape, at) {
            Some(k) => Err(A::Error::custom(format_args!(
                "an object repeats the key {}",
                Value::String(k)
            ))),
            None => Ok(()),
        }
    }
}

/// A key an object at `at` in `tape` holds twice, if any.
fn repeated(text: &str, tape: &[Tok], at: usize) -> Option<String> {
    let Tok::Object { len, .. } = tape[at] else {
        unreachable!("an object")
    };
    let key = |i: usize| match &tape[i] {
        Tok::Lent(r) => &text[r.clone()],
        Tok::Owned(s) => s.as_str(),
        other => unreachable!("a key is a string, not {other:?}"),
    };
    let next = |i: usize| match tape[i] {
        Tok::Array { end, .. } | Tok::Object { end, .. } => end,
        _ => i + 1,
    };
    let mut i = at + 1;
    let keys = std::iter::from_fn(|| {
        let k = key(i);
        i = next(i + 1);
        Some(k)
    })
    .take(len);
    if len <= 8 {
        // Small objects (most of them): compare pairs, with nothing allocated.
        let mut seen = [""; 8];
        for (j, k) in keys.enumerate() {
            if seen[..j].contains(&k) {
                return Some(k.to_string());
            }
            seen[j] = k;
        }
        return None;
    }
    let mut keys: Vec<&str> = keys.collect();
    keys.sort_unstable();
    keys.windows(2)
        .find(|w| w[0] == w[1])
        .map(|w| w[0].to_string())
}

/// A key (or a number's text), borrowed from the input where it can be.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}
