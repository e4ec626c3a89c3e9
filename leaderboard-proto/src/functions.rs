//! The `hunt` Redis Functions library and its loader.
//!
//! The Lua source lives in `lua/hunt.lua` and is embedded here: it is the only Lua in the
//! workspace. A Redis restarted without its data has lost every function, so each caller goes
//! through [`fcall`], which reloads the library on `Function not found` and retries once.
//!
//! Design constraints:
//! - Loading is idempotent: `FUNCTION LOAD REPLACE` of the same source changes nothing.
//! - An older process never replaces a newer library: [`ensure_loaded`] compares
//!   `hunt_version` with [`LIBRARY_VERSION`] and loads only when Redis has none or an older one.

use crate::keys;
use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, RedisError, RedisResult};

/// The library's name, as given in the source's `#!lua name=` line.
pub const LIBRARY_NAME: &str = "hunt";

/// The Lua source of the library.
pub const LIBRARY: &str = include_str!("../lua/hunt.lua");

/// The version the embedded source reports through `hunt_version`.
pub const LIBRARY_VERSION: i64 = 4;

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
    /// `hunt_apply(fence, applied, replay, scores, members, cursor;
    /// token, cursor, top_size, (shard, tier_seq, player, points)...) -> {applied, duplicates,
    /// gaps, rejected, top_changed}`, or a `FENCED` error.
    pub const APPLY: &str = "hunt_apply";
}

/// Digits of the order prefix of a leaderboard member (`hunt:{t<N>}:scores`): a member is the
/// prefix followed by the player id, written by `hunt_apply`.
pub const MEMBER_ORDER_WIDTH: usize = 16;

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
/// changes to the first `top_size` ranks; the caller adds each entry as
/// `.arg(shard_field).arg(tier_seq).arg(player).arg(points)`.
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
        ],
    );
    cmd.arg(token).arg(cursor).arg(top_size);
    cmd
}

/// Whether `err` says that a function (and so the library) is missing from Redis.
#[must_use]
pub fn is_function_missing(err: &RedisError) -> bool {
    err.detail()
        .is_some_and(|detail| detail.contains("Function not found"))
        || err.to_string().contains("Function not found")
}

/// Loads the library unless Redis already holds this version or a newer one.
///
/// # Errors
/// The Redis error when Redis cannot be reached or refuses the library.
pub async fn ensure_loaded<C: ConnectionLike + Send>(conn: &mut C) -> RedisResult<()> {
    let loaded: RedisResult<i64> = fcall_cmd(name::VERSION, &[]).query_async(conn).await;
    match loaded {
        Ok(version) if version >= LIBRARY_VERSION => Ok(()),
        Ok(_) => load(conn).await,
        Err(err) if is_function_missing(&err) => load(conn).await,
        Err(err) => Err(err),
    }
}

/// Loads (or replaces) the library unconditionally.
///
/// # Errors
/// The Redis error when Redis cannot be reached or refuses the library.
pub async fn load<C: ConnectionLike + Send>(conn: &mut C) -> RedisResult<()> {
    let _name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LIBRARY)
        .query_async(conn)
        .await?;
    Ok(())
}

/// Runs `cmd` (an `FCALL` built with [`fcall_cmd`]); when Redis has lost the library, loads it
/// and runs `cmd` once more.
///
/// # Errors
/// The Redis error of the call, or of the reload.
pub async fn fcall<T: FromRedisValue, C: ConnectionLike + Send>(
    conn: &mut C,
    cmd: &Cmd,
) -> RedisResult<T> {
    match cmd.query_async(conn).await {
        Err(err) if is_function_missing(&err) => {
            ensure_loaded(conn).await?;
            cmd.query_async(conn).await
        }
        other => other,
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
        for function in [
            name::VERSION,
            name::PUBLISH,
            name::NEXT_EPOCH,
            name::LEASE_ACQUIRE,
            name::LEASE_RELEASE,
            name::APPLY,
        ] {
            assert!(
                LIBRARY.contains(&format!("'{function}'")),
                "{function} is not registered"
            );
        }
    }
}
