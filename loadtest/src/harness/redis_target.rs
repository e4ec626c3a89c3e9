//! The Redis a run talks to: one given by URL, or a private `redis-server` child.

use anyhow::Context;
use hunt_testkit::RedisServer;

/// The `--redis-url` option of a command that starts a private Redis when none is given.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RedisUrl {
    /// Redis to use; without it a private redis-server is started on a free port.
    #[arg(long, env = "HUNT_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
}

impl RedisUrl {
    /// The Redis given, or a private one started now (see [`RedisTarget::new`]).
    ///
    /// # Errors
    /// When a private `redis-server` cannot start.
    pub(crate) fn start(&self) -> anyhow::Result<RedisTarget> {
        RedisTarget::new(self.redis_url.clone())
    }

    /// The Redis given, or a private one started now in a process group of its own (see
    /// [`RedisTarget::for_ctrl_c`]).
    ///
    /// # Errors
    /// When a private `redis-server` cannot start.
    pub(crate) fn start_for_ctrl_c(&self) -> anyhow::Result<RedisTarget> {
        RedisTarget::for_ctrl_c(self.redis_url.clone())
    }
}

/// How long a measuring connection waits for a reply. A slow reply is a measurement, not an
/// error: the naive baseline in particular is expected to fall seconds behind on a loaded
/// machine, and the client's default (half a second) would end the run instead of reporting it.
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long connecting may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A new multiplexed connection of `client`, with the timeouts of a measuring tool.
///
/// # Errors
/// When Redis cannot be reached.
pub(crate) async fn connect(
    client: &redis::Client,
) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECT_TIMEOUT));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// A Redis URL, and the private server behind it when this process started one.
pub(crate) struct RedisTarget {
    pub(crate) url: String,
    server: Option<RedisServer>,
}

impl RedisTarget {
    /// Uses `url`, or starts a private `redis-server` on a free loopback port.
    pub(crate) fn new(url: Option<String>) -> anyhow::Result<Self> {
        Self::start(url, RedisServer::start)
    }

    /// [`RedisTarget::new`] for a command that stops on Ctrl-C and then shuts down in order: the
    /// private server runs in a process group of its own, so the terminal's Ctrl-C does not stop
    /// it before the writers and the router are done with it.
    pub(crate) fn for_ctrl_c(url: Option<String>) -> anyhow::Result<Self> {
        Self::start(url, RedisServer::start_own_group)
    }

    /// Whether this process started the server (so nothing else uses it).
    pub(crate) fn is_private(&self) -> bool {
        self.server.is_some()
    }

    /// Restarts the private server without its data (killed, files deleted, started again on
    /// the same port), like a Redis that lost everything. False, with nothing done, when the
    /// Redis was given by URL: this process does not own it.
    ///
    /// # Errors
    /// When the server cannot be started again.
    pub(crate) fn restart_empty(&mut self) -> anyhow::Result<bool> {
        match &mut self.server {
            Some(server) => {
                server
                    .restart(false)
                    .context("restarting the private redis-server without its data")?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// A client of this Redis.
    ///
    /// # Errors
    /// When the URL is not a Redis URL.
    pub(crate) fn client(&self) -> anyhow::Result<redis::Client> {
        Ok(redis::Client::open(self.url.as_str())?)
    }

    /// A new multiplexed connection to this Redis.
    ///
    /// # Errors
    /// When the URL is not a Redis URL or Redis cannot be reached.
    pub(crate) async fn connect(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        connect(&self.client()?).await
    }

    fn start(
        url: Option<String>,
        start: fn() -> Result<RedisServer, hunt_testkit::TestkitError>,
    ) -> anyhow::Result<Self> {
        match url {
            Some(url) => Ok(Self { url, server: None }),
            None => {
                let server = start().context("starting a private redis-server")?;
                eprintln!(
                    "started a private redis-server on 127.0.0.1:{}",
                    server.port()
                );
                Ok(Self {
                    url: server.url(),
                    server: Some(server),
                })
            }
        }
    }
}
