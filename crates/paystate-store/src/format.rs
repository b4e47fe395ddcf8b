//! The stored encodings of the projection, in one place: every value starts with a format byte, and every
//! format a release ever wrote is either decoded here or named in a clear error.
//!
//! - **Payment** (`payments` tree, key = payment key): format 3 (this release) is the state without its
//!   history plus the ledger of emitted actions. Format 2 (the previous release) embedded the whole history
//!   in the state; it is decoded by [`decode_payment_v2`] and migrated once at open into format 3 plus
//!   history entries. Format 1 was folded with older money rules and is rebuilt from the log instead.
//! - **History entry** (`history` tree, key = [`history_key`]): format 1, one applied event.
//!
//! Payments and history entries are postcard (compact, non-self-describing serde): the projector encodes
//! and decodes them on its hot path. Being positional, postcard ties a format to a struct layout, so each
//! format has its own types (`stored.rs` for the current ones, format 2's below), never the core's structs,
//! and is pinned by golden bytes (`tests/fixtures/payment-format-*.hex`, `history-format-*.hex`).

use crate::error::StoreError;
use crate::stored::{
    ActionIdV1, DisputeStateV1, DisputeStatusV1, EventV1, FoldV3, FraudWarningStateV1, IntentStatusV1, LifecycleV1,
    Mirror, PaymentKeyV1, PaymentV3, RefundStateV1, StateV3,
};
use paystate_core::{Payment, PaymentEvent, PaymentState};
use std::collections::{BTreeMap, BTreeSet};

/// The payment format this release writes.
pub(crate) const PAYMENT_FORMAT: u8 = 3;
/// The previous release's payment format (history inside the state): migrated at open.
pub(crate) const PAYMENT_FORMAT_V2: u8 = 2;
/// The format before it (older money rules): rebuilt from the log at open.
pub(crate) const PAYMENT_FORMAT_V1: u8 = 1;
/// The history entry format this release writes.
const HISTORY_FORMAT: u8 = 1;

fn corrupt(tree: &'static str) -> impl Fn(String) -> StoreError {
    move |why| StoreError::Corrupt { tree, why }
}

fn encode_err(e: postcard::Error) -> StoreError {
    StoreError::Encode(e.to_string())
}

/// Appends `state` in postcard to `out` and returns the SHA-256 of those bytes (the state's hash, see
/// `state_hash`).
pub(crate) fn encode_state(state: &PaymentState, out: &mut Vec<u8>) -> Result<[u8; 32], StoreError> {
    use sha2::{Digest, Sha256};
    let start = out.len();
    postcard::to_io(&StateV3::from_core(state), &mut *out).map_err(encode_err)?;
    Ok(Sha256::digest(&out[start..]).into())
}

/// The stored encoding of `p` (format 3) and its state hash, encoding the state once: postcard writes a
/// struct's fields one after the other, so a `Payment` is its `state` followed by its `emitted`.
pub(crate) fn encode_payment(p: &Payment) -> Result<(Vec<u8>, [u8; 32]), StoreError> {
    let mut out = Vec::with_capacity(1024);
    out.push(PAYMENT_FORMAT);
    let hash = encode_state(&p.state, &mut out)?;
    postcard::to_io(&BTreeSet::<ActionIdV1>::from_core(&p.emitted), &mut out).map_err(encode_err)?;
    Ok((out, hash))
}

/// Decodes a stored payment of this release's format.
pub(crate) fn decode_payment(v: &[u8]) -> Result<Payment, StoreError> {
    let corrupt = corrupt("payments");
    match v.split_first() {
        Some((&PAYMENT_FORMAT, rest)) => {
            postcard::from_bytes::<PaymentV3>(rest).map(PaymentV3::into_core).map_err(|e| corrupt(e.to_string()))
        }
        Some((&PAYMENT_FORMAT_V2, _)) => Err(corrupt(
            "payment stored by the previous release (format 2): open the data directory with this release's \
             `paystate serve` or `paystate project` once to migrate it"
                .into(),
        )),
        Some((&PAYMENT_FORMAT_V1, _)) => Err(corrupt(
            "payment stored by an earlier release (format 1): open the data directory with `paystate serve` or \
             `paystate project` once to rebuild it from its log, or replay the log again"
                .into(),
        )),
        Some((f, _)) => Err(corrupt(format!("unknown payment format {f} (written by a newer release?)"))),
        None => Err(corrupt("empty payment value".into())),
    }
}

/// The layout of format 2's state, field for field: the previous release's `PaymentState`, whose
/// `history` sat between `last_event_at` and `fold`. The nested types, the fold's accumulators
/// included, are those of format 3, unchanged since.
#[derive(serde::Deserialize)]
struct PaymentStateV2 {
    key: PaymentKeyV1,
    _livemode: bool,
    _status: Option<IntentStatusV1>,
    _lifecycle: LifecycleV1,
    _amount: i64,
    _currency: Option<String>,
    _amount_received: i64,
    _amount_refunded: i64,
    _amount_refund_pending: i64,
    _refunds: BTreeMap<String, RefundStateV1>,
    _disputed: bool,
    _dispute_status: Option<DisputeStatusV1>,
    _disputes: BTreeMap<String, DisputeStateV1>,
    _amount_disputed: i64,
    _amount_lost_to_disputes: i64,
    _early_fraud_warning: Option<FraudWarningStateV1>,
    _latest_charge: Option<String>,
    _latest_charge_status: Option<crate::stored::ChargeStatusV1>,
    _failure_count: u32,
    _last_failure_code: Option<String>,
    _customer: Option<String>,
    _metadata: BTreeMap<String, String>,
    _first_event_at: Option<i64>,
    _last_event_at: Option<i64>,
    history: Vec<HistoryEntryV2>,
    _fold: FoldV3,
}

/// Format 2's history entry: the event and the lifecycle after it.
#[derive(serde::Deserialize)]
struct HistoryEntryV2 {
    event: EventV1,
    _lifecycle: LifecycleV1,
}

#[derive(serde::Deserialize)]
struct PaymentV2 {
    state: PaymentStateV2,
    emitted: BTreeSet<ActionIdV1>,
}

/// Decodes a payment of format 2 into this release's payment and its history (causal order). The state is
/// folded again from the history: format 2's derived fields were computed by the same rules, and folding
/// also fills the fields format 3 added (`events_applied`, `last_event`).
pub(crate) fn decode_payment_v2(v: &[u8]) -> Result<(Payment, Vec<PaymentEvent>), StoreError> {
    let corrupt = corrupt("payments");
    let rest = match v.split_first() {
        Some((&PAYMENT_FORMAT_V2, rest)) => rest,
        _ => return Err(corrupt("not a payment of format 2".into())),
    };
    let old: PaymentV2 = postcard::from_bytes(rest).map_err(|e| corrupt(format!("format 2: {e}")))?;
    let events: Vec<PaymentEvent> = old.state.history.into_iter().map(|h| h.event.into_core()).collect();
    let state = PaymentState::fold_all(old.state.key.into_core(), &events);
    Ok((Payment { state, emitted: old.emitted.into_core() }, events))
}

/// The key of one history entry: the payment key, a NUL (payment keys hold none), then the event's causal
/// position (`created` sign-flipped big-endian, `rank`, event id), so that a prefix scan reads a payment's
/// events in causal order and one second of them is one range.
pub(crate) fn history_key(payment: &[u8], ev: &PaymentEvent) -> Vec<u8> {
    let pos = paystate_core::EventPosition::of(ev);
    let mut k = history_second(payment, pos.created);
    k.push(pos.rank);
    k.extend_from_slice(pos.id.as_str().as_bytes());
    k
}

/// The prefix of a payment's history entries.
pub(crate) fn history_prefix(payment: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(payment.len() + 1 + 9 + 32);
    k.extend_from_slice(payment);
    k.push(0);
    k
}

/// The prefix of a payment's history entries created in Stripe second `second`.
pub(crate) fn history_second(payment: &[u8], second: i64) -> Vec<u8> {
    let mut k = history_prefix(payment);
    k.extend_from_slice(&((second as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// The stored encoding of one history entry.
pub(crate) fn encode_event(ev: &PaymentEvent) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(256);
    out.push(HISTORY_FORMAT);
    postcard::to_io(&EventV1::from_core(ev), &mut out).map_err(encode_err)?;
    Ok(out)
}

/// Decodes one history entry.
pub(crate) fn decode_event(v: &[u8]) -> Result<PaymentEvent, StoreError> {
    let corrupt = corrupt("history");
    match v.split_first() {
        Some((&HISTORY_FORMAT, rest)) => {
            postcard::from_bytes::<EventV1>(rest).map(EventV1::into_core).map_err(|e| corrupt(e.to_string()))
        }
        Some((f, _)) => Err(corrupt(format!("unknown history entry format {f} (written by a newer release?)"))),
        None => Err(corrupt("empty history entry".into())),
    }
}
