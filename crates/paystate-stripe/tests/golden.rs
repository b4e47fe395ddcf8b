//! Golden scenarios: `tests/golden/*.json`, one file per lifecycle, each holding the events as Stripe
//! emits them and the expected projection (final fields, lifecycle after each event in causal order,
//! actions in delivery order). Each is also delivered in many other orders, which must end identically.

use paystate_core::{Lifecycle, Payment, PaymentEvent};
use paystate_stripe::synth::Rng;
use paystate_stripe::{map_event, parse_event, Mapped};
use serde_json::Value;
use std::path::PathBuf;

fn golden_files() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden");
    let mut files: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("tests/golden exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_stem().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            (name, serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("golden is JSON"))
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// Each event goes through the real path: bytes, envelope, mapping.
fn events_of(doc: &Value) -> Vec<PaymentEvent> {
    doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let body = serde_json::to_vec_pretty(e).expect("serialize");
            match map_event(&parse_event(&body).expect("parses")).expect("maps") {
                Mapped::Payment(p) => p,
                Mapped::NotRelevant(why) => panic!("golden event not relevant: {why}"),
            }
        })
        .collect()
}

fn apply_all(events: &[PaymentEvent]) -> (Payment, Vec<paystate_core::Action>) {
    let mut p = Payment::new(events[0].key.clone());
    let mut actions = Vec::new();
    for e in events {
        actions.extend(p.apply(e.clone()).expect("one payment").actions);
    }
    (p, actions)
}

fn s(v: &Value) -> Option<&str> {
    v.as_str()
}

#[test]
fn all_eighteen_scenarios_are_present() {
    let names: Vec<String> = golden_files().into_iter().map(|f| f.0).collect();
    assert_eq!(names.len(), 18, "{names:?}");
}

#[test]
fn golden_scenarios_project_as_expected() {
    for (name, doc) in golden_files() {
        let x = &doc["expect"];
        let events = events_of(&doc);
        let (p, actions) = apply_all(&events);
        let st = &p.state;
        assert_eq!(Some(st.key.payment.as_str()), s(&x["id"]), "{name}: id");
        assert_eq!(st.key.account.as_ref().map(|a| a.as_str()), s(&x["account"]), "{name}: account");
        assert_eq!(Some(st.lifecycle.as_str()), s(&x["lifecycle"]), "{name}: lifecycle");
        assert_eq!(st.status.map(|v| v.as_str()), s(&x["status"]), "{name}: status");
        assert_eq!(Some(st.amount), x["amount"].as_i64(), "{name}: amount");
        assert_eq!(Some(st.amount_received), x["amount_received"].as_i64(), "{name}: amount_received");
        assert_eq!(Some(st.amount_refunded), x["amount_refunded"].as_i64(), "{name}: amount_refunded");
        assert_eq!(Some(st.disputed), x["disputed"].as_bool(), "{name}: disputed");
        let dispute = st.dispute_status.map(|d| serde_json::to_value(d).expect("ser"));
        assert_eq!(dispute.as_ref().and_then(Value::as_str), s(&x["dispute_status"]), "{name}: dispute_status");
        assert_eq!(Some(u64::from(st.failure_count)), x["failure_count"].as_u64(), "{name}: failure_count");

        let history: Vec<&str> = st.history.iter().map(|h| h.lifecycle.as_str()).collect();
        let want: Vec<&str> = x["history"].as_array().expect("history").iter().filter_map(Value::as_str).collect();
        assert_eq!(history, want, "{name}: history lifecycles");

        let kinds: Vec<&str> = actions.iter().map(|a| a.kind.as_str()).collect();
        let want: Vec<&str> = x["actions"].as_array().expect("actions").iter().filter_map(Value::as_str).collect();
        assert_eq!(kinds, want, "{name}: actions");
        for a in &actions {
            let prefix_ok = match a.kind.as_str() {
                "fulfill_order" | "payment_canceled" => a.subject == st.key.payment.as_str(),
                "notify_payment_failed" => a.subject.starts_with("ch_") || a.subject.starts_with("py_"),
                "refund_succeeded" | "refund_failed" => a.subject.starts_with("re_"),
                "dispute_opened" | "dispute_closed" => a.subject.starts_with("du_"),
                "request_customer_action" => a.subject.starts_with("pm_"),
                _ => false,
            };
            assert!(prefix_ok, "{name}: {} about {}", a.kind.as_str(), a.subject);
            assert_eq!(a.metadata.contains_key("order_id"), !st.metadata.is_empty(), "{name}: order id travels");
            assert_eq!(a.currency, st.currency);
        }
    }
}

#[test]
fn golden_scenarios_converge_in_any_order() {
    for (name, doc) in golden_files() {
        let events = events_of(&doc);
        let (reference, _) = apply_all(&events);
        let mut rng = Rng::new(name.len() as u64);
        let mut order = events.clone();
        order.reverse();
        for round in 0..500 {
            let (p, actions) = apply_all(&order);
            assert_eq!(p.state, reference.state, "{name}: round {round}");
            let fulfil = actions.iter().filter(|a| a.kind.as_str() == "fulfill_order").count();
            let paid =
                matches!(p.state.lifecycle, Lifecycle::Succeeded | Lifecycle::PartiallyRefunded | Lifecycle::Refunded);
            assert_eq!(fulfil, usize::from(paid), "{name}");
            for i in (1..order.len()).rev() {
                let j = usize::try_from(rng.below(i as u64 + 1)).unwrap_or(0);
                order.swap(i, j);
            }
        }
    }
}
