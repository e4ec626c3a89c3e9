//! Shared helpers: a router with short timers, a gRPC client, polling with a deadline.

use std::time::Duration;

use hunt_testkit::{RedisServer, printed_addresses};
use leaderboard_proto::v1::leaderboard_service_client::LeaderboardServiceClient;
use tier_router::{App, AppHandle, RouterConfig};
use tonic::transport::Channel;

pub(crate) use hunt_testkit::{DEADLINE, eventually, score};

/// Starts a router on a free port with short timers.
pub(crate) async fn router(redis: &RedisServer) -> AppHandle {
    router_with(redis, |_| {}).await
}

/// Starts a router on free ports with short timers and `tweak` applied to its configuration.
pub(crate) async fn router_with(
    redis: &RedisServer,
    tweak: impl FnOnce(&mut RouterConfig),
) -> AppHandle {
    let mut config = RouterConfig::new(redis.url());
    config.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.lease_ttl = Duration::from_millis(1_000);
    config.read_block = Duration::from_millis(50);
    config.follower_refresh = Duration::from_millis(50);
    config.ws_coalesce = Duration::from_millis(20);
    tweak(&mut config);
    App::build(config).await.expect("router builds").spawn()
}

/// A shard writer of shard `shard` with its file in `dir`, relaying to `redis`.
pub(crate) async fn writer(
    redis: &RedisServer,
    dir: &std::path::Path,
    shard: u32,
) -> shard_writer::ShardWriter {
    writer_with(redis, dir, shard, |config| config).await
}

/// A shard writer like [`writer`], with `tweak` applied to its configuration.
pub(crate) async fn writer_with(
    redis: &RedisServer,
    dir: &std::path::Path,
    shard: u32,
    tweak: impl FnOnce(shard_writer::WriterConfig) -> shard_writer::WriterConfig,
) -> shard_writer::ShardWriter {
    shard_writer::ShardWriter::open(tweak(
        shard_writer::WriterConfig::new(dir.join(format!("shard-{shard}.sqlite")), shard)
            .with_redis(redis.url()),
    ))
    .await
    .expect("writer")
}

/// A gRPC client of `router`.
pub(crate) async fn client(router: &AppHandle) -> LeaderboardServiceClient<Channel> {
    LeaderboardServiceClient::new(hunt_testkit::grpc_channel(router.grpc_addr()).await)
}

/// A `tier-router` process, killed on drop; its log goes to a file the test can read.
pub(crate) struct RouterProcess {
    child: std::process::Child,
    /// Where its gRPC listens.
    pub(crate) grpc_addr: std::net::SocketAddr,
    /// Where its HTTP listens.
    pub(crate) http_addr: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl RouterProcess {
    /// Starts the router binary against `redis` with short timers, logging into `dir`.
    pub(crate) fn start(redis: &RedisServer, dir: &std::path::Path, name: &str) -> Self {
        Self::start_with(redis, dir, name, &[])
    }

    /// Starts the router binary like [`RouterProcess::start`], with `extra` arguments.
    pub(crate) fn start_with(
        redis: &RedisServer,
        dir: &std::path::Path,
        name: &str,
        extra: &[&str],
    ) -> Self {
        Self::start_at(&redis.url(), dir, name, extra)
    }

    /// Starts the router binary like [`RouterProcess::start_with`], against the Redis at `url`
    /// (with `--redis-cluster` in `extra`, a cluster's seed list).
    pub(crate) fn start_at(url: &str, dir: &std::path::Path, name: &str, extra: &[&str]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("router log file");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tier-router"))
            .args([
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--lease-ttl-ms",
                "1000",
                "--read-block-ms",
                "50",
                "--follower-refresh-ms",
                "50",
                "--router-id",
                name,
                "--redis-url",
            ])
            .arg(url)
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn tier-router");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let [grpc_addr, http_addr] = printed_addresses(&mut stdout, &["grpc", "http"])[..] else {
            unreachable!("one address per name")
        };
        Self {
            child,
            grpc_addr,
            http_addr,
            log,
        }
    }

    /// Its log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to [`DEADLINE`]) for the process to end by itself, and returns how it ended.
    pub(crate) async fn exited(mut self) -> std::process::ExitStatus {
        eventually("the router process exits", || {
            let status = self.child.try_wait().expect("try_wait");
            async move { status }
        })
        .await
    }

    /// SIGKILL, and reap.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).expect("signal the router");
    }

    /// SIGSTOP: frozen with its connections open.
    pub(crate) fn pause(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// SIGCONT.
    pub(crate) fn resume(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    /// SIGTERM, and the exit status once it has drained.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        self.child.wait().expect("wait")
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Per tier: player → total.
pub(crate) type Totals = std::collections::BTreeMap<u32, std::collections::BTreeMap<String, i64>>;

/// Shard writers appending a steady hunt in the background, remembering what they appended.
pub(crate) struct Hunt {
    pub(crate) writers: Vec<shard_writer::ShardWriter>,
    totals: std::sync::Arc<std::sync::Mutex<Totals>>,
    appended: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Hunt {
    /// Opens `shards` writers in `dir` (with `tweak` applied to each config) and starts them
    /// appending points over every tier.
    pub(crate) async fn start(
        redis: &RedisServer,
        dir: &std::path::Path,
        shards: u32,
        tweak: impl Fn(shard_writer::WriterConfig) -> shard_writer::WriterConfig,
    ) -> Self {
        use rand::{Rng, SeedableRng};
        let mut hunt = Self {
            writers: Vec::new(),
            totals: std::sync::Arc::default(),
            appended: std::sync::Arc::default(),
            stop: tokio_util::sync::CancellationToken::new(),
            tasks: tokio::task::JoinSet::new(),
        };
        for shard in 1..=shards {
            let mut config =
                shard_writer::WriterConfig::new(dir.join(format!("shard-{shard}.sqlite")), shard)
                    .with_redis(redis.url());
            config.redelivery_timeout = Duration::from_millis(500);
            config.ack_poll_interval = Duration::from_millis(20);
            let writer = shard_writer::ShardWriter::open(tweak(config))
                .await
                .expect("writer");
            hunt.writers.push(writer.clone());
            let (totals, appended, stop) = (
                hunt.totals.clone(),
                hunt.appended.clone(),
                hunt.stop.clone(),
            );
            hunt.tasks.spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(shard));
                while !stop.is_cancelled() {
                    let tier = leaderboard_proto::rewards::TIERS
                        [rng.random_range(0..leaderboard_proto::rewards::TIERS.len())]
                    .id;
                    let player = format!("p{}", rng.random_range(0..40));
                    let points = rng.random_range(1..100);
                    writer
                        .append(score(tier, &player, points))
                        .await
                        .expect("append");
                    *totals
                        .lock()
                        .expect("totals")
                        .entry(tier)
                        .or_default()
                        .entry(player)
                        .or_default() += points;
                    appended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // A steady hunt, not a flood: the faults land among many small batches.
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
            });
        }
        hunt
    }

    /// Events appended so far.
    pub(crate) fn appended(&self) -> u64 {
        self.appended.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `more` events beyond the current count have been appended.
    pub(crate) async fn append_more(&self, more: u64) {
        let target = self.appended() + more;
        eventually("more appends", || async {
            (self.appended() >= target).then_some(())
        })
        .await;
    }

    /// Stops appending, checks every tier is exact (see [`assert_exactly_once`]) and shuts the
    /// writers down.
    pub(crate) async fn finish(self, redis: &RedisServer) {
        let (writers, totals) = self.stop().await;
        assert_exactly_once(redis, &writers, &totals).await;
        for writer in writers {
            writer.shutdown().await.expect("shutdown");
        }
    }

    /// Stops appending and returns what was appended.
    pub(crate) async fn stop(mut self) -> (Vec<shard_writer::ShardWriter>, Totals) {
        self.stop.cancel();
        while let Some(done) = self.tasks.join_next().await {
            done.expect("appender");
        }
        let totals = self.totals.lock().expect("totals").clone();
        (self.writers, totals)
    }
}

/// Waits until every tier's board in Redis equals `totals` and every shard's applied mark equals
/// its last committed `tier_seq`: nothing missing, nothing applied twice.
pub(crate) async fn assert_exactly_once(
    redis: &RedisServer,
    writers: &[shard_writer::ShardWriter],
    totals: &Totals,
) {
    let client = redis.client();
    eventually("every tier's board equals the appended totals", || {
        let client = client.clone();
        async move {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            for tier in leaderboard_proto::rewards::tier_ids() {
                let board = tier_router::cache::read_range(&mut conn, tier, 0, 10_000)
                    .await
                    .ok()?;
                let got: std::collections::BTreeMap<String, i64> =
                    board.into_iter().map(|e| (e.player_id, e.score)).collect();
                if got != totals.get(&tier).cloned().unwrap_or_default() {
                    return None;
                }
                for writer in writers {
                    let applied: Option<u64> = redis::cmd("HGET")
                        .arg(leaderboard_proto::keys::tier_applied(tier))
                        .arg(leaderboard_proto::keys::shard_field(writer.shard_id()))
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    if applied.unwrap_or(0) != writer.committed_tier_seq(tier) {
                        return None;
                    }
                }
            }
            Some(())
        }
    })
    .await;
}

pub(crate) use hunt_testkit::http_get;
