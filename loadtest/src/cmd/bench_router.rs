//! `loadtest bench-router`: how fast one tier router applies, how long an event takes from
//! `append` to visible in `GetTop`, and `GetTop`'s latency under load, beside a naive baseline
//! measured in the same run.
//!
//! Three phases on one Redis:
//! 1. **Apply rate.** Shard writers fill the five tier streams with no router running; then a
//!    router starts and the time until every applied mark reaches what was published is taken.
//!    The baseline applies a sample of the same entries the way the old systems did: one
//!    `ZINCRBY` round trip per event, no batching, no dedup.
//! 2. **End to end.** Shards append at `--rate` (open loop) while a probe shard appends, every
//!    10 ms, points for one probe player per tier that put it first; a `Watch` stream per tier
//!    sees each probe arrive. Latency runs from the probe's intended send time.
//! 3. **`GetTop` under load.** During phase 2, `GetTop` requests arrive open-loop at
//!    `--get-top-rate` over several HTTP/2 connections, each measured from its intended send time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use hunt_redis::stream;
use leaderboard_proto::v1::WatchRequest;
use leaderboard_proto::v1::leaderboard_service_client::LeaderboardServiceClient;
use leaderboard_proto::{keys, rewards};
use redis::aio::MultiplexedConnection;
use shard_writer::synthetic::EventGenerator;
use shard_writer::{ShardWriter, WriterConfig};
use tier_router::apply::score_change;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::harness::histogram::{self, max_millis, millis};
use crate::harness::leaderboard::get_top_load;
use crate::harness::marks::{self, committed_total};
use crate::harness::open_loop::Outcome;
use crate::harness::pipeline::{self, Router, Shards};
use crate::harness::probe::{PROBE_POINTS, probe_player, watched_score};
use crate::harness::redis_target::{self, RedisTarget, RedisUrl};

/// Options of `loadtest bench-router`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    redis: RedisUrl,
    /// Shards that fill the streams in phase 1 and append in phase 2.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    shards: u32,
    /// Events in the streams before the router starts (phase 1), over all shards.
    #[arg(long, default_value_t = 400_000, value_parser = clap::value_parser!(u64).range(1_000..=10_000_000))]
    events: u64,
    /// Distinct players.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    players: u32,
    /// Stream entries per `hunt_apply` call.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    apply_batch: u64,
    /// Events of the naive baseline (a sample of phase 1's entries).
    #[arg(long, default_value_t = 20_000)]
    baseline_events: u64,
    /// Background load of phase 2, in events/s over all shards (open loop); 0 for none.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// `GetTop` requests per second in phase 2 (open loop); 0 skips them.
    #[arg(long, default_value_t = 10_000)]
    get_top_rate: u64,
    /// Measured seconds of phase 2.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
}

/// `loadtest bench-router`: the three phases, then their table.
///
/// # Errors
/// When a part cannot be started or reached, marks do not catch up, or probes go missing.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let redis = args.redis.start()?;
    let client = redis.client()?;
    let mut conn = redis_target::connect(&client).await?;
    // Phase 1 measures a router catching up with full streams: the shards publish their whole
    // backlog before any router runs, so flow control (a window past the applied watermark) is
    // lifted for them and the streams are capped above the backlog, as if a router had fallen
    // that far behind.
    let backlog = args.events;
    let shards = Shards::open_with(&redis.url, 1..=args.shards, |mut config| {
        config.publish_window = u64::MAX / 4;
        config.stream_cap = config.stream_cap.max(backlog);
        config
    })
    .await?;
    let writers = &shards.writers;
    let (router, apply) = apply_rate(&args, &redis, &client, &mut conn, writers).await?;
    let e2e = end_to_end(&args, &router, writers, &redis.url, shards.dir()).await?;
    shards.shutdown().await?;
    if !router.shutdown(Duration::from_secs(10)).await {
        bail!("the router did not stop within 10 s");
    }
    print_table(&args, &apply, &e2e);
    Ok(())
}

/// What phase 1 measured.
struct ApplyRate {
    /// Events the router applied.
    total: u64,
    elapsed: Duration,
    /// Seconds Redis spent in `FCALL` meanwhile, when the Redis is private (its stats are ours).
    redis_busy: Option<f64>,
    /// Events/s of the naive baseline.
    baseline_rate: f64,
    /// CPU time per applied event during the catch-up (this process: mostly the router).
    cpu: crate::harness::cpu::PerEvent,
}

/// Phase 1: fill the streams, then time the router's catch-up, then the naive baseline. Returns
/// the router, which goes on running for phase 2.
async fn apply_rate(
    args: &Args,
    redis: &RedisTarget,
    client: &redis::Client,
    conn: &mut MultiplexedConnection,
    writers: &[ShardWriter],
) -> anyhow::Result<(Router, ApplyRate)> {
    let filled = Instant::now();
    fill(writers, args.events, args.players).await?;
    wait_published(conn, writers).await?;
    println!(
        "phase 1: {} events in the streams ({} shards, {} players) in {:.1} s",
        args.events,
        args.shards,
        args.players,
        filled.elapsed().as_secs_f64()
    );
    let private = redis.is_private();
    if private {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(conn)
            .await?;
    }
    let mut config = pipeline::loopback_router(&redis.url)?;
    config.apply_batch = usize::try_from(args.apply_batch)?;
    config.max_apply_batch = config.max_apply_batch.max(config.apply_batch);
    let cpu_before = crate::harness::cpu::Sample::now(conn).await;
    let started = Instant::now();
    let router = Router::embedded(config).await?;
    let total = wait_applied(conn, writers).await?;
    let elapsed = started.elapsed();
    let cpu = cpu_before.per_event(&crate::harness::cpu::Sample::now(conn).await, total);
    let redis_busy = if private {
        Some(fcall_seconds(conn).await?)
    } else {
        None
    };
    let (baseline_events, baseline_elapsed) =
        naive_baseline(conn, client, args.baseline_events).await?;
    let apply = ApplyRate {
        total,
        elapsed,
        redis_busy,
        baseline_rate: baseline_events as f64 / baseline_elapsed.as_secs_f64(),
        cpu,
    };
    Ok((router, apply))
}

/// The table of every phase.
fn print_table(args: &Args, apply: &ApplyRate, e2e: &EndToEnd) {
    let apply_rate = apply.total as f64 / apply.elapsed.as_secs_f64();
    let baseline_rate = apply.baseline_rate;
    println!();
    println!("| measure | result | goal |");
    println!("|---|---|---|");
    println!(
        "| events/s applied by one router over 5 tiers (batch {}) | {apply_rate:.0} | ≥ 150,000 |",
        args.apply_batch
    );
    println!(
        "| CPU µs per applied event: process (commit + rest: router, relays) / Redis | {} | |",
        apply.cpu.cells()
    );
    println!(
        "| naive baseline: one ZINCRBY round trip per event | {baseline_rate:.0} events/s | |"
    );
    println!(
        "| ratio | {:.1}× | |",
        apply_rate / baseline_rate.max(f64::MIN_POSITIVE)
    );
    if let Some(busy) = apply.redis_busy {
        println!(
            "| Redis time in FCALL per applied event | {:.2} µs ({:.0}% of the run) | |",
            busy * 1e6 / apply.total as f64,
            busy * 100.0 / apply.elapsed.as_secs_f64()
        );
    }
    println!(
        "| end to end, append → visible in GetTop, p50 / p99 / max ({} probes) | {:.1} / {:.1} / {:.1} ms | p99 < 50 ms |",
        e2e.visible.len(),
        millis(&e2e.visible, 0.50),
        millis(&e2e.visible, 0.99),
        max_millis(&e2e.visible)
    );
    println!(
        "| the same, from the actual append call (without the pacer's lateness), p50 / p99 | {:.1} / {:.1} ms | |",
        millis(&e2e.visible_from_append, 0.50),
        millis(&e2e.visible_from_append, 0.99)
    );
    if args.get_top_rate > 0 {
        println!(
            "| GetTop, from the actual send, p50 / p99 / p99.9 | {:.3} / {:.3} / {:.3} ms | |",
            millis(&e2e.get_top.service, 0.50),
            millis(&e2e.get_top.service, 0.99),
            millis(&e2e.get_top.service, 0.999)
        );
        println!(
            "| GetTop at {} req/s, p50 / p99 / p99.9 ({} requests, {} failed) | {:.3} / {:.3} / {:.3} ms | p99 < 2 ms |",
            args.get_top_rate,
            e2e.get_top.latency.len(),
            e2e.get_top.errors,
            millis(&e2e.get_top.latency, 0.50),
            millis(&e2e.get_top.latency, 0.99),
            millis(&e2e.get_top.latency, 0.999)
        );
    }
    println!(
        "| phase 2 background load | {:.0} events/s appended | |",
        e2e.background_rate
    );
    println!(
        "| phase 2: lateness of a 1 ms timer in this process, p50 / p99 / max | {:.2} / {:.2} / {:.2} ms | |",
        millis(&e2e.timer_lateness, 0.50),
        millis(&e2e.timer_lateness, 0.99),
        max_millis(&e2e.timer_lateness)
    );
}

/// Appends `events` over `writers`, 64 appending tasks per shard.
async fn fill(writers: &[ShardWriter], events: u64, players: u32) -> anyhow::Result<()> {
    let per_task = events / (writers.len() as u64 * 64);
    let mut tasks = tokio::task::JoinSet::new();
    for writer in writers {
        for task in 0..64u64 {
            let writer = writer.clone();
            let seed = u64::from(writer.shard_id()) * 1_000 + task;
            tasks.spawn(async move {
                let mut generator = EventGenerator::new(seed, players);
                for _ in 0..per_task {
                    writer.append(generator.next_event()).await?;
                }
                Ok::<(), shard_writer::AppendError>(())
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Waits until every committed event is in its stream.
async fn wait_published(
    conn: &mut MultiplexedConnection,
    writers: &[ShardWriter],
) -> anyhow::Result<()> {
    marks::wait_reached(
        conn,
        writers,
        keys::tier_published,
        Duration::from_secs(300),
    )
    .await?;
    Ok(())
}

/// Waits until the router applied every committed event; returns how many that is.
async fn wait_applied(
    conn: &mut MultiplexedConnection,
    writers: &[ShardWriter],
) -> anyhow::Result<u64> {
    marks::wait_reached(conn, writers, keys::tier_applied, Duration::from_secs(300)).await
}

/// Seconds Redis spent in `FCALL` since the last `CONFIG RESETSTAT`.
async fn fcall_seconds(conn: &mut MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    let usec = info
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_fcall:"))
        .and_then(|stats| {
            stats
                .split(',')
                .find_map(|field| field.strip_prefix("usec="))
        })
        .and_then(|usec| usec.parse::<f64>().ok())
        .unwrap_or(0.0);
    Ok(usec / 1e6)
}

/// The old way: per event, one `ZINCRBY` round trip, awaited before the next; no dedup.
/// Reads up to `events` entries from the tier streams first (not timed).
async fn naive_baseline(
    conn: &mut MultiplexedConnection,
    client: &redis::Client,
    events: u64,
) -> anyhow::Result<(u64, Duration)> {
    let per_tier = (events / rewards::TIERS.len() as u64).max(1);
    let mut sample = Vec::new();
    for tier in rewards::tier_ids() {
        let entries: Vec<stream::RawEntry> = redis::cmd("XRANGE")
            .arg(keys::tier_stream(tier))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(per_tier)
            .query_async(conn)
            .await?;
        for entry in entries {
            let (_, event) = stream::decode(entry)?;
            let (player, points) = score_change(&event, tier);
            sample.push((tier, player.to_owned(), points));
        }
    }
    let mut naive = redis_target::connect(client).await?;
    let started = Instant::now();
    for (tier, player, points) in &sample {
        let _: f64 = redis::cmd("ZINCRBY")
            .arg(keys::tier_baseline(*tier))
            .arg(*points)
            .arg(player)
            .query_async(&mut naive)
            .await?;
    }
    Ok((sample.len() as u64, started.elapsed()))
}

/// What phases 2 and 3 measured.
struct EndToEnd {
    /// How late a 1 ms timer fired in this process during phase 2.
    timer_lateness: Histogram<u64>,
    visible: Histogram<u64>,
    /// From each probe's actual `append` call, not its intended time.
    visible_from_append: Histogram<u64>,
    /// `GetTop` under load: latency from the intended send, and from the actual send.
    get_top: Outcome,
    background_rate: f64,
}

/// Per tier, the probes not seen yet: (the probe player's score once it lands, intended send
/// time, actual `append` call).
type Pending = VecDeque<(i64, Instant, Instant)>;

/// The probes sent and when the `Watch` streams saw them.
struct Sightings {
    /// Per tier (reward table index).
    pending: Mutex<Vec<Pending>>,
    /// From each probe's intended send time.
    visible: Mutex<Histogram<u64>>,
    /// From each probe's actual `append` call.
    from_append: Mutex<Histogram<u64>>,
}

impl Sightings {
    fn new() -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            pending: Mutex::new(vec![VecDeque::new(); rewards::TIERS.len()]),
            visible: Mutex::new(histogram::new()?),
            from_append: Mutex::new(histogram::new()?),
        }))
    }

    /// A probe of tier `index` that puts the probe player at `score`, due at `intended`, is being
    /// appended now.
    fn sent(&self, index: usize, score: i64, intended: Instant) {
        if let Ok(mut pending) = self.pending.lock()
            && let Some(queue) = pending.get_mut(index)
        {
            queue.push_back((score, intended, Instant::now()));
        }
    }

    /// Whether some probe has not been seen yet.
    fn waiting(&self) -> bool {
        self.pending
            .lock()
            .map(|p| p.iter().any(|q| !q.is_empty()))
            .unwrap_or(false)
    }

    /// A `Watch` stream per tier over `channel`, each recording the probes it sees, until `stop`
    /// (or the stream ends).
    async fn watch(
        self: &Arc<Self>,
        channel: &Channel,
        stop: &CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinSet<()>> {
        let mut watchers = tokio::task::JoinSet::new();
        for (index, tier) in rewards::TIERS.iter().enumerate() {
            let mut grpc = LeaderboardServiceClient::new(channel.clone());
            let mut updates = grpc
                .watch(WatchRequest {
                    tier: tier.id,
                    ..WatchRequest::default()
                })
                .await?
                .into_inner();
            let (sightings, stop) = (Arc::clone(self), stop.clone());
            let probe_player = probe_player(tier.id);
            watchers.spawn(async move {
                loop {
                    let update = tokio::select! {
                        update = updates.message() => update,
                        () = stop.cancelled() => return,
                    };
                    let Ok(Some(update)) = update else { return };
                    let Some(score) = watched_score(update, &probe_player) else {
                        continue;
                    };
                    if !sightings.saw(index, score) {
                        return;
                    }
                }
            });
        }
        Ok(watchers)
    }

    /// Records every probe of tier `index` up to `score` as seen now; false when the records
    /// cannot be reached.
    fn saw(&self, index: usize, score: i64) -> bool {
        let now = Instant::now();
        let (Ok(mut pending), Ok(mut visible), Ok(mut from_append)) = (
            self.pending.lock(),
            self.visible.lock(),
            self.from_append.lock(),
        ) else {
            return false;
        };
        let Some(queue) = pending.get_mut(index) else {
            return false;
        };
        while queue.front().is_some_and(|(want, _, _)| *want <= score) {
            if let Some((_, intended, appended)) = queue.pop_front() {
                let _ = visible.record(now.duration_since(intended).as_nanos() as u64);
                let _ = from_append.record(now.duration_since(appended).as_nanos() as u64);
            }
        }
        true
    }
}

/// Background load: open loop at `rate` events/s over `writers`, each shard on its own schedule,
/// appending without waiting for each commit, until `stop`. Each task returns its appends.
fn background_load(
    writers: &[ShardWriter],
    rate: u64,
    players: u32,
    stop: &CancellationToken,
) -> tokio::task::JoinSet<u64> {
    let mut background = tokio::task::JoinSet::new();
    let per_shard = rate as f64 / writers.len() as f64;
    for writer in writers.iter().filter(|_| rate > 0) {
        let (writer, stop) = (writer.clone(), stop.clone());
        background.spawn(async move {
            let mut generator = EventGenerator::new(u64::from(writer.shard_id()) + 77, players);
            let started = tokio::time::Instant::now();
            let mut sent = 0u64;
            while !stop.is_cancelled() {
                let due = started + Duration::from_secs_f64(sent as f64 / per_shard);
                tokio::time::sleep_until(due).await;
                // Everything due by now, without waiting for each commit.
                while started + Duration::from_secs_f64(sent as f64 / per_shard)
                    <= tokio::time::Instant::now()
                {
                    if writer.try_append(generator.next_event()).is_ok() {
                        sent += 1;
                    } else {
                        tokio::task::yield_now().await;
                        break;
                    }
                }
            }
            sent
        });
    }
    background
}

/// How late a 1 ms timer fires in this process until `stop`: a stalled runtime or machine shows
/// here.
fn timer_lateness(
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<Histogram<u64>>> {
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut lateness = histogram::new()?;
        while !stop.is_cancelled() {
            let due = tokio::time::Instant::now() + Duration::from_millis(1);
            tokio::time::sleep_until(due).await;
            let _ = lateness.record(due.elapsed().as_nanos() as u64);
        }
        Ok(lateness)
    })
}

/// Phases 2 and 3: the background load, the probes and their `Watch` streams, and `GetTop`
/// under load, measured for `--seconds` after a warm-up second.
async fn end_to_end(
    args: &Args,
    router: &Router,
    writers: &[ShardWriter],
    redis_url: &str,
    dir: &std::path::Path,
) -> anyhow::Result<EndToEnd> {
    let stop = CancellationToken::new();
    let mut background = background_load(writers, args.rate, args.players, &stop);

    // Probes, and a watcher per tier that sees them arrive.
    let probe =
        ShardWriter::open(WriterConfig::new(dir.join("probe.sqlite"), 1_000).with_redis(redis_url))
            .await?;
    let channel = Channel::from_shared(format!("http://{}", router.grpc))?
        .connect()
        .await?;
    let sightings = Sightings::new()?;
    let mut watchers = sightings.watch(&channel, &stop).await?;

    let get_top = if args.get_top_rate > 0 {
        Some(tokio::spawn(get_top_load(
            router.grpc,
            args.get_top_rate,
            4,
            stop.clone(),
        )))
    } else {
        None
    };
    let lag_probe = timer_lateness(&stop);

    // Warm up one second, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let measured_from = committed_total(writers);
    let started = Instant::now();
    let mut probes = 0u64;
    let mut scores = vec![0i64; rewards::TIERS.len()];
    while started.elapsed() < Duration::from_secs(args.seconds) {
        let due = started + Duration::from_millis(10 * probes);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        let index = (probes % rewards::TIERS.len() as u64) as usize;
        let tier = rewards::TIERS[index].id;
        scores[index] += PROBE_POINTS;
        sightings.sent(index, scores[index], due);
        probe
            .append(hunt_testkit::score(tier, &probe_player(tier), PROBE_POINTS))
            .await?;
        probes += 1;
    }
    let measured = started.elapsed();
    let background_events = committed_total(writers) - measured_from;
    // Let the last probes arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sightings.waiting() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    while background.join_next().await.is_some() {}
    while watchers.join_next().await.is_some() {}
    let get_top = match get_top {
        Some(task) => task.await??,
        None => Outcome::empty()?,
    };
    let timer_lateness = lag_probe.await??;
    probe.shutdown().await?;
    let visible = histogram::snapshot(&sightings.visible)?;
    if visible.len() < probes {
        bail!(
            "only {} of {probes} probes became visible within 10 s of the end",
            visible.len()
        );
    }
    Ok(EndToEnd {
        timer_lateness,
        visible,
        visible_from_append: histogram::snapshot(&sightings.from_append)?,
        get_top,
        background_rate: background_events as f64 / measured.as_secs_f64(),
    })
}
