//! `cargo xtask rolling-restart`: the rolling-restart test of `client/tests/rolling_restart.rs`
//! for longer — more rounds (each restarts all three nodes in turn) and more pairs —
//! with its kill -9 variant, against a real nats-server (installed if missing).

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Run the rolling-restart tests with `rounds` rounds, `pairs` pairs of clients and
/// `messages` messages each way per pair.
pub(crate) fn run(rounds: u64, pairs: u64, messages: u64) -> Result<()> {
    if rounds == 0 || pairs == 0 || messages == 0 {
        bail!("--rounds, --pairs and --messages must be at least 1");
    }
    crate::test::provision_nats_server()?;
    eprintln!(
        "xtask rolling-restart: {rounds} round(s) of 3 restarts, {pairs} pairs, {messages} messages each way"
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(crate::project_root())
        .args([
            "test",
            "--release",
            "-p",
            "compendium-client",
            "--test",
            "rolling_restart",
            "--",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("COMPENDIUM_RESTART_ROUNDS", rounds.to_string())
        .env("COMPENDIUM_RESTART_PAIRS", pairs.to_string())
        .env("COMPENDIUM_RESTART_MESSAGES", messages.to_string())
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("the rolling restart lost, repeated or reordered something ({status}); see above");
    }
    Ok(())
}
