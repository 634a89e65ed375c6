//! The HTTP API. Handlers validate the request, then run the storage call on a blocking
//! thread: a write that started finishes even if the client goes away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use statefile::{BackupRef, Version, pointer};

use crate::App;
use crate::idempotency::{Idempotency, Stored};
use crate::problem::ApiError;
use crate::store::{BackupEntry, Condition, Mutator};

type ApiResult = Result<Response, ApiError>;

/// The longest document name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Names: `A-Z a-z 0-9 . _ -` and `/` between segments; no empty, `.` or `..`
/// segment, no segment starting with a dot; ends in `.json`; bounded length.
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

/// Run a storage call on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let rid = crate::problem::request_id();
    tokio::task::spawn_blocking(move || crate::problem::REQUEST_ID.sync_scope(rid, f))
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format_args!("storage task failed: {e}"))))
}

fn etag_header(v: &Version) -> HeaderValue {
    HeaderValue::from_str(&v.etag()).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

fn json_response(status: StatusCode, version: Option<&Version>, body: Vec<u8>) -> Response {
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(v) = version {
        res.headers_mut().insert(header::ETAG, etag_header(v));
    }
    res
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>, ApiError> {
    h.get(&name)
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::bad_request("invalid-header", format!("{name} is not ASCII"))
            })
        })
        .transpose()
}

/// `If-Match` / `If-None-Match: *` as a write precondition.
fn condition(h: &HeaderMap) -> Result<Condition, ApiError> {
    let if_match = header_str(h, header::IF_MATCH)?;
    let if_none = header_str(h, header::IF_NONE_MATCH)?;
    match (if_match, if_none) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid-precondition",
            "send If-Match or If-None-Match, not both",
        )),
        // If-Match compares strongly (RFC 9110 13.1.1): a weak tag never matches.
        (Some(m), None) if m.trim_start().starts_with("W/") => Err(ApiError::precondition_failed(
            "If-Match uses strong comparison, and a weak ETag never matches",
        )),
        (Some(m), None) => Version::parse(m).map(Condition::IfMatch).map_err(|_| {
            ApiError::bad_request(
                "invalid-precondition",
                "If-Match must be one ETag this server issued",
            )
        }),
        (None, Some("*")) => Ok(Condition::Absent),
        (None, Some(_)) => Err(ApiError::bad_request(
            "invalid-precondition",
            "on writes, If-None-Match only accepts *",
        )),
        (None, None) => Ok(Condition::Any),
    }
}

fn content_type(h: &HeaderMap) -> Result<String, ApiError> {
    Ok(header_str(h, header::CONTENT_TYPE)?
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase())
}

fn unsupported(got: &str, want: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
        format!("expected Content-Type {want}, got {:?}", got),
    )
}

fn body_bytes(body: Result<Bytes, BytesRejection>, max: usize) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
                format!("the body exceeds the limit of {max} bytes"),
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

fn parse_pointer(p: &str) -> Result<Vec<String>, ApiError> {
    pointer::parse(p).map_err(|e| ApiError::bad_request("invalid-pointer", e.to_string()))
}

fn query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|_| ApiError::bad_request("invalid-query", "the query string is malformed"))
}

fn pointer_error(e: pointer::PointerError, name: &str) -> ApiError {
    match e {
        pointer::PointerError::Syntax(m) => ApiError::bad_request("invalid-pointer", m),
        pointer::PointerError::NotFound(m) => ApiError::not_found(format!("{name}: {m}")),
        pointer::PointerError::NotApplicable(m) => {
            ApiError::unprocessable("pointer-not-applicable", format!("{name}: {m}"))
        }
    }
}

fn record_write(app: &App, started: Instant, w: &crate::store::Written) {
    app.metrics.write(started.elapsed(), w.lock_wait);
}

/// `GET /v1/docs`: the document names.
#[utoipa::path(get, path = "/v1/docs",
    params(("prefix" = Option<String>, Query, description = "Only names starting with this")),
    responses((status = 200, description = "Names, sorted", body = Object, example = json!({"names": ["jobs/1.json"]}))))]
pub async fn list(
    State(app): State<Arc<App>>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult {
    let prefix = query(q)?.remove("prefix").unwrap_or_default();
    let store = app.store.clone();
    let names = blocking(move || store.list(&prefix)).await?;
    Ok(json_response(
        StatusCode::OK,
        None,
        json!({ "names": names }).to_string().into_bytes(),
    ))
}

/// Everything under `/v1/docs/...`: the document, or its `append`, `backups`, `restore`.
pub async fn dispatch(
    method: axum::http::Method,
    State(app): State<Arc<App>>,
    Path(rest): Path<String>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    use axum::http::Method;
    let q = query(q)?;
    let (name, action) = match rest.rsplit_once('/') {
        Some((n, a @ ("append" | "backups" | "restore"))) => (n.to_string(), Some(a)),
        _ => (rest.clone(), None),
    };
    check_name(&name)?;
    let not_allowed = || {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("{method} is not supported here"),
        )
    };
    match (action, &method) {
        (None, &Method::GET) => get_doc(app, name, q, headers).await,
        (None, &Method::PUT) => put_doc(app, name, headers, body).await,
        (None, &Method::PATCH) => patch_doc(app, name, headers, body).await,
        (None, &Method::DELETE) => delete_doc(app, name, headers).await,
        (Some("append"), &Method::POST) => append(app, name, q, headers, body).await,
        (Some("backups"), &Method::GET) => backups(app, name).await,
        (Some("restore"), &Method::POST) => restore(app, name, q).await,
        _ => Err(not_allowed()),
    }
}

/// `GET /v1/docs/{name}`: the document (or one value) with its ETag.
#[utoipa::path(get, path = "/v1/docs/{name}",
    params(("name" = String, Path, description = "Document name, e.g. view/resData.json"),
           ("pointer" = Option<String>, Query, description = "RFC 6901 pointer to one value"),
           ("If-None-Match" = Option<String>, Header, description = "ETag the client has")),
    responses((status = 200, description = "The document; ETag header; Statefile-Recovered-From if served from a backup"),
              (status = 304, description = "Unchanged"),
              (status = 400, description = "Bad name or pointer"),
              (status = 404, description = "No such document or value")))]
pub async fn get_doc(
    app: Arc<App>,
    name: String,
    q: HashMap<String, String>,
    headers: HeaderMap,
) -> ApiResult {
    let tokens = q.get("pointer").map(|p| parse_pointer(p)).transpose()?;
    let store = app.store.clone();
    let n = name.clone();
    let f = blocking(move || store.get(&n)).await?;
    if let Some(b) = f.recovered_from {
        app.metrics.recovery();
        tracing::warn!(request_id = %crate::problem::request_id(), document = %name, backup = b,
            "document is damaged; served its newest good backup");
    }
    if let Some(inm) = header_str(&headers, header::IF_NONE_MATCH)?
        && (inm.trim() == "*"
            || inm
                .split(',')
                .any(|t| Version::parse(t).is_ok_and(|v| v == f.version)))
    {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        res.headers_mut()
            .insert(header::ETAG, etag_header(&f.version));
        if let Some(b) = f.recovered_from {
            // The client's copy is the backup's: say so here too.
            res.headers_mut()
                .insert("statefile-recovered-from", HeaderValue::from(b));
        }
        return Ok(res);
    }
    let body = match tokens {
        None => f.bytes,
        Some(tokens) => {
            let v: Value = serde_json::from_slice(&f.bytes).map_err(ApiError::internal)?;
            let at = pointer::get(&v, &tokens).map_err(|e| pointer_error(e, &name))?;
            let mut out = serde_json::to_vec(at).map_err(ApiError::internal)?;
            out.push(b'\n');
            out
        }
    };
    let mut res = json_response(StatusCode::OK, Some(&f.version), body);
    if let Some(b) = f.recovered_from {
        res.headers_mut()
            .insert("statefile-recovered-from", HeaderValue::from(b));
    }
    Ok(res)
}

/// `PUT /v1/docs/{name}`: create (201) or replace (200).
#[utoipa::path(put, path = "/v1/docs/{name}",
    params(("name" = String, Path, description = "Document name"),
           ("If-Match" = Option<String>, Header, description = "Replace only at this ETag"),
           ("If-None-Match" = Option<String>, Header, description = "* to create only")),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, description = "Replaced; ETag"), (status = 201, description = "Created; ETag"),
              (status = 400, description = "Invalid JSON or name"), (status = 412, description = "Precondition failed"),
              (status = 413, description = "Body too large"), (status = 415, description = "Not application/json"),
              (status = 507, description = "No space left")))]
pub async fn put_doc(
    app: Arc<App>,
    name: String,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let ct = content_type(&headers)?;
    if ct != "application/json" {
        return Err(unsupported(&ct, "application/json"));
    }
    let cond = condition(&headers)?;
    let value = parse_json(&body_bytes(body, app.config.max_body)?)?;
    let store = app.store.clone();
    let started = Instant::now();
    let w = blocking(move || store.put(&name, &value, &cond)).await?;
    record_write(&app, started, &w);
    let status = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        status,
        Some(&w.version),
        json!({"version": w.version.as_str()})
            .to_string()
            .into_bytes(),
    ))
}

/// `PATCH /v1/docs/{name}`: merge patch (RFC 7396) or JSON Patch (RFC 6902) under the lock.
#[utoipa::path(patch, path = "/v1/docs/{name}",
    params(("name" = String, Path, description = "Document name"),
           ("If-Match" = Option<String>, Header, description = "Apply only at this ETag")),
    request_body(content((Object = "application/merge-patch+json"), (Vec<Object> = "application/json-patch+json"))),
    responses((status = 200, description = "Patched; ETag"), (status = 404, description = "JSON Patch on a missing document"),
              (status = 412, description = "Precondition failed"), (status = 415, description = "Not a patch media type"),
              (status = 422, description = "The patch does not apply"),
              (status = 500, description = "The document is damaged (corrupt-document)")))]
pub async fn patch_doc(
    app: Arc<App>,
    name: String,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let ct = content_type(&headers)?;
    let json_patch = match ct.as_str() {
        "application/merge-patch+json" => false,
        "application/json-patch+json" => true,
        _ => {
            return Err(unsupported(
                &ct,
                "application/merge-patch+json or application/json-patch+json",
            ));
        }
    };
    let cond = condition(&headers)?;
    let input = parse_json(&body_bytes(body, app.config.max_body)?)?;
    let f: Mutator<'static> = if json_patch {
        let ops: json_patch::Patch = serde_json::from_value(input).map_err(|e| {
            ApiError::bad_request("invalid-patch", format!("not an RFC 6902 JSON Patch: {e}"))
        })?;
        Box::new(move |v| {
            json_patch::patch(v, &ops)
                .map(|()| Value::Null)
                .map_err(|e| {
                    ApiError::unprocessable(
                        "patch-not-applicable",
                        format!("the patch does not apply: {e}"),
                    )
                })
        })
    } else {
        Box::new(move |v| {
            json_patch::merge(v, &input);
            Ok(Value::Null)
        })
    };
    let init = (!json_patch).then(|| json!({}));
    let store = app.store.clone();
    let started = Instant::now();
    let (_, w) = blocking(move || store.update(&name, &cond, init, f)).await?;
    record_write(&app, started, &w);
    Ok(json_response(
        StatusCode::OK,
        Some(&w.version),
        json!({"version": w.version.as_str()})
            .to_string()
            .into_bytes(),
    ))
}

/// `DELETE /v1/docs/{name}`: moved to its backup (restorable).
#[utoipa::path(delete, path = "/v1/docs/{name}",
    params(("name" = String, Path, description = "Document name"),
           ("If-Match" = Option<String>, Header, description = "Delete only at this ETag")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such document"),
              (status = 412, description = "Precondition failed")))]
pub async fn delete_doc(app: Arc<App>, name: String, headers: HeaderMap) -> ApiResult {
    let cond = condition(&headers)?;
    let store = app.store.clone();
    let started = Instant::now();
    blocking(move || store.delete(&name, &cond)).await?;
    // A delete is a write (a rename and a directory sync): it counts in the histogram.
    app.metrics
        .write(started.elapsed(), std::time::Duration::ZERO);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/docs/{name}/append?pointer=/cases`: append the body to the array there.
#[utoipa::path(post, path = "/v1/docs/{name}/append",
    params(("name" = String, Path, description = "Document name"),
           ("pointer" = Option<String>, Query, description = "The array (created if missing); default: the document"),
           ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key (10 min, in memory)")),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, description = "Appended: {index, version}; ETag", example = json!({"index": 3, "version": "9f86d0..."})),
              (status = 400, description = "Invalid JSON or pointer"),
              (status = 422, description = "The pointer names something that is not an array"),
              (status = 503, description = "Lock timeout; Retry-After")))]
pub async fn append(
    app: Arc<App>,
    name: String,
    q: HashMap<String, String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let ct = content_type(&headers)?;
    if ct != "application/json" {
        return Err(unsupported(&ct, "application/json"));
    }
    let pointer_text = q.get("pointer").cloned().unwrap_or_default();
    let tokens = parse_pointer(&pointer_text)?;
    let raw = body_bytes(body, app.config.max_body)?;
    let value = parse_json(&raw)?;
    let request = crate::idempotency::fingerprint(&[pointer_text.as_bytes(), &raw]);
    let key = header_str(
        &headers,
        "idempotency-key".parse().expect("static header name"),
    )?
    .map(str::to_string);
    if key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > Idempotency::MAX_KEY_LEN)
    {
        return Err(ApiError::bad_request(
            "invalid-idempotency-key",
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    let init = if tokens.is_empty() {
        json!([])
    } else {
        json!({})
    };
    let run = {
        let app = app.clone();
        let name = name.clone();
        move || async move {
            let store = app.store.clone();
            let started = Instant::now();
            let n = name.clone();
            let (index, w) = blocking(move || {
                let label = n.clone();
                store.update(
                    &n,
                    &Condition::Any,
                    Some(init),
                    Box::new(move |v| {
                        pointer::append(v, &tokens, value)
                            .map(|i| json!(i))
                            .map_err(|e| pointer_error(e, &label))
                    }),
                )
            })
            .await?;
            record_write(&app, started, &w);
            Ok::<Stored, ApiError>(Stored {
                status: 200,
                etag: w.version.etag(),
                body: json!({"index": index, "version": w.version.as_str()})
                    .to_string()
                    .into_bytes(),
            })
        }
    };
    // Spawned, so the write (and the answer kept for repeats) completes even if this
    // client disconnects.
    let stored = match key {
        Some(key) => {
            let slot = app.idempotency.slot(&name, &key, request).map_err(|_| {
                ApiError::unprocessable(
                    "idempotency-key-reused",
                    format!(
                        "Idempotency-Key {key:?} was already used for a different append to \
                         document {name}; use a new key for a new request"
                    ),
                )
            })?;
            let rid = crate::problem::request_id();
            tokio::spawn(
                crate::problem::REQUEST_ID
                    .scope(rid, async move { slot.get_or_try_init(run).await.cloned() }),
            )
            .await
        }
        None => {
            let rid = crate::problem::request_id();
            tokio::spawn(crate::problem::REQUEST_ID.scope(rid, async move { run().await })).await
        }
    }
    .map_err(|e| ApiError::internal(format_args!("append task failed: {e}")))??;
    let mut res = (
        StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
        stored.body,
    )
        .into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&stored.etag) {
        res.headers_mut().insert(header::ETAG, v);
    }
    Ok(res)
}

/// `GET /v1/docs/{name}/backups`: the kept versions, newest (1) first.
#[utoipa::path(get, path = "/v1/docs/{name}/backups",
    params(("name" = String, Path, description = "Document name")),
    responses((status = 200, description = "Backups", body = [BackupEntry]), (status = 404, description = "Unknown document")))]
pub async fn backups(app: Arc<App>, name: String) -> ApiResult {
    let store = app.store.clone();
    let list = blocking(move || store.backups(&name)).await?;
    Ok(json_response(
        StatusCode::OK,
        None,
        serde_json::to_vec(&json!({ "backups": list })).map_err(ApiError::internal)?,
    ))
}

/// `POST /v1/docs/{name}/restore?from=N`: restore a backup (by number or version).
#[utoipa::path(post, path = "/v1/docs/{name}/restore",
    params(("name" = String, Path, description = "Document name"),
           ("from" = Option<String>, Query, description = "Backup number (1 = newest) or version; default the newest good one")),
    responses((status = 200, description = "Restored; ETag"), (status = 404, description = "No such backup")))]
pub async fn restore(app: Arc<App>, name: String, q: HashMap<String, String>) -> ApiResult {
    let which = match q.get("from").map(String::as_str) {
        None | Some("") => BackupRef::NewestGood,
        Some(s) if s.len() < 10 && s.bytes().all(|b| b.is_ascii_digit()) => BackupRef::Number(
            s.parse()
                .map_err(|_| ApiError::bad_request("invalid-query", "bad backup number"))?,
        ),
        Some(s) => BackupRef::Version(Version::parse(s).map_err(|_| {
            ApiError::bad_request("invalid-query", "from must be a backup number or a version")
        })?),
    };
    let store = app.store.clone();
    let started = Instant::now();
    let n = name.clone();
    let w = blocking(move || store.restore(&n, &which))
        .await
        .map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                ApiError::not_found(format!("document {name} has no such backup"))
            } else {
                e
            }
        })?;
    record_write(&app, started, &w);
    Ok(json_response(
        StatusCode::OK,
        Some(&w.version),
        json!({"version": w.version.as_str()})
            .to_string()
            .into_bytes(),
    ))
}

/// `GET /healthz`: liveness (no authentication).
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, description = "ok")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut res = app.metrics.render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    res
}

/// The OpenAPI description, generated from the annotations on the handlers above.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(
        title = "statefile",
        description = "Atomic, durable JSON documents over HTTP. Errors are RFC 9457 problem+json."
    ),
    paths(
        list, get_doc, put_doc, patch_doc, delete_doc, append, backups, restore, healthz, metrics,
        openapi
    ),
    components(schemas(BackupEntry)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The `--token` scheme: every route but `/healthz` needs `Authorization: Bearer`, and
/// any route answers 401 without it.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::ResponseBuilder;
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        api.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        // The answers any route may give, whatever its own annotation lists.
        let shared = [
            (
                "401",
                "Missing or wrong bearer token (when the server runs with --token)",
            ),
            (
                "500",
                "problem+json: corrupt-document, storage-permission, durability-unknown or internal (with the request id)",
            ),
            (
                "503",
                "problem+json: lock-timeout or request-timeout, with Retry-After",
            ),
        ];
        for (path, item) in api.paths.paths.iter_mut() {
            if path == "/healthz" {
                continue;
            }
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                for (code, text) in shared {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| ResponseBuilder::new().description(text).build().into());
                }
            }
        }
    }
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "This description")))]
pub async fn openapi() -> Response {
    use utoipa::OpenApi;
    match ApiDoc::openapi().to_json() {
        Ok(s) => json_response(StatusCode::OK, None, s.into_bytes()),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// Unknown routes.
pub async fn fallback() -> ApiError {
    ApiError::not_found("no such route")
}
