//! Redis failures while the shard keeps appending.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hunt_testkit::RedisServer;
use leaderboard_proto::v1::HuntEvent;
use leaderboard_proto::{keys, rewards};
use shard_writer::{ShardWriter, WriterConfig};

use crate::support::{
    config, contiguous, eventually, open, redis_conn, score, stop_keeping_data, stream_by_tier_seq,
};

/// Appends `count` events spread over every tier; returns them by (tier, tier_seq).
async fn append_round(
    writer: &ShardWriter,
    round: &str,
    count: usize,
    expected: &mut BTreeMap<(u32, u64), HuntEvent>,
) {
    for i in 0..count {
        let tier = rewards::TIERS[i % rewards::TIERS.len()].id;
        let event = score(tier, &format!("{round}-{}", i % 13), i as i64 + 1);
        let started = Instant::now();
        let done = writer.append(event.clone()).await.expect("append");
        // Appends never wait on Redis, whatever state it is in.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "append waited {:?}",
            started.elapsed()
        );
        expected.insert((done.tier, done.tier_seq), event);
    }
}

async fn assert_streams_hold(
    redis: &RedisServer,
    expected: &BTreeMap<(u32, u64), HuntEvent>,
    exactly_once: bool,
) {
    for tier in rewards::TIERS {
        let want: Vec<_> = expected.range((tier.id, 0)..=(tier.id, u64::MAX)).collect();
        let by_seq = eventually("every appended event in the stream", || async {
            let by_seq = stream_by_tier_seq(redis, tier.id).await;
            contiguous(&by_seq, want.len() as u64).then_some(by_seq)
        })
        .await;
        for ((_, tier_seq), event) in want {
            let streamed = &by_seq[tier_seq];
            assert_eq!(
                streamed.kind, event.kind,
                "tier {} tier_seq {tier_seq}",
                tier.id
            );
        }
        if exactly_once {
            let raw = crate::support::stream(redis, tier.id).await;
            assert_eq!(
                raw.len(),
                by_seq.len(),
                "tier {}: duplicates in the stream",
                tier.id
            );
        }
    }
}

async fn redis_down_then_back(keep_data: bool) {
    let mut redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = open(&config(dir.path(), 21, &redis)).await;
    let mut expected = BTreeMap::new();
    append_round(&writer, "before", 200, &mut expected).await;
    assert_streams_hold(&redis, &expected, true).await;

    if keep_data {
        stop_keeping_data(&mut redis).await;
    } else {
        redis.stop();
    }
    append_round(&writer, "during", 300, &mut expected).await;
    // Killed without persistence, it comes back empty; shut down with SAVE, with its data.
    redis.start_again().expect("start again");
    append_round(&writer, "after", 100, &mut expected).await;
    assert_streams_hold(&redis, &expected, keep_data).await;

    // The function library is back without anyone loading it by hand.
    let mut conn = redis_conn(&redis).await;
    let libraries: redis::Value = redis::cmd("FUNCTION")
        .arg("LIST")
        .arg("LIBRARYNAME")
        .arg("hunt")
        .query_async(&mut conn)
        .await
        .expect("FUNCTION LIST");
    assert!(
        format!("{libraries:?}").contains("hunt_publish"),
        "library not reloaded: {libraries:?}"
    );
    writer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_while_appending_loses_nothing() {
    redis_down_then_back(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_its_data_while_appending_loses_nothing_and_repeats_nothing() {
    redis_down_then_back(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_is_refilled_from_the_shard_file() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = open(&config(dir.path(), 22, &redis)).await;
    let mut expected = BTreeMap::new();
    append_round(&writer, "before", 100, &mut expected).await;
    assert_streams_hold(&redis, &expected, true).await;
    redis.flushall().expect("FLUSHALL");
    // The next publish finds Redis's published mark gone and re-sends from the start.
    append_round(&writer, "after", 50, &mut expected).await;
    assert_streams_hold(&redis, &expected, false).await;
    writer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_shard_file_opened_while_redis_is_down_never_reuses_a_published_tier_seq() {
    let mut redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    // An earlier life of shard 23 (a disk since lost) published 40 events to tier 1.
    let old_dir = tempfile::tempdir().expect("tempdir");
    let old = open(&config(old_dir.path(), 23, &redis)).await;
    for i in 0..40 {
        old.append(score(1, "old", i)).await.expect("append");
    }
    old.shutdown().await.expect("shutdown");
    stop_keeping_data(&mut redis).await;

    // The new file opens with Redis down: its tier_seqs are provisional.
    let config: WriterConfig = config(dir.path(), 23, &redis);
    let writer = open(&config).await;
    for i in 0..10 {
        writer
            .append(score(1, "new", i))
            .await
            .expect("append offline");
    }
    redis.start_again().expect("start again");
    let by_seq = eventually("old and new events", || async {
        let by_seq = stream_by_tier_seq(&redis, 1).await;
        contiguous(&by_seq, 50).then_some(by_seq)
    })
    .await;
    for (tier_seq, event) in &by_seq {
        let player = match &event.kind {
            Some(leaderboard_proto::v1::hunt_event::Kind::ScoreGained(g)) => g.player_id.clone(),
            other => panic!("unexpected {other:?}"),
        };
        let want = if *tier_seq <= 40 { "old" } else { "new" };
        assert_eq!(player, want, "tier_seq {tier_seq}");
    }
    let published: Option<u64> = redis::AsyncCommands::hget(
        &mut redis_conn(&redis).await,
        keys::tier_published(1),
        keys::shard_field(23),
    )
    .await
    .expect("HGET");
    assert_eq!(published, Some(50));
    writer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_never_stalls_appends_and_loses_nothing() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), 24, &redis);
    config.redis_response_timeout = std::time::Duration::from_millis(300);
    let writer = open(&config).await;
    let mut expected = BTreeMap::new();
    append_round(&writer, "before", 100, &mut expected).await;
    // SIGSTOP: connections stay open but nothing answers, the worst kind of partition.
    redis.pause().expect("SIGSTOP");
    // Keep appending for longer than the relay's response timeout, so it does hit the hang.
    let hung = Instant::now();
    let mut round = 0;
    while hung.elapsed() < Duration::from_millis(1500) {
        append_round(&writer, &format!("hung{round}"), 50, &mut expected).await;
        round += 1;
    }
    redis.resume();
    append_round(&writer, "after", 100, &mut expected).await;
    assert_streams_hold(&redis, &expected, false).await;
    writer.shutdown().await.expect("shutdown");
}
