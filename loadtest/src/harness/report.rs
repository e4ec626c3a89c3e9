//! The reports of `loadtest run` and `loadtest baseline`: a table on stdout, a JSON file with a
//! per-second timeline, and an SVG chart of throughput and p99 over time.

use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::harness::ground_truth::{self, Check};
use crate::harness::histogram;
use crate::harness::timeline::Second;

mod chart;

/// The options a run was made with.
#[derive(Debug, Serialize)]
pub(crate) struct Config {
    pub(crate) shards: u32,
    pub(crate) hunters: u32,
    pub(crate) rate: u64,
    pub(crate) seconds: u64,
    pub(crate) clues_per_map: u32,
    pub(crate) wave_seconds: u64,
    pub(crate) chests_per_wave: u32,
    pub(crate) readers: u64,
    pub(crate) get_top_rate: u64,
    pub(crate) spectators: u32,
    pub(crate) max_in_flight: u64,
    pub(crate) seed: u64,
    /// Whether the run started its own tier router (not `--router-grpc`).
    pub(crate) embedded: bool,
}

/// Quantiles of a latency histogram (nanoseconds in), in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Latency {
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

impl Latency {
    pub(crate) fn of(recorded: &Histogram<u64>) -> Self {
        Self {
            count: recorded.len(),
            p50_ms: histogram::millis(recorded, 0.50),
            p99_ms: histogram::millis(recorded, 0.99),
            p999_ms: histogram::millis(recorded, 0.999),
            max_ms: histogram::max_millis(recorded),
        }
    }
}

/// Reads one figure of a peer.
type Peer = fn(&Baseline) -> f64;

/// The naive way's figures, from the same run.
#[derive(Debug, Serialize)]
pub(crate) struct Baseline {
    pub(crate) seconds: f64,
    pub(crate) committed_per_s: f64,
    pub(crate) applied_per_s: f64,
    pub(crate) append: Latency,
    pub(crate) end_to_end: Latency,
    /// Top-100 reads from their intended send, where the peer serves them apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) get_top: Option<Latency>,
}

/// What a run measured and found.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) config: Config,
    /// Arrivals offered (each an append, a claim then perhaps an append).
    pub(crate) arrivals: u64,
    /// Events committed by every shard, probes and wave resets included.
    pub(crate) committed: u64,
    /// Events read back from the shard logs by the checks.
    pub(crate) logged: u64,
    pub(crate) load_seconds: f64,
    /// Committed events per second of load.
    pub(crate) committed_per_s: f64,
    /// Committed events over the time until the last of them was applied.
    pub(crate) applied_per_s: f64,
    /// How long after the load the leaderboards took to catch up.
    pub(crate) catch_up_seconds: f64,
    /// How long after the load until everything was applied and settled.
    pub(crate) settle_seconds: f64,
    pub(crate) probes: u64,
    /// Arrival → committed, from the intended time.
    pub(crate) append: Latency,
    /// Probe append → visible in a gRPC `Watch`, from the intended time.
    pub(crate) end_to_end: Latency,
    /// Probe append → a WebSocket frame showing it, from the intended time.
    pub(crate) websocket: Latency,
    /// `GetTop` from the intended send.
    pub(crate) get_top: Latency,
    /// `GetTop` from the actual send (without the load generator's own lateness).
    pub(crate) get_top_service: Latency,
    /// Arrivals that failed.
    pub(crate) errors: u64,
    pub(crate) get_top_errors: u64,
    /// Times a `Watch` stream or a spectator's socket was cut and opened again.
    pub(crate) observer_reconnects: u64,
    /// CPU time per committed event, from the load's start until every event was applied.
    pub(crate) cpu_per_event: crate::harness::cpu::PerEvent,
    pub(crate) checks: Vec<Check>,
    pub(crate) timeline: Vec<Second>,
    pub(crate) baseline: Option<Baseline>,
    /// The same load on PostgreSQL (`loadtest peer-postgres`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) postgres: Option<Baseline>,
}

/// One performance goal of a run, and whether the run met it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Goal {
    pub(crate) name: &'static str,
    pub(crate) goal: &'static str,
    pub(crate) result: String,
    pub(crate) met: bool,
}

/// Throughput into the boards a run should reach.
const GOAL_EVENTS_PER_S: f64 = 50_000.0;
/// End-to-end p99 a run should stay under.
const GOAL_END_TO_END_P99_MS: f64 = 50.0;
/// GetTop p99 (from the intended send) a run should stay under.
const GOAL_GET_TOP_P99_MS: f64 = 5.0;

impl Report {
    /// The run's goals, each met or missed. A latency without samples is missed: nothing was
    /// measured.
    pub(crate) fn goals(&self) -> Vec<Goal> {
        let p99 = |latency: &Latency| {
            if latency.count == 0 {
                ("no samples".to_owned(), false)
            } else {
                (format!("{:.2} ms", latency.p99_ms), true)
            }
        };
        let (end_to_end, e2e_measured) = p99(&self.end_to_end);
        let (get_top, get_top_measured) = p99(&self.get_top);
        let mut goals = vec![
            Goal {
                name: "events/s into the leaderboards",
                goal: "≥ 50,000",
                result: format!("{:.0}", self.applied_per_s),
                met: self.applied_per_s >= GOAL_EVENTS_PER_S,
            },
            Goal {
                name: "end to end p99",
                goal: "< 50 ms",
                result: end_to_end,
                met: e2e_measured && self.end_to_end.p99_ms < GOAL_END_TO_END_P99_MS,
            },
        ];
        if self.config.get_top_rate > 0 {
            goals.push(Goal {
                name: "GetTop p99",
                goal: "< 5 ms",
                result: get_top,
                met: get_top_measured && self.get_top.p99_ms < GOAL_GET_TOP_P99_MS,
            });
        }
        goals.push(Goal {
            name: "errors (arrivals / GetTop)",
            goal: "0",
            result: format!("{} / {}", self.errors, self.get_top_errors),
            met: self.errors == 0 && self.get_top_errors == 0,
        });
        goals
    }

    /// Prints the tables (with the baseline beside the pipeline when there is one) and the
    /// checks, every line within [`WIDTH`] columns.
    fn print_table(&self) {
        let c = &self.config;
        println!();
        for line in wrap(
            &format!(
                "{} shards, {} hunters, {} arrivals/s offered for {:.1} s ({} arrivals), {} GetTop/s over {} connections, {} spectators",
                c.shards,
                c.hunters,
                c.rate,
                self.load_seconds,
                self.arrivals,
                c.get_top_rate,
                c.readers,
                c.spectators
            ),
            "",
        ) {
            println!("{line}");
        }
        let ratio = |pipeline: f64, baseline: f64| {
            if baseline > 0.0 {
                format!("{:.1}×", pipeline / baseline)
            } else {
                "–".into()
            }
        };
        let goals = self.goals();
        // A goal's cell says whether it was met: "p99 < 50 ms: MISSED".
        let marked = |goal: &str| -> String {
            let named = |g: &&Goal| goal == g.goal || goal.strip_prefix("p99 ") == Some(g.goal);
            match goals.iter().find(named) {
                Some(g) if g.met => format!("{goal}: met"),
                Some(_) => format!("{goal}: MISSED"),
                None => goal.to_owned(),
            }
        };
        let b = self.baseline.as_ref();

        let pg = self.postgres.as_ref();
        println!();
        match (b, pg) {
            (None, _) => println!("| throughput | pipeline | goal |\n|---|--:|---|"),
            (Some(_), None) => {
                println!("| throughput | pipeline | naive baseline | ratio |\n|---|--:|--:|--:|")
            }
            (Some(_), Some(_)) => println!(
                "| throughput | pipeline | naive | ratio | PostgreSQL | ratio |\n|---|--:|--:|--:|--:|--:|"
            ),
        }
        // A measure's cells: the pipeline's, then (with peers) each peer's and the ratio to it.
        let row = |measure: &str, pipeline: String, goal: &str, rate: Option<(f64, Peer)>| {
            let peers: String = [b, pg]
                .into_iter()
                .flatten()
                .map(|peer| match rate {
                    Some((mine, of)) => format!(" {:.0} | {} |", of(peer), ratio(mine, of(peer))),
                    None => " | |".to_owned(),
                })
                .collect();
            if b.is_some() {
                println!("| {measure} | {pipeline} |{peers}");
            } else {
                println!("| {measure} | {pipeline} | {} |", marked(goal));
            }
        };
        row(
            "events/s into the leaderboards ¹",
            format!("{:.0}", self.applied_per_s),
            "≥ 50,000",
            Some((self.applied_per_s, |p: &Baseline| p.applied_per_s)),
        );
        row(
            "events/s committed during the load",
            format!("{:.0}", self.committed_per_s),
            "",
            Some((self.committed_per_s, |p: &Baseline| p.committed_per_s)),
        );
        row(
            "catch-up after the load",
            format!("{:.2} s", self.catch_up_seconds),
            "",
            None,
        );
        row(
            "errors (arrivals / GetTop)",
            format!("{} / {}", self.errors, self.get_top_errors),
            "0",
            None,
        );
        row(
            "CPU µs per event: process (commit + rest) / Redis",
            self.cpu_per_event.cells(),
            "",
            None,
        );
        row(
            "observers cut off and reconnected ²",
            self.observer_reconnects.to_string(),
            "",
            None,
        );

        println!();
        println!("| latency (ms, from the intended time) | p50 | p99 | p99.9 | samples | goal |");
        println!("|---|--:|--:|--:|--:|---|");
        let latency = |what: &str, latency: &Latency, goal: &str| {
            let goal = if b.is_some() || goal.is_empty() {
                String::new()
            } else {
                marked(goal)
            };
            if latency.count == 0 {
                println!("| {what} | – | – | – | 0 | {goal} |");
            } else {
                println!(
                    "| {what} | {:.2} | {:.2} | {:.2} | {} | {goal} |",
                    latency.p50_ms, latency.p99_ms, latency.p999_ms, latency.count
                );
            }
        };
        latency("append → committed", &self.append, "");
        if let Some(b) = b {
            latency("append → committed, naive baseline", &b.append, "");
        }
        latency("append → gRPC Watch", &self.end_to_end, "p99 < 50 ms");
        if let Some(b) = b {
            latency("append → visible, naive baseline", &b.end_to_end, "");
        }
        latency("append → WebSocket frame ³", &self.websocket, "");
        if let Some(pg) = pg {
            latency("append → committed, PostgreSQL ⁴", &pg.append, "");
        }
        latency("GetTop", &self.get_top, "p99 < 5 ms");
        if let Some(top) = pg.and_then(|pg| pg.get_top.as_ref()) {
            latency("top-100 read, PostgreSQL", top, "");
        }
        latency("GetTop, from the actual send", &self.get_top_service, "");
        println!("¹ committed ÷ time until all applied   ² Watch streams and spectators");
        println!("³ deltas coalesced by the router");
        if pg.is_some() {
            println!("⁴ one transaction per event; visible to readers once committed");
        }

        println!("\nchecks (against the shard logs):");
        for check in &self.checks {
            let verdict = if check.passed { "PASS" } else { "FAIL" };
            for line in wrap(
                &format!("{verdict}  {}: {}", check.name, check.detail),
                "      ",
            ) {
                println!("  {line}");
            }
        }
    }

    /// Prints the table, writes the JSON to `json` and the chart to `svg`, and fails when a
    /// check failed.
    ///
    /// # Errors
    /// When a file cannot be written, or naming every failed check.
    pub(crate) fn finish(&self, json: &Path, svg: &Path, fail_on_goal: bool) -> anyhow::Result<()> {
        self.print_table();
        self.write(json, svg)?;
        println!("report: {} and {}", json.display(), svg.display());
        let goals = self.goals();
        let missed: Vec<String> = goals
            .iter()
            .filter(|goal| !goal.met)
            .map(|goal| format!("{} {} (was {})", goal.name, goal.goal, goal.result))
            .collect();
        if missed.is_empty() {
            println!("goals: all {} met", goals.len());
        } else {
            let said = format!(
                "goals: {} of {} met; MISSED: {}",
                goals.len() - missed.len(),
                goals.len(),
                missed.join("; ")
            );
            for line in wrap(&said, "  ") {
                println!("{line}");
            }
        }
        ground_truth::fail_on_checks(&self.checks)?;
        if fail_on_goal && !missed.is_empty() {
            anyhow::bail!("missed goals (--fail-on-goal): {}", missed.join("; "));
        }
        Ok(())
    }

    /// Writes the JSON report to `json` and the chart to `svg`.
    ///
    /// # Errors
    /// When a file cannot be written or the chart drawn.
    fn write(&self, json: &Path, svg: &Path) -> anyhow::Result<()> {
        let mut value = serde_json::to_value(self)?;
        if let Some(fields) = value.as_object_mut() {
            fields.insert("goals".to_owned(), serde_json::to_value(self.goals())?);
        }
        let text = serde_json::to_string_pretty(&value)?;
        std::fs::write(json, text).with_context(|| format!("writing {}", json.display()))?;
        let c = &self.config;
        let title = chart::Title {
            headline: format!(
                "hunt-pipeline loadtest: {:.0} events/s into the leaderboards",
                self.applied_per_s
            ),
            parameters: format!(
                "{} shards, {} hunters, {} events/s offered for {} s, {} GetTop/s, {} spectators, seed {}",
                c.shards, c.hunters, c.rate, c.seconds, c.get_top_rate, c.spectators, c.seed
            ),
            offered_per_s: c.rate as f64,
        };
        chart::draw(&self.timeline, &title, svg)
            .with_context(|| format!("drawing {}", svg.display()))
    }
}

/// The columns every line of the printed report fits in.
const WIDTH: usize = 100;

/// `text` in lines of at most [`WIDTH`] − 2 columns (the caller may indent by 2), broken
/// between words; continuation lines start with `indent`. A word longer than a line stands
/// alone on its own.
fn wrap(text: &str, indent: &str) -> Vec<String> {
    let limit = WIDTH - 2;
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let width = line.chars().count();
        if width > 0 && width + 1 + word.chars().count() > limit {
            lines.push(std::mem::replace(&mut line, indent.to_owned()));
        }
        if !line.trim().is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.trim().is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::{WIDTH, wrap};

    #[test]
    fn wrapped_lines_fit_and_keep_every_word() {
        let text = "one two three ".repeat(40);
        let lines = wrap(&text, "    ");
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|line| line.chars().count() <= WIDTH - 2));
        assert!(lines[1..].iter().all(|line| line.starts_with("    ")));
        let words: Vec<&str> = lines.iter().flat_map(|l| l.split_whitespace()).collect();
        assert_eq!(words, text.split_whitespace().collect::<Vec<_>>());
        assert_eq!(wrap("", "  "), Vec::<String>::new());
    }
}
