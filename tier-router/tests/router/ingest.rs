//! The ingest sidecar end to end with a real router: events appended over `hunt.v1.Ingest` reach
//! the leaderboards `GetTop` serves, exactly, and a refused request leaves them unchanged.

use std::collections::BTreeMap;
use std::time::Duration;

use hunt_testkit::RedisServer;
use leaderboard_proto::rewards;
use leaderboard_proto::v1::ingest_service_client::IngestServiceClient;
use leaderboard_proto::v1::leaderboard_service_client::LeaderboardServiceClient;
use leaderboard_proto::v1::{AppendRequest, GetTopRequest, HuntEvent};
use shard_writer::WriterConfig;
use shard_writer::ingest::{IngestConfig, Sidecar};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{Totals, client, eventually, router, score};

/// The whole leaderboard of `tier` through `GetTop`, as player → score.
async fn board(grpc: &mut LeaderboardServiceClient<Channel>, tier: u32) -> BTreeMap<String, i64> {
    grpc.get_top(GetTopRequest {
        tier,
        offset: 0,
        limit: 1_000,
    })
    .await
    .expect("GetTop")
    .into_inner()
    .entries
    .into_iter()
    .map(|entry| (entry.player_id, entry.score))
    .collect()
}

/// Polls `GetTop` until every tier in `totals` holds exactly its totals.
async fn boards_equal(grpc: &LeaderboardServiceClient<Channel>, totals: &Totals) {
    for (&tier, want) in totals {
        eventually(&format!("GetTop of tier {tier} equals the totals"), || {
            let mut grpc = grpc.clone();
            async move { (board(&mut grpc, tier).await == *want).then_some(()) }
        })
        .await;
    }
}

fn add(totals: &mut Totals, events: &[HuntEvent]) {
    for event in events {
        let Some(leaderboard_proto::v1::hunt_event::Kind::ScoreGained(gained)) = &event.kind else {
            panic!("only ScoreGained here");
        };
        *totals
            .entry(event.tier)
            .or_default()
            .entry(gained.player_id.clone())
            .or_default() += gained.points;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_appends_reach_get_top_exactly_and_a_refused_request_changes_nothing() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    let mut config = IngestConfig::new(
        WriterConfig::new(dir.path().join("shard-81.sqlite"), 81).with_redis(redis.url()),
    );
    config.grpc_addr = "127.0.0.1:0".parse().expect("address");
    let sidecar = Sidecar::build(config)
        .await
        .expect("sidecar builds")
        .spawn();
    let mut ingest =
        IngestServiceClient::new(hunt_testkit::grpc_channel(sidecar.local_addr()).await);
    let grpc = client(&router).await;
    let (low, high) = (rewards::TIERS[0].id, rewards::TIERS[1].id);

    let mut totals = Totals::new();
    for round in 0..4i64 {
        let events: Vec<HuntEvent> = ["ada", "bob", "cyd", "dee", "eve"]
            .iter()
            .enumerate()
            .map(|(i, player)| {
                let tier = if i % 2 == 0 { low } else { high };
                score(tier, player, round * 7 + i as i64 + 1)
            })
            .chain([score(high, "ada", 100 - round)])
            .collect();
        let appended = ingest
            .append(AppendRequest {
                events: events.clone(),
            })
            .await
            .expect("append")
            .into_inner()
            .appended;
        assert_eq!(appended.len(), events.len());
        add(&mut totals, &events);
    }
    assert_eq!(totals.len(), 2, "two tiers");
    boards_equal(&grpc, &totals).await;

    // A request with one bad event is refused whole: nothing of it is stored or applied.
    let committed = (
        sidecar.writer().committed_tier_seq(low),
        sidecar.writer().committed_tier_seq(high),
    );
    let status = ingest
        .append(AppendRequest {
            events: vec![score(low, "ada", 1_000), score(high, "b{o}b", 1_000)],
        })
        .await
        .expect_err("a bad event is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("events[1]"), "{status:?}");
    assert_eq!(
        (
            sidecar.writer().committed_tier_seq(low),
            sidecar.writer().committed_tier_seq(high),
        ),
        committed,
        "nothing stored"
    );
    // Events appended after the refusal follow it in each tier's stream: once they show, the
    // refused ones would have too.
    let after = vec![score(low, "fay", 3), score(high, "fay", 4)];
    ingest
        .append(AppendRequest {
            events: after.clone(),
        })
        .await
        .expect("append");
    add(&mut totals, &after);
    boards_equal(&grpc, &totals).await;

    drop(ingest);
    sidecar
        .shutdown(Duration::from_secs(10))
        .await
        .expect("sidecar shutdown");
    assert!(
        router.shutdown(Duration::from_secs(10)).await,
        "router stops in time"
    );
    drop(grpc);
}
