//! The PostgreSQL backend's own behaviour: schema migrations, what it refuses, bytes
//! equal to the file backend's, backups, row locks, idempotency keys shared through the
//! database, import and export. Needs STATEFILE_TEST_PG_URL (`./test postgres` starts a
//! throwaway cluster); without it every test says it skipped.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, JSON, call, fresh_schema};
use serde_json::json;
use statefile_server::pg::transfer::{self, Outcome};
use statefile_server::pg::{PgOptions, PgStore};
use statefile_server::{App, Config};

fn url() -> Option<String> {
    match Backend::postgres()? {
        Backend::Postgres(u) => Some(u),
        Backend::File => None,
    }
}

/// Open a store off the async threads (it blocks on its own runtime).
async fn open(opts: PgOptions) -> Result<PgStore, String> {
    tokio::task::spawn_blocking(move || PgStore::open(opts).map_err(|e| e.to_string()))
        .await
        .unwrap()
}

async fn sql(url: &str, q: &str) -> Vec<tokio_postgres::Row> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.query(q, &[]).await.unwrap()
}

fn app(store: PgStore, dir: &std::path::Path) -> Arc<App> {
    App::new(Config::new(dir), Arc::new(store))
}

#[tokio::test]
async fn migrations_are_idempotent_and_a_newer_schema_is_refused() {
    let Some(base) = url() else { return };
    let url = fresh_schema(&base).await;
    // Two servers starting at once, then a third later: one schema, version 1.
    let (a, b) = tokio::join!(open(PgOptions::new(&url)), open(PgOptions::new(&url)));
    a.unwrap();
    b.unwrap();
    open(PgOptions::new(&url)).await.unwrap();
    let rows = sql(&url, "SELECT version FROM statefile_schema").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].get::<_, i32>(0),
        statefile_server::pg::SCHEMA_VERSION
    );
    // Version 1 to 2: the directories of the names already stored are filled in.
    for q in [
        "DROP TABLE statefile_directories",
        "UPDATE statefile_schema SET version = 1",
        "INSERT INTO statefile_documents (name, body, version) VALUES ('m.json/a.json', '1', 'x')",
        "INSERT INTO statefile_backups (name, body, version, written_at)
         VALUES ('n.json/b/c.json', '1', 'x', now())",
    ] {
        sql(&url, q).await;
    }
    open(PgOptions::new(&url)).await.unwrap();
    let dirs: Vec<String> = sql(&url, "SELECT name FROM statefile_directories ORDER BY name")
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(dirs, ["m.json", "n.json", "n.json/b"]);
    sql(&url, "UPDATE statefile_schema SET version = 99").await;
    let e = open(PgOptions::new(&url)).await.unwrap_err();
    assert!(
        e.contains("schema version 99") && e.contains("upgrade statefile"),
        "{e}"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error_within_the_connect_timeout() {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut o = PgOptions::new(format!(
        "postgres://someone:hunter2@127.0.0.1:{port}/nothing"
    ));
    o.connect_timeout = Duration::from_secs(2);
    let t = Instant::now();
    let e = open(o).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(
        e.contains(&format!(
            "cannot reach the database at postgres://someone@127.0.0.1:{port}/nothing"
        )),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "the password stays out: {e}");
    let e = open(PgOptions::new("mysql://x")).await.unwrap_err();
    assert!(e.contains("not a PostgreSQL connection string"), "{e}");
    // Neither form of the connection string shows its password in a message or in
    // the options' Debug.
    let e = open(PgOptions::new(format!(
        "host=127.0.0.1 port={port} user=someone password=hunter2 dbname=nothing connect_timeout=2"
    )))
    .await
    .unwrap_err();
    assert!(
        e.contains(&format!("postgres://someone@127.0.0.1:{port}/nothing"))
            && !e.contains("hunter2"),
        "{e}"
    );
    for url in [
        "postgres://me:hunter2@db/app",
        "host=db user=me password=hunter2 dbname=app",
        "postgres://me:hunter2@db:bad/app",
    ] {
        let shown = format!("{:?}", PgOptions::new(url));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    let mut o = PgOptions::new("postgres://x@127.0.0.1/x");
    o.pool_size = 100_000;
    let e = open(o).await.unwrap_err();
    assert!(e.contains("pool size must be 1 to 256"), "{e}");
}

#[tokio::test]
async fn synchronous_commit_off_is_warned_about() {
    let Some(base) = url() else { return };
    let ok = open(PgOptions::new(fresh_schema(&base).await))
        .await
        .unwrap();
    assert!(ok.warnings().is_empty(), "{:?}", ok.warnings());
    let url = format!("{}%20-csynchronous_commit%3Doff", fresh_schema(&base).await);
    let s = open(PgOptions::new(url)).await.unwrap();
    assert_eq!(s.warnings().len(), 1, "{:?}", s.warnings());
    assert!(s.warnings()[0].contains("synchronous_commit off"));
}

#[tokio::test]
async fn the_bytes_and_etags_are_the_file_backends() {
    let Some(b) = Backend::postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let files = Backend::File.app_in(dir.path()).await;
    let pg = b.app_in(dir.path()).await;
    let values = [
        &br#"{"b": 1, "a": [1, 2.5, -0.0, 1e300], "s": "\u00e9\ud83d\ude00\n\"", "n": null}"#[..],
        b"[]",
        b"\"x\"",
        br#"{"z": {"y": {"x": [true, false, {}]}}}"#,
    ];
    for (i, v) in values.iter().enumerate() {
        let uri = format!("/v1/docs/d{i}.json");
        let a = call(&files, "PUT", &uri, &[JSON], v).await;
        let p = call(&pg, "PUT", &uri, &[JSON], v).await;
        assert_eq!((a.status.as_u16(), p.status.as_u16()), (201, 201));
        assert_eq!(
            a.header("etag"),
            p.header("etag"),
            "{}",
            String::from_utf8_lossy(v)
        );
        let a = call(&files, "GET", &uri, &[], b"").await;
        let p = call(&pg, "GET", &uri, &[], b"").await;
        assert_eq!(a.body, p.body);
        assert_eq!(a.header("etag"), p.header("etag"));
        assert!(p.header("statefile-recovered-from").is_none());
    }
    // Appends and patches too.
    for app in [&files, &pg] {
        call(
            app,
            "POST",
            "/v1/docs/d0.json/append?pointer=/a",
            &[JSON],
            b"{\"k\": 3}",
        )
        .await;
        call(
            app,
            "PATCH",
            "/v1/docs/d0.json",
            &[("content-type", "application/merge-patch+json")],
            br#"{"b": null, "c": "new"}"#,
        )
        .await;
    }
    let a = call(&files, "GET", "/v1/docs/d0.json", &[], b"").await;
    let p = call(&pg, "GET", "/v1/docs/d0.json", &[], b"").await;
    assert_eq!(a.body, p.body);
    assert_eq!(a.header("etag"), p.header("etag"));
}

#[tokio::test]
async fn backups_keep_the_last_n_versions_and_restore_them() {
    let Some(base) = url() else { return };
    let mut o = PgOptions::new(fresh_schema(&base).await);
    o.backups = 3;
    let dir = tempfile::tempdir().unwrap();
    let app = app(open(o).await.unwrap(), dir.path());
    let mut etags = Vec::new();
    for i in 0..6 {
        let r = call(
            &app,
            "PUT",
            "/v1/docs/b.json",
            &[JSON],
            format!("{{\"i\": {i}}}").as_bytes(),
        )
        .await;
        etags.push(r.header("etag").unwrap());
        // The same bytes again keep no second copy of one version.
        call(
            &app,
            "PUT",
            "/v1/docs/b.json",
            &[JSON],
            format!("{{\"i\": {i}}}").as_bytes(),
        )
        .await;
    }
    let list = call(&app, "GET", "/v1/docs/b.json/backups", &[], b"")
        .await
        .json();
    let kept: Vec<String> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| format!("\"{}\"", b["version"].as_str().unwrap()))
        .collect();
    assert_eq!(kept, [&etags[4], &etags[3], &etags[2]].map(String::clone));
    assert_eq!(list["backups"][0]["number"], 1);
    assert_eq!(list["backups"][0]["parses"], true);
    assert_eq!(list["backups"][0]["bytes"], 13, "{{\\n  \"i\": 4\\n}}\\n");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        list["backups"][2]["modified_unix"]
            .as_u64()
            .unwrap()
            .abs_diff(now)
            < 600
    );
    // Restore by version: the current one becomes backup 1.
    let v2 = etags[2].trim_matches('"');
    let r = call(
        &app,
        "POST",
        &format!("/v1/docs/b.json/restore?from={v2}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag").as_ref(), Some(&etags[2]));
    let r = call(&app, "GET", "/v1/docs/b.json", &[], b"").await;
    assert_eq!(r.json(), json!({"i": 2}));
    let list = call(&app, "GET", "/v1/docs/b.json/backups", &[], b"")
        .await
        .json();
    assert_eq!(
        list["backups"][0]["version"].as_str(),
        Some(etags[5].trim_matches('"'))
    );
    assert_eq!(list["backups"].as_array().unwrap().len(), 3);
    // Delete keeps the document as backup 1; restore brings it back.
    assert_eq!(
        call(&app, "DELETE", "/v1/docs/b.json", &[], b"")
            .await
            .status,
        204
    );
    call(&app, "GET", "/v1/docs/b.json", &[], b"")
        .await
        .problem(404, "not-found");
    let r = call(&app, "POST", "/v1/docs/b.json/restore", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag").as_ref(), Some(&etags[2]));
    call(&app, "POST", "/v1/docs/b.json/restore?from=4", &[], b"")
        .await
        .problem(404, "not-found");
}

#[tokio::test]
async fn a_row_lock_held_elsewhere_is_503_lock_timeout_then_the_write_goes_through() {
    let Some(base) = url() else { return };
    let url = fresh_schema(&base).await;
    let mut o = PgOptions::new(&url);
    o.lock_timeout = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let app = app(open(o).await.unwrap(), dir.path());
    call(&app, "PUT", "/v1/docs/l.json", &[JSON], b"1").await;
    // Another session holds the row in an open transaction.
    let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let tx = client.transaction().await.unwrap();
    tx.query(
        "SELECT 1 FROM statefile_documents WHERE name = 'l.json' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let t = Instant::now();
    let r = call(&app, "PUT", "/v1/docs/l.json", &[JSON], b"2").await;
    r.problem(503, "lock-timeout");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let r = call(&app, "POST", "/v1/docs/l.json/append", &[JSON], b"2").await;
    r.problem(503, "lock-timeout");
    tx.rollback().await.unwrap();
    assert_eq!(
        call(&app, "PUT", "/v1/docs/l.json", &[JSON], b"[2]")
            .await
            .status,
        200
    );
    assert_eq!(
        call(&app, "GET", "/v1/docs/l.json", &[], b"").await.json(),
        json!([2])
    );
}

#[tokio::test]
async fn creating_one_document_from_many_stores_at_once_creates_it_once() {
    let Some(base) = url() else { return };
    // Regression: under a default of REPEATABLE READ, a creator that waited for another
    // creator did not see its row and failed with a unique violation (500).
    let url = format!(
        "{}%20-cdefault_transaction_isolation%3Drepeatable%5C%20read",
        fresh_schema(&base).await
    );
    let dir = tempfile::tempdir().unwrap();
    let a = app(open(PgOptions::new(&url)).await.unwrap(), dir.path());
    let b = app(open(PgOptions::new(&url)).await.unwrap(), dir.path());
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let app = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let r = call(
                    &app,
                    "POST",
                    "/v1/docs/new/n.json/append?pointer=/items",
                    &[JSON],
                    format!("{i}").as_bytes(),
                )
                .await;
                assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                let created = call(
                    &app,
                    "PUT",
                    "/v1/docs/once.json",
                    &[JSON, ("if-none-match", "*")],
                    format!("{i}").as_bytes(),
                )
                .await;
                created.status.as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        39,
        "{statuses:?}"
    );
    let doc = call(&a, "GET", "/v1/docs/new/n.json", &[], b"")
        .await
        .json();
    let mut items: Vec<i64> = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    items.sort();
    assert_eq!(items, (0..40).collect::<Vec<_>>(), "every append once");
}

#[tokio::test]
async fn idempotency_keys_are_shared_by_servers_and_kept_across_restarts() {
    let Some(base) = url() else { return };
    let url = fresh_schema(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let a = app(open(PgOptions::new(&url)).await.unwrap(), dir.path());
    let b = app(open(PgOptions::new(&url)).await.unwrap(), dir.path());
    let key = ("idempotency-key", "k-1");
    let uri = "/v1/docs/q.json/append?pointer=/items";
    let first = call(&a, "POST", uri, &[JSON, key], b"\"x\"").await;
    assert_eq!(first.status, 200);
    // Another server, the same key: the first answer, not a second append.
    let again = call(&b, "POST", uri, &[JSON, key], b"\"x\"").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("etag"), first.header("etag"));
    call(&b, "POST", uri, &[JSON, key], b"\"y\"")
        .await
        .problem(422, "idempotency-key-reused");
    // A restart: a new store on the same database still knows the key.
    drop((a, b));
    let c = app(open(PgOptions::new(&url)).await.unwrap(), dir.path());
    let after = call(&c, "POST", uri, &[JSON, key], b"\"x\"").await;
    assert_eq!(after.body, first.body);
    assert_eq!(
        call(&c, "GET", "/v1/docs/q.json", &[], b"").await.json(),
        json!({"items": ["x"]})
    );
    // An expired key is a new request (on a server that has not seen it: one that has
    // keeps it in memory for as long).
    sql(
        &url,
        "UPDATE statefile_idempotency SET created_at = created_at - interval '11 minutes'",
    )
    .await;
    let e = app(open(PgOptions::new(&url)).await.unwrap(), dir.path());
    let fresh = call(&e, "POST", uri, &[JSON, key], b"\"x\"").await;
    assert_eq!(fresh.json()["index"], 1);
    // Racing repeats across both servers: applied once, one answer.
    let d = app(open(PgOptions::new(&url)).await.unwrap(), dir.path());
    let tries: Vec<_> = (0..16)
        .map(|i| {
            let app = if i % 2 == 0 { c.clone() } else { d.clone() };
            tokio::spawn(async move {
                call(
                    &app,
                    "POST",
                    "/v1/docs/r.json/append",
                    &[JSON, ("idempotency-key", "race")],
                    b"7",
                )
                .await
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tries {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        bodies.push(r.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        call(&c, "GET", "/v1/docs/r.json", &[], b"").await.json(),
        json!([7])
    );
}

#[tokio::test]
async fn listing_by_prefix_takes_like_wildcards_literally() {
    let Some(b) = Backend::postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let app = b.app_in(dir.path()).await;
    for n in ["a_b.json", "axb.json", "a%c.json", "abc.json", "a_/x.json"] {
        let n = n.replace('%', "%25");
        let r = call(&app, "PUT", &format!("/v1/docs/{n}"), &[JSON], b"1").await;
        assert!(r.status == 201 || r.status == 400, "{n}: {}", r.status);
    }
    let r = call(&app, "GET", "/v1/docs?prefix=a_", &[], b"").await;
    assert_eq!(r.json(), json!({"names": ["a_/x.json", "a_b.json"]}));
    let r = call(&app, "GET", "/v1/docs?prefix=a%25", &[], b"").await;
    assert_eq!(r.json(), json!({"names": []}));
    let r = call(&app, "GET", "/v1/docs?prefix=%00", &[], b"").await;
    assert_eq!(r.json(), json!({"names": []}));
}

#[tokio::test]
async fn a_document_over_the_size_limit_is_422_and_nothing_changes() {
    let Some(base) = url() else { return };
    let schema = fresh_schema(&base).await;
    let mut o = PgOptions::new(schema.clone());
    o.max_document_bytes = 1000;
    let dir = tempfile::tempdir().unwrap();
    let app = app(open(o).await.unwrap(), dir.path());
    let r = call(&app, "PUT", "/v1/docs/s.json", &[JSON], b"[]").await;
    assert_eq!(r.status, 201);
    let big = format!("\"{}\"", "x".repeat(2000));
    call(&app, "PUT", "/v1/docs/s.json", &[JSON], big.as_bytes())
        .await
        .problem(422, "value-not-storable");
    let item = format!("\"{}\"", "x".repeat(300));
    for _ in 0..3 {
        assert_eq!(
            call(
                &app,
                "POST",
                "/v1/docs/s.json/append",
                &[JSON],
                item.as_bytes()
            )
            .await
            .status,
            200
        );
    }
    let r = call(
        &app,
        "POST",
        "/v1/docs/s.json/append",
        &[JSON],
        item.as_bytes(),
    )
    .await;
    r.problem(422, "value-not-storable");
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("limit of 1000 bytes"),
        "{}",
        r.json()
    );
    let doc = call(&app, "GET", "/v1/docs/s.json", &[], b"").await.json();
    assert_eq!(doc.as_array().unwrap().len(), 3);
    // A row planted over the limit by another writer of the database is never fetched:
    // a GET of it is 422, naming its size and the limit.
    sql(
        &schema,
        &format!(
            "UPDATE statefile_documents SET body = convert_to('\"{}\"', 'UTF8') WHERE name = 's.json'",
            "x".repeat(5000)
        ),
    )
    .await;
    let r = call(&app, "GET", "/v1/docs/s.json", &[], b"").await;
    r.problem(422, "value-not-storable");
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("5002 bytes") && detail.contains("limit of 1000 bytes"),
        "{detail}"
    );
    // Nor is it fetched under the row lock for a read-modify-write: a PATCH or an
    // append of it is 422 the same way, and the row stays as it was.
    let merge = ("content-type", "application/merge-patch+json");
    let requests = [
        ("PATCH", "/v1/docs/s.json", merge, &b"{\"a\": 1}"[..]),
        ("POST", "/v1/docs/s.json/append", JSON, b"1"),
    ];
    for (method, path, ctype, body) in requests {
        let r = call(&app, method, path, &[ctype], body).await;
        r.problem(422, "value-not-storable");
        let detail = r.json()["detail"].as_str().unwrap().to_string();
        assert!(
            detail.contains("5002 bytes") && detail.contains("limit of 1000 bytes"),
            "{method}: {detail}"
        );
    }
    let r = call(&app, "GET", "/v1/docs/s.json", &[], b"").await;
    r.problem(422, "value-not-storable");
    // A PUT, which needs not read it, replaces it.
    let r = call(&app, "PUT", "/v1/docs/s.json", &[JSON], b"[1]").await;
    assert_eq!(r.status, 200);
    let r = call(&app, "GET", "/v1/docs/s.json", &[], b"").await;
    assert_eq!(r.json(), json!([1]));
}

#[tokio::test]
async fn names_the_file_backend_refuses_are_refused_by_the_store_itself() {
    use statefile_server::{Condition, DocStore};
    let Some(base) = url() else { return };
    let store = open(PgOptions::new(fresh_schema(&base).await))
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        for bad in [
            "../x.json",
            "/abs.json",
            "a/../b.json",
            ".hidden.json",
            "x.txt",
            "a\u{0}.json",
        ] {
            let e = store.put(bad, &json!(1), &Condition::Any).unwrap_err();
            assert_eq!(e.kind(), Some(statefile::ErrorKind::InvalidName), "{bad}");
            assert!(store.get(bad).is_err(), "{bad}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn import_and_export_copy_documents_and_backups_byte_for_byte_and_rerun_cleanly() {
    let Some(base) = url() else { return };
    let src = tempfile::tempdir().unwrap();
    let opts = statefile::Options::new().backups(2).create_dirs(true);
    let store = statefile::Store::open_with(src.path(), opts.clone()).unwrap();
    for i in 0..3 {
        store
            .doc::<serde_json::Value>("jobs/1.json")
            .unwrap()
            .write(&json!({"run": i}))
            .unwrap();
    }
    store
        .doc::<serde_json::Value>("config.json")
        .unwrap()
        .write(&json!({"a": [1]}))
        .unwrap();
    // Bytes another program wrote (compact, no newline): copied as they are.
    std::fs::write(src.path().join("raw.json"), br#"{"x":1}"#).unwrap();
    // A deleted document, restorable from its two backups: copied as deleted, with them.
    let gone = store.doc::<serde_json::Value>("old/gone.json").unwrap();
    gone.write(&json!("first")).unwrap();
    gone.write(&json!("last")).unwrap();
    gone.delete().unwrap();
    let url = fresh_schema(&base).await;
    let pg = open(PgOptions::new(&url)).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let (src_path, out_path) = (src.path().to_path_buf(), out.path().to_path_buf());
    tokio::task::spawn_blocking(move || {
        use statefile_server::DocStore;
        let store = statefile::Store::open_with(&src_path, opts.clone()).unwrap();
        let r = transfer::import(&store, &pg, |_| {}).unwrap();
        assert_eq!((r.copied(), r.failed()), (4, 0), "{:?}", r.documents);
        assert!(r.documents.contains(&(
            "old/gone.json".to_string(),
            Outcome::Copied {
                version: None,
                backups: 2
            }
        )));
        let again = transfer::import(&store, &pg, |_| {}).unwrap();
        assert_eq!(again.unchanged(), 4, "re-runnable: {:?}", again.documents);
        // In the database: no document, its two versions restorable.
        assert!(pg.get("old/gone.json").is_err());
        let kept = pg.backups("old/gone.json").unwrap();
        let src_kept: Vec<_> = gone
            .backups()
            .unwrap()
            .into_iter()
            .map(|b| b.version)
            .collect();
        assert_eq!(
            kept.iter().map(|b| b.version.as_str()).collect::<Vec<_>>(),
            src_kept.iter().map(|v| v.as_str()).collect::<Vec<_>>()
        );
        let target = statefile::Store::open_with(&out_path, opts).unwrap();
        let r = transfer::export(&pg, &target, |_| {}).unwrap();
        assert_eq!((r.copied(), r.failed()), (4, 0), "{:?}", r.documents);
        assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
        assert!(r.notes[0].starts_with("raw.json: its bytes were not in the directory's layout"));
        let again = transfer::export(&pg, &target, |_| {}).unwrap();
        assert_eq!(again.unchanged(), 4, "{:?}", again.documents);
        // Deleted in the directory too, with the same backups, and restorable there.
        assert_eq!(target.list_deleted("").unwrap(), ["old/gone.json"]);
        let out_gone = target.doc::<serde_json::Value>("old/gone.json").unwrap();
        assert!(!out_gone.exists().unwrap());
        let out_kept: Vec<_> = out_gone
            .backups()
            .unwrap()
            .into_iter()
            .map(|b| b.version)
            .collect();
        assert_eq!(out_kept, src_kept);
        out_gone.restore(&statefile::BackupRef::NewestGood).unwrap();
        assert_eq!(out_gone.read().unwrap(), json!("last"));
        // Restored at the source: the next import brings the document back.
        gone.restore(&statefile::BackupRef::NewestGood).unwrap();
        let r = transfer::import(&store, &pg, |_| {}).unwrap();
        assert_eq!((r.copied(), r.unchanged()), (1, 3), "{:?}", r.documents);
        assert_eq!(pg.get("old/gone.json").unwrap().bytes, b"\"last\"\n");
        // The database holds raw.json's bytes as they were; the directory lays out the
        // same value as every statefile write does.
        let raw = target.doc::<serde_json::Value>("raw.json").unwrap();
        assert_eq!(raw.read().unwrap(), json!({"x": 1}));
        for name in ["jobs/1.json", "config.json"] {
            let a = store.doc::<serde_json::Value>(name).unwrap();
            let b = target.doc::<serde_json::Value>(name).unwrap();
            assert_eq!(
                std::fs::read(a.path()).unwrap(),
                std::fs::read(b.path()).unwrap()
            );
            let versions = |d: &statefile::Doc<serde_json::Value>| {
                d.backups()
                    .unwrap()
                    .into_iter()
                    .map(|b| b.version)
                    .collect::<Vec<_>>()
            };
            assert_eq!(versions(&a), versions(&b), "{name}");
        }
        assert_eq!(
            store
                .doc::<serde_json::Value>("jobs/1.json")
                .unwrap()
                .backups()
                .unwrap()
                .len(),
            2
        );
        // A document changed at the source is copied again; the others are unchanged.
        store
            .doc::<serde_json::Value>("config.json")
            .unwrap()
            .write(&json!({"a": [2]}))
            .unwrap();
        let r = transfer::import(&store, &pg, |_| {}).unwrap();
        assert_eq!((r.copied(), r.unchanged()), (1, 3), "{:?}", r.documents);
        assert!(matches!(
            r.documents
                .iter()
                .find(|(n, _)| n == "config.json")
                .unwrap()
                .1,
            Outcome::Copied { backups: 1, .. }
        ));
    })
    .await
    .unwrap();
    let rows = sql(
        &url,
        "SELECT count(*) FROM statefile_backups WHERE name = 'jobs/1.json'",
    )
    .await;
    assert_eq!(rows[0].get::<_, i64>(0), 2);
}

#[tokio::test]
async fn healthz_asks_the_database_and_metrics_show_the_pool_and_operations() {
    let Some(b) = Backend::postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let app = b.app_in(dir.path()).await;
    let r = call(&app, "GET", "/healthz", &[], b"").await;
    assert_eq!(r.status, 200);
    call(&app, "PUT", "/v1/docs/m.json", &[JSON], b"{}").await;
    let m = String::from_utf8(call(&app, "GET", "/metrics", &[], b"").await.body).unwrap();
    for line in [
        "statefile_pg_pool_max_connections 16",
        "statefile_pg_pool_connections{state=\"idle\"}",
        "statefile_pg_pool_wait_seconds_count",
        "statefile_pg_errors_total{cause=\"unavailable\"} 0",
    ] {
        assert!(m.contains(line), "{line} in {m}");
    }
    // Open (migrations, settings), the health check and the PUT.
    let ops = m
        .lines()
        .find_map(|l| l.strip_prefix("statefile_pg_operation_seconds_count "))
        .unwrap();
    assert!(ops.parse::<u64>().unwrap() >= 2, "{m}");
}

/// Regression: a refused write (412, 404, 422) closed its database connection instead of
/// returning it to the pool, so every refusal cost a new connection.
#[tokio::test]
async fn refused_writes_keep_their_connection_in_the_pool() {
    let Some(base) = url() else { return };
    let mut o = PgOptions::new(fresh_schema(&base).await);
    o.pool_size = 2;
    let dir = tempfile::tempdir().unwrap();
    let app = app(open(o).await.unwrap(), dir.path());
    call(&app, "PUT", "/v1/docs/c.json", &[JSON], b"{\"n\": 1}").await;
    let stale = (
        "if-match",
        "\"0000000000000000000000000000000000000000000000000000000000000000\"",
    );
    for _ in 0..20 {
        call(&app, "PUT", "/v1/docs/c.json", &[JSON, stale], b"{}")
            .await
            .problem(412, "precondition-failed");
        call(
            &app,
            "PUT",
            "/v1/docs/c.json",
            &[JSON, ("if-none-match", "*")],
            b"{}",
        )
        .await
        .problem(412, "precondition-failed");
        call(&app, "DELETE", "/v1/docs/none.json", &[], b"")
            .await
            .problem(404, "not-found");
        call(
            &app,
            "POST",
            "/v1/docs/c.json/append?pointer=/n",
            &[JSON],
            b"1",
        )
        .await
        .problem(422, "pointer-not-applicable");
    }
    let m = String::from_utf8(call(&app, "GET", "/metrics", &[], b"").await.body).unwrap();
    let opened: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("statefile_pg_connections_opened_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(opened <= 2, "{opened} connections for 80 refusals: {m}");
}

#[tokio::test]
async fn concurrent_patches_from_two_servers_are_all_applied() {
    let Some(base) = url() else { return };
    let url = fresh_schema(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let a = app(open(PgOptions::new(&url)).await.unwrap(), dir.path());
    let b = app(open(PgOptions::new(&url)).await.unwrap(), dir.path());
    let merge = ("content-type", "application/merge-patch+json");
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let app = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let r = if i % 3 == 0 {
                    // A JSON Patch needs the document: retry until a merge patch made it.
                    loop {
                        let body = format!(r#"[{{"op": "add", "path": "/k{i}", "value": {i}}}]"#);
                        let r = call(
                            &app,
                            "PATCH",
                            "/v1/docs/p.json",
                            &[("content-type", "application/json-patch+json")],
                            body.as_bytes(),
                        )
                        .await;
                        if r.status != 404 {
                            break r;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                } else {
                    call(
                        &app,
                        "PATCH",
                        "/v1/docs/p.json",
                        &[merge],
                        format!(r#"{{"k{i}": {i}}}"#).as_bytes(),
                    )
                    .await
                };
                assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let doc = call(&a, "GET", "/v1/docs/p.json", &[], b"").await.json();
    for i in 0..60 {
        assert_eq!(doc[format!("k{i}")], i, "patch {i} lost: {doc}");
    }
}

/// Regression: requests waited for a pooled connection only as long as the connect
/// timeout, so a burst larger than the pool got 503s while the database was fine.
#[tokio::test]
async fn a_burst_larger_than_the_pool_queues_for_connections_instead_of_failing() {
    let Some(base) = url() else { return };
    let mut o = PgOptions::new(fresh_schema(&base).await);
    o.pool_size = 1;
    o.connect_timeout = Duration::from_millis(200);
    // The open's own first connection (TLS and SCRAM, in a debug build, on a loaded
    // machine) may take longer than 200 ms; it is not what this test is about.
    let mut store = open(o.clone()).await;
    for _ in 0..20 {
        match &store {
            Err(e) if e.contains("cannot reach the database") => {
                store = open(o.clone()).await;
            }
            _ => break,
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let app = app(store.unwrap(), dir.path());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                call(
                    &app,
                    "POST",
                    "/v1/docs/burst.json/append",
                    &[JSON],
                    format!("{i}").as_bytes(),
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let doc = call(&app, "GET", "/v1/docs/burst.json", &[], b"")
        .await
        .json();
    assert_eq!(doc.as_array().unwrap().len(), 200);
}

/// The throwaway cluster's certificates (test.d/pg-cluster.sh): `None` (said plainly, or
/// a failure when the database is required) without them.
fn tls_dir() -> Option<std::path::PathBuf> {
    match std::env::var_os("STATEFILE_TEST_PG_TLS") {
        Some(d) => Some(d.into()),
        None => {
            assert!(
                std::env::var_os("STATEFILE_TEST_PG_REQUIRED").is_none(),
                "STATEFILE_TEST_PG_TLS is not set"
            );
            println!("skipping: STATEFILE_TEST_PG_TLS is not set (./test postgres sets it)");
            None
        }
    }
}

/// Whether the sessions named `app` (application_name) are encrypted: one answer for
/// all of them, and at least one session.
async fn sessions_encrypted(base: &str, app: &str) -> bool {
    let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "no session named {app}");
    let ssl: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
    assert!(ssl.windows(2).all(|w| w[0] == w[1]), "{ssl:?}");
    ssl[0]
}

#[tokio::test]
async fn tls_sslmodes_against_a_cluster_with_a_self_signed_certificate() {
    let Some(base) = url() else { return };
    let Some(tls) = tls_dir() else { return };
    let c: tokio_postgres::Config = base.parse().unwrap();
    let password = String::from_utf8(c.get_password().unwrap().to_vec()).unwrap();
    let port = c.get_ports()[0];
    let schema_url = fresh_schema(&base).await;
    let options = schema_url.split_once("?options=").unwrap().1.to_string();
    let ca = tls.join("ca.crt");
    let other = tls.join("other-ca.crt");
    // The certificate names `localhost` only: reached as 127.0.0.1 its name does not
    // match; as localhost (hostaddr 127.0.0.1) it does.
    let by_ip = |app: &str, tls: &str| {
        format!(
            "postgres://statefile:{password}@127.0.0.1:{port}/statefile?options={options}&application_name={app}{tls}"
        )
    };
    let by_name = |app: &str, tls: &str| {
        format!(
            "postgres://statefile:{password}@localhost:{port}/statefile?hostaddr=127.0.0.1&options={options}&application_name={app}{tls}"
        )
    };
    let ca_q = format!("&sslrootcert={}", ca.display());
    let other_q = format!("&sslrootcert={}", other.display());
    let works = [
        (
            "tls-disable",
            by_ip("tls-disable", "&sslmode=disable"),
            false,
        ),
        ("tls-default", by_ip("tls-default", ""), true),
        (
            "tls-require",
            by_ip("tls-require", "&sslmode=require"),
            true,
        ),
        (
            "tls-verify-ca",
            by_ip("tls-verify-ca", &format!("&sslmode=verify-ca{ca_q}")),
            true,
        ),
        (
            "tls-verify-full",
            by_name("tls-verify-full", &format!("&sslmode=verify-full{ca_q}")),
            true,
        ),
        (
            "tls-pairs",
            format!(
                "host=localhost hostaddr=127.0.0.1 port={port} user=statefile password='{password}' \
                 dbname=statefile options='{}' application_name=tls-pairs sslmode=verify-full \
                 sslrootcert='{}'",
                options.replace("%3D", "="),
                ca.display()
            ),
            true,
        ),
    ];
    let mut stores = Vec::new();
    for (app, url, encrypted) in works {
        let s = open(PgOptions::new(&url))
            .await
            .unwrap_or_else(|e| panic!("{app}: {e}"));
        assert_eq!(sessions_encrypted(&base, app).await, encrypted, "{app}");
        stores.push(s);
    }
    assert_eq!(
        stores[4].tls_mode(),
        statefile_server::pg::connect::SslMode::VerifyFull
    );
    // Each refusal says why, within the connect timeout, without the password.
    let refused = [
        (
            by_ip("x", &format!("&sslmode=verify-full{ca_q}")),
            "certificate",
        ),
        (
            by_name("x", &format!("&sslmode=verify-full{other_q}")),
            "certificate",
        ),
        (
            by_ip("x", &format!("&sslmode=verify-ca{other_q}")),
            "certificate",
        ),
        // As libpq: require with a CA given checks the chain.
        (
            by_ip("x", &format!("&sslmode=require{other_q}")),
            "certificate",
        ),
        (
            by_ip("x", "&sslmode=verify-full&sslrootcert=/nonexistent/ca.crt"),
            "cannot read sslrootcert /nonexistent/ca.crt",
        ),
    ];
    for (url, why) in refused {
        let t = Instant::now();
        let e = open(PgOptions::new(&url)).await.unwrap_err();
        assert!(e.contains(why), "{url}: {e}");
        assert!(!e.contains(&password), "the password stays out: {e}");
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }
    // A client certificate: certuser may log in with it only (in a schema of its own).
    let cert_schema_url = fresh_schema(&base).await;
    let cert_options = cert_schema_url
        .split_once("?options=")
        .unwrap()
        .1
        .to_string();
    sql(
        &cert_schema_url,
        &format!(
            "GRANT ALL ON SCHEMA {} TO certuser",
            cert_options.rsplit("%3D").next().unwrap()
        ),
    )
    .await;
    let client = |cert: &str| {
        format!(
            "postgres://certuser@localhost:{port}/statefile?hostaddr=127.0.0.1&options={cert_options}\
             &application_name=tls-cert&sslmode=verify-full{ca_q}{cert}"
        )
    };
    let with_cert = client(&format!(
        "&sslcert={}&sslkey={}",
        tls.join("client.crt").display(),
        tls.join("client.key").display()
    ));
    let s = open(PgOptions::new(&with_cert)).await.unwrap();
    assert!(sessions_encrypted(&base, "tls-cert").await);
    let dir = tempfile::tempdir().unwrap();
    let app = app(s, dir.path());
    assert_eq!(
        call(&app, "PUT", "/v1/docs/tls.json", &[JSON], b"[1]")
            .await
            .status,
        201
    );
    let e = open(PgOptions::new(client(""))).await.unwrap_err();
    assert!(e.contains("certuser"), "{e}");
}

/// What the fake server of [`tls_refusing_server`] recorded, once it has recorded
/// something: the client gives up when it reads the `N`, which can be before the
/// server's thread has seen the connection close and recorded it (seen once in CI).
async fn recorded(seen: &std::sync::Mutex<Vec<Vec<u8>>>) -> Vec<Vec<u8>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = seen.lock().unwrap().clone();
        if !now.is_empty() || std::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server that answers every SSLRequest with `N` (no TLS here) and records what the
/// client sends after that refusal (a startup message, with the user name, in clear).
fn tls_refusing_server() -> (u16, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut request = [0u8; 8];
            if conn.read_exact(&mut request).is_err() {
                continue;
            }
            // Length 8, code 80877103: an SSLRequest.
            assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47], "not an SSLRequest");
            conn.write_all(b"N").unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut after = Vec::new();
            let mut buf = [0u8; 1024];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                after.extend_from_slice(&buf[..n]);
                if after.len() > 8 {
                    break;
                }
            }
            record.lock().unwrap().push(after);
        }
    });
    (port, seen)
}

/// Regression: with require or verify-*, a server that refuses TLS gets neither the
/// startup message nor the password in clear: the open fails, saying so. `prefer`
/// carries on without TLS, as libpq (which is how the fake shows it can see a startup).
#[tokio::test]
async fn tls_is_never_downgraded_when_it_is_required() {
    let ca = std::env::var_os("STATEFILE_TEST_PG_TLS")
        .map(|d| std::path::PathBuf::from(d).join("ca.crt"));
    let mut modes = vec!["sslmode=require".to_string()];
    match &ca {
        Some(ca) => {
            for m in ["verify-ca", "verify-full"] {
                modes.push(format!("sslmode={m}&sslrootcert={}", ca.display()));
            }
        }
        None => println!("verify-ca, verify-full: skipped (no STATEFILE_TEST_PG_TLS CA)"),
    }
    for mode in modes {
        let (port, seen) = tls_refusing_server();
        let mut o = PgOptions::new(format!(
            "postgres://someone:hunter2@localhost:{port}/db?hostaddr=127.0.0.1&{mode}"
        ));
        o.connect_timeout = Duration::from_secs(5);
        let e = open(o).await.unwrap_err();
        assert!(e.contains("TLS"), "{mode}: {e}");
        assert!(!e.contains("hunter2"), "{e}");
        let seen = recorded(&seen).await;
        assert!(
            !seen.is_empty(),
            "{mode}: the fake server saw no connection"
        );
        assert!(
            seen.iter().all(Vec::is_empty),
            "{mode}: the client went on without TLS: {seen:?}"
        );
    }
    let (port, seen) = tls_refusing_server();
    let mut o = PgOptions::new(format!(
        "postgres://someone@127.0.0.1:{port}/db?sslmode=prefer"
    ));
    o.connect_timeout = Duration::from_secs(5);
    open(o).await.unwrap_err();
    let seen = recorded(&seen).await;
    assert!(
        seen.iter().any(|s| s.windows(7).any(|w| w == b"someone")),
        "prefer: no startup message after the refusal: {seen:?}"
    );
}

/// `POST /v1/tx` on one store, as (status, body as JSON).
async fn tx(app: &Arc<App>, ops: &serde_json::Value) -> (u16, serde_json::Value) {
    let r = call(app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
    (r.status.as_u16(), r.json())
}

/// The same transactions against the file backend (journal mode) and PostgreSQL give
/// the same statuses, problem types, results and ETags, and leave the same documents.
#[tokio::test]
async fn transactions_answer_as_on_the_file_backend() {
    let Some(b) = Backend::postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let files = Backend::File.app_in(dir.path()).await;
    statefile::journal::enable(
        dir.path(),
        &statefile::Options::new(),
        statefile::journal::JournalOptions::default(),
    )
    .unwrap();
    let pg = b.app_in(dir.path()).await;
    let v0 = statefile::Version::of(b"0").to_string();
    let steps = [
        json!([{"op": "put", "doc": "a.json", "value": {"n": 1, "s": "\u{e9}", "f": 2.5}},
               {"op": "patch", "doc": "b.json", "merge": {"x": {"y": 1}}},
               {"op": "append", "doc": "c/d.json", "pointer": "/items", "value": [1]},
               {"op": "append", "doc": "e.json", "value": "first"},
               {"op": "get", "doc": "a.json"}]),
        json!([{"op": "get", "doc": "a.json"}, {"op": "get", "doc": "c/d.json"}]),
        json!([{"op": "put", "doc": "a.json", "value": 2, "if_none_match": "*"}]),
        json!([{"op": "put", "doc": "z.json", "value": 2, "if_match": v0}]),
        json!([{"op": "patch", "doc": "missing.json", "json_patch": [{"op": "add", "path": "/a", "value": 1}]}]),
        json!([{"op": "patch", "doc": "a.json", "json_patch": [{"op": "remove", "path": "/nothing"}]}]),
        json!([{"op": "append", "doc": "c/d.json", "pointer": "/items/5", "value": 1}]),
        json!([{"op": "append", "doc": "a.json", "pointer": "/n", "value": 1}]),
        json!([{"op": "delete", "doc": "missing.json"}]),
        json!([{"op": "get", "doc": "missing.json"}]),
        json!([{"op": "put", "doc": "f.json", "value": 1}, {"op": "delete", "doc": "f.json"}]),
        json!([{"op": "put", "doc": "b.json", "value": []}, {"op": "delete", "doc": "b.json"},
               {"op": "put", "doc": "g.json", "value": null}]),
        json!([{"op": "put", "doc": "e.json", "value": ["first"]}, {"op": "get", "doc": "e.json"}]),
        json!([{"op": "delete", "doc": "e.json"}, {"op": "put", "doc": "e.json", "value": 3}]),
        json!([{"op": "put", "doc": "e.json", "value": 4}, {"op": "delete", "doc": "e.json"},
               {"op": "put", "doc": "h.json", "value": 1}, {"op": "delete", "doc": "h.json"}]),
        json!([{"op": "put", "doc": "h.json", "value": 1}, {"op": "delete", "doc": "h.json"},
               {"op": "delete", "doc": "h.json"}]),
        json!([{"op": "put", "doc": "h.json", "value": 1}, {"op": "put", "doc": "h.json", "value": 2}]),
        json!([{"op": "patch", "doc": "a.json", "json_patch": [{"op": "replace", "path": "/n", "value": 9}]},
               {"op": "patch", "doc": "a.json", "merge": {"s": null}},
               {"op": "append", "doc": "a.json", "pointer": "/list", "value": {"k": [1, 2]}}]),
    ];
    for ops in &steps {
        let (fs, fj) = tx(&files, ops).await;
        let (ps, pj) = tx(&pg, ops).await;
        assert_eq!(fs, ps, "{ops}\nfile: {fj}\npostgres: {pj}");
        if fs == 200 {
            assert_eq!(fj, pj, "{ops}");
        } else {
            assert_eq!(fj["type"], pj["type"], "{ops}\nfile: {fj}\npostgres: {pj}");
        }
    }
    for name in [
        "a.json", "b.json", "c/d.json", "e.json", "f.json", "g.json", "h.json", "z.json",
    ] {
        let uri = format!("/v1/docs/{name}");
        let f = call(&files, "GET", &uri, &[], b"").await;
        let p = call(&pg, "GET", &uri, &[], b"").await;
        assert_eq!(f.status, p.status, "{name}");
        if f.status == 200 {
            assert_eq!(f.body, p.body, "{name}");
        }
        assert_eq!(f.header("etag"), p.header("etag"), "{name}");
    }
}

/// Many transactions from two servers (two pools, many connections) move amounts
/// between two documents, checking each one's ETag under the locks: the sum never
/// changes and every committed move is in the result. Others write the same documents
/// blind in both orders and create new ones: no deadlock, every one commits.
#[tokio::test]
async fn concurrent_transactions_keep_the_sum_of_two_documents() {
    let Some(base) = url() else { return };
    let url = fresh_schema(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let servers = [
        app(open(PgOptions::new(&url)).await.unwrap(), dir.path()),
        app(open(PgOptions::new(&url)).await.unwrap(), dir.path()),
    ];
    for d in ["x.json", "y.json"] {
        let r = call(
            &servers[0],
            "PUT",
            &format!("/v1/docs/{d}"),
            &[JSON],
            b"{\"n\": 1000}",
        )
        .await;
        assert_eq!(r.status, 201);
    }
    let tasks: Vec<_> = (0..48)
        .map(|i: i64| {
            let app = servers[i as usize % 2].clone();
            tokio::spawn(async move {
                if i % 4 == 3 {
                    // Blind writes of two other documents, in both orders, and a create.
                    let (p, q) = if i % 8 == 3 { ("p.json", "q.json") } else { ("q.json", "p.json") };
                    let ops = json!([{"op": "put", "doc": p, "value": i},
                                     {"op": "put", "doc": format!("new/{i}.json"), "value": i, "if_none_match": "*"},
                                     {"op": "patch", "doc": q, "merge": {"by": i}}]);
                    let (s, body) = tx(&app, &ops).await;
                    assert_eq!(s, 200, "{body}");
                    return 0;
                }
                let mut moved = 0;
                for k in 0..4 {
                    let amount = i * 4 + k;
                    let (from, to) = if (i + k) % 2 == 0 { ("x.json", "y.json") } else { ("y.json", "x.json") };
                    loop {
                        let (s, read) = tx(&app, &json!([{"op": "get", "doc": to}, {"op": "get", "doc": from}])).await;
                        assert_eq!(s, 200, "{read}");
                        let r = &read["results"];
                        let (t, f) = (r[0]["value"]["n"].as_i64().unwrap(), r[1]["value"]["n"].as_i64().unwrap());
                        let ops = json!([
                            {"op": "put", "doc": from, "value": {"n": f - amount}, "if_match": r[1]["version"]},
                            {"op": "put", "doc": to, "value": {"n": t + amount}, "if_match": r[0]["version"]}
                        ]);
                        match tx(&app, &ops).await {
                            (200, _) => break,
                            (412, _) => continue,
                            (s, body) => panic!("{s}: {body}"),
                        }
                    }
                    moved += if from == "x.json" { amount } else { -amount };
                }
                moved
            })
        })
        .collect();
    let mut out_of_x = 0;
    for t in tasks {
        out_of_x += t.await.unwrap();
    }
    let n = |d: &'static str| {
        let app = servers[1].clone();
        async move {
            call(&app, "GET", &format!("/v1/docs/{d}"), &[], b"")
                .await
                .json()["n"]
                .as_i64()
                .unwrap()
        }
    };
    let (x, y) = (n("x.json").await, n("y.json").await);
    assert_eq!(x + y, 2000, "the sum is invariant");
    assert_eq!(x, 1000 - out_of_x, "every committed move, once");
    let names = call(&servers[0], "GET", "/v1/docs?prefix=new/", &[], b"")
        .await
        .json();
    assert_eq!(names["names"].as_array().unwrap().len(), 12);
}

/// A transaction's documents are bounded in bytes (read and written); one that waits
/// on a row lock past the lock timeout is 503; neither writes anything.
#[tokio::test]
async fn an_oversized_or_blocked_transaction_writes_nothing() {
    let Some(base) = url() else { return };
    let url = fresh_schema(&base).await;
    let mut o = PgOptions::new(&url);
    o.max_document_bytes = 1000;
    o.lock_timeout = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let app = app(open(o).await.unwrap(), dir.path());
    let big = json!("x".repeat(600));
    for (d, v) in [("a.json", big.clone()), ("b.json", json!([big]))] {
        let r = call(
            &app,
            "PUT",
            &format!("/v1/docs/{d}"),
            &[JSON],
            v.to_string().as_bytes(),
        )
        .await;
        assert_eq!(r.status, 201);
    }
    let before = call(&app, "GET", "/v1/docs/a.json", &[], b"")
        .await
        .header("etag");
    // Two reads and two writes of over 600 bytes each: over 2 x 1000.
    let ops = json!([{"op": "get", "doc": "a.json"}, {"op": "append", "doc": "b.json", "value": 1},
                     {"op": "put", "doc": "c.json", "value": big}]);
    let r = call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
    r.problem(422, "value-not-storable");
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("2000 bytes per transaction")
    );
    // Three new documents of 700 bytes: over too, found before anything is stored.
    let v = json!("y".repeat(700));
    let ops = json!([{"op": "put", "doc": "a.json", "value": v}, {"op": "put", "doc": "d.json", "value": v},
                     {"op": "put", "doc": "e.json", "value": v}]);
    let r = call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
    r.problem(422, "value-not-storable");
    // Two are within the bound.
    let ops = json!([{"op": "put", "doc": "d.json", "value": v}, {"op": "put", "doc": "e.json", "value": v}]);
    let r = call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    call(&app, "DELETE", "/v1/docs/d.json", &[], b"").await;
    call(&app, "DELETE", "/v1/docs/e.json", &[], b"").await;

    // Another session holds b.json's row: the transaction gives up at the lock timeout.
    let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let held = client.transaction().await.unwrap();
    held.query(
        "SELECT 1 FROM statefile_documents WHERE name = 'b.json' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let ops = json!([{"op": "put", "doc": "a.json", "value": 1}, {"op": "put", "doc": "n.json", "value": 1},
                     {"op": "put", "doc": "b.json", "value": 1}]);
    let t = Instant::now();
    let r = call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
    r.problem(503, "lock-timeout");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    held.rollback().await.unwrap();
    let names = call(&app, "GET", "/v1/docs", &[], b"").await.json();
    assert_eq!(names, json!({"names": ["a.json", "b.json"]}));
    assert_eq!(
        call(&app, "GET", "/v1/docs/a.json", &[], b"")
            .await
            .header("etag"),
        before
    );
    let r = call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// Review (txreview): the transaction's byte bound counts every `get`, not each
/// document once: 1000 gets of one document within the bound answered 1000 copies of
/// it (with the default 64 MiB documents, gigabytes in memory for one request).
#[tokio::test]
async fn repeated_gets_of_one_document_count_against_the_transaction_bound() {
    let Some(base) = url() else { return };
    let url = fresh_schema(&base).await;
    let mut o = PgOptions::new(&url);
    o.max_document_bytes = 1000;
    let dir = tempfile::tempdir().unwrap();
    let app = app(open(o).await.unwrap(), dir.path());
    let big = json!("x".repeat(600));
    let r = call(
        &app,
        "PUT",
        "/v1/docs/a.json",
        &[JSON],
        big.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201);
    // The document fetched once (600) and answered twice (1200): 1800, within 2 x 1000.
    let two: Vec<_> = (0..2)
        .map(|_| json!({"op": "get", "doc": "a.json"}))
        .collect();
    let r = call(
        &app,
        "POST",
        "/v1/tx",
        &[JSON],
        json!(two).to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["results"][1]["value"], big);
    // Answered three times: 2400, over.
    let three: Vec<_> = (0..3)
        .map(|_| json!({"op": "get", "doc": "a.json"}))
        .collect();
    let r = call(
        &app,
        "POST",
        "/v1/tx",
        &[JSON],
        json!(three).to_string().as_bytes(),
    )
    .await;
    r.problem(422, "value-not-storable");
    // A get after a write answers the written bytes: they count again (600 + 3 x 600).
    let ops = json!([{"op": "put", "doc": "b.json", "value": big},
                     {"op": "get", "doc": "b.json"}, {"op": "get", "doc": "b.json"},
                     {"op": "get", "doc": "b.json"}]);
    let r = call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
    r.problem(422, "value-not-storable");
    assert_eq!(
        call(&app, "GET", "/v1/docs/b.json", &[], b"").await.status,
        404
    );
}

/// Review (txreview): transactions and single-document writes (PUT, If-None-Match
/// creates, PATCH, DELETE, restore) of overlapping names, directories included, from
/// two servers at once: every request gets a definite answer (never 500 or 503, so no
/// deadlock was detected by the database and no lock wait timed out), and the
/// transaction's documents move together.
#[tokio::test]
async fn transactions_and_single_writes_of_the_same_names_never_deadlock() {
    let Some(base) = url() else { return };
    let url = fresh_schema(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let mk = || {
        let mut o = PgOptions::new(&url);
        o.lock_timeout = Duration::from_secs(20);
        o
    };
    let servers = [
        app(open(mk()).await.unwrap(), dir.path()),
        app(open(mk()).await.unwrap(), dir.path()),
    ];
    let names = ["d/a.json", "d/b.json", "e.json", "d/c/x.json", "f.json"];
    let tasks: Vec<_> = (0..64)
        .map(|i: usize| {
            let app = servers[i % 2].clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for k in 0..6 {
                    let n = names[(i + k) % names.len()];
                    let m = names[(i * 7 + k + 1) % names.len()];
                    let uri = format!("/v1/docs/{n}");
                    let r = match (i + k) % 7 {
                        0 => {
                            let ops = json!([{"op": "put", "doc": m, "value": {"by": i}},
                                             {"op": "patch", "doc": n, "merge": {"t": k}},
                                             {"op": "append", "doc": "log/t.json", "value": i}]);
                            call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await
                        }
                        1 => {
                            let ops = json!([{"op": "delete", "doc": n}, {"op": "put", "doc": m, "value": 1, "if_none_match": "*"}]);
                            call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await
                        }
                        2 => call(&app, "PUT", &uri, &[JSON], b"{\"p\": 1}").await,
                        3 => call(&app, "PUT", &uri, &[JSON, ("if-none-match", "*")], b"{\"c\": 1}").await,
                        4 => call(&app, "PATCH", &uri, &[("content-type", "application/merge-patch+json")], b"{\"m\": 1}").await,
                        5 => call(&app, "DELETE", &uri, &[], b"").await,
                        _ => call(&app, "POST", &format!("{uri}/restore"), &[], b"").await,
                    };
                    seen.push((r.status.as_u16(), String::from_utf8_lossy(&r.body).into_owned()));
                }
                seen
            })
        })
        .collect();
    for t in tasks {
        for (s, body) in t.await.unwrap() {
            assert!(
                matches!(s, 200 | 201 | 204 | 400 | 404 | 412),
                "{s}: {body}"
            );
        }
    }
}

/// Review (txreview): names that clash with directories and documents answer in a
/// transaction as on the file backend (journal mode).
#[tokio::test]
async fn transactions_on_directory_and_document_clashes_answer_as_on_the_file_backend() {
    let Some(b) = Backend::postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let files = Backend::File.app_in(dir.path()).await;
    statefile::journal::enable(
        dir.path(),
        &statefile::Options::new(),
        statefile::journal::JournalOptions::default(),
    )
    .unwrap();
    let pg = b.app_in(dir.path()).await;
    let steps = [
        json!([{"op": "put", "doc": "c/d.json", "value": 1}, {"op": "put", "doc": "a.json", "value": 2}]),
        json!([{"op": "get", "doc": "c"}]),
        json!([{"op": "delete", "doc": "c"}]),
        json!([{"op": "put", "doc": "c", "value": 1}]),
        json!([{"op": "patch", "doc": "c", "merge": {"a": 1}}]),
        json!([{"op": "append", "doc": "c", "value": 1}]),
        json!([{"op": "put", "doc": "c", "value": 1, "if_none_match": "*"}]),
        json!([{"op": "get", "doc": "a.json/x.json"}]),
        json!([{"op": "delete", "doc": "a.json/x.json"}]),
        json!([{"op": "put", "doc": "a.json/x.json", "value": 1}]),
        json!([{"op": "put", "doc": "n.json", "value": 1}, {"op": "put", "doc": "n.json/m.json", "value": 1}]),
        json!([{"op": "put", "doc": "p/q.json", "value": 1}, {"op": "put", "doc": "p", "value": 1}]),
        json!([{"op": "delete", "doc": "c/d.json"}]),
        json!([{"op": "put", "doc": "c", "value": 1}]),
        json!([{"op": "get", "doc": "c/d.json"}]),
        json!([{"op": "delete", "doc": "a.json"}, {"op": "put", "doc": "a.json/y.json", "value": 1}]),
        // A document the transaction creates and deletes again (review: put then
        // delete was 404): not in the way of a name below it, but still refused where
        // an earlier operation used its name as a directory.
        json!([{"op": "put", "doc": "v.json", "value": 1}, {"op": "delete", "doc": "v.json"},
               {"op": "put", "doc": "v.json/x.json", "value": 1}]),
        json!([{"op": "put", "doc": "w.json/x.json", "value": 1}, {"op": "put", "doc": "w.json", "value": 1},
               {"op": "delete", "doc": "w.json"}]),
        json!([{"op": "append", "doc": "u.json/x.json", "value": 1}, {"op": "delete", "doc": "u.json/x.json"},
               {"op": "put", "doc": "u.json", "value": 1}]),
        json!([{"op": "put", "doc": "t.json", "value": 1}, {"op": "delete", "doc": "t.json"},
               {"op": "put", "doc": "t.json", "value": 2}, {"op": "get", "doc": "t.json"}]),
    ];
    let mut differ = Vec::new();
    for ops in &steps {
        let (fs, fj) = tx(&files, ops).await;
        let (ps, pj) = tx(&pg, ops).await;
        if fs != ps || (fs == 200 && fj != pj) || fj["type"] != pj["type"] {
            differ.push(format!("{ops}\n  file: {fs} {fj}\n  postgres: {ps} {pj}"));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// Review (hostile): one `POST /v1/tx` took an advisory lock per document and per
/// ancestor directory (here 1000 documents three deep: 4001 locks; 41,000 in the
/// review), and a dozen such requests at once filled PostgreSQL's shared lock table:
/// the database answered "out of shared memory" to them and to unrelated writes of
/// other clients (503). Now no transaction holds more than `MAX_ADVISORY_LOCKS`
/// advisory locks, and all of them commit while other clients' writes go through.
#[tokio::test]
async fn deep_transactions_at_once_cannot_fill_the_lock_table() {
    let Some(base) = url() else { return };
    let url = fresh_schema(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let mk = || {
        let mut o = PgOptions::new(&url);
        // They take turns: no wait must end in a lock or statement timeout here.
        o.lock_timeout = Duration::from_secs(300);
        o.statement_timeout = Duration::from_secs(300);
        o
    };
    let mut servers = Vec::new();
    for _ in 0..3 {
        // Nor a request's own time limit: twelve transactions of 1,000 operations queue
        // behind each other, and on a slow disk the last ones passed 30 s (a 503 that
        // says nothing of the lock table this test is about).
        let mut config = Config::new(dir.path());
        config.request_timeout = Duration::from_secs(300);
        servers.push(App::new(config, Arc::new(open(mk()).await.unwrap())));
    }
    let r = call(&servers[0], "PUT", "/v1/docs/other.json", &[JSON], b"0").await;
    assert_eq!(r.status, 201);

    // The most advisory locks one backend held at once, polled while the requests run.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (done, url) = (done.clone(), base.clone());
        tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut most = 0i64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let row = client
                    .query_one(
                        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM pg_locks
                         WHERE locktype = 'advisory' AND granted GROUP BY pid) AS held",
                        &[],
                    )
                    .await
                    .unwrap();
                most = most.max(row.get(0));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            most
        })
    };
    // Other clients' writes meanwhile: an update and creates, each must succeed.
    let others = {
        let (done, app) = (done.clone(), servers[1].clone());
        tokio::spawn(async move {
            let mut answered = Vec::new();
            let mut k = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let r = call(
                    &app,
                    "PUT",
                    "/v1/docs/other.json",
                    &[JSON],
                    k.to_string().as_bytes(),
                )
                .await;
                answered.push((
                    r.status.as_u16(),
                    String::from_utf8_lossy(&r.body).into_owned(),
                ));
                let uri = format!("/v1/docs/new/{k}.json");
                let r = call(&app, "PUT", &uri, &[JSON, ("if-none-match", "*")], b"1").await;
                answered.push((
                    r.status.as_u16(),
                    String::from_utf8_lossy(&r.body).into_owned(),
                ));
                k += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answered
        })
    };
    let hostile: Vec<_> = (0..12)
        .map(|r: usize| {
            let app = servers[r % servers.len()].clone();
            tokio::spawn(async move {
                let ops: Vec<_> = (0..statefile::MAX_TX_OPS)
                    .map(|i| json!({"op": "put", "doc": format!("h{r}/{i}.json/a.json/b.json/x.json"), "value": i}))
                    .collect();
                tx(&app, &json!(ops)).await
            })
        })
        .collect();
    let mut failed = Vec::new();
    for (r, t) in hostile.into_iter().enumerate() {
        let (s, body) = t.await.unwrap();
        if s != 200 {
            failed.push(format!("request {r}: {s} {body}"));
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let most = watcher.await.unwrap();
    let others = others.await.unwrap();
    for (s, body) in &others {
        assert!(matches!(s, 200 | 201), "another client's write: {s} {body}");
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(
        (1..=statefile_server::pg::MAX_ADVISORY_LOCKS as i64).contains(&most),
        "a backend held {most} advisory locks at once"
    );
    let names = call(&servers[2], "GET", "/v1/docs?prefix=h11/", &[], b"")
        .await
        .json();
    assert_eq!(
        names["names"].as_array().unwrap().len(),
        statefile::MAX_TX_OPS
    );
}

/// A transaction of more names than are locked one by one locks their buckets instead
/// (see `MAX_ADVISORY_LOCKS`): it still takes turns with single creators of names above
/// and below its documents, so a document and a directory of one name are never both
/// made (one of the two is refused, 400 `invalid-name`).
#[tokio::test]
async fn large_transactions_and_creators_of_clashing_names_take_turns() {
    let Some(base) = url() else { return };
    let url = fresh_schema(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let servers = [
        app(open(PgOptions::new(&url)).await.unwrap(), dir.path()),
        app(open(PgOptions::new(&url)).await.unwrap(), dir.path()),
    ];
    let mut tasks = Vec::new();
    for j in 0..24 {
        // Even: the transaction makes `k{j}.json`, a single PUT `k{j}.json/x.json`; odd:
        // the other way round.
        let (in_tx, single) = if j % 2 == 0 {
            (format!("k{j}.json"), format!("k{j}.json/x.json"))
        } else {
            (format!("k{j}.json/x.json"), format!("k{j}.json"))
        };
        let mut ops: Vec<_> = (0..20)
            .map(|m| json!({"op": "put", "doc": format!("pad{j}/{m}.json"), "value": m}))
            .collect();
        ops.push(json!({"op": "put", "doc": in_tx, "value": j}));
        let a = servers[0].clone();
        let t = tokio::spawn(async move { tx(&a, &json!(ops)).await });
        let b = servers[1].clone();
        let s = tokio::spawn(async move {
            let r = call(&b, "PUT", &format!("/v1/docs/{single}"), &[JSON], b"1").await;
            (
                r.status.as_u16(),
                String::from_utf8_lossy(&r.body).into_owned(),
            )
        });
        tasks.push((j, t, s));
    }
    for (j, t, s) in tasks {
        let (ts, tbody) = t.await.unwrap();
        let (ss, sbody) = s.await.unwrap();
        let made = [ts == 200, ss == 201];
        assert!(
            made.iter().filter(|m| **m).count() == 1 && matches!((ts, ss), (200, 400) | (400, 201)),
            "{j}: transaction {ts} {tbody}\nsingle {ss} {sbody}"
        );
    }
}
