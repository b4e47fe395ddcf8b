//! The store's own encoding types: what a stored payment (format 3) and a stored history entry (format 1)
//! hold, field for field, independent of the core's structs.
//!
//! postcard is positional: a value is its fields in declaration order, an enum its variant index. Were
//! the core's structs serialized as they are, adding a field or a variant to them would silently change
//! the stored layout and make every existing data directory unreadable. Here each stored layout is a type
//! of its own, converted to and from the core's type by [`Mirror`]. The conversions destructure the core's
//! structs and match its enums exhaustively, so a change to the core stops the build right here: whoever
//! makes it decides whether the stored format changes (a new format byte, its own types, and the old one
//! still decoded in `format.rs`) or not (the new field is derived, and filled when decoding).
//!
//! The layouts are pinned by golden bytes (`tests/fixtures/payment-format-3.hex`,
//! `history-format-1.hex`), written before these types existed: they are exactly the layouts of the
//! release that introduced the formats.

use paystate_core::state::FoldState;
use paystate_core::{
    AccountId, ActionId, ApiEra, ChargeFacts, ChargeObservation, ChargeStatus, DisputeFunds, DisputeObservation,
    DisputeState, DisputeStatus, EventId, EventPosition, Failure, FraudWarningObservation, FraudWarningState,
    IntentObservation, IntentStatus, Lifecycle, Observation, Payment, PaymentEvent, PaymentId, PaymentKey,
    PaymentState, RefundFacts, RefundObservation, RefundState, RefundStatus,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A stored type `Self` that mirrors the core's type `T`.
pub(crate) trait Mirror<T>: Sized {
    /// The stored form of `t`.
    fn from_core(t: &T) -> Self;
    /// The core's value this stored form holds.
    fn into_core(self) -> T;
}

macro_rules! mirror_as_is {
    ($($t:ty),*) => {$(
        impl Mirror<$t> for $t {
            fn from_core(t: &$t) -> Self {
                t.clone()
            }
            fn into_core(self) -> $t {
                self
            }
        }
    )*};
}
mirror_as_is!(bool, u8, u32, u64, i64, String);

impl<T, M: Mirror<T>> Mirror<Option<T>> for Option<M> {
    fn from_core(t: &Option<T>) -> Self {
        t.as_ref().map(M::from_core)
    }
    fn into_core(self) -> Option<T> {
        self.map(M::into_core)
    }
}

impl<T, M: Mirror<T>> Mirror<Vec<T>> for Vec<M> {
    fn from_core(t: &Vec<T>) -> Self {
        t.iter().map(M::from_core).collect()
    }
    fn into_core(self) -> Vec<T> {
        self.into_iter().map(M::into_core).collect()
    }
}

impl<T: Ord, M: Mirror<T> + Ord> Mirror<BTreeSet<T>> for BTreeSet<M> {
    fn from_core(t: &BTreeSet<T>) -> Self {
        t.iter().map(M::from_core).collect()
    }
    fn into_core(self) -> BTreeSet<T> {
        self.into_iter().map(M::into_core).collect()
    }
}

impl<K: Ord, V, MK: Mirror<K> + Ord, MV: Mirror<V>> Mirror<BTreeMap<K, V>> for BTreeMap<MK, MV> {
    fn from_core(t: &BTreeMap<K, V>) -> Self {
        t.iter().map(|(k, v)| (MK::from_core(k), MV::from_core(v))).collect()
    }
    fn into_core(self) -> BTreeMap<K, V> {
        self.into_iter().map(|(k, v)| (k.into_core(), v.into_core())).collect()
    }
}

impl<A, B, MA: Mirror<A>, MB: Mirror<B>> Mirror<(A, B)> for (MA, MB) {
    fn from_core(t: &(A, B)) -> Self {
        (MA::from_core(&t.0), MB::from_core(&t.1))
    }
    fn into_core(self) -> (A, B) {
        (self.0.into_core(), self.1.into_core())
    }
}

/// A stored struct: its fields, in stored order, each of a stored type. The conversions destructure the
/// core's struct, so a field added there is a build error here.
macro_rules! stored_struct {
    ($(#[$doc:meta])* $name:ident <=> $core:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Serialize, Deserialize)]
        pub(crate) struct $name {
            $($field: $ty),*
        }

        impl Mirror<$core> for $name {
            fn from_core(t: &$core) -> Self {
                let $core { $($field),* } = t;
                $name { $($field: Mirror::from_core($field)),* }
            }
            fn into_core(self) -> $core {
                let $name { $($field),* } = self;
                $core { $($field: $field.into_core()),* }
            }
        }
    };
}

/// A stored enum without data: its variants in stored order (postcard stores the index). The conversions
/// match the core's enum exhaustively, so a variant added there is a build error here.
macro_rules! stored_enum {
    ($(#[$doc:meta])* $name:ident <=> $core:ident { $($variant:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Serialize, Deserialize)]
        pub(crate) enum $name {
            $($variant),*
        }

        impl Mirror<$core> for $name {
            fn from_core(t: &$core) -> Self {
                match t {
                    $($core::$variant => $name::$variant),*
                }
            }
            fn into_core(self) -> $core {
                match self {
                    $($name::$variant => $core::$variant),*
                }
            }
        }
    };
}

/// A stored identifier: the text as Stripe (or the action id derivation) wrote it.
macro_rules! stored_id {
    ($name:ident <=> $core:ident, $make:path) => {
        #[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
        pub(crate) struct $name(String);

        impl Mirror<$core> for $name {
            fn from_core(t: &$core) -> Self {
                $name(t.as_str().to_owned())
            }
            fn into_core(self) -> $core {
                $make(self.0)
            }
        }
    };
}

stored_id!(EventIdV1 <=> EventId, EventId::new);
stored_id!(PaymentIdV1 <=> PaymentId, PaymentId::new);
stored_id!(AccountIdV1 <=> AccountId, AccountId::new);
stored_id!(ActionIdV1 <=> ActionId, ActionId::from_stored);

stored_struct!(PaymentKeyV1 <=> PaymentKey { account: Option<AccountIdV1>, payment: PaymentIdV1 });

stored_enum!(ApiEraV1 <=> ApiEra { Legacy, NoExpand, Acacia, Basil });
stored_enum!(IntentStatusV1 <=> IntentStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Canceled,
    Succeeded,
});
stored_enum!(ChargeStatusV1 <=> ChargeStatus { Pending, Succeeded, Failed });
stored_enum!(RefundStatusV1 <=> RefundStatus { Pending, RequiresAction, Succeeded, Failed, Canceled });
stored_enum!(DisputeStatusV1 <=> DisputeStatus {
    WarningNeedsResponse,
    WarningUnderReview,
    WarningClosed,
    NeedsResponse,
    UnderReview,
    Won,
    Lost,
    Prevented,
});
stored_enum!(DisputeFundsV1 <=> DisputeFunds { Withdrawn, Reinstated });
stored_enum!(LifecycleV1 <=> Lifecycle {
    Created,
    RequiresAction,
    Processing,
    RequiresCapture,
    Succeeded,
    Failed,
    Canceled,
    PartiallyRefunded,
    Refunded,
});

// ---- History entry, format 1: one applied event ----

stored_struct!(
    /// A history entry of format 1 (after its format byte).
    EventV1 <=> PaymentEvent {
        id: EventIdV1,
        event_type: String,
        created: i64,
        livemode: bool,
        key: PaymentKeyV1,
        era: ApiEraV1,
        observation: ObservationV1,
    }
);

/// What one event observed; postcard stores the variant index, then the variant's fields.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ObservationV1 {
    PaymentIntent(IntentObservationV1),
    Charge(ChargeObservationV1),
    Refund(RefundObservationV1),
    Dispute(DisputeObservationV1),
    FraudWarning(FraudWarningObservationV1),
}

impl Mirror<Observation> for ObservationV1 {
    fn from_core(t: &Observation) -> Self {
        match t {
            Observation::PaymentIntent(o) => ObservationV1::PaymentIntent(Mirror::from_core(o)),
            Observation::Charge(o) => ObservationV1::Charge(Mirror::from_core(o)),
            Observation::Refund(o) => ObservationV1::Refund(Mirror::from_core(o)),
            Observation::Dispute(o) => ObservationV1::Dispute(Mirror::from_core(o)),
            Observation::FraudWarning(o) => ObservationV1::FraudWarning(Mirror::from_core(o)),
        }
    }
    fn into_core(self) -> Observation {
        match self {
            ObservationV1::PaymentIntent(o) => Observation::PaymentIntent(o.into_core()),
            ObservationV1::Charge(o) => Observation::Charge(o.into_core()),
            ObservationV1::Refund(o) => Observation::Refund(o.into_core()),
            ObservationV1::Dispute(o) => Observation::Dispute(o.into_core()),
            ObservationV1::FraudWarning(o) => Observation::FraudWarning(o.into_core()),
        }
    }
}

stored_struct!(FailureV1 <=> Failure { code: Option<String>, charge: Option<String> });
stored_struct!(IntentObservationV1 <=> IntentObservation {
    id: String,
    status: IntentStatusV1,
    amount: i64,
    amount_received: i64,
    currency: String,
    customer: Option<String>,
    metadata: BTreeMap<String, String>,
    latest_charge: Option<String>,
    payment_method: Option<String>,
    failure: Option<FailureV1>,
});
stored_struct!(ChargeObservationV1 <=> ChargeObservation {
    id: String,
    status: ChargeStatusV1,
    amount: i64,
    amount_captured: i64,
    captured: bool,
    paid: bool,
    amount_refunded: i64,
    previous_amount_refunded: Option<i64>,
    refunded: bool,
    expired: bool,
    currency: String,
    payment_intent: Option<String>,
    failure_code: Option<String>,
    customer: Option<String>,
    metadata: BTreeMap<String, String>,
    async_method: bool,
    refunds_listed: bool,
    refunds: Vec<RefundObservationV1>,
});
stored_struct!(RefundObservationV1 <=> RefundObservation {
    id: String,
    status: RefundStatusV1,
    amount: i64,
    currency: String,
    charge: Option<String>,
    created: i64,
});
stored_struct!(DisputeObservationV1 <=> DisputeObservation {
    id: String,
    status: DisputeStatusV1,
    amount: i64,
    currency: String,
    reason: Option<String>,
    funds: Option<DisputeFundsV1>,
});
stored_struct!(FraudWarningObservationV1 <=> FraudWarningObservation {
    id: String,
    fraud_type: Option<String>,
    actionable: bool,
    charge: Option<String>,
});

// ---- Payment, format 3: the state without history, then the ledger of emitted actions ----

stored_struct!(
    /// A payment of format 3 (after its format byte).
    PaymentV3 <=> Payment { state: StateV3, emitted: BTreeSet<ActionIdV1> }
);

stored_struct!(
    /// The state of a payment of format 3. Its postcard bytes are what the state hash is taken of.
    StateV3 <=> PaymentState {
        key: PaymentKeyV1,
        livemode: bool,
        status: Option<IntentStatusV1>,
        lifecycle: LifecycleV1,
        amount: i64,
        currency: Option<String>,
        amount_received: i64,
        amount_refunded: i64,
        amount_refund_pending: i64,
        refunds: BTreeMap<String, RefundStateV1>,
        disputed: bool,
        dispute_status: Option<DisputeStatusV1>,
        disputes: BTreeMap<String, DisputeStateV1>,
        amount_disputed: i64,
        amount_lost_to_disputes: i64,
        early_fraud_warning: Option<FraudWarningStateV1>,
        latest_charge: Option<String>,
        latest_charge_status: Option<ChargeStatusV1>,
        failure_count: u32,
        last_failure_code: Option<String>,
        customer: Option<String>,
        metadata: BTreeMap<String, String>,
        first_event_at: Option<i64>,
        last_event_at: Option<i64>,
        events_applied: u64,
        last_event: Option<EventPositionV1>,
        fold: FoldV3,
    }
);

stored_struct!(EventPositionV1 <=> EventPosition { created: i64, rank: u8, id: EventIdV1 });
stored_struct!(RefundStateV1 <=> RefundState {
    status: RefundStatusV1,
    amount: i64,
    charge: Option<String>,
    customer: bool,
    from_charge: bool,
});
stored_struct!(DisputeStateV1 <=> DisputeState {
    status: DisputeStatusV1,
    amount: i64,
    reason: Option<String>,
    funds_withdrawn: bool,
    funds_reinstated: bool,
});
stored_struct!(FraudWarningStateV1 <=> FraudWarningState { id: String, fraud_type: Option<String>, actionable: bool });
stored_struct!(ChargeFactsV1 <=> ChargeFacts {
    status: ChargeStatusV1,
    amount: i64,
    amount_captured: i64,
    captured: bool,
    paid: bool,
    async_method: bool,
    era: ApiEraV1,
    captured_at: Option<i64>,
});
stored_struct!(RefundFactsV1 <=> RefundFacts { at: (i64, u8), created: i64, era: ApiEraV1 });
stored_struct!(
    /// The fold's accumulators of format 3.
    FoldV3 <=> FoldState {
        status_from_failure: bool,
        seen_intent: bool,
        intent_received: i64,
        intent_succeeded_at: Option<i64>,
        charges: BTreeMap<String, ChargeFactsV1>,
        failed_attempts: BTreeMap<String, Option<String>>,
        failed_at: BTreeMap<String, (i64, EventIdV1)>,
        recovered_at: BTreeSet<i64>,
        action_subject: Option<String>,
        refund_facts: BTreeMap<String, RefundFactsV1>,
        fraud_warnings: BTreeSet<String>,
        inferred_refunds: BTreeMap<String, i64>,
    }
);
