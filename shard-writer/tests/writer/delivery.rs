//! Delivery to the tier streams: order, payloads, redelivery, replay, the stream cap.

use std::time::Duration;

use hunt_testkit::RedisServer;
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::{keys, rewards};
use redis::AsyncCommands;
use shard_writer::BlockingShardWriter;

use crate::support::{
    DEADLINE, config, contiguous, eventually, open, redis_conn, score, set_applied, stream,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_over_every_tier_reach_their_streams_once_in_order() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = open(&config(dir.path(), 7, &redis)).await;
    assert!(rewards::TIERS.len() >= 5);

    let per_tier = 300u64;
    let mut expected = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..per_tier {
        for tier in rewards::TIERS {
            let writer = writer.clone();
            let event = score(tier.id, &format!("p{}", round % 17), (round as i64) - 100);
            expected.push(event.clone());
            tasks.spawn(async move { writer.append(event).await.map_err(|e| e.to_string()) });
        }
    }
    let mut appended = Vec::new();
    while let Some(result) = tasks.join_next().await {
        appended.push(result.expect("task").expect("append"));
    }

    for tier in rewards::TIERS {
        let events = eventually("every event in its stream", || async {
            let events = stream(&redis, tier.id).await;
            (events.len() as u64 >= per_tier).then_some(events)
        })
        .await;
        assert_eq!(
            events.len() as u64,
            per_tier,
            "tier {} holds each once",
            tier.id
        );
        for (position, event) in events.iter().enumerate() {
            assert_eq!(
                event.tier_seq,
                position as u64 + 1,
                "stream order is tier_seq order"
            );
            assert_eq!(event.tier, tier.id);
            assert_eq!(event.shard_id, 7);
            assert_eq!(event.epoch, writer.epoch());
            let done = appended
                .iter()
                .find(|a| a.id.seq == event.seq)
                .expect("every streamed event was appended");
            assert_eq!((done.tier, done.tier_seq), (event.tier, event.tier_seq));
            let Some(Kind::ScoreGained(gained)) = &event.kind else {
                panic!("payload kind changed");
            };
            assert!(expected.iter().any(|e| e.tier == tier.id
                && e.kind == Some(Kind::ScoreGained(gained.clone()))));
        }
    }
    writer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watermark_and_a_replay_request_are_redelivered() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), 3, &redis);
    config.redelivery_timeout = Duration::from_millis(300);
    config.max_redelivery_timeout = Duration::from_secs(60);
    let writer = open(&config).await;
    // A router applied up to 40 and stalls there (a gap): the relay re-sends 41..=100. Set
    // before anything is published, so no other re-send (from 0) can come first, however
    // slowly this test runs.
    set_applied(&redis, 1, 3, 40).await;
    for i in 0..100 {
        writer.append(score(1, "ada", i)).await.expect("append");
    }
    let published = eventually("100 published", || async {
        let events = stream(&redis, 1).await;
        (events.len() >= 100).then_some(events)
    })
    .await;
    let first: Vec<u64> = published[..100].iter().map(|e| e.tier_seq).collect();
    assert_eq!(first, (1..=100).collect::<Vec<_>>());

    let resent = eventually("re-sent from the gap", || async {
        let events = stream(&redis, 1).await;
        (events.len() >= 160).then_some(events)
    })
    .await;
    let tail: Vec<u64> = resent[100..160].iter().map(|e| e.tier_seq).collect();
    assert_eq!(tail, (41..=100).collect::<Vec<_>>());

    // The router catches up, then asks for a replay from 70.
    set_applied(&redis, 1, 3, 100).await;
    let before = stream(&redis, 1).await.len();
    let mut conn = redis_conn(&redis).await;
    let _: () = conn
        .hset(keys::tier_replay(1), keys::shard_field(3), 70)
        .await
        .expect("HSET replay");
    let wanted: Vec<u64> = (70..=100).collect();
    eventually("replayed from 70", || async {
        let events = stream(&redis, 1).await;
        let tail: Vec<u64> = events.iter().skip(before).map(|e| e.tier_seq).collect();
        tail.windows(wanted.len())
            .any(|w| w == wanted.as_slice())
            .then_some(())
    })
    .await;
    writer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_stays_near_its_cap() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), 5, &redis);
    config.stream_cap = 1_000;
    let writer = open(&config).await;
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..20 {
        let writer = writer.clone();
        tasks.spawn(async move {
            for i in 0..500 {
                writer
                    .append(score(2, &format!("p{chunk}"), i))
                    .await
                    .expect("append");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut conn = redis_conn(&redis).await;
    eventually("all 10000 published", || async {
        let published: Option<u64> = redis_conn(&redis)
            .await
            .hget(keys::tier_published(2), keys::shard_field(5))
            .await
            .ok()
            .flatten();
        (published == Some(10_000)).then_some(())
    })
    .await;
    let len: u64 = conn.xlen(keys::tier_stream(2)).await.expect("XLEN");
    // `MAXLEN ~` trims whole stream nodes (100 entries by default).
    assert!(
        (1_000..1_000 + 200).contains(&len),
        "stream length {len} not near its cap of 1000"
    );
    writer.shutdown().await.expect("shutdown");
}

#[test]
fn the_blocking_writer_appends_without_a_runtime() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = BlockingShardWriter::open(config(dir.path(), 11, &redis)).expect("open");
    let first = writer.append(score(4, "bo", 9)).expect("append");
    assert_eq!(first.tier_seq, 1);
    let queued = writer.try_append(score(4, "bo", 1)).expect("try_append");
    assert!(queued.seq > first.id.seq);
    writer.shutdown().expect("shutdown");
    // Shutdown drained the queue and published it.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let events = runtime.block_on(async {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let events = stream(&redis, 4).await;
                if events.len() == 2 {
                    return events;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("both events published")
    });
    assert_eq!(
        events.iter().map(|e| e.tier_seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(contiguous(
        &events.into_iter().map(|e| (e.tier_seq, e)).collect(),
        2
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_stops_a_window_past_the_applied_watermark() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), 6, &redis);
    config.publish_window = 300;
    config.relay_batch = 100;
    let writer = open(&config).await;
    for i in 0..1_000 {
        writer
            .append(score(3, &format!("p{}", i % 7), 1))
            .await
            .expect("append");
    }
    let published = |redis: &RedisServer| {
        let client = redis.client();
        async move {
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("connect");
            let mark: Option<u64> = conn
                .hget(keys::tier_published(3), keys::shard_field(6))
                .await
                .expect("HGET");
            mark.unwrap_or(0)
        }
    };
    // No router: nothing is applied, so the relay stops 300 past nothing.
    eventually("the window is published", || async {
        (published(&redis).await == 300).then_some(())
    })
    .await;
    // Let the relay read the unchanged watermark many times (it polls with HGET) before looking
    // again: a relay without flow control would have gone on publishing meanwhile.
    let mut conn = redis_conn(&redis).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .expect("CONFIG RESETSTAT");
    eventually("the relay polls the watermark again and again", || async {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut redis_conn(&redis).await)
            .await
            .expect("INFO");
        let calls = info
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_hget:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|calls| calls.parse::<u64>().ok())
            .unwrap_or(0);
        (calls >= 50).then_some(())
    })
    .await;
    assert_eq!(published(&redis).await, 300, "nothing past the window");
    let len: u64 = conn.xlen(keys::tier_stream(3)).await.expect("XLEN");
    assert_eq!(len, 300);
    // A router applies 650: the window moves with it.
    let _: () = conn
        .hset(keys::tier_applied(3), keys::shard_field(6), 650)
        .await
        .expect("HSET");
    eventually("the window follows the watermark", || async {
        (published(&redis).await == 950).then_some(())
    })
    .await;
    let _: () = conn
        .hset(keys::tier_applied(3), keys::shard_field(6), 950)
        .await
        .expect("HSET");
    eventually("everything is published", || async {
        (published(&redis).await == 1_000).then_some(())
    })
    .await;
    writer.shutdown().await.expect("shutdown");
}
