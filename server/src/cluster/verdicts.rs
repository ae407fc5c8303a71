//! Verdicts coming back to this node: each filled into the slot of the ROUTE waiting for
//! it, and those that will not come (the cluster timeout, a silent holder) answered 503.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use async_nats::{StatusCode, Subscriber};
use tokio_util::sync::CancellationToken;

use super::outstanding::{Outstanding, Stage, Waiting};
use super::{Cluster, next_until, wire};
use crate::remote::Verdict;
use crate::remote::VerdictSlot;

impl Cluster {
    pub(super) fn outstanding(&self) -> std::sync::MutexGuard<'_, Outstanding> {
        // A panic elsewhere cannot leave the table half-updated; keep serving.
        self.outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Put `verdict` in the slot of a forwarded ROUTE, timing it.
    pub(super) fn fill(&self, slot: &VerdictSlot, verdict: Verdict) {
        if slot.fill(verdict) {
            self.metrics
                .cluster_verdict_seconds
                .observe(slot.started.elapsed().as_secs_f64());
        }
    }

    /// Hand each verdict to the ROUTE waiting for it; until `stop`.
    pub(super) async fn collect_verdicts(
        self: Arc<Self>,
        mut verdicts: Subscriber,
        stop: CancellationToken,
    ) {
        loop {
            let Some(message) = next_until(&mut verdicts, &stop).await else {
                return;
            };
            let Some((_, token)) = message.subject.rsplit_once('.') else {
                continue;
            };
            if token == "ack" {
                let Some(ids) = wire::decode_ack(&message.payload) else {
                    tracing::warn!("cluster link: an acknowledgement this node cannot read");
                    continue;
                };
                let mut outstanding = self.outstanding();
                for id in ids {
                    if let Some(waiting) = outstanding.take(id) {
                        self.fill(&waiting.slot, Verdict::Delivered);
                    }
                }
                drop(outstanding);
                self.send_deferred();
                continue;
            }
            let Some((id, waiting)) = token
                .parse::<u64>()
                .ok()
                .and_then(|id| Some((id, self.outstanding().take(id)?)))
            else {
                continue;
            };
            // NATS answers for the holder when nobody subscribes to its subject.
            let verdict = (message.status != Some(StatusCode::NO_RESPONDERS))
                .then(|| wire::decode_verdict(&message.payload));
            if verdict == Some(Verdict::Held) {
                // Held for a detached session (rule 6.8): the verdict comes when it
                // resumes, or when the hold window has passed.
                let deadline = Instant::now() + self.hold + self.timeout;
                self.outstanding().insert(
                    id,
                    Waiting {
                        deadline,
                        ..waiting
                    },
                );
                continue;
            }
            let verdict = match (waiting.stage.clone(), verdict) {
                // The home does not have the session: it moved (it says so), or the home
                // is gone and the session may live on elsewhere. Ask the session itself.
                (
                    Stage::Home {
                        node,
                        address,
                        payload,
                    },
                    None | Some(Verdict::Moved),
                ) => {
                    let home = verdict.is_none().then_some(node);
                    self.send_on(id, waiting, address, payload, home);
                    self.send_deferred();
                    continue;
                }
                // Nobody holds the session: gone, or its home failing over (as before).
                (Stage::Session { home: Some(node) }, None) => self.absent(node),
                (Stage::Session { home: None }, None) => Verdict::NotFound,
                // Moving on again this very moment: try again.
                (Stage::Session { .. }, Some(Verdict::Moved)) => Verdict::Absent,
                (_, Some(verdict)) => verdict,
            };
            self.fill(&waiting.slot, verdict);
            self.send_deferred();
        }
    }

    /// Answer 503 to forwarded ROUTEs whose verdict has not come within the cluster
    /// timeout, and to those owed by a node that has fallen silent for the peer timeout
    /// (it died or froze: waiting longer tells the sender nothing more), checking four
    /// times per timeout and per peer timeout; until `stop`.
    pub(super) async fn expire_verdicts(self: Arc<Self>, stop: CancellationToken) {
        let period = self.timeout.min(self.peer_timeout) / 4;
        let mut every = tokio::time::interval(period.max(Duration::from_millis(1)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The silent nodes already logged, so that a frozen node is reported once, not on
        // every sweep that finds new requests owed by it.
        let mut reported = Vec::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let silent = self.silent_peers();
            reported.retain(|node| silent.contains(node));
            let owed = self.outstanding().take_for(&silent);
            for (node, slot) in owed {
                if !reported.contains(&node) {
                    tracing::warn!(
                        event = "cluster_peer_silent",
                        peer = %node,
                        "cluster: node {node} has sent no heartbeat for {} ms; the ROUTEs \
                         waiting on it get ERR 503 (may not have been delivered)",
                        self.peer_timeout.as_millis()
                    );
                    reported.push(node);
                }
                self.fill(&slot, Verdict::Silent);
            }
            let expired = self.outstanding().take_overdue(Instant::now());
            for slot in expired {
                self.fill(&slot, Verdict::TimedOut);
            }
            self.send_deferred();
        }
    }
}
