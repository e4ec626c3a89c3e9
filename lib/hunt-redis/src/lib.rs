//! How hunt-pipeline talks to Redis, shared by the shard writer, the tier router and the load
//! test.
//!
//! - [`connection`]: one Redis or a Redis Cluster behind one connection type, with pipelines
//!   split per slot on a cluster; [`redact_url`] for anything that names Redis in a log.
//! - [`library`]: the `hunt` Functions library loaded on every primary, and [`call`], the one
//!   call of a typed binding (`leaderboard_proto::functions`) that reloads the library when
//!   Redis has lost it and retries.
//! - [`reconnecting`]: a connection for request/response calls that heals itself, every call
//!   bounded by a deadline.
//! - [`replication`]: a barrier and `WAIT`, so an answer is only given once replicas hold it.
//! - [`stream`]: tier stream entries read and decoded into events.
//!
//! What the commands and replies are is the contract's (`leaderboard_proto::functions`,
//! `leaderboard_proto::keys`); this crate only sends them.

#![forbid(unsafe_code)]

pub mod connection;
pub mod library;
pub mod reconnecting;
pub mod replication;
pub mod stream;

pub use connection::{Connection, Primaries, RedisTarget, Timeouts, redact_url};
pub use library::{call, ensure_loaded, is_function_missing, pipeline, pipeline_each};
pub use reconnecting::{CallError, Reconnecting};
pub use replication::replicated;
