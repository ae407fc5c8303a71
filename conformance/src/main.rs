//! `compendium-conformance`: check any Compendium relay against docs/protocol.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use compendium_cli_support::{Exit, Signals};
use compendium_client::ClientBuilder;
use compendium_conformance::case::{self, Case};
use compendium_conformance::recorder::{Labels, Recorder};
use compendium_conformance::runner::{DEFAULT_CASE_TIMEOUT, RunOptions, run};
use compendium_conformance::{load, session};

/// Conformance suite for Compendium WebSocket relays.
///
/// Each case has a stable id RULE/N tied to a numbered rule of docs/protocol.md, a level
/// (MUST or SHOULD) and a verdict: PASS, FAIL, NON-STRICT (the required outcome, but not
/// the recommended form), UNSUPPORTED (an optional feature is absent), SKIPPED. The exit
/// status is 1 if any MUST case fails (with --strict: any SHOULD failure or NON-STRICT
/// too), 2 on a usage or input error.
#[derive(Parser, Debug)]
#[command(version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the suite (or some cases) against a relay.
    Run {
        /// The relay under test; for a relay of several nodes, one URL per node (repeat,
        /// or separate with commas): each case's connections are spread over them.
        #[arg(
            long,
            env = "CONFORMANCE_URL",
            default_value = "ws://127.0.0.1:8001",
            value_delimiter = ','
        )]
        url: Vec<String>,
        /// Only cases whose id starts with one of these (e.g. `3.` or `3.6/1`).
        prefixes: Vec<String>,
        /// SHOULD failures and NON-STRICT results fail the run too.
        #[arg(long)]
        strict: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// How long to wait for each expected frame, and for each connection to open, in
        /// milliseconds.
        #[arg(long, value_name = "N", default_value_t = 2000)]
        timeout_ms: u64,
        /// The most one case may take, in milliseconds (plus --slow-ms); a case still
        /// running then FAILs. A run ends within cases × this, whatever the relay does.
        #[arg(long, value_name = "N", default_value_t = u64::try_from(DEFAULT_CASE_TIMEOUT.as_millis()).unwrap_or(u64::MAX))]
        case_timeout_ms: u64,
        /// Trust only this PEM certificate for wss:// (a private CA or self-signed relay).
        #[arg(long, value_name = "PEM")]
        ca_cert: Option<PathBuf>,
        /// Also run cases that wait for the relay's own timers (pings, idle and handshake
        /// timeouts), waiting up to N ms for each; set it above the relay's settings.
        #[arg(long, value_name = "N")]
        slow_ms: Option<u64>,
        /// The relay's connection limit, to check rule 4.3 (opens that many connections).
        #[arg(long, value_name = "N")]
        max_connections: Option<usize>,
        /// Run these session files instead of the built-in suite (repeatable).
        #[arg(long = "session", value_name = "FILE")]
        sessions: Vec<PathBuf>,
    },
    /// List the cases: id, level, description.
    List,
    /// Generate load against a relay and measure it: pairs of clients route to each other;
    /// every delivery is checked (once, in order, unchanged); reports msgs/s and latency
    /// percentiles. Exit status 1 if anything was lost, reordered or changed.
    Load {
        /// The relay; for a relay of several nodes, one URL per node (repeat, or separate
        /// with commas): each pair's two ends go to different nodes.
        #[arg(
            long,
            env = "CONFORMANCE_URL",
            default_value = "ws://127.0.0.1:8001",
            value_delimiter = ','
        )]
        url: Vec<String>,
        /// Client pairs.
        #[arg(long, default_value_t = 16)]
        pairs: usize,
        /// Size of each msg, in bytes.
        #[arg(long, value_name = "BYTES", default_value_t = 256)]
        size: usize,
        /// Seconds to send for (with --idle: seconds to hold the connections).
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// pingpong: one message in flight per direction; flood: --window in flight.
        #[arg(long, value_enum, default_value_t = LoadMode::Pingpong)]
        mode: LoadMode,
        /// Messages in flight per direction in flood mode.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Open loop instead: send N msgs/s in all, spread evenly over the 2 × --pairs
        /// senders, each on a fixed timetable whether or not earlier messages came back.
        /// Latency then counts from when each message was due (coordinated omission
        /// corrected, as wrk2 does), and a run whose generator fell more than 1 % behind its
        /// timetable is INVALID (the relay did not get the load asked for).
        #[arg(long, value_name = "N", conflicts_with_all = ["mode", "window"])]
        rate: Option<f64>,
        /// Also run N churn clients: each repeatedly connects, INITs, sends an invalid
        /// message (expects ERR 400), routes to itself (expects it back) and leaves, every
        /// other time with a TCP reset; at most 10 cycles per second each.
        #[arg(long, value_name = "N", default_value_t = 0)]
        churn: usize,
        /// Instead: open this many connections that INIT and hold them (for memory
        /// measurements); prints one line when they are all open.
        #[arg(long, value_name = "N")]
        idle: Option<usize>,
        /// Protocol version 2 (resumable sessions) on every pair (and --idle) connection:
        /// numbered ROUTEs, DELIVERs acknowledged one ACK per 32. Fails if the relay does
        /// not select `compendium.v2`.
        #[arg(long)]
        resumable: bool,
        /// Instead: measure resume latency (version 2). N messages of --size bytes wait,
        /// unacknowledged, in a session whose connection is then reset; each of 10 rounds
        /// times the new connection's start to the last replayed message. Prints JSON with
        /// --json.
        #[arg(long, value_name = "N", conflicts_with_all = ["idle", "rate"])]
        resume: Option<usize>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Trust only this PEM certificate for wss://.
        #[arg(long, value_name = "PEM")]
        ca_cert: Option<PathBuf>,
    },
    /// Record a session: a proxy that forwards to UPSTREAM and writes what happens as a
    /// session file when stopped (Ctrl-C / SIGTERM).
    Record {
        /// Where clients connect, e.g. 127.0.0.1:9001.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: std::net::SocketAddr,
        /// The relay to forward to.
        #[arg(long, value_name = "URL")]
        upstream: String,
        /// The session file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The case id to give the session.
        #[arg(long, default_value = "0.0/1")]
        id: String,
        /// Its one-line description.
        #[arg(long, default_value = "recorded session")]
        description: String,
        /// Trust only this PEM certificate for a wss:// upstream.
        #[arg(long, value_name = "PEM")]
        ca_cert: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LoadMode {
    /// One message in flight per direction.
    Pingpong,
    /// --window messages in flight per direction.
    Flood,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// One line per case and a summary line.
    Text,
    /// The whole report as JSON.
    Json,
    /// JUnit XML, for CI systems.
    Junit,
}

const EXAMPLES: &str = "Examples:
  compendium-conformance list
  compendium-conformance run --url ws://127.0.0.1:8001
  compendium-conformance run --url wss://relay.example --ca-cert ca.pem 3. --strict
  compendium-conformance run --url ws://127.0.0.1:8001 --format junit > conformance.xml
  compendium-conformance record --listen 127.0.0.1:9001 --upstream ws://127.0.0.1:8001 --out my-case.json
  compendium-conformance run --url ws://127.0.0.1:8001 --session my-case.json";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("compendium-conformance: cannot start the async runtime: {err}");
            return Exit::Failure.into();
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::List => list(),
            Command::Run {
                url,
                prefixes,
                strict,
                format,
                timeout_ms,
                case_timeout_ms,
                ca_cert,
                slow_ms,
                max_connections,
                sessions,
            } => {
                let cases = match load_cases(&sessions) {
                    Ok(cases) => cases,
                    Err(err) => {
                        eprintln!("compendium-conformance: {err}");
                        return Exit::Usage.into();
                    }
                };
                let mut options = RunOptions::on_nodes(url);
                options.prefixes = prefixes;
                options.strict = strict;
                options.timeout = Duration::from_millis(timeout_ms);
                options.case_timeout = Duration::from_millis(case_timeout_ms);
                options.client = client(ca_cert);
                options.slow = slow_ms.map(Duration::from_millis);
                options.max_connections = max_connections;
                let report = run(&cases, &options).await;
                if report.results.is_empty() {
                    eprintln!(
                        "compendium-conformance: no case matches {:?}",
                        options.prefixes
                    );
                    return Exit::Usage.into();
                }
                print!(
                    "{}",
                    match format {
                        Format::Text => report.text(),
                        Format::Json => report.json() + "\n",
                        Format::Junit => report.junit() + "\n",
                    }
                );
                if report.failed() {
                    Exit::Failure.into()
                } else {
                    Exit::Success.into()
                }
            }
            Command::Load {
                url,
                pairs,
                size,
                secs,
                mode,
                window,
                rate,
                churn,
                idle,
                resumable,
                resume,
                json,
                ca_cert,
            } => {
                let duration = match Duration::try_from_secs_f64(secs) {
                    Ok(duration) => duration,
                    Err(_) => {
                        eprintln!("compendium-conformance: --secs {secs} is not a usable duration");
                        return Exit::Usage.into();
                    }
                };
                let client = client(ca_cert);
                if let Some(buffered) = resume {
                    let Some(url) = url.first() else {
                        eprintln!("compendium-conformance: load --resume: no --url");
                        return Exit::Usage.into();
                    };
                    return match load::resume_latency(url, &client, buffered, size, 10).await {
                        Ok(report) if json => {
                            println!("{}", serde_json::to_string(&report).unwrap_or_default());
                            Exit::Success.into()
                        }
                        Ok(report) => {
                            println!(
                                "resume with {} messages of {} B waiting, {} rounds: p50 {} µs, max {} µs",
                                report.buffered,
                                report.size,
                                report.rounds,
                                report.resume_us.p50,
                                report.resume_us.max
                            );
                            Exit::Success.into()
                        }
                        Err(err) => {
                            eprintln!("compendium-conformance: load --resume: {err}");
                            Exit::Failure.into()
                        }
                    };
                }
                match idle {
                    Some(count) => {
                        hold_idle(&url, &client, count, resumable, duration, json).await
                    }
                    None => {
                        let mode = match (rate, mode) {
                            (Some(_), _) => load::Mode::Open,
                            (None, LoadMode::Pingpong) => load::Mode::Pingpong,
                            (None, LoadMode::Flood) => load::Mode::Flood,
                        };
                        let options = load::LoadOptions {
                            urls: url,
                            pairs,
                            size,
                            duration,
                            mode,
                            window,
                            rate: rate.unwrap_or_default(),
                            churn,
                            client,
                            resumable,
                        };
                        match load::run(&options).await {
                            Ok(report) => {
                                if json {
                                    println!(
                                        "{}",
                                        serde_json::to_string(&report).unwrap_or_default()
                                    );
                                } else {
                                    print!("{}", report.text());
                                }
                                if report.valid {
                                    Exit::Success.into()
                                } else {
                                    Exit::Failure.into()
                                }
                            }
                            Err(err) => {
                                eprintln!("compendium-conformance: load: {err}");
                                Exit::Failure.into()
                            }
                        }
                    }
                }
            }
            Command::Record {
                listen,
                upstream,
                out,
                id,
                description,
                ca_cert,
            } => {
                record(
                    listen,
                    &upstream,
                    &out,
                    Labels { id, description },
                    client(ca_cert),
                )
                .await
            }
        }
    })
}

fn client(ca_cert: Option<PathBuf>) -> ClientBuilder {
    let client = ClientBuilder::default();
    match ca_cert {
        Some(pem) => client.ca_cert(pem),
        None => client,
    }
}

fn load_cases(files: &[PathBuf]) -> Result<Vec<Case>, String> {
    if files.is_empty() {
        return case::all().map_err(|e| e.to_string());
    }
    files
        .iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let session =
                session::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
            Ok(Case::from_session(session))
        })
        .collect()
}

/// Open `count` idle connections, say so on one line, hold them for `hold`.
async fn hold_idle(
    urls: &[String],
    client: &ClientBuilder,
    count: usize,
    resumable: bool,
    hold: Duration,
    json: bool,
) -> ExitCode {
    let (sockets, errors) = load::open_idle(urls, client, count, resumable).await;
    if json {
        let report = load::IdleReport {
            idle: count,
            opened: sockets.len(),
            failed: errors.len(),
            errors: errors.iter().take(5).cloned().collect(),
        };
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        println!(
            "holding {} connections ({} failed)",
            sockets.len(),
            errors.len()
        );
        for error in errors.iter().take(5) {
            eprintln!("  {error}");
        }
    }
    tokio::time::sleep(hold).await;
    drop(sockets);
    if errors.is_empty() {
        Exit::Success.into()
    } else {
        Exit::Failure.into()
    }
}

fn list() -> ExitCode {
    match case::all() {
        Ok(cases) => {
            for case in cases {
                println!(
                    "{:<8} {:<6} {}",
                    case.meta.id, case.meta.level, case.meta.description
                );
            }
            Exit::Success.into()
        }
        Err(err) => {
            eprintln!("compendium-conformance: {err}");
            Exit::Usage.into()
        }
    }
}

async fn record(
    listen: std::net::SocketAddr,
    upstream: &str,
    out: &PathBuf,
    labels: Labels,
    client: ClientBuilder,
) -> ExitCode {
    let mut signals = match Signals::register() {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("compendium-conformance: cannot listen for SIGINT and SIGTERM: {err}");
            return Exit::Failure.into();
        }
    };
    let recorder = match Recorder::bind(listen, upstream, client).await {
        Ok(recorder) => recorder,
        Err(err) => {
            eprintln!("compendium-conformance: cannot listen on {listen}: {err}");
            return Exit::Usage.into();
        }
    };
    let local = recorder
        .local_addr()
        .map_or_else(|_| listen.to_string(), |a| a.to_string());
    eprintln!(
        "recording: connect clients to ws://{local} (forwarding to {upstream}); Ctrl-C to stop and write {}",
        out.display()
    );
    let session = recorder
        .run(
            async move {
                signals.recv().await;
            },
            labels,
        )
        .await;
    let text = serde_json::to_string_pretty(&session).unwrap_or_default() + "\n";
    match std::fs::write(out, text) {
        Ok(()) => {
            eprintln!("wrote {}", out.display());
            Exit::Success.into()
        }
        Err(err) => {
            eprintln!(
                "compendium-conformance: cannot write {}: {err}",
                out.display()
            );
            Exit::Failure.into()
        }
    }
}
