//! `hunt_compensate`: a revoked award told to its shard, once; `hunt_inbox_ack`: the shard
//! done with it.
//!
//! Design constraints:
//! - Once per award id: the shard's sent set remembers award ids for `keep_ms` (the router's
//!   clock), so a repeated step never tells a shard twice within that window.
//! - An inbox holding `cap` unacknowledged entries refuses ([`ErrorCode::InboxFull`]): nothing is
//!   ever trimmed unread.

use redis::Cmd;

use super::{ErrorCode, Function, fcall_cmd, name};
use crate::keys;

/// `hunt_compensate(inbox, inbox_sent; award_id, payload, now_ms, keep_ms, cap) -> 1 | 0`: adds
/// `payload` (an encoded `AwardRevoked` event) to `shard_id`'s inbox unless `award_id` was sent
/// already; the reply says whether it was added.
#[derive(Debug, Clone)]
pub struct Compensate(Cmd);

impl Compensate {
    /// Tells `shard_id` that `award_id` was revoked.
    #[must_use]
    pub fn new(
        shard_id: u32,
        award_id: &str,
        payload: &[u8],
        now_ms: i64,
        keep_ms: i64,
        cap: u64,
    ) -> Self {
        let mut cmd = fcall_cmd(
            name::COMPENSATE,
            &[
                &keys::shard_inbox(shard_id),
                &keys::shard_inbox_sent(shard_id),
            ],
        );
        cmd.arg(award_id)
            .arg(payload)
            .arg(now_ms)
            .arg(keep_ms)
            .arg(cap);
        Self(cmd)
    }
}

impl Function for Compensate {
    const NAME: &'static str = name::COMPENSATE;
    type Reply = bool;
    const ERRORS: &'static [ErrorCode] = &[ErrorCode::InboxFull];

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// `hunt_inbox_ack(inbox; group, entry_id) -> deleted`: acknowledges and deletes entry
/// `entry_id` of `shard_id`'s inbox, in one single-key call that follows the inbox's slot on
/// Redis Cluster.
#[derive(Debug, Clone)]
pub struct InboxAck(Cmd);

impl InboxAck {
    /// `shard_id`'s consumer `group` is done with `entry_id`.
    #[must_use]
    pub fn new(shard_id: u32, group: &str, entry_id: &str) -> Self {
        let mut cmd = fcall_cmd(name::INBOX_ACK, &[&keys::shard_inbox(shard_id)]);
        cmd.arg(group).arg(entry_id);
        Self(cmd)
    }
}

impl Function for InboxAck {
    const NAME: &'static str = name::INBOX_ACK;
    type Reply = u64;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}
