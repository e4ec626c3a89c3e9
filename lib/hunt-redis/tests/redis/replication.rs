//! Sentinel targets and the replication barrier against a real primary, replica and sentinels.

use std::time::{Duration, Instant};

use hunt_redis::{Connection, RedisTarget, Timeouts};
use hunt_testkit::replicated::ReplicatedRedis;
use leaderboard_proto::keys;

const TIMEOUTS: Timeouts = Timeouts {
    connect: Some(Duration::from_secs(5)),
    response: Some(Duration::from_secs(5)),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrier_counts_the_replicas_that_hold_every_earlier_write() {
    let redis = tokio::task::spawn_blocking(ReplicatedRedis::start)
        .await
        .expect("join")
        .expect("a primary, a replica and three sentinels");
    let mut conn = RedisTarget::open(&redis.sentinel_url(), false)
        .expect("sentinel URL")
        .connect(TIMEOUTS)
        .await
        .expect("the sentinels name the primary");
    assert!(matches!(conn, Connection::Single(_)));
    let role: redis::Value = redis::cmd("ROLE")
        .query_async(&mut conn)
        .await
        .expect("ROLE");
    assert!(format!("{role:?}").contains("master"), "{role:?}");

    // A write made by another client is covered: the barrier follows it on the primary.
    let mut other = redis
        .primary
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("another client");
    let _: () = redis::cmd("SET")
        .arg(keys::chest("k1"))
        .arg("a1")
        .query_async(&mut other)
        .await
        .expect("SET");
    let key = keys::chest("k1");
    let acked = hunt_redis::replicated(&mut conn, &[&key], 1, Duration::from_secs(2))
        .await
        .expect("barrier");
    assert_eq!(acked, 1);
    let mut replica = redis
        .replica
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("the replica");
    let held: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut replica)
        .await
        .expect("GET on the replica");
    assert_eq!(held.as_deref(), Some("a1"), "acknowledged means held");

    // With the link cut, no replica acknowledges: the barrier says so after its wait, and the
    // connection stays usable.
    redis.link.cut();
    let started = Instant::now();
    let acked = hunt_redis::replicated(&mut conn, &[&key], 1, Duration::from_millis(300))
        .await
        .expect("barrier");
    assert_eq!(acked, 0);
    assert!(started.elapsed() >= Duration::from_millis(250));
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");

    // Mended, the replica catches up and acknowledges again.
    redis.link.mend();
    hunt_testkit::eventually("the replica acknowledges again", || async {
        let mut conn = conn.clone();
        let acked = hunt_redis::replicated(&mut conn, &[&key], 1, Duration::from_millis(200))
            .await
            .ok()?;
        (acked == 1).then_some(())
    })
    .await;
}
