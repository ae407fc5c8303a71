//! Cluster test support: a real nats-server (never a mock) and relay nodes joined through
//! it, in this process or as processes of the binary.

use std::time::Duration;

use compendium_harness::Nats;
use compendium_server::{ClusterConfig, ClusterKey, Config};

use super::TestServer;

/// The key every node of a test cluster shares.
pub const KEY: &str = "00112233445566778899aabbccddeeff";

pub fn key() -> ClusterKey {
    ClusterKey::from_hex(KEY).expect("key")
}

/// A node's config: loopback, joined through `urls`, with test-sized timers.
pub fn node_config(urls: &[String], name: &str) -> Config {
    let mut config = Config::ephemeral();
    let mut cluster = ClusterConfig::new(urls.to_vec(), key());
    cluster.node_name = name.to_owned();
    cluster.ping_interval = Duration::from_millis(500);
    config.cluster = Some(cluster);
    config
}

/// nats-server and `n` in-process nodes joined through it.
pub struct TestCluster {
    pub nats: Nats,
    pub nodes: Vec<TestServer>,
}

impl TestCluster {
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, |_| {}).await
    }

    /// As [`TestCluster::start`], with each node's config adjusted by `tweak`.
    pub async fn start_with(n: usize, tweak: impl Fn(&mut Config)) -> Self {
        let nats = Nats::start().expect("nats-server starts");
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let mut config = node_config(&[nats.url()], &format!("node{}", i + 1));
            tweak(&mut config);
            nodes.push(TestServer::start(config).await);
        }
        Self { nats, nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }
}
