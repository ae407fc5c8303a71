//! `cargo xtask bench`: compendium-server against a bare baseline relay, measured with
//! the project's own load generator, reported as ratios of medians from the same run.
//!
//! Both servers are built in release mode. Every workload runs A/B/A/B… (baseline, ours)
//! with a fresh server process per run; idle-connection memory is the server's RSS (from
//! /proc) with N connections open minus its RSS when empty. Writes
//! `bench/results/<date>.{json,md,svg}` and the results section of docs/performance.md.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use compendium_conformance::load::{IdleReport, LoadReport};
use compendium_harness::Relay;

use crate::process::build_release;
use crate::project_root;
use crate::report::{PERFORMANCE_DOC, machine, replace_section, today};

/// One row of the matrix.
struct Workload {
    name: &'static str,
    mode: &'static str,
    pairs: usize,
    size: usize,
    window: usize,
    /// Ours / baseline msgs/s must be at least this.
    min_ratio: f64,
    /// Ours / baseline p99 must be at most this, where the issue sets a latency target.
    max_p99_ratio: Option<f64>,
}

const MATRIX: &[Workload] = &[
    Workload {
        name: "pingpong 1×256 B",
        mode: "pingpong",
        pairs: 1,
        size: 256,
        window: 1,
        min_ratio: 0.95,
        max_p99_ratio: Some(1.1),
    },
    Workload {
        name: "pingpong 16×256 B",
        mode: "pingpong",
        pairs: 16,
        size: 256,
        window: 1,
        min_ratio: 0.95,
        max_p99_ratio: Some(1.1),
    },
    Workload {
        name: "pingpong 256×256 B",
        mode: "pingpong",
        pairs: 256,
        size: 256,
        window: 1,
        min_ratio: 0.95,
        max_p99_ratio: Some(1.1),
    },
    Workload {
        name: "pingpong 16×16 KiB",
        mode: "pingpong",
        pairs: 16,
        size: 16 << 10,
        window: 1,
        min_ratio: 0.95,
        max_p99_ratio: None,
    },
    Workload {
        name: "pingpong 256×16 KiB",
        mode: "pingpong",
        pairs: 256,
        size: 16 << 10,
        window: 1,
        min_ratio: 0.95,
        max_p99_ratio: None,
    },
    Workload {
        name: "flood 16×256 B w64",
        mode: "flood",
        pairs: 16,
        size: 256,
        window: 64,
        min_ratio: 0.90,
        max_p99_ratio: None,
    },
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    Baseline,
    Ours,
}

impl Server {
    fn label(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Ours => "compendium-server",
        }
    }
}

struct Plan {
    quick: bool,
    secs: f64,
    reps: usize,
    idle: usize,
    many_idle: Option<usize>,
}

pub(crate) fn run(quick: bool) -> Result<()> {
    let plan = if quick {
        Plan {
            quick,
            secs: 1.5,
            reps: 1,
            idle: 2_000,
            many_idle: None,
        }
    } else {
        Plan {
            quick,
            secs: 5.0,
            reps: 3,
            idle: 10_000,
            many_idle: Some(19_000),
        }
    };
    let root = project_root();
    build_release(&root)?;
    let bin = root.join("target/release");

    let mut runs = Vec::new();
    for workload in MATRIX {
        for rep in 0..plan.reps {
            for server in [Server::Baseline, Server::Ours] {
                let result = throughput_run(&bin, server, workload, plan.secs)
                    .with_context(|| format!("{} on {}", workload.name, server.label()))?;
                eprintln!(
                    "{:<22} {:<18} rep {}: {:>9.0} msgs/s  p99 {:>6} µs{}",
                    workload.name,
                    server.label(),
                    rep + 1,
                    result.load.msgs_per_sec,
                    result.load.latency_us.p99,
                    if result.load.valid { "" } else { "  INVALID" }
                );
                runs.push(json!({"workload": workload.name, "server": server.label(), "rep": rep + 1, "result": result.to_json()?}));
            }
        }
    }

    let mut memory = Vec::new();
    for server in [Server::Baseline, Server::Ours] {
        for rep in 0..plan.reps {
            let m = idle_run(&bin, server, plan.idle)
                .with_context(|| format!("idle on {}", server.label()))?;
            eprintln!(
                "idle {} on {:<18} rep {}: {:.1} KiB per connection",
                plan.idle,
                server.label(),
                rep + 1,
                m["kib_per_connection"].as_f64().unwrap_or_default()
            );
            memory.push(json!({"server": server.label(), "rep": rep + 1, "result": m}));
        }
    }
    let many = match plan.many_idle {
        Some(count) => {
            let m = idle_run(&bin, Server::Ours, count).context("many idle connections")?;
            eprintln!("idle {count} on compendium-server: {} opened", m["opened"]);
            Some(m)
        }
        None => None,
    };

    let summary = summarize(&runs, &memory, many.as_ref(), &plan);
    let date = today()?;
    let report = json!({
        "date": date,
        "quick": plan.quick,
        "secs_per_run": plan.secs,
        "repetitions": plan.reps,
        "machine": machine(),
        "summary": summary,
        "runs": runs,
        "memory": memory,
        "many_idle": many,
    });
    let dir = root.join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let stem = if plan.quick {
        format!("{date}-quick")
    } else {
        date.clone()
    };
    let table = markdown(&report);
    let svg = write_results(&dir, &stem, &report, &table)?;
    crate::chart::draw(&report, &svg)?;
    println!("{table}");
    println!("wrote bench/results/{stem}.json, .md, .svg");
    if !plan.quick {
        update_doc(&root, &table, &format!("../bench/results/{stem}.svg"))?;
        println!("updated the results section of {PERFORMANCE_DOC}");
    }
    Ok(())
}

/// Redraw the chart of a results file, next to it.
pub(crate) fn redraw(results: &Path) -> Result<()> {
    let text = std::fs::read_to_string(results)
        .with_context(|| format!("reading {}", results.display()))?;
    let report: Value = serde_json::from_str(&text).context("not a results file")?;
    let svg = results.with_extension("svg");
    crate::chart::draw(&report, &svg)?;
    println!("wrote {}", svg.display());
    Ok(())
}

fn start(bin: &Path, server: Server) -> Result<Relay> {
    let command = match server {
        Server::Baseline => {
            let mut c = Command::new(bin.join("examples/bare_relay"));
            c.arg("127.0.0.1:0");
            c
        }
        Server::Ours => Relay::command(&bin.join("compendium-server")),
    };
    Relay::start(command)
}

pub(crate) fn load_command(bin: &Path, url: &str) -> Command {
    let mut command = Command::new(bin.join("compendium-conformance"));
    command.args(["load", "--url", url, "--json"]);
    command
}

/// One throughput run: what the load generator reported, and the server's RSS after it.
struct Throughput {
    load: LoadReport,
    server_rss_kib: u64,
}

impl Throughput {
    /// As stored in the results file: the load report plus `server_rss_kib`.
    fn to_json(&self) -> Result<Value> {
        let mut value = serde_json::to_value(&self.load)?;
        value["server_rss_kib"] = json!(self.server_rss_kib);
        Ok(value)
    }
}

fn throughput_run(bin: &Path, server: Server, w: &Workload, secs: f64) -> Result<Throughput> {
    let running = start(bin, server)?;
    let output = load_command(bin, running.url())
        .args([
            "--pairs",
            &w.pairs.to_string(),
            "--size",
            &w.size.to_string(),
            "--secs",
            &secs.to_string(),
        ])
        .args(["--mode", w.mode, "--window", &w.window.to_string()])
        .output()
        .context("running the load generator")?;
    let load: LoadReport = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("load output: {}", String::from_utf8_lossy(&output.stderr)))?;
    Ok(Throughput {
        load,
        server_rss_kib: running.process.rss_kib().unwrap_or(0),
    })
}

/// Write `<stem>.json` and `<stem>.md` into `dir`; returns the path the chart goes to.
pub(crate) fn write_results(
    dir: &Path,
    stem: &str,
    report: &impl serde::Serialize,
    table: &str,
) -> Result<std::path::PathBuf> {
    std::fs::write(
        dir.join(format!("{stem}.json")),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    std::fs::write(dir.join(format!("{stem}.md")), table)?;
    Ok(dir.join(format!("{stem}.svg")))
}

/// Start the load generator holding `count` idle connections to `url` (a comma list
/// spreads them) and wait until it says it holds them; kill the child when done measuring.
pub(crate) fn hold_idle(bin: &Path, url: &str, count: usize) -> Result<(Child, IdleReport)> {
    let mut load = load_command(bin, url)
        .args(["--idle", &count.to_string(), "--secs", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running the load generator")?;
    let stdout = load.stdout.take().context("load stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let held: IdleReport =
        serde_json::from_str(&line).with_context(|| format!("idle output: {line:?}"))?;
    Ok((load, held))
}

fn idle_run(bin: &Path, server: Server, count: usize) -> Result<Value> {
    let running = start(bin, server)?;
    let empty = running.process.rss_kib()?;
    let (mut load, held) = hold_idle(bin, running.url(), count)?;
    let loaded = running.process.rss_kib()?;
    let _ = load.kill();
    let _ = load.wait();
    let per = if held.opened > 0 {
        (loaded.saturating_sub(empty)) as f64 / held.opened as f64
    } else {
        f64::NAN
    };
    Ok(
        json!({"connections": count, "opened": held.opened, "failed": held.failed, "rss_empty_kib": empty, "rss_loaded_kib": loaded, "kib_per_connection": per}),
    )
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn summarize(runs: &[Value], memory: &[Value], many: Option<&Value>, plan: &Plan) -> Vec<Value> {
    let pick = |workload: &str, server: Server, field: &dyn Fn(&Value) -> f64| -> f64 {
        median(
            runs.iter()
                .filter(|r| r["workload"] == workload && r["server"] == server.label())
                .map(|r| field(&r["result"]))
                .collect(),
        )
    };
    let mut rows = Vec::new();
    for w in MATRIX {
        let rate = |r: &Value| r["msgs_per_sec"].as_f64().unwrap_or(f64::NAN);
        let p99 = |r: &Value| r["latency_us"]["p99"].as_f64().unwrap_or(f64::NAN);
        let (base, ours) = (
            pick(w.name, Server::Baseline, &rate),
            pick(w.name, Server::Ours, &rate),
        );
        let (base_p99, ours_p99) = (
            pick(w.name, Server::Baseline, &p99),
            pick(w.name, Server::Ours, &p99),
        );
        let ratio = ours / base;
        let p99_ratio = ours_p99 / base_p99;
        let valid = runs
            .iter()
            .filter(|r| r["workload"] == w.name)
            .all(|r| r["result"]["valid"] == true);
        let met =
            valid && ratio >= w.min_ratio && w.max_p99_ratio.is_none_or(|max| p99_ratio <= max);
        let target = match w.max_p99_ratio {
            Some(max) => format!("≥ {:.2}× msgs/s, p99 ≤ {max:.1}×", w.min_ratio),
            None => format!("≥ {:.2}× msgs/s", w.min_ratio),
        };
        rows.push(json!({
            "workload": w.name, "mode": w.mode, "pairs": w.pairs, "size": w.size,
            "baseline_msgs_per_sec": base, "ours_msgs_per_sec": ours, "ratio": ratio,
            "baseline_p99_us": base_p99, "ours_p99_us": ours_p99, "p99_ratio": p99_ratio,
            "valid": valid, "target": target, "met": met,
        }));
    }
    let per = |server: Server| {
        median(
            memory
                .iter()
                .filter(|m| m["server"] == server.label())
                .map(|m| {
                    m["result"]["kib_per_connection"]
                        .as_f64()
                        .unwrap_or(f64::NAN)
                })
                .collect(),
        )
    };
    let ours_kib = per(Server::Ours);
    rows.push(json!({
        "workload": format!("{} idle connections after INIT", plan.idle),
        "baseline_kib_per_connection": per(Server::Baseline), "ours_kib_per_connection": ours_kib,
        "target": "≤ 6 KiB RSS per connection", "met": ours_kib <= 6.0,
    }));
    if let Some(many) = many {
        let count = many["connections"].as_u64().unwrap_or(0);
        rows.push(json!({
            "workload": format!("{count} idle connections"),
            "opened": many["opened"], "ours_kib_per_connection": many["kib_per_connection"],
            "target": "holds them all", "met": many["opened"] == many["connections"],
        }));
    }
    rows
}

fn markdown(report: &Value) -> String {
    let mut out = format!(
        "Measured {} on {} ({}; {} s per run, {} repetition(s), A/B alternating, medians):\n\n\
         | workload | baseline | compendium-server | ratio | p99 baseline → ours | target | met |\n|---|---|---|---|---|---|---|\n",
        report["date"].as_str().unwrap_or("?"),
        report["machine"]["cpus"],
        report["machine"]["kernel"].as_str().unwrap_or("?"),
        report["secs_per_run"],
        report["repetitions"],
    );
    for row in report["summary"].as_array().into_iter().flatten() {
        let met = if row["met"] == true { "yes" } else { "**no**" };
        if let Some(base) = row["baseline_msgs_per_sec"].as_f64() {
            out.push_str(&format!(
                "| {} | {:.0} msgs/s | {:.0} msgs/s | {:.2}× | {:.0} → {:.0} µs ({:.2}×) | {} | {met} |\n",
                row["workload"].as_str().unwrap_or("?"),
                base,
                row["ours_msgs_per_sec"].as_f64().unwrap_or(f64::NAN),
                row["ratio"].as_f64().unwrap_or(f64::NAN),
                row["baseline_p99_us"].as_f64().unwrap_or(f64::NAN),
                row["ours_p99_us"].as_f64().unwrap_or(f64::NAN),
                row["p99_ratio"].as_f64().unwrap_or(f64::NAN),
                row["target"].as_str().unwrap_or(""),
            ));
        } else if let Some(base) = row["baseline_kib_per_connection"].as_f64() {
            out.push_str(&format!(
                "| {} | {:.1} KiB/conn | {:.1} KiB/conn | | | {} | {met} |\n",
                row["workload"].as_str().unwrap_or("?"),
                base,
                row["ours_kib_per_connection"].as_f64().unwrap_or(f64::NAN),
                row["target"].as_str().unwrap_or(""),
            ));
        } else {
            out.push_str(&format!(
                "| {} | | {} opened, {:.1} KiB/conn | | | {} | {met} |\n",
                row["workload"].as_str().unwrap_or("?"),
                row["opened"],
                row["ours_kib_per_connection"].as_f64().unwrap_or(f64::NAN),
                row["target"].as_str().unwrap_or(""),
            ));
        }
    }
    out
}

const DOC_START: &str = "<!-- bench:start (written by `cargo xtask bench`) -->";
const DOC_END: &str = "<!-- bench:end -->";

fn update_doc(root: &Path, table: &str, svg: &str) -> Result<()> {
    let section = format!(
        "{table}\n![throughput, p99 and memory: compendium-server vs the bare baseline]({svg})\n"
    );
    replace_section(root, PERFORMANCE_DOC, DOC_START, DOC_END, &section)
}
