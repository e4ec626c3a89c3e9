//! Bad input, a second writer on one file, and a full queue.

use std::time::{Duration, Instant};

use hunt_testkit::RedisServer;
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::v1::{HuntEvent, ScoreGained, TreasureAwarded};
use leaderboard_proto::validate::ValidationError;
use shard_writer::{AppendError, OpenError, ShardWriter, WriterConfig};

use crate::support::{config, eventually, open, rows, score};

/// Whether a validation error is the one a case expects.
type Expect = fn(&ValidationError) -> bool;

fn gained(player: &str, points: i64) -> Option<Kind> {
    Some(Kind::ScoreGained(ScoreGained {
        player_id: player.to_owned(),
        points,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_typed_error_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shard.sqlite");
    let writer = ShardWriter::open(WriterConfig::new(&path, 1))
        .await
        .expect("open");
    let too_long = "x".repeat(65);
    let cases: Vec<(HuntEvent, Expect)> = vec![
        (
            HuntEvent {
                tier: 999,
                kind: gained("ada", 1),
                ..HuntEvent::default()
            },
            |e| matches!(e, ValidationError::UnknownTier(999)),
        ),
        (
            HuntEvent {
                tier: 1,
                kind: gained("", 1),
                ..HuntEvent::default()
            },
            |e| matches!(e, ValidationError::EmptyId { .. }),
        ),
        (
            HuntEvent {
                tier: 1,
                kind: gained(&too_long, 1),
                ..HuntEvent::default()
            },
            |e| matches!(e, ValidationError::IdTooLong { len: 65, .. }),
        ),
        (
            HuntEvent {
                tier: 1,
                kind: gained("ad\u{7}a", 1),
                ..HuntEvent::default()
            },
            |e| matches!(e, ValidationError::IdControlChar { .. }),
        ),
        (
            HuntEvent {
                tier: 1,
                kind: gained("a{b}", 1),
                ..HuntEvent::default()
            },
            |e| matches!(e, ValidationError::IdBrace { .. }),
        ),
        (
            HuntEvent {
                tier: 1,
                kind: gained("ada", 1 << 53),
                ..HuntEvent::default()
            },
            |e| matches!(e, ValidationError::PointsOutOfRange { .. }),
        ),
        (
            HuntEvent {
                tier: 1,
                kind: gained("ada", i64::MIN),
                ..HuntEvent::default()
            },
            |e| matches!(e, ValidationError::PointsOutOfRange { .. }),
        ),
        (
            HuntEvent {
                tier: 1,
                kind: None,
                ..HuntEvent::default()
            },
            |e| matches!(e, ValidationError::MissingKind),
        ),
        (
            HuntEvent {
                tier: 1,
                tier_seq: 5,
                kind: gained("ada", 1),
                ..HuntEvent::default()
            },
            |e| matches!(e, ValidationError::WriterAssigned { .. }),
        ),
        (
            HuntEvent {
                tier: 1,
                kind: Some(Kind::TreasureAwarded(TreasureAwarded {
                    chest_key: "gold}".into(),
                    award_id: String::new(),
                    player_id: "ada".into(),
                    points: 5,
                })),
                ..HuntEvent::default()
            },
            |e| matches!(e, ValidationError::IdBrace { .. }),
        ),
    ];
    for (event, expected) in cases {
        let kind = event.kind.clone();
        match writer.append(event.clone()).await {
            Err(AppendError::Invalid {
                event: back,
                reason,
            }) => {
                assert!(expected(&reason), "unexpected reason {reason:?}");
                assert_eq!(back.kind, kind, "the event is handed back");
                assert!(!reason.to_string().is_empty());
            }
            other => panic!("accepted bad input: {other:?}"),
        }
        assert!(matches!(
            writer.try_append(event),
            Err(AppendError::Invalid { .. })
        ));
    }
    writer.shutdown().await.expect("shutdown");
    for tier in leaderboard_proto::rewards::tier_ids() {
        assert!(
            rows(&path, tier).is_empty(),
            "tier {tier}: a bad event was stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_one_file_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WriterConfig::new(dir.path().join("shard.sqlite"), 2);
    let first = ShardWriter::open(config.clone()).await.expect("first open");
    match ShardWriter::open(config.clone()).await {
        Err(err @ OpenError::AlreadyOpen { .. }) => {
            let message = err.to_string();
            assert!(message.contains("already open"), "{message}");
            assert!(message.contains("shard.sqlite"), "{message}");
        }
        other => panic!("second open: {other:?}"),
    }
    // Another shard's id on the same file is refused too, once the file is free.
    first.shutdown().await.expect("shutdown");
    let other_shard = WriterConfig::new(dir.path().join("shard.sqlite"), 3);
    assert!(matches!(
        ShardWriter::open(other_shard).await,
        Err(OpenError::ShardMismatch {
            found: 2,
            configured: 3,
            ..
        })
    ));
    ShardWriter::open(config)
        .await
        .expect("reopen")
        .shutdown()
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_append_never_waits_and_hands_the_event_back_when_the_queue_is_full() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), 4, &redis);
    config.queue_capacity = 64;
    config.busy_timeout = Duration::from_secs(30);
    let writer = open(&config).await;
    writer.append(score(1, "warm", 1)).await.expect("append");

    // Another process's transaction holds the file: commits stall, the queue fills.
    let blocker = rusqlite::Connection::open(&config.path).expect("open blocker");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("lock the file");
    let mut queued = Vec::new();
    let mut refused = None;
    for i in 0..1_000 {
        let started = Instant::now();
        let result = writer.try_append(score(1, "ada", i));
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "try_append waited"
        );
        match result {
            Ok(id) => queued.push(id),
            Err(AppendError::QueueFull { event }) => {
                assert_eq!(event.kind, gained("ada", i));
                refused = Some(i);
                break;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert!(refused.is_some(), "the queue never filled");
    blocker.execute_batch("ROLLBACK").expect("unlock");
    // Everything queued is committed once the file is free.
    let last = queued.len() as u64 + 1;
    eventually("queued events committed", || async {
        (writer.committed_tier_seq(1) == last).then_some(())
    })
    .await;
    writer.shutdown().await.expect("shutdown");
}
