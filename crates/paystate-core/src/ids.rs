//! Identifier newtypes. They carry no validation beyond "non-empty" because Stripe's id formats are not a
//! contract; the types exist so that a refund id can never be passed where a payment id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a Stripe identifier.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The identifier as Stripe wrote it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The id of the object a payment is keyed by: a PaymentIntent (`pi_…`), or a Charge (`ch_…`/`py_…`)
    /// that has no PaymentIntent.
    PaymentId
);
id_type!(
    /// A Connect account (`acct_…`).
    AccountId
);
id_type!(
    /// A Stripe event (`evt_…`).
    EventId
);

/// A payment's identity: its PaymentIntent (or lone Charge) id, scoped by the Connect account the event
/// came from. The same `pi_…` under two accounts is two payments.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PaymentKey {
    /// `None` for the platform account's own payments.
    pub account: Option<AccountId>,
    /// The PaymentIntent id, or the Charge id of a charge without a PaymentIntent.
    pub payment: PaymentId,
}

impl PaymentKey {
    /// A key for the platform account (no Connect account).
    pub fn platform(payment: impl Into<String>) -> Self {
        Self { account: None, payment: PaymentId::new(payment) }
    }

    /// A key for a payment on a connected account.
    pub fn connected(account: impl Into<String>, payment: impl Into<String>) -> Self {
        Self { account: Some(AccountId::new(account)), payment: PaymentId::new(payment) }
    }
}

/// `acct_…/pi_…` for connected accounts, `pi_…` for the platform. Used as the partition key, so it must
/// stay stable across releases.
impl fmt::Display for PaymentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.account {
            Some(account) => write!(f, "{account}/{}", self.payment),
            None => write!(f, "{}", self.payment),
        }
    }
}
