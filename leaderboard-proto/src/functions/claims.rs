//! `hunt_claims_state`, `hunt_claims_join`, `hunt_claims_open`, `hunt_restore_clue`,
//! `hunt_restore_chest`: the claims gate, and putting back the decisions shard files record.
//!
//! Design constraints:
//! - A Redis that lost its data (restarted empty, flushed) is noticed from `hunt:claims`: the
//!   state is missing, or names another incarnation than the one a process knew. The process that
//!   finds it missing creates it under a new incarnation with the gate closed.
//! - The gate opens once every expected shard has restored what its file records and joined;
//!   until then the claim functions answer [`ErrorCode::Recovering`](super::ErrorCode). The
//!   operator may open it without a shard gone for good ([`ClaimsOpen`]).
//! - Restoring never lowers a token or a wave and never replaces a holder, so shards restore in
//!   any order, any number of times.
//! - A claim function is gated atomically when it gets the state key beside its own
//!   ([`Gate::Atomic`], one Redis); on Redis Cluster the state lives in another slot and the
//!   caller reads it just before the call ([`Gate::Checked`]).

use redis::{Cmd, FromRedisValue, Value};

use super::{Function, fcall_cmd, name};
use crate::keys;

/// How a claim function is gated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate<'a> {
    /// Not gated: the caller does not take part in the claims gate (tests, benchmarks).
    Off,
    /// The function checks `hunt:claims` itself, in the same call: it must name this
    /// incarnation and be open. Only where every key is reachable in one call (not Cluster).
    Atomic(&'a str),
    /// The caller read the gate open under its incarnation just before the call (Cluster).
    Checked,
}

impl Gate<'_> {
    /// `FCALL function` with `key` and, when atomic, the claims state.
    pub(super) fn cmd(self, function: &str, key: &str) -> Cmd {
        match self {
            Gate::Atomic(_) => fcall_cmd(function, &[key, keys::CLAIMS]),
            Gate::Off | Gate::Checked => fcall_cmd(function, &[key]),
        }
    }

    /// Adds the incarnation argument an atomic gate needs, after the function's own.
    pub(super) fn finish(self, cmd: &mut Cmd) {
        if let Gate::Atomic(incarnation) = self {
            cmd.arg(incarnation);
        }
    }
}

/// `hunt_claims_state(claims; fresh_incarnation) -> {incarnation, open, joined, expected}`:
/// reads the claims gate, creating it closed under `fresh_incarnation` when it is missing.
#[derive(Debug, Clone)]
pub struct ClaimsState(Cmd);

impl ClaimsState {
    /// Reads the gate; `fresh_incarnation` names a state created by this call.
    #[must_use]
    pub fn new(fresh_incarnation: &str) -> Self {
        let mut cmd = fcall_cmd(name::CLAIMS_STATE, &[keys::CLAIMS]);
        cmd.arg(fresh_incarnation);
        Self(cmd)
    }
}

impl Function for ClaimsState {
    const NAME: &'static str = name::CLAIMS_STATE;
    type Reply = GateState;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// The claims gate as Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateState {
    /// The incarnation the claim state belongs to.
    pub incarnation: String,
    /// Whether claims are answered.
    pub open: bool,
    /// Shards that restored their decisions under this incarnation.
    pub joined: u64,
    /// Shards expected to before the gate opens by itself.
    pub expected: u64,
}

impl FromRedisValue for GateState {
    fn from_redis_value(value: Value) -> Result<Self, redis::ParsingError> {
        let (incarnation, open, joined, expected): (String, i64, u64, u64) =
            FromRedisValue::from_redis_value(value)?;
        Ok(Self {
            incarnation,
            open: open == 1,
            joined,
            expected,
        })
    }
}

/// `hunt_claims_join(claims; incarnation, shard_id, expected) -> {joined, open}`: `shard_id`
/// restored its decisions under `incarnation`.
#[derive(Debug, Clone)]
pub struct ClaimsJoin(Cmd);

impl ClaimsJoin {
    /// `shard_id` joins under `incarnation`, expecting `expected` shards in all.
    #[must_use]
    pub fn new(incarnation: &str, shard_id: u32, expected: u32) -> Self {
        let mut cmd = fcall_cmd(name::CLAIMS_JOIN, &[keys::CLAIMS]);
        cmd.arg(incarnation).arg(shard_id).arg(expected);
        Self(cmd)
    }
}

impl Function for ClaimsJoin {
    const NAME: &'static str = name::CLAIMS_JOIN;
    type Reply = Joined;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// What [`ClaimsJoin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// Joined; whether the gate is open now.
    Joined {
        /// The gate is open.
        open: bool,
    },
    /// The incarnation is not the current one: Redis lost data again, restore again.
    Superseded,
}

impl FromRedisValue for Joined {
    fn from_redis_value(value: Value) -> Result<Self, redis::ParsingError> {
        let (joined, open): (i64, i64) = FromRedisValue::from_redis_value(value)?;
        Ok(if joined == 1 {
            Self::Joined { open: open == 1 }
        } else {
            Self::Superseded
        })
    }
}

/// `hunt_claims_open(claims) -> {incarnation, joined, expected}`: opens the gate by hand.
#[derive(Debug, Clone)]
pub struct ClaimsOpen(Cmd);

impl ClaimsOpen {
    /// Opens the gate.
    #[must_use]
    pub fn new() -> Self {
        Self(fcall_cmd(name::CLAIMS_OPEN, &[keys::CLAIMS]))
    }
}

impl Default for ClaimsOpen {
    fn default() -> Self {
        Self::new()
    }
}

impl Function for ClaimsOpen {
    const NAME: &'static str = name::CLAIMS_OPEN;
    /// The incarnation opened (empty when there was no state), shards joined, shards expected.
    type Reply = (String, u64, u64);

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// `hunt_restore_clue(clue; wave, token, holder) -> 1`: puts back what a shard file records of
/// a clue.
#[derive(Debug, Clone)]
pub struct RestoreClue(Cmd);

impl RestoreClue {
    /// `clue_id` was opened up to `wave`, handed out `token`, and (when given) held by `holder`
    /// in `wave`.
    #[must_use]
    pub fn new(clue_id: &str, wave: u32, token: u64, holder: Option<&str>) -> Self {
        let mut cmd = fcall_cmd(name::RESTORE_CLUE, &[&keys::clue(clue_id)]);
        cmd.arg(wave).arg(token).arg(holder.unwrap_or(""));
        Self(cmd)
    }
}

impl Function for RestoreClue {
    const NAME: &'static str = name::RESTORE_CLUE;
    type Reply = i64;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// `hunt_restore_chest(chest; award_id, ttl_s) -> {1, award_id} | {0, holder_award_id}`: puts
/// back a chest claim a shard file records.
#[derive(Debug, Clone)]
pub struct RestoreChest(Cmd);

impl RestoreChest {
    /// `award_id` holds `chest_key`.
    #[must_use]
    pub fn new(chest_key: &str, award_id: &str) -> Self {
        let mut cmd = fcall_cmd(
            name::RESTORE_CHEST,
            &[&keys::chest(chest_key), &keys::chest_recorded(chest_key)],
        );
        cmd.arg(award_id).arg(super::CHEST_TTL_SECONDS);
        Self(cmd)
    }
}

impl Function for RestoreChest {
    const NAME: &'static str = name::RESTORE_CHEST;
    type Reply = super::ChestClaim;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}
