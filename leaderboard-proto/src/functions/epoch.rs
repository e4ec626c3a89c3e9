//! `hunt_next_epoch`: a shard's fencing token, raised on every open.

use redis::Cmd;

use super::{Function, fcall_cmd, name};
use crate::keys;

/// `hunt_next_epoch(shard epoch; floor) -> epoch`: increments the shard's epoch and returns it,
/// never below `floor` (the highest epoch the shard file has used), so a Redis that lost its
/// data never hands out an epoch the shard has used already.
#[derive(Debug, Clone)]
pub struct NextEpoch(Cmd);

impl NextEpoch {
    /// The next epoch of `shard_id`, at least `floor`.
    #[must_use]
    pub fn new(shard_id: u32, floor: u64) -> Self {
        let mut cmd = fcall_cmd(name::NEXT_EPOCH, &[&keys::shard_epoch(shard_id)]);
        cmd.arg(floor);
        Self(cmd)
    }
}

impl Function for NextEpoch {
    const NAME: &'static str = name::NEXT_EPOCH;
    type Reply = u64;

    fn cmd(&self) -> &Cmd {
        &self.0
    }
}
