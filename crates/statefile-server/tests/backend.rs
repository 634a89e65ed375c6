//! The routes speak only to the `DocStore` trait: a second backend plugs in through
//! `App::new`. This one fails on purpose, to show the status of each storage error kind
//! that a real disk cannot be made to produce on demand here.

mod common;

use std::sync::Arc;

use common::{JSON, call};
use serde_json::Value;
use statefile::{BackupRef, ErrorKind};
use statefile_server::{
    App, BackupEntry, Condition, Config, DocStore, Fetched, Mutator, StoreError, StoreResult,
    Written,
};

/// Every call fails with the error kind the document's name asks for.
struct Failing;

fn fail(name: &str) -> StoreError {
    if name == "unavailable.json" {
        return StoreError::unavailable("db.internal:5432: connection refused");
    }
    let kind = match name {
        "nospace.json" => ErrorKind::NoSpace,
        "denied.json" => ErrorKind::PermissionDenied,
        "durability.json" => ErrorKind::Durability,
        "lock.json" => ErrorKind::LockTimeout,
        _ => ErrorKind::Io,
    };
    StoreError::new(kind, "failed at /srv/secret/path/x.json: disk says no")
}

impl DocStore for Failing {
    fn list(&self, _prefix: &str) -> StoreResult<Vec<String>> {
        Err(fail("io.json"))
    }
    fn get(&self, name: &str) -> StoreResult<Fetched> {
        Err(fail(name))
    }
    fn put(&self, name: &str, _: &Value, _: &Condition) -> StoreResult<Written> {
        Err(fail(name))
    }
    fn update(
        &self,
        name: &str,
        _: &Condition,
        _: Option<Value>,
        _: Mutator<'_>,
    ) -> StoreResult<(Value, Written)> {
        Err(fail(name))
    }
    fn delete(&self, name: &str, _: &Condition) -> StoreResult<()> {
        Err(fail(name))
    }
    fn backups(&self, name: &str) -> StoreResult<Vec<BackupEntry>> {
        Err(fail(name))
    }
    fn restore(&self, name: &str, _: &BackupRef) -> StoreResult<Written> {
        Err(fail(name))
    }
    fn health(&self) -> StoreResult<()> {
        Err(fail("unavailable.json"))
    }
    fn render_metrics(&self, out: &mut String) {
        out.push_str("failing_store_metric 1\n");
    }
}

#[tokio::test]
async fn each_storage_error_kind_has_its_status_and_problem_type() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::new(Config::new(dir.path()), Arc::new(Failing));
    for (name, status, slug) in [
        ("nospace.json", 507, "no-space"),
        ("denied.json", 500, "storage-permission"),
        ("durability.json", 500, "durability-unknown"),
        ("lock.json", 503, "lock-timeout"),
        ("unavailable.json", 503, "storage-unavailable"),
        ("io.json", 500, "internal"),
    ] {
        for (method, suffix, body) in [
            ("PUT", "", &b"{}"[..]),
            ("GET", "", &b""[..]),
            ("POST", "/append?pointer=/x", &b"1"[..]),
            ("DELETE", "", &b""[..]),
        ] {
            let r = call(
                &app,
                method,
                &format!("/v1/docs/{name}{suffix}"),
                &[JSON],
                body,
            )
            .await;
            r.problem(status, slug);
            let detail = r.json()["detail"].as_str().unwrap().to_string();
            assert!(
                !detail.contains("/srv/secret")
                    && !detail.contains("disk says no")
                    && !detail.contains("db.internal"),
                "{method} {name}: the internal message stays in the log: {detail}"
            );
            if status == 503 {
                assert_eq!(r.header("retry-after").as_deref(), Some("1"));
            }
        }
    }
    call(&app, "GET", "/v1/docs", &[], b"")
        .await
        .problem(500, "internal");
    // /healthz asks the storage; /metrics adds the storage's own figures.
    let r = call(&app, "GET", "/healthz", &[], b"").await;
    r.problem(503, "storage-unavailable");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    let m = call(&app, "GET", "/metrics", &[], b"").await;
    assert!(
        String::from_utf8(m.body)
            .unwrap()
            .contains("\nfailing_store_metric 1\n")
    );
}
