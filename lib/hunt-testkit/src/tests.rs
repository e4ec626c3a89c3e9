//! The private `redis-server` harness itself.

// A test that cannot set itself up should stop right there, saying why.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::RedisServer;
use rustix::process::{Pid, test_kill_process};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn connection(server: &RedisServer) -> redis::RedisResult<redis::Connection> {
    server
        .client()
        .get_connection_with_timeout(Duration::from_secs(5))
}

fn get(server: &RedisServer, key: &str) -> redis::RedisResult<Option<String>> {
    redis::cmd("GET").arg(key).query(&mut connection(server)?)
}

fn set(server: &RedisServer, key: &str, value: &str) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut connection(server)?)
}

/// A `PING` that gives up after `timeout`, connect included.
fn ping_within(server: &RedisServer, timeout: Duration) -> redis::RedisResult<String> {
    let mut connection = server.client().get_connection_with_timeout(timeout)?;
    connection.set_read_timeout(Some(timeout))?;
    connection.set_write_timeout(Some(timeout))?;
    redis::cmd("PING").query(&mut connection)
}

fn process_exists(pid: u32) -> bool {
    let raw = i32::try_from(pid).ok().and_then(Pid::from_raw);
    raw.is_some_and(|pid| test_kill_process(pid).is_ok())
}

#[test]
fn starts_on_a_private_port_and_answers() -> TestResult {
    let server = RedisServer::start()?;
    assert_ne!(server.port(), 6379);
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/", server.port())
    );
    assert!(server.dir().is_dir());
    assert!(process_exists(server.pid()));
    set(&server, "hunt:test", "1")?;
    assert_eq!(get(&server, "hunt:test")?.as_deref(), Some("1"));
    server.flushall()?;
    assert_eq!(get(&server, "hunt:test")?, None);
    Ok(())
}

#[test]
fn restart_keeps_or_drops_data() -> TestResult {
    let mut server = RedisServer::start()?;
    let port = server.port();
    set(&server, "hunt:kept", "yes")?;

    let first_pid = server.pid();
    server.restart(true)?;
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), first_pid);
    assert!(server.dir().join("dump.rdb").is_file());
    assert_eq!(get(&server, "hunt:kept")?.as_deref(), Some("yes"));

    server.restart(false)?;
    assert_eq!(server.port(), port);
    assert_eq!(get(&server, "hunt:kept")?, None);
    Ok(())
}

#[test]
fn stop_and_start_again_reload_the_last_dump() -> TestResult {
    let mut server = RedisServer::start()?;
    set(&server, "hunt:saved", "1")?;
    server.restart(true)?;
    set(&server, "hunt:unsaved", "1")?;
    server.stop();
    server.stop();
    assert!(ping_within(&server, Duration::from_millis(200)).is_err());
    assert!(server.start_again().is_ok());
    assert!(server.start_again().is_err(), "already running");
    assert_eq!(get(&server, "hunt:saved")?.as_deref(), Some("1"));
    assert_eq!(get(&server, "hunt:unsaved")?, None);
    Ok(())
}

#[test]
fn pause_freezes_and_resume_thaws() -> TestResult {
    let mut server = RedisServer::start()?;
    server.pause()?;
    assert!(ping_within(&server, Duration::from_millis(200)).is_err());
    server.resume();
    assert_eq!(ping_within(&server, Duration::from_secs(5))?, "PONG");

    // A restart resumes a paused server first.
    set(&server, "hunt:kept", "yes")?;
    server.pause()?;
    server.restart(true)?;
    assert_eq!(get(&server, "hunt:kept")?.as_deref(), Some("yes"));
    Ok(())
}

#[test]
fn drop_kills_even_a_paused_server_and_removes_its_dir() -> TestResult {
    let server = RedisServer::start()?;
    let pid = server.pid();
    let dir = server.dir().to_path_buf();
    server.pause()?;
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_exists(pid) {
        assert!(Instant::now() < deadline, "pid {pid} still exists");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!dir.exists());
    Ok(())
}
