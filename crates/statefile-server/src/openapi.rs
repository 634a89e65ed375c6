//! The OpenAPI description `/openapi.json` serves: the handlers' annotations, completed
//! here with what every operation may answer (each error as problem+json), what a valid
//! name is, what each body may be, and the bearer scheme when the server has a token.
//! It describes the running server: a status the server can answer is listed, and a
//! request the description calls invalid is refused.

use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, Parameter};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, ContentBuilder, RefOr, ResponseBuilder};

use crate::extract::MAX_NAME_LEN;
use crate::routes::{
    __path_append, __path_backups, __path_delete_doc, __path_get_doc, __path_healthz, __path_list,
    __path_metrics, __path_openapi, __path_patch_doc, __path_put_doc, __path_restore,
    __path_transaction,
};

/// The annotations on the handlers.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(
        title = "statefile",
        description = "Atomic, durable JSON documents over HTTP. Errors are RFC 9457 problem+json."
    ),
    paths(
        list,
        get_doc,
        put_doc,
        patch_doc,
        delete_doc,
        append,
        transaction,
        backups,
        restore,
        healthz,
        metrics,
        openapi
    ),
    components(schemas(crate::BackupEntry))
)]
pub struct ApiDoc;

/// A document name, as `extract::check_name` accepts it: segments of `A-Z a-z 0-9 . _ -`
/// (at most 230 bytes, not starting with a dot) joined by `/`, ending in `.json`.
pub const NAME_PATTERN: &str =
    r"^([A-Za-z0-9_-][A-Za-z0-9._-]{0,229}/)*[A-Za-z0-9_-][A-Za-z0-9._-]{0,224}\.json$";

/// `If-Match`: `*`, or a list of entity-tags (a bare version, as the CLI prints it, too).
const IF_MATCH_PATTERN: &str =
    r#"^(\*|[0-9A-Fa-f]{64}|(W/)?"[!#-~]*"([ \t]*,[ \t]*(W/)?"[!#-~]*")*)$"#;

/// An RFC 6901 JSON Pointer: empty, or `/`-prefixed tokens with `~` only as `~0`, `~1`.
const POINTER_PATTERN: &str = r"^(/([^~/]|~[01])*)*$";

/// The description of this server: with `token`, every operation but `/healthz`
/// (`/metrics` included) needs `Authorization: Bearer` and may answer 401.
pub fn spec(token: bool) -> utoipa::openapi::OpenApi {
    let mut api = ApiDoc::openapi();
    let components = api.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("Problem".into(), problem_schema());
    if token {
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        api.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
    for (path, item) in api.paths.paths.iter_mut() {
        let ops = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("patch", &mut item.patch),
            ("delete", &mut item.delete),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                complete(path, method, op, token);
            }
        }
    }
    api
}

/// Everything `method path` may answer, the name's rules, the bodies' schemas.
fn complete(path: &str, method: &str, op: &mut Operation, token: bool) {
    let named = path.contains("{name}");
    let tx = path == "/v1/tx";
    let body = tx
        || matches!(
            (path, method),
            ("/v1/docs/{name}", "put" | "patch") | ("/v1/docs/{name}/append", "post")
        );
    let write = (named && method != "get") || tx;
    let mut answers: Vec<(&str, &str)> = vec![(
        "414",
        "uri-too-long: the path and query are longer than 8 KiB",
    )];
    if path == "/healthz" {
        op.security = token.then(|| vec![SecurityRequirement::default()]);
        answers.push(("503", "storage-unavailable: the storage does not answer"));
    } else {
        answers.push((
            "500",
            "corrupt-document, storage-permission, durability-unknown or internal (the server log has the request id)",
        ));
        answers.push((
            "503",
            "lock-timeout, request-timeout, storage-unavailable or too-many-open-files, with Retry-After",
        ));
        if token {
            answers.push(("401", "unauthorized: a missing or wrong bearer token"));
        }
    }
    if tx {
        answers.push((
            "400",
            "invalid-transaction (malformed operations), invalid-name, invalid-patch",
        ));
        answers.push((
            "404",
            "not-found: a get, delete or JSON Patch of a missing document",
        ));
        answers.push((
            "412",
            "precondition-failed: an operation's if_match or if_none_match does not hold; names the document; nothing written",
        ));
        answers.push((
            "501",
            "transactions-unavailable: the file store is not in journal mode (statefile journal enable DIR)",
        ));
    }
    if named || path == "/v1/docs" {
        answers.push((
            "400",
            "invalid-name (the name breaks the rules of its schema, or a directory or file is in the way), invalid-query, invalid-pointer, invalid-precondition or invalid-header",
        ));
    }
    if named {
        answers.push(("404", "not-found: no such document, backup or value"));
    }
    if write {
        answers.push(("507", "no-space: the storage is full; nothing changed"));
    }
    if matches!(method, "put" | "patch" | "delete") && named {
        answers.push((
            "412",
            "precondition-failed: If-Match or If-None-Match does not hold",
        ));
    }
    if (matches!(method, "put" | "patch" | "delete") && named) || path == "/v1/docs/{name}/append" {
        answers.push((
            "409",
            "changed-during-write: a write that named no version found the document changed by another program (one that does not take the lock) while it ran; nothing written; send it again",
        ));
    }
    if body {
        answers.push(("400", "invalid-json, invalid-patch"));
        answers.push((
            "408",
            "body-timeout: the body did not arrive in time; nothing changed",
        ));
        answers.push((
            "413",
            "body-too-large or patch-too-large: over --max-body, the body memory or --max-patch-ops",
        ));
        answers.push(("415", "unsupported-media-type"));
        answers.push((
            "422",
            "the patch or append does not apply, the value cannot be stored, document-too-large (the stored document, or what the write would store, is over --max-document), or an Idempotency-Key was used for another request",
        ));
    }
    if named && method == "get" {
        answers.push((
            "422",
            "document-too-large: the stored document or backup is larger than --max-document (it is not read); a PUT replaces it, keeping it aside as .name.corrupt",
        ));
    }
    if write && !body {
        answers.push((
            "422",
            "document-too-large: a stored document (or backup) the request must read or compare is larger than --max-document: it is not read or hashed, so a DELETE of it, or a restore needing its version, is refused, nothing changed; a PUT replaces it",
        ));
    }
    for (code, text) in answers {
        op.responses
            .responses
            .entry(code.to_string())
            .or_insert_with(|| ResponseBuilder::new().description(text).build().into());
    }
    for (code, response) in op.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if !response.content.is_empty() || code == "204" || code == "304" {
            continue;
        }
        let (media, schema) = if code.starts_with('4') || code.starts_with('5') {
            (
                "application/problem+json",
                RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Problem")),
            )
        } else if matches!(path, "/metrics" | "/healthz") {
            ("text/plain", any_json().into())
        } else {
            ("application/json", any_json().into())
        };
        response.content.insert(media.to_string(), content(schema));
    }
    for p in op.parameters.iter_mut().flatten() {
        let pattern = match (p.name.as_str(), method) {
            ("name", _) => {
                name_schema(p);
                continue;
            }
            ("If-Match", _) => IF_MATCH_PATTERN,
            ("If-None-Match", "put") => r"^\*$",
            ("Idempotency-Key", _) => r"^[ -~]{1,255}$",
            ("pointer", _) => POINTER_PATTERN,
            ("from", _) => r"^([0-9]+|(W/)?\x22?[0-9A-Fa-f]{64}\x22?)?$",
            _ => continue,
        };
        p.schema = Some(
            Schema::Object(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(pattern))
                    .build(),
            )
            .into(),
        );
    }
    if body {
        op.request_body = Some(request_body(path, method));
    }
}

/// Any JSON value.
fn any_json() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .build(),
    )
}

fn content(schema: RefOr<Schema>) -> Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

fn name_schema(p: &mut Parameter) {
    p.description = Some(format!(
        "The document's path under the served directory: segments of A-Z a-z 0-9 . _ - \
         (not starting with a dot, at most 230 bytes each) joined by /, ending in .json, at \
         most {MAX_NAME_LEN} bytes. Anything else is 400 invalid-name."
    ));
    p.schema = Some(
        Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(NAME_PATTERN))
                .min_length(Some(6))
                .max_length(Some(MAX_NAME_LEN))
                .examples([serde_json::json!("view/resData.json")])
                .build(),
        )
        .into(),
    );
}

/// PUT and append take any JSON value; PATCH a merge patch (any JSON value) or a JSON
/// Patch (an array of operations).
fn request_body(path: &str, method: &str) -> RequestBody {
    let mut body = RequestBody::new();
    body.required = Some(utoipa::openapi::Required::True);
    if path == "/v1/tx" {
        body.description = Some(
            "The operations, applied in order as one transaction: put (value), patch (merge or \
             json_patch), append (pointer, value), delete, get; each may carry if_match or \
             if_none_match: \"*\", checked against the document as the operations before it left \
             it (after a put, patch or append of it, it exists at the version of the bytes \
             written, the version the answer reports for it; after a delete, it does not exist)"
                .to_string(),
        );
        body.content
            .insert("application/json".into(), content(tx_schema().into()));
    } else if method == "patch" {
        body.content.insert(
            "application/merge-patch+json".into(),
            content(any_json().into()),
        );
        body.content.insert(
            "application/json-patch+json".into(),
            content(json_patch_schema().into()),
        );
    } else {
        body.description = Some(if path.ends_with("/append") {
            "The JSON value to append".to_string()
        } else {
            "The document: any JSON value".to_string()
        });
        body.content
            .insert("application/json".into(), content(any_json().into()));
    }
    body
}

/// `POST /v1/tx`: 1 to 1000 operations (their documents in at most 4000 directories),
/// each one of the forms `statefile tx` accepts:
/// its `op`, its `doc`, the members that op needs, and an optional precondition;
/// nothing else (the server refuses unknown members).
fn tx_schema() -> Schema {
    let string = |pattern: &'static str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
    };
    let form = |ops: &[&str], needs: &[(&str, Schema)], may: &[(&str, Schema)]| {
        let mut o = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "op",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(ops.iter().copied())),
            )
            .required("op")
            .property(
                "doc",
                string(NAME_PATTERN)
                    .min_length(Some(6))
                    .max_length(Some(MAX_NAME_LEN)),
            )
            .required("doc")
            .property("if_match", string(r"^[0-9A-Fa-f]{64}$"))
            .property("if_none_match", string(r"^\*$"))
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ));
        for (name, schema) in needs {
            o = o.property(*name, schema.clone()).required(*name);
        }
        for (name, schema) in may {
            o = o.property(*name, schema.clone());
        }
        Schema::Object(o.build())
    };
    let pointer = || Schema::Object(string(POINTER_PATTERN).build());
    let item = utoipa::openapi::schema::OneOfBuilder::new()
        .item(form(&["put"], &[("value", any_json())], &[]))
        .item(form(&["patch"], &[("merge", any_json())], &[]))
        .item(form(
            &["patch"],
            &[("json_patch", json_patch_schema())],
            &[],
        ))
        .item(form(
            &["append"],
            &[("value", any_json())],
            &[("pointer", pointer())],
        ))
        .item(form(&["delete", "get"], &[], &[]));
    Schema::Array(
        ArrayBuilder::new()
            .items(item)
            .min_items(Some(1))
            .max_items(Some(statefile::MAX_TX_OPS))
            .description(Some(format!(
                "1 to {} operations, whose documents are in at most {} distinct \
                 directories (400 invalid-transaction beyond)",
                statefile::MAX_TX_OPS,
                statefile::MAX_TX_DIRS
            )))
            .build(),
    )
}

/// RFC 6902: an array of operations, each with `op` and `path`; `value` for add, replace
/// and test; `from` for move and copy.
fn json_patch_schema() -> Schema {
    let pointer = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(POINTER_PATTERN))
            .build()
    };
    let op = |ops: &[&str], extra: Option<&str>| {
        let mut o = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "op",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(ops.iter().copied())),
            )
            .required("op")
            .property("path", pointer())
            .required("path");
        match extra {
            Some("value") => o = o.property("value", any_json()).required("value"),
            Some("from") => o = o.property("from", pointer()).required("from"),
            _ => {}
        }
        Schema::Object(o.build())
    };
    let item = utoipa::openapi::schema::OneOfBuilder::new()
        .item(op(&["add", "replace", "test"], Some("value")))
        .item(op(&["remove"], None))
        .item(op(&["move", "copy"], Some("from")));
    Schema::Array(ArrayBuilder::new().items(item).build())
}

/// RFC 9457 problem details, as every error answer carries them.
fn problem_schema() -> RefOr<Schema> {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "type",
                string().description(Some("urn:statefile:problem:<slug>, stable")),
            )
            .property("title", string())
            .property("status", ObjectBuilder::new().schema_type(Type::Integer))
            .property(
                "detail",
                string().description(Some("for the client; no paths")),
            )
            .property(
                "request_id",
                string().description(Some("also in the x-request-id header")),
            )
            .required("type")
            .required("status")
            .build(),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::extract::check_name;

    fn re() -> regex_lite::Regex {
        regex_lite::Regex::new(NAME_PATTERN).unwrap()
    }

    #[test]
    fn the_name_pattern_says_what_check_name_does() {
        let re = re();
        for good in ["a.json", "view/resData.json", "a-b_c.d/e..f.json", "_.json"] {
            assert!(re.is_match(good) && check_name(good).is_ok(), "{good}");
        }
        let long_segment = format!("{}.json", "a".repeat(226));
        let deep = format!("{}x.json", "abcdefghi/".repeat(103));
        for bad in [
            "a.txt",
            ".a.json",
            "a/.b.json",
            "a//b.json",
            "/a.json",
            "a b.json",
            "../a.json",
            ".json",
            long_segment.as_str(),
            deep.as_str(),
        ] {
            // Longer than 1024 bytes is the schema's maxLength, not its pattern.
            let by_schema = re.is_match(bad) && bad.len() <= MAX_NAME_LEN;
            assert!(!by_schema && check_name(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn pattern_and_length_accept_exactly_the_names_check_name_accepts(
            name in "[a-zA-Z0-9._/ -]{0,40}(\\.json)?",
        ) {
            let by_schema = re().is_match(&name) && name.len() <= MAX_NAME_LEN;
            prop_assert_eq!(by_schema, check_name(&name).is_ok(), "{}", name);
        }

        #[test]
        fn served_descriptions_always_serialize(token in any::<bool>()) {
            prop_assert!(spec(token).to_json().is_ok());
        }
    }
}
