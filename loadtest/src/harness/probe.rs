//! End-to-end probes of `loadtest run`: a probe shard appends, every 10 ms and round robin over
//! the tiers, points that raise one probe player per tier to a new score; `Watch` streams (gRPC)
//! and WebSocket spectators note when each new score reaches them. Latency runs from the probe's
//! intended send time, so a stalled appender shows up as latency, not as fewer probes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use leaderboard_proto::rewards;
use leaderboard_proto::v1::leaderboard_service_client::LeaderboardServiceClient;
use leaderboard_proto::v1::{
    SpectatorResponse, WatchRequest, WatchResponse, spectator_response, watch_response,
};
use shard_writer::ShardWriter;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::harness::histogram;
use crate::harness::timeline::Timeline;

/// Milliseconds between two probes (each to the next tier).
const PROBE_EVERY: Duration = Duration::from_millis(10);

/// Points per probe: far above any hunter, so the probe player leads its tier.
pub(crate) const PROBE_POINTS: i64 = 1_000_000_000;

/// The player the probes of `tier` raise.
pub(crate) fn probe_player(tier: u32) -> String {
    format!("probe-t{tier}")
}

/// `player`'s score in a `Watch` update (a snapshot or a delta), if the update names it.
pub(crate) fn watched_score(update: WatchResponse, player: &str) -> Option<i64> {
    let entries = match update.update? {
        watch_response::Update::Snapshot(s) => s.entries,
        watch_response::Update::Delta(d) => d.upserts,
    };
    entries
        .iter()
        .find(|e| e.player_id == player)
        .map(|e| e.score)
}

/// The probes sent and who has seen them.
pub(crate) struct Probes {
    /// Per tier (reward table index): the probe player's score once a probe lands → the probe's
    /// intended send time.
    sent: Vec<Mutex<BTreeMap<i64, Instant>>>,
    /// Per observer: its tier index and the best probe score it has seen.
    seen: Mutex<Vec<(usize, Arc<AtomicI64>)>>,
    /// Append → visible in a `Watch` stream.
    pub(crate) grpc: Mutex<Histogram<u64>>,
    /// Append → a WebSocket frame showing it.
    pub(crate) ws: Mutex<Histogram<u64>>,
    timeline: Arc<Timeline>,
}

impl Probes {
    pub(crate) fn new(timeline: Arc<Timeline>) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            sent: rewards::TIERS.iter().map(|_| Mutex::default()).collect(),
            seen: Mutex::default(),
            grpc: Mutex::new(histogram::new()?),
            ws: Mutex::new(histogram::new()?),
            timeline,
        }))
    }

    /// Records, for an observer of tier `index` that just saw `score` after `seen`, the latency
    /// of every probe in between.
    fn saw(&self, index: usize, seen: &AtomicI64, score: i64, over_ws: bool) {
        let before = seen.load(Ordering::Relaxed);
        if score <= before {
            return;
        }
        let now = Instant::now();
        if let Some(Ok(sent)) = self.sent.get(index).map(|s| s.lock()) {
            let histogram = if over_ws { &self.ws } else { &self.grpc };
            if let Ok(mut histogram) = histogram.lock() {
                for at in sent.range(before + 1..=score).map(|(_, at)| *at) {
                    let took = now.duration_since(at);
                    histogram.saturating_record(took.as_nanos() as u64);
                    if !over_ws {
                        self.timeline.end_to_end(at, took);
                    }
                }
            }
        }
        seen.store(score, Ordering::Relaxed);
    }

    fn observer(&self, index: usize) -> Arc<AtomicI64> {
        let seen = Arc::new(AtomicI64::new(0));
        if let Ok(mut all) = self.seen.lock() {
            all.push((index, Arc::clone(&seen)));
        }
        seen
    }

    /// Whether every observer has seen the last probe of its tier.
    pub(crate) fn all_seen(&self) -> bool {
        let last: Vec<i64> = self
            .sent
            .iter()
            .map(|s| {
                s.lock()
                    .ok()
                    .and_then(|s| s.keys().next_back().copied())
                    .unwrap_or(0)
            })
            .collect();
        self.seen.lock().is_ok_and(|seen| {
            seen.iter()
                .all(|(index, seen)| seen.load(Ordering::Relaxed) >= last[*index])
        })
    }

    /// Probes sent so far.
    pub(crate) fn count(&self) -> usize {
        self.sent
            .iter()
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .sum()
    }
}

/// Appends a probe every 10 ms through `writer` until `stop`.
pub(crate) async fn send(
    probes: Arc<Probes>,
    writer: ShardWriter,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut scores = vec![0i64; rewards::TIERS.len()];
    let mut sent = 0u32;
    while !stop.is_cancelled() {
        let due = started + PROBE_EVERY * sent;
        tokio::select! {
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(due)) => {}
            () = stop.cancelled() => break,
        }
        let index = sent as usize % rewards::TIERS.len();
        let tier = rewards::TIERS[index].id;
        scores[index] += PROBE_POINTS;
        if let Ok(mut pending) = probes.sent[index].lock() {
            pending.insert(scores[index], due);
        }
        writer
            .append(hunt_testkit::score(tier, &probe_player(tier), PROBE_POINTS))
            .await?;
        sent += 1;
    }
    Ok(())
}

/// One `Watch` stream per tier over `channel`, each noting the probes it sees, until `stop`.
pub(crate) async fn watch(
    probes: &Arc<Probes>,
    channel: &Channel,
    stop: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    for (index, tier) in rewards::TIERS.iter().enumerate() {
        let mut updates = LeaderboardServiceClient::new(channel.clone())
            .watch(WatchRequest {
                tier: tier.id,
                ..WatchRequest::default()
            })
            .await?
            .into_inner();
        let (probes, stop, player) = (Arc::clone(probes), stop.clone(), probe_player(tier.id));
        let seen = probes.observer(index);
        tasks.spawn(async move {
            loop {
                let update = tokio::select! {
                    update = updates.message() => update?,
                    () = stop.cancelled() => return Ok(()),
                };
                let Some(update) = update else {
                    bail!("the router ended a Watch stream")
                };
                if let Some(score) = watched_score(update, &player) {
                    probes.saw(index, &seen, score, false);
                }
            }
        });
    }
    Ok(())
}

/// `count` WebSocket spectators of `/ws` at `http`, round robin over the tiers, each noting the
/// probes it sees, until `stop`. Returns once every spectator has subscribed.
pub(crate) async fn spectate(
    probes: &Arc<Probes>,
    http: std::net::SocketAddr,
    count: u32,
    stop: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    for spectator in 0..count {
        let index = spectator as usize % rewards::TIERS.len();
        let tier = rewards::TIERS[index].id;
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws")).await?;
        socket
            .send(Message::Text(
                format!(r#"{{"subscribe":{{"tier":{tier}}}}}"#).into(),
            ))
            .await?;
        let (probes, stop, player) = (Arc::clone(probes), stop.clone(), probe_player(tier));
        let seen = probes.observer(index);
        tasks.spawn(async move {
            while let Some(text) = next_text(&mut socket, &stop).await? {
                if let Some(score) = probe_score(&text, &player) {
                    probes.saw(index, &seen, score, true);
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// A spectator's socket.
pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame from `socket` (other frames skipped), or `None` once `stop` is cancelled.
///
/// # Errors
/// When the socket fails or the router closes it.
pub(crate) async fn next_text(
    socket: &mut Socket,
    stop: &CancellationToken,
) -> anyhow::Result<Option<tokio_tungstenite::tungstenite::Utf8Bytes>> {
    loop {
        let frame = tokio::select! {
            frame = socket.next() => frame,
            () = stop.cancelled() => return Ok(None),
        };
        match frame {
            Some(Ok(Message::Text(text))) => return Ok(Some(text)),
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
            None => bail!("the router closed a spectator"),
        }
    }
}

/// The probe player's score in an `update` frame (a snapshot or a delta), if the frame names it.
fn probe_score(text: &str, player: &str) -> Option<i64> {
    let response: SpectatorResponse = serde_json::from_str(text).ok()?;
    let Some(spectator_response::Frame::Update(update)) = response.frame else {
        return None;
    };
    let entries = match update.update? {
        watch_response::Update::Snapshot(snapshot) => snapshot.entries,
        watch_response::Update::Delta(delta) => delta.upserts,
    };
    entries
        .into_iter()
        .find(|e| e.player_id == player)
        .map(|e| e.score)
}
