//! Spawning and observing processes as an operator would, for tests and `cargo xtask`
//! (internal; not published): a relay binary and its readiness event, its log lines, its
//! memory, descriptors and CPU time from /proc, and its `/metrics`; any other server
//! (`nats-server`, a baseline relay) the same way.
//!
//! Nothing here sleeps to synchronise: readiness and log lines are awaited on the pipes;
//! only what another process keeps to itself (a metric reaching a value) is polled.

mod metrics;
mod nats;
mod process;
mod ready;

pub use metrics::{get_metrics, sample};
pub use nats::{Nats, NatsCluster, nats_server_binary};
pub use process::{CpuTime, Process, cpu_time_of, rss_kib_of};
pub use ready::Ready;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

/// How long anything in a test may take before it counts as hung: a guard, never what a
/// test waits for.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A `compendium-server` process that has said it is ready (its `ready` event), with the
/// URLs it serves and its metrics address. Killed when dropped.
pub struct Relay {
    /// The process, its log lines and its resources.
    pub process: Process,
    /// What the readiness event said.
    pub ready: Ready,
}

impl Relay {
    /// `compendium-server` at `bin` with JSON logs, `RUST_LOG=info` and no colour, listening
    /// on a free loopback port with metrics on another; add arguments, then [`Relay::start`].
    #[must_use]
    pub fn command(bin: &Path) -> Command {
        Self::command_on(bin, "127.0.0.1:0")
    }

    /// As [`Relay::command`], listening on `listen` (`IP:PORT`): a node restarted on the
    /// port its clients (or a load balancer) know.
    #[must_use]
    pub fn command_on(bin: &Path, listen: &str) -> Command {
        let mut command = Command::new(bin);
        command
            .args(["--listen", listen, "--metrics-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        command
    }

    /// Spawn `command` (a relay with `--log-format json`) and wait, at most [`PATIENCE`],
    /// for its readiness event.
    ///
    /// # Errors
    /// If it cannot be spawned, or exits or stays silent instead of becoming ready (the
    /// error quotes what it printed).
    pub fn start(command: Command) -> Result<Self> {
        let mut process = Process::spawn("compendium-server", command)?;
        let ready = process
            .wait_for(PATIENCE, Ready::parse)
            .context("waiting for the relay's ready event")?;
        Ok(Self { process, ready })
    }

    /// The first WebSocket URL it serves.
    #[must_use]
    pub fn url(&self) -> &str {
        self.ready.urls.first().map_or("", String::as_str)
    }

    /// Its `/metrics` text.
    ///
    /// # Errors
    /// If it was started without `--metrics-listen`, or the request fails.
    pub fn metrics_text(&self) -> Result<String> {
        let addr = self
            .ready
            .metrics
            .as_deref()
            .context("the relay serves no /metrics (no --metrics-listen)")?;
        get_metrics(addr)
    }

    /// The value of the sample named exactly `name` (labels included).
    ///
    /// # Errors
    /// If there is no such sample, or as [`Relay::metrics_text`].
    pub fn metric(&self, name: &str) -> Result<f64> {
        let text = self.metrics_text()?;
        sample(&text, name).with_context(|| format!("no sample {name} in:\n{text}"))
    }

    /// Like [`Relay::metric`], but a labelled counter never touched yet (absent from the
    /// exposition) reads as 0.
    ///
    /// # Errors
    /// As [`Relay::metrics_text`].
    pub fn counter(&self, name: &str) -> Result<f64> {
        Ok(sample(&self.metrics_text()?, name).unwrap_or(0.0))
    }

    /// Poll the metric until `done` holds, at most [`PATIENCE`]: the relay is another
    /// process, so there is no event to await. Returns the value that satisfied `done`.
    ///
    /// # Errors
    /// If it never does (the error has the last value), or the metrics cannot be read.
    pub fn wait_for_metric(&self, name: &str, done: impl Fn(f64) -> bool) -> Result<f64> {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let value = self.metric(name)?;
            if done(value) {
                return Ok(value);
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!("{name} stuck at {value} for {PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
