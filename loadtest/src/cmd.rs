//! The subcommands of `loadtest`, one module each. A command imports from
//! [`crate::harness`] and never from another command.

use clap::Subcommand;

mod baseline;
mod bench_claims;
mod bench_rebuild;
mod bench_router;
mod bench_spectators;
mod bench_writer;
mod demo;
mod peer_postgres;
mod run;

/// A subcommand and its options.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// How fast a quiet shard's leaderboards come back after FLUSHALL, beside their first
    /// delivery in the same run.
    BenchRebuild(bench_rebuild::Args),
    /// `baseline`, then the same offered load on the machine's PostgreSQL (one transaction per
    /// event inserting it and upserting the player's score; top-100 reads from an index), all
    /// three side by side. Uses a private database it creates and drops.
    PeerPostgres(peer_postgres::Args),
}

impl Command {
    /// Runs the command to its end.
    ///
    /// # Errors
    /// The command's error: a part that cannot be started or reached, or a failed check.
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Run(args) => run::run(args).await,
            Self::Baseline(args) => baseline::run(args).await,
            Self::Demo(args) => demo::run(args).await,
            Self::BenchWriter(args) => bench_writer::run(args).await,
            Self::BenchRouter(args) => bench_router::run(args).await,
            Self::BenchClaims(args) => bench_claims::run(args).await,
            Self::BenchSpectators(args) => bench_spectators::run(args).await,
            Self::BenchRebuild(args) => bench_rebuild::run(args).await,
            Self::PeerPostgres(args) => peer_postgres::run(args).await,
        }
    }
}
