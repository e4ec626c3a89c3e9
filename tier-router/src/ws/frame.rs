//! The frames of `/ws`: `hunt.v1.SpectatorRequest` and `hunt.v1.SpectatorResponse` in the
//! proto3 JSON mapping (`leaderboard-proto/proto/hunt/v1/spectator.proto`), and [`Published`]:
//! one tier update encoded once for every subscriber.
//!
//! An update is the gRPC `Watch` message, `WatchResponse`, so a browser and a gRPC-JSON client
//! see one shape: `{"update":{"tier":1,"version":"7","snapshot":{"entries":[…]}}}`, or with
//! `"delta":{"base":"6","upserts":[…],"removals":[…]}` as [`Diff`] computes them.

use axum::extract::ws::Utf8Bytes;
use leaderboard_proto::v1::{
    Delta, Error as ErrorMessage, Pong, Snapshot as SnapshotMessage, SpectatorRequest,
    SpectatorResponse, WatchResponse, spectator_response, watch_response,
};

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
    /// An empty `delta` from `version` to itself: this update's freshness alone, for a
    /// spectator that already has the version.
    pub(super) freshness: Utf8Bytes,
}

impl Published {
    /// Encodes `now`, `tier`'s top, as a `snapshot` frame and, when `before` is given, as the
    /// `delta` frame that brings a spectator from `before` to `now` (empty, from a version to
    /// itself, when only `stale` changed). Both carry `now`'s freshness.
    #[must_use]
    pub fn encode(tier: u32, epoch: &str, before: Option<&Snapshot>, now: &Snapshot) -> Self {
        let snapshot = update(
            tier,
            epoch,
            now,
            watch_response::Update::Snapshot(SnapshotMessage {
                entries: now.entries.to_vec(),
            }),
        );
        let delta_from = |base: u64, Diff { upserts, removals }: Diff| {
            let change = Delta {
                base,
                upserts,
                removals,
            };
            update(tier, epoch, now, watch_response::Update::Delta(change))
        };
        let (base, delta) = match before {
            Some(before) => {
                let diff = Diff::between(&before.entries, &now.entries);
                (Some(before.version), Some(delta_from(before.version, diff)))
            }
            None => (None, None),
        };
        let freshness = delta_from(now.version, Diff::default());
        Self {
            version: now.version,
            base,
            snapshot,
            delta,
            freshness,
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

/// An `update` frame.
fn update(tier: u32, epoch: &str, now: &Snapshot, update: watch_response::Update) -> Utf8Bytes {
    to_text(spectator_response::Frame::Update(WatchResponse {
        tier,
        version: now.version,
        update: Some(update),
        epoch: epoch.to_owned(),
        stale: now.unconfirmed(),
        changed_at_ms: now.changed_at_ms,
    }))
}

/// A `pong` frame.
pub(super) fn pong() -> Utf8Bytes {
    to_text(spectator_response::Frame::Pong(Pong {}))
}

/// An `error` frame.
pub(super) fn error(code: &str, message: impl Into<String>) -> Utf8Bytes {
    to_text(spectator_response::Frame::Error(ErrorMessage {
        code: code.to_owned(),
        message: message.into(),
    }))
}

fn to_text(frame: spectator_response::Frame) -> Utf8Bytes {
    let response = SpectatorResponse { frame: Some(frame) };
    // Serializing a message with no maps and no floats cannot fail; an empty frame would be
    // the only symptom.
    Utf8Bytes::from(serde_json::to_string(&response).unwrap_or_default())
}

/// Reads one client text frame: a `SpectatorRequest` in the proto3 JSON mapping, unknown
/// fields refused.
pub(super) fn parse(text: &str) -> Result<SpectatorRequest, serde_json::Error> {
    serde_json::from_str(text)
}
