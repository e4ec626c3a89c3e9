//! The `hunt` Functions library against a real Redis: leases, fencing, exactly-once apply, ties.

use std::time::{Duration, Instant};

use hunt_testkit::RedisServer;
use leaderboard_proto::functions::{
    self, Applied, Apply, ApplyEntry, ApplyKind, Function, LeaseAcquire, LeaseAcquired,
    LeaseRelease, LeaseRenew, player_of_member,
};
use leaderboard_proto::keys;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

/// One stream entry as the router hands it to `hunt_apply`.
type Entry<'a> = (u32, u64, &'a str, i64);

pub(crate) fn setup() -> (RedisServer, redis::Connection) {
    let server = RedisServer::start().expect("redis-server");
    let mut conn = server
        .client()
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect");
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(functions::LIBRARY)
        .query(&mut conn)
        .expect("library loads");
    (server, conn)
}

pub(crate) fn acquire(
    conn: &mut redis::Connection,
    tier: u32,
    router: &str,
    ttl_ms: u64,
) -> (i64, String) {
    let acquired: LeaseAcquired = LeaseAcquire::new(tier, router, Duration::from_millis(ttl_ms))
        .cmd()
        .query(conn)
        .expect("lease acquire");
    match acquired {
        LeaseAcquired::Held(token) => (1, token),
        LeaseAcquired::Taken { holder } => (0, holder),
    }
}

fn apply(
    conn: &mut redis::Connection,
    tier: u32,
    token: &str,
    cursor: &str,
    entries: &[Entry<'_>],
) -> redis::RedisResult<(u64, u64, u64, u64)> {
    apply_with_top(conn, tier, token, cursor, 100, entries)
        .map(|(applied, duplicates, gaps, rejected, _)| (applied, duplicates, gaps, rejected))
}

/// `hunt_apply` with the top size given: (applied, duplicates, gaps, rejected, top changed).
fn apply_with_top(
    conn: &mut redis::Connection,
    tier: u32,
    token: &str,
    cursor: &str,
    top_size: u64,
    entries: &[Entry<'_>],
) -> redis::RedisResult<(u64, u64, u64, u64, u64)> {
    let mut call = Apply::new(tier, token, cursor, top_size);
    for (shard_id, tier_seq, player, points) in entries {
        call.entry(&ApplyEntry {
            shard_id: *shard_id,
            tier_seq: *tier_seq,
            player,
            points: *points,
            kind: ApplyKind::Points,
        });
    }
    let applied: Applied = call.cmd().query(conn)?;
    Ok((
        applied.applied,
        applied.duplicates,
        applied.gaps,
        applied.rejected,
        u64::from(applied.top_changed),
    ))
}

/// The leaderboard, best first: (player, score).
pub(crate) fn board(conn: &mut redis::Connection, tier: u32) -> Vec<(String, i64)> {
    let raw: Vec<(String, i64)> = redis::cmd("ZREVRANGE")
        .arg(keys::tier_scores(tier))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(conn)
        .expect("ZREVRANGE");
    raw.into_iter()
        .map(|(member, score)| {
            let player = player_of_member(&member).expect("member format").to_owned();
            (player, score)
        })
        .collect()
}

fn hget(conn: &mut redis::Connection, key: &str, field: &str) -> Option<u64> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query(conn)
        .expect("HGET")
}

#[test]
fn a_lease_has_one_holder_and_each_new_holder_a_greater_fence() {
    let (_server, mut conn) = setup();
    let (held, first) = acquire(&mut conn, 1, "router-a", 60_000);
    assert_eq!((held, first.as_str()), (1, "1:router-a"));
    assert_eq!(
        acquire(&mut conn, 1, "router-b", 60_000),
        (0, "router-a".to_owned())
    );
    assert_eq!(
        acquire(&mut conn, 1, "router-a", 60_000),
        (1, first.clone()),
        "renewal keeps the token"
    );

    let release = LeaseRelease::new(1, "router-b");
    assert!(
        !release.cmd().query::<bool>(&mut conn).expect("release"),
        "only the holder releases"
    );
    let release = LeaseRelease::new(1, "router-a");
    assert!(release.cmd().query::<bool>(&mut conn).expect("release"));
    assert_eq!(
        acquire(&mut conn, 1, "router-b", 50),
        (1, "2:router-b".to_owned())
    );

    // An expired lease passes to the next router, with the next token.
    let deadline = Instant::now() + Duration::from_secs(10);
    let token = loop {
        let (held, token) = acquire(&mut conn, 1, "router-c", 60_000);
        if held == 1 {
            break token;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(token, "3:router-c");
}

#[test]
fn a_stale_fence_token_applies_nothing() {
    let (_server, mut conn) = setup();
    let (_, old) = acquire(&mut conn, 2, "router-a", 10);
    // router-a pauses past its lease; router-b takes the tier.
    let _: () = redis::cmd("DEL")
        .arg(keys::tier_lease(2))
        .query(&mut conn)
        .expect("DEL");
    let (_, new) = acquire(&mut conn, 2, "router-b", 60_000);
    assert_ne!(old, new);
    let err = apply(&mut conn, 2, &old, "1-0", &[(1, 1, "ada", 5)]).expect_err("fenced");
    assert_eq!(err.code(), Some("FENCED"), "{err}");
    assert!(board(&mut conn, 2).is_empty());
    assert_eq!(hget(&mut conn, &keys::tier_applied(2), "1"), None);
    assert_eq!(
        apply(&mut conn, 2, &new, "1-0", &[(1, 1, "ada", 5)]).expect("apply"),
        (1, 0, 0, 0)
    );
    assert_eq!(board(&mut conn, 2), vec![("ada".to_owned(), 5)]);
}

fn renew(
    conn: &mut redis::Connection,
    tier: u32,
    router: &str,
    token: &str,
) -> redis::RedisResult<String> {
    LeaseRenew::new(tier, router, Duration::from_secs(60), token)
        .cmd()
        .query(conn)
}

#[test]
fn a_renewal_is_checked_against_the_fence() {
    let (_server, mut conn) = setup();
    let (_, token) = acquire(&mut conn, 4, "router-a", 60_000);
    assert_eq!(
        renew(&mut conn, 4, "router-a", &token).expect("renew"),
        token
    );
    // The lease expired but nobody took the tier: the same token goes on.
    let _: () = redis::cmd("DEL")
        .arg(keys::tier_lease(4))
        .query(&mut conn)
        .expect("DEL");
    assert_eq!(
        renew(&mut conn, 4, "router-a", &token).expect("renew"),
        token
    );
    assert_eq!(
        acquire(&mut conn, 4, "router-b", 60_000),
        (0, "router-a".to_owned()),
        "the renewal took the lease again"
    );
    // Another router took the tier: the old holder's renewal is fenced off.
    let _: () = redis::cmd("DEL")
        .arg(keys::tier_lease(4))
        .query(&mut conn)
        .expect("DEL");
    let (_, newer) = acquire(&mut conn, 4, "router-b", 60_000);
    let err = renew(&mut conn, 4, "router-a", &token).expect_err("fenced");
    assert_eq!(err.code(), Some("FENCED"), "{err}");
    assert_eq!(
        renew(&mut conn, 4, "router-b", &newer).expect("renew"),
        newer
    );
    // Redis lost everything: no token renews.
    let _: () = redis::cmd("FLUSHALL").query(&mut conn).expect("FLUSHALL");
    let err = renew(&mut conn, 4, "router-b", &newer).expect_err("fenced");
    assert_eq!(err.code(), Some("FENCED"), "{err}");
}

#[test]
fn entries_apply_once_in_order_and_a_gap_asks_for_a_replay() {
    let (_server, mut conn) = setup();
    let (_, token) = acquire(&mut conn, 3, "router-a", 60_000);
    let first: Vec<Entry<'_>> = vec![
        (1, 1, "ada", 10),
        (2, 1, "bo", 7),
        (1, 2, "ada", 5),
        (1, 2, "ada", 5),  // redelivered: a duplicate
        (2, 3, "bo", 100), // tier_seq 2 of shard 2 is missing
        (2, 4, "bo", 100), // blocked behind the gap
        (1, 3, "", 0),     // a wave reset: no points, still applied
    ];
    assert_eq!(
        apply(&mut conn, 3, &token, "5-0", &first).expect("apply"),
        (4, 1, 1, 0)
    );
    assert_eq!(
        board(&mut conn, 3),
        vec![("ada".to_owned(), 15), ("bo".to_owned(), 7)]
    );
    assert_eq!(hget(&mut conn, &keys::tier_applied(3), "1"), Some(3));
    assert_eq!(hget(&mut conn, &keys::tier_applied(3), "2"), Some(1));
    assert_eq!(hget(&mut conn, &keys::tier_replay(3), "2"), Some(2));
    let cursor: String = redis::cmd("GET")
        .arg(keys::tier_cursor(3))
        .query(&mut conn)
        .expect("GET");
    assert_eq!(cursor, "5-0");

    // The shard re-sends from 2: the gap fills, the request is cleared, nothing counts twice.
    let replay: Vec<Entry<'_>> = vec![
        (2, 2, "bo", 1),
        (2, 3, "bo", 100),
        (2, 4, "bo", 100),
        (1, 1, "ada", 10),
    ];
    assert_eq!(
        apply(&mut conn, 3, &token, "9-0", &replay).expect("apply"),
        (3, 1, 0, 0)
    );
    assert_eq!(
        board(&mut conn, 3),
        vec![("bo".to_owned(), 208), ("ada".to_owned(), 15)]
    );
    assert_eq!(hget(&mut conn, &keys::tier_replay(3), "2"), None);
}

#[test]
fn equal_scores_rank_by_who_reached_them_first() {
    let (_server, mut conn) = setup();
    let (_, token) = acquire(&mut conn, 4, "router-a", 60_000);
    // "zed" reaches 10 first, then "amy" (alphabetically first) reaches 10 too.
    apply(&mut conn, 4, &token, "1-0", &[(1, 1, "zed", 10)]).expect("apply");
    apply(
        &mut conn,
        4,
        &token,
        "2-0",
        &[(1, 2, "amy", 4), (1, 3, "amy", 6)],
    )
    .expect("apply");
    apply(&mut conn, 4, &token, "3-0", &[(1, 4, "kim", 3)]).expect("apply");
    assert_eq!(
        board(&mut conn, 4),
        vec![
            ("zed".to_owned(), 10),
            ("amy".to_owned(), 10),
            ("kim".to_owned(), 3)
        ]
    );
    // Ranks are exact for every player, straight from Redis.
    let members: Vec<String> = redis::cmd("HMGET")
        .arg(keys::tier_members(4))
        .arg("zed")
        .arg("amy")
        .arg("kim")
        .query(&mut conn)
        .expect("HMGET");
    let ranks: Vec<u64> = members
        .iter()
        .map(|m| {
            redis::cmd("ZREVRANK")
                .arg(keys::tier_scores(4))
                .arg(m)
                .query(&mut conn)
                .expect("ZREVRANK")
        })
        .collect();
    assert_eq!(ranks, vec![0, 1, 2]);
    // "zed" drops to 9 and climbs back to 10: now it reached 10 after "amy".
    apply(&mut conn, 4, &token, "4-0", &[(1, 5, "zed", -1)]).expect("apply");
    apply(&mut conn, 4, &token, "5-0", &[(1, 6, "zed", 1)]).expect("apply");
    assert_eq!(
        board(&mut conn, 4)[..2],
        [("amy".to_owned(), 10), ("zed".to_owned(), 10)]
    );
    // Within one batch too: "bo" reaches 20 with its second entry, after "cy" reached 20.
    apply(
        &mut conn,
        4,
        &token,
        "6-0",
        &[(1, 7, "bo", 15), (1, 8, "cy", 20), (1, 9, "bo", 5)],
    )
    .expect("apply");
    assert_eq!(
        board(&mut conn, 4)[..2],
        [("cy".to_owned(), 20), ("bo".to_owned(), 20)]
    );
}

#[test]
fn a_batch_reports_whether_it_may_have_changed_the_top() {
    let (_server, mut conn) = setup();
    let (_, token) = acquire(&mut conn, 5, "router-a", 60_000);
    let top = |conn: &mut redis::Connection, seq: u64, player: &str, points: i64| {
        apply_with_top(conn, 5, &token, "1-0", 2, &[(1, seq, player, points)])
            .expect("apply")
            .4
    };
    // A board shorter than the top: every change is in it.
    assert_eq!(top(&mut conn, 1, "ada", 50), 1);
    assert_eq!(top(&mut conn, 2, "bo", 40), 1);
    // "cy" below the second score: the top stays as it was.
    assert_eq!(top(&mut conn, 3, "cy", 10), 0);
    assert_eq!(top(&mut conn, 4, "cy", 5), 0);
    // Reaching the second score (a tie) may enter the top; so does leaving it.
    assert_eq!(top(&mut conn, 5, "cy", 25), 1);
    assert_eq!(top(&mut conn, 6, "ada", -45), 1);
    // A duplicate changes nothing.
    assert_eq!(top(&mut conn, 6, "ada", -45), 0);
}

#[test]
fn a_total_beyond_exact_integers_is_refused_and_the_score_stays_exact() {
    let (_server, mut conn) = setup();
    let (_, token) = acquire(&mut conn, 5, "router-a", 60_000);
    let max = (1i64 << 53) - 1;
    assert_eq!(
        apply(&mut conn, 5, &token, "1-0", &[(1, 1, "ada", max)]).expect("apply"),
        (1, 0, 0, 0)
    );
    assert_eq!(
        apply(&mut conn, 5, &token, "2-0", &[(1, 2, "ada", 1)]).expect("apply"),
        (1, 0, 0, 1)
    );
    assert_eq!(board(&mut conn, 5), vec![("ada".to_owned(), max)]);
    assert_eq!(hget(&mut conn, &keys::tier_applied(5), "1"), Some(2));
}

#[test]
fn the_range_rule_applies_event_by_event_whatever_the_batch() {
    let (_server, mut conn) = setup();
    let (_, token) = acquire(&mut conn, 5, "router-a", 60_000);
    let max = (1i64 << 53) - 1;
    // +max then +max in one batch: the first scores, the second is refused.
    assert_eq!(
        apply(
            &mut conn,
            5,
            &token,
            "1-0",
            &[(1, 1, "ada", max), (1, 2, "ada", max)]
        )
        .expect("apply"),
        (2, 0, 0, 1)
    );
    assert_eq!(board(&mut conn, 5), vec![("ada".to_owned(), max)]);
    // +max, +max, -max in one batch: event by event that is max, refused, 0.
    assert_eq!(
        apply(
            &mut conn,
            5,
            &token,
            "2-0",
            &[(2, 1, "bo", max), (2, 2, "bo", max), (2, 3, "bo", -max)]
        )
        .expect("apply"),
        (3, 0, 0, 1)
    );
    assert!(board(&mut conn, 5).contains(&("bo".to_owned(), 0)));
}

/// Near the limit, the board equals applying the events one by one with the range rule,
/// however they are batched.
#[test]
fn boards_near_the_limit_do_not_depend_on_batching() {
    let (_server, conn) = setup();
    let conn = std::cell::RefCell::new(conn);
    let max = (1i64 << 53) - 1;
    let mut runner = TestRunner::new(Config {
        cases: 40,
        rng_seed: RngSeed::Fixed(0x5241_4e47),
        failure_persistence: None,
        ..Config::default()
    });
    let points = proptest::sample::select(vec![max, -max, max - 1, 1 - max, 1, -1, 2, -2, 0]);
    let case = (
        proptest::collection::vec((0usize..2, points), 1..40),
        1usize..12,
    );
    let round = std::cell::Cell::new(0u32);
    runner
        .run(&case, |(events, batch)| {
            round.set(round.get() + 1);
            let mut conn = conn.borrow_mut();
            let conn = &mut *conn;
            let tier = 2;
            let _: () = redis::cmd("FLUSHDB").query(conn).expect("FLUSHDB");
            let (_, token) = acquire(conn, tier, &format!("router-{}", round.get()), 60_000);
            let players = ["ada", "bo"];
            let stream: Vec<Entry<'_>> = events
                .iter()
                .enumerate()
                .map(|(n, &(player, points))| (1, n as u64 + 1, players[player], points))
                .collect();
            let mut model = std::collections::BTreeMap::<&str, i64>::new();
            let mut refused = 0;
            for (_, _, player, points) in &stream {
                let total = model.entry(player).or_default();
                match total.checked_add(*points) {
                    Some(next) if (-max..=max).contains(&next) => *total = next,
                    _ => refused += 1,
                }
            }
            let mut rejected = 0;
            for chunk in stream.chunks(batch) {
                rejected += apply(conn, tier, &token, "0-1", chunk).expect("apply").3;
            }
            let mut want: Vec<(String, i64)> = model
                .into_iter()
                .map(|(player, total)| (player.to_owned(), total))
                .collect();
            let mut got = board(conn, tier);
            want.sort();
            got.sort();
            prop_assert_eq!(got, want);
            prop_assert_eq!(rejected, refused);
            Ok(())
        })
        .expect("the range rule is per event");
}

/// Any interleaving of duplicates, reorderings and redeliveries, applied in batches, ends with
/// exactly the model's totals once every shard's events have been offered in order at least once.
#[test]
fn scores_equal_the_model_whatever_the_redelivery() {
    let (_server, conn) = setup();
    let conn = std::cell::RefCell::new(conn);
    let mut runner = TestRunner::new(Config {
        cases: 40,
        rng_seed: RngSeed::Fixed(0x4150_504c),
        failure_persistence: None,
        ..Config::default()
    });
    let event = (0u32..3, 0usize..4, -3i64..3);
    let case = (
        proptest::collection::vec(event, 1..60),
        proptest::collection::vec((0usize..60, 0usize..60), 0..30),
        1usize..20,
    );
    let round = std::cell::Cell::new(0u32);
    runner
        .run(&case, |(events, noise, batch)| {
            round.set(round.get() + 1);
            let mut conn = conn.borrow_mut();
            let conn = &mut *conn;
            let tier = 1;
            let _: () = redis::cmd("FLUSHDB").query(conn).expect("FLUSHDB");
            let (_, token) = acquire(conn, tier, &format!("router-{}", round.get()), 60_000);
            let players = ["ada", "bo", "cy", "di"];
            // Per shard, tier_seq 1, 2, 3 … in the order generated.
            let mut next = [0u64; 3];
            let mut stream: Vec<Entry<'_>> = events
                .iter()
                .map(|&(shard, player, points)| {
                    next[shard as usize] += 1;
                    (shard, next[shard as usize], players[player], points)
                })
                .collect();
            let mut totals = std::collections::BTreeMap::<&str, i64>::new();
            for (_, _, player, points) in &stream {
                *totals.entry(player).or_default() += points;
            }
            // Noise: copies of earlier entries inserted later (redelivery, replay, reordering).
            for (from, to) in noise {
                if let Some(&entry) = stream.get(from % stream.len()) {
                    stream.insert(to % (stream.len() + 1), entry);
                }
            }
            // Offer everything in the noisy order, then once more in order in batches of their
            // own, as a shard does when it answers a replay request: that pass fills every gap.
            let mut ordered: Vec<_> = stream.clone();
            ordered.sort_by_key(|(shard, tier_seq, ..)| (*tier_seq, *shard));
            for chunk in stream.chunks(batch).chain(ordered.chunks(batch)) {
                apply(conn, tier, &token, "0-1", chunk).expect("apply");
            }
            // Every player with an applied entry is on the board, at 0 too, however the entries
            // were batched.
            let mut want: Vec<(String, i64)> = totals
                .into_iter()
                .map(|(player, total)| (player.to_owned(), total))
                .collect();
            let mut got: Vec<(String, i64)> = board(conn, tier);
            want.sort();
            got.sort();
            prop_assert_eq!(got, want);
            for (shard, last) in next.iter().enumerate() {
                let applied = hget(conn, &keys::tier_applied(tier), &shard.to_string());
                prop_assert_eq!(applied.unwrap_or(0), *last);
            }
            Ok(())
        })
        .expect("apply is exactly once");
}
