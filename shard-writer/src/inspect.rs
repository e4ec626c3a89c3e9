//! A shard file's state, read without disturbing the writer that may have it open.
//!
//! Design constraints:
//! - Read-only: the file is read through [`ShardFile`], opened with `SQLITE_OPEN_READ_ONLY` and
//!   without the writer's lock file, so `inspect` is safe beside a running writer. Everything is
//!   read in one transaction: one consistent snapshot of the file.
//! - With a Redis URL, the shard's published and applied marks and pending replay requests are
//!   read beside the file's own counters (never written).

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leaderboard_proto::keys;

use hunt_redis::connection::{Connection, RedisTarget, Timeouts};

use crate::config::redact_url;
use crate::wal::reader::{ReadError, ShardFile};

/// Why a shard file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The shard file could not be read.
    #[error(transparent)]
    File(#[from] ReadError),
    /// Redis did not answer.
    #[error("Redis at {redis}: {reason}")]
    Redis {
        /// The Redis URL, password redacted.
        redis: String,
        /// What failed.
        reason: String,
    },
}

/// One tier of a shard file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierState {
    /// The tier's id.
    pub tier: u32,
    /// The highest committed `tier_seq` (provisional while `confirmed` is false).
    pub committed: u64,
    /// Whether the tier's `tier_seq`s are reconciled with Redis (publishable).
    pub confirmed: bool,
    /// The highest `tier_seq` the router acknowledged (applied), as the file last stored it.
    pub acknowledged: u64,
    /// Events committed but not yet acknowledged: the outbox.
    pub outbox: u64,
    /// Rows still in the file.
    pub retained: u64,
    /// The lowest `tier_seq` still in the file (`None` when no row is).
    pub first_retained: Option<u64>,
    /// What Redis holds for this shard and tier, when asked.
    pub redis: Option<RedisMarks>,
}

/// One tier's marks in Redis for a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RedisMarks {
    /// `hunt:{t<N>}:published[shard]`: the highest `tier_seq` the relay published.
    pub published: u64,
    /// `hunt:{t<N>}:applied[shard]`: the router's applied watermark.
    pub applied: u64,
    /// `hunt:{t<N>}:replay[shard]`: a replay request not yet satisfied.
    pub replay_from: Option<u64>,
}

/// A shard file's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardState {
    /// The file read.
    pub path: PathBuf,
    /// The shard it belongs to.
    pub shard_id: u32,
    /// Its schema version.
    pub schema_version: i64,
    /// The epoch of the last writer that opened it.
    pub epoch: u64,
    /// The highest `seq` handed out.
    pub last_seq: u64,
    /// Restored from a backup and not yet reconciled with Redis.
    pub restored: bool,
    /// One per tier of the reward table, in table order.
    pub tiers: Vec<TierState>,
    /// `hunt:shard:{<id>}:epoch`, when Redis was asked.
    pub redis_epoch: Option<u64>,
}

impl ShardState {
    /// Reads `path` read-only, in one snapshot.
    ///
    /// # Errors
    /// [`InspectError::File`]: no file, not a shard file, SQLite failing.
    pub fn read(path: &Path) -> Result<Self, InspectError> {
        let snapshot = ShardFile::open(path)?.snapshot()?;
        let tiers = snapshot
            .loaded
            .tiers
            .iter()
            .zip(&snapshot.retained)
            .map(|(row, retained)| TierState {
                tier: row.tier,
                committed: row.assigned,
                confirmed: row.confirmed,
                acknowledged: row.acknowledged,
                outbox: row.assigned.saturating_sub(row.acknowledged),
                retained: retained.rows,
                first_retained: retained.first,
                redis: None,
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            shard_id: snapshot.shard_id,
            schema_version: snapshot.schema_version,
            epoch: snapshot.loaded.epoch,
            last_seq: snapshot.loaded.last_seq,
            restored: snapshot.loaded.restored,
            tiers,
            redis_epoch: None,
        })
    }

    /// Adds what Redis at `redis_url` (with `cluster`, a comma-separated list of Redis Cluster
    /// seed URLs) holds for this shard: its epoch, and per tier the published and applied marks
    /// and any replay request. Waits at most `timeout`.
    ///
    /// # Errors
    /// [`InspectError::Redis`] when Redis cannot be reached or refuses.
    pub async fn with_redis(
        mut self,
        redis_url: &str,
        cluster: bool,
        timeout: Duration,
    ) -> Result<Self, InspectError> {
        let field = keys::shard_field(self.shard_id);
        let mut pipe = redis::pipe();
        pipe.get(keys::shard_epoch(self.shard_id));
        for tier in &self.tiers {
            pipe.hget(keys::tier_published(tier.tier), &field)
                .hget(keys::tier_applied(tier.tier), &field)
                .hget(keys::tier_replay(tier.tier), &field);
        }
        let values: Vec<Option<u64>> =
            ask_redis(redis_url, cluster, timeout, |mut conn| async move {
                pipe.query_async(&mut conn).await
            })
            .await
            .map_err(|reason| InspectError::Redis {
                redis: redact_url(redis_url),
                reason,
            })?;
        let mut values = values.into_iter();
        let epoch = values.next().flatten();
        let marks: Vec<Option<u64>> = values.collect();
        self.redis_epoch = epoch;
        for (tier, marks) in self.tiers.iter_mut().zip(marks.chunks(3)) {
            let mark = |i: usize| marks.get(i).copied().flatten();
            tier.redis = Some(RedisMarks {
                published: mark(0).unwrap_or(0),
                applied: mark(1).unwrap_or(0),
                replay_from: mark(2),
            });
        }
        Ok(self)
    }

    /// The state as a JSON object (stable field names, for scripts).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let tiers: Vec<serde_json::Value> = self
            .tiers
            .iter()
            .map(|tier| {
                let mut value = serde_json::json!({
                    "tier": tier.tier,
                    "committed": tier.committed,
                    "confirmed": tier.confirmed,
                    "acknowledged": tier.acknowledged,
                    "outbox": tier.outbox,
                    "retained": tier.retained,
                    "first_retained": tier.first_retained,
                });
                if let (Some(redis), Some(object)) = (tier.redis, value.as_object_mut()) {
                    object.insert(
                        "redis".into(),
                        serde_json::json!({
                            "published": redis.published,
                            "applied": redis.applied,
                            "replay_from": redis.replay_from,
                        }),
                    );
                }
                value
            })
            .collect();
        serde_json::json!({
            "path": self.path.display().to_string(),
            "shard_id": self.shard_id,
            "schema_version": self.schema_version,
            "epoch": self.epoch,
            "last_seq": self.last_seq,
            "restored": self.restored,
            "redis_epoch": self.redis_epoch,
            "tiers": tiers,
        })
    }
}

/// Sends one request to the Redis at `redis_url` (with `cluster`, a comma-separated list of
/// Redis Cluster seed URLs) for an admin command, on a connection of its own: connecting and
/// the answer each wait at most `timeout`, the whole at most twice that.
///
/// # Errors
/// Why Redis did not answer, for a message beside the (redacted) URL.
pub(crate) async fn ask_redis<T, F, Fut>(
    redis_url: &str,
    cluster: bool,
    timeout: Duration,
    request: F,
) -> Result<T, String>
where
    F: FnOnce(Connection) -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    let client =
        RedisTarget::open(redis_url, cluster).map_err(|err| format!("{:?}", err.kind()))?;
    let answer = async {
        let conn = client
            .connect(Timeouts {
                connect: Some(timeout),
                response: Some(timeout),
            })
            .await?;
        request(conn).await
    };
    tokio::time::timeout(timeout * 2, answer)
        .await
        .map_err(|_| "did not answer in time".to_owned())?
        .map_err(|err| err.to_string())
}

impl fmt::Display for ShardState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "shard file   {}", self.path.display())?;
        writeln!(
            f,
            "shard {}  epoch {}  last seq {}  schema {}{}",
            self.shard_id,
            self.epoch,
            self.last_seq,
            self.schema_version,
            if self.restored {
                "  (restored, not yet reconciled with Redis)"
            } else {
                ""
            }
        )?;
        if let Some(epoch) = self.redis_epoch {
            writeln!(f, "redis epoch  {epoch}")?;
        }
        let with_redis = self.tiers.iter().any(|t| t.redis.is_some());
        write!(
            f,
            "{:>5} {:>10} {:>10} {:>10} {:>10} {:>14}",
            "tier", "committed", "acked", "outbox", "retained", "first_retained"
        )?;
        if with_redis {
            write!(f, " {:>10} {:>10} {:>8}", "published", "applied", "replay")?;
        }
        writeln!(f)?;
        for tier in &self.tiers {
            let first = tier
                .first_retained
                .map_or_else(|| "-".to_owned(), |seq| seq.to_string());
            write!(
                f,
                "{:>5} {:>10} {:>10} {:>10} {:>10} {:>14}",
                tier.tier,
                format!(
                    "{}{}",
                    tier.committed,
                    if tier.confirmed || tier.committed == 0 {
                        ""
                    } else {
                        "?"
                    }
                ),
                tier.acknowledged,
                tier.outbox,
                tier.retained,
                first
            )?;
            if let Some(redis) = tier.redis {
                let replay = redis
                    .replay_from
                    .map_or_else(|| "-".to_owned(), |seq| seq.to_string());
                write!(
                    f,
                    " {:>10} {:>10} {:>8}",
                    redis.published, redis.applied, replay
                )?;
            }
            writeln!(f)?;
        }
        if self.tiers.iter().any(|t| !t.confirmed && t.committed > 0) {
            writeln!(
                f,
                "? provisional: not yet reconciled with Redis's published mark"
            )?;
        }
        Ok(())
    }
}
