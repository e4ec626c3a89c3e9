//! The shards' progress in Redis: per (shard, tier), the published and applied marks against what
//! each shard writer committed, and the awards the saga has yet to settle.

use std::time::{Duration, Instant};

use anyhow::bail;
use leaderboard_proto::{keys, rewards};
use redis::aio::MultiplexedConnection;
use shard_writer::ShardWriter;

/// Events committed by `writers`, per (shard, tier).
fn committed(writers: &[ShardWriter]) -> Vec<(u32, u32, u64)> {
    writers
        .iter()
        .flat_map(|w| {
            rewards::tier_ids().map(|tier| (w.shard_id(), tier, w.committed_tier_seq(tier)))
        })
        .collect()
}

/// Events committed by `writers`, over every shard and tier.
pub(crate) fn committed_total(writers: &[ShardWriter]) -> u64 {
    committed(writers).iter().map(|(_, _, n)| n).sum()
}

/// Whether each (shard, tier) of `writers` has its mark in the `marks` hashes at or above what it
/// committed: `Some(events committed)` when they all have, `None` otherwise.
///
/// # Errors
/// The Redis error.
pub(crate) async fn reached(
    conn: &mut MultiplexedConnection,
    writers: &[ShardWriter],
    marks: fn(u32) -> String,
) -> anyhow::Result<Option<u64>> {
    let want = committed(writers);
    let mut pipe = redis::pipe();
    for (shard, tier, _) in &want {
        pipe.hget(marks(*tier), keys::shard_field(*shard));
    }
    let got: Vec<Option<u64>> = pipe.query_async(conn).await?;
    let reached = want
        .iter()
        .zip(&got)
        .all(|((_, _, want), got)| got.unwrap_or(0) >= *want);
    Ok(reached.then(|| committed_total(writers)))
}

/// Polls the `marks` hashes until each (shard, tier) reaches what its writer committed; returns
/// the events committed.
///
/// # Errors
/// The Redis error, or the marks still short after `limit`.
pub(crate) async fn wait_reached(
    conn: &mut MultiplexedConnection,
    writers: &[ShardWriter],
    marks: fn(u32) -> String,
    limit: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(total) = reached(conn, writers, marks).await? {
            return Ok(total);
        }
        if Instant::now() >= deadline {
            bail!("marks did not reach what was committed within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Sum of the applied marks of every tier.
///
/// # Errors
/// The Redis error.
pub(crate) async fn applied_total(conn: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    let mut pipe = redis::pipe();
    for tier in rewards::tier_ids() {
        pipe.hvals(keys::tier_applied(tier));
    }
    let marks: Vec<Vec<u64>> = pipe.query_async(conn).await?;
    Ok(marks.iter().flatten().sum())
}

/// Awards the saga has not finished, over every tier.
///
/// # Errors
/// The Redis error.
pub(crate) async fn awards_pending(conn: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    let mut pipe = redis::pipe();
    for tier in rewards::tier_ids() {
        pipe.zcard(keys::tier_awards_pending(tier));
    }
    let pending: Vec<u64> = pipe.query_async(conn).await?;
    Ok(pending.iter().sum())
}

/// Whether every (shard, tier) of `writers` is applied up to what it committed.
///
/// # Errors
/// The Redis error.
pub(crate) async fn applied_all(
    conn: &mut MultiplexedConnection,
    writers: &[ShardWriter],
) -> anyhow::Result<bool> {
    Ok(reached(conn, writers, keys::tier_applied).await?.is_some())
}

/// Whether every event `writers` committed is applied and no award waits for the saga.
///
/// # Errors
/// The Redis error.
pub(crate) async fn settled(
    conn: &mut MultiplexedConnection,
    writers: &[ShardWriter],
) -> anyhow::Result<bool> {
    Ok(applied_all(conn, writers).await? && awards_pending(conn).await? == 0)
}
