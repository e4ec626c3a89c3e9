//! The router's leaderboards as a gRPC client reads them: a whole board, paged through `GetTop`,
//! and `GetTop` requests offered open-loop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use leaderboard_proto::rewards;
use leaderboard_proto::v1::GetTopRequest;
use leaderboard_proto::v1::leaderboard_service_client::LeaderboardServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::harness::open_loop::{self, Outcome, Until};

/// The whole leaderboard of `tier`, player → score, paged through `GetTop`.
///
/// # Errors
/// When a `GetTop` fails.
pub(crate) async fn board(
    grpc: &mut LeaderboardServiceClient<Channel>,
    tier: u32,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut board = BTreeMap::new();
    loop {
        let page = grpc
            .get_top(GetTopRequest {
                tier,
                offset: u32::try_from(board.len()).unwrap_or(u32::MAX),
                limit: 1_000,
            })
            .await
            .context("GetTop")?
            .into_inner();
        let full = page.entries.len() == 1_000;
        board.extend(page.entries.into_iter().map(|e| (e.player_id, e.score)));
        if !full {
            return Ok(board);
        }
    }
}

/// The most `GetTop` requests of [`get_top_load`] in flight at once.
const GET_TOP_IN_FLIGHT: usize = 1_000;

/// `GetTop` (top 10 of a tier, round robin) at `rate` requests/s, each measured from its intended
/// send time, over `connections` HTTP/2 connections to `addr`, with at most 1,000 in flight, from
/// one second after the call (a warm-up) until `stop`. The outcome's `latency` runs from the
/// intended send, its `service` from the actual send, and its `errors` counts the failures.
///
/// # Errors
/// When a connection cannot be made, or `rate` is 0.
pub(crate) async fn get_top_load(
    addr: SocketAddr,
    rate: u64,
    connections: u64,
    stop: CancellationToken,
) -> anyhow::Result<Outcome> {
    let connections = connections.max(1);
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(LeaderboardServiceClient::new(
            Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        ));
    }
    // Skip the warm-up second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let request = |sent: u64| {
        let mut client = clients[(sent % connections) as usize].clone();
        let tier = rewards::TIERS[(sent % rewards::TIERS.len() as u64) as usize].id;
        async move {
            client
                .get_top(GetTopRequest {
                    tier,
                    offset: 0,
                    limit: 10,
                })
                .await?;
            Ok(())
        }
    };
    let until = Until::Stopped(stop);
    open_loop::run_observed(rate, until, GET_TOP_IN_FLIGHT, request, |_, _| {}).await
}
