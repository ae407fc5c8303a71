//! What a load run reports: the types `compendium-conformance load --json` prints, read
//! back by `cargo xtask bench` and `soak` through these same types.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::Mode;

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest.
    pub max: u64,
}

impl Latency {
    /// The percentiles of a histogram of µs.
    #[must_use]
    pub fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }

    fn text(&self) -> String {
        format!(
            "p50 {} p90 {} p99 {} p99.9 {} max {}",
            self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

/// How well an open-loop generator kept its timetable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleKept {
    /// The rate asked for, msgs/s over all pairs.
    pub rate: f64,
    /// Messages due before sending stopped.
    pub due: u64,
    /// Messages the senders sent of those (they may catch up for 0.1 s after the stop).
    pub sent: u64,
    /// How late messages were handed to the socket, from their due time: the generator's
    /// own delay (timer granularity, CPU), plus the relay's push-back when its socket
    /// buffer was full. Already included in `latency_us`.
    pub send_lag_us: Latency,
}

impl ScheduleKept {
    /// `sent / due`, 1.0 when nothing was due.
    #[must_use]
    pub fn kept(&self) -> f64 {
        if self.due == 0 {
            1.0
        } else {
            self.sent as f64 / self.due as f64
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    /// Pairs, size, mode, window as run.
    pub pairs: usize,
    /// msg size in bytes.
    pub size: usize,
    /// Mode.
    pub mode: Mode,
    /// Window per direction (0 in open loop).
    pub window: usize,
    /// Seconds of sending.
    pub secs: f64,
    /// DELIVERs received and verified.
    pub messages: u64,
    /// `messages` per second of the run: in open loop, the achieved rate.
    pub msgs_per_sec: f64,
    /// Delivery latency: in closed loop from each message's send, in open loop from the time
    /// it was due (coordinated omission corrected).
    pub latency_us: Latency,
    /// Open loop only: the timetable and how well it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleKept>,
    /// Connect/INIT/invalid/route/leave cycles the churn tasks completed.
    pub churn_cycles: u64,
    /// False if anything was lost, reordered, duplicated or changed, or (open loop) if the
    /// generator fell behind its timetable: such a run did not apply the load asked for.
    pub valid: bool,
    /// What was wrong, if anything (first few problems).
    pub problems: Vec<String>,
}

impl LoadReport {
    /// Human-readable summary.
    #[must_use]
    pub fn text(&self) -> String {
        let verdict = if self.valid {
            "VALID: every message arrived once, in order, unchanged".to_owned()
        } else {
            format!("INVALID: {}", self.problems.join("; "))
        };
        let churn = if self.churn_cycles > 0 {
            format!("{} churn cycles\n", self.churn_cycles)
        } else {
            String::new()
        };
        let pacing = match &self.schedule {
            Some(s) => format!(
                "open loop at {:.0} msgs/s: sent {} of {} due ({:.1} %), send lag µs: {}\n",
                s.rate,
                s.sent,
                s.due,
                s.kept() * 100.0,
                s.send_lag_us.text()
            ),
            None => String::new(),
        };
        let mode = match self.mode {
            Mode::Open => "open loop".to_owned(),
            mode => format!("{mode:?} (window {})", self.window),
        };
        format!(
            "{} pairs, {} B, {mode}, {:.1} s\n{} messages, {:.0} msgs/s\n{pacing}latency µs{}: {}\n{churn}{verdict}\n",
            self.pairs,
            self.size,
            self.secs,
            self.messages,
            self.msgs_per_sec,
            if self.schedule.is_some() {
                " (from due time)"
            } else {
                ""
            },
            self.latency_us.text(),
        )
    }
}

/// What `compendium-conformance load --idle N --json` prints once its connections are open
/// (one line, then it holds them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleReport {
    /// Connections asked for.
    pub idle: usize,
    /// Connections open and INITed.
    pub opened: usize,
    /// Connections that failed.
    pub failed: usize,
    /// The first few failures.
    pub errors: Vec<String>,
}
