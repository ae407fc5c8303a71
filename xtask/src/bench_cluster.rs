//! `cargo xtask bench --cluster`: what cluster mode costs, on this machine.
//!
//! Five arms, run alternately for each workload with fresh processes every run:
//! - **single**: one compendium-server, as `cargo xtask bench` runs it;
//! - **local**: one node in cluster mode (nats-server running), both ends of every pair on
//!   it — routes between two connections of one node must not touch NATS, so this must
//!   match *single*;
//! - **cross**: two nodes and nats-server, each pair's ends on different nodes, so every
//!   message crosses the cluster;
//! - **cross v2**: the same with resumable sessions (protocol version 2) on every
//!   connection — target ≥ [`MIN_V2_TO_V1`] of *cross*;
//! - **bridge**: two `bare_nats_bridge` processes (server/examples) and nats-server, pairs
//!   split the same way: relays that only publish each ROUTE to the holder's subject and
//!   write what they receive, no verdicts — the physical limit of the design on this
//!   machine. *cross* must reach at least [`MIN_CROSS_TO_BRIDGE`] of it.
//!
//! Reported as ratios to *single* and to *bridge* in the same run (medians), with p50/p99, and the CPU time
//! each process used per delivered message (from /proc), which also says what the cross
//! rate would be with a core per process. Then idle connections on two nodes: relay RSS per
//! connection and what they cost nats-server. Writes `bench/results/<date>-cluster.{json,md,svg}`
//! and the cluster section of docs/performance.md.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use compendium_conformance::load::LoadReport;
use compendium_harness::{Nats, Relay};
use plotters::prelude::*;
use serde::Serialize;

use crate::bench::median;
use crate::process::build_release;
use crate::project_root;
use crate::report::{PERFORMANCE_DOC, machine, replace_section, today};

/// The cluster key of the benchmark's nodes.
const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// Cross-node msgs/s over the bare bridge's, on every workload: at least this (issue #23).
const MIN_CROSS_TO_BRIDGE: f64 = 1.0;
/// Resumable cross-node msgs/s over version 1 cross-node, on every workload: at least this.
const MIN_V2_TO_V1: f64 = 0.9;

struct Workload {
    name: &'static str,
    mode: &'static str,
    pairs: usize,
    window: usize,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "pingpong 16×256 B",
        mode: "pingpong",
        pairs: 16,
        window: 1,
    },
    Workload {
        name: "pingpong 256×256 B",
        mode: "pingpong",
        pairs: 256,
        window: 1,
    },
    Workload {
        name: "flood 16×256 B w64",
        mode: "flood",
        pairs: 16,
        window: 64,
    },
];

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum Arm {
    Single,
    Local,
    Cross,
    CrossV2,
    Bridge,
}

impl Arm {
    const ALL: [Arm; 5] = [
        Arm::Single,
        Arm::Local,
        Arm::Cross,
        Arm::CrossV2,
        Arm::Bridge,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Single => "single node",
            Self::Local => "cluster, same node",
            Self::Cross => "cluster, across nodes",
            Self::CrossV2 => "across nodes, resumable",
            Self::Bridge => "bare NATS bridge",
        }
    }

    /// Whether it runs two relay processes, each pair's ends on different ones.
    fn two_nodes(self) -> bool {
        matches!(self, Self::Cross | Self::CrossV2 | Self::Bridge)
    }
}

/// One run of one arm.
#[derive(Debug, Clone, Serialize)]
struct Run {
    workload: &'static str,
    arm: Arm,
    rep: usize,
    load: LoadReport,
    /// CPU µs per delivered message, per relay process (one or two), and nats-server's.
    relay_cpu_us_per_msg: Vec<f64>,
    nats_cpu_us_per_msg: f64,
}

/// The medians of one workload.
#[derive(Debug, Clone, Serialize)]
struct Row {
    workload: &'static str,
    arm: Arm,
    msgs_per_sec: f64,
    ratio_to_single: f64,
    ratio_to_bridge: f64,
    p50_us: f64,
    p99_us: f64,
    /// All relay processes together, per message.
    relay_cpu_us_per_msg: f64,
    nats_cpu_us_per_msg: f64,
    /// With a core for each process, the busiest one sets the rate: 1 / its CPU per message.
    msgs_per_sec_one_core_each: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Idle {
    connections_per_node: usize,
    relay_kib_per_connection: f64,
    nats_kib_per_connection: f64,
}

#[derive(Debug, Clone, Serialize)]
struct ClusterReport {
    date: String,
    quick: bool,
    secs_per_run: f64,
    repetitions: usize,
    machine: serde_json::Value,
    summary: Vec<Row>,
    idle: Idle,
    runs: Vec<Run>,
}

pub(crate) fn run(quick: bool) -> Result<()> {
    let (secs, reps, idle) = if quick {
        (1.5, 1, 1_000)
    } else {
        (3.0, 5, 5_000)
    };
    let root = project_root();
    build_release(&root)?;
    let bin = root.join("target/release");
    let mut runs = Vec::new();
    for workload in WORKLOADS {
        for rep in 0..reps {
            for arm in Arm::ALL {
                let run = measure(&bin, workload, arm, secs, rep + 1)
                    .with_context(|| format!("{} ({})", workload.name, arm.label()))?;
                eprintln!(
                    "{:<20} {:<22} rep {}: {:>9.0} msgs/s  p99 {:>6} µs  relay {:>5.1} µs/msg  nats {:>4.1} µs/msg{}",
                    workload.name,
                    arm.label(),
                    rep + 1,
                    run.load.msgs_per_sec,
                    run.load.latency_us.p99,
                    run.relay_cpu_us_per_msg.iter().sum::<f64>(),
                    run.nats_cpu_us_per_msg,
                    if run.load.valid { "" } else { "  INVALID" }
                );
                runs.push(run);
            }
        }
    }
    let idle = idle_cost(&bin, idle).context("idle connections")?;
    eprintln!(
        "idle: {:.1} KiB per connection on a node, {:.2} KiB in nats-server",
        idle.relay_kib_per_connection, idle.nats_kib_per_connection
    );
    let report = ClusterReport {
        date: today()?,
        quick,
        secs_per_run: secs,
        repetitions: reps,
        machine: machine(),
        summary: summarize(&runs),
        idle,
        runs,
    };
    let dir = root.join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let stem = format!(
        "{}-cluster{}",
        report.date,
        if quick { "-quick" } else { "" }
    );
    let table = markdown(&report);
    let svg = crate::bench::write_results(&dir, &stem, &report, &table)?;
    draw(&report, &svg)?;
    println!("{table}");
    println!("wrote bench/results/{stem}.json, .md, .svg");
    let missed = targets(&report.runs)
        .into_iter()
        .filter(|(_, met)| !met)
        .count();
    if missed > 0 {
        eprintln!("{missed} target(s) missed (see above)");
    }
    if !quick {
        let section = format!(
            "{table}\n![throughput and CPU per message: single node, one cluster node, across two nodes (version 1 and resumable), bare NATS bridge](../bench/results/{stem}.svg)\n"
        );
        replace_section(&root, PERFORMANCE_DOC, DOC_START, DOC_END, &section)?;
        println!("updated the cluster section of {PERFORMANCE_DOC}");
    }
    Ok(())
}

const DOC_START: &str = "<!-- bench-cluster:start (written by `cargo xtask bench --cluster`) -->";
const DOC_END: &str = "<!-- bench-cluster:end -->";

/// One process of `arm`: a node in cluster mode, a plain relay when `nats` is `None`, or
/// a bare bridge.
fn node(bin: &Path, arm: Arm, nats: Option<&Nats>, name: &str) -> Result<Relay> {
    match (arm, nats) {
        (Arm::Bridge, Some(nats)) => {
            let mut command = std::process::Command::new(bin.join("examples/bare_nats_bridge"));
            command.args(["127.0.0.1:0", &nats.url()]);
            Relay::start(command)
        }
        _ => relay(bin, nats, name),
    }
}

/// A node in cluster mode, or a plain relay when `nats` is `None`.
fn relay(bin: &Path, nats: Option<&Nats>, name: &str) -> Result<Relay> {
    let mut command = Relay::command(&bin.join("compendium-server"));
    if let Some(nats) = nats {
        command
            .args(["--cluster", &nats.url(), "--node-name", name])
            .env("COMPENDIUM_CLUSTER_KEY", KEY);
    }
    // Our own logs would compete with the load for the two cores.
    command.env("RUST_LOG", "info,async_nats=warn");
    Relay::start(command)
}

fn measure(bin: &Path, w: &Workload, arm: Arm, secs: f64, rep: usize) -> Result<Run> {
    let nats = match arm {
        Arm::Single => None,
        _ => Some(Nats::start()?),
    };
    let mut nodes = vec![node(bin, arm, nats.as_ref(), "node1")?];
    if arm.two_nodes() {
        nodes.push(node(bin, arm, nats.as_ref(), "node2")?);
    }
    let urls: Vec<&str> = nodes.iter().map(Relay::url).collect();
    let before: Vec<Duration> = nodes
        .iter()
        .map(|n| n.process.cpu_time().map(|t| t.total()))
        .collect::<Result<_>>()?;
    let nats_before = match &nats {
        Some(n) => n.cpu_time()?,
        None => Duration::ZERO,
    };
    let mut load = crate::bench::load_command(bin, &urls.join(","));
    load.args(["--pairs", &w.pairs.to_string(), "--size", "256"])
        .args(["--secs", &secs.to_string()])
        .args(["--mode", w.mode, "--window", &w.window.to_string()]);
    if arm == Arm::CrossV2 {
        load.arg("--resumable");
    }
    let output = load.output().context("running the load generator")?;
    let load: LoadReport = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("load output: {}", String::from_utf8_lossy(&output.stderr)))?;
    let messages = load.messages.max(1) as f64;
    let per_msg = |spent: Duration| spent.as_secs_f64() * 1e6 / messages;
    let relay_cpu_us_per_msg = nodes
        .iter()
        .zip(&before)
        .map(|(n, b)| Ok(per_msg(n.process.cpu_time()?.total().saturating_sub(*b))))
        .collect::<Result<_>>()?;
    let nats_cpu_us_per_msg = match &nats {
        Some(n) => per_msg(n.cpu_time()?.saturating_sub(nats_before)),
        None => 0.0,
    };
    Ok(Run {
        workload: w.name,
        arm,
        rep,
        load,
        relay_cpu_us_per_msg,
        nats_cpu_us_per_msg,
    })
}

/// Idle connections on two cluster nodes (after INIT): what each costs a node, and what
/// they cost nats-server (nothing per connection by design: a node's subscriptions do not
/// grow with its connections).
fn idle_cost(bin: &Path, per_node: usize) -> Result<Idle> {
    let nats = Nats::start()?;
    let nodes = [
        relay(bin, Some(&nats), "node1")?,
        relay(bin, Some(&nats), "node2")?,
    ];
    let empty: Vec<u64> = nodes
        .iter()
        .map(|n| n.process.rss_kib())
        .collect::<Result<_>>()?;
    let nats_empty = nats.rss_kib()?;
    let urls: Vec<&str> = nodes.iter().map(Relay::url).collect();
    let (mut holder, held) = crate::bench::hold_idle(bin, &urls.join(","), per_node * 2, &[])?;
    let loaded: Vec<u64> = nodes
        .iter()
        .map(|n| n.process.rss_kib())
        .collect::<Result<_>>()?;
    let nats_loaded = nats.rss_kib()?;
    let _ = holder.kill();
    let _ = holder.wait();
    let opened = held.opened.max(1) as f64;
    let grown: u64 = loaded
        .iter()
        .zip(&empty)
        .map(|(l, e)| l.saturating_sub(*e))
        .sum();
    Ok(Idle {
        connections_per_node: held.opened / 2,
        relay_kib_per_connection: grown as f64 / opened,
        nats_kib_per_connection: nats_loaded.saturating_sub(nats_empty) as f64 / opened,
    })
}

/// The medians of each workload and arm. Ratios are the medians of each repetition's
/// ratio — of two runs made one after the other — not ratios of medians: this machine's
/// speed drifts between repetitions by more than the differences measured (a bridge run
/// moved from 44k to 32k msgs/s within one benchmark), and adjacent runs share most of it.
fn summarize(runs: &[Run]) -> Vec<Row> {
    let mut rows = Vec::new();
    for w in WORKLOADS {
        let pick = |arm: Arm, f: &dyn Fn(&Run) -> f64| -> f64 {
            median(
                runs.iter()
                    .filter(|r| r.workload == w.name && r.arm == arm)
                    .map(f)
                    .collect(),
            )
        };
        for arm in Arm::ALL {
            let busiest = pick(arm, &|r| {
                r.relay_cpu_us_per_msg
                    .iter()
                    .copied()
                    .fold(r.nats_cpu_us_per_msg, f64::max)
            });
            rows.push(Row {
                workload: w.name,
                arm,
                msgs_per_sec: pick(arm, &|r| r.load.msgs_per_sec),
                ratio_to_single: median(paired(runs, w.name, arm, Arm::Single)),
                ratio_to_bridge: median(paired(runs, w.name, arm, Arm::Bridge)),
                p50_us: pick(arm, &|r| r.load.latency_us.p50 as f64),
                p99_us: pick(arm, &|r| r.load.latency_us.p99 as f64),
                relay_cpu_us_per_msg: pick(arm, &|r| r.relay_cpu_us_per_msg.iter().sum()),
                nats_cpu_us_per_msg: pick(arm, &|r| r.nats_cpu_us_per_msg),
                msgs_per_sec_one_core_each: 1e6 / busiest,
            });
        }
    }
    rows
}

/// `arm`'s msgs/s over `base`'s, one ratio per repetition of `workload`.
fn paired(runs: &[Run], workload: &str, arm: Arm, base: Arm) -> Vec<f64> {
    let rate = |arm: Arm, rep: usize| {
        runs.iter()
            .find(|r| r.workload == workload && r.arm == arm && r.rep == rep)
            .map(|r| r.load.msgs_per_sec)
    };
    runs.iter()
        .filter(|r| r.workload == workload && r.arm == arm)
        .filter_map(|r| Some(r.load.msgs_per_sec / rate(base, r.rep)?))
        .collect()
}

fn markdown(report: &ClusterReport) -> String {
    let mut out = format!(
        "Measured {} on {} ({}; {} s per run, {} repetition(s), arms alternating, medians; \
         ratios are medians of each repetition's ratio; every process and the load \
         generator share the machine):\n\n\
         | workload | arm | msgs/s | ratio to single | ratio to bridge | p50 → p99 µs | relay CPU µs/msg | nats CPU µs/msg | msgs/s with a core per process |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        report.date,
        report.machine["cpus"].as_str().unwrap_or("?"),
        report.machine["kernel"].as_str().unwrap_or("?"),
        report.secs_per_run,
        report.repetitions,
    );
    for row in &report.summary {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.2}× | {:.2}× | {:.0} → {:.0} | {:.1} | {:.1} | {:.0} |\n",
            row.workload,
            row.arm.label(),
            row.msgs_per_sec,
            row.ratio_to_single,
            row.ratio_to_bridge,
            row.p50_us,
            row.p99_us,
            row.relay_cpu_us_per_msg,
            row.nats_cpu_us_per_msg,
            row.msgs_per_sec_one_core_each,
        ));
    }
    out.push_str(&format!(
        "\nIdle, two nodes with {} INITed connections each: {:.1} KiB of relay RSS per \
         connection, {:.2} KiB of nats-server RSS per connection.\n",
        report.idle.connections_per_node,
        report.idle.relay_kib_per_connection,
        report.idle.nats_kib_per_connection
    ));
    out.push_str("\nTargets (issue #23):\n\n");
    for (check, _) in targets(&report.runs) {
        out.push_str(&format!("- {check}\n"));
    }
    out
}

/// One line per target — the median of the repetitions' ratios, their range, the bound and
/// whether it was met — with whether it was met.
fn targets(runs: &[Run]) -> Vec<(String, bool)> {
    let checks = [
        (
            Arm::Cross,
            Arm::Bridge,
            "across nodes / bare bridge",
            MIN_CROSS_TO_BRIDGE,
        ),
        (
            Arm::CrossV2,
            Arm::Cross,
            "resumable / version 1 across nodes",
            MIN_V2_TO_V1,
        ),
    ];
    let mut lines = Vec::new();
    for (arm, base, what, bound) in checks {
        for w in WORKLOADS {
            let ratios = paired(runs, w.name, arm, base);
            let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let ratio = median(ratios);
            let met = ratio >= bound;
            let line = format!(
                "{}: {what} = {ratio:.2}× (repetitions {low:.2}–{high:.2}×; ≥ {bound:.2}×: {})",
                w.name,
                if met { "met" } else { "MISSED" }
            );
            lines.push((line, met));
        }
    }
    lines
}

fn draw(report: &ClusterReport, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (1200, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let panels = root.split_evenly((1, WORKLOADS.len() + 1));
    for (panel, w) in panels.iter().zip(WORKLOADS) {
        let bars: Vec<(&str, f64)> = report
            .summary
            .iter()
            .filter(|r| r.workload == w.name)
            .map(|r| (short(r.arm), r.msgs_per_sec / 1000.0))
            .collect();
        crate::chart::bar_panel(panel, &format!("{}: k msgs/s", w.name), &bars)?;
    }
    let cpu: Vec<(&str, f64)> = report
        .summary
        .iter()
        .filter(|r| r.workload == WORKLOADS[0].name)
        .map(|r| (short(r.arm), r.relay_cpu_us_per_msg + r.nats_cpu_us_per_msg))
        .collect();
    crate::chart::bar_panel(
        &panels[WORKLOADS.len()],
        "CPU µs per message (relays + nats), pingpong 16",
        &cpu,
    )?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn short(arm: Arm) -> &'static str {
    match arm {
        Arm::Single => "single",
        Arm::Local => "same node",
        Arm::Cross => "across",
        Arm::CrossV2 => "across v2",
        Arm::Bridge => "bridge",
    }
}
