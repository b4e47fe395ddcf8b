//! `paystate`: the command-line tool.
//!
//! Today it offers the foundation's two pure pieces as commands:
//! - `paystate fold FILE…` folds Stripe events into payment states and prints the actions and states;
//! - `paystate sign --secret whsec_… FILE` prints the `Stripe-Signature` header Stripe would send.
//!
//! Argument parsing, clocks and files live here; all logic is in `paystate-core` and `paystate-stripe`.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use paystate_core::{Payment, PaymentKey, PaymentState};
use paystate_stripe::{map_event, parse_event, Mapped, WebhookSecret};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "paystate", version, about = "Event-sourced payment state projector for Stripe")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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

fn main() -> Result<()> {
    match Cli::parse().command {
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
        let mut rng = paystate_stripe::synth::Rng::new(seed);
        for i in (1..bodies.len()).rev() {
            let j = usize::try_from(rng.below(i as u64 + 1))?;
            bodies.swap(i, j);
        }
    }
    let mut payments: BTreeMap<PaymentKey, Payment> = BTreeMap::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut ignored = 0usize;
    for body in &bodies {
        let parsed = parse_event(body).context("event body")?;
        let event = match map_event(&parsed) {
            Ok(Mapped::Payment(e)) => e,
            Ok(Mapped::NotRelevant(why)) => {
                ignored += 1;
                eprintln!("kept, not folded: {} {} ({why})", parsed.id(), parsed.event_type());
                continue;
            }
            Err(e) => {
                ignored += 1;
                eprintln!("dead letter: {e}");
                continue;
            }
        };
        let payment = payments.entry(event.key.clone()).or_insert_with(|| Payment::new(event.key.clone()));
        for action in payment.apply(event)?.actions {
            writeln!(out, "{}", json!({ "action": action }))?;
        }
    }
    for p in payments.values() {
        writeln!(out, "{}", json!({ "payment": view(&p.state, history) }))?;
    }
    eprintln!("{} events, {} payments, {} not folded", bodies.len(), payments.len(), ignored);
    Ok(())
}

/// A payment as people and downstream tools read it (no fold internals).
fn view(s: &PaymentState, history: bool) -> Value {
    let mut v = json!({
        "id": s.key.payment, "account": s.key.account, "livemode": s.livemode,
        "status": s.status, "lifecycle": s.lifecycle, "amount": s.amount, "currency": s.currency,
        "amount_received": s.amount_received, "amount_refunded": s.amount_refunded,
        "refunds": s.refunds, "disputed": s.disputed, "dispute_status": s.dispute_status,
        "latest_charge": s.latest_charge, "latest_charge_status": s.latest_charge_status,
        "failure_count": s.failure_count, "last_failure_code": s.last_failure_code,
        "customer": s.customer, "metadata": s.metadata,
        "events_applied": s.history.len(), "last_event_id": s.history.last().map(|h| &h.event.id),
        "first_event_at": s.first_event_at, "last_event_at": s.last_event_at,
    });
    if history {
        v["history"] = s
            .history
            .iter()
            .map(|h| json!({"event": h.event.id, "type": h.event.event_type, "created": h.event.created, "lifecycle": h.lifecycle}))
            .collect();
    }
    v
}
