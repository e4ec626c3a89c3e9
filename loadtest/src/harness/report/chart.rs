//! The SVG chart of a run: throughput and p99 latency, second by second, under a title that
//! names the run's parameters.
//!
//! Design constraints:
//! - The last row of the timeline is the catch-up after the load, a partial second: it is left
//!   out, so the chart never ends in what reads as a collapse.
//! - The offered rate and the end-to-end goal are drawn as dashed lines, so a reader sees at a
//!   glance whether the run kept up and met its goal.

use std::path::Path;

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

/// Two panels over time: events/s offered, committed and applied; append and end-to-end p99
/// with the end-to-end goal.
pub(super) fn draw(timeline: &[Second], title: &Title, path: &Path) -> anyhow::Result<()> {
    let timeline = match timeline {
        [whole @ .., _partial] if !whole.is_empty() => whole,
        all => all,
    };
    let root = SVGBackend::new(path, (960, 700)).into_drawing_area();
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
    let grey = RGBColor(120, 120, 120);
    throughput
        .draw_series(DashedLineSeries::new(
            [(0, title.offered_per_s), (seconds, title.offered_per_s)],
            8,
            4,
            grey.stroke_width(1),
        ))?
        .label("offered")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    throughput
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    let slowest = timeline
        .iter()
        .map(|s| s.append_p99_ms.max(s.end_to_end_p99_ms))
        .fold(1.0f64, f64::max)
        .max(END_TO_END_GOAL_MS);
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
        .draw_series(DashedLineSeries::new(
            [(0, END_TO_END_GOAL_MS), (seconds, END_TO_END_GOAL_MS)],
            8,
            4,
            grey.stroke_width(1),
        ))?
        .label("end-to-end goal (p99 < 50 ms)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    latency
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}
