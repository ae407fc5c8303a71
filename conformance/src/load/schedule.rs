//! The open-loop timetable, and the one rule that corrects coordinated omission.
//!
//! A closed-loop generator sends the next message only when the last one came back, so a
//! relay that stalls for a second delays one measurement by a second and silences the
//! hundred others that would have been sent meanwhile: its percentiles hide the stall
//! ("coordinated omission"). An open-loop sender instead owes message `k` at a fixed time
//! (`due(k)`) whatever happened before; when it could not send on time (its socket was
//! full, or it got no CPU), it sends everything overdue at once, and each message's latency
//! counts from when it was *due*, not from when it left. That is what wrk2 does, and what
//! HdrHistogram's `record_correct` reconstructs for a closed loop; the unit test below
//! checks that the two agree.

use std::ops::Range;
use std::time::Duration;

/// When one open-loop sender's messages are due: message `k` at `phase + k × interval` after
/// the run's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    phase_ns: u64,
    interval_ns: u64,
}

impl Schedule {
    /// `rate` messages per second, the first one `phase` of an interval (0 ≤ phase < 1) into
    /// the run, so that many senders with different phases spread their messages evenly.
    /// `None` unless `rate` is a positive, finite number.
    #[must_use]
    pub fn new(rate: f64, phase: f64) -> Option<Self> {
        if !(rate.is_finite() && rate > 0.0) {
            return None;
        }
        // Float to integer casts saturate; an interval under 1 ns is "as fast as possible".
        let interval_ns = ((1e9 / rate).round() as u64).max(1);
        let phase_ns = (interval_ns as f64 * phase.clamp(0.0, 1.0)) as u64;
        Some(Self {
            phase_ns,
            interval_ns,
        })
    }

    /// The time between two messages.
    #[must_use]
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }

    /// When message `k` is due, from the run's start.
    #[must_use]
    pub fn due(&self, k: u64) -> Duration {
        Duration::from_nanos(
            self.phase_ns
                .saturating_add(k.saturating_mul(self.interval_ns)),
        )
    }

    /// How many messages are due by `elapsed` (those with `due(k) ≤ elapsed`).
    #[must_use]
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        let elapsed = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        match elapsed.checked_sub(self.phase_ns) {
            Some(after) => after / self.interval_ns + 1,
            None => 0,
        }
    }

    /// What a sender that has sent messages `..next` sends at `now`: every overdue message,
    /// at most `limit` of them (so a sender far behind still yields to its runtime).
    #[must_use]
    pub fn catch_up(&self, next: u64, now: Duration, limit: u64) -> Range<u64> {
        let end = self.due_by(now).min(next.saturating_add(limit));
        next..end.max(next)
    }
}

/// The latency to record for a message stamped `stamp_us` (its due time in open loop, its
/// send time in closed loop) that arrived at `now_us`, both in µs since the run's start;
/// at least 1 µs, the histogram's floor.
#[must_use]
pub fn latency_us(stamp_us: u64, now_us: u64) -> u64 {
    now_us.saturating_sub(stamp_us).max(1)
}

/// `d` in whole microseconds (saturating).
#[must_use]
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;

    fn histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")
    }

    fn recorded(h: &Histogram<u64>) -> Vec<(u64, u64)> {
        h.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn due_times_follow_rate_and_phase() {
        let s = Schedule::new(100.0, 0.5).expect("rate");
        assert_eq!(s.interval(), 10 * MS);
        assert_eq!(s.due(0), 5 * MS);
        assert_eq!(s.due(3), 35 * MS);
        assert_eq!(s.due_by(4 * MS), 0);
        assert_eq!(s.due_by(5 * MS), 1);
        assert_eq!(s.due_by(34 * MS), 3);
        assert_eq!(s.due_by(35 * MS), 4);
        assert_eq!(s.catch_up(1, 35 * MS, 2), 1..3);
        assert_eq!(s.catch_up(4, 35 * MS, 2), 4..4);
        assert_eq!(Schedule::new(0.0, 0.0), None);
        assert_eq!(Schedule::new(f64::NAN, 0.0), None);
        assert_eq!(
            Schedule::new(1e12, 0.0).map(|s| s.interval()),
            Some(Duration::from_nanos(1))
        );
    }

    /// One sender at 100 msgs/s; the relay answers 1 ms after each send, but the sender
    /// cannot send from 500 ms to 1,500 ms. Stamping each message with its due time gives
    /// exactly the histogram HdrHistogram's `record_correct` builds for a closed loop that
    /// saw the one 1,001 ms answer: the stall shows in the percentiles, not in one sample.
    #[test]
    fn stamping_due_times_corrects_a_stall_as_record_correct_does() {
        let schedule = Schedule::new(100.0, 0.0).expect("rate");
        let stall = 500 * MS..1500 * MS;
        let mut open = histogram();
        let (mut next, mut now) = (0, Duration::ZERO);
        while next < 200 {
            now = now.max(schedule.due(next));
            if stall.contains(&now) {
                now = stall.end;
            }
            let batch = schedule.catch_up(next, now, u64::MAX);
            for k in batch.clone() {
                let stamp = micros(schedule.due(k));
                open.record(latency_us(stamp, micros(now + MS)))
                    .expect("in range");
            }
            next = batch.end;
        }

        let mut closed = histogram();
        for _ in 0..100 {
            closed.record_correct(1_000, 10_000).expect("in range");
        }
        closed.record_correct(1_001_000, 10_000).expect("in range");

        assert_eq!(open.len(), 200);
        assert_eq!(recorded(&open), recorded(&closed));
        // Uncorrected, the closed loop's p90 is 1 ms (one slow sample among 101); corrected,
        // it is the stall's.
        let mut raw = histogram();
        for _ in 0..100 {
            raw.record(1_000).expect("in range");
        }
        raw.record(1_001_000).expect("in range");
        assert!(raw.value_at_quantile(0.9) <= 1_001);
        assert!(open.value_at_quantile(0.9) > 800_000);
    }
}
