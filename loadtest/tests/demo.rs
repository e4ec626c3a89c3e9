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
