//! Convergence of the state machine over *arbitrary* event sets, not only realistic ones: random
//! statuses of random objects, crowded into a few seconds so that ties are the rule. Whatever Stripe
//! sends, the state must depend only on the set of events.

use paystate_core::{
    ActionId, ApiEra, ApplyError, ChargeObservation, ChargeStatus, DisputeFunds, DisputeObservation, DisputeStatus,
    Effect, EventId, EventList, EventPosition, Failure, FraudWarningObservation, History, IntentObservation,
    IntentStatus, Observation, Payment, PaymentEvent, PaymentKey, PaymentWithHistory, RefundObservation, RefundStatus,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000)
}

const KEY: &str = "pi_3Pconv";

fn intent_status() -> impl Strategy<Value = IntentStatus> {
    prop_oneof![
        Just(IntentStatus::RequiresPaymentMethod),
        Just(IntentStatus::RequiresConfirmation),
        Just(IntentStatus::RequiresAction),
        Just(IntentStatus::Processing),
        Just(IntentStatus::RequiresCapture),
        Just(IntentStatus::Canceled),
        Just(IntentStatus::Succeeded),
    ]
}

fn observation() -> impl Strategy<Value = (String, Observation)> {
    let charge_id = prop_oneof![Just("ch_a"), Just("ch_b"), Just("ch_c")];
    prop_oneof![
        (intent_status(), any::<bool>(), charge_id.clone(), 0i64..3, any::<bool>()).prop_map(
            |(status, failed, ch, pm, meta)| {
                let failure =
                    failed.then(|| Failure { code: Some("card_declined".into()), charge: Some(ch.to_owned()) });
                let received = if status == IntentStatus::Succeeded { 1000 } else { 0 };
                let mut metadata = BTreeMap::new();
                metadata.insert("order_id".to_owned(), if meta { "ord_1".to_owned() } else { "ord_2".to_owned() });
                let ty = match (status, failed) {
                    (_, true) => "payment_intent.payment_failed",
                    (IntentStatus::Succeeded, _) => "payment_intent.succeeded",
                    (IntentStatus::Canceled, _) => "payment_intent.canceled",
                    (IntentStatus::RequiresAction, _) => "payment_intent.requires_action",
                    (IntentStatus::Processing, _) => "payment_intent.processing",
                    (IntentStatus::RequiresCapture, _) => "payment_intent.amount_capturable_updated",
                    _ => "payment_intent.created",
                };
                (
                    ty.to_owned(),
                    Observation::PaymentIntent(IntentObservation {
                        id: KEY.into(),
                        status,
                        amount: 1000,
                        amount_received: received,
                        currency: "eur".into(),
                        customer: Some("cus_1".into()),
                        metadata,
                        latest_charge: Some(ch.to_owned()),
                        payment_method: Some(format!("pm_{pm}")),
                        failure,
                    }),
                )
            }
        ),
        (
            (
                charge_id,
                0u8..3,
                any::<bool>(),
                any::<bool>(),
                proptest::collection::vec((0u8..3, 0u8..5, 1i64..700), 0..3)
            ),
            (0i64..1200, 0i64..1001, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>())
        )
            .prop_map(
                |(
                    (id, st, captured, refunded, refunds),
                    (amount_refunded, amount_captured, partial, async_method, listed, updated),
                )| {
                    let status =
                        [ChargeStatus::Pending, ChargeStatus::Succeeded, ChargeStatus::Failed][usize::from(st)];
                    let ty = match status {
                        _ if updated => "charge.updated",
                        ChargeStatus::Pending => "charge.pending",
                        ChargeStatus::Failed => "charge.failed",
                        ChargeStatus::Succeeded if refunded => "charge.refunded",
                        ChargeStatus::Succeeded => "charge.succeeded",
                    };
                    let captured_amount = if partial { amount_captured } else { 1000 };
                    (
                        ty.to_owned(),
                        Observation::Charge(ChargeObservation {
                            id: id.to_owned(),
                            status,
                            amount: 1000,
                            amount_captured: if captured && status != ChargeStatus::Failed {
                                captured_amount
                            } else {
                                0
                            },
                            captured,
                            paid: status == ChargeStatus::Succeeded,
                            amount_refunded,
                            previous_amount_refunded: (amount_refunded % 3 == 0).then_some(amount_refunded / 2),
                            refunded,
                            expired: false,
                            currency: "eur".into(),
                            payment_intent: Some(KEY.into()),
                            failure_code: (status == ChargeStatus::Failed).then(|| "do_not_honor".to_owned()),
                            customer: None,
                            metadata: BTreeMap::new(),
                            async_method,
                            refunds_listed: listed,
                            refunds: if listed {
                                refunds.into_iter().map(|(r, s, amount)| refund(r, s, amount)).collect()
                            } else {
                                Vec::new()
                            },
                        }),
                    )
                }
            ),
        (0u8..3, 0u8..5, 1i64..700)
            .prop_map(|(r, s, amount)| ("refund.updated".to_owned(), Observation::Refund(refund(r, s, amount)))),
        (0u8..2, any::<bool>()).prop_map(|(w, actionable)| (
            "radar.early_fraud_warning.updated".to_owned(),
            Observation::FraudWarning(FraudWarningObservation {
                id: format!("issfr_{w}"),
                fraud_type: Some("made_with_stolen_card".into()),
                actionable,
                charge: Some("ch_a".into()),
            })
        )),
        (0u8..2, 0u8..8, 0u8..3).prop_map(|(d, s, funds)| {
            let status = [
                DisputeStatus::WarningNeedsResponse,
                DisputeStatus::WarningUnderReview,
                DisputeStatus::WarningClosed,
                DisputeStatus::NeedsResponse,
                DisputeStatus::UnderReview,
                DisputeStatus::Won,
                DisputeStatus::Lost,
                DisputeStatus::Prevented,
            ][usize::from(s)];
            (
                "charge.dispute.updated".to_owned(),
                Observation::Dispute(DisputeObservation {
                    id: format!("du_{d}"),
                    status,
                    amount: 1000,
                    currency: "eur".into(),
                    reason: Some("fraudulent".into()),
                    funds: [None, Some(DisputeFunds::Withdrawn), Some(DisputeFunds::Reinstated)][usize::from(funds)],
                }),
            )
        }),
    ]
}

fn refund(r: u8, s: u8, amount: i64) -> RefundObservation {
    let status = [
        RefundStatus::Pending,
        RefundStatus::RequiresAction,
        RefundStatus::Succeeded,
        RefundStatus::Failed,
        RefundStatus::Canceled,
    ][usize::from(s)];
    let charge = ["ch_a", "ch_b", "ch_c"][usize::from(r)];
    RefundObservation {
        id: format!("re_{r}"),
        status,
        amount,
        currency: "eur".into(),
        charge: Some(charge.into()),
        created: 1_700_000_000 + i64::from(s % 3),
    }
}

/// Distinct events (distinct ids), crowded into three seconds.
fn event_set() -> impl Strategy<Value = Vec<PaymentEvent>> {
    proptest::collection::vec((0i64..3, 0u8..4, observation()), 1..14).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (dt, era, (ty, observation)))| PaymentEvent {
                era: [ApiEra::Legacy, ApiEra::NoExpand, ApiEra::Acacia, ApiEra::Basil][usize::from(era)],
                id: EventId::new(format!("evt_{i:03}")),
                event_type: ty,
                created: 1_700_000_000 + dt,
                livemode: false,
                key: PaymentKey::platform(KEY),
                observation,
            })
            .collect()
    })
}

/// Applies in order; checks per-step invariants; returns the payment and the emitted action ids.
fn run(events: &[PaymentEvent]) -> (PaymentWithHistory, Vec<ActionId>) {
    let mut p = PaymentWithHistory::new(PaymentKey::platform(KEY));
    let mut ids = Vec::new();
    for e in events {
        let out = p.apply(e.clone()).expect("same key");
        ids.extend(out.actions.into_iter().map(|a| a.id));
        let s = p.state();
        assert!(s.amount_refunded <= s.amount_received, "refunded above received");
        assert!(s.amount_refunded + s.amount_refund_pending <= s.amount_received, "refunded + pending above received");
        assert!(s.amount_refund_pending >= 0 && s.amount_refunded >= 0);
        assert!(p.events.events().windows(2).all(|w| EventPosition::of(&w[0]) < EventPosition::of(&w[1])));
        assert_eq!(s.events_applied, p.events.events().len() as u64, "events_applied is the history's length");
    }
    (p, ids)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn any_order_any_duplicates_same_state(
        events in event_set(),
        order in Just(()).prop_perturb(|_, mut rng| rng.next_u64()),
        dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let (reference, _) = run(&events);

        let mut delivery = events.clone();
        for d in &dups {
            delivery.push(events[d.index(events.len())].clone());
        }
        // Fisher-Yates with a seed proptest controls.
        let mut x = order | 1;
        for i in (1..delivery.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            delivery.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let (p, emitted) = run(&delivery);
        prop_assert_eq!(p.state(), reference.state());
        // The history kept outside the state converges too.
        prop_assert_eq!(&p.events, &reference.events);

        // No action id twice, and the ledger holds exactly what was emitted.
        let unique: BTreeSet<&ActionId> = emitted.iter().collect();
        prop_assert_eq!(unique.len(), emitted.len());
        prop_assert_eq!(unique.into_iter().cloned().collect::<BTreeSet<_>>(), p.payment.emitted.clone());

        // Idempotence.
        let mut again = p.clone();
        for e in &events {
            let out = again.apply(e.clone()).expect("same key");
            prop_assert!(matches!(out.effect, Effect::Duplicate { .. }), "{:?}", out.effect);
            prop_assert!(out.actions.is_empty());
        }
        prop_assert_eq!(&again, &p);

        // Time travel to the last second is the state itself.
        let last = events.iter().map(|e| e.created).max().unwrap_or_default();
        prop_assert_eq!(&p.as_of(last), p.state());

        // Delivered in causal order, no event needs the whole history: only a late event refolds.
        let mut counting = Counting::default();
        let mut q = Payment::new(PaymentKey::platform(KEY));
        for e in p.events.events() {
            q.apply(e.clone(), &mut counting).expect("same key");
        }
        prop_assert_eq!(counting.all_calls, 0);
        prop_assert_eq!(&q.state, p.state());
    }
}

/// An in-memory history that counts how often the whole of it was read.
#[derive(Default)]
struct Counting {
    inner: EventList,
    all_calls: usize,
}

impl History for Counting {
    type Error = std::convert::Infallible;
    fn in_second(&mut self, second: i64) -> Result<Vec<PaymentEvent>, Self::Error> {
        self.inner.in_second(second)
    }
    fn all(&mut self) -> Result<Vec<PaymentEvent>, Self::Error> {
        self.all_calls += 1;
        self.inner.all()
    }
    fn insert(&mut self, ev: PaymentEvent) -> Result<(), Self::Error> {
        self.inner.insert(ev)
    }
    fn remove(&mut self, ev: &PaymentEvent) -> Result<(), Self::Error> {
        self.inner.remove(ev)
    }
}

#[test]
fn terminal_status_absorbs_whatever_the_second() {
    let mk = |id: &str, t: i64, status: IntentStatus| PaymentEvent {
        id: EventId::new(id),
        event_type: format!("payment_intent.{}", status.as_str()),
        created: t,
        livemode: false,
        key: PaymentKey::platform(KEY),
        era: ApiEra::Basil,
        observation: Observation::PaymentIntent(IntentObservation {
            id: KEY.into(),
            status,
            amount: 500,
            amount_received: if status == IntentStatus::Succeeded { 500 } else { 0 },
            currency: "usd".into(),
            customer: None,
            metadata: BTreeMap::new(),
            latest_charge: None,
            payment_method: None,
            failure: None,
        }),
    };
    // A stale `processing` stamped a second *after* success (clock skew between Stripe's services).
    let events = [mk("evt_b", 10, IntentStatus::Succeeded), mk("evt_a", 11, IntentStatus::Processing)];
    for order in [[0, 1], [1, 0]] {
        let (p, _) = run(&[events[order[0]].clone(), events[order[1]].clone()]);
        assert_eq!(p.state().status, Some(IntentStatus::Succeeded));
        assert_eq!(p.state().lifecycle, paystate_core::Lifecycle::Succeeded);
    }
}

#[test]
fn wrong_payment_is_an_error_not_a_merge() {
    let mut p = PaymentWithHistory::new(PaymentKey::connected("acct_1", KEY));
    let ev = PaymentEvent {
        id: EventId::new("evt_x"),
        event_type: "refund.updated".into(),
        created: 1,
        livemode: false,
        key: PaymentKey::platform(KEY),
        era: ApiEra::Basil,
        observation: Observation::Refund(refund(0, 2, 100)),
    };
    assert!(matches!(p.apply(ev), Err(ApplyError::WrongPayment { .. })));
    assert!(p.events.events().is_empty());
    assert_eq!(p.state().events_applied, 0);
}
