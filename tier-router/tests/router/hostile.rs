//! Clients that open connections and do not use them, or use them one byte at a time: every
//! port closes them within the handshake timeout, so they cannot hold the connection caps and
//! health checks keep answering.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hunt_testkit::RedisServer;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{eventually, router_with};

/// The handshake timeout of the routers in these tests.
const HANDSHAKE: Duration = Duration::from_millis(500);

/// How long a closed connection may take beyond the handshake timeout to be seen closed.
const SLACK: Duration = Duration::from_secs(5);

/// Waits until the server closes `stream`; returns how long after `opened` that was.
fn closed_after(stream: &mut TcpStream, opened: Instant) -> Duration {
    stream
        .set_read_timeout(Some(HANDSHAKE + SLACK))
        .expect("read timeout");
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return opened.elapsed(),
            // A reply to a complete request (none is sent here) would be data: keep reading.
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("still open {:?} after it was opened", opened.elapsed())
            }
            // Reset by the server: closed too.
            Err(_) => return opened.elapsed(),
        }
    }
}

fn silent(addr: SocketAddr) -> (TcpStream, Instant) {
    let stream = TcpStream::connect(addr).expect("connect");
    (stream, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_on_every_port() {
    let redis = RedisServer::start().expect("redis-server");
    let router = router_with(&redis, |c| c.handshake_timeout = HANDSHAKE).await;
    for addr in [router.http_addr(), router.grpc_addr()] {
        let took = tokio::task::spawn_blocking(move || {
            let (mut stream, opened) = silent(addr);
            closed_after(&mut stream, opened)
        })
        .await
        .expect("join");
        assert!(
            took >= HANDSHAKE,
            "{addr}: closed after {took:?}, before the timeout"
        );
    }
    // The preface alone, with no SETTINGS frame after it, is not an opened connection either.
    let grpc = router.grpc_addr();
    let took = tokio::task::spawn_blocking(move || {
        let (mut stream, opened) = silent(grpc);
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .expect("preface");
        closed_after(&mut stream, opened)
    })
    .await
    .expect("join");
    assert!(
        took >= HANDSHAKE,
        "closed after {took:?}, before the timeout"
    );
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_sent_one_byte_at_a_time_is_cut_off() {
    let redis = RedisServer::start().expect("redis-server");
    let router = router_with(&redis, |c| c.handshake_timeout = HANDSHAKE).await;
    for (addr, head) in [
        (
            router.http_addr(),
            &b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"[..],
        ),
        // The HTTP/2 preface, dribbled, and no SETTINGS after it.
        (router.grpc_addr(), &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]),
    ] {
        let head = head.to_vec();
        let took = tokio::task::spawn_blocking(move || {
            let (mut stream, opened) = silent(addr);
            for byte in &head {
                if stream.write_all(&[*byte]).is_err() {
                    break;
                }
                // The client's pace: one byte per 100 ms.
                std::thread::sleep(Duration::from_millis(100));
                if opened.elapsed() > HANDSHAKE + SLACK {
                    panic!("{addr}: still taking bytes after {:?}", opened.elapsed());
                }
            }
            closed_after(&mut stream, opened)
        })
        .await
        .expect("join");
        assert!(
            took < HANDSHAKE + SLACK,
            "{addr}: a slow head held the connection {took:?}"
        );
    }
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_filled_with_idle_sockets_free_up_and_health_answers() {
    let redis = RedisServer::start().expect("redis-server");
    let router = router_with(&redis, |c| {
        c.handshake_timeout = HANDSHAKE;
        c.max_http_connections = 4;
        c.max_grpc_connections = 4;
    })
    .await;
    // Every place taken by a socket that never sends anything.
    let idle: Vec<TcpStream> = [router.http_addr(), router.grpc_addr()]
        .into_iter()
        .flat_map(|addr| (0..4).map(move |_| TcpStream::connect(addr).expect("connect")))
        .collect();
    let http = router.http_addr();
    eventually("/healthz answers past the idle sockets", || async move {
        let probe = tokio::time::timeout(
            Duration::from_millis(300),
            hunt_testkit::http_get(http, "/healthz"),
        );
        matches!(probe.await, Ok((200, _))).then_some(())
    })
    .await;
    let grpc = router.grpc_addr();
    eventually("gRPC health answers past the idle sockets", || async move {
        let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
            .expect("uri")
            .timeout(Duration::from_millis(300))
            .connect_timeout(Duration::from_millis(300))
            .connect()
            .await
            .ok()?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: "hunt.v1.LeaderboardService".into(),
            })
            .await
            .ok()
            .map(drop)
    })
    .await;
    drop(idle);
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_on_the_admin_port_answer_while_the_http_port_is_full() {
    let redis = RedisServer::start().expect("redis-server");
    let router = router_with(&redis, |c| {
        // Idle sockets would stay a minute on the HTTP port.
        c.handshake_timeout = Duration::from_secs(60);
        c.max_http_connections = 2;
        c.admin_addr = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let admin = router.admin_addr().expect("the admin port is on");
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(router.http_addr()).expect("connect"))
        .collect();
    // The HTTP port is full: a probe there waits in the backlog.
    let blocked = tokio::time::timeout(
        Duration::from_millis(300),
        hunt_testkit::http_get(router.http_addr(), "/healthz"),
    )
    .await;
    assert!(blocked.is_err(), "the HTTP port answered past its cap");
    // The admin port answers at once, and serves nothing else.
    assert_eq!(hunt_testkit::http_get(admin, "/healthz").await.0, 200);
    eventually("/readyz on the admin port", || async move {
        (hunt_testkit::http_get(admin, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(hunt_testkit::http_get(admin, "/").await.0, 404);
    assert_eq!(hunt_testkit::http_get(admin, "/ws").await.0, 404);
    drop(idle);
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

/// A connection from `from` (a loopback address) to `to`.
async fn connect_from(from: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind");
    socket.connect(to).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_connections() {
    use tokio::io::AsyncReadExt;
    let redis = RedisServer::start().expect("redis-server");
    let router = router_with(&redis, |c| {
        c.handshake_timeout = Duration::from_secs(60);
        c.max_connections_per_ip = 2;
    })
    .await;
    let http = router.http_addr();
    let _held = [
        connect_from("127.0.0.1", http).await,
        connect_from("127.0.0.1", http).await,
    ];
    // A third from the same address is closed at once, without a byte.
    let mut third = connect_from("127.0.0.1", http).await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Another address is served.
    let mut other = connect_from("127.0.0.2", http).await;
    {
        use tokio::io::AsyncWriteExt;
        other
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
    }
    let mut reply = String::new();
    other.read_to_string(&mut reply).await.expect("reply");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_connection_with_nothing_in_service_is_closed_after_the_idle_timeout() {
    use leaderboard_proto::v1::WatchRequest;
    const IDLE: Duration = Duration::from_millis(600);
    let redis = RedisServer::start().expect("redis-server");
    let router = router_with(&redis, |c| c.grpc_idle_timeout = Some(IDLE)).await;
    let grpc = router.grpc_addr();

    // Opened properly (the preface and SETTINGS), then nothing: closed once idle for IDLE,
    // although the server's own frames (SETTINGS, its ACK) crossed the connection.
    let took = tokio::task::spawn_blocking(move || {
        let (mut stream, opened) = silent(grpc);
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .expect("preface and SETTINGS");
        closed_after(&mut stream, opened)
    })
    .await
    .expect("join");
    assert!(
        took >= IDLE,
        "closed after {took:?}, before the idle timeout"
    );

    // A Watch keeps its connection in service: after several idle timeouts it is still open.
    let mut client = crate::support::client(&router).await;
    let mut updates = client
        .watch(WatchRequest {
            tier: 1,
            ..WatchRequest::default()
        })
        .await
        .expect("Watch")
        .into_inner();
    updates
        .message()
        .await
        .expect("the snapshot")
        .expect("a first message");
    // Time passing is what is tested here: the stream must neither fail nor end meanwhile.
    let waited = tokio::time::timeout(3 * IDLE, updates.message()).await;
    assert!(
        waited.is_err(),
        "the Watch ended while in service: {waited:?}"
    );
    assert!(router.shutdown(Duration::from_secs(10)).await);
}
