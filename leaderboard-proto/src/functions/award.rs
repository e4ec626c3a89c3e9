//! `hunt_award_pending`, `hunt_award_settle`, `hunt_award_finish`, `hunt_award_expire`: the
//! dedup saga's steps, each fenced (where it writes a board) and idempotent.
//!
//! Design constraints:
//! - Award records (`hunt:{t<N>}:awards`) are `<state>\t<chest>\t<player>\t<points>\t<shard>`:
//!   ids hold no control character, so a tab separates the fields.
//! - Only a pending award changes state in a settle, so a revoked award's points are taken back
//!   exactly once however often a settle is repeated.
//! - The router's clock passed along (`now_ms`) decides only when a settled record expires.

use redis::{Cmd, FromRedisValue, Value};

use super::{ErrorCode, Function, fcall_cmd, name};
use crate::keys;

/// Which of a tier's waiting awards [`AwardsWaiting`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Scored, their chests not yet claimed by the saga (`hunt:{t<N>}:awards:pending`).
    Pending,
    /// Revoked, their shards not yet told (`hunt:{t<N>}:awards:revoked`).
    Revoked,
    /// Confirmed, their shards not yet asked to record the verdict
    /// (`hunt:{t<N>}:awards:confirming`).
    Confirming,
}

impl Waiting {
    /// The sorted set holding these awards of `tier`, in apply order.
    #[must_use]
    pub fn key(self, tier: u32) -> String {
        match self {
            Self::Pending => keys::tier_awards_pending(tier),
            Self::Revoked => keys::tier_awards_revoked(tier),
            Self::Confirming => keys::tier_awards_confirming(tier),
        }
    }
}

/// `hunt_award_pending(awards, pending | revoked; limit) -> {award_id, record, ...}`: the oldest
/// `limit` awards of `tier` that are `waiting`, with their records (raw; parse each with
/// [`AwardRecord::parse`]).
#[derive(Debug, Clone)]
pub struct AwardsWaiting(Cmd);

impl AwardsWaiting {
    /// The oldest `limit` awards of `tier` that are `waiting`.
    #[must_use]
    pub fn new(tier: u32, waiting: Waiting, limit: usize) -> Self {
        let mut cmd = fcall_cmd(
            name::AWARD_PENDING,
            &[&keys::tier_awards(tier), &waiting.key(tier)],
        );
        cmd.arg(limit);
        Self(cmd)
    }
}

impl Function for AwardsWaiting {
    const NAME: &'static str = name::AWARD_PENDING;
    /// Award ids with their records, oldest first.
    type Reply = Vec<(String, String)>;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// `hunt_award_settle(fence, awards, pending, settled, scores, members, revoked, confirming;
/// token, now_ms,
/// top_size, (award_id, holder_award_id)...)`: confirms each pending award holding its chest and revokes
/// the others (their points taken back once). [`ErrorCode::Fenced`] under a stale token.
#[derive(Debug, Clone)]
pub struct AwardSettle(Cmd);

impl AwardSettle {
    /// A settle of `tier` under fence `token` at `now_ms`, reporting changes to the first
    /// `top_size` ranks; the caller adds each pair with [`AwardSettle::holder`].
    #[must_use]
    pub fn new(tier: u32, token: &str, now_ms: i64, top_size: u64) -> Self {
        let mut cmd = fcall_cmd(
            name::AWARD_SETTLE,
            &[
                &keys::tier_fence(tier),
                &keys::tier_awards(tier),
                &keys::tier_awards_pending(tier),
                &keys::tier_awards_settled(tier),
                &keys::tier_scores(tier),
                &keys::tier_members(tier),
                &keys::tier_awards_revoked(tier),
                &keys::tier_awards_confirming(tier),
            ],
        );
        cmd.arg(token).arg(now_ms).arg(top_size);
        Self(cmd)
    }

    /// Adds `award_id`, whose chest the award `holder_award_id` holds.
    pub fn holder(&mut self, award_id: &str, holder_award_id: &str) -> &mut Self {
        self.0.arg(award_id).arg(holder_award_id);
        self
    }
}

impl Function for AwardSettle {
    const NAME: &'static str = name::AWARD_SETTLE;
    type Reply = Settled;
    const ERRORS: &'static [ErrorCode] = &[ErrorCode::Fenced];

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// What [`AwardSettle`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Awards confirmed.
    pub confirmed: u64,
    /// Player totals refused because they would leave the exact range.
    pub rejected: u64,
    /// Whether the settle may have changed the tier's first `top_size` ranks.
    pub top_changed: bool,
    /// The awards revoked by this call.
    pub revoked_ids: Vec<String>,
}

impl FromRedisValue for Settled {
    fn from_redis_value(value: Value) -> Result<Self, redis::ParsingError> {
        let reply: Vec<Value> = FromRedisValue::from_redis_value(value)?;
        let mut fields = reply.into_iter();
        let mut number = |what: &str| -> Result<u64, redis::ParsingError> {
            match fields.next() {
                Some(value) => FromRedisValue::from_redis_value(value),
                None => Err(format!("hunt_award_settle returned no {what}").into()),
            }
        };
        let confirmed = number("confirmed count")?;
        let _revoked = number("revoked count")?;
        let rejected = number("rejected count")?;
        let top = number("top flag")?;
        let revoked_ids = fields
            .map(FromRedisValue::from_redis_value)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            confirmed,
            rejected,
            top_changed: top == 1,
            revoked_ids,
        })
    }
}

/// `hunt_award_finish(fence, awards, revoked, settled; token, now_ms, award_id...) -> finished`:
/// marks revoked awards whose shard has been told as compensated. [`ErrorCode::Fenced`] under a
/// stale token.
#[derive(Debug, Clone)]
pub struct AwardFinish(Cmd);

impl AwardFinish {
    /// A finish of `tier` under fence `token` at `now_ms`; the caller adds each award id told
    /// with [`AwardFinish::award`].
    #[must_use]
    pub fn new(tier: u32, token: &str, now_ms: i64) -> Self {
        let mut cmd = fcall_cmd(
            name::AWARD_FINISH,
            &[
                &keys::tier_fence(tier),
                &keys::tier_awards(tier),
                &keys::tier_awards_revoked(tier),
                &keys::tier_awards_settled(tier),
            ],
        );
        cmd.arg(token).arg(now_ms);
        Self(cmd)
    }

    /// Adds an award whose shard has been told.
    pub fn award(&mut self, award_id: &str) -> &mut Self {
        self.0.arg(award_id);
        self
    }
}

impl Function for AwardFinish {
    const NAME: &'static str = name::AWARD_FINISH;
    /// How many awards changed.
    type Reply = u64;
    const ERRORS: &'static [ErrorCode] = &[ErrorCode::Fenced];

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// `hunt_award_expire(awards, settled; before_ms, limit) -> forgotten`: forgets up to `limit`
/// awards of `tier` settled before `before_ms`.
#[derive(Debug, Clone)]
pub struct AwardExpire(Cmd);

impl AwardExpire {
    /// Forgets up to `limit` awards of `tier` settled before `before_ms`.
    #[must_use]
    pub fn new(tier: u32, before_ms: i64, limit: usize) -> Self {
        let mut cmd = fcall_cmd(
            name::AWARD_EXPIRE,
            &[&keys::tier_awards(tier), &keys::tier_awards_settled(tier)],
        );
        cmd.arg(before_ms).arg(limit);
        Self(cmd)
    }
}

impl Function for AwardExpire {
    const NAME: &'static str = name::AWARD_EXPIRE;
    /// How many were forgotten.
    type Reply = u64;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
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
