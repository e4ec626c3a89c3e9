//! `hunt_claim_chest`: a chest goes to the first award that claims it.
//!
//! Design constraints:
//! - `SET NX EX`: the first award wins; claiming again as the holder is a win, so a retried
//!   claim is safe.
//! - The claim lives [`CHEST_TTL_SECONDS`]; no time-to-live decides a verdict already told
//!   (the award records and the shard files do).
//! - A holder is told (`GetAward`, `GetChest`) only once a shard file records it: the writer that
//!   recorded it marks the chest ([`ChestRecorded`], `hunt:chest:{<key>}:recorded`). The saga
//!   asks the shard of each award it confirms to record it ([`VerdictSend`]).

use redis::{Cmd, FromRedisValue, Value};

use super::{ErrorCode, Function, Gate, fcall_cmd, name};
use crate::keys;

/// How long a chest claim (and so an award's idempotency record) lives: 24 hours.
pub const CHEST_TTL_SECONDS: u64 = 24 * 60 * 60;

/// `hunt_claim_chest(chest; award_id, ttl_s) -> {1, award_id} | {0, holder_award_id}`: claims
/// `chest_key` for `award_id`, held for [`CHEST_TTL_SECONDS`].
#[derive(Debug, Clone)]
pub struct ClaimChest(Cmd);

impl ClaimChest {
    /// `award_id` claiming `chest_key`, through `gate`.
    #[must_use]
    pub fn new(chest_key: &str, award_id: &str, gate: Gate<'_>) -> Self {
        let mut cmd = gate.cmd(name::CLAIM_CHEST, &keys::chest(chest_key));
        cmd.arg(award_id).arg(CHEST_TTL_SECONDS);
        gate.finish(&mut cmd);
        Self(cmd)
    }
}

impl Function for ClaimChest {
    const ERRORS: &'static [ErrorCode] = &[ErrorCode::Recovering];
    const NAME: &'static str = name::CLAIM_CHEST;
    type Reply = ChestClaim;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// The outcome of a chest claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChestClaim {
    /// The award holds the chest (now, or already).
    Won,
    /// Another award holds the chest.
    Held {
        /// The award holding it.
        holder_award_id: String,
    },
}

impl FromRedisValue for ChestClaim {
    fn from_redis_value(value: Value) -> Result<Self, redis::ParsingError> {
        let (won, holder_award_id): (i64, String) = FromRedisValue::from_redis_value(value)?;
        Ok(if won == 1 {
            Self::Won
        } else {
            Self::Held { holder_award_id }
        })
    }
}

/// `hunt_chest_recorded(chest, chest_recorded; award_id, mark) -> 1 | 0`: whether `award_id`
/// holds `chest_key`; with `mark` (a shard file now records it), marks the chest recorded for
/// it, for as long as the claim lives.
#[derive(Debug, Clone)]
pub struct ChestRecorded(Cmd);

impl ChestRecorded {
    /// Whether `award_id` holds `chest_key`, marking it recorded when `mark`.
    #[must_use]
    pub fn new(chest_key: &str, award_id: &str, mark: bool) -> Self {
        let mut cmd = fcall_cmd(
            name::CHEST_RECORDED,
            &[&keys::chest(chest_key), &keys::chest_recorded(chest_key)],
        );
        cmd.arg(award_id).arg(if mark { "1" } else { "0" });
        Self(cmd)
    }
}

impl Function for ChestRecorded {
    const NAME: &'static str = name::CHEST_RECORDED;
    /// Whether the award holds the chest.
    type Reply = bool;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// `hunt_verdict_send(shard_verdicts; award_id, chest_key, cap) -> 1`: asks `shard_id` to record
/// that `award_id` holds `chest_key`. [`ErrorCode::InboxFull`] when the shard's verdict stream
/// holds `cap` entries.
#[derive(Debug, Clone)]
pub struct VerdictSend(Cmd);

impl VerdictSend {
    /// Asks `shard_id` to record `award_id` as the holder of `chest_key`.
    #[must_use]
    pub fn new(shard_id: u32, award_id: &str, chest_key: &str, cap: u64) -> Self {
        let mut cmd = fcall_cmd(name::VERDICT_SEND, &[&keys::shard_verdicts(shard_id)]);
        cmd.arg(award_id).arg(chest_key).arg(cap);
        Self(cmd)
    }
}

impl Function for VerdictSend {
    const NAME: &'static str = name::VERDICT_SEND;
    type Reply = u64;
    const ERRORS: &'static [ErrorCode] = &[ErrorCode::InboxFull];

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}
