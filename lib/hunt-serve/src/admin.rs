//! The admin endpoints every server has: liveness on `/healthz` and Prometheus text on
//! `/metrics`.
//!
//! Design constraints:
//! - Neither touches Redis, the disk or the work the server does: `/healthz` answers as long
//!   as the process serves at all, and a scrape renders what the process-wide recorder holds,
//!   so a slow disk or an unreachable Redis never makes a probe or a scrape hang.
//! - A process that installed no recorder (an embedding test, say) answers `/metrics` with 404
//!   rather than an empty page.
//! - The recorder's histograms are drained by [`upkeep`], which runs while the server does.
//! - A scrape also reads the process's own figures (`process_cpu_seconds_total`,
//!   `process_resident_memory_bytes`, `process_open_fds`, …) from `/proc` as it renders, and every
//!   HTTP request is counted and timed by route ([`crate::calls`]).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::listener::HttpListener;

/// `/healthz` and `/metrics`, rendering `metrics` (the recorder the process installed).
pub fn routes(metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render))
        .with_state(metrics)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn render(State(metrics): State<Option<PrometheusHandle>>) -> Response {
    match metrics {
        Some(handle) => {
            // `process_*` (CPU, memory, file descriptors, threads), read from `/proc` now.
            metrics_process::Collector::default().collect();
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
                .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            "this process records no Prometheus metrics\n",
        )
            .into_response(),
    }
}

/// Bucket bounds of every `*_seconds` histogram: 100 µs to 60 s.
const SECONDS_BUCKETS: [f64; 18] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Bucket bounds of every `*_events` histogram (batch sizes): 1 to 10,000.
const EVENTS_BUCKETS: [f64; 13] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0,
];

/// Installs the process-wide Prometheus recorder. Call it before anything records, so metric
/// descriptions reach it too. Histograms are exported as Prometheus histograms (buckets), which
/// aggregate across replicas, not as summaries.
///
/// # Errors
/// The exporter's error, in words, when a recorder is installed already.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    use metrics_exporter_prometheus::Matcher;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(Matcher::Suffix("_events".to_owned()), &EVENTS_BUCKETS)
        })
        .map_err(|err| format!("cannot configure the metrics buckets: {err}"))?
        .install_recorder()
        .map_err(|err| format!("cannot install the metrics recorder: {err}"))
        .inspect(|_| {
            crate::calls::describe();
            metrics_process::Collector::default().describe();
        })
}

/// Drains `handle`'s histograms every 5 s until `stop` is cancelled.
pub async fn upkeep(handle: PrometheusHandle, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

/// Serves `routes` on `listener` until `stop` is cancelled, then finishes the requests in
/// service (open WebSockets end with `stop` too). Each connection is HTTP/1 with upgrades, and
/// must send each request head within the listener's handshake timeout (hyper's header timer):
/// a silent or slow-loris client is closed. A failure is logged under `what` (`"HTTP"`,
/// `"metrics"`).
pub async fn serve_http(
    mut listener: HttpListener,
    routes: Router,
    stop: CancellationToken,
    what: &str,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Some(listener.handshake_timeout()))
        .keep_alive(true);
    let routes = routes.layer(axum::middleware::from_fn(crate::calls::http_requests));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (io, _peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.next() => accepted,
        };
        let service = hyper_util::service::TowerToHyperService::new(routes.clone());
        let connection = http
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = stop.cancelled() => {
                    // Finish the request in service, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = served {
                tracing::debug!(error = %err, "HTTP connection ended");
            }
        });
    }
    connections.close();
    connections.wait().await;
    tracing::debug!("{what} server stopped");
}
