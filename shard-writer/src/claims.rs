//! Clue and chest claims on [`ShardWriter`]: the fast path that keeps most duplicate awards from
//! ever being scored (the router's saga catches the rest).
//!
//! Design constraints:
//! - Every call goes through the writer's own claims connection, apart from the relay's, and is
//!   bounded by `claim_timeout`, connecting included: a Redis that is down, hung or partitioned
//!   answers [`ClaimError::Unreachable`], never a hang. The connection reconnects by itself on
//!   the next call once Redis is back, and reloads the function library if Redis lost it.
//! - Ids, tiers and waves are validated before Redis is asked: a value that would break a key
//!   never reaches it.
//! - A clue claim is one compare-and-swap inside Redis (`hunt_claim_clue`): first solver wins,
//!   with a token greater than every earlier token of the clue. The solve time passed along is
//!   the shard clock's, kept for people and never compared.
//! - [`ShardWriter::open_wave`] opens the clues in Redis first and records the `WaveReset` event
//!   after: a shard that fails in between opens the wave again, which changes nothing the second
//!   time (`hunt_open_clue` ignores a wave at or below the one stored).
//! - Award ids (`<shard>.<epoch>.a<n>`) are unique for ever across the shard without asking
//!   anyone: epochs never repeat, `n` counts up within one, and the `a` keeps them apart from the
//!   ids derived from event ids (`<shard>.<epoch>.<seq>`).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Instant;

use hunt_redis::connection::Connection;
use leaderboard_proto::functions::{
    CheckClue, ChestRecorded, ClaimChest, ClaimClue, Function, OpenClue, TokenCheck,
};
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::v1::{HuntEvent, WaveReset};
use leaderboard_proto::validate::{self, ValidationError};
use leaderboard_proto::{keys, rewards};
use redis::RedisError;

pub use leaderboard_proto::functions::{ChestClaim, ClueClaim};

use crate::error::ClaimError;
use crate::metrics as m;
use crate::wal::decisions::Decision;
use crate::writer::{Appended, ShardWriter};
use hunt_redis::reconnecting::{CallError, Reconnecting};

impl ShardWriter {
    /// Claims `clue_id` for `player_id`: [`ClueClaim::Won`] with the claim's fencing token (greater
    /// than every earlier token of the clue) when the player holds it, now or from an earlier
    /// claim; [`ClueClaim::Held`] naming the holder and its token otherwise. Never returns
    /// [`ClueClaim::Unknown`]: a clue no wave opened is an error. Retrying after `Unreachable` is
    /// safe: the holder claiming again gets its own token back.
    ///
    /// # Errors
    /// [`ClaimError::Invalid`] for an invalid clue id or player id; [`ClaimError::UnknownClue`] for a
    /// clue never opened; [`ClaimError::Unreachable`], [`ClaimError::Redis`],
    /// [`ClaimError::NoRedis`].
    pub async fn claim_clue(
        &self,
        clue_id: &str,
        player_id: &str,
    ) -> Result<ClueClaim, ClaimError> {
        const KIND: &str = "clue";
        let started = Instant::now();
        let outcome = async {
            validate::id("clue_id", clue_id)?;
            validate::id("player_id", player_id)?;
            let solve_ms = self.inner.config.clock.now_ms();
            let key = keys::clue(clue_id);
            let claim = self
                .gated_call(&[&key], move |mut conn, gated| async move {
                    let claim = ClaimClue::new(clue_id, player_id, solve_ms, gated.gate());
                    hunt_redis::call(&mut conn, &claim).await
                })
                .await?;
            // Recorded before it is told, whoever holds the clue.
            let (holder, token, wave) = match &claim {
                ClueClaim::Unknown => return Err(ClaimError::UnknownClue),
                ClueClaim::Won { token, wave } => (player_id, *token, *wave),
                ClueClaim::Held {
                    holder_player_id,
                    token,
                    wave,
                } => (holder_player_id.as_str(), *token, *wave),
            };
            self.record_decision(Decision::Clue {
                clue_id: clue_id.to_owned(),
                wave,
                token,
                holder: holder.to_owned(),
            })
            .await?;
            Ok(claim)
        }
        .await;
        record(
            KIND,
            started,
            outcome_label(&outcome, |claim| match claim {
                ClueClaim::Won { .. } => "won",
                ClueClaim::Held { .. } => "held",
                ClueClaim::Unknown => "unknown_clue",
            }),
        );
        outcome
    }

    /// Checks that a write of `player_id` on `clue_id` carrying `token` may go ahead: Ok when the
    /// player_id holds the clue under exactly this token.
    ///
    /// # Errors
    /// [`ClaimError::StaleToken`] (the clue was claimed again since),
    /// [`ClaimError::FutureToken`] (never handed out), [`ClaimError::NotHolder`] (current token,
    /// another player), [`ClaimError::UnknownClue`]; [`ClaimError::Invalid`] for invalid ids or a
    /// token of 0; [`ClaimError::Unreachable`], [`ClaimError::Redis`], [`ClaimError::NoRedis`].
    pub async fn check_clue(
        &self,
        clue_id: &str,
        player_id: &str,
        token: u64,
    ) -> Result<(), ClaimError> {
        const KIND: &str = "check";
        let started = Instant::now();
        let outcome = async {
            validate::id("clue_id", clue_id)?;
            validate::id("player_id", player_id)?;
            if token == 0 {
                return Err(ValidationError::MissingToken.into());
            }
            let key = keys::clue(clue_id);
            let check = self
                .gated_call(&[&key], move |mut conn, gated| async move {
                    let check = CheckClue::new(clue_id, player_id, token, gated.gate());
                    hunt_redis::call(&mut conn, &check).await
                })
                .await?;
            match check {
                TokenCheck::Current => Ok(()),
                TokenCheck::Stale => Err(ClaimError::StaleToken),
                TokenCheck::Future => Err(ClaimError::FutureToken),
                TokenCheck::NotHolder => Err(ClaimError::NotHolder),
                TokenCheck::Unknown => Err(ClaimError::UnknownClue),
            }
        }
        .await;
        record(KIND, started, outcome_label(&outcome, |()| "ok"));
        outcome
    }

    /// Opens `clue_ids` to new claims for `wave` of `tier` (one pipelined round trip), then
    /// appends the `WaveReset{wave, clue_ids}` event and returns once it is committed. A clue
    /// already open for this wave or a later one is left as it is, so reopening an older wave
    /// changes no claim; its event is still recorded.
    ///
    /// # Errors
    /// [`ClaimError::Invalid`] for an unknown tier, a wave of 0, more than 1000 clues or an
    /// invalid clue id (nothing opened, nothing appended); [`ClaimError::Unreachable`],
    /// [`ClaimError::Redis`], [`ClaimError::NoRedis`] (nothing appended; some clues may be
    /// open: open the wave again); [`ClaimError::Append`] with the event inside when the clues
    /// were opened but the event was not committed.
    pub async fn open_wave(
        &self,
        tier: u32,
        wave: u32,
        clue_ids: &[String],
    ) -> Result<Appended, ClaimError> {
        const KIND: &str = "wave";
        let started = Instant::now();
        let outcome = async {
            if rewards::tier(tier).is_none() {
                return Err(ValidationError::UnknownTier(tier).into());
            }
            validate::wave(wave, clue_ids)?;
            let clue_keys: Vec<String> = clue_ids.iter().map(|id| keys::clue(id)).collect();
            let clue_keys: Vec<&str> = clue_keys.iter().map(String::as_str).collect();
            let _opened: Vec<(i64, u64)> = self
                .gated_call(&clue_keys, move |mut conn, gated| async move {
                    if clue_ids.is_empty() {
                        return Ok(Vec::new());
                    }
                    let mut pipe = redis::pipe();
                    for clue_id in clue_ids {
                        pipe.add_command(OpenClue::new(clue_id, wave, gated.gate()).cmd().clone());
                    }
                    hunt_redis::library::pipeline(&mut conn, &pipe).await
                })
                .await?;
            self.record_decision(Decision::Wave {
                wave,
                clue_ids: clue_ids.to_vec(),
            })
            .await?;
            let event = HuntEvent {
                tier,
                kind: Some(Kind::WaveReset(WaveReset {
                    wave,
                    clue_ids: clue_ids.to_vec(),
                })),
                ..HuntEvent::default()
            };
            self.append(event).await.map_err(ClaimError::Append)
        }
        .await;
        record(KIND, started, outcome_label(&outcome, |_| "opened"));
        outcome
    }

    /// A fresh award id, `<shard>.<epoch>.a<n>`: unique for ever across this shard, so a shard
    /// can claim a chest ([`ShardWriter::claim_chest`]) before it appends the `TreasureAwarded`
    /// carrying the same id.
    #[must_use]
    pub fn award_id(&self) -> String {
        let n = self.inner.next_award.fetch_add(1, Ordering::Relaxed);
        format!("{}.{}.a{n}", self.inner.shard_id, self.inner.epoch)
    }

    /// Claims `chest_key` (a chest of type `chest_type` in `tier`) for `award_id`, for 24 hours:
    /// [`ChestClaim::Won`] when the award holds it, now or from an earlier claim (a retry is
    /// safe); [`ChestClaim::Held`] naming the award that holds it otherwise.
    ///
    /// # Errors
    /// [`ClaimError::Invalid`] for an unknown tier or an invalid chest key or award id;
    /// [`ClaimError::UnknownChest`] for a chest type the tier's reward table lacks;
    /// [`ClaimError::Unreachable`], [`ClaimError::Redis`], [`ClaimError::NoRedis`].
    pub async fn claim_chest(
        &self,
        tier: u32,
        chest_type: &str,
        chest_key: &str,
        award_id: &str,
    ) -> Result<ChestClaim, ClaimError> {
        const KIND: &str = "chest";
        let started = Instant::now();
        let outcome = async {
            let Some(defined) = rewards::tier(tier) else {
                return Err(ValidationError::UnknownTier(tier).into());
            };
            if defined.chest(chest_type).is_none() {
                return Err(ClaimError::UnknownChest {
                    tier,
                    chest_type: chest_type.to_owned(),
                });
            }
            validate::id("chest_key", chest_key)?;
            validate::id("award_id", award_id)?;
            let key = keys::chest(chest_key);
            let claim = self
                .gated_call(&[&key], move |mut conn, gated| async move {
                    let claim = ClaimChest::new(chest_key, award_id, gated.gate());
                    hunt_redis::call(&mut conn, &claim).await
                })
                .await?;
            // Recorded before it is told, whichever award holds the chest.
            let holder = match &claim {
                ChestClaim::Won => award_id,
                ChestClaim::Held { holder_award_id } => holder_award_id.as_str(),
            };
            self.record_decision(Decision::Chest {
                chest_key: chest_key.to_owned(),
                award_id: holder.to_owned(),
            })
            .await?;
            self.mark_recorded(chest_key, holder);
            Ok(claim)
        }
        .await;
        record(
            KIND,
            started,
            outcome_label(&outcome, |claim| match claim {
                ChestClaim::Won => "won",
                ChestClaim::Held { .. } => "held",
            }),
        );
        outcome
    }

    /// Marks `chest_key` recorded for `holder` (the file has it now), in the background: the
    /// answer does not wait for it. Should the mark be lost, the saga's request to record the
    /// award's verdict marks it again ([`crate::verdicts`]).
    fn mark_recorded(&self, chest_key: &str, holder: &str) {
        let writer = self.clone();
        let (chest_key, holder) = (chest_key.to_owned(), holder.to_owned());
        tokio::spawn(async move {
            let (chest_key, holder) = (&chest_key, &holder);
            let marked = writer
                .redis_call(move |mut conn| async move {
                    hunt_redis::call(&mut conn, &ChestRecorded::new(chest_key, holder, true)).await
                })
                .await;
            if let Err(err) = marked {
                tracing::debug!(error = %err, chest_key, "a chest's recorded mark waits for the saga");
            }
        });
    }

    /// Runs `op` on the claims connection within `claim_timeout` (twice when the connection
    /// had gone stale: `op` must be safe to repeat).
    pub(crate) async fn redis_call<T, F, Fut>(&self, op: F) -> Result<T, ClaimError>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let link = self.inner.claims.as_ref().ok_or(ClaimError::NoRedis)?;
        link.call(self.inner.config.claim_timeout, op)
            .await
            .map_err(|err| claim_error(link, err))
    }
}

/// The [`ClaimError`] of a failed call through `link`.
pub(crate) fn claim_error(link: &Reconnecting, err: CallError) -> ClaimError {
    match err {
        CallError::Unreachable(reason) => ClaimError::Unreachable {
            redis: link.redis().to_owned(),
            reason,
        },
        CallError::Redis(err) => ClaimError::Redis {
            reason: err.to_string(),
        },
    }
}

/// The `outcome` label of a call: `ok` names a success, errors are named by their kind.
pub(crate) fn outcome_label<T>(
    outcome: &Result<T, ClaimError>,
    ok: impl FnOnce(&T) -> &'static str,
) -> &'static str {
    match outcome {
        Ok(value) => ok(value),
        Err(err) => error_label(err),
    }
}

/// The `outcome` label of an error.
pub(crate) fn error_label(err: &ClaimError) -> &'static str {
    match err {
        ClaimError::Invalid(_) => "invalid",
        ClaimError::UnknownClue => "unknown_clue",
        ClaimError::UnknownChest { .. } => "unknown_chest",
        ClaimError::StaleToken => "stale",
        ClaimError::FutureToken => "future",
        ClaimError::NotHolder => "not_holder",
        ClaimError::Unreachable { .. } => "unreachable",
        ClaimError::Redis { .. } => "redis_error",
        ClaimError::NoRedis => "no_redis",
        ClaimError::MalformedCompensation { .. } => "malformed",
        ClaimError::Recovering => "recovering",
        ClaimError::Unreplicated { .. } => "unreplicated",
        ClaimError::Record { .. } => "record_failed",
        ClaimError::Append(_) => "append_failed",
    }
}

/// Records one call of `kind`: its time and its outcome.
pub(crate) fn record(kind: &'static str, started: Instant, outcome: &'static str) {
    metrics::histogram!(m::CLAIM_SECONDS, "kind" => kind).record(started.elapsed().as_secs_f64());
    metrics::counter!(m::CLAIMS, "kind" => kind, "outcome" => outcome).increment(1);
}
