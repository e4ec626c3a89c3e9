//! `loadtest bench-writer`: durable appends per second of one shard and their latency, with
//! the relay publishing to Redis, beside a naive baseline measured in the same run.
//!
//! The relay publishes at most a window past what a router has applied (flow control), so a
//! tier router runs in this process during the pipeline phase and applies what is published:
//! the writer is measured with what acknowledges its output in production, and the report
//! says so.

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

use crate::harness::histogram::{self, millis};
use crate::harness::marks::committed_total;
use crate::harness::pipeline::{Router, loopback_router};
use crate::harness::redis_target::{RedisTarget, RedisUrl};

/// Options of `loadtest bench-writer`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    redis: RedisUrl,
    /// Offered load in events/s, arriving every millisecond in equal bursts, each append
    /// measured from its arrival (open loop: a stalled writer cannot hide its queue). 0 runs
    /// closed-loop instead: `concurrency` tasks append as fast as commits allow.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    rate: u64,
    /// Tasks appending at once in the closed-loop run (`--rate 0`).
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
    cpu: crate::harness::cpu::PerEvent,
    elapsed: Duration,
    latency: Histogram<u64>,
    max_relay_lag: u64,
    pacer_lateness: Histogram<u64>,
    drain: Duration,
}

/// `loadtest bench-writer`: the pipeline's shard, then the naive baseline, side by side.
///
/// # Errors
/// When a part cannot be started or reached, or the relay does not catch up.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let redis = args.redis.start()?;
    let temp = tempfile::tempdir().context("creating a temporary folder")?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let pipeline = pipeline(&args, &redis, &dir).await?;
    let baseline = baseline(&args, &redis, &dir).await?;

    let rate = pipeline.events as f64 / pipeline.elapsed.as_secs_f64();
    let baseline_rate = baseline.0 as f64 / baseline.1.as_secs_f64();
    println!("| measure | pipeline | naive baseline | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| durable appends/s, one shard | {rate:.0} | {baseline_rate:.0} | {:.1}x |",
        rate / baseline_rate
    );
    for (name, q) in [("p50", 0.50), ("p99", 0.99), ("p99.9", 0.999)] {
        println!(
            "| append latency {name} | {:.3} ms | {:.3} ms | |",
            millis(&pipeline.latency, q),
            millis(&baseline.2, q)
        );
    }
    if args.rate > 0 {
        println!(
            "| load generator: pacer wake-up lateness p99 | {:.3} ms | | |",
            millis(&pipeline.pacer_lateness, 0.99)
        );
    }
    println!(
        "| CPU µs per append: process (commit + rest: relay, router, load) / Redis | {} | | |",
        pipeline.cpu.cells()
    );
    println!(
        "| largest relay lag (committed, not yet published) | {} events | 0 (inline) | |",
        pipeline.max_relay_lag
    );
    println!(
        "| relay catch-up after the last append | {:.0} ms | | |",
        pipeline.drain.as_secs_f64() * 1000.0
    );
    let load = if args.rate > 0 {
        format!("open loop at {} events/s offered", args.rate)
    } else {
        format!("closed loop, {} tasks", args.concurrency)
    };
    println!(
        "\n{load}; {} s measured after {} s warm-up; baseline {} s, one task. The relay's output \
         is applied (and so acknowledged) by a tier router in this process.",
        args.seconds, args.warmup, args.baseline_seconds
    );
    Ok(())
}

async fn pipeline(
    args: &Args,
    redis: &RedisTarget,
    dir: &std::path::Path,
) -> anyhow::Result<PipelineResult> {
    let path = dir.join("bench-shard-1.sqlite");
    remove_shard_files(&path);
    let router = Router::embedded(loopback_router(&redis.url)?).await?;
    let writer = ShardWriter::open(WriterConfig::new(&path, 1).with_redis(&redis.url)).await?;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    if args.rate > 0 {
        tasks.spawn(open_loop(
            writer.clone(),
            args.rate,
            Arc::clone(&measuring),
            Arc::clone(&stop),
        ));
    } else {
        for task in 0..args.concurrency {
            tasks.spawn(closed_loop(
                writer.clone(),
                u64::from(task),
                Arc::clone(&measuring),
                Arc::clone(&stop),
            ));
        }
    }

    let mut conn = redis.connect().await?;
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let cpu_before = crate::harness::cpu::Sample::now(&mut conn).await;
    let started = Instant::now();
    let committed_before = committed_total(std::slice::from_ref(&writer));
    let mut max_relay_lag = 0;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let lag = relay_lag(&mut conn, &writer).await?;
        if std::env::var_os("HUNT_BENCH_TRACE").is_some() {
            eprintln!("{:>6} ms relay lag {lag}", started.elapsed().as_millis());
        }
        max_relay_lag = max_relay_lag.max(lag);
    }
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let committed = committed_total(std::slice::from_ref(&writer)) - committed_before;
    let cpu = cpu_before.per_event(
        &crate::harness::cpu::Sample::now(&mut conn).await,
        committed,
    );
    stop.store(true, Ordering::Relaxed);
    let mut latency = histogram::new()?;
    let mut pacer_lateness = histogram::new()?;
    while let Some(result) = tasks.join_next().await {
        let (appends, pacer) = result??;
        latency.add(appends)?;
        pacer_lateness.add(pacer)?;
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
    if !router.shutdown(Duration::from_secs(10)).await {
        anyhow::bail!("the router did not stop within 10 s");
    }
    Ok(PipelineResult {
        events: committed,
        cpu,
        elapsed,
        latency,
        max_relay_lag,
        pacer_lateness,
        drain,
    })
}

/// Appends as fast as commits allow, one at a time; returns the measured latencies.
async fn closed_loop(
    writer: ShardWriter,
    seed: u64,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let mut events = EventGenerator::new(seed, 50_000);
    let mut latency = histogram::new()?;
    while !stop.load(Ordering::Relaxed) {
        let event = events.next_event();
        let started = Instant::now();
        writer.append(event).await?;
        if measuring.load(Ordering::Relaxed) {
            latency.saturating_record(started.elapsed().as_nanos() as u64);
        }
    }
    Ok((latency, histogram::new()?))
}

/// Offers `rate` events/s, a burst every millisecond, each append in its own task; returns
/// the latencies of the appends (from the call to the commit) and how late the pacer woke for
/// each burst (a late pacer means the measurement, not only the writer, fell behind).
async fn open_loop(
    writer: ShardWriter,
    rate: u64,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let mut events = EventGenerator::new(1, 50_000);
    let mut appends = tokio::task::JoinSet::new();
    let mut latency = histogram::new()?;
    let mut pacer_lateness = histogram::new()?;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = tokio::time::Instant::now();
    let mut offered = 0u64;
    let record = |latency: &mut Histogram<u64>, done| -> anyhow::Result<()> {
        let (measured, elapsed): (bool, Duration) = done;
        if measured {
            latency.saturating_record(elapsed.as_nanos() as u64);
        }
        Ok(())
    };
    while !stop.load(Ordering::Relaxed) {
        let tick = ticker.tick().await;
        let dispatched = tokio::time::Instant::now();
        let measured = measuring.load(Ordering::Relaxed);
        if measured {
            pacer_lateness.saturating_record((dispatched - tick).as_nanos() as u64);
        }
        let due = (tick - started).as_micros() as u64 * rate / 1_000_000;
        while offered < due {
            offered += 1;
            let writer = writer.clone();
            let event = events.next_event();
            appends.spawn(async move {
                let called = Instant::now();
                writer.append(event).await?;
                Ok::<_, anyhow::Error>((measured, called.elapsed()))
            });
        }
        while let Some(done) = appends.try_join_next() {
            record(&mut latency, done??)?;
        }
    }
    while let Some(done) = appends.join_next().await {
        record(&mut latency, done??)?;
    }
    Ok((latency, pacer_lateness))
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
    redis: &RedisTarget,
    dir: &std::path::Path,
) -> anyhow::Result<(u64, Duration, Histogram<u64>)> {
    let path = dir.join("bench-baseline.sqlite");
    remove_shard_files(&path);
    let db = rusqlite::Connection::open(&path)?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE events (seq INTEGER PRIMARY KEY, tier INTEGER, payload BLOB);",
    )?;
    let mut conn = redis.connect().await?;
    let mut events = EventGenerator::new(7, 50_000);
    let mut latency = histogram::new()?;
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
