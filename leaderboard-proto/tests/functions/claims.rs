//! Claims, awards and the saga's functions against a real Redis: first solver wins, fencing
//! tokens, awards recorded once, settled once, compensated once.

use leaderboard_proto::functions::{
    Applied, Apply, ApplyEntry, ApplyKind, AwardExpire, AwardFinish, AwardRecord, AwardSettle,
    AwardState, AwardsWaiting, CheckClue, ChestClaim, ChestRecorded, ClaimChest, ClaimClue,
    ClueClaim, Compensate, Function, Gate, OpenClue, RestoreChest, TokenCheck, VerdictSend,
    Waiting,
};
use leaderboard_proto::keys;

use super::functions::{acquire, board, setup};

fn open(conn: &mut redis::Connection, clue: &str, wave: u32) -> (i64, u32) {
    let opened = OpenClue::new(clue, wave, Gate::Off)
        .cmd()
        .query::<leaderboard_proto::functions::ClueOpened>(conn)
        .expect("open clue");
    (i64::from(opened.opened), opened.wave)
}

fn claim(conn: &mut redis::Connection, clue: &str, player_id: &str) -> ClueClaim {
    ClaimClue::new(clue, player_id, 1_700_000_000_000, Gate::Off)
        .cmd()
        .query(conn)
        .expect("claim clue")
}

fn check(conn: &mut redis::Connection, clue: &str, player_id: &str, token: u64) -> TokenCheck {
    CheckClue::new(clue, player_id, token, Gate::Off)
        .cmd()
        .query(conn)
        .expect("check clue")
}

fn chest(conn: &mut redis::Connection, chest: &str, award: &str) -> ChestClaim {
    ClaimChest::new(chest, award, Gate::Off)
        .cmd()
        .query(conn)
        .expect("claim chest")
}

fn entry<'a>(shard_id: u32, tier_seq: u64, player: &'a str, points: i64) -> ApplyEntry<'a> {
    ApplyEntry {
        shard_id,
        tier_seq,
        player,
        points,
        kind: ApplyKind::Points,
    }
}

fn award<'a>(
    shard_id: u32,
    tier_seq: u64,
    player: &'a str,
    points: i64,
    award_id: &'a str,
    chest_key: &'a str,
) -> ApplyEntry<'a> {
    ApplyEntry {
        kind: ApplyKind::Award {
            award_id,
            chest_key,
        },
        ..entry(shard_id, tier_seq, player, points)
    }
}

fn apply(
    conn: &mut redis::Connection,
    tier: u32,
    token: &str,
    entries: &[ApplyEntry<'_>],
) -> redis::RedisResult<Applied> {
    let mut call = Apply::new(tier, token, "1-0", 100);
    for entry in entries {
        call.entry(entry);
    }
    call.cmd().query(conn)
}

fn record(conn: &mut redis::Connection, tier: u32, award: &str) -> Option<AwardRecord> {
    let raw: Option<String> = redis::cmd("HGET")
        .arg(keys::tier_awards(tier))
        .arg(award)
        .query(conn)
        .expect("HGET");
    raw.map(|raw| AwardRecord::parse(&raw).expect("record format"))
}

fn state(conn: &mut redis::Connection, tier: u32, award: &str) -> Option<AwardState> {
    record(conn, tier, award).map(|r| r.state)
}

fn waiting(
    conn: &mut redis::Connection,
    tier: u32,
    which: Waiting,
    limit: usize,
) -> Vec<(String, String)> {
    AwardsWaiting::new(tier, which, limit)
        .cmd()
        .query(conn)
        .expect("waiting awards")
}

fn pending(conn: &mut redis::Connection, tier: u32, limit: usize) -> Vec<(String, String)> {
    waiting(conn, tier, Waiting::Pending, limit)
}

/// `hunt_award_settle`: (confirmed, revoked, rejected, top, revoked ids).
fn settle(
    conn: &mut redis::Connection,
    tier: u32,
    token: &str,
    pairs: &[(&str, &str)],
) -> redis::RedisResult<(u64, u64, Vec<String>)> {
    let mut call = AwardSettle::new(tier, token, 1_000, 100);
    for (award, holder) in pairs {
        call.holder(award, holder);
    }
    let settled: leaderboard_proto::functions::Settled = call.cmd().query(conn)?;
    let revoked = settled.revoked_ids.len() as u64;
    Ok((settled.confirmed, revoked, settled.revoked_ids))
}

fn compensate(
    conn: &mut redis::Connection,
    shard: u32,
    award: &str,
    now_ms: i64,
    cap: u64,
) -> redis::RedisResult<i64> {
    let payload = format!("payload-{award}");
    let added: bool = Compensate::new(shard, award, payload.as_bytes(), now_ms, 86_400_000, cap)
        .cmd()
        .query(conn)?;
    Ok(i64::from(added))
}

fn finish(
    conn: &mut redis::Connection,
    tier: u32,
    token: &str,
    awards: &[&str],
) -> redis::RedisResult<u64> {
    let mut call = AwardFinish::new(tier, token, 2_000);
    for award in awards {
        call.award(award);
    }
    call.cmd().query(conn)
}

#[test]
fn the_first_solver_wins_and_every_wave_hands_out_greater_tokens() {
    let (_server, mut conn) = setup();
    assert_eq!(claim(&mut conn, "riddle", "ada"), ClueClaim::Unknown);
    assert_eq!(check(&mut conn, "riddle", "ada", 1), TokenCheck::Unknown);

    assert_eq!(open(&mut conn, "riddle", 1), (1, 1));
    assert_eq!(
        claim(&mut conn, "riddle", "ada"),
        ClueClaim::Won { token: 1, wave: 1 }
    );
    let held = ClueClaim::Held {
        holder_player_id: "ada".into(),
        token: 1,
        wave: 1,
    };
    assert_eq!(claim(&mut conn, "riddle", "bob"), held);
    assert_eq!(
        claim(&mut conn, "riddle", "ada"),
        ClueClaim::Won { token: 1, wave: 1 },
        "the holder retrying gets its own token back"
    );
    // A repeated or late reset never reopens the clue.
    assert_eq!(open(&mut conn, "riddle", 1), (0, 1));
    assert_eq!(claim(&mut conn, "riddle", "bob"), held);

    assert_eq!(open(&mut conn, "riddle", 2), (1, 2));
    assert_eq!(open(&mut conn, "riddle", 1), (0, 2));
    assert_eq!(
        claim(&mut conn, "riddle", "bob"),
        ClueClaim::Won { token: 2, wave: 2 }
    );
    assert_eq!(check(&mut conn, "riddle", "bob", 2), TokenCheck::Current);
    assert_eq!(check(&mut conn, "riddle", "ada", 1), TokenCheck::Stale);
    assert_eq!(check(&mut conn, "riddle", "ada", 2), TokenCheck::NotHolder);
    assert_eq!(check(&mut conn, "riddle", "bob", 3), TokenCheck::Future);

    // Tokens keep growing across waves, whoever wins.
    let mut last = 2;
    for wave in 3..=6 {
        open(&mut conn, "riddle", wave);
        let player_id = format!("hunter-{wave}");
        let ClueClaim::Won { token, .. } = claim(&mut conn, "riddle", &player_id) else {
            panic!("wave {wave} had no winner");
        };
        assert!(token > last, "wave {wave}: token {token} after {last}");
        last = token;
    }
}

#[test]
fn a_chest_goes_to_the_first_award_that_claims_it() {
    let (_server, mut conn) = setup();
    assert_eq!(chest(&mut conn, "north-gate", "a1"), ChestClaim::Won);
    assert_eq!(
        chest(&mut conn, "north-gate", "a2"),
        ChestClaim::Held {
            holder_award_id: "a1".into()
        }
    );
    assert_eq!(chest(&mut conn, "north-gate", "a1"), ChestClaim::Won);
    let ttl: i64 = redis::cmd("TTL")
        .arg(keys::chest("north-gate"))
        .query(&mut conn)
        .expect("TTL");
    assert!((86_000..=86_400).contains(&ttl), "{ttl}");
}

#[test]
fn a_clue_solve_scores_only_with_a_token_above_every_one_applied() {
    let (_server, mut conn) = setup();
    let (_, token) = acquire(&mut conn, 1, "router-a", 60_000);
    let solve = |shard, tier_seq, player, clue_token| ApplyEntry {
        kind: ApplyKind::Clue {
            clue_id: "riddle",
            token: clue_token,
        },
        ..entry(shard, tier_seq, player, 10)
    };
    let applied = apply(
        &mut conn,
        1,
        &token,
        &[
            solve(1, 1, "ada", 1),
            // The same token again (a second solve under one claim), then a stale one.
            solve(2, 1, "bob", 1),
            solve(1, 2, "ada", 2),
            solve(2, 2, "bob", 1),
        ],
    )
    .expect("apply");
    assert_eq!((applied.applied, applied.stale), (4, 2));
    // A later batch: a stale token still scores nothing, a greater one does.
    let applied = apply(
        &mut conn,
        1,
        &token,
        &[solve(3, 1, "cyd", 2), solve(3, 2, "cyd", 5)],
    )
    .expect("apply");
    assert_eq!((applied.applied, applied.stale), (2, 1));
    assert_eq!(
        board(&mut conn, 1),
        vec![
            ("ada".to_owned(), 20),
            ("cyd".to_owned(), 10),
            ("bob".to_owned(), 0)
        ]
    );
}

#[test]
fn an_award_scores_once_and_waits_for_the_saga() {
    let (_server, mut conn) = setup();
    let (_, token) = acquire(&mut conn, 2, "router-a", 60_000);
    let applied = apply(
        &mut conn,
        2,
        &token,
        &[
            award(1, 1, "ada", 50, "a1", "gate"),
            award(2, 1, "bob", 50, "a2", "gate"),
            // A repeated award id scores nothing.
            award(2, 2, "bob", 50, "a2", "gate"),
        ],
    )
    .expect("apply");
    assert_eq!((applied.applied, applied.awards), (3, 2));
    assert_eq!(
        board(&mut conn, 2),
        vec![("ada".to_owned(), 50), ("bob".to_owned(), 50)]
    );
    assert_eq!(
        record(&mut conn, 2, "a1"),
        Some(AwardRecord {
            state: AwardState::Pending,
            chest_key: "gate".into(),
            player_id: "ada".into(),
            points: 50,
            shard_id: 1,
        })
    );
    let waiting: Vec<String> = pending(&mut conn, 2, 10)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(waiting, ["a1", "a2"], "in apply order");

    // The shard withdraws its own pending award: its points go, once; an unknown id is
    // tombstoned so it can never score later.
    let withdraw = |shard, tier_seq, player, award_id| ApplyEntry {
        kind: ApplyKind::Withdraw { award_id },
        ..entry(shard, tier_seq, player, 0)
    };
    apply(
        &mut conn,
        2,
        &token,
        &[
            withdraw(2, 3, "bob", "a2"),
            withdraw(2, 4, "bob", "a2"),
            withdraw(1, 2, "ada", "a9"),
        ],
    )
    .expect("apply");
    apply(
        &mut conn,
        2,
        &token,
        &[award(1, 3, "ada", 70, "a9", "cave")],
    )
    .expect("apply");
    assert_eq!(state(&mut conn, 2, "a2"), Some(AwardState::Withdrawn));
    assert_eq!(state(&mut conn, 2, "a9"), Some(AwardState::Withdrawn));
    assert_eq!(
        board(&mut conn, 2),
        vec![("ada".to_owned(), 50), ("bob".to_owned(), 0)]
    );
    assert_eq!(pending(&mut conn, 2, 10).len(), 1);
}

#[test]
fn the_saga_settles_each_award_once_and_tells_each_loser_once() {
    let (_server, mut conn) = setup();
    let (_, token) = acquire(&mut conn, 3, "router-a", 60_000);
    apply(
        &mut conn,
        3,
        &token,
        &[
            award(1, 1, "ada", 100, "a1", "gate"),
            award(2, 1, "bob", 100, "a2", "gate"),
            award(3, 1, "cyd", 100, "a3", "gate"),
        ],
    )
    .expect("apply");
    // The chest was claimed on the fast path by a2.
    assert_eq!(chest(&mut conn, "gate", "a2"), ChestClaim::Won);
    let pairs = [("a1", "a2"), ("a2", "a2"), ("a3", "a2")];

    // A stale token settles nothing.
    let err = settle(&mut conn, 3, "0:nobody", &pairs).expect_err("fenced");
    assert_eq!(err.code(), Some("FENCED"), "{err}");

    let (confirmed, revoked, ids) = settle(&mut conn, 3, &token, &pairs).expect("settle");
    assert_eq!((confirmed, revoked), (1, 2));
    assert_eq!(ids, ["a1", "a3"]);
    // Settling again (a saga resumed after a crash) changes nothing.
    assert_eq!(
        settle(&mut conn, 3, &token, &pairs).expect("settle"),
        (0, 0, vec![])
    );
    assert_eq!(
        board(&mut conn, 3),
        vec![
            ("bob".to_owned(), 100),
            ("ada".to_owned(), 0),
            ("cyd".to_owned(), 0)
        ]
    );
    // Revoked awards wait apart until their shards are told.
    assert!(pending(&mut conn, 3, 10).is_empty());
    let revoked: Vec<String> = waiting(&mut conn, 3, Waiting::Revoked, 10)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(revoked, ["a1", "a3"]);

    assert_eq!(compensate(&mut conn, 1, "a1", 1_000, 10).expect("send"), 1);
    assert_eq!(compensate(&mut conn, 1, "a1", 1_001, 10).expect("send"), 0);
    assert_eq!(compensate(&mut conn, 3, "a3", 1_000, 10).expect("send"), 1);
    let inbox: usize = redis::cmd("XLEN")
        .arg(keys::shard_inbox(1))
        .query(&mut conn)
        .expect("XLEN");
    assert_eq!(inbox, 1);

    assert!(finish(&mut conn, 3, "0:nobody", &["a1"]).is_err());
    assert_eq!(
        finish(&mut conn, 3, &token, &["a1", "a3"]).expect("finish"),
        2
    );
    assert_eq!(
        finish(&mut conn, 3, &token, &["a1", "a3"]).expect("finish"),
        0
    );
    assert_eq!(state(&mut conn, 3, "a1"), Some(AwardState::Compensated));
    assert_eq!(state(&mut conn, 3, "a2"), Some(AwardState::Confirmed));
    assert!(waiting(&mut conn, 3, Waiting::Revoked, 10).is_empty());

    // Settled records are forgotten after their time: a2 settled at 1000, a1 and a3 at 2000.
    let expire = AwardExpire::new(3, 1_500, 100);
    assert_eq!(expire.cmd().query::<u64>(&mut conn).expect("expire"), 1);
    assert_eq!(state(&mut conn, 3, "a2"), None);
    assert_eq!(state(&mut conn, 3, "a1"), Some(AwardState::Compensated));
}

#[test]
fn a_confirmed_verdict_waits_to_be_recorded_by_its_shard_before_it_may_be_told() {
    let (_server, mut conn) = setup();
    let (_, token) = acquire(&mut conn, 3, "router-a", 60_000);
    apply(
        &mut conn,
        3,
        &token,
        &[
            award(1, 1, "ada", 100, "a1", "gate"),
            award(2, 1, "bob", 100, "a2", "gate"),
        ],
    )
    .expect("apply");
    assert_eq!(chest(&mut conn, "gate", "a1"), ChestClaim::Won);
    let (confirmed, revoked, _) =
        settle(&mut conn, 3, &token, &[("a1", "a1"), ("a2", "a1")]).expect("settle");
    assert_eq!((confirmed, revoked), (1, 1));
    // The confirmed award waits until its shard is asked to record it.
    let confirming: Vec<String> = waiting(&mut conn, 3, Waiting::Confirming, 10)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(confirming, ["a1"]);

    let recorded = |conn: &mut redis::Connection| -> Option<String> {
        redis::cmd("GET")
            .arg(keys::chest_recorded("gate"))
            .query(conn)
            .expect("GET")
    };
    let holds = |conn: &mut redis::Connection, award: &str, mark: bool| -> bool {
        ChestRecorded::new("gate", award, mark)
            .cmd()
            .query(conn)
            .expect("chest recorded")
    };
    // Asking whether an award holds the chest marks nothing; an award that does not hold it is
    // never marked.
    assert!(holds(&mut conn, "a1", false));
    assert!(!holds(&mut conn, "a2", true));
    assert_eq!(recorded(&mut conn), None);
    assert!(holds(&mut conn, "a1", true));
    assert_eq!(recorded(&mut conn).as_deref(), Some("a1"));
    let ttl: i64 = redis::cmd("TTL")
        .arg(keys::chest_recorded("gate"))
        .query(&mut conn)
        .expect("TTL");
    assert!(ttl > 86_000, "the mark lives as long as the claim: {ttl}");

    // The request to record goes to the shard's verdict stream, refused when it is full.
    let send = |conn: &mut redis::Connection, award: &str| {
        VerdictSend::new(1, award, "gate", 2)
            .cmd()
            .query::<u64>(conn)
    };
    assert_eq!(send(&mut conn, "a1").expect("send"), 1);
    assert_eq!(send(&mut conn, "a1").expect("send"), 1);
    let err = send(&mut conn, "a1").expect_err("full");
    assert_eq!(err.code(), Some("INBOX_FULL"), "{err}");
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(keys::shard_verdicts(1))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .expect("XRANGE");
    assert_eq!(entries[0].1["a"], "a1");
    assert_eq!(entries[0].1["c"], "gate");

    // A chest put back from a shard file is recorded by definition; one held by another is not
    // taken over.
    let _: () = redis::cmd("FLUSHALL").query(&mut conn).expect("FLUSHALL");
    let restored: ChestClaim = RestoreChest::new("gate", "a1")
        .cmd()
        .query(&mut conn)
        .expect("restore");
    assert_eq!(restored, ChestClaim::Won);
    assert_eq!(recorded(&mut conn).as_deref(), Some("a1"));
    let other: ChestClaim = RestoreChest::new("gate", "a2")
        .cmd()
        .query(&mut conn)
        .expect("restore");
    assert_eq!(
        other,
        ChestClaim::Held {
            holder_award_id: "a1".into()
        }
    );
    assert_eq!(recorded(&mut conn).as_deref(), Some("a1"));
}

#[test]
fn a_full_inbox_refuses_instead_of_trimming() {
    let (_server, mut conn) = setup();
    for award in ["a1", "a2"] {
        assert_eq!(compensate(&mut conn, 9, award, 1_000, 2).expect("send"), 1);
    }
    let err = compensate(&mut conn, 9, "a3", 1_000, 2).expect_err("full");
    assert_eq!(err.code(), Some("INBOX_FULL"), "{err}");
    // Acknowledged (deleted) entries make room again.
    let ids: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(keys::shard_inbox(9))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .expect("XRANGE");
    let _: u64 = redis::cmd("XDEL")
        .arg(keys::shard_inbox(9))
        .arg(&ids[0].0)
        .query(&mut conn)
        .expect("XDEL");
    assert_eq!(compensate(&mut conn, 9, "a3", 1_000, 2).expect("send"), 1);
}

#[test]
fn an_inbox_entry_is_acknowledged_and_deleted_in_one_call() {
    let (_server, mut conn) = setup();
    assert_eq!(compensate(&mut conn, 4, "a1", 1_000, 10).expect("add"), 1);
    let inbox = keys::shard_inbox(4);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&inbox)
        .arg("shard")
        .arg("0")
        .query(&mut conn)
        .expect("group");
    type Read = Vec<(String, Vec<(String, Vec<(String, Vec<u8>)>)>)>;
    let read: Read = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("shard")
        .arg("game")
        .arg("STREAMS")
        .arg(&inbox)
        .arg(">")
        .query(&mut conn)
        .expect("read");
    let id = read[0].1[0].0.clone();
    let ack = leaderboard_proto::functions::InboxAck::new(4, "shard", &id);
    assert_eq!(ack.cmd().query::<u64>(&mut conn).expect("ack"), 1);
    // Twice is harmless; nothing is left pending or stored.
    assert_eq!(ack.cmd().query::<u64>(&mut conn).expect("ack again"), 0);
    let (pending, _, _, _): (u64, redis::Value, redis::Value, redis::Value) =
        redis::cmd("XPENDING")
            .arg(&inbox)
            .arg("shard")
            .query(&mut conn)
            .expect("pending");
    assert_eq!(pending, 0);
    let length: u64 = redis::cmd("XLEN")
        .arg(&inbox)
        .query(&mut conn)
        .expect("len");
    assert_eq!(length, 0);
}
