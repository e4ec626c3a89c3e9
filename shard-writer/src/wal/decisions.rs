//! The claim decisions this shard has told, kept in its file: what a Redis that lost its data
//! gets back (see [`crate::recovery`]).
//!
//! Design constraints:
//! - A decision is written (through the commit thread, in its own transaction) before anyone is
//!   told it: a clue's holder and token, won or held by another, the waves this shard opened,
//!   and a chest's holder. So the shard files together hold every claim answer given.
//! - One row per clue and per chest, merged the way Redis merges them: tokens and waves only
//!   rise, a holder belongs to the wave it was told for, and a chest keeps its first holder.
//! - Chest rows live as long as the chest claim in Redis does ([`CHEST_TTL_SECONDS`]); pruning
//!   removes older ones, so the table stays bounded by the chests of one day.
//! - A compensation is recorded (with the chest holder it was revoked for) before the game gets
//!   it, and marked when the game acknowledges it. One acknowledged is never handed out again,
//!   even when a Redis that lost its inbox's record sends it again under a new entry id.
//!   Acknowledged rows are pruned after the retention window, as events are.

use leaderboard_proto::functions::CHEST_TTL_SECONDS;
use rusqlite::{Connection, OptionalExtension, params};

/// The tables, created with the rest of the schema (`IF NOT EXISTS`: older files gain them).
pub(crate) const TABLES: &str = "
    CREATE TABLE IF NOT EXISTS clue_decisions (
        clue_id TEXT PRIMARY KEY,
        wave INTEGER NOT NULL,
        token INTEGER NOT NULL,
        holder TEXT
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS chest_decisions (
        chest_key TEXT PRIMARY KEY,
        award_id TEXT NOT NULL,
        recorded_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS compensation_decisions (
        award_id TEXT PRIMARY KEY,
        entry_id TEXT NOT NULL,
        acked INTEGER NOT NULL,
        recorded_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS compensation_decisions_by_entry
        ON compensation_decisions (entry_id);";

/// One decision told (or about to be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// `holder` holds `clue_id` in `wave` under `token`.
    Clue {
        clue_id: String,
        wave: u32,
        token: u64,
        holder: String,
    },
    /// This shard opened `clue_ids` for `wave`.
    Wave { wave: u32, clue_ids: Vec<String> },
    /// `award_id` holds `chest_key`.
    Chest { chest_key: String, award_id: String },
    /// Inbox entry `entry_id` revokes `award_id` (for `holder_award_id` on `chest_key`, when the
    /// saga revoked it); about to be handed to the game.
    Compensation {
        award_id: String,
        entry_id: String,
        chest_key: String,
        holder_award_id: String,
    },
    /// The game acknowledged inbox entry `entry_id`.
    CompensationAcked { entry_id: String },
}

/// Writes `decision`, merged into what the file holds. Returns whether it may be told: false
/// only for a compensation of an award whose compensation the game already acknowledged (a
/// Redis that lost its inbox's record sent it again), which is never handed out twice.
pub(crate) fn record(
    conn: &Connection,
    decision: &Decision,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    match decision {
        Decision::Clue {
            clue_id,
            wave,
            token,
            holder,
        } => {
            // In an UPDATE, SQLite's column names read the row as it was before.
            conn.prepare_cached(
                "INSERT INTO clue_decisions (clue_id, wave, token, holder) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (clue_id) DO UPDATE SET
                     token = max(token, excluded.token),
                     holder = CASE WHEN excluded.wave > wave OR (excluded.wave = wave AND holder IS NULL)
                                   THEN excluded.holder ELSE holder END,
                     wave = max(wave, excluded.wave)",
            )?
            .execute(params![clue_id, wave, to_i64(*token), holder])?;
        }
        Decision::Wave { wave, clue_ids } => {
            let mut insert = conn.prepare_cached(
                "INSERT INTO clue_decisions (clue_id, wave, token, holder) VALUES (?1, ?2, 0, NULL)
                 ON CONFLICT (clue_id) DO UPDATE SET
                     holder = CASE WHEN excluded.wave > wave THEN NULL ELSE holder END,
                     wave = max(wave, excluded.wave)",
            )?;
            for clue_id in clue_ids {
                insert.execute(params![clue_id, wave])?;
            }
        }
        Decision::Chest {
            chest_key,
            award_id,
        } => {
            // A chest keeps its first holder while that claim lives; once it has expired (in
            // Redis too) the chest may be won anew, and the new holder is the one to record.
            conn.prepare_cached(
                "INSERT INTO chest_decisions (chest_key, award_id, recorded_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (chest_key) DO UPDATE SET
                     award_id = excluded.award_id,
                     recorded_ms = excluded.recorded_ms
                 WHERE chest_decisions.recorded_ms < ?4",
            )?
            .execute(params![chest_key, award_id, now_ms, expiry(now_ms)])?;
        }
        Decision::Compensation {
            award_id,
            entry_id,
            chest_key,
            holder_award_id,
        } => {
            let known: Option<(String, bool)> = conn
                .prepare_cached(
                    "SELECT entry_id, acked FROM compensation_decisions WHERE award_id = ?1",
                )?
                .query_row([award_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            if let Some((known_entry, true)) = &known
                && known_entry != entry_id
            {
                return Ok(false);
            }
            conn.prepare_cached(
                "INSERT INTO compensation_decisions (award_id, entry_id, acked, recorded_ms)
                 VALUES (?1, ?2, 0, ?3)
                 ON CONFLICT (award_id) DO UPDATE SET entry_id = excluded.entry_id",
            )?
            .execute(params![award_id, entry_id, now_ms])?;
            if !holder_award_id.is_empty() && !chest_key.is_empty() {
                record(
                    conn,
                    &Decision::Chest {
                        chest_key: chest_key.clone(),
                        award_id: holder_award_id.clone(),
                    },
                    now_ms,
                )?;
            }
        }
        Decision::CompensationAcked { entry_id } => {
            conn.prepare_cached(
                "UPDATE compensation_decisions SET acked = 1, recorded_ms = ?2 WHERE entry_id = ?1",
            )?
            .execute(params![entry_id, now_ms])?;
        }
    }
    Ok(true)
}

/// What a clue's row holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClueRow {
    pub(crate) clue_id: String,
    pub(crate) wave: u32,
    pub(crate) token: u64,
    pub(crate) holder: Option<String>,
}

/// A chest and the award that holds it.
pub(crate) type ChestRow = (String, String);

/// Every decision the file holds: clues, and chests whose claim has not expired at `now_ms`.
/// Per tier: the highest `tier_seq` a router has acknowledged (applied), as the file keeps it.
///
/// # Errors
/// SQLite's error.
pub(crate) fn acknowledged(conn: &Connection) -> rusqlite::Result<Vec<(u32, u64)>> {
    conn.prepare("SELECT tier, acknowledged FROM tiers")?
        .query_map([], |row| {
            let (tier, mark): (i64, i64) = (row.get(0)?, row.get(1)?);
            Ok((
                u32::try_from(tier).unwrap_or(0),
                u64::try_from(mark).unwrap_or(0),
            ))
        })?
        .collect()
}

pub(crate) fn read(
    conn: &Connection,
    now_ms: i64,
) -> rusqlite::Result<(Vec<ClueRow>, Vec<ChestRow>)> {
    let clues = conn
        .prepare("SELECT clue_id, wave, token, holder FROM clue_decisions")?
        .query_map([], |row| {
            Ok(ClueRow {
                clue_id: row.get(0)?,
                wave: row.get(1)?,
                token: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                holder: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let chests = conn
        .prepare("SELECT chest_key, award_id FROM chest_decisions WHERE recorded_ms >= ?1")?
        .query_map([expiry(now_ms)], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((clues, chests))
}

/// Deletes the chest rows whose claim has expired at `now_ms`, and the acknowledged
/// compensations recorded before `before_ms` (the retention window); returns how many.
pub(crate) fn prune(conn: &Connection, now_ms: i64, before_ms: i64) -> rusqlite::Result<usize> {
    let chests = conn
        .prepare_cached("DELETE FROM chest_decisions WHERE recorded_ms < ?1")?
        .execute([expiry(now_ms)])?;
    let compensations = conn
        .prepare_cached("DELETE FROM compensation_decisions WHERE acked = 1 AND recorded_ms < ?1")?
        .execute([before_ms])?;
    Ok(chests + compensations)
}

/// The oldest `recorded_ms` of a chest claim still alive at `now_ms`.
fn expiry(now_ms: i64) -> i64 {
    now_ms.saturating_sub(i64::try_from(CHEST_TTL_SECONDS * 1_000).unwrap_or(i64::MAX))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn file() -> Connection {
        let conn = Connection::open_in_memory().expect("sqlite");
        conn.execute_batch(TABLES).expect("tables");
        conn
    }

    fn clue(wave: u32, token: u64, holder: &str) -> Decision {
        Decision::Clue {
            clue_id: "c".into(),
            wave,
            token,
            holder: holder.into(),
        }
    }

    #[test]
    fn clue_rows_merge_as_redis_does_in_any_order() {
        let conn = file();
        // Learned out of order: a later wave's holder, then an older one's, then a wave opened.
        record(&conn, &clue(2, 5, "bo"), 0).expect("record");
        record(&conn, &clue(1, 3, "ada"), 0).expect("record");
        record(
            &conn,
            &Decision::Wave {
                wave: 2,
                clue_ids: vec!["c".into()],
            },
            0,
        )
        .expect("record");
        let (clues, _) = read(&conn, 0).expect("read");
        assert_eq!(
            clues,
            vec![ClueRow {
                clue_id: "c".into(),
                wave: 2,
                token: 5,
                holder: Some("bo".into())
            }]
        );
        // A new wave clears the holder and keeps the token floor.
        record(
            &conn,
            &Decision::Wave {
                wave: 3,
                clue_ids: vec!["c".into()],
            },
            0,
        )
        .expect("record");
        let (clues, _) = read(&conn, 0).expect("read");
        assert_eq!(
            (clues[0].wave, clues[0].token, &clues[0].holder),
            (3, 5, &None)
        );
    }

    #[test]
    fn a_chest_keeps_its_holder_while_the_claim_lives() {
        let conn = file();
        let chest = |award: &str| Decision::Chest {
            chest_key: "gold".into(),
            award_id: award.into(),
        };
        let day = i64::try_from(CHEST_TTL_SECONDS * 1_000).expect("fits");
        record(&conn, &chest("a"), 1_000).expect("record");
        record(&conn, &chest("b"), 2_000).expect("record");
        assert_eq!(
            read(&conn, 2_000).expect("read").1,
            vec![("gold".into(), "a".into())]
        );
        // Expired with its claim: the chest may be won anew.
        let later = 1_000 + day + 1;
        assert!(read(&conn, later).expect("read").1.is_empty());
        record(&conn, &chest("b"), later).expect("record");
        assert_eq!(
            read(&conn, later).expect("read").1,
            vec![("gold".into(), "b".into())]
        );
    }

    #[test]
    fn an_acknowledged_compensation_is_never_told_again() {
        let conn = file();
        let delivered = |entry: &str| Decision::Compensation {
            award_id: "x".into(),
            entry_id: entry.into(),
            chest_key: "gold".into(),
            holder_award_id: "y".into(),
        };
        assert!(record(&conn, &delivered("1-0"), 0).expect("record"));
        // Redelivered before an ack, or sent anew before an ack: told again.
        assert!(record(&conn, &delivered("1-0"), 0).expect("record"));
        assert!(record(&conn, &delivered("2-0"), 0).expect("record"));
        let acked = Decision::CompensationAcked {
            entry_id: "2-0".into(),
        };
        assert!(record(&conn, &acked, 0).expect("record"));
        // Sent anew after the ack (Redis forgot it was sent): never told again.
        assert!(!record(&conn, &delivered("3-0"), 0).expect("record"));
        // The chest's holder came with it.
        assert_eq!(
            read(&conn, 0).expect("read").1,
            vec![("gold".into(), "y".into())]
        );
    }
}
