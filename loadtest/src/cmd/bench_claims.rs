//! `loadtest bench-claims`: how long a first-solver-wins clue claim takes with many hunters
//! racing, beside the old way in the same run.
//!
//! Three phases on one Redis, each at the same open-loop rate over the same connections:
//! 1. **Claims.** `--claimants` hunters claim clues of the current wave through
//!    `hunt_claim_clue` (one round trip, one compare-and-swap inside Redis); a new wave opens every
//!    `--wave-ms` on `--clues` clues. Every winner is checked: one per clue and wave, with tokens
//!    that grow from wave to wave.
//!    **Through the writer.** The same load through `ShardWriter::claim_clue` of one writer
//!    (temporary shard file): the claims gate checked in the same call, and every answer
//!    recorded in the shard file (its own SQLite transaction) before it is returned.
//! 2. **Baseline: the old lock-based claim.** The same load, claimed the way the old systems did:
//!    `SET lock NX PX 5000`, then read the holder, write it if there is none, `DEL` the lock (up to
//!    four round trips, and a lock that can expire early).
//! 3. **Floor: `PING`.** A bare round trip at the same rate: what the network and the scheduler
//!    cost before Redis does any work.
//! 4. **Sweep.** `--sweep-awards` pending awards (two per chest, from two shards) are applied
//!    to one tier, then one saga sweep settles them all in steps of `--saga-batch`: half
//!    confirmed, half revoked and compensated. The baseline settles a sample one award per step
//!    (one claim, one settle, one compensation, one finish each), as a saga without batching
//!    would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use hunt_redis::connection::Connection;
use leaderboard_proto::functions::{
    self, Apply, ClaimClue, ClueClaim, Function, Gate, LeaseAcquire, LeaseAcquired, OpenClue,
};
use leaderboard_proto::keys;
use tokio_util::sync::CancellationToken;

use crate::harness::cpu::{PerEvent, Sample};
use crate::harness::histogram::{max_millis, millis};
use crate::harness::open_loop::{self, Outcome};
use crate::harness::redis_target::{self, RedisUrl};

/// Options of `loadtest bench-claims`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    redis: RedisUrl,
    /// Hunters racing for the clues.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    claimants: u32,
    /// Connections the claims are spread over (multiplexed).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    connections: u32,
    /// Claims per second (open loop), in each phase.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rate: u64,
    /// Measured seconds of each phase.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Clues per wave.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    clues: u32,
    /// Milliseconds between waves.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    wave_ms: u64,
    /// Pending awards of the sweep phase (an even number; 0 skips it).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    sweep_awards: u64,
    /// Awards per saga step in the sweep.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    saga_batch: u64,
    /// Awards the one-at-a-time baseline settles.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    sweep_baseline_awards: u64,
}

/// The most claims in flight at once; past it an arrival waits, and the wait counts.
const MAX_IN_FLIGHT: usize = 10_000;

fn clue_id(clue: u64) -> String {
    format!("bench-clue-{clue}")
}

fn hunter_id(claimant: u64) -> String {
    format!("hunter-{claimant}")
}

/// Winners seen per (clue, wave), and the tokens per clue by wave.
#[derive(Default)]
struct Winners {
    by_wave: HashMap<(u64, u32), (String, u64)>,
    conflicts: u64,
}

/// `loadtest bench-claims`: the phases in order, their table, and the sweep.
///
/// # Errors
/// When Redis cannot be reached, a winner is wrong, an operation failed, or the sweep does not
/// settle every award.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let redis = args.redis.start()?;
    let client = redis::Client::open(redis.url.as_str())?;
    let mut connections = Vec::new();
    for _ in 0..args.connections {
        let mut conn = redis_target::connect(&client)
            .await
            .context("connecting to Redis")?;
        hunt_redis::ensure_loaded(&mut conn).await?;
        connections.push(Connection::from(conn));
    }
    let duration = Duration::from_secs(args.seconds);
    // CPU time per operation of each phase: this process and Redis.
    let mut probe = redis_target::connect(&client).await?;
    let mut cpu = Vec::with_capacity(4);
    let mut before = Sample::now(&mut probe).await;
    println!(
        "{} claimants over {} connections, {} claims/s for {} s per phase, {} clues per wave, a \
         wave every {} ms",
        args.claimants, args.connections, args.rate, args.seconds, args.clues, args.wave_ms
    );

    // Phase 1: claims through hunt_claim_clue, while waves open.
    let stop = CancellationToken::new();
    open_wave(&mut connections[0], args.clues, 1).await?;
    let opener = tokio::spawn(open_waves(
        connections[0].clone(),
        args.clues,
        Duration::from_millis(args.wave_ms),
        stop.clone(),
        1,
    ));
    let winners = Arc::new(Mutex::new(Winners::default()));
    let clue_claims = open_loop::run(args.rate, duration, MAX_IN_FLIGHT, |n| {
        let mut conn = connections[(n % u64::from(args.connections)) as usize].clone();
        let clue = n.wrapping_mul(2_654_435_761) % u64::from(args.clues);
        let hunter = hunter_id(n % u64::from(args.claimants));
        let winners = Arc::clone(&winners);
        async move {
            let claim = hunt_redis::call(
                &mut conn,
                &ClaimClue::new(&clue_id(clue), &hunter, 0, Gate::Off),
            )
            .await?;
            match claim {
                ClueClaim::Won { token, wave } => {
                    let mut winners = winners.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    let winner = winners
                        .by_wave
                        .entry((clue, wave))
                        .or_insert_with(|| (hunter.clone(), token));
                    if *winner != (hunter, token) {
                        winners.conflicts += 1;
                    }
                }
                ClueClaim::Held { .. } => {}
                ClueClaim::Unknown => bail!("clue {clue} was never opened"),
            }
            Ok(())
        }
    })
    .await?;
    stop.cancel();
    let waves = opener.await??;
    let now = Sample::now(&mut probe).await;
    cpu.push(before.per_event(&now, clue_claims.sent));
    let winners = std::mem::take(&mut *winners.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    check_winners(&winners)?;

    // Phase 1b: the same claims through a shard writer: gated, and recorded before answered.
    let dir = tempfile::tempdir().context("a folder for the writer's shard file")?;
    let writer = shard_writer::ShardWriter::open(
        shard_writer::WriterConfig::new(dir.path().join("claims.sqlite"), 1).with_redis(&redis.url),
    )
    .await
    .context("opening the shard writer")?;
    let stop = CancellationToken::new();
    let opener = tokio::spawn(open_waves(
        connections[0].clone(),
        args.clues,
        Duration::from_millis(args.wave_ms),
        stop.clone(),
        waves,
    ));
    before = Sample::now(&mut probe).await;
    let recorded = open_loop::run(args.rate, duration, MAX_IN_FLIGHT, |n| {
        let writer = writer.clone();
        let clue = n.wrapping_mul(2_654_435_761) % u64::from(args.clues);
        let hunter = hunter_id(n % u64::from(args.claimants));
        async move {
            writer.claim_clue(&clue_id(clue), &hunter).await?;
            Ok(())
        }
    })
    .await?;
    stop.cancel();
    opener.await??;
    let now = Sample::now(&mut probe).await;
    cpu.push(before.per_event(&now, recorded.sent));
    writer.shutdown().await?;

    // Phase 2: the old lock-based claim, same load.
    before = Sample::now(&mut probe).await;
    let lock_based = open_loop::run(args.rate, duration, MAX_IN_FLIGHT, |n| {
        let mut conn = connections[(n % u64::from(args.connections)) as usize].clone();
        // The wave this arrival falls in, by its place in the schedule.
        let wave = 1 + n * 1_000 / args.rate / args.wave_ms;
        let clue = format!(
            "{}-w{wave}",
            clue_id(n.wrapping_mul(2_654_435_761) % u64::from(args.clues))
        );
        let hunter = hunter_id(n % u64::from(args.claimants));
        async move { lock_based_claim(&mut conn, &clue, &hunter).await }
    })
    .await?;

    let now = Sample::now(&mut probe).await;
    cpu.push(before.per_event(&now, lock_based.sent));

    // Phase 3: PING at the same rate.
    before = Sample::now(&mut probe).await;
    let ping = open_loop::run(args.rate, duration, MAX_IN_FLIGHT, |n| {
        let mut conn = connections[(n % u64::from(args.connections)) as usize].clone();
        async move {
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok(())
        }
    })
    .await?;

    let now = Sample::now(&mut probe).await;
    cpu.push(before.per_event(&now, ping.sent));
    println!();
    println!(
        "| measure | hunt_claim_clue | through the writer (gated, recorded) | old lock-based claim | PING |"
    );
    println!("|---|---|---|---|---|");
    let row = |name: &str, f: &dyn Fn(&Outcome) -> String| {
        println!(
            "| {name} | {} | {} | {} | {} |",
            f(&clue_claims),
            f(&recorded),
            f(&lock_based),
            f(&ping)
        );
    };
    row("operations", &|o| o.sent.to_string());
    row("errors", &|o| o.errors.to_string());
    row("achieved rate /s", &|o| {
        format!("{:.0}", o.sent as f64 / o.elapsed.as_secs_f64())
    });
    for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        row(&format!("latency {name}"), &|o| {
            format!("{:.3} ms", millis(&o.latency, q))
        });
    }
    row("latency max", &|o| {
        format!("{:.3} ms", max_millis(&o.latency))
    });
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        row(&format!("from actual send {name}"), &|o| {
            format!("{:.3} ms", millis(&o.service, q))
        });
    }
    let cells: Vec<String> = cpu.iter().map(PerEvent::cells).collect();
    println!(
        "| CPU µs per operation: process (commit + rest) / Redis | {} |",
        cells.join(" | ")
    );
    println!();
    println!(
        "claim p99 / old claim p99: {:.2}; claim p99 / PING p99: {:.2}; recorded claim p99 / \
         claim p99: {:.2}; {waves} waves, {} winners, one per clue and wave, tokens growing from \
         wave to wave",
        millis(&clue_claims.latency, 0.99) / millis(&lock_based.latency, 0.99),
        millis(&clue_claims.latency, 0.99) / millis(&ping.latency, 0.99),
        millis(&recorded.latency, 0.99) / millis(&clue_claims.latency, 0.99),
        winners.by_wave.len(),
    );
    if clue_claims.errors + recorded.errors + lock_based.errors + ping.errors > 0 {
        bail!("some operations failed");
    }
    if args.sweep_awards > 0 {
        let mut conn = connections[0].clone();
        sweep(
            &mut conn,
            args.sweep_awards,
            args.saga_batch,
            args.sweep_baseline_awards,
        )
        .await?;
    }
    Ok(())
}

/// Phase 4: one sweep over `awards` pending awards, beside settling one award per step.
async fn sweep(
    conn: &mut Connection,
    awards: u64,
    saga_batch: u64,
    baseline_awards: u64,
) -> anyhow::Result<()> {
    let (batched, batched_time) = settle_all(conn, SWEEP_TIER, awards, saga_batch, "sweep").await?;
    let (single, single_time) =
        settle_all(conn, BASELINE_TIER, baseline_awards, 1, "single").await?;
    let batched_rate = batched as f64 / batched_time.as_secs_f64();
    let single_rate = single as f64 / single_time.as_secs_f64();
    println!();
    println!("| sweep | awards | time | awards/s |");
    println!("|---|---|---|---|");
    println!(
        "| steps of {saga_batch} | {batched} | {:.2} s | {batched_rate:.0} |",
        batched_time.as_secs_f64()
    );
    println!(
        "| one award per step (baseline) | {single} | {:.2} s | {single_rate:.0} |",
        single_time.as_secs_f64()
    );
    println!(
        "sweep / one-at-a-time: {:.1}x the awards per second",
        batched_rate / single_rate
    );
    Ok(())
}

/// The tier the sweep fills, and the one its baseline fills.
const SWEEP_TIER: u32 = 1;
const BASELINE_TIER: u32 = 2;

/// Applies `awards` awards to `tier` (two per chest, shards 1 and 2, in batches of 500), then
/// times saga steps of `saga_batch` until none waits; checks that half were confirmed and half
/// compensated. Returns the awards settled and the time taken.
async fn settle_all(
    conn: &mut Connection,
    tier: u32,
    awards: u64,
    saga_batch: u64,
    prefix: &str,
) -> anyhow::Result<(u64, Duration)> {
    let router = format!("bench-{prefix}");
    let acquire = LeaseAcquire::new(tier, &router, Duration::from_secs(600));
    let token = match hunt_redis::call(conn, &acquire).await? {
        LeaseAcquired::Held(token) => token,
        LeaseAcquired::Taken { holder } => {
            bail!("tier {tier} is leased to {holder}: run the sweep on a Redis of its own")
        }
    };
    let chests = awards / 2;
    let ids: Vec<(String, String, String)> = (0..chests)
        .map(|chest| {
            (
                format!("{prefix}-chest-{chest}"),
                format!("{prefix}-{chest}-a"),
                format!("{prefix}-{chest}-b"),
            )
        })
        .collect();
    for (batch, slice) in ids.chunks(250).enumerate() {
        let mut apply = Apply::new(tier, &token, "0-1", 100);
        for (k, (chest_key, first, second)) in slice.iter().enumerate() {
            let tier_seq = (batch * 250 + k + 1) as u64;
            for (shard_id, award_id) in [(1, first), (2, second)] {
                apply.entry(&functions::ApplyEntry {
                    shard_id,
                    tier_seq,
                    player: award_id,
                    points: 10,
                    kind: functions::ApplyKind::Award {
                        award_id,
                        chest_key,
                    },
                });
            }
        }
        hunt_redis::call(conn, &apply).await?;
    }
    let mut config = tier_router::RouterConfig::new("redis://unused/");
    config.saga_batch = usize::try_from(saga_batch)?;
    let cache = tier_router::cache::Cache::new();
    let started = std::time::Instant::now();
    let (mut confirmed, mut finished) = (0, 0);
    loop {
        let report = tier_router::saga::step(conn, tier, &token, &config, &cache).await?;
        confirmed += report.confirmed;
        finished += report.finished;
        if report.seen == 0 {
            break;
        }
        if !report.progressed() {
            bail!("a saga step made no progress: {report:?}");
        }
    }
    let elapsed = started.elapsed();
    if confirmed != chests || finished != chests {
        bail!(
            "{prefix}: {confirmed} confirmed and {finished} compensated, expected {chests} of each"
        );
    }
    Ok((chests * 2, elapsed))
}

/// Opens `wave` on every clue, in one pipeline.
async fn open_wave(conn: &mut Connection, clues: u32, wave: u32) -> anyhow::Result<()> {
    let mut pipe = redis::pipe();
    for clue in 0..u64::from(clues) {
        pipe.add_command(OpenClue::new(&clue_id(clue), wave, Gate::Off).cmd().clone());
    }
    let _: Vec<functions::ClueOpened> = pipe.query_async(conn).await?;
    Ok(())
}

/// Opens a new wave after `opened` every `every` until stopped; returns the last wave opened.
async fn open_waves(
    mut conn: Connection,
    clues: u32,
    every: Duration,
    stop: CancellationToken,
    opened: u32,
) -> anyhow::Result<u32> {
    let mut next = opened;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(next),
            () = tokio::time::sleep(every) => {}
        }
        next += 1;
        open_wave(&mut conn, clues, next).await?;
    }
}

/// One winner per (clue, wave), and each clue's winning tokens growing with the wave.
fn check_winners(winners: &Winners) -> anyhow::Result<()> {
    if winners.conflicts > 0 {
        bail!(
            "{} claims won a clue another hunter had won in the same wave",
            winners.conflicts
        );
    }
    let mut by_clue: HashMap<u64, Vec<(u32, u64)>> = HashMap::new();
    for ((clue, wave), (_, token)) in &winners.by_wave {
        by_clue.entry(*clue).or_default().push((*wave, *token));
    }
    for (clue, mut wins) in by_clue {
        wins.sort_unstable();
        if wins.windows(2).any(|pair| pair[1].1 <= pair[0].1) {
            bail!("clue {clue}: tokens do not grow from wave to wave: {wins:?}");
        }
    }
    Ok(())
}

/// The old systems' claim: a lock with a time to live around a read and a write of the holder.
async fn lock_based_claim(conn: &mut Connection, clue: &str, hunter: &str) -> anyhow::Result<()> {
    let lock = keys::baseline_clue_lock(clue);
    let locked: Option<String> = redis::cmd("SET")
        .arg(&lock)
        .arg(hunter)
        .arg("NX")
        .arg("PX")
        .arg(5_000)
        .query_async(conn)
        .await?;
    if locked.is_none() {
        // Another hunter holds the lock: the old claim reports "try again", a loss.
        return Ok(());
    }
    let holder_key = keys::baseline_clue(clue);
    let holder: Option<String> = redis::cmd("GET").arg(&holder_key).query_async(conn).await?;
    if holder.is_none() {
        let _: () = redis::cmd("SET")
            .arg(&holder_key)
            .arg(hunter)
            .query_async(conn)
            .await?;
    }
    let _: u64 = redis::cmd("DEL").arg(&lock).query_async(conn).await?;
    Ok(())
}
