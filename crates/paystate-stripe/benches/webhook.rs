//! Verify + parse per event (2 KB and 8 KB bodies) and apply per event.
//!
//! `cargo bench -p paystate-stripe --bench webhook`. Figures are per event on one core; compare the
//! groups of one run with each other rather than with another machine.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use paystate_core::{PaymentEvent, PaymentWithHistory};
use paystate_stripe::{map_event, parse_event, Mapped, Webhook, WebhookSecret};
use paystate_testkit::scenario::{generate, Scenario};
use paystate_testkit::synth::{PaymentSim, Rng};

const SECRET: &str = "whsec_bench_0123456789abcdefghijklmnopqrstuv";
const NOW: i64 = 1_718_900_000;

/// Realistic bodies: a `payment_intent.succeeded` (about 2 KB as Stripe sends it) and a
/// `charge.refunded` carrying enough partial refunds to reach about 8 KB.
fn bodies() -> [Vec<u8>; 2] {
    let mut rng = Rng::new(1);
    let p = PaymentSim::new(&mut rng, NOW);
    let ch = rng.id("ch");
    let small = p.intent_event(&mut rng, "payment_intent.succeeded", NOW, "succeeded", Some(&ch), None).body();
    let mut refunds: Vec<(String, i64, String)> = Vec::new();
    let large = loop {
        refunds.push((rng.id("re"), 100, "succeeded".to_owned()));
        let body = p.charge_event(&mut rng, "charge.refunded", NOW, &ch, "succeeded", true, &refunds, None).body();
        if body.len() >= 8000 {
            break body;
        }
    };
    [small, large]
}

fn verify_parse(c: &mut Criterion) {
    let secret = WebhookSecret::new(SECRET).expect("secret");
    let webhook = Webhook::new(vec![secret.clone()], 300).expect("webhook");
    let mut g = c.benchmark_group("webhook");
    for body in bodies() {
        let header = secret.header(NOW, &body);
        g.throughput(Throughput::Elements(1));
        let label = format!("{}B", body.len());
        g.bench_with_input(BenchmarkId::new("verify+parse", &label), &body, |b, body| {
            b.iter(|| black_box(webhook.verify(Some(header.as_bytes()), black_box(body), NOW).expect("valid")))
        });
        g.bench_with_input(BenchmarkId::new("verify+parse+map", &label), &body, |b, body| {
            b.iter(|| {
                let v = webhook.verify(Some(header.as_bytes()), black_box(body), NOW).expect("valid");
                black_box(map_event(v.event()).expect("maps"))
            })
        });
        g.bench_with_input(BenchmarkId::new("verify_only", &label), &body, |b, body| {
            b.iter(|| {
                black_box(webhook.verifier().verify(Some(header.as_bytes()), black_box(body), NOW).expect("valid"))
            })
        });
        g.bench_with_input(BenchmarkId::new("parse_only", &label), &body, |b, body| {
            b.iter(|| black_box(parse_event(black_box(body)).expect("parses")))
        });
    }
    g.finish();
}

fn apply(c: &mut Criterion) {
    let mut rng = Rng::new(3);
    let payments: Vec<Vec<PaymentEvent>> = (0..500)
        .map(|i| {
            let s = Scenario::ALL[i % Scenario::ALL.len()];
            let (events, _) = generate(s, &mut rng, NOW);
            events
                .iter()
                .filter_map(|e| match map_event(&parse_event(&e.body()).expect("parses")).expect("maps") {
                    Mapped::Payment(p) => Some(p),
                    Mapped::NotRelevant(_) => None,
                })
                .collect()
        })
        .collect();
    let n: usize = payments.iter().map(Vec::len).sum();
    let shuffled: Vec<Vec<PaymentEvent>> = payments
        .iter()
        .map(|evs| {
            let mut v = evs.clone();
            v.reverse(); // the worst case: every event arrives before the ones it follows
            v
        })
        .collect();
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(n as u64));
    for (name, set) in [("stripe_order", &payments), ("reversed", &shuffled)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for evs in set {
                    let mut p = PaymentWithHistory::new(evs[0].key.clone());
                    for e in evs {
                        black_box(p.apply(e.clone()).expect("same payment"));
                    }
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, verify_parse, apply);
criterion_main!(benches);
