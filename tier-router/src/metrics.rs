//! Metric names of the tier router, recorded through the `metrics` facade.

/// Stream entries applied (counter).
pub const APPLIED: &str = "hunt_router_applied_total";
/// Entries skipped as already applied (counter).
pub const DUPLICATES: &str = "hunt_router_duplicates_total";
/// Gaps found in a shard's entries (entries missing before the next one), each of which records
/// a replay request for that shard (counter).
pub const REPLAY_REQUESTS: &str = "hunt_router_replay_requests_total";
/// How far a tier's applying is behind, in seconds: the age of the last applied entry while
/// reads come back full, 0 once caught up; by `tier` (gauge).
pub const LAG_SECONDS: &str = "hunt_router_lag_seconds";
/// 1, labelled with the running `version` (gauge).
pub const BUILD_INFO: &str = "hunt_router_build_info";
/// Live routers this router sees, itself included (gauge).
pub const ROUTERS: &str = "hunt_router_live_routers";
/// Player totals refused for leaving the exact integer range (counter).
pub const REJECTED: &str = "hunt_router_out_of_range_events_total";
/// Stream entries that did not decode (counter).
pub const MALFORMED: &str = "hunt_router_malformed_entries_total";
/// Applies refused by Redis for a stale fence token (counter).
pub const FENCED: &str = "hunt_router_fenced_total";
/// Fences found gone when refused: Redis lost its data (counter).
pub const REDIS_DATA_LOST: &str = "hunt_router_redis_data_lost_total";
/// Redis failures seen by tier workers (counter).
pub const REDIS_ERRORS: &str = "hunt_router_redis_errors_total";
/// Time of one `hunt_apply` call, in seconds (histogram).
pub const BATCH_SECONDS: &str = "hunt_router_batch_seconds";
/// 1 for each tier this router owns, by `tier` (gauge).
pub const OWNED: &str = "hunt_router_tier_owned";
/// Watchers that fell behind and were sent a fresh snapshot (counter).
pub const WATCH_RESYNCS: &str = "hunt_router_watch_resyncs_total";
/// Spectators connected to `/ws` (gauge).
pub const WS_CONNECTIONS: &str = "hunt_router_ws_connections";
/// `/ws` upgrades refused at the connection cap (counter).
pub const WS_REFUSED: &str = "hunt_router_ws_refused_total";
/// gRPC requests refused, by `code` (counter).
pub const GRPC_REFUSED: &str = "hunt_router_grpc_refused_total";
/// Chest awards recorded as pending by `hunt_apply` (counter).
pub const AWARDS_RECORDED: &str = "hunt_router_awards_recorded_total";
/// Awards waiting for the saga (pending, or revoked with their shard not yet told), by `tier`,
/// as the last saga step saw them (gauge).
pub const AWARDS_PENDING: &str = "hunt_router_awards_pending";
/// Awards confirmed as their chest's holder (counter).
pub const AWARDS_CONFIRMED: &str = "hunt_router_awards_confirmed_total";
/// Awards revoked for a chest another award holds, their points taken back (counter).
pub const AWARDS_REVOKED: &str = "hunt_router_awards_revoked_total";
/// Compensation events added to a shard's inbox (counter).
pub const COMPENSATIONS: &str = "hunt_router_compensations_total";
/// Compensations deferred to a later sweep because the shard's inbox was full (counter).
pub const INBOX_FULL: &str = "hunt_router_inbox_full_total";
/// Clue solves that scored nothing because their claim token was stale (counter).
pub const STALE_CLUE_SOLVES: &str = "hunt_router_stale_clue_solves_total";
/// Time of one saga sweep over a tier's pending awards, in seconds (histogram).
pub const SAGA_SWEEP_SECONDS: &str = "hunt_router_saga_sweep_seconds";

/// Registers the descriptions of every router metric with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(BUILD_INFO, "1, labelled with the version running.");
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Counters without labels exist from the start, at 0, so `rate()` over them reads 0
    // rather than no data before their first event.
    for name in [
        APPLIED,
        AWARDS_CONFIRMED,
        AWARDS_RECORDED,
        AWARDS_REVOKED,
        COMPENSATIONS,
        DUPLICATES,
        FENCED,
        INBOX_FULL,
        MALFORMED,
        REDIS_DATA_LOST,
        REDIS_ERRORS,
        REJECTED,
        REPLAY_REQUESTS,
        STALE_CLUE_SOLVES,
        WATCH_RESYNCS,
        WS_REFUSED,
    ] {
        metrics::counter!(name).increment(0);
    }
    describe_counter!(APPLIED, "Stream entries applied.");
    describe_counter!(DUPLICATES, "Stream entries skipped as already applied.");
    describe_counter!(
        REPLAY_REQUESTS,
        "Gaps in a shard's entries, each recording a replay request."
    );
    describe_gauge!(
        LAG_SECONDS,
        Unit::Seconds,
        "How far applying a tier is behind."
    );
    describe_gauge!(ROUTERS, "Live routers seen, this one included.");
    describe_counter!(
        REJECTED,
        "Player totals refused for leaving the exact range."
    );
    describe_counter!(MALFORMED, "Stream entries that did not decode.");
    describe_counter!(FENCED, "Applies refused for a stale fence token.");
    describe_counter!(REDIS_ERRORS, "Redis failures seen by tier workers.");
    describe_counter!(
        REDIS_DATA_LOST,
        "Fences found gone when refused: Redis lost its data."
    );
    describe_histogram!(BATCH_SECONDS, Unit::Seconds, "Time of one hunt_apply call.");
    describe_gauge!(OWNED, "1 for each tier this router owns.");
    describe_counter!(
        WATCH_RESYNCS,
        "Watchers that fell behind and got a fresh snapshot."
    );
    describe_gauge!(WS_CONNECTIONS, "Spectators connected to /ws.");
    describe_counter!(WS_REFUSED, "/ws upgrades refused at the connection cap.");
    describe_counter!(GRPC_REFUSED, "gRPC requests refused, by status code.");
    describe_counter!(AWARDS_RECORDED, "Chest awards recorded as pending.");
    describe_gauge!(
        AWARDS_PENDING,
        "Awards waiting for the dedup saga, as its last step saw them."
    );
    describe_counter!(
        AWARDS_CONFIRMED,
        "Awards confirmed as their chest's holder."
    );
    describe_counter!(
        AWARDS_REVOKED,
        "Awards revoked for a chest another award holds."
    );
    describe_counter!(COMPENSATIONS, "Compensation events sent to shard inboxes.");
    describe_counter!(
        INBOX_FULL,
        "Compensations deferred because the shard's inbox was full."
    );
    describe_counter!(
        STALE_CLUE_SOLVES,
        "Clue solves that scored nothing for a stale claim token."
    );
    describe_histogram!(
        SAGA_SWEEP_SECONDS,
        Unit::Seconds,
        "Time of one saga sweep over a tier's pending awards."
    );
}
