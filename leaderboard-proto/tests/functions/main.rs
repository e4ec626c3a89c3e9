//! Every function of the `hunt` library on its own, against a private `redis-server`.

// A test that cannot set itself up should stop right there, saying why.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod claims;
mod functions;
mod publish;
