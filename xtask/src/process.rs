//! Release builds of the relay and the load generator, and a relay process to measure:
//! shared by `cargo xtask bench` and `cargo xtask soak`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

/// A server process, the URL it printed once bound, and its metrics address if it
/// printed one. Killed when dropped.
pub(crate) struct Running {
    child: Child,
    pub(crate) url: String,
    pub(crate) metrics: Option<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Start `command` and wait for its "listening on URL" line (and, when its arguments
    /// include `--metrics-listen`, its "metrics on http://ADDR" line).
    pub(crate) fn start(mut command: Command) -> Result<Self> {
        let wants_metrics = command.get_args().any(|a| a == "--metrics-listen");
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .context("starting the server")?;
        // Servers print the line on stderr (ours) or stdout (the baseline); drain both
        // pipes on threads so a chatty server never blocks on them.
        let (tx, rx) = mpsc::channel::<String>();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let (mut url, mut metrics) = (None, None);
        while url.is_none() || (wants_metrics && metrics.is_none()) {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .context("the server printed no listening line")?;
            if let Some(u) = word_after(&line, "listening on ") {
                url = Some(u);
            } else if let Some(m) = word_after(&line, "metrics on http://") {
                metrics = Some(
                    m.trim_end_matches(',')
                        .trim_end_matches("/metrics")
                        .to_owned(),
                );
            }
        }
        Ok(Self {
            child,
            url: url.unwrap_or_default(),
            metrics,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }

    /// Open file descriptors, from /proc.
    pub(crate) fn open_fds(&self) -> Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .context("reading /proc/PID/fd")?
            .count())
    }

    /// The server's /metrics text.
    pub(crate) fn metrics_text(&self) -> Result<String> {
        let addr = self
            .metrics
            .as_deref()
            .context("the server was started without --metrics-listen")?;
        let mut stream = std::net::TcpStream::connect(addr).context("connecting to /metrics")?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: relay\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }
}

/// The value of the sample named exactly `name` (labels included) in a metrics text; a
/// labelled counter that was never touched is absent, and counts as 0.
pub(crate) fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn word_after(line: &str, marker: &str) -> Option<String> {
    line.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

/// Resident memory of `pid`, in KiB, from /proc.
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}
