//! `paystate serve`: ingress, embedded log, projector and admin API in one process.

use crate::admin::AdminToken;
use anyhow::{bail, Context, Result};
use paystate_ingress::{
    admin_router, ingress_admin_router, ingress_not_ready, metrics::Metrics, public_router, Admin, Ingress, Mode,
    Partitions, Readiness, READY_WINDOW,
};
use paystate_kafka::{KafkaConfig, KafkaProjector, KafkaSink, ProjectorOptions};
use paystate_projector::Projector;
use paystate_store::LogSink;
use paystate_store::Store;
use paystate_stripe::{Webhook, WebhookSecret};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How webhooks are received: shared by `serve` and `ingress`.
#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// Public listener: serves only POST /webhooks/stripe and GET /healthz.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Webhook signing secret (`whsec_…`); repeat during a rotation. Or STRIPE_WEBHOOK_SECRET, comma-separated.
    #[arg(
        long = "webhook-secret",
        env = "STRIPE_WEBHOOK_SECRET",
        value_delimiter = ',',
        hide_env_values = true,
        required = true
    )]
    pub webhook_secrets: Vec<String>,
    /// Signature timestamp tolerance in seconds, both directions; 0 disables.
    #[arg(long, default_value_t = paystate_stripe::DEFAULT_TOLERANCE_SECS)]
    pub tolerance_secs: u64,
    /// The mode this endpoint expects. Correctly signed events of the other mode are still accepted and
    /// kept (a 4xx would make Stripe retry them for days): they are counted (`other_mode` in /metrics)
    /// and projected apart (each payment carries `livemode`; `/v1/payments?livemode=` filters).
    #[arg(long, value_parser = ["test", "live"])]
    pub mode: Option<String>,
    /// Largest webhook body accepted, in bytes.
    #[arg(long, default_value_t = paystate_ingress::DEFAULT_BODY_LIMIT_BYTES)]
    pub body_limit_bytes: usize,
    /// Webhooks handled at once; beyond, a delivery is answered 503 at once (Stripe retries it).
    #[arg(long, default_value_t = paystate_ingress::DEFAULT_MAX_INFLIGHT)]
    pub max_inflight: usize,
    /// Seconds a client has to send a webhook's body; beyond, 408.
    #[arg(long, default_value_t = paystate_ingress::DEFAULT_BODY_TIMEOUT.as_secs())]
    pub body_timeout_secs: u64,
    /// Seconds a client has to send a request's headers; beyond, the connection is closed.
    #[arg(long, default_value_t = paystate_ingress::DEFAULT_HEADER_TIMEOUT.as_secs())]
    pub header_timeout_secs: u64,
}

impl WebhookArgs {
    fn ingress(&self, sink: Arc<dyn LogSink>, partitions: Partitions, metrics: Arc<Metrics>) -> Result<Ingress> {
        for (i, s) in self.webhook_secrets.iter().enumerate() {
            if let Some(warning) = secret_warning(s.trim()) {
                // Never the secret itself: its position among the given ones.
                tracing::warn!(secret = i + 1, "{warning}");
            }
        }
        let secrets =
            self.webhook_secrets.iter().map(|s| WebhookSecret::new(s.trim())).collect::<Result<Vec<_>, _>>()?;
        let webhook = Webhook::new(secrets, self.tolerance_secs)?;
        let mode = match self.mode.as_deref() {
            Some("live") => Some(Mode::Live),
            Some(_) => Some(Mode::Test),
            None => None,
        };
        let limits = paystate_ingress::Limits::new(self.max_inflight, Duration::from_secs(self.body_timeout_secs));
        Ok(Ingress { webhook, mode, body_limit_bytes: self.body_limit_bytes, partitions, sink, metrics, limits })
    }
}

/// Why a webhook secret looks wrong, if it does: Stripe's signing secrets start with `whsec_`; an API key
/// (`sk_…`, `rk_…`, `pk_…`) is a common mix-up, and every delivery would then be refused as unsigned.
fn secret_warning(secret: &str) -> Option<String> {
    if secret.starts_with("whsec_") {
        return None;
    }
    let key = ["sk_", "rk_", "pk_"].iter().find(|p| secret.starts_with(**p));
    Some(match key {
        Some(p) => format!(
            "a --webhook-secret starts with {p}: that is an API key, not the endpoint's signing secret (whsec_…, \
             in the Dashboard's webhook endpoint or printed by `stripe listen`); every delivery will be refused"
        ),
        None => "a --webhook-secret does not start with whsec_ as Stripe's signing secrets do: deliveries signed \
                 with the endpoint's real secret will be refused"
            .to_owned(),
    })
}

/// Where the Kafka log is: shared by `serve --log kafka`, `ingress` and `project`.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (`host:port,…`).
    #[arg(long, env = "PAYSTATE_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// A librdkafka property passed through (TLS, SASL, …), `key=value`; repeatable.
    #[arg(long = "kafka-config", value_parser = KafkaConfig::parse_property)]
    pub kafka_config: Vec<(String, String)>,
    /// A file of librdkafka properties, one `key=value` per line (`#` comments); --kafka-config wins.
    #[arg(long)]
    pub kafka_config_file: Option<PathBuf>,
    /// Raw webhook topic.
    #[arg(long, default_value = "stripe.events")]
    pub raw_topic: String,
    /// Compacted payment-state topic.
    #[arg(long, default_value = "paystate.payments")]
    pub payments_topic: String,
    /// Actions topic.
    #[arg(long, default_value = "paystate.actions")]
    pub actions_topic: String,
    /// Compacted topic of the payments' applied events (what a restore rebuilds histories from).
    #[arg(long, default_value = "paystate.history")]
    pub history_topic: String,
    /// Partitions of the topics when paystate creates them.
    #[arg(long, default_value_t = paystate_store::DEFAULT_PARTITIONS)]
    pub kafka_partitions: u32,
    /// Replication factor of the topics when paystate creates them; -1: the brokers'
    /// `default.replication.factor`.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub kafka_replication: i32,
    /// A topic setting of the compacted topics (payments, history) when paystate creates them,
    /// `key=value`, e.g. `segment.ms=600000` or `min.cleanable.dirty.ratio=0.1`; repeatable. Without
    /// `segment.ms`, paystate sets an hour.
    #[arg(long = "kafka-compacted-config", value_parser = KafkaConfig::parse_property)]
    pub kafka_compacted_config: Vec<(String, String)>,
    /// How long the ingress waits for the broker to confirm a write before answering 503.
    #[arg(long, default_value_t = 5000)]
    pub kafka_timeout_ms: u64,
}

impl KafkaArgs {
    fn config(&self) -> Result<KafkaConfig> {
        let brokers =
            self.kafka_brokers.as_deref().context("--kafka-brokers (or PAYSTATE_KAFKA_BROKERS) is required")?;
        let mut cfg = kafka_config(brokers, &self.kafka_config, self.kafka_config_file.as_deref())?;
        cfg.raw_topic.clone_from(&self.raw_topic);
        cfg.payments_topic.clone_from(&self.payments_topic);
        cfg.actions_topic.clone_from(&self.actions_topic);
        cfg.history_topic.clone_from(&self.history_topic);
        Ok(cfg)
    }

    /// The config, with the topics created when missing; returns the partition count.
    pub(crate) async fn connect(&self) -> Result<(KafkaConfig, u32)> {
        let cfg = self.config()?;
        let partitions = paystate_kafka::ensure_topics(
            &cfg,
            self.kafka_partitions,
            self.kafka_replication,
            &self.kafka_compacted_config,
        )
        .await
        .with_context(|| format!("preparing topics on {}", cfg.brokers))?;
        Ok((cfg, partitions))
    }
}

/// A Kafka client configuration: `brokers`, the properties of `file` (one `key=value` per line, `#`
/// comments), then `properties` (which win).
pub fn kafka_config(brokers: &str, properties: &[(String, String)], file: Option<&Path>) -> Result<KafkaConfig> {
    let mut cfg = KafkaConfig::new(brokers);
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let kv = KafkaConfig::parse_property(line)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", file.display(), n + 1))?;
            cfg.properties.push(kv);
        }
    }
    cfg.properties.extend(properties.iter().cloned());
    Ok(cfg)
}

/// Options of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub webhook: WebhookArgs,
    /// Data directory (log and projection; only the projection with --log kafka). Created when missing.
    #[arg(long, default_value = "paystate-data")]
    pub data_dir: PathBuf,
    /// Admin listener: query API, streams, status, metrics. Anything but a loopback address needs an
    /// admin token (--admin-token-file or PAYSTATE_ADMIN_TOKEN).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Guard `/metrics` with the admin token too (by default it stays open for scrapers, like `/healthz`
    /// and `/readyz`).
    #[arg(long)]
    pub metrics_behind_token: bool,
    /// Log partitions of the embedded log (fixed when the data directory is created).
    #[arg(long, default_value_t = paystate_store::DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// Most records the projector commits in one transaction.
    #[arg(long, default_value_t = 512)]
    pub batch_max: usize,
    /// Stripe seconds after a decline before `notify_payment_failed` is emitted, unless another attempt
    /// succeeds, needs the customer, is processing or is authorised meanwhile. Measured on event time
    /// (the newest `created` of the log partition), so a replay of the same log decides alike.
    #[arg(long, default_value_t = paystate_core::DEFAULT_FAILURE_GRACE_SECS)]
    pub failure_grace_secs: i64,
    /// Entries each projection stream (`actions`, `payments`) keeps; a reader whose cursor is older is
    /// answered 410 with the oldest cursor.
    #[arg(long, default_value_t = paystate_projector::DEFAULT_STREAM_RETENTION)]
    pub stream_retention_entries: u64,
    /// The longest a stream read (`GET /v1/streams/…?wait_ms=`) long-polls, whatever it asks for.
    #[arg(long, default_value_t = paystate_ingress::STREAM_WAIT_MAX_MS, value_parser = clap::value_parser!(u64).range(0..=paystate_ingress::STREAM_WAIT_MAX_MS))]
    pub stream_max_wait_ms: u64,

    /// With `--log kafka`: when records a partition needs next were deleted by the raw topic's retention
    /// before they were applied, skip them (logged) instead of stopping the partition (the default: it is
    /// reported in /v1/status and /metrics and never caught up).
    #[arg(long)]
    pub accept_retention_gaps: bool,
    /// Memory for the store's caches and queues, in MiB: a quarter is sled's page cache for the
    /// projection, an eighth the appender's queue (at 8 KiB a record, 64 to 4096 records). The rest of
    /// serve (HTTP, the projector's batch, the runtime) comes on top and does not grow with the log.
    #[arg(long, default_value_t = 256)]
    pub memory_budget_mb: u64,
    /// Free disk space, in MiB, the data directory's filesystem keeps: below it webhooks are answered 503
    /// without writing (Stripe retries), below half of it the projector waits, so that nothing ever writes
    /// into a full disk; both resume by themselves once space is freed. 0: no reserve.
    #[arg(long, default_value_t = paystate_store::DEFAULT_MIN_FREE_BYTES >> 20)]
    pub min_free_disk_mb: u64,
    /// The log: `embedded` (segment files in the data directory) or `kafka` (--kafka-brokers).
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "kafka"])]
    pub log: String,
    /// Consumer group of the projector (with --log kafka).
    #[arg(long, default_value = "paystate-projector")]
    pub group: String,
    /// With --log kafka: the URL at which the other members of the group reach this one's admin API (so
    /// that any member answers for any payment). Default: the admin listener's address when it is a
    /// specific one (not 0.0.0.0 or ::).
    #[arg(long)]
    pub admin_advertise: Option<String>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Fetch missed events from Stripe's Events API at start and then every this many minutes (as
    /// `paystate catch-up` does; needs --api-key-file or STRIPE_API_KEY). Off by default.
    #[arg(long)]
    pub catch_up_every_mins: Option<u64>,
    #[command(flatten)]
    pub catch_up: crate::catchup::FetchArgs,
}

/// Options of `ingress`.
#[derive(Debug, clap::Args)]
pub struct IngressArgs {
    #[command(flatten)]
    pub webhook: WebhookArgs,
    /// Admin listener: metrics and health.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// Options of `project`.
#[derive(Debug, clap::Args)]
pub struct ProjectArgs {
    /// Data directory of this projector's sled projection. Created when missing.
    #[arg(long, default_value = "paystate-data")]
    pub data_dir: PathBuf,
    /// Consumer group; the members split the raw topic's partitions.
    #[arg(long, default_value = "paystate-projector")]
    pub group: String,
    /// Admin listener: query API, streams, status, metrics. Anything but a loopback address needs an
    /// admin token (--admin-token-file or PAYSTATE_ADMIN_TOKEN).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Guard `/metrics` with the admin token too (by default it stays open for scrapers, like `/healthz`
    /// and `/readyz`).
    #[arg(long)]
    pub metrics_behind_token: bool,
    /// The URL at which the other members of the group reach this one's admin API (so that any member
    /// answers for any payment, forwarding to its owner). Default: the admin listener's address when it is
    /// a specific one (not 0.0.0.0 or ::).
    #[arg(long)]
    pub admin_advertise: Option<String>,
    /// Most records committed in one transaction.
    #[arg(long, default_value_t = 512)]
    pub batch_max: usize,
    /// Stripe seconds after a decline before `notify_payment_failed` is emitted, unless another attempt
    /// succeeds, needs the customer, is processing or is authorised meanwhile. Measured on event time
    /// (the newest `created` of the log partition), so a replay of the same log decides alike.
    #[arg(long, default_value_t = paystate_core::DEFAULT_FAILURE_GRACE_SECS)]
    pub failure_grace_secs: i64,
    /// Entries each projection stream (the outbox) keeps once published to Kafka.
    #[arg(long, default_value_t = paystate_projector::DEFAULT_STREAM_RETENTION)]
    pub stream_retention_entries: u64,
    /// The longest a stream read (`GET /v1/streams/…?wait_ms=`) long-polls, whatever it asks for.
    #[arg(long, default_value_t = paystate_ingress::STREAM_WAIT_MAX_MS, value_parser = clap::value_parser!(u64).range(0..=paystate_ingress::STREAM_WAIT_MAX_MS))]
    pub stream_max_wait_ms: u64,

    /// Consumer session timeout: how soon a dead member's partitions move.
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: u64,
    /// Kafka: when records a partition needs next were deleted by the raw topic's retention before they
    /// were applied, skip them (logged) instead of stopping the partition (the default: it is reported
    /// in /v1/status and /metrics and never caught up).
    #[arg(long)]
    pub accept_retention_gaps: bool,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn wait_for(rx: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// The listening socket a supervisor passed at `index` (systemd socket activation: `LISTEN_FDS`, and
/// `LISTEN_PID` when set must be this process), taken once: for `serve` and `ingress` 0 is the webhook
/// listener and 1 the admin listener, for `project` 0 is the admin listener.
fn inherited(index: usize) -> Result<Option<std::net::TcpListener>> {
    static FDS: std::sync::OnceLock<std::sync::Mutex<listenfd::ListenFd>> = std::sync::OnceLock::new();
    let fds = FDS.get_or_init(|| std::sync::Mutex::new(listenfd::ListenFd::from_env()));
    let mut fds = fds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    fds.take_tcp_listener(index).with_context(|| format!("inherited socket {index} (LISTEN_FDS) is not a TCP listener"))
}

/// Listens on the socket a supervisor passed at `index`, else on `addr`. Called before a data directory is
/// opened or created: a port in use leaves nothing behind.
async fn bind(addr: SocketAddr, index: usize) -> Result<tokio::net::TcpListener> {
    if let Some(l) = inherited(index)? {
        l.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(l)?;
        tracing::info!(addr = %l.local_addr()?, index, "listening on an inherited socket (socket activation)");
        return Ok(l);
    }
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(anyhow::anyhow!(
            "cannot listen on {addr}: another process listens there (a paystate already running?); \
             choose another address (--listen / --admin-listen, or port 0 for any free one)"
        )),
        Err(e) => Err(e).with_context(|| format!("cannot listen on {addr}")),
    }
}

fn announce(what: &str, public: Option<SocketAddr>, admin: SocketAddr) -> Result<()> {
    // One line on stdout that scripts and tests can read the bound addresses from.
    match public {
        Some(p) => println!("paystate {what}: webhooks on http://{p}/webhooks/stripe, admin on http://{admin}"),
        None => println!("paystate {what}: admin on http://{admin}"),
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// The admin URL a Kafka member advertises to the others: `given`, else the listener's address when it is
/// a specific one.
fn advertised(given: Option<&str>, listener: SocketAddr) -> Result<Option<String>> {
    if let Some(url) = given {
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains('@') {
            bail!("--admin-advertise {url:?}: an http:// or https:// URL without user info, e.g. http://10.0.0.5:9090");
        }
        return Ok(Some(url.trim_end_matches('/').to_owned()));
    }
    if listener.ip().is_unspecified() {
        tracing::warn!(
            %listener,
            "the admin listener has no specific address: other members cannot forward queries to this one; \
             give --admin-advertise http://<address other members reach>:<port>"
        );
        return Ok(None);
    }
    Ok(Some(format!("http://{listener}")))
}

/// Starts the Kafka projector on its own thread; it stops when `stop` turns true.
fn spawn_kafka_projector(
    cfg: &KafkaConfig,
    projection: paystate_store::Projection,
    options: ProjectorOptions,
    stop: watch::Receiver<bool>,
) -> Result<(Arc<KafkaProjector>, std::thread::JoinHandle<Result<()>>)> {
    let projector = Arc::new(KafkaProjector::new(cfg, projection, options, tokio::runtime::Handle::current())?);
    let flag = Arc::new(AtomicBool::new(false));
    let flag2 = Arc::clone(&flag);
    tokio::spawn(async move {
        wait_for(&stop).await;
        flag2.store(true, Ordering::Release);
    });
    let p = Arc::clone(&projector);
    let handle = std::thread::Builder::new().name("paystate-projector".into()).spawn(move || -> Result<()> {
        match p.run(&flag) {
            Ok(progress) => {
                tracing::info!(records = progress.records, applied = progress.applied, "projector stopped");
                Ok(())
            }
            Err(e) => {
                // Every effect is either committed in sled or not at all, so exiting is safe; waiting for a
                // broker that does not answer (leaving the group on close) is not.
                tracing::error!(error = %e, "projector failed; exiting");
                eprintln!("paystate: projector failed: {e}");
                std::process::exit(2)
            }
        }
    })?;
    Ok((projector, handle))
}

/// The projection of a data directory that a Kafka projector uses (created when missing).
fn open_projection(dir: &std::path::Path) -> Result<paystate_store::Projection> {
    Store::open_projection(dir).with_context(|| format!("opening data directory {}", dir.display()))
}

/// Waits for the ingress's queued messages to be confirmed (at shutdown, after the public listener closed).
async fn flush(sink: KafkaSink) -> Result<()> {
    Ok(tokio::task::spawn_blocking(move || sink.flush(Duration::from_secs(10))).await??)
}

/// Waits for the admin listener to finish, the last step of every shutdown.
async fn stopped(admin_server: tokio::task::JoinHandle<std::io::Result<()>>) -> Result<()> {
    admin_server.await.context("admin server task")?.context("admin server")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn join_projector(handle: std::thread::JoinHandle<Result<()>>) -> Result<()> {
    tokio::task::spawn_blocking(move || handle.join())
        .await
        .context("projector join")?
        .map_err(|_| anyhow::anyhow!("projector thread panicked"))?
}

fn stop_channel() -> watch::Receiver<bool> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        stop_signal().await;
        tracing::info!("shutting down: no new webhooks, finishing in-flight work");
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// Stops the process (exit 2) once the producer met a fatal error (see `paystate_kafka::ErrorClass`): no
/// append can succeed any more, and an orchestrator restarting the process is the way out. Nothing is lost:
/// nothing was acknowledged that the broker had not confirmed.
fn exit_on_fatal(sink: KafkaSink) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Some(why) = sink.fatal() {
                tracing::error!(error = %why, "fatal Kafka producer error; exiting");
                eprintln!("paystate: fatal Kafka producer error, exiting: {why}");
                std::process::exit(2);
            }
        }
    });
}

/// `paystate ingress`: webhooks into the Kafka raw topic.
pub async fn run_ingress(args: IngressArgs) -> Result<()> {
    let cfg = args.kafka.config()?;
    let sink = KafkaSink::new(&cfg, Duration::from_millis(args.kafka.kafka_timeout_ms))?;
    exit_on_fatal(sink.clone());
    let metrics = Arc::new(Metrics::default());
    // The ingress starts even while the cluster is unreachable: 503 and not ready until it knows the
    // partition count (an event cannot be placed before), which a background task keeps asking for.
    let partitions = Partitions::unknown();
    let connecting = tokio::spawn(learn_partitions(args.kafka.clone(), partitions.clone()));
    let ingress = args.webhook.ingress(Arc::new(sink.clone()), partitions.clone(), Arc::clone(&metrics))?;
    let header_timeout = Duration::from_secs(args.webhook.header_timeout_secs);
    let (public, admin) = (bind(args.webhook.listen, 0).await?, bind(args.admin_listen, 1).await?);
    announce("ingress", Some(public.local_addr()?), admin.local_addr()?)?;
    let stop = stop_channel();
    let admin_server = tokio::spawn(paystate_ingress::serve(
        admin,
        ingress_admin_router(metrics, partitions, Arc::new(sink.clone())),
        wait_for(&stop),
    ));
    paystate_ingress::serve_with(public, public_router(ingress), header_timeout, wait_for(&stop))
        .await
        .context("public server")?;
    connecting.abort();
    flush(sink).await?;
    stopped(admin_server).await
}

/// Connects to the Kafka cluster (topics created or checked) until it answers, then sets `partitions`.
async fn learn_partitions(kafka: KafkaArgs, partitions: Partitions) {
    let mut wait = Duration::from_millis(500);
    loop {
        match kafka.connect().await {
            Ok((cfg, n)) => {
                partitions.set(n);
                tracing::info!(brokers = %cfg.brokers, topic = %cfg.raw_topic, partitions = n, "ingress to kafka: ready");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "Kafka not reachable: webhooks get 503 until it is");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// `paystate project`: a consumer-group member folding its partitions into its sled projection.
pub async fn run_project(args: ProjectArgs, token: Option<&AdminToken>) -> Result<()> {
    let catch_up_runs = paystate_ingress::CatchUpRuns::default();
    let admin_listener = bind(args.admin_listen, 0).await?;
    // The token rule holds for the address actually listened on (an inherited socket's, too).
    let auth = AdminToken::auth(token, admin_listener.local_addr()?, args.metrics_behind_token)?;
    let (cfg, partitions) = args.kafka.connect().await?;
    let projection = open_projection(&args.data_dir)?;
    let options = ProjectorOptions {
        group: args.group.clone(),
        batch_max: args.batch_max,
        session_timeout: Duration::from_millis(args.session_timeout_ms),
        partitions: Some(partitions),
        failure_grace_secs: args.failure_grace_secs,
        stream_retention: args.stream_retention_entries,
        accept_retention_gaps: args.accept_retention_gaps,
        admin_url: advertised(args.admin_advertise.as_deref(), admin_listener.local_addr()?)?,
        ..ProjectorOptions::default()
    };
    announce("project", None, admin_listener.local_addr()?)?;
    let stop = stop_channel();
    let (projector, handle) = spawn_kafka_projector(&cfg, projection.clone(), options, stop.clone())?;
    let admin = Admin {
        projection,
        log: projector.ends(),
        publishes: true,
        committed: projector.subscribe(),
        metrics: Arc::default(),
        auth,
        // A failed Kafka projector exits (the orchestrator restarts it): running means ready.
        readiness: Arc::new(Vec::new),
        retry_dead_letters: None,
        stream_max_wait: Duration::from_millis(args.stream_max_wait_ms),
        timeline: paystate_ingress::metrics::Timeline::default(),
        catch_up_runs: catch_up_runs.clone(),
    };
    tokio::spawn(paystate_ingress::keep_timeline(admin.clone()));
    let admin_server = tokio::spawn(paystate_ingress::serve(admin_listener, admin_router(admin), wait_for(&stop)));
    join_projector(handle).await?;
    stopped(admin_server).await
}

/// The store's settings from `--memory-budget-mb`, with a progress bar for a one-time log migration.
fn store_options(budget_mb: u64, min_free_mb: u64) -> paystate_store::StoreOptions {
    let budget = budget_mb.max(16) << 20;
    let queue_records = usize::try_from((budget / 8) / (8 << 10)).unwrap_or(usize::MAX).clamp(64, 4096);
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "migrating the data directory {elapsed_precise} [{bar:40}] {human_pos}/{human_len}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    paystate_store::StoreOptions {
        log: paystate_store::LogOptions { queue_records, min_free_bytes: min_free_mb << 20, ..Default::default() },
        cache_bytes: budget / 4,
        progress: Some(Arc::new(move |done, total| {
            bar.set_length(total);
            bar.set_position(done);
            if done == total {
                bar.finish();
            }
        })),
    }
}

/// Runs until SIGTERM/SIGINT, then: stops accepting, finishes in-flight appends, commits the projector.
pub async fn run(args: ServeArgs, token: Option<&AdminToken>) -> Result<()> {
    // Before anything is created: a refused start leaves no data directory behind (checked again for the
    // address actually listened on once bound).
    AdminToken::auth(token, args.admin_listen, args.metrics_behind_token)?;
    let catch_up_key = match args.catch_up_every_mins {
        Some(0) => anyhow::bail!("--catch-up-every-mins must be at least 1"),
        Some(_) => {
            args.catch_up.validate()?;
            Some(args.catch_up.key()?)
        }
        None => None,
    };
    if args.log == "kafka" {
        return run_kafka(args, token, catch_up_key).await;
    }
    let catch_up_runs = paystate_ingress::CatchUpRuns::default();
    let (public, admin_listener) = (bind(args.webhook.listen, 0).await?, bind(args.admin_listen, 1).await?);
    // The token rule holds for the address actually listened on (an inherited socket's, too).
    let auth = AdminToken::auth(token, admin_listener.local_addr()?, args.metrics_behind_token)?;
    let store = Store::open_with(
        &args.data_dir,
        Some(args.partitions),
        &store_options(args.memory_budget_mb, args.min_free_disk_mb),
    )
    .with_context(|| format!("opening data directory {}", args.data_dir.display()))?;
    let appender = store.log.start_appender();
    let metrics = Arc::new(Metrics::default());
    let ingress =
        args.webhook.ingress(Arc::new(appender.handle()), Partitions::fixed(args.partitions), Arc::clone(&metrics))?;
    // Not a handle: one kept by the admin listener would make the appender's close wait for ever.
    let appender_health = appender.health();
    let header_timeout = Duration::from_secs(args.webhook.header_timeout_secs);
    let projector = Arc::new(
        Projector::new(store.log.clone(), store.projection.clone(), args.batch_max)
            .with_failure_grace(args.failure_grace_secs)
            .with_stream_retention(args.stream_retention_entries),
    );
    let readiness: Readiness = {
        let (metrics, projector) = (Arc::clone(&metrics), Arc::clone(&projector));
        Arc::new(move || {
            let mut why = ingress_not_ready(&metrics, appender_health.check(), READY_WINDOW);
            if let Some(e) = projector.failing() {
                why.push(format!("the projector's batches fail: {e}"));
            }
            why
        })
    };
    let admin = Admin {
        projection: store.projection.clone(),
        log: Arc::new(store.log.clone()),
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
        stream_max_wait: Duration::from_millis(args.stream_max_wait_ms),
        timeline: paystate_ingress::metrics::Timeline::default(),
        catch_up_runs: catch_up_runs.clone(),
    };
    tokio::spawn(paystate_ingress::keep_timeline(admin.clone()));

    let (public_addr, admin_addr) = (public.local_addr()?, admin_listener.local_addr()?);
    announce("serve", Some(public_addr), admin_addr)?;
    tracing::info!(%public_addr, %admin_addr, data_dir = %args.data_dir.display(), partitions = args.partitions, "serving");

    let (stop_tx, stop_rx) = watch::channel(false);
    let (ingress_done_tx, ingress_done_rx) = watch::channel(false);
    tokio::spawn(async move {
        stop_signal().await;
        tracing::info!("shutting down: no new webhooks, finishing in-flight appends");
        let _ = stop_tx.send(true);
    });
    let public_server =
        tokio::spawn(paystate_ingress::serve_with(public, public_router(ingress), header_timeout, wait_for(&stop_rx)));
    let admin_server =
        tokio::spawn(paystate_ingress::serve(admin_listener, admin_router(admin), wait_for(&ingress_done_rx)));
    let projector_task = tokio::spawn(Arc::clone(&projector).run(store.log.subscribe(), wait_for(&ingress_done_rx)));
    let catch_up_task = match (catch_up_key, args.catch_up_every_mins) {
        (Some(key), Some(every)) => Some(tokio::spawn(periodic_catch_up(
            args.catch_up.clone(),
            key,
            Duration::from_secs(every.saturating_mul(60)),
            Arc::new(store.log.clone()),
            Arc::new(appender.handle()),
            stop_rx.clone(),
            catch_up_runs,
        ))),
        _ => None,
    };

    public_server.await.context("public server task")?.context("public server")?;
    if let Some(task) = catch_up_task {
        // Its append handle must be gone before the appender closes.
        task.await.context("catch-up task")?;
    }
    // Every in-flight webhook has been answered; let the appender drain and stop.
    tokio::task::spawn_blocking(move || appender.close()).await.context("closing the log appender")?;
    let _ = ingress_done_tx.send(true);
    projector_task.await.context("projector task")?;
    stopped(admin_server).await
}

/// `serve --catch-up-every-mins`: a catch-up run at start and then every `every`, until `stop`.
async fn periodic_catch_up(
    fetch: crate::catchup::FetchArgs,
    key: paystate_ingress::catchup::ApiKey,
    every: Duration,
    log: Arc<dyn crate::catchup::Received>,
    sink: Arc<dyn LogSink>,
    stop: watch::Receiver<bool>,
    runs: paystate_ingress::CatchUpRuns,
) {
    let mut stopped = stop.clone();
    let mut quiet = |_: paystate_ingress::catchup::Progress<'_>| {};
    loop {
        let run = crate::catchup::run_once(&fetch, &key, None, &log, sink.as_ref(), &mut quiet);
        tokio::select! {
            result = run => {
                let finished_at = crate::export::rfc3339(crate::catchup::now_secs());
                match result {
                    Ok(summary) => {
                        crate::catchup::log_summary(&summary);
                        runs.push(serde_json::json!({"finished_at": finished_at, "summary": summary}));
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "catch-up run failed; the next one starts in {} min", every.as_secs() / 60);
                        runs.push(serde_json::json!({"finished_at": finished_at, "error": format!("{e:#}")}));
                    }
                }
            }
            _ = stopped.wait_for(|s| *s) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// `serve --log kafka`: the ingress and one projector around Kafka, in one process.
async fn run_kafka(
    args: ServeArgs,
    token: Option<&AdminToken>,
    catch_up_key: Option<paystate_ingress::catchup::ApiKey>,
) -> Result<()> {
    let catch_up_runs = paystate_ingress::CatchUpRuns::default();
    let (public, admin_listener) = (bind(args.webhook.listen, 0).await?, bind(args.admin_listen, 1).await?);
    // The token rule holds for the address actually listened on (an inherited socket's, too).
    let auth = AdminToken::auth(token, admin_listener.local_addr()?, args.metrics_behind_token)?;
    let (cfg, partitions) = args.kafka.connect().await?;
    let sink = KafkaSink::new(&cfg, Duration::from_millis(args.kafka.kafka_timeout_ms))?;
    exit_on_fatal(sink.clone());
    let projection = open_projection(&args.data_dir)?;
    let metrics = Arc::new(Metrics::default());
    let ingress = args.webhook.ingress(Arc::new(sink.clone()), Partitions::fixed(partitions), Arc::clone(&metrics))?;
    let readiness: Readiness = {
        let (metrics, sink) = (Arc::clone(&metrics), sink.clone());
        Arc::new(move || ingress_not_ready(&metrics, sink.health(), READY_WINDOW))
    };
    let header_timeout = Duration::from_secs(args.webhook.header_timeout_secs);
    announce("serve", Some(public.local_addr()?), admin_listener.local_addr()?)?;
    let stop = stop_channel();
    let (ingress_done_tx, ingress_done_rx) = watch::channel(false);
    let options = ProjectorOptions {
        group: args.group.clone(),
        batch_max: args.batch_max,
        partitions: Some(partitions),
        failure_grace_secs: args.failure_grace_secs,
        stream_retention: args.stream_retention_entries,
        accept_retention_gaps: args.accept_retention_gaps,
        admin_url: advertised(args.admin_advertise.as_deref(), admin_listener.local_addr()?)?,
        ..ProjectorOptions::default()
    };
    let (projector, handle) = spawn_kafka_projector(&cfg, projection.clone(), options, ingress_done_rx.clone())?;
    let admin = Admin {
        projection,
        log: projector.ends(),
        publishes: true,
        committed: projector.subscribe(),
        metrics,
        auth,
        readiness,
        retry_dead_letters: None,
        stream_max_wait: Duration::from_millis(args.stream_max_wait_ms),
        timeline: paystate_ingress::metrics::Timeline::default(),
        catch_up_runs: catch_up_runs.clone(),
    };
    tokio::spawn(paystate_ingress::keep_timeline(admin.clone()));
    let admin_server =
        tokio::spawn(paystate_ingress::serve(admin_listener, admin_router(admin), wait_for(&ingress_done_rx)));
    let catch_up_task = match (catch_up_key, args.catch_up_every_mins) {
        (Some(key), Some(every)) => Some(tokio::spawn(periodic_catch_up(
            args.catch_up.clone(),
            key,
            Duration::from_secs(every.saturating_mul(60)),
            Arc::new(crate::catchup::KafkaReceived { cfg: cfg.clone(), partitions }),
            Arc::new(sink.clone()),
            stop.clone(),
            catch_up_runs,
        ))),
        _ => None,
    };
    paystate_ingress::serve_with(public, public_router(ingress), header_timeout, wait_for(&stop))
        .await
        .context("public server")?;
    if let Some(task) = catch_up_task {
        // Its appends are flushed with the ingress's.
        task.await.context("catch-up task")?;
    }
    flush(sink).await?;
    let _ = ingress_done_tx.send(true);
    join_projector(handle).await?;
    stopped(admin_server).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_secret_that_is_not_a_signing_secret_is_named_for_what_it_looks_like() {
        assert_eq!(super::secret_warning("whsec_abc"), None);
        let key = super::secret_warning("sk_test_123").expect("an API key");
        assert!(key.contains("starts with sk_: that is an API key"), "{key}");
        assert!(!key.contains("123"), "the secret is not repeated: {key}");
        let other = super::secret_warning("hunter2").expect("not whsec_");
        assert!(other.contains("does not start with whsec_") && !other.contains("hunter2"), "{other}");
    }
}
