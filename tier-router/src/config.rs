//! Router configuration: every default and limit of the tier router lives here.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use hunt_redis::connection::RedisTarget;

/// Why a configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Where gRPC listens by default: every interface, port 50051.
pub const DEFAULT_GRPC_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 50051));
/// Where HTTP listens by default: every interface, port 8080.
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080));
/// The default tier lease time-to-live.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
/// Stream entries per `hunt_apply` call by default while a tier keeps up.
pub const DEFAULT_APPLY_BATCH: usize = 100;
/// Stream entries per `hunt_apply` call at most by default while a tier is behind.
pub const DEFAULT_MAX_APPLY_BATCH: usize = 500;
/// How long one stream read waits for new entries by default.
pub const DEFAULT_READ_BLOCK: Duration = Duration::from_millis(100);
/// How often by default a tier this router does not own refreshes its cached top.
pub const DEFAULT_FOLLOWER_REFRESH: Duration = Duration::from_millis(200);
/// How long a Redis command may take by default.
pub const DEFAULT_REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection attempt to Redis may take by default.
pub const DEFAULT_REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The first wait after a Redis failure by default.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(100);
/// The cap of the back-off by default.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The most gRPC connections open at once by default.
pub const DEFAULT_MAX_GRPC_CONNECTIONS: usize = 4_096;
/// The most HTTP connections open at once by default.
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 16_384;
/// How often at most by default a tier's WebSocket spectators get an update.
pub const DEFAULT_WS_COALESCE: Duration = Duration::from_millis(100);
/// How often by default a tier's owner sweeps every pending award through the dedup saga.
pub const DEFAULT_SAGA_INTERVAL: Duration = Duration::from_secs(30);
/// Awards one saga step settles at most by default.
pub const DEFAULT_SAGA_BATCH: usize = 500;
/// How long settled award records are kept by default.
pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Unacknowledged entries a shard's compensation inbox may hold by default.
pub const DEFAULT_INBOX_CAP: u64 = 100_000;
/// How long the binary's shutdown may take by default (shorter than the pod's termination
/// grace period).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How a router runs. Build it with [`RouterConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Redis (`redis://[:password@]host:port/`); with [`redis_cluster`](Self::redis_cluster),
    /// a comma-separated list of Redis Cluster seed node URLs.
    pub redis_url: String,
    /// Whether `redis_url` names a Redis Cluster (by its seed nodes) instead of one Redis.
    pub redis_cluster: bool,
    /// The authorities (a PEM file) that sign the certificates of `rediss://` (TLS) Redis
    /// servers; `None` trusts the system's (or `SSL_CERT_FILE`'s).
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Where gRPC listens; port 0 picks a free one.
    pub grpc_addr: SocketAddr,
    /// This router instance's name in leases and fence tokens; unique per process start.
    pub router_id: String,
    /// How long a tier lease lasts without renewal; renewed at a third of it.
    pub lease_ttl: Duration,
    /// Stream entries per `hunt_apply` call while the tier keeps up (about 1 ms of Redis time
    /// per 100, so claims queued behind a call wait little).
    pub apply_batch: usize,
    /// Stream entries per `hunt_apply` call at most while the tier is behind: every full read
    /// doubles the batch up to this, the first short read brings it back to `apply_batch`.
    /// Bigger calls save round trips when a backlog must be caught up, at the price of claims
    /// waiting longer behind each one. Equal to `apply_batch` turns the doubling off.
    pub max_apply_batch: usize,
    /// How long one stream read waits for new entries.
    pub read_block: Duration,
    /// How often a tier this router does not own refreshes its cached top.
    pub follower_refresh: Duration,
    /// How long a Redis command may take.
    pub redis_response_timeout: Duration,
    /// How long a connection attempt to Redis may take.
    pub redis_connect_timeout: Duration,
    /// The first wait after a Redis failure; doubles per failure, capped at `max_backoff`.
    pub backoff: Duration,
    /// The cap of the back-off.
    pub max_backoff: Duration,
    /// The most gRPC connections open at once; past it, newcomers wait in the kernel's backlog.
    pub max_grpc_connections: usize,
    /// Where HTTP (`/healthz`, `/readyz`, `/metrics`) listens.
    pub http_addr: SocketAddr,
    /// The most HTTP connections open at once.
    pub max_http_connections: usize,
    /// Where a port of its own serves only `/healthz`, `/readyz` and `/metrics` (for probes and
    /// scrapers, with a small cap of its own), so they answer whatever clients do to the HTTP
    /// port; `None` serves them on the HTTP port only.
    pub admin_addr: Option<SocketAddr>,
    /// The most connections open at once from one client address, on the gRPC port and on the
    /// HTTP port each; 0 for no limit (behind an ingress every spectator shares its address).
    pub max_connections_per_ip: usize,
    /// How long a client may take to open a connection: the HTTP/2 preface and SETTINGS on the gRPC port,
    /// each request head on the HTTP port. Past it the connection is closed, so silent and
    /// slow-loris sockets cannot hold the connection caps.
    pub handshake_timeout: Duration,
    /// How long a gRPC connection may have no request in service before it is closed; `None`
    /// never closes it.
    pub grpc_idle_timeout: Option<Duration>,
    /// How often at most a tier's WebSocket spectators get an update (changes in between are
    /// coalesced into one).
    pub ws_coalesce: Duration,
    /// Limits of `/ws`.
    pub ws: WsLimits,
    /// How often a tier's owner sweeps every pending award through the dedup saga.
    pub saga_interval: Duration,
    /// Awards one saga step settles at most (one claim pipeline, one settle call).
    pub saga_batch: usize,
    /// How long settled award records (and the shards' sent-compensation marks) are kept.
    pub record_ttl: Duration,
    /// Redis replicas that must hold a verdict before it is told (`GetAward`, `GetChest`) or a
    /// compensation is sent for it (`WAIT` after a barrier write), so a failover to one of them
    /// keeps every verdict anyone has seen. 0 (no replicas) tells at once.
    pub claim_replicas: u32,
    /// Unacknowledged entries a shard's compensation inbox may hold; past it, compensations
    /// wait for a later sweep.
    pub inbox_cap: u64,
    /// A point where the process aborts, for crash tests; `None` in production.
    pub failpoint: Option<Failpoint>,
}

/// A point in the dedup saga where a process configured with it aborts the first time it gets
/// there: the crash tests use it to kill a router between two steps of the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// After the chest claims, before the settle (`saga-after-claim`).
    SagaAfterClaim,
    /// After the settle, before the compensations (`saga-after-settle`).
    SagaAfterSettle,
}

impl Failpoint {
    /// The failpoint's name on the command line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SagaAfterClaim => "saga-after-claim",
            Self::SagaAfterSettle => "saga-after-settle",
        }
    }
}

impl std::str::FromStr for Failpoint {
    type Err = ConfigError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [Self::SagaAfterClaim, Self::SagaAfterSettle]
            .into_iter()
            .find(|point| point.as_str() == name)
            .ok_or_else(|| ConfigError {
                field: "failpoint",
                reason: "must be saga-after-claim or saga-after-settle".to_owned(),
            })
    }
}

/// Entries kept in each tier's in-memory top.
pub const CACHED_TOP: usize = 100;
/// How often at most a tier worker runs an inline saga step after batches that recorded awards:
/// under a backlog, the awards of many batches settle in one step instead of one per batch.
pub const SAGA_INLINE_COALESCE: Duration = Duration::from_millis(50);
/// Limits of the WebSocket side (`/ws`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    /// Spectators connected at once; past it, an upgrade is refused with 503.
    pub max_connections: usize,
    /// The largest frame a client may send, in bytes.
    pub max_frame_bytes: usize,
    /// Tiers one connection may follow at once.
    pub max_subscriptions: usize,
    /// Frames a client may send per second (a burst of twice that is allowed); past it, frames
    /// get `rate_limited` errors, and a client that keeps on is closed.
    pub max_frames_per_second: u32,
    /// Frames queued per connection before its subscriptions start skipping to snapshots.
    pub queue: usize,
    /// How long the socket may take to accept one frame.
    pub send_timeout: Duration,
    /// Snapshots a connection may need for falling behind before it is closed.
    pub max_resyncs: u32,
    /// How often the server pings an idle connection.
    pub ping_interval: Duration,
    /// How long a connection may stay silent (no frame, not even a pong) before it is closed.
    pub idle_timeout: Duration,
}

impl WsLimits {
    /// The default limits.
    pub const DEFAULT: Self = Self {
        max_connections: 10_000,
        max_frame_bytes: 4 * 1024,
        max_subscriptions: 16,
        max_frames_per_second: 20,
        queue: 64,
        send_timeout: Duration::from_secs(10),
        max_resyncs: 10,
        ping_interval: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(60),
    };
}

impl Default for WsLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The largest gRPC message the router accepts or sends: the contract's 4 MiB.
pub const MAX_MESSAGE_BYTES: usize = leaderboard_proto::limits::MAX_MESSAGE_BYTES;
/// The most gRPC streams (calls, `Watch` included) one connection may have open at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

impl RouterConfig {
    /// A configuration with every default, for Redis at `redis_url`.
    #[must_use]
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            redis_cluster: false,
            redis_ca_file: None,
            grpc_addr: DEFAULT_GRPC_ADDR,
            router_id: random_router_id(),
            lease_ttl: DEFAULT_LEASE_TTL,
            apply_batch: DEFAULT_APPLY_BATCH,
            max_apply_batch: DEFAULT_MAX_APPLY_BATCH,
            read_block: DEFAULT_READ_BLOCK,
            follower_refresh: DEFAULT_FOLLOWER_REFRESH,
            redis_response_timeout: DEFAULT_REDIS_RESPONSE_TIMEOUT,
            redis_connect_timeout: DEFAULT_REDIS_CONNECT_TIMEOUT,
            backoff: DEFAULT_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_grpc_connections: DEFAULT_MAX_GRPC_CONNECTIONS,
            http_addr: DEFAULT_HTTP_ADDR,
            max_http_connections: DEFAULT_MAX_HTTP_CONNECTIONS,
            admin_addr: None,
            max_connections_per_ip: 0,
            handshake_timeout: hunt_serve::listener::DEFAULT_HANDSHAKE_TIMEOUT,
            grpc_idle_timeout: Some(hunt_serve::idle::DEFAULT_IDLE_TIMEOUT),
            ws_coalesce: DEFAULT_WS_COALESCE,
            ws: WsLimits::DEFAULT,
            saga_interval: DEFAULT_SAGA_INTERVAL,
            saga_batch: DEFAULT_SAGA_BATCH,
            record_ttl: DEFAULT_RECORD_TTL,
            inbox_cap: DEFAULT_INBOX_CAP,
            claim_replicas: 0,
            failpoint: None,
        }
    }

    /// The Redis this router talks to: one node, or a cluster through its seeds.
    ///
    /// # Errors
    /// The Redis error when `redis_url` cannot be parsed.
    pub fn redis_target(&self) -> redis::RedisResult<RedisTarget> {
        RedisTarget::open_with_ca(
            &self.redis_url,
            self.redis_cluster,
            self.redis_ca_file.as_deref(),
        )
    }

    /// Checks every bound.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: &str| ConfigError {
            field,
            reason: reason.to_owned(),
        };
        if let Some(ca) = &self.redis_ca_file {
            hunt_redis::connection::check_ca_file(&self.redis_url, ca)
                .map_err(|reason| invalid("redis_ca_file", &reason))?;
        }
        self.redis_target().map_err(|_| {
            let reason = if self.redis_cluster {
                "not a comma-separated list of redis:// or rediss:// seed URLs"
            } else {
                "not a redis:// or rediss:// URL"
            };
            invalid("redis_url", reason)
        })?;
        if self.router_id.is_empty()
            || self.router_id.len() > 64
            || !self
                .router_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "router_id",
                "must be 1 to 64 ASCII letters, digits, '-' or '_'",
            ));
        }
        if self.lease_ttl < Duration::from_millis(300) {
            return Err(invalid("lease_ttl", "must be at least 300 ms"));
        }
        if !(1..=1_000).contains(&self.apply_batch) {
            return Err(invalid("apply_batch", "must be between 1 and 1000"));
        }
        if !(self.apply_batch..=1_000).contains(&self.max_apply_batch) {
            return Err(invalid(
                "max_apply_batch",
                "must be between apply_batch and 1000",
            ));
        }
        if self.read_block.is_zero() || self.read_block >= self.lease_ttl / 3 {
            return Err(invalid(
                "read_block",
                "must be longer than zero and shorter than a third of the lease TTL (--lease-ttl-ms)",
            ));
        }
        for (field, value) in [
            ("follower_refresh", self.follower_refresh),
            ("ws_coalesce", self.ws_coalesce),
            ("ws.send_timeout", self.ws.send_timeout),
            ("ws.ping_interval", self.ws.ping_interval),
            ("ws.idle_timeout", self.ws.idle_timeout),
            ("redis_response_timeout", self.redis_response_timeout),
            ("redis_connect_timeout", self.redis_connect_timeout),
            ("backoff", self.backoff),
            ("saga_interval", self.saga_interval),
            ("handshake_timeout", self.handshake_timeout),
            (
                "grpc_idle_timeout",
                self.grpc_idle_timeout.unwrap_or(Duration::MAX),
            ),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must be longer than zero"));
            }
        }
        for (field, value) in [
            ("max_grpc_connections", self.max_grpc_connections),
            ("max_http_connections", self.max_http_connections),
            ("ws.max_connections", self.ws.max_connections),
            ("ws.max_frame_bytes", self.ws.max_frame_bytes),
            ("ws.max_subscriptions", self.ws.max_subscriptions),
            ("ws.queue", self.ws.queue),
        ] {
            if !(1..=1_000_000).contains(&value) {
                return Err(invalid(field, "must be between 1 and 1000000"));
            }
        }
        if self.ws.max_frames_per_second == 0 {
            return Err(invalid("ws.max_frames_per_second", "must be at least 1"));
        }
        if self.ws.idle_timeout <= self.ws.ping_interval {
            return Err(invalid(
                "ws.idle_timeout",
                "must be longer than ws.ping_interval",
            ));
        }
        if !(1..=10_000).contains(&self.saga_batch) {
            return Err(invalid("saga_batch", "must be between 1 and 10000"));
        }
        if self.record_ttl < Duration::from_secs(1) {
            return Err(invalid("record_ttl", "must be at least 1 s"));
        }
        if !(1..=100_000_000).contains(&self.inbox_cap) {
            return Err(invalid("inbox_cap", "must be between 1 and 100000000"));
        }
        if self.max_backoff < self.backoff {
            return Err(invalid("max_backoff", "must not be shorter than backoff"));
        }
        Ok(())
    }
}

/// A router id that no earlier process used: time and randomness.
fn random_router_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "router-{:x}-{:08x}",
        nanos & 0xffff_ffff_ffff,
        rand::random::<u32>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_are_checked() {
        let config = RouterConfig::new("redis://127.0.0.1:6390/");
        assert_eq!(config.validate(), Ok(()));
        assert_ne!(config.router_id, RouterConfig::new("redis://x/").router_id);
        let mut bad = config.clone();
        bad.apply_batch = 0;
        assert_eq!(bad.validate().map_err(|e| e.field), Err("apply_batch"));
        let mut bad = config.clone();
        bad.apply_batch = 200;
        bad.max_apply_batch = 150;
        assert_eq!(bad.validate().map_err(|e| e.field), Err("max_apply_batch"));
        bad.max_apply_batch = 1_001;
        assert_eq!(bad.validate().map_err(|e| e.field), Err("max_apply_batch"));
        let mut bad = config.clone();
        bad.router_id = "a:b".into();
        assert_eq!(bad.validate().map_err(|e| e.field), Err("router_id"));
        let mut bad = config.clone();
        bad.saga_batch = 0;
        assert_eq!(bad.validate().map_err(|e| e.field), Err("saga_batch"));
        let mut bad = config.clone();
        bad.saga_interval = Duration::ZERO;
        assert_eq!(bad.validate().map_err(|e| e.field), Err("saga_interval"));
        let mut bad = config.clone();
        bad.record_ttl = Duration::from_millis(10);
        assert_eq!(bad.validate().map_err(|e| e.field), Err("record_ttl"));
        let mut bad = config.clone();
        bad.inbox_cap = 0;
        assert_eq!(bad.validate().map_err(|e| e.field), Err("inbox_cap"));
        assert_eq!(
            "saga-after-settle".parse::<Failpoint>(),
            Ok(Failpoint::SagaAfterSettle)
        );
        assert_eq!(
            "nowhere".parse::<Failpoint>().map_err(|e| e.field),
            Err("failpoint")
        );
        let mut bad = config;
        bad.redis_url = "http://nope".into();
        assert_eq!(bad.validate().map_err(|e| e.field), Err("redis_url"));
    }
}
