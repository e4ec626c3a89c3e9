//! The demo: shards append a steady hunt, a tier router applies it, and the leaderboards move
//! live, read through the router's gRPC API as any client would.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leaderboard_proto::rewards;
use leaderboard_proto::v1::GetTopRequest;
use leaderboard_proto::v1::leaderboard_service_client::LeaderboardServiceClient;
use shard_writer::ShardWriter;
use shard_writer::synthetic::EventGenerator;
use tier_router::{RouterConfig, StartError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::harness::ground_truth;
use crate::harness::marks;
use crate::harness::pipeline::{Router, Shards};
use crate::harness::redis_target::{RedisTarget, RedisUrl};

/// Options of `loadtest demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    redis: RedisUrl,
    /// Where the router's gRPC listens (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
    /// Where the router's HTTP (`/healthz`, `/readyz`, `/metrics`) listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Shard processes to simulate (each with its own SQLite file).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    shards: u32,
    /// Events per second over all shards.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rate: u64,
    /// Distinct hunters.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    players: u32,
    /// How long to run; 0 (the default) runs until Ctrl-C.
    #[arg(long, default_value_t = 0)]
    seconds: u64,
}

/// `loadtest demo`: the live hunt until `--seconds` or Ctrl-C, then the exactly-once check.
///
/// # Errors
/// When a part cannot be started or reached, or the check failed.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let redis = args.redis.start_for_ctrl_c()?;
    let router = start_router(&args, &redis.url).await?;
    let shards = Shards::open(&redis.url, 1..=args.shards).await?;
    print_banner(&args, &router, &shards);
    let stop = CancellationToken::new();
    let mut producers = produce(&shards.writers, args.rate, args.players, &stop);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", router.grpc))?
        .connect()
        .await
        .context("connecting to the router's gRPC")?;
    let mut grpc = LeaderboardServiceClient::new(channel);
    let interrupted = show_tops(&args, &mut grpc, &shards.writers).await?;
    stop.cancel();
    let mut appended = 0;
    while let Some(result) = producers.join_next().await {
        appended += result??;
    }
    if interrupted {
        println!("stopping: waiting for every event to be applied, then checking the leaderboards");
    }
    check(&redis, &shards, &mut grpc).await?;
    println!(
        "{appended} events appended; every tier's leaderboard equals the totals of the shard \
         logs (duplicate chest awards revoked by the saga): each event applied exactly once."
    );
    if !router.shutdown(Duration::from_secs(10)).await {
        bail!("the tier router did not stop within 10 s");
    }
    Ok(())
}

/// The tier router, in this process, on `--grpc-addr` and `--http-addr`.
async fn start_router(args: &Args, redis_url: &str) -> anyhow::Result<Router> {
    let mut config = RouterConfig::new(redis_url.to_owned());
    config.grpc_addr = args.grpc_addr;
    config.http_addr = args.http_addr;
    match Router::embedded(config).await {
        Ok(router) => Ok(router),
        Err(StartError::Bind(err)) => bail!(
            "{err}; pass --grpc-addr 127.0.0.1:0 and \
             --http-addr 127.0.0.1:0 for free ports"
        ),
        Err(err) => Err(err).context("starting the tier router"),
    }
}

/// What runs where, and how to look at it.
fn print_banner(args: &Args, router: &Router, shards: &Shards) {
    let (grpc_addr, http_addr) = (router.grpc, router.http);
    println!(
        "{} shards appending {} events/s for {} hunters over {} tiers; shard files in {}",
        args.shards,
        args.rate,
        args.players,
        rewards::TIERS.len(),
        shards.dir().display()
    );
    println!("tier router gRPC on {grpc_addr} (hunt.v1.LeaderboardService, with reflection). Try:");
    println!(
        "  grpcurl -plaintext -d '{{\"tier\":1,\"limit\":10}}' {grpc_addr} hunt.v1.LeaderboardService/GetTop"
    );
    println!(
        "  grpcurl -plaintext -d '{{\"tier\":1}}' {grpc_addr} hunt.v1.LeaderboardService/Watch"
    );
    println!("live leaderboards: http://{http_addr}/ (metrics: http://{http_addr}/metrics)");
    if args.seconds == 0 {
        println!("Ctrl-C stops the demo.");
    }
}

/// A steady `rate` events/s over `writers` for `players` hunters until `stop`; each task
/// returns its appends.
fn produce(
    writers: &[ShardWriter],
    rate: u64,
    players: u32,
    stop: &CancellationToken,
) -> JoinSet<Result<u64, shard_writer::AppendError>> {
    let per_shard = (rate as f64 / writers.len() as f64).max(0.1);
    let mut producers = JoinSet::new();
    for writer in writers {
        let (writer, stop) = (writer.clone(), stop.clone());
        producers.spawn(async move {
            let mut events = EventGenerator::new(u64::from(writer.shard_id()), players);
            let interval = Duration::from_secs_f64(1.0 / per_shard);
            let started = tokio::time::Instant::now();
            let mut appended = 0u64;
            while !stop.is_cancelled() {
                tokio::time::sleep_until(started + interval.mul_f64(appended as f64)).await;
                writer.append(events.next_event()).await?;
                appended += 1;
            }
            Ok(appended)
        });
    }
    producers
}

/// Prints the tops every second until `--seconds` have passed or Ctrl-C; returns whether it was
/// Ctrl-C.
async fn show_tops(
    args: &Args,
    grpc: &mut LeaderboardServiceClient<Channel>,
    writers: &[ShardWriter],
) -> anyhow::Result<bool> {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    // One Ctrl-C listener for the whole loop: a new one per turn would miss a Ctrl-C pressed
    // while the tops are being printed.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(true),
            _ = ticker.tick() => {
                print_tops(started.elapsed(), grpc, writers).await?;
                if args.seconds > 0 && started.elapsed() >= Duration::from_secs(args.seconds) {
                    return Ok(false);
                }
            }
        }
    }
}

/// Waits (up to 30 s) until everything is applied and settled, stops the shards, and checks the
/// leaderboards against their logs.
async fn check(
    redis: &RedisTarget,
    shards: &Shards,
    grpc: &mut LeaderboardServiceClient<Channel>,
) -> anyhow::Result<()> {
    let mut conn = redis.connect().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marks::settled(&mut conn, &shards.writers).await? && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shards.shutdown().await?;
    let (checks, _) = ground_truth::verify(shards.files.clone(), &mut conn, grpc).await?;
    ground_truth::fail_on_checks(&checks)
}

/// One line per tier: its top 3 as the router serves them.
async fn print_tops(
    elapsed: Duration,
    grpc: &mut LeaderboardServiceClient<Channel>,
    writers: &[ShardWriter],
) -> anyhow::Result<()> {
    let committed = marks::committed_total(writers);
    println!("{:>4}s  {committed} events committed", elapsed.as_secs());
    for tier in rewards::TIERS {
        let top = grpc
            .get_top(GetTopRequest {
                tier: tier.id,
                offset: 0,
                limit: 3,
            })
            .await
            .context("GetTop")?
            .into_inner();
        let entries: Vec<String> = top
            .entries
            .iter()
            .map(|e| format!("{}. {} {}", e.rank, e.player_id, e.score))
            .collect();
        println!(
            "       {:<9} v{:<6} {}",
            tier.name,
            top.version,
            entries.join("   ")
        );
    }
    Ok(())
}
