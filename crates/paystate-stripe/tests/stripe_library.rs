//! Cross-check against Stripe's official Python library (PyPI `stripe`, installed by `tests/run`).
//!
//! Stripe's library signs; both it and paystate verify the same deliveries; the verdicts must agree. The
//! one deliberate difference is asserted explicitly: Stripe's library accepts a timestamp from the future,
//! paystate refuses it beyond the tolerance.
//!
//! This test needs `python3` with `stripe`. It fails (never skips) when they are missing: run `tests/run`.

use paystate_stripe::{Webhook, WebhookError, WebhookSecret};
use paystate_testkit::scenario::{generate, Scenario};
use paystate_testkit::synth::Rng;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn oracle(requests: &[Value]) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/stripe_oracle.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python} ({e}); run tests/run, which installs python3 and stripe"));
    let input = serde_json::to_vec(requests).expect("requests serialize");
    child.stdin.take().expect("stdin").write_all(&input).expect("write requests");
    let out = child.wait_with_output().expect("oracle runs");
    assert!(
        out.status.success(),
        "Stripe's library oracle failed (is the PyPI package `stripe` installed? run tests/run):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).expect("oracle answers JSON");
    assert_eq!(answers.len(), requests.len());
    answers
}

struct Case {
    name: String,
    body: String,
    header: Option<String>,
    secrets: Vec<&'static str>,
    now: i64,
}

#[test]
fn verdicts_agree_with_stripe_python() {
    const S1: &str = "whsec_6gK0rbcQyd0l1sQ5Jk3Q2wYvXz9PLmN4";
    const S2: &str = "whsec_rotated_Hq8PzT1vW3xY5aB7cD9eF0gH";
    const S3: &str = "whsec_unrelated_0000000000000000000000";
    let now = 1_764_400_000;

    // Bodies: realistic events of several kinds, one with non-ASCII metadata, one that is not JSON.
    let mut rng = Rng::new(7);
    let mut bodies: Vec<String> = Vec::new();
    for s in [Scenario::FullRefund, Scenario::DisputeLost, Scenario::DeclineThenSuccess] {
        let (events, _) = generate(s, &mut rng, now - 100);
        for e in events.iter().take(3) {
            bodies.push(String::from_utf8(e.body()).expect("utf8"));
        }
    }
    bodies.push(bodies[0].replace("ord_", "Bestellung-Größe-ü-✓-"));
    bodies.push("this is not json".into());

    // Stripe's library computes every signature we use.
    let mut sign_reqs = Vec::new();
    for body in &bodies {
        for secret in [S1, S2] {
            for t in [now, now - 300, now - 301, now + 3600] {
                sign_reqs.push(json!({"op": "sign", "secret": secret, "timestamp": t, "body": body}));
            }
        }
    }
    let signed = oracle(&sign_reqs);
    let sig_of = |body_ix: usize, secret_ix: usize, t_ix: usize| -> String {
        signed[body_ix * 8 + secret_ix * 4 + t_ix]["signature"].as_str().expect("signature").to_owned()
    };

    // Stripe's signatures are exactly paystate's.
    for (i, req) in sign_reqs.iter().enumerate() {
        let secret = WebhookSecret::new(req["secret"].as_str().expect("s")).expect("secret");
        let ours = secret.sign(req["timestamp"].as_i64().expect("t"), req["body"].as_str().expect("b").as_bytes());
        assert_eq!(std::str::from_utf8(&ours).expect("hex"), signed[i]["signature"].as_str().expect("sig"));
    }

    let mut cases: Vec<Case> = Vec::new();
    for (b, body) in bodies.iter().enumerate() {
        let c = |name: &str, header: Option<String>, secrets: Vec<&'static str>, at: i64| Case {
            name: format!("body {b}: {name}"),
            body: body.clone(),
            header,
            secrets,
            now: at,
        };
        let good = sig_of(b, 0, 0);
        let rotated = sig_of(b, 1, 0);
        cases.push(c("valid", Some(format!("t={now},v1={good}")), vec![S1], now));
        cases.push(c("wrong secret", Some(format!("t={now},v1={good}")), vec![S3], now));
        cases.push(c("stale by 301 s", Some(format!("t={},v1={}", now - 301, sig_of(b, 0, 2))), vec![S1], now));
        cases.push(c("stale by exactly 300 s", Some(format!("t={},v1={}", now - 300, sig_of(b, 0, 1))), vec![S1], now));
        cases.push(c("v0 only", Some(format!("t={now},v0={good}")), vec![S1], now));
        cases.push(c("rotation, old secret", Some(format!("t={now},v1={good},v1={rotated}")), vec![S1], now));
        cases.push(c("rotation, new secret", Some(format!("t={now},v1={good},v1={rotated}")), vec![S2], now));
        cases.push(c("reordered items", Some(format!("v1={rotated},t={now},v0=00")), vec![S2], now));
        cases.push(c("uppercase hex", Some(format!("t={now},v1={}", good.to_uppercase())), vec![S1], now));
        cases.push(c("missing header", None, vec![S1], now));
        cases.push(c("no timestamp", Some(format!("v1={good}")), vec![S1], now));
        cases.push(c("leading zeros in t", Some(format!("t=00{now},v1={good}")), vec![S1], now));
        let mut tampered = c("tampered body", Some(format!("t={now},v1={good}")), vec![S1], now);
        tampered.body = body.replacen('1', "2", 1);
        if tampered.body != *body {
            cases.push(tampered);
        }
    }

    // Stripe's verdict for a set of secrets: accepted by any one of them (how rotation is configured).
    let mut verify_reqs = Vec::new();
    for case in &cases {
        for secret in &case.secrets {
            verify_reqs.push(json!({"op": "verify", "secret": secret, "header": case.header, "body": case.body, "tolerance": 300, "now": case.now}));
        }
    }
    let verdicts = oracle(&verify_reqs);
    let mut k = 0;
    let (mut accepted, mut refused) = (0, 0);
    for case in &cases {
        let stripe_ok = case.secrets.iter().fold(false, |ok, _| {
            let v = verdicts[k]["ok"].as_bool().expect("ok");
            k += 1;
            ok || v
        });
        let secrets = case.secrets.iter().map(|s| WebhookSecret::new(s).expect("secret")).collect();
        let webhook = Webhook::new(secrets, 300).expect("webhook");
        let ours = webhook.verify(case.header.as_deref().map(str::as_bytes), case.body.as_bytes(), case.now);
        assert_eq!(ours.is_ok(), stripe_ok, "{}: paystate {:?}, Stripe accepted: {stripe_ok}", case.name, ours.err());
        if stripe_ok {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    assert!(accepted >= 50 && refused >= 50, "too few of either verdict: {accepted} accepted, {refused} refused");

    // The deliberate difference: a timestamp an hour in the future.
    let body = &bodies[0];
    let future = format!("t={},v1={}", now + 3600, sig_of(0, 0, 3));
    let stripe =
        oracle(&[json!({"op": "verify", "secret": S1, "header": future, "body": body, "tolerance": 300, "now": now})]);
    assert_eq!(stripe[0]["ok"], json!(true), "Stripe's library accepts future timestamps");
    let webhook = Webhook::new(vec![WebhookSecret::new(S1).expect("secret")], 300).expect("webhook");
    assert!(matches!(
        webhook.verify(Some(future.as_bytes()), body.as_bytes(), now),
        Err(WebhookError::TimestampOutsideTolerance { .. })
    ));
}
