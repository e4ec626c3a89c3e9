//! A property test against a simple model: random appends, writer crashes, Redis restarts (with
//! and without its data) and acknowledgements; afterwards the model and the streams agree.

use hunt_testkit::RedisServer;
use leaderboard_proto::rewards;
use leaderboard_proto::v1::hunt_event::Kind;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use crate::support::{
    config, contiguous, eventually, open, score, set_applied, stop_keeping_data, stream_by_tier_seq,
};

#[derive(Debug, Clone)]
enum Op {
    /// Append `count` events to one tier.
    Append {
        tier: usize,
        player: u8,
        points: i16,
        count: u8,
    },
    /// Drop the writer without shutdown and open the file again.
    Crash,
    /// Restart Redis, keeping (SHUTDOWN SAVE) or losing its data.
    RestartRedis { keep_data: bool },
    /// A router acknowledges a fraction (in quarters) of what a tier's stream holds.
    Acknowledge { tier: usize, quarters: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let tiers = rewards::TIERS.len();
    prop_oneof![
        6 => (0..tiers, any::<u8>(), -1000i16..1000, 1u8..40)
            .prop_map(|(tier, player, points, count)| Op::Append { tier, player, points, count }),
        1 => Just(Op::Crash),
        1 => any::<bool>().prop_map(|keep_data| Op::RestartRedis { keep_data }),
        2 => (0..tiers, 0u8..=4).prop_map(|(tier, quarters)| Op::Acknowledge { tier, quarters }),
    ]
}

/// Runs one sequence of operations and checks the streams against the model.
async fn run(ops: Vec<Op>) {
    let mut redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 51, &redis);
    let mut writer = Some(open(&config).await);
    // The model: per tier, the (player, points) of tier_seq 1, 2, 3, …
    let mut model: Vec<Vec<(String, i64)>> = vec![Vec::new(); rewards::TIERS.len()];
    for op in ops {
        match op {
            Op::Append {
                tier,
                player,
                points,
                count,
            } => {
                let Some(writer) = &writer else { continue };
                for i in 0..count {
                    let player = format!("p{player}");
                    let points = i64::from(points) + i64::from(i);
                    let done = writer
                        .append(score(rewards::TIERS[tier].id, &player, points))
                        .await
                        .expect("append");
                    model[tier].push((player, points));
                    assert_eq!(
                        done.tier_seq,
                        model[tier].len() as u64,
                        "contiguous tier_seq"
                    );
                }
            }
            Op::Crash => {
                drop(writer.take());
                writer = Some(open(&config).await);
            }
            Op::RestartRedis { keep_data } => {
                if keep_data {
                    stop_keeping_data(&mut redis).await;
                    redis.start_again().expect("start with data");
                } else {
                    redis.restart(false).expect("restart empty");
                }
            }
            Op::Acknowledge { tier, quarters } => {
                let id = rewards::TIERS[tier].id;
                let by_seq = stream_by_tier_seq(&redis, id).await;
                let prefix = by_seq
                    .keys()
                    .zip(1..)
                    .take_while(|(s, n)| **s == *n)
                    .count() as u64;
                set_applied(&redis, id, 51, prefix * u64::from(quarters) / 4).await;
            }
        }
    }
    for (index, tier) in rewards::TIERS.iter().enumerate() {
        let want = &model[index];
        let by_seq = eventually("streams agree with the model", || async {
            let by_seq = stream_by_tier_seq(&redis, tier.id).await;
            contiguous(&by_seq, want.len() as u64).then_some(by_seq)
        })
        .await;
        for ((player, points), (tier_seq, event)) in want.iter().zip(&by_seq) {
            let Some(Kind::ScoreGained(gained)) = &event.kind else {
                panic!("tier {} tier_seq {tier_seq}: wrong kind", tier.id);
            };
            assert_eq!(
                (&gained.player_id, gained.points),
                (player, *points),
                "tier_seq {tier_seq}"
            );
        }
    }
    if let Some(writer) = writer {
        writer.shutdown().await.expect("shutdown");
    }
}

#[test]
fn streams_agree_with_the_model_through_crashes_and_redis_restarts() {
    let mut runner = TestRunner::new(Config {
        cases: 10,
        rng_seed: RngSeed::Fixed(0x4855_4e54),
        failure_persistence: None,
        max_shrink_iters: 8,
        ..Config::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runner
        .run(&proptest::collection::vec(op(), 1..25), |ops| {
            runtime.block_on(run(ops));
            Ok(())
        })
        .expect("property holds");
}
