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

impl PaymentKey {
    /// Parses the text [`Display`](fmt::Display) writes (`acct_…/pi_…` or `pi_…`); `None` when it is not
    /// one.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once('/') {
            Some((account, payment)) if !account.is_empty() && !payment.is_empty() => {
                Some(Self::connected(account, payment))
            }
            Some(_) => None,
            None if !text.is_empty() => Some(Self::platform(text)),
            None => None,
        }
    }
}

/// The log partition of `key` among `partitions`: FNV-1a 64 of the key's bytes, modulo the count.
///
/// Stable across releases and platforms (it decides where a payment's events live on disk), and the same
/// function for every log implementation, so that partition p of every topic belongs to one projector.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = key.iter().fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    u32::try_from(hash % u64::from(partitions.max(1))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_from_their_text() {
        for key in [PaymentKey::platform("pi_1"), PaymentKey::connected("acct_1", "pi_2")] {
            assert_eq!(PaymentKey::parse(&key.to_string()), Some(key));
        }
        assert_eq!(PaymentKey::parse(""), None);
        assert_eq!(PaymentKey::parse("/pi_1"), None);
        assert_eq!(PaymentKey::parse("acct_1/"), None);
    }

    #[test]
    fn partitioning_is_pinned() {
        // Changing these moves data between partitions: never change the function. The answers were computed
        // apart from this code, with FNV-1a 64 as its reference defines it (offset basis 0xcbf29ce484222325,
        // prime 0x100000001b3; its published vector: "a" hashes to 0xaf63dc4c8601ec8c, 996 mod 1000) in
        // Python, for real-looking keys of each shape, modulo 7, 8, 16 and 1000 partitions.
        let known: [(&str, [u32; 4]); 7] = [
            ("pi_3MtwBwLkdIwHu7ix28a3tqPa", [3, 7, 15, 959]),
            ("pi_1Gszsn2eZvKYlo2CYJ0BxBqK", [0, 3, 3, 931]),
            ("acct_1032D82eZvKYlo2C/pi_3MtwBwLkdIwHu7ix28a3tqPa", [2, 7, 7, 711]),
            ("ch_3MmlLrLkdIwHu7ix0snN0B15", [3, 5, 13, 893]),
            ("pi_3PbmTHLkdIwHu7ix1xS1tU6f", [0, 7, 15, 799]),
            ("acct_1Nv0FGQ9RKHgCVdK/ch_1NirD82eZvKYlo2CIvbtLWuY", [5, 3, 11, 739]),
            ("a", [5, 4, 12, 996]),
        ];
        for (key, want) in known {
            let got = [7, 8, 16, 1000].map(|n| partition_of(key.as_bytes(), n));
            assert_eq!(got, want, "{key}");
        }
        assert_eq!(partition_of(b"", 8), (0xcbf2_9ce4_8422_2325u64 % 8) as u32);
        assert_eq!(partition_of(b"pi_3MtwBwLkdIwHu7ix28a3tqPa", 1), 0);
        let spread: std::collections::BTreeSet<u32> =
            (0..200).map(|i| partition_of(format!("pi_{i}").as_bytes(), 8)).collect();
        assert_eq!(spread.len(), 8, "keys spread over every partition");
    }
}
