//! The correctness checks of `loadtest run`: what Redis and the router show, against the ground
//! truth read back from every shard's own SQLite log.
//!
//! The rules are the router's (`hunt_apply` and the saga): a `ScoreGained` scores once; a
//! `ClueSolved` scores once per (tier, clue, token) — the load gives each clue a single winner,
//! and that is itself checked; a `TreasureAwarded` scores once per award id, and only for the
//! award that holds its chest (`hunt:chest:{key}`) once the saga has settled.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;

use leaderboard_proto::keys;
use leaderboard_proto::v1::HuntEvent;
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::v1::leaderboard_service_client::LeaderboardServiceClient;
use serde::Serialize;
use shard_writer::wal::reader::ShardFile;
use tonic::transport::Channel;

use crate::harness::leaderboard::board;

/// Examples named per failed check.
const EXAMPLES: usize = 5;

/// One correctness check and what it found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    /// What is checked.
    pub(crate) name: &'static str,
    /// Whether it held.
    pub(crate) passed: bool,
    /// What was compared, and on failure a few of the differences.
    pub(crate) detail: String,
}

fn check(name: &'static str, compared: String, differences: &[String]) -> Check {
    let detail = if differences.is_empty() {
        compared
    } else {
        let examples: Vec<&str> = differences
            .iter()
            .take(EXAMPLES)
            .map(String::as_str)
            .collect();
        format!(
            "{compared}; {} differ, e.g. {}",
            differences.len(),
            examples.join("; ")
        )
    };
    Check {
        name,
        passed: differences.is_empty(),
        detail,
    }
}

/// A chest award as the logs hold it (its first occurrence).
struct Award {
    tier: u32,
    player: String,
    points: i64,
}

/// What the shard logs say.
#[derive(Default)]
struct Logs {
    /// (shard, tier) → (highest tier_seq, rows).
    marks: BTreeMap<(u32, u32), (u64, u64)>,
    /// tier → player → points of the events that score unconditionally.
    totals: BTreeMap<u32, BTreeMap<String, i64>>,
    /// (tier, clue, token) already counted.
    solves: HashSet<(u32, String, u64)>,
    /// clue → (players who solved it, tokens).
    clues: BTreeMap<String, (BTreeSet<String>, BTreeSet<u64>)>,
    /// award id → the award.
    awards: BTreeMap<String, Award>,
    /// chest key → award ids.
    chests: BTreeMap<String, BTreeSet<String>>,
    events: u64,
}

impl Logs {
    fn add(&mut self, shard: u32, tier: u32, tier_seq: u64, event: HuntEvent) {
        self.events += 1;
        let mark = self.marks.entry((shard, tier)).or_default();
        mark.0 = mark.0.max(tier_seq);
        mark.1 += 1;
        let mut score = |player: &str, points: i64| {
            *self
                .totals
                .entry(tier)
                .or_default()
                .entry(player.to_owned())
                .or_default() += points;
        };
        match event.kind {
            Some(Kind::ScoreGained(e)) => score(&e.player_id, e.points),
            Some(Kind::ClueSolved(e)) => {
                if self.solves.insert((tier, e.clue_id.clone(), e.token)) {
                    score(&e.player_id, e.points);
                }
                let clue = self.clues.entry(e.clue_id).or_default();
                clue.0.insert(e.player_id);
                clue.1.insert(e.token);
            }
            Some(Kind::TreasureAwarded(e)) => {
                self.chests
                    .entry(e.chest_key.clone())
                    .or_default()
                    .insert(e.award_id.clone());
                self.awards.entry(e.award_id).or_insert(Award {
                    tier,
                    player: e.player_id,
                    points: e.points,
                });
            }
            _ => {}
        }
    }
}

/// Reads every shard file: `(shard id, path)`.
fn read_logs(files: &[(u32, PathBuf)]) -> anyhow::Result<Logs> {
    let mut logs = Logs::default();
    for (shard, path) in files {
        ShardFile::open(path)?.for_each_event(|stored| {
            logs.add(*shard, stored.tier, stored.tier_seq, stored.event);
        })?;
    }
    Ok(logs)
}

/// Runs every check against the shard files (`(shard id, path)`, writers shut down), Redis and
/// the router's `GetTop`.
///
/// # Errors
/// When a file, Redis or the router cannot be read (a difference is a failed check, not an error).
pub(crate) async fn verify(
    files: Vec<(u32, PathBuf)>,
    conn: &mut redis::aio::MultiplexedConnection,
    grpc: &mut LeaderboardServiceClient<Channel>,
) -> anyhow::Result<(Vec<Check>, u64)> {
    let mut logs = tokio::task::spawn_blocking(move || read_logs(&files)).await??;
    let mut checks = Vec::new();

    // Applied marks against the logs.
    let mut pipe = redis::pipe();
    for (shard, tier) in logs.marks.keys() {
        pipe.hget(keys::tier_applied(*tier), keys::shard_field(*shard));
    }
    let applied: Vec<Option<u64>> = pipe.query_async(conn).await?;
    let (mut short, mut beyond, mut holes) = (Vec::new(), Vec::new(), Vec::new());
    for (((shard, tier), (highest, rows)), applied) in logs.marks.iter().zip(applied) {
        let applied = applied.unwrap_or(0);
        let at = format!("shard {shard} tier {tier}: applied {applied}, committed {highest}");
        match applied.cmp(highest) {
            std::cmp::Ordering::Less => short.push(at),
            std::cmp::Ordering::Greater => beyond.push(at),
            std::cmp::Ordering::Equal => {}
        }
        if rows != highest {
            holes.push(format!(
                "shard {shard} tier {tier}: {rows} rows up to tier_seq {highest}"
            ));
        }
    }
    let mut marks = short.clone();
    marks.extend(beyond.iter().cloned());
    marks.extend(holes);
    checks.push(check(
        "applied mark = highest committed tier_seq, per shard and tier",
        format!("{} (shard, tier) pairs", logs.marks.len()),
        &marks,
    ));

    // Chests: the holder of each, and the saga's verdict on every award.
    let chest_keys: Vec<&String> = logs.chests.keys().collect();
    let mut pipe = redis::pipe();
    for key in &chest_keys {
        pipe.get(keys::chest(key));
    }
    let holders: Vec<Option<String>> = pipe.query_async(conn).await?;
    let holders: BTreeMap<String, Option<String>> =
        chest_keys.into_iter().cloned().zip(holders).collect();
    let award_ids: Vec<&String> = logs.awards.keys().collect();
    let mut pipe = redis::pipe();
    for id in &award_ids {
        if let Some(award) = logs.awards.get(*id) {
            pipe.hget(keys::tier_awards(award.tier), *id);
        }
    }
    let records: Vec<Option<String>> = pipe.query_async(conn).await?;
    let states: BTreeMap<&String, String> = award_ids
        .into_iter()
        .zip(records)
        .map(|(id, record)| {
            let state = record
                .as_deref()
                .and_then(|r| r.split('\t').next())
                .unwrap_or("missing")
                .to_owned();
            (id, state)
        })
        .collect();
    let mut chest_differences = Vec::new();
    for (chest, awards) in &logs.chests {
        let holder = holders.get(chest).cloned().flatten();
        let confirmed: Vec<&String> = awards
            .iter()
            .filter(|id| states.get(id).is_some_and(|s| s == "confirmed"))
            .collect();
        let holder_awarded = holder.as_ref().is_some_and(|h| awards.contains(h));
        if confirmed.len() != 1 || !holder_awarded || holder.as_ref() != confirmed.first().copied()
        {
            chest_differences.push(format!(
                "{chest}: {} awards, confirmed {confirmed:?}, holder {holder:?}",
                awards.len()
            ));
        }
        for id in awards {
            let state = states.get(id).map_or("missing", String::as_str);
            let settled_right = if Some(id) == holder.as_ref() {
                state == "confirmed"
            } else {
                state == "revoked" || state == "compensated"
            };
            if !settled_right {
                chest_differences.push(format!("{chest}: award {id} is {state}"));
            }
        }
    }
    let awards_total = logs.awards.len();
    checks.push(check(
        "one confirmed award per chest, holding hunt:chest:{key}",
        format!(
            "{} chests, {awards_total} awards ({} duplicates revoked)",
            logs.chests.len(),
            awards_total.saturating_sub(logs.chests.len())
        ),
        &chest_differences,
    ));
    for award_id in holders.values().flatten() {
        if let Some(award) = logs.awards.get(award_id) {
            *logs
                .totals
                .entry(award.tier)
                .or_default()
                .entry(award.player.clone())
                .or_default() += award.points;
        }
    }

    // Clues: one winner (and one token) per clue; clue ids are per wave.
    let clue_differences: Vec<String> = logs
        .clues
        .iter()
        .filter(|(_, (players, tokens))| players.len() != 1 || tokens.len() != 1)
        .map(|(clue, (players, tokens))| format!("{clue}: solved by {players:?} with {tokens:?}"))
        .collect();
    checks.push(check(
        "one winner per clue per wave",
        format!("{} clues solved", logs.clues.len()),
        &clue_differences,
    ));

    // The boards against the totals.
    let (mut lost, mut twice, mut players) = (Vec::new(), Vec::new(), 0usize);
    for tier in leaderboard_proto::rewards::tier_ids() {
        let got = board(grpc, tier).await?;
        let want = logs.totals.remove(&tier).unwrap_or_default();
        let everyone: BTreeSet<&String> = got.keys().chain(want.keys()).collect();
        players += everyone.len();
        for player in everyone {
            let (got, want) = (
                got.get(player).copied().unwrap_or(0),
                want.get(player).copied().unwrap_or(0),
            );
            let at = format!("tier {tier} {player}: board {got}, logs {want}");
            match got.cmp(&want) {
                std::cmp::Ordering::Less => lost.push(at),
                std::cmp::Ordering::Greater => twice.push(at),
                std::cmp::Ordering::Equal => {}
            }
        }
    }
    let mut board_differences = lost.clone();
    board_differences.extend(twice.iter().cloned());
    checks.push(check(
        "every tier's leaderboard = totals from the shard logs",
        format!("{players} players over every tier"),
        &board_differences,
    ));
    lost.extend(short);
    twice.extend(beyond);
    checks.push(check(
        "zero events lost",
        "no player below its logged total, no applied mark short".into(),
        &lost,
    ));
    checks.push(check(
        "zero events applied twice",
        "no player above its logged total, no applied mark beyond".into(),
        &twice,
    ));
    Ok((checks, logs.events))
}

/// An error naming every failed check.
///
/// # Errors
/// When any of `checks` failed.
pub(crate) fn fail_on_checks(checks: &[Check]) -> anyhow::Result<()> {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("correctness checks failed:\n  {}", failed.join("\n  "))
    }
}
