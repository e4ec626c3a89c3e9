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
//! - [`BlockingShardWriter`] wraps both (and the claims) for game loops without an async
//!   runtime.
//! - [`wal::reader::ShardFile`] reads a shard file, read-only and safe beside its running
//!   writer: the one reader of the file's format, for tools and checkers.
//!
//! Claims go to Redis directly, on the writer's own connection (apart from the relay's), each
//! bounded by `claim_timeout` (1 s by default): an unreachable or hung Redis answers
//! [`ClaimError::Unreachable`], never a hang, and the connection heals itself once Redis is back.
//!
//! - [`ShardWriter::open_wave`] opens a wave's clues to claims, then appends its `WaveReset`.
//! - [`ShardWriter::claim_clue`]: first solver wins, with a fencing token greater than every
//!   earlier one of the clue; [`ShardWriter::check_clue`] tells whether a write carrying a token
//!   may go ahead (stale, future, not the holder).
//! - [`ShardWriter::award_id`] hands out award ids unique for ever across the shard, so a chest
//!   can be claimed ([`ShardWriter::claim_chest`]) before the `TreasureAwarded` carrying the id
//!   is appended.
//! - [`ShardWriter::compensations`] reads the shard's compensation inbox: awards of this shard
//!   the router's saga revoked. Each [`Compensation`] comes again until it is acknowledged
//!   ([`Compensations::ack`]), across restarts, and never after.
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
//!
//! writer.open_wave(1, 1, &["riddle-7".to_owned()]).await?;
//! if let shard_writer::ClueClaim::Won { token, .. } = writer.claim_clue("riddle-7", "ada").await? {
//!     println!("ada solved riddle-7 first, token {token}");
//! }
//! let mut inbox = writer.compensations();
//! while let Some(revoked) = inbox.next(std::time::Duration::from_millis(100)).await? {
//!     println!("award {} was revoked", revoked.revoked.award_id);
//!     inbox.ack(&revoked).await?;
//! }
//! writer.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Features
//! - `sidecar`: the `ingest` module, the gRPC sidecar (`hunt.v1.IngestService`) for shards written in
//!   other languages, with health checking and a Prometheus metrics port (`hunt-serve`, tonic's
//!   transport, the Prometheus exporter).
//! - `cli` (default): the `shard-writer` binary, the sidecar and the admin commands (`clap`);
//!   includes `sidecar`.
//!
//! A game process embedding the writer depends on it with `default-features = false`: the
//! writer, its relay, the claims, the compensation inbox, [`BlockingShardWriter`] and the admin
//! functions ([`inspect`], [`backup`], [`replay`]) build without any server, HTTP or CLI crate.
#![forbid(unsafe_code)]

pub mod backup;
mod blocking;
mod claims;
pub mod clock;
mod compensations;
mod config;
mod error;
#[cfg(feature = "sidecar")]
pub mod ingest;
pub mod inspect;
pub mod metrics;
pub mod recovery;
mod relay;
pub mod replay;
pub mod synthetic;
mod verdicts;
pub mod wal;
mod writer;

pub use blocking::BlockingShardWriter;
pub use claims::{ChestClaim, ClueClaim};
pub use compensations::{CONSUMER, Compensation, Compensations, GROUP};
pub use config::{Synchronous, WriterConfig, redact_url};
pub use error::{AppendError, ClaimError, ConfigError, Error, OpenError, Result};
pub use writer::{Appended, EventId, ShardWriter};
