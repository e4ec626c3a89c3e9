//! The router binary and a shard writer reaching Redis over TLS as an ACL user, as with a
//! managed Redis: `rediss://user:password@host:port/` and the authority's certificate as a CA
//! file. Events flow end to end, and the password appears in no log line.

use hunt_testkit::tls::{PASSWORD, TlsRedis};
use leaderboard_proto::v1::GetTopRequest;
use leaderboard_proto::v1::leaderboard_service_client::LeaderboardServiceClient;

use crate::support::{RouterProcess, eventually, score, writer_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_and_writer_reach_redis_over_tls_as_an_acl_user() {
    let redis = TlsRedis::start().expect("a TLS redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = redis.ca_file();
    let ca_arg = ca.display().to_string();
    let router = RouterProcess::start_at(
        &redis.url(),
        dir.path(),
        "tls",
        &["--redis-ca-file", &ca_arg],
    );
    let writer = writer_with(&redis.server, dir.path(), 3, |config| {
        let mut config = config.with_redis(redis.url());
        config.redis_ca_file = Some(ca.clone());
        config
    })
    .await;
    writer.append(score(1, "ada", 42)).await.expect("append");
    let grpc = LeaderboardServiceClient::new(hunt_testkit::grpc_channel(router.grpc_addr).await);
    eventually("ada on tier 1's board, through Redis over TLS", || {
        let mut grpc = grpc.clone();
        async move {
            let top = grpc
                .get_top(GetTopRequest {
                    tier: 1,
                    offset: 0,
                    limit: 10,
                })
                .await
                .ok()?
                .into_inner();
            top.entries
                .iter()
                .any(|entry| entry.player_id == "ada" && entry.score == 42)
                .then_some(())
        }
    })
    .await;
    writer.shutdown().await.expect("shutdown");
    let log = router.log();
    assert!(!log.contains(PASSWORD), "{log}");
    assert!(router.terminate().success());

    // The same router without the authority cannot verify the server: it says so and stops.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tier-router"))
        .args(["--redis-url", &redis.url(), "--grpc-addr", "127.0.0.1:0"])
        .args(["--http-addr", "127.0.0.1:0", "--admin-addr", "off"])
        .env_remove("SSL_CERT_FILE")
        .output()
        .expect("run tier-router");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    assert!(stderr.contains("rediss://hunt:***@127.0.0.1"), "{stderr}");
}
