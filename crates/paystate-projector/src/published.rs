//! The records the projector publishes, in one place, each with its format: **payment updates** (the
//! `payments` stream, Kafka's `paystate.payments`), **actions** (the `actions` stream, `paystate.actions`)
//! the **snapshot** inside a Kafka payment update (what a restore needs besides the history), and the
//! **history messages** of Kafka's `paystate.history` (each applied event once).
//!
//! Every record is JSON with a `"format"` number. Updates and actions of format 1 are what the previous
//! release published without the field: a record with no `format` is read as format 1. Readers ignore
//! fields they do not know, so a field added to a record keeps its format; renaming or removing one, or
//! changing its meaning, takes a new format number, and this module keeps reading the old one.
//!
//! The records are views of their own (`PaymentSummary`, [`ActionRecord`]) rather than the core's
//! structs as they are: the fold's internal state (`FoldState`, the ledger) is never published.

use paystate_core::{Action, Payment, PaymentEvent, PaymentKey, PaymentSummary, PaymentWithHistory};
use paystate_store::{HistoryChange, HistoryChanges};
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
pub const SNAPSHOT_FORMAT: u64 = 3;
/// The format of a history message (see [`history_message`]).
pub const HISTORY_FORMAT: u64 = 1;

/// What a payment update carries for restores (format [`SNAPSHOT_FORMAT`]): `{"format": 3, "key": …,
/// "emitted": […], "events_applied": N, "applied": [events], "removed": [event ids]}`: the ledger, the
/// number of events the state folds, and only the changes the update's batch made to the history. Each
/// applied event is also published once to the history topic ([`history_message`]; a removed one as a
/// tombstone), and a restore folds a payment from its history there. So an update stays the size of one
/// batch's changes, where format 2 (the previous release) carried every event of the payment in every
/// update, and format 1 (the one before) the payment itself with its history inside the state: both are
/// still read ([`parse_snapshot`]).
pub fn snapshot(p: &Payment, changes: &HistoryChanges) -> Result<serde_json::Value, serde_json::Error> {
    let mut applied = Vec::new();
    let mut removed = Vec::new();
    for change in changes.values() {
        match change {
            HistoryChange::Applied(ev) => applied.push(ev),
            HistoryChange::Removed(ev) => removed.push(ev.id.as_str()),
        }
    }
    Ok(json!({
        "format": SNAPSHOT_FORMAT,
        "key": p.state.key,
        "emitted": p.emitted,
        "events_applied": p.state.events_applied,
        "applied": applied,
        "removed": removed,
    }))
}

/// A snapshot read back: whole (formats 1 and 2 carry every event), or the changes of one batch (format 3),
/// whose history is in the history topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snapshot {
    /// The payment with its history.
    Whole(Box<PaymentWithHistory>),
    /// A format-3 snapshot.
    Changes {
        /// The payment.
        key: PaymentKey,
        /// Ids of every action emitted for it.
        emitted: std::collections::BTreeSet<paystate_core::ActionId>,
        /// How many events its state folds (the history topic must hold as many for it).
        events_applied: u64,
        /// Events the batch applied.
        applied: Vec<PaymentEvent>,
        /// Ids of events the batch removed.
        removed: Vec<String>,
    },
}

/// A snapshot of any format. Whole ones are folded again from their events, so that a snapshot written by
/// an earlier release (whose state lacks later fields) restores the state this release computes.
pub fn parse_snapshot(v: &serde_json::Value) -> Result<Snapshot, String> {
    #[derive(serde::Deserialize)]
    struct V3 {
        key: PaymentKey,
        emitted: std::collections::BTreeSet<paystate_core::ActionId>,
        events_applied: u64,
        applied: Vec<PaymentEvent>,
        removed: Vec<String>,
    }
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
            let s = V3::deserialize(v).map_err(|e| format!("snapshot format 3: {e}"))?;
            return Ok(Snapshot::Changes {
                key: s.key,
                emitted: s.emitted,
                events_applied: s.events_applied,
                applied: s.applied,
                removed: s.removed,
            });
        }
        Some(2) => {
            let s = V2::deserialize(v).map_err(|e| format!("snapshot format 2: {e}"))?;
            (s.key, s.emitted, s.events)
        }
        None => {
            let s = V1::deserialize(v).map_err(|e| format!("snapshot format 1: {e}"))?;
            (s.state.key, s.emitted, s.state.history.into_iter().map(|h| h.event).collect())
        }
        Some(f) => return Err(format!("unknown snapshot format {f} (written by a newer release?)")),
    };
    Ok(Snapshot::Whole(Box::new(whole(key, emitted, events))))
}

/// The payment `events` fold into, with `emitted` as its ledger.
pub fn whole(
    key: PaymentKey,
    emitted: std::collections::BTreeSet<paystate_core::ActionId>,
    events: Vec<PaymentEvent>,
) -> PaymentWithHistory {
    let events = paystate_core::EventList::from_events(events);
    let state = paystate_core::PaymentState::fold_all(key, events.events());
    PaymentWithHistory { payment: Payment { state, emitted }, events }
}

/// The history topic's message key of event `event_id` of payment `key`: `<payment key>#<event id>`.
pub fn history_key(key: &str, event_id: &str) -> String {
    format!("{key}#{event_id}")
}

/// The payment key and event id of a history message key (see [`history_key`]).
pub fn parse_history_key(k: &str) -> Option<(&str, &str)> {
    k.rsplit_once('#')
}

/// A history message: `{"format": 1, "key": <payment key>, "event": …}`, one per applied event.
pub fn history_message(key: &str, ev: &impl Serialize) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&json!({"format": HISTORY_FORMAT, "key": key, "event": ev}))
}

/// A history message read back: the payment key and the event.
pub fn parse_history_message(bytes: &[u8]) -> Result<(String, PaymentEvent), String> {
    #[derive(serde::Deserialize)]
    struct Head {
        format: u64,
    }
    #[derive(serde::Deserialize)]
    struct V1 {
        key: String,
        event: PaymentEvent,
    }
    let head: Head = serde_json::from_slice(bytes).map_err(|e| format!("history message: {e}"))?;
    match head.format {
        HISTORY_FORMAT => {
            let m: V1 = serde_json::from_slice(bytes).map_err(|e| format!("history message format 1: {e}"))?;
            Ok((m.key, m.event))
        }
        f => Err(format!("unknown history message format {f} (written by a newer release?)")),
    }
}
