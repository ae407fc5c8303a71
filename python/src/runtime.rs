//! The one tokio runtime that every client of the process shares, and its end.
//!
//! It is created on first use, rebuilt in a child process after `fork()` (a runtime's
//! threads do not survive a fork; the parent's is leaked there, never dropped), and shut
//! down by [`shutdown`], which the Python package registers with `atexit`: it closes the
//! clients still open (bounded), wakes every thread still waiting in this module and waits
//! for it to leave, then stops the runtime. Threads are never joined from a destructor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use compendium_client::Sender;
use pyo3::prelude::*;
use tokio::runtime::{Handle, Runtime};

use crate::inbox::Inbox;

/// How long [`shutdown`] lets open clients close gracefully, in all.
const CLOSE_AT_EXIT: Duration = Duration::from_secs(2);

struct Owned {
    runtime: Runtime,
    pid: u32,
}

static RUNTIME: Mutex<Option<Owned>> = Mutex::new(None);
static SHUT_DOWN: AtomicBool = AtomicBool::new(false);
/// Threads currently waiting inside this module with the GIL released.
static WAITING: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The clients that are open, so that [`shutdown`] can close them.
static LIVE: Mutex<Option<HashMap<u64, Live>>> = Mutex::new(None);

struct Live {
    sender: Sender,
    inbox: Arc<Inbox>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these maps inconsistent: each change is one call.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why no runtime can be had.
pub(crate) const SHUT_DOWN_MESSAGE: &str =
    "compendium_wss has shut down (the interpreter is exiting); no client can be used";

/// The runtime's handle, creating the runtime (again, after a fork) if need be.
pub(crate) fn handle() -> Result<Handle, String> {
    if SHUT_DOWN.load(Ordering::Acquire) {
        return Err(SHUT_DOWN_MESSAGE.into());
    }
    let pid = std::process::id();
    let mut slot = lock(&RUNTIME);
    if let Some(owned) = slot.as_ref() {
        if owned.pid == pid {
            return Ok(owned.runtime.handle().clone());
        }
        // A forked child: the parent's runtime threads do not exist here. Dropping it
        // would wait for them for ever.
        if let Some(stale) = slot.take() {
            std::mem::forget(stale);
        }
        lock(&LIVE).take().into_iter().for_each(std::mem::forget);
    }
    // One worker: the clients' tasks are light, and a message then costs one thread wake-up
    // each way between Python and the runtime. Two workers measured 40 % fewer round trips
    // per second in the Python pingpong benchmark (they wake each other).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("compendium-wss")
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the client runtime: {err}"))?;
    let handle = runtime.handle().clone();
    *slot = Some(Owned { runtime, pid });
    Ok(handle)
}

/// The process this module's runtime belongs to.
pub(crate) fn current_pid() -> u32 {
    std::process::id()
}

/// Remember an open client; the id is for [`forget`].
pub(crate) fn register(sender: Sender, inbox: Arc<Inbox>) -> u64 {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock(&LIVE)
        .get_or_insert_with(HashMap::new)
        .insert(id, Live { sender, inbox });
    id
}

/// A client that has closed.
pub(crate) fn forget(id: u64) {
    if let Some(live) = lock(&LIVE).as_mut() {
        live.remove(&id);
    }
}

/// Whether [`shutdown`] has run: waits must not release the GIL any more.
pub(crate) fn is_shut_down() -> bool {
    SHUT_DOWN.load(Ordering::Acquire)
}

/// Counts a thread waiting with the GIL released, while it lives.
pub(crate) struct Waiting(());

impl Waiting {
    pub(crate) fn enter() -> Self {
        WAITING.fetch_add(1, Ordering::AcqRel);
        Self(())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Close every open client (gracefully, within 2 s in all), release every waiting thread,
/// and stop the runtime. Registered with `atexit` by the package; later calls do nothing.
#[pyfunction]
pub(crate) fn shutdown(py: Python<'_>) {
    if SHUT_DOWN.swap(true, Ordering::AcqRel) {
        return;
    }
    let owned = lock(&RUNTIME).take();
    let live: Vec<Live> = lock(&LIVE)
        .take()
        .map(|live| live.into_values().collect())
        .unwrap_or_default();
    py.detach(move || {
        let Some(owned) = owned else { return };
        if owned.pid != std::process::id() {
            std::mem::forget(owned);
            return;
        }
        let closes: Vec<_> = live
            .iter()
            .map(|live| {
                let sender = live.sender.clone();
                owned.runtime.spawn(async move { sender.close().await })
            })
            .collect();
        owned.runtime.block_on(async {
            let _ = tokio::time::timeout(CLOSE_AT_EXIT, async {
                for close in closes {
                    let _ = close.await;
                }
            })
            .await;
        });
        // Threads blocked in a wait see the flag within a slice; wake them now.
        for live in &live {
            live.inbox.wake_all();
        }
        let deadline = Instant::now() + CLOSE_AT_EXIT;
        while WAITING.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        owned.runtime.shutdown_timeout(Duration::from_millis(500));
    });
}
