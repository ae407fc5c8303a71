//! The holder's side: requests from other nodes delivered to this node's directory, as a
//! local ROUTE would be, and answered — refusals at once, deliveries acknowledged in
//! batches.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_nats::Subscriber;
use bytes::Bytes;
use compendium_messages::Payload;
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::{Cluster, unix_millis, wire};
use crate::directory::{Delivery, Directory};
use crate::outbox::Outbox;
use crate::remote::Verdict;
use crate::session::{Hold, RemoteVerdict};

impl Cluster {
    /// Deliver requests from other nodes to this node's connections, in the order they
    /// arrive, until `departed` (and then those that reached this node before: see
    /// [`Cluster::close`]). A refusal is answered at once; deliveries are acknowledged in
    /// batches, each sent when no more requests are waiting (or it is full), so a busy
    /// node sends one acknowledgement for many requests and an idle one adds no delay.
    pub(super) async fn serve_requests(
        self: Arc<Self>,
        mut requests: Subscriber,
        directory: Arc<Directory<Outbox>>,
        max_message_bytes: usize,
        departed: CancellationToken,
    ) {
        let mut acks = Acks::new(format!("{}.verdict.", self.prefix));
        loop {
            let mut message = requests.next().now_or_never();
            if message.is_none() && !acks.is_empty() {
                // As for forwards: let what else is ready run first, to ack more at once.
                tokio::task::yield_now().await;
                message = requests.next().now_or_never();
            }
            let message = match message {
                Some(message) => message,
                None => {
                    self.send_acks(&mut acks).await;
                    if departed.is_cancelled() {
                        // What reached this node, to the last (see `super::buffered`).
                        match super::buffered(&mut requests) {
                            Some(message) => Some(message),
                            None => return,
                        }
                    } else {
                        tokio::select! {
                            biased;
                            message = requests.next() => message,
                            () = departed.cancelled() => continue,
                        }
                    }
                }
            };
            let Some(message) = message else {
                self.send_acks(&mut acks).await;
                return;
            };
            self.metrics.cluster_routes_received.inc();
            let Some(reply) = message.reply else {
                continue;
            };
            let verdict = judge(
                &directory,
                &message.payload,
                max_message_bytes,
                false,
                || self.verdict_sender(reply.clone()),
            );
            if verdict == Verdict::Delivered && acks.add(reply.as_str()) {
                if acks.full() {
                    self.send_acks(&mut acks).await;
                }
                continue;
            }
            let answer = Bytes::copy_from_slice(&wire::encode_verdict(verdict));
            if let Err(err) = self.client.publish(reply, answer).await {
                tracing::debug!(error = %err, "cluster link: cannot answer a forwarded ROUTE");
            }
        }
    }

    /// What answers a request held for a detached session, once its verdict is known.
    pub(super) fn verdict_sender(&self, reply: async_nats::Subject) -> RemoteVerdict {
        let client = self.client.clone();
        Box::new(move |verdict| {
            let answer = Bytes::copy_from_slice(&wire::encode_verdict(verdict));
            tokio::spawn(async move {
                if let Err(err) = client.publish(reply, answer).await {
                    tracing::debug!(error = %err, "cluster link: cannot answer a held ROUTE");
                }
            });
        })
    }

    /// Send the acknowledgements gathered so far.
    async fn send_acks(&self, acks: &mut Acks) {
        for (subject, payload) in acks.take() {
            if let Err(err) = self.client.publish(subject, payload.into()).await {
                tracing::debug!(error = %err, "cluster link: cannot acknowledge deliveries");
            }
        }
    }
}

/// What this node says to a request from another: the same as for a local ROUTE, once the
/// request has been checked like any input from the network. `from_subject`: it came on
/// the subject of a session that moved here. A ROUTE to a detached session is held as a
/// local one would be (rule 6.8): the answer is [`Verdict::Held`] now, and `held` makes
/// what sends the final verdict when there is one.
pub(super) fn judge(
    directory: &Directory<Outbox>,
    bytes: &[u8],
    max_message_bytes: usize,
    from_subject: bool,
    held: impl FnOnce() -> RemoteVerdict,
) -> Verdict {
    let request = match wire::decode_request(bytes) {
        Ok(request) => request,
        Err(err) => {
            tracing::warn!(error = %err, "cluster link: a malformed request was refused");
            return Verdict::Refused;
        }
    };
    if request.expires_ms < unix_millis(SystemTime::now()) {
        // Its sender has answered 503 already: delivering it now would contradict that.
        return Verdict::TimedOut;
    }
    if request.msg.len() > max_message_bytes {
        return Verdict::Refused;
    }
    let Some(payload) = std::str::from_utf8(request.msg)
        .ok()
        .and_then(|text| Payload::from_json(text).ok())
    else {
        tracing::warn!("cluster link: a request whose msg is not a valid JSON object was refused");
        return Verdict::Refused;
    };
    let deliver =
        |frame, hold| directory.deliver(request.address, frame, hold, Instant::now(), from_subject);
    // Not held first: what a verdict sender costs is only paid for a detached target.
    let delivery = match deliver(payload.deliver_frame(), Hold::Never) {
        Delivery::Away => deliver(payload.deliver_frame(), Hold::ForRemote(held())),
        delivery => delivery,
    };
    match delivery {
        Delivery::Queued => Verdict::Delivered,
        Delivery::Held(_) => Verdict::Held,
        Delivery::NotFound => Verdict::NotFound,
        Delivery::Full | Delivery::Away => Verdict::Full,
        Delivery::Moved => Verdict::Moved,
    }
}

/// Request ids delivered and not yet acknowledged, by the subject that acknowledges them.
struct Acks {
    /// `<prefix>.verdict.`: a reply subject that does not start with it is not a node's.
    verdict_prefix: String,
    /// By acknowledgement subject; as many as the nodes that sent since the last batch.
    batches: Vec<(String, Vec<u64>)>,
    full: bool,
}

impl Acks {
    fn new(verdict_prefix: String) -> Self {
        Self {
            verdict_prefix,
            batches: Vec::new(),
            full: false,
        }
    }

    /// Note that the request with reply subject `reply` was delivered; `false` when the
    /// subject is not a node's (`<prefix>.verdict.<node>.<id>`), to be answered alone.
    fn add(&mut self, reply: &str) -> bool {
        let Some((base, id)) = reply.rsplit_once('.') else {
            return false;
        };
        let Ok(id) = id.parse::<u64>() else {
            return false;
        };
        if !base.starts_with(&self.verdict_prefix) {
            return false;
        }
        let ids = match self.batches.iter_mut().find(|(subject, _)| {
            subject.len() == base.len() + ".ack".len() && subject.starts_with(base)
        }) {
            Some((_, ids)) => ids,
            None => {
                self.batches.push((format!("{base}.ack"), Vec::new()));
                let Some((_, ids)) = self.batches.last_mut() else {
                    return false;
                };
                ids
            }
        };
        ids.push(id);
        self.full |= ids.len() >= wire::MAX_ACK_IDS;
        true
    }

    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Whether a batch holds as many ids as one acknowledgement carries.
    fn full(&self) -> bool {
        self.full
    }

    /// The acknowledgements to send, emptying the batches.
    fn take(&mut self) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
        self.full = false;
        self.batches
            .drain(..)
            .map(|(subject, ids)| (subject, wire::encode_ack(&ids)))
    }
}
