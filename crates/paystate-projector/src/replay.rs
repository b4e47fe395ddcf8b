//! Replay: rebuild a projection from the log, from its first record, into a fresh store.
//!
//! Every payment lives in exactly one partition, so partitions fold independently: workers take whole
//! partitions, fold each in memory (no store access per event), then write its payments in sled batches.
//! Memory holds the payments (with their histories) of the partitions being folded, not the log's records:
//! fewer workers, less memory. The fold is the live
//! projector's ([`classify`] then `Payment::apply`), so the same log gives the same states; the digest
//! shows it.
//!
//! With `until`, only events whose Stripe `created` is at or before it are folded: the projection as it
//! was at that moment of Stripe time, whatever the arrival order. Records that cannot be used are dead
//! letters whatever `until` is (their time is unknown).
//!
//! Replay writes payment states, positions, dead letters and totals; it publishes nothing and writes no
//! projection streams (the actions were delivered when the log was projected live).

use crate::{fold_record, Folded, LogSource, ProjectorError};
use paystate_core::{Lifecycle, PaymentWithHistory};
use paystate_store::{digest_of, DeadLetter, Projection, RecordRef, StateHash};
use serde::Serialize;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Records between two updates of the progress counter.
const PROGRESS_EVERY: u64 = 1024;

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    /// Log records read.
    pub read: u64,
    /// Events applied.
    pub applied: u64,
    /// Duplicate deliveries (and twins) recognized.
    pub duplicates: u64,
    /// Records about no payment (kept in the log, not folded).
    pub not_relevant: u64,
    /// Records that could not be used.
    pub dead_lettered: u64,
    /// Events created after `until`, not folded.
    pub after_until: u64,
    /// Payments in the rebuilt projection.
    pub payments: u64,
    /// Payments by lifecycle.
    pub lifecycles: BTreeMap<Lifecycle, u64>,
    /// Each payment's key and state hash, for the digest (in key order once the replay is done).
    #[serde(skip)]
    pub hashes: Vec<StateHash>,
}

impl ReplaySummary {
    /// Adds `o`'s counts to these.
    pub fn merge(&mut self, o: &ReplaySummary) {
        self.read += o.read;
        self.applied += o.applied;
        self.duplicates += o.duplicates;
        self.not_relevant += o.not_relevant;
        self.dead_lettered += o.dead_lettered;
        self.after_until += o.after_until;
        self.payments += o.payments;
        for (l, n) in &o.lifecycles {
            *self.lifecycles.entry(*l).or_default() += n;
        }
        self.hashes.extend(o.hashes.iter().cloned());
    }

    /// The rebuilt projection's digest (the same as `paystate digest` of the output).
    pub fn digest(&mut self) -> String {
        self.hashes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        digest_of(&self.hashes)
    }
}

/// How a replay runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Fold only events created at or before this Stripe time.
    pub until: Option<i64>,
    /// Partitions folded at once.
    pub workers: usize,
    /// Most payments one partition fold keeps in memory. Beyond it, the least recently touched half is
    /// written to the output and read back if a later event needs it: memory stays bounded whatever the
    /// size of the log (a payment with its history is ~12 KB), at the price of reads when a payment's events
    /// lie further apart in its partition than this many other payments.
    pub max_payments: usize,
    /// Stripe seconds after a decline before it is announced (the live projector's `--failure-grace-secs`):
    /// the ledgers of emitted actions come out as the live projector's.
    pub failure_grace_secs: i64,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            until: None,
            workers: 2,
            max_payments: 50_000,
            failure_grace_secs: paystate_core::DEFAULT_FAILURE_GRACE_SECS,
        }
    }
}

/// One partition being replayed: its records are added in offset order, then it is written out.
#[derive(Debug)]
pub struct PartitionFold<'a> {
    partition: u32,
    out: &'a Projection,
    until: Option<i64>,
    max_payments: usize,
    /// In memory: last touch and payment.
    payments: HashMap<String, (u64, PaymentWithHistory)>,
    /// Written to `out` at least once, with the state hash and lifecycle of their latest write.
    written: HashMap<String, ([u8; 32], Lifecycle)>,
    touches: u64,
    dead: Vec<DeadLetter>,
    summary: ReplaySummary,
    next: Option<u64>,
    failed: Option<ProjectorError>,
    grace: i64,
    /// The partition's Stripe time so far (the largest `created` folded), as the live projector keeps it.
    watermark: Option<i64>,
    /// Payments with a failure still to announce, by deadline.
    deadlines: std::collections::BTreeSet<(i64, String)>,
}

impl<'a> PartitionFold<'a> {
    /// An empty fold of `partition` into `out`.
    pub fn new(partition: u32, out: &'a Projection, options: &ReplayOptions) -> Self {
        PartitionFold {
            partition,
            out,
            until: options.until,
            max_payments: options.max_payments.max(2),
            payments: HashMap::new(),
            written: HashMap::new(),
            touches: 0,
            dead: Vec::new(),
            summary: ReplaySummary::default(),
            next: None,
            failed: None,
            grace: options.failure_grace_secs,
            watermark: None,
            deadlines: std::collections::BTreeSet::new(),
        }
    }

    /// Folds the record at `offset`. A store error (reading back or spilling a payment) stops the fold; it
    /// is returned by [`PartitionFold::write`].
    pub fn add(&mut self, offset: u64, rec: RecordRef<'_>) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.try_add(offset, rec) {
            self.failed = Some(e);
        }
    }

    fn try_add(&mut self, offset: u64, rec: RecordRef<'_>) -> Result<(), ProjectorError> {
        self.summary.read += 1;
        self.next = Some(offset + 1);
        let dead = |reason: String| DeadLetter {
            partition: self.partition,
            offset,
            event_id: rec.event_id.to_owned(),
            event_type: rec.event_type.to_owned(),
            reason,
        };
        self.touches += 1;
        let (payments, written, out, touches, grace) =
            (&mut self.payments, &self.written, self.out, self.touches, self.grace);
        let mut before = None;
        let folded = fold_record(rec.body, self.until, |key| {
            let p = lookup(payments, written, out, touches, key)?;
            before = Some(p.payment.next_deadline(grace));
            Ok::<_, ProjectorError>((&mut p.payment, &mut p.events))
        })?;
        let created = match folded {
            Folded::NotRelevant => {
                self.summary.not_relevant += 1;
                None
            }
            Folded::AfterUntil => {
                self.summary.after_until += 1;
                None
            }
            Folded::Duplicate { created } => {
                self.summary.duplicates += 1;
                Some(created)
            }
            Folded::Applied { key, created, .. } => {
                self.summary.applied += 1;
                let after = self.payments.get(&key).and_then(|(_, p)| p.payment.next_deadline(grace));
                if let Some(at) = before.flatten() {
                    self.deadlines.remove(&(at, key.clone()));
                }
                if let Some(at) = after {
                    self.deadlines.insert((at, key));
                }
                Some(created)
            }
            Folded::Dead(reason) => {
                self.dead.push(dead(reason));
                None
            }
        };
        // The partition's time moved on: announce the failures whose grace period it passed, as the live
        // projector does after the same record. An older event's failure due by the partition's time (it
        // came late) is announced now, as the live projector's `announce_late` does.
        let moved = created.filter(|c| self.watermark.is_none_or(|w| *c > w));
        if let Some(now) = moved.or(created.and(self.watermark)) {
            self.watermark = Some(now);
            while let Some((at, key)) = self.deadlines.first().cloned().filter(|(at, _)| *at <= now) {
                self.deadlines.remove(&(at, key.clone()));
                let Some(pkey) = paystate_core::PaymentKey::parse(&key) else { continue };
                let p = &mut lookup(&mut self.payments, &self.written, self.out, self.touches, &pkey)?.payment;
                p.advance(now, grace);
                if let Some(next) = p.next_deadline(grace) {
                    self.deadlines.insert((next, key));
                }
            }
        }
        if self.payments.len() > self.max_payments {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes the least recently touched half of the payments in memory to `out` and forgets them.
    fn spill(&mut self) -> Result<(), ProjectorError> {
        let mut by_touch: Vec<(u64, String)> = self.payments.iter().map(|(k, (t, _))| (*t, k.clone())).collect();
        by_touch.sort_unstable();
        let oldest = by_touch.into_iter().take(self.payments.len() / 2).map(|(_, k)| k).collect();
        let payments = self.take_in_key_order(oldest);
        self.store(&payments, None, false)
    }

    /// Removes the payments of `keys` from memory, in key order: sled then appends to the right-most leaf
    /// instead of searching the tree each time. (The keys are sorted, not the payments: a payment is a few
    /// hundred bytes to move.)
    fn take_in_key_order(&mut self, mut keys: Vec<String>) -> Vec<PaymentWithHistory> {
        keys.sort_unstable();
        keys.iter().filter_map(|k| self.payments.remove(k)).map(|(_, p)| p).collect()
    }

    /// Loads `payments` (in key order) into `out`, with the partition's position, dead letters and totals
    /// when `last`, and remembers their hashes.
    fn store(&mut self, payments: &[PaymentWithHistory], next: Option<u64>, last: bool) -> Result<(), ProjectorError> {
        let (dead, applied, duplicates): (&[DeadLetter], u64, u64) = match last {
            true => (&self.dead, self.summary.applied, self.summary.duplicates),
            false => (&[], 0, 0),
        };
        let hashes = self.out.load(self.partition, payments, next, dead, applied, duplicates)?;
        for ((_, hash), p) in hashes.into_iter().zip(payments) {
            self.written.insert(p.state().key.to_string(), (hash, p.state().lifecycle));
        }
        Ok(())
    }

    /// Writes the partition's remaining payments, dead letters, totals and position (the offset after the
    /// last record added) to `out` and flushes it; returns the partition's summary.
    pub fn write(mut self) -> Result<ReplaySummary, ProjectorError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let all = self.payments.keys().cloned().collect();
        let payments = self.take_in_key_order(all);
        self.store(&payments, self.next, true)?;
        // sled keeps written pages in memory until they are flushed: one flush per partition bounds that.
        self.out.flush()?;
        let mut summary = self.summary;
        summary.dead_lettered = self.dead.len() as u64;
        summary.payments = self.written.len() as u64;
        for (key, (hash, lifecycle)) in self.written {
            *summary.lifecycles.entry(lifecycle).or_default() += 1;
            summary.hashes.push((key.into_bytes(), hash));
        }
        Ok(summary)
    }
}

/// The payment `key` of a partition fold: in memory, else read back from the output (spilled), else new.
fn lookup<'p>(
    payments: &'p mut HashMap<String, (u64, PaymentWithHistory)>,
    written: &HashMap<String, ([u8; 32], Lifecycle)>,
    out: &Projection,
    touches: u64,
    key: &paystate_core::PaymentKey,
) -> Result<&'p mut PaymentWithHistory, ProjectorError> {
    let (touched, payment) = match payments.entry(key.to_string()) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => {
            let stored = match written.contains_key(e.key()) {
                true => out.payment_with_history(e.key())?,
                false => None,
            };
            e.insert((0, stored.unwrap_or_else(|| PaymentWithHistory::new(key.clone()))))
        }
    };
    *touched = touches;
    Ok(payment)
}

/// Replays `log` from offset 0 up to each partition's end as it was when the replay started (later appends
/// are not read: the result is the log at one moment), with `options.workers` partitions folded at once,
/// into `out`, and flushes `out`. `progress` counts records read, for a progress display.
pub fn replay_log<L: LogSource>(
    log: &L,
    out: &Projection,
    options: &ReplayOptions,
    progress: &AtomicU64,
) -> Result<ReplaySummary, ProjectorError> {
    let ends: Vec<(u32, u64)> = (0..log.partitions()).map(|p| (p, log.end(p))).collect();
    let next_partition = AtomicUsize::new(0);
    let total = Mutex::new(ReplaySummary::default());
    let failure: Mutex<Option<ProjectorError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..options.workers.clamp(1, ends.len().max(1)) {
            scope.spawn(|| loop {
                let i = next_partition.fetch_add(1, Ordering::Relaxed);
                let Some(&(partition, end)) = ends.get(i) else { return };
                let failed = || failure.lock().map(|f| f.is_some()).unwrap_or(true);
                if failed() {
                    return;
                }
                let t0 = std::time::Instant::now();
                let result = replay_partition(log, partition, end, out, options, progress).and_then(|fold| {
                    let t1 = std::time::Instant::now();
                    let r = fold.write();
                    tracing::debug!(
                        partition,
                        fold_ms = (t1 - t0).as_millis() as u64,
                        write_ms = t1.elapsed().as_millis() as u64,
                        "partition replayed"
                    );
                    r
                });
                match result {
                    Ok(s) => {
                        if let Ok(mut t) = total.lock() {
                            t.merge(&s);
                        }
                    }
                    Err(e) => {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    out.flush()?;
    Ok(total.into_inner().unwrap_or_default())
}

fn replay_partition<'a, L: LogSource>(
    log: &L,
    partition: u32,
    end: u64,
    out: &'a Projection,
    options: &ReplayOptions,
    progress: &AtomicU64,
) -> Result<PartitionFold<'a>, ProjectorError> {
    let mut fold = PartitionFold::new(partition, out, options);
    let mut unreported = 0;
    log.scan(partition, 0, end, &mut |offset, rec| {
        fold.add(offset, rec);
        unreported += 1;
        if unreported == PROGRESS_EVERY {
            progress.fetch_add(unreported, Ordering::Relaxed);
            unreported = 0;
        }
    })?;
    progress.fetch_add(unreported, Ordering::Relaxed);
    Ok(fold)
}
