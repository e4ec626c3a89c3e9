//! Faults while a hunt runs: routers killed and paused (as separate processes), Redis flushed,
//! restarted without its data, and streams trimmed past the router's cursor. Every one of them
//! ends with every tier's board equal to the appended totals, each event applied exactly once.

use std::time::Duration;

use hunt_testkit::RedisServer;

use crate::support::{Hunt, RouterProcess, eventually, router};

/// Entries applied so far over every tier (the sum of the applied marks).
async fn applied(redis: &RedisServer) -> u64 {
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut sum = 0;
    for tier in leaderboard_proto::rewards::tier_ids() {
        let marks: Vec<u64> = redis::cmd("HVALS")
            .arg(leaderboard_proto::keys::tier_applied(tier))
            .query_async(&mut conn)
            .await
            .expect("HVALS");
        sum += marks.iter().sum::<u64>();
    }
    sum
}

/// Waits until `more` entries beyond what is applied now have been applied.
async fn apply_more(redis: &RedisServer, more: u64) {
    let target = applied(redis).await + more;
    eventually("more entries applied", || async {
        (applied(redis).await >= target).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_mid_batch_and_restarted_applies_everything_once() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let hunt = Hunt::start(&redis, dir.path(), 3, |c| c).await;
    let mut router = RouterProcess::start(&redis, dir.path(), "first");
    // Kill it three times while batches are being applied, restarting it each time.
    for round in 0..3 {
        apply_more(&redis, 300).await;
        router.kill();
        hunt.append_more(200).await;
        router = RouterProcess::start(&redis, dir.path(), &format!("restart-{round}"));
    }
    apply_more(&redis, 300).await;
    hunt.finish(&redis).await;
    let status = router.terminate();
    assert!(
        status.success(),
        "SIGTERM drains and exits cleanly: {status}"
    );
    // It released its leases and left the live routers on the way out.
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    for tier in leaderboard_proto::rewards::tier_ids() {
        let holder: Option<String> = redis::cmd("GET")
            .arg(leaderboard_proto::keys::tier_lease(tier))
            .query_async(&mut conn)
            .await
            .expect("GET");
        assert_eq!(holder, None, "tier {tier}'s lease was released");
    }
    let live: Vec<String> = redis::cmd("SMEMBERS")
        .arg(leaderboard_proto::keys::routers())
        .query_async(&mut conn)
        .await
        .expect("SMEMBERS");
    assert!(!live.contains(&"restart-2".to_owned()), "{live:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_paused_past_its_lease_is_fenced_off_when_it_resumes() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let hunt = Hunt::start(&redis, dir.path(), 3, |c| c).await;
    let paused = RouterProcess::start(&redis, dir.path(), "paused");
    let other = RouterProcess::start(&redis, dir.path(), "other");
    // Both serve: the tiers are split between them.
    eventually("the tiers split between the two routers", || async {
        let log = other.log();
        (log.contains("tier owned") && paused.log().contains("tier owned")).then_some(())
    })
    .await;
    apply_more(&redis, 300).await;

    paused.pause();
    // Past its 1 s lease: the other router takes every tier and goes on applying.
    let before = applied(&redis).await;
    eventually(
        "the other router applies the paused one's tiers",
        || async {
            (other.log().matches("tier owned").count() == leaderboard_proto::rewards::TIERS.len())
                .then_some(())
        },
    )
    .await;
    apply_more(&redis, 500).await;
    assert!(applied(&redis).await > before);

    paused.resume();
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    while !paused.log().contains("fence rejected") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resumed router never reported its fence rejected:\n{}",
            paused.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Its clients see it through gRPC as before.
    let mut grpc = leaderboard_proto::v1::leaderboard_service_client::LeaderboardServiceClient::new(
        hunt_testkit::grpc_channel(paused.grpc_addr).await,
    );
    grpc.list_tiers(leaderboard_proto::v1::ListTiersRequest {})
        .await
        .expect("ListTiers");
    apply_more(&redis, 300).await;
    hunt.finish(&redis).await;
    assert!(paused.terminate().success());
    assert!(other.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boards_are_rebuilt_from_the_shard_logs_after_flushall_and_an_empty_restart() {
    let mut redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    let hunt = Hunt::start(&redis, dir.path(), 3, |c| c).await;
    apply_more(&redis, 500).await;

    redis.flushall().expect("FLUSHALL");
    hunt.append_more(300).await;
    apply_more(&redis, 300).await;

    redis.restart(false).expect("restart without data");
    hunt.append_more(300).await;
    apply_more(&redis, 300).await;

    hunt.finish(&redis).await;
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_whose_fence_vanished_says_redis_lost_its_data() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let hunt = Hunt::start(&redis, dir.path(), 2, |c| c).await;
    let router = RouterProcess::start(&redis, dir.path(), "alone");
    eventually("the router owns every tier", || async {
        (router.log().matches("tier owned").count() == leaderboard_proto::rewards::TIERS.len())
            .then_some(())
    })
    .await;
    apply_more(&redis, 200).await;
    redis.flushall().expect("FLUSHALL");
    eventually("the router reports the loss", || async {
        router
            .log()
            .contains("fence rejected: Redis lost its data")
            .then_some(())
    })
    .await;
    assert!(
        !router.log().contains("another router owns this tier"),
        "nobody else owns a tier:\n{}",
        router.log()
    );
    hunt.finish(&redis).await;
    assert!(router.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_shards_send_everything_again_at_once_after_a_flushall() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    // A stalled watermark is re-sent only after a minute: the rebuild cannot lean on it.
    let hunt = Hunt::start(&redis, dir.path(), 3, |mut c| {
        c.redelivery_timeout = Duration::from_secs(60);
        c.max_redelivery_timeout = Duration::from_secs(60);
        c
    })
    .await;
    hunt.append_more(3_000).await;
    let (writers, totals) = hunt.stop().await;
    crate::support::assert_exactly_once(&redis, &writers, &totals).await;

    // Nothing new is appended: each relay finds its acknowledged events gone and sends them
    // again from its file, well within the deadline.
    redis.flushall().expect("FLUSHALL");
    crate::support::assert_exactly_once(&redis, &writers, &totals).await;
    for writer in writers {
        writer.shutdown().await.expect("shutdown");
    }
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_trimmed_past_the_cursor_is_replayed_exactly() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    // A tiny cap: by the time the router starts, most entries are gone from the streams.
    let hunt = Hunt::start(&redis, dir.path(), 2, |mut c| {
        c.stream_cap = 100;
        c
    })
    .await;
    hunt.append_more(5_000).await;
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let length: u64 = redis::cmd("XLEN")
        .arg(leaderboard_proto::keys::tier_stream(1))
        .query_async(&mut conn)
        .await
        .expect("XLEN");
    assert!(length < 500, "the stream was trimmed (length {length})");

    let router = router(&redis).await;
    apply_more(&redis, 300).await;
    hunt.finish(&redis).await;
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

/// After Redis loses its data, no claim is answered until the router has applied again every
/// event the shards had committed: a new token handed out earlier could make an older clue
/// solve, replayed after it, score nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_wait_for_the_shards_events_to_be_applied_again() {
    use shard_writer::{ClaimError, ClueClaim};
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    let one = gated_writer(&redis, dir.path(), 1).await;
    let two = gated_writer(&redis, dir.path(), 2).await;
    let tier = leaderboard_proto::rewards::TIERS[0].id;
    eventually("the claims gate opens", || async {
        one.open_wave(tier, 1, &["c1".to_owned()]).await.ok()
    })
    .await;
    // A backlog the router takes a while to apply again.
    let mut appends = tokio::task::JoinSet::new();
    for writer in [one.clone(), two.clone()] {
        appends.spawn(async move {
            for n in 0..6_000 {
                let tier = leaderboard_proto::rewards::TIERS[n % 5].id;
                writer
                    .append(crate::support::score(tier, &format!("p{}", n % 97), 1))
                    .await
                    .expect("append");
            }
        });
    }
    while let Some(done) = appends.join_next().await {
        done.expect("appender");
    }
    let before: Vec<(u32, u32, u64)> = [&one, &two]
        .iter()
        .flat_map(|writer| {
            leaderboard_proto::rewards::tier_ids()
                .map(|tier| (writer.shard_id(), tier, writer.committed_tier_seq(tier)))
        })
        .collect();
    eventually("everything applied before the loss", || async {
        let marks = applied_marks(&redis, &before).await;
        marks
            .iter()
            .zip(&before)
            .all(|(m, b)| *m >= b.2)
            .then_some(())
    })
    .await;

    redis.flushall().expect("FLUSHALL");
    let claim = eventually("a claim is answered again", || async {
        match one.claim_clue("c1", "ada").await {
            Ok(claim) => Some(claim),
            Err(ClaimError::Recovering | ClaimError::Unreachable { .. }) => None,
            Err(err) => panic!("claim: {err}"),
        }
    })
    .await;
    // By the first answer, every event committed before the loss was applied again.
    let marks = applied_marks(&redis, &before).await;
    for (mark, (shard, tier, committed)) in marks.iter().zip(&before) {
        assert!(
            mark >= committed,
            "shard {shard} tier {tier}: applied {mark} of {committed} when claims reopened"
        );
    }
    assert!(matches!(claim, ClueClaim::Won { wave: 1, .. }), "{claim:?}");
    for writer in [one, two] {
        writer.shutdown().await.expect("shutdown");
    }
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

/// Shard `shard_id`'s writer in a hunt of two shards that take part in claims (the gate opens
/// once both joined), noticing a Redis that lost its data within 50 ms.
async fn gated_writer(
    redis: &RedisServer,
    dir: &std::path::Path,
    shard_id: u32,
) -> shard_writer::ShardWriter {
    crate::support::writer_with(redis, dir, shard_id, |mut config| {
        config.claim_shards = 2;
        config.claims_poll = Duration::from_millis(50);
        config
    })
    .await
}

/// The applied mark of each (shard, tier) of `of`, in order.
async fn applied_marks(redis: &RedisServer, of: &[(u32, u32, u64)]) -> Vec<u64> {
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut marks = Vec::new();
    for (shard, tier, _) in of {
        let mark: Option<u64> = redis::cmd("HGET")
            .arg(leaderboard_proto::keys::tier_applied(*tier))
            .arg(leaderboard_proto::keys::shard_field(*shard))
            .query_async(&mut conn)
            .await
            .expect("HGET");
        marks.push(mark.unwrap_or(0));
    }
    marks
}

/// A verdict told by `GetAward` alone (blind duplicate awards: no shard claimed the chest, and
/// the loser's shard never read its compensation) stands when Redis forgets everything, even
/// when the rebuild applies the losing awards first: the winner's shard recorded each verdict
/// before it was told, and puts it back before any chest is claimed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_told_by_get_award_alone_stands_when_redis_forgets() {
    use leaderboard_proto::v1::hunt_event::Kind;
    use leaderboard_proto::v1::{AwardState, GetAwardRequest, HuntEvent, TreasureAwarded};
    const CHESTS: usize = 8;
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = crate::support::router_with(&redis, |config| {
        config.saga_interval = Duration::from_millis(200);
        config.max_backoff = Duration::from_millis(200);
    })
    .await;
    let one = gated_writer(&redis, dir.path(), 1).await;
    let two = gated_writer(&redis, dir.path(), 2).await;
    let tier = leaderboard_proto::rewards::TIERS[0].id;
    eventually("the claims gate opens", || async {
        one.open_wave(tier, 1, &["c1".to_owned()]).await.ok()
    })
    .await;
    let awarded = |chest: usize, award_id: String, player: &str| HuntEvent {
        tier,
        kind: Some(Kind::TreasureAwarded(TreasureAwarded {
            chest_key: format!("chest-{chest}"),
            award_id,
            player_id: player.to_owned(),
            points: 10,
        })),
        ..HuntEvent::default()
    };
    let grpc = crate::support::client(&router).await;
    // What GetAward tells once the verdict is no longer pending: (state, holder).
    let told = |award_id: String| {
        let grpc = grpc.clone();
        async move {
            eventually("GetAward tells a verdict", || {
                let mut grpc = grpc.clone();
                let award_id = award_id.clone();
                async move {
                    let reply = grpc
                        .get_award(GetAwardRequest { tier: 0, award_id })
                        .await
                        .ok()?
                        .into_inner();
                    let state = reply.award?.state();
                    (state != AwardState::Pending).then_some((state, reply.holder_award_id))
                }
            })
            .await
        }
    };

    // Shard 1 awards every chest and is told it holds each; then shard 2 awards them too.
    for chest in 0..CHESTS {
        one.append(awarded(chest, format!("one-{chest}"), "ada"))
            .await
            .expect("append");
    }
    let mut before = std::collections::BTreeMap::new();
    for chest in 0..CHESTS {
        let award_id = format!("one-{chest}");
        let verdict = told(award_id.clone()).await;
        assert_eq!(verdict, (AwardState::Confirmed, award_id.clone()));
        before.insert(award_id, verdict);
    }
    for chest in 0..CHESTS {
        two.append(awarded(chest, format!("two-{chest}"), "bob"))
            .await
            .expect("append");
    }
    for chest in 0..CHESTS {
        let award_id = format!("two-{chest}");
        let verdict = told(award_id.clone()).await;
        assert_eq!(verdict.1, format!("one-{chest}"), "{award_id}");
        assert!(
            matches!(verdict.0, AwardState::Revoked | AwardState::Compensated),
            "{award_id}: {verdict:?}"
        );
        before.insert(award_id, verdict);
    }

    // Redis forgets everything while shard 1 is down: shard 2's awards are applied again first.
    one.shutdown().await.expect("shutdown");
    redis.flushall().expect("FLUSHALL");
    let committed = [(2, tier, two.committed_tier_seq(tier))];
    eventually("shard 2's events are applied again", || async {
        (applied_marks(&redis, &committed).await[0] >= committed[0].2).then_some(())
    })
    .await;
    let one = gated_writer(&redis, dir.path(), 1).await;

    // Every verdict told before stands.
    for (award_id, verdict) in &before {
        let now = told(award_id.clone()).await;
        let same = now.1 == verdict.1
            && (now.0 == verdict.0
                || (verdict.0 != AwardState::Confirmed && now.0 != AwardState::Confirmed));
        assert!(same, "{award_id}: told {verdict:?}, now {now:?}");
    }
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let board = tier_router::cache::read_range(&mut conn, tier, 0, 10)
        .await
        .expect("board");
    let scores: Vec<(String, i64)> = board.into_iter().map(|e| (e.player_id, e.score)).collect();
    assert_eq!(
        scores,
        [
            ("ada".to_owned(), 10 * CHESTS as i64),
            ("bob".to_owned(), 0)
        ]
    );
    for writer in [one, two] {
        writer.shutdown().await.expect("shutdown");
    }
    assert!(router.shutdown(Duration::from_secs(10)).await);
}
