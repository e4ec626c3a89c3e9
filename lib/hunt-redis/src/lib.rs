//! How hunt-pipeline talks to Redis, shared by the shard writer, the tier router and the load
//! test.
//!
//! - [`connection`]: one Redis or a Redis Cluster behind one connection type, with pipelines
//!   split per slot on a cluster; [`redact_url`] for anything that names Redis in a log.
//! - [`library`]: the `hunt` Functions library loaded on every primary, and [`fcall`], the one
//!   call that reloads it when Redis has lost it and retries.
//! - [`reconnecting`]: a connection for request/response calls that heals itself, every call
//!   bounded by a deadline.
//! - [`claims`]: clue and chest claims sent.
//! - [`stream`]: tier stream entries read and decoded into events.
//!
//! What the commands and replies are is the contract's (`leaderboard_proto::functions`,
//! `leaderboard_proto::keys`); this crate only sends them.

#![forbid(unsafe_code)]

pub mod claims;
pub mod connection;
pub mod library;
pub mod reconnecting;
pub mod stream;

pub use connection::{Connection, Primaries, RedisTarget, Timeouts, redact_url};
pub use library::{ensure_loaded, fcall, is_function_missing};
pub use reconnecting::{CallError, Reconnecting};
