//! Clue and chest claims, sent: the async side of `leaderboard_proto::claims`, through
//! [`fcall`] (so a library lost with Redis's data is reloaded).

use leaderboard_proto::claims::{ChestClaim, ClueClaim, TokenCheck, claim_chest_cmd};
use leaderboard_proto::functions::{self, name};
use leaderboard_proto::keys;
use redis::RedisResult;

use crate::connection::Primaries;
use crate::library::fcall;

/// Opens `clue_id` for `wave` (1 or more); returns whether it was opened (false when the clue is
/// already open for this wave or a later one). Ids must be valid ([`leaderboard_proto::validate::id`]).
///
/// # Errors
/// The Redis error.
pub async fn open_clue<C: Primaries>(conn: &mut C, clue_id: &str, wave: u64) -> RedisResult<bool> {
    let mut cmd = functions::fcall_cmd(name::OPEN_CLUE, &[&keys::clue(clue_id)]);
    cmd.arg(wave);
    let (opened, _wave): (i64, u64) = fcall(conn, &cmd).await?;
    Ok(opened == 1)
}

/// Claims `clue_id` for `hunter`, recording `solve_ms` (the shard's clock, for people).
///
/// # Errors
/// The Redis error.
pub async fn claim_clue<C: Primaries>(
    conn: &mut C,
    clue_id: &str,
    hunter: &str,
    solve_ms: i64,
) -> RedisResult<ClueClaim> {
    let mut cmd = functions::fcall_cmd(name::CLAIM_CLUE, &[&keys::clue(clue_id)]);
    cmd.arg(hunter).arg(solve_ms);
    fcall(conn, &cmd).await
}

/// Checks the token a write of `hunter` on `clue_id` carries.
///
/// # Errors
/// The Redis error.
pub async fn check_clue<C: Primaries>(
    conn: &mut C,
    clue_id: &str,
    hunter: &str,
    token: u64,
) -> RedisResult<TokenCheck> {
    let mut cmd = functions::fcall_cmd(name::CHECK_CLUE, &[&keys::clue(clue_id)]);
    cmd.arg(hunter).arg(token);
    fcall(conn, &cmd).await
}

/// Claims `chest_key` for `award_id`.
///
/// # Errors
/// The Redis error.
pub async fn claim_chest<C: Primaries>(
    conn: &mut C,
    chest_key: &str,
    award_id: &str,
) -> RedisResult<ChestClaim> {
    fcall(conn, &claim_chest_cmd(chest_key, award_id)).await
}
