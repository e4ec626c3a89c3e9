//! A writer process killed with SIGKILL mid-stream loses nothing and reuses no tier_seq.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use hunt_testkit::RedisServer;
use leaderboard_proto::rewards;

use crate::support::{config, contiguous, eventually, open, rows, score, stream_by_tier_seq};

/// A committed append as the child printed it: (seq, tier, tier_seq).
type Commit = (u64, u32, u64);

fn parse(line: &str) -> Option<Commit> {
    let mut words = line.split_whitespace();
    if words.next()? != "ok" {
        return None;
    }
    Some((
        words.next()?.parse().ok()?,
        words.next()?.parse().ok()?,
        words.next()?.parse().ok()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_stream_loses_nothing_and_reuses_no_tier_seq() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 31, &redis);

    let mut child = Command::new(env!("CARGO_BIN_EXE_shard-writer"))
        .args([
            "generate",
            "--shard",
            "31",
            "--count",
            "0",
            "--print-commits",
            "--db",
        ])
        .arg(&config.path)
        .arg("--redis-url")
        .arg(redis.url())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shard-writer generate");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut commits = Vec::new();
        let mut killer = Some(());
        let lines = BufReader::new(stdout).lines();
        for line in lines.map_while(Result::ok) {
            if let Some(commit) = parse(&line) {
                commits.push(commit);
            }
            // Kill it mid-stream, with appends in flight and the relay publishing.
            if commits.len() == 3_000 && killer.take().is_some() {
                return (commits, true);
            }
        }
        (commits, false)
    });
    let (mut commits, reached) = tokio::task::spawn_blocking(move || reader.join())
        .await
        .expect("join")
        .expect("reader");
    assert!(reached, "the child stopped before 3000 commits");
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the child was killed");
    // Lines printed between our last read and the kill were committed too; read them.
    if let Some(rest) = child.stdout.take() {
        commits.extend(
            BufReader::new(rest)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| parse(&l)),
        );
    }

    // Every append that returned Ok is in the file, under the tier_seq it was given.
    for tier in rewards::TIERS {
        let stored: BTreeMap<u64, u64> = rows(&config.path, tier.id)
            .into_iter()
            .map(|(seq, tier_seq)| (tier_seq, seq))
            .collect();
        for (seq, _, tier_seq) in commits.iter().filter(|c| c.1 == tier.id) {
            assert_eq!(
                stored.get(tier_seq),
                Some(seq),
                "tier {} lost seq {seq}",
                tier.id
            );
        }
    }

    // Reopened, the writer publishes all of it and continues above, reusing nothing.
    let writer = open(&config).await;
    let mut after = Vec::new();
    for i in 0..50 {
        let tier = rewards::TIERS[i % rewards::TIERS.len()].id;
        after.push(writer.append(score(tier, "late", 1)).await.expect("append"));
    }
    let killed_seqs: BTreeSet<u64> = commits.iter().map(|c| c.0).collect();
    for tier in rewards::TIERS {
        let committed = writer.committed_tier_seq(tier.id);
        let by_seq = eventually("everything published after the restart", || async {
            let by_seq = stream_by_tier_seq(&redis, tier.id).await;
            contiguous(&by_seq, committed).then_some(by_seq)
        })
        .await;
        for (seq, _, tier_seq) in commits.iter().filter(|c| c.1 == tier.id) {
            assert_eq!(
                by_seq[tier_seq].seq, *seq,
                "tier {} tier_seq {tier_seq}",
                tier.id
            );
        }
        for late in after.iter().filter(|a| a.tier == tier.id) {
            assert_eq!(by_seq[&late.tier_seq].seq, late.id.seq);
            assert!(
                !killed_seqs.contains(&late.id.seq),
                "seq {} reused",
                late.id.seq
            );
        }
    }
    writer.shutdown().await.expect("shutdown");
}
