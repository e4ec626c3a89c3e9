//! Accepted connections, bounded in number: the gRPC ports of the tier router and of the ingest
//! sidecar ([`bounded`]), and the HTTP ports of both ([`HttpListener`]).
//!
//! Design constraints:
//! - At most `max` connections are open at once. At the cap the server stops accepting, and
//!   newcomers wait in the kernel's backlog (or time out there) instead of costing memory here.
//! - Each accepted socket has Nagle off: a reply is several small HTTP/2 frames and must not wait
//!   for the peer's ACK.
//! - A connection's permit lives as long as its socket, so closing it frees its place.
//! - A connection must open within the handshake timeout: a gRPC connection must deliver the
//!   HTTP/2 preface and the header of its first SETTINGS frame (24 + 9 bytes) in time, or its reads fail and the server drops it; an HTTP/1
//!   connection must deliver each request head in time (hyper's header timer, see
//!   [`crate::admin::serve_http`]). Silent sockets and slow-loris clients cannot hold places.
//! - Optionally, a gRPC connection with no request in service for the idle timeout is closed
//!   ([`Incoming::with_idle_timeout`], see [`crate::idle`]).
//! - Optionally, at most so many connections per client address ([`Incoming::with_per_ip`],
//!   [`HttpListener::with_per_ip`]): one more from an address at its limit is closed as soon as
//!   it is accepted. Off by default: behind a load balancer or an ingress, many clients share
//!   one address.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use crate::idle::{Activity, ConnectionInfo, IdleTimer};

/// How long a connection may take to open (the HTTP/2 preface, or an HTTP/1 request head),
/// unless the server is configured otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a gRPC client sends first: the HTTP/2 connection preface (24 bytes), then at once a
/// SETTINGS frame, whose header is 9 bytes (RFC 9113, section 3.4).
const H2_OPENING_BYTES: usize = 24 + 9;

/// An accepted connection holding one of the listener's places until it is dropped.
#[derive(Debug)]
pub struct Bounded {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
    /// The connection's count against its address, when addresses are limited.
    _address: Option<AddressGuard>,
    /// Bytes that must arrive before a deadline, until they have.
    head: Option<Head>,
    /// The requests in service on this connection (gRPC).
    activity: Arc<Activity>,
    /// Closes the connection once it has had no request in service for a while.
    idle: Option<IdleTimer>,
}

/// The first bytes a connection owes, and by when.
#[derive(Debug)]
struct Head {
    deadline: Pin<Box<tokio::time::Sleep>>,
    remaining: usize,
}

impl Bounded {
    /// The accepted socket.
    #[must_use]
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl Connected for Bounded {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo {
            tcp: self.stream.connect_info(),
            activity: Arc::clone(&self.activity),
        }
    }
}

impl AsyncRead for Bounded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(head) = &mut this.head
            && head.deadline.as_mut().poll(cx).is_ready()
        {
            this.head = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not open the connection within the handshake timeout",
            )));
        }
        if let Some(idle) = &mut this.idle
            && idle.poll_expired(cx).is_ready()
        {
            this.idle = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection had no request in service for the idle timeout",
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(head)) = (&polled, &mut this.head) {
            let read = buf.filled().len() - before;
            head.remaining = head.remaining.saturating_sub(read);
            // Opened, or at its end (a read of nothing).
            if head.remaining == 0 || read == 0 {
                this.head = None;
            }
        }
        polled
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The gRPC connections accepted on `listener`, at most `max` open at once, each dropped unless
/// it sends the HTTP/2 preface and its SETTINGS within `handshake`.
#[must_use]
pub fn bounded(listener: TcpListener, max: usize, handshake: std::time::Duration) -> Incoming {
    let places = Arc::new(Semaphore::new(max));
    let listener = Arc::new(listener);
    Incoming {
        next: Box::pin(accept(
            Arc::clone(&places),
            Arc::clone(&listener),
            PerIp::default(),
        )),
        places,
        listener,
        handshake,
        idle: None,
        per_ip: PerIp::default(),
    }
}

/// The stream of accepted connections, for `tonic`'s `serve_with_incoming`.
pub struct Incoming {
    next: Pin<Box<dyn Future<Output = io::Result<Bounded>> + Send>>,
    places: Arc<Semaphore>,
    listener: Arc<TcpListener>,
    handshake: std::time::Duration,
    idle: Option<std::time::Duration>,
    per_ip: PerIp,
}

impl Incoming {
    /// Closes a connection once it has had no request in service for `timeout` (`None`: never).
    #[must_use]
    pub fn with_idle_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.idle = timeout;
        self
    }

    /// At most `max` connections open at once from one client address; 0 for no limit.
    #[must_use]
    pub fn with_per_ip(mut self, max: usize) -> Self {
        self.per_ip = PerIp::new(max);
        self.next = Box::pin(accept(
            Arc::clone(&self.places),
            Arc::clone(&self.listener),
            self.per_ip.clone(),
        ));
        self
    }
}

impl Stream for Incoming {
    type Item = io::Result<Bounded>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let accepted = std::task::ready!(self.next.as_mut().poll(cx));
        let next = accept(
            Arc::clone(&self.places),
            Arc::clone(&self.listener),
            self.per_ip.clone(),
        );
        self.next = Box::pin(next);
        let (handshake, idle) = (self.handshake, self.idle);
        Poll::Ready(Some(accepted.map(|bounded| {
            bounded
                .owing(H2_OPENING_BYTES, handshake)
                .idling_after(idle)
        })))
    }
}

impl Bounded {
    /// This connection, failing its reads unless `bytes` arrive within `within`.
    fn owing(mut self, bytes: usize, within: std::time::Duration) -> Self {
        self.head = Some(Head {
            deadline: Box::pin(tokio::time::sleep(within)),
            remaining: bytes,
        });
        self
    }

    /// This connection, closed once it has had no request in service for `timeout`.
    fn idling_after(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.idle = timeout.map(|timeout| IdleTimer::new(Arc::clone(&self.activity), timeout));
        self
    }
}

/// Waits for a free place, then for a connection (retrying errors that leave the listener
/// usable).
///
/// # Errors
/// The listener's error when it is not transient, or the semaphore closed.
pub async fn accept(
    places: Arc<Semaphore>,
    listener: Arc<TcpListener>,
    per_ip: PerIp,
) -> io::Result<Bounded> {
    let place = places.acquire_owned().await.map_err(io::Error::other)?;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Best effort: a socket that refuses it still works, only slower.
                let _ = stream.set_nodelay(true);
                let address = match stream.peer_addr() {
                    Ok(peer) => match per_ip.admit(peer.ip()) {
                        Admitted::Yes(guard) => guard,
                        Admitted::No => {
                            tracing::debug!(%peer, "connection refused: too many from its address");
                            drop(stream);
                            continue;
                        }
                    },
                    Err(_) => None,
                };
                return Ok(Bounded {
                    stream,
                    _place: place,
                    _address: address,
                    head: None,
                    activity: Arc::default(),
                    idle: None,
                });
            }
            // A connection that died in the backlog, or a passing shortage of file descriptors:
            // the listener itself is fine.
            Err(err) if is_transient(&err) => {
                tracing::warn!(error = %err, "accept failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || err
        .raw_os_error()
        .is_some_and(|code| code == 23 || code == 24) // ENFILE, EMFILE
}

/// An axum listener whose connections are bounded like [`bounded`]'s, each optionally with a
/// bounded kernel send buffer.
pub struct HttpListener {
    places: Arc<Semaphore>,
    listener: Arc<TcpListener>,
    send_buffer: Option<usize>,
    handshake: std::time::Duration,
    per_ip: PerIp,
}

impl HttpListener {
    /// Accepts on `listener`, at most `max` connections open at once.
    #[must_use]
    pub fn new(listener: TcpListener, max: usize) -> Self {
        Self {
            places: Arc::new(Semaphore::new(max)),
            listener: Arc::new(listener),
            send_buffer: None,
            handshake: DEFAULT_HANDSHAKE_TIMEOUT,
            per_ip: PerIp::default(),
        }
    }

    /// At most `max` connections open at once from one client address; 0 for no limit.
    #[must_use]
    pub fn with_per_ip(mut self, max: usize) -> Self {
        self.per_ip = PerIp::new(max);
        self
    }

    /// How long a client may take to send each request head ([`DEFAULT_HANDSHAKE_TIMEOUT`]
    /// unless set): past it, its connection is closed.
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.handshake = timeout;
        self
    }

    /// How long a client may take to send each request head.
    #[must_use]
    pub fn handshake_timeout(&self) -> std::time::Duration {
        self.handshake
    }

    /// The next connection (waiting for a place first), with its peer's address.
    pub async fn next(&mut self) -> (Bounded, std::net::SocketAddr) {
        axum::serve::Listener::accept(self).await
    }

    /// Gives each connection a kernel send buffer of `bytes`: a peer that stops reading fills
    /// it within a few writes, so the server finds out in time, and many such peers cannot pin
    /// gigabytes of socket memory.
    #[must_use]
    pub fn with_send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = Some(bytes);
        self
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Bounded;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let accepted = accept(
                Arc::clone(&self.places),
                Arc::clone(&self.listener),
                self.per_ip.clone(),
            );
            match accepted.await {
                Ok(bounded) => {
                    if let Some(bytes) = self.send_buffer {
                        // Best effort, like Nagle's: the connection works without it.
                        let _ = rustix::net::sockopt::set_socket_send_buffer_size(
                            bounded.stream(),
                            bytes,
                        );
                    }
                    let peer = bounded
                        .stream()
                        .peer_addr()
                        .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
                    return (bounded, peer);
                }
                Err(err) => {
                    // Not transient (see `accept`): back off, as axum's own listener does.
                    // Shutdown drops this future, so the sleep never delays it.
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

/// Open connections per client address, each at most `max` (0: no limit).
#[derive(Debug, Clone, Default)]
pub struct PerIp {
    max: usize,
    open: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

/// Whether a connection from an address may stay.
enum Admitted {
    /// Yes, counted by the guard (none when addresses are not limited).
    Yes(Option<AddressGuard>),
    /// No: its address is at the limit.
    No,
}

impl PerIp {
    fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    fn admit(&self, ip: std::net::IpAddr) -> Admitted {
        if self.max == 0 {
            return Admitted::Yes(None);
        }
        let Ok(mut open) = self.open.lock() else {
            return Admitted::Yes(None);
        };
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return Admitted::No;
        }
        *count += 1;
        Admitted::Yes(Some(AddressGuard {
            ip,
            open: Arc::clone(&self.open),
        }))
    }
}

/// One open connection counted against its address; uncounted when dropped.
#[derive(Debug)]
struct AddressGuard {
    ip: std::net::IpAddr,
    open: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock()
            && let Some(count) = open.get_mut(&self.ip)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
