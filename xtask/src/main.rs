//! Project chores for compendium-wss, run as `cargo xtask <command>`.
//!
//! `main` only parses the command line and dispatches; each chore lives in its own module.

mod bench;
mod bench_cluster;
mod bench_load;
mod bench_resumable;
mod bench_spread;
mod chaos;
mod chart;
mod codegen;
#[cfg(test)]
mod deps;
mod ensure;
mod fuzz;
mod message_api;
mod pin;
mod process;
mod python;
mod report;
mod rolling_restart;
mod schema_diff;
mod schema_growth;
mod soak;
mod test;
mod vendor;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Project chores for compendium-wss.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every test, first installing what they need: the cluster tests run a real
    /// nats-server, which this installs (Debian's package, through apt-get) when it is
    /// missing; then the Python package's checks (as `test-python`). Extra arguments go to
    /// `cargo test --workspace`.
    Test {
        /// Passed on to `cargo test --workspace` (e.g. `-- --nocapture`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the Python package (python/) in a virtual environment in target/python-venv
    /// (tools from PyPI) and run mypy --strict, mypy.stubtest and its pytest suite against
    /// the real relay binary.
    TestPython,
    /// Generate Rust code (and embedded copies) from the JSON Schemas and session files.
    ///
    /// Writes `messages/src/generated.rs` (the message types, their constructors,
    /// `type_name` and `direction`) and `messages/schema/` (a copy of `schema/`) from
    /// `schema/`, `conformance/src/session/generated.rs` from
    /// `conformance/session.schema.json`, and `conformance/src/session/index.rs`, which
    /// embeds every file in `conformance/sessions/` (so a new session file needs a codegen
    /// run). Prints what changed in the message schema since the last run and what each
    /// change means for compatibility. With `--check`, writes nothing, prints a unified
    /// diff of what would change and fails if anything is stale.
    Codegen {
        /// Only verify that the generated files are current; exit 1 if not.
        #[arg(long)]
        check: bool,
    },
    /// Prove `messages/` works vendored alone: copy it outside the repository, depend on
    /// the copy by path from a throwaway crate, build it and parse a message with it.
    CheckVendor,
    /// Prove the schema can grow with no hand edit (docs/protocol.md section 5): apply each
    /// of three changes to a scratch copy of the repository — optional members, a new
    /// client-to-server type, a new required member — run codegen there and build it. The
    /// first two must build and pass the messages and server tests (the relay answers the
    /// new type ERR 501); the third must fail only where the message is constructed.
    /// Builds in target/schema-growth; takes several minutes.
    CheckSchemaGrowth,
    /// Benchmark compendium-server against the bare baseline relay (release builds, A/B
    /// alternating, medians, RSS from /proc) and write bench/results/<date>.{json,md,svg}
    /// plus the results section of docs/performance.md. Takes a few minutes; --quick < 2
    /// minutes.
    Bench {
        /// Shorter runs, one repetition, smaller idle test; does not touch docs/performance.md.
        #[arg(long)]
        quick: bool,
        /// Measure nothing: judge an existing results file again from its raw runs with the
        /// current targets, rewriting its table (.md), chart (.svg) and summaries, and for a
        /// full unpinned run the results section of docs/performance.md.
        #[arg(long, value_name = "RESULTS.json")]
        rejudge: Option<PathBuf>,
        /// Instead: what cluster mode costs — one node, one node in cluster mode, two nodes
        /// with nats-server (every message across them; version 1, then resumable), and
        /// two bare NATS bridges (the design's physical limit), as ratios to the single
        /// node and to the bridge, with CPU per message and idle memory per connection.
        /// Needs nats-server.
        #[arg(long, conflicts_with = "rejudge")]
        cluster: bool,
        /// Run the relay on CPU 0 and the load generator on CPU 1 (sched_setaffinity; each
        /// then has one tokio worker), so neither steals the other's CPU. Recorded in the
        /// results, written to <date>-pinned.*; docs/performance.md is not touched.
        #[arg(long, conflicts_with_all = ["rejudge", "cluster"])]
        pin: bool,
        /// Measure nothing: compare the ratios of two or more results files (full runs)
        /// side by side with their spread, and write the table into docs/performance.md.
        #[arg(long, value_name = "RESULTS.json", num_args = 2.., conflicts_with_all = ["rejudge", "cluster", "pin", "quick"])]
        spread: Vec<PathBuf>,
    },
    /// Build the coverage-guided fuzz targets in `fuzz/` (libFuzzer, stable Rust) and run
    /// each for SECS seconds: first its saved failures (`fuzz/regressions/<target>/`), then
    /// new inputs from its corpus (`target/fuzz/work/<target>/corpus`, seeded from
    /// `schema/examples` and `conformance/sessions`). Fails on any finding, printing the
    /// command that reproduces it. Targets: message_parse, relay_core, client_frames,
    /// session_file.
    Fuzz {
        /// How long to fuzz each target.
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        secs: u64,
        /// Run only these targets (repeatable); all when absent.
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
    },
    /// Restart a 3-node cluster (in-process nodes on a real nats-server, behind a
    /// round-robin TCP front) node after node, ROUNDS times over, while PAIRS pairs of
    /// resumable clients exchange MESSAGES numbered messages each way; fails if any message is
    /// lost, repeated or reordered, or any pairing loses its address (docs/cluster.md,
    /// "Drain"). Then kills a node (`kill -9`) under the same load: only the sessions it
    /// held may end, each told. A short run of the first is part of `cargo xtask test`.
    RollingRestart {
        /// Rounds of restarts (each restarts all three nodes in turn).
        #[arg(long, default_value_t = 5)]
        rounds: u64,
        /// Pairs of resumable clients.
        #[arg(long, default_value_t = 32)]
        pairs: u64,
        /// Numbered messages each client sends its peer.
        #[arg(long, default_value_t = 5000)]
        messages: u64,
    },
    /// Chaos: three relay node processes on a three-server NATS cluster behind a
    /// round-robin TCP front, resumable and version 1 client pairs exchanging numbered
    /// messages, and a random schedule of faults (kill -9, SIGTERM drains, SIGSTOP/SIGCONT,
    /// NATS servers killed and restarted, client connections reset) for DURATION seconds.
    /// Fails if a message is lost without its sender being told, repeated or reordered, or
    /// a node crashes or drains badly; then shrinks the schedule to the fewest steps that
    /// still fail and prints the command that replays them (docs/cluster.md, "Chaos"). A
    /// 10 s run is part of `cargo xtask test`.
    Chaos {
        /// Seconds of faults.
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        duration: u64,
        /// The schedule's seed (printed by every run); drawn when absent.
        #[arg(long)]
        seed: Option<u64>,
        /// Apply only these steps of the seed's schedule (a replay, as a failed run prints).
        #[arg(long, value_delimiter = ',', value_name = "N,N,...", requires = "seed")]
        steps: Option<Vec<usize>>,
        /// Pairs of resumable clients (half as many version 1 pairs run beside them).
        #[arg(long, default_value_t = 6)]
        pairs: u64,
        /// Runs the shrink of a failure may take at most.
        #[arg(long, default_value_t = 20, value_name = "RUNS")]
        shrink_runs: usize,
    },
    /// Run a steady mixed load (pingpong pairs whose every delivery is checked, plus churn
    /// clients that connect, INIT, send an invalid message, route to themselves and leave,
    /// half with a TCP reset) against a release compendium-server for MINUTES, sampling
    /// its RSS, open descriptors and /metrics. Writes bench/soak/<date>.{csv,md,svg} (and
    /// the soak section of docs/performance.md for runs of 10 minutes or more). Fails if RSS or
    /// descriptors trend upward after the warm-up, if any message is lost, reordered or
    /// changed, or if connections, addresses or descriptors are not given back at the end.
    Soak {
        /// How long to run the load.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Pingpong client pairs.
        #[arg(long, default_value_t = 8)]
        pairs: usize,
        /// Churn clients (each at most 10 cycles per second).
        #[arg(long, default_value_t = 4)]
        churn: usize,
        /// Seconds between samples.
        #[arg(long, default_value_t = 5.0)]
        sample_secs: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test { args } => test::run(&args),
        Command::TestPython => python::run(),
        Command::Codegen { check } => codegen::run(if check {
            ensure::Mode::Check
        } else {
            ensure::Mode::Write
        }),
        Command::CheckVendor => vendor::run(),
        Command::CheckSchemaGrowth => schema_growth::run(),
        Command::Bench {
            rejudge: Some(results),
            ..
        } => bench::rejudge(&results),
        Command::Bench { spread, .. } if !spread.is_empty() => bench_spread::run(&spread),
        Command::Bench {
            quick,
            cluster: true,
            ..
        } => bench_cluster::run(quick),
        Command::Bench { quick, pin, .. } => bench::run(quick, pin),
        Command::Fuzz { secs, targets } => fuzz::run(secs, &targets),
        Command::Chaos {
            duration,
            seed,
            steps,
            pairs,
            shrink_runs,
        } => chaos::run(&chaos::Options {
            duration,
            seed,
            steps,
            pairs,
            shrink_runs,
        }),
        Command::RollingRestart {
            rounds,
            pairs,
            messages,
        } => rolling_restart::run(rounds, pairs, messages),
        Command::Soak {
            minutes,
            pairs,
            churn,
            sample_secs,
        } => soak::run(&soak::Options {
            minutes,
            pairs,
            churn,
            sample_secs,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root, found from this crate's manifest so that xtask behaves the same
/// from any working directory.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
