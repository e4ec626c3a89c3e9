//! The whole pipeline on a private Redis Cluster of three primaries: shard writers and a router
//! in cluster mode, tiers, chests and clues spread over different nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hunt_redis::connection::Timeouts;
use hunt_testkit::RedisCluster;
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::v1::{
    AwardState, GetAwardRequest, GetTopRequest, HuntEvent, TreasureAwarded,
};
use leaderboard_proto::{keys, rewards};
use shard_writer::{ClueClaim, ShardWriter, WriterConfig};
use tier_router::{App, RouterConfig};

use crate::support::{RouterProcess, Totals, client, eventually, score};

/// A key id with `prefix` whose key (made by `key`) is served by another node than `avoid`'s.
fn id_off_node(
    cluster: &RedisCluster,
    prefix: &str,
    key: fn(&str) -> String,
    avoid: &str,
) -> String {
    let avoided = cluster.node_of(avoid).expect("node");
    (0..)
        .map(|n| format!("{prefix}{n}"))
        .find(|id| cluster.node_of(&key(id)).expect("node") != avoided)
        .expect("some id lands elsewhere")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_and_a_router_in_cluster_mode_keep_every_guarantee() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes: BTreeSet<usize> = rewards::tier_ids()
        .map(|tier| cluster.node_of(&keys::tier_stream(tier)).expect("node"))
        .collect();
    assert!(nodes.len() >= 2, "every tier landed on one node");

    let mut config = RouterConfig::new(cluster.urls());
    config.redis_cluster = true;
    config.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.lease_ttl = Duration::from_millis(1_000);
    config.read_block = Duration::from_millis(50);
    config.follower_refresh = Duration::from_millis(50);
    config.saga_interval = Duration::from_millis(200);
    let router = App::build(config).await.expect("router builds").spawn();

    let mut writers = Vec::new();
    for shard in [1u32, 2] {
        let mut config = WriterConfig::new(dir.path().join(format!("s{shard}.sqlite")), shard)
            .with_redis_cluster(cluster.urls());
        config.redelivery_timeout = Duration::from_millis(500);
        config.ack_poll_interval = Duration::from_millis(20);
        writers.push(ShardWriter::open(config).await.expect("writer"));
    }

    // Points in every tier from both shards.
    let mut totals = Totals::new();
    let tiers: Vec<u32> = rewards::tier_ids().collect();
    for (n, tier) in tiers.iter().copied().cycle().take(40).enumerate() {
        let player = format!("p{}", n % 7);
        let points = i64::try_from(n).expect("small") + 1;
        writers[n % 2]
            .append(score(tier, &player, points))
            .await
            .expect("append");
        *totals.entry(tier).or_default().entry(player).or_default() += points;
    }

    // Both shards award one chest, kept on another node than the tier: the saga settles it.
    let tier = rewards::TIERS[1].id;
    let chest = id_off_node(&cluster, "gate", keys::chest, &keys::tier_stream(tier));
    for (writer, player) in writers.iter().zip(["w1", "w2"]) {
        let award = HuntEvent {
            tier,
            kind: Some(Kind::TreasureAwarded(TreasureAwarded {
                chest_key: chest.clone(),
                award_id: format!("award-{player}"),
                player_id: player.to_owned(),
                points: 40,
            })),
            ..HuntEvent::default()
        };
        writer.append(award).await.expect("append award");
    }

    let grpc = client(&router).await;
    let states = eventually("the saga settles the duplicate award", || {
        let mut grpc = grpc.clone();
        async move {
            let mut states = BTreeMap::new();
            for player in ["w1", "w2"] {
                let award = grpc
                    .get_award(GetAwardRequest {
                        tier: 0,
                        award_id: format!("award-{player}"),
                    })
                    .await
                    .ok()?
                    .into_inner();
                states.insert(player, award.award?.state);
            }
            let mut final_states: Vec<i32> = states.values().copied().collect();
            final_states.sort_unstable();
            (final_states == [AwardState::Confirmed as i32, AwardState::Compensated as i32])
                .then_some(states)
        }
    })
    .await;
    let winner = states
        .iter()
        .find(|(_, state)| **state == AwardState::Confirmed as i32)
        .map(|(player, _)| (*player).to_owned())
        .expect("a winner");
    totals.entry(tier).or_default().insert(winner.clone(), 40);

    // The losing shard reads its compensation from its inbox (a stream of its own) and acks it.
    let loser = if winner == "w1" { 1 } else { 0 };
    let mut inbox = writers[loser].compensations();
    let compensation = inbox
        .next(Duration::from_secs(5))
        .await
        .expect("inbox read")
        .expect("a compensation");
    assert_eq!(compensation.revoked.chest_key, chest);
    assert_eq!(compensation.revoked.points, 40);
    // It names the award that holds the chest, so the shard records the verdict with it.
    assert_eq!(
        compensation.revoked.holder_award_id,
        format!("award-{winner}")
    );
    // Acknowledged through one single-key call, routed to the inbox's slot.
    inbox.ack(&compensation).await.expect("ack");
    assert!(
        inbox
            .next(Duration::from_millis(100))
            .await
            .expect("inbox read")
            .is_none()
    );

    for tier in rewards::tier_ids() {
        let want = totals.get(&tier).cloned().unwrap_or_default();
        eventually("GetTop equals the appended totals", || {
            let mut grpc = grpc.clone();
            let want = want.clone();
            async move {
                let top = grpc
                    .get_top(GetTopRequest {
                        tier,
                        offset: 0,
                        limit: 1_000,
                    })
                    .await
                    .ok()?
                    .into_inner();
                let got: BTreeMap<String, i64> = top
                    .entries
                    .into_iter()
                    .filter(|entry| entry.score != 0)
                    .map(|entry| (entry.player_id, entry.score))
                    .collect();
                (got == want).then_some(())
            }
        })
        .await;
    }

    // Clue claims through the writers, on a clue kept on another node than the chest.
    let clue = id_off_node(&cluster, "clue", keys::clue, &keys::chest(&chest));
    let mut conn = hunt_redis::RedisTarget::open(&cluster.urls(), true)
        .expect("seeds")
        .connect(Timeouts::default())
        .await
        .expect("cluster connection");
    assert!(
        hunt_redis::call(
            &mut conn,
            &leaderboard_proto::functions::OpenClue::new(
                &clue,
                1,
                leaderboard_proto::functions::Gate::Off
            )
        )
        .await
        .map(|opened| opened.opened)
        .expect("open")
    );
    let first = writers[0].claim_clue(&clue, "ada").await.expect("claim");
    assert!(matches!(first, ClueClaim::Won { .. }), "{first:?}");
    let second = writers[1].claim_clue(&clue, "bob").await.expect("claim");
    assert!(
        matches!(&second, ClueClaim::Held { holder_player_id, .. } if holder_player_id == "ada"),
        "{second:?}"
    );

    for writer in writers {
        writer.shutdown().await.expect("shutdown");
    }
    assert!(router.shutdown(Duration::from_secs(10)).await);
    drop(grpc);
}

/// Appends `count` points over every tier, alternating writers, and adds them to `totals`.
async fn append_round(writers: &[ShardWriter], totals: &mut Totals, round: usize, count: usize) {
    let tiers: Vec<u32> = rewards::tier_ids().collect();
    for n in 0..count {
        let tier = tiers[n % tiers.len()];
        let player = format!("p{}", (n + round) % 11);
        let points = i64::try_from(n % 50).expect("small") + 1;
        writers[n % writers.len()]
            .append(score(tier, &player, points))
            .await
            .expect("append");
        *totals.entry(tier).or_default().entry(player).or_default() += points;
    }
}

/// Waits until every tier's board on `cluster` equals `totals`.
async fn boards_equal(cluster: &RedisCluster, totals: &Totals, what: &str) {
    let target = hunt_redis::RedisTarget::open(&cluster.urls(), true).expect("seeds");
    eventually(what, || {
        let target = target.clone();
        async move {
            let mut conn = target.connect(Timeouts::default()).await.ok()?;
            for tier in rewards::tier_ids() {
                let board = tier_router::cache::read_range(&mut conn, tier, 0, 10_000)
                    .await
                    .ok()?;
                let got: BTreeMap<String, i64> =
                    board.into_iter().map(|e| (e.player_id, e.score)).collect();
                if got != totals.get(&tier).cloned().unwrap_or_default() {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
}

/// How long the paused router stays frozen.
const PAUSE: Duration = Duration::from_secs(12);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_paused_past_its_lease_on_a_cluster_applies_again_or_lets_go() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let seeds = cluster.urls();
    let paused = RouterProcess::start_at(&seeds, dir.path(), "paused", &["--redis-cluster"]);
    let other = RouterProcess::start_at(&seeds, dir.path(), "other", &["--redis-cluster"]);
    eventually("the tiers split between the two routers", || async {
        (paused.log().contains("tier owned") && other.log().contains("tier owned")).then_some(())
    })
    .await;
    let mut writers = Vec::new();
    for shard in [1u32, 2] {
        let mut config = WriterConfig::new(dir.path().join(format!("s{shard}.sqlite")), shard)
            .with_redis_cluster(seeds.clone());
        config.redelivery_timeout = Duration::from_millis(500);
        config.ack_poll_interval = Duration::from_millis(20);
        writers.push(ShardWriter::open(config).await.expect("writer"));
    }
    let mut totals = Totals::new();
    append_round(&writers, &mut totals, 0, 100).await;
    boards_equal(&cluster, &totals, "both routers apply their tiers").await;

    // Frozen with its connections open, past its 1 s lease: the other router takes its tiers.
    paused.pause();
    append_round(&writers, &mut totals, 1, 100).await;
    boards_equal(&cluster, &totals, "the other router applies every tier").await;
    // The fault lasts well past the lease and the router's Redis response timeout (5 s): every
    // call it had in flight is overdue when it resumes.
    tokio::time::sleep(PAUSE).await;

    // Back: whichever router ends up with each tier applies it, round after round, while the
    // tiers move back to their fair owner.
    paused.resume();
    for round in 2..6 {
        append_round(&writers, &mut totals, round, 100).await;
        boards_equal(&cluster, &totals, "every tier is applied after the resume").await;
    }
    // It noticed that its tiers had moved on (through the fence, or the lease), however its
    // overdue calls ended.
    eventually("the resumed router finds its tiers taken", || async {
        let log = paused.log();
        (log.contains("fence rejected") || log.contains("tier lease lost")).then_some(())
    })
    .await;
    for writer in writers {
        writer.shutdown().await.expect("shutdown");
    }
    assert!(paused.terminate().success());
    assert!(other.terminate().success());
}
