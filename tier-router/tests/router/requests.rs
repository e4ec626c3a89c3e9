//! Bad requests get the status codes the design lists.

use std::time::Duration;

use hunt_testkit::RedisServer;
use leaderboard_proto::v1::{GetPlayerRequest, GetTopRequest, ListTiersRequest, WatchRequest};
use tonic::Code;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::{client, eventually, http_get, router, score};

/// The status code of a refused call.
fn code<T>(result: Result<T, tonic::Status>) -> Option<Code> {
    result.err().map(|status| status.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_status_codes() {
    let redis = RedisServer::start().expect("redis-server");
    let router = router(&redis).await;
    let mut grpc = client(&router).await;
    let tiers = grpc
        .list_tiers(ListTiersRequest {})
        .await
        .expect("ListTiers")
        .into_inner()
        .tiers;
    assert_eq!(tiers.len(), leaderboard_proto::rewards::TIERS.len());

    let top = |tier, offset, limit| GetTopRequest {
        tier,
        offset,
        limit,
    };
    assert_eq!(
        code(grpc.get_top(top(999, 0, 10)).await),
        Some(Code::NotFound)
    );
    for limit in [1_001, 1_000_000] {
        assert_eq!(
            code(grpc.get_top(top(1, 0, limit)).await),
            Some(Code::InvalidArgument),
            "limit {limit}"
        );
    }
    let player = |player_id: &str, around| GetPlayerRequest {
        tier: 1,
        player_id: player_id.to_owned(),
        around,
    };
    assert_eq!(
        code(grpc.get_player(player("", 0)).await),
        Some(Code::InvalidArgument)
    );
    assert_eq!(
        code(grpc.get_player(player(&"x".repeat(65), 0)).await),
        Some(Code::InvalidArgument)
    );
    assert_eq!(
        code(grpc.get_player(player("ada", 51)).await),
        Some(Code::InvalidArgument)
    );
    assert_eq!(
        code(grpc.get_player(player("nobody", 0)).await),
        Some(Code::NotFound)
    );
    assert_eq!(
        code(
            grpc.watch(WatchRequest {
                tier: 0,
                ..WatchRequest::default()
            })
            .await
        ),
        Some(Code::NotFound)
    );
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_top_limit_zero_means_the_default_of_a_hundred() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    let writer = crate::support::writer(&redis, dir.path(), 2).await;
    let appends = (0..150).map(|i| writer.append(score(3, &format!("p{i:03}"), 1 + i)));
    for appended in futures_util::future::join_all(appends).await {
        appended.expect("append");
    }
    let mut grpc = client(&router).await;
    let top = |offset, limit| GetTopRequest {
        tier: 3,
        offset,
        limit,
    };
    eventually("all 150 players on the board", || {
        let mut grpc = grpc.clone();
        async move {
            let page = grpc.get_top(top(0, 1_000)).await.ok()?.into_inner();
            (page.entries.len() == 150).then_some(())
        }
    })
    .await;
    let page = grpc.get_top(top(0, 0)).await.expect("GetTop").into_inner();
    assert_eq!(page.entries.len(), 100, "limit 0 is the default");
    assert_eq!(page.entries[0].player_id, "p149");
    // Past the cached top too: limit 0 from offset 120 is the 30 rows left.
    let page = grpc
        .get_top(top(120, 0))
        .await
        .expect("GetTop")
        .into_inner();
    assert_eq!(page.entries.len(), 30);
    assert_eq!(page.entries[0].rank, 121);
    writer.shutdown().await.expect("shutdown");
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_cached_reads_answer_marked_stale() {
    let mut redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    let writer = crate::support::writer(&redis, dir.path(), 4).await;
    for (player, points) in [("ada", 7), ("bo", 3)] {
        writer
            .append(score(1, player, points))
            .await
            .expect("append");
    }
    let grpc = client(&router).await;
    let top = |tier, offset, limit| GetTopRequest {
        tier,
        offset,
        limit,
    };
    eventually("both players on the board", || {
        let mut grpc = grpc.clone();
        async move {
            let reply = grpc.get_top(top(1, 0, 10)).await.ok()?.into_inner();
            (reply.entries.len() == 2 && !reply.stale).then_some(())
        }
    })
    .await;

    redis.stop();
    let stale = eventually("the cached top marked stale", || {
        let mut grpc = grpc.clone();
        async move {
            let reply = grpc.get_top(top(1, 0, 10)).await.ok()?.into_inner();
            reply.stale.then_some(reply)
        }
    })
    .await;
    let players: Vec<(&str, i64)> = stale
        .entries
        .iter()
        .map(|e| (e.player_id.as_str(), e.score))
        .collect();
    assert_eq!(players, [("ada", 7), ("bo", 3)]);
    let mut grpc = grpc.clone();
    let cached = grpc
        .get_player(GetPlayerRequest {
            tier: 1,
            player_id: "bo".into(),
            around: 1,
        })
        .await
        .expect("a cached player still answers")
        .into_inner();
    assert!(cached.stale);
    assert_eq!(cached.player.map(|e| (e.rank, e.score)), Some((2, 3)));
    assert_eq!(
        code(grpc.get_top(top(1, 100, 10)).await),
        Some(Code::Unavailable),
        "ranks past the cache need Redis"
    );
    assert_eq!(
        code(
            grpc.get_player(GetPlayerRequest {
                tier: 1,
                player_id: "nobody".into(),
                around: 0,
            })
            .await
        ),
        Some(Code::Unavailable)
    );
    // Reads that went to Redis and failed leave the connection broken: a cached player still
    // answers from the cache, every time, while the reconnect runs in the background.
    for _ in 0..3 {
        let again = grpc
            .get_player(GetPlayerRequest {
                tier: 1,
                player_id: "ada".into(),
                around: 1,
            })
            .await
            .expect("a cached player answers after a Redis-path read failed")
            .into_inner();
        assert!(again.stale);
        assert_eq!(again.player.map(|e| (e.rank, e.score)), Some((1, 7)));
        assert_eq!(
            code(grpc.get_top(top(1, 100, 10)).await),
            Some(Code::Unavailable)
        );
    }

    redis.start_again().expect("redis-server again");
    eventually("fresh once Redis is back", || {
        let mut grpc = grpc.clone();
        async move {
            let reply = grpc.get_top(top(1, 0, 10)).await.ok()?.into_inner();
            (!reply.stale && reply.entries.len() == 2).then_some(())
        }
    })
    .await;
    writer.shutdown().await.expect("shutdown");
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checking_and_reflection_are_served() {
    let redis = RedisServer::start().expect("redis-server");
    let router = router(&redis).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", router.grpc_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    let status = health
        .check(HealthCheckRequest {
            service: "hunt.v1.LeaderboardService".into(),
        })
        .await
        .expect("Check")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("ServerReflectionInfo")
        .into_inner();
    let reply = replies
        .message()
        .await
        .expect("a reply")
        .expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("expected the list of services");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    // Exactly what this port serves: the sidecar's IngestService is in the same descriptor
    // set, but not served here.
    let served = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "hunt.v1.LeaderboardService",
    ];
    assert_eq!(names, served);

    // Older clients speak v1alpha, and get the same list.
    use tonic_reflection::pb::v1alpha;
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let reply = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha ServerReflectionInfo")
        .into_inner()
        .message()
        .await
        .expect("a reply")
        .expect("one message");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("expected the list of services");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, served);
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_until_one_closes() {
    let redis = RedisServer::start().expect("redis-server");
    let mut config = tier_router::RouterConfig::new(redis.url());
    config.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.max_grpc_connections = 2;
    let router = tier_router::App::build(config)
        .await
        .expect("router builds")
        .spawn();
    let connect = || async {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{}", router.grpc_addr()))
                .expect("uri")
                .timeout(Duration::from_millis(300))
                .connect_lazy();
        leaderboard_proto::v1::leaderboard_service_client::LeaderboardServiceClient::new(channel)
    };
    let mut first = connect().await;
    let mut second = connect().await;
    first.list_tiers(ListTiersRequest {}).await.expect("first");
    second
        .list_tiers(ListTiersRequest {})
        .await
        .expect("second");
    let mut third = connect().await;
    assert!(
        third.list_tiers(ListTiersRequest {}).await.is_err(),
        "a third connection is not served while two are open"
    );
    drop(first);
    eventually("the third connection served once the first closed", || {
        let mut third = third.clone();
        async move { third.list_tiers(ListTiersRequest {}).await.ok() }
    })
    .await;
    second
        .list_tiers(ListTiersRequest {})
        .await
        .expect("second still");
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[test]
fn bad_configuration_exits_64_saying_what_is_wrong() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tier-router"))
            .args(args)
            .env_remove("HUNT_REDIS_URL")
            .output()
            .expect("run tier-router");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--redis-url", "redis://127.0.0.1:1/", "--apply-batch", "0"]);
    assert_eq!(code, Some(64), "{stderr}");
    // The setting is named as the operator sets it: flag and environment variable.
    assert!(
        stderr.contains("invalid --apply-batch (HUNT_APPLY_BATCH):"),
        "{stderr}"
    );
    let (code, stderr) = run(&["--redis-url", "not a url"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--redis-url (HUNT_REDIS_URL)"), "{stderr}");
    let (code, stderr) = run(&[
        "--redis-url",
        "redis://127.0.0.1:1/",
        "--read-block-ms",
        "0",
    ]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("--read-block-ms (HUNT_READ_BLOCK_MS)"),
        "{stderr}"
    );
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--redis-url"), "{stderr}");
    let (code, stderr) = run(&["--redis-url", "redis://127.0.0.1:1/", "--lease-ttl-ms", "x"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert_eq!(run(&["--help"]).0, Some(0));
    // Redis unreachable at start: a plain failure, and the password is never printed.
    let (code, stderr) = run(&[
        "--redis-url",
        "redis://:s3cret-pass@127.0.0.1:1/",
        "--grpc-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("s3cret-pass"), "{stderr}");
    // It names where Redis was looked for, and writes no colour into a pipe.
    assert!(
        stderr.contains("Redis at redis://:***@127.0.0.1:1/"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
    // In JSON, startup errors are JSON lines too, with flat fields.
    let json = |extra: &[&str]| {
        let mut args = vec![
            "--redis-url",
            "redis://:s3cret-pass@127.0.0.1:1/",
            "--grpc-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ];
        args.extend_from_slice(extra);
        let (code, stderr) = run(&args);
        assert!(!stderr.contains("s3cret-pass"), "{stderr}");
        let line: serde_json::Value =
            serde_json::from_str(stderr.lines().last().expect("a line")).expect("a JSON line");
        assert_eq!(line["level"], "ERROR", "{stderr}");
        (code, line["error"].as_str().unwrap_or_default().to_owned())
    };
    let (code, error) = json(&["--apply-batch", "0"]);
    assert_eq!(code, Some(64), "{error}");
    assert!(error.contains("--apply-batch"), "{error}");
    let (code, error) = json(&[]);
    assert_eq!(code, Some(1), "{error}");
    assert!(error.contains("127.0.0.1:1"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_the_page_over_http() {
    let mut redis = RedisServer::start().expect("redis-server");
    let router = router(&redis).await;
    let http = router.http_addr();
    assert_eq!(http_get(http, "/healthz").await, (200, "ok\n".to_owned()));
    eventually("ready once every tier was read", || async {
        (http_get(http, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    // This process installed no Prometheus recorder.
    assert_eq!(http_get(http, "/metrics").await.0, 404);
    // The live page and what it loads.
    let (status, page) = http_get(http, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>Live leaderboards"), "{page}");
    let (status, script) = http_get(http, "/app.js").await;
    assert_eq!(status, 200);
    assert!(script.contains("new WebSocket("), "the page follows /ws");
    assert_eq!(http_get(http, "/style.css").await.0, 200);
    let (status, tiers) = http_get(http, "/tiers").await;
    assert_eq!(status, 200);
    // ListTiers's answer in the proto3 JSON mapping, as a gRPC-JSON client sees it.
    let tiers: leaderboard_proto::v1::ListTiersResponse =
        serde_json::from_str(&tiers).expect("a ListTiersResponse");
    let expected: Vec<leaderboard_proto::v1::Tier> = leaderboard_proto::rewards::TIERS
        .iter()
        .map(Into::into)
        .collect();
    assert_eq!(tiers.tiers, expected);
    assert_eq!(http_get(http, "/nowhere").await.0, 404);
    redis.stop();
    let (_, why) = eventually("not ready without Redis", || async {
        let reply = http_get(http, "/readyz").await;
        (reply.0 == 503).then_some(reply)
    })
    .await;
    assert!(why.contains("Redis unreachable"), "{why}");
    assert_eq!(
        http_get(http, "/healthz").await.0,
        200,
        "alive all the same"
    );
    redis.start_again().expect("redis-server again");
    eventually("ready again", || async {
        (http_get(http, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    assert!(router.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_finds_a_player_and_its_neighbours_over_http() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    let http = router.http_addr();
    let writer = crate::support::writer(&redis, dir.path(), 6).await;
    for (player, points) in [("ada", 30), ("bo", 20), ("cy", 10)] {
        writer
            .append(score(1, player, points))
            .await
            .expect("append");
    }
    let (_, body) = eventually("bo on the board", || async {
        let reply = http_get(http, "/player?tier=1&id=bo&around=1").await;
        (reply.0 == 200).then_some(reply)
    })
    .await;
    let answer: leaderboard_proto::v1::GetPlayerResponse =
        serde_json::from_str(&body).expect("a GetPlayerResponse");
    let entry = answer.player.expect("bo's entry");
    assert_eq!(
        (entry.rank, entry.player_id.as_str(), entry.score),
        (2, "bo", 20)
    );
    let neighbours: Vec<&str> = answer
        .neighbours
        .iter()
        .map(|n| n.player_id.as_str())
        .collect();
    assert_eq!(neighbours, ["ada", "cy"], "{body}");
    // Errors say what is wrong, as JSON, with the HTTP status of the gRPC code.
    for (path, status, code) in [
        ("/player?tier=1&id=nobody", 404, "not_found"),
        ("/player?tier=99&id=bo", 404, "not_found"),
        ("/player?tier=1&id=bo&around=100000", 400, "bad_request"),
        ("/player?tier=1&id=bad%7Bid%7D", 400, "bad_request"),
        ("/player?tier=1&id=", 400, "bad_request"),
        ("/player?tier=x&id=bo", 400, "bad_request"),
        ("/player?tier=1", 400, "bad_request"),
        ("/player?tier=1&id=bo&extra=1", 400, "bad_request"),
    ] {
        let (got, body) = http_get(http, path).await;
        assert_eq!(got, status, "{path}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(error["error"]["code"], code, "{path}: {body}");
    }
    writer.shutdown().await.expect("shutdown");
    assert!(router.shutdown(Duration::from_secs(10)).await);
}
