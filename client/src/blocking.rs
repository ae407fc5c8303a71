//! A blocking client, for code with no async runtime — e.g. a desktop application whose
//! main thread belongs to a UI toolkit.
//!
//! A named background thread (`compendium-client`) runs a single-threaded tokio runtime
//! that owns the connection; each call hands its work to that runtime and waits for the
//! answer. Construction fails fast if the thread, the runtime or the connection cannot be
//! started. Dropping the client closes the connection gracefully (everything queued is
//! sent first) and joins the thread.
//!
//! It may also be used from inside an async runtime (calls are then made from a helper
//! thread, as tokio forbids blocking on a runtime from within one), though the async
//! [`crate::Client`] is the better fit there: a blocking call still blocks its thread, so
//! tasks that only that thread runs (e.g. on a current-thread runtime) wait meanwhile.
//!
//! ```no_run
//! use compendium_client::blocking::Client;
//! let mut phone = Client::connect("ws://127.0.0.1:8001")?;
//! let addr = phone.init()?;
//! println!("tell the PC: {addr}");
//! let msg: serde_json::Value = phone.recv_json()?;
//! # Ok::<(), compendium_client::Error>(())
//! ```

use std::future::Future;
use std::sync::mpsc::RecvTimeoutError;
use std::thread::JoinHandle;
use std::time::Duration;

use compendium_messages::{Address, Payload};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::client::{ClientBuilder, Events, Sender};
use crate::error::{ConnectError, ConnectStage, Error, Result};
use crate::event::Event;

/// A blocking connection to a relay; see the [module docs](self).
#[derive(Debug)]
pub struct Client {
    sender: Sender,
    events: Option<Events>,
    runtime: RuntimeThread,
}

#[derive(Debug)]
struct RuntimeThread {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RuntimeThread {
    fn start() -> Result<Self> {
        let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("compendium-client".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Err(err) => {
                        let _ = handle_tx.send(Err(err));
                    }
                    Ok(runtime) => {
                        let _ = handle_tx.send(Ok(runtime.handle().clone()));
                        // Drive I/O and timers until the client is dropped.
                        runtime.block_on(async {
                            let _ = stopped.await;
                        });
                    }
                }
            })
            .map_err(|e| {
                Error::Connect(ConnectError::io(
                    ConnectStage::Startup,
                    format!("cannot start the client thread: {e}"),
                    e,
                ))
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| {
                Error::Connect(ConnectError::other(
                    ConnectStage::Startup,
                    "the client thread ended at startup".into(),
                ))
            })?
            .map_err(|e| {
                Error::Connect(ConnectError::io(
                    ConnectStage::Startup,
                    format!("cannot start the client runtime: {e}"),
                    e,
                ))
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Run `work` on the client's runtime and wait for its result.
    fn run<F>(&self, work: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking a runtime's thread on another runtime is not allowed: wait from a
            // helper thread instead.
            std::thread::scope(|scope| {
                scope
                    .spawn(|| self.handle.block_on(work))
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        } else {
            self.handle.block_on(work)
        }
    }
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Client {
    /// Connect to `url` with default options.
    ///
    /// # Errors
    /// As [`ClientBuilder::connect`], or [`Error::Connect`] if the background thread
    /// cannot start.
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_with(&ClientBuilder::default(), url)
    }

    /// Connect to `url` with `options` (TLS trust, timeouts, keepalive).
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn connect_with(options: &ClientBuilder, url: &str) -> Result<Self> {
        let runtime = RuntimeThread::start()?;
        let client = runtime.run(options.connect(url))?;
        let (sender, events) = client.split();
        Ok(Self {
            sender,
            events: Some(events),
            runtime,
        })
    }

    /// Get an ephemeral address (INIT → INITRESP); see [`Sender::init`].
    ///
    /// # Errors
    /// As [`Sender::init`].
    pub fn init(&self) -> Result<Address> {
        self.runtime.run(self.sender.init())
    }

    /// Queue `msg` (a JSON object) for `to`; see [`Sender::route`].
    ///
    /// # Errors
    /// As [`Sender::route`].
    pub fn route<T: Serialize + ?Sized>(&self, to: &Address, msg: &T) -> Result<()> {
        let payload = Payload::from_value(msg).map_err(Error::InvalidPayload)?;
        self.runtime.run(self.sender.route_payload(to, payload))
    }

    /// The next event, waiting as long as it takes; `None` once the connection is closed
    /// and [`Event::Closed`] was returned (or a listener took the events).
    pub fn recv(&mut self) -> Option<Event> {
        let events = self.events.as_mut()?;
        self.runtime.run(events.next_event())
    }

    /// The next event, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] if nothing arrived in time;
    /// [`RecvTimeoutError::Disconnected`] after the last event (or if a listener took them).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Event, RecvTimeoutError> {
        let events = self.events.as_mut().ok_or(RecvTimeoutError::Disconnected)?;
        match self
            .runtime
            .run(async { tokio::time::timeout(timeout, events.next_event()).await })
        {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(RecvTimeoutError::Disconnected),
            Err(_) => Err(RecvTimeoutError::Timeout),
        }
    }

    /// Every event until the connection ends, blocking for each.
    pub fn iter(&mut self) -> impl Iterator<Item = Event> + '_ {
        std::iter::from_fn(|| self.recv())
    }

    /// The next delivered `msg`, decoded as `T`; see [`Events::recv_json`].
    ///
    /// # Errors
    /// As [`Events::recv_json`].
    pub fn recv_json<T: DeserializeOwned + Send>(&mut self) -> Result<T> {
        let events = self.events.as_mut().ok_or_else(|| Error::Closed {
            code: None,
            reason: "events go to the listener".into(),
        })?;
        self.runtime.run(events.recv_json())
    }

    /// Hand every future event to `listener` instead (the original Compendium client's
    /// style). It runs on the client's thread: keep it quick, or pass the event on.
    /// Afterwards `recv*` return nothing.
    pub fn set_listener(&mut self, mut listener: impl FnMut(Event) + Send + 'static) {
        if let Some(mut events) = self.events.take() {
            self.runtime.handle.spawn(async move {
                while let Some(event) = events.next_event().await {
                    listener(event);
                }
            });
        }
    }

    /// Close gracefully: every ROUTE queued before is sent, then the close handshake
    /// (bounded by the close timeout); then the background thread stops.
    ///
    /// # Errors
    /// As [`Sender::close`].
    pub fn close(self) -> Result<()> {
        self.runtime.run(self.sender.close())
        // Drop then finds the connection closed and only stops the thread.
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if !self.sender.is_closed() {
            let _ = self.runtime.run(self.sender.close());
        }
    }
}
