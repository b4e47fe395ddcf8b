//! Failure notifications wait for a grace period of Stripe time: the projector tells each payment the
//! event time its log partition reached (the largest `created` folded from it), so the same log gives the
//! same notifications whatever the batch sizes, and a decline followed by another attempt that gets
//! somewhere within the grace period is never announced.

mod common;

use paystate_core::DEFAULT_FAILURE_GRACE_SECS as GRACE;
use paystate_projector::replay::{replay_log, ReplayOptions};
use paystate_projector::Projector;
use paystate_store::{Store, Stream};
use paystate_testkit::scenario::{generate, Scenario};
use paystate_testkit::synth::Rng;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;

/// Appends the events, in this order, to a one-partition log.
fn log_of(dir: &std::path::Path, bodies: &[Vec<u8>]) -> Store {
    let store = Store::open(dir, 1).expect("store");
    let records = common::records(bodies, 1);
    store.log.append_bulk(&records).expect("append");
    store
}

fn notifications(store: &Store) -> Vec<(String, String)> {
    store
        .projection
        .read_stream(Stream::Actions, 0, usize::MAX)
        .expect("stream")
        .into_iter()
        .map(|(_, v)| serde_json::from_slice::<Value>(&v).expect("json"))
        .filter(|a| a["kind"] == "notify_payment_failed")
        .map(|a| {
            (
                a["key"]["payment"].as_str().unwrap_or_default().to_owned(),
                a["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_decline_is_announced_once_the_partition_time_passes_its_grace_period() {
    let t0 = 1_790_000_000;
    let mut rng = Rng::new(3);
    let (gave_up, gave_up_truth) = generate(Scenario::DeclineFinal, &mut rng, t0);
    let (retried, retried_truth) = generate(Scenario::DeclineThenSuccess, &mut rng, t0);
    let declines: Vec<i64> = gave_up.iter().filter(|e| e.event_type == "charge.failed").map(|e| e.created).collect();
    let (first_decline, last_decline) = (declines[0], declines[declines.len() - 1]);
    // Another payment's events move the partition's time: first to just before the first decline's grace
    // period ends, then past the last one's.
    let (early, _) = generate(Scenario::CardSuccess, &mut rng, first_decline + GRACE - 5);
    let (late, _) = generate(Scenario::CardSuccess, &mut rng, last_decline + GRACE + 120);
    assert!(early.iter().all(|e| e.created < first_decline + GRACE));

    let first: Vec<Vec<u8>> = gave_up.iter().chain(&retried).chain(&early).map(|e| e.body()).collect();
    let mut ids_by_batch: Vec<BTreeSet<String>> = Vec::new();
    for batch_max in [1, 7, 500] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = log_of(dir.path(), &first);
        let projector = Projector::new(store.log.clone(), store.projection.clone(), batch_max);
        projector.catch_up().expect("project");
        assert_eq!(notifications(&store), [], "batch {batch_max}: announced before the grace period ended");
        let more = common::records(&late.iter().map(|e| e.body()).collect::<Vec<_>>(), 1);
        store.log.append_bulk(&more).expect("append");
        projector.catch_up().expect("project");
        let got = notifications(&store);
        // Both declines of the payment that gave up; none for the one whose second card succeeded.
        assert_eq!(got.len(), 2, "batch {batch_max}: {got:?}");
        assert!(got.iter().all(|(p, _)| *p == gave_up_truth.id), "{got:?}");
        assert!(!got.iter().any(|(p, _)| *p == retried_truth.id));
        // Nothing more on a later pass.
        projector.catch_up().expect("project");
        assert_eq!(notifications(&store).len(), 2);
        ids_by_batch.push(got.into_iter().map(|(_, id)| id).collect());
    }
    assert!(ids_by_batch.windows(2).all(|w| w[0] == w[1]), "the same notifications whatever the batch size");
}

/// A replay of the log announces the same failures as the live projector did: every payment's ledger of
/// emitted actions comes out equal, whatever the replay's memory bound (payments spilled and read back).
#[test]
fn replay_rebuilds_the_live_ledgers() {
    let mut rng = Rng::new(17);
    let mut events = Vec::new();
    for i in 0..60i64 {
        let scenario = *rng.pick(&Scenario::ALL);
        let (evs, _) = generate(scenario, &mut rng, 1_790_000_000 + i * 97);
        events.extend(evs);
    }
    // Stripe-time order, as Stripe delivers.
    events.sort_by_key(|e| e.created);
    let bodies: Vec<Vec<u8>> = events.iter().map(|e| e.body()).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = log_of(dir.path(), &bodies);
    Projector::new(store.log.clone(), store.projection.clone(), 16).catch_up().expect("project");
    let live: Vec<_> = store.projection.all_payments().map(|p| p.expect("payment")).collect();
    assert!(!notifications(&store).is_empty(), "the log has failures to announce");
    for max_payments in [4, 10_000] {
        let out = Store::open_projection(&dir.path().join(format!("out-{max_payments}"))).expect("out");
        let options = ReplayOptions { max_payments, workers: 1, ..ReplayOptions::default() };
        replay_log(&store.log, &out, &options, &AtomicU64::new(0)).expect("replay");
        for p in &live {
            let rebuilt = out.payment(&p.state.key.to_string()).expect("read").expect("replayed");
            assert_eq!(rebuilt.emitted, p.emitted, "{} (max_payments {max_payments})", p.state.key);
        }
    }
}

/// A decline that arrives after its partition's time passed its grace period (delivered days late, or
/// fetched back by `paystate catch-up` after an outage) is announced when it is folded: the partition's
/// time does not move for an old event, yet the failure is due. A replay of the same log announces the same.
#[test]
fn a_decline_arriving_after_its_grace_period_is_announced_at_once() {
    let t0 = 1_790_000_000;
    let mut rng = Rng::new(5);
    let (gave_up, gave_up_truth) = generate(Scenario::DeclineFinal, &mut rng, t0);
    let last_decline =
        gave_up.iter().filter(|e| e.event_type == "charge.failed").map(|e| e.created).max().expect("a decline");
    let (later, _) = generate(Scenario::CardSuccess, &mut rng, last_decline + GRACE + 600);
    // The later payment first: the partition's time is past every grace period before the declines come.
    let bodies: Vec<Vec<u8>> = later.iter().chain(&gave_up).map(|e| e.body()).collect();
    for batch_max in [1, 500] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = log_of(dir.path(), &bodies);
        Projector::new(store.log.clone(), store.projection.clone(), batch_max).catch_up().expect("project");
        let got = notifications(&store);
        assert_eq!(got.len(), gave_up_truth.failure_count as usize, "batch {batch_max}: {got:?}");
        assert!(got.iter().all(|(p, _)| *p == gave_up_truth.id), "{got:?}");

        let out = Store::open_projection(&dir.path().join("out")).expect("out");
        replay_log(&store.log, &out, &ReplayOptions { workers: 1, ..ReplayOptions::default() }, &AtomicU64::new(0))
            .expect("replay");
        let live = store.projection.payment(&gave_up_truth.id).expect("read").expect("live");
        let rebuilt = out.payment(&gave_up_truth.id).expect("read").expect("replayed");
        assert_eq!(rebuilt.emitted, live.emitted, "batch {batch_max}: replay announces what the live projector did");
    }
}
