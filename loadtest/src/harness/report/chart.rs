//! The SVG chart of a run: throughput and p99 latency, second by second, under a title that
//! names the run's parameters.
//!
//! Design constraints:
//! - The last row of the timeline is the catch-up after the load, a partial second: it is left
//!   out, so the chart never ends in what reads as a collapse.
//! - The offered rate and the end-to-end goal are drawn as dashed lines, so a reader sees at a
//!   glance whether the run kept up and met its goal.
//! - Each latency is drawn at p50 (thin, light) and p99 (thick), so a tail is told from a shift.
//! - Legends sit beside the panels, never over the data.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::harness::timeline::Second;

/// The end-to-end p99 goal, drawn on the latency panel (ms).
const END_TO_END_GOAL_MS: f64 = 50.0;

/// What the chart's title says of the run.
pub(super) struct Title {
    /// The first line: what ran.
    pub(super) headline: String,
    /// The second line: its parameters.
    pub(super) parameters: String,
    /// The offered rate (events/s), drawn as a line.
    pub(super) offered_per_s: f64,
}

/// Width of the legend column beside each panel (px).
const LEGEND_WIDTH: u32 = 250;

/// One line of a panel, as its legend shows it.
struct Line {
    label: String,
    style: ShapeStyle,
    dashed: bool,
}

impl Line {
    fn solid(label: impl Into<String>, color: RGBColor, width: u32) -> Self {
        Self {
            label: label.into(),
            style: color.stroke_width(width),
            dashed: false,
        }
    }

    fn dashed(label: impl Into<String>, color: RGBColor) -> Self {
        Self {
            label: label.into(),
            style: color.stroke_width(1),
            dashed: true,
        }
    }
}

const COMMITTED: RGBColor = RGBColor(31, 90, 200);
const APPLIED: RGBColor = RGBColor(20, 140, 60);
const GUIDE: RGBColor = RGBColor(120, 120, 120);
const APPEND: RGBColor = RGBColor(200, 40, 40);
const APPEND_P50: RGBColor = RGBColor(235, 150, 150);
const END_TO_END: RGBColor = RGBColor(150, 40, 170);
const END_TO_END_P50: RGBColor = RGBColor(210, 160, 220);

/// Two panels over time: events/s offered, committed and applied; append and end-to-end p50 and
/// p99 with the end-to-end goal. Each panel's legend is in a column to its right.
pub(super) fn draw(timeline: &[Second], title: &Title, path: &Path) -> anyhow::Result<()> {
    let timeline = match timeline {
        [whole @ .., _partial] if !whole.is_empty() => whole,
        all => all,
    };
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (heading, charts) = root.split_vertically(60);
    heading.draw(&Text::new(
        title.headline.clone(),
        (10, 8),
        ("sans-serif", 20).into_font(),
    ))?;
    heading.draw(&Text::new(
        title.parameters.clone(),
        (10, 34),
        ("sans-serif", 14).into_font().color(&RGBColor(60, 60, 60)),
    ))?;
    let (top, bottom) = charts.split_vertically(320);
    let plot_width = 1000 - LEGEND_WIDTH;
    let (top, top_legend) = top.split_horizontally(plot_width);
    let (bottom, bottom_legend) = bottom.split_horizontally(plot_width);
    let seconds = timeline.len().max(1) as u64;

    let most = timeline
        .iter()
        .map(|s| s.committed_per_s.max(s.applied_per_s))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let most = most.max(title.offered_per_s);
    let mut throughput = ChartBuilder::on(&top)
        .caption("events/s", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0u64..seconds, 0f64..most * 1.1)?;
    throughput.configure_mesh().x_desc("second").draw()?;
    let lines = [
        Line::solid("committed by the shards", COMMITTED, 2),
        Line::solid("applied to the leaderboards", APPLIED, 2),
        Line::dashed(format!("offered ({:.0}/s)", title.offered_per_s), GUIDE),
    ];
    throughput.draw_series(LineSeries::new(
        timeline
            .iter()
            .map(|s| (s.second, s.committed_per_s as f64)),
        lines[0].style,
    ))?;
    throughput.draw_series(LineSeries::new(
        timeline.iter().map(|s| (s.second, s.applied_per_s as f64)),
        lines[1].style,
    ))?;
    throughput.draw_series(DashedLineSeries::new(
        [(0, title.offered_per_s), (seconds, title.offered_per_s)],
        8,
        4,
        lines[2].style,
    ))?;
    legend(&top_legend, &lines)?;

    let slowest = timeline
        .iter()
        .map(|s| s.append_p99_ms.max(s.end_to_end_p99_ms))
        .fold(1.0f64, f64::max)
        .max(END_TO_END_GOAL_MS);
    let mut latency = ChartBuilder::on(&bottom)
        .caption("latency (ms)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0u64..seconds, 0f64..slowest * 1.1)?;
    latency.configure_mesh().x_desc("second").draw()?;
    let lines = [
        Line::solid("append p99", APPEND, 2),
        Line::solid("append p50", APPEND_P50, 1),
        Line::solid("end to end p99 (gRPC Watch)", END_TO_END, 2),
        Line::solid("end to end p50", END_TO_END_P50, 1),
        Line::dashed(
            format!("end-to-end goal (p99 < {END_TO_END_GOAL_MS:.0} ms)"),
            GUIDE,
        ),
    ];
    let series: [fn(&Second) -> f64; 4] = [
        |s| s.append_p99_ms,
        |s| s.append_p50_ms,
        |s| s.end_to_end_p99_ms,
        |s| s.end_to_end_p50_ms,
    ];
    for (line, value) in lines.iter().zip(series) {
        latency.draw_series(LineSeries::new(
            timeline.iter().map(|s| (s.second, value(s))),
            line.style,
        ))?;
    }
    latency.draw_series(DashedLineSeries::new(
        [(0, END_TO_END_GOAL_MS), (seconds, END_TO_END_GOAL_MS)],
        8,
        4,
        lines[4].style,
    ))?;
    legend(&bottom_legend, &lines)?;
    root.present()?;
    Ok(())
}

/// A panel's legend, one line per entry, in its own area beside the panel.
fn legend(area: &DrawingArea<SVGBackend<'_>, Shift>, lines: &[Line]) -> anyhow::Result<()> {
    for (i, line) in lines.iter().enumerate() {
        let y = 44 + 24 * i as i32;
        if line.dashed {
            for x in [4, 16] {
                area.draw(&PathElement::new(vec![(x, y), (x + 8, y)], line.style))?;
            }
        } else {
            area.draw(&PathElement::new(vec![(4, y), (28, y)], line.style))?;
        }
        area.draw(&Text::new(
            line.label.clone(),
            (36, y - 7),
            ("sans-serif", 13).into_font(),
        ))?;
    }
    Ok(())
}
