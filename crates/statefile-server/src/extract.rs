//! Extractors: what a handler needs from the request, checked, with the problem answer
//! as the rejection. A handler that runs has a valid name, query, precondition and body.

use std::sync::Arc;

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use bytes::BytesMut;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use statefile::patch::{self, Patch, PatchErrorKind, PatchKind};

use crate::App;
use crate::headers;
use crate::limits::{self, Reservation};
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

/// The query string as `T`; a malformed one, or one with a parameter `T` does not
/// name, is `invalid-query`, saying which.
#[derive(Debug)]
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Q(t))
            .map_err(|e| {
                let why = match e {
                    QueryRejection::FailedToDeserializeQueryString(e) => e.body_text(),
                    other => other.body_text(),
                };
                ApiError::bad_request("invalid-query", why)
            })
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

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        "Request body too large",
        format!("the body exceeds the limit of {max} bytes"),
    )
}

/// The body's bytes, within `--max-body` and received within `--body-timeout`, with
/// their reservation from the body budget (taken, by the declared length, before the
/// first byte is read).
async fn receive(req: Request, app: &Arc<App>) -> Result<(Bytes, Reservation), ApiError> {
    let max = app.config.max_body;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    // Without a length (chunked), reserve the limit and give back the rest after.
    let mut reservation = app
        .limits
        .receive(declared.map_or(max, |n| n as usize))
        .await;
    let body = req.into_body();
    let bytes = tokio::time::timeout(app.config.body_timeout, collect(body, max))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                "Request body too slow",
                format!(
                    "the body did not arrive within {} s; nothing was changed",
                    app.config.body_timeout.as_secs_f64()
                ),
            )
            .closing()
        })??;
    reservation.shrink_to(bytes.len());
    Ok((bytes, reservation))
}

async fn collect(mut body: Body, max: usize) -> Result<Bytes, ApiError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            ApiError::bad_request("unreadable-body", "the request body could not be read")
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(too_large(max).closing());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Bodies larger than this are parsed on a blocking thread, not on the runtime's.
const PARSE_INLINE: usize = 64 * 1024;

/// Parse `bytes` as JSON, first reserving from the body budget the memory the value
/// can take ([`limits::parsed_size`]); a body that could need more than the whole
/// budget is 413.
async fn parse_json(bytes: Bytes, app: &Arc<App>) -> Result<(Value, Reservation), ApiError> {
    let need = limits::parsed_size(&bytes);
    let total = app.limits.parsed_total();
    if need > total {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!(
                "parsing this body could take {} MiB of memory, more than the {} MiB the server \
                 allows for parsed bodies at once (serve --max-body-memory)",
                need.div_ceil(1 << 20),
                total >> 20
            ),
        ));
    }
    let reservation = app.limits.parse(need).await;
    let parse = move || {
        let value = serde_json::from_slice::<Value>(&bytes).map_err(|e| {
            ApiError::bad_request("invalid-json", format!("the body is not valid JSON: {e}"))
        })?;
        // Parsed, a reserved key is already a different value (statefile::RESERVED_KEY).
        match statefile::reserved_key_in(&bytes) {
            Some(msg) => Err(ApiError::bad_request(
                "invalid-json",
                format!("the body cannot be stored: {msg}"),
            )),
            None => Ok(value),
        }
    };
    let value = if need <= PARSE_INLINE {
        parse()?
    } else {
        tokio::task::spawn_blocking(parse)
            .await
            .map_err(|e| ApiError::internal(format_args!("parse task failed: {e}")))??
    };
    Ok((value, reservation))
}

/// An `application/json` body, parsed, with a digest of its bytes (to tell a repeated
/// request from another) and the memory reserved for it, held until the handler is
/// done with the value.
#[derive(Debug)]
pub struct JsonBody {
    pub value: Value,
    pub digest: [u8; 32],
    pub memory: Reservation,
}

impl FromRequest<Arc<App>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, ApiError> {
        let ct = headers::content_type(req.headers())?;
        if ct != "application/json" {
            return Err(headers::unsupported(&ct, "application/json"));
        }
        let (raw, _receiving) = receive(req, app).await?;
        let digest = crate::idempotency::fingerprint(&[&raw]);
        let (value, memory) = parse_json(raw, app).await?;
        Ok(JsonBody {
            value,
            digest,
            memory,
        })
    }
}

/// A `PATCH` body and the memory reserved for it: a merge patch (RFC 7396) or a JSON
/// Patch (RFC 6902), by media type, parsed and checked by the library before the
/// document's lock is taken (JSON, form, operation count, pointers).
#[derive(Debug)]
pub struct PatchBody {
    pub patch: Patch,
    pub memory: Reservation,
}

impl FromRequest<Arc<App>> for PatchBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, ApiError> {
        let ct = headers::content_type(req.headers())?;
        let Some(kind) = PatchKind::from_media_type(&ct) else {
            return Err(headers::unsupported(
                &ct,
                "application/merge-patch+json or application/json-patch+json",
            ));
        };
        let (raw, _receiving) = receive(req, app).await?;
        let (input, memory) = parse_json(raw, app).await?;
        let limits = patch::Limits::new().max_operations(app.config.max_patch_ops);
        let patch = Patch::from_value(kind, input, &limits).map_err(patch_error)?;
        Ok(PatchBody { patch, memory })
    }
}

/// A refused patch, parsing or applying. Bad input is 400. More operations than allowed
/// is 413: the request content is larger than the server will process, whatever the
/// document. A result too large or too deep is 422, like any patch that does not apply
/// to this document: the same patch applies to a smaller one, so 413 (shrink your
/// request) would mislead. Stopped at the time limit is 503, as the timeout layer answers.
pub fn patch_error(e: patch::PatchError) -> ApiError {
    match e.kind() {
        PatchErrorKind::Syntax | PatchErrorKind::Invalid => {
            ApiError::bad_request("invalid-patch", e.to_string())
        }
        PatchErrorKind::TooManyOperations => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "patch-too-large",
            "Too many patch operations",
            format!("{e} (serve --max-patch-ops)"),
        ),
        PatchErrorKind::TooLarge => {
            ApiError::unprocessable("patch-result-too-large", format!("{e} (serve --max-body)"))
        }
        PatchErrorKind::TooDeep => ApiError::unprocessable("value-not-storable", e.to_string()),
        PatchErrorKind::Stopped => ApiError::request_timeout(format!(
            "{e}: the request's time ran out while the patch was applied; the document is \
             unchanged"
        )),
        _ => ApiError::unprocessable(
            "patch-not-applicable",
            format!("the patch does not apply: {e}"),
        ),
    }
}

/// When the request's time is up: work on it stops there (`--request-timeout`, counted
/// from when the request arrived).
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

impl FromRequestParts<Arc<App>> for Deadline {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let start = parts
            .extensions
            .get::<crate::Arrived>()
            .map_or_else(Instant::now, |a| a.0);
        Ok(Deadline(start + app.config.request_timeout))
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
