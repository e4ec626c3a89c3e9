//! `/ws`: spectators follow tiers' tops over WebSocket, with JSON frames.
//!
//! Client → server: `{"op":"subscribe","tier":N}` (with `"version":V` to resume from the last
//! version seen: the deltas since, when the router still has them, a snapshot otherwise),
//! `{"op":"unsubscribe","tier":N}`, `{"op":"ping"}`. Server → client: `snapshot` (tier, version, entries), then `delta` (tier,
//! version, base, upserts, removals), `pong`, and `error` (code, message).
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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use leaderboard_proto::rewards;
use leaderboard_proto::v1::Entry;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, Diff, Snapshot};
use crate::config::WsLimits;

/// One tier update, encoded once for every subscriber.
#[derive(Debug)]
pub(crate) struct Published {
    version: u64,
    /// The version `delta` applies to; `None` for the first update published.
    base: Option<u64>,
    snapshot: Utf8Bytes,
    delta: Option<Utf8Bytes>,
}

/// One tier's published updates: the broadcast, and the latest update for newcomers.
#[derive(Debug)]
struct TierFeed {
    updates: broadcast::Sender<Arc<Published>>,
    latest: tokio::sync::watch::Receiver<Arc<Published>>,
    /// The last [`HISTORY`] updates, oldest first, for spectators resuming from a version.
    history: Arc<std::sync::Mutex<VecDeque<Arc<Published>>>>,
}

/// Updates kept per tier for resuming spectators.
const HISTORY: usize = 64;

/// The publishers' output, per tier.
#[derive(Debug)]
pub(crate) struct Fanout {
    tiers: HashMap<u32, TierFeed>,
}

/// Updates kept per tier for subscribers that are behind.
const BROADCAST_CAPACITY: usize = 16;

impl Fanout {
    /// Starts a publisher per tier on `cache`, publishing at most once per `coalesce`, until
    /// `stop`.
    pub(crate) fn start(cache: &Arc<Cache>, coalesce: Duration, stop: &CancellationToken) -> Self {
        let mut tiers = HashMap::new();
        for tier in rewards::tier_ids() {
            let Some(mut changes) = cache.subscribe(tier) else {
                continue;
            };
            let first = changes.borrow_and_update().clone();
            let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
            let (latest_tx, latest) =
                tokio::sync::watch::channel(Arc::new(encode(tier, None, &first)));
            let (broadcast_tx, stop) = (sender.clone(), stop.clone());
            let history = Arc::new(std::sync::Mutex::new(VecDeque::with_capacity(HISTORY)));
            let kept = Arc::clone(&history);
            tokio::spawn(async move {
                let mut last = first;
                let now = tokio::time::Instant::now();
                let mut published_at = now.checked_sub(coalesce).unwrap_or(now);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        changed = changes.changed() => if changed.is_err() { return },
                    }
                    // Coalesce: at most one update per interval. A change after a quiet interval
                    // goes out at once; one soon after an update waits for the interval's end,
                    // with whatever else arrives meanwhile.
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep_until(published_at + coalesce) => {}
                    }
                    let current = changes.borrow_and_update().clone();
                    if current.version == last.version {
                        continue;
                    }
                    published_at = tokio::time::Instant::now();
                    let update = Arc::new(encode(tier, Some(&last), &current));
                    if let Ok(mut kept) = kept.lock() {
                        if kept.len() == HISTORY {
                            kept.pop_front();
                        }
                        kept.push_back(Arc::clone(&update));
                    }
                    latest_tx.send_replace(Arc::clone(&update));
                    // No subscriber is not an error.
                    let _ = broadcast_tx.send(update);
                    last = current;
                }
            });
            tiers.insert(
                tier,
                TierFeed {
                    updates: sender,
                    latest,
                    history,
                },
            );
        }
        Self { tiers }
    }
}

/// Entries as spectators see them.
#[derive(Debug, Serialize)]
struct WsEntry<'a> {
    rank: u64,
    player: &'a str,
    score: i64,
}

fn entries(entries: &[Entry]) -> Vec<WsEntry<'_>> {
    entries
        .iter()
        .map(|e| WsEntry {
            rank: e.rank,
            player: &e.player_id,
            score: e.score,
        })
        .collect()
}

/// Frames the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    Snapshot {
        tier: u32,
        version: u64,
        entries: Vec<WsEntry<'a>>,
    },
    Delta {
        tier: u32,
        version: u64,
        base: u64,
        upserts: Vec<WsEntry<'a>>,
        removals: &'a [String],
    },
    Pong,
    Error {
        code: &'a str,
        message: String,
    },
}

fn to_text(frame: &ServerFrame<'_>) -> Utf8Bytes {
    // Serializing these plain structs cannot fail; an empty frame would be the only symptom.
    Utf8Bytes::from(serde_json::to_string(frame).unwrap_or_default())
}

fn encode(tier: u32, before: Option<&Snapshot>, now: &Snapshot) -> Published {
    let snapshot = to_text(&ServerFrame::Snapshot {
        tier,
        version: now.version,
        entries: entries(&now.entries),
    });
    let (base, delta) = match before {
        Some(before) => {
            let diff = Diff::between(&before.entries, &now.entries);
            let delta = to_text(&ServerFrame::Delta {
                tier,
                version: now.version,
                base: before.version,
                upserts: entries(&diff.upserts),
                removals: &diff.removals,
            });
            (Some(before.version), Some(delta))
        }
        None => (None, None),
    };
    Published {
        version: now.version,
        base,
        snapshot,
        delta,
    }
}

/// Frames clients send.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    /// `version`: the last version this client saw, to resume from.
    Subscribe {
        tier: u32,
        version: Option<u64>,
    },
    Unsubscribe {
        tier: u32,
    },
    Ping,
}

fn error(code: &str, message: impl Into<String>) -> Utf8Bytes {
    to_text(&ServerFrame::Error {
        code,
        message: message.into(),
    })
}

/// What the `/ws` handler needs.
#[derive(Debug, Clone)]
pub(crate) struct WsState {
    pub(crate) fanout: Arc<Fanout>,
    pub(crate) limits: WsLimits,
    /// One permit per connected spectator.
    pub(crate) connections: Arc<tokio::sync::Semaphore>,
    pub(crate) stop: CancellationToken,
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
    ws.max_frame_size(limits.max_frame_bytes)
        .max_message_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| async move {
            metrics::gauge!(crate::metrics::WS_CONNECTIONS).increment(1.0);
            serve(socket, state).await;
            metrics::gauge!(crate::metrics::WS_CONNECTIONS).decrement(1.0);
            drop(place);
        })
}

/// Why a connection ends from the server's side.
enum Closing {
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

async fn serve(mut socket: WebSocket, state: WsState) {
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
            received = socket.recv() => {
                let Some(Ok(message)) = received else { break None };
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
            while let Some(Ok(message)) = socket.recv().await {
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
    let frame: ClientFrame = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(err) => return Some(error("bad_request", format!("not a valid frame: {err}"))),
    };
    match frame {
        ClientFrame::Ping => Some(to_text(&ServerFrame::Pong)),
        ClientFrame::Unsubscribe { tier } => {
            if let Some(stop) = subscriptions.remove(&tier) {
                stop.cancel();
            }
            None
        }
        ClientFrame::Subscribe { tier, version } => {
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
            let resume = version.and_then(|from| resume_from(feed, from));
            tokio::spawn(forward(
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
            Ok(update) if update.version <= sent => continue,
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

/// The deltas that bring a spectator from `version` to the latest update, and that latest
/// version; `None` when the history no longer reaches back to `version` (a snapshot then).
fn resume_from(feed: &TierFeed, version: u64) -> Option<(u64, Vec<Utf8Bytes>)> {
    let latest = feed.latest.borrow().version;
    if version == latest {
        return Some((latest, Vec::new()));
    }
    let history = feed.history.lock().ok()?;
    let start = history.iter().position(|u| u.base == Some(version))?;
    let deltas: Option<Vec<Utf8Bytes>> = history
        .iter()
        .skip(start)
        .map(|u| u.delta.clone())
        .collect();
    Some((history.back()?.version, deltas?))
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
