//! The live page in a real browser: Debian's Chromium, driven by Playwright
//! (`tests/browser/page.mjs`), shows the board, then each change as events are appended: rows
//! updated in place and marked ▲/▼ for about 3 s, an error frame on the badge, a reconnect that
//! resumes, "paused" while Redis is paused, the phone layout, and no axe-core violation with
//! motion or without. "Follow a hunter" (`/player`): the panel shows bo's rank and score as the
//! board does, bo's row highlighted, and follows bo from #3 to #4 when di passes; an unknown id
//! says "no score"; the URL hash keeps the followed player across a reload. A player named by
//! its events (ada) is shown by that name. The page's address (a proxy) then leads to a second
//! router: the page resumes there from a snapshot of the same board, then follows its deltas. The script says on stdout what the page showed; this side makes the next
//! change (an append, pausing and resuming Redis).
//! Screenshots are left in `CARGO_TARGET_TMPDIR`. `./hunt test` installs Chromium, Node.js and
//! the script's `node_modules`.

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::time::Duration;

use hunt_testkit::RedisServer;

use hunt_testkit::replicated::TcpProxy;

use crate::support::{router, router_with, score};

/// The script's next line on stdout, and the reader to go on with.
async fn next_line(
    mut lines: Lines<BufReader<ChildStdout>>,
) -> (Option<String>, Lines<BufReader<ChildStdout>>) {
    tokio::task::spawn_blocking(move || {
        let line = lines.next().and_then(Result::ok);
        (line, lines)
    })
    .await
    .expect("reader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_board_and_a_score_change() {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    for package in ["playwright-core", "axe-core"] {
        assert!(
            script_dir.join("node_modules").join(package).is_dir(),
            "{package} is missing: run `npm ci --prefix {}` (./hunt test does)",
            script_dir.display()
        );
    }
    let chromium = std::env::var("HUNT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is missing: install Debian's `chromium` package (./hunt test does)"
    );

    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    // The page's address: a proxy that a later step points at another router.
    let front = TcpProxy::start(router.http_addr().port()).expect("proxy");
    let writer = crate::support::writer(&redis, dir.path(), 8).await;
    for (player, points) in [("ada", 50), ("bo", 40), ("climber", 30), ("di", 20)] {
        let mut event = score(1, player, points);
        if player == "ada" {
            event.display_name = "Ada Lovelace".into();
        }
        writer.append(event).await.expect("append");
    }

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let screenshots = [
        "live-page.png",
        "live-page-follow.png",
        "live-page-paused.png",
        "live-page-phone.png",
    ];
    for name in screenshots {
        let _ = std::fs::remove_file(shots.join(name));
    }
    let mut node = Command::new("node")
        .arg(script_dir.join("page.mjs"))
        .arg(format!("http://127.0.0.1:{}/#tier-1", front.port()))
        .arg(shots)
        .env("HUNT_CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is missing: install Debian's `nodejs` package (./hunt test does)");
    let lines = BufReader::new(node.stdout.take().expect("stdout")).lines();

    let (line, lines) = next_line(lines).await;
    assert_eq!(
        line.as_deref(),
        Some("rendered 30"),
        "the board rendered with the climber at 30"
    );
    // The climber passes bo and ada.
    writer
        .append(score(1, "climber", 70))
        .await
        .expect("append");
    let (line, lines) = next_line(lines).await;
    assert_eq!(
        line.as_deref(),
        Some("changed 100"),
        "the climber's new score shows"
    );
    let (line, lines) = next_line(lines).await;
    assert_eq!(
        line.as_deref(),
        Some("errored"),
        "the climber's row moved in place, marked for ~3 s, axe clean; bo followed; an error frame shows"
    );
    // di passes bo and ada: the update that clears the error.
    writer.append(score(1, "di", 60)).await.expect("append");
    let (line, lines) = next_line(lines).await;
    assert_eq!(line.as_deref(), Some("changed 80"), "di's new score shows");
    let (line, lines) = next_line(lines).await;
    assert_eq!(
        line.as_deref(),
        Some("pause redis"),
        "reduced motion marks without animating, axe clean; the panel followed bo; a reconnect resumes"
    );
    redis.pause().expect("SIGSTOP redis");
    let (line, lines) = next_line(lines).await;
    redis.resume();
    assert_eq!(
        line.as_deref(),
        Some("paused"),
        "the badge says paused while Redis is paused"
    );
    let (line, lines) = next_line(lines).await;
    assert_eq!(
        line.as_deref(),
        Some("switch router"),
        "live again once Redis is back"
    );
    // A second router on the same Redis, with a lineage of its own; the page's address now
    // leads there, and its connection is cut.
    let other = router_with(&redis, |_| {}).await;
    front.redirect(other.http_addr().port());
    let (line, lines) = next_line(lines).await;
    assert_eq!(
        line.as_deref(),
        Some("switched"),
        "the page resumed on the other router from a snapshot: the same board"
    );
    writer.append(score(1, "bo", 100)).await.expect("append");
    let (line, _) = next_line(lines).await;
    assert_eq!(
        line.as_deref(),
        Some("done"),
        "the other router's deltas apply; the phone layout fits, bo followed from the hash"
    );

    let status = tokio::task::spawn_blocking(move || node.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "the browser script failed: {status}");
    for name in screenshots {
        let path = shots.join(name);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "a screenshot was saved at {}",
            path.display()
        );
    }

    writer.shutdown().await.expect("shutdown");
    assert!(router.shutdown(Duration::from_secs(10)).await);
    assert!(other.shutdown(Duration::from_secs(10)).await);
}
