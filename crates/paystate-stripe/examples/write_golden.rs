//! Writes the golden scenario files `tests/golden/<scenario>.json` and prints each timeline.
//!
//! The events come from `paystate_stripe::scenario` with a fixed seed. The expectations come from the
//! scenario's `Truth` (written from Stripe's documented behaviour) and from the tables below, written by
//! hand from the printed timelines: never from the state machine's own output.
//!
//! `cargo run -p paystate-stripe --example write_golden -- tests/golden`

use paystate_stripe::scenario::{generate, Scenario};
use paystate_stripe::synth::Rng;
use serde_json::json;

/// Lifecycle after each event in causal order, and the actions emitted when the events arrive in
/// Stripe's order.
fn expectations(s: Scenario) -> (&'static [&'static str], &'static [&'static str]) {
    use Scenario as S;
    const PAID: &[&str] = &["created", "succeeded", "succeeded"];
    match s {
        S::CardSuccess | S::ConnectSuccess => (PAID, &["fulfill_order"]),
        S::DeclineThenSuccess => {
            (&["created", "failed", "failed", "succeeded", "succeeded"], &["notify_payment_failed", "fulfill_order"])
        }
        S::DeclineFinal => {
            (&["created", "failed", "failed", "failed", "failed"], &["notify_payment_failed", "notify_payment_failed"])
        }
        S::ThreeDsSuccess => {
            (&["created", "requires_action", "succeeded", "succeeded"], &["request_customer_action", "fulfill_order"])
        }
        S::ThreeDsAbandoned => (&["created", "requires_action"], &["request_customer_action"]),
        S::BankDebitSucceeded => {
            (&["created", "processing", "processing", "succeeded", "succeeded"], &["fulfill_order"])
        }
        S::BankDebitFailed => {
            (&["created", "processing", "processing", "failed", "failed"], &["notify_payment_failed"])
        }
        S::Canceled => (&["created", "canceled"], &["payment_canceled"]),
        S::ManualCaptureCaptured => {
            (&["created", "requires_capture", "requires_capture", "succeeded", "succeeded"], &["fulfill_order"])
        }
        S::ManualCaptureReleased => {
            (&["created", "requires_capture", "requires_capture", "canceled", "canceled"], &["payment_canceled"])
        }
        S::FullRefund => (
            &["created", "succeeded", "succeeded", "refunded", "refunded", "refunded"],
            &["fulfill_order", "refund_succeeded"],
        ),
        S::PartialRefunds => (
            &[
                "created",
                "succeeded",
                "succeeded",
                "partially_refunded",
                "partially_refunded",
                "partially_refunded",
                "partially_refunded",
                "partially_refunded",
                "partially_refunded",
            ],
            &["fulfill_order", "refund_succeeded", "refund_succeeded"],
        ),
        S::RefundFailedThenRetried => (
            &["created", "succeeded", "succeeded", "succeeded", "succeeded", "refunded", "refunded", "refunded"],
            &["fulfill_order", "refund_failed", "refund_succeeded"],
        ),
        S::DisputeWon => (
            &["created", "succeeded", "succeeded", "succeeded", "succeeded", "succeeded", "succeeded", "succeeded"],
            &["fulfill_order", "dispute_opened", "dispute_closed"],
        ),
        S::DisputeLost => (
            &["created", "succeeded", "succeeded", "succeeded", "succeeded", "succeeded", "succeeded"],
            &["fulfill_order", "dispute_opened", "dispute_closed"],
        ),
        S::InquiryClosed => (
            &["created", "succeeded", "succeeded", "succeeded", "succeeded", "succeeded"],
            &["fulfill_order", "dispute_opened", "dispute_closed"],
        ),
        S::ChargeWithoutIntent => (&["succeeded"], &["fulfill_order"]),
    }
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "tests/golden".into());
    std::fs::create_dir_all(&dir)?;
    for (i, s) in Scenario::ALL.into_iter().enumerate() {
        let mut rng = Rng::new(42 + i as u64);
        let t0 = 1_718_900_000;
        let (events, truth) = generate(s, &mut rng, t0);
        let name = serde_json::to_value(s)?.as_str().unwrap_or_default().to_owned();
        println!("{name}");
        for e in &events {
            let status = e.json["data"]["object"]["status"].as_str().unwrap_or("-");
            println!("  +{:<8} {:<40} {:<24} {}", e.created - t0, e.event_type, status, e.id);
        }
        let (history, actions) = expectations(s);
        let doc = json!({
            "scenario": name,
            "description": format!("{s:?}: events in the order Stripe emits them"),
            "events": events.iter().map(|e| &e.json).collect::<Vec<_>>(),
            "expect": {
                "id": truth.id, "account": truth.account, "lifecycle": truth.lifecycle, "status": truth.status,
                "amount": truth.amount, "amount_received": truth.amount_received,
                "amount_refunded": truth.amount_refunded, "disputed": truth.disputed,
                "dispute_status": truth.dispute_status, "failure_count": truth.failure_count,
                "history": history, "actions": actions,
            }
        });
        std::fs::write(format!("{dir}/{name}.json"), serde_json::to_string_pretty(&doc)? + "\n")?;
    }
    Ok(())
}
