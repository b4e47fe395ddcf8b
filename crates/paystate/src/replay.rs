//! `paystate replay`: rebuild a projection from the log into a fresh data directory.
//!
//! Sources: a data directory (its embedded log, read directly and never written: the writer's lock keeps
//! `serve` out meanwhile), the admin API of a running `serve` (`--source http://127.0.0.1:9090`: the durable records, read
//! over HTTP, so replay never touches the live store), or the Kafka raw topic. The fold is in
//! `paystate_projector::replay`; this is the shell: arguments, progress bar, summary.

use crate::admin::AdminToken;
use anyhow::{bail, Context, Result};
use paystate_kafka::KafkaConfig;
use paystate_projector::replay::{replay_log, ReplayOptions, ReplaySummary};
use paystate_projector::LogSource;
use paystate_store::{EmbeddedLog, LogRecord, Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Options of `replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The log to replay: a data directory that no process has open, or the admin URL of the `paystate
    /// serve` that holds it (e.g. http://127.0.0.1:9090), which is how to replay while it runs.
    #[arg(long, required_unless_present = "kafka_brokers", conflicts_with = "kafka_brokers")]
    pub source: Option<String>,
    /// Replay the Kafka raw topic instead (bootstrap servers). Not read from PAYSTATE_KAFKA_BROKERS: the
    /// source of a replay is always said on its command line.
    #[arg(long)]
    pub kafka_brokers: Option<String>,
    /// The raw topic (with --kafka-brokers).
    #[arg(long, default_value = "stripe.events")]
    pub topic: String,
    /// A librdkafka property (TLS, SASL, …), `key=value`; repeatable.
    #[arg(long = "kafka-config", value_parser = KafkaConfig::parse_property)]
    pub kafka_config: Vec<(String, String)>,
    /// A file of librdkafka properties, one `key=value` per line.
    #[arg(long)]
    pub kafka_config_file: Option<PathBuf>,
    /// Rebuild the projection as of this Stripe event time (`created`): RFC 3339 or unix seconds.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
    /// New data directory for the rebuilt projection (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Partitions folded at once (default: the number of CPUs).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Most payments a partition fold keeps in memory (about 12 KB each with history); beyond it the least
    /// recently touched half is written out and read back when needed. Bounds replay's memory whatever the
    /// log's size. With --kafka-brokers, shared by all partitions.
    #[arg(long, default_value_t = ReplayOptions::default().max_payments)]
    pub max_payments: usize,
    /// The live projector's --failure-grace-secs: the rebuilt ledgers of emitted actions then match it.
    #[arg(long, default_value_t = paystate_core::DEFAULT_FAILURE_GRACE_SECS)]
    pub failure_grace_secs: i64,
}

/// Parses RFC 3339 (`2026-11-29T10:00:00Z`, any offset) or unix seconds; refuses what looks like unix
/// milliseconds (Stripe's `created` is in seconds), saying so.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        // 10^11 seconds is the year 5138; milliseconds of any date since 1973 are above it.
        if n.abs() >= 100_000_000_000 {
            return Err(format!(
                "{s} looks like unix milliseconds; give seconds ({}) or RFC 3339, e.g. 2026-11-29T10:00:00Z",
                n / 1000
            ));
        }
        return Ok(n);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map(|t| t.unix_timestamp()).map_err(
        |e| format!("{s:?} is neither RFC 3339 nor unix seconds ({e}); e.g. 2026-11-29T10:00:00Z, 2026-11-29T11:00:00+01:00 or 1795946400"),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc_3339_or_unix_seconds_and_milliseconds_are_named() {
        assert_eq!(super::parse_time("1795946400"), Ok(1_795_946_400));
        assert_eq!(super::parse_time("2026-11-29T10:00:00Z"), Ok(1_795_946_400));
        assert_eq!(super::parse_time("2026-11-29T11:00:00+01:00"), Ok(1_795_946_400));
        let ms = super::parse_time("1795946400000").expect_err("milliseconds");
        assert!(ms.contains("looks like unix milliseconds; give seconds (1795946400)"), "{ms}");
        let bad = super::parse_time("yesterday").expect_err("not a time");
        assert!(bad.contains("e.g. 2026-11-29T10:00:00Z"), "{bad}");
    }
}

/// Where a replay reads from, opened (and checked) before the output is created.
enum Source {
    Dir(EmbeddedLog),
    Admin(AdminLog),
    Kafka(KafkaConfig),
}

impl Source {
    fn open(args: &ReplayArgs, token: Option<&AdminToken>) -> Result<Self> {
        Ok(match (&args.source, &args.kafka_brokers) {
            (Some(src), _) if crate::inspect::is_url(src) => Source::Admin(AdminLog::connect(src, token)?),
            (Some(dir), _) => Source::Dir(open_log(Path::new(dir))?),
            (None, Some(brokers)) => {
                let mut cfg =
                    crate::serve::kafka_config(brokers, &args.kafka_config, args.kafka_config_file.as_deref())?;
                cfg.raw_topic.clone_from(&args.topic);
                Source::Kafka(cfg)
            }
            (None, None) => bail!("give --source or --kafka-brokers"),
        })
    }
}

/// Runs a replay and prints its summary and digest.
pub fn run(args: &ReplayArgs, token: Option<&AdminToken>) -> Result<()> {
    let source = Source::open(args, token)?;
    prepare_out(&args.out)?;
    let out = Store::open_projection_with_cache(&args.out, 64 << 20)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let options = ReplayOptions {
        until: args.until,
        workers,
        max_payments: args.max_payments,
        failure_grace_secs: args.failure_grace_secs,
    };
    let progress = AtomicU64::new(0);
    let started = Instant::now();
    let mut summary = match &source {
        Source::Admin(log) => {
            with_progress(Some(log.total()), &progress, || Ok(replay_log(log, &out, &options, &progress)?))?
        }
        Source::Dir(log) => {
            let total = (0..log.partitions()).map(|p| log.end(p)).sum();
            with_progress(Some(total), &progress, || Ok(replay_log(log, &out, &options, &progress)?))?
        }
        Source::Kafka(cfg) => with_progress(None, &progress, || {
            paystate_kafka::replay_topic(cfg, &out, &options, &progress)
                .with_context(|| format!("replaying {} on {}", cfg.raw_topic, cfg.brokers))
        })?,
    };
    let digest = summary.digest();
    let elapsed = started.elapsed();
    // Written last: a directory without it is an interrupted replay (delete it and run again).
    let source = match (&args.source, &args.kafka_brokers) {
        (Some(s), _) => s.clone(),
        (None, Some(b)) => format!("kafka://{b}/{}", args.topic),
        (None, None) => String::new(),
    };
    let record = serde_json::json!({
        "source": source,
        "until": args.until,
        "workers": workers,
        "max_payments": args.max_payments,
        "summary": summary,
        "digest": digest,
        "elapsed_secs": elapsed.as_secs_f64(),
    });
    let marker = args.out.join("REPLAY.json");
    std::fs::write(&marker, serde_json::to_vec_pretty(&record)?)
        .with_context(|| format!("writing {}", marker.display()))?;
    print_summary(&summary, elapsed);
    println!("digest {digest} payments {}", summary.payments);
    Ok(())
}

fn prepare_out(out: &Path) -> Result<()> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?;
        if entries.next().is_some() {
            bail!("{} is not empty: replay writes a fresh projection", out.display());
        }
    }
    Ok(())
}

/// Opens the embedded log of `dir` for reading, with a clear message when a running process holds it.
fn open_log(dir: &Path) -> Result<EmbeddedLog> {
    Store::open_log(dir).map_err(|e| match e {
        StoreError::Locked(_) => anyhow::anyhow!(
            "{} is in use by a running process: give the admin URL of the process that has it open, e.g. --source http://127.0.0.1:9090",
            dir.display()
        ),
        e => anyhow::Error::new(e).context(format!("opening the log of {}", dir.display())),
    })
}

/// Runs `work` with a progress bar on stderr when it is a terminal (`total` records, when known).
fn with_progress<T>(total: Option<u64>, progress: &AtomicU64, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let bar = crate::progress::bar("replay", total, "events");
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                bar.set_position(progress.load(Ordering::Relaxed));
                bar.tick();
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.set_position(progress.load(Ordering::Relaxed));
            bar.finish_and_clear();
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        result
    })
}

fn print_summary(s: &ReplaySummary, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "read {} | applied {} | duplicates {} | not relevant {} | dead-lettered {} | after --until {}",
        s.read, s.applied, s.duplicates, s.not_relevant, s.dead_lettered, s.after_until
    );
    let by: Vec<String> = s.lifecycles.iter().map(|(l, n)| format!("{} {n}", l.as_str())).collect();
    println!("payments {}: {}", s.payments, by.join(", "));
    let rss = peak_rss_mb().map_or_else(|| "unknown".to_owned(), |mb| format!("{mb} MB"));
    println!("elapsed {secs:.2} s | {:.0} events/s | peak RSS {rss}", s.read as f64 / secs.max(1e-9));
}

/// This process's peak resident set size (Linux `VmHWM`), in MB.
fn peak_rss_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// The embedded log of a running `serve`, read through its admin API (`GET /v1/log/{partition}`). The
/// partition ends are taken once, when connecting: the replay is of the log as it was then.
#[derive(Debug)]
struct AdminLog {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    ends: Vec<u64>,
}

impl AdminLog {
    fn connect(base: &str, token: Option<&AdminToken>) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let base = base.trim_end_matches('/').to_owned();
        let client = crate::admin::client(token, reqwest::Client::builder().timeout(Duration::from_secs(60)))?;
        let url = format!("{base}/v1/status");
        let status: serde_json::Value = runtime
            .block_on(async { anyhow::Ok(crate::admin::checked(client.get(&url).send().await?)?.json().await?) })
            .with_context(|| format!("reading {url}"))?;
        let parts = status["partitions"].as_array().context("status has no partitions")?;
        let ends =
            parts.iter().map(|p| p["log_end"].as_u64().context("partition without log_end")).collect::<Result<_>>()?;
        Ok(AdminLog { base, client, runtime, ends })
    }

    fn total(&self) -> u64 {
        self.ends.iter().sum()
    }

    async fn fetch(&self, partition: u32, from: u64, max: usize) -> Result<Vec<(u64, LogRecord)>, String> {
        let url = format!("{}/v1/log/{partition}?from={from}&limit={}", self.base, max.min(10_000));
        let resp = self.client.get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{url}: {status}: {}", String::from_utf8_lossy(&body)));
        }
        paystate_store::decode_frames(&body).map_err(|e| format!("{url}: {e}"))
    }
}

impl LogSource for AdminLog {
    fn partitions(&self) -> u32 {
        u32::try_from(self.ends.len()).unwrap_or(u32::MAX)
    }
    fn end(&self, partition: u32) -> u64 {
        self.ends.get(partition as usize).copied().unwrap_or(0)
    }
    fn read(&self, partition: u32, from: u64, max: usize) -> Result<Vec<(u64, LogRecord)>, StoreError> {
        self.runtime.block_on(self.fetch(partition, from, max)).map_err(StoreError::Read)
    }
}
