//! The `hunt` Redis Functions library and the commands that call it.
//!
//! The Lua source lives in `lua/hunt.lua` and is embedded here: it is the only Lua in the
//! workspace. Calling it (with the reload a Redis that lost its data needs) is `hunt-redis`'s.

use crate::v1::HuntEvent;
use crate::v1::hunt_event::Kind;
use crate::{keys, validate};
use redis::{Cmd, FromRedisValue};

/// The library's name, as given in the source's `#!lua name=` line.
pub const LIBRARY_NAME: &str = "hunt";

/// The Lua source of the library.
pub const LIBRARY: &str = include_str!(concat!(env!("OUT_DIR"), "/hunt.lua"));

/// The version the embedded source reports through `hunt_version`.
pub const LIBRARY_VERSION: i64 = 6;

/// Function names, one constant per function of the library.
pub mod name {
    /// `hunt_version() -> integer`.
    pub const VERSION: &str = "hunt_version";
    /// `hunt_publish(stream, published; shard, cap, floor, highest_tier_seq, payload...)
    /// -> {added, mark}`.
    pub const PUBLISH: &str = "hunt_publish";
    /// `hunt_next_epoch(epoch_key; floor) -> epoch`.
    pub const NEXT_EPOCH: &str = "hunt_next_epoch";
    /// `hunt_lease_acquire(lease, fence; router, ttl_ms) -> {1, token} | {0, holder}`.
    pub const LEASE_ACQUIRE: &str = "hunt_lease_acquire";
    /// `hunt_lease_renew(lease, fence; router, ttl_ms, token) -> token`, or a `FENCED` error.
    pub const LEASE_RENEW: &str = "hunt_lease_renew";
    /// `hunt_lease_release(lease; router) -> 1 | 0`.
    pub const LEASE_RELEASE: &str = "hunt_lease_release";
    /// `hunt_apply(fence, applied, replay, scores, members, cursor, clues, awards,
    /// awards_pending; token, cursor, top_size, (shard, tier_seq, player, points, kind, ref,
    /// ref2)...) -> {applied, duplicates, gaps, rejected, top_changed, awards, stale}`, or a
    /// `FENCED` error. Built by [`super::apply_cmd`] and [`super::ApplyEntry`].
    pub const APPLY: &str = "hunt_apply";
    /// `hunt_open_clue(clue; wave) -> {opened, wave}`.
    pub const OPEN_CLUE: &str = "hunt_open_clue";
    /// `hunt_claim_clue(clue; hunter, solve_ms) -> {1, hunter, token, wave} | {0, holder, token,
    /// wave} | {-1}`.
    pub const CLAIM_CLUE: &str = "hunt_claim_clue";
    /// `hunt_check_clue(clue; hunter, token) -> ok | stale | future | not_holder | unknown`.
    pub const CHECK_CLUE: &str = "hunt_check_clue";
    /// `hunt_claim_chest(chest; award_id, ttl_s) -> {1, award_id} | {0, holder}`.
    pub const CLAIM_CHEST: &str = "hunt_claim_chest";
    /// `hunt_award_pending(awards, awards_pending | awards_revoked; limit) -> {award_id,
    /// record, ...}`. Built by [`super::awards_waiting_cmd`].
    pub const AWARD_PENDING: &str = "hunt_award_pending";
    /// `hunt_award_settle(fence, awards, awards_pending, awards_settled, scores, members,
    /// awards_revoked; token, now_ms, top_size, (award_id, holder)...) -> {confirmed, revoked,
    /// rejected, top_changed, revoked_id...}`, or a `FENCED` error. Built by
    /// [`super::award_settle_cmd`].
    pub const AWARD_SETTLE: &str = "hunt_award_settle";
    /// `hunt_compensate(inbox, inbox_sent; award_id, payload, now_ms, keep_ms, cap) -> 1 | 0`, or
    /// an `INBOX_FULL` error.
    pub const COMPENSATE: &str = "hunt_compensate";
    /// `hunt_award_finish(fence, awards, awards_revoked, awards_settled; token, now_ms,
    /// award_id...) -> finished`, or a `FENCED` error. Built by [`super::award_finish_cmd`].
    pub const AWARD_FINISH: &str = "hunt_award_finish";
    /// `hunt_award_expire(awards, awards_settled; before_ms, limit) -> forgotten`.
    pub const AWARD_EXPIRE: &str = "hunt_award_expire";
}

/// Every function of the library, for checks that each one is registered.
pub const ALL: &[&str] = &[
    name::VERSION,
    name::PUBLISH,
    name::NEXT_EPOCH,
    name::LEASE_ACQUIRE,
    name::LEASE_RENEW,
    name::LEASE_RELEASE,
    name::APPLY,
    name::OPEN_CLUE,
    name::CLAIM_CLUE,
    name::CHECK_CLUE,
    name::CLAIM_CHEST,
    name::AWARD_PENDING,
    name::AWARD_SETTLE,
    name::COMPENSATE,
    name::AWARD_FINISH,
    name::AWARD_EXPIRE,
];

pub use crate::limits::MEMBER_ORDER_WIDTH;

/// The player id inside a leaderboard member, or `None` for a member `hunt_apply` did not write.
#[must_use]
pub fn player_of_member(member: &str) -> Option<&str> {
    let (order, player) = member.split_at_checked(MEMBER_ORDER_WIDTH)?;
    (order.bytes().all(|b| b.is_ascii_digit()) && !player.is_empty()).then_some(player)
}

/// Builds an `FCALL` of `function` with `keys`; the caller adds the arguments with `.arg(..)`.
#[must_use]
pub fn fcall_cmd(function: &str, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg(function).arg(keys.len());
    for key in keys {
        cmd.arg(*key);
    }
    cmd
}

/// Builds the `FCALL hunt_apply` of `tier` under fence `token`, storing `cursor`, reporting
/// changes to the first `top_size` ranks; the caller adds each entry with [`ApplyEntry::push`].
#[must_use]
pub fn apply_cmd(tier: u32, token: &str, cursor: &str, top_size: u64) -> Cmd {
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
    cmd
}

/// Which of a tier's waiting awards [`awards_waiting_cmd`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Scored, their chests not yet claimed by the saga (`hunt:{t<N>}:awards:pending`).
    Pending,
    /// Revoked, their shards not yet told (`hunt:{t<N>}:awards:revoked`).
    Revoked,
}

impl Waiting {
    /// The sorted set holding these awards of `tier`, in apply order.
    #[must_use]
    pub fn key(self, tier: u32) -> String {
        match self {
            Self::Pending => keys::tier_awards_pending(tier),
            Self::Revoked => keys::tier_awards_revoked(tier),
        }
    }
}

/// Builds the `FCALL hunt_award_pending` reading the oldest `limit` awards of `tier` that are
/// `waiting`, with their records.
#[must_use]
pub fn awards_waiting_cmd(tier: u32, waiting: Waiting, limit: usize) -> Cmd {
    let mut cmd = fcall_cmd(
        name::AWARD_PENDING,
        &[&keys::tier_awards(tier), &waiting.key(tier)],
    );
    cmd.arg(limit);
    cmd
}

/// Builds the `FCALL hunt_award_settle` of `tier` under fence `token` at `now_ms` (the router's
/// clock, for record expiry only), reporting changes to the first `top_size` ranks; the caller
/// adds each `(award_id, chest_holder)` pair.
#[must_use]
pub fn award_settle_cmd(tier: u32, token: &str, now_ms: i64, top_size: u64) -> Cmd {
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
        ],
    );
    cmd.arg(token).arg(now_ms).arg(top_size);
    cmd
}

/// Builds the `FCALL hunt_award_finish` of `tier` under fence `token` at `now_ms`; the caller
/// adds the award ids whose shards have been told.
#[must_use]
pub fn award_finish_cmd(tier: u32, token: &str, now_ms: i64) -> Cmd {
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
    cmd
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

    /// Adds the entry's seven arguments to a command built by [`apply_cmd`].
    pub fn push(&self, cmd: &mut Cmd) {
        cmd.arg(keys::shard_field(self.shard_id))
            .arg(self.tier_seq)
            .arg(self.player)
            .arg(self.points);
        match self.kind {
            ApplyKind::Points => cmd.arg("").arg("").arg(""),
            ApplyKind::Clue { clue_id, token } => cmd.arg("c").arg(clue_id).arg(token),
            ApplyKind::Award {
                award_id,
                chest_key,
            } => cmd.arg("a").arg(award_id).arg(chest_key),
            ApplyKind::Withdraw { award_id } => cmd.arg("r").arg(award_id).arg(""),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_carry_their_player_after_the_order_prefix() {
        assert_eq!(player_of_member("9007199254740990ada"), Some("ada"));
        assert_eq!(player_of_member("9007199254740990"), None);
        assert_eq!(player_of_member("90071992547409x0ada"), None);
        assert_eq!(player_of_member("short"), None);
    }

    #[test]
    fn source_names_the_library_and_its_version() {
        assert!(LIBRARY.starts_with(&format!("#!lua name={LIBRARY_NAME}\n")));
        assert!(LIBRARY.contains(&format!("local LIBRARY_VERSION = {LIBRARY_VERSION}\n")));
        for function in ALL {
            assert!(
                LIBRARY.contains(&format!("'{function}'")),
                "{function} is not registered"
            );
        }
    }
}
