//! Envelope parsing and mapping: Stripe's example events field by field, the odd shapes Stripe also
//! sends (thin events, expanded references, old `request` strings, unknown types), and fuzz-style
//! properties: any input gives a typed answer, never a panic.

use paystate_core::{IntentStatus, Observation, RefundStatus};
use paystate_stripe::{map_event, parse_event, Mapped, ParsedEvent, WebhookError};
use proptest::prelude::*;
use serde_json::Value;
use std::path::PathBuf;

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/stripe");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned(), std::fs::read(&p).expect("read"))
        })
        .collect();
    out.sort();
    assert_eq!(out.len(), 7, "fixtures missing");
    out
}

/// Every field the envelope exposes equals what a generic JSON reader finds at the same path.
#[test]
fn stripe_examples_parse_field_by_field() {
    for (name, body) in fixtures() {
        let v: Value = serde_json::from_slice(&body).expect("json");
        let ParsedEvent::Snapshot(env) = parse_event(&body).expect("parses") else { panic!("{name}: not a snapshot") };
        let o = &v["data"]["object"];
        assert_eq!(env.id, v["id"].as_str().expect("id"), "{name}");
        assert_eq!(env.event_type, v["type"].as_str().expect("type"));
        assert_eq!(Some(env.created), v["created"].as_i64());
        assert_eq!(Some(env.livemode), v["livemode"].as_bool());
        assert_eq!(env.api_version.as_deref(), v["api_version"].as_str());
        assert_eq!(env.account.as_deref(), v["account"].as_str());
        assert_eq!(env.request_id.as_deref(), v["request"]["id"].as_str());
        assert_eq!(env.idempotency_key.as_deref(), v["request"]["idempotency_key"].as_str());
        assert_eq!(env.has_previous_attributes, v["data"].get("previous_attributes").is_some());
        let f = &env.object;
        assert_eq!(f.id.as_deref(), o["id"].as_str());
        assert_eq!(f.object.as_deref(), o["object"].as_str());
        assert_eq!(f.status.as_deref(), o["status"].as_str());
        assert_eq!(f.amount, o["amount"].as_i64());
        assert_eq!(f.amount_received, o["amount_received"].as_i64());
        assert_eq!(f.amount_captured, o["amount_captured"].as_i64());
        assert_eq!(f.amount_refunded, o["amount_refunded"].as_i64());
        assert_eq!(f.currency.as_deref(), o["currency"].as_str());
        assert_eq!(f.payment_intent.as_ref().map(|e| e.0.as_ref()), o["payment_intent"].as_str());
        assert_eq!(f.charge.as_ref().map(|e| e.0.as_ref()), o["charge"].as_str());
        assert_eq!(f.latest_charge.as_ref().map(|e| e.0.as_ref()), o["latest_charge"].as_str());
        assert_eq!(f.customer.as_ref().map(|e| e.0.as_ref()), o["customer"].as_str());
        let meta = f.metadata.as_ref().map(|m| m.len()).unwrap_or(0);
        assert_eq!(meta, o["metadata"].as_object().map_or(0, |m| m.len()));
        assert_eq!(
            f.last_payment_error.as_ref().and_then(|e| e.code.as_deref()),
            o["last_payment_error"]["code"].as_str(),
        );
        assert!(matches!(map_event(&ParsedEvent::Snapshot(env.clone())), Ok(Mapped::Payment(_))), "{name} maps");
    }
}

#[test]
fn mapping_attaches_objects_to_their_payment() {
    let all: Vec<(String, Mapped)> = fixtures()
        .into_iter()
        .map(|(n, b)| {
            let parsed = parse_event(&b).expect("parses");
            (n, map_event(&parsed).expect("maps"))
        })
        .collect();
    for (name, mapped) in &all {
        let Mapped::Payment(p) = mapped else { panic!("{name}") };
        match (name.as_str(), &p.observation) {
            ("payment_intent.payment_failed.json", Observation::PaymentIntent(i)) => {
                assert_eq!(i.status, IntentStatus::RequiresPaymentMethod);
                let f = i.failure.as_ref().expect("failure");
                assert_eq!(f.code.as_deref(), Some("card_declined"));
                assert_eq!(f.charge.as_deref(), Some("ch_3nnb0cRrdMEDb8DmQhbjfMi8"));
                assert_eq!(p.key.payment.as_str(), "pi_32YeHnnCzrhfj9bYvHVll2K0");
            }
            ("payment_intent.succeeded.json", Observation::PaymentIntent(i)) => {
                assert!(i.failure.is_none());
                assert_eq!(p.key.to_string(), "acct_1O6W0JfkAmRCkjTW/pi_3kV0YPh1YuXOB8QPZ5Lp6EpE");
                assert_eq!(i.metadata.get("order_id").map(String::as_str), Some("ord_255595"));
            }
            ("charge.succeeded.json", Observation::Charge(c)) => {
                assert_eq!(p.key.to_string(), "acct_1PCBFlFNgXwUQcDt/pi_3oRnkVEhvruOCaHkKah258PQ");
                assert!(!c.captured);
            }
            ("charge.refunded.json", Observation::Charge(c)) => {
                assert_eq!(c.refunds.len(), 1);
                assert_eq!(c.refunds[0].status, RefundStatus::Succeeded);
                assert_eq!(c.refunds[0].amount, 14068);
            }
            ("refund.updated.json", Observation::Refund(r)) => {
                assert_eq!(p.key.payment.as_str(), "pi_3lZj99wq478iffSpuS0OhwAE");
                assert_eq!(r.status, RefundStatus::Succeeded);
            }
            ("charge.dispute.created.json", Observation::Dispute(d)) => {
                assert_eq!(p.key.payment.as_str(), "pi_3SPrCwtH2DLSj6h21CrR4AF7");
                assert_eq!(d.amount, 3199);
            }
            ("payment_intent.processing.json", Observation::PaymentIntent(i)) => {
                assert_eq!(i.status, IntentStatus::Processing);
            }
            (n, o) => panic!("{n}: unexpected observation {o:?}"),
        }
    }
}

#[test]
fn refunds_and_disputes_without_intent_attach_to_their_charge() {
    let body = br#"{"id":"evt_1","object":"event","created":1,"livemode":true,"type":"charge.dispute.created",
        "data":{"object":{"id":"du_1","object":"dispute","amount":500,"currency":"usd","status":"needs_response",
        "charge":{"id":"ch_legacy","object":"charge","amount":500},"payment_intent":null}}}"#;
    let Mapped::Payment(p) = map_event(&parse_event(body).expect("parses")).expect("maps") else { panic!() };
    assert_eq!(p.key.payment.as_str(), "ch_legacy", "expanded charge object gives its id");
    assert!(p.livemode);
}

#[test]
fn old_request_string_and_unknown_types() {
    let body = br#"{"id":"evt_2","object":"event","created":1500000000,"type":"customer.created","request":"req_old",
        "livemode":false,"data":{"object":{"id":"cus_1","object":"customer"}}}"#;
    let parsed = parse_event(body).expect("parses");
    let ParsedEvent::Snapshot(env) = &parsed else { panic!() };
    assert_eq!(env.request_id.as_deref(), Some("req_old"));
    assert!(matches!(map_event(&parsed), Ok(Mapped::NotRelevant(_))));
    // A payment type carrying an object of another kind is not folded either.
    let body = br#"{"id":"evt_3","object":"event","created":1,"type":"payment_intent.succeeded","data":{"object":{"id":"x","object":"invoice"}}}"#;
    assert!(matches!(map_event(&parse_event(body).expect("parses")), Ok(Mapped::NotRelevant(_))));
    // A status Stripe may add one day is kept, not refused.
    let body = br#"{"id":"evt_4","object":"event","created":1,"type":"payment_intent.updated","data":{"object":{"id":"pi_1","object":"payment_intent","status":"requires_teleportation","amount":1,"currency":"usd"}}}"#;
    assert!(matches!(map_event(&parse_event(body).expect("parses")), Ok(Mapped::NotRelevant(_))));
    // A payment event that lacks what the projection needs is a typed mapping error (dead letter).
    let body = br#"{"id":"evt_5","object":"event","created":1,"type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","object":"payment_intent","status":"succeeded"}}}"#;
    let err = map_event(&parse_event(body).expect("parses")).expect_err("no amount");
    assert_eq!(err.reason, "object has no amount");
}

#[test]
fn thin_events_parse_into_their_own_variant() {
    let body = br#"{"id":"evt_test_65R9Ijk8SNKZjO7Dv16SDn2Ae6D6SQ","object":"v2.core.event","type":"v1.billing.meter.error_report_triggered",
        "livemode":false,"created":"2024-09-17T06:20:52.246Z","context":"acct_123",
        "related_object":{"id":"mtr_test_61R9IfqmTAMo","type":"billing.meter","url":"/v1/billing/meters/mtr_test_61R9IfqmTAMo"}}"#;
    let parsed = parse_event(body).expect("parses");
    let ParsedEvent::Thin(t) = &parsed else { panic!("not thin") };
    assert_eq!(t.created_unix, Some(1_726_554_052));
    assert_eq!(t.context.as_deref(), Some("acct_123"));
    assert_eq!(t.related_object.as_ref().and_then(|r| r.kind.as_deref()), Some("billing.meter"));
    assert!(matches!(map_event(&parsed), Ok(Mapped::NotRelevant(_))));
}

#[test]
fn rfc3339_offsets_and_garbage() {
    use paystate_stripe::envelope::parse_rfc3339;
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339("2024-02-29T12:00:00+01:00"), Some(1_709_204_400));
    assert_eq!(parse_rfc3339("2024-02-29T12:00:00.123456-00:30"), Some(1_709_209_800));
    for bad in [
        "",
        "2024-13-01T00:00:00Z",
        "2024-01-01",
        "2024-01-01T00:00:00",
        "2024-01-01T00:00:00.Z",
        "x024-01-01T00:00:00Z",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
}

#[test]
fn bad_bodies_get_distinct_errors() {
    assert_eq!(parse_event(b"\xff\xfe{}").err(), Some(WebhookError::BodyNotUtf8));
    assert!(matches!(parse_event(b"{\"id\": "), Err(WebhookError::BodyNotJson(_))));
    assert!(matches!(parse_event(b"not json"), Err(WebhookError::BodyNotJson(_))));
    assert!(matches!(parse_event(b"[1,2]"), Err(WebhookError::NotAnEvent(_))));
    assert!(matches!(
        parse_event(br#"{"id":"evt_1","object":"customer","type":"x","created":1}"#),
        Err(WebhookError::NotAnEvent(_))
    ));
    assert!(matches!(
        parse_event(br#"{"object":"event","type":"x","created":1,"data":{"object":{}}}"#),
        Err(WebhookError::NotAnEvent(_))
    ));
    assert!(matches!(
        parse_event(br#"{"id":"e","object":"event","type":"x","created":"yesterday","data":{"object":{}}}"#),
        Err(WebhookError::NotAnEvent(_))
    ));
    // Error messages never quote the body.
    let e = parse_event(
        br#"{"id":"evt_1","object":"event","type":"x","created":1,"data":{"object":{"amount":"SECRET-VALUE"}}}"#,
    )
    .expect_err("amount must be a number");
    assert!(!e.to_string().contains("SECRET-VALUE"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    /// Arbitrary bytes: a typed answer, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Err(e) = parse_event(&body) {
            prop_assert!(matches!(e, WebhookError::BodyNotUtf8 | WebhookError::BodyNotJson(_) | WebhookError::NotAnEvent(_)));
        }
    }

    /// Any strict prefix of a real event is not JSON; any JSON edit keeps parsing typed.
    #[test]
    fn truncated_and_mutated_events(fixture in 0usize..7, cut in any::<prop::sample::Index>(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let (_, body) = &fixtures()[fixture];
        let trimmed = body.trim_ascii_end();
        let n = cut.index(trimmed.len());
        prop_assert!(matches!(parse_event(&trimmed[..n]), Err(WebhookError::BodyNotJson(_) | WebhookError::BodyNotUtf8)));
        let mut mutated = body.clone();
        let i = pos.index(mutated.len());
        mutated[i] = byte;
        match parse_event(&mutated) {
            Ok(parsed) => { let _ = map_event(&parsed); }
            Err(e) => prop_assert!(matches!(e, WebhookError::BodyNotUtf8 | WebhookError::BodyNotJson(_) | WebhookError::NotAnEvent(_))),
        }
    }
}
