//! The pipeline under test: shard writers, each on a file of its own, and a tier router, either
//! started in this process or already running elsewhere.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use shard_writer::{ShardWriter, WriterConfig};
use tempfile::TempDir;
use tier_router::{App, AppHandle, RouterConfig, StartError};

/// Shard writers on files of their own in a temporary folder, removed on drop.
pub(crate) struct Shards {
    dir: TempDir,
    /// The writers, in the order of their ids.
    pub(crate) writers: Vec<ShardWriter>,
    /// `(shard id, path)` of every writer's file, for reading the logs back.
    pub(crate) files: Vec<(u32, PathBuf)>,
}

impl Shards {
    /// Opens shards `ids`, shard `id` on `shard-{id}.sqlite`, each relaying to `redis_url`.
    ///
    /// # Errors
    /// When the folder cannot be made or a writer cannot open.
    pub(crate) async fn open(redis_url: &str, ids: RangeInclusive<u32>) -> anyhow::Result<Self> {
        Self::open_with(redis_url, ids, |config| config).await
    }

    /// [`Shards::open`], each writer's configuration passed through `tweak` first.
    ///
    /// # Errors
    /// When the folder cannot be made or a writer cannot open.
    pub(crate) async fn open_with(
        redis_url: &str,
        ids: RangeInclusive<u32>,
        tweak: impl Fn(WriterConfig) -> WriterConfig,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a folder for the shard files")?;
        let (mut writers, mut files) = (Vec::new(), Vec::new());
        for shard in ids {
            let path = dir.path().join(format!("shard-{shard}.sqlite"));
            let config = tweak(WriterConfig::new(&path, shard).with_redis(redis_url));
            let writer = ShardWriter::open(config)
                .await
                .with_context(|| format!("opening shard {shard}"))?;
            files.push((shard, path));
            writers.push(writer);
        }
        Ok(Self {
            dir,
            writers,
            files,
        })
    }

    /// Shuts every writer down, in order, once its appends are committed.
    ///
    /// # Errors
    /// The first writer that fails to shut down.
    pub(crate) async fn shutdown(&self) -> anyhow::Result<()> {
        for writer in &self.writers {
            writer.shutdown().await?;
        }
        Ok(())
    }

    /// The folder holding the shard files.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A router config for `redis_url` with its gRPC and HTTP on free loopback ports.
///
/// # Errors
/// Never in practice: the addresses are constants.
pub(crate) fn loopback_router(redis_url: &str) -> anyhow::Result<RouterConfig> {
    let mut config = RouterConfig::new(redis_url.to_owned());
    config.grpc_addr = "127.0.0.1:0".parse()?;
    config.http_addr = "127.0.0.1:0".parse()?;
    Ok(config)
}

/// The tier router a command talks to, and its handle when this process started it.
pub(crate) struct Router {
    /// Where its gRPC listens.
    pub(crate) grpc: SocketAddr,
    /// Where its HTTP (`/ws`, `/metrics`) listens.
    pub(crate) http: SocketAddr,
    own: Option<AppHandle>,
}

impl Router {
    /// A router already running at `grpc` and `http`; this process does not stop it.
    pub(crate) fn running(grpc: SocketAddr, http: SocketAddr) -> Self {
        Self {
            grpc,
            http,
            own: None,
        }
    }

    /// Builds and spawns a router in this process.
    ///
    /// # Errors
    /// When it cannot bind or reach its Redis.
    pub(crate) async fn embedded(config: RouterConfig) -> Result<Self, StartError> {
        let app = App::build(config).await?;
        let (grpc, http) = (app.grpc_addr(), app.http_addr());
        Ok(Self {
            grpc,
            http,
            own: Some(app.spawn()),
        })
    }

    /// Stops the router if this process started it; false when it did not stop within `grace`.
    pub(crate) async fn shutdown(self, grace: Duration) -> bool {
        match self.own {
            Some(own) => own.shutdown(grace).await,
            None => true,
        }
    }
}
