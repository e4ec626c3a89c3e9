//! Integration tests of `leaderboard-proto` against a real `redis-server` (feature `testkit`).

// A test that cannot set itself up should stop right there, saying why.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod claims;
mod cluster;
mod functions;
mod testkit;
