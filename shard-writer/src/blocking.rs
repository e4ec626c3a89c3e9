//! [`BlockingShardWriter`]: the writer for game loops that are not async.

use leaderboard_proto::v1::HuntEvent;

use crate::claims::{ChestClaim, ClueClaim};
use crate::config::WriterConfig;
use crate::error::{AppendError, ClaimError, OpenError, Result};
use crate::writer::{Appended, EventId, ShardWriter};

/// A [`ShardWriter`] with its own Tokio runtime, for callers without one.
///
/// Its methods block the calling thread (except `try_append`, which never waits) and must not
/// be called from inside an async runtime.
#[derive(Debug)]
pub struct BlockingShardWriter {
    writer: ShardWriter,
    runtime: tokio::runtime::Runtime,
}

impl BlockingShardWriter {
    /// Starts a small runtime (one worker thread) and opens the writer on it.
    ///
    /// # Errors
    /// As [`ShardWriter::open`]; also [`OpenError::Io`] when the runtime cannot start.
    pub fn open(config: WriterConfig) -> Result<Self, OpenError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("shard-{}-relay", config.shard_id))
            .enable_all()
            .build()
            .map_err(|source| OpenError::Io {
                path: config.path.clone(),
                source,
            })?;
        let writer = runtime.block_on(ShardWriter::open(config))?;
        Ok(Self { writer, runtime })
    }

    /// As [`ShardWriter::append`], blocking until the event is committed.
    ///
    /// # Errors
    /// As [`ShardWriter::append`].
    pub fn append(&self, event: HuntEvent) -> Result<Appended, AppendError> {
        self.runtime.block_on(self.writer.append(event))
    }

    /// As [`ShardWriter::try_append`]: never waits.
    ///
    /// # Errors
    /// As [`ShardWriter::try_append`].
    pub fn try_append(&self, event: HuntEvent) -> Result<EventId, AppendError> {
        self.writer.try_append(event)
    }

    /// As [`ShardWriter::claim_clue`], blocking for at most `claim_timeout`.
    ///
    /// # Errors
    /// As [`ShardWriter::claim_clue`].
    pub fn claim_clue(&self, clue_id: &str, player_id: &str) -> Result<ClueClaim, ClaimError> {
        self.runtime
            .block_on(self.writer.claim_clue(clue_id, player_id))
    }

    /// As [`ShardWriter::check_clue`], blocking for at most `claim_timeout`.
    ///
    /// # Errors
    /// As [`ShardWriter::check_clue`].
    pub fn check_clue(&self, clue_id: &str, player_id: &str, token: u64) -> Result<(), ClaimError> {
        self.runtime
            .block_on(self.writer.check_clue(clue_id, player_id, token))
    }

    /// As [`ShardWriter::open_wave`], blocking until the wave's event is committed.
    ///
    /// # Errors
    /// As [`ShardWriter::open_wave`].
    pub fn open_wave(
        &self,
        tier: u32,
        wave: u32,
        clue_ids: &[String],
    ) -> Result<Appended, ClaimError> {
        self.runtime
            .block_on(self.writer.open_wave(tier, wave, clue_ids))
    }

    /// As [`ShardWriter::award_id`].
    #[must_use]
    pub fn award_id(&self) -> String {
        self.writer.award_id()
    }

    /// As [`ShardWriter::claim_chest`], blocking for at most `claim_timeout`.
    ///
    /// # Errors
    /// As [`ShardWriter::claim_chest`].
    pub fn claim_chest(
        &self,
        tier: u32,
        chest_type: &str,
        chest_key: &str,
        award_id: &str,
    ) -> Result<ChestClaim, ClaimError> {
        self.runtime.block_on(
            self.writer
                .claim_chest(tier, chest_type, chest_key, award_id),
        )
    }

    /// The async writer inside, for code that has a runtime after all.
    #[must_use]
    pub fn writer(&self) -> &ShardWriter {
        &self.writer
    }

    /// As [`ShardWriter::shutdown`], blocking until it is done.
    ///
    /// # Errors
    /// As [`ShardWriter::shutdown`].
    pub fn shutdown(self) -> Result<()> {
        self.runtime.block_on(self.writer.shutdown())
    }
}
