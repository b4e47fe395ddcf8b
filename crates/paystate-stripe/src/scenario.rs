//! Whole payment lifecycles as Stripe emits them, with the state each must end in.
//!
//! Each [`Scenario`] produces the events of one payment in the order Stripe creates them, with realistic
//! timing (events of one API request share a second; bank debits settle days later; disputes come weeks
//! later), and a [`Truth`]: the final state written down from Stripe's documented behaviour, independently
//! of the state machine. Tests and `paystate simulate` deliver the events shuffled and duplicated and
//! compare the projection with the truth.

use crate::synth::{Method, PaymentSim, Rng, SynthEvent};
use serde::{Deserialize, Serialize};

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
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 18] = [
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
    ];
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
}

/// Seconds until the next event: 0 (same request) half of the time, else up to `max`.
fn gap(rng: &mut Rng, max: u64) -> i64 {
    if rng.chance(0.5) {
        0
    } else {
        1 + i64::try_from(rng.below(max)).unwrap_or(0)
    }
}

/// Generates one payment of `scenario` starting at `t0`.
pub fn generate(scenario: Scenario, rng: &mut Rng, t0: i64) -> (Vec<SynthEvent>, Truth) {
    use Scenario as S;
    let mut p = PaymentSim::new(rng, t0);
    match scenario {
        S::ConnectSuccess => p.account = Some(rng.id_len("acct", 16)),
        S::BankDebitSucceeded | S::BankDebitFailed => {
            p.method = Method::BankDebit;
            p.currency = "usd";
        }
        S::ManualCaptureCaptured | S::ManualCaptureReleased => p.manual_capture = true,
        S::ChargeWithoutIntent => p.without_intent = true,
        _ => {}
    }
    let amount = p.amount;
    let mut ev: Vec<SynthEvent> = Vec::new();
    let mut t = t0;
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
    };
    let none: &[(String, i64, String)] = &[];

    if scenario == S::ChargeWithoutIntent {
        let ch = rng.id("ch");
        ev.push(p.charge_event(rng, "charge.succeeded", t, &ch, "succeeded", true, none, None));
        truth.id = ch;
        truth.events = ev.len();
        return (ev, truth);
    }

    ev.push(p.intent_event(rng, "payment_intent.created", t, "requires_payment_method", None, None));

    // A successful card charge at time t; returns the charge id.
    let succeed = |p: &PaymentSim, rng: &mut Rng, ev: &mut Vec<SynthEvent>, t: i64| -> String {
        let ch = rng.id("ch");
        ev.push(p.charge_event(rng, "charge.succeeded", t, &ch, "succeeded", true, none, None));
        ev.push(p.intent_event(rng, "payment_intent.succeeded", t, "succeeded", Some(&ch), None));
        ch
    };
    let decline = |p: &PaymentSim, rng: &mut Rng, ev: &mut Vec<SynthEvent>, t: i64, code: &str| {
        let ch = rng.id("ch");
        ev.push(p.charge_event(rng, "charge.failed", t, &ch, "failed", false, none, Some(code)));
        ev.push(p.intent_event(
            rng,
            "payment_intent.payment_failed",
            t,
            "requires_payment_method",
            Some(&ch),
            Some((&ch, code, "generic_decline")),
        ));
    };

    match scenario {
        S::CardSuccess | S::ConnectSuccess => {
            t += gap(rng, 60);
            succeed(&p, rng, &mut ev, t);
        }
        S::DeclineThenSuccess => {
            t += gap(rng, 60);
            decline(&p, rng, &mut ev, t, "card_declined");
            // Off-session retries with a backup card can land in the same second as the decline.
            t += gap(rng, 120);
            succeed(&p, rng, &mut ev, t);
            truth.failure_count = 1;
        }
        S::DeclineFinal => {
            t += gap(rng, 60);
            decline(&p, rng, &mut ev, t, "card_declined");
            t += 1 + gap(rng, 120);
            decline(&p, rng, &mut ev, t, "insufficient_funds");
            truth.failure_count = 2;
            truth.lifecycle = "failed".into();
            truth.status = "requires_payment_method".into();
            truth.amount_received = 0;
        }
        S::ThreeDsSuccess => {
            t += gap(rng, 30);
            ev.push(p.intent_event(rng, "payment_intent.requires_action", t, "requires_action", None, None));
            t += 1 + gap(rng, 90);
            succeed(&p, rng, &mut ev, t);
        }
        S::ThreeDsAbandoned => {
            t += gap(rng, 30);
            ev.push(p.intent_event(rng, "payment_intent.requires_action", t, "requires_action", None, None));
            truth.lifecycle = "requires_action".into();
            truth.status = "requires_action".into();
            truth.amount_received = 0;
        }
        S::BankDebitSucceeded | S::BankDebitFailed => {
            t += gap(rng, 30);
            let ch = rng.id("py");
            ev.push(p.charge_event(rng, "charge.pending", t, &ch, "pending", false, none, None));
            ev.push(p.intent_event(rng, "payment_intent.processing", t, "processing", Some(&ch), None));
            t += 86_400 * (1 + i64::try_from(rng.below(4)).unwrap_or(0));
            if scenario == S::BankDebitSucceeded {
                ev.push(p.charge_event(rng, "charge.succeeded", t, &ch, "succeeded", true, none, None));
                ev.push(p.intent_event(rng, "payment_intent.succeeded", t, "succeeded", Some(&ch), None));
            } else {
                ev.push(p.charge_event(
                    rng,
                    "charge.failed",
                    t,
                    &ch,
                    "failed",
                    false,
                    none,
                    Some("insufficient_funds"),
                ));
                ev.push(p.intent_event(
                    rng,
                    "payment_intent.payment_failed",
                    t,
                    "requires_payment_method",
                    Some(&ch),
                    Some((&ch, "insufficient_funds", "insufficient_funds")),
                ));
                truth.failure_count = 1;
                truth.lifecycle = "failed".into();
                truth.status = "requires_payment_method".into();
                truth.amount_received = 0;
            }
        }
        S::Canceled => {
            t += 1 + gap(rng, 600);
            ev.push(p.intent_event(rng, "payment_intent.canceled", t, "canceled", None, None));
            truth.lifecycle = "canceled".into();
            truth.status = "canceled".into();
            truth.amount_received = 0;
        }
        S::ManualCaptureCaptured | S::ManualCaptureReleased => {
            t += gap(rng, 30);
            let ch = rng.id("ch");
            ev.push(p.charge_event(rng, "charge.succeeded", t, &ch, "succeeded", false, none, None));
            ev.push(p.intent_event(
                rng,
                "payment_intent.amount_capturable_updated",
                t,
                "requires_capture",
                Some(&ch),
                None,
            ));
            t += 1 + gap(rng, 86_400);
            if scenario == S::ManualCaptureCaptured {
                ev.push(p.charge_event(rng, "charge.captured", t, &ch, "succeeded", true, none, None));
                ev.push(p.intent_event(rng, "payment_intent.succeeded", t, "succeeded", Some(&ch), None));
            } else {
                // Releasing an authorization refunds the uncaptured charge: not money returned.
                let release = [(rng.id("re"), amount, "succeeded".to_owned())];
                ev.push(p.intent_event(rng, "payment_intent.canceled", t, "canceled", Some(&ch), None));
                ev.push(p.charge_event(rng, "charge.refunded", t, &ch, "succeeded", false, &release, None));
                truth.lifecycle = "canceled".into();
                truth.status = "canceled".into();
                truth.amount_received = 0;
            }
        }
        S::FullRefund | S::PartialRefunds | S::RefundFailedThenRetried => {
            t += gap(rng, 60);
            let ch = succeed(&p, rng, &mut ev, t);
            let mut refunds: Vec<(String, i64, String)> = Vec::new();
            let mut refund =
                |p: &PaymentSim, rng: &mut Rng, ev: &mut Vec<SynthEvent>, t: &mut i64, amt: i64, fail: bool| {
                    *t += 3600 + gap(rng, 86_400);
                    let re = rng.id("re");
                    ev.push(p.refund_event(rng, "refund.created", *t, &re, &ch, amt, "pending"));
                    *t += gap(rng, 3600);
                    if fail {
                        ev.push(p.refund_event(rng, "refund.failed", *t, &re, &ch, amt, "failed"));
                        refunds.push((re, amt, "failed".into()));
                    } else {
                        ev.push(p.refund_event(rng, "refund.updated", *t, &re, &ch, amt, "succeeded"));
                        refunds.push((re, amt, "succeeded".into()));
                        ev.push(p.charge_event(rng, "charge.refunded", *t, &ch, "succeeded", true, &refunds, None));
                    }
                };
            match scenario {
                S::FullRefund => {
                    refund(&p, rng, &mut ev, &mut t, amount, false);
                    truth.lifecycle = "refunded".into();
                    truth.amount_refunded = amount;
                }
                S::PartialRefunds => {
                    let a = amount / 4;
                    let b = amount / 3;
                    refund(&p, rng, &mut ev, &mut t, a, false);
                    refund(&p, rng, &mut ev, &mut t, b, false);
                    truth.lifecycle = "partially_refunded".into();
                    truth.amount_refunded = a + b;
                }
                _ => {
                    refund(&p, rng, &mut ev, &mut t, amount, true);
                    refund(&p, rng, &mut ev, &mut t, amount, false);
                    truth.lifecycle = "refunded".into();
                    truth.amount_refunded = amount;
                }
            }
        }
        S::DisputeWon | S::DisputeLost | S::InquiryClosed => {
            t += gap(rng, 60);
            let ch = succeed(&p, rng, &mut ev, t);
            let du = rng.id("du");
            t += 86_400 * (3 + i64::try_from(rng.below(30)).unwrap_or(0));
            let (open, review, closed) = match scenario {
                S::DisputeWon => ("needs_response", "under_review", "won"),
                S::DisputeLost => ("needs_response", "under_review", "lost"),
                _ => ("warning_needs_response", "warning_under_review", "warning_closed"),
            };
            ev.push(p.dispute_event(rng, "charge.dispute.created", t, &du, &ch, amount, open));
            if scenario != S::InquiryClosed {
                ev.push(p.dispute_event(rng, "charge.dispute.funds_withdrawn", t, &du, &ch, amount, open));
            }
            t += 86_400 + gap(rng, 86_400);
            ev.push(p.dispute_event(rng, "charge.dispute.updated", t, &du, &ch, amount, review));
            t += 86_400 * (10 + i64::try_from(rng.below(40)).unwrap_or(0));
            ev.push(p.dispute_event(rng, "charge.dispute.closed", t, &du, &ch, amount, closed));
            if scenario == S::DisputeWon {
                ev.push(p.dispute_event(rng, "charge.dispute.funds_reinstated", t, &du, &ch, amount, closed));
            }
            truth.disputed = true;
            truth.dispute_status = Some(closed.into());
        }
        S::ChargeWithoutIntent => {}
    }
    truth.events = ev.len();
    (ev, truth)
}
