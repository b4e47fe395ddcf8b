//! Fault injection with librdkafka's in-process mock cluster (a real Kafka-protocol implementation):
//! the ingress answers 200 only for writes the broker confirmed, 503 while it cannot confirm them, and
//! recovers by itself; the projector applies every record once whatever the offset-commit errors.

use paystate_ingress::{metrics::Metrics, public_router, Ingress};
use paystate_kafka::{KafkaConfig, KafkaProjector, KafkaSink, ProjectorOptions};
use paystate_store::{LogSink, Store};
use paystate_stripe::{Webhook, WebhookSecret};
use paystate_testkit::scenario::{generate, Scenario};
use paystate_testkit::synth::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "whsec_kafka_mock_secret";
const PARTITIONS: u32 = 4;

fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()).expect("time")
}

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let c = MockCluster::new(3).expect("mock cluster");
    for t in ["stripe.events", "paystate.payments", "paystate.actions", "paystate.history"] {
        c.create_topic(t, PARTITIONS as i32, 3).expect("topic");
    }
    c
}

async fn ingress(cfg: &KafkaConfig, timeout: Duration) -> (String, Arc<Metrics>, KafkaSink) {
    let sink = KafkaSink::new(cfg, timeout).expect("sink");
    let metrics = Arc::new(Metrics::default());
    let webhook = Webhook::new(vec![WebhookSecret::new(SECRET).expect("secret")], 300).expect("webhook");
    let ing = Ingress {
        webhook,
        mode: None,
        body_limit_bytes: 1 << 20,
        partitions: paystate_ingress::Partitions::fixed(PARTITIONS),
        sink: Arc::new(sink.clone()),
        metrics: Arc::clone(&metrics),
        limits: Default::default(),
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/webhooks/stripe", l.local_addr().expect("addr"));
    tokio::spawn(paystate_ingress::serve(l, public_router(ing), std::future::pending()));
    (url, metrics, sink)
}

async fn post(client: &reqwest::Client, url: &str, body: &[u8]) -> u16 {
    let sig = WebhookSecret::new(SECRET).expect("secret").header(now(), body);
    client
        .post(url)
        .header("content-type", "application/json")
        .header("stripe-signature", sig)
        .body(body.to_vec())
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

/// Posts `body` (freshly signed each time) until it is answered 200 or 30 s pass; returns the last status
/// and how many 503s came before it.
async fn post_until_ok(client: &reqwest::Client, url: &str, body: &[u8]) -> (u16, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    loop {
        let status = post(client, url, body).await;
        if status == 200 || Instant::now() > deadline {
            return (status, refused);
        }
        refused += usize::from(status == 503);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One message: (partition, offset, key, payload, header names).
type Msg = (i32, i64, Option<Vec<u8>>, Vec<u8>, Vec<String>);

/// Every message of `topic`.
fn read_topic(cfg: &KafkaConfig, topic: &str) -> Vec<Msg> {
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        // Committed transactions only; their commit markers end a partition, so its end is an event.
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut out = Vec::new();
    for p in 0..PARTITIONS as i32 {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks");
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(low)).expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let m = match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => m,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                _ => continue,
            };
            {
                let names = m.headers().map(|h| h.iter().map(|x| x.key.to_owned()).collect()).unwrap_or_default();
                out.push((
                    m.partition(),
                    m.offset(),
                    m.key().map(<[u8]>::to_vec),
                    m.payload().unwrap_or_default().to_vec(),
                    names,
                ));
                if m.offset() + 1 >= high {
                    break;
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_confirms_writes_and_refuses_while_the_leader_is_down() {
    let c = cluster();
    let cfg = KafkaConfig::new(c.bootstrap_servers());
    let (url, metrics, _) = ingress(&cfg, Duration::from_millis(1500)).await;
    let client = reqwest::Client::new();
    let mut rng = Rng::new(7);
    let (events, _) = generate(Scenario::CardSuccess, &mut rng, now() - 60);

    // Healthy: 200, and the raw topic holds the body byte for byte, keyed by payment, with the headers.
    let body = events[0].body();
    assert_eq!(post(&client, &url, &body).await, 200);
    let msgs = read_topic(&cfg, "stripe.events");
    assert_eq!(msgs.len(), 1);
    let (_, _, key, payload, headers) = &msgs[0];
    assert_eq!(payload, &body, "the raw body is stored unchanged");
    assert!(key.as_deref().is_some_and(|k| k.starts_with(b"pi_")), "keyed by payment key: {key:?}");
    for h in ["paystate-received-at", "stripe-event-id", "stripe-event-type", "stripe-signature"] {
        assert!(headers.iter().any(|x| x == h), "header {h} in {headers:?}");
    }

    // Every partition leader down: no write can be confirmed, so 503 and never 200.
    for broker in 1..=3 {
        c.broker_down(broker).expect("down");
    }
    let started = Instant::now();
    assert_eq!(post(&client, &url, &events[1].body()).await, 503, "unconfirmed write must not be acknowledged");
    assert!(started.elapsed() >= Duration::from_millis(1000), "it waited for the delivery timeout");

    // Back up: the same sink recovers by itself.
    for broker in 1..=3 {
        c.broker_up(broker).expect("up");
    }
    let (status, refused) = post_until_ok(&client, &url, &events[1].body()).await;
    assert_eq!(status, 200, "recovered after the brokers came back");
    // Every 503 the client saw, and only those, is counted (how many retries the recovery took depends on
    // the machine's speed).
    let mut text = String::new();
    metrics.render(&mut text);
    assert!(text.contains(&format!("outcome=\"unavailable\"}} {}", 1 + refused)), "{refused} retries refused: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_produce_errors_and_latency_give_503_then_200() {
    let c = cluster();
    let cfg = KafkaConfig::new(c.bootstrap_servers());
    let (url, metrics, sink) = ingress(&cfg, Duration::from_millis(1500)).await;
    let client = reqwest::Client::new();
    let mut rng = Rng::new(8);
    let (events, _) = generate(Scenario::FullRefund, &mut rng, now() - 60);

    // A record the broker refuses for its size (a poison record): 413, not 503, and counted as too large;
    // the producer goes on.
    c.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 50]);
    assert_eq!(post(&client, &url, &events[0].body()).await, 413);
    c.clear_request_errors(RDKafkaApiKey::Produce);
    let mut text = String::new();
    metrics.render(&mut text);
    assert!(text.contains("outcome=\"too_large\"} 1"), "{text}");
    assert!(text.contains("outcome=\"unavailable\"} 0"), "{text}");
    assert_eq!(sink.fatal(), None, "a poison record is not fatal");

    // Retriable errors, a few: librdkafka retries within the timeout and the idempotent producer keeps it
    // to one copy, so 200.
    c.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 2]);
    assert_eq!(post(&client, &url, &events[1].body()).await, 200);

    // Latency above the delivery timeout: 503; back to normal: 200.
    for b in 1..=3 {
        c.broker_round_trip_time(b, Duration::from_millis(2500)).expect("rtt");
    }
    assert_eq!(post(&client, &url, &events[2].body()).await, 503);
    for b in 1..=3 {
        c.broker_round_trip_time(b, Duration::from_millis(0)).expect("rtt");
    }
    assert_eq!(post_until_ok(&client, &url, &events[2].body()).await.0, 200, "recovered once the latency was gone");

    // Only confirmed writes (and retries of unconfirmed ones) are in the topic: event 1 exactly once.
    let msgs = read_topic(&cfg, "stripe.events");
    let ev1 = events[1].body();
    assert_eq!(msgs.iter().filter(|m| m.3 == ev1).count(), 1, "a retried produce is stored once");
    assert!(msgs.iter().any(|m| m.3 == events[2].body()));
    assert!(!msgs.iter().any(|m| m.3 == events[0].body()), "the refused record is not in the topic");
    assert_eq!(sink.fatal(), None, "retriable errors are not fatal");
}

/// A fatal produce error (authorization refused): the webhook is answered 503, never 200, and the sink
/// reports the error as fatal, which makes `paystate ingress` exit non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_produce_error_is_answered_503_and_reported_fatal() {
    let c = cluster();
    let cfg = KafkaConfig::new(c.bootstrap_servers());
    let (url, _, sink) = ingress(&cfg, Duration::from_millis(1500)).await;
    let client = reqwest::Client::new();
    let (events, _) = generate(Scenario::FullRefund, &mut Rng::new(12), now() - 60);
    assert_eq!(post(&client, &url, &events[0].body()).await, 200);
    assert_eq!(sink.fatal(), None);
    c.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 50]);
    assert_eq!(post(&client, &url, &events[1].body()).await, 503);
    let fatal = sink.fatal().expect("reported fatal");
    assert!(fatal.to_lowercase().contains("authoriz"), "{fatal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_applies_everything_once_despite_commit_errors_and_restores_from_the_payments_topic() {
    let c = cluster();
    let cfg = KafkaConfig::new(c.bootstrap_servers());
    let mut rng = Rng::new(9);
    let mut truths = Vec::new();
    let mut records = Vec::new();
    for (i, scenario) in Scenario::ALL.iter().enumerate() {
        let (events, truth) = generate(*scenario, &mut rng, now() - 600 + i as i64);
        for ev in &events {
            let (p, record) = log_record(ev);
            // Twice: a duplicate delivery.
            records.push((p, record.clone()));
            records.push((p, record));
        }
        truths.push(truth);
    }
    let sent = records.len() as u64;
    // Offset commits to Kafka fail: they are for monitoring only, the projector must not care.
    c.request_errors(RDKafkaApiKey::OffsetCommit, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 20]);

    let dir = tempfile::tempdir().expect("dir");
    let projection = Store::open_projection(dir.path()).expect("projection");
    let opts = ProjectorOptions { group: "g1".into(), ..ProjectorOptions::default() };
    let handle = tokio::runtime::Handle::current();
    let (cfg2, proj2) = (cfg.clone(), projection.clone());
    let consumed = tokio::task::spawn_blocking(move || {
        let sink = KafkaSink::new(&cfg2, Duration::from_secs(10)).expect("sink");
        let p = KafkaProjector::new(&cfg2, proj2.clone(), opts, handle.clone()).expect("projector");
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut consumed = 0;
        // In three parts, each consumed and published before the next is appended: several publish rounds.
        for part in records.chunks(records.len().div_ceil(3)) {
            for (partition, record) in part {
                handle.block_on(LogSink::append(&sink, *partition, record)).expect("append");
            }
            let target = consumed + part.len() as u64;
            while consumed < target && Instant::now() < deadline {
                consumed += p.step().expect("step").records;
            }
            // An idle step publishes the outbox.
            while p.step().expect("step").records > 0 {}
        }
        p.run(&AtomicBool::new(true)).expect("final publish");
        consumed
    })
    .await
    .expect("join");
    assert_eq!(consumed, sent, "every record consumed exactly once");
    let totals = projection.totals().expect("totals");
    assert_eq!(totals.applied + totals.duplicates, sent, "{totals:?}");
    assert_eq!(totals.duplicates, sent / 2);
    for t in &truths {
        let key = t.key();
        let p = projection.payment(&key).expect("read").unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(p.state.lifecycle.as_str(), t.lifecycle, "{key}");
        assert_eq!(p.state.amount_refunded, t.amount_refunded, "{key}");
    }

    // The projection topics: one payment update per payment at least, no action id twice.
    let (n, distinct) = action_ids(&cfg);
    assert_eq!(distinct, n, "no action id twice");
    assert_eq!(n as u64, totals.actions, "every action published");
    let updates = read_topic(&cfg, "paystate.payments");
    let mut carried = 0;
    for (p, _, key, payload, _) in &updates {
        let v: serde_json::Value = serde_json::from_slice(payload).expect("json");
        assert_eq!(v["partition"].as_i64(), Some(i64::from(*p)), "same partition as the raw topic");
        assert_eq!(key.as_deref(), v["key"].as_str().map(str::as_bytes));
        assert_eq!(v["snapshot"]["format"], 3, "{v}");
        carried += v["snapshot"]["applied"].as_array().expect("applied").len() as u64;
    }
    // Updates carry only their batch's events: each applied event is in exactly one update (the topic grows
    // with the events, not with their square), and once in the history topic.
    assert_eq!(carried, totals.applied, "events carried by the updates");
    let history = read_topic(&cfg, "paystate.history");
    assert_eq!(history.len() as u64, totals.applied, "history messages");

    // A new member with an empty store restores every partition from the payments topic (not the raw
    // log) and ends with the same states.
    let dir2 = tempfile::tempdir().expect("dir");
    let fresh = Store::open_projection(dir2.path()).expect("projection");
    let opts = ProjectorOptions { group: "g2".into(), ..ProjectorOptions::default() };
    let handle = tokio::runtime::Handle::current();
    let (cfg3, fresh2) = (cfg.clone(), fresh.clone());
    let (restores, consumed) = tokio::task::spawn_blocking(move || {
        let p = KafkaProjector::new(&cfg3, fresh2, opts, handle).expect("projector");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut records = 0;
        while p.restores().len() < PARTITIONS as usize && Instant::now() < deadline {
            records += p.step().expect("step").records;
        }
        for _ in 0..5 {
            records += p.step().expect("step").records;
        }
        (p.restores(), records)
    })
    .await
    .expect("join");
    assert_eq!(restores.len(), PARTITIONS as usize, "{restores:?}");
    let restored: u64 = restores.iter().map(|r| r.payments).sum();
    assert_eq!(restored as usize, projection.payment_count());
    assert!(consumed < sent, "resumed after the restored offsets ({consumed} of {sent} re-read)");
    assert!(
        restores.iter().any(|r| r.actions_from > 0),
        "the actions topic was read from its start for every partition: {restores:?}"
    );
    for t in &truths {
        let key = t.key();
        let a = projection.payment(&key).expect("read");
        let b = fresh.payment(&key).expect("read");
        assert_eq!(a.map(|p| p.state), b.map(|p| p.state), "{key}");
    }
    // Nothing it re-derived was published twice.
    let again = read_topic(&cfg, "paystate.actions");
    assert_eq!(again.len(), n, "the restored member published no action again");
}

/// The actions topic's messages and distinct action ids.
fn action_ids(cfg: &KafkaConfig) -> (usize, usize) {
    let ids: Vec<String> = read_topic(cfg, "paystate.actions")
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.3).expect("json")["id"].as_str().expect("id").to_owned()
        })
        .collect();
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    (ids.len(), distinct.len())
}

/// Copies directory `from` into `to`, recursively (a closed store).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// The log record of one generated event, with its raw partition.
fn log_record(ev: &paystate_testkit::synth::SynthEvent) -> (u32, paystate_store::LogRecord) {
    let body = ev.body();
    let parsed = paystate_stripe::parse_event(&body).expect("parse");
    paystate_ingress::log_record(&parsed, body.clone(), String::new(), 0, PARTITIONS)
}

/// Appends `records` and runs a projector of `group` on the store in `dir` until it consumed them (and
/// whatever else the raw topic holds past the store's positions) and published its outbox; then closes it
/// and the store.
async fn project(
    cfg: &KafkaConfig,
    dir: &std::path::Path,
    group: &str,
    records: Vec<(u32, paystate_store::LogRecord)>,
) {
    use paystate_store::LogView;
    let (cfg, dir, group) = (cfg.clone(), dir.to_owned(), group.to_owned());
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let sink = KafkaSink::new(&cfg, Duration::from_secs(10)).expect("sink");
        for (partition, record) in &records {
            handle.block_on(LogSink::append(&sink, *partition, record)).expect("append");
        }
        let projection = Store::open_projection(&dir).expect("projection");
        let opts = ProjectorOptions { group, ..ProjectorOptions::default() };
        let p = KafkaProjector::new(&cfg, projection.clone(), opts, handle).expect("projector");
        let ends = p.ends();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Until every partition is applied to the raw topic's end (each holds records: an end of 0 is one
        // not read yet) and the outbox is out.
        let drained = || (0..PARTITIONS).all(|q| ends.end(q) > 0) && projection.drained(&*ends).expect("drained");
        while !drained() {
            p.step().expect("step");
            let at: Vec<_> = (0..PARTITIONS).map(|q| (projection.stored_position(q), ends.end(q))).collect();
            assert!(Instant::now() < deadline, "the projector did not drain the raw topic in 60 s: {at:?}");
        }
        p.run(&AtomicBool::new(true)).expect("final publish");
        projection.flush().expect("flush");
    })
    .await
    .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_behind_the_topics_restores_and_never_republishes_its_stale_outbox() {
    use paystate_store::Stream;
    let c = cluster();
    let cfg = KafkaConfig::new(c.bootstrap_servers());
    let mut rng = Rng::new(21);
    let (mut first, mut second, mut truths) = (Vec::new(), Vec::new(), Vec::new());
    for (i, scenario) in Scenario::ALL.iter().enumerate() {
        let (events, truth) = generate(*scenario, &mut rng, now() - 600 + i as i64);
        let half = events.len() / 2;
        first.extend(events[..half].iter().map(log_record));
        second.extend(events[half..].iter().map(log_record));
        truths.push(truth);
    }
    // Member A projects the first halves; a copy of its store is what it would be after a crash that lost
    // the publisher's cursors (they are not flushed on their own): everything it derived looks unpublished.
    let (a, stale) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    project(&cfg, a.path(), "g", first).await;
    copy_dir(a.path(), stale.path());
    {
        let s = Store::open_projection(stale.path()).expect("projection");
        for stream in [Stream::Actions, Stream::Payments] {
            assert!(s.stream_end(stream).expect("end") > 0, "{stream:?} entries to go stale");
            s.mark_published(stream, 0, &Default::default(), &[]).expect("rewind");
        }
        s.flush().expect("flush");
    }
    // A goes on with the second halves and publishes newer states; then the stale store takes over.
    project(&cfg, a.path(), "g", second).await;
    let before = read_topic(&cfg, "paystate.payments").len();
    project(&cfg, stale.path(), "g", Vec::new()).await;

    let updates = read_topic(&cfg, "paystate.payments");
    assert_eq!(updates.len(), before, "the taking member had nothing new to publish, and published nothing");
    // The last value of every key is the newest state: the one with the highest raw offset.
    let mut last: std::collections::HashMap<String, (u64, u64, serde_json::Value)> = Default::default();
    for (_, _, key, payload, _) in &updates {
        let v: serde_json::Value = serde_json::from_slice(payload).expect("json");
        let key = String::from_utf8(key.clone().expect("key")).expect("utf-8");
        let offset = v["offset"].as_u64().expect("offset");
        let e = last.entry(key).or_insert((0, 0, serde_json::Value::Null));
        e.0 = e.0.max(offset);
        (e.1, e.2) = (offset, v["payment"].clone());
    }
    for (key, (newest, last_offset, _)) in &last {
        assert_eq!(last_offset, newest, "{key}: the topic's last value is not its newest state");
    }
    let restored = Store::open_projection(stale.path()).expect("projection");
    for t in &truths {
        let key = t.key();
        let p = restored.payment(&key).expect("read").unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(p.state.lifecycle.as_str(), t.lifecycle, "{key}");
        assert_eq!(p.state.amount_refunded, t.amount_refunded, "{key}");
        assert_eq!(last[&key].2["lifecycle"].as_str(), Some(t.lifecycle.as_str()), "{key}");
    }
    let (n, distinct) = action_ids(&cfg);
    assert_eq!(distinct, n, "no action id twice");
}
