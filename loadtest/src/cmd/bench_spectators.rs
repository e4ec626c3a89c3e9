//! `loadtest bench-spectators`: how many WebSocket spectators one tier router holds, and how long
//! an event takes from `append` to a spectator's screen (the `delta` frame received).
//!
//! The router runs as its own process (`tier-router` from the same target directory), so the
//! spectators' sockets and the router's do not share one process's file descriptors. Every
//! spectator follows tier 1. A probe shard appends, every `--probe-ms`, points that give one probe
//! player a new record score; each spectator notes when it sees each record, measured from the
//! probe's intended send time. The router's CPU time over the probes (from `/proc`), divided by
//! the deliveries, is its cost per delivery; Centrifugo publishes about 12,500 deliveries per
//! second per core as its figure.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use shard_writer::{ShardWriter, WriterConfig};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::harness::histogram::{self, max_millis, millis};
use crate::harness::probe::next_text;
use crate::harness::redis_target::RedisUrl;

/// Options of `loadtest bench-spectators`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    redis: RedisUrl,
    /// Spectators to connect.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=15_000))]
    connections: u32,
    /// Milliseconds between probes.
    #[arg(long, default_value_t = 100)]
    probe_ms: u64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The router's coalescing interval, in milliseconds.
    #[arg(long, default_value_t = 100)]
    coalesce_ms: u64,
}

/// The router child, killed on drop.
struct RouterChild(Child);

impl RouterChild {
    /// Starts `tier-router` from this binary's folder on free ports, holding `args.connections`
    /// spectators; returns it and its HTTP address.
    async fn start(args: &Args, redis_url: &str) -> anyhow::Result<(Self, String)> {
        let binary = std::env::current_exe()?
            .parent()
            .context("the loadtest binary has no directory")?
            .join("tier-router");
        let mut child = Command::new(&binary)
            .args([
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--ws-coalesce-ms",
                &args.coalesce_ms.to_string(),
                "--ws-max-connections",
                &args.connections.to_string(),
                "--redis-url",
                redis_url,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it: cargo build --release -p tier-router)",
                    binary.display()
                )
            })?;
        let stdout = child.stdout.take().context("router stdout")?;
        let router = Self(child);
        let http = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                if let Some(addr) = line?.strip_prefix("http ") {
                    return Ok(addr.to_owned());
                }
            }
            bail!("the router exited before printing its HTTP address")
        })
        .await??;
        Ok((router, http))
    }
}

impl Drop for RouterChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const RECORD: i64 = 1_000_000_000;

/// The probes sent and their deliveries to the spectators.
struct Deliveries {
    /// Per probe (by record score): its intended send time.
    sent: Mutex<BTreeMap<i64, Instant>>,
    /// From a probe's intended send time to a spectator's frame showing it, one per spectator.
    latency: Mutex<Histogram<u64>>,
}

impl Deliveries {
    /// Deliveries recorded so far.
    fn count(&self) -> u64 {
        self.latency.lock().map(|h| h.len()).unwrap_or(0)
    }
}

/// `loadtest bench-spectators`: the router as a child process, the spectators, the probes, and
/// the table.
///
/// # Errors
/// When a part cannot be started or reached, or a delivery goes missing.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let redis = args.redis.start()?;
    let (router, http) = RouterChild::start(&args, &redis.url).await?;

    let dir = tempfile::tempdir()?;
    let probe = ShardWriter::open(
        WriterConfig::new(dir.path().join("probe.sqlite"), 1).with_redis(redis.url.clone()),
    )
    .await?;
    probe
        .append(hunt_testkit::score(1, "probe", RECORD))
        .await?;

    let connect_started = Instant::now();
    let deliveries = Arc::new(Deliveries {
        sent: Mutex::default(),
        latency: Mutex::new(histogram::new()?),
    });
    let stop = CancellationToken::new();
    let mut spectators = connect(&args, &http, &deliveries, &stop).await?;
    let connected_in = connect_started.elapsed();

    // Probes: a new record every `probe_ms`, from its intended send time.
    let router_pid = router.0.id();
    let router_cpu_before = crate::harness::cpu::process(router_pid);
    let started = Instant::now();
    let interval = Duration::from_millis(args.probe_ms);
    let mut probes = 0i64;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        let due = started + interval.mul_f64(probes as f64);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        probes += 1;
        if let Ok(mut sent) = deliveries.sent.lock() {
            sent.insert(RECORD + probes, due);
        }
        probe.append(hunt_testkit::score(1, "probe", 1)).await?;
    }
    // The last probe reaches everyone, or the run fails.
    let expected = u64::try_from(probes)? * u64::from(args.connections);
    let deadline = Instant::now() + Duration::from_secs(30);
    while deliveries.count() < expected {
        if Instant::now() >= deadline {
            bail!(
                "only {} of {expected} probe deliveries arrived",
                deliveries.count()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let router_cpu = crate::harness::cpu::process(router_pid)
        .zip(router_cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    stop.cancel();
    while let Some(done) = spectators.join_next().await {
        done??;
    }
    probe.shutdown().await?;
    drop(router);

    let latency = histogram::snapshot(&deliveries.latency)?;
    println!("| measure | result | goal |");
    println!("|---|---|---|");
    println!(
        "| spectators held (all got every update) | {} (connected in {:.1} s) | 10,000 |",
        args.connections,
        connected_in.as_secs_f64()
    );
    println!(
        "| delivery, append → delta received, p50 / p99 / max ({} deliveries) | {:.1} / {:.1} / {:.1} ms | p99 < {} ms |",
        latency.len(),
        millis(&latency, 0.5),
        millis(&latency, 0.99),
        max_millis(&latency),
        args.coalesce_ms + 50
    );
    match router_cpu {
        Some(cpu) if !latency.is_empty() && !cpu.is_zero() => println!(
            "| router CPU per delivery (its whole process, during the probes) | {:.1} µs ({:.0} deliveries/s per core) | Centrifugo's figure: 12,500/s per core |",
            cpu.as_secs_f64() * 1e6 / latency.len() as f64,
            latency.len() as f64 / cpu.as_secs_f64()
        ),
        _ => println!("| router CPU per delivery | – (no /proc reading) | |"),
    }
    Ok(())
}

/// Connects `--connections` spectators of tier 1 to `/ws` at `http`, 64 at a time, each noting
/// the probes it sees until `stop`; returns once every one has its snapshot.
async fn connect(
    args: &Args,
    http: &str,
    deliveries: &Arc<Deliveries>,
    stop: &CancellationToken,
) -> anyhow::Result<JoinSet<anyhow::Result<()>>> {
    let mut spectators = JoinSet::new();
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel::<()>(1_024);
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    for _ in 0..args.connections {
        let permit = Arc::clone(&gate).acquire_owned().await?;
        let (url, deliveries, stop, ready_tx) = (
            format!("ws://{http}/ws"),
            Arc::clone(deliveries),
            stop.clone(),
            ready_tx.clone(),
        );
        spectators.spawn(async move {
            let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
            socket
                .send(Message::Text(r#"{"subscribe":{"tier":1}}"#.into()))
                .await?;
            let mut seen = RECORD;
            let mut ready_tx = Some(ready_tx);
            drop(permit);
            while let Some(text) = next_text(&mut socket, &stop).await? {
                if let Some(ready) = ready_tx.take() {
                    let _ = ready.send(()).await;
                }
                let now = Instant::now();
                let best = records(&text).max().unwrap_or(0);
                if best > seen {
                    if let (Ok(sent), Ok(mut latency)) =
                        (deliveries.sent.lock(), deliveries.latency.lock())
                    {
                        for (_, at) in sent.range(seen + 1..=best) {
                            let _ = latency.record(now.duration_since(*at).as_nanos() as u64);
                        }
                    }
                    seen = best;
                }
            }
            Ok(())
        });
    }
    drop(ready_tx);
    for _ in 0..args.connections {
        if tokio::time::timeout(Duration::from_secs(60), ready.recv())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            bail!("not every spectator got its snapshot within 60 s");
        }
    }
    Ok(spectators)
}

/// The record scores (above [`RECORD`]) a frame mentions, as offsets above it. Scores are
/// strings in the proto3 JSON mapping: `"score":"1000042"`.
fn records(text: &str) -> impl Iterator<Item = i64> + '_ {
    text.split("\"score\":\"").skip(1).filter_map(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<i64>().ok().filter(|score| *score > RECORD)
    })
}
