//! Hand-written cases for the places where Stripe's API eras differ most (docs/API-VERSIONS.md): each
//! event typed from Stripe's documentation of what it sends at that version, each expectation written
//! beside it. Events go through the real path (bytes, envelope, mapping, fold) and every order of them
//! must give the same state.

use paystate_core::{Action, Lifecycle, PaymentEvent, PaymentWithHistory};
use paystate_stripe::{map_event, parse_event, Mapped};
use serde_json::{json, Value};

const PI: &str = "pi_3HandWritten0001";
const CH: &str = "ch_3HandWritten0001";

fn event(id: &str, ty: &str, version: &str, created: i64, object: Value, previous: Option<Value>) -> Value {
    let mut data = json!({ "object": object });
    if let Some(p) = previous {
        data["previous_attributes"] = p;
    }
    json!({"id": id, "object": "event", "api_version": version, "created": created, "data": data,
           "livemode": false, "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null}, "type": ty})
}

fn intent(status: &str, amount: i64, received: i64, latest: Option<&str>) -> Value {
    json!({"id": PI, "object": "payment_intent", "amount": amount, "amount_received": received,
           "currency": "usd", "latest_charge": latest, "metadata": {"order_id": "ord_1"},
           "payment_method": "pm_card_1", "last_payment_error": null, "status": status})
}

#[allow(clippy::too_many_arguments)]
fn charge(
    id: &str,
    status: &str,
    amount: i64,
    captured: i64,
    is_captured: bool,
    paid: bool,
    refunded: i64,
    method: &str,
) -> Value {
    json!({"id": id, "object": "charge", "amount": amount, "amount_captured": captured,
           "amount_refunded": refunded, "captured": is_captured, "currency": "usd", "paid": paid,
           "payment_intent": PI, "payment_method": "pm_card_1", "refunded": refunded >= amount,
           "failure_code": if status == "failed" { json!("card_declined") } else { Value::Null },
           "metadata": {"order_id": "ord_1"}, "payment_method_details": {"type": method}, "status": status})
}

fn refund(id: &str, status: &str, amount: i64, created: i64, reason: Option<&str>) -> Value {
    json!({"id": id, "object": "refund", "amount": amount, "charge": CH, "created": created, "currency": "usd",
           "payment_intent": PI, "reason": reason, "status": status})
}

fn fold(bodies: &[Value]) -> (PaymentWithHistory, Vec<Action>, Vec<PaymentEvent>) {
    let events: Vec<PaymentEvent> = bodies
        .iter()
        .map(|b| {
            let bytes = serde_json::to_vec(b).expect("serialize");
            match map_event(&parse_event(&bytes).expect("parses")).expect("maps") {
                Mapped::Payment(p) => p,
                Mapped::NotRelevant(why) => panic!("not relevant: {why}"),
            }
        })
        .collect();
    let mut p = PaymentWithHistory::new(events[0].key.clone());
    let mut actions = Vec::new();
    for e in &events {
        actions.extend(p.apply(e.clone()).expect("one payment").actions);
    }
    // Every rotation and the reverse order end in the same state.
    for k in 0..events.len() {
        let mut order = events.clone();
        order.rotate_left(k);
        if k % 2 == 1 {
            order.reverse();
        }
        let mut q = PaymentWithHistory::new(events[0].key.clone());
        for e in order {
            q.apply(e).expect("one payment");
        }
        assert_eq!(q.payment.state, p.payment.state, "order {k}");
    }
    (p, actions, events)
}

fn kinds(actions: &[Action], kind: &str) -> usize {
    actions.iter().filter(|a| a.kind.as_str() == kind).count()
}

/// 2024-06-20: no embedded refunds and no `refund.*`: a card refund is only `charge.refunded`, whose
/// `amount_refunded` says how much (and `previous_attributes` what it was before).
#[test]
fn no_expand_refund_known_only_from_the_charge() {
    let v = "2024-06-20";
    let (p, actions, _) = fold(&[
        event("evt_1", "charge.succeeded", v, 100, charge(CH, "succeeded", 5000, 5000, true, true, 0, "card"), None),
        event("evt_2", "payment_intent.succeeded", v, 100, intent("succeeded", 5000, 5000, Some(CH)), None),
        event(
            "evt_3",
            "charge.refunded",
            v,
            900,
            charge(CH, "succeeded", 5000, 5000, true, true, 1200, "card"),
            Some(json!({"amount_refunded": 0})),
        ),
        event(
            "evt_4",
            "charge.refunded",
            v,
            1900,
            charge(CH, "succeeded", 5000, 5000, true, true, 5000, "card"),
            Some(json!({"amount_refunded": 1200, "refunded": false})),
        ),
    ]);
    let s = &p.payment.state;
    assert_eq!((s.amount_received, s.amount_refunded, s.amount_refund_pending), (5000, 5000, 0));
    assert_eq!(s.lifecycle, Lifecycle::Refunded);
    assert_eq!(kinds(&actions, "refund_succeeded"), 2);
    let amounts: Vec<i64> =
        actions.iter().filter(|a| a.kind.as_str() == "refund_succeeded").map(|a| a.amount).collect();
    assert_eq!(amounts, [1200, 3800]);
}

/// Before basil, capturing 6,000 of 10,000 makes Stripe refund the uncaptured 4,000 (a Refund with no
/// reason, created at the capture): no money moves, nothing is refunded to the customer.
#[test]
fn pre_basil_partial_capture_is_no_refund() {
    for v in ["2020-08-27", "2024-06-20", "2024-12-18.acacia"] {
        let mut captured = charge(CH, "succeeded", 10_000, 6000, true, true, 4000, "card");
        let mut bodies = vec![
            event(
                "evt_1",
                "charge.succeeded",
                v,
                100,
                charge(CH, "succeeded", 10_000, 0, false, true, 0, "card"),
                None,
            ),
            event(
                "evt_2",
                "payment_intent.amount_capturable_updated",
                v,
                100,
                intent("requires_capture", 10_000, 0, Some(CH)),
                None,
            ),
            event("evt_5", "payment_intent.succeeded", v, 500, intent("succeeded", 10_000, 6000, Some(CH)), None),
        ];
        let rest = refund("re_rest", "succeeded", 4000, 500, None);
        if v == "2020-08-27" {
            captured["refunds"] = json!({"object": "list", "data": [rest.clone()], "has_more": false});
        }
        if v == "2024-12-18.acacia" {
            bodies.push(event("evt_3", "refund.created", v, 500, rest, None));
        }
        bodies.push(event(
            "evt_4",
            "charge.captured",
            v,
            500,
            captured,
            Some(json!({"amount_captured": 0, "captured": false, "amount_refunded": 0})),
        ));
        let (p, actions, _) = fold(&bodies);
        let s = &p.payment.state;
        assert_eq!((s.amount_received, s.amount_refunded, s.amount_refund_pending), (6000, 0, 0), "{v}");
        assert_eq!(s.lifecycle, Lifecycle::Succeeded, "{v}");
        assert_eq!(kinds(&actions, "refund_succeeded"), 0, "{v}");
        assert_eq!(kinds(&actions, "fulfill_order"), 1, "{v}");
    }
}

/// Before basil, releasing an authorisation refunds the uncaptured charge in full (`refunded: true`,
/// `captured: false`): the payment is canceled, nothing was received or returned.
#[test]
fn released_authorisation_is_no_refund() {
    let v = "2024-12-18.acacia";
    let (p, actions, _) = fold(&[
        event("evt_1", "charge.succeeded", v, 100, charge(CH, "succeeded", 7000, 0, false, true, 0, "card"), None),
        event("evt_2", "payment_intent.canceled", v, 400, intent("canceled", 7000, 0, Some(CH)), None),
        event("evt_3", "refund.created", v, 400, refund("re_release", "succeeded", 7000, 400, None), None),
        event(
            "evt_4",
            "charge.refunded",
            v,
            400,
            charge(CH, "succeeded", 7000, 0, false, true, 7000, "card"),
            Some(json!({"amount_refunded": 0})),
        ),
    ]);
    let s = &p.payment.state;
    assert_eq!((s.amount_received, s.amount_refunded, s.lifecycle), (0, 0, Lifecycle::Canceled));
    assert_eq!(kinds(&actions, "refund_succeeded"), 0);
    assert_eq!(kinds(&actions, "payment_canceled"), 1);
}

/// A bank debit's pending charge says `captured: true` and `amount_captured` = amount with `paid: false`:
/// nothing is received while it is pending, nor after it failed.
#[test]
fn bank_debit_receives_nothing_until_paid() {
    let v = "2025-10-29.clover";
    let py = "py_3HandWritten0001";
    let pending = [
        event(
            "evt_1",
            "charge.pending",
            v,
            100,
            charge(py, "pending", 3000, 3000, true, false, 0, "us_bank_account"),
            None,
        ),
        event("evt_2", "payment_intent.processing", v, 100, intent("processing", 3000, 0, Some(py)), None),
    ];
    let (p, _, _) = fold(&pending);
    assert_eq!((p.payment.state.amount_received, p.payment.state.lifecycle), (0, Lifecycle::Processing));
    let mut failed = pending.to_vec();
    failed.push(event(
        "evt_3",
        "charge.failed",
        v,
        400_000,
        charge(py, "failed", 3000, 3000, true, false, 0, "us_bank_account"),
        None,
    ));
    let (p, _, _) = fold(&failed);
    assert_eq!(
        (p.payment.state.amount_received, p.payment.state.lifecycle, p.payment.state.failure_count),
        (0, Lifecycle::Failed, 1)
    );
    let mut paid = pending.to_vec();
    paid.push(event(
        "evt_4",
        "charge.succeeded",
        v,
        400_000,
        charge(py, "succeeded", 3000, 3000, true, true, 0, "us_bank_account"),
        None,
    ));
    let (p, _, _) = fold(&paid);
    assert_eq!((p.payment.state.amount_received, p.payment.state.lifecycle), (3000, Lifecycle::Succeeded));
}

/// A decline, then at once another card that needs 3-D Secure (same second); later a `charge.updated`
/// about the declined charge: the payment waits for the customer, it has not failed.
#[test]
fn same_second_retry_and_a_late_update_of_the_declined_charge() {
    let v = "2024-06-20";
    let declined = charge(CH, "failed", 2500, 0, false, false, 0, "card");
    let mut failed_intent = intent("requires_payment_method", 2500, 0, Some(CH));
    failed_intent["last_payment_error"] = json!({"code": "card_declined", "charge": CH});
    let (p, _, _) = fold(&[
        event("evt_1", "charge.failed", v, 100, declined.clone(), None),
        event("evt_2", "payment_intent.payment_failed", v, 100, failed_intent, None),
        event("evt_3", "payment_intent.requires_action", v, 100, intent("requires_action", 2500, 0, Some(CH)), None),
        event("evt_4", "charge.updated", v, 5000, declined, Some(json!({"description": null}))),
    ]);
    assert_eq!(p.payment.state.lifecycle, Lifecycle::RequiresAction);
    assert_eq!(p.payment.state.failure_count, 1);
}

/// A lost chargeback: funds withdrawn when it opened, never reinstated.
#[test]
fn lost_dispute_keeps_its_funds() {
    let v = "2024-06-20";
    let du = |status: &str| {
        json!({"id": "du_hand1", "object": "dispute", "amount": 4000, "charge": CH, "currency": "usd",
               "payment_intent": PI, "reason": "fraudulent", "status": status})
    };
    let (p, actions, _) = fold(&[
        event("evt_1", "payment_intent.succeeded", v, 100, intent("succeeded", 4000, 4000, Some(CH)), None),
        event("evt_2", "charge.dispute.created", v, 9000, du("needs_response"), None),
        event("evt_3", "charge.dispute.funds_withdrawn", v, 9000, du("needs_response"), None),
        event("evt_4", "charge.dispute.closed", v, 99_000, du("lost"), Some(json!({"status": "under_review"}))),
    ]);
    let s = &p.payment.state;
    assert_eq!((s.amount_disputed, s.amount_lost_to_disputes), (4000, 4000));
    assert_eq!(kinds(&actions, "dispute_closed"), 1);
}
