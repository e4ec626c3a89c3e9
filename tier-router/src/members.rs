//! Live routers and the fair split of tiers between them.
//!
//! Design constraints:
//! - Liveness only: which router *tries* to own a tier. Safety stays with the fence token, so a
//!   wrong view of who is alive costs at most a lease handover, never a double apply.
//! - Every router computes the same split from the same view: live ids sorted, tier `i` of the
//!   reward table (0-based) goes to router `i mod n`. With 5 tiers and 2 routers that is 3 and 2.
//! - A heartbeat is a key with a TTL per router (`hunt:router:{<id>}`) plus the set of ids
//!   (`hunt:routers`); ids whose key has expired are pruned by whoever notices. No Redis Function,
//!   and one key per command, so it runs unchanged on Redis Cluster.

use std::time::Duration;

use leaderboard_proto::keys;
use redis::aio::ConnectionLike;
use tokio::sync::watch;

/// Marks `router` alive for `ttl` and returns every live router id, sorted.
///
/// # Errors
/// The Redis error.
pub async fn heartbeat<C: ConnectionLike + Send>(
    conn: &mut C,
    router: &str,
    ttl: Duration,
) -> redis::RedisResult<Vec<String>> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let ((), (), mut ids): ((), (), Vec<String>) = redis::pipe()
        .cmd("SET")
        .arg(keys::router_heartbeat(router))
        .arg(1)
        .arg("PX")
        .arg(ttl_ms)
        .cmd("SADD")
        .arg(keys::routers())
        .arg(router)
        .cmd("SMEMBERS")
        .arg(keys::routers())
        .query_async(conn)
        .await?;
    ids.sort();
    let mut live = Vec::with_capacity(ids.len());
    for id in ids {
        let alive: bool = redis::cmd("EXISTS")
            .arg(keys::router_heartbeat(&id))
            .query_async(conn)
            .await?;
        if alive {
            live.push(id);
        } else {
            let _: i64 = redis::cmd("SREM")
                .arg(keys::routers())
                .arg(&id)
                .query_async(conn)
                .await?;
        }
    }
    Ok(live)
}

/// Removes `router` from the live routers at once, so the others take its tiers without waiting
/// for its heartbeat to expire.
///
/// # Errors
/// The Redis error.
pub async fn leave<C: ConnectionLike + Send>(conn: &mut C, router: &str) -> redis::RedisResult<()> {
    redis::pipe()
        .cmd("DEL")
        .arg(keys::router_heartbeat(router))
        .ignore()
        .cmd("SREM")
        .arg(keys::routers())
        .arg(router)
        .ignore()
        .query_async(conn)
        .await
}

/// Whether `router` should own the tier at `tier_index` (its 0-based position in the reward
/// table) when `live` (sorted) are the routers alive. With no view yet, every router wants every
/// tier: the leases still give each tier one owner.
#[must_use]
pub fn wants(live: &[String], router: &str, tier_index: usize) -> bool {
    if live.is_empty() {
        return true;
    }
    live.get(tier_index % live.len())
        .is_some_and(|owner| owner == router)
}

/// The live routers as last seen, shared by the heartbeat task with the tier workers.
pub(crate) type View = watch::Receiver<Vec<String>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn tiers_split_fairly_and_every_tier_has_one_owner() {
        for n in 1..=7 {
            let live: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
            let mut owned = vec![0usize; n];
            for tier in 0..5 {
                let owners: Vec<usize> = (0..n).filter(|&r| wants(&live, &live[r], tier)).collect();
                assert_eq!(owners.len(), 1, "tier {tier} has one owner among {n}");
                owned[owners[0]] += 1;
            }
            let (min, max) = (owned.iter().min(), owned.iter().max());
            assert!(
                max.zip(min).is_some_and(|(max, min)| max - min <= 1),
                "{owned:?}"
            );
        }
    }

    #[test]
    fn without_a_view_every_router_wants_every_tier_and_a_stranger_none() {
        assert!(wants(&[], "a", 3));
        assert!(!wants(&ids(&["b", "c"]), "a", 0));
        assert!(!wants(&ids(&["b", "c"]), "a", 1));
    }
}
