//! The ingest sidecar: [`ShardWriter`] served over gRPC (`hunt.v1.IngestService`) for shard processes
//! written in other languages. One sidecar owns one shard file. Built with the `sidecar` feature
//! (part of the default `cli`).
//!
//! Design constraints:
//! - `Append` validates every event of a request before it stores any: a bad one answers
//!   `INVALID_ARGUMENT` naming its index and field, and nothing of the request is stored.
//! - `Append` is durable: it answers after the group commit that stored every event, with each
//!   event's epoch, seq and `tier_seq`.
//! - Backpressure never waits: a request is queued whole only if the commit queue has room for
//!   all of its events at that moment; otherwise it answers `RESOURCE_EXHAUSTED` at once, with
//!   nothing stored, and the client backs off and retries. A waiting server would hold a
//!   request, its memory and its connection for as long as the disk is slow; a refusal hands the
//!   decision back to the shard, which knows whether to buffer, shed or slow its tick.
//! - `Append` is not idempotent: a retry after a lost answer (not after an error status) appends
//!   the events again. Retry only what was refused.
//! - Everything is bounded: events per request (`max_batch`, never above the commit queue),
//!   message size ([`MAX_MESSAGE_BYTES`] both ways), connections (`max_connections`), streams
//!   and requests in service per connection ([`MAX_STREAMS_PER_CONNECTION`]).
//! - `Compensations` streams the shard's inbox through one reader at a time (the inbox has one
//!   consumer per shard): a second stream opened while one is open answers
//!   `FAILED_PRECONDITION`. An entry streamed but not acknowledged (`AckCompensation`) comes
//!   again on the next stream, never on the same one.
//! - Shutdown: the health status turns `NOT_SERVING`, the server stops accepting and finishes
//!   the requests in service, then the writer drains ([`ShardWriter::shutdown`]).
//! - Metrics (`hunt_writer_*`, see [`crate::metrics`]) are served as Prometheus text on
//!   `metrics_addr` when it is set and the process handed over its recorder
//!   ([`Sidecar::with_metrics`]); the metrics port stops with the gRPC port.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hunt_serve::{admin, listener};
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use leaderboard_proto::v1::{
    AckCompensationRequest, AckCompensationResponse, AppendRequest, AppendResponse,
    Appended as AppendedMessage, ClaimChestRequest, ClaimChestResponse, ClaimClueRequest,
    ClaimClueResponse, OpenWaveRequest, OpenWaveResponse, StreamCompensationsRequest,
    StreamCompensationsResponse,
};
use leaderboard_proto::validate::ValidationError;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::claims::{ChestClaim, ClueClaim};
use crate::compensations::Compensations;
use crate::config::WriterConfig;
use crate::error::{AppendError, ClaimError, ConfigError, OpenError};
use crate::writer::{Appended, BatchRejected, ShardWriter};

/// The largest gRPC message the sidecar reads or writes: the contract's 4 MiB.
pub const MAX_MESSAGE_BYTES: usize = leaderboard_proto::limits::MAX_MESSAGE_BYTES;

/// Connections open at once on the metrics port; past it, newcomers wait in the kernel's
/// backlog.
pub const MAX_METRICS_CONNECTIONS: usize = 16;

/// Streams open at once and requests in service per connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// How the sidecar is started. Build it with [`IngestConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// The writer it serves.
    pub writer: WriterConfig,
    /// Where gRPC listens (port 0 picks a free one; ask [`Sidecar::local_addr`]).
    pub grpc_addr: SocketAddr,
    /// The most gRPC connections open at once; past it, newcomers wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a client may take to open a connection (the HTTP/2 preface and SETTINGS on the gRPC port,
    /// each request head on the metrics port); past it the connection is closed.
    pub handshake_timeout: Duration,
    /// How long a gRPC connection may have no request in service before it is closed; `None`
    /// never closes it.
    pub grpc_idle_timeout: Option<Duration>,
    /// The most gRPC connections open at once from one client address; 0 for no limit.
    pub max_connections_per_ip: usize,
    /// The most events in one `Append` (at most the writer's `queue_capacity`, so a request
    /// can always fit an empty queue).
    pub max_batch: usize,
    /// How long one read of the compensation inbox waits before it looks again (bounds how long
    /// a closed `Compensations` stream holds the inbox).
    pub compensation_wait: Duration,
    /// Where Prometheus metrics (`/metrics`) and liveness (`/healthz`) are served over HTTP;
    /// `None` (the default) serves none. Port 0 picks a free one; ask
    /// [`Sidecar::metrics_addr`].
    pub metrics_addr: Option<SocketAddr>,
}

impl IngestConfig {
    /// Every default (gRPC on `0.0.0.0:50052`, no metrics port) around `writer`.
    #[must_use]
    pub fn new(writer: WriterConfig) -> Self {
        let max_batch = writer.queue_capacity.min(1_000);
        Self {
            writer,
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 50_052)),
            max_connections: 1_024,
            handshake_timeout: listener::DEFAULT_HANDSHAKE_TIMEOUT,
            grpc_idle_timeout: Some(hunt_serve::idle::DEFAULT_IDLE_TIMEOUT),
            max_connections_per_ip: 0,
            max_batch,
            compensation_wait: Duration::from_secs(1),
            metrics_addr: None,
        }
    }

    /// Checks every bound, the writer's included.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.writer.validate()?;
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid {
                field: "max_connections",
                reason: "must be at least 1".into(),
            });
        }
        if self
            .grpc_idle_timeout
            .is_some_and(|timeout| timeout.is_zero())
        {
            return Err(ConfigError::Invalid {
                field: "grpc_idle_timeout",
                reason: "must be longer than zero (none never closes a connection)".into(),
            });
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                field: "handshake_timeout",
                reason: "must be longer than zero".into(),
            });
        }
        if self.max_batch == 0 || self.max_batch > self.writer.queue_capacity {
            return Err(ConfigError::Invalid {
                field: "max_batch",
                reason: format!(
                    "must be 1 to queue_capacity ({})",
                    self.writer.queue_capacity
                ),
            });
        }
        if self.compensation_wait.is_zero() {
            return Err(ConfigError::Invalid {
                field: "compensation_wait",
                reason: "must be longer than zero".into(),
            });
        }
        Ok(())
    }
}

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The shard file could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The gRPC port could not be bound.
    #[error(transparent)]
    Bind(hunt_serve::BindError),
    /// The metrics port could not be bound.
    #[error("cannot listen for metrics on {}: {}", .0.addr, .0.source)]
    BindMetrics(hunt_serve::BindError),
}

/// Why an ingest call was refused; one conversion to a gRPC status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// An event of an `Append` is invalid; nothing of the request was stored.
    #[error("events[{index}]: {reason}; nothing was stored")]
    InvalidEvent {
        /// Its index in the request.
        index: usize,
        /// The rule it breaks (naming the field).
        reason: ValidationError,
    },
    /// An `Append` carries more events than `max_batch`.
    #[error("{count} events in one request: at most {max} are allowed; nothing was stored")]
    TooManyEvents {
        /// Events in the request.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// The commit queue has no room for the whole request now.
    #[error("the commit queue has no room for {count} events; nothing was stored: retry later")]
    QueueFull {
        /// Events in the request.
        count: usize,
    },
    /// The writer is shutting down.
    #[error("the writer is shutting down; nothing was stored")]
    Closed,
    /// Some events were not committed (the disk refused); the others were.
    #[error("commit failed for events {failed:?} (the others are stored): {reason}")]
    Storage {
        /// Indices of the events not stored.
        failed: Vec<usize>,
        /// The storage error.
        reason: String,
    },
    /// `AckCompensation` named no stream id.
    #[error("id: {0:?} is not a compensation id (<ms>-<n>)")]
    CompensationId(String),
    /// A `Compensations` stream is already open.
    #[error("another Compensations stream is open: one reader at a time per shard")]
    StreamBusy,
    /// A claim, wave opening or compensation call failed.
    #[error(transparent)]
    Claim(#[from] ClaimError),
}

/// UNAVAILABLE for claims refused while the claim state is restored, with the delay a client
/// should wait before it retries (`grpc-retry-pushback-ms`, as gRPC retry policies read it).
fn recovering(message: String) -> Status {
    let mut status = Status::unavailable(message);
    status.metadata_mut().insert(
        "grpc-retry-pushback-ms",
        tonic::metadata::MetadataValue::from_static("1000"),
    );
    status
}

impl From<IngestError> for Status {
    fn from(err: IngestError) -> Self {
        let message = err.to_string();
        match err {
            IngestError::InvalidEvent { .. }
            | IngestError::TooManyEvents { .. }
            | IngestError::CompensationId(_) => Status::invalid_argument(message),
            IngestError::QueueFull { .. } => Status::resource_exhausted(message),
            IngestError::Closed => Status::unavailable(message),
            IngestError::Storage { .. } => Status::internal(message),
            IngestError::StreamBusy => Status::failed_precondition(message),
            IngestError::Claim(claim) => match claim {
                ClaimError::Invalid(_) => Status::invalid_argument(message),
                ClaimError::UnknownClue | ClaimError::UnknownChest { .. } => {
                    Status::not_found(message)
                }
                ClaimError::StaleToken | ClaimError::FutureToken | ClaimError::NotHolder => {
                    Status::failed_precondition(message)
                }
                ClaimError::Unreachable { .. } | ClaimError::NoRedis | ClaimError::Redis { .. } => {
                    Status::unavailable(message)
                }
                ClaimError::MalformedCompensation { .. } | ClaimError::Record { .. } => {
                    Status::internal(message)
                }
                ClaimError::Recovering | ClaimError::Unreplicated { .. } => recovering(message),
                ClaimError::Append(append) => match append {
                    AppendError::Invalid { .. } => Status::invalid_argument(message),
                    AppendError::QueueFull { .. } => Status::resource_exhausted(message),
                    AppendError::Closed { .. } => Status::unavailable(message),
                    AppendError::Storage { .. } => Status::internal(message),
                },
            },
        }
    }
}

/// The sidecar with its port bound and its writer open, not yet serving.
#[derive(Debug)]
pub struct Sidecar {
    config: IngestConfig,
    writer: ShardWriter,
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The metrics port and the address it got, when `metrics_addr` is set.
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    metrics: Option<PrometheusHandle>,
}

impl Sidecar {
    /// Validates `config`, binds the gRPC port (and the metrics port, if set) and opens the
    /// shard's writer.
    ///
    /// # Errors
    /// [`StartError`]: bad configuration, a port taken, the shard file refused.
    pub async fn build(config: IngestConfig) -> Result<Self, StartError> {
        config.validate()?;
        let (listener, local_addr) = hunt_serve::bind(config.grpc_addr)
            .await
            .map_err(StartError::Bind)?;
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(
                hunt_serve::bind(addr)
                    .await
                    .map_err(StartError::BindMetrics)?,
            ),
            None => None,
        };
        let writer = ShardWriter::open(config.writer.clone()).await?;
        Ok(Self {
            config,
            writer,
            listener,
            local_addr,
            metrics_listener,
            metrics: None,
        })
    }

    /// Serves `handle`'s rendering on the metrics port's `/metrics` (the Prometheus recorder
    /// the process installed), and runs its upkeep while the sidecar serves.
    #[must_use]
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// Where gRPC listens.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where metrics are served, if `metrics_addr` was set.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// The writer it serves.
    #[must_use]
    pub fn writer(&self) -> &ShardWriter {
        &self.writer
    }

    /// Starts serving `hunt.v1.IngestService` and gRPC health checking.
    #[must_use]
    pub fn spawn(self) -> SidecarHandle {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let service = Ingest {
            writer: self.writer.clone(),
            acks: self.writer.compensations(),
            inbox_reader: Arc::new(Semaphore::new(1)),
            max_batch: self.config.max_batch,
            compensation_wait: self.config.compensation_wait,
            cancel: cancel.clone(),
            tracker: tracker.clone(),
        };
        let server = IngestServiceServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let incoming = listener::bounded(
            self.listener,
            self.config.max_connections,
            self.config.handshake_timeout,
        )
        .with_per_ip(self.config.max_connections_per_ip)
        .with_idle_timeout(self.config.grpc_idle_timeout);
        let shutdown = cancel.clone();
        tracker.spawn(hunt_serve::grpc::serve(
            Routes::new(server),
            <IngestServiceServer<Ingest> as NamedService>::NAME,
            incoming,
            MAX_STREAMS_PER_CONNECTION,
            shutdown,
        ));
        if let Some(handle) = self.metrics.clone() {
            tracker.spawn(admin::upkeep(handle, cancel.clone()));
        }
        let metrics_addr = self.metrics_listener.as_ref().map(|(_, addr)| *addr);
        if let Some((metrics_listener, _)) = self.metrics_listener {
            // Scrapers are few.
            let listener = listener::HttpListener::new(metrics_listener, MAX_METRICS_CONNECTIONS)
                .with_handshake_timeout(self.config.handshake_timeout);
            let routes = admin::routes(self.metrics);
            tracker.spawn(admin::serve_http(
                listener,
                routes,
                cancel.clone(),
                "metrics",
            ));
        }
        tracing::info!(
            shard = self.writer.shard_id(),
            epoch = self.writer.epoch(),
            grpc = %self.local_addr,
            metrics = ?metrics_addr,
            "ingest sidecar serving"
        );
        SidecarHandle {
            cancel,
            tracker,
            writer: self.writer,
            local_addr: self.local_addr,
            metrics_addr,
        }
    }
}

/// A serving sidecar.
#[derive(Debug)]
pub struct SidecarHandle {
    cancel: CancellationToken,
    tracker: TaskTracker,
    writer: ShardWriter,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
}

impl SidecarHandle {
    /// Where gRPC listens.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where metrics are served, if they are.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The writer it serves.
    #[must_use]
    pub fn writer(&self) -> &ShardWriter {
        &self.writer
    }

    /// Stops accepting, finishes the requests in service (waiting at most `grace` for them),
    /// then shuts the writer down: everything acknowledged is committed, and what is committed
    /// is published within the writer's own `shutdown_grace`.
    ///
    /// # Errors
    /// [`crate::Error::Shutdown`] from the writer.
    pub async fn shutdown(self, grace: Duration) -> crate::Result<()> {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("requests still in service after the grace period; closing anyway");
        }
        self.writer.shutdown().await
    }
}

/// `hunt.v1.IngestService` over one writer.
struct Ingest {
    writer: ShardWriter,
    /// Acknowledges compensations by id, on its own connection.
    acks: Compensations,
    /// One `StreamCompensations` stream at a time.
    inbox_reader: Arc<Semaphore>,
    max_batch: usize,
    compensation_wait: Duration,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// The stream of a `StreamCompensations` call.
type CompensationStream =
    Pin<Box<dyn Stream<Item = Result<StreamCompensationsResponse, Status>> + Send + 'static>>;

fn appended_message(appended: &Appended, award_id: String) -> AppendedMessage {
    AppendedMessage {
        epoch: appended.id.epoch,
        seq: appended.id.seq,
        tier_seq: appended.tier_seq,
        award_id,
    }
}

/// Whether `id` reads as a stream id (`<ms>-<n>`).
fn is_stream_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, n)| {
        !ms.is_empty()
            && !n.is_empty()
            && ms.len() <= 20
            && n.len() <= 20
            && ms.bytes().all(|b| b.is_ascii_digit())
            && n.bytes().all(|b| b.is_ascii_digit())
    })
}

#[tonic::async_trait]
impl IngestService for Ingest {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        let events = request.into_inner().events;
        if events.len() > self.max_batch {
            tracing::info!(
                count = events.len(),
                max = self.max_batch,
                "append refused: too many events"
            );
            return Err(IngestError::TooManyEvents {
                count: events.len(),
                max: self.max_batch,
            }
            .into());
        }
        let count = events.len();
        // The writer names an award that came without an id after the event's own id.
        let derives_award_id: Vec<bool> = events
            .iter()
            .map(|event| {
                matches!(&event.kind, Some(Kind::TreasureAwarded(award)) if award.award_id.is_empty())
            })
            .collect();
        let appended =
            self.writer
                .append_batch(events)
                .await
                .map_err(|rejected| match rejected {
                    BatchRejected::Invalid { index, reason } => {
                        tracing::info!(index, %reason, "append refused: an invalid event");
                        IngestError::InvalidEvent { index, reason }
                    }
                    BatchRejected::QueueFull => IngestError::QueueFull { count },
                    BatchRejected::Closed => IngestError::Closed,
                    BatchRejected::Storage { failed, reason } => {
                        IngestError::Storage { failed, reason }
                    }
                })?;
        let appended = appended
            .iter()
            .zip(derives_award_id)
            .map(|(done, derived)| {
                let award_id = if derived {
                    done.id.to_string()
                } else {
                    String::new()
                };
                appended_message(done, award_id)
            })
            .collect();
        Ok(Response::new(AppendResponse { appended }))
    }

    async fn claim_clue(
        &self,
        request: Request<ClaimClueRequest>,
    ) -> Result<Response<ClaimClueResponse>, Status> {
        let request = request.into_inner();
        let claim = self
            .writer
            .claim_clue(&request.clue_id, &request.player_id)
            .await
            .map_err(IngestError::from)?;
        let response = match claim {
            ClueClaim::Won { token, wave } => ClaimClueResponse {
                won: true,
                token,
                holder_player_id: request.player_id,
                wave,
            },
            ClueClaim::Held {
                holder_player_id,
                token,
                wave,
            } => ClaimClueResponse {
                won: false,
                token,
                holder_player_id,
                wave,
            },
            ClueClaim::Unknown => return Err(IngestError::Claim(ClaimError::UnknownClue).into()),
        };
        Ok(Response::new(response))
    }

    async fn claim_chest(
        &self,
        request: Request<ClaimChestRequest>,
    ) -> Result<Response<ClaimChestResponse>, Status> {
        let request = request.into_inner();
        let claim = self
            .writer
            .claim_chest(
                request.tier,
                &request.chest_type,
                &request.chest_key,
                &request.award_id,
            )
            .await
            .map_err(IngestError::from)?;
        let response = match claim {
            ChestClaim::Won => ClaimChestResponse {
                won: true,
                holder_award_id: request.award_id,
            },
            ChestClaim::Held { holder_award_id } => ClaimChestResponse {
                won: false,
                holder_award_id,
            },
        };
        Ok(Response::new(response))
    }

    async fn open_wave(
        &self,
        request: Request<OpenWaveRequest>,
    ) -> Result<Response<OpenWaveResponse>, Status> {
        let request = request.into_inner();
        let appended = self
            .writer
            .open_wave(request.tier, request.wave, &request.clue_ids)
            .await
            .map_err(IngestError::from)?;
        Ok(Response::new(OpenWaveResponse {
            appended: Some(appended_message(&appended, String::new())),
        }))
    }

    type StreamCompensationsStream = CompensationStream;

    async fn stream_compensations(
        &self,
        _request: Request<StreamCompensationsRequest>,
    ) -> Result<Response<Self::StreamCompensationsStream>, Status> {
        if self.writer.inner.client.is_none() {
            return Err(IngestError::Claim(ClaimError::NoRedis).into());
        }
        let Ok(reader) = Arc::clone(&self.inbox_reader).try_acquire_owned() else {
            return Err(IngestError::StreamBusy.into());
        };
        let (sender, receiver) = mpsc::channel(16);
        let mut inbox = self.writer.compensations();
        let wait = self.compensation_wait;
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            // The inbox is this stream's until it ends.
            let _reader = reader;
            loop {
                let next = tokio::select! {
                    () = cancel.cancelled() => return,
                    () = sender.closed() => return,
                    next = inbox.next(wait) => next,
                };
                let item = match next {
                    Ok(None) => continue,
                    Ok(Some(found)) => Ok(StreamCompensationsResponse {
                        id: found.id,
                        revoked: Some(found.revoked),
                        tier: found.tier,
                    }),
                    Err(ClaimError::MalformedCompensation { id, reason }) => {
                        // Already logged, counted and acknowledged away by the reader.
                        tracing::debug!(id, reason, "skipped a malformed compensation");
                        continue;
                    }
                    Err(err) => Err(Status::from(IngestError::Claim(err))),
                };
                let failed = item.is_err();
                if sender.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn ack_compensation(
        &self,
        request: Request<AckCompensationRequest>,
    ) -> Result<Response<AckCompensationResponse>, Status> {
        let id = request.into_inner().id;
        if !is_stream_id(&id) {
            return Err(IngestError::CompensationId(id).into());
        }
        self.acks.ack_id(&id).await.map_err(IngestError::from)?;
        Ok(Response::new(AckCompensationResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_recognised() {
        assert!(is_stream_id("1700000000000-0"));
        assert!(!is_stream_id("1700000000000"));
        assert!(!is_stream_id("-0"));
        assert!(!is_stream_id("12-x"));
        assert!(!is_stream_id(""));
    }

    #[test]
    fn a_recovering_claim_is_unavailable_with_a_retry_delay() {
        let status = Status::from(IngestError::Claim(ClaimError::Recovering));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("recovering"), "{status:?}");
        assert_eq!(
            status
                .metadata()
                .get("grpc-retry-pushback-ms")
                .and_then(|v| v.to_str().ok()),
            Some("1000")
        );
    }

    #[test]
    fn a_batch_bound_above_the_queue_is_refused() {
        let mut writer = WriterConfig::new("/tmp/x.sqlite", 1);
        writer.queue_capacity = 4;
        let mut config = IngestConfig::new(writer);
        assert_eq!(config.max_batch, 4);
        assert!(config.validate().is_ok());
        config.max_batch = 5;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid {
                field: "max_batch",
                ..
            })
        ));
    }
}
