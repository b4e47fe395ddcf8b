//! The payment state machine.
//!
//! # Why the state converges
//! The projected state is a pure function of the *set* of distinct events applied, never of their arrival
//! order: the events are kept in a total **causal order** and the state is the left fold of that sequence.
//! An event that sorts last is folded incrementally (the common case); one that arrives late is inserted at
//! its place and the payment is refolded from its history. Since the order is total and independent of
//! arrival, every permutation of the same set yields the same fold.
//!
//! The causal order is `(created, rank, event id)`. Stripe stamps events with whole seconds and the events
//! of one API request share a second, so `created` alone cannot order them; `rank` is the position of the
//! status an event reports in Stripe's lifecycle (a failure follows the attempt it ends, success and
//! cancellation come last, a refund follows the charge it returns). Terminal statuses (`succeeded`,
//! `canceled`) are absorbing: once one is in the set, no other event moves the status away from it.
//!
//! # Duplicates
//! An event whose id was applied is a duplicate. So is a *twin*: another event about the same object, of the
//! same type, carrying the same snapshot (Stripe occasionally emits one change as two events). Of twins the
//! one that sorts first is kept, so the kept set, and thus the state, does not depend on arrival order.
//! Events of the same object and type with *different* snapshots are distinct facts (two declines of one
//! PaymentIntent, two partial refunds of one charge) and are all applied.

use crate::action::{Action, ActionId, ActionKind};
use crate::event::{
    ChargeObservation, ChargeStatus, DisputeStatus, IntentStatus, Observation, PaymentEvent, RefundObservation,
    RefundStatus,
};
use crate::ids::{EventId, PaymentKey};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// Where a payment stands, in the terms a business uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Created; no attempt yet (`requires_payment_method` without failure, `requires_confirmation`).
    #[default]
    Created,
    /// Waiting for the customer (3-D Secure, redirect).
    RequiresAction,
    /// An asynchronous payment (bank debit) is in flight.
    Processing,
    /// Authorized, waiting for manual capture.
    RequiresCapture,
    /// Funds received.
    Succeeded,
    /// The latest attempt failed; the customer may still retry.
    Failed,
    /// Canceled, or the authorization released or expired.
    Canceled,
    /// Succeeded, and part of it refunded.
    PartiallyRefunded,
    /// Succeeded, and all of it refunded.
    Refunded,
}

impl Lifecycle {
    /// Every value, in declaration order.
    pub const ALL: [Lifecycle; 9] = [
        Lifecycle::Created,
        Lifecycle::RequiresAction,
        Lifecycle::Processing,
        Lifecycle::RequiresCapture,
        Lifecycle::Succeeded,
        Lifecycle::Failed,
        Lifecycle::Canceled,
        Lifecycle::PartiallyRefunded,
        Lifecycle::Refunded,
    ];

    /// The snake_case name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Created => "created",
            Lifecycle::RequiresAction => "requires_action",
            Lifecycle::Processing => "processing",
            Lifecycle::RequiresCapture => "requires_capture",
            Lifecycle::Succeeded => "succeeded",
            Lifecycle::Failed => "failed",
            Lifecycle::Canceled => "canceled",
            Lifecycle::PartiallyRefunded => "partially_refunded",
            Lifecycle::Refunded => "refunded",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// A refund's latest known state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundState {
    /// Latest status in causal order.
    pub status: RefundStatus,
    /// Refund amount, minor units.
    pub amount: i64,
}

/// A dispute's latest known state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeState {
    /// Latest status in causal order.
    pub status: DisputeStatus,
    /// Disputed amount, minor units.
    pub amount: i64,
    /// Stripe's `reason`.
    pub reason: Option<String>,
}

/// One applied event and the lifecycle the payment had right after it, in causal order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The event as applied.
    pub event: PaymentEvent,
    /// The payment's lifecycle after this event (in causal order, not arrival order).
    pub lifecycle: Lifecycle,
}

/// The projected state of one payment. Equal for every arrival order of the same events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentState {
    /// The payment.
    pub key: PaymentKey,
    /// Stripe `livemode`.
    pub livemode: bool,
    /// The PaymentIntent's Stripe status. For a charge without PaymentIntent, the status a PaymentIntent
    /// would have (captured charge: `succeeded`, pending: `processing`, …). `None` until an event with a
    /// status arrives.
    pub status: Option<IntentStatus>,
    /// See [`Lifecycle`].
    pub lifecycle: Lifecycle,
    /// Amount asked, minor units.
    pub amount: i64,
    /// Currency, lower case.
    pub currency: Option<String>,
    /// Amount received (captured).
    pub amount_received: i64,
    /// Sum of the refunds whose latest status is `succeeded`, capped at `amount_received` (releasing an
    /// uncaptured authorization creates a "refund" that returns no received money).
    pub amount_refunded: i64,
    /// Refunds by id.
    pub refunds: BTreeMap<String, RefundState>,
    /// True once any dispute was opened (like Stripe's `charge.disputed`); never reset.
    pub disputed: bool,
    /// Status of the dispute event latest in causal order.
    pub dispute_status: Option<DisputeStatus>,
    /// Disputes by id.
    pub disputes: BTreeMap<String, DisputeState>,
    /// The latest charge (attempt) id.
    pub latest_charge: Option<String>,
    /// That charge's latest status, when a charge event told it.
    pub latest_charge_status: Option<ChargeStatus>,
    /// Distinct failed attempts.
    pub failure_count: u32,
    /// Error code of the failure latest in causal order.
    pub last_failure_code: Option<String>,
    /// Stripe customer id.
    pub customer: Option<String>,
    /// The PaymentIntent's metadata (the charge's, for a charge without PaymentIntent).
    pub metadata: BTreeMap<String, String>,
    /// Smallest Stripe `created` applied.
    pub first_event_at: Option<i64>,
    /// Largest Stripe `created` applied.
    pub last_event_at: Option<i64>,
    /// Applied events in causal order with the lifecycle after each.
    pub history: Vec<HistoryEntry>,
    /// Accumulators of the fold, kept so that an in-order event needs no refold.
    pub fold: FoldState,
}

/// Internal accumulators of the fold. Part of the state (and so serialized) but not meant for readers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldState {
    /// The event that set `status` reported a failed attempt.
    pub status_from_failure: bool,
    /// A PaymentIntent snapshot was folded (its amount and metadata win over a charge's).
    pub seen_intent: bool,
    /// Latest status of every charge seen.
    pub charges: BTreeMap<String, ChargeStatus>,
    /// Failed attempts (charge id, else payment method) with their error code.
    pub failed_attempts: BTreeMap<String, Option<String>>,
    /// The attempt that put the payment into `requires_action`.
    pub action_subject: Option<String>,
    /// For each refund, the second and lifecycle rank of the observation its state came from.
    pub refund_order: BTreeMap<String, (i64, u8)>,
}

/// A payment as people and downstream services read it: the state without fold internals or history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PaymentSummary<'a> {
    /// PaymentIntent id (or charge id).
    pub id: &'a str,
    /// Connect account.
    pub account: Option<&'a str>,
    /// Stripe `livemode`.
    pub livemode: bool,
    /// Stripe status.
    pub status: Option<IntentStatus>,
    /// Lifecycle.
    pub lifecycle: Lifecycle,
    /// Amount asked.
    pub amount: i64,
    /// Currency.
    pub currency: Option<&'a str>,
    /// Amount received.
    pub amount_received: i64,
    /// Amount refunded.
    pub amount_refunded: i64,
    /// Refunds by id.
    pub refunds: &'a BTreeMap<String, RefundState>,
    /// Ever disputed.
    pub disputed: bool,
    /// Latest dispute status.
    pub dispute_status: Option<DisputeStatus>,
    /// Latest charge.
    pub latest_charge: Option<&'a str>,
    /// Its status.
    pub latest_charge_status: Option<ChargeStatus>,
    /// Distinct failed attempts.
    pub failure_count: u32,
    /// Latest failure code.
    pub last_failure_code: Option<&'a str>,
    /// Customer.
    pub customer: Option<&'a str>,
    /// Metadata.
    pub metadata: &'a BTreeMap<String, String>,
    /// Number of events applied.
    pub events_applied: usize,
    /// The event latest in causal order.
    pub last_event_id: Option<&'a str>,
    /// Smallest Stripe `created`.
    pub first_event_at: Option<i64>,
    /// Largest Stripe `created`.
    pub last_event_at: Option<i64>,
}

/// What applying an event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The event was new and is now part of the state.
    Applied,
    /// The event (or a twin of it) was applied before; nothing changed.
    Duplicate {
        /// The event already in the history.
        of: EventId,
    },
    /// The event is a twin of an applied one but sorts first, so it replaced it (see module docs).
    ReplacedTwin {
        /// The event it replaced.
        replaced: EventId,
    },
}

/// The result of [`Payment::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// What happened to the state.
    pub effect: Effect,
    /// Actions that became due and were never emitted before, in a deterministic order.
    pub actions: Vec<Action>,
}

/// An event cannot be applied to this payment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The event belongs to another payment; the caller routed it wrongly.
    #[error("event {event} belongs to payment {got}, not {expected}")]
    WrongPayment {
        /// The payment this state is for.
        expected: PaymentKey,
        /// The payment named by the event.
        got: PaymentKey,
        /// The event.
        event: EventId,
    },
}

/// A payment: its convergent state plus the ledger of actions already emitted for it.
///
/// The ledger is deliberately *not* part of [`PaymentState`]: which actions were due depends on what was
/// known when (a failure seen before the success is notified; one seen after is not), so it reflects
/// arrival order, while the state does not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The projected state.
    pub state: PaymentState,
    /// Ids of every action emitted for this payment.
    pub emitted: BTreeSet<ActionId>,
}

/// Position of an event in the causal order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct OrderKey<'a> {
    created: i64,
    rank: u8,
    id: &'a str,
}

fn order_key(ev: &PaymentEvent) -> OrderKey<'_> {
    OrderKey { created: ev.created, rank: rank(&ev.observation), id: ev.id.as_str() }
}

/// Status an observation implies for the PaymentIntent, and whether it reports a failed attempt.
fn implied_status(obs: &Observation) -> Option<(IntentStatus, bool)> {
    match obs {
        Observation::PaymentIntent(p) => Some((p.status, p.failure.is_some())),
        Observation::Charge(c) => Some(charge_implied_status(c)),
        Observation::Refund(_) | Observation::Dispute(_) => None,
    }
}

fn charge_implied_status(c: &ChargeObservation) -> (IntentStatus, bool) {
    match c.status {
        ChargeStatus::Failed => (IntentStatus::RequiresPaymentMethod, true),
        ChargeStatus::Pending => (IntentStatus::Processing, false),
        ChargeStatus::Succeeded if c.captured => (IntentStatus::Succeeded, false),
        // An authorization that was released (refunded while uncaptured) or expired.
        ChargeStatus::Succeeded if c.refunded || c.expired => (IntentStatus::Canceled, false),
        ChargeStatus::Succeeded => (IntentStatus::RequiresCapture, false),
    }
}

/// Lifecycle position of what an event reports; breaks ties between events of the same second.
fn rank(obs: &Observation) -> u8 {
    if let Some((status, failed)) = implied_status(obs) {
        return match (status, failed) {
            (IntentStatus::RequiresPaymentMethod, false) => 0,
            (IntentStatus::RequiresConfirmation, _) => 1,
            (IntentStatus::RequiresAction, _) => 2,
            (IntentStatus::Processing, _) => 3,
            (IntentStatus::RequiresCapture, _) => 4,
            // A failure ends an attempt that was in requires_action or processing.
            (IntentStatus::RequiresPaymentMethod, true) => 5,
            (IntentStatus::Succeeded | IntentStatus::Canceled, _) => 6,
        };
    }
    match obs {
        Observation::Refund(r) => 7 + refund_rank(r.status),
        Observation::Dispute(d) => {
            10 + match d.status {
                DisputeStatus::WarningNeedsResponse | DisputeStatus::NeedsResponse => 0,
                DisputeStatus::WarningUnderReview | DisputeStatus::UnderReview => 1,
                _ => 2,
            }
        }
        Observation::PaymentIntent(_) | Observation::Charge(_) => 0,
    }
}

fn refund_rank(s: RefundStatus) -> u8 {
    match s {
        RefundStatus::Pending | RefundStatus::RequiresAction => 0,
        RefundStatus::Succeeded => 1,
        RefundStatus::Failed | RefundStatus::Canceled => 2,
    }
}

/// Two events are twins: same object, same type, same snapshot, different event ids.
fn is_twin(a: &PaymentEvent, b: &PaymentEvent) -> bool {
    a.event_type == b.event_type && a.observation == b.observation
}

impl PaymentState {
    /// The state of a payment no event was applied to.
    pub fn new(key: PaymentKey) -> Self {
        PaymentState {
            key,
            livemode: false,
            status: None,
            lifecycle: Lifecycle::Created,
            amount: 0,
            currency: None,
            amount_received: 0,
            amount_refunded: 0,
            refunds: BTreeMap::new(),
            disputed: false,
            dispute_status: None,
            disputes: BTreeMap::new(),
            latest_charge: None,
            latest_charge_status: None,
            failure_count: 0,
            last_failure_code: None,
            customer: None,
            metadata: BTreeMap::new(),
            first_event_at: None,
            last_event_at: None,
            history: Vec::new(),
            fold: FoldState::default(),
        }
    }

    /// The state as people and downstream services read it.
    pub fn summary(&self) -> PaymentSummary<'_> {
        PaymentSummary {
            id: self.key.payment.as_str(),
            account: self.key.account.as_ref().map(|a| a.as_str()),
            livemode: self.livemode,
            status: self.status,
            lifecycle: self.lifecycle,
            amount: self.amount,
            currency: self.currency.as_deref(),
            amount_received: self.amount_received,
            amount_refunded: self.amount_refunded,
            refunds: &self.refunds,
            disputed: self.disputed,
            dispute_status: self.dispute_status,
            latest_charge: self.latest_charge.as_deref(),
            latest_charge_status: self.latest_charge_status,
            failure_count: self.failure_count,
            last_failure_code: self.last_failure_code.as_deref(),
            customer: self.customer.as_deref(),
            metadata: &self.metadata,
            events_applied: self.history.len(),
            last_event_id: self.history.last().map(|h| h.event.id.as_str()),
            first_event_at: self.first_event_at,
            last_event_at: self.last_event_at,
        }
    }

    /// Ids of the applied events, in causal order.
    pub fn applied_event_ids(&self) -> impl Iterator<Item = &EventId> {
        self.history.iter().map(|h| &h.event.id)
    }

    /// The state as of Stripe time `t`: the fold of the events created at or before `t`.
    pub fn as_of(&self, t: i64) -> PaymentState {
        let mut s = PaymentState::new(self.key.clone());
        for entry in self.history.iter().take_while(|h| h.event.created <= t) {
            s.history.push(HistoryEntry { event: entry.event.clone(), lifecycle: Lifecycle::Created });
        }
        s.refold();
        s
    }

    /// Recomputes every derived field from the history.
    fn refold(&mut self) {
        let mut history = std::mem::take(&mut self.history);
        *self = PaymentState::new(self.key.clone());
        for entry in &mut history {
            self.step(&entry.event);
            entry.lifecycle = self.lifecycle;
        }
        self.history = history;
    }

    /// Folds one event that sorts after every event folded so far.
    fn step(&mut self, ev: &PaymentEvent) {
        self.livemode = ev.livemode;
        self.first_event_at = Some(self.first_event_at.map_or(ev.created, |t| t.min(ev.created)));
        self.last_event_at = Some(self.last_event_at.map_or(ev.created, |t| t.max(ev.created)));
        match &ev.observation {
            Observation::PaymentIntent(p) => {
                self.amount = p.amount;
                self.currency = Some(p.currency.clone());
                self.metadata.clone_from(&p.metadata);
                self.fold.seen_intent = true;
                self.amount_received = self.amount_received.max(p.amount_received);
                if p.customer.is_some() {
                    self.customer.clone_from(&p.customer);
                }
                if p.latest_charge.is_some() {
                    self.latest_charge.clone_from(&p.latest_charge);
                }
                if let Some(f) = &p.failure {
                    let attempt =
                        f.charge.as_ref().or(p.latest_charge.as_ref()).or(p.payment_method.as_ref()).unwrap_or(&p.id);
                    self.fold.failed_attempts.insert(attempt.clone(), f.code.clone());
                    self.last_failure_code.clone_from(&f.code);
                }
                self.set_status(p.status, p.failure.is_some());
                if self.status == Some(IntentStatus::RequiresAction) && p.status == IntentStatus::RequiresAction {
                    let subject = p.payment_method.as_ref().or(p.latest_charge.as_ref()).unwrap_or(&p.id);
                    self.fold.action_subject = Some(subject.clone());
                }
            }
            Observation::Charge(c) => {
                if !self.fold.seen_intent {
                    self.amount = c.amount;
                    self.currency = Some(c.currency.clone());
                    self.metadata.clone_from(&c.metadata);
                }
                self.amount_received = self.amount_received.max(c.amount_captured);
                if c.customer.is_some() {
                    self.customer.clone_from(&c.customer);
                }
                self.fold.charges.insert(c.id.clone(), c.status);
                self.latest_charge = Some(c.id.clone());
                if c.status == ChargeStatus::Failed {
                    self.fold.failed_attempts.insert(c.id.clone(), c.failure_code.clone());
                    self.last_failure_code.clone_from(&c.failure_code);
                }
                for r in &c.refunds {
                    self.fold_refund(r, ev.created);
                }
                let (status, failed) = charge_implied_status(c);
                self.set_status(status, failed);
            }
            Observation::Refund(r) => self.fold_refund(r, ev.created),
            Observation::Dispute(d) => {
                self.disputed = true;
                self.dispute_status = Some(d.status);
                self.disputes.insert(
                    d.id.clone(),
                    DisputeState { status: d.status, amount: d.amount, reason: d.reason.clone() },
                );
            }
        }
        self.failure_count = u32::try_from(self.fold.failed_attempts.len()).unwrap_or(u32::MAX);
        self.latest_charge_status = self.latest_charge.as_ref().and_then(|c| self.fold.charges.get(c).copied());
        let refunded = self
            .refunds
            .values()
            .filter(|r| r.status == RefundStatus::Succeeded)
            .fold(0i64, |sum, r| sum.saturating_add(r.amount));
        // Money can only be refunded once received: the "refund" of a released authorization returns
        // nothing, and a refund seen before the payment's success counts once the success is known.
        self.amount_refunded = refunded.min(self.amount_received);
        self.lifecycle = self.derive_lifecycle();
    }

    /// A refund is reported by its own events and embedded in `charge.refunded`; within one second the
    /// status furthest in the refund's lifecycle wins, whichever kind of event carried it.
    fn fold_refund(&mut self, r: &RefundObservation, created: i64) {
        let rank = refund_rank(r.status);
        if let Some(&(t, k)) = self.fold.refund_order.get(&r.id) {
            if t == created && k > rank {
                return;
            }
        }
        self.fold.refund_order.insert(r.id.clone(), (created, rank));
        self.refunds.insert(r.id.clone(), RefundState { status: r.status, amount: r.amount });
    }

    fn set_status(&mut self, status: IntentStatus, failed: bool) {
        if let Some(current) = self.status {
            if current.is_terminal() && !status.is_terminal() {
                return; // terminal statuses are absorbing
            }
        }
        self.status = Some(status);
        self.fold.status_from_failure = failed && status == IntentStatus::RequiresPaymentMethod;
    }

    fn derive_lifecycle(&self) -> Lifecycle {
        match self.status {
            None | Some(IntentStatus::RequiresConfirmation) => Lifecycle::Created,
            Some(IntentStatus::RequiresPaymentMethod) if self.fold.status_from_failure => Lifecycle::Failed,
            Some(IntentStatus::RequiresPaymentMethod) => Lifecycle::Created,
            Some(IntentStatus::RequiresAction) => Lifecycle::RequiresAction,
            Some(IntentStatus::Processing) => Lifecycle::Processing,
            Some(IntentStatus::RequiresCapture) => Lifecycle::RequiresCapture,
            Some(IntentStatus::Canceled) => Lifecycle::Canceled,
            Some(IntentStatus::Succeeded) if self.amount_refunded <= 0 => Lifecycle::Succeeded,
            Some(IntentStatus::Succeeded) if self.amount_refunded >= self.amount_received => Lifecycle::Refunded,
            Some(IntentStatus::Succeeded) => Lifecycle::PartiallyRefunded,
        }
    }

    /// Inserts `ev` at its causal position and updates the derived fields: incrementally when it sorts
    /// last, by a refold otherwise or when `force_refold`.
    fn insert(&mut self, ev: PaymentEvent, force_refold: bool) {
        let pos = self.history.partition_point(|h| order_key(&h.event) < order_key(&ev));
        let at_end = pos == self.history.len();
        self.history.insert(pos, HistoryEntry { event: ev, lifecycle: Lifecycle::Created });
        if at_end && !force_refold {
            // `step` reads no history: lend it the event without cloning.
            let mut history = std::mem::take(&mut self.history);
            self.step(&history[pos].event);
            history[pos].lifecycle = self.lifecycle;
            self.history = history;
        } else {
            self.refold();
        }
    }
}

impl Payment {
    /// A payment no event was applied to.
    pub fn new(key: PaymentKey) -> Self {
        Payment { state: PaymentState::new(key), emitted: BTreeSet::new() }
    }

    /// Applies one event: updates the state and returns the actions that became due.
    ///
    /// Idempotent: applying an event (or a twin) again changes nothing and returns no action.
    pub fn apply(&mut self, ev: PaymentEvent) -> Result<Applied, ApplyError> {
        if ev.key != self.state.key {
            return Err(ApplyError::WrongPayment {
                expected: self.state.key.clone(),
                got: ev.key.clone(),
                event: ev.id.clone(),
            });
        }
        if let Some(h) = self.state.history.iter().find(|h| h.event.id == ev.id) {
            return Ok(Applied { effect: Effect::Duplicate { of: h.event.id.clone() }, actions: Vec::new() });
        }
        let twin = self.state.history.iter().position(|h| is_twin(&h.event, &ev));
        let effect = match twin {
            Some(i) if order_key(&self.state.history[i].event).cmp(&order_key(&ev)) == Ordering::Less => {
                let of = self.state.history[i].event.id.clone();
                return Ok(Applied { effect: Effect::Duplicate { of }, actions: Vec::new() });
            }
            Some(i) => {
                let replaced = self.state.history.remove(i).event.id;
                Effect::ReplacedTwin { replaced }
            }
            None => Effect::Applied,
        };
        let (cause, created) = (ev.id.clone(), ev.created);
        // After a twin was removed the accumulators still include it: refold rather than step.
        self.state.insert(ev, matches!(effect, Effect::ReplacedTwin { .. }));
        let actions = self.take_due_actions(&cause, created);
        Ok(Applied { effect, actions })
    }

    /// Actions the current state makes due that were never emitted, recorded as emitted.
    fn take_due_actions(&mut self, caused_by: &EventId, event_created: i64) -> Vec<Action> {
        let s = &self.state;
        let mut due: Vec<Due> = Vec::new();
        let status = s.status;
        if status == Some(IntentStatus::Succeeded) {
            due.push(Due::new(ActionKind::FulfillOrder, s.key.payment.as_str(), s.amount_received));
        } else {
            for (attempt, code) in &s.fold.failed_attempts {
                let mut d = Due::new(ActionKind::NotifyPaymentFailed, attempt, s.amount);
                d.failure_code.clone_from(code);
                due.push(d);
            }
        }
        if s.lifecycle == Lifecycle::RequiresAction {
            if let Some(subject) = &s.fold.action_subject {
                due.push(Due::new(ActionKind::RequestCustomerAction, subject, s.amount));
            }
        }
        if status == Some(IntentStatus::Canceled) {
            due.push(Due::new(ActionKind::PaymentCanceled, s.key.payment.as_str(), s.amount));
        }
        // A refund returns received money: refunds of a payment that never succeeded (released
        // authorizations) are not announced, and a refund seen before the success waits for it.
        let refunds = s.refunds.iter().filter(|_| status == Some(IntentStatus::Succeeded));
        for (id, r) in refunds {
            match r.status {
                RefundStatus::Succeeded => due.push(Due::new(ActionKind::RefundSucceeded, id, r.amount)),
                RefundStatus::Failed => due.push(Due::new(ActionKind::RefundFailed, id, r.amount)),
                _ => {}
            }
        }
        for (id, d) in &s.disputes {
            due.push(Due::new(ActionKind::DisputeOpened, id, d.amount));
            if d.status.is_closed() {
                let mut closed = Due::new(ActionKind::DisputeClosed, id, d.amount);
                closed.outcome = Some(d.status);
                due.push(closed);
            }
        }
        let mut out = Vec::new();
        for Due { kind, subject, amount, failure_code, outcome } in due {
            let id = ActionId::derive(&s.key, kind, &subject);
            if self.emitted.contains(&id) {
                continue;
            }
            out.push(Action {
                id,
                kind,
                key: s.key.clone(),
                subject,
                amount,
                currency: s.currency.clone(),
                customer: s.customer.clone(),
                metadata: s.metadata.clone(),
                failure_code,
                outcome,
                caused_by: caused_by.clone(),
                event_created,
                livemode: s.livemode,
            });
        }
        for a in &out {
            self.emitted.insert(a.id.clone());
        }
        out
    }
}

/// An action the state makes due, before it is checked against the ledger.
struct Due {
    kind: ActionKind,
    subject: String,
    amount: i64,
    failure_code: Option<String>,
    outcome: Option<DisputeStatus>,
}

impl Due {
    fn new(kind: ActionKind, subject: &str, amount: i64) -> Self {
        Due { kind, subject: subject.to_owned(), amount, failure_code: None, outcome: None }
    }
}
