//! Synthetic hunt events: a deterministic stream for demos, load and crash tests.

use leaderboard_proto::rewards;
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::v1::{HuntEvent, ScoreGained, TreasureAwarded};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Generates valid events over every tier of the reward table, the same for the same seed.
///
/// Every chest it awards is its own (named after the seed and a counter), so generators with
/// different seeds never award the same chest twice and the dedup saga revokes nothing: totals
/// stay the plain sum of the events.
#[derive(Debug)]
pub struct EventGenerator {
    rng: StdRng,
    players: u32,
    seed: u64,
    chests: u64,
}

impl EventGenerator {
    /// A generator over `players` players (at least 1), seeded with `seed`.
    #[must_use]
    pub fn new(seed: u64, players: u32) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            players: players.max(1),
            seed,
            chests: 0,
        }
    }

    /// The next event: mostly points gained, sometimes a chest awarded.
    pub fn next_event(&mut self) -> HuntEvent {
        let tier = rewards::TIERS[self.rng.random_range(0..rewards::TIERS.len())];
        let player_id = format!("hunter-{}", self.rng.random_range(0..self.players));
        let kind = match tier.chest_types.first() {
            Some(chest) if self.rng.random_ratio(1, 20) => {
                self.chests += 1;
                Kind::TreasureAwarded(TreasureAwarded {
                    chest_key: format!("{}-{:x}-{}", chest.name, self.seed, self.chests),
                    award_id: String::new(),
                    player_id,
                    points: chest.points,
                })
            }
            _ => {
                let base = self.rng.random_range(1..=50);
                Kind::ScoreGained(ScoreGained {
                    player_id,
                    points: tier.points(base).unwrap_or(base),
                })
            }
        };
        HuntEvent {
            tier: tier.id,
            kind: Some(kind),
            ..HuntEvent::default()
        }
    }
}
