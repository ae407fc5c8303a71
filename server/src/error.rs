//! [`Error`]: why a server could not start.

use std::fmt;
use std::net::SocketAddr;

/// Why [`Server::bind`](crate::Server::bind) failed. Each variant says what to fix.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A setting cannot work (e.g. a zero timeout); the message names it. Fix the config.
    Config(String),
    /// The TLS certificate or key could not be used; the message names the file and the
    /// problem. Check the PEM files.
    Tls(String),
    /// Cluster mode could not start: NATS unreachable, credentials refused, a NATS
    /// `max_payload` below `max_message_bytes`, a key that is not one; the message says
    /// which and names the URLs or file.
    Cluster(String),
    /// A listen address could not be bound (in use, not local, no permission).
    Bind {
        /// The address that failed.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(message) => write!(f, "invalid configuration: {message}"),
            Self::Tls(message) => write!(f, "TLS: {message}"),
            Self::Cluster(message) => write!(f, "cluster: {message}"),
            Self::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Bind { source, .. } => Some(source),
            _ => None,
        }
    }
}
