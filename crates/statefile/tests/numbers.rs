//! Numbers are stored exactly as they were given (issue 9 item 8): big integers, numbers
//! beyond a float's range or precision, `1.0` next to `1`. A document another program
//! wrote keeps its numbers through a read-modify-write.
#![cfg(feature = "exact-numbers")]

use serde_json::{Value, json};
use statefile::{Doc, MAX_DEPTH};

/// Each a value a float or a 64-bit integer would change.
const EXACT: [&str; 10] = [
    "123456789012345678901234567890",
    "18446744073709551616",
    "-9223372036854775809",
    "1e-400",
    "1.0",
    "1",
    "-0",
    "0.30000000000000000001",
    "1.5e+400",
    "3.141592653589793238462643383279",
];

// Regression (issue 9): 123456789012345678901234567890 was stored as
// 1.2345678901234568e+29, 18446744073709551616 as a float and 1e-400 as 0.0.
#[test]
fn values_keep_their_numbers_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let doc: Doc<Value> = Doc::open(dir.path().join("n.json")).unwrap();
    let text = format!("[{}]", EXACT.join(", "));
    let value: Value = serde_json::from_str(&text).unwrap();
    doc.write(&value).unwrap();
    let stored = String::from_utf8(std::fs::read(doc.path()).unwrap()).unwrap();
    for n in EXACT {
        assert!(stored.contains(&format!("  {n}")), "{n} not in {stored}");
    }
    assert_eq!(doc.read().unwrap(), value);
    assert_eq!(
        serde_json::to_string(&doc.read().unwrap()).unwrap(),
        text.replace(", ", ",")
    );
}

#[test]
fn a_read_modify_write_keeps_the_numbers_another_program_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.json");
    let written =
        "{\n  \"id\": 123456789012345678901234567890,\n  \"ratio\": 1.0,\n  \"tiny\": 1e-400\n}\n";
    std::fs::write(&path, written).unwrap();
    let doc: Doc<Value> = Doc::open(&path).unwrap();
    doc.update(|v| {
        v["seen"] = json!(true);
        Ok::<(), statefile::Error>(())
    })
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        written.replace("1e-400\n", "1e-400,\n  \"seen\": true\n")
    );
}

// With exact numbers serde_json hands a number to the serializer as a one-field struct;
// the depth check must not count it as a level.
#[test]
fn a_number_at_the_deepest_level_is_still_writable() {
    let dir = tempfile::tempdir().unwrap();
    let doc: Doc<Value> = Doc::open(dir.path().join("deep.json")).unwrap();
    let mut v = json!(
        12345678901234567890123_u128
            .to_string()
            .parse::<serde_json::Number>()
            .unwrap()
    );
    for _ in 0..MAX_DEPTH {
        v = Value::Array(vec![v]);
    }
    doc.write(&v).unwrap();
    assert_eq!(doc.read().unwrap(), v);
}

#[test]
fn typed_documents_read_numbers_as_their_types() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    std::fs::write(
        &path,
        "{\"n\": 18446744073709551615, \"f\": 0.5, \"i\": -3}\n",
    )
    .unwrap();
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct T {
        n: u64,
        f: f64,
        i: i8,
    }
    let doc: Doc<T> = Doc::open(&path).unwrap();
    assert_eq!(
        doc.read().unwrap(),
        T {
            n: u64::MAX,
            f: 0.5,
            i: -3
        }
    );
    std::fs::write(
        &path,
        "{\"n\": 18446744073709551616, \"f\": 0.5, \"i\": -3}\n",
    )
    .unwrap();
    assert_eq!(
        doc.read().unwrap_err().kind(),
        statefile::ErrorKind::Serialize
    );
}

// What `arbitrary_precision` does to equality: `Value`'s `==` compares a number's text,
// so `1` and `1.0` differ (and an update that turns one into the other changes the
// file); JSON Patch's `test` compares values, exactly.
#[test]
fn value_equality_is_by_text_and_the_patch_test_by_value() {
    use statefile::patch::{Limits, Patch, PatchKind};
    let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
    assert_ne!(v("1"), v("1.0"));
    assert_ne!(v("0"), v("-0"));
    assert_eq!(v("1E2"), v("1e+2"), "serde_json spells an exponent one way");
    let test = |doc: &str, n: &str| {
        let ops = format!(r#"[{{"op": "test", "path": "/n", "value": {n}}}]"#);
        let patch = Patch::parse(PatchKind::Json, ops.as_bytes(), &Limits::new()).unwrap();
        patch.apply(&mut v(doc), &Limits::new()).is_ok()
    };
    let big = r#"{"n": 123456789012345678901234567890}"#;
    assert!(test(r#"{"n": 1.0}"#, "1"));
    assert!(test(r#"{"n": -0}"#, "0e5"));
    assert!(test(big, "1.23456789012345678901234567890e29"));
    assert!(!test(big, "123456789012345678901234567891"));
    assert!(
        !test(big, "1.2345678901234568e29"),
        "the float nearest to it is another number"
    );
    assert!(!test(r#"{"n": 1e-400}"#, "0"));
}
