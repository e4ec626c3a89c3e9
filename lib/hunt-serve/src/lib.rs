//! The serving shell every hunt-pipeline server shares: the tier router and the ingest sidecar
//! are wiring around it.
//!
//! - [`bind`]: a port bound, and the address it got (port 0 picks a free one).
//! - [`listener`]: accepted connections bounded in number, for gRPC ([`listener::bounded`]) and
//!   for axum ([`listener::HttpListener`]).
//! - [`calls`]: every gRPC call and HTTP request counted and timed.
//! - [`idle`]: the idle timer of gRPC connections (no request in service).
//! - [`grpc`]: the gRPC server with the per-connection bounds, health checking that turns
//!   `NOT_SERVING` when the drain starts, and server reflection.
//! - [`admin`]: `/healthz` and `/metrics` (Prometheus), and the recorder's upkeep.
//! - [`cli`]: command-line parsing that exits 64 on bad configuration, and the runtime.
//! - [`logging`]: text or JSON log lines on stderr, the level from `RUST_LOG`.
//! - [`signal`]: the signal that starts a server's drain.

#![forbid(unsafe_code)]

pub mod admin;
pub mod calls;
pub mod cli;
pub mod grpc;
pub mod idle;
pub mod listener;
pub mod logging;
pub mod signal;

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A port that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr`, returning the listener and the address it got (a port 0 picks a free one).
///
/// # Errors
/// [`BindError`]: the address is taken, not local, or not permitted.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| BindError { addr, source })?;
    Ok((listener, bound))
}
