//! From a parsed Stripe event to the state machine's input.
//!
//! Which events are payment-relevant:
//! - `payment_intent.*` whose object is a PaymentIntent;
//! - `charge.*` whose object is a Charge (succeeded, failed, pending, captured, expired, refunded, updated);
//! - `refund.*` and `charge.refund.updated` whose object is a Refund;
//! - `charge.dispute.*` whose object is a Dispute.
//!
//! Everything else (other types, thin events, statuses this version does not know) is
//! [`Mapped::NotRelevant`]: accepted and kept in the log, never refused, so Stripe does not retry it forever.
//!
//! Attachment: a PaymentIntent is its own payment; a Charge attaches to its `payment_intent`, or is its own
//! payment when it has none; a Refund or Dispute attaches to its `payment_intent`, else to its `charge`.
//! The key is scoped by the event's Connect `account`.

use crate::envelope::{Envelope, Expandable, ObjectFields, ParsedEvent};
use paystate_core::{
    ChargeObservation, ChargeStatus, DisputeObservation, DisputeStatus, EventId, Failure, IntentObservation,
    IntentStatus, Observation, PaymentEvent, PaymentId, PaymentKey, RefundObservation, RefundStatus,
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
}

fn kind_of(event_type: &str, object: Option<&str>) -> Option<Kind> {
    let kind = if event_type.starts_with("payment_intent.") {
        Kind::Intent
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
        Kind::Refund | Kind::Dispute => exp(&o.payment_intent).or(exp(&o.charge))?,
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
                refunded: o.refunded.unwrap_or(false),
                expired: env.event_type == "charge.expired",
                currency,
                payment_intent: owned(&o.payment_intent),
                failure_code: text(&o.failure_code),
                customer: owned(&o.customer),
                metadata: metadata(o),
                refunds,
            })
        }
        Kind::Refund => {
            let Some(status) = RefundStatus::parse(status) else {
                return Ok(Mapped::NotRelevant("unknown Refund status"));
            };
            Observation::Refund(RefundObservation { id, status, amount, currency })
        }
        Kind::Dispute => {
            let Some(status) = DisputeStatus::parse(status) else {
                return Ok(Mapped::NotRelevant("unknown Dispute status"));
            };
            Observation::Dispute(DisputeObservation { id, status, amount, currency, reason: text(&o.reason) })
        }
    };
    Ok(Mapped::Payment(PaymentEvent {
        id: EventId::new(env.id.as_ref()),
        event_type: env.event_type.to_string(),
        created: env.created,
        livemode: env.livemode,
        key,
        observation,
    }))
}
