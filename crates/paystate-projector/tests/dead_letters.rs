//! Dead letters re-driven: a record an earlier release could not use is folded again by this one; what
//! folds now is applied and its dead letter removed, what still cannot be used stays, and the partition's
//! position never moves back.

mod common;

use paystate_projector::Projector;
use paystate_store::{Batch, DeadLetter, Store};
use paystate_testkit::scenario::{generate, Scenario};
use paystate_testkit::synth::Rng;

#[test]
fn a_retry_folds_what_this_release_understands_and_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path(), 1).expect("store");
    let mut rng = Rng::new(8);
    let (events, truth) = generate(Scenario::CardSuccess, &mut rng, 1_790_000_000);
    let mut bodies: Vec<Vec<u8>> = events.iter().map(|e| e.body()).collect();
    bodies.push(b"{\"id\": \"evt_broken\", \"object\": \"event\"".to_vec());
    let mut records = common::records(&bodies[..events.len()], 1);
    records.push((
        0,
        paystate_store::LogRecord {
            received_at_ms: 0,
            event_id: "evt_broken".into(),
            event_type: String::new(),
            payment_key: String::new(),
            signature: String::new(),
            body: bodies[events.len()].clone(),
            origin: paystate_store::Origin::Webhook,
        },
    ));
    store.log.append_bulk(&records).expect("append");
    // As an earlier release left it: every record consumed, every one a dead letter.
    let mut batch = Batch::default();
    batch.positions.insert(0, records.len() as u64);
    for (offset, (_, r)) in records.iter().enumerate() {
        batch.dead.push(DeadLetter {
            partition: 0,
            offset: offset as u64,
            event_id: r.event_id.clone(),
            event_type: r.event_type.clone(),
            reason: "unmappable: an earlier release did not know it".into(),
        });
    }
    store.projection.commit(&batch).expect("commit");
    let projector = Projector::new(store.log.clone(), store.projection.clone(), 64);
    assert_eq!(projector.catch_up().expect("project").records, 0, "nothing left to read");
    assert!(store.projection.payment(&truth.id).expect("read").is_none());

    let retried = projector.retry_dead_letters().expect("retry");
    assert_eq!(retried.resolved.len(), events.len());
    assert_eq!(retried.still_dead.len(), 1);
    assert_eq!(retried.still_dead[0].event_id, "evt_broken");
    assert!(
        !retried.still_dead[0].reason.contains("earlier release"),
        "this release's reason: {}",
        retried.still_dead[0].reason
    );
    let p = store.projection.payment(&truth.id).expect("read").expect("applied now");
    assert_eq!(p.state.lifecycle.as_str(), truth.lifecycle);
    assert_eq!(p.state.amount_received, truth.amount_received);
    let left = store.projection.dead_letters().expect("dead letters");
    assert_eq!(left.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["evt_broken"]);
    assert_eq!(store.projection.position(0).expect("position"), records.len() as u64, "the position stays");

    // Again: nothing more resolves, nothing is applied twice.
    let again = projector.retry_dead_letters().expect("retry");
    assert!(again.resolved.is_empty());
    assert_eq!(again.still_dead.len(), 1);
    assert_eq!(
        store.projection.payment(&truth.id).expect("read").expect("payment").state.events_applied,
        truth.events as u64
    );
}
