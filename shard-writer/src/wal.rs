//! The shard's SQLite file and the group-commit thread that is its only writer.
//!
//! Design constraints:
//! - One writer thread owns the write connection: appends, tier_seq assignment, acknowledgement
//!   marks and pruning all go through it in order, so SQLite never makes it wait for a lock.
//! - Group commit: the thread takes every append queued while the previous transaction ran (up to
//!   `max_commit_batch`) and commits them in one transaction. An `append` returns after that
//!   commit; with `synchronous=NORMAL` a commit survives a process crash.
//! - `tier_seq` is assigned in the commit transaction, contiguous per tier: 1, 2, 3, … A tier
//!   whose counter has not yet been reconciled with Redis's published mark (a new file opened
//!   while Redis was unreachable) is "unconfirmed": its numbers are provisional and are shifted
//!   above Redis's mark before anything of the tier is published. A published `tier_seq` is never
//!   reused.
//! - `seq` is never reused: the highest one is read back from the rows at open, and kept in
//!   `meta` before pruning deletes rows. A commit writes only its rows, so the log grows by
//!   the pages of `events` and its index alone.
//! - Checkpoints (copying the log into the database file) run on a background connection in
//!   `PASSIVE` mode, which never blocks the commit thread. The commit thread's own automatic
//!   checkpoint stays as a safety net at [`AUTOCHECKPOINT_PAGES`], where it finds little left to
//!   copy; it bounds the log even when the background checkpoints fall behind.
//! - Rows leave only through pruning: acknowledged (at or below the router's applied watermark)
//!   and committed longer ago than the retention window.
//!
//! On-disk format (schema version 1):
//! - `meta(name TEXT PRIMARY KEY, value INTEGER)`: `schema_version`, `shard_id`, `epoch`,
//!   `last_seq`, and `restored` (1) in a file restored from a backup until a writer has
//!   reconciled it with Redis: such a file opens only when Redis answers (a fresh epoch, tier
//!   counters raised to the published marks), so it can never reuse an event id or a
//!   `tier_seq` its shard handed out after the backup.
//! - `events(seq INTEGER PRIMARY KEY, tier, tier_seq, committed_ms, payload)`: `payload` is the
//!   `hunt.v1.HuntEvent` protobuf with every field but `tier_seq`, which the relay appends as a
//!   trailing field when it publishes. Unique on `(tier, tier_seq)`.
//! - `tiers(tier INTEGER PRIMARY KEY, assigned, confirmed, acknowledged)`: the highest assigned
//!   `tier_seq` as of the last pruning or reconciliation (the rows themselves tell the rest),
//!   whether it is reconciled with Redis, and the highest acknowledged one.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use leaderboard_proto::rewards;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::clock::Clock;
use crate::config::{Synchronous, WriterConfig};
use crate::error::OpenError;
use crate::metrics as m;

/// The schema version this writer reads and writes.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Log pages (4 KiB each) after which the commit thread checkpoints by itself: 64 MiB.
pub(crate) const AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// The progress the commit thread shares with the relay and the handles.
#[derive(Debug)]
pub(crate) struct Progress {
    /// Per tier (index of the reward table): the highest committed `tier_seq`.
    committed: Vec<AtomicU64>,
    /// Per tier: whether its `tier_seq`s are reconciled with Redis (publishable).
    confirmed: Vec<AtomicBool>,
    /// Signalled after every commit.
    pub(crate) committed_notify: Notify,
}

impl Progress {
    fn new(tiers: &[TierRow]) -> Self {
        Self {
            committed: tiers.iter().map(|t| AtomicU64::new(t.assigned)).collect(),
            confirmed: tiers.iter().map(|t| AtomicBool::new(t.confirmed)).collect(),
            committed_notify: Notify::new(),
        }
    }

    /// The highest committed `tier_seq` of tier `index`.
    pub(crate) fn committed(&self, index: usize) -> u64 {
        self.committed
            .get(index)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Whether tier `index` may be published.
    pub(crate) fn confirmed(&self, index: usize) -> bool {
        self.confirmed
            .get(index)
            .is_some_and(|c| c.load(Ordering::Acquire))
    }
}

/// One tier's row of the `tiers` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TierRow {
    pub(crate) tier: u32,
    pub(crate) assigned: u64,
    pub(crate) confirmed: bool,
    pub(crate) acknowledged: u64,
}

/// What `open` reads from the file.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) epoch: u64,
    /// Restored from a backup and not yet reconciled with Redis.
    pub(crate) restored: bool,
    pub(crate) last_seq: u64,
    /// One per tier of the reward table, in table order.
    pub(crate) tiers: Vec<TierRow>,
}

/// A commit of one append, as its caller learns it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Committed {
    pub(crate) tier_seq: u64,
}

/// The reply to an append: the commit, or the payload back with the error.
pub(crate) type AppendReply = Result<Committed, (Vec<u8>, Arc<rusqlite::Error>)>;

/// Work for the commit thread.
#[derive(Debug)]
pub(crate) enum Job {
    /// Commit one event. `reply` is `None` for `try_append`, whose events are retried until
    /// they commit rather than dropped.
    Append {
        seq: u64,
        tier_index: usize,
        payload: Vec<u8>,
        reply: Option<oneshot::Sender<AppendReply>>,
    },
    /// Reconcile tier counters with Redis's published marks (one per tier, in table order).
    Confirm {
        published: Vec<u64>,
        reply: oneshot::Sender<Result<(), Arc<rusqlite::Error>>>,
    },
    /// Raise acknowledgement marks: (tier index, applied watermark).
    Acknowledge { marks: Vec<(usize, u64)> },
    /// Delete up to `limit` acknowledged rows committed before `before_ms`; replies the count.
    Prune {
        before_ms: i64,
        limit: usize,
        reply: oneshot::Sender<Result<usize, Arc<rusqlite::Error>>>,
    },
    /// Replies once every job sent before it is done.
    Barrier(oneshot::Sender<()>),
    /// Commit what is queued, refuse the rest, and close.
    Stop,
}

/// Refuses paths on network filesystems, where SQLite's WAL (shared memory) is unsafe.
pub(crate) fn check_filesystem(path: &Path) -> Result<(), OpenError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stat = rustix::fs::statfs(dir).map_err(|errno| OpenError::Io {
        path: dir.to_path_buf(),
        source: errno.into(),
    })?;
    // `f_type` is signed on some targets; compare the bit pattern as u32.
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
    let magic = stat.f_type as u32;
    match network_filesystem(magic) {
        Some(filesystem) => Err(OpenError::NetworkFilesystem {
            path: path.to_path_buf(),
            filesystem,
        }),
        None => Ok(()),
    }
}

/// The name of the network filesystem with superblock magic `magic`, if it is one.
pub(crate) fn network_filesystem(magic: u32) -> Option<&'static str> {
    match magic {
        0x6969 => Some("nfs"),
        0x517b => Some("smb"),
        0xfe53_4d42 => Some("smb2"),
        0xff53_4d42 => Some("cifs"),
        0x5346_414f => Some("afs"),
        0x0102_1997 => Some("9p"),
        0x00c3_6400 => Some("ceph"),
        0x7375_7245 => Some("coda"),
        0x0bd0_0bd0 => Some("lustre"),
        0x4741_5346 => Some("gpfs"),
        _ => None,
    }
}

/// Takes the exclusive lock that keeps a second writer off the file. The lock is held until
/// the returned file is dropped; the lock file itself stays (removing it would race).
pub(crate) fn lock(path: &Path) -> Result<(File, PathBuf), OpenError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| OpenError::Io {
            path: lock_path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok((file, lock_path)),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::AlreadyOpen {
            path: path.to_path_buf(),
            lock: lock_path,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(OpenError::Io {
            path: lock_path,
            source,
        }),
    }
}

/// Opens a connection with the writer's settings and checks that SQLite took them.
pub(crate) fn connect(path: &Path, config: &WriterConfig) -> Result<Connection, OpenError> {
    connect_with(path, config.synchronous, config.busy_timeout)
}

fn connect_with(
    path: &Path,
    synchronous: Synchronous,
    busy_timeout: std::time::Duration,
) -> Result<Connection, OpenError> {
    let sqlite = |source| OpenError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(sqlite)?;
    conn.busy_timeout(busy_timeout).map_err(sqlite)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(sqlite)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::Setting {
            path: path.to_path_buf(),
            setting: "journal_mode",
            actual: mode,
            expected: "wal".into(),
        });
    }
    conn.pragma_update(None, "synchronous", synchronous.name())
        .map_err(sqlite)?;
    conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)
        .map_err(sqlite)?;
    let actual: i64 = conn
        .query_row("PRAGMA synchronous", [], |row| row.get(0))
        .map_err(sqlite)?;
    if actual != synchronous.pragma_value() {
        return Err(OpenError::Setting {
            path: path.to_path_buf(),
            setting: "synchronous",
            actual: actual.to_string(),
            expected: synchronous.name().to_owned(),
        });
    }
    Ok(conn)
}

/// Creates the schema if the file is new, checks its version and owner, and reads its state.
pub(crate) fn init(conn: &mut Connection, path: &Path, shard_id: u32) -> Result<Loaded, OpenError> {
    let sqlite = |source| OpenError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (
             name TEXT PRIMARY KEY,
             value INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS events (
             seq INTEGER PRIMARY KEY,
             tier INTEGER NOT NULL,
             tier_seq INTEGER NOT NULL,
             committed_ms INTEGER NOT NULL,
             payload BLOB NOT NULL
         );
         CREATE UNIQUE INDEX IF NOT EXISTS events_by_tier_seq ON events (tier, tier_seq);
         CREATE TABLE IF NOT EXISTS tiers (
             tier INTEGER PRIMARY KEY,
             assigned INTEGER NOT NULL,
             confirmed INTEGER NOT NULL,
             acknowledged INTEGER NOT NULL
         );",
    )
    .map_err(sqlite)?;
    let meta = |name: &str| -> Result<Option<i64>, OpenError> {
        tx.query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
            row.get(0)
        })
        .optional()
        .map_err(sqlite)
    };
    match meta("schema_version")? {
        None => {
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('schema_version', ?1), ('shard_id', ?2),
                     ('epoch', 0), ('last_seq', 0)",
                params![SCHEMA_VERSION, shard_id],
            )
            .map_err(sqlite)?;
        }
        Some(SCHEMA_VERSION) => {}
        Some(found) => {
            return Err(OpenError::SchemaVersion {
                path: path.to_path_buf(),
                found,
                known: SCHEMA_VERSION,
            });
        }
    }
    let stored_shard = meta("shard_id")?.unwrap_or(i64::from(shard_id));
    if stored_shard != i64::from(shard_id) {
        return Err(OpenError::ShardMismatch {
            path: path.to_path_buf(),
            found: u32::try_from(stored_shard).unwrap_or(u32::MAX),
            configured: shard_id,
        });
    }
    for tier in rewards::TIERS {
        tx.execute(
            "INSERT OR IGNORE INTO tiers (tier, assigned, confirmed, acknowledged)
             VALUES (?1, 0, 0, 0)",
            [tier.id],
        )
        .map_err(sqlite)?;
    }
    let epoch = to_u64(meta("epoch")?.unwrap_or(0));
    let restored = meta(RESTORED)?.unwrap_or(0) != 0;
    let max_seq: Option<i64> = tx
        .query_row("SELECT MAX(seq) FROM events", [], |row| row.get(0))
        .map_err(sqlite)?;
    let last_seq = to_u64(meta("last_seq")?.unwrap_or(0)).max(to_u64(max_seq.unwrap_or(0)));
    let mut tiers = Vec::with_capacity(rewards::TIERS.len());
    for tier in rewards::TIERS {
        let (assigned, confirmed, acknowledged): (i64, bool, i64) = tx
            .query_row(
                "SELECT assigned, confirmed, acknowledged FROM tiers WHERE tier = ?1",
                [tier.id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(sqlite)?;
        // The counter is also recoverable from the rows themselves: take the larger.
        let max_row: Option<i64> = tx
            .query_row(
                "SELECT MAX(tier_seq) FROM events WHERE tier = ?1",
                [tier.id],
                |row| row.get(0),
            )
            .map_err(sqlite)?;
        tiers.push(TierRow {
            tier: tier.id,
            assigned: to_u64(assigned).max(to_u64(max_row.unwrap_or(0))),
            confirmed,
            acknowledged: to_u64(acknowledged),
        });
    }
    tx.commit().map_err(sqlite)?;
    Ok(Loaded {
        epoch,
        restored,
        last_seq,
        tiers,
    })
}

/// The `meta` row marking a file restored from a backup and not yet reconciled with Redis.
pub(crate) const RESTORED: &str = "restored";

/// Stores the epoch this incarnation runs under; `reconciled` (the epoch came from Redis and
/// the tier counters are at or above its published marks) clears the restored mark.
pub(crate) fn store_epoch(
    conn: &Connection,
    path: &Path,
    epoch: u64,
    reconciled: bool,
) -> Result<(), OpenError> {
    let sqlite = |source| OpenError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'epoch'",
        [to_i64(epoch)],
    )
    .map_err(sqlite)?;
    if reconciled {
        conn.execute("DELETE FROM meta WHERE name = ?1", [RESTORED])
            .map_err(sqlite)?;
    }
    Ok(())
}

/// Reconciles one tier's counter with Redis's published mark for this shard.
///
/// An unconfirmed tier's provisional numbers are shifted above the mark (they were never
/// published). A confirmed tier is only ever raised: a mark above what this file assigned means
/// the file lost history (restored from an old copy); new events then go above the mark.
pub(crate) fn confirm_tier(
    conn: &mut Connection,
    row: &mut TierRow,
    published: u64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if row.confirmed {
        if published > row.assigned {
            tracing::error!(
                tier = row.tier,
                assigned = row.assigned,
                published,
                "Redis holds a published mark above every tier_seq this shard file assigned: \
                 the file lost history; new events continue above the mark"
            );
            row.assigned = published;
        }
    } else if published > 0 && row.assigned > 0 {
        // Two steps through negative numbers keep (tier, tier_seq) unique at every row.
        tx.execute(
            "UPDATE events SET tier_seq = -(tier_seq + ?2) WHERE tier = ?1 AND tier_seq > 0",
            params![row.tier, to_i64(published)],
        )?;
        tx.execute(
            "UPDATE events SET tier_seq = -tier_seq WHERE tier = ?1 AND tier_seq < 0",
            [row.tier],
        )?;
        tracing::info!(
            tier = row.tier,
            shifted = row.assigned,
            above = published,
            "provisional tier_seqs moved above Redis's published mark"
        );
        row.assigned += published;
    } else {
        row.assigned = row.assigned.max(published);
    }
    row.confirmed = true;
    tx.execute(
        "UPDATE tiers SET assigned = ?2, confirmed = 1 WHERE tier = ?1",
        params![row.tier, to_i64(row.assigned)],
    )?;
    tx.commit()
}

/// The commit thread: the only writer of the file.
pub(crate) struct Committer {
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    tiers: Vec<TierRow>,
    last_seq: u64,
    progress: Arc<Progress>,
    clock: Arc<dyn Clock>,
    max_batch: usize,
    /// `try_append` jobs whose commit failed, retried before anything new.
    retry: Vec<Job>,
}

impl Committer {
    pub(crate) fn new(
        conn: Connection,
        rx: mpsc::Receiver<Job>,
        loaded: &Loaded,
        config: &WriterConfig,
    ) -> (Self, Arc<Progress>) {
        let progress = Arc::new(Progress::new(&loaded.tiers));
        let committer = Self {
            conn,
            rx,
            tiers: loaded.tiers.clone(),
            last_seq: loaded.last_seq,
            progress: Arc::clone(&progress),
            clock: Arc::clone(&config.clock),
            max_batch: config.max_commit_batch,
            retry: Vec::new(),
        };
        (committer, progress)
    }

    /// Runs until a `Stop` job, or until every sender is gone.
    pub(crate) fn run(mut self) {
        let mut jobs = Vec::with_capacity(self.max_batch);
        loop {
            jobs.append(&mut self.retry);
            if jobs.is_empty() {
                match self.rx.blocking_recv() {
                    Some(job) => jobs.push(job),
                    None => break,
                }
            }
            while jobs.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            if self.process(&mut jobs) {
                // Refuse new work, then commit whatever made it into the queue before that.
                self.rx.close();
                while let Ok(job) = self.rx.try_recv() {
                    jobs.push(job);
                }
                jobs.append(&mut self.retry);
                self.process(&mut jobs);
                if !self.retry.is_empty() {
                    tracing::error!(
                        events = self.retry.len(),
                        "queued events could not be committed before the writer closed"
                    );
                }
                break;
            }
            if !self.retry.is_empty() {
                // The disk refused the last commit: give it a moment rather than spin.
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }

    /// Processes `jobs` in order, draining it. Returns whether a `Stop` was among them.
    fn process(&mut self, jobs: &mut Vec<Job>) -> bool {
        let mut stop = false;
        let mut appends = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            match job {
                Job::Append { .. } => appends.push(job),
                control => {
                    self.commit(&mut appends);
                    stop |= self.control(control);
                }
            }
        }
        self.commit(&mut appends);
        stop
    }

    fn control(&mut self, job: Job) -> bool {
        match job {
            Job::Append { .. } => {}
            Job::Confirm { published, reply } => {
                let result = self.confirm(&published).map_err(Arc::new);
                let _ = reply.send(result);
            }
            Job::Acknowledge { marks } => {
                if let Err(err) = self.acknowledge(&marks) {
                    tracing::warn!(error = %err, "could not store acknowledgement marks");
                }
            }
            Job::Prune {
                before_ms,
                limit,
                reply,
            } => {
                let result = self.prune(before_ms, limit).map_err(Arc::new);
                let _ = reply.send(result);
            }
            Job::Barrier(reply) => {
                let _ = reply.send(());
            }
            Job::Stop => return true,
        }
        false
    }

    /// Commits `appends` (draining it) in one transaction and answers each.
    fn commit(&mut self, appends: &mut Vec<Job>) {
        if appends.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut assigned: Vec<u64> = self.tiers.iter().map(|t| t.assigned).collect();
        let mut last_seq = self.last_seq;
        let mut tier_seqs = Vec::with_capacity(appends.len());
        let result = (|| -> rusqlite::Result<()> {
            let now_ms = self.clock.now_ms();
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO events (seq, tier, tier_seq, committed_ms, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for job in appends.iter() {
                    if let Job::Append {
                        seq,
                        tier_index,
                        payload,
                        ..
                    } = job
                    {
                        let (Some(counter), Some(row)) =
                            (assigned.get_mut(*tier_index), self.tiers.get(*tier_index))
                        else {
                            return Err(rusqlite::Error::InvalidParameterName(format!(
                                "tier index {tier_index}"
                            )));
                        };
                        *counter += 1;
                        tier_seqs.push(*counter);
                        last_seq = last_seq.max(*seq);
                        insert.execute(params![
                            to_i64(*seq),
                            row.tier,
                            to_i64(*counter),
                            now_ms,
                            payload
                        ])?;
                    }
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                for (row, counter) in self.tiers.iter_mut().zip(&assigned) {
                    row.assigned = *counter;
                }
                self.last_seq = last_seq;
                for (index, row) in self.tiers.iter().enumerate() {
                    if let Some(committed) = self.progress.committed.get(index) {
                        committed.store(row.assigned, Ordering::Release);
                    }
                }
                self.progress.committed_notify.notify_one();
                let count = appends.len();
                for (job, tier_seq) in appends.drain(..).zip(tier_seqs) {
                    if let Job::Append {
                        reply: Some(reply), ..
                    } = job
                    {
                        let _ = reply.send(Ok(Committed { tier_seq }));
                    }
                }
                metrics::counter!(m::COMMITTED).increment(count as u64);
                metrics::histogram!(m::COMMIT_BATCH).record(count as f64);
                metrics::histogram!(m::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
            }
            Err(err) => {
                let err = Arc::new(err);
                tracing::error!(error = %err, events = appends.len(), "group commit failed");
                for job in appends.drain(..) {
                    match job {
                        Job::Append {
                            payload,
                            reply: Some(reply),
                            ..
                        } => {
                            let _ = reply.send(Err((payload, Arc::clone(&err))));
                        }
                        unreplied => self.retry.push(unreplied),
                    }
                }
            }
        }
    }

    fn confirm(&mut self, published: &[u64]) -> rusqlite::Result<()> {
        for (index, mark) in published.iter().enumerate() {
            let Some(row) = self.tiers.get_mut(index) else {
                continue;
            };
            let mut updated = *row;
            confirm_tier(&mut self.conn, &mut updated, *mark)?;
            *row = updated;
            if let (Some(committed), Some(confirmed)) = (
                self.progress.committed.get(index),
                self.progress.confirmed.get(index),
            ) {
                committed.store(row.assigned, Ordering::Release);
                confirmed.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    fn acknowledge(&mut self, marks: &[(usize, u64)]) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (index, mark) in marks {
            let Some(row) = self.tiers.get_mut(*index) else {
                continue;
            };
            // Never above what this file assigned: a watermark from another timeline of the
            // shard must not let rows of this one be pruned unacknowledged.
            let mark = (*mark).min(row.assigned);
            if mark > row.acknowledged {
                tx.execute(
                    "UPDATE tiers SET acknowledged = ?2 WHERE tier = ?1",
                    params![row.tier, to_i64(mark)],
                )?;
                row.acknowledged = mark;
            }
        }
        tx.commit()
    }

    fn prune(&mut self, before_ms: i64, limit: usize) -> rusqlite::Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The counters are read back from the rows at open; before rows go, keep them here.
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'last_seq'",
            [to_i64(self.last_seq)],
        )?;
        for row in &self.tiers {
            tx.execute(
                "UPDATE tiers SET assigned = ?2 WHERE tier = ?1 AND assigned < ?2",
                params![row.tier, to_i64(row.assigned)],
            )?;
        }
        let mut deleted = 0;
        for row in &self.tiers {
            let remaining = limit.saturating_sub(deleted);
            if remaining == 0 || row.acknowledged == 0 {
                continue;
            }
            deleted += tx.execute(
                "DELETE FROM events WHERE seq IN (
                     SELECT seq FROM events
                     WHERE tier = ?1 AND tier_seq <= ?2 AND committed_ms < ?3
                     ORDER BY tier_seq LIMIT ?4)",
                params![
                    row.tier,
                    to_i64(row.acknowledged),
                    before_ms,
                    i64::try_from(remaining).unwrap_or(i64::MAX)
                ],
            )?;
        }
        tx.commit()?;
        Ok(deleted)
    }
}

/// Copies the log into the database file every `interval` until cancelled, on its own
/// connection, without ever blocking the commit thread (`PASSIVE`).
pub(crate) async fn checkpoint_loop(
    conn: Connection,
    interval: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let conn = Arc::new(std::sync::Mutex::new(conn));
    let mut failing = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let conn = Arc::clone(&conn);
        let result = tokio::task::spawn_blocking(move || {
            let conn = conn
                .lock()
                .map_err(|_| "checkpoint connection poisoned".to_owned())?;
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(|err| err.to_string())
        })
        .await
        .map_err(|err| err.to_string())
        .and_then(|checkpoint| checkpoint);
        match result {
            Ok(()) => failing = false,
            Err(err) if !failing => {
                // Once per failure streak: the commit thread's own checkpoint still bounds the log.
                tracing::warn!(error = %err, "background checkpoint failed");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// SQLite stores integers as i64; every counter here stays far below 2^63.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The inverse of [`to_i64`]; negative values (never written) read as 0.
pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_filesystems_are_recognised() {
        assert_eq!(network_filesystem(0x6969), Some("nfs"));
        assert_eq!(network_filesystem(0xff53_4d42), Some("cifs"));
        assert_eq!(network_filesystem(0xfe53_4d42), Some("smb2"));
        // ext4, xfs, btrfs, tmpfs, overlayfs: local.
        for local in [0xef53, 0x5846_5342, 0x9123_683e, 0x0102_1994, 0x794c_7630] {
            assert_eq!(network_filesystem(local), None);
        }
    }

    #[test]
    fn a_local_directory_passes_the_filesystem_check() {
        let dir = std::env::temp_dir().join("shard.sqlite");
        assert!(check_filesystem(&dir).is_ok());
    }
}
