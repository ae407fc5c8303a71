//! `compendium-server`: the Compendium WebSocket relay, as a command.
//!
//! A thin CLI over [`compendium_server::Server`]: parse flags (each also readable from a
//! `COMPENDIUM_*` environment variable), set up logging, run until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use compendium_cli_support::{Exit, Seconds, Signal, Signals};
use compendium_server::{ClusterConfig, ClusterKey, Config, Server, TlsFiles, dev_certificate};

/// The Compendium WebSocket relay.
///
/// Clients connect over WebSocket, send {"type":"INIT"} to get an ephemeral address, and
/// send {"type":"ROUTE","EpheWssAddr":ADDR,"msg":{...}} to deliver a JSON object to the
/// client holding ADDR. See docs/protocol.md; operating it: docs/operations.md.
///
/// Every flag can also be set with the environment variable shown. Durations are in
/// seconds (fractions allowed). Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug).
/// Exit status: 0 after a clean shutdown (SIGINT/SIGTERM), 1 if it cannot start, 2 for a
/// usage error.
#[derive(Parser, Debug)]
#[command(version, about, long_about, after_help = EXAMPLES)]
struct Cli {
    /// Address(es) to serve WebSocket on; repeat the flag or separate with commas.
    #[arg(
        long,
        env = "COMPENDIUM_LISTEN",
        value_name = "ADDR:PORT",
        value_delimiter = ',',
        default_values_t = defaults().listen
    )]
    listen: Vec<SocketAddr>,

    /// PEM certificate chain: serve wss:// (needs --tls-key). The served certificate must
    /// be a leaf (CA:FALSE) with the host names in subjectAltName. Send SIGHUP to load
    /// renewed files without a restart (open connections are kept).
    #[arg(
        long,
        env = "COMPENDIUM_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "COMPENDIUM_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// Serve wss:// with a development certificate kept in DIR: on first use, a small CA
    /// (DIR/ca.pem, the file clients must trust) and a certificate it signs for this
    /// machine's names; later runs reuse them. For trying wss:// on a LAN, not production.
    #[arg(
        long,
        env = "COMPENDIUM_TLS_SELF_SIGNED",
        value_name = "DIR",
        conflicts_with_all = ["tls_cert", "tls_key"]
    )]
    tls_self_signed: Option<PathBuf>,

    /// With --tls-self-signed: one more DNS name or IP address the certificate must cover
    /// (repeatable), besides localhost, 127.0.0.1, ::1, the host name and the LAN address.
    #[arg(long = "tls-name", value_name = "NAME", requires = "tls_self_signed")]
    tls_names: Vec<String>,

    /// Largest message in bytes; a larger one closes its connection with code 1009.
    #[arg(long, env = "COMPENDIUM_MAX_MESSAGE_BYTES", value_name = "BYTES", default_value_t = defaults().max_message_bytes)]
    max_message_bytes: usize,

    /// Messages queued for one slow reader before ROUTEs to it get ERR 503.
    #[arg(long, env = "COMPENDIUM_MAX_QUEUE", value_name = "MESSAGES", default_value_t = defaults().max_queue)]
    max_queue: usize,

    /// Bytes queued for one slow reader before ROUTEs to it get ERR 503.
    #[arg(long, env = "COMPENDIUM_MAX_QUEUE_BYTES", value_name = "BYTES", default_value_t = defaults().max_queue_bytes)]
    max_queue_bytes: usize,

    /// Seconds a version 2 session (subprotocol compendium.v2) is kept after its
    /// connection is lost without END, so that its client can RESUME it with its address
    /// and every unacknowledged message; 0 turns version 2 off (at most 3600).
    #[arg(long, env = "COMPENDIUM_RESUME_GRACE", value_name = "SECS", default_value_t = Seconds(defaults().sessions.grace), help_heading = "Resumable sessions")]
    resume_grace: Seconds,

    /// Seconds a ROUTE to a detached session waits for it to resume before its sender gets
    /// ERR 503 (at most the grace). Its sender's later replies wait behind it.
    #[arg(long, env = "COMPENDIUM_RESUME_HOLD", value_name = "SECS", default_value_t = Seconds(defaults().sessions.hold), help_heading = "Resumable sessions")]
    resume_hold: Seconds,

    /// Messages a session keeps until its client acknowledges them; beyond, ROUTEs to it
    /// get ERR 503.
    #[arg(long, env = "COMPENDIUM_RESUME_BUFFER", value_name = "MESSAGES", default_value_t = defaults().sessions.buffer_messages, help_heading = "Resumable sessions")]
    resume_buffer: usize,

    /// Bytes a session keeps until its client acknowledges them; beyond, ROUTEs to it get
    /// ERR 503.
    #[arg(long, env = "COMPENDIUM_RESUME_BUFFER_BYTES", value_name = "BYTES", default_value_t = defaults().sessions.buffer_bytes, help_heading = "Resumable sessions")]
    resume_buffer_bytes: usize,

    /// Detached sessions kept at once; a connection lost beyond this ends its session.
    #[arg(long, env = "COMPENDIUM_MAX_DETACHED", value_name = "N", default_value_t = defaults().sessions.max_detached, help_heading = "Resumable sessions")]
    max_detached: usize,

    /// Bytes all detached sessions keep at once; beyond, held ROUTEs get ERR 503 and a
    /// connection lost beyond it ends its session.
    #[arg(long, env = "COMPENDIUM_MAX_DETACHED_BYTES", value_name = "BYTES", default_value_t = defaults().sessions.max_detached_bytes, help_heading = "Resumable sessions")]
    max_detached_bytes: usize,

    /// Failed RESUMEs allowed per client IP address per minute; beyond, RESUMEs from it
    /// get ERR 429 until the minute is over.
    #[arg(long, env = "COMPENDIUM_FAILED_RESUMES_PER_MINUTE", value_name = "N", default_value_t = defaults().sessions.failed_resumes_per_minute, help_heading = "Resumable sessions")]
    failed_resumes_per_minute: u32,

    /// Messages per second one connection may send; excess ones get ERR 429. Off if unset.
    #[arg(long, env = "COMPENDIUM_MAX_MSGS_PER_SEC", value_name = "N")]
    max_msgs_per_sec: Option<u32>,

    /// Seconds between the server's pings to each connection.
    #[arg(long, env = "COMPENDIUM_PING_INTERVAL", value_name = "SECS", default_value_t = Seconds(defaults().ping_interval))]
    ping_interval: Seconds,

    /// Close a connection that has sent nothing (not even a pong) for this many seconds.
    #[arg(long, env = "COMPENDIUM_IDLE_TIMEOUT", value_name = "SECS", default_value_t = Seconds(defaults().idle_timeout))]
    idle_timeout: Seconds,

    /// Seconds a new connection gets to complete its TLS and WebSocket handshakes.
    #[arg(long, env = "COMPENDIUM_HANDSHAKE_TIMEOUT", value_name = "SECS", default_value_t = Seconds(defaults().handshake_timeout))]
    handshake_timeout: Seconds,

    /// Open connections allowed; beyond it new handshakes get HTTP 503.
    #[arg(long, env = "COMPENDIUM_MAX_CONNECTIONS", value_name = "N", default_value_t = defaults().max_connections)]
    max_connections: usize,

    /// On SIGINT/SIGTERM, seconds allowed to flush queued messages and close connections.
    #[arg(long, env = "COMPENDIUM_SHUTDOWN_TIMEOUT", value_name = "SECS", default_value_t = Seconds(defaults().shutdown_timeout))]
    shutdown_timeout: Seconds,

    /// Serve GET /healthz and GET /metrics (Prometheus text) on this address. Off if unset.
    #[arg(long, env = "COMPENDIUM_METRICS_LISTEN", value_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr>,

    /// Each connection's initial read buffer, which is also the most read per syscall:
    /// small keeps idle connections cheap, larger saves syscalls for large messages.
    #[arg(long, env = "COMPENDIUM_READ_BUFFER_BYTES", value_name = "BYTES", default_value_t = defaults().read_buffer_bytes)]
    read_buffer_bytes: usize,

    /// Log format on stderr.
    #[arg(long, env = "COMPENDIUM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Cluster mode: join the other nodes through these NATS servers (nats:// or tls://;
    /// repeat or separate with commas; user:password@ allowed). See docs/cluster.md.
    #[arg(
        long,
        env = "COMPENDIUM_CLUSTER",
        value_name = "URL",
        value_delimiter = ',',
        help_heading = "Cluster mode"
    )]
    cluster: Vec<String>,

    /// File holding the cluster key that every node shares: 32 hex characters (make one
    /// with `openssl rand -hex 16`). Or give the key itself in COMPENDIUM_CLUSTER_KEY.
    #[arg(
        long,
        env = "COMPENDIUM_CLUSTER_KEY_FILE",
        value_name = "FILE",
        help_heading = "Cluster mode"
    )]
    cluster_key_file: Option<PathBuf>,

    /// The cluster key itself (prefer the environment to the command line, which other
    /// users can see).
    #[arg(
        long,
        env = "COMPENDIUM_CLUSTER_KEY",
        value_name = "HEX",
        hide_env_values = true,
        conflicts_with = "cluster_key_file",
        help_heading = "Cluster mode"
    )]
    cluster_key: Option<String>,

    /// First token of every NATS subject the cluster uses (several clusters can share one
    /// NATS; permissions can be granted per prefix).
    #[arg(long, env = "COMPENDIUM_CLUSTER_SUBJECT_PREFIX", value_name = "PREFIX", default_value = compendium_server::DEFAULT_SUBJECT_PREFIX, help_heading = "Cluster mode")]
    cluster_subject_prefix: String,

    /// NATS credentials file (JWT and nkey seed), if the NATS server requires one.
    #[arg(
        long,
        env = "COMPENDIUM_CLUSTER_CREDS",
        value_name = "FILE",
        help_heading = "Cluster mode"
    )]
    cluster_creds: Option<PathBuf>,

    /// CA certificate (PEM) to trust for tls:// NATS URLs.
    #[arg(
        long,
        env = "COMPENDIUM_CLUSTER_TLS_CA",
        value_name = "PEM",
        help_heading = "Cluster mode"
    )]
    cluster_tls_ca: Option<PathBuf>,

    /// This node's name in logs, metrics and NATS (default: the host name).
    #[arg(
        long,
        env = "COMPENDIUM_NODE_NAME",
        value_name = "NAME",
        help_heading = "Cluster mode"
    )]
    node_name: Option<String>,

    /// Seconds a ROUTE to another node waits for its verdict before its sender gets 503.
    #[arg(long, env = "COMPENDIUM_CLUSTER_TIMEOUT", value_name = "SECS", default_value_t = Seconds(compendium_server::DEFAULT_CLUSTER_TIMEOUT), help_heading = "Cluster mode")]
    cluster_timeout: Seconds,

    /// Seconds the node goes on serving after losing NATS before it closes its clients
    /// (1001) so that they reconnect to a node that still has its cluster.
    #[arg(long, env = "COMPENDIUM_CLUSTER_GRACE", value_name = "SECS", default_value_t = Seconds(compendium_server::DEFAULT_CLUSTER_GRACE), help_heading = "Cluster mode")]
    cluster_grace: Seconds,

    /// On SIGTERM, seconds the node waits for its resumable sessions to move to other
    /// nodes: it closes their connections with 1012 (reconnect), serves the other nodes'
    /// claims of them, and exits once none is left or the time is up (a second SIGTERM ends
    /// the wait at once). 0: no drain; sessions end with the node.
    #[arg(long, env = "COMPENDIUM_DRAIN_TIMEOUT", value_name = "SECS", default_value_t = Seconds(compendium_server::DEFAULT_DRAIN_TIMEOUT), help_heading = "Cluster mode")]
    drain_timeout: Seconds,

    /// Seconds between the node's pings to its NATS server.
    #[arg(long, env = "COMPENDIUM_CLUSTER_PING_INTERVAL", value_name = "SECS", default_value_t = Seconds(compendium_server::DEFAULT_CLUSTER_PING_INTERVAL), help_heading = "Cluster mode")]
    cluster_ping_interval: Seconds,

    /// Seconds startup waits to reach NATS before it gives up (exit status 1).
    #[arg(long, env = "COMPENDIUM_CLUSTER_CONNECT_TIMEOUT", value_name = "SECS", default_value_t = Seconds(compendium_server::DEFAULT_CLUSTER_CONNECT_TIMEOUT), help_heading = "Cluster mode")]
    cluster_connect_timeout: Seconds,
}

/// The library's defaults, which the flags' defaults show: one place for each value.
fn defaults() -> Config {
    Config::default()
}

const EXAMPLES: &str = "Examples:
  compendium-server                                   # ws://127.0.0.1:8001
  compendium-server --listen 0.0.0.0:443 --tls-cert cert.pem --tls-key key.pem
  kill -HUP $(pidof compendium-server)               # reload renewed certificate files
  compendium-server --listen 0.0.0.0:8443 --tls-self-signed ~/.compendium-tls   # wss:// on a LAN
  compendium-server --metrics-listen 127.0.0.1:9100 --log-format json
  COMPENDIUM_MAX_MSGS_PER_SEC=50 compendium-server";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

fn init_logging(format: LogFormat) {
    // async-nats reports every failed reconnect attempt at info; the cluster link says
    // once that it is down, which is what an operator needs.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

impl Cli {
    /// The cluster settings, if `--cluster` was given; `Err` says what is missing or
    /// unreadable.
    fn cluster_config(&self) -> Result<Option<ClusterConfig>, String> {
        if self.cluster.is_empty() {
            // A cluster setting without --cluster is a mistake worth stopping for: the
            // operator meant a cluster, and a silent single relay would split it.
            let strays = [
                (
                    "--cluster-key-file (or COMPENDIUM_CLUSTER_KEY_FILE)",
                    self.cluster_key_file.is_some(),
                ),
                (
                    "--cluster-key (or COMPENDIUM_CLUSTER_KEY)",
                    self.cluster_key.is_some(),
                ),
                (
                    "--cluster-creds (or COMPENDIUM_CLUSTER_CREDS)",
                    self.cluster_creds.is_some(),
                ),
                (
                    "--cluster-tls-ca (or COMPENDIUM_CLUSTER_TLS_CA)",
                    self.cluster_tls_ca.is_some(),
                ),
            ];
            if let Some((flag, _)) = strays.iter().find(|(_, given)| *given) {
                return Err(format!(
                    "{flag} is set, but --cluster (or COMPENDIUM_CLUSTER, the NATS URLs) is \
                     not: give both for cluster mode, neither for a single relay"
                ));
            }
            return Ok(None);
        }
        let key = match (&self.cluster_key_file, &self.cluster_key) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("cannot read the cluster key file {}: {e}", path.display())
                })?;
                ClusterKey::from_hex(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            (None, Some(hex)) => {
                ClusterKey::from_hex(hex).map_err(|e| format!("COMPENDIUM_CLUSTER_KEY: {e}"))?
            }
            (None, None) => {
                return Err(
                    "cluster mode needs the key every node shares: --cluster-key-file FILE \
                            or COMPENDIUM_CLUSTER_KEY (make one with `openssl rand -hex 16`)"
                        .into(),
                );
            }
        };
        let mut cluster = ClusterConfig::new(self.cluster.clone(), key);
        cluster.subject_prefix = self.cluster_subject_prefix.clone();
        cluster.credentials = self.cluster_creds.clone();
        cluster.tls_ca = self.cluster_tls_ca.clone();
        if let Some(name) = &self.node_name {
            cluster.node_name = name.clone();
        }
        cluster.timeout = self.cluster_timeout.into();
        cluster.grace = self.cluster_grace.into();
        cluster.drain_timeout = self.drain_timeout.into();
        cluster.ping_interval = self.cluster_ping_interval.into();
        cluster.connect_timeout = self.cluster_connect_timeout.into();
        Ok(Some(cluster))
    }

    fn into_config(self) -> Result<Config, String> {
        let cluster = self.cluster_config()?;
        let mut config = Config::default();
        config.cluster = cluster;
        config.listen = self.listen;
        config.tls = match (self.tls_cert, self.tls_key, self.tls_self_signed) {
            (Some(cert), Some(key), _) => Some(TlsFiles { cert, key }),
            (_, _, Some(dir)) => {
                let mut names = dev_certificate::default_names(&config.listen);
                for name in self.tls_names {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                let dev = dev_certificate::ensure(&dir, &names)
                    .map_err(|e| format!("--tls-self-signed {}: {e}", dir.display()))?;
                announce(&dev);
                Some(dev.files)
            }
            _ => None,
        };
        config.max_message_bytes = self.max_message_bytes;
        config.max_queue = self.max_queue;
        config.max_queue_bytes = self.max_queue_bytes;
        config.max_msgs_per_sec = self.max_msgs_per_sec;
        config.ping_interval = self.ping_interval.into();
        config.idle_timeout = self.idle_timeout.into();
        config.handshake_timeout = self.handshake_timeout.into();
        config.max_connections = self.max_connections;
        config.shutdown_timeout = self.shutdown_timeout.into();
        config.metrics_listen = self.metrics_listen;
        config.read_buffer_bytes = self.read_buffer_bytes;
        config.sessions.grace = self.resume_grace.into();
        config.sessions.hold = self.resume_hold.into();
        config.sessions.buffer_messages = self.resume_buffer;
        config.sessions.buffer_bytes = self.resume_buffer_bytes;
        config.sessions.max_detached = self.max_detached;
        config.sessions.max_detached_bytes = self.max_detached_bytes;
        config.sessions.failed_resumes_per_minute = self.failed_resumes_per_minute;
        Ok(config)
    }
}

/// Say where the development certificate is and what clients must do with it: on stderr
/// for the person who typed the command, and in the log.
fn announce(dev: &dev_certificate::DevCertificate) {
    let what = match dev.outcome {
        dev_certificate::Outcome::Created => "created a development CA and certificate",
        dev_certificate::Outcome::Reused => "using the development certificate",
        dev_certificate::Outcome::Reissued => {
            "issued a new development certificate (same CA: clients keep trusting it)"
        }
    };
    let dir = dev.ca.parent().unwrap_or(std::path::Path::new("."));
    let ca = dev.ca.display();
    tracing::info!(
        event = "tls_self_signed",
        dir = %dir.display(),
        ca = %ca,
        names = ?dev.names,
        "{what}"
    );
    eprintln!(
        "compendium-server: {what} in {}, for {} (valid until {}).\n\
         Clients must trust {ca}:\n  \
         compendium-client --ca-cert {ca} ...   (also compendium-conformance --ca-cert)\n  \
         Python: ssl.create_default_context(cafile=\"{ca}\")\n  \
         a phone or browser: install {ca} as a trusted CA (docs/security.md)",
        dir.display(),
        dev.names.join(", "),
        compendium_cli_support::rfc3339(dev.not_after),
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return Exit::Failure.into();
        }
    };
    runtime.block_on(async {
        let mut signals = match Signals::register() {
            Ok(signals) => signals,
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGINT and SIGTERM");
                eprintln!("compendium-server: cannot listen for SIGINT and SIGTERM: {err}");
                return Exit::Failure.into();
            }
        };
        let config = match cli.into_config() {
            Ok(config) => config,
            Err(err) => {
                tracing::error!("{err}");
                eprintln!("compendium-server: {err}");
                return Exit::Failure.into();
            }
        };
        let server = match Server::bind(config).await {
            Ok(server) => server,
            Err(err) => {
                tracing::error!("{err}");
                eprintln!("compendium-server: {err}");
                return Exit::Failure.into();
            }
        };
        let handle = server.handle();
        server
            .run(async move {
                loop {
                    match signals.recv().await {
                        // Certificates are renewed every few weeks; a restart would drop
                        // every connection and address. Errors are logged by reload_tls.
                        Signal::Hangup if handle.tls_certificate().is_some() => {
                            let _ = handle.reload_tls();
                        }
                        Signal::Hangup => {
                            tracing::info!("SIGHUP received: nothing to reload (no wss://)");
                        }
                        signal => {
                            tracing::info!("{signal} received");
                            break;
                        }
                    }
                }
                // A second SIGINT/SIGTERM ends a drain at once (docs/cluster.md, "Drain").
                tokio::spawn(async move {
                    loop {
                        if let Signal::Hangup = signals.recv().await {
                            continue;
                        }
                        handle.end_drain();
                    }
                });
            })
            .await;
        Exit::Success.into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults are the library's: parsing nothing gives `Config::default()`.
    #[test]
    fn no_flags_is_the_default_config() {
        // Environment variables would change what "no flags" means.
        let cli = Cli::try_parse_from(["compendium-server"]).expect("parses");
        assert!(
            std::env::vars().all(|(k, _)| !k.starts_with("COMPENDIUM_")),
            "unset COMPENDIUM_* to run this test"
        );
        assert_eq!(
            format!("{:?}", cli.into_config().expect("a config")),
            format!("{:?}", Config::default())
        );
    }
}
