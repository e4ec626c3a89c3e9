//! `loadtest bench-writer`: durable appends per second of one shard and their latency, with
//! the relay publishing to Redis, beside a naive baseline measured in the same run.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use leaderboard_proto::{keys, rewards};
use prost::Message;
use shard_writer::synthetic::EventGenerator;
use shard_writer::{ShardWriter, WriterConfig};

use crate::redis_target::RedisTarget;

/// Options of `loadtest bench-writer`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Redis to use; without it a private redis-server is started on a free port.
    #[arg(long, env = "HUNT_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Tasks appending at once (each waits for its commit before the next append).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// Measured seconds of the pipeline run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Unmeasured seconds before that.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Measured seconds of the naive baseline.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3600))]
    baseline_seconds: u64,
    /// Folder for the shard files (default: a temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
}

struct PipelineResult {
    events: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    max_relay_lag: u64,
    drain: Duration,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let redis = RedisTarget::new(args.redis_url.clone())?;
    let temp = tempfile::tempdir().context("creating a temporary folder")?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let pipeline = pipeline(&args, &redis.url, &dir).await?;
    let baseline = baseline(&args, &redis.url, &dir).await?;

    let rate = pipeline.events as f64 / pipeline.elapsed.as_secs_f64();
    let baseline_rate = baseline.0 as f64 / baseline.1.as_secs_f64();
    let micros = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!("| measure | pipeline | naive baseline | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| durable appends/s, one shard | {rate:.0} | {baseline_rate:.0} | {:.1}x |",
        rate / baseline_rate
    );
    println!(
        "| append latency p50 | {:.3} ms | {:.3} ms | |",
        micros(&pipeline.latency, 0.50),
        micros(&baseline.2, 0.50)
    );
    println!(
        "| append latency p99 | {:.3} ms | {:.3} ms | |",
        micros(&pipeline.latency, 0.99),
        micros(&baseline.2, 0.99)
    );
    println!(
        "| append latency p99.9 | {:.3} ms | {:.3} ms | |",
        micros(&pipeline.latency, 0.999),
        micros(&baseline.2, 0.999)
    );
    println!(
        "| largest relay lag (committed, not yet published) | {} events | 0 (inline) | |",
        pipeline.max_relay_lag
    );
    println!(
        "| relay catch-up after the last append | {:.0} ms | | |",
        pipeline.drain.as_secs_f64() * 1000.0
    );
    println!(
        "\nconcurrency {}, {} s measured after {} s warm-up; baseline {} s, one task.",
        args.concurrency, args.seconds, args.warmup, args.baseline_seconds
    );
    Ok(())
}

async fn pipeline(
    args: &Args,
    redis_url: &str,
    dir: &std::path::Path,
) -> anyhow::Result<PipelineResult> {
    let path = dir.join("bench-shard-1.sqlite");
    remove_shard_files(&path);
    let writer = ShardWriter::open(WriterConfig::new(&path, 1).with_redis(redis_url)).await?;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..args.concurrency {
        let writer = writer.clone();
        let measuring = Arc::clone(&measuring);
        let stop = Arc::clone(&stop);
        tasks.spawn(async move {
            let mut events = EventGenerator::new(u64::from(task), 50_000);
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
            let mut count = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let event = events.next_event();
                let started = Instant::now();
                writer.append(event).await?;
                if measuring.load(Ordering::Relaxed) {
                    latency.saturating_record(started.elapsed().as_nanos() as u64);
                    count += 1;
                }
            }
            Ok::<_, anyhow::Error>((count, latency))
        });
    }

    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut max_relay_lag = 0;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        max_relay_lag = max_relay_lag.max(relay_lag(&mut conn, &writer).await?);
    }
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut events = 0;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    while let Some(result) = tasks.join_next().await {
        let (count, histogram) = result??;
        events += count;
        latency.add(histogram)?;
    }
    let drain_started = Instant::now();
    while relay_lag(&mut conn, &writer).await? > 0 {
        if drain_started.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("the relay did not catch up within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let drain = drain_started.elapsed();
    writer.shutdown().await?;
    Ok(PipelineResult {
        events,
        elapsed,
        latency,
        max_relay_lag,
        drain,
    })
}

/// Committed events not yet published, over all tiers.
async fn relay_lag(
    conn: &mut redis::aio::MultiplexedConnection,
    writer: &ShardWriter,
) -> anyhow::Result<u64> {
    let mut pipe = redis::pipe();
    for tier in rewards::TIERS {
        pipe.hget(
            keys::tier_published(tier.id),
            keys::shard_field(writer.shard_id()),
        );
    }
    let published: Vec<Option<u64>> = pipe.query_async(conn).await?;
    Ok(rewards::TIERS
        .iter()
        .zip(published)
        .map(|(tier, mark)| {
            writer
                .committed_tier_seq(tier.id)
                .saturating_sub(mark.unwrap_or(0))
        })
        .sum())
}

/// The old way: one SQLite transaction and one XADD round trip per event, one at a time.
async fn baseline(
    args: &Args,
    redis_url: &str,
    dir: &std::path::Path,
) -> anyhow::Result<(u64, Duration, Histogram<u64>)> {
    let path = dir.join("bench-baseline.sqlite");
    remove_shard_files(&path);
    let db = rusqlite::Connection::open(&path)?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE events (seq INTEGER PRIMARY KEY, tier INTEGER, payload BLOB);",
    )?;
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut events = EventGenerator::new(7, 50_000);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < Duration::from_secs(args.baseline_seconds) {
        let event = events.next_event();
        let payload = event.encode_to_vec();
        let one = Instant::now();
        db.execute(
            "INSERT INTO events (tier, payload) VALUES (?1, ?2)",
            rusqlite::params![event.tier, payload],
        )?;
        let _: String = redis::cmd("XADD")
            .arg("hunt:bench:baseline")
            .arg("*")
            .arg("e")
            .arg(payload)
            .query_async(&mut conn)
            .await?;
        latency.saturating_record(one.elapsed().as_nanos() as u64);
        count += 1;
    }
    let elapsed = started.elapsed();
    let _: () = redis::cmd("DEL")
        .arg("hunt:bench:baseline")
        .query_async(&mut conn)
        .await?;
    Ok((count, elapsed, latency))
}

fn remove_shard_files(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}
