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
    /// Times an observer's stream or socket was cut and opened again.
    reconnects: std::sync::atomic::AtomicU64,
}

/// First wait before an observer reconnects; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_MIN: std::time::Duration = std::time::Duration::from_millis(100);
/// Longest wait between an observer's reconnects.
const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// Reconnects said on stderr one by one; later ones are only counted.
const RECONNECTS_SAID: u64 = 10;

impl Probes {
    pub(crate) fn new(timeline: Arc<Timeline>) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            sent: rewards::TIERS.iter().map(|_| Mutex::default()).collect(),
            seen: Mutex::default(),
            grpc: Mutex::new(histogram::new()?),
            ws: Mutex::new(histogram::new()?),
            timeline,
            reconnects: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Times an observer was cut off and reconnected.
    pub(crate) fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Counts and says that `observer` was cut off (`why`), then waits `backoff` (doubling it,
    /// up to [`RECONNECT_MAX`]) unless `stop` comes first; false when stopped.
    async fn cut_off(
        &self,
        observer: &str,
        why: &str,
        backoff: &mut std::time::Duration,
        stop: &CancellationToken,
    ) -> bool {
        let count = self.reconnects.fetch_add(1, Ordering::Relaxed) + 1;
        if count <= RECONNECTS_SAID {
            eprintln!("loadtest: {observer} was cut off ({why}); reconnecting");
        } else if count == RECONNECTS_SAID + 1 {
            eprintln!("loadtest: more observers cut off; counting them in the report");
        }
        let wait = *backoff;
        *backoff = (*backoff * 2).min(RECONNECT_MAX);
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = stop.cancelled() => false,
        }
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
        let tier = tier.id;
        let mut client = LeaderboardServiceClient::new(channel.clone());
        // The first stream opens before the load starts: a router that is not there fails the
        // run at once. Later ones reopen after a cut, resuming from the last version seen.
        let mut updates = client
            .watch(WatchRequest {
                tier,
                ..WatchRequest::default()
            })
            .await?
            .into_inner();
        let (probes, stop, player) = (Arc::clone(probes), stop.clone(), probe_player(tier));
        let seen = probes.observer(index);
        tasks.spawn(async move {
            let mut resume = WatchRequest {
                tier,
                ..WatchRequest::default()
            };
            let mut backoff = RECONNECT_MIN;
            loop {
                let why = loop {
                    let update = tokio::select! {
                        update = updates.message() => update,
                        () = stop.cancelled() => return Ok(()),
                    };
                    let update = match update {
                        Ok(Some(update)) => update,
                        Ok(None) => break "the router ended the stream".to_owned(),
                        Err(status) => break status.to_string(),
                    };
                    backoff = RECONNECT_MIN;
                    resume.version = update.version;
                    resume.epoch.clone_from(&update.epoch);
                    if let Some(score) = watched_score(update, &player) {
                        probes.saw(index, &seen, score, false);
                    }
                };
                let observer = format!("the Watch of tier {tier}");
                updates = loop {
                    if !probes.cut_off(&observer, &why, &mut backoff, &stop).await {
                        return Ok(());
                    }
                    match client.watch(resume.clone()).await {
                        Ok(stream) => break stream.into_inner(),
                        Err(status) => {
                            if !probes
                                .cut_off(&observer, &status.to_string(), &mut backoff, &stop)
                                .await
                            {
                                return Ok(());
                            }
                        }
                    }
                };
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
        // The first socket opens before the load starts; later ones after a cut, resuming.
        let mut socket = subscribe(http, &format!(r#"{{"subscribe":{{"tier":{tier}}}}}"#)).await?;
        let (probes, stop, player) = (Arc::clone(probes), stop.clone(), probe_player(tier));
        let seen = probes.observer(index);
        tasks.spawn(async move {
            // The last update's version and epoch, to resume from after a cut.
            let mut last: Option<(u64, String)> = None;
            let mut backoff = RECONNECT_MIN;
            loop {
                let why = loop {
                    match next_text(&mut socket, &stop).await {
                        Ok(Some(text)) => {
                            backoff = RECONNECT_MIN;
                            let Some(update) = update_of(&text) else {
                                continue;
                            };
                            last = Some((update.version, update.epoch.clone()));
                            if let Some(score) = watched_score(update, &player) {
                                probes.saw(index, &seen, score, true);
                            }
                        }
                        Ok(None) => return Ok(()),
                        Err(err) => break err.to_string(),
                    }
                };
                let observer = format!("spectator {spectator} (tier {tier})");
                socket = loop {
                    if !probes.cut_off(&observer, &why, &mut backoff, &stop).await {
                        return Ok(());
                    }
                    let resume = match &last {
                        Some((version, epoch)) => serde_json::json!(
                            {"subscribe": {"tier": tier, "version": version.to_string(), "epoch": epoch}}
                        ),
                        None => serde_json::json!({"subscribe": {"tier": tier}}),
                    };
                    match subscribe(http, &resume.to_string()).await {
                        Ok(socket) => break socket,
                        Err(err) => {
                            if !probes.cut_off(&observer, &err.to_string(), &mut backoff, &stop).await {
                                return Ok(());
                            }
                        }
                    }
                };
            }
        });
    }
    Ok(())
}

/// A `/ws` socket at `http` that has sent `request` (a `subscribe` frame).
async fn subscribe(http: std::net::SocketAddr, request: &str) -> anyhow::Result<Socket> {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws")).await?;
    socket
        .send(Message::Text(request.to_owned().into()))
        .await?;
    Ok(socket)
}

/// The update an `update` frame carries; `None` for other frames.
fn update_of(text: &str) -> Option<WatchResponse> {
    let response: SpectatorResponse = serde_json::from_str(text).ok()?;
    match response.frame {
        Some(spectator_response::Frame::Update(update)) => Some(update),
        _ => None,
    }
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

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use hunt_testkit::{RedisServer, eventually};
    use shard_writer::{ShardWriter, WriterConfig};
    use tier_router::{App, RouterConfig};

    use super::*;

    async fn router(
        redis: &RedisServer,
        grpc: std::net::SocketAddr,
        http: std::net::SocketAddr,
    ) -> tier_router::AppHandle {
        let mut config = RouterConfig::new(redis.url());
        config.grpc_addr = grpc;
        config.http_addr = http;
        config.admin_addr = None;
        config.lease_ttl = Duration::from_millis(1_000);
        config.read_block = Duration::from_millis(50);
        App::build(config).await.expect("router").spawn()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn observers_reconnect_when_their_router_restarts_and_see_later_probes() {
        let redis = RedisServer::start().expect("redis-server");
        let first = router(
            &redis,
            "127.0.0.1:0".parse().expect("addr"),
            "127.0.0.1:0".parse().expect("addr"),
        )
        .await;
        let (grpc, http) = (first.grpc_addr(), first.http_addr());
        let probes = Probes::new(Arc::new(Timeline::new(Instant::now()))).expect("probes");
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let channel = hunt_testkit::grpc_channel(grpc).await;
        watch(&probes, &channel, &stop, &mut tasks)
            .await
            .expect("Watch streams");
        spectate(&probes, http, 2, &stop, &mut tasks)
            .await
            .expect("spectators");

        // The router goes away and comes back on the same ports.
        assert!(first.shutdown(Duration::from_secs(10)).await);
        let second = router(&redis, grpc, http).await;
        eventually("every observer cut off and reconnecting", || async {
            (probes.reconnects() >= rewards::TIERS.len() as u64 + 2).then_some(())
        })
        .await;

        // Probes appended after the restart reach every observer.
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = ShardWriter::open(
            WriterConfig::new(dir.path().join("probe.sqlite"), 1).with_redis(redis.url()),
        )
        .await
        .expect("writer");
        let sender = tokio::spawn(send(
            Arc::clone(&probes),
            writer.clone(),
            stop.child_token(),
        ));
        eventually(
            "every observer sees the probes after the restart",
            || async { (probes.count() >= 10 && probes.all_seen()).then_some(()) },
        )
        .await;
        stop.cancel();
        sender.await.expect("join").expect("probes sent");
        while let Some(done) = tasks.join_next().await {
            done.expect("join")
                .expect("an observer ends only when stopped");
        }
        writer.shutdown().await.expect("shutdown");
        assert!(second.shutdown(Duration::from_secs(10)).await);
    }
}
