//! The shard writer of hunt-pipeline, embedded in game shard processes.
//!
//! A shard appends [`HuntEvent`](leaderboard_proto::v1::HuntEvent)s; the writer commits them to
//! the shard's own SQLite file (group commit, WAL), assigns each a contiguous per-tier
//! `tier_seq`, and relays them to the tier streams in Redis (`hunt:{t<N>}:stream`). The SQLite
//! file is the source of truth: Redis can restart empty, be unreachable for minutes, or trim a
//! stream, and every committed event still reaches its tier's leaderboard, once.
//!
//! - [`ShardWriter::append`] returns after the event's group commit.
//! - [`ShardWriter::try_append`] never waits: it queues, or hands the event back.
//! - [`BlockingShardWriter`] wraps both for game loops without an async runtime.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use leaderboard_proto::v1::{HuntEvent, ScoreGained, hunt_event::Kind};
//! use shard_writer::{ShardWriter, WriterConfig};
//!
//! let config = WriterConfig::new("/var/lib/hunt/shard-7.sqlite", 7)
//!     .with_redis("redis://127.0.0.1:6379/");
//! let writer = ShardWriter::open(config).await?;
//! let appended = writer
//!     .append(HuntEvent {
//!         tier: 1,
//!         kind: Some(Kind::ScoreGained(ScoreGained { player_id: "ada".into(), points: 10 })),
//!         ..HuntEvent::default()
//!     })
//!     .await?;
//! println!("committed as {} (tier_seq {})", appended.id, appended.tier_seq);
//! writer.shutdown().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod blocking;
mod claims;
pub mod clock;
mod compensations;
mod config;
mod connection;
mod error;
pub mod metrics;
mod relay;
pub mod synthetic;
mod wal;
mod writer;

pub use blocking::BlockingShardWriter;
pub use claims::{ChestClaim, ClueClaim};
pub use compensations::{CONSUMER, Compensation, Compensations, GROUP};
pub use config::{Synchronous, WriterConfig, redact_url};
pub use error::{AppendError, ClaimError, ConfigError, Error, OpenError, Result};
pub use writer::{Appended, EventId, ShardWriter};
