//! `/ws`: spectators follow tiers' tops over WebSocket, with JSON frames: the proto3 JSON
//! mapping of `hunt.v1.SpectatorRequest` and `hunt.v1.SpectatorResponse`
//! (`leaderboard-proto/proto/hunt/v1/SPECTATOR.md`).
//!
//! Client → server: `{"subscribe":{"tier":N}}` (with `"version":V` to resume from the last
//! version seen: the deltas since, when the router still has them, a snapshot otherwise),
//! `{"unsubscribe":{"tier":N}}`, `{"ping":{}}`. Server → client: `update` (the gRPC
//! `WatchResponse`: a snapshot, then deltas), `pong`, and `error` (code, message); see
//! [`Published`] for the update frames.
//!
//! Design constraints:
//! - One serialization per tier update, shared by every subscriber: a publisher per tier
//!   coalesces the cache's versions (at most one update per `coalesce` interval, so a change
//!   waits at most that long), encodes the snapshot and the delta from the version it published
//!   before once, and broadcasts both.
//! - A slow spectator never slows the others: the broadcast never waits. A subscriber that falls
//!   more than the broadcast's capacity behind gets the latest snapshot instead of the deltas it
//!   missed; one that keeps falling behind (or whose socket does not take a frame in time) is
//!   closed with the policy-violation code.
//! - Every queue is bounded: the broadcast per tier, and the outgoing queue per connection.
//! - A malformed text frame gets an `error` frame and the connection stays; a binary frame is
//!   closed with the policy-violation code.
//! - The connection logic is generic over the socket (any `Sink` of messages that is also a
//!   `Stream` of them), so it is tested with channels as well as over a real socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocketUpgrade, close_code};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::WsLimits;

mod fanout;
mod frame;
#[cfg(test)]
mod tests;

pub(crate) use fanout::Fanout;
pub use frame::Published;

use frame::{error, parse, pong};
use leaderboard_proto::v1::{Subscribe, Unsubscribe, spectator_request::Op};

/// What the `/ws` handler needs.
#[derive(Debug, Clone)]
pub(crate) struct WsState {
    pub(crate) fanout: Arc<Fanout>,
    pub(crate) limits: WsLimits,
    /// One permit per connected spectator.
    pub(crate) connections: Arc<tokio::sync::Semaphore>,
    pub(crate) stop: CancellationToken,
    /// Where each subscription's feeder runs.
    pub(crate) tasks: TaskTracker,
}

/// `GET /ws`: upgrades and serves one spectator; past the connection cap, 503.
pub(crate) async fn upgrade(ws: WebSocketUpgrade, State(state): State<WsState>) -> Response {
    let Ok(place) = Arc::clone(&state.connections).try_acquire_owned() else {
        metrics::counter!(crate::metrics::WS_REFUSED).increment(1);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many spectators: this router holds {} connections\n",
                state.limits.max_connections
            ),
        )
            .into_response();
    };
    let limits = state.limits;
    // Sized for frames of at most `max_frame_bytes`: the 128 KiB defaults of each buffer would
    // cost that much per spectator. Writes go out as they are sent (the server flushes every
    // frame anyway), and what a stalled peer leaves unwritten is bounded.
    ws.max_frame_size(limits.max_frame_bytes)
        .max_message_size(limits.max_frame_bytes)
        .read_buffer_size(limits.max_frame_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(WRITE_BUFFER_MAX)
        .on_upgrade(move |socket| async move {
            metrics::gauge!(crate::metrics::WS_CONNECTIONS).increment(1.0);
            serve(socket, state).await;
            metrics::gauge!(crate::metrics::WS_CONNECTIONS).decrement(1.0);
            drop(place);
        })
}

/// The most a connection's write buffer holds when the peer stops taking bytes: a snapshot of
/// the top with room to spare; past it the send fails and the connection ends.
const WRITE_BUFFER_MAX: usize = 64 * 1024;

/// Whether a receive error is a frame or message over the size limit, which the server answers
/// with close code 1009 (message too big) rather than dropping the connection.
pub(crate) trait ReceiveError {
    /// True for a frame or message past the size limit.
    fn too_big(&self) -> bool;
}

impl ReceiveError for axum::Error {
    fn too_big(&self) -> bool {
        std::error::Error::source(self)
            .and_then(|inner| inner.downcast_ref::<tungstenite::Error>())
            .is_some_and(|err| matches!(err, tungstenite::Error::Capacity(_)))
    }
}

impl ReceiveError for std::convert::Infallible {
    fn too_big(&self) -> bool {
        match *self {}
    }
}

/// Why a connection ends from the server's side.
enum Closing {
    TooBig,
    Policy(&'static str),
    Away,
    Idle,
}

/// A token bucket of frames per second, with a burst of two seconds' worth.
struct RateLimit {
    per_second: f64,
    tokens: f64,
    at: tokio::time::Instant,
    refused: u32,
}

impl RateLimit {
    fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second);
        Self {
            per_second,
            tokens: 2.0 * per_second,
            at: tokio::time::Instant::now(),
            refused: 0,
        }
    }

    /// Takes a token; false when none is left.
    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(2.0 * self.per_second);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused = 0;
            true
        } else {
            self.refused += 1;
            false
        }
    }

    /// Whether the client kept sending well past its limit: as many refused frames in a row
    /// as its burst.
    fn flooding(&self) -> bool {
        f64::from(self.refused) >= 2.0 * self.per_second
    }
}

/// Serves one spectator on `socket` until either side closes it, `state.stop` is cancelled or
/// the spectator breaks a limit; closes it with a close frame saying why, when the server ends it.
async fn serve<S, E>(mut socket: S, state: WsState)
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
    E: ReceiveError,
{
    let limits = state.limits;
    let (frames, mut outgoing) = mpsc::channel::<Utf8Bytes>(limits.queue);
    let resyncs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut subscriptions: HashMap<u32, CancellationToken> = HashMap::new();
    let mut budget = RateLimit::new(limits.max_frames_per_second);
    let mut pings = tokio::time::interval(limits.ping_interval);
    pings.tick().await;
    let mut heard = tokio::time::Instant::now();
    let closing = loop {
        tokio::select! {
            () = state.stop.cancelled() => break Some(Closing::Away),
            _ = pings.tick() => {
                if heard.elapsed() >= limits.idle_timeout {
                    break Some(Closing::Idle);
                }
                let ping = socket.send(Message::Ping(axum::body::Bytes::new()));
                if !matches!(tokio::time::timeout(limits.send_timeout, ping).await, Ok(Ok(()))) {
                    break None;
                }
            }
            frame = outgoing.recv() => {
                let Some(frame) = frame else { break None };
                let sent = tokio::time::timeout(limits.send_timeout, socket.send(Message::Text(frame))).await;
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break None,
                    Err(_) => break Some(Closing::Policy("too slow: a frame was not taken in time")),
                }
                if resyncs.load(std::sync::atomic::Ordering::Relaxed) > limits.max_resyncs {
                    break Some(Closing::Policy("too slow: fell behind too often"));
                }
            }
            received = socket.next() => {
                let message = match received {
                    Some(Ok(message)) => message,
                    Some(Err(err)) if err.too_big() => break Some(Closing::TooBig),
                    _ => break None,
                };
                heard = tokio::time::Instant::now();
                match message {
                    Message::Text(_) | Message::Binary(_) if !budget.take() => {
                        if budget.flooding() {
                            break Some(Closing::Policy("flood: too many frames"));
                        }
                        let limit = limits.max_frames_per_second;
                        let reply = error("rate_limited", format!("at most {limit} frames per second"));
                        if frames.try_send(reply).is_err() {
                            break Some(Closing::Policy("too slow: replies not read"));
                        }
                    }
                    Message::Text(text) => {
                        let reply = handle(&text, &state, &frames, &resyncs, &mut subscriptions);
                        if let Some(reply) = reply && frames.try_send(reply).is_err() {
                            break Some(Closing::Policy("too slow: replies not read"));
                        }
                    }
                    Message::Binary(_) => break Some(Closing::Policy("binary frames are not part of the protocol")),
                    Message::Close(_) => break None,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
        }
    };
    for (_, stop) in subscriptions.drain() {
        stop.cancel();
    }
    let frame = match closing {
        Some(Closing::TooBig) => Some(CloseFrame {
            code: close_code::SIZE,
            reason: Utf8Bytes::from(format!(
                "too big: frames are at most {} bytes",
                limits.max_frame_bytes
            )),
        }),
        Some(Closing::Policy(reason)) => Some(CloseFrame {
            code: close_code::POLICY,
            reason: Utf8Bytes::from_static(reason),
        }),
        Some(Closing::Away) => Some(CloseFrame {
            code: close_code::AWAY,
            reason: Utf8Bytes::from_static("the router is shutting down"),
        }),
        Some(Closing::Idle) => Some(CloseFrame {
            code: close_code::NORMAL,
            reason: Utf8Bytes::from_static("idle: nothing heard within the idle timeout"),
        }),
        None => None,
    };
    if let Some(frame) = frame {
        let _ = tokio::time::timeout(
            limits.send_timeout,
            socket.send(Message::Close(Some(frame))),
        )
        .await;
        // The closing handshake: wait (briefly) for the client's close, so it reads ours
        // before the connection goes.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// How long a closing connection waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Handles one client text frame; returns the direct reply, if any.
fn handle(
    text: &str,
    state: &WsState,
    frames: &mpsc::Sender<Utf8Bytes>,
    resyncs: &Arc<std::sync::atomic::AtomicU32>,
    subscriptions: &mut HashMap<u32, CancellationToken>,
) -> Option<Utf8Bytes> {
    let op = match parse(text) {
        Ok(request) => request.op,
        Err(err) => return Some(error("bad_request", format!("not a valid frame: {err}"))),
    };
    let Some(op) = op else {
        return Some(error(
            "bad_request",
            "not a valid frame: one of subscribe, unsubscribe or ping is required",
        ));
    };
    match op {
        Op::Ping(_) => Some(pong()),
        Op::Unsubscribe(Unsubscribe { tier }) => {
            if let Some(stop) = subscriptions.remove(&tier) {
                stop.cancel();
            }
            None
        }
        Op::Subscribe(Subscribe {
            tier,
            version,
            epoch,
        }) => {
            let Some(feed) = state.fanout.tiers.get(&tier) else {
                return Some(error("unknown_tier", format!("no tier {tier}")));
            };
            if subscriptions.contains_key(&tier) {
                return None;
            }
            if subscriptions.len() >= state.limits.max_subscriptions {
                return Some(error(
                    "too_many_subscriptions",
                    format!("at most {} tiers at once", state.limits.max_subscriptions),
                ));
            }
            let stop = state.stop.child_token();
            subscriptions.insert(tier, stop.clone());
            // Subscribed before the history is read, so nothing falls between the two.
            let updates = feed.updates.subscribe();
            // Version 0 is "none": versions count from 1; a version of another epoch (another
            // router, or this one before a restart) is unrelated to these and never resumed.
            let resume = (version > 0 && epoch == state.fanout.epoch)
                .then(|| feed.resume_from(version))
                .flatten();
            state.tasks.spawn(forward(
                updates,
                resume,
                feed.latest.clone(),
                frames.clone(),
                Arc::clone(resyncs),
                stop,
            ));
            None
        }
    }
}

/// Feeds one subscription: the latest snapshot, then each update as a delta when it applies to
/// what was sent last, as a snapshot otherwise.
async fn forward(
    mut updates: broadcast::Receiver<Arc<Published>>,
    resume: Option<(u64, Vec<Utf8Bytes>)>,
    latest: tokio::sync::watch::Receiver<Arc<Published>>,
    frames: mpsc::Sender<Utf8Bytes>,
    resyncs: Arc<std::sync::atomic::AtomicU32>,
    stop: CancellationToken,
) {
    let (mut sent, first) = match resume {
        Some((version, deltas)) => (version, deltas),
        None => {
            let first = Arc::clone(&latest.borrow());
            (first.version, vec![first.snapshot.clone()])
        }
    };
    for frame in first {
        if !send(&frames, frame, &stop).await {
            return;
        }
    }
    loop {
        let update = tokio::select! {
            () = stop.cancelled() => return,
            update = updates.recv() => update,
        };
        let frame = match update {
            // Older than what was sent; the same version is news only as a freshness change.
            Ok(update)
                if update.version < sent
                    || (update.version == sent && update.base != Some(sent)) =>
            {
                continue;
            }
            Ok(update) => {
                let frame = match (&update.delta, update.base) {
                    (Some(delta), Some(base)) if base == sent => delta.clone(),
                    _ => update.snapshot.clone(),
                };
                sent = update.version;
                frame
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                resyncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                metrics::counter!(crate::metrics::WATCH_RESYNCS).increment(1);
                let current = Arc::clone(&latest.borrow());
                sent = current.version;
                current.snapshot.clone()
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !send(&frames, frame, &stop).await {
            return;
        }
    }
}

/// Queues `frame`, waiting for room (which lets the broadcast run ahead if the client is slow).
async fn send(
    frames: &mpsc::Sender<Utf8Bytes>,
    frame: Utf8Bytes,
    stop: &CancellationToken,
) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        sent = frames.send(frame) => sent.is_ok(),
    }
}
