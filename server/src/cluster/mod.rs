//! Cluster mode: nodes joined through NATS behave as one relay (docs/cluster.md).
//!
//! Each node holds only its own connections' addresses; an address says which node holds
//! it (`addressing::Sealed`). A ROUTE to another node's address is published once to that
//! node's subject with a reply subject naming the request; the node delivers it to its
//! directory exactly as it would a local ROUTE and answers one byte, the verdict. Each
//! node has four subscriptions — its requests, its verdicts, the cluster's presence beats
//! and claims for its sessions — whatever its number of connections; a session that moved
//! to another node (`handover`) adds one, at the node that holds it. Everything else (INIT, re-INIT,
//! release, routes between two connections of one node) never touches NATS.
//!
//! When nobody subscribes to the holder's subject, NATS answers "no responders". That
//! means the node is gone — or failing over between NATS servers. Heartbeats tell the two
//! apart: a node heard from within the peer timeout is presumed alive (the sender gets
//! 503: try again), a node silent for longer, or that said it was leaving, is gone (404).

mod forwarding;
mod handover;
mod handover_wire;
mod inbound;
mod link;
mod outstanding;
mod presence;
mod seam;
mod serving;
mod urls;
mod verdicts;
mod wire;

pub(crate) use link::LinkState;
pub(crate) use seam::Nodes;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::{ConnectOptions, Subscriber};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::addressing::NodeId;
use crate::config::ClusterConfig;
use crate::directory::Directory;
use crate::error::Error;
use crate::metrics::{Metrics, NodeLabels};
use crate::outbox::Outbox;

use self::forwarding::Outgoing;
use self::outstanding::Outstanding;
use self::presence::Peer;

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
    /// This node's directory, once it serves: where requests and claims are answered from.
    directory: OnceLock<Arc<Directory<Outbox>>>,
    max_message_bytes: usize,
    /// How long a ROUTE may be held for a detached session (`--resume-hold`): a sender
    /// told its ROUTE is held waits that much longer for the verdict.
    hold: Duration,
    /// For each session that moved (by address), this node's stream of ROUTEs to it: its
    /// id and the last number used (`forwarding.rs`).
    session_streams: Mutex<HashMap<compendium_messages::Address, (u32, u64)>>,
    next_stream: AtomicU64,
    /// The tasks serving the subjects of sessions that moved here (`handover.rs`): a
    /// leaving node waits for those that let their session go to finish passing on.
    roaming: tokio_util::task::TaskTracker,
    /// The refusals of ROUTEs accepted here for sessions that moved on, on their way to
    /// the sessions' subjects (`handover.rs`): published before the link closes.
    late_errs: tokio_util::task::TaskTracker,
    /// Stops the heartbeat, in [`Cluster::close`]: a node passing on ROUTEs as it leaves
    /// is still alive, and must not look dead to the others before it says goodbye.
    leaving: CancellationToken,
    /// The heartbeat task, which has ended before the farewell is said.
    beating: tokio_util::task::TaskTracker,
    /// Cancelled in [`Cluster::close`] once every other node has heard the farewell:
    /// what the tasks serving this node's requests and claims stop on (see `close`).
    departed: CancellationToken,
    /// The tasks serving this node's requests and claims, which outlive the others.
    answering: tokio_util::task::TaskTracker,
}

/// This node's subscriptions, served once the relay runs, and the queue of ROUTEs to
/// publish.
pub(crate) struct Subscriptions {
    requests: Subscriber,
    verdicts: Subscriber,
    presence: Subscriber,
    claims: Subscriber,
    outgoing: mpsc::UnboundedReceiver<Outgoing>,
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
        hold: Duration,
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
            // A session's move is answered on inboxes (cluster/handover.rs): under the
            // prefix too, so that the relay's user needs no subject outside it.
            .custom_inbox_prefix(format!("{}._INBOX", config.subject_prefix))
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
        let claims = client
            .subscribe(format!("{prefix}.claim.{node}"))
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
            directory: OnceLock::new(),
            max_message_bytes,
            hold,
            session_streams: Mutex::new(HashMap::new()),
            next_stream: AtomicU64::new(1),
            roaming: tokio_util::task::TaskTracker::new(),
            late_errs: tokio_util::task::TaskTracker::new(),
            leaving: CancellationToken::new(),
            beating: tokio_util::task::TaskTracker::new(),
            departed: CancellationToken::new(),
            answering: tokio_util::task::TaskTracker::new(),
        });
        // The others hear of this node before it hands out its first address.
        cluster.beat(wire::Presence::Beat(node)).await;
        Ok((
            cluster,
            Subscriptions {
                requests,
                verdicts,
                presence,
                claims,
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

    /// Serve this node's subscriptions until `stop`, each in a task of `tasks`, with
    /// requests delivered to `directory` — but its requests and claims, which are
    /// answered until [`Cluster::close`] has said goodbye.
    pub(crate) fn serve(
        self: &Arc<Self>,
        subscriptions: Subscriptions,
        directory: Arc<Directory<Outbox>>,
        max_message_bytes: usize,
        tasks: &tokio_util::task::TaskTracker,
        stop: &CancellationToken,
    ) {
        let _ = self.directory.set(Arc::clone(&directory));
        self.answering
            .spawn(Arc::clone(self).serve_claims(subscriptions.claims, self.departed.clone()));
        self.answering.spawn(Arc::clone(self).serve_requests(
            subscriptions.requests,
            directory,
            max_message_bytes,
            self.departed.clone(),
        ));
        tasks.spawn(Arc::clone(self).collect_verdicts(subscriptions.verdicts, stop.clone()));
        tasks.spawn(Arc::clone(self).expire_verdicts(stop.clone()));
        tasks.spawn(Arc::clone(self).publish_forwards(subscriptions.outgoing, stop.clone()));
        // The others' presence too: the farewell waits for those heard from lately.
        self.answering
            .spawn(Arc::clone(self).hear_presence(subscriptions.presence, self.departed.clone()));
        self.beating
            .spawn(Arc::clone(self).keep_beating(self.leaving.clone()));
    }

    /// Close the cluster link: tell the others this node is leaving (its addresses get 404
    /// at once), unsubscribe, and flush what is still to be sent. Takes up to three
    /// cluster timeouts (passing on, the farewell, NATS taking the last of it).
    pub(crate) async fn close(&self) {
        // A session that moved on from here a moment ago may still have ROUTEs on their way
        // to this node (`handover.rs`): pass them on first. Those still held here (a drain
        // that timed out) are not waited for beyond the cluster timeout.
        self.roaming.close();
        let _ = tokio::time::timeout(self.timeout, self.roaming.wait()).await;
        self.late_errs.close();
        let _ = tokio::time::timeout(self.timeout, self.late_errs.wait()).await;
        // No heartbeat after the farewell (it would bring this node back to life).
        self.leaving.cancel();
        self.beating.close();
        self.beating.wait().await;
        if !self.link.is_up() {
            // Nobody to tell; the others notice the silence (peer timeout).
            self.departed.cancel();
            return;
        }
        // Requests and claims are answered until every other node has heard the farewell:
        // after it, none sends this node anything more, and what each sent before is
        // here already (`presence.rs`). Unsubscribing earlier would lose requests on
        // their way here: the NATS client drops what arrives for a subscription it has
        // let go, and NATS, having delivered them, sends no "no responders".
        self.leave().await;
        self.departed.cancel();
        self.answering.close();
        self.answering.wait().await;
        // On the wire before anything else happens to the connection.
        if let Err(err) = self.client.flush().await {
            tracing::debug!(error = %err, "cluster link: flush failed");
        }
        if let Err(err) = self.client.drain().await {
            tracing::debug!(error = %err, "cluster link: drain failed");
        }
    }
}

/// The next message of `subscriber`, or `None` once `stop` is cancelled or the
/// subscription ends: how each of the node's subscription tasks waits.
async fn next_until(
    subscriber: &mut Subscriber,
    stop: &CancellationToken,
) -> Option<async_nats::Message> {
    tokio::select! {
        () = stop.cancelled() => None,
        message = futures_util::StreamExt::next(subscriber) => message,
    }
}

/// The next message of `subscriber`; once `departed` (every other node has heard this one
/// leave), only those that have reached this node already, then `None`. How the tasks
/// that answer requests and claims wait: they never unsubscribe early (see
/// [`Cluster::close`]).
async fn next_until_departed(
    subscriber: &mut Subscriber,
    departed: &CancellationToken,
) -> Option<async_nats::Message> {
    if departed.is_cancelled() {
        return buffered(subscriber);
    }
    tokio::select! {
        biased;
        message = futures_util::StreamExt::next(subscriber) => message,
        () = departed.cancelled() => buffered(subscriber),
    }
}

/// The next message that has reached this node for `subscriber`, if any, without
/// waiting. Unconstrained: within tokio's cooperative budget a busy task would be told
/// "nothing yet" of a message that is there, and take it for the end.
fn buffered(subscriber: &mut Subscriber) -> Option<async_nats::Message> {
    futures_util::FutureExt::now_or_never(tokio::task::unconstrained(
        futures_util::StreamExt::next(subscriber),
    ))
    .flatten()
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
