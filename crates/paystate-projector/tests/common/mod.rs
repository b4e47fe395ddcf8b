//! Helpers shared by the projector's tests.

use paystate_store::LogRecord;

/// The log records of `bodies` as the ingress writes them, each with its partition among `partitions`.
pub fn records(bodies: &[Vec<u8>], partitions: u32) -> Vec<(u32, LogRecord)> {
    bodies
        .iter()
        .map(|b| {
            let parsed = paystate_stripe::parse_event(b).expect("parse");
            let key = paystate_stripe::payment_key(&parsed).map(|k| k.to_string()).unwrap_or_default();
            let record = LogRecord {
                received_at_ms: 0,
                event_id: parsed.id().to_owned(),
                event_type: parsed.event_type().to_owned(),
                payment_key: key.clone(),
                signature: String::new(),
                body: b.clone(),
                origin: paystate_store::Origin::Webhook,
            };
            (paystate_core::partition_of(key.as_bytes(), partitions), record)
        })
        .collect()
}
