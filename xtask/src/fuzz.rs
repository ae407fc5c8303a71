//! `cargo xtask fuzz`: build the libFuzzer targets in `fuzz/` and run each for a while.
//!
//! Stable Rust is enough: libFuzzer needs only the sanitizer-coverage instrumentation,
//! which `-C passes=sancov-module` and LLVM options provide (the flags cargo-fuzz passes
//! with `--sanitizer none`). No address sanitizer: every crate here forbids `unsafe`.
//! The build names `--target` explicitly so the flags reach the fuzzed code but not build
//! scripts or proc macros, which would fail to load with coverage hooks in them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// One fuzz target: its name (= binary), the folders whose files seed its corpus, and
/// its libFuzzer dictionary in `fuzz/dictionaries/`.
struct Target {
    name: &'static str,
    seeds: &'static [&'static str],
    dictionary: &'static str,
}

const TARGETS: &[Target] = &[
    Target {
        name: "message_parse",
        seeds: &["schema/examples/valid", "schema/examples/invalid"],
        dictionary: "message.dict",
    },
    // The next two read structured scripts (`arbitrary`); text inside them still benefits
    // from the protocol's tokens.
    Target {
        name: "relay_core",
        seeds: &[],
        dictionary: "message.dict",
    },
    Target {
        name: "session_stream",
        seeds: &[],
        dictionary: "message.dict",
    },
    Target {
        name: "client_frames",
        seeds: &[],
        dictionary: "message.dict",
    },
    Target {
        name: "session_file",
        seeds: &["conformance/sessions"],
        dictionary: "session.dict",
    },
];

const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cllvm-args=-sanitizer-coverage-stack-depth \
    -Cdebug-assertions -Coverflow-checks \
    --cfg fuzzing";

/// What one target's run came to.
struct Outcome {
    target: &'static str,
    runs: u64,
    regressions: usize,
    corpus: usize,
    crash: Option<PathBuf>,
}

/// Build every target, replay its regression inputs, then fuzz it for `secs` seconds.
/// `only` restricts the run to the named targets.
pub(crate) fn run(secs: u64, only: &[String]) -> Result<()> {
    for name in only {
        if !TARGETS.iter().any(|t| t.name == name) {
            let known: Vec<_> = TARGETS.iter().map(|t| t.name).collect();
            bail!(
                "no fuzz target {name:?}; the targets are {}",
                known.join(", ")
            );
        }
    }
    let root = crate::project_root();
    let bin_dir = build(&root)?;
    let mut outcomes = Vec::new();
    for target in TARGETS {
        if !only.is_empty() && !only.iter().any(|o| o == target.name) {
            continue;
        }
        outcomes.push(fuzz_one(&root, &bin_dir, target, secs)?);
    }
    println!(
        "\n{:<14} {:>12} {:>12} {:>8}  result",
        "target", "runs", "regressions", "corpus"
    );
    for o in &outcomes {
        let result = match &o.crash {
            None => "ok".to_owned(),
            Some(path) => format!("FAILED: {}", path.display()),
        };
        println!(
            "{:<14} {:>12} {:>12} {:>8}  {result}",
            o.target, o.runs, o.regressions, o.corpus
        );
    }
    let failed: Vec<_> = outcomes.iter().filter(|o| o.crash.is_some()).collect();
    if !failed.is_empty() {
        bail!(
            "{} target(s) found a failing input. Reproduce with the command printed above; \
             once fixed, copy the input into fuzz/regressions/<target>/ and add a test for it \
             to the crate it concerns",
            failed.len()
        );
    }
    Ok(())
}

fn build(root: &Path) -> Result<PathBuf> {
    let triple = host_triple()?;
    let target_dir = root.join("target/fuzz");
    println!("building the fuzz targets for {triple} (first build takes a few minutes)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root.join("fuzz"))
        .env("RUSTFLAGS", RUSTFLAGS)
        .args([
            "build",
            "--release",
            "--bins",
            "--locked",
            "--target",
            &triple,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .context("running cargo build in fuzz/")?;
    if !status.success() {
        bail!("building the fuzz targets failed");
    }
    Ok(target_dir.join(triple).join("release"))
}

fn host_triple() -> Result<String> {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV printed no host triple")
}

fn fuzz_one(root: &Path, bin_dir: &Path, target: &Target, secs: u64) -> Result<Outcome> {
    let Target {
        name: target,
        seeds,
        dictionary,
    } = *target;
    let bin = bin_dir.join(target);
    let work = root.join("target/fuzz/work").join(target);
    let corpus = work.join("corpus");
    let artifacts = work.join("artifacts");
    fs::create_dir_all(&corpus)?;
    fs::create_dir_all(&artifacts)?;
    let artifact_prefix = format!("-artifact_prefix={}/", artifacts.display());

    // 1. Every input that ever failed must pass now (libFuzzer runs files it is given).
    let regressions = files_in(&root.join("fuzz/regressions").join(target))?;
    if !regressions.is_empty() {
        println!(
            "== {target}: replaying {} regression input(s)",
            regressions.len()
        );
        let status = Command::new(&bin)
            .arg(&artifact_prefix)
            .args(&regressions)
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running {}", bin.display()))?;
        if !status.success() {
            bail!("{target}: a regression input fails again (see the panic above)");
        }
    }

    // 2. Fuzz, from the saved corpus plus the seeds (read-only: new inputs go to corpus).
    println!("== {target}: fuzzing for {secs} s");
    let mut command = Command::new(&bin);
    command
        .arg(&corpus)
        .args(seeds.iter().map(|d| root.join(d)))
        .arg(format!(
            "-dict={}",
            root.join("fuzz/dictionaries").join(dictionary).display()
        ))
        .arg(format!("-max_total_time={secs}"))
        .arg("-print_final_stats=1")
        .arg("-timeout=10")
        .arg(&artifact_prefix);
    let before = files_in(&artifacts)?;
    let output = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let runs = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let crash = if output.status.success() {
        None
    } else {
        eprintln!("{log}");
        let after = files_in(&artifacts)?;
        let new = after.into_iter().find(|f| !before.contains(f));
        let path = new.unwrap_or(artifacts.clone());
        eprintln!(
            "{target}: FAILED. Reproduce with:\n  {} {}",
            bin.display(),
            path.display()
        );
        Some(path)
    };
    Ok(Outcome {
        target,
        runs,
        regressions: regressions.len(),
        corpus: files_in(&corpus)?.len(),
        crash,
    })
}

/// The files directly in `dir`, sorted; none if it does not exist.
fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.is_file() && path.file_name().is_some_and(|n| n != "README.md") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
