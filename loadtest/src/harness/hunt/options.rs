//! The options of the hunt, shared by `loadtest run` and `loadtest baseline`, and the part of
//! them a report records.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::harness::report::Config;

/// Options of the hunt (`loadtest run`, and the first half of `loadtest baseline`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Options {
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
    /// Exit non-zero when a goal is missed (throughput, end-to-end and GetTop p99, no errors),
    /// not only when a correctness check fails.
    #[arg(long)]
    pub(crate) fail_on_goal: bool,
}

impl From<&Options> for Config {
    fn from(options: &Options) -> Self {
        Self {
            shards: options.shards,
            hunters: options.hunters,
            rate: options.rate,
            seconds: options.seconds,
            clues_per_map: options.clues_per_map,
            wave_seconds: options.wave_seconds,
            chests_per_wave: options.chests_per_wave,
            readers: options.readers,
            get_top_rate: options.get_top_rate,
            spectators: options.spectators,
            max_in_flight: options.max_in_flight,
            seed: options.seed,
            embedded: options.router_grpc.is_none(),
        }
    }
}
