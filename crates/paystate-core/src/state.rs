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
//! status an event reports in Stripe's lifecycle (a decline comes before the next attempt's status, since a
//! server can confirm again with another card within the second; success and cancellation come last; a
//! refund follows the charge it returns). Terminal statuses (`succeeded`, `canceled`) are absorbing: once
//! one is in the set, no other event moves the status away from it, and a `charge.updated` (possibly about
//! a superseded attempt) never moves it at all.
//!
//! # Money
//! What a Charge's `amount_refunded` includes, and whether Stripe's own refunds exist, depends on the API
//! era of the event ([`ApiEra`]): see `docs/API-VERSIONS.md`. Every sum is recomputed from per-charge and
//! per-refund facts after each step, so it is a function of the folded sequence like everything else.
//!
//! # Duplicates
//! An event whose id was applied is a duplicate. So is a *twin*: another event about the same object, of the
//! same type, carrying the same snapshot, in the same second (Stripe occasionally emits one change as two
//! events). Of twins the one that sorts first is kept, so the kept set, and thus the state, does not depend
//! on arrival order.
//! Events of the same object and type with *different* snapshots are distinct facts (two declines of one
//! PaymentIntent, two partial refunds of one charge) and are all applied.

use crate::action::{Action, ActionId, ActionKind};
use crate::event::{
    ApiEra, ChargeObservation, ChargeStatus, DisputeFunds, DisputeStatus, IntentStatus, Observation, PaymentEvent,
    RefundObservation, RefundStatus,
};
use crate::ids::{EventId, PaymentKey};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// How long after a decline (in Stripe seconds) a failure is announced when no other attempt got anywhere
/// meanwhile: a customer whose first card is declined often succeeds with another within minutes.
pub const DEFAULT_FAILURE_GRACE_SECS: i64 = 600;

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
    /// The charge it returns money of.
    pub charge: Option<String>,
    /// Money returned to the customer. False for Stripe's own refunds before basil (the uncaptured rest
    /// of a partial capture, a released authorization): they move no money and are never counted.
    pub customer: bool,
    /// Known only from the Charge's `amount_refunded` (API versions that neither embed refunds nor send
    /// `refund.*`): the id is `{charge}@{second}/{amount_refunded after it}`, until a Refund object for the
    /// same charge, amount and second replaces it.
    pub from_charge: bool,
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
    /// A `charge.dispute.funds_withdrawn` was seen.
    pub funds_withdrawn: bool,
    /// A `charge.dispute.funds_reinstated` was seen.
    pub funds_reinstated: bool,
}

/// The latest early fraud warning of a payment (`radar.early_fraud_warning.*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FraudWarningState {
    /// `issfr_…`
    pub id: String,
    /// `fraud_type`.
    pub fraud_type: Option<String>,
    /// `actionable`.
    pub actionable: bool,
}

/// What the fold keeps of each charge (attempt) of a payment: its latest snapshot in causal order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeFacts {
    /// `status`.
    pub status: ChargeStatus,
    /// `amount`.
    pub amount: i64,
    /// `amount_captured`.
    pub amount_captured: i64,
    /// `captured`.
    pub captured: bool,
    /// `paid`.
    pub paid: bool,
    /// Bank debit (asynchronous refunds).
    pub async_method: bool,
    /// The era that rendered the snapshot.
    pub era: ApiEra,
    /// Smallest `created` of an event showing the charge captured: Stripe's own refund of the uncaptured
    /// rest is created then, a customer's refund only after.
    pub captured_at: Option<i64>,
}

/// What the fold keeps of each Refund object beyond its public state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundFacts {
    /// Second and lifecycle rank of the observation the state came from.
    pub at: (i64, u8),
    /// The Refund's own `created`.
    pub created: i64,
    /// The era that rendered it.
    pub era: ApiEra,
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
    /// Amount received: captured and paid (0 while a bank debit is pending and after it failed; the
    /// captured amount after a partial capture).
    pub amount_received: i64,
    /// Money returned to the customer by refunds that succeeded, however Stripe reported them (Refund
    /// objects, or the Charge's `amount_refunded` where no Refund object is visible), capped at
    /// `amount_received`. Stripe's own refunds that move no money are never in it.
    pub amount_refunded: i64,
    /// Customer refunds created but not yet succeeded or failed.
    pub amount_refund_pending: i64,
    /// Refunds by id.
    pub refunds: BTreeMap<String, RefundState>,
    /// True once any dispute was opened (like Stripe's `charge.disputed`); never reset.
    pub disputed: bool,
    /// Status of the dispute event latest in causal order.
    pub dispute_status: Option<DisputeStatus>,
    /// Disputes by id.
    pub disputes: BTreeMap<String, DisputeState>,
    /// Sum of the amounts of chargebacks that are open or lost (inquiries move no money).
    pub amount_disputed: i64,
    /// Sum of the disputes whose funds were withdrawn (or that were lost) and not reinstated.
    pub amount_lost_to_disputes: i64,
    /// The early fraud warning latest in causal order.
    pub early_fraud_warning: Option<FraudWarningState>,
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
    /// Number of distinct events applied (the payment's history holds them; see [`History`]).
    pub events_applied: u64,
    /// The applied event latest in causal order.
    pub last_event: Option<EventPosition>,
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
    /// Largest `amount_received` of a PaymentIntent snapshot.
    pub intent_received: i64,
    /// Smallest `created` of a `succeeded` PaymentIntent snapshot.
    pub intent_succeeded_at: Option<i64>,
    /// Every charge seen, as its latest snapshot says.
    pub charges: BTreeMap<String, ChargeFacts>,
    /// Failed attempts (charge id, else payment method) with their error code.
    pub failed_attempts: BTreeMap<String, Option<String>>,
    /// For each failed attempt, the second of its failure and the event that reported it.
    pub failed_at: BTreeMap<String, (i64, EventId)>,
    /// Seconds at which an attempt succeeded, needed the customer, was processing or was authorised: a
    /// failure followed by one of these within the grace period is not announced.
    pub recovered_at: BTreeSet<i64>,
    /// The attempt that put the payment into `requires_action`.
    pub action_subject: Option<String>,
    /// Refund objects seen, by id.
    pub refund_facts: BTreeMap<String, RefundFacts>,
    /// Early fraud warnings seen, by id.
    pub fraud_warnings: BTreeSet<String>,
    /// Refunds inferred from a Charge's `amount_refunded`, with the second of the event that showed them.
    pub inferred_refunds: BTreeMap<String, i64>,
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
    /// Amount refunded to the customer.
    pub amount_refunded: i64,
    /// Customer refunds pending.
    pub amount_refund_pending: i64,
    /// Refunds by id.
    pub refunds: &'a BTreeMap<String, RefundState>,
    /// Ever disputed.
    pub disputed: bool,
    /// Latest dispute status.
    pub dispute_status: Option<DisputeStatus>,
    /// Open or lost chargebacks.
    pub amount_disputed: i64,
    /// Withdrawn and not reinstated.
    pub amount_lost_to_disputes: i64,
    /// Latest early fraud warning.
    pub early_fraud_warning: Option<&'a FraudWarningState>,
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
    pub events_applied: u64,
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
pub enum ApplyError<E = std::convert::Infallible> {
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
    /// The payment's history could not be read or written.
    #[error("payment history: {0}")]
    History(E),
}

/// Where a payment's applied events are kept: outside its state, so that the state stays small whatever
/// the number of events (a store keeps one entry per event; [`EventList`] keeps them in memory).
/// [`Payment::apply`] reads and writes it; the events it holds are exactly those the state was folded from.
pub trait History {
    /// Why the history could not be read or written.
    type Error: std::fmt::Display;
    /// The applied events created in Stripe second `second`, in any order. (Duplicates are found here too:
    /// Stripe stamps an event once, so every delivery of it has the same `created`.)
    fn in_second(&mut self, second: i64) -> Result<Vec<PaymentEvent>, Self::Error>;
    /// Every applied event, in causal order (see [`EventPosition`]).
    fn all(&mut self) -> Result<Vec<PaymentEvent>, Self::Error>;
    /// Records an applied event.
    fn insert(&mut self, ev: PaymentEvent) -> Result<(), Self::Error>;
    /// Forgets an applied event (a twin that another one replaced).
    fn remove(&mut self, ev: &PaymentEvent) -> Result<(), Self::Error>;
}

impl<H: History + ?Sized> History for &mut H {
    type Error = H::Error;
    fn in_second(&mut self, second: i64) -> Result<Vec<PaymentEvent>, Self::Error> {
        (**self).in_second(second)
    }
    fn all(&mut self) -> Result<Vec<PaymentEvent>, Self::Error> {
        (**self).all()
    }
    fn insert(&mut self, ev: PaymentEvent) -> Result<(), Self::Error> {
        (**self).insert(ev)
    }
    fn remove(&mut self, ev: &PaymentEvent) -> Result<(), Self::Error> {
        (**self).remove(ev)
    }
}

/// A payment's applied events in memory, in causal order: the [`History`] of replay, `paystate fold` and
/// tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventList(Vec<PaymentEvent>);

impl EventList {
    /// The events, in causal order.
    pub fn events(&self) -> &[PaymentEvent] {
        &self.0
    }

    /// Takes events in any order (a store's entries, a snapshot) and keeps them in causal order.
    pub fn from_events(mut events: Vec<PaymentEvent>) -> Self {
        events.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
        EventList(events)
    }

    /// The events, in causal order.
    pub fn into_events(self) -> Vec<PaymentEvent> {
        self.0
    }
}

impl History for EventList {
    type Error = std::convert::Infallible;

    fn in_second(&mut self, second: i64) -> Result<Vec<PaymentEvent>, Self::Error> {
        let from = self.0.partition_point(|e| e.created < second);
        Ok(self.0[from..].iter().take_while(|e| e.created == second).cloned().collect())
    }

    fn all(&mut self) -> Result<Vec<PaymentEvent>, Self::Error> {
        Ok(self.0.clone())
    }

    fn insert(&mut self, ev: PaymentEvent) -> Result<(), Self::Error> {
        let pos = self.0.partition_point(|h| order_key(h) < order_key(&ev));
        self.0.insert(pos, ev);
        Ok(())
    }

    fn remove(&mut self, ev: &PaymentEvent) -> Result<(), Self::Error> {
        self.0.retain(|e| e.id != ev.id);
        Ok(())
    }
}

/// Each event of `events` (causal order) with the lifecycle the payment had right after it: what
/// `/history` and `paystate show` print.
pub fn timeline(key: &PaymentKey, events: &[PaymentEvent]) -> Vec<HistoryEntry> {
    let mut s = PaymentState::new(key.clone());
    events
        .iter()
        .map(|ev| {
            s.step(ev);
            HistoryEntry { event: ev.clone(), lifecycle: s.lifecycle }
        })
        .collect()
}

/// One applied event as a step of the payment: the lifecycle before and after it and the amounts right
/// after it. What `/v1/payments/{id}/history`, `paystate show` and `export --what transitions` give.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's Stripe `created` (unix seconds).
    pub created: i64,
    /// The lifecycle before the event.
    pub lifecycle_before: Lifecycle,
    /// The lifecycle after the event.
    pub lifecycle: Lifecycle,
    /// The amount after the event, minor units.
    pub amount: i64,
    /// Money received after the event, minor units.
    pub amount_received: i64,
    /// Money refunded after the event, minor units.
    pub amount_refunded: i64,
    /// The currency after the event.
    pub currency: Option<String>,
}

/// An action the payment's ledger holds, with its kind and subject when they are known (see
/// [`PaymentWithHistory::emitted_actions`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmittedAction {
    /// The action's id.
    pub id: ActionId,
    /// Its kind.
    pub kind: Option<ActionKind>,
    /// What it is about: the payment, an attempt, a refund, a dispute or a fraud warning.
    pub subject: Option<String>,
}

/// Each event of `events` (causal order) as a [`Transition`] of the payment `key`.
pub fn transitions(key: &PaymentKey, events: &[PaymentEvent]) -> Vec<Transition> {
    let mut s = PaymentState::new(key.clone());
    events
        .iter()
        .map(|ev| {
            let lifecycle_before = s.lifecycle;
            s.step(ev);
            Transition {
                event_id: ev.id.as_str().to_owned(),
                event_type: ev.event_type.clone(),
                created: ev.created,
                lifecycle_before,
                lifecycle: s.lifecycle,
                amount: s.amount,
                amount_received: s.amount_received,
                amount_refunded: s.amount_refunded,
                currency: s.currency.clone(),
            }
        })
        .collect()
}

/// A payment together with its applied events in memory: what replay and `paystate fold` fold into, and
/// the simplest way to use the core.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentWithHistory {
    /// The payment.
    pub payment: Payment,
    /// Its applied events.
    pub events: EventList,
}

impl PaymentWithHistory {
    /// A payment no event was applied to.
    pub fn new(key: PaymentKey) -> Self {
        PaymentWithHistory { payment: Payment::new(key), events: EventList::default() }
    }

    /// [`Payment::apply`] with the history in memory.
    pub fn apply(&mut self, ev: PaymentEvent) -> Result<Applied, ApplyError> {
        self.payment.apply(ev, &mut self.events)
    }

    /// The projected state.
    pub fn state(&self) -> &PaymentState {
        &self.payment.state
    }

    /// The events with the lifecycle after each (see [`timeline`]).
    pub fn timeline(&self) -> Vec<HistoryEntry> {
        timeline(&self.payment.state.key, self.events.events())
    }

    /// Its applied events as [`Transition`]s, in causal order.
    pub fn transitions(&self) -> Vec<Transition> {
        transitions(&self.payment.state.key, self.events.events())
    }

    /// The actions of the ledger, named: each id's kind and subject are found by deriving the id of
    /// every kind for every id the payment's states name (the payment, each failed or challenged attempt,
    /// refund, dispute and fraud warning) as its events are folded one by one. In id order; an id that
    /// matches none (a ledger of a release that derived ids otherwise) has no kind.
    pub fn emitted_actions(&self) -> Vec<EmittedAction> {
        let key = &self.payment.state.key;
        let mut subjects: BTreeSet<String> = BTreeSet::from([key.payment.as_str().to_owned()]);
        let mut s = PaymentState::new(key.clone());
        for ev in self.events.events() {
            s.step(ev);
            subjects.extend(s.fold.action_subject.iter().cloned());
            subjects.extend(s.fold.failed_attempts.keys().cloned());
            subjects.extend(s.refunds.keys().cloned());
            subjects.extend(s.disputes.keys().cloned());
            subjects.extend(s.early_fraud_warning.iter().map(|w| w.id.clone()));
        }
        let mut named: BTreeMap<ActionId, (ActionKind, String)> = BTreeMap::new();
        for subject in subjects {
            for kind in ActionKind::ALL {
                let id = ActionId::derive(key, kind, &subject);
                if self.payment.emitted.contains(&id) {
                    named.insert(id, (kind, subject.clone()));
                }
            }
        }
        self.payment
            .emitted
            .iter()
            .map(|id| {
                let (kind, subject) = named.remove(id).map_or((None, None), |(k, s)| (Some(k), Some(s)));
                EmittedAction { id: id.clone(), kind, subject }
            })
            .collect()
    }

    /// The state as of Stripe time `t`.
    pub fn as_of(&self, t: i64) -> PaymentState {
        PaymentState::as_of(self.payment.state.key.clone(), self.events.events(), t)
    }
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

/// Where an event stands in the causal order `(created, rank, id)` (see the module docs). A store that
/// keys a payment's events by it reads them back in causal order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventPosition {
    /// Stripe `created`.
    pub created: i64,
    /// Position of what the event reports in Stripe's lifecycle; breaks ties within a second.
    pub rank: u8,
    /// The event id; breaks the remaining ties.
    pub id: EventId,
}

impl EventPosition {
    /// The position of `ev`.
    pub fn of(ev: &PaymentEvent) -> Self {
        EventPosition { created: ev.created, rank: rank(&ev.observation), id: ev.id.clone() }
    }

    fn key(&self) -> OrderKey<'_> {
        OrderKey { created: self.created, rank: self.rank, id: self.id.as_str() }
    }
}

/// Position of an event in the causal order, borrowed.
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
        Observation::Refund(_) | Observation::Dispute(_) | Observation::FraudWarning(_) => None,
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
            // Within one second a decline comes before what follows it: the merchant's server can confirm
            // again with another card at once (success, 3-D Secure or an authorisation in the same
            // second), while an attempt that waits for a customer or a bank takes longer than a second to
            // fail.
            (IntentStatus::RequiresPaymentMethod, true) => 1,
            (IntentStatus::RequiresConfirmation, _) => 2,
            (IntentStatus::RequiresAction, _) => 3,
            (IntentStatus::Processing, _) => 4,
            (IntentStatus::RequiresCapture, _) => 5,
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
        Observation::FraudWarning(_) => 13,
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

/// Two events are twins: same object, same type, same snapshot, same second, different event ids. The
/// second matters: a Charge can show the same fields again days later (refunded, the refund failed, refunded
/// again), and that is a new fact. Being an equivalence relation, twinship keeps the fold convergent.
fn is_twin(a: &PaymentEvent, b: &PaymentEvent) -> bool {
    a.created == b.created && a.event_type == b.event_type && a.observation == b.observation
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
            amount_refund_pending: 0,
            refunds: BTreeMap::new(),
            disputed: false,
            dispute_status: None,
            disputes: BTreeMap::new(),
            amount_disputed: 0,
            amount_lost_to_disputes: 0,
            early_fraud_warning: None,
            latest_charge: None,
            latest_charge_status: None,
            failure_count: 0,
            last_failure_code: None,
            customer: None,
            metadata: BTreeMap::new(),
            first_event_at: None,
            last_event_at: None,
            events_applied: 0,
            last_event: None,
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
            amount_refund_pending: self.amount_refund_pending,
            refunds: &self.refunds,
            disputed: self.disputed,
            dispute_status: self.dispute_status,
            amount_disputed: self.amount_disputed,
            amount_lost_to_disputes: self.amount_lost_to_disputes,
            early_fraud_warning: self.early_fraud_warning.as_ref(),
            latest_charge: self.latest_charge.as_deref(),
            latest_charge_status: self.latest_charge_status,
            failure_count: self.failure_count,
            last_failure_code: self.last_failure_code.as_deref(),
            customer: self.customer.as_deref(),
            metadata: &self.metadata,
            events_applied: self.events_applied,
            last_event_id: self.last_event.as_ref().map(|p| p.id.as_str()),
            first_event_at: self.first_event_at,
            last_event_at: self.last_event_at,
        }
    }

    /// The state folded from `events`, which must be in causal order (as [`History::all`] gives them).
    pub fn fold_all<'e>(key: PaymentKey, events: impl IntoIterator<Item = &'e PaymentEvent>) -> PaymentState {
        let mut s = PaymentState::new(key);
        for ev in events {
            s.step(ev);
        }
        s
    }

    /// The state as of Stripe time `t`: the fold of the events of `events` (causal order) created at or
    /// before `t`.
    pub fn as_of(key: PaymentKey, events: &[PaymentEvent], t: i64) -> PaymentState {
        PaymentState::fold_all(key, events.iter().take_while(|ev| ev.created <= t))
    }

    /// Folds one event that sorts after every event folded so far.
    fn step(&mut self, ev: &PaymentEvent) {
        self.events_applied += 1;
        self.last_event = Some(EventPosition::of(ev));
        self.livemode = ev.livemode;
        self.first_event_at = Some(self.first_event_at.map_or(ev.created, |t| t.min(ev.created)));
        self.last_event_at = Some(self.last_event_at.map_or(ev.created, |t| t.max(ev.created)));
        match &ev.observation {
            Observation::PaymentIntent(p) => {
                self.amount = p.amount;
                self.currency = Some(p.currency.clone());
                self.metadata.clone_from(&p.metadata);
                self.fold.seen_intent = true;
                self.fold.intent_received = self.fold.intent_received.max(p.amount_received);
                if p.status == IntentStatus::Succeeded {
                    let at = self.fold.intent_succeeded_at.map_or(ev.created, |t| t.min(ev.created));
                    self.fold.intent_succeeded_at = Some(at);
                }
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
                    self.fold.failed_at.entry(attempt.clone()).or_insert_with(|| (ev.created, ev.id.clone()));
                    self.last_failure_code.clone_from(&f.code);
                }
                self.note_recovery(p.status, ev.created);
                self.set_status(p.status, p.failure.is_some());
                if self.status == Some(IntentStatus::RequiresAction) && p.status == IntentStatus::RequiresAction {
                    let subject = p.payment_method.as_ref().or(p.latest_charge.as_ref()).unwrap_or(&p.id);
                    self.fold.action_subject = Some(subject.clone());
                }
            }
            Observation::Charge(c) => self.fold_charge(ev, c),
            Observation::Refund(r) => self.fold_refund(r, ev.created, ev.era),
            Observation::Dispute(d) => {
                self.disputed = true;
                self.dispute_status = Some(d.status);
                let entry = self.disputes.entry(d.id.clone()).or_insert_with(|| DisputeState {
                    status: d.status,
                    amount: d.amount,
                    reason: None,
                    funds_withdrawn: false,
                    funds_reinstated: false,
                });
                entry.status = d.status;
                entry.amount = d.amount;
                entry.reason.clone_from(&d.reason);
                match d.funds {
                    Some(DisputeFunds::Withdrawn) => entry.funds_withdrawn = true,
                    Some(DisputeFunds::Reinstated) => entry.funds_reinstated = true,
                    None => {}
                }
            }
            Observation::FraudWarning(w) => {
                self.fold.fraud_warnings.insert(w.id.clone());
                self.early_fraud_warning = Some(FraudWarningState {
                    id: w.id.clone(),
                    fraud_type: w.fraud_type.clone(),
                    actionable: w.actionable,
                });
            }
        }
        self.derive();
    }

    /// A Charge snapshot. Only the events that report a charge's status change (`charge.succeeded`,
    /// `.failed`, `.pending`, `.captured`, `.expired`, `.refunded`) move the payment: a `charge.updated`
    /// can be about a superseded attempt (a declined card whose description changed later) and says
    /// nothing about the payment's current attempt.
    fn fold_charge(&mut self, ev: &PaymentEvent, c: &ChargeObservation) {
        if !self.fold.seen_intent {
            self.amount = c.amount;
            self.currency = Some(c.currency.clone());
            self.metadata.clone_from(&c.metadata);
        }
        if c.customer.is_some() {
            self.customer.clone_from(&c.customer);
        }
        let captured_at = self.fold.charges.get(&c.id).and_then(|f| f.captured_at);
        let captured_at =
            if c.captured { Some(captured_at.map_or(ev.created, |t| t.min(ev.created))) } else { captured_at };
        self.fold.charges.insert(
            c.id.clone(),
            ChargeFacts {
                status: c.status,
                amount: c.amount,
                amount_captured: c.amount_captured,
                captured: c.captured,
                paid: c.paid,
                async_method: c.async_method,
                era: ev.era,
                captured_at,
            },
        );
        for r in &c.refunds {
            let mut r = r.clone();
            r.charge.get_or_insert_with(|| c.id.clone());
            if r.created == 0 {
                r.created = ev.created;
            }
            self.fold_refund(&r, ev.created, ev.era);
        }
        if ev.era == ApiEra::NoExpand && !c.refunds_listed {
            self.refunds_from_charge(ev, c);
        }
        if ev.event_type == "charge.updated" {
            return;
        }
        self.latest_charge = Some(c.id.clone());
        if c.status == ChargeStatus::Failed {
            self.fold.failed_attempts.insert(c.id.clone(), c.failure_code.clone());
            self.fold.failed_at.entry(c.id.clone()).or_insert_with(|| (ev.created, ev.id.clone()));
            self.last_failure_code.clone_from(&c.failure_code);
        }
        let (status, failed) = charge_implied_status(c);
        self.note_recovery(status, ev.created);
        self.set_status(status, failed);
    }

    fn note_recovery(&mut self, status: IntentStatus, at: i64) {
        if matches!(
            status,
            IntentStatus::RequiresAction
                | IntentStatus::Processing
                | IntentStatus::RequiresCapture
                | IntentStatus::Succeeded
        ) {
            self.fold.recovered_at.insert(at);
        }
    }

    /// Failed attempts still worth announcing at `now`: the grace period after the failure has passed
    /// and no attempt succeeded, needed the customer, was processing or was authorised within it, and the
    /// payment has not succeeded. With the failure's second and event.
    fn failures_due(&self, now: i64, grace: i64) -> impl Iterator<Item = (&String, &(i64, EventId))> + '_ {
        let succeeded = self.status == Some(IntentStatus::Succeeded);
        self.fold.failed_at.iter().filter(move |(_, (at, _))| {
            !succeeded
                && at.saturating_add(grace) <= now
                && self.fold.recovered_at.range(*at..=at.saturating_add(grace)).next().is_none()
        })
    }

    /// On versions that neither embed a charge's refunds nor send `refund.*` for them, a refund is seen
    /// only in the Charge's `amount_refunded`: each `charge.refunded` reports one refund, of the amount
    /// `amount_refunded` grew by (`previous_attributes`), which becomes a refund of its own, taken as
    /// succeeded (cards refund at once) or as pending (bank debits), unless a Refund object of the same
    /// charge, amount and second is known. Without `previous_attributes`, the part of `amount_refunded`
    /// that no visible customer refund explains is taken instead.
    fn refunds_from_charge(&mut self, ev: &PaymentEvent, c: &ChargeObservation) {
        if !c.captured || ev.event_type != "charge.refunded" {
            return; // an uncaptured charge's refund is a released authorization: Stripe's own, no money
        }
        let amount = match c.previous_amount_refunded {
            Some(before) => c.amount_refunded.saturating_sub(before),
            None => {
                let own = if ev.era.has_own_refunds() { (c.amount - c.amount_captured).max(0) } else { 0 };
                let visible = self
                    .refunds
                    .iter()
                    .filter(|(_, r)| r.charge.as_deref() == Some(c.id.as_str()))
                    .filter(|(_, r)| !matches!(r.status, RefundStatus::Failed | RefundStatus::Canceled))
                    .filter(|(id, r)| !self.is_own(id, r))
                    .fold(0i64, |sum, (_, r)| sum.saturating_add(r.amount));
                c.amount_refunded.saturating_sub(own).saturating_sub(visible)
            }
        };
        if amount <= 0 {
            return;
        }
        let known = self.refunds.iter().any(|(id, r)| {
            !r.from_charge
                && r.charge.as_deref() == Some(c.id.as_str())
                && r.amount == amount
                && self.fold.refund_facts.get(id).is_some_and(|f| f.created == ev.created)
        });
        if known {
            return;
        }
        let status = if c.async_method { RefundStatus::Pending } else { RefundStatus::Succeeded };
        // Named by what Stripe reported, not by the event that carried it, so that a twin of that event
        // names the same refund.
        let id = format!("{}@{}/{}", c.id, ev.created, c.amount_refunded);
        self.fold.inferred_refunds.insert(id.clone(), ev.created);
        self.refunds
            .insert(id, RefundState { status, amount, charge: Some(c.id.clone()), customer: true, from_charge: true });
    }

    /// A refund is reported by its own events and embedded in `charge.refunded`; within one second the
    /// status furthest in the refund's lifecycle wins, whichever kind of event carried it. A Refund object
    /// replaces the refund inferred from its charge's `amount_refunded` in the same second.
    fn fold_refund(&mut self, r: &RefundObservation, at: i64, era: ApiEra) {
        let rank = refund_rank(r.status);
        if let Some(f) = self.fold.refund_facts.get(&r.id) {
            if f.at.0 == at && f.at.1 > rank {
                return;
            }
        }
        let created = if r.created == 0 { at } else { r.created };
        // Whether a refund can be Stripe's own is decided by the version it was created under: a later
        // event rendered at basil does not make the rest of a pre-basil capture a customer refund.
        let era = self.fold.refund_facts.get(&r.id).map_or(era, |f| f.era.min(era));
        self.fold.refund_facts.insert(r.id.clone(), RefundFacts { at: (at, rank), created, era });
        let charge = r.charge.clone().or_else(|| self.latest_charge.clone());
        let inferred = self
            .refunds
            .iter()
            .find(|(id, s)| {
                s.from_charge
                    && s.charge == charge
                    && s.amount == r.amount
                    && self.fold.inferred_refunds.get(*id) == Some(&created)
            })
            .map(|(id, _)| id.clone());
        if let Some(id) = inferred {
            self.refunds.remove(&id);
            self.fold.inferred_refunds.remove(&id);
        }
        self.refunds.insert(
            r.id.clone(),
            RefundState { status: r.status, amount: r.amount, charge, customer: true, from_charge: false },
        );
    }

    /// Stripe's own refund, moving no money: before basil, the refund of a charge never captured (a
    /// released authorization) or the refund of the uncaptured rest, created when the charge was captured.
    fn is_own(&self, id: &str, r: &RefundState) -> bool {
        if r.from_charge {
            return false;
        }
        let Some(facts) = self.fold.refund_facts.get(id) else { return false };
        if !facts.era.has_own_refunds() {
            return false;
        }
        match r.charge.as_ref().and_then(|c| self.fold.charges.get(c)) {
            Some(ch) if !ch.captured => true,
            Some(ch) => {
                let rest = ch.amount - ch.amount_captured;
                rest > 0 && r.amount == rest && ch.captured_at.is_some_and(|t| facts.created <= t)
            }
            None => match self.status {
                Some(IntentStatus::Canceled) => true,
                Some(IntentStatus::Succeeded) => {
                    let rest = self.amount - self.fold.intent_received;
                    rest > 0 && r.amount == rest && self.fold.intent_succeeded_at.is_some_and(|t| facts.created <= t)
                }
                _ => false,
            },
        }
    }

    /// Recomputes the derived fields from the accumulators.
    fn derive(&mut self) {
        self.failure_count = u32::try_from(self.fold.failed_attempts.len()).unwrap_or(u32::MAX);
        self.latest_charge_status =
            self.latest_charge.as_ref().and_then(|c| self.fold.charges.get(c)).map(|f| f.status);
        let paid = self
            .fold
            .charges
            .values()
            .filter(|f| f.paid && f.captured && f.status == ChargeStatus::Succeeded)
            .map(|f| f.amount_captured)
            .max()
            .unwrap_or(0);
        self.amount_received = self.fold.intent_received.max(paid);
        let own: Vec<String> =
            self.refunds.iter().filter(|(id, r)| self.is_own(id, r)).map(|(id, _)| id.clone()).collect();
        let (mut refunded, mut pending) = (0i64, 0i64);
        for (id, r) in &mut self.refunds {
            r.customer = !own.contains(id);
            if !r.customer {
                continue;
            }
            match r.status {
                RefundStatus::Succeeded => refunded = refunded.saturating_add(r.amount),
                RefundStatus::Pending | RefundStatus::RequiresAction => pending = pending.saturating_add(r.amount),
                RefundStatus::Failed | RefundStatus::Canceled => {}
            }
        }
        // Money can only be refunded once received: a refund seen before the payment's success counts
        // once the success is known.
        self.amount_refunded = refunded.min(self.amount_received);
        self.amount_refund_pending = pending.min(self.amount_received - self.amount_refunded).max(0);
        let (mut disputed, mut lost) = (0i64, 0i64);
        for d in self.disputes.values() {
            if matches!(d.status, DisputeStatus::NeedsResponse | DisputeStatus::UnderReview | DisputeStatus::Lost) {
                disputed = disputed.saturating_add(d.amount);
            }
            if (d.funds_withdrawn || d.status == DisputeStatus::Lost) && !d.funds_reinstated {
                lost = lost.saturating_add(d.amount);
            }
        }
        self.amount_disputed = disputed;
        self.amount_lost_to_disputes = lost;
        self.lifecycle = self.derive_lifecycle();
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
            Some(IntentStatus::Succeeded) if self.amount_refunded <= 0 || self.amount_received <= 0 => {
                Lifecycle::Succeeded
            }
            Some(IntentStatus::Succeeded) if self.amount_refunded >= self.amount_received => Lifecycle::Refunded,
            Some(IntentStatus::Succeeded) => Lifecycle::PartiallyRefunded,
        }
    }
}

impl Payment {
    /// A payment no event was applied to.
    pub fn new(key: PaymentKey) -> Self {
        Payment { state: PaymentState::new(key), emitted: BTreeSet::new() }
    }

    /// Applies one event: updates the state, records the event in `history` (the payment's applied
    /// events, kept outside the state) and returns the actions that became due.
    ///
    /// Idempotent: applying an event (or a twin) again changes nothing and returns no action. An event
    /// that sorts after every applied one (the common case) is folded incrementally and reads from
    /// `history` only the events of its own second; a late one makes the payment refold from the whole
    /// history.
    pub fn apply<H: History>(&mut self, ev: PaymentEvent, history: &mut H) -> Result<Applied, ApplyError<H::Error>> {
        if ev.key != self.state.key {
            return Err(ApplyError::WrongPayment {
                expected: self.state.key.clone(),
                got: ev.key.clone(),
                event: ev.id.clone(),
            });
        }
        let same_second = history.in_second(ev.created).map_err(ApplyError::History)?;
        if same_second.iter().any(|h| h.id == ev.id) {
            return Ok(Applied { effect: Effect::Duplicate { of: ev.id }, actions: Vec::new() });
        }
        let twin = same_second.into_iter().filter(|h| is_twin(h, &ev)).min_by(|a, b| order_key(a).cmp(&order_key(b)));
        let effect = match twin {
            Some(t) if order_key(&t).cmp(&order_key(&ev)) == Ordering::Less => {
                return Ok(Applied { effect: Effect::Duplicate { of: t.id }, actions: Vec::new() });
            }
            Some(t) => {
                history.remove(&t).map_err(ApplyError::History)?;
                Effect::ReplacedTwin { replaced: t.id }
            }
            None => Effect::Applied,
        };
        let (cause, created) = (ev.id.clone(), ev.created);
        let sorts_last = self.state.last_event.as_ref().is_none_or(|last| last.key() < order_key(&ev));
        if sorts_last && effect == Effect::Applied {
            self.state.step(&ev);
            history.insert(ev).map_err(ApplyError::History)?;
        } else {
            // A late event, or a twin replaced: the accumulators must be rebuilt from the whole history.
            history.insert(ev).map_err(ApplyError::History)?;
            let all = history.all().map_err(ApplyError::History)?;
            self.state = PaymentState::fold_all(self.state.key.clone(), &all);
        }
        let actions = self.take_due_actions(&cause, created);
        Ok(Applied { effect, actions })
    }

    /// Tells the payment that Stripe's time has reached `now` (the event time of its log partition, so
    /// that the live projector and a replay of the same log decide alike): returns the failure
    /// notifications whose grace period ended without another attempt getting anywhere. See
    /// [`Payment::next_deadline`].
    pub fn advance(&mut self, now: i64, grace: i64) -> Vec<Action> {
        let due: Vec<(Due, EventId, i64)> = self
            .state
            .failures_due(now, grace)
            .map(|(attempt, (at, event))| {
                let mut d = Due::new(ActionKind::NotifyPaymentFailed, attempt, self.state.amount);
                d.failure_code = self.state.fold.failed_attempts.get(attempt).cloned().flatten();
                (d, event.clone(), *at)
            })
            .collect();
        let mut out = Vec::new();
        for (d, event, at) in due {
            out.extend(self.emit(vec![d], &event, at));
        }
        out
    }

    /// The earliest Stripe time at which [`Payment::advance`] would announce a failure, if any: a
    /// projector keeps payments indexed by it.
    pub fn next_deadline(&self, grace: i64) -> Option<i64> {
        let s = &self.state;
        if s.status == Some(IntentStatus::Succeeded) {
            return None;
        }
        s.fold
            .failed_at
            .iter()
            .filter(|(attempt, _)| {
                !self.emitted.contains(&ActionId::derive(&s.key, ActionKind::NotifyPaymentFailed, attempt))
            })
            .filter(|(_, (at, _))| s.fold.recovered_at.range(*at..=at.saturating_add(grace)).next().is_none())
            .map(|(_, (at, _))| at.saturating_add(grace))
            .min()
    }

    /// Actions the current state makes due that were never emitted, recorded as emitted.
    fn take_due_actions(&mut self, caused_by: &EventId, event_created: i64) -> Vec<Action> {
        let s = &self.state;
        let mut due: Vec<Due> = Vec::new();
        let status = s.status;
        if status == Some(IntentStatus::Succeeded) {
            due.push(Due::new(ActionKind::FulfillOrder, s.key.payment.as_str(), s.amount_received));
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
        // Stripe's own refunds move no money and are never announced.
        let refunds = s.refunds.iter().filter(|(_, r)| r.customer && status == Some(IntentStatus::Succeeded));
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
        for id in &s.fold.fraud_warnings {
            due.push(Due::new(ActionKind::ReviewFraudWarning, id, s.amount));
        }
        self.emit(due, caused_by, event_created)
    }

    /// The actions of `due` not in the ledger, recorded in it.
    fn emit(&mut self, due: Vec<Due>, caused_by: &EventId, event_created: i64) -> Vec<Action> {
        let s = &self.state;
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
