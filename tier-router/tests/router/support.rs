//! Shared helpers: a router with short timers, a gRPC client, polling with a deadline.

use std::future::Future;
use std::time::Duration;

use leaderboard_proto::testkit::RedisServer;
use leaderboard_proto::v1::leaderboard_client::LeaderboardClient;
use tier_router::{App, AppHandle, RouterConfig};
use tonic::transport::Channel;

/// How long any condition in these tests may take to become true.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// Starts a router on a free port with short timers.
pub(crate) async fn router(redis: &RedisServer) -> AppHandle {
    let mut config = RouterConfig::new(redis.url());
    config.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    config.lease_ttl = Duration::from_millis(1_000);
    config.read_block = Duration::from_millis(50);
    config.follower_refresh = Duration::from_millis(50);
    App::build(config).await.expect("router builds").spawn()
}

/// A gRPC client of `router`.
pub(crate) async fn client(router: &AppHandle) -> LeaderboardClient<Channel> {
    LeaderboardClient::connect(format!("http://{}", router.grpc_addr()))
        .await
        .expect("gRPC connect")
}

/// Polls `check` until it returns `Some`, failing the test after [`DEADLINE`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
