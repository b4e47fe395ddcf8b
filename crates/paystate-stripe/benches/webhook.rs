//! Verify + parse per event (2 KB and 8 KB bodies) and apply per event.
//!
//! `cargo bench -p paystate-stripe --bench webhook`. Figures are per event on one core; compare the
//! groups of one run with each other rather than with another machine.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use paystate_core::{Payment, PaymentEvent};
use paystate_stripe::scenario::{generate, Scenario};
use paystate_stripe::synth::{PaymentSim, Rng};
use paystate_stripe::{map_event, parse_event, Mapped, Webhook, WebhookSecret};

const SECRET: &str = "whsec_bench_0123456789abcdefghijklmnopqrstuv";
const NOW: i64 = 1_718_900_000;

/// A realistic event body padded (with order metadata) to about `size` bytes.
fn body_of_size(size: usize) -> Vec<u8> {
    let mut rng = Rng::new(1);
    let p = PaymentSim::new(&mut rng, NOW);
    let ch = rng.id("ch");
    let refunds: Vec<(String, i64, String)> = (0..3).map(|i| (rng.id("re"), 100 + i, "succeeded".to_owned())).collect();
    let mut ev = if size > 4096 {
        p.charge_event(&mut rng, "charge.refunded", NOW, &ch, "succeeded", true, &refunds, None)
    } else {
        p.intent_event(&mut rng, "payment_intent.succeeded", NOW, "succeeded", Some(&ch), None)
    };
    let mut i = 0;
    while ev.body().len() < size - 40 {
        ev.json["data"]["object"]["metadata"][format!("line_item_{i}")] = format!("sku_{i:06}").into();
        i += 1;
    }
    ev.body()
}

fn verify_parse(c: &mut Criterion) {
    let secret = WebhookSecret::new(SECRET).expect("secret");
    let webhook = Webhook::new(vec![secret.clone()], 300).expect("webhook");
    let mut g = c.benchmark_group("webhook");
    for size in [2048usize, 8192] {
        let body = body_of_size(size);
        let header = secret.header(NOW, &body);
        g.throughput(Throughput::Elements(1));
        let label = format!("{}B", body.len());
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
                    let mut p = Payment::new(evs[0].key.clone());
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
