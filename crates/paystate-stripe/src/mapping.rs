//! From a parsed Stripe event to the state machine's input.
//!
//! Which events are payment-relevant:
//! - `payment_intent.*` whose object is a PaymentIntent;
//! - `charge.*` whose object is a Charge (succeeded, failed, pending, captured, expired, refunded, updated);
//! - `refund.*` and `charge.refund.updated` whose object is a Refund;
//! - `charge.dispute.*` whose object is a Dispute;
//! - `radar.early_fraud_warning.*` whose object is an early fraud warning.
//!
//! The event's `api_version` is an input: its [`ApiEra`] tells the core what a Charge's `amount_refunded`
//! includes and whether Stripe's own refunds can appear (see docs/API-VERSIONS.md).
//!
//! Everything else (other types, thin events, statuses this version does not know) is
//! [`Mapped::NotRelevant`]: accepted and kept in the log, never refused, so Stripe does not retry it forever.
//!
//! Attachment: a PaymentIntent is its own payment; a Charge attaches to its `payment_intent`, or is its own
//! payment when it has none; a Refund or Dispute attaches to its `payment_intent`, else to its `charge`.
//! The key is scoped by the event's Connect `account`.

use crate::envelope::{Envelope, Expandable, ObjectFields, ParsedEvent};
use paystate_core::{
    ApiEra, ChargeObservation, ChargeStatus, DisputeFunds, DisputeObservation, DisputeStatus, EventId, Failure,
    FraudWarningObservation, IntentObservation, IntentStatus, Observation, PaymentEvent, PaymentId, PaymentKey,
    RefundObservation, RefundStatus,
};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The outcome of mapping one event.
// `Payment` is the common case; boxing it would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// A payment event for the state machine.
    Payment(PaymentEvent),
    /// Accepted and kept, but not folded into any payment; the reason says why.
    NotRelevant(&'static str),
}

/// A payment-relevant event type whose object lacks what the projection needs. The event is kept in the
/// log and dead-lettered by the projector; it never stalls a partition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event_type} event {event_id}: {reason}")]
pub struct MapError {
    /// The event.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// What is missing or wrong (never body content).
    pub reason: &'static str,
}

/// What kind of object a payment-relevant event type carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Intent,
    Charge,
    Refund,
    Dispute,
    FraudWarning,
}

/// The era of an `api_version` (`2024-06-20`, `2025-03-31.basil`, …): its date decides. An absent or
/// unreadable version is taken as current.
pub fn era_of(api_version: &str) -> ApiEra {
    let date = api_version.get(..10).unwrap_or("");
    let well_formed =
        date.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if date.len() != 10 || !well_formed {
        return ApiEra::Basil;
    }
    // ISO dates compare as text.
    if date < "2022-11-15" {
        ApiEra::Legacy
    } else if date < "2024-10-28" {
        ApiEra::NoExpand
    } else if date < "2025-03-31" {
        ApiEra::Acacia
    } else {
        ApiEra::Basil
    }
}

/// Payment method types whose charges and refunds settle days later (bank debits and transfers).
const ASYNC_METHODS: [&str; 8] = [
    "us_bank_account",
    "sepa_debit",
    "bacs_debit",
    "au_becs_debit",
    "acss_debit",
    "ach_debit",
    "nz_bank_account",
    "sofort",
];

fn kind_of(event_type: &str, object: Option<&str>) -> Option<Kind> {
    let kind = if event_type.starts_with("payment_intent.") {
        Kind::Intent
    } else if event_type.starts_with("radar.early_fraud_warning.") {
        Kind::FraudWarning
    } else if event_type.starts_with("charge.dispute.") {
        Kind::Dispute
    } else if event_type == "charge.refund.updated" || event_type.starts_with("refund.") {
        Kind::Refund
    } else if event_type.starts_with("charge.") {
        Kind::Charge
    } else {
        return None;
    };
    let expected = match kind {
        Kind::Intent => "payment_intent",
        Kind::Charge => "charge",
        Kind::Refund => "refund",
        Kind::Dispute => "dispute",
        Kind::FraudWarning => "radar.early_fraud_warning",
    };
    (object == Some(expected)).then_some(kind)
}

/// Maps a parsed event. Thin events and non-payment types are `NotRelevant`.
pub fn map_event(event: &ParsedEvent<'_>) -> Result<Mapped, MapError> {
    match event {
        ParsedEvent::Thin(_) => Ok(Mapped::NotRelevant("thin event: carries no object snapshot")),
        ParsedEvent::Snapshot(env) => map_snapshot(env),
    }
}

/// The payment key an event belongs to, without building the whole observation (used to partition the
/// log before anything else is done). `None` for events that belong to no payment.
pub fn payment_key(event: &ParsedEvent<'_>) -> Option<PaymentKey> {
    match event {
        ParsedEvent::Snapshot(env) => key_of(env),
        ParsedEvent::Thin(_) => None,
    }
}

fn key_of(env: &Envelope<'_>) -> Option<PaymentKey> {
    let o = &env.object;
    let kind = kind_of(&env.event_type, o.object.as_deref())?;
    let id = o.id.as_deref()?;
    let payment = match kind {
        Kind::Intent => id,
        Kind::Charge => exp(&o.payment_intent).unwrap_or(id),
        Kind::Refund | Kind::Dispute | Kind::FraudWarning => exp(&o.payment_intent).or(exp(&o.charge))?,
    };
    Some(PaymentKey {
        account: env.account.as_deref().map(paystate_core::AccountId::new),
        payment: PaymentId::new(payment),
    })
}

fn exp<'b>(e: &'b Option<Expandable<'_>>) -> Option<&'b str> {
    e.as_ref().map(|x| x.0.as_ref()).filter(|s| !s.is_empty())
}

fn owned(e: &Option<Expandable<'_>>) -> Option<String> {
    exp(e).map(str::to_owned)
}

fn text(c: &Option<Cow<'_, str>>) -> Option<String> {
    c.as_deref().map(str::to_owned)
}

fn metadata(o: &ObjectFields<'_>) -> BTreeMap<String, String> {
    o.metadata
        .as_ref()
        .map_or_else(BTreeMap::new, |m| m.iter().map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())).collect())
}

fn map_snapshot(env: &Envelope<'_>) -> Result<Mapped, MapError> {
    let o = &env.object;
    let Some(kind) = kind_of(&env.event_type, o.object.as_deref()) else {
        return Ok(Mapped::NotRelevant("event type is not about a payment"));
    };
    let fail = |reason: &'static str| MapError {
        event_id: env.id.to_string(),
        event_type: env.event_type.to_string(),
        reason,
    };
    let Some(key) = key_of(env) else {
        return Err(fail("object has no id or no payment it belongs to"));
    };
    let id = o.id.as_deref().ok_or_else(|| fail("object has no id"))?.to_owned();
    let era = era_of(env.api_version());
    let event = |observation| {
        Mapped::Payment(PaymentEvent {
            id: EventId::new(env.id.as_ref()),
            event_type: env.event_type.to_string(),
            created: env.created,
            livemode: env.livemode,
            key,
            era,
            observation,
        })
    };
    if kind == Kind::FraudWarning {
        return Ok(event(Observation::FraudWarning(FraudWarningObservation {
            id,
            fraud_type: text(&o.fraud_type),
            actionable: o.actionable.unwrap_or(false),
            charge: owned(&o.charge),
        })));
    }
    let status = o.status.as_deref().ok_or_else(|| fail("object has no status"))?;
    let amount = o.amount.ok_or_else(|| fail("object has no amount"))?;
    let currency = o.currency.as_deref().ok_or_else(|| fail("object has no currency"))?.to_owned();
    let observation = match kind {
        Kind::Intent => {
            let Some(status) = IntentStatus::parse(status) else {
                return Ok(Mapped::NotRelevant("unknown PaymentIntent status"));
            };
            let failure = (env.event_type == "payment_intent.payment_failed").then(|| Failure {
                code: o.last_payment_error.as_ref().and_then(|e| text(&e.code)),
                charge: o.last_payment_error.as_ref().and_then(|e| owned(&e.charge)),
            });
            Observation::PaymentIntent(IntentObservation {
                id,
                status,
                amount,
                amount_received: o.amount_received.unwrap_or(0),
                currency,
                customer: owned(&o.customer),
                metadata: metadata(o),
                latest_charge: owned(&o.latest_charge),
                payment_method: owned(&o.payment_method),
                failure,
            })
        }
        Kind::Charge => {
            let Some(status) = ChargeStatus::parse(status) else {
                return Ok(Mapped::NotRelevant("unknown Charge status"));
            };
            let refunds = o
                .refunds
                .as_ref()
                .map(|list| {
                    list.data
                        .iter()
                        .filter_map(|r| {
                            Some(RefundObservation {
                                id: r.id.as_deref()?.to_owned(),
                                status: RefundStatus::parse(r.status.as_deref()?)?,
                                amount: r.amount?,
                                currency: r.currency.as_deref().unwrap_or(&currency).to_owned(),
                                charge: owned(&r.charge),
                                created: r.created.unwrap_or(0),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            Observation::Charge(ChargeObservation {
                id,
                status,
                amount,
                amount_captured: o.amount_captured.unwrap_or(0),
                captured: o.captured.unwrap_or(false),
                // Before `paid` existed every succeeded charge was paid.
                paid: o.paid.unwrap_or(status == ChargeStatus::Succeeded),
                amount_refunded: o.amount_refunded.unwrap_or(0),
                previous_amount_refunded: env.previous_amount_refunded,
                refunded: o.refunded.unwrap_or(false),
                expired: env.event_type == "charge.expired",
                currency,
                payment_intent: owned(&o.payment_intent),
                failure_code: text(&o.failure_code),
                customer: owned(&o.customer),
                metadata: metadata(o),
                async_method: o.payment_method_type.as_deref().is_some_and(|t| ASYNC_METHODS.contains(&t)),
                refunds_listed: o.refunds.is_some(),
                refunds,
            })
        }
        Kind::Refund => {
            let Some(status) = RefundStatus::parse(status) else {
                return Ok(Mapped::NotRelevant("unknown Refund status"));
            };
            Observation::Refund(RefundObservation {
                id,
                status,
                amount,
                currency,
                charge: owned(&o.charge),
                created: o.created.unwrap_or(0),
            })
        }
        Kind::Dispute => {
            let Some(status) = DisputeStatus::parse(status) else {
                return Ok(Mapped::NotRelevant("unknown Dispute status"));
            };
            let funds = match env.event_type.as_ref() {
                "charge.dispute.funds_withdrawn" => Some(DisputeFunds::Withdrawn),
                "charge.dispute.funds_reinstated" => Some(DisputeFunds::Reinstated),
                _ => None,
            };
            Observation::Dispute(DisputeObservation { id, status, amount, currency, reason: text(&o.reason), funds })
        }
        Kind::FraudWarning => return Err(fail("unreachable: fraud warnings are mapped above")),
    };
    Ok(event(observation))
}
