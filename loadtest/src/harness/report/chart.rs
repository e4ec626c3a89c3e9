//! The SVG chart of a run: throughput and p99 latency, second by second.

use std::path::Path;

use plotters::prelude::*;

use crate::harness::timeline::Second;

/// Two panels over time: events/s committed and applied; append and end-to-end p99.
pub(super) fn draw(timeline: &[Second], path: &Path) -> anyhow::Result<()> {
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
