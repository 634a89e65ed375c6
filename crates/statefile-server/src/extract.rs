//! Extractors: what a handler needs from the request, checked, with the problem answer
//! as the rejection. A handler that runs has a valid name, query, precondition and body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::App;
use crate::headers;
use crate::problem::ApiError;
use crate::store::Condition;

/// The longest document name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Names: `A-Z a-z 0-9 . _ -` and `/` between segments; no empty, `.` or `..`
/// segment, no segment starting with a dot; ends in `.json`; bounded length.
///
/// # Errors
/// `invalid-name` (400), saying which rule the name breaks.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let bad =
        |why: &str| ApiError::bad_request("invalid-name", format!("invalid document name: {why}"));
    if name.len() > MAX_NAME_LEN {
        return Err(bad("longer than 1024 bytes"));
    }
    if !name.ends_with(".json") {
        return Err(bad("it must end in .json"));
    }
    for seg in name.split('/') {
        if seg.is_empty() {
            return Err(bad("empty segment (absolute path or '//')"));
        }
        if seg == "." || seg == ".." {
            return Err(bad("'.' and '..' segments are not allowed"));
        }
        if seg.starts_with('.') {
            return Err(bad("segments must not start with a dot"));
        }
        if seg.len() > statefile::MAX_NAME_LEN {
            return Err(bad("a segment is longer than 230 bytes"));
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            return Err(bad("only A-Z a-z 0-9 . _ - and / are allowed"));
        }
    }
    Ok(())
}

/// The document named by the path's `{name}`, percent-decoded and checked.
#[derive(Debug)]
pub struct DocName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for DocName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid-name",
                    "invalid document name: it is not UTF-8 once percent-decoded",
                )
            })?;
        check_name(&name)?;
        Ok(DocName(name))
    }
}

/// The query string as `T`; a malformed one is `invalid-query`.
#[derive(Debug)]
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Q(t))
            .map_err(|_| ApiError::bad_request("invalid-query", "the query string is malformed"))
    }
}

/// The write precondition from `If-Match` / `If-None-Match`.
#[derive(Debug)]
pub struct Precondition(pub Condition);

impl<S: Send + Sync> FromRequestParts<S> for Precondition {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        headers::condition(&parts.headers).map(Precondition)
    }
}

/// The body's bytes within `--max-body`: beyond it 413, unreadable 400.
async fn body_bytes(req: Request, app: &Arc<App>) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, app).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
                format!(
                    "the body exceeds the limit of {} bytes",
                    app.config.max_body
                ),
            )
        } else {
            ApiError::bad_request("unreadable-body", "the request body could not be read")
        }
    })
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("invalid-json", format!("the body is not valid JSON: {e}"))
    })
}

/// An `application/json` body: the value and the bytes it was parsed from.
#[derive(Debug)]
pub struct JsonBody {
    pub value: Value,
    pub raw: Bytes,
}

impl FromRequest<Arc<App>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, ApiError> {
        let ct = headers::content_type(req.headers())?;
        if ct != "application/json" {
            return Err(headers::unsupported(&ct, "application/json"));
        }
        let raw = body_bytes(req, app).await?;
        Ok(JsonBody {
            value: parse_json(&raw)?,
            raw,
        })
    }
}

/// A `PATCH` body: a merge patch (RFC 7396) or a JSON Patch (RFC 6902), by media type.
#[derive(Debug)]
pub enum PatchBody {
    Merge(Value),
    Json(json_patch::Patch),
}

impl FromRequest<Arc<App>> for PatchBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, ApiError> {
        let ct = headers::content_type(req.headers())?;
        let json_patch = match ct.as_str() {
            "application/merge-patch+json" => false,
            "application/json-patch+json" => true,
            _ => {
                return Err(headers::unsupported(
                    &ct,
                    "application/merge-patch+json or application/json-patch+json",
                ));
            }
        };
        let input = parse_json(&body_bytes(req, app).await?)?;
        if !json_patch {
            return Ok(PatchBody::Merge(input));
        }
        serde_json::from_value(input)
            .map(PatchBody::Json)
            .map_err(|e| {
                ApiError::bad_request("invalid-patch", format!("not an RFC 6902 JSON Patch: {e}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_text_is_checked_without_panic(name in "\\PC{0,300}") {
            let _ = check_name(&name);
        }

        #[test]
        fn an_accepted_name_is_plain_and_bounded(name in "[a-zA-Z0-9._/-]{0,60}(\\.json)?") {
            if check_name(&name).is_ok() {
                prop_assert!(name.ends_with(".json") && name.len() <= MAX_NAME_LEN);
                for seg in name.split('/') {
                    prop_assert!(!seg.is_empty() && !seg.starts_with('.'));
                }
            }
        }

        #[test]
        fn plain_names_are_accepted(
            segs in proptest::collection::vec("[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,20}", 0..5),
            last in "[a-zA-Z0-9_-]{1,20}",
        ) {
            let mut name = segs.join("/");
            if !name.is_empty() {
                name.push('/');
            }
            name.push_str(&last);
            name.push_str(".json");
            prop_assert!(check_name(&name).is_ok(), "{name}");
        }
    }
}
