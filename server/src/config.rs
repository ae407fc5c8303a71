//! [`Config`]: every limit and timeout of the relay, with the defaults the CLI shows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::addressing::ClusterKey;

/// How a relay listens and what it allows. `Config::default()` is the CLI's defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where to accept WebSocket connections; port 0 picks a free port
    /// (see [`Server::local_addrs`](crate::Server::local_addrs)).
    pub listen: Vec<SocketAddr>,
    /// Serve `wss://` with this certificate chain and key; plain `ws://` when `None`.
    pub tls: Option<TlsFiles>,
    /// Largest message accepted; a larger one closes its connection with 1009 (rule 1.4).
    pub max_message_bytes: usize,
    /// Frames waiting for one slow connection before ROUTEs to it get 503 (rule 3.8).
    pub max_queue: usize,
    /// Bytes waiting for one slow connection before ROUTEs to it get 503 (rule 3.8).
    /// A message is always accepted into an empty queue, so this bounds memory at about
    /// `max_queue_bytes + max_message_bytes` per connection.
    pub max_queue_bytes: usize,
    /// Messages per second one connection may send; over it, ERR 429 (rule 3.9).
    /// `None`: unlimited.
    pub max_msgs_per_sec: Option<u32>,
    /// How often the server pings each connection (rule 4.1).
    pub ping_interval: Duration,
    /// A connection that sends nothing (no frame, no pong) for this long is closed (rule 4.1).
    pub idle_timeout: Duration,
    /// A TCP connection must complete its TLS and WebSocket handshakes within this (rule 4.2).
    pub handshake_timeout: Duration,
    /// Open WebSocket connections allowed; beyond, new handshakes get HTTP 503 (rule 4.3).
    pub max_connections: usize,
    /// On shutdown, how long connections get to flush and close before the server exits
    /// (rule 4.4).
    pub shutdown_timeout: Duration,
    /// Serve `GET /healthz` and `GET /metrics` (Prometheus text) here; off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// Each connection's initial read buffer, which is also the most read per syscall.
    /// Small keeps idle connections cheap (the buffer grows to fit larger frames); large
    /// saves syscalls for large messages. See docs/performance.md.
    pub read_buffer_bytes: usize,
    /// Join other nodes through NATS so that they behave as one relay (docs/cluster.md);
    /// `None`: a single relay, nothing else needed.
    pub cluster: Option<ClusterConfig>,
    /// Version 2 (resumable) sessions (docs/protocol.md section 6).
    pub sessions: SessionConfig,
}

/// How long version 2 sessions outlive their connections and what they may hold
/// (docs/protocol.md section 6, docs/operations.md "Sizing sessions").
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SessionConfig {
    /// How long a session is kept after its connection is lost without END; zero turns
    /// version 2 off (the relay then selects no subprotocol). At most [`MAX_RESUME_GRACE`].
    pub grace: Duration,
    /// How long a ROUTE to a detached session is held, waiting for it to resume, before
    /// its sender gets 503 (rule 6.8). At most `grace`.
    pub hold: Duration,
    /// Messages a session keeps until its client acknowledges them (and holds while
    /// detached); beyond, ROUTEs to it get 503.
    pub buffer_messages: usize,
    /// Bytes a session keeps until acknowledged; beyond, ROUTEs to it get 503.
    pub buffer_bytes: usize,
    /// Detached sessions this node keeps; a connection lost beyond it ends its session.
    pub max_detached: usize,
    /// Bytes all detached sessions of this node keep; beyond, held ROUTEs get 503 and a
    /// connection lost beyond it ends its session.
    pub max_detached_bytes: usize,
    /// Failed RESUMEs allowed per client IP address per minute (rule 6.9).
    pub failed_resumes_per_minute: u32,
}

/// The longest [`SessionConfig::grace`] allowed: an hour.
pub const MAX_RESUME_GRACE: Duration = Duration::from_secs(3600);

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(120),
            hold: Duration::from_secs(10),
            buffer_messages: 256,
            buffer_bytes: 1 << 20,
            max_detached: 10_000,
            max_detached_bytes: 256 << 20,
            failed_resumes_per_minute: 10,
        }
    }
}

impl SessionConfig {
    fn validate(&self) -> Result<(), String> {
        if self.grace > MAX_RESUME_GRACE {
            return Err(format!(
                "resume grace {} s is above the cap of {} s: a detached session holds its \
                 address and buffer for that long",
                self.grace.as_secs(),
                MAX_RESUME_GRACE.as_secs()
            ));
        }
        if self.grace.is_zero() {
            return Ok(());
        }
        if self.hold.is_zero() || self.hold > self.grace {
            return Err(format!(
                "resume hold {} s must be more than zero and at most the resume grace ({} s)",
                self.hold.as_secs_f64(),
                self.grace.as_secs()
            ));
        }
        let positive = [
            ("resume buffer messages", self.buffer_messages),
            ("resume buffer bytes", self.buffer_bytes),
            ("max detached sessions", self.max_detached),
            ("max detached bytes", self.max_detached_bytes),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.failed_resumes_per_minute == 0 {
            return Err("failed resumes per minute must be at least 1".into());
        }
        Ok(())
    }
}

/// How a node joins its cluster (docs/cluster.md).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:4222`, `tls://…`, user and password allowed in the
    /// URL). The node connects to one and fails over to the others.
    pub urls: Vec<String>,
    /// The key every node of the cluster shares; it seals node ids into addresses.
    pub key: ClusterKey,
    /// The first token of every subject the cluster uses, so that several clusters can
    /// share one NATS (and NATS permissions can be given per prefix).
    pub subject_prefix: String,
    /// A NATS credentials file (JWT and nkey seed), if the NATS server requires one.
    pub credentials: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for `tls://` NATS URLs, besides the system's roots.
    pub tls_ca: Option<PathBuf>,
    /// This node's name in logs, metrics and its NATS connection name.
    pub node_name: String,
    /// How long a ROUTE to another node waits for its verdict before its sender gets 503.
    pub timeout: Duration,
    /// How long the node goes on serving its clients after losing NATS before it closes
    /// them (1001) so that they reconnect to a node that still has its cluster.
    pub grace: Duration,
    /// On SIGTERM, how long the node waits for its resumable sessions to move to other
    /// nodes before it exits (docs/cluster.md, "Drain"); zero: no drain, sessions end with
    /// the node.
    pub drain_timeout: Duration,
    /// How often the node pings its NATS server (two unanswered pings drop the link).
    pub ping_interval: Duration,
    /// How long startup waits to connect before it gives up with an error.
    pub connect_timeout: Duration,
    /// How often the node tells the others it is alive.
    pub heartbeat: Duration,
    /// How long after its last heartbeat a silent node is presumed dead: until then a
    /// ROUTE to its addresses gets 503 (it may be failing over between NATS servers),
    /// after it 404. Keep it above a NATS failover and below a second.
    pub peer_timeout: Duration,
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err("cluster mode needs at least one NATS URL".into());
        }
        let prefix_ok = !self.subject_prefix.is_empty()
            && self.subject_prefix.split('.').all(|token| {
                !token.is_empty()
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !prefix_ok {
            return Err(format!(
                "cluster subject prefix {:?} must be dot-separated tokens of letters, digits, - and _",
                self.subject_prefix
            ));
        }
        let durations = [
            ("cluster timeout", self.timeout),
            ("cluster grace", self.grace),
            ("cluster ping interval", self.ping_interval),
            ("cluster connect timeout", self.connect_timeout),
            ("cluster heartbeat", self.heartbeat),
            ("cluster peer timeout", self.peer_timeout),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("{name} must be greater than zero"));
        }
        if self.peer_timeout <= self.heartbeat * 2 {
            return Err(format!(
                "the cluster peer timeout ({} ms) must be more than two heartbeats ({} ms each), \
                 or live nodes would be presumed dead",
                self.peer_timeout.as_millis(),
                self.heartbeat.as_millis()
            ));
        }
        Ok(())
    }

    /// A node of the cluster reached through `urls`, sharing `key`; every other setting
    /// has its default (docs/cluster.md).
    #[must_use]
    pub fn new(urls: Vec<String>, key: ClusterKey) -> Self {
        Self {
            urls,
            key,
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_owned(),
            credentials: None,
            tls_ca: None,
            node_name: default_node_name(),
            timeout: DEFAULT_CLUSTER_TIMEOUT,
            grace: DEFAULT_CLUSTER_GRACE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            ping_interval: DEFAULT_CLUSTER_PING_INTERVAL,
            connect_timeout: DEFAULT_CLUSTER_CONNECT_TIMEOUT,
            heartbeat: DEFAULT_CLUSTER_HEARTBEAT,
            peer_timeout: DEFAULT_CLUSTER_PEER_TIMEOUT,
        }
    }
}

/// The default of [`ClusterConfig::subject_prefix`].
pub const DEFAULT_SUBJECT_PREFIX: &str = "compendium";
/// The default of [`ClusterConfig::timeout`].
pub const DEFAULT_CLUSTER_TIMEOUT: Duration = Duration::from_secs(2);
/// The default of [`ClusterConfig::grace`].
pub const DEFAULT_CLUSTER_GRACE: Duration = Duration::from_secs(30);
/// The default of [`ClusterConfig::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The default of [`ClusterConfig::ping_interval`].
pub const DEFAULT_CLUSTER_PING_INTERVAL: Duration = Duration::from_secs(5);
/// The default of [`ClusterConfig::connect_timeout`].
pub const DEFAULT_CLUSTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default of [`ClusterConfig::heartbeat`].
pub const DEFAULT_CLUSTER_HEARTBEAT: Duration = Duration::from_millis(100);
/// The default of [`ClusterConfig::peer_timeout`].
pub const DEFAULT_CLUSTER_PEER_TIMEOUT: Duration = Duration::from_millis(800);

/// The machine's host name, or "compendium" if it cannot be read.
pub fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "compendium".to_owned())
}

/// The default of [`Config::read_buffer_bytes`].
pub const DEFAULT_READ_BUFFER_BYTES: usize = 512;

/// PEM files for `wss://`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8001))],
            tls: None,
            max_message_bytes: 1 << 20,
            max_queue: 1024,
            max_queue_bytes: 16 << 20,
            max_msgs_per_sec: None,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            shutdown_timeout: Duration::from_secs(10),
            metrics_listen: None,
            read_buffer_bytes: DEFAULT_READ_BUFFER_BYTES,
            cluster: None,
            sessions: SessionConfig::default(),
        }
    }
}

impl Config {
    /// A config for tests and embedding: everything default, but listening on
    /// `127.0.0.1:0` (a free port).
    #[must_use]
    pub fn ephemeral() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ..Self::default()
        }
    }

    /// Reject settings that cannot work, with a message naming the setting.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.listen.is_empty() {
            return Err("no listen address given".into());
        }
        if self.max_message_bytes < 64 << 10 {
            return Err(format!(
                "max message size {} is below the protocol's minimum of 65536 bytes (rule 1.4)",
                self.max_message_bytes
            ));
        }
        let positive = [
            ("max queue", self.max_queue),
            ("max queue bytes", self.max_queue_bytes),
            ("max connections", self.max_connections),
            ("read buffer bytes", self.read_buffer_bytes),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.max_msgs_per_sec == Some(0) {
            return Err(
                "max messages per second must be at least 1 (leave it unset for no limit)".into(),
            );
        }
        let durations = [
            ("ping interval", self.ping_interval),
            ("idle timeout", self.idle_timeout),
            ("handshake timeout", self.handshake_timeout),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("{name} must be greater than zero"));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        self.sessions.validate()
    }
}
