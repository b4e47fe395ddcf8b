//! # paystate-ingress
//!
//! paystate's HTTP surfaces, and the only crate that serves HTTP:
//! - [`public_router`]: `POST /webhooks/stripe` and `GET /healthz`, nothing else. A delivery is verified
//!   (`paystate-stripe`), appended durably to the log (`paystate-store`), and only then answered `200`.
//!   Every refusal is a 4xx with a JSON reason and appends nothing; `503` when the log cannot append.
//! - [`admin_router`]: the query API, the projection streams, status and metrics, on a separate listener,
//!   behind a bearer token ([`AdminAuth`]) except the health checks.
//!
//! The clock is read here (the verifier takes `now` as an argument).

pub mod catchup;
pub mod metrics;
pub mod peers;
mod query;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics::Metrics;
use paystate_core::{partition_of, Lifecycle};
use paystate_store::{partition_status, LogRecord, LogSink, LogView, Origin, Projection, Stream};
use paystate_stripe::{payment_key, ParsedEvent, Webhook};
use query::{BadQuery, Params};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Stripe's test mode or live mode: the mode this endpoint expects. A correctly signed event of the other
/// mode is accepted and kept all the same (a Connect platform's endpoint receives both, and a 4xx would make
/// Stripe retry it for days); it is counted as `other_mode`, and projected apart: every payment state
/// carries `livemode` and the list API filters by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `livemode: false` expected.
    Test,
    /// `livemode: true` expected.
    Live,
}

/// Default body limit: 1 MiB (Stripe events are a few KB).
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 1 << 20;

/// Default limit of webhooks handled at once; beyond it a delivery is answered 503 at once.
pub const DEFAULT_MAX_INFLIGHT: usize = 1024;
/// Default time a client has to send a webhook's body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has to send a request's headers.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How much the webhook endpoint takes on at once, and how long it waits for a client.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Webhooks being handled at once (reading, verifying, appending); beyond, 503 at once.
    pub inflight: Arc<tokio::sync::Semaphore>,
    /// Time to receive the whole body once the headers are in; beyond, 408.
    pub body_timeout: Duration,
}

impl Limits {
    /// `max_inflight` webhooks at once, `body_timeout` for each body.
    pub fn new(max_inflight: usize, body_timeout: Duration) -> Self {
        Limits { inflight: Arc::new(tokio::sync::Semaphore::new(max_inflight.max(1))), body_timeout }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(DEFAULT_MAX_INFLIGHT, DEFAULT_BODY_TIMEOUT)
    }
}

/// The log's partition count as the ingress knows it: fixed (the embedded log), or unknown until the
/// ingress has reached its Kafka cluster (it starts anyway, answering 503 and not ready meanwhile: an event
/// cannot be placed in a partition before the count is known).
#[derive(Clone, Debug)]
pub struct Partitions(Arc<std::sync::atomic::AtomicU32>);

impl Partitions {
    /// A count known from the start.
    pub fn fixed(n: u32) -> Self {
        Partitions(Arc::new(std::sync::atomic::AtomicU32::new(n)))
    }
    /// A count to be learnt ([`Partitions::set`]).
    pub fn unknown() -> Self {
        Partitions(Arc::new(std::sync::atomic::AtomicU32::new(0)))
    }
    /// The count, once known.
    pub fn get(&self) -> Option<u32> {
        Some(self.0.load(std::sync::atomic::Ordering::Acquire)).filter(|n| *n > 0)
    }
    /// Learns the count.
    pub fn set(&self, n: u32) {
        self.0.store(n, std::sync::atomic::Ordering::Release);
    }
}

/// Everything the webhook endpoint needs.
#[derive(Clone)]
pub struct Ingress {
    /// Signature verification and parsing.
    pub webhook: Webhook,
    /// The mode this endpoint expects, when set: events of the other mode are accepted and counted.
    pub mode: Option<Mode>,
    /// Largest accepted body.
    pub body_limit_bytes: usize,
    /// Log partitions.
    pub partitions: Partitions,
    /// Where records go: the embedded log's appender or the Kafka producer.
    pub sink: Arc<dyn LogSink>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Concurrency and timeouts.
    pub limits: Limits,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress").field("mode", &self.mode).field("partitions", &self.partitions).finish()
    }
}

fn unix_now() -> (i64, i64) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": code, "message": message.to_string()}))).into_response()
}

/// The public listener: the webhook path and a health check, nothing else.
pub fn public_router(ingress: Ingress) -> Router {
    Router::new()
        .route("/webhooks/stripe", post(webhook).fallback(method_not_allowed))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(not_found)
        .with_state(Arc::new(ingress))
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such path")
}

async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST")
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

async fn webhook(State(ing): State<Arc<Ingress>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if !is_json(&parts.headers) {
        ing.metrics.webhook("unsupported_media_type");
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        );
    }
    // A declared length over the limit is refused before any of the body is read (or waited for).
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > ing.body_limit_bytes as u64) {
        ing.metrics.webhook("too_large");
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("body over {} bytes", ing.body_limit_bytes),
        );
    }
    // Bounded work: a flood beyond the limit is told to come back (Stripe retries), never queued.
    let Ok(_permit) = ing.limits.inflight.try_acquire() else {
        ing.metrics.webhook("busy");
        return error(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many webhooks in flight; retry");
    };
    let body: Bytes = match tokio::time::timeout(ing.limits.body_timeout, to_bytes(body, ing.body_limit_bytes)).await {
        Ok(Ok(b)) => b,
        Err(_) => {
            ing.metrics.webhook("body_timeout");
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {} s", ing.limits.body_timeout.as_secs()),
            );
        }
        Ok(Err(_)) => {
            ing.metrics.webhook("too_large");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("body over {} bytes", ing.body_limit_bytes),
            );
        }
    };
    let signature = parts.headers.get("stripe-signature").map(HeaderValue::as_bytes);
    let (now, now_ms) = unix_now();
    let verified = match ing.webhook.verify(signature, &body, now) {
        Ok(v) => v,
        Err(e) => {
            ing.metrics.webhook("rejected");
            // WARN: a wrong secret (or an attacker) shows here first; the body is not logged.
            tracing::warn!(outcome = "rejected", reason = e.code(), "webhook refused");
            return error(StatusCode::BAD_REQUEST, e.code(), &e);
        }
    };
    let event = verified.event();
    if let Some(mode) = ing.mode {
        if event.livemode() != (mode == Mode::Live) {
            ing.metrics.webhook("other_mode");
            tracing::debug!(event_id = event.id(), livemode = event.livemode(), "event of the other mode, kept");
        }
    }
    let signature = String::from_utf8_lossy(signature.unwrap_or_default()).into_owned();
    let Some(partitions) = ing.partitions.get() else {
        ing.metrics.webhook("unavailable");
        return error(StatusCode::SERVICE_UNAVAILABLE, "log_unavailable", "the log is not reachable yet");
    };
    let (partition, record) = log_record(event, body.to_vec(), signature, now_ms, partitions);
    let started = Instant::now();
    match ing.sink.append(partition, &record).await {
        Ok(pos) => {
            ing.metrics.append_latency(started.elapsed());
            ing.metrics.webhook("accepted");
            tracing::info!(outcome = "accepted", event_id = %record.event_id, event_type = %record.event_type, partition = pos.partition, offset = pos.offset, "webhook stored");
            (StatusCode::OK, Json(json!({"received": true}))).into_response()
        }
        Err(e) if e.downcast_ref::<paystate_store::RecordTooLarge>().is_some() => {
            ing.metrics.webhook("too_large");
            tracing::error!(outcome = "too_large", event_id = %record.event_id, bytes = record.body.len(), error = %e, "webhook refused by the log for its size");
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large_for_log",
                "the log refuses a record of this size (raise the broker's and the producer's message.max.bytes)",
            )
        }
        Err(e) => {
            ing.metrics.webhook("unavailable");
            ing.metrics.append_failed(&e.to_string());
            tracing::error!(outcome = "unavailable", event_id = %record.event_id, error = %e, "webhook not stored");
            error(StatusCode::SERVICE_UNAVAILABLE, "log_unavailable", "the event could not be stored; retry")
        }
    }
}

/// The log record of a verified event and the partition it goes to: partitioned by payment key (by event
/// id for an event about no payment), the body unchanged.
pub fn log_record(
    event: &ParsedEvent<'_>,
    body: Vec<u8>,
    signature: String,
    received_at_ms: i64,
    partitions: u32,
) -> (u32, LogRecord) {
    let key = payment_key(event).map(|k| k.to_string()).unwrap_or_default();
    let partition = partition_of(if key.is_empty() { event.id().as_bytes() } else { key.as_bytes() }, partitions);
    let record = LogRecord {
        received_at_ms,
        event_id: event.id().to_owned(),
        event_type: event.event_type().to_owned(),
        payment_key: key,
        signature,
        body,
        origin: Origin::Webhook,
    };
    (partition, record)
}

/// What the admin API reads.
#[derive(Clone)]
pub struct Admin {
    /// The projection.
    pub projection: Projection,
    /// The log's ends, for positions and lag.
    pub log: Arc<dyn LogView>,
    /// The projection streams are published to Kafka (the status then shows the outbox).
    pub publishes: bool,
    /// Changes after every projector commit (stream long-polls wait on it).
    pub committed: watch::Receiver<u64>,
    /// Ingress counters (shared with the public router in `serve`).
    pub metrics: Arc<Metrics>,
    /// Who may read it.
    pub auth: AdminAuth,
    /// Why the process is not ready (empty: ready), for `/readyz`.
    pub readiness: Readiness,
    /// The last hour's webhooks and lag, sampled by [`keep_timeline`] (`GET /v1/timeline`).
    pub timeline: metrics::Timeline,
    /// The latest catch-up runs, newest last (in `/v1/status` as `catch_up_runs`).
    pub catch_up_runs: CatchUpRuns,
    /// The longest a stream read long-polls, whatever its `wait_ms` (at most [`STREAM_WAIT_MAX_MS`]).
    pub stream_max_wait: Duration,
    /// Re-drives the dead letters through the projector (`POST /v1/dead-letters/retry`); `None` where this
    /// process cannot (a Kafka member: each owns its partitions' dead letters).
    pub retry_dead_letters: Option<RetryDeadLetters>,
}

/// The latest catch-up runs (their summaries, or why they failed), newest last, at most [`CATCH_UP_RUNS_KEPT`].
#[derive(Debug, Clone, Default)]
pub struct CatchUpRuns(Arc<std::sync::Mutex<std::collections::VecDeque<serde_json::Value>>>);

/// Catch-up runs [`CatchUpRuns`] keeps.
pub const CATCH_UP_RUNS_KEPT: usize = 10;

impl CatchUpRuns {
    /// Records a run.
    pub fn push(&self, run: serde_json::Value) {
        let mut runs = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if runs.len() == CATCH_UP_RUNS_KEPT {
            runs.pop_front();
        }
        runs.push_back(run);
    }

    /// The runs, oldest first.
    pub fn runs(&self) -> Vec<serde_json::Value> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect()
    }
}

/// Samples `admin`'s webhooks and lag into its timeline every [`metrics::SAMPLE_EVERY`], for ever (the
/// process's runtime ends it).
pub async fn keep_timeline(admin: Admin) {
    let mut tick = tokio::time::interval(metrics::SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let (projection, log) = (admin.projection.clone(), Arc::clone(&admin.log));
        let lag = tokio::task::spawn_blocking(move || partition_status(&projection, log.as_ref()))
            .await
            .ok()
            .and_then(Result::ok)
            .map_or(0, |parts| parts.iter().map(|p| p.lag).sum());
        let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        admin.timeline.push(metrics::Sample { at, webhooks_accepted: admin.metrics.accepted(), lag });
    }
}

/// The projector's re-drive of its dead letters, as JSON (`{"resolved": […], "still_dead": […]}`). Blocking.
pub type RetryDeadLetters = Arc<dyn Fn() -> Result<serde_json::Value, String> + Send + Sync>;

/// What `/readyz` asks: the reasons the process cannot do its job now (the log cannot take writes, the
/// projector stopped or keeps failing); none means ready.
pub type Readiness = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// How long after a failed append (with no success since) `/readyz` says not ready.
pub const READY_WINDOW: Duration = Duration::from_secs(5);

/// Reasons not to be ready that the ingress knows itself: the log failed the last append (in the last
/// `window`; a later success clears it) or the sink says it cannot take writes (`sink_health`, e.g.
/// [`LogSink::health`]).
pub fn ingress_not_ready(metrics: &Metrics, sink_health: Result<(), String>, window: Duration) -> Vec<String> {
    let mut why = Vec::new();
    if let Err(e) = sink_health {
        why.push(format!("the log cannot take writes: {e}"));
    }
    if let Some(ago) = metrics.append_failing_for().filter(|ago| *ago < window) {
        let failure = metrics.append_failure();
        why.push(format!("the log failed the last append {:.1} s ago: {failure}", ago.as_secs_f64()));
    }
    why
}

/// `/readyz`: 200 `ready`, or 503 with the reasons.
fn readyz_response(why: &[String]) -> Response {
    if why.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", why.join("; "))).into_response()
    }
}

/// Who may use the admin API. With a token, every `/v1/*` route (and `/metrics` when `guard_metrics`)
/// answers 401 unless the request carries `Authorization: Bearer <token>`; `/healthz` and `/readyz` stay
/// open for orchestrators' probes. Only the token's SHA-256 is kept, and a presented token is compared
/// with it in constant time (the digests have one length whatever was sent).
#[derive(Clone, Default)]
pub struct AdminAuth {
    digest: Option<[u8; 32]>,
    guard_metrics: bool,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.digest.map(|_| "<set>"))
            .field("guard_metrics", &self.guard_metrics)
            .finish()
    }
}

impl AdminAuth {
    /// No token: everything open (a loopback-only listener).
    pub fn open() -> Self {
        AdminAuth::default()
    }

    /// Requests need `token`; `/metrics` too when `guard_metrics`.
    pub fn token(token: &str, guard_metrics: bool) -> Self {
        use sha2::Digest as _;
        AdminAuth { digest: Some(sha2::Sha256::digest(token.as_bytes()).into()), guard_metrics }
    }

    /// Whether a token is required.
    pub fn is_guarded(&self) -> bool {
        self.digest.is_some()
    }

    /// Whether `headers` carry the token (always, without one).
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        use sha2::Digest as _;
        use subtle::ConstantTimeEq as _;
        let Some(want) = &self.digest else { return true };
        // The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
        let presented = headers.get(header::AUTHORIZATION).and_then(|v| {
            let v = v.as_bytes();
            (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &v[7..])
        });
        let got: [u8; 32] = sha2::Sha256::digest(presented.unwrap_or_default()).into();
        presented.is_some() & bool::from(got.ct_eq(want))
    }
}

/// The admin routes' guard (see [`AdminAuth`]).
async fn require_token(State(auth): State<AdminAuth>, req: Request, next: axum::middleware::Next) -> Response {
    if auth.allows(req.headers()) {
        return next.run(req).await;
    }
    tracing::debug!(path = %req.uri().path(), "admin request without a valid token refused");
    let mut refused = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this admin API needs `Authorization: Bearer <token>`, the token paystate was started with \
         (--admin-token-file or PAYSTATE_ADMIN_TOKEN)",
    );
    refused.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"paystate-admin\""));
    refused
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("projection", &self.projection).finish()
    }
}

/// The admin listener: query API, projection streams, status, metrics, health; guarded by `admin.auth`.
pub fn admin_router(admin: Admin) -> Router {
    let auth = admin.auth.clone();
    let mut guarded = Router::new()
        .route("/v1/payments", get(list_payments))
        .route("/v1/payments/{id}", get(payment_route::<false>))
        .route("/v1/payments/{id}/history", get(payment_route::<true>))
        .route("/v1/status", get(status))
        .route("/v1/streams/{stream}", get(read_stream))
        .route("/v1/log/{partition}", get(read_log))
        .route("/v1/dead-letters", get(list_dead_letters))
        .route("/v1/dead-letters/retry", post(retry_dead_letters))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/timeline", get(timeline));
    let readyz = get(|State(a): State<Arc<Admin>>| async move { readyz_response(&(a.readiness)()) });
    // The dashboard's page holds no data (only its code): every figure it shows comes from /v1/*, with the
    // token typed into it.
    let mut open =
        Router::new().route("/", get(dashboard)).route("/healthz", get(|| async { "ok\n" })).route("/readyz", readyz);
    if auth.guard_metrics {
        guarded = guarded.route("/metrics", get(metrics_text));
    } else {
        open = open.route("/metrics", get(metrics_text));
    }
    let guarded = guarded.route_layer(axum::middleware::from_fn_with_state(auth, require_token));
    Router::new().merge(guarded).merge(open).fallback(not_found).with_state(Arc::new(admin))
}

fn storage_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "store read failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, "storage_error", "the store could not be read")
}

/// Runs a store read on tokio's blocking pool, so that a slow read (a long list, the digest) never holds a
/// runtime worker that webhook handling needs.
async fn off_runtime<T: Send + 'static>(
    a: &Arc<Admin>,
    read: impl FnOnce(&Admin) -> Result<T, paystate_store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    let a = Arc::clone(a);
    match tokio::task::spawn_blocking(move || read(&a)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(paystate_store::StoreError::CursorExpired { oldest })) => Err((
            StatusCode::GONE,
            Json(json!({
                "error": "cursor_expired",
                "message": format!("the entries after this cursor were removed by the stream's retention; read again from after={oldest}"),
                "oldest_cursor": oldest,
            })),
        )
            .into_response()),
        Ok(Err(e)) => Err(storage_error(e)),
        Err(e) => Err(storage_error(e)),
    }
}

/// The parameters of `GET /v1/payments/{id}` and its history.
const PAYMENT_PARAMS: &[&str] = &["account", "as_of"];

/// The key of the payment the path names (see [`paystate_store::Projection::locate`]), else the 404's
/// message saying where it is.
fn find_payment(
    a: &Admin,
    id: &str,
    account: Option<&str>,
) -> Result<Result<String, String>, paystate_store::StoreError> {
    Ok(match a.projection.locate(id, account)? {
        paystate_store::Located::Payment(key) => Ok(key),
        other => Err(other.why_not(id, account, "account", '=').unwrap_or_else(|| format!("no payment {id}"))),
    })
}

/// The payment of `key` with its history, or the 404's message (removed since it was found).
fn with_history(
    a: &Admin,
    key: &str,
) -> Result<Result<paystate_core::PaymentWithHistory, String>, paystate_store::StoreError> {
    Ok(a.projection.payment_with_history(key)?.ok_or_else(|| format!("no payment {key}")))
}

/// Reads `account` and `as_of` of a payment route.
fn payment_query(q: Option<&str>) -> Result<(Option<String>, Option<i64>), BadQuery> {
    let q = Params::read(q, PAYMENT_PARAMS)?;
    let as_of = q.parse("as_of", "unix seconds")?;
    Ok((q.get("account").filter(|a| !a.is_empty()).map(str::to_owned), as_of))
}

/// `GET /v1/payments/{id}` (`HISTORY` false: the payment's summary) and `GET /v1/payments/{id}/history`
/// (`HISTORY` true: [`payment_history`]), answered from this member's store or, in a consumer group, by
/// the member that owns the payment (`peers`).
async fn payment_route<const HISTORY: bool>(
    State(a): State<Arc<Admin>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let (account, as_of) = match payment_query(q.as_deref()) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let (id2, account2) = (id.clone(), account.clone());
    let read = move |a: &Admin| {
        let key = match find_payment(a, &id2, account2.as_deref())? {
            Ok(key) => key,
            Err(why) => return Ok(Err(why)),
        };
        // The history is read only when it is shown or the state as of a time must be refolded from it.
        let answer = match (HISTORY, as_of) {
            (true, _) => with_history(a, &key)?.map(|p| payment_history(&p, as_of)),
            (false, Some(t)) => with_history(a, &key)?.map(|p| json!(p.as_of(t).summary())),
            (false, None) => {
                a.projection.payment(&key)?.map(|p| json!(p.state.summary())).ok_or_else(|| format!("no payment {key}"))
            }
        };
        Ok(answer.map(|v| (key, v)))
    };
    let local = match off_runtime(&a, read).await {
        Ok(Ok((key, answer))) => peers::Local::Found(key, Json(answer).into_response()),
        Ok(Err(why)) => peers::Local::Missing(why),
        Err(r) => return r,
    };
    peers::answer(&a, &headers, &uri, &id, account.as_deref(), local).await
}

/// The answer of `GET /v1/payments/{id}/history` (what `paystate show` prints): the payment (as of `as_of`
/// when given), its transitions up to then, how many events it has in all and the actions emitted for it.
pub fn payment_history(p: &paystate_core::PaymentWithHistory, as_of: Option<i64>) -> serde_json::Value {
    let mut history = p.transitions();
    let events_total = history.len();
    let state = match as_of {
        Some(t) => {
            history.retain(|h| h.created <= t);
            p.as_of(t)
        }
        None => p.payment.state.clone(),
    };
    let emitted = p.emitted_actions();
    let key = &p.payment.state.key;
    json!({
        "id": key.payment,
        "account": key.account,
        "as_of": as_of,
        "events_total": events_total,
        "payment": state.summary(),
        "history": history,
        "actions_emitted": emitted,
    })
}

/// The parameters of `GET /v1/payments`.
const LIST_PARAMS: &[&str] =
    &["lifecycle", "livemode", "customer", "metadata[]", "created[gte]", "created[lte]", "disputed", "limit", "after"];
/// Most payments in one page of `GET /v1/payments`.
pub const LIST_LIMIT_MAX: u64 = 1000;

/// Which payments a list keeps, from its query.
struct ListFilter {
    livemode: Option<bool>,
    customer: Option<String>,
    metadata: Vec<(String, String)>,
    created_gte: Option<i64>,
    created_lte: Option<i64>,
    disputed: Option<bool>,
}

impl ListFilter {
    fn read(q: &Params) -> Result<Self, BadQuery> {
        let boolean = "true or false";
        Ok(ListFilter {
            livemode: q.parse("livemode", boolean)?,
            customer: q.get("customer").map(str::to_owned),
            metadata: q.keyed("metadata").into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            created_gte: q.parse("created[gte]", "unix seconds")?,
            created_lte: q.parse("created[lte]", "unix seconds")?,
            disputed: q.parse("disputed", boolean)?,
        })
    }

    fn keeps(&self, p: &paystate_core::Payment) -> bool {
        let s = &p.state;
        // A payment was created when its first event was.
        let created = s.first_event_at.unwrap_or(i64::MIN);
        self.livemode.is_none_or(|m| s.livemode == m)
            && self.customer.as_deref().is_none_or(|c| s.customer.as_deref() == Some(c))
            && self.metadata.iter().all(|(k, v)| s.metadata.get(k) == Some(v))
            && self.created_gte.is_none_or(|t| created >= t)
            && self.created_lte.is_none_or(|t| created <= t)
            && self.disputed.is_none_or(|d| s.disputed == d)
    }
}

async fn list_payments(State(a): State<Arc<Admin>>, RawQuery(q): RawQuery) -> Response {
    let q = match Params::read(q.as_deref(), LIST_PARAMS) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let want = match q.get("lifecycle") {
        Some(name) => match Lifecycle::parse(name) {
            Some(l) => Some(l),
            None => {
                let names: Vec<&str> = Lifecycle::ALL.iter().map(|l| l.as_str()).collect();
                let why = format!("unknown lifecycle {name:?}; one of {}", names.join(", "));
                return q.invalid("lifecycle", why).into_response();
            }
        },
        None => None,
    };
    let (limit, filter) = match (q.bounded("limit", 1..=LIST_LIMIT_MAX, 100), ListFilter::read(&q)) {
        (Ok(l), Ok(f)) => (usize::try_from(l).unwrap_or(100), f),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let after = q.get("after").map(str::to_owned);
    let list = off_runtime(&a, move |a| match want {
        // Through the lifecycle index: a page costs the payments it returns, not a scan of all of them.
        Some(l) => a.projection.payments_in(l, after.as_deref(), limit, |p| filter.keeps(p)),
        None => a.projection.payments(after.as_deref(), limit, |p| filter.keeps(p)),
    });
    match list.await {
        Ok(list) => {
            let next = (list.len() == limit).then(|| list.last().map(|p| p.state.key.to_string())).flatten();
            let payments: Vec<_> = list.iter().map(|p| json!(p.state.summary())).collect();
            Json(json!({"payments": payments, "next": next})).into_response()
        }
        Err(r) => r,
    }
}

/// The dashboard: one page of HTML, CSS and JavaScript, built in, reading the admin API.
pub const DASHBOARD: &str = include_str!("../dashboard.html");

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Nothing from elsewhere: no scripts, styles, fonts or frames but its own.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
                 img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        DASHBOARD,
    )
        .into_response()
}

/// `GET /v1/timeline`: the last hour's samples.
async fn timeline(State(a): State<Arc<Admin>>, RawQuery(q): RawQuery) -> Response {
    if let Err(r) = Params::read(q.as_deref(), &[]) {
        return r.into_response();
    }
    let every = metrics::SAMPLE_EVERY.as_secs();
    Json(json!({"every_secs": every, "samples": a.timeline.samples()})).into_response()
}

/// The admin API's OpenAPI 3.1 document (`crates/paystate-ingress/openapi.json`), as built in.
pub const OPENAPI: &str = include_str!("../openapi.json");

async fn openapi(RawQuery(q): RawQuery) -> Response {
    if let Err(r) = Params::read(q.as_deref(), &[]) {
        return r.into_response();
    }
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `GET /v1/dead-letters`: the records the projector could not use, in (partition, offset) order, with their
/// reasons; `after=P:O` continues a list.
async fn list_dead_letters(State(a): State<Arc<Admin>>, RawQuery(q): RawQuery) -> Response {
    let q = match Params::read(q.as_deref(), &["limit", "after"]) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let limit = match q.bounded("limit", 1..=LIST_LIMIT_MAX, 100) {
        Ok(l) => usize::try_from(l).unwrap_or(100),
        Err(r) => return r.into_response(),
    };
    let after = match q.get("after").map(|c| c.split_once(':').map(|(p, o)| (p.parse::<u32>(), o.parse::<u64>()))) {
        None => None,
        Some(Some((Ok(p), Ok(o)))) => Some((p, o)),
        Some(_) => {
            return q
                .invalid("after", "`after` is a dead letter's partition:offset, e.g. 3:1207".into())
                .into_response()
        }
    };
    match off_runtime(&a, |a| a.projection.dead_letters()).await {
        Ok(all) => {
            let page: Vec<_> =
                all.into_iter().filter(|d| after.is_none_or(|at| (d.partition, d.offset) > at)).take(limit).collect();
            let next = (page.len() == limit).then(|| page.last().map(|d| format!("{}:{}", d.partition, d.offset)));
            Json(json!({"dead_letters": page, "next": next.flatten()})).into_response()
        }
        Err(r) => r,
    }
}

/// `POST /v1/dead-letters/retry`: every dead letter folded again; those that fold now are removed.
async fn retry_dead_letters(State(a): State<Arc<Admin>>, RawQuery(q): RawQuery) -> Response {
    if let Err(r) = Params::read(q.as_deref(), &[]) {
        return r.into_response();
    }
    let Some(retry) = a.retry_dead_letters.clone() else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "not_supported",
            "this process does not re-drive dead letters (a Kafka member: retry on each member's data directory)",
        );
    };
    match tokio::task::spawn_blocking(move || retry()).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => storage_error(e),
        Err(e) => storage_error(e),
    }
}

/// Per-partition positions, totals and lag.
/// With `publishes`, also the outbox: stream entries committed and published to Kafka.
pub fn status_json(
    projection: &Projection,
    log: &dyn LogView,
    publishes: bool,
) -> Result<serde_json::Value, paystate_store::StoreError> {
    let parts = partition_status(projection, log)?;
    let lag: u64 = parts.iter().map(|p| p.lag).sum();
    let totals = projection.totals()?;
    let mut v = json!({"partitions": parts, "lag": lag, "totals": totals, "payments": projection.payment_count()});
    // With a consumer group (Kafka), this member's lag says nothing of partitions it does not own: the
    // group's view does, and only it can say "caught up".
    // A partition stopped at a retention gap is never caught up: records it needed are gone.
    let gaps = log.retention_gaps();
    match log.group() {
        Some(g) => {
            v["caught_up"] = json!(g.caught_up && gaps.is_empty());
            v["group"] = json!(g);
        }
        None => v["caught_up"] = json!(lag == 0 && gaps.is_empty()),
    }
    if !gaps.is_empty() {
        v["retention_gaps"] = json!(gaps);
    }
    if publishes {
        let mut outbox = serde_json::Map::new();
        for (name, stream) in [("actions", Stream::Actions), ("payments", Stream::Payments)] {
            let (end, published) = (projection.stream_end(stream)?, projection.published(stream)?);
            outbox.insert(
                name.into(),
                json!({"committed": end, "published": published, "pending": end.saturating_sub(published)}),
            );
        }
        v["outbox"] = outbox.into();
    }
    Ok(v)
}

async fn status(State(a): State<Arc<Admin>>, RawQuery(q): RawQuery) -> Response {
    let asked = Params::read(q.as_deref(), &["digest", "lifecycles"]).and_then(|q| {
        Ok((q.parse::<bool>("digest", "true or false")?, q.parse::<bool>("lifecycles", "true or false")?))
    });
    let (digest, lifecycles) = match asked {
        Ok((d, l)) => (d == Some(true), l == Some(true)),
        Err(r) => return r.into_response(),
    };
    let v = off_runtime(&a, move |a| {
        let mut v = status_json(&a.projection, a.log.as_ref(), a.publishes)?;
        // The digest reads every payment, the counts by lifecycle the whole index: only on request.
        if digest {
            let (hex, payments) = a.projection.digest()?;
            v["digest"] = json!(hex);
            v["digest_payments"] = json!(payments);
        }
        if lifecycles {
            let mut counts = serde_json::Map::new();
            for l in Lifecycle::ALL {
                counts.insert(l.as_str().into(), json!(a.projection.count_in(l)?));
            }
            v["by_lifecycle"] = counts.into();
        }
        let mut streams = serde_json::Map::new();
        for (name, stream) in [("actions", Stream::Actions), ("payments", Stream::Payments)] {
            let (start, end) = (a.projection.stream_start(stream)?, a.projection.stream_end(stream)?);
            streams.insert(name.into(), json!({"start": start, "end": end}));
        }
        v["streams"] = streams.into();
        let runs = a.catch_up_runs.runs();
        if !runs.is_empty() {
            v["catch_up_runs"] = json!(runs);
        }
        Ok(v)
    });
    match v.await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// Most entries in one read of a stream, and the longest long-poll.
pub const STREAM_LIMIT_MAX: u64 = 10_000;
/// The longest `wait_ms` of a stream read.
pub const STREAM_WAIT_MAX_MS: u64 = 60_000;

async fn read_stream(State(a): State<Arc<Admin>>, Path(stream): Path<String>, RawQuery(q): RawQuery) -> Response {
    let Some(stream) = Stream::parse(&stream) else {
        return error(StatusCode::NOT_FOUND, "not_found", "streams are `actions` and `payments`");
    };
    let q = match Params::read(q.as_deref(), &["after", "limit", "wait_ms"]) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let read = (
        q.parse::<u64>("after", "a cursor (a non-negative integer)").map(Option::unwrap_or_default),
        q.bounded("limit", 1..=STREAM_LIMIT_MAX, 1000),
        q.bounded("wait_ms", 0..=STREAM_WAIT_MAX_MS, 0),
    );
    let (after, limit, wait_ms) = match read {
        (Ok(a), Ok(l), Ok(w)) => (a, usize::try_from(l).unwrap_or(1000), w),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r.into_response(),
    };
    let deadline = Instant::now() + Duration::from_millis(wait_ms).min(a.stream_max_wait);
    let mut committed = a.committed.clone();
    let entries = loop {
        committed.borrow_and_update();
        match off_runtime(&a, move |a| a.projection.read_stream(stream, after, limit)).await {
            Ok(e) if !e.is_empty() => break e,
            Ok(e) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || tokio::time::timeout(left, committed.changed()).await.is_err() {
                    break e;
                }
            }
            Err(r) => return r,
        }
    };
    let next = entries.last().map_or(after, |(c, _)| *c);
    let mut body = Vec::new();
    for (cursor, data) in &entries {
        body.extend_from_slice(format!("{{\"cursor\":{cursor},\"data\":").as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"}\n");
    }
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    if let Ok(v) = HeaderValue::from_str(&next.to_string()) {
        resp.headers_mut().insert("paystate-next-cursor", v);
    }
    resp
}

/// Durable records of one partition of the embedded log, for `paystate replay --source http://…` while
/// `serve` holds the data directory: `offset u64 | length u32 | record` (big-endian; the record in its
/// stored encoding) per record, as `application/vnd.paystate.log-records`. The log's durable end goes in
/// `paystate-log-end`.
async fn read_log(State(a): State<Arc<Admin>>, Path(partition): Path<String>, RawQuery(q): RawQuery) -> Response {
    let Ok(partition) = partition.parse::<u32>() else {
        return error(StatusCode::BAD_REQUEST, "bad_partition", format!("{partition:?} is not a partition number"));
    };
    if partition >= a.log.partitions() {
        return error(StatusCode::NOT_FOUND, "not_found", format!("no partition {partition}"));
    }
    let q = match Params::read(q.as_deref(), &["from", "limit"]) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let from = q.parse::<u64>("from", "an offset (a non-negative integer)").map(Option::unwrap_or_default);
    let (from, limit) = match (from, q.bounded("limit", 1..=STREAM_LIMIT_MAX, 1000)) {
        (Ok(f), Ok(l)) => (f, usize::try_from(l).unwrap_or(1000)),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let log = Arc::clone(&a.log);
    let read = tokio::task::spawn_blocking(move || log.read_encoded(partition, from, limit)).await;
    let records = match read {
        Ok(Ok(r)) => r,
        Ok(Err(paystate_store::StoreError::Unsupported(why))) => {
            return error(StatusCode::NOT_IMPLEMENTED, "log_not_readable", format!("{why}; read the Kafka topic"))
        }
        Ok(Err(e)) => return storage_error(e),
        Err(e) => return storage_error(e),
    };
    let mut body = Vec::with_capacity(records.iter().map(|(_, r)| r.len() + 12).sum());
    for (offset, record) in &records {
        if let Err(e) = paystate_store::put_frame(&mut body, *offset, record) {
            return storage_error(e);
        }
    }
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.paystate.log-records"));
    if let Ok(v) = HeaderValue::from_str(&a.log.end(partition).to_string()) {
        resp.headers_mut().insert("paystate-log-end", v);
    }
    resp
}

async fn metrics_text(State(a): State<Arc<Admin>>) -> Response {
    let mut out = String::new();
    a.metrics.render(&mut out);
    // Store reads, on the blocking pool like every admin read of the store.
    let store = Arc::clone(&a);
    let read = tokio::task::spawn_blocking(move || {
        (store.projection.totals(), partition_status(&store.projection, store.log.as_ref()))
    })
    .await;
    if let Ok((Ok(t), Ok(parts))) = read {
        use std::fmt::Write as _;
        for (name, value) in [
            ("paystate_events_applied_total", t.applied),
            ("paystate_duplicates_total", t.duplicates),
            ("paystate_actions_emitted_total", t.actions),
            ("paystate_dead_letters_total", t.dead_letters),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {value}");
        }
        let _ = writeln!(out, "# TYPE paystate_projector_lag gauge");
        for p in parts {
            let _ = writeln!(out, "paystate_projector_lag{{partition=\"{}\"}} {}", p.partition, p.lag);
        }
    }
    if let Some(g) = a.log.group() {
        use std::fmt::Write as _;
        let gauge = |out: &mut String, name: &str, help: &str, value: usize| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        gauge(
            &mut out,
            "paystate_group_owned_partitions",
            "Partitions of the raw topic this member owns.",
            g.owned.len(),
        );
        gauge(
            &mut out,
            "paystate_group_unowned_partitions",
            "Partitions of the raw topic no member of the group owns.",
            g.unowned.len(),
        );
        let _ = writeln!(
            out,
            "# HELP paystate_group_lag Records between the group's committed offset and the partition's end."
        );
        let _ = writeln!(out, "# TYPE paystate_group_lag gauge");
        for p in &g.partitions {
            if let Some(lag) = p.lag {
                let _ = writeln!(out, "paystate_group_lag{{partition=\"{}\"}} {lag}", p.partition);
            }
        }
        gauge(
            &mut out,
            "paystate_group_caught_up",
            "1 when every partition has an owner and no lag.",
            usize::from(g.caught_up),
        );
    }
    let gaps = a.log.retention_gaps();
    if !gaps.is_empty() {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP paystate_retention_gap_records Records deleted from the log before the projector applied \
             them; the partition is stopped.\n# TYPE paystate_retention_gap_records gauge"
        );
        for g in &gaps {
            let missing = g.first_retained.saturating_sub(g.expected);
            let _ = writeln!(out, "paystate_retention_gap_records{{partition=\"{}\"}} {missing}", g.partition);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The admin listener of a process that runs only the ingress (`paystate ingress`): metrics and health.
/// `/readyz` is 503 until the log's partition count is known (the Kafka cluster reached), and while the log
/// cannot take writes ([`ingress_not_ready`]).
pub fn ingress_admin_router(metrics: Arc<Metrics>, partitions: Partitions, sink: Arc<dyn LogSink>) -> Router {
    let m = Arc::clone(&metrics);
    let readyz = get(move || {
        let mut why = ingress_not_ready(&m, sink.health(), READY_WINDOW);
        if partitions.get().is_none() {
            why.insert(0, "the log is not reachable yet".to_owned());
        }
        async move { readyz_response(&why) }
    });
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                let mut out = String::new();
                m.render(&mut out);
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", readyz)
        .fallback(not_found)
        .with_state(metrics)
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes in-flight requests; a client
/// has [`DEFAULT_HEADER_TIMEOUT`] to send each request's headers.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, DEFAULT_HEADER_TIMEOUT, shutdown).await
}

/// [`serve`] with a given header-read timeout: a connection that has not sent a request's complete
/// headers within `header_timeout` of the request's first byte (or of the connection's opening) is closed
/// (hyper answers 408 where it can). `axum::serve` sets no timer, so a slow client could hold a
/// connection open for ever; this serves each connection with hyper's HTTP/1 builder and tokio's timer.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: the listener stays; new connections wait.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
