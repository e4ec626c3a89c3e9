//! The hunt of `loadtest run` (and of `loadtest baseline`): a global treasure hunt through the
//! whole pipeline, measured, then checked against the shards' own logs.
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
//!   pending, then runs the checks of [`crate::harness::ground_truth`].
//!
//! Every random choice comes from a fixed seed, so two runs offer the same events.
//!
//! [`execute`] goes through its steps in order: [`set_up`] the pipeline, [`observe`] it,
//! [`load`] it, [`drain`] it, [`check`] it against the logs, and [`report`].

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leaderboard_proto::v1::leaderboard_service_client::LeaderboardServiceClient;
use leaderboard_proto::{keys, rewards};
use redis::aio::MultiplexedConnection;
use shard_writer::ShardWriter;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::harness::cpu;
use crate::harness::ground_truth::{self, Check};
use crate::harness::histogram;
use crate::harness::leaderboard::get_top_load;
use crate::harness::marks::{self, committed_total};
use crate::harness::open_loop::{self, Outcome, Until};
use crate::harness::pipeline::{self, Router, Shards};
use crate::harness::probe::{self, Probes};
use crate::harness::redis_target::RedisTarget;
use crate::harness::report::{Latency, Report};
use crate::harness::timeline::{Second, Timeline};

mod options;
mod workload;

pub(crate) use options::Options;
use workload::Workload;
pub(crate) use workload::{Draw, hunters_of};

/// Runs the hunt and its checks; the report says what was measured and which checks held.
///
/// # Errors
/// When a part cannot be started or reached; failed checks are in the report, not errors.
pub(crate) async fn execute(options: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(
        options.hunters >= options.shards,
        "--hunters ({}) must be at least --shards ({})",
        options.hunters,
        options.shards
    );
    let mut stage = set_up(options).await?;
    let mut observation = observe(options, &stage).await?;
    // CPU from the load's start until every event is applied: what the events cost.
    let cpu_before = cpu::Sample::now(&mut stage.conn).await;
    let load = load(options, &mut stage, &mut observation).await?;
    let drained = drain(options, &mut stage, &observation).await?;
    let cpu_after = cpu::Sample::now(&mut stage.conn).await;
    let observed = observation.finish().await?;
    let (checks, logged) = check(stage).await?;
    let mut report = report(options, load, drained, observed, checks, logged)?;
    report.cpu_per_event = cpu_before.per_event(&cpu_after, report.committed);
    Ok(report)
}

/// The pipeline under test, set up for a hunt.
struct Stage {
    /// Kept for the run: a private Redis stops when this drops.
    _redis: RedisTarget,
    conn: MultiplexedConnection,
    router: Router,
    /// The load shards, and the probe shard last.
    shards: Shards,
    /// How many of `shards` take the load.
    load_shards: usize,
    channel: Channel,
    workload: Arc<Workload>,
}

impl Stage {
    /// The shards that take the load.
    fn load_writers(&self) -> &[ShardWriter] {
        &self.shards.writers[..self.load_shards]
    }

    /// The shard that appends the probes.
    fn probe_writer(&self) -> &ShardWriter {
        &self.shards.writers[self.load_shards]
    }

    /// Every shard: the load's and the probe's.
    fn all_writers(&self) -> &[ShardWriter] {
        &self.shards.writers
    }

    /// Whether every shard is applied up to what it committed.
    async fn applied_all(&mut self) -> anyhow::Result<bool> {
        marks::applied_all(&mut self.conn, &self.shards.writers).await
    }

    /// Adds the next second's running totals to `timeline`; returns them (committed, applied).
    async fn record_totals(&mut self, timeline: &Timeline) -> anyhow::Result<(u64, u64)> {
        let committed = committed_total(self.all_writers());
        let applied = marks::applied_total(&mut self.conn).await?;
        timeline.totals(committed, applied);
        Ok((committed, applied))
    }
}

/// Step 1: Redis (empty of leaderboards), the router, the shards (one more for the probes), the
/// first wave, and a gRPC channel to the router.
async fn set_up(options: &Options) -> anyhow::Result<Stage> {
    let redis = RedisTarget::new(options.redis_url.clone())?;
    let mut conn = redis.connect().await?;
    ensure_empty(&mut conn).await?;
    let router = match (options.router_grpc, options.router_http) {
        (Some(grpc), Some(http)) => Router::running(grpc, http),
        _ => {
            let mut config = pipeline::loopback_router(&redis.url)?;
            config.saga_interval = Duration::from_secs(1);
            config.ws.max_connections = config
                .ws
                .max_connections
                .max(options.spectators as usize + 16);
            Router::embedded(config)
                .await
                .context("starting the in-process tier router")?
        }
    };
    let shards = Shards::open(&redis.url, 1..=options.shards + 1).await?;
    let workload = Arc::new(Workload::new(
        options.clues_per_map,
        options.chests_per_wave,
        options.seed,
    ));
    workload::open_wave(&shards.writers[0], 1, options.clues_per_map).await?;
    let channel = Channel::from_shared(format!("http://{}", router.grpc))?
        .connect()
        .await
        .context("connecting to the router's gRPC")?;
    Ok(Stage {
        _redis: redis,
        conn,
        router,
        load_shards: options.shards as usize,
        shards,
        channel,
        workload,
    })
}

/// Refuses a Redis that already holds leaderboards: the checks need a hunt of their own.
async fn ensure_empty(conn: &mut MultiplexedConnection) -> anyhow::Result<()> {
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

/// What runs beside the load: the probes and who watches for them, the wave opener, and the
/// `GetTop` readers.
struct Observation {
    started: Instant,
    timeline: Arc<Timeline>,
    probes: Arc<Probes>,
    /// Ends the readers and the observers.
    stop: CancellationToken,
    /// Ends the probe sender and the wave opener.
    load_stop: CancellationToken,
    observers: JoinSet<anyhow::Result<()>>,
    background: JoinSet<anyhow::Result<()>>,
    get_top: Option<JoinHandle<anyhow::Result<Outcome>>>,
}

/// Step 2: the `Watch` streams and the spectators, then the probe sender, the wave opener and
/// the `GetTop` readers; the run's clock starts here.
async fn observe(options: &Options, stage: &Stage) -> anyhow::Result<Observation> {
    let (stop, load_stop) = (CancellationToken::new(), CancellationToken::new());
    let started = Instant::now();
    let timeline = Arc::new(Timeline::new(started));
    let probes = Probes::new(Arc::clone(&timeline))?;
    let mut observers = JoinSet::new();
    probe::watch(&probes, &stage.channel, &stop, &mut observers).await?;
    let http = stage.router.http;
    probe::spectate(&probes, http, options.spectators, &stop, &mut observers).await?;
    let mut background: JoinSet<anyhow::Result<()>> = JoinSet::new();
    background.spawn(probe::send(
        Arc::clone(&probes),
        stage.probe_writer().clone(),
        load_stop.clone(),
    ));
    background.spawn(workload::open_waves(
        stage.load_writers()[0].clone(),
        Arc::clone(&stage.workload),
        Duration::from_secs(options.wave_seconds),
        load_stop.clone(),
    ));
    let get_top = (options.get_top_rate > 0).then(|| {
        tokio::spawn(get_top_load(
            stage.router.grpc,
            options.get_top_rate,
            options.readers,
            stop.clone(),
        ))
    });
    Ok(Observation {
        started,
        timeline,
        probes,
        stop,
        load_stop,
        observers,
        background,
        get_top,
    })
}

/// What the readers and the probes measured, once they stopped.
struct Observed {
    get_top: Outcome,
    end_to_end: Latency,
    websocket: Latency,
    probes: u64,
    reconnects: u64,
    timeline: Vec<Second>,
}

impl Observation {
    /// Stops the readers and the observers and collects what they measured.
    async fn finish(mut self) -> anyhow::Result<Observed> {
        self.stop.cancel();
        while let Some(done) = self.observers.join_next().await {
            if let Err(err) = done? {
                eprintln!("an observer stopped early: {err:#}");
            }
        }
        let get_top = match self.get_top {
            Some(task) => task.await??,
            None => Outcome::empty()?,
        };
        Ok(Observed {
            get_top,
            end_to_end: Latency::of(&histogram::snapshot(&self.probes.grpc)?),
            websocket: Latency::of(&histogram::snapshot(&self.probes.ws)?),
            probes: self.probes.count() as u64,
            reconnects: self.probes.reconnects(),
            timeline: self.timeline.seconds(),
        })
    }
}

/// What the load offered and how its appends went.
struct Load {
    outcomes: Vec<Outcome>,
    elapsed: Duration,
}

/// Step 3: one open-loop schedule per shard for `--seconds`, the timeline's totals every second;
/// then the probe sender and the wave opener stop.
async fn load(
    options: &Options,
    stage: &mut Stage,
    observation: &mut Observation,
) -> anyhow::Result<Load> {
    let duration = Duration::from_secs(options.seconds);
    let per_shard = (options.rate / u64::from(options.shards)).max(1);
    let max_in_flight = usize::try_from(options.max_in_flight)?;
    let mut shards = JoinSet::new();
    for (index, writer) in stage.load_writers().iter().enumerate() {
        let hunters = Arc::new(hunters_of(index as u32, options.shards, options.hunters));
        let (writer, workload, timeline) = (
            writer.clone(),
            Arc::clone(&stage.workload),
            Arc::clone(&observation.timeline),
        );
        shards.spawn(async move {
            open_loop::run_observed(
                per_shard,
                Until::Elapsed(duration),
                max_in_flight,
                move |n| {
                    workload::arrival(
                        writer.clone(),
                        Arc::clone(&hunters),
                        Arc::clone(&workload),
                        n,
                    )
                },
                move |at, took| timeline.append(at, took),
            )
            .await
        });
    }
    let started = observation.started;
    let bar = progress_bar(options.seconds);
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::from_std(started) + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut outcomes = Vec::new();
    while outcomes.len() < stage.load_shards {
        tokio::select! {
            done = shards.join_next() => match done {
                Some(outcome) => outcomes.push(outcome??),
                None => break,
            },
            _ = ticker.tick() => {
                let (committed, applied) = stage.record_totals(&observation.timeline).await?;
                bar.set_position(started.elapsed().as_secs().min(options.seconds));
                bar.set_message(format!("{committed} committed, {applied} applied"));
            }
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    observation.load_stop.cancel();
    while let Some(done) = observation.background.join_next().await {
        done??;
    }
    Ok(Load { outcomes, elapsed })
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

/// How the pipeline caught up after the load.
struct Drained {
    /// From the start until every committed event was applied, when it was within the wait.
    applied_at: Option<Duration>,
    /// From the end of the load until everything settled (or the wait ran out).
    settled_in: Duration,
    /// Events committed by every shard.
    committed: u64,
}

/// Step 4: bounded by `--settle-seconds`, wait until everything is applied, no award is pending
/// and every observer has seen the last probe, the timeline going on through the catch-up.
async fn drain(
    options: &Options,
    stage: &mut Stage,
    observation: &Observation,
) -> anyhow::Result<Drained> {
    let (started, probes) = (observation.started, &observation.probes);
    let settle_started = Instant::now();
    let deadline = settle_started + Duration::from_secs(options.settle_seconds);
    let mut applied_at = None;
    let mut next_second = started + Duration::from_secs(started.elapsed().as_secs() + 1);
    loop {
        if Instant::now() >= next_second {
            next_second += Duration::from_secs(1);
            let (committed, applied) = stage.record_totals(&observation.timeline).await?;
            // Said once a second, so a long catch-up shows it is moving.
            eprintln!(
                "settling: {applied} of {committed} events applied, {} award(s) pending, {:.0} s \
                 of {} s",
                marks::awards_pending(&mut stage.conn).await?,
                settle_started.elapsed().as_secs_f64(),
                options.settle_seconds
            );
        }
        let applied = stage.applied_all().await?;
        if applied && applied_at.is_none() {
            applied_at = Some(started.elapsed());
        }
        if applied && marks::awards_pending(&mut stage.conn).await? == 0 && probes.all_seen() {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "after {} s: every event applied: {applied}; awards pending: {}; every observer \
                 saw the last probe: {}",
                options.settle_seconds,
                marks::awards_pending(&mut stage.conn).await?,
                probes.all_seen()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled_in = settle_started.elapsed();
    // The timeline's last row: the catch-up after the load.
    let (committed, _) = stage.record_totals(&observation.timeline).await?;
    Ok(Drained {
        applied_at,
        settled_in,
        committed,
    })
}

/// Step 5: the shards stop, then Redis and the router's boards are checked against their logs;
/// the router stops if it is this process's. Returns the checks and the events logged.
async fn check(stage: Stage) -> anyhow::Result<(Vec<Check>, u64)> {
    let Stage {
        _redis,
        mut conn,
        router,
        shards,
        channel,
        ..
    } = stage;
    shards.shutdown().await?;
    let mut grpc = LeaderboardServiceClient::new(channel);
    let files = shards.files.clone();
    let (checks, logged) = ground_truth::verify(files, &mut conn, &mut grpc).await?;
    if !router.shutdown(Duration::from_secs(10)).await {
        eprintln!("the in-process tier router did not stop within 10 s");
    }
    Ok((checks, logged))
}

/// Step 6: the report of what was measured and found.
fn report(
    options: &Options,
    load: Load,
    drained: Drained,
    observed: Observed,
    checks: Vec<Check>,
    logged: u64,
) -> anyhow::Result<Report> {
    let mut append = histogram::new()?;
    let (mut errors, mut arrivals) = (0, 0);
    for outcome in &load.outcomes {
        append.add(&outcome.latency)?;
        errors += outcome.errors;
        arrivals += outcome.sent;
    }
    let committed = drained.committed;
    let load_elapsed = load.elapsed;
    let until_applied = drained
        .applied_at
        .unwrap_or(load_elapsed + drained.settled_in);
    Ok(Report {
        config: options.into(),
        arrivals,
        committed,
        logged,
        load_seconds: load_elapsed.as_secs_f64(),
        committed_per_s: committed as f64 / load_elapsed.as_secs_f64(),
        applied_per_s: committed as f64 / until_applied.as_secs_f64(),
        catch_up_seconds: until_applied.saturating_sub(load_elapsed).as_secs_f64(),
        settle_seconds: drained.settled_in.as_secs_f64(),
        probes: observed.probes,
        append: Latency::of(&append),
        end_to_end: observed.end_to_end,
        websocket: observed.websocket,
        get_top: Latency::of(&observed.get_top.latency),
        get_top_service: Latency::of(&observed.get_top.service),
        errors,
        get_top_errors: observed.get_top.errors,
        observer_reconnects: observed.reconnects,
        cpu_per_event: cpu::PerEvent::default(),
        checks,
        timeline: observed.timeline,
        baseline: None,
        postgres: None,
    })
}
