//! `hunt_publish`: a relay batch added to its tier stream, with the shard's published mark.

use redis::{Cmd, FromRedisValue, Value};

use super::{Function, fcall_cmd, name};
use crate::keys;

/// `hunt_publish(tier stream, tier published; shard, cap, floor, highest, payload...)`: appends
/// the payloads (encoded `HuntEvent`s, field `e`, `MAXLEN ~ cap`) and raises the shard's
/// published mark to `highest`, never lowering it. `floor` is the lowest mark the writer expects
/// Redis to hold (the batch's first `tier_seq` − 1): a mark below it means Redis lost what was
/// published, and nothing is added ([`Published::added`] false) so no hole is left.
#[derive(Debug, Clone)]
pub struct Publish(Cmd);

impl Publish {
    /// A batch of `shard_id` for `tier`'s stream, capped near `cap` entries; the caller adds
    /// each payload with [`Publish::payload`], in `tier_seq` order.
    #[must_use]
    pub fn new(tier: u32, shard_id: u32, cap: u64, floor: u64, highest: u64) -> Self {
        let mut cmd = fcall_cmd(
            name::PUBLISH,
            &[&keys::tier_stream(tier), &keys::tier_published(tier)],
        );
        cmd.arg(keys::shard_field(shard_id))
            .arg(cap)
            .arg(floor)
            .arg(highest);
        Self(cmd)
    }

    /// Adds one encoded event.
    pub fn payload(&mut self, payload: &[u8]) -> &mut Self {
        self.0.arg(payload);
        self
    }
}

impl Function for Publish {
    const NAME: &'static str = name::PUBLISH;
    type Reply = Published;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}

/// What `hunt_publish` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Whether the batch was added (false: Redis's mark was below the floor).
    pub added: bool,
    /// The shard's published mark after the call.
    pub mark: u64,
}

impl FromRedisValue for Published {
    fn from_redis_value(value: Value) -> Result<Self, redis::ParsingError> {
        let (added, mark): (i64, u64) = FromRedisValue::from_redis_value(value)?;
        Ok(Self {
            added: added == 1,
            mark,
        })
    }
}
