//! The sending side of a ROUTE to another node: queued in the order its connection made
//! it, published in batches, and the [`Pending`] verdict its connection polls.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::outstanding::VerdictSlot;
use super::{Cluster, unix_millis, wire};
use crate::remote::{Forward, Verdict};

/// The most forwarded ROUTEs handed to NATS in one turn of the publisher.
const PUBLISH_BATCH: usize = 256;

/// A forwarded ROUTE, encoded, waiting to be published.
pub(super) struct Outgoing {
    id: u64,
    subject: String,
    reply: String,
    payload: Bytes,
}

impl Cluster {
    /// Send a ROUTE to the node that holds its target; the returned [`Pending`] gets its
    /// verdict (or [`Verdict::TimedOut`] within 1¼ cluster timeouts). Calls from one
    /// connection are published in the order they are made, so DELIVERs from one sender
    /// to one target keep their order (rule 3.5).
    pub(crate) fn forward(&self, forward: Forward) -> Pending {
        if !self.link.is_up() {
            return Pending::ready(Verdict::Unreachable);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = VerdictSlot::new();
        self.outstanding()
            .insert(id, forward.node, Arc::clone(&slot));
        let expires = unix_millis(SystemTime::now() + self.timeout);
        let payload = wire::encode_request(expires, forward.address, forward.msg.as_str());
        let outgoing = Outgoing {
            id,
            subject: format!("{}.node.{}", self.prefix, forward.node),
            reply: format!("{}.verdict.{}.{id}", self.prefix, self.node),
            payload: Bytes::from(payload),
        };
        if self.outgoing.send(outgoing).is_err() {
            // The publisher has stopped: the node is shutting down.
            self.outstanding().take(id);
            return Pending::ready(Verdict::Unreachable);
        }
        Pending(PendingState::Waiting(slot))
    }

    /// Publish the forwarded ROUTEs, in the order they were forwarded, until `stop` (and
    /// then what is still queued). Each turn first lets the other tasks that are ready
    /// run, so that the ROUTEs that arrive together on several connections go to NATS
    /// together, in one write; that write is the cluster's main cost per message.
    pub(super) async fn publish_forwards(
        self: Arc<Self>,
        mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
        stop: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => None,
                first = outgoing.recv() => first,
            };
            let Some(first) = first else {
                outgoing.close();
                while let Some(left) = outgoing.recv().await {
                    self.publish(left).await;
                }
                return;
            };
            tokio::task::yield_now().await;
            batch.push(first);
            while batch.len() < PUBLISH_BATCH {
                match outgoing.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            for outgoing in batch.drain(..) {
                self.publish(outgoing).await;
            }
        }
    }

    /// Publish one forwarded ROUTE; if NATS will not take it, its verdict is 503.
    async fn publish(&self, outgoing: Outgoing) {
        self.metrics.cluster_routes_sent.inc();
        if let Err(err) = self
            .client
            .publish_with_reply(outgoing.subject, outgoing.reply, outgoing.payload)
            .await
        {
            tracing::debug!(error = %err, "cluster link: cannot publish a forwarded ROUTE");
            if let Some((_, slot)) = self.outstanding().take(outgoing.id) {
                self.fill(&slot, Verdict::Unreachable);
            }
        }
    }
}

/// The verdict of a forwarded ROUTE, when it comes.
pub(crate) struct Pending(PendingState);

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            PendingState::Ready(verdict) => write!(f, "Pending({verdict:?})"),
            PendingState::Waiting(slot) => write!(f, "Pending(waiting: {:?})", slot.get()),
        }
    }
}

enum PendingState {
    Ready(Verdict),
    Waiting(Arc<VerdictSlot>),
}

impl Pending {
    fn ready(verdict: Verdict) -> Self {
        Self(PendingState::Ready(verdict))
    }

    /// The verdict of a ROUTE held for a detached session on this node (rule 6.8).
    pub(crate) fn held(slot: Arc<VerdictSlot>) -> Self {
        Self(PendingState::Waiting(slot))
    }

    /// The verdict of a ROUTE that could not be sent: the cluster is unreachable.
    pub(crate) fn unreachable() -> Self {
        Self::ready(Verdict::Unreachable)
    }

    /// The verdict, or `Pending` with this task to be woken when it comes. A delivery
    /// needs no reply, so it wakes the task only if `urgent` (something waits behind it);
    /// any other verdict always does.
    pub(crate) fn poll_verdict(&self, cx: &mut Context<'_>, urgent: bool) -> Poll<Verdict> {
        match &self.0 {
            PendingState::Ready(verdict) => Poll::Ready(*verdict),
            PendingState::Waiting(slot) => slot.poll(cx, urgent),
        }
    }
}
