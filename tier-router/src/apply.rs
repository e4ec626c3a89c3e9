//! The apply step: one batch of a tier's stream entries applied to its leaderboard exactly once,
//! by one `hunt_apply` call that also stores the tier's cursor. The tier worker (`worker.rs`)
//! reads the batches and runs this step under its fence token.
//!
//! Design constraints:
//! - One atomic call per batch: inside Redis, `hunt_apply` rejects a stale fence token
//!   (`FENCED`) before touching anything, skips an entry whose `tier_seq` its shard's applied
//!   watermark already covers, applies the next one, records a replay request at a gap (and
//!   skips that shard's later entries in the batch), then stores the cursor. A batch retried
//!   after a lost reply changes nothing twice.
//! - A batch costs Redis about 1 ms per 100 entries, and every claim and read waits behind it:
//!   the worker keeps batches near `apply_batch` entries.
//! - An entry that cannot be decoded is skipped, logged and counted; one that decodes but
//!   carries nothing to score (a wave reset, a mismatched tier, invalid points) is applied as a
//!   no-op, so its shard's watermark still moves.
//! - The reply tells whether the top [`CACHED_TOP`] ranks may have changed, so the cached top is
//!   read again only after a batch that could change it.

use std::time::Duration;

use hunt_redis::connection::{Connection, RedisTarget, Timeouts};
use hunt_redis::stream;
use leaderboard_proto::functions::{Apply, ApplyEntry, ErrorCode};
use leaderboard_proto::keys;
use leaderboard_proto::v1::HuntEvent;
use redis::RedisError;

use crate::config::{CACHED_TOP, RouterConfig};
use crate::metrics as m;

pub use leaderboard_proto::functions::Applied;

/// The (player, points) an event moves; `("", 0)` for one that scores nothing by itself (a wave
/// reset, an event of another tier, invalid ids or points, a withdrawal, whose points the
/// award's record decides).
#[must_use]
pub fn score_change(event: &HuntEvent, tier: u32) -> (&str, i64) {
    let entry = ApplyEntry::of(event, tier);
    (entry.player, entry.points)
}

/// Applies `events` (all of `tier`) under `token` and stores `cursor`, then the display names
/// the events carry (`hunt:{t<N>}:names`); tells whether the top [`CACHED_TOP`] ranks (or their
/// names) may have changed, and how many awards now wait for the saga.
///
/// # Errors
/// The Redis error; a stale token fails with the server error code `FENCED`.
pub async fn apply_batch(
    conn: &mut Connection,
    tier: u32,
    token: &str,
    cursor: &str,
    events: &[HuntEvent],
) -> redis::RedisResult<Applied> {
    let mut apply = Apply::new(tier, token, cursor, CACHED_TOP as u64);
    // (player, name) of each named event in batch order: one HSET gives each field the last
    // of its values, so a player's latest name wins without sorting them out here.
    let mut names: Vec<(&str, &str)> = Vec::new();
    for event in events {
        let entry = ApplyEntry::of(event, tier);
        if !event.display_name.is_empty() && !entry.player.is_empty() {
            names.push((entry.player, &event.display_name));
        }
        apply.entry(&entry);
    }
    let mut applied = hunt_redis::call(conn, &apply).await?;
    if !names.is_empty() {
        // A new name shows in the top even when no rank or score moved.
        applied.top_changed = true;
        // Beside the board, outside the fenced apply: a name is shown, never scored, and an
        // event applied again gives the same name.
        redis::cmd("HSET")
            .arg(keys::tier_names(tier))
            .arg(&names)
            .query_async::<u64>(conn)
            .await?;
    }
    Ok(applied)
}

/// Whether `err` is Redis refusing a stale fence token.
#[must_use]
pub fn is_fenced(err: &RedisError) -> bool {
    ErrorCode::of(err) == Some(ErrorCode::Fenced)
}

/// The events of `entries`, read from `tier`'s stream, in stream order. An entry that does not
/// decode is logged, counted and left out.
pub(crate) fn decode(tier: u32, entries: Vec<stream::RawEntry>) -> Vec<HuntEvent> {
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        match stream::decode(entry) {
            Ok((_, event)) => events.push(event),
            Err(err) => {
                metrics::counter!(m::MALFORMED).increment(1);
                tracing::error!(tier, error = %err, "skipping a malformed stream entry");
            }
        }
    }
    events
}

/// Connects to Redis (one node or a cluster) with the router's timeouts, and makes sure the
/// library is loaded on every primary.
pub(crate) async fn connect(
    target: &RedisTarget,
    config: &RouterConfig,
    response_timeout: Option<Duration>,
) -> redis::RedisResult<Connection> {
    let mut conn = target
        .connect(Timeouts {
            connect: Some(config.redis_connect_timeout),
            response: response_timeout,
        })
        .await?;
    hunt_redis::ensure_loaded(&mut conn).await?;
    Ok(conn)
}
