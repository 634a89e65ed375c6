//! `statefile serve`: an HTTP document service over the statefile library.
//!
//! A document's name is its path under the served directory and ends in `.json`:
//! `/v1/docs/view/resData.json` is `DIR/view/resData.json`. Reads carry the document's
//! version as `ETag`; writes honour `If-Match` / `If-None-Match: *`; `PATCH` applies merge
//! patches and JSON Patches under the document's lock; `POST .../append` appends to an
//! array under the lock, with `Idempotency-Key` for safe retries. Errors are RFC 9457
//! problem+json. All file work goes through a [`DocStore`], run on blocking threads.

#![forbid(unsafe_code)]

mod drain;
pub mod extract;
mod head_errors;
pub mod headers;
mod idempotency;
pub mod limits;
mod listen;
mod metrics;
pub mod openapi;
pub mod pg;
pub mod problem;
pub mod routes;
mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};
use tower::Layer;
use tower::util::MapRequestLayer;

pub use idempotency::Idempotency;
pub use listen::{MAX_HEAD, bind, fit_to_descriptors, raise_descriptor_limit, serve_all, serve_on};
pub use metrics::Metrics;
pub use problem::ApiError;
pub use store::{
    BackupEntry, Condition, DocStore, Fetched, FileStore, Keyed, Mutator, StoreError, StoreResult,
    Written,
};

/// How to serve. Each limit has a row in docs/design.md's "Limits and hostile input".
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory of documents.
    pub root: PathBuf,
    /// Create `root` (and its parents) if it is missing; otherwise a missing directory
    /// is an error, so that a mistyped one is not served as an empty store.
    pub create: bool,
    /// Where to listen, `HOST:PORT` with a host name or an IP address (default
    /// 127.0.0.1:7878); every address the host resolves to is bound.
    pub addr: String,
    /// If set, every route but `/healthz` needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Largest request body in bytes (default 16 MiB).
    pub max_body: usize,
    /// Memory for request bodies held at once, counting each body's parsed value
    /// (default 2 GiB). More bodies wait their turn; one that could need more is 413.
    pub max_body_memory: usize,
    /// Time limit for one request, queueing included (default 30 s).
    pub request_timeout: Duration,
    /// Time limit for receiving a request body (default 20 s): then 408.
    pub body_timeout: Duration,
    /// Time a connection may take to send a request head, counted from when it opened
    /// or from the previous answer (default 10 s): then it is closed.
    pub header_timeout: Duration,
    /// Connections open at once (default 1024); more wait to be accepted.
    pub max_connections: usize,
    /// Storage operations at once (default 256); more wait in a queue.
    pub concurrency: usize,
    /// Writes at once to one document (default 16); more wait in that document's
    /// queue without taking one of `concurrency`'s places.
    pub doc_concurrency: usize,
    /// Operations in one JSON Patch (default 10,000): beyond, 413.
    pub max_patch_ops: usize,
    /// Largest document in bytes that is read into memory or written (default 64 MiB;
    /// [`statefile::Options::max_document_bytes`], which [`App::open`] sets from it).
    /// A stored document over it is answered 422 `document-too-large` without being
    /// read; a write whose stored form (as laid out, pretty by default) is over it is
    /// 422 too, nothing written. [`run`] refuses one smaller than `max_body`.
    pub max_document: u64,
    /// Library options for the documents (durability, backups, lock timeout...).
    pub options: statefile::Options,
    /// When set, [`run`] serves the documents of this PostgreSQL database instead of
    /// `root` (taking backups, format and lock timeout from `options`, and the statement
    /// timeout from `request_timeout`).
    pub postgres: Option<pg::PgOptions>,
    /// [`run`] prints nothing but errors: no "serving" line on stdout, no warnings on
    /// stderr (the log's own level is the caller's to set).
    pub quiet: bool,
}

impl Config {
    /// Defaults for serving `root`.
    pub fn new(root: impl Into<PathBuf>) -> Config {
        Config {
            root: root.into(),
            create: false,
            addr: "127.0.0.1:7878".to_string(),
            token: None,
            max_body: 16 * 1024 * 1024,
            max_body_memory: 2 * 1024 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(20),
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            concurrency: 256,
            doc_concurrency: 16,
            max_patch_ops: 10_000,
            max_document: 64 * 1024 * 1024,
            options: statefile::Options::new(),
            postgres: None,
            quiet: false,
        }
    }
}

/// When a request arrived (its time limit counts from here).
#[derive(Debug, Clone, Copy)]
pub struct Arrived(pub std::time::Instant);

/// The longest request target (path and query) answered; beyond it, 414.
pub const MAX_URI: usize = 8 * 1024;

/// Shared state of the routes.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub store: Arc<dyn DocStore>,
    pub metrics: Metrics,
    pub idempotency: Idempotency,
    pub limits: limits::Limits,
    token_digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for dyn DocStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DocStore")
    }
}

impl App {
    /// Routes over `store` with `config`'s limits and token.
    pub fn new(config: Config, store: Arc<dyn DocStore>) -> Arc<App> {
        let token_digest = config
            .token
            .as_ref()
            .map(|t| Sha256::digest(t.as_bytes()).into());
        let limits = limits::Limits::new(
            config.max_body_memory,
            config.max_body,
            config.concurrency,
            config.doc_concurrency,
        )
        .with_descriptor_limit(
            rustix::process::getrlimit(rustix::process::Resource::Nofile).current,
        );
        Arc::new(App {
            config,
            store,
            metrics: Metrics::default(),
            idempotency: Idempotency::default(),
            limits,
            token_digest,
        })
    }

    /// Open the store at `config.root` (recovering it) and build the app.
    ///
    /// # Errors
    /// When the directory cannot be opened, or is missing and `config.create` is off
    /// (`NotFound`).
    pub fn open(config: Config) -> Result<Arc<App>, statefile::Error> {
        if !config.create && !config.root.exists() {
            return Err(statefile::Error::new(
                statefile::ErrorKind::NotFound,
                format!(
                    "{} does not exist; to start an empty store there, create it or pass --create",
                    config.root.display()
                ),
            ));
        }
        let opts = config
            .options
            .clone()
            .create_dirs(true)
            .max_document_bytes(config.max_document);
        let store = statefile::Store::open_with(&config.root, opts)?;
        let r = store.recovery();
        if !r.is_healthy() {
            tracing::warn!(
                stale_temps_removed = r.stale_temps().count(),
                corrupt_documents = r.corrupt_documents().count(),
                "recovered the store on open; damaged documents are served from backups until repaired"
            );
        }
        Ok(App::new(config, Arc::new(FileStore::new(store))))
    }
}

/// The whole service: [`routes::map_request`] in front of the router, whose every route
/// has the layers request id, log line and metrics (outermost), the request-target
/// length limit, auth and the request's time limit. The handlers take their turns at
/// the storage ([`limits::Limits`]) inside that time limit.
pub fn app(state: Arc<App>) -> Router {
    use routes::method_not_allowed as other;
    let timeout = state.config.request_timeout;
    let [
        list,
        tx,
        doc,
        append,
        backups,
        restore,
        metrics,
        openapi,
        healthz,
    ] = routes::ROUTES.map(|(path, _)| path);
    let routes = Router::new()
        .route(list, get(routes::list).fallback(other))
        .route(tx, post(routes::transaction).fallback(other))
        .route(
            doc,
            get(routes::get_doc)
                .put(routes::put_doc)
                .patch(routes::patch_doc)
                .delete(routes::delete_doc)
                .fallback(other),
        )
        .route(append, post(routes::append).fallback(other))
        .route(backups, get(routes::backups).fallback(other))
        .route(restore, post(routes::restore).fallback(other))
        .route(metrics, get(routes::metrics).fallback(other))
        .route(openapi, get(routes::openapi).fallback(other))
        .route(healthz, get(routes::healthz).fallback(other))
        .fallback(routes::fallback)
        .layer(middleware::from_fn_with_state(timeout, time_limit))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn(limit_uri))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(drain::drain_unread))
        .with_state(state);
    // Rewriting the path must come before routing, so it wraps the whole router.
    Router::new().fallback_service(MapRequestLayer::new(routes::map_request).layer(routes))
}

/// The request's time limit (`--request-timeout`). Until the request hands a write to
/// the storage, it is cut off at the limit with 503 `request-timeout`: nothing was
/// written, and the Retry-After it carries is safe to follow. From that moment the write
/// runs to its end whatever becomes of the request (a storage call cannot be recalled
/// from its thread), so the answer waits for it and says how it ended: a 503 then,
/// while the write still landed, would invite the client to send it again, and a
/// retried append or JSON Patch would be applied twice. The wait is bounded by the
/// storage's own limits: the lock timeout, the request's deadline for a patch or a
/// transaction (which stop before they commit), the PostgreSQL statement timeout.
async fn time_limit(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let handover = Arc::new(routes::Handover::default());
    let run = routes::HANDOVER.scope(handover.clone(), next.run(req));
    tokio::pin!(run);
    tokio::select! {
        res = &mut run => res,
        () = tokio::time::sleep(limit) => {
            if handover.cut_off() {
                ApiError::request_timeout(
                    "the server did not finish in time; this request wrote nothing (an append sent again with the same Idempotency-Key is answered as the first one was)",
                )
                .into_response()
            } else {
                tracing::info!(limit_s = limit.as_secs_f64(),
                    "request past its time limit: its write was handed to the storage, answering when it ends");
                run.await
            }
        }
    }
}

/// Request id, log line and metrics around every request. The metric label is the
/// route the router matched, as the API names it.
async fn observe(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    req.extensions_mut()
        .insert(Arrived(std::time::Instant::now()));
    let id = new_request_id();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| routes::route_label(p.as_str()));
    let started = std::time::Instant::now();
    let mut res = problem::REQUEST_ID.scope(id.clone(), next.run(req)).await;
    let status = res.status().as_u16();
    app.metrics.request(method.as_str(), route, status);
    let duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    tracing::info!(request_id = %id, %method, route, status, duration_ms, "request");
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// A request target longer than [`MAX_URI`] is 414 (longer still, and the request head
/// passes [`MAX_HEAD`]: the HTTP layer answers 431 before any route).
async fn limit_uri(req: Request, next: Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if len > MAX_URI {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            "Request target too long",
            format!("the path and query take {len} bytes; the limit is {MAX_URI}"),
        )
        .into_response();
    }
    next.run(req).await
}

/// Bearer-token check (constant time: digests compared without early exit).
async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(want) = app.token_digest else {
        return next.run(req).await;
    };
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let given = headers::bearer_token(req.headers());
    let got: [u8; 32] = Sha256::digest(given.as_bytes()).into();
    let diff = got
        .iter()
        .zip(want.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff == 0 && !given.is_empty() {
        next.run(req).await
    } else {
        let mut res = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "send Authorization: Bearer <token>",
        )
        .into_response();
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        res
    }
}

pub(crate) fn new_request_id() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// The app [`run`] serves, and what it serves (the directory, or the database without
/// its password). Warnings about the database's durability settings go to stderr.
fn open_for_run(config: Config) -> Result<(Arc<App>, String), String> {
    let Some(pg) = config.postgres.clone() else {
        let root = config.root.display().to_string();
        let app = App::open(config).map_err(|e| format!("cannot open the store: {e}"))?;
        return Ok((app, root));
    };
    let mut pg = pg.with_library_options(&config.options);
    pg.statement_timeout = config.request_timeout;
    let store = pg::PgStore::open(pg).map_err(|e| e.to_string())?;
    for w in store.warnings() {
        warn(&config, w);
    }
    let serving = format!(
        "{} (TLS: sslmode={})",
        store.label(),
        store.tls_mode().as_str()
    );
    Ok((App::new(config, Arc::new(store)), serving))
}

/// `statefile: warning: …` on stderr, unless `config.quiet`.
fn warn(config: &Config, warning: &str) {
    if !config.quiet {
        eprintln!("statefile: warning: {warning}");
    }
}

/// Open the store, bind, and serve until SIGTERM or Ctrl-C. Blocks.
///
/// Prints `statefile: serving DIR on http://ADDR` (or the database as
/// `postgres://user@host:port/dbname`) to stdout once listening (with the real port when
/// the address asked for port 0), unless `config.quiet`.
///
/// # Errors
/// When the store cannot be opened or the address cannot be bound.
pub fn run(mut config: Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if config.max_body_memory / 4 < config.max_body {
        return Err(format!(
            "--max-body-memory ({}) must be at least 4 times --max-body ({}): a quarter of it \
             holds the bodies being received",
            config.max_body_memory, config.max_body
        )
        .into());
    }
    if config.max_document < config.max_body as u64 {
        return Err(format!(
            "--max-document ({}) must be at least --max-body ({}): a document a client may \
             send must be one the server reads back",
            config.max_document, config.max_body
        )
        .into());
    }
    if let Some(fds) = raise_descriptor_limit()
        && let Some(warning) = fit_to_descriptors(&mut config, fds)
    {
        warn(&config, &warning);
        tracing::warn!("{warning}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listeners = bind(&config.addr).await?;
        let mut urls = Vec::new();
        for l in &listeners {
            let local = l.local_addr()?;
            if !local.ip().is_loopback() && config.token.is_none() {
                warn(
                    &config,
                    &format!("serving on {local} without --token: anyone who can reach it can read and write"),
                );
                tracing::warn!(addr = %local, "serving on a non-loopback address without a token");
            }
            urls.push(format!("http://{local}"));
        }
        let (app, serving) = tokio::task::spawn_blocking(move || open_for_run(config)).await??;
        let c = &app.config;
        tracing::info!(
            store = %serving,
            addr = %urls.join(", "),
            token = c.token.is_some(),
            max_connections = c.max_connections,
            concurrency = c.concurrency,
            max_body = c.max_body,
            max_body_memory = c.max_body_memory,
            max_document = c.max_document,
            request_timeout_s = c.request_timeout.as_secs_f64(),
            "serving"
        );
        if !c.quiet {
            println!("statefile: serving {serving} on {}", urls.join(", "));
        }
        serve_all(listeners, app, shutdown_signal()).await?;
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    // Dropping the runtime waits for blocking tasks: writes in flight complete.
    drop(rt);
    Ok(())
}
