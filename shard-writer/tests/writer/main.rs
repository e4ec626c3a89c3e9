//! Integration tests of the shard writer against a private `redis-server` and real SQLite files.

// A test that cannot set itself up should stop right there, saying why.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

mod admin;
mod claims;
mod crash;
mod delivery;
mod failover;
mod faults;
mod ingest;
mod input;
mod model;
mod observability;
mod recovery;
mod retention;
