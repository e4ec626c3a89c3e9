//! `hunt_apply`: a batch of a tier's stream entries applied exactly once.
//!
//! Design constraints:
//! - Fenced: a token that is not the tier's current fence changes nothing
//!   ([`ErrorCode::Fenced`]).
//! - Per shard, an entry at or below the applied watermark is a duplicate and skipped; the next
//!   one is applied; an entry past a hole records a replay request and the shard's later entries
//!   in the batch are skipped. The watermarks, the board, the award records and the cursor
//!   change in one atomic call.
//! - An entry that scores nothing in the tier (a wave reset, another tier, an invalid id or
//!   points) still moves its shard's watermark: nothing can block a shard's stream.

use redis::{Cmd, FromRedisValue};

use super::{ErrorCode, Function, fcall_cmd, name};
use crate::v1::HuntEvent;
use crate::v1::hunt_event::Kind;
use crate::{keys, validate};

/// The kind codes `hunt_apply` reads in each entry's fifth argument (`lua/hunt.lua`, `apply`).
pub mod kind {
    /// Points for the player.
    pub const POINTS: &str = "";
    /// A clue solve: `ref` is the clue id, `ref2` the claim's token.
    pub const CLUE: &str = "c";
    /// A chest award: `ref` is the award id, `ref2` the chest key.
    pub const AWARD: &str = "a";
    /// The shard withdrawing its own award: `ref` is the award id.
    pub const WITHDRAW: &str = "r";
}

/// `hunt_apply(fence, applied, replay, scores, members, cursor, clues, awards, awards_pending;
/// token, cursor, top_size, (shard, tier_seq, player, points, kind, ref, ref2)...)`: applies a
/// batch of stream entries exactly once and stores the stream cursor, atomically.
/// [`ErrorCode::Fenced`] under a stale token.
#[derive(Debug, Clone)]
pub struct Apply(Cmd);

impl Apply {
    /// A batch of `tier` under fence `token`, storing `cursor`, reporting changes to the first
    /// `top_size` ranks; the caller adds each entry with [`Apply::entry`].
    #[must_use]
    pub fn new(tier: u32, token: &str, cursor: &str, top_size: u64) -> Self {
        let mut cmd = fcall_cmd(
            name::APPLY,
            &[
                &keys::tier_fence(tier),
                &keys::tier_applied(tier),
                &keys::tier_replay(tier),
                &keys::tier_scores(tier),
                &keys::tier_members(tier),
                &keys::tier_cursor(tier),
                &keys::tier_clues(tier),
                &keys::tier_awards(tier),
                &keys::tier_awards_pending(tier),
            ],
        );
        cmd.arg(token).arg(cursor).arg(top_size);
        Self(cmd)
    }

    /// Adds one entry, in stream order.
    pub fn entry(&mut self, entry: &ApplyEntry<'_>) -> &mut Self {
        entry.push(&mut self.0);
        self
    }
}

impl Function for Apply {
    const NAME: &'static str = name::APPLY;
    type Reply = Applied;
    const ERRORS: &'static [ErrorCode] = &[ErrorCode::Fenced];

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// What `hunt_apply` does with one stream entry, beyond moving its shard's watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyKind<'a> {
    /// Points for the player (none when the player is empty: a wave reset).
    Points,
    /// A clue solve: scores only with a token above every one applied for the clue in the tier.
    Clue {
        /// The clue solved.
        clue_id: &'a str,
        /// The claim's fencing token.
        token: u64,
    },
    /// A chest award: scores once per award id and waits for the saga as pending.
    Award {
        /// The award's id.
        award_id: &'a str,
        /// The chest it claims.
        chest_key: &'a str,
    },
    /// The shard withdrawing one of its own awards: a pending award's points are taken back.
    Withdraw {
        /// The award withdrawn.
        award_id: &'a str,
    },
}

/// One stream entry as `hunt_apply` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyEntry<'a> {
    /// The shard that recorded the entry.
    pub shard_id: u32,
    /// Its place in the (shard, tier) sequence.
    pub tier_seq: u64,
    /// The player it scores for; empty when it scores nothing.
    pub player: &'a str,
    /// The points it adds (for [`ApplyKind::Withdraw`], ignored: the award's record decides).
    pub points: i64,
    /// What else it does.
    pub kind: ApplyKind<'a>,
}

impl<'a> ApplyEntry<'a> {
    /// The entry for `event` read from `tier`'s stream. An event that scores nothing in this tier
    /// (a wave reset, another tier, invalid ids or points) still moves its shard's watermark.
    #[must_use]
    pub fn of(event: &'a HuntEvent, tier: u32) -> Self {
        let nothing = Self {
            shard_id: event.shard_id,
            tier_seq: event.tier_seq,
            player: "",
            points: 0,
            kind: ApplyKind::Points,
        };
        if event.tier != tier {
            return nothing;
        }
        let (player, points, kind) = match &event.kind {
            Some(Kind::ScoreGained(e)) => (e.player_id.as_str(), e.points, ApplyKind::Points),
            Some(Kind::ClueSolved(e)) => {
                if validate::id("clue_id", &e.clue_id).is_err() || e.token == 0 {
                    return nothing;
                }
                let kind = ApplyKind::Clue {
                    clue_id: &e.clue_id,
                    token: e.token,
                };
                (e.player_id.as_str(), e.points, kind)
            }
            Some(Kind::TreasureAwarded(e)) => {
                if validate::id("award_id", &e.award_id).is_err()
                    || validate::id("chest_key", &e.chest_key).is_err()
                {
                    return nothing;
                }
                let kind = ApplyKind::Award {
                    award_id: &e.award_id,
                    chest_key: &e.chest_key,
                };
                (e.player_id.as_str(), e.points, kind)
            }
            Some(Kind::AwardRevoked(e)) => {
                if validate::id("award_id", &e.award_id).is_err() {
                    return nothing;
                }
                let kind = ApplyKind::Withdraw {
                    award_id: &e.award_id,
                };
                (e.player_id.as_str(), 0, kind)
            }
            Some(Kind::WaveReset(_)) | None => return nothing,
        };
        if validate::id("player_id", player).is_err() || validate::points("points", points).is_err()
        {
            return nothing;
        }
        Self {
            player,
            points,
            kind,
            ..nothing
        }
    }

    /// Adds the entry's seven arguments (see [`kind`] for the kind codes).
    fn push(&self, cmd: &mut Cmd) {
        cmd.arg(keys::shard_field(self.shard_id))
            .arg(self.tier_seq)
            .arg(self.player)
            .arg(self.points);
        match self.kind {
            ApplyKind::Points => cmd.arg(kind::POINTS).arg("").arg(""),
            ApplyKind::Clue { clue_id, token } => cmd.arg(kind::CLUE).arg(clue_id).arg(token),
            ApplyKind::Award {
                award_id,
                chest_key,
            } => cmd.arg(kind::AWARD).arg(award_id).arg(chest_key),
            ApplyKind::Withdraw { award_id } => cmd.arg(kind::WITHDRAW).arg(award_id).arg(""),
        };
    }
}

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
    /// Whether the batch may have changed the tier's first `top_size` ranks.
    pub top_changed: bool,
    /// Chest awards recorded as pending for the saga.
    pub awards: u64,
    /// Clue solves that scored nothing: their token was not above every one applied before.
    pub stale: u64,
}

impl FromRedisValue for Applied {
    fn from_redis_value(value: redis::Value) -> Result<Self, redis::ParsingError> {
        let (applied, duplicates, gaps, rejected, top, awards, stale): (
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
        ) = FromRedisValue::from_redis_value(value)?;
        Ok(Self {
            applied,
            duplicates,
            gaps,
            rejected,
            top_changed: top == 1,
            awards,
            stale,
        })
    }
}
