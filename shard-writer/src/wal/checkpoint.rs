//! The background checkpoint: copies SQLite's log into the database file on a connection of its
//! own.
//!
//! Design constraints:
//! - `PASSIVE` mode only: a checkpoint never blocks the commit thread. The commit thread's own
//!   automatic checkpoint (at [`AUTOCHECKPOINT_PAGES`](crate::wal::schema::AUTOCHECKPOINT_PAGES))
//!   stays as a safety net, and bounds the log even when these checkpoints fall behind.
//! - A failing checkpoint is logged once per failure streak, never retried in a tight loop.

use std::sync::Arc;

use rusqlite::Connection;

/// Copies the log into the database file every `interval` until cancelled, on its own
/// connection, without ever blocking the commit thread (`PASSIVE`).
pub(crate) async fn checkpoint_loop(
    conn: Connection,
    interval: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let conn = Arc::new(std::sync::Mutex::new(conn));
    let mut failing = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let conn = Arc::clone(&conn);
        let result = tokio::task::spawn_blocking(move || {
            let conn = conn
                .lock()
                .map_err(|_| "checkpoint connection poisoned".to_owned())?;
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(|err| err.to_string())
        })
        .await
        .map_err(|err| err.to_string())
        .and_then(|checkpoint| checkpoint);
        match result {
            Ok(()) => failing = false,
            Err(err) if !failing => {
                // Once per failure streak: the commit thread's own checkpoint still bounds the log.
                tracing::warn!(error = %err, "background checkpoint failed");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
