//! [`Server`]: bind, then run until a shutdown signal; [`Handle`]: look at and stop a
//! running server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::addressing::{Addressing, NodeId, Random, Sealed};
use crate::cluster::{Cluster, Nodes, Subscriptions};
use crate::config::Config;
use crate::directory::Directory;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::remote::{Alone, Remote};
use crate::session::{Limits, Sessions};
use crate::shared::Shared;
use crate::tls::{CertificateInfo, Tls};
use crate::{listener, metrics};

/// A relay whose listeners are bound but not yet serving.
///
/// ```no_run
/// # async fn demo() -> Result<(), compendium_server::Error> {
/// use compendium_server::{Config, Server};
/// let server = Server::bind(Config::ephemeral()).await?;
/// let url = format!("ws://{}", server.local_addrs()[0]); // the real port
/// let handle = server.handle();
/// tokio::spawn(server.run(std::future::pending()));
/// // ... connect clients to `url` ...
/// handle.shutdown(); // graceful: flush, close 1001
/// # Ok(()) }
/// ```
pub struct Server {
    listeners: Vec<TcpListener>,
    addrs: Vec<SocketAddr>,
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    shared: Arc<Shared>,
    /// In cluster mode, this node's subscriptions, served once it runs.
    subscriptions: Option<Subscriptions>,
}

/// A cheap, cloneable view of a server: its live state, and a way to stop it.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Server {
    /// Check `config`, load TLS files, and bind every listener (port 0 picks a free port).
    ///
    /// # Errors
    /// [`Error::Config`] for an unusable setting, [`Error::Tls`] for unusable PEM files,
    /// [`Error::Bind`] for an address that cannot be bound.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        config.validate().map_err(Error::Config)?;
        let tls = config
            .tls
            .as_ref()
            .map(Tls::load)
            .transpose()
            .map_err(Error::Tls)?
            .map(Arc::new);
        if let Some(tls) = &tls {
            let info = tls.info();
            for warning in info.warnings(std::time::SystemTime::now()) {
                tracing::warn!(
                    cert = %tls.files().cert.display(),
                    "the TLS certificate: {warning}"
                );
            }
        }
        let mut listeners = Vec::with_capacity(config.listen.len());
        let mut addrs = Vec::with_capacity(config.listen.len());
        for &addr in &config.listen {
            let (listener, local) = bind(addr).await?;
            listeners.push(listener);
            addrs.push(local);
        }
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(config.max_message_bytes))
            // The reader reserves a frame's announced length up front: never more than a
            // whole message may be.
            .max_frame_size(Some(config.max_message_bytes))
            // tungstenite allocates this read buffer up front (its default is 128 KiB) and
            // grows it to fit each frame it receives; it is also the most it reads per
            // syscall. See `Config::read_buffer_bytes`.
            .read_buffer_size(config.read_buffer_bytes);
        let directory = Arc::new(Directory::new());
        let live_addresses = {
            let directory = Arc::clone(&directory);
            Box::new(move || directory.live())
        };
        // In cluster mode a RESUME may land on any node: the session moves to it
        // (docs/cluster.md, "Resume on any node").
        let sessions = (!config.sessions.grace.is_zero()).then(|| {
            let c = config.sessions;
            Arc::new(Sessions::new(Limits {
                grace: c.grace,
                hold: c.hold,
                max_messages: c.buffer_messages,
                max_bytes: c.buffer_bytes,
                max_detached: c.max_detached,
                max_detached_bytes: c.max_detached_bytes,
                failed_resumes_per_minute: c.failed_resumes_per_minute,
            }))
        });
        let detached_sessions = sessions.as_ref().map(|sessions| {
            let sessions = Arc::clone(sessions);
            Box::new(move || (sessions.detached(), sessions.detached_bytes()))
                as crate::metrics::DetachedSessions
        });
        let metrics = Arc::new(Metrics::new(
            live_addresses,
            config.cluster.is_some(),
            tls.is_some(),
            detached_sessions,
        ));
        if let Some(tls) = &tls {
            metrics
                .tls_certificate_expiry
                .set(tls.info().not_after_unix());
        }
        let (addressing, cluster, subscriptions): (Arc<dyn Addressing>, _, _) =
            match &config.cluster {
                None => (Arc::new(Random), None, None),
                Some(cluster_config) => {
                    let node = NodeId::random()
                        .map_err(|e| Error::Cluster(format!("the OS random source failed: {e}")))?;
                    let (cluster, subscriptions) = Cluster::connect(
                        cluster_config,
                        node,
                        config.max_message_bytes,
                        config.sessions.hold,
                        Arc::clone(&metrics),
                    )
                    .await?;
                    (
                        Arc::new(Sealed::new(&cluster_config.key, node)),
                        Some(cluster),
                        Some(subscriptions),
                    )
                }
            };
        let cluster_timeout = config
            .cluster
            .as_ref()
            .map_or(std::time::Duration::ZERO, |c| c.timeout);
        let remote: Arc<dyn Remote> = match &cluster {
            Some(cluster) => Arc::new(Nodes(Arc::clone(cluster))),
            None => Arc::new(Alone),
        };
        let shared = Arc::new(Shared {
            relay: Relay::new(
                Arc::clone(&directory),
                config.max_msgs_per_sec,
                addressing,
                cluster_timeout,
                sessions,
            ),
            slots: Arc::new(Semaphore::new(config.max_connections)),
            config,
            ws_config,
            metrics,
            shutdown: CancellationToken::new(),
            next_conn: AtomicU64::new(1),
            ended: watch::Sender::new(0),
            directory,
            cluster,
            remote,
            evictions: watch::Sender::new(0),
            refusing: AtomicBool::new(false),
            tls,
            draining: AtomicBool::new(false),
            end_drain: CancellationToken::new(),
            exiting: CancellationToken::new(),
            owed: TaskTracker::new(),
        });
        Ok(Self {
            listeners,
            addrs,
            metrics_listener,
            shared,
            subscriptions,
        })
    }

    /// The bound WebSocket addresses, in the order of [`Config::listen`].
    #[must_use]
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The bound `/healthz` + `/metrics` address, if enabled.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// A handle for looking at and stopping the server once it runs.
    #[must_use]
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serve until `shutdown` completes (or [`Handle::shutdown`] is called), then shut
    /// down gracefully (rule 4.4): stop accepting, flush accepted DELIVERs, close every
    /// connection with 1001, and return within [`Config::shutdown_timeout`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self {
            listeners,
            addrs,
            metrics_listener,
            shared,
            subscriptions,
        } = self;
        let tls = shared.tls.as_ref().map(|tls| tls.acceptor.clone());
        let tasks = TaskTracker::new();
        // The cluster link's tasks stop after the connections, so that ROUTEs still in
        // flight during shutdown get their verdicts.
        let link_stop = CancellationToken::new();
        let link_tasks = TaskTracker::new();
        if let (Some(cluster), Some(subscriptions)) = (&shared.cluster, subscriptions) {
            cluster.serve(
                subscriptions,
                Arc::clone(&shared.directory),
                shared.config.max_message_bytes,
                &link_tasks,
                &link_stop,
            );
            if let Some(grace) = shared.config.cluster.as_ref().map(|c| c.grace) {
                link_tasks.spawn(evict_when_cut_off(
                    Arc::clone(&shared),
                    grace,
                    link_stop.clone(),
                ));
            }
        }
        for listener in listeners {
            tasks.spawn(listener::accept_loop(
                listener,
                tls.clone(),
                Arc::clone(&shared),
                tasks.clone(),
            ));
        }
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let urls: Vec<String> = addrs.iter().map(|a| format!("{scheme}://{a}")).collect();
        let metrics_addr = metrics_listener.as_ref().map(|(_, addr)| *addr);
        if let Some((listener, _)) = metrics_listener {
            tokio::spawn(metrics::serve(
                listener,
                Arc::clone(&shared.metrics),
                shared.shutdown.clone(),
            ));
        }
        // The readiness event (documented in docs/operations.md): one machine-readable
        // line once everything is bound, which tools read instead of matching prose.
        let listen = urls.join(",");
        let metrics = metrics_addr.map(|a| a.to_string()).unwrap_or_default();
        let node = shared
            .cluster
            .as_ref()
            .map(|c| format!("{} ({})", c.node_name(), c.node()))
            .unwrap_or_default();
        let cluster_note = if node.is_empty() {
            String::new()
        } else {
            format!("; cluster node {node}")
        };
        match metrics_addr {
            Some(addr) => tracing::info!(
                event = "ready",
                %listen,
                %metrics,
                %node,
                "listening on {listen}; metrics on http://{addr}/metrics, health on http://{addr}/healthz{cluster_note}"
            ),
            None => tracing::info!(
                event = "ready",
                %listen,
                %metrics,
                %node,
                "listening on {listen}{cluster_note}"
            ),
        }

        tokio::select! {
            () = shutdown => {}
            () = shared.shutdown.cancelled() => {}
        }
        let open = shared.config.max_connections - shared.slots.available_permits();
        let drain = shared
            .config
            .cluster
            .as_ref()
            .map(|c| c.drain_timeout)
            .filter(|timeout| !timeout.is_zero() && shared.relay.sessions().is_some());
        let drain_began = (
            std::time::Instant::now(),
            shared.relay.sessions().map_or(0, |s| s.moved()),
        );
        match drain {
            Some(timeout) => {
                shared.draining.store(true, Ordering::Release);
                tracing::info!(
                    event = "drain_started",
                    open_connections = open,
                    "draining: closing connections (resumable ones with 1012: resume elsewhere) and \
                     handing their sessions to the nodes they resume on, for at most {} s",
                    timeout.as_secs_f64()
                );
            }
            None => tracing::info!(open_connections = open, "shutting down"),
        }
        shared.shutdown.cancel();
        tasks.close();
        if tokio::time::timeout(shared.config.shutdown_timeout, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open_connections = shared.config.max_connections - shared.slots.available_permits(),
                "shutdown timeout reached with connections still closing"
            );
        }
        if let (Some(timeout), Some(sessions)) = (drain, shared.relay.sessions()) {
            crate::drain::wait_for_handovers(sessions, drain_began, timeout, &shared.end_drain)
                .await;
        }
        if let Some(cluster) = &shared.cluster {
            // The verdicts still owed to sessions that left resolve within 1¼ cluster
            // timeouts (the link's tasks answer 503 when they do not come), or later only
            // for a ROUTE held for a detached target: those are not waited for.
            shared.owed.close();
            let patience = cluster.timeout() + cluster.timeout() / 4 + Duration::from_millis(100);
            if tokio::time::timeout(patience, shared.owed.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    "some refusals owed to sessions that left this node were not settled within \
                     {} ms; they are lost with it",
                    patience.as_millis()
                );
            }
        }
        shared.exiting.cancel();
        if let Some(cluster) = &shared.cluster {
            link_stop.cancel();
            link_tasks.close();
            // NATS may be gone, and a flush would wait for it forever: give the farewell
            // three cluster timeouts, no more (one for sessions that just moved on to pass
            // on what still reaches this node for them, one for the other nodes to confirm
            // the farewell, one for NATS to take the last of it).
            let closing = async {
                link_tasks.wait().await;
                cluster.close().await;
            };
            if tokio::time::timeout(3 * cluster.timeout(), closing)
                .await
                .is_err()
            {
                tracing::warn!(
                    "cluster link: NATS did not take this node's farewell within {} s; \
                     stopping anyway (its addresses get 404 elsewhere after the peer timeout)",
                    (3 * cluster.timeout()).as_secs_f64()
                );
            }
        }
        tracing::info!("stopped");
    }
}

/// Close every connection (1001) and refuse new ones (HTTP 503) while the node has been
/// cut off from its cluster for longer than `grace`: its clients are better served by a
/// node that can reach everyone. When the link is back, accept again.
async fn evict_when_cut_off(
    shared: Arc<Shared>,
    grace: std::time::Duration,
    stop: CancellationToken,
) {
    let Some(cluster) = &shared.cluster else {
        return;
    };
    let mut link = cluster.link().watch();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = link.wait_for(|link| !link.up) => if changed.is_err() { return },
        }
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tokio::time::sleep(grace) => {}
            back = link.wait_for(|link| link.up) => if back.is_err() { return } else { continue },
        }
        let open = shared.config.max_connections - shared.slots.available_permits();
        tracing::warn!(
            event = "cluster_evicting",
            open_connections = open,
            "cut off from the cluster for {} s: closing every connection (1001) and refusing \
             new ones until the link is back",
            grace.as_secs_f64()
        );
        shared.refusing.store(true, Ordering::Release);
        shared.metrics.cluster_evictions.inc_by(open as u64);
        shared.evictions.send_modify(|n| *n += 1);
        tokio::select! {
            () = stop.cancelled() => return,
            back = link.wait_for(|link| link.up) => if back.is_err() { return },
        }
        shared.refusing.store(false, Ordering::Release);
        tracing::info!("the cluster link is back: accepting connections again");
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    Ok((listener, local))
}

impl Handle {
    /// Read the `wss://` certificate and key files again (what SIGHUP does): new handshakes
    /// get the new certificate, open connections keep the session they have. If the new
    /// files are unusable, the certificate in use stays and the error names the file. Logs
    /// either way and counts it in `compendium_tls_reloads_total`.
    ///
    /// # Errors
    /// [`Error::Tls`]: unusable files, or a server without TLS.
    pub fn reload_tls(&self) -> Result<CertificateInfo, Error> {
        let Some(tls) = &self.shared.tls else {
            return Err(Error::Tls(
                "this server does not serve wss:// (no certificate given): nothing to reload"
                    .to_owned(),
            ));
        };
        let metrics = &self.shared.metrics;
        match tls.reload() {
            Ok(info) => {
                metrics.tls_certificate_expiry.set(info.not_after_unix());
                metrics.tls_reloads(true).inc();
                tracing::info!(
                    event = "tls_reloaded",
                    cert = %tls.files().cert.display(),
                    not_after = %compendium_cli_support::rfc3339(info.not_after),
                    names = ?info.names,
                    "TLS certificate reloaded: new connections get it"
                );
                for warning in info.warnings(std::time::SystemTime::now()) {
                    tracing::warn!(cert = %tls.files().cert.display(), "the TLS certificate: {warning}");
                }
                Ok(info)
            }
            Err(err) => {
                metrics.tls_reloads(false).inc();
                tracing::error!(
                    event = "tls_reload_failed",
                    error = %err,
                    "TLS reload failed; still serving the previous certificate"
                );
                Err(Error::Tls(err))
            }
        }
    }

    /// End a drain now (what a second SIGTERM does): the node stops waiting for its
    /// sessions to move and exits; those left end with it. Nothing happens otherwise.
    pub fn end_drain(&self) {
        if self.shared.draining.load(Ordering::Acquire) && !self.shared.end_drain.is_cancelled() {
            tracing::warn!("signal received again: ending the drain now");
        }
        self.shared.end_drain.cancel();
    }

    /// What the `wss://` certificate in use says (validity, names), if the server has one.
    #[must_use]
    pub fn tls_certificate(&self) -> Option<CertificateInfo> {
        self.shared.tls.as_ref().map(|tls| tls.info())
    }

    /// How many addresses are live (assigned to an open connection).
    #[must_use]
    pub fn live_addresses(&self) -> usize {
        self.shared.relay.directory().live()
    }

    /// How many WebSocket connections are open.
    #[must_use]
    pub fn open_connections(&self) -> usize {
        self.shared.config.max_connections - self.shared.slots.available_permits()
    }

    /// How many WebSocket connections have ended since the server started.
    #[must_use]
    pub fn ended_connections(&self) -> u64 {
        *self.shared.ended.borrow()
    }

    /// Wait until at least `count` version 2 sessions are detached (kept for their grace
    /// after their connection was lost), so that tests and embedders await that event
    /// instead of polling. Never returns when version 2 is off.
    pub async fn detached_sessions(&self, count: usize) {
        let Some(sessions) = self.shared.relay.sessions() else {
            return std::future::pending().await;
        };
        let mut ended = self.shared.ended.subscribe();
        // A session detaches before its connection counts as ended.
        while sessions.detached() < count {
            if ended.changed().await.is_err() {
                return;
            }
        }
    }

    /// Wait until at least `count` connections have ended since the server started —
    /// each with its address released and its connection slot freed.
    pub async fn wait_for_ended_connections(&self, count: u64) {
        let mut ended = self.shared.ended.subscribe();
        // The sender lives in `Shared`, which this handle keeps alive: this cannot fail.
        let _ = ended.wait_for(|n| *n >= count).await;
    }

    /// The Prometheus text that `/metrics` serves.
    #[must_use]
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render()
    }

    /// In cluster mode, whether this node's link to NATS is up; `None` for a single relay.
    #[must_use]
    pub fn cluster_link_up(&self) -> Option<bool> {
        self.shared.cluster.as_ref().map(|c| c.link().is_up())
    }

    /// In cluster mode, the NATS server this node is (or was last) connected to, as
    /// `host:port`.
    #[must_use]
    pub fn cluster_nats_server(&self) -> Option<String> {
        self.shared.cluster.as_ref().map(|c| c.nats_server())
    }

    /// In cluster mode, wait until this node's link to NATS is `up` (or down); returns at
    /// once for a single relay.
    pub async fn wait_for_cluster_link(&self, up: bool) {
        if let Some(cluster) = &self.shared.cluster {
            let mut link = cluster.link().watch();
            // The sender lives in the cluster link, which this handle keeps alive.
            let _ = link.wait_for(|now| now.up == up).await;
        }
    }

    /// In cluster mode, wait until this node has lost its link to NATS `count` times
    /// since it started, whether or not it is back; returns at once for a single relay.
    /// (Waiting for the link to be down can miss a failover that takes milliseconds.)
    pub async fn wait_for_cluster_link_losses(&self, count: u64) {
        if let Some(cluster) = &self.shared.cluster {
            let mut link = cluster.link().watch();
            let _ = link.wait_for(|now| now.losses >= count).await;
        }
    }

    /// Begin a graceful shutdown; [`Server::run`] returns when it is done.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }
}
