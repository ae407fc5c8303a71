//! The `compendium-server` binary as a child process: its startup line, its logs, its
//! memory and file descriptors (from /proc), and its /metrics — for tests that judge the
//! server from outside, as an operator would.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::PATIENCE;

/// The debug build of the relay, with a clean environment for logs.
pub fn server() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_compendium-server"));
    command.env_remove("RUST_LOG").env("NO_COLOR", "1");
    command
}

/// A running server process whose stderr is drained on a thread (so the server can never
/// block on a full pipe) and handed over line by line. Killed when dropped.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first (further) stderr line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(err) => panic!(
                    "no line with {needle:?} ({err}); saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The `ws://` URL from the startup line.
    pub fn url(&mut self) -> String {
        let line = self.wait_for_line("listening on ");
        word_after(&line, "listening on ")
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.child.wait().expect("wait").code()
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(self.child.id()).expect("VmRSS in /proc/PID/status")
    }

    /// Open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("/proc/PID/fd")
            .count()
    }
}

/// A server started with `args` plus `--listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0`.
pub struct Relay {
    pub process: Running,
    pub url: String,
    metrics: String,
}

impl Relay {
    pub fn start(args: &[&str]) -> Self {
        let mut command = server();
        command
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info");
        let mut process = Running::spawn(command);
        let (mut url, mut metrics) = (None, None);
        while url.is_none() || metrics.is_none() {
            let line = process.wait_for_line(" on ");
            if line.contains("listening on ") {
                url = Some(word_after(&line, "listening on "));
            } else if line.contains("metrics on http://") {
                let address = word_after(&line, "metrics on http://");
                metrics = Some(
                    address
                        .trim_end_matches(',')
                        .trim_end_matches("/metrics")
                        .to_owned(),
                );
            }
        }
        let (Some(url), Some(metrics)) = (url, metrics) else {
            unreachable!("the loop ends when both are known")
        };
        Self {
            process,
            url,
            metrics,
        }
    }

    /// The value of the metric sample named exactly `name` (with its labels, if any).
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text();
        sample(&text, name).unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
    }

    /// Like [`Relay::metric`], but a labelled counter that has not been touched yet
    /// (absent from the exposition) counts as 0.
    pub fn counter(&self, name: &str) -> f64 {
        sample(&self.metrics_text(), name).unwrap_or(0.0)
    }

    pub fn metrics_text(&self) -> String {
        let mut stream = std::net::TcpStream::connect(&self.metrics).expect("metrics connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read metrics");
        response
    }

    /// Poll the metric until `done` holds (the server is another process: there is no
    /// event to await); panics with the last value after [`PATIENCE`].
    pub fn wait_for_metric(&self, name: &str, done: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.metric(name);
            if done(value) {
                return value;
            }
            assert!(Instant::now() < deadline, "{name} stuck at {value}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn rss_kib(&self) -> u64 {
        self.process.rss_kib()
    }

    pub fn open_fds(&self) -> usize {
        self.process.open_fds()
    }
}

fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn word_after(line: &str, marker: &str) -> String {
    line.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("nothing after {marker:?} in {line:?}"))
        .to_owned()
}

/// Resident memory of process `pid`, in KiB; `None` once it is gone.
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
