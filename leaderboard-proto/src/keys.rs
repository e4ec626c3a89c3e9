//! The Redis key schema: the only place in the workspace that formats a Redis key.
//!
//! Design constraints:
//! - Every key of tier N carries the hash tag `{t<N>}`, so all of a tier's keys live in one
//!   Redis Cluster slot and a Function call touching several of them is single-slot.
//! - Chest, clue and shard keys carry their own id as the hash tag. Ids are validated first
//!   ([`crate::validate::id`]): they never contain `{` or `}`, so the tag is always the whole id.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `hunt:{t<N>}:stream` | stream | events of tier N, field [`STREAM_EVENT_FIELD`] = `HuntEvent` protobuf |
//! | `hunt:{t<N>}:scores` (+ `:members`) | zset (+ hash) | every player of the tier and its score (+ player → member) |
//! | `hunt:{t<N>}:applied` / `:published` | hash | [`shard_field`] → highest contiguous `tier_seq` applied / published |
//! | `hunt:{t<N>}:cursor`, `:lease`, `:fence` | string | stream position, owner, fencing token |
//! | `hunt:{t<N>}:replay` | hash | [`shard_field`] → `tier_seq` to re-send from |
//! | `hunt:{t<N>}:awards` | hash | award id → award and its saga state |
//! | `hunt:{t<N>}:awards:pending` / `:revoked` / `:settled` | zset | award ids waiting for their chest's claim / for their shard to be told, by apply order; settled, by settle time (for expiry) |
//! | `hunt:{t<N>}:clues` | hash | clue id → highest claim token applied in the tier |
//! | `hunt:chest:{<key>}` | string | winning award id, 24 h TTL |
//! | `hunt:clue:{<id>}` | hash | `current_hunter`, `last_solve_ms`, `token`, `reset_at` |
//! | `hunt:claims` | hash | `incarnation`, `open`, `expected`, `joined`, `shard:<id>`: the claims gate |
//! | `hunt:shard:{<id>}:epoch`, `:inbox` | string, stream | shard incarnation; compensations for it |
//! | `hunt:shard:{<id>}:inbox:sent` | zset | award ids already put in the inbox, by time sent |
//! | `hunt:{t<N>}:baseline` | zset | benchmarks only: the naive baseline's board |
//! | `hunt:baseline:clue:{<id>}` (+ `:lock`) | string | benchmarks only: a clue claimed the old way (+ its lock) |
//! | `hunt:routers` | set | ids of routers that have sent a heartbeat |
//! | `hunt:router:{<id>}` | string, TTL | present while router `<id>` is alive |

/// The stream entry field that holds the encoded `HuntEvent` in `hunt:{t<N>}:stream`.
pub const STREAM_EVENT_FIELD: &str = "e";

fn tier_key(tier: u32, suffix: &str) -> String {
    format!("hunt:{{t{tier}}}:{suffix}")
}

/// `hunt:{t<N>}:stream`: the stream of tier `tier`'s events.
#[must_use]
pub fn tier_stream(tier: u32) -> String {
    tier_key(tier, "stream")
}

/// `hunt:{t<N>}:scores`: the sorted set of every player of the tier and its score.
#[must_use]
pub fn tier_scores(tier: u32) -> String {
    tier_key(tier, "scores")
}

/// `hunt:{t<N>}:scores:members`: the hash from player id to its sorted-set member.
#[must_use]
pub fn tier_members(tier: u32) -> String {
    tier_key(tier, "scores:members")
}

/// `hunt:{t<N>}:applied`: the hash from shard to the highest contiguous `tier_seq` applied.
#[must_use]
pub fn tier_applied(tier: u32) -> String {
    tier_key(tier, "applied")
}

/// `hunt:{t<N>}:published`: the hash from shard to the highest contiguous `tier_seq` published.
#[must_use]
pub fn tier_published(tier: u32) -> String {
    tier_key(tier, "published")
}

/// `hunt:{t<N>}:cursor`: the router's position in the tier's stream.
#[must_use]
pub fn tier_cursor(tier: u32) -> String {
    tier_key(tier, "cursor")
}

/// `hunt:{t<N>}:lease`: the router that owns the tier.
#[must_use]
pub fn tier_lease(tier: u32) -> String {
    tier_key(tier, "lease")
}

/// `hunt:{t<N>}:fence`: the tier's fencing token, bumped on every lease acquisition.
#[must_use]
pub fn tier_fence(tier: u32) -> String {
    tier_key(tier, "fence")
}

/// `hunt:{t<N>}:baseline`: a plain sorted set player → score that only `loadtest`'s naive
/// baseline writes (one `ZINCRBY` per event), kept apart from the real board.
#[must_use]
pub fn tier_baseline(tier: u32) -> String {
    tier_key(tier, "baseline")
}

/// `hunt:{t<N>}:baseline:stream`: benchmarks only: the stream the naive baseline adds each event
/// to (one `XADD` round trip per event), kept apart from the real tier stream.
#[must_use]
pub fn tier_baseline_stream(tier: u32) -> String {
    tier_key(tier, "baseline:stream")
}

/// `hunt:baseline:clue:{<id>}`: benchmarks only: the holder of a clue claimed the old way.
#[must_use]
pub fn baseline_clue(clue_id: &str) -> String {
    format!("hunt:baseline:clue:{{{clue_id}}}")
}

/// `hunt:baseline:clue:{<id>}:lock`: benchmarks only: the old way's lock around a clue claim.
#[must_use]
pub fn baseline_clue_lock(clue_id: &str) -> String {
    format!("hunt:baseline:clue:{{{clue_id}}}:lock")
}

/// `hunt:routers`: the set of router ids that have sent a heartbeat (some may be dead since;
/// [`router_heartbeat`] tells).
#[must_use]
pub fn routers() -> String {
    "hunt:routers".to_owned()
}

/// `hunt:router:{<id>}`: present, with a TTL, while router `id` is alive. Used to split tiers
/// fairly between live routers: liveness only, never correctness.
#[must_use]
pub fn router_heartbeat(router_id: &str) -> String {
    format!("hunt:router:{{{router_id}}}")
}

/// `hunt:{t<N>}:replay`: the hash from shard to the `tier_seq` it must re-send from.
#[must_use]
pub fn tier_replay(tier: u32) -> String {
    tier_key(tier, "replay")
}

/// `hunt:{t<N>}:awards`: the hash from award id to the award and its saga state.
#[must_use]
pub fn tier_awards(tier: u32) -> String {
    tier_key(tier, "awards")
}

/// `hunt:{t<N>}:awards:pending`: award ids the saga has not finished, scored by apply order.
#[must_use]
pub fn tier_awards_pending(tier: u32) -> String {
    tier_key(tier, "awards:pending")
}

/// `hunt:{t<N>}:awards:revoked`: award ids revoked whose shards have not been told yet, scored
/// by apply order.
#[must_use]
pub fn tier_awards_revoked(tier: u32) -> String {
    tier_key(tier, "awards:revoked")
}

/// `hunt:{t<N>}:awards:confirming`: award ids confirmed whose shards have not been asked yet to
/// record the verdict in their files ([`shard_verdicts`]), scored by apply order. A verdict is
/// told (`GetAward`) only once a shard file records it.
#[must_use]
pub fn tier_awards_confirming(tier: u32) -> String {
    tier_key(tier, "awards:confirming")
}

/// `hunt:{t<N>}:awards:settled`: settled award ids, scored by settle time (the router's clock,
/// milliseconds), so records can be forgotten after their retention.
#[must_use]
pub fn tier_awards_settled(tier: u32) -> String {
    tier_key(tier, "awards:settled")
}

/// `hunt:{t<N>}:names`: player id → the display name its latest named event gave, shown
/// beside the board (last applied wins; never part of a score).
#[must_use]
pub fn tier_names(tier: u32) -> String {
    tier_key(tier, "names")
}

/// `hunt:{t<N>}:clues`: the hash from clue id to the highest claim token applied in the tier; a
/// solve carrying a token at or below it scores nothing.
#[must_use]
pub fn tier_clues(tier: u32) -> String {
    tier_key(tier, "clues")
}

/// `hunt:chest:{<key>}`: the winning award id of a chest. `chest_key` must be a valid id.
#[must_use]
pub fn chest(chest_key: &str) -> String {
    format!("hunt:chest:{{{chest_key}}}")
}

/// `hunt:chest:{<key>}:recorded`: the holder of a chest as a shard file records it (set only
/// after the file has it, living as long as the claim). A chest's holder, and so an award's
/// verdict, is told only when this names the holder: a Redis that forgets gets it back.
#[must_use]
pub fn chest_recorded(chest_key: &str) -> String {
    format!("hunt:chest:{{{chest_key}}}:recorded")
}

/// `hunt:claims`: the claims gate (a hash: `incarnation`, `open`, `expected`, `joined`,
/// `shard:<id>`), see [`crate::functions::claims`].
pub const CLAIMS: &str = "hunt:claims";

/// `hunt:barrier:{<tag>}`: a short-lived key written just before `WAIT`, in the slot of `key`
/// (its `{tag}`, or the whole key without one), so the `WAIT` covers everything that slot's
/// primary applied before, whoever wrote it.
#[must_use]
pub fn barrier(key: &str) -> String {
    let tag = key
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(tag, _)| tag)
        .filter(|tag| !tag.is_empty())
        .unwrap_or(key);
    format!("hunt:barrier:{{{tag}}}")
}

/// `hunt:clue:{<id>}`: a clue's claim state. `clue_id` must be a valid id.
#[must_use]
pub fn clue(clue_id: &str) -> String {
    format!("hunt:clue:{{{clue_id}}}")
}

/// `hunt:shard:{<id>}:epoch`: the shard's incarnation counter (its fencing token).
#[must_use]
pub fn shard_epoch(shard_id: u32) -> String {
    format!("hunt:shard:{{{shard_id}}}:epoch")
}

/// `hunt:shard:{<id>}:inbox`: the stream of compensations for the shard.
#[must_use]
pub fn shard_inbox(shard_id: u32) -> String {
    format!("hunt:shard:{{{shard_id}}}:inbox")
}

/// `hunt:shard:{<id>}:inbox:sent`: award ids already put in the shard's inbox, scored by when
/// (the router's clock, milliseconds), so each compensation is sent once.
#[must_use]
pub fn shard_inbox_sent(shard_id: u32) -> String {
    format!("hunt:shard:{{{shard_id}}}:inbox:sent")
}

/// `hunt:shard:{<id>}:verdicts`: the stream of chest verdicts (fields `a`: the award holding
/// the chest, `c`: the chest) the shard's writer records in its file, then marks recorded
/// ([`chest_recorded`]) and deletes.
#[must_use]
pub fn shard_verdicts(shard_id: u32) -> String {
    format!("hunt:shard:{{{shard_id}}}:verdicts")
}

/// The field naming a shard in the `applied`, `published` and `replay` hashes: its decimal id.
#[must_use]
pub fn shard_field(shard_id: u32) -> String {
    shard_id.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of `key` Redis Cluster hashes: the text between the first `{` and the next `}`
    /// when that is non-empty, else the whole key.
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    /// CRC16/XMODEM modulo 16384 of the hash tag: the Redis Cluster slot.
    fn slot(key: &str) -> u16 {
        let mut crc: u16 = 0;
        for byte in hash_tag(key).bytes() {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 == 0 {
                    crc << 1
                } else {
                    (crc << 1) ^ 0x1021
                };
            }
        }
        crc % 16384
    }

    fn tier_keys(tier: u32) -> Vec<String> {
        vec![
            tier_stream(tier),
            tier_scores(tier),
            tier_members(tier),
            tier_applied(tier),
            tier_published(tier),
            tier_cursor(tier),
            tier_lease(tier),
            tier_fence(tier),
            tier_replay(tier),
            tier_awards(tier),
            tier_awards_pending(tier),
            tier_awards_settled(tier),
            tier_awards_revoked(tier),
            tier_awards_confirming(tier),
            tier_names(tier),
            tier_clues(tier),
        ]
    }

    #[test]
    fn slot_matches_redis_reference_values() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        // CRC16/XMODEM("123456789") = 0x31C3, below 16384.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
    }

    #[test]
    fn every_key_of_a_tier_shares_its_hash_tag() {
        for tier in [1, 2, 5, 42, u32::MAX] {
            let tag = format!("t{tier}");
            let keys = tier_keys(tier);
            for key in &keys {
                assert_eq!(hash_tag(key), tag, "{key}");
                assert_eq!(slot(key), slot(&keys[0]), "{key}");
            }
        }
    }

    #[test]
    fn a_barrier_shares_the_slot_of_its_key() {
        let keys = [
            tier_awards(3),
            chest("c-17"),
            clue("clue.9"),
            shard_inbox(12),
            "untagged".to_owned(),
        ];
        for key in &keys {
            assert_eq!(slot(&barrier(key)), slot(key), "{key}");
        }
    }

    #[test]
    fn tiers_have_distinct_tags_and_keys() {
        assert_ne!(hash_tag(&tier_stream(1)), hash_tag(&tier_stream(11)));
        let mut all: Vec<String> = (1..=20).flat_map(tier_keys).collect();
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count, "two keys collide");
    }

    #[test]
    fn keys_match_the_schema() {
        assert_eq!(tier_stream(3), "hunt:{t3}:stream");
        assert_eq!(tier_scores(3), "hunt:{t3}:scores");
        assert_eq!(tier_members(3), "hunt:{t3}:scores:members");
        assert_eq!(tier_applied(3), "hunt:{t3}:applied");
        assert_eq!(tier_published(3), "hunt:{t3}:published");
        assert_eq!(tier_cursor(3), "hunt:{t3}:cursor");
        assert_eq!(tier_lease(3), "hunt:{t3}:lease");
        assert_eq!(tier_fence(3), "hunt:{t3}:fence");
        assert_eq!(tier_replay(3), "hunt:{t3}:replay");
        assert_eq!(tier_awards(3), "hunt:{t3}:awards");
        assert_eq!(tier_awards_pending(3), "hunt:{t3}:awards:pending");
        assert_eq!(tier_awards_settled(3), "hunt:{t3}:awards:settled");
        assert_eq!(tier_awards_revoked(3), "hunt:{t3}:awards:revoked");
        assert_eq!(tier_awards_confirming(3), "hunt:{t3}:awards:confirming");
        assert_eq!(
            chest_recorded("north-gate"),
            "hunt:chest:{north-gate}:recorded"
        );
        assert_eq!(shard_verdicts(12), "hunt:shard:{12}:verdicts");
        assert_eq!(tier_clues(3), "hunt:{t3}:clues");
        assert_eq!(tier_names(3), "hunt:{t3}:names");
        assert_eq!(shard_inbox_sent(12), "hunt:shard:{12}:inbox:sent");
        assert_eq!(chest("north-gate"), "hunt:chest:{north-gate}");
        assert_eq!(clue("riddle-7"), "hunt:clue:{riddle-7}");
        assert_eq!(shard_epoch(12), "hunt:shard:{12}:epoch");
        assert_eq!(shard_inbox(12), "hunt:shard:{12}:inbox");
        assert_eq!(shard_field(12), "12");
        assert_eq!(STREAM_EVENT_FIELD, "e");
    }

    #[test]
    fn chest_clue_and_shard_keys_are_tagged_by_their_id() {
        assert_eq!(hash_tag(&chest("north-gate")), "north-gate");
        assert_eq!(hash_tag(&clue("riddle-7")), "riddle-7");
        assert_eq!(hash_tag(&shard_epoch(12)), "12");
        assert_eq!(slot(&shard_epoch(12)), slot(&shard_inbox(12)));
        assert_eq!(slot(&shard_inbox(12)), slot(&shard_inbox_sent(12)));
        assert_eq!(slot(&shard_inbox(12)), slot(&shard_verdicts(12)));
        assert_eq!(
            slot(&chest("north-gate")),
            slot(&chest_recorded("north-gate"))
        );
    }
}
