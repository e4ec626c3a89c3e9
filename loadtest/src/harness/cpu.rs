//! CPU time spent by a run, by component, so a run can say how much work each event cost: this
//! process's threads from `/proc/self/task` (the shard writers' commit threads apart from the
//! rest: relays, an embedded router, the load generator, readers and spectators), and Redis's
//! own from `INFO cpu`.
//!
//! Design constraints:
//! - Sampled twice (before the load and once every event is applied), never during the load:
//!   reading `/proc` costs a few hundred microseconds.
//! - A part that cannot be read (no `/proc`, a Redis that refuses `INFO`) is left out, not
//!   guessed.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// CPU time used so far, by component.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    /// Every thread of this process.
    pub(crate) process: Option<Duration>,
    /// The shard writers' commit threads (`shard-<id>-commit`).
    pub(crate) commit: Option<Duration>,
    /// The Redis server (user + system).
    pub(crate) redis: Option<Duration>,
}

/// CPU time per event between two samples, in microseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(crate) struct PerEvent {
    /// This whole process (load generator, writers, relays, embedded router, observers).
    pub(crate) process_us: Option<f64>,
    /// Of it, the commit threads.
    pub(crate) commit_us: Option<f64>,
    /// Of it, everything but the commit threads.
    pub(crate) rest_us: Option<f64>,
    /// The Redis server.
    pub(crate) redis_us: Option<f64>,
}

impl PerEvent {
    /// "process (commit + rest) / Redis", in µs with one decimal; "–" for a part not read.
    pub(crate) fn cells(&self) -> String {
        let us = |value: Option<f64>| value.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"));
        format!(
            "{} ({} + {}) / {}",
            us(self.process_us),
            us(self.commit_us),
            us(self.rest_us),
            us(self.redis_us)
        )
    }
}

impl Sample {
    /// The CPU time used now.
    pub(crate) async fn now(conn: &mut MultiplexedConnection) -> Self {
        let (process, commit) =
            threads().map_or((None, None), |(all, commit)| (Some(all), Some(commit)));
        Self {
            process,
            commit,
            redis: redis_cpu(conn).await,
        }
    }

    /// The CPU time per event from `self` to `later`, over `events`.
    pub(crate) fn per_event(&self, later: &Self, events: u64) -> PerEvent {
        let per = |before: Option<Duration>, after: Option<Duration>| {
            let (before, after) = (before?, after?);
            (events > 0).then(|| after.saturating_sub(before).as_secs_f64() * 1e6 / events as f64)
        };
        let process_us = per(self.process, later.process);
        let commit_us = per(self.commit, later.commit);
        PerEvent {
            process_us,
            commit_us,
            rest_us: process_us.zip(commit_us).map(|(all, commit)| all - commit),
            redis_us: per(self.redis, later.redis),
        }
    }
}

/// This process's CPU time: every thread, and the commit threads'.
fn threads() -> Option<(Duration, Duration)> {
    let ticks = rustix::param::clock_ticks_per_second();
    if ticks == 0 {
        return None;
    }
    let (mut all, mut commit) = (0u64, 0u64);
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let Some(used) = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|stat| cpu_ticks(&stat))
        else {
            continue;
        };
        all += used;
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        // The kernel keeps 15 bytes of a thread's name: "shard-12-commit", "shard-123-commi".
        if name.starts_with("shard-") && name.contains("-comm") {
            commit += used;
        }
    }
    let seconds = |ticks_used: u64| Duration::from_secs_f64(ticks_used as f64 / ticks as f64);
    Some((seconds(all), seconds(commit)))
}

/// The CPU time (user + system, every thread) process `pid` has used so far, when Linux's
/// `/proc` tells.
pub(crate) fn process(pid: u32) -> Option<Duration> {
    let ticks = rustix::param::clock_ticks_per_second();
    if ticks == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(Duration::from_secs_f64(
        cpu_ticks(&stat)? as f64 / ticks as f64,
    ))
}

/// `utime + stime` of a `/proc/…/stat` line, in clock ticks. The name in parentheses may hold
/// spaces, so fields are counted after its closing parenthesis.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (field 3) … utime is field 14, stime field 15 (1-based, whole line).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Redis's CPU time (`used_cpu_user` + `used_cpu_sys`), if it answers `INFO cpu`.
async fn redis_cpu(conn: &mut MultiplexedConnection) -> Option<Duration> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await.ok()?;
    let field = |name: &str| -> Option<f64> {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.trim().parse().ok())
    };
    Some(Duration::from_secs_f64(
        field("used_cpu_user")? + field("used_cpu_sys")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_user_plus_system_ticks_whatever_the_name() {
        let stat =
            "4242 (shard-1 commit) S 1 4242 4242 0 -1 4194624 90 0 0 0 17 5 0 0 20 0 1 0 123 0 0";
        assert_eq!(cpu_ticks(stat), Some(22));
        assert_eq!(cpu_ticks("nonsense"), None);
    }

    #[test]
    fn per_event_divides_the_difference() {
        let before = Sample {
            process: Some(Duration::from_millis(100)),
            commit: Some(Duration::from_millis(10)),
            redis: None,
        };
        let after = Sample {
            process: Some(Duration::from_millis(1_100)),
            commit: Some(Duration::from_millis(210)),
            redis: Some(Duration::from_secs(1)),
        };
        let per = before.per_event(&after, 10_000);
        assert_eq!(per.process_us, Some(100.0));
        assert_eq!(per.commit_us, Some(20.0));
        assert_eq!(per.rest_us, Some(80.0));
        assert_eq!(per.redis_us, None, "no sample before: nothing to say");
        assert_eq!(before.per_event(&after, 0).process_us, None);
    }
}
