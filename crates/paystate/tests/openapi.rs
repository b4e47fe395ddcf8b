//! The admin API against its OpenAPI 3.1 document (`crates/paystate-ingress/openapi.json`, served at
//! `/v1/openapi.json`), on a live `serve` filled by `simulate`, behind a token:
//!
//! - schemathesis (PyPI, installed by tests/run beside `$PYTHON`) with every check: no 5xx, every response
//!   conforms to the document (status, content type, headers, body), schema-valid requests accepted,
//!   invalid ones refused, unsupported methods answered 405, routes refuse a missing token;
//! - every error status the document names for a route is reached by a request written here, except
//!   the ones only a Kafka member or a failing log gives, which are named (and tested elsewhere).

mod common;

use common::Server;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

const TOKEN: &str = "openapi-test-token-0123456789abcdef";

/// `serve` with a token, filled by `simulate` and caught up; `extra` flags. Short long-polls:
/// schemathesis asks for long ones.
fn start(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut flags = vec!["--stream-max-wait-ms", "50"];
    flags.extend_from_slice(extra);
    common::filled_serve(dir, TOKEN, 60, 3, &flags)
}

fn schemathesis() -> PathBuf {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| {
        panic!("PYTHON is not set: run the tests with tests/run, which installs schemathesis into its virtualenv")
    });
    let bin = PathBuf::from(python).with_file_name("schemathesis");
    assert!(bin.is_file(), "{} is missing: tests/run installs schemathesis==4.32.5 beside $PYTHON", bin.display());
    bin
}

/// Status and JSON body of `method path` (with the token unless `token` is false).
fn call(server: &Server, method: &str, path: &str, token: bool) -> (u16, Value) {
    let bearer = format!("Bearer {TOKEN}");
    let (code, body) = match method {
        "GET" => common::http_get_with(&format!("{}{path}", server.admin), token.then_some(bearer.as_str())),
        _ => common::http_request(method, &format!("{}{path}", server.admin), token.then_some(bearer.as_str())),
    };
    (code, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

#[test]
fn schemathesis_finds_the_admin_api_as_its_document_says() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = start(dir.path(), &[]);
    // schemathesis keeps a cache of what it found under its working directory: the test's own temp dir.
    let out = Command::new(schemathesis())
        .current_dir(dir.path())
        .args(["run", &format!("{}/v1/openapi.json", server.admin)])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", "all", "--max-examples", "40", "--workers", "2", "--seed", "20261204", "--no-color"])
        .output()
        .expect("schemathesis runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Operations:       13 selected / 13 total"), "{text}");
    let summary = text.lines().find(|l| l.contains(" generated, ")).unwrap_or("");
    assert!(summary.contains("passed") && !summary.contains("fail"), "{summary}");
}

#[test]
fn every_documented_error_is_reachable() {
    let dir = tempfile::tempdir().expect("tmp");
    // A retention small enough for a 410.
    let server = start(dir.path(), &["--stream-retention-entries", "8"]);
    let (code, doc) = call(&server, "GET", "/v1/openapi.json", true);
    assert_eq!(code, 200);
    assert_eq!(
        doc,
        serde_json::from_str::<Value>(
            &std::fs::read_to_string(
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../paystate-ingress/openapi.json")
            )
            .expect("the document in the repository")
        )
        .expect("json"),
        "the served document is the repository's"
    );
    let (_, list) = call(&server, "GET", "/v1/payments?limit=1000", true);
    let platform = list["payments"].as_array().expect("payments").iter().find(|p| p["account"].is_null());
    let id = platform.and_then(|p| p["id"].as_str()).expect("a platform payment").to_owned();

    // (method, documented path, a request that must answer that status)
    let reached: Vec<(&str, &str, u16, String, bool)> = vec![
        ("GET", "/v1/payments", 200, "/v1/payments".into(), true),
        ("GET", "/v1/payments", 400, "/v1/payments?limit=0".into(), true),
        ("GET", "/v1/payments", 401, "/v1/payments".into(), false),
        ("GET", "/v1/payments/{id}", 200, format!("/v1/payments/{id}"), true),
        ("GET", "/v1/payments/{id}", 400, format!("/v1/payments/{id}?acount=1"), true),
        ("GET", "/v1/payments/{id}", 401, format!("/v1/payments/{id}"), false),
        ("GET", "/v1/payments/{id}", 404, "/v1/payments/pi_none".into(), true),
        ("GET", "/v1/payments/{id}/history", 200, format!("/v1/payments/{id}/history"), true),
        ("GET", "/v1/payments/{id}/history", 400, format!("/v1/payments/{id}/history?x=1"), true),
        ("GET", "/v1/payments/{id}/history", 401, format!("/v1/payments/{id}/history"), false),
        ("GET", "/v1/payments/{id}/history", 404, "/v1/payments/pi_none/history".into(), true),
        ("GET", "/v1/status", 200, "/v1/status?digest=true&lifecycles=true".into(), true),
        ("GET", "/v1/status", 400, "/v1/status?digest=2".into(), true),
        ("GET", "/v1/status", 401, "/v1/status".into(), false),
        ("GET", "/v1/streams/{stream}", 200, "/v1/streams/payments?after=1000000".into(), true),
        ("GET", "/v1/streams/{stream}", 400, "/v1/streams/actions?limit=0".into(), true),
        ("GET", "/v1/streams/{stream}", 401, "/v1/streams/actions".into(), false),
        ("GET", "/v1/streams/{stream}", 404, "/v1/streams/refunds".into(), true),
        ("GET", "/v1/streams/{stream}", 410, "/v1/streams/actions?after=0".into(), true),
        ("GET", "/v1/log/{partition}", 200, "/v1/log/0".into(), true),
        ("GET", "/v1/log/{partition}", 400, "/v1/log/zero".into(), true),
        ("GET", "/v1/log/{partition}", 401, "/v1/log/0".into(), false),
        ("GET", "/v1/log/{partition}", 404, "/v1/log/4000".into(), true),
        ("GET", "/v1/dead-letters", 200, "/v1/dead-letters".into(), true),
        ("GET", "/v1/dead-letters", 400, "/v1/dead-letters?after=x".into(), true),
        ("GET", "/v1/dead-letters", 401, "/v1/dead-letters".into(), false),
        ("POST", "/v1/dead-letters/retry", 200, "/v1/dead-letters/retry".into(), true),
        ("POST", "/v1/dead-letters/retry", 400, "/v1/dead-letters/retry?all=1".into(), true),
        ("POST", "/v1/dead-letters/retry", 401, "/v1/dead-letters/retry".into(), false),
        ("GET", "/v1/openapi.json", 200, "/v1/openapi.json".into(), true),
        ("GET", "/v1/openapi.json", 400, "/v1/openapi.json?v=2".into(), true),
        ("GET", "/v1/openapi.json", 401, "/v1/openapi.json".into(), false),
        ("GET", "/v1/timeline", 200, "/v1/timeline".into(), true),
        ("GET", "/v1/timeline", 400, "/v1/timeline?hours=2".into(), true),
        ("GET", "/v1/timeline", 401, "/v1/timeline".into(), false),
        ("GET", "/", 200, "/".into(), false),
        ("GET", "/healthz", 200, "/healthz".into(), false),
        ("GET", "/readyz", 200, "/readyz".into(), false),
        ("GET", "/metrics", 200, "/metrics".into(), false),
    ];
    // Only a Kafka member (501; 502 when the member that holds a payment does not answer), a failing log
    // (503) or --metrics-behind-token (401) answers these; the Kafka and HTTP tests reach them.
    let elsewhere: BTreeSet<(&str, &str, u16)> = [
        ("GET", "/v1/payments/{id}", 502),
        ("GET", "/v1/payments/{id}/history", 502),
        ("GET", "/v1/log/{partition}", 501),
        ("POST", "/v1/dead-letters/retry", 501),
        ("GET", "/readyz", 503),
        ("GET", "/metrics", 401),
    ]
    .into_iter()
    .collect();
    let mut covered = BTreeSet::new();
    for (method, documented, want, path, token) in &reached {
        let (code, body) = call(&server, method, path, *token);
        assert_eq!(code, *want, "{method} {path}: {body}");
        let responses = &doc["paths"][documented][method.to_lowercase()]["responses"];
        assert!(responses.get(want.to_string()).is_some(), "{method} {documented} does not document {want}");
        if *want >= 400 && *want != 401 {
            assert!(body["error"].is_string() && body["message"].is_string(), "{method} {path}: an error body: {body}");
        }
        covered.insert((*method, *documented, *want));
    }
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("operations") {
            for status in op["responses"].as_object().expect("responses").keys() {
                let key = (method.to_uppercase(), path.as_str(), status.parse::<u16>().expect("a status"));
                let named =
                    covered.iter().chain(&elsewhere).any(|(m, p, s)| (*m, *p, *s) == (key.0.as_str(), key.1, key.2));
                assert!(named, "{} {} {} is documented but no request here reaches it", key.0, key.1, key.2);
            }
        }
    }
}
