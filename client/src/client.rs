//! The async API: [`Client`], split into a cloneable [`Sender`] and an [`Events`] stream.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use compendium_messages::{Address, Payload};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use crate::connect::{Dial, RawSocket, Trust, dial};
use crate::driver::{self, Command, SharedState};
use crate::error::{Error, Result};
use crate::event::Event;

/// How to connect; start from [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    trust: Trust,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    request_timeout: Duration,
    close_timeout: Duration,
    ping_interval: Option<Duration>,
    idle_timeout: Option<Duration>,
    resumable: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            trust: Trust::default(),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            ping_interval: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(90)),
            resumable: false,
        }
    }
}

impl ClientBuilder {
    /// Trust only the certificate(s) in this PEM file for `wss://` — a private CA, or a
    /// self-signed relay certificate — instead of the built-in Mozilla roots.
    #[must_use]
    pub fn ca_cert(mut self, pem_file: impl Into<PathBuf>) -> Self {
        self.trust = Trust::CaFile(pem_file.into());
        self
    }

    /// Limit for the TCP connection to be established (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Limit for the TLS and WebSocket handshakes (default 10 s).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Limit for [`Sender::init`] to be answered (default 10 s).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Limit for the relay to answer our close frame in [`Sender::close`] (default 5 s).
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Send our own pings this often (default 30 s); `None` sends none (the relay's
    /// pings are always answered).
    #[must_use]
    pub fn ping_interval(mut self, every: Option<Duration>) -> Self {
        self.ping_interval = every;
        self
    }

    /// Report the connection as [`Event::Closed`] when no frame at all (not even a pong)
    /// arrives for this long (default 90 s); `None` waits forever. In resumable mode a
    /// lost connection is resumed instead, and this also bounds each reconnection attempt
    /// (dial, handshake and the answer to RESUME), so a link that stalls mid-resume costs
    /// no more than a link that stalls later. A write that makes no progress (the TCP
    /// buffers full on a link gone silent) is given up after this long too: in resumable
    /// mode the link is presumed dead and resumed; otherwise the write ends with the
    /// connection, and later calls fail instead of waiting for ever.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Resumable mode (protocol version 2, docs/protocol.md section 6): the client offers
    /// the subprotocol `compendium.v2`, and when its connection is lost it reconnects
    /// with jittered backoff within the session's grace, resumes the session (same
    /// address), and replays, so the application sees every message once and in order.
    /// [`Event::Resumed`] reports a resume, [`Event::SessionLost`] a session that cannot
    /// come back. It also pings every 5 s and presumes the link dead after 15 s without a
    /// frame (set [`ClientBuilder::ping_interval`] and [`ClientBuilder::idle_timeout`]
    /// after this call to choose otherwise). Connecting fails with a clear error if the
    /// relay does not speak version 2. `close()` ends the session (END): the relay releases
    /// the address at once.
    #[must_use]
    pub fn resumable(mut self, on: bool) -> Self {
        self.resumable = on;
        if on {
            self.ping_interval = Some(Duration::from_secs(5));
            self.idle_timeout = Some(Duration::from_secs(15));
        }
        self
    }

    /// Connect to `url` (`ws://host:port/path` or `wss://...`).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`], [`Error::Tls`], [`Error::Connect`] or [`Error::Timeout`].
    pub async fn connect(&self, url: &str) -> Result<Client> {
        if self.resumable {
            return self.connect_resumable(url).await;
        }
        let socket = self.connect_raw(url).await?;
        let state = SharedState::default();
        let options = driver::Options {
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            close_timeout: self.close_timeout,
        };
        let (commands, events) = driver::spawn(socket, options, Arc::clone(&state));
        Ok(Client {
            sender: Sender {
                commands,
                state,
                request_timeout: self.request_timeout,
            },
            events: Events { events },
        })
    }
}

impl ClientBuilder {
    /// Open the WebSocket (with these TLS and timeout options) but add no protocol
    /// handling: frame-level access for tools that must see or send exactly what is on the
    /// wire, such as the conformance suite. The socket type is tokio-tungstenite's, so
    /// using this ties you to its version.
    ///
    /// # Errors
    /// As [`ClientBuilder::connect`].
    pub async fn connect_raw(&self, url: &str) -> Result<RawSocket> {
        dial(Dial {
            url,
            trust: &self.trust,
            connect_timeout: self.connect_timeout,
            handshake_timeout: self.handshake_timeout,
            subprotocol: None,
        })
        .await
    }

    /// As [`ClientBuilder::connect_raw`], offering protocol version 2 (subprotocol
    /// `compendium.v2`), for tools that speak the protocol themselves (the conformance
    /// suite).
    ///
    /// # Errors
    /// As [`ClientBuilder::connect_raw`]; a relay that selects no subprotocol gives an
    /// [`Error::Connect`] whose [`ConnectError::is_version_refused`](crate::ConnectError::is_version_refused) is true.
    pub async fn connect_raw_v2(&self, url: &str) -> Result<RawSocket> {
        dial(Dial {
            url,
            trust: &self.trust,
            connect_timeout: self.connect_timeout,
            handshake_timeout: self.handshake_timeout,
            subprotocol: Some(compendium_messages::SUBPROTOCOL_V2),
        })
        .await
    }

    async fn connect_resumable(&self, url: &str) -> Result<Client> {
        let builder = self.clone();
        let url = url.to_owned();
        let redial: crate::resumable::Redial = Box::new(move || {
            let builder = builder.clone();
            let url = url.clone();
            Box::pin(async move {
                dial(Dial {
                    url: &url,
                    trust: &builder.trust,
                    connect_timeout: builder.connect_timeout,
                    handshake_timeout: builder.handshake_timeout,
                    subprotocol: Some(compendium_messages::SUBPROTOCOL_V2),
                })
                .await
            })
        });
        let socket = redial().await?;
        let state = SharedState::default();
        let options = crate::resumable::Options {
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            close_timeout: self.close_timeout,
            redial,
        };
        let (commands, events) = crate::resumable::spawn(socket, options, Arc::clone(&state));
        Ok(Client {
            sender: Sender {
                commands,
                state,
                request_timeout: self.request_timeout,
            },
            events: Events { events },
        })
    }
}

/// A connection to a relay.
///
/// ```no_run
/// # async fn demo() -> compendium_client::Result<()> {
/// use compendium_client::Client;
/// let mut phone = Client::connect("ws://127.0.0.1:8001").await?;
/// let pc = Client::connect("ws://127.0.0.1:8001").await?;
/// let phone_addr = phone.init().await?;            // share it out of band
/// pc.route(&phone_addr, &serde_json::json!({"hello": "phone"})).await?;
/// let hello: serde_json::Value = phone.recv_json().await?;
/// pc.close().await?;                                // after every route queued before it
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Client {
    sender: Sender,
    events: Events,
}

/// The sending half: cheap to clone, usable from many tasks. Commands are carried out in
/// the order they are called.
#[derive(Debug, Clone)]
pub struct Sender {
    commands: mpsc::Sender<Command>,
    state: SharedState,
    request_timeout: Duration,
}

/// The receiving half: every [`Event`] in arrival order. Also a `futures::Stream`.
///
/// Events are buffered up to a bound; if they are not consumed, the client stops reading
/// the socket, and the relay in turn refuses ROUTEs to this connection (ERR 503) instead
/// of buffering without limit.
#[derive(Debug)]
pub struct Events {
    events: mpsc::Receiver<Event>,
}

impl Client {
    /// Connect to `url` with default options; see [`Client::builder`] for TLS trust and
    /// timeouts.
    ///
    /// # Errors
    /// As [`ClientBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self> {
        ClientBuilder::default().connect(url).await
    }

    /// Options for connecting.
    #[must_use]
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Separate the halves, to send and receive from different tasks.
    #[must_use]
    pub fn split(self) -> (Sender, Events) {
        (self.sender, self.events)
    }

    /// A handle for sending from elsewhere.
    #[must_use]
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// See [`Sender::init`].
    ///
    /// # Errors
    /// As [`Sender::init`].
    pub async fn init(&self) -> Result<Address> {
        self.sender.init().await
    }

    /// See [`Sender::route`].
    ///
    /// # Errors
    /// As [`Sender::route`].
    pub async fn route<T: Serialize + ?Sized>(&self, to: &Address, msg: &T) -> Result<()> {
        self.sender.route(to, msg).await
    }

    /// See [`Events::next_event`].
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.next_event().await
    }

    /// See [`Events::try_next_event`].
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_next_event()
    }

    /// See [`Events::recv_json`].
    ///
    /// # Errors
    /// As [`Events::recv_json`].
    pub async fn recv_json<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.events.recv_json().await
    }

    /// See [`Sender::close`].
    ///
    /// # Errors
    /// As [`Sender::close`].
    pub async fn close(self) -> Result<()> {
        self.sender.close().await
    }
}

impl Sender {
    /// Ask the relay for an ephemeral address (INIT) and wait for it (INITRESP). A second
    /// call gets a new address and retires the previous one (rule 3.2).
    ///
    /// # Errors
    /// [`Error::Server`] if the relay refused (e.g. 429), [`Error::Timeout`] after the
    /// request timeout, [`Error::Closed`] if the connection ended. (If ROUTEs were sent
    /// just before and the relay answers this INIT with an ERR that a ROUTE could also
    /// get — 429, 503 — the protocol cannot tell whose it is: it is reported as an
    /// [`Event::Error`] and this call times out.)
    pub async fn init(&self) -> Result<Address> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Init(reply)).await?;
        match tokio::time::timeout(self.request_timeout, answer).await {
            Err(_) => Err(Error::Timeout {
                what: "INIT",
                after: self.request_timeout,
            }),
            Ok(Err(_)) => Err(self.closed()),
            Ok(Ok(result)) => result,
        }
    }

    /// Queue `msg` for delivery to `to` (ROUTE). `msg` must serialize to a JSON object;
    /// anything else is refused here, before sending. Returns once queued: the relay sends
    /// nothing back on success, and a failure (404, 503, ...) arrives as an
    /// [`Event::Error`].
    ///
    /// # Errors
    /// [`Error::InvalidPayload`] if `msg` is not an object, [`Error::Closed`] if the
    /// connection ended.
    pub async fn route<T: Serialize + ?Sized>(&self, to: &Address, msg: &T) -> Result<()> {
        let payload = Payload::from_value(msg).map_err(Error::InvalidPayload)?;
        self.route_payload(to, payload).await
    }

    /// Like [`Sender::route`], for a `msg` that is already a [`Payload`] (sent byte for
    /// byte as held).
    ///
    /// # Errors
    /// [`Error::Closed`] if the connection ended.
    pub async fn route_payload(&self, to: &Address, msg: Payload) -> Result<()> {
        self.command(Command::Route(*to, msg)).await
    }

    /// Close gracefully: every ROUTE queued before this call is sent first, then the close
    /// frame; then wait (bounded by the close timeout) for the relay's close frame.
    ///
    /// A resumable client ends its session with END and waits for the relay to confirm it
    /// (close code 1000). If the connection ends first — a relay node draining closes with
    /// 1012 before it has read the END and the ROUTEs before it — the client resumes the
    /// session (elsewhere), sends again what the relay had not acted on, and ENDs again.
    ///
    /// # Errors
    /// [`Error::Timeout`] if the relay did not answer the close in time (everything
    /// queued was still written); for a resumable client, [`Error::Closed`] if the session
    /// was lost before the relay confirmed the END — also when it was lost before this
    /// call, or while this call waited for a resume (what was not acknowledged may not
    /// have been delivered).
    pub async fn close(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Close(reply)).await.is_err() {
            // Already over: fine, unless a resumable session was lost on the way.
            return if driver::lock(&self.state).session_lost {
                Err(self.closed())
            } else {
                Ok(())
            };
        }
        answer.await.unwrap_or(Ok(()))
    }

    /// Whether the connection has ended.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        driver::ended(&self.state).is_some() || self.commands.is_closed()
    }

    async fn command(&self, command: Command) -> Result<()> {
        self.commands.send(command).await.map_err(|_| self.closed())
    }

    fn closed(&self) -> Error {
        driver::ended(&self.state).map_or(
            Error::Closed {
                code: None,
                reason: "the connection is closed".into(),
            },
            |ended| ended.error(),
        )
    }
}

impl Events {
    /// The next event; `None` after [`Event::Closed`] has been returned.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event if one has already arrived, without waiting.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The next delivered `msg`, decoded as `T`.
    ///
    /// # Errors
    /// The first [`Event::Error`] that arrives before it, [`Error::Decode`] if the msg does
    /// not fit `T`, or [`Error::Closed`] if the connection ends first.
    pub async fn recv_json<T: DeserializeOwned>(&mut self) -> Result<T> {
        loop {
            return match self.next_event().await {
                Some(Event::Deliver(payload)) => payload.decode().map_err(Error::Decode),
                Some(Event::Error(err)) => Err(err),
                Some(Event::Closed { code, reason }) => Err(Error::Closed { code, reason }),
                // A resume loses nothing: keep waiting for the message.
                Some(Event::Resumed { .. }) => continue,
                Some(Event::SessionLost { reason }) => Err(Error::Closed { code: None, reason }),
                None => Err(Error::Closed {
                    code: None,
                    reason: "the connection is closed".into(),
                }),
            };
        }
    }
}

impl futures_util::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.events.poll_recv(cx)
    }
}
