//! The tier worker: holds a tier's lease, reads its stream from the stored cursor and applies
//! it exactly once through `hunt_apply`, then refreshes the tier's cached top.
//!
//! Design constraints:
//! - Every apply carries the fence token; Redis rejects a stale one (`FENCED`), and the worker
//!   then drops the tier at once and competes for it again.
//! - Batches stay near `apply_batch` entries (about 1 ms of Redis time per 100), so claims and
//!   reads queued behind a batch never wait long.
//! - An entry that cannot be decoded is skipped, logged and counted; one that decodes but
//!   carries nothing to score (a wave reset, a mismatched tier, invalid points) is applied as a
//!   no-op, so its shard's watermark still moves.
//! - The blocking stream read has a connection of its own; everything else shares one.

use std::sync::Arc;
use std::time::Duration;

use leaderboard_proto::functions::{self, name};
use leaderboard_proto::v1::HuntEvent;
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::{keys, stream, validate};
use rand::Rng;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cache::{self, Cache};
use crate::config::{CACHED_TOP, RouterConfig};
use crate::lease::{self, Lease};
use crate::metrics as m;

/// What one `hunt_apply` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Entries applied.
    pub applied: u64,
    /// Entries skipped as already applied.
    pub duplicates: u64,
    /// Shards whose entries had a gap (a replay request was recorded).
    pub gaps: u64,
    /// Player totals refused because they would leave the exact range.
    pub rejected: u64,
}

/// The (player, points) an event moves; `("", 0)` for one that scores nothing.
#[must_use]
pub fn score_change(event: &HuntEvent, tier: u32) -> (&str, i64) {
    if event.tier != tier {
        return ("", 0);
    }
    let (player, points) = match &event.kind {
        Some(Kind::ScoreGained(e)) => (e.player_id.as_str(), e.points),
        Some(Kind::ClueSolved(e)) => (e.player_id.as_str(), e.points),
        Some(Kind::TreasureAwarded(e)) => (e.player_id.as_str(), e.points),
        Some(Kind::AwardRevoked(e)) => (e.player_id.as_str(), e.points.saturating_neg()),
        Some(Kind::WaveReset(_)) | None => return ("", 0),
    };
    if validate::id("player_id", player).is_err() || validate::points("points", points).is_err() {
        return ("", 0);
    }
    (player, points)
}

/// Applies `events` (all of `tier`) under `token` and stores `cursor`.
///
/// # Errors
/// The Redis error; a stale token fails with the server error code `FENCED`.
pub async fn apply_batch(
    conn: &mut MultiplexedConnection,
    tier: u32,
    token: &str,
    cursor: &str,
    events: &[HuntEvent],
) -> redis::RedisResult<Applied> {
    let mut cmd = functions::fcall_cmd(
        name::APPLY,
        &[
            &keys::tier_fence(tier),
            &keys::tier_applied(tier),
            &keys::tier_replay(tier),
            &keys::tier_scores(tier),
            &keys::tier_members(tier),
            &keys::tier_cursor(tier),
        ],
    );
    cmd.arg(token).arg(cursor);
    for event in events {
        let (player, points) = score_change(event, tier);
        cmd.arg(keys::shard_field(event.shard_id))
            .arg(event.tier_seq)
            .arg(player)
            .arg(points);
    }
    let (applied, duplicates, gaps, rejected): (u64, u64, u64, u64) =
        functions::fcall(conn, &cmd).await?;
    Ok(Applied {
        applied,
        duplicates,
        gaps,
        rejected,
    })
}

/// Whether `err` is Redis refusing a stale fence token.
#[must_use]
pub fn is_fenced(err: &RedisError) -> bool {
    err.code() == Some("FENCED")
}

/// Connects to Redis with the router's timeouts.
pub(crate) async fn connect(
    client: &redis::Client,
    config: &RouterConfig,
    response_timeout: Option<Duration>,
) -> redis::RedisResult<MultiplexedConnection> {
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.redis_connect_timeout))
        .set_response_timeout(response_timeout);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&settings)
        .await?;
    functions::ensure_loaded(&mut conn).await?;
    Ok(conn)
}

/// The worker of one tier.
pub(crate) struct TierWorker {
    pub(crate) tier: u32,
    pub(crate) config: RouterConfig,
    pub(crate) client: redis::Client,
    pub(crate) cache: Arc<Cache>,
    pub(crate) cancel: CancellationToken,
}

/// The worker's hold on its tier.
struct Owned {
    token: String,
    cursor: String,
    renew_at: Instant,
}

impl TierWorker {
    /// Runs until cancelled; releases the lease on the way out.
    pub(crate) async fn run(self) {
        let mut backoff = self.config.backoff;
        loop {
            let outcome = self.serve().await;
            if self.cancel.is_cancelled() {
                return;
            }
            if let Err(err) = outcome {
                metrics::counter!(m::REDIS_ERRORS).increment(1);
                self.cache.mark_stale(self.tier);
                tracing::warn!(tier = self.tier, error = %err, "tier worker lost Redis");
            }
            let wait = jitter(backoff);
            backoff = (backoff * 2).min(self.config.max_backoff);
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Serves until Redis fails or the worker is cancelled.
    async fn serve(&self) -> redis::RedisResult<()> {
        let mut conn = connect(
            &self.client,
            &self.config,
            Some(self.config.redis_response_timeout),
        )
        .await?;
        let mut reader = connect(
            &self.client,
            &self.config,
            Some(self.config.redis_response_timeout + self.config.read_block),
        )
        .await?;
        let mut owned: Option<Owned> = None;
        let mut next_attempt = Instant::now();
        let mut next_refresh = Instant::now();
        let result = loop {
            if self.cancel.is_cancelled() {
                break Ok(());
            }
            let now = Instant::now();
            // Take the lease, or keep it, at a third of its TTL.
            let due = owned.as_ref().map_or(next_attempt, |o| o.renew_at);
            if now >= due {
                match lease::acquire(
                    &mut conn,
                    self.tier,
                    &self.config.router_id,
                    self.config.lease_ttl,
                )
                .await
                {
                    Ok(Lease::Held(token)) => {
                        let renew_at = now + self.config.lease_ttl / 3;
                        owned = match owned.take() {
                            Some(held) if held.token == token => Some(Owned { renew_at, ..held }),
                            _ => {
                                let cursor: Option<String> = redis::cmd("GET")
                                    .arg(keys::tier_cursor(self.tier))
                                    .query_async(&mut conn)
                                    .await?;
                                tracing::info!(tier = self.tier, token = %token, "tier owned");
                                Some(Owned {
                                    token,
                                    cursor: cursor.unwrap_or_else(|| "0-0".to_owned()),
                                    renew_at,
                                })
                            }
                        };
                    }
                    Ok(Lease::Elsewhere(holder)) => {
                        if owned.take().is_some() {
                            tracing::warn!(tier = self.tier, %holder, "tier lease lost to another router");
                        }
                        next_attempt = now + jitter(self.config.lease_ttl / 3);
                    }
                    Err(err) => break Err(err),
                }
                metrics::gauge!(m::OWNED, "tier" => self.tier.to_string())
                    .set(if owned.is_some() { 1.0 } else { 0.0 });
            }
            match &mut owned {
                Some(held) => match self.step(&mut conn, &mut reader, held).await {
                    Ok(()) => {}
                    Err(err) if is_fenced(&err) => {
                        metrics::counter!(m::FENCED).increment(1);
                        tracing::warn!(
                            tier = self.tier,
                            token = %held.token,
                            "fence rejected: another router owns this tier now; stopped applying"
                        );
                        owned = None;
                        next_attempt = Instant::now() + self.config.lease_ttl / 3;
                    }
                    Err(err) => break Err(err),
                },
                None => {
                    if Instant::now() >= next_refresh {
                        self.refresh(&mut conn).await?;
                        next_refresh = Instant::now() + self.config.follower_refresh;
                    }
                    let wake = next_attempt.min(next_refresh);
                    tokio::select! {
                        () = self.cancel.cancelled() => {}
                        () = tokio::time::sleep_until(wake) => {}
                    }
                }
            }
        };
        if owned.is_some() {
            match lease::release(&mut conn, self.tier, &self.config.router_id).await {
                Ok(_) => tracing::info!(tier = self.tier, "tier lease released"),
                Err(err) => {
                    tracing::warn!(tier = self.tier, error = %err, "could not release the lease")
                }
            }
        }
        result
    }

    /// Reads one batch from the cursor and applies it.
    async fn step(
        &self,
        conn: &mut MultiplexedConnection,
        reader: &mut MultiplexedConnection,
        held: &mut Owned,
    ) -> redis::RedisResult<()> {
        let block_ms = u64::try_from(self.config.read_block.as_millis()).unwrap_or(100);
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT")
            .arg(self.config.apply_batch)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(keys::tier_stream(self.tier))
            .arg(&held.cursor);
        let reply: Option<Vec<(String, Vec<stream::RawEntry>)>> = tokio::select! {
            reply = read.query_async(reader) => reply?,
            () = self.cancel.cancelled() => return Ok(()),
        };
        let entries: Vec<stream::RawEntry> = reply
            .into_iter()
            .flatten()
            .flat_map(|(_, entries)| entries)
            .collect();
        let Some((last_id, _)) = entries.last() else {
            return Ok(());
        };
        let cursor = last_id.clone();
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            match stream::decode(entry) {
                Ok((_, event)) => events.push(event),
                Err(err) => {
                    metrics::counter!(m::MALFORMED).increment(1);
                    tracing::error!(tier = self.tier, error = %err, "skipping a malformed stream entry");
                }
            }
        }
        let started = Instant::now();
        let outcome = apply_batch(conn, self.tier, &held.token, &cursor, &events).await?;
        metrics::histogram!(m::BATCH_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::counter!(m::APPLIED).increment(outcome.applied);
        metrics::counter!(m::DUPLICATES).increment(outcome.duplicates);
        metrics::counter!(m::GAPS).increment(outcome.gaps);
        metrics::counter!(m::REJECTED).increment(outcome.rejected);
        if outcome.gaps > 0 {
            tracing::info!(
                tier = self.tier,
                shards = outcome.gaps,
                "gap in a shard's entries: replay requested"
            );
        }
        held.cursor = cursor;
        if outcome.applied > 0 {
            self.refresh(conn).await?;
        }
        Ok(())
    }

    /// Reads the tier's top into the cache.
    async fn refresh(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        let top = cache::read_range(conn, self.tier, 0, CACHED_TOP as u64 - 1).await?;
        self.cache.publish(self.tier, top);
        Ok(())
    }
}

/// A random wait in `[wait / 2, wait]`, so routers do not act in step.
fn jitter(wait: Duration) -> Duration {
    let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(2);
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
}
