//! Prometheus text exposition, by hand: a few counters and one histogram do not justify a registry.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the append-latency histogram buckets.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];

/// Webhook outcomes, as label values.
pub const OUTCOMES: [&str; 6] =
    ["accepted", "rejected", "too_large", "unsupported_media_type", "other_mode", "unavailable"];

/// Counters shared by the handlers.
#[derive(Debug, Default)]
pub struct Metrics {
    webhooks: [AtomicU64; 6],
    append_buckets: [AtomicU64; 12],
    append_count: AtomicU64,
    append_sum_us: AtomicU64,
}

impl Metrics {
    /// Counts one webhook with `outcome` (one of [`OUTCOMES`]).
    pub fn webhook(&self, outcome: &str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.webhooks[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records one durable append's latency.
    pub fn append_latency(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.append_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.append_count.fetch_add(1, Ordering::Relaxed);
        self.append_sum_us.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Writes the ingress metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP paystate_webhooks_total Webhook deliveries by outcome.");
        let _ = writeln!(out, "# TYPE paystate_webhooks_total counter");
        for (i, o) in OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "paystate_webhooks_total{{outcome=\"{o}\"}} {}",
                self.webhooks[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP paystate_append_seconds Time from verified webhook to durable append.");
        let _ = writeln!(out, "# TYPE paystate_append_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "paystate_append_seconds_bucket{{le=\"{b}\"}} {}",
                self.append_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.append_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "paystate_append_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.append_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "paystate_append_seconds_sum {sum}");
        let _ = writeln!(out, "paystate_append_seconds_count {count}");
    }
}
