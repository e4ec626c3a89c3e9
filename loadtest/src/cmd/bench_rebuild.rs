//! `loadtest bench-rebuild`: how fast a quiet shard's leaderboards come back after Redis loses
//! its data under live connections (`FLUSHALL`), beside the first delivery of the same events in
//! the same run.
//!
//! 1. One shard writer appends `--events` score events over every tier (`--players` players),
//!    and a tier router in this process applies them: the first delivery, timed from the first
//!    append to the last applied mark.
//! 2. Nothing more is appended. `FLUSHALL`; the relay finds its tiers' applied watermarks below
//!    what they had acknowledged and sends everything again from the shard file. Timed from the
//!    flush to every applied mark back at what was committed, then every board checked against
//!    the totals appended.
//! 3. The private Redis is killed and started again without its data files (a restart-empty;
//!    skipped for a Redis given by `--redis-url`). Timed from the kill to every applied mark
//!    back, then every board checked again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::v1::{HuntEvent, ScoreGained};
use leaderboard_proto::{keys, rewards};
use shard_writer::{ShardWriter, WriterConfig};

use crate::harness::cpu::Sample;
use crate::harness::marks::wait_reached;
use crate::harness::pipeline::{Router, loopback_router};
use crate::harness::redis_target::{self, RedisUrl};

/// Options of `loadtest bench-rebuild`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    redis: RedisUrl,
    /// Events the quiet shard holds.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    events: u64,
    /// Distinct players.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    players: u32,
    /// How long the first delivery and the rebuild may each take, in seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    limit_s: u64,
}

/// Appending tasks: enough that group commits fill up.
const APPENDERS: u64 = 64;

/// `loadtest bench-rebuild`: the first delivery, then the rebuild after `FLUSHALL`.
///
/// # Errors
/// When a part cannot be started or reached, a phase takes longer than `--limit-s`, or a board
/// differs from what was appended after the rebuild.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let mut redis = args.redis.start()?;
    let client = redis.client()?;
    let mut conn = redis_target::connect(&client).await?;
    let dir = tempfile::tempdir().context("creating a temporary folder")?;
    let router = Router::embedded(loopback_router(&redis.url)?).await?;
    let mut config = WriterConfig::new(dir.path().join("quiet.sqlite"), 1).with_redis(&redis.url);
    // The rebuild must not lean on the stalled-watermark re-sends.
    config.redelivery_timeout = Duration::from_secs(300);
    config.max_redelivery_timeout = Duration::from_secs(300);
    let writer = ShardWriter::open(config).await?;
    let limit = Duration::from_secs(args.limit_s);
    println!(
        "one shard, {} events over {} tiers and {} players, applied by one router in this process",
        args.events,
        rewards::TIERS.len(),
        args.players
    );

    let cpu_start = Sample::now(&mut conn).await;
    let started = Instant::now();
    let totals = append(&writer, args.events, args.players).await?;
    let appended = started.elapsed();
    let events = applied(&mut conn, &writer, limit).await?;
    let first = started.elapsed();
    let cpu_flush = Sample::now(&mut conn).await;
    let cpu_first = cpu_start.per_event(&cpu_flush, events);

    let flushed = Instant::now();
    redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await?;
    applied(&mut conn, &writer, limit).await?;
    let rebuilt = flushed.elapsed();
    let cpu_rebuilt = cpu_flush.per_event(&Sample::now(&mut conn).await, events);
    check_boards(&mut conn, &totals).await?;

    let killed = Instant::now();
    let restarted = if redis.restart_empty()? {
        let mut conn = reconnect(&client, limit).await?;
        applied(&mut conn, &writer, limit).await?;
        let restarted = killed.elapsed();
        check_boards(&mut conn, &totals).await?;
        Some(restarted)
    } else {
        None
    };

    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    println!();
    println!(
        "| measure | first delivery | rebuild after FLUSHALL | ratio | rebuild after restart-empty | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    let (restart_time, restart_ratio, restart_rate, restart_rate_ratio) = match restarted {
        Some(took) => (
            format!("{:.2} s", took.as_secs_f64()),
            format!("{:.2}", took.as_secs_f64() / first.as_secs_f64()),
            format!("{:.0}", rate(took)),
            format!("{:.2}x", rate(took) / rate(first)),
        ),
        None => {
            let skipped = "skipped (Redis given by URL)".to_owned();
            (skipped.clone(), "-".to_owned(), skipped, "-".to_owned())
        }
    };
    println!(
        "| time | {:.2} s (appends {:.2} s) | {:.2} s | {:.2} | {restart_time} | {restart_ratio} |",
        first.as_secs_f64(),
        appended.as_secs_f64(),
        rebuilt.as_secs_f64(),
        rebuilt.as_secs_f64() / first.as_secs_f64()
    );
    println!(
        "| events/s | {:.0} | {:.0} | {:.2}x | {restart_rate} | {restart_rate_ratio} |",
        rate(first),
        rate(rebuilt),
        rate(rebuilt) / rate(first)
    );
    println!(
        "| CPU µs per event: process (commit + rest) / Redis | {} | {} | | – (Redis restarted) | |",
        cpu_first.cells(),
        cpu_rebuilt.cells()
    );
    println!("\nevery board equals the appended totals after each rebuild");
    writer.shutdown().await?;
    if !router.shutdown(Duration::from_secs(10)).await {
        bail!("the router did not stop within 10 s");
    }
    Ok(())
}

/// Waits (up to `limit`) until the router has applied everything `writer` committed; returns
/// how many events that is.
async fn applied(
    conn: &mut redis::aio::MultiplexedConnection,
    writer: &ShardWriter,
    limit: Duration,
) -> anyhow::Result<u64> {
    wait_reached(
        conn,
        std::slice::from_ref(writer),
        keys::tier_applied,
        limit,
    )
    .await
}

/// A new connection once Redis answers again, within `limit`.
async fn reconnect(
    client: &redis::Client,
    limit: Duration,
) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let deadline = Instant::now() + limit;
    loop {
        match redis_target::connect(client).await {
            Ok(conn) => return Ok(conn),
            Err(err) if Instant::now() >= deadline => {
                return Err(err.context("Redis did not come back after the restart"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Appends `events` score events round-robin over the tiers from [`APPENDERS`] tasks; returns
/// each tier's totals per player.
async fn append(
    writer: &ShardWriter,
    events: u64,
    players: u32,
) -> anyhow::Result<BTreeMap<u32, BTreeMap<String, i64>>> {
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..APPENDERS {
        let writer = writer.clone();
        tasks.spawn(async move {
            let mut totals: BTreeMap<u32, BTreeMap<String, i64>> = BTreeMap::new();
            let mut n = task;
            while n < events {
                let tier = rewards::TIERS[(n % rewards::TIERS.len() as u64) as usize].id;
                let player = format!("p{}", n % u64::from(players));
                let points = 1 + (n % 7) as i64;
                let event = HuntEvent {
                    tier,
                    kind: Some(Kind::ScoreGained(ScoreGained {
                        player_id: player.clone(),
                        points,
                    })),
                    ..HuntEvent::default()
                };
                writer.append(event).await?;
                *totals.entry(tier).or_default().entry(player).or_default() += points;
                n += APPENDERS;
            }
            anyhow::Ok(totals)
        });
    }
    let mut totals: BTreeMap<u32, BTreeMap<String, i64>> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        for (tier, players) in done?? {
            for (player, points) in players {
                *totals.entry(tier).or_default().entry(player).or_default() += points;
            }
        }
    }
    Ok(totals)
}

/// Fails unless every tier's board holds exactly `totals`.
async fn check_boards(
    conn: &mut redis::aio::MultiplexedConnection,
    totals: &BTreeMap<u32, BTreeMap<String, i64>>,
) -> anyhow::Result<()> {
    let mut conn = hunt_redis::Connection::from(conn.clone());
    for tier in rewards::tier_ids() {
        let board = tier_router::cache::read_range(&mut conn, tier, 0, u64::MAX >> 1).await?;
        let got: BTreeMap<String, i64> =
            board.into_iter().map(|e| (e.player_id, e.score)).collect();
        if got != totals.get(&tier).cloned().unwrap_or_default() {
            bail!("tier {tier}'s board differs from what was appended after the rebuild");
        }
    }
    Ok(())
}
