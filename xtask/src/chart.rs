//! The benchmark chart, both servers on each panel: throughput and p99 against pairs
//! (closed loop, pingpong, 256 B), memory per idle connection; relay CPU per message for
//! each closed-loop workload; p50 and p99 against load (open loop).

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

    let root = SVGBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let panels = root.split_evenly((2, 3));
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
    let cpu: Vec<(String, f64, f64)> = rows
        .iter()
        .filter_map(|r| {
            Some((
                short(r["workload"].as_str()?),
                r["baseline_cpu_us_per_msg"].as_f64()?,
                r["ours_cpu_us_per_msg"].as_f64()?,
            ))
        })
        .collect();
    pair_bar_panel(&panels[3], "relay CPU per message (µs)", &cpu)?;
    let at_load: Vec<&Value> = report["at_load"].as_array().into_iter().flatten().collect();
    let by_load = |field: &str| -> Vec<(f64, f64)> {
        at_load
            .iter()
            .filter_map(|r| Some((r["load"].as_f64()? * 100.0, r[field].as_f64()?)))
            .collect()
    };
    for (panel, title, field) in [
        (
            &panels[4],
            "open loop: p50 latency (µs) vs load (%)",
            "p50_us",
        ),
        (
            &panels[5],
            "open loop: p99 latency (µs) vs load (%)",
            "p99_us",
        ),
    ] {
        load_panel(
            panel,
            title,
            &by_load(&format!("baseline_{field}")),
            &by_load(&format!("ours_{field}")),
        )?;
    }
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
    baseline_and_ours(&mut chart, base, ours)
}

pub(crate) fn bar_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    bars: &[(&str, f64)],
) -> Result<()> {
    let max_y = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.2;
    let labels: Vec<String> = bars.iter().map(|b| b.0.to_owned()).collect();
    let mut chart = bar_axes(area, title, &labels, max_y)?;
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

/// "pingpong 16×256 B" → "16×256"; "pingpong 16×16 KiB" → "16×16K"; "flood 16×256 B
/// w64" → "fl 16×256": short enough to sit under a bar.
fn short(workload: &str) -> String {
    let words: Vec<&str> = workload.split(' ').collect();
    let prefix = if words.first() == Some(&"flood") {
        "fl "
    } else {
        ""
    };
    let unit = if words.get(2) == Some(&"KiB") {
        "K"
    } else {
        ""
    };
    format!("{prefix}{}{unit}", words.get(1).unwrap_or(&""))
}

/// Grouped bars: for each label, the baseline's value and ours.
fn pair_bar_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    groups: &[(String, f64, f64)],
) -> Result<()> {
    let max_y = groups
        .iter()
        .map(|g| g.1.max(g.2))
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.2;
    let labels: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    let mut chart = bar_axes(area, title, &labels, max_y)?;
    for (i, (_, base, ours)) in groups.iter().enumerate() {
        let x = i as f64;
        for (from, to, value, color) in [(0.1, 0.45, *base, BASELINE), (0.5, 0.85, *ours, OURS)] {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x + from, 0.0), (x + to, value)],
                    color.filled(),
                )))
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    Ok(())
}

/// Baseline and ours against load in percent (linear axes).
fn load_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    base: &[(f64, f64)],
    ours: &[(f64, f64)],
) -> Result<()> {
    let max_y = base
        .iter()
        .chain(ours)
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0f64..100.0, 0.0..max_y)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("% of the baseline's closed-loop maximum")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    baseline_and_ours(&mut chart, base, ours)
}

/// Draw the baseline's and our points as two lines with a legend, on any x axis of f64.
fn baseline_and_ours<'a, X: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<X, plotters::coord::types::RangedCoordf64>,
    >,
    base: &[(f64, f64)],
    ours: &[(f64, f64)],
) -> Result<()> {
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

/// Axes for bars: one slot of width 1 per label, labelled under it.
fn bar_axes<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
    labels: &[String],
    max_y: f64,
) -> Result<
    ChartContext<
        'a,
        SVGBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..(labels.len() as f64), 0.0..max_y)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(labels.len() + 1)
        .x_label_formatter(&|x| labels.get(*x as usize).cloned().unwrap_or_default())
        .x_label_style(("sans-serif", 11))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(chart)
}
