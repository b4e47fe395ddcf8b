//! `paystate serve` as a user runs it: a child process on loopback, fed by `paystate simulate`.
//!
//! - end to end: 2,000 payments; every payment equals its truth; one `fulfill_order` per succeeded
//!   payment; no action id twice in the `actions` stream; SIGTERM exits 0.
//! - every API era: 2,000 payments rendered at 2020-08-27, 2024-06-20, 2024-12-18.acacia,
//!   2025-10-29.clover and across an upgrade 2024-06-20 → 2025-03-31.basil; `verify` checks each payment's
//!   money and its counts of order-independent actions (one `fulfill_order` per succeeded payment, one
//!   `refund_succeeded` per customer refund, none for Stripe's own); the replay's digest is the live one.
//! - a data directory written by the previous release (a committed fixture) opens, is rebuilt from its log
//!   and verifies, with no action emitted twice.
//! - crash safety: the server is SIGKILLed after random numbers of acknowledged webhooks (at least 5 times)
//!   and restarted, on the listening sockets a launcher holds for it (socket activation), while
//!   simulate keeps retrying; every acknowledged event is in the log, every payment equals its truth and
//!   no action id appears twice.

mod common;

use common::{Server, BIN};

use paystate_store::{Store, Stream};
use paystate_testkit::scenario::Truth;
use paystate_testkit::synth::Rng;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_serve_test_secret";

/// Starts `serve` (on ports the system picks, `extra` flags) and reads the bound addresses from its first
/// line of output.
fn start_server(data: &Path, extra: &[&str]) -> Server {
    Server::spawn(common::serve_command(data, SECRET).args(extra).env("RUST_LOG", "warn").stderr(Stdio::inherit()))
}

fn simulate(url: &str, payments: usize, dir: &Path, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["simulate", "--url", url, "--secret", SECRET, "--payments", &payments.to_string()])
        .arg("--truth")
        .arg(dir.join("truth.jsonl"))
        .arg("--acked")
        .arg(dir.join("acked.txt"))
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn simulate")
}

fn truths(dir: &Path) -> Vec<Truth> {
    std::fs::read_to_string(dir.join("truth.jsonl"))
        .expect("truth file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("truth line"))
        .collect()
}

/// Checks the actions: no id twice; one fulfill_order per succeeded payment, none for the others.
fn check_actions(actions: &[Value], truths: &[Truth]) {
    let mut ids = BTreeSet::new();
    let mut fulfil: BTreeMap<String, usize> = BTreeMap::new();
    for a in actions {
        assert!(ids.insert(a["id"].as_str().expect("id").to_owned()), "action id twice: {a}");
        if a["kind"] == "fulfill_order" {
            *fulfil.entry(a["key"]["payment"].as_str().expect("payment").to_owned()).or_default() += 1;
        }
    }
    for t in truths {
        let paid = matches!(t.lifecycle.as_str(), "succeeded" | "partially_refunded" | "refunded");
        assert_eq!(
            fulfil.get(&t.id).copied().unwrap_or(0),
            usize::from(paid),
            "fulfill_order for {} ({:?})",
            t.id,
            t.scenario
        );
    }
}

fn verify(args: &[&str], truth: &Path) -> String {
    let v = common::verify(truth, args);
    assert!(v.passed, "verify failed:\n{}", v.stdout);
    v.stdout
}

/// Runs `paystate replay … --out OUT` and returns its last line (`digest … payments …`).
fn replay(args: &[&str], out: &Path) -> String {
    let run = Command::new(BIN).arg("replay").args(args).arg("--out").arg(out).output().expect("replay");
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "replay failed:\n{text}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(text.contains("events/s | peak RSS"), "{text}");
    text.lines().last().expect("summary").to_owned()
}

#[test]
fn end_to_end_two_thousand_payments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = start_server(&data, &[]);
    let sim = simulate(&server.public, 2000, dir.path(), &["--seed", "11"]).wait_with_output().expect("simulate");
    let report = String::from_utf8_lossy(&sim.stdout);
    assert!(sim.status.success(), "simulate: {report}");
    assert!(report.contains("accepted"), "{report}");

    let text = verify(&["--admin", &server.admin], &dir.path().join("truth.jsonl"));
    assert!(text.trim_end().ends_with("2000 passed, 0 failed"), "{text}");

    let client = ndjson::blocking_get_all(&format!("{}/v1/streams/actions", server.admin));
    check_actions(&client, &truths(dir.path()));

    // Replay while serve runs (it holds the data directory's lock): through the admin API, same digest as
    // the live projection's.
    let (status, _, body) = ndjson::get(&format!("{}/v1/status?digest=true", server.admin));
    assert_eq!(status, 200, "{body}");
    let live: Value = serde_json::from_str(&body).expect("status json");
    let live_digest = live["digest"].as_str().expect("digest").to_owned();
    let replayed = replay(&["--source", &server.admin], &dir.path().join("replay-admin"));
    assert_eq!(replayed, format!("digest {live_digest} payments 2000"));
    // diff reads the live side through the admin API too.
    let diff =
        Command::new(BIN).arg("diff").arg(&server.admin).arg(dir.path().join("replay-admin")).output().expect("diff");
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(diff.status.success(), "{text}{}", String::from_utf8_lossy(&diff.stderr));
    assert_eq!(text.trim_end(), "0 payments differ (2000 and 2000 payments)");

    // SIGTERM: graceful shutdown, exit 0.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "serve exited with {status}");

    // export: one JSON line per payment with the documented fields.
    let out = dir.path().join("export.jsonl");
    let status =
        Command::new(BIN).args(["export", "--data-dir"]).arg(&data).arg("--out").arg(&out).status().expect("export");
    assert!(status.success());
    let rows: Vec<Value> =
        std::fs::read_to_string(&out).expect("read").lines().map(|l| serde_json::from_str(l).expect("jsonl")).collect();
    assert_eq!(rows.len(), 2000);
    let fields = [
        "id",
        "account",
        "livemode",
        "status",
        "lifecycle",
        "amount",
        "currency",
        "amount_received",
        "amount_refunded",
        "disputed",
        "dispute_status",
        "refunds",
        "events_applied",
        "last_event_id",
    ];
    for f in fields {
        assert!(rows.iter().all(|r| r.get(f).is_some()), "export lacks {f}");
    }
    // show: a person-readable payment with its history.
    let t = &truths(dir.path())[0];
    let mut show = Command::new(BIN);
    show.args(["show", &t.id, "--data-dir"]).arg(&data);
    if let Some(a) = &t.account {
        show.args(["--account", a]);
    }
    let shown = show.output().expect("show");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    assert!(text.contains(&format!("lifecycle {}", t.lifecycle)), "{text}");
    // One line per event in the history section (the actions emitted follow in their own).
    let history = text.lines().skip_while(|l| !l.starts_with("history ")).skip(1);
    let history_lines = history.take_while(|l| !l.starts_with("actions emitted: ")).filter(|l| l.starts_with("  "));
    assert_eq!(history_lines.count(), t.events, "{text}");
}

/// The admin API locked as a user runs it: a non-loopback admin listener without a token is refused before
/// anything is created; with `--admin-token-file`, `/v1/*` answers 401 without the token (the webhook
/// endpoint and the health checks need none), and `verify --admin` passes with the token, from the flag
/// or the environment, and says what is missing without it.
#[test]
fn the_admin_api_is_locked_by_its_token() {
    const TOKEN: &str = "4b1d6c0e9f2a47d8b3e5a1c7f0d29e68";
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let refused = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--webhook-secret", SECRET, "--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .env_remove("PAYSTATE_ADMIN_TOKEN")
        .output()
        .expect("serve");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("refusing to serve the admin API on 0.0.0.0:0 without a token"), "{stderr}");
    assert!(!data.exists(), "a refused start creates nothing");

    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let token_arg = token_file.to_str().expect("utf-8 path");
    let server = start_server(&data, &["--admin-token-file", token_arg]);
    let sim = simulate(&server.public, 40, dir.path(), &[]).wait_with_output().expect("simulate");
    assert!(sim.status.success(), "{}", String::from_utf8_lossy(&sim.stdout));
    let bearer = format!("Bearer {TOKEN}");
    for path in ["/v1/status", "/v1/payments", "/v1/streams/actions?after=0", "/v1/log/0?from=0"] {
        let url = format!("{}{path}", server.admin);
        let (status, body) = common::http_get(&url);
        assert_eq!(status, 401, "{path} without the token: {body}");
        assert!(body.contains("\"unauthorized\""), "{body}");
        assert_eq!(common::http_get_with(&url, Some("Bearer not-the-token-at-all")).0, 401, "{path}");
        assert_eq!(common::http_get_with(&url, Some(&bearer)).0, 200, "{path} with the token");
    }
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(common::http_get(&format!("{}{open}", server.admin)).0, 200, "{open} stays open");
    }
    let truth = dir.path().join("truth.jsonl");
    let text = verify(&["--admin", &server.admin, "--admin-token-file", token_arg], &truth);
    assert!(text.trim_end().ends_with("40 passed, 0 failed"), "{text}");
    // `verify --admin` with the token in the environment, or with none.
    let verify_env = |token: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["verify", "--admin", &server.admin, "--truth"]).arg(&truth);
        match token {
            Some(t) => cmd.env("PAYSTATE_ADMIN_TOKEN", t),
            None => cmd.env_remove("PAYSTATE_ADMIN_TOKEN"),
        };
        cmd.output().expect("verify")
    };
    let from_env = verify_env(Some(TOKEN));
    let out = String::from_utf8_lossy(&from_env.stdout);
    assert!(from_env.status.success() && out.trim_end().ends_with("40 passed, 0 failed"), "{out}");
    let without = verify_env(None);
    let err = String::from_utf8_lossy(&without.stderr);
    assert!(!without.status.success(), "{err}");
    assert!(err.contains("answered 401: the admin API needs its token"), "{err}");
    assert!(!err.contains(TOKEN), "the token is never printed: {err}");
}

#[test]
fn every_api_era_end_to_end() {
    let eras: [(&str, &[&str]); 5] = [
        ("2020-08-27", &["--api-version", "2020-08-27"]),
        ("2024-06-20", &["--api-version", "2024-06-20"]),
        ("2024-12-18.acacia", &["--api-version", "2024-12-18.acacia"]),
        ("2025-10-29.clover", &["--api-version", "2025-10-29.clover"]),
        ("2024-06-20..2025-03-31.basil", &["--api-version", "2024-06-20", "--upgrade-to", "2025-03-31.basil"]),
    ];
    for (i, (era, flags)) in eras.into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = start_server(&dir.path().join("data"), &[]);
        let seed = (100 + i).to_string();
        let mut args = vec!["--seed", seed.as_str()];
        args.extend_from_slice(flags);
        let sim = simulate(&server.public, 2000, dir.path(), &args).wait_with_output().expect("simulate");
        assert!(sim.status.success(), "{era}: simulate: {}", String::from_utf8_lossy(&sim.stdout));
        let truth = dir.path().join("truth.jsonl");
        let text = verify(&["--admin", &server.admin], &truth);
        assert!(text.trim_end().ends_with("2000 passed, 0 failed"), "{era}: {text}");

        let truths = truths(dir.path());
        let actions = ndjson::blocking_get_all(&format!("{}/v1/streams/actions", server.admin));
        check_actions(&actions, &truths);
        // The truths state customer refunds; the projection counts each once, and Stripe's own none.
        let refunds: u32 = truths.iter().map(|t| t.actions.get("refund_succeeded").copied().unwrap_or(0)).sum();
        let announced = actions.iter().filter(|a| a["kind"] == "refund_succeeded").count();
        assert_eq!(announced, refunds as usize, "{era}: refund_succeeded");
        assert!(refunds > 0, "{era}: the simulation made no refund");
        let fulfilled = actions.iter().filter(|a| a["kind"] == "fulfill_order").count();
        let scenarios: BTreeSet<String> = truths.iter().map(|t| format!("{:?}", t.scenario)).collect();
        eprintln!(
            "{era}: verify printed \"{}\"; {} scenarios; {fulfilled} fulfill_order; {announced} refund_succeeded for {refunds} customer refunds",
            text.trim_end().lines().last().unwrap_or_default(),
            scenarios.len()
        );

        let (status, _, body) = ndjson::get(&format!("{}/v1/status?digest=true", server.admin));
        assert_eq!(status, 200, "{body}");
        let live: Value = serde_json::from_str(&body).expect("status json");
        let live_digest = live["digest"].as_str().expect("digest").to_owned();
        let replayed = replay(&["--source", &server.admin], &dir.path().join("replay"));
        assert_eq!(replayed, format!("digest {live_digest} payments 2000"), "{era}: replay");

        let pid = server.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        assert!(server.child.wait().expect("wait").success());
    }
}

/// `tests/fixtures/datadir-v1/data.tgz`: a data directory written by the release before the money rules
/// of issue 10 (payments in format 1): 40 payments of `simulate --seed 7`, 73 actions, two partitions.
#[test]
fn a_data_directory_of_the_previous_release_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/datadir-v1");
    let untar = Command::new("tar")
        .arg("xzf")
        .arg(fixture.join("data.tgz"))
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("tar runs");
    assert!(untar.success());
    let data = dir.path().join("data");
    let old_actions: BTreeSet<String> = {
        let store = Store::open_existing(&data).expect("opens, and rebuilds the projection from its log");
        assert_eq!(store.projection.position(0).expect("position"), 0, "positions go back to 0");
        store
            .projection
            .read_stream(Stream::Actions, 0, usize::MAX)
            .expect("stream")
            .into_iter()
            .map(|(_, v)| serde_json::from_slice::<Value>(&v).expect("json")["id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(old_actions.len(), 73);

    let mut server = start_server(&data, &["--partitions", "2"]);
    let admin = server.admin.clone();
    let text = verify(&["--admin", &admin], &fixture.join("truth.jsonl"));
    assert!(text.trim_end().ends_with("40 passed, 0 failed"), "{text}");
    let actions = ndjson::blocking_get_all(&format!("{admin}/v1/streams/actions"));
    let ids: BTreeSet<&str> = actions.iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(ids.len(), actions.len(), "an action emitted again after the rebuild");
    assert!(old_actions.iter().all(|id| ids.contains(id.as_str())));
    assert!(server.terminate().success());
}

/// `tests/fixtures/datadir-v2/data.tgz`: a data directory of the release before the segment log (its log
/// in sled, payments in format 2; see its README). `serve` migrates the log and the payments once; see
/// [`check_old_data_dir`].
#[test]
fn a_data_directory_of_the_sled_log_release_opens_and_projects_the_same() {
    let (_dir, data) = check_old_data_dir("datadir-v2", (93, 116));
    assert!(!data.join("log").exists() && data.join("segments").join("LOG").is_file(), "the log was migrated");
}

/// Opens the fixture `name` (a data directory of an earlier release, with the truth of its payments) with
/// `serve`, and checks what a user relies on: every acknowledged event is still in the log (`log_ends`), the
/// projection equals a replay of that log by this release (same digest), each payment matches its truth,
/// its history lists its events with the lifecycle the truth gives after the last, and the previous
/// release's 70 actions are there, none emitted again. Returns the temporary directory and the data
/// directory in it (serve stopped).
fn check_old_data_dir(name: &str, log_ends: (u64, u64)) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name);
    let untar = Command::new("tar").arg("xzf").arg(fixture.join("data.tgz")).arg("-C").arg(dir).status();
    assert!(untar.expect("tar runs").success());
    let data = dir.join("data");
    let mut server = start_server(&data, &["--partitions", "2"]);
    let admin = server.admin.clone();
    let (status, _, body) = ndjson::get(&format!("{admin}/v1/status?digest=true"));
    assert_eq!(status, 200, "{body}");
    let live: Value = serde_json::from_str(&body).expect("status json");
    assert_eq!(live["partitions"][0]["log_end"], log_ends.0, "{body}");
    assert_eq!(live["partitions"][1]["log_end"], log_ends.1, "{body}");
    assert_eq!(live["lag"], 0, "{body}");
    let digest = live["digest"].as_str().expect("digest").to_owned();
    let replayed = replay(&["--source", &admin], &dir.join("replayed"));
    assert!(replayed.contains(&digest), "live {digest}, replay: {replayed}");
    let text = verify(&["--admin", &admin], &fixture.join("truth.jsonl"));
    assert!(text.trim_end().ends_with("40 passed, 0 failed"), "{text}");
    let actions = ndjson::blocking_get_all(&format!("{admin}/v1/streams/actions"));
    let ids: BTreeSet<&str> = actions.iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!((ids.len(), actions.len()), (70, 70), "the previous release's 70 actions, none again");
    let truth = std::fs::read_to_string(fixture.join("truth.jsonl")).expect("truth");
    let mut by_lifecycle: std::collections::BTreeMap<String, usize> = Default::default();
    for line in truth.lines() {
        let t: Value = serde_json::from_str(line).expect("truth line");
        let lifecycle = t["lifecycle"].as_str().expect("lifecycle");
        *by_lifecycle.entry(lifecycle.to_owned()).or_default() += 1;
        let mut url = format!("{admin}/v1/payments/{}/history", t["id"].as_str().expect("id"));
        if let Some(a) = t["account"].as_str() {
            url += &format!("?account={a}");
        }
        let (status, _, body) = ndjson::get(&url);
        assert_eq!(status, 200, "{body}");
        let history: Value = serde_json::from_str(&body).expect("history");
        let history = history["history"].as_array().expect("entries");
        assert_eq!(Some(history.len() as u64), t["events"].as_u64(), "{url}");
        assert_eq!(history.last().map(|h| &h["lifecycle"]), Some(&t["lifecycle"]), "{url}");
    }
    // The lifecycle index lists what the truth says of each payment.
    assert!(by_lifecycle.len() >= 4, "{by_lifecycle:?}");
    for (lifecycle, n) in &by_lifecycle {
        let (status, _, body) = ndjson::get(&format!("{admin}/v1/payments?lifecycle={lifecycle}&limit=1000"));
        assert_eq!(status, 200, "{body}");
        let listed: Value = serde_json::from_str(&body).expect("list");
        let listed = listed["payments"].as_array().expect("payments");
        assert_eq!(listed.len(), *n, "{lifecycle}");
        assert!(listed.iter().all(|p| p["lifecycle"] == lifecycle.as_str()), "{lifecycle}");
    }
    assert!(server.terminate().success());
    (tmp, data)
}

/// Webhooks this `serve` process acknowledged (its own counter: a restarted one starts at 0).
fn accepted(admin: &str) -> u64 {
    let (_, _, text) = ndjson::get(&format!("{admin}/metrics"));
    text.lines()
        .find_map(|l| l.strip_prefix("paystate_webhooks_total{outcome=\"accepted\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `serve` on sockets a supervisor holds for it (tests/python/socket_launcher.py, socket activation as
/// systemd does it): restarts take the same listening sockets, so no port is ever closed and bound again.
struct Activated {
    launcher: Child,
    commands: std::process::ChildStdin,
    replies: BufReader<std::process::ChildStdout>,
    public: String,
    admin: String,
}

impl Activated {
    fn new(data: &Path) -> Activated {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/socket_launcher.py");
        let mut launcher = Command::new(python)
            .arg(script)
            .args(["--", BIN, "serve", "--data-dir"])
            .arg(data)
            .args(["--webhook-secret", SECRET])
            .env_remove("PAYSTATE_ADMIN_TOKEN")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the socket launcher (python3)");
        let commands = launcher.stdin.take().expect("stdin");
        let mut replies = BufReader::new(launcher.stdout.take().expect("stdout"));
        let mut line = String::new();
        replies.read_line(&mut line).expect("ports line");
        let ports: Vec<&str> = line.trim().strip_prefix("ports ").expect("ports line").split(' ').collect();
        let (public, admin) =
            (format!("http://127.0.0.1:{}/webhooks/stripe", ports[0]), format!("http://127.0.0.1:{}", ports[1]));
        Activated { launcher, commands, replies, public, admin }
    }

    /// Sends a command; its reply line.
    fn command(&mut self, what: &str) -> String {
        use std::io::Write;
        writeln!(self.commands, "{what}").expect("command");
        let mut line = String::new();
        self.replies.read_line(&mut line).expect("reply");
        line
    }

    /// Starts serve; checks that it listens on the inherited sockets.
    fn start(&mut self) {
        let line = self.command("start");
        assert!(line.contains(&self.public) && line.contains(&self.admin), "serve did not take the sockets: {line}");
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
    }
}

#[test]
fn survives_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Activated::new(&data);
    server.start();
    let mut sim =
        simulate(&server.public, 3000, dir.path(), &["--seed", "23", "--concurrency", "8", "--timeout-ms", "2000"]);

    // Driven by progress, not by the clock: each serve is SIGKILLed once it has acknowledged a random
    // number (20 to 400) of webhooks, so every machine, fast or slow, sees the same kind of schedule: at
    // least 18,000 deliveries / 400 kills happen before simulate can finish.
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(5);
    eprintln!("kill schedule seed: {seed}");
    let mut rng = Rng::new(seed);
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    'run: loop {
        let at = 20 + rng.below(381);
        while accepted(&server.admin) < at {
            if sim.try_wait().expect("poll simulate").is_some() {
                break 'run;
            }
            assert!(Instant::now() < deadline, "simulate did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(server.command("kill").trim(), "killed");
        kills += 1;
        server.start();
    }
    let sim = sim.wait_with_output().expect("simulate");
    assert!(sim.status.success(), "simulate: {}", String::from_utf8_lossy(&sim.stdout));
    assert!(kills >= 5, "only {kills} kills happened while simulate ran; slow it down");
    assert_eq!(server.command("kill").trim(), "killed", "the final SIGKILL");

    // verify --data-dir first applies whatever the log holds beyond the projection.
    let text = verify(&["--data-dir", data.to_str().expect("utf8")], &dir.path().join("truth.jsonl"));
    assert!(text.trim_end().ends_with("3000 passed, 0 failed"), "{text}");

    let store = Store::open_existing(&data).expect("open");
    let mut logged = BTreeSet::new();
    for p in 0..store.log.partitions() {
        logged.extend(store.log.read_all(p).expect("read").into_iter().map(|(_, r)| r.event_id));
    }
    let acked = std::fs::read_to_string(dir.path().join("acked.txt")).expect("acked");
    let acked: Vec<&str> = acked.lines().filter(|l| !l.is_empty()).collect();
    assert!(!acked.is_empty());
    for id in &acked {
        assert!(logged.contains(*id), "event {id} was acknowledged but is not in the log");
    }
    let actions: Vec<Value> = store
        .projection
        .read_stream(Stream::Actions, 0, usize::MAX)
        .expect("stream")
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v).expect("action json"))
        .collect();
    check_actions(&actions, &truths(dir.path()));
    drop(store);

    // The store built live (shuffled deliveries, duplicates, crash restarts) and its replay have the same
    // digest, whatever the partition parallelism of the replay.
    let digest = Command::new(BIN).args(["digest", "--data-dir"]).arg(&data).output().expect("digest");
    let live = String::from_utf8_lossy(&digest.stdout).trim().to_owned();
    assert!(live.starts_with("digest ") && live.ends_with(" payments 3000"), "{live}");
    for workers in ["1", "4"] {
        let out = dir.path().join(format!("replay-{workers}"));
        let replayed = replay(&["--source", data.to_str().expect("utf8"), "--workers", workers], &out);
        assert_eq!(replayed, live, "replay with {workers} workers");
    }
    eprintln!("{kills} SIGKILLs, {} acknowledged events, {} actions", acked.len(), actions.len());
}

mod ndjson {
    //! A tiny blocking reader of the NDJSON stream, so the test needs no HTTP client runtime.
    use serde_json::Value;
    use std::io::{Read, Write};

    pub fn blocking_get_all(url: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let (status, headers, body) = get(&format!("{url}?after={after}&limit=5000"));
            assert_eq!(status, 200, "{body}");
            let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).expect("ndjson")).collect();
            if lines.is_empty() {
                return out;
            }
            after = headers
                .lines()
                .find_map(|h| h.strip_prefix("paystate-next-cursor: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("next cursor");
            out.extend(lines.into_iter().map(|mut l| l["data"].take()));
        }
    }

    pub fn get(url: &str) -> (u16, String, String) {
        let rest = url.strip_prefix("http://").expect("http url");
        let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).expect("path");
        let mut s = std::net::TcpStream::connect(host).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").expect("write");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read");
        let (head, body) = raw.split_once("\r\n\r\n").expect("response");
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status");
        (status, head.to_owned(), body.to_owned())
    }
}
