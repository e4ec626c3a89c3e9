//! Rows leave the shard file only when acknowledged and older than the retention window.

use std::sync::Arc;
use std::time::Duration;

use hunt_testkit::RedisServer;
use shard_writer::clock::OffsetClock;

use crate::support::{config, eventually, open, rows, score, set_applied, stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_acknowledged_rows_past_retention_are_pruned() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = OffsetClock::new(0);
    let mut config = config(dir.path(), 41, &redis);
    config.clock = Arc::new(clock.clone());
    config.retention = Duration::from_secs(3600);
    config.prune_interval = Duration::from_millis(20);
    let writer = open(&config).await;
    for i in 0..100 {
        writer.append(score(1, "old", i)).await.expect("append");
    }
    eventually("published", || async {
        (stream(&redis, 1).await.len() == 100).then_some(())
    })
    .await;
    // The router applied 60 of them; two hours pass.
    set_applied(&redis, 1, 41, 60).await;
    clock.advance(2 * 3600 * 1000);
    let remaining = eventually("acknowledged old rows pruned", || async {
        let remaining = rows(&config.path, 1);
        (remaining.len() == 40).then_some(remaining)
    })
    .await;
    let tier_seqs: Vec<u64> = remaining.iter().map(|r| r.1).collect();
    assert_eq!(
        tier_seqs,
        (61..=100).collect::<Vec<_>>(),
        "unacknowledged rows stay"
    );

    // Young rows stay even when acknowledged.
    for i in 0..50 {
        writer.append(score(1, "young", i)).await.expect("append");
    }
    eventually("published", || async {
        (stream(&redis, 1).await.len() == 150).then_some(())
    })
    .await;
    set_applied(&redis, 1, 41, 150).await;
    clock.advance(30 * 60 * 1000);
    eventually("acknowledged, now expired rows pruned", || async {
        let remaining = rows(&config.path, 1);
        (remaining.first().map(|r| r.1) == Some(101)).then_some(())
    })
    .await;
    assert_eq!(
        rows(&config.path, 1).len(),
        50,
        "acknowledged young rows stay"
    );

    // With every row pruned, a reopened writer still continues above the old counters.
    let last = writer.append(score(1, "last", 1)).await.expect("append");
    eventually("published", || async {
        (stream(&redis, 1).await.len() == 151).then_some(())
    })
    .await;
    set_applied(&redis, 1, 41, 151).await;
    clock.advance(2 * 3600 * 1000);
    eventually("every row pruned", || async {
        rows(&config.path, 1).is_empty().then_some(())
    })
    .await;
    writer.shutdown().await.expect("shutdown");
    // Redis forgets too, so only the shard file can know where the counters stood.
    redis.flushall().expect("FLUSHALL");
    let writer = open(&config).await;
    let next = writer.append(score(1, "next", 1)).await.expect("append");
    assert_eq!(next.tier_seq, 152, "tier_seq continues after pruning");
    assert!(next.id.seq > last.id.seq, "seq continues after pruning");
    writer.shutdown().await.expect("shutdown");
}
