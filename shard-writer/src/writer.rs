//! [`ShardWriter`]: the handle a shard process appends through, and how it opens.
//!
//! Design constraints:
//! - `open` runs three steps, in order, each once: [`recover_file`] (filesystem check, lock,
//!   settings, schema, counters read back from the rows), [`reconcile`] (one round with Redis:
//!   epoch and published marks, written into the file), then [`start`] (commit thread,
//!   checkpoint, relay, claims connection). No task runs before the file holds its epoch; later
//!   reconciliations, after Redis comes back, are the relay's.
//! - An epoch is never reused: it is above every epoch the file has used, and taken from
//!   `hunt:shard:{<id>}:epoch` (never below the file's) whenever Redis answers at open, so event
//!   ids and award ids never repeat.
//! - A `tier_seq` is never reused: a tier reconciled at open continues above Redis's published
//!   mark; one Redis did not confirm stays provisional (and unpublished) until the relay has
//!   reconciled it.
//! - Redis never holds `open` for long: it waits at most `redis_connect_timeout +
//!   redis_response_timeout`, then opens on the file's own state. A file restored from a backup
//!   is the exception: without Redis it is refused ([`OpenError::RestoredNeedsRedis`]).
//! - The file's lock is released only after the commit thread has closed its connection, on
//!   every path (a failed open included).

use hunt_redis::connection::RedisTarget;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use leaderboard_proto::functions::NextEpoch;
use leaderboard_proto::v1::HuntEvent;
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::{rewards, validate};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{WriterConfig, redact_url};
use crate::error::{AppendError, ClaimError, Error, OpenError, Result};
use crate::metrics as m;
use crate::recovery::{self, ClaimsGate};
use crate::relay::{self, Relay};
use crate::wal::checkpoint::checkpoint_loop;
use crate::wal::committer::{AppendReply, Committer, Job, Progress};
use crate::wal::decisions::Decision;
use crate::wal::reader::{Loaded, ShardFile};
use crate::wal::{lock, schema};
use hunt_redis::reconnecting::Reconnecting;

/// The identity of an event: unique without coordination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    /// The shard that recorded it.
    pub shard_id: u32,
    /// The shard's incarnation.
    pub epoch: u64,
    /// The shard-local sequence number.
    pub seq: u64,
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.shard_id, self.epoch, self.seq)
    }
}

/// A committed append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The event's identity.
    pub id: EventId,
    /// Its tier.
    pub tier: u32,
    /// Its place in the (shard, tier) sequence the router applies in.
    pub tier_seq: u64,
}

/// The tasks a writer runs; taken by `shutdown`, or stopped when the last handle drops.
struct Tasks {
    committer: JoinHandle<()>,
    relay: Option<tokio::task::JoinHandle<()>>,
    checkpointer: tokio::task::JoinHandle<()>,
    /// The claims restorer and the verdict recorder (with Redis).
    restorer: Option<tokio::task::JoinHandle<()>>,
}

pub(crate) struct Inner {
    pub(crate) shard_id: u32,
    pub(crate) epoch: u64,
    next_seq: AtomicU64,
    jobs: mpsc::Sender<Job>,
    closed: AtomicBool,
    progress: Arc<Progress>,
    pub(crate) config: WriterConfig,
    drain: CancellationToken,
    tasks: Mutex<Option<Tasks>>,
    /// Redis, for claims and compensations (`None` without a Redis URL).
    pub(crate) client: Option<RedisTarget>,
    /// The claims connection, apart from the relay's so a publish never delays a claim.
    pub(crate) claims: Option<Reconnecting>,
    /// The `n` of the next award id `<shard>.<epoch>.a<n>`.
    pub(crate) next_award: AtomicU64,
    /// What this writer knows of the claims gate.
    pub(crate) gate: Arc<ClaimsGate>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Without `shutdown`: stop the relay now. The commit thread still commits everything
        // queued once the last sender is gone, then closes the file and releases the lock.
        if let Ok(mut tasks) = self.tasks.lock()
            && let Some(tasks) = tasks.take()
        {
            tasks.checkpointer.abort();
            if let Some(relay) = tasks.relay {
                relay.abort();
            }
            if let Some(restorer) = tasks.restorer {
                restorer.abort();
            }
        }
    }
}

/// The writer embedded in a shard process: durable appends to the shard's SQLite file, relayed
/// to the tier streams in Redis.
///
/// Cheap to clone; every clone appends to the same shard. [`ShardWriter::shutdown`] drains and
/// closes; dropping the last clone without it stops the relay at once (committed events stay
/// in the file and are published by the next writer that opens it).
#[derive(Clone)]
pub struct ShardWriter {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWriter")
            .field("shard_id", &self.inner.shard_id)
            .field("epoch", &self.inner.epoch)
            .field("path", &self.inner.config.path)
            .finish_non_exhaustive()
    }
}

impl ShardWriter {
    /// Opens (or creates) the shard's file and starts the commit thread and, with a Redis URL,
    /// the relay.
    ///
    /// When Redis answers within `redis_connect_timeout` the epoch is taken from it
    /// (`hunt:shard:{<id>}:epoch`, never below one this file already used) and the tier
    /// counters are reconciled with its published marks. Otherwise the writer opens anyway on
    /// the file's own state, and the relay reconciles once it connects.
    ///
    /// Three steps, in order, each run once: the file is recovered, reconciled with Redis once,
    /// and only then are the tasks started.
    ///
    /// # Errors
    /// [`OpenError`]: invalid configuration, the file held by another writer, a network
    /// filesystem, SQLite refusing WAL or the configured `synchronous`, a file of another shard
    /// or schema version, or an I/O error.
    pub async fn open(config: WriterConfig) -> Result<Self, OpenError> {
        config.validate()?;
        let mut file = recover_file(&config).await?;
        let reconciled = reconcile(&config, &mut file).await?;
        let writer = start(config, file, reconciled)?;
        // Join the claims gate before the first claim, when Redis answers; the restorer keeps
        // trying otherwise.
        if let Err(err) = writer.restore_claims().await {
            tracing::warn!(error = %err, "claims gate not joined at open; retrying in the background");
        }
        Ok(writer)
    }

    /// A handle on `inner`.
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Records a claim decision in the shard file and returns once it is committed: before the
    /// decision is told. False when it must not be told (see [`Decision::Compensation`]).
    ///
    /// # Errors
    /// [`ClaimError::Record`] when the writer is closed or SQLite fails.
    pub(crate) async fn record_decision(&self, decision: Decision) -> Result<bool, ClaimError> {
        let closed = || ClaimError::Record {
            reason: "the writer is closed".to_owned(),
        };
        let (reply, answer) = oneshot::channel();
        self.inner
            .jobs
            .send(Job::Record { decision, reply })
            .await
            .map_err(|_| closed())?;
        answer
            .await
            .map_err(|_| closed())?
            .map_err(|err| ClaimError::Record {
                reason: err.to_string(),
            })
    }

    /// The shard's id.
    #[must_use]
    pub fn shard_id(&self) -> u32 {
        self.inner.shard_id
    }

    /// The epoch this writer runs under (the shard's fencing token).
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    /// The highest committed `tier_seq` of `tier` (0 for an unknown tier).
    #[must_use]
    pub fn committed_tier_seq(&self, tier: u32) -> u64 {
        rewards::tier_index(tier).map_or(0, |index| self.inner.progress.committed(index))
    }

    /// Appends `event` and returns once it is committed to the shard file (group commit).
    ///
    /// The writer sets `shard_id`, `epoch` and `seq`, `occurred_at_ms` when it is 0, and a
    /// `TreasureAwarded`'s `award_id` when it is empty (derived from the event id, so it never
    /// repeats). Waits while the commit queue is full.
    ///
    /// # Errors
    /// [`AppendError`] with the event inside: invalid (nothing stored), the writer shut down,
    /// or the commit failed.
    pub async fn append(&self, event: HuntEvent) -> Result<Appended, AppendError> {
        let (mut event, tier_index) = self.prepare(event)?;
        let Ok(permit) = self.inner.jobs.reserve().await else {
            return Err(self.closed(event));
        };
        let (id, committed) = self.queue(permit, &mut event, tier_index);
        metrics::counter!(m::APPENDED).increment(1);
        match committed.await {
            Ok(Ok(commit)) => Ok(Appended {
                id,
                tier: event.tier,
                tier_seq: commit.tier_seq,
            }),
            Ok(Err((_payload, source))) => Err(AppendError::Storage {
                event: Box::new(event),
                source,
            }),
            Err(_) => Err(self.closed(event)),
        }
    }

    /// Queues `event` for the next group commit without waiting for anything: no network, no
    /// disk, no lock held by another task. Returns the event's id at once.
    ///
    /// A queued event is committed even if a commit fails for a while (it is retried), and even
    /// if the writer is dropped; only a process crash before its commit loses it. Use
    /// [`ShardWriter::append`] where the caller must know it is durable.
    ///
    /// # Errors
    /// [`AppendError`] with the event inside: invalid, the queue full (`QueueFull`: back off
    /// or use `append`), or the writer shut down.
    pub fn try_append(&self, event: HuntEvent) -> Result<EventId, AppendError> {
        let (mut event, tier_index) = self.prepare(event)?;
        let permit = match self.inner.jobs.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => {
                metrics::counter!(m::REJECTED, "reason" => "queue_full").increment(1);
                return Err(AppendError::QueueFull {
                    event: Box::new(event),
                });
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Err(self.closed(event)),
        };
        let id = self.stamp(&mut event);
        permit.send(Job::Append {
            seq: id.seq,
            tier_index,
            payload: event.encode_to_vec(),
            reply: None,
        });
        metrics::counter!(m::APPENDED).increment(1);
        Ok(id)
    }

    /// Appends every event of `events` in order, or none of them: each is validated before any
    /// is queued, and the whole batch is queued at once only if the commit queue has room for
    /// all of it right now (never waiting for room). Returns once every event is committed.
    ///
    /// The events are queued next to each other, so they usually share one group commit; a
    /// batch larger than `max_commit_batch`, or one that meets a commit failure, may be split.
    #[cfg(feature = "sidecar")]
    pub(crate) async fn append_batch(
        &self,
        events: Vec<HuntEvent>,
    ) -> Result<Vec<Appended>, BatchRejected> {
        let mut prepared = Vec::with_capacity(events.len());
        for (index, event) in events.into_iter().enumerate() {
            match self.prepare(event) {
                Ok(ready) => prepared.push(ready),
                Err(AppendError::Invalid { reason, .. }) => {
                    return Err(BatchRejected::Invalid { index, reason });
                }
                Err(_) => return Err(BatchRejected::Closed),
            }
        }
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let permits = match self.inner.jobs.try_reserve_many(prepared.len()) {
            Ok(permits) => permits,
            Err(mpsc::error::TrySendError::Full(())) => {
                metrics::counter!(m::REJECTED, "reason" => "queue_full")
                    .increment(prepared.len() as u64);
                return Err(BatchRejected::QueueFull);
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Err(BatchRejected::Closed),
        };
        let mut waiting = Vec::with_capacity(prepared.len());
        for ((mut event, tier_index), permit) in prepared.into_iter().zip(permits) {
            let (id, committed) = self.queue(permit, &mut event, tier_index);
            waiting.push((id, event.tier, committed));
        }
        metrics::counter!(m::APPENDED).increment(waiting.len() as u64);
        let mut appended = Vec::with_capacity(waiting.len());
        let mut failed = Vec::new();
        let mut failure = None;
        for (index, (id, tier, committed)) in waiting.into_iter().enumerate() {
            match committed.await {
                Ok(Ok(commit)) => appended.push(Appended {
                    id,
                    tier,
                    tier_seq: commit.tier_seq,
                }),
                Ok(Err((_payload, source))) => {
                    failed.push(index);
                    failure = Some(source.to_string());
                }
                Err(_) => {
                    failed.push(index);
                    failure.get_or_insert_with(|| "the writer closed".to_owned());
                }
            }
        }
        match failure {
            None => Ok(appended),
            Some(reason) => Err(BatchRejected::Storage { failed, reason }),
        }
    }

    /// Stops accepting appends, commits everything queued, publishes what is committed (for at
    /// most `shutdown_grace`), and closes the file. Later calls, on any clone, return at once.
    ///
    /// # Errors
    /// [`Error::Shutdown`] when a background task could not be joined.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::SeqCst);
        let tasks = match self.inner.tasks.lock() {
            Ok(mut tasks) => tasks.take(),
            Err(_) => return Err(Error::Shutdown("writer state poisoned".into())),
        };
        let Some(tasks) = tasks else {
            return Ok(());
        };
        // Everything queued before this point is committed when the barrier answers.
        let (reply, done) = oneshot::channel();
        if self.inner.jobs.send(Job::Barrier(reply)).await.is_ok() {
            let _ = done.await;
        }
        if let Some(mut relay) = tasks.relay {
            self.inner.drain.cancel();
            if tokio::time::timeout(self.inner.config.shutdown_grace, &mut relay)
                .await
                .is_err()
            {
                tracing::warn!(
                    shard = self.inner.shard_id,
                    grace_ms = self.inner.config.shutdown_grace.as_millis() as u64,
                    "relay did not finish publishing within the grace period; the rest stays in \
                     the shard file"
                );
                relay.abort();
                let _ = relay.await;
            }
        }
        self.inner.drain.cancel();
        let _ = tasks.checkpointer.await;
        if let Some(restorer) = tasks.restorer {
            // A round in flight may be waiting on Redis: nothing it does is needed any more.
            restorer.abort();
            let _ = restorer.await;
        }
        let _ = self.inner.jobs.send(Job::Stop).await;
        tokio::task::spawn_blocking(move || tasks.committer.join())
            .await
            .map_err(|err| Error::Shutdown(err.to_string()))?
            .map_err(|_| Error::Shutdown("the commit thread panicked".into()))?;
        tracing::info!(shard = self.inner.shard_id, "shard writer closed");
        Ok(())
    }

    /// Validates `event` and fills in what the writer owns.
    fn prepare(&self, mut event: HuntEvent) -> Result<(HuntEvent, usize), AppendError> {
        event.shard_id = self.inner.shard_id;
        event.epoch = self.inner.epoch;
        event.seq = 0;
        if event.occurred_at_ms == 0 {
            event.occurred_at_ms = self.inner.config.clock.now_ms();
        }
        if let Err(reason) = validate::event(&event) {
            metrics::counter!(m::REJECTED, "reason" => "invalid").increment(1);
            return Err(AppendError::Invalid {
                event: Box::new(event),
                reason,
            });
        }
        let Some(tier_index) = rewards::tier_index(event.tier) else {
            let reason = validate::ValidationError::UnknownTier(event.tier);
            return Err(AppendError::Invalid {
                event: Box::new(event),
                reason,
            });
        };
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(self.closed(event));
        }
        Ok((event, tier_index))
    }

    /// Stamps `event` and queues it on `permit`; the receiver answers once it is committed (or
    /// hands the payload back with the error).
    fn queue(
        &self,
        permit: mpsc::Permit<'_, Job>,
        event: &mut HuntEvent,
        tier_index: usize,
    ) -> (EventId, oneshot::Receiver<AppendReply>) {
        let id = self.stamp(event);
        let (reply, committed) = oneshot::channel();
        permit.send(Job::Append {
            seq: id.seq,
            tier_index,
            payload: event.encode_to_vec(),
            reply: Some(reply),
        });
        (id, committed)
    }

    /// Assigns the event its `seq` (and a derived award id where it has none).
    fn stamp(&self, event: &mut HuntEvent) -> EventId {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        event.seq = seq;
        let id = EventId {
            shard_id: self.inner.shard_id,
            epoch: self.inner.epoch,
            seq,
        };
        if let Some(Kind::TreasureAwarded(award)) = &mut event.kind
            && award.award_id.is_empty()
        {
            award.award_id = id.to_string();
        }
        id
    }

    fn closed(&self, event: HuntEvent) -> AppendError {
        metrics::counter!(m::REJECTED, "reason" => "closed").increment(1);
        AppendError::Closed {
            event: Box::new(event),
        }
    }
}

/// Why [`ShardWriter::append_batch`] did not commit a whole batch.
#[cfg(feature = "sidecar")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BatchRejected {
    /// The event at `index` is invalid; nothing was stored.
    Invalid {
        index: usize,
        reason: validate::ValidationError,
    },
    /// The commit queue has no room for the whole batch; nothing was stored.
    QueueFull,
    /// The writer is shut down; nothing was stored.
    Closed,
    /// The events at `failed` (indices) were not committed; the others were.
    Storage { failed: Vec<usize>, reason: String },
}

/// The shard file after step one of [`ShardWriter::open`]: locked, opened with the writer's
/// settings, its schema checked and its counters recovered.
struct RecoveredFile {
    /// The commit thread's connection. Declared before `lock`, so that on an early return the
    /// connection closes before the lock is released.
    conn: rusqlite::Connection,
    /// The exclusive lock on the file, held until the commit thread has closed `conn`.
    lock: File,
    /// What the file holds.
    loaded: Loaded,
}

/// What step two of [`ShardWriter::open`] settled with Redis.
struct Reconciled {
    /// The epoch this writer runs under, already stored in the file.
    epoch: u64,
    /// Redis, for the relay and the claims (`None` without a Redis URL).
    client: Option<RedisTarget>,
}

/// Step one of [`ShardWriter::open`]: refuses a network filesystem, takes the file's lock, opens
/// it with the configured settings, creates or checks its schema (version, shard) and reads its
/// state back, counters recovered from the rows. Nothing else is touched yet.
async fn recover_file(config: &WriterConfig) -> Result<RecoveredFile, OpenError> {
    let path = config.path.clone();
    lock::check_filesystem(&path)?;
    let (lock, _lock_path) = lock::lock(&path)?;
    let setup_config = config.clone();
    let (conn, loaded) = tokio::task::spawn_blocking(move || {
        let mut conn = schema::connect(&setup_config.path, &setup_config)?;
        let loaded = schema::init(&mut conn, &setup_config.path, setup_config.shard_id)?;
        Ok::<_, OpenError>((conn, loaded))
    })
    .await
    .map_err(|err| OpenError::Io {
        path: path.clone(),
        source: std::io::Error::other(err),
    })??;
    Ok(RecoveredFile { conn, lock, loaded })
}

/// Step two of [`ShardWriter::open`]: asks Redis once, within `redis_connect_timeout +
/// redis_response_timeout`, for this incarnation's epoch and the shard's published marks, and
/// writes what it settles into the file before any task starts.
///
/// - The epoch is above every epoch the file has used (`floor`), and Redis's when it answers,
///   so an epoch (and every event id and award id under it) is never reused.
/// - Each tier's counter is reconciled with Redis's published mark, so a `tier_seq` is never
///   reused; a tier Redis did not confirm stays provisional until the relay reconciles it.
/// - A file restored from a backup is refused when Redis does not answer: only Redis knows a
///   fresh epoch and the marks to continue above.
async fn reconcile(
    config: &WriterConfig,
    file: &mut RecoveredFile,
) -> Result<Reconciled, OpenError> {
    let path = config.path.clone();
    let client = match &config.redis_url {
        Some(url) => Some(
            RedisTarget::open_with_ca(url, config.redis_cluster, config.redis_ca_file.as_deref())
                .map_err(|err| {
                OpenError::Config(crate::error::ConfigError::Invalid {
                    field: "redis_url",
                    reason: format!("{}: {:?}", redact_url(url), err.kind()),
                })
            })?,
        ),
        None => None,
    };
    let floor = file.loaded.epoch + 1;
    let mut epoch = floor;
    let mut reconciled = false;
    if let Some(client) = &client {
        match tokio::time::timeout(
            config.redis_connect_timeout + config.redis_response_timeout,
            redis_open_state(client, config, floor),
        )
        .await
        {
            Ok(Ok((redis_epoch, published))) => {
                epoch = redis_epoch.max(floor);
                for (row, mark) in file.loaded.tiers.iter_mut().zip(published) {
                    schema::confirm_tier(&mut file.conn, row, mark).map_err(|source| {
                        OpenError::Sqlite {
                            path: path.clone(),
                            source,
                        }
                    })?;
                }
                reconciled = true;
            }
            Ok(Err(err)) => tracing::warn!(
                shard = config.shard_id,
                redis = %redact_url(config.redis_url.as_deref().unwrap_or_default()),
                error = %err,
                "Redis unreachable at open; using the shard file's own epoch and counters"
            ),
            Err(_) => tracing::warn!(
                shard = config.shard_id,
                redis = %redact_url(config.redis_url.as_deref().unwrap_or_default()),
                "Redis did not answer at open; using the shard file's own epoch and counters"
            ),
        }
    }
    if file.loaded.restored && !reconciled {
        // A restored file may lag behind what its shard already published under epochs the
        // file never saw: only Redis knows a fresh epoch and the marks to continue above.
        return Err(OpenError::RestoredNeedsRedis { path });
    }
    schema::store_epoch(&file.conn, &path, epoch, reconciled)?;
    Ok(Reconciled { epoch, client })
}

/// Step three of [`ShardWriter::open`]: starts the tasks on the recovered, reconciled file: the
/// commit thread (which owns the file's lock until its connection is closed), the background
/// checkpoint and, with Redis, the relay and the claims connection.
fn start(
    config: WriterConfig,
    file: RecoveredFile,
    reconciled: Reconciled,
) -> Result<ShardWriter, OpenError> {
    let RecoveredFile { conn, lock, loaded } = file;
    let Reconciled { epoch, client } = reconciled;
    let path = config.path.clone();
    let (jobs, rx) = mpsc::channel(config.queue_capacity);
    let (committer, progress) = Committer::new(conn, rx, &loaded, &config);
    let committer = std::thread::Builder::new()
        .name(format!("shard-{}-commit", config.shard_id))
        .spawn(move || {
            // The lock is released only after the connection is closed.
            let _lock = lock;
            committer.run();
        })
        .map_err(|source| OpenError::Io {
            path: path.clone(),
            source,
        })?;

    let drain = CancellationToken::new();
    let checkpointer = tokio::spawn(checkpoint_loop(
        schema::connect(&path, &config)?,
        config.checkpoint_interval,
        drain.clone(),
    ));
    let claims = client
        .as_ref()
        .map(|client| config.reconnecting(client.clone()));
    let redis_client = client.clone();
    let relay = match client {
        Some(client) => {
            let reader = ShardFile::with_connection(schema::connect(&path, &config)?, &path);
            let acknowledged: Vec<u64> = loaded.tiers.iter().map(|t| t.acknowledged).collect();
            let relay = Relay::new(
                &config,
                client,
                reader,
                jobs.clone(),
                Arc::clone(&progress),
                &acknowledged,
                drain.clone(),
            );
            Some(tokio::spawn(relay.run()))
        }
        None => None,
    };
    m::describe();
    tracing::info!(
        shard = config.shard_id,
        epoch,
        path = %path.display(),
        "shard writer open"
    );
    let writer = ShardWriter {
        inner: Arc::new(Inner {
            shard_id: config.shard_id,
            epoch,
            next_seq: AtomicU64::new(loaded.last_seq + 1),
            jobs,
            closed: AtomicBool::new(false),
            progress,
            config,
            drain,
            tasks: Mutex::new(Some(Tasks {
                committer,
                relay,
                checkpointer,
                restorer: None,
            })),
            client: redis_client,
            claims,
            next_award: AtomicU64::new(1),
            gate: Arc::new(ClaimsGate::default()),
        }),
    };
    if writer.inner.claims.is_some() {
        let restorer = recovery::restorer(
            Arc::downgrade(&writer.inner),
            Arc::clone(&writer.inner.gate),
            writer.inner.config.claims_poll,
            writer.inner.drain.clone(),
        );
        let recorder = crate::verdicts::recorder(
            Arc::downgrade(&writer.inner),
            writer.inner.config.claims_poll,
            writer.inner.drain.clone(),
        );
        let restorer = tokio::spawn(async move {
            tokio::join!(restorer, recorder);
        });
        if let Ok(mut tasks) = writer.inner.tasks.lock()
            && let Some(tasks) = tasks.as_mut()
        {
            tasks.restorer = Some(restorer);
        }
    }
    Ok(writer)
}

/// The epoch and the published marks, read from Redis at open.
async fn redis_open_state(
    client: &RedisTarget,
    config: &WriterConfig,
    floor: u64,
) -> Result<(u64, Vec<u64>), redis::RedisError> {
    let mut conn = relay::connect(client, config).await?;
    let epoch = hunt_redis::call(&mut conn, &NextEpoch::new(config.shard_id, floor)).await?;
    let published = relay::published_marks(&mut conn, config.shard_id).await?;
    Ok((epoch, published))
}
