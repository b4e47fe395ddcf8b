//! The HTTP surfaces over real HTTP on 127.0.0.1:0 with a real store in a temporary directory.

use paystate_ingress::{admin_router, metrics::Metrics, public_router, Admin, AdminAuth, Ingress, Mode};
use paystate_projector::Projector;
use paystate_store::{Appender, GroupMember, GroupView, LogView, Store};
use paystate_stripe::{Webhook, WebhookSecret};
use paystate_testkit::scenario::{generate, Scenario};
use paystate_testkit::synth::Rng;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "whsec_http_test_secret";

struct Harness {
    public: String,
    admin: String,
    store: Store,
    projector: Arc<Projector<paystate_store::EmbeddedLog>>,
    appender: Appender,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()).expect("time")
}

async fn start(mode: Option<Mode>, body_limit: usize) -> Harness {
    let (limits, timeout) = (paystate_ingress::Limits::default(), paystate_ingress::DEFAULT_HEADER_TIMEOUT);
    start_with(mode, body_limit, limits, timeout, AdminAuth::open()).await
}

async fn start_with(
    mode: Option<Mode>,
    body_limit: usize,
    limits: paystate_ingress::Limits,
    header_timeout: std::time::Duration,
    auth: AdminAuth,
) -> Harness {
    start_in_group(mode, body_limit, limits, header_timeout, auth, None).await
}

/// A log view that reports a consumer group (as a Kafka member's does), set by the test.
struct Grouped {
    log: paystate_store::EmbeddedLog,
    view: Arc<Mutex<Option<GroupView>>>,
}

impl LogView for Grouped {
    fn partitions(&self) -> u32 {
        LogView::partitions(&self.log)
    }
    fn end(&self, partition: u32) -> u64 {
        LogView::end(&self.log, partition)
    }
    fn group(&self) -> Option<GroupView> {
        self.view.lock().expect("view").clone()
    }
}

async fn start_in_group(
    mode: Option<Mode>,
    body_limit: usize,
    limits: paystate_ingress::Limits,
    header_timeout: std::time::Duration,
    auth: AdminAuth,
    group: Option<Arc<Mutex<Option<GroupView>>>>,
) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 4).expect("store");
    let appender = store.log.start_appender();
    let metrics = Arc::new(Metrics::default());
    let webhook = Webhook::new(vec![WebhookSecret::new(SECRET).expect("secret")], 300).expect("webhook");
    let ingress = Ingress {
        webhook,
        mode,
        body_limit_bytes: body_limit,
        partitions: paystate_ingress::Partitions::fixed(4),
        sink: Arc::new(appender.handle()),
        metrics: metrics.clone(),
        limits,
    };
    // As `serve` has it: the appender's and the ingress's view of the log, and the projector's batches.
    let appender_health = appender.health();
    let projector = Arc::new(Projector::new(store.log.clone(), store.projection.clone(), 64));
    let readiness: paystate_ingress::Readiness = {
        let (metrics, projector) = (Arc::clone(&metrics), Arc::clone(&projector));
        Arc::new(move || {
            let mut why =
                paystate_ingress::ingress_not_ready(&metrics, appender_health.check(), paystate_ingress::READY_WINDOW);
            why.extend(projector.failing());
            why
        })
    };
    let admin = Admin {
        projection: store.projection.clone(),
        log: match group {
            Some(view) => Arc::new(Grouped { log: store.log.clone(), view }),
            None => Arc::new(store.log.clone()),
        },
        publishes: false,
        committed: projector.subscribe(),
        metrics,
        auth,
        readiness,
        retry_dead_letters: Some({
            let projector = Arc::clone(&projector);
            Arc::new(move || {
                let retried = projector.retry_dead_letters().map_err(|e| e.to_string())?;
                serde_json::to_value(retried).map_err(|e| e.to_string())
            })
        }),
        stream_max_wait: std::time::Duration::from_millis(paystate_ingress::STREAM_WAIT_MAX_MS),
        timeline: paystate_ingress::metrics::Timeline::default(),
        catch_up_runs: paystate_ingress::CatchUpRuns::default(),
    };
    let public_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let public = format!("http://{}", public_l.local_addr().expect("addr"));
    let admin_url = format!("http://{}", admin_l.local_addr().expect("addr"));
    tokio::spawn(paystate_ingress::serve_with(
        public_l,
        public_router(ingress),
        header_timeout,
        std::future::pending(),
    ));
    tokio::spawn(paystate_ingress::serve(admin_l, admin_router(admin), std::future::pending()));
    Harness { public, admin: admin_url, store, projector, appender, _dir: dir, client: reqwest::Client::new() }
}

impl Harness {
    async fn admin_json(&self, path: &str) -> Value {
        self.client.get(format!("{}{path}", self.admin)).send().await.expect("get").json().await.expect("json")
    }

    async fn admin_text(&self, path: &str) -> String {
        self.client.get(format!("{}{path}", self.admin)).send().await.expect("get").text().await.expect("text")
    }

    fn log_total(&self) -> u64 {
        (0..4).map(|p| self.store.log.end(p)).sum()
    }

    async fn post(
        &self,
        path: &str,
        content_type: Option<&str>,
        signature: Option<String>,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut req = self.client.post(format!("{}{path}", self.public)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(sig) = signature {
            req = req.header("stripe-signature", sig);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn event_body(seed: u64, livemode: bool) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let (mut events, _) = generate(Scenario::CardSuccess, &mut rng, now() - 60);
    let mut e = events.remove(1);
    e.json["livemode"] = livemode.into();
    e.body()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_status_and_reason_and_appends_nothing() {
    let h = start(Some(Mode::Test), 4096).await;
    let secret = WebhookSecret::new(SECRET).expect("secret");
    let body = event_body(1, false);
    let good = secret.header(now(), &body);
    let json = Some("application/json");

    // (name, content type, Stripe-Signature, body, expected status, expected reason)
    type Case<'a> = (&'a str, Option<&'a str>, Option<String>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("no signature", json, None, body.clone(), 400, "missing_signature_header"),
        ("malformed", json, Some("garbage".into()), body.clone(), 400, "malformed_signature_header"),
        ("v0 only", json, Some(good.replace("v1=", "v0=")), body.clone(), 400, "no_v1_signature"),
        (
            "wrong secret",
            json,
            Some(WebhookSecret::new("whsec_other").expect("s").header(now(), &body)),
            body.clone(),
            400,
            "no_matching_signature",
        ),
        ("tampered", json, Some(good.clone()), event_body(2, false), 400, "no_matching_signature"),
        ("stale", json, Some(secret.header(now() - 3600, &body)), body.clone(), 400, "timestamp_outside_tolerance"),
        ("future", json, Some(secret.header(now() + 3600, &body)), body.clone(), 400, "timestamp_outside_tolerance"),
        ("not json", json, Some(secret.header(now(), b"hello")), b"hello".to_vec(), 400, "body_not_json"),
        (
            "not an event",
            json,
            Some(secret.header(now(), b"{\"object\":\"customer\"}")),
            b"{\"object\":\"customer\"}".to_vec(),
            400,
            "not_an_event",
        ),
        ("not utf-8", json, Some(secret.header(now(), b"{\"\xff\"}")), b"{\"\xff\"}".to_vec(), 400, "body_not_utf8"),
        ("text/plain", Some("text/plain"), Some(good.clone()), body.clone(), 415, "unsupported_media_type"),
        ("no content type", None, Some(good.clone()), body.clone(), 415, "unsupported_media_type"),
        ("too large", json, Some(good.clone()), vec![b' '; 5000], 413, "body_too_large"),
    ];
    for (name, ct, sig, b, status, code) in cases {
        let (got, reason) = h.post("/webhooks/stripe", ct, sig, b).await;
        assert_eq!(got, status, "{name}: {reason}");
        assert_eq!(reason["error"], code, "{name}");
        assert!(reason["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}: message");
    }
    let (got, reason) = h.post("/elsewhere", json, Some(good.clone()), body.clone()).await;
    assert_eq!((got, reason["error"].as_str()), (404, Some("not_found")));
    let resp = h.client.get(format!("{}/webhooks/stripe", h.public)).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 405);
    let resp = h.client.get(format!("{}/v1/status", h.public)).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 404, "the public listener serves no admin path");
    assert_eq!(h.log_total(), 0, "nothing refused was appended");

    // The good one is appended once durably; a redelivery may append again but is applied once.
    for _ in 0..2 {
        let (got, reason) = h.post("/webhooks/stripe", json, Some(secret.header(now(), &body)), body.clone()).await;
        assert_eq!((got, reason), (200, serde_json::json!({"received": true})));
    }
    assert_eq!(h.log_total(), 2);
    let progress = h.projector.catch_up().expect("project");
    assert_eq!((progress.applied, progress.duplicates), (1, 1));

    // A signed, well-formed event the projection cannot use (a PaymentIntent without amount) is accepted
    // (Stripe must not retry it forever), dead-lettered with its reason, and does not stall its partition.
    let mut broken: Value = serde_json::from_slice(&body).expect("json");
    broken["id"] = "evt_broken".into();
    broken["data"]["object"].as_object_mut().expect("object").remove("amount");
    let broken = serde_json::to_vec(&broken).expect("ser");
    let (got, _) = h.post("/webhooks/stripe", json, Some(secret.header(now(), &broken)), broken).await;
    assert_eq!(got, 200);
    let later = event_body(4, false);
    let (got, _) = h.post("/webhooks/stripe", json, Some(secret.header(now(), &later)), later).await;
    assert_eq!(got, 200);
    let progress = h.projector.catch_up().expect("project");
    assert_eq!((progress.dead, progress.applied), (1, 1));
    let dead = h.store.projection.dead_letters().expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id, "evt_broken");
    assert!(dead[0].reason.contains("no amount"), "{}", dead[0].reason);
    // The admin API lists it, and a retry (this release still cannot use it) keeps it with its reason.
    let listed = h.admin_json("/v1/dead-letters").await;
    assert_eq!(listed["dead_letters"][0]["event_id"], "evt_broken", "{listed}");
    assert_eq!(listed["dead_letters"].as_array().map(Vec::len), Some(1), "{listed}");
    let next = h.admin_json(&format!("/v1/dead-letters?after={}:{}", dead[0].partition, dead[0].offset)).await;
    assert_eq!(next["dead_letters"].as_array().map(Vec::len), Some(0), "{next}");
    let retried: Value = h
        .client
        .post(format!("{}/v1/dead-letters/retry", h.admin))
        .send()
        .await
        .expect("retry")
        .json()
        .await
        .expect("json");
    assert_eq!(retried["resolved"].as_array().map(Vec::len), Some(0), "{retried}");
    assert!(retried["still_dead"][0]["reason"].as_str().is_some_and(|r| r.contains("no amount")), "{retried}");
    assert_eq!(h.store.projection.dead_letters().expect("dead").len(), 1);
    for p in 0..4 {
        assert_eq!(h.store.projection.position(p).expect("pos"), h.store.log.end(p), "partition {p} fully consumed");
    }
}

/// A correctly signed event of the other mode is never refused (Stripe would retry it for days): it is
/// kept, counted, and projected apart (`livemode` on the state, `?livemode=` on the list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_the_other_mode_is_kept_and_projected_apart() {
    let h = start(Some(Mode::Test), 1 << 20).await;
    let secret = WebhookSecret::new(SECRET).expect("secret");
    let json = Some("application/json");
    let (live, test) = (event_body(3, true), event_body(5, false));
    let (got, reply) = h.post("/webhooks/stripe", json, Some(secret.header(now(), &live)), live).await;
    assert_eq!((got, reply["received"].as_bool()), (200, Some(true)));
    let (got, _) = h.post("/webhooks/stripe", json, Some(secret.header(now(), &test)), test).await;
    assert_eq!(got, 200);
    assert_eq!(h.log_total(), 2, "both kept");
    assert_eq!(h.projector.catch_up().expect("project").applied, 2);
    let lives = h.admin_json("/v1/payments?livemode=true").await;
    let tests = h.admin_json("/v1/payments?livemode=false").await;
    let (lives, tests) = (lives["payments"].as_array().expect("list"), tests["payments"].as_array().expect("list"));
    assert_eq!((lives.len(), tests.len()), (1, 1));
    assert_eq!((lives[0]["livemode"].as_bool(), tests[0]["livemode"].as_bool()), (Some(true), Some(false)));
    assert_ne!(lives[0]["id"], tests[0]["id"]);
    let metrics = h.admin_text("/metrics").await;
    assert!(metrics.lines().any(|l| l.contains("other_mode") && l.trim_end().ends_with(" 1")), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_and_streams() {
    let h = start(None, 1 << 20).await;
    let secret = WebhookSecret::new(SECRET).expect("secret");
    let mut rng = Rng::new(9);
    let (events, truth) = generate(Scenario::DeclineThenSuccess, &mut rng, now() - 100);
    // A reader long-polls the actions stream before anything exists.
    let waiter = {
        let (client, admin) = (h.client.clone(), h.admin.clone());
        tokio::spawn(async move {
            let r = client.get(format!("{admin}/v1/streams/actions?after=0&wait_ms=20000")).send().await.expect("poll");
            r.text().await.expect("body")
        })
    };
    for e in events.iter().rev() {
        let body = e.body();
        let (status, _) =
            h.post("/webhooks/stripe", Some("application/json"), Some(secret.header(now(), &body)), body).await;
        assert_eq!(status, 200);
    }
    h.projector.catch_up().expect("project");
    let first_lines = waiter.await.expect("join");
    assert!(first_lines.lines().count() >= 1, "long-poll returned once actions existed: {first_lines}");

    let p: Value = h.admin_json(&format!("/v1/payments/{}", truth.id)).await;
    assert_eq!(p["lifecycle"], "succeeded");
    assert_eq!(p["failure_count"], 1);
    let hist: Value = h.admin_json(&format!("/v1/payments/{}/history", truth.id)).await;
    let lifecycles: Vec<&str> =
        hist["history"].as_array().expect("history").iter().filter_map(|e| e["lifecycle"].as_str()).collect();
    assert_eq!(lifecycles.first(), Some(&"created"));
    assert_eq!(lifecycles.last(), Some(&"succeeded"));
    let steps = hist["history"].as_array().expect("history");
    assert_eq!(steps.len(), events.len());
    assert_eq!(steps[0]["lifecycle_before"], "created");
    assert_eq!(steps.last().map(|s| s["amount_received"].clone()), Some(json!(truth.amount_received)));
    assert!(steps.windows(2).all(|w| w[0]["lifecycle"] == w[1]["lifecycle_before"]), "{steps:?}");
    assert_eq!(hist["payment"]["events_applied"], events.len() as u64);
    // Any event of the payment names it; as of its first event's time, only what was known then.
    let bodies: Vec<Value> = events.iter().map(|e| serde_json::from_slice(&e.body()).expect("event json")).collect();
    let mut times: Vec<i64> = bodies.iter().map(|b| b["created"].as_i64().expect("created")).collect();
    times.sort_unstable();
    let evt = bodies[0]["id"].as_str().expect("event id");
    let by_event: Value = h.admin_json(&format!("/v1/payments/{evt}")).await;
    assert_eq!(by_event["id"], truth.id.as_str());
    let early: Value = h.admin_json(&format!("/v1/payments/{evt}/history?as_of={}", times[0])).await;
    let known_then = times.iter().filter(|t| **t <= times[0]).count();
    assert_eq!((early["as_of"].as_i64(), early["events_total"].as_u64()), (Some(times[0]), Some(events.len() as u64)));
    assert_eq!(early["history"].as_array().map(Vec::len), Some(known_then));
    assert_eq!(early["payment"]["events_applied"], known_then as u64);
    let missing = h.client.get(format!("{}/v1/payments/pi_nope", h.admin)).send().await.expect("get");
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(missing.json::<Value>().await.expect("json")["error"], "not_found");
    let list: Value = h.admin_json("/v1/payments?lifecycle=succeeded").await;
    assert_eq!(list["payments"].as_array().map(Vec::len), Some(1));
    let bad = h.client.get(format!("{}/v1/payments?lifecycle=bogus", h.admin)).send().await.expect("get");
    assert_eq!(bad.status().as_u16(), 400);

    let resp = h.client.get(format!("{}/v1/streams/actions?after=0", h.admin)).send().await.expect("get");
    let next: u64 = resp.headers()["paystate-next-cursor"].to_str().expect("hdr").parse().expect("num");
    let text = resp.text().await.expect("text");
    let kinds: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("ndjson")["data"]["kind"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(kinds.contains(&"fulfill_order".to_owned()), "{kinds:?}");
    // The ledger's actions, named by the history route, are the ones the stream carried.
    let mut named: Vec<String> = hist["actions_emitted"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| a["kind"].as_str().unwrap_or("unnamed").to_owned())
        .collect();
    let mut streamed = kinds.clone();
    named.sort();
    streamed.sort();
    assert_eq!(named, streamed);
    assert_eq!(next, kinds.len() as u64);
    let after: String = h.admin_text(&format!("/v1/streams/actions?after={next}")).await;
    assert!(after.is_empty());
    let updates: String = h.admin_text("/v1/streams/payments?after=0").await;
    assert!(updates
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).expect("ndjson")["data"]["key"] == truth.id.as_str()));

    let status: Value = h.admin_json("/v1/status").await;
    assert_eq!(status["lag"], 0);
    assert_eq!(status["totals"]["applied"], events.len() as u64);
    assert!(status.get("digest").is_none(), "the digest only on request");
    let with_digest: Value = h.admin_json("/v1/status?digest=true").await;
    let (digest, _) = h.store.projection.digest().expect("digest");
    assert_eq!(with_digest["digest"], digest.as_str());
    assert_eq!(with_digest["digest_payments"], 1);
    let metrics = h.admin_text("/metrics").await;
    assert!(
        metrics.contains(&format!("paystate_webhooks_total{{outcome=\"accepted\"}} {}", events.len())),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("paystate_events_applied_total {}", events.len())));
    assert!(metrics.contains("paystate_append_seconds_count"));
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// Status and body of `GET admin path` with `authorization` (none when `None`).
async fn admin_get(h: &Harness, path: &str, authorization: Option<&str>) -> (u16, Option<String>, Value) {
    let mut req = h.client.get(format!("{}{path}", h.admin));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("get");
    let challenge = resp.headers().get("www-authenticate").map(|v| v.to_str().expect("ascii").to_owned());
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("body");
    (status, challenge, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_401_without_its_token_and_keeps_the_health_checks_open() {
    let (limits, timeout) = (paystate_ingress::Limits::default(), paystate_ingress::DEFAULT_HEADER_TIMEOUT);
    let h = start_with(None, 1 << 20, limits, timeout, AdminAuth::token(TOKEN, false)).await;
    // A payment, so that the routes about one answer with it.
    let secret = WebhookSecret::new(SECRET).expect("secret");
    let (events, truth) = generate(Scenario::DeclineThenSuccess, &mut Rng::new(3), now() - 100);
    for e in &events {
        let body = e.body();
        let (status, _) =
            h.post("/webhooks/stripe", Some("application/json"), Some(secret.header(now(), &body)), body).await;
        assert_eq!(status, 200, "the public listener needs no admin token");
    }
    h.projector.catch_up().expect("project");
    let id = truth.id.as_str();
    let routes = [
        "/v1/payments".to_owned(),
        format!("/v1/payments/{id}"),
        format!("/v1/payments/{id}/history"),
        "/v1/status".to_owned(),
        "/v1/streams/actions?after=0".to_owned(),
        "/v1/streams/payments?after=0".to_owned(),
        "/v1/log/0?from=0".to_owned(),
        "/v1/dead-letters".to_owned(),
    ];
    let wrong = format!("Bearer {}x", &TOKEN[..TOKEN.len() - 1]);
    for route in &routes {
        for (authorization, what) in [
            (None, "no token"),
            (Some(wrong.as_str()), "a wrong token"),
            (Some("Bearer "), "an empty token"),
            (Some(TOKEN), "the token without the Bearer scheme"),
            (Some(&*format!("Basic {TOKEN}")), "another scheme"),
        ] {
            let (status, challenge, body) = admin_get(&h, route, authorization).await;
            assert_eq!(status, 401, "{route} with {what}: {body}");
            assert_eq!(challenge.as_deref(), Some("Bearer realm=\"paystate-admin\""), "{route} with {what}");
            assert_eq!(body["error"], "unauthorized", "{route} with {what}");
        }
        for authorization in [format!("Bearer {TOKEN}"), format!("bearer {TOKEN}")] {
            let (status, _, body) = admin_get(&h, route, Some(&authorization)).await;
            assert_eq!(status, 200, "{route} with the token ({authorization:.7}…): {body}");
        }
    }
    let (_, _, payment) = admin_get(&h, &format!("/v1/payments/{id}"), Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(payment["lifecycle"], "succeeded");
    for open in ["/healthz", "/readyz", "/metrics"] {
        let (status, _, body) = admin_get(&h, open, None).await;
        assert_eq!(status, 200, "{open} stays open: {body}");
    }
    // An unknown path is 404 with or without the token: nothing to guard.
    assert_eq!(admin_get(&h, "/v1/nothing", None).await.0, 404);

    // /metrics behind the token when asked.
    let (limits, timeout) = (paystate_ingress::Limits::default(), paystate_ingress::DEFAULT_HEADER_TIMEOUT);
    let guarded = start_with(None, 1 << 20, limits, timeout, AdminAuth::token(TOKEN, true)).await;
    assert_eq!(admin_get(&guarded, "/metrics", None).await.0, 401);
    let (status, _, metrics) = admin_get(&guarded, "/metrics", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, 200);
    assert!(metrics.as_str().is_some_and(|m| m.contains("paystate_webhooks_total")), "{metrics}");
    assert_eq!(admin_get(&guarded, "/healthz", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_append_answers_503_never_200() {
    let h = start(None, 1 << 20).await;
    let secret = WebhookSecret::new(SECRET).expect("secret");
    let body = event_body(7, false);
    let ready = h.client.get(format!("{}/readyz", h.admin)).send().await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(ready.text().await.expect("text"), "ready\n");
    h.appender.halt();
    let (status, reason) =
        h.post("/webhooks/stripe", Some("application/json"), Some(secret.header(now(), &body)), body).await;
    assert_eq!(status, 503, "{reason}");
    assert_eq!(reason["error"], "log_unavailable");
    assert_eq!(h.log_total(), 0);
    let metrics = h.admin_text("/metrics").await;
    assert!(metrics.contains("paystate_webhooks_total{outcome=\"unavailable\"} 1"), "{metrics}");
    let ready = h.client.get(format!("{}/readyz", h.admin)).send().await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 503);
    let why = ready.text().await.expect("text");
    assert!(why.starts_with("not ready: the log cannot take writes: the embedded log's appender is stopped"), "{why}");
    assert!(why.contains("the log failed the last append"), "{why}");
    assert_eq!(h.admin_text("/healthz").await, "ok\n", "alive all the same");
}

/// One webhook in flight at most, 2 s for a body: a client that sends its headers and part of a body
/// holds the only slot, so another delivery is answered 503 (busy) at once; the slow one gets 408 when
/// its time is up, appending nothing, and the next delivery is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_timed_out_and_a_flood_beyond_the_limit_is_refused_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // 2 s: wide enough that a loaded machine still sends the next delivery while the slow one holds the
    // slot (with 300 ms, a run beside other tests once missed the window and never saw the 503).
    let limits = paystate_ingress::Limits::new(1, std::time::Duration::from_secs(2));
    let h = start_with(None, 1 << 20, limits, paystate_ingress::DEFAULT_HEADER_TIMEOUT, AdminAuth::open()).await;
    let addr = h.public.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    slow.write_all(
        b"POST /webhooks/stripe HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"id\":",
    )
    .await
    .expect("write");
    let secret = WebhookSecret::new(SECRET).expect("secret");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seed = 100;
    let busy = loop {
        // Until the slow request's handler holds the slot, deliveries still go through.
        let body = event_body(seed, false);
        seed += 1;
        let (status, reply) =
            h.post("/webhooks/stripe", Some("application/json"), Some(secret.header(now(), &body)), body).await;
        if status == 503 {
            break reply;
        }
        assert_eq!(status, 200, "{reply}");
        assert!(std::time::Instant::now() < deadline, "the slow client never held the slot");
    };
    assert_eq!(busy["error"], "busy", "{busy}");
    let stored = h.log_total();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("body_timeout") {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server never answered the slow client");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert_eq!(h.log_total(), stored, "nothing appended for the slow or the refused delivery");
    let body = event_body(seed + 1000, false);
    let (status, reply) =
        h.post("/webhooks/stripe", Some("application/json"), Some(secret.header(now(), &body)), body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(h.log_total(), stored + 1);
}

/// A client that trickles its headers (slowloris) is cut off once the header-read timeout has passed,
/// a connection that sends nothing at all too, and a well-behaved client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_do_not_arrive_in_time_close_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeout = std::time::Duration::from_millis(500);
    let h = start_with(None, 1 << 20, paystate_ingress::Limits::default(), timeout, AdminAuth::open()).await;
    let addr = h.public.trim_start_matches("http://").to_owned();
    let mut trickle = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let mut silent = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let started = std::time::Instant::now();
    let header = b"POST /webhooks/stripe HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-pad: ";
    // One byte at a time, each well inside the timeout: the request's headers never complete.
    let mut closed_after = None;
    for &b in header.iter().chain(std::iter::repeat(&b'a')) {
        if trickle.write_all(&[b]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(std::time::Duration::from_millis(100), trickle.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => {
                let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            }
            Err(_) => {}
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "the trickling client was never cut off");
    }
    let closed_after = closed_after.expect("closed");
    assert!(closed_after >= timeout, "closed after {closed_after:?}, before the timeout");
    // The silent connection is closed too (read gives end of file or an answer, not a hang).
    let mut buf = [0u8; 512];
    let silent_read = tokio::time::timeout(std::time::Duration::from_secs(20), silent.read(&mut buf)).await;
    assert!(silent_read.is_ok(), "a connection that sent nothing was kept open");
    // Meanwhile and after, a well-behaved client is answered.
    let secret = WebhookSecret::new(SECRET).expect("secret");
    let body = event_body(7, false);
    let (status, reply) =
        h.post("/webhooks/stripe", Some("application/json"), Some(secret.header(now(), &body)), body).await;
    assert_eq!(status, 200, "{reply}");
}

/// The streams' retention: once entries are removed, a reader whose cursor is older is answered 410 with
/// the oldest cursor it can read from, and reading from there gives the entries kept, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_the_retention_gets_410_with_the_oldest_cursor() {
    let h = start(None, 1 << 20).await;
    let secret = WebhookSecret::new(SECRET).expect("secret");
    for seed in 0..6 {
        let mut rng = Rng::new(seed);
        let (events, _) = generate(Scenario::CardSuccess, &mut rng, now() - 100);
        for e in &events {
            let body = e.body();
            let (status, _) =
                h.post("/webhooks/stripe", Some("application/json"), Some(secret.header(now(), &body)), body).await;
            assert_eq!(status, 200);
            h.projector.catch_up().expect("project"); // one update per event
        }
    }
    let end = h.store.projection.stream_end(paystate_store::Stream::Payments).expect("end");
    assert!(end > 10, "{end} payment updates");
    let actions_end = h.store.projection.stream_end(paystate_store::Stream::Actions).expect("end");
    assert!(actions_end > 4, "{actions_end} actions");
    let removed = paystate_projector::trim_streams(&h.store.projection, 4, |_| Ok(u64::MAX)).expect("trim");
    assert_eq!(removed, (end - 4) + (actions_end - 4));
    let resp = h.client.get(format!("{}/v1/streams/payments?after=0", h.admin)).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 410);
    let gone: Value = resp.json().await.expect("json");
    assert_eq!(gone["error"], "cursor_expired", "{gone}");
    assert_eq!(gone["oldest_cursor"], end - 4, "{gone}");
    let text = h.admin_text(&format!("/v1/streams/payments?after={}", end - 4)).await;
    let cursors: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("line")["cursor"].as_u64().expect("cursor"))
        .collect();
    assert_eq!(cursors, ((end - 3)..=end).collect::<Vec<_>>());
    // The actions stream is cut to its newest four as well.
    let resp = h.client.get(format!("{}/v1/streams/actions?after=0", h.admin)).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 410);
    let text = h.admin_text(&format!("/v1/streams/actions?after={}", actions_end - 4)).await;
    assert_eq!(text.lines().count(), 4, "{text}");
}

/// The list's filters keep exactly the payments they name (checked against the truths of the generated
/// scenarios), and every route answers an unknown parameter, a bad value or one out of range with a 400
/// JSON body naming it and the valid ones, never ignoring it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_filters_and_every_route_refuses_what_it_does_not_take() {
    let h = start(None, 1 << 20).await;
    let secret = WebhookSecret::new(SECRET).expect("secret");
    let mut rng = Rng::new(21);
    let t0 = now() - 30 * 86_400;
    let mut truths = Vec::new();
    for (i, scenario) in [Scenario::CardSuccess, Scenario::DisputeLost, Scenario::FullRefund, Scenario::CardSuccess]
        .into_iter()
        .enumerate()
    {
        let (events, truth) = generate(scenario, &mut rng, t0 + i as i64 * 86_400);
        for e in &events {
            let body = e.body();
            let (status, _) =
                h.post("/webhooks/stripe", Some("application/json"), Some(secret.header(now(), &body)), body).await;
            assert_eq!(status, 200);
        }
        truths.push((truth, events[0].json["data"]["object"].clone(), events.iter().map(|e| e.created).min()));
    }
    h.projector.catch_up().expect("project");
    let ids = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v["payments"]
            .as_array()
            .expect("payments")
            .iter()
            .map(|p| p["id"].as_str().expect("id").to_owned())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    let disputed = h.admin_json("/v1/payments?disputed=true").await;
    let want: Vec<String> = truths.iter().filter(|(t, _, _)| t.disputed).map(|(t, _, _)| t.id.clone()).collect();
    assert_eq!(ids(&disputed), sorted(want), "{disputed}");
    // Most generated intents have a customer (80 %): the first that has one.
    let (with, object) = truths
        .iter()
        .find_map(|(t, o, _)| o["customer"].as_str().map(|_| (t.id.clone(), o)))
        .expect("an intent with a customer");
    let customer = object["customer"].as_str().expect("customer");
    let by_customer = h.admin_json(&format!("/v1/payments?customer={customer}")).await;
    assert_eq!(ids(&by_customer), std::slice::from_ref(&with), "{by_customer}");
    let (key, value) = object["metadata"].as_object().and_then(|m| m.iter().next()).expect("metadata");
    let value = value.as_str().expect("text");
    let by_metadata = h.admin_json(&format!("/v1/payments?metadata%5B{key}%5D={value}")).await;
    assert_eq!(ids(&by_metadata), [with], "{by_metadata}");
    let first_created = &truths[0].2;
    // Created in the first two days: the first two payments.
    let until = first_created.expect("created") + 86_400 + 3600;
    let early = h.admin_json(&format!("/v1/payments?created[lte]={until}")).await;
    assert_eq!(ids(&early), sorted(vec![truths[0].0.id.clone(), truths[1].0.id.clone()]), "{early}");
    let late = h.admin_json(&format!("/v1/payments?created[gte]={}&disputed=false", until + 1)).await;
    assert_eq!(ids(&late), sorted(vec![truths[2].0.id.clone(), truths[3].0.id.clone()]), "{late}");
    let none = h.admin_json("/v1/payments?customer=cus_nobody").await;
    assert_eq!(ids(&none), Vec::<String>::new());

    let first = &truths[0].0.id;
    for (path, parameter) in [
        ("/v1/payments?bogus=1", "bogus"),
        ("/v1/payments?limit=0", "limit"),
        ("/v1/payments?limit=1001", "limit"),
        ("/v1/payments?limit=ten", "limit"),
        ("/v1/payments?disputed=yes", "disputed"),
        ("/v1/payments?created[gte]=yesterday", "created[gte]"),
        ("/v1/payments?lifecycle=bogus", "lifecycle"),
        ("/v1/payments?limit=1&limit=2", "limit"),
        (&format!("/v1/payments/{first}?acount=acct_1"), "acount"),
        (&format!("/v1/payments/{first}/history?x=1"), "x"),
        ("/v1/status?digest=maybe", "digest"),
        ("/v1/streams/actions?limit=20000", "limit"),
        ("/v1/streams/actions?wait_ms=600000", "wait_ms"),
        ("/v1/streams/actions?after=-1", "after"),
        ("/v1/log/0?from=x", "from"),
        ("/v1/log/0?offset=3", "offset"),
    ] {
        let (status, _, body) = admin_get(&h, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "bad_query", "{path}: {body}");
        assert_eq!(body["parameter"], parameter, "{path}: {body}");
        assert!(body["valid_parameters"].as_array().is_some_and(|v| !v.is_empty()), "{path}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains(parameter)), "{path}: {body}");
    }
    let (status, _, body) = admin_get(&h, "/v1/payments?lifecycle=bogus", None).await;
    assert!(body["message"].as_str().is_some_and(|m| m.contains("succeeded")), "{status} {body}");
    // The bounds themselves are accepted.
    for path in ["/v1/payments?limit=1", "/v1/payments?limit=1000", "/v1/streams/actions?limit=10000&wait_ms=0"] {
        assert_eq!(admin_get(&h, path, None).await.0, 200, "{path}");
    }
}

/// A group view as member `me` sees it: `b` owns `b_partitions`, `a` the rest of 4.
fn view_of(me: &str, a_url: &str, b_url: &str, b_partitions: &[u32]) -> GroupView {
    let member = |id: &str, url: &str, partitions: Vec<u32>| GroupMember {
        member_id: format!("m-{id}"),
        client_id: id.to_owned(),
        host: "/127.0.0.1".into(),
        partitions,
        admin_url: Some(url.to_owned()),
    };
    let a_parts: Vec<u32> = (0..4).filter(|p| !b_partitions.contains(p)).collect();
    let owned = if me == "a" { a_parts.clone() } else { b_partitions.to_vec() };
    let members = vec![member("a", a_url, a_parts), member("b", b_url, b_partitions.to_vec())];
    GroupView::new("g".into(), "Stable".into(), members, me, owned, Vec::new(), Vec::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_answers_for_a_payment_another_member_owns() {
    let (limits, timeout) = (paystate_ingress::Limits::default(), paystate_ingress::DEFAULT_HEADER_TIMEOUT);
    let (view_a, view_b) = (Arc::new(Mutex::new(None)), Arc::new(Mutex::new(None)));
    let auth = || AdminAuth::token(TOKEN, false);
    let a = start_in_group(None, 1 << 20, limits.clone(), timeout, auth(), Some(Arc::clone(&view_a))).await;
    let b = start_in_group(None, 1 << 20, limits, timeout, auth(), Some(Arc::clone(&view_b))).await;
    // Two payments in different partitions: x held by B (which owns its partition), y by A.
    let secret = WebhookSecret::new(SECRET).expect("secret");
    let mut rng = Rng::new(41);
    let (x_events, x) = generate(Scenario::DeclineThenSuccess, &mut rng, now() - 100);
    let partition = |id: &str| paystate_core::partition_of(id.as_bytes(), 4);
    let (y_events, y) = loop {
        let (events, truth) = generate(Scenario::CardSuccess, &mut rng, now() - 100);
        if partition(&truth.id) != partition(&x.id) {
            break (events, truth);
        }
    };
    for (h, events) in [(&b, &x_events), (&a, &y_events)] {
        for e in events {
            let body = e.body();
            let sig = Some(secret.header(now(), &body));
            assert_eq!(h.post("/webhooks/stripe", Some("application/json"), sig, body).await.0, 200);
        }
        h.projector.catch_up().expect("project");
    }
    *view_a.lock().expect("view") = Some(view_of("a", &a.admin, &b.admin, &[partition(&x.id)]));
    *view_b.lock().expect("view") = Some(view_of("b", &a.admin, &b.admin, &[partition(&x.id)]));
    let bearer = format!("Bearer {TOKEN}");
    let get = |h: &Harness, path: String, forwarded: bool| {
        let mut req = h.client.get(format!("{}{path}", h.admin)).header("authorization", &bearer);
        if forwarded {
            req = req.header(paystate_ingress::peers::FORWARDED_BY, "test");
        }
        async move {
            let r = req.send().await.expect("get");
            let by =
                r.headers().get(paystate_ingress::peers::ANSWERED_BY).map(|v| v.to_str().expect("ascii").to_owned());
            let status = r.status().as_u16();
            (status, by, r.json::<Value>().await.expect("json"))
        }
    };

    // A, which never saw x, answers for it as B does: B answered (with the token A was given).
    let direct = get(&b, format!("/v1/payments/{}", x.id), false).await;
    assert_eq!((direct.0, direct.1.as_deref()), (200, Some("b")), "{}", direct.2);
    assert_eq!(direct.2["lifecycle"], "succeeded");
    let via_a = get(&a, format!("/v1/payments/{}", x.id), false).await;
    assert_eq!((via_a.0, via_a.1.as_deref()), (200, Some("b")), "{}", via_a.2);
    assert_eq!(via_a.2, direct.2);
    // By an id that names no partition (an event's): every other member is asked.
    let history = get(&a, format!("/v1/payments/{}/history", x_events[0].id), false).await;
    assert_eq!((history.0, history.1.as_deref()), (200, Some("b")), "{}", history.2);
    assert_eq!(history.2["id"], x.id.as_str());
    assert_eq!(history.2["history"].as_array().map(Vec::len), Some(x_events.len()));
    // The other way round, and a payment held where it is asked answers there.
    let y_via_b = get(&b, format!("/v1/payments/{}", y.id), false).await;
    assert_eq!((y_via_b.0, y_via_b.1.as_deref()), (200, Some("a")), "{}", y_via_b.2);
    assert_eq!(y_via_b.2["id"], y.id.as_str());
    assert_eq!(get(&a, format!("/v1/payments/{}", y.id), false).await.1.as_deref(), Some("a"));
    // A forwarded request is answered from what the member holds, never forwarded again.
    let once = get(&b, format!("/v1/payments/{}", y.id), true).await;
    assert_eq!((once.0, once.1.as_deref()), (404, Some("b")), "{}", once.2);
    // Nowhere in the group: 404 saying the others were asked.
    let none = get(&a, "/v1/payments/pi_nowhere".into(), false).await;
    assert_eq!(none.0, 404, "{}", none.2);
    let message = none.2["message"].as_str().unwrap_or_default();
    assert!(message.contains("the 1 other member(s) of group g"), "{message}");

    // A copy A holds of a payment whose partition B owns now is not served: B's answer is.
    *view_a.lock().expect("view") = Some(view_of("a", &a.admin, &b.admin, &[partition(&x.id), partition(&y.id)]));
    *view_b.lock().expect("view") = Some(view_of("b", &a.admin, &b.admin, &[partition(&x.id), partition(&y.id)]));
    let moved = get(&a, format!("/v1/payments/{}", y.id), false).await;
    assert_eq!((moved.0, moved.1.as_deref()), (404, Some("b")), "B does not hold y: {}", moved.2);
    let stale = get(&a, format!("/v1/payments/{}", y.id), true).await;
    assert_eq!(stale.0, 404, "A does not serve its stale copy to a forwarded request: {}", stale.2);

    // The owner unreachable (nothing can listen on port 0): 502, naming it.
    *view_a.lock().expect("view") = Some(view_of("a", &a.admin, "http://127.0.0.1:0", &[partition(&x.id)]));
    let down = get(&a, format!("/v1/payments/{}", x.id), false).await;
    assert_eq!(down.0, 502, "{}", down.2);
    assert_eq!(down.2["error"], "member_unreachable");
    assert!(down.2["message"].as_str().unwrap_or_default().contains("b at http://127.0.0.1:0"), "{}", down.2);
    let down = get(&a, format!("/v1/payments/{}/history", x_events[0].id), false).await;
    assert_eq!((down.0, down.2["error"].as_str()), (502, Some("member_unreachable")), "{}", down.2);
}
