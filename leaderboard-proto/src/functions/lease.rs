//! `hunt_lease_acquire`, `hunt_lease_renew`, `hunt_lease_release`: a tier's lease and its fence.
//!
//! A fence token is `<counter>:<router id>`: a new holder gets a counter above every earlier
//! one of the tier, and the router id (random per process start) keeps a token issued before a
//! data loss from ever matching again.

use std::time::Duration;

use redis::{Cmd, FromRedisValue, Value};

use super::{ErrorCode, Function, fcall_cmd, name};
use crate::keys;

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// `hunt_lease_acquire(lease, fence; router, ttl_ms)`: takes `tier`'s lease for `router_id`, or
/// renews it when the router holds it already.
#[derive(Debug, Clone)]
pub struct LeaseAcquire(Cmd);

impl LeaseAcquire {
    /// `router_id` asking for `tier` for `ttl`.
    #[must_use]
    pub fn new(tier: u32, router_id: &str, ttl: Duration) -> Self {
        let mut cmd = fcall_cmd(
            name::LEASE_ACQUIRE,
            &[&keys::tier_lease(tier), &keys::tier_fence(tier)],
        );
        cmd.arg(router_id).arg(ttl_ms(ttl));
        Self(cmd)
    }
}

impl Function for LeaseAcquire {
    const NAME: &'static str = name::LEASE_ACQUIRE;
    type Reply = LeaseAcquired;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// The outcome of [`LeaseAcquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAcquired {
    /// The router holds the lease under this fence token.
    Held(String),
    /// Another router holds it.
    Taken {
        /// The holder's router id.
        holder: String,
    },
}

impl FromRedisValue for LeaseAcquired {
    fn from_redis_value(value: Value) -> Result<Self, redis::ParsingError> {
        let (held, value): (i64, String) = FromRedisValue::from_redis_value(value)?;
        Ok(if held == 1 {
            Self::Held(value)
        } else {
            Self::Taken { holder: value }
        })
    }
}

/// `hunt_lease_renew(lease, fence; router, ttl_ms, token) -> token`: keeps the lease of a router
/// holding `token`; [`ErrorCode::Fenced`] when the fence has moved on.
#[derive(Debug, Clone)]
pub struct LeaseRenew(Cmd);

impl LeaseRenew {
    /// `router_id` keeping `tier` for `ttl` under `token`.
    #[must_use]
    pub fn new(tier: u32, router_id: &str, ttl: Duration, token: &str) -> Self {
        let mut cmd = fcall_cmd(
            name::LEASE_RENEW,
            &[&keys::tier_lease(tier), &keys::tier_fence(tier)],
        );
        cmd.arg(router_id).arg(ttl_ms(ttl)).arg(token);
        Self(cmd)
    }
}

impl Function for LeaseRenew {
    const NAME: &'static str = name::LEASE_RENEW;
    type Reply = String;
    const ERRORS: &'static [ErrorCode] = &[ErrorCode::Fenced];

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// `hunt_lease_release(lease; router) -> 1 | 0`: gives `tier`'s lease up if `router_id` holds it;
/// the reply says whether it did.
#[derive(Debug, Clone)]
pub struct LeaseRelease(Cmd);

impl LeaseRelease {
    /// `router_id` giving `tier` up.
    #[must_use]
    pub fn new(tier: u32, router_id: &str) -> Self {
        let mut cmd = fcall_cmd(name::LEASE_RELEASE, &[&keys::tier_lease(tier)]);
        cmd.arg(router_id);
        Self(cmd)
    }
}

impl Function for LeaseRelease {
    const NAME: &'static str = name::LEASE_RELEASE;
    type Reply = bool;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}
