//! `/ws` with a real WebSocket client: snapshot plus deltas rebuild the top `GetTop` serves at
//! the same version; bad frames get error frames; binary frames close the connection.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hunt_testkit::RedisServer;
use leaderboard_proto::v1::spectator_response::Frame;
use leaderboard_proto::v1::watch_response::Update;
use leaderboard_proto::v1::{Entry, GetTopRequest, SpectatorResponse, WatchResponse};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{DEADLINE, client, eventually, router, router_with, score};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: std::net::SocketAddr) -> Socket {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("WebSocket connect")
        .0
}

/// The next text frame: a `SpectatorResponse` in the proto3 JSON mapping.
async fn next(socket: &mut Socket) -> Frame {
    loop {
        let message = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame ok");
        if let Message::Text(text) = message {
            return parse(&text);
        }
    }
}

fn parse(text: &str) -> Frame {
    serde_json::from_str::<SpectatorResponse>(text)
        .expect("a SpectatorResponse")
        .frame
        .expect("a frame")
}

/// The update `frame` carries.
fn update(frame: Frame) -> WatchResponse {
    match frame {
        Frame::Update(update) => update,
        other => panic!("expected an update, got {other:?}"),
    }
}

/// The code of the error `frame` carries.
fn error_code(frame: Frame) -> String {
    match frame {
        Frame::Error(error) => error.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn is_snapshot(frame: Frame) -> bool {
    matches!(update(frame).update, Some(Update::Snapshot(_)))
}

fn rows(entries: &[Entry]) -> impl Iterator<Item = (String, (u64, i64))> + '_ {
    entries
        .iter()
        .map(|e| (e.player_id.clone(), (e.rank, e.score)))
}

async fn send(socket: &mut Socket, frame: &str) {
    socket
        .send(Message::Text(frame.into()))
        .await
        .expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_deltas_rebuild_get_top_at_the_same_version() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    let writer = crate::support::writer(&redis, dir.path(), 3).await;
    let mut socket = connect(router.http_addr()).await;
    send(&mut socket, r#"{"subscribe":{"tier":2}}"#).await;
    let first = update(next(&mut socket).await);
    assert!(
        matches!(first.update, Some(Update::Snapshot(_))),
        "{first:?}"
    );
    assert_eq!(first.tier, 2);

    for (i, player) in ["ada", "bo", "cy", "di", "ed", "fay"].iter().enumerate() {
        writer
            .append(score(2, player, 10 * (i as i64 + 1)))
            .await
            .expect("append");
    }
    writer.append(score(2, "ada", 100)).await.expect("append");
    let mut grpc = client(&router).await;
    // Rebuild from the snapshot and the deltas until it is the top GetTop serves.
    let mut top: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    let mut version = first.version;
    let mut deltas = 0;
    let mut frame = first;
    loop {
        match &frame.update {
            Some(Update::Snapshot(snapshot)) => top = rows(&snapshot.entries).collect(),
            Some(Update::Delta(delta)) => {
                assert_eq!(delta.base, version, "a delta applies to the last version");
                deltas += 1;
                for gone in &delta.removals {
                    top.remove(gone);
                }
                top.extend(rows(&delta.upserts));
            }
            None => panic!("an update without a top: {frame:?}"),
        }
        version = frame.version;
        let served = grpc
            .get_top(GetTopRequest {
                tier: 2,
                offset: 0,
                limit: 100,
            })
            .await
            .expect("GetTop")
            .into_inner();
        let rebuilt: BTreeMap<String, (u64, i64)> = served
            .entries
            .iter()
            .map(|e| (e.player_id.clone(), (e.rank, e.score)))
            .collect();
        // At every version both serve, the rebuilt top is GetTop's; done once the last append
        // (ada's +100) shows.
        if served.version == version {
            assert_eq!(top, rebuilt, "at version {version}");
            if top.get("ada") == Some(&(1, 110)) {
                assert_eq!(top.len(), 6);
                break;
            }
        }
        frame = update(next(&mut socket).await);
    }
    assert!(deltas > 0, "changes arrived as deltas");
    writer.shutdown().await.expect("shutdown");
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_frames_and_binary_closes() {
    let redis = RedisServer::start().expect("redis-server");
    let router = router(&redis).await;
    let mut socket = connect(router.http_addr()).await;
    send(&mut socket, r#"{"subscribe":{"tier":999}}"#).await;
    assert_eq!(error_code(next(&mut socket).await), "unknown_tier");
    send(&mut socket, "not json").await;
    assert_eq!(error_code(next(&mut socket).await), "bad_request");
    send(&mut socket, r#"{"subscribe":{"tier":1,"tear":2}}"#).await;
    assert_eq!(error_code(next(&mut socket).await), "bad_request");
    // The connection stays.
    send(&mut socket, r#"{"ping":{}}"#).await;
    assert!(matches!(next(&mut socket).await, Frame::Pong(_)));
    // Oversized frames are refused.
    send(
        &mut socket,
        &format!(r#"{{"ping":{{}},"x":"{}"}}"#, "x".repeat(10_000)),
    )
    .await;
    // It is not answered: the server closes with 1009 (message too big), naming the limit.
    let (code, reason) = closed(&mut socket).await.expect("a close frame");
    assert_eq!(code, CloseCode::Size);
    assert!(reason.contains("4096 bytes"), "{reason}");

    let mut socket = connect(router.http_addr()).await;
    socket
        .send(Message::Binary(vec![0, 1, 2].into()))
        .await
        .expect("send");
    let close = loop {
        match tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Policy));
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

/// Reads until a close frame; returns its code and reason.
async fn closed(socket: &mut Socket) -> Option<(CloseCode, String)> {
    loop {
        match tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Close(frame))) => {
                return frame.map(|f| (f.code, f.reason.to_string()));
            }
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_subscriptions_rate_connections_and_silence() {
    let redis = RedisServer::start().expect("redis-server");
    let router = router_with(&redis, |c| {
        c.ws.max_subscriptions = 2;
        c.ws.max_frames_per_second = 5;
        c.ws.max_connections = 2;
        c.ws.ping_interval = Duration::from_millis(100);
        c.ws.idle_timeout = Duration::from_millis(400);
    })
    .await;
    let addr = router.http_addr();
    // Every tier read once, so no freshness update (fresh after the first read) interleaves.
    eventually("the router ready", || async {
        (hunt_testkit::http_get(addr, "/readyz").await.0 == 200).then_some(())
    })
    .await;

    let mut socket = connect(addr).await;
    for tier in [1, 2] {
        send(
            &mut socket,
            &format!(r#"{{"subscribe":{{"tier":{tier}}}}}"#),
        )
        .await;
        assert!(is_snapshot(next(&mut socket).await));
    }
    send(&mut socket, r#"{"subscribe":{"tier":3}}"#).await;
    assert_eq!(
        error_code(next(&mut socket).await),
        "too_many_subscriptions"
    );
    // Unsubscribing frees a place.
    send(&mut socket, r#"{"unsubscribe":{"tier":1}}"#).await;
    send(&mut socket, r#"{"subscribe":{"tier":3}}"#).await;
    assert_eq!(update(next(&mut socket).await).tier, 3);

    // A third spectator is refused with 503 while two are connected.
    let mut second = connect(addr).await;
    match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("expected 503, got {other:?}"),
    }

    // Past the rate (a burst of 10, then 5/s): rate_limited, and a flood is closed.
    let mut codes = Vec::new();
    for _ in 0..40 {
        send(&mut second, r#"{"ping":{}}"#).await;
    }
    let close = loop {
        match tokio::time::timeout(DEADLINE, second.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Text(text))) => {
                codes.push(match parse(&text) {
                    Frame::Pong(_) => "pong".to_owned(),
                    other => error_code(other),
                });
            }
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("expected frames and a close, got {other:?}"),
        }
    };
    assert!(
        codes.iter().filter(|c| *c == "pong").count() >= 10,
        "{codes:?}"
    );
    assert!(codes.iter().any(|c| c == "rate_limited"), "{codes:?}");
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Policy));

    // A spectator that never reads (and so never answers a ping) is closed as idle.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (code, reason) = closed(&mut socket).await.expect("a close frame");
    assert_eq!(code, CloseCode::Normal);
    assert!(reason.contains("idle"), "{reason}");
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spectator_resumes_from_its_last_version_with_deltas() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    let writer = crate::support::writer(&redis, dir.path(), 5).await;
    let mut socket = connect(router.http_addr()).await;
    send(&mut socket, r#"{"subscribe":{"tier":4}}"#).await;
    assert!(is_snapshot(next(&mut socket).await));
    writer.append(score(4, "ada", 5)).await.expect("append");
    let first = update(next(&mut socket).await);
    let (version, epoch) = (first.version, first.epoch);
    assert!(!epoch.is_empty());

    // bo arrives while this spectator is away; the first one shows when it was published.
    writer.append(score(4, "bo", 7)).await.expect("append");
    loop {
        if format!("{:?}", next(&mut socket).await).contains("\"bo\"") {
            break;
        }
    }
    let mut socket = connect(router.http_addr()).await;
    send(
        &mut socket,
        &format!(r#"{{"subscribe":{{"tier":4,"version":"{version}","epoch":"{epoch}"}}}}"#),
    )
    .await;
    let resumed = update(next(&mut socket).await);
    let Some(Update::Delta(delta)) = &resumed.update else {
        panic!("expected a delta, got {resumed:?}");
    };
    assert_eq!(delta.base, version, "{resumed:?}");
    assert_eq!(delta.upserts[0].player_id, "bo", "{resumed:?}");
    send(&mut socket, r#"{"unsubscribe":{"tier":4}}"#).await;
    // A version the router never published: a snapshot.
    send(
        &mut socket,
        &format!(r#"{{"subscribe":{{"tier":4,"version":999999,"epoch":"{epoch}"}}}}"#),
    )
    .await;
    assert!(is_snapshot(next(&mut socket).await));

    // Another router on the same Redis counts its own versions: a spectator that moves there
    // with this router's version gets a snapshot, never deltas of an unrelated lineage, and the
    // board it rebuilds equals GetTop.
    let other = crate::support::router(&redis).await;
    resumes_from_a_snapshot(&other, version, &epoch).await;
    // A restarted router is another lineage too.
    assert!(router.shutdown(Duration::from_secs(10)).await);
    let restarted = crate::support::router(&redis).await;
    resumes_from_a_snapshot(&restarted, version, &epoch).await;
    writer.shutdown().await.expect("shutdown");
    assert!(other.shutdown(Duration::from_secs(10)).await);
    assert!(restarted.shutdown(Duration::from_secs(10)).await);
}

/// A spectator moving to `other` (a router of another lineage than `epoch`'s) with `version`:
/// once `other` has read and published the two-player board of tier 4, the spectator gets a
/// snapshot of it, equal to `GetTop`, never deltas.
async fn resumes_from_a_snapshot(other: &tier_router::AppHandle, version: u64, epoch: &str) {
    // Once it has read the board (nothing is appended meanwhile, so it stays the same).
    let top = eventually("the other router has read the board", || async {
        let top = client(other)
            .await
            .get_top(leaderboard_proto::v1::GetTopRequest {
                tier: 4,
                offset: 0,
                limit: 100,
            })
            .await
            .ok()?
            .into_inner();
        (top.entries.len() == 2).then_some(top)
    })
    .await;
    // And has published it to its spectators (a plain subscription shows both players).
    let mut probe = connect(other.http_addr()).await;
    send(&mut probe, r#"{"subscribe":{"tier":4}}"#).await;
    loop {
        let seen = update(next(&mut probe).await);
        if let Some(Update::Snapshot(snapshot)) = &seen.update
            && snapshot.entries.len() == 2
        {
            break;
        }
        send(&mut probe, r#"{"unsubscribe":{"tier":4}}"#).await;
        send(&mut probe, r#"{"subscribe":{"tier":4}}"#).await;
    }
    let mut moved = connect(other.http_addr()).await;
    send(
        &mut moved,
        &format!(r#"{{"subscribe":{{"tier":4,"version":"{version}","epoch":"{epoch}"}}}}"#),
    )
    .await;
    let there = update(next(&mut moved).await);
    assert_ne!(there.epoch, epoch, "each router has its own epoch");
    let Some(Update::Snapshot(snapshot)) = &there.update else {
        panic!("a version of another epoch must get a snapshot, got {there:?}");
    };
    assert_eq!(snapshot.entries, top.entries);
    assert_eq!(there.version, top.version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spectator_that_never_reads_delays_no_one_and_is_closed() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router_with(&redis, |c| {
        c.ws_coalesce = Duration::from_millis(5);
        c.ws.queue = 8;
        c.ws.send_timeout = Duration::from_millis(500);
        c.ws.max_resyncs = 3;
    })
    .await;
    let addr = router.http_addr();
    let writer = crate::support::writer(&redis, dir.path(), 6).await;
    // A full top of long names: every update of it is about ten kilobytes.
    let hunter = |i: i64| format!("hunter-with-a-long-name-for-a-heavy-leaderboard-{i:03}");
    for i in 0..120 {
        writer
            .append(score(1, &hunter(i), 1_000 + i))
            .await
            .expect("append");
    }

    // The slow spectator: a tiny receive buffer, and it never reads.
    let slow_socket = tokio::net::TcpSocket::new_v4().expect("socket");
    slow_socket.set_recv_buffer_size(4_096).expect("SO_RCVBUF");
    let stream = slow_socket.connect(addr).await.expect("connect");
    let (mut slow, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/ws"),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .expect("WebSocket handshake");
    send(&mut slow, r#"{"subscribe":{"tier":1}}"#).await;

    // A hundred spectators that keep up, each noting how late it saw each jump.
    const STEPS: i64 = 300;
    let record = |step: i64| 1_000_000 + step;
    let sent_at = std::sync::Arc::new(std::sync::Mutex::new(
        BTreeMap::<i64, std::time::Instant>::new(),
    ));
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let mut socket = connect(addr).await;
        send(&mut socket, r#"{"subscribe":{"tier":1}}"#).await;
        let sent_at = std::sync::Arc::clone(&sent_at);
        readers.spawn(async move {
            let mut worst = Duration::ZERO;
            let mut step = 1;
            while step <= STEPS {
                let text = match tokio::time::timeout(DEADLINE, socket.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => text,
                    Ok(Some(Ok(_))) => continue,
                    other => panic!("a spectator lost its feed: {other:?}"),
                };
                // Coalescing may merge jumps: the latest one seen counts for all before it.
                let latest = text
                    .split("\"score\":\"")
                    .skip(1)
                    .filter_map(|rest| {
                        let digits: String =
                            rest.chars().take_while(char::is_ascii_digit).collect();
                        digits.parse::<i64>().ok()
                    })
                    .filter(|score| *score > record(0))
                    .max();
                if let Some(seen) = latest.map(|score| score - record(0))
                    && seen >= step
                {
                    let at = sent_at.lock().expect("lock").get(&record(step)).copied();
                    if let Some(at) = at {
                        worst = worst.max(at.elapsed());
                    }
                    step = seen + 1;
                }
            }
            worst
        });
    }

    // Each step, another hunter jumps to the top with a record score: every rank moves, so each
    // update is a few kilobytes.
    let mut scores: BTreeMap<String, i64> = (0..120).map(|i| (hunter(i), 1_000 + i)).collect();
    for step in 1..=STEPS {
        let jumper = hunter(step % 120);
        let current = scores.get(&jumper).copied().unwrap_or_default();
        scores.insert(jumper.clone(), record(step));
        sent_at
            .lock()
            .expect("lock")
            .insert(record(step), std::time::Instant::now());
        writer
            .append(score(1, &jumper, record(step) - current))
            .await
            .expect("append");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let mut worst = Duration::ZERO;
    while let Some(reader) = readers.join_next().await {
        worst = worst.max(reader.expect("reader"));
    }
    assert!(
        worst < Duration::from_secs(2),
        "the spectators that read saw each jump within {worst:?}"
    );
    // The slow one cost the others nothing. Reading now, it finds it was skipped ahead to a fresh
    // snapshot or, as here where its socket stayed full past the send timeout, that it was
    // closed: with the policy-violation code, or cut off when even the close frame did not fit.
    let mut snapshots = 0;
    let (mut frames, mut bytes) = (0, 0);
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), slow.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                frames += 1;
                bytes += text.len();
                if is_snapshot(parse(&text)) {
                    snapshots += 1;
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                break frame.is_some_and(|f| f.code == CloseCode::Policy);
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => break true,
            Err(_) => break false,
        }
    };
    assert!(
        snapshots >= 2 || closed,
        "the slow spectator was neither resynced nor closed ({snapshots} snapshots in {frames} \
         frames, {bytes} bytes)"
    );
    writer.shutdown().await.expect("shutdown");
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spectator_sees_its_board_go_stale_while_redis_is_paused_and_fresh_after() {
    // No events at all: the tier's owner keeps its lease across the pause and has nothing to
    // apply, so only re-reading the top on reconnect can clear the stale mark.
    let redis = RedisServer::start().expect("redis-server");
    let router = router_with(&redis, |config| {
        config.redis_response_timeout = Duration::from_millis(300);
    })
    .await;
    let mut socket = connect(router.http_addr()).await;
    send(&mut socket, r#"{"subscribe":{"tier":1}}"#).await;
    // Fresh first, with the time the board was read.
    let first = loop {
        let first = update(next(&mut socket).await);
        if !first.stale {
            break first;
        }
    };
    assert!(first.changed_at_ms > 0, "{first:?}");
    redis.pause().expect("SIGSTOP redis");
    let paused = loop {
        let frame = update(next(&mut socket).await);
        if frame.stale {
            break frame;
        }
    };
    // The same board, flagged: no version moved.
    assert_eq!(paused.version, first.version);
    assert_eq!(paused.changed_at_ms, first.changed_at_ms);
    redis.resume();
    let back = loop {
        let frame = update(next(&mut socket).await);
        if !frame.stale {
            break frame;
        }
    };
    assert_eq!(back.epoch, first.epoch);
    assert!(router.shutdown(Duration::from_secs(10)).await);
}
