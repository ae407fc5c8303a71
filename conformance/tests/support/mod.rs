//! Test support: our relay in-process, and a small relay with deliberate faults.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod suite;
pub mod toy_relay;

use std::time::Duration;

use compendium_harness::Nats;
use compendium_server::{ClusterConfig, ClusterKey, Config, Server};

/// Start our relay on the current runtime; its URL.
pub async fn our_relay(config: Config) -> String {
    let server = Server::bind(config).await.expect("bind");
    let url = format!("ws://{}", server.local_addrs()[0]);
    tokio::spawn(server.run(std::future::pending()));
    url
}

/// `nodes` of our relay joined through a real nats-server (returned: it must outlive the
/// nodes), each with `config` plus cluster mode; their URLs.
pub async fn our_cluster(nodes: usize, config: impl Fn() -> Config) -> (Nats, Vec<String>) {
    let nats = Nats::start().expect("nats-server starts");
    let key = ClusterKey::from_hex("00112233445566778899aabbccddeeff").expect("key");
    let mut urls = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let mut node = config();
        let mut cluster = ClusterConfig::new(vec![nats.url()], key.clone());
        cluster.node_name = format!("node{}", i + 1);
        node.cluster = Some(cluster);
        urls.push(our_relay(node).await);
    }
    (nats, urls)
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
