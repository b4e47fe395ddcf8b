//! The ingress's producer to the raw topic.

use crate::{headers_of, KafkaConfig, KafkaLogError};
use paystate_store::{AppendError, LogRecord, LogSink, Position};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Appends webhook records to the raw topic. `Ok` only after the broker's delivery report: with
/// `enable.idempotence=true` and `acks=all`, the write is on every in-sync replica and librdkafka's retries
/// never duplicate or reorder it. A broker that is down or slower than `message.timeout.ms` makes the append
/// fail (the ingress answers 503 and Stripe retries).
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("topic", &self.topic).finish()
    }
}

impl KafkaSink {
    /// A producer for `cfg.raw_topic`; an append not confirmed within `timeout` fails.
    pub fn new(cfg: &KafkaConfig, timeout: Duration) -> Result<Self, KafkaLogError> {
        let timeout_ms = timeout.as_millis().max(1).to_string();
        let producer: FutureProducer = cfg
            .client(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("compression.type", "lz4"),
                ("linger.ms", "1"),
                ("message.timeout.ms", &timeout_ms),
            ])
            .create()?;
        Ok(KafkaSink { producer, topic: cfg.raw_topic.clone() })
    }

    /// Waits up to `timeout` for queued messages to be delivered (at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaLogError> {
        Ok(self.producer.flush(timeout)?)
    }

    /// Appends `record` to `partition` and waits for the delivery report.
    pub async fn send(&self, partition: u32, record: &LogRecord) -> Result<Position, KafkaLogError> {
        let p = i32::try_from(partition).map_err(|_| KafkaLogError::NotConfirmed("partition".into()))?;
        let mut msg = FutureRecord::to(&self.topic).partition(p).payload(&record.body).headers(headers_of(record));
        if !record.payment_key.is_empty() {
            msg = msg.key(&record.payment_key);
        }
        let delivery = self.producer.send_result(msg).map_err(|(e, _)| KafkaLogError::NotConfirmed(e.to_string()))?;
        match delivery.await {
            Ok(Ok(d)) => Ok(Position {
                partition: u32::try_from(d.partition).unwrap_or(partition),
                offset: u64::try_from(d.offset).map_err(|_| KafkaLogError::NotConfirmed("no offset".into()))?,
            }),
            Ok(Err((e, _))) => Err(KafkaLogError::NotConfirmed(e.to_string())),
            Err(_) => Err(KafkaLogError::NotConfirmed("producer dropped the delivery report".into())),
        }
    }
}

impl LogSink for KafkaSink {
    fn append<'a>(
        &'a self,
        partition: u32,
        record: &'a LogRecord,
    ) -> Pin<Box<dyn Future<Output = Result<Position, AppendError>> + Send + 'a>> {
        Box::pin(async move { self.send(partition, record).await.map_err(AppendError::from) })
    }
}
