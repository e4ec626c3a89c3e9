//! The gRPC server every hunt-pipeline gRPC port runs: per-connection bounds, health checking
//! that follows the drain, and server reflection.
//!
//! Design constraints:
//! - At most `max_streams` streams open and requests in service per connection, and dead peers
//!   found by HTTP/2 pings (every 30 s, 10 s to answer).
//! - Each call is counted and timed, and counts as in service on its connection until its
//!   response is done, for the connection's idle timer ([`crate::calls`], [`crate::idle`]).
//! - A request over the message size limit is refused with `RESOURCE_EXHAUSTED`, as other gRPC
//!   stacks do (tonic says `OUT_OF_RANGE`).
//! - Health (`grpc.health.v1`) says `SERVING` for the named service while it serves, and
//!   `NOT_SERVING` from the moment the drain starts, so load balancers stop sending new calls
//!   while the calls in service finish.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::listener::Incoming;

/// A gRPC server builder with the bounds every hunt-pipeline gRPC port keeps: at most
/// `max_streams` streams open and requests in service per connection, and dead peers found by
/// HTTP/2 pings (every 30 s, 10 s to answer).
#[must_use]
pub fn server(max_streams: u32) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(max_streams)
        .concurrency_limit_per_connection(max_streams as usize)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
}

/// The reflection services (`grpc.reflection.v1` and `grpc.reflection.v1alpha`, which older
/// clients still speak) describing `descriptor_sets` and gRPC health, and advertising exactly
/// `services` (full gRPC names), health and reflection: a descriptor set may describe services
/// this port does not serve.
///
/// # Errors
/// A descriptor set that does not decode, said in words.
pub fn reflection(descriptor_sets: &[&'static [u8]], services: &[&str]) -> Result<Routes, String> {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        for set in descriptor_sets {
            builder = builder.register_encoded_file_descriptor_set(set);
        }
        for service in services {
            builder = builder.with_service_name(*service);
        }
        builder
    };
    let v1 = builder().build_v1().map_err(|err| err.to_string())?;
    let v1alpha = builder().build_v1alpha().map_err(|err| err.to_string())?;
    Ok(Routes::new(v1).add_service(v1alpha))
}

/// Serves `routes` plus gRPC health on `incoming` until `shutdown` is cancelled, then finishes
/// the calls in service. Health reports `service` (its full gRPC name, `hunt.v1.…`) `SERVING`
/// until the drain starts and `NOT_SERVING` from then on. A transport failure is logged: the
/// task is meant to be spawned.
pub async fn serve(
    routes: Routes,
    service: &'static str,
    incoming: Incoming,
    max_streams: u32,
    shutdown: CancellationToken,
) {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(service, ServingStatus::Serving)
        .await;
    let stopping = async move {
        shutdown.cancelled().await;
        health
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    };
    let served = server(max_streams)
        .layer(tower::util::MapResponseLayer::new(
            oversized_is_resource_exhausted,
        ))
        .layer(crate::calls::CallLayer)
        .add_routes(routes.add_service(health_service))
        .serve_with_incoming_shutdown(incoming, stopping)
        .await;
    if let Err(err) = served {
        tracing::error!(error = %err, service, "gRPC server failed");
    }
}

/// A refusal of a message over the size limit says `RESOURCE_EXHAUSTED` (8), as gRPC's own stacks
/// do, rather than tonic's `OUT_OF_RANGE` (11). Such a refusal is answered before the handler
/// runs, with the status in the response headers.
fn oversized_is_resource_exhausted<B>(
    mut response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let headers = response.headers_mut();
    let oversized = headers
        .get("grpc-status")
        .is_some_and(|status| status == "11")
        && headers
            .get("grpc-message")
            .and_then(|message| message.to_str().ok())
            .is_some_and(|message| {
                message.contains("message%20length%20too%20large")
                    || message.contains("message length too large")
            });
    if oversized {
        headers.insert(
            "grpc-status",
            tonic::codegen::http::HeaderValue::from_static("8"),
        );
    }
    response
}
