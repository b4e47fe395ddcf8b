//! Catch-up: the events Stripe created that never reached the webhook (an outage longer than Stripe's
//! retries, a disabled endpoint), fetched back from Stripe's Events API and appended to the log.
//!
//! `GET /v1/events` lists an account's events newest first (`limit=100`, `starting_after` the last id of
//! the previous page, `created[gte]` the start, optionally `types[]`). Every listed event whose id the log
//! does not hold yet is appended as a record of origin [`Origin::EventsApi`] (no signature: the trust comes
//! from TLS and the API key), the rest are counted as already there. Requests stay under a rate
//! ([`CatchUpOptions::max_requests_per_sec`], below Stripe's read limits), and 429s, 5xx and network
//! failures are retried with backoff, honouring `Retry-After` and `Stripe-Should-Retry`.
//!
//! Connect: a platform lists a connected account's events with `Stripe-Account`; when the API's rendering
//! of such an event has no `account` field (Connect webhooks always have one), the account it was listed
//! under is written into the body, so that its payment key is the one its webhooks would have had.

use crate::log_record;
use paystate_store::{AppendError, LogSink, Origin};
use paystate_stripe::{parse_event, ParsedEvent};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
// tokio's clock, which a test can pause and advance: the pacing and the retry waits are timed by it.
use tokio::time::Instant;

/// Events listed per request (Stripe's maximum).
pub const PAGE_LIMIT: u32 = 100;
/// Stripe's limit on `types[]` in one list request.
pub const MAX_TYPES: usize = 20;
/// Longest wait between two attempts, whatever `Retry-After` says.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Why a catch-up run stopped. What it appended before stays appended; a second run continues.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// The API key is not one the Events API takes.
    #[error("{0}")]
    Key(String),
    /// The options cannot make a valid request.
    #[error("{0}")]
    Options(String),
    /// Stripe refused the request for good (not worth retrying).
    #[error("Stripe answered {status} to GET {path}: {message}{hint}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The path asked for.
        path: String,
        /// Stripe's `error.message`, or the body's start.
        message: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// Every attempt failed.
    #[error("GET {path} failed {attempts} times, the last: {last}")]
    GaveUp {
        /// The path asked for.
        path: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// A page was not a Stripe list.
    #[error("GET {path} answered something that is not a Stripe list: {why}")]
    Page {
        /// The path asked for.
        path: String,
        /// What was wrong.
        why: String,
    },
    /// The log did not take a record: the run stops (the events are listed again next time).
    #[error("the log did not take event {event_id}: {source}")]
    Append {
        /// The event.
        event_id: String,
        /// The sink's error.
        source: AppendError,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A Stripe secret (`sk_…`) or restricted (`rk_…`) key. Never printed: `Debug` shows its kind only.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Checks the key's shape: a publishable key (`pk_…`) cannot list events.
    pub fn new(key: &str) -> Result<Self, CatchUpError> {
        let key = key.trim();
        let ok_prefix = ["sk_test_", "sk_live_", "rk_test_", "rk_live_"].iter().any(|p| key.starts_with(p));
        if key.starts_with("pk_") {
            return Err(CatchUpError::Key(
                "that is a publishable key (pk_…): listing events needs a restricted key (rk_…) with \"Events: Read\", or a secret key (sk_…)".into(),
            ));
        }
        if !ok_prefix || key.len() < 12 || key.chars().any(char::is_whitespace) {
            return Err(CatchUpError::Key(
                "an API key starts with rk_test_, rk_live_, sk_test_ or sk_live_ (a restricted key with \"Events: Read\" is enough)".into(),
            ));
        }
        Ok(ApiKey(key.to_owned()))
    }

    /// Test mode or live mode.
    pub fn livemode(&self) -> bool {
        self.0.contains("_live_")
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.0.starts_with("rk_") { "restricted" } else { "secret" };
        let mode = if self.livemode() { "live" } else { "test" };
        write!(f, "ApiKey({kind}, {mode} mode, redacted)")
    }
}

/// Whose events to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The key's own account.
    Platform,
    /// These connected accounts (`Stripe-Account`), not the platform's own.
    Accounts(Vec<String>),
    /// The platform and every connected account (`GET /v1/accounts`, paged).
    AllAccounts,
}

/// What a catch-up run does.
#[derive(Debug, Clone)]
pub struct CatchUpOptions {
    /// Where Stripe's API is (`https://api.stripe.com`; another base for tests).
    pub api_base: String,
    /// The key.
    pub key: ApiKey,
    /// Whose events.
    pub scope: Scope,
    /// Only these event types (`types[]`; at most [`MAX_TYPES`]); empty: all.
    pub types: Vec<String>,
    /// Events created at or after this, unix seconds (`created[gte]`).
    pub since: i64,
    /// Requests per second at most.
    pub max_requests_per_sec: f64,
    /// Attempts per request before giving up.
    pub max_attempts: u32,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// The log's partition count (a record's partition).
    pub partitions: u32,
}

/// Counts of one event type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TypeCount {
    /// Listed.
    pub seen: u64,
    /// Appended (not in the log before).
    pub appended: u64,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Accounts listed (the platform counts as one).
    pub accounts: u64,
    /// Pages of events read.
    pub pages: u64,
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Requests retried (429, 5xx, network).
    pub retries: u64,
    /// Events listed.
    pub seen: u64,
    /// Events appended to the log.
    pub appended: u64,
    /// Events the log held already.
    pub already_present: u64,
    /// Events that could not be appended for what they are (unreadable, another account's), each logged.
    pub skipped: u64,
    /// Per event type.
    pub per_type: BTreeMap<String, TypeCount>,
}

/// Where a run is, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Counts so far.
    pub summary: &'a Summary,
    /// The connected account being listed (`None`: the platform).
    pub account: Option<&'a str>,
    /// `created` of the oldest event listed so far in this account (the list goes newest first, down to
    /// `since`).
    pub reached: Option<i64>,
}

#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
    has_more: bool,
}

#[derive(Deserialize)]
struct AccountPage {
    data: Vec<Identified>,
    has_more: bool,
}

#[derive(Deserialize)]
struct Identified {
    id: String,
}

#[derive(Deserialize)]
struct StripeErrorBody {
    error: StripeError,
}

#[derive(Deserialize)]
struct StripeError {
    message: Option<String>,
}

struct Client<'o> {
    http: reqwest::Client,
    opts: &'o CatchUpOptions,
    next_slot: Instant,
    interval: Duration,
}

impl<'o> Client<'o> {
    fn new(opts: &'o CatchUpOptions) -> Result<Self, CatchUpError> {
        if !(opts.max_requests_per_sec > 0.0 && opts.max_requests_per_sec.is_finite()) {
            return Err(CatchUpError::Options("the request rate must be a positive number per second".into()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("paystate/", env!("CARGO_PKG_VERSION"), " (catch-up)"))
            .timeout(opts.request_timeout)
            .connect_timeout(opts.request_timeout.min(Duration::from_secs(10)))
            .build()?;
        Ok(Client {
            http,
            opts,
            next_slot: Instant::now(),
            interval: Duration::from_secs_f64(1.0 / opts.max_requests_per_sec),
        })
    }

    /// Waits for the rate limit's next slot.
    async fn slot(&mut self) {
        let now = Instant::now();
        if self.next_slot > now {
            tokio::time::sleep(self.next_slot - now).await;
        }
        self.next_slot = self.next_slot.max(now) + self.interval;
    }

    /// GETs `path` with `query`, retrying what Stripe says to retry; the body of the 2xx.
    async fn get(
        &mut self,
        path: &str,
        query: &[(&str, String)],
        account: Option<&str>,
        summary: &mut Summary,
    ) -> Result<Vec<u8>, CatchUpError> {
        let url = format!("{}{path}", self.opts.api_base.trim_end_matches('/'));
        let attempts = self.opts.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            self.slot().await;
            summary.requests += 1;
            let mut request = self.http.get(&url).query(query).bearer_auth(&self.opts.key.0);
            if let Some(account) = account {
                request = request.header("Stripe-Account", account);
            }
            let wait = match request.send().await {
                Err(e) => {
                    last = describe(&e);
                    backoff(attempt)
                }
                Ok(response) => {
                    let status = response.status();
                    let should_retry = header(&response, "stripe-should-retry").map(|v| v.eq_ignore_ascii_case("true"));
                    let retry_after = header(&response, "retry-after").and_then(|v| v.trim().parse::<u64>().ok());
                    match response.bytes().await {
                        Err(e) => {
                            last = format!("{status}, then the body failed: {}", describe(&e));
                            backoff(attempt)
                        }
                        Ok(body) if status.is_success() => return Ok(body.to_vec()),
                        Ok(body) => {
                            let message = error_message(&body);
                            let Some(wait) = retry_wait(status, should_retry, retry_after, attempt) else {
                                return Err(CatchUpError::Refused {
                                    status: status.as_u16(),
                                    path: path.to_owned(),
                                    message,
                                    hint: hint(status),
                                });
                            };
                            last = format!("{status}: {message}");
                            wait
                        }
                    }
                }
            };
            if attempt < attempts {
                summary.retries += 1;
                tracing::warn!(path, attempt, wait_ms = wait.as_millis() as u64, why = %last, "catch-up: retrying");
                tokio::time::sleep(wait).await;
            }
        }
        Err(CatchUpError::GaveUp { path: path.to_owned(), attempts, last })
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<StripeErrorBody>(body) {
        Ok(StripeErrorBody { error: StripeError { message: Some(m) } }) => m,
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "(empty body)".into()
            } else {
                text.chars().take(200).collect()
            }
        }
    }
}

fn hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => " (check --api-key-file / STRIPE_API_KEY: the key was not accepted)",
        StatusCode::FORBIDDEN => {
            " (a restricted key needs the \"Events: Read\" permission, and \"Connect: Read\" for --all-accounts)"
        }
        _ => "",
    }
}

/// How long to wait before attempt `attempt + 1` after an answer of `status` (not a success), with the
/// `Stripe-Should-Retry` and `Retry-After` (seconds) headers it carried; `None`: not worth retrying.
/// Stripe's header decides when sent; else 429, 409 (an idempotency conflict) and 5xx are retried. The
/// wait is what `Retry-After` asks, else the backoff, and never more than [`MAX_RETRY_WAIT`].
fn retry_wait(
    status: StatusCode,
    should_retry: Option<bool>,
    retry_after: Option<u64>,
    attempt: u32,
) -> Option<Duration> {
    let retry = should_retry.unwrap_or(
        status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::CONFLICT || status.is_server_error(),
    );
    retry.then(|| retry_after.map_or_else(|| backoff(attempt), Duration::from_secs).min(MAX_RETRY_WAIT))
}

/// 0.5 s, 1 s, 2 s, … up to 16 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.saturating_sub(1).min(5)))
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Lists the events of `opts.scope` created since `opts.since` and appends to `sink` those whose ids are
/// not in `known` (adding them to it). `progress` is called after every page.
pub async fn catch_up(
    opts: &CatchUpOptions,
    known: &mut HashSet<String>,
    sink: &dyn LogSink,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<Summary, CatchUpError> {
    if opts.types.len() > MAX_TYPES {
        return Err(CatchUpError::Options(format!(
            "{} event types given; Stripe takes at most {MAX_TYPES} in one list",
            opts.types.len()
        )));
    }
    let mut client = Client::new(opts)?;
    let mut summary = Summary::default();
    let accounts: Vec<Option<String>> = match &opts.scope {
        Scope::Platform => vec![None],
        Scope::Accounts(list) => list.iter().cloned().map(Some).collect(),
        Scope::AllAccounts => {
            let mut all = vec![None];
            all.extend(list_accounts(&mut client, &mut summary).await?.into_iter().map(Some));
            all
        }
    };
    for account in &accounts {
        summary.accounts += 1;
        events_of(&mut client, account.as_deref(), known, sink, &mut summary, progress).await?;
    }
    Ok(summary)
}

async fn list_accounts(client: &mut Client<'_>, summary: &mut Summary) -> Result<Vec<String>, CatchUpError> {
    let path = "/v1/accounts";
    let mut out = Vec::new();
    loop {
        let mut query = vec![("limit", PAGE_LIMIT.to_string())];
        if let Some(last) = out.last() {
            query.push(("starting_after", String::clone(last)));
        }
        let body = client.get(path, &query, None, summary).await?;
        let page: AccountPage = serde_json::from_slice(&body)
            .map_err(|e| CatchUpError::Page { path: path.to_owned(), why: e.to_string() })?;
        let before = out.len();
        out.extend(page.data.into_iter().map(|a| a.id));
        if !page.has_more || out.len() == before {
            return Ok(out);
        }
    }
}

async fn events_of(
    client: &mut Client<'_>,
    account: Option<&str>,
    known: &mut HashSet<String>,
    sink: &dyn LogSink,
    summary: &mut Summary,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<(), CatchUpError> {
    let path = "/v1/events";
    let opts = client.opts;
    let mut cursor: Option<String> = None;
    let mut reached = None;
    loop {
        let mut query = vec![("limit", PAGE_LIMIT.to_string()), ("created[gte]", opts.since.to_string())];
        query.extend(opts.types.iter().map(|t| ("types[]", t.clone())));
        if let Some(c) = &cursor {
            query.push(("starting_after", c.clone()));
        }
        let body = client.get(path, &query, account, summary).await?;
        let page: Page<'_> = serde_json::from_slice(&body)
            .map_err(|e| CatchUpError::Page { path: path.to_owned(), why: e.to_string() })?;
        summary.pages += 1;
        let received_at_ms = now_ms();
        let mut records = Vec::new();
        let mut last_id = None;
        for raw in &page.data {
            summary.seen += 1;
            let Some(body) = event_body(raw.get().as_bytes(), account) else {
                summary.skipped += 1;
                continue;
            };
            let Ok(event) = parse_event(&body) else {
                summary.skipped += 1;
                continue;
            };
            let id = event.id().to_owned();
            let count = summary.per_type.entry(event.event_type().to_owned()).or_default();
            count.seen += 1;
            reached = event.created().or(reached);
            last_id = Some(id.clone());
            if known.contains(&id) {
                summary.already_present += 1;
                continue;
            }
            count.appended += 1;
            let (partition, mut record) =
                log_record(&event, Vec::new(), String::new(), received_at_ms, opts.partitions);
            drop(event);
            record.body = body;
            record.origin = Origin::EventsApi;
            known.insert(id);
            records.push((partition, record));
        }
        // One page at a time, appended together: the embedded log makes them durable with one fsync.
        let results =
            futures_util::future::join_all(records.iter().map(|(partition, record)| sink.append(*partition, record)))
                .await;
        for ((_, record), result) in records.iter().zip(results) {
            if let Err(source) = result {
                known.remove(&record.event_id);
                return Err(CatchUpError::Append { event_id: record.event_id.clone(), source });
            }
            summary.appended += 1;
        }
        progress(Progress { summary, account, reached });
        // The cursor is the page's last listed id, readable or not.
        let last_listed = page.data.last().and_then(|raw| listed_id(raw.get()));
        match (page.has_more, last_listed.or(last_id)) {
            (true, Some(id)) if cursor.as_deref() != Some(id.as_str()) => cursor = Some(id),
            _ => return Ok(()),
        }
    }
}

fn listed_id(raw: &str) -> Option<String> {
    serde_json::from_str::<Identified>(raw).ok().map(|i| i.id)
}

/// The body to store for one listed event: as the API rendered it, with `account` added when it was listed
/// under a connected account and does not name one. `None` (logged) for an event that cannot be stored:
/// unreadable, or naming another account than the one it was listed under.
fn event_body(raw: &[u8], account: Option<&str>) -> Option<Vec<u8>> {
    let event = match parse_event(raw) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(why = %e, "catch-up: skipped an event the API listed that paystate cannot read");
            return None;
        }
    };
    let ParsedEvent::Snapshot(env) = &event else {
        tracing::warn!(id = event.id(), "catch-up: skipped a thin event in the v1 Events API's list");
        return None;
    };
    match (account, env.account.as_deref()) {
        (Some(listed), None) => {
            let start = raw.iter().position(|b| *b == b'{')?;
            let mut body = Vec::with_capacity(raw.len() + listed.len() + 16);
            body.extend_from_slice(&raw[..=start]);
            body.extend_from_slice(format!("\"account\":{},", serde_json::Value::from(listed)).as_bytes());
            body.extend_from_slice(&raw[start + 1..]);
            Some(body)
        }
        (Some(listed), Some(named)) if listed != named => {
            tracing::warn!(
                id = event.id(),
                listed,
                named,
                "catch-up: skipped an event naming another account than the one listed"
            );
            None
        }
        _ => Some(raw.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_never_shown() {
        let key = ApiKey::new(" rk_test_abcdefghijkl\n").expect("restricted test key");
        assert_eq!(format!("{key:?}"), "ApiKey(restricted, test mode, redacted)");
        assert!(!key.livemode());
        assert!(ApiKey::new("sk_live_abcdefghijkl").expect("secret").livemode());
        for bad in ["pk_test_abcdefghijkl", "whsec_abcdefghijkl", "sk_test_", "rk_test_abc def ghij"] {
            assert!(matches!(ApiKey::new(bad), Err(CatchUpError::Key(_))), "{bad}");
        }
    }

    #[test]
    fn a_connected_accounts_event_gets_its_account() {
        let raw = br#"{"id":"evt_1","object":"event","type":"charge.succeeded","created":5,"livemode":false,"data":{"object":{"id":"ch_1","object":"charge","payment_intent":"pi_1"}}}"#;
        let body = event_body(raw, Some("acct_9")).expect("stored");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("still JSON");
        assert_eq!(v["account"], "acct_9");
        assert_eq!(v["data"]["object"]["id"], "ch_1");
        assert_eq!(event_body(raw, None).expect("stored"), raw.to_vec());
        let named = br#"{"id":"evt_1","object":"event","account":"acct_8","type":"charge.succeeded","created":5,"livemode":false,"data":{"object":{"id":"ch_1","object":"charge"}}}"#;
        assert_eq!(event_body(named, Some("acct_8")).expect("same account"), named.to_vec());
        assert_eq!(event_body(named, Some("acct_9")), None);
        assert_eq!(event_body(b"{\"id\":", None), None);
    }

    #[test]
    fn what_stripe_says_to_retry_is_retried_after_the_wait_it_asks() {
        let s = |code| StatusCode::from_u16(code).expect("status");
        let secs = Duration::from_secs;
        // Retry-After is honoured, up to the cap.
        assert_eq!(retry_wait(s(429), None, Some(1), 1), Some(secs(1)));
        assert_eq!(retry_wait(s(429), None, Some(3600), 1), Some(MAX_RETRY_WAIT));
        // Without it, the backoff of the attempt.
        assert_eq!(retry_wait(s(500), None, None, 3), Some(secs(2)));
        assert_eq!(retry_wait(s(409), None, None, 1), Some(Duration::from_millis(500)));
        // A client error is final, unless Stripe-Should-Retry says otherwise (either way).
        assert_eq!(retry_wait(s(400), None, None, 1), None);
        assert_eq!(retry_wait(s(401), None, Some(5), 1), None);
        assert_eq!(retry_wait(s(400), Some(true), None, 2), Some(secs(1)));
        assert_eq!(retry_wait(s(503), Some(false), Some(1), 1), None);
    }

    fn options(per_sec: f64) -> CatchUpOptions {
        CatchUpOptions {
            api_base: "http://127.0.0.1:9".into(),
            key: ApiKey::new("sk_test_abcdefghijkl").expect("key"),
            scope: Scope::Platform,
            types: Vec::new(),
            since: 0,
            max_requests_per_sec: per_sec,
            max_attempts: 3,
            request_timeout: Duration::from_secs(5),
            partitions: 4,
        }
    }

    /// The pacing, on tokio's paused clock: four requests a second are a quarter second apart, and an idle
    /// spell earns no burst afterwards.
    #[tokio::test(start_paused = true)]
    async fn requests_are_paced_by_the_rate_limit() {
        let opts = options(4.0);
        let mut client = Client::new(&opts).expect("client");
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..5 {
            client.slot().await;
            at.push(start.elapsed().as_millis());
        }
        assert_eq!(at, [0, 250, 500, 750, 1000]);
        tokio::time::advance(Duration::from_secs(10)).await;
        let idle = Instant::now();
        client.slot().await;
        assert_eq!(idle.elapsed(), Duration::ZERO, "the next slot had passed");
        client.slot().await;
        assert_eq!(idle.elapsed(), Duration::from_millis(250), "no burst after an idle spell");
        assert!(matches!(Client::new(&options(0.0)), Err(CatchUpError::Options(_))));
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let waits: Vec<u64> = (1..=8).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 16000, 16000]);
    }
}
