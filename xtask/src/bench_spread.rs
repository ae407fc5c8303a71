//! `cargo xtask bench --spread A.json B.json …`: how stable each ratio of `cargo xtask
//! bench` was across full runs — the same ratio from each results file side by side, and
//! its spread (largest minus smallest). A target met in one run only is not met.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::project_root;
use crate::report::{PERFORMANCE_DOC, replace_section};

/// The ratios compared: (section of the results file, label, field).
const RATIOS: &[(&str, &str, &str)] = &[
    ("summary", "msgs/s", "ratio"),
    ("summary", "relay CPU/msg", "cpu_ratio"),
    ("summary", "p99", "p99_ratio"),
    ("at_load", "p50", "p50_us_ratio"),
    ("at_load", "p99", "p99_us_ratio"),
    ("at_load", "relay CPU/msg", "cpu_us_per_msg_ratio"),
];

const DOC_START: &str = "<!-- bench-spread:start (written by `cargo xtask bench --spread`) -->";
const DOC_END: &str = "<!-- bench-spread:end -->";

pub(crate) fn run(files: &[PathBuf]) -> Result<()> {
    if files.len() < 2 {
        bail!("--spread needs at least two results files to compare");
    }
    let reports = files
        .iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            serde_json::from_str::<Value>(&text)
                .with_context(|| format!("{} is not a results file", f.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let table = markdown(files, &reports);
    println!("{table}");
    let section = format!("{table}\n");
    replace_section(
        &project_root(),
        PERFORMANCE_DOC,
        DOC_START,
        DOC_END,
        &section,
    )?;
    println!("updated the spread section of {PERFORMANCE_DOC}");
    Ok(())
}

fn name(file: &Path) -> String {
    file.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

fn row_name(section: &str, row: &Value) -> Option<String> {
    match section {
        "summary" => row["workload"].as_str().map(str::to_owned),
        _ => row["load"]
            .as_f64()
            .map(|l| format!("open loop at {:.0} %", l * 100.0)),
    }
}

fn markdown(files: &[PathBuf], reports: &[Value]) -> String {
    let mut out = format!(
        "Each ratio (compendium-server / baseline, medians of one full run) in {} full runs: {}.\n\n| workload | ratio of | {} | spread |\n|---|---|{}---|\n",
        files.len(),
        files
            .iter()
            .map(|f| format!("`{}`", name(f)))
            .collect::<Vec<_>>()
            .join(", "),
        files
            .iter()
            .map(|f| name(f))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(files.len()),
    );
    let Some(first) = reports.first() else {
        return out;
    };
    for section in ["summary", "at_load"] {
        for row in first[section].as_array().into_iter().flatten() {
            let Some(row_id) = row_name(section, row) else {
                continue;
            };
            for &(_, label, field) in RATIOS.iter().filter(|r| r.0 == section) {
                let values: Vec<Option<f64>> =
                    reports
                        .iter()
                        .map(|report| {
                            report[section].as_array()?.iter().find(|r| {
                                row_name(section, r).as_deref() == Some(row_id.as_str())
                            })?[field]
                                .as_f64()
                        })
                        .collect();
                if values.iter().all(Option::is_none) {
                    continue;
                }
                let known: Vec<f64> = values.iter().flatten().copied().collect();
                let spread = known.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                    - known.iter().copied().fold(f64::INFINITY, f64::min);
                let cells: Vec<String> = values
                    .iter()
                    .map(|v| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}×")))
                    .collect();
                out.push_str(&format!(
                    "| {row_id} | {label} | {} | {spread:.2} |\n",
                    cells.join(" | ")
                ));
            }
        }
    }
    out
}
