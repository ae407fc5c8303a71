//! `cargo xtask bench --pin`: the relay and the load generator each on a core of their own.
//!
//! A child inherits the CPU affinity of the thread that spawns it, so each is spawned from a
//! short-lived thread pinned with `sched_setaffinity`; xtask's own threads stay unpinned. A
//! pinned tokio program sees one CPU (`available_parallelism` honours the affinity mask)
//! and starts one worker thread.

use anyhow::{Context, Result, bail};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use serde::Serialize;

/// Which CPU each process runs on.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Pinning {
    /// The relay under test.
    pub(crate) relay: usize,
    /// The load generator.
    pub(crate) generator: usize,
}

impl Pinning {
    /// Relay on CPU 0, generator on CPU 1, if this process may use both.
    pub(crate) fn two_cores() -> Result<Self> {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        if cpus < 2 {
            bail!(
                "--pin needs two CPUs (one for the relay, one for the load generator); this process may use {cpus}"
            );
        }
        Ok(Self {
            relay: 0,
            generator: 1,
        })
    }
}

/// Run `spawn` on a thread pinned to `cpu` (or here, unpinned, if `None`), so that what it
/// spawns inherits the pinning.
pub(crate) fn on_cpu<T: Send>(cpu: Option<usize>, spawn: impl FnOnce() -> T + Send) -> Result<T> {
    let Some(cpu) = cpu else {
        return Ok(spawn());
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut set = CpuSet::new();
                set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
                sched_setaffinity(Pid::from_raw(0), &set)
                    .with_context(|| format!("pinning to CPU {cpu}"))?;
                Ok(spawn())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the pinned spawner panicked"))?
    })
}
