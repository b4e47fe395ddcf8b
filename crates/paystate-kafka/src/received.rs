//! What catch-up needs to know of the raw topic (as `paystate_store::EmbeddedLog` tells it of the
//! embedded log): when the newest event was received, and the ids of the events received since a time.
//! Each raw message's timestamp is its receive time (`KafkaSink` sets it), so the broker's time index finds
//! where a time starts in each partition; the ids come from the `stripe-event-id` headers.

use crate::reader::{read_partitions, reader, retrying};
use crate::{header, KafkaConfig, KafkaLogError};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::HashSet;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

fn header_of<'m>(m: &'m impl Message, key: &str) -> Option<&'m [u8]> {
    m.headers()?.iter().find(|h| h.key == key).and_then(|h| h.value)
}

/// The newest receive time (unix ms) among the last message of each of the raw topic's `partitions`
/// (its partition count, as the caller learnt it connecting); `None` when the topic holds nothing.
pub fn newest_received_ms(cfg: &KafkaConfig, partitions: u32) -> Result<Option<i64>, KafkaLogError> {
    let client = reader(cfg)?;
    let topic = cfg.raw_topic.as_str();
    let mut last = Vec::new();
    for p in 0..partitions {
        let pi = i32::try_from(p).map_err(|_| KafkaLogError::Timeout("partition".into()))?;
        let (low, high) = retrying(topic, || client.fetch_watermarks(topic, pi, TIMEOUT))?;
        if high > low {
            last.push((p, u64::try_from(high - 1).unwrap_or(0)));
        }
    }
    let mut newest: Option<i64> = None;
    read_partitions(&client, topic, &last, |_, m| {
        let at = header_of(m, header::RECEIVED_AT)
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
            .or_else(|| m.timestamp().to_millis());
        newest = newest.max(at);
        Ok(())
    })?;
    Ok(newest)
}

/// The event ids of every raw-topic message from the first one of each partition whose timestamp is at or
/// after `floor_ms` (a superset of those received since then: a message appended later with an earlier
/// time is included, as any after it is), over the raw topic's `partitions`.
pub fn event_ids_received_since(
    cfg: &KafkaConfig,
    partitions: u32,
    floor_ms: i64,
) -> Result<HashSet<String>, KafkaLogError> {
    let client = reader(cfg)?;
    let topic = cfg.raw_topic.as_str();
    let mut query = TopicPartitionList::new();
    for p in 0..partitions {
        let pi = i32::try_from(p).map_err(|_| KafkaLogError::Timeout("partition".into()))?;
        query.add_partition_offset(topic, pi, Offset::Offset(floor_ms.max(0)))?;
    }
    let found = retrying(topic, || client.offsets_for_times(query.clone(), TIMEOUT))?;
    let mut from = Vec::new();
    for e in found.elements_for_topic(topic) {
        // `End`: no message that recent in this partition.
        if let (Ok(p), Offset::Offset(o)) = (u32::try_from(e.partition()), e.offset()) {
            from.push((p, u64::try_from(o).unwrap_or(0)));
        }
    }
    let mut ids = HashSet::new();
    read_partitions(&client, topic, &from, |_, m| {
        if let Some(id) = header_of(m, header::EVENT_ID).and_then(|v| std::str::from_utf8(v).ok()) {
            ids.insert(id.to_owned());
        }
        Ok(())
    })?;
    Ok(ids)
}
