//! `cargo xtask chaos`: the chaos test of `server/tests/chaos/` for longer (three relay
//! node processes on a three-server NATS cluster, resumable and version 1 clients, a random
//! schedule of faults; docs/cluster.md, "Chaos"), and, when it finds a violation, a shrink
//! of the faults it applied to the fewest that still fail, printed as a replay command.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// What to run.
pub(crate) struct Options {
    /// Seconds of faults.
    pub(crate) duration: u64,
    /// The schedule's seed; drawn when absent.
    pub(crate) seed: Option<u64>,
    /// Replay only these steps of the seed's schedule.
    pub(crate) steps: Option<Vec<usize>>,
    /// Resumable pairs (half as many version 1 pairs run beside them).
    pub(crate) pairs: u64,
    /// Runs a shrink may take at most.
    pub(crate) shrink_runs: usize,
}

/// What one run of the chaos test said.
struct Run {
    passed: bool,
    seed: Option<u64>,
    /// The steps it applied.
    steps: Vec<usize>,
    violations: Vec<String>,
}

/// Run the chaos test; on a violation, shrink and fail with the replay command.
pub(crate) fn run(options: &Options) -> Result<()> {
    if options.duration == 0 || options.pairs == 0 {
        bail!("--duration and --pairs must be at least 1");
    }
    crate::test::provision_nats_server()?;
    let first = chaos(options, options.seed, options.steps.as_deref(), true)?;
    if first.passed {
        eprintln!("xtask chaos: no violation");
        return Ok(());
    }
    let seed = first
        .seed
        .context("the chaos test failed before it chose a seed; see above")?;
    eprintln!(
        "xtask chaos: {} violations with seed {seed} and steps {:?}; shrinking (at most {} runs; \
         a run is not deterministic, so a step the shrink keeps may not be needed every time)",
        first.violations.len(),
        first.steps,
        options.shrink_runs
    );
    if first.violations.is_empty() {
        bail!("the chaos test failed without a violation (it could not run); see above");
    }
    let smallest = shrink(first.steps, options.shrink_runs, |steps| {
        let run = chaos(options, Some(seed), Some(steps), false)?;
        // A run that fails for another reason (a build error, a cluster that cannot start)
        // says nothing about the steps: stop rather than shrink on it.
        if !run.passed && run.violations.is_empty() {
            bail!("a replay failed without a violation (it could not run); see above");
        }
        Ok(!run.passed)
    })?;
    bail!(
        "chaos found violations; replay the smallest failing schedule found with\n  \
         cargo xtask chaos --seed {seed} --steps {}",
        join(&smallest)
    )
}

/// The smallest subset of `steps` for which `fails` still holds that a greedy shrink finds
/// within `budget` runs: drop ever smaller chunks while the rest still fails (`steps` is
/// known to fail).
fn shrink(
    steps: Vec<usize>,
    budget: usize,
    mut fails: impl FnMut(&[usize]) -> Result<bool>,
) -> Result<Vec<usize>> {
    let mut current = steps;
    let mut runs = 0;
    let mut chunk = current.len().div_ceil(2).max(1);
    loop {
        let mut at = 0;
        while at < current.len() {
            if runs == budget {
                return Ok(current);
            }
            let candidate: Vec<usize> = current[..at]
                .iter()
                .chain(&current[(at + chunk).min(current.len())..])
                .copied()
                .collect();
            runs += 1;
            if fails(&candidate)? {
                eprintln!("xtask chaos: still fails with steps {candidate:?}");
                current = candidate;
            } else {
                at += chunk;
            }
        }
        if chunk == 1 {
            return Ok(current);
        }
        chunk = chunk.div_ceil(2);
    }
}

fn join(steps: &[usize]) -> String {
    steps
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// One run of the chaos test (release build), its output passed through.
fn chaos(options: &Options, seed: Option<u64>, steps: Option<&[usize]>, loud: bool) -> Result<Run> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(crate::project_root())
        .args([
            "test",
            "--release",
            "-p",
            "compendium-server",
            "--test",
            "chaos",
            "--",
        ])
        .args([
            "--nocapture",
            "--exact",
            "chaos_loses_nothing_it_does_not_report",
        ])
        .env("COMPENDIUM_CHAOS_SECS", options.duration.to_string())
        .env("COMPENDIUM_CHAOS_PAIRS", options.pairs.to_string())
        .stdout(Stdio::piped());
    if let Some(seed) = seed {
        command.env("COMPENDIUM_CHAOS_SEED", seed.to_string());
    }
    if let Some(steps) = steps {
        command.env("COMPENDIUM_CHAOS_FAULTS", join(steps));
    }
    let mut child = command.spawn().context("running cargo test")?;
    let stdout = child.stdout.take().context("cargo test's output")?;
    let mut run = Run {
        passed: false,
        seed: None,
        steps: Vec::new(),
        violations: Vec::new(),
    };
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        if let Some(rest) = line.strip_prefix("chaos-seed: ") {
            run.seed = rest.split_whitespace().next().and_then(|s| s.parse().ok());
        } else if let Some(rest) = line.strip_prefix("chaos-steps: ") {
            run.steps = rest.split(',').filter_map(|s| s.parse().ok()).collect();
        } else if let Some(rest) = line.strip_prefix("chaos-violation: ") {
            run.violations.push(rest.to_owned());
        }
        if loud || line.starts_with("chaos") {
            println!("{line}");
        }
    }
    run.passed = child.wait().context("waiting for cargo test")?.success();
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_finds_the_steps_that_fail_together() {
        // Fails when both 3 and 7 are in.
        let fails = |s: &[usize]| Ok(s.contains(&3) && s.contains(&7));
        let steps: Vec<usize> = (0..12).collect();
        assert_eq!(
            shrink(steps.clone(), 100, fails).expect("shrink"),
            vec![3, 7]
        );
        // Out of runs: what it has so far, still failing.
        let partial = shrink(steps, 2, fails).expect("shrink");
        assert!(partial.contains(&3) && partial.contains(&7), "{partial:?}");
        // Fails even with no step at all.
        assert_eq!(
            shrink(vec![1, 2], 10, |_| Ok(true)).expect("shrink"),
            Vec::<usize>::new()
        );
    }
}
