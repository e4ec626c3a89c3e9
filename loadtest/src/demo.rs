//! The demo: shards append a steady hunt; the tier streams fill up live.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leaderboard_proto::{keys, rewards};
use shard_writer::synthetic::EventGenerator;
use shard_writer::{ShardWriter, WriterConfig};

use crate::redis_target::RedisTarget;

/// Options of `loadtest demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Redis to use; without it a private redis-server is started on a free port.
    #[arg(long, env = "HUNT_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Shard processes to simulate (each with its own SQLite file).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    shards: u32,
    /// Events per second over all shards.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rate: u64,
    /// How long to run; 0 runs until Ctrl-C.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let redis = RedisTarget::new(args.redis_url)?;
    let dir = tempfile::tempdir().context("creating a directory for the shard files")?;
    let mut writers = Vec::new();
    for shard in 1..=args.shards {
        let config = WriterConfig::new(dir.path().join(format!("shard-{shard}.sqlite")), shard)
            .with_redis(redis.url.clone());
        writers.push(
            ShardWriter::open(config)
                .await
                .context("opening a shard writer")?,
        );
    }
    println!(
        "{} shards appending {} events/s over {} tiers; shard files in {}",
        args.shards,
        args.rate,
        rewards::TIERS.len(),
        dir.path().display()
    );
    println!("{}", header());

    let per_shard = (args.rate / u64::from(args.shards)).max(1);
    let mut producers = tokio::task::JoinSet::new();
    let stop = tokio_util_stop();
    for writer in &writers {
        let writer = writer.clone();
        let stop = stop.clone();
        producers.spawn(async move {
            let mut events = EventGenerator::new(u64::from(writer.shard_id()), 5_000);
            let interval = Duration::from_secs_f64(1.0 / per_shard as f64);
            let started = tokio::time::Instant::now();
            let mut appended = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep_until(started + interval.mul_f64(appended as f64)).await;
                writer.append(events.next_event()).await?;
                appended += 1;
            }
            Ok::<u64, shard_writer::AppendError>(appended)
        });
    }

    let client = redis::Client::open(redis.url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {
                println!("{}", row(started.elapsed(), &mut conn, &writers).await?);
                if args.seconds > 0 && started.elapsed() >= Duration::from_secs(args.seconds) {
                    break;
                }
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut appended = 0;
    while let Some(result) = producers.join_next().await {
        appended += result??;
    }
    for writer in &writers {
        writer.shutdown().await?;
    }
    println!("{}", row(started.elapsed(), &mut conn, &writers).await?);
    verify(&mut conn, &writers).await?;
    println!("{appended} events appended; every one arrived in its tier stream exactly once.");
    Ok(())
}

/// A flag the producers poll; set once when the demo ends.
fn tokio_util_stop() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false))
}

fn header() -> String {
    let mut line = format!("{:>6}  {:>10}", "time", "committed");
    for tier in rewards::TIERS {
        line.push_str(&format!(
            "  {:>14}",
            format!("{} (t{})", tier.name, tier.id)
        ));
    }
    line
}

async fn row(
    elapsed: Duration,
    conn: &mut redis::aio::MultiplexedConnection,
    writers: &[ShardWriter],
) -> anyhow::Result<String> {
    let committed: u64 = writers
        .iter()
        .flat_map(|w| rewards::tier_ids().map(|tier| w.committed_tier_seq(tier)))
        .sum();
    let mut line = format!("{:>5}s  {committed:>10}", elapsed.as_secs());
    let mut pipe = redis::pipe();
    for tier in rewards::TIERS {
        pipe.xlen(keys::tier_stream(tier.id));
    }
    let lengths: Vec<u64> = pipe.query_async(conn).await?;
    for length in lengths {
        line.push_str(&format!("  {length:>14}"));
    }
    Ok(line)
}

/// Checks that every committed event of every shard is in its tier stream, once.
async fn verify(
    conn: &mut redis::aio::MultiplexedConnection,
    writers: &[ShardWriter],
) -> anyhow::Result<()> {
    for tier in rewards::TIERS {
        let entries = leaderboard_proto::stream::range(conn, tier.id, "-", "+").await?;
        let mut seen = BTreeSet::new();
        for (_, event) in entries {
            if !seen.insert((event.shard_id, event.tier_seq)) {
                bail!(
                    "tier {}: shard {} tier_seq {} arrived twice",
                    tier.id,
                    event.shard_id,
                    event.tier_seq
                );
            }
        }
        for writer in writers {
            let committed = writer.committed_tier_seq(tier.id);
            let arrived = seen
                .range((writer.shard_id(), 1)..=(writer.shard_id(), u64::MAX))
                .count() as u64;
            if arrived != committed {
                bail!(
                    "tier {}: shard {} committed {committed} events but {arrived} arrived \
                     (a stream past its cap of 100000 entries is trimmed: run shorter)",
                    tier.id,
                    writer.shard_id()
                );
            }
        }
    }
    Ok(())
}
