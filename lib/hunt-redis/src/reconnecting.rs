//! [`Reconnecting`]: a Redis connection for request/response calls that heals itself.
//!
//! Design constraints:
//! - Every call is bounded by a deadline its caller gives: a Redis that is down, hung (SIGSTOP)
//!   or partitioned is an answer ([`CallError::Unreachable`]), never a hang.
//! - One multiplexed connection is shared by every caller. It is opened lazily, by one caller at
//!   a time (the others wait for it, within their own deadlines), with the `hunt` function
//!   library loaded. There is no background task: nothing to stop, nothing retrying on its own.
//! - A connection that may be broken (an I/O error, a dropped connection, a call past its
//!   deadline: a half-open socket looks just like a slow server) is dropped, so the next call
//!   opens a fresh one. Redis restarting, with or without its data, heals on the next call.
//! - Redis's own error replies keep the connection, except `READONLY`: the node was demoted to a
//!   replica by a failover, and a new connection (through Sentinel) reaches the new primary.
//! - A connection found broken by a call that did not open it is replaced and the call made once
//!   more: after Redis comes back, the first call succeeds instead of reporting the broken pipe
//!   the old connection left behind. Every call through here is safe to repeat, except through
//!   [`Reconnecting::call_once`].

use std::future::Future;
use std::time::Duration;

use redis::{ErrorKind, RedisError, RetryMethod};

use crate::connection::{Connection, RedisTarget, Timeouts};
use crate::library;

/// Why a call through [`Reconnecting`] failed.
#[derive(Debug)]
pub enum CallError {
    /// No answer within the deadline, or the connection failed; the reason has no secrets.
    Unreachable(String),
    /// Redis answered with an error.
    Redis(RedisError),
}

/// The current connection and its generation, so a caller drops only the one it saw fail.
#[derive(Default)]
struct Slot {
    generation: u64,
    conn: Option<Connection>,
}

/// A lazily opened Redis connection that is replaced after any failure that may have broken it.
pub struct Reconnecting {
    client: RedisTarget,
    connect_timeout: Duration,
    /// The Redis URL with its password redacted, for messages.
    redis: String,
    slot: tokio::sync::Mutex<Slot>,
}

impl std::fmt::Debug for Reconnecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconnecting")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl Reconnecting {
    /// A connection to `client` (one Redis or a cluster), opened on first use within
    /// `connect_timeout`. `redis` names it in messages: a URL with its password redacted
    /// ([`crate::redact_url`]).
    #[must_use]
    pub fn new(client: RedisTarget, connect_timeout: Duration, redis: String) -> Self {
        Self {
            client,
            connect_timeout,
            redis,
            slot: tokio::sync::Mutex::new(Slot::default()),
        }
    }

    /// The Redis URL, password redacted.
    pub fn redis(&self) -> &str {
        &self.redis
    }

    /// Runs `op` on the connection (opening it first if needed), all within `deadline`. When
    /// the connection breaks under the call and it was not opened by this call (it went stale
    /// while Redis was away: a restart leaves a broken pipe behind), `op` runs once more on a
    /// fresh connection, within the same deadline: `op` must be safe to repeat.
    ///
    /// # Errors
    /// [`CallError::Unreachable`] when Redis does not answer in time or the connection fails;
    /// [`CallError::Redis`] when Redis answers with an error.
    pub async fn call<T, F, Fut>(&self, deadline: Duration, op: F) -> Result<T, CallError>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let mut used = None;
        let attempts = async {
            let mut retried = false;
            loop {
                let (generation, fresh, conn) = self.connection().await?;
                used = Some(generation);
                match op(conn).await {
                    Err(err) if breaks_connection(&err) && !fresh && !retried => {
                        self.forget(Some(generation));
                        retried = true;
                    }
                    outcome => return outcome,
                }
            }
        };
        let outcome = tokio::time::timeout(deadline, attempts).await;
        self.settle(outcome, used, deadline)
    }

    /// As [`Reconnecting::call`], without the second attempt: for a call that must not run
    /// twice (a stream read that hands out entries).
    ///
    /// # Errors
    /// As [`Reconnecting::call`].
    pub async fn call_once<T, F, Fut>(&self, deadline: Duration, op: F) -> Result<T, CallError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let mut used = None;
        let attempt = async {
            let (generation, _, conn) = self.connection().await?;
            used = Some(generation);
            op(conn).await
        };
        let outcome = tokio::time::timeout(deadline, attempt).await;
        self.settle(outcome, used, deadline)
    }

    /// The result of a call that used connection `used`, dropping that connection when the
    /// failure may have broken it.
    fn settle<T>(
        &self,
        outcome: Result<Result<T, RedisError>, tokio::time::error::Elapsed>,
        used: Option<u64>,
        deadline: Duration,
    ) -> Result<T, CallError> {
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) if breaks_connection(&err) => {
                self.forget(used);
                Err(CallError::Unreachable(err.to_string()))
            }
            Ok(Err(err)) if is_unavailable(&err) => Err(CallError::Unreachable(err.to_string())),
            Ok(Err(err)) => Err(CallError::Redis(err)),
            Err(_) => {
                self.forget(used);
                Err(CallError::Unreachable(format!(
                    "no answer within {} ms",
                    deadline.as_millis()
                )))
            }
        }
    }

    /// The current connection, opened (with the function library loaded) if there is none;
    /// whether it was opened now.
    async fn connection(&self) -> Result<(u64, bool, Connection), RedisError> {
        let mut slot = self.slot.lock().await;
        if let Some(conn) = &slot.conn {
            return Ok((slot.generation, false, conn.clone()));
        }
        // Responses are bounded by each call's deadline, not by the connection.
        let timeouts = Timeouts {
            connect: Some(self.connect_timeout),
            response: None,
        };
        let mut conn = self.client.connect(timeouts).await?;
        library::ensure_loaded(&mut conn).await?;
        slot.generation += 1;
        slot.conn = Some(conn.clone());
        Ok((slot.generation, true, conn))
    }

    /// Drops the connection of `generation`, unless it was replaced already. A caller that is
    /// opening a new one holds the slot: then there is nothing to drop.
    fn forget(&self, generation: Option<u64>) {
        let Some(generation) = generation else {
            return;
        };
        if let Ok(mut slot) = self.slot.try_lock()
            && slot.generation == generation
        {
            slot.conn = None;
        }
    }
}

/// Whether `err` says the connection itself failed (so it must be replaced), or that it leads to
/// a node that is no longer a primary (`READONLY`: a failover demoted it; a new connection asks
/// again where the primary is).
fn breaks_connection(err: &RedisError) -> bool {
    err.code() == Some("READONLY")
        || err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
}

/// Whether `err` is Redis saying it cannot serve now (loading its data, a script running too
/// long, a cluster down): unreachable for the caller, though the connection is fine.
fn is_unavailable(err: &RedisError) -> bool {
    matches!(err.retry_method(), RetryMethod::WaitAndRetry)
        || matches!(err.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
            && err.code() == Some("BUSY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_unreachable_and_keeps_the_password_out() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let url = "redis://:s3cret@127.0.0.1:1/";
        let Ok(client) = RedisTarget::open(url, false) else {
            panic!("a valid URL");
        };
        let link = Reconnecting::new(client, Duration::from_secs(2), crate::redact_url(url));
        let outcome = link
            .call(Duration::from_secs(2), |mut conn| async move {
                redis::cmd("PING").query_async::<String>(&mut conn).await
            })
            .await;
        match outcome {
            Err(CallError::Unreachable(reason)) => assert!(!reason.contains("s3cret"), "{reason}"),
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(!link.redis().contains("s3cret"), "{}", link.redis());
        assert!(link.redis().contains("127.0.0.1:1"), "{}", link.redis());
    }
}
