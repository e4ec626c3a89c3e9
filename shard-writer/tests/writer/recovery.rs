//! Claim decisions outlive a Redis that forgets: restarted empty, or flushed under live
//! connections. Every answer a caller was given stands, tokens keep rising, and no claim is
//! answered until every expected shard has put back what its file records.

use std::time::Duration;

use hunt_testkit::RedisServer;
use leaderboard_proto::{keys, rewards};
use redis::AsyncCommands;
use shard_writer::{ChestClaim, ClaimError, ClueClaim, ShardWriter, WriterConfig};

use crate::claims::{compensate_for, inbox_len};
use crate::support::{answered, config, eventually, open, redis_conn, shard_writer};

/// Shards of the hunt in this test: all three take part in claims.
const SHARDS: u32 = 3;

fn gated_config(dir: &std::path::Path, shard: u32, redis: &RedisServer) -> WriterConfig {
    let mut config = config(dir, shard, redis);
    config.claim_shards = SHARDS;
    config.claims_poll = Duration::from_millis(50);
    config
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

/// The gate's `joined` count as Redis holds it.
async fn joined(redis: &RedisServer) -> u64 {
    let mut conn = redis_conn(redis).await;
    conn.hget::<_, _, Option<u64>>(keys::CLAIMS, "joined")
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn told_decisions_stand_when_redis_forgets_and_the_gate_waits_for_every_shard() {
    let mut redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = rewards::TIERS[0].id;
    let chest_type = rewards::TIERS[0].chest_types[0].name;
    let one = open(&gated_config(dir.path(), 1, &redis)).await;
    let two = open(&gated_config(dir.path(), 2, &redis)).await;
    let three = open(&gated_config(dir.path(), 3, &redis)).await;

    // A fresh Redis: the gate opens once all three shards have joined.
    one.open_wave(tier, 1, &ids(&["c1", "c2", "c3"]))
        .await
        .expect("open wave 1");
    let ClueClaim::Won { token: t1, wave: 1 } = one.claim_clue("c1", "ada").await.expect("claim")
    else {
        panic!("ada wins c1");
    };
    assert_eq!(
        two.claim_clue("c1", "bob").await.expect("claim"),
        ClueClaim::Held {
            holder_player_id: "ada".into(),
            token: t1,
            wave: 1
        }
    );
    let ClueClaim::Won { token: t2, wave: 1 } = two.claim_clue("c2", "bob").await.expect("claim")
    else {
        panic!("bob wins c2");
    };
    assert_eq!(
        two.claim_chest(tier, chest_type, "gold", "award-a")
            .await
            .expect("chest"),
        ChestClaim::Won
    );
    assert_eq!(
        three
            .claim_chest(tier, chest_type, "gold", "award-b")
            .await
            .expect("chest"),
        ChestClaim::Held {
            holder_award_id: "award-a".into()
        }
    );
    // Shard three goes away; it told "award-a holds gold", and so did shard two.
    three.shutdown().await.expect("shutdown");
    drop(three);

    // FLUSHALL under live connections: the very next claim knows.
    redis.flushall().expect("FLUSHALL");
    assert!(
        matches!(
            one.claim_clue("c1", "cy").await,
            Err(ClaimError::Recovering)
        ),
        "the first claim after the loss is refused, not answered from an empty state"
    );
    // Shards one and two restore and join; with three of three expected the gate stays shut.
    eventually("shards one and two rejoin", || async {
        (joined(&redis).await == 2).then_some(())
    })
    .await;
    for _ in 0..3 {
        assert!(matches!(
            two.claim_clue("c3", "di").await,
            Err(ClaimError::Recovering)
        ));
        let reopened = one.open_wave(tier, 1, &ids(&["c1"])).await;
        assert!(
            matches!(reopened, Err(ClaimError::Recovering)),
            "{reopened:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The operator opens it without shard three (its chest decision is in shard two's file too).
    let opened = shard_writer(&["open-claims", "--redis-url", &redis.url()]);
    let said = String::from_utf8_lossy(&opened.stdout);
    assert!(opened.status.success(), "{said}");
    assert!(said.contains("opened with 2 of 3 shards joined"), "{said}");

    // Every answer given before stands.
    assert_eq!(
        answered("c1 after the flush", || one.claim_clue("c1", "cy")).await,
        ClueClaim::Held {
            holder_player_id: "ada".into(),
            token: t1,
            wave: 1
        }
    );
    assert_eq!(
        one.claim_clue("c2", "ada").await.expect("claim"),
        ClueClaim::Held {
            holder_player_id: "bob".into(),
            token: t2,
            wave: 1
        }
    );
    assert_eq!(
        one.claim_chest(tier, chest_type, "gold", "award-c")
            .await
            .expect("chest"),
        ChestClaim::Held {
            holder_award_id: "award-a".into()
        }
    );
    // Opening wave 1 again changes nothing: no second winner in one wave.
    one.open_wave(tier, 1, &ids(&["c1"])).await.expect("reopen");
    assert!(matches!(
        two.claim_clue("c1", "eve").await,
        Ok(ClueClaim::Held { ref holder_player_id, token, wave: 1 }) if holder_player_id == "ada" && token == t1
    ));
    // A new wave hands out a token above every one before.
    two.open_wave(tier, 2, &ids(&["c1"])).await.expect("wave 2");
    let ClueClaim::Won { token: t3, wave: 2 } = two.claim_clue("c1", "eve").await.expect("claim")
    else {
        panic!("eve wins c1 in wave 2");
    };
    assert!(t3 > t1, "tokens keep rising: {t3} after {t1}");

    // Redis restarted without its data: shard three comes back too, and with all three joined
    // the gate opens by itself.
    redis.restart(false).expect("restart empty");
    let three = open(&gated_config(dir.path(), 3, &redis)).await;
    assert_eq!(
        answered("c1 after the restart", || one.claim_clue("c1", "fay")).await,
        ClueClaim::Held {
            holder_player_id: "eve".into(),
            token: t3,
            wave: 2
        }
    );
    assert_eq!(joined(&redis).await, u64::from(SHARDS));
    assert_eq!(
        three
            .claim_chest(tier, chest_type, "gold", "award-d")
            .await
            .expect("chest"),
        ChestClaim::Held {
            holder_award_id: "award-a".into()
        }
    );
    assert_eq!(
        three.claim_clue("c2", "fay").await.expect("claim"),
        ClueClaim::Held {
            holder_player_id: "bob".into(),
            token: t2,
            wave: 1
        }
    );
    for writer in [one, two, three] {
        writer.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_never_claims_still_restores_so_the_gate_opens() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut quiet = gated_config(dir.path(), 7, &redis);
    quiet.claim_shards = 2;
    let mut busy = gated_config(dir.path(), 8, &redis);
    busy.claim_shards = 2;
    let quiet: ShardWriter = open(&quiet).await;
    let busy = open(&busy).await;
    busy.open_wave(1, 1, &ids(&["q"])).await.expect("wave");
    assert!(matches!(
        busy.claim_clue("q", "ada").await,
        Ok(ClueClaim::Won { .. })
    ));
    redis.flushall().expect("FLUSHALL");
    // The quiet shard makes no call; its restorer notices the loss by itself.
    assert_eq!(
        answered("q after the flush", || busy.claim_clue("q", "bob")).await,
        ClueClaim::Held {
            holder_player_id: "ada".into(),
            token: 1,
            wave: 1
        }
    );
    assert_eq!(joined(&redis).await, 2);
    quiet.shutdown().await.expect("shutdown");
    busy.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_is_handed_out_once_ever_and_its_verdict_comes_back() {
    const SHARD: u32 = 9;
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gated_config(dir.path(), SHARD, &redis);
    config.claim_shards = 1;
    let writer = open(&config).await;
    let mut reader = writer.compensations();
    let wait = Duration::from_millis(200);

    // x lost chest-x to y; the game gets it and acknowledges it.
    compensate_for(&redis, SHARD, "x", 40, "y").await;
    let first = reader.next(wait).await.expect("read").expect("x");
    assert_eq!(first.revoked.award_id, "x");
    reader.ack(&first).await.expect("ack");
    // w is handed out but not acknowledged when Redis loses everything.
    compensate_for(&redis, SHARD, "w", 10, "v").await;
    let pending = reader.next(wait).await.expect("read").expect("w");
    assert_eq!(pending.revoked.award_id, "w");

    redis.flushall().expect("FLUSHALL");
    // The saga, its sent-set gone, compensates both again under new entry ids.
    compensate_for(&redis, SHARD, "x", 40, "y").await;
    compensate_for(&redis, SHARD, "w", 10, "v").await;
    // x was acknowledged: never handed out again. w was not: it comes again until it is.
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    let again = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "w came again in time"
        );
        match reader.next(wait).await {
            Ok(Some(found)) => break found,
            Ok(None) | Err(ClaimError::Unreachable { .. }) => {}
            Err(err) => panic!("{err}"),
        }
    };
    assert_eq!(again.revoked.award_id, "w");
    reader.ack(&again).await.expect("ack");
    assert_eq!(reader.next(wait).await.expect("read"), None);
    assert_eq!(inbox_len(&redis, SHARD).await, 0, "x was acknowledged away");

    // The verdicts told with them come back: y holds chest-x, v holds chest-w.
    let tier = rewards::TIERS[0].id;
    let chest_type = rewards::TIERS[0].chest_types[0].name;
    for (chest, holder) in [("chest-x", "y"), ("chest-w", "v")] {
        assert_eq!(
            answered(chest, || writer.claim_chest(tier, chest_type, chest, "z")).await,
            ChestClaim::Held {
                holder_award_id: holder.into()
            }
        );
    }
    writer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_claim_after_redis_comes_back_is_answered() {
    let mut redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), 11, &redis);
    // Only the claim itself touches the connection the restart broke.
    config.claims_poll = Duration::from_secs(3_600);
    let writer = open(&config).await;
    writer.open_wave(1, 1, &ids(&["k"])).await.expect("wave");
    let won = writer.claim_clue("k", "ada").await.expect("claim");
    redis.restart(true).expect("restart with its data");
    // Redis is up again; the writer's connection still points at the old process.
    assert_eq!(
        writer
            .claim_clue("k", "ada")
            .await
            .expect("the first claim"),
        won
    );
    writer.shutdown().await.expect("shutdown");
}
