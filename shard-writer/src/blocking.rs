//! [`BlockingShardWriter`]: the writer for game loops that are not async.

use leaderboard_proto::v1::HuntEvent;

use crate::config::WriterConfig;
use crate::error::{AppendError, OpenError, Result};
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
