//! `cargo xtask soak`: a steady mixed load against a release compendium-server for
//! minutes, sampling the server from outside, and a verdict on whether anything leaks or
//! is lost.
//!
//! The load is the project's load generator: pingpong pairs whose every delivery is
//! checked (once, in order, unchanged) plus churn clients that connect, INIT, send an
//! invalid message, route to themselves and leave (half with a TCP reset). Every few
//! seconds the server's RSS and open descriptors (from /proc) and its /metrics are
//! sampled. Writes `bench/soak/<date>.{csv,md,svg}`; a run of 10 minutes or more also
//! writes the soak section of docs/performance.md.
//!
//! Verdicts (all must hold): after the warm-up, neither RSS nor descriptors trend upward
//! (least-squares slope over the rest of the run, extrapolated across it, within a
//! tolerance); the load generator saw no loss, reordering or change; the server's own
//! counters agree (every ROUTE routed, every invalid message answered 400); and when the
//! load stops, connections, addresses and descriptors return to their idle values.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use plotters::prelude::*;

use compendium_conformance::load::LoadReport;
use compendium_harness::{Relay, sample};

use crate::process::build_release;
use crate::report::{PERFORMANCE_DOC, machine, replace_section, today};

const DOC_START: &str = "<!-- soak:start (written by `cargo xtask soak`) -->";
const DOC_END: &str = "<!-- soak:end -->";

/// What to run.
pub(crate) struct Options {
    pub(crate) minutes: f64,
    pub(crate) pairs: usize,
    pub(crate) churn: usize,
    pub(crate) sample_secs: f64,
}

/// One observation of the server.
#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    rss_kib: u64,
    fds: usize,
    connections: f64,
    addresses: f64,
    received: f64,
    routed: f64,
    invalid: f64,
}

const CSV_HEADER: &str =
    "secs,rss_kib,fds,connections_open,addresses_live,messages_received,messages_routed,errors_400";

impl Sample {
    fn take(server: &Relay, started: Instant) -> Result<Self> {
        let metrics = server.metrics_text()?;
        // A labelled counter not yet touched is absent: 0.
        let value = |name: &str| sample(&metrics, name).unwrap_or(0.0);
        Ok(Self {
            secs: started.elapsed().as_secs_f64(),
            rss_kib: server.process.rss_kib()?,
            fds: server.process.open_fds()?,
            connections: value("compendium_connections_open"),
            addresses: value("compendium_addresses_live"),
            received: value("compendium_messages_received_total"),
            routed: value("compendium_messages_routed_total"),
            invalid: value(r#"compendium_errors_sent_total{code="400"}"#),
        })
    }

    fn csv(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{},{},{}",
            self.secs,
            self.rss_kib,
            self.fds,
            self.connections,
            self.addresses,
            self.received,
            self.routed,
            self.invalid
        )
    }
}

/// Run the soak; `Err` if it could not run or any verdict failed (files are written
/// either way).
pub(crate) fn run(options: &Options) -> Result<()> {
    if !(options.minutes > 0.0 && options.sample_secs > 0.0) {
        bail!("--minutes and --sample-secs must be positive");
    }
    let root = crate::project_root();
    build_release(&root)?;
    let bin = root.join("target/release");
    let server = Relay::start(Relay::command(&bin.join("compendium-server")))?;
    let started = Instant::now();
    let idle = Sample::take(&server, started)?;
    let secs = options.minutes * 60.0;
    println!(
        "soak: {:.1} min against {} ({} pingpong pairs, {} churn clients), sampling every {} s",
        options.minutes,
        server.url(),
        options.pairs,
        options.churn,
        options.sample_secs
    );

    let mut load = Command::new(bin.join("compendium-conformance"))
        .args(["load", "--url", server.url(), "--json"])
        .args(["--pairs", &options.pairs.to_string(), "--size", "256"])
        .args(["--secs", &secs.to_string()])
        .args(["--churn", &options.churn.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the load generator")?;
    let mut samples = vec![idle];
    let period = Duration::from_secs_f64(options.sample_secs);
    let mut next = Instant::now() + period;
    loop {
        if load.try_wait()?.is_some() {
            break;
        }
        // Pacing the sampler, not synchronising with anything.
        std::thread::sleep(next.saturating_duration_since(Instant::now()).min(period));
        if Instant::now() >= next {
            let s = Sample::take(&server, started)?;
            if samples.len() % 12 == 0 {
                println!(
                    "  {:>6.0} s  RSS {:>7} KiB  fds {:>4}  connections {:>3}  routed {:>10}",
                    s.secs, s.rss_kib, s.fds, s.connections, s.routed
                );
            }
            samples.push(s);
            next += period;
        }
    }
    let output = load
        .wait_with_output()
        .context("waiting for the load generator")?;
    let report: LoadReport = serde_json::from_slice(&output.stdout)
        .map_err(|e| anyhow!("the load generator printed no report ({e})"))?;

    // After the load: everything it held must be given back.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let s = Sample::take(&server, started)?;
        if (s.connections == 0.0 && s.addresses == 0.0 && s.fds <= idle.fds)
            || Instant::now() > deadline
        {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    samples.push(after);

    let verdicts = judge(options, &samples, &idle, &after, &report);
    write_results(&root, options, &samples, &report, &verdicts)?;
    let failed: Vec<_> = verdicts.iter().filter(|v| !v.ok).collect();
    if failed.is_empty() {
        println!("soak: PASS");
        Ok(())
    } else {
        for v in &failed {
            eprintln!("FAIL: {}: {}", v.what, v.detail);
        }
        bail!("soak: {} verdict(s) failed", failed.len())
    }
}

struct Verdict {
    what: &'static str,
    ok: bool,
    detail: String,
}

/// Least-squares slope of `y` against `x` (units of y per unit of x).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// The warm-up: the first fifth of the run, at least one minute, at most five.
fn warmup_secs(options: &Options) -> f64 {
    (options.minutes * 60.0 / 5.0).clamp(60.0, 300.0)
}

fn judge(
    options: &Options,
    samples: &[Sample],
    idle: &Sample,
    after: &Sample,
    report: &LoadReport,
) -> Vec<Verdict> {
    let warm = warmup_secs(options);
    // The samples taken under load after the warm-up (not the idle or final ones).
    let steady: Vec<&Sample> = samples[1..samples.len() - 1]
        .iter()
        .filter(|s| s.secs >= warm)
        .collect();
    let span = steady.last().map_or(0.0, |l| l.secs) - steady.first().map_or(0.0, |f| f.secs);
    let rss: Vec<(f64, f64)> = steady.iter().map(|s| (s.secs, s.rss_kib as f64)).collect();
    let fds: Vec<(f64, f64)> = steady.iter().map(|s| (s.secs, s.fds as f64)).collect();
    let rss_drift = slope(&rss) * span;
    let mut median: Vec<f64> = rss.iter().map(|p| p.1).collect();
    median.sort_by(f64::total_cmp);
    let median = median.get(median.len() / 2).copied().unwrap_or(0.0);
    // Allocators keep some slack; a leak shows as steady growth well beyond it.
    let rss_tolerance = (median * 0.05).max(2048.0);
    let fds_drift = slope(&fds) * span;
    // A sample can land while any churn client holds a connection, or not.
    let fds_tolerance = options.churn as f64 + 2.0;

    let messages = report.messages as f64;
    let cycles = report.churn_cycles as f64;
    let valid = report.valid;
    vec![
        Verdict {
            what: "enough samples after the warm-up",
            ok: steady.len() >= 5,
            detail: format!(
                "{} samples after {warm:.0} s of warm-up{}",
                steady.len(),
                if steady.len() >= 5 {
                    ""
                } else {
                    "; run longer"
                }
            ),
        },
        Verdict {
            what: "RSS does not trend upward",
            ok: rss_drift <= rss_tolerance,
            detail: format!(
                "{rss_drift:+.0} KiB over {span:.0} s (tolerance {rss_tolerance:.0} KiB)"
            ),
        },
        Verdict {
            what: "descriptors do not trend upward",
            ok: fds_drift <= fds_tolerance,
            detail: format!("{fds_drift:+.1} over {span:.0} s (tolerance {fds_tolerance:.0})"),
        },
        Verdict {
            what: "nothing lost, reordered or changed",
            ok: valid && messages > 0.0 && (options.churn == 0 || cycles > 0.0),
            detail: if report.problems.is_empty() {
                format!("{messages} pingpong messages and {cycles} churn cycles verified")
            } else {
                format!("problems: {}", report.problems.join("; "))
            },
        },
        Verdict {
            what: "the server's counters agree with the load",
            ok: after.routed == messages + cycles && after.invalid == cycles,
            detail: format!(
                "routed {} (expected {messages} pingpong + {cycles} churn), answered 400: {} (expected {cycles})",
                after.routed, after.invalid
            ),
        },
        Verdict {
            what: "everything is given back when the load stops",
            ok: after.connections == 0.0 && after.addresses == 0.0 && after.fds <= idle.fds,
            detail: format!(
                "{} connections, {} addresses, {} descriptors (idle: {})",
                after.connections, after.addresses, after.fds, idle.fds
            ),
        },
    ]
}

fn write_results(
    root: &Path,
    options: &Options,
    samples: &[Sample],
    report: &LoadReport,
    verdicts: &[Verdict],
) -> Result<()> {
    let date = today()?;
    let dir = root.join("bench/soak");
    std::fs::create_dir_all(&dir)?;
    let documented = options.minutes >= 10.0;
    let stem = if documented {
        date.clone()
    } else {
        format!("{date}-short")
    };
    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    for s in samples {
        csv.push_str(&s.csv());
        csv.push('\n');
    }
    std::fs::write(dir.join(format!("{stem}.csv")), csv)?;
    draw(
        samples,
        warmup_secs(options),
        &dir.join(format!("{stem}.svg")),
    )?;

    let machine = machine();
    let under_load: Vec<&Sample> = samples[1..samples.len() - 1].iter().collect();
    let peak = under_load.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let mut md = format!(
        "Soak of {date} on \"{}\" ({}): {:.0} min, {} pingpong pairs of 256 B + {} churn clients, \
         a sample every {} s ([CSV]({stem}.csv)).\n\n",
        machine["cpus"].as_str().unwrap_or(""),
        machine["kernel"].as_str().unwrap_or(""),
        options.minutes,
        options.pairs,
        options.churn,
        options.sample_secs,
    );
    md.push_str(&format!(
        "- Load: {} messages verified ({:.0} msgs/s, p99 {} µs), {} churn cycles (each: connect, INIT, an invalid message, a self-route, leave; half with a TCP reset).\n",
        report.messages, report.msgs_per_sec, report.latency_us.p99, report.churn_cycles
    ));
    md.push_str(&format!(
        "- Server RSS: {} KiB idle, peak {peak} KiB under load, {} KiB after; descriptors {} idle, {} after.\n\n",
        first.rss_kib, last.rss_kib, first.fds, last.fds
    ));
    md.push_str("| check | result | detail |\n|---|---|---|\n");
    for v in verdicts {
        md.push_str(&format!(
            "| {} | {} | {} |\n",
            v.what,
            if v.ok { "pass" } else { "**FAIL**" },
            v.detail.replace('|', "\\|")
        ));
    }
    std::fs::write(dir.join(format!("{stem}.md")), &md)?;
    println!("\n{md}\nwrote bench/soak/{stem}.csv, .md, .svg");
    if documented {
        // docs/performance.md links to the files from one folder further away.
        let md = md.replace(
            &format!("({stem}.csv)"),
            &format!("(../bench/soak/{stem}.csv)"),
        );
        let section = format!(
            "{md}\n![RSS, open descriptors and connections during the soak](../bench/soak/{stem}.svg)\n"
        );
        replace_section(root, PERFORMANCE_DOC, DOC_START, DOC_END, &section)?;
        println!("updated the soak section of {PERFORMANCE_DOC}");
    }
    Ok(())
}

/// A named, coloured line of (minutes, value) points.
type Line<'a> = (&'a str, &'a Vec<(f64, f64)>, RGBColor);

/// Two panels against minutes: RSS (MiB), and open descriptors with live connections.
fn draw(samples: &[Sample], warmup_secs: f64, path: &Path) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (1100, 380)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, 2));
    let minutes = samples.last().map_or(1.0, |s| s.secs / 60.0).max(0.1);
    let series = |f: &dyn Fn(&Sample) -> f64| -> Vec<(f64, f64)> {
        samples.iter().map(|s| (s.secs / 60.0, f(s))).collect()
    };
    let rss = series(&|s| s.rss_kib as f64 / 1024.0);
    let fds = series(&|s| s.fds as f64);
    let conns = series(&|s| s.connections);
    let panel = |area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
                 title: &str,
                 lines: &[Line<'_>]|
     -> Result<()> {
        let top = lines
            .iter()
            .flat_map(|(_, points, _)| points.iter().map(|p| p.1))
            .fold(1.0f64, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..minutes, 0.0..top)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .draw()
            .map_err(|e| err(&e))?;
        let warm = (warmup_secs / 60.0).min(minutes);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (warm, top)],
                RGBColor(235, 235, 235).filled(),
            )))
            .map_err(|e| err(&e))?
            .label("warm-up")
            .legend(|(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 15, y + 5)],
                    RGBColor(235, 235, 235).filled(),
                )
            });
        for (label, points, color) in lines {
            let color = *color;
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| err(&e))?;
        Ok(())
    };
    panel(
        &panels[0],
        "server RSS (MiB)",
        &[("RSS", &rss, RGBColor(31, 119, 180))],
    )?;
    panel(
        &panels[1],
        "open descriptors and connections",
        &[
            ("descriptors", &fds, RGBColor(214, 39, 40)),
            ("connections", &conns, RGBColor(44, 160, 44)),
        ],
    )?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_noise() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 3.0 * f64::from(i) + 7.0))
            .collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), if i % 2 == 0 { 5.0 } else { 6.0 }))
            .collect();
        assert!(slope(&flat).abs() < 0.1);
        assert_eq!(slope(&[(1.0, 2.0)]), 0.0);
    }
}
