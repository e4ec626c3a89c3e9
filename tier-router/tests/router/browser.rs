//! The live page in a real browser: Debian's Chromium, driven by Playwright
//! (`tests/browser/page.mjs`), shows the board and then a score change as events are appended.
//! `./hunt test` installs Chromium, Node.js and the script's `node_modules`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hunt_testkit::RedisServer;

use crate::support::{router, score};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_board_and_a_score_change() {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        script_dir.join("node_modules/playwright-core").is_dir(),
        "Playwright is missing: run `npm ci --prefix {}` (./hunt test does)",
        script_dir.display()
    );
    let chromium = std::env::var("HUNT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is missing: install Debian's `chromium` package (./hunt test does)"
    );

    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(&redis).await;
    let writer = crate::support::writer(&redis, dir.path(), 8).await;
    for (player, points) in [("ada", 50), ("bo", 40), ("climber", 30), ("di", 20)] {
        writer
            .append(score(1, player, points))
            .await
            .expect("append");
    }

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut node = Command::new("node")
        .arg(script_dir.join("page.mjs"))
        .arg(format!("http://{}/#tier-1", router.http_addr()))
        .arg(&screenshot)
        .env("HUNT_CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is missing: install Debian's `nodejs` package (./hunt test does)");
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let rendered = tokio::task::spawn_blocking(move || {
        let first = lines.next().and_then(Result::ok);
        (first, lines)
    })
    .await
    .expect("reader");
    let (first, mut lines) = rendered;
    assert_eq!(
        first.as_deref(),
        Some("rendered 30"),
        "the board rendered with the climber at 30"
    );

    writer
        .append(score(1, "climber", 70))
        .await
        .expect("append");
    let changed = tokio::task::spawn_blocking(move || lines.next().and_then(Result::ok))
        .await
        .expect("reader");
    assert_eq!(
        changed.as_deref(),
        Some("changed 100"),
        "the climber's new score shows"
    );
    let status = tokio::task::spawn_blocking(move || node.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "the browser script failed: {status}");
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "a screenshot was saved at {}",
        screenshot.display()
    );

    writer.shutdown().await.expect("shutdown");
    assert!(router.shutdown(Duration::from_secs(10)).await);
}
