//! `paystate catch-up` and `serve --catch-up-every`: the events that never reached the webhook, fetched back
//! from Stripe's Events API into the log (`paystate_ingress::catchup` does the listing and appending).

use anyhow::{bail, Context, Result};
use paystate_ingress::catchup::{self, ApiKey, CatchUpOptions, Progress, Scope, Summary};
use paystate_store::{EmbeddedLog, LogSink, RECEIVE_ORDER_SLACK_MS};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Stripe keeps events for 30 days.
const EVENTS_KEPT_SECS: i64 = 30 * 24 * 3600;

/// What is fetched and from where: shared by `catch-up` and `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// A file holding a Stripe API key that may read events: a restricted key (`rk_…`) with "Events: Read"
    /// (and "Connect: Read" for --all-accounts), or a secret key. Else `STRIPE_API_KEY`. Never logged.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Stripe's API (another base for tests or a proxy).
    #[arg(long, default_value = "https://api.stripe.com")]
    pub api_base: String,
    /// A connected account whose events to fetch (sent as `Stripe-Account`); repeatable. Without it and
    /// without --all-accounts: the key's own account.
    #[arg(long = "catch-up-account", visible_alias = "account", conflicts_with = "all_accounts")]
    pub accounts: Vec<String>,
    /// The platform's events and every connected account's (`GET /v1/accounts`, paged).
    #[arg(long)]
    pub all_accounts: bool,
    /// Only events of this type (`types[]`); repeatable, at most 20. Default: every type.
    #[arg(long = "catch-up-type", visible_alias = "type")]
    pub types: Vec<String>,
    /// Minutes before the newest event received in the log to start listing from, when --since is not
    /// given (covers events received out of order around the gap).
    #[arg(long, default_value_t = 60)]
    pub catch_up_window_mins: u64,
    /// Requests per second to Stripe at most (Stripe's read limit is far above the default).
    #[arg(long, default_value_t = 20.0)]
    pub catch_up_max_requests_per_sec: f64,
    /// Attempts per request (429, 5xx and network failures are retried with backoff).
    #[arg(long, default_value_t = 8)]
    pub catch_up_max_attempts: u32,
    /// Timeout of one request to Stripe, in seconds.
    #[arg(long, default_value_t = 30)]
    pub catch_up_timeout_secs: u64,
}

/// Options of `paystate catch-up`.
#[derive(Debug, clap::Args)]
pub struct CatchUpArgs {
    /// Data directory whose embedded log gets the missing events (`paystate serve` must not be running on
    /// it: give serve --catch-up-every instead). The projector folds them when serve next runs.
    #[arg(long, default_value = "paystate-data")]
    pub data_dir: PathBuf,
    /// The log that gets the missing events: `embedded` (--data-dir) or `kafka` (the raw topic of
    /// --kafka-brokers, which the projectors fold as they come, whatever runs).
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "kafka"])]
    pub log: String,
    #[command(flatten)]
    pub kafka: crate::serve::KafkaArgs,
    /// List events created at or after this time (RFC 3339 or unix seconds). Default: the newest event
    /// received in the log minus --catch-up-window-mins.
    #[arg(long, value_parser = crate::replay::parse_time)]
    pub since: Option<i64>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

impl FetchArgs {
    /// The API key from --api-key-file or `STRIPE_API_KEY`.
    pub fn key(&self) -> Result<ApiKey> {
        let text = match &self.api_key_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the API key file {}", path.display()))?,
            None => match std::env::var("STRIPE_API_KEY") {
                Ok(k) => k,
                Err(_) => bail!("catch-up needs a Stripe API key: --api-key-file FILE or STRIPE_API_KEY (a restricted key with \"Events: Read\" is enough)"),
            },
        };
        Ok(ApiKey::new(&text)?)
    }

    fn options(&self, key: ApiKey, since: i64, partitions: u32) -> CatchUpOptions {
        let scope = match (self.all_accounts, self.accounts.is_empty()) {
            (true, _) => Scope::AllAccounts,
            (false, true) => Scope::Platform,
            (false, false) => Scope::Accounts(self.accounts.clone()),
        };
        CatchUpOptions {
            api_base: self.api_base.clone(),
            key,
            scope,
            types: self.types.clone(),
            since,
            max_requests_per_sec: self.catch_up_max_requests_per_sec,
            max_attempts: self.catch_up_max_attempts,
            request_timeout: Duration::from_secs(self.catch_up_timeout_secs.max(1)),
            partitions,
        }
    }

    /// Checks what can be checked before a run (also at serve's start).
    pub fn validate(&self) -> Result<()> {
        if self.types.len() > catchup::MAX_TYPES {
            bail!(
                "{} --catch-up-type given; Stripe takes at most {} in one list",
                self.types.len(),
                catchup::MAX_TYPES
            );
        }
        if let Some(a) = self.accounts.iter().find(|a| !a.starts_with("acct_")) {
            bail!("--catch-up-account {a:?}: a connected account's id starts with acct_");
        }
        if !(self.catch_up_max_requests_per_sec > 0.0 && self.catch_up_max_requests_per_sec.is_finite()) {
            bail!("--catch-up-max-requests-per-sec must be a positive number");
        }
        Ok(())
    }
}

/// Now, unix seconds.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What a run needs to know of the log it appends to: which events it holds already.
pub trait Received: Send + Sync + 'static {
    /// The log's partition count (where an event goes).
    fn partitions(&self) -> u32;
    /// When the newest event was received, unix ms; `None` for an empty log.
    fn newest_received_ms(&self) -> Result<Option<i64>>;
    /// The ids of (at least) every event received at or after `floor_ms`.
    fn event_ids_received_since(&self, floor_ms: i64) -> Result<HashSet<String>>;
}

impl Received for EmbeddedLog {
    fn partitions(&self) -> u32 {
        EmbeddedLog::partitions(self)
    }
    fn newest_received_ms(&self) -> Result<Option<i64>> {
        Ok(EmbeddedLog::newest_received_ms(self)?)
    }
    fn event_ids_received_since(&self, floor_ms: i64) -> Result<HashSet<String>> {
        Ok(EmbeddedLog::event_ids_received_since(self, floor_ms)?)
    }
}

/// The Kafka log's raw topic, as catch-up reads it.
#[derive(Debug, Clone)]
pub struct KafkaReceived {
    /// Where the topic is.
    pub cfg: paystate_kafka::KafkaConfig,
    /// Its partition count.
    pub partitions: u32,
}

impl Received for KafkaReceived {
    fn partitions(&self) -> u32 {
        self.partitions
    }
    fn newest_received_ms(&self) -> Result<Option<i64>> {
        paystate_kafka::received::newest_received_ms(&self.cfg, self.partitions)
            .context("reading the raw topic's newest events")
    }
    fn event_ids_received_since(&self, floor_ms: i64) -> Result<HashSet<String>> {
        paystate_kafka::received::event_ids_received_since(&self.cfg, self.partitions, floor_ms)
            .context("reading the event ids of the raw topic")
    }
}

/// Runs a blocking question about the log off the runtime.
async fn ask<T: Send + 'static>(
    log: &Arc<dyn Received>,
    f: impl FnOnce(&dyn Received) -> Result<T> + Send + 'static,
) -> Result<T> {
    let log = Arc::clone(log);
    tokio::task::spawn_blocking(move || f(log.as_ref())).await.context("reading the log")?
}

/// One run against `log`, appending through `sink`: `since` given, or the newest receive time minus the
/// window (now minus the window for an empty log).
pub async fn run_once(
    fetch: &FetchArgs,
    key: &ApiKey,
    since: Option<i64>,
    log: &Arc<dyn Received>,
    sink: &dyn LogSink,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<Summary> {
    let window = i64::try_from(fetch.catch_up_window_mins.saturating_mul(60)).unwrap_or(i64::MAX);
    let since = match since {
        Some(s) => s,
        None => {
            let newest = ask(log, |l| l.newest_received_ms()).await?;
            newest.map_or_else(now_secs, |ms| ms.div_euclid(1000)).saturating_sub(window)
        }
    };
    let oldest_kept = now_secs() - EVENTS_KEPT_SECS;
    if since < oldest_kept {
        tracing::warn!(since, "catch-up: Stripe keeps events for 30 days; older ones cannot be fetched back");
    }
    // Every event listed was created at or after `since`, so received (by us) after it, give or take the
    // clocks and the order of appends.
    let floor = since.saturating_mul(1000).saturating_sub(RECEIVE_ORDER_SLACK_MS);
    let mut known = ask(log, move |l| l.event_ids_received_since(floor)).await?;
    tracing::info!(since, known = known.len(), "catch-up: listing Stripe's events");
    let opts = fetch.options(key.clone(), since, log.partitions());
    Ok(catchup::catch_up(&opts, &mut known, sink, progress).await?)
}

/// Logs a run's summary (for serve's periodic runs).
pub fn log_summary(s: &Summary) {
    tracing::info!(
        pages = s.pages,
        seen = s.seen,
        appended = s.appended,
        already_present = s.already_present,
        skipped = s.skipped,
        retries = s.retries,
        "catch-up run done"
    );
}

/// Prints a summary for people.
fn print_summary(s: &Summary) {
    println!(
        "catch-up: {} accounts, {} pages, {} requests ({} retried): {} events listed, {} appended, {} already in the log, {} skipped",
        s.accounts, s.pages, s.requests, s.retries, s.seen, s.appended, s.already_present, s.skipped
    );
    for (t, c) in &s.per_type {
        println!("  {t}: {} listed, {} appended", c.seen, c.appended);
    }
}

/// `paystate catch-up`.
pub async fn run(args: CatchUpArgs) -> Result<()> {
    args.fetch.validate()?;
    let key = args.fetch.key()?;
    let bar = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("catch-up {elapsed_precise} {spinner} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let mut progress = |p: Progress<'_>| {
        let reached = p.reached.map(crate::export::rfc3339).unwrap_or_default();
        let whose = p.account.unwrap_or("platform");
        bar.set_message(format!(
            "{whose}: {} pages, {} listed, {} appended, reached {reached}",
            p.summary.pages, p.summary.seen, p.summary.appended
        ));
    };
    let result = if args.log == "kafka" {
        let (cfg, partitions) = args.kafka.connect().await?;
        let sink = paystate_kafka::KafkaSink::new(&cfg, Duration::from_millis(args.kafka.kafka_timeout_ms))?;
        let log: Arc<dyn Received> = Arc::new(KafkaReceived { cfg, partitions });
        let result = run_once(&args.fetch, &key, args.since, &log, &sink, &mut progress).await;
        tokio::task::spawn_blocking(move || sink.flush(Duration::from_secs(30)))
            .await
            .context("flushing the producer")??;
        result
    } else {
        let log = open_log(&args.data_dir)?;
        let appender = log.start_appender();
        let handle = appender.handle();
        let log: Arc<dyn Received> = Arc::new(log);
        let result = run_once(&args.fetch, &key, args.since, &log, &handle, &mut progress).await;
        drop(handle);
        tokio::task::spawn_blocking(move || appender.close()).await.context("closing the log appender")?;
        result
    };
    bar.finish_and_clear();
    let summary = result?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

/// The embedded log of `dir`, for appending: refused while `serve` runs on it.
fn open_log(dir: &Path) -> Result<EmbeddedLog> {
    match paystate_store::Store::open_log_for_append(dir) {
        Ok(log) => Ok(log),
        Err(paystate_store::StoreError::Locked(_)) => bail!(
            "{} is in use (a paystate serve runs on it): give that serve --catch-up-every MINUTES with the API key, or stop it first",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("opening the log of {}", dir.display())),
    }
}
