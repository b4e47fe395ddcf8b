//! The data directory on a small filesystem that fills up (a size-capped tmpfs this test mounts: it runs
//! as root, as `.ci/run` does, and fails rather than skips otherwise), while `simulate` sends:
//! - the ingress answers 503 (never 200 for an event it could not make durable) and `/readyz` says why:
//!   below `--min-free-disk-mb` appends are refused without writing and the projector waits, so that sled
//!   never meets a full disk (it does not recover from a failed write in-process: reads then hang);
//! - once the filesystem is enlarged, ingress and projector resume by themselves: simulate finishes, every
//!   acknowledged event is in the log, `verify` ends "N passed, 0 failed", and after a SIGTERM the data
//!   directory reopens with the digest of its replay (nothing stored is corrupted).
//! - the filesystem remounted read-only: Linux refuses that while files are open for writing (EBUSY), so
//!   the read-only case is a serve started on it: it refuses to start, naming the directory, and changes
//!   nothing; remounted read-write, it starts and verifies.

mod common;

use common::{http_get, Server, BIN};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_disk_test_secret";

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (this test needs root, as .ci/run has): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at.to_owned())
    }

    fn remount(&self, options: &str) {
        let out =
            Command::new("mount").args(["-o", &format!("remount,{options}")]).arg(&self.0).output().expect("mount");
        assert!(out.status.success(), "remount {options}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A child process killed if the test fails before it has finished.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// serve on `data`, keeping 2 MiB free (the default, 64 MiB, is more than the test's filesystem).
fn serve(data: &Path) -> Server {
    Server::spawn(
        common::serve_command(data, SECRET)
            .args(["--min-free-disk-mb", "2"])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null()),
    )
}

fn simulate(url: &str, payments: usize, dir: &Path) -> Child {
    Command::new(BIN)
        .args(["simulate", "--url", url, "--secret", SECRET, "--payments", &payments.to_string(), "--seed", "17"])
        .args(["--concurrency", "4", "--timeout-ms", "5000"])
        .arg("--truth")
        .arg(dir.join("truth.jsonl"))
        .arg("--acked")
        .arg(dir.join("acked.txt"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("simulate")
}

fn unavailable(admin: &str) -> u64 {
    let (_, text) = http_get(&format!("{admin}/metrics"));
    text.lines()
        .find_map(|l| l.strip_prefix("paystate_webhooks_total{outcome=\"unavailable\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `verify ARGS` against the truth `simulate` wrote in `dir`: its verdict line.
fn verify(args: &[&str], dir: &Path) -> String {
    common::verify(&dir.join("truth.jsonl"), args).verdict().to_owned()
}

#[test]
fn a_full_disk_refuses_with_503_and_both_resume_once_space_is_back() {
    let dir = tempfile::tempdir().expect("tmp");
    // Enough for about a third of the run's records and the projection, with the 2 MiB reserve.
    let mount = Mount::tmpfs(&dir.path().join("fs"), "6m");
    let data = mount.0.join("data");
    let server = serve(&data);
    let payments = 1200;
    let mut sim = KillOnDrop(Some(simulate(&server.public, payments, dir.path())));

    // Full: appends fail, the ingress answers 503, /readyz says why.
    let deadline = Instant::now() + Duration::from_secs(120);
    while unavailable(&server.admin) < 20 {
        assert!(Instant::now() < deadline, "the filesystem never filled");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, why) = http_get(&format!("{}/readyz", server.admin));
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("the log failed the last append") && why.contains("disk nearly full"), "{why}");
    let (_, status) = http_get(&format!("{}/v1/status", server.admin));
    let applied_while_full = serde_json::from_str::<Value>(&status).expect("status")["totals"]["applied"].clone();

    // Space is back: both resume without a restart.
    mount.remount("size=256m");
    let out = sim.0.take().expect("simulate").wait_with_output().expect("simulate");
    assert!(out.status.success(), "simulate: {}", String::from_utf8_lossy(&out.stdout));
    let deadline = Instant::now() + Duration::from_secs(120);
    let verdict = loop {
        let v = verify(&["--admin", &server.admin], dir.path());
        if v.ends_with(" 0 failed") || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(verdict, format!("{payments} passed, 0 failed"), "applied while full: {applied_while_full}");
    let (code, why) = http_get(&format!("{}/readyz", server.admin));
    assert_eq!(code, 200, "ready again: {why}");
    let mut server = server;
    assert!(server.terminate().success(), "serve exits 0 on SIGTERM after the disk filled");

    // Every acknowledged event is in the log; the directory reopens whole and replays to the live digest.
    let store = paystate_store::Store::open_existing(&data).expect("the data directory reopens");
    let mut logged = BTreeSet::new();
    for p in 0..store.log.partitions() {
        logged.extend(store.log.read_all(p).expect("read").into_iter().map(|(_, r)| r.event_id));
    }
    drop(store);
    let acked = std::fs::read_to_string(dir.path().join("acked.txt")).expect("acked");
    let acked: Vec<&str> = acked.lines().filter(|l| !l.is_empty()).collect();
    assert!(acked.len() > payments * 3, "{} acknowledged", acked.len());
    for id in &acked {
        assert!(logged.contains(*id), "{id} was acknowledged but is not in the log");
    }
    let digest = Command::new(BIN).args(["digest", "--data-dir"]).arg(&data).output().expect("digest");
    let live = String::from_utf8_lossy(&digest.stdout).trim().to_owned();
    assert!(live.ends_with(&format!(" payments {payments}")), "{live}");
    let out = dir.path().join("replayed");
    let replay =
        Command::new(BIN).args(["replay", "--source"]).arg(&data).arg("--out").arg(&out).output().expect("replay");
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    assert_eq!(String::from_utf8_lossy(&replay.stdout).lines().last(), Some(live.as_str()), "replay's digest");

    // Read-only: serve refuses to start, naming the directory, and leaves it as it was.
    mount.remount("ro");
    let refused = common::serve_command(&data, SECRET).output().expect("serve");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "serve started on a read-only filesystem");
    assert!(stderr.contains(data.to_str().expect("utf-8")) && stderr.contains("Read-only file system"), "{stderr}");
    mount.remount("rw");
    let mut server = serve(&data);
    assert_eq!(verify(&["--admin", &server.admin], dir.path()), format!("{payments} passed, 0 failed"));
    assert!(server.terminate().success());
}
