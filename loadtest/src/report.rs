//! The reports of `loadtest run` and `loadtest baseline`: a table on stdout, a JSON file with a
//! per-second timeline, and an SVG chart of throughput and p99 over time.

use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

use crate::ground_truth::Check;
use crate::run::Args;
use crate::timeline::Second;

/// The options a run was made with.
#[derive(Debug, Serialize)]
pub(crate) struct Config {
    shards: u32,
    hunters: u32,
    rate: u64,
    seconds: u64,
    clues_per_map: u32,
    wave_seconds: u64,
    chests_per_wave: u32,
    readers: u64,
    get_top_rate: u64,
    spectators: u32,
    max_in_flight: u64,
    seed: u64,
    embedded: bool,
}

impl From<&Args> for Config {
    fn from(args: &Args) -> Self {
        Self {
            shards: args.shards,
            hunters: args.hunters,
            rate: args.rate,
            seconds: args.seconds,
            clues_per_map: args.clues_per_map,
            wave_seconds: args.wave_seconds,
            chests_per_wave: args.chests_per_wave,
            readers: args.readers,
            get_top_rate: args.get_top_rate,
            spectators: args.spectators,
            max_in_flight: args.max_in_flight,
            seed: args.seed,
            embedded: args.router_grpc.is_none(),
        }
    }
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
    pub(crate) fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1e6;
        Self {
            count: histogram.len(),
            p50_ms: ms(0.50),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: histogram.max() as f64 / 1e6,
        }
    }

    fn cells(&self) -> String {
        if self.count == 0 {
            return "–".into();
        }
        format!(
            "{:.2} / {:.2} / {:.2} ms ({} samples)",
            self.p50_ms, self.p99_ms, self.p999_ms, self.count
        )
    }
}

/// The naive way's figures, from the same run.
#[derive(Debug, Serialize)]
pub(crate) struct Baseline {
    pub(crate) seconds: f64,
    pub(crate) committed_per_s: f64,
    pub(crate) applied_per_s: f64,
    pub(crate) append: Latency,
    pub(crate) end_to_end: Latency,
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
    pub(crate) checks: Vec<Check>,
    pub(crate) timeline: Vec<Second>,
    pub(crate) baseline: Option<Baseline>,
}

impl Report {
    /// Prints the table (with the baseline beside the pipeline when there is one).
    pub(crate) fn print_table(&self) {
        let c = &self.config;
        println!(
            "\n{} shards, {} hunters, {} arrivals/s offered for {:.1} s ({} arrivals), {} GetTop/s over {} connections, {} spectators",
            c.shards,
            c.hunters,
            c.rate,
            self.load_seconds,
            self.arrivals,
            c.get_top_rate,
            c.readers,
            c.spectators
        );
        let ratio = |pipeline: f64, baseline: f64| {
            if baseline > 0.0 {
                format!("{:.1}×", pipeline / baseline)
            } else {
                "–".into()
            }
        };
        match &self.baseline {
            None => {
                println!("| measure | result | goal |");
                println!("|---|---|---|");
            }
            Some(_) => {
                println!("| measure | pipeline | naive baseline | ratio |");
                println!("|---|---|---|---|");
            }
        }
        let row = |measure: &str,
                   pipeline: String,
                   goal: &str,
                   baseline: Option<(String, String)>| {
            match baseline {
                Some((naive, ratio)) => println!("| {measure} | {pipeline} | {naive} | {ratio} |"),
                None if self.baseline.is_some() => println!("| {measure} | {pipeline} | | |"),
                None => println!("| {measure} | {pipeline} | {goal} |"),
            }
        };
        let b = self.baseline.as_ref();
        row(
            "events/s into the leaderboards (committed ÷ time until all applied)",
            format!("{:.0}", self.applied_per_s),
            "≥ 50,000",
            b.map(|b| {
                (
                    format!("{:.0}", b.applied_per_s),
                    ratio(self.applied_per_s, b.applied_per_s),
                )
            }),
        );
        row(
            "events/s committed during the load",
            format!("{:.0}", self.committed_per_s),
            "",
            b.map(|b| {
                (
                    format!("{:.0}", b.committed_per_s),
                    ratio(self.committed_per_s, b.committed_per_s),
                )
            }),
        );
        row(
            "leaderboards' catch-up after the load",
            format!("{:.2} s", self.catch_up_seconds),
            "",
            None,
        );
        row(
            "append (arrival → committed) p50 / p99 / p99.9",
            self.append.cells(),
            "",
            b.map(|b| (b.append.cells(), String::new())),
        );
        row(
            "end to end (append → gRPC Watch) p50 / p99 / p99.9",
            self.end_to_end.cells(),
            "p99 < 50 ms",
            b.map(|b| (b.end_to_end.cells(), String::new())),
        );
        row(
            "end to end (append → WebSocket frame, deltas coalesced by the router) p50 / p99 / p99.9",
            self.websocket.cells(),
            "",
            None,
        );
        row(
            "GetTop p50 / p99 / p99.9",
            self.get_top.cells(),
            "p99 < 5 ms",
            None,
        );
        row(
            "GetTop from the actual send, p50 / p99 / p99.9",
            self.get_top_service.cells(),
            "",
            None,
        );
        row(
            "errors (arrivals / GetTop)",
            format!("{} / {}", self.errors, self.get_top_errors),
            "0",
            None,
        );
        for check in &self.checks {
            row(
                check.name,
                format!(
                    "{} ({})",
                    if check.passed { "PASS" } else { "FAIL" },
                    check.detail
                ),
                "PASS",
                None,
            );
        }
    }

    /// Writes the JSON report to `json` and the chart to `svg`.
    ///
    /// # Errors
    /// When a file cannot be written or the chart drawn.
    pub(crate) fn write(&self, json: &Path, svg: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(json, text).with_context(|| format!("writing {}", json.display()))?;
        chart(&self.timeline, svg).with_context(|| format!("drawing {}", svg.display()))
    }
}

/// Two panels over time: events/s committed and applied; append and end-to-end p99.
fn chart(timeline: &[Second], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(320);
    let seconds = timeline.len().max(1) as u64;
    let most = timeline
        .iter()
        .map(|s| s.committed_per_s.max(s.applied_per_s))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut throughput = ChartBuilder::on(&top)
        .caption("events/s", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0u64..seconds, 0f64..most * 1.1)?;
    throughput.configure_mesh().x_desc("second").draw()?;
    throughput
        .draw_series(LineSeries::new(
            timeline
                .iter()
                .map(|s| (s.second, s.committed_per_s as f64)),
            &BLUE,
        ))?
        .label("committed")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    throughput
        .draw_series(LineSeries::new(
            timeline.iter().map(|s| (s.second, s.applied_per_s as f64)),
            &GREEN,
        ))?
        .label("applied to the leaderboards")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    throughput
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    let slowest = timeline
        .iter()
        .map(|s| s.append_p99_ms.max(s.end_to_end_p99_ms))
        .fold(1.0f64, f64::max);
    let mut latency = ChartBuilder::on(&bottom)
        .caption("p99 latency (ms)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0u64..seconds, 0f64..slowest * 1.1)?;
    latency.configure_mesh().x_desc("second").draw()?;
    latency
        .draw_series(LineSeries::new(
            timeline.iter().map(|s| (s.second, s.append_p99_ms)),
            &RED,
        ))?
        .label("append p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    latency
        .draw_series(LineSeries::new(
            timeline.iter().map(|s| (s.second, s.end_to_end_p99_ms)),
            &MAGENTA,
        ))?
        .label("end to end p99 (gRPC Watch)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
    latency
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}
