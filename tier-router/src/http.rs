//! The router's HTTP port: liveness, readiness, Prometheus metrics, the live leaderboard page,
//! and `/ws` (see [`crate::ws`]).
//!
//! Design constraints:
//! - `/healthz` and `/metrics` are the shared admin endpoints (`hunt_serve::admin`).
//! - `/readyz` is 200 only when every tier's top has been read from Redis and the last read
//!   worked, so a load balancer sends spectators only to a router with something to show.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::cache::Cache;
use crate::ws;

/// What the HTTP handlers read.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) cache: Arc<Cache>,
    pub(crate) metrics: Option<PrometheusHandle>,
}

/// The routes of the admin port: liveness, readiness and metrics only.
pub(crate) fn admin_routes(state: HttpState) -> Router {
    Router::new()
        .route("/readyz", get(readyz))
        .with_state(state.cache)
        .merge(hunt_serve::admin::routes(state.metrics))
}

/// The routes of the HTTP port.
pub(crate) fn routes(state: HttpState, ws: ws::WsState) -> Router {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/tiers", get(page::tiers))
        .with_state(state.cache)
        .merge(hunt_serve::admin::routes(state.metrics))
        .merge(Router::new().route("/ws", get(ws::upgrade)).with_state(ws))
}

async fn readyz(State(cache): State<Arc<Cache>>) -> (StatusCode, String) {
    match cache.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// The live leaderboard page: files compiled into the binary, no build step.
mod page {
    use axum::http::header;
    use axum::response::IntoResponse;
    use leaderboard_proto::rewards;
    use leaderboard_proto::v1::ListTiersResponse;

    /// Pages change with the binary; a browser may keep them briefly.
    const CACHE: &str = "public, max-age=60";

    pub(super) async fn index() -> impl IntoResponse {
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, CACHE),
            ],
            include_str!("../web/index.html"),
        )
    }

    pub(super) async fn script() -> impl IntoResponse {
        (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, CACHE),
            ],
            include_str!("../web/app.js"),
        )
    }

    pub(super) async fn style() -> impl IntoResponse {
        (
            [
                (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                (header::CACHE_CONTROL, CACHE),
            ],
            include_str!("../web/style.css"),
        )
    }

    /// The tiers of the reward table: gRPC `ListTiers`'s answer in the proto3 JSON mapping,
    /// `{"tiers":[{"id":1,"name":"Bronze","pointMultiplier":1,"chestTypes":[…]},…]}`.
    pub(super) async fn tiers() -> impl IntoResponse {
        let tiers = ListTiersResponse {
            tiers: rewards::TIERS.iter().map(Into::into).collect(),
        };
        (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&tiers).unwrap_or_else(|_| r#"{"tiers":[]}"#.to_owned()),
        )
    }
}
