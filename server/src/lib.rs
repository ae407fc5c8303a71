//! The Compendium WebSocket relay (docs/protocol.md).
//!
//! Clients connect, ask for an ephemeral address (`INIT`), and route JSON objects to each
//! other's addresses (`ROUTE` → `DELIVER`). The relay validates every message against the
//! protocol schema, forwards `msg` byte for byte, bounds every queue, and keeps no state
//! beyond its live connections.
//!
//! Layout, after quinn's protocol/IO split:
//! - `relay` — the rules, with no sockets and no clock: frame in, [`Outcome`](relay) out;
//! - `directory` — this node's live addresses → connection mailboxes;
//! - `connection` — one task per connection, one `select!`, moving bytes;
//! - `listener` — accept, TLS, handshake, limits; `server` — bind, run, shut down.
//!
//! Embed it with [`Server::bind`] then [`Server::run`]; the `compendium-server` binary is
//! a thin CLI over the same calls.

mod addressing;
mod burst;
mod cluster;
mod config;
mod connection;
mod directory;
mod drain;
mod error;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
mod listener;
mod metrics;
mod outbox;
mod rate;
mod relay;
mod remote;
mod server;
mod session;
mod shared;
mod tls;

pub use config::{
    ClusterConfig, ClusterKey, Config, DEFAULT_CLUSTER_CONNECT_TIMEOUT, DEFAULT_CLUSTER_GRACE,
    DEFAULT_CLUSTER_HEARTBEAT, DEFAULT_CLUSTER_PEER_TIMEOUT, DEFAULT_CLUSTER_PING_INTERVAL,
    DEFAULT_CLUSTER_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, DEFAULT_READ_BUFFER_BYTES,
    DEFAULT_SUBJECT_PREFIX, MAX_RESUME_GRACE, SessionConfig, TlsFiles, default_node_name,
};
pub use error::Error;
pub use server::{Handle, Server};
pub use tls::CertificateInfo;
/// `--tls-self-signed`: a development CA and certificate for `wss://` on a LAN.
pub use tls::dev as dev_certificate;

/// The `errMsg` of ERR 404, exactly as the first implementation sent it (rule 3.6).
pub const NOT_FOUND_TEXT: &str = relay::NOT_FOUND_TEXT;
