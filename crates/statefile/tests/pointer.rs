//! JSON Pointers are untrusted input (query parameters, arguments, paths inside patches):
//! properties over generated input. Parsing never panics, `format` and `parse` are
//! inverses, and no pointer operation panics on any document.

use proptest::prelude::*;
use serde_json::{Value, json};
use statefile::pointer::{self, MAX_TOKENS, PointerError};

/// Strings rich in the characters that matter to the syntax: `/`, `~`, `0`, `1`, digits,
/// `-`, and some multibyte text.
fn pointerish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just('/'),
            Just('~'),
            Just('0'),
            Just('1'),
            Just('-'),
            Just('a'),
            Just('é'),
            Just('\u{1F600}'),
            any::<char>(),
        ],
        0..80,
    )
    .prop_map(|c| c.into_iter().collect())
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z~/0-9-]{0,6}",
        any::<String>(),
        (0usize..5).prop_map(|i| i.to_string()),
        Just("-".to_string()),
    ]
}

/// Small documents whose keys and indices the generated tokens can hit.
fn document() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z]{0,4}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::vec(("[a-z~/0-9-]{0,3}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn parse_never_panics_and_round_trips_where_it_succeeds(s in pointerish()) {
        match pointer::parse(&s) {
            Ok(tokens) => {
                prop_assert!(tokens.len() <= MAX_TOKENS);
                prop_assert_eq!(pointer::format(&tokens), s);
            }
            Err(e) => {
                prop_assert!(matches!(e, PointerError::Syntax(_)));
                prop_assert!(e.to_string().len() < 1_000, "message not bounded: {}", e);
            }
        }
    }

    #[test]
    fn any_string_parses_or_is_a_syntax_error(s in any::<String>()) {
        match pointer::parse(&s) {
            Ok(tokens) => prop_assert_eq!(pointer::format(&tokens), s),
            Err(e) => prop_assert!(matches!(e, PointerError::Syntax(_))),
        }
    }

    #[test]
    fn format_then_parse_is_the_identity(tokens in prop::collection::vec(token(), 0..=MAX_TOKENS / 4)) {
        let text = pointer::format(&tokens);
        prop_assert_eq!(pointer::parse(&text).unwrap(), tokens);
    }

    #[test]
    fn one_token_too_many_is_refused(
        tokens in prop::collection::vec("[a-z~/0-9-]{0,2}", MAX_TOKENS + 1..MAX_TOKENS + 5),
    ) {
        let text = pointer::format(&tokens);
        prop_assert!(matches!(pointer::parse(&text), Err(PointerError::Syntax(_))));
    }

    #[test]
    fn operations_never_panic_and_get_finds_what_set_put(
        doc in document(),
        tokens in prop::collection::vec(token(), 0..8),
    ) {
        let _ = pointer::get(&doc, &tokens);
        let mut removed = doc.clone();
        if let Ok(old) = pointer::remove(&mut removed, &tokens) {
            prop_assert_eq!(pointer::get(&doc, &tokens).ok(), Some(&old));
        }
        let mut appended = doc.clone();
        if let Ok(i) = pointer::append(&mut appended, &tokens, json!("new")) {
            let mut at = tokens.clone();
            at.push(i.to_string());
            prop_assert_eq!(pointer::get(&appended, &at).ok(), Some(&json!("new")));
        }
        let mut set = doc.clone();
        if pointer::set(&mut set, &tokens, json!("new")).is_ok() && tokens.last().is_none_or(|t| t != "-") {
            prop_assert_eq!(pointer::get(&set, &tokens).ok(), Some(&json!("new")));
        }
    }
}
