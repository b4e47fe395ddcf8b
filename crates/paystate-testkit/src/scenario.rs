//! Whole payment lifecycles as Stripe emits them, with the state each must end in.
//!
//! Each [`Scenario`] produces the events of one payment in the order Stripe creates them, with realistic
//! timing (events of one API request share a second; bank debits settle days later; disputes come weeks
//! later), and a [`Truth`]: the final state written down from Stripe's documented behaviour, independently
//! of the state machine. Tests and `paystate simulate` deliver the events shuffled and duplicated and
//! compare the projection with the truth.

use crate::synth::{ChargeView, Method, PaymentSim, Rng, SimRefund, SynthEvent, Versions};
use paystate_core::ApiEra;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// A payment lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Card payment succeeds at the first attempt.
    CardSuccess,
    /// A decline, then a second card succeeds.
    DeclineThenSuccess,
    /// Declined twice; the customer gives up.
    DeclineFinal,
    /// 3-D Secure challenge, then success.
    ThreeDsSuccess,
    /// 3-D Secure challenge never completed.
    ThreeDsAbandoned,
    /// ACH debit: processing, then succeeded days later.
    BankDebitSucceeded,
    /// ACH debit: processing, then failed (back to requires_payment_method).
    BankDebitFailed,
    /// Canceled before any attempt.
    Canceled,
    /// Manual capture: authorized, then captured.
    ManualCaptureCaptured,
    /// Manual capture: authorized, then released.
    ManualCaptureReleased,
    /// Succeeded, then fully refunded.
    FullRefund,
    /// Succeeded, then two partial refunds.
    PartialRefunds,
    /// Succeeded; a refund fails, a new refund of the full amount succeeds.
    RefundFailedThenRetried,
    /// Succeeded; chargeback won.
    DisputeWon,
    /// Succeeded; chargeback lost.
    DisputeLost,
    /// Succeeded; inquiry opened and closed.
    InquiryClosed,
    /// Card success on a connected account (Connect).
    ConnectSuccess,
    /// A legacy charge with no PaymentIntent.
    ChargeWithoutIntent,
    /// Manual capture of part of the authorised amount.
    PartialCapture,
    /// Partial capture, then a customer refund of part of what was captured.
    PartialCaptureRefunded,
    /// A decline, then in the same second another card that needs 3-D Secure.
    DeclineThenActionSameSecond,
    /// A decline, then in the same second another card authorised for manual capture.
    DeclineThenCaptureSameSecond,
    /// A declined card, then a bank debit in flight; later a `charge.updated` about the declined charge.
    SupersededChargeUpdated,
    /// Bank debit succeeded; a refund is created and stays pending.
    BankDebitRefundPending,
    /// Bank debit succeeded; a refund is pending for days, then succeeds.
    BankDebitRefunded,
    /// Succeeded; Radar raises an early fraud warning, updated later.
    EarlyFraudWarning,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 26] = [
        Scenario::CardSuccess,
        Scenario::DeclineThenSuccess,
        Scenario::DeclineFinal,
        Scenario::ThreeDsSuccess,
        Scenario::ThreeDsAbandoned,
        Scenario::BankDebitSucceeded,
        Scenario::BankDebitFailed,
        Scenario::Canceled,
        Scenario::ManualCaptureCaptured,
        Scenario::ManualCaptureReleased,
        Scenario::FullRefund,
        Scenario::PartialRefunds,
        Scenario::RefundFailedThenRetried,
        Scenario::DisputeWon,
        Scenario::DisputeLost,
        Scenario::InquiryClosed,
        Scenario::ConnectSuccess,
        Scenario::ChargeWithoutIntent,
        Scenario::PartialCapture,
        Scenario::PartialCaptureRefunded,
        Scenario::DeclineThenActionSameSecond,
        Scenario::DeclineThenCaptureSameSecond,
        Scenario::SupersededChargeUpdated,
        Scenario::BankDebitRefundPending,
        Scenario::BankDebitRefunded,
        Scenario::EarlyFraudWarning,
    ];

    /// The snake_case name (file names, `--scenario`).
    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }
}

/// The final state a scenario must project to, and the actions it must have produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truth {
    /// The scenario.
    pub scenario: Scenario,
    /// Connect account.
    pub account: Option<String>,
    /// Payment id (`pi_…`, or `ch_…` without PaymentIntent).
    pub id: String,
    /// Expected lifecycle (snake_case).
    pub lifecycle: String,
    /// Expected Stripe status (snake_case).
    pub status: String,
    /// Expected amount.
    pub amount: i64,
    /// Expected amount received.
    pub amount_received: i64,
    /// Expected amount refunded.
    pub amount_refunded: i64,
    /// Expected `disputed`.
    pub disputed: bool,
    /// Expected latest dispute status.
    pub dispute_status: Option<String>,
    /// Expected number of distinct failed attempts.
    pub failure_count: u32,
    /// Number of distinct events generated.
    pub events: usize,
    /// Expected customer refunds pending.
    #[serde(default)]
    pub amount_refund_pending: i64,
    /// Expected open or lost chargebacks.
    #[serde(default)]
    pub amount_disputed: i64,
    /// Expected funds withdrawn by disputes and not reinstated.
    #[serde(default)]
    pub amount_lost_to_disputes: i64,
    /// Expected early fraud warning id.
    #[serde(default)]
    pub early_fraud_warning: Option<String>,
    /// How many actions of each kind in [`CHECKED_ACTIONS`] the payment must produce, whatever the
    /// delivery order (kinds absent: none).
    #[serde(default)]
    pub actions: BTreeMap<String, u32>,
    /// The API version(s) of the events.
    #[serde(default)]
    pub api_version: String,
}

impl Truth {
    /// The payment key the projection files this payment under (`acct_…/pi_…` or `pi_…`).
    pub fn key(&self) -> String {
        match &self.account {
            Some(a) => format!("{a}/{}", self.id),
            None => self.id.clone(),
        }
    }
}

/// The action kinds whose count does not depend on delivery order, so a truth can state it:
/// `notify_payment_failed` counts once the event time passed every grace period (the default,
/// [`paystate_core::DEFAULT_FAILURE_GRACE_SECS`]) with every event delivered in Stripe-time order (a
/// recovery delivered after its grace period passed, as a retried delivery can be, comes too late, so a
/// live check allows more, up to one per failed attempt). (`request_customer_action` is not among them:
/// whether a 3-D Secure request is still worth announcing depends on what was known when it arrived.)
pub const CHECKED_ACTIONS: [&str; 8] = [
    "notify_payment_failed",
    "fulfill_order",
    "payment_canceled",
    "refund_succeeded",
    "refund_failed",
    "dispute_opened",
    "dispute_closed",
    "review_fraud_warning",
];

/// Seconds until the next event: 0 (same request) half of the time, else up to `max`.
fn gap(rng: &mut Rng, max: u64) -> i64 {
    if rng.chance(0.5) {
        0
    } else {
        1 + i64::try_from(rng.below(max)).unwrap_or(0)
    }
}

fn days(rng: &mut Rng, min: i64, spread: u64) -> i64 {
    86_400 * (min + i64::try_from(rng.below(spread)).unwrap_or(0))
}

/// One payment being generated: renders each event at the API version of its time.
struct Flow<'r> {
    p: PaymentSim,
    rng: &'r mut Rng,
    ev: Vec<SynthEvent>,
}

impl Flow<'_> {
    fn era(&self, t: i64) -> ApiEra {
        self.p.versions.era_at(t)
    }

    fn intent(&mut self, ty: &str, t: i64, status: &str, latest: Option<&str>, error: Option<(&str, &str, &str)>) {
        let e = self.p.intent_event(self.rng, ty, t, status, latest, error);
        self.ev.push(e);
    }

    fn charge(&mut self, ty: &str, t: i64, c: &ChargeView, previous: Option<serde_json::Value>) {
        let e = self.p.charge_view_event(self.rng, ty, t, c, previous);
        self.ev.push(e);
    }

    fn new_charge(&mut self, status: &str, captured: bool, failure: Option<&str>) -> ChargeView {
        let prefix = if self.p.method == Method::BankDebit { "py" } else { "ch" };
        ChargeView {
            id: self.rng.id(prefix),
            status: status.to_owned(),
            captured,
            amount_captured: if captured { self.p.amount } else { 0 },
            refunds: Vec::new(),
            failure: failure.map(str::to_owned),
        }
    }

    /// A card charge that succeeds at `t` and its PaymentIntent.
    fn succeed(&mut self, t: i64) -> ChargeView {
        let c = self.new_charge("succeeded", true, None);
        self.charge("charge.succeeded", t, &c, None);
        self.intent("payment_intent.succeeded", t, "succeeded", Some(&c.id), None);
        c
    }

    fn decline(&mut self, t: i64, code: &str) -> ChargeView {
        let c = self.new_charge("failed", false, Some(code));
        self.charge("charge.failed", t, &c, None);
        self.intent(
            "payment_intent.payment_failed",
            t,
            "requires_payment_method",
            Some(&c.id),
            Some((&c.id, code, "generic_decline")),
        );
        c
    }

    /// An authorisation for manual capture at `t`.
    fn authorise(&mut self, t: i64) -> ChargeView {
        let c = self.new_charge("succeeded", false, None);
        self.charge("charge.succeeded", t, &c, None);
        self.intent("payment_intent.amount_capturable_updated", t, "requires_capture", Some(&c.id), None);
        c
    }

    /// Before basil, Stripe refunds what a capture left or a cancellation released: a Refund of its own,
    /// counted in the Charge's `amount_refunded`, with `refund.created` from acacia on.
    fn own_refund(&mut self, t: i64, c: &mut ChargeView, amount: i64) {
        if !self.era(t).has_own_refunds() || amount <= 0 {
            return;
        }
        let r = SimRefund { id: self.rng.id("re"), amount, status: "succeeded".into(), created: t, own: true };
        if self.era(t) == ApiEra::Acacia {
            let e = self.p.refund_view_event(self.rng, "refund.created", t, &r, &c.id, None);
            self.ev.push(e);
        }
        c.refunds.push(r);
    }

    /// Captures `amount` of an authorisation at `t`.
    fn capture(&mut self, t: i64, c: &mut ChargeView, amount: i64) {
        self.own_refund(t, c, self.p.amount - amount);
        c.captured = true;
        c.amount_captured = amount;
        let previous = json!({"amount_captured": 0, "captured": false});
        self.charge("charge.captured", t, c, Some(previous));
        self.p.capture_amount = Some(amount);
        self.intent("payment_intent.succeeded", t, "succeeded", Some(&c.id), None);
    }

    fn refunded_so_far(c: &ChargeView) -> i64 {
        c.refunds.iter().filter(|r| r.status != "failed").map(|r| r.amount).sum()
    }

    /// A customer refund created at `t` with `status`, as the era reports it: the Charge embeds it
    /// (legacy), only `charge.refunded` shows it (no-expand), or `refund.created` and `charge.refunded`.
    fn refund(&mut self, t: i64, c: &mut ChargeView, amount: i64, status: &str) -> usize {
        let before = Self::refunded_so_far(c);
        let r = SimRefund { id: self.rng.id("re"), amount, status: status.into(), created: t, own: false };
        if self.era(t) >= ApiEra::Acacia {
            let e = self.p.refund_view_event(self.rng, "refund.created", t, &r, &c.id, None);
            self.ev.push(e);
        }
        c.refunds.push(r);
        let previous = json!({"amount_refunded": before, "refunded": false});
        self.charge("charge.refunded", t, c, Some(previous));
        c.refunds.len() - 1
    }

    /// Refund `i` of `c` moves to `status` at `t`: `charge.refund.updated` before acacia, `refund.updated`
    /// or `refund.failed` from acacia on.
    fn refund_moves(&mut self, t: i64, c: &mut ChargeView, i: usize, status: &str) {
        let old = std::mem::replace(&mut c.refunds[i].status, status.to_owned());
        let ty = match (self.era(t) >= ApiEra::Acacia, status) {
            (false, _) => "charge.refund.updated",
            (true, "failed") => "refund.failed",
            (true, _) => "refund.updated",
        };
        let e = self.p.refund_view_event(self.rng, ty, t, &c.refunds[i], &c.id, Some(&old));
        self.ev.push(e);
    }

    fn dispute(&mut self, ty: &str, t: i64, du: &str, ch: &str, status: &str) {
        let e = self.p.dispute_event(self.rng, ty, t, du, ch, self.p.amount, status);
        self.ev.push(e);
    }

    /// A bank debit charge pending at `t`: `captured` and `amount_captured` already say the whole amount,
    /// `paid` is false.
    fn debit(&mut self, t: i64) -> ChargeView {
        let c = self.new_charge("pending", true, None);
        self.charge("charge.pending", t, &c, None);
        self.intent("payment_intent.processing", t, "processing", Some(&c.id), None);
        c
    }

    fn debit_settles(&mut self, t: i64, c: &mut ChargeView) {
        c.status = "succeeded".into();
        self.charge("charge.succeeded", t, c, None);
        self.intent("payment_intent.succeeded", t, "succeeded", Some(&c.id), None);
    }
}

/// Generates one payment of `scenario` starting at `t0`, rendered at the current API version.
pub fn generate(scenario: Scenario, rng: &mut Rng, t0: i64) -> (Vec<SynthEvent>, Truth) {
    generate_with(scenario, rng, t0, &Versions::default())
}

/// Generates one payment of `scenario` starting at `t0`, each event rendered at the version `versions`
/// gives for its time. The truth does not depend on the versions: the same payment, reported another way.
pub fn generate_with(scenario: Scenario, rng: &mut Rng, t0: i64, versions: &Versions) -> (Vec<SynthEvent>, Truth) {
    use Scenario as S;
    let mut p = PaymentSim::new(rng, t0);
    p.versions = versions.clone();
    match scenario {
        S::ConnectSuccess => p.account = Some(rng.id_len("acct", 16)),
        S::BankDebitSucceeded | S::BankDebitFailed | S::BankDebitRefundPending | S::BankDebitRefunded => {
            p.method = Method::BankDebit;
            p.currency = "usd";
        }
        S::ManualCaptureCaptured
        | S::ManualCaptureReleased
        | S::PartialCapture
        | S::PartialCaptureRefunded
        | S::DeclineThenCaptureSameSecond => p.manual_capture = true,
        S::ChargeWithoutIntent => p.without_intent = true,
        _ => {}
    }
    let amount = p.amount;
    let mut truth = Truth {
        scenario,
        account: p.account.clone(),
        id: p.pi.clone(),
        lifecycle: "succeeded".into(),
        status: "succeeded".into(),
        amount,
        amount_received: amount,
        amount_refunded: 0,
        disputed: false,
        dispute_status: None,
        failure_count: 0,
        events: 0,
        amount_refund_pending: 0,
        amount_disputed: 0,
        amount_lost_to_disputes: 0,
        early_fraud_warning: None,
        actions: BTreeMap::new(),
        api_version: match &versions.upgrade {
            Some((_, after)) => format!("{}..{after}", versions.before),
            None => versions.before.clone(),
        },
    };
    let mut f = Flow { p, rng, ev: Vec::new() };
    let mut t = t0;
    let count = |truth: &mut Truth, kind: &str, n: u32| {
        if n > 0 {
            *truth.actions.entry(kind.to_owned()).or_default() += n;
        }
    };
    let unpaid = |truth: &mut Truth, lifecycle: &str, status: &str| {
        truth.lifecycle = lifecycle.into();
        truth.status = status.into();
        truth.amount_received = 0;
    };

    if scenario == S::ChargeWithoutIntent {
        let c = f.new_charge("succeeded", true, None);
        f.charge("charge.succeeded", t, &c, None);
        truth.id = c.id;
        count(&mut truth, "fulfill_order", 1);
        truth.events = f.ev.len();
        return (f.ev, truth);
    }

    f.intent("payment_intent.created", t, "requires_payment_method", None, None);
    match scenario {
        S::CardSuccess | S::ConnectSuccess => {
            t += gap(f.rng, 60);
            f.succeed(t);
        }
        S::DeclineThenSuccess => {
            t += gap(f.rng, 60);
            f.decline(t, "card_declined");
            // Off-session retries with a backup card can land in the same second as the decline.
            t += gap(f.rng, 120);
            f.succeed(t);
            truth.failure_count = 1;
            // The second card came within the grace period: the decline is not announced.
        }
        S::DeclineFinal => {
            t += gap(f.rng, 60);
            f.decline(t, "card_declined");
            t += 1 + gap(f.rng, 120);
            f.decline(t, "insufficient_funds");
            truth.failure_count = 2;
            unpaid(&mut truth, "failed", "requires_payment_method");
            count(&mut truth, "notify_payment_failed", 2);
        }
        S::ThreeDsSuccess => {
            t += gap(f.rng, 30);
            f.intent("payment_intent.requires_action", t, "requires_action", None, None);
            t += 1 + gap(f.rng, 90);
            f.succeed(t);
        }
        S::ThreeDsAbandoned => {
            t += gap(f.rng, 30);
            f.intent("payment_intent.requires_action", t, "requires_action", None, None);
            unpaid(&mut truth, "requires_action", "requires_action");
        }
        S::BankDebitSucceeded => {
            t += gap(f.rng, 30);
            let mut c = f.debit(t);
            t += days(f.rng, 1, 4);
            f.debit_settles(t, &mut c);
        }
        S::BankDebitFailed => {
            t += gap(f.rng, 30);
            let mut c = f.debit(t);
            t += days(f.rng, 1, 4);
            c.status = "failed".into();
            c.failure = Some("insufficient_funds".into());
            f.charge("charge.failed", t, &c, None);
            f.intent(
                "payment_intent.payment_failed",
                t,
                "requires_payment_method",
                Some(&c.id),
                Some((&c.id, "insufficient_funds", "insufficient_funds")),
            );
            truth.failure_count = 1;
            unpaid(&mut truth, "failed", "requires_payment_method");
            count(&mut truth, "notify_payment_failed", 1);
        }
        S::Canceled => {
            t += 1 + gap(f.rng, 600);
            f.intent("payment_intent.canceled", t, "canceled", None, None);
            unpaid(&mut truth, "canceled", "canceled");
            count(&mut truth, "payment_canceled", 1);
        }
        S::ManualCaptureCaptured => {
            t += gap(f.rng, 30);
            let mut c = f.authorise(t);
            t += 1 + gap(f.rng, 86_400);
            f.capture(t, &mut c, amount);
        }
        S::ManualCaptureReleased => {
            t += gap(f.rng, 30);
            let mut c = f.authorise(t);
            t += 1 + gap(f.rng, 86_400);
            // Releasing an authorization: before basil Stripe refunds the uncaptured charge (no money
            // moves); from basil on there is no Refund, only the cancellation.
            f.intent("payment_intent.canceled", t, "canceled", Some(&c.id), None);
            if f.era(t).has_own_refunds() {
                f.own_refund(t, &mut c, amount);
                f.charge("charge.refunded", t, &c, Some(json!({"amount_refunded": 0, "refunded": false})));
            }
            unpaid(&mut truth, "canceled", "canceled");
            count(&mut truth, "payment_canceled", 1);
        }
        S::PartialCapture | S::PartialCaptureRefunded => {
            t += gap(f.rng, 30);
            let mut c = f.authorise(t);
            t += 1 + gap(f.rng, 86_400);
            let captured = amount * 3 / 5;
            f.capture(t, &mut c, captured);
            truth.amount_received = captured;
            if scenario == S::PartialCaptureRefunded {
                t += 3600 + gap(f.rng, 86_400);
                let back = captured / 2;
                f.refund(t, &mut c, back, "succeeded");
                truth.amount_refunded = back;
                truth.lifecycle = "partially_refunded".into();
                count(&mut truth, "refund_succeeded", 1);
            }
        }
        S::FullRefund | S::PartialRefunds | S::RefundFailedThenRetried => {
            t += gap(f.rng, 60);
            let mut c = f.succeed(t);
            t += 3600 + gap(f.rng, 86_400);
            match scenario {
                S::FullRefund => {
                    f.refund(t, &mut c, amount, "succeeded");
                    truth.lifecycle = "refunded".into();
                    truth.amount_refunded = amount;
                    count(&mut truth, "refund_succeeded", 1);
                }
                S::PartialRefunds => {
                    let (a, b) = (amount / 4, amount / 3);
                    f.refund(t, &mut c, a, "succeeded");
                    t += 3600 + gap(f.rng, 86_400);
                    f.refund(t, &mut c, b, "succeeded");
                    truth.lifecycle = "partially_refunded".into();
                    truth.amount_refunded = a + b;
                    count(&mut truth, "refund_succeeded", 2);
                }
                _ => {
                    // A card refund reports `succeeded` at once and can fail days later (Stripe's test
                    // card 4000000000005126 does this); the merchant then refunds again.
                    let first = f.refund(t, &mut c, amount, "succeeded");
                    t += days(f.rng, 1, 5);
                    f.refund_moves(t, &mut c, first, "failed");
                    t += 3600 + gap(f.rng, 86_400);
                    f.refund(t, &mut c, amount, "succeeded");
                    truth.lifecycle = "refunded".into();
                    truth.amount_refunded = amount;
                    count(&mut truth, "refund_succeeded", 2);
                    count(&mut truth, "refund_failed", 1);
                }
            }
        }
        S::DisputeWon | S::DisputeLost | S::InquiryClosed => {
            t += gap(f.rng, 60);
            let c = f.succeed(t);
            let du = f.rng.id("du");
            t += days(f.rng, 3, 30);
            let (open, review, closed) = match scenario {
                S::DisputeWon => ("needs_response", "under_review", "won"),
                S::DisputeLost => ("needs_response", "under_review", "lost"),
                _ => ("warning_needs_response", "warning_under_review", "warning_closed"),
            };
            f.dispute("charge.dispute.created", t, &du, &c.id, open);
            if scenario != S::InquiryClosed {
                f.dispute("charge.dispute.funds_withdrawn", t, &du, &c.id, open);
            }
            t += 86_400 + gap(f.rng, 86_400);
            f.dispute("charge.dispute.updated", t, &du, &c.id, review);
            t += days(f.rng, 10, 40);
            f.dispute("charge.dispute.closed", t, &du, &c.id, closed);
            if scenario == S::DisputeWon {
                f.dispute("charge.dispute.funds_reinstated", t, &du, &c.id, closed);
            }
            if scenario == S::DisputeLost {
                truth.amount_disputed = amount;
                truth.amount_lost_to_disputes = amount;
            }
            truth.disputed = true;
            truth.dispute_status = Some(closed.into());
            count(&mut truth, "dispute_opened", 1);
            count(&mut truth, "dispute_closed", 1);
        }
        S::DeclineThenActionSameSecond => {
            t += gap(f.rng, 60);
            f.decline(t, "card_declined");
            f.intent("payment_intent.requires_action", t, "requires_action", None, None);
            truth.failure_count = 1;
            unpaid(&mut truth, "requires_action", "requires_action");
        }
        S::DeclineThenCaptureSameSecond => {
            t += gap(f.rng, 60);
            f.decline(t, "card_declined");
            f.authorise(t);
            truth.failure_count = 1;
            unpaid(&mut truth, "requires_capture", "requires_capture");
        }
        S::SupersededChargeUpdated => {
            t += gap(f.rng, 60);
            let mut declined = f.decline(t, "card_declined");
            f.p.method = Method::BankDebit;
            t += gap(f.rng, 120);
            f.debit(t);
            t += 60 + gap(f.rng, 3600);
            f.p.method = Method::Card;
            declined.failure = Some("card_declined".into());
            f.charge("charge.updated", t, &declined, Some(json!({"description": null})));
            truth.failure_count = 1;
            unpaid(&mut truth, "processing", "processing");
        }
        S::BankDebitRefundPending | S::BankDebitRefunded => {
            t += gap(f.rng, 30);
            let mut c = f.debit(t);
            t += days(f.rng, 1, 4);
            f.debit_settles(t, &mut c);
            t += 3600 + gap(f.rng, 86_400);
            let back = amount / 2;
            let i = f.refund(t, &mut c, back, "pending");
            if scenario == S::BankDebitRefunded {
                t += days(f.rng, 2, 5);
                f.refund_moves(t, &mut c, i, "succeeded");
                truth.amount_refunded = back;
                truth.lifecycle = "partially_refunded".into();
                count(&mut truth, "refund_succeeded", 1);
            } else {
                truth.amount_refund_pending = back;
            }
        }
        S::EarlyFraudWarning => {
            t += gap(f.rng, 60);
            let c = f.succeed(t);
            t += days(f.rng, 1, 10);
            let w = f.rng.id("issfr");
            let e = f.p.fraud_warning_event(f.rng, "radar.early_fraud_warning.created", t, &w, &c.id, true);
            f.ev.push(e);
            t += 3600 + gap(f.rng, 86_400);
            let e = f.p.fraud_warning_event(f.rng, "radar.early_fraud_warning.updated", t, &w, &c.id, false);
            f.ev.push(e);
            truth.early_fraud_warning = Some(w);
            count(&mut truth, "review_fraud_warning", 1);
        }
        S::ChargeWithoutIntent => {}
    }
    if truth.status == "succeeded" {
        count(&mut truth, "fulfill_order", 1);
    }
    truth.events = f.ev.len();
    (f.ev, truth)
}
