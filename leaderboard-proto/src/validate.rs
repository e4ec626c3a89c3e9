//! The rules every event passes before it is committed to a shard's SQLite log.
//!
//! A value Redis would reject, or one that would corrupt a key or a score, must never become an
//! outbox row that fails on every relay attempt, so the writer runs [`event`] on every append
//! and the ingest sidecar answers a failure with `INVALID_ARGUMENT`.
//!
//! Design constraints:
//! - Ids (player, clue, chest, award) are non-empty UTF-8 of at most [`MAX_ID_BYTES`] bytes, with
//!   no control character and no `{` or `}`: a brace inside a key would move its Redis Cluster
//!   hash slot (see [`crate::keys`]).
//! - Points are integers with |points| ≤ [`MAX_POINTS`] (2^53 − 1): a Redis score is a double,
//!   exact only up to there.
//! - `tier_seq` is assigned by the writer's relay; a caller that sets it is refused.
//! - A display name is optional: at most [`MAX_NAME_CHARS`] characters and [`MAX_NAME_BYTES`]
//!   bytes, no control character, no white space at either end (it is shown to people as is),
//!   and only on an event with a player.

pub use crate::limits::{MAX_ID_BYTES, MAX_NAME_BYTES, MAX_NAME_CHARS, MAX_POINTS, MAX_WAVE_CLUES};
use crate::rewards;
use crate::v1::HuntEvent;
use crate::v1::hunt_event::Kind;

/// Why an event or one of its fields was refused. `field` names the protobuf field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The event's tier is not in the reward table.
    #[error("unknown tier {0}: the reward table does not define it")]
    UnknownTier(u32),
    /// An id is empty.
    #[error("{field} must not be empty")]
    EmptyId {
        /// The protobuf field holding the id.
        field: &'static str,
    },
    /// An id is longer than [`MAX_ID_BYTES`].
    #[error("{field} is {len} bytes long: at most 64 bytes of UTF-8 are allowed")]
    IdTooLong {
        /// The protobuf field holding the id.
        field: &'static str,
        /// The id's length in bytes.
        len: usize,
    },
    /// An id contains a control character.
    #[error("{field} contains a control character")]
    IdControlChar {
        /// The protobuf field holding the id.
        field: &'static str,
    },
    /// An id contains `{` or `}`.
    #[error("{field} contains '{{' or '}}', which would move its Redis Cluster hash slot")]
    IdBrace {
        /// The protobuf field holding the id.
        field: &'static str,
    },
    /// Points outside `-MAX_POINTS..=MAX_POINTS`.
    #[error("{field} is {points}: points must be within ±9007199254740991 (2^53 - 1)")]
    PointsOutOfRange {
        /// The protobuf field holding the points.
        field: &'static str,
        /// The refused value.
        points: i64,
    },
    /// The event carries none of the kinds of `HuntEvent.kind`.
    #[error(
        "the event has no kind: set one of score_gained, clue_solved, treasure_awarded, \
         wave_reset or award_revoked"
    )]
    MissingKind,
    /// A clue solve carries no claim token.
    #[error("token is 0: a clue solve carries the token its claim returned (1 or more)")]
    MissingToken,
    /// A wave number of 0.
    #[error("wave is 0: waves count from 1")]
    ZeroWave,
    /// A wave opens more clues than [`MAX_WAVE_CLUES`].
    #[error("clue_ids has {0} entries: a wave opens at most 1000 clues")]
    TooManyClues(usize),
    /// A display name longer than [`MAX_NAME_CHARS`] characters or [`MAX_NAME_BYTES`] bytes.
    #[error(
        "display_name is {chars} characters ({bytes} bytes) long: at most 32 characters and 64 \
         bytes are allowed"
    )]
    NameTooLong {
        /// Its length in characters.
        chars: usize,
        /// Its length in bytes.
        bytes: usize,
    },
    /// A display name with a control character, or white space at either end.
    #[error("display_name has a control character or white space at either end")]
    NameUnprintable,
    /// A display name on an event without a player (a wave reset).
    #[error("display_name is set on a wave_reset, which has no player")]
    NameWithoutPlayer,
    /// A field the writer assigns was set by the caller.
    #[error("{field} is assigned by the writer: leave it 0")]
    WriterAssigned {
        /// The protobuf field the caller set.
        field: &'static str,
    },
}

/// Checks an id: non-empty, at most [`MAX_ID_BYTES`] bytes, no control character, no brace.
///
/// # Errors
///
/// [`ValidationError::EmptyId`], [`ValidationError::IdTooLong`],
/// [`ValidationError::IdControlChar`] or [`ValidationError::IdBrace`], naming `field`.
pub fn id(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::EmptyId { field });
    }
    if value.len() > MAX_ID_BYTES {
        return Err(ValidationError::IdTooLong {
            field,
            len: value.len(),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::IdControlChar { field });
    }
    if value.contains(['{', '}']) {
        return Err(ValidationError::IdBrace { field });
    }
    Ok(())
}

/// Checks a display name (empty is allowed: no name): at most [`MAX_NAME_CHARS`] characters
/// and [`MAX_NAME_BYTES`] bytes, no control character, no white space at either end.
///
/// # Errors
///
/// [`ValidationError::NameTooLong`] or [`ValidationError::NameUnprintable`].
pub fn display_name(value: &str) -> Result<(), ValidationError> {
    let chars = value.chars().count();
    if chars > MAX_NAME_CHARS || value.len() > MAX_NAME_BYTES {
        return Err(ValidationError::NameTooLong {
            chars,
            bytes: value.len(),
        });
    }
    if value.chars().any(char::is_control) || value.trim() != value {
        return Err(ValidationError::NameUnprintable);
    }
    Ok(())
}

/// Checks points: |value| ≤ [`MAX_POINTS`].
///
/// # Errors
///
/// [`ValidationError::PointsOutOfRange`], naming `field`.
pub fn points(field: &'static str, value: i64) -> Result<(), ValidationError> {
    // `unsigned_abs`, because `i64::MIN.abs()` overflows.
    if value.unsigned_abs() > MAX_POINTS.unsigned_abs() {
        return Err(ValidationError::PointsOutOfRange {
            field,
            points: value,
        });
    }
    Ok(())
}

/// Checks a wave and the clues it opens: the wave is 1 or more, at most [`MAX_WAVE_CLUES`] clues,
/// each a valid id.
///
/// # Errors
///
/// [`ValidationError::ZeroWave`], [`ValidationError::TooManyClues`], or the first invalid clue id.
pub fn wave(wave: u32, clue_ids: &[String]) -> Result<(), ValidationError> {
    if wave == 0 {
        return Err(ValidationError::ZeroWave);
    }
    if clue_ids.len() > MAX_WAVE_CLUES {
        return Err(ValidationError::TooManyClues(clue_ids.len()));
    }
    clue_ids.iter().try_for_each(|clue| id("clue_ids", clue))
}

/// Checks an event as a caller hands it to the writer: its tier is in the reward table,
/// `tier_seq` is 0 (the writer assigns it), its display name (if any) is valid and on an event
/// with a player, a kind is present, and every id and points field of
/// that kind is valid. A `TreasureAwarded` may leave `award_id` empty: the writer derives it from
/// the event id. `shard_id`, `epoch` and `seq` are not checked: the writer overwrites them.
///
/// # Errors
///
/// The first rule the event breaks, in the order above.
pub fn event(e: &HuntEvent) -> Result<(), ValidationError> {
    if rewards::tier(e.tier).is_none() {
        return Err(ValidationError::UnknownTier(e.tier));
    }
    if e.tier_seq != 0 {
        return Err(ValidationError::WriterAssigned { field: "tier_seq" });
    }
    if !e.display_name.is_empty() {
        if matches!(e.kind, Some(Kind::WaveReset(_))) {
            return Err(ValidationError::NameWithoutPlayer);
        }
        display_name(&e.display_name)?;
    }
    match &e.kind {
        None => Err(ValidationError::MissingKind),
        Some(Kind::ScoreGained(gained)) => {
            id("player_id", &gained.player_id)?;
            points("points", gained.points)
        }
        Some(Kind::ClueSolved(solved)) => {
            id("clue_id", &solved.clue_id)?;
            id("player_id", &solved.player_id)?;
            if solved.token == 0 {
                return Err(ValidationError::MissingToken);
            }
            points("points", solved.points)
        }
        Some(Kind::TreasureAwarded(awarded)) => {
            id("chest_key", &awarded.chest_key)?;
            if !awarded.award_id.is_empty() {
                id("award_id", &awarded.award_id)?;
            }
            id("player_id", &awarded.player_id)?;
            points("points", awarded.points)
        }
        Some(Kind::WaveReset(reset)) => wave(reset.wave, &reset.clue_ids),
        Some(Kind::AwardRevoked(revoked)) => {
            id("award_id", &revoked.award_id)?;
            id("chest_key", &revoked.chest_key)?;
            id("player_id", &revoked.player_id)?;
            if !revoked.holder_award_id.is_empty() {
                id("holder_award_id", &revoked.holder_award_id)?;
            }
            points("points", revoked.points)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    use super::*;
    use crate::v1::{AwardRevoked, ClueSolved, ScoreGained, TreasureAwarded, WaveReset};

    fn event_of(kind: Kind) -> HuntEvent {
        HuntEvent {
            shard_id: 7,
            epoch: 3,
            seq: 11,
            tier: 1,
            tier_seq: 0,
            occurred_at_ms: 1_700_000_000_000,
            display_name: String::new(),
            kind: Some(kind),
        }
    }

    fn awarded(award_id: &str) -> Kind {
        Kind::TreasureAwarded(TreasureAwarded {
            chest_key: "north-gate".to_owned(),
            award_id: award_id.to_owned(),
            player_id: "ada".to_owned(),
            points: 50,
        })
    }

    #[test]
    fn ids_follow_the_rules() {
        assert_eq!(id("player_id", "ada"), Ok(()));
        assert_eq!(id("player_id", "Ωμέγα-🦀"), Ok(()));
        assert_eq!(id("player_id", &"x".repeat(64)), Ok(()));
        // 32 two-byte characters: exactly 64 bytes.
        assert_eq!(id("player_id", &"é".repeat(32)), Ok(()));
        assert_eq!(
            id("player_id", ""),
            Err(ValidationError::EmptyId { field: "player_id" })
        );
        assert_eq!(
            id("player_id", &"x".repeat(65)),
            Err(ValidationError::IdTooLong {
                field: "player_id",
                len: 65
            })
        );
        assert_eq!(
            id("clue_id", &"é".repeat(33)),
            Err(ValidationError::IdTooLong {
                field: "clue_id",
                len: 66
            })
        );
        for control in ["a\nb", "\0", "tab\there", "del\u{7f}", "c1\u{85}"] {
            assert_eq!(
                id("clue_id", control),
                Err(ValidationError::IdControlChar { field: "clue_id" }),
                "{control:?}"
            );
        }
        for brace in ["{a", "a}", "{}", "x{t1}y"] {
            assert_eq!(
                id("chest_key", brace),
                Err(ValidationError::IdBrace { field: "chest_key" }),
                "{brace:?}"
            );
        }
    }

    #[test]
    fn points_follow_the_rules() {
        for ok in [0, 1, -1, MAX_POINTS, -MAX_POINTS] {
            assert_eq!(points("points", ok), Ok(()), "{ok}");
        }
        for bad in [MAX_POINTS + 1, -MAX_POINTS - 1, i64::MAX, i64::MIN] {
            assert_eq!(
                points("points", bad),
                Err(ValidationError::PointsOutOfRange {
                    field: "points",
                    points: bad
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn display_names_are_short_printable_and_on_events_with_a_player() {
        let named = |name: &str| HuntEvent {
            display_name: name.to_owned(),
            ..event_of(awarded("award-1"))
        };
        assert_eq!(event(&named("Ada Lovelace")), Ok(()));
        assert_eq!(event(&named("Zoë ✓ 北")), Ok(()));
        assert_eq!(event(&named(&"é".repeat(32))), Ok(()));
        assert_eq!(
            event(&named(&"x".repeat(33))),
            Err(ValidationError::NameTooLong {
                chars: 33,
                bytes: 33
            })
        );
        // 22 characters of 3 bytes each: short enough in characters, too long in bytes.
        assert_eq!(
            event(&named(&"北".repeat(22))),
            Err(ValidationError::NameTooLong {
                chars: 22,
                bytes: 66
            })
        );
        for bad in [" Ada", "Ada ", "A\nda", "\u{7}", "\t"] {
            assert_eq!(
                event(&named(bad)),
                Err(ValidationError::NameUnprintable),
                "{bad:?}"
            );
        }
        let reset = HuntEvent {
            display_name: "Ada".into(),
            ..event_of(Kind::WaveReset(WaveReset {
                wave: 1,
                clue_ids: vec!["c1".into()],
            }))
        };
        assert_eq!(event(&reset), Err(ValidationError::NameWithoutPlayer));
    }

    #[test]
    fn events_follow_the_rules() {
        assert_eq!(event(&event_of(awarded("award-1"))), Ok(()));
        assert_eq!(event(&event_of(awarded(""))), Ok(()));
        assert_eq!(
            event(&event_of(awarded("{x}"))),
            Err(ValidationError::IdBrace { field: "award_id" })
        );
        assert_eq!(
            event(&event_of(Kind::WaveReset(WaveReset {
                wave: 9,
                clue_ids: vec!["riddle-1".into()]
            }))),
            Ok(())
        );
        assert_eq!(
            event(&event_of(Kind::WaveReset(WaveReset {
                wave: 0,
                clue_ids: vec![]
            }))),
            Err(ValidationError::ZeroWave)
        );
        assert_eq!(
            event(&event_of(Kind::WaveReset(WaveReset {
                wave: 1,
                clue_ids: vec!["ok".into(), "{x}".into()]
            }))),
            Err(ValidationError::IdBrace { field: "clue_ids" })
        );
        assert_eq!(
            event(&event_of(Kind::WaveReset(WaveReset {
                wave: 1,
                clue_ids: vec!["c".into(); 1_001]
            }))),
            Err(ValidationError::TooManyClues(1_001))
        );
        assert_eq!(
            event(&event_of(Kind::ClueSolved(ClueSolved {
                clue_id: "riddle".to_owned(),
                player_id: "ada".to_owned(),
                token: 0,
                points: 5,
            }))),
            Err(ValidationError::MissingToken)
        );

        let mut unknown = event_of(Kind::WaveReset(WaveReset {
            wave: 1,
            clue_ids: vec![],
        }));
        unknown.tier = 0;
        assert_eq!(event(&unknown), Err(ValidationError::UnknownTier(0)));
        unknown.tier = 99;
        assert_eq!(event(&unknown), Err(ValidationError::UnknownTier(99)));

        let mut sequenced = event_of(Kind::WaveReset(WaveReset {
            wave: 1,
            clue_ids: vec![],
        }));
        sequenced.tier_seq = 1;
        assert_eq!(
            event(&sequenced),
            Err(ValidationError::WriterAssigned { field: "tier_seq" })
        );

        let mut kindless = event_of(Kind::WaveReset(WaveReset {
            wave: 1,
            clue_ids: vec![],
        }));
        kindless.kind = None;
        assert_eq!(event(&kindless), Err(ValidationError::MissingKind));

        let gained = Kind::ScoreGained(ScoreGained {
            player_id: String::new(),
            points: 5,
        });
        assert_eq!(
            event(&event_of(gained)),
            Err(ValidationError::EmptyId { field: "player_id" })
        );
        let solved = Kind::ClueSolved(ClueSolved {
            clue_id: "riddle".to_owned(),
            player_id: "ada".to_owned(),
            token: 4,
            points: -MAX_POINTS - 1,
        });
        assert_eq!(
            event(&event_of(solved)),
            Err(ValidationError::PointsOutOfRange {
                field: "points",
                points: -MAX_POINTS - 1
            })
        );
        let revoked = Kind::AwardRevoked(AwardRevoked {
            award_id: String::new(),
            chest_key: "north-gate".to_owned(),
            player_id: "ada".to_owned(),
            points: 50,
            holder_award_id: String::new(),
        });
        assert_eq!(
            event(&event_of(revoked)),
            Err(ValidationError::EmptyId { field: "award_id" })
        );
    }

    #[test]
    fn messages_name_the_field_and_the_rule() {
        let brace = ValidationError::IdBrace { field: "chest_key" }.to_string();
        assert!(
            brace.contains("chest_key") && brace.contains("'{' or '}'"),
            "{brace}"
        );
        let long = ValidationError::IdTooLong {
            field: "player_id",
            len: 70,
        }
        .to_string();
        assert!(long.contains("70 bytes") && long.contains("64"), "{long}");
        assert!(
            ValidationError::UnknownTier(9)
                .to_string()
                .contains("tier 9")
        );
    }

    /// The rules, written out as plainly as possible: the model the functions must match.
    fn id_is_valid(value: &str) -> bool {
        !value.is_empty()
            && value.len() <= 64
            && value
                .chars()
                .all(|c| !c.is_control() && c != '{' && c != '}')
    }

    fn points_are_valid(value: i64) -> bool {
        (-(2_i64.pow(53) - 1)..=2_i64.pow(53) - 1).contains(&value)
    }

    /// Ids drawn to hit every rule: printable ASCII, braces, control characters, multi-byte
    /// characters, and lengths on both sides of 64 bytes.
    fn any_id() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z0-9_.:-]{1,64}",
            1 => "[a-z0-9_.:-]{0,70}",
            1 => "[a-zA-Z{}]{1,8}",
            1 => "[a-z\\x00-\\x1f\\x7f\\u{80}-\\u{9f}]{1,8}",
            1 => "[é🦀ß字]{1,20}",
            1 => any::<String>(),
        ]
    }

    fn any_points() -> impl Strategy<Value = i64> {
        prop_oneof![
            any::<i64>(),
            -MAX_POINTS - 3..=-MAX_POINTS + 3,
            MAX_POINTS - 3..=MAX_POINTS + 3,
            -1000_i64..=1000,
            Just(i64::MIN),
            Just(i64::MAX),
        ]
    }

    fn any_kind() -> impl Strategy<Value = Option<Kind>> {
        prop_oneof![
            Just(None),
            (any_id(), any_points()).prop_map(|(player_id, points)| Some(Kind::ScoreGained(
                ScoreGained { player_id, points }
            ))),
            (
                any_id(),
                any_id(),
                prop_oneof![Just(0_u64), any::<u64>()],
                any_points()
            )
                .prop_map(|(clue_id, player_id, token, points)| Some(
                    Kind::ClueSolved(ClueSolved {
                        clue_id,
                        player_id,
                        token,
                        points
                    })
                )),
            (
                any_id(),
                prop_oneof![Just(String::new()), any_id()],
                any_id(),
                any_points()
            )
                .prop_map(|(chest_key, award_id, player_id, points)| Some(
                    Kind::TreasureAwarded(TreasureAwarded {
                        chest_key,
                        award_id,
                        player_id,
                        points
                    })
                )),
            (0_u32..4, prop::collection::vec(any_id(), 0..4))
                .prop_map(|(wave, clue_ids)| Some(Kind::WaveReset(WaveReset { wave, clue_ids }))),
            (any_id(), any_id(), any_id(), any_points()).prop_map(
                |(award_id, chest_key, player_id, points)| Some(Kind::AwardRevoked(AwardRevoked {
                    award_id,
                    chest_key,
                    player_id,
                    points,
                    holder_award_id: String::new(),
                }))
            ),
        ]
    }

    fn event_is_valid(e: &HuntEvent) -> bool {
        let tier_known = (1..=5).contains(&e.tier);
        let kind_valid = match &e.kind {
            None => false,
            Some(Kind::ScoreGained(k)) => id_is_valid(&k.player_id) && points_are_valid(k.points),
            Some(Kind::ClueSolved(k)) => {
                id_is_valid(&k.clue_id)
                    && id_is_valid(&k.player_id)
                    && k.token >= 1
                    && points_are_valid(k.points)
            }
            Some(Kind::TreasureAwarded(k)) => {
                id_is_valid(&k.chest_key)
                    && (k.award_id.is_empty() || id_is_valid(&k.award_id))
                    && id_is_valid(&k.player_id)
                    && points_are_valid(k.points)
            }
            Some(Kind::WaveReset(k)) => {
                k.wave >= 1
                    && k.clue_ids.len() <= 1_000
                    && k.clue_ids.iter().all(|c| id_is_valid(c))
            }
            Some(Kind::AwardRevoked(k)) => {
                id_is_valid(&k.award_id)
                    && id_is_valid(&k.chest_key)
                    && id_is_valid(&k.player_id)
                    && points_are_valid(k.points)
            }
        };
        let name_valid = e.display_name.is_empty()
            || (!matches!(e.kind, Some(Kind::WaveReset(_)))
                && e.display_name.chars().count() <= 32
                && e.display_name.len() <= 64
                && !e.display_name.chars().any(char::is_control)
                && !e.display_name.starts_with(char::is_whitespace)
                && !e.display_name.ends_with(char::is_whitespace));
        tier_known && e.tier_seq == 0 && name_valid && kind_valid
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            rng_seed: RngSeed::Fixed(0x6875_6e74),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn id_accepts_exactly_the_valid_ids(value in any_id()) {
            prop_assert_eq!(id("player_id", &value).is_ok(), id_is_valid(&value), "{:?}", value);
        }

        #[test]
        fn points_accepts_exactly_the_valid_points(value in any_points()) {
            prop_assert_eq!(points("points", value).is_ok(), points_are_valid(value));
        }

        #[test]
        fn event_accepts_exactly_the_valid_events(
            tier in prop_oneof![4 => 1_u32..=5, 1 => 0_u32..=7, 1 => any::<u32>()],
            tier_seq in prop_oneof![4 => Just(0_u64), 1 => any::<u64>()],
            kind in any_kind(),
            display_name in prop_oneof![
                4 => Just(String::new()),
                2 => "[a-zA-Z0-9 éü✓]{1,40}",
                1 => any::<String>(),
                1 => "\\PC{30,34}",
            ],
        ) {
            let e = HuntEvent { tier, tier_seq, kind, display_name, ..HuntEvent::default() };
            prop_assert_eq!(event(&e).is_ok(), event_is_valid(&e), "{:?}", e);
        }

        /// Fuzzing the Append decoder: arbitrary bytes, and valid requests with bytes flipped,
        /// either fail to decode or decode into events the validation judges exactly as the
        /// model does; nothing panics.
        #[test]
        fn any_append_bytes_decode_and_validate_without_panicking(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..512),
                (any_kind(), proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8))
                    .prop_map(|(kind, flips)| {
                        let request = crate::v1::AppendRequest {
                            events: vec![HuntEvent { tier: 1, kind, ..HuntEvent::default() }],
                        };
                        let mut bytes = prost::Message::encode_to_vec(&request);
                        for (at, value) in flips {
                            if !bytes.is_empty() {
                                let at = at % bytes.len();
                                bytes[at] = value;
                            }
                        }
                        bytes
                    }),
            ],
        ) {
            if let Ok(request) = <crate::v1::AppendRequest as prost::Message>::decode(bytes.as_slice()) {
                for e in &request.events {
                    prop_assert_eq!(event(e).is_ok(), event_is_valid(e), "{:?}", e);
                }
            }
        }
    }
}
