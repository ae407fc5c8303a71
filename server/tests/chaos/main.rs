//! Chaos (docs/cluster.md, "Chaos"): three relay node processes on a three-server NATS
//! cluster behind a round-robin TCP front, pairs of resumable and version 1 clients
//! exchanging numbered messages both ways, and a random schedule of faults — kill -9,
//! SIGTERM drains, SIGSTOP/SIGCONT, NATS servers killed and restarted, client connections
//! reset. The oracle ([`pair::Report::violations`]): what arrives is in order and never
//! repeated, and every message sent arrives or its sender got an ERR for it (once a
//! pairing is declared over — session lost, connection closed, peer gone — only the gaps
//! below the last arrival, see `pair.rs`). No node may crash, and every drain must exit 0.
//!
//! `COMPENDIUM_CHAOS_SECS` (default 10) sets how long the faults go on,
//! `COMPENDIUM_CHAOS_SEED` the seed (default: drawn, and printed), `COMPENDIUM_CHAOS_FAULTS`
//! which steps of the seed's schedule to apply (a shrunk replay, as `cargo xtask chaos`
//! prints it), `COMPENDIUM_CHAOS_PAIRS` the resumable pairs (default 6; half as many
//! version 1 pairs run beside them). `cargo xtask chaos --duration SECS` runs it longer
//! and shrinks a failure to the fewest steps that still fail.

mod front;
mod pair;
mod schedule;
mod world;

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::front::Front;
use crate::schedule::Rng;
use crate::world::World;

/// Step numbers as a replay names them: `1,4,7`.
fn join(steps: &[usize]) -> String {
    steps
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// A pair of clients at a time, started again whenever its pairing ends, until `stop`.
async fn keep_a_pair(
    url: String,
    resumable: bool,
    stop: watch::Receiver<bool>,
) -> Vec<Option<pair::Report>> {
    let mut reports = Vec::new();
    while !*stop.borrow() {
        reports.push(pair::run(url.clone(), resumable, stop.clone()).await);
    }
    reports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_it_does_not_report() {
    let secs: u64 = env("COMPENDIUM_CHAOS_SECS").unwrap_or(10);
    let seed: u64 = env("COMPENDIUM_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let keep: Option<Vec<usize>> = std::env::var("COMPENDIUM_CHAOS_FAULTS").ok().map(|list| {
        list.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("COMPENDIUM_CHAOS_FAULTS: step numbers, comma-separated")
            })
            .collect()
    });
    let pairs: usize = env("COMPENDIUM_CHAOS_PAIRS").unwrap_or(6);
    println!("chaos-seed: {seed} ({secs} s of faults, {pairs} resumable pairs)");
    let duration = Duration::from_secs(secs);
    // More steps than the time will take: faults take time of their own.
    let steps = schedule::schedule(seed, duration * 4);
    let replay = keep.is_some();
    let steps = schedule::keep(steps, keep.as_deref());

    let mut world = tokio::task::spawn_blocking(World::start)
        .await
        .expect("start")
        .expect("the chaos cluster starts");
    let front = std::sync::Arc::new(Front::start(world.addrs()).await);
    let (stop, stopped) = watch::channel(false);
    let mut load = Vec::new();
    for i in 0..pairs + pairs / 2 {
        load.push(tokio::spawn(keep_a_pair(
            front.url.clone(),
            i < pairs,
            stopped.clone(),
        )));
    }

    // The faults, one after another, on a thread of their own (they wait on processes).
    let began = Instant::now();
    let faults_front = std::sync::Arc::clone(&front);
    let (mut world, applied) = tokio::task::spawn_blocking(move || {
        let mut rng = Rng(seed ^ 0x5eed);
        let mut applied = Vec::new();
        for step in &steps {
            // (A replay applies every step it names; a run stops when its time is up.)
            if !replay && began.elapsed() >= duration {
                break;
            }
            std::thread::sleep(step.pause);
            let at = began.elapsed();
            match world.apply(step.fault, &faults_front, &mut rng) {
                Ok(what) => println!(
                    "chaos: {:>6.2} s  step {:>2}: {} — {what}",
                    at.as_secs_f64(),
                    step.index,
                    step.fault
                ),
                Err(err) => world
                    .troubles
                    .push(format!("step {}: {}: {err:#}", step.index, step.fault)),
            }
            world.check_nodes();
            applied.push(step.index);
        }
        // What a replay of this run names (`cargo xtask chaos` shrinks it).
        println!("chaos-steps: {}", join(&applied));
        // A last moment of calm, for traffic to show the cluster whole again.
        std::thread::sleep(Duration::from_secs(1));
        world.check_nodes();
        (world, applied)
    })
    .await
    .expect("the faults");
    let _ = stop.send(true);

    let mut reports = Vec::new();
    let mut unpaired = 0;
    for task in load {
        for report in task.await.expect("a pair") {
            match report {
                Some(report) => reports.push(report),
                None => unpaired += 1,
            }
        }
    }
    let mut violations: Vec<String> = world.troubles.clone();
    if unpaired > 0 {
        violations.push(format!("{unpaired} pairs could not be set up within 30 s"));
    }
    let (mut sent, mut arrived, mut refused, mut resumes, mut told) = (0, 0, 0, 0, 0);
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for report in &reports {
        let found = report.violations();
        if !found.is_empty() {
            let addresses: Vec<&str> = report.sides.iter().map(|s| s.address.as_str()).collect();
            for line in world.log_lines(&addresses) {
                println!("chaos-log: {line}");
            }
        }
        violations.extend(found);
        for side in &report.sides {
            sent += side.sent;
            arrived += side.got.len() as u64;
            refused += side.refused;
            resumes += side.resumes;
            if let Some(why) = &side.told {
                told += 1;
                let kind = if report.resumable { "resumable" } else { "v1" };
                // The reason's kind, without its details.
                let short: String = why.chars().take_while(|c| *c != ':').collect();
                *reasons.entry(format!("{kind}: {short}")).or_default() += 1;
            }
        }
    }
    println!(
        "chaos: {:.1} s, {} pairs, {sent} messages sent, {arrived} arrived, {refused} refused \
         with an ERR, {resumes} resumes, {told} clients told their pairing is over {reasons:?}",
        began.elapsed().as_secs_f64(),
        reports.len()
    );
    drop(world);
    if violations.is_empty() {
        println!("chaos: no violation (seed {seed})");
    } else {
        for v in &violations {
            println!("chaos-violation: {v}");
        }
        panic!(
            "{} violations; replay with COMPENDIUM_CHAOS_SEED={seed} COMPENDIUM_CHAOS_FAULTS={}",
            violations.len(),
            join(&applied)
        );
    }
}
