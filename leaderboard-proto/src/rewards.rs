//! The reward table, compiled into constants at build time.
//!
//! The table is the protobuf text file `rewards/tiers.txtpb` (a `hunt.v1.RewardTable`). The
//! build script parses it against the `.proto` descriptors, validates it and generates
//! [`TIERS`]; a table that breaks a rule fails the build, so at run time every tier is known to
//! have an id of 1 or more (unique), a non-empty name, a point multiplier of 1 or more, and chest
//! types with unique non-empty names worth 1 to [`MAX_POINTS`] points. Tiers never change at run
//! time.

use crate::limits::MAX_POINTS;
use crate::v1;

/// A chest type of a tier and the points it is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChestType {
    /// The chest type's name, unique within its tier.
    pub name: &'static str,
    /// Points the chest is worth, in `1..=MAX_POINTS`.
    pub points: i64,
}

/// A tier of the hunt: its leaderboard, keys (`hunt:{t<id>}:…`) and rewards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// The tier id: the N in every `hunt:{t<N>}` key. 1 or more, unique.
    pub id: u32,
    /// The name shown to people.
    pub name: &'static str,
    /// Shards multiply base points by this when they score an action in this tier; 1 or more.
    pub point_multiplier: u32,
    /// The chest types that can be awarded in this tier.
    pub chest_types: &'static [ChestType],
}

include!(concat!(env!("OUT_DIR"), "/rewards.rs"));

/// The tier with this id, if the reward table defines it.
#[must_use]
pub fn tier(id: u32) -> Option<&'static Tier> {
    TIERS.iter().find(|tier| tier.id == id)
}

/// The position of the tier with this id in [`TIERS`], if the reward table defines it.
#[must_use]
pub fn tier_index(id: u32) -> Option<usize> {
    TIERS.iter().position(|tier| tier.id == id)
}

/// The ids of every tier, in table order.
pub fn tier_ids() -> impl Iterator<Item = u32> {
    TIERS.iter().map(|tier| tier.id)
}

impl Tier {
    /// The chest type of this tier with this name.
    #[must_use]
    pub fn chest(&self, name: &str) -> Option<&'static ChestType> {
        self.chest_types.iter().find(|chest| chest.name == name)
    }

    /// `base` points scaled by this tier's multiplier, or `None` when the product's magnitude
    /// exceeds [`MAX_POINTS`] (2^53 − 1, the largest integer a Redis score holds exactly).
    #[must_use]
    pub fn points(&self, base: i64) -> Option<i64> {
        base.checked_mul(i64::from(self.point_multiplier))
            .filter(|points| points.unsigned_abs() <= MAX_POINTS.unsigned_abs())
    }
}

impl From<&Tier> for v1::Tier {
    fn from(tier: &Tier) -> Self {
        Self {
            id: tier.id,
            name: tier.name.to_owned(),
            point_multiplier: tier.point_multiplier,
            chest_types: tier
                .chest_types
                .iter()
                .map(|chest| v1::ChestType {
                    name: chest.name.to_owned(),
                    points: chest.points,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_the_five_tiers_in_order() {
        let names: Vec<_> = TIERS
            .iter()
            .map(|tier| (tier.id, tier.name, tier.point_multiplier))
            .collect();
        assert_eq!(
            names,
            [
                (1, "Bronze", 1),
                (2, "Silver", 2),
                (3, "Gold", 3),
                (4, "Platinum", 5),
                (5, "Diamond", 8),
            ]
        );
        assert_eq!(tier_ids().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn every_tier_obeys_the_table_rules() {
        for (index, defined) in TIERS.iter().enumerate() {
            assert!(defined.id >= 1);
            assert!(!defined.name.is_empty());
            assert!(defined.point_multiplier >= 1);
            assert!(
                (2..=3).contains(&defined.chest_types.len()),
                "{}",
                defined.name
            );
            assert_eq!(tier_index(defined.id), Some(index));
            assert_eq!(tier(defined.id), Some(defined));
            for chest in defined.chest_types {
                assert!(!chest.name.is_empty());
                assert!((1..=MAX_POINTS).contains(&chest.points));
                assert_eq!(defined.chest(chest.name), Some(chest));
            }
        }
    }

    #[test]
    fn lookups_of_unknown_tiers_and_chests_are_none() {
        assert_eq!(tier(0), None);
        assert_eq!(tier(6), None);
        assert_eq!(tier_index(u32::MAX), None);
        let bronze = tier(1).map(|tier| tier.chest("no such chest"));
        assert_eq!(bronze, Some(None));
    }

    #[test]
    fn points_scale_and_stop_at_max_points() {
        let Some(diamond) = tier(5) else {
            panic!("tier 5 is missing");
        };
        assert_eq!(diamond.points(10), Some(80));
        assert_eq!(diamond.points(-10), Some(-80));
        assert_eq!(diamond.points(0), Some(0));
        let largest = MAX_POINTS / 8;
        assert_eq!(diamond.points(largest), Some(largest * 8));
        assert_eq!(diamond.points(largest + 1), None);
        assert_eq!(diamond.points(-(largest + 1)), None);
        assert_eq!(diamond.points(i64::MAX), None);
        assert_eq!(diamond.points(i64::MIN), None);
        let Some(bronze) = tier(1) else {
            panic!("tier 1 is missing");
        };
        assert_eq!(bronze.points(MAX_POINTS), Some(MAX_POINTS));
        assert_eq!(bronze.points(-MAX_POINTS), Some(-MAX_POINTS));
        assert_eq!(bronze.points(MAX_POINTS + 1), None);
    }

    #[test]
    fn converts_to_the_grpc_message() {
        let Some(gold) = tier(3) else {
            panic!("tier 3 is missing");
        };
        let message = v1::Tier::from(gold);
        assert_eq!(message.id, 3);
        assert_eq!(message.name, "Gold");
        assert_eq!(message.point_multiplier, 3);
        assert_eq!(message.chest_types.len(), gold.chest_types.len());
        for (sent, defined) in message.chest_types.iter().zip(gold.chest_types) {
            assert_eq!(sent.name, defined.name);
            assert_eq!(sent.points, defined.points);
        }
    }
}
