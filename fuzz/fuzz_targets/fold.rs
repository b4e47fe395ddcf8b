//! The fold under arbitrary deliveries: a realistic payment of any scenario (paystate-testkit, as Stripe
//! emits it, through JSON parsing and mapping), delivered in the order and with the duplicates the input
//! picks, converges to the state of its events in Stripe's order, which is the scenario's truth; amounts
//! stay bounded after every event; every action is emitted once; applying everything again changes nothing.
//! Input: byte 0 the scenario, bytes 1..9 the seed, each further byte an event to deliver (its index
//! modulo the count); events never picked are delivered last, newest first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paystate_core::{Effect, PaymentEvent, PaymentWithHistory};
use paystate_stripe::{map_event, parse_event, Mapped};
use paystate_testkit::scenario::{generate, Scenario};
use paystate_testkit::synth::Rng;
use std::collections::BTreeSet;

fn fold(events: &[PaymentEvent]) -> (PaymentWithHistory, Vec<String>) {
    let mut p = PaymentWithHistory::new(events[0].key.clone());
    let mut actions = Vec::new();
    for ev in events {
        let applied = p.apply(ev.clone()).expect("the payment's own event");
        actions.extend(applied.actions.iter().map(|a| a.id.to_string()));
        let s = &p.payment.state;
        assert!(s.amount_refunded + s.amount_refund_pending <= s.amount_received.max(0), "{s:?}");
    }
    (p, actions)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let scenario = Scenario::ALL[usize::from(data[0]) % Scenario::ALL.len()];
    let seed = u64::from_le_bytes(data[1..9].try_into().expect("8 bytes"));
    let mut rng = Rng::new(seed);
    let t0 = 1_718_900_000 + i64::try_from(seed % 1_000_000).unwrap_or(0);
    let (synth, truth) = generate(scenario, &mut rng, t0);
    let events: Vec<PaymentEvent> = synth
        .iter()
        .map(|e| {
            let body = e.body();
            match map_event(&parse_event(&body).expect("generated body parses")).expect("maps") {
                Mapped::Payment(p) => p,
                Mapped::NotRelevant(why) => panic!("{} not relevant: {why}", e.event_type),
            }
        })
        .collect();
    let (reference, _) = fold(&events);
    assert_eq!(reference.payment.state.lifecycle.as_str(), truth.lifecycle, "{scenario:?}");
    assert_eq!(reference.payment.state.amount_received, truth.amount_received, "{scenario:?}");
    assert_eq!(reference.payment.state.amount_refunded, truth.amount_refunded, "{scenario:?}");

    let mut delivery = Vec::new();
    let mut picked = BTreeSet::new();
    for &b in &data[9..] {
        let i = usize::from(b) % events.len();
        picked.insert(i);
        delivery.push(events[i].clone());
    }
    delivery.extend((0..events.len()).rev().filter(|i| !picked.contains(i)).map(|i| events[i].clone()));
    let (p, actions) = fold(&delivery);
    assert_eq!(p.payment.state, reference.payment.state, "{scenario:?} delivered {:?}", &data[9..]);
    assert_eq!(p.events, reference.events);
    let unique: BTreeSet<&String> = actions.iter().collect();
    assert_eq!(unique.len(), actions.len(), "an action emitted twice");
    let mut again = p.clone();
    for e in &delivery {
        let out = again.apply(e.clone()).expect("same payment");
        assert!(matches!(out.effect, Effect::Duplicate { .. }), "{:?}", out.effect);
        assert!(out.actions.is_empty());
    }
    assert_eq!(again, p);
});
