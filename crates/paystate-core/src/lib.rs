//! # paystate-core
//!
//! The payment state machine of paystate, and nothing else: it takes a payment's prior state and one
//! normalized Stripe event and returns the new state plus the actions that became due.
//!
//! It is **sans-IO** and deterministic: no async, no clock (an event's Stripe `created` is the only time it
//! sees), no storage, no network, no JSON. Parsing Stripe's JSON lives in `paystate-stripe`; storing states
//! in `paystate-store`; everything that moves bytes is a shell around this crate.
//!
//! The central guarantee is **convergence**: for any permutation of a payment's distinct events, with any
//! duplicates, the resulting [`PaymentState`] is identical. See [`state`] for how.

pub mod action;
pub mod event;
pub mod ids;
pub mod state;

pub use action::{Action, ActionId, ActionKind};
pub use event::{
    ApiEra, ChargeObservation, ChargeStatus, DisputeFunds, DisputeObservation, DisputeStatus, Failure,
    FraudWarningObservation, IntentObservation, IntentStatus, Observation, PaymentEvent, RefundObservation,
    RefundStatus,
};
pub use ids::{partition_of, AccountId, EventId, PaymentId, PaymentKey};
pub use state::{
    timeline, transitions, Applied, ApplyError, ChargeFacts, DisputeState, Effect, EmittedAction, EventList,
    EventPosition, FraudWarningState, History, HistoryEntry, Lifecycle, Payment, PaymentState, PaymentSummary,
    PaymentWithHistory, RefundFacts, RefundState, Transition, DEFAULT_FAILURE_GRACE_SECS,
};
