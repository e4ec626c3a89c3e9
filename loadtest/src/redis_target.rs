//! The Redis a run talks to: one given by URL, or a private `redis-server` child.

use anyhow::Context;
use leaderboard_proto::testkit::RedisServer;

/// A Redis URL, and the private server behind it when this process started one.
pub(crate) struct RedisTarget {
    pub(crate) url: String,
    _server: Option<RedisServer>,
}

impl RedisTarget {
    /// Uses `url`, or starts a private `redis-server` on a free loopback port.
    pub(crate) fn new(url: Option<String>) -> anyhow::Result<Self> {
        match url {
            Some(url) => Ok(Self { url, _server: None }),
            None => {
                let server = RedisServer::start().context("starting a private redis-server")?;
                eprintln!(
                    "started a private redis-server on 127.0.0.1:{}",
                    server.port()
                );
                Ok(Self {
                    url: server.url(),
                    _server: Some(server),
                })
            }
        }
    }
}
