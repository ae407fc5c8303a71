//! The chaos cluster: three relay node processes on a three-server NATS cluster, behind
//! the front; and what each fault does to it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use compendium_harness::{NatsCluster, Relay};

use crate::front::Front;
use crate::schedule::{Fault, NODES, Rng};

/// The key every node shares.
const KEY: &str = "00112233445566778899aabbccddeeff";

/// The nodes and the NATS servers (all killed when dropped).
pub(crate) struct World {
    nats: NatsCluster,
    nodes: Vec<Relay>,
    ports: Vec<u16>,
    /// Nodes started so far (each new one gets a new name).
    started: usize,
    /// What went wrong with a node itself: a drain that did not exit 0, a crash.
    pub(crate) troubles: Vec<String>,
    /// The log lines of the nodes replaced so far, each after its node's name.
    logs: Vec<String>,
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_compendium-server"))
}

impl World {
    /// Start the NATS cluster and the nodes.
    pub(crate) fn start() -> Result<Self> {
        let nats = NatsCluster::start(NODES).context("the NATS cluster")?;
        let mut world = Self {
            nats,
            nodes: Vec::new(),
            ports: vec![0; NODES],
            started: 0,
            troubles: Vec::new(),
            logs: Vec::new(),
        };
        for i in 0..NODES {
            let node = world.node(i)?;
            world.ports[i] = port_of(node.url())?;
            world.nodes.push(node);
        }
        Ok(world)
    }

    /// The nodes' WebSocket addresses (stable across restarts).
    pub(crate) fn addrs(&self) -> Vec<std::net::SocketAddr> {
        self.ports
            .iter()
            .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], *port)))
            .collect()
    }

    /// A new node process in place `i`, on its port (a free one the first time).
    fn node(&mut self, i: usize) -> Result<Relay> {
        self.started += 1;
        let name = format!("n{i}-{}", self.started);
        let listen = format!("127.0.0.1:{}", self.ports[i]);
        let mut last = None;
        // A killed node's port can take a moment to be free for the kernel.
        for _ in 0..50 {
            let mut command = Relay::command_on(bin(), &listen);
            command
                .args([
                    "--cluster",
                    &self.nats.urls().join(","),
                    "--node-name",
                    &name,
                ])
                .args(["--cluster-ping-interval", "0.5", "--drain-timeout", "10"])
                // Resumes refused because their holder died are the point here; the
                // limit on failed resumes guards against guessing, not against chaos.
                .args(["--failed-resumes-per-minute", "1000000"])
                .env(
                    "RUST_LOG",
                    std::env::var("COMPENDIUM_CHAOS_RUST_LOG")
                        .unwrap_or_else(|_| "warn,compendium_server=info".into()),
                )
                .env("COMPENDIUM_CLUSTER_KEY", KEY);
            match Relay::start(command) {
                Ok(relay) => return Ok(relay),
                Err(err) => last = Some(err),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.expect("tried")).with_context(|| format!("starting node {name} on {listen}"))
    }

    /// Replace node `i` (gone already) with a new one.
    fn replace(&mut self, i: usize) -> Result<()> {
        let node = self.node(i)?;
        let mut old = std::mem::replace(&mut self.nodes[i], node);
        let name = old.ready.node.clone().unwrap_or_default();
        let lines = old.process.lines().iter().map(|l| format!("{name}: {l}"));
        self.logs.extend(lines);
        Ok(())
    }

    /// Every node's log lines (those of replaced nodes too) that mention any of `needles`.
    pub(crate) fn log_lines(&mut self, needles: &[&str]) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        let current = self.nodes.iter_mut().flat_map(|node| {
            let name = node.ready.node.clone().unwrap_or_default();
            let lines: Vec<String> = node
                .process
                .lines()
                .iter()
                .map(|l| format!("{name}: {l}"))
                .collect();
            lines
        });
        for line in self.logs.iter().cloned().chain(current.collect::<Vec<_>>()) {
            if needles.iter().any(|n| line.contains(n)) {
                found.push(line);
            }
        }
        found
    }

    /// Apply `fault` and undo it (the cluster is whole again when this returns); what it
    /// did, in words.
    pub(crate) fn apply(&mut self, fault: Fault, front: &Front, rng: &mut Rng) -> Result<String> {
        let began = Instant::now();
        let what = match fault {
            Fault::Kill { node, down } => {
                let held = self.sessions(node);
                self.nodes[node].process.kill()?;
                std::thread::sleep(down);
                self.replace(node)?;
                format!("{held} sessions died with it")
            }
            Fault::Drain { node } => {
                let held = self.sessions(node);
                let status = self.nodes[node]
                    .process
                    .terminate_within(Duration::from_secs(30))?;
                if !status.success() {
                    self.troubles
                        .push(format!("node {node}'s drain ended with {status}"));
                }
                let drained = began.elapsed();
                self.replace(node)?;
                format!("{held} sessions to hand over, exited {status} in {drained:?}")
            }
            Fault::Freeze { node, frozen } => {
                self.nodes[node].process.signal("STOP")?;
                std::thread::sleep(frozen);
                self.nodes[node].process.signal("CONT")?;
                String::new()
            }
            Fault::RestartNats { server, down } => {
                self.nats.members[server].kill()?;
                std::thread::sleep(down);
                self.nats.members[server].restart(NODES - 1)?;
                String::new()
            }
            Fault::DropClients { count } => format!("{} reset", front.reset(count, rng)),
        };
        Ok(format!("{what} ({:?})", began.elapsed()))
    }

    /// Sessions (live addresses) node `i` holds, as its metrics say; 0 if it cannot say.
    fn sessions(&self, i: usize) -> u64 {
        self.nodes[i]
            .metric("compendium_addresses_live")
            .map_or(0, |v| v as u64)
    }

    /// Record any node that exited by itself or wrote a panic.
    pub(crate) fn check_nodes(&mut self) {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            match node.process.exited() {
                Ok(Some(status)) => self.troubles.push(format!("node {i} exited: {status}")),
                Ok(None) => {}
                Err(err) => self.troubles.push(format!("node {i}: {err:#}")),
            }
            if let Some(line) = node.process.lines().iter().find(|l| l.contains("panicked")) {
                self.troubles.push(format!("node {i} panicked: {line}"));
            }
        }
    }
}

fn port_of(url: &str) -> Result<u16> {
    url.rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .with_context(|| format!("no port in {url}"))
}
