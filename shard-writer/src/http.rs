//! The sidecar's metrics port: Prometheus text on `/metrics`, liveness on `/healthz`.
//!
//! Design constraints:
//! - It never touches the writer or Redis: a scrape renders what the process-wide recorder
//!   holds, so a slow disk or an unreachable Redis never makes a scrape hang.
//! - A process that installed no recorder (an embedding test, say) answers `/metrics` with 404
//!   rather than an empty page, as the router does.
//! - At most [`MAX_CONNECTIONS`] scrapes are open at once; past it, newcomers wait in the
//!   kernel's backlog.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

use leaderboard_proto::listener::{self, Bounded, Incoming};

/// Connections open at once on the metrics port: scrapers are few.
pub(crate) const MAX_CONNECTIONS: usize = 16;

/// The routes of the metrics port.
pub(crate) fn routes(metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(healthz))
        .with_state(metrics)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn render(State(metrics): State<Option<PrometheusHandle>>) -> Response {
    match metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "this process records no Prometheus metrics\n",
        )
            .into_response(),
    }
}

/// The metrics port's listener for `axum::serve`, bounded like the gRPC one.
pub(crate) struct MetricsListener {
    incoming: Incoming,
    local_addr: SocketAddr,
}

impl MetricsListener {
    /// Accepts on `listener` (bound to `local_addr`), at most [`MAX_CONNECTIONS`] at once.
    pub(crate) fn new(listener: TcpListener, local_addr: SocketAddr) -> Self {
        Self {
            incoming: listener::bounded(listener, MAX_CONNECTIONS),
            local_addr,
        }
    }
}

impl axum::serve::Listener for MetricsListener {
    type Io = Bounded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(connection)) => {
                    let peer = connection
                        .stream()
                        .peer_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    return (connection, peer);
                }
                Some(Err(err)) => {
                    // Not transient (the listener retries those): back off, as axum's own
                    // listener does. Shutdown drops this future, so the sleep never delays it.
                    tracing::error!(error = %err, "metrics accept failed");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
