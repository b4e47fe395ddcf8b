//! Reading a data directory: `export`, `show`, `verify`.

use crate::admin::{checked, AdminToken, Remote};
use crate::export::rfc3339;
use anyhow::{bail, Context, Result};
use paystate_core::{EmittedAction, Transition};
use paystate_projector::Projector;
use paystate_store::{Located, Projection, Store};
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

/// `paystate show`: one payment, its history and the actions emitted for it, for a person (or as the JSON
/// line `export` writes), now or as of a Stripe event time; from a data directory or a running admin API
/// (the same answer: `GET /v1/payments/{id}/history`).
pub fn show(
    source: Source<'_>,
    id: &str,
    account: Option<&str>,
    as_of: Option<i64>,
    as_json: bool,
    token: Option<&AdminToken>,
) -> Result<()> {
    let view = match source {
        Source::DataDir(dir) => {
            let projection = open_projection(dir)?;
            let located = projection.locate(id, account)?;
            let found = match &located {
                Located::Payment(key) => projection.payment_with_history(key)?,
                _ => None,
            };
            let Some(p) = found else {
                let why = located.why_not(id, account, "--account", ' ').unwrap_or_else(|| format!("no payment {id}"));
                bail!("{why}, in {}", dir.display());
            };
            paystate_ingress::payment_history(&p, as_of)
        }
        Source::Admin(url) => {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                bail!("{id:?} is not a Stripe id (letters, digits and `_`, like pi_3Nq…)");
            }
            let remote = Remote::new(url, token)?;
            let as_of = as_of.map(|t| t.to_string());
            let mut query: Vec<(&str, &str)> = Vec::new();
            query.extend(account.map(|a| ("account", a)));
            query.extend(as_of.as_deref().map(|t| ("as_of", t)));
            match remote.get(&format!("/v1/payments/{id}/history"), &query)? {
                Ok(view) => view,
                Err(why) => bail!("{why}, at {url}"),
            }
        }
    };
    if as_json {
        println!("{}", serde_json::to_string(&view["payment"])?);
        return Ok(());
    }
    print!("{}", render(&view)?);
    Ok(())
}

/// A `GET /v1/payments/{id}/history` answer for a person.
fn render(view: &Value) -> Result<String> {
    let s = &view["payment"];
    let history: Vec<Transition> = serde_json::from_value(view["history"].clone()).context("the history")?;
    let actions: Vec<EmittedAction> =
        serde_json::from_value(view["actions_emitted"].clone()).context("the actions emitted")?;
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let currency = s["currency"].as_str().unwrap_or("");
    let money = |v: &Value| paystate_stripe::currency::format_amount(v.as_i64().unwrap_or(0), currency);
    let mut out = String::new();
    if let Some(t) = view["as_of"].as_i64() {
        out += &format!("as of     {} ({t}): {} of {} events\n", rfc3339(t), history.len(), view["events_total"]);
    }
    let key = match s["account"].as_str() {
        Some(a) => format!("{a}/{}", text(&s["id"])),
        None => text(&s["id"]),
    };
    out += &format!("payment   {key}\n");
    out += &format!("lifecycle {}   (Stripe status: {})\n", text(&s["lifecycle"]), text(&s["status"]));
    out += &format!(
        "amount    {}   received {}   refunded {}\n",
        money(&s["amount"]),
        money(&s["amount_received"]),
        money(&s["amount_refunded"])
    );
    if s["amount_refund_pending"].as_i64().unwrap_or(0) > 0 {
        out += &format!("refunds pending {}\n", money(&s["amount_refund_pending"]));
    }
    for (id, r) in s["refunds"].as_object().into_iter().flatten() {
        let whose = if r["customer"] == json!(false) { "   (Stripe's own: no money moved)" } else { "" };
        out += &format!("refund    {id} {} {}{whose}\n", money(&r["amount"]), text(&r["status"]));
    }
    if s["disputed"] == json!(true) {
        out += &format!(
            "disputed  yes ({})   open or lost {}   lost {}\n",
            text(&s["dispute_status"]),
            money(&s["amount_disputed"]),
            money(&s["amount_lost_to_disputes"])
        );
    }
    let w = &s["early_fraud_warning"];
    if w.is_object() {
        let actionable = if w["actionable"] == json!(true) { "actionable" } else { "not actionable" };
        out += &format!("fraud     early warning {} ({}, {actionable})\n", text(&w["id"]), text(&w["fraud_type"]));
    }
    if s["failure_count"].as_u64().unwrap_or(0) > 0 {
        out += &format!("failures  {} (last: {})\n", s["failure_count"], text(&s["last_failure_code"]));
    }
    if let Some(c) = s["customer"].as_str() {
        out += &format!("customer  {c}\n");
    }
    for (k, v) in s["metadata"].as_object().into_iter().flatten() {
        out += &format!("metadata  {k} = {}\n", v.as_str().map_or_else(|| v.to_string(), str::to_owned));
    }
    out += "history (causal order, times in UTC):\n";
    for h in &history {
        out +=
            &format!("  {}  {:<36} {:<24} -> {}\n", rfc3339(h.created), h.event_type, h.event_id, h.lifecycle.as_str());
    }
    out += &format!("actions emitted: {}\n", actions.len());
    for a in &actions {
        let kind = a.kind.map_or("(unknown kind)", |k| k.as_str());
        out += &format!("  {kind:<24} {:<30} {}\n", a.subject.as_deref().unwrap_or("-"), a.id);
    }
    Ok(out)
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
            let bar = crate::progress::bar("verify", Some(truths.len() as u64), "payments");
            for t in &truths {
                got.push(projection.payment(&t.key())?.map(|p| json!(p.state.summary())));
                bar.inc(1);
            }
            bar.finish_and_clear();
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
            let bar = crate::progress::bar("verify", Some(truths.len() as u64), "payments");
            for t in &truths {
                bar.inc(1);
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
            bar.finish_and_clear();
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

/// `paystate digest`: the projection's digest (see `Projection::digest`), of a data directory or of a
/// running admin API (`GET /v1/status?digest=true`).
pub fn digest(source: Source<'_>, token: Option<&AdminToken>) -> Result<()> {
    let (hex, n) = match source {
        Source::DataDir(dir) => open_projection(dir)?.digest()?,
        Source::Admin(url) => {
            let remote = Remote::new(url, token)?;
            let answer = remote.get("/v1/status", &[("digest", "true")])?.map_err(|why| anyhow::anyhow!("{why}"))?;
            let hex = answer["digest"].as_str().context("no digest in the answer")?.to_owned();
            (hex, answer["digest_payments"].as_u64().context("no digest_payments in the answer")?)
        }
    };
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
        let remote = Remote::new(source, token)?;
        for p in remote.payments() {
            let p = p?;
            let id = p["id"].as_str().context("payment without id")?;
            let key = match p["account"].as_str() {
                Some(a) => format!("{a}/{id}"),
                None => id.to_owned(),
            };
            out.insert(key, p);
        }
        return Ok(out);
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
