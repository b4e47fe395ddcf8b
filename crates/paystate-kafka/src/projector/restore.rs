//! Restoring partitions from the compacted payments and history topics (see the module docs).

use super::*;

impl Shared {
    /// Restores partitions from the compacted payments and history topics (see the module docs).
    pub(super) fn restore(
        &self,
        reader: &BaseConsumer<ReaderContext>,
        parts: &[u32],
    ) -> Result<Vec<RestoreReport>, KafkaLogError> {
        let started = Instant::now();
        let topic = self.cfg.payments_topic.clone();
        // The latest snapshot of each payment, parsed once all are read.
        let mut latest: HashMap<u32, HashMap<String, (u64, i64, serde_json::Value)>> = HashMap::new();
        // Per partition: the highest raw offset an update reflects, and that update's actions-from header.
        let mut max_offset: HashMap<u32, (u64, u64)> = HashMap::new();
        let mut messages: HashMap<u32, u64> = HashMap::new();
        let from: Vec<(u32, u64)> = parts.iter().map(|p| (*p, 0)).collect();
        read_partitions(reader, &topic, &from, |p, m| {
            let (offset, payload, actions_from) = (m.offset(), m.payload(), actions_from(m));
            *messages.entry(p).or_default() += 1;
            let Some(payload) = payload else { return Ok(()) }; // a tombstone
            let bad = |why: String| KafkaLogError::BadMessage {
                topic: topic.clone(),
                partition: i32::try_from(p).unwrap_or(-1),
                offset,
                why,
            };
            let u: UpdateEnvelope = serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?;
            let snapshot = u.snapshot.ok_or_else(|| bad("no snapshot".into()))?;
            if u.partition != p {
                return Err(bad(format!("update of partition {} in partition {p}", u.partition)));
            }
            let m = max_offset.entry(p).or_insert((u.offset, actions_from.unwrap_or(0)));
            if u.offset >= m.0 {
                *m = (u.offset, actions_from.unwrap_or(0));
            }
            let of_partition = latest.entry(p).or_default();
            match of_partition.get(&u.key) {
                Some((o, _, _)) if *o > u.offset => {}
                _ => {
                    of_partition.insert(u.key, (u.offset, offset, snapshot));
                }
            }
            Ok(())
        })?;
        // Snapshots of this release carry one batch's changes: the histories are in the history topic.
        let mut parsed: HashMap<u32, Vec<Snapshot>> = HashMap::new();
        for &p in parts {
            for (_, (_, at, snapshot)) in latest.remove(&p).unwrap_or_default() {
                let s = paystate_projector::parse_snapshot(&snapshot).map_err(|why| KafkaLogError::BadMessage {
                    topic: topic.clone(),
                    partition: i32::try_from(p).unwrap_or(-1),
                    offset: at,
                    why,
                })?;
                parsed.entry(p).or_default().push(s);
            }
        }
        let need_history: Vec<(u32, u64)> = parts
            .iter()
            .filter(|p| parsed.get(p).is_some_and(|v| v.iter().any(|s| matches!(s, Snapshot::Changes { .. }))))
            .map(|p| (*p, 0))
            .collect();
        let mut histories = self.read_histories(reader, &need_history)?;
        let mut reports = Vec::new();
        for &p in parts {
            let mut resume_at = max_offset.get(&p).map_or(0, |m| m.0 + 1);
            let mut actions_from = max_offset.get(&p).map_or(0, |m| m.1);
            let mut payments = Vec::new();
            for s in parsed.remove(&p).unwrap_or_default() {
                match s {
                    Snapshot::Whole(w) => payments.push(*w),
                    Snapshot::Changes { key, emitted, events_applied, .. } => {
                        let events: Vec<_> =
                            histories.remove(&key.to_string()).unwrap_or_default().into_values().collect();
                        if events.len() as u64 != events_applied {
                            tracing::warn!(
                                partition = p,
                                payment = %key,
                                in_history_topic = events.len(),
                                events_applied,
                                "a payment's history is incomplete in the history topic: replaying the partition"
                            );
                            (resume_at, actions_from) = (0, 0);
                            payments.clear();
                            break;
                        }
                        payments.push(paystate_projector::published::whole(key, emitted, events));
                    }
                }
            }
            self.projection.restore(p, &payments, resume_at)?;
            let report = RestoreReport {
                partition: p,
                messages: messages.get(&p).copied().unwrap_or(0),
                payments: payments.len() as u64,
                resume_at,
                actions_from,
                elapsed: started.elapsed(),
            };
            tracing::info!(
                partition = p,
                messages = report.messages,
                payments = report.payments,
                resume_at,
                actions_from = report.actions_from,
                elapsed_ms = report.elapsed.as_millis() as u64,
                "partition restored from the payments topic"
            );
            reports.push(report);
        }
        Ok(reports)
    }

    /// The events in the history topic of partitions `from` (each from its offset), by payment key and event
    /// id, tombstones applied.
    fn read_histories(
        &self,
        reader: &BaseConsumer<ReaderContext>,
        from: &[(u32, u64)],
    ) -> Result<HashMap<String, BTreeMap<String, PaymentEvent>>, KafkaLogError> {
        let topic = self.cfg.history_topic.clone();
        let mut out: HashMap<String, BTreeMap<String, PaymentEvent>> = HashMap::new();
        read_partitions(reader, &topic, from, |p, m| {
            let bad = |why: String| KafkaLogError::BadMessage {
                topic: topic.clone(),
                partition: i32::try_from(p).unwrap_or(-1),
                offset: m.offset(),
                why,
            };
            match m.payload() {
                Some(bytes) => {
                    let (key, ev) = paystate_projector::published::parse_history_message(bytes).map_err(bad)?;
                    out.entry(key).or_default().insert(ev.id.as_str().to_owned(), ev);
                }
                None => {
                    let k = m.key().map(String::from_utf8_lossy).unwrap_or_default();
                    let (key, id) = paystate_projector::published::parse_history_key(&k)
                        .ok_or_else(|| bad(format!("tombstone key {k:?}")))?;
                    if let Some(events) = out.get_mut(key) {
                        events.remove(id);
                    }
                }
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// The `paystate-actions-from` header of a payments-topic message.
fn actions_from(m: &BorrowedMessage<'_>) -> Option<u64> {
    m.headers().and_then(|hs| {
        hs.iter().find(|h| h.key == ACTIONS_FROM).and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
    })
}
