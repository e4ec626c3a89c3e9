//! The shard's SQLite file: its format, the group-commit thread that is its only writer, and
//! the one reader of the format.
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
//!   checkpoint stays as a safety net at `AUTOCHECKPOINT_PAGES` (64 MiB of log), where it finds
//!   little left to copy; it bounds the log even when the background checkpoints fall behind.
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
//!   `hunt.v1.HuntEvent` protobuf with every field but `tier_seq`, which the reader appends as a
//!   trailing field for the relay to publish. Unique on `(tier, tier_seq)`.
//! - `tiers(tier INTEGER PRIMARY KEY, assigned, confirmed, acknowledged)`: the highest assigned
//!   `tier_seq` as of the last pruning or reconciliation (the rows themselves tell the rest),
//!   whether it is reconciled with Redis, and the highest acknowledged one.
//! - `clue_decisions(clue_id PRIMARY KEY, wave, token, holder)` and
//!   `chest_decisions(chest_key PRIMARY KEY, award_id, recorded_ms)`: the claim answers this
//!   shard has told, recorded before they were told (see `decisions`).
//!
//! The parts:
//! - `lock`: the exclusive lock on the file, and the refusal of network filesystems.
//! - `schema`: the tables, the settings of every connection, and `open`'s checks and repairs.
//! - `committer`: the commit thread and the jobs it takes.
//! - `checkpoint`: the background checkpoint.
//! - `decisions`: the claim decisions told, and their merge rules.
//! - [`reader`]: every read of the format, for the writer, its relay, the admin commands and
//!   checkers outside this crate ([`reader::ShardFile`]).

pub(crate) mod checkpoint;
pub(crate) mod committer;
pub(crate) mod decisions;
pub(crate) mod lock;
pub mod reader;
pub(crate) mod schema;
