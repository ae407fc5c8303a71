//! What this node knows of the others: heartbeats out and in, farewells, and the two
//! judgements made from them — whether a node nobody answers for is gone (404) or failing
//! over (503), and which nodes have fallen silent (their owed verdicts are answered).

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use async_nats::Subscriber;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{Cluster, next_until, wire};
use crate::addressing::NodeId;
use crate::remote::Verdict;

/// How long a node that fell silent is remembered.
const FORGET_PEER: Duration = Duration::from_secs(3600);

/// What this node knows of another.
#[derive(Debug, Clone, Copy)]
pub(super) enum Peer {
    /// Its last heartbeat arrived then.
    HeardAt(Instant),
    /// It said it was leaving, then.
    Left(Instant),
}

impl Cluster {
    /// The other nodes heard from once and silent since for the peer timeout. None while
    /// this node's own link is down, or within the peer timeout of its coming back: silence
    /// then says nothing about the others. Nodes silent for [`FORGET_PEER`] are forgotten
    /// (a node restarted every day would otherwise leave an entry a day): the answer for
    /// their addresses stays 404, as for a node never heard of.
    pub(super) fn silent_peers(&self) -> Vec<NodeId> {
        if !self.link.is_up() {
            return Vec::new();
        }
        let up_since = self.link.up_since();
        let mut silent = Vec::new();
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|node, peer| match peer {
                Peer::HeardAt(at) => {
                    let quiet = (*at).max(up_since).elapsed();
                    if quiet >= self.peer_timeout {
                        silent.push(*node);
                    }
                    quiet < FORGET_PEER
                }
                Peer::Left(at) => at.elapsed() < FORGET_PEER,
            });
        silent
    }

    /// The verdict when nobody subscribes to `node`'s subject: it is gone (404: its
    /// addresses went with it, rule 3.10) if it said so, was never heard of, or has been
    /// silent for the peer timeout; otherwise it is presumed to be failing over (503).
    pub(super) fn absent(&self, node: NodeId) -> Verdict {
        let peer = self
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .copied();
        match peer {
            None | Some(Peer::Left(_)) => Verdict::NotFound,
            Some(Peer::HeardAt(at)) => {
                // Silence while this node's own link was down says nothing about the other.
                let since = at.max(self.link.up_since());
                if since.elapsed() < self.peer_timeout {
                    Verdict::Absent
                } else {
                    Verdict::NotFound
                }
            }
        }
    }

    /// Say `presence` to the other nodes (nothing if the link is down).
    pub(super) async fn beat(&self, presence: wire::Presence) {
        let bytes = Bytes::copy_from_slice(&wire::encode_presence(presence));
        if let Err(err) = self
            .client
            .publish(format!("{}.presence", self.prefix), bytes)
            .await
        {
            tracing::debug!(error = %err, "cluster link: cannot publish a heartbeat");
        }
    }

    /// Tell the other nodes this node is alive, every heartbeat, until `stop`.
    pub(crate) async fn keep_beating(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.heartbeat);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            if self.link.is_up() {
                self.beat(wire::Presence::Beat(self.node)).await;
            }
        }
    }

    /// Whether `node` has said it is leaving: its subject is not sent to any more.
    pub(super) fn has_left(&self, node: NodeId) -> bool {
        matches!(
            self.peers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&node),
            Some(Peer::Left(_))
        )
    }

    /// Say goodbye, and wait (at most a cluster timeout) until every node heard from
    /// within the peer timeout has confirmed it. A node confirms through the queue that
    /// publishes its forwarded ROUTEs, after it stopped sending this node any (see
    /// `forward`): NATS keeps one publisher's messages in order, so once the last
    /// confirmation is here, so is everything the others sent to this node's subjects.
    pub(super) async fn leave(&self) {
        let mut waiting: Vec<NodeId> = self
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(node, peer)| match peer {
                Peer::HeardAt(at) if at.elapsed() < self.peer_timeout => Some(*node),
                _ => None,
            })
            .collect();
        let farewell =
            Bytes::copy_from_slice(&wire::encode_presence(wire::Presence::Leaving(self.node)));
        let subject = format!("{}.presence", self.prefix);
        let inbox = self.client.new_inbox();
        let mut confirmations = match self.client.subscribe(inbox.clone()).await {
            Ok(confirmations) => confirmations,
            Err(err) => {
                tracing::debug!(error = %err, "cluster link: cannot wait for the farewell's confirmations");
                if let Err(err) = self.client.publish(subject, farewell).await {
                    tracing::debug!(error = %err, "cluster link: cannot say goodbye");
                }
                return;
            }
        };
        if let Err(err) = self
            .client
            .publish_with_reply(subject, inbox, farewell)
            .await
        {
            tracing::debug!(error = %err, "cluster link: cannot say goodbye");
            return;
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        while !waiting.is_empty() {
            let next = tokio::time::timeout_at(
                deadline,
                futures_util::StreamExt::next(&mut confirmations),
            );
            match next.await {
                Ok(Some(message)) => {
                    if let Some(wire::Presence::Leaving(node)) =
                        wire::decode_presence(&message.payload)
                    {
                        waiting.retain(|n| *n != node);
                    }
                }
                Ok(None) => return,
                Err(_) => {
                    tracing::warn!(
                        unconfirmed = waiting.len(),
                        "cluster link: {} node(s) did not confirm this node's farewell within {} ms; \
                         ROUTEs they send it now get ERR 503",
                        waiting.len(),
                        self.timeout.as_millis()
                    );
                    return;
                }
            }
        }
    }

    /// Record the other nodes' heartbeats and farewells, until `stop`.
    pub(crate) async fn hear_presence(
        self: Arc<Self>,
        mut presence: Subscriber,
        stop: CancellationToken,
    ) {
        loop {
            let Some(message) = next_until(&mut presence, &stop).await else {
                return;
            };
            let (node, peer) = match wire::decode_presence(&message.payload) {
                Some(wire::Presence::Beat(node)) => (node, Peer::HeardAt(Instant::now())),
                Some(wire::Presence::Leaving(node)) => (node, Peer::Left(Instant::now())),
                None => continue,
            };
            if node != self.node {
                self.peers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(node, peer);
                if let (Peer::Left(_), Some(reply)) = (peer, message.reply) {
                    // Behind every ROUTE already queued for it (see `leave`).
                    let confirmation = wire::encode_presence(wire::Presence::Leaving(self.node));
                    self.publish_in_order(reply.to_string(), Bytes::copy_from_slice(&confirmation))
                        .await;
                }
            }
        }
    }
}
