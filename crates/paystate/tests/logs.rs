//! No secret and no body content in the logs: `serve` at debug level, in both log formats, takes 150
//! simulated payments' webhooks (every customer's e-mail address is in the bodies, as Stripe sends them;
//! 150 so that every partition's event time passes each decline's grace period and verify can pass), a bad
//! signature and a body that is not JSON are refused, its admin API is refused with a wrong token and read
//! by `verify` with the right one; then every line serve, simulate and verify wrote is scanned for the
//! webhook secret, the admin token, the wrong token, the e-mail addresses and fragments of the bodies.
//! None may appear.

mod common;

use common::{http_get_with, Server, BIN};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const SECRET: &str = "whsec_logs_test_Secret_4f1c9a";
const TOKEN: &str = "admintoken_logs_test_8d2e51b7c0";
const WRONG: &str = "wrongtoken_logs_test_77aa31";

/// Every string value under a key named `email` in the events (the customers' addresses).
fn emails(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("email", serde_json::Value::String(s)) => {
                        out.insert(s.clone());
                    }
                    _ => emails(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| emails(v, out)),
        _ => {}
    }
}

fn run(format: &str, dir: &Path) -> (String, BTreeSet<String>) {
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let log = dir.join(format!("serve-{format}.log"));
    let mut server = Server::spawn(
        common::serve_command(&dir.join(format!("data-{format}")), SECRET)
            .args(["--log-format", format, "--admin-token-file"])
            .arg(&token_file)
            .env("RUST_LOG", "debug")
            .stderr(std::fs::File::create(&log).expect("log file")),
    );
    let events = dir.join(format!("events-{format}.jsonl"));
    let truth = dir.join(format!("truth-{format}.jsonl"));
    let sim = Command::new(BIN)
        .args(["simulate", "--url", &server.public, "--secret", SECRET, "--payments", "150", "--seed", "4"])
        .arg("--events")
        .arg(&events)
        .arg("--truth")
        .arg(&truth)
        .env("RUST_LOG", "debug")
        .output()
        .expect("simulate");
    assert!(sim.status.success(), "simulate: {}", String::from_utf8_lossy(&sim.stderr));
    // Refused: a wrong signature, a body that is not JSON, a wrong admin token.
    let body = std::fs::read_to_string(&events).expect("events").lines().next().expect("an event").to_owned();
    for (signature, payload) in [("t=1,v1=00", body.as_str()), ("t=1,v1=00", "{\"id\": \"evt_x\", oops")] {
        let mut curl = Command::new("curl");
        curl.args(["-s", "-o", "/dev/null", "-H", "content-type: application/json", "-H"])
            .arg(format!("stripe-signature: {signature}"))
            .args(["--data-binary", payload, &server.public]);
        assert!(curl.status().expect("curl").success());
    }
    assert_eq!(http_get_with(&format!("{}/v1/status", server.admin), Some(&format!("Bearer {WRONG}"))).0, 401);
    let verify = Command::new(BIN)
        .args(["verify", "--admin", &server.admin, "--admin-token-file"])
        .arg(&token_file)
        .arg("--truth")
        .arg(&truth)
        .env("RUST_LOG", "debug")
        .output()
        .expect("verify");
    let verdict = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verdict.trim_end().ends_with("150 passed, 0 failed"),
        "{verdict}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(server.terminate().success());

    let mut addresses = BTreeSet::new();
    for line in std::fs::read_to_string(&events).expect("events").lines() {
        emails(&serde_json::from_str(line).expect("event"), &mut addresses);
    }
    let logs = [
        std::fs::read_to_string(&log).expect("serve's log"),
        String::from_utf8_lossy(&sim.stderr).into_owned(),
        String::from_utf8_lossy(&verify.stderr).into_owned(),
    ]
    .join("\n");
    (logs, addresses)
}

#[test]
fn no_secret_and_no_body_content_in_any_log_line() {
    let dir = tempfile::tempdir().expect("tmp");
    for format in ["pretty", "json"] {
        let (logs, addresses) = run(format, dir.path());
        assert!(addresses.len() >= 20, "the bodies carry customers' addresses: {addresses:?}");
        let lines = logs.lines().count();
        assert!(lines > 100, "debug logging on: {lines} lines");
        assert!(logs.contains("evt_"), "the logs name events (by id), so the scan reads real lines");
        for (what, needle) in [
            ("the webhook secret", SECRET),
            ("the webhook secret's key part", SECRET.trim_start_matches("whsec_")),
            ("the admin token", TOKEN),
            ("a refused token", WRONG),
            ("a body fragment", "billing_details"),
            ("a body fragment", "\"object\": \"payment_intent\""),
            ("a body fragment", "oops"),
        ] {
            let hit = logs.lines().find(|l| l.contains(needle));
            assert!(hit.is_none(), "{format} logs carry {what}: {hit:?}");
        }
        for a in &addresses {
            let hit = logs.lines().find(|l| l.contains(a.as_str()));
            assert!(hit.is_none(), "{format} logs carry the customer's e-mail {a}: {hit:?}");
        }
        eprintln!("{format}: {lines} log lines scanned, {} e-mail addresses planted, none found", addresses.len());
    }
}
