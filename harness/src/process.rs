//! [`Process`]: a child whose output is drained line by line, with its resources from
//! /proc.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A spawned process whose stdout and stderr are drained on threads (so it can never block
/// on a full pipe) and handed over line by line. Killed when dropped.
pub struct Process {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Spawn `command`, with stdin closed and both output pipes drained; `name` is for
    /// error messages.
    ///
    /// # Errors
    /// If it cannot be spawned (the error names the program).
    pub fn spawn(name: &str, mut command: Command) -> Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        let (tx, lines) = mpsc::channel();
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for pipe in pipes.into_iter().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Read further output lines, at most `within`, until `pick` returns something.
    ///
    /// # Errors
    /// If the process ends or `within` passes first; the error quotes its last lines.
    pub fn wait_for<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = pick(&line);
                    self.seen.push(line);
                    if let Some(found) = found {
                        return Ok(found);
                    }
                }
                Err(err) => {
                    let how = match err {
                        mpsc::RecvTimeoutError::Timeout => format!("nothing within {within:?}"),
                        mpsc::RecvTimeoutError::Disconnected => match self.child.try_wait() {
                            Ok(Some(status)) => format!("it exited ({status})"),
                            _ => "its output ended".to_owned(),
                        },
                    };
                    let tail: Vec<&str> = self
                        .seen
                        .iter()
                        .rev()
                        .take(30)
                        .rev()
                        .map(String::as_str)
                        .collect();
                    bail!("{}: {how}; its last lines:\n{}", self.name, tail.join("\n"));
                }
            }
        }
    }

    /// The next output line containing `needle`, waiting at most `within`.
    ///
    /// # Errors
    /// As [`Process::wait_for`].
    pub fn wait_for_line(&mut self, needle: &str, within: Duration) -> Result<String> {
        self.wait_for(within, |line| {
            line.contains(needle).then(|| line.to_owned())
        })
    }

    /// Every output line read so far, and any that arrived since, without waiting.
    pub fn lines(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by name (`HUP`, `TERM`, ...), as `kill -s NAME` does.
    ///
    /// # Errors
    /// If `kill` cannot be run or fails (the process is gone, say).
    pub fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -s {name} {} failed", self.pid());
        }
        Ok(())
    }

    /// SIGTERM, then wait for it to exit (at most a minute: a process that ignores
    /// SIGTERM fails the caller instead of hanging it).
    ///
    /// # Errors
    /// If the signal cannot be sent, waiting fails, or it is still running after a minute
    /// (it is then killed).
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.terminate_within(Duration::from_secs(60))
    }

    /// SIGTERM, then wait at most `within` for it to exit.
    ///
    /// # Errors
    /// If the signal cannot be sent, waiting fails, or it is still running after `within`
    /// (it is then killed).
    pub fn terminate_within(&mut self, within: Duration) -> Result<ExitStatus> {
        self.signal("TERM")?;
        self.exit_within(within)
    }

    /// Wait at most `within` for it to exit by itself (after a signal sent earlier, say).
    ///
    /// # Errors
    /// If waiting fails, or it is still running after `within` (it is then killed).
    pub fn exit_within(&mut self, within: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for it to exit")? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                bail!(
                    "{} (pid {}) was still running after {} s; killed",
                    self.name,
                    self.pid(),
                    within.as_secs_f64()
                );
            }
            // std has no wait-with-timeout for a child; a short poll is the portable way.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Its exit status if it has exited (by itself: a crash, say), `None` while it runs.
    ///
    /// # Errors
    /// If its status cannot be read.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().context("looking at its status")
    }

    /// SIGKILL (`kill -9`): no chance to say goodbye. Returns once it is gone.
    ///
    /// # Errors
    /// If it cannot be killed or reaped.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill().context("kill -9")?;
        self.child.wait().context("waiting for it to die")?;
        Ok(())
    }

    /// Its resident memory in KiB.
    ///
    /// # Errors
    /// If it has exited.
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib_of(self.pid()).with_context(|| format!("{} has no VmRSS (gone?)", self.name))
    }

    /// Its open file descriptors.
    ///
    /// # Errors
    /// If it has exited.
    pub fn open_fds(&self) -> Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .with_context(|| format!("reading /proc/{}/fd", self.pid()))?
            .count())
    }

    /// The CPU time it has used so far.
    ///
    /// # Errors
    /// If it has exited.
    pub fn cpu_time(&self) -> Result<CpuTime> {
        cpu_time_of(self.pid()).with_context(|| format!("{} has no /proc stat (gone?)", self.name))
    }
}

/// Resident memory of process `pid`, in KiB; `None` once it is gone.
#[must_use]
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

/// CPU time a process has used, from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTime {
    /// In user mode.
    pub user: Duration,
    /// In the kernel on its behalf.
    pub system: Duration,
}

impl CpuTime {
    /// User plus system time.
    #[must_use]
    pub fn total(self) -> Duration {
        self.user + self.system
    }
}

/// The CPU time of process `pid`; `None` once it is gone. Clock ticks are taken as the
/// Linux default of 100 per second (`getconf CLK_TCK`; every mainstream kernel build).
#[must_use]
pub fn cpu_time_of(pid: u32) -> Option<CpuTime> {
    const TICKS_PER_SEC: u64 = 100;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count fields
    // from after its closing parenthesis. utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    let ticks = |t: u64| Duration::from_millis(t * 1000 / TICKS_PER_SEC);
    Some(CpuTime {
        user: ticks(user),
        system: ticks(system),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_awaited_and_a_silent_exit_is_reported_with_what_it_said() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo one; echo two >&2; exit 3"]);
        let mut process = Process::spawn("sh", command).expect("spawn");
        assert_eq!(
            process
                .wait_for_line("two", Duration::from_secs(10))
                .expect("line"),
            "two"
        );
        let err = process
            .wait_for_line("three", Duration::from_secs(10))
            .expect_err("it exits first");
        let err = format!("{err:#}");
        assert!(
            err.contains("sh: ") && err.contains("one") && err.contains("two"),
            "{err}"
        );
    }

    #[test]
    fn cpu_time_of_a_busy_process_grows() {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo done; sleep 30",
        ]);
        let mut process = Process::spawn("sh", command).expect("spawn");
        process
            .wait_for_line("done", Duration::from_secs(30))
            .expect("the loop ends");
        assert!(process.cpu_time().expect("stat").total() > Duration::ZERO);
        assert!(process.rss_kib().expect("rss") > 0);
        process.kill().expect("kill");
        assert!(process.cpu_time().is_err(), "gone after kill -9");
    }
}
