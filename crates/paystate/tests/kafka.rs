//! The Kafka deployment end to end on Apache Kafka (KRaft mode, started on loopback by
//! `tests/kafka/cluster`): `paystate ingress`, two `paystate project` members of one group, `paystate simulate`.
//! Midway one projector is SIGKILLed and a fresh one with an empty data directory joins. At the end the
//! projection topics are read by an independent client (Python confluent-kafka): every payment's latest
//! state equals its truth, no action id appears twice, one fulfill_order per paid payment, and every
//! acknowledged event is in the raw topic. The member that takes over A's partitions must have restored
//! them from the compacted payments topic rather than replaying the raw log from the start.
//!
//! Needs Java and Apache Kafka (`tests/kafka/cluster install`) and PYTHON with confluent-kafka: `tests/run`
//! installs both. Without them these tests fail; they never skip.

mod common;

use common::{http_get, Kafka};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_kafka_e2e_secret";
const BIN: &str = env!("CARGO_BIN_EXE_paystate");

/// A child process killed when dropped (a failing test leaves no broker behind).
struct Proc {
    child: Child,
    line: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn webhook_url(&self) -> String {
        self.line.split("webhooks on ").nth(1).and_then(|s| s.split(',').next()).expect("webhook url").to_owned()
    }
    fn admin(&self) -> String {
        self.line.split("admin on ").nth(1).map(|s| s.trim().to_owned()).expect("admin address")
    }
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "did not stop within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The arguments of a process that takes webhooks into Kafka (`ingress`, `serve --log kafka`), on
/// loopback ports the system picks.
fn webhook_args<'a>(brokers: &'a str, partitions: &'a str) -> [&'a str; 10] {
    [
        "--kafka-brokers",
        brokers,
        "--kafka-partitions",
        partitions,
        "--webhook-secret",
        SECRET,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]
}

/// Prints the last lines of every `*.log` in a test's directory when the test fails (the directory itself
/// is removed with the test).
struct LogsOnFailure<'a>(&'a Path);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(self.0) else { return };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(30)..];
                eprintln!("--- last lines of {}:\n{}", path.display(), tail.join("\n"));
            }
        }
    }
}

/// Starts a paystate subcommand and reads its address line.
fn start(args: &[&str], stderr: Option<&Path>) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_LOG", "info").stdout(Stdio::piped());
    match stderr {
        Some(f) => cmd.stderr(std::fs::File::create(f).expect("stderr file")),
        None => cmd.stderr(Stdio::null()),
    };
    let mut child = cmd.spawn().expect("spawn paystate");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("address line");
    if !line.contains("admin on") {
        let log = stderr.and_then(|f| std::fs::read_to_string(f).ok()).unwrap_or_default();
        // The error itself, before any backtrace that follows it, and the log's last lines.
        let error: Vec<&str> = log
            .lines()
            .skip_while(|l| !(l.starts_with("Error") || l.starts_with("paystate:")))
            .take_while(|l| !l.starts_with("Stack backtrace"))
            .collect();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!("{args:?} printed {line:?}; its error: {error:?}; its log ends:\n{}", tail.join("\n"));
    }
    Proc { child, line }
}

fn projector(brokers: &str, data: &Path, log: &Path) -> Proc {
    start(
        &[
            "--log-format",
            "json",
            "project",
            "--kafka-brokers",
            brokers,
            "--data-dir",
            data.to_str().expect("utf8"),
            "--group",
            "e2e",
            "--admin-listen",
            "127.0.0.1:0",
            "--session-timeout-ms",
            "6000",
        ],
        Some(log),
    )
}

fn status(admin: &str) -> Value {
    let (code, body) = http_get(&format!("{admin}/v1/status"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status json")
}

fn applied_total(admin: &str) -> u64 {
    status(admin)["totals"]["applied"].as_u64().unwrap_or(0)
}

fn check(brokers: &str, dir: &Path, acked: bool) -> (bool, Value) {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/kafka_check.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script).args(["--brokers", brokers, "--truth"]).arg(dir.join("truth.jsonl"));
    if acked {
        cmd.arg("--acked").arg(dir.join("acked.txt"));
    }
    let out = cmd.output().expect("run the confluent-kafka checker");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "checker printed no JSON (is confluent-kafka installed in {python}? tests/run installs it):\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

/// Waits (up to `secs`) until the checker finds the projection topics equal to the truth (and, with
/// `acked`, every acknowledged event in the raw topic); returns its report.
fn wait_for_truth(brokers: &str, dir: &Path, acked: bool, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (ok, v) = check(brokers, dir, acked);
        if ok {
            return v;
        }
        assert!(Instant::now() < deadline, "the projection topics never matched the truth: {v}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `paystate simulate` of `payments` payments into `url` (8 connections), writing `truth.jsonl` and
/// `acked.txt` into `dir`.
fn simulate(url: &str, payments: u32, seed: u32, dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["simulate", "--url", url, "--secret", SECRET, "--payments", &payments.to_string()])
        .args(["--seed", &seed.to_string(), "--concurrency", "8", "--timeout-ms", "10000"])
        .arg("--truth")
        .arg(dir.join("truth.jsonl"))
        .arg("--acked")
        .arg(dir.join("acked.txt"))
        .env("RUST_LOG", "warn");
    cmd
}

/// An Apache Kafka node, an ingress into it, ready (it has created the topics, 4 partitions each), and the
/// directory of the test's files.
fn kafka_and_ingress(name: &str) -> (tempfile::TempDir, Kafka, Proc) {
    kafka_and_ingress_with(name, 1, &[])
}

/// [`kafka_and_ingress`] on a cluster of `nodes`, the ingress given `extra` arguments too.
fn kafka_and_ingress_with(name: &str, nodes: u32, extra: &[&str]) -> (tempfile::TempDir, Kafka, Proc) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka = Kafka::start(name, nodes);
    let args = [&["ingress"][..], &webhook_args(&kafka.brokers, "4"), extra].concat();
    let ingress = start(&args, Some(&dir.path().join("ingress.log")));
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(&format!("{}/readyz", ingress.admin())).0 != 200 {
        assert!(Instant::now() < deadline, "the ingress never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    (dir, kafka, ingress)
}

#[test]
fn scale_out_on_apache_kafka_with_a_sigkilled_projector_and_a_fresh_one() {
    let (dir, kafka, ingress) = kafka_and_ingress("scale-out");
    let brokers = kafka.brokers.clone();
    let url = ingress.webhook_url();
    let a = projector(&brokers, &dir.path().join("a"), &dir.path().join("a.log"));
    let b = projector(&brokers, &dir.path().join("b"), &dir.path().join("b.log"));

    let started = Instant::now();
    let payments = 600;
    let sim = simulate(&url, payments, 31, dir.path()).stdout(Stdio::piped()).spawn().expect("simulate");

    // Midway: once projector A has published part of its projection, SIGKILL it and start a fresh member.
    let deadline = Instant::now() + Duration::from_secs(120);
    while status(&a.admin())["outbox"]["payments"]["published"].as_u64().unwrap_or(0) < 100 {
        assert!(Instant::now() < deadline, "projector A published nothing: {}", status(&a.admin()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let a_applied = applied_total(&a.admin());
    drop(a); // SIGKILL
    let c = projector(&brokers, &dir.path().join("c"), &dir.path().join("c.log"));

    let sim = sim.wait_with_output().expect("simulate");
    assert!(sim.status.success(), "simulate: {}", String::from_utf8_lossy(&sim.stdout));
    eprintln!("simulate: {}", String::from_utf8_lossy(&sim.stdout));

    eprintln!("simulate done after {:?}", started.elapsed());
    // Wait until the projection topics show every payment in its final state.
    wait_for_truth(&brokers, dir.path(), false, 180);
    eprintln!("projection topics match the truth after {:?}", started.elapsed());
    // The group's view, as both members report it: two members, every partition owned, none behind.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (b_status, c_status) = loop {
        let (b_status, c_status) = (status(&b.admin()), status(&c.admin()));
        if b_status["caught_up"] == true && c_status["caught_up"] == true {
            break (b_status, c_status);
        }
        assert!(Instant::now() < deadline, "the members never reported the group caught up: {b_status} {c_status}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for s in [&b_status, &c_status] {
        let g = &s["group"];
        assert_eq!(g["state"], "Stable", "{g}");
        assert_eq!(g["members"].as_array().map(Vec::len), Some(2), "{g}");
        assert_eq!(g["unowned"], serde_json::json!([]), "{g}");
        assert_eq!(g["pending"], serde_json::json!([]), "every assigned partition taken: {g}");
        let parts = g["partitions"].as_array().expect("partitions");
        assert_eq!(parts.len(), 4, "{g}");
        assert!(parts.iter().all(|p| p["lag"] == 0 && p["owner"].is_string()), "{g}");
        let owned: usize = g["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["partitions"].as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(owned, 4, "each partition has exactly one owner: {g}");
    }
    let (mut b_owned, mut c_owned) = (b_status["group"]["owned"].clone(), c_status["group"]["owned"].clone());
    assert!(
        b_owned.as_array().is_some_and(|o| !o.is_empty()) && c_owned.as_array().is_some_and(|o| !o.is_empty()),
        "both members own partitions: {b_owned} {c_owned}"
    );
    b_owned.as_array_mut().expect("owned").append(c_owned.as_array_mut().expect("owned"));
    let mut all: Vec<u64> = b_owned.as_array().expect("owned").iter().filter_map(Value::as_u64).collect();
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2, 3], "the members' own views add up to the topic");
    let metrics = http_get(&format!("{}/metrics", b.admin())).1;
    assert!(metrics.contains("paystate_group_unowned_partitions 0"), "{metrics}");
    assert!(metrics.contains("paystate_group_caught_up 1"), "{metrics}");

    // Either member answers for any payment, the same answer: the one that does not own its partition
    // asks the owner, whose admin URL (the loopback address it listens on) rides in the group's description.
    let truth = std::fs::read_to_string(dir.path().join("truth.jsonl")).expect("truth");
    let mut forwarded = [0usize; 2];
    for line in truth.lines() {
        let t: Value = serde_json::from_str(line).expect("a truth line");
        let id = t["id"].as_str().expect("id");
        let path = match t["account"].as_str() {
            Some(acct) => format!("/v1/payments/{id}?account={acct}"),
            None => format!("/v1/payments/{id}"),
        };
        let mut answers = Vec::new();
        for (i, (member, s)) in [(&b, &b_status), (&c, &c_status)].into_iter().enumerate() {
            let (code, by, body) =
                common::http_get_header(&format!("{}{path}", member.admin()), "paystate-answered-by");
            assert_eq!(code, 200, "{path} on member {i}: {body}");
            let me = s["group"]["me"].as_str().expect("the member's client id");
            if by.as_deref() != Some(me) {
                forwarded[i] += 1;
            }
            answers.push(serde_json::from_str::<Value>(&body).expect("payment json"));
        }
        assert_eq!(answers[0], answers[1], "{path}");
        assert_eq!(answers[0]["lifecycle"], t["lifecycle"], "{path}");
    }
    assert!(forwarded[0] > 0 && forwarded[1] > 0, "each member forwarded the queries it does not own: {forwarded:?}");
    eprintln!("queries forwarded by B and C: {forwarded:?} of {} each", truth.lines().count());
    assert!(b.terminate().success(), "projector B exits 0 on SIGTERM");
    assert!(c.terminate().success(), "projector C exits 0 on SIGTERM");
    assert!(ingress.terminate().success(), "ingress exits 0 on SIGTERM");

    // The final, independent check, including every acknowledged event in the raw topic.
    let (ok, v) = check(&brokers, dir.path(), true);
    assert!(ok, "{v}");
    assert_eq!(v["payments_checked"], payments);
    assert!(v["acked"].as_u64().unwrap_or(0) >= payments as u64, "{v}");
    assert!(v["actions"].as_u64().unwrap_or(0) >= 300, "{v}");

    // A member that gained a partition it had no state for restored it from the payments topic and
    // resumed the raw topic past offset 0: it did not replay the raw log from the start. (Which member
    // gains A's partitions, B or the fresh C, is the group's choice.)
    let mut restores: Vec<Value> = Vec::new();
    for name in ["b.log", "c.log"] {
        let text = std::fs::read_to_string(dir.path().join(name)).expect("projector log");
        restores.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["fields"]["message"] == "partition restored from the payments topic")
                .map(|v| v["fields"].clone()),
        );
    }
    assert!(
        restores.iter().any(|r| r["resume_at"].as_u64().unwrap_or(0) > 0 && r["payments"].as_u64().unwrap_or(0) > 0),
        "no partition was restored from published states: {restores:?}"
    );

    let c_applied = c_status["totals"]["applied"].as_u64().unwrap_or(0);
    let raw_total: u64 = v["acked"].as_u64().unwrap_or(0);
    eprintln!(
        "A applied {a_applied} before SIGKILL; B status {b_status}; C applied {c_applied} of {raw_total} acknowledged; restores {restores:?}; check {v}"
    );
}

/// GET on loopback without an async runtime.
/// `serve --log kafka`: ingress and projector in one process around the broker; the admin API and
/// `verify --admin` work as in embedded mode; a replay of the raw topic has the live digest; SIGTERM
/// publishes the outbox and exits 0.
#[test]
fn serve_with_the_kafka_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka = Kafka::start("serve", 1);
    let brokers = kafka.brokers.clone();
    let data = dir.path().join("data");
    let serve_args = ["serve", "--log", "kafka", "--data-dir", data.to_str().expect("utf8")];
    let serve = start(&[&serve_args[..], &webhook_args(&brokers, "3")].concat(), Some(&dir.path().join("serve.log")));
    let url = serve.webhook_url();
    let sim = Command::new(BIN)
        .args(["simulate", "--url", &url, "--secret", SECRET, "--payments", "150", "--seed", "3"])
        .arg("--truth")
        .arg(dir.path().join("truth.jsonl"))
        .arg("--acked")
        .arg(dir.path().join("acked.txt"))
        .output()
        .expect("simulate");
    assert!(sim.status.success(), "{}", String::from_utf8_lossy(&sim.stdout));
    let out = Command::new(BIN)
        .args(["verify", "--admin", &serve.admin(), "--truth"])
        .arg(dir.path().join("truth.jsonl"))
        .output()
        .expect("verify");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim_end().ends_with("150 passed, 0 failed"), "{text}");
    let s = status(&serve.admin());
    assert_eq!(s["partitions"].as_array().map(Vec::len), Some(3), "{s}");
    let (code, body) = http_get(&format!("{}/v1/status?digest=true", serve.admin()));
    assert_eq!(code, 200, "{body}");
    let live_digest =
        serde_json::from_str::<Value>(&body).expect("status")["digest"].as_str().expect("digest").to_owned();
    // The live projection's log is the raw topic: a replay of the topic gives the same digest.
    let replayed = Command::new(BIN)
        .args(["replay", "--kafka-brokers", &brokers, "--topic", "stripe.events", "--out"])
        .arg(dir.path().join("replayed"))
        .output()
        .expect("replay");
    let text = String::from_utf8_lossy(&replayed.stdout);
    assert!(replayed.status.success(), "{text}{}", String::from_utf8_lossy(&replayed.stderr));
    assert_eq!(text.lines().last(), Some(format!("digest {live_digest} payments 150").as_str()), "{text}");
    assert!(serve.terminate().success(), "serve exits 0 on SIGTERM");

    // After the graceful stop the outbox is out: the topics hold every payment's final state.
    let (ok, v) = check(&brokers, dir.path(), true);
    assert!(ok, "{v}");
    assert_eq!(v["payments_checked"], 150);

    // The data directory holds only the projection (the log is Kafka); export reads it.
    assert!(!data.join("log").exists(), "no embedded log with --log kafka");
    let export = dir.path().join("export.jsonl");
    let st =
        Command::new(BIN).args(["export", "--data-dir"]).arg(&data).arg("--out").arg(&export).status().expect("export");
    assert!(st.success());
    let lines = std::fs::read_to_string(&export).expect("export file");
    assert_eq!(lines.lines().count(), 150, "one line per payment");
}

/// Fencing, on Apache Kafka: projector A (in this process, so that its stall is exact) has folded part of
/// the raw topic and holds committed but unpublished outbox entries when it stops polling. B, of the same
/// group with an empty store, is given every partition once A is put out of the group, restores them from
/// the payments topic and catches up. When A comes back, the broker refuses its transactional producers:
/// A stops with `Fenced` and adds nothing to the topics. An independent `read_committed` consumer then
/// finds every payment's last value equal to its truth and no action id twice. Without fencing, A's stale
/// entries (states older than B's) would land after B's.
#[test]
fn a_stalled_projector_is_fenced_and_adds_nothing_after_the_new_owner() {
    use paystate_kafka::{KafkaConfig, KafkaLogError, KafkaProjector, ProjectorOptions};
    use paystate_store::{LogView, Store, Stream};

    let (dir, kafka, ingress) = kafka_and_ingress("fencing");
    let brokers = kafka.brokers.clone();
    let sim = simulate(&ingress.webhook_url(), 300, 41, dir.path()).output().expect("simulate");
    assert!(sim.status.success(), "simulate: {}", String::from_utf8_lossy(&sim.stdout));
    let acked = std::fs::read_to_string(dir.path().join("acked.txt")).expect("acked").lines().count() as u64;
    assert!(acked > 1000, "{acked} deliveries acknowledged");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = KafkaConfig::new(brokers.clone());
    let options = ProjectorOptions {
        group: "fencing".into(),
        batch_max: 16,
        session_timeout: Duration::from_secs(6),
        max_poll_interval: Duration::from_secs(6),
        partitions: Some(4),
        ..ProjectorOptions::default()
    };
    let store_a = Store::open_projection(&dir.path().join("a")).expect("store A");
    let a = KafkaProjector::new(&cfg, store_a.clone(), options.clone(), runtime.handle().clone()).expect("A");
    let unpublished = |s: &paystate_store::Projection| {
        s.stream_end(Stream::Payments).expect("end") > s.published(Stream::Payments).expect("published")
    };
    let (mut consumed, deadline) = (0, Instant::now() + Duration::from_secs(120));
    while consumed < acked / 3 || !unpublished(&store_a) {
        consumed += a.step().expect("A steps").records;
        assert!(Instant::now() < deadline, "A consumed {consumed} of {acked}");
    }
    assert!(store_a.published(Stream::Payments).expect("published") > 0, "A published part of what it folded");

    // A stalls (no poll, no publish). B takes every partition and catches up with the raw topic.
    let store_b = Store::open_projection(&dir.path().join("b")).expect("store B");
    let b = KafkaProjector::new(&cfg, store_b.clone(), options, runtime.handle().clone()).expect("B");
    let ends = b.ends();
    // Every partition holds records: an end of 0 is one not read yet.
    let caught_up =
        || b.restores().len() == 4 && (0..4u32).all(|p| ends.end(p) > 0) && store_b.drained(&*ends).expect("drained");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !caught_up() {
        b.step().expect("B steps");
        assert!(Instant::now() < deadline, "B did not take over: restores {:?}", b.restores());
    }
    let restored: u64 = b.restores().iter().map(|r| r.payments).sum();
    assert!(restored > 0, "B restored A's published payments: {:?}", b.restores());

    // A comes back: fenced, it stops.
    let deadline = Instant::now() + Duration::from_secs(60);
    let err = loop {
        match a.step() {
            Ok(_) => assert!(Instant::now() < deadline, "A was never refused"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, KafkaLogError::Fenced { .. }), "A stopped with {err}");
    assert!(unpublished(&store_a), "A's entries were never published");
    drop(a);
    for _ in 0..3 {
        b.step().expect("B keeps running");
    }

    let (ok, v) = check(&brokers, dir.path(), true);
    assert!(ok, "the projection topics after fencing: {v}");
    assert_eq!(v["payments_checked"].as_u64(), Some(300), "{v}");
    assert_eq!(v["duplicate_action_ids"], serde_json::json!([]), "{v}");
    assert_eq!(v["mismatches"], serde_json::json!([]), "{v}");
}

/// Records lost to retention are never skipped silently: with partition 0 of the raw topic cut before
/// offset 5 (kafka-delete-records, what retention does), a fresh projector stops partition 0 where it
/// needs offset 0, reports the gap in `/v1/status` (never caught up) and applies nothing of it, while the
/// other partitions are projected to their ends. One started with `accept_retention_gaps` skips the gap
/// and projects partition 0 from offset 5 to its end.
#[test]
fn records_lost_to_retention_stop_the_partition_unless_accepted() {
    use paystate_kafka::{KafkaConfig, KafkaProjector, ProjectorOptions};
    use paystate_store::{LogView, Store};

    let (dir, kafka, ingress) = kafka_and_ingress("retention");
    let sim = simulate(&ingress.webhook_url(), 60, 5, dir.path()).output().expect("simulate");
    assert!(sim.status.success(), "simulate: {}", String::from_utf8_lossy(&sim.stdout));
    kafka.delete_records("stripe.events", 0, 5);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = KafkaConfig::new(kafka.brokers.clone());
    let run = |name: &str, accept: bool| {
        let options = ProjectorOptions {
            group: name.into(),
            partitions: Some(4),
            accept_retention_gaps: accept,
            ..ProjectorOptions::default()
        };
        let store = Store::open_projection(&dir.path().join(name)).expect("store");
        let p = KafkaProjector::new(&cfg, store.clone(), options, runtime.handle().clone()).expect("projector");
        let ends = p.ends();
        let done = |gap_expected: bool| {
            (0..4u32).all(|q| {
                let end = ends.end(q);
                let at = store.stored_position(q).expect("position");
                end > 5 && if q == 0 && gap_expected { at == Some(0) } else { at == Some(end) }
            }) && (!gap_expected || !ends.retention_gaps().is_empty())
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done(!accept) {
            p.step().expect("step");
            assert!(Instant::now() < deadline, "{name}: gaps {:?}", ends.retention_gaps());
        }
        let status = paystate_ingress::status_json(&store, &*ends, true).expect("status");
        (ends.retention_gaps(), status, store.stored_position(0).expect("position"), ends.end(0))
    };

    let (gaps, status, at, _) = run("stopped", false);
    assert_eq!(gaps, vec![paystate_store::RetentionGap { partition: 0, expected: 0, first_retained: 5 }]);
    assert_eq!(at, Some(0), "nothing of partition 0 applied");
    assert_eq!(status["caught_up"], false, "{status}");
    assert_eq!(status["retention_gaps"][0]["first_retained"], 5, "{status}");

    let (gaps, status, at, end) = run("accepted", true);
    assert!(gaps.is_empty(), "{gaps:?}");
    assert_eq!(at, Some(end), "partition 0 projected from offset 5 to its end");
    assert!(status.get("retention_gaps").is_none(), "{status}");

    // A replay of the topic says what it is missing.
    let out = Command::new(BIN)
        .args(["replay", "--kafka-brokers", &kafka.brokers, "--out"])
        .arg(dir.path().join("replayed"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("starts at offset 5: the 5 records before it were deleted"), "{stderr}");
}

/// The ingress starts while the cluster is down: `/readyz` says not ready and webhooks get 503 (nothing
/// can be placed in a partition before the count is known); once the broker is back, without a restart
/// of the ingress, it turns ready and every delivery of a simulate run is answered 200 and in the topic.
#[test]
fn the_ingress_starts_while_kafka_is_down_and_serves_once_it_is_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka = Kafka::start("down-at-start", 1);
    kafka.control("kill", &["1"]);
    let ingress =
        start(&[&["ingress"][..], &webhook_args(&kafka.brokers, "4")].concat(), Some(&dir.path().join("ingress.log")));
    let admin = ingress.admin();
    let (code, body) = http_get(&format!("{admin}/readyz"));
    assert_eq!(code, 503, "{body}");
    let sim = simulate(&ingress.webhook_url(), 1, 3, dir.path())
        .args(["--give-up-after-secs", "2"])
        .output()
        .expect("simulate");
    assert!(!sim.status.success(), "accepted while the broker is down: {}", String::from_utf8_lossy(&sim.stdout));
    let (_, metrics) = http_get(&format!("{admin}/metrics"));
    let unavailable = metrics
        .lines()
        .find(|l| l.starts_with("paystate_webhooks_total{outcome=\"unavailable\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(unavailable.is_some_and(|n| n > 0), "503s counted as unavailable:\n{metrics}");

    kafka.control("restart", &["1"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while http_get(&format!("{admin}/readyz")).0 != 200 {
        assert!(Instant::now() < deadline, "the ingress never became ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    let sim = simulate(&ingress.webhook_url(), 40, 3, dir.path()).output().expect("simulate");
    assert!(sim.status.success(), "simulate: {}", String::from_utf8_lossy(&sim.stdout));
    let (ok, v) = check(&kafka.brokers, dir.path(), true);
    assert_eq!(v["acked_missing"], serde_json::json!([]), "{v}");
    assert!(v["acked"].as_u64().unwrap_or(0) > 100, "{v} ({ok})");
}

/// A webhook outcome counter of the ingress (`paystate_webhooks_total{outcome=…}`).
fn webhooks(admin: &str, outcome: &str) -> u64 {
    let (_, metrics) = http_get(&format!("{admin}/metrics"));
    let prefix = format!("paystate_webhooks_total{{outcome=\"{outcome}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok()).unwrap_or(0)
}

/// Waits (up to `secs`) until the ingress has accepted at least `n` webhooks.
fn wait_accepted(admin: &str, n: u64, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while webhooks(admin, "accepted") < n {
        assert!(Instant::now() < deadline, "{what}: {} of {n} webhooks accepted", webhooks(admin, "accepted"));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The partitions of `topics` as confluent-kafka sees them: topic → partition → leader, replicas, isr.
fn describe(brokers: &str, topics: &[&str]) -> Value {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/kafka_describe.py");
    let out = Command::new(&python).arg(&script).args(["--brokers", brokers]).args(topics).output().expect("describe");
    assert!(out.status.success(), "kafka_describe: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("describe json")
}

const TOPICS: [&str; 4] = ["stripe.events", "paystate.payments", "paystate.actions", "paystate.history"];

/// Waits until every partition of paystate's topics has a leader and all three replicas in sync.
fn wait_in_sync(brokers: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let d = describe(brokers, &TOPICS);
        let parts: Vec<&Value> =
            d.as_object().expect("topics").values().flat_map(|t| t.as_object().expect("parts").values()).collect();
        if parts.iter().all(|p| p["leader"].as_i64().unwrap_or(-1) > 0 && p["isr"].as_array().map(Vec::len) == Some(3))
        {
            return;
        }
        assert!(Instant::now() < deadline, "the replicas never got back in sync: {d}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn signal(p: &Proc, sig: &str) {
    let pid = p.child.id().to_string();
    assert!(Command::new("kill").args([sig, &pid]).status().expect("kill").success(), "kill {sig} {pid}");
}

/// The three-broker cluster under faults, with ingress, two projectors and `simulate --payments 3000`
/// (which retries what is answered 503). Driven by progress (webhooks accepted), not by the clock: the
/// leader of raw partition 0 is SIGKILLed, later restarted; once every replica is back in sync a second
/// broker is SIGKILLed, projector A is SIGKILLed and a fresh C (empty data dir) joins; the second broker is
/// restarted; B is SIGSTOPped until C owns every partition, then resumed. If B finds itself fenced it exits
/// non-zero, as it must, and is started again on its data dir, as an orchestrator would. At the end the
/// independent checker (`read_committed`) finds every payment's last value equal to its truth, no action
/// id twice, and every event acknowledged with 200 in the raw topic.
#[test]
fn three_brokers_under_faults_lose_nothing_and_publish_each_state_and_action_once() {
    let (dir, kafka, ingress) = kafka_and_ingress_with("faults", 3, &["--kafka-replication", "3"]);
    let _logs = LogsOnFailure(dir.path());
    let brokers = kafka.brokers.clone();
    let admin = ingress.admin();
    let d = describe(&brokers, &TOPICS);
    assert_eq!(d["paystate.payments"]["0"]["replicas"].as_array().map(Vec::len), Some(3), "replication 3: {d}");
    let a = projector(&brokers, &dir.path().join("a"), &dir.path().join("a.log"));
    let mut b = projector(&brokers, &dir.path().join("b"), &dir.path().join("b.log"));
    let payments = 3000;
    // Paced, so that the faults below happen while it sends (about 13,000 deliveries at 200/s).
    let sim = simulate(&ingress.webhook_url(), payments, 77, dir.path())
        .args(["--rate", "200"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("simulate");

    // 1. The leader of raw partition 0 dies; writes go on through the new leaders.
    wait_accepted(&admin, 1500, 300, "before the first fault");
    let first = describe(&brokers, &["stripe.events"])["stripe.events"]["0"]["leader"].as_u64().expect("leader");
    kafka.control("kill", &[&first.to_string()]);
    let at_kill = webhooks(&admin, "accepted");
    wait_accepted(&admin, at_kill + 2000, 300, "with the leader of partition 0 dead");
    kafka.control("restart", &[&first.to_string()]);
    wait_in_sync(&brokers, 180);

    // 2. A second broker dies; projector A is SIGKILLed and a fresh C joins.
    let second = if first == 1 { 2 } else { 1 };
    kafka.control("kill", &[&second.to_string()]);
    drop(a);
    let c = projector(&brokers, &dir.path().join("c"), &dir.path().join("c.log"));
    let at_kill = webhooks(&admin, "accepted");
    wait_accepted(&admin, at_kill + 1500, 300, "with a second broker dead");
    kafka.control("restart", &[&second.to_string()]);

    // 3. B stalls through a rebalance: C is handed every partition, then B resumes.
    signal(&b, "-STOP");
    let deadline = Instant::now() + Duration::from_secs(120);
    while status(&c.admin())["group"]["owned"].as_array().map(Vec::len) != Some(4) {
        assert!(Instant::now() < deadline, "C never took B's partitions: {}", status(&c.admin()));
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(&b, "-CONT");

    let sim = sim.wait_with_output().expect("simulate");
    let sim_out = String::from_utf8_lossy(&sim.stdout).into_owned();
    assert!(sim.status.success(), "simulate: {sim_out}");
    eprintln!("simulate: {sim_out}");
    let unavailable = webhooks(&admin, "unavailable");

    // A fenced B stops with an error (its partitions went to C while it was stopped); it comes back on
    // its data dir. One that was not fenced (it had nothing open to commit) is still a member.
    let deadline = Instant::now() + Duration::from_secs(60);
    let b_exit = loop {
        if let Some(s) = b.child.try_wait().expect("wait") {
            break Some(s);
        }
        if status(&b.admin())["group"]["members"].as_array().map(Vec::len) == Some(2) {
            break None;
        }
        assert!(Instant::now() < deadline, "B neither rejoined nor stopped");
        std::thread::sleep(Duration::from_millis(200));
    };
    if let Some(s) = b_exit {
        assert!(!s.success(), "a fenced projector exits non-zero, not {s}");
        let log = std::fs::read_to_string(dir.path().join("b.log")).expect("b.log");
        assert!(log.contains("fenced"), "B stopped for another reason:\n{log}");
        b = projector(&brokers, &dir.path().join("b"), &dir.path().join("b2.log"));
    }

    wait_for_truth(&brokers, dir.path(), false, 240);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(status(&b.admin())["caught_up"] == true && status(&c.admin())["caught_up"] == true) {
        assert!(Instant::now() < deadline, "never caught up: {} {}", status(&b.admin()), status(&c.admin()));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(b.terminate().success(), "B exits 0 on SIGTERM");
    assert!(c.terminate().success(), "C exits 0 on SIGTERM");
    assert!(ingress.terminate().success(), "the ingress exits 0 on SIGTERM");
    let (ok, v) = check(&brokers, dir.path(), true);
    assert!(ok, "{v}");
    assert_eq!(v["payments_checked"], payments);
    assert_eq!(v["duplicate_action_ids"], serde_json::json!([]), "{v}");
    assert_eq!(v["acked_missing"], serde_json::json!([]), "{v}");
    eprintln!("faults: leader {first} then node {second} killed; B fenced: {b_exit:?}; 503s {unavailable}; check {v}");
}

/// A rolling restart of the three brokers, one at a time (controlled shutdown, restart, replicas back in
/// sync), while simulate sends: the ingress answers 503 only inside the restart windows (between windows
/// it accepts a further 500 webhooks with no 503), and afterwards every acknowledged event is in the
/// raw topic and every payment's last published state equals its truth.
#[test]
fn a_rolling_restart_of_the_brokers_refuses_only_inside_the_windows_and_loses_nothing() {
    let (dir, kafka, ingress) = kafka_and_ingress_with("rolling", 3, &["--kafka-replication", "3"]);
    let _logs = LogsOnFailure(dir.path());
    let brokers = kafka.brokers.clone();
    let admin = ingress.admin();
    let p = projector(&brokers, &dir.path().join("p"), &dir.path().join("p.log"));
    // Paced, so that it outlasts the three restarts (about 13,000 deliveries at 150/s).
    let payments = 3000;
    let sim = simulate(&ingress.webhook_url(), payments, 78, dir.path())
        .args(["--rate", "150"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("simulate");
    let mut inside = Vec::new();
    for node in 1..=3u32 {
        // Outside a window: 500 webhooks accepted with no 503.
        let (accepted, refused) = (webhooks(&admin, "accepted"), webhooks(&admin, "unavailable"));
        wait_accepted(&admin, accepted + 500, 300, "between restarts");
        assert_eq!(webhooks(&admin, "unavailable"), refused, "503s outside a restart window (before node {node})");
        let before = webhooks(&admin, "unavailable");
        kafka.control("shutdown", &[&node.to_string()]);
        kafka.control("restart", &[&node.to_string()]);
        wait_in_sync(&brokers, 180);
        inside.push(webhooks(&admin, "unavailable") - before);
    }
    let sim = sim.wait_with_output().expect("simulate");
    let sim_out = String::from_utf8_lossy(&sim.stdout).into_owned();
    assert!(sim.status.success(), "simulate: {sim_out}");
    let v = wait_for_truth(&brokers, dir.path(), true, 180);
    assert_eq!(v["payments_checked"], payments);
    assert_eq!(v["acked_missing"], serde_json::json!([]), "{v}");
    assert!(p.terminate().success(), "the projector exits 0 on SIGTERM");
    assert!(ingress.terminate().success(), "the ingress exits 0 on SIGTERM");
    eprintln!("rolling restart: 503s inside the windows of nodes 1-3: {inside:?}; simulate: {sim_out}");
}

/// Compaction as Kafka does it: the compacted topics created with a one-second `segment.ms` and a tiny
/// dirty ratio (`--kafka-compacted-config`). A projector publishes every update of 200 payments; a second
/// small batch rolls the segments; the broker's cleaner then removes superseded updates, so the payments
/// topic holds fewer messages than were published. A fresh member restores every partition from the
/// compacted topics, reads fewer messages than were published, and ends with the same states (digest).
#[test]
fn after_compaction_a_restore_reads_fewer_messages_and_ends_with_equal_states() {
    use paystate_kafka::{KafkaConfig, KafkaProjector, ProjectorOptions};
    use paystate_store::{LogView, Store, Stream};

    let compacted =
        ["--kafka-compacted-config", "segment.ms=1000", "--kafka-compacted-config", "min.cleanable.dirty.ratio=0.01"];
    let (dir, kafka, ingress) = kafka_and_ingress_with("compaction", 1, &compacted);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = KafkaConfig::new(kafka.brokers.clone());
    let options =
        |group: &str| ProjectorOptions { group: group.into(), partitions: Some(4), ..ProjectorOptions::default() };
    let live = Store::open_projection(&dir.path().join("live")).expect("store");
    // Small batches: most events give an update of their own, which compaction then supersedes.
    let live_options = ProjectorOptions { batch_max: 2, ..options("live") };
    let p = KafkaProjector::new(&cfg, live.clone(), live_options, runtime.handle().clone()).expect("projector");
    let ends = p.ends();
    // Steps `p` until it applied the whole raw topic and published everything.
    let drain = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            p.step().expect("step");
            // Every partition holds records: an end of 0 is one not read yet.
            if (0..4u32).all(|q| ends.end(q) > 0) && live.drained(&*ends).expect("drained") {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: the projector did not drain the raw topic");
        }
    };
    let sim = simulate(&ingress.webhook_url(), 200, 61, dir.path()).output().expect("simulate");
    assert!(sim.status.success(), "simulate: {}", String::from_utf8_lossy(&sim.stdout));
    drain("first batch");
    // Updates of a later second roll the segments that hold the first batch's: those become compactable.
    // The subject here is the broker's clock (segment.ms is judged by the broker against the records'
    // timestamps), which a test cannot pause or advance: a real second passes.
    std::thread::sleep(Duration::from_millis(1100));
    let more = dir.path().join("more");
    std::fs::create_dir_all(&more).expect("dir");
    let sim = simulate(&ingress.webhook_url(), 5, 62, &more).output().expect("simulate");
    assert!(sim.status.success(), "simulate: {}", String::from_utf8_lossy(&sim.stdout));
    drain("second batch");
    let published = live.published(Stream::Payments).expect("published");

    let deadline = Instant::now() + Duration::from_secs(120);
    let v = loop {
        let (ok, v) = check(&kafka.brokers, dir.path(), true);
        assert!(ok, "{v}");
        if v["payments_messages"].as_u64().is_some_and(|n| n < published) {
            break v;
        }
        assert!(Instant::now() < deadline, "the payments topic was never compacted: {v}, {published} published");
        std::thread::sleep(Duration::from_millis(500));
    };
    let compacted_to = v["payments_messages"].as_u64().unwrap_or(0);

    let fresh = Store::open_projection(&dir.path().join("fresh")).expect("store");
    let r = KafkaProjector::new(&cfg, fresh.clone(), options("fresh"), runtime.handle().clone()).expect("projector");
    let deadline = Instant::now() + Duration::from_secs(120);
    while r.restores().len() < 4
        || (0..4u32).any(|q| fresh.stored_position(q).expect("position") != live.stored_position(q).expect("position"))
    {
        r.step().expect("step");
        assert!(Instant::now() < deadline, "the fresh member did not restore: {:?}", r.restores());
    }
    let read: u64 = r.restores().iter().map(|x| x.messages).sum();
    assert!(read < published, "the restore read {read} messages, {published} were published");
    assert!(read <= compacted_to, "the restore read {read} messages, the compacted topic held {compacted_to}");
    assert_eq!(fresh.digest().expect("digest"), live.digest().expect("digest"), "equal states");
    assert_eq!(fresh.payment_count(), 205);
    eprintln!("compaction: {published} updates published, {compacted_to} left after compaction, restore read {read}");
}
