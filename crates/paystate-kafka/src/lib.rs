//! # paystate-kafka
//!
//! The Kafka log: the same contract as the embedded log, across machines. This is the only crate that
//! depends on rdkafka.
//!
//! - [`KafkaSink`]: the ingress's producer to the raw topic (idempotent, `acks=all`). An append is `Ok`
//!   only once the broker's delivery report confirms the write.
//! - [`KafkaProjector`]: a consumer-group member that folds its partitions of the raw topic into the sled
//!   projection (`paystate-projector`'s [`Folder`](paystate_projector::Folder)), with the position of record
//!   committed in the same sled transaction as the states, and publishes the outbox to the projection
//!   topics (`paystate.payments`, compacted, and `paystate.actions`). A partition it has no local state for
//!   is restored from the compacted topic, not replayed from the raw log.
//! - [`ensure_topics`]: creates the three topics through the AdminClient.
//!
//! Message formats are documented in `docs/KAFKA.md`.

pub mod group;
mod projector;
mod reader;
pub mod received;
mod replay;
mod sink;

pub use projector::{KafkaEnds, KafkaProjector, ProjectorOptions, RestoreReport};
pub use replay::replay_topic;
pub use sink::KafkaSink;

use paystate_store::{LogRecord, Origin};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Header names on raw-topic messages.
pub mod header {
    /// When the ingress received the webhook, unix milliseconds, decimal.
    pub const RECEIVED_AT: &str = "paystate-received-at";
    /// Stripe event id.
    pub const EVENT_ID: &str = "stripe-event-id";
    /// Stripe event type.
    pub const EVENT_TYPE: &str = "stripe-event-type";
    /// The `Stripe-Signature` header the webhook arrived with.
    pub const SIGNATURE: &str = "stripe-signature";
    /// How the event reached the log, when not as a webhook (`events_api`: fetched by `paystate catch-up`);
    /// absent on a webhook's message.
    pub const ORIGIN: &str = "paystate-origin";
}

/// Kafka errors, typed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaLogError {
    /// librdkafka refused or failed an operation.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A write was not confirmed by the broker.
    #[error("write not confirmed: {0}")]
    NotConfirmed(String),
    /// A topic is missing or has an unexpected shape.
    #[error("topic {topic}: {why}")]
    Topic {
        /// The topic.
        topic: String,
        /// What is wrong.
        why: String,
    },
    /// A message on a projection topic does not decode.
    #[error("bad message in {topic} partition {partition} offset {offset}: {why}")]
    BadMessage {
        /// The topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// What is wrong.
        why: String,
    },
    /// The sled projection failed.
    #[error(transparent)]
    Store(#[from] paystate_store::StoreError),
    /// The projector failed.
    #[error(transparent)]
    Projector(#[from] paystate_projector::ProjectorError),
    /// The broker or the producer refuses a record for its size (a poison record: [`ErrorClass::Poison`]).
    #[error("record refused for its size: {0}")]
    TooLarge(String),
    /// Reading a topic took longer than allowed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Another projector took raw partition `partition` while this one still meant to publish for it
    /// (this one was paused through a rebalance): the broker refuses its writes. The process must stop;
    /// restarted, it rejoins the group as a new member.
    #[error(
        "fenced: another projector now owns raw partition {partition} and the broker refuses this one's \
         writes for it ({why}); stopping (restart to rejoin the group)"
    )]
    Fenced {
        /// The raw partition.
        partition: u32,
        /// The broker's error.
        why: String,
    },
}

/// How an error is handled, after the classes of vector's Kafka sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: a broker down, a leader moving, too few in-sync replicas, a timeout. librdkafka retries
    /// within its timeouts; past them the ingress answers 503 (Stripe retries) and the projector waits.
    Retriable,
    /// The record itself is refused (larger than the broker or the producer takes): the same bytes can
    /// never be written, so the ingress answers 413 rather than inviting a retry of them as 503 would.
    Poison,
    /// The client cannot go on: fenced, the idempotent producer's fatal error, authentication or
    /// authorization refused, an invalid configuration. The process stops with a clear message and a
    /// non-zero exit; the orchestrator restarts it.
    Fatal,
}

/// The class of a librdkafka error (see [`ErrorClass`]).
pub fn classify(e: &rdkafka::error::KafkaError) -> ErrorClass {
    use rdkafka::error::KafkaError as K;
    use RDKafkaErrorCode as C;
    if let K::Transaction(t) = e {
        if t.is_fatal() {
            return ErrorClass::Fatal;
        }
    }
    if matches!(e, K::ClientConfig(..) | K::ClientCreation(_) | K::Subscription(_)) {
        return ErrorClass::Fatal;
    }
    match e.rdkafka_error_code() {
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge | C::InvalidRecord) => {
            ErrorClass::Poison
        }
        Some(
            C::Fatal
            | C::Fenced
            | C::ProducerFenced
            | C::InvalidProducerEpoch
            | C::Authentication
            | C::SaslAuthenticationFailed
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::InvalidConfig,
        ) => ErrorClass::Fatal,
        _ => ErrorClass::Retriable,
    }
}

/// Where the Kafka log is and what it is called.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Any librdkafka properties (TLS, SASL, timeouts…), applied last so they override paystate's.
    pub properties: Vec<(String, String)>,
    /// Raw webhook topic.
    pub raw_topic: String,
    /// Compacted payment-state topic.
    pub payments_topic: String,
    /// Actions topic.
    pub actions_topic: String,
    /// Compacted topic of the payments' applied events (key = payment key, `#`, event id), from which a
    /// restore rebuilds each payment's history; the payment updates carry only each batch's changes.
    pub history_topic: String,
}

impl KafkaConfig {
    /// Default topic names on `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            properties: Vec::new(),
            raw_topic: "stripe.events".into(),
            payments_topic: "paystate.payments".into(),
            actions_topic: "paystate.actions".into(),
            history_topic: "paystate.history".into(),
        }
    }

    /// A client configuration: `bootstrap.servers`, then `defaults`, then the user's properties.
    pub(crate) fn client(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Parses `key=value`.
    pub fn parse_property(s: &str) -> Result<(String, String), String> {
        match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
            _ => Err(format!("expected key=value, got {s:?}")),
        }
    }
}

/// Number of partitions of `topic`, from the cluster's metadata.
pub fn topic_partitions(cfg: &KafkaConfig, topic: &str, timeout: Duration) -> Result<u32, KafkaLogError> {
    partitions_of(&cfg.client(&[]).create()?, topic, timeout)
}

fn partitions_of(client: &BaseConsumer, topic: &str, timeout: Duration) -> Result<u32, KafkaLogError> {
    let md = client.fetch_metadata(Some(topic), timeout)?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| KafkaLogError::Topic { topic: topic.into(), why: "not in metadata".into() })?;
    if let Some(e) = t.error() {
        return Err(KafkaLogError::Topic { topic: topic.into(), why: format!("{:?}", RDKafkaErrorCode::from(e)) });
    }
    match u32::try_from(t.partitions().len()) {
        Ok(0) | Err(_) => Err(KafkaLogError::Topic { topic: topic.into(), why: "no partitions".into() }),
        Ok(n) => Ok(n),
    }
}

/// Settings of the compacted topics (payments, history) when paystate creates them, unless given otherwise:
/// a segment is rolled (and so becomes compactable) at least hourly, where Kafka's default of a week would
/// leave a restore reading every update of the week.
pub const COMPACTED_DEFAULTS: [(&str, &str); 1] = [("segment.ms", "3600000")];

/// Creates the raw, payments (compacted), actions and history (compacted) topics with `partitions`
/// partitions each when they do not exist (replication factor `replication`, -1 for the brokers' default;
/// the compacted ones with [`COMPACTED_DEFAULTS`] and then `compacted`, topic settings such as
/// `min.cleanable.dirty.ratio`), then checks that all four have the raw topic's partition count
/// (partition p of each belongs to the same projector). Returns that count.
pub async fn ensure_topics(
    cfg: &KafkaConfig,
    partitions: u32,
    replication: i32,
    compacted: &[(String, String)],
) -> Result<u32, KafkaLogError> {
    // Topics that exist already are not created again: CreateTopics is refused while fewer brokers are up
    // than the replication factor (even for a topic that exists), and needs a permission that a member
    // does not otherwise need.
    let existing = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<u32>, KafkaLogError> {
            let client: BaseConsumer = cfg.client(&[]).create()?;
            match partition_counts(&cfg, &client) {
                // All four exist: their partition counts must agree, which creating cannot mend.
                Ok(counts) => agreed_partitions(&cfg, counts).map(Some),
                // One is missing (or cannot be seen yet): create what is missing.
                Err(_) => Ok(None),
            }
        })
        .await
        .map_err(|e| KafkaLogError::Timeout(format!("metadata task: {e}")))??
    };
    if let Some(n) = existing {
        return Ok(n);
    }
    let admin: AdminClient<DefaultClientContext> = cfg.client(&[]).create()?;
    let n = i32::try_from(partitions)
        .map_err(|_| KafkaLogError::Topic { topic: cfg.raw_topic.clone(), why: format!("{partitions} partitions") })?;
    let compact = |name| {
        let mut t = NewTopic::new(name, n, TopicReplication::Fixed(replication)).set("cleanup.policy", "compact");
        for (k, v) in COMPACTED_DEFAULTS.iter().filter(|(k, _)| !compacted.iter().any(|(c, _)| c == k)) {
            t = t.set(k, v);
        }
        for (k, v) in compacted {
            t = t.set(k, v);
        }
        t
    };
    let topics = [
        NewTopic::new(&cfg.raw_topic, n, TopicReplication::Fixed(replication)),
        compact(&cfg.payments_topic),
        NewTopic::new(&cfg.actions_topic, n, TopicReplication::Fixed(replication)),
        compact(&cfg.history_topic),
    ];
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    // A broker down or a controller moving (a member started during a broker's restart) is waited out, as
    // the other queries are (`reader::retrying`); anything else is refused at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut backoff = Duration::from_millis(200);
    loop {
        let failed = match admin.create_topics(topics.iter(), &opts).await {
            Ok(results) => {
                let mut failed = None;
                for result in results {
                    match result {
                        Ok(name) => tracing::info!(topic = %name, partitions, "created topic"),
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((name, code)) => failed = Some((rdkafka::error::KafkaError::AdminOp(code), name)),
                    }
                }
                failed
            }
            Err(e) => Some((e, cfg.raw_topic.clone())),
        };
        let Some((e, topic)) = failed else { break };
        if classify(&e) != ErrorClass::Retriable || std::time::Instant::now() >= deadline {
            return Err(KafkaLogError::Topic { topic, why: format!("create: {e}") });
        }
        tracing::warn!(error = %e, %topic, "creating the topics failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    let cfg2 = cfg.clone();
    tokio::task::spawn_blocking(move || -> Result<u32, KafkaLogError> {
        let client: BaseConsumer = cfg2.client(&[]).create()?;
        // Metadata may lag topic creation by a moment.
        let mut last = None;
        for _ in 0..50 {
            match partition_counts(&cfg2, &client).and_then(|counts| agreed_partitions(&cfg2, counts)) {
                Ok(n) => return Ok(n),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last.unwrap_or_else(|| KafkaLogError::Timeout("topic metadata".into())))
    })
    .await
    .map_err(|e| KafkaLogError::Timeout(format!("metadata task: {e}")))?
}

/// The partition counts of the raw, payments, actions and history topics, in that order (one metadata
/// query each); an error when one cannot be seen.
fn partition_counts(cfg: &KafkaConfig, client: &BaseConsumer) -> Result<[u32; 4], KafkaLogError> {
    let count = |t: &str| partitions_of(client, t, Duration::from_secs(5));
    Ok([count(&cfg.raw_topic)?, count(&cfg.payments_topic)?, count(&cfg.actions_topic)?, count(&cfg.history_topic)?])
}

/// The raw topic's partition count when the other three have it too (partition p of each belongs to the
/// same projector).
fn agreed_partitions(cfg: &KafkaConfig, counts: [u32; 4]) -> Result<u32, KafkaLogError> {
    let [raw, others @ ..] = counts;
    for (t, n) in [&cfg.payments_topic, &cfg.actions_topic, &cfg.history_topic].into_iter().zip(others) {
        if n != raw {
            return Err(KafkaLogError::Topic {
                topic: t.clone(),
                why: format!("{n} partitions, but {} has {raw}: partition p of both must be the same", cfg.raw_topic),
            });
        }
    }
    Ok(raw)
}

/// The headers of a raw-topic message for `record`.
pub(crate) fn headers_of(record: &LogRecord) -> OwnedHeaders {
    let received = record.received_at_ms.to_string();
    let headers = OwnedHeaders::new_with_capacity(5)
        .insert(Header { key: header::RECEIVED_AT, value: Some(received.as_bytes()) })
        .insert(Header { key: header::EVENT_ID, value: Some(record.event_id.as_bytes()) })
        .insert(Header { key: header::EVENT_TYPE, value: Some(record.event_type.as_bytes()) })
        .insert(Header { key: header::SIGNATURE, value: Some(record.signature.as_bytes()) });
    match record.origin {
        // A webhook's message carries no origin header: what the previous release wrote.
        Origin::Webhook => headers,
        origin => headers.insert(Header { key: header::ORIGIN, value: Some(origin.name().as_bytes()) }),
    }
}

/// The log record a raw-topic message carries (key = payment key, value = the body unchanged).
pub fn record_of<M: Message>(m: &M) -> LogRecord {
    let mut r = LogRecord {
        received_at_ms: 0,
        event_id: String::new(),
        event_type: String::new(),
        payment_key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
        signature: String::new(),
        body: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        origin: Origin::Webhook,
    };
    if let Some(hs) = m.headers() {
        for h in hs.iter() {
            let text = || h.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
            match h.key {
                header::RECEIVED_AT => r.received_at_ms = text().parse().unwrap_or(0),
                header::EVENT_ID => r.event_id = text(),
                header::EVENT_TYPE => r.event_type = text(),
                header::SIGNATURE => r.signature = text(),
                header::ORIGIN if h.value == Some(Origin::EventsApi.name().as_bytes()) => r.origin = Origin::EventsApi,
                _ => {}
            }
        }
    }
    r
}

#[cfg(test)]
mod class_tests {
    use super::{agreed_partitions, classify, ErrorClass, KafkaConfig, KafkaLogError};
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as C;

    #[test]
    fn errors_by_class() {
        let produce = |c| classify(&KafkaError::MessageProduction(c));
        for c in [C::MessageSizeTooLarge, C::MessageBatchTooLarge, C::InvalidRecord] {
            assert_eq!(produce(c), ErrorClass::Poison, "{c:?}");
        }
        for c in [C::ProducerFenced, C::TopicAuthorizationFailed, C::SaslAuthenticationFailed, C::Fatal] {
            assert_eq!(produce(c), ErrorClass::Fatal, "{c:?}");
        }
        for c in [C::NotEnoughReplicas, C::MessageTimedOut, C::LeaderNotAvailable, C::BrokerTransportFailure] {
            assert_eq!(produce(c), ErrorClass::Retriable, "{c:?}");
        }
        assert_eq!(classify(&KafkaError::MessageConsumption(C::GroupAuthorizationFailed)), ErrorClass::Fatal);
        assert_eq!(classify(&KafkaError::MessageConsumption(C::AllBrokersDown)), ErrorClass::Retriable);
    }

    #[test]
    fn topics_must_agree_on_their_partition_count() {
        let cfg = KafkaConfig::new("localhost:9092");
        assert_eq!(agreed_partitions(&cfg, [6, 6, 6, 6]).ok(), Some(6));
        for (i, counts) in [[6, 3, 6, 6], [6, 6, 12, 6], [6, 6, 6, 1]].into_iter().enumerate() {
            let topic = [&cfg.payments_topic, &cfg.actions_topic, &cfg.history_topic][i];
            match agreed_partitions(&cfg, counts) {
                Err(KafkaLogError::Topic { topic: t, why }) => {
                    assert_eq!(&t, topic);
                    assert!(why.contains("but stripe.events has 6"), "{why}");
                }
                other => panic!("{counts:?}: {other:?}"),
            }
        }
    }
}
