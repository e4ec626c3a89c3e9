//! The shard file's schema: its tables, the SQLite settings every connection of the writer
//! runs with, and the checks and repairs of `open` (version, owner, reconciliation of the tier
//! counters with Redis). The format itself is described in [`crate::wal`].
//!
//! Design constraints:
//! - A connection is used only once SQLite has taken the configured settings (`journal_mode`
//!   WAL, the configured `synchronous`): a setting SQLite silently refused would void the
//!   durability an `append` promises.
//! - A file of another schema version or another shard is refused, never migrated or adopted.
//! - Counters only rise: reconciling a tier with Redis's published mark shifts provisional
//!   `tier_seq`s above it or raises the counter, and never lowers one.

use std::path::Path;

use leaderboard_proto::rewards;
use rusqlite::{Connection, TransactionBehavior, params};

use crate::config::{Synchronous, WriterConfig};
use crate::error::OpenError;
use crate::wal::reader::{self, Loaded};

/// The schema version this writer reads and writes.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Log pages (4 KiB each) after which the commit thread checkpoints by itself: 64 MiB.
pub(crate) const AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// The `meta` row marking a file restored from a backup and not yet reconciled with Redis.
pub(crate) const RESTORED: &str = "restored";

/// One tier's row of the `tiers` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TierRow {
    pub(crate) tier: u32,
    pub(crate) assigned: u64,
    pub(crate) confirmed: bool,
    pub(crate) acknowledged: u64,
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
    tx.execute_batch(crate::wal::decisions::TABLES)
        .map_err(sqlite)?;
    let meta = |name: &str| reader::meta(&tx, name).map_err(sqlite);
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
    let loaded = reader::load(&tx).map_err(sqlite)?;
    tx.commit().map_err(sqlite)?;
    Ok(loaded)
}

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

/// Marks the file at `path` restored from a backup (the [`RESTORED`] row), switching it to a
/// rollback journal first so that no log is left behind under its name.
pub(crate) fn mark_restored(path: &Path) -> rusqlite::Result<()> {
    let conn = Connection::open(path)?;
    let _mode: String = conn.query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))?;
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?1, 1)
         ON CONFLICT (name) DO UPDATE SET value = 1",
        [RESTORED],
    )?;
    conn.close().map_err(|(_, source)| source)
}

/// SQLite stores integers as i64; every counter here stays far below 2^63.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The inverse of [`to_i64`]; negative values (never written) read as 0.
pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
