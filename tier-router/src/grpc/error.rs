//! [`Error`]: why a gRPC request is refused, and the one place it becomes a `Status`.

use leaderboard_proto::validate::ValidationError;
use tonic::Status;

/// Why a gRPC request is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument is out of range (`INVALID_ARGUMENT`).
    #[error("{field} {reason}")]
    InvalidArgument {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An id in the request is not a valid id (`INVALID_ARGUMENT`).
    #[error(transparent)]
    InvalidId(#[from] ValidationError),
    /// The tier is not in the reward table (`NOT_FOUND`).
    #[error("unknown tier {0}")]
    UnknownTier(u32),
    /// The player has no score in the tier (`NOT_FOUND`).
    #[error("player {player_id} has no score in tier {tier}")]
    UnknownPlayer {
        /// The tier asked about.
        tier: u32,
        /// The player asked about.
        player_id: String,
    },
    /// No tier records the award (`NOT_FOUND`).
    #[error("no award {0} is recorded")]
    UnknownAward(String),
    /// No award holds the chest (`NOT_FOUND`).
    #[error("no award holds chest {0}")]
    UnclaimedChest(String),
    /// The award's record in Redis does not parse (`INTERNAL`).
    #[error("award {0} has a record this router cannot read")]
    UnreadableAward(String),
    /// Redis did not answer (`UNAVAILABLE`). Only the error's kind reaches the client, never
    /// what the server said.
    #[error("redis unavailable: {:?}", .0.kind())]
    Redis(#[source] redis::RedisError),
    /// Fewer Redis replicas than `claim_replicas` hold the verdict, so it is not told: a
    /// failover now could lose it (`UNAVAILABLE`, retry after the pushback).
    #[error(
        "the verdict is on {acked} Redis replica(s), {wanted} are required before it is told; \
         retry later"
    )]
    Unreplicated {
        /// Replicas that acknowledged.
        acked: u64,
        /// Replicas required.
        wanted: u32,
    },
    /// The chest's holder is not yet recorded in a shard file, so it is not told: a Redis that
    /// forgets could decide it afresh (`UNAVAILABLE`, retry after the pushback).
    #[error("the holder of chest {0} is not yet recorded by its shard; retry later")]
    Unrecorded(String),
    /// The router is shutting down (`UNAVAILABLE`): ends a `Watch` stream.
    #[error("the router is shutting down")]
    ShuttingDown,
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::InvalidArgument { .. } | Error::InvalidId(_) => {
                Status::invalid_argument(message)
            }
            Error::UnknownTier(_)
            | Error::UnknownPlayer { .. }
            | Error::UnknownAward(_)
            | Error::UnclaimedChest(_) => Status::not_found(message),
            Error::UnreadableAward(_) => Status::internal(message),
            Error::Redis(_) | Error::ShuttingDown => Status::unavailable(message),
            Error::Unreplicated { .. } | Error::Unrecorded(_) => {
                let mut status = Status::unavailable(message);
                status.metadata_mut().insert(
                    "grpc-retry-pushback-ms",
                    tonic::metadata::MetadataValue::from_static("1000"),
                );
                status
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use leaderboard_proto::validate;

    use super::*;
    use leaderboard_proto::limits::MAX_TOP_LIMIT;

    #[test]
    fn each_refusal_keeps_its_code_and_message() {
        let refusals = [
            (
                Error::InvalidArgument {
                    field: "limit",
                    reason: format!("must be at most {MAX_TOP_LIMIT} (0 means 100), not 1001"),
                },
                tonic::Code::InvalidArgument,
                "limit must be at most 1000 (0 means 100), not 1001",
            ),
            (
                Error::from(validate::id("player_id", "").expect_err("empty id")),
                tonic::Code::InvalidArgument,
                "player_id must not be empty",
            ),
            (
                Error::UnknownTier(99),
                tonic::Code::NotFound,
                "unknown tier 99",
            ),
            (
                Error::UnknownPlayer {
                    tier: 1,
                    player_id: "ada".into(),
                },
                tonic::Code::NotFound,
                "player ada has no score in tier 1",
            ),
            (
                Error::UnknownAward("a1".into()),
                tonic::Code::NotFound,
                "no award a1 is recorded",
            ),
            (
                Error::UnclaimedChest("c1".into()),
                tonic::Code::NotFound,
                "no award holds chest c1",
            ),
            (
                Error::UnreadableAward("a1".into()),
                tonic::Code::Internal,
                "award a1 has a record this router cannot read",
            ),
            (
                Error::Redis(redis::RedisError::from(std::io::Error::other("gone"))),
                tonic::Code::Unavailable,
                "redis unavailable: Io",
            ),
            (
                Error::Unreplicated {
                    acked: 0,
                    wanted: 1,
                },
                tonic::Code::Unavailable,
                "the verdict is on 0 Redis replica(s), 1 are required before it is told; retry \
                 later",
            ),
            (
                Error::Unrecorded("north-gate".into()),
                tonic::Code::Unavailable,
                "the holder of chest north-gate is not yet recorded by its shard; retry later",
            ),
            (
                Error::ShuttingDown,
                tonic::Code::Unavailable,
                "the router is shutting down",
            ),
        ];
        for (err, code, message) in refusals {
            let status = Status::from(err);
            assert_eq!((status.code(), status.message()), (code, message));
        }
    }
}
