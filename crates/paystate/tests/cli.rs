//! The `paystate` binary as a user runs it.

use std::path::PathBuf;
use std::process::Command;

fn paystate(args: &[&str]) -> (String, String, bool) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_paystate")).args(args).current_dir(root).output().expect("runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

fn payment_lines(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.starts_with("{\"payment\"")).collect()
}

#[test]
fn fold_prints_the_same_states_whatever_the_order() {
    let files = [
        "fold",
        "tests/golden/partial_refunds.json",
        "tests/golden/dispute_lost.json",
        "tests/golden/decline_final.json",
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
