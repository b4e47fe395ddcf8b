//! Prometheus text exposition, by hand: a few counters and one histogram do not justify a registry.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the append-latency histogram buckets.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];

/// Webhook outcomes, as label values.
pub const OUTCOMES: [&str; 8] = [
    "accepted",
    "rejected",
    "too_large",
    "unsupported_media_type",
    "other_mode",
    "unavailable",
    "busy",
    "body_timeout",
];

/// Counters shared by the handlers.
#[derive(Debug, Default)]
pub struct Metrics {
    webhooks: [AtomicU64; OUTCOMES.len()],
    append_buckets: [AtomicU64; 12],
    append_count: AtomicU64,
    append_sum_us: AtomicU64,
    /// When the log last failed an append (unix ms), unless one succeeded since; 0: none (for `/readyz`).
    append_failed_ms: AtomicU64,
    /// Why the last failed append failed.
    append_failed_why: std::sync::Mutex<String>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
}

/// What the process looked like over the last hour, one sample every [`SAMPLE_EVERY`] (the dashboard's
/// graphs): webhooks accepted so far and the projector's lag at each moment.
#[derive(Debug, Clone, Default)]
pub struct Timeline(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Sample>>>);

/// One moment of a [`Timeline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sample {
    /// Unix seconds.
    pub at: i64,
    /// Webhooks accepted since the process started.
    pub webhooks_accepted: u64,
    /// Log records not yet applied by the projector.
    pub lag: u64,
}

/// How often a [`Timeline`] is sampled.
pub const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Samples kept: an hour.
const SAMPLES_KEPT: usize = 360;

impl Timeline {
    /// Adds a sample, forgetting those older than an hour.
    pub fn push(&self, sample: Sample) {
        let mut samples = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect()
    }
}

impl Metrics {
    /// Webhooks accepted so far.
    pub fn accepted(&self) -> u64 {
        self.webhooks[0].load(Ordering::Relaxed)
    }

    /// Counts one webhook with `outcome` (one of [`OUTCOMES`]).
    pub fn webhook(&self, outcome: &str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.webhooks[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records that the log failed an append (it could not take the write), and why.
    pub fn append_failed(&self, why: &str) {
        why.clone_into(&mut self.append_failed_why.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        self.append_failed_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// How long ago the log failed an append, if it did and none succeeded since.
    pub fn append_failing_for(&self) -> Option<std::time::Duration> {
        match self.append_failed_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(std::time::Duration::from_millis(unix_ms().saturating_sub(at))),
        }
    }

    /// Why the last failed append failed.
    pub fn append_failure(&self) -> String {
        self.append_failed_why.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Records one durable append's latency (the log took the write).
    pub fn append_latency(&self, d: std::time::Duration) {
        // Read first: under load every append lands here, and a store would bounce the cache line.
        if self.append_failed_ms.load(Ordering::Relaxed) != 0 {
            self.append_failed_ms.store(0, Ordering::Relaxed);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_append_is_remembered_until_one_succeeds() {
        let m = Metrics::default();
        assert_eq!(m.append_failing_for(), None);
        m.append_failed("disk full");
        assert!(m.append_failing_for().is_some_and(|d| d < std::time::Duration::from_secs(5)));
        m.append_latency(std::time::Duration::from_millis(1));
        assert_eq!(m.append_failing_for(), None);
    }

    #[test]
    fn every_outcome_the_handlers_count_is_rendered() {
        let m = Metrics::default();
        for o in ["busy", "body_timeout", "accepted"] {
            m.webhook(o);
        }
        let mut out = String::new();
        m.render(&mut out);
        for o in ["busy", "body_timeout", "accepted"] {
            assert!(out.contains(&format!("paystate_webhooks_total{{outcome=\"{o}\"}} 1")), "{o}: {out}");
        }
        assert!(out.contains("paystate_webhooks_total{outcome=\"rejected\"} 0"), "{out}");
    }
}
