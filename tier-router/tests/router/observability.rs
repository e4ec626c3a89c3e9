//! The router's metrics reach the installed recorder: applied, duplicates, replay requests, batch
//! latency, lag, ownership and live routers.

use std::time::Duration;

use hunt_testkit::RedisServer;
use hunt_testkit::recorded;
use leaderboard_proto::keys;
use leaderboard_proto::v1::HuntEvent;
use prost::Message;
use tier_router::metrics as m;

use crate::support::{eventually, router, score};

/// Adds an entry of shard 7 to tier 1's stream, as a relay would.
async fn add(conn: &mut redis::aio::MultiplexedConnection, tier_seq: u64) {
    let event = HuntEvent {
        shard_id: 7,
        tier_seq,
        ..score(1, "ada", 1)
    };
    let _: String = redis::cmd("XADD")
        .arg(keys::tier_stream(1))
        .arg("*")
        .arg(keys::STREAM_EVENT_FIELD)
        .arg(event.encode_to_vec())
        .query_async(conn)
        .await
        .expect("XADD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_duplicates_replay_requests_and_latency_are_recorded() {
    assert!(
        recorded::install(),
        "the recorder is this binary's only one"
    );
    let redis = RedisServer::start().expect("redis-server");
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let applied = recorded::total(m::APPLIED).counter;
    let duplicates = recorded::total(m::DUPLICATES).counter;
    let replays = recorded::total(m::REPLAY_REQUESTS).counter;
    let batches = recorded::total(m::BATCH_SECONDS).samples;
    let router = router(&redis).await;
    // 1, 2, then 2 again (a redelivery), then 5 (3 and 4 are missing).
    for tier_seq in [1, 2, 2, 5] {
        add(&mut conn, tier_seq).await;
    }
    eventually("the replay request recorded", || async {
        (recorded::total(m::REPLAY_REQUESTS).counter > replays).then_some(())
    })
    .await;
    eventually("applied and duplicates counted", || async {
        (recorded::total(m::APPLIED).counter >= applied + 2
            && recorded::total(m::DUPLICATES).counter > duplicates)
            .then_some(())
    })
    .await;
    assert!(recorded::total(m::BATCH_SECONDS).samples > batches);
    assert!(
        recorded::total(m::LAG_SECONDS).gauge.is_some(),
        "lag is reported"
    );
    assert!(
        recorded::total(m::OWNED).gauge.is_some(),
        "ownership is reported"
    );
    eventually("live routers reported", || async {
        recorded::total(m::ROUTERS)
            .gauge
            .is_some_and(|n| n >= 1.0)
            .then_some(())
    })
    .await;
    let wanted: Option<u64> = redis::cmd("HGET")
        .arg(keys::tier_replay(1))
        .arg(keys::shard_field(7))
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(wanted, Some(3), "shard 7 is asked to re-send from 3");
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_binary_serves_prometheus_metrics() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = crate::support::RouterProcess::start(&redis, dir.path(), "metrics");
    let body = eventually("the live routers gauge on /metrics", || async {
        let (status, body) = crate::support::http_get(router.http_addr, "/metrics").await;
        (status == 200 && body.contains("hunt_router_live_routers 1")).then_some(body)
    })
    .await;
    assert!(body.contains("# HELP hunt_router_live_routers"), "{body}");
    // Counters without labels are there at 0 before their first event.
    assert!(
        body.contains("\nhunt_router_redis_data_lost_total 0\n"),
        "{body}"
    );
    assert!(body.contains("\nhunt_router_fenced_total 0\n"), "{body}");
    assert!(
        body.contains(&format!(
            "hunt_router_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{body}"
    );
    assert!(router.terminate().success());
}
