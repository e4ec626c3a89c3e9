// The limits of the contract, in one place. This file is also compiled into the build script
// (it checks the reward table against them and writes them into the Lua library), so it holds
// plain constants only.

/// The largest magnitude of points in an event or a total: 2^53 − 1, the largest integer a
/// Redis score (a double) holds exactly.
pub const MAX_POINTS: i64 = (1 << 53) - 1;

/// The longest id (player, clue, chest, award), in UTF-8 bytes.
pub const MAX_ID_BYTES: usize = 64;

/// The longest display name, in characters (Unicode scalar values).
pub const MAX_NAME_CHARS: usize = 32;

/// The longest display name, in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// The most clues one wave opens.
pub const MAX_WAVE_CLUES: usize = 1_000;

/// The rows `GetTop` returns when its `limit` is 0.
pub const DEFAULT_TOP_LIMIT: u32 = 100;

/// The largest `limit` of `GetTop`.
pub const MAX_TOP_LIMIT: u32 = 1_000;

/// The largest `around` of `GetPlayer`: neighbours on each side.
pub const MAX_AROUND: u32 = 50;

/// The largest gRPC message a hunt-pipeline server reads or writes: 4 MiB.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Digits of the order prefix of a leaderboard member (`hunt:{t<N>}:scores`): a member is the
/// prefix followed by the player id, written by `hunt_apply`.
pub const MEMBER_ORDER_WIDTH: usize = 16;
