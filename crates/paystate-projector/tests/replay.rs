//! Replay is deterministic: for any arrival order, any duplication, any partition count of the log, any
//! number of workers and any memory bound (payments spilled to the output and read back), the rebuilt
//! projection has the digest of the payments folded in Stripe's order, and
//! replay agrees with the live projector on the same log.

mod common;

use paystate_core::PaymentWithHistory;
use paystate_projector::replay::{replay_log, ReplayOptions};
use paystate_projector::{classify, Projector};
use paystate_store::{digest_of, state_hash, Store};
use paystate_testkit::scenario::{generate, Scenario};
use paystate_testkit::synth::Rng;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

/// Bodies of `payments` payments of random scenarios, each payment's events in Stripe's order.
fn bodies(seed: u64, payments: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for _ in 0..payments {
        let scenario = *rng.pick(&Scenario::ALL);
        let (events, _) = generate(scenario, &mut rng, 1_790_000_000);
        out.extend(events.iter().map(|e| e.body()));
    }
    out
}

/// The digest of the payments folded in the given order by the core alone.
fn expected_digest(bodies: &[Vec<u8>]) -> String {
    let mut payments: BTreeMap<String, PaymentWithHistory> = BTreeMap::new();
    for b in bodies {
        if let Ok(Some(ev)) = classify(b) {
            let p = payments.entry(ev.key.to_string()).or_insert_with(|| PaymentWithHistory::new(ev.key.clone()));
            p.apply(ev).expect("apply");
        }
    }
    let hashes: Vec<_> =
        payments.iter().map(|(k, p)| (k.as_bytes().to_vec(), state_hash(p.state()).expect("hash"))).collect();
    digest_of(&hashes)
}

fn write_log(dir: &std::path::Path, bodies: &[Vec<u8>], partitions: u32) -> Store {
    let store = Store::open(dir, partitions).expect("store");
    let records = common::records(bodies, partitions);
    store.log.append_bulk(&records).expect("append");
    store
}

/// One case: the events of 12 payments, shuffled, some twice, in a log of `partitions` partitions, replayed
/// by `workers` workers keeping at most `max_payments` payments of a partition in memory.
fn check(
    seed: u64,
    shuffle: u64,
    dup_every: usize,
    partitions: u32,
    workers: usize,
    max_payments: usize,
) -> Result<(), TestCaseError> {
    let ordered = bodies(seed, 12);
    let want = expected_digest(&ordered);
    // Deliver in a shuffled order, with some events twice.
    let mut delivered = ordered.clone();
    delivered.extend(ordered.iter().step_by(dup_every).cloned());
    let mut rng = Rng::new(shuffle);
    for i in (1..delivered.len()).rev() {
        let j = usize::try_from(rng.below(i as u64 + 1)).expect("index");
        delivered.swap(i, j);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = write_log(&dir.path().join("log"), &delivered, partitions);
    let out = Store::open_projection(&dir.path().join("out")).expect("out");
    let options = ReplayOptions { until: None, workers, max_payments, ..ReplayOptions::default() };
    let mut summary = replay_log(&store.log, &out, &options, &AtomicU64::new(0)).expect("replay");
    prop_assert_eq!(summary.read, delivered.len() as u64);
    prop_assert_eq!(summary.payments, 12);
    let digest = summary.digest();
    prop_assert_eq!(&digest, &want);
    prop_assert_eq!(out.digest().expect("digest").0, want.clone(), "the stored projection hashes the same");

    // The live projector over the same log reaches the same digest.
    Projector::new(store.log.clone(), store.projection.clone(), 7).catch_up().expect("project");
    prop_assert_eq!(store.projection.digest().expect("digest").0, want);
    Ok(())
}

/// Each case creates three sled databases (~15 ms), so this property runs a fixed 200 cases rather than
/// `PROPTEST_CASES` (which the `proptest!` macro would apply: 10,000 cases in CI, 150 s).
#[test]
fn replay_digest_depends_only_on_the_set_of_events() {
    let mut runner = TestRunner::new(Config { cases: 200, failure_persistence: None, ..Config::default() });
    // max_payments from 2 (payments spilled and read back all the time) to more than there are.
    let strategy = (
        0u64..1_000_000,
        any::<u64>(),
        2usize..9,
        prop::sample::select(vec![1u32, 3, 8]),
        1usize..4,
        prop::sample::select(vec![2usize, 3, 5, 100]),
    );
    let result = runner.run(&strategy, |(seed, shuffle, dup_every, partitions, workers, max_payments)| {
        check(seed, shuffle, dup_every, partitions, workers, max_payments)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
