//! The claims gate on the writer's side: noticing a Redis that lost its data, and putting back
//! the claim decisions this shard's file records.
//!
//! Design constraints:
//! - Every claim answer is recorded in the shard file before it is told
//!   ([`crate::wal::decisions`]), so the shard files together hold every decision anyone has
//!   seen; Redis's claim state is a cache of them.
//! - The writer knows the Redis incarnation (`hunt:claims`) under which it restored its
//!   decisions and joined the gate. A claim is only answered under that incarnation with the gate
//!   open: in the same call on one Redis, by a read just before the call on Redis Cluster. Any
//!   other answer is [`ClaimError::Recovering`], and wakes the restorer.
//! - The restorer runs at open, every `claims_poll`, and when a claim finds the gate closed: it
//!   reads the gate, and when the incarnation is not the one joined, writes the file's decisions
//!   back (never lowering a token or replacing a holder) and joins. A writer making no claims
//!   still restores, so the gate opens for the others.
//! - A Redis that loses its data again during a restore is noticed by the join, which then
//!   refuses: the next round restores again.
//! - A shard joins only once the router has applied again every event the shard had committed
//!   when it wrote its decisions back, in each tier a router had applied before (the file's
//!   acknowledged mark is above 0). New tokens are then handed out only after every older clue
//!   solve is back on the boards in its original order, so a solve that scored before the loss
//!   scores again (a solve applied after one with a newer token of its clue scores nothing).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hunt_redis::connection::Connection;
use leaderboard_proto::functions::{
    ChestClaim, ClaimsJoin, ClaimsState, ErrorCode, Gate, Joined, RestoreChest, RestoreClue,
};
use redis::RedisError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::claims::claim_error;
use crate::error::ClaimError;
use crate::metrics as m;
use crate::wal::{decisions, schema};
use crate::writer::{Inner, ShardWriter};

/// Restore calls per pipelined round trip.
const RESTORE_CHUNK: usize = 500;

/// What a gated call came to.
enum Answer<T> {
    /// Decided under the joined incarnation, and replicated as configured.
    Told(T),
    /// The gate is closed or names another incarnation.
    Recovering,
    /// Decided, but acknowledged by only this many replicas.
    Unreplicated(u64),
}

/// What the writer knows of the claims gate.
#[derive(Debug, Default)]
pub(crate) struct ClaimsGate {
    /// The incarnation this shard restored its decisions under and joined; `None` until it has.
    joined: Mutex<Option<String>>,
    /// Wakes the restorer.
    wake: Notify,
    /// Makes each fresh incarnation id this writer proposes unique.
    proposals: AtomicU64,
    /// One restore at a time.
    restoring: tokio::sync::Mutex<()>,
    /// The incarnation whose decisions this shard has written back, and per tier (reward
    /// table order) the `tier_seq` the router must have applied again before the shard joins.
    restored: Mutex<Option<(String, Vec<u64>)>>,
}

impl ClaimsGate {
    fn joined(&self) -> Option<String> {
        self.joined.lock().ok().and_then(|joined| joined.clone())
    }

    fn set_joined(&self, incarnation: Option<String>) {
        if let Ok(mut joined) = self.joined.lock() {
            *joined = incarnation;
        }
    }

    /// An incarnation id for a claims state this writer may create: unique across shards,
    /// epochs and calls.
    fn proposal(&self, shard_id: u32, epoch: u64) -> String {
        let n = self.proposals.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{shard_id}.{epoch}.{n}.{nanos:x}")
    }
}

/// How a claim call is gated, owned so it can move into the call.
#[derive(Debug, Clone)]
pub(crate) enum Gated {
    /// Checked by the function itself, under this incarnation (one Redis).
    Atomic(String),
    /// Checked just before the call (Redis Cluster).
    Checked,
}

impl Gated {
    /// The gate to build a claim function with.
    pub(crate) fn gate(&self) -> Gate<'_> {
        match self {
            Self::Atomic(incarnation) => Gate::Atomic(incarnation),
            Self::Checked => Gate::Checked,
        }
    }
}

impl ShardWriter {
    /// Runs `op` on the claims connection through the claims gate, within `claim_timeout`; with
    /// `claim_replicas`, then waits until that many replicas hold everything the primary of
    /// `keys`' slots had applied (the answer included) before the answer is returned.
    ///
    /// # Errors
    /// [`ClaimError::Recovering`] while the gate is closed or names another incarnation than the
    /// one this shard joined; [`ClaimError::Unreplicated`] when too few replicas acknowledged;
    /// otherwise as [`ShardWriter::redis_call`].
    pub(crate) async fn gated_call<T, F, Fut>(&self, keys: &[&str], op: F) -> Result<T, ClaimError>
    where
        F: Fn(Connection, Gated) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        if self.inner.claims.is_none() {
            return Err(ClaimError::NoRedis);
        }
        let gate = &self.inner.gate;
        let Some(incarnation) = gate.joined() else {
            gate.wake.notify_one();
            return Err(ClaimError::Recovering);
        };
        let read_gate = &ClaimsState::new(&gate.proposal(self.inner.shard_id, self.inner.epoch));
        let (incarnation, op) = (&incarnation, &op);
        let replicas = self.inner.config.claim_replicas;
        let wait = self.inner.config.claim_timeout / 2;
        let answered = self
            .redis_call(move |mut conn| async move {
                let gated = if matches!(conn, Connection::Cluster(_)) {
                    let state = hunt_redis::call(&mut conn, read_gate).await?;
                    if state.incarnation != *incarnation || !state.open {
                        return Ok(Answer::Recovering);
                    }
                    Gated::Checked
                } else {
                    Gated::Atomic(incarnation.clone())
                };
                let answer = match op(conn.clone(), gated).await {
                    Ok(answer) => answer,
                    Err(err) if ErrorCode::of(&err) == Some(ErrorCode::Recovering) => {
                        return Ok(Answer::Recovering);
                    }
                    Err(err) => return Err(err),
                };
                if replicas > 0 {
                    let acked = hunt_redis::replicated(&mut conn, keys, replicas, wait).await?;
                    if acked < u64::from(replicas) {
                        return Ok(Answer::Unreplicated(acked));
                    }
                }
                Ok(Answer::Told(answer))
            })
            .await?;
        match answered {
            Answer::Told(answer) => Ok(answer),
            Answer::Recovering => {
                gate.wake.notify_one();
                Err(ClaimError::Recovering)
            }
            Answer::Unreplicated(acked) => Err(ClaimError::Unreplicated {
                acked,
                wanted: replicas,
            }),
        }
    }

    /// One round of the restorer: reads the gate and, when Redis's incarnation is not the one
    /// this shard joined, restores the file's decisions, waits (round after round) until the
    /// router has applied again what this shard had committed, and joins.
    ///
    /// # Errors
    /// [`ClaimError::Unreachable`] and friends when Redis does not answer; [`ClaimError::Record`]
    /// when the file cannot be read; [`ClaimError::Recovering`] when the replay is not done yet,
    /// or Redis lost its data again during the restore.
    pub(crate) async fn restore_claims(&self) -> Result<(), ClaimError> {
        let inner = &self.inner;
        let Some(link) = inner.claims.as_ref() else {
            return Ok(());
        };
        let _one = inner.gate.restoring.lock().await;
        let timeout = inner.config.claim_timeout;
        let read_gate = &ClaimsState::new(&inner.gate.proposal(inner.shard_id, inner.epoch));
        let state = link
            .call(timeout, move |mut conn| async move {
                hunt_redis::call(&mut conn, read_gate).await
            })
            .await
            .map_err(|err| claim_error(link, err))?;
        let known = inner.gate.joined();
        if known.as_deref() == Some(state.incarnation.as_str()) {
            return Ok(());
        }
        inner.gate.set_joined(None);
        let restored = inner
            .gate
            .restored
            .lock()
            .ok()
            .and_then(|restored| restored.clone())
            .filter(|(incarnation, _)| *incarnation == state.incarnation);
        let targets = match restored {
            Some((_, targets)) => targets,
            None => {
                if let Some(known) = known {
                    metrics::counter!(m::CLAIMS_LOSSES).increment(1);
                    tracing::error!(
                        shard = inner.shard_id,
                        was = %known,
                        now = %state.incarnation,
                        "Redis lost its claim state (a restart without data, a flush or a \
                         failover): claims are refused until every shard has restored its decisions"
                    );
                }
                let targets = self.write_back(link).await?;
                if let Ok(mut restored) = inner.gate.restored.lock() {
                    *restored = Some((state.incarnation.clone(), targets.clone()));
                }
                targets
            }
        };
        if !self.replayed(link, &targets).await? {
            return Err(ClaimError::Recovering);
        }
        self.join(link, &state.incarnation).await
    }

    /// Writes the file's claim decisions back into Redis (never lowering a token or replacing a
    /// holder); returns per tier (reward table order) the `tier_seq` the router must have
    /// applied again before this shard joins: what was committed now, in each tier a router had
    /// applied before (0 elsewhere: nothing to wait for).
    async fn write_back(&self, link: &hunt_redis::Reconnecting) -> Result<Vec<u64>, ClaimError> {
        let inner = &self.inner;
        let timeout = inner.config.claim_timeout;
        let committed: Vec<u64> = leaderboard_proto::rewards::TIERS
            .iter()
            .map(|tier| self.committed_tier_seq(tier.id))
            .collect();
        let (path, config) = (inner.config.path.clone(), inner.config.clone());
        let now_ms = inner.config.clock.now_ms();
        let (clues, chests, acknowledged) = tokio::task::spawn_blocking(move || {
            let conn = schema::connect(&path, &config).map_err(|err| err.to_string())?;
            let (clues, chests) = decisions::read(&conn, now_ms).map_err(|err| err.to_string())?;
            let acknowledged = decisions::acknowledged(&conn).map_err(|err| err.to_string())?;
            Ok::<_, String>((clues, chests, acknowledged))
        })
        .await
        .map_err(|err| ClaimError::Record {
            reason: err.to_string(),
        })?
        .map_err(|reason| ClaimError::Record { reason })?;

        for chunk in clues.chunks(RESTORE_CHUNK) {
            let mut pipe = redis::pipe();
            for row in chunk {
                pipe.add_command(
                    leaderboard_proto::functions::Function::cmd(&RestoreClue::new(
                        &row.clue_id,
                        row.wave,
                        row.token,
                        row.holder.as_deref(),
                    ))
                    .clone(),
                );
            }
            let pipe = &pipe;
            let _: Vec<i64> = link
                .call(timeout, move |mut conn| async move {
                    hunt_redis::library::pipeline(&mut conn, pipe).await
                })
                .await
                .map_err(|err| claim_error(link, err))?;
        }
        for chunk in chests.chunks(RESTORE_CHUNK) {
            let mut pipe = redis::pipe();
            for (chest_key, award_id) in chunk {
                pipe.add_command(
                    leaderboard_proto::functions::Function::cmd(&RestoreChest::new(
                        chest_key, award_id,
                    ))
                    .clone(),
                );
            }
            let pipe = &pipe;
            let restored: Vec<ChestClaim> = link
                .call(timeout, move |mut conn| async move {
                    hunt_redis::library::pipeline(&mut conn, pipe).await
                })
                .await
                .map_err(|err| claim_error(link, err))?;
            for ((chest_key, award_id), claim) in chunk.iter().zip(restored) {
                if let ChestClaim::Held { holder_award_id } = claim {
                    metrics::counter!(m::CLAIMS_CONFLICTS).increment(1);
                    tracing::error!(
                        chest_key,
                        recorded = award_id,
                        held_by = holder_award_id,
                        "a chest this shard recorded for one award is held by another"
                    );
                }
            }
        }
        tracing::info!(
            shard = inner.shard_id,
            clues = clues.len(),
            chests = chests.len(),
            "wrote this shard's claim decisions back; joining once its events are applied again"
        );
        Ok(leaderboard_proto::rewards::TIERS
            .iter()
            .zip(committed)
            .map(|(tier, committed)| {
                let applied_before = acknowledged
                    .iter()
                    .any(|(acked_tier, mark)| *acked_tier == tier.id && *mark > 0);
                if applied_before { committed } else { 0 }
            })
            .collect())
    }

    /// Whether the router's applied watermarks of this shard have reached `targets` again.
    async fn replayed(
        &self,
        link: &hunt_redis::Reconnecting,
        targets: &[u64],
    ) -> Result<bool, ClaimError> {
        if targets.iter().all(|target| *target == 0) {
            return Ok(true);
        }
        let field = leaderboard_proto::keys::shard_field(self.inner.shard_id);
        let mut pipe = redis::pipe();
        for tier in leaderboard_proto::rewards::TIERS {
            pipe.hget(leaderboard_proto::keys::tier_applied(tier.id), &field);
        }
        let pipe = &pipe;
        let applied: Vec<Option<u64>> = link
            .call(
                self.inner.config.claim_timeout,
                move |mut conn| async move { pipe.query_async(&mut conn).await },
            )
            .await
            .map_err(|err| claim_error(link, err))?;
        let behind = targets
            .iter()
            .zip(&applied)
            .filter(|(target, applied)| applied.unwrap_or(0) < **target)
            .count();
        if behind > 0 {
            tracing::debug!(
                shard = self.inner.shard_id,
                tiers = behind,
                "claims gate: waiting for the router to apply this shard's events again"
            );
        }
        Ok(behind == 0)
    }

    /// Joins the gate of `incarnation`.
    async fn join(
        &self,
        link: &hunt_redis::Reconnecting,
        incarnation: &str,
    ) -> Result<(), ClaimError> {
        let inner = &self.inner;
        let join = &ClaimsJoin::new(incarnation, inner.shard_id, inner.config.claim_shards);
        let joined = link
            .call(inner.config.claim_timeout, move |mut conn| async move {
                hunt_redis::call(&mut conn, join).await
            })
            .await
            .map_err(|err| claim_error(link, err))?;
        match joined {
            Joined::Joined { open } => {
                tracing::info!(
                    shard = inner.shard_id,
                    %incarnation,
                    open,
                    "restored this shard's claim decisions and joined the claims gate"
                );
                inner.gate.set_joined(Some(incarnation.to_owned()));
                Ok(())
            }
            Joined::Superseded => Err(ClaimError::Recovering),
        }
    }
}

/// What [`open_claims_gate`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateOpened {
    /// The incarnation whose gate was opened; `None` when Redis had no claims state (nothing
    /// to open: the first shard to connect creates it).
    pub incarnation: Option<String>,
    /// Shards that had restored their decisions and joined.
    pub joined: u64,
    /// Shards expected.
    pub expected: u64,
}

/// The operator's override (`shard-writer open-claims`): opens the claims gate of the Redis at
/// `redis_url` without the shards that have not joined, for a shard gone for good. The decisions
/// only that shard's file records are not put back: claims it told may be contradicted.
///
/// # Errors
/// Why Redis did not answer, for a message beside the (redacted) URL.
pub async fn open_claims_gate(
    redis_url: &str,
    cluster: bool,
    timeout: Duration,
) -> Result<GateOpened, String> {
    let (incarnation, joined, expected) =
        crate::inspect::ask_redis(redis_url, cluster, timeout, |mut conn| async move {
            hunt_redis::call(&mut conn, &leaderboard_proto::functions::ClaimsOpen::new()).await
        })
        .await?;
    let opened = GateOpened {
        incarnation: (!incarnation.is_empty()).then_some(incarnation),
        joined,
        expected,
    };
    if let Some(incarnation) = &opened.incarnation {
        metrics::counter!(m::CLAIMS_GATE_FORCED).increment(1);
        tracing::warn!(
            %incarnation,
            joined,
            expected,
            "claims gate opened by hand: decisions recorded only by shards that did not join are \
             not restored"
        );
    }
    Ok(opened)
}

/// The restorer: a round every `poll` and whenever a claim finds the gate closed, until `stop`
/// or until the writer is dropped.
pub(crate) async fn restorer(
    writer: Weak<Inner>,
    gate: Arc<ClaimsGate>,
    poll: Duration,
    stop: CancellationToken,
) {
    loop {
        // Held only for the round, so dropping the last handle still closes the writer.
        let Some(inner) = writer.upgrade() else {
            return;
        };
        if let Err(err) = ShardWriter::from_inner(inner).restore_claims().await {
            tracing::debug!(error = %err, "claims gate: a restore round did not finish");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
            () = gate.wake.notified() => {}
        }
    }
}
