//! What the code in a test binary recorded through the `metrics` facade.
//!
//! Design constraints:
//! - One recorder per process: the first call installs a `DebuggingRecorder`, and every test in
//!   the binary reads through it.
//! - The debugging recorder hands each value out once per snapshot, so totals are kept here and
//!   every read adds the new snapshot to them.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// One metric as recorded so far, over all its labels.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Total {
    /// The sum of every counter increment.
    pub counter: u64,
    /// How many histogram samples.
    pub samples: usize,
    /// The last gauge value set.
    pub gauge: Option<f64>,
}

fn snapshotter() -> Option<&'static Snapshotter> {
    static SNAPSHOTTER: OnceLock<Option<Snapshotter>> = OnceLock::new();
    SNAPSHOTTER
        .get_or_init(|| {
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            recorder.install().ok().map(|()| snapshotter)
        })
        .as_ref()
}

/// Installs the recording recorder, unless this process has one already. Call it before the code
/// under test records anything. Returns whether recording works (false: another recorder was
/// installed first).
pub fn install() -> bool {
    snapshotter().is_some()
}

/// What has been recorded under `name` so far.
#[must_use]
pub fn total(name: &str) -> Total {
    static TOTALS: OnceLock<Mutex<HashMap<String, Total>>> = OnceLock::new();
    let Some(snapshotter) = snapshotter() else {
        return Total::default();
    };
    let mut totals = TOTALS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let total = totals.entry(key.key().name().to_owned()).or_default();
        match value {
            DebugValue::Counter(n) => total.counter += n,
            DebugValue::Histogram(values) => total.samples += values.len(),
            DebugValue::Gauge(v) => total.gauge = Some(v.into_inner()),
        }
    }
    totals.get(name).copied().unwrap_or_default()
}
