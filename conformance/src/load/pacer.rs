//! Wakes open-loop senders when their next message is due, on a thread of its own.
//!
//! tokio's timers tick in whole milliseconds, so a sender sleeping until its due time
//! wakes up to a millisecond late, and every latency (counted from the due time) would
//! carry that error — as large as a fast relay's whole latency. An OS thread sleeping with
//! `std::thread::sleep` wakes within about 0.1 ms; it rings one bell (a `Notify`) per sender
//! whose next message is due, and the sender sends whatever its [`Schedule`] says is due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Schedule, Shared};

/// The longest the pacer sleeps at once, so it notices the stop promptly.
const NAP: Duration = Duration::from_millis(10);

/// The pacer thread; it ends when `stop` is set.
pub(super) struct Pacer {
    /// One bell per schedule, in the same order.
    pub(super) bells: Vec<Arc<Notify>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Pacer {
    /// Start ringing for `schedules`, counted from the run's epoch, until the run stops;
    /// then ring every bell once more, so no sender waits for ever.
    ///
    /// # Errors
    /// If the thread cannot be started.
    pub(super) fn start(shared: &Arc<Shared>, schedules: Vec<Schedule>) -> std::io::Result<Self> {
        let bells: Vec<_> = schedules.iter().map(|_| Arc::new(Notify::new())).collect();
        let ringing = bells.clone();
        let run = Arc::clone(shared);
        let thread = std::thread::Builder::new()
            .name("load-pacer".into())
            .spawn(move || {
                // Each sender's next due time; the earliest on top.
                let mut next: BinaryHeap<Reverse<(Duration, usize)>> = schedules
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Reverse((s.due(0), i)))
                    .collect();
                while !run.stop.load(Ordering::Relaxed) {
                    let Some(&Reverse((due, i))) = next.peek() else {
                        break;
                    };
                    let now = run.epoch.elapsed();
                    if due > now {
                        std::thread::sleep((due - now).min(NAP));
                        continue;
                    }
                    next.pop();
                    // A stored permit if the sender is busy: it looks again when done.
                    ringing[i].notify_one();
                    let schedule = &schedules[i];
                    next.push(Reverse((schedule.due(schedule.due_by(now)), i)));
                }
                for bell in &ringing {
                    bell.notify_one();
                }
            })?;
        Ok(Self {
            bells,
            shared: Arc::clone(shared),
            thread: Some(thread),
        })
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
