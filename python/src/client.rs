//! [`NativeClient`]: one connection, as the Python layer drives it.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use compendium_client::{Address, Client, ClientBuilder, Error, Payload, Sender};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use tokio::runtime::Handle;

use crate::convert;
use crate::inbox::{Done, Inbox, Until, Value, Waited};
use crate::runtime;

/// The operation id of the connection attempt that [`NativeClient::new`] starts.
const CONNECT: u64 = 0;

/// One connection to a relay. Created connecting; operation 0 finishes when connected.
///
/// The Python classes `compendium_wss.Client` and `compendium_wss.aio.AsyncClient` are the
/// public face of this one; its methods are their building blocks.
#[pyclass(frozen, module = "compendium_wss._native")]
pub(crate) struct NativeClient {
    inbox: Arc<Inbox>,
    link: Arc<Link>,
    handle: Handle,
    pid: u32,
    next_op: AtomicU64,
}

/// What the connecting task hands over.
#[derive(Default)]
struct Link {
    sender: OnceLock<Sender>,
    /// The Python object is gone: close as soon as connected.
    dropped: AtomicBool,
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "{name} must be a positive number of seconds, not {value}"
            ))
        })
}

/// `None`: the client's default; `0`: never; otherwise seconds.
fn optional_seconds(name: &str, value: Option<f64>) -> PyResult<Option<Option<Duration>>> {
    match value {
        None => Ok(None),
        Some(0.0) => Ok(Some(None)),
        Some(value) => seconds(name, value).map(|d| Some(Some(d))),
    }
}

/// Poll `future` once on this thread (inside the runtime's context, with a waker that does
/// nothing): a command that fits in the client's queue is queued now, in call order.
fn poll_once<F: Future + ?Sized>(handle: &Handle, future: &mut Pin<Box<F>>) -> Poll<F::Output> {
    let _context = handle.enter();
    future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
}

#[pymethods]
impl NativeClient {
    /// Start connecting to `url`. Timeouts in seconds; `ping_interval` and `idle_timeout`:
    /// `None` for the client's default, `0` for never.
    #[new]
    #[pyo3(signature = (url, *, ca_cert=None, resumable=false, connect_timeout=10.0,
        handshake_timeout=10.0, request_timeout=10.0, close_timeout=5.0, ping_interval=None,
        idle_timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        url: String,
        ca_cert: Option<PathBuf>,
        resumable: bool,
        connect_timeout: f64,
        handshake_timeout: f64,
        request_timeout: f64,
        close_timeout: f64,
        ping_interval: Option<f64>,
        idle_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let mut builder = Client::builder()
            .resumable(resumable)
            .connect_timeout(seconds("connect_timeout", connect_timeout)?)
            .handshake_timeout(seconds("handshake_timeout", handshake_timeout)?)
            .request_timeout(seconds("request_timeout", request_timeout)?)
            .close_timeout(seconds("close_timeout", close_timeout)?);
        if let Some(every) = optional_seconds("ping_interval", ping_interval)? {
            builder = builder.ping_interval(every);
        }
        if let Some(limit) = optional_seconds("idle_timeout", idle_timeout)? {
            builder = builder.idle_timeout(limit);
        }
        if let Some(ca_cert) = ca_cert {
            builder = builder.ca_cert(ca_cert);
        }
        let handle = runtime::handle().map_err(|message| closed_error(py, &message))?;
        let inbox = Arc::new(Inbox::new().map_err(|err| {
            closed_error(
                py,
                &format!("cannot create the client's wake-up pipe: {err}"),
            )
        })?);
        let link = Arc::new(Link::default());
        handle.spawn(run(builder, url, inbox.clone(), link.clone()));
        Ok(Self {
            inbox,
            link,
            handle,
            pid: runtime::current_pid(),
            next_op: AtomicU64::new(CONNECT + 1),
        })
    }

    /// The readiness file descriptor: readable when an event or a finished operation is
    /// new. Call [`NativeClient::drain_wake`] before taking them.
    fn fileno(&self) -> i32 {
        self.inbox.fileno()
    }

    /// Empty the readiness file descriptor.
    fn drain_wake(&self) {
        self.inbox.drain_wake();
    }

    /// The oldest event as a tuple (see `convert::event`), or `None`.
    fn try_event<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.inbox
            .try_event()
            .map(|event| convert::event(py, event))
            .transpose()
    }

    /// Whether the connection has ended and every event has been taken.
    fn exhausted(&self) -> bool {
        self.inbox.exhausted()
    }

    /// The result of operation `op` as `("ok", value)` or `("err", exception)`, or `None`
    /// while it runs. A result is handed out once.
    fn take_done<'py>(&self, py: Python<'py>, op: u64) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.inbox
            .take_done(op)
            .map(|done| convert::done(py, done))
            .transpose()
    }

    /// Block until operation `op` has finished (or, with `op=None`, until an event is
    /// there, the connection has ended, any operation has finished, or `poke()` was
    /// called), at most `timeout` seconds (`None`: no limit). Returns whether that
    /// happened. The GIL is released while waiting; signals are checked every
    /// `SLICE_SECONDS`, so Ctrl-C raises `KeyboardInterrupt` here promptly.
    #[pyo3(signature = (timeout=None, op=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>, op: Option<u64>) -> PyResult<bool> {
        let until = op.map_or(Until::Anything, Until::Done);
        let deadline = match timeout {
            None => None,
            Some(t) if t <= 0.0 => Some(Instant::now()),
            Some(t) => Some(Instant::now() + seconds("timeout", t)?),
        };
        loop {
            if runtime::is_shut_down() || deadline.is_some_and(|d| d <= Instant::now()) {
                // Never release the GIL once the interpreter is exiting; just look.
                let ready = self.inbox.wait_slice(until, Some(Instant::now())) == Waited::Ready;
                if ready || !runtime::is_shut_down() {
                    return Ok(ready);
                }
                return Err(closed_error(py, runtime::SHUT_DOWN_MESSAGE));
            }
            let inbox = &self.inbox;
            let waited = py.detach(|| {
                let _counted = runtime::Waiting::enter();
                inbox.wait_slice(until, deadline)
            });
            match waited {
                Waited::Ready => return Ok(true),
                Waited::TimedOut => return Ok(false),
                Waited::Slice => py.check_signals()?,
            }
        }
    }

    /// Wake a `wait(op=None)` in another thread.
    fn poke(&self) {
        self.inbox.poke();
    }

    /// Send INIT; the operation's value is the address (a string).
    fn start_init(&self, py: Python<'_>) -> PyResult<u64> {
        let sender = self.sender(py)?;
        Ok(self.start(async move { sender.init().await.map(Value::Address) }))
    }

    /// Queue a ROUTE of `msg_json` (the text of a JSON object) to `to`. Returns `None`
    /// when it is queued, or an operation id when the client's queue was full and it will
    /// be queued in turn (commands stay in call order either way).
    fn start_route(&self, py: Python<'_>, to: &str, msg_json: &str) -> PyResult<Option<u64>> {
        let to: Address = to.parse().map_err(|err| {
            let message = format!("cannot route to {to:?}: {err}");
            match convert::from_native(py, "invalid_address", &message, PyDict::new(py)) {
                Ok(exception) => PyErr::from_value(exception),
                Err(failed) => failed,
            }
        })?;
        let payload = Payload::from_json(msg_json)
            .map_err(|err| convert::raise(py, &Error::InvalidPayload(err)))?;
        let sender = self.sender(py)?;
        let mut future = Box::pin(async move { sender.route_payload(&to, payload).await });
        match poll_once(&self.handle, &mut future) {
            Poll::Ready(Ok(())) => Ok(None),
            Poll::Ready(Err(err)) => Err(convert::raise(py, &err)),
            Poll::Pending => Ok(Some(
                self.spawn(async move { future.await.map(|()| Value::Unit) }),
            )),
        }
    }

    /// Close gracefully (everything queued first; a resumable session ENDs).
    fn start_close(&self) -> u64 {
        match self.link.sender.get() {
            Some(sender) => {
                let sender = sender.clone();
                self.start(async move { sender.close().await.map(|()| Value::Unit) })
            }
            // Never connected: nothing to close.
            None => {
                let op = self.next_op.fetch_add(1, Ordering::Relaxed);
                self.inbox.finish(op, Ok(Value::Unit));
                op
            }
        }
    }

    /// Whether the connection has ended.
    fn is_closed(&self) -> bool {
        self.link.sender.get().is_none_or(Sender::is_closed)
    }
}

impl NativeClient {
    fn sender(&self, py: Python<'_>) -> PyResult<Sender> {
        if self.pid != runtime::current_pid() {
            return Err(closed_error(
                py,
                "this client was created before fork(); create clients in the process that uses them",
            ));
        }
        self.link
            .sender
            .get()
            .cloned()
            .ok_or_else(|| closed_error(py, "not connected"))
    }

    /// Poll `work` once here; if it must wait, finish it on the runtime.
    fn start<F>(&self, work: F) -> u64
    where
        F: Future<Output = Done> + Send + 'static,
    {
        let mut future = Box::pin(work);
        match poll_once(&self.handle, &mut future) {
            Poll::Ready(done) => {
                let op = self.next_op.fetch_add(1, Ordering::Relaxed);
                self.inbox.finish(op, done);
                op
            }
            Poll::Pending => self.spawn(future),
        }
    }

    fn spawn<F>(&self, work: F) -> u64
    where
        F: Future<Output = Done> + Send + 'static,
    {
        let op = self.next_op.fetch_add(1, Ordering::Relaxed);
        let inbox = self.inbox.clone();
        self.handle.spawn(async move {
            let done = work.await;
            inbox.finish(op, done);
        });
        op
    }
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        // Never block or join here: hand the close to the runtime.
        self.inbox.abandon();
        self.link.dropped.store(true, Ordering::SeqCst);
        if self.pid != runtime::current_pid() {
            return;
        }
        if let Some(sender) = self.link.sender.get().filter(|s| !s.is_closed()) {
            let sender = sender.clone();
            self.handle.spawn(async move {
                let _ = sender.close().await;
            });
        }
    }
}

/// The package's "connection closed" exception with `reason`.
fn closed_error(py: Python<'_>, reason: &str) -> PyErr {
    convert::raise(
        py,
        &Error::Closed {
            code: None,
            reason: reason.into(),
        },
    )
}

/// Connect, then pump events into the inbox until the connection ends.
async fn run(builder: ClientBuilder, url: String, inbox: Arc<Inbox>, link: Arc<Link>) {
    let client = match builder.connect(&url).await {
        Ok(client) => client,
        Err(err) => {
            inbox.finish(CONNECT, Err(err));
            inbox.end();
            return;
        }
    };
    let (sender, mut events) = client.split();
    let live = runtime::register(sender.clone(), inbox.clone());
    let _ = link.sender.set(sender.clone());
    if link.dropped.load(Ordering::SeqCst) {
        let _ = sender.close().await;
    }
    inbox.finish(CONNECT, Ok(Value::Unit));
    while let Some(event) = events.next_event().await {
        inbox.push_event(event).await;
    }
    runtime::forget(live);
    inbox.end();
}
