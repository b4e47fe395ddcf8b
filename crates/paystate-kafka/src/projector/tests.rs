//! A member whose publish round failed writes nothing more, whichever thread asks; restarted, it publishes
//! the rest once. On librdkafka's in-process mock cluster.

use super::*;
use paystate_testkit::scenario::{generate, Scenario};
use paystate_testkit::synth::Rng;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const PARTITIONS: u32 = 4;

/// The raw records of every scenario, by raw partition, with their offsets.
fn raw_records() -> BTreeMap<u32, Vec<(u64, LogRecord)>> {
    let mut rng = Rng::new(7);
    let mut out: BTreeMap<u32, Vec<(u64, LogRecord)>> = BTreeMap::new();
    for (i, scenario) in Scenario::ALL.iter().enumerate() {
        let (events, _) = generate(*scenario, &mut rng, 1_780_000_000 + i as i64);
        for ev in events {
            let body = ev.body();
            let parsed = paystate_stripe::parse_event(&body).expect("parse");
            let (partition, record) = paystate_ingress::log_record(&parsed, body.clone(), String::new(), 0, PARTITIONS);
            let list = out.entry(partition).or_default();
            list.push((list.len() as u64, record));
        }
    }
    out
}

/// The ids in the actions topic, all partitions (read committed), sorted.
fn action_ids_in_topic(cfg: &KafkaConfig) -> Vec<String> {
    let reader = reader(cfg).expect("reader");
    let from: Vec<(u32, u64)> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let mut ids = Vec::new();
    read_partitions(&reader, &cfg.actions_topic, &from, |_, m| {
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default()).expect("json");
        ids.push(v["id"].as_str().expect("id").to_owned());
        Ok(())
    })
    .expect("read the actions topic");
    ids.sort();
    ids
}

fn setup() -> (MockCluster<'static, rdkafka::producer::DefaultProducerContext>, KafkaConfig, tokio::runtime::Runtime) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let cfg = KafkaConfig::new(cluster.bootstrap_servers());
    for t in [&cfg.raw_topic, &cfg.payments_topic, &cfg.actions_topic, &cfg.history_topic] {
        cluster.create_topic(t, PARTITIONS as i32, 1).expect("topic");
    }
    (cluster, cfg, tokio::runtime::Runtime::new().expect("runtime"))
}

/// Appends every scenario's records to the raw topic and folds them into `projection` as a member would
/// (the outbox fills); returns the actions derived.
fn append_and_fold(cfg: &KafkaConfig, runtime: &tokio::runtime::Runtime, projection: &Projection) -> u64 {
    use paystate_store::LogSink;
    let sink = crate::KafkaSink::new(cfg, Duration::from_secs(10)).expect("sink");
    let records = raw_records();
    for (p, list) in &records {
        for (offset, record) in list {
            let at = runtime.block_on(LogSink::append(&sink, *p, record)).expect("append");
            assert_eq!((at.partition, at.offset), (*p, *offset), "raw offsets from 0");
        }
    }
    let mut folder = Folder::new(projection, true);
    for (p, list) in &records {
        folder.add(*p, list).expect("add");
    }
    let actions = folder.commit().expect("commit").actions;
    assert!(actions > 0, "the scenarios derive actions");
    actions
}

/// The race that put one publish round into the topics twice: the publisher thread's round committed some
/// partitions' transactions, failed on another's, while the consumer thread waited in the revocation
/// callback to publish "everything committed" — which it then did, again, from the unmoved cursors. Here
/// the round fails on an injected `EndTxn` error, and the revocation's round comes after it.
#[test]
fn a_round_that_failed_half_way_is_not_published_again_by_the_member() {
    let (cluster, cfg, runtime) = setup();
    let dir = tempfile::tempdir().expect("dir");
    let projection = paystate_store::Store::open_projection(dir.path()).expect("projection");
    let derived = append_and_fold(&cfg, &runtime, &projection);
    let shared = Shared::new(&cfg, projection.clone(), PARTITIONS, "g", runtime.handle().clone());
    let all: Vec<u32> = (0..PARTITIONS).collect();
    assert_eq!(shared.take_partitions(&all).expect("take").len(), all.len(), "every partition taken");

    // The partitions' transactions run at once; the first commit to reach the coordinator fails.
    cluster.request_errors(RDKafkaApiKey::EndTxn, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_TXN_STATE]);
    let err = shared.publish().expect_err("the injected error fails the round");
    assert!(err.to_string().contains("Failed to end transaction"), "{err}");
    assert!(shared.failed.load(Ordering::Acquire), "a failed round fails the member");
    // The mock cluster writes no transaction markers: a read_committed reader sees every record produced,
    // the failed partition's too. So this counts what the round produced: each derived action once.
    let produced = action_ids_in_topic(&cfg);
    assert_eq!(produced.len() as u64, derived, "the round produced every action once");

    shared.publish().expect("a failed member's round does nothing");
    assert_eq!(action_ids_in_topic(&cfg), produced, "the failed member published again");
    for stream in [Stream::Actions, Stream::Payments] {
        assert_eq!(projection.published(stream).expect("cursor"), 0, "{stream:?}: nothing marked published");
    }
    lock(&shared.producers).clear();
    assert_eq!(shared.take_partitions(&[0]).expect("take"), Vec::new(), "a failed member took a partition");
    assert!(lock(&shared.producers).is_empty(), "a failed member made a producer (fencing the owner)");
    drop(shared);

    // Restarted on the same store, the member takes every partition again (each is behind what the topics
    // hold, so restored from them and its stale outbox entries dropped) and publishes no action twice.
    let opts = ProjectorOptions { group: "g".into(), partitions: Some(PARTITIONS), ..ProjectorOptions::default() };
    let restarted = KafkaProjector::new(&cfg, projection.clone(), opts, runtime.handle().clone()).expect("projector");
    let ends = restarted.ends();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Every partition holds records: an end of 0 is one not read yet.
    let drained = || (0..PARTITIONS).all(|q| ends.end(q) > 0) && projection.drained(&*ends).expect("drained");
    while !drained() {
        restarted.step().expect("step");
        assert!(Instant::now() < deadline, "the restarted member did not drain the raw topic in 60 s");
    }
    restarted.run(&AtomicBool::new(true)).expect("final publish");
    let ids = action_ids_in_topic(&cfg);
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (derived as usize, derived as usize), "each derived action once");
}
