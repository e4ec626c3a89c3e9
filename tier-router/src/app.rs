//! [`App`]: the router built (ports bound) and then spawned (tasks running).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use leaderboard_proto::rewards;
use leaderboard_proto::v1::leaderboard_server::LeaderboardServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apply::{self, TierWorker};
use crate::cache::Cache;
use crate::config::{MAX_MESSAGE_BYTES, RouterConfig};
use crate::grpc::LeaderboardService;

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Redis could not be reached at start.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A router with its ports bound, not yet serving.
#[derive(Debug)]
pub struct App {
    config: RouterConfig,
    client: redis::Client,
    grpc: TcpListener,
    grpc_addr: SocketAddr,
    reads: redis::aio::MultiplexedConnection,
}

impl App {
    /// Validates `config`, binds the gRPC port and connects to Redis.
    ///
    /// # Errors
    /// [`StartError`]: bad configuration, a port taken, Redis unreachable.
    pub async fn build(config: RouterConfig) -> Result<Self, StartError> {
        config.validate()?;
        let client = redis::Client::open(config.redis_url.as_str())?;
        let grpc = TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.grpc_addr,
                source,
            })?;
        let grpc_addr = grpc.local_addr().map_err(|source| StartError::Bind {
            addr: config.grpc_addr,
            source,
        })?;
        let reads = apply::connect(&client, &config, Some(config.redis_response_timeout)).await?;
        crate::metrics::describe();
        Ok(Self {
            config,
            client,
            grpc,
            grpc_addr,
            reads,
        })
    }

    /// Where gRPC listens.
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Starts a worker per tier and the gRPC server.
    #[must_use]
    pub fn spawn(self) -> AppHandle {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let cache = Arc::new(Cache::new());
        for tier in rewards::TIERS {
            tracker.spawn(
                TierWorker {
                    tier: tier.id,
                    config: self.config.clone(),
                    client: self.client.clone(),
                    cache: Arc::clone(&cache),
                    cancel: cancel.clone(),
                }
                .run(),
            );
        }
        let service = LeaderboardServer::new(LeaderboardService::new(
            Arc::clone(&cache),
            self.reads,
            cancel.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let shutdown = cancel.clone();
        let incoming = tonic::transport::server::TcpIncoming::from(self.grpc);
        tracker.spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "gRPC server failed");
            }
        });
        tracker.close();
        tracing::info!(
            router = %self.config.router_id,
            grpc = %self.grpc_addr,
            "tier router serving"
        );
        AppHandle {
            cancel,
            tracker,
            cache,
            grpc_addr: self.grpc_addr,
        }
    }
}

/// A running router.
#[derive(Debug)]
pub struct AppHandle {
    cancel: CancellationToken,
    tracker: TaskTracker,
    cache: Arc<Cache>,
    grpc_addr: SocketAddr,
}

impl AppHandle {
    /// Where gRPC listens.
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
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
