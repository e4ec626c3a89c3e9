//! The shard writer's functions on their own: `hunt_publish` (a relay batch and its mark) and
//! `hunt_next_epoch` (a shard's fencing token), and `hunt_version`.

use leaderboard_proto::functions::{
    Function, LIBRARY_VERSION, NextEpoch, Publish, Published, Version,
};
use leaderboard_proto::keys;

use super::functions::setup;

fn publish(
    conn: &mut redis::Connection,
    tier: u32,
    shard: u32,
    floor: u64,
    payloads: &[&[u8]],
) -> Published {
    let highest = floor + payloads.len() as u64;
    let mut call = Publish::new(tier, shard, 100_000, floor, highest);
    for payload in payloads {
        call.payload(payload);
    }
    call.cmd().query(conn).expect("publish")
}

fn stream(conn: &mut redis::Connection, tier: u32) -> Vec<Vec<u8>> {
    type Entry = (String, Vec<(String, Vec<u8>)>);
    let entries: Vec<Entry> = redis::cmd("XRANGE")
        .arg(keys::tier_stream(tier))
        .arg("-")
        .arg("+")
        .query(conn)
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(_, fields)| {
            let (field, payload) = fields.into_iter().next().expect("one field");
            assert_eq!(field, keys::STREAM_EVENT_FIELD);
            payload
        })
        .collect()
}

fn published_mark(conn: &mut redis::Connection, tier: u32, shard: u32) -> Option<u64> {
    redis::cmd("HGET")
        .arg(keys::tier_published(tier))
        .arg(keys::shard_field(shard))
        .query(conn)
        .expect("HGET")
}

#[test]
fn a_batch_lands_in_order_and_raises_the_mark_but_never_lowers_it() {
    let (_server, mut conn) = setup();
    let first = publish(&mut conn, 2, 7, 0, &[b"one", b"two", b"three"]);
    assert_eq!(
        first,
        Published {
            added: true,
            mark: 3
        }
    );
    assert_eq!(
        stream(&mut conn, 2),
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
    assert_eq!(published_mark(&mut conn, 2, 7), Some(3));

    // A re-send of older tier_seqs (a redelivery) is added again; the mark stays.
    let again = publish(&mut conn, 2, 7, 1, &[b"two"]);
    assert_eq!(
        again,
        Published {
            added: true,
            mark: 3
        }
    );
    assert_eq!(stream(&mut conn, 2).len(), 4);

    // Other shards and tiers have marks of their own.
    assert_eq!(publish(&mut conn, 2, 8, 0, &[b"x"]).mark, 1);
    assert_eq!(publish(&mut conn, 3, 7, 0, &[b"y"]).mark, 1);
    assert_eq!(published_mark(&mut conn, 2, 7), Some(3));
}

#[test]
fn a_batch_above_what_redis_holds_is_refused_so_no_hole_is_left() {
    let (_server, mut conn) = setup();
    publish(&mut conn, 1, 4, 0, &[b"a", b"b"]);
    // The writer expects Redis to hold tier_seq 5 already: Redis lost 3..=5.
    let refused = publish(&mut conn, 1, 4, 5, &[b"f", b"g"]);
    assert_eq!(
        refused,
        Published {
            added: false,
            mark: 2
        }
    );
    assert_eq!(stream(&mut conn, 1).len(), 2, "nothing added");
    assert_eq!(published_mark(&mut conn, 1, 4), Some(2));
    // Re-sent from the mark, it lands.
    let resent = publish(&mut conn, 1, 4, 2, &[b"c", b"d", b"e", b"f", b"g"]);
    assert_eq!(
        resent,
        Published {
            added: true,
            mark: 7
        }
    );
}

#[test]
fn epochs_count_up_and_never_fall_below_the_floor() {
    let (server, mut conn) = setup();
    let next = |conn: &mut redis::Connection, floor: u64| -> u64 {
        NextEpoch::new(5, floor)
            .cmd()
            .query(conn)
            .expect("next epoch")
    };
    assert_eq!(next(&mut conn, 0), 1);
    assert_eq!(next(&mut conn, 0), 2);
    assert_eq!(
        next(&mut conn, 10),
        10,
        "the shard file has used epochs up to 9"
    );
    assert_eq!(next(&mut conn, 0), 11);
    // Another shard counts on its own.
    assert_eq!(
        NextEpoch::new(6, 0)
            .cmd()
            .query::<u64>(&mut conn)
            .expect("epoch"),
        1
    );
    // A Redis that lost its keys (FLUSHALL keeps the library) starts again from the floor the
    // shard gives.
    server.flushall().expect("FLUSHALL");
    assert_eq!(next(&mut conn, 12), 12);
}

#[test]
fn the_version_is_the_embedded_one() {
    let (_server, mut conn) = setup();
    let version: i64 = Version::new().cmd().query(&mut conn).expect("version");
    assert_eq!(version, LIBRARY_VERSION);
}
