//! The normalized input of the state machine: one Stripe event reduced to the observation of one object
//! (PaymentIntent, Charge, Refund or Dispute) that the projection needs. Producing these from JSON is the
//! job of `paystate-stripe`; nothing here knows about JSON or event type strings beyond keeping them.

use crate::ids::{EventId, PaymentKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One payment-relevant Stripe event, normalized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEvent {
    /// Stripe's event id (`evt_…`).
    pub id: EventId,
    /// Stripe's event type, e.g. `payment_intent.succeeded`; kept for history and duplicate detection.
    pub event_type: String,
    /// Stripe's `created`: whole unix seconds. Several events of one API request share a second.
    pub created: i64,
    /// Stripe's `livemode`.
    pub livemode: bool,
    /// The payment this event belongs to.
    pub key: PaymentKey,
    /// Which Stripe API era rendered the object (from the event's `api_version`): it decides what a
    /// Charge's `amount_refunded` includes and whether Stripe's own refunds can appear.
    pub era: ApiEra,
    /// What the event says about its object.
    pub observation: Observation,
}

/// The API-version eras that change what a projector sees (see docs/API-VERSIONS.md). Ordered by time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiEra {
    /// Before 2022-11-15: a Charge embeds its `refunds` list.
    Legacy,
    /// 2022-11-15 up to 2024-10-28.acacia: no embedded refunds and no `refund.*` events for refunds of a
    /// charge; a refund shows as the Charge's `amount_refunded` (and `charge.refund.updated` on some
    /// payment methods).
    NoExpand,
    /// 2024-10-28.acacia up to 2025-03-31.basil: `refund.*` for every refund.
    Acacia,
    /// 2025-03-31.basil and later: no Refund for the uncaptured rest of a partial capture or a released
    /// authorization. Also assumed when an event names no version.
    #[default]
    Basil,
}

impl ApiEra {
    /// Before basil, Stripe creates Refund objects that move no money (the uncaptured rest of a partial
    /// capture, a released authorization) and counts them in the Charge's `amount_refunded`.
    pub fn has_own_refunds(self) -> bool {
        self < ApiEra::Basil
    }

    /// The era's name, as in docs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiEra::Legacy => "legacy",
            ApiEra::NoExpand => "no_expand",
            ApiEra::Acacia => "acacia",
            ApiEra::Basil => "basil",
        }
    }
}

/// A snapshot of the one object an event carries, reduced to what the projection folds.
// Externally tagged (serde's default) so that compact non-self-describing formats can store it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observation {
    /// `payment_intent.*`
    PaymentIntent(IntentObservation),
    /// `charge.*` except disputes
    Charge(ChargeObservation),
    /// `refund.*` and `charge.refund.updated`
    Refund(RefundObservation),
    /// `charge.dispute.*`
    Dispute(DisputeObservation),
    /// `radar.early_fraud_warning.*`
    FraudWarning(FraudWarningObservation),
}

impl Observation {
    /// The Stripe id of the observed object.
    pub fn object_id(&self) -> &str {
        match self {
            Observation::PaymentIntent(o) => &o.id,
            Observation::Charge(o) => &o.id,
            Observation::Refund(o) => &o.id,
            Observation::Dispute(o) => &o.id,
            Observation::FraudWarning(o) => &o.id,
        }
    }
}

/// A PaymentIntent's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    /// Initial state, and the state a failed attempt returns to.
    RequiresPaymentMethod,
    /// Has a payment method, awaiting confirmation.
    RequiresConfirmation,
    /// Awaiting customer action (3-D Secure, redirect, …).
    RequiresAction,
    /// Asynchronous payment method (bank debit) in flight.
    Processing,
    /// Authorized, awaiting manual capture.
    RequiresCapture,
    /// Canceled or released; terminal.
    Canceled,
    /// Funds received; terminal.
    Succeeded,
}

impl IntentStatus {
    /// Stripe's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IntentStatus::RequiresPaymentMethod => "requires_payment_method",
            IntentStatus::RequiresConfirmation => "requires_confirmation",
            IntentStatus::RequiresAction => "requires_action",
            IntentStatus::Processing => "processing",
            IntentStatus::RequiresCapture => "requires_capture",
            IntentStatus::Canceled => "canceled",
            IntentStatus::Succeeded => "succeeded",
        }
    }

    /// Parses Stripe's spelling; `None` for a status this version does not know.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "requires_payment_method" => IntentStatus::RequiresPaymentMethod,
            "requires_confirmation" => IntentStatus::RequiresConfirmation,
            "requires_action" => IntentStatus::RequiresAction,
            "processing" => IntentStatus::Processing,
            "requires_capture" => IntentStatus::RequiresCapture,
            "canceled" => IntentStatus::Canceled,
            "succeeded" => IntentStatus::Succeeded,
            _ => return None,
        })
    }

    /// Stripe never moves a PaymentIntent out of these.
    pub fn is_terminal(self) -> bool {
        matches!(self, IntentStatus::Canceled | IntentStatus::Succeeded)
    }
}

/// What a failed attempt told us (`last_payment_error` of a PaymentIntent, `failure_code` of a Charge).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Stripe's error code, e.g. `card_declined`.
    pub code: Option<String>,
    /// The charge of the failed attempt, when Stripe names it.
    pub charge: Option<String>,
}

/// A PaymentIntent snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentObservation {
    /// `pi_…`
    pub id: String,
    /// The PaymentIntent's status in this snapshot.
    pub status: IntentStatus,
    /// `amount`, in the currency's minor unit.
    pub amount: i64,
    /// `amount_received`.
    pub amount_received: i64,
    /// `currency`, lower case.
    pub currency: String,
    /// `customer`.
    pub customer: Option<String>,
    /// `metadata` (order ids live here).
    pub metadata: BTreeMap<String, String>,
    /// `latest_charge`.
    pub latest_charge: Option<String>,
    /// `payment_method`.
    pub payment_method: Option<String>,
    /// Set only when this event reports a failed attempt (`payment_intent.payment_failed`).
    pub failure: Option<Failure>,
}

/// A Charge's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    /// Asynchronous payment in flight.
    Pending,
    /// Authorized (and captured when `captured`).
    Succeeded,
    /// Declined or failed.
    Failed,
}

impl ChargeStatus {
    /// Parses Stripe's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ChargeStatus::Pending,
            "succeeded" => ChargeStatus::Succeeded,
            "failed" => ChargeStatus::Failed,
            _ => return None,
        })
    }
}

/// A Charge snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeObservation {
    /// `ch_…` / `py_…`
    pub id: String,
    /// `status`.
    pub status: ChargeStatus,
    /// `amount`.
    pub amount: i64,
    /// `amount_captured`.
    pub amount_captured: i64,
    /// `captured` (true for a bank debit's pending charge too, while nothing is paid).
    pub captured: bool,
    /// `paid`: the money arrived (false while a bank debit is pending, and after it failed).
    pub paid: bool,
    /// `amount_refunded`: cumulative, pending refunds included; before basil it includes Stripe's own
    /// refunds of the uncaptured rest.
    pub amount_refunded: i64,
    /// `amount_refunded` before this event (`previous_attributes`), when the event reports a change of it.
    pub previous_amount_refunded: Option<i64>,
    /// `refunded` (also true for a released, never captured authorization).
    pub refunded: bool,
    /// The event reports an uncaptured authorization that expired (`charge.expired`).
    pub expired: bool,
    /// `currency`.
    pub currency: String,
    /// `payment_intent`.
    pub payment_intent: Option<String>,
    /// `failure_code`.
    pub failure_code: Option<String>,
    /// `customer`.
    pub customer: Option<String>,
    /// `metadata`.
    pub metadata: BTreeMap<String, String>,
    /// The payment method settles asynchronously (`payment_method_details.type` is a bank debit): its
    /// refunds take days, so a refund known only from `amount_refunded` is taken as pending.
    pub async_method: bool,
    /// The snapshot carries its `refunds` list (legacy versions, or expanded).
    pub refunds_listed: bool,
    /// Refunds embedded in the charge (`refunds.data`), when the event includes them.
    pub refunds: Vec<RefundObservation>,
}

/// A Refund's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Submitted, not settled.
    Pending,
    /// Needs customer action (some payment methods).
    RequiresAction,
    /// Money returned.
    Succeeded,
    /// The refund failed (a new refund may be created).
    Failed,
    /// Canceled before it completed.
    Canceled,
}

impl RefundStatus {
    /// Parses Stripe's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => RefundStatus::Pending,
            "requires_action" => RefundStatus::RequiresAction,
            "succeeded" => RefundStatus::Succeeded,
            "failed" => RefundStatus::Failed,
            "canceled" => RefundStatus::Canceled,
            _ => return None,
        })
    }
}

/// A Refund snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundObservation {
    /// `re_…`
    pub id: String,
    /// `status`.
    pub status: RefundStatus,
    /// `amount`.
    pub amount: i64,
    /// `currency`.
    pub currency: String,
    /// `charge`: the charge it returns money of.
    pub charge: Option<String>,
    /// The Refund's own `created` (0 when absent).
    pub created: i64,
}

/// A Dispute's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeStatus {
    /// Inquiry opened.
    WarningNeedsResponse,
    /// Inquiry evidence submitted.
    WarningUnderReview,
    /// Inquiry closed without becoming a chargeback.
    WarningClosed,
    /// Chargeback opened.
    NeedsResponse,
    /// Chargeback evidence submitted.
    UnderReview,
    /// Decided for the merchant.
    Won,
    /// Decided for the cardholder.
    Lost,
    /// Prevented (e.g. by an early fraud warning refund).
    Prevented,
}

impl DisputeStatus {
    /// Parses Stripe's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "warning_needs_response" => DisputeStatus::WarningNeedsResponse,
            "warning_under_review" => DisputeStatus::WarningUnderReview,
            "warning_closed" => DisputeStatus::WarningClosed,
            "needs_response" => DisputeStatus::NeedsResponse,
            "under_review" => DisputeStatus::UnderReview,
            "won" => DisputeStatus::Won,
            "lost" => DisputeStatus::Lost,
            "prevented" => DisputeStatus::Prevented,
            _ => return None,
        })
    }

    /// A decided or withdrawn dispute.
    pub fn is_closed(self) -> bool {
        matches!(
            self,
            DisputeStatus::WarningClosed | DisputeStatus::Won | DisputeStatus::Lost | DisputeStatus::Prevented
        )
    }
}

/// A Dispute snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeObservation {
    /// `du_…` / `dp_…`
    pub id: String,
    /// `status`.
    pub status: DisputeStatus,
    /// `amount`.
    pub amount: i64,
    /// `currency`.
    pub currency: String,
    /// `reason`.
    pub reason: Option<String>,
    /// What the event says about the disputed funds (`charge.dispute.funds_withdrawn` /
    /// `funds_reinstated`).
    pub funds: Option<DisputeFunds>,
}

/// A movement of a dispute's funds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeFunds {
    /// `charge.dispute.funds_withdrawn`: the disputed amount left the balance.
    Withdrawn,
    /// `charge.dispute.funds_reinstated`: it came back (dispute won).
    Reinstated,
}

/// An early fraud warning (`radar.early_fraud_warning`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FraudWarningObservation {
    /// `issfr_…`
    pub id: String,
    /// `fraud_type`.
    pub fraud_type: Option<String>,
    /// `actionable`: the charge can still be refunded to avoid a dispute.
    pub actionable: bool,
    /// `charge`.
    pub charge: Option<String>,
}
