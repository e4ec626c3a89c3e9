//! `hunt.v1.LeaderboardService` over gRPC: reads from the cache, ranks past it from Redis.
//!
//! Every refusal is an [`Error`], turned into a `Status` in one place (its `From` impl), so a
//! kind of refusal always reaches clients with the same gRPC code: a bad argument
//! `INVALID_ARGUMENT`, an unknown tier or a missing record `NOT_FOUND`, Redis down `UNAVAILABLE`.

use std::pin::Pin;
use std::sync::Arc;

use hunt_redis::connection::{Connection, RedisTarget, Timeouts};
use leaderboard_proto::functions::{self, AwardRecord};
use leaderboard_proto::limits::{DEFAULT_TOP_LIMIT, MAX_AROUND, MAX_TOP_LIMIT};
use leaderboard_proto::v1::leaderboard_service_server::LeaderboardService;
use leaderboard_proto::v1::{
    Award, AwardState, Delta, Entry, GetAwardRequest, GetAwardResponse, GetChestRequest,
    GetChestResponse, GetPlayerRequest, GetPlayerResponse, GetTopRequest, GetTopResponse,
    ListTiersRequest, ListTiersResponse, Snapshot as SnapshotMessage, WatchRequest, WatchResponse,
    watch_response,
};
use leaderboard_proto::{keys, rewards, validate};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use crate::cache::{self, Cache, Diff, Snapshot};
use crate::config::CACHED_TOP;
use crate::metrics as m;

mod error;

pub use error::Error;

/// The connection gRPC reads Redis through. Redis dropping it (a restart) marks it broken; a
/// read that finds it broken starts one reconnect in the background and fails at once, so a
/// request never waits on a connect and answers from the cache where it can (`stale: true`).
#[derive(Clone)]
pub struct Reads {
    client: RedisTarget,
    settings: Timeouts,
    current: Arc<std::sync::Mutex<Connection>>,
    broken: Arc<std::sync::atomic::AtomicBool>,
    /// Whether a background reconnect is under way (one at a time).
    reconnecting: Arc<std::sync::atomic::AtomicBool>,
    /// Where the background reconnects run.
    tasks: TaskTracker,
    /// Replicas that must hold a verdict before it is told, and how long to wait for them.
    replicas: u32,
    wait: std::time::Duration,
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reads").finish_non_exhaustive()
    }
}

impl Reads {
    /// Reads through `conn`, reconnecting to `client` with `settings` once it is lost.
    #[must_use]
    pub fn new(client: RedisTarget, settings: Timeouts, conn: Connection) -> Self {
        Self {
            client,
            settings,
            current: Arc::new(std::sync::Mutex::new(conn)),
            broken: Arc::default(),
            reconnecting: Arc::default(),
            tasks: TaskTracker::new(),
            replicas: 0,
            wait: std::time::Duration::ZERO,
        }
    }

    /// Verdicts are told only once `replicas` replicas hold them, waiting up to `wait`.
    #[must_use]
    pub fn with_replicas(mut self, replicas: u32, wait: std::time::Duration) -> Self {
        self.replicas = replicas;
        self.wait = wait;
        self
    }

    /// With replicas configured, returns once they hold everything the primaries of `keys`'
    /// slots applied (a barrier and `WAIT`).
    async fn replicated(&self, conn: &mut Connection, keys: &[&str]) -> Result<(), Error> {
        if self.replicas == 0 {
            return Ok(());
        }
        let acked = hunt_redis::replicated(conn, keys, self.replicas, self.wait)
            .await
            .map_err(|err| self.failed(err))?;
        if acked < u64::from(self.replicas) {
            return Err(Error::Unreplicated {
                acked,
                wanted: self.replicas,
            });
        }
        Ok(())
    }

    /// The connection to read through. While it is lost, an error at once (after starting a
    /// reconnect in the background), never a wait for Redis.
    async fn conn(&self) -> redis::RedisResult<Connection> {
        use std::sync::atomic::Ordering;
        if self.broken.load(Ordering::SeqCst) {
            self.reconnect_in_background();
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the connection to Redis was lost; reconnecting",
            )));
        }
        Ok(self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone())
    }

    /// Starts a reconnect unless one is under way; a success replaces the connection.
    fn reconnect_in_background(&self) {
        use std::sync::atomic::Ordering;
        if self.reconnecting.swap(true, Ordering::SeqCst) {
            return;
        }
        let (client, settings) = (self.client.clone(), self.settings);
        let (current, broken, reconnecting) = (
            Arc::clone(&self.current),
            Arc::clone(&self.broken),
            Arc::clone(&self.reconnecting),
        );
        self.tasks.spawn(async move {
            // Bounded by the connect timeout in `settings`.
            if let Ok(fresh) = client.connect(settings).await {
                *current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                broken.store(false, Ordering::SeqCst);
            }
            reconnecting.store(false, Ordering::SeqCst);
        });
    }

    /// The refusal for a failed read; a lost connection is replaced on the next read.
    fn failed(&self, err: redis::RedisError) -> Error {
        if err.is_connection_dropped()
            || err.code() == Some("READONLY")
            || err.is_unrecoverable_error()
            || err.is_io_error()
            || err.is_timeout()
        {
            self.broken.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Error::Redis(err)
    }
}

/// The gRPC service.
#[derive(Clone)]
pub struct Leaderboard {
    cache: Arc<Cache>,
    redis: Reads,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Leaderboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaderboard").finish_non_exhaustive()
    }
}

impl Leaderboard {
    /// A service reading `cache`, and Redis through `redis` for what the cache does not hold.
    /// Its `Watch` streams (and the reads' background reconnects) run as tasks of `tasks`, and
    /// the streams end when `shutdown` is cancelled, so the server can drain.
    #[must_use]
    pub fn new(
        cache: Arc<Cache>,
        redis: Reads,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        let redis = Reads {
            tasks: tasks.clone(),
            ..redis
        };
        Self {
            cache,
            redis,
            shutdown,
            tasks,
        }
    }
}

/// The status a refused request gets, counted by its code.
fn refuse(err: Error) -> Status {
    let status = Status::from(err);
    metrics::counter!(m::GRPC_REFUSED, "code" => format!("{:?}", status.code())).increment(1);
    // A malformed request says something about a client; a missing player or a Redis outage
    // is counted and logged elsewhere.
    if status.code() == tonic::Code::InvalidArgument {
        tracing::info!(code = ?status.code(), reason = status.message(), "request refused");
    } else {
        tracing::debug!(code = ?status.code(), reason = status.message(), "request refused");
    }
    status
}

fn known_tier(tier: u32) -> Result<(), Error> {
    if rewards::tier(tier).is_none() {
        return Err(Error::UnknownTier(tier));
    }
    Ok(())
}

#[tonic::async_trait]
impl LeaderboardService for Leaderboard {
    async fn list_tiers(
        &self,
        _request: Request<ListTiersRequest>,
    ) -> Result<Response<ListTiersResponse>, Status> {
        Ok(Response::new(ListTiersResponse {
            tiers: rewards::TIERS.iter().map(Into::into).collect(),
        }))
    }

    async fn get_top(
        &self,
        request: Request<GetTopRequest>,
    ) -> Result<Response<GetTopResponse>, Status> {
        self.top(request.into_inner())
            .await
            .map(Response::new)
            .map_err(refuse)
    }

    async fn get_player(
        &self,
        request: Request<GetPlayerRequest>,
    ) -> Result<Response<GetPlayerResponse>, Status> {
        self.player(request.into_inner())
            .await
            .map(Response::new)
            .map_err(refuse)
    }

    async fn get_award(
        &self,
        request: Request<GetAwardRequest>,
    ) -> Result<Response<GetAwardResponse>, Status> {
        self.award(request.into_inner())
            .await
            .map(Response::new)
            .map_err(refuse)
    }

    async fn get_chest(
        &self,
        request: Request<GetChestRequest>,
    ) -> Result<Response<GetChestResponse>, Status> {
        self.chest(request.into_inner())
            .await
            .map(Response::new)
            .map_err(refuse)
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.watch_tier(request.into_inner())
            .map(Response::new)
            .map_err(refuse)
    }
}

impl Leaderboard {
    async fn top(&self, request: GetTopRequest) -> Result<GetTopResponse, Error> {
        let GetTopRequest {
            tier,
            offset,
            limit,
        } = request;
        known_tier(tier)?;
        let limit = match limit {
            0 => DEFAULT_TOP_LIMIT,
            limit if limit > MAX_TOP_LIMIT => {
                return Err(Error::InvalidArgument {
                    field: "limit",
                    reason: format!(
                        "must be at most {MAX_TOP_LIMIT} (0 means {DEFAULT_TOP_LIMIT}), not {limit}"
                    ),
                });
            }
            limit => limit,
        };
        let snapshot = self.cache.get(tier).unwrap_or_default();
        let (offset, limit) = (u64::from(offset), u64::from(limit));
        if offset + limit <= CACHED_TOP as u64 {
            let entries = snapshot
                .entries
                .iter()
                .skip(offset as usize)
                .take(limit as usize)
                .cloned()
                .collect();
            return Ok(GetTopResponse {
                tier,
                version: snapshot.version,
                entries,
                stale: snapshot.stale,
            });
        }
        let mut conn = self
            .redis
            .conn()
            .await
            .map_err(|err| self.redis.failed(err))?;
        let entries = cache::read_range(&mut conn, tier, offset, offset + limit - 1)
            .await
            .map_err(|err| self.redis.failed(err))?;
        Ok(GetTopResponse {
            tier,
            version: snapshot.version,
            entries,
            stale: false,
        })
    }

    /// `GetPlayer`: a player's entry and neighbours (also the page's `/player`).
    pub(crate) async fn player(
        &self,
        request: GetPlayerRequest,
    ) -> Result<GetPlayerResponse, Error> {
        let GetPlayerRequest {
            tier,
            player_id,
            around,
        } = request;
        known_tier(tier)?;
        validate::id("player_id", &player_id)?;
        if around > MAX_AROUND {
            return Err(Error::InvalidArgument {
                field: "around",
                reason: format!("must be at most {MAX_AROUND}, not {around}"),
            });
        }
        let from_redis = async {
            let mut conn = self.redis.conn().await?;
            player_from_redis(&mut conn, tier, &player_id, u64::from(around)).await
        };
        match from_redis.await {
            Ok(Some((player, neighbours))) => Ok(GetPlayerResponse {
                tier,
                player: Some(player),
                neighbours,
                stale: false,
            }),
            Ok(None) => Err(Error::UnknownPlayer { tier, player_id }),
            Err(err) => {
                // Redis down: the cached top still answers for the players in it.
                let snapshot = self.cache.get(tier).unwrap_or_default();
                let Some(position) = snapshot
                    .entries
                    .iter()
                    .position(|e| e.player_id == player_id)
                else {
                    return Err(self.redis.failed(err));
                };
                let around = around as usize;
                let first = position.saturating_sub(around);
                let neighbours = snapshot
                    .entries
                    .iter()
                    .enumerate()
                    .skip(first)
                    .take(position - first + around + 1)
                    .filter(|(i, _)| *i != position)
                    .map(|(_, e)| e.clone())
                    .collect();
                Ok(GetPlayerResponse {
                    tier,
                    player: snapshot.entries.get(position).cloned(),
                    neighbours,
                    stale: true,
                })
            }
        }
    }

    async fn award(&self, request: GetAwardRequest) -> Result<GetAwardResponse, Error> {
        let GetAwardRequest { tier, award_id } = request;
        if tier != 0 {
            known_tier(tier)?;
        }
        validate::id("award_id", &award_id)?;
        let tiers: Vec<u32> = if tier == 0 {
            rewards::tier_ids().collect()
        } else {
            vec![tier]
        };
        let mut conn = self
            .redis
            .conn()
            .await
            .map_err(|err| self.redis.failed(err))?;
        let mut pipe = redis::pipe();
        for tier in &tiers {
            pipe.hget(keys::tier_awards(*tier), &award_id);
        }
        let records: Vec<Option<String>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|err| self.redis.failed(err))?;
        let Some((tier, record)) = tiers
            .iter()
            .zip(records)
            .find_map(|(tier, record)| Some((*tier, record?)))
        else {
            return Err(Error::UnknownAward(award_id));
        };
        let Some(record) = AwardRecord::parse(&record) else {
            return Err(Error::UnreadableAward(award_id));
        };
        let (holder_award_id, recorded): (Option<String>, Option<String>) =
            if record.chest_key.is_empty() {
                (None, None)
            } else {
                redis::pipe()
                    .get(keys::chest(&record.chest_key))
                    .get(keys::chest_recorded(&record.chest_key))
                    .query_async(&mut conn)
                    .await
                    .map_err(|err| self.redis.failed(err))?
            };
        let chest_key = keys::chest(&record.chest_key);
        let awards_key = keys::tier_awards(tier);
        if record.chest_key.is_empty() {
            self.redis.replicated(&mut conn, &[&awards_key]).await?;
        } else {
            self.redis
                .replicated(&mut conn, &[&awards_key, &chest_key])
                .await?;
        }
        // A verdict on a chest is told only once a shard file records its holder: until then
        // a Redis that forgets could decide it afresh, so it is still pending to the caller.
        let told = |holder: &Option<String>| holder.is_some() && *holder == recorded;
        let (state, holder_award_id) = match record.state {
            functions::AwardState::Confirmed
            | functions::AwardState::Revoked
            | functions::AwardState::Compensated
                if !record.chest_key.is_empty() && !told(&holder_award_id) =>
            {
                (AwardState::Pending, None)
            }
            functions::AwardState::Pending => (AwardState::Pending, None),
            state => (award_state(state), holder_award_id),
        };
        Ok(GetAwardResponse {
            award: Some(Award {
                award_id,
                tier,
                state: state as i32,
                chest_key: record.chest_key,
                player_id: record.player_id,
                points: record.points,
                shard_id: record.shard_id,
            }),
            holder_award_id: holder_award_id.unwrap_or_default(),
        })
    }

    async fn chest(&self, request: GetChestRequest) -> Result<GetChestResponse, Error> {
        let GetChestRequest { chest_key } = request;
        validate::id("chest_key", &chest_key)?;
        let mut conn = self
            .redis
            .conn()
            .await
            .map_err(|err| self.redis.failed(err))?;
        let key = keys::chest(&chest_key);
        let (holder, ttl_seconds, recorded): (Option<String>, i64, Option<String>) = redis::pipe()
            .get(&key)
            .ttl(&key)
            .get(keys::chest_recorded(&chest_key))
            .query_async(&mut conn)
            .await
            .map_err(|err| self.redis.failed(err))?;
        self.redis.replicated(&mut conn, &[&key]).await?;
        let Some(holder_award_id) = holder else {
            return Err(Error::UnclaimedChest(chest_key));
        };
        // Told only once a shard file records the holder (see GetAward).
        if recorded.as_deref() != Some(holder_award_id.as_str()) {
            return Err(Error::Unrecorded(chest_key));
        }
        Ok(GetChestResponse {
            chest_key,
            holder_award_id,
            ttl_seconds,
        })
    }

    /// Starts feeding a `Watch` stream of `request`'s tier.
    fn watch_tier(
        &self,
        request: WatchRequest,
    ) -> Result<<Self as LeaderboardService>::WatchStream, Error> {
        let tier = request.tier;
        known_tier(tier)?;
        let changes = self.cache.subscribe(tier).ok_or(Error::UnknownTier(tier))?;
        let (updates, receiver) = tokio::sync::mpsc::channel(WATCH_QUEUE);
        let epoch = self.cache.epoch().to_owned();
        // A version of another epoch (another router, or this one before a restart) is
        // unrelated to this router's and never resumed from.
        let resume = (request.version > 0 && request.epoch == epoch).then_some(request.version);
        self.tasks.spawn(follow(
            tier,
            Lineage { epoch, resume },
            changes,
            updates,
            self.shutdown.clone(),
        ));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }
}

/// Updates queued per watcher before it counts as slow.
const WATCH_QUEUE: usize = 8;

/// Feeds one watcher: a snapshot, then a delta per version, each computed against what this
/// watcher was last sent.
///
/// A watcher whose queue is full holds no one back: the cache's watch channel keeps only the
/// latest top, and once the watcher has room again it gets a fresh snapshot of that latest top
/// instead of the deltas it missed. A delta larger than the top itself is sent as a snapshot too.
/// The epoch a watcher's versions count in, and the version it resumes from, if any.
struct Lineage {
    epoch: String,
    resume: Option<u64>,
}

async fn follow(
    tier: u32,
    lineage: Lineage,
    mut changes: tokio::sync::watch::Receiver<Snapshot>,
    updates: tokio::sync::mpsc::Sender<Result<WatchResponse, Status>>,
    shutdown: CancellationToken,
) {
    let Lineage { epoch, resume } = lineage;
    let mut sent: Option<Snapshot> = None;
    // Resuming at the latest version of this epoch: the stream starts with an empty delta from
    // it (its freshness now), then a delta per change. Any older version gets a snapshot.
    if let Some(version) = resume {
        let current = changes.borrow().clone();
        if current.version == version {
            sent = Some(current);
        }
    }
    loop {
        let (permit, lagged) = match updates.try_reserve() {
            Ok(permit) => (permit, false),
            Err(tokio::sync::mpsc::error::TrySendError::Full(())) => {
                metrics::counter!(m::WATCH_RESYNCS).increment(1);
                tokio::select! {
                    permit = updates.reserve() => match permit {
                        Ok(permit) => (permit, true),
                        Err(_) => return,
                    },
                    () = shutdown.cancelled() => return,
                }
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => return,
        };
        let current = changes.borrow_and_update().clone();
        let update = match &sent {
            Some(last) if !lagged => {
                let diff = Diff::between(&last.entries, &current.entries);
                if diff.len() < current.entries.len().max(1) {
                    watch_response::Update::Delta(Delta {
                        base: last.version,
                        upserts: diff.upserts,
                        removals: diff.removals,
                    })
                } else {
                    snapshot_of(&current)
                }
            }
            _ => snapshot_of(&current),
        };
        permit.send(Ok(WatchResponse {
            tier,
            version: current.version,
            update: Some(update),
            epoch: epoch.clone(),
            stale: current.unconfirmed(),
            changed_at_ms: current.changed_at_ms,
        }));
        sent = Some(current);
        if !next_version(&mut changes, &updates, &shutdown, sent.as_ref()).await {
            return;
        }
    }
}

/// Waits for a version other than `sent`'s, or for `sent`'s version turning stale or fresh
/// again (sent as a delta with no changes); false when the watcher left or the server is
/// draining.
async fn next_version(
    changes: &mut tokio::sync::watch::Receiver<Snapshot>,
    updates: &tokio::sync::mpsc::Sender<Result<WatchResponse, Status>>,
    shutdown: &CancellationToken,
    sent: Option<&Snapshot>,
) -> bool {
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return false },
            () = updates.closed() => return false,
            () = shutdown.cancelled() => {
                // Never waits: a watcher that does not read still lets the server drain.
                let _ = updates.try_send(Err(Error::ShuttingDown.into()));
                return false;
            }
        }
        let (version, stale) = {
            let current = changes.borrow();
            (current.version, current.unconfirmed())
        };
        if sent.is_none_or(|last| last.version != version || last.unconfirmed() != stale) {
            return true;
        }
    }
}

fn award_state(state: functions::AwardState) -> AwardState {
    match state {
        functions::AwardState::Pending => AwardState::Pending,
        functions::AwardState::Confirmed => AwardState::Confirmed,
        functions::AwardState::Revoked => AwardState::Revoked,
        functions::AwardState::Compensated => AwardState::Compensated,
        functions::AwardState::Withdrawn => AwardState::Withdrawn,
    }
}

fn snapshot_of(snapshot: &Snapshot) -> watch_response::Update {
    watch_response::Update::Snapshot(SnapshotMessage {
        entries: snapshot.entries.to_vec(),
    })
}

/// The player's entry and its neighbours, or `None` when the player has no score.
async fn player_from_redis(
    conn: &mut Connection,
    tier: u32,
    player_id: &str,
    around: u64,
) -> redis::RedisResult<Option<(Entry, Vec<Entry>)>> {
    let member: Option<String> = redis::cmd("HGET")
        .arg(keys::tier_members(tier))
        .arg(player_id)
        .query_async(conn)
        .await?;
    let Some(member) = member else {
        return Ok(None);
    };
    let rank: Option<u64> = redis::cmd("ZREVRANK")
        .arg(keys::tier_scores(tier))
        .arg(&member)
        .query_async(conn)
        .await?;
    let Some(rank) = rank else {
        return Ok(None);
    };
    let first = rank.saturating_sub(around);
    let window = cache::read_range(conn, tier, first, rank + around).await?;
    let mut player = None;
    let mut neighbours = Vec::with_capacity(window.len());
    for entry in window {
        if entry.player_id == player_id {
            player = Some(entry);
        } else {
            neighbours.push(entry);
        }
    }
    Ok(player.map(|player| (player, neighbours)))
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::panic)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn top(version: u64, leader_score: i64) -> Snapshot {
        Snapshot {
            version,
            entries: Arc::new(vec![
                Entry {
                    rank: 1,
                    player_id: "ada".into(),
                    score: leader_score,
                    display_name: None,
                },
                Entry {
                    rank: 2,
                    player_id: "bo".into(),
                    score: 1,
                    display_name: None,
                },
            ]),
            stale: false,
            loaded: true,
            changed_at_ms: 1,
        }
    }

    type Updates = tokio::sync::mpsc::Receiver<Result<WatchResponse, Status>>;

    /// A watcher of tier 1 following `first` and its changes: the changes' sender, what the
    /// watcher is sent, and its shutdown.
    fn watching(
        first: Snapshot,
    ) -> (
        tokio::sync::watch::Sender<Snapshot>,
        Updates,
        CancellationToken,
    ) {
        let (changes, receiver) = tokio::sync::watch::channel(first);
        let (updates, received) = tokio::sync::mpsc::channel(WATCH_QUEUE);
        let shutdown = CancellationToken::new();
        tokio::spawn(follow(
            1,
            Lineage {
                epoch: "e1".to_owned(),
                resume: None,
            },
            receiver,
            updates,
            shutdown.clone(),
        ));
        (changes, received, shutdown)
    }

    async fn next(updates: &mut Updates) -> WatchResponse {
        tokio::time::timeout(Duration::from_secs(10), updates.recv())
            .await
            .expect("an update in time")
            .expect("stream open")
            .expect("no error")
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_gets_a_fresh_snapshot() {
        let (changes, mut received, shutdown) = watching(top(1, 10));
        // Keep up for a while: a snapshot, then one small delta per version.
        let first = next(&mut received).await;
        assert!(matches!(
            first.update,
            Some(watch_response::Update::Snapshot(_))
        ));
        changes.send_replace(top(2, 11));
        let second = next(&mut received).await;
        let Some(watch_response::Update::Delta(delta)) = second.update else {
            panic!("expected a delta, got {second:?}");
        };
        assert_eq!((delta.base, second.version), (1, 2));
        assert_eq!(delta.upserts.len(), 1, "only ada moved");
        // Stop reading: the queue fills, and the versions after that are skipped.
        let mut version = 2;
        while received.len() < WATCH_QUEUE {
            version += 1;
            changes.send_replace(top(version, 10 + version as i64));
            tokio::task::yield_now().await;
        }
        // The follower sees each new version find the queue full.
        for later in 0..50 {
            version += 1;
            changes.send_replace(top(version, 100 + later));
            tokio::task::yield_now().await;
        }
        for _ in 0..WATCH_QUEUE {
            next(&mut received).await;
        }
        // Reading again, it gets the latest top whole, not the deltas it missed.
        let fresh = next(&mut received).await;
        assert_eq!(fresh.version, version);
        let Some(watch_response::Update::Snapshot(snapshot)) = fresh.update else {
            panic!("expected a snapshot after falling behind, got {fresh:?}");
        };
        assert_eq!(snapshot.entries, *top(version, 149).entries);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_watcher_learns_when_its_top_turns_stale_and_fresh_again() {
        let (changes, mut received, shutdown) = watching(top(4, 10));
        let first = next(&mut received).await;
        assert!(!first.stale);
        assert_eq!(first.changed_at_ms, 1);
        // Redis unreachable: the same version, stale, as a delta with no changes.
        changes.send_modify(|top| top.stale = true);
        let paused = next(&mut received).await;
        assert_eq!((paused.version, paused.stale), (4, true));
        let Some(watch_response::Update::Delta(delta)) = paused.update else {
            panic!("expected an empty delta, got {paused:?}");
        };
        assert_eq!(delta.base, 4);
        assert!(delta.upserts.is_empty() && delta.removals.is_empty());
        // Back: fresh again.
        changes.send_modify(|top| top.stale = false);
        let back = next(&mut received).await;
        assert_eq!((back.version, back.stale), (4, false));
        shutdown.cancel();
    }
}
