//! The `shard-writer` binary: the ingest sidecar and tools around a shard file.
//!
//! - `serve`: the ingest sidecar (`hunt.v1.IngestService` over gRPC) for shards in other languages.
//! - `inspect`: a shard file's state, read-only (safe beside a running writer).
//! - `replay`: asks the shard's running writer to re-send a tier from a `tier_seq`.
//! - `backup` / `restore`: an online snapshot of a shard file, and bringing one back.
//! - `generate`: synthetic events through a real writer: a demo, a load source, and the process
//!   that crash tests kill.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hunt_serve::logging::{self, LogFormat};
use hunt_serve::{admin, cli};
use shard_writer::ingest::{IngestConfig, Sidecar, StartError};
use shard_writer::inspect::ShardState;
use shard_writer::synthetic::EventGenerator;
use shard_writer::{ConfigError, OpenError, ShardWriter, WriterConfig, backup, replay};

#[derive(Debug, Parser)]
#[command(
    name = "shard-writer",
    version,
    about = "hunt-pipeline shard writer tools"
)]
struct Cli {
    /// How logs are written to stderr (the level comes from `RUST_LOG`, `info` by default).
    #[arg(long, global = true, env = "HUNT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the ingest sidecar: hunt.v1.IngestService over gRPC for one shard file.
    Serve(ServeArgs),
    /// Print a shard file's state (read-only; safe beside a running writer).
    Inspect(InspectArgs),
    /// Ask the shard's running writer to re-send a tier from a tier_seq.
    Replay(ReplayArgs),
    /// Write a consistent snapshot of a shard file (online; never overwrites).
    Backup(BackupArgs),
    /// Restore a snapshot as a shard file (never overwrites; the first open needs Redis).
    Restore(RestoreArgs),
    /// Append synthetic events to a shard file and relay them to Redis.
    Generate(GenerateArgs),
    /// Open the claims gate after a Redis data loss without the shards that have not restored
    /// their decisions (a shard gone for good). Loud: what only those shards recorded is lost.
    OpenClaims(OpenClaimsArgs),
}

#[derive(Debug, clap::Args)]
struct OpenClaimsArgs {
    /// The Redis the hunt's shards claim against.
    #[arg(long, env = "HUNT_REDIS_URL", hide_env_values = true)]
    redis_url: String,
    /// Whether --redis-url lists Redis Cluster seed nodes (comma-separated) instead of naming
    /// one Redis.
    #[arg(long, env = "HUNT_REDIS_CLUSTER")]
    redis_cluster: bool,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The shard's SQLite file (its folder must exist, on a local disk).
    #[arg(long, env = "HUNT_SHARD_DB")]
    db: PathBuf,
    /// The shard's id.
    #[arg(long, env = "HUNT_SHARD_ID")]
    shard_id: u32,
    /// Redis to relay to (redis://[:password@]host:port/); without it events stay in the file
    /// and claims answer UNAVAILABLE.
    #[arg(long, env = "HUNT_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Whether --redis-url lists Redis Cluster seed nodes (comma-separated) instead of naming
    /// one Redis.
    #[arg(long, env = "HUNT_REDIS_CLUSTER")]
    redis_cluster: bool,
    /// A PEM file of the authorities that sign the Redis servers' certificates, for rediss://
    /// and rediss+sentinel:// (TLS) URLs; without it the system's authorities (or
    /// SSL_CERT_FILE's) are trusted.
    #[arg(long, env = "HUNT_REDIS_CA_FILE")]
    redis_ca_file: Option<PathBuf>,
    /// Where gRPC listens.
    #[arg(long, env = "HUNT_GRPC_ADDR", default_value = "0.0.0.0:50052")]
    grpc_addr: SocketAddr,
    /// Where HTTP serves Prometheus metrics (`/metrics`) and liveness (`/healthz`); `off` (or
    /// an empty value) serves none.
    #[arg(long, env = "HUNT_METRICS_ADDR", default_value = "0.0.0.0:9102")]
    metrics_addr: hunt_serve::cli::AddrOrOff,
    /// The most gRPC connections open at once.
    #[arg(long, env = "HUNT_MAX_CONNECTIONS", default_value_t = 1_024)]
    max_connections: usize,
    /// How long a client may take to open a connection (the HTTP/2 preface and SETTINGS on the gRPC port,
    /// each request head on the metrics port), in milliseconds; past it the connection is
    /// closed.
    #[arg(long, env = "HUNT_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    handshake_timeout_ms: u64,
    /// How long a gRPC connection may have no request in service before it is closed, in
    /// milliseconds; 0 never closes it. HTTP/2 pings do not count as activity.
    #[arg(long, env = "HUNT_GRPC_IDLE_TIMEOUT_MS", default_value_t = 300_000)]
    grpc_idle_timeout_ms: u64,
    /// The most gRPC connections open at once from one client address; 0 (the default) for no
    /// limit.
    #[arg(long, env = "HUNT_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    max_connections_per_ip: usize,
    /// Events waiting for group commit; a request that does not fit gets RESOURCE_EXHAUSTED.
    #[arg(long, env = "HUNT_QUEUE_CAPACITY", default_value_t = 65_536)]
    queue_capacity: usize,
    /// The most events in one Append (default: 1000, or the queue capacity if smaller).
    #[arg(long, env = "HUNT_MAX_BATCH")]
    max_batch: Option<usize>,
    /// How long shutdown may spend finishing requests and publishing, in milliseconds.
    #[arg(long, env = "HUNT_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    shutdown_grace_ms: u64,
    /// The shards of the hunt that claim clues or chests, this one included: after Redis loses
    /// its data, claims are refused until this many have restored their decisions. Give every
    /// shard the same count.
    #[arg(long, env = "HUNT_CLAIM_SHARDS", default_value_t = 1)]
    claim_shards: u32,
    /// Redis replicas that must hold a claim's answer (and a compensation) before it is told,
    /// so a failover keeps it: 1 with a primary and replicas (Sentinel or Cluster), 0 without
    /// replicas.
    #[arg(long, env = "HUNT_CLAIM_REPLICAS", default_value_t = 0)]
    claim_replicas: u32,
    /// How often the writer reads the claims gate to notice a Redis that lost its data (and
    /// whether the boards are rebuilt), in milliseconds.
    #[arg(long, env = "HUNT_CLAIMS_POLL_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    claims_poll_ms: u64,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// The shard's SQLite file.
    #[arg(long, env = "HUNT_SHARD_DB")]
    db: PathBuf,
    /// Also read the shard's marks in this Redis.
    #[arg(long, env = "HUNT_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Whether --redis-url lists Redis Cluster seed nodes (comma-separated) instead of naming
    /// one Redis.
    #[arg(long, env = "HUNT_REDIS_CLUSTER")]
    redis_cluster: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// The shard's SQLite file (names the shard, and the range it still holds).
    #[arg(long, env = "HUNT_SHARD_DB")]
    db: PathBuf,
    /// The Redis the shard's writer relays to.
    #[arg(long, env = "HUNT_REDIS_URL", hide_env_values = true)]
    redis_url: String,
    /// Whether --redis-url lists Redis Cluster seed nodes (comma-separated) instead of naming
    /// one Redis.
    #[arg(long, env = "HUNT_REDIS_CLUSTER")]
    redis_cluster: bool,
    /// The tier to re-send.
    #[arg(long)]
    tier: u32,
    /// The first tier_seq to re-send.
    #[arg(long)]
    from: u64,
}

#[derive(Debug, clap::Args)]
struct BackupArgs {
    /// The shard's SQLite file.
    #[arg(long, env = "HUNT_SHARD_DB")]
    db: PathBuf,
    /// Where the snapshot goes; must not exist.
    #[arg(long)]
    to: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RestoreArgs {
    /// The snapshot written by `backup`.
    #[arg(long)]
    from: PathBuf,
    /// The shard file to create; must not exist.
    #[arg(long, env = "HUNT_SHARD_DB")]
    db: PathBuf,
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
    /// Whether --redis-url lists Redis Cluster seed nodes (comma-separated) instead of naming
    /// one Redis.
    #[arg(long, env = "HUNT_REDIS_CLUSTER")]
    redis_cluster: bool,
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
    let cli: Cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    logging::init(cli.log_format);
    let runtime = match cli::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Inspect(args) => runtime.block_on(inspect(args)),
        Command::Replay(args) => runtime.block_on(run_replay(args)),
        Command::Generate(args) => runtime.block_on(generate(args)),
        Command::Backup(args) => run_backup(&args),
        Command::Restore(args) => run_restore(&args),
        Command::OpenClaims(args) => runtime.block_on(open_claims(args)),
    }
}

/// A configuration error, naming the setting as the operator set it: the flag of `Command`'s
/// arguments (and its environment variable) when one sets it, else the setting's name.
fn config_error<Command: clap::Args>(err: &ConfigError) -> ExitCode {
    let ConfigError::Invalid { field, reason } = err;
    let command = Command::augment_args(clap::Command::new("shard-writer"));
    let setting = cli::flag_of(&command, field).unwrap_or_else(|| (*field).to_owned());
    cli::config_error(format_args!("invalid {setting}: {reason}"))
}

async fn serve(args: ServeArgs) -> ExitCode {
    let mut writer = WriterConfig::new(&args.db, args.shard_id);
    writer.redis_url = args.redis_url;
    writer.redis_cluster = args.redis_cluster;
    writer.redis_ca_file = args.redis_ca_file;
    writer.queue_capacity = args.queue_capacity;
    writer.shutdown_grace = Duration::from_millis(args.shutdown_grace_ms);
    writer.claim_shards = args.claim_shards;
    writer.claim_replicas = args.claim_replicas;
    writer.claims_poll = Duration::from_millis(args.claims_poll_ms);
    let mut config = IngestConfig::new(writer);
    config.grpc_addr = args.grpc_addr;
    config.max_connections = args.max_connections;
    config.handshake_timeout = Duration::from_millis(args.handshake_timeout_ms);
    config.grpc_idle_timeout =
        (args.grpc_idle_timeout_ms > 0).then(|| Duration::from_millis(args.grpc_idle_timeout_ms));
    config.max_connections_per_ip = args.max_connections_per_ip;
    if let Some(max_batch) = args.max_batch {
        config.max_batch = max_batch;
    }
    config.metrics_addr = args.metrics_addr.0;
    if let Err(err) = config.validate() {
        return config_error::<ServeArgs>(&err);
    }
    // Installed before the writer opens, so metric descriptions reach it too.
    let metrics = match config.metrics_addr {
        Some(_) => match admin::install_recorder() {
            Ok(handle) => Some(handle),
            Err(err) => {
                logging::fatal(&err);
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let sidecar = match Sidecar::build(config).await {
        Ok(sidecar) => sidecar,
        Err(StartError::Config(err) | StartError::Open(OpenError::Config(err))) => {
            return config_error::<ServeArgs>(&err);
        }
        Err(err) => {
            logging::fatal(&err);
            return ExitCode::FAILURE;
        }
    };
    let sidecar = match metrics {
        Some(handle) => sidecar.with_metrics(handle),
        None => sidecar,
    };
    println!("grpc {}", sidecar.local_addr());
    if let Some(addr) = sidecar.metrics_addr() {
        println!("metrics {addr}");
    }
    let handle = sidecar.spawn();
    hunt_serve::signal::shutdown_signal().await;
    tracing::info!("draining: finishing requests, committing and publishing");
    match handle
        .shutdown(Duration::from_millis(args.shutdown_grace_ms))
        .await
    {
        Ok(()) => {
            tracing::info!("drained; exiting");
            ExitCode::SUCCESS
        }
        Err(err) => {
            logging::fatal(&err);
            ExitCode::FAILURE
        }
    }
}

async fn inspect(args: InspectArgs) -> ExitCode {
    let state = match ShardState::read(&args.db) {
        Ok(state) => state,
        Err(err) => {
            logging::fatal(&err);
            return ExitCode::FAILURE;
        }
    };
    let state = match &args.redis_url {
        Some(url) => match state
            .with_redis(url, args.redis_cluster, Duration::from_secs(2))
            .await
        {
            Ok(state) => state,
            Err(err) => {
                logging::fatal(&err);
                return ExitCode::FAILURE;
            }
        },
        None => state,
    };
    if args.json {
        println!("{}", state.to_json());
    } else {
        print!("{state}");
    }
    ExitCode::SUCCESS
}

async fn run_replay(args: ReplayArgs) -> ExitCode {
    match replay::request_replay(
        &args.db,
        &args.redis_url,
        args.redis_cluster,
        args.tier,
        args.from,
        Duration::from_secs(2),
    )
    .await
    {
        Ok(request) => {
            println!(
                "replay of shard {} tier {} from tier_seq {} to {} requested; the shard's running \
                 writer re-sends it",
                request.shard_id, request.tier, request.from, request.to
            );
            if let Some(first) = request.first_retained {
                println!(
                    "warning: tier_seqs below {first} were pruned from the file and cannot be \
                     re-sent"
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            logging::fatal(&err);
            ExitCode::FAILURE
        }
    }
}

async fn open_claims(args: OpenClaimsArgs) -> ExitCode {
    let opened = shard_writer::recovery::open_claims_gate(
        &args.redis_url,
        args.redis_cluster,
        Duration::from_secs(2),
    )
    .await;
    match opened {
        Ok(opened) => {
            match opened.incarnation {
                Some(incarnation) => println!(
                    "claims gate of incarnation {incarnation} opened with {} of {} shards joined",
                    opened.joined, opened.expected
                ),
                None => println!("Redis holds no claims state: nothing to open"),
            }
            ExitCode::SUCCESS
        }
        Err(reason) => {
            logging::fatal(format_args!(
                "Redis at {}: {reason}",
                shard_writer::redact_url(&args.redis_url)
            ));
            ExitCode::FAILURE
        }
    }
}

fn run_backup(args: &BackupArgs) -> ExitCode {
    match backup::backup(&args.db, &args.to) {
        Ok(state) => {
            println!(
                "backup of shard {} written to {}: epoch {}, last seq {}",
                state.shard_id,
                args.to.display(),
                state.epoch,
                state.last_seq
            );
            for tier in state
                .tiers
                .iter()
                .filter(|t| !t.confirmed && t.committed > 0)
            {
                println!(
                    "warning: tier {} holds provisional tier_seqs (its writer had not reached \
                     Redis); take the backup again once it has",
                    tier.tier
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            logging::fatal(&err);
            ExitCode::FAILURE
        }
    }
}

fn run_restore(args: &RestoreArgs) -> ExitCode {
    match backup::restore(&args.from, &args.db) {
        Ok(state) => {
            println!(
                "restored shard {} to {} (last seq {}); its first open takes a new epoch from \
                 Redis and continues every tier above Redis's published marks. Events committed \
                 after the backup and never published are lost.",
                state.shard_id,
                args.db.display(),
                state.last_seq
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            logging::fatal(&err);
            ExitCode::FAILURE
        }
    }
}

async fn generate(args: GenerateArgs) -> ExitCode {
    let mut config = WriterConfig::new(&args.db, args.shard);
    config.redis_url = args.redis_url;
    config.redis_cluster = args.redis_cluster;
    if let Err(err) = config.validate() {
        return config_error::<GenerateArgs>(&err);
    }
    let writer = match ShardWriter::open(config).await {
        Ok(writer) => writer,
        Err(err) => {
            logging::fatal(&err);
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
                logging::fatal(format_args!("append failed: {err}"));
                status = ExitCode::FAILURE;
                break;
            }
        }
    }
    if let Err(err) = writer.shutdown().await {
        logging::fatal(&err);
        status = ExitCode::FAILURE;
    }
    eprintln!(
        "appended {appended} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    status
}
