//! The dedup saga: one confirmed award per chest, duplicates' points taken back exactly once and
//! their shards told once, through Redis restarts, router crashes inside the saga and skewed
//! shard clocks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hunt_testkit::RedisServer;
use leaderboard_proto::functions::{
    AwardRecord, AwardState, ChestClaim, ClaimChest, ClaimClue, ClueClaim, Gate, OpenClue,
};
use leaderboard_proto::keys;
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::v1::{
    ClueSolved, GetAwardRequest, GetChestRequest, HuntEvent, TreasureAwarded,
};
use rand::{Rng, SeedableRng};
use redis::aio::MultiplexedConnection;
use shard_writer::ShardWriter;
use shard_writer::clock::Clock;
use tier_router::RouterConfig;
use tonic::Code;

use crate::support::{
    RouterProcess, Totals, assert_exactly_once, client, eventually, http_get, router_with, score,
    writer_with,
};

/// A `TreasureAwarded` of `chest` to `player` in `tier`, with the award id given.
fn awarded(tier: u32, chest: &str, award_id: &str, player: &str, points: i64) -> HuntEvent {
    HuntEvent {
        tier,
        kind: Some(Kind::TreasureAwarded(TreasureAwarded {
            chest_key: chest.to_owned(),
            award_id: award_id.to_owned(),
            player_id: player.to_owned(),
            points,
        })),
        ..HuntEvent::default()
    }
}

/// A `ClueSolved` of `clue` by `player` in `tier`, carrying the claim's `token`.
fn solved(tier: u32, clue: &str, player: &str, token: u64, points: i64) -> HuntEvent {
    HuntEvent {
        tier,
        kind: Some(Kind::ClueSolved(ClueSolved {
            clue_id: clue.to_owned(),
            player_id: player.to_owned(),
            token,
            points,
        })),
        ..HuntEvent::default()
    }
}

async fn connect(redis: &RedisServer) -> MultiplexedConnection {
    redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// A shard writer that reconnects and re-sends quickly, on `clock` when given.
async fn shard(
    redis: &RedisServer,
    dir: &std::path::Path,
    shard_id: u32,
    clock: Option<Arc<dyn Clock>>,
) -> ShardWriter {
    writer_with(redis, dir, shard_id, |mut config| {
        config.reconnect_backoff = Duration::from_millis(20);
        config.max_reconnect_backoff = Duration::from_millis(200);
        config.redelivery_timeout = Duration::from_millis(500);
        config.ack_poll_interval = Duration::from_millis(20);
        if let Some(clock) = clock {
            config.clock = clock;
        }
        config
    })
    .await
}

/// A router with a short sweep interval and short back-off.
async fn saga_router(redis: &RedisServer) -> tier_router::AppHandle {
    router_with(redis, |config: &mut RouterConfig| {
        config.saga_interval = Duration::from_millis(200);
        config.max_backoff = Duration::from_millis(200);
    })
    .await
}

/// Appends `events` through `writer` and waits until they are all in their tier's stream, so
/// that what is appended next (by any shard) lands behind them.
async fn append_in_order(redis: &RedisServer, writer: &ShardWriter, events: Vec<HuntEvent>) {
    let mut conn = connect(redis).await;
    let mut expected: BTreeMap<u32, u64> = BTreeMap::new();
    for tier in events.iter().map(|event| event.tier) {
        if let std::collections::btree_map::Entry::Vacant(slot) = expected.entry(tier) {
            slot.insert(stream_len(&mut conn, tier).await);
        }
    }
    for event in events {
        *expected.entry(event.tier).or_default() += 1;
        writer.append(event).await.expect("append");
    }
    for (tier, length) in expected {
        eventually("the appended events reach their stream", || {
            let mut conn = conn.clone();
            async move { (stream_len(&mut conn, tier).await >= length).then_some(()) }
        })
        .await;
    }
}

async fn stream_len(conn: &mut MultiplexedConnection, tier: u32) -> u64 {
    redis::cmd("XLEN")
        .arg(keys::tier_stream(tier))
        .query_async(conn)
        .await
        .expect("XLEN")
}

/// A compensation as a shard's inbox holds it: (award id, chest, player, points, tier).
type Compensation = (String, String, String, i64, u32);

/// What the saga decided, as Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Outcome {
    /// Award id → (tier, record).
    records: BTreeMap<String, (u32, AwardRecord)>,
    /// Chest → the award holding it.
    holders: BTreeMap<String, String>,
    /// Tier → player → score.
    boards: BTreeMap<u32, BTreeMap<String, i64>>,
    /// Shard → the compensations in its inbox, sorted.
    inboxes: BTreeMap<u32, Vec<Compensation>>,
}

impl Outcome {
    /// Reads the outcome of `tiers` and the inboxes of `shards`.
    async fn read(redis: &RedisServer, tiers: &[u32], shards: &[u32]) -> Self {
        let mut conn = connect(redis).await;
        let mut outcome = Self::default();
        for &tier in tiers {
            let records: BTreeMap<String, String> = redis::cmd("HGETALL")
                .arg(keys::tier_awards(tier))
                .query_async(&mut conn)
                .await
                .expect("HGETALL");
            for (award_id, record) in records {
                // The empty field holds the tier's award order counter.
                if award_id.is_empty() {
                    continue;
                }
                let record = AwardRecord::parse(&record).expect("a record hunt_apply wrote");
                outcome.records.insert(award_id, (tier, record));
            }
            let board = tier_router::cache::read_range(&mut conn, tier, 0, 10_000)
                .await
                .expect("board");
            outcome.boards.insert(
                tier,
                board.into_iter().map(|e| (e.player_id, e.score)).collect(),
            );
        }
        for (_, record) in outcome.records.values() {
            let holder: Option<String> = redis::cmd("GET")
                .arg(keys::chest(&record.chest_key))
                .query_async(&mut conn)
                .await
                .expect("GET");
            if let Some(holder) = holder {
                outcome.holders.insert(record.chest_key.clone(), holder);
            }
        }
        for &shard_id in shards {
            let entries: Vec<hunt_redis::stream::RawEntry> = redis::cmd("XRANGE")
                .arg(keys::shard_inbox(shard_id))
                .arg("-")
                .arg("+")
                .query_async(&mut conn)
                .await
                .expect("XRANGE");
            let mut inbox = Vec::new();
            for entry in entries {
                let (_, event) = hunt_redis::stream::decode(entry).expect("decodes");
                assert_eq!(
                    event.shard_id, shard_id,
                    "an inbox holds its own shard's events"
                );
                let Some(Kind::AwardRevoked(revoked)) = event.kind else {
                    panic!("not a compensation: {event:?}");
                };
                inbox.push((
                    revoked.award_id,
                    revoked.chest_key,
                    revoked.player_id,
                    revoked.points,
                    event.tier,
                ));
            }
            inbox.sort();
            outcome.inboxes.insert(shard_id, inbox);
        }
        outcome
    }

    /// Whether `awards` awards are recorded and every one of them has reached a final state.
    fn settled(&self, awards: usize) -> bool {
        self.records.len() == awards
            && self.records.values().all(|(_, record)| {
                matches!(
                    record.state,
                    AwardState::Confirmed | AwardState::Compensated | AwardState::Withdrawn
                )
            })
    }
}

/// Waits until `awards` awards of `tiers` are recorded and settled; returns the outcome.
async fn settled(redis: &RedisServer, tiers: &[u32], shards: &[u32], awards: usize) -> Outcome {
    eventually("every award settled", || async {
        let outcome = Outcome::read(redis, tiers, shards).await;
        outcome.settled(awards).then_some(outcome)
    })
    .await
}

/// One award of a test's plan.
#[derive(Debug, Clone)]
struct Planned {
    shard: u32,
    tier: u32,
    chest: String,
    award_id: String,
    player: String,
    points: i64,
}

impl Planned {
    fn event(&self) -> HuntEvent {
        awarded(
            self.tier,
            &self.chest,
            &self.award_id,
            &self.player,
            self.points,
        )
    }
}

/// Checks what G3 promises of `outcome` for the `planned` awards: one confirmed award per chest,
/// which holds the chest; every other one compensated, in its shard's inbox exactly once; the
/// boards hold `scores` plus the winners' points and nothing else.
fn assert_one_winner_per_chest(outcome: &Outcome, planned: &[Planned], scores: &Totals) {
    let mut expected_boards = scores.clone();
    let mut expected_inboxes: BTreeMap<u32, Vec<Compensation>> = BTreeMap::new();
    let mut chests: BTreeMap<&str, Vec<&Planned>> = BTreeMap::new();
    for award in planned {
        chests.entry(&award.chest).or_default().push(award);
    }
    for (chest, awards) in chests {
        let confirmed: Vec<&&Planned> = awards
            .iter()
            .filter(|award| outcome.records[&award.award_id].1.state == AwardState::Confirmed)
            .collect();
        assert_eq!(confirmed.len(), 1, "chest {chest}: {outcome:#?}");
        let winner = *confirmed[0];
        assert_eq!(outcome.holders.get(chest), Some(&winner.award_id));
        for award in &awards {
            let (tier, record) = &outcome.records[&award.award_id];
            assert_eq!(*tier, award.tier);
            assert_eq!(
                (
                    record.chest_key.as_str(),
                    record.player_id.as_str(),
                    record.points,
                    record.shard_id
                ),
                (
                    award.chest.as_str(),
                    award.player.as_str(),
                    award.points,
                    award.shard
                )
            );
            let board = expected_boards.entry(award.tier).or_default();
            let total = board.entry(award.player.clone()).or_default();
            if award.award_id == winner.award_id {
                *total += award.points;
            } else {
                assert_eq!(record.state, AwardState::Compensated, "{}", award.award_id);
                expected_inboxes.entry(award.shard).or_default().push((
                    award.award_id.clone(),
                    award.chest.clone(),
                    award.player.clone(),
                    award.points,
                    award.tier,
                ));
            }
        }
    }
    for (tier, board) in &outcome.boards {
        assert_eq!(
            board,
            &expected_boards.get(tier).cloned().unwrap_or_default(),
            "tier {tier}'s board"
        );
    }
    for (shard, inbox) in &outcome.inboxes {
        let mut expected = expected_inboxes.remove(shard).unwrap_or_default();
        expected.sort();
        assert_eq!(inbox, &expected, "shard {shard}'s inbox");
    }
    assert!(expected_inboxes.is_empty(), "{expected_inboxes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_awards_from_three_shards_settle_to_one_winner_per_chest() {
    let mut redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = saga_router(&redis).await;
    let shards = [1, 2, 3];
    let tiers = [1, 2, 3];
    let mut writers = Vec::new();
    for shard_id in shards {
        writers.push(shard(&redis, dir.path(), shard_id, None).await);
    }
    // Six chests awarded 2 to 4 times each, from random shards in random tiers; the last two
    // chests and a late duplicate of the first are awarded while Redis is down.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut planned = Vec::new();
    for chest in 0..6 {
        for copy in 0..rng.random_range(2..=4) {
            planned.push(Planned {
                shard: shards[rng.random_range(0..3)],
                tier: tiers[rng.random_range(0..3)],
                chest: format!("chest-{chest}"),
                award_id: format!("award-{chest}-{copy}"),
                player: format!("p{}", rng.random_range(0..5)),
                points: rng.random_range(10..100),
            });
        }
    }
    planned.push(Planned {
        shard: 3,
        tier: 2,
        chest: "chest-0".to_owned(),
        award_id: "award-0-late".to_owned(),
        player: "p9".to_owned(),
        points: 77,
    });
    let (late, early): (Vec<Planned>, Vec<Planned>) = planned
        .iter()
        .cloned()
        .partition(|award| award.chest.as_str() >= "chest-4" || award.award_id.ends_with("late"));
    let mut scores = Totals::new();
    for (k, award) in early.iter().enumerate() {
        let writer = &writers[award.shard as usize - 1];
        writer.append(award.event()).await.expect("append");
        // Points beside the awards, so the boards hold more than chests.
        let points = 1 + k as i64;
        writer
            .append(score(award.tier, &award.player, points))
            .await
            .expect("append");
        *scores
            .entry(award.tier)
            .or_default()
            .entry(award.player.clone())
            .or_default() += points;
    }
    settled(&redis, &tiers, &shards, early.len()).await;

    // Redis goes down with what it holds saved; the shards keep awarding into their files.
    let _: () = redis::cmd("SAVE")
        .query_async(&mut connect(&redis).await)
        .await
        .expect("SAVE");
    redis.stop();
    for award in &late {
        writers[award.shard as usize - 1]
            .append(award.event())
            .await
            .expect("append while Redis is down");
    }
    redis.start_again().expect("redis-server again");

    let outcome = settled(&redis, &tiers, &shards, planned.len()).await;
    assert_one_winner_per_chest(&outcome, &planned, &scores);
    let mut applied_scores = scores.clone();
    for award in &planned {
        if outcome.records[&award.award_id].1.state == AwardState::Confirmed {
            *applied_scores
                .entry(award.tier)
                .or_default()
                .entry(award.player.clone())
                .or_default() += award.points;
        } else {
            applied_scores
                .entry(award.tier)
                .or_default()
                .entry(award.player.clone())
                .or_default();
        }
    }
    assert_exactly_once(&redis, &writers, &applied_scores).await;

    // gRPC tells the same story, once its reads have reconnected to the restarted Redis.
    let mut grpc = client(&router).await;
    eventually("gRPC reads reach Redis again", || {
        let mut grpc = grpc.clone();
        async move {
            let request = GetChestRequest {
                chest_key: "chest-0".to_owned(),
            };
            grpc.get_chest(request).await.ok().map(drop)
        }
    })
    .await;
    for award in &planned {
        let (tier, record) = &outcome.records[&award.award_id];
        // A verdict is told once the holder's shard file records it: pending until then.
        let reply = eventually("the verdict is recorded and told", || {
            let mut grpc = grpc.clone();
            let award_id = award.award_id.clone();
            async move {
                let reply = grpc
                    .get_award(GetAwardRequest { tier: 0, award_id })
                    .await
                    .expect("GetAward")
                    .into_inner();
                let state = reply.award.as_ref()?.state();
                if state == leaderboard_proto::v1::AwardState::Pending {
                    assert!(reply.holder_award_id.is_empty(), "{reply:?}");
                    return None;
                }
                Some(reply)
            }
        })
        .await;
        let found = reply.award.expect("an award");
        assert_eq!(found.tier, *tier);
        let expected = match record.state {
            AwardState::Confirmed => leaderboard_proto::v1::AwardState::Confirmed,
            _ => leaderboard_proto::v1::AwardState::Compensated,
        };
        assert_eq!(found.state(), expected, "{}", award.award_id);
        assert_eq!(reply.holder_award_id, outcome.holders[&award.chest]);
        let chest = grpc
            .get_chest(GetChestRequest {
                chest_key: award.chest.clone(),
            })
            .await
            .expect("GetChest")
            .into_inner();
        assert_eq!(chest.holder_award_id, outcome.holders[&award.chest]);
        assert!(chest.ttl_seconds > 0);
    }
    for writer in writers {
        writer.shutdown().await.expect("shutdown");
    }
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_award_whose_shard_claimed_the_chest_first_wins_over_blind_duplicates() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = saga_router(&redis).await;
    let mut conn = connect(&redis).await;
    let mut writers = Vec::new();
    for shard_id in [1, 2, 3] {
        writers.push(shard(&redis, dir.path(), shard_id, None).await);
    }
    // Shard 2 claims the chest on the fast path, then takes its time to award it.
    assert_eq!(
        hunt_redis::call(&mut conn, &ClaimChest::new("gate", "fast", Gate::Off))
            .await
            .expect("claim"),
        ChestClaim::Won
    );
    let blind = vec![
        Planned {
            shard: 1,
            tier: 2,
            chest: "gate".into(),
            award_id: "blind-1".into(),
            player: "p1".into(),
            points: 40,
        },
        Planned {
            shard: 3,
            tier: 2,
            chest: "gate".into(),
            award_id: "blind-3".into(),
            player: "p3".into(),
            points: 40,
        },
    ];
    for award in &blind {
        append_in_order(
            &redis,
            &writers[award.shard as usize - 1],
            vec![award.event()],
        )
        .await;
    }
    // The blind duplicates are settled, and lost, before the winner is even applied.
    settled(&redis, &[2], &[1, 2, 3], 2).await;
    let fast = Planned {
        shard: 2,
        tier: 2,
        chest: "gate".into(),
        award_id: "fast".into(),
        player: "p2".into(),
        points: 40,
    };
    append_in_order(&redis, &writers[1], vec![fast.event()]).await;
    let outcome = settled(&redis, &[2], &[1, 2, 3], 3).await;
    let mut planned = blind;
    planned.push(fast);
    assert_one_winner_per_chest(&outcome, &planned, &Totals::new());
    assert_eq!(outcome.holders["gate"], "fast");
    for writer in writers {
        writer.shutdown().await.expect("shutdown");
    }
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn award_and_chest_lookups_refuse_bad_ids_and_unknown_ones() {
    let redis = RedisServer::start().expect("redis-server");
    let router = saga_router(&redis).await;
    let mut grpc = client(&router).await;
    let award = |tier: u32, award_id: &str| GetAwardRequest {
        tier,
        award_id: award_id.to_owned(),
    };
    for bad in ["", "a{b}", "tab\there", &"x".repeat(65)] {
        let refused = grpc.get_award(award(0, bad)).await.expect_err(bad);
        assert_eq!(refused.code(), Code::InvalidArgument, "award {bad:?}");
        let refused = grpc
            .get_chest(GetChestRequest {
                chest_key: bad.to_owned(),
            })
            .await
            .expect_err(bad);
        assert_eq!(refused.code(), Code::InvalidArgument, "chest {bad:?}");
    }
    for (tier, award_id) in [(99, "known-shape"), (0, "nobody"), (1, "nobody")] {
        let refused = grpc
            .get_award(award(tier, award_id))
            .await
            .expect_err(award_id);
        assert_eq!(
            refused.code(),
            Code::NotFound,
            "tier {tier} award {award_id}"
        );
    }
    let refused = grpc
        .get_chest(GetChestRequest {
            chest_key: "unclaimed".to_owned(),
        })
        .await
        .expect_err("unclaimed");
    assert_eq!(refused.code(), Code::NotFound);
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

/// The value of an unlabelled metric in a Prometheus text rendering.
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The awards of the crash tests, in the order they are appended, one batch per shard at a
/// time: in tier 1, the first award of a chest to reach the stream wins it, except `crypt`,
/// which shard 1 claims on the fast path for `a4` first.
fn crash_plan() -> Vec<Vec<Planned>> {
    let award = |shard: u32, chest: &str, award_id: &str, player: &str, points: i64| Planned {
        shard,
        tier: 1,
        chest: chest.into(),
        award_id: award_id.into(),
        player: player.into(),
        points,
    };
    vec![
        vec![
            award(1, "well", "a1", "p1", 30),
            award(1, "tower", "a2", "p1", 20),
            award(1, "cave", "a3", "p2", 50),
        ],
        vec![
            award(2, "well", "b1", "p3", 30),
            award(2, "tower", "b2", "p4", 20),
            award(2, "crypt", "b3", "p4", 70),
            award(2, "cave", "b4", "p5", 50),
            award(2, "mill", "b5", "p5", 15),
        ],
        vec![
            award(1, "crypt", "a4", "p2", 70),
            award(1, "mill", "a5", "p1", 15),
        ],
    ]
}

/// Runs the crash plan against a fresh Redis with a router process: when `failpoint` is given,
/// the first router aborts there and a second one, without it, finishes. Returns the outcome
/// and the finishing router's `/metrics`.
async fn crash_run(failpoint: Option<&str>) -> (Outcome, String) {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = connect(&redis).await;
    let mut writers = Vec::new();
    for shard_id in [1, 2] {
        writers.push(shard(&redis, dir.path(), shard_id, None).await);
    }
    assert_eq!(
        hunt_redis::call(&mut conn, &ClaimChest::new("crypt", "a4", Gate::Off))
            .await
            .expect("claim"),
        ChestClaim::Won
    );
    let plan = crash_plan();
    for batch in &plan {
        let writer = &writers[batch[0].shard as usize - 1];
        append_in_order(&redis, writer, batch.iter().map(Planned::event).collect()).await;
    }
    let planned: Vec<Planned> = plan.into_iter().flatten().collect();
    let fast = ["--saga-interval-ms", "200"];
    if let Some(point) = failpoint {
        let mut args = fast.to_vec();
        args.extend(["--failpoint", point]);
        let crashing = RouterProcess::start_with(&redis, dir.path(), "crashing", &args);
        let status = crashing.exited().await;
        assert!(!status.success(), "the failpoint aborts: {status}");
        // It stopped where it was told to.
        let midway = Outcome::read(&redis, &[1], &[1, 2]).await;
        let states: Vec<AwardState> = midway.records.values().map(|(_, r)| r.state).collect();
        assert_eq!(states.len(), planned.len());
        match point {
            "saga-after-claim" => {
                assert!(states.iter().all(|state| *state == AwardState::Pending));
                assert_eq!(midway.holders.len(), 5, "every chest claimed");
            }
            _ => {
                assert!(states.contains(&AwardState::Revoked), "{states:?}");
                assert!(!states.contains(&AwardState::Compensated), "{states:?}");
                assert!(midway.inboxes.values().all(Vec::is_empty));
            }
        }
    }
    let finishing = RouterProcess::start_with(&redis, dir.path(), "finishing", &fast);
    let outcome = settled(&redis, &[1], &[1, 2], planned.len()).await;
    assert_one_winner_per_chest(&outcome, &planned, &Totals::new());
    let (status, body) = http_get(finishing.http_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(finishing.terminate().success());
    for writer in writers {
        writer.shutdown().await.expect("shutdown");
    }
    (outcome, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_inside_the_saga_resumes_to_the_outcome_of_an_uninterrupted_run() {
    let (uninterrupted, metrics) = crash_run(None).await;
    let holders: Vec<(&str, &str)> = uninterrupted
        .holders
        .iter()
        .map(|(chest, award)| (chest.as_str(), award.as_str()))
        .collect();
    assert_eq!(
        holders,
        [
            ("cave", "a3"),
            ("crypt", "a4"),
            ("mill", "b5"),
            ("tower", "a2"),
            ("well", "a1")
        ]
    );
    // The uninterrupted router counted every award once.
    for (name, value) in [
        (tier_router::metrics::AWARDS_RECORDED, 10.0),
        (tier_router::metrics::AWARDS_CONFIRMED, 5.0),
        (tier_router::metrics::AWARDS_REVOKED, 5.0),
        (tier_router::metrics::COMPENSATIONS, 5.0),
    ] {
        assert_eq!(metric(&metrics, name), Some(value), "{name} in:\n{metrics}");
    }
    for point in ["saga-after-claim", "saga-after-settle"] {
        let (resumed, _) = crash_run(Some(point)).await;
        assert_eq!(resumed, uninterrupted, "after a crash at {point}");
    }
}

/// The system clock shifted by a fixed offset: a shard whose clock is off.
#[derive(Debug)]
struct SkewedClock {
    offset_ms: i64,
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        i64::try_from(now).expect("fits") + self.offset_ms
    }
}

/// A hunt in tier 3 on three shards whose clocks are `offsets` away from the real one: clue
/// claims, chest awards (a blind race and a fast-path claim) and a stale clue solve.
async fn skewed_run(offsets: [i64; 3]) -> Outcome {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = saga_router(&redis).await;
    let mut conn = connect(&redis).await;
    let mut writers = Vec::new();
    let mut clocks = Vec::new();
    for (shard_id, offset_ms) in (1..).zip(offsets) {
        let clock: Arc<dyn Clock> = Arc::new(SkewedClock { offset_ms });
        clocks.push(Arc::clone(&clock));
        writers.push(shard(&redis, dir.path(), shard_id, Some(clock)).await);
    }
    let tier = 3;
    let claim = |conn: &mut MultiplexedConnection, player: &'static str, clock: usize| {
        let solve_ms = clocks[clock].now_ms();
        let mut conn = conn.clone();
        async move {
            hunt_redis::call(
                &mut conn,
                &ClaimClue::new("riddle", player, solve_ms, Gate::Off),
            )
            .await
            .expect("claim")
        }
    };

    // Wave 1: shard 1's player solves the riddle first; shard 2's finds it taken.
    assert!(
        hunt_redis::call(&mut conn, &OpenClue::new("riddle", 1, Gate::Off))
            .await
            .map(|opened| opened.opened)
            .expect("open")
    );
    let ClueClaim::Won { token: first, .. } = claim(&mut conn, "p1", 0).await else {
        panic!("the first solver wins");
    };
    assert!(matches!(
        claim(&mut conn, "p2", 1).await,
        ClueClaim::Held { .. }
    ));
    append_in_order(
        &redis,
        &writers[0],
        vec![solved(tier, "riddle", "p1", first, 40)],
    )
    .await;

    // The vault is awarded blind by shards 2, 3 and 1, in that order: the first applied wins.
    // The crypt is claimed by shard 3 before either shard awards it.
    assert_eq!(
        hunt_redis::call(&mut conn, &ClaimChest::new("crypt", "k-3", Gate::Off))
            .await
            .expect("claim"),
        ChestClaim::Won
    );
    append_in_order(
        &redis,
        &writers[1],
        vec![awarded(tier, "vault", "v-2", "p2", 100)],
    )
    .await;
    append_in_order(
        &redis,
        &writers[2],
        vec![awarded(tier, "vault", "v-3", "p3", 100)],
    )
    .await;
    append_in_order(
        &redis,
        &writers[0],
        vec![
            awarded(tier, "vault", "v-1", "p1", 100),
            awarded(tier, "crypt", "k-1", "p1", 60),
        ],
    )
    .await;
    append_in_order(
        &redis,
        &writers[2],
        vec![awarded(tier, "crypt", "k-3", "p3", 60)],
    )
    .await;

    // Wave 2: shard 3's player solves the reopened riddle; shard 2 then writes a solve under the
    // first wave's token, which scores nothing.
    assert!(
        hunt_redis::call(&mut conn, &OpenClue::new("riddle", 2, Gate::Off))
            .await
            .map(|opened| opened.opened)
            .expect("open")
    );
    let ClueClaim::Won { token: second, .. } = claim(&mut conn, "p3", 2).await else {
        panic!("the riddle is open again");
    };
    assert!(second > first);
    append_in_order(
        &redis,
        &writers[2],
        vec![solved(tier, "riddle", "p3", second, 40)],
    )
    .await;
    append_in_order(
        &redis,
        &writers[1],
        vec![solved(tier, "riddle", "p2", first, 40)],
    )
    .await;

    let outcome = settled(&redis, &[tier], &[1, 2, 3], 5).await;
    let expected: Totals = [(
        tier,
        [("p1", 40), ("p2", 100), ("p3", 100)]
            .into_iter()
            .map(|(player, points)| (player.to_owned(), points))
            .collect(),
    )]
    .into_iter()
    .collect();
    assert_exactly_once(&redis, &writers, &expected).await;
    for writer in writers {
        writer.shutdown().await.expect("shutdown");
    }
    assert!(router.shutdown(Duration::from_secs(10)).await);
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_shard_clocks_change_no_winner_and_no_score() {
    let straight = skewed_run([0, 0, 0]).await;
    assert_eq!(straight.holders["vault"], "v-2");
    assert_eq!(straight.holders["crypt"], "k-3");
    let skewed = skewed_run([0, 137, 10_000]).await;
    assert_eq!(skewed, straight);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_never_reads_its_inbox_delays_only_its_own_compensations() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router_with(&redis, |config: &mut RouterConfig| {
        config.saga_interval = Duration::from_millis(200);
        config.max_backoff = Duration::from_millis(200);
        config.saga_batch = 2;
        config.inbox_cap = 1;
    })
    .await;
    let mut conn = connect(&redis).await;
    let loser = shard(&redis, dir.path(), 1, None).await;
    let other = shard(&redis, dir.path(), 2, None).await;
    // Shard 1 loses three chests, claimed first by awards it never hears of; its inbox takes
    // one compensation and nobody reads it.
    let mut lost = Vec::new();
    for n in 1..=3 {
        let chest = format!("lost-{n}");
        hunt_redis::call(
            &mut conn,
            &ClaimChest::new(&chest, &format!("elsewhere-{n}"), Gate::Off),
        )
        .await
        .expect("claim");
        lost.push(awarded(1, &chest, &format!("lost-award-{n}"), "p1", 10));
    }
    append_in_order(&redis, &loser, lost).await;
    eventually("one compensation fills shard 1's inbox", || {
        let mut conn = conn.clone();
        async move {
            let revoked: u64 = redis::cmd("ZCARD")
                .arg(keys::tier_awards_revoked(1))
                .query_async(&mut conn)
                .await
                .expect("ZCARD");
            let inbox: u64 = redis::cmd("XLEN")
                .arg(keys::shard_inbox(1))
                .query_async(&mut conn)
                .await
                .expect("XLEN");
            (revoked == 2 && inbox == 1).then_some(())
        }
    })
    .await;
    // More awards than one saga step takes, behind the stuck ones: they still settle.
    let won: Vec<HuntEvent> = (1..=3)
        .map(|n| awarded(1, &format!("won-{n}"), &format!("won-award-{n}"), "p2", 25))
        .collect();
    append_in_order(&redis, &other, won).await;
    let outcome = eventually("the later awards are confirmed", || async {
        let outcome = Outcome::read(&redis, &[1], &[1, 2]).await;
        (1..=3)
            .all(|n| {
                outcome
                    .records
                    .get(&format!("won-award-{n}"))
                    .is_some_and(|(_, record)| record.state == AwardState::Confirmed)
            })
            .then_some(outcome)
    })
    .await;
    let revoked = outcome
        .records
        .values()
        .filter(|(_, record)| record.state == AwardState::Revoked)
        .count();
    assert_eq!(revoked, 2, "two compensations still wait for room");
    assert_eq!(
        outcome.boards[&1]["p1"], 0,
        "every lost chest's points are gone"
    );
    assert_eq!(outcome.boards[&1]["p2"], 75);

    // The shard reads (acknowledges) its inbox: the rest arrive, one at a time.
    for _ in 0..3 {
        let entries: Vec<hunt_redis::stream::RawEntry> = eventually("an entry", || {
            let mut conn = conn.clone();
            async move {
                let entries: Vec<hunt_redis::stream::RawEntry> = redis::cmd("XRANGE")
                    .arg(keys::shard_inbox(1))
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .expect("XRANGE");
                (!entries.is_empty()).then_some(entries)
            }
        })
        .await;
        let _: u64 = redis::cmd("XDEL")
            .arg(keys::shard_inbox(1))
            .arg(&entries[0].0)
            .query_async(&mut conn)
            .await
            .expect("XDEL");
    }
    settled(&redis, &[1], &[1, 2], 6).await;
    for writer in [loser, other] {
        writer.shutdown().await.expect("shutdown");
    }
    assert!(router.shutdown(Duration::from_secs(10)).await);
}
