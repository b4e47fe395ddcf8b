//! The event parser against serde_json, on generated input.
//!
//! - Validity: for any text (valid documents and random mutations of them), the parser says "not JSON"
//!   exactly when serde_json does.
//! - Extraction: for generated events whose known fields are surrounded by arbitrary unknown JSON, every
//!   field the parser returns equals what serde_json finds at the same path, escapes included.

use paystate_stripe::{parse_event, ParsedEvent, WebhookError};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_]{0,12}",
        "[ -~]{0,16}",                         // printable ASCII, quotes and backslashes included
        "[\\u{0}-\\u{1f}\"\\\\é€😀a-z]{0,10}", // control characters, escapes, multi-byte
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An event with all known fields typed right, plus unknown members everywhere.
fn event() -> impl Strategy<Value = Value> {
    (
        text(),
        text(),
        any::<i64>(),
        proptest::option::of(text()),
        proptest::collection::btree_map(text(), text(), 0..4),
        proptest::collection::btree_map("x_[a-z]{1,6}", json_value(), 0..4),
        proptest::collection::btree_map("y_[a-z]{1,6}", json_value(), 0..4),
        proptest::option::of(any::<i64>()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(id, ty, created, account, metadata, extra_top, extra_obj, amount, expanded, prev)| {
            let mut obj = Map::new();
            obj.insert("id".into(), json!(format!("pi_{id}")));
            obj.insert("object".into(), json!("payment_intent"));
            obj.insert("amount".into(), json!(amount));
            obj.insert("metadata".into(), json!(metadata));
            obj.insert(
                "customer".into(),
                if expanded {
                    json!({"object": "customer", "id": format!("cus_{id}"), "deep": [1, {"id": "no"}]})
                } else {
                    json!(format!("cus_{id}"))
                },
            );
            obj.extend(extra_obj);
            let mut data = Map::new();
            data.insert("object".into(), Value::Object(obj));
            if prev {
                data.insert("previous_attributes".into(), json!({"status": "processing"}));
            }
            let mut ev = Map::new();
            ev.insert("id".into(), json!(format!("evt_{id}")));
            ev.insert("object".into(), json!("event"));
            ev.insert("type".into(), json!(ty));
            ev.insert("created".into(), json!(created));
            ev.insert("account".into(), json!(account));
            ev.insert("data".into(), Value::Object(data));
            ev.extend(extra_top);
            Value::Object(ev)
        })
}

fn serde_says_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    #[test]
    fn fields_equal_serde_json(ev in event(), pretty in any::<bool>()) {
        let body = if pretty { serde_json::to_vec_pretty(&ev) } else { serde_json::to_vec(&ev) }.expect("serialize");
        let parsed = parse_event(&body);
        let ParsedEvent::Snapshot(env) = parsed.expect("a well-typed event parses") else { panic!("not a snapshot") };
        let o = &ev["data"]["object"];
        prop_assert_eq!(env.id.as_ref(), ev["id"].as_str().expect("id"));
        prop_assert_eq!(env.event_type.as_ref(), ev["type"].as_str().expect("type"));
        prop_assert_eq!(Some(env.created), ev["created"].as_i64());
        prop_assert_eq!(env.account.as_deref(), ev["account"].as_str());
        prop_assert_eq!(env.has_previous_attributes, ev["data"].get("previous_attributes").is_some());
        prop_assert_eq!(env.object.id.as_deref(), o["id"].as_str());
        prop_assert_eq!(env.object.amount, o["amount"].as_i64());
        prop_assert_eq!(env.object.customer.as_ref().map(|c| c.0.as_ref()), o["customer"].as_str().or(o["customer"]["id"].as_str()));
        let meta = env.object.metadata.expect("metadata");
        let want = o["metadata"].as_object().expect("object");
        prop_assert_eq!(meta.len(), want.len());
        for (k, v) in want {
            prop_assert_eq!(meta.get(k.as_str()).map(|c| c.as_ref()), v.as_str());
        }
    }

    #[test]
    fn any_json_is_never_called_not_json(v in json_value()) {
        let body = serde_json::to_vec(&v).expect("serialize");
        let got = parse_event(&body);
        prop_assert!(!matches!(got, Err(WebhookError::BodyNotJson(_))), "{:?}", got);
    }

    #[test]
    fn validity_matches_serde_json_under_mutation(
        ev in event(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, prop::sample::select(&b"{}[]\",:\\0-1.eEtfn u\n"[..])), 1..4),
    ) {
        let mut bytes = serde_json::to_vec_pretty(&ev).expect("serialize");
        for (at, op, byte) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match op {
                0 => { bytes.remove(i); }
                1 => bytes.insert(i, byte),
                _ => bytes[i] = byte,
            }
        }
        let Ok(text) = std::str::from_utf8(&bytes) else { return Ok(()) };
        let ours = parse_event(text.as_bytes());
        let ours_json = !matches!(ours, Err(WebhookError::BodyNotJson(_)));
        prop_assert_eq!(ours_json, serde_says_json(text), "{:?} on {}", ours, text);
    }
}

#[test]
fn grammar_corner_cases_agree_with_serde_json() {
    let wrap = |v: &str| {
        format!(r#"{{"id":"evt_1","object":"event","type":"t","created":1,"data":{{"object":{{}}}},"x":{v}}}"#)
    };
    let values = [
        "0",
        "-0",
        "01",
        "1.",
        "1.5",
        ".5",
        "1e5",
        "1E+5",
        "1e",
        "-",
        "--1",
        "1e400",
        "tru",
        "true",
        "nul",
        "null",
        "\"\\u00e9\"",
        "\"\\u00g9\"",
        "\"\\x\"",
        "\"a\tb\"",
        "\"\\ud83d\\ude00\"",
        "[1,]",
        "[,1]",
        "{\"a\":1,}",
        "{\"a\"1}",
        "[[[[]]]]",
        "{\"a\":{\"b\":[null,true,false,\"s\",-1.25e-3]}}",
        "\"unterminated",
    ];
    for v in values {
        let doc = wrap(v);
        let ours = !matches!(parse_event(doc.as_bytes()), Err(WebhookError::BodyNotJson(_)));
        assert_eq!(ours, serde_says_json(&doc), "value {v}");
    }
    for doc in ["", " ", "{", "}", "{} {}", "{}x", "\u{feff}{}", "[]", "null"] {
        let ours = !matches!(parse_event(doc.as_bytes()), Err(WebhookError::BodyNotJson(_)));
        assert_eq!(ours, serde_says_json(doc), "document {doc:?}");
    }
    // Nesting: up to 128 levels in all, as serde_json allows when it builds values. Deeper documents are
    // refused (serde_json only accepts them when it skips them); no Stripe event comes close.
    let deep = |n: usize| wrap(&format!("{}{}", "[".repeat(n), "]".repeat(n)));
    for n in [100, 126, 127] {
        let doc = deep(n);
        assert!(parse_event(doc.as_bytes()).is_ok(), "depth {n}");
        assert!(serde_says_json(&doc));
    }
    for n in [128, 129, 10_000] {
        assert!(matches!(parse_event(deep(n).as_bytes()), Err(WebhookError::BodyNotJson(_))), "depth {n}");
    }
}
