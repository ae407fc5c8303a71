//! What every measuring chore stamps on its results: the date, the machine, and the
//! section of docs/performance.md it owns.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Today's date (UTC), as YYYY-MM-DD.
pub(crate) fn today() -> Result<String> {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .context("running date")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// CPUs and kernel, for the record.
pub(crate) fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_default();
    json!({"cpus": format!("{cpus} CPUs"), "kernel": kernel})
}

/// The document the measuring chores write their summaries into.
pub(crate) const PERFORMANCE_DOC: &str = "docs/performance.md";

/// Replace what lies between the `start` and `end` marker lines of `doc` (relative to the
/// repository root; the start marker is kept) with `content`.
pub(crate) fn replace_section(
    root: &Path,
    doc: &str,
    start: &str,
    end: &str,
    content: &str,
) -> Result<()> {
    let path = root.join(doc);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {doc}"))?;
    let (Some(from), Some(to)) = (text.find(start), text.find(end)) else {
        bail!("{doc} has no {start} … {end} section");
    };
    let updated = format!("{}{start}\n{content}{}", &text[..from], &text[to..]);
    std::fs::write(&path, updated).with_context(|| format!("writing {doc}"))?;
    Ok(())
}
