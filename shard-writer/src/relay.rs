//! The relay: publishes committed events to their tier streams and follows the router's
//! acknowledgements.
//!
//! Design constraints:
//! - A replay request (a gap the router found, e.g. entries trimmed before it read them) is
//!   answered with one batch from the gap; the router asks again for the next one. Events
//!   committed meanwhile keep flowing behind it.
//! - Per tier, events are published in `tier_seq` order, in batches of at most `relay_batch`
//!   (and at most half the stream cap), one pipelined round trip for all tiers. Each batch is one `hunt_publish` call: the
//!   `XADD … MAXLEN ~ cap` of every event and the raise of the shard's published mark happen
//!   atomically, so after any failure the mark says exactly what landed.
//! - Flow control: a tier's new events go out no further than `publish_window` past the router's
//!   applied watermark (as last polled). A router that falls behind leaves them in the shard
//!   file, where they are safe, instead of in a stream whose cap would trim them unread and
//!   force re-sends. Re-sends (replay requests, stalls) are not held back.
//! - Under load, batches grow: after a round that sent less than a full batch the relay lingers
//!   `publish_linger` (5 ms) before the next, so a busy shard makes fewer, larger publish calls
//!   and fsyncs less often; the first event after a quiet spell goes out at once.
//! - Nothing is published before it is durable: the relay fsyncs SQLite's log before it reads
//!   the rows it is about to send, so a published `tier_seq` survives even a power loss and is
//!   never handed to another event.
//! - On (re)connect the relay continues above the larger of Redis's published mark and the
//!   router's applied watermark. A Redis that lost its data has lost both, so everything still
//!   retained is sent again; `hunt_publish` also refuses a batch that would leave a hole above a
//!   mark Redis has forgotten, and the relay re-sends from the mark.
//! - A watermark that falls below what it had acknowledged means Redis lost its data with the
//!   connection intact (FLUSHALL, a failover to a replica behind): the tier is sent again from
//!   the watermark at once, as after a reconnect, even by a shard with nothing new to send.
//! - Delivery is acknowledged end to end: an event is delivered when the router's applied
//!   watermark `hunt:{t<N>}:applied[shard]` reaches it. When the watermark stays below what was
//!   published for `redelivery_timeout` (doubling per fruitless re-send, capped), the relay
//!   re-sends one batch above the watermark; when the router asks through
//!   `hunt:{t<N>}:replay[shard]`, it re-sends everything from there. The router de-duplicates
//!   by `tier_seq`, so a re-send never counts twice.
//! - A lost connection is retried with capped exponential back-off and full jitter; appends keep
//!   landing in SQLite meanwhile. Every wait selects on cancellation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hunt_redis::connection::{Connection as RedisConnection, RedisTarget, Timeouts};
use leaderboard_proto::functions::{Function, Publish, Published};
use leaderboard_proto::{keys, rewards};
use rand::Rng;
use redis::RedisError;
use redis::aio::ConnectionLike;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Synchronous, WriterConfig, redact_url};
use crate::metrics as m;
use crate::wal::committer::{Job, Progress};
use crate::wal::reader::ShardFile;

/// Why one connection of the relay ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("shard file: {0}")]
    Storage(String),
    #[error("the commit thread is gone")]
    Closed,
}

/// One tier as the relay follows it.
#[derive(Debug)]
struct TierState {
    index: usize,
    applied_key: String,
    replay_key: String,
    /// The next `tier_seq` to send.
    next: u64,
    /// A range already sent once, to send again before anything new (after a stall).
    resend: Option<(u64, u64)>,
    /// The router's applied watermark, as last read.
    applied: u64,
    applied_moved_at: Instant,
    redelivery_wait: Duration,
    /// The highest watermark stored in the shard file.
    acknowledged: u64,
    /// The replay request last acted on, and when.
    replay_acted: Option<(u64, Instant)>,
}

/// Connects to Redis (one node or a cluster) with the writer's timeouts, and makes sure the
/// library is loaded on every primary.
pub(crate) async fn connect(
    client: &RedisTarget,
    config: &WriterConfig,
) -> Result<RedisConnection, RedisError> {
    let mut conn = client
        .connect(Timeouts {
            connect: Some(config.redis_connect_timeout),
            response: Some(config.redis_response_timeout),
        })
        .await?;
    hunt_redis::ensure_loaded(&mut conn).await?;
    Ok(conn)
}

/// Reads the shard's published marks, one per tier of the reward table.
pub(crate) async fn published_marks<C: ConnectionLike + Send>(
    conn: &mut C,
    shard_id: u32,
) -> Result<Vec<u64>, RedisError> {
    let field = keys::shard_field(shard_id);
    let mut pipe = redis::pipe();
    for tier in rewards::TIERS {
        pipe.hget(keys::tier_published(tier.id), &field);
    }
    let marks: Vec<Option<u64>> = pipe.query_async(conn).await?;
    Ok(marks.into_iter().map(Option::unwrap_or_default).collect())
}

/// What a publish round read from the shard file for one tier.
struct Batch {
    slot: usize,
    first: u64,
    /// (tier_seq, payload with tier_seq)
    rows: Vec<(u64, Vec<u8>)>,
}

/// The relay of one shard writer.
pub(crate) struct Relay {
    shard_id: u32,
    field: String,
    client: RedisTarget,
    config: WriterConfig,
    reader: Arc<Mutex<ShardFile>>,
    jobs: mpsc::Sender<Job>,
    progress: Arc<Progress>,
    /// Set by `shutdown`: publish what is committed, then stop.
    drain: CancellationToken,
    tiers: Vec<TierState>,
}

impl Relay {
    pub(crate) fn new(
        config: &WriterConfig,
        client: RedisTarget,
        reader: ShardFile,
        jobs: mpsc::Sender<Job>,
        progress: Arc<Progress>,
        acknowledged: &[u64],
        drain: CancellationToken,
    ) -> Self {
        let now = Instant::now();
        let tiers = rewards::TIERS
            .iter()
            .enumerate()
            .map(|(index, tier)| TierState {
                index,
                applied_key: keys::tier_applied(tier.id),
                replay_key: keys::tier_replay(tier.id),
                next: 1,
                resend: None,
                applied: 0,
                applied_moved_at: now,
                redelivery_wait: config.redelivery_timeout,
                acknowledged: acknowledged.get(index).copied().unwrap_or(0),
                replay_acted: None,
            })
            .collect();
        Self {
            shard_id: config.shard_id,
            field: keys::shard_field(config.shard_id),
            client,
            config: config.clone(),
            reader: Arc::new(Mutex::new(reader)),
            jobs,
            progress,
            drain,
            tiers,
        }
    }

    /// Runs until drained (after `shutdown`) or aborted.
    pub(crate) async fn run(mut self) {
        let mut backoff = self.config.reconnect_backoff;
        // Since when Redis has been unreachable: the loss is said once, and its end once.
        let mut lost_since: Option<Instant> = None;
        loop {
            let outcome = match connect(&self.client, &self.config).await {
                Ok(conn) => {
                    backoff = self.config.reconnect_backoff;
                    self.serve(conn, &mut lost_since).await
                }
                Err(err) => Err(RelayError::Redis(err)),
            };
            match outcome {
                Ok(()) => return,
                Err(RelayError::Closed) => return,
                Err(err) => {
                    metrics::counter!(m::RELAY_ERRORS).increment(1);
                    let redis = redact_url(self.config.redis_url.as_deref().unwrap_or_default());
                    let retry_in_ms = backoff.as_millis() as u64;
                    if lost_since.is_none() {
                        lost_since = Some(Instant::now());
                        tracing::warn!(
                            shard = self.shard_id,
                            %redis,
                            error = %err,
                            retry_in_ms,
                            "relay lost Redis; appends keep landing in the shard file"
                        );
                    } else {
                        tracing::debug!(shard = self.shard_id, %redis, error = %err, retry_in_ms, "relay still cannot reach Redis");
                    }
                }
            }
            if self.drain.is_cancelled() {
                tracing::warn!(
                    shard = self.shard_id,
                    "writer shutting down with Redis unreachable: unpublished events stay in the \
                     shard file and are published when it is opened again"
                );
                return;
            }
            let wait = full_jitter(backoff);
            backoff = (backoff * 2).min(self.config.max_reconnect_backoff);
            tokio::select! {
                () = self.drain.cancelled() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Serves one connection until it fails, or until drained.
    async fn serve(
        &mut self,
        mut conn: RedisConnection,
        lost_since: &mut Option<Instant>,
    ) -> Result<(), RelayError> {
        let published = published_marks(&mut conn, self.shard_id).await?;
        self.confirm(&published).await?;
        self.poll_acks(&mut conn).await?;
        self.resync(&published);
        match lost_since.take() {
            Some(since) => tracing::info!(
                shard = self.shard_id,
                down_ms = since.elapsed().as_millis() as u64,
                "relay reached Redis again"
            ),
            None => tracing::info!(shard = self.shard_id, "relay connected"),
        }

        let mut next_poll = Instant::now() + self.config.ack_poll_interval;
        let mut next_prune = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_poll {
                self.poll_acks(&mut conn).await?;
                next_poll = now + self.config.ack_poll_interval;
            }
            if now >= next_prune {
                self.prune().await?;
                next_prune = now + self.config.prune_interval;
            }
            let sent = self.publish_round(&mut conn).await?;
            if sent > 0 {
                if sent < self.publish_batch() && !self.config.publish_linger.is_zero() {
                    // A small round: let more events gather before the next one.
                    tokio::select! {
                        () = self.drain.cancelled() => {}
                        () = tokio::time::sleep(self.config.publish_linger) => {}
                    }
                }
                continue;
            }
            if self.drain.is_cancelled() {
                return Ok(());
            }
            tokio::select! {
                () = self.drain.cancelled() => {}
                () = self.progress.committed_notify.notified() => {}
                () = tokio::time::sleep_until(next_poll.min(next_prune)) => {}
            }
        }
    }

    /// Reconciles the commit thread's tier counters with Redis's published marks.
    async fn confirm(&self, published: &[u64]) -> Result<(), RelayError> {
        let (reply, confirmed) = oneshot::channel();
        self.jobs
            .send(Job::Confirm {
                published: published.to_vec(),
                reply,
            })
            .await
            .map_err(|_| RelayError::Closed)?;
        confirmed
            .await
            .map_err(|_| RelayError::Closed)?
            .map_err(|err| RelayError::Storage(err.to_string()))
    }

    /// Events per publish call of one tier: `relay_batch`, and never more than half the stream
    /// cap, so one call cannot trim its own entries before anyone reads them.
    fn publish_batch(&self) -> u64 {
        (self.config.relay_batch as u64)
            .min(self.config.stream_cap / 2)
            .max(1)
    }

    /// Sets every tier to continue above what Redis has.
    fn resync(&mut self, published: &[u64]) {
        for tier in &mut self.tiers {
            let mark = published.get(tier.index).copied().unwrap_or(0);
            tier.next = mark.max(tier.applied) + 1;
            tier.resend = None;
            tier.replay_acted = None;
        }
    }

    /// Sends one batch per tier that has committed events not yet sent. Returns the events sent.
    async fn publish_round(&mut self, conn: &mut RedisConnection) -> Result<u64, RelayError> {
        let mut wanted = Vec::new();
        for (slot, tier) in self.tiers.iter().enumerate() {
            if !self.progress.confirmed(tier.index) {
                continue;
            }
            let committed = self.progress.committed(tier.index);
            let batch = self.publish_batch();
            if let Some((from, to)) = tier.resend {
                let last = to.min(from + batch - 1).min(committed);
                wanted.push((slot, rewards::TIERS[tier.index].id, from, last));
            } else if tier.next <= committed {
                // Flow control: no further than the window past the router's watermark.
                let limit = tier.applied.saturating_add(self.config.publish_window);
                if tier.next <= limit {
                    let last = committed.min(tier.next + batch - 1).min(limit);
                    wanted.push((slot, rewards::TIERS[tier.index].id, tier.next, last));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(0);
        }
        let batches = self.read(wanted).await?;

        let mut pipe = redis::pipe();
        let mut sent = Vec::with_capacity(batches.len());
        for batch in batches {
            let Some(tier) = self.tiers.get_mut(batch.slot) else {
                continue;
            };
            let Some(&(first_row, _)) = batch.rows.first() else {
                // Everything from `first` on was pruned (acknowledged long ago).
                if tier.resend.take().is_none() {
                    tier.next = self.progress.committed(tier.index) + 1;
                }
                continue;
            };
            let floor = if first_row > batch.first {
                metrics::counter!(m::REPLAY_PRUNED).increment(1);
                tracing::warn!(
                    shard = self.shard_id,
                    tier = rewards::TIERS[tier.index].id,
                    asked = batch.first,
                    first_retained = first_row,
                    "events asked for were pruned after retention; sending from the first retained"
                );
                0
            } else {
                first_row - 1
            };
            let highest = batch.rows.last().map_or(first_row, |row| row.0);
            let mut publish = Publish::new(
                rewards::TIERS[tier.index].id,
                self.shard_id,
                self.config.stream_cap,
                floor,
                highest,
            );
            for (_, payload) in &batch.rows {
                publish.payload(payload);
            }
            pipe.add_command(publish.cmd().clone());
            sent.push((batch.slot, highest, batch.rows.len() as u64));
        }
        if sent.is_empty() {
            return Ok(0);
        }
        let replies: Vec<Published> = match pipe.query_async(conn).await {
            Ok(replies) => replies,
            Err(err) if hunt_redis::is_function_missing(&err) => {
                // Redis restarted without its data: reload, and continue above what it has.
                tracing::warn!(
                    shard = self.shard_id,
                    "Redis lost the function library; reloading"
                );
                hunt_redis::ensure_loaded(conn).await?;
                let published = published_marks(conn, self.shard_id).await?;
                self.resync(&published);
                return Ok(0);
            }
            Err(err) => return Err(err.into()),
        };
        let mut total = 0;
        for ((slot, highest, count), Published { added, mark }) in sent.into_iter().zip(replies) {
            let Some(tier) = self.tiers.get_mut(slot) else {
                continue;
            };
            if added {
                match tier.resend {
                    Some((_, to)) if highest < to => tier.resend = Some((highest + 1, to)),
                    Some(_) => tier.resend = None,
                    None => tier.next = highest + 1,
                }
                total += count;
            } else {
                tracing::warn!(
                    shard = self.shard_id,
                    tier = rewards::TIERS[tier.index].id,
                    mark,
                    "Redis forgot published events; re-sending from its mark"
                );
                tier.next = mark + 1;
                tier.resend = None;
            }
        }
        metrics::counter!(m::PUBLISHED).increment(total);
        Ok(total)
    }

    /// fsyncs the log, then reads each wanted range: (slot, tier id, first, last).
    async fn read(&self, wanted: Vec<(usize, u32, u64, u64)>) -> Result<Vec<Batch>, RelayError> {
        let reader = Arc::clone(&self.reader);
        let needs_sync = self.config.synchronous != Synchronous::Full;
        let result = tokio::task::spawn_blocking(move || -> Result<Vec<Batch>, String> {
            let mut reader = reader.lock().map_err(|_| "reader poisoned".to_owned())?;
            if needs_sync {
                reader
                    .sync_log()
                    .map_err(|err| format!("fsync of the log: {err}"))?;
            }
            let mut batches = Vec::with_capacity(wanted.len());
            for (slot, tier, first, last) in wanted {
                let rows = reader
                    .publishable(tier, first, last)
                    .map_err(|err| err.to_string())?;
                batches.push(Batch { slot, first, rows });
            }
            Ok(batches)
        })
        .await
        .map_err(|err| RelayError::Storage(err.to_string()))?;
        result.map_err(RelayError::Storage)
    }

    /// Reads the router's watermarks and replay requests; stores new acknowledgements; decides
    /// re-sends.
    async fn poll_acks(&mut self, conn: &mut RedisConnection) -> Result<(), RelayError> {
        let mut pipe = redis::pipe();
        for tier in &self.tiers {
            pipe.hget(&tier.applied_key, &self.field);
            pipe.hget(&tier.replay_key, &self.field);
        }
        let marks: Vec<Option<u64>> = pipe.query_async(conn).await?;
        let now = Instant::now();
        let mut acknowledged = Vec::new();
        let mut depth = 0;
        let publish_batch = self.publish_batch();
        for (tier, pair) in self.tiers.iter_mut().zip(marks.chunks(2)) {
            let applied = pair.first().copied().flatten().unwrap_or(0);
            let replay = pair.get(1).copied().flatten();
            let committed = self.progress.committed(tier.index);
            if applied != tier.applied {
                tier.applied = applied;
                tier.applied_moved_at = now;
                tier.redelivery_wait = self.config.redelivery_timeout;
            }
            if applied < tier.acknowledged {
                // The router's watermark fell below what it had acknowledged: Redis lost its
                // data (a restart without it, a flush, a failover to a replica behind). Send
                // everything above the watermark again now, at the pace flow control allows,
                // rather than a batch per stalled redelivery timeout.
                tracing::warn!(
                    shard = self.shard_id,
                    tier = rewards::TIERS[tier.index].id,
                    acknowledged = tier.acknowledged,
                    applied,
                    "Redis lost the tier's applied watermark; re-sending everything above it"
                );
                metrics::counter!(m::REDIS_LOSSES).increment(1);
                tier.acknowledged = applied;
                tier.next = tier.next.min(applied + 1);
                tier.resend = None;
                tier.replay_acted = None;
            }
            let ack = applied.min(committed);
            if ack > tier.acknowledged {
                metrics::counter!(m::ACKNOWLEDGED).increment(ack - tier.acknowledged);
                tier.acknowledged = ack;
                acknowledged.push((tier.index, ack));
            }
            depth += committed.saturating_sub(tier.acknowledged);

            if let Some(from) = replay {
                let fresh = match tier.replay_acted {
                    Some((acted, at)) => acted != from || now - at >= tier.redelivery_wait,
                    None => true,
                };
                if fresh {
                    tier.replay_acted = Some((from, now));
                    let from = from.max(1);
                    if from < tier.next {
                        // One batch from the gap, while new events keep flowing behind it. A
                        // longer hole is asked for again, batch by batch, as each one lands:
                        // re-sending all of it at once could trim its own head off a short
                        // stream before the router reads it.
                        let to = (tier.next - 1).min(from + publish_batch - 1);
                        metrics::counter!(m::REDELIVERED).increment(to - from + 1);
                        tracing::info!(
                            shard = self.shard_id,
                            tier = rewards::TIERS[tier.index].id,
                            from,
                            to,
                            "replay requested by the router"
                        );
                        tier.resend = Some((from, to));
                    }
                }
            } else {
                tier.replay_acted = None;
            }

            let published_above = tier.next.saturating_sub(1);
            if tier.applied < published_above
                && tier.resend.is_none()
                && now - tier.applied_moved_at >= tier.redelivery_wait
            {
                // One batch above the watermark unblocks a router that lost it; a router that
                // lost more finds the gap and asks for a replay. Re-sending the whole backlog to
                // a router that is simply down would only flood the stream.
                let to = published_above.min(tier.applied + publish_batch);
                metrics::counter!(m::REDELIVERED).increment(to - tier.applied);
                tracing::info!(
                    shard = self.shard_id,
                    tier = rewards::TIERS[tier.index].id,
                    applied = tier.applied,
                    published = published_above,
                    resend_to = to,
                    "applied watermark stalled; re-sending the batch above it"
                );
                tier.resend = Some((tier.applied + 1, to));
                tier.applied_moved_at = now;
                tier.redelivery_wait =
                    (tier.redelivery_wait * 2).min(self.config.max_redelivery_timeout);
            }
        }
        metrics::gauge!(m::OUTBOX_DEPTH).set(depth as f64);
        if !acknowledged.is_empty() {
            self.jobs
                .send(Job::Acknowledge {
                    marks: acknowledged,
                })
                .await
                .map_err(|_| RelayError::Closed)?;
        }
        Ok(())
    }

    /// Deletes acknowledged rows older than the retention window, a bounded batch at a time.
    async fn prune(&self) -> Result<(), RelayError> {
        let retention_ms = i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX);
        let before_ms = self.config.clock.now_ms().saturating_sub(retention_ms);
        loop {
            let (reply, pruned) = oneshot::channel();
            self.jobs
                .send(Job::Prune {
                    before_ms,
                    limit: self.config.prune_batch,
                    reply,
                })
                .await
                .map_err(|_| RelayError::Closed)?;
            let deleted = pruned
                .await
                .map_err(|_| RelayError::Closed)?
                .map_err(|err| RelayError::Storage(err.to_string()))?;
            metrics::counter!(m::PRUNED).increment(deleted as u64);
            if deleted < self.config.prune_batch || self.drain.is_cancelled() {
                return Ok(());
            }
        }
    }
}

/// A random wait in `[0, backoff]` ("full jitter"), so many shards do not reconnect in step.
fn full_jitter(backoff: Duration) -> Duration {
    let millis = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_backoff() {
        for _ in 0..100 {
            assert!(full_jitter(Duration::from_millis(50)) <= Duration::from_millis(50));
        }
    }
}
