//! `compendium-server`: the Compendium WebSocket relay, as a command.
//!
//! A thin CLI over [`compendium_server::Server`]: parse flags (each also readable from a
//! `COMPENDIUM_*` environment variable), set up logging, run until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use compendium_server::{Config, Server, TlsFiles};

/// The Compendium WebSocket relay.
///
/// Clients connect over WebSocket, send {"type":"INIT"} to get an ephemeral address, and
/// send {"type":"ROUTE","EpheWssAddr":ADDR,"msg":{...}} to deliver a JSON object to the
/// client holding ADDR. See docs/protocol.md.
///
/// Every flag can also be set with the environment variable shown. Durations are in
/// seconds (fractions allowed). Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug).
#[derive(Parser, Debug)]
#[command(version, about, long_about, after_help = EXAMPLES)]
struct Cli {
    /// Address(es) to serve WebSocket on; repeat the flag or separate with commas.
    #[arg(
        long,
        env = "COMPENDIUM_LISTEN",
        value_name = "ADDR:PORT",
        value_delimiter = ',',
        default_value = "127.0.0.1:8001"
    )]
    listen: Vec<SocketAddr>,

    /// PEM certificate chain: serve wss:// (needs --tls-key).
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

    /// Largest message in bytes; a larger one closes its connection with code 1009.
    #[arg(long, env = "COMPENDIUM_MAX_MESSAGE_BYTES", value_name = "BYTES", default_value_t = 1 << 20)]
    max_message_bytes: usize,

    /// Messages queued for one slow reader before ROUTEs to it get ERR 503.
    #[arg(
        long,
        env = "COMPENDIUM_MAX_QUEUE",
        value_name = "MESSAGES",
        default_value_t = 1024
    )]
    max_queue: usize,

    /// Bytes queued for one slow reader before ROUTEs to it get ERR 503.
    #[arg(long, env = "COMPENDIUM_MAX_QUEUE_BYTES", value_name = "BYTES", default_value_t = 16 << 20)]
    max_queue_bytes: usize,

    /// Messages per second one connection may send; excess ones get ERR 429. Off if unset.
    #[arg(long, env = "COMPENDIUM_MAX_MSGS_PER_SEC", value_name = "N")]
    max_msgs_per_sec: Option<u32>,

    /// Seconds between the server's pings to each connection.
    #[arg(long, env = "COMPENDIUM_PING_INTERVAL", value_name = "SECS", default_value = "30", value_parser = seconds)]
    ping_interval: Duration,

    /// Close a connection that has sent nothing (not even a pong) for this many seconds.
    #[arg(long, env = "COMPENDIUM_IDLE_TIMEOUT", value_name = "SECS", default_value = "90", value_parser = seconds)]
    idle_timeout: Duration,

    /// Seconds a new connection gets to complete its TLS and WebSocket handshakes.
    #[arg(long, env = "COMPENDIUM_HANDSHAKE_TIMEOUT", value_name = "SECS", default_value = "10", value_parser = seconds)]
    handshake_timeout: Duration,

    /// Open connections allowed; beyond it new handshakes get HTTP 503.
    #[arg(
        long,
        env = "COMPENDIUM_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 100_000
    )]
    max_connections: usize,

    /// On SIGINT/SIGTERM, seconds allowed to flush queued messages and close connections.
    #[arg(long, env = "COMPENDIUM_SHUTDOWN_TIMEOUT", value_name = "SECS", default_value = "10", value_parser = seconds)]
    shutdown_timeout: Duration,

    /// Serve GET /healthz and GET /metrics (Prometheus text) on this address. Off if unset.
    #[arg(long, env = "COMPENDIUM_METRICS_LISTEN", value_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr>,

    /// Each connection's initial read buffer, which is also the most read per syscall:
    /// small keeps idle connections cheap, larger saves syscalls for large messages.
    #[arg(long, env = "COMPENDIUM_READ_BUFFER_BYTES", value_name = "BYTES", default_value_t = compendium_server::DEFAULT_READ_BUFFER_BYTES)]
    read_buffer_bytes: usize,

    /// Log format on stderr.
    #[arg(long, env = "COMPENDIUM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

const EXAMPLES: &str = "Examples:
  compendium-server                                   # ws://127.0.0.1:8001
  compendium-server --listen 0.0.0.0:443 --tls-cert cert.pem --tls-key key.pem
  compendium-server --metrics-listen 127.0.0.1:9100 --log-format json
  COMPENDIUM_MAX_MSGS_PER_SEC=50 compendium-server";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is not a usable duration"))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
    fn into_config(self) -> Config {
        let mut config = Config::default();
        config.listen = self.listen;
        config.tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => None,
        };
        config.max_message_bytes = self.max_message_bytes;
        config.max_queue = self.max_queue;
        config.max_queue_bytes = self.max_queue_bytes;
        config.max_msgs_per_sec = self.max_msgs_per_sec;
        config.ping_interval = self.ping_interval;
        config.idle_timeout = self.idle_timeout;
        config.handshake_timeout = self.handshake_timeout;
        config.max_connections = self.max_connections;
        config.shutdown_timeout = self.shutdown_timeout;
        config.metrics_listen = self.metrics_listen;
        config.read_buffer_bytes = self.read_buffer_bytes;
        config
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
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
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match Server::bind(cli.into_config()).await {
            Ok(server) => server,
            Err(err) => {
                tracing::error!("{err}");
                eprintln!("compendium-server: {err}");
                return ExitCode::FAILURE;
            }
        };
        server.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}
