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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(&args)
        .env_remove("HUNT_REDIS_URL")
        .output()
        .expect("run loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    (stdout, dir)
}

#[test]
fn a_short_run_passes_every_correctness_check_and_writes_its_reports() {
    let (stdout, dir) = short_hunt("run", &[]);
    assert!(!stdout.contains("FAIL"), "{stdout}");
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
    assert!(!report["timeline"].as_array().expect("timeline").is_empty());
    let svg = std::fs::read_to_string(dir.path().join("run.svg")).expect("the chart");
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg:.200}"
    );
}

#[test]
fn the_baseline_is_reported_beside_the_pipeline() {
    let (stdout, _dir) = short_hunt("baseline", &["--baseline-seconds", "2"]);
    assert!(
        stdout.contains("| measure | pipeline | naive baseline | ratio |"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
