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
    // Each gRPC call is counted and timed by method and code; a method nobody serves is
    // labelled `other`, so clients cannot mint labels.
    let channel = hunt_testkit::grpc_channel(router.grpc_addr).await;
    let mut grpc = leaderboard_proto::v1::leaderboard_service_client::LeaderboardServiceClient::new(
        channel.clone(),
    );
    grpc.get_top(leaderboard_proto::v1::GetTopRequest {
        tier: 1,
        offset: 0,
        limit: 10,
    })
    .await
    .expect("GetTop");
    let refused = grpc
        .get_top(leaderboard_proto::v1::GetTopRequest {
            tier: 99,
            offset: 0,
            limit: 10,
        })
        .await
        .expect_err("no tier 99");
    assert_eq!(refused.code(), tonic::Code::NotFound);
    let mut unknown = tonic::client::Grpc::new(channel);
    unknown.ready().await.expect("ready");
    let missing: Result<tonic::Response<()>, tonic::Status> = unknown
        .unary(
            tonic::Request::new(()),
            tonic::codegen::http::uri::PathAndQuery::from_static("/hunt.v1.Nope/Made_Up_123"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await;
    assert_eq!(
        missing.expect_err("unimplemented").code(),
        tonic::Code::Unimplemented
    );
    let body = eventually("request metrics on /metrics", || async {
        let (_, body) = crate::support::http_get(router.http_addr, "/metrics").await;
        body.contains("code=\"UNIMPLEMENTED\"").then_some(body)
    })
    .await;
    for wanted in [
        "hunt_grpc_requests_total{method=\"/hunt.v1.LeaderboardService/GetTop\",code=\"OK\"} 1",
        "hunt_grpc_requests_total{method=\"/hunt.v1.LeaderboardService/GetTop\",code=\"NOT_FOUND\"} 1",
        "hunt_grpc_requests_total{method=\"other\",code=\"UNIMPLEMENTED\"} 1",
        "hunt_grpc_request_duration_seconds_bucket{method=\"/hunt.v1.LeaderboardService/GetTop\",le=\"0.1\"}",
        "hunt_http_requests_total{route=\"/metrics\",status=\"200\"}",
        "hunt_http_request_duration_seconds_bucket{route=\"/metrics\",le=\"0.1\"}",
        "\nprocess_resident_memory_bytes ",
        "\nprocess_cpu_seconds_total ",
        "\nprocess_open_fds ",
    ] {
        assert!(body.contains(wanted), "{wanted} missing from:\n{body}");
    }
    assert!(!body.contains("Made_Up"), "a client minted a label: {body}");
    assert!(router.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_and_getting_it_back_are_one_line_each_per_tier_and_drain_is_said() {
    let mut redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = crate::support::RouterProcess::start(&redis, dir.path(), "transitions");
    let tiers = leaderboard_proto::rewards::TIERS.len();
    let count = |log: &str, what: &str| log.lines().filter(|line| line.contains(what)).count();
    eventually("every tier owned", || async {
        (count(&router.log(), "tier owned") == tiers).then_some(())
    })
    .await;
    // Down long enough for several reconnect attempts per tier.
    redis.stop();
    eventually("every tier worker says it lost Redis", || async {
        (count(&router.log(), "tier worker lost Redis") == tiers).then_some(())
    })
    .await;
    let (_, metrics) = crate::support::http_get(router.http_addr, "/metrics").await;
    let errors = metrics
        .lines()
        .find_map(|line| line.strip_prefix("hunt_router_redis_errors_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    eventually("several failed attempts per tier", || async {
        let (_, metrics) = crate::support::http_get(router.http_addr, "/metrics").await;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("hunt_router_redis_errors_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .filter(|now| *now >= errors + 2.0 * tiers as f64)
    })
    .await;
    redis.start_again().expect("redis back");
    let log = eventually("every tier worker says Redis is back", || async {
        let log = router.log();
        (count(&log, "tier worker reached Redis again") == tiers).then_some(log)
    })
    .await;
    assert_eq!(count(&log, "tier worker lost Redis"), tiers, "{log}");
    assert!(router.terminate().success());
    let log = std::fs::read_to_string(dir.path().join("transitions.log")).expect("log");
    assert_eq!(count(&log, "draining:"), 1, "{log}");
    assert_eq!(count(&log, "drained; exiting"), 1, "{log}");
}
