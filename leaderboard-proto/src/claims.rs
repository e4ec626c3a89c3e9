//! Clue and chest claims and award records: the typed side of the `hunt` library's claim and
//! saga functions, shared by the shard writer (the fast path), the tier router (the saga and
//! its lookups) and the benchmarks.
//!
//! Design constraints:
//! - A clue claim is one compare-and-swap inside Redis (`hunt_claim_clue`): first solver wins,
//!   and the winner's token is greater than every earlier token of the clue. No clock decides
//!   anything; the solve time passed along is the shard's, kept for people.
//! - A clue exists once a wave opens it (`hunt_open_clue`); a claim of a clue never opened is
//!   [`ClueClaim::Unknown`], not a win.
//! - A chest goes to the first award that claims it (`SET NX EX`); claiming again as the holder
//!   is a win, so a retried claim is safe.
//! - Award records (`hunt:{t<N>}:awards`) are `<state>\t<chest>\t<player>\t<points>\t<shard>`:
//!   ids hold no control character, so a tab separates the fields.

use redis::{FromRedisValue, Value};

use crate::functions::{self, name};
use crate::keys;

/// How long a chest claim (and so an award's idempotency record) lives: 24 hours.
pub const CHEST_TTL_SECONDS: u64 = 24 * 60 * 60;

/// The outcome of a clue claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClueClaim {
    /// The hunter holds the clue (now, or already from an earlier claim) under `token`.
    Won {
        /// The fencing token: greater than every earlier token of the clue.
        token: u64,
        /// The wave the clue is open for.
        wave: u64,
    },
    /// Another hunter holds the clue.
    Held {
        /// The hunter holding it.
        hunter: String,
        /// The holder's token.
        token: u64,
        /// The wave the clue is open for.
        wave: u64,
    },
    /// No wave has opened this clue.
    Unknown,
}

impl FromRedisValue for ClueClaim {
    fn from_redis_value(value: Value) -> Result<Self, redis::ParsingError> {
        let reply: Vec<Value> = FromRedisValue::from_redis_value(value)?;
        let code: i64 = match reply.first() {
            Some(code) => FromRedisValue::from_redis_value_ref(code)?,
            None => return Err("hunt_claim_clue returned nothing".into()),
        };
        if code < 0 {
            return Ok(Self::Unknown);
        }
        let (_, hunter, token, wave): (i64, String, u64, u64) =
            FromRedisValue::from_redis_value(Value::Array(reply))?;
        Ok(if code == 1 {
            Self::Won { token, wave }
        } else {
            Self::Held {
                hunter,
                token,
                wave,
            }
        })
    }
}

/// What `hunt_check_clue` says of a token a write carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// The hunter holds the clue under exactly this token.
    Current,
    /// A later claim has a greater token: the write is stale.
    Stale,
    /// No claim of the clue has handed out this token yet.
    Future,
    /// The token is the current one, but the hunter does not hold the clue.
    NotHolder,
    /// No wave has opened this clue.
    Unknown,
}

impl FromRedisValue for TokenCheck {
    fn from_redis_value(value: Value) -> Result<Self, redis::ParsingError> {
        let word: String = FromRedisValue::from_redis_value(value)?;
        Ok(match word.as_str() {
            "ok" => Self::Current,
            "stale" => Self::Stale,
            "future" => Self::Future,
            "not_holder" => Self::NotHolder,
            "unknown" => Self::Unknown,
            other => return Err(format!("hunt_check_clue returned {other:?}").into()),
        })
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
        award_id: String,
    },
}

impl FromRedisValue for ChestClaim {
    fn from_redis_value(value: Value) -> Result<Self, redis::ParsingError> {
        let (won, holder): (i64, String) = FromRedisValue::from_redis_value(value)?;
        Ok(if won == 1 {
            Self::Won
        } else {
            Self::Held { award_id: holder }
        })
    }
}

/// The `FCALL hunt_claim_chest` of `chest_key` for `award_id`, held for [`CHEST_TTL_SECONDS`].
#[must_use]
pub fn claim_chest_cmd(chest_key: &str, award_id: &str) -> redis::Cmd {
    let mut cmd = functions::fcall_cmd(name::CLAIM_CHEST, &[&keys::chest(chest_key)]);
    cmd.arg(award_id).arg(CHEST_TTL_SECONDS);
    cmd
}

/// Where an award stands in the dedup saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwardState {
    /// Scored; its chest not yet claimed by the saga.
    Pending,
    /// Holds its chest (final).
    Confirmed,
    /// Lost its chest and its points; its shard not yet told.
    Revoked,
    /// Lost its chest and its points; its shard told through its inbox (final).
    Compensated,
    /// Withdrawn by its own shard: its points taken back, or never scored (final).
    Withdrawn,
}

impl AwardState {
    /// The word stored in the record.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Revoked => "revoked",
            Self::Compensated => "compensated",
            Self::Withdrawn => "withdrawn",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "pending" => Self::Pending,
            "confirmed" => Self::Confirmed,
            "revoked" => Self::Revoked,
            "compensated" => Self::Compensated,
            "withdrawn" => Self::Withdrawn,
            _ => return None,
        })
    }
}

/// An award as its tier's `hunt:{t<N>}:awards` hash records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwardRecord {
    /// Where it stands.
    pub state: AwardState,
    /// The chest it claims (empty for a withdrawal of an award never seen).
    pub chest_key: String,
    /// The player it scored for.
    pub player_id: String,
    /// The points it scored.
    pub points: i64,
    /// The shard that awarded it.
    pub shard_id: u32,
}

impl AwardRecord {
    /// Parses a stored record; `None` for anything `hunt_apply` did not write.
    #[must_use]
    pub fn parse(record: &str) -> Option<Self> {
        let mut fields = record.split('\t');
        let state = AwardState::parse(fields.next()?)?;
        let chest_key = fields.next()?.to_owned();
        let player_id = fields.next()?.to_owned();
        let points = fields.next()?.parse().ok()?;
        let shard_id = fields.next()?.parse().ok()?;
        if fields.next().is_some() {
            return None;
        }
        Some(Self {
            state,
            chest_key,
            player_id,
            points,
            shard_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_as_hunt_apply_writes_them() {
        assert_eq!(
            AwardRecord::parse("pending\tnorth-gate\tada\t50\t7"),
            Some(AwardRecord {
                state: AwardState::Pending,
                chest_key: "north-gate".into(),
                player_id: "ada".into(),
                points: 50,
                shard_id: 7,
            })
        );
        assert_eq!(
            AwardRecord::parse("withdrawn\t\tada\t0\t7").map(|r| r.state),
            Some(AwardState::Withdrawn)
        );
        for bad in [
            "",
            "pending",
            "lost\tc\tp\t1\t1",
            "pending\tc\tp\tx\t1",
            "pending\tc\tp\t1\t1\textra",
        ] {
            assert_eq!(AwardRecord::parse(bad), None, "{bad:?}");
        }
        for state in [
            AwardState::Pending,
            AwardState::Confirmed,
            AwardState::Revoked,
            AwardState::Compensated,
            AwardState::Withdrawn,
        ] {
            assert_eq!(AwardState::parse(state.as_str()), Some(state));
        }
    }
}
