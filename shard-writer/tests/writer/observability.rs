//! The writer's metrics reach the installed recorder.

use hunt_testkit::RedisServer;
use hunt_testkit::recorded::{self, Total};
use shard_writer::metrics as m;

use crate::support::{config, eventually, open, score, set_applied, stream};

fn read(name: &str) -> (u64, usize, Option<f64>) {
    let Total {
        counter,
        samples,
        gauge,
    } = recorded::total(name);
    (counter, samples, gauge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_commits_publishes_and_acknowledgements_are_counted() {
    assert!(
        recorded::install(),
        "the recorder is this binary's only one"
    );
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
