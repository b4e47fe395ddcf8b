//! Reading topic partitions from given offsets to their ends, without group membership: restores, the
//! actions-topic scans and `paystate replay`.

use crate::{KafkaConfig, KafkaLogError};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A client for reading partitions start to end (restores, scans, replay): no group membership, nothing
/// committed.
pub(crate) fn reader(cfg: &KafkaConfig) -> Result<BaseConsumer<ReaderContext>, KafkaLogError> {
    Ok(cfg
        .client(&[
            ("group.id", "paystate-reader"),
            ("enable.auto.commit", "false"),
            // Only committed transactions, and an end-of-partition event: with transactions, the last
            // offsets before a partition's end are commit markers that no consumer is handed.
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "earliest"),
            // It reads to known ends: a fetch that finds nothing new should come back at once, not after
            // the default 500 ms (each restore and scan ended with such a wait per read).
            ("fetch.wait.max.ms", "10"),
        ])
        .create_with_context(ReaderContext)?)
}

/// The context of the reader used for restores and scans: the end of a partition is expected there, not
/// an error worth a log line.
pub(crate) struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // librdkafka reports it as a global error (`Global(PartitionEOF)`), not as `PartitionEOF(p)`.
        if error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// Runs a metadata or offsets query `f` about `topic`, again while it fails with a retriable error (a broker
/// down, a leader moving: see [`crate::ErrorClass`]), for up to two minutes; any other error at once.
pub(crate) fn retrying<T>(
    topic: &str,
    mut f: impl FnMut() -> Result<T, rdkafka::error::KafkaError>,
) -> Result<T, KafkaLogError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut backoff = Duration::from_millis(100);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if crate::classify(&e) == crate::ErrorClass::Retriable && Instant::now() < deadline => {
                tracing::warn!(error = %e, topic, "a query failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads `topic`'s partitions, each from its given offset to its end as of now, all at once, calling `each`
/// with the partition and the message. The ends of all the
/// partitions come from one offsets query (a round trip per partition costs seconds on some brokers).
pub(crate) fn read_partitions(
    reader: &BaseConsumer<ReaderContext>,
    topic: &str,
    from: &[(u32, u64)],
    mut each: impl FnMut(u32, &BorrowedMessage<'_>) -> Result<(), KafkaLogError>,
) -> Result<(), KafkaLogError> {
    if from.is_empty() {
        return Ok(());
    }
    let mut query = TopicPartitionList::new();
    for &(p, _) in from {
        let pi = i32::try_from(p).map_err(|_| KafkaLogError::Timeout("partition".into()))?;
        query.add_partition_offset(topic, pi, Offset::End)?;
    }
    // Timestamp "latest" (-1): each partition's end offset.
    let ends_list = retrying(topic, || reader.offsets_for_times(query.clone(), Duration::from_secs(30)))?;
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &(p, start) in from {
        let pi = i32::try_from(p).map_err(|_| KafkaLogError::Timeout("partition".into()))?;
        let high = match ends_list.find_partition(topic, pi).map(|e| e.offset()) {
            Some(Offset::Offset(h)) => h,
            other => {
                return Err(KafkaLogError::Topic {
                    topic: topic.into(),
                    why: format!("end of partition {p}: {other:?}"),
                })
            }
        };
        let start = i64::try_from(start).unwrap_or(i64::MAX);
        if start < high {
            ends.insert(pi, high);
            tpl.add_partition_offset(topic, pi, Offset::Offset(start))?;
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    reader.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(KafkaLogError::Timeout(format!("reading {topic} partitions {:?}", ends.keys())));
        }
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let Some(&high) = ends.get(&m.partition()) else { continue };
                if let Ok(p) = u32::try_from(m.partition()) {
                    each(p, &m)?;
                }
                if m.offset() + 1 >= high {
                    ends.remove(&m.partition());
                }
            }
            // The end as it is now, at or past the one queried: markers and aborted records end there.
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(pi))) => {
                ends.remove(&pi);
            }
            // A broker down or a leader moving is librdkafka's to retry (the deadline bounds the wait);
            // only what retrying cannot cure stops the read.
            Some(Err(e)) if crate::classify(&e) == crate::ErrorClass::Retriable => {
                tracing::debug!(error = %e, topic, "reading: transient error, retried");
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    reader.unassign()?;
    Ok(())
}
