//! The tier worker: competes for a tier's lease and, while it holds it, reads the tier's stream
//! from the stored cursor and applies it batch by batch ([`crate::apply`]), schedules the dedup
//! saga ([`crate::saga`]) between batches, and keeps the tier's cached top fresh; while it does
//! not, it refreshes that cached top as a follower.
//!
//! Design constraints:
//! - Every apply and every lease renewal carries the fence token; Redis rejects a stale one
//!   (`FENCED`), and the worker then drops the tier at once and competes for it again.
//! - Batches stay near `apply_batch` entries, so claims and reads queued behind a batch never
//!   wait long, except while the tier is behind: each full read then doubles the batch, up to
//!   `max_apply_batch`, and the first short read brings it back. Catching up costs fewer round
//!   trips that way.
//! - The blocking stream read has a connection of its own; everything else shares one.
//! - The hold on a tier survives a lost connection: the next apply under its token is what tells
//!   whether it is still valid (Redis checks the fence).
//! - A tier another live router should own is handed over between batches; a tier whose lease
//!   stays free for a whole lease TTL although another router is its fair owner is taken by
//!   whoever notices.
//! - The dedup saga runs between batches, a step at a time, never for longer than one step:
//!   inline at most every [`SAGA_INLINE_COALESCE`] after batches that recorded awards, and as a
//!   sweep over every waiting award each `saga_interval` (at once when the tier is newly taken).
//!   A sweep reads at most the awards that were waiting when it began, so awards arriving
//!   meanwhile cannot make it endless; while one runs, stream reads do not block.
//! - Every Redis call is bounded by the response timeout (a step by the calls it makes): a call
//!   that never completes fails like a lost connection, so the worker reconnects and the fence
//!   tells whether it still holds its tier.
//! - Every wait selects on cancellation, the back-off after a Redis failure included; on the way
//!   out the worker releases its lease, so another router takes the tier at once.

use std::sync::Arc;
use std::time::Duration;

use hunt_redis::connection::{Connection, RedisTarget};
use hunt_redis::stream;
use leaderboard_proto::keys;
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::apply::{self, apply_batch, connect, is_fenced};
use crate::cache::{self, Cache};
use crate::config::{CACHED_TOP, RouterConfig, SAGA_INLINE_COALESCE};
use crate::lease::{self, Lease};
use crate::members::{self, View};
use crate::metrics as m;
use crate::saga;

/// Redis calls one saga step makes at most (reads, claims, settle, top, barrier, compensate,
/// finish), for its time bound.
const SAGA_CALLS: u32 = 8;

/// The worker of one tier.
pub(crate) struct TierWorker {
    pub(crate) tier: u32,
    /// The tier's 0-based position in the reward table, which decides its fair owner.
    pub(crate) tier_index: usize,
    pub(crate) config: RouterConfig,
    pub(crate) client: RedisTarget,
    pub(crate) cache: Arc<Cache>,
    pub(crate) view: View,
    pub(crate) cancel: CancellationToken,
}

/// The worker's hold on its tier.
struct Owned {
    token: String,
    /// Until when the tier is kept although another router is its fair owner: set when it was
    /// taken because that owner left its lease free.
    keep_until: Option<Instant>,
    cursor: String,
    renew_at: Instant,
    saga: SagaSchedule,
    /// Stream entries the next read asks for: `apply_batch`, doubled per full read while
    /// behind, up to `max_apply_batch`.
    batch: usize,
}

/// When the dedup saga next runs for an owned tier.
struct SagaSchedule {
    /// Awards were recorded since the last saga step read everything waiting.
    dirty: bool,
    /// When the last inline step ran.
    last_inline: Instant,
    /// When the next sweep begins.
    next_sweep: Instant,
    /// The sweep in progress, if any.
    sweep: Option<Sweep>,
}

impl SagaSchedule {
    /// A schedule that sweeps at once: a newly taken tier may hold what its last owner left.
    fn starting(now: Instant) -> Self {
        Self {
            dirty: false,
            last_inline: now,
            next_sweep: now,
            sweep: None,
        }
    }

    /// How long the next stream read may block: not at all during a sweep, and no longer than
    /// until the next inline step is due.
    fn read_block(&self, read_block: Duration) -> Option<Duration> {
        if self.sweep.is_some() {
            return None;
        }
        if self.dirty {
            let due =
                (self.last_inline + SAGA_INLINE_COALESCE).saturating_duration_since(Instant::now());
            return Some(due.clamp(Duration::from_millis(1), read_block));
        }
        Some(read_block)
    }
}

/// A sweep in progress over a tier's waiting awards.
struct Sweep {
    started: Instant,
    /// Awards still to read before the sweep ends; set by its first step to the number waiting.
    budget: Option<u64>,
}

/// What a worker keeps across reconnects. The hold survives a lost connection on purpose: the
/// next apply under its token is what tells whether it is still valid (Redis checks the fence).
struct State {
    owned: Option<Owned>,
    /// When to next ask for the lease while not holding it.
    next_attempt: Instant,
    /// Since when the lease has been seen free while another router should hold it.
    free_since: Option<Instant>,
    next_refresh: Instant,
    /// Since when Redis has been unreachable: the loss is said once, and its end once.
    lost_since: Option<Instant>,
}

impl TierWorker {
    /// Runs until cancelled; releases the lease on the way out.
    pub(crate) async fn run(self) {
        let mut backoff = self.config.backoff;
        let now = Instant::now();
        let mut state = State {
            owned: None,
            next_attempt: now,
            free_since: None,
            next_refresh: now,
            lost_since: None,
        };
        loop {
            let outcome = self.serve(&mut state).await;
            if self.cancel.is_cancelled() {
                return;
            }
            if let Err(err) = outcome {
                metrics::counter!(m::REDIS_ERRORS).increment(1);
                self.cache.mark_stale(self.tier);
                if state.lost_since.is_none() {
                    state.lost_since = Some(Instant::now());
                    tracing::warn!(tier = self.tier, error = %err, "tier worker lost Redis");
                } else {
                    tracing::debug!(tier = self.tier, error = %err, "tier worker still cannot reach Redis");
                }
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
    async fn serve(&self, state: &mut State) -> redis::RedisResult<()> {
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
        // Read the top once on every (re)connect: an owner that keeps its lease and has nothing
        // new to apply would otherwise leave the top marked stale after Redis came back.
        self.bounded(1, self.refresh(&mut conn)).await?;
        if let Some(since) = state.lost_since.take() {
            tracing::info!(
                tier = self.tier,
                down_ms = since.elapsed().as_millis() as u64,
                "tier worker reached Redis again"
            );
        }
        let mut view = self.view.clone();
        while !self.cancel.is_cancelled() {
            let wanted = members::wants(
                &view.borrow_and_update(),
                &self.config.router_id,
                self.tier_index,
            );
            let keep = state
                .owned
                .as_ref()
                .is_some_and(|held| held.keep_until.is_some_and(|until| Instant::now() < until));
            if state.owned.is_some() && !wanted && !keep {
                // Another live router is this tier's fair owner: hand it over between batches.
                self.bounded(
                    1,
                    lease::release(&mut conn, self.tier, &self.config.router_id),
                )
                .await?;
                state.owned = None;
                state.next_attempt = Instant::now() + self.config.lease_ttl / 3;
                self.set_owned_gauge(false);
                tracing::info!(tier = self.tier, "tier handed over to its fair owner");
                continue;
            }
            if let Some(held) = &mut state.owned {
                // Both the apply and the renewal carry the token and are checked against the
                // fence inside Redis: after a pause, whichever comes first finds out.
                let step = self.step(&mut conn, &mut reader, held);
                let mut outcome = self.bounded_by(self.config.read_block, 3, step).await;
                if outcome.is_ok() {
                    outcome = self.bounded(SAGA_CALLS, self.saga(&mut conn, held)).await;
                }
                if outcome.is_ok() && Instant::now() >= held.renew_at {
                    let renew_at = Instant::now() + self.config.lease_ttl / 3;
                    let renew = lease::renew(
                        &mut conn,
                        self.tier,
                        &self.config.router_id,
                        self.config.lease_ttl,
                        &held.token,
                    );
                    outcome = self.bounded(1, renew).await;
                    if outcome.is_ok() {
                        tracing::trace!(tier = self.tier, "lease renewed");
                        held.renew_at = renew_at;
                    }
                }
                match outcome {
                    Ok(()) => {}
                    Err(err) if is_fenced(&err) => {
                        metrics::counter!(m::FENCED).increment(1);
                        // A fence that is gone was not taken by anyone: Redis lost it.
                        let mut get = redis::cmd("GET");
                        get.arg(keys::tier_fence(self.tier));
                        let fence: Option<String> =
                            self.bounded(1, get.query_async(&mut conn)).await?;
                        if fence.is_none() {
                            metrics::counter!(m::REDIS_DATA_LOST).increment(1);
                            tracing::error!(
                                tier = self.tier,
                                token = %held.token,
                                "fence rejected: Redis lost its data (the tier's fence is gone); \
                                 stopped applying, the tier is rebuilt from the shard files"
                            );
                        } else {
                            tracing::warn!(
                                tier = self.tier,
                                token = %held.token,
                                "fence rejected: another router owns this tier now; stopped applying"
                            );
                        }
                        state.owned = None;
                        state.next_attempt = Instant::now() + jitter(self.config.lease_ttl / 3);
                        self.set_owned_gauge(false);
                        continue;
                    }
                    Err(err) => return Err(err),
                }
                continue;
            }
            let now = Instant::now();
            if now >= state.next_attempt {
                let abandoned = !wanted
                    && self
                        .bounded(1, self.lease_abandoned(&mut conn, state, now))
                        .await?;
                if wanted || abandoned {
                    self.bounded(3, self.take_lease(&mut conn, state)).await?;
                    if abandoned && let Some(held) = &mut state.owned {
                        // Kept a while before it goes back to its fair owner, which let it go
                        // once already: applied in between, never taken and handed back at once.
                        held.keep_until
                            .get_or_insert(Instant::now() + self.config.lease_ttl * 3);
                    }
                }
                if state.owned.is_some() {
                    continue;
                }
                state.next_attempt = now + jitter(self.config.lease_ttl / 3);
            }
            if now >= state.next_refresh {
                self.bounded(1, self.refresh(&mut conn)).await?;
                state.next_refresh = Instant::now() + self.config.follower_refresh;
            }
            tokio::select! {
                () = self.cancel.cancelled() => {}
                () = tokio::time::sleep_until(state.next_attempt.min(state.next_refresh)) => {}
                // A router joined or left: the fair split may have changed.
                changed = view.changed() => if changed.is_ok() { state.next_attempt = Instant::now() },
            }
        }
        if state.owned.take().is_some() {
            self.set_owned_gauge(false);
            let release = lease::release(&mut conn, self.tier, &self.config.router_id);
            match self.bounded(1, release).await {
                Ok(_) => tracing::info!(tier = self.tier, "tier lease released"),
                Err(err) => {
                    tracing::warn!(tier = self.tier, error = %err, "could not release the lease");
                }
            }
        }
        Ok(())
    }

    /// Takes the lease (or finds this router already holds it), reading the stored cursor when
    /// the token is new.
    async fn take_lease(&self, conn: &mut Connection, state: &mut State) -> redis::RedisResult<()> {
        let now = Instant::now();
        let lease = lease::acquire(
            conn,
            self.tier,
            &self.config.router_id,
            self.config.lease_ttl,
        )
        .await?;
        match lease {
            Lease::Held(token) => {
                let renew_at = now + self.config.lease_ttl / 3;
                match &mut state.owned {
                    Some(held) if held.token == token => held.renew_at = renew_at,
                    _ => {
                        let cursor: Option<String> = redis::cmd("GET")
                            .arg(keys::tier_cursor(self.tier))
                            .query_async(conn)
                            .await?;
                        tracing::info!(tier = self.tier, token = %token, "tier owned");
                        state.owned = Some(Owned {
                            token,
                            keep_until: None,
                            cursor: cursor.unwrap_or_else(|| "0-0".to_owned()),
                            renew_at,
                            saga: SagaSchedule::starting(now),
                            batch: self.config.apply_batch,
                        });
                        state.free_since = None;
                        // What the previous owner left: the cache starts from it.
                        self.refresh(conn).await?;
                    }
                }
            }
            Lease::Elsewhere(holder) => {
                if state.owned.take().is_some() {
                    tracing::warn!(tier = self.tier, %holder, "tier lease lost to another router");
                }
            }
        }
        self.set_owned_gauge(state.owned.is_some());
        Ok(())
    }

    /// Whether the tier's lease has stayed free for a whole lease TTL although another router is
    /// its fair owner (that router is alive but not serving it): then any router takes it.
    async fn lease_abandoned(
        &self,
        conn: &mut Connection,
        state: &mut State,
        now: Instant,
    ) -> redis::RedisResult<bool> {
        let holder: Option<String> = redis::cmd("GET")
            .arg(keys::tier_lease(self.tier))
            .query_async(conn)
            .await?;
        if holder.is_some() {
            state.free_since = None;
            return Ok(false);
        }
        let since = *state.free_since.get_or_insert(now);
        Ok(now.duration_since(since) >= self.config.lease_ttl)
    }

    /// `call`, bounded by `calls` Redis response timeouts: a call that never completes (a
    /// connection left half-open by a pause, a cluster node gone silent) fails as a timeout, so
    /// the worker reconnects, marks its tier stale, and finds out from the fence whether it still
    /// holds the tier.
    async fn bounded<T>(
        &self,
        calls: u32,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        self.bounded_by(Duration::ZERO, calls, call).await
    }

    /// [`TierWorker::bounded`], with `extra` time on top (a blocking read's block).
    async fn bounded_by<T>(
        &self,
        extra: Duration,
        calls: u32,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        let limit = extra + self.config.redis_response_timeout * calls;
        match tokio::time::timeout(limit, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from Redis within {} ms", limit.as_millis()),
            ))),
        }
    }

    fn set_owned_gauge(&self, owned: bool) {
        metrics::gauge!(m::OWNED, "tier" => self.tier.to_string()).set(if owned {
            1.0
        } else {
            0.0
        });
    }

    /// Reads one batch from the cursor and applies it.
    async fn step(
        &self,
        conn: &mut Connection,
        reader: &mut Connection,
        held: &mut Owned,
    ) -> redis::RedisResult<()> {
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT").arg(held.batch);
        if let Some(block) = held.saga.read_block(self.config.read_block) {
            let block_ms = u64::try_from(block.as_millis()).unwrap_or(100).max(1);
            read.arg("BLOCK").arg(block_ms);
        }
        read.arg("STREAMS")
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
        let full = entries.len() >= held.batch;
        held.batch = next_batch(held.batch, full, &self.config);
        let Some((last_id, _)) = entries.last() else {
            metrics::gauge!(m::LAG_SECONDS, "tier" => self.tier.to_string()).set(0.0);
            return Ok(());
        };
        let cursor = last_id.clone();
        let events = apply::decode(self.tier, entries);
        let started = Instant::now();
        let outcome = apply_batch(conn, self.tier, &held.token, &cursor, &events).await?;
        metrics::histogram!(m::BATCH_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::counter!(m::APPLIED).increment(outcome.applied);
        metrics::counter!(m::DUPLICATES).increment(outcome.duplicates);
        metrics::counter!(m::REPLAY_REQUESTS).increment(outcome.gaps);
        metrics::counter!(m::REJECTED).increment(outcome.rejected);
        metrics::counter!(m::AWARDS_RECORDED).increment(outcome.awards);
        metrics::counter!(m::STALE_CLUE_SOLVES).increment(outcome.stale);
        if outcome.awards > 0 {
            held.saga.dirty = true;
        }
        // Behind by how long the last applied entry waited, while reads come back full;
        // caught up (0) once a read returns less than a batch.
        let lag = if full { entry_age(&cursor) } else { 0.0 };
        metrics::gauge!(m::LAG_SECONDS, "tier" => self.tier.to_string()).set(lag);
        if outcome.gaps > 0 {
            tracing::info!(
                tier = self.tier,
                shards = outcome.gaps,
                "gap in a shard's entries: replay requested"
            );
        }
        tracing::trace!(
            tier = self.tier,
            entries = events.len(),
            applied = outcome.applied,
            "batch"
        );
        held.cursor = cursor;
        if outcome.top_changed {
            self.refresh(conn).await?;
        }
        Ok(())
    }

    /// Runs at most one saga step, if one is due: the next step of a sweep in progress, a new
    /// sweep, or an inline step for awards recorded since the last one.
    async fn saga(&self, conn: &mut Connection, held: &mut Owned) -> redis::RedisResult<()> {
        let now = Instant::now();
        let schedule = &mut held.saga;
        if schedule.sweep.is_none() && now >= schedule.next_sweep {
            let forgotten = saga::expire(conn, self.tier, &self.config).await?;
            if forgotten > 0 {
                tracing::debug!(tier = self.tier, forgotten, "expired settled award records");
            }
            schedule.sweep = Some(Sweep {
                started: now,
                budget: None,
            });
            schedule.next_sweep = now + self.config.saga_interval;
        }
        let full_page = |report: &saga::StepReport| report.seen >= self.config.saga_batch;
        if let Some(sweep) = &mut schedule.sweep {
            let report =
                saga::step(conn, self.tier, &held.token, &self.config, &self.cache).await?;
            let budget = sweep.budget.get_or_insert(report.waiting);
            *budget = budget.saturating_sub(report.seen as u64);
            if !full_page(&report) {
                // Everything waiting was read: the inline step has nothing left to do either.
                schedule.dirty = false;
            }
            if !full_page(&report) || *budget == 0 || !report.progressed() {
                metrics::histogram!(m::SAGA_SWEEP_SECONDS)
                    .record(sweep.started.elapsed().as_secs_f64());
                tracing::debug!(tier = self.tier, "saga sweep done");
                schedule.sweep = None;
            }
            return Ok(());
        }
        if schedule.dirty && now >= schedule.last_inline + SAGA_INLINE_COALESCE {
            let report =
                saga::step(conn, self.tier, &held.token, &self.config, &self.cache).await?;
            schedule.last_inline = now;
            // A full page may have left newer awards for the next step; a page that moved
            // nothing (inboxes full) waits for the next award or the next sweep.
            schedule.dirty = full_page(&report) && report.progressed();
        }
        Ok(())
    }

    /// Reads the tier's top into the cache.
    async fn refresh(&self, conn: &mut Connection) -> redis::RedisResult<()> {
        let top = cache::read_range(conn, self.tier, 0, CACHED_TOP as u64 - 1).await?;
        self.cache.publish(self.tier, top);
        Ok(())
    }
}

/// The next read's batch: doubled after a full read (the tier is behind), up to
/// `max_apply_batch`; back to `apply_batch` after a short one.
fn next_batch(batch: usize, full: bool, config: &RouterConfig) -> usize {
    if full {
        (batch * 2).clamp(config.apply_batch, config.max_apply_batch)
    } else {
        config.apply_batch
    }
}

/// Seconds since Redis added the stream entry `id` (`<ms>-<seq>`), by this host's clock.
fn entry_age(id: &str) -> f64 {
    let added_ms = id
        .split_once('-')
        .and_then(|(ms, _)| ms.parse::<u64>().ok())
        .unwrap_or(0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    now_ms.saturating_sub(added_ms) as f64 / 1_000.0
}

/// A random wait in `[wait / 2, wait]`, so routers do not act in step.
fn jitter(wait: Duration) -> Duration {
    let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(2);
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_doubles_the_batch_up_to_its_cap_and_a_short_read_resets_it() {
        let mut config = RouterConfig::new("redis://127.0.0.1:6390/");
        config.apply_batch = 100;
        config.max_apply_batch = 500;
        let mut batch = config.apply_batch;
        let mut seen = Vec::new();
        for _ in 0..5 {
            batch = next_batch(batch, true, &config);
            seen.push(batch);
        }
        assert_eq!(seen, [200, 400, 500, 500, 500]);
        assert_eq!(next_batch(batch, false, &config), 100);
        config.max_apply_batch = 100;
        assert_eq!(next_batch(100, true, &config), 100, "doubling turned off");
    }
}
