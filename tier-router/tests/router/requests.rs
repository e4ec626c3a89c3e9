//! Bad requests get the status codes the design lists.

use std::time::Duration;

use leaderboard_proto::testkit::RedisServer;
use leaderboard_proto::v1::{GetPlayerRequest, GetTopRequest, ListTiersRequest, WatchRequest};
use tonic::Code;

use crate::support::{client, router};

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
    assert_eq!(
        code(grpc.get_top(top(1, 0, 0)).await),
        Some(Code::InvalidArgument)
    );
    assert_eq!(
        code(grpc.get_top(top(1, 0, 1_000_000)).await),
        Some(Code::InvalidArgument)
    );
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
        code(grpc.watch(WatchRequest { tier: 0 }).await),
        Some(Code::NotFound)
    );
    assert!(router.shutdown(Duration::from_secs(10)).await);
}
