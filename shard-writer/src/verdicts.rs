//! Chest verdicts the saga confirmed for this shard's awards, recorded in the shard file before
//! anyone is told them.
//!
//! Design constraints:
//! - The saga asks the shard of each award it confirms, through `hunt:shard:{<id>}:verdicts`
//!   (fields `a`: the award, `c`: its chest). `GetAward` and `GetChest` tell a chest's holder
//!   only once the chest is marked recorded (`hunt:chest:{<key>}:recorded`), which happens here
//!   after the file has it: a Redis that forgets gets the holder back from the files
//!   ([`crate::recovery`]), so a verdict told is never decided afresh.
//! - A round reads up to [`BATCH`] entries, keeps those whose award holds its chest in Redis now
//!   (a verdict Redis no longer holds was never told, and is not recorded), records them through
//!   the commit thread, marks each recorded, then deletes every entry read. A round cut short
//!   anywhere is repeated whole: recording is a merge and marking is idempotent.
//! - A malformed entry is logged and deleted: it can never block the stream.
//! - Rounds run every [`POLL`] (or `claims_poll`, when shorter); a full batch is followed at
//!   once. Every call is bounded by `claim_timeout`.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use hunt_redis::Reconnecting;
use leaderboard_proto::functions::{ChestRecorded, Function};
use leaderboard_proto::{keys, validate};
use tokio_util::sync::CancellationToken;

use crate::claims::claim_error;
use crate::error::ClaimError;
use crate::metrics as m;
use crate::wal::decisions::Decision;
use crate::writer::{Inner, ShardWriter};

/// Entries read per round.
pub(crate) const BATCH: usize = 256;

/// The longest wait between rounds.
pub(crate) const POLL: Duration = Duration::from_millis(200);

/// Records the verdicts asked of this shard until `stop`, or until the writer is dropped.
pub(crate) async fn recorder(writer: Weak<Inner>, poll: Duration, stop: CancellationToken) {
    let poll = poll.min(POLL);
    loop {
        // Held only for the round, so dropping the last handle still closes the writer.
        let full = match writer.upgrade() {
            None => return,
            Some(inner) => match ShardWriter::from_inner(inner).record_verdicts().await {
                Ok(read) => read == BATCH,
                Err(err) => {
                    tracing::debug!(error = %err, "verdicts: a round did not finish");
                    false
                }
            },
        };
        if full {
            continue;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// One entry of the verdict stream.
struct Asked {
    entry_id: String,
    /// (award, chest), when the entry is well formed.
    verdict: Option<(String, String)>,
}

impl ShardWriter {
    /// One round (see the module's constraints); returns how many entries it read.
    pub(crate) async fn record_verdicts(&self) -> Result<usize, ClaimError> {
        let link = self.inner.claims.as_ref().ok_or(ClaimError::NoRedis)?;
        let timeout = self.inner.config.claim_timeout;
        let stream = keys::shard_verdicts(self.inner.shard_id);
        let read: Vec<(String, HashMap<String, String>)> = {
            let stream = &stream;
            link.call(timeout, move |mut conn| async move {
                redis::cmd("XRANGE")
                    .arg(stream)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(BATCH)
                    .query_async(&mut conn)
                    .await
            })
            .await
            .map_err(|err| claim_error(link, err))?
        };
        if read.is_empty() {
            return Ok(0);
        }
        let count = read.len();
        let asked: Vec<Asked> = read
            .into_iter()
            .map(|(entry_id, mut fields)| {
                let verdict = match (fields.remove("a"), fields.remove("c")) {
                    (Some(award), Some(chest))
                        if validate::id("award_id", &award).is_ok()
                            && validate::id("chest_key", &chest).is_ok() =>
                    {
                        Some((award, chest))
                    }
                    _ => {
                        tracing::error!(
                            shard = self.inner.shard_id,
                            entry_id,
                            "deleting a malformed entry of the verdict stream"
                        );
                        None
                    }
                };
                Asked { entry_id, verdict }
            })
            .collect();
        let verdicts: Vec<&(String, String)> =
            asked.iter().filter_map(|a| a.verdict.as_ref()).collect();

        let holding = self.chests_recorded(link, &verdicts, false).await?;
        let held: Vec<&(String, String)> = verdicts
            .iter()
            .zip(holding)
            .filter_map(|(verdict, holds)| holds.then_some(*verdict))
            .collect();
        for (award_id, chest_key) in &held {
            self.record_decision(Decision::Chest {
                chest_key: chest_key.clone(),
                award_id: award_id.clone(),
            })
            .await?;
        }
        let marked = self.chests_recorded(link, &held, true).await?;
        metrics::counter!(m::VERDICTS_RECORDED)
            .increment(marked.iter().filter(|held| **held).count() as u64);

        let ids: Vec<&str> = asked.iter().map(|a| a.entry_id.as_str()).collect();
        let (stream, ids) = (&stream, &ids);
        let _: u64 = link
            .call(timeout, move |mut conn| async move {
                redis::cmd("XDEL")
                    .arg(stream)
                    .arg(ids)
                    .query_async(&mut conn)
                    .await
            })
            .await
            .map_err(|err| claim_error(link, err))?;
        Ok(count)
    }

    /// Whether each (award, chest) of `verdicts` holds its chest in Redis now; with `mark`,
    /// marks each that does recorded.
    async fn chests_recorded(
        &self,
        link: &Reconnecting,
        verdicts: &[&(String, String)],
        mark: bool,
    ) -> Result<Vec<bool>, ClaimError> {
        if verdicts.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (award_id, chest_key) in verdicts {
            pipe.add_command(ChestRecorded::new(chest_key, award_id, mark).cmd().clone());
        }
        let pipe = &pipe;
        link.call(
            self.inner.config.claim_timeout,
            move |mut conn| async move { hunt_redis::library::pipeline(&mut conn, pipe).await },
        )
        .await
        .map_err(|err| claim_error(link, err))
    }
}
