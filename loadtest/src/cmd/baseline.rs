//! `loadtest baseline`: the workload of `loadtest run`, then the same offered load the way the
//! old systems did it, reported side by side.
//!
//! The naive way, per event: one SQLite transaction (autocommit `INSERT`), one `XADD` round trip
//! awaited before the next event of the shard, and per tier one consumer that reads the stream
//! and does one `ZINCRBY` round trip per event. No batching, no dedup, no claims (clue attempts
//! and chest awards are plain points here, as they were). Each shard has its own connection, as
//! each shard process had. Arrivals are open-loop at the same rate per shard and timed from their
//! intended time, like the pipeline's.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use leaderboard_proto::{keys, rewards};
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

use crate::harness::histogram;
use crate::harness::hunt::{self, Draw, hunters_of};
use crate::harness::open_loop;
use crate::harness::redis_target::{self, RedisTarget};
use crate::harness::report::{Baseline, Latency};

/// Options of `loadtest baseline`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) hunt: hunt::Options,
    /// Seconds of the naive run (and of other peers'; each at `--rate`).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub(crate) baseline_seconds: u64,
}

/// `loadtest baseline`: the hunt, then the naive run, reported side by side.
///
/// # Errors
/// When a part cannot be started or reached, a report cannot be written, or a check failed.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let mut report = hunt::execute(&args.hunt).await?;
    report.baseline = Some(naive(&args.hunt, args.baseline_seconds).await?);
    report.finish(&args.hunt.json, &args.hunt.svg, args.hunt.fail_on_goal)
}

/// The naive run of `seconds` with the hunt's options: consumers per tier, then the open-loop
/// load over naive shards, then the wait until the consumers caught up.
pub(crate) async fn naive(hunt: &hunt::Options, seconds: u64) -> anyhow::Result<Baseline> {
    let redis = RedisTarget::new(hunt.redis_url.clone())?;
    let client = redis.client()?;
    let dir = tempfile::tempdir().context("creating a folder for the naive shard files")?;
    let epoch = Instant::now();
    let stop = CancellationToken::new();
    let applied = Arc::new(Applied {
        count: AtomicU64::new(0),
        end_to_end: Mutex::new(histogram::new()?),
    });
    let mut consumers = tokio::task::JoinSet::new();
    for tier in rewards::tier_ids() {
        let conn = redis_target::connect(&client).await?;
        consumers.spawn(consume(
            conn,
            tier,
            epoch,
            Arc::clone(&applied),
            stop.clone(),
        ));
    }

    let duration = Duration::from_secs(seconds);
    let per_shard = (hunt.rate / u64::from(hunt.shards)).max(1);
    let started = Instant::now();
    let offset = started.duration_since(epoch);
    let mut shards = tokio::task::JoinSet::new();
    for index in 0..hunt.shards {
        let shard = NaiveShard::open(hunt, &client, dir.path(), index).await?;
        shards.spawn(open_loop::run(per_shard, duration, 1, move |n| {
            // The arrival's intended time, as the open-loop driver schedules it.
            let due =
                (offset + Duration::from_secs_f64(n as f64 / per_shard as f64)).as_nanos() as u64;
            shard.append(n, due)
        }));
    }
    let mut append = histogram::new()?;
    let mut committed = 0;
    while let Some(outcome) = shards.join_next().await {
        let outcome = outcome??;
        append.add(&outcome.latency)?;
        committed += outcome.latency.len();
    }
    let load = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(hunt.settle_seconds);
    while applied.count.load(Ordering::Relaxed) < committed && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let until_applied = started.elapsed();
    stop.cancel();
    while let Some(done) = consumers.join_next().await {
        done??;
    }
    let end_to_end = histogram::snapshot(&applied.end_to_end)?;
    Ok(Baseline {
        seconds: load.as_secs_f64(),
        committed_per_s: committed as f64 / load.as_secs_f64(),
        applied_per_s: applied.count.load(Ordering::Relaxed) as f64 / until_applied.as_secs_f64(),
        append: Latency::of(&append),
        end_to_end: Latency::of(&end_to_end),
        get_top: None,
    })
}

/// What the naive consumers applied.
struct Applied {
    /// Events applied over every tier.
    count: AtomicU64,
    /// From each event's intended time to its `ZINCRBY`.
    end_to_end: Mutex<Histogram<u64>>,
}

/// The naive consumer of `tier`: reads its stream and does one `ZINCRBY` round trip per event,
/// until `stop`.
async fn consume(
    mut conn: MultiplexedConnection,
    tier: u32,
    epoch: Instant,
    applied: Arc<Applied>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let stream = keys::tier_baseline_stream(tier);
    let board = keys::tier_baseline(tier);
    let mut last = "0".to_owned();
    while !stop.is_cancelled() {
        let read: redis::streams::StreamReadReply = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(50)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last)
            .query_async(&mut conn)
            .await?;
        for entry in read.keys.into_iter().flat_map(|k| k.ids) {
            let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
            let (player, points) = (field("p"), field("s"));
            let _: f64 = redis::cmd("ZINCRBY")
                .arg(&board)
                .arg(&points)
                .arg(&player)
                .query_async(&mut conn)
                .await?;
            let due: u64 = field("t").parse().unwrap_or(0);
            let took = epoch.elapsed().saturating_sub(Duration::from_nanos(due));
            if let Ok(mut h) = applied.end_to_end.lock() {
                h.saturating_record(took.as_nanos() as u64);
            }
            applied.count.fetch_add(1, Ordering::Relaxed);
            last = entry.id;
        }
    }
    Ok(())
}

/// One naive shard: its own SQLite file, its hunters, and a Redis connection of its own.
struct NaiveShard {
    /// 0-based.
    index: u32,
    seed: u64,
    db: Arc<Mutex<rusqlite::Connection>>,
    /// Hunter number → (player, tier id, the tier's point multiplier).
    hunters: Arc<HashMap<usize, (String, u32, i64)>>,
    conn: MultiplexedConnection,
}

impl NaiveShard {
    /// Shard `index` (0-based) on `naive-{index}.sqlite` in `dir`.
    async fn open(
        hunt: &hunt::Options,
        client: &redis::Client,
        dir: &Path,
        index: u32,
    ) -> anyhow::Result<Self> {
        let db = rusqlite::Connection::open(dir.join(format!("naive-{index}.sqlite")))?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             CREATE TABLE events (seq INTEGER PRIMARY KEY, tier INTEGER, player TEXT, points INTEGER);",
        )?;
        let hunters = hunters_of(index, hunt.shards, hunt.hunters)
            .into_iter()
            .enumerate()
            .map(|(i, (player, tier))| (i, (player, tier.id, i64::from(tier.point_multiplier))))
            .collect();
        // A connection of its own per shard, as each shard process had: concurrent shards do
        // not share (and so pipeline) one connection.
        let conn = redis_target::connect(client).await?;
        Ok(Self {
            index,
            seed: hunt.seed,
            db: Arc::new(Mutex::new(db)),
            hunters: Arc::new(hunters),
            conn,
        })
    }

    /// Arrival `n`, intended at `due` (nanoseconds since the run's epoch): one `INSERT`, then one
    /// `XADD` round trip.
    fn append(&self, n: u64, due: u64) -> impl Future<Output = anyhow::Result<()>> + Send + use<> {
        let (db, hunters, mut conn) = (
            Arc::clone(&self.db),
            Arc::clone(&self.hunters),
            self.conn.clone(),
        );
        let (seed, index) = (self.seed, self.index);
        async move {
            let mut draw = Draw::new(seed, index + 1, n);
            let hunter = draw.below(hunters.len() as u64) as usize;
            let (player, tier, multiplier) = hunters.get(&hunter).context("hunter")?;
            let points = (draw.below(50) as i64 + 1) * multiplier;
            db.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .execute(
                    "INSERT INTO events (tier, player, points) VALUES (?1, ?2, ?3)",
                    rusqlite::params![tier, player, points],
                )?;
            let _: String = redis::cmd("XADD")
                .arg(keys::tier_baseline_stream(*tier))
                .arg("*")
                .arg("p")
                .arg(player)
                .arg("s")
                .arg(points)
                .arg("t")
                .arg(due)
                .query_async(&mut conn)
                .await?;
            Ok(())
        }
    }
}
