//! Parsers for the request headers the API reads. Each takes what the client sent and
//! answers a value or a problem; none panics, whatever the bytes (see the property tests
//! at the bottom).

use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use statefile::Version;

use crate::problem::ApiError;
use crate::store::Condition;

/// The longest `Idempotency-Key` accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A header's value as text; a value with bytes outside visible ASCII is a bad request.
pub fn text<'h>(h: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, ApiError> {
    h.get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::bad_request("invalid-header", format!("{name} is not ASCII"))
            })
        })
        .transpose()
}

/// `If-Match` / `If-None-Match: *` as a write precondition.
pub fn condition(h: &HeaderMap) -> Result<Condition, ApiError> {
    let if_match = text(h, &header::IF_MATCH)?;
    let if_none = text(h, &header::IF_NONE_MATCH)?;
    match (if_match, if_none) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid-precondition",
            "send If-Match or If-None-Match, not both",
        )),
        (Some(m), None) => if_match_condition(m),
        (None, Some(n)) if n.trim() == "*" => Ok(Condition::Absent),
        (None, Some(_)) => Err(ApiError::bad_request(
            "invalid-precondition",
            "on writes, If-None-Match only accepts *",
        )),
        (None, None) => Ok(Condition::Any),
    }
}

/// `If-Match` (RFC 9110 13.1.1): `*` (the document exists), or a list of entity-tags of
/// which the current version must be one. The comparison is strong: a weak tag never
/// matches, nor does a tag that is not a version this server issued. A bare version
/// (unquoted hex, as the CLI prints it) is accepted as its tag.
fn if_match_condition(value: &str) -> Result<Condition, ApiError> {
    if value.trim() == "*" {
        return Ok(Condition::Exists);
    }
    let tags = entity_tags(value).ok_or_else(|| {
        ApiError::bad_request(
            "invalid-precondition",
            "If-Match must be * or a list of ETags as this server sends them, e.g. \"9f86d0...\"",
        )
    })?;
    Ok(Condition::IfMatch(
        tags.into_iter()
            .filter(|(weak, _)| !weak)
            .filter_map(|(_, tag)| Version::parse(tag).ok())
            .collect(),
    ))
}

/// A comma-separated list of entity-tags (`"opaque"` or `W/"opaque"`, RFC 9110 8.8.3),
/// as (weak, opaque) pairs; empty list elements are allowed, as RFC 9110 5.6.1 asks.
/// `None` when it is not one; a bare version alone counts as a strong tag.
fn entity_tags(value: &str) -> Option<Vec<(bool, &str)>> {
    let mut tags = Vec::new();
    for item in value.split(',') {
        let item = item.trim_matches([' ', '\t']);
        if item.is_empty() {
            continue;
        }
        let (weak, rest) = match item.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        let opaque = rest.strip_prefix('"').and_then(|r| r.strip_suffix('"'));
        match opaque {
            Some(o) if o.bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b)) => {
                tags.push((weak, rest));
            }
            None if !weak && Version::parse(item).is_ok() => tags.push((false, item)),
            _ => return None,
        }
    }
    (!tags.is_empty()).then_some(tags)
}

/// Whether a read's `If-None-Match` names `current` (or is `*`): then the answer is 304.
/// The comparison is weak (RFC 9110 13.1.2): `W/"…"` of the version names it too.
pub fn none_match(h: &HeaderMap, current: &Version) -> Result<bool, ApiError> {
    Ok(text(h, &header::IF_NONE_MATCH)?.is_some_and(|inm| {
        inm.trim() == "*"
            || inm
                .split(',')
                .any(|t| Version::parse_weak(t).is_ok_and(|v| v == *current))
    }))
}

/// The media type of the body, lowercase, without parameters ("" when absent).
pub fn content_type(h: &HeaderMap) -> Result<String, ApiError> {
    Ok(text(h, &header::CONTENT_TYPE)?
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase())
}

/// The 415 for a body of media type `got` where `want` was expected.
pub fn unsupported(got: &str, want: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
        format!("expected Content-Type {want}, got {got:?}"),
    )
}

/// `Idempotency-Key`: absent, or 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] printable ASCII
/// characters (space to `~`).
pub fn idempotency_key(h: &HeaderMap) -> Result<Option<String>, ApiError> {
    let key = text(h, &HeaderName::from_static("idempotency-key"))?;
    let printable = |k: &str| k.bytes().all(|b| (b' '..=b'~').contains(&b));
    match key {
        Some(k) if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_LEN || !printable(k) => {
            Err(ApiError::bad_request(
                "invalid-idempotency-key",
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            ))
        }
        k => Ok(k.map(str::to_string)),
    }
}

/// The token of `Authorization: Bearer <token>`, or "" when there is none. The scheme
/// is case-insensitive and followed by one or more spaces (RFC 9110 11.4, RFC 6750).
pub fn bearer_token(h: &HeaderMap) -> &str {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim_start_matches(' '))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    /// Headers with `name` set to `bytes`, when HTTP allows those bytes in a value.
    fn with(name: HeaderName, bytes: &[u8]) -> Option<HeaderMap> {
        let v = HeaderValue::from_bytes(bytes).ok()?;
        let mut h = HeaderMap::new();
        h.insert(name, v);
        Some(h)
    }

    fn any_version() -> impl Strategy<Value = Version> {
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| Version::of(&b))
    }

    proptest! {
        #[test]
        fn no_header_parser_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for name in [
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("idempotency-key"),
            ] {
                if let Some(h) = with(name, &bytes) {
                    let _ = condition(&h);
                    let _ = none_match(&h, &Version::of(b"{}"));
                    let _ = content_type(&h);
                    let _ = idempotency_key(&h);
                    let _ = bearer_token(&h);
                }
            }
        }

        #[test]
        fn an_issued_etag_is_its_own_if_match(v in any_version(), pad in "[ \t]{0,3}") {
            let h = with(header::IF_MATCH, format!("{pad}{}{pad}", v.etag()).as_bytes()).unwrap();
            prop_assert_eq!(condition(&h).unwrap(), Condition::IfMatch(vec![v]));
        }

        #[test]
        fn an_if_match_list_holds_for_each_strong_tag_in_it(
            listed in proptest::collection::vec(any_version(), 1..5),
            weak in proptest::collection::vec(any_version(), 0..3),
            other in any_version(),
        ) {
            let mut tags: Vec<String> = listed.iter().map(Version::etag).collect();
            tags.extend(weak.iter().map(|w| format!("W/{}", w.etag())));
            tags.push("\"not-a-version\"".to_string());
            let h = with(header::IF_MATCH, tags.join(" ,  ,").as_bytes()).unwrap();
            let cond = condition(&h).unwrap();
            for v in &listed {
                prop_assert!(cond.holds(Some(v)));
            }
            prop_assert!(!cond.holds(None));
            if !listed.contains(&other) {
                prop_assert!(!cond.holds(Some(&other)));
            }
            for w in weak.iter().filter(|w| !listed.contains(w)) {
                prop_assert!(!cond.holds(Some(w)), "a weak tag never matches");
            }
        }

        #[test]
        fn a_list_naming_the_version_is_not_modified(
            v in any_version(),
            others in proptest::collection::vec(any_version(), 0..4),
            at in 0usize..4,
        ) {
            let mut tags: Vec<String> = others.iter().map(Version::etag).collect();
            tags.insert(at.min(tags.len()), v.etag());
            let h = with(header::IF_NONE_MATCH, tags.join(", ").as_bytes()).unwrap();
            prop_assert!(none_match(&h, &v).unwrap());
            let without: Vec<String> =
                others.iter().filter(|o| **o != v).map(Version::etag).collect();
            let h = with(header::IF_NONE_MATCH, without.join(", ").as_bytes()).unwrap();
            prop_assert!(!none_match(&h, &v).unwrap());
        }

        #[test]
        fn a_bearer_token_is_read_whatever_the_scheme_case(
            token in "[A-Za-z0-9._~+/-]{1,60}=*",
            upper in proptest::collection::vec(any::<bool>(), 6),
            spaces in 1usize..4,
        ) {
            let scheme: String = "bearer"
                .chars()
                .zip(upper)
                .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                .collect();
            let value = format!("{scheme}{}{token}", " ".repeat(spaces));
            let h = with(header::AUTHORIZATION, value.as_bytes()).unwrap();
            prop_assert_eq!(bearer_token(&h), token.as_str());
            let h = with(header::AUTHORIZATION, format!("Basic {token}").as_bytes()).unwrap();
            prop_assert_eq!(bearer_token(&h), "");
        }

        #[test]
        fn idempotency_keys_of_visible_ascii_round_trip(key in "[!-~]{1,255}") {
            let h = with(HeaderName::from_static("idempotency-key"), key.as_bytes()).unwrap();
            prop_assert_eq!(idempotency_key(&h).unwrap(), Some(key));
        }

        #[test]
        fn idempotency_keys_too_long_are_refused(key in "[!-~]{256,400}") {
            let h = with(HeaderName::from_static("idempotency-key"), key.as_bytes()).unwrap();
            prop_assert_eq!(idempotency_key(&h).unwrap_err().slug, "invalid-idempotency-key");
        }

        #[test]
        fn media_types_ignore_case_and_parameters(
            t in "[a-z]{1,10}/[a-z+.-]{1,20}",
            upper in any::<bool>(),
            params in "(; ?[a-z]{1,8}=[a-z0-9]{1,8}){0,3}",
        ) {
            let sent = if upper { t.to_ascii_uppercase() } else { t.clone() };
            let h = with(header::CONTENT_TYPE, format!("{sent}{params}").as_bytes()).unwrap();
            prop_assert_eq!(content_type(&h).unwrap(), t);
        }
    }

    /// If-None-Match compares weakly (RFC 9110 13.1.2), If-Match strongly (13.1.1): a
    /// weak tag of the version is "not modified" for a read, and matches no write.
    #[test]
    fn a_weak_tag_of_the_version_is_not_modified_yet_matches_no_write() {
        let v = Version::of(b"{}");
        let weak = format!("W/{}", v.etag());
        let h = with(header::IF_NONE_MATCH, weak.as_bytes()).unwrap();
        assert!(none_match(&h, &v).unwrap());
        assert!(!none_match(&h, &Version::of(b"[]")).unwrap());
        let h = with(header::IF_MATCH, weak.as_bytes()).unwrap();
        assert!(!condition(&h).unwrap().holds(Some(&v)));
    }

    #[test]
    fn if_match_star_means_exists_and_bad_syntax_is_a_bad_request() {
        let h = with(header::IF_MATCH, b" * ").unwrap();
        assert_eq!(condition(&h).unwrap(), Condition::Exists);
        for bad in [
            &b"nope"[..],
            b"\"unterminated",
            b"W/nope",
            b"\"a\" \"b\"",
            b",",
            b"*, \"a\"",
        ] {
            let h = with(header::IF_MATCH, bad).unwrap();
            assert_eq!(
                condition(&h).unwrap_err().slug,
                "invalid-precondition",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn non_ascii_values_are_a_bad_request_not_a_panic() {
        let h = with(header::IF_MATCH, b"\"\xff\xfe\"").unwrap();
        assert_eq!(condition(&h).unwrap_err().slug, "invalid-header");
        let h = with(
            HeaderName::from_static("idempotency-key"),
            "ключ".as_bytes(),
        )
        .unwrap();
        assert_eq!(idempotency_key(&h).unwrap_err().slug, "invalid-header");
    }
}
