//! Test support: our relay in-process, and a small relay with deliberate faults.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod toy_relay;

use std::time::Duration;

use compendium_server::{Config, Server};

/// Start our relay on the current runtime; its URL.
pub async fn our_relay(config: Config) -> String {
    let server = Server::bind(config).await.expect("bind");
    let url = format!("ws://{}", server.local_addrs()[0]);
    tokio::spawn(server.run(std::future::pending()));
    url
}

/// Our relay with short timers, a rate limit and a connection limit: for the optional
/// and timer cases (3.9, 4.x), which a default relay would make wait or skip.
pub fn tight_config() -> Config {
    let mut config = Config::ephemeral();
    config.max_msgs_per_sec = Some(200);
    config.ping_interval = Duration::from_millis(100);
    config.idle_timeout = Duration::from_millis(400);
    config.handshake_timeout = Duration::from_millis(300);
    config.max_connections = 40;
    config
}

pub const TIGHT_MAX_CONNECTIONS: usize = 40;
