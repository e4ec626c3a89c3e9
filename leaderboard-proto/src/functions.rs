//! The `hunt` Redis Functions library and one typed binding per function.
//!
//! The Lua source lives in `lua/hunt.lua` (limits written in at build time) and is embedded
//! here: it is the only Lua in the workspace. Every function has one binding with the same
//! verbs: a command builder (`new`, plus a method per repeated argument), the [`Function`]
//! trait naming its reply type and the error codes it may answer ([`ErrorCode`]). Sending a
//! binding, with the reload a Redis that lost its data needs, is `hunt-redis`'s.
//!
//! | group | functions |
//! | --- | --- |
//! | [`publish`] | `hunt_publish` |
//! | [`epoch`] | `hunt_next_epoch` |
//! | [`lease`] | `hunt_lease_acquire`, `hunt_lease_renew`, `hunt_lease_release` |
//! | [`apply`] | `hunt_apply` |
//! | [`clue`] | `hunt_open_clue`, `hunt_claim_clue`, `hunt_check_clue` |
//! | [`chest`] | `hunt_claim_chest` |
//! | [`claims`] | `hunt_claims_state`, `hunt_claims_join`, `hunt_claims_open`, `hunt_restore_clue`, `hunt_restore_chest` |
//! | [`award`] | `hunt_award_pending`, `hunt_award_settle`, `hunt_award_finish`, `hunt_award_expire` |
//! | [`compensate`] | `hunt_compensate`, `hunt_inbox_ack` |
//!
//! Design constraints:
//! - Every key a function touches is passed in `KEYS`, and all keys of one call share a hash
//!   tag, so each call is single-slot and runs unchanged on Redis Cluster.
//! - No function reads the clock to decide anything: ordering comes from counters and fences.

use redis::{Cmd, FromRedisValue, RedisError};

pub mod apply;
pub mod award;
pub mod chest;
pub mod claims;
pub mod clue;
pub mod compensate;
pub mod epoch;
pub mod lease;
pub mod publish;

pub use apply::{Applied, Apply, ApplyEntry, ApplyKind};
pub use award::{
    AwardExpire, AwardFinish, AwardRecord, AwardSettle, AwardState, AwardsWaiting, Settled, Waiting,
};
pub use chest::{CHEST_TTL_SECONDS, ChestClaim, ChestRecorded, ClaimChest, VerdictSend};
pub use claims::{
    ClaimsJoin, ClaimsOpen, ClaimsState, Gate, GateState, Joined, RestoreChest, RestoreClue,
};
pub use clue::{CheckClue, ClaimClue, ClueClaim, ClueOpened, OpenClue, TokenCheck};
pub use compensate::{Compensate, InboxAck};
pub use epoch::NextEpoch;
pub use lease::{LeaseAcquire, LeaseAcquired, LeaseRelease, LeaseRenew};
pub use publish::{Publish, Published};

/// One function of the library, called with one `FCALL`.
pub trait Function {
    /// The function's name, as registered by the library.
    const NAME: &'static str;
    /// Its reply, decoded.
    type Reply: FromRedisValue;
    /// The error codes it may answer besides Redis's own.
    const ERRORS: &'static [ErrorCode] = &[];

    /// The `FCALL` to send (sent again as it is after a library reload).
    fn cmd(&self) -> &Cmd;
}

/// An error a library function answers on purpose: the first word of its error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The fence token is not the tier's current one: another router owns the tier now (or
    /// Redis lost the fence). The caller drops the tier.
    Fenced,
    /// The shard's compensation inbox is full: the compensation waits for a later step.
    InboxFull,
    /// The claims gate is closed (Redis lost its data and the claim state is being restored
    /// from the shard files) or names another incarnation: retry later.
    Recovering,
}

impl ErrorCode {
    /// The code as Redis sends it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fenced => "FENCED",
            Self::InboxFull => "INBOX_FULL",
            Self::Recovering => "RECOVERING",
        }
    }

    /// The code `err` carries, if it is one of the library's; for a pipeline's error, the first
    /// of its commands' codes that is.
    #[must_use]
    pub fn of(err: &RedisError) -> Option<Self> {
        if let Some(code) = err.code().and_then(Self::named) {
            return Some(code);
        }
        err.clone()
            .into_server_errors()?
            .iter()
            .find_map(|(_, error)| Self::named(error.code()))
    }

    fn named(code: &str) -> Option<Self> {
        match code {
            "FENCED" => Some(Self::Fenced),
            "INBOX_FULL" => Some(Self::InboxFull),
            "RECOVERING" => Some(Self::Recovering),
            _ => None,
        }
    }
}

/// `hunt_version() -> integer`: the version of the library Redis holds.
#[derive(Debug, Clone)]
pub struct Version(Cmd);

impl Version {
    /// Asks for the version.
    #[must_use]
    pub fn new() -> Self {
        Self(fcall_cmd(name::VERSION, &[]))
    }
}

impl Default for Version {
    fn default() -> Self {
        Self::new()
    }
}

impl Function for Version {
    const NAME: &'static str = name::VERSION;
    type Reply = i64;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// The library's name, as given in the source's `#!lua name=` line.
pub const LIBRARY_NAME: &str = "hunt";

/// The Lua source of the library.
pub const LIBRARY: &str = include_str!(concat!(env!("OUT_DIR"), "/hunt.lua"));

/// The version the embedded source reports through `hunt_version`.
pub const LIBRARY_VERSION: i64 = 10;

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
    /// `hunt_claim_clue(clue; player_id, solve_ms) -> {1, player_id, token, wave} |
    /// {0, holder_player_id, token, wave} | {-1}`.
    pub const CLAIM_CLUE: &str = "hunt_claim_clue";
    /// `hunt_check_clue(clue; player_id, token) -> ok | stale | future | not_holder | unknown`.
    pub const CHECK_CLUE: &str = "hunt_check_clue";
    /// `hunt_claim_chest(chest; award_id, ttl_s) -> {1, award_id} | {0, holder_award_id}`.
    pub const CLAIM_CHEST: &str = "hunt_claim_chest";
    /// `hunt_claims_state(claims; fresh_incarnation) -> {incarnation, open, joined, expected}`.
    pub const CLAIMS_STATE: &str = "hunt_claims_state";
    /// `hunt_claims_join(claims; incarnation, shard, expected) -> {1, open} | {0, 0}`.
    pub const CLAIMS_JOIN: &str = "hunt_claims_join";
    /// `hunt_claims_open(claims) -> {incarnation, joined, expected}`.
    pub const CLAIMS_OPEN: &str = "hunt_claims_open";
    /// `hunt_restore_clue(clue; wave, token, holder) -> 1`.
    pub const RESTORE_CLUE: &str = "hunt_restore_clue";
    /// `hunt_restore_chest(chest, chest_recorded; award_id, ttl_s) -> {1, award_id} |
    /// {0, holder_award_id}`.
    pub const RESTORE_CHEST: &str = "hunt_restore_chest";
    /// `hunt_chest_recorded(chest, chest_recorded; award_id, mark) -> 1 | 0`.
    pub const CHEST_RECORDED: &str = "hunt_chest_recorded";
    /// `hunt_verdict_send(shard_verdicts; award_id, chest_key, cap) -> 1`, or an `INBOX_FULL`
    /// error.
    pub const VERDICT_SEND: &str = "hunt_verdict_send";
    /// `hunt_award_pending(awards, awards_pending | awards_revoked; limit) -> {award_id,
    /// record, ...}`. Built by [`super::awards_waiting_cmd`].
    pub const AWARD_PENDING: &str = "hunt_award_pending";
    /// `hunt_award_settle(fence, awards, awards_pending, awards_settled, scores, members,
    /// awards_revoked, awards_confirming; token, now_ms, top_size, (award_id, holder)...) -> {confirmed, revoked,
    /// rejected, top_changed, revoked_id...}`, or a `FENCED` error. Built by
    /// [`super::award_settle_cmd`].
    pub const AWARD_SETTLE: &str = "hunt_award_settle";
    /// `hunt_compensate(inbox, inbox_sent; award_id, payload, now_ms, keep_ms, cap) -> 1 | 0`, or
    /// an `INBOX_FULL` error.
    pub const COMPENSATE: &str = "hunt_compensate";
    /// `hunt_inbox_ack(inbox; group, entry_id) -> deleted`.
    pub const INBOX_ACK: &str = "hunt_inbox_ack";
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
    name::CLAIMS_STATE,
    name::CLAIMS_JOIN,
    name::CLAIMS_OPEN,
    name::RESTORE_CLUE,
    name::RESTORE_CHEST,
    name::CHEST_RECORDED,
    name::VERDICT_SEND,
    name::AWARD_PENDING,
    name::AWARD_SETTLE,
    name::COMPENSATE,
    name::INBOX_ACK,
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

/// Builds an `FCALL` of `function` with `keys`; the bindings add the arguments.
#[must_use]
pub fn fcall_cmd(function: &str, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg(function).arg(keys.len());
    for key in keys {
        cmd.arg(*key);
    }
    cmd
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
    fn kind_codes_are_the_ones_the_library_reads() {
        for code in [apply::kind::CLUE, apply::kind::AWARD, apply::kind::WITHDRAW] {
            assert!(
                LIBRARY.contains(&format!("kind == '{code}'")),
                "hunt_apply does not read kind {code:?}"
            );
        }
    }

    #[test]
    fn error_codes_are_the_ones_the_library_raises() {
        for code in [
            ErrorCode::Fenced,
            ErrorCode::InboxFull,
            ErrorCode::Recovering,
        ] {
            assert!(
                LIBRARY.contains(&format!("error_reply('{} ", code.as_str())),
                "{code:?}"
            );
        }
        let raised: Vec<&str> = LIBRARY
            .match_indices("error_reply('")
            .filter_map(|(at, found)| LIBRARY[at + found.len()..].split(' ').next())
            .collect();
        for code in raised {
            assert!(
                [
                    ErrorCode::Fenced,
                    ErrorCode::InboxFull,
                    ErrorCode::Recovering
                ]
                .iter()
                .any(|known| known.as_str() == code),
                "the library raises {code}, which ErrorCode does not name"
            );
        }
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
