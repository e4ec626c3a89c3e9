//! Writer configuration: every default and limit of the shard writer lives here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hunt_redis::connection::RedisTarget;
pub use hunt_redis::connection::redact_url;

use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;

/// SQLite's `synchronous` setting for append commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// A commit survives a process crash; the relay fsyncs the log before anything is
    /// published, so what Redis has seen also survives a power loss.
    #[default]
    Normal,
    /// Every commit is fsynced before `append` returns: slower, survives power loss on its own.
    Full,
}

impl Synchronous {
    /// The value SQLite reports for `PRAGMA synchronous`.
    pub(crate) fn pragma_value(self) -> i64 {
        match self {
            Self::Normal => 1,
            Self::Full => 2,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// How a [`crate::ShardWriter`] is opened. Build it with [`WriterConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The shard's SQLite file. Its folder must exist and be on a local filesystem.
    pub path: PathBuf,
    /// The shard's id; a file belongs to one shard for its whole life.
    pub shard_id: u32,
    /// Redis to relay to (`redis://[:password@]host:port/`). `None` keeps the writer local: events
    /// are committed and wait in the outbox until a writer with Redis opens the file.
    pub redis_url: Option<String>,
    /// Whether `redis_url` is a comma-separated list of Redis Cluster seed node URLs rather than
    /// one Redis.
    pub redis_cluster: bool,
    /// The authorities (a PEM file) that sign the certificates of `rediss://` (TLS) Redis
    /// servers; `None` trusts the system's (or `SSL_CERT_FILE`'s).
    pub redis_ca_file: Option<PathBuf>,
    /// `synchronous` for append commits.
    pub synchronous: Synchronous,
    /// Appends waiting for group commit; past it `append` waits and `try_append` is refused.
    pub queue_capacity: usize,
    /// Appends committed in one transaction at most.
    pub max_commit_batch: usize,
    /// How long SQLite waits for a lock held by another connection of this writer.
    pub busy_timeout: Duration,
    /// `MAXLEN ~` of every tier stream.
    pub stream_cap: u64,
    /// Events per tier in one relay publish at most.
    pub relay_batch: usize,
    /// Flow control: events of a tier the relay publishes past the router's applied watermark
    /// at most. A router that falls behind then leaves events waiting in the shard file, not in a
    /// stream whose cap would trim them unread (which costs re-sends). Keep the number of shards
    /// times this below `stream_cap`.
    pub publish_window: u64,
    /// After a publish round that sent less than a full batch, the relay waits this long before
    /// the next one, so a busy shard sends fewer, larger batches (and fsyncs its log less often).
    /// The first event after a quiet spell goes out at once. Zero turns it off.
    pub publish_linger: Duration,
    /// How often the relay reads the router's applied watermarks and replay requests.
    pub ack_poll_interval: Duration,
    /// How long the applied watermark may stay below what was published before the relay
    /// re-sends one batch above the watermark. Doubles after each fruitless re-send, up to
    /// `max_redelivery_timeout`, and resets when the watermark moves.
    pub redelivery_timeout: Duration,
    /// The cap of the redelivery back-off.
    pub max_redelivery_timeout: Duration,
    /// The first wait before reconnecting to Redis; doubles per failure, with jitter.
    pub reconnect_backoff: Duration,
    /// The cap of the reconnect back-off.
    pub max_reconnect_backoff: Duration,
    /// How long a connection attempt to Redis may take.
    pub redis_connect_timeout: Duration,
    /// How long one Redis command may take.
    pub redis_response_timeout: Duration,
    /// Acknowledged rows are kept this long after they were committed, for replays.
    pub retention: Duration,
    /// How often acknowledged, expired rows are pruned.
    pub prune_interval: Duration,
    /// Rows deleted per pruning transaction at most (keeps each stall of the commit path short).
    pub prune_batch: usize,
    /// How often a background connection copies the log into the database file
    /// (`wal_checkpoint(PASSIVE)`), so the commit thread rarely has to.
    pub checkpoint_interval: Duration,
    /// How long `shutdown` may spend publishing what is committed before it closes.
    pub shutdown_grace: Duration,
    /// How long one claim, token check, wave opening or compensation call may take, connecting
    /// included; past it the call answers `ClaimError::Unreachable` instead of waiting on.
    pub claim_timeout: Duration,
    /// The shards that take part in claims (clues and chests) on this Redis, this one included:
    /// after Redis loses its data, no claim is answered until this many shards have restored
    /// the decisions their files record (see [`crate::ShardWriter::claim_clue`]). Every writer
    /// of a hunt should be given the same count; the largest one given counts.
    pub claim_shards: u32,
    /// Redis replicas that must acknowledge a claim's answer (and a compensation) before it is
    /// told (`WAIT`), so a failover to one of them keeps every decision anyone has seen. 0 (no
    /// replicas, or none waited for) answers as soon as the primary decides.
    pub claim_replicas: u32,
    /// How often the writer reads the claims gate, to notice a Redis that lost its data even
    /// when no claim is made here, and restore this shard's decisions.
    pub claims_poll: Duration,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
}

impl WriterConfig {
    /// A self-healing connection to `client` for request/response calls (claims, the inbox),
    /// opened within the configured connect timeout and named by the redacted URL.
    pub(crate) fn reconnecting(&self, client: RedisTarget) -> hunt_redis::Reconnecting {
        hunt_redis::Reconnecting::new(
            client,
            self.redis_connect_timeout,
            redact_url(self.redis_url.as_deref().unwrap_or_default()),
        )
    }

    /// A configuration with every default: local file `path`, shard `shard_id`, no Redis.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>, shard_id: u32) -> Self {
        Self {
            path: path.into(),
            shard_id,
            redis_url: None,
            redis_cluster: false,
            redis_ca_file: None,
            synchronous: Synchronous::Normal,
            queue_capacity: 65_536,
            max_commit_batch: 4_096,
            busy_timeout: Duration::from_secs(5),
            stream_cap: 100_000,
            relay_batch: 2_000,
            publish_window: 2_000,
            publish_linger: Duration::from_millis(5),
            ack_poll_interval: Duration::from_millis(50),
            redelivery_timeout: Duration::from_secs(10),
            max_redelivery_timeout: Duration::from_secs(300),
            reconnect_backoff: Duration::from_millis(100),
            max_reconnect_backoff: Duration::from_secs(10),
            redis_connect_timeout: Duration::from_secs(2),
            redis_response_timeout: Duration::from_secs(5),
            retention: Duration::from_secs(24 * 60 * 60),
            prune_interval: Duration::from_secs(60),
            prune_batch: 10_000,
            checkpoint_interval: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(10),
            claim_timeout: Duration::from_secs(1),
            claim_shards: 1,
            claim_replicas: 0,
            claims_poll: Duration::from_secs(1),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same configuration relaying to `redis_url`.
    #[must_use]
    pub fn with_redis(mut self, redis_url: impl Into<String>) -> Self {
        self.redis_url = Some(redis_url.into());
        self.redis_cluster = false;
        self
    }

    /// The same configuration relaying to the Redis Cluster found through `seeds`: one or more
    /// node URLs, comma-separated.
    #[must_use]
    pub fn with_redis_cluster(mut self, seeds: impl Into<String>) -> Self {
        self.redis_url = Some(seeds.into());
        self.redis_cluster = true;
        self
    }

    /// Checks every bound.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(field: &'static str, value: usize) -> Result<(), ConfigError> {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    field,
                    reason: "must be at least 1".into(),
                });
            }
            Ok(())
        }
        fn nonzero(field: &'static str, value: Duration) -> Result<(), ConfigError> {
            if value.is_zero() {
                return Err(ConfigError::Invalid {
                    field,
                    reason: "must be longer than zero".into(),
                });
            }
            Ok(())
        }
        positive("queue_capacity", self.queue_capacity)?;
        positive("max_commit_batch", self.max_commit_batch)?;
        positive("relay_batch", self.relay_batch)?;
        positive(
            "publish_window",
            usize::try_from(self.publish_window).unwrap_or(usize::MAX),
        )?;
        positive("prune_batch", self.prune_batch)?;
        if self.queue_capacity > 1 << 24 {
            return Err(ConfigError::Invalid {
                field: "queue_capacity",
                reason: "must be at most 16777216".into(),
            });
        }
        if self.stream_cap < 100 {
            return Err(ConfigError::Invalid {
                field: "stream_cap",
                reason: "must be at least 100".into(),
            });
        }
        if self.publish_linger > Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                field: "publish_linger",
                reason: "must be at most 1 s".into(),
            });
        }
        nonzero("ack_poll_interval", self.ack_poll_interval)?;
        nonzero("redelivery_timeout", self.redelivery_timeout)?;
        nonzero("reconnect_backoff", self.reconnect_backoff)?;
        nonzero("redis_connect_timeout", self.redis_connect_timeout)?;
        nonzero("redis_response_timeout", self.redis_response_timeout)?;
        nonzero("prune_interval", self.prune_interval)?;
        nonzero("checkpoint_interval", self.checkpoint_interval)?;
        nonzero("claim_timeout", self.claim_timeout)?;
        nonzero("claims_poll", self.claims_poll)?;
        positive("claim_shards", self.claim_shards as usize)?;
        if self.max_redelivery_timeout < self.redelivery_timeout {
            return Err(ConfigError::Invalid {
                field: "max_redelivery_timeout",
                reason: "must not be shorter than redelivery_timeout".into(),
            });
        }
        if self.max_reconnect_backoff < self.reconnect_backoff {
            return Err(ConfigError::Invalid {
                field: "max_reconnect_backoff",
                reason: "must not be shorter than reconnect_backoff".into(),
            });
        }
        if let Some(url) = &self.redis_url {
            let ca = self.redis_ca_file.as_deref();
            if let Some(ca) = ca {
                hunt_redis::connection::check_ca_file(url, ca).map_err(|reason| {
                    ConfigError::Invalid {
                        field: "redis_ca_file",
                        reason,
                    }
                })?;
            }
            RedisTarget::open_with_ca(url, self.redis_cluster, ca).map_err(|err| {
                ConfigError::Invalid {
                    field: "redis_url",
                    reason: format!("{}: {err}", redact_url(url)),
                }
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(
            redact_url("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("rediss://app:s3cret@host/"),
            "rediss://app:***@host/"
        );
        assert_eq!(redact_url("redis://token@host/"), "redis://***@host/");
        assert_eq!(redact_url("redis://host:1/"), "redis://host:1/");
        assert_eq!(redact_url("garbage"), "<redis url>");
    }

    #[test]
    fn defaults_are_valid_and_bounds_are_checked() {
        let config = WriterConfig::new("/tmp/x.sqlite", 1);
        assert!(config.validate().is_ok());
        let mut bad = config.clone();
        bad.queue_capacity = 0;
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                field: "queue_capacity",
                ..
            })
        ));
        let mut bad = config.clone();
        bad.claim_timeout = Duration::ZERO;
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                field: "claim_timeout",
                ..
            })
        ));
        let bad = config.with_redis("nonsense://:pw@x");
        let err = bad
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("redis_url"), "{err}");
        assert!(!err.contains("pw"), "{err}");
    }
}
