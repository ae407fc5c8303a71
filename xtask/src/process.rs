//! Release builds of the relay, the baseline and the load generator, shared by
//! `cargo xtask bench` and `cargo xtask soak` (the processes themselves are run and
//! observed through `compendium-harness`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Build compendium-server, the bare baseline relay and compendium-conformance (the load
/// generator) in release mode.
pub(crate) fn build_release(root: &Path) -> Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "compendium-server",
            "--bin",
            "compendium-server",
            "--example",
            "bare_relay",
            "--example",
            "bare_nats_bridge",
            "-p",
            "compendium-conformance",
            "--bin",
            "compendium-conformance",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building the release binaries failed");
    }
    Ok(())
}
