//! The `paystate` binary as a user runs it.

mod common;

use common::{build_store, golden_bodies, paystate};

fn payment_lines(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.starts_with("{\"payment\"")).collect()
}

#[test]
fn fold_prints_the_same_states_whatever_the_order() {
    let files = [
        "fold",
        "tests/golden/2024-06-20/partial_refunds.json",
        "tests/golden/2024-06-20/dispute_lost.json",
        "tests/golden/2024-06-20/decline_final.json",
    ];
    let (plain, err, ok) = paystate(&files);
    assert!(ok, "{err}");
    assert_eq!(payment_lines(&plain).len(), 3);
    assert!(plain.contains("\"lifecycle\":\"partially_refunded\""));
    assert!(plain.contains("\"dispute_status\":\"lost\""));
    assert!(plain.contains("\"lifecycle\":\"failed\""));
    for seed in ["1", "2", "3"] {
        let mut args = files.to_vec();
        args.extend(["--shuffle", seed]);
        let (shuffled, err, ok) = paystate(&args);
        assert!(ok, "{err}");
        assert_eq!(payment_lines(&shuffled), payment_lines(&plain), "seed {seed}");
    }
}

#[test]
fn sign_prints_a_header_stripe_would_send() {
    let (out, err, ok) = paystate(&[
        "sign",
        "--secret",
        "whsec_test",
        "--timestamp",
        "1700000000",
        "tests/fixtures/stripe/refund.updated.json",
    ]);
    assert!(ok, "{err}");
    let header = out.trim();
    assert!(header.starts_with("t=1700000000,v1="), "{header}");
    assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
}

#[test]
fn bad_input_is_a_clear_error() {
    let (_, err, ok) = paystate(&["fold", "tests/does-not-exist.json"]);
    assert!(!ok);
    assert!(err.contains("reading tests/does-not-exist.json"), "{err}");
    let (_, err, ok) = paystate(&["sign", "--secret", "", "tests/golden/README.md"]);
    assert!(!ok);
    assert!(err.contains("webhook secret is empty"), "{err}");
}

#[test]
fn digest_ignores_order_and_batch_size_and_diff_names_the_fields() {
    let bodies = golden_bodies();
    assert!(bodies.len() > 50);
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    build_store(&a, &bodies, 512);
    let reversed: Vec<Vec<u8>> = bodies.iter().rev().cloned().collect();
    build_store(&b, &reversed, 1);
    // C lacks one event: the last one of the first golden file's payment.
    let dropped = paystate_stripe::parse_event(&bodies[0]).expect("parse");
    let key = paystate_stripe::payment_key(&dropped).map(|k| k.to_string()).expect("payment");
    let last_of_first = bodies
        .iter()
        .rposition(|body| {
            let p = paystate_stripe::parse_event(body).expect("parse");
            paystate_stripe::payment_key(&p).map(|k| k.to_string()).as_deref() == Some(key.as_str())
        })
        .expect("an event of that payment");
    let mut fewer = bodies.clone();
    fewer.remove(last_of_first);
    build_store(&c, &fewer, 64);

    let digest = |d: &std::path::Path| {
        let (out, err, ok) = paystate(&["digest", "--data-dir", d.to_str().expect("utf8")]);
        assert!(ok, "{err}");
        out
    };
    let (da, db, dc) = (digest(&a), digest(&b), digest(&c));
    assert!(da.starts_with("digest ") && da.len() > 70, "{da}");
    assert_eq!(da, db, "same events, another order and batch size: same digest");
    assert_ne!(da, dc, "one event fewer: another digest");

    let (out, err, ok) = paystate(&["diff", a.to_str().expect("utf8"), b.to_str().expect("utf8")]);
    assert!(ok, "{err}");
    assert!(out.trim_end().starts_with("0 payments differ"), "{out}");
    let (out, _, ok) = paystate(&["diff", a.to_str().expect("utf8"), c.to_str().expect("utf8")]);
    assert!(!ok, "diff exits non-zero when projections differ");
    let payment_id = key.rsplit('/').next().expect("id");
    assert!(out.lines().any(|l| l.contains(payment_id) && l.contains("events_applied")), "{out}");
    assert!(
        out.trim_end().ends_with(&format!("1 payments differ ({0} and {0} payments)", bodies_payments(&a))),
        "{out}"
    );
}

fn bodies_payments(dir: &std::path::Path) -> usize {
    paystate_store::Store::open_existing(dir).expect("open").projection.payment_count()
}

/// `simulate` against a port where nothing listens fails within seconds (not after its 600 s of retries),
/// naming the URL and the refusal.
#[test]
fn simulate_against_a_closed_port_fails_fast_and_says_why() {
    // Bound but not listening: the port stays ours (nobody else can take it) and connections are refused.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let socket = rt
        .block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
            Ok::<_, std::io::Error>(s)
        })
        .expect("socket");
    let port = socket.local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}/webhooks/stripe");
    let started = std::time::Instant::now();
    let (_, err, ok) = paystate(&["simulate", "--url", &url, "--secret", "whsec_cli_test", "--payments", "3"]);
    let took = started.elapsed();
    assert!(!ok, "{err}");
    assert!(took < std::time::Duration::from_secs(10), "gave up after {took:?}");
    assert!(err.contains(&format!("nothing accepts connections at {url}")), "{err}");
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    drop(socket);
}

/// `--config`: a file's settings apply, flags and then the environment override them, unknown keys are
/// refused by name, and `config check` shows where each setting comes from without showing a secret.
#[test]
fn a_config_file_sets_every_flag_and_flags_and_the_environment_override_it() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let file_secret = "whsec_secret_from_the_file_1f2e3d";
    let config = dir.path().join("paystate.toml");
    std::fs::write(
        &config,
        format!(
            "# shared by the commands that have the flag\n\
             webhook_secret = [\"{file_secret}\"]\n\
             kafka_brokers = \"broker-from-file:9092\"\n\
             admin_listen = \"127.0.0.1:0\"\n\
             [serve]\n\
             listen = \"127.0.0.1:0\"\n\
             data_dir = \"{}\"\n\
             batch_max = 256\n\
             accept_retention_gaps = true\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let cfg = config.to_str().expect("utf-8");
    let check = |env_secret: Option<&str>, extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_paystate"));
        cmd.args(["config", "check", "serve", "--config", cfg]).args(extra);
        match env_secret {
            Some(s) => cmd.env("STRIPE_WEBHOOK_SECRET", s),
            None => cmd.env_remove("STRIPE_WEBHOOK_SECRET"),
        };
        let out = cmd.output().expect("config check");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let plain = check(None, &[]);
    assert!(plain.contains("batch_max = \"256\" # config file"), "{plain}");
    assert!(plain.contains("accept_retention_gaps = true # config file"), "{plain}");
    assert!(plain.contains("kafka_brokers = \"broker-from-file:9092\" # config file"), "{plain}");
    assert!(plain.contains("webhook_secret = [\"<redacted>\"] # config file"), "{plain}");
    assert!(plain.contains("failure_grace_secs = \"600\" # default"), "{plain}");
    let flagged = check(None, &["--batch-max", "99"]);
    assert!(flagged.contains("batch_max = \"99\" # flag"), "{flagged}");
    let env_secret = "whsec_secret_from_the_environment_9a8b";
    let from_env = check(Some(env_secret), &[]);
    assert!(from_env.contains("webhook_secret = [\"<redacted>\"] # environment"), "{from_env}");
    for out in [&plain, &flagged, &from_env] {
        assert!(!out.contains(file_secret) && !out.contains(env_secret), "a secret printed: {out}");
    }

    // The example the README and deploy/ point at is valid for every command it configures.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for command in ["serve", "ingress", "project"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_paystate"))
            .args(["config", "check", command, "--config", "deploy/paystate.toml"])
            .current_dir(&root)
            .env("STRIPE_WEBHOOK_SECRET", env_secret)
            .output()
            .expect("config check");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("log_format = \"json\" # config file"), "{command}: {text}");
    }

    // Unknown keys and tables are refused by name.
    for (bad, named) in [
        ("bogus_key = 1\n", "unknown key `bogus_key`"),
        ("[serve]\nrate = 5\n", "unknown key `rate` in [serve]"),
        ("[simulate]\npayments = 5\n", "unknown table [simulate]"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, bad).expect("bad config");
        let (_, err, ok) = paystate(&["serve", "--config", path.to_str().expect("utf-8")]);
        assert!(!ok && err.contains(named), "{bad:?}: {err}");
    }

    // The file's settings are what `serve` runs with: its listeners, data directory and secret.
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_paystate"))
        .args(["serve", "--config", cfg])
        .env_remove("STRIPE_WEBHOOK_SECRET")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let mut line = String::new();
    std::io::BufReader::new(serve.stdout.take().expect("stdout")).read_line(&mut line).expect("address line");
    let url = line.split("webhooks on ").nth(1).and_then(|s| s.split(',').next()).expect("address").to_owned();
    let (out, err, ok) = paystate(&["simulate", "--url", &url, "--secret", file_secret, "--payments", "5"]);
    let _ = serve.kill();
    let logs = serve.wait_with_output().expect("serve's logs");
    let logs = String::from_utf8_lossy(&logs.stderr);
    assert!(ok, "signed with the file's secret: {out}{err}");
    assert!(logs.contains("serving"), "{logs}");
    assert!(!logs.contains('\x1b'), "colour codes in logs that go to a pipe: {logs:?}");
    assert!(dir.path().join("data").is_dir(), "the file's data_dir");
}

/// A port in use is refused with what to do, before the data directory is created.
#[test]
fn a_port_in_use_is_refused_before_anything_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("listen"); // held until the end
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf-8");
    for (listen, admin) in [(addr.as_str(), "127.0.0.1:0"), ("127.0.0.1:0", addr.as_str())] {
        let (_, err, ok) = paystate(&[
            "serve",
            "--data-dir",
            data_arg,
            "--webhook-secret",
            "whsec_cli_test",
            "--listen",
            listen,
            "--admin-listen",
            admin,
        ]);
        assert!(!ok, "{err}");
        assert!(err.contains(&format!("cannot listen on {addr}: another process listens there")), "{err}");
        assert!(!data.exists(), "a refused start creates no data directory");
    }
    drop(taken);
}

/// `export` keeps an existing file unless `--force`, and a reader that goes away (`| head`) ends it
/// quietly, with success.
#[test]
fn export_keeps_existing_files_and_ends_quietly_when_its_reader_goes_away() {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, data) = (dir.path().join("log"), dir.path().join("data"));
    let (log_arg, data_arg) = (log.to_str().expect("utf-8"), data.to_str().expect("utf-8"));
    let (out, err, ok) =
        paystate(&["simulate", "--to-log", log_arg, "--secret", "whsec_cli_test", "--payments", "600"]);
    assert!(ok, "{out}{err}");
    let (out, err, ok) = paystate(&["replay", "--source", log_arg, "--out", data_arg]);
    assert!(ok, "{out}{err}");

    let file = dir.path().join("payments.jsonl");
    let file_arg = file.to_str().expect("utf-8");
    let (_, err, ok) = paystate(&["export", "--data-dir", data_arg, "--out", file_arg]);
    assert!(ok, "{err}");
    let written = std::fs::read(&file).expect("export");
    assert!(written.len() > 256 << 10, "more than a pipe holds: {} bytes", written.len());
    std::fs::write(&file, b"kept").expect("overwrite");
    let (_, err, ok) = paystate(&["export", "--data-dir", data_arg, "--out", file_arg]);
    assert!(!ok && err.contains("exists: give --force to overwrite it"), "{err}");
    assert_eq!(std::fs::read(&file).expect("file"), b"kept");
    let (_, err, ok) = paystate(&["export", "--data-dir", data_arg, "--out", file_arg, "--force"]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&file).expect("file"), written, "overwritten with --force");

    for format in ["jsonl", "csv"] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_paystate"))
            .args(["export", "--data-dir", data_arg, "--format", format])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("export");
        let mut head = [0u8; 100];
        child.stdout.take().expect("stdout").read_exact(&mut head).expect("the first bytes");
        // The pipe's reader is gone (dropped above) while most of the output is still to come.
        let done = child.wait_with_output().expect("export");
        let err = String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success(), "{format}: {:?} {err}", done.status);
        assert!(!err.contains("Broken pipe") && !err.contains("Error"), "{format}: {err}");
    }
}

/// `verify` prints the first failures and says how many it left out.
#[test]
fn verify_says_when_it_cuts_its_list_of_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, data) = (dir.path().join("log"), dir.path().join("data"));
    let truth = dir.path().join("truth.jsonl");
    let (log_arg, data_arg, truth_arg) =
        (log.to_str().expect("utf-8"), data.to_str().expect("utf-8"), truth.to_str().expect("utf-8"));
    let (out, err, ok) = paystate(&[
        "simulate",
        "--to-log",
        log_arg,
        "--secret",
        "whsec_cli_test",
        "--payments",
        "30",
        "--truth",
        truth_arg,
    ]);
    assert!(ok, "{out}{err}");
    let (out, err, ok) = paystate(&["replay", "--source", log_arg, "--out", data_arg]);
    assert!(ok, "{out}{err}");
    // A truth file that gives every payment a lifecycle none has: 30 failures.
    let lied: String = std::fs::read_to_string(&truth)
        .expect("truth")
        .lines()
        .map(|l| {
            let mut t: serde_json::Value = serde_json::from_str(l).expect("truth line");
            t["lifecycle"] = "nonexistent_lifecycle".into();
            format!("{t}\n")
        })
        .collect();
    std::fs::write(&truth, lied).expect("truth");
    let (out, _, ok) = paystate(&["verify", "--truth", truth_arg, "--data-dir", data_arg]);
    assert!(!ok, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("FAIL ")).count(), 20, "{out}");
    assert!(out.contains("… 10 more failures not shown (the first 20 are)"), "{out}");
    assert!(out.trim_end().ends_with("0 passed, 30 failed"), "{out}");
}

/// `show` finds a payment by any id it carries (a charge, a dispute, an event), says when it exists only
/// under a Connect account, and prints its history with UTC times.
#[test]
fn show_finds_a_payment_by_its_charge_dispute_or_event_and_names_the_connect_account() {
    let dir = tempfile::tempdir().expect("tempdir");
    build_store(dir.path(), &golden_bodies(), 64);
    let data = dir.path().to_str().expect("utf-8");
    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/2024-06-20..2025-03-31.basil");
    let events = |scenario: &str| -> Vec<serde_json::Value> {
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(golden.join(format!("{scenario}.json"))).expect("golden"))
                .expect("json");
        doc["events"].as_array().expect("events").clone()
    };
    let object_of = |evs: &[serde_json::Value], prefix: &str| -> String {
        evs.iter()
            .filter_map(|e| e["data"]["object"]["id"].as_str())
            .find(|id| id.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} object"))
            .to_owned()
    };
    let disputed = events("dispute_lost");
    let (pi, du, ch) = (object_of(&disputed, "pi_"), object_of(&disputed, "du_"), object_of(&disputed, "ch_"));
    let evt = disputed.last().and_then(|e| e["id"].as_str()).expect("an event id").to_owned();
    for id in [&pi, &du, &ch, &evt] {
        let (out, err, ok) = paystate(&["show", id, "--data-dir", data]);
        assert!(ok, "show {id}: {err}");
        assert!(out.starts_with(&format!("payment   {pi}\n")), "show {id}: {out}");
        assert!(out.contains("disputed  yes"), "show {id}: {out}");
    }
    let (out, _, _) = paystate(&["show", &pi, "--data-dir", data]);
    // The actions emitted, each named by its kind: those Stripe's documented flow calls for.
    let golden_doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden.join("dispute_lost.json")).expect("golden")).expect("json");
    let want = golden_doc["expect"]["actions"].as_object().expect("expected actions");
    let total: u64 = want.values().filter_map(serde_json::Value::as_u64).sum();
    let listed: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("actions emitted: "))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(out.contains(&format!("actions emitted: {total}\n")), "{out}");
    for (kind, n) in want {
        let n = usize::try_from(n.as_u64().expect("count")).expect("small");
        assert_eq!(listed.iter().filter(|k| *k == kind).count(), n, "{kind} in {out}");
    }
    assert_eq!(listed.len(), usize::try_from(total).expect("small"), "{out}");
    let first = out.lines().find(|l| l.contains("payment_intent.created")).expect("history line");
    assert!(first.trim_start().starts_with("20") && first.contains("T") && first.contains("Z "), "{first}");

    let connect = events("connect_success");
    let (cpi, account) = (object_of(&connect, "pi_"), connect[0]["account"].as_str().expect("account").to_owned());
    let (_, err, ok) = paystate(&["show", &cpi, "--data-dir", data]);
    assert!(!ok, "{err}");
    assert!(err.contains(&format!("exists under the Connect account {account}: add --account {account}")), "{err}");
    let (out, err, ok) = paystate(&["show", &cpi, "--account", &account, "--data-dir", data]);
    assert!(ok && out.contains(&cpi), "{err}");
    let (_, err, ok) = paystate(&["show", &pi, "--account", &account, "--data-dir", data]);
    assert!(!ok && err.contains(&format!("{pi} is the platform account's own payment: drop --account")), "{err}");
    let (_, err, ok) = paystate(&["show", "re_nothing_like_it", "--data-dir", data]);
    assert!(!ok && err.contains("nor a charge, refund, dispute, fraud warning or event of that id"), "{err}");
}

/// `simulate` dates its payments in the past by default (the newest event an hour before now), and
/// `--start` moves the same payments (same ids, same spacing) to a given time; `--lose` leaves events out
/// of the deliveries but not out of `--events`.
#[test]
fn simulated_payments_are_in_the_past_or_where_start_puts_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let events_of = |name: &str, extra: &[&str]| -> Vec<(String, i64)> {
        let events = dir.path().join(format!("{name}.jsonl"));
        let corpus = dir.path().join(name);
        let mut args = vec!["simulate", "--secret", "whsec_cli_test", "--payments", "30", "--seed", "4"];
        args.extend_from_slice(extra);
        let (events_arg, corpus_arg) = (events.to_str().expect("utf-8"), corpus.to_str().expect("utf-8"));
        args.extend(["--events", events_arg, "--corpus", corpus_arg, "--corpus-parts", "1"]);
        let (out, err, ok) = paystate(&args);
        assert!(ok, "{err}");
        assert!(out.starts_with("corpus "), "{out}");
        std::fs::read_to_string(&events)
            .expect("events")
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("one event per line");
                (v["id"].as_str().expect("id").to_owned(), v["created"].as_i64().expect("created"))
            })
            .collect()
    };
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs())
            .expect("secs");
    let default = events_of("default", &[]);
    let newest = default.iter().map(|(_, c)| *c).max().expect("events");
    assert!(newest <= now - 3600 + 5 && newest > now - 3600 - 60, "newest event {} s before now", now - newest);
    assert!(default.windows(2).all(|w| w[0].1 <= w[1].1), "in creation order");

    let start = 1_788_220_800; // 2026-09-01T00:00:00Z
    let moved = events_of("moved", &["--start", "2026-09-01T00:00:00Z"]);
    let ids = |e: &[(String, i64)]| e.iter().map(|(id, _)| id.clone()).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(ids(&moved), ids(&default), "the same payments");
    let oldest = moved.iter().map(|(_, c)| *c).min().expect("events");
    assert!((start..start + 86_400 + 3600).contains(&oldest), "the first payment starts within the day after --start");
    let shift = default[0].1 - moved[0].1;
    let by_id: std::collections::BTreeMap<_, _> = moved.iter().cloned().collect();
    assert!(default.iter().all(|(id, c)| by_id[id] + shift == *c), "every event moved by the same {shift} s");

    // Lost deliveries: fewer in the corpus, all in --events.
    let lossy = events_of("lossy", &["--lose", "0.5", "--duplicates", "0"]);
    assert_eq!(ids(&lossy), ids(&default));
    let corpus = std::fs::read(dir.path().join("lossy.0")).expect("corpus");
    let delivered = corpus.split(|b| *b == b'\n').filter(|l| l.starts_with(b"t=")).count();
    assert!(delivered > lossy.len() / 4 && delivered < lossy.len() * 3 / 4, "{delivered} of {} delivered", lossy.len());
}

/// `dead-letters list` names each record the projector could not use with its reason; `retry` folds them
/// again and says what resolved and what is still dead.
#[test]
fn dead_letters_are_listed_and_retried_from_a_data_directory() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut bodies = common::golden_bodies();
    let mut broken: serde_json::Value = serde_json::from_slice(&bodies[0]).expect("json");
    broken["id"] = "evt_cli_broken".into();
    broken["type"] = "payment_intent.created".into();
    broken["data"]["object"] = serde_json::json!({"id": "pi_cli_broken", "object": "payment_intent"});
    bodies.push(serde_json::to_vec(&broken).expect("json"));
    common::build_store(dir.path(), &bodies, 64);
    let data = dir.path().to_str().expect("utf-8");
    let (out, err, ok) = paystate(&["dead-letters", "list", "--data-dir", data]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.last(), Some(&"1 dead letters"), "{out}");
    assert!(lines[0].contains("evt_cli_broken") && lines[0].contains("payment_intent.created"), "{out}");
    assert!(lines[0].contains("unmappable"), "the reason: {out}");
    let (out, err, ok) = paystate(&["dead-letters", "retry", "--data-dir", data]);
    assert!(ok, "{err}");
    assert!(out.contains("still dead") && out.contains("evt_cli_broken"), "{out}");
    assert_eq!(out.lines().last(), Some("0 resolved, 1 still dead"), "{out}");
    let (_, err, ok) = paystate(&["dead-letters", "list"]);
    assert!(!ok && err.contains("--data-dir"), "{err}");
}

/// `show`, `export` and `digest` with `--admin` read a running `serve` (which holds the data directory's
/// lock) and print exactly what the same commands print from the data directory once it stopped.
#[test]
fn show_export_and_digest_read_a_running_serve_as_they_read_its_data_directory() {
    const TOKEN: &str = "cli-admin-token-0123456789";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = common::filled_serve(dir.path(), TOKEN, 40, 11, &[]);
    let token_file = dir.path().join("token");
    let (tf, data) = (token_file.to_str().expect("utf-8"), dir.path().join("data"));
    let data = data.to_str().expect("utf-8");
    let run = |args: &[&str]| {
        let mut all = vec!["--admin-token-file", tf];
        all.extend_from_slice(args);
        let (out, err, ok) = paystate(&all);
        assert!(ok, "{args:?}: {err}");
        out
    };
    let (_, err, ok) = paystate(&["digest", "--data-dir", data]);
    assert!(!ok && err.contains("is `paystate serve` running on it?"), "the lock is held: {err}");
    let (_, err, ok) = paystate(&["show", "pi_any", "--admin", &server.admin]);
    assert!(!ok && err.contains("answered 401"), "no token: {err}");

    let admin = server.admin.clone();
    let csv_file = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();
    let (remote_csv, local_csv) = (csv_file("remote.csv"), csv_file("local.csv"));
    let remote_payments = run(&["export", "--admin", &admin]);
    run(&["export", "--admin", &admin, "--what", "transitions", "--format", "csv", "--out", &remote_csv]);
    let remote_digest = run(&["digest", "--admin", &admin]);
    let payments: Vec<serde_json::Value> =
        remote_payments.lines().map(|l| serde_json::from_str(l).expect("a payment per line")).collect();
    assert!(payments.len() >= 40, "{} payments", payments.len());
    assert!(remote_digest.trim_end().ends_with(&format!("payments {}", payments.len())), "{remote_digest}");
    // Shown by their own id (and account), by their charge, and as of their first event.
    let mut shows: Vec<Vec<String>> = Vec::new();
    for p in payments.iter().filter(|p| p["disputed"] == true || !p["account"].is_null()).take(4) {
        let mut args = vec!["show".to_owned(), p["id"].as_str().expect("id").to_owned()];
        if let Some(a) = p["account"].as_str() {
            args.extend(["--account".to_owned(), a.to_owned()]);
        }
        shows.push(args.clone());
        args.extend(["--as-of".to_owned(), p["first_event_at"].as_i64().expect("first event").to_string()]);
        shows.push(args);
        if let (Some(ch), None) = (p["latest_charge"].as_str(), p["account"].as_str()) {
            shows.push(vec!["show".to_owned(), ch.to_owned()]);
        }
    }
    assert!(shows.len() >= 4, "{shows:?}");
    let shown = |source: &[&str]| -> Vec<String> {
        shows
            .iter()
            .map(|args| {
                let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
                all.extend_from_slice(source);
                run(&all)
            })
            .collect()
    };
    let remote_shows = shown(&["--admin", &admin]);
    assert!(server.terminate().success());

    assert_eq!(run(&["export", "--data-dir", data]), remote_payments);
    run(&["export", "--data-dir", data, "--what", "transitions", "--format", "csv", "--out", &local_csv]);
    let (remote_rows, local_rows) =
        (std::fs::read_to_string(&remote_csv).expect("csv"), std::fs::read_to_string(&local_csv).expect("csv"));
    assert_eq!(remote_rows, local_rows);
    let events: u64 = payments.iter().filter_map(|p| p["events_applied"].as_u64()).sum();
    assert_eq!(local_rows.lines().count() as u64, events + 1, "one row per applied event and a header");
    assert_eq!(run(&["digest", "--data-dir", data]), remote_digest);
    let local_shows = shown(&["--data-dir", data]);
    assert_eq!(local_shows, remote_shows);
    assert!(remote_shows.iter().any(|s| s.starts_with("as of ")), "{remote_shows:?}");
}
