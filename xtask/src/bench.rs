//! `cargo xtask bench`: compendium-server against a bare baseline relay, measured with
//! the project's own load generator, reported as ratios of medians from the same run.
//!
//! Both servers are built in release mode. Every workload runs A/B/A/B… (baseline, ours)
//! with a fresh server process per run, and each run also reads the server's CPU time
//! (user + system, /proc) before and after, for µs of relay CPU per delivered message.
//! Then latency at equal load (`bench_load`): both relays in open loop at fixed fractions
//! of the baseline's closed-loop maximum. Idle-connection memory is the server's RSS with
//! N connections open minus its RSS when empty. Writes `bench/results/<date>.{json,md,svg}`
//! and the results section of docs/performance.md.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use compendium_conformance::load::{IdleReport, LoadReport};
use compendium_harness::Relay;

use crate::pin::{Pinning, on_cpu};
use crate::process::build_release;
use crate::project_root;
use crate::report::{PERFORMANCE_DOC, machine, replace_section, today};
use crate::{bench_load, bench_resumable};

/// One row of the matrix.
pub(crate) struct Workload {
    pub(crate) name: &'static str,
    pub(crate) mode: &'static str,
    pub(crate) pairs: usize,
    pub(crate) size: usize,
    pub(crate) window: usize,
    /// Ours / baseline msgs/s must be at least this.
    pub(crate) min_ratio: f64,
}

/// Ours / baseline relay CPU per delivered message must be at most this, for every workload.
/// (Closed-loop p99 is shown but judged nowhere: at saturation on a shared machine it
/// measures the generator as much as the relay. Latency targets are set at equal load, in
/// `bench_load`.)
const MAX_CPU_RATIO: f64 = 1.0;

const MATRIX: &[Workload] = &[
    Workload {
        name: "pingpong 1×256 B",
        mode: "pingpong",
        pairs: 1,
        size: 256,
        window: 1,
        min_ratio: 0.95,
    },
    Workload {
        name: "pingpong 16×256 B",
        mode: "pingpong",
        pairs: 16,
        size: 256,
        window: 1,
        min_ratio: 0.95,
    },
    Workload {
        name: "pingpong 256×256 B",
        mode: "pingpong",
        pairs: 256,
        size: 256,
        window: 1,
        min_ratio: 0.95,
    },
    Workload {
        name: "pingpong 16×16 KiB",
        mode: "pingpong",
        pairs: 16,
        size: 16 << 10,
        window: 1,
        min_ratio: 0.95,
    },
    Workload {
        name: "pingpong 256×16 KiB",
        mode: "pingpong",
        pairs: 256,
        size: 16 << 10,
        window: 1,
        min_ratio: 0.95,
    },
    Workload {
        name: "flood 16×256 B w64",
        mode: "flood",
        pairs: 16,
        size: 256,
        window: 64,
        min_ratio: 0.90,
    },
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Server {
    Baseline,
    Ours,
}

impl Server {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Ours => "compendium-server",
        }
    }
}

pub(crate) struct Plan {
    pub(crate) quick: bool,
    pub(crate) secs: f64,
    pub(crate) reps: usize,
    pub(crate) idle: usize,
    many_idle: Option<usize>,
    pub(crate) pin: Option<Pinning>,
}

pub(crate) fn run(quick: bool, pin: bool) -> Result<()> {
    let pin = if pin {
        Some(Pinning::two_cores()?)
    } else {
        None
    };
    let plan = if quick {
        Plan {
            quick,
            secs: 1.5,
            reps: 1,
            idle: 2_000,
            many_idle: None,
            pin,
        }
    } else {
        Plan {
            quick,
            secs: 5.0,
            reps: 3,
            idle: 10_000,
            many_idle: Some(19_000),
            pin,
        }
    };
    let root = project_root();
    build_release(&root)?;
    let bin = root.join("target/release");

    let mut runs = Vec::new();
    for workload in MATRIX {
        for rep in 0..plan.reps {
            for server in [Server::Baseline, Server::Ours] {
                let result =
                    measured_run(&bin, server, &closed_loop(workload, plan.secs), plan.pin)
                        .with_context(|| format!("{} on {}", workload.name, server.label()))?;
                eprintln!(
                    "{:<22} {:<18} rep {}: {:>9.0} msgs/s  p99 {:>6} µs  {:>5.1} µs CPU/msg{}",
                    workload.name,
                    server.label(),
                    rep + 1,
                    result.load.msgs_per_sec,
                    result.load.latency_us.p99,
                    result.cpu_us_per_msg,
                    if result.load.valid { "" } else { "  INVALID" }
                );
                runs.push(json!({"workload": workload.name, "server": server.label(), "rep": rep + 1, "result": result.to_json()?}));
            }
        }
    }

    let open_runs = bench_load::run(&bin, &runs, &plan)?;

    let mut memory = Vec::new();
    for server in [Server::Baseline, Server::Ours] {
        for rep in 0..plan.reps {
            let m = idle_run(&bin, server, plan.idle, &[])
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
            let m = idle_run(&bin, Server::Ours, count, &[]).context("many idle connections")?;
            eprintln!("idle {count} on compendium-server: {} opened", m["opened"]);
            Some(m)
        }
        None => None,
    };

    let resumable = bench_resumable::run(&bin, &plan)?;

    let summary = summarize(&runs, &memory, many.as_ref(), plan.idle);
    let at_load = bench_load::summarize(&open_runs);
    let date = today()?;
    let report = json!({
        "date": date,
        "quick": plan.quick,
        "secs_per_run": plan.secs,
        "repetitions": plan.reps,
        "machine": machine(),
        "pinned": plan.pin,
        "summary": summary,
        "at_load": at_load,
        "runs": runs,
        "open_runs": open_runs,
        "memory": memory,
        "many_idle": many,
        "resumable": resumable,
    });
    let dir = root.join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let stem = results_stem(&dir, &date, plan.quick, plan.pin.is_some());
    let table = markdown(&report);
    let svg = write_results(&dir, &stem, &report, &table)?;
    crate::chart::draw(&report, &svg)?;
    println!("{table}");
    println!("wrote bench/results/{stem}.json, .md, .svg");
    if !plan.quick && plan.pin.is_none() {
        update_doc(&root, &table, &format!("../bench/results/{stem}.svg"))?;
        println!("updated the results section of {PERFORMANCE_DOC}");
    }
    Ok(())
}

/// Judge a results file again from its raw runs, with the targets of this code: rewrite
/// its summaries (.json), table (.md) and chart (.svg), and for a full unpinned run the
/// results section of docs/performance.md.
pub(crate) fn rejudge(results: &Path) -> Result<()> {
    let text = std::fs::read_to_string(results)
        .with_context(|| format!("reading {}", results.display()))?;
    let mut report: Value = serde_json::from_str(&text).context("not a results file")?;
    let list = |key: &str| report[key].as_array().cloned().unwrap_or_default();
    let (runs, memory, open_runs) = (list("runs"), list("memory"), list("open_runs"));
    let idle = memory
        .first()
        .and_then(|m| m["result"]["connections"].as_u64())
        .and_then(|n| usize::try_from(n).ok())
        .context("the results file has no idle-memory runs")?;
    let many = report["many_idle"]
        .as_object()
        .map(|m| Value::Object(m.clone()));
    report["summary"] = json!(summarize(&runs, &memory, many.as_ref(), idle));
    report["at_load"] = json!(bench_load::summarize(&open_runs));
    let dir = results
        .parent()
        .context("results file without a directory")?;
    let stem = results
        .file_stem()
        .context("results file without a name")?
        .to_string_lossy()
        .into_owned();
    let table = markdown(&report);
    let svg = write_results(dir, &stem, &report, &table)?;
    crate::chart::draw(&report, &svg)?;
    println!("{table}");
    println!("rewrote {}.json, .md, .svg", stem);
    if report["quick"] != true && report["pinned"].is_null() {
        update_doc(
            &project_root(),
            &table,
            &format!("../bench/results/{stem}.svg"),
        )?;
        println!("updated the results section of {PERFORMANCE_DOC}");
    }
    Ok(())
}

pub(crate) fn start(bin: &Path, server: Server) -> Result<Relay> {
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

/// `<date>[-quick][-pinned]`, with `-2`, `-3`… if that results file exists already (a
/// second full run the same day must not overwrite the first: their spread is evidence).
fn results_stem(dir: &Path, date: &str, quick: bool, pinned: bool) -> String {
    let mut stem = date.to_owned();
    if quick {
        stem.push_str("-quick");
    }
    if pinned {
        stem.push_str("-pinned");
    }
    if quick {
        return stem;
    }
    let mut candidate = stem.clone();
    for n in 2.. {
        if !dir.join(format!("{candidate}.json")).exists() {
            break;
        }
        candidate = format!("{stem}-{n}");
    }
    candidate
}

/// One measured run: what the load generator reported, the server's RSS after it and the
/// server's CPU time per delivered message.
pub(crate) struct Throughput {
    pub(crate) load: LoadReport,
    server_rss_kib: u64,
    pub(crate) cpu_us_per_msg: f64,
}

impl Throughput {
    /// As stored in the results file: the load report plus `server_rss_kib` and
    /// `server_cpu_us_per_msg`.
    pub(crate) fn to_json(&self) -> Result<Value> {
        let mut value = serde_json::to_value(&self.load)?;
        value["server_rss_kib"] = json!(self.server_rss_kib);
        value["server_cpu_us_per_msg"] = json!(self.cpu_us_per_msg);
        Ok(value)
    }
}

/// The load generator's arguments for a closed-loop workload.
pub(crate) fn closed_loop(w: &Workload, secs: f64) -> Vec<String> {
    [
        "--pairs",
        &w.pairs.to_string(),
        "--size",
        &w.size.to_string(),
        "--secs",
        &secs.to_string(),
        "--mode",
        w.mode,
        "--window",
        &w.window.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Start `server`, run the load generator with `args` against it, and read the server's
/// RSS and CPU time. The CPU time is taken just before the generator starts and just after
/// it ends, so it includes setting up the pairs (a few ms) besides the messages.
pub(crate) fn measured_run(
    bin: &Path,
    server: Server,
    args: &[String],
    pin: Option<Pinning>,
) -> Result<Throughput> {
    let running = on_cpu(pin.map(|p| p.relay), || start(bin, server))??;
    let before = running.process.cpu_time()?.total();
    let url = running.url().to_owned();
    let output = on_cpu(pin.map(|p| p.generator), || {
        load_command(bin, &url).args(args).output()
    })?
    .context("running the load generator")?;
    let cpu = running.process.cpu_time()?.total().saturating_sub(before);
    let load: LoadReport = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("load output: {}", String::from_utf8_lossy(&output.stderr)))?;
    Ok(Throughput {
        cpu_us_per_msg: cpu.as_secs_f64() * 1e6 / load.messages.max(1) as f64,
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
pub(crate) fn hold_idle(
    bin: &Path,
    url: &str,
    count: usize,
    extra: &[&str],
) -> Result<(Child, IdleReport)> {
    let mut load = load_command(bin, url)
        .args(["--idle", &count.to_string(), "--secs", "120"])
        .args(extra)
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

/// Server RSS per idle connection; `extra`: more load generator arguments (`--resumable`).
pub(crate) fn idle_run(bin: &Path, server: Server, count: usize, extra: &[&str]) -> Result<Value> {
    let running = start(bin, server)?;
    let empty = running.process.rss_kib()?;
    let (mut load, held) = hold_idle(bin, running.url(), count, extra)?;
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

fn summarize(runs: &[Value], memory: &[Value], many: Option<&Value>, idle: usize) -> Vec<Value> {
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
        let cpu = |r: &Value| r["server_cpu_us_per_msg"].as_f64().unwrap_or(f64::NAN);
        let (base_cpu, ours_cpu) = (
            pick(w.name, Server::Baseline, &cpu),
            pick(w.name, Server::Ours, &cpu),
        );
        let cpu_ratio = ours_cpu / base_cpu;
        let ratio = ours / base;
        let p99_ratio = ours_p99 / base_p99;
        let valid = runs
            .iter()
            .filter(|r| r["workload"] == w.name)
            .all(|r| r["result"]["valid"] == true);
        let met = valid && ratio >= w.min_ratio && cpu_ratio <= MAX_CPU_RATIO;
        let target = format!("≥ {:.2}× msgs/s, CPU ≤ {MAX_CPU_RATIO:.1}×", w.min_ratio);
        rows.push(json!({
            "workload": w.name, "mode": w.mode, "pairs": w.pairs, "size": w.size,
            "baseline_msgs_per_sec": base, "ours_msgs_per_sec": ours, "ratio": ratio,
            "baseline_p99_us": base_p99, "ours_p99_us": ours_p99, "p99_ratio": p99_ratio,
            "baseline_cpu_us_per_msg": base_cpu, "ours_cpu_us_per_msg": ours_cpu, "cpu_ratio": cpu_ratio,
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
        "workload": format!("{idle} idle connections after INIT"),
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
    let pinned = match report["pinned"].as_object() {
        Some(pin) => format!(
            "; relay pinned to CPU {}, load generator to CPU {}",
            pin["relay"], pin["generator"]
        ),
        None => "; relay and load generator sharing the CPUs".to_owned(),
    };
    let mut out = format!(
        "Measured {} on {} ({}; {} s per run, {} repetition(s), A/B alternating, medians{pinned}).\n\n\
         Closed loop (each sender waits for its window; throughput at saturation):\n\n\
         | workload | baseline | compendium-server | ratio | relay CPU µs/msg baseline → ours | p99 baseline → ours | target | met |\n|---|---|---|---|---|---|---|---|\n",
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
                "| {} | {:.0} msgs/s | {:.0} msgs/s | {:.2}× | {:.1} → {:.1} ({:.2}×) | {:.0} → {:.0} µs ({:.2}×) | {} | {met} |\n",
                row["workload"].as_str().unwrap_or("?"),
                base,
                row["ours_msgs_per_sec"].as_f64().unwrap_or(f64::NAN),
                row["ratio"].as_f64().unwrap_or(f64::NAN),
                row["baseline_cpu_us_per_msg"].as_f64().unwrap_or(f64::NAN),
                row["ours_cpu_us_per_msg"].as_f64().unwrap_or(f64::NAN),
                row["cpu_ratio"].as_f64().unwrap_or(f64::NAN),
                row["baseline_p99_us"].as_f64().unwrap_or(f64::NAN),
                row["ours_p99_us"].as_f64().unwrap_or(f64::NAN),
                row["p99_ratio"].as_f64().unwrap_or(f64::NAN),
                row["target"].as_str().unwrap_or(""),
            ));
        } else if let Some(base) = row["baseline_kib_per_connection"].as_f64() {
            out.push_str(&format!(
                "| {} | {:.1} KiB/conn | {:.1} KiB/conn | | | | {} | {met} |\n",
                row["workload"].as_str().unwrap_or("?"),
                base,
                row["ours_kib_per_connection"].as_f64().unwrap_or(f64::NAN),
                row["target"].as_str().unwrap_or(""),
            ));
        } else {
            out.push_str(&format!(
                "| {} | | {} opened, {:.1} KiB/conn | | | | {} | {met} |\n",
                row["workload"].as_str().unwrap_or("?"),
                row["opened"],
                row["ours_kib_per_connection"].as_f64().unwrap_or(f64::NAN),
                row["target"].as_str().unwrap_or(""),
            ));
        }
    }
    out.push_str(&bench_load::markdown(report));
    out.push_str(&bench_resumable::markdown(report));
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
