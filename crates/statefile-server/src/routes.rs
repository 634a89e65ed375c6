//! The HTTP API. Handlers receive checked input (see `extract`), then run the storage
//! call on a blocking thread: a write that started finishes even if the client goes
//! away.
//!
//! axum routes every request. A wildcard must end a route, so
//! `/v1/docs/{name}/append|backups|restore` are rewritten before routing by
//! [`map_request`] into routes of their own; this is unambiguous because a name ends in
//! `.json`, never in `/append`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use statefile::patch::{self, PatchKind};
use statefile::{BackupRef, Version, pointer};

use crate::App;
use crate::extract::{Deadline, DocName, JsonBody, PatchBody, Precondition, Q, patch_error};
use crate::headers;
use crate::idempotency::Stored;
use crate::problem::ApiError;
use crate::store::{Condition, Keyed, Mutator, StoreError, StoreResult, TxFailed};

type ApiResult = Result<Response, ApiError>;

/// Where the operations on a document's name are routed after [`map_request`]. Not
/// reachable from outside: a request for a path under it is answered 404.
const INTERNAL: &str = "/.internal";

/// The routes as registered, with the path each stands for in the API (its metric
/// label and its OpenAPI path).
pub const ROUTES: [(&str, &str); 9] = [
    ("/v1/docs", "/v1/docs"),
    ("/v1/tx", "/v1/tx"),
    ("/v1/docs/{*name}", "/v1/docs/{name}"),
    ("/.internal/append/{*name}", "/v1/docs/{name}/append"),
    ("/.internal/backups/{*name}", "/v1/docs/{name}/backups"),
    ("/.internal/restore/{*name}", "/v1/docs/{name}/restore"),
    ("/metrics", "/metrics"),
    ("/openapi.json", "/openapi.json"),
    ("/healthz", "/healthz"),
];

/// The API path a matched route stands for, e.g. `/v1/docs/{name}/append`.
pub fn route_label(matched: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|(registered, _)| *registered == matched)
        .map_or("unmatched", |(_, public)| public)
}

/// The request-mapping step before routing: `/v1/docs/{name}/{op}` for the operations
/// `append`, `backups` and `restore` becomes `/.internal/{op}/{name}` (query kept); a
/// request that names an internal path itself is sent where nothing is routed.
pub fn map_request(mut req: Request) -> Request {
    let path = req.uri().path();
    let to = if let Some(rest) = path.strip_prefix("/v1/docs/") {
        match rest.rsplit_once('/') {
            Some((name, op @ ("append" | "backups" | "restore"))) if !name.is_empty() => {
                format!("{INTERNAL}/{op}/{name}")
            }
            _ => return req,
        }
    } else if path == INTERNAL || path.starts_with("/.internal/") {
        INTERNAL.to_string()
    } else {
        return req;
    };
    let to = match req.uri().query() {
        Some(q) => format!("{to}?{q}"),
        None => to,
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = to.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Whether a storage call reads or writes the document (writes queue per document),
/// or is a transaction that may hold up to `descriptors` files open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    Tx { descriptors: usize },
}

/// Where a request stands against its time limit: still waiting (nothing handed to the
/// storage), its write handed to the storage (which runs it to its end), or cut off at
/// the limit (nothing may be handed over any more). Each request has one, changed by
/// compare-and-swap only, so the two ends cannot both win.
#[derive(Debug, Default)]
pub(crate) struct Handover(std::sync::atomic::AtomicU8);

const WAITING: u8 = 0;
const HANDED_OVER: u8 = 1;
const CUT_OFF: u8 = 2;

impl Handover {
    /// The write is about to go to the storage: false if the request was cut off.
    fn hand_over(&self) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        matches!(
            self.0
                .compare_exchange(WAITING, HANDED_OVER, AcqRel, Acquire),
            Ok(_) | Err(HANDED_OVER)
        )
    }

    /// The time is up: true if nothing was handed over (and now nothing will be).
    pub(crate) fn cut_off(&self) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        self.0
            .compare_exchange(WAITING, CUT_OFF, AcqRel, Acquire)
            .is_ok()
    }
}

tokio::task_local! {
    /// The request's [`Handover`]: [`storage`] marks a write handed over before it
    /// sends it to a storage thread, from where it runs to its end; the request's time
    /// limit (`time_limit` in lib.rs) then waits for its answer instead of cutting it
    /// off. A task the request spawns carries it along ([`in_this_request`]).
    pub(crate) static HANDOVER: Arc<Handover>;
}

/// `fut`, carrying the request's [`HANDOVER`] into a task it is spawned as.
fn in_this_request<F: std::future::Future>(fut: F) -> impl std::future::Future<Output = F::Output> {
    let handover = HANDOVER.try_with(Arc::clone).unwrap_or_default();
    HANDOVER.scope(handover, fut)
}

/// Run a storage call for document `name` on a blocking thread once it has its turn
/// ([`crate::limits::Limits`]), and answer its error. The turn is held by the call, so
/// a call that outlives its request (the client left, or the time ran out) still
/// counts against the limits until it ends.
async fn storage<T: Send + 'static>(
    app: &App,
    name: &str,
    access: Access,
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> Result<T, ApiError> {
    let turn = match access {
        Access::Read => app.limits.read_turn().await,
        Access::Write => app.limits.write_turn(name).await,
        Access::Tx { descriptors } => app.limits.tx_turn(name, descriptors).await,
    };
    // Outside a request (tests calling a handler directly) there is no time limit.
    if !matches!(access, Access::Read) && HANDOVER.try_with(|h| h.hand_over()) == Ok(false) {
        return Err(ApiError::request_timeout(
            "the server did not finish in time; this request wrote nothing (an append sent again with the same Idempotency-Key is answered as the first one was)",
        ));
    }
    blocking(name, move || {
        let _turn = turn;
        f()
    })
    .await
}

/// Run a storage call on a blocking thread, and answer its error for document `name`.
async fn blocking<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> Result<T, ApiError> {
    let rid = crate::problem::request_id();
    tokio::task::spawn_blocking(move || crate::problem::REQUEST_ID.sync_scope(rid, f))
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::new(
                statefile::ErrorKind::Io,
                format!("storage task failed: {e}"),
            ))
        })
        .map_err(|e| ApiError::from_store(e, name))
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

fn version_response(status: StatusCode, v: &Version) -> Response {
    json_response(
        status,
        Some(v),
        json!({"version": v.as_str()}).to_string().into_bytes(),
    )
}

fn parse_pointer(p: &str) -> Result<Vec<String>, ApiError> {
    pointer::parse(p).map_err(|e| ApiError::bad_request("invalid-pointer", e.to_string()))
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

/// A query; a parameter it does not name is refused, so that a misspelt one is not
/// silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointerQuery {
    pointer: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreQuery {
    from: Option<String>,
}

/// `GET /v1/docs`: the document names.
#[utoipa::path(get, path = "/v1/docs",
    params(("prefix" = Option<String>, Query, description = "Only names starting with this")),
    responses((status = 200, description = "Names, sorted", body = Object, example = json!({"names": ["jobs/1.json"]}))))]
pub async fn list(State(app): State<Arc<App>>, Q(q): Q<ListQuery>) -> ApiResult {
    let prefix = q.prefix.unwrap_or_default();
    let store = app.store.clone();
    let p = prefix.clone();
    let names = storage(&app, &prefix, Access::Read, move || store.list(&p)).await?;
    Ok(json_response(
        StatusCode::OK,
        None,
        json!({ "names": names }).to_string().into_bytes(),
    ))
}

/// `GET /v1/docs/{name}`: the document (or one value) with its ETag.
#[utoipa::path(get, path = "/v1/docs/{name}",
    params(("name" = String, Path, description = "Document name, e.g. view/resData.json"),
           ("pointer" = Option<String>, Query, description = "RFC 6901 pointer to one value"),
           ("If-None-Match" = Option<String>, Header, description = "ETag the client has")),
    responses((status = 200, description = "The document (or the value at the pointer), with its ETag",
               headers(("ETag" = String, description = "The document's version, quoted"),
                       ("Statefile-Recovered-From" = Option<u32>, description = "Set when the document is damaged and this answer, whatever its status, was computed from this backup (1 = newest)"))),
              (status = 304, description = "Unchanged"),
              (status = 400, description = "Bad name or pointer"),
              (status = 404, description = "No such document or value")))]
pub async fn get_doc(
    State(app): State<Arc<App>>,
    DocName(name): DocName,
    Q(q): Q<PointerQuery>,
    headers: HeaderMap,
) -> ApiResult {
    let tokens = q.pointer.as_deref().map(parse_pointer).transpose()?;
    let store = app.store.clone();
    let n = name.clone();
    let f = storage(&app, &name, Access::Read, move || store.get(&n)).await?;
    if let Some(b) = f.recovered_from {
        app.metrics.recovery();
        tracing::warn!(request_id = %crate::problem::request_id(), document = %name, backup = b,
            "document is damaged; served its newest good backup");
    }
    if headers::none_match(&headers, &f.version)? {
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
        None => Ok(f.bytes),
        Some(tokens) => value_at(&f.bytes, &tokens, &name),
    };
    // Whatever the answer, if it was computed from a backup it says so.
    let mut res = match body {
        Ok(body) => json_response(StatusCode::OK, Some(&f.version), body),
        Err(e) => e.into_response(),
    };
    if let Some(b) = f.recovered_from {
        res.headers_mut()
            .insert("statefile-recovered-from", HeaderValue::from(b));
    }
    Ok(res)
}

/// The value at `tokens` in the document `bytes`, as JSON with a newline.
fn value_at(bytes: &[u8], tokens: &[String], name: &str) -> Result<Vec<u8>, ApiError> {
    // The bytes parsed when read; a reserved key (statefile::RESERVED_KEY) would read as
    // a number here, and is refused as the library's typed reads refuse it.
    let v: Value = statefile::parse_json(bytes, std::path::Path::new(name))
        .map_err(|e| ApiError::from_store(e.into(), name))?;
    let at = pointer::get(&v, tokens).map_err(|e| pointer_error(e, name))?;
    let mut out = serde_json::to_vec(at).map_err(ApiError::internal)?;
    out.push(b'\n');
    Ok(out)
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
    State(app): State<Arc<App>>,
    DocName(name): DocName,
    Precondition(cond): Precondition,
    body: JsonBody,
) -> ApiResult {
    let store = app.store.clone();
    let started = Instant::now();
    let n = name.clone();
    let JsonBody { value, memory, .. } = body;
    let w = storage(&app, &name, Access::Write, move || {
        let _memory = memory;
        store.put(&n, &value, &cond)
    })
    .await?;
    record_write(&app, started, &w);
    let status = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(version_response(status, &w.version))
}

/// `PATCH /v1/docs/{name}`: merge patch (RFC 7396) or JSON Patch (RFC 6902) under the lock.
#[utoipa::path(patch, path = "/v1/docs/{name}",
    params(("name" = String, Path, description = "Document name"),
           ("If-Match" = Option<String>, Header, description = "Apply only at this ETag")),
    request_body(content((Object = "application/merge-patch+json"), (Vec<Object> = "application/json-patch+json"))),
    responses((status = 200, description = "Patched; ETag"),
              (status = 400, description = "Not JSON, not a patch, or a bad pointer (invalid-patch)"),
              (status = 404, description = "JSON Patch on a missing document"),
              (status = 412, description = "Precondition failed"),
              (status = 413, description = "Body too large, or more operations than --max-patch-ops (patch-too-large)"),
              (status = 415, description = "Not a patch media type"),
              (status = 422, description = "The patch does not apply (patch-not-applicable), or its result would exceed --max-body (patch-result-too-large) or nest too deep (value-not-storable)"),
              (status = 500, description = "The document is damaged (corrupt-document)")))]
pub async fn patch_doc(
    State(app): State<Arc<App>>,
    DocName(name): DocName,
    Precondition(cond): Precondition,
    Deadline(deadline): Deadline,
    body: PatchBody,
) -> ApiResult {
    if cond == Condition::Absent {
        return Err(ApiError::bad_request(
            "invalid-precondition",
            "If-None-Match: * only applies to PUT",
        ));
    }
    // Everything that does not need the document was checked before this point: the
    // media type, the JSON, the patch's form and its number of operations. Under the
    // lock only the applying is left, bounded by --max-body: it stops when the request's
    // time is up, and the document is then left unchanged.
    let PatchBody { patch, memory } = body;
    let limits = patch::Limits::new()
        .max_result_bytes(app.config.max_body)
        .deadline(deadline);
    // A merge patch creates a missing document; a JSON Patch needs it to exist.
    let init = (patch.kind() == PatchKind::Merge).then(|| json!({}));
    let f: Mutator<'static> = Box::new(move |v| {
        let _memory = memory;
        // The update is abandoned on an error, so the patch need not undo its work.
        patch
            .apply_or_abandon(v, &limits)
            .map(|()| Value::Null)
            .map_err(|e| StoreError::mutation(patch_error(e)))
    });
    let store = app.store.clone();
    let started = Instant::now();
    let n = name.clone();
    let (_, w) = storage(&app, &name, Access::Write, move || {
        store.update(&n, &cond, init, f)
    })
    .await?;
    record_write(&app, started, &w);
    Ok(version_response(StatusCode::OK, &w.version))
}

/// `DELETE /v1/docs/{name}`: moved to its backup (restorable).
#[utoipa::path(delete, path = "/v1/docs/{name}",
    params(("name" = String, Path, description = "Document name"),
           ("If-Match" = Option<String>, Header, description = "Delete only at this ETag")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such document"),
              (status = 412, description = "Precondition failed")))]
pub async fn delete_doc(
    State(app): State<Arc<App>>,
    DocName(name): DocName,
    Precondition(cond): Precondition,
) -> ApiResult {
    let store = app.store.clone();
    let started = Instant::now();
    let n = name.clone();
    storage(&app, &name, Access::Write, move || store.delete(&n, &cond)).await?;
    // A delete is a write (a rename and a directory sync): it counts in the histogram.
    app.metrics
        .write(started.elapsed(), std::time::Duration::ZERO);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/docs/{name}/append?pointer=/cases`: append the body to the array there.
#[utoipa::path(post, path = "/v1/docs/{name}/append",
    params(("name" = String, Path, description = "Document name"),
           ("pointer" = Option<String>, Query, description = "The array (created if missing); default: the document"),
           ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters. A repeat of this request (same document, pointer and body) within 10 minutes gets the first answer, marked Idempotent-Replayed: true, and appends nothing; the same key with another request is 422. A key belongs to one document. The file backend keeps up to 10,000 keys in memory (a restart forgets them), the PostgreSQL backend keeps them in the database. Use a fresh key per logical append.")),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, description = "Appended: {index, version}; ETag",
               headers(("ETag" = String, description = "The version the append made"),
                       ("Idempotent-Replayed" = Option<String>, description = "true when this is the kept answer to an earlier request with the same Idempotency-Key: nothing was appended now")),
               example = json!({"index": 3, "version": "9f86d0..."})),
              (status = 400, description = "Invalid JSON or pointer"),
              (status = 422, description = "The pointer names something that is not an array"),
              (status = 503, description = "Lock timeout; Retry-After")))]
pub async fn append(
    State(app): State<Arc<App>>,
    DocName(name): DocName,
    Q(q): Q<PointerQuery>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult {
    let pointer_text = q.pointer.unwrap_or_default();
    let tokens = parse_pointer(&pointer_text)?;
    let key = headers::idempotency_key(&headers)?;
    let request = crate::idempotency::fingerprint(&[pointer_text.as_bytes(), &body.digest]);
    let JsonBody { value, memory, .. } = body;
    let init = if tokens.is_empty() {
        json!([])
    } else {
        json!({})
    };
    // Set when this request's own append runs; a request answered without it is a replay.
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let run = {
        let app = app.clone();
        let name = name.clone();
        let key = key.clone();
        let ran = ran.clone();
        move || async move {
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
            let store = app.store.clone();
            let started = Instant::now();
            let n = name.clone();
            let (index, w) = storage(&app, &name, Access::Write, move || {
                let label = n.clone();
                let f: Mutator<'_> = Box::new(move |v| {
                    let _memory = memory;
                    pointer::append(v, &tokens, value)
                        .map(|i| json!(i))
                        .map_err(|e| StoreError::mutation(pointer_error(e, &label)))
                });
                match &key {
                    Some(key) => store.update_keyed(
                        &n,
                        &Keyed {
                            key,
                            request: &request,
                        },
                        Some(init),
                        f,
                    ),
                    None => store.update(&n, &Condition::Any, Some(init), f),
                }
            })
            .await?;
            record_write(&app, started, &w);
            Ok::<Stored, ApiError>(Stored {
                status: 200,
                etag: w.version.etag(),
                body: json!({"index": index, "version": w.version.as_str()})
                    .to_string()
                    .into_bytes(),
                replayed: w.replayed,
            })
        }
    };
    // Spawned, so the write (and the answer kept for repeats) completes even if this
    // client disconnects.
    let rid = crate::problem::request_id();
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
            tokio::spawn(in_this_request(
                crate::problem::REQUEST_ID
                    .scope(rid, async move { slot.get_or_try_init(run).await.cloned() }),
            ))
            .await
        }
        None => {
            tokio::spawn(in_this_request(
                crate::problem::REQUEST_ID.scope(rid, async move { run().await }),
            ))
            .await
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
    if stored.replayed || !ran.load(std::sync::atomic::Ordering::SeqCst) {
        // The first answer to this key, repeated: nothing was appended now (the ETag is
        // the version that append made, which the document may have left since).
        res.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(res)
}

/// `POST /v1/tx`: a JSON array of operations on documents, applied as one transaction
/// (a file store must be in journal mode; PostgreSQL runs one SQL transaction): every
/// change or none, even across a crash.
#[utoipa::path(post, path = "/v1/tx",
    request_body(content = Vec<Object>, content_type = "application/json",
        description = "Operations, each {\"op\": \"put\"|\"patch\"|\"append\"|\"delete\"|\"get\", \"doc\": name, ...} with an optional \"if_match\": version or \"if_none_match\": \"*\" (see statefile tx --help). They apply in order, each precondition checked against the document as the operations before it left it: after a put, patch or append of it, it exists at the version of the bytes written (the version the answer reports for it); after a delete, it does not exist",
        example = json!([{"op": "delete", "doc": "queue/7.json"}, {"op": "put", "doc": "jobs/7.json", "value": {"state": "running"}}])),
    responses((status = 200, description = "Committed: {\"results\": [{\"doc\", \"op\", \"version\", \"etag\", \"value\" (get), \"index\" (append)}]}", body = Object),
              (status = 400, description = "Malformed operations or names; over 1000 operations, or documents in over 4000 distinct directories"),
              (status = 404, description = "A get, delete or JSON Patch of a missing document"),
              (status = 412, description = "A precondition failed (checked against the document as the earlier operations left it); names the document; nothing written"),
              (status = 413, description = "transaction-too-large: its documents need more open files at once than the server may have (ulimit -n); nothing written"),
              (status = 422, description = "A patch or append does not apply; nothing written"),
              (status = 501, description = "The file store is not in journal mode"),
              (status = 503, description = "Lock timeout; Retry-After")))]
pub async fn transaction(
    State(app): State<Arc<App>>,
    Deadline(deadline): Deadline,
    body: JsonBody,
) -> ApiResult {
    let JsonBody { value, memory, .. } = body;
    // The deadline stops the work (patches, and between operations) when the request's
    // time is up, which releases the documents' locks: the timeout layer's 503 alone
    // would leave the transaction running, holding them.
    let limits = patch::Limits::new()
        .max_operations(app.config.max_patch_ops)
        .max_result_bytes(app.config.max_body)
        .deadline(deadline);
    let ops = statefile::parse_tx_ops(&value, &limits)
        .map_err(|e| ApiError::bad_request("invalid-transaction", e))?;
    drop(value);
    for op in &ops {
        crate::extract::check_name(&op.doc)?;
    }
    let store = app.store.clone();
    let started = Instant::now();
    // The first document names the request's turn at the storage and its errors; the
    // turn counts the files the transaction holds open (a lock file per document).
    let first = ops[0].doc.clone();
    let descriptors = app.store.tx_descriptors(&ops);
    if let Some(most) = app.limits.max_tx_descriptors()
        && descriptors > most
    {
        // However long it waited, it would run out of descriptors: refused, not 503.
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "transaction-too-large",
            "The transaction needs more open files than the server may have",
            format!(
                "the transaction's documents need about {descriptors} open files at once (a \
                 lock file per document, a handle per directory); this server may have {most} \
                 (its open-file limit, ulimit -n, less what it keeps for itself): split the \
                 transaction, or raise the limit; nothing was written"
            ),
        ));
    }
    let outcome = storage(&app, &first, Access::Tx { descriptors }, move || {
        let _memory = memory;
        Ok(store.transaction(&ops, &limits))
    })
    .await?;
    let results = outcome.map_err(|f| match f {
        TxFailed::Store { doc, error } => {
            ApiError::from_store(error, doc.as_deref().unwrap_or("(transaction)"))
        }
        TxFailed::NotApplicable { doc, message } => {
            ApiError::unprocessable("patch-not-applicable", format!("document {doc}: {message}"))
        }
        TxFailed::PointerNotFound(what) => ApiError::not_found(what),
        TxFailed::Stopped(why) => {
            ApiError::request_timeout(format!("{why}: the request's time ran out"))
        }
        TxFailed::Unsupported(why) => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "transactions-unavailable",
            "Transactions are unavailable",
            why,
        ),
    })?;
    if results.iter().any(|r| r.op != "get") {
        app.metrics
            .write(started.elapsed(), std::time::Duration::ZERO);
    }
    let out: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut v = r.to_json();
            v["etag"] = json!(r.version.as_ref().map(Version::etag));
            v
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        None,
        serde_json::to_vec(&json!({ "results": out })).map_err(ApiError::internal)?,
    ))
}

/// `GET /v1/docs/{name}/backups`: the kept versions, newest (1) first.
#[utoipa::path(get, path = "/v1/docs/{name}/backups",
    params(("name" = String, Path, description = "Document name")),
    responses((status = 200, description = "The kept versions, newest first: {\"backups\": [BackupEntry...]}", body = Object), (status = 404, description = "Unknown document")))]
pub async fn backups(State(app): State<Arc<App>>, DocName(name): DocName) -> ApiResult {
    let store = app.store.clone();
    let n = name.clone();
    let list = storage(&app, &name, Access::Read, move || store.backups(&n)).await?;
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
pub async fn restore(
    State(app): State<Arc<App>>,
    DocName(name): DocName,
    Q(q): Q<RestoreQuery>,
) -> ApiResult {
    let which = match q.from.as_deref() {
        None | Some("") => BackupRef::NewestGood,
        Some(s) => s.parse().map_err(|e: statefile::ParseBackupRefError| {
            ApiError::bad_request("invalid-query", format!("from: {e}"))
        })?,
    };
    let store = app.store.clone();
    let started = Instant::now();
    let n = name.clone();
    let w = storage(&app, &name, Access::Write, move || {
        store.restore(&n, &which)
    })
    .await
    .map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            ApiError::not_found(format!("document {name} has no such backup"))
        } else {
            e
        }
    })?;
    record_write(&app, started, &w);
    Ok(version_response(StatusCode::OK, &w.version))
}

/// `GET /healthz`: the server runs and its storage answers (no authentication).
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, description = "ok"),
    (status = 503, description = "problem+json storage-unavailable: the storage (the database) cannot be reached")))]
pub async fn healthz(State(app): State<Arc<App>>) -> ApiResult {
    let store = app.store.clone();
    // No storage slot: the answer must come even when every slot is busy.
    blocking("-", move || store.health()).await?;
    Ok("ok\n".into_response())
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format. Needs the bearer token when the server has one")))]
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut text = app.metrics.render();
    app.store.render_metrics(&mut text);
    let mut res = text.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    res
}

/// `GET /openapi.json`: this server's description (with the bearer scheme only when it
/// has a token).
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "This description")))]
pub async fn openapi(State(app): State<Arc<App>>) -> Response {
    match crate::openapi::spec(app.config.token.is_some()).to_json() {
        Ok(s) => json_response(StatusCode::OK, None, s.into_bytes()),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// Unknown routes.
pub async fn fallback() -> ApiError {
    ApiError::not_found("no such route")
}

/// A method the route does not serve (axum adds the `Allow` header).
pub async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{method} is not supported here"),
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn mapped(uri: &str) -> String {
        let req = Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        map_request(req).uri().to_string()
    }

    #[test]
    fn operations_on_a_name_are_rewritten_and_internal_paths_are_not_reachable() {
        assert_eq!(
            mapped("/v1/docs/a/b.json/append?pointer=/x"),
            "/.internal/append/a/b.json?pointer=/x"
        );
        assert_eq!(
            mapped("/v1/docs/a.json/backups"),
            "/.internal/backups/a.json"
        );
        assert_eq!(
            mapped("/v1/docs/a.json/restore?from=2"),
            "/.internal/restore/a.json?from=2"
        );
        assert_eq!(mapped("/v1/docs/a.json"), "/v1/docs/a.json");
        assert_eq!(mapped("/v1/docs/append"), "/v1/docs/append");
        assert_eq!(mapped("/v1/docs//append"), "/v1/docs//append");
        assert_eq!(mapped("/.internal/append/a.json"), "/.internal");
        assert_eq!(mapped("/.internal"), "/.internal");
    }

    proptest! {
        #[test]
        fn any_path_maps_without_panic(path in "/[ -~]{0,200}") {
            if let Ok(uri) = path.parse::<Uri>() {
                let req = Request::builder().uri(uri).body(axum::body::Body::empty()).unwrap();
                let out = map_request(req);
                let p = out.uri().path();
                // An internal route is only reached through the rewrite of a document path.
                if p.starts_with("/.internal/") {
                    prop_assert!(path.starts_with("/v1/docs/"), "{path} -> {p}");
                }
            }
        }
    }
}
