//! The contract's pure hot paths, paid once per event: validating an event before it is
//! committed (the writer and the ingest sidecar), and encoding a stream entry into the
//! arguments of a `hunt_apply` batch (the router).
//!
//! `cargo bench -p leaderboard-proto --bench contract`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leaderboard_proto::functions::{Apply, ApplyEntry};
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::v1::{ClueSolved, HuntEvent, ScoreGained, TreasureAwarded};
use leaderboard_proto::validate;

/// Events per batch: the router's usual apply batch.
const BATCH: usize = 100;

/// A batch of a shard's events in tier 1: mostly points, some clue solves and chest awards.
fn events() -> Vec<HuntEvent> {
    (0..BATCH as u64)
        .map(|seq| {
            let player_id = format!("player-{:05}", seq * 7919 % 50_000);
            let kind = match seq % 20 {
                0 => Kind::ClueSolved(ClueSolved {
                    clue_id: format!("clue-{seq}"),
                    player_id,
                    token: seq + 1,
                    points: 25,
                }),
                1 => Kind::TreasureAwarded(TreasureAwarded {
                    chest_key: format!("chest-{seq}"),
                    award_id: format!("7-1-{seq}"),
                    player_id,
                    points: 100,
                }),
                _ => Kind::ScoreGained(ScoreGained {
                    player_id,
                    points: 10,
                }),
            };
            HuntEvent {
                shard_id: 7,
                epoch: 1,
                seq: seq + 1,
                tier: 1,
                tier_seq: seq + 1,
                kind: Some(kind),
                ..HuntEvent::default()
            }
        })
        .collect()
}

fn validation(c: &mut Criterion) {
    // Events as a shard appends them: the relay assigns tier_seq.
    let batch: Vec<HuntEvent> = events()
        .into_iter()
        .map(|event| HuntEvent {
            tier_seq: 0,
            ..event
        })
        .collect();
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("event", |b| {
        b.iter(|| {
            for event in &batch {
                black_box(validate::event(black_box(event)).is_ok());
            }
        });
    });
    group.finish();
}

fn apply_arguments(c: &mut Criterion) {
    let batch = events();
    let mut group = c.benchmark_group("apply_arguments");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch", |b| {
        b.iter(|| {
            let mut apply = Apply::new(1, "3:router-a", "1700000000000-0", 100);
            for event in &batch {
                apply.entry(&ApplyEntry::of(black_box(event), 1));
            }
            black_box(apply)
        });
    });
    group.finish();
}

criterion_group!(benches, validation, apply_arguments);
criterion_main!(benches);
