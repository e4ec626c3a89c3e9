//! Integration tests of the tier router against a private `redis-server`, real shard writers
//! and a real gRPC client.

// A test that cannot set itself up should stop right there, saying why.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

mod browser;
mod cluster;
mod end_to_end;
mod faults;
mod hostile;
mod ingest;
mod observability;
mod requests;
mod saga;
mod tls;
mod ws;
