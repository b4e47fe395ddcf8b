//! `paystate replay`, time travel and exports, as an analyst runs them.
//!
//! - `--until T` at every event time of every golden scenario equals the fold (by `paystate-core`, in
//!   reverse order) of the events created up to T; `show --as-of T` agrees for each payment.
//! - CSV and Parquet exports are read back by DuckDB (the PyPI package, installed by tests/run): row
//!   counts, amount sums and column types.

mod common;

use common::{build_store, golden_bodies, paystate};
use paystate_core::{PaymentEvent, PaymentWithHistory};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// Export lines of a data directory, by payment key (`acct/pi` or `pi`).
fn exported(dir: &Path) -> BTreeMap<String, Value> {
    let (out, err, ok) = paystate(&["export", "--data-dir", s(dir)]);
    assert!(ok, "{err}");
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("jsonl");
            (key_of(&v), v)
        })
        .collect()
}

fn key_of(summary: &Value) -> String {
    let id = summary["id"].as_str().expect("id");
    match summary["account"].as_str() {
        Some(a) => format!("{a}/{id}"),
        None => id.to_owned(),
    }
}

#[test]
fn until_each_event_time_equals_the_fold_of_the_events_created_by_then() {
    let bodies = golden_bodies();
    let events: Vec<PaymentEvent> =
        bodies.iter().filter_map(|b| paystate_projector::classify(b).ok().flatten()).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live");
    build_store(&live, &bodies, 64);

    let mut times: BTreeSet<i64> = events.iter().map(|e| e.created).collect();
    let first = *times.first().expect("events");
    times.insert(first - 1); // before anything: an empty projection
    let mut checked_as_of = 0;
    for t in times {
        // The truth: the core's fold of the events created by t, applied newest first.
        let mut expected: BTreeMap<String, PaymentWithHistory> = BTreeMap::new();
        for e in events.iter().rev().filter(|e| e.created <= t) {
            let p = expected.entry(e.key.to_string()).or_insert_with(|| PaymentWithHistory::new(e.key.clone()));
            p.apply(e.clone()).expect("apply");
        }
        let expected: BTreeMap<String, Value> =
            expected.into_iter().map(|(k, p)| (k, json!(p.state().summary()))).collect();

        let out = dir.path().join(format!("until-{t}"));
        let (text, err, ok) = paystate(&["replay", "--source", s(&live), "--until", &t.to_string(), "--out", s(&out)]);
        assert!(ok, "{err}");
        assert!(text.contains(&format!("payments {}", expected.len())), "{text}");
        let got = exported(&out);
        assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "payments at {t}");
        for (k, want) in &expected {
            assert_eq!(&got[k], want, "{k} as of {t}");
        }

        // show --as-of refolds one payment's history from the live store: the same state, for the payments
        // that changed at t.
        for e in events.iter().filter(|e| e.created == t) {
            let key = e.key.to_string();
            let mut args = vec!["show", e.key.payment.as_str(), "--data-dir", s(&live)];
            let t_arg = t.to_string();
            args.extend(["--as-of", &t_arg, "--json"]);
            if let Some(a) = &e.key.account {
                args.extend(["--account", a.as_str()]);
            }
            let (shown, err, ok) = paystate(&args);
            assert!(ok, "{err}");
            let shown: Value = serde_json::from_str(shown.trim()).expect("show --json");
            assert_eq!(shown, expected[&key], "show {key} --as-of {t}");
            checked_as_of += 1;
        }
    }
    assert!(checked_as_of >= events.len() / 2, "only {checked_as_of} show --as-of checks");

    // RFC 3339 is accepted too, and means the same second.
    let last = events.iter().map(|e| e.created).max().expect("events");
    let rfc = time::OffsetDateTime::from_unix_timestamp(last)
        .expect("time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let (by_rfc, err, ok) =
        paystate(&["replay", "--source", s(&live), "--until", &rfc, "--out", s(&dir.path().join("rfc"))]);
    assert!(ok, "{err}");
    let (all, err, ok) = paystate(&["digest", "--data-dir", s(&live)]);
    assert!(ok, "{err}");
    assert_eq!(by_rfc.lines().last(), all.lines().last(), "--until {rfc} (the last event) is the whole log");
}

/// Reads the exports with DuckDB and returns its answers as JSON.
fn duckdb(files: &BTreeMap<String, std::path::PathBuf>) -> Value {
    let python = std::env::var("PYTHON").expect(
        "PYTHON must name a Python with duckdb installed: run tests/run, which installs it into target/test-venv",
    );
    let script = r#"
import duckdb, json, sys
files = json.loads(sys.argv[1])
out = {}
for name, path in files.items():
    src = f"read_csv('{path}')" if path.endswith('.csv') else f"read_parquet('{path}')"
    if name.startswith('payments'):
        q = f"select count(*), sum(amount_received), sum(amount_refunded), typeof(min(last_event_at)), typeof(any_value(livemode)), sum(events_applied) from {src}"
    else:
        q = f"select count(*), count(distinct payment_id), typeof(min(created)), count(distinct event_id), count(*) filter (where lifecycle_before <> lifecycle_after) from {src}"
    out[name] = [v if isinstance(v, (int, str)) or v is None else int(v) for v in duckdb.sql(q).fetchone()]
print(json.dumps(out))
"#;
    let arg = serde_json::to_string(&files.iter().map(|(k, v)| (k.as_str(), s(v))).collect::<BTreeMap<_, _>>())
        .expect("json");
    let out = std::process::Command::new(&python).args(["-c", script, &arg]).output().expect("run python");
    assert!(out.status.success(), "duckdb: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("duckdb json")
}

#[test]
fn csv_and_parquet_exports_are_read_back_by_duckdb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, data) = (dir.path().join("log"), dir.path().join("replayed"));
    let (out, err, ok) = paystate(&[
        "simulate",
        "--secret",
        "whsec_export_test",
        "--payments",
        "400",
        "--seed",
        "5",
        "--to-log",
        s(&log),
    ]);
    assert!(ok, "{out}{err}");
    let (out, err, ok) = paystate(&["replay", "--source", s(&log), "--out", s(&data)]);
    assert!(ok, "{out}{err}");
    // The completion record, written last, has the printed digest and the counts.
    let record: Value =
        serde_json::from_slice(&std::fs::read(data.join("REPLAY.json")).expect("REPLAY.json")).expect("json");
    assert_eq!(
        out.lines().last(),
        Some(format!("digest {} payments 400", record["digest"].as_str().expect("digest")).as_str())
    );
    assert_eq!(record["summary"]["payments"], json!(400));
    assert_eq!(record["source"], json!(s(&log)));

    // The truth, from the JSON lines export.
    let rows = exported(&data);
    assert_eq!(rows.len(), 400);
    let sum = |f: &str| rows.values().map(|r| r[f].as_i64().expect("int")).sum::<i64>();
    let (received, refunded, events) = (sum("amount_received"), sum("amount_refunded"), sum("events_applied"));
    assert!(received > 0 && refunded > 0, "the simulated payments have money and refunds");

    let mut files = BTreeMap::new();
    for (what, format) in
        [("payments", "csv"), ("payments", "parquet"), ("transitions", "csv"), ("transitions", "parquet")]
    {
        let path = dir.path().join(format!("{what}.{format}"));
        let (out, err, ok) =
            paystate(&["export", "--data-dir", s(&data), "--what", what, "--format", format, "--out", s(&path)]);
        assert!(ok, "{out}{err}");
        files.insert(format!("{what}.{format}"), path);
    }
    let got = duckdb(&files);
    for format in ["csv", "parquet"] {
        let p = &got[format!("payments.{format}").as_str()];
        assert_eq!(p[0], json!(400), "{format} rows");
        assert_eq!(p[1], json!(received), "{format} sum(amount_received)");
        assert_eq!(p[2], json!(refunded), "{format} sum(amount_refunded)");
        assert_eq!(p[3], json!("TIMESTAMP WITH TIME ZONE"), "{format}: timestamps need no conversion");
        assert_eq!(p[4], json!("BOOLEAN"), "{format} livemode");
        assert_eq!(p[5], json!(events), "{format} sum(events_applied)");
        let t = &got[format!("transitions.{format}").as_str()];
        assert_eq!(t[0], json!(events), "{format}: one transition row per applied event");
        assert_eq!(t[1], json!(400), "{format}: every payment has transitions");
        assert_eq!(t[2], json!("TIMESTAMP WITH TIME ZONE"), "{format} created");
        assert_eq!(t[3], json!(events), "{format}: event ids are distinct");
        assert!(t[4].as_i64().expect("count") >= 400, "{format}: every payment changed lifecycle at least once");
    }
}
