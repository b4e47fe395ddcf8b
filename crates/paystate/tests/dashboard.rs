//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by playwright-core
//! (tests/dashboard/check.cjs), against a `serve` with a token, filled by `simulate`. A wrong token is
//! refused on the page; with the right one the funnel's numbers equal `/v1/status`'s, a payment searched
//! shows its events in the order of `/v1/payments/{id}/history`, there are no console errors, and a
//! screenshot is saved under target/test-output/. tests/run installs playwright-core and sets
//! `PLAYWRIGHT_CORE` and `CHROMIUM` (.ci/run installs chromium).

mod common;

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const TOKEN: &str = "dashboard-test-token-0123456789";

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with tests/run, which installs playwright-core and chromium's path")
    })
}

#[test]
fn the_dashboard_shows_what_the_api_says_in_a_real_browser() {
    let (playwright, chromium) = (required("PLAYWRIGHT_CORE"), required("CHROMIUM"));
    assert!(PathBuf::from(&chromium).is_file(), "{chromium} is not installed (apt-get install chromium)");
    let dir = tempfile::tempdir().expect("tmp");
    let server = common::filled_serve(dir.path(), TOKEN, 120, 5, &[]);
    let bearer = format!("Bearer {TOKEN}");
    let get = |path: &str| -> Value {
        let (code, body) = common::http_get_with(&format!("{}{path}", server.admin), Some(&bearer));
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("json")
    };
    // The page itself holds no data; without the token the API it reads answers 401.
    let (code, page) = common::http_get(&format!("{}/", server.admin));
    assert_eq!(code, 200);
    assert!(page.contains("<title>paystate</title>"), "{page}");
    assert_eq!(common::http_get(&format!("{}/v1/status", server.admin)).0, 401);

    let status = get("/v1/status?lifecycles=true");
    let list = get("/v1/payments?lifecycle=partially_refunded&limit=1");
    let payment = list["payments"][0]["id"].as_str().expect("a partially refunded payment").to_owned();
    let account = list["payments"][0]["account"].clone();
    assert!(account.is_null(), "the first one by key is a platform payment: {account}");
    let history = get(&format!("/v1/payments/{payment}/history"));
    assert!(!page.contains(&payment), "the page carries no data");

    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output");
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let screenshot = out_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/dashboard/check.cjs");
    let run = Command::new("node")
        .arg(&script)
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("CHROMIUM", &chromium)
        .env("DASHBOARD_URL", format!("{}/", server.admin))
        .env("TOKEN", TOKEN)
        .env("PAYMENT", &payment)
        .env("SCREENSHOT", &screenshot)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "the browser check failed: {stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let seen: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");

    assert!(seen["refused"].as_str().is_some_and(|t| t.contains("refused")), "{seen}");
    assert_eq!(seen["errors"], serde_json::json!([]), "no console errors");
    assert_eq!(seen["payments"], status["payments"], "{seen}");
    assert_eq!(seen["funnel"], status["by_lifecycle"], "the funnel is /v1/status's");
    let total: u64 = seen["funnel"].as_object().expect("funnel").values().filter_map(Value::as_u64).sum();
    assert_eq!(total, 120, "every payment is in one lifecycle");
    let want_events: Vec<&str> =
        history["history"].as_array().expect("history").iter().filter_map(|h| h["event_id"].as_str()).collect();
    let got_events: Vec<&str> = seen["events"].as_array().expect("events").iter().filter_map(Value::as_str).collect();
    assert_eq!(got_events, want_events, "the payment's events in causal order");
    assert_eq!(seen["lifecycles"].as_array().and_then(|l| l.last()), Some(&Value::from("partially_refunded")));
    assert!(
        seen["summary"].as_str().is_some_and(|s| s.contains(&payment) && s.contains("partially_refunded")),
        "{seen}"
    );
    assert!(seen["actions"].as_str().is_some_and(|a| a.contains("act_")), "actions emitted: {seen}");
    assert!(seen["recent"].as_u64().is_some_and(|n| n >= 1), "recent failures and disputes listed: {seen}");
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a real screenshot ({} bytes)", png.len());
    eprintln!("dashboard screenshot: {}", screenshot.display());
}
