//! The benchmark chart: throughput and p99 against pairs (pingpong, 256 B) for both
//! servers, and memory per idle connection.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use serde_json::Value;

const BASELINE: RGBColor = RGBColor(120, 120, 120);
const OURS: RGBColor = RGBColor(31, 119, 180);

pub(crate) fn draw(report: &Value, path: &Path) -> Result<()> {
    let rows: Vec<&Value> = report["summary"].as_array().into_iter().flatten().collect();
    let series = |field: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r["mode"] == "pingpong" && r["size"] == 256)
            .filter_map(|r| Some((r["pairs"].as_f64()?, r[field].as_f64()?)))
            .collect()
    };
    let memory: Vec<(&str, f64)> = rows
        .iter()
        .find(|r| r.get("baseline_kib_per_connection").is_some())
        .map(|r| {
            vec![
                (
                    "baseline",
                    r["baseline_kib_per_connection"].as_f64().unwrap_or(0.0),
                ),
                (
                    "compendium-server",
                    r["ours_kib_per_connection"].as_f64().unwrap_or(0.0),
                ),
            ]
        })
        .unwrap_or_default();

    let root = SVGBackend::new(path, (1200, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let panels = root.split_evenly((1, 3));
    line_panel(
        &panels[0],
        "pingpong 256 B: msgs/s",
        &series("baseline_msgs_per_sec"),
        &series("ours_msgs_per_sec"),
    )?;
    line_panel(
        &panels[1],
        "pingpong 256 B: p99 latency (µs)",
        &series("baseline_p99_us"),
        &series("ours_p99_us"),
    )?;
    bar_panel(&panels[2], "RSS per idle connection (KiB)", &memory)?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn line_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    base: &[(f64, f64)],
    ours: &[(f64, f64)],
) -> Result<()> {
    let max_y = base.iter().chain(ours).map(|p| p.1).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d((0.8f64..400.0).log_scale(), 0.0..max_y)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("pairs")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (points, color, label) in [
        (base, BASELINE, "baseline"),
        (ours, OURS, "compendium-server"),
    ] {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

pub(crate) fn bar_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    bars: &[(&str, f64)],
) -> Result<()> {
    let max_y = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..(bars.len() as f64), 0.0..max_y)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len() + 1)
        .x_label_formatter(&|x| {
            bars.get(*x as usize)
                .map_or(String::new(), |b| b.0.to_owned())
        })
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (label, value)) in bars.iter().enumerate() {
        let color = if *label == "baseline" { BASELINE } else { OURS };
        let x = i as f64;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x + 0.2, 0.0), (x + 0.8, *value)],
                color.filled(),
            )))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{value:.1}"),
                (x + 0.35, *value + max_y * 0.03),
                ("sans-serif", 14),
            )))
            .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}
