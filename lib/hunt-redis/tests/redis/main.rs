//! Integration tests of `hunt-redis` against real `redis-server` processes.

// A test that cannot set itself up should stop right there, saying why.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod cluster;
mod replication;
mod tls;
