//! The commit thread: the only writer of the shard file, and the jobs it takes.
//!
//! Design constraints:
//! - One thread owns the write connection: appends, `tier_seq` assignment, acknowledgement marks
//!   and pruning all go through it in order, so SQLite never makes it wait for a lock.
//! - Group commit: the thread takes every job queued while the previous transaction ran (up to
//!   `max_commit_batch`) and commits their appends in one transaction; each waiting `append`
//!   is answered after that commit. A `try_append` whose commit failed is retried before
//!   anything new, until the writer closes.
//! - A `Stop` commits what is already queued, refuses the rest, and ends the thread; dropping
//!   every sender does the same.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::clock::Clock;
use crate::config::WriterConfig;
use crate::metrics as m;
use crate::wal::decisions::{self, Decision};
use crate::wal::reader::Loaded;
use crate::wal::schema::{TierRow, confirm_tier, to_i64};

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

/// A commit of one append, as its caller learns it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Committed {
    pub(crate) tier_seq: u64,
}

/// The reply to an append: the commit, or the payload back with the error.
pub(crate) type AppendReply = Result<Committed, (Vec<u8>, Arc<rusqlite::Error>)>;

/// The reply to a recorded decision: whether it may be told, or the error.
pub(crate) type RecordReply = oneshot::Sender<Result<bool, Arc<rusqlite::Error>>>;

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
    /// Record a claim decision before it is told.
    Record {
        decision: Decision,
        reply: RecordReply,
    },
    /// Replies once every job sent before it is done.
    Barrier(oneshot::Sender<()>),
    /// Commit what is queued, refuse the rest, and close.
    Stop,
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
        let mut records = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Append { .. } => appends.push(job),
                Job::Record { decision, reply } => records.push((decision, reply)),
                control => {
                    self.commit(&mut appends);
                    self.record_all(&mut records);
                    stop |= self.control(control);
                }
            }
        }
        self.commit(&mut appends);
        self.record_all(&mut records);
        stop
    }

    /// Writes `records` (draining it) in one transaction and answers each: the claim answers
    /// queued together cost one commit, as appends do.
    fn record_all(&mut self, records: &mut Vec<(Decision, RecordReply)>) {
        if records.is_empty() {
            return;
        }
        let now_ms = self.clock.now_ms();
        let result = (|| -> rusqlite::Result<Vec<bool>> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let told = records
                .iter()
                .map(|(decision, _)| decisions::record(&tx, decision, now_ms))
                .collect::<rusqlite::Result<Vec<bool>>>()?;
            tx.commit()?;
            Ok(told)
        })();
        match result {
            Ok(told) => {
                for ((_, reply), told) in records.drain(..).zip(told) {
                    let _ = reply.send(Ok(told));
                }
            }
            Err(err) => {
                let err = Arc::new(err);
                tracing::error!(error = %err, decisions = records.len(), "recording claim decisions failed");
                for (_, reply) in records.drain(..) {
                    let _ = reply.send(Err(Arc::clone(&err)));
                }
            }
        }
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
            Job::Record { decision, reply } => {
                self.record_all(&mut vec![(decision, reply)]);
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
        // Chest decisions outlive their claim in Redis by nothing.
        decisions::prune(&tx, self.clock.now_ms(), before_ms)?;
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
