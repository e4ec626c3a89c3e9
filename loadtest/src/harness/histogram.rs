//! Latency histograms: nanoseconds in, from 1 µs to 60 s at three significant digits.

use std::sync::Mutex;

use hdrhistogram::Histogram;

/// An empty latency histogram (nanoseconds, 1 µs to 60 s, three significant digits).
///
/// # Errors
/// When the bounds are refused (they are constants, so never in practice).
pub(crate) fn new() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1_000, 60_000_000_000, 3)?)
}

/// A copy of the histogram behind `shared`, taken under its lock.
///
/// # Errors
/// When a task panicked while holding the lock.
pub(crate) fn snapshot(shared: &Mutex<Histogram<u64>>) -> anyhow::Result<Histogram<u64>> {
    shared
        .lock()
        .map(|h| h.clone())
        .map_err(|_| anyhow::anyhow!("histogram poisoned"))
}

/// Milliseconds at quantile `q` of a nanosecond histogram.
pub(crate) fn millis(histogram: &Histogram<u64>, q: f64) -> f64 {
    histogram.value_at_quantile(q) as f64 / 1e6
}

/// The largest value of a nanosecond histogram, in milliseconds.
pub(crate) fn max_millis(histogram: &Histogram<u64>) -> f64 {
    histogram.max() as f64 / 1e6
}
