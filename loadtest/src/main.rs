//! `loadtest`: the demo and the benchmarks of hunt-pipeline.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod baseline;
mod bench_claims;
mod bench_router;
mod bench_spectators;
mod bench_writer;
mod demo;
mod harness;
mod run;

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "hunt-pipeline demo and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A global treasure hunt through the whole pipeline (shards, Redis, router, gRPC readers,
    /// WebSocket spectators), measured, then checked against the shards' own logs; exits
    /// non-zero when a check fails.
    Run(run::Args),
    /// `run`, then the same offered load the naive way (one transaction, one XADD and one
    /// ZINCRBY round trip per event), side by side.
    Baseline(baseline::Args),
    /// A live hunt: shards append, a tier router applies, the leaderboards move (gRPC).
    Demo(demo::Args),
    /// Durable appends per second and append latency of one shard, with the relay publishing,
    /// beside a naive baseline (one transaction and one XADD round trip per event).
    BenchWriter(bench_writer::Args),
    /// Events/s one tier router applies, append-to-visible latency, and GetTop latency under
    /// load, beside a naive baseline (one ZINCRBY round trip per event).
    BenchRouter(bench_router::Args),
    /// Clue claim latency with many hunters racing, beside the old lock-based claim and a bare
    /// PING in the same run.
    BenchClaims(bench_claims::Args),
    /// WebSocket spectators held by one router, and delivery latency from append to delta.
    BenchSpectators(bench_spectators::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
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
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Baseline(args) => baseline::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::BenchWriter(args) => bench_writer::run(args).await,
            Command::BenchRouter(args) => bench_router::run(args).await,
            Command::BenchClaims(args) => bench_claims::run(args).await,
            Command::BenchSpectators(args) => bench_spectators::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
