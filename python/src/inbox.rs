//! [`Inbox`]: where a client's events and finished operations wait for Python to take them.
//!
//! Two ways to wait on it: a condition variable, for blocking callers (in slices of
//! [`SLICE`], so that they can check for signals), and a readiness file descriptor for
//! event loops: one byte is written when the inbox goes from "nothing new" to "something
//! new", and [`Inbox::drain_wake`] empties it again. The events are bounded
//! ([`CAPACITY`]): when Python does not take them, the pump stops reading, the client stops
//! reading its socket, and the relay refuses ROUTEs to us with 503 instead of buffering.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use compendium_client::{Address, Error, Event};
use tokio::sync::Notify;

/// The longest a blocking wait goes without checking for signals and shutdown.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// Events held before the pump stops taking more from the client.
pub(crate) const CAPACITY: usize = 256;

/// What a finished operation produced.
#[derive(Debug)]
pub(crate) enum Value {
    /// Connected, ROUTE queued, or closed.
    Unit,
    /// INIT answered.
    Address(Address),
}

/// A finished operation.
pub(crate) type Done = Result<Value, Error>;

#[derive(Default)]
struct State {
    events: VecDeque<Event>,
    done: HashMap<u64, Done>,
    /// The client's last event has been pushed; nothing more will come.
    ended: bool,
    /// A byte is in the wake pipe that nobody has drained yet.
    signalled: bool,
    /// [`Inbox::poke`] was called, or an operation finished, since the last general wait
    /// returned.
    poked: bool,
    /// Nobody will take events any more (the Python object is gone): drop them.
    abandoned: bool,
}

/// One client's events and finished operations; see the [module docs](self).
pub(crate) struct Inbox {
    state: Mutex<State>,
    changed: Condvar,
    /// Written by the pushing side; both ends are non-blocking.
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    /// The pump waits here for room.
    room: Notify,
}

/// What a blocking wait is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Until {
    /// This operation has finished.
    Done(u64),
    /// An event is there, the client has ended, an operation has finished, or someone
    /// called [`Inbox::poke`].
    Anything,
}

/// How a blocking wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    Ready,
    TimedOut,
    /// A slice passed: check for signals, then wait again.
    Slice,
}

impl Inbox {
    pub(crate) fn new() -> std::io::Result<Self> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        Ok(Self {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            wake_tx,
            wake_rx,
            room: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is a single statement: a panic cannot leave it half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The readiness file descriptor (readable when something is new).
    pub(crate) fn fileno(&self) -> RawFd {
        self.wake_rx.as_raw_fd()
    }

    /// Empty the readiness file descriptor; call before taking what is new.
    pub(crate) fn drain_wake(&self) {
        let mut state = self.lock();
        let mut buf = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
        state.signalled = false;
    }

    fn announce(&self, state: &mut State) {
        if !state.signalled {
            // A full pipe already says "something is new"; nothing else can go wrong
            // with a socket pair we own.
            match (&self.wake_tx).write(&[1]) {
                Ok(_) => state.signalled = true,
                Err(err) if err.kind() == ErrorKind::WouldBlock => state.signalled = true,
                Err(_) => {}
            }
        }
        self.changed.notify_all();
    }

    /// Pump side: hand over an event, waiting for room first.
    pub(crate) async fn push_event(&self, event: Event) {
        loop {
            {
                let mut state = self.lock();
                if state.abandoned {
                    return;
                }
                if state.events.len() < CAPACITY {
                    state.events.push_back(event);
                    self.announce(&mut state);
                    return;
                }
            }
            self.room.notified().await;
        }
    }

    /// Pump side: the client has ended (its last event was pushed).
    pub(crate) fn end(&self) {
        let mut state = self.lock();
        state.ended = true;
        self.announce(&mut state);
        // Nobody will push again; a pump waiting for room (there is none) is gone too.
    }

    /// An operation has finished.
    pub(crate) fn finish(&self, op: u64, done: Done) {
        let mut state = self.lock();
        state.done.insert(op, done);
        // A general wait returns for it once (a result nobody takes must not keep it awake).
        state.poked = true;
        self.announce(&mut state);
    }

    /// The oldest event, if any.
    pub(crate) fn try_event(&self) -> Option<Event> {
        let mut state = self.lock();
        let event = state.events.pop_front();
        if event.is_some() && state.events.len() + 1 == CAPACITY {
            self.room.notify_one();
        }
        event
    }

    /// Whether the client has ended and every event has been taken.
    pub(crate) fn exhausted(&self) -> bool {
        let state = self.lock();
        state.ended && state.events.is_empty()
    }

    /// The result of `op`, if it has finished (taken: a second call returns `None`).
    pub(crate) fn take_done(&self, op: u64) -> Option<Done> {
        self.lock().done.remove(&op)
    }

    /// The Python object is gone: events from now on are dropped, so that the pump (and
    /// with it the connection) can run to its end.
    pub(crate) fn abandon(&self) {
        let mut state = self.lock();
        state.abandoned = true;
        state.events.clear();
        self.room.notify_one();
    }

    /// Wake a general wait ([`Until::Anything`]).
    pub(crate) fn poke(&self) {
        let mut state = self.lock();
        state.poked = true;
        self.announce(&mut state);
    }

    /// Wake every blocking wait (shutdown).
    pub(crate) fn wake_all(&self) {
        let _state = self.lock();
        self.changed.notify_all();
    }

    /// Wait for `until`, at most one [`SLICE`] and at most until `deadline`. Call with the
    /// GIL released.
    pub(crate) fn wait_slice(&self, until: Until, deadline: Option<Instant>) -> Waited {
        let ready = |state: &mut State| match until {
            Until::Done(op) => state.done.contains_key(&op),
            Until::Anything => {
                let ready = !state.events.is_empty() || state.ended || state.poked;
                if ready {
                    state.poked = false;
                }
                ready
            }
        };
        let now = Instant::now();
        let (limit, last) = match deadline {
            Some(deadline) if deadline <= now + SLICE => {
                (deadline.saturating_duration_since(now), true)
            }
            _ => (SLICE, false),
        };
        let mut state = self.lock();
        let end = now + limit;
        loop {
            if ready(&mut state) {
                return Waited::Ready;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return if last {
                    Waited::TimedOut
                } else {
                    Waited::Slice
                };
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
