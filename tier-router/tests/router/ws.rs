//! `/ws` with a real WebSocket client: snapshot plus deltas rebuild the top `GetTop` serves at
//! the same version; bad frames get error frames; binary frames close the connection.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use leaderboard_proto::testkit::RedisServer;
use leaderboard_proto::v1::GetTopRequest;
use serde_json::Value;
use shard_writer::{ShardWriter, WriterConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{DEADLINE, client, router, score};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: std::net::SocketAddr) -> Socket {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("WebSocket connect")
        .0
}

/// The next text frame, as JSON.
async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame ok");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON frame");
        }
    }
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
    let writer = ShardWriter::open(
        WriterConfig::new(dir.path().join("s.sqlite"), 3).with_redis(redis.url()),
    )
    .await
    .expect("writer");
    let mut socket = connect(router.http_addr()).await;
    send(&mut socket, r#"{"op":"subscribe","tier":2}"#).await;
    let first = next(&mut socket).await;
    assert_eq!(first["type"], "snapshot", "{first}");
    assert_eq!(first["tier"], 2);

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
    let mut version = first["version"].as_u64().expect("version");
    let mut deltas = 0;
    let mut frame = first;
    loop {
        match frame["type"].as_str() {
            Some("snapshot") => {
                top = frame["entries"]
                    .as_array()
                    .expect("entries")
                    .iter()
                    .map(|e| {
                        (
                            e["player"].as_str().expect("player").to_owned(),
                            (
                                e["rank"].as_u64().expect("rank"),
                                e["score"].as_i64().expect("score"),
                            ),
                        )
                    })
                    .collect();
            }
            Some("delta") => {
                assert_eq!(
                    frame["base"].as_u64(),
                    Some(version),
                    "a delta applies to the last version"
                );
                deltas += 1;
                for gone in frame["removals"].as_array().expect("removals") {
                    top.remove(gone.as_str().expect("player"));
                }
                for e in frame["upserts"].as_array().expect("upserts") {
                    top.insert(
                        e["player"].as_str().expect("player").to_owned(),
                        (
                            e["rank"].as_u64().expect("rank"),
                            e["score"].as_i64().expect("score"),
                        ),
                    );
                }
            }
            other => panic!("unexpected frame {other:?}: {frame}"),
        }
        version = frame["version"].as_u64().expect("version");
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
        if served.version == version && top.len() == 6 {
            assert_eq!(top, rebuilt);
            assert_eq!(top.get("ada"), Some(&(1, 110)));
            break;
        }
        frame = next(&mut socket).await;
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
    send(&mut socket, r#"{"op":"subscribe","tier":999}"#).await;
    let unknown = next(&mut socket).await;
    assert_eq!(
        (unknown["type"].as_str(), unknown["code"].as_str()),
        (Some("error"), Some("unknown_tier"))
    );
    send(&mut socket, "not json").await;
    assert_eq!(next(&mut socket).await["code"], "bad_request");
    send(&mut socket, r#"{"op":"subscribe"}"#).await;
    assert_eq!(next(&mut socket).await["code"], "bad_request");
    // The connection stays.
    send(&mut socket, r#"{"op":"ping"}"#).await;
    assert_eq!(next(&mut socket).await["type"], "pong");
    // Oversized frames are refused.
    send(
        &mut socket,
        &format!(r#"{{"op":"ping","x":"{}"}}"#, "x".repeat(10_000)),
    )
    .await;
    let closed = tokio::time::timeout(DEADLINE, socket.next())
        .await
        .expect("in time");
    assert!(
        !matches!(closed, Some(Ok(Message::Text(_)))),
        "an oversized frame is not answered: {closed:?}"
    );

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
