//! Helpers shared by the binary's integration tests.
#![allow(dead_code)] // each test file uses a subset

use std::path::PathBuf;
use std::process::Command;

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
