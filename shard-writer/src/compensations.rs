//! [`Compensations`]: the revocations the router's saga sends a shard through its inbox.
//!
//! Design constraints:
//! - The inbox `hunt:shard:{<id>}:inbox` is a stream. Each entry's field `e` holds an encoded
//!   `HuntEvent` of kind `AwardRevoked`, added once per award id by `hunt_compensate`.
//! - It is read through the consumer group `shard` (created at `0` with `MKSTREAM`; `BUSYGROUP`
//!   ignored) under one fixed consumer name: one writer owns a shard file, so one consumer reads
//!   a shard's inbox. A reader first gets the entries delivered to that consumer but never
//!   acknowledged (its pending list, read from id `0`), then new ones (`>`).
//! - [`Compensations::ack`] is `XACK` + `XDEL` in one `MULTI`: the inbox's length is the number
//!   of unacknowledged entries (the saga refuses to add past a cap rather than trim unread
//!   entries), and an acknowledged entry is gone, so no restart repeats it. Until it is
//!   acknowledged an entry is delivered again to the next reader: nothing is lost.
//! - A malformed entry (no event, not an `AwardRevoked`, an invalid award id) is logged,
//!   counted, acknowledged away and reported once as [`ClaimError::MalformedCompensation`]
//!   naming it: it can never block the inbox.
//! - The reader has its own connection: a blocking read holds its connection, and claims must not
//!   wait behind it. Every call is bounded: a read by its wait plus `claim_timeout`, an
//!   acknowledgement by `claim_timeout`.
//! - A read whose answer was lost (a timeout, a broken connection) may have delivered an entry
//!   that never reached the caller: the next read goes back to the pending list to find it. A
//!   Redis that lost its data lost the group with it (`NOGROUP`): it is created again and reading
//!   starts over.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hunt_redis::stream;
use leaderboard_proto::functions::InboxAck;
use leaderboard_proto::v1::AwardRevoked;
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::{keys, validate};
use redis::{FromRedisValue, Value};

use crate::claims::{claim_error, outcome_label, record};
use crate::error::ClaimError;
use crate::metrics as m;
use crate::wal::decisions::Decision;
use crate::writer::{Inner, ShardWriter};
use hunt_redis::reconnecting::{CallError, Reconnecting};

/// The consumer group every shard reads its inbox through.
pub const GROUP: &str = "shard";

/// The consumer name a shard's writer reads its inbox as: one writer owns a shard file.
pub const CONSUMER: &str = "writer";

/// One compensation: an award of this shard that lost its chest to another award; its points
/// have been taken back. Acknowledge it with [`Compensations::ack`] once it has been acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compensation {
    /// The inbox entry's stream id.
    pub id: String,
    /// The tier the award was scored in.
    pub tier: u32,
    /// The revocation: award id, chest key, player and the points taken back.
    pub revoked: AwardRevoked,
}

/// The reader of this shard's compensation inbox, from [`ShardWriter::compensations`].
pub struct Compensations {
    link: Option<Reconnecting>,
    shard_id: u32,
    inbox: String,
    claim_timeout: Duration,
    /// Replicas that must hold an entry (and the verdict behind it) before it is handed out.
    claim_replicas: u32,
    group_ready: bool,
    /// Whether the next read goes to this consumer's pending list (after `last_seen`) rather
    /// than to new entries.
    reading_pending: bool,
    /// The id of the last entry this reader handed out (or acknowledged away), `0` at first.
    last_seen: String,
    /// The writer whose file records each compensation before it is handed out.
    writer: Weak<Inner>,
}

impl std::fmt::Debug for Compensations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compensations")
            .field("inbox", &self.inbox)
            .field("reading_pending", &self.reading_pending)
            .field("last_seen", &self.last_seen)
            .finish_non_exhaustive()
    }
}

impl ShardWriter {
    /// A reader of this shard's compensation inbox, with its own Redis connection (opened on
    /// first use). Use one reader at a time per shard.
    #[must_use]
    pub fn compensations(&self) -> Compensations {
        Compensations {
            link: self
                .inner
                .client
                .as_ref()
                .map(|client| self.inner.config.reconnecting(client.clone())),
            shard_id: self.inner.shard_id,
            inbox: keys::shard_inbox(self.inner.shard_id),
            claim_timeout: self.inner.config.claim_timeout,
            claim_replicas: self.inner.config.claim_replicas,
            group_ready: false,
            reading_pending: true,
            last_seen: "0".to_owned(),
            writer: Arc::downgrade(&self.inner),
        }
    }
}

/// An inbox entry as read: its id, and its fields (`None` when the entry was deleted).
type InboxEntry = (String, Option<Vec<(String, Vec<u8>)>>);

impl Compensations {
    /// The next compensation: first those delivered to this shard before but never
    /// acknowledged, then new ones, waiting up to `wait` for one to arrive. `None` when none
    /// came within `wait`.
    ///
    /// # Errors
    /// [`ClaimError::MalformedCompensation`] naming an entry that could not be read (it has been
    /// acknowledged away; call again for the next one); [`ClaimError::Unreachable`] when Redis
    /// did not answer within `wait` plus `claim_timeout`; [`ClaimError::Redis`];
    /// [`ClaimError::NoRedis`].
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Compensation>, ClaimError> {
        const KIND: &str = "inbox_read";
        let started = Instant::now();
        let outcome = self.read(wait).await;
        record(
            KIND,
            started,
            outcome_label(&outcome, |found| match found {
                Some(_) => "received",
                None => "empty",
            }),
        );
        outcome
    }

    /// Acknowledges `compensation` and deletes it from the inbox, for good. Acknowledging one
    /// twice is harmless.
    ///
    /// # Errors
    /// [`ClaimError::Unreachable`] when Redis did not answer within `claim_timeout` (the entry
    /// is delivered again later: acknowledge it then); [`ClaimError::Redis`];
    /// [`ClaimError::NoRedis`].
    pub async fn ack(&self, compensation: &Compensation) -> Result<(), ClaimError> {
        self.ack_id(&compensation.id).await
    }

    /// Acknowledges the compensation with inbox entry id `id` (as in [`Compensation::id`]), for
    /// a caller that kept only the id (the ingest sidecar's `AckCompensation`).
    ///
    /// # Errors
    /// As [`Compensations::ack`]; an id that is not a stream id answers [`ClaimError::Redis`].
    pub async fn ack_id(&self, id: &str) -> Result<(), ClaimError> {
        const KIND: &str = "inbox_ack";
        let started = Instant::now();
        let outcome = self.remove(id).await;
        record(KIND, started, outcome_label(&outcome, |()| "ok"));
        outcome
    }

    async fn read(&mut self, wait: Duration) -> Result<Option<Compensation>, ClaimError> {
        let mut group_recreated = false;
        loop {
            let link = self.link.as_ref().ok_or(ClaimError::NoRedis)?;
            if !self.group_ready {
                self.create_group().await?;
                self.group_ready = true;
            }
            let (start, block) = if self.reading_pending {
                (self.last_seen.clone(), None)
            } else {
                (">".to_owned(), Some(wait))
            };
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(GROUP)
                .arg(CONSUMER)
                .arg("COUNT")
                .arg(1);
            if let Some(block) = block.filter(|block| !block.is_zero()) {
                cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
            }
            cmd.arg("STREAMS").arg(&self.inbox).arg(&start);
            let deadline = self.claim_timeout + block.unwrap_or_default();
            let cmd = &cmd;
            // Never twice: a read whose answer was lost may have handed out an entry.
            let reply = link
                .call_once(deadline, move |mut conn| async move {
                    cmd.query_async::<Value>(&mut conn).await
                })
                .await;
            let reply = match reply {
                Ok(reply) => reply,
                Err(CallError::Redis(err)) if err.code() == Some("NOGROUP") && !group_recreated => {
                    tracing::warn!(
                        inbox = %self.inbox,
                        "the inbox's consumer group is gone (Redis lost its data); creating it again"
                    );
                    group_recreated = true;
                    self.group_ready = false;
                    self.reading_pending = true;
                    self.last_seen = "0".to_owned();
                    continue;
                }
                Err(err) => {
                    // The answer may have been lost with an entry delivered in it.
                    self.reading_pending = true;
                    return Err(claim_error(link, err));
                }
            };
            let entry = first_entry(reply).map_err(|reason| ClaimError::Redis {
                reason: format!("XREADGROUP of {}: {reason}", self.inbox),
            })?;
            let Some((id, fields)) = entry else {
                if self.reading_pending {
                    self.reading_pending = false;
                    continue;
                }
                return Ok(None);
            };
            return match decode(id.clone(), fields) {
                Ok(compensation) => {
                    if let Err(err) = self.replicated().await {
                        self.reading_pending = true;
                        return Err(err);
                    }
                    // Recorded before it is handed out; one the game acknowledged before (sent
                    // again by a Redis that lost the inbox's record) is never handed out twice.
                    match self.record_delivery(&compensation).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::info!(
                                inbox = %self.inbox,
                                entry = %id,
                                award_id = %compensation.revoked.award_id,
                                "a compensation already acknowledged came again; acknowledging it away"
                            );
                            metrics::counter!(m::COMPENSATIONS, "outcome" => "duplicate")
                                .increment(1);
                            if let Err(err) = self.remove(&id).await {
                                self.reading_pending = true;
                                return Err(err);
                            }
                            self.last_seen = id;
                            continue;
                        }
                        Err(err) => {
                            self.reading_pending = true;
                            return Err(err);
                        }
                    }
                    self.last_seen = id;
                    metrics::counter!(m::COMPENSATIONS, "outcome" => "received").increment(1);
                    Ok(Some(compensation))
                }
                Err(reason) => {
                    tracing::warn!(
                        inbox = %self.inbox,
                        entry = %id,
                        %reason,
                        "malformed compensation; acknowledging it away"
                    );
                    metrics::counter!(m::COMPENSATIONS, "outcome" => "malformed").increment(1);
                    if let Err(err) = self.remove(&id).await {
                        // Read again (from the pending list) next time, and removed then.
                        self.reading_pending = true;
                        return Err(err);
                    }
                    self.last_seen = id.clone();
                    Err(ClaimError::MalformedCompensation { id, reason })
                }
            };
        }
    }

    /// With `claim_replicas`, waits until that many replicas hold everything the inbox's primary
    /// applied so far: the entry just read, and the verdict the router settled before it.
    async fn replicated(&self) -> Result<(), ClaimError> {
        let wanted = self.claim_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let link = self.link.as_ref().ok_or(ClaimError::NoRedis)?;
        let (inbox, wait) = (self.inbox.as_str(), self.claim_timeout / 2);
        let acked = link
            .call(self.claim_timeout, move |mut conn| async move {
                hunt_redis::replicated(&mut conn, &[inbox], wanted, wait).await
            })
            .await
            .map_err(|err| claim_error(link, err))?;
        if acked < u64::from(wanted) {
            return Err(ClaimError::Unreplicated { acked, wanted });
        }
        Ok(())
    }

    /// `XGROUP CREATE <inbox> shard 0 MKSTREAM`, an existing group left as it is.
    async fn create_group(&self) -> Result<(), ClaimError> {
        let link = self.link.as_ref().ok_or(ClaimError::NoRedis)?;
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.inbox)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        let cmd = &cmd;
        match link
            .call(self.claim_timeout, move |mut conn| async move {
                cmd.query_async::<()>(&mut conn).await
            })
            .await
        {
            Ok(()) => Ok(()),
            Err(CallError::Redis(err)) if err.code() == Some("BUSYGROUP") => Ok(()),
            Err(err) => Err(claim_error(link, err)),
        }
    }

    /// Records `compensation` in the shard file; false when its award's compensation was
    /// acknowledged before under another entry.
    async fn record_delivery(&self, compensation: &Compensation) -> Result<bool, ClaimError> {
        let writer = self.writer.upgrade().ok_or_else(|| ClaimError::Record {
            reason: "the writer is closed".to_owned(),
        })?;
        ShardWriter::from_inner(writer)
            .record_decision(Decision::Compensation {
                award_id: compensation.revoked.award_id.clone(),
                entry_id: compensation.id.clone(),
                chest_key: compensation.revoked.chest_key.clone(),
                holder_award_id: compensation.revoked.holder_award_id.clone(),
            })
            .await
    }

    /// Marks entry `id` acknowledged in the shard file (so its award is never handed out
    /// again), then acknowledges and deletes it in Redis (`hunt_inbox_ack`: one single-key call,
    /// which follows the inbox's slot after a Cluster failover).
    async fn remove(&self, id: &str) -> Result<(), ClaimError> {
        let link = self.link.as_ref().ok_or(ClaimError::NoRedis)?;
        if let Some(writer) = self.writer.upgrade() {
            ShardWriter::from_inner(writer)
                .record_decision(Decision::CompensationAcked {
                    entry_id: id.to_owned(),
                })
                .await?;
        }
        let ack = &InboxAck::new(self.shard_id, GROUP, id);
        match link
            .call(self.claim_timeout, move |mut conn| async move {
                hunt_redis::call(&mut conn, ack).await.map(drop)
            })
            .await
        {
            Ok(()) => Ok(()),
            // Redis lost its data: the entry is gone with the group.
            Err(CallError::Redis(err)) if err.code() == Some("NOGROUP") => Ok(()),
            Err(err) => Err(claim_error(link, err)),
        }
    }
}

/// Reads an inbox entry as a compensation, or says why it is not one.
fn decode(id: String, fields: Option<Vec<(String, Vec<u8>)>>) -> Result<Compensation, String> {
    let Some(fields) = fields else {
        return Err("the entry was deleted while it was pending".to_owned());
    };
    let (id, event) = stream::decode((id, fields)).map_err(|err| match err {
        stream::StreamError::Malformed { reason, .. } => reason,
        other => other.to_string(),
    })?;
    let Some(Kind::AwardRevoked(revoked)) = event.kind else {
        return Err("the event is not an award_revoked".to_owned());
    };
    validate::id("award_id", &revoked.award_id).map_err(|err| err.to_string())?;
    Ok(Compensation {
        id,
        tier: event.tier,
        revoked,
    })
}

/// The first entry of an `XREADGROUP` reply of one stream, in RESP2 or RESP3 form.
fn first_entry(reply: Value) -> Result<Option<InboxEntry>, String> {
    let per_stream: Vec<Value> = match reply {
        Value::Nil => return Ok(None),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => Ok(pair.swap_remove(1)),
                other => Err(format!("unexpected stream reply {other:?}")),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        other => return Err(format!("unexpected reply {other:?}")),
    };
    for entries in per_stream {
        let entries = match entries {
            Value::Array(entries) => entries,
            Value::Nil => continue,
            other => return Err(format!("unexpected entries {other:?}")),
        };
        let Some(entry) = entries.into_iter().next() else {
            continue;
        };
        let Value::Array(parts) = entry else {
            return Err(format!("unexpected entry {entry:?}"));
        };
        let mut parts = parts.into_iter();
        let id = parts
            .next()
            .ok_or_else(|| "an entry without an id".to_owned())?;
        let id = String::from_redis_value(id).map_err(|err| err.to_string())?;
        let fields = match parts.next() {
            None | Some(Value::Nil) => None,
            Some(fields) => Some(
                Vec::<(String, Vec<u8>)>::from_redis_value(fields)
                    .map_err(|err| format!("entry {id}: {err}"))?,
            ),
        };
        return Ok(Some((id, fields)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn replies_of_both_protocols_and_deleted_entries_are_read() {
        let entry = Value::Array(vec![bulk("1-1"), Value::Array(vec![bulk("e"), bulk("x")])]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("inbox"),
            Value::Array(vec![entry.clone()]),
        ])]);
        let want = Some((
            "1-1".to_owned(),
            Some(vec![("e".to_owned(), b"x".to_vec())]),
        ));
        assert_eq!(first_entry(resp2), Ok(want.clone()));
        let resp3 = Value::Map(vec![(bulk("inbox"), Value::Array(vec![entry]))]);
        assert_eq!(first_entry(resp3), Ok(want));
        let deleted = Value::Array(vec![Value::Array(vec![
            bulk("inbox"),
            Value::Array(vec![Value::Array(vec![bulk("2-0"), Value::Nil])]),
        ])]);
        assert_eq!(first_entry(deleted), Ok(Some(("2-0".to_owned(), None))));
        let empty = Value::Array(vec![Value::Array(vec![
            bulk("inbox"),
            Value::Array(vec![]),
        ])]);
        assert_eq!(first_entry(empty), Ok(None));
        assert_eq!(first_entry(Value::Nil), Ok(None));
        assert!(first_entry(Value::Int(3)).is_err());
    }

    #[test]
    fn only_award_revocations_are_compensations() {
        use leaderboard_proto::v1::{HuntEvent, ScoreGained};
        use prost::Message;
        let revoked = AwardRevoked {
            award_id: "7.2.a1".into(),
            chest_key: "north-gate".into(),
            player_id: "ada".into(),
            points: 50,
            holder_award_id: "7.2.a0".into(),
        };
        let event = HuntEvent {
            tier: 2,
            kind: Some(Kind::AwardRevoked(revoked.clone())),
            ..HuntEvent::default()
        };
        let fields = vec![("e".to_owned(), event.encode_to_vec())];
        assert_eq!(
            decode("1-0".into(), Some(fields)),
            Ok(Compensation {
                id: "1-0".into(),
                tier: 2,
                revoked
            })
        );
        let score = HuntEvent {
            kind: Some(Kind::ScoreGained(ScoreGained::default())),
            ..HuntEvent::default()
        };
        for fields in [
            None,
            Some(vec![("x".to_owned(), vec![1])]),
            Some(vec![("e".to_owned(), vec![0xff, 0xff])]),
            Some(vec![("e".to_owned(), score.encode_to_vec())]),
        ] {
            assert!(decode("1-0".into(), fields.clone()).is_err(), "{fields:?}");
        }
    }
}
