//! The dedup saga: one winner per chest. `hunt_apply` scores every `TreasureAwarded` at once and
//! records it as pending; the saga then claims each pending award's chest, confirms the award
//! that holds it, revokes the others (their points taken back) and tells their shards through
//! their compensation inboxes.
//!
//! In Redis, per tier, `hunt:{t<N>}:awards` maps an award id to its record
//! (`<state>\t<chest>\t<player>\t<points>\t<shard>`), `:awards:pending` orders the awards whose
//! chests the saga has not claimed yet and `:awards:revoked` those whose shards it has not told
//! yet (both by when they were applied), and `:awards:settled` remembers when each settled one
//! finished (for expiry). A record moves:
//!
//! ```text
//! pending ──settle──▶ confirmed                              (holds its chest; final)
//!    │     └─settle──▶ revoked ──compensate, finish──▶ compensated   (final)
//!    └──shard's own AwardRevoked──▶ withdrawn                  (final)
//! ```
//!
//! Design constraints:
//! - One step runs under the tier's fence token: `hunt_award_settle` and `hunt_award_finish`
//!   refuse a stale one (`FENCED`), and the worker then drops the tier exactly as after a fenced
//!   apply.
//! - Every step is idempotent, so a router killed anywhere resumes safely:
//!   - a chest claim (`SET NX`) claimed again by its holder says `Won` again, and by anyone else
//!     names the same holder: re-running the claims after a crash gives the same answers;
//!   - `hunt_award_settle` changes only `pending` records, so an award is confirmed or revoked
//!     (and its points taken back) at most once, however often it is settled;
//!   - a revoked award stays in the revoked set until `hunt_award_finish`, so the next step finds
//!     it again and compensates it;
//!   - `hunt_compensate` adds to a shard's inbox once per award id (its sent set remembers the
//!     id for the record TTL), so a compensation re-sent after a crash is not added twice;
//!   - `hunt_award_finish` changes only `revoked` records;
//!   - asking a shard to record a verdict again is harmless: its writer records a holder only
//!     while Redis names it, and recording is a merge.
//! - A verdict is told (`GetAward`, `GetChest`) only once a shard file records the chest's
//!   holder (`hunt:chest:{<key>}:recorded`), so a Redis that forgets gets it back from the files.
//!   Each award the saga confirms waits in `:awards:confirming` until its own shard has been asked
//!   to record it (`hunt:shard:{<id>}:verdicts`); a compensation carries its chest's holder to
//!   the revoked award's shard, which records it too.
//! - An inbox that is full (`INBOX_FULL`) is never trimmed: the award stays `revoked`, is counted
//!   and logged, and a later step sends it. Revoked awards wait in a set of their own, so a shard
//!   that stops reading its inbox delays only its own compensations, never the settling of other
//!   awards.
//! - The router's wall clock only stamps records for expiry (`hunt_award_expire`) and the
//!   compensation event's `occurred_at_ms`; nothing is decided by it. The winner of a chest is
//!   whichever award claimed it first: a shard's fast-path claim, or else the award applied
//!   first in its tier.
//! - A step handles at most `saga_batch` awards: one read, one claim pipeline, one settle call,
//!   one compensation pipeline, one finish call.

use std::time::Duration;

use hunt_redis::connection::Connection;
use leaderboard_proto::functions::{
    AwardExpire, AwardFinish, AwardRecord, AwardSettle, AwardState, AwardsWaiting, ChestClaim,
    ClaimChest, ClaimsState, Compensate, ErrorCode, Function, Gate, Settled, VerdictSend, Waiting,
};
use leaderboard_proto::keys;
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::v1::{AwardRevoked, HuntEvent};
use prost::Message;
use redis::RedisResult;

use crate::cache::{self, Cache};
use crate::config::{CACHED_TOP, Failpoint, RouterConfig};
use crate::metrics as m;

/// What one saga step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepReport {
    /// Awards waiting in the pending set when the step began.
    pub waiting: u64,
    /// Awards the step read (at most the saga batch).
    pub seen: usize,
    /// Awards confirmed as their chest's holder.
    pub confirmed: u64,
    /// Awards revoked by this step's settle.
    pub revoked: u64,
    /// Compensations added to shard inboxes.
    pub compensated: u64,
    /// Revoked awards marked compensated (their shard has been told).
    pub finished: u64,
    /// Compensations deferred because the shard's inbox was full.
    pub inbox_full: u64,
    /// Confirmed awards whose shards were asked to record the verdict.
    pub asked: u64,
}

impl StepReport {
    /// Whether the step moved any award to another state.
    #[must_use]
    pub fn progressed(&self) -> bool {
        self.confirmed + self.revoked + self.finished > 0
    }

    /// Awards still waiting after the step.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.waiting.saturating_sub(self.confirmed + self.finished)
    }
}

/// Runs one saga step for `tier` under fence `token`: reads up to `config.saga_batch` of the
/// oldest waiting awards, claims the chests of the pending ones, settles them, refreshes the
/// tier's cached top in `cache` when the settle may have changed it, compensates every revoked
/// award and finishes those whose shard was told.
///
/// # Errors
/// The Redis error; a stale token fails with the server error code `FENCED`
/// (see [`crate::apply::is_fenced`]). An inbox that is full is not an error: the award waits for
/// a later step.
pub async fn step(
    conn: &mut Connection,
    tier: u32,
    token: &str,
    config: &RouterConfig,
    cache: &Cache,
) -> RedisResult<StepReport> {
    let mut report = StepReport::default();
    let (waiting, awards, confirming) = read_waiting(conn, tier, config.saga_batch).await?;
    report.waiting = waiting;
    report.seen = awards.len();
    // Confirmed awards whose shards are still to be asked to record them: from earlier steps,
    // and (below) those this step confirms.
    let mut to_record: Vec<(String, AwardRecord)> = confirming;
    if awards.is_empty() {
        ask_to_record(conn, tier, config, &to_record, &mut report).await?;
        set_pending_gauge(tier, 0);
        return Ok(report);
    }

    let pending: Vec<&(String, AwardRecord)> = awards
        .iter()
        .filter(|(_, record)| record.state == AwardState::Pending)
        .collect();
    let mut revoked: Vec<&str> = awards
        .iter()
        .filter(|(_, record)| record.state == AwardState::Revoked)
        .map(|(award_id, _)| award_id.as_str())
        .collect();
    let holders = if pending.is_empty() {
        Vec::new()
    } else {
        claim_chests(conn, &pending).await?
    };
    if !holders.is_empty() {
        failpoint(config, Failpoint::SagaAfterClaim);
        let settled = settle(conn, tier, token, &holders).await?;
        report.confirmed = settled.confirmed;
        report.revoked = settled.revoked_ids.len() as u64;
        metrics::counter!(m::AWARDS_CONFIRMED).increment(settled.confirmed);
        metrics::counter!(m::AWARDS_REVOKED).increment(report.revoked);
        metrics::counter!(m::REJECTED).increment(settled.rejected);
        if settled.top_changed {
            let top = cache::read_range(conn, tier, 0, CACHED_TOP as u64 - 1).await?;
            cache.publish(tier, top);
        }
        failpoint(config, Failpoint::SagaAfterSettle);
        for (award_id, holder) in &holders {
            let award_id: &str = award_id;
            if award_id == holder.as_str()
                && let Some((_, record)) = pending.iter().find(|(id, _)| id.as_str() == award_id)
                && !to_record.iter().any(|(id, _)| id.as_str() == award_id)
            {
                to_record.push((award_id.to_owned(), record.clone()));
            }
        }
        for award_id in &settled.revoked_ids {
            if let Some((known, _)) = awards.iter().find(|(id, _)| id == award_id) {
                revoked.push(known.as_str());
            }
        }
    }

    if !revoked.is_empty() {
        let to_send: Vec<(&str, &AwardRecord)> = revoked
            .iter()
            .filter_map(|award_id| {
                awards
                    .iter()
                    .find(|(id, _)| id == award_id)
                    .map(|(id, record)| (id.as_str(), record))
            })
            .collect();
        if !verdicts_replicated(conn, tier, config, &to_send).await? {
            ask_to_record(conn, tier, config, &to_record, &mut report).await?;
            set_pending_gauge(tier, report.remaining());
            return Ok(report);
        }
        let sent = compensate(conn, tier, config, &to_send, &mut report).await?;
        if !sent.is_empty() {
            let mut finish = AwardFinish::new(tier, token, now_ms());
            for award_id in &sent {
                finish.award(award_id);
            }
            report.finished = hunt_redis::call(conn, &finish).await?;
        }
    }
    ask_to_record(conn, tier, config, &to_record, &mut report).await?;
    set_pending_gauge(tier, report.remaining());
    tracing::debug!(
        tier,
        seen = report.seen,
        confirmed = report.confirmed,
        revoked = report.revoked,
        compensated = report.compensated,
        finished = report.finished,
        asked = report.asked,
        "saga step"
    );
    Ok(report)
}

/// With `claim_replicas`, whether that many replicas hold the verdicts behind `revoked` (the
/// tier's award records and the chests' holders): a compensation tells a verdict, so it is sent
/// only once a failover could not lose it. Otherwise the awards wait for a later step.
async fn verdicts_replicated(
    conn: &mut Connection,
    tier: u32,
    config: &RouterConfig,
    revoked: &[(&str, &AwardRecord)],
) -> RedisResult<bool> {
    if config.claim_replicas == 0 || revoked.is_empty() {
        return Ok(true);
    }
    let mut keys = vec![keys::tier_awards(tier)];
    keys.extend(
        revoked
            .iter()
            .filter(|(_, record)| !record.chest_key.is_empty())
            .map(|(_, record)| keys::chest(&record.chest_key)),
    );
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let wait = config.redis_response_timeout / 2;
    let acked = hunt_redis::replicated(conn, &keys, config.claim_replicas, wait).await?;
    if acked < u64::from(config.claim_replicas) {
        tracing::warn!(
            tier,
            acked,
            wanted = config.claim_replicas,
            "compensations wait: their verdicts are not yet on enough Redis replicas"
        );
        return Ok(false);
    }
    Ok(true)
}

/// Forgets up to `config.saga_batch` award records of `tier` that settled longer than
/// `config.record_ttl` ago; returns how many.
///
/// # Errors
/// The Redis error.
pub async fn expire(conn: &mut Connection, tier: u32, config: &RouterConfig) -> RedisResult<u64> {
    let before_ms = now_ms().saturating_sub(millis(config.record_ttl));
    hunt_redis::call(conn, &AwardExpire::new(tier, before_ms, config.saga_batch)).await
}

/// An award id with its record.
type Award = (String, AwardRecord);

/// The number of awards of `tier` waiting for the saga (pending and revoked), the oldest `limit`
/// of each set with their records, and the oldest `limit` confirmed awards whose shards are
/// still to be asked to record them. A record that cannot be read is logged and left out (and
/// a confirming award without one is forgotten: there is no verdict left to record).
async fn read_waiting(
    conn: &mut Connection,
    tier: u32,
    limit: usize,
) -> RedisResult<(u64, Vec<Award>, Vec<Award>)> {
    let mut pipe = redis::pipe();
    pipe.zcard(Waiting::Pending.key(tier))
        .zcard(Waiting::Revoked.key(tier));
    for waiting in [Waiting::Pending, Waiting::Revoked, Waiting::Confirming] {
        pipe.add_command(AwardsWaiting::new(tier, waiting, limit).cmd().clone());
    }
    type Awards = <AwardsWaiting as Function>::Reply;
    let (pending, revoked, pending_awards, revoked_awards, confirming_awards): (
        u64,
        u64,
        Awards,
        Awards,
        Awards,
    ) = hunt_redis::pipeline(conn, &pipe).await?;
    let parse = |raw: Awards, unreadable: &mut Vec<String>| {
        let mut awards = Vec::with_capacity(raw.len());
        for (award_id, record) in raw {
            match AwardRecord::parse(&record) {
                Some(parsed) => awards.push((award_id, parsed)),
                None => {
                    tracing::error!(
                        tier,
                        award_id = %award_id,
                        "skipping an award whose record cannot be read"
                    );
                    unreadable.push(award_id);
                }
            }
        }
        awards
    };
    let mut ignored = Vec::new();
    let mut awards = parse(pending_awards, &mut ignored);
    awards.extend(parse(revoked_awards, &mut ignored));
    let mut gone = Vec::new();
    let confirming = parse(confirming_awards, &mut gone);
    if !gone.is_empty() {
        redis::cmd("ZREM")
            .arg(Waiting::Confirming.key(tier))
            .arg(&gone)
            .query_async::<u64>(conn)
            .await?;
    }
    Ok((pending + revoked, awards, confirming))
}

/// Asks the shard of each confirmed award in `confirmed` to record the verdict in its file, in
/// one pipeline, and takes the awards asked out of the tier's confirming set. A shard whose
/// verdict stream is full is counted and logged; its awards stay for a later step.
async fn ask_to_record(
    conn: &mut Connection,
    tier: u32,
    config: &RouterConfig,
    confirmed: &[Award],
    report: &mut StepReport,
) -> RedisResult<()> {
    if confirmed.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (award_id, record) in confirmed {
        pipe.add_command(
            VerdictSend::new(
                record.shard_id,
                award_id,
                &record.chest_key,
                config.inbox_cap,
            )
            .cmd()
            .clone(),
        );
    }
    let replies: Vec<RedisResult<u64>> = hunt_redis::pipeline_each(conn, &pipe).await?;
    let mut asked = Vec::with_capacity(confirmed.len());
    for ((award_id, record), reply) in confirmed.iter().zip(replies) {
        match reply {
            Ok(_) => asked.push(award_id.as_str()),
            Err(err) if ErrorCode::of(&err) == Some(ErrorCode::InboxFull) => {
                metrics::counter!(m::INBOX_FULL).increment(1);
                tracing::warn!(
                    tier,
                    shard = record.shard_id,
                    award_id = %award_id,
                    "shard's verdict stream is full: the confirmed award waits to be recorded"
                );
            }
            Err(err) => return Err(err),
        }
    }
    if !asked.is_empty() {
        redis::cmd("ZREM")
            .arg(Waiting::Confirming.key(tier))
            .arg(&asked)
            .query_async::<u64>(conn)
            .await?;
        report.asked = asked.len() as u64;
    }
    Ok(())
}

/// Claims the chest of each pending award in one pipeline; returns (award id, chest holder).
/// While the claims gate is closed (Redis lost its data and the shards are restoring the chest
/// holders they told), nothing is claimed: the awards stay pending until a later sweep, so the
/// saga never picks a holder a shard file contradicts.
async fn claim_chests<'a>(
    conn: &mut Connection,
    pending: &[&'a (String, AwardRecord)],
) -> RedisResult<Vec<(&'a str, String)>> {
    let proposal = format!("router.{}.{}", std::process::id(), now_ms());
    let state = hunt_redis::call(conn, &ClaimsState::new(&proposal)).await?;
    if !state.open {
        tracing::debug!("claims gate closed: chest claims wait for the shards' restore");
        return Ok(Vec::new());
    }
    let gate = if matches!(conn, Connection::Cluster(_)) {
        Gate::Checked
    } else {
        Gate::Atomic(&state.incarnation)
    };
    let mut pipe = redis::pipe();
    for (award_id, record) in pending {
        pipe.add_command(
            ClaimChest::new(&record.chest_key, award_id, gate)
                .cmd()
                .clone(),
        );
    }
    let claims: Vec<ChestClaim> = match hunt_redis::pipeline(conn, &pipe).await {
        Err(err) if ErrorCode::of(&err) == Some(ErrorCode::Recovering) => return Ok(Vec::new()),
        claims => claims?,
    };
    Ok(pending
        .iter()
        .zip(claims)
        .map(|((award_id, _), claim)| {
            let holder = match claim {
                ChestClaim::Won => award_id.clone(),
                ChestClaim::Held { holder_award_id } => holder_award_id,
            };
            (award_id.as_str(), holder)
        })
        .collect())
}

/// Settles each (award id, chest holder) pair under `token`.
async fn settle(
    conn: &mut Connection,
    tier: u32,
    token: &str,
    holders: &[(&str, String)],
) -> RedisResult<Settled> {
    let mut settle = AwardSettle::new(tier, token, now_ms(), CACHED_TOP as u64);
    for (award_id, holder) in holders {
        settle.holder(award_id, holder);
    }
    hunt_redis::call(conn, &settle).await
}

/// Sends an `AwardRevoked` to the shard of each revoked award, in one pipeline; returns the
/// awards whose shard now has it (sent now, or already before). An award whose shard's inbox is
/// full is counted, logged and left for a later step.
async fn compensate<'a>(
    conn: &mut Connection,
    tier: u32,
    config: &RouterConfig,
    revoked: &[(&'a str, &AwardRecord)],
    report: &mut StepReport,
) -> RedisResult<Vec<&'a str>> {
    let now = now_ms();
    // The award holding each chest, so the shard records the verdict with the compensation.
    let mut holders = redis::pipe();
    for (_, record) in revoked {
        holders.get(keys::chest(&record.chest_key));
    }
    let holders: Vec<Option<String>> = holders.query_async(conn).await?;
    let mut pipe = redis::pipe();
    for ((award_id, record), holder) in revoked.iter().zip(holders) {
        let event = HuntEvent {
            shard_id: record.shard_id,
            tier,
            occurred_at_ms: now,
            kind: Some(Kind::AwardRevoked(AwardRevoked {
                award_id: (*award_id).to_owned(),
                chest_key: record.chest_key.clone(),
                player_id: record.player_id.clone(),
                points: record.points,
                holder_award_id: holder.unwrap_or_default(),
            })),
            ..HuntEvent::default()
        };
        let compensate = Compensate::new(
            record.shard_id,
            award_id,
            &event.encode_to_vec(),
            now,
            millis(config.record_ttl),
            config.inbox_cap,
        );
        pipe.add_command(compensate.cmd().clone());
    }
    // Compensating is idempotent per award id: after a library reload it all goes again.
    let replies: Vec<RedisResult<bool>> = hunt_redis::pipeline_each(conn, &pipe).await?;
    let mut sent = Vec::with_capacity(revoked.len());
    for ((award_id, record), reply) in revoked.iter().zip(replies) {
        match reply {
            Ok(added) => {
                if added {
                    report.compensated += 1;
                    metrics::counter!(m::COMPENSATIONS).increment(1);
                }
                sent.push(*award_id);
            }
            Err(err) if ErrorCode::of(&err) == Some(ErrorCode::InboxFull) => {
                report.inbox_full += 1;
                metrics::counter!(m::INBOX_FULL).increment(1);
                tracing::warn!(
                    tier,
                    shard = record.shard_id,
                    award_id = %award_id,
                    "shard's compensation inbox is full: the revoked award waits for a later sweep"
                );
            }
            Err(err) => return Err(err),
        }
    }
    Ok(sent)
}

/// Aborts the process when `config` names `point`: a crash at a known place, for tests.
fn failpoint(config: &RouterConfig, point: Failpoint) {
    if config.failpoint == Some(point) {
        tracing::error!(failpoint = point.as_str(), "failpoint reached: aborting");
        std::process::abort();
    }
}

fn set_pending_gauge(tier: u32, waiting: u64) {
    metrics::gauge!(m::AWARDS_PENDING, "tier" => tier.to_string()).set(waiting as f64);
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The router's wall clock, in milliseconds since the Unix epoch: only for record expiry.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}
