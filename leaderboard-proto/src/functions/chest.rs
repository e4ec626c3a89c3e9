//! `hunt_claim_chest`: a chest goes to the first award that claims it.
//!
//! Design constraints:
//! - `SET NX EX`: the first award wins; claiming again as the holder is a win, so a retried
//!   claim is safe.
//! - The claim lives [`CHEST_TTL_SECONDS`]; no time-to-live decides a verdict already told
//!   (the award records and the shard files do).

use redis::{Cmd, FromRedisValue, Value};

use super::{ErrorCode, Function, Gate, name};
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
