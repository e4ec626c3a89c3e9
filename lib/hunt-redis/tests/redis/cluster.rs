//! The library and the connection type against a private Redis Cluster of three primaries:
//! calls routed by their first key, pipelines split per slot, the library loaded per node.

use std::collections::BTreeSet;
use std::time::Duration;

use hunt_redis::{Connection, RedisTarget, Timeouts};
use hunt_testkit::RedisCluster;
use leaderboard_proto::functions::Function;
use leaderboard_proto::functions::{
    Applied, Apply, ApplyEntry, ApplyKind, ChestClaim, ClaimChest, ClaimClue, ClueClaim, Gate,
    LeaseAcquire, LeaseAcquired, OpenClue, Version,
};
use leaderboard_proto::{keys, rewards};

async fn connect(cluster: &RedisCluster) -> Connection {
    let timeouts = Timeouts {
        connect: Some(Duration::from_secs(5)),
        response: Some(Duration::from_secs(5)),
    };
    let conn = RedisTarget::open(&cluster.urls(), true)
        .expect("seed list")
        .connect(timeouts)
        .await
        .expect("cluster connection");
    assert!(matches!(conn, Connection::Cluster(_)));
    conn
}

/// `n` ids with `prefix` whose keys (made by `key`) land on every node.
fn ids_on_every_node(cluster: &RedisCluster, prefix: &str, key: fn(&str) -> String) -> Vec<String> {
    let mut ids = Vec::new();
    let mut nodes = BTreeSet::new();
    for n in 0.. {
        let id = format!("{prefix}{n}");
        if nodes.insert(cluster.node_of(&key(&id)).expect("node of key")) {
            ids.push(id);
        }
        if nodes.len() == hunt_testkit::CLUSTER_PRIMARIES {
            return ids;
        }
    }
    unreachable!("the loop returns")
}

#[tokio::test]
async fn tiers_on_different_nodes_apply_and_claim_through_one_connection() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let tiers: Vec<u32> = rewards::tier_ids().collect();
    let nodes: BTreeSet<usize> = tiers
        .iter()
        .map(|tier| cluster.node_of(&keys::tier_scores(*tier)).expect("node"))
        .collect();
    assert!(nodes.len() >= 2, "every tier landed on one node: {nodes:?}");

    let mut conn = connect(&cluster).await;
    hunt_redis::ensure_loaded(&mut conn)
        .await
        .expect("library loads");
    for tier in &tiers {
        let acquire = LeaseAcquire::new(*tier, "router-a", Duration::from_secs(5));
        let LeaseAcquired::Held(token) =
            hunt_redis::call(&mut conn, &acquire).await.expect("lease")
        else {
            panic!("tier {tier} is leased elsewhere");
        };
        let mut apply = Apply::new(*tier, &token, "1-0", 100);
        apply.entry(&ApplyEntry {
            shard_id: 7,
            tier_seq: 1,
            player: "ada",
            points: i64::from(*tier) * 10,
            kind: ApplyKind::Points,
        });
        let applied: Applied = hunt_redis::call(&mut conn, &apply).await.expect("apply");
        assert_eq!(applied.applied, 1, "tier {tier}");
    }

    // One pipeline over every tier: split per slot, replies back in order.
    let mut pipe = redis::pipe();
    for tier in &tiers {
        pipe.cmd("ZREVRANGE")
            .arg(keys::tier_scores(*tier))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
    }
    let tops: Vec<Vec<(String, f64)>> = pipe.query_async(&mut conn).await.expect("tops");
    // What the split is for: redis-rs alone sends a pipeline to one node and refuses this one.
    let Connection::Cluster(raw) = &mut conn else {
        unreachable!("connected in cluster mode")
    };
    let refused = pipe.query_async::<redis::Value>(raw).await;
    assert!(refused.is_err(), "{refused:?}");
    for (tier, top) in tiers.iter().zip(tops) {
        assert_eq!(top.len(), 1, "tier {tier}");
        assert_eq!(
            leaderboard_proto::functions::player_of_member(&top[0].0),
            Some("ada")
        );
        assert_eq!(top[0].1, f64::from(*tier) * 10.0);
    }

    // Chests and clues spread over every node.
    for chest in ids_on_every_node(&cluster, "chest-", keys::chest) {
        let won = hunt_redis::call(&mut conn, &ClaimChest::new(&chest, "award-1", Gate::Off)).await;
        assert_eq!(won.expect("claim"), ChestClaim::Won);
        let held =
            hunt_redis::call(&mut conn, &ClaimChest::new(&chest, "award-2", Gate::Off)).await;
        assert_eq!(
            held.expect("claim"),
            ChestClaim::Held {
                holder_award_id: "award-1".to_owned()
            }
        );
    }
    for clue in ids_on_every_node(&cluster, "clue-", keys::clue) {
        assert!(
            hunt_redis::call(&mut conn, &OpenClue::new(&clue, 1, Gate::Off))
                .await
                .map(|opened| opened.opened)
                .expect("open")
        );
        let first = hunt_redis::call(&mut conn, &ClaimClue::new(&clue, "ada", 1, Gate::Off)).await;
        assert!(matches!(first.expect("claim"), ClueClaim::Won { .. }));
        let second = hunt_redis::call(&mut conn, &ClaimClue::new(&clue, "bob", 2, Gate::Off)).await;
        assert!(
            matches!(second.expect("claim"), ClueClaim::Held { holder_player_id, .. } if holder_player_id == "ada")
        );
    }

    // A transaction on one key still works (the writer acknowledges compensations this way).
    let inbox = keys::shard_inbox(3);
    let (_id, len): (String, u64) = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(&inbox)
        .arg("*")
        .arg("e")
        .arg("x")
        .cmd("XLEN")
        .arg(&inbox)
        .query_async(&mut conn)
        .await
        .expect("single-slot transaction");
    assert_eq!(len, 1);
}

#[tokio::test]
async fn the_library_comes_back_on_a_node_that_lost_it() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let mut conn = connect(&cluster).await;
    hunt_redis::ensure_loaded(&mut conn)
        .await
        .expect("library loads");
    let chests = ids_on_every_node(&cluster, "chest-", keys::chest);
    let lost = cluster.node_of(&keys::chest(&chests[1])).expect("node");
    let mut node = cluster
        .node_client(lost)
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("node connection");
    let () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query(&mut node)
        .expect("function flush");

    // The call routed to that node finds no library, reloads it there and succeeds.
    for chest in &chests {
        let claim =
            hunt_redis::call(&mut conn, &ClaimChest::new(chest, "award-1", Gate::Off)).await;
        assert_eq!(claim.expect("claim"), ChestClaim::Won, "{chest}");
    }
    for index in 0..hunt_testkit::CLUSTER_PRIMARIES {
        let mut node = cluster
            .node_client(index)
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("node connection");
        let version: i64 = Version::new()
            .cmd()
            .query(&mut node)
            .expect("library on every node");
        assert_eq!(version, leaderboard_proto::functions::LIBRARY_VERSION);
    }
}

#[tokio::test]
async fn a_barrier_goes_to_the_primary_of_each_slot() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let mut conn = connect(&cluster).await;
    let chests: Vec<String> = ids_on_every_node(&cluster, "chest-", keys::chest)
        .iter()
        .map(|id| keys::chest(id))
        .collect();
    let chest_keys: Vec<&str> = chests.iter().map(String::as_str).collect();
    // No replicas here: every primary answers that none acknowledged, after the wait, and
    // nothing is refused as crossing slots.
    let acked = hunt_redis::replicated(&mut conn, &chest_keys, 1, Duration::from_millis(100))
        .await
        .expect("barriers");
    assert_eq!(acked, 0);
    for key in &chests {
        let node = cluster.node_of(key).expect("node");
        let mut direct = cluster
            .node_client(node)
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("node connection");
        let written: bool = redis::cmd("EXISTS")
            .arg(keys::barrier(key))
            .query(&mut direct)
            .expect("the barrier is on the key's own node");
        assert!(written, "{key}");
    }
}
