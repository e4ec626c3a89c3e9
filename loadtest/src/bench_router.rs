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

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use hunt_redis::stream;
use leaderboard_proto::v1::leaderboard_client::LeaderboardClient;
use leaderboard_proto::v1::{GetTopRequest, WatchRequest, watch_update};
use leaderboard_proto::{keys, rewards};
use shard_writer::synthetic::EventGenerator;
use shard_writer::{ShardWriter, WriterConfig};
use tier_router::apply::score_change;
use tier_router::{App, AppHandle, RouterConfig};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::bench_writer::new_histogram;
use crate::redis_target::RedisTarget;

/// Options of `loadtest bench-router`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Redis to use; without it a private redis-server is started on a free port.
    #[arg(long, env = "HUNT_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
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

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let redis = RedisTarget::new(args.redis_url.clone())?;
    let dir = tempfile::tempdir().context("creating a directory for the shard files")?;
    let client = redis::Client::open(redis.url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;

    // Phase 1: fill the streams, then time the router's catch-up.
    let writers = open_writers(&redis.url, dir.path(), args.shards).await?;
    let filled = Instant::now();
    fill(&writers, args.events, args.players).await?;
    wait_published(&mut conn, &writers).await?;
    println!(
        "phase 1: {} events in the streams ({} shards, {} players) in {:.1} s",
        args.events,
        args.shards,
        args.players,
        filled.elapsed().as_secs_f64()
    );
    let private = args.redis_url.is_none();
    if private {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await?;
    }
    let mut config = RouterConfig::new(redis.url.clone());
    config.grpc_addr = "127.0.0.1:0".parse()?;
    config.http_addr = "127.0.0.1:0".parse()?;
    config.apply_batch = usize::try_from(args.apply_batch)?;
    config.max_apply_batch = config.max_apply_batch.max(config.apply_batch);
    let started = Instant::now();
    let router = App::build(config).await?.spawn();
    let total = wait_applied(&mut conn, &writers).await?;
    let apply_elapsed = started.elapsed();
    let redis_busy = if private {
        Some(fcall_seconds(&mut conn).await?)
    } else {
        None
    };
    let apply_rate = total as f64 / apply_elapsed.as_secs_f64();
    let (baseline_events, baseline_elapsed) =
        naive_baseline(&mut conn, &client, args.baseline_events).await?;
    let baseline_rate = baseline_events as f64 / baseline_elapsed.as_secs_f64();

    // Phases 2 and 3.
    let e2e = end_to_end(&args, &router, &writers, &redis.url, dir.path()).await?;
    for writer in &writers {
        writer.shutdown().await?;
    }
    if !router.shutdown(Duration::from_secs(10)).await {
        bail!("the router did not stop within 10 s");
    }

    let millis = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
    println!();
    println!("| measure | result | goal |");
    println!("|---|---|---|");
    println!(
        "| events/s applied by one router over 5 tiers (batch {}) | {apply_rate:.0} | ≥ 100,000 |",
        args.apply_batch
    );
    println!(
        "| naive baseline: one ZINCRBY round trip per event | {baseline_rate:.0} events/s | |"
    );
    println!(
        "| ratio | {:.1}× | |",
        apply_rate / baseline_rate.max(f64::MIN_POSITIVE)
    );
    if let Some(busy) = redis_busy {
        println!(
            "| Redis time in FCALL per applied event | {:.2} µs ({:.0}% of the run) | |",
            busy * 1e6 / total as f64,
            busy * 100.0 / apply_elapsed.as_secs_f64()
        );
    }
    println!(
        "| end to end, append → visible in GetTop, p50 / p99 / max ({} probes) | {:.1} / {:.1} / {:.1} ms | p99 < 50 ms |",
        e2e.visible.len(),
        millis(&e2e.visible, 0.50),
        millis(&e2e.visible, 0.99),
        e2e.visible.max() as f64 / 1e6
    );
    println!(
        "| the same, from the actual append call (without the pacer's lateness), p50 / p99 | {:.1} / {:.1} ms | |",
        millis(&e2e.visible_from_append, 0.50),
        millis(&e2e.visible_from_append, 0.99)
    );
    if args.get_top_rate > 0 {
        println!(
            "| GetTop, from the actual send, p50 / p99 / p99.9 | {:.3} / {:.3} / {:.3} ms | |",
            millis(&e2e.get_top_service, 0.50),
            millis(&e2e.get_top_service, 0.99),
            millis(&e2e.get_top_service, 0.999)
        );
        println!(
            "| GetTop at {} req/s, p50 / p99 / p99.9 ({} requests, {} failed) | {:.3} / {:.3} / {:.3} ms | p99 < 2 ms |",
            args.get_top_rate,
            e2e.get_top.len(),
            e2e.get_top_errors,
            millis(&e2e.get_top, 0.50),
            millis(&e2e.get_top, 0.99),
            millis(&e2e.get_top, 0.999)
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
        e2e.timer_lateness.max() as f64 / 1e6
    );
    Ok(())
}

async fn open_writers(
    redis_url: &str,
    dir: &std::path::Path,
    shards: u32,
) -> anyhow::Result<Vec<ShardWriter>> {
    let mut writers = Vec::new();
    for shard in 1..=shards {
        let config = WriterConfig::new(dir.join(format!("shard-{shard}.sqlite")), shard)
            .with_redis(redis_url);
        writers.push(ShardWriter::open(config).await?);
    }
    Ok(writers)
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

/// Events committed by `writers`, per (shard, tier).
fn committed(writers: &[ShardWriter]) -> Vec<(u32, u32, u64)> {
    writers
        .iter()
        .flat_map(|w| {
            rewards::tier_ids().map(|tier| (w.shard_id(), tier, w.committed_tier_seq(tier)))
        })
        .collect()
}

/// Waits until every committed event is in its stream.
async fn wait_published(
    conn: &mut redis::aio::MultiplexedConnection,
    writers: &[ShardWriter],
) -> anyhow::Result<()> {
    wait_marks(
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
    conn: &mut redis::aio::MultiplexedConnection,
    writers: &[ShardWriter],
) -> anyhow::Result<u64> {
    wait_marks(conn, writers, keys::tier_applied, Duration::from_secs(300)).await
}

/// Polls the `marks` hashes until each (shard, tier) reaches what its writer committed.
async fn wait_marks(
    conn: &mut redis::aio::MultiplexedConnection,
    writers: &[ShardWriter],
    marks: fn(u32) -> String,
    limit: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(total) = marks_reached(conn, writers, marks).await? {
            return Ok(total);
        }
        if Instant::now() >= deadline {
            bail!("marks did not reach what was committed within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Whether each (shard, tier) of `writers` has its mark in the `marks` hashes at or above what it
/// committed: `Some(events committed)` when they all have, `None` otherwise.
pub(crate) async fn marks_reached(
    conn: &mut redis::aio::MultiplexedConnection,
    writers: &[ShardWriter],
    marks: fn(u32) -> String,
) -> anyhow::Result<Option<u64>> {
    let want = committed(writers);
    let mut pipe = redis::pipe();
    for (shard, tier, _) in &want {
        pipe.hget(marks(*tier), keys::shard_field(*shard));
    }
    let got: Vec<Option<u64>> = pipe.query_async(conn).await?;
    let reached = want
        .iter()
        .zip(&got)
        .all(|((_, _, want), got)| got.unwrap_or(0) >= *want);
    Ok(reached.then(|| committed_total(writers)))
}

/// Events committed by `writers`, over every shard and tier.
pub(crate) fn committed_total(writers: &[ShardWriter]) -> u64 {
    committed(writers).iter().map(|(_, _, n)| n).sum()
}

/// Seconds Redis spent in `FCALL` since the last `CONFIG RESETSTAT`.
async fn fcall_seconds(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
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
    conn: &mut redis::aio::MultiplexedConnection,
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
    let mut naive = client.get_multiplexed_async_connection().await?;
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

struct EndToEnd {
    /// How late a 1 ms timer fired in this process during phase 2.
    timer_lateness: Histogram<u64>,
    visible: Histogram<u64>,
    /// From each probe's actual `append` call, not its intended time.
    visible_from_append: Histogram<u64>,
    get_top: Histogram<u64>,
    /// From each request's actual send, not its intended time.
    get_top_service: Histogram<u64>,
    get_top_errors: u64,
    background_rate: f64,
}

/// Per tier, the probes not seen yet: (the probe player's score once it lands, intended send
/// time, actual `append` call).
type Probes = VecDeque<(i64, Instant, Instant)>;

/// Points per probe: far above any hunter, so the probe player leads its tier.
pub(crate) const PROBE_POINTS: i64 = 1_000_000_000;

async fn end_to_end(
    args: &Args,
    router: &AppHandle,
    writers: &[ShardWriter],
    redis_url: &str,
    dir: &std::path::Path,
) -> anyhow::Result<EndToEnd> {
    let stop = CancellationToken::new();
    // Background load: open loop, each shard on its own schedule.
    let mut background = tokio::task::JoinSet::new();
    let per_shard = args.rate as f64 / writers.len() as f64;
    for writer in writers.iter().filter(|_| args.rate > 0) {
        let (writer, stop) = (writer.clone(), stop.clone());
        let players = args.players;
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

    // Probes, and a watcher per tier that sees them arrive.
    let probe =
        ShardWriter::open(WriterConfig::new(dir.join("probe.sqlite"), 1_000).with_redis(redis_url))
            .await?;
    let channel = Channel::from_shared(format!("http://{}", router.grpc_addr()))?
        .connect()
        .await?;
    let pending: Arc<Mutex<Vec<Probes>>> =
        Arc::new(Mutex::new(vec![VecDeque::new(); rewards::TIERS.len()]));
    let visible = Arc::new(Mutex::new(new_histogram()?));
    let visible_from_append = Arc::new(Mutex::new(new_histogram()?));
    let mut watchers = tokio::task::JoinSet::new();
    for (index, tier) in rewards::TIERS.iter().enumerate() {
        let mut grpc = LeaderboardClient::new(channel.clone());
        let mut updates = grpc
            .watch(WatchRequest { tier: tier.id })
            .await?
            .into_inner();
        let (pending, visible, from_append, stop) = (
            Arc::clone(&pending),
            Arc::clone(&visible),
            Arc::clone(&visible_from_append),
            stop.clone(),
        );
        let probe_player = probe_player(tier.id);
        watchers.spawn(async move {
            loop {
                let update = tokio::select! {
                    update = updates.message() => update,
                    () = stop.cancelled() => return,
                };
                let Ok(Some(update)) = update else { return };
                let entries = match update.update {
                    Some(watch_update::Update::Snapshot(s)) => s.entries,
                    Some(watch_update::Update::Delta(d)) => d.upserts,
                    None => continue,
                };
                let Some(score) = entries
                    .iter()
                    .find(|e| e.player_id == probe_player)
                    .map(|e| e.score)
                else {
                    continue;
                };
                let now = Instant::now();
                let (Ok(mut pending), Ok(mut visible), Ok(mut from_append)) =
                    (pending.lock(), visible.lock(), from_append.lock())
                else {
                    return;
                };
                let Some(queue) = pending.get_mut(index) else {
                    return;
                };
                while queue.front().is_some_and(|(want, _, _)| *want <= score) {
                    if let Some((_, intended, appended)) = queue.pop_front() {
                        let _ = visible.record(now.duration_since(intended).as_nanos() as u64);
                        let _ = from_append.record(now.duration_since(appended).as_nanos() as u64);
                    }
                }
            }
        });
    }

    let get_top = if args.get_top_rate > 0 {
        Some(tokio::spawn(get_top_load(
            router.grpc_addr(),
            args.get_top_rate,
            4,
            stop.clone(),
        )))
    } else {
        None
    };

    // How late a 1 ms timer fires in this process: a stalled runtime or machine shows here.
    let lag_probe = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut lateness = new_histogram()?;
            while !stop.is_cancelled() {
                let due = tokio::time::Instant::now() + Duration::from_millis(1);
                tokio::time::sleep_until(due).await;
                let _ = lateness.record(due.elapsed().as_nanos() as u64);
            }
            Ok::<_, anyhow::Error>(lateness)
        })
    };

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
        if let Ok(mut pending) = pending.lock()
            && let Some(queue) = pending.get_mut(index)
        {
            queue.push_back((scores[index], due, Instant::now()));
        }
        probe
            .append(hunt_testkit::score(tier, &probe_player(tier), PROBE_POINTS))
            .await?;
        probes += 1;
    }
    let measured = started.elapsed();
    let background_events = committed_total(writers) - measured_from;
    // Let the last probes arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending
        .lock()
        .map(|p| p.iter().any(|q| !q.is_empty()))
        .unwrap_or(false)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    while background.join_next().await.is_some() {}
    while watchers.join_next().await.is_some() {}
    let (get_top, get_top_service, get_top_errors) = match get_top {
        Some(task) => task.await??,
        None => (new_histogram()?, new_histogram()?, 0),
    };
    let timer_lateness = lag_probe.await??;
    probe.shutdown().await?;
    let visible = visible
        .lock()
        .map(|h| h.clone())
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    if visible.len() < probes {
        bail!(
            "only {} of {probes} probes became visible within 10 s of the end",
            visible.len()
        );
    }
    let visible_from_append = visible_from_append
        .lock()
        .map(|h| h.clone())
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    Ok(EndToEnd {
        timer_lateness,
        visible,
        visible_from_append,
        get_top,
        get_top_service,
        get_top_errors,
        background_rate: background_events as f64 / measured.as_secs_f64(),
    })
}

pub(crate) fn probe_player(tier: u32) -> String {
    format!("probe-t{tier}")
}

/// `GetTop` (top 10 of a tier, round robin) at `rate` requests/s, each measured from its intended
/// send time, over `connections` HTTP/2 connections, with at most 1,000 in flight, until `stop`.
/// Returns the latencies from the intended send, from the actual send, and the failures.
pub(crate) async fn get_top_load(
    addr: std::net::SocketAddr,
    rate: u64,
    connections: u64,
    stop: CancellationToken,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>, u64)> {
    let connections = connections.max(1);
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(LeaderboardClient::new(
            Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        ));
    }
    let latency = Arc::new(Mutex::new(new_histogram()?));
    let service = Arc::new(Mutex::new(new_histogram()?));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(1_000));
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    // Skip the warm-up second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    while !stop.is_cancelled() {
        let due = started + interval.mul_f64(sent as f64);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        while started + interval.mul_f64(sent as f64) <= Instant::now() {
            let intended = started + interval.mul_f64(sent as f64);
            let mut client = clients[(sent % connections) as usize].clone();
            let tier = rewards::TIERS[(sent % rewards::TIERS.len() as u64) as usize].id;
            let permit = Arc::clone(&in_flight).acquire_owned().await?;
            let (latency, service, errors) = (
                Arc::clone(&latency),
                Arc::clone(&service),
                Arc::clone(&errors),
            );
            tasks.spawn(async move {
                let sent_at = Instant::now();
                let reply = client
                    .get_top(GetTopRequest {
                        tier,
                        offset: 0,
                        limit: 10,
                    })
                    .await;
                let took = intended.elapsed().as_nanos() as u64;
                let served = sent_at.elapsed().as_nanos() as u64;
                drop(permit);
                if reply.is_ok() {
                    if let Ok(mut latency) = latency.lock() {
                        let _ = latency.record(took);
                    }
                    if let Ok(mut service) = service.lock() {
                        let _ = service.record(served);
                    }
                } else {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            sent += 1;
            while tasks.try_join_next().is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
    let latency = latency
        .lock()
        .map(|h| h.clone())
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let service = service
        .lock()
        .map(|h| h.clone())
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    Ok((
        latency,
        service,
        errors.load(std::sync::atomic::Ordering::Relaxed),
    ))
}
