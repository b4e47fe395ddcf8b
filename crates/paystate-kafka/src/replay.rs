//! Replay of the Kafka raw topic into a fresh projection (`paystate replay --kafka-brokers …`).

use crate::reader::{read_partitions, reader};
use crate::{record_of, topic_partitions, KafkaConfig, KafkaLogError};
use paystate_projector::replay::{PartitionFold, ReplayOptions, ReplaySummary};
use paystate_store::Projection;
use rdkafka::message::Message;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Folds every partition of `cfg.raw_topic` from its first retained offset to its end as of the start of
/// the replay (later messages are not read) into `out`. All partitions are read at once by one client and
/// share `options.max_payments`; the broker, not the fold, sets the pace.
/// `progress` counts messages read.
///
/// Replay is only complete when the topic still holds every message: with a retention limit, the oldest
/// events are gone and the rebuild starts from whatever the broker kept.
pub fn replay_topic(
    cfg: &KafkaConfig,
    out: &Projection,
    options: &ReplayOptions,
    progress: &AtomicU64,
) -> Result<ReplaySummary, KafkaLogError> {
    let partitions = topic_partitions(cfg, &cfg.raw_topic, Duration::from_secs(30))?;
    // Every partition is folded at once: they share the memory budget.
    let per_partition = ReplayOptions {
        max_payments: options.max_payments / usize::try_from(partitions).unwrap_or(1).max(1),
        ..*options
    };
    let mut folds: BTreeMap<u32, PartitionFold<'_>> =
        (0..partitions).map(|p| (p, PartitionFold::new(p, out, &per_partition))).collect();
    let from: Vec<(u32, u64)> = (0..partitions).map(|p| (p, 0)).collect();
    let mut first: BTreeMap<u32, u64> = BTreeMap::new();
    read_partitions(&reader(cfg)?, &cfg.raw_topic, &from, |p, m| {
        let offset = u64::try_from(m.offset()).map_err(|_| KafkaLogError::BadMessage {
            topic: cfg.raw_topic.clone(),
            partition: m.partition(),
            offset: m.offset(),
            why: "negative offset".into(),
        })?;
        first.entry(p).or_insert(offset);
        if let Some(fold) = folds.get_mut(&p) {
            fold.add(offset, record_of(m).as_ref());
        }
        progress.fetch_add(1, Ordering::Relaxed);
        Ok(())
    })?;
    for (p, at) in first.iter().filter(|(_, at)| **at > 0) {
        tracing::warn!(
            partition = p,
            first_retained = at,
            "the raw topic's partition starts at offset {at}: the {at} records before it were deleted (retention) \
             and are not in this rebuild; the payments they touched may be incomplete"
        );
    }
    let mut summary = ReplaySummary::default();
    for fold in folds.into_values() {
        summary.merge(&fold.write()?);
    }
    out.flush()?;
    Ok(summary)
}
