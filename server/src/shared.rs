//! [`Shared`]: what every connection task of one server shares — the rules, the
//! directory, the other nodes, the limits and the lifecycle signals. Built by
//! [`Server::bind`](crate::Server::bind); read by the listener and the connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::directory::Directory;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::relay::Relay;
use crate::remote::Remote;
use crate::tls::Tls;

/// What every connection task of one server shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) ws_config: WebSocketConfig,
    pub(crate) relay: Relay<Outbox>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) next_conn: AtomicU64,
    /// One permit per open connection (rule 4.3).
    pub(crate) slots: Arc<Semaphore>,
    /// Counts connections that have fully ended (address released, slot freed), so that
    /// tests and embedders can await that event instead of polling.
    pub(crate) ended: watch::Sender<u64>,
    /// This node's live addresses (also inside `relay`), which requests from other nodes
    /// are delivered to.
    pub(crate) directory: Arc<Directory<Outbox>>,
    /// The link to the other nodes, in cluster mode (its lifecycle: serving, closing).
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// The other nodes as connections reach them: the cluster, or
    /// [`Alone`](crate::remote::Alone).
    pub(crate) remote: Arc<dyn Remote>,
    /// Bumped to close every connection (1001) when the node is cut off from its cluster
    /// for longer than the grace period.
    pub(crate) evictions: watch::Sender<u64>,
    /// While set, new handshakes get HTTP 503: the node is cut off from its cluster.
    pub(crate) refusing: AtomicBool,
    /// `wss://`: the certificate in use, reloadable.
    pub(crate) tls: Option<Arc<Tls>>,
    /// The node is draining (cluster mode, SIGTERM): its resumable connections close with
    /// 1012 and their sessions stay, for other nodes to claim (docs/cluster.md, "Drain").
    pub(crate) draining: AtomicBool,
    /// Ends a drain before its timeout (a second SIGTERM).
    pub(crate) end_drain: CancellationToken,
    /// Cancelled when the node is about to exit, after its connections and its drain:
    /// what detached sessions' expiry tasks stop on.
    pub(crate) exiting: CancellationToken,
    /// The tasks that put the refusals of a version 2 session's ROUTEs still waiting for a
    /// verdict when its connection ended into its stream (`connection.rs`), wherever the
    /// session is by then. A leaving node waits for them before it leaves the cluster:
    /// their sessions moved on in the drain, and a refusal that dies with this node would
    /// be a message lost unawares (the client was told the ROUTE was taken).
    pub(crate) owed: tokio_util::task::TaskTracker,
}
