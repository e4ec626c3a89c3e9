//! What the hunt offers: who plays on which shard and tier, what each arrival does, and the
//! waves of clues that open while it runs. Every choice comes from a fixed seed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use leaderboard_proto::rewards::{self, Tier};
use leaderboard_proto::v1::hunt_event::Kind;
use leaderboard_proto::v1::{ClueSolved, HuntEvent, ScoreGained, TreasureAwarded};
use shard_writer::{ChestClaim, ClueClaim, ShardWriter};
use tokio_util::sync::CancellationToken;

/// Base points of a solved clue, before the tier's multiplier.
const CLUE_POINTS: i64 = 100;

/// Deterministic choices for one arrival (splitmix64 over seed, shard and arrival number).
pub(crate) struct Draw(u64);

impl Draw {
    /// The choices of arrival `n` of `shard` under `seed`.
    pub(crate) fn new(seed: u64, shard: u32, n: u64) -> Self {
        Self(seed ^ (u64::from(shard) << 40) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The next choice, below `bound` (0 when `bound` is 0).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound.max(1)
    }
}

/// The hunters of shard `index` (0-based) of `shards`: hunter h plays on shard `h mod shards`
/// in tier `(h / shards) mod T`.
pub(crate) fn hunters_of(index: u32, shards: u32, hunters: u32) -> Vec<(String, &'static Tier)> {
    (index..hunters)
        .step_by(shards as usize)
        .map(|h| {
            let tier = &rewards::TIERS[(h / shards) as usize % rewards::TIERS.len()];
            (format!("hunter-{h}"), tier)
        })
        .collect()
}

/// What every shard's arrivals share.
pub(super) struct Workload {
    wave: AtomicU32,
    clues_per_map: u32,
    chests_per_wave: u32,
    seed: u64,
}

impl Workload {
    /// A workload on wave 1.
    pub(super) fn new(clues_per_map: u32, chests_per_wave: u32, seed: u64) -> Self {
        Self {
            wave: AtomicU32::new(1),
            clues_per_map,
            chests_per_wave,
            seed,
        }
    }
}

fn clue_id(tier: u32, wave: u32, clue: u64) -> String {
    format!("w{wave}-t{tier}-c{clue}")
}

fn clue_ids(tier: u32, wave: u32, clues: u32) -> Vec<String> {
    (0..u64::from(clues))
        .map(|c| clue_id(tier, wave, c))
        .collect()
}

fn event(tier: u32, kind: Kind) -> HuntEvent {
    HuntEvent {
        tier,
        kind: Some(kind),
        ..HuntEvent::default()
    }
}

/// One arrival `n` of `writer`'s shard for one of `hunters`: 95% `ScoreGained`; 3% a clue
/// attempt on the current wave, appending a `ClueSolved` only when it wins; 2% a chest award on a
/// key shared by every shard and tier, claimed first on even shards and awarded blindly on odd
/// ones (the router's saga settles the duplicates).
pub(super) async fn arrival(
    writer: ShardWriter,
    hunters: Arc<Vec<(String, &'static Tier)>>,
    workload: Arc<Workload>,
    n: u64,
) -> anyhow::Result<()> {
    let mut draw = Draw::new(workload.seed, writer.shard_id(), n);
    let (player, tier) = &hunters[draw.below(hunters.len() as u64) as usize];
    let roll = draw.below(100);
    let wave = workload.wave.load(Ordering::Acquire);
    if roll < 3 {
        let clue = clue_id(tier.id, wave, draw.below(u64::from(workload.clues_per_map)));
        if let ClueClaim::Won { token, .. } = writer.claim_clue(&clue, player).await? {
            let solved = ClueSolved {
                clue_id: clue,
                player_id: player.clone(),
                token,
                points: tier.points(CLUE_POINTS).unwrap_or(CLUE_POINTS),
            };
            writer
                .append(event(tier.id, Kind::ClueSolved(solved)))
                .await?;
        }
        return Ok(());
    }
    if roll < 5 && !tier.chest_types.is_empty() {
        let chest = tier.chest_types[draw.below(tier.chest_types.len() as u64) as usize];
        let chest_key = format!(
            "chest-w{wave}-{}",
            draw.below(u64::from(workload.chests_per_wave))
        );
        let award_id = writer.award_id();
        if writer.shard_id().is_multiple_of(2)
            && matches!(
                writer
                    .claim_chest(tier.id, chest.name, &chest_key, &award_id)
                    .await?,
                ChestClaim::Held { .. }
            )
        {
            return Ok(());
        }
        let awarded = TreasureAwarded {
            chest_key,
            award_id,
            player_id: player.clone(),
            points: chest.points,
        };
        writer
            .append(event(tier.id, Kind::TreasureAwarded(awarded)))
            .await?;
        return Ok(());
    }
    let base = draw.below(50) as i64 + 1;
    let gained = ScoreGained {
        player_id: player.clone(),
        points: tier.points(base).unwrap_or(base),
    };
    writer
        .append(event(tier.id, Kind::ScoreGained(gained)))
        .await?;
    Ok(())
}

/// Opens `wave`'s clues of every tier through `writer`.
///
/// # Errors
/// When a wave cannot be opened.
pub(super) async fn open_wave(writer: &ShardWriter, wave: u32, clues: u32) -> anyhow::Result<()> {
    for tier in rewards::tier_ids() {
        writer
            .open_wave(tier, wave, &clue_ids(tier, wave, clues))
            .await?;
    }
    Ok(())
}

/// Opens the next wave through `writer` every `every` until `stop`, moving `workload` onto it.
///
/// # Errors
/// When a wave cannot be opened.
pub(super) async fn open_waves(
    writer: ShardWriter,
    workload: Arc<Workload>,
    every: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut wave = 1;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return Ok(()),
        }
        wave += 1;
        open_wave(&writer, wave, workload.clues_per_map).await?;
        workload.wave.store(wave, Ordering::Release);
    }
}
