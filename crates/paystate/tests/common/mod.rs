//! Helpers shared by the binary's integration tests.
#![allow(dead_code)] // each test file uses a subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_paystate");

/// `paystate serve` on `data` with webhook secret `secret`, listening on ports the system picks (
/// [`Server::spawn`] reads them from its first line) and taking no admin token from the environment; the
/// caller adds flags, the environment and stderr.
pub fn serve_command(data: &Path, secret: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--data-dir"])
        .arg(data)
        .args(["--webhook-secret", secret, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env_remove("PAYSTATE_ADMIN_TOKEN");
    cmd
}

/// What `paystate verify` said.
pub struct Verified {
    /// It exited 0 (every payment passed).
    pub passed: bool,
    /// Its stdout: a line per failure, then `N passed, M failed`.
    pub stdout: String,
}

impl Verified {
    /// The verdict line (`N passed, M failed`).
    pub fn verdict(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }
}

/// `paystate verify --truth TRUTH ARGS…` (its stderr goes to the test's).
pub fn verify(truth: &Path, args: &[&str]) -> Verified {
    let out = Command::new(BIN)
        .arg("verify")
        .arg("--truth")
        .arg(truth)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("verify");
    Verified { passed: out.status.success(), stdout: String::from_utf8_lossy(&out.stdout).into_owned() }
}

/// A running `paystate serve` (or another command that announces its addresses on its first line of
/// stdout), killed when dropped: a failing test must not leave it running (it would hold the test's output
/// pipes open).
pub struct Server {
    /// The process.
    pub child: Child,
    /// `http://…/webhooks/stripe`.
    pub public: String,
    /// `http://…` of the admin listener.
    pub admin: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Spawns `cmd` (stdout piped here) and reads the bound addresses from its first line of output.
    pub fn spawn(cmd: &mut Command) -> Server {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read address line");
        let public =
            line.split("webhooks on ").nth(1).and_then(|s| s.split(',').next()).expect("public address").to_owned();
        let admin = line.split("admin on ").nth(1).map(|s| s.trim().to_owned()).expect("admin address");
        Server { child, public, admin }
    }

    /// SIGTERM, then the exit status (within 60 s).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "did not stop within 60 s of SIGTERM");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Runs the binary from the repository root; returns stdout, stderr and success.
pub fn paystate(args: &[&str]) -> (String, String, bool) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_paystate")).args(args).current_dir(root).output().expect("runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// Writes `bodies` into a new embedded log in `dir` and projects it with `batch_max` records per batch.
pub fn build_store(dir: &std::path::Path, bodies: &[Vec<u8>], batch_max: usize) {
    let store = paystate_store::Store::open(dir, 4).expect("store");
    let appender = store.log.start_appender();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for body in bodies {
        let parsed = paystate_stripe::parse_event(body).expect("parse");
        let (partition, record) = paystate_ingress::log_record(&parsed, body.clone(), String::new(), 0, 4);
        rt.block_on(appender.append(partition, &record)).expect("append");
    }
    appender.close();
    paystate_projector::Projector::new(store.log.clone(), store.projection.clone(), batch_max)
        .catch_up()
        .expect("project");
}

/// The events of every golden scenario of one set (an upgrade from 2024-06-20 to 2025-03-31.basil while the
/// payments are under way, so the log mixes versions). Each set reuses the same payment ids.
pub fn golden_bodies() -> Vec<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/2024-06-20..2025-03-31.basil");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut bodies = Vec::new();
    for f in files {
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).expect("read")).expect("json");
        for ev in doc["events"].as_array().expect("events") {
            bodies.push(serde_json::to_vec(ev).expect("body"));
        }
    }
    bodies
}

/// `GET url` over a plain TCP connection (HTTP/1.1, `Connection: close`): status and body.
pub fn http_get(url: &str) -> (u16, String) {
    http_get_with(url, None)
}

/// [`http_get`] with an `Authorization` header when `authorization` is given.
pub fn http_get_with(url: &str, authorization: Option<&str>) -> (u16, String) {
    http_request("GET", url, authorization)
}

/// `method url` with no body (and an `Authorization` header when given): status and body.
pub fn http_request(method: &str, url: &str, authorization: Option<&str>) -> (u16, String) {
    let (code, _, body) = http_exchange(method, url, authorization);
    (code, body)
}

/// GET `url`: status, the value of response header `name` (if sent) and body.
#[allow(dead_code)] // not every test crate reads headers
pub fn http_get_header(url: &str, name: &str) -> (u16, Option<String>, String) {
    let (code, head, body) = http_exchange("GET", url, None);
    let value = head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    });
    (code, value, body)
}

/// `method url` with no body: status, the response's header lines and body.
fn http_exchange(method: &str, url: &str, authorization: Option<&str>) -> (u16, String, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let length = if method == "GET" { "" } else { "Content-Length: 0\r\n" };
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}{length}Connection: close\r\n\r\n").expect("write");
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).expect("read");
    let buf = String::from_utf8_lossy(&bytes); // a body may be binary (the log's records)
    let code = buf.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = buf.split_once("\r\n\r\n").map(|(h, b)| (h.to_owned(), b.to_owned())).unwrap_or_default();
    (code, head, body)
}

/// `paystate serve` in `dir` behind admin `token` (ports the system picks, `extra` flags), filled by
/// `simulate` with `payments` payments of `seed`, and caught up (within 60 s).
pub fn filled_serve(dir: &std::path::Path, token: &str, payments: usize, seed: u64, extra: &[&str]) -> Server {
    const SECRET: &str = "whsec_filled_serve_secret";
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).expect("token");
    let server = Server::spawn(
        serve_command(&dir.join("data"), SECRET)
            .arg("--admin-token-file")
            .arg(&token_file)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit()),
    );
    let out = Command::new(BIN)
        .args(["simulate", "--url", &server.public, "--secret", SECRET])
        .args(["--payments", &payments.to_string(), "--seed", &seed.to_string()])
        .env("RUST_LOG", "warn")
        .output()
        .expect("simulate");
    assert!(out.status.success(), "simulate: {}", String::from_utf8_lossy(&out.stderr));
    let bearer = format!("Bearer {token}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, body) = http_get_with(&format!("{}/v1/status", server.admin), Some(&bearer));
        if serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v["caught_up"] == true) {
            return server;
        }
        assert!(std::time::Instant::now() < deadline, "the projector did not catch up within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// An Apache Kafka cluster started by `tests/kafka/cluster` (which `tests/run` has installed) under
/// `target/kafka-runs/`; stopped when dropped, its directory (each node's `server.log`) kept when the test
/// failed.
pub struct Kafka {
    /// The cluster's directory.
    pub dir: PathBuf,
    /// `host:port,…`.
    pub brokers: String,
}

impl Kafka {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/kafka/cluster")
    }

    /// Starts a cluster of `nodes` named `name` (its directory under `target/kafka-runs/`).
    pub fn start(name: &str, nodes: u32) -> Kafka {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/kafka-runs")
            .join(format!("{name}-{}", std::process::id()));
        let out = Command::new(Self::script())
            .arg("start")
            .arg(&dir)
            .arg(nodes.to_string())
            .output()
            .expect("run tests/kafka/cluster (needs java and mvn; tests/run installs Kafka)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "Apache Kafka did not start (logs under {}):\n{stdout}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let brokers = stdout
            .lines()
            .last()
            .and_then(|l| l.strip_prefix("brokers "))
            .unwrap_or_else(|| panic!("tests/kafka/cluster printed no brokers line: {stdout}"))
            .to_owned();
        Kafka { dir, brokers }
    }

    /// Runs `tests/kafka/cluster <what> <dir> <args…>`.
    pub fn control(&self, what: &str, args: &[&str]) {
        let out = Command::new(Self::script()).arg(what).arg(&self.dir).args(args).output().expect("cluster script");
        assert!(out.status.success(), "cluster {what}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Deletes `partition` of `topic` before `offset`, as retention would (kafka-delete-records).
    pub fn delete_records(&self, topic: &str, partition: u32, offset: u64) {
        self.control("delete-records", &[&self.brokers, topic, &partition.to_string(), &offset.to_string()]);
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = Command::new(Self::script()).arg("stop").arg(&self.dir).status();
        if std::thread::panicking() {
            eprintln!("Kafka's logs are kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
