//! A projector of the Kafka log: one member of a consumer group.
//!
//! **Position of record.** Each partition's next offset is stored in sled in the same transaction as the
//! states it produced (the [`Folder`] commit). On assignment the consumer is pointed at those offsets; the
//! offsets committed to Kafka are for lag monitoring only.
//!
//! **Restore.** A partition this store never held (or holds behind what the topics say) is restored from
//! the compacted payments and history topics: the latest update of every payment carries its ledger and
//! event count (`snapshot`) and the raw offset it reflects, the history topic every applied event.
//! Updates are published in commit order, so the highest offset found, M, means every change at or before
//! M is in the topics; the partition resumes the raw topic at M + 1.
//!
//! **Outbox.** Actions and payment updates are committed to sled streams with the batch; the publisher
//! produces them (actions first, then updates, so a restored state never claims an action that was not
//! delivered) and moves its cursor only after the round is committed. Anything produced but not committed
//! before a crash is produced again; to keep the actions topic free of repeats, a projector that takes a
//! partition first reads what that partition of the actions topic already holds (from its last confirmed
//! offset, or after a restore from the `paystate-actions-from` header of the newest restored update) and
//! skips those action ids. On a revocation the outbox is published completely before the partition is
//! released.
//!
//! **Fencing.** Raw partition P's actions and updates go to partition P of both projection topics, and only
//! through a transactional producer whose `transactional.id` is `<group>.<raw topic>.<P>`, created when the
//! partition is taken: its `init_transactions` makes the broker abort whatever the previous owner left open
//! and refuse that owner's producer from then on (zombie fencing). A member that was paused through a
//! rebalance (`SIGSTOP`, a long stall) and comes back can therefore not add anything to P's topics once
//! the new owner holds P: its commit fails with a fencing error and the projector stops
//! ([`KafkaLogError::Fenced`]). Each publish round of a partition is one transaction, so consumers with
//! `isolation.level=read_committed` see a round whole or not at all. Outbox entries of a partition this
//! member does not own when they are due are set aside in the store (not lost: a crash may have left them,
//! before the group handed the partition back) and published, deduplicated, when it takes that partition
//! again; whoever else takes it meanwhile derives them again from the raw topic.

mod outbox;
mod restore;
#[cfg(test)]
mod tests;

use crate::group::GroupWatch;
use crate::reader::{read_partitions, reader, retrying, ReaderContext};
use crate::{record_of, KafkaConfig, KafkaLogError};
use paystate_core::{partition_of, Action, PaymentEvent};
use paystate_projector::{Folder, Progress, Snapshot};
use paystate_store::{LogRecord, LogView, Projection, Stream};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Header on payments-topic messages: a lower bound of the actions-topic offsets (in the same partition) of
/// every action derived after the raw offset the update reflects. It is the actions topic's confirmed end
/// at the start of the previous publish round: the actions of an update's batch went out in its own round
/// or the one before. A restore reads published action ids from there instead of from the beginning.
const ACTIONS_FROM: &str = "paystate-actions-from";

/// A projector stepped by hand ([`KafkaProjector::step`]) publishes the outbox at most this often under
/// load (and whenever the consumer is idle); [`KafkaProjector::run`]'s publisher thread publishes as soon as
/// there is something to publish, and looks at least this often.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Settings of a projector process.
#[derive(Debug, Clone)]
pub struct ProjectorOptions {
    /// Consumer group.
    pub group: String,
    /// Most records per sled transaction.
    pub batch_max: usize,
    /// How long a batch gathers records after the first one.
    pub gather: Duration,
    /// Session timeout: how soon the group notices a dead member.
    pub session_timeout: Duration,
    /// How long the member may go without polling (a stalled projector) before it is put out of the
    /// group and its partitions move; at least `session_timeout`.
    pub max_poll_interval: Duration,
    /// The raw topic's partition count when the caller knows it (from [`crate::ensure_topics`]); `None`:
    /// asked from the cluster.
    pub partitions: Option<u32>,
    /// Stripe seconds after a decline before it is announced, unless another attempt got somewhere.
    pub failure_grace_secs: i64,
    /// Entries each projection stream (the outbox) keeps once published.
    pub stream_retention: u64,
    /// Skip records deleted by the raw topic's retention before they were applied (logged) instead of
    /// stopping the partition and reporting it ([`KafkaEnds`]' retention gaps).
    pub accept_retention_gaps: bool,
    /// Where this member's admin API answers for other members (`http://host:port`), carried in its
    /// client id so that any member can forward a query for a payment it does not own; `None`: it cannot
    /// be asked.
    pub admin_url: Option<String>,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        ProjectorOptions {
            group: "paystate-projector".into(),
            batch_max: 512,
            gather: Duration::from_millis(5),
            session_timeout: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(300),
            partitions: None,
            failure_grace_secs: paystate_core::DEFAULT_FAILURE_GRACE_SECS,
            stream_retention: paystate_projector::DEFAULT_STREAM_RETENTION,
            accept_retention_gaps: false,
            admin_url: None,
        }
    }
}

/// What restoring one partition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreReport {
    /// Partition.
    pub partition: u32,
    /// Payment-topic messages read.
    pub messages: u64,
    /// Payments installed.
    pub payments: u64,
    /// Raw-topic offset the partition resumes at.
    pub resume_at: u64,
    /// Offset of the actions topic from which published action ids are read (see `ACTIONS_FROM`).
    pub actions_from: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// The raw topic's partition ends as this projector last saw them (for status and lag).
#[derive(Debug)]
pub struct KafkaEnds {
    ends: Arc<Vec<AtomicU64>>,
    /// The group's view, refreshed by the projector's [`GroupWatch`].
    group: Arc<Mutex<Option<paystate_store::GroupView>>>,
    /// Owned partitions stopped at a retention gap.
    gaps: Mutex<BTreeMap<u32, paystate_store::RetentionGap>>,
}

impl LogView for KafkaEnds {
    fn partitions(&self) -> u32 {
        u32::try_from(self.ends.len()).unwrap_or(u32::MAX)
    }
    fn end(&self, partition: u32) -> u64 {
        self.ends.get(partition as usize).map_or(0, |e| e.load(Ordering::Acquire))
    }
    fn group(&self) -> Option<paystate_store::GroupView> {
        lock(&self.group).clone()
    }
    fn retention_gaps(&self) -> Vec<paystate_store::RetentionGap> {
        lock(&self.gaps).values().copied().collect()
    }
}

/// One payment update as stored in the outbox and published to the payments topic.
#[derive(Deserialize)]
struct UpdateEnvelope {
    key: String,
    partition: u32,
    offset: u64,
    snapshot: Option<serde_json::Value>,
}

struct Shared {
    cfg: KafkaConfig,
    projection: Projection,
    partitions: u32,
    /// The consumer group: the prefix of the transactional ids.
    group: String,
    /// One transactional producer per owned raw partition (see the module docs: fencing).
    producers: Mutex<HashMap<u32, FutureProducer>>,
    runtime: tokio::runtime::Handle,
    /// Next raw offset to apply, per owned partition.
    next: Mutex<HashMap<u32, u64>>,
    /// Action ids already in the actions topic, per owned partition, found when the partition was taken.
    published_ids: Mutex<HashMap<u32, HashSet<String>>>,
    /// A failure in a rebalance callback; the run loop returns it.
    fatal: Mutex<Option<KafkaLogError>>,
    /// Set for good once the projector failed: from then on it neither publishes nor takes partitions,
    /// even while its consumer is closed (taking one would fence its new owner).
    failed: AtomicBool,
    restores: Mutex<Vec<RestoreReport>>,
    /// The actions topic's confirmed ends at the start of the previous publish round (empty: 0, safe).
    previous_round_start: Mutex<HashMap<u32, u64>>,
    /// Held by a publish round and by the taking of partitions: one at a time, so that no round publishes
    /// for a partition whose restore and id scan are not done, and no producer runs two transactions.
    publishing: Mutex<()>,
    /// Commits of the consumer so far; the publisher thread waits on `committed_signal` for a new one.
    commits: Mutex<u64>,
    committed_signal: std::sync::Condvar,
}

/// Four hex digits that differ between processes started in the same second on one host.
fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{:04x}", (nanos ^ std::process::id()) & 0xffff)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Context {
    shared: Arc<Shared>,
    ends: Arc<KafkaEnds>,
    raw_topic: String,
}

impl ClientContext for Context {
    /// librdkafka's periodic statistics carry each fetched partition's high watermark: the log ends for
    /// status and lag, with no request of our own to the broker.
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(topic) = statistics.topics.get(&self.raw_topic) {
            for (p, part) in &topic.partitions {
                let (Ok(p), Ok(hi)) = (usize::try_from(*p), u64::try_from(part.hi_offset)) else { continue };
                if let Some(e) = self.ends.ends.get(p) {
                    e.fetch_max(hi, Ordering::AcqRel);
                }
            }
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Everything committed for these partitions goes out before another member takes them (unless
            // this member already failed: fenced, it must not write at all). Under the publishing lock until
            // their producers are gone: no round of the publisher thread in between.
            let _round = lock(&self.shared.publishing);
            let round_failed = match self.shared.publish_locked() {
                Ok(()) => false,
                Err(e @ KafkaLogError::Fenced { .. }) => {
                    self.shared.fail(e);
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, "publishing the outbox before a revocation failed");
                    true
                }
            };
            let mut next = lock(&self.shared.next);
            let mut ids = lock(&self.shared.published_ids);
            let mut producers = lock(&self.shared.producers);
            if round_failed {
                // Some partitions' transactions of the failed round may be committed while the cursors did
                // not move: no round may run again with these producers (the range assignor revokes every
                // partition anyway). What is left is set aside at the next round and published,
                // deduplicated against the topics, when a partition is taken again.
                producers.clear();
            }
            let mut gaps = lock(&self.ends.gaps);
            for e in tpl.elements() {
                if let Ok(p) = u32::try_from(e.partition()) {
                    next.remove(&p);
                    ids.remove(&p);
                    producers.remove(&p);
                    gaps.remove(&p); // the next owner finds it again
                }
            }
            tracing::info!(partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if self.shared.failed.load(Ordering::Acquire) {
                // A failed member (fenced, say) takes nothing, even while it is closed: it would fence the
                // members that hold the partitions now.
                tracing::info!("partitions assigned to a failed projector: not taken");
                return;
            }
            let parts: Vec<u32> = tpl.elements().iter().filter_map(|e| u32::try_from(e.partition()).ok()).collect();
            let mut positioned = TopicPartitionList::new();
            match self.shared.take_partitions(&parts) {
                Ok(positions) => {
                    for (p, at) in positions {
                        let offset = i64::try_from(at).map_or(Offset::End, Offset::Offset);
                        let pi = i32::try_from(p).unwrap_or(0);
                        if let Err(err) = positioned.add_partition_offset(&self.raw_topic, pi, offset) {
                            self.shared.fail(err.into());
                        }
                    }
                }
                Err(err) => self.shared.fail(err),
            }
            // Start each partition at the position stored in sled, not at Kafka's committed offset.
            if let Err(err) = consumer.assign(&positioned) {
                self.shared.fail(err.into());
            }
            tracing::info!(partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions assigned");
        }
    }
}

impl Shared {
    /// The state of a member of `group` owning nothing yet.
    fn new(
        cfg: &KafkaConfig,
        projection: Projection,
        partitions: u32,
        group: &str,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Shared {
            cfg: cfg.clone(),
            projection,
            partitions,
            group: group.to_owned(),
            producers: Mutex::new(HashMap::new()),
            runtime,
            next: Mutex::new(HashMap::new()),
            published_ids: Mutex::new(HashMap::new()),
            fatal: Mutex::new(None),
            failed: AtomicBool::new(false),
            restores: Mutex::new(Vec::new()),
            previous_round_start: Mutex::new(HashMap::new()),
            publishing: Mutex::new(()),
            commits: Mutex::new(0),
            committed_signal: std::sync::Condvar::new(),
        }
    }

    /// `Err` with the failure once the projector failed (see [`Shared::fail`]).
    fn not_failed(&self) -> Result<(), KafkaLogError> {
        match self.failed.load(Ordering::Acquire) {
            true => Err(lock(&self.fatal)
                .take()
                .unwrap_or_else(|| KafkaLogError::NotConfirmed("the projector failed before".into()))),
            false => Ok(()),
        }
    }

    fn fail(&self, e: KafkaLogError) {
        tracing::error!(error = %e, "projector failure (in a rebalance or the publisher)");
        self.failed.store(true, Ordering::Release);
        lock(&self.fatal).get_or_insert(e);
    }

    /// Prepares newly assigned partitions for consumption: restores those the store never held, learns
    /// which actions their actions-topic partitions already hold, and returns the raw offset each resumes
    /// at. One reader client reads all of them at once.
    fn take_partitions(&self, parts: &[u32]) -> Result<Vec<(u32, u64)>, KafkaLogError> {
        let _no_round = lock(&self.publishing);
        // Checked under the lock too (see `publish`): a member that failed while this waited must not fence
        // the partitions' new owners.
        if self.failed.load(Ordering::Acquire) {
            tracing::info!(partitions = ?parts, "the projector failed: partitions not taken");
            return Ok(Vec::new());
        }
        // Fence the previous owners first: their open transactions are aborted, so what is read below is
        // all they will ever have published.
        // In parallel: each init_transactions is a few round trips to the transaction coordinator.
        let producers: Vec<(u32, Result<FutureProducer, KafkaLogError>)> = std::thread::scope(|scope| {
            let handles: Vec<_> =
                parts.iter().map(|&p| (p, scope.spawn(move || self.transactional_producer(p)))).collect();
            handles
                .into_iter()
                .map(|(p, h)| {
                    let r = h.join().unwrap_or_else(|_| Err(KafkaLogError::NotConfirmed(format!("producer {p}"))));
                    (p, r)
                })
                .collect()
        });
        for (p, producer) in producers {
            lock(&self.producers).insert(p, producer?);
        }
        let reader = reader(&self.cfg)?;
        let mut stored = Vec::new();
        let mut missing = Vec::new();
        let mut payments_ends = HashMap::new();
        for &p in parts {
            let pi = i32::try_from(p).map_err(|_| KafkaLogError::Timeout("partition".into()))?;
            let topic = &self.cfg.payments_topic;
            let (_, high) = retrying(topic, || reader.fetch_watermarks(topic, pi, Duration::from_secs(30)))?;
            let high = u64::try_from(high).unwrap_or(0);
            payments_ends.insert(p, high);
            let written_up_to = self.projection.payments_end(p)?;
            match self.projection.stored_position(p)? {
                // Another member published for p since this store last did: what is held here is behind
                // what the topics say, so it is dropped and p restored from them instead.
                Some(_) if high > written_up_to => {
                    tracing::info!(
                        partition = p,
                        topic_end = high,
                        written_up_to,
                        "another member published for this partition since this store did: restoring it"
                    );
                    missing.push(p);
                }
                Some(pos) => stored.push((p, pos, self.projection.confirmed_end(p)?)),
                None => missing.push(p),
            }
        }
        let mut positions: Vec<(u32, u64)> = stored.iter().map(|(p, pos, _)| (*p, *pos)).collect();
        let mut scan_from: Vec<(u32, u64)> = stored.iter().map(|(p, _, c)| (*p, *c)).collect();
        if !missing.is_empty() {
            let forgotten = self.projection.forget_partitions(&missing, self.partitions)?;
            if forgotten > 0 {
                tracing::info!(partitions = ?missing, payments = forgotten, "local state of the partitions dropped");
            }
            for report in self.restore(&reader, &missing)? {
                let end = payments_ends.get(&report.partition).copied().unwrap_or(0);
                self.projection.set_payments_end(report.partition, end)?;
                positions.push((report.partition, report.resume_at));
                scan_from.push((report.partition, report.actions_from));
                lock(&self.restores).push(report);
            }
        }
        let mut ids: HashMap<u32, HashSet<String>> = scan_from.iter().map(|(p, _)| (*p, HashSet::new())).collect();
        let topic = self.cfg.actions_topic.clone();
        read_partitions(&reader, &topic, &scan_from, |p, m| {
            let (offset, payload) = (m.offset(), m.payload());
            #[derive(Deserialize)]
            struct IdOnly {
                id: String,
            }
            let Some(payload) = payload else { return Ok(()) };
            let a: IdOnly = serde_json::from_slice(payload).map_err(|e| KafkaLogError::BadMessage {
                topic: topic.clone(),
                partition: i32::try_from(p).unwrap_or(-1),
                offset,
                why: e.to_string(),
            })?;
            ids.entry(p).or_default().insert(a.id);
            Ok(())
        })?;
        lock(&self.published_ids).extend(ids);
        for &p in parts {
            self.publish_aside(p)?;
        }
        let mut next = lock(&self.next);
        for (p, pos) in &positions {
            next.insert(*p, *pos);
        }
        Ok(positions)
    }
}

/// A projector of the Kafka log (see the module docs).
pub struct KafkaProjector {
    shared: Arc<Shared>,
    consumer: BaseConsumer<Context>,
    options: ProjectorOptions,
    ends: Arc<KafkaEnds>,
    committed: watch::Sender<u64>,
    last_publish: Mutex<Instant>,
    /// Set while [`KafkaProjector::run`]'s publisher thread publishes the outbox (else `step` does).
    publisher_thread: AtomicBool,
    /// A client of its own for the rare watermark query (a gap check): on the consumer's connection it
    /// would queue behind long fetches. Created at the first gap.
    watermarks: Mutex<Option<BaseConsumer>>,
    /// Refreshes the group's view for status and metrics; stops with the projector.
    _group_watch: GroupWatch,
}

impl std::fmt::Debug for KafkaProjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProjector").field("group", &self.options.group).finish()
    }
}

impl KafkaProjector {
    /// The first retained offset of a raw-topic partition, asked on the watermarks client.
    fn low_watermark(&self, topic: &str, partition: i32) -> Result<i64, KafkaLogError> {
        let mut client = lock(&self.watermarks);
        if client.is_none() {
            *client = Some(self.shared.cfg.client(&[("group.id", "paystate-watermarks")]).create()?);
        }
        let Some(client) = client.as_ref() else { return Err(KafkaLogError::Timeout("watermarks client".into())) };
        Ok(client.fetch_watermarks(topic, partition, Duration::from_secs(5))?.0)
    }

    /// A group member folding `cfg.raw_topic` into `projection`. `runtime` runs the producer's delivery
    /// futures; the projector itself is blocking (call [`KafkaProjector::run`] on its own thread).
    pub fn new(
        cfg: &KafkaConfig,
        projection: Projection,
        options: ProjectorOptions,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, KafkaLogError> {
        let partitions = match options.partitions {
            Some(n) => n,
            None => crate::topic_partitions(cfg, &cfg.raw_topic, Duration::from_secs(10))?,
        };
        let shared = Arc::new(Shared::new(cfg, projection, partitions, &options.group, runtime));
        let ends = Arc::new(KafkaEnds {
            ends: Arc::new((0..partitions).map(|_| AtomicU64::new(0)).collect()),
            group: Arc::new(Mutex::new(None)),
            gaps: Mutex::new(BTreeMap::new()),
        });
        let owned = {
            let shared = Arc::clone(&shared);
            Arc::new(move || lock(&shared.next).keys().copied().collect::<Vec<u32>>())
        };
        // Named so that the group's view (and `kafka-consumer-groups`) tells members apart.
        let name = format!("paystate-project-{}-{}", std::process::id(), unique_suffix());
        let client_id = crate::group::client_id(&name, options.admin_url.as_deref());
        let (view, group_ends) = (Arc::clone(&ends.group), Arc::clone(&ends.ends));
        let group_watch = GroupWatch::start(cfg, &options.group, &client_id, partitions, owned, group_ends, view)?;
        let session = options.session_timeout.as_millis().to_string();
        let heartbeat = (options.session_timeout.as_millis() / 4).max(100).to_string();
        let max_poll = options.max_poll_interval.max(options.session_timeout).as_millis().to_string();
        let consumer: BaseConsumer<Context> = cfg
            .client(&[
                ("group.id", &options.group),
                ("client.id", &client_id),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("session.timeout.ms", &session),
                ("heartbeat.interval.ms", &heartbeat),
                ("max.poll.interval.ms", &max_poll),
                ("partition.assignment.strategy", "range"),
                ("statistics.interval.ms", "1000"),
            ])
            .create_with_context(Context {
                shared: Arc::clone(&shared),
                ends: Arc::clone(&ends),
                raw_topic: cfg.raw_topic.clone(),
            })?;
        consumer.subscribe(&[&cfg.raw_topic])?;
        let (committed, _) = watch::channel(0);
        Ok(KafkaProjector {
            shared,
            consumer,
            options,
            ends,
            committed,
            last_publish: Mutex::new(Instant::now()),
            publisher_thread: AtomicBool::new(false),
            watermarks: Mutex::new(None),
            _group_watch: group_watch,
        })
    }

    /// The raw topic's partition ends as last seen (a [`LogView`] for status and lag).
    pub fn ends(&self) -> Arc<KafkaEnds> {
        Arc::clone(&self.ends)
    }

    /// Changes after every commit (stream long-polls wait on it).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Partitions restored from the payments topic so far.
    pub fn restores(&self) -> Vec<RestoreReport> {
        lock(&self.shared.restores).clone()
    }

    /// Consumes, folds and commits until `stop` is set, while a thread of its own publishes the outbox
    /// (so that the brokers' round trips of a publish round never hold up consuming); then publishes what
    /// is left and leaves the group. Blocking.
    pub fn run(&self, stop: &AtomicBool) -> Result<Progress, KafkaLogError> {
        let done = AtomicBool::new(false);
        self.publisher_thread.store(true, Ordering::Release);
        let consumed = std::thread::scope(|scope| {
            let publisher = scope.spawn(|| self.publish_until(&done));
            let mut total = Progress::default();
            let result = loop {
                if stop.load(Ordering::Acquire) {
                    break Ok(total);
                }
                match self.step() {
                    Ok(p) => {
                        total.records += p.records;
                        total.applied += p.applied;
                        total.duplicates += p.duplicates;
                        total.actions += p.actions;
                        total.dead += p.dead;
                    }
                    Err(e) => break Err(e),
                }
            };
            done.store(true, Ordering::Release);
            self.shared.committed_signal.notify_all();
            if publisher.join().is_err() {
                self.shared.fail(KafkaLogError::NotConfirmed("the publisher thread panicked".into()));
            }
            result
        });
        self.publisher_thread.store(false, Ordering::Release);
        let total = consumed?;
        // The publisher may have failed after the consumer's last step.
        self.shared.not_failed()?;
        self.shared.publish()?;
        self.consumer.unsubscribe();
        Ok(total)
    }

    /// The publisher thread: a round whenever the consumer committed since the last one (at least every
    /// [`PUBLISH_EVERY`]), until `done` or a failure, which fails the projector (the consumer stops at its
    /// next step).
    fn publish_until(&self, done: &AtomicBool) {
        let mut seen = 0;
        while !done.load(Ordering::Acquire) && !self.shared.failed.load(Ordering::Acquire) {
            if let Err(e) = self.publish_and_trim() {
                self.shared.fail(e);
                return;
            }
            let commits = lock(&self.shared.commits);
            let (commits, _) = self
                .shared
                .committed_signal
                .wait_timeout_while(commits, PUBLISH_EVERY, |c| *c == seen && !done.load(Ordering::Acquire))
                .unwrap_or_else(PoisonError::into_inner);
            seen = *commits;
        }
    }

    /// One publish of the outbox, then the trim of what was published.
    fn publish_and_trim(&self) -> Result<(), KafkaLogError> {
        self.shared.publish()?;
        // Only what is published may go: the outbox is the source of the topics.
        let projection = &self.shared.projection;
        paystate_projector::trim_streams(projection, self.options.stream_retention.max(1), |s| {
            projection.published(s)
        })?;
        Ok(())
    }

    /// Gathers one batch (waiting up to 100 ms for the first record), commits it in one sled transaction,
    /// then publishes the outbox. After an error the projector is failed for good (see
    /// [`KafkaLogError::Fenced`]): drop it and start a new one.
    pub fn step(&self) -> Result<Progress, KafkaLogError> {
        self.shared.not_failed()?;
        let result = self.gather_and_commit();
        if result.is_err() {
            self.shared.failed.store(true, Ordering::Release);
        }
        result
    }

    fn gather_and_commit(&self) -> Result<Progress, KafkaLogError> {
        let mut by_partition: BTreeMap<u32, Vec<(u64, LogRecord)>> = BTreeMap::new();
        let mut count = 0usize;
        let mut deadline: Option<Instant> = None;
        loop {
            if let Some(e) = lock(&self.shared.fatal).take() {
                return Err(e);
            }
            let wait = match deadline {
                None => Duration::from_millis(100),
                Some(d) => d.saturating_duration_since(Instant::now()),
            };
            match self.consumer.poll(wait) {
                Some(Ok(m)) => {
                    deadline.get_or_insert_with(|| Instant::now() + self.options.gather);
                    let (Ok(p), Ok(offset)) = (u32::try_from(m.partition()), u64::try_from(m.offset())) else {
                        continue;
                    };
                    if lock(&self.ends.gaps).contains_key(&p) {
                        continue; // stopped at a retention gap
                    }
                    let expected = lock(&self.shared.next).get(&p).copied();
                    let list = by_partition.entry(p).or_default();
                    let next = list.last().map(|(o, _)| o + 1).or(expected);
                    match next {
                        Some(n) if offset < n => continue, // already applied (redelivered after a seek)
                        Some(n) if offset > n => {
                            // Fetched from where Kafka's committed offset pointed before our assign() took
                            // effect, or a real gap. Only retention can make one: go back unless the log
                            // no longer starts at or before `n`.
                            let topic = &self.shared.cfg.raw_topic;
                            let low = self.low_watermark(topic, m.partition())?;
                            let low = u64::try_from(low).unwrap_or(0);
                            if low > n && self.options.accept_retention_gaps {
                                tracing::warn!(
                                    partition = p,
                                    expected = n,
                                    first_retained = low,
                                    "records deleted by retention before they were applied: skipped \
                                     (--accept-retention-gaps)"
                                );
                            } else if low > n {
                                tracing::error!(
                                    partition = p,
                                    expected = n,
                                    first_retained = low,
                                    "records deleted by retention before they were applied: the partition is \
                                     stopped (restart with --accept-retention-gaps to skip them)"
                                );
                                let gap =
                                    paystate_store::RetentionGap { partition: p, expected: n, first_retained: low };
                                lock(&self.ends.gaps).insert(p, gap);
                                let mut tpl = TopicPartitionList::new();
                                tpl.add_partition(topic, m.partition());
                                if let Err(e) = self.consumer.pause(&tpl) {
                                    tracing::warn!(partition = p, error = %e, "pausing the partition failed");
                                }
                                continue;
                            } else {
                                let at = Offset::Offset(i64::try_from(n).unwrap_or(i64::MAX));
                                tracing::debug!(partition = p, expected = n, got = offset, "seeking back");
                                self.consumer.seek(topic, m.partition(), at, Duration::from_secs(5))?;
                                continue;
                            }
                        }
                        _ => {}
                    }
                    list.push((offset, record_of(&m)));
                    count += 1;
                    if count >= self.options.batch_max {
                        break;
                    }
                }
                Some(Err(e)) => {
                    // Fatal (authorization refused, say): stop, before anything of the batch is stored.
                    // Anything else is librdkafka's to retry.
                    if crate::classify(&e) == crate::ErrorClass::Fatal {
                        return Err(KafkaLogError::Kafka(e));
                    }
                    tracing::warn!(error = %e, "consumer error (retried)");
                    if deadline.is_none() {
                        break;
                    }
                }
                None => {
                    if deadline.is_none() || deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                }
            }
        }
        // A failure in a rebalance callback (fenced, say) stops the projector before it writes anything.
        if let Some(e) = lock(&self.shared.fatal).take() {
            return Err(e);
        }
        // Only partitions still owned (a rebalance during the gather may have taken some away).
        let owned: HashSet<u32> = lock(&self.shared.next).keys().copied().collect();
        by_partition.retain(|p, recs| owned.contains(p) && !recs.is_empty());
        let mut progress = Progress::default();
        if !by_partition.is_empty() {
            let mut folder =
                Folder::new(&self.shared.projection, true).with_failure_grace(self.options.failure_grace_secs);
            for (p, recs) in &by_partition {
                folder.add(*p, recs)?;
            }
            // Not flushed here: the raw topic keeps what a crash would lose, and the publisher flushes before
            // anything of it leaves the process (one flush per round instead of one per batch).
            progress = folder.commit_unflushed()?;
            let mut offsets = TopicPartitionList::new();
            {
                let mut next = lock(&self.shared.next);
                for (p, recs) in &by_partition {
                    if let Some((last, _)) = recs.last() {
                        next.insert(*p, last + 1);
                        let pi = i32::try_from(*p).unwrap_or(0);
                        let o = i64::try_from(last + 1).unwrap_or(i64::MAX);
                        offsets.add_partition_offset(&self.shared.cfg.raw_topic, pi, Offset::Offset(o))?;
                    }
                }
            }
            self.committed.send_modify(|g| *g += 1);
            *lock(&self.shared.commits) += 1;
            self.shared.committed_signal.notify_all();
            // For lag monitoring only: the position of record is in sled.
            if let Err(e) = self.consumer.commit(&offsets, CommitMode::Async) {
                tracing::debug!(error = %e, "offset commit to Kafka failed (monitoring only)");
            }
        }
        if self.publisher_thread.load(Ordering::Acquire) {
            return Ok(progress);
        }
        // Stepped by hand: publishing waits for the broker's delivery reports; under load, one round per
        // PUBLISH_EVERY rather than one per batch keeps those round trips off the consuming path.
        let due = {
            let mut last = lock(&self.last_publish);
            let due = progress.records == 0 || last.elapsed() >= PUBLISH_EVERY;
            if due {
                *last = Instant::now();
            }
            due
        };
        if due {
            self.publish_and_trim()?;
        }
        Ok(progress)
    }
}
