//! The idle timer of gRPC connections: a connection with no request in service for the idle
//! timeout is closed, whatever bytes (HTTP/2 pings, SETTINGS, WINDOW_UPDATE) still cross it.
//!
//! Design constraints:
//! - Idle means "no request in service", not "no bytes": keepalive pings keep every
//!   connection's bytes moving, so a byte timer could never tell an idle connection from a busy
//!   one. A request is in service from the moment it reaches the service until its response
//!   body, trailers included, has been sent or dropped; a Watch stream is in service for its
//!   whole life.
//! - The count lives beside the connection ([`Activity`], shared through tonic's connect info)
//!   and is kept by a tower layer ([`crate::calls::CallLayer`]) around the routes; the accepted socket
//!   ([`crate::listener::Bounded`]) reads it and fails its reads once the timer runs out, which
//!   makes the server drop the connection.
//! - Restarting the timer costs nothing per byte: the socket looks at the count only when it
//!   is polled, and the last request to finish wakes it so the timer starts at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tonic::transport::server::TcpConnectInfo;

/// How long a gRPC connection may go without a request in service, unless configured
/// otherwise (as gRPC's `MAX_CONNECTION_IDLE` is usually set).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// What tonic learns of an accepted gRPC connection: its addresses and its [`Activity`].
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's and the local address.
    pub tcp: TcpConnectInfo,
    pub(crate) activity: Arc<Activity>,
}

/// The requests a connection has in service.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    in_service: AtomicUsize,
    /// Raised each time the count falls to zero, so the socket restarts its timer from then.
    idled: AtomicU64,
    /// The connection's task, woken when the last request finishes.
    waker: Mutex<Option<Waker>>,
}

impl Activity {
    /// One more request in service, until the returned guard is dropped.
    pub(crate) fn serving(self: &Arc<Self>) -> InService {
        self.in_service.fetch_add(1, Ordering::AcqRel);
        InService(Arc::clone(self))
    }

    /// Whether no request is in service, and which idle period this is.
    fn idle(&self) -> Option<u64> {
        (self.in_service.load(Ordering::Acquire) == 0).then(|| self.idled.load(Ordering::Acquire))
    }

    fn register(&self, waker: &Waker) {
        if let Ok(mut slot) = self.waker.lock()
            && !slot.as_ref().is_some_and(|known| known.will_wake(waker))
        {
            *slot = Some(waker.clone());
        }
    }
}

/// A request in service; dropping it ends its service.
#[derive(Debug)]
pub(crate) struct InService(Arc<Activity>);

impl Drop for InService {
    fn drop(&mut self) {
        if self.0.in_service.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idled.fetch_add(1, Ordering::AcqRel);
            let waker = self.0.waker.lock().ok().and_then(|mut slot| slot.take());
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// The timer an accepted socket keeps: it runs while its connection has no request in
/// service, and is restarted whenever the connection goes idle again.
#[derive(Debug)]
pub(crate) struct IdleTimer {
    activity: Arc<Activity>,
    timeout: Duration,
    /// The idle period the deadline belongs to.
    period: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimer {
    pub(crate) fn new(activity: Arc<Activity>, timeout: Duration) -> Self {
        Self {
            activity,
            timeout,
            period: 0,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// Ready once the connection has been idle for the whole timeout.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.activity.register(cx.waker());
        let Some(period) = self.activity.idle() else {
            return Poll::Pending;
        };
        if period != self.period {
            self.period = period;
            self.deadline
                .as_mut()
                .reset(tokio::time::Instant::now() + self.timeout);
        }
        self.deadline.as_mut().poll(cx)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    /// Whether the timer has run out, polled once.
    async fn expired(timer: &mut IdleTimer) -> bool {
        poll_fn(|cx| Poll::Ready(timer.poll_expired(cx).is_ready())).await
    }

    #[tokio::test]
    async fn the_timer_runs_only_while_nothing_is_in_service_and_restarts_after() {
        const TIMEOUT: Duration = Duration::from_millis(200);
        let activity = Arc::new(Activity::default());
        let mut timer = IdleTimer::new(Arc::clone(&activity), TIMEOUT);
        assert!(!expired(&mut timer).await);

        // A request in service for longer than the timeout holds it off.
        let serving = activity.serving();
        tokio::time::sleep(2 * TIMEOUT).await;
        assert!(!expired(&mut timer).await, "expired while in service");

        // When it ends, the timer starts again from then, not from the connection's start.
        drop(serving);
        assert!(!expired(&mut timer).await, "expired at once after service");
        let idle_since = tokio::time::Instant::now();
        poll_fn(|cx| timer.poll_expired(cx)).await;
        assert!(idle_since.elapsed() >= TIMEOUT);
    }

    #[tokio::test]
    async fn the_last_request_to_end_wakes_the_connection() {
        let activity = Arc::new(Activity::default());
        let mut timer = IdleTimer::new(Arc::clone(&activity), Duration::from_millis(50));
        let serving = activity.serving();
        let waiting = tokio::spawn(async move { poll_fn(|cx| timer.poll_expired(cx)).await });
        // The waiting task is parked on the activity (no deadline runs while in service), so
        // only the end of the request can wake it.
        tokio::task::yield_now().await;
        drop(serving);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("woken and expired")
            .expect("join");
    }
}
