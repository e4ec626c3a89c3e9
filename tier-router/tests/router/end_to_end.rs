//! Writers → streams → router → leaderboards, checked against totals computed from the appends.

use std::collections::BTreeMap;
use std::time::Duration;

use hunt_testkit::RedisServer;
use leaderboard_proto::rewards;
use leaderboard_proto::v1::leaderboard_service_client::LeaderboardServiceClient;
use leaderboard_proto::v1::{
    Entry, GetPlayerRequest, GetTopRequest, WatchRequest, WatchResponse, watch_response,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use shard_writer::{ShardWriter, WriterConfig};
use tier_router::cache::Diff;
use tonic::transport::Channel;

use crate::support::{client, eventually, router, score};

/// Per tier: player → total.
type Totals = BTreeMap<u32, BTreeMap<String, i64>>;

/// The whole leaderboard of `tier` through `GetTop`, as player → score, and whether its scores
/// are in order.
async fn leaderboard(
    grpc: &mut leaderboard_proto::v1::leaderboard_service_client::LeaderboardServiceClient<
        tonic::transport::Channel,
    >,
    tier: u32,
) -> (BTreeMap<String, i64>, u64) {
    let top = grpc
        .get_top(GetTopRequest {
            tier,
            offset: 0,
            limit: 1_000,
        })
        .await
        .expect("GetTop")
        .into_inner();
    let scores: Vec<i64> = top.entries.iter().map(|e| e.score).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "ranked best first");
    let ranks: Vec<u64> = top.entries.iter().map(|e| e.rank).collect();
    assert!(
        ranks.iter().copied().eq(1..=ranks.len() as u64),
        "ranks 1, 2, 3, …"
    );
    (
        top.entries
            .into_iter()
            .map(|e| (e.player_id, e.score))
            .collect(),
        top.version,
    )
}

async fn run(events: Vec<(u8, usize, u8, i64)>) {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    let mut writers = Vec::new();
    for shard in 1..=3u32 {
        let config = WriterConfig::new(dir.path().join(format!("s{shard}.sqlite")), shard)
            .with_redis(redis.url());
        writers.push(ShardWriter::open(config).await.expect("writer"));
    }
    let mut totals: Totals = BTreeMap::new();
    for (shard, tier, player, points) in events {
        let tier = rewards::TIERS[tier % rewards::TIERS.len()].id;
        let player = format!("p{player}");
        writers[usize::from(shard) % writers.len()]
            .append(score(tier, &player, points))
            .await
            .expect("append");
        *totals.entry(tier).or_default().entry(player).or_default() += points;
    }
    let grpc = client(&router).await;
    for tier in rewards::tier_ids() {
        let want: BTreeMap<String, i64> = totals.remove(&tier).unwrap_or_default();
        eventually("GetTop equals the appended totals", || {
            let mut grpc = grpc.clone();
            let want = want.clone();
            async move {
                let (got, _) = leaderboard(&mut grpc, tier).await;
                (got == want).then_some(())
            }
        })
        .await;
    }
    for writer in writers {
        writer.shutdown().await.expect("shutdown");
    }
    assert!(
        router.shutdown(Duration::from_secs(10)).await,
        "router stops in time"
    );
    drop(grpc);
}

#[test]
fn get_top_equals_totals_computed_from_the_appended_events() {
    let mut runner = TestRunner::new(Config {
        cases: 6,
        rng_seed: RngSeed::Fixed(0x524f_5554),
        failure_persistence: None,
        max_shrink_iters: 8,
        ..Config::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let event = (any::<u8>(), 0usize..5, 0u8..20, -1_000i64..1_000);
    runner
        .run(&proptest::collection::vec(event, 1..300), |events| {
            runtime.block_on(run(events));
            Ok(())
        })
        .expect("leaderboards are exact");
}

async fn append(writer: &ShardWriter, player: &str, points: i64) {
    writer
        .append(score(2, player, points))
        .await
        .expect("append");
}

/// A watcher's view of tier 2: the last snapshot with every delta since applied.
#[derive(Default)]
struct Follower {
    version: Option<u64>,
    top: Vec<Entry>,
    deltas: usize,
}

impl Follower {
    /// Follows `updates` until the rebuilt top satisfies `done`, then checks that `GetTop` at
    /// that same version returns that same top, and returns it.
    async fn until(
        &mut self,
        updates: &mut tonic::Streaming<WatchResponse>,
        done: impl Fn(&[Entry]) -> bool,
        grpc: &mut LeaderboardServiceClient<Channel>,
    ) -> Vec<Entry> {
        loop {
            let update = tokio::time::timeout(crate::support::DEADLINE, updates.message())
                .await
                .expect("an update in time")
                .expect("stream ok")
                .expect("stream open");
            match update.update.expect("a snapshot or a delta") {
                watch_response::Update::Snapshot(snapshot) => self.top = snapshot.entries,
                watch_response::Update::Delta(delta) => {
                    assert_eq!(
                        Some(delta.base),
                        self.version,
                        "a delta applies to the last version"
                    );
                    self.deltas += 1;
                    self.top = Diff {
                        upserts: delta.upserts,
                        removals: delta.removals,
                    }
                    .apply(&self.top);
                }
            }
            assert!(self.version < Some(update.version), "versions only grow");
            self.version = Some(update.version);
            if !done(&self.top) {
                continue;
            }
            let now = grpc
                .get_top(GetTopRequest {
                    tier: 2,
                    offset: 0,
                    limit: 100,
                })
                .await
                .expect("GetTop")
                .into_inner();
            assert_eq!(now.version, update.version, "nothing else was appended");
            assert_eq!(now.entries, self.top);
            return self.top.clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_snapshots_match_get_top_at_the_same_version_and_players_have_neighbours() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    let writer = crate::support::writer(&redis, dir.path(), 9).await;
    let mut grpc = client(&router).await;
    let mut updates = grpc
        .watch(WatchRequest {
            tier: 2,
            ..WatchRequest::default()
        })
        .await
        .expect("Watch")
        .into_inner();
    for (i, player) in ["ada", "bo", "cy", "di", "ed"].iter().enumerate() {
        append(&writer, player, 10 * (i as i64 + 1)).await;
    }
    // Follow the watch: a snapshot, then deltas, each against the version before it. Once the
    // rebuilt top shows all five players, GetTop at that same version agrees with it.
    let mut watch = Follower::default();
    watch
        .until(&mut updates, |top| top.len() == 5, &mut grpc)
        .await;
    // A change of one score travels as a delta.
    let deltas = watch.deltas;
    append(&writer, "ed", 1).await;
    watch
        .until(&mut updates, |top| top[0].score == 51, &mut grpc)
        .await;
    assert!(watch.deltas > deltas, "a one-player change came as a delta");
    // Ties: fa and then ga reach 20, which bo reached first: bo, fa, ga in that order.
    append(&writer, "fa", 20).await;
    append(&writer, "ga", 20).await;
    let top = watch
        .until(&mut updates, |top| top.len() == 7, &mut grpc)
        .await;
    let twenties: Vec<&str> = top
        .iter()
        .filter(|e| e.score == 20)
        .map(|e| e.player_id.as_str())
        .collect();
    assert_eq!(
        twenties,
        ["bo", "fa", "ga"],
        "equal scores rank by who got there first"
    );
    let player = grpc
        .get_player(GetPlayerRequest {
            tier: 2,
            player_id: "cy".into(),
            around: 1,
        })
        .await
        .expect("GetPlayer")
        .into_inner();
    let me = player.player.expect("cy has a score");
    assert_eq!((me.rank, me.score), (3, 30));
    let neighbours: Vec<(u64, String)> = player
        .neighbours
        .into_iter()
        .map(|e| (e.rank, e.player_id))
        .collect();
    assert_eq!(neighbours, vec![(2, "di".to_owned()), (4, "bo".to_owned())]);
    writer.shutdown().await.expect("shutdown");
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_within_its_epoch_and_starts_over_from_another() {
    use leaderboard_proto::v1::watch_response::Update;
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    let writer = crate::support::writer(&redis, dir.path(), 11).await;
    let mut grpc = client(&router).await;
    for (i, player) in ["ada", "bo", "cy", "di", "ed"].iter().enumerate() {
        append(&writer, player, 10 * (i as i64 + 1)).await;
    }
    let first = crate::support::eventually("five players on the board", || {
        let mut grpc = grpc.clone();
        async move {
            let mut stream = grpc
                .watch(WatchRequest {
                    tier: 2,
                    ..WatchRequest::default()
                })
                .await
                .ok()?
                .into_inner();
            let update = stream.message().await.ok()??;
            match &update.update {
                Some(Update::Snapshot(s)) if s.entries.len() == 5 => Some(update),
                _ => None,
            }
        }
    })
    .await;
    assert!(!first.epoch.is_empty());
    // Resumed at the latest version of this epoch: the first message is that version's
    // freshness (an empty delta from it to itself), then the next change, as a delta from it.
    let mut resumed = grpc
        .watch(WatchRequest {
            tier: 2,
            version: first.version,
            epoch: first.epoch.clone(),
        })
        .await
        .expect("Watch")
        .into_inner();
    // Another epoch (another router, or this one before a restart): a snapshot first.
    let mut elsewhere = grpc
        .watch(WatchRequest {
            tier: 2,
            version: first.version,
            epoch: "another-router".into(),
        })
        .await
        .expect("Watch")
        .into_inner();
    let snapshot = elsewhere.message().await.expect("a message").expect("open");
    assert!(
        matches!(snapshot.update, Some(Update::Snapshot(_))),
        "{snapshot:?}"
    );
    let fresh = resumed.message().await.expect("a message").expect("open");
    let Some(Update::Delta(empty)) = &fresh.update else {
        panic!("expected the freshness of the resumed version, got {fresh:?}");
    };
    assert_eq!((empty.base, fresh.version), (first.version, first.version));
    assert!(empty.upserts.is_empty() && empty.removals.is_empty() && !fresh.stale);
    // One score changes, no rank: a delta is smaller than the top.
    append(&writer, "ada", 1).await;
    let next = resumed.message().await.expect("a message").expect("open");
    let Some(Update::Delta(delta)) = &next.update else {
        panic!("expected a delta from the resumed version, got {next:?}");
    };
    assert_eq!(delta.base, first.version);
    assert_eq!(next.epoch, first.epoch);
    writer.shutdown().await.expect("shutdown");
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

/// Display names ride on events: `GetTop`, `GetPlayer` and `Watch` entries carry the latest
/// one applied; an event without a name keeps it; a player never named has none; a name the
/// writer refuses never gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn display_names_carried_by_events_show_in_every_entry() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    let writer = crate::support::writer(&redis, dir.path(), 3).await;
    let named = |player: &str, points: i64, name: &str| {
        let mut event = score(2, player, points);
        event.display_name = name.to_owned();
        event
    };
    let mut grpc = client(&router).await;
    let top = |grpc: &LeaderboardServiceClient<Channel>| {
        let mut grpc = grpc.clone();
        async move {
            grpc.get_top(GetTopRequest {
                tier: 2,
                offset: 0,
                limit: 10,
            })
            .await
            .ok()
            .map(|reply| {
                reply
                    .into_inner()
                    .entries
                    .into_iter()
                    .map(|e| (e.player_id, e.score, e.display_name))
                    .collect::<Vec<_>>()
            })
        }
    };
    let expect = |rows: &[(&str, i64, Option<&str>)]| -> Vec<(String, i64, Option<String>)> {
        rows.iter()
            .map(|(p, s, n)| ((*p).to_owned(), *s, n.map(str::to_owned)))
            .collect()
    };

    writer
        .append(named("ada", 10, "Ada"))
        .await
        .expect("append");
    writer.append(score(2, "bo", 5)).await.expect("append");
    let first = expect(&[("ada", 10, Some("Ada")), ("bo", 5, None)]);
    eventually("ada's name in GetTop", || async {
        (top(&grpc).await? == first).then_some(())
    })
    .await;
    // A new name with no points moves nothing but the name.
    writer
        .append(named("ada", 0, "Ada L. ✓"))
        .await
        .expect("append");
    let renamed = expect(&[("ada", 10, Some("Ada L. ✓")), ("bo", 5, None)]);
    eventually("ada's new name", || async {
        (top(&grpc).await? == renamed).then_some(())
    })
    .await;
    // An event without a name keeps the last one.
    writer.append(score(2, "ada", 1)).await.expect("append");
    let kept = expect(&[("ada", 11, Some("Ada L. ✓")), ("bo", 5, None)]);
    eventually("ada keeps her name", || async {
        (top(&grpc).await? == kept).then_some(())
    })
    .await;
    let player = grpc
        .get_player(GetPlayerRequest {
            tier: 2,
            player_id: "bo".into(),
            around: 1,
        })
        .await
        .expect("GetPlayer")
        .into_inner();
    assert_eq!(player.player.expect("bo").display_name, None);
    assert_eq!(
        player.neighbours[0].display_name.as_deref(),
        Some("Ada L. ✓")
    );
    let mut updates = grpc
        .watch(WatchRequest {
            tier: 2,
            ..WatchRequest::default()
        })
        .await
        .expect("Watch")
        .into_inner();
    let first_update = tokio::time::timeout(crate::support::DEADLINE, updates.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("open");
    let Some(watch_response::Update::Snapshot(snapshot)) = first_update.update else {
        panic!("a snapshot first");
    };
    assert_eq!(
        snapshot.entries[0].display_name.as_deref(),
        Some("Ada L. ✓")
    );

    // Names the writer refuses: too long, unprintable, on a wave reset.
    for bad in ["x".repeat(33), " Ada".to_owned(), "A\u{0}da".to_owned()] {
        assert!(
            writer.append(named("cy", 1, &bad)).await.is_err(),
            "{bad:?} accepted"
        );
    }
    writer.shutdown().await.expect("shutdown");
    assert!(router.shutdown(Duration::from_secs(10)).await);
}
