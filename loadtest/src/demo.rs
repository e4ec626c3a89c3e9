//! The demo: shards append a steady hunt, a tier router applies it, and the leaderboards move
//! live, read through the router's gRPC API as any client would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leaderboard_proto::rewards;
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::v1::leaderboard_client::LeaderboardClient;
use leaderboard_proto::v1::{GetTopRequest, HuntEvent};
use shard_writer::synthetic::EventGenerator;
use shard_writer::{ShardWriter, WriterConfig};
use tier_router::{App, RouterConfig, StartError};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::redis_target::RedisTarget;

/// Options of `loadtest demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Redis to use; without it a private redis-server is started on a free port.
    #[arg(long, env = "HUNT_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
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

/// Per tier: player → the points the demo appended for them.
type Totals = BTreeMap<u32, BTreeMap<String, i64>>;

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let redis = RedisTarget::new(args.redis_url)?;
    let dir = tempfile::tempdir().context("creating a directory for the shard files")?;
    let mut config = RouterConfig::new(redis.url.clone());
    config.grpc_addr = args.grpc_addr;
    config.http_addr = args.http_addr;
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(StartError::Bind { addr, source }) => bail!(
            "cannot listen on {addr} ({source}); pass --grpc-addr 127.0.0.1:0 and \
             --http-addr 127.0.0.1:0 for free ports"
        ),
        Err(err) => return Err(err).context("starting the tier router"),
    };
    let grpc_addr = app.grpc_addr();
    let http_addr = app.http_addr();
    let router = app.spawn();
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
        "{} shards appending {} events/s for {} hunters over {} tiers; shard files in {}",
        args.shards,
        args.rate,
        args.players,
        rewards::TIERS.len(),
        dir.path().display()
    );
    println!("tier router gRPC on {grpc_addr} (hunt.v1.Leaderboard, with reflection). Try:");
    println!(
        "  grpcurl -plaintext -d '{{\"tier\":1,\"limit\":10}}' {grpc_addr} hunt.v1.Leaderboard/GetTop"
    );
    println!("  grpcurl -plaintext -d '{{\"tier\":1}}' {grpc_addr} hunt.v1.Leaderboard/Watch");
    println!("live leaderboards: http://{http_addr}/ (metrics: http://{http_addr}/metrics)");
    if args.seconds == 0 {
        println!("Ctrl-C stops the demo.");
    }

    let totals: Arc<Mutex<Totals>> = Arc::default();
    let stop = CancellationToken::new();
    let per_shard = (args.rate as f64 / f64::from(args.shards)).max(0.1);
    let mut producers = tokio::task::JoinSet::new();
    for writer in &writers {
        let (writer, stop, totals) = (writer.clone(), stop.clone(), Arc::clone(&totals));
        let players = args.players;
        producers.spawn(async move {
            let mut events = EventGenerator::new(u64::from(writer.shard_id()), players);
            let interval = Duration::from_secs_f64(1.0 / per_shard);
            let started = tokio::time::Instant::now();
            let mut appended = 0u64;
            while !stop.is_cancelled() {
                tokio::time::sleep_until(started + interval.mul_f64(appended as f64)).await;
                let event = events.next_event();
                let scored = points_of(&event);
                writer.append(event).await?;
                if let Some((tier, player, points)) = scored
                    && let Ok(mut totals) = totals.lock()
                {
                    *totals.entry(tier).or_default().entry(player).or_default() += points;
                }
                appended += 1;
            }
            Ok::<u64, shard_writer::AppendError>(appended)
        });
    }

    let mut grpc = LeaderboardClient::connect(format!("http://{grpc_addr}"))
        .await
        .context("connecting to the router's gRPC")?;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let interrupted = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break true,
            _ = ticker.tick() => {
                print_tops(started.elapsed(), &mut grpc, &writers).await?;
                if args.seconds > 0 && started.elapsed() >= Duration::from_secs(args.seconds) {
                    break false;
                }
            }
        }
    };
    stop.cancel();
    let mut appended = 0;
    while let Some(result) = producers.join_next().await {
        appended += result??;
    }
    for writer in &writers {
        writer.shutdown().await?;
    }
    if !interrupted {
        let totals = totals.lock().map(|t| t.clone()).unwrap_or_default();
        verify(&mut grpc, &totals).await?;
        println!(
            "{appended} events appended; every tier's leaderboard equals the totals of what was \
             appended: each event applied exactly once."
        );
    }
    if !router.shutdown(Duration::from_secs(10)).await {
        bail!("the tier router did not stop within 10 s");
    }
    Ok(())
}

/// The (tier, player, points) an event adds to a leaderboard, as the demo generates them.
fn points_of(event: &HuntEvent) -> Option<(u32, String, i64)> {
    match &event.kind {
        Some(Kind::ScoreGained(e)) => Some((event.tier, e.player_id.clone(), e.points)),
        Some(Kind::TreasureAwarded(e)) => Some((event.tier, e.player_id.clone(), e.points)),
        _ => None,
    }
}

/// One line per tier: its top 3 as the router serves them.
async fn print_tops(
    elapsed: Duration,
    grpc: &mut LeaderboardClient<Channel>,
    writers: &[ShardWriter],
) -> anyhow::Result<()> {
    let committed: u64 = writers
        .iter()
        .flat_map(|w| rewards::tier_ids().map(|tier| w.committed_tier_seq(tier)))
        .sum();
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

/// Waits (up to 30 s) until every tier's whole leaderboard, paged through `GetTop`, equals the
/// totals of what was appended.
async fn verify(grpc: &mut LeaderboardClient<Channel>, totals: &Totals) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for tier in rewards::tier_ids() {
        let want = totals.get(&tier).cloned().unwrap_or_default();
        loop {
            let got = board(grpc, tier).await?;
            if got == want {
                break;
            }
            if Instant::now() >= deadline {
                let wrong = want
                    .iter()
                    .find(|(player, points)| got.get(*player) != Some(points))
                    .map(|(player, points)| {
                        format!("{player}: appended {points}, board {:?}", got.get(player))
                    })
                    .unwrap_or_else(|| "players on the board that were never appended".into());
                bail!(
                    "tier {tier}: the leaderboard differs from the appended totals ({} players \
                     appended, {} on the board; first difference: {wrong})",
                    want.len(),
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The whole leaderboard of `tier`, player → score, paged through `GetTop`.
pub(crate) async fn board(
    grpc: &mut LeaderboardClient<Channel>,
    tier: u32,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut board = BTreeMap::new();
    loop {
        let page = grpc
            .get_top(GetTopRequest {
                tier,
                offset: u32::try_from(board.len()).unwrap_or(u32::MAX),
                limit: 1_000,
            })
            .await
            .context("GetTop")?
            .into_inner();
        let full = page.entries.len() == 1_000;
        board.extend(page.entries.into_iter().map(|e| (e.player_id, e.score)));
        if !full {
            return Ok(board);
        }
    }
}
