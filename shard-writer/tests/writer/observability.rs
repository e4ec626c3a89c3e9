//! The writer's metrics reach the installed recorder.

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use leaderboard_proto::testkit::RedisServer;
use shard_writer::metrics as m;

use crate::support::{config, eventually, open, score, set_applied, stream};

/// The process-wide recorder: installed once, by the first test that asks.
fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("no other recorder in this test binary");
        snapshotter
    })
}

/// A metric's (counter total, histogram samples, last gauge value).
type Total = (u64, usize, Option<f64>);

/// Everything recorded so far, per metric name: (counter total, histogram samples, last gauge).
/// The debugging recorder hands each value out once, so snapshots are added up here.
fn read(name: &str) -> Total {
    static TOTALS: OnceLock<Mutex<HashMap<String, Total>>> = OnceLock::new();
    let mut totals = TOTALS
        .get_or_init(Mutex::default)
        .lock()
        .expect("totals lock");
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let total = totals.entry(key.key().name().to_owned()).or_default();
        match value {
            DebugValue::Counter(n) => total.0 += n,
            DebugValue::Histogram(values) => total.1 += values.len(),
            DebugValue::Gauge(v) => total.2 = Some(v.into_inner()),
        }
    }
    totals.get(name).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_commits_publishes_and_acknowledgements_are_counted() {
    snapshotter();
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = open(&config(dir.path(), 61, &redis)).await;
    for i in 0..50 {
        writer.append(score(3, "ada", i)).await.expect("append");
    }
    assert!(writer.try_append(score(3, "", 1)).is_err());
    eventually("published", || async {
        (stream(&redis, 3).await.len() == 50).then_some(())
    })
    .await;
    set_applied(&redis, 3, 61, 50).await;
    eventually("acknowledged", || async {
        (read(m::ACKNOWLEDGED).0 >= 50).then_some(())
    })
    .await;
    assert!(read(m::APPENDED).0 >= 50);
    assert!(read(m::COMMITTED).0 >= 50);
    assert!(read(m::PUBLISHED).0 >= 50);
    assert!(read(m::REJECTED).0 >= 1);
    assert!(
        read(m::OUTBOX_DEPTH).2.is_some(),
        "outbox depth is reported"
    );
    assert!(read(m::COMMIT_SECONDS).1 >= 1, "commit latency is recorded");
    writer.shutdown().await.expect("shutdown");
}
