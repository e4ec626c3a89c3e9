//! The admin subcommands: online backup and restore, inspect beside a running writer, replay.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hunt_testkit::RedisServer;
use leaderboard_proto::keys;
use leaderboard_proto::v1::HuntEvent;
use redis::AsyncCommands;
use shard_writer::inspect::ShardState;
use shard_writer::{OpenError, ShardWriter, backup};

use crate::support::{
    apply_stream, board, config, contiguous, eventually, open, redis_conn, score, shard_writer,
    stream, stream_by_tier_seq, totals,
};

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

async fn append_all(writer: &ShardWriter, events: &[HuntEvent]) {
    for event in events {
        writer.append(event.clone()).await.expect("append");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_keeps_what_it_held_and_reuses_no_tier_seq() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 71, &redis);
    let writer = open(&config).await;
    let before: Vec<HuntEvent> = (0..40)
        .map(|i| score(1 + (i % 2) as u32, &format!("p{}", i % 5), i))
        .collect();
    append_all(&writer, &before).await;

    // The backup is taken while appends land.
    let during: Vec<HuntEvent> = (0..60)
        .map(|i| score(1 + (i % 2) as u32, &format!("p{}", i % 7), 100 + i))
        .collect();
    let appending = {
        let writer = writer.clone();
        let during = during.clone();
        tokio::spawn(async move { append_all(&writer, &during).await })
    };
    let backup_path = dir.path().join("backup.sqlite");
    let snapshot = {
        let (db, to) = (config.path.clone(), backup_path.clone());
        tokio::task::spawn_blocking(move || backup::backup(&db, &to))
            .await
            .expect("backup task")
            .expect("backup")
    };
    appending.await.expect("appends");
    assert!(matches!(
        backup::backup(&config.path, &backup_path),
        Err(backup::BackupError::Exists { .. })
    ));
    let held: Vec<(u32, u64)> = snapshot
        .tiers
        .iter()
        .map(|t| (t.tier, t.committed))
        .collect();
    assert!(held.iter().map(|(_, n)| n).sum::<u64>() >= 40, "{held:?}");

    // Everything reaches Redis and the router; then the disk is lost.
    for tier in [1, 2] {
        eventually("published", || async {
            contiguous(&stream_by_tier_seq(&redis, tier).await, 50).then_some(())
        })
        .await;
    }
    writer.shutdown().await.expect("shutdown");
    let old_epoch = writer.epoch();

    // Restore into a fresh folder: never over an existing file; the first open needs Redis.
    let fresh = tempfile::tempdir().expect("tempdir");
    let restored_path = fresh.path().join("shard-71.sqlite");
    let restored = backup::restore(&backup_path, &restored_path).expect("restore");
    assert!(restored.restored);
    assert!(matches!(
        backup::restore(&backup_path, &restored_path),
        Err(backup::BackupError::Exists { .. })
    ));
    let mut config = config.clone();
    config.path = restored_path.clone();
    let mut local = config.clone();
    local.redis_url = None;
    assert!(matches!(
        ShardWriter::open(local).await,
        Err(OpenError::RestoredNeedsRedis { .. })
    ));
    let writer = open(&config).await;
    assert!(writer.epoch() > old_epoch, "a fresh epoch");
    assert!(!ShardState::read(&restored_path).expect("inspect").restored);
    for tier in [1, 2] {
        assert_eq!(
            writer.committed_tier_seq(tier),
            50,
            "continues above Redis's mark"
        );
    }
    let after: Vec<HuntEvent> = (0..10)
        .map(|i| score(1 + (i % 2) as u32, "late", 1000 + i))
        .collect();
    append_all(&writer, &after).await;
    for tier in [1, 2] {
        // No tier_seq carries two events (checked inside), none is missing.
        let by_tier_seq = eventually("published after the restore", || async {
            let events = stream_by_tier_seq(&redis, tier).await;
            contiguous(&events, 55).then_some(events)
        })
        .await;
        // Every event the backup held is there, under the same tier_seq.
        let held = crate::support::rows(&backup_path, tier);
        assert_eq!(
            held.len() as u64,
            snapshot.tiers[tier as usize - 1].committed
        );
        for (seq, tier_seq) in held {
            assert_eq!(by_tier_seq[&tier_seq].seq, seq);
        }
        let ids: BTreeSet<(u64, u64)> = by_tier_seq.values().map(|e| (e.epoch, e.seq)).collect();
        assert_eq!(ids.len(), 55, "event ids never repeat");
        apply_stream(&redis, tier).await;
        let all: Vec<&HuntEvent> = before.iter().chain(&during).chain(&after).collect();
        assert_eq!(board(&redis, tier).await, totals(all, tier), "tier {tier}");
    }
    writer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reads_a_file_beside_its_running_writer() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 72, &redis);
    let writer = open(&config).await;
    append_all(
        &writer,
        &(0..12).map(|i| score(1, "ada", i)).collect::<Vec<_>>(),
    )
    .await;
    eventually("published", || async {
        (stream(&redis, 1).await.len() == 12).then_some(())
    })
    .await;
    let db = path_str(&config.path);

    let table = shard_writer(&["inspect", "--db", db]);
    assert!(table.status.success(), "{table:?}");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("shard 72"), "{table}");
    assert!(table.contains("committed"), "{table}");

    let url = redis.url();
    let json = shard_writer(&["inspect", "--db", db, "--json", "--redis-url", &url]);
    assert!(json.status.success(), "{json:?}");
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(json["shard_id"], 72);
    assert_eq!(json["epoch"], writer.epoch());
    assert_eq!(json["tiers"][0]["tier"], 1);
    assert_eq!(json["tiers"][0]["committed"], 12);
    assert_eq!(json["tiers"][0]["retained"], 12);
    assert_eq!(json["tiers"][0]["first_retained"], 1);
    assert_eq!(json["tiers"][0]["redis"]["published"], 12);
    // The writer is still open and still appends.
    writer.append(score(1, "ada", 1)).await.expect("append");

    let missing = dir.path().join("missing.sqlite");
    let failed = shard_writer(&["inspect", "--db", path_str(&missing)]);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("no such shard file"));
    let not_a_shard = dir.path().join("notes.txt");
    std::fs::write(
        &not_a_shard,
        "not a database, just some text that is long enough",
    )
    .expect("write");
    let failed = shard_writer(&["inspect", "--db", path_str(&not_a_shard)]);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("not a shard file"));
    let failed = shard_writer(&[
        "serve",
        "--db",
        db,
        "--shard-id",
        "72",
        "--queue-capacity",
        "0",
    ]);
    assert_eq!(failed.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("--queue-capacity"));
    writer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_a_tier_whose_router_state_was_lost() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 73, &redis);
    let writer = open(&config).await;
    let events: Vec<HuntEvent> = (0..30)
        .map(|i| score(1, &format!("p{}", i % 4), i))
        .collect();
    append_all(&writer, &events).await;
    eventually("published", || async {
        contiguous(&stream_by_tier_seq(&redis, 1).await, 30).then_some(())
    })
    .await;
    apply_stream(&redis, 1).await;
    let expected: BTreeMap<String, i64> = totals(&events, 1);
    assert_eq!(board(&redis, 1).await, expected);

    // The tier's router state and its stream are gone; only the shard file holds the events.
    let mut conn = redis_conn(&redis).await;
    let _: () = conn
        .del(&[
            keys::tier_stream(1),
            keys::tier_scores(1),
            keys::tier_members(1),
            keys::tier_applied(1),
        ])
        .await
        .expect("DEL");
    let db = path_str(&config.path);
    let url = redis.url();
    let refused = shard_writer(&[
        "replay",
        "--db",
        db,
        "--redis-url",
        &url,
        "--tier",
        "1",
        "--from",
        "31",
    ]);
    assert!(!refused.status.success());
    let asked = shard_writer(&[
        "replay",
        "--db",
        db,
        "--redis-url",
        &url,
        "--tier",
        "1",
        "--from",
        "1",
    ]);
    assert!(asked.status.success(), "{asked:?}");
    eventually("re-sent", || async {
        contiguous(&stream_by_tier_seq(&redis, 1).await, 30).then_some(())
    })
    .await;
    apply_stream(&redis, 1).await;
    assert_eq!(board(&redis, 1).await, expected, "rebuilt exactly");
    apply_stream(&redis, 1).await;
    assert_eq!(board(&redis, 1).await, expected, "never counted twice");
    let pending: Option<u64> = conn
        .hget(keys::tier_replay(1), keys::shard_field(73))
        .await
        .expect("HGET replay");
    assert_eq!(pending, None, "the request is satisfied");
    writer.shutdown().await.expect("shutdown");
}
