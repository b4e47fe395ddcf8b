//! `paystate`: the command-line tool.
//!
//! - `serve`: ingress, embedded durable log, projector and admin API in one process;
//! - `simulate` / `verify`: realistic signed traffic with its expected outcome, and the check;
//! - `export` / `show`: read a data directory;
//! - `fold` / `sign`: the pure pieces on files.
//!
//! Argument parsing, clocks, files, signals and logging set-up live here; the logic is in the library crates.

mod admin;
mod catchup;
mod config;
mod export;
mod inspect;
mod progress;
mod replay;
mod serve;
mod simulate;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use paystate_core::{PaymentKey, PaymentWithHistory};
use paystate_stripe::{parse_event, WebhookSecret};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// mimalloc: the fold, replay and the HTTP path allocate and free many small objects per event (strings
/// of parsed events, history entries); glibc's malloc showed up as a quarter of replay's profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "paystate", version, about = "Event-sourced payment state projector for Stripe")]
struct Cli {
    /// Log line format on stderr (`RUST_LOG` sets the level; default info).
    #[arg(long, global = true, default_value = "pretty", value_parser = ["pretty", "json"])]
    log_format: String,
    /// A file holding the admin API's bearer token (else `PAYSTATE_ADMIN_TOKEN`). `serve` and `project`
    /// then answer 401 on every `/v1/*` route without `Authorization: Bearer <token>`, and refuse to start
    /// with a non-loopback `--admin-listen` and no token; `verify`, `diff` and `replay` send it to an
    /// admin URL.
    #[arg(long, global = true)]
    admin_token_file: Option<PathBuf>,
    /// A TOML file of settings for `serve`, `ingress`, `project` and `catch-up`: keys are the flags' names with `_`
    /// (`admin_listen = "127.0.0.1:9090"`), top-level for every command that has the flag, `[serve]`,
    /// `[ingress]`, `[project]`, `[catch-up]` tables for one; flags and environment variables override it. `paystate
    /// config check <command> --config FILE` prints the result.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the webhook ingress, the embedded log, the projector and the admin API in one process.
    Serve(Box<serve::ServeArgs>),
    /// Receive webhooks into the Kafka raw topic (no projector): the ingress of a scaled-out deployment.
    Ingress(serve::IngressArgs),
    /// Fold this member's share of the Kafka raw topic into a sled projection and publish the projection
    /// topics (one of a consumer group).
    Project(serve::ProjectArgs),
    /// Fetch the events that never reached the webhook (an outage longer than Stripe's retries, a disabled
    /// endpoint) from Stripe's Events API into the log: every listed event whose id the log does not hold
    /// is appended (marked as fetched), the rest counted as already there.
    #[command(name = "catch-up")]
    CatchUp(catchup::CatchUpArgs),
    /// Send realistic signed Stripe events for N payments to a webhook endpoint, as Stripe delivers them.
    Simulate(simulate::SimulateArgs),
    /// Compare a projection with the truth file written by `simulate`; ends with `N passed, N failed`.
    Verify {
        /// Truth file from `simulate --truth`.
        #[arg(long)]
        truth: PathBuf,
        /// Read a data directory (caught up with its log first).
        #[arg(long, conflicts_with = "admin", required_unless_present = "admin")]
        data_dir: Option<PathBuf>,
        /// Read a running admin API, e.g. http://127.0.0.1:9090.
        #[arg(long)]
        admin: Option<String>,
    },
    /// Write the projection's payments, or their transitions, as JSON lines, CSV or Parquet.
    Export {
        /// Data directory.
        #[arg(long, conflicts_with = "admin", required_unless_present = "admin")]
        data_dir: Option<PathBuf>,
        /// Read a running process's admin API instead (e.g. http://127.0.0.1:9090), while it holds the
        /// data directory.
        #[arg(long)]
        admin: Option<String>,
        /// Output file (default: stdout; Parquet needs a file). An existing file is kept unless --force.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Overwrite an existing --out file.
        #[arg(long)]
        force: bool,
        /// File format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: export::Format,
        /// `payments`: one row per payment; `transitions`: one row per applied event.
        #[arg(long, value_enum, default_value = "payments")]
        what: export::What,
    },
    /// Rebuild a projection from the log (a data directory, a running serve's admin API, or Kafka) into a
    /// new data directory, optionally as of a Stripe event time; prints a summary and the digest.
    Replay(replay::ReplayArgs),
    /// Print the projection's digest: a hash over every payment's canonical state in key order.
    Digest {
        /// Data directory.
        #[arg(long, conflicts_with = "admin", required_unless_present = "admin")]
        data_dir: Option<PathBuf>,
        /// Read a running process's admin API instead (e.g. http://127.0.0.1:9090), while it holds the
        /// data directory.
        #[arg(long)]
        admin: Option<String>,
    },
    /// Compare two projections and list the payments that differ, field by field (exit 1 if any). Each is
    /// a data directory or the admin URL of a running process (http://…), to check a live projection
    /// against a rebuild.
    Diff {
        /// First projection.
        a: String,
        /// Second projection.
        b: String,
    },
    /// Print one payment and its history.
    Show {
        /// PaymentIntent id (or charge id for charges without PaymentIntent), or the id of a charge, refund,
        /// dispute, early fraud warning or event of the payment.
        id: String,
        /// Connect account.
        #[arg(long)]
        account: Option<String>,
        /// Data directory.
        #[arg(long, conflicts_with = "admin", required_unless_present = "admin")]
        data_dir: Option<PathBuf>,
        /// Read a running process's admin API instead (e.g. http://127.0.0.1:9090), while it holds the
        /// data directory.
        #[arg(long)]
        admin: Option<String>,
        /// The payment as it was at this Stripe event time (RFC 3339 or unix seconds), refolded from its
        /// history.
        #[arg(long, value_parser = replay::parse_time)]
        as_of: Option<i64>,
        /// Print the JSON line `export` writes instead.
        #[arg(long)]
        json: bool,
    },
    /// Fold Stripe events into payment states; print each action as it becomes due, then every payment.
    ///
    /// A FILE holds one event, a JSON array of events, `{"events": […]}` (as in tests/golden), or one
    /// event per line. Events are applied in file order unless --shuffle is given.
    Fold {
        /// Files of Stripe events.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Deliver the events in a random order (seeded), as Stripe may: the states printed must not change.
        #[arg(long)]
        shuffle: Option<u64>,
        /// Print each payment's history too.
        #[arg(long)]
        history: bool,
    },
    /// List the records the projector could not use (partition:offset, event, type, reason), or `retry`
    /// them: each is folded again (after an upgrade that understands it) and removed if it folds now.
    #[command(name = "dead-letters")]
    DeadLetters {
        /// `list` or `retry`.
        #[arg(value_parser = ["list", "retry"])]
        action: String,
        /// A data directory no process has open.
        #[arg(long, conflicts_with = "admin", required_unless_present = "admin")]
        data_dir: Option<PathBuf>,
        /// A running serve's admin API, e.g. http://127.0.0.1:9090.
        #[arg(long)]
        admin: Option<String>,
    },
    /// Check a config file (`--config FILE`): print the effective settings of a command, where each comes
    /// from (flag, environment, config file, default), secrets redacted; refuse unknown keys by name.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print the Stripe-Signature header for a body, as Stripe would sign it.
    Sign {
        /// The endpoint's signing secret.
        #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// Signature time in unix seconds (default: now).
        #[arg(long)]
        timestamp: Option<i64>,
        /// The body to sign, byte for byte.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// `paystate config check serve --config paystate.toml [more flags]`.
    Check {
        /// The command whose settings to print: serve, ingress, project or catch-up.
        #[arg(value_parser = config::COMMANDS)]
        command: String,
        /// Its flags, as they would be given to it.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// `paystate config check`: parses `command args` as that command would (with `config`, the global
/// `--config`, applied) and prints its settings.
fn config_check(command: &str, args: &[std::ffi::OsString], config: Option<&std::path::Path>) -> Result<()> {
    let cli = Cli::command();
    let mut argv: Vec<std::ffi::OsString> = vec!["paystate".into(), command.into()];
    argv.extend(args.iter().cloned());
    // The global --config given before `config check`, unless the checked command's flags give one.
    if let Some(c) = config.filter(|_| config::config_path(&argv).is_none()) {
        argv.extend(["--config".into(), c.as_os_str().to_owned()]);
    }
    let (argv, from_file) = config::apply(&cli, argv)?;
    let matches = cli.clone().try_get_matches_from(argv).map_err(|e| anyhow::anyhow!("{e}"))?;
    print!("{}", config::render(&cli, &matches, &from_file)?);
    Ok(())
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: in a file, a pipe or journald they are escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> Result<()> {
    match run() {
        // The reader of stdout went away (`paystate export | head`): that ends the output, quietly.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// Whether `e` comes from writing to a closed pipe (an I/O error, or one inside serde_json's or csv's).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == BrokenPipe)
            || c.downcast_ref::<serde_json::Error>().is_some_and(|j| j.io_error_kind() == Some(BrokenPipe))
            || c.downcast_ref::<csv::Error>()
                .is_some_and(|c| matches!(c.kind(), csv::ErrorKind::Io(io) if io.kind() == BrokenPipe))
    })
}

fn run() -> Result<()> {
    let (argv, _) = config::apply(&Cli::command(), std::env::args_os().collect())?;
    let matches = Cli::command().get_matches_from(argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging(&cli.log_format);
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let token = admin::AdminToken::load(cli.admin_token_file.as_deref())?;
    let token = token.as_ref();
    match cli.command {
        Command::Serve(args) => runtime()?.block_on(serve::run(*args, token)),
        Command::Ingress(args) => runtime()?.block_on(serve::run_ingress(args)),
        Command::Project(args) => runtime()?.block_on(serve::run_project(args, token)),
        Command::Simulate(args) => runtime()?.block_on(simulate::run(args)),
        Command::CatchUp(args) => runtime()?.block_on(catchup::run(args)),
        Command::Verify { truth, data_dir, admin } => {
            let source = inspect::Source::of(data_dir.as_deref(), admin.as_deref())?;
            if runtime()?.block_on(inspect::verify(&truth, source, token))? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::DeadLetters { action, data_dir, admin } => {
            let source = inspect::Source::of(data_dir.as_deref(), admin.as_deref())?;
            runtime()?.block_on(inspect::dead_letters(action == "retry", source, token))
        }
        Command::Export { data_dir, admin, out, force, format, what } => {
            if let Some(path) = out.as_deref().filter(|p| p.exists() && !force) {
                bail!("{} exists: give --force to overwrite it", path.display());
            }
            let rows = match inspect::Source::of(data_dir.as_deref(), admin.as_deref())? {
                inspect::Source::DataDir(dir) => {
                    let projection = inspect::open_projection(dir)?;
                    export::export(export::local_items(&projection, what), what, format, out.as_deref())?
                }
                inspect::Source::Admin(url) => {
                    let remote = admin::Remote::new(url, token)?;
                    export::export(export::remote_items(&remote, what), what, format, out.as_deref())?
                }
            };
            eprintln!("exported {rows} rows");
            Ok(())
        }
        Command::Digest { data_dir, admin } => {
            inspect::digest(inspect::Source::of(data_dir.as_deref(), admin.as_deref())?, token)
        }
        Command::Diff { a, b } => {
            if inspect::diff(&a, &b, token)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Show { id, account, data_dir, admin, as_of, json } => {
            let source = inspect::Source::of(data_dir.as_deref(), admin.as_deref())?;
            inspect::show(source, &id, account.as_deref(), as_of, json, token)
        }
        Command::Replay(args) => replay::run(&args, token),
        Command::Config { action: ConfigAction::Check { command, args } } => {
            config_check(&command, &args, cli.config.as_deref())
        }
        Command::Fold { files, shuffle, history } => fold(&files, shuffle, history),
        Command::Sign { secret, timestamp, file } => {
            let body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let secret = WebhookSecret::new(&secret)?;
            let t = match timestamp {
                Some(t) => t,
                None => i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs())?,
            };
            println!("{}", secret.header(t, &body));
            Ok(())
        }
    }
}

/// Reads the events of one file, each as its own JSON body.
fn read_events(path: &PathBuf) -> Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let events = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Array(items)) => items,
        Ok(Value::Object(mut doc)) if doc.contains_key("events") => match doc.remove("events") {
            Some(Value::Array(items)) => items,
            _ => bail!("{}: \"events\" is not an array", path.display()),
        },
        Ok(v @ Value::Object(_)) => vec![v],
        Ok(_) => bail!("{}: not a Stripe event, an array of events or {{\"events\": […]}}", path.display()),
        Err(_) => {
            let mut items = Vec::new();
            for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                items.push(
                    serde_json::from_slice(line)
                        .with_context(|| format!("{} line {}: not JSON", path.display(), n + 1))?,
                );
            }
            items
        }
    };
    events.iter().map(|e| Ok(serde_json::to_vec(e)?)).collect()
}

fn fold(files: &[PathBuf], shuffle: Option<u64>, history: bool) -> Result<()> {
    let mut bodies = Vec::new();
    for f in files {
        bodies.extend(read_events(f)?);
    }
    if let Some(seed) = shuffle {
        let mut rng = paystate_testkit::synth::Rng::new(seed);
        for i in (1..bodies.len()).rev() {
            let j = usize::try_from(rng.below(i as u64 + 1))?;
            bodies.swap(i, j);
        }
    }
    let mut payments: BTreeMap<PaymentKey, PaymentWithHistory> = BTreeMap::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut ignored = 0usize;
    let mut latest = i64::MIN;
    for body in &bodies {
        // The same fold as the projectors and replay.
        let folded = paystate_projector::fold_record(body, None, |key| {
            let p = payments.entry(key.clone()).or_insert_with(|| PaymentWithHistory::new(key.clone()));
            Ok::<_, std::convert::Infallible>((&mut p.payment, &mut p.events))
        });
        match folded {
            Ok(paystate_projector::Folded::Applied { actions, created, .. }) => {
                latest = latest.max(created);
                for action in actions {
                    writeln!(out, "{}", json!({ "action": action }))?;
                }
            }
            Ok(paystate_projector::Folded::NotRelevant) => {
                ignored += 1;
                let id = parse_event(body).map(|p| format!("{} {}", p.id(), p.event_type())).unwrap_or_default();
                eprintln!("kept, not folded: {id}");
            }
            Ok(paystate_projector::Folded::Dead(reason)) => {
                ignored += 1;
                eprintln!("dead letter: {reason}");
            }
            Ok(paystate_projector::Folded::Duplicate { .. } | paystate_projector::Folded::AfterUntil) => {}
            Err(never) => match never {},
        }
    }
    // The files' Stripe time reached `latest`: failures whose grace period ended by then are announced.
    let grace = paystate_core::DEFAULT_FAILURE_GRACE_SECS;
    for p in payments.values_mut() {
        for action in p.payment.advance(latest, grace) {
            writeln!(out, "{}", json!({ "action": action }))?;
        }
    }
    for p in payments.values() {
        writeln!(out, "{}", json!({ "payment": view(p, history) }))?;
    }
    eprintln!("{} events, {} payments, {} not folded", bodies.len(), payments.len(), ignored);
    Ok(())
}

/// A payment as people and downstream tools read it (no fold internals).
fn view(p: &PaymentWithHistory, history: bool) -> Value {
    let mut v = json!(p.state().summary());
    if history {
        v["history"] = p
            .timeline()
            .iter()
            .map(|h| json!({"event": h.event.id, "type": h.event.event_type, "created": h.event.created, "lifecycle": h.lifecycle}))
            .collect();
    }
    v
}
