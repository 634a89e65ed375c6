//! RFC 6901 JSON Pointers on [`serde_json::Value`]: parse, look up, set (creating
//! missing objects), append, remove. The CLI's `set`/`append`/`rm` and the server's
//! `?pointer=` share these rules: a missing intermediate object is created, and an
//! array is only ever created as the target of an append.
//!
//! Pointers are untrusted input (a query parameter, a command-line argument, a path in a
//! patch), so they are bounded: at most [`MAX_TOKENS`] reference tokens, the deepest a
//! document can nest. Every walk here is a loop, never a recursion, and messages quote
//! at most the first [`QUOTED`] characters of a pointer or key.

use serde_json::{Map, Value};

/// The most reference tokens a pointer may have: [`MAX_DEPTH`](crate::MAX_DEPTH), since a
/// longer pointer cannot name anything in a document the library can read. It also
/// bounds the objects `set` and `append` create on the way, which would otherwise make a
/// value as deep as the pointer is long (a pointer of 60,000 `/` overflowed the stack).
pub const MAX_TOKENS: usize = crate::json::MAX_DEPTH;

/// How many characters of a pointer or key an error message quotes.
pub const QUOTED: usize = 100;

/// Why a pointer operation failed (the CLI and server map these to exit codes and statuses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointerError {
    /// Not a valid RFC 6901 pointer (usage error).
    Syntax(String),
    /// Nothing at that location.
    NotFound(String),
    /// The location exists but the operation does not apply (e.g. append to an object).
    NotApplicable(String),
}

impl std::fmt::Display for PointerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointerError::Syntax(m)
            | PointerError::NotFound(m)
            | PointerError::NotApplicable(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PointerError {}

/// The reference tokens of `ptr` ("" is the whole document).
///
/// # Errors
/// [`PointerError::Syntax`] if `ptr` is neither empty nor starts with `/`, has a `~` not
/// followed by `0` or `1`, or has more than [`MAX_TOKENS`] tokens (checked before any
/// token is built).
pub fn parse(ptr: &str) -> Result<Vec<String>, PointerError> {
    if ptr.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = ptr.strip_prefix('/') else {
        return Err(PointerError::Syntax(format!(
            "{} is not a JSON Pointer: it must be empty or start with '/'",
            quote(ptr)
        )));
    };
    let count = ptr.bytes().filter(|&b| b == b'/').count();
    if count > MAX_TOKENS {
        return Err(PointerError::Syntax(format!(
            "the pointer {} has {count} reference tokens; at most {MAX_TOKENS} are allowed \
             (no document nests deeper)",
            quote(ptr)
        )));
    }
    rest.split('/')
        .map(|t| {
            let mut out = String::with_capacity(t.len());
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(PointerError::Syntax(format!(
                                "{} is not a JSON Pointer: '~' must be followed by 0 or 1",
                                quote(ptr)
                            )));
                        }
                    }
                } else {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .collect()
}

/// The pointer text for `tokens`: the inverse of [`parse`] (`~` is written `~0`, `/` is
/// written `~1`; no tokens is the empty pointer).
///
/// ```
/// use statefile::pointer;
/// let tokens = pointer::parse("/a~1b/c~0d/0")?;
/// assert_eq!(tokens, ["a/b", "c~d", "0"]);
/// assert_eq!(pointer::format(&tokens), "/a~1b/c~0d/0");
/// # Ok::<(), pointer::PointerError>(())
/// ```
pub fn format(tokens: &[String]) -> String {
    let mut s = String::with_capacity(tokens.iter().map(|t| t.len() + 1).sum());
    for t in tokens {
        s.push('/');
        for c in t.chars() {
            match c {
                '~' => s.push_str("~0"),
                '/' => s.push_str("~1"),
                c => s.push(c),
            }
        }
    }
    s
}

/// `text` in quotes, cut to its first [`QUOTED`] characters (an attacker's 16 MiB pointer
/// must not come back in every error message).
pub(crate) fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTED) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
    }
}

fn describe(tokens: &[String]) -> String {
    if tokens.is_empty() {
        return "the document".into();
    }
    let text = format(tokens);
    match text.char_indices().nth(QUOTED) {
        None => text,
        Some((cut, _)) => format!("{}... ({} bytes)", &text[..cut], text.len()),
    }
}

/// The index `token` names in an array of `len` elements, which must exist (no `-`).
pub(crate) fn index(token: &str, len: usize, tokens: &[String]) -> Result<usize, PointerError> {
    checked_index(token, len, false, tokens)
}

/// The index `token` names for inserting into an array of `len` elements: an existing
/// index, or `len` (also spelled `-`) to append.
pub(crate) fn insert_index(
    token: &str,
    len: usize,
    tokens: &[String],
) -> Result<usize, PointerError> {
    if token == "-" {
        Ok(len)
    } else {
        checked_index(token, len, true, tokens)
    }
}

fn checked_index(
    token: &str,
    len: usize,
    end_ok: bool,
    tokens: &[String],
) -> Result<usize, PointerError> {
    // RFC 6901: no leading zeros, no signs.
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    let i: usize = if valid {
        token.parse().map_err(|_| {
            PointerError::NotFound(format!("{} is not an index of the array", describe(tokens)))
        })?
    } else {
        return Err(PointerError::NotFound(format!(
            "{}: {} is not an array index",
            describe(tokens),
            quote(token)
        )));
    };
    if i < len || (end_ok && i == len) {
        Ok(i)
    } else {
        Err(PointerError::NotFound(format!(
            "{}: index {i} is out of range (the array has {len} elements)",
            describe(tokens)
        )))
    }
}

/// The value at `tokens`.
pub fn get<'a>(v: &'a Value, tokens: &[String]) -> Result<&'a Value, PointerError> {
    let mut cur = v;
    for (n, t) in tokens.iter().enumerate() {
        cur = match cur {
            Value::Object(m) => m.get(t).ok_or_else(|| missing(tokens, n))?,
            Value::Array(a) => &a[index(t, a.len(), &tokens[..=n])?],
            _ => return Err(not_a_container(tokens, n)),
        };
    }
    Ok(cur)
}

/// The value at `tokens`, mutably; nothing is created.
///
/// # Errors
/// [`PointerError::NotFound`] if there is nothing at `tokens`.
pub fn get_mut<'a>(v: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, PointerError> {
    let mut cur = v;
    for (n, t) in tokens.iter().enumerate() {
        cur = match cur {
            Value::Object(m) => m.get_mut(t).ok_or_else(|| missing(tokens, n))?,
            Value::Array(a) => {
                let i = index(t, a.len(), &tokens[..=n])?;
                &mut a[i]
            }
            _ => return Err(not_a_container(tokens, n)),
        };
    }
    Ok(cur)
}

/// The member `tokens[n]` of an object is missing.
fn missing(tokens: &[String], n: usize) -> PointerError {
    PointerError::NotFound(format!("{} does not exist", describe(&tokens[..=n])))
}

/// What `tokens[..n]` names is neither an object nor an array, so `tokens[n]` names nothing.
fn not_a_container(tokens: &[String], n: usize) -> PointerError {
    PointerError::NotFound(format!(
        "{} does not exist: {} is not an object or array",
        describe(&tokens[..=n]),
        describe(&tokens[..n])
    ))
}

/// Walk to the parent container of the last token, creating missing objects.
fn parent_mut<'a>(v: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, PointerError> {
    let mut cur = v;
    for (n, t) in tokens.iter().enumerate() {
        cur = match cur {
            Value::Object(m) => m
                .entry(t.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(a) => {
                let i = index(t, a.len(), &tokens[..=n])?;
                &mut a[i]
            }
            _ => {
                return Err(PointerError::NotApplicable(format!(
                    "cannot go into {}: it is neither an object nor an array",
                    describe(&tokens[..n])
                )));
            }
        };
    }
    Ok(cur)
}

/// Set the value at `tokens`, creating missing intermediate objects. In an array, an
/// existing index is replaced and `-` (or the length) appends.
pub fn set(v: &mut Value, tokens: &[String], new: Value) -> Result<(), PointerError> {
    let Some((last, parents)) = tokens.split_last() else {
        *v = new;
        return Ok(());
    };
    match parent_mut(v, parents)? {
        Value::Object(m) => {
            m.insert(last.clone(), new);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" || last == &a.len().to_string() {
                a.push(new);
            } else {
                let i = index(last, a.len(), tokens)?;
                a[i] = new;
            }
            Ok(())
        }
        _ => Err(PointerError::NotApplicable(format!(
            "cannot set {}: {} is neither an object nor an array",
            describe(tokens),
            describe(parents)
        ))),
    }
}

/// Append `new` to the array at `tokens` (created, with missing parents, if absent).
/// Returns the new element's index.
pub fn append(v: &mut Value, tokens: &[String], new: Value) -> Result<usize, PointerError> {
    let target = match tokens.split_last() {
        None => v,
        Some((last, parents)) => match parent_mut(v, parents)? {
            Value::Object(m) => m
                .entry(last.clone())
                .or_insert_with(|| Value::Array(Vec::new())),
            Value::Array(a) => {
                let i = index(last, a.len(), tokens)?;
                &mut a[i]
            }
            _ => {
                return Err(PointerError::NotApplicable(format!(
                    "cannot append at {}: {} is neither an object nor an array",
                    describe(tokens),
                    describe(parents)
                )));
            }
        },
    };
    if target.is_null() {
        *target = Value::Array(Vec::new());
    }
    match target {
        Value::Array(a) => {
            a.push(new);
            Ok(a.len() - 1)
        }
        other => Err(PointerError::NotApplicable(format!(
            "cannot append to {}: it is {}, not an array",
            describe(tokens),
            kind_of(other)
        ))),
    }
}

/// Remove the value at `tokens`, returning it.
pub fn remove(v: &mut Value, tokens: &[String]) -> Result<Value, PointerError> {
    let Some((last, parents)) = tokens.split_last() else {
        return Err(PointerError::Syntax(
            "the empty pointer names the whole document; remove the file instead".into(),
        ));
    };
    let cur = get_mut(v, parents)?;
    match cur {
        Value::Object(m) => m
            .shift_remove(last)
            .ok_or_else(|| PointerError::NotFound(format!("{} does not exist", describe(tokens)))),
        Value::Array(a) => {
            let i = index(last, a.len(), tokens)?;
            Ok(a.remove(i))
        }
        _ => Err(PointerError::NotFound(format!(
            "{} does not exist",
            describe(tokens)
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Vec<String> {
        parse(s).unwrap()
    }

    #[test]
    fn parse_escapes() {
        assert_eq!(p(""), Vec::<String>::new());
        assert_eq!(p("/a~1b/c~0d/"), ["a/b", "c~d", ""]);
        assert!(matches!(parse("a"), Err(PointerError::Syntax(_))));
        assert!(matches!(parse("/a~2"), Err(PointerError::Syntax(_))));
    }

    // Regression (issue 9): `append?pointer=` + 60,000 `/` built a value 60,000 levels
    // deep and overflowed the stack; the pointer is now refused before any token is built.
    #[test]
    fn pointers_longer_than_a_document_can_nest_are_refused() {
        let deepest = "/a".repeat(MAX_TOKENS);
        assert_eq!(p(&deepest).len(), MAX_TOKENS);
        for bad in ["/".repeat(MAX_TOKENS + 1), "/".repeat(60_000)] {
            let Err(PointerError::Syntax(m)) = parse(&bad) else {
                panic!("accepted {} tokens", bad.len());
            };
            assert!(m.contains(&format!("at most {MAX_TOKENS}")), "{m}");
            assert!(m.len() < 400, "the message quotes the pointer in full: {m}");
        }
        let mut v = json!({});
        append(&mut v, &p(&deepest), json!(1)).unwrap();
        let mut depth = 0;
        let mut cur = &v;
        while let Some(next) = cur.get("a") {
            depth += 1;
            cur = next;
        }
        assert_eq!(depth, MAX_TOKENS);
    }

    #[test]
    fn messages_quote_long_keys_and_pointers_shortened() {
        let key = "k".repeat(10_000);
        let e = get(&json!({}), std::slice::from_ref(&key))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400 && e.contains("10001 bytes"), "{e}");
        let e = parse(&key).unwrap_err().to_string();
        assert!(e.len() < 400 && e.contains("10000 bytes"), "{e}");
        let e = get(&json!([]), &[key]).unwrap_err().to_string();
        assert!(e.len() < 400, "{e}");
    }

    #[test]
    fn format_is_the_inverse_of_parse() {
        for s in ["", "/", "//", "/a~1b/c~0d/", "/~01", "/ü/0/-"] {
            assert_eq!(format(&p(s)), s);
        }
    }

    #[test]
    fn set_creates_objects_and_appends_with_dash() {
        let mut v = json!({});
        set(&mut v, &p("/a/b/c"), json!(1)).unwrap();
        assert_eq!(v, json!({"a": {"b": {"c": 1}}}));
        set(&mut v, &p("/list"), json!([1])).unwrap();
        set(&mut v, &p("/list/-"), json!(2)).unwrap();
        set(&mut v, &p("/list/0"), json!(0)).unwrap();
        assert_eq!(v["list"], json!([0, 2]));
        assert!(matches!(
            set(&mut v, &p("/list/7"), json!(1)),
            Err(PointerError::NotFound(_))
        ));
        assert!(matches!(
            set(&mut v, &p("/a/b/c/d"), json!(1)),
            Err(PointerError::NotApplicable(_))
        ));
        assert!(matches!(
            set(&mut v, &p("/list/01"), json!(1)),
            Err(PointerError::NotFound(_))
        ));
    }

    #[test]
    fn append_creates_the_array_and_refuses_non_arrays() {
        let mut v = json!({});
        assert_eq!(append(&mut v, &p("/cases"), json!("a")).unwrap(), 0);
        assert_eq!(append(&mut v, &p("/cases"), json!("b")).unwrap(), 1);
        assert_eq!(append(&mut v, &p("/deep/er/list"), json!(1)).unwrap(), 0);
        assert_eq!(
            v,
            json!({"cases": ["a", "b"], "deep": {"er": {"list": [1]}}})
        );
        v["s"] = json!("str");
        assert!(matches!(
            append(&mut v, &p("/s"), json!(1)),
            Err(PointerError::NotApplicable(_))
        ));
        let mut arr = json!([]);
        assert_eq!(append(&mut arr, &p(""), json!(1)).unwrap(), 0);
    }

    #[test]
    fn get_and_remove() {
        let mut v = json!({"a": [10, {"b": 2}]});
        assert_eq!(get(&v, &p("/a/1/b")).unwrap(), &json!(2));
        assert!(matches!(
            get(&v, &p("/a/5")),
            Err(PointerError::NotFound(_))
        ));
        assert!(matches!(get(&v, &p("/x")), Err(PointerError::NotFound(_))));
        assert_eq!(remove(&mut v, &p("/a/0")).unwrap(), json!(10));
        assert_eq!(remove(&mut v, &p("/a/0/b")).unwrap(), json!(2));
        assert!(matches!(
            remove(&mut v, &p("/zz")),
            Err(PointerError::NotFound(_))
        ));
        assert_eq!(v, json!({"a": [{}]}));
    }
}
