//! Realistic lifecycles, end to end through JSON: generate a payment's events as Stripe emits them, parse
//! and map the bodies, deliver them in many orders with duplicates and twins, and check that the state is
//! always the same and equals the scenario's independently written truth, and that actions are sound.

use paystate_core::{ActionKind, Applied, Effect, Lifecycle, PaymentEvent, PaymentState, PaymentWithHistory};
use paystate_stripe::{map_event, parse_event, Mapped};
use paystate_testkit::scenario::{generate_with, Scenario, Truth, CHECKED_ACTIONS};
use paystate_testkit::synth::{Rng, Versions};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000)
}

/// One version of every era, and upgrades across each era boundary while payments are under way.
fn versions(pick: u64, t0: i64) -> Versions {
    const ONE: [&str; 5] = ["2020-08-27", "2022-11-15", "2024-06-20", "2024-12-18.acacia", "2025-10-29.clover"];
    const UP: [(&str, &str); 4] = [
        ("2020-08-27", "2024-06-20"),
        ("2024-06-20", "2024-12-18.acacia"),
        ("2024-06-20", "2025-03-31.basil"),
        ("2024-12-18.acacia", "2025-10-29.clover"),
    ];
    let i = usize::try_from(pick % 9).unwrap_or(0);
    match ONE.get(i) {
        Some(v) => Versions::single(v),
        None => {
            let (a, b) = UP[i - ONE.len()];
            // Somewhere in the first days of the payment: settlements, refunds and disputes fall on either side.
            let at = t0 + i64::try_from((pick / 9) % (5 * 86_400)).unwrap_or(0);
            Versions { before: a.into(), upgrade: Some((at, b.into())) }
        }
    }
}

fn payment_events(scenario: Scenario, seed: u64) -> (Vec<PaymentEvent>, Truth) {
    let mut rng = Rng::new(seed);
    let t0 = 1_718_900_000 + i64::try_from(seed % 1_000_000).unwrap_or(0);
    let (events, truth) = generate_with(scenario, &mut rng, t0, &versions(seed.rotate_left(17), t0));
    let mapped = events
        .iter()
        .map(|e| {
            let body = e.body();
            let parsed = parse_event(&body).expect("generated body parses");
            match map_event(&parsed).expect("generated event maps") {
                Mapped::Payment(p) => p,
                Mapped::NotRelevant(why) => panic!("{} not relevant: {why}", e.event_type),
            }
        })
        .collect();
    (mapped, truth)
}

/// Applies `events` in order; returns the payment and every emitted action kind by subject.
fn run(events: &[PaymentEvent]) -> (PaymentWithHistory, Vec<(ActionKind, String, String)>) {
    let mut p = PaymentWithHistory::new(events[0].key.clone());
    let mut actions = Vec::new();
    for ev in events {
        let Applied { actions: new, .. } = p.apply(ev.clone()).expect("same payment");
        for a in new {
            actions.push((a.kind, a.subject.clone(), a.id.to_string()));
        }
        let s = &p.payment.state;
        assert!(s.amount_refunded <= s.amount_received.max(0), "refunded above received: {s:?}");
        assert!(s.amount_refunded + s.amount_refund_pending <= s.amount_received.max(0), "pending too: {s:?}");
    }
    // Stripe's time moves on past every grace period: the failures still worth it are announced.
    let grace = paystate_core::DEFAULT_FAILURE_GRACE_SECS;
    let end = events.iter().map(|e| e.created).max().unwrap_or_default() + grace;
    assert!(p.payment.next_deadline(grace).is_none_or(|d| d <= end));
    for a in p.payment.advance(end, grace) {
        actions.push((a.kind, a.subject.clone(), a.id.to_string()));
    }
    assert_eq!(p.payment.next_deadline(grace), None, "nothing left to announce");
    (p, actions)
}

fn check_truth(s: &PaymentState, t: &Truth) {
    let what = format!("{:?} at {}", t.scenario, t.api_version);
    assert_eq!(s.key.payment.as_str(), t.id, "{what}");
    assert_eq!(s.key.account.as_ref().map(|a| a.as_str().to_owned()), t.account);
    assert_eq!(s.lifecycle.as_str(), t.lifecycle, "{what}");
    assert_eq!(s.status.map(|x| x.as_str()), Some(t.status.as_str()), "{what}");
    assert_eq!(s.amount, t.amount);
    assert_eq!(s.amount_received, t.amount_received, "{what}");
    assert_eq!(s.amount_refunded, t.amount_refunded, "{what}: {:?}", s.refunds);
    assert_eq!(s.disputed, t.disputed);
    assert_eq!(s.dispute_status.map(|d| format!("{d:?}")), t.dispute_status.as_ref().map(|d| to_camel(d)));
    assert_eq!(s.failure_count, t.failure_count, "{what}");
    assert_eq!(s.events_applied, t.events as u64, "{what}");
    assert_eq!(s.amount_refund_pending, t.amount_refund_pending, "{what}");
    assert_eq!(s.amount_disputed, t.amount_disputed, "{what}");
    assert_eq!(s.amount_lost_to_disputes, t.amount_lost_to_disputes, "{what}");
    assert_eq!(s.early_fraud_warning.as_ref().map(|w| w.id.clone()), t.early_fraud_warning, "{what}");
}

fn to_camel(s: &str) -> String {
    s.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect()
}

fn count(actions: &[(ActionKind, String, String)], kind: ActionKind) -> usize {
    actions.iter().filter(|a| a.0 == kind).count()
}

fn check_actions(actions: &[(ActionKind, String, String)], s: &PaymentState, t: &Truth, chronological: bool) {
    let ids: BTreeSet<&str> = actions.iter().map(|a| a.2.as_str()).collect();
    assert_eq!(ids.len(), actions.len(), "an action id was emitted twice: {actions:?}");
    let succeeded = matches!(s.lifecycle, Lifecycle::Succeeded | Lifecycle::PartiallyRefunded | Lifecycle::Refunded);
    assert_eq!(count(actions, ActionKind::FulfillOrder), usize::from(succeeded), "{:?}", t.scenario);
    assert_eq!(count(actions, ActionKind::PaymentCanceled), usize::from(s.lifecycle == Lifecycle::Canceled));
    assert!(count(actions, ActionKind::NotifyPaymentFailed) <= t.failure_count as usize);
    let what = format!("{:?} at {}", t.scenario, t.api_version);
    for kind in CHECKED_ACTIONS {
        let got = actions.iter().filter(|a| a.0.as_str() == kind).count();
        let want = t.actions.get(kind).copied().unwrap_or(0) as usize;
        // A card refund reported `succeeded` and failed days later: delivered after its failure, the
        // success is never announced.
        let failed_first = t.actions.get("refund_failed").copied().unwrap_or(0) as usize;
        if kind == "refund_succeeded" && !chronological {
            assert!(got <= want && got + failed_first >= want, "{what}: {kind} {got} of {want}");
        } else {
            assert_eq!(got, want, "{what}: {kind}");
        }
    }
    // Stripe's own refunds are never announced.
    for (kind, subject, _) in actions {
        if matches!(kind, ActionKind::RefundSucceeded | ActionKind::RefundFailed) {
            assert!(s.refunds.get(subject).is_none_or(|r| r.customer), "{what}: own refund {subject} announced");
        }
    }
    let asked = count(actions, ActionKind::RequestCustomerAction);
    match t.scenario {
        Scenario::ThreeDsAbandoned | Scenario::DeclineThenActionSameSecond => assert_eq!(asked, 1, "{what}"),
        Scenario::ThreeDsSuccess if chronological => assert_eq!(asked, 1),
        Scenario::ThreeDsSuccess => assert!(asked <= 1),
        _ => assert_eq!(asked, 0, "{:?}", t.scenario),
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = usize::try_from(rng.below(i as u64 + 1)).unwrap_or(0);
        v.swap(i, j);
    }
}

#[test]
fn every_scenario_in_stripe_order_matches_its_truth() {
    for (i, scenario) in Scenario::ALL.into_iter().enumerate() {
        for seed in 0..90u64 {
            let (events, truth) = payment_events(scenario, seed * 100 + i as u64);
            let (p, actions) = run(&events);
            check_truth(&p.payment.state, &truth);
            check_actions(&actions, &p.payment.state, &truth, true);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Any order, any duplicates, any twins: the same state, the truth, sound actions, idempotence.
    #[test]
    fn converges_whatever_the_delivery(
        scenario_ix in 0usize..Scenario::ALL.len(),
        seed in any::<u64>(),
        order_seed in any::<u64>(),
        dup_mask in any::<u32>(),
        twin_ix in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let scenario = Scenario::ALL[scenario_ix];
        let (events, truth) = payment_events(scenario, seed);
        let (reference, _) = run(&events);
        check_truth(&reference.payment.state, &truth);

        let mut rng = Rng::new(order_seed);
        let mut delivery: Vec<PaymentEvent> = events.clone();
        for (i, e) in events.iter().enumerate() {
            if dup_mask & (1 << (i % 32)) != 0 {
                delivery.push(e.clone());
            }
        }
        // A twin: the same change sent again as another event in the same second.
        if let Some(ix) = twin_ix {
            let mut twin = events[ix.index(events.len())].clone();
            twin.id = paystate_core::EventId::new(format!("{}_twin", twin.id));
            delivery.push(twin);
        }
        shuffle(&mut delivery, &mut rng);
        let (p, actions) = run(&delivery);
        // Twins may swap which event id represents the change; everything else is identical.
        let untwin = |id: &paystate_core::EventId| paystate_core::EventId::new(id.as_str().trim_end_matches("_twin"));
        let normalize = |s: &PaymentState| {
            let mut s = s.clone();
            if let Some(last) = &mut s.last_event { last.id = untwin(&last.id); }
            s
        };
        let events_of = |p: &PaymentWithHistory| -> Vec<PaymentEvent> {
            p.events.events().iter().cloned().map(|mut e| { e.id = untwin(&e.id); e }).collect()
        };
        if twin_ix.is_none() {
            prop_assert_eq!(&p.payment.state, &reference.payment.state);
            prop_assert_eq!(&p.events, &reference.events);
        } else {
            prop_assert_eq!(normalize(&p.payment.state), normalize(&reference.payment.state));
            prop_assert_eq!(events_of(&p), events_of(&reference));
        }
        check_truth(&p.payment.state, &truth);
        check_actions(&actions, &p.payment.state, &truth, false);
        // The ledger holds only ids; naming them back (kind and subject) gives the actions emitted.
        let mut named: Vec<(ActionKind, String, String)> = p
            .emitted_actions()
            .into_iter()
            .map(|a| (a.kind.expect("every emitted action is named"), a.subject.unwrap_or_default(), a.id.to_string()))
            .collect();
        let mut emitted = actions.clone();
        named.sort();
        emitted.sort();
        prop_assert_eq!(named, emitted);

        // Idempotence: everything again changes nothing and emits nothing.
        let mut again = p.clone();
        for e in &delivery {
            let out = again.apply(e.clone()).expect("same payment");
            prop_assert!(matches!(out.effect, Effect::Duplicate { .. }), "{:?}", out.effect);
            prop_assert!(out.actions.is_empty());
        }
        prop_assert_eq!(&again, &p);
    }
}

/// The lifecycle after each event of the history equals the lifecycle of the fold of its prefix.
#[test]
fn history_lifecycles_are_prefix_folds() {
    let mut by_scenario: BTreeMap<String, usize> = BTreeMap::new();
    for (i, scenario) in Scenario::ALL.into_iter().enumerate() {
        let (events, _) = payment_events(scenario, 9_000 + i as u64);
        let (p, _) = run(&events);
        let timeline = p.timeline();
        assert_eq!(timeline.len(), events.len(), "{scenario:?}");
        for (k, entry) in timeline.iter().enumerate() {
            let (prefix, _) = run(&p.events.events()[..=k]);
            assert_eq!(prefix.payment.state.lifecycle, entry.lifecycle, "{scenario:?} entry {k}");
        }
        *by_scenario.entry(format!("{scenario:?}")).or_default() += timeline.len();
    }
    assert_eq!(by_scenario.len(), Scenario::ALL.len());
}
