//! The published records' formats: what this release writes carries its format number, and what the
//! previous release wrote (no `format` field) is still read.

use paystate_core::{ActionKind, Payment, PaymentKey};
use paystate_projector::published::{self, parse_action};
use serde_json::Value;

/// An action exactly as the previous release published it (written by hand from its field list): no
/// `format` field.
const PREVIOUS_RELEASE_ACTION: &str = r#"{"id":"fulfill_order:pi_3Prev:pi_3Prev","kind":"fulfill_order",
"key":{"account":null,"payment":"pi_3Prev"},"subject":"pi_3Prev","amount":2000,"currency":"usd",
"customer":"cus_Prev","metadata":{"order_id":"6735"},"caused_by":"evt_3Prev","event_created":1719000000,
"livemode":false}"#;

#[test]
fn an_action_of_the_previous_release_is_read_and_this_release_writes_format_1() {
    let old = parse_action(PREVIOUS_RELEASE_ACTION.as_bytes()).expect("previous release's action");
    assert_eq!(old.kind, ActionKind::FulfillOrder);
    assert_eq!(old.amount, 2000);
    assert_eq!(old.key.payment.as_str(), "pi_3Prev");
    assert_eq!(old.metadata.get("order_id").map(String::as_str), Some("6735"));

    let written = published::action(&old).expect("encode");
    let v: Value = serde_json::from_slice(&written).expect("json");
    assert_eq!(v["format"], 1, "{v}");
    assert_eq!(v["kind"], "fulfill_order", "{v}");
    assert_eq!(parse_action(&written).expect("round trip"), old);

    let mut newer: Value = serde_json::from_str(PREVIOUS_RELEASE_ACTION).expect("json");
    newer["format"] = 9.into();
    let err = parse_action(newer.to_string().as_bytes()).expect_err("a newer format is refused");
    assert!(err.contains("unknown action format 9"), "{err}");
}

#[test]
fn a_payment_update_carries_its_format_position_and_summary() {
    let key = PaymentKey::parse("acct_1X/pi_3Upd").expect("key");
    let p = Payment::new(key.clone());
    let bytes = published::update(&key.to_string(), 3, 41, &p, None).expect("encode");
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(v["format"], 1, "{v}");
    assert_eq!(v["key"], "acct_1X/pi_3Upd", "{v}");
    assert_eq!((v["partition"].as_u64(), v["offset"].as_u64()), (Some(3), Some(41)), "{v}");
    assert_eq!(v["payment"]["id"], "pi_3Upd", "{v}");
    assert_eq!(v["payment"]["account"], "acct_1X", "{v}");
    assert!(v.get("snapshot").is_none(), "no snapshot on the embedded streams: {v}");
}
