//! The router's pure hot paths on a top-100: the difference between two versions of a tier's
//! top (computed once per version for `/ws`, and per watcher for gRPC `Watch`), and the `/ws`
//! frames of one update (encoded once per version, shared by every spectator).
//!
//! `cargo bench -p tier-router --bench router`
//!
//! Each case is a change between two versions of a top-100:
//! - `leader_scores`: the leader's score grows (one entry changes);
//! - `climber`: the player at rank 51 jumps to rank 1 (ranks 1 to 51 change);
//! - `replaced`: every player of the top is new (100 upserts, 100 removals).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leaderboard_proto::v1::Entry;
use tier_router::cache::{Diff, Snapshot};
use tier_router::config::CACHED_TOP;
use tier_router::ws::Published;

/// A tier id; any will do, the frames only carry it.
const TIER: u32 = 1;

/// A full top of `prefix`-named players, best first, scores 10 apart.
fn top(prefix: &str) -> Vec<Entry> {
    (0..CACHED_TOP as u64)
        .map(|i| Entry {
            rank: i + 1,
            player_id: format!("{prefix}-{i:04}"),
            score: 1_000_000 - 10 * i as i64,
            display_name: None,
        })
        .collect()
}

/// `entries` ranked again by score, best first.
fn ranked(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by_key(|e| std::cmp::Reverse(e.score));
    for (rank, entry) in (1..).zip(entries.iter_mut()) {
        entry.rank = rank;
    }
    entries
}

/// The (name, before, after) of each case.
fn cases() -> Vec<(&'static str, Vec<Entry>, Vec<Entry>)> {
    let before = top("player");
    let mut leader_scores = before.clone();
    leader_scores[0].score += 50;
    let mut climber = before.clone();
    climber[50].score = 2_000_000;
    vec![
        ("leader_scores", before.clone(), leader_scores),
        ("climber", before.clone(), ranked(climber)),
        ("replaced", before, top("newcomer")),
    ]
}

fn snapshot(version: u64, entries: Vec<Entry>) -> Snapshot {
    Snapshot {
        version,
        entries: Arc::new(entries),
        stale: false,
        loaded: true,
        changed_at_ms: 1,
    }
}

fn top_diff(c: &mut Criterion) {
    let mut group = c.benchmark_group("top_diff");
    group.throughput(Throughput::Elements(CACHED_TOP as u64));
    for (name, before, after) in cases() {
        group.bench_function(name, |b| {
            b.iter(|| Diff::between(black_box(&before), black_box(&after)));
        });
    }
    group.finish();
}

fn ws_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws_encode");
    let first = snapshot(1, top("player"));
    let bytes = Published::encode(TIER, "bench", None, &first)
        .snapshot()
        .len() as u64;
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("snapshot", |b| {
        b.iter(|| Published::encode(TIER, "bench", None, black_box(&first)));
    });
    for (name, before, after) in cases() {
        let (before, after) = (snapshot(1, before), snapshot(2, after));
        let update = Published::encode(TIER, "bench", Some(&before), &after);
        let bytes = update.snapshot().len() + update.delta().map_or(0, str::len);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(format!("snapshot_and_delta/{name}"), |b| {
            b.iter(|| {
                Published::encode(TIER, "bench", Some(black_box(&before)), black_box(&after))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, top_diff, ws_encode);
criterion_main!(benches);
