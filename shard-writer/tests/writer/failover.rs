//! A failover to a replica that lacks the primary's last writes, made by Redis Sentinel: the
//! replication link is cut through a proxy, the primary keeps deciding, then dies and the
//! sentinels promote the replica. The same on a Redis Cluster with replicas, promoted by
//! `CLUSTER FAILOVER TAKEOVER`. Every answer a caller was told stands, because an answer is only
//! told once a replica holds it; what was decided during the cut was never told.

use std::time::Duration;

use hunt_testkit::replicated::ReplicatedRedis;
use hunt_testkit::{CLUSTER_PRIMARIES, RedisCluster};
use leaderboard_proto::rewards;
use shard_writer::{ChestClaim, ClaimError, ClueClaim, ShardWriter, WriterConfig};

use crate::support::{answered, open, timers};

/// A writer of shard 1 in `dir` that waits for one replica before it tells a claim.
fn replicated(
    dir: &std::path::Path,
    config: impl FnOnce(WriterConfig) -> WriterConfig,
) -> WriterConfig {
    let mut config = timers(config(WriterConfig::new(dir.join("shard-1.sqlite"), 1)));
    config.claim_replicas = 1;
    config.claims_poll = Duration::from_millis(50);
    config
}

/// What was told before the cut: ada's win of c1 (its token) and the award holding chest k1.
struct Told {
    token: u64,
    award: String,
}

const TIER: u32 = rewards::TIERS[0].id;
const CHEST_TYPE: &str = rewards::TIERS[0].chest_types[0].name;

/// Opens wave 1 of c1 and c2, then ada wins c1 and an award wins k1, both told.
async fn tell(writer: &ShardWriter) -> Told {
    let clues = vec!["c1".to_owned(), "c2".to_owned()];
    answered("wave 1 opens", || writer.open_wave(TIER, 1, &clues)).await;
    let ClueClaim::Won { token, wave: 1 } =
        answered("ada claims c1", || writer.claim_clue("c1", "ada")).await
    else {
        panic!("ada wins c1");
    };
    let award = writer.award_id();
    assert_eq!(
        answered("the award claims k1", || writer
            .claim_chest(TIER, CHEST_TYPE, "k1", &award))
        .await,
        ChestClaim::Won
    );
    Told { token, award }
}

/// With the replication link cut the primary still decides, but no replica acknowledges, so
/// bob's claim of c2 and `untold`'s claim of k2 are refused, never told.
async fn refused_while_cut(writer: &ShardWriter, untold: &str) {
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
        writer.claim_chest(TIER, CHEST_TYPE, "k2", untold).await,
        Err(ClaimError::Unreplicated { .. })
    ));
}

/// After the failover everything told stands (the holder, its token, the chest's award) and
/// what was decided during the cut is decided afresh: c2 and k2 are free.
async fn told_stands(writer: &ShardWriter, told: &Told, untold: &str) {
    assert_eq!(
        answered("cy claims c1", || writer.claim_clue("c1", "cy")).await,
        ClueClaim::Held {
            holder_player_id: "ada".into(),
            token: told.token,
            wave: 1
        }
    );
    assert_eq!(
        answered("another award claims k1", || writer
            .claim_chest(TIER, CHEST_TYPE, "k1", "1.9.a9"))
        .await,
        ChestClaim::Held {
            holder_award_id: told.award.clone()
        }
    );
    let ClueClaim::Won { token, wave: 1 } =
        answered("dee claims c2", || writer.claim_clue("c2", "dee")).await
    else {
        panic!("dee wins c2: bob's win was never told");
    };
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
            .claim_chest(TIER, CHEST_TYPE, "k2", untold))
        .await,
        ChestClaim::Won
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_replica_missing_writes_keeps_every_told_claim() {
    let mut redis = tokio::task::spawn_blocking(ReplicatedRedis::start)
        .await
        .expect("join")
        .expect("a primary, a replica and three sentinels");
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = open(&replicated(dir.path(), |config| {
        config.with_redis(redis.sentinel_url())
    }))
    .await;
    let told = tell(&writer).await;

    redis.link.cut();
    let untold = writer.award_id();
    refused_while_cut(&writer, &untold).await;
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

    told_stands(&writer, &told, &untold).await;
    writer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_to_replicas_missing_writes_keeps_every_told_claim() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start_replicated)
        .await
        .expect("join")
        .expect("three primaries, each with a replica");
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = open(&replicated(dir.path(), |config| {
        config.with_redis_cluster(cluster.urls())
    }))
    .await;
    let told = tell(&writer).await;

    cluster.cut_replication().expect("cut the links");
    let untold = writer.award_id();
    refused_while_cut(&writer, &untold).await;
    let primaries: Vec<u64> = (0..CLUSTER_PRIMARIES)
        .map(|index| cluster.primary_offset(index).expect("a primary's offset"))
        .collect();

    // The primaries die with writes no replica has; each replica takes its primary's slots.
    let promoted = tokio::task::spawn_blocking(move || {
        cluster.kill_primaries();
        cluster.take_over().map(|()| cluster)
    })
    .await
    .expect("join");
    let mut cluster = promoted.expect("the replicas take over");
    let behind = (0..CLUSTER_PRIMARIES)
        .filter(|&index| {
            cluster.replica_offset(index).expect("a replica's offset") < primaries[index]
        })
        .count();
    assert!(
        behind >= 1,
        "a promoted replica lacks its primary's last writes (primaries at {primaries:?})"
    );
    // The old primaries come back empty and replicate the new ones, so claims can be
    // acknowledged again.
    let restarted =
        tokio::task::spawn_blocking(move || cluster.restart_primaries().map(|()| cluster))
            .await
            .expect("join");
    let cluster = restarted.expect("the old primaries rejoin as replicas");

    told_stands(&writer, &told, &untold).await;
    writer.shutdown().await.expect("shutdown");
    drop(cluster);
}
