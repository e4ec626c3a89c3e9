//! An open-loop load driver: operations start on a fixed schedule whatever the system under
//! test is doing, and each is timed from when it was due (its intended start), so a stall shows
//! up as latency instead of as less load (no coordinated omission).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use crate::harness::histogram;

/// What an open-loop run measured.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Latency of the operations that succeeded, from their intended start, in nanoseconds.
    pub(crate) latency: Histogram<u64>,
    /// The same from when each operation actually started: without the pacer's and the
    /// scheduler's lateness, for telling the two apart.
    pub(crate) service: Histogram<u64>,
    /// Operations that failed.
    pub(crate) errors: u64,
    /// Operations started.
    pub(crate) sent: u64,
    /// How long the run took, until its last operation finished.
    pub(crate) elapsed: Duration,
}

/// Starts `op(n)` for n = 0, 1, 2, … at `rate` per second for `duration`, at most `max_in_flight`
/// at once (past that an arrival waits for a slot, and the wait counts in its latency).
///
/// # Errors
/// When the rate is 0, or the semaphore closes.
pub(crate) async fn run<F, Fut>(
    rate: u64,
    duration: Duration,
    max_in_flight: usize,
    op: F,
) -> anyhow::Result<Outcome>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    run_observed(rate, Until::Elapsed(duration), max_in_flight, op, |_, _| {}).await
}

/// How long an open-loop run goes on starting operations.
pub(crate) enum Until {
    /// For this long (the duration's worth of operations at the rate); the first failure is
    /// printed.
    Elapsed(Duration),
    /// Until this is cancelled; failures are only counted.
    Stopped(CancellationToken),
}

/// [`run`] for as long as `until` says, also telling `observe` of each operation that succeeded:
/// its intended start and its latency from then.
///
/// # Errors
/// When the rate is 0, or the semaphore closes.
pub(crate) async fn run_observed<F, Fut, O>(
    rate: u64,
    until: Until,
    max_in_flight: usize,
    op: F,
    observe: O,
) -> anyhow::Result<Outcome>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    O: Fn(Instant, Duration) + Send + Sync + 'static,
{
    anyhow::ensure!(rate > 0, "the rate must be at least 1 per second");
    // A stopped run has no count of its own: it goes on until `stop`.
    let (total, stop) = match until {
        Until::Elapsed(duration) => ((duration.as_secs_f64() * rate as f64) as u64, None),
        Until::Stopped(stop) => (u64::MAX, Some(stop)),
    };
    let print_first_error = stop.is_none();
    let latency = Arc::new(Mutex::new(histogram::new()?));
    let service = Arc::new(Mutex::new(histogram::new()?));
    let errors = Arc::new(AtomicU64::new(0));
    let observe = Arc::new(observe);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    while sent < total && !stop.as_ref().is_some_and(CancellationToken::is_cancelled) {
        let due = started + interval.mul_f64(sent as f64);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        // Everything due by now starts now: the timer's lateness is not hidden.
        while sent < total && started + interval.mul_f64(sent as f64) <= Instant::now() {
            let intended = started + interval.mul_f64(sent as f64);
            let permit = Arc::clone(&in_flight).acquire_owned().await?;
            let future = op(sent);
            let (latency, service, errors, observe) = (
                Arc::clone(&latency),
                Arc::clone(&service),
                Arc::clone(&errors),
                Arc::clone(&observe),
            );
            tasks.spawn(async move {
                let started = Instant::now();
                let outcome = future.await;
                let took_for = intended.elapsed();
                let took = took_for.as_nanos() as u64;
                let served = started.elapsed().as_nanos() as u64;
                drop(permit);
                match outcome {
                    Ok(()) => {
                        observe(intended, took_for);
                        if let Ok(mut latency) = latency.lock() {
                            let _ = latency.record(took);
                        }
                        if let Ok(mut service) = service.lock() {
                            let _ = service.record(served);
                        }
                    }
                    Err(err) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 && print_first_error {
                            eprintln!("first failed operation: {err:#}");
                        }
                    }
                }
            });
            sent += 1;
            while tasks.try_join_next().is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    Ok(Outcome {
        latency: histogram::snapshot(&latency)?,
        service: histogram::snapshot(&service)?,
        errors: errors.load(Ordering::Relaxed),
        sent,
        elapsed,
    })
}

impl Outcome {
    /// The outcome of a run that started nothing.
    ///
    /// # Errors
    /// When a histogram cannot be built.
    pub(crate) fn empty() -> anyhow::Result<Self> {
        Ok(Self {
            latency: histogram::new()?,
            service: histogram::new()?,
            errors: 0,
            sent: 0,
            elapsed: Duration::ZERO,
        })
    }
}
