//! The router's HTTP port: connections bounded like the gRPC port's
//! ([`leaderboard_proto::listener`]), each with a bounded send buffer.

use std::io;
use std::sync::Arc;

use leaderboard_proto::listener::{Bounded, accept};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The kernel's send buffer per HTTP connection. A spectator that stops reading fills it within
/// a few updates, so its connection finds out in time (see `crate::ws`), and 10,000 spectators
/// cannot pin gigabytes of socket memory.
const HTTP_SEND_BUFFER_BYTES: usize = 256 * 1024;

/// The HTTP port's connections, at most `max` open at once (the same bound as the gRPC port's,
/// for axum), each with a bounded send buffer.
pub(crate) struct BoundedHttp {
    places: Arc<Semaphore>,
    listener: Arc<TcpListener>,
}

impl BoundedHttp {
    /// Accepts on `listener`, at most `max` connections open at once.
    pub(crate) fn new(listener: TcpListener, max: usize) -> Self {
        Self {
            places: Arc::new(Semaphore::new(max)),
            listener: Arc::new(listener),
        }
    }
}

impl axum::serve::Listener for BoundedHttp {
    type Io = Bounded;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match accept(Arc::clone(&self.places), Arc::clone(&self.listener)).await {
                Ok(bounded) => {
                    // Best effort, like Nagle's: the connection works without it.
                    let _ = rustix::net::sockopt::set_socket_send_buffer_size(
                        bounded.stream(),
                        HTTP_SEND_BUFFER_BYTES,
                    );
                    let peer = bounded
                        .stream()
                        .peer_addr()
                        .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
                    return (bounded, peer);
                }
                Err(err) => {
                    // Not transient (see `accept`): back off, as axum's own listener does.
                    tracing::error!(error = %err, "HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}
