//! Payment snapshots (what a Kafka projector restores from) of this format and of the previous release's.

use paystate_core::PaymentWithHistory;
use paystate_projector::{classify, parse_snapshot, snapshot};
use paystate_testkit::scenario::{generate, Scenario};
use paystate_testkit::synth::Rng;
use serde_json::json;

/// Every scenario's payment, folded in memory.
fn payments() -> Vec<PaymentWithHistory> {
    let mut rng = Rng::new(77);
    Scenario::ALL
        .iter()
        .map(|s| {
            let (events, _) = generate(*s, &mut rng, 1_790_000_000);
            let mut p: Option<PaymentWithHistory> = None;
            for e in events {
                let ev = classify(&e.body()).expect("usable").expect("a payment event");
                p.get_or_insert_with(|| PaymentWithHistory::new(ev.key.clone())).apply(ev).expect("apply");
            }
            p.expect("events")
        })
        .collect()
}

#[test]
fn a_snapshot_restores_the_payment_it_was_taken_of() {
    for p in payments() {
        let v = snapshot(&p.payment, p.events.events()).expect("encode");
        assert_eq!(v["format"], 2);
        assert_eq!(parse_snapshot(&v).expect("decode"), p);
    }
}

/// The previous release published the payment itself, its events (each with the lifecycle after it) inside
/// `state.history`: such a snapshot restores the same payment, its state folded again from those events.
#[test]
fn a_snapshot_of_the_previous_release_restores_the_same_payment() {
    for p in payments() {
        let mut state = serde_json::to_value(&p.payment.state).expect("state");
        let fields = state.as_object_mut().expect("object");
        fields.remove("events_applied");
        fields.remove("last_event");
        fields.insert("history".into(), serde_json::to_value(p.timeline()).expect("history"));
        let old = json!({"state": state, "emitted": p.payment.emitted});
        assert_eq!(parse_snapshot(&old).expect("decode"), p, "{}", p.state().key);
    }
    let newer = json!({"format": 3, "key": "pi_1", "emitted": [], "events": []});
    assert!(parse_snapshot(&newer).expect_err("unknown").contains("unknown snapshot format 3"));
}
