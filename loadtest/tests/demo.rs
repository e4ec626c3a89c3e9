//! The README's run command: the demo runs shards, a router and a private Redis, and its own
//! exactly-once check passes.

#![allow(clippy::expect_used)]

#[test]
fn the_demo_runs_and_every_event_lands_exactly_once() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "demo",
            "--seconds",
            "3",
            "--rate",
            "1000",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env_remove("HUNT_REDIS_URL")
        .output()
        .expect("run loadtest demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("grpcurl -plaintext"), "{stdout}");
    assert!(stdout.contains("Bronze"), "the tops are shown: {stdout}");
    assert!(
        stdout.contains("each event applied exactly once"),
        "{stdout}"
    );
}

/// A terminal's Ctrl-C reaches the demo's whole process group; the demo's private Redis is in a
/// group of its own, so the demo stops the load, checks the leaderboards and stops its shards and
/// its router while Redis still answers, then stops Redis: a clean exit with no Redis left behind.
#[test]
fn ctrl_c_stops_the_demo_in_order_and_its_redis_with_it() {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "demo",
            "--rate",
            "500",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env_remove("HUNT_REDIS_URL")
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start loadtest demo");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    stderr
        .read_line(&mut first)
        .expect("the demo says where Redis is");
    let port: u16 = first
        .trim()
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("expected the private Redis's address, got {first:?}"));
    // Live: a second of tops has been printed. The pipe stays open (and is drained at the end):
    // the demo goes on printing until it stops.
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.contains("events committed") {
        line.clear();
        let read = stdout.read_line(&mut line).expect("stdout");
        assert!(read > 0, "the demo printed no tops");
    }

    let group = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process_group(group, rustix::process::Signal::INT).expect("SIGINT");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("stderr");
    let mut printed = String::new();
    stdout.read_to_string(&mut printed).expect("stdout");
    assert!(status.success(), "{status}: {rest}");
    assert!(!rest.contains("lost Redis"), "Redis went first: {rest}");
    // It checked the leaderboards against the shard logs before it stopped Redis.
    assert!(
        printed.contains("each event applied exactly once"),
        "{printed}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "the demo's Redis outlived it");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the built `loadtest` with `args` plus a short, small hunt writing its reports into a
/// temporary folder; returns stdout, and the folder.
fn short_hunt(command: &str, extra: &[&str]) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let json = dir.path().join("run.json");
    let svg = dir.path().join("run.svg");
    let mut args = vec![
        command,
        "--seconds",
        "3",
        "--shards",
        "4",
        "--hunters",
        "400",
        "--rate",
        "1000",
        "--wave-seconds",
        "1",
        "--chests-per-wave",
        "20",
        "--spectators",
        "5",
        "--get-top-rate",
        "100",
        "--json",
        json.to_str().expect("utf-8 path"),
        "--svg",
        svg.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    (loadtest(&args), dir)
}

#[test]
fn a_short_run_passes_every_correctness_check_and_writes_its_reports() {
    let (stdout, dir) = short_hunt("run", &[]);
    assert!(!stdout.contains("FAIL"), "{stdout}");
    fits_100_columns(&stdout);
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run.json")).expect("the JSON report"),
    )
    .expect("valid JSON");
    let checks = report["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 6, "{checks:?}");
    for check in checks {
        assert_eq!(check["passed"], true, "{check}");
    }
    let chests = checks
        .iter()
        .find(|c| c["name"].as_str().is_some_and(|n| n.contains("chest")))
        .expect("the chest check");
    assert!(
        !chests["detail"]
            .as_str()
            .is_some_and(|d| d.contains("(0 duplicates")),
        "the hunt made chest collisions for the saga: {chests}"
    );
    assert!(report["committed"].as_u64().expect("committed") > 2_000);
    // What each event cost, by component.
    let cpu = &report["cpu_per_event"];
    for part in ["process_us", "commit_us", "rest_us", "redis_us"] {
        assert!(
            cpu[part].as_f64().is_some_and(|us| us > 0.0),
            "{part}: {cpu}"
        );
    }
    assert!(stdout.contains("CPU µs per event"), "{stdout}");
    assert!(!report["timeline"].as_array().expect("timeline").is_empty());
    let svg = std::fs::read_to_string(dir.path().join("run.svg")).expect("the chart");
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg:.200}"
    );
    // Titled with the run's parameters, the offered rate and the goal drawn and named.
    for text in [
        "hunt-pipeline loadtest",
        "4 shards, 400 hunters, 1000 events/s offered for 3 s",
        "offered",
        "end-to-end goal",
        "append p50",
        "append p99",
        "end to end p50",
        "end to end p99",
    ] {
        assert!(svg.contains(text), "{text} missing from the chart");
    }
}

#[test]
fn the_baseline_is_reported_beside_the_pipeline() {
    let (stdout, _dir) = short_hunt("baseline", &["--baseline-seconds", "2"]);
    assert!(
        stdout.contains("| throughput | pipeline | naive baseline | ratio |")
            && stdout.contains("| append → visible, naive baseline |"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    fits_100_columns(&stdout);
}

/// Every line `loadtest` printed fits a 100-column terminal.
fn fits_100_columns(stdout: &str) {
    for line in stdout.lines() {
        assert!(
            line.chars().count() <= 100,
            "{} columns: {line}",
            line.chars().count()
        );
    }
}

#[test]
fn bench_rebuild_brings_every_board_back_after_a_flushall_and_a_restart_empty() {
    let stdout = loadtest(&[
        "bench-rebuild",
        "--events",
        "3000",
        "--players",
        "50",
        "--limit-s",
        "60",
    ]);
    assert!(
        stdout.contains("| events/s |")
            && stdout.contains("every board equals the appended totals after each rebuild")
            && stdout.contains("rebuild after restart-empty")
            && !stdout.contains("skipped")
            && has_cpu_row(&stdout, "| CPU µs per event: "),
        "{stdout}"
    );
}

/// Runs the built `loadtest` with `args` (no Redis from the environment: a private one);
/// returns stdout, failing the test with both outputs unless it succeeded.
fn loadtest(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .env_remove("HUNT_REDIS_URL")
        .output()
        .expect("run loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

#[test]
fn bench_writer_completes_with_a_router_acknowledging_the_relay() {
    let stdout = loadtest(&[
        "bench-writer",
        // Closed loop: as many appends as commits allow, well past the relay's publish window
        // (2,000 per tier), which only an acknowledging router lets it go beyond.
        "--rate",
        "0",
        "--concurrency",
        "64",
        "--seconds",
        "1",
        "--warmup",
        "0",
        "--baseline-seconds",
        "1",
    ]);
    assert!(
        stdout.contains("| durable appends/s, one shard |")
            && stdout.contains("applied (and so acknowledged) by a tier router")
            && has_cpu_row(&stdout, "| CPU µs per append: "),
        "{stdout}"
    );
}

#[test]
fn bench_router_completes_its_three_phases() {
    let stdout = loadtest(&[
        "bench-router",
        "--shards",
        "2",
        // More per shard and tier than the publish window (2,000): the streams hold a backlog
        // no router has acknowledged when the router starts.
        "--events",
        "25000",
        "--players",
        "100",
        "--baseline-events",
        "500",
        "--rate",
        "500",
        "--get-top-rate",
        "50",
        "--seconds",
        "1",
    ]);
    assert!(
        stdout.contains("| events/s applied by one router over 5 tiers")
            && has_cpu_row(&stdout, "| CPU µs per applied event: "),
        "{stdout}"
    );
}

#[test]
fn bench_claims_completes() {
    let stdout = loadtest(&[
        "bench-claims",
        "--claimants",
        "50",
        "--connections",
        "2",
        "--rate",
        "200",
        "--seconds",
        "1",
        "--clues",
        "10",
        "--wave-ms",
        "200",
        "--sweep-awards",
        "200",
        "--saga-batch",
        "50",
        "--sweep-baseline-awards",
        "20",
    ]);
    assert!(has_cpu_row(&stdout, "| CPU µs per operation: "), "{stdout}");
}

/// Whether `stdout` has a row starting `start` whose first measured cell reads a CPU time (a
/// number, not "–").
fn has_cpu_row(stdout: &str, start: &str) -> bool {
    stdout.lines().any(|line| {
        line.starts_with(start)
            && line
                .split('|')
                .nth(2)
                .and_then(|cell| cell.split_whitespace().next())
                .is_some_and(|us| us.parse::<f64>().is_ok_and(|us| us > 0.0))
    })
}

#[test]
fn missed_goals_are_marked_and_fail_the_run_with_fail_on_goal() {
    // A short run at 1,000 events/s cannot reach 50,000/s: that goal is marked MISSED, the JSON
    // says so, and the run passes (its checks do) unless --fail-on-goal is given.
    let (stdout, dir) = short_hunt("run", &[]);
    assert!(stdout.contains("≥ 50,000: MISSED"), "{stdout}");
    assert!(
        stdout.contains("goals: ") && stdout.contains("MISSED: events/s"),
        "{stdout}"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run.json")).expect("the JSON report"),
    )
    .expect("valid JSON");
    let goals = report["goals"].as_array().expect("goals");
    assert!(goals.iter().any(|goal| goal["met"] == false), "{goals:?}");
    assert!(
        goals
            .iter()
            .any(|goal| goal["name"] == "errors (arrivals / GetTop)" && goal["met"] == true),
        "{goals:?}"
    );

    let dir = tempfile::tempdir().expect("a temporary folder");
    let json = dir.path().join("run.json");
    let svg = dir.path().join("run.svg");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["run", "--seconds", "2", "--shards", "2", "--hunters", "100"])
        .args(["--rate", "200", "--spectators", "1", "--get-top-rate", "20"])
        .args(["--fail-on-goal", "--json", json.to_str().expect("utf-8")])
        .args(["--svg", svg.to_str().expect("utf-8")])
        .env_remove("HUNT_REDIS_URL")
        .output()
        .expect("run loadtest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a missed goal fails the run: {stderr}"
    );
    assert!(stderr.contains("missed goals (--fail-on-goal)"), "{stderr}");
    // The reports are written all the same.
    assert!(json.exists() && svg.exists());
}

/// `bench-spectators` runs with its router as a process of its own (`tier-router` beside
/// `loadtest`: `cargo test --workspace` builds it) and reports delivery latency and the router's
/// CPU per delivery.
#[test]
fn bench_spectators_reports_delivery_latency_and_router_cpu_per_delivery() {
    let router = std::path::Path::new(env!("CARGO_BIN_EXE_loadtest")).with_file_name("tier-router");
    assert!(
        router.exists(),
        "{} is missing: build it (cargo build -p tier-router; cargo test --workspace does)",
        router.display()
    );
    let stdout = loadtest(&[
        "bench-spectators",
        "--connections",
        "40",
        "--seconds",
        "2",
        "--probe-ms",
        "100",
    ]);
    assert!(
        stdout.contains("| spectators held (all got every update) | 40 ")
            && stdout.contains("| delivery, append → delta received")
            && stdout
                .contains("| router CPU per delivery (its whole process, during the probes) |"),
        "{stdout}"
    );
}

/// `peer-postgres` offers the same load to the machine's PostgreSQL (127.0.0.1:5432, as
/// `postgres`) beside the pipeline and the naive way, and drops the database it made.
#[test]
fn peer_postgres_reports_three_ways_side_by_side_and_drops_its_database() {
    let (stdout, _dir) = short_hunt(
        "peer-postgres",
        &["--baseline-seconds", "2", "--postgres-clients", "4"],
    );
    assert!(
        stdout.contains("| throughput | pipeline | naive | ratio | PostgreSQL | ratio |")
            && stdout.contains("| append → committed, PostgreSQL ⁴ |")
            && stdout.contains("| top-100 read, PostgreSQL |"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    fits_100_columns(&stdout);
    let left = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let (client, connection) = tokio_postgres::connect(
                "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                tokio_postgres::NoTls,
            )
            .await
            .expect("PostgreSQL");
            tokio::spawn(connection);
            let row = client
                .query_one(
                    "SELECT count(*) FROM pg_database WHERE datname LIKE 'hunt\\_peer\\_%'",
                    &[],
                )
                .await
                .expect("query");
            row.get::<_, i64>(0)
        });
    assert_eq!(left, 0, "the run's database is dropped");
}
