//! Latency at equal load: both relays in open loop (`compendium-conformance load --rate`)
//! at the same fixed rates, fractions of the baseline's closed-loop maximum, so neither is
//! judged at saturation (where a closed loop on a shared machine measures the generator as
//! much as the relay). Latency counts from each message's due time; a run whose generator
//! fell behind its timetable is INVALID and left out of the medians (the table says how
//! many were).

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::bench::{Plan, Server, measured_run, median};

/// Pairs and msg size of the open-loop runs, as in the closed-loop workload below.
const PAIRS: usize = 256;
const SIZE: usize = 256;

/// The closed-loop workload whose baseline maximum the rates are fractions of.
const REFERENCE: &str = "pingpong 256×256 B";

/// Load levels (fractions of the baseline's maximum) and the p99 ratio each must meet
/// (`None`: reported only).
const LEVELS: &[(f64, Option<f64>)] = &[(0.25, None), (0.5, Some(1.1)), (0.75, Some(1.0))];

/// Reads one number from a run's load report.
type Field = dyn Fn(&Value) -> Option<f64>;

/// Run every level, A/B alternating, `plan.reps` times; `closed` are the closed-loop runs
/// already made.
pub(crate) fn run(bin: &Path, closed: &[Value], plan: &Plan) -> Result<Vec<Value>> {
    let maximum = median(
        closed
            .iter()
            .filter(|r| r["workload"] == REFERENCE && r["server"] == Server::Baseline.label())
            .filter_map(|r| r["result"]["msgs_per_sec"].as_f64())
            .collect(),
    );
    if !maximum.is_finite() {
        bail!("no closed-loop baseline run of {REFERENCE} to take the rates from");
    }
    let mut runs = Vec::new();
    for &(load, _) in LEVELS {
        let rate = (maximum * load).round();
        let args: Vec<String> = [
            "--pairs",
            &PAIRS.to_string(),
            "--size",
            &SIZE.to_string(),
            "--secs",
            &plan.secs.to_string(),
            "--rate",
            &rate.to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        for rep in 0..plan.reps {
            for server in [Server::Baseline, Server::Ours] {
                let result = measured_run(bin, server, &args, plan.pin)
                    .with_context(|| format!("open loop at {rate} msgs/s on {}", server.label()))?;
                let l = &result.load.latency_us;
                eprintln!(
                    "open loop {:>3.0} % {:>7.0} msgs/s {:<18} rep {}: p50 {:>6} p99 {:>6} p99.9 {:>6} µs  {:>5.1} µs CPU/msg{}",
                    load * 100.0,
                    rate,
                    server.label(),
                    rep + 1,
                    l.p50,
                    l.p99,
                    l.p999,
                    result.cpu_us_per_msg,
                    if result.load.valid { "" } else { "  INVALID" }
                );
                runs.push(json!({"load": load, "rate": rate, "server": server.label(), "rep": rep + 1, "result": result.to_json()?}));
            }
        }
    }
    Ok(runs)
}

/// One row per level: medians of the valid runs of each relay, and the ratios.
pub(crate) fn summarize(runs: &[Value]) -> Vec<Value> {
    let mut rows = Vec::new();
    for &(load, max_p99) in LEVELS {
        let level: Vec<&Value> = runs.iter().filter(|r| r["load"] == load).collect();
        let rate = level
            .first()
            .map_or(f64::NAN, |r| r["rate"].as_f64().unwrap_or(f64::NAN));
        let invalid = level
            .iter()
            .filter(|r| r["result"]["valid"] != true)
            .count();
        let pick = |server: Server, field: &Field| {
            median(
                level
                    .iter()
                    .filter(|r| r["server"] == server.label() && r["result"]["valid"] == true)
                    .filter_map(|r| field(&r["result"]))
                    .collect(),
            )
        };
        let mut row =
            json!({"load": load, "rate": rate, "runs": level.len(), "invalid_runs": invalid});
        let fields: [(&str, &Field); 6] = [
            ("msgs_per_sec", &|r| r["msgs_per_sec"].as_f64()),
            ("p50_us", &|r| r["latency_us"]["p50"].as_f64()),
            ("p99_us", &|r| r["latency_us"]["p99"].as_f64()),
            ("p999_us", &|r| r["latency_us"]["p999"].as_f64()),
            ("cpu_us_per_msg", &|r| r["server_cpu_us_per_msg"].as_f64()),
            // The generator's own delay, the same for both relays: when a relay's p99 is
            // close to it, the tail is the machine's, not the relay's.
            ("send_lag_p99_us", &|r| {
                r["schedule"]["send_lag_us"]["p99"].as_f64()
            }),
        ];
        for (name, field) in fields {
            let (base, ours) = (pick(Server::Baseline, field), pick(Server::Ours, field));
            row[format!("baseline_{name}")] = json!(base);
            row[format!("ours_{name}")] = json!(ours);
            row[format!("{name}_ratio")] = json!(ours / base);
        }
        let p99_ratio = row["p99_us_ratio"].as_f64().unwrap_or(f64::NAN);
        row["target"] = json!(max_p99.map(|max| format!("p99 ≤ {max:.1}×")));
        row["met"] = json!(max_p99.map(|max| p99_ratio <= max));
        rows.push(row);
    }
    rows
}

/// The latency-at-load table, for the results file and docs/performance.md.
pub(crate) fn markdown(report: &Value) -> String {
    let Some(rows) = report["at_load"].as_array() else {
        return String::new();
    };
    let mut out = format!(
        "\nOpen loop ({PAIRS} pairs × {SIZE} B, the rate spread evenly over all senders; latency \
         from each message's due time) at fractions of the baseline's closed-loop maximum on \
         {REFERENCE}:\n\n\
         | load | rate | achieved baseline / ours | p50 baseline → ours | p99 baseline → ours | p99.9 baseline → ours | relay CPU µs/msg baseline → ours | generator send lag p99 | target | met |\n\
         |---|---|---|---|---|---|---|---|---|---|\n"
    );
    let f = |row: &Value, key: &str| row[key].as_f64().unwrap_or(f64::NAN);
    for row in rows {
        let pair = |name: &str| {
            format!(
                "{:.0} → {:.0} µs ({:.2}×)",
                f(row, &format!("baseline_{name}")),
                f(row, &format!("ours_{name}")),
                f(row, &format!("{name}_ratio"))
            )
        };
        let invalid = row["invalid_runs"].as_u64().unwrap_or(0);
        let met = match row["met"].as_bool() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        out.push_str(&format!(
            "| {:.0} %{} | {:.0} msgs/s | {:.0} / {:.0} | {} | {} | {} | {:.1} → {:.1} ({:.2}×) | {:.0} / {:.0} µs | {} | {met} |\n",
            f(row, "load") * 100.0,
            if invalid > 0 {
                format!(" ({invalid} of {} runs INVALID, left out)", row["runs"])
            } else {
                String::new()
            },
            f(row, "rate"),
            f(row, "baseline_msgs_per_sec"),
            f(row, "ours_msgs_per_sec"),
            pair("p50_us"),
            pair("p99_us"),
            pair("p999_us"),
            f(row, "baseline_cpu_us_per_msg"),
            f(row, "ours_cpu_us_per_msg"),
            f(row, "cpu_us_per_msg_ratio"),
            f(row, "baseline_send_lag_p99_us"),
            f(row, "ours_send_lag_p99_us"),
            row["target"].as_str().unwrap_or(""),
        ));
    }
    out
}
