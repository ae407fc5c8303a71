//! `cargo xtask bench`, resumable sessions (protocol version 2): what version 2 costs,
//! ours against ours in the same run. Pingpong 16×256 B with and without `--resumable`
//! (A/B alternating, fresh relay per run), targets ≥ 0.90× msgs/s; RSS per idle version 2
//! connection, target ≤ 8 KiB; and resume latency with a full replay buffer (256 messages
//! of 256 B, the default `--resume-buffer`), measured, not judged.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use compendium_conformance::load::ResumeReport;

use crate::bench::{
    Plan, Server, Workload, closed_loop, idle_run, load_command, measured_run, median, start,
};

const PINGPONG: Workload = Workload {
    name: "pingpong 16×256 B",
    mode: "pingpong",
    pairs: 16,
    size: 256,
    window: 1,
    min_ratio: 0.90,
};

/// Version 2 / version 1 msgs/s on [`PINGPONG`] must be at least this.
const MIN_RATIO: f64 = 0.90;
/// RSS per idle version 2 connection must be at most this.
const MAX_IDLE_KIB: f64 = 8.0;
/// Messages waiting at each measured resume: the default `--resume-buffer`.
const BUFFERED: usize = 256;

/// Run the version 2 measurements; their summary for the results file.
pub(crate) fn run(bin: &Path, plan: &Plan) -> Result<Value> {
    let mut runs = Vec::new();
    for rep in 0..plan.reps {
        for resumable in [false, true] {
            let mut args = closed_loop(&PINGPONG, plan.secs);
            if resumable {
                args.push("--resumable".into());
            }
            let result = measured_run(bin, Server::Ours, &args, plan.pin)
                .with_context(|| format!("{} resumable={resumable}", PINGPONG.name))?;
            let version = if resumable { 2 } else { 1 };
            eprintln!(
                "{:<22} version {version}        rep {}: {:>9.0} msgs/s  {:>5.1} µs CPU/msg{}",
                PINGPONG.name,
                rep + 1,
                result.load.msgs_per_sec,
                result.cpu_us_per_msg,
                if result.load.valid { "" } else { "  INVALID" }
            );
            runs.push(json!({"version": version, "rep": rep + 1, "result": result.to_json()?}));
        }
    }
    let mut idle = Vec::new();
    for rep in 0..plan.reps {
        let m = idle_run(bin, Server::Ours, plan.idle, &["--resumable"])
            .context("idle version 2 connections")?;
        eprintln!(
            "idle {} version 2 rep {}: {:.1} KiB per connection",
            plan.idle,
            rep + 1,
            m["kib_per_connection"].as_f64().unwrap_or_default()
        );
        idle.push(m);
    }
    let resume = resume_run(bin)?;
    eprintln!(
        "resume with {BUFFERED} messages waiting: p50 {} µs, max {} µs",
        resume.resume_us.p50, resume.resume_us.max
    );
    Ok(summarize(&runs, &idle, &resume))
}

fn resume_run(bin: &Path) -> Result<ResumeReport> {
    let running = start(bin, Server::Ours)?;
    let output = load_command(bin, running.url())
        .args(["--resume", &BUFFERED.to_string(), "--size", "256"])
        .output()
        .context("running the load generator")?;
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "load --resume output: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn summarize(runs: &[Value], idle: &[Value], resume: &ResumeReport) -> Value {
    let pick = |version: u64, field: &str| {
        median(
            runs.iter()
                .filter(|r| r["version"] == version)
                .map(|r| r["result"][field].as_f64().unwrap_or(f64::NAN))
                .collect(),
        )
    };
    let (v1, v2) = (pick(1, "msgs_per_sec"), pick(2, "msgs_per_sec"));
    let (v1_cpu, v2_cpu) = (
        pick(1, "server_cpu_us_per_msg"),
        pick(2, "server_cpu_us_per_msg"),
    );
    let valid = runs.iter().all(|r| r["result"]["valid"] == true);
    let kib = median(
        idle.iter()
            .map(|m| m["kib_per_connection"].as_f64().unwrap_or(f64::NAN))
            .collect(),
    );
    json!({
        "workload": PINGPONG.name,
        "v1_msgs_per_sec": v1, "v2_msgs_per_sec": v2, "ratio": v2 / v1,
        "v1_cpu_us_per_msg": v1_cpu, "v2_cpu_us_per_msg": v2_cpu,
        "valid": valid, "met": valid && v2 / v1 >= MIN_RATIO,
        "idle_connections": idle.first().map(|m| m["connections"].clone()),
        "idle_kib_per_connection": kib, "idle_met": kib <= MAX_IDLE_KIB,
        "resume": resume,
        "runs": runs, "idle": idle,
    })
}

/// The version 2 section of the results table (empty for a results file without one).
pub(crate) fn markdown(report: &Value) -> String {
    let r = &report["resumable"];
    if r.is_null() {
        return String::new();
    }
    let yes = |met: &Value| if *met == true { "yes" } else { "**no**" };
    let f = |key: &str| r[key].as_f64().unwrap_or(f64::NAN);
    format!(
        "\nResumable sessions (protocol version 2), compendium-server against itself in the \
         same run:\n\n\
         | measure | version 1 | version 2 | ratio | target | met |\n|---|---|---|---|---|---|\n\
         | {} | {:.0} msgs/s, {:.1} µs CPU/msg | {:.0} msgs/s, {:.1} µs CPU/msg | {:.2}× | ≥ {MIN_RATIO:.2}× msgs/s | {} |\n\
         | {} idle connections after INIT | | {:.1} KiB/conn | | ≤ {MAX_IDLE_KIB:.0} KiB | {} |\n\
         | resume, {} messages of {} B waiting (connect → last replayed) | | p50 {:.1} ms, max {:.1} ms | | measured | |\n",
        r["workload"].as_str().unwrap_or("?"),
        f("v1_msgs_per_sec"),
        f("v1_cpu_us_per_msg"),
        f("v2_msgs_per_sec"),
        f("v2_cpu_us_per_msg"),
        f("ratio"),
        yes(&r["met"]),
        r["idle_connections"],
        f("idle_kib_per_connection"),
        yes(&r["idle_met"]),
        r["resume"]["buffered"],
        r["resume"]["size"],
        r["resume"]["resume_us"]["p50"].as_f64().unwrap_or(f64::NAN) / 1000.0,
        r["resume"]["resume_us"]["max"].as_f64().unwrap_or(f64::NAN) / 1000.0,
    )
}
