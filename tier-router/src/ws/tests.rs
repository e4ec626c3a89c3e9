//! The connection logic over channels instead of a socket: fast, and with the clock paused
//! where time matters.

#![allow(clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use leaderboard_proto::rewards;
use leaderboard_proto::v1::Entry;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{PollSendError, PollSender};

use super::*;
use crate::cache::{Cache, Snapshot};

/// The server's end of a connection made of two bounded channels.
struct ChannelSocket {
    incoming: ReceiverStream<Result<Message, Infallible>>,
    outgoing: PollSender<Message>,
}

impl Stream for ChannelSocket {
    type Item = Result<Message, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.get_mut().incoming).poll_next(cx)
    }
}

impl Sink<Message> for ChannelSocket {
    type Error = PollSendError<Message>;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().outgoing).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        Pin::new(&mut self.get_mut().outgoing).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().outgoing).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().outgoing).poll_close(cx)
    }
}

/// Frames buffered each way, as a socket's buffers would.
const CHANNEL: usize = 16;
/// How long a test waits for a frame (on the paused clock, once nothing else can run).
const DEADLINE: Duration = Duration::from_secs(10);

/// The client's end, with the task serving the server's end.
struct Spectator {
    to_server: mpsc::Sender<Result<Message, Infallible>>,
    from_server: mpsc::Receiver<Message>,
    served: JoinHandle<()>,
}

impl Spectator {
    fn connect(state: &WsState) -> Self {
        let (to_server, incoming) = mpsc::channel(CHANNEL);
        let (outgoing, from_server) = mpsc::channel(CHANNEL);
        let socket = ChannelSocket {
            incoming: ReceiverStream::new(incoming),
            outgoing: PollSender::new(outgoing),
        };
        Self {
            to_server,
            from_server,
            served: tokio::spawn(serve(socket, state.clone())),
        }
    }

    async fn send(&self, message: Message) {
        self.to_server.send(Ok(message)).await.expect("server open");
    }

    async fn text(&self, text: &str) {
        self.send(Message::Text(text.into())).await;
    }

    /// The next frame the server sends, pings left out.
    async fn next(&mut self) -> Message {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.from_server.recv())
                .await
                .expect("a frame in time")
                .expect("connection open");
            if !matches!(message, Message::Ping(_)) {
                return message;
            }
        }
    }

    /// The next frame, as JSON.
    /// The next text frame, parsed; an update's `changedAtMs` (the wall clock) is checked to be
    /// a number and left out, so frames compare whole.
    async fn frame(&mut self) -> Value {
        let mut frame: Value = match self.next().await {
            Message::Text(text) => serde_json::from_str(text.as_str()).expect("JSON frame"),
            other => panic!("expected a text frame, got {other:?}"),
        };
        if let Some(update) = frame.get_mut("update").and_then(Value::as_object_mut) {
            let changed_at = update.remove("changedAtMs").expect("changedAtMs");
            assert!(
                changed_at
                    .as_str()
                    .is_some_and(|ms| ms.parse::<u64>().is_ok()),
                "{changed_at}"
            );
        }
        frame
    }

    /// The text frames the server sends before its close frame, and that close frame's code and
    /// reason; answers the close, and waits until the server ends the connection.
    async fn until_closed(mut self) -> (Vec<Value>, (u16, String)) {
        let mut texts = Vec::new();
        loop {
            match self.next().await {
                Message::Text(text) => {
                    texts.push(serde_json::from_str(text.as_str()).expect("JSON frame"));
                }
                Message::Close(Some(frame)) => {
                    self.send(Message::Close(None)).await;
                    tokio::time::timeout(DEADLINE, self.served)
                        .await
                        .expect("the server ends the connection")
                        .expect("the server task does not panic");
                    return (texts, (frame.code, frame.reason.to_string()));
                }
                other => panic!("expected a text or close frame, got {other:?}"),
            }
        }
    }

    /// The close frame the server sends next, after which it ends the connection.
    async fn closed(self) -> (u16, String) {
        let (texts, close) = self.until_closed().await;
        assert_eq!(texts, Vec::<Value>::new(), "frames before the close");
        close
    }
}

fn first_tier() -> u32 {
    rewards::tier_ids()
        .next()
        .expect("a tier in the reward table")
}

fn state(cache: &Arc<Cache>, limits: WsLimits) -> WsState {
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    WsState {
        fanout: Arc::new(Fanout::start(
            cache,
            Duration::from_millis(100),
            &stop,
            &tasks,
        )),
        limits,
        connections: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
        stop,
        tasks,
    }
}

fn top(players: &[(&str, i64)]) -> Vec<Entry> {
    players
        .iter()
        .zip(1..)
        .map(|((player, score), rank)| Entry {
            rank,
            player_id: (*player).to_owned(),
            score: *score,
            display_name: None,
        })
        .collect()
}

/// Publishes `entries` as `tier`'s next top and waits until the fanout has published it.
async fn publish(state: &WsState, cache: &Cache, tier: u32, entries: Vec<Entry>) -> u64 {
    cache.publish(tier, entries);
    let version = cache.get(tier).expect("known tier").version;
    let mut latest = state.fanout.tiers[&tier].latest.clone();
    latest
        .wait_for(|update| update.version == version)
        .await
        .expect("publisher running");
    version
}

#[tokio::test(start_paused = true)]
async fn frames_past_the_rate_get_errors_and_a_flood_is_closed() {
    let cache = Arc::new(Cache::new());
    let limits = WsLimits {
        max_frames_per_second: 2,
        ..WsLimits::default()
    };
    let state = state(&cache, limits);
    let mut spectator = Spectator::connect(&state);
    // A burst of twice the rate passes; the frame after it is refused, and the connection stays.
    for _ in 0..5 {
        spectator.text(r#"{"ping":{}}"#).await;
    }
    for _ in 0..4 {
        assert_eq!(spectator.frame().await, json!({"pong": {}}));
    }
    assert_eq!(
        spectator.frame().await,
        json!({"error": {"code": "rate_limited", "message": "at most 2 frames per second"}})
    );
    // A second earns two frames back.
    tokio::time::advance(Duration::from_secs(1)).await;
    spectator.text(r#"{"ping":{}}"#).await;
    assert_eq!(spectator.frame().await, json!({"pong": {}}));
    // As many refused frames in a row as the burst close the connection (replies still queued
    // then may never go out).
    for _ in 0..5 {
        spectator.text(r#"{"ping":{}}"#).await;
    }
    let (replies, close) = spectator.until_closed().await;
    assert_eq!(
        close,
        (close_code::POLICY, "flood: too many frames".to_owned())
    );
    assert!(replies.len() <= 4, "{replies:?}");
    for reply in replies {
        assert!(
            reply == json!({"pong": {}}) || reply["error"]["code"] == "rate_limited",
            "{reply}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_subscription_to_an_unknown_tier_gets_an_error_frame_and_the_connection_stays() {
    let cache = Arc::new(Cache::new());
    let state = state(&cache, WsLimits::default());
    let mut spectator = Spectator::connect(&state);
    spectator.text(r#"{"subscribe":{"tier":999}}"#).await;
    assert_eq!(
        spectator.frame().await,
        json!({"error": {"code": "unknown_tier", "message": "no tier 999"}})
    );
    // Not the proto3 JSON mapping: a wrong type, an unknown field, no op, the old shape.
    for bad in [
        r#"{"subscribe":{"tier":"one"}}"#,
        r#"{"ping":{"x":1}}"#,
        r#"{"subscribe":{"tier":1},"extra":true}"#,
        r#"{}"#,
        r#"{"op":"subscribe","tier":1}"#,
    ] {
        spectator.text(bad).await;
        assert_eq!(
            spectator.frame().await["error"]["code"],
            "bad_request",
            "{bad}"
        );
    }
    spectator.text(r#"{"ping":{}}"#).await;
    assert_eq!(spectator.frame().await, json!({"pong": {}}));
    // A binary frame is not part of the protocol: it closes the connection.
    spectator
        .send(Message::Binary(axum::body::Bytes::from_static(b"\x00")))
        .await;
    assert_eq!(
        spectator.closed().await,
        (
            close_code::POLICY,
            "binary frames are not part of the protocol".to_owned()
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_resumed_subscription_gets_the_deltas_since_its_version_then_live_ones() {
    let cache = Arc::new(Cache::new());
    let state = state(&cache, WsLimits::default());
    let tier = first_tier();
    for ada in [10, 20, 30] {
        publish(&state, &cache, tier, top(&[("ada", ada), ("bo", 5)])).await;
    }
    let epoch = cache.epoch().to_owned();
    // Version 1 of another lineage (another router, or this one before a restart): a snapshot.
    let mut elsewhere = Spectator::connect(&state);
    elsewhere
        .text(&format!(
            r#"{{"subscribe":{{"tier":{tier},"version":"1","epoch":"another"}}}}"#
        ))
        .await;
    let snapshot = elsewhere.frame().await;
    assert!(snapshot["update"]["snapshot"].is_object(), "{snapshot}");
    assert_eq!(snapshot["update"]["epoch"], epoch.as_str());
    let mut resumed = Spectator::connect(&state);
    resumed
        .text(&format!(
            r#"{{"subscribe":{{"tier":{tier},"version":"1","epoch":"{epoch}"}}}}"#
        ))
        .await;
    for (version, ada) in [(2, 20), (3, 30)] {
        assert_eq!(
            resumed.frame().await,
            json!({"update": {
                "tier": tier, "version": version.to_string(), "delta": {
                    "base": (version - 1).to_string(),
                    "upserts": [{"rank": "1", "playerId": "ada", "score": ada.to_string()}],
                    "removals": [],
                },
                "epoch": epoch,
                "stale": false,
            }})
        );
    }
    // A version the router no longer has (or never had) gets the latest snapshot.
    let mut lost = Spectator::connect(&state);
    lost.text(&format!(
        r#"{{"subscribe":{{"tier":{tier},"version":77,"epoch":"{epoch}"}}}}"#
    ))
    .await;
    let snapshot = lost.frame().await;
    assert_eq!(snapshot["update"]["version"], "3");
    assert!(snapshot["update"]["snapshot"].is_object(), "{snapshot}");
    // Both follow the live updates as deltas from what each was sent.
    publish(&state, &cache, tier, top(&[("cy", 40), ("ada", 30)])).await;
    let live = json!({"update": {"tier": tier, "version": "4", "delta": {
        "base": "3",
        "upserts": [
            {"rank": "1", "playerId": "cy", "score": "40"},
            {"rank": "2", "playerId": "ada", "score": "30"},
        ],
        "removals": ["bo"],
    }, "epoch": epoch, "stale": false}});
    assert_eq!(resumed.frame().await, live);
    assert_eq!(lost.frame().await, live);
    // Resuming from the latest version sends its freshness alone (an empty delta from it to
    // itself), then nothing until the next update.
    let mut current = Spectator::connect(&state);
    current
        .text(&format!(
            r#"{{"subscribe":{{"tier":{tier},"version":4,"epoch":"{epoch}"}}}}"#
        ))
        .await;
    assert_eq!(
        current.frame().await,
        json!({"update": {"tier": tier, "version": "4", "delta": {
            "base": "4", "upserts": [], "removals": [],
        }, "epoch": epoch, "stale": false}})
    );
    current.text(r#"{"ping":{}}"#).await;
    assert_eq!(current.frame().await, json!({"pong": {}}));
    state.stop.cancel();
    assert_eq!(
        current.closed().await,
        (close_code::AWAY, "the router is shutting down".to_owned())
    );
}

#[test]
fn an_update_is_encoded_once_as_a_snapshot_and_as_a_delta_from_the_version_before() {
    let before = Snapshot {
        version: 6,
        entries: Arc::new(top(&[("ada", 9), ("bo", 5), ("cy", 1)])),
        loaded: true,
        changed_at_ms: 1_000,
        ..Snapshot::default()
    };
    let now = Snapshot {
        version: 7,
        entries: Arc::new(top(&[("bo", 10), ("ada", 9), ("di", 2)])),
        loaded: true,
        changed_at_ms: 2_000,
        ..Snapshot::default()
    };
    let first = Published::encode(3, "e1", None, &before);
    assert_eq!(
        (first.version(), first.base(), first.delta()),
        (6, None, None)
    );
    let update = Published::encode(3, "e1", Some(&before), &now);
    assert_eq!((update.version(), update.base()), (7, Some(6)));
    let snapshot: Value = serde_json::from_str(update.snapshot()).expect("JSON");
    assert_eq!(
        snapshot,
        json!({"update": {"tier": 3, "version": "7", "snapshot": {"entries": [
            {"rank": "1", "playerId": "bo", "score": "10"},
            {"rank": "2", "playerId": "ada", "score": "9"},
            {"rank": "3", "playerId": "di", "score": "2"},
        ]}, "epoch": "e1", "stale": false, "changedAtMs": "2000"}})
    );
    let delta: Value = serde_json::from_str(update.delta().expect("a delta")).expect("JSON");
    assert_eq!(
        delta,
        json!({"update": {"tier": 3, "version": "7", "delta": {"base": "6", "upserts": [
            {"rank": "1", "playerId": "bo", "score": "10"},
            {"rank": "2", "playerId": "ada", "score": "9"},
            {"rank": "3", "playerId": "di", "score": "2"},
        ], "removals": ["cy"]}, "epoch": "e1", "stale": false, "changedAtMs": "2000"}})
    );
    // The same top turning stale: its freshness alone, an empty delta from 7 to 7.
    let paused = Snapshot {
        stale: true,
        ..now.clone()
    };
    let freshness = Published::encode(3, "e1", Some(&now), &paused);
    assert_eq!((freshness.version(), freshness.base()), (7, Some(7)));
    let delta: Value = serde_json::from_str(freshness.delta().expect("a delta")).expect("JSON");
    assert_eq!(
        delta,
        json!({"update": {"tier": 3, "version": "7", "delta": {"base": "7", "upserts": [],
            "removals": []}, "epoch": "e1", "stale": true, "changedAtMs": "2000"}})
    );
    let big = i64::MAX;
    let odd = Snapshot {
        version: 1,
        entries: Arc::new(top(&[("quote\"d", big)])),
        ..Snapshot::default()
    };
    let snapshot: Value =
        serde_json::from_str(Published::encode(1, "e1", None, &odd).snapshot()).expect("JSON");
    let entry = &snapshot["update"]["snapshot"]["entries"][0];
    assert_eq!(entry["playerId"], "quote\"d");
    // A player without a display name has no displayName; one with it, its name.
    assert!(entry.get("displayName").is_none(), "{entry}");
    let mut named = top(&[("ada", 1)]);
    named[0].display_name = Some("Ada \"L\" ✓".into());
    let named = Snapshot {
        version: 1,
        entries: Arc::new(named),
        ..Snapshot::default()
    };
    let snapshot: Value =
        serde_json::from_str(Published::encode(1, "e1", None, &named).snapshot()).expect("JSON");
    assert_eq!(
        snapshot["update"]["snapshot"]["entries"][0]["displayName"],
        "Ada \"L\" ✓"
    );
    // 64-bit integers are strings in the proto3 JSON mapping: no precision lost in a browser.
    assert_eq!(entry["score"], big.to_string());
}

/// Fuzzing the frame handler: any text a client sends (arbitrary strings, and JSON shaped like
/// the protocol with wrong types, unknown keys and odd values) is answered with a frame of the
/// protocol, a pong or an error with a known code, or with nothing; never a panic.
#[tokio::test]
async fn any_client_frame_gets_a_protocol_answer_or_none() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed, TestRunner};

    const CODES: [&str; 4] = [
        "bad_request",
        "unknown_tier",
        "too_many_subscriptions",
        "rate_limited",
    ];
    let cache = Arc::new(Cache::new());
    let state = state(&cache, WsLimits::DEFAULT);
    let (frames, _replies) = mpsc::channel(4096);
    let resyncs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let value = prop_oneof![
        Just("{}".to_owned()),
        Just("null".to_owned()),
        Just("[]".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| format!("\"{n}\"")),
        "[a-z]{0,8}".prop_map(|s| format!("\"{s}\"")),
        (any::<u32>(), any::<i64>()).prop_map(|(t, v)| format!(r#"{{"tier":{t},"version":{v}}}"#)),
        "[a-z]{1,6}".prop_map(|k| format!(r#"{{"tier":1,"{k}":2}}"#)),
    ];
    let op = prop_oneof![
        Just("subscribe"),
        Just("unsubscribe"),
        Just("ping"),
        Just("update"),
        Just("op"),
    ];
    let shaped =
        (op, value, proptest::option::of("[a-z]{1,5}")).prop_map(
            |(op, value, extra)| match extra {
                Some(key) => format!(r#"{{"{op}":{value},"{key}":1}}"#),
                None => format!(r#"{{"{op}":{value}}}"#),
            },
        );
    let text = prop_oneof![any::<String>(), shaped];
    let mut runner = TestRunner::new(Config {
        cases: 3000,
        rng_seed: RngSeed::Fixed(0x5753_4652),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&text, |text| {
            let mut subscriptions = HashMap::new();
            let reply = handle(&text, &state, &frames, &resyncs, &mut subscriptions);
            for (_, stop) in subscriptions.drain() {
                stop.cancel();
            }
            if let Some(reply) = reply {
                let frame: Value = serde_json::from_str(reply.as_str())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let known = frame.get("pong").is_some()
                    || frame["error"]["code"]
                        .as_str()
                        .is_some_and(|code| CODES.contains(&code));
                prop_assert!(known, "{text:?} got {frame}");
            }
            Ok(())
        })
        .expect("every frame gets a protocol answer");
    state.stop.cancel();
}

#[tokio::test]
async fn unknown_keys_are_refused_wherever_they_are() {
    let cache = Arc::new(Cache::new());
    let state = state(&cache, WsLimits::DEFAULT);
    let (frames, _replies) = mpsc::channel(16);
    let resyncs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    for text in [
        r#"{"ping":{},"x":1}"#,
        r#"{"ping":{"x":1}}"#,
        r#"{"subscribe":{"tier":1,"tear":2}}"#,
        r#"{"unsubscribe":{"tier":1},"x":1}"#,
        r#"{"op":"ping","x":1}"#,
    ] {
        let mut subscriptions = HashMap::new();
        let reply = handle(text, &state, &frames, &resyncs, &mut subscriptions)
            .unwrap_or_else(|| panic!("{text} is answered"));
        let frame: Value = serde_json::from_str(reply.as_str()).expect("JSON");
        assert_eq!(frame["error"]["code"], "bad_request", "{text}: {frame}");
        assert!(subscriptions.is_empty());
    }
    state.stop.cancel();
}
