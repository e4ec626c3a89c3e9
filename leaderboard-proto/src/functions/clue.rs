//! `hunt_open_clue`, `hunt_claim_clue`, `hunt_check_clue`: first solver wins.
//!
//! Design constraints:
//! - A clue claim is one compare-and-swap inside Redis: first solver wins, and the winner's
//!   token is greater than every earlier token of the clue. No clock decides anything; the solve
//!   time passed along is the shard's, kept for people.
//! - A clue exists once a wave opens it; a claim of a clue never opened is
//!   [`ClueClaim::Unknown`], not a win.

use redis::{Cmd, FromRedisValue, Value};

use super::{ErrorCode, Function, Gate, name};
use crate::keys;

/// `hunt_open_clue(clue; wave) -> {opened, wave}`: opens `clue_id` to claims for `wave` (1 or
/// more). A wave at or below the stored one changes nothing, so a late reset never reopens a
/// clue claimed in a later wave. Ids must be valid ([`crate::validate::id`]).
#[derive(Debug, Clone)]
pub struct OpenClue(Cmd);

impl OpenClue {
    /// Opens `clue_id` for `wave`, through `gate`.
    #[must_use]
    pub fn new(clue_id: &str, wave: u32, gate: Gate<'_>) -> Self {
        let mut cmd = gate.cmd(name::OPEN_CLUE, &keys::clue(clue_id));
        cmd.arg(wave);
        gate.finish(&mut cmd);
        Self(cmd)
    }
}

impl Function for OpenClue {
    const ERRORS: &'static [ErrorCode] = &[ErrorCode::Recovering];
    const NAME: &'static str = name::OPEN_CLUE;
    type Reply = ClueOpened;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// What [`OpenClue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClueOpened {
    /// Whether the clue was opened (false: already open for this wave or a later one).
    pub opened: bool,
    /// The wave the clue is open for now.
    pub wave: u32,
}

impl FromRedisValue for ClueOpened {
    fn from_redis_value(value: Value) -> Result<Self, redis::ParsingError> {
        let (opened, wave): (i64, u32) = FromRedisValue::from_redis_value(value)?;
        Ok(Self {
            opened: opened == 1,
            wave,
        })
    }
}

/// `hunt_claim_clue(clue; player, solve_ms)`: claims `clue_id` for `player_id`, recording
/// `solve_ms` (the shard's clock, for people; never compared).
#[derive(Debug, Clone)]
pub struct ClaimClue(Cmd);

impl ClaimClue {
    /// `player_id` claiming `clue_id`, through `gate`.
    #[must_use]
    pub fn new(clue_id: &str, player_id: &str, solve_ms: i64, gate: Gate<'_>) -> Self {
        let mut cmd = gate.cmd(name::CLAIM_CLUE, &keys::clue(clue_id));
        cmd.arg(player_id).arg(solve_ms);
        gate.finish(&mut cmd);
        Self(cmd)
    }
}

impl Function for ClaimClue {
    const ERRORS: &'static [ErrorCode] = &[ErrorCode::Recovering];
    const NAME: &'static str = name::CLAIM_CLUE;
    type Reply = ClueClaim;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// `hunt_check_clue(clue; player, token)`: whether a write of `player_id` carrying `token` may
/// go ahead.
#[derive(Debug, Clone)]
pub struct CheckClue(Cmd);

impl CheckClue {
    /// The token a write of `player_id` on `clue_id` carries, checked through `gate`.
    #[must_use]
    pub fn new(clue_id: &str, player_id: &str, token: u64, gate: Gate<'_>) -> Self {
        let mut cmd = gate.cmd(name::CHECK_CLUE, &keys::clue(clue_id));
        cmd.arg(player_id).arg(token);
        gate.finish(&mut cmd);
        Self(cmd)
    }
}

impl Function for CheckClue {
    const ERRORS: &'static [ErrorCode] = &[ErrorCode::Recovering];
    const NAME: &'static str = name::CHECK_CLUE;
    type Reply = TokenCheck;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// The outcome of a clue claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClueClaim {
    /// The claiming player holds the clue (now, or already from an earlier claim) under
    /// `token`.
    Won {
        /// The fencing token: greater than every earlier token of the clue.
        token: u64,
        /// The wave the clue is open for.
        wave: u32,
    },
    /// Another player holds the clue.
    Held {
        /// The player holding it.
        holder_player_id: String,
        /// The holder's token.
        token: u64,
        /// The wave the clue is open for.
        wave: u32,
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
        let (_, holder_player_id, token, wave): (i64, String, u64, u32) =
            FromRedisValue::from_redis_value(Value::Array(reply))?;
        Ok(if code == 1 {
            Self::Won { token, wave }
        } else {
            Self::Held {
                holder_player_id,
                token,
                wave,
            }
        })
    }
}

/// What `hunt_check_clue` says of a token a write carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// The player holds the clue under exactly this token.
    Current,
    /// A later claim has a greater token: the write is stale.
    Stale,
    /// No claim of the clue has handed out this token yet.
    Future,
    /// The token is the current one, but the player does not hold the clue.
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
