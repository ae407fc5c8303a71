//! Cluster mode: nodes joined through NATS behave as one relay (docs/cluster.md).
//!
//! Each node holds only its own connections' addresses; an address says which node holds
//! it (`addressing::Sealed`). A ROUTE to another node's address is published once to that
//! node's subject with a reply subject naming the request; the node delivers it to its
//! directory exactly as it would a local ROUTE and answers one byte, the verdict. Each
//! node has exactly three subscriptions — its requests, its verdicts and the cluster's
//! presence beats — whatever its number of connections. Everything else (INIT, re-INIT,
//! release, routes between two connections of one node) never touches NATS.
//!
//! When nobody subscribes to the holder's subject, NATS answers "no responders". That
//! means the node is gone — or failing over between NATS servers. Heartbeats tell the two
//! apart: a node heard from within the peer timeout is presumed alive (the sender gets
//! 503: try again), a node silent for longer, or that said it was leaving, is gone (404).

mod outstanding;
pub(crate) use outstanding::VerdictSlot;
mod urls;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::{ConnectOptions, Event, StatusCode, Subscriber};
use bytes::Bytes;
use compendium_messages::Payload;
use futures_util::FutureExt;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::addressing::NodeId;
use crate::config::ClusterConfig;
use crate::connection::Outbox;
use crate::directory::{Delivery, Directory};
use crate::error::Error;
use crate::metrics::{Metrics, NodeLabels, VerdictLabel};
use crate::remote::{Forward, Verdict};

use self::outstanding::Outstanding;

/// The most forwarded ROUTEs handed to NATS in one turn of the publisher.
const PUBLISH_BATCH: usize = 256;

/// How long a node that fell silent is remembered.
const FORGET_PEER: Duration = Duration::from_secs(3600);

/// A node's link to its cluster.
pub(crate) struct Cluster {
    client: async_nats::Client,
    node: NodeId,
    node_name: String,
    prefix: String,
    timeout: Duration,
    heartbeat: Duration,
    peer_timeout: Duration,
    link: Arc<LinkState>,
    /// Forwarded ROUTEs waiting for their verdict.
    outstanding: Mutex<Outstanding>,
    /// Forwarded ROUTEs on their way to the publisher task.
    outgoing: mpsc::UnboundedSender<Outgoing>,
    next_id: AtomicU64,
    /// When each other node was last heard from, or that it left.
    peers: Mutex<HashMap<NodeId, Peer>>,
    metrics: Arc<Metrics>,
}

/// What this node knows of another.
#[derive(Debug, Clone, Copy)]
enum Peer {
    /// Its last heartbeat arrived then.
    HeardAt(Instant),
    /// It said it was leaving, then.
    Left(Instant),
}

/// This node's subscriptions, served once the relay runs, and the queue of ROUTEs to
/// publish.
pub(crate) struct Subscriptions {
    requests: Subscriber,
    verdicts: Subscriber,
    presence: Subscriber,
    outgoing: mpsc::UnboundedReceiver<Outgoing>,
}

/// A forwarded ROUTE, encoded, waiting to be published.
struct Outgoing {
    id: u64,
    subject: String,
    reply: String,
    payload: Bytes,
}

/// Whether the node is connected to NATS, as its client's events say.
pub(crate) struct LinkState {
    up: AtomicBool,
    /// When the link last came up: no heartbeat could arrive before, so silence until
    /// then says nothing about other nodes.
    up_since: Mutex<Instant>,
    /// Every change, as the link's state and how many times it was lost: a watcher that
    /// looks too late for a short outage (a failover within milliseconds) still sees
    /// the count go up.
    changes: watch::Sender<Link>,
    metrics: Arc<Metrics>,
}

/// The link's state as [`LinkState::watch`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    /// Connected to NATS.
    pub(crate) up: bool,
    /// Times the link was lost since the node started.
    pub(crate) losses: u64,
}

impl LinkState {
    fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            up: AtomicBool::new(false),
            up_since: Mutex::new(Instant::now()),
            changes: watch::Sender::new(Link {
                up: false,
                losses: 0,
            }),
            metrics,
        }
    }

    fn up_since(&self) -> Instant {
        *self.up_since.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the link to NATS is up.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Record the link's state; logs and counts only changes, never once per message.
    fn set(&self, up: bool, how: &str) {
        if self.up.swap(up, Ordering::AcqRel) == up {
            return;
        }
        if up {
            *self.up_since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        }
        self.metrics.cluster_link_up.set(i64::from(up));
        if !up {
            self.metrics.cluster_link_losses.inc();
        }
        self.changes.send_modify(|link| {
            link.up = up;
            link.losses += u64::from(!up);
        });
        if up {
            tracing::info!(event = "cluster_link_up", "cluster link up ({how})");
        } else {
            tracing::warn!(
                event = "cluster_link_down",
                "cluster link down ({how}): routes to other nodes get ERR 503 until it is back"
            );
        }
    }

    fn on_event(&self, event: &Event) {
        match event {
            Event::Connected => self.set(true, "connected to NATS"),
            Event::Disconnected => self.set(false, "disconnected from NATS"),
            Event::SlowConsumer(sid) => {
                self.metrics.cluster_slow_consumer.inc();
                tracing::warn!(
                    subscription = sid,
                    "cluster link: NATS messages dropped for a slow subscription; the \
                     ROUTEs concerned get ERR 503 when their verdicts time out"
                );
            }
            Event::ServerError(err) => tracing::warn!(error = %err, "cluster link: NATS error"),
            // While the link is down, every failed reconnect attempt (one a second) reports
            // one: the "link down" line already said it, so they go to debug.
            Event::ClientError(err) if !self.is_up() => {
                tracing::debug!(error = %err, "cluster link: client error while down");
            }
            Event::ClientError(err) => tracing::warn!(error = %err, "cluster link: client error"),
            Event::LameDuckMode => tracing::info!("cluster link: the NATS server is going away"),
            Event::Draining | Event::Closed => {}
        }
    }

    /// A receiver of the link's state and losses.
    pub(crate) fn watch(&self) -> watch::Receiver<Link> {
        self.changes.subscribe()
    }
}

impl Cluster {
    /// Connect to NATS as node `node`, check that it carries the largest message this
    /// relay accepts, and subscribe to this node's subjects.
    ///
    /// # Errors
    /// [`Error::Cluster`] naming the URLs and what went wrong: unreachable, refused
    /// credentials, a `max_payload` too small.
    pub(crate) async fn connect(
        config: &ClusterConfig,
        node: NodeId,
        max_message_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Self>, Subscriptions), Error> {
        let urls = config
            .urls
            .iter()
            .map(|url| urls::redact(url))
            .collect::<Vec<_>>()
            .join(", ");
        let fail = |what: String| Error::Cluster(format!("NATS at {urls}: {what}"));
        let (addrs, url_auth) = urls::parse(&config.urls).map_err(Error::Cluster)?;
        let link = Arc::new(LinkState::new(Arc::clone(&metrics)));
        let events = Arc::clone(&link);
        let mut options = ConnectOptions::new()
            .name(format!("compendium-server {} ({node})", config.node_name))
            .ping_interval(config.ping_interval)
            .connection_timeout(config.connect_timeout)
            // Commands queue here while the link writes; a busy node forwards many.
            .client_capacity(1 << 16)
            .subscription_capacity(1 << 16)
            .max_reconnects(None)
            // Fail over fast, well within the other nodes' peer timeout: the first retry
            // at once (it tries the next server), then 50 ms more each time, at most 1 s.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(
                    (attempts as u64)
                        .saturating_sub(1)
                        .saturating_mul(50)
                        .min(1000),
                )
            })
            .event_callback(move |event| {
                let events = Arc::clone(&events);
                async move { events.on_event(&event) }
            });
        options = match url_auth {
            Some(urls::UrlAuth::UserPassword(user, password)) => {
                options.user_and_password(user, password)
            }
            Some(urls::UrlAuth::Token(token)) => options.token(token),
            None => options,
        };
        if let Some(path) = &config.credentials {
            options = options.credentials_file(path).await.map_err(|e| {
                Error::Cluster(format!(
                    "cannot use the NATS credentials file {}: {e}",
                    path.display()
                ))
            })?;
        }
        if let Some(ca) = &config.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        let client = tokio::time::timeout(config.connect_timeout, options.connect(addrs))
            .await
            .map_err(|_| {
                fail(format!(
                    "no connection within {} s",
                    config.connect_timeout.as_secs_f64()
                ))
            })?
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        let max_payload = client.server_info().max_payload;
        if max_payload < max_message_bytes {
            return Err(fail(format!(
                "it carries at most {max_payload} bytes per message (its max_payload), less \
                 than this relay's --max-message-bytes {max_message_bytes}: raise max_payload \
                 in the NATS server's configuration, or lower --max-message-bytes"
            )));
        }
        let prefix = config.subject_prefix.clone();
        let requests = client
            .subscribe(format!("{prefix}.node.{node}"))
            .await
            .map_err(|e| fail(format!("cannot subscribe: {e}")))?;
        let verdicts = client
            .subscribe(format!("{prefix}.verdict.{node}.*"))
            .await
            .map_err(|e| fail(format!("cannot subscribe: {e}")))?;
        let presence = client
            .subscribe(format!("{prefix}.presence"))
            .await
            .map_err(|e| fail(format!("cannot subscribe: {e}")))?;
        // The subscriptions must be in place at the server before this node hands out an
        // address that another node might route to.
        client
            .flush()
            .await
            .map_err(|e| fail(format!("cannot flush: {e}")))?;
        metrics
            .cluster_node
            .get_or_create(&NodeLabels {
                node_name: config.node_name.clone(),
                node_id: node.to_string(),
            })
            .set(1);
        link.set(true, &format!("connected to NATS at {urls}"));
        let (outgoing_tx, outgoing) = mpsc::unbounded_channel();
        let cluster = Arc::new(Self {
            client,
            node,
            node_name: config.node_name.clone(),
            prefix,
            timeout: config.timeout,
            heartbeat: config.heartbeat,
            peer_timeout: config.peer_timeout,
            link,
            outstanding: Mutex::new(Outstanding::default()),
            outgoing: outgoing_tx,
            next_id: AtomicU64::new(1),
            peers: Mutex::new(HashMap::new()),
            metrics,
        });
        // The others hear of this node before it hands out its first address.
        cluster.beat(wire::Presence::Beat(node)).await;
        Ok((
            cluster,
            Subscriptions {
                requests,
                verdicts,
                presence,
                outgoing,
            },
        ))
    }

    /// How long a forwarded ROUTE waits for its verdict (and the farewell for NATS).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// This node's id.
    pub(crate) fn node(&self) -> NodeId {
        self.node
    }

    /// This node's name.
    pub(crate) fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The link's state.
    pub(crate) fn link(&self) -> &LinkState {
        &self.link
    }

    /// The NATS server this node is (or was last) connected to, `host:port` as it
    /// announces itself.
    pub(crate) fn nats_server(&self) -> String {
        let info = self.client.server_info();
        format!("{}:{}", info.host, info.port)
    }

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
    async fn publish_forwards(
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

    fn outstanding(&self) -> std::sync::MutexGuard<'_, Outstanding> {
        // A panic elsewhere cannot leave the table half-updated; keep serving.
        self.outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Put `verdict` in the slot of a forwarded ROUTE, timing it.
    fn fill(&self, slot: &VerdictSlot, verdict: Verdict) {
        if slot.fill(verdict) {
            self.metrics
                .cluster_verdict_seconds
                .observe(slot.started.elapsed().as_secs_f64());
        }
    }

    /// Deliver requests from other nodes to this node's connections, in the order they
    /// arrive, until `stop`. A refusal is answered at once; deliveries are acknowledged in
    /// batches, each sent when no more requests are waiting (or it is full), so a busy
    /// node sends one acknowledgement for many requests and an idle one adds no delay.
    async fn serve_requests(
        self: Arc<Self>,
        mut requests: Subscriber,
        directory: Arc<Directory<Outbox>>,
        max_message_bytes: usize,
        stop: CancellationToken,
    ) {
        let mut acks = Acks::new(format!("{}.verdict.", self.prefix));
        loop {
            // Checked on every turn too: a node that never runs out of requests must
            // still stop.
            if stop.is_cancelled() {
                self.send_acks(&mut acks).await;
                return;
            }
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
                    tokio::select! {
                        () = stop.cancelled() => None,
                        message = requests.next() => message,
                    }
                }
            };
            let Some(message) = message else {
                self.send_acks(&mut acks).await;
                return;
            };
            self.metrics.cluster_routes_received.inc();
            let verdict = judge(&directory, &message.payload, max_message_bytes);
            let Some(reply) = message.reply else {
                continue;
            };
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

    /// Send the acknowledgements gathered so far.
    async fn send_acks(&self, acks: &mut Acks) {
        for (subject, payload) in acks.take() {
            if let Err(err) = self.client.publish(subject, payload.into()).await {
                tracing::debug!(error = %err, "cluster link: cannot acknowledge deliveries");
            }
        }
    }

    /// Hand each verdict to the ROUTE waiting for it; until `stop`.
    async fn collect_verdicts(self: Arc<Self>, mut verdicts: Subscriber, stop: CancellationToken) {
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                message = verdicts.next() => match message {
                    Some(message) => message,
                    None => return,
                },
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
                    if let Some((_, slot)) = outstanding.take(id) {
                        self.fill(&slot, Verdict::Delivered);
                    }
                }
                continue;
            }
            let Some((node, slot)) = token
                .parse::<u64>()
                .ok()
                .and_then(|id| self.outstanding().take(id))
            else {
                continue;
            };
            // NATS answers for the holder when nobody subscribes to its subject.
            let verdict = if message.status == Some(StatusCode::NO_RESPONDERS) {
                self.absent(node)
            } else {
                wire::decode_verdict(&message.payload)
            };
            self.fill(&slot, verdict);
        }
    }

    /// Answer 503 to forwarded ROUTEs whose verdict has not come within the cluster
    /// timeout, and to those owed by a node that has fallen silent for the peer timeout
    /// (it died or froze: waiting longer tells the sender nothing more), checking four
    /// times per timeout and per peer timeout; until `stop`.
    async fn expire_verdicts(self: Arc<Self>, stop: CancellationToken) {
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
            if !owed.is_empty() {
                for node in &silent {
                    if reported.contains(node) {
                        continue;
                    }
                    tracing::warn!(
                        event = "cluster_peer_silent",
                        peer = %node,
                        "cluster: node {node} has sent no heartbeat for {} ms; the ROUTEs \
                         waiting on it get ERR 503 (may not have been delivered)",
                        self.peer_timeout.as_millis()
                    );
                    reported.push(*node);
                }
            }
            for slot in owed {
                self.fill(&slot, Verdict::Silent);
            }
            let Some(before) = Instant::now().checked_sub(self.timeout) else {
                continue;
            };
            let expired = self.outstanding().take_older(before);
            for slot in expired {
                self.fill(&slot, Verdict::TimedOut);
            }
        }
    }

    /// The other nodes heard from once and silent since for the peer timeout. None while
    /// this node's own link is down, or within the peer timeout of its coming back: silence
    /// then says nothing about the others. Nodes silent for [`FORGET_PEER`] are forgotten
    /// (a node restarted every day would otherwise leave an entry a day): the answer for
    /// their addresses stays 404, as for a node never heard of.
    fn silent_peers(&self) -> Vec<NodeId> {
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
    fn absent(&self, node: NodeId) -> Verdict {
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
    async fn beat(&self, presence: wire::Presence) {
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

    /// Record the other nodes' heartbeats and farewells, until `stop`.
    pub(crate) async fn hear_presence(
        self: Arc<Self>,
        mut presence: Subscriber,
        stop: CancellationToken,
    ) {
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                message = presence.next() => match message {
                    Some(message) => message,
                    None => return,
                },
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
            }
        }
    }

    /// Serve this node's subscriptions until `stop`, each in a task of `tasks`, with
    /// requests delivered to `directory`.
    pub(crate) fn serve(
        self: &Arc<Self>,
        subscriptions: Subscriptions,
        directory: Arc<Directory<Outbox>>,
        max_message_bytes: usize,
        tasks: &tokio_util::task::TaskTracker,
        stop: &CancellationToken,
    ) {
        tasks.spawn(Arc::clone(self).serve_requests(
            subscriptions.requests,
            directory,
            max_message_bytes,
            stop.clone(),
        ));
        tasks.spawn(Arc::clone(self).collect_verdicts(subscriptions.verdicts, stop.clone()));
        tasks.spawn(Arc::clone(self).expire_verdicts(stop.clone()));
        tasks.spawn(Arc::clone(self).publish_forwards(subscriptions.outgoing, stop.clone()));
        tasks.spawn(Arc::clone(self).hear_presence(subscriptions.presence, stop.clone()));
        tasks.spawn(Arc::clone(self).keep_beating(stop.clone()));
    }

    /// Close the cluster link: tell the others this node is leaving (its addresses get 404
    /// at once), unsubscribe, and flush what is still to be sent.
    pub(crate) async fn close(&self) {
        if !self.link.is_up() {
            // Nobody to tell; the others notice the silence (peer timeout).
            return;
        }
        self.beat(wire::Presence::Leaving(self.node)).await;
        // On the wire before anything else happens to the connection.
        if let Err(err) = self.client.flush().await {
            tracing::debug!(error = %err, "cluster link: flush failed");
        }
        if let Err(err) = self.client.drain().await {
            tracing::debug!(error = %err, "cluster link: drain failed");
        }
    }
}

/// What this node says to a request from another: the same as for a local ROUTE, once the
/// request has been checked like any input from the network.
fn judge(directory: &Directory<Outbox>, bytes: &[u8], max_message_bytes: usize) -> Verdict {
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
    // A request from another node cannot wait here for a detached session: it is refused
    // at once (rule 6.8), with the same verdict as a full queue.
    let hold = crate::session::Hold::Never;
    match directory.deliver(
        request.address,
        payload.deliver_frame(),
        hold,
        Instant::now(),
    ) {
        Delivery::Queued | Delivery::Held(_) => Verdict::Delivered,
        Delivery::NotFound => Verdict::NotFound,
        Delivery::Full | Delivery::Away => Verdict::Full,
    }
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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

/// A verdict as a metric label.
pub(crate) fn verdict_label(verdict: Verdict) -> VerdictLabel {
    VerdictLabel {
        verdict: match verdict {
            Verdict::Delivered => "delivered",
            Verdict::NotFound => "not_found",
            Verdict::Full => "full",
            Verdict::Unreachable => "unreachable",
            Verdict::Absent => "absent",
            Verdict::TimedOut => "timed_out",
            Verdict::Refused => "refused",
            Verdict::Away => "away",
            Verdict::Silent => "silent",
        },
    }
}
