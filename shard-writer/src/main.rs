//! The `shard-writer` binary: tools around a shard file.
//!
//! `generate` appends synthetic events through a real writer: a demo, a load source, and the
//! process that crash tests kill.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use shard_writer::synthetic::EventGenerator;
use shard_writer::{ShardWriter, WriterConfig};

/// Exit code for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "shard-writer",
    version,
    about = "hunt-pipeline shard writer tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Append synthetic events to a shard file and relay them to Redis.
    Generate(GenerateArgs),
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// The shard's SQLite file.
    #[arg(long)]
    db: PathBuf,
    /// The shard's id.
    #[arg(long)]
    shard: u32,
    /// Redis to relay to; without it events stay in the file.
    #[arg(long, env = "HUNT_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Events to append; 0 appends until interrupted.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Events per second; 0 appends as fast as commits allow.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Distinct players.
    #[arg(long, default_value_t = 1000)]
    players: u32,
    /// Seed of the event generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print `ok <seq> <tier> <tier_seq>` on stdout for every committed append.
    #[arg(long)]
    print_commits: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Generate(args) => runtime.block_on(generate(args)),
    }
}

async fn generate(args: GenerateArgs) -> ExitCode {
    let mut config = WriterConfig::new(&args.db, args.shard);
    config.redis_url = args.redis_url;
    if let Err(err) = config.validate() {
        eprintln!("error: {err}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let writer = match ShardWriter::open(config).await {
        Ok(writer) => writer,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut events = EventGenerator::new(args.seed, args.players);
    let started = Instant::now();
    let interval = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));
    let mut appended = 0u64;
    let mut status = ExitCode::SUCCESS;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    while args.count == 0 || appended < args.count {
        if let Some(interval) = interval {
            let due = started + interval.mul_f64(appended as f64);
            tokio::select! {
                _ = &mut stop => break,
                () = tokio::time::sleep_until(due.into()) => {}
            }
        }
        let result = tokio::select! {
            _ = &mut stop => break,
            result = writer.append(events.next_event()) => result,
        };
        match result {
            Ok(done) => {
                appended += 1;
                if args.print_commits {
                    println!("ok {} {} {}", done.id.seq, done.tier, done.tier_seq);
                }
            }
            Err(err) => {
                eprintln!("error: append failed: {err}");
                status = ExitCode::FAILURE;
                break;
            }
        }
    }
    if let Err(err) = writer.shutdown().await {
        eprintln!("error: {err}");
        status = ExitCode::FAILURE;
    }
    eprintln!(
        "appended {appended} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    status
}
