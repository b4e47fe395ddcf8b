//! The ingress's producer to the raw topic.

use crate::{classify, headers_of, ErrorClass, KafkaConfig, KafkaLogError};
use paystate_store::{AppendError, LogRecord, LogSink, Position, RecordTooLarge};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Appends webhook records to the raw topic. `Ok` only after the broker's delivery report: with
/// `enable.idempotence=true` and `acks=all`, the write is on every in-sync replica and librdkafka's retries
/// never duplicate or reorder it. A broker that is down or slower than `message.timeout.ms` makes the append
/// fail (the ingress answers 503 and Stripe retries). Errors are classified ([`ErrorClass`]): a record
/// refused for its size is [`KafkaLogError::TooLarge`]; a fatal one is also kept ([`KafkaSink::fatal`]),
/// for the process to stop on.
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    fatal: Arc<Mutex<Option<String>>>,
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
        Ok(KafkaSink { producer, topic: cfg.raw_topic.clone(), fatal: Arc::default() })
    }

    /// The first fatal error met (see [`ErrorClass::Fatal`]), or the producer's own fatal error: once
    /// there is one, no append can succeed and the process should stop.
    pub fn fatal(&self) -> Option<String> {
        if let Some((code, why)) = self.producer.client().fatal_error() {
            return Some(format!("the producer failed for good ({code:?}): {why}"));
        }
        self.fatal.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The error of a failed append, classified; a fatal one is kept.
    fn failed(&self, e: KafkaError) -> KafkaLogError {
        match classify(&e) {
            ErrorClass::Poison => KafkaLogError::TooLarge(e.to_string()),
            ErrorClass::Fatal => {
                self.fatal.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(|| e.to_string());
                KafkaLogError::Kafka(e)
            }
            ErrorClass::Retriable => KafkaLogError::NotConfirmed(e.to_string()),
        }
    }

    /// Waits up to `timeout` for queued messages to be delivered (at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaLogError> {
        Ok(self.producer.flush(timeout)?)
    }

    /// Appends `record` to `partition` and waits for the delivery report.
    pub async fn send(&self, partition: u32, record: &LogRecord) -> Result<Position, KafkaLogError> {
        let p = i32::try_from(partition).map_err(|_| KafkaLogError::NotConfirmed("partition".into()))?;
        // The message's time is its receive time: the broker's time index then finds where a receive time
        // starts (catch-up's `received::event_ids_received_since`).
        let mut msg = FutureRecord::to(&self.topic)
            .partition(p)
            .payload(&record.body)
            .headers(headers_of(record))
            .timestamp(record.received_at_ms);
        if !record.payment_key.is_empty() {
            msg = msg.key(&record.payment_key);
        }
        let delivery = self.producer.send_result(msg).map_err(|(e, _)| self.failed(e))?;
        match delivery.await {
            Ok(Ok(d)) => Ok(Position {
                partition: u32::try_from(d.partition).unwrap_or(partition),
                offset: u64::try_from(d.offset).map_err(|_| KafkaLogError::NotConfirmed("no offset".into()))?,
            }),
            Ok(Err((e, _))) => Err(self.failed(e)),
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
        Box::pin(async move {
            self.send(partition, record).await.map_err(|e| match e {
                KafkaLogError::TooLarge(why) => AppendError::from(RecordTooLarge(why)),
                e => AppendError::from(e),
            })
        })
    }

    fn health(&self) -> Result<(), String> {
        self.fatal().map_or(Ok(()), Err)
    }
}
