//! A cluster node's drain (docs/cluster.md, "Drain"): on SIGTERM its resumable
//! connections are closed with 1012 and their sessions stay, detached; each client
//! reconnects (through the load balancer, to another node) and resumes there, which moves
//! its session over (`cluster/handover.rs`). The node exits once none is left here — or
//! the drain timeout passes, or a second signal ends the wait — saying how it went.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::session::Sessions;

/// Wait until no detached session is left on this node, for at most `timeout` (from
/// `started`, when the drain began) or until `end`; log what moved since `moved_before`
/// (the count of moved sessions when the drain began) and what could not.
pub(crate) async fn wait_for_handovers(
    sessions: &Sessions,
    (started, moved_before): (Instant, usize),
    timeout: Duration,
    end: &CancellationToken,
) {
    let deadline = tokio::time::Instant::from_std(started + timeout);
    let why = loop {
        let changed = sessions.detached_changed.notified();
        tokio::pin!(changed);
        // Registered before the count is read: a change in between still wakes us.
        changed.as_mut().enable();
        if sessions.detached() == 0 {
            break "every session moved or ended";
        }
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep_until(deadline) => break "the drain timeout passed",
            () = end.cancelled() => break "a second signal ended it",
        }
    };
    let left = sessions.detached();
    let handed_over = sessions.moved() - moved_before;
    let waiting = handed_over + left;
    let millis = started.elapsed().as_millis();
    if left == 0 {
        tracing::info!(
            event = "drain_done",
            sessions = waiting,
            handed_over,
            left,
            millis,
            "drain done in {millis} ms: {why}; {handed_over} of {waiting} sessions moved to other nodes"
        );
    } else {
        tracing::warn!(
            event = "drain_done",
            sessions = waiting,
            handed_over,
            left,
            millis,
            "drain ended after {millis} ms ({why}): {left} sessions could not be handed over \
             (their clients did not resume elsewhere) and end with this node; {handed_over} moved"
        );
    }
}
