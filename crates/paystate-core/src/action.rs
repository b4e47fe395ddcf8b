//! Derived actions: what downstream services should do because a payment changed. Each action has an id
//! computed from (payment key, kind, subject) only, so the same business fact always gets the same id and
//! consumers can deduplicate, whichever event revealed it and however often it was delivered.

use crate::event::DisputeStatus;
use crate::ids::{EventId, PaymentKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// What happened, from a downstream service's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// The payment reached `succeeded` for the first time: ship the order. Subject: the payment id.
    FulfillOrder,
    /// An attempt failed and the payment has not succeeded. Subject: the failed attempt (its charge).
    NotifyPaymentFailed,
    /// The customer must act (3-D Secure, redirect). Subject: the attempt that needs it.
    RequestCustomerAction,
    /// The payment was canceled or its authorization released. Subject: the payment id.
    PaymentCanceled,
    /// A refund succeeded. Subject: the refund id.
    RefundSucceeded,
    /// A refund failed. Subject: the refund id.
    RefundFailed,
    /// A dispute (or inquiry) was opened. Subject: the dispute id.
    DisputeOpened,
    /// A dispute was closed; `outcome` says how. Subject: the dispute id.
    DisputeClosed,
    /// Radar raised an early fraud warning: consider refunding before it becomes a dispute. Subject: the
    /// warning id.
    ReviewFraudWarning,
}

impl ActionKind {
    /// Every kind.
    pub const ALL: [ActionKind; 9] = [
        ActionKind::FulfillOrder,
        ActionKind::NotifyPaymentFailed,
        ActionKind::RequestCustomerAction,
        ActionKind::PaymentCanceled,
        ActionKind::RefundSucceeded,
        ActionKind::RefundFailed,
        ActionKind::DisputeOpened,
        ActionKind::DisputeClosed,
        ActionKind::ReviewFraudWarning,
    ];

    /// The stable name used in ids and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::FulfillOrder => "fulfill_order",
            ActionKind::NotifyPaymentFailed => "notify_payment_failed",
            ActionKind::RequestCustomerAction => "request_customer_action",
            ActionKind::PaymentCanceled => "payment_canceled",
            ActionKind::RefundSucceeded => "refund_succeeded",
            ActionKind::RefundFailed => "refund_failed",
            ActionKind::DisputeOpened => "dispute_opened",
            ActionKind::DisputeClosed => "dispute_closed",
            ActionKind::ReviewFraudWarning => "review_fraud_warning",
        }
    }
}

/// `act_` followed by 32 hex digits of SHA-256 over (account, payment, kind, subject).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActionId(String);

impl ActionId {
    /// The deterministic id of the action `kind` about `subject` of payment `key`.
    pub fn derive(key: &PaymentKey, kind: ActionKind, subject: &str) -> Self {
        let mut h = Sha256::new();
        // Unit separators keep ("a","bc") and ("ab","c") apart.
        h.update(key.account.as_ref().map_or("", |a| a.as_str()));
        h.update([0x1f]);
        h.update(key.payment.as_str());
        h.update([0x1f]);
        h.update(kind.as_str());
        h.update([0x1f]);
        h.update(subject);
        let digest = h.finalize();
        let mut s = String::with_capacity(36);
        s.push_str("act_");
        for b in &digest[..16] {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        ActionId(s)
    }

    /// An id as an earlier [`ActionId::derive`] made it, read back from a store or a published record.
    /// Not checked: the reader trusts what it wrote.
    pub fn from_stored(id: impl Into<String>) -> Self {
        ActionId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Debug for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One derived action, with what a downstream service needs to act on it without reading the payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Deterministic id; deduplicate on it.
    pub id: ActionId,
    /// What to do.
    pub kind: ActionKind,
    /// The payment.
    pub key: PaymentKey,
    /// What the action is about: payment, attempt, refund or dispute id.
    pub subject: String,
    /// The amount concerned (payment, refund or dispute amount), minor units.
    pub amount: i64,
    /// Currency of `amount`.
    pub currency: Option<String>,
    /// The payment's customer.
    pub customer: Option<String>,
    /// The payment's metadata (order ids live here).
    pub metadata: BTreeMap<String, String>,
    /// Stripe error code, for `notify_payment_failed`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub failure_code: Option<String>,
    /// Final dispute status, for `dispute_closed`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub outcome: Option<DisputeStatus>,
    /// The event whose arrival made this action due.
    pub caused_by: EventId,
    /// Stripe `created` of that event.
    pub event_created: i64,
    /// Stripe `livemode`.
    pub livemode: bool,
}
