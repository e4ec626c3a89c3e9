//! Every read of the shard file's format, for the writer and for everyone else: the writer's
//! `open` and its relay, `inspect`, `backup`, `replay`, and checkers outside this crate read the
//! file through [`ShardFile`] (or, inside a writer's transaction, through `meta` and `load`).
//!
//! Design constraints:
//! - Read-only: nothing here writes the file. [`ShardFile::open`] opens it with
//!   `SQLITE_OPEN_READ_ONLY` and never takes the writer's lock, so it is safe beside a running
//!   writer; a snapshot is read in one transaction, one consistent state of the file.
//! - The counters are recovered the way `open` recovers them: `seq` and each tier's `tier_seq`
//!   are the larger of what `meta`/`tiers` stored and what the rows themselves hold, so a reader
//!   reports exactly what the next writer would continue above.
//! - A stored payload is a `HuntEvent` without its `tier_seq`; the reader puts the row's
//!   `tier_seq` back (in the bytes the relay publishes too), so no caller has to know that.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use leaderboard_proto::rewards;
use leaderboard_proto::v1::HuntEvent;
use prost::Message;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::wal::schema::{RESTORED, TierRow, to_i64, to_u64};

/// How long a read waits for a writer's transaction to let go of the file.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a shard file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No file at the path.
    #[error("{path}: no such shard file")]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The file is not a shard file (no writer schema in it).
    #[error("{path}: not a shard file ({reason})")]
    NotAShardFile {
        /// The path given.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// SQLite failed.
    #[error("{path}: {source}")]
    Sqlite {
        /// The shard file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A stored event does not decode as a `hunt.v1.HuntEvent`.
    #[error("{path}: the event of seq {seq} does not decode: {source}")]
    Payload {
        /// The shard file.
        path: PathBuf,
        /// The event's `seq`.
        seq: u64,
        /// The decoder's error.
        source: prost::DecodeError,
    },
}

/// One event as a shard file holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The shard-local sequence number (the row's key).
    pub seq: u64,
    /// The tier it was committed to.
    pub tier: u32,
    /// Its `tier_seq` (provisional while the tier is not reconciled with Redis).
    pub tier_seq: u64,
    /// The event, `tier_seq` included.
    pub event: HuntEvent,
}

/// The state a writer resumes from: what `open` reads from the file.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The epoch of the last writer that opened the file.
    pub(crate) epoch: u64,
    /// Restored from a backup and not yet reconciled with Redis.
    pub(crate) restored: bool,
    /// The highest `seq` handed out.
    pub(crate) last_seq: u64,
    /// One per tier of the reward table, in table order; `assigned` is recovered from the rows.
    pub(crate) tiers: Vec<TierRow>,
}

/// A consistent snapshot of a shard file, for `inspect`.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The shard the file belongs to.
    pub(crate) shard_id: u32,
    /// Its schema version (0 when none is stored).
    pub(crate) schema_version: i64,
    /// Its counters, as a writer would resume from them.
    pub(crate) loaded: Loaded,
    /// One per tier, in table order.
    pub(crate) retained: Vec<Retained>,
}

/// The rows of one tier still in the file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retained {
    /// How many.
    pub(crate) rows: u64,
    /// The lowest `tier_seq` among them (`None` when no row is left).
    pub(crate) first: Option<u64>,
}

/// A shard file opened for reading.
///
/// [`ShardFile::open`] gives a read-only view, safe beside a running writer; the writer's relay
/// reads its own file through one too.
#[derive(Debug)]
pub struct ShardFile {
    conn: Connection,
    path: PathBuf,
    /// SQLite's log beside the file, kept open by `sync_log`.
    log: Option<File>,
}

impl ShardFile {
    /// Opens the shard file at `path` read-only, without the writer's lock.
    ///
    /// # Errors
    /// [`ReadError::NotFound`], [`ReadError::NotAShardFile`] (not an SQLite database, or one
    /// without the writer's tables), [`ReadError::Sqlite`].
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        if !path.is_file() {
            return Err(ReadError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let sqlite = |source| ReadError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('meta', 'events', 'tiers')",
                [],
                |row| row.get(0),
            )
            .map_err(|source| match source {
                rusqlite::Error::SqliteFailure(err, _)
                    if err.code == rusqlite::ErrorCode::NotADatabase =>
                {
                    ReadError::NotAShardFile {
                        path: path.to_path_buf(),
                        reason: "not an SQLite database".into(),
                    }
                }
                source => sqlite(source),
            })?;
        if tables != 3 {
            return Err(ReadError::NotAShardFile {
                path: path.to_path_buf(),
                reason: "no meta, events and tiers tables".into(),
            });
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            log: None,
        })
    }

    /// Reads the shard file at `path` through `conn`, a connection of its writer.
    pub(crate) fn with_connection(conn: Connection, path: &Path) -> Self {
        Self {
            conn,
            path: path.to_path_buf(),
            log: None,
        }
    }

    /// The file read.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `visit` with every event of the file, in `seq` order.
    ///
    /// # Errors
    /// [`ReadError::Sqlite`], or [`ReadError::Payload`] for an event that does not decode.
    pub fn for_each_event(&self, mut visit: impl FnMut(StoredEvent)) -> Result<(), ReadError> {
        let sqlite = |source| ReadError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let mut select = self
            .conn
            .prepare("SELECT seq, tier, tier_seq, payload FROM events ORDER BY seq")
            .map_err(sqlite)?;
        let mut rows = select.query([]).map_err(sqlite)?;
        while let Some(row) = rows.next().map_err(sqlite)? {
            let (seq, tier, tier_seq, payload): (i64, u32, i64, Vec<u8>) = (
                row.get(0).map_err(sqlite)?,
                row.get(1).map_err(sqlite)?,
                row.get(2).map_err(sqlite)?,
                row.get(3).map_err(sqlite)?,
            );
            let (seq, tier_seq) = (to_u64(seq), to_u64(tier_seq));
            let mut event =
                HuntEvent::decode(payload.as_slice()).map_err(|source| ReadError::Payload {
                    path: self.path.clone(),
                    seq,
                    source,
                })?;
            event.tier_seq = tier_seq;
            visit(StoredEvent {
                seq,
                tier,
                tier_seq,
                event,
            });
        }
        Ok(())
    }

    /// Reads the file's identity and counters in one transaction.
    pub(crate) fn snapshot(&mut self) -> Result<Snapshot, ReadError> {
        let path = self.path.clone();
        let sqlite = |source| ReadError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sqlite)?;
        let Some(shard_id) = meta(&tx, "shard_id").map_err(sqlite)? else {
            return Err(ReadError::NotAShardFile {
                path: path.clone(),
                reason: "no shard_id".into(),
            });
        };
        let schema_version = meta(&tx, "schema_version").map_err(sqlite)?.unwrap_or(0);
        let loaded = load(&tx).map_err(sqlite)?;
        let mut retained = Vec::with_capacity(loaded.tiers.len());
        for row in &loaded.tiers {
            let (rows, first): (i64, Option<i64>) = tx
                .query_row(
                    "SELECT COUNT(*), MIN(tier_seq) FROM events WHERE tier = ?1",
                    [row.tier],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(sqlite)?;
            retained.push(Retained {
                rows: to_u64(rows),
                first: first.map(to_u64),
            });
        }
        tx.commit().map_err(sqlite)?;
        Ok(Snapshot {
            shard_id: u32::try_from(shard_id).unwrap_or(u32::MAX),
            schema_version,
            loaded,
            retained,
        })
    }

    /// The events of `tier` from `tier_seq` `first` to `last`, in order, each as the relay
    /// publishes it: `(tier_seq, payload with tier_seq)`. Rows pruned meanwhile are missing.
    pub(crate) fn publishable(
        &self,
        tier: u32,
        first: u64,
        last: u64,
    ) -> rusqlite::Result<Vec<(u64, Vec<u8>)>> {
        let mut select = self.conn.prepare_cached(
            "SELECT tier_seq, payload FROM events
             WHERE tier = ?1 AND tier_seq >= ?2 AND tier_seq <= ?3
             ORDER BY tier_seq",
        )?;
        select
            .query_map(params![tier, to_i64(first), to_i64(last)], |row| {
                let tier_seq = to_u64(row.get(0)?);
                let payload: Vec<u8> = row.get(1)?;
                Ok((tier_seq, with_tier_seq(&payload, tier_seq)))
            })
            .and_then(Iterator::collect)
    }

    /// fsyncs SQLite's write-ahead log beside the file (reopening it when SQLite has replaced
    /// it), so that what is read next survives a power loss even under `synchronous=NORMAL`.
    pub(crate) fn sync_log(&mut self) -> std::io::Result<()> {
        let mut log_path = self.path.as_os_str().to_owned();
        log_path.push("-wal");
        let on_disk = match std::fs::metadata(&log_path) {
            Ok(meta) => meta,
            // No log yet: nothing has been written that is not already in the database file.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        let current = match &self.log {
            Some(file) if file.metadata()?.ino() == on_disk.ino() => file,
            _ => self.log.insert(File::open(&log_path)?),
        };
        current.sync_data()
    }

    /// Writes one consistent copy of the file (as of one read transaction) to `target`, which
    /// must not exist (`VACUUM INTO`).
    pub(crate) fn copy_to(&self, target: &Path) -> rusqlite::Result<()> {
        self.conn
            .execute("VACUUM INTO ?1", [target.to_string_lossy()])
            .map(|_| ())
    }
}

/// The value of the `meta` row `name`, if there is one.
pub(crate) fn meta(conn: &Connection, name: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
        row.get(0)
    })
    .optional()
}

/// Reads the state a writer resumes from, recovering each counter from the rows where they are
/// ahead of what was stored. Call it inside a transaction, for one consistent state.
pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Loaded> {
    let epoch = to_u64(meta(conn, "epoch")?.unwrap_or(0));
    let restored = meta(conn, RESTORED)?.unwrap_or(0) != 0;
    let max_seq: Option<i64> =
        conn.query_row("SELECT MAX(seq) FROM events", [], |row| row.get(0))?;
    let last_seq = to_u64(meta(conn, "last_seq")?.unwrap_or(0)).max(to_u64(max_seq.unwrap_or(0)));
    let mut tiers = Vec::with_capacity(rewards::TIERS.len());
    for tier in rewards::TIERS {
        let stored: Option<(i64, bool, i64)> = conn
            .query_row(
                "SELECT assigned, confirmed, acknowledged FROM tiers WHERE tier = ?1",
                [tier.id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let (assigned, confirmed, acknowledged) = stored.unwrap_or((0, false, 0));
        // The counter is also recoverable from the rows themselves: take the larger.
        let max_row: Option<i64> = conn.query_row(
            "SELECT MAX(tier_seq) FROM events WHERE tier = ?1",
            [tier.id],
            |row| row.get(0),
        )?;
        tiers.push(TierRow {
            tier: tier.id,
            assigned: to_u64(assigned).max(to_u64(max_row.unwrap_or(0))),
            confirmed,
            acknowledged: to_u64(acknowledged),
        });
    }
    Ok(Loaded {
        epoch,
        restored,
        last_seq,
        tiers,
    })
}

/// Appends `tier_seq` (field 5, varint) to an encoded `HuntEvent` that lacks it. Protobuf
/// merges a trailing scalar field over the message, so this equals encoding the full event.
pub(crate) fn with_tier_seq(payload: &[u8], tier_seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 11);
    out.extend_from_slice(payload);
    out.push(5 << 3);
    prost::encoding::encode_varint(tier_seq, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use leaderboard_proto::v1::{ScoreGained, hunt_event::Kind};

    #[test]
    fn appending_tier_seq_equals_encoding_it() {
        let mut event = HuntEvent {
            shard_id: 7,
            epoch: 3,
            seq: 99,
            tier: 2,
            tier_seq: 0,
            occurred_at_ms: 1_700_000_000_000,
            display_name: "Ada".into(),
            kind: Some(Kind::ScoreGained(ScoreGained {
                player_id: "ada".into(),
                points: -5,
            })),
        };
        let stored = event.encode_to_vec();
        for tier_seq in [1, 127, 128, 1 << 40, u64::MAX] {
            event.tier_seq = tier_seq;
            let decoded = HuntEvent::decode(with_tier_seq(&stored, tier_seq).as_slice());
            assert_eq!(decoded.ok(), Some(event.clone()));
        }
    }
}
