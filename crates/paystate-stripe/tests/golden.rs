//! Golden scenarios: `tests/golden/<api version>/<scenario>.json`, every lifecycle rendered as Stripe
//! renders it at one version of each API era (and across an upgrade), each holding the events in the order
//! Stripe emits them and the expected projection: final fields and the number of actions of each kind whose
//! count does not depend on delivery order. The expectations are the scenario's truth, written by hand from
//! Stripe's documented behaviour and the same at every version. Each file is also delivered in 300 other
//! orders, with duplicates, which must end identically.

use paystate_core::{Action, PaymentEvent, PaymentWithHistory};
use paystate_stripe::{map_event, parse_event, Mapped};
use paystate_testkit::scenario::{Scenario, Truth, CHECKED_ACTIONS};
use paystate_testkit::synth::Rng;
use serde_json::Value;
use std::path::PathBuf;

const ERAS: [&str; 5] =
    ["2020-08-27", "2024-06-20", "2024-06-20..2025-03-31.basil", "2024-12-18.acacia", "2025-10-29.clover"];

fn golden_files() -> Vec<(String, Value)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden");
    let mut files = Vec::new();
    for era in ERAS {
        let dir = root.join(era);
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = entry.expect("dir entry").path();
            if p.extension().is_some_and(|x| x == "json") {
                let name = format!("{era}/{}", p.file_stem().and_then(|n| n.to_str()).unwrap_or_default());
                files.push((name, serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("golden is JSON")));
            }
        }
    }
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

fn apply_all(events: &[PaymentEvent]) -> (PaymentWithHistory, Vec<Action>) {
    let mut p = PaymentWithHistory::new(events[0].key.clone());
    let mut actions = Vec::new();
    for e in events {
        actions.extend(p.apply(e.clone()).expect("one payment").actions);
    }
    // Stripe's time moves on past every grace period.
    let grace = paystate_core::DEFAULT_FAILURE_GRACE_SECS;
    actions.extend(p.payment.advance(events.iter().map(|e| e.created).max().unwrap_or_default() + grace, grace));
    (p, actions)
}

#[test]
fn every_scenario_is_present_for_every_era() {
    let files = golden_files();
    assert_eq!(files.len(), ERAS.len() * Scenario::ALL.len(), "{:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
}

#[test]
fn golden_scenarios_project_as_expected() {
    for (name, doc) in golden_files() {
        let x: Truth = serde_json::from_value(doc["expect"].clone()).expect("expect is a truth");
        let events = events_of(&doc);
        let (p, actions) = apply_all(&events);
        let st = &p.payment.state;
        assert_eq!(st.key.payment.as_str(), x.id, "{name}: id");
        assert_eq!(st.key.account.as_ref().map(|a| a.as_str().to_owned()), x.account, "{name}: account");
        assert_eq!(st.lifecycle.as_str(), x.lifecycle, "{name}: lifecycle");
        assert_eq!(st.status.map(|v| v.as_str()), Some(x.status.as_str()), "{name}: status");
        assert_eq!(st.amount, x.amount, "{name}: amount");
        assert_eq!(st.amount_received, x.amount_received, "{name}: amount_received");
        assert_eq!(st.amount_refunded, x.amount_refunded, "{name}: amount_refunded {:?}", st.refunds);
        assert_eq!(st.amount_refund_pending, x.amount_refund_pending, "{name}: amount_refund_pending");
        assert_eq!(st.amount_disputed, x.amount_disputed, "{name}: amount_disputed");
        assert_eq!(st.amount_lost_to_disputes, x.amount_lost_to_disputes, "{name}: amount_lost_to_disputes");
        assert_eq!(st.early_fraud_warning.as_ref().map(|w| w.id.clone()), x.early_fraud_warning, "{name}");
        assert_eq!(st.disputed, x.disputed, "{name}: disputed");
        let dispute = st.dispute_status.map(|d| serde_json::to_value(d).expect("ser"));
        assert_eq!(dispute.as_ref().and_then(Value::as_str), x.dispute_status.as_deref(), "{name}: dispute_status");
        assert_eq!(st.failure_count, x.failure_count, "{name}: failure_count");
        assert_eq!(st.events_applied, x.events as u64, "{name}: events");
        for kind in CHECKED_ACTIONS {
            let got = actions.iter().filter(|a| a.kind.as_str() == kind).count();
            assert_eq!(got, x.actions.get(kind).copied().unwrap_or(0) as usize, "{name}: {kind}");
        }
        for a in &actions {
            let prefix_ok = match a.kind.as_str() {
                "fulfill_order" | "payment_canceled" => a.subject == st.key.payment.as_str(),
                "notify_payment_failed" => a.subject.starts_with("ch_") || a.subject.starts_with("py_"),
                // A refund known only from its Charge is named `{charge}@{second}/{amount_refunded}`.
                "refund_succeeded" | "refund_failed" => {
                    a.subject.starts_with("re_") || a.subject.starts_with("ch_") || a.subject.starts_with("py_")
                }
                "dispute_opened" | "dispute_closed" => a.subject.starts_with("du_"),
                "request_customer_action" => a.subject.starts_with("pm_"),
                "review_fraud_warning" => a.subject.starts_with("issfr_"),
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
        order.push(events[events.len() / 2].clone());
        order.reverse();
        for round in 0..300 {
            let (p, actions) = apply_all(&order);
            assert_eq!(p.payment.state, reference.payment.state, "{name}: round {round}");
            let ids: std::collections::BTreeSet<_> = actions.iter().map(|a| &a.id).collect();
            assert_eq!(ids.len(), actions.len(), "{name}: an action id twice");
            for i in (1..order.len()).rev() {
                let j = usize::try_from(rng.below(i as u64 + 1)).unwrap_or(0);
                order.swap(i, j);
            }
        }
    }
}
