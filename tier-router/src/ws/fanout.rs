//! The publishers: one per tier, turning the cache's versions into [`Published`] updates that
//! every subscriber of the tier shares.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use leaderboard_proto::rewards;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Published;
use crate::cache::Cache;

/// One tier's published updates: the broadcast, and the latest update for newcomers.
#[derive(Debug)]
pub(super) struct TierFeed {
    pub(super) updates: broadcast::Sender<Arc<Published>>,
    pub(super) latest: watch::Receiver<Arc<Published>>,
    /// The last [`HISTORY`] updates, oldest first, for spectators resuming from a version.
    history: Arc<std::sync::Mutex<VecDeque<Arc<Published>>>>,
}

/// Updates kept per tier for resuming spectators.
const HISTORY: usize = 64;

/// The publishers' output, per tier.
#[derive(Debug)]
pub(crate) struct Fanout {
    pub(super) tiers: HashMap<u32, TierFeed>,
    /// The epoch of every version published (the cache's).
    pub(super) epoch: String,
}

/// Updates kept per tier for subscribers that are behind.
const BROADCAST_CAPACITY: usize = 16;

impl Fanout {
    /// Starts a publisher per tier on `cache`, as a task of `tasks`, publishing at most once per
    /// `coalesce`, until `stop`.
    pub(crate) fn start(
        cache: &Arc<Cache>,
        coalesce: Duration,
        stop: &CancellationToken,
        tasks: &TaskTracker,
    ) -> Self {
        let mut tiers = HashMap::new();
        for tier in rewards::tier_ids() {
            let Some(mut changes) = cache.subscribe(tier) else {
                continue;
            };
            let first = changes.borrow_and_update().clone();
            let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
            let epoch = cache.epoch().to_owned();
            let (latest_tx, latest) =
                watch::channel(Arc::new(Published::encode(tier, &epoch, None, &first)));
            let (broadcast_tx, stop) = (sender.clone(), stop.clone());
            let history = Arc::new(std::sync::Mutex::new(VecDeque::with_capacity(HISTORY)));
            let kept = Arc::clone(&history);
            tasks.spawn(async move {
                let mut last = first;
                let now = tokio::time::Instant::now();
                let mut published_at = now.checked_sub(coalesce).unwrap_or(now);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        changed = changes.changed() => if changed.is_err() { return },
                    }
                    // Coalesce: at most one update per interval. A change after a quiet interval
                    // goes out at once; one soon after an update waits for the interval's end,
                    // with whatever else arrives meanwhile.
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep_until(published_at + coalesce) => {}
                    }
                    let current = changes.borrow_and_update().clone();
                    // A new version, or the same one turning stale or fresh again.
                    if current.version == last.version
                        && current.unconfirmed() == last.unconfirmed()
                    {
                        continue;
                    }
                    published_at = tokio::time::Instant::now();
                    let update = Arc::new(Published::encode(tier, &epoch, Some(&last), &current));
                    if let Ok(mut kept) = kept.lock() {
                        if kept.len() == HISTORY {
                            kept.pop_front();
                        }
                        kept.push_back(Arc::clone(&update));
                    }
                    latest_tx.send_replace(Arc::clone(&update));
                    // No subscriber is not an error.
                    let _ = broadcast_tx.send(update);
                    last = current;
                }
            });
            tiers.insert(
                tier,
                TierFeed {
                    updates: sender,
                    latest,
                    history,
                },
            );
        }
        Self {
            tiers,
            epoch: cache.epoch().to_owned(),
        }
    }
}

impl TierFeed {
    /// The deltas that bring a spectator from `version` to the latest update, and that latest
    /// version; `None` when the history no longer reaches back to `version` (a snapshot then).
    /// A spectator at the latest version gets the latest freshness alone (an empty delta), as
    /// it may have turned stale or fresh while the spectator was away.
    pub(super) fn resume_from(&self, version: u64) -> Option<(u64, Vec<Utf8Bytes>)> {
        let (latest, freshness) = {
            let latest = self.latest.borrow();
            (latest.version, latest.freshness.clone())
        };
        if version == latest {
            return Some((latest, vec![freshness]));
        }
        let history = self.history.lock().ok()?;
        let start = history.iter().position(|u| u.base == Some(version))?;
        let deltas: Option<Vec<Utf8Bytes>> = history
            .iter()
            .skip(start)
            .map(|u| u.delta.clone())
            .collect();
        Some((history.back()?.version, deltas?))
    }
}
