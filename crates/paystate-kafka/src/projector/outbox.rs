//! The outbox publisher: transactional producers (one per raw partition: fencing), publish rounds, the
//! set-aside entries of partitions not owned (see the module docs).

use super::*;

impl Shared {
    /// A transactional producer for raw partition `p`, initialised: from here on the broker refuses the
    /// producer of any earlier owner of `p`.
    pub(super) fn transactional_producer(&self, p: u32) -> Result<FutureProducer, KafkaLogError> {
        let id = format!("{}.{}.{p}", self.group, self.cfg.raw_topic);
        let producer: FutureProducer = self
            .cfg
            .client(&[
                ("transactional.id", &id),
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("compression.type", "lz4"),
                ("linger.ms", "2"),
                // The publisher never gives up on its own: a round waits until the broker is back (and a
                // transaction may stay open that long; a new owner aborts it at once).
                ("message.timeout.ms", "300000"),
                ("transaction.timeout.ms", "300000"),
            ])
            .create()?;
        producer.init_transactions(Duration::from_secs(60)).map_err(|e| txn_error(p, e))?;
        tracing::debug!(partition = p, transactional_id = %id, "transactional producer ready");
        Ok(producer)
    }

    /// Publishes the outbox entries set aside for `p` (see the module docs), actions deduplicated against
    /// the actions topic, and forgets them.
    pub(super) fn publish_aside(&self, p: u32) -> Result<(), KafkaLogError> {
        let aside = self.projection.take_aside(p)?;
        if aside.is_empty() {
            return Ok(());
        }
        let mut keys = Vec::with_capacity(aside.len());
        let (mut actions, mut updates) = (Vec::new(), Vec::new());
        for (stream, key, bytes) in &aside {
            keys.push(key.clone());
            if let Some(item) = self.outbox_item(*stream, 0, bytes)? {
                match stream {
                    Stream::Actions => actions.push(item),
                    Stream::Payments => updates.push(item),
                }
            }
        }
        let producers = lock(&self.producers);
        let producer = producers.get(&p).ok_or_else(|| KafkaLogError::NotConfirmed(format!("no producer for {p}")))?;
        let [_, updates_end] = self.publish_transaction(producer, p, &actions, &updates)?;
        drop(producers);
        if let Some(end) = updates_end {
            self.projection.set_payments_end(p, end + 1)?; // past the commit marker
        }
        tracing::info!(partition = p, actions = actions.len(), updates = updates.len(), "set-aside outbox published");
        self.projection.drop_aside(&keys)?;
        Ok(())
    }

    /// Publishes the whole outbox: actions, then payment updates, each confirmed before the cursor moves.
    /// One round at a time (the `publishing` lock).
    ///
    /// A round that fails fails the member, before another thread can start one: it may have committed some
    /// partitions' transactions before another's failed, and their cursors did not move, so publishing
    /// again from this store would put those actions and updates in the topics twice. Only a new take of
    /// the partitions (a restart, or another member) publishes them, deduplicated against the topics.
    pub(super) fn publish(&self) -> Result<(), KafkaLogError> {
        let _round = lock(&self.publishing);
        let result = self.publish_locked();
        if result.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        result
    }

    /// [`Shared::publish`] for a caller that holds the `publishing` lock. Nothing once the member failed
    /// (checked under the lock: it may have failed while the caller waited for it).
    pub(super) fn publish_locked(&self) -> Result<(), KafkaLogError> {
        if self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        // Owning nothing (before the first assignment, say), a round could only set every entry aside: the
        // entries wait in the streams instead, for their partition's next take by this store, which
        // publishes them or, if another member published there since, drops them as stale.
        if lock(&self.producers).is_empty() {
            return Ok(());
        }
        let updates_end = self.projection.stream_end(Stream::Payments)?;
        let actions_end = self.projection.stream_end(Stream::Actions)?;
        if self.projection.published(Stream::Payments)? >= updates_end
            && self.projection.published(Stream::Actions)? >= actions_end
        {
            return Ok(());
        }
        // The consumer's commits are not flushed on their own: nothing leaves the process before it is
        // durable here (a crash must not lose a state the topics already hold).
        self.projection.flush()?;
        let round_start: HashMap<u32, u64> = (0..self.partitions)
            .map(|p| Ok((p, self.projection.confirmed_end(p)?)))
            .collect::<Result<_, KafkaLogError>>()?;
        // Rounds of at most a chunk of each stream, each partition's share of a round in one transaction.
        // Updates join a round only once every action up to `actions_end` is in it or already out: an update
        // carries the ledger of emitted actions, which a restore trusts.
        loop {
            let (a_from, u_from) =
                (self.projection.published(Stream::Actions)?, self.projection.published(Stream::Payments)?);
            if a_from >= actions_end && u_from >= updates_end {
                break;
            }
            // Only up to the ends read before the flush: later entries may not be durable yet.
            let actions = if a_from < actions_end {
                let mut entries = self.projection.read_stream(Stream::Actions, a_from, 2048)?;
                entries.retain(|(c, _)| *c <= actions_end);
                entries
            } else {
                Vec::new()
            };
            let actions_done = actions.last().is_none_or(|(c, _)| *c >= actions_end);
            let updates = if actions_done && u_from < updates_end {
                let mut entries = self.projection.read_stream(Stream::Payments, u_from, 2048)?;
                entries.retain(|(c, _)| *c <= updates_end);
                entries
            } else {
                Vec::new()
            };
            if actions.is_empty() && updates.is_empty() {
                break;
            }
            self.publish_round(&actions, &updates)?;
        }
        *lock(&self.previous_round_start) = round_start;
        Ok(())
    }

    /// Publishes one round: `actions` and `updates` (outbox entries with their cursors), each partition's in
    /// one transaction (actions first), those of partitions not owned set aside; then moves both cursors.
    fn publish_round(&self, actions: &[(u64, Vec<u8>)], updates: &[(u64, Vec<u8>)]) -> Result<(), KafkaLogError> {
        // Entries of a partition whose local state was dropped since they were derived are stale: the
        // partition was restored from the topics, and whoever published there derived them again.
        let drops = self.projection.outbox_drops()?;
        let mut by_partition: BTreeMap<u32, [Vec<OutboxItem<'_>>; 2]> = BTreeMap::new();
        let mut dropped = 0usize;
        for (i, (stream, entries)) in [(Stream::Actions, actions), (Stream::Payments, updates)].into_iter().enumerate()
        {
            for (cursor, bytes) in entries {
                if let Some(item) = self.outbox_item(stream, *cursor, bytes)? {
                    if drops.get(&(stream, item.partition)).is_some_and(|mark| *cursor <= *mark) {
                        dropped += 1;
                        continue;
                    }
                    by_partition.entry(item.partition).or_default()[i].push(item);
                }
            }
        }
        if dropped > 0 {
            tracing::info!(entries = dropped, "stale outbox entries of restored partitions not published");
        }
        let (mut confirmed_actions, mut confirmed_updates) = (BTreeMap::new(), BTreeMap::new());
        let (mut aside_actions, mut aside_updates) = (Vec::new(), Vec::new());
        {
            let producers = lock(&self.producers);
            let mut owned = Vec::with_capacity(by_partition.len());
            for (p, [a, u]) in &by_partition {
                match producers.get(p) {
                    Some(producer) => owned.push((*p, producer, a, u)),
                    None => {
                        aside_actions.extend(a.iter().map(|i| (*p, i.cursor, i.bytes.to_vec())));
                        aside_updates.extend(u.iter().map(|i| (*p, i.cursor, i.bytes.to_vec())));
                    }
                }
            }
            // The partitions' transactions at once: each is a few round trips to the brokers, which one
            // after the other kept the consuming thread waiting for all of them in turn. If any fails, no
            // cursor moves (the projector stops; restarted, it skips what the topics already hold).
            let results: Vec<(u32, Result<Ends, KafkaLogError>)> = std::thread::scope(|scope| {
                let handles: Vec<_> = owned
                    .iter()
                    .map(|&(p, producer, a, u)| (p, scope.spawn(move || self.publish_transaction(producer, p, a, u))))
                    .collect();
                handles
                    .into_iter()
                    .map(|(p, h)| {
                        let failed =
                            || Err(KafkaLogError::NotConfirmed(format!("the publisher of partition {p} panicked")));
                        (p, h.join().unwrap_or_else(|_| failed()))
                    })
                    .collect()
            });
            let mut first_error = None;
            for (p, result) in results {
                match result {
                    Ok([a_end, u_end]) => {
                        // Actions: where a later scan starts. Payments: the end expected when nobody else
                        // writes, past the commit marker.
                        if let Some(end) = a_end {
                            confirmed_actions.insert(p, end);
                        }
                        if let Some(end) = u_end {
                            confirmed_updates.insert(p, end + 1);
                        }
                    }
                    // Being fenced says the most: it wins over another partition's failure.
                    Err(e) if matches!(e, KafkaLogError::Fenced { .. }) || first_error.is_none() => {
                        first_error = Some(e);
                    }
                    Err(e) => tracing::warn!(partition = p, error = %e, "publishing failed"),
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        if !aside_actions.is_empty() || !aside_updates.is_empty() {
            tracing::info!(
                actions = aside_actions.len(),
                updates = aside_updates.len(),
                "outbox entries of partitions not owned set aside"
            );
        }
        if let Some((last, _)) = actions.last() {
            self.projection.mark_published(Stream::Actions, *last, &confirmed_actions, &aside_actions)?;
        }
        if let Some((last, _)) = updates.last() {
            self.projection.mark_published(Stream::Payments, *last, &confirmed_updates, &aside_updates)?;
        }
        Ok(())
    }

    /// Decodes one outbox entry: its key and partition; `None` for an action already in the topic.
    fn outbox_item<'a>(
        &self,
        stream: Stream,
        cursor: u64,
        bytes: &'a [u8],
    ) -> Result<Option<OutboxItem<'a>>, KafkaLogError> {
        let bad = |why: String| KafkaLogError::BadMessage {
            topic: format!("outbox/{}", self.topic_of(stream)),
            partition: -1,
            offset: i64::try_from(cursor).unwrap_or(-1),
            why,
        };
        let (key, partition) = match stream {
            Stream::Actions => {
                let a: Action = paystate_projector::published::parse_action(bytes).map_err(bad)?;
                let key = a.key.to_string();
                let p = partition_of(key.as_bytes(), self.partitions);
                if lock(&self.published_ids).get(&p).is_some_and(|ids| ids.contains(a.id.as_str())) {
                    return Ok(None); // already in the topic (produced before a crash or by a previous owner)
                }
                (key, p)
            }
            Stream::Payments => {
                let u: UpdateEnvelope = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
                let history = u.snapshot.as_ref().map(|s| history_messages(&u.key, s)).transpose().map_err(bad)?;
                return Ok(Some(OutboxItem {
                    cursor,
                    key: u.key,
                    partition: u.partition,
                    bytes,
                    history: history.unwrap_or_default(),
                }));
            }
        };
        Ok(Some(OutboxItem { cursor, key, partition, bytes, history: Vec::new() }))
    }

    fn topic_of(&self, stream: Stream) -> &str {
        match stream {
            Stream::Actions => &self.cfg.actions_topic,
            Stream::Payments => &self.cfg.payments_topic,
        }
    }

    /// Produces `actions` and then `updates` (all of raw partition `p`; an update's history messages before
    /// it) to partition `p` of their topics in one transaction of `producer`, and returns, once committed,
    /// the offset after the last action and after the last update (`None` where there were none).
    fn publish_transaction(
        &self,
        producer: &FutureProducer,
        p: u32,
        actions: &[OutboxItem<'_>],
        updates: &[OutboxItem<'_>],
    ) -> Result<[Option<u64>; 2], KafkaLogError> {
        if actions.is_empty() && updates.is_empty() {
            return Ok([None, None]);
        }
        let pi = i32::try_from(p).map_err(|_| KafkaLogError::NotConfirmed(format!("partition {p}")))?;
        let from = lock(&self.previous_round_start).get(&p).copied().unwrap_or(0).to_string();
        producer.begin_transaction().map_err(|e| self.abort(producer, p, e))?;
        // Deliveries of [actions, updates]; the history messages' only need to succeed.
        let mut pending: [Vec<_>; 2] = [Vec::with_capacity(actions.len()), Vec::with_capacity(updates.len())];
        let mut history = Vec::new();
        for (i, (stream, items)) in [(Stream::Actions, actions), (Stream::Payments, updates)].into_iter().enumerate() {
            let topic = self.topic_of(stream);
            for item in items {
                for (key, value) in &item.history {
                    let record = FutureRecord::to(&self.cfg.history_topic).partition(pi).key(key);
                    let record = match value {
                        Some(v) => record.payload(v.as_slice()),
                        None => record, // a tombstone: the event was removed
                    };
                    match producer.send_result(record) {
                        Ok(delivery) => history.push(delivery),
                        Err((e, _)) => return Err(self.abort(producer, p, e)),
                    }
                }
                let mut record = FutureRecord::to(topic).partition(pi).key(&item.key).payload(item.bytes);
                if stream == Stream::Payments {
                    let header = Header { key: ACTIONS_FROM, value: Some(&from) };
                    record = record.headers(OwnedHeaders::new().insert(header));
                }
                match producer.send_result(record) {
                    Ok(delivery) => pending[i].push(delivery),
                    Err((e, _)) => return Err(self.abort(producer, p, e)),
                }
            }
        }
        // The offset of a confirmed delivery; a failed one aborts the transaction.
        let confirmed = |delivery: rdkafka::producer::DeliveryFuture| match self.runtime.block_on(delivery) {
            Ok(Ok(d)) => Ok(d.offset),
            Ok(Err((e, _))) => Err(self.abort(producer, p, e)),
            Err(_) => Err(self.abort(producer, p, KafkaError::Canceled)),
        };
        let mut ends = [None, None];
        for (i, deliveries) in pending.into_iter().enumerate() {
            for delivery in deliveries {
                if let Ok(o) = u64::try_from(confirmed(delivery)?) {
                    ends[i] = Some(ends[i].unwrap_or(0).max(o + 1));
                }
            }
        }
        for delivery in history {
            confirmed(delivery)?;
        }
        producer.commit_transaction(Duration::from_secs(300)).map_err(|e| self.abort(producer, p, e))?;
        Ok(ends)
    }

    /// Aborts the open transaction of `producer` where `e` allows it, and classifies `e` (a fatal error is
    /// classified by the producer's fatal error, which tells fencing apart).
    fn abort(&self, producer: &FutureProducer, p: u32, e: KafkaError) -> KafkaLogError {
        // After a fatal error (being fenced is one) what fails next says little (a purged message): the
        // producer's fatal error is the cause.
        let err = match producer.client().fatal_error() {
            Some((code, why)) => txn_error(p, KafkaError::MessageProduction(code)).with_detail(&why),
            None => txn_error(p, e),
        };
        if !matches!(err, KafkaLogError::Fenced { .. }) {
            if let Err(abort) = producer.abort_transaction(Duration::from_secs(60)) {
                tracing::warn!(partition = p, error = %abort, "aborting the transaction failed");
            }
        }
        err
    }
}

impl KafkaLogError {
    /// The error with the broker's own words added.
    fn with_detail(self, detail: &str) -> KafkaLogError {
        match self {
            KafkaLogError::Fenced { partition, why } => {
                KafkaLogError::Fenced { partition, why: format!("{why}: {detail}") }
            }
            KafkaLogError::NotConfirmed(why) => KafkaLogError::NotConfirmed(format!("{why}: {detail}")),
            other => other,
        }
    }
}

/// The offsets after the last action and after the last update a transaction committed (`None`: none).
type Ends = [Option<u64>; 2];

/// One outbox entry on its way to a topic.
struct OutboxItem<'a> {
    cursor: u64,
    key: String,
    partition: u32,
    bytes: &'a [u8],
    /// For a payment update: its history messages.
    history: Vec<HistoryMessage>,
}

/// A history-topic message: key, and value (`None`: a tombstone).
type HistoryMessage = (String, Option<Vec<u8>>);

/// The history-topic messages of a payment update's snapshot: one per event its batch applied, a
/// tombstone per event it removed. Snapshots of earlier formats (whole histories) have none.
fn history_messages(key: &str, snapshot: &serde_json::Value) -> Result<Vec<HistoryMessage>, String> {
    use paystate_projector::published::history_key;
    if snapshot.get("format").and_then(serde_json::Value::as_u64) != Some(paystate_projector::SNAPSHOT_FORMAT) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for ev in snapshot.get("applied").and_then(serde_json::Value::as_array).into_iter().flatten() {
        let id = ev.get("id").and_then(serde_json::Value::as_str).ok_or("an applied event without id")?;
        let value = paystate_projector::published::history_message(key, ev).map_err(|e| e.to_string())?;
        out.push((history_key(key, id), Some(value)));
    }
    for id in snapshot.get("removed").and_then(serde_json::Value::as_array).into_iter().flatten() {
        let id = id.as_str().ok_or("a removed event id that is not a string")?;
        out.push((history_key(key, id), None));
    }
    Ok(out)
}

/// Classifies a producer error of partition `p`'s transactional producer: being fenced (another member
/// took the partition) is [`KafkaLogError::Fenced`]; anything else means the round was not confirmed.
fn txn_error(p: u32, e: KafkaError) -> KafkaLogError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch) => {
            KafkaLogError::Fenced { partition: p, why: e.to_string() }
        }
        _ => KafkaLogError::NotConfirmed(format!("transaction of partition {p}: {e}")),
    }
}
