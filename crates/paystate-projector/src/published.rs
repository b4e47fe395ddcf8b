//! The records the projector publishes, in one place, each with its format: **payment updates** (the
//! `payments` stream, Kafka's `paystate.payments`), **actions** (the `actions` stream, `paystate.actions`)
//! and the **snapshot** inside a Kafka payment update (what a restore folds a payment back from).
//!
//! Every record is JSON with a `"format"` number. Updates and actions of format 1 are what the previous
//! release published without the field: a record with no `format` is read as format 1. Readers ignore
//! fields they do not know, so a field added to a record keeps its format; renaming or removing one, or
//! changing its meaning, takes a new format number, and this module keeps reading the old one.
//!
//! The records are views of their own (`PaymentSummary`, [`ActionRecord`]) rather than the core's
//! structs as they are: the fold's internal state (`FoldState`, the ledger) is never published.

use paystate_core::{Action, Payment, PaymentEvent, PaymentKey, PaymentSummary, PaymentWithHistory};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The format of the payment updates this release publishes.
pub const UPDATE_FORMAT: u32 = 1;
/// The format of the actions this release publishes.
pub const ACTION_FORMAT: u32 = 1;

/// One payment update: the payment's state after the last event of a batch that changed it, with the log
/// position of that event.
#[derive(Debug, Serialize)]
pub struct PaymentUpdate<'a> {
    /// [`UPDATE_FORMAT`].
    pub format: u32,
    /// The payment key (`acct/pi` or `pi`): the Kafka message key.
    pub key: &'a str,
    /// Raw-log partition of the event.
    pub partition: u32,
    /// Raw-log offset of the event.
    pub offset: u64,
    /// The state, as the admin API shows it.
    pub payment: PaymentSummary<'a>,
    /// Kafka only: what a restore needs (see [`snapshot`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<serde_json::Value>,
}

/// The encoded payment update of `p` (key `key`) after the event at `partition`/`offset`.
pub fn update(
    key: &str,
    partition: u32,
    offset: u64,
    p: &Payment,
    snapshot: Option<serde_json::Value>,
) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&PaymentUpdate {
        format: UPDATE_FORMAT,
        key,
        partition,
        offset,
        payment: p.state.summary(),
        snapshot,
    })
}

/// One action as published: [`ACTION_FORMAT`] and the action's fields.
#[derive(Debug, Serialize)]
pub struct ActionRecord<'a> {
    /// [`ACTION_FORMAT`].
    pub format: u32,
    /// The action.
    #[serde(flatten)]
    pub action: &'a Action,
}

/// The encoded action record of `action`.
pub fn action(action: &Action) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&ActionRecord { format: ACTION_FORMAT, action })
}

/// An action record of any format back as an action.
pub fn parse_action(bytes: &[u8]) -> Result<Action, String> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(default = "format_1")]
        format: u32,
    }
    fn format_1() -> u32 {
        1
    }
    let head: Head = serde_json::from_slice(bytes).map_err(|e| format!("action: {e}"))?;
    match head.format {
        ACTION_FORMAT => serde_json::from_slice(bytes).map_err(|e| format!("action format 1: {e}")),
        f => Err(format!("unknown action format {f} (written by a newer release?)")),
    }
}

/// The format of a payment update's `snapshot` (see [`snapshot`]).
pub const SNAPSHOT_FORMAT: u64 = 2;

/// What a payment update carries for restores (format [`SNAPSHOT_FORMAT`]): `{"format": 2, "key": …,
/// "emitted": […], "events": […]}`, the events in causal order. The state is not carried: a restore folds
/// it from the events (and the update's `payment` has it for readers). Format 1 (the previous release) was
/// the payment itself, its events inside `state.history`: see [`parse_snapshot`].
pub fn snapshot(p: &Payment, events: &[PaymentEvent]) -> Result<serde_json::Value, serde_json::Error> {
    Ok(json!({"format": SNAPSHOT_FORMAT, "key": p.state.key, "emitted": p.emitted, "events": events}))
}

/// A snapshot of either format back as a payment with its history. The state is folded again from the
/// events, so that a snapshot written by an earlier release (whose state lacks later fields) restores the
/// state this release computes.
pub fn parse_snapshot(v: &serde_json::Value) -> Result<PaymentWithHistory, String> {
    #[derive(serde::Deserialize)]
    struct V2 {
        key: PaymentKey,
        emitted: std::collections::BTreeSet<paystate_core::ActionId>,
        events: Vec<PaymentEvent>,
    }
    #[derive(serde::Deserialize)]
    struct V1State {
        key: PaymentKey,
        history: Vec<paystate_core::HistoryEntry>,
    }
    #[derive(serde::Deserialize)]
    struct V1 {
        state: V1State,
        emitted: std::collections::BTreeSet<paystate_core::ActionId>,
    }
    let (key, emitted, events) = match v.get("format").and_then(|f| f.as_u64()) {
        Some(SNAPSHOT_FORMAT) => {
            let s = V2::deserialize(v).map_err(|e| format!("snapshot format 2: {e}"))?;
            (s.key, s.emitted, s.events)
        }
        None => {
            let s = V1::deserialize(v).map_err(|e| format!("snapshot format 1: {e}"))?;
            (s.state.key, s.emitted, s.state.history.into_iter().map(|h| h.event).collect())
        }
        Some(f) => return Err(format!("unknown snapshot format {f} (written by a newer release?)")),
    };
    let events = paystate_core::EventList::from_events(events);
    let state = paystate_core::PaymentState::fold_all(key, events.events());
    Ok(PaymentWithHistory { payment: Payment { state, emitted }, events })
}
