//! Reading a data directory: `export`, `show`, `verify`.

use crate::admin::{checked, AdminToken};
use crate::export::rfc3339;
use anyhow::{bail, Context, Result};
use paystate_core::{HistoryEntry, PaymentEvent, PaymentState};
use paystate_projector::Projector;
use paystate_store::{Projection, Store};
use paystate_testkit::scenario::{Truth, CHECKED_ACTIONS};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

/// Opens an existing data directory (refusing to create one by mistake).
pub fn open(dir: &Path) -> Result<Store> {
    if !Store::has_embedded_log(dir) {
        bail!("{} is not a paystate data directory", dir.display());
    }
    Store::open_existing(dir).with_context(|| format!("opening {} (is `paystate serve` running on it?)", dir.display()))
}

/// The projection of a data directory: with its embedded log (`serve`), or alone (a projector of the Kafka
/// log keeps only the projection). Warns when the projection is behind an embedded log.
pub fn open_projection(dir: &Path) -> Result<Projection> {
    if Store::has_embedded_log(dir) {
        let store = open(dir)?;
        let behind: u64 = store.partition_status()?.iter().map(|p| p.lag).sum();
        if behind > 0 {
            eprintln!("note: the projection is {behind} events behind the log; run `paystate serve` to catch up");
        }
        return Ok(store.projection);
    }
    if !dir.join("projection").is_dir() {
        bail!("{} is not a paystate data directory", dir.display());
    }
    if dir.join("REPLAY.json").is_file() {
        // A rebuilt projection has no log to rebuild it from again: read it as it is (one of an earlier
        // release's format is refused with a message saying to replay again).
        return Store::open_projection_with_cache(dir, 64 << 20)
            .with_context(|| format!("opening {} (is a paystate process running on it?)", dir.display()));
    }
    Store::open_projection(dir)
        .with_context(|| format!("opening {} (is a paystate process running on it?)", dir.display()))
}

/// `paystate show`: one payment and its history, for a person (or as the JSON line `export` writes), now
/// or as of a Stripe event time.
pub fn show(data_dir: &Path, id: &str, account: Option<&str>, as_of: Option<i64>, as_json: bool) -> Result<()> {
    let projection = open_projection(data_dir)?;
    let key = resolve(&projection, id, account, data_dir)?;
    let Some(p) = projection.payment_with_history(&key)? else { bail!("no payment {key} in {}", data_dir.display()) };
    let (all_events, emitted) = (p.events.events().len(), p.payment.emitted.len());
    let (state, events) = match as_of {
        Some(t) => {
            let events: Vec<PaymentEvent> = p.events.events().iter().take_while(|e| e.created <= t).cloned().collect();
            (PaymentState::fold_all(p.payment.state.key.clone(), &events), events)
        }
        None => (p.payment.state, p.events.into_events()),
    };
    let history = paystate_core::timeline(&state.key, &events);
    if as_json {
        println!("{}", serde_json::to_string(&state.summary())?);
        return Ok(());
    }
    if let Some(t) = as_of {
        println!("as of     {} ({t}): {} of {all_events} events", rfc3339(t), events.len());
    }
    print!("{}", render(&state, &history));
    if as_of.is_none() {
        println!("actions emitted: {emitted}");
    }
    Ok(())
}

/// The key of the payment `id` names: a payment (`pi_…`, or `ch_…` without a PaymentIntent) under
/// `account`, else the payment that a charge, refund, dispute, early fraud warning or event id belongs to
/// (found by reading the projection). A payment that exists only under a Connect account is named with
/// the `--account` to give.
fn resolve(projection: &Projection, id: &str, account: Option<&str>, dir: &Path) -> Result<String> {
    let direct = match account {
        Some(a) => format!("{a}/{id}"),
        None => id.to_owned(),
    };
    if projection.payment(&direct)?.is_some() {
        return Ok(direct);
    }
    let mut elsewhere = Vec::new();
    for p in projection.all_payments() {
        let s = p?.state;
        let key = s.key.to_string();
        let here = account.is_none_or(|a| s.key.account.as_ref().is_some_and(|k| k.as_str() == a));
        if s.key.payment.as_str() == id {
            elsewhere.push(s.key.account.as_ref().map(|a| a.as_str().to_owned()));
            continue;
        }
        let part_of = s.latest_charge.as_deref() == Some(id)
            || s.refunds.contains_key(id)
            || s.disputes.contains_key(id)
            || s.early_fraud_warning.as_ref().is_some_and(|w| w.id == id)
            || (id.starts_with("evt_") && projection.history(&key)?.iter().any(|e| e.id.as_str() == id));
        if part_of && here {
            return Ok(key);
        }
    }
    if elsewhere.contains(&None) {
        bail!("no payment {direct}; {id} is the platform account's own payment: drop --account");
    }
    let accounts: Vec<String> = elsewhere.into_iter().flatten().collect();
    match accounts.as_slice() {
        [] => bail!(
            "no payment {direct} in {} (nor a charge, refund, dispute, fraud warning or event of that id)",
            dir.display()
        ),
        [first, ..] => bail!(
            "no payment {direct}; {id} exists under the Connect account {}: add --account {first}",
            accounts.join(", ")
        ),
    }
}

fn render(s: &PaymentState, history: &[HistoryEntry]) -> String {
    let mut out = String::new();
    let money = |v: i64| paystate_stripe::currency::format_amount(v, s.currency.as_deref().unwrap_or(""));
    out += &format!("payment   {}\n", s.key);
    out += &format!("lifecycle {}   (Stripe status: {})\n", s.lifecycle.as_str(), s.status.map_or("-", |x| x.as_str()));
    out += &format!(
        "amount    {}   received {}   refunded {}\n",
        money(s.amount),
        money(s.amount_received),
        money(s.amount_refunded)
    );
    if s.amount_refund_pending > 0 {
        out += &format!("refunds pending {}\n", money(s.amount_refund_pending));
    }
    for (id, r) in &s.refunds {
        let whose = if r.customer { "" } else { "   (Stripe's own: no money moved)" };
        out += &format!("refund    {id} {} {:?}{whose}\n", money(r.amount), r.status);
    }
    if s.disputed {
        out += &format!(
            "disputed  yes ({})   open or lost {}   lost {}\n",
            s.dispute_status.map(|d| format!("{d:?}")).unwrap_or_default(),
            money(s.amount_disputed),
            money(s.amount_lost_to_disputes)
        );
    }
    if let Some(w) = &s.early_fraud_warning {
        out += &format!(
            "fraud     early warning {} ({}, {})\n",
            w.id,
            w.fraud_type.as_deref().unwrap_or("-"),
            if w.actionable { "actionable" } else { "not actionable" }
        );
    }
    if s.failure_count > 0 {
        out += &format!("failures  {} (last: {})\n", s.failure_count, s.last_failure_code.as_deref().unwrap_or("-"));
    }
    if let Some(c) = &s.customer {
        out += &format!("customer  {c}\n");
    }
    for (k, v) in &s.metadata {
        out += &format!("metadata  {k} = {v}\n");
    }
    out += "history (causal order):\n";
    for h in history {
        out += &format!(
            "  {}  {:<36} {:<24} -> {}\n",
            rfc3339(h.event.created),
            h.event.event_type,
            h.event.id,
            h.lifecycle.as_str()
        );
    }
    out
}

/// Where `verify` reads the projection from.
pub enum Source<'a> {
    /// A data directory (caught up with its log first).
    DataDir(&'a Path),
    /// A running admin API.
    Admin(&'a str),
}

impl<'a> Source<'a> {
    /// From `--data-dir` / `--admin` (clap makes one of them required).
    pub fn of(data_dir: Option<&'a Path>, admin: Option<&'a str>) -> Result<Self> {
        match (data_dir, admin) {
            (Some(d), _) => Ok(Source::DataDir(d)),
            (None, Some(a)) => Ok(Source::Admin(a)),
            (None, None) => bail!("give --data-dir or --admin"),
        }
    }
}

/// Actions of each kind per payment key (`acct_…/pi_…` or `pi_…`), from action JSON lines.
fn count_actions<'a>(actions: impl Iterator<Item = &'a Value>) -> BTreeMap<String, BTreeMap<String, u32>> {
    let mut out: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for a in actions {
        let payment = a["key"]["payment"].as_str().unwrap_or_default();
        let key = match a["key"]["account"].as_str() {
            Some(acct) => format!("{acct}/{payment}"),
            None => payment.to_owned(),
        };
        *out.entry(key).or_default().entry(a["kind"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    out
}

/// `actions`: the payment's actions by kind, or `None` when the source has no actions stream to count them
/// in (a replay output): then they are not checked.
fn compare(truth: &Truth, got: Option<&Value>, actions: Option<Option<&BTreeMap<String, u32>>>) -> Vec<String> {
    let Some(got) = got else { return vec!["missing".into()] };
    let mut diffs = Vec::new();
    let mut check = |field: &str, want: Value| {
        if got[field] != want {
            diffs.push(format!("{field}: expected {want}, got {}", got[field]));
        }
    };
    check("lifecycle", json!(truth.lifecycle));
    check("status", json!(truth.status));
    check("amount", json!(truth.amount));
    check("amount_received", json!(truth.amount_received));
    check("amount_refunded", json!(truth.amount_refunded));
    check("disputed", json!(truth.disputed));
    check("dispute_status", json!(truth.dispute_status));
    check("failure_count", json!(truth.failure_count));
    check("events_applied", json!(truth.events));
    // A truth file of an earlier release names no API version and states none of the later fields.
    if truth.api_version.is_empty() {
        return diffs;
    }
    check("amount_refund_pending", json!(truth.amount_refund_pending));
    check("amount_disputed", json!(truth.amount_disputed));
    check("amount_lost_to_disputes", json!(truth.amount_lost_to_disputes));
    if got["early_fraud_warning"]["id"].as_str() != truth.early_fraud_warning.as_deref() {
        diffs.push(format!(
            "early_fraud_warning: expected {:?}, got {}",
            truth.early_fraud_warning, got["early_fraud_warning"]
        ));
    }
    if let Some(actions) = actions {
        let none = BTreeMap::new();
        let actions = actions.unwrap_or(&none);
        for kind in CHECKED_ACTIONS {
            let (want, have) = (truth.actions.get(kind).copied().unwrap_or(0), actions.get(kind).copied().unwrap_or(0));
            // A decline whose next attempt was delivered late (a retried delivery) is announced once its
            // grace period passed in Stripe time: more notifications than the truth's are allowed, up to
            // one per failed attempt.
            let ok = match kind {
                "notify_payment_failed" => want <= have && have <= truth.failure_count,
                // A refund that reported success and failed later is announced as succeeded only if its
                // success was seen before its failure: after an outage (events fetched back by catch-up)
                // the failure may come first, and a success known to be over is not announced.
                "refund_succeeded" => {
                    let failed = truth.actions.get("refund_failed").copied().unwrap_or(0);
                    want.saturating_sub(failed) <= have && have <= want
                }
                _ => want == have,
            };
            if !ok {
                diffs.push(format!("{kind} actions: expected {want}, got {have}"));
            }
        }
    }
    diffs
}

/// `paystate verify`: compares the projection with a truth file; prints `N passed, N failed`.
pub async fn verify(truth_file: &Path, source: Source<'_>, token: Option<&AdminToken>) -> Result<bool> {
    let f = std::fs::File::open(truth_file).with_context(|| format!("opening {}", truth_file.display()))?;
    let mut truths = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        if !line.trim().is_empty() {
            truths.push(serde_json::from_str::<Truth>(&line).context("truth line")?);
        }
    }
    let mut got: Vec<Option<Value>> = Vec::with_capacity(truths.len());
    let actions: BTreeMap<String, BTreeMap<String, u32>>;
    let mut counts_actions = true;
    match source {
        Source::DataDir(dir) => {
            let projection = if Store::has_embedded_log(dir) {
                let store = open(dir)?;
                // Apply whatever the log holds that the projection has not yet (e.g. after a crash).
                Projector::new(store.log.clone(), store.projection.clone(), 512).catch_up()?;
                store.projection
            } else {
                open_projection(dir)? // a projection without its log (Kafka projector, replay output)
            };
            if dir.join("REPLAY.json").is_file() {
                counts_actions = false;
                println!(
                    "note: {} is a replay output, which has no actions stream: action counts are not checked",
                    dir.display()
                );
            }
            for t in &truths {
                got.push(projection.payment(&t.key())?.map(|p| json!(p.state.summary())));
            }
            let mut lines = Vec::new();
            let mut after = 0;
            loop {
                let page = projection.read_stream(paystate_store::Stream::Actions, after, 10_000)?;
                let Some(&(last, _)) = page.last() else { break };
                for (_, v) in page {
                    lines.push(serde_json::from_slice::<Value>(&v).context("action entry")?);
                }
                after = last;
            }
            actions = count_actions(lines.iter());
        }
        Source::Admin(base) => {
            let client = crate::admin::client(token, reqwest::Client::builder())?;
            let base = base.trim_end_matches('/');
            // Wait until the projector has applied everything the log holds: no lag, and nothing applied for
            // 1.5 s (a Kafka projector learns the log's ends with a delay of up to a second).
            let mut quiet_since: Option<(std::time::Instant, Value)> = None;
            for _ in 0..1200 {
                let status: Value = checked(client.get(format!("{base}/v1/status")).send().await?)?.json().await?;
                let seen = status["totals"].clone();
                if status["lag"] != json!(0) {
                    quiet_since = None;
                } else {
                    match &quiet_since {
                        Some((at, was)) if *was == seen => {
                            if at.elapsed() >= std::time::Duration::from_millis(1500) {
                                break;
                            }
                        }
                        _ => quiet_since = Some((std::time::Instant::now(), seen)),
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            for t in &truths {
                let mut req = client.get(format!("{base}/v1/payments/{}", t.id));
                if let Some(a) = &t.account {
                    req = req.query(&[("account", a)]);
                }
                let resp = req.send().await?;
                got.push(match resp.status() {
                    reqwest::StatusCode::NOT_FOUND => None,
                    _ => Some(checked(resp)?.json().await?),
                });
            }
            let mut lines = Vec::new();
            let mut after = 0u64;
            loop {
                let resp = client
                    .get(format!("{base}/v1/streams/actions"))
                    .query(&[("after", after.to_string()), ("limit", "10000".to_owned())])
                    .send()
                    .await?;
                let text = checked(resp)?.text().await?;
                let mut n = 0;
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let entry: Value = serde_json::from_str(line).context("stream line")?;
                    after = entry["cursor"].as_u64().unwrap_or(after);
                    lines.push(entry["data"].clone());
                    n += 1;
                }
                if n == 0 {
                    break;
                }
            }
            actions = count_actions(lines.iter());
        }
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for (t, g) in truths.iter().zip(&got) {
        let diffs = compare(t, g.as_ref(), counts_actions.then(|| actions.get(&t.key())));
        if diffs.is_empty() {
            passed += 1;
        } else {
            failed += 1;
            if failed <= SHOWN_FAILURES {
                println!("FAIL {} ({:?}): {}", t.id, t.scenario, diffs.join("; "));
            }
        }
    }
    if failed > SHOWN_FAILURES {
        println!("… {} more failures not shown (the first {SHOWN_FAILURES} are)", failed - SHOWN_FAILURES);
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// `verify` prints this many failures, then how many it left out.
const SHOWN_FAILURES: usize = 20;

/// `paystate digest`: the projection's digest (see `Projection::digest`).
pub fn digest(data_dir: &Path) -> Result<()> {
    let projection = open_projection(data_dir)?;
    let (hex, n) = projection.digest()?;
    println!("digest {hex} payments {n}");
    Ok(())
}

/// `paystate diff A B`: the payments that differ between two projections, field by field. Returns whether
/// they are equal.
pub fn diff(a_src: &str, b_src: &str, token: Option<&AdminToken>) -> Result<bool> {
    let (pa, pb) = (summaries(a_src, token)?, summaries(b_src, token)?);
    let keys: std::collections::BTreeSet<&String> = pa.keys().chain(pb.keys()).collect();
    let mut differ = 0usize;
    for key in keys {
        match (pa.get(key), pb.get(key)) {
            (Some(_), None) => {
                differ += 1;
                println!("{key}: only in {a_src}");
            }
            (None, Some(_)) => {
                differ += 1;
                println!("{key}: only in {b_src}");
            }
            (Some(x), Some(y)) if x != y => {
                differ += 1;
                let fields: std::collections::BTreeSet<&String> =
                    x.as_object().into_iter().chain(y.as_object()).flat_map(|o| o.keys()).collect();
                for f in fields {
                    if x.get(f) != y.get(f) {
                        println!(
                            "{key}: {f}: {} vs {}",
                            x.get(f).unwrap_or(&Value::Null),
                            y.get(f).unwrap_or(&Value::Null)
                        );
                    }
                }
            }
            _ => {}
        }
    }
    println!("{differ} payments differ ({} and {} payments)", pa.len(), pb.len());
    Ok(differ == 0)
}

/// Every payment's summary by key, from a data directory or from the admin API of a running process
/// (`http://…`: paged through `GET /v1/payments`).
fn summaries(source: &str, token: Option<&AdminToken>) -> Result<std::collections::BTreeMap<String, Value>> {
    let mut out = std::collections::BTreeMap::new();
    if is_url(source) {
        let base = source.trim_end_matches('/');
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = crate::admin::client(token, reqwest::Client::builder())?;
        let mut after: Option<String> = None;
        loop {
            let mut req = client.get(format!("{base}/v1/payments")).query(&[("limit", "1000")]);
            if let Some(a) = &after {
                req = req.query(&[("after", a)]);
            }
            let page: Value = runtime
                .block_on(async { anyhow::Ok(checked(req.send().await?)?.json::<Value>().await?) })
                .with_context(|| format!("reading {base}/v1/payments"))?;
            for p in page["payments"].as_array().context("no payments in the answer")? {
                let id = p["id"].as_str().context("payment without id")?;
                let key = match p["account"].as_str() {
                    Some(a) => format!("{a}/{id}"),
                    None => id.to_owned(),
                };
                out.insert(key, p.clone());
            }
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return Ok(out),
            }
        }
    }
    for p in open_projection(Path::new(source))?.all_payments() {
        let p = p?;
        out.insert(p.state.key.to_string(), json!(p.state.summary()));
    }
    Ok(out)
}

/// Whether a source on the command line is the admin URL of a running process rather than a directory.
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// `paystate dead-letters list|retry`: the records the projector could not use, from a data directory or a
/// running admin API; `retry` folds them again (after an upgrade) and prints what resolved.
pub async fn dead_letters(retry: bool, source: Source<'_>, token: Option<&AdminToken>) -> Result<()> {
    let value = match source {
        Source::DataDir(dir) => {
            let store = open(dir)?;
            let projector = Projector::new(store.log.clone(), store.projection.clone(), 512);
            if retry {
                serde_json::to_value(projector.retry_dead_letters()?)?
            } else {
                json!({ "dead_letters": store.projection.dead_letters()? })
            }
        }
        Source::Admin(url) => {
            let client = crate::admin::client(token, reqwest::Client::builder())?;
            let base = url.trim_end_matches('/');
            let resp = if retry {
                client.post(format!("{base}/v1/dead-letters/retry")).send().await
            } else {
                client.get(format!("{base}/v1/dead-letters?limit=1000")).send().await
            };
            let resp = checked(resp.with_context(|| format!("reaching {base}"))?)?;
            resp.json().await.with_context(|| format!("{base}: not a JSON answer"))?
        }
    };
    let line = |d: &Value| {
        format!(
            "{}:{}  {}  {}  {}",
            d["partition"],
            d["offset"],
            d["event_id"].as_str().unwrap_or(""),
            d["event_type"].as_str().unwrap_or(""),
            d["reason"].as_str().unwrap_or("")
        )
    };
    let list = |name: &str| value[name].as_array().cloned().unwrap_or_default();
    if retry {
        let (resolved, still) = (list("resolved"), list("still_dead"));
        for d in &resolved {
            println!("resolved    {}", line(d));
        }
        for d in &still {
            println!("still dead  {}", line(d));
        }
        println!("{} resolved, {} still dead", resolved.len(), still.len());
    } else {
        let all = list("dead_letters");
        for d in &all {
            println!("{}", line(d));
        }
        println!("{} dead letters", all.len());
    }
    Ok(())
}
