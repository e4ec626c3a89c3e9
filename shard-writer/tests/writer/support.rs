//! Shared helpers: a fast writer configuration, stream readers, polling with a deadline.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hunt_testkit::RedisServer;
use leaderboard_proto::keys;
use leaderboard_proto::v1::HuntEvent;
use redis::AsyncCommands;
use shard_writer::{OpenError, ShardWriter, WriterConfig};

pub(crate) use hunt_testkit::{DEADLINE, eventually, score};

/// Runs the `shard-writer` binary, with no Redis URL or shard file from the environment.
pub(crate) fn shard_writer(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shard-writer"))
        .args(args)
        .env_remove("HUNT_REDIS_URL")
        .env_remove("HUNT_SHARD_DB")
        .output()
        .expect("run shard-writer")
}

/// A writer configuration with short timers, relaying to `redis`.
pub(crate) fn config(dir: &Path, shard_id: u32, redis: &RedisServer) -> WriterConfig {
    timers(
        WriterConfig::new(dir.join(format!("shard-{shard_id}.sqlite")), shard_id)
            .with_redis(redis.url()),
    )
}

/// `config` with the short timers of these tests.
pub(crate) fn timers(mut config: WriterConfig) -> WriterConfig {
    config.ack_poll_interval = Duration::from_millis(20);
    config.reconnect_backoff = Duration::from_millis(20);
    config.max_reconnect_backoff = Duration::from_millis(200);
    config.redis_connect_timeout = Duration::from_millis(500);
    config.redis_response_timeout = Duration::from_secs(2);
    config.redelivery_timeout = Duration::from_secs(60);
    config.max_redelivery_timeout = Duration::from_secs(60);
    // Most of these tests have no router to move the applied watermark: flow control would hold
    // their events back. `delivery::publishing_stops_a_window_past_the_applied_watermark` tests it.
    config.publish_window = 1_000_000;
    config
}

/// The answer of `claim` once Redis can give it: the claims gate open again after a loss, a
/// failover over, a replica acknowledging again.
pub(crate) async fn answered<T, F, Fut>(what: &str, claim: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, shard_writer::ClaimError>>,
{
    use shard_writer::ClaimError;
    eventually(what, || async {
        match claim().await {
            Ok(answer) => Some(answer),
            Err(
                ClaimError::Recovering
                | ClaimError::Unreachable { .. }
                | ClaimError::Unreplicated { .. },
            ) => None,
            Err(err) => panic!("{what}: {err}"),
        }
    })
    .await
}

/// Opens `config`, retrying while a previous writer of the same file is still closing.
pub(crate) async fn open(config: &WriterConfig) -> ShardWriter {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match ShardWriter::open(config.clone()).await {
            Ok(writer) => return writer,
            Err(OpenError::AlreadyOpen { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("open failed: {err}"),
        }
    }
}

/// A connection to the test's Redis.
pub(crate) async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test redis")
}

/// Every event in tier `tier`'s stream, in stream order. Empty when Redis is unreachable.
pub(crate) async fn stream(redis: &RedisServer, tier: u32) -> Vec<HuntEvent> {
    let Ok(mut conn) = redis.client().get_multiplexed_async_connection().await else {
        return Vec::new();
    };
    hunt_redis::stream::range(&mut conn, tier, "-", "+")
        .await
        .expect("stream entries decode")
        .into_iter()
        .map(|(_, event)| event)
        .collect()
}

/// A tier's stream de-duplicated by `tier_seq`, as a router would apply it. Fails the test if one
/// `tier_seq` carries two different events.
pub(crate) async fn stream_by_tier_seq(redis: &RedisServer, tier: u32) -> BTreeMap<u64, HuntEvent> {
    let mut by_tier_seq = BTreeMap::new();
    for event in stream(redis, tier).await {
        if let Some(earlier) = by_tier_seq.insert(event.tier_seq, event.clone()) {
            assert_eq!(earlier, event, "tier_seq {} reused", event.tier_seq);
        }
    }
    by_tier_seq
}

/// Whether `map` holds exactly tier_seqs 1..=n.
pub(crate) fn contiguous(map: &BTreeMap<u64, HuntEvent>, n: u64) -> bool {
    map.len() as u64 == n && map.keys().copied().eq(1..=n)
}

/// Sets the router's applied watermark for `shard` on `tier`, as a router would.
pub(crate) async fn set_applied(redis: &RedisServer, tier: u32, shard: u32, applied: u64) {
    let mut conn = redis_conn(redis).await;
    let _: () = conn
        .hset(keys::tier_applied(tier), keys::shard_field(shard), applied)
        .await
        .expect("HSET applied");
}

/// Rows in the shard file, read through a separate read-only connection.
pub(crate) fn rows(path: &Path, tier: u32) -> Vec<(u64, u64)> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open shard file");
    let mut select = conn
        .prepare("SELECT seq, tier_seq FROM events WHERE tier = ?1 ORDER BY tier_seq")
        .expect("prepare");
    select
        .query_map([tier], |row| {
            let seq: i64 = row.get(0)?;
            let tier_seq: i64 = row.get(1)?;
            Ok((seq as u64, tier_seq as u64))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Stops `redis` with `SHUTDOWN SAVE`, so that `start_again` brings its data back.
pub(crate) async fn stop_keeping_data(redis: &mut RedisServer) {
    let mut conn = redis_conn(redis).await;
    // The connection drops as the server exits: the reply is an I/O error, not a failure.
    let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN")
        .arg("SAVE")
        .query_async(&mut conn)
        .await;
    redis.stop();
}

/// The fence token [`apply_stream`] applies under, as a router holding the tier's lease would.
const TEST_ROUTER: &str = "test-router:1";

/// Applies every entry of `tier`'s stream, from its start, exactly as a router would
/// (`hunt_apply`, fenced, de-duplicated by `tier_seq` inside Redis).
pub(crate) async fn apply_stream(redis: &RedisServer, tier: u32) {
    use leaderboard_proto::functions::{Apply, ApplyEntry};
    let mut conn = redis_conn(redis).await;
    let _: () = conn
        .set(keys::tier_fence(tier), TEST_ROUTER)
        .await
        .expect("SET fence");
    let events = stream(redis, tier).await;
    for chunk in events.chunks(100) {
        let mut apply = Apply::new(tier, TEST_ROUTER, "0-0", 100);
        for event in chunk {
            apply.entry(&ApplyEntry::of(event, tier));
        }
        hunt_redis::call(&mut conn, &apply)
            .await
            .expect("hunt_apply");
    }
}

/// Every player's total on `tier`'s leaderboard.
pub(crate) async fn board(redis: &RedisServer, tier: u32) -> BTreeMap<String, i64> {
    let mut conn = redis_conn(redis).await;
    let members: Vec<(String, f64)> = conn
        .zrange_withscores(keys::tier_scores(tier), 0, -1)
        .await
        .expect("ZRANGE scores");
    members
        .into_iter()
        .map(|(member, score)| {
            let player = leaderboard_proto::functions::player_of_member(&member)
                .expect("member carries a player")
                .to_owned();
            (player, score as i64)
        })
        .collect()
}

/// The totals per player of `events` in `tier`, as the leaderboard should hold them.
pub(crate) fn totals<'a>(
    events: impl IntoIterator<Item = &'a HuntEvent>,
    tier: u32,
) -> BTreeMap<String, i64> {
    use leaderboard_proto::v1::hunt_event::Kind;
    let mut totals = BTreeMap::new();
    for event in events {
        if let (true, Some(Kind::ScoreGained(gained))) = (event.tier == tier, &event.kind) {
            *totals.entry(gained.player_id.clone()).or_insert(0) += gained.points;
        }
    }
    totals
}
