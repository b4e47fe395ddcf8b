//! Writes the golden scenario files `tests/golden/<api version>/<scenario>.json` and prints each timeline.
//!
//! The events come from `paystate_testkit::scenario`, rendered at each API version of
//! [`GOLDEN_VERSIONS`] (and one upgrade while the payment is under way), with a fixed seed. The
//! expectations are the scenario's `Truth`, written by hand in `scenario.rs` from Stripe's documented
//! behaviour (the same payment has the same truth at every version): never the state machine's output.
//!
//! `cargo run -p paystate-testkit --example write_golden -- tests/golden`

use paystate_testkit::scenario::{generate_with, Scenario};
use paystate_testkit::synth::{Rng, Versions};
use serde_json::json;

/// One version per era of docs/API-VERSIONS.md.
const GOLDEN_VERSIONS: [&str; 4] = ["2020-08-27", "2024-06-20", "2024-12-18.acacia", "2025-10-29.clover"];

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "tests/golden".into());
    let t0 = 1_718_900_000;
    let mut sets: Vec<(String, Versions)> =
        GOLDEN_VERSIONS.iter().map(|v| ((*v).to_owned(), Versions::single(v))).collect();
    // An endpoint upgraded a day into the payments: refunds, disputes and settlements come at basil.
    let upgrade = Versions { before: "2024-06-20".into(), upgrade: Some((t0 + 86_400, "2025-03-31.basil".into())) };
    sets.push(("2024-06-20..2025-03-31.basil".into(), upgrade));
    for (label, versions) in sets {
        let sub = format!("{dir}/{label}");
        std::fs::create_dir_all(&sub)?;
        for (i, s) in Scenario::ALL.into_iter().enumerate() {
            let mut rng = Rng::new(42 + i as u64);
            let (events, truth) = generate_with(s, &mut rng, t0, &versions);
            let name = s.name();
            println!("{label} {name}");
            for e in &events {
                let status = e.json["data"]["object"]["status"].as_str().unwrap_or("-");
                println!("  +{:<8} {:<40} {:<24} {}", e.created - t0, e.event_type, status, e.id);
            }
            let doc = json!({
                "scenario": name,
                "api_version": label,
                "description": format!("{s:?} at {label}: events in the order Stripe emits them"),
                "events": events.iter().map(|e| &e.json).collect::<Vec<_>>(),
                "expect": truth,
            });
            std::fs::write(format!("{sub}/{name}.json"), serde_json::to_string_pretty(&doc)? + "\n")?;
        }
    }
    Ok(())
}
