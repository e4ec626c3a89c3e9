//! Clue and chest claims, wave openings and the compensation inbox, against a private Redis.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hunt_testkit::RedisServer;
use hunt_testkit::recorded;
use leaderboard_proto::functions::{Compensate, Function, Version};
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::v1::{AwardRevoked, HuntEvent};
use leaderboard_proto::validate::ValidationError;
use leaderboard_proto::{keys, rewards};
use prost::Message;
use redis::AsyncCommands;
use shard_writer::metrics as m;
use shard_writer::{
    ChestClaim, ClaimError, ClueClaim, Compensation, Compensations, ShardWriter, WriterConfig,
};

use crate::support::{config, eventually, open, redis_conn};

/// The first chest type of `tier` in the reward table.
fn chest_type(tier: u32) -> &'static str {
    rewards::tier(tier).expect("tier in the table").chest_types[0].name
}

fn clues(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_winner_among_a_thousand_concurrent_claimants() {
    const WRITERS: u32 = 8;
    const PER_WRITER: usize = 125;
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut writers = Vec::new();
    for shard in 0..WRITERS {
        writers.push(open(&config(dir.path(), 100 + shard, &redis)).await);
    }
    writers[0]
        .open_wave(1, 1, &clues(&["riddle-1"]))
        .await
        .expect("open wave");

    // Every writer has its own claims connection: 8 connections, 125 claimants on each.
    let mut tasks = Vec::new();
    for (w, writer) in writers.iter().enumerate() {
        for i in 0..PER_WRITER {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                let player_id = format!("hunter-{w}-{i}");
                let claim = writer.claim_clue("riddle-1", &player_id).await;
                (player_id, claim)
            }));
        }
    }
    let mut won = Vec::new();
    let mut held = Vec::new();
    for task in tasks {
        let (player_id, claim) = task.await.expect("claimant task");
        match claim.expect("claim answered") {
            ClueClaim::Won { token, wave } => won.push((player_id, token, wave)),
            ClueClaim::Held {
                holder_player_id: holder,
                token,
                wave,
            } => held.push((holder, token, wave)),
            other => panic!("unexpected claim {other:?}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one winner: {won:?}");
    assert_eq!(held.len(), WRITERS as usize * PER_WRITER - 1);
    let (winner, token, wave) = won.pop().expect("a winner");
    assert_eq!((token, wave), (1, 1));
    for (holder, held_token, held_wave) in held {
        assert_eq!(
            (holder.as_str(), held_token, held_wave),
            (winner.as_str(), token, wave)
        );
    }
    for writer in writers {
        writer.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_grow_across_waves_and_stale_writes_are_refused() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = open(&config(dir.path(), 111, &redis)).await;
    let wave_clues = clues(&["gate-a", "gate-b"]);
    let mut previous: Option<(String, u64)> = None;
    for wave in 1..=4_u32 {
        let appended = writer
            .open_wave(2, wave, &wave_clues)
            .await
            .expect("open wave");
        assert_eq!(appended.tier, 2);
        let player_id = format!("hunter-{wave}");
        let ClueClaim::Won { token, wave: open } = writer
            .claim_clue("gate-a", &player_id)
            .await
            .expect("claim")
        else {
            panic!("the first claim of wave {wave} wins");
        };
        assert_eq!(open, wave);
        if let Some((earlier, earlier_token)) = &previous {
            assert!(
                token > *earlier_token,
                "wave {wave}: {token} after {earlier_token}"
            );
            assert!(matches!(
                writer.check_clue("gate-a", earlier, *earlier_token).await,
                Err(ClaimError::StaleToken)
            ));
        }
        // A retry by the holder wins again, with the same token; anyone else is told who holds it.
        assert_eq!(
            writer
                .claim_clue("gate-a", &player_id)
                .await
                .expect("retry"),
            ClueClaim::Won { token, wave: open }
        );
        assert_eq!(
            writer.claim_clue("gate-a", "rival").await.expect("rival"),
            ClueClaim::Held {
                holder_player_id: player_id.clone(),
                token,
                wave: open
            }
        );
        writer
            .check_clue("gate-a", &player_id, token)
            .await
            .expect("the holder's own current token");
        assert!(matches!(
            writer.check_clue("gate-a", &player_id, token + 1).await,
            Err(ClaimError::FutureToken)
        ));
        assert!(matches!(
            writer.check_clue("gate-a", "rival", token).await,
            Err(ClaimError::NotHolder)
        ));
        previous = Some((player_id, token));
    }

    // Reopening an older wave changes nothing: the wave-4 holder keeps the clue and its token.
    let (holder, token) = previous.expect("four waves");
    writer
        .open_wave(2, 2, &wave_clues)
        .await
        .expect("reopen wave 2");
    assert_eq!(
        writer.claim_clue("gate-a", "late").await.expect("claim"),
        ClueClaim::Held {
            holder_player_id: holder.clone(),
            token,
            wave: 4
        }
    );
    writer
        .check_clue("gate-a", &holder, token)
        .await
        .expect("still current");
    // Every opening was recorded: four waves and the late reopening.
    assert_eq!(writer.committed_tier_seq(2), 5);
    writer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_claims_get_typed_errors_and_nothing_is_appended() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = open(&config(dir.path(), 121, &redis)).await;
    let chest = chest_type(1);
    let award = writer.award_id();

    assert!(matches!(
        writer.claim_clue("never-opened", "ada").await,
        Err(ClaimError::UnknownClue)
    ));
    assert!(matches!(
        writer.check_clue("never-opened", "ada", 1).await,
        Err(ClaimError::UnknownClue)
    ));
    match writer
        .claim_chest(1, "no-such-chest", "north-gate", &award)
        .await
    {
        Err(ClaimError::UnknownChest { tier, chest_type }) => {
            assert_eq!((tier, chest_type.as_str()), (1, "no-such-chest"));
        }
        other => panic!("unexpected {other:?}"),
    }

    let invalid = |result: Result<(), ClaimError>| match result {
        Err(ClaimError::Invalid(reason)) => reason,
        other => panic!("expected Invalid, got {other:?}"),
    };
    let unit = |r: Result<ClueClaim, ClaimError>| r.map(|_| ());
    let chest_unit = |r: Result<ChestClaim, ClaimError>| r.map(|_| ());
    assert_eq!(
        invalid(unit(writer.claim_clue("riddle", "").await)),
        ValidationError::EmptyId { field: "player_id" }
    );
    assert_eq!(
        invalid(unit(writer.claim_clue("{riddle}", "ada").await)),
        ValidationError::IdBrace { field: "clue_id" }
    );
    assert_eq!(
        invalid(unit(writer.claim_clue("rid\ndle", "ada").await)),
        ValidationError::IdControlChar { field: "clue_id" }
    );
    assert_eq!(
        invalid(writer.check_clue("riddle", "ada", 0).await),
        ValidationError::MissingToken
    );
    assert_eq!(
        invalid(chest_unit(
            writer.claim_chest(99, chest, "north-gate", &award).await
        )),
        ValidationError::UnknownTier(99)
    );
    assert_eq!(
        invalid(chest_unit(
            writer.claim_chest(1, chest, "north}gate", &award).await
        )),
        ValidationError::IdBrace { field: "chest_key" }
    );
    assert_eq!(
        invalid(chest_unit(
            writer.claim_chest(1, chest, "north-gate", "a\u{7}").await
        )),
        ValidationError::IdControlChar { field: "award_id" }
    );
    let wave_unit = |r: Result<shard_writer::Appended, ClaimError>| r.map(|_| ());
    assert_eq!(
        invalid(wave_unit(writer.open_wave(1, 0, &clues(&["riddle"])).await)),
        ValidationError::ZeroWave
    );
    assert_eq!(
        invalid(wave_unit(
            writer.open_wave(99, 1, &clues(&["riddle"])).await
        )),
        ValidationError::UnknownTier(99)
    );
    assert_eq!(
        invalid(wave_unit(
            writer.open_wave(1, 1, &clues(&["riddle", "{x}"])).await
        )),
        ValidationError::IdBrace { field: "clue_ids" }
    );
    // The rejected wave opened none of its clues and recorded nothing.
    assert!(matches!(
        writer.claim_clue("riddle", "ada").await,
        Err(ClaimError::UnknownClue)
    ));
    for tier in rewards::tier_ids() {
        assert_eq!(writer.committed_tier_seq(tier), 0, "tier {tier}");
    }
    writer.shutdown().await.expect("shutdown");

    // Without Redis there is nothing to claim against.
    let local = ShardWriter::open(WriterConfig::new(dir.path().join("local.sqlite"), 122))
        .await
        .expect("open without redis");
    assert!(matches!(
        local.claim_clue("riddle", "ada").await,
        Err(ClaimError::NoRedis)
    ));
    assert!(matches!(
        local.open_wave(1, 1, &clues(&["riddle"])).await,
        Err(ClaimError::NoRedis)
    ));
    assert!(matches!(
        local.compensations().next(Duration::ZERO).await,
        Err(ClaimError::NoRedis)
    ));
    assert_eq!(local.committed_tier_seq(1), 0);
    local.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chest_goes_to_its_first_award_and_award_ids_never_repeat() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 131, &redis);
    let writer = open(&config).await;
    let other = open(&crate::support::config(dir.path(), 132, &redis)).await;
    let chest = chest_type(3);

    let first = writer.award_id();
    let second = writer.award_id();
    assert_ne!(first, second);
    assert_eq!(first, format!("131.{}.a1", writer.epoch()));
    assert_eq!(
        writer
            .claim_chest(3, chest, "crypt", &first)
            .await
            .expect("claim"),
        ChestClaim::Won
    );
    assert_eq!(
        writer
            .claim_chest(3, chest, "crypt", &first)
            .await
            .expect("retry"),
        ChestClaim::Won
    );
    assert_eq!(
        writer
            .claim_chest(3, chest, "crypt", &second)
            .await
            .expect("second award"),
        ChestClaim::Held {
            holder_award_id: first.clone()
        }
    );
    assert_eq!(
        other
            .claim_chest(3, chest, "crypt", &other.award_id())
            .await
            .expect("another shard"),
        ChestClaim::Held {
            holder_award_id: first.clone()
        }
    );
    let ttl: i64 = redis_conn(&redis)
        .await
        .ttl(keys::chest("crypt"))
        .await
        .expect("TTL");
    assert!(ttl > 86_000 && ttl <= 86_400, "ttl {ttl}");

    // A new incarnation of the shard never hands out an id of an earlier one.
    writer.shutdown().await.expect("shutdown");
    let reopened = open(&config).await;
    let later = reopened.award_id();
    assert!(!later.is_empty() && later != first && later != second);
    reopened.shutdown().await.expect("shutdown");
    other.shutdown().await.expect("shutdown");
}

/// Puts an `AwardRevoked` of award `award_id` into shard `shard`'s inbox, as the saga does.
async fn compensate(redis: &RedisServer, shard: u32, award_id: &str, points: i64) {
    compensate_for(redis, shard, award_id, points, "").await;
}

/// As [`compensate`], naming the award that holds the chest (`chest-<award_id>`).
pub(crate) async fn compensate_for(
    redis: &RedisServer,
    shard: u32,
    award_id: &str,
    points: i64,
    holder_award_id: &str,
) {
    let event = HuntEvent {
        shard_id: shard,
        tier: 2,
        kind: Some(Kind::AwardRevoked(AwardRevoked {
            award_id: award_id.to_owned(),
            chest_key: format!("chest-{award_id}"),
            player_id: "ada".to_owned(),
            points,
            holder_award_id: holder_award_id.to_owned(),
        })),
        ..HuntEvent::default()
    };
    let compensate = Compensate::new(
        shard,
        award_id,
        &event.encode_to_vec(),
        1_700_000_000_000,
        86_400_000,
        100,
    );
    let added = hunt_redis::call(&mut redis_conn(redis).await, &compensate)
        .await
        .expect("hunt_compensate");
    assert!(added);
}

/// The inbox's length: its unacknowledged entries.
pub(crate) async fn inbox_len(redis: &RedisServer, shard: u32) -> u64 {
    redis_conn(redis)
        .await
        .xlen(keys::shard_inbox(shard))
        .await
        .expect("XLEN")
}

async fn next_award(reader: &mut Compensations) -> (Compensation, String) {
    let found = reader
        .next(Duration::from_secs(2))
        .await
        .expect("read the inbox")
        .expect("a compensation");
    let award = found.revoked.award_id.clone();
    (found, award)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensations_survive_writer_restarts_without_loss_or_repeats() {
    assert!(
        recorded::install(),
        "the recorder is this binary's only one"
    );
    const SHARD: u32 = 141;
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), SHARD, &redis);
    let writer = open(&config).await;
    for n in 1..=5 {
        compensate(&redis, SHARD, &format!("award-{n}"), 10 * n).await;
    }
    let mut acknowledged = BTreeSet::new();

    // First life: read three, acknowledge the first and the third.
    let mut reader = writer.compensations();
    let (c1, a1) = next_award(&mut reader).await;
    let (c2, a2) = next_award(&mut reader).await;
    let (c3, a3) = next_award(&mut reader).await;
    assert_eq!(
        [a1.as_str(), a2.as_str(), a3.as_str()],
        ["award-1", "award-2", "award-3"]
    );
    assert_eq!(c1.tier, 2);
    assert_eq!(c1.revoked.points, 10);
    assert_eq!(c2.revoked.chest_key, "chest-award-2");
    for done in [&c1, &c3] {
        reader.ack(done).await.expect("ack");
        acknowledged.insert(done.revoked.award_id.clone());
    }
    assert_eq!(inbox_len(&redis, SHARD).await, 3);
    drop(reader);
    writer.shutdown().await.expect("shutdown");

    // Second life: the unacknowledged one first, then the rest; leave the last unacknowledged.
    let writer = open(&config).await;
    let mut reader = writer.compensations();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (found, award) = next_award(&mut reader).await;
        assert!(!acknowledged.contains(&award), "{award} repeated");
        seen.push(award);
        if found.revoked.award_id != "award-5" {
            reader.ack(&found).await.expect("ack");
            acknowledged.insert(found.revoked.award_id.clone());
        }
    }
    assert_eq!(seen, ["award-2", "award-4", "award-5"]);
    assert_eq!(
        reader.next(Duration::from_millis(100)).await.expect("read"),
        None
    );
    drop(reader);
    writer.shutdown().await.expect("shutdown");

    // Third life: only award-5 is left; once it is acknowledged, the inbox is empty for good.
    let writer = open(&config).await;
    let mut reader = writer.compensations();
    let (last, award) = next_award(&mut reader).await;
    assert_eq!(award, "award-5");
    reader.ack(&last).await.expect("ack");
    reader.ack(&last).await.expect("a second ack is harmless");
    let wait = Duration::from_millis(300);
    let started = Instant::now();
    assert_eq!(reader.next(wait).await.expect("read"), None);
    assert!(
        started.elapsed() < wait + Duration::from_secs(1),
        "an empty inbox answered after {:?}",
        started.elapsed()
    );
    assert_eq!(inbox_len(&redis, SHARD).await, 0);

    // A malformed entry is named once, acknowledged away, and blocks nothing behind it.
    let junk_id: String = redis_conn(&redis)
        .await
        .xadd(
            keys::shard_inbox(SHARD),
            "*",
            &[("e", &[0xff_u8, 0xff][..])],
        )
        .await
        .expect("XADD");
    compensate(&redis, SHARD, "award-6", 60).await;
    match reader.next(Duration::from_secs(2)).await {
        Err(ClaimError::MalformedCompensation { id, .. }) => assert_eq!(id, junk_id),
        other => panic!("expected the malformed entry, got {other:?}"),
    }
    let (sixth, award) = next_award(&mut reader).await;
    assert_eq!(award, "award-6");
    reader.ack(&sixth).await.expect("ack");
    assert_eq!(inbox_len(&redis, SHARD).await, 0);
    assert!(recorded::total(m::COMPENSATIONS).counter >= 8);
    drop(reader);
    writer.shutdown().await.expect("shutdown");
}

/// Whether `result` is `Unreachable`, answered within `bound` of `started`.
fn unreachable_in_time<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, ClaimError>,
    started: Instant,
    bound: Duration,
) {
    let elapsed = started.elapsed();
    match result {
        Err(err @ ClaimError::Unreachable { .. }) => {
            assert!(elapsed < bound, "{what}: answered after {elapsed:?}");
            assert!(err.to_string().contains("127.0.0.1"), "{err}");
        }
        other => panic!("{what}: expected Unreachable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_or_stopped_redis_is_an_answer_and_claims_work_again_after() {
    assert!(
        recorded::install(),
        "the recorder is this binary's only one"
    );
    let mut redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), 151, &redis);
    // Long enough for a library reload on a loaded machine, short enough to keep the test quick.
    config.claim_timeout = Duration::from_millis(1_000);
    let writer = open(&config).await;
    writer
        .open_wave(1, 1, &clues(&["vault"]))
        .await
        .expect("open wave");
    let ClueClaim::Won { token, .. } = writer.claim_clue("vault", "ada").await.expect("claim")
    else {
        panic!("the first claim wins");
    };
    let chest = chest_type(1);
    let award = writer.award_id();
    let mut reader = writer.compensations();
    assert_eq!(reader.next(Duration::ZERO).await.expect("read"), None);
    // The claim timeout and a margin for a machine shared with other builds.
    let bound = config.claim_timeout + Duration::from_millis(1_000);

    // SIGSTOP: connections stay open but nothing answers.
    redis.pause().expect("SIGSTOP");
    for round in 0..2 {
        let started = Instant::now();
        let result = writer.claim_clue("vault", "ada").await;
        unreachable_in_time(&format!("claim {round}"), result, started, bound);
    }
    let started = Instant::now();
    let result = writer.check_clue("vault", "ada", token).await;
    unreachable_in_time("check", result, started, bound);
    let started = Instant::now();
    let result = writer.claim_chest(1, chest, "hoard", &award).await;
    unreachable_in_time("chest", result, started, bound);
    let started = Instant::now();
    let result = writer.open_wave(1, 2, &clues(&["vault"])).await;
    unreachable_in_time("wave", result, started, bound);
    let wait = Duration::from_millis(100);
    let started = Instant::now();
    let result = reader.next(wait).await;
    unreachable_in_time("inbox", result, started, bound + wait);
    assert_eq!(
        writer.committed_tier_seq(1),
        1,
        "a failed opening records nothing"
    );
    redis.resume();
    let claim = eventually("claims answer again after SIGCONT", || async {
        match writer.claim_clue("vault", "ada").await {
            Ok(claim) => Some(claim),
            Err(ClaimError::Unreachable { .. }) => None,
            Err(err) => panic!("{err}"),
        }
    })
    .await;
    assert_eq!(claim, ClueClaim::Won { token, wave: 1 });

    // Stopped: refused at once; it comes back without its data (and without the library).
    redis.stop();
    for round in 0..2 {
        let started = Instant::now();
        let result = writer.claim_clue("vault", "ada").await;
        unreachable_in_time(&format!("stopped claim {round}"), result, started, bound);
    }
    redis.start_again().expect("start again");
    // Redis forgot the clue; the shard file did not: the holder, its wave and its token are put
    // back before any claim is answered.
    let claim = eventually("claims answer again after the restart", || async {
        match writer.claim_clue("vault", "bob").await {
            Ok(claim) => Some(claim),
            Err(ClaimError::Unreachable { .. } | ClaimError::Recovering) => None,
            Err(err) => panic!("{err}"),
        }
    })
    .await;
    assert_eq!(
        claim,
        ClueClaim::Held {
            holder_player_id: "ada".into(),
            token,
            wave: 1
        }
    );
    let reopened = writer
        .open_wave(1, 2, &clues(&["vault"]))
        .await
        .expect("open wave after the restart");
    match writer.claim_clue("vault", "bob").await {
        Ok(ClueClaim::Won {
            wave: 2,
            token: next,
        }) => {
            assert!(
                next > token,
                "tokens rise across Redis lifetimes: {next} after {token}"
            );
        }
        other => panic!("expected bob to win wave 2, got {other:?}"),
    }
    assert_eq!(reader.next(Duration::ZERO).await.expect("read"), None);

    // A library lost under a live connection is loaded again by the call that misses it, a
    // pipelined wave opening included. First the relay must be past its reconnect (which loads
    // the library too): it has published the wave's event.
    eventually("the relay publishes again after the restart", || async {
        let mark: Option<u64> = redis_conn(&redis)
            .await
            .hget(keys::tier_published(1), keys::shard_field(151))
            .await
            .expect("HGET");
        (mark >= Some(reopened.tier_seq)).then_some(())
    })
    .await;
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut redis_conn(&redis).await)
        .await
        .expect("FUNCTION FLUSH");
    let mut pipe = redis::pipe();
    pipe.add_command(Version::new().cmd().clone());
    let missing = pipe
        .query_async::<Vec<i64>>(&mut redis_conn(&redis).await)
        .await
        .expect_err("the library is gone");
    assert!(hunt_redis::is_function_missing(&missing), "{missing}");
    writer
        .open_wave(1, 3, &clues(&["vault", "cellar"]))
        .await
        .expect("open wave without the library");
    assert!(matches!(
        writer.claim_clue("cellar", "bob").await,
        Ok(ClueClaim::Won { wave: 3, .. })
    ));
    assert!(recorded::total(m::CLAIMS).counter >= 10);
    assert!(recorded::total(m::CLAIM_SECONDS).samples >= 10);
    writer.shutdown().await.expect("shutdown");
}
