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

/// A snapshot of this release (format 3) carries the ledger, the event count and the batch's changes; a
/// restore rebuilds the payment from the events the history topic holds for it.
#[test]
fn a_snapshot_carries_the_changes_and_the_payment_folds_back_from_its_history() {
    use paystate_projector::published::whole;
    use paystate_projector::Snapshot;
    use paystate_store::{HistoryChange, HistoryChanges};
    for p in payments() {
        let events = p.events.events().to_vec();
        let mut changes: HistoryChanges =
            events.iter().map(|e| (e.id.clone(), HistoryChange::Applied(e.clone()))).collect();
        // A twin the batch removed is listed by id.
        let removed = events[0].clone();
        changes.insert(paystate_core::EventId::new("evt_removed_twin"), HistoryChange::Removed(removed));
        let v = snapshot(&p.payment, &changes).expect("encode");
        assert_eq!(v["format"], 3);
        assert_eq!(v["events_applied"], events.len());
        match parse_snapshot(&v).expect("decode") {
            Snapshot::Changes { key, emitted, events_applied, applied, removed } => {
                assert_eq!(events_applied, events.len() as u64);
                assert_eq!(applied.len(), events.len());
                assert_eq!(removed, vec![events[0].id.as_str().to_owned()]);
                assert_eq!(whole(key, emitted, applied), p);
            }
            other => panic!("format 3 read as {other:?}"),
        }
    }
}

/// A history message carries the payment key and the event; its key names both.
#[test]
fn history_messages_round_trip() {
    use paystate_projector::published::{history_key, history_message, parse_history_key, parse_history_message};
    for p in payments() {
        let key = p.state().key.to_string();
        for ev in p.events.events() {
            let (k, back) = parse_history_message(&history_message(&key, ev).expect("encode")).expect("decode");
            assert_eq!((k.as_str(), &back), (key.as_str(), ev));
            let hk = history_key(&key, ev.id.as_str());
            assert_eq!(parse_history_key(&hk), Some((key.as_str(), ev.id.as_str())));
        }
    }
    let newer = json!({"format": 2, "key": "pi_1", "event": {}}).to_string();
    assert!(parse_history_message(newer.as_bytes()).expect_err("unknown").contains("unknown history message format 2"));
}

/// The previous release (format 2) published every event of the payment in every update: such a snapshot
/// restores the same payment on its own.
#[test]
fn a_snapshot_of_the_previous_release_restores_the_same_payment() {
    use paystate_projector::Snapshot;
    for p in payments() {
        let v = json!({"format": 2, "key": p.state().key, "emitted": p.payment.emitted, "events": p.events.events()});
        assert_eq!(parse_snapshot(&v).expect("decode"), Snapshot::Whole(Box::new(p)));
    }
}

/// The release before it published the payment itself, its events (each with the lifecycle after it) inside
/// `state.history`: such a snapshot restores the same payment, its state folded again from those events.
#[test]
fn a_snapshot_of_format_1_restores_the_same_payment() {
    use paystate_projector::Snapshot;
    for p in payments() {
        let mut state = serde_json::to_value(&p.payment.state).expect("state");
        let fields = state.as_object_mut().expect("object");
        fields.remove("events_applied");
        fields.remove("last_event");
        fields.insert("history".into(), serde_json::to_value(p.timeline()).expect("history"));
        let old = json!({"state": state, "emitted": p.payment.emitted});
        let key = p.state().key.to_string();
        assert_eq!(parse_snapshot(&old).expect("decode"), Snapshot::Whole(Box::new(p)), "{key}");
    }
    let newer = json!({"format": 4, "key": "pi_1", "emitted": [], "events": []});
    assert!(parse_snapshot(&newer).expect_err("unknown").contains("unknown snapshot format 4"));
}
