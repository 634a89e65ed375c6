//! A document value as the JSON text JavaScript made of it, written without building a
//! `serde_json::Value`.
//!
//! Parsing the text of a 7 KB document into a `Value` costs about 60 µs here (every
//! object a map with hashed keys, every key and every non-integer number a string of
//! its own, all freed again after the write): more than the library spends checking
//! and serializing it. A [`JsonText`] is serialized straight from its text instead:
//! each time the library serializes it (once to check it, once to write it), a parser
//! walks the text and hands every value to the serializer in the calls `Value`'s own
//! `Serialize` makes, so the bytes written are exactly those a `Value` of the text
//! gives: the same layout, every number with the digits it was written with.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, de::Error as _};
use serde_json::Value;

/// How serde_json (under `arbitrary_precision`, which statefile turns on) hands over a
/// number it keeps as text: parsing, as a map whose one key is this (a `&'static str`,
/// never a slice of the input); serializing, as a struct of this name with one field.
const NUMBER: &str = "$serde_json::private::Number";

/// One JSON value's text, checked by [`check`].
#[derive(Debug)]
pub(crate) struct JsonText(String);

impl JsonText {
    /// `text`, if it passes [`check`].
    pub(crate) fn new(text: String) -> Result<JsonText, serde_json::Error> {
        check(&text)?;
        Ok(JsonText(text))
    }
}

/// Whether `text` is one JSON value (within serde_json's nesting limit) that reads back
/// as itself: no object repeats a key (a `Value` keeps one of them), and none has the
/// key serde_json reads as the mark of a number (`{"$serde_json::private::Number":
/// "5"}` would read back as `5`). `JSON.stringify` never makes the first, but the
/// native functions take any string.
pub(crate) fn check(text: &str) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_any(Check { input: input(text) })?;
    de.end()
}

/// The bytes of `text`: a key borrowed from them is a key of the document; the number
/// marker is not (it is a `&'static str`).
fn input(text: &str) -> Range<*const u8> {
    text.as_bytes().as_ptr_range()
}

/// Whether `lent`, the first key of a map, lent by the parser, is the number marker
/// rather than a key of the document (which may be spelled the same). Only a key the
/// parser lends can be: a key spelled with escapes comes as a `String` of its own.
fn is_number(lent: &str, input: &Range<*const u8>) -> bool {
    lent == NUMBER && !input.contains(&lent.as_ptr())
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut de = serde_json::Deserializer::from_str(&self.0);
        let ok = transcode(input(&self.0), &mut de, s)?;
        de.end().map_err(ser::Error::custom)?;
        Ok(ok)
    }
}

/// For the library's `Doc<T: DeserializeOwned>`, which parses the current document as
/// `T` only to tell whether it is JSON (a compare-and-swap over a damaged document):
/// the text of the value read. Documents are read as `Value`s, never through this.
impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonText, D::Error> {
        Value::deserialize(d).map(|v| JsonText(v.to_string()))
    }
}

// ---------------------------------------------------------------------------------
// Checking

/// Walks a value, refusing an object that repeats a key (a `Value` would keep one of
/// them, silently).
#[derive(Clone)]
struct Check {
    input: Range<*const u8>,
}

impl<'de> DeserializeSeed<'de> for Check {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        while a.next_element_seed(self.clone())?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = a.next_key_seed(Key)? {
            if keys.is_empty() && matches!(key, Cow::Borrowed(k) if is_number(k, &self.input)) {
                return a.next_value::<IgnoredAny>().map(drop);
            }
            if key == NUMBER {
                return Err(A::Error::custom(format_args!(
                    "the key \"{NUMBER}\" is reserved: serde_json, which statefile \
                     reads documents with, would read the object back as a number"
                )));
            }
            a.next_value_seed(self.clone())?;
            keys.push(key);
        }
        keys.sort_unstable();
        match keys.windows(2).find(|w| w[0] == w[1]) {
            Some(w) => Err(A::Error::custom(format_args!(
                "an object repeats the key {}",
                Value::String(w[0].to_string())
            ))),
            None => Ok(()),
        }
    }
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

// ---------------------------------------------------------------------------------
// Transcoding

/// Serialize the value `de` parses into `s`. A failure of the serializer (an I/O
/// error of the writer, a value the library refuses) comes back as itself, not as a
/// parse error: it travels up beside the parser's error, in `failed`.
fn transcode<'de, D: Deserializer<'de>, S: Serializer>(
    input: Range<*const u8>,
    de: D,
    s: S,
) -> Result<S::Ok, S::Error> {
    let failed = Cell::new(None);
    de.deserialize_any(Transcode {
        input,
        s,
        failed: &failed,
    })
    .map_err(|e| failed.take().unwrap_or_else(|| ser::Error::custom(e)))
}

/// Keep the serializer's error `e` in `failed`; the parser's error that carries it up.
fn fail<T, E: de::Error>(failed: &Cell<Option<T>>, e: T) -> E {
    failed.set(Some(e));
    E::custom("the serializer failed")
}

struct Transcode<'a, S: Serializer> {
    input: Range<*const u8>,
    s: S,
    failed: &'a Cell<Option<S::Error>>,
}

impl<'de, S: Serializer> Visitor<'de> for Transcode<'_, S> {
    type Value = S::Ok;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<S::Ok, E> {
        self.s.serialize_unit().map_err(|e| fail(self.failed, e))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<S::Ok, E> {
        self.s.serialize_bool(v).map_err(|e| fail(self.failed, e))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<S::Ok, E> {
        self.s.serialize_i64(v).map_err(|e| fail(self.failed, e))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<S::Ok, E> {
        self.s.serialize_u64(v).map_err(|e| fail(self.failed, e))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<S::Ok, E> {
        self.s.serialize_f64(v).map_err(|e| fail(self.failed, e))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<S::Ok, E> {
        self.s.serialize_str(v).map_err(|e| fail(self.failed, e))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<S::Ok, A::Error> {
        let failed = self.failed;
        let mut seq = self
            .s
            .serialize_seq(a.size_hint())
            .map_err(|e| fail(failed, e))?;
        while a
            .next_element_seed(Element {
                input: self.input.clone(),
                seq: &mut seq,
                failed,
            })?
            .is_some()
        {}
        seq.end().map_err(|e| fail(failed, e))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<S::Ok, A::Error> {
        let failed = self.failed;
        let Some(mut key) = a.next_key_seed(Key)? else {
            let map = self.s.serialize_map(Some(0)).map_err(|e| fail(failed, e))?;
            return map.end().map_err(|e| fail(failed, e));
        };
        if matches!(key, Cow::Borrowed(k) if is_number(k, &self.input)) {
            // As `serde_json::Number` serializes itself.
            let digits = a.next_value_seed(Key)?;
            let mut n = self
                .s
                .serialize_struct(NUMBER, 1)
                .map_err(|e| fail(failed, e))?;
            n.serialize_field(NUMBER, &*digits)
                .map_err(|e| fail(failed, e))?;
            return n.end().map_err(|e| fail(failed, e));
        }
        let mut map = self.s.serialize_map(None).map_err(|e| fail(failed, e))?;
        loop {
            map.serialize_key(&*key).map_err(|e| fail(failed, e))?;
            a.next_value_seed(Entry {
                input: self.input.clone(),
                map: &mut map,
                failed,
            })?;
            match a.next_key_seed(Key)? {
                Some(k) => key = k,
                None => break,
            }
        }
        map.end().map_err(|e| fail(failed, e))
    }
}

/// One element of an array: parsed as its serializer asks for it.
struct Element<'a, Q: SerializeSeq> {
    input: Range<*const u8>,
    seq: &'a mut Q,
    failed: &'a Cell<Option<Q::Error>>,
}

impl<'de, Q: SerializeSeq> DeserializeSeed<'de> for Element<'_, Q> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.seq
            .serialize_element(&Deferred::new(self.input, d))
            .map_err(|e| fail(self.failed, e))
    }
}

/// The value of an object's member.
struct Entry<'a, M: SerializeMap> {
    input: Range<*const u8>,
    map: &'a mut M,
    failed: &'a Cell<Option<M::Error>>,
}

impl<'de, M: SerializeMap> DeserializeSeed<'de> for Entry<'_, M> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.map
            .serialize_value(&Deferred::new(self.input, d))
            .map_err(|e| fail(self.failed, e))
    }
}

/// A value not parsed yet: parsed while it is serialized (once).
struct Deferred<D> {
    input: Range<*const u8>,
    de: RefCell<Option<D>>,
}

impl<D> Deferred<D> {
    fn new(input: Range<*const u8>, de: D) -> Deferred<D> {
        Deferred {
            input,
            de: RefCell::new(Some(de)),
        }
    }
}

impl<'de, D: Deserializer<'de>> Serialize for Deferred<D> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let de = self
            .de
            .borrow_mut()
            .take()
            .ok_or_else(|| ser::Error::custom("a parsed value can be serialized only once"))?;
        transcode(self.input.clone(), de, s)
    }
}
