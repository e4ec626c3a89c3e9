//! The ingest sidecar over gRPC: appends reach the leaderboards, bad input is refused and never
//! stored, a full commit queue answers RESOURCE_EXHAUSTED, claims map to their status codes,
//! `serve` exports its metrics as Prometheus text.

use std::time::Duration;

use hunt_testkit::{RedisServer, http_get, printed_addresses};
use leaderboard_proto::rewards;
use leaderboard_proto::v1::ingest_service_client::IngestServiceClient;
use leaderboard_proto::v1::{
    AckCompensationRequest, AppendRequest, ClaimChestRequest, ClaimClueRequest, HuntEvent,
    OpenWaveRequest,
};
use shard_writer::WriterConfig;
use shard_writer::ingest::{IngestConfig, Sidecar, SidecarHandle};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{
    apply_stream, board, config, contiguous, eventually, score, stream_by_tier_seq, totals,
};

async fn serve(config: IngestConfig) -> (SidecarHandle, IngestServiceClient<Channel>) {
    let mut config = config;
    config.grpc_addr = "127.0.0.1:0".parse().expect("address");
    let sidecar = Sidecar::build(config).await.expect("sidecar builds");
    let handle = sidecar.spawn();
    let client = IngestServiceClient::new(hunt_testkit::grpc_channel(handle.local_addr()).await);
    (handle, client)
}

fn append(events: Vec<HuntEvent>) -> AppendRequest {
    AppendRequest { events }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_over_grpc_reach_the_leaderboards_and_bad_input_is_never_stored() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ingest = IngestConfig::new(config(dir.path(), 61, &redis));
    ingest.max_batch = 10;
    let (sidecar, mut client) = serve(ingest).await;
    let epoch = sidecar.writer().epoch();

    let first = vec![
        score(1, "alice", 10),
        score(2, "carol", 4),
        score(1, "bob", 5),
        score(1, "alice", 7),
    ];
    let second = vec![score(2, "carol", 3), score(2, "dave", 1)];
    let answer = client
        .append(append(first.clone()))
        .await
        .expect("append")
        .into_inner();
    let tier_seqs: Vec<u64> = answer.appended.iter().map(|a| a.tier_seq).collect();
    assert_eq!(
        tier_seqs,
        [1, 1, 2, 3],
        "tier_seqs per tier, in request order"
    );
    assert!(answer.appended.iter().all(|a| a.epoch == epoch));
    let answer = client
        .append(append(second.clone()))
        .await
        .expect("append")
        .into_inner();
    assert_eq!(answer.appended.len(), 2);

    // Bad input: INVALID_ARGUMENT naming the event and the field, and nothing stored.
    let mut with_tier_seq = score(1, "erin", 1);
    with_tier_seq.tier_seq = 9;
    let bad = [
        (vec![score(99, "erin", 1)], "events[0]", "tier"),
        (
            vec![score(1, "erin", 1), score(1, "er{in}", 1)],
            "events[1]",
            "player_id",
        ),
        (
            vec![score(2, "erin", 1), with_tier_seq],
            "events[1]",
            "tier_seq",
        ),
        (
            vec![score(1, "erin", 1), score(1, "frank", i64::MAX)],
            "events[1]",
            "points",
        ),
        (
            (0..11).map(|i| score(1, "erin", i)).collect(),
            "11 events",
            "at most 10",
        ),
    ];
    for (events, index, field) in bad {
        let status = client
            .append(append(events))
            .await
            .expect_err("bad input is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(index) && status.message().contains(field),
            "{index}/{field} named in {:?}",
            status.message()
        );
    }
    assert_eq!(sidecar.writer().committed_tier_seq(1), 3, "nothing stored");
    assert_eq!(sidecar.writer().committed_tier_seq(2), 3, "nothing stored");
    assert_eq!(
        crate::support::rows(&dir.path().join("shard-61.sqlite"), 1).len(),
        3
    );

    // Every event reaches its stream once, and the leaderboards hold exact totals.
    for (tier, count) in [(1, 3), (2, 3)] {
        eventually("published", || async {
            contiguous(&stream_by_tier_seq(&redis, tier).await, count).then_some(())
        })
        .await;
        apply_stream(&redis, tier).await;
        let all: Vec<&HuntEvent> = first.iter().chain(&second).collect();
        assert_eq!(board(&redis, tier).await, totals(all, tier), "tier {tier}");
    }

    // Claims and waves over gRPC.
    let wave = client
        .open_wave(OpenWaveRequest {
            tier: 1,
            wave: 1,
            clue_ids: vec!["riddle-1".into()],
        })
        .await
        .expect("open wave")
        .into_inner();
    assert_eq!(wave.appended.map(|a| a.tier_seq), Some(4));
    let clue = |clue_id: &str, player_id: &str| ClaimClueRequest {
        clue_id: clue_id.into(),
        player_id: player_id.into(),
    };
    let won = client
        .claim_clue(clue("riddle-1", "alice"))
        .await
        .expect("claim")
        .into_inner();
    assert!(won.won && won.token == 1 && won.wave == 1, "{won:?}");
    let held = client
        .claim_clue(clue("riddle-1", "bob"))
        .await
        .expect("claim")
        .into_inner();
    assert!(!held.won && held.holder_player_id == "alice", "{held:?}");
    let chest_type = rewards::tier(1).expect("tier 1").chest_types[0].name;
    let chest = |tier: u32, chest_type: &str, award_id: &str| ClaimChestRequest {
        chest_key: "gold-7".into(),
        award_id: award_id.into(),
        tier,
        chest_type: chest_type.into(),
    };
    let won = client
        .claim_chest(chest(1, chest_type, "61.1.a1"))
        .await
        .expect("claim chest")
        .into_inner();
    assert!(won.won, "{won:?}");
    let held = client
        .claim_chest(chest(1, chest_type, "61.1.a2"))
        .await
        .expect("claim chest")
        .into_inner();
    assert_eq!(
        (held.won, held.holder_award_id.as_str()),
        (false, "61.1.a1")
    );

    let refusals = [
        (
            client.claim_clue(clue("never-opened", "alice")).await.err(),
            Code::NotFound,
        ),
        (
            client.claim_clue(clue("ri{dd}le", "alice")).await.err(),
            Code::InvalidArgument,
        ),
        (
            client
                .claim_chest(chest(1, "no-such-chest", "61.1.a3"))
                .await
                .err(),
            Code::NotFound,
        ),
        (
            client
                .claim_chest(chest(99, chest_type, "61.1.a3"))
                .await
                .err(),
            Code::InvalidArgument,
        ),
        (
            client
                .open_wave(OpenWaveRequest {
                    tier: 1,
                    wave: 0,
                    clue_ids: vec![],
                })
                .await
                .err(),
            Code::InvalidArgument,
        ),
        (
            client
                .ack_compensation(AckCompensationRequest { id: "x".into() })
                .await
                .err(),
            Code::InvalidArgument,
        ),
    ];
    for (status, code) in refusals {
        let status = status.expect("refused");
        assert_eq!(status.code(), code, "{status:?}");
    }

    // Standard health checking.
    let channel = Channel::from_shared(format!("http://{}", sidecar.local_addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect health");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "hunt.v1.IngestService".into(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    sidecar
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_commit_queue_answers_resource_exhausted_and_stores_nothing_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shard-62.sqlite");
    let mut writer = WriterConfig::new(&path, 62);
    // One append in the commit thread's hands, two waiting: the fourth finds no room.
    writer.queue_capacity = 2;
    writer.max_commit_batch = 1;
    writer.busy_timeout = Duration::from_secs(30);
    let mut ingest = IngestConfig::new(writer);
    ingest.max_batch = 2;
    let (sidecar, client) = serve(ingest).await;

    // Another connection holds the file's write lock: the commit thread waits on it.
    let lock = rusqlite::Connection::open(&path).expect("open shard file");
    lock.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");

    const REQUESTS: usize = 8;
    let (results, mut answers) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..REQUESTS {
        let mut client = client.clone();
        let results = results.clone();
        tokio::spawn(async move {
            let answer = client
                .append(append(vec![score(1, &format!("p{i}"), 1)]))
                .await;
            let _ = results.send(answer.map(|a| a.into_inner().appended.len()));
        });
    }
    // At most three are held (one in the commit thread's hands, two queued): at least five
    // are refused at once.
    let mut refused = 0;
    let mut committed = 0;
    let mut answer = async |answers: &mut tokio::sync::mpsc::UnboundedReceiver<_>| {
        let answer: Result<usize, tonic::Status> =
            tokio::time::timeout(crate::support::DEADLINE, answers.recv())
                .await
                .expect("an answer in time")
                .expect("an answer");
        match answer {
            Ok(appended) => {
                assert_eq!(appended, 1);
                committed += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
    };
    for _ in 0..REQUESTS - 3 {
        answer(&mut answers).await;
    }
    let status = client
        .clone()
        .append(append(vec![score(1, "q", 1), score(1, "r", 1)]))
        .await
        .expect_err("a batch finds no room either");
    assert_eq!(status.code(), Code::ResourceExhausted);

    // The disk is back: the held appends commit, and nothing of the refused ones.
    lock.execute_batch("COMMIT")
        .expect("release the write lock");
    drop(lock);
    for _ in REQUESTS - 3..REQUESTS {
        answer(&mut answers).await;
    }
    let (refused, committed) = (refused, committed);
    assert_eq!(refused + committed, REQUESTS);
    assert!((2..=3).contains(&committed), "{committed} held");
    assert_eq!(sidecar.writer().committed_tier_seq(1), committed as u64);
    sidecar
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    assert_eq!(crate::support::rows(&path, 1).len(), committed);
}

/// A `shard-writer serve` process, killed on drop.
struct ServeProcess {
    child: std::process::Child,
    grpc_addr: std::net::SocketAddr,
    metrics_addr: std::net::SocketAddr,
}

impl ServeProcess {
    /// Starts `shard-writer serve` with gRPC and metrics on free ports, and reads the addresses
    /// it prints.
    fn start(db: &std::path::Path, shard_id: u32, redis: &RedisServer) -> Self {
        Self::start_with(db, shard_id, redis, &[])
    }

    /// [`ServeProcess::start`] with `extra` arguments.
    fn start_with(
        db: &std::path::Path,
        shard_id: u32,
        redis: &RedisServer,
        extra: &[&str],
    ) -> Self {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shard-writer"))
            .arg("serve")
            .arg("--db")
            .arg(db)
            .args(["--shard-id", &shard_id.to_string()])
            .args(["--redis-url", &redis.url()])
            .args([
                "--grpc-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env_remove("HUNT_METRICS_ADDR")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn shard-writer serve");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let [grpc_addr, metrics_addr] = printed_addresses(&mut stdout, &["grpc", "metrics"])[..]
        else {
            unreachable!("one address per name")
        };
        Self {
            child,
            grpc_addr,
            metrics_addr,
        }
    }

    /// SIGTERM, and the exit status once it has drained.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        self.child.wait().expect("wait")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the unlabelled sample `name` in a Prometheus text page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_its_metrics_as_prometheus_text() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shard-63.sqlite");
    let serve = ServeProcess::start(&db, 63, &redis);
    let mut client = IngestServiceClient::new(hunt_testkit::grpc_channel(serve.grpc_addr).await);
    let events: Vec<HuntEvent> = (0..5u32)
        .map(|i| score(1 + i % 2, "ada", i64::from(i) + 1))
        .collect();
    let count = events.len() as f64;
    client.append(append(events.clone())).await.expect("append");
    client.append(append(events)).await.expect("append");

    let page = eventually("the counters of both appends", || async {
        let (status, page) = http_get(serve.metrics_addr, "/metrics").await;
        assert_eq!(status, 200, "{page}");
        let appended = sample(&page, "hunt_writer_appended_total")?;
        let committed = sample(&page, "hunt_writer_committed_total")?;
        (appended >= 2.0 * count && committed >= 2.0 * count).then_some(page)
    })
    .await;
    assert!(
        page.contains("# TYPE hunt_writer_appended_total counter"),
        "{page}"
    );
    // A counter without labels is there at 0 before its first event.
    assert_eq!(
        sample(&page, "hunt_writer_claims_losses_total"),
        Some(0.0),
        "{page}"
    );
    // Histograms with buckets, which aggregate across replicas (not summaries).
    assert!(
        page.contains("# TYPE hunt_writer_commit_seconds histogram")
            && page.contains("hunt_writer_commit_seconds_bucket{le=\"0.001\"}")
            && page.contains("# TYPE hunt_writer_commit_batch_events histogram"),
        "{page}"
    );
    assert_eq!(
        http_get(serve.metrics_addr, "/healthz").await,
        (200, "ok\n".into())
    );
    assert_eq!(http_get(serve.metrics_addr, "/nowhere").await.0, 404);
    assert!(serve.terminate().success(), "drains and exits 0");

    // A bad value exits 64 naming the flag; a taken port exits 1 saying so.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_shard-writer"))
        .arg("serve")
        .arg("--db")
        .arg(&db)
        .args(["--shard-id", "63", "--metrics-addr", "localhost"])
        .env_remove("HUNT_REDIS_URL")
        .output()
        .expect("run shard-writer");
    assert_eq!(bad.status.code(), Some(64), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--metrics-addr"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("address").to_string();
    let failed = std::process::Command::new(env!("CARGO_BIN_EXE_shard-writer"))
        .arg("serve")
        .arg("--db")
        .arg(&db)
        .args(["--shard-id", "63", "--grpc-addr", "127.0.0.1:0"])
        .args(["--metrics-addr", &taken_addr])
        .env_remove("HUNT_REDIS_URL")
        .output()
        .expect("run shard-writer");
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("cannot listen for metrics") && stderr.contains(&taken_addr),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_cannot_hold_the_sidecar_ports_and_health_answers() {
    use std::io::Read;
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shard-64.sqlite");
    let serve = ServeProcess::start_with(
        &db,
        64,
        &redis,
        &["--handshake-timeout-ms", "500", "--max-connections", "4"],
    );
    // Every place on both ports taken by sockets that never send a byte.
    let (grpc, metrics) = (serve.grpc_addr, serve.metrics_addr);
    let mut idle: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(grpc).expect("connect"))
        .chain(
            (0..shard_writer::ingest::MAX_METRICS_CONNECTIONS)
                .map(|_| std::net::TcpStream::connect(metrics).expect("connect")),
        )
        .collect();
    eventually("/healthz answers past the idle sockets", || async move {
        let probe = tokio::time::timeout(Duration::from_millis(300), http_get(metrics, "/healthz"));
        matches!(probe.await, Ok((200, _))).then_some(())
    })
    .await;
    let mut client = eventually("gRPC answers past the idle sockets", || async move {
        let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
            .expect("uri")
            .connect_timeout(Duration::from_millis(300))
            .connect()
            .await
            .ok()?;
        Some(IngestServiceClient::new(channel))
    })
    .await;
    client
        .append(append(vec![score(1, "ada", 1)]))
        .await
        .expect("append");
    // The idle sockets were closed by the sidecar, not left open.
    let idle_socket = idle.first_mut().expect("an idle socket");
    idle_socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    // (The gRPC port greets with its own SETTINGS first: read past it.)
    let mut buf = [0u8; 64];
    loop {
        match idle_socket.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) => {
                assert!(
                    !matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "an idle socket is still open"
                );
                break;
            }
        }
    }
    drop(idle);
    assert!(serve.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_is_resource_exhausted() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = ServeProcess::start(&dir.path().join("shard-65.sqlite"), 65, &redis);
    let mut client = IngestServiceClient::new(hunt_testkit::grpc_channel(serve.grpc_addr).await);
    let mut big = score(1, "ada", 1);
    if let Some(leaderboard_proto::v1::hunt_event::Kind::ScoreGained(gained)) = &mut big.kind {
        gained.player_id = "x".repeat(leaderboard_proto::limits::MAX_MESSAGE_BYTES + 1);
    }
    let refused = client
        .append(append(vec![big]))
        .await
        .expect_err("over the limit");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    // The connection stays usable.
    client
        .append(append(vec![score(1, "ada", 1)]))
        .await
        .expect("append");
    assert!(serve.terminate().success());
}
