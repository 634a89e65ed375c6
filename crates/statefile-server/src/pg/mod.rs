//! [`PgStore`]: the documents in PostgreSQL, so many stateless `statefile serve`
//! processes can share them.
//!
//! The same answers as the file backend: a document's bytes are exactly the bytes the
//! file backend would write (the library's serializer, the store's format), so its
//! version (the ETag) is the same SHA-256. Every write is one transaction: the current
//! row is locked (`SELECT ... FOR UPDATE`), the precondition is checked, the new bytes
//! are stored and the replaced version is kept as a backup, then the transaction
//! commits; a write is acknowledged only after its commit returned. Creating a missing
//! document takes a transaction-scoped advisory lock on its name instead (there is no
//! row to lock yet), so two servers creating one document take turns.
//!
//! Client and pool: `tokio-postgres` (the maintained asynchronous client the Rust
//! PostgreSQL ecosystem builds on) with `deadpool-postgres` (a small pool with a wait
//! timeout, a connect timeout and a cheap health check on checkout). They run on the
//! store's own small runtime, so the blocking [`DocStore`] methods work from any thread
//! that is not itself async, the server's blocking threads included.
//!
//! Faults: a database that is down, restarting or unreachable makes calls fail with a
//! 503 `database-unavailable` (Retry-After) within the connect and statement timeouts,
//! never a hang; broken connections are dropped from the pool and new ones made once the
//! database is back, without restarting the server.

pub mod connect;
mod failure;
mod metrics;
mod schema;
pub mod transfer;
mod tx;

use failure::{Failure, db_reason, pool_reason};

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Transaction};
use serde_json::Value;
use statefile::{BackupRef, ErrorKind, Format, Version};

use crate::store::{
    BackupEntry, Condition, DocStore, Fetched, Keyed, Mutator, StoreError, StoreResult, TxFailed,
    Written,
};

pub use schema::LATEST as SCHEMA_VERSION;

/// The most connections one server may hold open.
pub const MAX_POOL_SIZE: usize = 256;

/// How to connect and what to store.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user[:password]@host[:port]/dbname[?options]`, or the key=value form
    /// (`host=… port=… dbname=… user=…`), with libpq's TLS settings `sslmode`,
    /// `sslrootcert`, `sslcert` and `sslkey` ([`connect`]). A schema other than
    /// `public`: `?options=-csearch_path%3Dmyschema`.
    pub url: String,
    /// Connections at most (default 16, at most [`MAX_POOL_SIZE`]).
    pub pool_size: usize,
    /// Connecting gives up after this (default 5 s).
    pub connect_timeout: Duration,
    /// One statement, and waiting for a free connection, give up after this (default
    /// 30 s, the server's request timeout): under load requests queue for the pool as
    /// they queue for a lock, rather than fail while the database is fine.
    pub statement_timeout: Duration,
    /// Waiting for a document's row lock gives up after this, as a lock timeout
    /// (default 10 s, the library's lock timeout).
    pub lock_timeout: Duration,
    /// Previous versions kept per document (default 1; 0 keeps none).
    pub backups: usize,
    /// The layout of the stored bytes (default pretty, as the file backend).
    pub format: Format,
    /// The largest document, in bytes, this store writes (default 64 MiB; PostgreSQL's
    /// own limit for one value is 1 GiB).
    pub max_document_bytes: usize,
}

/// The connection string without its password.
impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &connect::redacted(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("backups", &self.backups)
            .field("format", &self.format)
            .field("max_document_bytes", &self.max_document_bytes)
            .finish()
    }
}

impl PgOptions {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(10),
            backups: 1,
            format: Format::Pretty,
            max_document_bytes: 64 * 1024 * 1024,
        }
    }

    /// Take backups, format and lock timeout from the library's options, as the file
    /// backend would.
    pub fn with_library_options(mut self, o: &statefile::Options) -> PgOptions {
        self.backups = o.get_backups();
        self.format = o.get_format();
        self.lock_timeout = o.get_lock_timeout();
        self
    }
}

/// Why the store could not be opened. Its message says what to do.
#[derive(Debug)]
pub struct OpenError(String);

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OpenError {}

/// The documents in one PostgreSQL database (and schema).
pub struct PgStore {
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    opts: PgOptions,
    label: String,
    tls_mode: connect::SslMode,
    warnings: Vec<String>,
    keyed_writes: AtomicU64,
    pub(crate) metrics: metrics::PgMetrics,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.label)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Allowed anywhere, an async context included (a plain drop is not).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connect, create or upgrade the tables, and check the server's durability
    /// settings ([`PgStore::warnings`]).
    ///
    /// # Errors
    /// A connection string that does not parse, TLS settings that cannot work (a CA
    /// file that cannot be read...), a database that cannot be reached (within the
    /// connect timeout) or whose certificate does not verify, one whose statefile tables
    /// are newer than this build, or one that refuses to create them; each message says
    /// which, and none repeats the password.
    pub fn open(opts: PgOptions) -> Result<PgStore, OpenError> {
        let connect::Target {
            config: mut pg,
            mode: tls_mode,
            tls,
        } = connect::parse(&opts.url).map_err(OpenError)?;
        let label = connect::describe(&pg);
        if !(1..=MAX_POOL_SIZE).contains(&opts.pool_size) {
            return Err(OpenError(format!(
                "the pool size must be 1 to {MAX_POOL_SIZE}, not {}",
                opts.pool_size
            )));
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(opts.connect_timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("statefile");
        }
        pg.keepalives(true).keepalives_idle(Duration::from_secs(30));
        // Server-side bounds for every session: a statement, a lock wait, and a
        // transaction left idle (by a server that died mid-request) all end.
        let ms = |d: Duration| d.as_millis().max(1);
        let bounds = format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            ms(opts.statement_timeout),
            ms(opts.lock_timeout),
            ms(opts.statement_timeout.max(Duration::from_secs(60)))
        );
        let options = match pg.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {bounds}"),
            _ => bounds,
        };
        pg.options(&options);

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("statefile-pg")
            .enable_all()
            .build()
            .map_err(|e| OpenError(format!("cannot start the database client: {e}")))?;
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let metrics = metrics::PgMetrics::default();
        let opened = metrics.connections_opened.clone();
        let pool = Pool::builder(manager)
            .post_create(deadpool_postgres::Hook::sync_fn(move |_, _| {
                opened.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }))
            .max_size(opts.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(opts.statement_timeout))
            .create_timeout(Some(opts.connect_timeout))
            .recycle_timeout(Some(opts.connect_timeout))
            .build()
            .map_err(|e| OpenError(format!("cannot set up the connection pool: {e}")))?;
        let warnings = rt.block_on(async {
            let mut c = pool.get().await.map_err(|e| {
                OpenError(format!(
                    "cannot reach the database at {label}: {}",
                    pool_reason(&e)
                ))
            })?;
            let version: i32 = c
                .query_one("SELECT current_setting('server_version_num')::int", &[])
                .await
                .map_err(|e| OpenError(format!("the database at {label} failed: {e}")))?
                .get(0);
            if version < 110_000 {
                return Err(OpenError(format!(
                    "the database at {label} runs PostgreSQL {}.{}; statefile needs 11 or newer",
                    version / 10_000,
                    version % 10_000 / 100
                )));
            }
            match schema::migrate(&mut c).await {
                Ok(_) => {}
                Err(schema::MigrateError::Newer(v)) => {
                    return Err(OpenError(format!(
                        "the statefile tables in {label} are at schema version {v}, newer than \
                         this statefile understands ({}): upgrade statefile",
                        schema::LATEST
                    )));
                }
                Err(schema::MigrateError::Db(e)) => {
                    return Err(OpenError(format!(
                        "cannot create or upgrade the statefile tables in {label}: {}",
                        db_reason(&e)
                    )));
                }
            }
            schema::durability_warnings(&**c)
                .await
                .map_err(|e| OpenError(format!("the database at {label} failed: {e}")))
        })?;
        for w in &warnings {
            tracing::warn!(database = %label, "{w}");
        }
        Ok(PgStore {
            rt: Some(rt),
            pool,
            opts,
            label,
            tls_mode,
            warnings,
            keyed_writes: AtomicU64::new(0),
            metrics,
        })
    }

    /// The database, as `postgres://user@host:port/dbname` (no password).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The connection's `sslmode` (TLS), as given or defaulted.
    pub fn tls_mode(&self) -> connect::SslMode {
        self.tls_mode
    }

    /// What the durability check at open found off (`fsync`, `synchronous_commit`).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The options it was opened with.
    pub fn options(&self) -> &PgOptions {
        &self.opts
    }

    /// Run `op` on the store's runtime, bounded as a whole by the statement timeout
    /// plus the connect timeout (the HTTP request itself ends at the request timeout),
    /// and count it.
    fn block<T>(&self, op: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
        let started = Instant::now();
        let limit = self.opts.statement_timeout + self.opts.connect_timeout;
        let rt = self
            .rt
            .as_ref()
            .expect("the runtime lives as long as the store");
        let r = rt.block_on(async {
            tokio::time::timeout(limit, op)
                .await
                .unwrap_or_else(|_| Err(Failure::Timeout))
        });
        self.metrics.operation(started.elapsed(), r.as_ref().err());
        r
    }

    /// Run `op` on a pooled connection. The connection goes back to the pool when `op`
    /// finishes (a refusal such as a failed precondition included: its transaction was
    /// rolled back), and is closed instead when the database failed or `op` was
    /// abandoned at its timeout, possibly mid-statement.
    async fn with_conn<T>(
        &self,
        op: impl AsyncFnOnce(&mut Conn) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let mut c = self.conn().await?;
        let r = op(&mut c).await;
        if !matches!(r, Err(Failure::Unavailable(_) | Failure::Timeout)) {
            c.done();
        }
        r
    }

    /// A connection from the pool. Dropped without [`Conn::done`] (a timeout, a
    /// broken connection), it is closed rather than handed to the next request.
    async fn conn(&self) -> Result<Conn, Failure> {
        let started = Instant::now();
        let c = self.pool.get().await.map_err(|e| Failure::from_pool(&e))?;
        self.metrics.pool_wait(started.elapsed());
        Ok(Conn {
            obj: Some(c),
            reusable: false,
        })
    }

    /// The error for a stored row of `len` bytes over the size bound, not fetched.
    fn row_too_large(&self, name: &str, len: i64) -> Failure {
        Failure::Lib(statefile::Error::new(
            ErrorKind::Serialize,
            format!(
                "cannot read {name}: {len} bytes is over the backend's limit of {} bytes per \
                 document",
                self.opts.max_document_bytes
            ),
        ))
    }

    /// Serialize `value` as the file backend would, within the size bound.
    fn serialize(&self, name: &str, value: &Value) -> Result<Vec<u8>, Failure> {
        let bytes = statefile::to_vec(value, self.opts.format).map_err(|e| {
            Failure::Lib(statefile::Error::new(
                e.kind(),
                format!("cannot write {name}: {}", e.message()),
            ))
        })?;
        if bytes.len() > self.opts.max_document_bytes {
            return Err(Failure::Lib(statefile::Error::new(
                ErrorKind::Serialize,
                format!(
                    "cannot write {name}: {} bytes is over the backend's limit of {} bytes per document",
                    bytes.len(),
                    self.opts.max_document_bytes
                ),
            )));
        }
        Ok(bytes)
    }

    /// Lock `name` for writing: its row if it exists (returned, with the body if
    /// `body`), else the advisory locks that creators of this name (and of names above
    /// or below it) take, and a check that the name is free to create.
    async fn lock(
        &self,
        tx: &Transaction<'_>,
        name: &str,
        body: bool,
    ) -> Result<Option<Current>, Failure> {
        // The body only if it is within the limit, as a GET fetches it: a row planted
        // over it is refused, never fetched.
        let select = if body {
            "SELECT version, CASE WHEN octet_length(body)::bigint <= $2::bigint THEN body END,
                    octet_length(body)::bigint
             FROM statefile_documents WHERE name = $1 FOR UPDATE"
        } else {
            "SELECT version, NULL::bytea FROM statefile_documents WHERE name = $1 FOR UPDATE"
        };
        let stmt = tx.prepare_cached(select).await?;
        let max = i64::try_from(self.opts.max_document_bytes).unwrap_or(i64::MAX);
        let locked = async || -> Result<Option<Current>, Failure> {
            let row = if body {
                tx.query_opt(&stmt, &[&name, &max]).await?
            } else {
                tx.query_opt(&stmt, &[&name]).await?
            };
            let Some(row) = row else { return Ok(None) };
            let current = Current::from_row(&row);
            if body && current.body.is_none() {
                let len: i64 = row.get(2);
                return Err(self.row_too_large(name, len));
            }
            Ok(Some(current))
        };
        if let Some(current) = locked().await? {
            return Ok(Some(current));
        }
        // The locks every creator of this name (and of names above or below it) takes,
        // in the one global order, so creators cannot deadlock.
        let (keys, excl) = advisory_locks([name]);
        let locks = tx.prepare_cached(ADVISORY_LOCKS).await?;
        tx.query_one(&locks, &[&keys, &excl]).await?;
        if let Some(current) = locked().await? {
            return Ok(Some(current));
        }
        // The file backend cannot store `a.json/b.json` beside a document `a.json`, nor
        // `d.json` where a directory `d.json/` was made for documents, which stays (with
        // their lock files) when they are deleted.
        let ancestors: Vec<&str> = document_ancestors(name).collect();
        let clash = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM statefile_documents WHERE name = ANY($1::text[])),
                        EXISTS (SELECT 1 FROM statefile_directories WHERE name = $2)",
            )
            .await?;
        let row = tx.query_one(&clash, &[&ancestors, &name]).await?;
        if row.get::<_, bool>(0) || row.get::<_, bool>(1) {
            return Err(Failure::Lib(statefile::Error::new(
                ErrorKind::InvalidName,
                format!("cannot create {name}: a document is in the way of its path"),
            )));
        }
        Ok(None)
    }

    /// Store `bytes` as `name`'s new version, under the lock [`PgStore::lock`] took.
    /// A replaced version that differs is kept as the newest backup (the oldest beyond
    /// `backups` go).
    async fn store(
        &self,
        tx: &Transaction<'_>,
        name: &str,
        exists: bool,
        bytes: &[u8],
        version: &Version,
        backups: usize,
    ) -> Result<(), Failure> {
        if !exists {
            record_directories(tx, name).await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO statefile_documents (name, body, version) VALUES ($1, $2, $3)",
                )
                .await?;
            tx.execute(&stmt, &[&name, &bytes, &version.as_str()])
                .await?;
            return Ok(());
        }
        let stmt = tx
            .prepare_cached(
                "WITH kept AS (
                     INSERT INTO statefile_backups (name, body, version, written_at)
                     SELECT name, body, version, written_at FROM statefile_documents
                     WHERE name = $1 AND version <> $3 AND $4::bigint > 0
                     RETURNING 1
                 ), replaced AS (
                     UPDATE statefile_documents
                     SET body = $2, version = $3, written_at = clock_timestamp()
                     WHERE name = $1
                     RETURNING 1
                 )
                 DELETE FROM statefile_backups
                 WHERE name = $1 AND EXISTS (SELECT 1 FROM kept) AND seq IN (
                     SELECT seq FROM statefile_backups WHERE name = $1
                     ORDER BY seq DESC OFFSET GREATEST($4::bigint - 1, 0))",
            )
            .await?;
        let keep = backups as i64;
        tx.execute(&stmt, &[&name, &bytes, &version.as_str(), &keep])
            .await?;
        Ok(())
    }

    async fn put_tx(&self, name: &str, bytes: &[u8], cond: &Condition) -> Result<Written, Failure> {
        self.with_conn(async |c| {
            let tx = begin(c).await?;
            let t = Instant::now();
            let current = self.lock(&tx, name, false).await?;
            let lock_wait = t.elapsed();
            check(name, cond, current.as_ref())?;
            let version = Version::of(bytes);
            self.store(
                &tx,
                name,
                current.is_some(),
                bytes,
                &version,
                self.opts.backups,
            )
            .await?;
            tx.commit().await?;
            Ok(Written {
                version,
                created: current.is_none(),
                lock_wait,
                replayed: false,
            })
        })
        .await
    }

    async fn update_tx(
        &self,
        name: &str,
        cond: &Condition,
        init: Option<Value>,
        f: Mutator<'_>,
        key: Option<&Keyed<'_>>,
    ) -> Result<(Value, Written), Failure> {
        self.with_conn(async |c| {
            let tx = begin(c).await?;
            let t = Instant::now();
            let current = self.lock(&tx, name, true).await?;
            let lock_wait = t.elapsed();
            if let Some(k) = key
                && let Some(replay) = self.remembered(&tx, name, k).await?
            {
                tx.rollback().await?;
                return Ok(replay);
            }
            let mut value = match (&current, init) {
                (Some(_), _) if *cond == Condition::Absent => {
                    return Err(conflict_because(
                        name,
                        "exists, and the request asked that it not",
                    ));
                }
                (Some(cur), _) => {
                    check(name, cond, Some(cur))?;
                    statefile::parse_json(
                        cur.body.as_deref().unwrap_or_default(),
                        std::path::Path::new(name),
                    )
                    .map_err(Failure::Lib)?
                }
                (None, _) if matches!(cond, Condition::IfMatch(_) | Condition::Exists) => {
                    return Err(check(name, cond, None).unwrap_err());
                }
                (None, Some(init)) => init,
                (None, None) => {
                    return Err(Failure::Lib(statefile::Error::new(
                        ErrorKind::NotFound,
                        format!("document {name} does not exist"),
                    )));
                }
            };
            let out = f(&mut value).map_err(Failure::Store)?;
            let bytes = self.serialize(name, &value)?;
            let version = Version::of(&bytes);
            self.store(
                &tx,
                name,
                current.is_some(),
                &bytes,
                &version,
                self.opts.backups,
            )
            .await?;
            if let Some(k) = key {
                self.remember(&tx, name, k, &out, &version).await?;
            }
            tx.commit().await?;
            if key.is_some() {
                self.sweep_keys(c).await;
            }
            Ok((
                out,
                Written {
                    version,
                    created: current.is_none(),
                    lock_wait,
                    replayed: false,
                },
            ))
        })
        .await
    }

    /// The answer kept for this key, if it is not expired. The caller holds the
    /// document's lock, so a first request with this key has either committed (and
    /// its answer is here) or not started.
    async fn remembered(
        &self,
        tx: &Transaction<'_>,
        name: &str,
        k: &Keyed<'_>,
    ) -> Result<Option<(Value, Written)>, Failure> {
        let stmt = tx
            .prepare_cached(
                "SELECT request, result, version FROM statefile_idempotency
                 WHERE name = $1 AND key = $2
                 AND created_at > clock_timestamp() - make_interval(secs => $3)",
            )
            .await?;
        let ttl = crate::Idempotency::TTL.as_secs_f64();
        let Some(row) = tx.query_opt(&stmt, &[&name, &k.key, &ttl]).await? else {
            return Ok(None);
        };
        let request: &[u8] = row.get(0);
        if request != k.request {
            return Err(Failure::KeyReused);
        }
        let result: &str = row.get(1);
        let version: &str = row.get(2);
        let out = serde_json::from_str(result)
            .map_err(|e| Failure::Internal(format!("a kept idempotent answer: {e}")))?;
        let version = Version::parse(version)
            .map_err(|e| Failure::Internal(format!("a kept idempotent answer: {e}")))?;
        Ok(Some((
            out,
            Written {
                version,
                created: false,
                lock_wait: Duration::ZERO,
                replayed: true,
            },
        )))
    }

    async fn remember(
        &self,
        tx: &Transaction<'_>,
        name: &str,
        k: &Keyed<'_>,
        out: &Value,
        version: &Version,
    ) -> Result<(), Failure> {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO statefile_idempotency (name, key, request, result, version)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (name, key) DO UPDATE SET request = EXCLUDED.request,
                     result = EXCLUDED.result, version = EXCLUDED.version,
                     created_at = EXCLUDED.created_at",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &name,
                &k.key,
                &&k.request[..],
                &out.to_string(),
                &version.as_str(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Every 64th keyed write, forget expired keys and the oldest beyond the capacity
    /// (the in-memory table's rules). Best effort: a failure only delays it.
    async fn sweep_keys(&self, c: &mut Conn) {
        if !self
            .keyed_writes
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(64)
        {
            return;
        }
        let ttl = crate::Idempotency::TTL.as_secs_f64();
        let cap = crate::Idempotency::CAPACITY as i64;
        let swept = c
            .execute(
                "DELETE FROM statefile_idempotency
                 WHERE created_at <= clock_timestamp() - make_interval(secs => $1)
                    OR (name, key) IN (SELECT name, key FROM statefile_idempotency
                                       ORDER BY created_at DESC OFFSET $2)",
                &[&ttl, &cap],
            )
            .await;
        if let Err(e) = swept {
            tracing::warn!(error = %Failure::from(e).log_text(), "could not forget expired idempotency keys");
        }
    }

    async fn delete_tx(&self, name: &str, cond: &Condition) -> Result<(), Failure> {
        self.with_conn(async |c| {
            let tx = begin(c).await?;
            let stmt = tx
            .prepare_cached(
                "SELECT version, NULL::bytea FROM statefile_documents WHERE name = $1 FOR UPDATE",
            )
            .await?;
            let current = tx
                .query_opt(&stmt, &[&name])
                .await?
                .map(|r| Current::from_row(&r));
            match (cond, &current) {
                (Condition::Absent, Some(_)) => {
                    return Err(conflict_because(
                        name,
                        "exists, and If-None-Match: * asked that it not",
                    ));
                }
                // A precondition on a missing document is false (412), as on disk.
                (Condition::IfMatch(_) | Condition::Exists, None) => check(name, cond, None)?,
                (_, None) => {
                    return Err(Failure::Lib(statefile::Error::new(
                        ErrorKind::NotFound,
                        format!("cannot delete {name}: it does not exist"),
                    )));
                }
                (cond, Some(cur)) => check(name, cond, Some(cur))?,
            }
            self.remove(&tx, name).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Delete `name`'s row, locked by the caller, keeping it as the newest backup (the
    /// oldest beyond `backups` go): a deleted document can be restored.
    async fn remove(&self, tx: &Transaction<'_>, name: &str) -> Result<(), Failure> {
        let stmt = tx
            .prepare_cached(
                "WITH kept AS (
                     INSERT INTO statefile_backups (name, body, version, written_at)
                     SELECT name, body, version, written_at FROM statefile_documents
                     WHERE name = $1 AND $2::bigint > 0
                     RETURNING 1
                 ), gone AS (
                     DELETE FROM statefile_documents WHERE name = $1 RETURNING 1
                 )
                 DELETE FROM statefile_backups
                 WHERE name = $1 AND EXISTS (SELECT 1 FROM kept) AND seq IN (
                     SELECT seq FROM statefile_backups WHERE name = $1
                     ORDER BY seq DESC OFFSET GREATEST($2::bigint - 1, 0))",
            )
            .await?;
        tx.execute(&stmt, &[&name, &(self.opts.backups as i64)])
            .await?;
        Ok(())
    }

    async fn restore_tx(&self, name: &str, which: &BackupRef) -> Result<Written, Failure> {
        self.with_conn(async |c| {
            let tx = begin(c).await?;
            let t = Instant::now();
            let current = self.lock(&tx, name, false).await?;
            let lock_wait = t.elapsed();
            let stmt = tx
                .prepare_cached(
                    "SELECT seq, version FROM statefile_backups WHERE name = $1 ORDER BY seq DESC",
                )
                .await?;
            let kept: Vec<(i64, String)> = tx
                .query(&stmt, &[&name])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let chosen = match which {
                BackupRef::NewestGood => kept.first(),
                BackupRef::Number(n) => n.checked_sub(1).and_then(|i| kept.get(i)),
                BackupRef::Version(v) => kept.iter().find(|(_, kv)| kv == v.as_str()),
            };
            let Some((seq, _)) = chosen else {
                let what = match which {
                    BackupRef::NewestGood => "no backup".to_string(),
                    BackupRef::Number(n) => format!("no backup number {n} ({} kept)", kept.len()),
                    BackupRef::Version(v) => format!("no backup with version {v}"),
                };
                return Err(Failure::Lib(statefile::Error::new(
                    ErrorKind::NotFound,
                    format!("cannot restore {name}: {what}"),
                )));
            };
            let body: Vec<u8> = tx
                .query_one(
                    "SELECT body FROM statefile_backups WHERE name = $1 AND seq = $2",
                    &[&name, seq],
                )
                .await?
                .get(0);
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                return Err(Failure::Lib(statefile::Error::new(
                    ErrorKind::Corrupt,
                    format!("cannot restore {name}: that backup is not valid JSON: {e}"),
                )));
            }
            let version = Version::of(&body);
            // Keep at least one backup, so the restore itself can be undone.
            self.store(
                &tx,
                name,
                current.is_some(),
                &body,
                &version,
                self.opts.backups.max(1),
            )
            .await?;
            tx.commit().await?;
            Ok(Written {
                version,
                created: current.is_none(),
                lock_wait,
                replayed: false,
            })
        })
        .await
    }
}

/// Take the advisory locks of the keys in `$1` (text[]), in its order, each exclusive
/// where `$2` (bool[]) says so and shared otherwise; they end with the transaction.
/// Creators of a name take them, so a name that does not exist yet has a lock too.
const ADVISORY_LOCKS: &str = "SELECT count(*) FROM (SELECT CASE WHEN x
     THEN pg_advisory_xact_lock(hashtextextended('statefile:' || current_schema() || ':' || k, 0))::text
     ELSE pg_advisory_xact_lock_shared(hashtextextended('statefile:' || current_schema() || ':' || k, 0))::text
 END FROM unnest($1::text[], $2::bool[]) AS t(k, x)) AS taken";

/// Up to this many names (documents and their ancestors that could be documents) are
/// locked one by one, each with its bucket shared: at most 2 x 16 advisory locks.
const NAMED_LOCKS: usize = 16;

/// The buckets names hash into; a holder of more names than [`NAMED_LOCKS`] locks the
/// buckets of its names exclusive instead of the names: at most 32 advisory locks.
const LOCK_BUCKETS: u64 = 32;

/// The most advisory locks one SQL transaction of this backend holds, whatever it
/// writes: PostgreSQL's shared lock table holds `max_locks_per_transaction` (64 by
/// default) times the connections, so no request can fill it for the others.
pub const MAX_ADVISORY_LOCKS: usize = 32;

const _: () = assert!(2 * NAMED_LOCKS <= MAX_ADVISORY_LOCKS);
const _: () = assert!(LOCK_BUCKETS as usize <= MAX_ADVISORY_LOCKS);

/// The directories of `name` that could be documents (their names end in `.json`),
/// shallowest first: `a.json/b/c.json/d.json` has `a.json` and `a.json/b/c.json`. No
/// other directory can ever clash with a document: every document's name ends in
/// `.json`.
fn document_ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('/')
        .map(|(i, _)| &name[..i])
        .filter(|a| a.ends_with(".json"))
}

/// The bucket of the lock key `key` (FNV-1a, so every server of every version agrees).
fn bucket(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % LOCK_BUCKETS
}

/// The advisory locks (keys for [`ADVISORY_LOCKS`], and which are exclusive) that make
/// or use the documents `names`, in the one global order every holder follows.
///
/// What they protect: a name that has no row yet (the name exclusive, so two creators
/// take turns) and the paths above and below it (its ancestors that could be documents
/// shared, so a creator of `a.json` and one of `a.json/b.json` take turns and the second
/// sees the first). A holder of at most [`NAMED_LOCKS`] such names takes the bucket of
/// each name shared, then the names; a holder of more takes the buckets of its names
/// exclusive and no name. So two holders that share a name always conflict where one of
/// them needs it (name against name, bucket exclusive against bucket shared or
/// exclusive), and no holder takes more than [`MAX_ADVISORY_LOCKS`] locks. The order:
/// buckets by number, then names bytewise (an ancestor before the names below it); the
/// names of bucket keys (`bucket 7`) cannot be document names, which have no space.
fn advisory_locks<'a>(names: impl IntoIterator<Item = &'a str>) -> (Vec<String>, Vec<bool>) {
    let mut named: BTreeMap<&str, bool> = BTreeMap::new();
    for n in names {
        for a in document_ancestors(n) {
            named.entry(a).or_insert(false);
        }
        named.insert(n, true);
    }
    let coarse = named.len() > NAMED_LOCKS;
    let buckets: BTreeSet<u64> = named.keys().map(|k| bucket(k)).collect();
    let mut keys: Vec<String> = buckets.iter().map(|b| format!("bucket {b}")).collect();
    let mut excl = vec![coarse; keys.len()];
    if !coarse {
        for (k, x) in named {
            keys.push(k.to_string());
            excl.push(x);
        }
    }
    (keys, excl)
}

/// The locked row: its version, and its body when asked for.
struct Current {
    version: Version,
    body: Option<Vec<u8>>,
}

impl Current {
    fn from_row(row: &tokio_postgres::Row) -> Current {
        Current::new(row.get(0), row.get(1))
    }

    fn new(version: &str, body: Option<Vec<u8>>) -> Current {
        Current {
            // A version this build did not write (edited by hand) matches nothing.
            version: Version::parse(version).unwrap_or_else(|_| Version::of(version.as_bytes())),
            body,
        }
    }
}

/// The precondition against the locked row (or its absence), as the file backend
/// checks it.
fn check(name: &str, cond: &Condition, current: Option<&Current>) -> Result<(), Failure> {
    let conflict = |msg: String| {
        Err(Failure::Lib(statefile::Error::new(
            ErrorKind::Conflict,
            msg,
        )))
    };
    if cond.holds(current.map(|c| &c.version)) {
        return Ok(());
    }
    match (cond, current) {
        (Condition::Absent, _) => conflict(format!("cannot create {name}: it already exists")),
        (_, Some(c)) => conflict(format!(
            "{name} changed: it is at version {}, not one the request expected",
            c.version
        )),
        (_, None) => conflict(format!(
            "{name} does not exist (the request expected it to)"
        )),
    }
}

/// Names reach the store from routes (already checked) and from `statefile import`:
/// check again, so nothing the file backend would refuse is stored.
pub(crate) fn check_name(name: &str) -> Result<(), Failure> {
    crate::extract::check_name(name)
        .map_err(|e| Failure::Lib(statefile::Error::new(ErrorKind::InvalidName, e.detail)))
}

/// Record the directories `name` is in (`a.json/b/c.json`: `a.json`, `a.json/b`) as
/// the file backend makes them, under the advisory locks [`PgStore::lock`] took on them.
async fn record_directories(tx: &Transaction<'_>, name: &str) -> Result<(), Failure> {
    let dirs: Vec<&str> = name.match_indices('/').map(|(i, _)| &name[..i]).collect();
    if dirs.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO statefile_directories (name)
             SELECT d FROM unnest($1::text[]) WITH ORDINALITY AS t(d, i)
             WHERE NOT EXISTS (SELECT 1 FROM statefile_directories WHERE name = t.d)
             ORDER BY i
             ON CONFLICT (name) DO NOTHING",
        )
        .await?;
    tx.execute(&stmt, &[&dirs]).await?;
    Ok(())
}

/// Escape `%`, `_` and `\` for a LIKE pattern.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// A READ COMMITTED transaction, whatever the database's default: a statement that
/// waited for a lock must see what the lock's holder committed (under REPEATABLE READ a
/// creator that waited on another creator would not see its row).
async fn begin(c: &mut Conn) -> Result<Transaction<'_>, Failure> {
    Ok(c.build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
        .start()
        .await?)
}

/// A pooled connection that goes back to the pool only when marked [`Conn::done`].
struct Conn {
    obj: Option<Object>,
    reusable: bool,
}

impl Conn {
    /// The last statement finished cleanly: the connection may serve another request.
    fn done(&mut self) {
        self.reusable = true;
    }
}

impl std::ops::Deref for Conn {
    type Target = Object;
    fn deref(&self) -> &Object {
        self.obj.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Object {
        self.obj.as_mut().expect("present until dropped")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(obj) = self.obj.take()
            && !self.reusable
        {
            // A timeout or failure may have left it mid-statement or broken: close it
            // instead of handing it on.
            drop(Object::take(obj));
        }
    }
}

impl DocStore for PgStore {
    fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        if prefix.contains('\0') {
            // No name holds a NUL (and PostgreSQL text cannot).
            return Ok(Vec::new());
        }
        let pattern = format!("{}%", like_escape(prefix));
        self.block(async {
            let mut c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT name FROM statefile_documents WHERE name LIKE $1 ESCAPE '\\' ORDER BY name",
                )
                .await?;
            let names = c
                .query(&stmt, &[&pattern])
                .await?
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect();
            c.done();
            Ok(names)
        })
        .map_err(Failure::into_store)
    }

    fn get(&self, name: &str) -> StoreResult<Fetched> {
        check_name(name).map_err(Failure::into_store)?;
        self.block(async {
            let mut c = self.conn().await?;
            // The body only if it is within the limit: a row planted over it is never
            // fetched (the rows of a database others write are hostile input too).
            let stmt = c
                .prepare_cached(
                    "SELECT CASE WHEN octet_length(body)::bigint <= $2::bigint THEN body END,
                            octet_length(body)::bigint
                     FROM statefile_documents WHERE name = $1",
                )
                .await?;
            let max = i64::try_from(self.opts.max_document_bytes).unwrap_or(i64::MAX);
            let row = c.query_opt(&stmt, &[&name, &max]).await?;
            c.done();
            let Some(row) = row else {
                return Err(not_found(format!("document {name} does not exist")));
            };
            let Some(bytes) = row.get::<_, Option<Vec<u8>>>(0) else {
                let len: i64 = row.get(1);
                return Err(self.row_too_large(name, len));
            };
            Ok(Fetched {
                version: Version::of(&bytes),
                bytes,
                recovered_from: None,
            })
        })
        .map_err(Failure::into_store)
    }

    fn put(&self, name: &str, value: &Value, cond: &Condition) -> StoreResult<Written> {
        check_name(name).map_err(Failure::into_store)?;
        let bytes = self.serialize(name, value).map_err(Failure::into_store)?;
        self.block(self.put_tx(name, &bytes, cond))
            .map_err(Failure::into_store)
    }

    fn update(
        &self,
        name: &str,
        cond: &Condition,
        init: Option<Value>,
        f: Mutator<'_>,
    ) -> StoreResult<(Value, Written)> {
        check_name(name).map_err(Failure::into_store)?;
        self.block(self.update_tx(name, cond, init, f, None))
            .map_err(Failure::into_store)
    }

    fn delete(&self, name: &str, cond: &Condition) -> StoreResult<()> {
        check_name(name).map_err(Failure::into_store)?;
        self.block(self.delete_tx(name, cond))
            .map_err(Failure::into_store)
    }

    fn backups(&self, name: &str) -> StoreResult<Vec<BackupEntry>> {
        check_name(name).map_err(Failure::into_store)?;
        self.block(async {
            let mut c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT version, length(body)::bigint,
                            floor(extract(epoch FROM written_at))::bigint
                     FROM statefile_backups WHERE name = $1 ORDER BY seq DESC",
                )
                .await?;
            let rows = c.query(&stmt, &[&name]).await?;
            let exists = if rows.is_empty() {
                let stmt = c
                    .prepare_cached("SELECT 1 FROM statefile_documents WHERE name = $1")
                    .await?;
                c.query_opt(&stmt, &[&name]).await?.is_some()
            } else {
                true
            };
            c.done();
            if !exists {
                return Err(not_found(format!(
                    "document {name} does not exist and has no backups"
                )));
            }
            Ok(rows
                .iter()
                .enumerate()
                .map(|(i, r)| BackupEntry {
                    number: i + 1,
                    version: r.get::<_, String>(0),
                    bytes: r.get::<_, i64>(1).max(0) as u64,
                    modified_unix: r.get::<_, i64>(2).max(0) as u64,
                    parses: true,
                })
                .collect())
        })
        .map_err(Failure::into_store)
    }

    fn restore(&self, name: &str, which: &BackupRef) -> StoreResult<Written> {
        check_name(name).map_err(Failure::into_store)?;
        self.block(self.restore_tx(name, which))
            .map_err(Failure::into_store)
    }

    /// The key's answer is kept in the database by the transaction that writes, so
    /// every server sharing the database answers a repeat with it (for
    /// [`crate::Idempotency::TTL`]), across restarts. A repeat waits on the document's
    /// lock while the first request runs, then gets its answer.
    fn update_keyed(
        &self,
        name: &str,
        key: &Keyed<'_>,
        init: Option<Value>,
        f: Mutator<'_>,
    ) -> StoreResult<(Value, Written)> {
        check_name(name).map_err(Failure::into_store)?;
        self.block(self.update_tx(name, &Condition::Any, init, f, Some(key)))
            .map_err(Failure::into_store)
    }

    /// One SQL transaction (see the `tx` module): the rows and names locked in one
    /// order, every precondition checked under the locks, every change or none.
    fn transaction(
        &self,
        ops: &[statefile::TxOp],
        limits: &statefile::patch::Limits,
    ) -> Result<Vec<statefile::TxOpResult>, TxFailed> {
        for op in ops {
            check_name(&op.doc).map_err(|f| TxFailed::Store {
                doc: Some(op.doc.clone()),
                error: f.into_store(),
            })?;
        }
        self.block(self.transaction_tx(ops, limits))
            .unwrap_or_else(|f| {
                Err(TxFailed::Store {
                    doc: None,
                    error: f.into_store(),
                })
            })
    }

    /// A `SELECT 1` on a pooled connection, within the connect and statement timeouts.
    fn health(&self) -> StoreResult<()> {
        self.block(async {
            let mut c = self.conn().await?;
            c.simple_query("SELECT 1").await?;
            c.done();
            Ok(())
        })
        .map_err(Failure::into_store)
    }

    fn render_metrics(&self, out: &mut String) {
        self.metrics.render(&self.pool.status(), out);
    }
}

/// A `Conflict` whose reason the client reads: `document {name} {why}` (as the file
/// backend words it).
fn conflict_because(name: &str, why: &str) -> Failure {
    let why = format!("document {name} {why}");
    Failure::Store(StoreError::new(ErrorKind::Conflict, why.clone()).with_reason(why))
}

fn not_found(msg: String) -> Failure {
    Failure::Lib(statefile::Error::new(ErrorKind::NotFound, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_names_are_locked_one_by_one_behind_their_buckets_shared() {
        let (keys, excl) = advisory_locks(["a.json/b/c.json", "a.json", "z/y.json"]);
        let names = &keys[keys.len() - 3..];
        assert_eq!(names, ["a.json", "a.json/b/c.json", "z/y.json"]);
        assert_eq!(excl[excl.len() - 3..], [true, true, true]);
        let buckets = &keys[..keys.len() - 3];
        assert!(buckets.iter().all(|k| k.starts_with("bucket ")));
        assert!(excl[..buckets.len()].iter().all(|x| !x));
        // `a.json/b` cannot be a document: no lock; `a.json` is shared below `c.json`
        // only when it is not written itself.
        let (keys, excl) = advisory_locks(["a.json/b/c.json"]);
        assert_eq!(keys[keys.len() - 2..], ["a.json", "a.json/b/c.json"]);
        assert_eq!(excl[excl.len() - 2..], [false, true]);
    }

    /// Review (hostile): a transaction of 1000 deep names took 41,000 advisory locks.
    #[test]
    fn many_names_take_at_most_the_bound_in_buckets_exclusive_in_order() {
        let names: Vec<String> = (0..1000)
            .map(|i| format!("{i}.json/{}x.json", "a.json/".repeat(140)))
            .collect();
        let (keys, excl) = advisory_locks(names.iter().map(String::as_str));
        assert!(keys.len() <= MAX_ADVISORY_LOCKS, "{}", keys.len());
        assert!(excl.iter().all(|x| *x));
        let numbers: Vec<u64> = keys
            .iter()
            .map(|k| k.strip_prefix("bucket ").unwrap().parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        // Each name's bucket is among them, so it conflicts with any holder of the name.
        for n in &names {
            assert!(numbers.contains(&bucket(n)));
        }
        let few = advisory_locks((0..NAMED_LOCKS).map(|_| "n.json"));
        assert_eq!(few.0.len(), 2);
        let many: Vec<String> = (0..=NAMED_LOCKS).map(|i| format!("{i}.json")).collect();
        let (keys, excl) = advisory_locks(many.iter().map(String::as_str));
        assert!(keys.len() <= LOCK_BUCKETS as usize && excl.iter().all(|x| *x));
    }
}
