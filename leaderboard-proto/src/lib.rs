//! The contract of hunt-pipeline, shared by every crate of the workspace.
//!
//! - [`v1`]: the `hunt.v1` protobuf messages and gRPC services (`Leaderboard`, `Ingest`),
//!   generated at build time from `proto/hunt/v1/*.proto`, and [`FILE_DESCRIPTOR_SET`] for gRPC
//!   server reflection.
//! - [`rewards`]: the reward table (`rewards/tiers.txtpb`), compiled into constants: tiers never
//!   change at run time.
//! - [`connection`]: one Redis or a Redis Cluster, behind one connection type.
//! - [`functions`]: the Redis Functions library (`lua/hunt.lua`) and its loader.
//! - [`claims`]: clue and chest claims and award records, typed.
//! - [`keys`]: the Redis key schema, the only place that formats a Redis key.
//! - [`stream`]: reading tier streams, entries decoded into events.
//! - [`validate`]: the rules every event passes before it is committed anywhere.
//! - `listener` (feature `server`): accepted connections bounded in number, for the gRPC and
//!   HTTP servers of the router and the ingest sidecar.
//! - `testkit` (feature `testkit`): a private `redis-server` for tests and demos; `recorded`:
//!   what a test binary's code recorded through the `metrics` facade.

#![forbid(unsafe_code)]

/// The `hunt.v1` protobuf package: messages, `Leaderboard` and `Ingest` servers and clients.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    rust_2018_idioms
)]
pub mod v1 {
    tonic::include_proto!("hunt.v1");
}

/// The encoded `FileDescriptorSet` of every `hunt.v1` file (imports and source info included),
/// for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hunt_descriptor.bin"));

pub mod claims;
pub mod connection;
pub mod functions;
pub mod keys;
#[cfg(feature = "server")]
pub mod listener;
#[cfg(feature = "testkit")]
pub mod recorded;
pub mod rewards;
pub mod stream;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod validate;

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    #[test]
    fn descriptor_set_describes_every_service() -> Result<(), prost_reflect::DescriptorError> {
        let pool = DescriptorPool::decode(super::FILE_DESCRIPTOR_SET)?;
        for service in ["hunt.v1.Leaderboard", "hunt.v1.Ingest"] {
            assert!(pool.get_service_by_name(service).is_some(), "{service}");
        }
        for message in ["hunt.v1.HuntEvent", "hunt.v1.RewardTable"] {
            assert!(pool.get_message_by_name(message).is_some(), "{message}");
        }
        Ok(())
    }
}
