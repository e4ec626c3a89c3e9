//! Asking a shard's running writer to re-send a tier from a `tier_seq`.
//!
//! Design constraints:
//! - A replay is a request, not a publish: it is recorded where the router records its own
//!   (`hunt:{t<N>}:replay[shard]`), and the writer's relay acts on it within one acknowledgement
//!   poll, re-sending batch by batch while the router's applied watermark is below it. Only the
//!   writer holding the shard file publishes, so a replay can never race the relay over a
//!   `tier_seq`, and the router de-duplicates by `tier_seq`, so a replay never counts twice.
//! - Nothing runs until a writer has the file open: a request made while none does waits in
//!   Redis for the next one.
//! - A range pruned from the file (acknowledged and past retention) cannot be re-sent: the relay
//!   sends from the first retained `tier_seq`, and the request's answer says so.

use std::path::Path;
use std::time::Duration;

use leaderboard_proto::{keys, rewards};

use crate::config::redact_url;
use crate::inspect::{InspectError, ShardState, ask_redis};

/// Why a replay request was not recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The shard file could not be read.
    #[error(transparent)]
    Shard(#[from] InspectError),
    /// The tier is not in the reward table.
    #[error("tier {0} is not in the reward table")]
    UnknownTier(u32),
    /// The starting `tier_seq` is out of range.
    #[error(
        "--from {from}: must be 1 to {committed}, the highest committed tier_seq of tier {tier}"
    )]
    OutOfRange {
        /// The tier.
        tier: u32,
        /// The `tier_seq` asked for.
        from: u64,
        /// The highest committed.
        committed: u64,
    },
    /// Redis did not record the request.
    #[error("Redis at {redis}: {reason}")]
    Redis {
        /// The Redis URL, password redacted.
        redis: String,
        /// What failed.
        reason: String,
    },
}

/// A recorded replay request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRequest {
    /// The shard.
    pub shard_id: u32,
    /// The tier.
    pub tier: u32,
    /// The `tier_seq` the relay re-sends from.
    pub from: u64,
    /// The highest committed `tier_seq` of the tier: the relay re-sends up to it.
    pub to: u64,
    /// When part of the range was pruned: the first `tier_seq` still retained.
    pub first_retained: Option<u64>,
}

/// Records a request that the writer of shard file `db` re-send `tier` from `from`, in the
/// Redis at `redis_url` (with `cluster`, a comma-separated list of Redis Cluster seed URLs),
/// waiting at most `timeout`.
///
/// # Errors
/// [`ReplayError`]: the file unreadable, an unknown tier, `from` outside 1 to the highest
/// committed `tier_seq`, Redis failing.
pub async fn request_replay(
    db: &Path,
    redis_url: &str,
    cluster: bool,
    tier: u32,
    from: u64,
    timeout: Duration,
) -> Result<ReplayRequest, ReplayError> {
    if rewards::tier(tier).is_none() {
        return Err(ReplayError::UnknownTier(tier));
    }
    let state = ShardState::read(db)?;
    let committed = state
        .tiers
        .iter()
        .find(|t| t.tier == tier)
        .map_or(0, |t| t.committed);
    if from == 0 || from > committed {
        return Err(ReplayError::OutOfRange {
            tier,
            from,
            committed,
        });
    }
    let first_retained = state
        .tiers
        .iter()
        .find(|t| t.tier == tier)
        .and_then(|t| t.first_retained)
        .filter(|first| *first > from);
    let mut record = redis::cmd("HSET");
    record
        .arg(keys::tier_replay(tier))
        .arg(keys::shard_field(state.shard_id))
        .arg(from);
    ask_redis(redis_url, cluster, timeout, |mut conn| async move {
        record.query_async::<()>(&mut conn).await
    })
    .await
    .map_err(|reason| ReplayError::Redis {
        redis: redact_url(redis_url),
        reason,
    })?;
    Ok(ReplayRequest {
        shard_id: state.shard_id,
        tier,
        from,
        to: committed,
        first_retained,
    })
}
