//! `loadtest run`: a global treasure hunt through the whole pipeline, measured, then checked
//! against the shards' own logs.
//!
//! - S shards, each a [`ShardWriter`] with its own SQLite file, take arrivals open-loop at
//!   `rate / S` per second each; an arrival is timed from its intended time, and when a shard's
//!   in-flight bound is hit the arrival waits and the wait counts in its latency.
//! - H hunters: hunter h plays on shard `h mod S` in tier `(h / S) mod T`.
//! - Arrivals: 95% `ScoreGained` (base points × the tier's multiplier); 3% a clue attempt on the
//!   current wave (`claim_clue`; only a `Won` appends a `ClueSolved` with its token); 2% a chest
//!   award on a chest key shared by every shard and tier, so awards collide: even shards claim
//!   the chest first (`claim_chest`) and award only when they win, odd shards award blindly and
//!   leave the duplicates to the router's saga. A wave opener opens the next wave's clues
//!   (`open_wave`) every `--wave-seconds`.
//! - A probe shard measures append → visible in `Watch` and in WebSocket frames; G connections
//!   send `GetTop` open-loop; W WebSocket spectators follow the tiers.
//! - Afterwards the run waits (bounded) until every committed event is applied and no award is
//!   pending, then runs the checks of [`crate::ground_truth`].
//!
//! Every random choice comes from a fixed seed, so two runs offer the same events.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use leaderboard_proto::keys;
use leaderboard_proto::rewards::{self, Tier};
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::v1::leaderboard_client::LeaderboardClient;
use leaderboard_proto::v1::{ClueSolved, HuntEvent, ScoreGained, TreasureAwarded};
use shard_writer::{ChestClaim, ClueClaim, ShardWriter, WriterConfig};
use tier_router::{App, AppHandle, RouterConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::bench_router::{committed_total, marks_reached};
use crate::bench_writer::new_histogram;
use crate::ground_truth::{self, Check};
use crate::open_loop;
use crate::probe::{self, Probes};
use crate::redis_target::RedisTarget;
use crate::report::{Latency, Report};
use crate::timeline::Timeline;

/// Options of `loadtest run` (and of `loadtest baseline`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Redis to use; without it a private redis-server is started on a free port. It must hold
    /// no leaderboards yet.
    #[arg(long, env = "HUNT_REDIS_URL", hide_env_values = true)]
    pub(crate) redis_url: Option<String>,
    /// gRPC address of a running tier router (host:port) to use instead of an in-process one;
    /// needs `--redis-url` (its Redis) and `--router-http`.
    #[arg(long, requires_all = ["redis_url", "router_http"])]
    pub(crate) router_grpc: Option<SocketAddr>,
    /// HTTP address (WebSocket `/ws`) of that running router.
    #[arg(long, requires = "router_grpc")]
    pub(crate) router_http: Option<SocketAddr>,
    /// Shards, each a shard writer with its own SQLite file.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub(crate) shards: u32,
    /// Simulated hunters, spread over shards and tiers.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub(crate) hunters: u32,
    /// Offered load: arrivals per second over all shards (open loop).
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub(crate) rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) seconds: u64,
    /// Clues per map (per tier and wave).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub(crate) clues_per_map: u32,
    /// Seconds between two waves.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub(crate) wave_seconds: u64,
    /// Chest keys per wave, shared by every shard and tier.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) chests_per_wave: u32,
    /// gRPC reader connections sending `GetTop`.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub(crate) readers: u64,
    /// `GetTop` requests per second over all readers (open loop); 0 sends none.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) get_top_rate: u64,
    /// WebSocket spectators, round robin over the tiers.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub(crate) spectators: u32,
    /// Arrivals in flight per shard before the next one waits.
    #[arg(long, default_value_t = 1_024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) max_in_flight: u64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Longest wait after the load for every event to be applied and every award settled.
    #[arg(long, default_value_t = 120)]
    pub(crate) settle_seconds: u64,
    /// Where to write the JSON report.
    #[arg(long, default_value = "loadtest-run.json")]
    pub(crate) json: PathBuf,
    /// Where to write the SVG chart of throughput and p99 over time.
    #[arg(long, default_value = "loadtest-run.svg")]
    pub(crate) svg: PathBuf,
}

/// `loadtest run`: the hunt, the report, and a failure when any check fails.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let report = execute(&args).await?;
    finish(&report, &args)
}

/// Prints the table, writes the JSON and the chart, and fails when a check failed.
///
/// # Errors
/// When a file cannot be written, or naming every failed check.
pub(crate) fn finish(report: &Report, args: &Args) -> anyhow::Result<()> {
    report.print_table();
    report.write(&args.json, &args.svg)?;
    println!("report: {} and {}", args.json.display(), args.svg.display());
    fail_on_checks(&report.checks)
}

/// An error naming every failed check.
pub(crate) fn fail_on_checks(checks: &[Check]) -> anyhow::Result<()> {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("correctness checks failed:\n  {}", failed.join("\n  "))
    }
}

/// Base points of a solved clue, before the tier's multiplier.
const CLUE_POINTS: i64 = 100;

/// Deterministic choices for one arrival (splitmix64 over seed, shard and arrival number).
pub(crate) struct Draw(u64);

impl Draw {
    pub(crate) fn new(seed: u64, shard: u32, n: u64) -> Self {
        Self(seed ^ (u64::from(shard) << 40) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound.max(1)
    }
}

/// What every shard's arrivals share.
struct Hunt {
    wave: AtomicU32,
    clues_per_map: u32,
    chests_per_wave: u32,
    seed: u64,
}

fn clue_id(tier: u32, wave: u32, clue: u64) -> String {
    format!("w{wave}-t{tier}-c{clue}")
}

fn clue_ids(tier: u32, wave: u32, clues: u32) -> Vec<String> {
    (0..u64::from(clues))
        .map(|c| clue_id(tier, wave, c))
        .collect()
}

fn event(tier: u32, kind: Kind) -> HuntEvent {
    HuntEvent {
        tier,
        kind: Some(kind),
        ..HuntEvent::default()
    }
}

/// One arrival `n` of `writer`'s shard for one of `hunters`.
async fn arrival(
    writer: ShardWriter,
    hunters: Arc<Vec<(String, &'static Tier)>>,
    hunt: Arc<Hunt>,
    n: u64,
) -> anyhow::Result<()> {
    let mut draw = Draw::new(hunt.seed, writer.shard_id(), n);
    let (player, tier) = &hunters[draw.below(hunters.len() as u64) as usize];
    let roll = draw.below(100);
    let wave = hunt.wave.load(Ordering::Acquire);
    if roll < 3 {
        let clue = clue_id(tier.id, wave, draw.below(u64::from(hunt.clues_per_map)));
        if let ClueClaim::Won { token, .. } = writer.claim_clue(&clue, player).await? {
            let solved = ClueSolved {
                clue_id: clue,
                player_id: player.clone(),
                token,
                points: tier.points(CLUE_POINTS).unwrap_or(CLUE_POINTS),
            };
            writer
                .append(event(tier.id, Kind::ClueSolved(solved)))
                .await?;
        }
        return Ok(());
    }
    if roll < 5 && !tier.chest_types.is_empty() {
        let chest = tier.chest_types[draw.below(tier.chest_types.len() as u64) as usize];
        let chest_key = format!(
            "chest-w{wave}-{}",
            draw.below(u64::from(hunt.chests_per_wave))
        );
        let award_id = writer.award_id();
        if writer.shard_id().is_multiple_of(2)
            && matches!(
                writer
                    .claim_chest(tier.id, chest.name, &chest_key, &award_id)
                    .await?,
                ChestClaim::Held { .. }
            )
        {
            return Ok(());
        }
        let awarded = TreasureAwarded {
            chest_key,
            award_id,
            player_id: player.clone(),
            points: chest.points,
        };
        writer
            .append(event(tier.id, Kind::TreasureAwarded(awarded)))
            .await?;
        return Ok(());
    }
    let base = draw.below(50) as i64 + 1;
    let gained = ScoreGained {
        player_id: player.clone(),
        points: tier.points(base).unwrap_or(base),
    };
    writer
        .append(event(tier.id, Kind::ScoreGained(gained)))
        .await?;
    Ok(())
}

/// The hunters of shard `index` (0-based) of `shards`.
pub(crate) fn hunters_of(index: u32, shards: u32, hunters: u32) -> Vec<(String, &'static Tier)> {
    (index..hunters)
        .step_by(shards as usize)
        .map(|h| {
            let tier = &rewards::TIERS[(h / shards) as usize % rewards::TIERS.len()];
            (format!("hunter-{h}"), tier)
        })
        .collect()
}

/// The router the run talks to, and the in-process one when it started it.
struct Router {
    grpc: SocketAddr,
    http: SocketAddr,
    own: Option<AppHandle>,
}

async fn router(args: &Args, redis_url: &str) -> anyhow::Result<Router> {
    if let (Some(grpc), Some(http)) = (args.router_grpc, args.router_http) {
        return Ok(Router {
            grpc,
            http,
            own: None,
        });
    }
    let mut config = RouterConfig::new(redis_url.to_owned());
    config.grpc_addr = "127.0.0.1:0".parse()?;
    config.http_addr = "127.0.0.1:0".parse()?;
    config.saga_interval = Duration::from_secs(1);
    config.ws.max_connections = config.ws.max_connections.max(args.spectators as usize + 16);
    let app = App::build(config)
        .await
        .context("starting the in-process tier router")?;
    let (grpc, http) = (app.grpc_addr(), app.http_addr());
    Ok(Router {
        grpc,
        http,
        own: Some(app.spawn()),
    })
}

/// Refuses a Redis that already holds leaderboards: the checks need a hunt of their own.
async fn ensure_empty(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<()> {
    let mut cmd = redis::cmd("EXISTS");
    for tier in rewards::tier_ids() {
        cmd.arg(keys::tier_scores(tier))
            .arg(keys::tier_applied(tier));
    }
    let existing: u64 = cmd.query_async(conn).await?;
    if existing > 0 {
        bail!(
            "the Redis given already holds leaderboards (hunt:{{t<N>}}:scores or :applied keys); \
             loadtest run checks its own hunt against its own shard logs and needs a Redis \
             without any: point --redis-url at an empty one"
        );
    }
    Ok(())
}

/// Sum of the applied marks of every tier.
async fn applied_total(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let mut pipe = redis::pipe();
    for tier in rewards::tier_ids() {
        pipe.hvals(keys::tier_applied(tier));
    }
    let marks: Vec<Vec<u64>> = pipe.query_async(conn).await?;
    Ok(marks.iter().flatten().sum())
}

/// Awards the saga has not finished, over every tier.
async fn awards_pending(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let mut pipe = redis::pipe();
    for tier in rewards::tier_ids() {
        pipe.zcard(keys::tier_awards_pending(tier));
    }
    let pending: Vec<u64> = pipe.query_async(conn).await?;
    Ok(pending.iter().sum())
}

/// Whether every (shard, tier) of `writers` is applied up to what it committed.
async fn applied_all(
    conn: &mut redis::aio::MultiplexedConnection,
    writers: &[ShardWriter],
) -> anyhow::Result<bool> {
    Ok(marks_reached(conn, writers, keys::tier_applied)
        .await?
        .is_some())
}

/// Whether every event `writers` committed is applied and no award waits for the saga.
///
/// # Errors
/// The Redis error.
pub(crate) async fn settled(
    conn: &mut redis::aio::MultiplexedConnection,
    writers: &[ShardWriter],
) -> anyhow::Result<bool> {
    Ok(applied_all(conn, writers).await? && awards_pending(conn).await? == 0)
}

fn progress_bar(seconds: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(seconds);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Runs the hunt and its checks; the report says what was measured and which checks held.
///
/// # Errors
/// When a part cannot be started or reached; failed checks are in the report, not errors.
pub(crate) async fn execute(args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.hunters >= args.shards,
        "--hunters ({}) must be at least --shards ({})",
        args.hunters,
        args.shards
    );
    let redis = RedisTarget::new(args.redis_url.clone())?;
    let client = redis::Client::open(redis.url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    ensure_empty(&mut conn).await?;
    let router = router(args, &redis.url).await?;
    let dir = tempfile::tempdir().context("creating a folder for the shard files")?;
    let mut files = Vec::new();
    let mut writers = Vec::new();
    for shard in 1..=args.shards + 1 {
        let path = dir.path().join(format!("shard-{shard}.sqlite"));
        let writer =
            ShardWriter::open(WriterConfig::new(&path, shard).with_redis(redis.url.clone()))
                .await
                .with_context(|| format!("opening shard {shard}"))?;
        files.push((shard, path));
        writers.push(writer);
    }
    let probe_writer = writers.pop().context("the probe shard")?;
    let hunt = Arc::new(Hunt {
        wave: AtomicU32::new(1),
        clues_per_map: args.clues_per_map,
        chests_per_wave: args.chests_per_wave,
        seed: args.seed,
    });
    for tier in rewards::tier_ids() {
        writers[0]
            .open_wave(tier, 1, &clue_ids(tier, 1, args.clues_per_map))
            .await?;
    }

    let channel = Channel::from_shared(format!("http://{}", router.grpc))?
        .connect()
        .await
        .context("connecting to the router's gRPC")?;
    // `stop` ends the readers and observers; `load_stop` the probe sender and the wave opener.
    let (stop, load_stop) = (CancellationToken::new(), CancellationToken::new());
    let started = Instant::now();
    let timeline = Arc::new(Timeline::new(started));
    let probes = Probes::new(Arc::clone(&timeline))?;
    let mut observers = JoinSet::new();
    probe::watch(&probes, &channel, &stop, &mut observers).await?;
    probe::spectate(&probes, router.http, args.spectators, &stop, &mut observers).await?;
    let mut background: JoinSet<anyhow::Result<()>> = JoinSet::new();
    background.spawn(probe::send(
        Arc::clone(&probes),
        probe_writer.clone(),
        load_stop.clone(),
    ));
    {
        let (writer, hunt, stop) = (writers[0].clone(), Arc::clone(&hunt), load_stop.clone());
        let (every, clues) = (Duration::from_secs(args.wave_seconds), args.clues_per_map);
        background.spawn(async move {
            let mut wave = 1;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = stop.cancelled() => return Ok(()),
                }
                wave += 1;
                for tier in rewards::tier_ids() {
                    writer
                        .open_wave(tier, wave, &clue_ids(tier, wave, clues))
                        .await?;
                }
                hunt.wave.store(wave, Ordering::Release);
            }
        });
    }
    let get_top = (args.get_top_rate > 0).then(|| {
        tokio::spawn(crate::bench_router::get_top_load(
            router.grpc,
            args.get_top_rate,
            args.readers,
            stop.clone(),
        ))
    });

    // The load: one open-loop schedule per shard.
    let duration = Duration::from_secs(args.seconds);
    let per_shard = (args.rate / u64::from(args.shards)).max(1);
    let mut shards = JoinSet::new();
    for (index, writer) in writers.iter().enumerate() {
        let hunters = Arc::new(hunters_of(index as u32, args.shards, args.hunters));
        let (writer, hunt, timeline) = (writer.clone(), Arc::clone(&hunt), Arc::clone(&timeline));
        let max_in_flight = usize::try_from(args.max_in_flight)?;
        shards.spawn(async move {
            open_loop::run_observed(
                per_shard,
                duration,
                max_in_flight,
                move |n| arrival(writer.clone(), Arc::clone(&hunters), Arc::clone(&hunt), n),
                move |at, took| timeline.append(at, took),
            )
            .await
        });
    }
    let bar = progress_bar(args.seconds);
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::from_std(started) + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut outcomes = Vec::new();
    let mut all_writers = writers.clone();
    all_writers.push(probe_writer.clone());
    while outcomes.len() < writers.len() {
        tokio::select! {
            done = shards.join_next() => match done {
                Some(outcome) => outcomes.push(outcome??),
                None => break,
            },
            _ = ticker.tick() => {
                let committed = committed_total(&all_writers);
                let applied = applied_total(&mut conn).await?;
                timeline.totals(committed, applied);
                bar.set_position(started.elapsed().as_secs().min(args.seconds));
                bar.set_message(format!("{committed} committed, {applied} applied"));
            }
        }
    }
    let load_elapsed = started.elapsed();
    bar.finish_and_clear();
    load_stop.cancel();
    while let Some(done) = background.join_next().await {
        done??;
    }

    // Settle: everything applied, no award pending, every observer has seen the last probe.
    let settle_started = Instant::now();
    let deadline = settle_started + Duration::from_secs(args.settle_seconds);
    let mut applied_at = None;
    let mut next_second = started + Duration::from_secs(started.elapsed().as_secs() + 1);
    loop {
        if Instant::now() >= next_second {
            // The timeline goes on through the catch-up.
            next_second += Duration::from_secs(1);
            let committed = committed_total(&all_writers);
            timeline.totals(committed, applied_total(&mut conn).await?);
        }
        let applied = applied_all(&mut conn, &all_writers).await?;
        if applied && applied_at.is_none() {
            applied_at = Some(started.elapsed());
        }
        if applied && awards_pending(&mut conn).await? == 0 && probes.all_seen() {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "after {} s: every event applied: {applied}; awards pending: {}; every observer \
                 saw the last probe: {}",
                args.settle_seconds,
                awards_pending(&mut conn).await?,
                probes.all_seen()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled_in = settle_started.elapsed();
    // The timeline's last rows: the catch-up after the load.
    let committed = committed_total(&all_writers);
    timeline.totals(committed, applied_total(&mut conn).await?);
    stop.cancel();
    while let Some(done) = observers.join_next().await {
        if let Err(err) = done? {
            eprintln!("an observer stopped early: {err:#}");
        }
    }
    let (get_top, get_top_service, get_top_errors) = match get_top {
        Some(task) => task.await??,
        None => (new_histogram()?, new_histogram()?, 0),
    };
    for writer in &all_writers {
        writer.shutdown().await?;
    }

    let mut grpc = LeaderboardClient::new(channel);
    let (checks, logged) = ground_truth::verify(files, &mut conn, &mut grpc).await?;
    if let Some(own) = router.own
        && !own.shutdown(Duration::from_secs(10)).await
    {
        eprintln!("the in-process tier router did not stop within 10 s");
    }

    let mut append = new_histogram()?;
    let (mut errors, mut arrivals) = (0, 0);
    for outcome in &outcomes {
        append.add(&outcome.latency)?;
        errors += outcome.errors;
        arrivals += outcome.sent;
    }
    let snapshot = |h: &std::sync::Mutex<Histogram<u64>>| h.lock().map(|h| h.clone()).ok();
    let end_to_end = snapshot(&probes.grpc).context("probe histogram")?;
    let websocket = snapshot(&probes.ws).context("probe histogram")?;
    let until_applied = applied_at.unwrap_or(load_elapsed + settled_in);
    Ok(Report {
        config: args.into(),
        arrivals,
        committed,
        logged,
        load_seconds: load_elapsed.as_secs_f64(),
        committed_per_s: committed as f64 / load_elapsed.as_secs_f64(),
        applied_per_s: committed as f64 / until_applied.as_secs_f64(),
        catch_up_seconds: until_applied.saturating_sub(load_elapsed).as_secs_f64(),
        settle_seconds: settled_in.as_secs_f64(),
        probes: probes.count() as u64,
        append: Latency::of(&append),
        end_to_end: Latency::of(&end_to_end),
        websocket: Latency::of(&websocket),
        get_top: Latency::of(&get_top),
        get_top_service: Latency::of(&get_top_service),
        errors,
        get_top_errors,
        checks,
        timeline: timeline.seconds(),
        baseline: None,
    })
}
