//! Redis over TLS with an ACL user, as managed Redis services are reached: `rediss://` URLs,
//! the server's authority given as a CA file, the username and password from the URL.

use std::time::Duration;

use hunt_redis::{Connection, RedisTarget, Timeouts};
use hunt_testkit::tls::{PASSWORD, TlsCluster, TlsRedis, USER};
use leaderboard_proto::functions::{LeaseAcquire, LeaseAcquired};

const TIMEOUTS: Timeouts = Timeouts {
    connect: Some(Duration::from_secs(5)),
    response: Some(Duration::from_secs(5)),
};

async fn connect(url: &str, ca: Option<&std::path::Path>) -> redis::RedisResult<Connection> {
    RedisTarget::open_with_ca(url, false, ca)?
        .connect(TIMEOUTS)
        .await
}

/// Loads the library and takes a lease in each of `tiers` through `conn`, and checks that the
/// connection is the ACL user's.
async fn serves_the_acl_user(conn: &mut Connection, tiers: impl IntoIterator<Item = u32>) {
    hunt_redis::ensure_loaded(conn)
        .await
        .expect("library loads over TLS");
    for tier in tiers {
        let acquire = LeaseAcquire::new(tier, "router-a", Duration::from_secs(5));
        assert!(matches!(
            hunt_redis::call(conn, &acquire).await.expect("lease"),
            LeaseAcquired::Held(_)
        ));
    }
    let whoami: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(conn)
        .await
        .expect("whoami");
    assert_eq!(whoami, USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_ca_file_and_an_acl_user_loads_and_calls_the_library() {
    let redis = TlsRedis::start().expect("a TLS redis-server");
    let ca = redis.ca_file();
    let mut conn = connect(&redis.url(), Some(&ca))
        .await
        .expect("TLS connection as the ACL user");
    serves_the_acl_user(&mut conn, [1]).await;

    // The system's authorities do not know the test's: refused.
    assert!(connect(&redis.url(), None).await.is_err());
    // The username counts: the same password for the default user is refused.
    let tls = redis.tls_port();
    let default_user = format!("rediss://:{PASSWORD}@127.0.0.1:{tls}/");
    assert!(connect(&default_user, Some(&ca)).await.is_err());
    let wrong = format!("rediss://{USER}:not-it@127.0.0.1:{tls}/");
    assert!(connect(&wrong, Some(&ca)).await.is_err());
    // Plain text to the TLS port gets nowhere, and a CA file asks for a rediss:// URL.
    let plain = format!("redis://{USER}:{PASSWORD}@127.0.0.1:{tls}/");
    assert!(connect(&plain, None).await.is_err());
    assert!(RedisTarget::open_with_ca(&plain, false, Some(&ca)).is_err());
    // A CA file that cannot be read is a configuration error, said before connecting.
    let missing = ca.with_file_name("missing.pem");
    let error = RedisTarget::open_with_ca(&redis.url(), false, Some(&missing))
        .expect_err("unreadable CA file");
    assert!(error.to_string().contains("missing.pem"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_sentinel_with_a_ca_file_verifies_the_sentinel_and_the_primary() {
    let redis = TlsRedis::start().expect("a TLS redis-server");
    let sentinel = redis.start_sentinel().expect("a TLS sentinel");
    let ca = redis.ca_file();
    let mut conn = connect(&sentinel.url(), Some(&ca))
        .await
        .expect("the primary the sentinel names, over TLS as the ACL user");
    serves_the_acl_user(&mut conn, [2]).await;
    // The connection is the primary's, not the sentinel's: the library answers there.
    let role: Vec<redis::Value> = redis::cmd("ROLE")
        .query_async(&mut conn)
        .await
        .expect("role");
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec()))
    );

    // Without the authority the sentinel's certificate is not trusted.
    assert!(connect(&sentinel.url(), None).await.is_err());
    // A CA file does not apply to a plain Sentinel URL.
    let plain = sentinel
        .url()
        .replacen("rediss+sentinel", "redis+sentinel", 1);
    let error = RedisTarget::open_with_ca(&plain, false, Some(&ca)).expect_err("plain Sentinel");
    assert!(error.to_string().contains("TLS URLs only"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_with_a_ca_file_and_an_acl_user_serves_every_slot() {
    let tls = TlsCluster::start().expect("a TLS Redis Cluster");
    let ca = tls.ca_file();
    let target = RedisTarget::open_with_ca(&tls.urls(), true, Some(&ca)).expect("seed list");
    assert!(target.is_cluster());
    let mut conn = target
        .connect(TIMEOUTS)
        .await
        .expect("TLS cluster connection as the ACL user");
    // Every tier's keys live in a slot of their own: the calls reach each primary over TLS.
    serves_the_acl_user(&mut conn, leaderboard_proto::rewards::tier_ids()).await;
    // The system's authorities do not know the test's: refused.
    let untrusted = RedisTarget::open_with_ca(&tls.urls(), true, None).expect("seed list");
    assert!(untrusted.connect(TIMEOUTS).await.is_err());
}
