//! `paystate simulate`: realistic signed Stripe traffic, delivered the way Stripe delivers it.
//!
//! Payments of every lifecycle scenario; events out of order within a window; some delivered twice; a
//! fresh timestamp and signature on every attempt; retries with exponential backoff on any non-2xx,
//! connection error or timeout. Writes each payment's expected final state (`--truth`) and the ids of the
//! acknowledged events (`--acked`).

use anyhow::{bail, Context, Result};
use paystate_stripe::WebhookSecret;
use paystate_testkit::scenario::{generate_with, Scenario, Truth};
use paystate_testkit::synth::{Rng, SynthEvent, Versions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Options of `simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The webhook endpoint, e.g. http://127.0.0.1:8080/webhooks/stripe.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/stripe")]
    pub url: String,
    /// The signing secret the endpoint was started with.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Number of payments.
    #[arg(long, default_value_t = 100)]
    pub payments: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seed: the same seed generates the same payments and delivery order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of events delivered twice.
    #[arg(long, default_value_t = 0.03)]
    pub duplicates: f64,
    /// Events are delivered in the order Stripe creates them, out of order within this many seconds of
    /// Stripe time (and, more often, within the same second): Stripe sends each event right after it
    /// happens, but neither in order nor once.
    #[arg(long, default_value_t = 5)]
    pub shuffle_window_secs: u64,
    /// Write each payment's expected final state here (JSON lines).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Write the id of every event acknowledged with 2xx here (one per line).
    #[arg(long)]
    pub acked: Option<PathBuf>,
    /// Per-request timeout.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Stop retrying an event after this long.
    #[arg(long, default_value_t = 600)]
    pub give_up_after_secs: u64,
    /// Send at most this many deliveries per second (first attempts, evenly paced); 0: as fast as the
    /// endpoint answers. A paced run lasts long enough for fault tests to act on it.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Instead of sending over HTTP, append the deliveries (signed, in delivery order, duplicates
    /// included) straight to the embedded log of this data directory, as the ingress would: for
    /// benchmarks and replay tests that should not pay for HTTP. The directory must not be in use.
    #[arg(long)]
    pub to_log: Option<PathBuf>,
    /// Instead of sending, write the deliveries (in delivery order, duplicates included, each signed now)
    /// to PREFIX.0 … PREFIX.<parts-1>, round-robin, for a load generator that replays them
    /// (`tests/bench/wrk-corpus.lua`): per delivery a line `<Stripe-Signature>\t<body length>`, then the
    /// body and a newline.
    #[arg(long, value_name = "PREFIX")]
    pub corpus: Option<PathBuf>,
    /// Files --corpus writes (one per load-generator thread).
    #[arg(long, default_value_t = 2)]
    pub corpus_parts: usize,
    /// Log partitions when --to-log creates the data directory.
    #[arg(long, default_value_t = paystate_store::DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// The Stripe API version the events are rendered in, as Stripe renders them for an endpoint of that
    /// version (e.g. 2020-08-27: refunds embedded in the Charge; 2024-06-20: refunds only as the Charge's
    /// `amount_refunded`; 2024-12-18.acacia: `refund.*` for every refund; 2025-03-31.basil and later: no
    /// Refund for an uncaptured rest).
    #[arg(long, default_value = paystate_testkit::synth::API_VERSION)]
    pub api_version: String,
    /// Upgrade the endpoint to this version half-way: events Stripe creates after the middle of the
    /// simulated day are rendered in it (payments under way then are reported in both versions).
    #[arg(long)]
    pub upgrade_to: Option<String>,
    /// Stripe time the payments start from (RFC 3339 or unix seconds): they begin within the day after it,
    /// and their later events (refunds, disputes) follow over weeks. Default: the payments are dated so
    /// that their last event is an hour before now (every event in the past).
    #[arg(long, value_parser = crate::replay::parse_time)]
    pub start: Option<i64>,
    /// Share of events Stripe never manages to deliver (an outage longer than its retries): they are not
    /// sent, but `--events` and `--truth` include them, as Stripe's Events API would (`paystate catch-up`
    /// fetches them back).
    #[arg(long, default_value_t = 0.0)]
    pub lose: f64,
    /// Write every event Stripe created, once each, as JSON lines in creation order: what its Events API
    /// lists.
    #[arg(long)]
    pub events: Option<PathBuf>,
}

struct Delivery {
    event_id: String,
    body: Vec<u8>,
}

/// What a simulation sends and what it knows.
struct Plan {
    /// The deliveries, in order (duplicates included, lost events left out).
    deliveries: Vec<Delivery>,
    /// Each payment's truth.
    truths: Vec<Truth>,
    /// Every event created, once, in creation order.
    events: Vec<Delivery>,
    /// `created` of the newest event.
    newest: i64,
}

/// The plan with the payments starting within the day after `start`, or, without one, dated so that the
/// newest event is an hour before `now` (the plan is generated twice: the seed draws the same payments
/// whatever the start, so the second is the first shifted).
fn plan_dated(args: &SimulateArgs, start: Option<i64>, now: i64) -> Plan {
    match start {
        Some(start) => plan(args, start + 86_400),
        None => {
            let draft = plan(args, now);
            plan(args, now - (draft.newest - now) - 3600)
        }
    }
}

/// Generates the payments and the delivery order (pure: seeded).
fn plan(args: &SimulateArgs, t0: i64) -> Plan {
    let mut rng = Rng::new(args.seed);
    // Payments start within the day before t0.
    let versions = Versions {
        before: args.api_version.clone(),
        upgrade: args.upgrade_to.as_ref().map(|v| (t0 - 43_200, v.clone())),
    };
    let mut truths = Vec::with_capacity(args.payments);
    let mut per_payment: Vec<Vec<SynthEvent>> = Vec::with_capacity(args.payments);
    for _ in 0..args.payments {
        let scenario = *rng.pick(&Scenario::ALL);
        let start = t0 - i64::try_from(rng.below(86_400)).unwrap_or(0);
        let (events, truth) = generate_with(scenario, &mut rng, start, &versions);
        per_payment.push(events);
        truths.push(truth);
    }
    // Deliver in Stripe-time order, each delivery (duplicates too) displaced by a uniform jitter of up to
    // the window: the events of one second, and of nearby seconds, arrive in any order.
    let mut slots: Vec<(f64, usize, usize)> = Vec::new();
    let window_ms = args.shuffle_window_secs.max(1) * 1000;
    for (p, events) in per_payment.iter().enumerate() {
        for (i, e) in events.iter().enumerate() {
            // Drawn only when asked for: the same seed without --lose plans what it always did.
            if args.lose > 0.0 && rng.chance(args.lose) {
                continue;
            }
            let copies = if rng.chance(args.duplicates) { 2 } else { 1 };
            for _ in 0..copies {
                let jitter = rng.below(window_ms) as f64 / 1000.0;
                slots.push((e.created as f64 + jitter, p, i));
            }
        }
    }
    slots.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let deliveries = slots
        .into_iter()
        .map(|(_, p, i)| {
            let e = &per_payment[p][i];
            Delivery { event_id: e.id.clone(), body: e.body() }
        })
        .collect();
    let mut all: Vec<&SynthEvent> = per_payment.iter().flatten().collect();
    all.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    let newest = all.last().map_or(t0, |e| e.created);
    // Compact, one line each (the Events API's rendering is the same event).
    let events = all
        .into_iter()
        .map(|e| Delivery { event_id: e.id.clone(), body: serde_json::to_vec(&e.json).unwrap_or_default() })
        .collect();
    Plan { deliveries, truths, events, newest }
}

fn unix_now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)).unwrap_or(0)
}

/// Runs the simulation and prints its figures.
pub async fn run(args: SimulateArgs) -> Result<()> {
    let secret = WebhookSecret::new(&args.secret)?;
    if !(0.0..=1.0).contains(&args.lose) || !(0.0..=1.0).contains(&args.duplicates) {
        bail!("--lose and --duplicates are shares between 0 and 1");
    }
    let Plan { deliveries, truths, events, .. } = plan_dated(&args, args.start, unix_now());
    if let Some(path) = &args.events {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for e in &events {
            f.write_all(&e.body)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
    }
    if let Some(path) = &args.truth {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for t in &truths {
            serde_json::to_writer(&mut f, t)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
    }
    if let Some(dir) = &args.to_log {
        return to_log(dir, args.partitions, &secret, &deliveries);
    }
    if let Some(prefix) = &args.corpus {
        return write_corpus(prefix, args.corpus_parts, &secret, &deliveries);
    }
    let total = deliveries.len();
    let body_bytes: usize = deliveries.iter().map(|d| d.body.len()).sum();
    let queue = Arc::new(deliveries);
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let acked = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms))
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let started = Instant::now();
    let give_up = Duration::from_secs(args.give_up_after_secs);
    let rate = args.rate;
    if !rate.is_finite() || rate < 0.0 {
        bail!("--rate must be a number of deliveries per second, 0 or more, not {rate}");
    }
    // Until anything is accepted, a URL where nothing listens fails the run within CONNECT_GIVE_UP, not
    // after --give-up-after-secs (later, a refused connection is a server restarting: retried as long).
    let unreachable_since: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (queue, next, sent, retried, latencies, acked) =
            (queue.clone(), next.clone(), sent.clone(), retried.clone(), latencies.clone(), acked.clone());
        let unreachable_since = unreachable_since.clone();
        let (client, secret, url) = (client.clone(), secret.clone(), args.url.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(d) = queue.get(i) else { return Ok::<(), anyhow::Error>(()) };
                if rate > 0.0 {
                    tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / rate)).into()).await;
                }
                let first_try = Instant::now();
                let mut backoff = Duration::from_millis(50);
                loop {
                    // A fresh timestamp and signature on every attempt, as Stripe does.
                    let header = secret.header(unix_now(), &d.body);
                    let t = Instant::now();
                    sent.fetch_add(1, Ordering::Relaxed);
                    let resp = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("stripe-signature", header)
                        .body(d.body.clone())
                        .send()
                        .await;
                    match resp {
                        Ok(r) if r.status().is_success() => {
                            let elapsed = t.elapsed();
                            if let Ok(mut l) = latencies.lock() {
                                l.push(elapsed);
                            }
                            if let Ok(mut a) = acked.lock() {
                                a.push(d.event_id.clone());
                            }
                            break;
                        }
                        Err(e) if e.is_connect() && acked.lock().is_ok_and(|a| a.is_empty()) => {
                            let since = *unreachable_since
                                .lock()
                                .map_err(|_| anyhow::anyhow!("poisoned"))?
                                .get_or_insert_with(Instant::now);
                            if since.elapsed() >= CONNECT_GIVE_UP {
                                bail!(
                                    "nothing accepts connections at {url}: {} (tried for {} s); is paystate serve \
                                     (or ingress) running there? Check --url",
                                    root_cause(&e),
                                    CONNECT_GIVE_UP.as_secs()
                                );
                            }
                            retried.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_millis(500));
                        }
                        Ok(r) if r.status().is_client_error() && r.status() != reqwest::StatusCode::REQUEST_TIMEOUT => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            bail!("event {} refused with {status}: {text}", d.event_id);
                        }
                        _ => {
                            retried.fetch_add(1, Ordering::Relaxed);
                            if first_try.elapsed() > give_up {
                                bail!("event {} not accepted after {give_up:?}", d.event_id);
                            }
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                        }
                    }
                }
            }
        }));
    }
    let mut failure: Option<anyhow::Error> = None;
    for w in workers {
        if let Err(e) = w.await? {
            failure.get_or_insert(e);
        }
    }
    let elapsed = started.elapsed();
    if let Some(path) = &args.acked {
        let ids = acked.lock().map(|a| a.join("\n")).unwrap_or_default();
        std::fs::write(path, ids + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    let accepted = lat.len();
    println!(
        "payments {} | deliveries {} | sent {} | accepted {} | retried {} | {:.1}s | {:.0} req/s | p50 {:.2} ms | p99 {:.2} ms | body bytes {}",
        args.payments,
        total,
        sent.load(Ordering::Relaxed),
        accepted,
        retried.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        accepted as f64 / elapsed.as_secs_f64().max(1e-9),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        body_bytes,
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Writes the signed deliveries round-robin into `parts` files `prefix.N` (see `--corpus`).
fn write_corpus(prefix: &std::path::Path, parts: usize, secret: &WebhookSecret, deliveries: &[Delivery]) -> Result<()> {
    let parts = parts.max(1);
    let mut files = (0..parts)
        .map(|i| {
            let path = PathBuf::from(format!("{}.{i}", prefix.display()));
            std::fs::File::create(&path)
                .map(std::io::BufWriter::new)
                .with_context(|| format!("creating {}", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let now = unix_now();
    let mut bytes = 0;
    for (i, d) in deliveries.iter().enumerate() {
        let f = &mut files[i % parts];
        writeln!(f, "{}\t{}", secret.header(now, &d.body), d.body.len())?;
        f.write_all(&d.body)?;
        f.write_all(b"\n")?;
        bytes += d.body.len();
    }
    for mut f in files {
        f.flush()?;
    }
    println!("corpus {} deliveries | {bytes} body bytes | {} files {}.N", deliveries.len(), parts, prefix.display());
    Ok(())
}

/// Appends every delivery to the embedded log of `dir`, partitioned and recorded as the ingress does.
fn to_log(dir: &std::path::Path, partitions: u32, secret: &WebhookSecret, deliveries: &[Delivery]) -> Result<()> {
    let started = Instant::now();
    let store = paystate_store::Store::open(dir, partitions)
        .with_context(|| format!("opening {} (is a paystate process running on it?)", dir.display()))?;
    let partitions = store.log.partitions();
    let received_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let mut bytes = 0usize;
    let bar = crate::progress::bar("writing the log", Some(deliveries.len() as u64), "events");
    for chunk in deliveries.chunks(8192) {
        let mut records = Vec::with_capacity(chunk.len());
        for d in chunk {
            let event = paystate_stripe::parse_event(&d.body).with_context(|| format!("event {}", d.event_id))?;
            let signature = secret.header(unix_now(), &d.body);
            bytes += d.body.len();
            records.push(paystate_ingress::log_record(&event, d.body.clone(), signature, received_ms, partitions));
        }
        store.log.append_bulk(&records)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    store.log.close()?;
    println!(
        "wrote {} records ({:.1} MB of bodies) to {} in {:.1}s",
        deliveries.len(),
        bytes as f64 / 1e6,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How long `simulate` tries to connect before anything was accepted.
const CONNECT_GIVE_UP: Duration = Duration::from_secs(3);

/// The innermost cause of `e` ("Connection refused (os error 111)" rather than reqwest's "error sending
/// request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
