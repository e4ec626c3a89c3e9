//! Tier leases and fence tokens, as the `hunt` library's functions grant them.
//!
//! Design constraints:
//! - A lease (`hunt:{t<N>}:lease`, a key with a TTL) only decides who *tries* to apply a tier:
//!   it buys liveness. Safety comes from the fence token, which `hunt_apply` checks inside Redis:
//!   a router paused past its lease and resumed cannot apply a single entry.
//! - A token names a counter and this router instance, so a token issued before Redis lost its
//!   data never matches again.

use std::time::Duration;

use hunt_redis::connection::Primaries;
use leaderboard_proto::functions::{LeaseAcquire, LeaseAcquired, LeaseRelease, LeaseRenew};

/// The outcome of asking for a tier's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This router holds the lease, under this fence token.
    Held(String),
    /// Another router holds it.
    Elsewhere(String),
}

/// Takes or renews `tier`'s lease for `router` for `ttl`.
///
/// # Errors
/// The Redis error.
pub async fn acquire<C: Primaries>(
    conn: &mut C,
    tier: u32,
    router: &str,
    ttl: Duration,
) -> redis::RedisResult<Lease> {
    Ok(
        match hunt_redis::call(conn, &LeaseAcquire::new(tier, router, ttl)).await? {
            LeaseAcquired::Held(token) => Lease::Held(token),
            LeaseAcquired::Taken { holder } => Lease::Elsewhere(holder),
        },
    )
}

/// Keeps `tier`'s lease for `router`, which holds `token`, for another `ttl`.
///
/// # Errors
/// The Redis error; when the tier's fence has moved past `token`, the server error code
/// `FENCED` (see [`crate::apply::is_fenced`]).
pub async fn renew<C: Primaries>(
    conn: &mut C,
    tier: u32,
    router: &str,
    ttl: Duration,
    token: &str,
) -> redis::RedisResult<()> {
    hunt_redis::call(conn, &LeaseRenew::new(tier, router, ttl, token)).await?;
    Ok(())
}

/// Gives `tier`'s lease up if `router` holds it. Returns whether it did.
///
/// # Errors
/// The Redis error.
pub async fn release<C: Primaries>(
    conn: &mut C,
    tier: u32,
    router: &str,
) -> redis::RedisResult<bool> {
    hunt_redis::call(conn, &LeaseRelease::new(tier, router)).await
}
