//! The contract of hunt-pipeline, shared by every crate of the workspace.
//!
//! - [`v1`]: the `hunt.v1` protobuf messages and gRPC services (`LeaderboardService`,
//!   `IngestService`), generated at build time from `proto/hunt/v1/*.proto`, and
//!   [`FILE_DESCRIPTOR_SET`] for gRPC server reflection.
//! - [`rewards`]: the reward table (`rewards/tiers.txtpb`), compiled into constants: tiers never
//!   change at run time.
//! - [`functions`]: the Redis Functions library (`lua/hunt.lua`) and the commands that call it.
//! - [`limits`]: every bound of the contract (points, ids, waves, messages), also compiled
//!   into the build script and the Lua library.
//! - [`keys`]: the Redis key schema, the only place that formats a Redis key.
//! - [`validate`]: the rules every event passes before it is committed anywhere.
//!
//! No runtime and no server: sending these commands is `hunt-redis`'s, serving these services
//! is `hunt-serve`'s.

#![forbid(unsafe_code)]

/// The `hunt.v1` protobuf package: messages, `LeaderboardService` and `IngestService` servers and
/// clients; with the `json` feature, serde in the proto3 JSON mapping.
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
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/hunt.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of every `hunt.v1` file (imports and source info included),
/// for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hunt_descriptor.bin"));

pub mod functions;
pub mod keys;
/// Every bound of the contract: points, ids, waves, messages. The build script compiles the same
/// file, so the reward table is checked against these and the Lua library gets them written in.
pub mod limits;
pub mod rewards;
pub mod validate;

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    #[test]
    fn descriptor_set_describes_every_service() -> Result<(), prost_reflect::DescriptorError> {
        let pool = DescriptorPool::decode(super::FILE_DESCRIPTOR_SET)?;
        for service in ["hunt.v1.LeaderboardService", "hunt.v1.IngestService"] {
            assert!(pool.get_service_by_name(service).is_some(), "{service}");
        }
        for message in ["hunt.v1.HuntEvent", "hunt.v1.RewardTable"] {
            assert!(pool.get_message_by_name(message).is_some(), "{message}");
        }
        Ok(())
    }
}
