//! A failover to a replica that lacks the primary's last writes, made by Redis Sentinel: the
//! replication link is cut through a proxy, the primary keeps deciding, then dies and the
//! sentinels promote the replica. Every answer a caller was told stands, because an answer is
//! only told once a replica holds it; what was decided during the cut was never told.

use std::time::Duration;

use hunt_testkit::replicated::ReplicatedRedis;
use leaderboard_proto::rewards;
use shard_writer::{ChestClaim, ClaimError, ClueClaim, WriterConfig};

use crate::support::{answered, config, open};

fn sentinel_config(dir: &std::path::Path, redis: &ReplicatedRedis) -> WriterConfig {
    let mut config = config(dir, 1, &redis.primary).with_redis(redis.sentinel_url());
    config.claim_replicas = 1;
    config.claims_poll = Duration::from_millis(50);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_replica_missing_writes_keeps_every_told_claim() {
    let mut redis = tokio::task::spawn_blocking(ReplicatedRedis::start)
        .await
        .expect("join")
        .expect("a primary, a replica and three sentinels");
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = rewards::TIERS[0].id;
    let chest_type = rewards::TIERS[0].chest_types[0].name;
    let writer = open(&sentinel_config(dir.path(), &redis)).await;

    let clues = vec!["c1".to_owned(), "c2".to_owned()];
    answered("wave 1 opens", || writer.open_wave(tier, 1, &clues)).await;
    let ClueClaim::Won {
        token: told,
        wave: 1,
    } = answered("ada claims c1", || writer.claim_clue("c1", "ada")).await
    else {
        panic!("ada wins c1");
    };
    let award = writer.award_id();
    assert_eq!(
        answered("the award claims k1", || writer
            .claim_chest(tier, chest_type, "k1", &award))
        .await,
        ChestClaim::Won
    );

    // The link is cut: the primary still decides, but no replica acknowledges, so nothing is
    // told.
    redis.link.cut();
    let untold = writer.award_id();
    assert!(
        matches!(
            writer.claim_clue("c2", "bob").await,
            Err(ClaimError::Unreplicated {
                acked: 0,
                wanted: 1
            })
        ),
        "a win no replica holds is not told"
    );
    assert!(matches!(
        writer.claim_chest(tier, chest_type, "k2", &untold).await,
        Err(ClaimError::Unreplicated { .. })
    ));
    // The replica really lacks those decisions.
    let (primary, replica) = redis.offsets().expect("offsets");
    assert!(
        replica < primary,
        "the replica is behind: primary {primary}, replica {replica}"
    );

    // The primary dies; the sentinels promote the replica that lacks the last writes. The old
    // primary comes back empty and the sentinels make it the new primary's replica.
    redis.primary.stop();
    let promoted = tokio::task::spawn_blocking(move || {
        redis.wait_promoted(Duration::from_secs(30)).map(|()| redis)
    })
    .await
    .expect("join");
    let mut redis = promoted.expect("the sentinels promote the replica");
    redis
        .primary
        .start_again()
        .expect("the old primary restarts");

    // Everything told stands: the holder, its token, the chest's award.
    assert_eq!(
        answered("cy claims c1", || writer.claim_clue("c1", "cy")).await,
        ClueClaim::Held {
            holder_player_id: "ada".into(),
            token: told,
            wave: 1
        }
    );
    assert_eq!(
        answered("another award claims k1", || writer
            .claim_chest(tier, chest_type, "k1", "1.9.a9"))
        .await,
        ChestClaim::Held {
            holder_award_id: award.clone()
        }
    );
    // What was decided during the cut was never told: c2 and k2 are free, and a new win of c2
    // gets a token above every token told for the clue's tier before.
    let ClueClaim::Won { token, wave: 1 } =
        answered("dee claims c2", || writer.claim_clue("c2", "dee")).await
    else {
        panic!("dee wins c2: bob's win was never told");
    };
    assert!(token >= 1);
    assert_eq!(
        answered("bob claims c2 again", || writer.claim_clue("c2", "bob")).await,
        ClueClaim::Held {
            holder_player_id: "dee".into(),
            token,
            wave: 1
        }
    );
    assert_eq!(
        answered("the untold award claims k2 again", || writer
            .claim_chest(tier, chest_type, "k2", &untold))
        .await,
        ChestClaim::Won
    );
    writer.shutdown().await.expect("shutdown");
}
