//! # paystate-projector
//!
//! Reads each log partition from its stored position, parses and maps every record (`paystate-stripe`),
//! applies it to its payment (`paystate-core`), and commits the batch (new states, the partition's next
//! offset, actions and payment updates for the projection streams, dead letters) in one transaction
//! (`paystate-store`).
//!
//! Delivery guarantee: every durable log record is applied exactly once to the projection: a batch and
//! its offset commit together, so a restart resumes where the last committed batch ended. A record that
//! cannot be parsed or mapped goes to the dead-letter tree with its reason and never stalls its partition.
//! Actions are appended to the `actions` stream once each (the core's ledger refuses a second emission).

use paystate_core::{Action, ApplyError, Effect, History, Payment, PaymentEvent, PaymentKey};
use paystate_store::{
    Batch, DeadLetter, EmbeddedLog, HistoryChanges, LogRecord, Projection, RecordRef, StoreError, StoredHistory, Stream,
};
use paystate_stripe::{map_event, parse_event, Mapped};

pub mod published;
pub mod replay;
pub use published::{
    parse_snapshot, snapshot, Snapshot, ACTION_FORMAT, HISTORY_FORMAT, SNAPSHOT_FORMAT, UPDATE_FORMAT,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// After being woken by an append, how long the projector waits before it drains the log: batches grow
/// from one event to dozens under load, at the price of this much projection latency.
const GATHER: Duration = Duration::from_millis(5);

/// Where the projector reads records from. Implemented by the embedded log; the Kafka log implements it
/// too.
pub trait LogSource: Send + Sync + 'static {
    /// Number of partitions.
    fn partitions(&self) -> u32;
    /// The offset after the last readable (durable) record of `partition`.
    fn end(&self, partition: u32) -> u64;
    /// Up to `max` records of `partition` from `from`.
    fn read(&self, partition: u32, from: u64, max: usize) -> Result<Vec<(u64, LogRecord)>, StoreError>;
    /// Calls `each` with every record of `partition` in `[from, to)`, in offset order; returns how many.
    /// Logs that can lend their records without copying them override this.
    fn scan(
        &self,
        partition: u32,
        from: u64,
        to: u64,
        each: &mut dyn FnMut(u64, RecordRef<'_>),
    ) -> Result<u64, StoreError> {
        let (mut from, mut n) = (from, 0);
        while from < to {
            let records = self.read(partition, from, usize::try_from(to - from).unwrap_or(4096).min(4096))?;
            let Some(&(last, _)) = records.last() else { break };
            for (offset, rec) in &records {
                each(*offset, rec.as_ref());
            }
            n += records.len() as u64;
            from = last + 1;
        }
        Ok(n)
    }
}

impl LogSource for EmbeddedLog {
    fn partitions(&self) -> u32 {
        EmbeddedLog::partitions(self)
    }
    fn end(&self, partition: u32) -> u64 {
        EmbeddedLog::end(self, partition)
    }
    fn read(&self, partition: u32, from: u64, max: usize) -> Result<Vec<(u64, LogRecord)>, StoreError> {
        EmbeddedLog::read(self, partition, from, max)
    }
    fn scan(
        &self,
        partition: u32,
        from: u64,
        to: u64,
        each: &mut dyn FnMut(u64, RecordRef<'_>),
    ) -> Result<u64, StoreError> {
        EmbeddedLog::scan(self, partition, from, to, each)
    }
}

/// Projector errors: only storage can fail; bad records are dead letters, not errors.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// The store failed; the batch was not committed and will be retried.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A state could not be serialized for the streams.
    #[error("encode: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<std::convert::Infallible> for ProjectorError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Records consumed (applied, duplicate, not relevant or dead).
    pub records: u64,
    /// Events applied.
    pub applied: u64,
    /// Duplicates recognized.
    pub duplicates: u64,
    /// Actions emitted.
    pub actions: u64,
    /// Dead letters.
    pub dead: u64,
}

/// The projector over one log and one projection store.
#[derive(Debug)]
pub struct Projector<L> {
    log: L,
    projection: Projection,
    batch_max: usize,
    grace: i64,
    retention: u64,
    committed: watch::Sender<u64>,
    /// The error of the last batch [`Projector::run`] tried, while batches keep failing (for `/readyz`).
    failing: std::sync::Mutex<Option<String>>,
    /// Held by whatever builds and commits a batch (a step, a re-drive of dead letters): a batch reads
    /// payments before its transaction writes them, so two at once would lose one's changes.
    turn: std::sync::Mutex<()>,
}

/// What [`Projector::retry_dead_letters`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Retried {
    /// Dead letters folded now (applied, duplicates or not relevant), removed.
    pub resolved: Vec<DeadLetter>,
    /// Dead letters still dead, with this release's reason.
    pub still_dead: Vec<DeadLetter>,
}

/// Entries each projection stream keeps by default; older ones are removed (a reader behind them is told
/// so: [`StoreError::CursorExpired`]).
pub const DEFAULT_STREAM_RETENTION: u64 = 1_000_000;

/// Removes what lies beyond `keep` entries in both streams, but nothing after `floor(stream)` (what the
/// Kafka outbox has not yet published). Trims in steps of an eighth of `keep`, not after every batch.
pub fn trim_streams(
    projection: &Projection,
    keep: u64,
    floor: impl Fn(Stream) -> Result<u64, StoreError>,
) -> Result<u64, StoreError> {
    let mut removed = 0;
    for stream in [Stream::Actions, Stream::Payments] {
        let (start, end) = (projection.stream_start(stream)?, projection.stream_end(stream)?);
        if end.saturating_sub(start) >= keep.saturating_add(keep / 8) {
            removed += projection.trim_stream(stream, keep, floor(stream)?)?;
        }
    }
    Ok(removed)
}

impl<L: LogSource> Projector<L> {
    /// A projector committing at most `batch_max` records per transaction.
    pub fn new(log: L, projection: Projection, batch_max: usize) -> Self {
        let (committed, _) = watch::channel(0);
        Projector {
            log,
            projection,
            batch_max: batch_max.max(1),
            grace: paystate_core::DEFAULT_FAILURE_GRACE_SECS,
            retention: DEFAULT_STREAM_RETENTION,
            committed,
            failing: std::sync::Mutex::new(None),
            turn: std::sync::Mutex::new(()),
        }
    }

    /// Why [`Projector::run`]'s batches fail, while they do (`None` once one succeeds).
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_failing(&self, why: Option<String>) {
        *self.failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = why;
    }

    /// Keep the newest `entries` of each projection stream (at least 1).
    pub fn with_stream_retention(mut self, entries: u64) -> Self {
        self.retention = entries.max(1);
        self
    }

    /// See [`Folder::with_failure_grace`].
    pub fn with_failure_grace(mut self, secs: i64) -> Self {
        self.grace = secs.max(0);
        self
    }

    /// Changes after every commit (long-polling stream readers wait on it).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// One batch from every partition that has records, committed as ONE transaction (states, every
    /// consumed partition's next offset, stream entries, dead letters) with one flush. Blocking (sled).
    pub fn step(&self) -> Result<Progress, ProjectorError> {
        let _turn = self.turn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut folder = Folder::new(&self.projection, false).with_failure_grace(self.grace);
        for p in 0..self.log.partitions() {
            let from = self.projection.position(p)?;
            if from >= self.log.end(p) {
                continue;
            }
            let records = self.log.read(p, from, self.batch_max)?;
            folder.add(p, &records)?;
        }
        let progress = folder.commit()?;
        if progress.records > 0 {
            self.committed.send_modify(|g| *g += 1);
            trim_streams(&self.projection, self.retention, |_| Ok(u64::MAX))?;
        }
        Ok(progress)
    }

    /// Folds every dead letter's record again (after an upgrade that understands it, say), in one batch:
    /// those that fold now are removed, the others kept. Positions do not move. Blocking.
    pub fn retry_dead_letters(&self) -> Result<Retried, ProjectorError> {
        let _turn = self.turn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut folder = Folder::new(&self.projection, false).with_failure_grace(self.grace);
        let mut out = Retried::default();
        for dead in self.projection.dead_letters()? {
            let record = self.log.read(dead.partition, dead.offset, 1)?.into_iter().next();
            let Some((_, record)) = record.filter(|(o, _)| *o == dead.offset) else {
                // Gone from the log (it cannot be on the embedded one): kept, and said so.
                out.still_dead.push(DeadLetter { reason: "its record is no longer in the log".into(), ..dead });
                continue;
            };
            match folder.redrive(&dead, &record)? {
                None => out.resolved.push(dead),
                Some(reason) => out.still_dead.push(DeadLetter { reason, ..dead }),
            }
        }
        if folder.commit()?.records > 0 {
            self.committed.send_modify(|g| *g += 1);
        }
        Ok(out)
    }

    /// Applies every record currently readable. Blocking.
    pub fn catch_up(&self) -> Result<Progress, ProjectorError> {
        let mut total = Progress::default();
        loop {
            let p = self.step()?;
            if p.records == 0 {
                return Ok(total);
            }
            total.records += p.records;
            total.applied += p.applied;
            total.duplicates += p.duplicates;
            total.actions += p.actions;
            total.dead += p.dead;
        }
    }
}

/// What a log record means to the projection: a payment event, `None` when it is about no payment (kept in
/// the log, not folded), or the dead-letter reason when it cannot be used. The one place both the live
/// projectors and replay interpret a record.
pub fn classify(body: &[u8]) -> Result<Option<PaymentEvent>, String> {
    let parsed = parse_event(body).map_err(|e| format!("{}: {e}", e.code()))?;
    match map_event(&parsed) {
        Ok(Mapped::Payment(ev)) => Ok(Some(ev)),
        Ok(Mapped::NotRelevant(_)) => Ok(None),
        Err(e) => Err(format!("unmappable: {e}")),
    }
}

/// What folding one log record did (see [`fold_record`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folded {
    /// About no payment: kept in the log, not folded.
    NotRelevant,
    /// Unusable (unparseable, unmappable, misrouted): a dead letter with this reason.
    Dead(String),
    /// Created after the `until` of a time-travelling replay: not folded.
    AfterUntil,
    /// The event, or a twin of it, was applied before: nothing changed.
    Duplicate {
        /// The event's Stripe `created`.
        created: i64,
    },
    /// Applied to the payment `key`; these actions became due.
    Applied {
        /// The payment's key (`acct_…/pi_…` or `pi_…`).
        key: String,
        /// The event's Stripe `created`.
        created: i64,
        /// Actions due for the first time.
        actions: Vec<Action>,
    },
}

/// The fold of one log record, the one place its semantics live: classify the body (parse, map), skip it
/// after `until`, look its payment and its history up with `payment` and apply it. The live projectors
/// (embedded and Kafka), replay and `paystate fold` all call this, so that a change to what an event means
/// is one change.
pub fn fold_record<'p, H, E>(
    body: &[u8],
    until: Option<i64>,
    payment: impl FnOnce(&PaymentKey) -> Result<(&'p mut Payment, H), E>,
) -> Result<Folded, E>
where
    H: History,
    E: From<H::Error>,
{
    let event = match classify(body) {
        Ok(Some(event)) => event,
        Ok(None) => return Ok(Folded::NotRelevant),
        Err(reason) => return Ok(Folded::Dead(reason)),
    };
    if until.is_some_and(|t| event.created > t) {
        return Ok(Folded::AfterUntil);
    }
    let (key, created) = (event.key.to_string(), event.created);
    let (p, mut history) = payment(&event.key)?;
    Ok(match p.apply(event, &mut history) {
        Ok(applied) if matches!(applied.effect, Effect::Duplicate { .. }) => Folded::Duplicate { created },
        Ok(applied) => Folded::Applied { key, created, actions: applied.actions },
        Err(ApplyError::History(e)) => return Err(e.into()),
        Err(e @ ApplyError::WrongPayment { .. }) => Folded::Dead(format!("misrouted: {e}")),
    })
}

/// One projector batch being built: records of any partitions are folded into it, then it commits as one
/// transaction. Shared by the embedded projector and the Kafka projector.
#[derive(Debug)]
pub struct Folder<'a> {
    projection: &'a Projection,
    batch: Batch,
    touched: Vec<(String, u32, u64)>,
    records: u64,
    snapshots: bool,
    grace: i64,
}

impl<'a> Folder<'a> {
    /// An empty batch over `projection`. With `snapshots`, every payment update carries the payment's full
    /// fold state (`snapshot`), from which a projector of the Kafka log restores a partition.
    pub fn new(projection: &'a Projection, snapshots: bool) -> Self {
        Folder {
            projection,
            batch: Batch::default(),
            touched: Vec::new(),
            records: 0,
            snapshots,
            grace: paystate_core::DEFAULT_FAILURE_GRACE_SECS,
        }
    }

    /// Failures are announced this many Stripe seconds after the decline, when no other attempt got
    /// anywhere meanwhile (default [`paystate_core::DEFAULT_FAILURE_GRACE_SECS`]).
    pub fn with_failure_grace(mut self, secs: i64) -> Self {
        self.grace = secs.max(0);
        self
    }

    /// Records consumed so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Applies `records` (consecutive, of `partition`, starting at its stored position) to the batch.
    pub fn add(&mut self, partition: u32, records: &[(u64, LogRecord)]) -> Result<(), ProjectorError> {
        let Some(&(last, _)) = records.last() else { return Ok(()) };
        self.batch.positions.insert(partition, last + 1);
        self.records += records.len() as u64;
        for (offset, rec) in records {
            self.apply(partition, *offset, rec)?;
        }
        Ok(())
    }

    /// Re-drives dead letter `dead` (its record `rec`): folded again through the same step, with whatever
    /// this release understands. Resolved (applied, a duplicate or not relevant now), the dead letter is
    /// removed when the batch commits; still dead, it is kept as it is and the reason returned. The
    /// partition's position does not move.
    pub fn redrive(&mut self, dead: &DeadLetter, rec: &LogRecord) -> Result<Option<String>, ProjectorError> {
        self.records += 1;
        let before = self.batch.dead.len();
        self.apply(dead.partition, dead.offset, rec)?;
        if self.batch.dead.len() > before {
            return Ok(self.batch.dead.pop().map(|d| d.reason));
        }
        self.batch.resolved.push((dead.partition, dead.offset));
        Ok(None)
    }

    /// Folds one record of `partition` at `offset` into the batch.
    fn apply(&mut self, partition: u32, offset: u64, rec: &LogRecord) -> Result<(), ProjectorError> {
        let offset = &offset;
        let projection = self.projection;
        let grace = self.grace;
        let (payments, history) = (&mut self.batch.payments, &mut self.batch.history);
        let mut before = None;
        let mut late = None;
        let folded = fold_record(&rec.body, None, |key| -> Result<_, ProjectorError> {
            let p = load(payments, projection, key)?;
            before = Some(p.next_deadline(grace));
            let changes = history.entry(key.to_string()).or_default();
            Ok((p, StoredHistory::new(projection, key, changes)))
        })?;
        let created = match folded {
            Folded::NotRelevant | Folded::AfterUntil => None,
            Folded::Duplicate { created } => {
                self.batch.duplicates += 1;
                Some(created)
            }
            Folded::Dead(reason) => {
                self.batch.dead.push(DeadLetter {
                    partition,
                    offset: *offset,
                    event_id: rec.event_id.clone(),
                    event_type: rec.event_type.clone(),
                    reason,
                });
                None
            }
            Folded::Applied { key, created, actions } => {
                self.batch.applied += 1;
                for action in &actions {
                    self.batch.actions.push(published::action(action)?);
                }
                if let Some(p) = self.batch.payments.get(&key) {
                    reindex(&mut self.batch.deadlines, partition, &key, before.flatten(), p.next_deadline(grace));
                }
                self.touched.push((key.clone(), partition, *offset));
                late = Some(key);
                Some(created)
            }
        };
        if let Some(created) = created {
            self.advance(partition, *offset, created)?;
        }
        if let Some(key) = late {
            self.announce_late(partition, *offset, &key)?;
        }
        Ok(())
    }

    /// After an event older than its partition's time: a failure it made due by that time (a decline
    /// delivered, or fetched by catch-up, after its grace period passed) is announced now, as it would
    /// have been had the event come in time; the partition's time does not move, so `advance` would not.
    fn announce_late(&mut self, partition: u32, offset: u64, key: &str) -> Result<(), ProjectorError> {
        let now = match self.batch.watermarks.get(&partition) {
            Some(w) => *w,
            None => match self.projection.watermark(partition)? {
                Some(w) => w,
                None => return Ok(()),
            },
        };
        let due = self.batch.payments.get(key).and_then(|p| p.next_deadline(self.grace)).filter(|at| *at <= now);
        if let Some(at) = due {
            self.announce(partition, offset, at, key.to_owned(), now)?;
        }
        Ok(())
    }

    /// Moves `partition`'s event time to `created` (if later) and announces the failures whose grace
    /// period ended by then.
    fn advance(&mut self, partition: u32, offset: u64, created: i64) -> Result<(), ProjectorError> {
        let was = match self.batch.watermarks.get(&partition) {
            Some(w) => Some(*w),
            None => self.projection.watermark(partition)?,
        };
        if was.is_some_and(|w| w >= created) {
            return Ok(());
        }
        let now = created;
        self.batch.watermarks.insert(partition, now);
        // Due: stored deadlines not removed in this batch, and deadlines added in it.
        let mut due: Vec<(i64, String)> = self
            .projection
            .deadlines_until(partition, now)?
            .into_iter()
            .filter(|(at, key)| self.batch.deadlines.get(&(partition, *at, key.clone())) != Some(&false))
            .collect();
        due.extend(
            self.batch
                .deadlines
                .range((partition, i64::MIN, String::new())..(partition, now.saturating_add(1), String::new()))
                .filter(|(_, present)| **present)
                .map(|((_, at, key), _)| (*at, key.clone())),
        );
        due.sort();
        due.dedup();
        for (at, key) in due {
            self.announce(partition, offset, at, key, now)?;
        }
        Ok(())
    }

    /// Tells payment `key`, indexed under deadline `at`, that its partition's time is `now`: the failures
    /// whose grace period ended are announced, the index moves to its next deadline.
    fn announce(&mut self, partition: u32, offset: u64, at: i64, key: String, now: i64) -> Result<(), ProjectorError> {
        let Some(pkey) = PaymentKey::parse(&key) else { return Ok(()) };
        let p = load(&mut self.batch.payments, self.projection, &pkey)?;
        let actions = p.advance(now, self.grace);
        let next = p.next_deadline(self.grace);
        for action in &actions {
            self.batch.actions.push(published::action(action)?);
        }
        reindex(&mut self.batch.deadlines, partition, &key, Some(at), next);
        self.touched.push((key, partition, offset));
        Ok(())
    }

    /// Commits the batch (one transaction, one flush). Nothing is written when no record was added.
    pub fn commit(self) -> Result<Progress, ProjectorError> {
        self.commit_with(true)
    }

    /// Commits the batch as one transaction without flushing it (see
    /// [`paystate_store::Projection::commit_unflushed`]): the caller flushes the projection before anything
    /// derived from the batch is published.
    pub fn commit_unflushed(self) -> Result<Progress, ProjectorError> {
        self.commit_with(false)
    }

    fn commit_with(self, flush: bool) -> Result<Progress, ProjectorError> {
        let Folder { projection, mut batch, touched, records, snapshots, .. } = self;
        if records == 0 {
            return Ok(Progress::default());
        }
        // One update per payment per batch, reflecting the last offset that changed it.
        let mut seen = std::collections::BTreeSet::new();
        for (key, partition, offset) in touched.iter().rev() {
            if seen.insert(key.clone()) {
                if let Some(p) = batch.payments.get(key) {
                    let snapshot = match snapshots {
                        true => Some(snapshot(p, batch.history.get(key).unwrap_or(&HistoryChanges::new()))?),
                        false => None,
                    };
                    batch.updates.push(published::update(key, *partition, *offset, p, snapshot)?);
                }
            }
        }
        batch.updates.reverse();
        // Payments that only saw duplicates are unchanged: no rewrite.
        batch.payments.retain(|k, _| seen.contains(k));
        let progress = Progress {
            records,
            applied: batch.applied,
            duplicates: batch.duplicates,
            actions: batch.actions.len() as u64,
            dead: batch.dead.len() as u64,
        };
        match flush {
            true => projection.commit(&batch)?,
            false => projection.commit_unflushed(&batch)?,
        }
        for d in &batch.dead {
            tracing::warn!(partition = d.partition, offset = d.offset, event_id = %d.event_id, reason = %d.reason, "dead letter");
        }
        Ok(progress)
    }
}

/// The payment `key` of the batch, read from the store the first time the batch needs it.
fn load<'p>(
    payments: &'p mut std::collections::BTreeMap<String, Payment>,
    projection: &Projection,
    key: &PaymentKey,
) -> Result<&'p mut Payment, ProjectorError> {
    Ok(match payments.entry(key.to_string()) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => {
            let stored = projection.payment(e.key())?.unwrap_or_else(|| Payment::new(key.clone()));
            e.insert(stored)
        }
    })
}

/// Records in the index changes that `key`'s deadline moved from `old` to `new`.
fn reindex(
    index: &mut std::collections::BTreeMap<(u32, i64, String), bool>,
    partition: u32,
    key: &str,
    old: Option<i64>,
    new: Option<i64>,
) {
    if old == new {
        return;
    }
    if let Some(at) = old {
        index.insert((partition, at, key.to_owned()), false);
    }
    if let Some(at) = new {
        index.insert((partition, at, key.to_owned()), true);
    }
}

impl<L: LogSource> Projector<L> {
    /// Runs until `shutdown` resolves: applies whatever is readable, then waits for `wake` (new appends)
    /// or a short poll interval. On shutdown the batch in progress is committed before returning.
    pub async fn run(self: Arc<Self>, mut wake: watch::Receiver<u64>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let me = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || me.catch_up()).await {
                Ok(Ok(_)) => self.set_failing(None),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "projector batch failed; retrying");
                    self.set_failing(Some(e.to_string()));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "projector task panicked");
                    self.set_failing(Some(format!("the projector panicked: {e}")));
                }
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = wake.changed() => {
                    // Let a few more appends land so that one transaction and one flush carry many events.
                    tokio::time::sleep(GATHER).await;
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        let me = Arc::clone(&self);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || me.catch_up()).await {
            tracing::error!(error = %e, "final projector batch failed");
        }
    }
}
