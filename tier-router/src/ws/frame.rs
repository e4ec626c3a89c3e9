//! The JSON frames of `/ws`, and [`Published`]: one tier update encoded once for every
//! subscriber.
//!
//! Entries go out as `{"rank":R,"player":"…","score":S}`; a `delta` carries the entries to
//! upsert and the players to remove, as [`Diff`] computes them.

use axum::extract::ws::Utf8Bytes;
use leaderboard_proto::v1::Entry;
use serde::{Deserialize, Serialize};

use crate::cache::{Diff, Snapshot};

/// One tier update, encoded once for every subscriber: the `snapshot` frame of the new top, and
/// the `delta` frame from the version published before it.
#[derive(Debug)]
pub struct Published {
    pub(super) version: u64,
    /// The version `delta` applies to; `None` for the first update published.
    pub(super) base: Option<u64>,
    pub(super) snapshot: Utf8Bytes,
    pub(super) delta: Option<Utf8Bytes>,
}

impl Published {
    /// Encodes `now`, `tier`'s top, as a `snapshot` frame and, when `before` is given, as the
    /// `delta` frame that brings a spectator from `before` to `now`.
    #[must_use]
    pub fn encode(tier: u32, before: Option<&Snapshot>, now: &Snapshot) -> Self {
        let snapshot = to_text(&ServerFrame::Snapshot {
            tier,
            version: now.version,
            entries: entries(&now.entries),
        });
        let (base, delta) = match before {
            Some(before) => {
                let diff = Diff::between(&before.entries, &now.entries);
                let delta = to_text(&ServerFrame::Delta {
                    tier,
                    version: now.version,
                    base: before.version,
                    upserts: entries(&diff.upserts),
                    removals: &diff.removals,
                });
                (Some(before.version), Some(delta))
            }
            None => (None, None),
        };
        Self {
            version: now.version,
            base,
            snapshot,
            delta,
        }
    }

    /// The version of the top encoded.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The version the delta applies to; `None` without a delta.
    #[must_use]
    pub fn base(&self) -> Option<u64> {
        self.base
    }

    /// The `snapshot` frame.
    #[must_use]
    pub fn snapshot(&self) -> &str {
        self.snapshot.as_str()
    }

    /// The `delta` frame, if any.
    #[must_use]
    pub fn delta(&self) -> Option<&str> {
        self.delta.as_ref().map(Utf8Bytes::as_str)
    }
}

/// Entries as spectators see them.
#[derive(Debug, Serialize)]
pub(super) struct WsEntry<'a> {
    rank: u64,
    player: &'a str,
    score: i64,
}

fn entries(entries: &[Entry]) -> Vec<WsEntry<'_>> {
    entries
        .iter()
        .map(|e| WsEntry {
            rank: e.rank,
            player: &e.player_id,
            score: e.score,
        })
        .collect()
}

/// Frames the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ServerFrame<'a> {
    Snapshot {
        tier: u32,
        version: u64,
        entries: Vec<WsEntry<'a>>,
    },
    Delta {
        tier: u32,
        version: u64,
        base: u64,
        upserts: Vec<WsEntry<'a>>,
        removals: &'a [String],
    },
    Pong,
    Error {
        code: &'a str,
        message: String,
    },
}

pub(super) fn to_text(frame: &ServerFrame<'_>) -> Utf8Bytes {
    // Serializing these plain structs cannot fail; an empty frame would be the only symptom.
    Utf8Bytes::from(serde_json::to_string(frame).unwrap_or_default())
}

/// An `error` frame.
pub(super) fn error(code: &str, message: impl Into<String>) -> Utf8Bytes {
    to_text(&ServerFrame::Error {
        code,
        message: message.into(),
    })
}

/// Frames clients send.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum ClientFrame {
    /// `version`: the last version this client saw, to resume from.
    Subscribe {
        tier: u32,
        version: Option<u64>,
    },
    Unsubscribe {
        tier: u32,
    },
    Ping,
}
