//! `paystate catch-up` against two real servers on loopback:
//!
//! - a stateful fake of Stripe's Events API, in this file, serving the events `simulate --events` wrote
//!   (newest first, `created[gte]`, `starting_after`, `types[]`, `limit` ≤ 100, Bearer key; unknown
//!   parameters refused as Stripe does), with a 429 carrying `Retry-After`, a 500 and a connection reset
//!   on the way. After an outage in which half of the events never reached the webhook, catch-up appends
//!   exactly the missing ones, a second run appends nothing, and `verify` ends "N passed, 0 failed"; `serve
//!   --catch-up-every-mins` does the same by itself at start.
//! - the same into the Kafka log (Apache Kafka, as the Kafka tests start it).
//! - stripe-mock, Stripe's own mock of its API (installed by tests/run, `STRIPE_MOCK`), which checks every
//!   request against Stripe's OpenAPI specification: listing the platform's and every connected account's
//!   events, with types, is accepted.

mod common;

use common::{Server, BIN};

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_catch_up_test_secret";
const KEY: &str = "rk_test_catch_up_key_51Hx";

/// What the fake API does to the request with this number (1-based), before answering it properly.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// 429 with `Retry-After: 1`.
    TooManyRequests,
    /// 500 with Stripe's error body.
    ServerError,
    /// The connection closed after the request was read, with no answer.
    Reset,
}

#[derive(Default)]
struct Seen {
    /// Each request: its arrival and its target.
    requests: Vec<(Instant, String)>,
    /// Each answered page: the number of events in it.
    pages: Vec<usize>,
}

struct FakeApi {
    base: String,
    seen: Arc<Mutex<Seen>>,
}

/// Starts the fake Events API on port 0 of this process; `faults[n]` for the request numbered n+1.
fn fake_api(events: Vec<Value>, faults: Vec<Option<Fault>>) -> FakeApi {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut sorted = events;
    // Stripe lists newest first.
    sorted.sort_by(|a, b| {
        b["created"].as_i64().cmp(&a["created"].as_i64()).then_with(|| b["id"].as_str().cmp(&a["id"].as_str()))
    });
    let sorted = Arc::new(sorted);
    let seen2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (events, seen, faults) = (Arc::clone(&sorted), Arc::clone(&seen2), faults.clone());
            std::thread::spawn(move || connection(stream, &events, &seen, &faults));
        }
    });
    FakeApi { base, seen }
}

/// Serves one connection's requests (keep-alive) until the client closes it.
fn connection(stream: TcpStream, events: &[Value], seen: &Mutex<Seen>, faults: &[Option<Fault>]) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let target = request_line.split(' ').nth(1).unwrap_or("").to_owned();
        let number = {
            let mut s = seen.lock().expect("lock");
            s.requests.push((Instant::now(), target.clone()));
            s.requests.len()
        };
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let (status, extra, body) = match faults.get(number - 1).copied().flatten() {
            Some(Fault::Reset) => return,
            Some(Fault::TooManyRequests) => (429, "Retry-After: 1\r\n", error("Too many requests", "rate_limit")),
            Some(Fault::ServerError) => (500, "", error("An unknown error occurred", "api_error")),
            None => answer(&target, header("authorization"), header("stripe-account"), events, seen),
        };
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            429 => "Too Many Requests",
            _ => "Internal Server Error",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        );
        if out.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn error(message: &str, kind: &str) -> String {
    serde_json::json!({"error": {"message": message, "type": kind}}).to_string()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).expect("two hex digits");
                out.push(u8::from_str_radix(hex, 16).expect("percent-encoded byte"));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// A proper answer to `GET target`, as Stripe's API gives it.
fn answer(
    target: &str,
    authorization: Option<&str>,
    account: Option<&str>,
    events: &[Value],
    seen: &Mutex<Seen>,
) -> (u16, &'static str, String) {
    if authorization != Some(&format!("Bearer {KEY}")) {
        return (401, "", error("Invalid API Key provided", "invalid_request_error"));
    }
    if account.is_some() {
        return (400, "", error("this account has no connected accounts", "invalid_request_error"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/v1/events" {
        return (400, "", error(&format!("Unrecognized request URL (GET: {path})"), "invalid_request_error"));
    }
    let (mut limit, mut gte, mut after, mut types) = (10usize, i64::MIN, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k), decode(v));
        match k.as_str() {
            "limit" => match v.parse::<usize>() {
                Ok(n @ 1..=100) => limit = n,
                _ => return (400, "", error("Invalid integer: limit must be 1 to 100", "invalid_request_error")),
            },
            "created[gte]" => gte = v.parse().expect("created[gte] an integer"),
            "starting_after" => after = Some(v),
            "types[]" => types.push(v),
            other => return (400, "", error(&format!("Received unknown parameter: {other}"), "invalid_request_error")),
        }
    }
    let listed: Vec<&Value> = events
        .iter()
        .filter(|e| e["created"].as_i64().is_some_and(|c| c >= gte))
        .filter(|e| types.is_empty() || types.iter().any(|t| e["type"] == t.as_str()))
        .collect();
    let start = match &after {
        None => 0,
        Some(id) => match listed.iter().position(|e| e["id"] == id.as_str()) {
            Some(i) => i + 1,
            None => return (400, "", error(&format!("No such event: '{id}'"), "invalid_request_error")),
        },
    };
    let page: Vec<&Value> = listed.iter().skip(start).take(limit).copied().collect();
    let has_more = start + page.len() < listed.len();
    seen.lock().expect("lock").pages.push(page.len());
    let body = serde_json::json!({"object": "list", "url": "/v1/events", "has_more": has_more, "data": page});
    // Pretty-printed, as Stripe's API answers.
    (200, "", serde_json::to_string_pretty(&body).expect("json"))
}

/// Starts `serve` on ports the system picks.
fn start_serve(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    Server::spawn(
        common::serve_command(data, SECRET)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit()),
    )
}

/// SIGTERM, and a clean exit.
fn stop(mut server: Server) {
    let status = server.terminate();
    assert!(status.success(), "serve exited {status}");
}

/// `simulate` 150 payments (enough for every partition's event time to pass each decline's grace period) of which about half the events are lost; returns the events Stripe created and
/// the ids of those delivered.
fn outage(server: &Server, dir: &Path) -> (Vec<Value>, BTreeSet<String>) {
    let out = Command::new(BIN)
        .args(["simulate", "--url", &server.public, "--secret", SECRET, "--payments", "150", "--seed", "11"])
        .args(["--lose", "0.5"])
        .arg("--events")
        .arg(dir.join("events.jsonl"))
        .arg("--truth")
        .arg(dir.join("truth.jsonl"))
        .arg("--acked")
        .arg(dir.join("acked.txt"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("simulate");
    assert!(out.status.success(), "simulate: {}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<Value> = std::fs::read_to_string(dir.join("events.jsonl"))
        .expect("events")
        .lines()
        .map(|l| serde_json::from_str(l).expect("event line"))
        .collect();
    let acked: BTreeSet<String> = std::fs::read_to_string(dir.join("acked.txt"))
        .expect("acked")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    (events, acked)
}

/// `verify ARGS` against the truth `simulate` wrote in `dir`: its verdict line.
fn verify(args: &[&str], dir: &Path) -> String {
    common::verify(&dir.join("truth.jsonl"), args).verdict().to_owned()
}

fn catch_up(data: &Path, api: &str, key_file: &Path, extra: &[&str]) -> (Value, String) {
    let out = Command::new(BIN)
        .args(["catch-up", "--json", "--data-dir"])
        .arg(data)
        .args(["--api-base", api, "--api-key-file"])
        .arg(key_file)
        .args(extra)
        .env("RUST_LOG", "info")
        .output()
        .expect("catch-up");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "catch-up failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    (serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary {stdout:?}: {e}")), stderr)
}

#[test]
fn an_outage_is_caught_up_exactly_once_through_429s_500s_and_resets() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let server = start_serve(&data, &[], &[]);
    let (events, delivered) = outage(&server, dir.path());
    let total = events.len();
    let missing = events.iter().filter(|e| !delivered.contains(e["id"].as_str().expect("id"))).count();
    assert!(missing > total / 4 && missing < total * 3 / 4, "{missing} of {total} lost");
    let before = verify(&["--admin", &server.admin], dir.path());
    assert!(!before.ends_with(" 0 failed"), "the outage must cost something: {before}");
    stop(server);

    // After the first page: a 429 (Retry-After: 1), a 500 and a reset connection, then the next page.
    let faults = vec![None, Some(Fault::TooManyRequests), Some(Fault::ServerError), Some(Fault::Reset)];
    let api = fake_api(events.clone(), faults);
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("key");
    let since = events.iter().filter_map(|e| e["created"].as_i64()).min().expect("events");
    let (first, stderr) = catch_up(&data, &api.base, &key_file, &["--since", &since.to_string()]);
    assert!(!stderr.contains(KEY), "the API key is never logged");
    assert_eq!(first["seen"], total, "{first}");
    assert_eq!(first["appended"], missing, "{first}");
    assert_eq!(first["already_present"], total - missing, "{first}");
    assert_eq!(first["skipped"], 0, "{first}");
    assert_eq!(first["retries"], 3, "{first}");
    let pages = total.div_ceil(100);
    assert_eq!(first["pages"], pages, "{first}");
    assert_eq!(first["requests"], pages + 3, "{first}");
    {
        let seen = api.seen.lock().expect("lock");
        // The 429 said one second: the next request waited at least that.
        let gap = seen.requests[2].0 - seen.requests[1].0;
        assert!(pages >= 2, "the faults fall between pages");
        assert!(gap >= Duration::from_secs(1), "Retry-After honoured: {gap:?}");
        assert!(seen.requests.iter().all(|(_, t)| t.contains("limit=100")), "limit=100 on every page");
        assert_eq!(seen.pages.iter().sum::<usize>(), total);
    }

    let (second, _) = catch_up(&data, &api.base, &key_file, &["--since", &since.to_string()]);
    assert_eq!(second["appended"], 0, "{second}");
    assert_eq!(second["already_present"], total, "{second}");

    // A type filter is passed on: only those are listed.
    let (typed, _) =
        catch_up(&data, &api.base, &key_file, &["--since", &since.to_string(), "--type", "charge.refunded"]);
    let refunded = events.iter().filter(|e| e["type"] == "charge.refunded").count();
    assert_eq!(typed["seen"], refunded, "{typed}");

    let after = verify(&["--data-dir", data.to_str().expect("utf-8")], dir.path());
    assert_eq!(after, "150 passed, 0 failed");

    // The records say where they came from.
    let store = paystate_store::Store::open_log(&data).expect("log");
    let mut fetched = 0;
    for p in 0..store.partitions() {
        store
            .scan(p, 0, u64::MAX, |_, r| {
                if r.origin == paystate_store::Origin::EventsApi {
                    fetched += 1;
                    assert!(r.signature.is_empty());
                    assert!(!delivered.contains(r.event_id), "{} was delivered, not fetched", r.event_id);
                }
            })
            .expect("scan");
    }
    assert_eq!(fetched, missing);
}

#[test]
fn serve_catches_up_by_itself_at_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let server = start_serve(&data, &[], &[]);
    let (events, delivered) = outage(&server, dir.path());
    let missing = events.len() - events.iter().filter(|e| delivered.contains(e["id"].as_str().expect("id"))).count();
    stop(server);

    let api = fake_api(events.clone(), Vec::new());
    // The window reaches back over every simulated event: the newest received is now, the oldest event
    // months before.
    let oldest = events.iter().filter_map(|e| e["created"].as_i64()).min().expect("events");
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs())
            .expect("secs");
    let window_mins = ((now - oldest) / 60 + 60).to_string();
    let server = start_serve(
        &data,
        &["--catch-up-every-mins", "60", "--api-base", &api.base, "--catch-up-window-mins", &window_mins],
        &[("STRIPE_API_KEY", KEY)],
    );
    let admin = server.admin.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let verdict = verify(&["--admin", &admin], dir.path());
        if verdict == "150 passed, 0 failed" {
            break;
        }
        assert!(Instant::now() < deadline, "serve did not catch up within 60 s: {verdict}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(api.seen.lock().expect("lock").pages.iter().sum::<usize>(), events.len());
    stop(server);
    // Stopped cleanly, and the log holds each missing event once.
    let log = paystate_store::Store::open_log(&data).expect("log");
    let mut fetched = BTreeSet::new();
    for p in 0..log.partitions() {
        log.scan(p, 0, u64::MAX, |_, r| {
            if r.origin == paystate_store::Origin::EventsApi {
                assert!(fetched.insert(r.event_id.to_owned()), "{} fetched twice", r.event_id);
            }
        })
        .expect("scan");
    }
    assert_eq!(fetched.len(), missing);
}

/// With the Kafka log (Apache Kafka started by `tests/kafka/cluster`): `serve --log kafka` takes the outage,
/// `catch-up --log kafka` appends exactly the missing events to the raw topic (the projector folds them as
/// they come), a second run appends nothing, `verify` passes, and `serve --log kafka --catch-up-every-mins`
/// finds, from the raw topic's newest receive time, that nothing is missing.
#[test]
fn an_outage_is_caught_up_into_the_kafka_log() {
    let dir = tempfile::tempdir().expect("tmp");
    let kafka = common::Kafka::start("catch-up", 1);
    let data = dir.path().join("data");
    let on_kafka = ["--log", "kafka", "--kafka-brokers", kafka.brokers.as_str(), "--kafka-partitions", "4"];
    let server = start_serve(&data, &on_kafka, &[]);
    let (events, delivered) = outage(&server, dir.path());
    let total = events.len();
    let missing = events.iter().filter(|e| !delivered.contains(e["id"].as_str().expect("id"))).count();
    assert!(missing > 0, "the outage lost events");

    let api = fake_api(events.clone(), Vec::new());
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("key");
    let since = events.iter().filter_map(|e| e["created"].as_i64()).min().expect("events").to_string();
    let args = [&on_kafka[..], &["--since", since.as_str()]].concat();
    let (first, stderr) = catch_up(&data, &api.base, &key_file, &args);
    assert!(!stderr.contains(KEY), "the API key is never logged");
    assert_eq!(first["seen"], total, "{first}");
    assert_eq!(first["appended"], missing, "{first}");
    assert_eq!(first["already_present"], total - missing, "{first}");
    let (second, _) = catch_up(&data, &api.base, &key_file, &args);
    assert_eq!(second["appended"], 0, "{second}");
    assert_eq!(second["already_present"], total, "{second}");

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let verdict = verify(&["--admin", &server.admin], dir.path());
        if verdict == "150 passed, 0 failed" {
            break;
        }
        assert!(Instant::now() < deadline, "the projector never folded the fetched events: {verdict}");
        std::thread::sleep(Duration::from_millis(500));
    }
    stop(server);

    // serve's own runs on Kafka: from the newest receive time in the raw topic, minus a window reaching
    // back over every event, nothing is missing any more.
    let oldest = events.iter().filter_map(|e| e["created"].as_i64()).min().expect("events");
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs())
            .expect("secs");
    let window_mins = ((now - oldest) / 60 + 60).to_string();
    let periodic = ["--catch-up-every-mins", "60", "--api-base", &api.base, "--catch-up-window-mins", &window_mins];
    let server = start_serve(&data, &[&on_kafka[..], &periodic[..]].concat(), &[("STRIPE_API_KEY", KEY)]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let run = loop {
        let (code, body) = common::http_get(&format!("{}/v1/status", server.admin));
        assert_eq!(code, 200, "{body}");
        let status: Value = serde_json::from_str(&body).expect("status");
        if let Some(run) = status["catch_up_runs"].as_array().and_then(|r| r.first()) {
            break run.clone();
        }
        assert!(Instant::now() < deadline, "serve ran no catch-up: {status}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(run["summary"]["seen"], total, "{run}");
    assert_eq!(run["summary"]["appended"], 0, "{run}");
    assert_eq!(run["summary"]["already_present"], total, "{run}");
    stop(server);
}

/// stripe-mock: `STRIPE_MOCK` (tests/run installs it), else `stripe-mock` on the PATH; never skipped.
fn stripe_mock() -> (Child, String) {
    let bin = std::env::var("STRIPE_MOCK").unwrap_or_else(|_| "stripe-mock".into());
    let mut child = Command::new(&bin)
        .args(["-http-addr", "127.0.0.1:"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("stripe-mock ({bin}) does not run: {e}; tests/run installs it (go install github.com/stripe/stripe-mock@v0.203.0) and sets STRIPE_MOCK"));
    // It prints "Listening for HTTP at address: 127.0.0.1:PORT" on one of its outputs.
    let (tx, rx) = std::sync::mpsc::channel();
    for out in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("Listening for HTTP at address: ").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
    }
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("stripe-mock listening within 60 s");
    (child, format!("http://{addr}"))
}

#[test]
fn stripe_mock_accepts_every_request_catch_up_sends() {
    let (mut mock, base) = stripe_mock();
    // The mock validates: an unknown parameter is refused, so acceptance below means something.
    let (code, body) = common::http_get_with(&format!("{base}/v1/events?bogus=1"), Some("Bearer sk_test_123"));
    assert_eq!(code, 400, "{body}");

    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    drop(paystate_store::Store::open(&data, 4).expect("data dir"));
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "sk_test_123456789012\n").expect("key");
    let (all, _) = catch_up(
        &data,
        &base,
        &key_file,
        &["--all-accounts", "--since", "1", "--type", "charge.succeeded", "--type", "payment_intent.succeeded"],
    );
    // The platform and the one account stripe-mock lists; one page each.
    assert_eq!(all["accounts"], 2, "{all}");
    assert_eq!(all["pages"], 2, "{all}");
    assert_eq!(all["retries"], 0, "{all}");
    assert!(all["seen"].as_u64().expect("seen") >= 1, "{all}");
    let (listed, _) = catch_up(&data, &base, &key_file, &["--account", "acct_1032D82eZvKYlo2C"]);
    assert_eq!(listed["accounts"], 1, "{listed}");
    assert_eq!(listed["retries"], 0, "{listed}");
    let _ = mock.kill();
    let _ = mock.wait();
}

#[test]
fn a_refused_key_is_explained_and_nothing_is_appended() {
    let api = fake_api(Vec::new(), Vec::new());
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    drop(paystate_store::Store::open(&data, 4).expect("data dir"));
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "rk_test_not_the_right_key").expect("key");
    let (_, stderr, ok) = common::paystate(&[
        "catch-up",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--api-base",
        &api.base,
        "--api-key-file",
        key_file.to_str().expect("utf-8"),
    ]);
    assert!(!ok);
    assert!(stderr.contains("Stripe answered 401") && stderr.contains("Invalid API Key provided"), "{stderr}");
    assert!(stderr.contains("--api-key-file / STRIPE_API_KEY"), "{stderr}");
    assert!(!stderr.contains("rk_test_not_the_right_key"), "the key is never printed: {stderr}");
    std::fs::write(&key_file, "pk_test_publishable_key").expect("key");
    let (_, stderr, ok) = common::paystate(&[
        "catch-up",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--api-key-file",
        key_file.to_str().expect("utf-8"),
    ]);
    assert!(!ok);
    assert!(stderr.contains("publishable key"), "{stderr}");
}
