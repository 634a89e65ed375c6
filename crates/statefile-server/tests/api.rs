//! Route logic through the router without a socket: every status the API promises, on
//! each storage backend (the file backend, and PostgreSQL when a database is given).

mod common;

on_each_backend!(
    create_read_replace_conditional_delete,
    patches,
    append_and_idempotency,
    bad_requests,
    delete_if_none_match_star_refuses_an_existing_document,
    an_idempotency_key_reused_for_another_append_is_refused,
    racing_retries_with_one_idempotency_key_append_once,
    auth_health_metrics_openapi,
    if_match_star_and_lists_of_etags,
    every_idempotent_replay_is_marked,
    a_directory_stays_in_the_way_after_its_documents_are_deleted,
    a_wrong_method_is_405_with_allow_and_metrics_label_the_matched_route,
    an_unknown_query_parameter_or_a_control_character_in_a_key_is_400,
    numbers_are_kept_exactly,
    the_reserved_number_key_is_refused_not_stored_as_a_number,
    a_transaction_is_all_or_nothing,
    hostile_transactions_are_refused_and_write_nothing,
    a_document_a_transaction_wrote_can_be_deleted_in_it,
);

use std::time::Duration;

use common::{Backend, JSON, app_in, app_with, call};
use serde_json::{Value, json};
use statefile_server::Config;

async fn create_read_replace_conditional_delete(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = b.app_in(dir.path()).await;
    let r = call(
        &app,
        "PUT",
        "/v1/docs/view/resData.json",
        &[JSON],
        br#"{"cases": []}"#,
    )
    .await;
    assert_eq!(r.status, 201, "created, parent directory made");
    let etag = r.header("etag").unwrap();
    assert_eq!(
        r.json()["version"].as_str().map(|v| format!("\"{v}\"")),
        Some(etag.clone())
    );
    if b.is_file() {
        assert!(dir.path().join("view/resData.json").exists());
    }

    let r = call(&app, "GET", "/v1/docs/view/resData.json", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some(etag.clone()));
    assert_eq!(r.json(), json!({"cases": []}));
    let r = call(
        &app,
        "GET",
        "/v1/docs/view/resData.json",
        &[("if-none-match", &etag)],
        b"",
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());

    let r = call(
        &app,
        "PUT",
        "/v1/docs/view/resData.json",
        &[JSON, ("if-match", &etag)],
        br#"{"cases": [1]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let etag2 = r.header("etag").unwrap();
    // A weak form of the current ETag never matches If-Match (strong comparison).
    call(
        &app,
        "PUT",
        "/v1/docs/view/resData.json",
        &[JSON, ("if-match", &format!("W/{etag2}"))],
        b"{}",
    )
    .await
    .problem(412, "precondition-failed");
    // The old ETag no longer matches.
    call(
        &app,
        "PUT",
        "/v1/docs/view/resData.json",
        &[JSON, ("if-match", &etag)],
        b"{}",
    )
    .await
    .problem(412, "precondition-failed");
    call(
        &app,
        "PUT",
        "/v1/docs/view/resData.json",
        &[JSON, ("if-none-match", "*")],
        b"{}",
    )
    .await
    .problem(412, "precondition-failed");
    let r = call(
        &app,
        "PUT",
        "/v1/docs/other.json",
        &[JSON, ("if-none-match", "*")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 201);

    let r = call(
        &app,
        "GET",
        "/v1/docs/view/resData.json?pointer=/cases/0",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.json(), json!(1));
    call(
        &app,
        "GET",
        "/v1/docs/view/resData.json?pointer=/cases/9",
        &[],
        b"",
    )
    .await
    .problem(404, "not-found");
    call(
        &app,
        "GET",
        "/v1/docs/view/resData.json?pointer=cases",
        &[],
        b"",
    )
    .await
    .problem(400, "invalid-pointer");

    let r = call(&app, "GET", "/v1/docs?prefix=view/", &[], b"").await;
    assert_eq!(r.json(), json!({"names": ["view/resData.json"]}));
    let r = call(&app, "GET", "/v1/docs", &[], b"").await;
    assert_eq!(
        r.json(),
        json!({"names": ["other.json", "view/resData.json"]})
    );

    call(
        &app,
        "DELETE",
        "/v1/docs/view/resData.json",
        &[("if-match", &etag)],
        b"",
    )
    .await
    .problem(412, "precondition-failed");
    let r = call(
        &app,
        "DELETE",
        "/v1/docs/view/resData.json",
        &[("if-match", &etag2)],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    call(&app, "GET", "/v1/docs/view/resData.json", &[], b"")
        .await
        .problem(404, "not-found");
    call(&app, "DELETE", "/v1/docs/view/resData.json", &[], b"")
        .await
        .problem(404, "not-found");

    // Backups and restore bring it back.
    let r = call(&app, "GET", "/v1/docs/view/resData.json/backups", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["backups"][0]["number"], 1);
    let r = call(
        &app,
        "POST",
        "/v1/docs/view/resData.json/restore?from=1",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some(etag2));
    call(
        &app,
        "POST",
        "/v1/docs/view/resData.json/restore?from=7",
        &[],
        b"",
    )
    .await
    .problem(404, "not-found");
    call(&app, "GET", "/v1/docs/none.json/backups", &[], b"")
        .await
        .problem(404, "not-found");
}

async fn patches(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = b.app_in(dir.path()).await;
    let merge = ("content-type", "application/merge-patch+json");
    let jp = ("content-type", "application/json-patch+json");
    // A merge patch creates a missing document; a JSON Patch needs it to exist.
    let r = call(
        &app,
        "PATCH",
        "/v1/docs/p.json",
        &[merge],
        br#"{"a": 1, "b": {"c": 2}}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    call(&app, "PATCH", "/v1/docs/q.json", &[jp], b"[]")
        .await
        .problem(404, "not-found");
    let r = call(
        &app,
        "PATCH",
        "/v1/docs/p.json",
        &[merge],
        br#"{"a": null, "b": {"d": 3}}"#,
    )
    .await;
    let etag = r.header("etag").unwrap();
    let r = call(
        &app,
        "PATCH",
        "/v1/docs/p.json",
        &[jp, ("if-match", &etag)],
        br#"[{"op": "add", "path": "/t", "value": [1]}]"#,
    )
    .await;
    assert_eq!(r.status, 200);
    call(
        &app,
        "PATCH",
        "/v1/docs/p.json",
        &[jp, ("if-match", &etag)],
        b"[]",
    )
    .await
    .problem(412, "precondition-failed");
    call(
        &app,
        "PATCH",
        "/v1/docs/p.json",
        &[jp],
        br#"[{"op": "test", "path": "/t", "value": 5}]"#,
    )
    .await
    .problem(422, "patch-not-applicable");
    call(&app, "PATCH", "/v1/docs/p.json", &[jp], br#"{"op": "x"}"#)
        .await
        .problem(400, "invalid-patch");
    call(&app, "PATCH", "/v1/docs/p.json", &[JSON], b"{}")
        .await
        .problem(415, "unsupported-media-type");
    let r = call(&app, "GET", "/v1/docs/p.json", &[], b"").await;
    assert_eq!(r.json(), json!({"b": {"c": 2, "d": 3}, "t": [1]}));
}

// Regression (issue 9): 123456789012345678901234567890 was stored as
// 1.2345678901234568e+29 and 1e-400 as 0.0, answered 201. Each backend keeps the bytes
// of every number (PostgreSQL as bytea, not jsonb, which would rewrite 1e-400 and
// refuse 1e999999999), through PUT, GET, merge and JSON Patch, append, and a backup.
async fn numbers_are_kept_exactly(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = b.app_in(dir.path()).await;
    let numbers = "[123456789012345678901234567890,18446744073709551616,-9223372036854775809,\
                   1e-400,1.5e+400,1e+999999999,1.0,-0,0.30000000000000000001]";
    let put = call(&app, "PUT", "/v1/docs/n.json", &[JSON], numbers.as_bytes()).await;
    assert_eq!(put.status, 201);
    let got = call(&app, "GET", "/v1/docs/n.json", &[], b"").await;
    assert_eq!(got.json().to_string(), numbers);
    let merge = ("content-type", "application/merge-patch+json");
    let jp = ("content-type", "application/json-patch+json");
    let r = call(
        &app,
        "PATCH",
        "/v1/docs/m.json",
        &[merge],
        format!("{{\"all\": {numbers}}}").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    let ops = format!(
        r#"[{{"op": "test", "path": "/all", "value": {numbers}}}, {{"op": "add", "path": "/x", "value": 1e-400}}]"#
    );
    let r = call(&app, "PATCH", "/v1/docs/m.json", &[jp], ops.as_bytes()).await;
    assert_eq!(r.status, 200);
    let r = call(
        &app,
        "POST",
        "/v1/docs/m.json/append?pointer=/all",
        &[JSON],
        b"1E-400",
    )
    .await;
    assert_eq!(r.status, 200);
    let got = call(&app, "GET", "/v1/docs/m.json", &[], b"").await.json();
    assert_eq!(
        got.to_string(),
        format!(
            "{{\"all\":{},1e-400],\"x\":1e-400}}",
            &numbers[..numbers.len() - 1]
        )
    );
    // The version before the append, kept as a backup, restores with its numbers.
    let r = call(&app, "POST", "/v1/docs/m.json/restore?from=1", &[], b"").await;
    assert_eq!(r.status, 200);
    let got = call(&app, "GET", "/v1/docs/m.json", &[], b"").await.json();
    assert_eq!(
        got.to_string(),
        format!("{{\"all\":{numbers},\"x\":1e-400}}")
    );
    // A JSON Patch test against its neighbour (the same float) fails.
    call(
        &app,
        "PATCH",
        "/v1/docs/m.json",
        &[jp],
        br#"[{"op": "test", "path": "/all/0", "value": 123456789012345678901234567891}]"#,
    )
    .await
    .problem(422, "patch-not-applicable");
}

// An object whose key is serde_json's exact-number marker was parsed as the number
// its value spells: `{"$serde_json::private::Number": "12"}` was stored as `12`,
// answered 201. Every way in refuses it (400), and nothing is stored.
async fn the_reserved_number_key_is_refused_not_stored_as_a_number(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = b.app_in(dir.path()).await;
    let key = statefile::RESERVED_KEY;
    let bodies = [
        format!(r#"{{"{key}": "12"}}"#),
        format!(r#"{{"a": [{{"{key}": "1e999999"}}]}}"#),
        r#"{"\u0024serde_json::private::Number": "7"}"#.to_string(),
    ];
    for body in &bodies {
        call(&app, "PUT", "/v1/docs/k.json", &[JSON], body.as_bytes())
            .await
            .problem(400, "invalid-json");
        call(
            &app,
            "POST",
            "/v1/docs/k.json/append?pointer=",
            &[JSON],
            body.as_bytes(),
        )
        .await
        .problem(400, "invalid-json");
        let merge = ("content-type", "application/merge-patch+json");
        call(&app, "PATCH", "/v1/docs/k.json", &[merge], body.as_bytes())
            .await
            .problem(400, "invalid-json");
        let jp = ("content-type", "application/json-patch+json");
        let ops = format!(r#"[{{"op": "add", "path": "/x", "value": {body}}}]"#);
        call(&app, "PATCH", "/v1/docs/k.json", &[jp], ops.as_bytes())
            .await
            .problem(400, "invalid-json");
        let tx = format!(r#"[{{"op": "put", "doc": "k.json", "value": {body}}}]"#);
        let r = call(&app, "POST", "/v1/tx", &[JSON], tx.as_bytes()).await;
        assert_eq!(r.status, 400, "{body}");
    }
    assert_eq!(
        call(&app, "GET", "/v1/docs/k.json", &[], b"").await.status,
        404,
        "nothing was stored"
    );
    if b.is_file() {
        // A file another program wrote: served as its bytes, never as the number.
        let text = format!(r#"{{"a": {{"{key}": "12"}}, "c": 0}}"#);
        std::fs::write(dir.path().join("f.json"), &text).unwrap();
        let whole = call(&app, "GET", "/v1/docs/f.json", &[], b"").await;
        assert_eq!(whole.status, 200);
        assert_eq!(whole.body, text.as_bytes());
        let at = call(&app, "GET", "/v1/docs/f.json?pointer=/a", &[], b"").await;
        let shown = String::from_utf8_lossy(&at.body).into_owned();
        assert_ne!(at.status, 200, "read as a number: {shown}");
        assert!(shown.contains(key), "{shown}");
        let merge = ("content-type", "application/merge-patch+json");
        let r = call(&app, "PATCH", "/v1/docs/f.json", &[merge], br#"{"c": 1}"#).await;
        assert!(
            !r.status.is_success(),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            std::fs::read(dir.path().join("f.json")).unwrap(),
            text.as_bytes()
        );
    }
}

async fn append_and_idempotency(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = b.app_in(dir.path()).await;
    let r = call(
        &app,
        "POST",
        "/v1/docs/jobs/run.json/append?pointer=/cases",
        &[JSON],
        br#"{"id": 1}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["index"], 0);
    assert_eq!(
        r.header("etag").unwrap(),
        format!("\"{}\"", r.json()["version"].as_str().unwrap())
    );
    let key = ("idempotency-key", "retry-42");
    let first = call(
        &app,
        "POST",
        "/v1/docs/jobs/run.json/append?pointer=/cases",
        &[JSON, key],
        br#"{"id": 2}"#,
    )
    .await;
    let again = call(
        &app,
        "POST",
        "/v1/docs/jobs/run.json/append?pointer=/cases",
        &[JSON, key],
        br#"{"id": 2}"#,
    )
    .await;
    assert_eq!(first.status, 200);
    assert_eq!(again.body, first.body, "the first answer, replayed");
    let doc = call(&app, "GET", "/v1/docs/jobs/run.json", &[], b"")
        .await
        .json();
    assert_eq!(doc["cases"], json!([{"id": 1}, {"id": 2}]), "applied once");
    // The same key on another document is another request.
    let r = call(
        &app,
        "POST",
        "/v1/docs/jobs/other.json/append?pointer=/cases",
        &[JSON, key],
        b"1",
    )
    .await;
    assert_eq!(r.json()["index"], 0);

    call(&app, "PUT", "/v1/docs/s.json", &[JSON], br#"{"n": 5}"#).await;
    call(
        &app,
        "POST",
        "/v1/docs/s.json/append?pointer=/n",
        &[JSON],
        b"1",
    )
    .await
    .problem(422, "pointer-not-applicable");
    call(
        &app,
        "POST",
        "/v1/docs/s.json/append?pointer=n",
        &[JSON],
        b"1",
    )
    .await
    .problem(400, "invalid-pointer");
    call(&app, "POST", "/v1/docs/s.json/append", &[JSON], b"{bad")
        .await
        .problem(400, "invalid-json");
    call(
        &app,
        "POST",
        "/v1/docs/s.json/append",
        &[("content-type", "text/plain")],
        b"1",
    )
    .await
    .problem(415, "unsupported-media-type");
    call(
        &app,
        "POST",
        "/v1/docs/s.json/append",
        &[JSON, ("idempotency-key", "")],
        b"1",
    )
    .await
    .problem(400, "invalid-idempotency-key");
}

async fn bad_requests(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = b
        .app_with({
            let mut c = Config::new(dir.path());
            c.max_body = 1024;
            c
        })
        .await;
    call(&app, "PUT", "/v1/docs/a.json", &[JSON], b"{\"trunc")
        .await
        .problem(400, "invalid-json");
    call(&app, "PUT", "/v1/docs/a.json", &[JSON], b"\xff\xfe")
        .await
        .problem(400, "invalid-json");
    call(
        &app,
        "PUT",
        "/v1/docs/a.json",
        &[("content-type", "text/plain")],
        b"{}",
    )
    .await
    .problem(415, "unsupported-media-type");
    call(&app, "PUT", "/v1/docs/a.json", &[], b"{}")
        .await
        .problem(415, "unsupported-media-type");
    let big = format!("\"{}\"", "x".repeat(4096));
    call(&app, "PUT", "/v1/docs/a.json", &[JSON], big.as_bytes())
        .await
        .problem(413, "body-too-large");
    call(
        &app,
        "PUT",
        "/v1/docs/a.json",
        &[JSON, ("if-match", "nope")],
        b"{}",
    )
    .await
    .problem(400, "invalid-precondition");
    for name in [
        "a.txt",
        ".hidden.json",
        "a/.b.json",
        "a%20b.json",
        "a%5Cb.json",
        "a//b.json",
        "x/%2e%2e/a.json",
        "%2e%2e/a.json",
        "a/./b.json",
    ] {
        call(&app, "PUT", &format!("/v1/docs/{name}"), &[JSON], b"{}")
            .await
            .problem(400, "invalid-name");
        call(&app, "GET", &format!("/v1/docs/{name}"), &[], b"")
            .await
            .problem(400, "invalid-name");
    }
    let long = format!("/v1/docs/{}.json", "a".repeat(300));
    call(&app, "PUT", &long, &[JSON], b"{}")
        .await
        .problem(400, "invalid-name");
    // Every segment short enough, the whole name not (over 1024 bytes).
    let deep = format!("/v1/docs/{}x.json", "abcdefghi/".repeat(103));
    let r = call(&app, "PUT", &deep, &[JSON], b"{}").await;
    r.problem(400, "invalid-name");
    assert!(
        r.json()["detail"].as_str().unwrap().contains("1024"),
        "{}",
        r.json()
    );
    let fits = format!("/v1/docs/{}x.json", "abcdefghi/".repeat(100));
    assert_eq!(call(&app, "PUT", &fits, &[JSON], b"{}").await.status, 201);
    call(&app, "GET", "/nothing", &[], b"")
        .await
        .problem(404, "not-found");
    call(&app, "POST", "/v1/docs/a.json", &[JSON], b"{}")
        .await
        .problem(405, "method-not-allowed");
    // A file or directory in the way makes the name invalid there (the error table:
    // InvalidName is 400).
    call(&app, "PUT", "/v1/docs/a.json", &[JSON], b"{}").await;
    call(&app, "PUT", "/v1/docs/a.json/b.json", &[JSON], b"{}")
        .await
        .problem(400, "invalid-name");
    if b.is_file() {
        std::fs::create_dir(dir.path().join("d.json")).unwrap();
    } else {
        // What makes a directory d.json/ on disk.
        let r = call(&app, "PUT", "/v1/docs/d.json/x.json", &[JSON], b"{}").await;
        assert_eq!(r.status, 201);
    }
    call(&app, "PUT", "/v1/docs/d.json", &[JSON], b"{}")
        .await
        .problem(400, "invalid-name");
    // Nesting deeper than the parser accepts is a malformed request...
    let deeper = format!("{}{}", "[".repeat(200), "]".repeat(200));
    call(
        &app,
        "PUT",
        "/v1/docs/deep.json",
        &[JSON],
        deeper.as_bytes(),
    )
    .await
    .problem(400, "invalid-json");
    // ...and an append that would nest one level past what the library can read back
    // (statefile::MAX_DEPTH) is 422, nothing written.
    let k = statefile::MAX_DEPTH - 1;
    let doc = format!("{{\"a\": {}{}}}", "[".repeat(k), "]".repeat(k));
    let r = call(&app, "PUT", "/v1/docs/deep.json", &[JSON], doc.as_bytes()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let innermost = format!("/a{}", "/0".repeat(k - 1));
    call(
        &app,
        "POST",
        &format!("/v1/docs/deep.json/append?pointer={innermost}"),
        &[JSON],
        b"[]",
    )
    .await
    .problem(422, "value-not-storable");
    let after = call(&app, "GET", "/v1/docs/deep.json", &[], b"")
        .await
        .json();
    assert_eq!(
        after,
        serde_json::from_str::<serde_json::Value>(&doc).unwrap()
    );
}

async fn delete_if_none_match_star_refuses_an_existing_document(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = b.app_in(dir.path()).await;
    call(&app, "PUT", "/v1/docs/a.json", &[JSON], b"{}").await;
    call(
        &app,
        "DELETE",
        "/v1/docs/a.json",
        &[("if-none-match", "*")],
        b"",
    )
    .await
    .problem(412, "precondition-failed");
    assert_eq!(
        call(&app, "GET", "/v1/docs/a.json", &[], b"").await.status,
        200,
        "not deleted"
    );
    call(
        &app,
        "DELETE",
        "/v1/docs/b.json",
        &[("if-none-match", "*")],
        b"",
    )
    .await
    .problem(404, "not-found");
}

async fn an_idempotency_key_reused_for_another_append_is_refused(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = b.app_in(dir.path()).await;
    let key = ("idempotency-key", "job-7");
    let r = call(
        &app,
        "POST",
        "/v1/docs/q.json/append?pointer=/items",
        &[JSON, key],
        b"1",
    )
    .await;
    assert_eq!(r.status, 200);
    call(
        &app,
        "POST",
        "/v1/docs/q.json/append?pointer=/items",
        &[JSON, key],
        b"2",
    )
    .await
    .problem(422, "idempotency-key-reused");
    call(
        &app,
        "POST",
        "/v1/docs/q.json/append?pointer=/other",
        &[JSON, key],
        b"1",
    )
    .await
    .problem(422, "idempotency-key-reused");
    let r = call(&app, "GET", "/v1/docs/q.json", &[], b"").await;
    assert_eq!(r.json(), json!({"items": [1]}));
}

async fn racing_retries_with_one_idempotency_key_append_once(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = b.app_in(dir.path()).await;
    let tries = (0..8).map(|_| {
        let app = app.clone();
        tokio::spawn(async move {
            call(
                &app,
                "POST",
                "/v1/docs/q.json/append?pointer=/items",
                &[JSON, ("idempotency-key", "once")],
                b"\"x\"",
            )
            .await
        })
    });
    let mut answers = Vec::new();
    for t in tries {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        answers.push((r.header("etag"), r.json()));
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "one answer for all: {answers:?}"
    );
    let r = call(&app, "GET", "/v1/docs/q.json", &[], b"").await;
    assert_eq!(r.json(), json!({"items": ["x"]}));
}

#[tokio::test]
async fn a_damaged_document_is_served_from_its_backup_and_refuses_updates() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path());
    call(
        &app,
        "PUT",
        "/v1/docs/job.json",
        &[JSON],
        br#"{"status": "queued"}"#,
    )
    .await;
    call(
        &app,
        "PUT",
        "/v1/docs/job.json",
        &[JSON],
        br#"{"status": "running"}"#,
    )
    .await;
    std::fs::write(dir.path().join("job.json"), br#"{"status": "ru"#).unwrap();
    let r = call(&app, "GET", "/v1/docs/job.json", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("statefile-recovered-from").as_deref(), Some("1"));
    assert_eq!(r.json(), json!({"status": "queued"}));
    let etag = r.header("etag").unwrap();
    let r = call(
        &app,
        "GET",
        "/v1/docs/job.json",
        &[("if-none-match", &etag)],
        b"",
    )
    .await;
    assert_eq!(r.status, 304);
    assert_eq!(
        r.header("statefile-recovered-from").as_deref(),
        Some("1"),
        "a 304 still says the copy is a backup"
    );
    call(
        &app,
        "PATCH",
        "/v1/docs/job.json",
        &[("content-type", "application/merge-patch+json")],
        b"{}",
    )
    .await
    .problem(500, "corrupt-document");
    call(
        &app,
        "POST",
        "/v1/docs/job.json/append?pointer=/x",
        &[JSON],
        b"1",
    )
    .await
    .problem(500, "corrupt-document");
    // A PUT may replace it.
    let r = call(
        &app,
        "PUT",
        "/v1/docs/job.json",
        &[JSON],
        br#"{"status": "fixed"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let metrics = String::from_utf8(call(&app, "GET", "/metrics", &[], b"").await.body).unwrap();
    assert!(
        // Two reads were served from the backup (the 200 and the 304).
        metrics.contains("statefile_recoveries_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_held_lock_is_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::new(dir.path());
    c.options = statefile::Options::new().lock_timeout(Duration::from_millis(200));
    let app = app_with(c);
    call(&app, "PUT", "/v1/docs/l.json", &[JSON], b"1").await;
    let doc = statefile::Doc::<Value>::open(dir.path().join("l.json")).unwrap();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        doc.update(|_| {
            held_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            Ok::<_, statefile::Error>(())
        })
        .unwrap();
    });
    held_rx.recv().unwrap();
    let r = call(&app, "PUT", "/v1/docs/l.json", &[JSON], b"2").await;
    r.problem(503, "lock-timeout");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    go_tx.send(()).unwrap();
    holder.join().unwrap();
}

async fn auth_health_metrics_openapi(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::new(dir.path());
    c.token = Some("s3cret".into());
    let app = b.app_with(c).await;
    assert_eq!(call(&app, "GET", "/healthz", &[], b"").await.status, 200);
    call(&app, "GET", "/v1/docs", &[], b"")
        .await
        .problem(401, "unauthorized");
    call(
        &app,
        "GET",
        "/v1/docs",
        &[("authorization", "Bearer wrong")],
        b"",
    )
    .await
    .problem(401, "unauthorized");
    call(&app, "GET", "/metrics", &[("authorization", "s3cret")], b"")
        .await
        .problem(401, "unauthorized");
    let auth = ("authorization", "Bearer s3cret");
    assert_eq!(
        call(&app, "PUT", "/v1/docs/a.json", &[auth, JSON], b"{}")
            .await
            .status,
        201
    );
    let m = String::from_utf8(call(&app, "GET", "/metrics", &[auth], b"").await.body).unwrap();
    assert!(m.contains("statefile_http_requests_total{method=\"PUT\",route=\"/v1/docs/{name}\",status=\"201\"} 1"), "{m}");
    assert!(
        m.contains(
            "statefile_http_requests_total{method=\"GET\",route=\"/v1/docs\",status=\"401\"} 2"
        ),
        "{m}"
    );
    assert!(
        m.contains("statefile_write_duration_seconds_count 1"),
        "{m}"
    );
    assert!(m.contains("statefile_lock_wait_seconds_bucket"), "{m}");
    let spec = call(&app, "GET", "/openapi.json", &[auth], b"")
        .await
        .json();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/v1/docs",
        "/v1/docs/{name}",
        "/v1/docs/{name}/append",
        "/v1/docs/{name}/backups",
        "/v1/docs/{name}/restore",
        "/healthz",
        "/metrics",
    ] {
        assert!(
            spec["paths"][p].is_object(),
            "{p} missing from the OpenAPI description"
        );
    }
    for m in ["get", "put", "patch", "delete"] {
        assert!(spec["paths"]["/v1/docs/{name}"][m].is_object(), "{m}");
    }
    let patch = &spec["paths"]["/v1/docs/{name}"]["patch"];
    for ct in [
        "application/merge-patch+json",
        "application/json-patch+json",
    ] {
        assert!(
            patch["requestBody"]["content"][ct].is_object(),
            "PATCH takes {ct}"
        );
    }
    for code in ["200", "412", "415", "422"] {
        assert!(
            patch["responses"][code].is_object(),
            "PATCH documents {code}"
        );
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"], "bearer",
        "the --token scheme is described"
    );
    assert_eq!(spec["security"], json!([{"bearer": []}]));
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let listed = |code: &str| op["responses"][code].is_object();
            if path != "/healthz" {
                assert!(
                    listed("401") && listed("500") && listed("503"),
                    "{method} {path} lists the shared answers"
                );
            }
        }
    }
    assert_eq!(
        spec["paths"]["/healthz"]["get"]["security"],
        json!([{}]),
        "healthz needs no token"
    );
}

#[tokio::test]
async fn a_full_disk_is_507() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("tiny");
    std::fs::create_dir(&mnt).unwrap();
    let Some(_m) = common::mount::tiny_tmpfs(&mnt, "64k") else {
        return;
    };
    let app = app_in(&mnt);
    call(&app, "PUT", "/v1/docs/s.json", &[JSON], b"{\"small\": 1}").await;
    let big = format!("{{\"blob\": \"{}\"}}", "x".repeat(200_000));
    call(&app, "PUT", "/v1/docs/s.json", &[JSON], big.as_bytes())
        .await
        .problem(507, "no-space");
    let r = call(&app, "GET", "/v1/docs/s.json", &[], b"").await;
    assert_eq!(r.json(), json!({"small": 1}), "unchanged");
}

async fn a_wrong_method_is_405_with_allow_and_metrics_label_the_matched_route(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = b.app_in(dir.path()).await;
    for (method, uri, allow) in [
        ("POST", "/v1/docs/a.json", "GET,HEAD,PUT,PATCH,DELETE"),
        ("GET", "/v1/docs/a.json/append", "POST"),
        ("DELETE", "/v1/docs/a.json/backups", "GET,HEAD"),
        ("PUT", "/v1/docs/a.json/restore", "POST"),
        ("POST", "/v1/docs", "GET,HEAD"),
        ("DELETE", "/metrics", "GET,HEAD"),
    ] {
        let r = call(&app, method, uri, &[JSON], b"{}").await;
        r.problem(405, "method-not-allowed");
        let mut got: Vec<String> = r
            .header("allow")
            .unwrap_or_default()
            .split(',')
            .map(|m| m.trim().to_string())
            .collect();
        let mut want: Vec<&str> = allow.split(',').collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{method} {uri}");
    }
    // HEAD is served by GET: the headers, no body.
    call(&app, "PUT", "/v1/docs/a.json", &[JSON], b"{\"x\": 1}").await;
    let r = call(&app, "HEAD", "/v1/docs/a.json", &[], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.header("etag").is_some() && r.body.is_empty());
    // The internal routes the operations are rewritten to are not reachable directly.
    call(&app, "POST", "/.internal/append/a.json", &[JSON], b"1")
        .await
        .problem(404, "not-found");
    call(
        &app,
        "POST",
        "/v1/docs/a.json/append?pointer=/l",
        &[JSON],
        b"1",
    )
    .await;
    call(&app, "GET", "/v1/docs/a.json/backups", &[], b"").await;
    let m = String::from_utf8(call(&app, "GET", "/metrics", &[], b"").await.body).unwrap();
    for line in [
        r#"method="POST",route="/v1/docs/{name}/append",status="200"} 1"#,
        r#"method="GET",route="/v1/docs/{name}/backups",status="200"} 1"#,
        r#"method="GET",route="/v1/docs/{name}/append",status="405"} 1"#,
        r#"method="POST",route="unmatched",status="404"} 1"#,
        r#"method="HEAD",route="/v1/docs/{name}",status="200"} 1"#,
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
}

/// Regression (issue #10 item 6): `If-Match: *` ("the document exists") and a list of
/// ETags were refused with 400; RFC 9110 13.1.1 defines both.
async fn if_match_star_and_lists_of_etags(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = b.app_in(dir.path()).await;
    let star = ("if-match", "*");
    // On a missing document, * does not hold: 412 for every kind of write, nothing made.
    for (method, uri, ct, body) in [
        ("PUT", "/v1/docs/s.json", "application/json", &b"{}"[..]),
        (
            "PATCH",
            "/v1/docs/s.json",
            "application/merge-patch+json",
            b"{}",
        ),
        ("DELETE", "/v1/docs/s.json", "application/json", b""),
    ] {
        call(&app, method, uri, &[("content-type", ct), star], body)
            .await
            .problem(412, "precondition-failed");
    }
    call(&app, "GET", "/v1/docs/s.json", &[], b"")
        .await
        .problem(404, "not-found");
    let first = call(&app, "PUT", "/v1/docs/s.json", &[JSON], b"{\"n\": 1}").await;
    let v1 = first.header("etag").unwrap();
    // It exists: * holds for PUT and PATCH.
    let r = call(&app, "PUT", "/v1/docs/s.json", &[JSON, star], b"{\"n\": 2}").await;
    assert_eq!(r.status, 200);
    let v2 = r.header("etag").unwrap();
    let merge = ("content-type", "application/merge-patch+json");
    let r = call(
        &app,
        "PATCH",
        "/v1/docs/s.json",
        &[merge, star],
        b"{\"m\": 1}",
    )
    .await;
    assert_eq!(r.status, 200);
    let v3 = r.header("etag").unwrap();
    // A list holds when the current version is any of its strong tags.
    let unknown = format!("\"{}\"", "0".repeat(64));
    let list = format!("{unknown}, {v1} ,W/{v3}");
    call(
        &app,
        "PUT",
        "/v1/docs/s.json",
        &[JSON, ("if-match", &list)],
        b"{}",
    )
    .await
    .problem(412, "precondition-failed");
    let list = format!("{v1}, {v3}, {unknown}");
    let r = call(
        &app,
        "PUT",
        "/v1/docs/s.json",
        &[JSON, ("if-match", &list)],
        b"{\"n\": 4}",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v4 = r.header("etag").unwrap();
    let list = format!("{v2}, {v4}");
    let r = call(
        &app,
        "PATCH",
        "/v1/docs/s.json",
        &[merge, ("if-match", &list)],
        b"{\"p\": 1}",
    )
    .await;
    assert_eq!(r.status, 200);
    let v5 = r.header("etag").unwrap();
    call(
        &app,
        "DELETE",
        "/v1/docs/s.json",
        &[("if-match", &format!("{v1}, {v4}"))],
        b"",
    )
    .await
    .problem(412, "precondition-failed");
    let r = call(
        &app,
        "DELETE",
        "/v1/docs/s.json",
        &[("if-match", &format!("{v1}, {v5}"))],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    // A tag that is not one: 400, as before.
    call(
        &app,
        "PUT",
        "/v1/docs/s.json",
        &[JSON, ("if-match", "\"a\" \"b\"")],
        b"{}",
    )
    .await
    .problem(400, "invalid-precondition");
}

/// Regression (issue #10 item 4): after a document was replaced, an append reusing a
/// key got the first answer and did nothing, unmarked. Every replay now says
/// `Idempotent-Replayed: true`; an append that ran does not.
async fn every_idempotent_replay_is_marked(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = b.app_in(dir.path()).await;
    let key = ("idempotency-key", "run-1");
    let uri = "/v1/docs/log.json/append?pointer=/lines";
    let first = call(&app, "POST", uri, &[JSON, key], b"\"a\"").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("idempotent-replayed"), None);
    let plain = call(&app, "POST", uri, &[JSON], b"\"b\"").await;
    assert_eq!(plain.header("idempotent-replayed"), None);
    call(
        &app,
        "PUT",
        "/v1/docs/log.json",
        &[JSON],
        b"{\"lines\": []}",
    )
    .await;
    let again = call(&app, "POST", uri, &[JSON, key], b"\"a\"").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body, "the first answer");
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    let doc = call(&app, "GET", "/v1/docs/log.json", &[], b"")
        .await
        .json();
    assert_eq!(doc, json!({"lines": []}), "nothing appended by the replay");
}

/// Regression (issue #10 item 5): a pointer GET on a damaged document whose value is
/// missing in the backup answered 404 without saying it came from the backup.
#[tokio::test]
async fn an_answer_computed_from_a_backup_says_so_whatever_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path());
    call(&app, "PUT", "/v1/docs/job.json", &[JSON], br#"{"a": 1}"#).await;
    call(
        &app,
        "PUT",
        "/v1/docs/job.json",
        &[JSON],
        br#"{"a": 1, "b": 2}"#,
    )
    .await;
    std::fs::write(dir.path().join("job.json"), b"{\"a\": 1, \"b\"").unwrap();
    for (pointer, status) in [("/a", 200), ("/b", 404), ("/a/x", 404)] {
        let r = call(
            &app,
            "GET",
            &format!("/v1/docs/job.json?pointer={pointer}"),
            &[],
            b"",
        )
        .await;
        assert_eq!(
            r.status,
            status,
            "{pointer}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.header("statefile-recovered-from").as_deref(),
            Some("1"),
            "{pointer}: the answer came from backup 1"
        );
    }
    // A pointer that is not one is refused before the document is read: no backup in it.
    let r = call(&app, "GET", "/v1/docs/job.json?pointer=bad", &[], b"").await;
    r.problem(400, "invalid-pointer");
    assert_eq!(r.header("statefile-recovered-from"), None);
}

/// Regression (issue #10, OpenAPI): 400 invalid-name was answered but not listed on
/// DELETE, GET backups, PATCH and restore; the name's schema did not say what a valid
/// name is; the bearer scheme was declared even without --token.
#[tokio::test]
async fn the_served_openapi_describes_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let open = app_in(dir.path());
    let spec = call(&open, "GET", "/openapi.json", &[], b"").await.json();
    assert!(
        spec["security"].is_null(),
        "no token, no security: {}",
        spec["security"]
    );
    assert!(spec["components"]["securitySchemes"].is_null());
    let name_ops = [
        ("/v1/docs/{name}", "get"),
        ("/v1/docs/{name}", "put"),
        ("/v1/docs/{name}", "patch"),
        ("/v1/docs/{name}", "delete"),
        ("/v1/docs/{name}/append", "post"),
        ("/v1/docs/{name}/backups", "get"),
        ("/v1/docs/{name}/restore", "post"),
    ];
    for (path, method) in name_ops {
        let op = &spec["paths"][path][method];
        assert!(
            op["responses"]["400"].is_object(),
            "{method} {path} lists 400"
        );
        assert!(
            op["responses"]["401"].is_null(),
            "{method} {path}: no 401 without a token"
        );
        assert_eq!(
            op["responses"]["400"]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
        let name = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "name")
            .unwrap();
        assert_eq!(name["schema"]["maxLength"], 1024);
        // The pattern is the server's own rule: openapi.rs checks that it accepts what
        // check_name accepts, and nothing else.
        assert_eq!(
            name["schema"]["pattern"],
            statefile_server::openapi::NAME_PATTERN
        );
    }
    let append = &spec["paths"]["/v1/docs/{name}/append"]["post"];
    assert!(append["responses"]["200"]["headers"]["Idempotent-Replayed"].is_object());
    assert!(
        append["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Idempotency-Key"
                && p["description"].as_str().unwrap().contains("10 minutes")),
        "the key's window is described"
    );
    assert!(
        spec["paths"]["/metrics"]["get"]["responses"]["200"]["description"]
            .as_str()
            .unwrap()
            .contains("token"),
        "whether /metrics needs the token is said"
    );
    // With a token: the scheme, required everywhere but /healthz, 401 listed.
    let mut c = Config::new(dir.path());
    c.token = Some("t".into());
    let guarded = app_with(c);
    let spec = call(
        &guarded,
        "GET",
        "/openapi.json",
        &[("authorization", "Bearer t")],
        b"",
    )
    .await
    .json();
    assert_eq!(spec["security"], json!([{"bearer": []}]));
    assert!(spec["paths"]["/metrics"]["get"]["responses"]["401"].is_object());
    assert_eq!(spec["paths"]["/healthz"]["get"]["security"], json!([{}]));
}

async fn an_unknown_query_parameter_or_a_control_character_in_a_key_is_400(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = b.app_in(dir.path()).await;
    // A misspelt parameter would otherwise append to the document's root.
    let r = call(
        &app,
        "POST",
        "/v1/docs/a.json/append?ponter=/x",
        &[JSON],
        b"1",
    )
    .await;
    r.problem(400, "invalid-query");
    assert!(
        r.json()["detail"].as_str().unwrap().contains("ponter"),
        "{}",
        r.json()
    );
    call(&app, "GET", "/v1/docs?prefix=a&limit=3", &[], b"")
        .await
        .problem(400, "invalid-query");
    call(
        &app,
        "POST",
        "/v1/docs/a.json/append",
        &[JSON, ("idempotency-key", "a\tb")],
        b"1",
    )
    .await
    .problem(400, "invalid-idempotency-key");
    assert!(!dir.path().join("a.json").exists());
}

/// Regression: with --backups 0 the file backend refused `d.json` once `d.json/x.json`
/// had been created and deleted (its directory stays, with the lock file), while the
/// PostgreSQL backend, with nothing left below `d.json/`, created it. Both refuse it,
/// with or without backups; a name whose document was deleted may hold documents below.
async fn a_directory_stays_in_the_way_after_its_documents_are_deleted(b: Backend) {
    for backups in [0, 2] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::new(dir.path());
        c.options = c.options.backups(backups);
        let app = b.app_with(c).await;
        for doc in ["/v1/docs/d.json/x.json", "/v1/docs/d.json/e/y.json"] {
            assert_eq!(call(&app, "PUT", doc, &[JSON], b"[1]").await.status, 201);
            assert_eq!(call(&app, "DELETE", doc, &[], b"").await.status, 204);
        }
        let r = call(&app, "GET", "/v1/docs?prefix=d.json", &[], b"").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), json!({"names": []}), "backups {backups}");
        call(&app, "PUT", "/v1/docs/d.json", &[JSON], b"{}")
            .await
            .problem(400, "invalid-name");
        // Documents can be created below again, and the other way round works.
        let r = call(&app, "PUT", "/v1/docs/d.json/x.json", &[JSON], b"[2]").await;
        assert_eq!(r.status, 201, "backups {backups}");
        assert_eq!(
            call(&app, "PUT", "/v1/docs/f.json", &[JSON], b"[1]")
                .await
                .status,
            201
        );
        assert_eq!(
            call(&app, "DELETE", "/v1/docs/f.json", &[], b"")
                .await
                .status,
            204
        );
        let r = call(&app, "PUT", "/v1/docs/f.json/z.json", &[JSON], b"[1]").await;
        assert_eq!(r.status, 201, "backups {backups}");
    }
}

// Issue 12: the server's If-Match PUT, append and PATCH join the document's group
// commit. Queued behind a held lock, the three are written by one durable write: the
// backup afterwards is the version before all three, not the one before the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn if_match_put_append_and_patch_share_one_durable_write() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path());
    let r = call(
        &app,
        "PUT",
        "/v1/docs/jobs.json",
        &[JSON],
        br#"{"items": []}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    let etag = r.header("etag").unwrap();
    let path = dir.path().join("jobs.json");
    let before = std::fs::read(&path).unwrap();
    let probe = statefile::Doc::<Value>::open(&path).unwrap();
    let guard = probe.lock().unwrap();
    // (method, uri, If-Match, body)
    let requests: Vec<(&str, &str, Option<String>, &[u8])> = vec![
        (
            "PUT",
            "/v1/docs/jobs.json",
            Some(etag.clone()),
            br#"{"items": ["put"]}"#,
        ),
        (
            "POST",
            "/v1/docs/jobs.json/append?pointer=/items",
            None,
            br#""appended""#,
        ),
        ("PATCH", "/v1/docs/jobs.json", None, br#"{"patched": true}"#),
    ];
    let mut answers = Vec::new();
    for (i, (method, uri, if_match, body)) in requests.into_iter().enumerate() {
        let app = app.clone();
        answers.push(tokio::spawn(async move {
            let ct = if method == "PATCH" {
                ("content-type", "application/merge-patch+json")
            } else {
                JSON
            };
            let mut hs: Vec<(&str, &str)> = vec![ct];
            if let Some(v) = &if_match {
                hs.push(("if-match", v));
            }
            call(&app, method, uri, &hs, body).await
        }));
        // Each request queued before the next is sent: one batch, in this order.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while probe.queued().unwrap() != i + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "request {i} never queued"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    drop(guard);
    let mut versions = Vec::new();
    for a in answers {
        let r = a.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        versions.push(r.header("etag").unwrap());
    }
    assert!(
        versions.windows(2).all(|w| w[0] == w[1]),
        "one write answered all three: {versions:?}"
    );
    let now: Value = statefile::read_json(&path).unwrap();
    assert_eq!(now, json!({"items": ["put", "appended"], "patched": true}));
    let backup = std::fs::read(dir.path().join(".jobs.json.bak")).unwrap();
    assert_eq!(backup, before, "the backup is the version before the batch");
}

/// Regression: a PATCH whose `If-Match` lists several ETags, overtaken between its check
/// and the lock by a writer that left another listed version, answered 412, where PUT
/// (and RFC 9110 13.1.1, which compares with the version current when the request is
/// applied) apply it.
#[tokio::test]
async fn an_overtaken_patch_applies_at_another_listed_version() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path());
    let uri = "/v1/docs/s.json";
    let v2 = call(&app, "PUT", uri, &[JSON], b"{\"n\": 2}").await;
    let v2 = v2.header("etag").unwrap();
    let v1 = call(&app, "PUT", uri, &[JSON], b"{\"n\": 1}").await;
    let v1 = v1.header("etag").unwrap();
    // Another writer holds the lock, and leaves the document at v2 a second later: long
    // after the PATCH found v1 and began waiting for the lock.
    let doc = statefile::Doc::<Value>::open(dir.path().join("s.json")).unwrap();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        doc.update(|v| {
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(1));
            *v = json!({"n": 2});
            Ok::<_, statefile::Error>(())
        })
        .unwrap()
    });
    held_rx.recv().unwrap();
    let merge = ("content-type", "application/merge-patch+json");
    let list = format!("{v1}, {v2}");
    let r = call(
        &app,
        "PATCH",
        uri,
        &[merge, ("if-match", &list)],
        b"{\"p\": 1}",
    )
    .await;
    let (_, receipt) = holder.join().unwrap();
    assert_eq!(receipt.version.etag(), v2, "the other writer left v2");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let now = call(&app, "GET", uri, &[], b"").await;
    assert_eq!(now.json(), json!({"n": 2, "p": 1}), "applied at v2, once");
    // A list naming neither the version now nor one it passes through is still 412.
    for method in ["PUT", "PATCH", "DELETE"] {
        let ct = if method == "PATCH" { merge } else { JSON };
        call(&app, method, uri, &[ct, ("if-match", &list)], b"{}")
            .await
            .problem(412, "precondition-failed");
    }
}

/// Regression (issue #10 item 2, with a list): the ETag a GET served for a damaged
/// document (its backup's) is a version a conditional write may name, alone or in a
/// list, for PUT as for PATCH.
#[tokio::test]
async fn a_list_naming_the_served_backup_repairs_a_damaged_document() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path());
    let uri = "/v1/docs/job.json";
    let merge = ("content-type", "application/merge-patch+json");
    let unknown = format!("\"{}\"", "0".repeat(64));
    for (method, ct, body) in [
        ("PATCH", merge, &b"{\"b\": 2}"[..]),
        ("PUT", JSON, b"{\"c\": 3}"),
    ] {
        call(&app, "PUT", uri, &[JSON], br#"{"a": 1}"#).await;
        call(&app, "PUT", uri, &[JSON], br#"{"a": 1, "b": 0}"#).await;
        std::fs::write(dir.path().join("job.json"), b"{\"a\": 1, \"b\"").unwrap();
        let served = call(&app, "GET", uri, &[], b"").await;
        assert_eq!(
            served.header("statefile-recovered-from").as_deref(),
            Some("1")
        );
        let etag = served.header("etag").unwrap();
        let list = format!("{unknown}, {etag}");
        let r = call(&app, method, uri, &[ct, ("if-match", &list)], body).await;
        assert_eq!(
            r.status,
            200,
            "{method}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let now = call(&app, "GET", uri, &[], b"").await;
        assert_eq!(
            now.header("statefile-recovered-from"),
            None,
            "{method} repaired it"
        );
    }
    let now = call(&app, "GET", uri, &[], b"").await;
    assert_eq!(now.json(), json!({"c": 3}));
}

/// Regression (issue #10, help that fits): the answer for a damaged document said
/// "cannot be modified until it is recovered (restore a backup …)" to a read, and with
/// no backup to restore. It now says what repairs it in each case, names the document
/// as the client did, and never the server's paths.
#[tokio::test]
async fn a_damaged_document_answer_says_what_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    let app = app_in(dir.path());
    let merge = ("content-type", "application/merge-patch+json");
    let detail = |r: &common::Answer| {
        let p = r.json();
        let d = p["detail"].as_str().unwrap().to_string();
        assert!(!d.contains(&root), "a server path in {d}");
        assert!(!d.contains("cannot be modified"), "{d}");
        d
    };
    // No backup at all: a read and a write say so, and what to do instead.
    call(&app, "PUT", "/v1/docs/a/one.json", &[JSON], b"{\"n\": 1}").await;
    std::fs::write(dir.path().join("a/one.json"), b"{\"n\"").unwrap();
    for (method, ct) in [("GET", JSON), ("PATCH", merge)] {
        let r = call(&app, method, "/v1/docs/a/one.json", &[ct], b"{}").await;
        r.problem(500, "corrupt-document");
        let d = detail(&r);
        assert!(d.starts_with("document a/one.json is damaged"), "{d}");
        assert!(d.contains("it has no backup: replace it with PUT"), "{d}");
        assert!(!d.contains("restore"), "nothing to restore: {d}");
    }
    // Backups, all damaged too.
    call(&app, "PUT", "/v1/docs/a/one.json", &[JSON], b"{\"n\": 2}").await;
    std::fs::write(dir.path().join("a/.one.json.bak"), b"{").unwrap();
    std::fs::write(dir.path().join("a/one.json"), b"{\"n\"").unwrap();
    let r = call(&app, "GET", "/v1/docs/a/one.json", &[], b"").await;
    r.problem(500, "corrupt-document");
    let d = detail(&r);
    assert!(d.contains("no backup of it is valid JSON either"), "{d}");
    // A good backup: a read is served from it; a write is told how to use it.
    call(&app, "PUT", "/v1/docs/b.json", &[JSON], b"{\"n\": 1}").await;
    call(&app, "PUT", "/v1/docs/b.json", &[JSON], b"{\"n\": 2}").await;
    std::fs::write(dir.path().join("b.json"), b"{\"n\"").unwrap();
    let r = call(&app, "PATCH", "/v1/docs/b.json", &[merge], b"{}").await;
    r.problem(500, "corrupt-document");
    let d = detail(&r);
    assert!(d.contains("its backup 1 is good"), "{d}");
    assert!(d.contains("POST /v1/docs/b.json/restore?from=1"), "{d}");
}

/// `POST /v1/tx` (issue 14): several documents in one transaction, all or nothing; 412
/// naming the document whose precondition failed; 501 outside journal mode.
#[tokio::test]
async fn a_transaction_commits_every_document_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path());
    let body = br#"[{"op": "put", "doc": "a.json", "value": 1}]"#;
    let r = call(&app, "POST", "/v1/tx", &[JSON], body).await;
    assert_eq!(r.status, 501, "not in journal mode: {:?}", r.json());
    assert_eq!(
        r.json()["type"],
        "urn:statefile:problem:transactions-unavailable"
    );
    assert!(!dir.path().join("a.json").exists());

    let opts = statefile::Options::new();
    statefile::journal::enable(
        dir.path(),
        &opts,
        statefile::journal::JournalOptions::default(),
    )
    .unwrap();
    call(
        &app,
        "PUT",
        "/v1/docs/queue.json",
        &[JSON],
        br#"{"items": [7, 8]}"#,
    )
    .await;
    let ops = json!([
        {"op": "patch", "doc": "queue.json", "json_patch": [{"op": "remove", "path": "/items/0"}]},
        {"op": "put", "doc": "jobs/7.json", "value": {"state": "running"}, "if_none_match": "*"},
        {"op": "get", "doc": "queue.json"}
    ]);
    let r = call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let res = r.json()["results"].clone();
    let queue = statefile::Version::of(&std::fs::read(dir.path().join("queue.json")).unwrap());
    assert_eq!(res[0]["etag"], json!(queue.etag()));
    assert_eq!(res[1]["doc"], "jobs/7.json");
    assert_eq!(res[2]["value"], json!({"items": [8]}));
    let r = call(&app, "GET", "/v1/docs/jobs/7.json", &[], b"").await;
    assert_eq!(r.json(), json!({"state": "running"}));

    // A failed precondition: 412 naming the document, nothing written.
    let ops = json!([
        {"op": "put", "doc": "new.json", "value": 1},
        {"op": "delete", "doc": "jobs/7.json", "if_match": "0".repeat(64)}
    ]);
    let r = call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
    assert_eq!(r.status, 412);
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("jobs/7.json"), "{detail}");
    assert!(
        !detail.contains(dir.path().to_str().unwrap()),
        "no server paths: {detail}"
    );
    assert!(!dir.path().join("new.json").exists());
    // An append or patch that does not apply: 422; a get of a missing document: 404;
    // malformed operations: 400. Nothing written by any.
    let ops = json!([
        {"op": "put", "doc": "new.json", "value": 1},
        {"op": "append", "doc": "queue.json", "pointer": "/items/0", "value": 1}
    ]);
    let r = call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
    assert_eq!(r.status, 422, "{:?}", r.json());
    assert!(!dir.path().join("new.json").exists());
    let ops = json!([{"op": "patch", "doc": "queue.json", "json_patch": [{"op": "test", "path": "/items", "value": []}]}]);
    let r = call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
    assert_eq!(r.status, 422, "{:?}", r.json());
    let r = call(
        &app,
        "POST",
        "/v1/tx",
        &[JSON],
        br#"[{"op": "get", "doc": "none.json"}]"#,
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(r.json()["detail"].as_str().unwrap().contains("none.json"));
    for bad in [
        &b"[]"[..],
        br#"{"op": "get"}"#,
        br#"[{"op": "put", "doc": "../x.json", "value": 1}]"#,
        br#"[{"op": "zap", "doc": "a.json"}]"#,
    ] {
        let r = call(&app, "POST", "/v1/tx", &[JSON], bad).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
    }
    assert!(!dir.path().join("new.json").exists());
    let spec = call(&app, "GET", "/openapi.json", &[], b"").await.json();
    let tx = &spec["paths"]["/v1/tx"]["post"];
    for code in ["200", "400", "404", "412", "422", "501"] {
        assert!(
            tx["responses"][code].is_object(),
            "POST /v1/tx lists {code}"
        );
    }
}

/// The app over `b`, able to run `POST /v1/tx` (a file store in journal mode).
async fn tx_app(b: &Backend, dir: &std::path::Path) -> std::sync::Arc<statefile_server::App> {
    let app = b.app_in(dir).await;
    if b.is_file() {
        statefile::journal::enable(
            dir,
            &statefile::Options::new(),
            statefile::journal::JournalOptions::default(),
        )
        .unwrap();
    }
    app
}

/// Every document's ETag, or `None` where it does not exist.
async fn etags(app: &std::sync::Arc<statefile_server::App>, names: &[&str]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for n in names {
        out.push(
            call(app, "GET", &format!("/v1/docs/{n}"), &[], b"")
                .await
                .header("etag"),
        );
    }
    out
}

/// `POST /v1/tx` on each backend (issue 14): a refusal of a later operation (the second
/// document's precondition, a missing document, a patch that does not apply) leaves
/// every document as it was, backups included; a commit changes all of them at once.
async fn a_transaction_is_all_or_nothing(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = tx_app(&b, dir.path()).await;
    let tx = |ops: Value| {
        let app = app.clone();
        async move { call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await }
    };
    let a = call(&app, "PUT", "/v1/docs/a.json", &[JSON], b"{\"n\": 10}").await;
    let a_tag = a.header("etag").unwrap();
    call(&app, "PUT", "/v1/docs/b.json", &[JSON], b"{\"n\": 5}").await;
    let names = ["a.json", "b.json", "c.json", "d/e.json"];
    let before = etags(&app, &names).await;
    let backups_before = call(&app, "GET", "/v1/docs/a.json/backups", &[], b"")
        .await
        .json();
    // The first operation holds; the second document's precondition does not.
    let r = tx(json!([
        {"op": "put", "doc": "a.json", "value": {"n": 0}, "if_match": a_tag.trim_matches('"')},
        {"op": "put", "doc": "c.json", "value": 1},
        {"op": "patch", "doc": "b.json", "merge": {"n": 15}, "if_match": "0".repeat(64)}
    ]))
    .await;
    r.problem(412, "precondition-failed");
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("b.json") && !detail.contains("a.json"),
        "{detail}"
    );
    for (ops, status) in [
        // The second creates a document that must not exist.
        (
            json!([{"op": "delete", "doc": "a.json"}, {"op": "put", "doc": "b.json", "value": 0, "if_none_match": "*"}]),
            412,
        ),
        (
            json!([{"op": "put", "doc": "d/e.json", "value": 1}, {"op": "get", "doc": "none.json"}]),
            404,
        ),
        (
            json!([{"op": "append", "doc": "a.json", "value": 1}, {"op": "patch", "doc": "b.json", "json_patch": [{"op": "test", "path": "/n", "value": 0}]}]),
            422,
        ),
        (
            json!([{"op": "delete", "doc": "a.json"}, {"op": "append", "doc": "b.json", "pointer": "/n", "value": 1}]),
            422,
        ),
        (
            json!([{"op": "put", "doc": "c.json", "value": 1}, {"op": "delete", "doc": "c.json"},
                   {"op": "delete", "doc": "c.json"}]),
            404,
        ),
    ] {
        let r = tx(ops.clone()).await;
        assert_eq!(
            r.status,
            status,
            "{ops}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(etags(&app, &names).await, before, "nothing was written");
    assert_eq!(
        call(&app, "GET", "/v1/docs/a.json/backups", &[], b"")
            .await
            .json()["backups"]
            .as_array()
            .map(Vec::len),
        backups_before["backups"].as_array().map(Vec::len),
        "no backup was made"
    );
    // Committed: every document changes, each answer its new ETag.
    let r = tx(json!([
        {"op": "patch", "doc": "a.json", "merge": {"n": 7}, "if_match": a_tag.trim_matches('"')},
        {"op": "patch", "doc": "b.json", "json_patch": [{"op": "replace", "path": "/n", "value": 8}]},
        {"op": "put", "doc": "d/e.json", "value": [], "if_none_match": "*"},
        {"op": "append", "doc": "d/e.json", "value": "x"},
        {"op": "get", "doc": "b.json"}
    ]))
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let res = r.json()["results"].clone();
    let now = etags(&app, &names).await;
    assert_eq!(res[0]["etag"], json!(now[0]));
    assert_eq!(res[1]["etag"], json!(now[1]));
    assert_eq!(res[2]["etag"], json!(now[3]));
    assert_eq!(res[3]["etag"], json!(now[3]));
    assert_eq!(res[3]["index"], 0);
    assert_eq!(
        res[4]["value"],
        json!({"n": 8}),
        "a get sees the transaction's writes"
    );
    assert_eq!(
        res[4]["etag"],
        json!(now[1]),
        "and the version of what it read: b.json's once committed"
    );
    assert_eq!(now[2], None);
    let r = call(&app, "GET", "/v1/docs/d/e.json", &[], b"").await;
    assert_eq!(r.json(), json!(["x"]));
    // A delete keeps the document as a backup, restorable.
    let r =
        tx(json!([{"op": "delete", "doc": "a.json"}, {"op": "delete", "doc": "d/e.json"}])).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["results"][0]["etag"], Value::Null);
    assert_eq!(etags(&app, &["a.json", "d/e.json"]).await, [None, None]);
    let r = call(&app, "POST", "/v1/docs/a.json/restore?from=1", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), now[0]);
}

/// Hostile `POST /v1/tx` bodies are 4xx before anything is written, on each backend:
/// unknown operations, wrong types, too many operations, bad names.
async fn hostile_transactions_are_refused_and_write_nothing(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = tx_app(&b, dir.path()).await;
    let put = |doc: &str| json!({"op": "put", "doc": doc, "value": 1});
    let many: Vec<Value> = (0..=statefile::MAX_TX_OPS)
        .map(|i| put(&format!("m{i}.json")))
        .collect();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies: Vec<(Vec<u8>, u16)> = vec![
        (json!([put("ok.json"), {"op": "zap", "doc": "a.json"}]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), {"op": "put", "doc": 5, "value": 1}]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), {"op": "put", "doc": "a.json"}]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), {"op": ["put"], "doc": "a.json", "value": 1}]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), {"op": "put", "doc": "a.json", "value": 1, "if_match": "nope"}]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), {"op": "put", "doc": "a.json", "value": 1, "if_none_match": "v"}]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), {"op": "get", "doc": "a.json", "value": 1}]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), {"op": "patch", "doc": "a.json", "merge": {}, "json_patch": []}]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), {"op": "patch", "doc": "a.json", "json_patch": [{"op": "frob", "path": "/x"}]}]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), {"op": "append", "doc": "a.json", "pointer": "x", "value": 1}]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), "put"]).to_string().into_bytes(), 400),
        (json!({"op": "put", "doc": "ok.json", "value": 1}).to_string().into_bytes(), 400),
        (b"[]".to_vec(), 400),
        (b"[{\"op\": \"put\", \"doc\": \"ok.json\", \"value\": 1}".to_vec(), 400),
        (serde_json::to_vec(&many).unwrap(), 400),
        (json!([put("ok.json"), put("../x.json")]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), put("/abs.json")]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), put("a/../../x.json")]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), put("nul\u{0}.json")]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), put("")]).to_string().into_bytes(), 400),
        (json!([put("ok.json"), put(&format!("{}.json", "x".repeat(300)))]).to_string().into_bytes(), 400),
        (format!("[{{\"op\": \"put\", \"doc\": \"ok.json\", \"value\": {deep}}}]").into_bytes(), 400),
    ];
    for (body, status) in bodies {
        let r = call(&app, "POST", "/v1/tx", &[JSON], &body).await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
        assert_eq!(
            r.status.as_u16(),
            status,
            "{shown}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/problem+json"),
            "{shown}"
        );
    }
    // Review (hostile): documents in more directories than a transaction may make,
    // lock and record (deep names: half a million directories in 1000 operations).
    let deep: Vec<Value> = (0..statefile::MAX_TX_OPS)
        .map(|i| put(&format!("d{i}/{}x.json", "a/".repeat(4))))
        .collect();
    let r = call(
        &app,
        "POST",
        "/v1/tx",
        &[JSON],
        json!(deep).to_string().as_bytes(),
    )
    .await;
    r.problem(400, "invalid-transaction");
    let limit = format!("more than {} distinct directories", statefile::MAX_TX_DIRS);
    assert!(
        r.json()["detail"].as_str().unwrap().contains(&limit),
        "{}",
        r.json()
    );
    let r = call(
        &app,
        "POST",
        "/v1/tx",
        &[("content-type", "text/plain")],
        b"[]",
    )
    .await;
    assert_eq!(r.status, 415);
    let r = call(&app, "GET", "/v1/docs", &[], b"").await;
    assert_eq!(r.json(), json!({"names": []}), "nothing was written");
}

/// Review: `put` then `delete` of a document that did not exist before answered 404 in
/// one transaction (both backends): the transaction created it, so it exists as the
/// transaction sees it and the delete goes through; nothing is written for it. The
/// mirror cases, with the net effect of each.
async fn a_document_a_transaction_wrote_can_be_deleted_in_it(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = tx_app(&b, dir.path()).await;
    let tx = |ops: Value| {
        let app = app.clone();
        async move {
            let r = call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
            (r.status.as_u16(), r.json())
        }
    };
    let put = |doc: &str, v: i64| json!({"op": "put", "doc": doc, "value": v});
    let del = |doc: &str| json!({"op": "delete", "doc": doc});
    let r = call(&app, "PUT", "/v1/docs/e.json", &[JSON], b"1").await;
    assert_eq!(r.status, 201);
    let e1 = r.header("etag");

    // Created then deleted: 200, both results without a version, nothing stored.
    let (s, j) = tx(json!([put("n.json", 1), del("n.json")])).await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(j["results"][0]["version"], Value::Null, "{j}");
    assert_eq!(j["results"][1]["version"], Value::Null, "{j}");
    assert_eq!(etags(&app, &["n.json"]).await, [None]);
    let r = call(&app, "GET", "/v1/docs/n.json/backups", &[], b"").await;
    assert!(
        r.status == 404 || r.json()["backups"] == json!([]),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // With its precondition: it did not exist.
    let mut create = put("n.json", 1);
    create["if_none_match"] = json!("*");
    let (s, j) = tx(json!([create, del("n.json")])).await;
    assert_eq!(s, 200, "{j}");
    // Created, deleted, created again: the last value.
    let (s, j) = tx(json!([put("n.json", 1), del("n.json"), put("n.json", 2)])).await;
    assert_eq!(s, 200, "{j}");
    let r = call(&app, "GET", "/v1/docs/n.json", &[], b"").await;
    assert_eq!(r.json(), json!(2));
    assert_eq!(j["results"][2]["etag"], json!(r.header("etag")));
    call(&app, "DELETE", "/v1/docs/n.json", &[], b"").await;
    // Deleted twice, or read once deleted: 404, nothing written.
    for ops in [
        json!([put("n.json", 1), del("n.json"), del("n.json")]),
        json!([put("n.json", 1), del("n.json"), {"op": "get", "doc": "n.json"}]),
        json!([put("x.json", 1), del("e.json"), del("e.json")]),
    ] {
        let (s, j) = tx(ops.clone()).await;
        assert_eq!(s, 404, "{ops}: {j}");
        assert_eq!(j["type"], json!("urn:statefile:problem:not-found"), "{j}");
    }
    assert_eq!(
        etags(&app, &["n.json", "x.json", "e.json"]).await,
        [None, None, e1.clone()]
    );
    // An existing document replaced then deleted: gone, its backup is what was there.
    let (s, j) = tx(json!([put("e.json", 5), del("e.json")])).await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(etags(&app, &["e.json"]).await, [None]);
    let r = call(&app, "POST", "/v1/docs/e.json/restore?from=1", &[], b"").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("etag"), e1);
    // Deleted then put: the new value; put twice: the second, both results its version.
    let (s, j) = tx(json!([del("e.json"), put("e.json", 3)])).await;
    assert_eq!(s, 200, "{j}");
    let (s, j) = tx(json!([put("p.json", 1), put("p.json", 2)])).await;
    assert_eq!(s, 200, "{j}");
    let now = etags(&app, &["e.json", "p.json"]).await;
    assert_eq!(j["results"][0]["etag"], json!(now[1]));
    assert_eq!(j["results"][1]["etag"], json!(now[1]));
    assert_eq!(
        call(&app, "GET", "/v1/docs/e.json", &[], b"").await.json(),
        json!(3)
    );
    assert_eq!(
        call(&app, "GET", "/v1/docs/p.json", &[], b"").await.json(),
        json!(2)
    );
}

/// Two names of one document (a symlink inside the store, which the server follows)
/// in one transaction. The receipt names the document by the first name used;
/// `apply_tx` matched each operation's result by name or by the unresolved path (now
/// by the resolved one), so the second name's put answered `"version": null`, `"etag": null`, which
/// the API documents as "deleted", though the document was written and exists.
#[tokio::test]
async fn a_transaction_answers_the_version_of_a_document_written_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let app = tx_app(&Backend::File, dir.path()).await;
    let r = call(&app, "PUT", "/v1/docs/a.json", &[JSON], b"{\"n\": 1}").await;
    assert_eq!(r.status, 201);
    std::os::unix::fs::symlink("a.json", dir.path().join("link.json")).unwrap();
    let ops = json!([
        {"op": "put", "doc": "a.json", "value": 1},
        {"op": "put", "doc": "link.json", "value": 2}
    ]);
    let r = call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let now = call(&app, "GET", "/v1/docs/a.json", &[], b"").await;
    assert_eq!(now.json(), json!(2));
    let res = r.json()["results"].clone();
    assert_eq!(res[1]["etag"], json!(now.header("etag")), "{res}");
    assert_eq!(res[0]["etag"], json!(now.header("etag")), "{res}");
}

/// The file backend found the document an error is about by the first operation
/// whose name ends the error's path (`Path::ends_with`, by components),
/// so with `a.json` and `b/a.json` in one transaction a failed precondition of
/// `b/a.json` answered 412 "document a.json is not at the version its operation
/// expected": the wrong document, which a client would then re-read and retry.
#[tokio::test]
async fn a_failed_precondition_names_its_own_document_not_one_whose_name_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = tx_app(&Backend::File, dir.path()).await;
    for name in ["a.json", "b/a.json"] {
        let r = call(&app, "PUT", &format!("/v1/docs/{name}"), &[JSON], b"1").await;
        assert_eq!(r.status, 201);
    }
    let ops = json!([
        {"op": "put", "doc": "a.json", "value": 2},
        {"op": "put", "doc": "b/a.json", "value": 2, "if_match": "0".repeat(64)}
    ]);
    let r = call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
    r.problem(412, "precondition-failed");
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("b/a.json"),
        "the detail names the document whose precondition failed: {detail}"
    );
}

/// Another program (one that does not take statefile's lock) replaces a document while
/// a write of it runs: the library refuses the write (`Conflict`, nothing written). For
/// a request that named no version no precondition failed, yet it was answered 412
/// "not at the version the request expected". Now: 409 `changed-during-write`, saying
/// nothing was written and that it may be sent again; a conditional write still 412.
#[tokio::test]
async fn a_write_that_named_no_version_and_met_another_programs_change_is_409() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let armed = Arc::new(AtomicBool::new(false));
    let options = {
        let (armed, root) = (armed.clone(), root.clone());
        statefile::Options::new().on_temp_created(move |_| {
            if armed.swap(false, Ordering::SeqCst) {
                std::fs::write(root.join("other.json"), b"{\"v\": \"theirs\"}\n")?;
                std::fs::rename(root.join("other.json"), root.join("a.json"))?;
            }
            Ok(())
        })
    };
    let mut config = statefile_server::Config::new(&root);
    config.options = options;
    let app = app_with(config);
    let put = call(&app, "PUT", "/v1/docs/a.json", &[JSON], b"{\"v\": 1}").await;
    assert_eq!(put.status, 201);
    let etag = put.header("etag").unwrap();
    let theirs = json!({"v": "theirs"});
    type Attempt<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a [u8]);
    let attempts: [Attempt<'_>; 3] = [
        ("PUT", "/v1/docs/a.json", vec![JSON], b"{\"v\": 2}"),
        (
            "PATCH",
            "/v1/docs/a.json",
            vec![("content-type", "application/merge-patch+json")],
            b"{\"w\": 1}",
        ),
        (
            "POST",
            "/v1/docs/a.json/append?pointer=/list",
            vec![JSON],
            b"1",
        ),
    ];
    for (method, uri, headers, body) in attempts {
        // Back to a document this request may change, then the other program meddles.
        std::fs::write(root.join("a.json"), b"{\"v\": 1, \"list\": []}\n").unwrap();
        armed.store(true, Ordering::SeqCst);
        let r = call(&app, method, uri, &headers, body).await;
        r.problem(409, "changed-during-write");
        let detail = r.json()["detail"].as_str().unwrap().to_string();
        assert!(
            detail.contains("a.json") && detail.contains("nothing was written"),
            "{method}: {detail}"
        );
        let now: Value =
            serde_json::from_slice(&std::fs::read(root.join("a.json")).unwrap()).unwrap();
        assert_eq!(
            now, theirs,
            "{method}: what the other program put there stays"
        );
    }
    // In a transaction (journal mode) likewise, when no operation on it named a version.
    statefile::journal::enable(
        &root,
        &statefile::Options::new(),
        statefile::journal::JournalOptions::default(),
    )
    .unwrap();
    std::fs::write(root.join("a.json"), b"{\"v\": 1}\n").unwrap();
    armed.store(true, Ordering::SeqCst);
    let ops = json!([{"op": "put", "doc": "a.json", "value": {"v": 4}}]);
    let r = call(&app, "POST", "/v1/tx", &[JSON], ops.to_string().as_bytes()).await;
    r.problem(409, "changed-during-write");
    let now: Value = serde_json::from_slice(&std::fs::read(root.join("a.json")).unwrap()).unwrap();
    assert_eq!(now, theirs);
    // With If-Match (the version it had), the same change is a precondition that failed.
    std::fs::write(root.join("a.json"), b"{\n  \"v\": 1\n}\n").unwrap();
    assert_eq!(
        call(&app, "GET", "/v1/docs/a.json", &[], b"")
            .await
            .header("etag"),
        Some(etag.clone())
    );
    armed.store(true, Ordering::SeqCst);
    let r = call(
        &app,
        "PUT",
        "/v1/docs/a.json",
        &[JSON, ("if-match", etag.as_str())],
        b"{\"v\": 3}",
    )
    .await;
    r.problem(412, "precondition-failed");
}
