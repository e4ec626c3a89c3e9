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

use leaderboard_proto::v1::GetPlayerRequest;

use crate::cache::Cache;
use crate::grpc::Leaderboard;
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
pub(crate) fn routes(state: HttpState, leaderboard: Leaderboard, ws: ws::WsState) -> Router {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/tiers", get(page::tiers))
        .with_state(state.cache)
        .merge(
            Router::new()
                .route("/player", get(player))
                .with_state(leaderboard),
        )
        .merge(hunt_serve::admin::routes(state.metrics))
        .merge(Router::new().route("/ws", get(ws::upgrade)).with_state(ws))
}

/// The query of `/player`: `GetPlayerRequest`'s fields (`around` is optional, 0 by default).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlayerQuery {
    tier: u32,
    id: String,
    #[serde(default)]
    around: u32,
}

/// `/player?tier=N&id=P[&around=K]`: `GetPlayer` for the page's "follow a player", answered
/// as `GetPlayerResponse` in the proto3 JSON mapping; errors as `{"error":{"code","message"}}`
/// with 400 (bad input), 404 (unknown tier or player) or 503 (Redis unreachable).
async fn player(
    State(leaderboard): State<Leaderboard>,
    query: Result<axum::extract::Query<PlayerQuery>, axum::extract::rejection::QueryRejection>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let json = |status: StatusCode, body: String| {
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    };
    let error = |status: StatusCode, code: &str, message: String| {
        let body = serde_json::json!({"error": {"code": code, "message": message}});
        json(status, body.to_string())
    };
    let query = match query {
        Ok(axum::extract::Query(query)) => query,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                rejection.body_text(),
            );
        }
    };
    let request = GetPlayerRequest {
        tier: query.tier,
        player_id: query.id,
        around: query.around,
    };
    match leaderboard.player(request).await {
        Ok(answer) => match serde_json::to_string(&answer) {
            Ok(body) => json(StatusCode::OK, body),
            Err(err) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                err.to_string(),
            ),
        },
        Err(err) => {
            let status = tonic::Status::from(err);
            let (http, code) = match status.code() {
                tonic::Code::InvalidArgument => (StatusCode::BAD_REQUEST, "bad_request"),
                tonic::Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                tonic::Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            };
            error(http, code, status.message().to_owned())
        }
    }
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
