//! [`Config`]: every limit and timeout of the relay, with the defaults the CLI shows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// saves syscalls for large messages. See the README's performance section.
    pub read_buffer_bytes: usize,
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
        Ok(())
    }
}
