//! The writer's error types. A rejected append always hands its event back.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use leaderboard_proto::v1::HuntEvent;
use leaderboard_proto::validate::ValidationError;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any error of the shard writer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening the shard failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// An append was rejected.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// Shutting down did not finish cleanly.
    #[error("shutdown: {0}")]
    Shutdown(String),
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `field` cannot take the given value.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The configuration field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why [`crate::ShardWriter::open`] refused a shard file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another writer (in this or another process) holds the file.
    #[error("shard file {path} is already open by another writer (its lock file {lock} is held)")]
    AlreadyOpen {
        /// The shard file.
        path: PathBuf,
        /// The lock file beside it.
        lock: PathBuf,
    },
    /// The file is on a network filesystem, where SQLite's WAL is not safe.
    #[error(
        "shard file {path} is on a network filesystem ({filesystem}); the WAL needs a local disk"
    )]
    NetworkFilesystem {
        /// The shard file.
        path: PathBuf,
        /// The filesystem found.
        filesystem: &'static str,
    },
    /// SQLite did not accept a required setting (`journal_mode`, `synchronous`).
    #[error("shard file {path}: {setting} is {actual}, the writer needs {expected}")]
    Setting {
        /// The shard file.
        path: PathBuf,
        /// The pragma.
        setting: &'static str,
        /// What SQLite reports.
        actual: String,
        /// What the configuration asks for.
        expected: String,
    },
    /// The file belongs to another shard.
    #[error("shard file {path} belongs to shard {found}, not to shard {configured}")]
    ShardMismatch {
        /// The shard file.
        path: PathBuf,
        /// The shard id stored in the file.
        found: u32,
        /// The shard id configured.
        configured: u32,
    },
    /// The file was written by a newer or unknown version of the writer.
    #[error("shard file {path} has schema version {found}; this writer reads version {known}")]
    SchemaVersion {
        /// The shard file.
        path: PathBuf,
        /// The version stored in the file.
        found: i64,
        /// The version this writer reads and writes.
        known: i64,
    },
    /// The file was restored from a backup (`shard-writer restore`) and has not yet been
    /// reconciled with Redis: its first open needs Redis to answer, for a fresh epoch and the
    /// published marks to continue above.
    #[error(
        "shard file {path} was restored from a backup: its first open needs Redis (a fresh epoch \
         and the published marks), and Redis is not configured or did not answer"
    )]
    RestoredNeedsRedis {
        /// The shard file.
        path: PathBuf,
    },
    /// SQLite failed.
    #[error("shard file {path}: {source}")]
    Sqlite {
        /// The shard file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The filesystem failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Why an append was not committed. Every variant carries the event back.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The event breaks a rule of the event schema; nothing was stored.
    #[error("invalid event: {reason}")]
    Invalid {
        /// The rejected event.
        event: Box<HuntEvent>,
        /// The rule it breaks.
        reason: ValidationError,
    },
    /// The commit queue is full (from `try_append` only; `append` waits instead).
    #[error("the writer's commit queue is full")]
    QueueFull {
        /// The rejected event.
        event: Box<HuntEvent>,
    },
    /// The writer is shutting down or shut down; nothing was stored.
    #[error("the writer is shut down")]
    Closed {
        /// The rejected event.
        event: Box<HuntEvent>,
    },
    /// The commit failed (disk full, I/O error); nothing of its batch was stored.
    #[error("commit failed: {source}")]
    Storage {
        /// The rejected event.
        event: Box<HuntEvent>,
        /// SQLite's error, shared by the whole batch.
        source: Arc<rusqlite::Error>,
    },
}

impl AppendError {
    /// The event that was not stored.
    #[must_use]
    pub fn into_event(self) -> HuntEvent {
        match self {
            Self::Invalid { event, .. }
            | Self::QueueFull { event }
            | Self::Closed { event }
            | Self::Storage { event, .. } => *event,
        }
    }

    /// The event that was not stored.
    #[must_use]
    pub fn event(&self) -> &HuntEvent {
        match self {
            Self::Invalid { event, .. }
            | Self::QueueFull { event }
            | Self::Closed { event }
            | Self::Storage { event, .. } => event,
        }
    }
}

/// Why a clue or chest claim, a token check, a wave opening or a compensation call did not give
/// its answer. Messages never carry a Redis password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// An id, the tier or the wave breaks a rule of the event schema; Redis was not asked.
    #[error("invalid claim: {0}")]
    Invalid(#[from] ValidationError),
    /// No wave has opened this clue (see [`crate::ShardWriter::open_wave`]).
    #[error("the clue was never opened by a wave")]
    UnknownClue,
    /// The tier's reward table has no such chest type.
    #[error("tier {tier} has no chest type {chest_type:?}")]
    UnknownChest {
        /// The tier asked for.
        tier: u32,
        /// The chest type it lacks.
        chest_type: String,
    },
    /// A later claim of the clue holds a greater token: the write is stale.
    #[error("the token is stale: the clue has been claimed again since")]
    StaleToken,
    /// No claim of the clue has handed out this token yet.
    #[error("the token was never handed out for this clue")]
    FutureToken,
    /// The token is the clue's current one, but another player (or nobody) holds the clue.
    #[error("the token is current but the player does not hold the clue")]
    NotHolder,
    /// Redis did not answer within `claim_timeout` (down, hung or partitioned), or the
    /// connection broke. Nothing is known about whether the call took effect: retrying a claim
    /// is safe (the holder claiming again wins again).
    #[error("Redis unreachable at {redis}: {reason}")]
    Unreachable {
        /// The Redis URL, password redacted.
        redis: String,
        /// What failed.
        reason: String,
    },
    /// Redis answered with an error (out of memory, a refused command, an unexpected reply).
    #[error("Redis refused the call: {reason}")]
    Redis {
        /// Redis's error.
        reason: String,
    },
    /// Redis lost its data (restarted empty, flushed) and the claim state is being restored from
    /// the shard files: no claim is answered until every expected shard has restored its
    /// decisions (or an operator opens the gate). Nothing was decided: retry later.
    #[error(
        "claims are recovering: Redis lost its data and the claim state is being restored from \
         the shard files; retry later"
    )]
    Recovering,
    /// Redis decided, but fewer replicas than `claim_replicas` acknowledged the decision within
    /// the wait, so it is not told: a failover now could lose it. Nothing was recorded; retrying
    /// is safe (the holder claiming again gets the same answer once the replicas catch up).
    #[error(
        "the claim's answer is on {acked} Redis replica(s), {wanted} are required before it is \
         told; retry later"
    )]
    Unreplicated {
        /// Replicas that acknowledged.
        acked: u64,
        /// Replicas required (`claim_replicas`).
        wanted: u32,
    },
    /// The answer could not be recorded in the shard file, so it is not given (a decision is
    /// recorded before it is told). Retrying is safe: the holder claiming again gets the same
    /// answer.
    #[error("the claim's answer could not be recorded in the shard file: {reason}")]
    Record {
        /// SQLite's error.
        reason: String,
    },
    /// The writer has no Redis URL configured: claims need Redis.
    #[error("the writer has no Redis configured; claims and compensations need one")]
    NoRedis,
    /// A compensation inbox entry could not be read as an `AwardRevoked` event. It has been
    /// logged, counted and acknowledged away, so it cannot block the inbox.
    #[error("compensation inbox entry {id} is malformed ({reason}); it was acknowledged away")]
    MalformedCompensation {
        /// The entry's stream id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The wave's clues were opened in Redis, but the `WaveReset` event was not committed; the
    /// event is inside. Opening the wave again is safe.
    #[error("the wave was opened but its event was not committed: {0}")]
    Append(AppendError),
}
