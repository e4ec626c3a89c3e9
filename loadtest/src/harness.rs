//! What the commands share: the pipeline under test, the load, the measurements, the checks and
//! the reports. A command module imports from here and never from another command.

pub(crate) mod cpu;
pub(crate) mod ground_truth;
pub(crate) mod histogram;
pub(crate) mod hunt;
pub(crate) mod leaderboard;
pub(crate) mod marks;
pub(crate) mod open_loop;
pub(crate) mod pipeline;
pub(crate) mod probe;
pub(crate) mod redis_target;
pub(crate) mod report;
pub(crate) mod timeline;
