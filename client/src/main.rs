//! `compendium-client`: poke at a Compendium relay from a shell.
//!
//! `init` gets an address and prints every message delivered to it; `send` routes a
//! message to an address and reports the relay's verdict through the exit status.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use compendium_cli_support::{Exit, Seconds, Signals};
use compendium_client::{Address, Client, ClientBuilder, Error, Event, Payload};

/// A command-line client for the Compendium WebSocket relay.
#[derive(Parser, Debug)]
#[command(version, after_help = EXAMPLES)]
struct Cli {
    /// The relay's URL (ws:// or wss://).
    #[arg(
        long,
        global = true,
        env = "COMPENDIUM_URL",
        default_value = "ws://127.0.0.1:8001"
    )]
    url: String,

    /// Trust only this PEM certificate (a private CA or a self-signed relay) for wss://.
    #[arg(long, global = true, env = "COMPENDIUM_CA_CERT", value_name = "PEM")]
    ca_cert: Option<PathBuf>,

    /// Give up after this many seconds (exit status 3).
    #[arg(long, global = true, value_name = "SECS")]
    timeout: Option<Seconds>,

    /// Resumable session (protocol version 2): survive a dropped connection by
    /// resuming the same address on a new one, losing and repeating no message. Exits 1
    /// with the reason if the session is lost, never silently under a new address. Needs
    /// a relay that speaks version 2 (compendium-server does unless --resume-grace 0).
    #[arg(long, global = true, env = "COMPENDIUM_RESUMABLE")]
    resumable: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Get an address, print it (first line of stdout), then print each delivered msg as
    /// one JSON line until Ctrl-C or SIGTERM. Errors go to stderr. Reads no stdin.
    #[command(alias = "listen")]
    Init {
        /// Exit 0 after the first delivered message.
        #[arg(long)]
        once: bool,
    },
    /// Route one JSON object to ADDR; exit 0 if the relay accepted it, 1 with the relay's
    /// ERR on stderr if not.
    Send {
        /// The target's address (32 lowercase hex characters).
        #[arg(value_parser = parse_address)]
        address: Address,
        /// The message: a JSON object, or `-` to read it from stdin. Not needed with --lines.
        #[arg(required_unless_present = "lines")]
        json: Option<String>,
        /// Read stdin line by line, routing each non-empty line as one message.
        #[arg(long, conflicts_with = "json")]
        lines: bool,
    },
}

const EXAMPLES: &str = "Examples:
  compendium-client init                          # prints an address, then each message
  compendium-client init --once --timeout 30      # wait for one message, at most 30 s
  compendium-client send 0123...cdef '{\"hello\":\"there\"}'
  echo '{\"n\":1}' | compendium-client send 0123...cdef -
  compendium-client --url wss://relay.example:443 --ca-cert ca.pem init
  compendium-client --resumable listen            # keeps its address across network drops

Exit status: 0 success, 1 refused by the relay / connection failed / invalid input,
2 usage error, 3 --timeout expired.";

fn parse_address(text: &str) -> Result<Address, String> {
    text.parse().map_err(|e| format!("{e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("compendium-client: cannot start the async runtime: {err}");
            return Exit::Failure.into();
        }
    };
    let timeout = cli.timeout.map(Duration::from);
    runtime.block_on(async move {
        let work = run(cli);
        let outcome = match timeout {
            Some(limit) => tokio::time::timeout(limit, work)
                .await
                .unwrap_or(Err(Failure::TimedOut(limit))),
            None => work.await,
        };
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure::TimedOut(limit)) => {
                eprintln!("compendium-client: timed out after {limit:?}");
                Exit::Timeout.into()
            }
            Err(Failure::Failed(message)) => {
                eprintln!("compendium-client: {message}");
                Exit::Failure.into()
            }
        }
    })
}

enum Failure {
    TimedOut(Duration),
    Failed(String),
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Self::Failed(err.to_string())
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let mut options = ClientBuilder::default();
    if let Some(ca) = &cli.ca_cert {
        options = options.ca_cert(ca);
    }
    options = options.resumable(cli.resumable);
    let client = options.connect(&cli.url).await?;
    match cli.command {
        Command::Init { once } => listen(client, once).await,
        Command::Send {
            address,
            json,
            lines,
        } => send(client, address, json, lines, cli.resumable).await,
    }
}

async fn listen(mut client: Client, once: bool) -> Result<(), Failure> {
    let mut signals = Signals::register()
        .map_err(|e| Failure::Failed(format!("cannot listen for SIGINT and SIGTERM: {e}")))?;
    let address = client.init().await?;
    print_line(&address.to_string());
    loop {
        let event = tokio::select! {
            _ = signals.recv() => break,
            event = client.next_event() => event,
        };
        match event {
            Some(Event::Deliver(msg)) => {
                // Raw newlines in JSON text can only be insignificant whitespace, so
                // folding them keeps the message intact and on one line.
                print_line(&msg.as_str().replace(['\n', '\r'], " "));
                if once {
                    break;
                }
            }
            Some(Event::Error(err)) => eprintln!("compendium-client: {err}"),
            Some(Event::Resumed { resent, .. }) => {
                eprintln!(
                    "compendium-client: connection lost and session resumed (same address; {resent} messages resent)"
                );
            }
            Some(Event::SessionLost { reason }) => {
                return Err(Failure::Failed(format!("session lost: {reason}")));
            }
            Some(Event::Closed { code, reason }) => {
                return Err(Failure::Failed(format!(
                    "the relay closed the connection{}: {reason}",
                    code.map(|c| format!(" ({c})")).unwrap_or_default()
                )));
            }
            None => return Err(Failure::Failed("the connection ended".into())),
            Some(_) => {} // events added in later versions
        }
    }
    client.close().await?;
    Ok(())
}

fn print_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. `| head -1`) is not an error worth reporting.
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

async fn send(
    mut client: Client,
    to: Address,
    json: Option<String>,
    lines: bool,
    resumable: bool,
) -> Result<(), Failure> {
    let mut invalid = Vec::new();
    if resumable {
        // A version 2 connection routes within a session.
        client.init().await?;
    }
    if lines {
        // Blocking reads are fine here: this command has nothing else to do meanwhile.
        for (number, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.map_err(|e| Failure::Failed(format!("reading stdin: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            match Payload::from_json(&line) {
                Ok(msg) => client.sender().route_payload(&to, msg).await?,
                Err(err) => invalid.push(format!("stdin line {}: {err}", number + 1)),
            }
        }
    } else {
        let text = match json.as_deref() {
            Some("-") | None => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| Failure::Failed(format!("reading stdin: {e}")))?;
                text
            }
            Some(text) => text.to_owned(),
        };
        let msg = Payload::from_json(&text).map_err(|e| Failure::Failed(e.to_string()))?;
        client.sender().route_payload(&to, msg).await?;
    }

    let mut refused = Vec::new();
    if resumable {
        // END makes the relay send everything the session has (the ERRs our ROUTEs
        // earned among it) before it closes; a dropped link meanwhile is resumed.
        let sender = client.sender();
        sender.close().await?;
        while let Some(event) = client.next_event().await {
            match event {
                Event::Error(err) => refused.push(err.to_string()),
                Event::SessionLost { reason } => refused.push(format!("session lost: {reason}")),
                Event::Closed { .. } => break,
                _ => {}
            }
        }
    } else {
        // The relay acknowledges nothing on success, but answers in order: once a
        // following INIT is answered, every ERR our ROUTEs earned has arrived before it.
        client.init().await?;
        while let Some(event) = client.try_next_event() {
            if let Event::Error(err) = event {
                refused.push(err.to_string());
            }
        }
        client.close().await?;
    }
    for line in invalid.iter().chain(&refused) {
        eprintln!("compendium-client: {line}");
    }
    match (invalid.len(), refused.len()) {
        (0, 0) => Ok(()),
        (i, r) => Err(Failure::Failed(format!(
            "{i} invalid, {r} refused by the relay"
        ))),
    }
}
