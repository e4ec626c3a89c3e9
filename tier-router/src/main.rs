//! The `tier-router` binary: configuration, logging and signals around [`tier_router::App`].

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use hunt_serve::logging::{self, LogFormat};
use hunt_serve::{admin, cli};
use tier_router::config::{self, WsLimits};
use tier_router::{App, Failpoint, RouterConfig};

#[derive(Debug, Parser)]
#[command(name = "tier-router", version, about = "hunt-pipeline tier router")]
struct Args {
    /// Redis (redis://[:password@]host:port/); with --redis-cluster, a comma-separated list of
    /// Redis Cluster seed node URLs.
    #[arg(long, env = "HUNT_REDIS_URL", hide_env_values = true)]
    redis_url: String,
    /// Talk to a Redis Cluster: --redis-url lists seed nodes.
    #[arg(long, env = "HUNT_REDIS_CLUSTER")]
    redis_cluster: bool,
    /// A PEM file of the authorities that sign the Redis servers' certificates, for rediss://
    /// and rediss+sentinel:// (TLS) URLs; without it the system's authorities (or
    /// SSL_CERT_FILE's) are trusted.
    #[arg(long, env = "HUNT_REDIS_CA_FILE")]
    redis_ca_file: Option<std::path::PathBuf>,
    /// Where gRPC listens.
    #[arg(long, env = "HUNT_GRPC_ADDR", default_value_t = config::DEFAULT_GRPC_ADDR)]
    grpc_addr: SocketAddr,
    /// Where HTTP (`/healthz`, `/readyz`, `/metrics`) listens.
    #[arg(long, env = "HUNT_HTTP_ADDR", default_value_t = config::DEFAULT_HTTP_ADDR)]
    http_addr: SocketAddr,
    /// A port of its own for `/healthz`, `/readyz` and `/metrics` only (probes and scrapers),
    /// so they answer whatever clients do to the HTTP port; `off` (the default) serves them on
    /// the HTTP port only.
    #[arg(long, env = "HUNT_ADMIN_ADDR", default_value = "off")]
    admin_addr: hunt_serve::cli::AddrOrOff,
    /// Tier lease time-to-live, in milliseconds.
    #[arg(long, env = "HUNT_LEASE_TTL_MS", default_value_t = millis(config::DEFAULT_LEASE_TTL))]
    lease_ttl_ms: u64,
    /// Stream entries per apply call (1 to 1000).
    #[arg(long, env = "HUNT_APPLY_BATCH", default_value_t = config::DEFAULT_APPLY_BATCH)]
    apply_batch: usize,
    /// Stream entries per apply call at most while a tier is behind (apply batch to 1000).
    #[arg(long, env = "HUNT_MAX_APPLY_BATCH", default_value_t = config::DEFAULT_MAX_APPLY_BATCH)]
    max_apply_batch: usize,
    /// How long one stream read waits for new entries, in milliseconds (under a third of the
    /// lease TTL).
    #[arg(long, env = "HUNT_READ_BLOCK_MS", default_value_t = millis(config::DEFAULT_READ_BLOCK))]
    read_block_ms: u64,
    /// How often a router that does not own a tier refreshes its cached top, in milliseconds.
    #[arg(long, env = "HUNT_FOLLOWER_REFRESH_MS", default_value_t = millis(config::DEFAULT_FOLLOWER_REFRESH))]
    follower_refresh_ms: u64,
    /// How long a Redis command may take before the connection counts as lost, in milliseconds.
    #[arg(long, env = "HUNT_REDIS_TIMEOUT_MS", default_value_t = millis(config::DEFAULT_REDIS_RESPONSE_TIMEOUT))]
    redis_timeout_ms: u64,
    /// This router's id in leases and fence tokens (ASCII letters, digits, '-', '_'); a fresh
    /// random one by default, which is what fencing wants: one id per process start.
    #[arg(long, env = "HUNT_ROUTER_ID")]
    router_id: Option<String>,
    /// How long shutdown may take, in milliseconds.
    #[arg(long, env = "HUNT_SHUTDOWN_GRACE_MS", default_value_t = millis(config::DEFAULT_SHUTDOWN_GRACE))]
    shutdown_grace_ms: u64,
    /// The most gRPC connections open at once.
    #[arg(long, env = "HUNT_MAX_GRPC_CONNECTIONS", default_value_t = config::DEFAULT_MAX_GRPC_CONNECTIONS)]
    max_grpc_connections: usize,
    /// The most HTTP connections open at once.
    #[arg(long, env = "HUNT_MAX_HTTP_CONNECTIONS", default_value_t = config::DEFAULT_MAX_HTTP_CONNECTIONS)]
    max_http_connections: usize,
    /// How often at most a tier's WebSocket spectators get an update, in milliseconds.
    #[arg(long, env = "HUNT_WS_COALESCE_MS", default_value_t = millis(config::DEFAULT_WS_COALESCE))]
    ws_coalesce_ms: u64,
    /// Spectators connected to /ws at once; past it, upgrades get 503.
    #[arg(long, env = "HUNT_WS_MAX_CONNECTIONS", default_value_t = WsLimits::DEFAULT.max_connections)]
    ws_max_connections: usize,
    /// Tiers one spectator may follow at once.
    #[arg(long, env = "HUNT_WS_MAX_SUBSCRIPTIONS", default_value_t = WsLimits::DEFAULT.max_subscriptions)]
    ws_max_subscriptions: usize,
    /// Frames per second a spectator may send (a burst of twice that).
    #[arg(long, env = "HUNT_WS_MAX_FRAMES_PER_SECOND", default_value_t = WsLimits::DEFAULT.max_frames_per_second)]
    ws_max_frames_per_second: u32,
    /// How often a tier's owner sweeps every pending award through the dedup saga, in
    /// milliseconds.
    #[arg(long, env = "HUNT_SAGA_INTERVAL_MS", default_value_t = millis(config::DEFAULT_SAGA_INTERVAL))]
    saga_interval_ms: u64,
    /// Awards one saga step settles at most (1 to 10000).
    #[arg(long, env = "HUNT_SAGA_BATCH", default_value_t = config::DEFAULT_SAGA_BATCH)]
    saga_batch: usize,
    /// How long settled award records and sent-compensation marks are kept, in seconds.
    #[arg(long, env = "HUNT_RECORD_TTL_S", default_value_t = config::DEFAULT_RECORD_TTL.as_secs())]
    record_ttl_s: u64,
    /// Unacknowledged entries a shard's compensation inbox may hold before compensations wait.
    #[arg(long, env = "HUNT_INBOX_CAP", default_value_t = config::DEFAULT_INBOX_CAP)]
    inbox_cap: u64,
    /// The most connections open at once from one client address, on the gRPC and the HTTP
    /// port each; 0 (the default) for no limit, as behind an ingress every spectator shares
    /// its address.
    #[arg(long, env = "HUNT_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    max_connections_per_ip: usize,
    /// How long a client may take to open a connection (the HTTP/2 preface and SETTINGS on the gRPC port,
    /// each request head on the HTTP port), in milliseconds; past it the connection is closed.
    #[arg(long, env = "HUNT_HANDSHAKE_TIMEOUT_MS", default_value_t = millis(hunt_serve::listener::DEFAULT_HANDSHAKE_TIMEOUT))]
    handshake_timeout_ms: u64,
    /// How long a gRPC connection may have no request in service (no call, no Watch) before it
    /// is closed, in milliseconds; 0 never closes it. HTTP/2 pings do not count as activity.
    #[arg(long, env = "HUNT_GRPC_IDLE_TIMEOUT_MS", default_value_t = millis(hunt_serve::idle::DEFAULT_IDLE_TIMEOUT))]
    grpc_idle_timeout_ms: u64,
    /// Redis replicas that must hold a verdict before it is told or compensated, so a failover
    /// keeps it: 1 with a primary and replicas (Sentinel or Cluster), 0 without replicas.
    #[arg(long, env = "HUNT_CLAIM_REPLICAS", default_value_t = 0)]
    claim_replicas: u32,
    /// Aborts the process the first time it reaches this point (crash tests only).
    #[arg(long, hide = true)]
    failpoint: Option<Failpoint>,
    /// How logs are written to stderr (the level comes from `RUST_LOG`, `info` by default).
    #[arg(long, env = "HUNT_LOG_FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,
}

/// `duration` in whole milliseconds, as the flags take it.
const fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

fn main() -> ExitCode {
    let args: Args = match cli::parse() {
        Ok(args) => args,
        Err(code) => return code,
    };
    logging::init(args.log_format);
    let mut config = RouterConfig::new(args.redis_url);
    config.redis_cluster = args.redis_cluster;
    config.redis_ca_file = args.redis_ca_file;
    config.grpc_addr = args.grpc_addr;
    config.lease_ttl = Duration::from_millis(args.lease_ttl_ms);
    config.apply_batch = args.apply_batch;
    config.max_apply_batch = args.max_apply_batch;
    config.read_block = Duration::from_millis(args.read_block_ms);
    config.follower_refresh = Duration::from_millis(args.follower_refresh_ms);
    config.redis_response_timeout = Duration::from_millis(args.redis_timeout_ms);
    config.max_grpc_connections = args.max_grpc_connections;
    config.http_addr = args.http_addr;
    config.admin_addr = args.admin_addr.0;
    config.max_connections_per_ip = args.max_connections_per_ip;
    config.max_http_connections = args.max_http_connections;
    config.ws_coalesce = Duration::from_millis(args.ws_coalesce_ms);
    config.ws.max_connections = args.ws_max_connections;
    config.ws.max_subscriptions = args.ws_max_subscriptions;
    config.ws.max_frames_per_second = args.ws_max_frames_per_second;
    config.saga_interval = Duration::from_millis(args.saga_interval_ms);
    config.saga_batch = args.saga_batch;
    config.record_ttl = Duration::from_secs(args.record_ttl_s);
    config.inbox_cap = args.inbox_cap;
    config.claim_replicas = args.claim_replicas;
    config.handshake_timeout = Duration::from_millis(args.handshake_timeout_ms);
    config.grpc_idle_timeout =
        (args.grpc_idle_timeout_ms > 0).then(|| Duration::from_millis(args.grpc_idle_timeout_ms));
    config.failpoint = args.failpoint;
    if let Some(router_id) = args.router_id {
        config.router_id = router_id;
    }
    if let Err(err) = config.validate() {
        // Name the setting as the operator set it: its flag and environment variable.
        let command = <Args as clap::CommandFactory>::command();
        let field = match err.field {
            "redis_response_timeout" => "redis_timeout",
            field => field,
        };
        let setting = cli::flag_of(&command, field).unwrap_or_else(|| err.field.to_owned());
        return cli::config_error(format_args!("invalid {setting}: {}", err.reason));
    }
    let runtime = match cli::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        // Installed before anything records, so metric descriptions reach it too.
        let metrics = match admin::install_recorder() {
            Ok(handle) => handle,
            Err(err) => {
                logging::fatal(&err);
                return ExitCode::FAILURE;
            }
        };
        let app = match App::build(config).await {
            Ok(app) => app,
            Err(err) => {
                logging::fatal(&err);
                return ExitCode::FAILURE;
            }
        };
        let app = app.with_metrics(metrics);
        println!("grpc {}", app.grpc_addr());
        println!("http {}", app.http_addr());
        if let Some(admin) = app.admin_addr() {
            println!("admin {admin}");
        }
        let handle = app.spawn();
        hunt_serve::signal::shutdown_signal().await;
        tracing::info!(
            grace_ms = args.shutdown_grace_ms,
            "draining: health says NOT_SERVING, tiers are handed over, calls in service finish"
        );
        if handle
            .shutdown(Duration::from_millis(args.shutdown_grace_ms))
            .await
        {
            tracing::info!("drained; exiting");
            ExitCode::SUCCESS
        } else {
            logging::fatal("shutdown did not finish within the grace period");
            ExitCode::FAILURE
        }
    })
}
