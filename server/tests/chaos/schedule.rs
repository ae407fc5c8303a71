//! The random schedule of faults a seed stands for, and the subset of it a replay keeps.

use std::fmt;
use std::time::Duration;

/// How many relay nodes and NATS servers the chaos cluster runs.
pub(crate) const NODES: usize = 3;

/// One fault, applied and undone before the next begins (the cluster is whole again
/// between faults, so each one's effect can be told apart in the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `kill -9` of a relay node, then a new node on its port after `down`.
    Kill { node: usize, down: Duration },
    /// SIGTERM of a relay node (its drain), then a new node on its port.
    Drain { node: usize },
    /// SIGSTOP of a relay node, SIGCONT after `frozen`: a node that is neither alive nor
    /// dead for a while.
    Freeze { node: usize, frozen: Duration },
    /// `kill -9` of a NATS server, restarted on its ports after `down`.
    RestartNats { server: usize, down: Duration },
    /// A TCP reset of `count` client connections, at the load balancer.
    DropClients { count: usize },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kill { node, down } => write!(f, "kill -9 node {node}, down {down:?}"),
            Self::Drain { node } => write!(f, "SIGTERM (drain) node {node}"),
            Self::Freeze { node, frozen } => write!(f, "SIGSTOP node {node} for {frozen:?}"),
            Self::RestartNats { server, down } => {
                write!(f, "kill -9 NATS server {server}, down {down:?}")
            }
            Self::DropClients { count } => write!(f, "reset {count} client connections"),
        }
    }
}

/// A fault and the pause before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// Its index in the seed's full schedule (what a replay names).
    pub(crate) index: usize,
    /// The pause after the previous step (or the start) before this one.
    pub(crate) pause: Duration,
    /// What it does.
    pub(crate) fault: Fault,
}

/// The seed's schedule: steps until their pauses add up to `duration`.
pub(crate) fn schedule(seed: u64, duration: Duration) -> Vec<Step> {
    let mut rng = Rng(seed);
    let mut steps = Vec::new();
    let mut planned = Duration::ZERO;
    while planned < duration {
        let pause = Duration::from_millis(300 + rng.below(1200));
        let node = rng.below(NODES as u64) as usize;
        let fault = match rng.below(11) {
            0 | 1 => Fault::Kill {
                node,
                down: Duration::from_millis(rng.below(1000)),
            },
            2 | 3 => Fault::Drain { node },
            4 | 5 => Fault::Freeze {
                node,
                frozen: Duration::from_millis(200 + rng.below(2800)),
            },
            6 | 7 => Fault::RestartNats {
                server: node,
                down: Duration::from_millis(rng.below(1500)),
            },
            _ => Fault::DropClients {
                count: 1 + rng.below(6) as usize,
            },
        };
        steps.push(Step {
            index: steps.len(),
            pause,
            fault,
        });
        planned += pause;
    }
    steps
}

/// The steps of `steps` whose indices `keep` lists (a replay of a shrunk schedule), or all.
pub(crate) fn keep(steps: Vec<Step>, keep: Option<&[usize]>) -> Vec<Step> {
    match keep {
        None => steps,
        Some(keep) => steps
            .into_iter()
            .filter(|step| keep.contains(&step.index))
            .collect(),
    }
}

/// splitmix64: the same schedule for the same seed on every machine, which is all a replay
/// needs (not a source of secrets).
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the bias of a modulo is no matter here).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_is_one_schedule_and_a_replay_keeps_what_it_names() {
        let a = schedule(7, Duration::from_secs(20));
        assert_eq!(a, schedule(7, Duration::from_secs(20)));
        assert_ne!(a, schedule(8, Duration::from_secs(20)));
        let total: Duration = a.iter().map(|s| s.pause).sum();
        assert!(total >= Duration::from_secs(20) && a.len() > 5, "{a:?}");
        let kept = keep(a.clone(), Some(&[1, 3]));
        assert_eq!(kept, vec![a[1], a[3]]);
    }
}
