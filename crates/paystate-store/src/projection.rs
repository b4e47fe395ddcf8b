//! The projection store: payment states, each partition's applied position, the projection streams
//! (`actions`, `payments`) and dead letters, in one sled database.
//!
//! **Offsets are acknowledgements.** [`Projection::commit`] writes a batch's new payment states, the
//! partition's next offset, the stream entries and the dead letters in ONE sled transaction, then flushes.
//! After any crash the store holds either all of a batch or none of it, so the projector resumes exactly
//! where the last durable batch ended: nothing applied twice, nothing skipped.

use crate::error::StoreError;
use crate::format::{
    decode_event, decode_payment, decode_payment_v2, encode_event, encode_payment, encode_state, history_key,
    history_prefix, history_second, PAYMENT_FORMAT, PAYMENT_FORMAT_V1, PAYMENT_FORMAT_V2,
};
use paystate_core::{EventId, History, Lifecycle, Payment, PaymentEvent, PaymentKey, PaymentState, PaymentWithHistory};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;
use std::collections::{BTreeMap, HashMap};

/// Which projection stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Derived actions, in commit order.
    Actions,
    /// Payment state updates (keyed by payment), in commit order.
    Payments,
}

impl Stream {
    /// Parses `actions` / `payments`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "actions" => Some(Stream::Actions),
            "payments" => Some(Stream::Payments),
            _ => None,
        }
    }

    fn seq_key(self) -> &'static [u8] {
        match self {
            Stream::Actions => b"seq/actions",
            Stream::Payments => b"seq/payments",
        }
    }

    fn start_key(self) -> &'static [u8] {
        match self {
            Stream::Actions => b"start/actions",
            Stream::Payments => b"start/payments",
        }
    }

    fn published_key(self) -> &'static [u8] {
        match self {
            Stream::Actions => b"published/actions",
            Stream::Payments => b"published/payments",
        }
    }

    /// Prefix of the drop marks' keys (see [`Stream::dropped_key`]).
    fn dropped_prefix(self) -> &'static [u8] {
        match self {
            Stream::Actions => b"dropped/actions/",
            Stream::Payments => b"dropped/payments/",
        }
    }

    /// Key of the cursor up to which this stream's entries of `partition` were dropped (see
    /// [`Projection::forget_partitions`]).
    fn dropped_key(self, partition: u32) -> Vec<u8> {
        [self.dropped_prefix(), &partition.to_be_bytes()].concat()
    }
}

/// A record the projector could not use, kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// Partition of the record.
    pub partition: u32,
    /// Offset of the record.
    pub offset: u64,
    /// Event id, when known.
    pub event_id: String,
    /// Event type, when known.
    pub event_type: String,
    /// Why it was not applied.
    pub reason: String,
}

/// Everything one projector batch changes.
#[derive(Debug, Default)]
pub struct Batch {
    /// For each partition the batch consumed, its next offset after the batch.
    pub positions: BTreeMap<u32, u64>,
    /// New states of the payments the batch touched.
    pub payments: BTreeMap<String, Payment>,
    /// Changes to the touched payments' histories, by payment key and event id. Written through
    /// [`StoredHistory`].
    pub history: BTreeMap<String, HistoryChanges>,
    /// Stream entries, in order: action JSON lines.
    pub actions: Vec<Vec<u8>>,
    /// Stream entries, in order: payment update JSON lines.
    pub updates: Vec<Vec<u8>>,
    /// Records that could not be applied.
    pub dead: Vec<DeadLetter>,
    /// Dead letters (partition, offset) re-driven and now applied or not relevant: removed.
    pub resolved: Vec<(u32, u64)>,
    /// Events applied (new, not duplicates).
    pub applied: u64,
    /// Events that were duplicates.
    pub duplicates: u64,
    /// For each partition the batch consumed, the Stripe event time it reached (the largest `created`).
    pub watermarks: BTreeMap<u32, i64>,
    /// Changes to the deadline index: (partition, deadline, payment key, present).
    pub deadlines: BTreeMap<(u32, i64, String), bool>,
}

/// A change a batch makes to one payment's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryChange {
    /// The event was applied.
    Applied(PaymentEvent),
    /// The event was removed (a twin that sorts first replaced it).
    Removed(PaymentEvent),
}

impl HistoryChange {
    fn applied(&self) -> Option<&PaymentEvent> {
        match self {
            HistoryChange::Applied(ev) => Some(ev),
            HistoryChange::Removed(_) => None,
        }
    }
}

/// Changes a batch makes to one payment's history, by event id.
pub type HistoryChanges = BTreeMap<EventId, HistoryChange>;

/// A payment's history as the store holds it (`history` tree, one entry per event) with a batch's changes
/// over it: the [`History`] the projector applies events with. Reads come from the changes first, then from
/// the store; writes go to the changes only, and [`Projection::commit`] stores them with the batch.
#[derive(Debug)]
pub struct StoredHistory<'a> {
    projection: &'a Projection,
    key: Vec<u8>,
    changes: &'a mut HistoryChanges,
}

impl<'a> StoredHistory<'a> {
    /// The history of `key` with `changes` over it.
    pub fn new(projection: &'a Projection, key: &PaymentKey, changes: &'a mut HistoryChanges) -> Self {
        StoredHistory { projection, key: key.to_string().into_bytes(), changes }
    }

    /// The stored events under `prefix` that the changes do not supersede.
    fn stored(&self, prefix: Vec<u8>) -> Result<Vec<PaymentEvent>, StoreError> {
        let mut out = Vec::new();
        for ev in self.projection.events_under(prefix) {
            let ev = ev?;
            if !self.changes.contains_key(&ev.id) {
                out.push(ev);
            }
        }
        Ok(out)
    }
}

impl History for StoredHistory<'_> {
    type Error = StoreError;

    fn in_second(&mut self, second: i64) -> Result<Vec<PaymentEvent>, StoreError> {
        let mut out = self.stored(history_second(&self.key, second))?;
        out.extend(self.changes.values().filter_map(HistoryChange::applied).filter(|e| e.created == second).cloned());
        Ok(out)
    }

    fn all(&mut self) -> Result<Vec<PaymentEvent>, StoreError> {
        let mut out = self.stored(history_prefix(&self.key))?;
        out.extend(self.changes.values().filter_map(HistoryChange::applied).cloned());
        Ok(paystate_core::EventList::from_events(out).into_events())
    }

    fn insert(&mut self, ev: PaymentEvent) -> Result<(), StoreError> {
        self.changes.insert(ev.id.clone(), HistoryChange::Applied(ev));
        Ok(())
    }

    fn remove(&mut self, ev: &PaymentEvent) -> Result<(), StoreError> {
        self.changes.insert(ev.id.clone(), HistoryChange::Removed(ev.clone()));
        Ok(())
    }
}

/// The deadline index's key: partition, deadline (sign-flipped so that byte order is numeric order),
/// payment key.
fn deadline_key(partition: u32, at: i64, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + key.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&((at as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// Key of a set-aside outbox entry: partition, stream (0 actions, 1 payments), cursor, all big-endian, so a
/// partition's entries read actions first, each stream in commit order.
fn aside_key(partition: u32, stream: Stream, cursor: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.extend_from_slice(&partition.to_be_bytes());
    k.push(match stream {
        Stream::Actions => 0,
        Stream::Payments => 1,
    });
    k.extend_from_slice(&cursor.to_be_bytes());
    k
}

fn watermark_key(partition: u32) -> Vec<u8> {
    let mut k = b"watermark/".to_vec();
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// Running totals kept in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Events applied.
    pub applied: u64,
    /// Duplicate deliveries recognized.
    pub duplicates: u64,
    /// Actions emitted.
    pub actions: u64,
    /// Dead letters.
    pub dead_letters: u64,
}

/// What [`Projection::locate`] found for an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// The key of the payment (`pi_…` or `acct_…/pi_…`).
    Payment(String),
    /// No such payment under the account given; a payment of that id exists only on the platform account.
    PlatformOnly,
    /// No such payment on the account given (or on the platform); one of that id exists under these
    /// Connect accounts.
    UnderAccounts(Vec<String>),
    /// No payment, nor a part of one, of that id.
    Nowhere,
}

/// A payment's key as text (`pi_…` or `acct_…/pi_…`) from its id and account.
fn key_text(id: &str, account: Option<&str>) -> String {
    match account {
        Some(a) => format!("{a}/{id}"),
        None => id.to_owned(),
    }
}

impl Located {
    /// Why `id` (under `account`) named no payment, for a person, naming the account option as `flag`
    /// joined to its value by `sep` (`--account acct_…` on the command line, `account=acct_…` in a URL);
    /// `None` when it named one.
    pub fn why_not(&self, id: &str, account: Option<&str>, flag: &str, sep: char) -> Option<String> {
        let direct = key_text(id, account);
        match self {
            Located::Payment(_) => None,
            Located::PlatformOnly => {
                Some(format!("no payment {direct}; {id} is the platform account's own payment: drop {flag}"))
            }
            Located::UnderAccounts(accounts) => Some(format!(
                "no payment {direct}; {id} exists under the Connect account {}: add {flag}{sep}{}",
                accounts.join(", "),
                accounts.first().map_or("", String::as_str)
            )),
            Located::Nowhere => {
                Some(format!("no payment {direct} (nor a charge, refund, dispute, fraud warning or event of that id)"))
            }
        }
    }
}

/// The projection side of the store.
#[derive(Debug, Clone)]
pub struct Projection {
    db: sled::Db,
    payments: sled::Tree,
    offsets: sled::Tree,
    actions: sled::Tree,
    updates: sled::Tree,
    dead: sled::Tree,
    meta: sled::Tree,
    deadlines: sled::Tree,
    /// The lifecycle index: `k/<payment>` → lifecycle name, `i/<lifecycle>\0<payment>` → empty.
    lifecycles: sled::Tree,
    /// A payment's applied events, one entry each (see [`crate::format::history_key`]).
    history: sled::Tree,
    /// Outbox entries set aside for a partition this store did not own when they were due (see
    /// [`Projection::mark_published`]): key = partition, stream, cursor (big-endian); value = the entry.
    aside: sled::Tree,
    /// The free space commits keep on the data directory's filesystem (`None`: unchecked).
    pub(crate) space: Option<crate::SpaceGuard>,
}

fn lifecycle_of_key(payment: &[u8]) -> Vec<u8> {
    [b"k/".as_slice(), payment].concat()
}

fn lifecycle_index_key(lifecycle: &str, payment: &[u8]) -> Vec<u8> {
    [b"i/".as_slice(), lifecycle.as_bytes(), b"\0", payment].concat()
}

/// The index writes (`Some`: insert, `None`: remove) that move `payment` from `old`, its lifecycle as the
/// index has it, to `lifecycle`: none when it did not move.
fn lifecycle_moves(old: Option<&[u8]>, payment: &[u8], lifecycle: Lifecycle) -> Vec<(Vec<u8>, Option<&'static [u8]>)> {
    let name = lifecycle.as_str();
    if old == Some(name.as_bytes()) {
        return Vec::new();
    }
    let mut moves = Vec::with_capacity(3);
    if let Some(old) = old {
        moves.push((lifecycle_index_key(&String::from_utf8_lossy(old), payment), None));
    }
    moves.push((lifecycle_of_key(payment), Some(name.as_bytes())));
    moves.push((lifecycle_index_key(name, payment), Some(&[][..])));
    moves
}

/// Moves `payment` to `lifecycle` in the index, inside a transaction.
fn index_lifecycle(
    tree: &TransactionalTree,
    payment: &[u8],
    lifecycle: Lifecycle,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let old = tree.get(lifecycle_of_key(payment))?;
    for (k, v) in lifecycle_moves(old.as_deref(), payment, lifecycle) {
        match v {
            Some(v) => tree.insert(k, v)?,
            None => tree.remove(k)?,
        };
    }
    Ok(())
}

/// Adds the moves of `payment` to `batch` (outside a transaction: replay's bulk load, the index's build).
fn batch_lifecycle(batch: &mut sled::Batch, old: Option<&[u8]>, payment: &[u8], lifecycle: Lifecycle) {
    for (k, v) in lifecycle_moves(old, payment, lifecycle) {
        match v {
            Some(v) => batch.insert(k, v),
            None => batch.remove(k),
        }
    }
}

/// Version of the lifecycle index (recorded in `meta` once it is complete).
const LIFECYCLE_INDEX: u64 = 1;

fn u64_of(tree: &'static str, v: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = v.try_into().map_err(|_| StoreError::Corrupt { tree, why: "not a u64".into() })?;
    Ok(u64::from_be_bytes(arr))
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn bump(meta: &TransactionalTree, key: &[u8], by: u64) -> Result<u64, ConflictableTransactionError<StoreError>> {
    let now = match meta.get(key)? {
        Some(v) => u64_of("meta", &v).map_err(abort)?,
        None => 0,
    };
    meta.insert(key, &(now + by).to_be_bytes())?;
    Ok(now)
}

impl Projection {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Projection {
            db: db.clone(),
            payments: db.open_tree("payments")?,
            offsets: db.open_tree("offsets")?,
            actions: db.open_tree("stream/actions")?,
            updates: db.open_tree("stream/payments")?,
            dead: db.open_tree("dead")?,
            meta: db.open_tree("meta")?,
            deadlines: db.open_tree("deadlines")?,
            lifecycles: db.open_tree("lifecycles")?,
            history: db.open_tree("history")?,
            aside: db.open_tree("outbox/aside")?,
            space: None,
        })
    }

    /// Builds the lifecycle index of a projection written before it existed (once; then recorded in meta).
    pub(crate) fn ensure_lifecycle_index(&self) -> Result<(), StoreError> {
        if self.meta.get(b"index/lifecycle")?.is_some_and(|v| v.as_ref() == LIFECYCLE_INDEX.to_be_bytes()) {
            return Ok(());
        }
        self.lifecycles.clear()?;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.payments.iter() {
            let (k, v) = item?;
            batch_lifecycle(&mut batch, None, &k, decode_payment(&v)?.state.lifecycle);
            n += 1;
            if n % 4096 == 0 {
                self.lifecycles.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        self.lifecycles.apply_batch(batch)?;
        self.meta.insert(b"index/lifecycle", &LIFECYCLE_INDEX.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// How many payments are in `lifecycle`, counted in the lifecycle index (its keys only).
    pub fn count_in(&self, lifecycle: Lifecycle) -> Result<u64, StoreError> {
        let mut n = 0;
        for key in self.lifecycles.scan_prefix(lifecycle_index_key(lifecycle.as_str(), b"")).keys() {
            key?;
            n += 1;
        }
        Ok(n)
    }

    /// Payments of one lifecycle, in key order after `after`, filtered, at most `limit`: read through the
    /// lifecycle index, not a scan of every payment.
    pub fn payments_in(
        &self,
        lifecycle: Lifecycle,
        after: Option<&str>,
        limit: usize,
        mut keep: impl FnMut(&Payment) -> bool,
    ) -> Result<Vec<Payment>, StoreError> {
        let prefix = lifecycle_index_key(lifecycle.as_str(), b"");
        let start = match after {
            Some(a) => std::ops::Bound::Excluded(lifecycle_index_key(lifecycle.as_str(), a.as_bytes())),
            None => std::ops::Bound::Included(prefix.clone()),
        };
        let mut out = Vec::new();
        for item in self.lifecycles.range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded)) {
            let (k, _) = item?;
            let Some(key) = k.strip_prefix(prefix.as_slice()) else { break };
            let Some(v) = self.payments.get(key)? else { continue };
            let p = decode_payment(&v)?;
            if p.state.lifecycle == lifecycle && keep(&p) {
                out.push(p);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The Stripe event time partition `partition` reached: the largest `created` of the events applied
    /// from it (timers of the fold run on it, so that live projection and replay decide alike).
    pub fn watermark(&self, partition: u32) -> Result<Option<i64>, StoreError> {
        self.meta.get(watermark_key(partition))?.map(|v| u64_of("meta", &v).map(|u| u as i64)).transpose()
    }

    /// Keys of the payments of `partition` with a deadline at or before `now`, with their deadlines, in
    /// deadline order.
    pub fn deadlines_until(&self, partition: u32, now: i64) -> Result<Vec<(i64, String)>, StoreError> {
        let start = deadline_key(partition, i64::MIN, "");
        let end = deadline_key(partition, now.saturating_add(1), "");
        let mut out = Vec::new();
        for item in self.deadlines.range(start..end) {
            let (k, _) = item?;
            let bad = || StoreError::Corrupt { tree: "deadlines", why: "short key".into() };
            let at: [u8; 8] = k.get(4..12).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
            let at = (u64::from_be_bytes(at) ^ (1 << 63)) as i64;
            out.push((at, String::from_utf8_lossy(&k[12..]).into_owned()));
        }
        Ok(out)
    }

    /// Whether the stored payments are of an earlier release's format (see [`Projection::rebuild_from_log`]).
    pub fn needs_rebuild(&self) -> Result<bool, StoreError> {
        Ok(match self.payments.iter().values().next() {
            Some(v) => v?.first() == Some(&PAYMENT_FORMAT_V1),
            None => false,
        })
    }

    /// Migrates payments of the previous release's format 2 (history inside the state) to format 3 plus
    /// one history entry per event, in batches of 1,024 payments; then records that the projection is of
    /// format 3. A crash half-way leaves payments of both formats, and the next open carries on (a payment
    /// of format 3 is skipped). `progress` is told the payments converted so far and the payments stored.
    /// Returns how many were converted.
    pub(crate) fn migrate_payments_v2(&self, progress: &dyn Fn(u64, u64)) -> Result<u64, StoreError> {
        if self.meta.get(b"format/payments")?.is_some_and(|v| v.as_ref() == [PAYMENT_FORMAT]) {
            return Ok(0);
        }
        let total = self.payments.len() as u64;
        let mut converted = 0u64;
        let mut todo: Vec<(sled::IVec, sled::IVec)> = Vec::new();
        let mut flush = |todo: &mut Vec<(sled::IVec, sled::IVec)>| -> Result<(), StoreError> {
            if todo.is_empty() {
                return Ok(()); // nothing to migrate: no progress to show
            }
            let (mut payments, mut history) = (sled::Batch::default(), sled::Batch::default());
            for (k, v) in todo.drain(..) {
                let (payment, events) = decode_payment_v2(&v)?;
                payments.insert(&k, encode_payment(&payment)?.0);
                for ev in &events {
                    history.insert(history_key(&k, ev), encode_event(ev)?);
                }
                converted += 1;
            }
            // History first: a payment of format 3 is only written once its events are stored.
            self.history.apply_batch(history)?;
            self.payments.apply_batch(payments)?;
            progress(converted, total);
            Ok(())
        };
        for item in self.payments.iter() {
            let (k, v) = item?;
            if v.first() == Some(&PAYMENT_FORMAT_V2) {
                todo.push((k, v));
                if todo.len() == 1024 {
                    flush(&mut todo)?;
                }
            }
        }
        flush(&mut todo)?;
        self.meta.insert(b"format/payments", &[PAYMENT_FORMAT])?;
        self.db.flush()?;
        Ok(converted)
    }

    /// A payment's applied events as stored, in causal order (what `/history`, `show` and time travel
    /// read).
    pub fn history(&self, key: &str) -> Result<Vec<PaymentEvent>, StoreError> {
        self.events_under(history_prefix(key.as_bytes())).collect()
    }

    /// The stored history entries under a key prefix (see [`crate::format::history_key`]), decoded, in key
    /// order (which is causal order).
    fn events_under(&self, prefix: Vec<u8>) -> impl Iterator<Item = Result<PaymentEvent, StoreError>> + '_ {
        self.history.scan_prefix(prefix).values().map(|v| decode_event(&v?))
    }

    /// A payment with its applied events, when stored.
    pub fn payment_with_history(&self, key: &str) -> Result<Option<PaymentWithHistory>, StoreError> {
        let Some(payment) = self.payment(key)? else { return Ok(None) };
        let events = paystate_core::EventList::from_events(self.history(key)?);
        Ok(Some(PaymentWithHistory { payment, events }))
    }

    /// Upgrades a projection written by the previous release: its payment states are dropped and every
    /// partition's position goes back to 0, so that the projector folds the whole log again with the
    /// current rules; the ledger of actions already emitted is kept, read back from the `actions` stream
    /// (whose entries are self-describing JSON), so no action is emitted twice. The streams keep their
    /// entries and cursors; dead letters and the totals are recounted by the refold. One transaction:
    /// after a crash the upgrade is either done or still to do.
    pub fn rebuild_from_log(&self) -> Result<Rebuild, StoreError> {
        let mut ledgers: BTreeMap<String, Payment> = BTreeMap::new();
        for item in self.actions.iter().values() {
            let action: paystate_core::Action = serde_json::from_slice(&item?)
                .map_err(|e| StoreError::Corrupt { tree: "stream/actions", why: e.to_string() })?;
            ledgers
                .entry(action.key.to_string())
                .or_insert_with(|| Payment::new(action.key.clone()))
                .emitted
                .insert(action.id);
        }
        let encoded: Vec<(String, Vec<u8>)> =
            ledgers.iter().map(|(k, p)| encode_payment(p).map(|v| (k.clone(), v.0))).collect::<Result<_, _>>()?;
        let old: Vec<sled::IVec> = self.payments.iter().keys().collect::<Result<_, _>>()?;
        let partitions: Vec<sled::IVec> = self.offsets.iter().keys().collect::<Result<_, _>>()?;
        let dead: Vec<sled::IVec> = self.dead.iter().keys().collect::<Result<_, _>>()?;
        (&self.payments, &self.offsets, &self.dead, &self.meta).transaction(
            |(payments, offsets, dead_tree, meta)| {
                for k in &old {
                    payments.remove(k)?;
                }
                for (k, v) in &encoded {
                    payments.insert(k.as_bytes(), v.as_slice())?;
                }
                for k in &partitions {
                    offsets.insert(k, &0u64.to_be_bytes())?;
                }
                for k in &dead {
                    dead_tree.remove(k)?;
                }
                for k in [&b"count/applied"[..], b"count/duplicates", b"count/dead"] {
                    meta.remove(k)?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            },
        )?;
        self.lifecycles.clear()?;
        self.history.clear()?;
        self.meta.remove(b"index/lifecycle")?;
        self.meta.insert(b"format/payments", &[PAYMENT_FORMAT])?;
        self.db.flush()?;
        Ok(Rebuild { payments: old.len() as u64, ledgers: encoded.len() as u64, partitions: partitions.len() as u64 })
    }

    /// The next offset to apply in `partition` (0 when nothing was applied).
    pub fn position(&self, partition: u32) -> Result<u64, StoreError> {
        Ok(match self.offsets.get(partition.to_be_bytes())? {
            Some(v) => u64_of("offsets", &v)?,
            None => 0,
        })
    }

    /// The next offset to apply in `partition`, or `None` when this store never held the partition (a
    /// projector of the Kafka log then restores it instead of replaying the raw log).
    pub fn stored_position(&self, partition: u32) -> Result<Option<u64>, StoreError> {
        self.offsets.get(partition.to_be_bytes())?.map(|v| u64_of("offsets", &v)).transpose()
    }

    /// Installs restored payments (states and histories) of one partition and its position, in one
    /// transaction, flushed.
    pub fn restore(&self, partition: u32, payments: &[PaymentWithHistory], position: u64) -> Result<(), StoreError> {
        let mut encoded = Vec::with_capacity(payments.len());
        for p in payments {
            let key = p.payment.state.key.to_string();
            let events = p
                .events
                .events()
                .iter()
                .map(|ev| Ok::<_, StoreError>((history_key(key.as_bytes(), ev), encode_event(ev)?)));
            let events = events.collect::<Result<Vec<_>, _>>()?;
            encoded.push((key, encode_payment(&p.payment)?.0, p.payment.state.lifecycle, events));
        }
        (&self.payments, &self.offsets, &self.lifecycles, &self.history).transaction(
            |(tx_payments, tx_offsets, tx_lifecycles, tx_history)| {
                for (k, v, lifecycle, events) in &encoded {
                    tx_payments.insert(k.as_bytes(), v.as_slice())?;
                    index_lifecycle(tx_lifecycles, k.as_bytes(), *lifecycle)?;
                    for (hk, ev) in events {
                        tx_history.insert(hk.as_slice(), ev.as_slice())?;
                    }
                }
                tx_offsets.insert(&partition.to_be_bytes(), &position.to_be_bytes())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            },
        )?;
        self.db.flush()?;
        Ok(())
    }

    /// The cursor up to which `stream` was published to Kafka and confirmed (the outbox is what lies
    /// beyond it).
    pub fn published(&self, stream: Stream) -> Result<u64, StoreError> {
        Ok(match self.meta.get(stream.published_key())? {
            Some(v) => u64_of("meta", &v)?,
            None => 0,
        })
    }

    /// The offset after the last action confirmed by the broker in `partition` of the actions topic.
    pub fn confirmed_end(&self, partition: u32) -> Result<u64, StoreError> {
        Ok(match self.meta.get(confirmed_key(partition))? {
            Some(v) => u64_of("meta", &v)?,
            None => 0,
        })
    }

    /// Records that `stream` is published and confirmed up to `cursor`, and the actions topic's confirmed
    /// ends per partition. Not flushed on its own: losing it only means publishing again, which readers
    /// dedupe by action id (and the projector by scanning the topic).
    ///
    /// For the payments stream, `confirmed` holds the payments topic's end expected after the round (see
    /// [`Projection::payments_end`]) instead.
    ///
    /// `aside` are the entries of the round that were not published because their partition was not this
    /// store's to publish (`(partition, cursor, entry)`): they are kept, in the same transaction that
    /// moves the cursor past them, until [`Projection::take_aside`] hands them to whoever publishes that
    /// partition again from this store.
    pub fn mark_published(
        &self,
        stream: Stream,
        cursor: u64,
        confirmed: &BTreeMap<u32, u64>,
        aside: &[(u32, u64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        (&self.meta, &self.aside).transaction(|(meta, tx_aside)| {
            meta.insert(stream.published_key(), &cursor.to_be_bytes())?;
            for (p, end) in confirmed {
                match stream {
                    Stream::Actions => meta.insert(&confirmed_key(*p), &end.to_be_bytes())?,
                    Stream::Payments => meta.insert(&payments_end_key(*p), &end.to_be_bytes())?,
                };
            }
            for (p, at, entry) in aside {
                tx_aside.insert(aside_key(*p, stream, *at), entry.as_slice())?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        if !aside.is_empty() {
            self.db.flush()?;
        }
        Ok(())
    }

    /// The end (high watermark) of `partition` of the payments topic as this store's last write left it
    /// (0 when it never wrote there): a larger end means another member wrote there since.
    pub fn payments_end(&self, partition: u32) -> Result<u64, StoreError> {
        Ok(match self.meta.get(payments_end_key(partition))? {
            Some(v) => u64_of("meta", &v)?,
            None => 0,
        })
    }

    /// Records the end of `partition` of the payments topic as a restore found it.
    pub fn set_payments_end(&self, partition: u32, end: u64) -> Result<(), StoreError> {
        self.meta.insert(payments_end_key(partition), &end.to_be_bytes())?;
        Ok(())
    }

    /// Forgets everything this store holds of raw partitions `parts` (of `partitions`): their payments
    /// with their histories and index entries, deadlines, position, cursors and set-aside outbox entries.
    /// For a partition whose local state can no longer be trusted (another member published for it since),
    /// before it is restored from the topics. The positions go first, flushed: a crash half-way leaves the
    /// partitions "never held", so they are forgotten again and restored at the next take. Returns the
    /// number of payments removed.
    ///
    /// Their entries still in the outbox streams (derived here, not yet published when the partition moved)
    /// are as stale as their states: in the same first step each stream's current end is recorded as the
    /// partition's drop mark ([`Projection::outbox_drops`]), and the publisher skips the partition's
    /// entries up to it.
    pub fn forget_partitions(&self, parts: &[u32], partitions: u32) -> Result<u64, StoreError> {
        if parts.is_empty() {
            return Ok(0);
        }
        let ends = [Stream::Actions, Stream::Payments].map(|s| self.stream_end(s).map(|end| (s, end)));
        let ends = ends.into_iter().collect::<Result<Vec<_>, _>>()?;
        (&self.offsets, &self.meta).transaction(|(offsets, meta)| {
            for p in parts {
                offsets.remove(&p.to_be_bytes())?;
                for (stream, end) in &ends {
                    meta.insert(stream.dropped_key(*p), &end.to_be_bytes())?;
                }
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        self.db.flush()?;
        let (mut payments, mut lifecycles, mut history) =
            (sled::Batch::default(), sled::Batch::default(), sled::Batch::default());
        let mut removed = 0;
        for k in self.payments.iter().keys() {
            let k = k?;
            if !parts.contains(&paystate_core::partition_of(&k, partitions)) {
                continue;
            }
            payments.remove(k.clone());
            let of_key = lifecycle_of_key(&k);
            if let Some(old) = self.lifecycles.get(&of_key)? {
                lifecycles.remove(lifecycle_index_key(&String::from_utf8_lossy(&old), &k));
            }
            lifecycles.remove(of_key);
            for h in self.history.scan_prefix(history_prefix(&k)).keys() {
                history.remove(h?);
            }
            removed += 1;
        }
        self.history.apply_batch(history)?;
        self.lifecycles.apply_batch(lifecycles)?;
        self.payments.apply_batch(payments)?;
        let (mut meta, mut deadlines, mut aside) =
            (sled::Batch::default(), sled::Batch::default(), sled::Batch::default());
        for p in parts {
            for k in self.deadlines.scan_prefix(p.to_be_bytes()).keys() {
                deadlines.remove(k?);
            }
            for k in self.aside.scan_prefix(p.to_be_bytes()).keys() {
                aside.remove(k?);
            }
            meta.remove(&confirmed_key(*p));
            meta.remove(&payments_end_key(*p));
            meta.remove(watermark_key(*p));
        }
        self.deadlines.apply_batch(deadlines)?;
        self.aside.apply_batch(aside)?;
        self.meta.apply_batch(meta)?;
        self.db.flush()?;
        Ok(removed)
    }

    /// The drop marks of the outbox streams: for (stream, partition), the cursor up to which that
    /// partition's entries are stale and must not be published (see [`Projection::forget_partitions`]).
    pub fn outbox_drops(&self) -> Result<HashMap<(Stream, u32), u64>, StoreError> {
        let mut out = HashMap::new();
        for stream in [Stream::Actions, Stream::Payments] {
            let prefix = stream.dropped_prefix();
            for item in self.meta.scan_prefix(prefix) {
                let (k, v) = item?;
                let p = k[prefix.len()..]
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt { tree: "meta", why: format!("key {k:?}") })?;
                out.insert((stream, p), u64_of("meta", &v)?);
            }
        }
        Ok(out)
    }

    /// The outbox entries set aside for `partition`, actions first, each stream in commit order, with the
    /// key to pass to [`Projection::drop_aside`] once they are published.
    pub fn take_aside(&self, partition: u32) -> Result<Vec<(Stream, Vec<u8>, sled::IVec)>, StoreError> {
        let mut out = Vec::new();
        for item in self.aside.scan_prefix(partition.to_be_bytes()) {
            let (k, v) = item?;
            let stream = match k.get(4) {
                Some(0) => Stream::Actions,
                Some(1) => Stream::Payments,
                _ => return Err(StoreError::Corrupt { tree: "outbox/aside", why: format!("key {k:?}") }),
            };
            out.push((stream, k.to_vec(), v));
        }
        Ok(out)
    }

    /// Forgets set-aside entries (their keys from [`Projection::take_aside`]) once they are published.
    pub fn drop_aside(&self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(k.as_slice());
        }
        self.aside.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// One payment, by its key (`pi_…` or `acct_…/pi_…`).
    pub fn payment(&self, key: &str) -> Result<Option<Payment>, StoreError> {
        self.payments.get(key.as_bytes())?.map(|v| decode_payment(&v)).transpose()
    }

    /// The payment `id` names (see [`Located`]): a payment (`pi_…`, or `ch_…` without a PaymentIntent)
    /// under `account`, else the payment a charge, refund, dispute, early fraud warning or event of that id
    /// belongs to. Looking up a part is a scan of the payments (the projection keeps no index of them).
    pub fn locate(&self, id: &str, account: Option<&str>) -> Result<Located, StoreError> {
        let direct = key_text(id, account);
        if self.payments.contains_key(direct.as_bytes())? {
            return Ok(Located::Payment(direct));
        }
        let (mut accounts, mut platform) = (Vec::new(), false);
        for p in self.all_payments() {
            let s = p?.state;
            let key = s.key.to_string();
            if s.key.payment.as_str() == id {
                match &s.key.account {
                    Some(a) => accounts.push(a.as_str().to_owned()),
                    None => platform = true,
                }
                continue;
            }
            let here = account.is_none_or(|a| s.key.account.as_ref().is_some_and(|k| k.as_str() == a));
            let part_of = s.latest_charge.as_deref() == Some(id)
                || s.refunds.contains_key(id)
                || s.disputes.contains_key(id)
                || s.early_fraud_warning.as_ref().is_some_and(|w| w.id == id)
                || (id.starts_with("evt_") && self.history(&key)?.iter().any(|e| e.id.as_str() == id));
            if part_of && here {
                return Ok(Located::Payment(key));
            }
        }
        Ok(if platform {
            Located::PlatformOnly
        } else if accounts.is_empty() {
            Located::Nowhere
        } else {
            Located::UnderAccounts(accounts)
        })
    }

    /// Payments in key order after `after`, filtered, at most `limit`.
    pub fn payments(
        &self,
        after: Option<&str>,
        limit: usize,
        mut keep: impl FnMut(&Payment) -> bool,
    ) -> Result<Vec<Payment>, StoreError> {
        let start = match after {
            Some(a) => std::ops::Bound::Excluded(a.as_bytes().to_vec()),
            None => std::ops::Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self.payments.range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded)) {
            let (_, v) = item?;
            let p = decode_payment(&v)?;
            if keep(&p) {
                out.push(p);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The projection's digest (see [`digest_of`]) over every stored payment. Returns the hex digest and
    /// the number of payments.
    pub fn digest(&self) -> Result<(String, u64), StoreError> {
        let hashes = self
            .all_payments()
            .map(|p| p.and_then(|p| Ok((p.state.key.to_string().into_bytes(), state_hash(&p.state)?))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((digest_of(&hashes), hashes.len() as u64))
    }

    /// Every stored payment, in key order, read as the iteration goes (not all at once).
    pub fn all_payments(&self) -> impl Iterator<Item = Result<Payment, StoreError>> + '_ {
        self.payments.iter().values().map(|v| decode_payment(&v?))
    }

    /// Bulk load for a rebuilt projection (replay): stores `payments` (in chunks), the dead letters, the
    /// partition's position and adds to the totals. Not one transaction and not flushed: the caller flushes
    /// once at the end ([`Projection::flush`]) and the output is only used once that returned. Safe to call
    /// for different partitions from several threads. Returns each payment's key and state hash.
    pub fn load(
        &self,
        partition: u32,
        payments: &[PaymentWithHistory],
        position: Option<u64>,
        dead: &[DeadLetter],
        applied: u64,
        duplicates: u64,
    ) -> Result<Vec<StateHash>, StoreError> {
        let mut hashes = Vec::with_capacity(payments.len());
        for chunk in payments.chunks(4096) {
            let mut batch = sled::Batch::default();
            let mut index = sled::Batch::default();
            let mut history = sled::Batch::default();
            for p in chunk {
                let key = p.payment.state.key.to_string().into_bytes();
                let (value, hash) = encode_payment(&p.payment)?;
                batch.insert(key.as_slice(), value);
                // A payment spilled earlier and written again may have moved, and lost a twin.
                let old = self.lifecycles.get(lifecycle_of_key(&key))?;
                batch_lifecycle(&mut index, old.as_deref(), &key, p.payment.state.lifecycle);
                if old.is_some() {
                    for hk in self.history.scan_prefix(history_prefix(&key)).keys() {
                        history.remove(hk?);
                    }
                }
                for ev in p.events.events() {
                    history.insert(history_key(&key, ev), encode_event(ev)?);
                }
                hashes.push((key, hash));
            }
            self.history.apply_batch(history)?;
            self.payments.apply_batch(batch)?;
            self.lifecycles.apply_batch(index)?;
        }
        let mut batch = sled::Batch::default();
        for d in dead {
            batch.insert(&dead_key(d), serde_json::to_vec(d).map_err(|e| StoreError::Encode(e.to_string()))?);
        }
        self.dead.apply_batch(batch)?;
        if let Some(next) = position {
            self.offsets.insert(partition.to_be_bytes(), &next.to_be_bytes())?;
        }
        for (key, by) in
            [(&b"count/applied"[..], applied), (b"count/duplicates", duplicates), (b"count/dead", dead.len() as u64)]
        {
            let mut bad = None;
            self.meta.update_and_fetch(key, |old| {
                let now = old.and_then(|v| u64_of("meta", v).map_err(|e| bad = Some(e)).ok()).unwrap_or(0);
                Some((now + by).to_be_bytes().to_vec())
            })?;
            if let Some(e) = bad {
                return Err(e);
            }
        }
        Ok(hashes)
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Number of payments stored.
    pub fn payment_count(&self) -> usize {
        self.payments.len()
    }

    fn stream_tree(&self, stream: Stream) -> &sled::Tree {
        match stream {
            Stream::Actions => &self.actions,
            Stream::Payments => &self.updates,
        }
    }

    /// Stream entries with cursor greater than `after`, at most `limit`, with their cursors. A cursor whose
    /// next entries were removed by the retention is refused with [`StoreError::CursorExpired`] (the reader
    /// missed entries and must resynchronise), never answered with a gap.
    pub fn read_stream(&self, stream: Stream, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tree = self.stream_tree(stream);
        let start = self.stream_start(stream)?;
        if after.saturating_add(1) < start {
            return Err(StoreError::CursorExpired { oldest: start - 1 });
        }
        let mut out = Vec::new();
        for item in tree.range((after.saturating_add(1)).to_be_bytes()..).take(limit) {
            let (k, v) = item?;
            out.push((u64_of("stream", &k)?, v.to_vec()));
        }
        Ok(out)
    }

    /// The cursor of the first entry of `stream` still kept (1 until the retention removed any).
    pub fn stream_start(&self, stream: Stream) -> Result<u64, StoreError> {
        Ok(match self.meta.get(stream.start_key())? {
            Some(v) => u64_of("meta", &v)?,
            None => 1,
        })
    }

    /// Removes the entries of `stream` beyond the newest `keep`, but none after cursor `floor` (the Kafka
    /// projector's outbox keeps what is not yet published). Returns how many were removed. The new start
    /// is recorded first: after a crash half-way, entries below it are unreachable and removed next time.
    pub fn trim_stream(&self, stream: Stream, keep: u64, floor: u64) -> Result<u64, StoreError> {
        let (start, end) = (self.stream_start(stream)?, self.stream_end(stream)?);
        let new_start = end.saturating_sub(keep).min(floor).saturating_add(1);
        if new_start <= start {
            return Ok(0);
        }
        self.meta.insert(stream.start_key(), &new_start.to_be_bytes())?;
        let tree = self.stream_tree(stream);
        let mut removed = 0;
        // In batches of a few thousand keys: one batch of everything to remove would hold it all in memory.
        loop {
            let keys: Vec<sled::IVec> =
                tree.range(..new_start.to_be_bytes()).keys().take(4096).collect::<Result<_, _>>()?;
            if keys.is_empty() {
                return Ok(removed);
            }
            let mut batch = sled::Batch::default();
            removed += keys.len() as u64;
            keys.into_iter().for_each(|k| batch.remove(k));
            tree.apply_batch(batch)?;
        }
    }

    /// The cursor of the last entry of `stream` (0 when empty).
    pub fn stream_end(&self, stream: Stream) -> Result<u64, StoreError> {
        Ok(match self.meta.get(stream.seq_key())? {
            Some(v) => u64_of("meta", &v)?,
            None => 0,
        })
    }

    /// Whether everything `log` holds, as far as it knows, is applied here (every partition's position at
    /// the end `log` gives; past it, `log`'s view is behind) and both outbox streams are published to their
    /// ends: what a one-shot run or a test waits for.
    pub fn drained(&self, log: &dyn crate::LogView) -> Result<bool, StoreError> {
        for partition in 0..log.partitions() {
            if self.position(partition)? != log.end(partition) {
                return Ok(false);
            }
        }
        for stream in [Stream::Actions, Stream::Payments] {
            if self.published(stream)? != self.stream_end(stream)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// All dead letters, in (partition, offset) order.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead
            .iter()
            .values()
            .map(|v| {
                let v = v?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt { tree: "dead", why: e.to_string() })
            })
            .collect()
    }

    /// Running totals.
    pub fn totals(&self) -> Result<Totals, StoreError> {
        let get = |k: &[u8]| -> Result<u64, StoreError> {
            Ok(match self.meta.get(k)? {
                Some(v) => u64_of("meta", &v)?,
                None => 0,
            })
        };
        Ok(Totals {
            applied: get(b"count/applied")?,
            duplicates: get(b"count/duplicates")?,
            actions: get(Stream::Actions.seq_key())?,
            dead_letters: get(b"count/dead")?,
        })
    }

    /// Commits a batch atomically and durably (see the module docs).
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.commit_unflushed(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Commits a batch atomically, not yet durably: a crash may lose it (and, it being one transaction,
    /// loses it whole, positions with effects), until the next [`Projection::flush`]. For a consumer whose
    /// log keeps what it has not made durable (Kafka) and which flushes before anything derived from the
    /// batch leaves the process (the outbox publisher).
    pub fn commit_unflushed(&self, batch: &Batch) -> Result<(), StoreError> {
        // Before sled writes anything: sled does not recover in-process from a write into a full disk.
        if let Some(space) = &self.space {
            space.check()?;
        }
        let encoded: Vec<(&String, Vec<u8>)> =
            batch.payments.iter().map(|(k, p)| encode_payment(p).map(|v| (k, v.0))).collect::<Result<_, _>>()?;
        // (history key, encoded event or None to remove)
        let mut history: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for (key, changes) in &batch.history {
            for change in changes.values() {
                history.push(match change {
                    HistoryChange::Applied(ev) => (history_key(key.as_bytes(), ev), Some(encode_event(ev)?)),
                    // An event applied and removed within the batch: removing what is not there is harmless.
                    HistoryChange::Removed(ev) => (history_key(key.as_bytes(), ev), None),
                });
            }
        }
        let dead: Vec<([u8; 12], Vec<u8>)> = batch
            .dead
            .iter()
            .map(|d| serde_json::to_vec(d).map(|v| (dead_key(d), v)).map_err(|e| StoreError::Encode(e.to_string())))
            .collect::<Result<_, _>>()?;
        let index: Vec<(Vec<u8>, bool)> =
            batch.deadlines.iter().map(|((p, at, key), present)| (deadline_key(*p, *at, key), *present)).collect();
        (
            &self.payments,
            &self.offsets,
            &self.actions,
            &self.updates,
            &self.dead,
            &self.meta,
            &self.deadlines,
            &self.lifecycles,
            &self.history,
        )
            .transaction(
                |(payments, offsets, actions, updates, dead_tree, meta, deadlines, lifecycles, tx_history)| {
                    for (k, v) in &encoded {
                        payments.insert(k.as_bytes(), v.as_slice())?;
                    }
                    for (hk, ev) in &history {
                        match ev {
                            Some(ev) => tx_history.insert(hk.as_slice(), ev.as_slice())?,
                            None => tx_history.remove(hk.as_slice())?,
                        };
                    }
                    for (k, p) in &batch.payments {
                        index_lifecycle(lifecycles, k.as_bytes(), p.state.lifecycle)?;
                    }
                    for (partition, next) in &batch.positions {
                        offsets.insert(&partition.to_be_bytes(), &next.to_be_bytes())?;
                    }
                    let first = bump(meta, Stream::Actions.seq_key(), batch.actions.len() as u64)?;
                    for (i, a) in batch.actions.iter().enumerate() {
                        actions.insert(&(first + 1 + i as u64).to_be_bytes(), a.as_slice())?;
                    }
                    let first = bump(meta, Stream::Payments.seq_key(), batch.updates.len() as u64)?;
                    for (i, u) in batch.updates.iter().enumerate() {
                        updates.insert(&(first + 1 + i as u64).to_be_bytes(), u.as_slice())?;
                    }
                    for (k, v) in &dead {
                        dead_tree.insert(k, v.as_slice())?;
                    }
                    for (partition, offset) in &batch.resolved {
                        dead_tree.remove(&dead_key_at(*partition, *offset))?;
                    }
                    bump(meta, b"count/applied", batch.applied)?;
                    bump(meta, b"count/duplicates", batch.duplicates)?;
                    bump(meta, b"count/dead", batch.dead.len() as u64)?;
                    for (p, wm) in &batch.watermarks {
                        meta.insert(watermark_key(*p), &(*wm as u64).to_be_bytes())?;
                    }
                    for (k, present) in &index {
                        if *present {
                            deadlines.insert(k.as_slice(), &[])?;
                        } else {
                            deadlines.remove(k.as_slice())?;
                        }
                    }
                    Ok(())
                },
            )?;
        Ok(())
    }
}

/// A payment's key and its [`state_hash`].
pub type StateHash = (Vec<u8>, [u8; 32]);

/// The canonical hash of one payment's state, its part of the digest: SHA-256 of its `PaymentState` in
/// postcard (fields in declaration order, maps sorted, no framing). The ledger of emitted actions is not
/// part of it: it records arrival order, the state does not.
pub fn state_hash(state: &PaymentState) -> Result<[u8; 32], StoreError> {
    let mut buf = Vec::with_capacity(1024);
    encode_state(state, &mut buf)
}

/// A projection's digest from its payments' `(key, state_hash)` pairs, which must be in key order: SHA-256
/// over each key (length-prefixed) and its state hash, as hex. The same set of events gives the same
/// digest whatever the batch sizes, the arrival order, the partition parallelism or the log it came from.
pub fn digest_of(hashes: &[StateHash]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, state) in hashes {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k);
        h.update(state);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn dead_key(d: &DeadLetter) -> [u8; 12] {
    dead_key_at(d.partition, d.offset)
}

fn dead_key_at(partition: u32, offset: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&partition.to_be_bytes());
    key[4..].copy_from_slice(&offset.to_be_bytes());
    key
}

fn confirmed_key(partition: u32) -> [u8; 14] {
    let mut k = *b"confirmed/\0\0\0\0";
    k[10..].copy_from_slice(&partition.to_be_bytes());
    k
}

/// Key of the payments topic's end (high watermark) expected after this store's last write to a partition.
fn payments_end_key(partition: u32) -> [u8; 17] {
    let mut k = *b"payments-end/\0\0\0\0";
    k[13..].copy_from_slice(&partition.to_be_bytes());
    k
}

/// What [`Projection::rebuild_from_log`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuild {
    /// Payments of the earlier format that were dropped.
    pub payments: u64,
    /// Payments whose ledger of emitted actions was kept (read back from the actions stream).
    pub ledgers: u64,
    /// Partitions whose position went back to 0.
    pub partitions: u64,
}
