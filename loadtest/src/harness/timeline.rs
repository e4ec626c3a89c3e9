//! Per-second figures of a run: what was committed and applied, and the p50 and p99 latencies,
//! for the JSON report and the chart.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::harness::histogram;

/// One second of a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Second {
    /// Seconds since the load started.
    pub(crate) second: u64,
    /// Events committed by the shards during this second.
    pub(crate) committed_per_s: u64,
    /// Events applied to the leaderboards during this second.
    pub(crate) applied_per_s: u64,
    /// p50 of the arrivals due in this second, from their intended time to their commit (ms).
    pub(crate) append_p50_ms: f64,
    /// Their p99 (ms).
    pub(crate) append_p99_ms: f64,
    /// p50 of the probes sent in this second, append → visible in `Watch` (ms).
    pub(crate) end_to_end_p50_ms: f64,
    /// Their p99 (ms).
    pub(crate) end_to_end_p99_ms: f64,
}

#[derive(Default)]
struct Buckets {
    append: Vec<Histogram<u64>>,
    end_to_end: Vec<Histogram<u64>>,
    /// Running totals (committed, applied) at the end of each second.
    totals: Vec<(u64, u64)>,
}

/// Collects the per-second figures of a run that started at `started`.
pub(crate) struct Timeline {
    started: Instant,
    buckets: Mutex<Buckets>,
}

impl Timeline {
    pub(crate) fn new(started: Instant) -> Self {
        Self {
            started,
            buckets: Mutex::default(),
        }
    }

    fn record(
        &self,
        at: Instant,
        took: Duration,
        pick: fn(&mut Buckets) -> &mut Vec<Histogram<u64>>,
    ) {
        let second = at.saturating_duration_since(self.started).as_secs() as usize;
        if let Ok(mut buckets) = self.buckets.lock() {
            let histograms = pick(&mut buckets);
            while histograms.len() <= second {
                match histogram::new() {
                    Ok(h) => histograms.push(h),
                    Err(_) => return,
                }
            }
            histograms[second].saturating_record(took.as_nanos() as u64);
        }
    }

    /// An arrival due at `at` committed `took` after it.
    pub(crate) fn append(&self, at: Instant, took: Duration) {
        self.record(at, took, |b| &mut b.append);
    }

    /// A probe sent at `at` became visible `took` after it.
    pub(crate) fn end_to_end(&self, at: Instant, took: Duration) {
        self.record(at, took, |b| &mut b.end_to_end);
    }

    /// The running totals at the end of the next second.
    pub(crate) fn totals(&self, committed: u64, applied: u64) {
        if let Ok(mut buckets) = self.buckets.lock() {
            buckets.totals.push((committed, applied));
        }
    }

    /// The seconds recorded so far.
    pub(crate) fn seconds(&self) -> Vec<Second> {
        let Ok(buckets) = self.buckets.lock() else {
            return Vec::new();
        };
        let at = |histograms: &[Histogram<u64>], second: usize, quantile: f64| {
            histograms
                .get(second)
                .filter(|h| !h.is_empty())
                .map_or(0.0, |h| histogram::millis(h, quantile))
        };
        let mut before = (0, 0);
        buckets
            .totals
            .iter()
            .enumerate()
            .map(|(second, &(committed, applied))| {
                let row = Second {
                    second: second as u64 + 1,
                    committed_per_s: committed.saturating_sub(before.0),
                    applied_per_s: applied.saturating_sub(before.1),
                    append_p50_ms: at(&buckets.append, second, 0.5),
                    append_p99_ms: at(&buckets.append, second, 0.99),
                    end_to_end_p50_ms: at(&buckets.end_to_end, second, 0.5),
                    end_to_end_p99_ms: at(&buckets.end_to_end, second, 0.99),
                };
                before = (committed, applied);
                row
            })
            .collect()
    }
}
