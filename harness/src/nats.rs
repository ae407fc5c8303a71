//! A real `nats-server` for cluster tests and benchmarks: started on a free loopback port,
//! never mocked. A missing `nats-server` is an error that says how to install it, never a
//! silent skip.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{PATIENCE, Process};

/// The `nats-server` to run: `$NATS_SERVER`, else the first on `PATH` (Debian's package
/// installs `/usr/sbin/nats-server`, which is searched too).
///
/// # Errors
/// If there is none, saying how to get one.
pub fn nats_server_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .context(
            "nats-server is not installed, and the cluster tests need a real one: run \
             `cargo xtask test` (it installs it), or `apt-get install nats-server` (Debian's \
             2.9.10 or newer), or set NATS_SERVER=/path/to/nats-server",
        )
}

/// One `nats-server` process on loopback. Killed when dropped.
pub struct Nats {
    process: Process,
    port: u16,
    /// Its cluster (route) port, when it is part of a NATS cluster.
    route_port: Option<u16>,
    args: Vec<String>,
}

impl Nats {
    /// A standalone server on a free port.
    ///
    /// # Errors
    /// If nats-server is missing or does not start.
    pub fn start() -> Result<Self> {
        Self::start_with(&[], 0)
    }

    /// A server on a free port with extra `args`, expecting `routes` route connections
    /// (members of a NATS cluster) before it counts as ready.
    ///
    /// # Errors
    /// If nats-server is missing or does not start.
    pub fn start_with(args: &[&str], routes: usize) -> Result<Self> {
        Self::launch(-1, args.iter().map(|a| (*a).to_owned()).collect(), routes)
    }

    fn launch(port: i32, args: Vec<String>, routes: usize) -> Result<Self> {
        let mut command = Command::new(nats_server_binary()?);
        command
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(&args);
        let mut process = Process::spawn("nats-server", command)?;
        // Its client port, its route port (in a NATS cluster) and "ready" come in an order
        // that varies between versions: read until all are known.
        let clustered = args.iter().any(|a| a == "--cluster");
        let port_after = |line: &str, marker: &str| -> Option<u16> {
            line.split(marker)
                .nth(1)?
                .rsplit(':')
                .next()?
                .trim()
                .parse()
                .ok()
        };
        let (mut client, mut route, mut ready) = (None, None, false);
        let (port, route_port) = process
            .wait_for(PATIENCE, |line| {
                client =
                    client.or_else(|| port_after(line, "Listening for client connections on "));
                route = route.or_else(|| port_after(line, "Listening for route connections on "));
                ready |= line.contains("Server is ready");
                match (client, route) {
                    (Some(client), route) if ready && (route.is_some() || !clustered) => {
                        Some((client, route))
                    }
                    _ => None,
                }
            })
            .context("waiting for nats-server to listen and be ready")?;
        let mut nats = Self {
            process,
            port,
            route_port,
            args,
        };
        nats.wait_for_routes(routes)?;
        Ok(nats)
    }

    /// Wait until `count` more route connections (to other members of a NATS cluster)
    /// are established.
    ///
    /// # Errors
    /// If they are not within [`PATIENCE`].
    pub fn wait_for_routes(&mut self, count: usize) -> Result<()> {
        for _ in 0..count {
            self.process
                .wait_for_line("Route connection created", PATIENCE)
                .context("waiting for a route to another NATS server")?;
        }
        Ok(())
    }

    /// Its client URL, `nats://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its cluster URL, for other members' `--routes`.
    #[must_use]
    pub fn route_url(&self) -> Option<String> {
        self.route_port
            .map(|port| format!("nats://127.0.0.1:{port}"))
    }

    /// Its process.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// The CPU time it has used so far (user + system).
    ///
    /// # Errors
    /// If it has exited.
    pub fn cpu_time(&self) -> Result<Duration> {
        Ok(self.process.cpu_time()?.total())
    }

    /// Its resident memory in KiB.
    ///
    /// # Errors
    /// If it has exited.
    pub fn rss_kib(&self) -> Result<u64> {
        self.process.rss_kib()
    }

    /// `kill -9`: gone at once, its clients' connections reset.
    ///
    /// # Errors
    /// If it cannot be killed.
    pub fn kill(&mut self) -> Result<()> {
        self.process.kill()
    }

    /// Start it again on the same ports with the same arguments (after [`Nats::kill`]),
    /// expecting `routes` route connections.
    ///
    /// # Errors
    /// If it does not come back.
    pub fn restart(&mut self, routes: usize) -> Result<()> {
        let mut args = self.args.clone();
        if let Some(route_port) = self.route_port {
            // The same cluster port, so the other members' routes find it again.
            if let Some(at) = args.iter().position(|a| a == "--cluster") {
                args[at + 1] = format!("nats://127.0.0.1:{route_port}");
            }
        }
        let port = i32::from(self.port);
        // The old process is gone; its port may take a moment to be free for the kernel.
        let mut last = None;
        for _ in 0..50 {
            match Self::launch(port, args.clone(), routes) {
                Ok(nats) => {
                    *self = Self {
                        args: self.args.clone(),
                        ..nats
                    };
                    return Ok(());
                }
                Err(err) => last = Some(err),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        match last {
            Some(err) => Err(err),
            None => bail!("nats-server did not restart"),
        }
    }
}

/// Three `nats-server`s joined by routes, as a deployment that must survive a machine
/// runs them.
pub struct NatsCluster {
    /// The members.
    pub members: Vec<Nats>,
}

impl NatsCluster {
    /// `size` members; the first listens for routes and the others route to it (NATS
    /// gossips the rest of the mesh). Returns when every route is up.
    ///
    /// # Errors
    /// If any member does not start.
    pub fn start(size: usize) -> Result<Self> {
        let cluster = [
            "--cluster",
            "nats://127.0.0.1:-1",
            "--cluster_name",
            "compendium-test",
        ];
        let mut first = Nats::start_with(&cluster, 0)?;
        let seed = first
            .route_url()
            .context("the first member has no route port")?;
        let mut members = Vec::with_capacity(size);
        for _ in 1..size {
            let mut args: Vec<&str> = cluster.to_vec();
            args.extend(["--routes", seed.as_str()]);
            // Each joiner routes to every member before it (the seed directly, the rest
            // through gossip).
            members.push(Nats::start_with(&args, members.len() + 1)?);
        }
        first.wait_for_routes(size - 1)?;
        members.insert(0, first);
        Ok(Self { members })
    }

    /// Every member's client URL.
    #[must_use]
    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(Nats::url).collect()
    }
}
