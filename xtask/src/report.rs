//! What every measuring chore stamps on its results: the date, the machine, and the
//! README section it owns.

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

/// Replace what lies between the `start` and `end` marker lines of README.md (the start
/// marker is kept) with `content`.
pub(crate) fn replace_readme_section(
    root: &Path,
    start: &str,
    end: &str,
    content: &str,
) -> Result<()> {
    let path = root.join("README.md");
    let readme = std::fs::read_to_string(&path).context("reading README.md")?;
    let (Some(from), Some(to)) = (readme.find(start), readme.find(end)) else {
        bail!("README.md has no {start} … {end} section");
    };
    let updated = format!("{}{start}\n{content}{}", &readme[..from], &readme[to..]);
    std::fs::write(&path, updated).context("writing README.md")?;
    Ok(())
}
