//! The in-memory top of every tier, with a version per change, shared with readers and watchers.
//!
//! Design constraints:
//! - Reads of the top never go to Redis: `ZREVRANGE 0 99` costs Redis 25–37 µs, so it runs once
//!   per applied batch (or per follower refresh), never per request.
//! - The version only moves when the top changes, so a watcher sees every change once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use leaderboard_proto::functions::player_of_member;
use leaderboard_proto::v1::Entry;
use leaderboard_proto::{keys, rewards};
use redis::aio::ConnectionLike;
use tokio::sync::watch;

/// One tier's top as last read from Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Bumped whenever `entries` changes; 0 before the first read.
    pub version: u64,
    /// Best first; ranks are 1-based and exact.
    pub entries: Arc<Vec<Entry>>,
    /// True while the last refresh failed: Redis may know better.
    pub stale: bool,
    /// True once the top has been read from Redis at least once.
    pub loaded: bool,
    /// When this version of the top was first read, in Unix milliseconds; 0 before.
    pub changed_at_ms: u64,
}

impl Snapshot {
    /// Whether a watcher should be told the top may be out of date: not read from Redis yet,
    /// or the last refresh failed.
    #[must_use]
    pub fn unconfirmed(&self) -> bool {
        self.stale || !self.loaded
    }
}

/// The tops of every tier of the reward table.
#[derive(Debug)]
pub struct Cache {
    tiers: Vec<watch::Sender<Snapshot>>,
    /// The lineage of this cache's versions: unique to this cache in this process's run.
    epoch: String,
}

impl Default for Cache {
    fn default() -> Self {
        Self::new()
    }
}

impl Cache {
    /// An empty cache for every tier.
    #[must_use]
    pub fn new() -> Self {
        static CACHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = CACHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            tiers: rewards::TIERS
                .iter()
                .map(|_| watch::Sender::new(Snapshot::default()))
                .collect(),
            epoch: format!("{started:x}.{:x}.{n}", std::process::id()),
        }
    }

    /// The epoch of this cache's versions: versions of another epoch (another router, or this
    /// one before a restart) do not compare with these.
    #[must_use]
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The current top of `tier`, or `None` for a tier not in the reward table.
    #[must_use]
    pub fn get(&self, tier: u32) -> Option<Snapshot> {
        self.sender(tier).map(|sender| sender.borrow().clone())
    }

    /// Follows the top of `tier` as it changes.
    #[must_use]
    pub fn subscribe(&self, tier: u32) -> Option<watch::Receiver<Snapshot>> {
        self.sender(tier).map(watch::Sender::subscribe)
    }

    /// Stores a fresh read of `tier`'s top; bumps the version when it differs.
    pub(crate) fn publish(&self, tier: u32, entries: Vec<Entry>) {
        if let Some(sender) = self.sender(tier) {
            sender.send_if_modified(|snapshot| {
                let changed = *snapshot.entries != entries;
                let was_stale = snapshot.stale;
                if changed {
                    snapshot.version += 1;
                    snapshot.entries = Arc::new(entries);
                    snapshot.changed_at_ms = now_ms();
                }
                if snapshot.changed_at_ms == 0 {
                    // The first read, of an empty top.
                    snapshot.changed_at_ms = now_ms();
                }
                let was_loaded = std::mem::replace(&mut snapshot.loaded, true);
                snapshot.stale = false;
                changed || was_stale || !was_loaded
            });
        }
    }

    /// `Ok` when every tier's top has been read and the last read of each worked; otherwise
    /// which tier is not ready, and why.
    ///
    /// # Errors
    /// The first tier not ready.
    pub fn ready(&self) -> Result<(), String> {
        for (tier, sender) in rewards::TIERS.iter().zip(&self.tiers) {
            let snapshot = sender.borrow();
            if !snapshot.loaded {
                return Err(format!("tier {} not read from Redis yet", tier.id));
            }
            if snapshot.stale {
                return Err(format!("tier {}: Redis unreachable", tier.id));
            }
        }
        Ok(())
    }

    /// Marks `tier`'s top as possibly out of date (Redis unreachable).
    pub(crate) fn mark_stale(&self, tier: u32) {
        if let Some(sender) = self.sender(tier) {
            sender.send_if_modified(|snapshot| !std::mem::replace(&mut snapshot.stale, true));
        }
    }

    fn sender(&self, tier: u32) -> Option<&watch::Sender<Snapshot>> {
        rewards::tier_index(tier).and_then(|index| self.tiers.get(index))
    }
}

/// The wall clock in Unix milliseconds: only ever shown to people, never compared.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// What changed between two tops of a tier: the entries to upsert (new, or with a new rank or
/// score) and the players no longer in the top. Applying it to `old` (remove, then upsert by
/// player, then order by rank) gives `new`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Entries of `new` that `old` does not hold as they are.
    pub upserts: Vec<Entry>,
    /// Players of `old` that `new` does not hold.
    pub removals: Vec<String>,
}

impl Diff {
    /// The difference from `old` to `new`.
    #[must_use]
    pub fn between(old: &[Entry], new: &[Entry]) -> Self {
        let before: HashMap<&str, &Entry> = old.iter().map(|e| (e.player_id.as_str(), e)).collect();
        let after: HashSet<&str> = new.iter().map(|e| e.player_id.as_str()).collect();
        Self {
            upserts: new
                .iter()
                .filter(|e| before.get(e.player_id.as_str()) != Some(e))
                .cloned()
                .collect(),
            removals: old
                .iter()
                .filter(|e| !after.contains(e.player_id.as_str()))
                .map(|e| e.player_id.clone())
                .collect(),
        }
    }

    /// Applies the difference to `top`, as a watcher does.
    #[must_use]
    pub fn apply(&self, top: &[Entry]) -> Vec<Entry> {
        let mut by_player: HashMap<&str, &Entry> =
            top.iter().map(|e| (e.player_id.as_str(), e)).collect();
        for player in &self.removals {
            by_player.remove(player.as_str());
        }
        for entry in &self.upserts {
            by_player.insert(entry.player_id.as_str(), entry);
        }
        let mut entries: Vec<Entry> = by_player.into_values().cloned().collect();
        entries.sort_by_key(|e| e.rank);
        entries
    }

    /// Entries and removals carried.
    #[must_use]
    pub fn len(&self) -> usize {
        self.upserts.len() + self.removals.len()
    }

    /// Whether nothing changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Ranks `start..=stop` (0-based, inclusive) of `tier`'s leaderboard, straight from Redis.
///
/// # Errors
/// The Redis error.
pub async fn read_range<C: ConnectionLike + Send>(
    conn: &mut C,
    tier: u32,
    start: u64,
    stop: u64,
) -> redis::RedisResult<Vec<Entry>> {
    let (raw, named): (Vec<(String, i64)>, bool) = redis::pipe()
        .cmd("ZREVRANGE")
        .arg(keys::tier_scores(tier))
        .arg(start)
        .arg(stop)
        .arg("WITHSCORES")
        .exists(keys::tier_names(tier))
        .query_async(conn)
        .await?;
    let mut entries: Vec<Entry> = raw
        .into_iter()
        .zip(start + 1..)
        .filter_map(|((member, score), rank)| {
            player_of_member(&member).map(|player| Entry {
                rank,
                player_id: player.to_owned(),
                score,
                display_name: None,
            })
        })
        .collect();
    // Display names live beside the board: read only when some player has one.
    if named && !entries.is_empty() {
        let names: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(keys::tier_names(tier))
            .arg(
                entries
                    .iter()
                    .map(|entry| entry.player_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .query_async(conn)
            .await?;
        for (entry, name) in entries.iter_mut().zip(names) {
            entry.display_name = name;
        }
    }
    Ok(entries)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn entry(rank: u64, player: &str, score: i64) -> Entry {
        Entry {
            rank,
            player_id: player.to_owned(),
            score,
            display_name: None,
        }
    }

    fn top(entries: &[(&str, i64)]) -> Vec<Entry> {
        entries
            .iter()
            .zip(1..)
            .map(|((player, score), rank)| entry(rank, player, *score))
            .collect()
    }

    proptest::proptest! {
        /// Applying the difference between any two tops to the first gives the second.
        #[test]
        fn a_diff_applied_to_the_old_top_gives_the_new_one(
            old in proptest::collection::btree_map(0u8..30, -50i64..50, 0..25),
            new in proptest::collection::btree_map(0u8..30, -50i64..50, 0..25),
        ) {
            let rank = |m: &std::collections::BTreeMap<u8, i64>| {
                let mut v: Vec<(String, i64)> = m.iter().map(|(p, s)| (format!("p{p}"), *s)).collect();
                v.sort_by_key(|e| std::cmp::Reverse(e.1));
                v
            };
            let (old, new) = (rank(&old), rank(&new));
            let as_refs = |v: &[(String, i64)]| -> Vec<Entry> {
                top(&v.iter().map(|(p, s)| (p.as_str(), *s)).collect::<Vec<_>>())
            };
            let (old, new) = (as_refs(&old), as_refs(&new));
            let diff = Diff::between(&old, &new);
            proptest::prop_assert_eq!(diff.apply(&old), new.clone());
            proptest::prop_assert!(Diff::between(&new, &new).is_empty());
        }
    }

    #[test]
    fn a_diff_names_moved_players_and_leavers() {
        let old = top(&[("ada", 9), ("bo", 5), ("cy", 1)]);
        let new = top(&[("bo", 10), ("ada", 9), ("di", 2)]);
        let diff = Diff::between(&old, &new);
        let upserted: Vec<&str> = diff.upserts.iter().map(|e| e.player_id.as_str()).collect();
        assert_eq!(upserted, ["bo", "ada", "di"]);
        assert_eq!(diff.removals, ["cy"]);
    }

    #[test]
    fn the_version_moves_only_when_the_top_changes() {
        let cache = Cache::new();
        assert_eq!(cache.get(1).map(|s| s.version), Some(0));
        assert!(cache.get(999).is_none());
        let mut watcher = cache.subscribe(1).expect("tier 1");
        cache.publish(1, vec![entry(1, "ada", 5)]);
        assert!(watcher.has_changed().unwrap_or(false));
        watcher.mark_unchanged();
        cache.publish(1, vec![entry(1, "ada", 5)]);
        assert!(
            !watcher.has_changed().unwrap_or(true),
            "same top, same version"
        );
        cache.mark_stale(1);
        assert_eq!(cache.get(1).map(|s| (s.version, s.stale)), Some((1, true)));
        cache.publish(1, vec![entry(1, "ada", 6)]);
        assert_eq!(cache.get(1).map(|s| (s.version, s.stale)), Some((2, false)));
    }
}
