//! Replicated before answered: a barrier that returns once `n` replicas hold everything the
//! primary of a key's slot had applied when the barrier was written.
//!
//! Design constraints:
//! - `WAIT` only waits for the writes of the connection it is sent on. A claim answered from a
//!   read ("held by X"), or a verdict another process wrote, would not be covered, so the barrier
//!   first writes a short-lived key in the same slot ([`keys::barrier`]) and then sends `WAIT`
//!   on the same connection: the replication stream is ordered, so a replica that acknowledged
//!   the barrier holds every earlier write of that primary, whoever made it.
//! - On a cluster both commands go to the primary owning the key's slot (redis-rs would send a
//!   keyless `WAIT` to every primary); one barrier per distinct slot, sent concurrently.
//! - `WAIT`'s own timeout is given in milliseconds and must stay below the connection's response
//!   timeout, so a replica that does not answer yields a count, not a broken connection.

use std::collections::HashMap;
use std::time::Duration;

use leaderboard_proto::keys;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{FromRedisValue, RedisResult};

use crate::connection::Connection;

/// How long a barrier key lives: long enough to outlast the `WAIT` sent after it.
const BARRIER_TTL_MS: u64 = 60_000;

/// Writes a barrier in the slot of each of `keys` and waits up to `timeout` for `replicas`
/// replicas to acknowledge it. Returns the fewest replicas that acknowledged over the slots
/// (`u64::MAX` for no keys); a count below `replicas` means some write is not yet on that many
/// replicas.
///
/// # Errors
/// The Redis error when a barrier cannot be written or `WAIT` fails.
pub async fn replicated(
    conn: &mut Connection,
    keys: &[&str],
    replicas: u32,
    timeout: Duration,
) -> RedisResult<u64> {
    let timeout_ms = u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    match conn {
        Connection::Single(single) => {
            let Some(first) = keys.first() else {
                return Ok(u64::MAX);
            };
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(keys::barrier(first))
                .arg(1)
                .arg("PX")
                .arg(BARRIER_TTL_MS)
                .ignore()
                .cmd("WAIT")
                .arg(replicas)
                .arg(timeout_ms);
            let (acked,): (u64,) = pipe.query_async(single).await?;
            Ok(acked)
        }
        Connection::Cluster(cluster) => {
            let mut by_slot: HashMap<Slot, &str> = HashMap::new();
            for key in keys {
                by_slot.entry(Slot::for_key(key)).or_insert(key);
            }
            let barriers = by_slot.into_values().map(|key| {
                let mut cluster = cluster.clone();
                async move {
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                        redis::cluster_routing::Route::with_key(key, SlotAddr::Master),
                    ));
                    let mut set = redis::cmd("SET");
                    set.arg(keys::barrier(key))
                        .arg(1)
                        .arg("PX")
                        .arg(BARRIER_TTL_MS);
                    cluster.route_command(set, route.clone()).await?;
                    let mut wait = redis::cmd("WAIT");
                    wait.arg(replicas).arg(timeout_ms);
                    let acked = cluster.route_command(wait, route).await?;
                    u64::from_redis_value(acked).map_err(redis::RedisError::from)
                }
            });
            let acked = futures_util::future::try_join_all(barriers).await?;
            Ok(acked.into_iter().min().unwrap_or(u64::MAX))
        }
    }
}
