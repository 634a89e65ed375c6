//! JSON Patch against a reference: on generated documents and patches, `Patch` agrees
//! with the json-patch crate's `patch` (applied all at once, without limits) on success
//! and on the result, and a refused patch leaves the value exactly as it was, key order
//! included. Size accounting is checked on every success by a debug assertion inside
//! `apply` (the tracked size equals the compact JSON's length).

use proptest::prelude::*;
use serde_json::{Value, json};
use statefile::patch::{Limits, Patch, PatchKind};

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("0".to_string()),
        Just("1".to_string()),
        Just("-".to_string()),
        Just("01".to_string()),
        Just(String::new()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 0..4).prop_map(|t| t.iter().map(|t| format!("/{t}")).collect())
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        (0i64..4).prop_map(Value::from),
        "[ab]{0,2}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::vec((token(), inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn operation() -> impl Strategy<Value = Value> {
    prop_oneof![
        (path(), value()).prop_map(|(p, v)| json!({"op": "add", "path": p, "value": v})),
        path().prop_map(|p| json!({"op": "remove", "path": p})),
        (path(), value()).prop_map(|(p, v)| json!({"op": "replace", "path": p, "value": v})),
        (path(), path()).prop_map(|(f, p)| json!({"op": "move", "from": f, "path": p})),
        (path(), path()).prop_map(|(f, p)| json!({"op": "copy", "from": f, "path": p})),
        (path(), value()).prop_map(|(p, v)| json!({"op": "test", "path": p, "value": v})),
    ]
}

/// json-patch's `patch`, or `None` where it panics: it does when undoing a failed
/// patch that moved a value to "" (`[1]`: move /0 to "", remove ""), or whose `move`
/// failed after removing its source (`[null]`: replace /0, move /0 to /a). Its panics
/// are kept out of the test output.
fn reference(
    doc: &mut Value,
    ops: &json_patch::Patch,
) -> Option<Result<(), json_patch::PatchError>> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info
                .location()
                .is_some_and(|l| l.file().contains("json-patch"))
            {
                default(info);
            }
        }));
    });
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| json_patch::patch(doc, ops))).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn agrees_with_the_reference_and_is_all_or_nothing(
        doc in value(),
        ops in prop::collection::vec(operation(), 0..6),
    ) {
        let limits = Limits::new();
        let ops = Value::from(ops);
        let reference_ops: json_patch::Patch = serde_json::from_value(ops.clone()).unwrap();
        let mut got = doc.clone();
        let ours = Patch::from_value(PatchKind::Json, ops, &limits)
            .and_then(|p| p.apply(&mut got, &limits));
        let mut expected = doc.clone();
        let Some(reference) = reference(&mut expected, &reference_ops) else {
            // No reference for this patch: still all or nothing.
            if ours.is_err() {
                prop_assert_eq!(got.to_string(), doc.to_string());
            }
            return Ok(());
        };
        match (&ours, &reference) {
            // Objects compare without regard to order (the reference reorders on remove).
            (Ok(()), Ok(())) => prop_assert_eq!(&got, &expected),
            (Err(_), Err(_)) => prop_assert_eq!(got.to_string(), doc.to_string()),
            _ => prop_assert!(false, "ours {:?}, reference {:?}", ours, reference),
        }
    }

    #[test]
    fn merge_agrees_with_the_reference(doc in value(), patch in value()) {
        let limits = Limits::new();
        let mut expected = doc.clone();
        json_patch::merge(&mut expected, &patch);
        let mut got = doc;
        Patch::from_value(PatchKind::Merge, patch, &limits)
            .and_then(|p| p.apply(&mut got, &limits))
            .unwrap();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn apply_restores_the_document_on_an_error_and_apply_or_abandon_leaves_it() {
    use statefile::patch::PatchErrorKind;
    let ops =
        br#"[{"op": "add", "path": "/x", "value": 1}, {"op": "test", "path": "/x", "value": 2}]"#;
    let limits = Limits::new();
    let mut doc = serde_json::json!({});
    let p = Patch::parse(PatchKind::Json, ops, &limits).unwrap();
    assert_eq!(
        p.apply(&mut doc, &limits).unwrap_err().kind(),
        PatchErrorKind::NotApplicable
    );
    assert_eq!(doc, serde_json::json!({}), "restored");
    let p = Patch::parse(PatchKind::Json, ops, &limits).unwrap();
    assert!(p.apply_or_abandon(&mut doc, &limits).is_err());
    assert_eq!(
        doc,
        serde_json::json!({"x": 1}),
        "left as far as it got, for a caller that drops it"
    );
}
