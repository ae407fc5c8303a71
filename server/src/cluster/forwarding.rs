//! The sending side of a ROUTE to another node: queued in the order its connection made
//! it and published in batches; its connection polls the [`Pending`] verdict.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use compendium_messages::Address;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::outstanding::{Stage, Waiting};
use super::{Cluster, unix_millis, wire};
use crate::addressing::NodeId;
use crate::remote::{Forward, Pending, Verdict, VerdictSlot};

/// The most forwarded ROUTEs handed to NATS in one turn of the publisher.
const PUBLISH_BATCH: usize = 256;

/// The most sessions that moved to which this node keeps numbering its ROUTEs.
const MAX_SESSION_STREAMS: usize = 65_536;

/// A forwarded ROUTE, encoded, waiting to be published.
pub(super) struct Outgoing {
    id: u64,
    subject: String,
    /// `None`: not a request (an answer to another node: a farewell's confirmation, a
    /// claim's answer), published in its place among the ROUTEs.
    reply: Option<String>,
    payload: Bytes,
}

impl Cluster {
    /// Send a ROUTE to the node that holds its target; the returned [`Pending`] gets its
    /// verdict (or [`Verdict::TimedOut`] within 1¼ cluster timeouts). Calls from one
    /// connection are published in the order they are made, so DELIVERs from one sender
    /// to one target keep their order (rule 3.5).
    pub(crate) fn forward(&self, forward: Forward) -> Pending {
        if !self.link.is_up() {
            return Pending::unreachable();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = VerdictSlot::new();
        let expires = unix_millis(SystemTime::now() + self.timeout);
        let payload = Bytes::from(wire::encode_request(
            expires,
            forward.address,
            forward.msg.as_str(),
        ));
        // A node that said goodbye is sent nothing more (`presence.rs`, `leave`): what
        // it drew is asked for on the session's subject, where nobody answers unless it
        // moved — behind the ROUTEs to the same target still waiting on that node.
        let left = forward.node.filter(|node| self.has_left(*node));
        let forward = Forward {
            node: forward.node.filter(|_| left.is_none()),
            ..forward
        };
        let (subject, stage) = match forward.node {
            Some(node) => (
                format!("{}.node.{node}", self.prefix),
                Stage::Home {
                    node,
                    address: forward.address,
                    payload: payload.clone(),
                },
            ),
            None => (String::new(), Stage::Session { home: left }),
        };
        let to_session = forward.node.is_none();
        {
            let mut outstanding = self.outstanding();
            outstanding.insert(
                id,
                Waiting {
                    slot: Arc::clone(&slot),
                    stage,
                    deadline: slot.started + self.timeout,
                },
            );
            if left.is_some() && outstanding.must_wait(forward.address) {
                outstanding.defer(forward.address, id, payload);
                return Pending::waiting(slot);
            }
        }
        let queued = if to_session {
            self.enqueue_for_session(id, forward.address, &payload)
        } else {
            self.enqueue(id, subject, payload)
        };
        if !queued {
            return Pending::unreachable();
        }
        Pending::waiting(slot)
    }

    /// Queue request `id` (its v1 bytes) for the subject of `address`'s session, numbered
    /// in this node's stream to it: numbered and queued under one lock, so that the
    /// numbers follow the order of publication.
    fn enqueue_for_session(&self, id: u64, address: Address, request: &[u8]) -> bool {
        let mut streams = self
            .session_streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if streams.len() >= MAX_SESSION_STREAMS && !streams.contains_key(&address) {
            // Forget them all: each target's next request starts a new stream (a new id,
            // from 1), which its holder tells apart from the old one.
            streams.clear();
        }
        let next_stream = &self.next_stream;
        let (stream, seq) = streams
            .entry(address)
            .or_insert_with(|| (next_stream.fetch_add(1, Ordering::Relaxed) as u32, 0));
        *seq += 1;
        let numbered = wire::Numbered {
            stream: (self.node, *stream),
            seq: *seq,
            passed_on: false,
        };
        let payload = Bytes::from(wire::number_request(request, numbered));
        self.enqueue(id, self.session_subject(address), payload)
    }

    /// Send on the requests held back behind others to the same target that no longer
    /// wait (see [`Outstanding`](super::outstanding::Outstanding)), in their order.
    pub(super) fn send_deferred(&self) {
        let ready = self.outstanding().ready();
        for address in ready {
            loop {
                // (Not under the table's lock: numbering and queueing take another.)
                let next = self.outstanding().next_deferred(address);
                let Some((id, request)) = next else {
                    break;
                };
                self.enqueue_for_session(id, address, &request);
            }
        }
    }

    /// Send request `id` on to the subject of its target's session, which is not (or no
    /// longer) with the node that drew its address; `home` is that node if nobody answered
    /// for it, `None` if it said the session moved.
    pub(super) fn send_on(
        &self,
        id: u64,
        waiting: Waiting,
        address: Address,
        payload: Bytes,
        home: Option<NodeId>,
    ) {
        self.outstanding().insert(
            id,
            Waiting {
                stage: Stage::Session { home },
                ..waiting
            },
        );
        self.enqueue_for_session(id, address, &payload);
    }

    /// Queue request `id` for the publisher; `false` (and its verdict taken out) if the
    /// publisher has stopped: the node is shutting down.
    fn enqueue(&self, id: u64, subject: String, payload: Bytes) -> bool {
        let outgoing = Outgoing {
            id,
            subject,
            reply: Some(format!("{}.verdict.{}.{id}", self.prefix, self.node)),
            payload,
        };
        if self.outgoing.send(outgoing).is_err() {
            if let Some(waiting) = self.outstanding().take(id) {
                waiting.slot.fill(Verdict::Unreachable);
            }
            return false;
        }
        true
    }

    /// Publish an answer to another node (no reply expected) behind the ROUTEs forwarded
    /// so far, which NATS then delivers first (it keeps one publisher's order); once the
    /// queue is closed (this node is leaving, and all it held has been published), at once.
    pub(super) async fn publish_in_order(&self, subject: String, payload: Bytes) {
        let answer = Outgoing {
            id: 0,
            subject,
            reply: None,
            payload,
        };
        if let Err(mpsc::error::SendError(answer)) = self.outgoing.send(answer) {
            self.publish(answer).await;
        }
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
        let Some(reply) = outgoing.reply else {
            if let Err(err) = self
                .client
                .publish(outgoing.subject, outgoing.payload)
                .await
            {
                tracing::debug!(error = %err, "cluster link: cannot answer another node");
            }
            return;
        };
        self.metrics.cluster_routes_sent.inc();
        if let Err(err) = self
            .client
            .publish_with_reply(outgoing.subject, reply, outgoing.payload)
            .await
        {
            tracing::debug!(error = %err, "cluster link: cannot publish a forwarded ROUTE");
            if let Some(waiting) = self.outstanding().take(outgoing.id) {
                self.fill(&waiting.slot, Verdict::Unreachable);
            }
        }
    }
}
