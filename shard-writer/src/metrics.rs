//! Metric names of the shard writer, recorded through the `metrics` facade. The binary that
//! embeds the writer chooses the exporter.

/// 1, labelled with the running `version` (gauge).
pub const BUILD_INFO: &str = "hunt_writer_build_info";
/// Events accepted into the commit queue (counter).
pub const APPENDED: &str = "hunt_writer_appended_total";
/// Events committed to SQLite (counter).
pub const COMMITTED: &str = "hunt_writer_committed_total";
/// Events published to tier streams, re-sends included (counter).
pub const PUBLISHED: &str = "hunt_writer_published_total";
/// Events acknowledged by a router's applied watermark (counter).
pub const ACKNOWLEDGED: &str = "hunt_writer_acknowledged_total";
/// Events re-sent after a replay request or a stalled watermark (counter).
pub const REDELIVERED: &str = "hunt_writer_redelivered_total";
/// Appends refused, by `reason` (counter).
pub const REJECTED: &str = "hunt_writer_rejected_total";
/// Committed events not yet acknowledged (gauge).
pub const OUTBOX_DEPTH: &str = "hunt_writer_outbox_depth";
/// Time of one group commit, in seconds (histogram).
pub const COMMIT_SECONDS: &str = "hunt_writer_commit_seconds";
/// Events per group commit (histogram).
pub const COMMIT_BATCH: &str = "hunt_writer_commit_batch_events";
/// Redis connection failures of the relay (counter).
pub const RELAY_ERRORS: &str = "hunt_writer_relay_errors_total";
/// Rows pruned after retention (counter).
pub const PRUNED: &str = "hunt_writer_pruned_total";
/// Replays that asked for rows already pruned (counter).
pub const REPLAY_PRUNED: &str = "hunt_writer_replay_pruned_total";
/// Time of one claim, token check, wave opening or compensation call, by `kind` (`clue`,
/// `check`, `wave`, `chest`, `inbox_read`, `inbox_ack`), in seconds (histogram).
pub const CLAIM_SECONDS: &str = "hunt_writer_claim_seconds";
/// Claim calls by `kind` (as for [`CLAIM_SECONDS`]) and `outcome` (`won`, `held`, `ok`, `stale`,
/// `future`, `not_holder`, `opened`, `received`, `empty`, `unknown_clue`, `unknown_chest`,
/// `invalid`, `unreachable`, `no_redis`, `redis_error`, `append_failed`, `malformed`,
/// `recovering`, `record_failed`) (counter).
pub const CLAIMS: &str = "hunt_writer_claims_total";
/// Compensations taken from the shard's inbox, by `outcome` (`received`: handed to the caller;
/// `malformed`: logged and acknowledged away; `duplicate`: acknowledged before, sent again after
/// Redis lost the inbox's record, acknowledged away) (counter).
pub const COMPENSATIONS: &str = "hunt_writer_compensations_total";
/// Times the relay found a tier's applied watermark below what it had acknowledged (Redis lost
/// data under a live connection) and sent the tier again from it (counter).
pub const REDIS_LOSSES: &str = "hunt_writer_redis_losses_total";
/// Times this writer found that Redis lost its claim state (a new incarnation) (counter).
pub const CLAIMS_LOSSES: &str = "hunt_writer_claims_losses_total";
/// Chests this shard recorded for one award but found held by another while restoring
/// (counter; should stay 0).
pub const CLAIMS_CONFLICTS: &str = "hunt_writer_claims_conflicts_total";
/// Chest verdicts the saga confirmed for this shard's awards, recorded in the shard file and
/// marked recorded, so they may be told (counter).
pub const VERDICTS_RECORDED: &str = "hunt_writer_verdicts_recorded_total";
/// Times the claims gate was opened by hand (`shard-writer open-claims`) (counter).
pub const CLAIMS_GATE_FORCED: &str = "hunt_writer_claims_gate_forced_total";

/// Registers the descriptions of every writer metric with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(BUILD_INFO, "1, labelled with the version running.");
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Counters without labels exist from the start, at 0, so `rate()` over them reads 0
    // rather than no data before their first event.
    for name in [
        ACKNOWLEDGED,
        APPENDED,
        CLAIMS_CONFLICTS,
        CLAIMS_GATE_FORCED,
        CLAIMS_LOSSES,
        COMMITTED,
        PRUNED,
        PUBLISHED,
        REDELIVERED,
        REDIS_LOSSES,
        RELAY_ERRORS,
        REPLAY_PRUNED,
        VERDICTS_RECORDED,
    ] {
        metrics::counter!(name).increment(0);
    }
    describe_counter!(APPENDED, "Events accepted into the commit queue.");
    describe_counter!(COMMITTED, "Events committed to the shard's SQLite file.");
    describe_counter!(
        PUBLISHED,
        "Events published to tier streams, re-sends included."
    );
    describe_counter!(
        ACKNOWLEDGED,
        "Events acknowledged by a router's applied watermark."
    );
    describe_counter!(
        REDELIVERED,
        "Events re-sent after a replay request or a stall."
    );
    describe_counter!(REJECTED, "Appends refused, by reason.");
    describe_gauge!(OUTBOX_DEPTH, "Committed events not yet acknowledged.");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "Time of one group commit.");
    describe_histogram!(COMMIT_BATCH, "Events per group commit.");
    describe_counter!(RELAY_ERRORS, "Redis failures seen by the relay.");
    describe_counter!(PRUNED, "Rows pruned after the retention window.");
    describe_counter!(REPLAY_PRUNED, "Replays that asked for rows already pruned.");
    describe_counter!(
        REDIS_LOSSES,
        "Times a tier's applied watermark fell below what it had acknowledged."
    );
    describe_counter!(
        CLAIMS_LOSSES,
        "Times Redis was found to have lost its claim state."
    );
    describe_counter!(
        CLAIMS_GATE_FORCED,
        "Times the claims gate was opened by hand."
    );
    describe_counter!(
        CLAIMS_CONFLICTS,
        "Recorded chest holders found held by another award while restoring."
    );
    describe_counter!(
        VERDICTS_RECORDED,
        "Chest verdicts of this shard's awards recorded in its file, so they may be told."
    );
    describe_histogram!(
        CLAIM_SECONDS,
        Unit::Seconds,
        "Time of one clue, chest, wave or inbox call to Redis, by kind."
    );
    describe_counter!(
        CLAIMS,
        "Clue, chest, wave and inbox calls, by kind and outcome."
    );
    describe_counter!(
        COMPENSATIONS,
        "Compensations taken from the shard's inbox, by outcome."
    );
}
