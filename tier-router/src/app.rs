//! [`App`]: the router built (ports bound) and then spawned (tasks running).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hunt_redis::connection::{RedisTarget, Timeouts};
use leaderboard_proto::rewards;
use leaderboard_proto::v1::leaderboard_service_server::LeaderboardServiceServer;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;

use crate::apply;
use crate::cache::Cache;
use crate::config::{MAX_MESSAGE_BYTES, MAX_STREAMS_PER_CONNECTION, RouterConfig};
use crate::grpc::Leaderboard;
use crate::members;
use crate::metrics as m;
use crate::worker::TierWorker;
use crate::{http, ws};
use hunt_serve::{admin, listener};
use tonic::server::NamedService;

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A port could not be bound.
    #[error(transparent)]
    Bind(#[from] hunt_serve::BindError),
    /// Redis could not be reached at start.
    #[error("Redis at {url}: {source}")]
    Redis {
        /// Where Redis was looked for, without its password.
        url: String,
        /// Why it could not be reached.
        source: redis::RedisError,
    },
    /// The reflection service could not be built from the embedded descriptor set.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
}

/// The kernel's send buffer per HTTP connection. A spectator that stops reading fills it within
/// a few updates, so its connection finds out in time (see `crate::ws`), and 10,000 spectators
/// cannot pin gigabytes of socket memory.
const HTTP_SEND_BUFFER_BYTES: usize = 256 * 1024;

/// A router with its ports bound, not yet serving.
#[derive(Debug)]
pub struct App {
    config: RouterConfig,
    client: RedisTarget,
    grpc: TcpListener,
    grpc_addr: SocketAddr,
    http: TcpListener,
    http_addr: SocketAddr,
    admin: Option<(TcpListener, SocketAddr)>,
    reads: crate::grpc::Reads,
    /// The reflection service, built (and so checked) before anything starts.
    reflection: Routes,
    metrics: Option<PrometheusHandle>,
}

impl App {
    /// Validates `config`, binds the gRPC and HTTP ports and connects to Redis.
    ///
    /// # Errors
    /// [`StartError`]: bad configuration, a port taken, Redis unreachable.
    pub async fn build(config: RouterConfig) -> Result<Self, StartError> {
        config.validate()?;
        let redis_error = |source| StartError::Redis {
            url: hunt_redis::connection::redact_url(&config.redis_url),
            source,
        };
        let client = config.redis_target().map_err(redis_error)?;
        let (grpc, grpc_addr) = hunt_serve::bind(config.grpc_addr).await?;
        let (http, http_addr) = hunt_serve::bind(config.http_addr).await?;
        let admin = match config.admin_addr {
            Some(addr) => Some(hunt_serve::bind(addr).await?),
            None => None,
        };
        // The contract's descriptor set also describes the sidecar's IngestService: only the
        // service served here is advertised.
        let reflection = hunt_serve::grpc::reflection(
            &[leaderboard_proto::FILE_DESCRIPTOR_SET],
            &[<LeaderboardServiceServer<Leaderboard> as NamedService>::NAME],
        )
        .map_err(StartError::Reflection)?;
        let reads = crate::grpc::Reads::new(
            client.clone(),
            Timeouts {
                connect: Some(config.redis_connect_timeout),
                response: Some(config.redis_response_timeout),
            },
            apply::connect(&client, &config, Some(config.redis_response_timeout))
                .await
                .map_err(redis_error)?,
        )
        .with_replicas(config.claim_replicas, config.redis_response_timeout / 2);
        crate::metrics::describe();
        Ok(Self {
            config,
            client,
            grpc,
            grpc_addr,
            http,
            http_addr,
            admin,
            reads,
            reflection,
            metrics: None,
        })
    }

    /// Serves `handle`'s rendering on `/metrics`: the Prometheus recorder the process installed.
    #[must_use]
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// Where HTTP listens.
    #[must_use]
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where gRPC listens.
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where the admin port listens, when it is on.
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, addr)| *addr)
    }

    /// Starts the heartbeat, a worker per tier and the gRPC server (with health checking and
    /// reflection).
    #[must_use]
    pub fn spawn(self) -> AppHandle {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let cache = Arc::new(Cache::new());
        let workers = TaskTracker::new();
        let (view_tx, view) = watch::channel(Vec::new());
        for (tier_index, tier) in rewards::TIERS.iter().enumerate() {
            workers.spawn(
                TierWorker {
                    tier: tier.id,
                    tier_index,
                    config: self.config.clone(),
                    client: self.client.clone(),
                    cache: Arc::clone(&cache),
                    view: view.clone(),
                    cancel: cancel.clone(),
                }
                .run(),
            );
        }
        workers.close();
        tracker.spawn(heartbeat(
            self.config.clone(),
            self.client.clone(),
            view_tx,
            workers,
            cancel.clone(),
        ));
        let leaderboard = Leaderboard::new(
            Arc::clone(&cache),
            self.reads,
            cancel.clone(),
            tracker.clone(),
        );
        let service = LeaderboardServiceServer::new(leaderboard.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let shutdown = cancel.clone();
        let incoming = listener::bounded(
            self.grpc,
            self.config.max_grpc_connections,
            self.config.handshake_timeout,
        )
        .with_per_ip(self.config.max_connections_per_ip)
        .with_idle_timeout(self.config.grpc_idle_timeout);
        let routes = self.reflection.add_service(service);
        // Each Watch is one stream of a connection's bound.
        tracker.spawn(hunt_serve::grpc::serve(
            routes,
            <LeaderboardServiceServer<Leaderboard> as NamedService>::NAME,
            incoming,
            MAX_STREAMS_PER_CONNECTION,
            shutdown,
        ));
        if let Some(handle) = self.metrics.clone() {
            tracker.spawn(admin::upkeep(handle, cancel.clone()));
        }
        let fanout = Arc::new(ws::Fanout::start(
            &cache,
            self.config.ws_coalesce,
            &cancel,
            &tracker,
        ));
        let admin_addr = self.admin.as_ref().map(|(_, addr)| *addr);
        if let Some((admin, _)) = self.admin {
            let routes = http::admin_routes(http::HttpState {
                cache: Arc::clone(&cache),
                metrics: self.metrics.clone(),
            });
            // Probes and scrapers are few.
            let listener = listener::HttpListener::new(admin, MAX_ADMIN_CONNECTIONS)
                .with_handshake_timeout(self.config.handshake_timeout);
            tracker.spawn(admin::serve_http(listener, routes, cancel.clone(), "admin"));
        }
        let http = http::routes(
            http::HttpState {
                cache: Arc::clone(&cache),
                metrics: self.metrics,
            },
            leaderboard,
            ws::WsState {
                fanout,
                limits: self.config.ws,
                connections: Arc::new(tokio::sync::Semaphore::new(self.config.ws.max_connections)),
                stop: cancel.clone(),
                tasks: tracker.clone(),
            },
        );
        let http_listener =
            listener::HttpListener::new(self.http, self.config.max_http_connections)
                .with_send_buffer(HTTP_SEND_BUFFER_BYTES)
                .with_handshake_timeout(self.config.handshake_timeout)
                .with_per_ip(self.config.max_connections_per_ip);
        tracker.spawn(admin::serve_http(
            http_listener,
            http,
            cancel.clone(),
            "HTTP",
        ));
        tracker.close();
        tracing::info!(
            router = %self.config.router_id,
            grpc = %self.grpc_addr,
            http = %self.http_addr,
            "tier router serving"
        );
        AppHandle {
            cancel,
            tracker,
            cache,
            grpc_addr: self.grpc_addr,
            http_addr: self.http_addr,
            admin_addr,
        }
    }
}

/// Connections open at once on the admin port.
const MAX_ADMIN_CONNECTIONS: usize = 16;

/// Sends this router's heartbeat every third of a lease TTL and shares the live routers with
/// the workers. On shutdown it waits for the workers to release their leases, then leaves, so
/// the other routers take the tiers at once.
async fn heartbeat(
    config: RouterConfig,
    client: RedisTarget,
    view: watch::Sender<Vec<String>>,
    workers: TaskTracker,
    cancel: CancellationToken,
) {
    let mut conn = None;
    loop {
        if conn.is_none() {
            conn = apply::connect(&client, &config, Some(config.redis_response_timeout))
                .await
                .ok();
        }
        if let Some(redis) = conn.as_mut() {
            match members::heartbeat(redis, &config.router_id, config.lease_ttl).await {
                Ok(live) => {
                    metrics::gauge!(m::ROUTERS).set(live.len() as f64);
                    view.send_if_modified(|seen| {
                        let changed = *seen != live;
                        if changed {
                            tracing::info!(routers = live.len(), "live routers changed");
                            *seen = live;
                        }
                        changed
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "router heartbeat failed");
                    conn = None;
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(config.lease_ttl / 3) => {}
        }
    }
    workers.wait().await;
    if let Some(redis) = conn.as_mut()
        && let Err(err) = members::leave(redis, &config.router_id).await
    {
        tracing::warn!(error = %err, "could not leave the live routers");
    }
}

/// A running router.
#[derive(Debug)]
pub struct AppHandle {
    cancel: CancellationToken,
    tracker: TaskTracker,
    cache: Arc<Cache>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
}

impl AppHandle {
    /// Where the admin port listens, when it is on.
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Where gRPC listens.
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where HTTP listens.
    #[must_use]
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The tops every tier worker keeps.
    #[must_use]
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Stops reading, lets each worker finish its batch and release its lease, and stops
    /// serving; waits at most `grace`. Returns whether everything stopped within it.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.cancel.cancel();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}
