//! The driver of a resumable client (protocol version 2, docs/protocol.md section 6): one
//! task that owns the session across connections.
//!
//! It numbers every ROUTE and keeps it until the relay's ROUTEACK; it drops every DELIVER
//! or ERR whose `seq` it has seen (a replay after a resume, or a frame the relay wrote to
//! the old connection too), so the application sees each message once, in order; it
//! acknowledges what arrived in batches (ACK). When the connection is lost it reconnects
//! with jittered backoff within the session's grace, sends RESUME, resends the ROUTEs the
//! relay has not acted on, and reports [`Event::Resumed`]; if the session cannot be had
//! back, [`Event::SessionLost`] says why — never a silent new address.

use std::collections::VecDeque;
use std::time::Duration;

use compendium_messages::{Address, Message, Secret, codes};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::connect::Socket;
use crate::driver::{self, Command, Ended, SharedState};
use crate::error::{Error, Result};
use crate::event::Event;

/// Acknowledge after this many new frames, or [`ACK_DELAY`] after the first unacknowledged
/// one, whichever is first.
const ACK_EVERY: u64 = 32;
const ACK_DELAY: Duration = Duration::from_millis(20);
/// ROUTEs sent but not yet acknowledged by the relay, at most; beyond, `route` waits.
const MAX_UNACKED_ROUTES: usize = 1024;
/// Reconnection backoff: from the first to the last, doubling, with full jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Opens a new connection offering version 2 (the dial settings of the builder).
pub(crate) type Redial = Box<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Socket>> + Send>>
        + Send
        + Sync,
>;

pub(crate) struct Options {
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) close_timeout: Duration,
    pub(crate) redial: Redial,
}

/// Start the driver on the current runtime.
pub(crate) fn spawn(
    socket: Socket,
    options: Options,
    state: SharedState,
) -> (mpsc::Sender<Command>, mpsc::Receiver<Event>) {
    let (command_tx, command_rx) = mpsc::channel(1024);
    let (event_tx, event_rx) = mpsc::channel(1024);
    let driver = Driver {
        options,
        state,
        events: event_tx,
        session: None,
        next_route: 1,
        unacked: VecDeque::new(),
        received: 0,
        acked: 0,
        init: None,
        closing: None,
    };
    tokio::spawn(driver.run(socket, command_rx));
    (command_tx, event_rx)
}

struct SessionKeys {
    address: Address,
    secret: Secret,
    grace: Duration,
}

struct Driver {
    options: Options,
    state: SharedState,
    events: mpsc::Sender<Event>,
    session: Option<SessionKeys>,
    /// The `seq` of the next ROUTE.
    next_route: u64,
    /// ROUTEs the relay has not acknowledged, with their frames.
    unacked: VecDeque<(u64, String)>,
    /// The highest stream `seq` received (DELIVER or numbered ERR).
    received: u64,
    /// The highest `seq` acknowledged to the relay.
    acked: u64,
    init: Option<oneshot::Sender<Result<Address>>>,
    /// `close()` is under way: END was sent and the relay has not yet confirmed it (its
    /// close with 1000). A connection lost meanwhile — a relay node draining (1012) closes
    /// before it reads the END and the ROUTEs before it — is resumed and END sent again,
    /// so that close loses nothing that was routed.
    closing: Option<oneshot::Sender<Result<()>>>,
}

/// Why a connection's loop ended.
enum Lost {
    /// `close()` finished, or every handle is gone: the end.
    Closed,
    /// The connection broke: resume if there is a session.
    Broken { code: Option<u16>, reason: String },
}

impl Driver {
    async fn run(mut self, first: Socket, mut commands: mpsc::Receiver<Command>) {
        let mut socket = first;
        let ended = loop {
            let lost = if self.closing.is_some() {
                // Resumed while closing: what was not acted on went again; END again.
                self.end(&mut socket).await
            } else {
                self.connection(&mut socket, &mut commands).await
            };
            let (code, reason) = match lost {
                Lost::Closed => {
                    if let Some(reply) = self.closing.take() {
                        let _ = reply.send(Ok(()));
                    }
                    break Ended {
                        code: Some(1000),
                        reason: "session ended".into(),
                    };
                }
                Lost::Broken { code, reason } => {
                    tracing::debug!(address = ?self.address(), ?code, %reason, "connection lost");
                    (code, reason)
                }
            };
            if let Some(init) = self.init.take() {
                let _ = init.send(Err(Error::Closed {
                    code,
                    reason: reason.clone(),
                }));
            }
            let why = match (code, &self.session) {
                (_, None) => None, // nothing to resume: the connection simply ended
                (Some(4001), _) => Some(
                    "another connection resumed this session (close code 4001, takeover)"
                        .to_owned(),
                ),
                (Some(4002), _) => Some(
                    "the relay revoked this session: its resume secret was used by someone \
                     else (close code 4002); INIT again and give the new address to your peer"
                        .to_owned(),
                ),
                (Some(1000), _) => Some(format!("the relay ended the session: {reason}")),
                _ => match self.resume().await {
                    Ok(resumed) => {
                        socket = resumed;
                        continue;
                    }
                    Err(why) => Some(why),
                },
            };
            if let Some(why) = why {
                tracing::debug!(address = ?self.address(), %why, "session lost");
                // (Before the event: a close() made on hearing it must see the loss.)
                driver::lock(&self.state).session_lost = true;
                let _ = self
                    .events
                    .send(Event::SessionLost {
                        reason: why.clone(),
                    })
                    .await;
                break Ended { code, reason: why };
            }
            break Ended { code, reason };
        };
        self.finish(commands, ended).await;
    }

    /// The session's address, for the logs.
    fn address(&self) -> Option<Address> {
        self.session.as_ref().map(|keys| keys.address)
    }

    /// Tell everyone the client is over. A `close()` that waited while the session was
    /// being resumed is answered with the session's loss, not with success: the ROUTEs it
    /// was meant to see through may not have been delivered.
    async fn finish(&mut self, mut commands: mpsc::Receiver<Command>, ended: Ended) {
        driver::lock(&self.state).ended = Some(ended.clone());
        if let Some(reply) = self.closing.take() {
            // The session was lost before the relay confirmed the END.
            let _ = reply.send(Err(ended.error()));
        }
        commands.close();
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Init(reply) => {
                    let _ = reply.send(Err(ended.error()));
                }
                Command::Close(reply) => {
                    let lost = driver::lock(&self.state).session_lost;
                    let _ = reply.send(if lost { Err(ended.error()) } else { Ok(()) });
                }
                Command::Route(..) => {}
            }
        }
        let _ = self
            .events
            .send(Event::Closed {
                code: ended.code,
                reason: ended.reason,
            })
            .await;
    }

    /// Reconnect and RESUME within the grace; the new socket, or why the session is lost.
    async fn resume(&mut self) -> std::result::Result<Socket, String> {
        let Some(keys) = &self.session else {
            return Err("no session to resume".into());
        };
        let grace = keys.grace;
        let deadline = Instant::now() + grace;
        let mut backoff = BACKOFF_FIRST;
        let mut last_problem = String::from("no attempt was made");
        loop {
            if Instant::now() >= deadline {
                return Err(format!(
                    "could not resume within the session's grace of {} s ({last_problem}); \
                     INIT again and give the new address to your peer",
                    grace.as_secs()
                ));
            }
            // The idle timeout is the application's word on when a silent link is dead; it
            // holds during a resume too, or a link that stalls mid-handshake would keep
            // the session away for the whole handshake timeout (10 s by default).
            let redial = (self.options.redial)();
            let dialled = match self.options.idle_timeout {
                Some(idle) => {
                    tokio::time::timeout(idle, redial)
                        .await
                        .unwrap_or(Err(Error::Timeout {
                            what: "reconnect (the idle timeout)",
                            after: idle,
                        }))
                }
                None => redial.await,
            };
            match dialled {
                Err(err) => last_problem = err.to_string(),
                Ok(mut socket) => {
                    let Some(keys) = &self.session else {
                        return Err("no session to resume".into());
                    };
                    let resume =
                        Message::new_resume(keys.address, keys.secret.clone(), self.received);
                    match self.try_resume(&mut socket, resume).await {
                        Ok(Some(())) => return Ok(socket),
                        Ok(None) => last_problem = "the connection failed during RESUME".into(),
                        Err(why) => return Err(why),
                    }
                }
            }
            tracing::debug!(
                address = ?self.address(),
                problem = %last_problem,
                "resume attempt failed; trying again"
            );
            // Full jitter: a random point in [0, backoff), so that many clients of a
            // restarted relay do not come back in step.
            let wait = backoff.mul_f64(jitter());
            tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Send RESUME on `socket` and read its answer. `Ok(Some)`: resumed; `Ok(None)`: try
    /// again; `Err`: the session is lost.
    async fn try_resume(
        &mut self,
        socket: &mut Socket,
        resume: Message,
    ) -> std::result::Result<Option<()>, String> {
        let idle = self.options.idle_timeout;
        if bounded(idle, socket.send(Frame::text(resume.to_json())))
            .await
            .is_err()
        {
            return Ok(None);
        }
        // As long as a close, but no longer than the idle timeout (see `resume`).
        let patience = self.options.close_timeout.max(Duration::from_secs(5));
        let patience = self
            .options
            .idle_timeout
            .map_or(patience, |idle| idle.min(patience));
        let answer = tokio::time::timeout(patience, async {
            while let Some(Ok(frame)) = socket.next().await {
                if let Frame::Text(text) = frame {
                    return Message::parse(text.as_str()).ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        match answer {
            Some(Message::Resumed {
                ephe_wss_addr,
                secret,
                grace,
                seq,
                ..
            }) => {
                self.session = Some(SessionKeys {
                    address: ephe_wss_addr,
                    secret,
                    grace: Duration::from_secs(u64::from(grace)),
                });
                self.forget_routes(seq);
                // Everything the relay has not acted on goes again, in order, under the
                // same numbers: the relay acts on each number once.
                let resend: Vec<String> = self.unacked.iter().map(|(_, f)| f.clone()).collect();
                let count = resend.len();
                let replay = async {
                    for frame in resend {
                        socket.feed(Frame::text(frame)).await?;
                    }
                    socket.flush().await
                };
                if bounded(idle, replay).await.is_err() {
                    return Ok(None);
                }
                tracing::debug!(address = %ephe_wss_addr, resent = count, "session resumed");
                let _ = self
                    .events
                    .send(Event::Resumed {
                        address: ephe_wss_addr,
                        resent: count,
                    })
                    .await;
                Ok(Some(()))
            }
            Some(Message::Err {
                err_code, err_msg, ..
            }) if err_code == codes::SESSION_GONE => Err(format!(
                "the relay refused to resume the session ({err_msg})"
            )),
            // 429 (too many failed resumes from this network), or anything else: retry.
            Some(Message::Err {
                err_code, err_msg, ..
            }) => {
                tracing::debug!(
                    address = ?self.address(),
                    code = err_code,
                    message = %err_msg,
                    "RESUME refused for now"
                );
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn forget_routes(&mut self, upto: u64) {
        while self.unacked.front().is_some_and(|(seq, _)| *seq <= upto) {
            self.unacked.pop_front();
        }
    }

    /// Serve one connection until it ends.
    async fn connection(
        &mut self,
        socket: &mut Socket,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Lost {
        let mut ping = self.options.ping_interval.map(|every| {
            let mut ping = tokio::time::interval_at(Instant::now() + every, every);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ping
        });
        let idle = self.options.idle_timeout;
        let mut last_seen = Instant::now();
        let far = Duration::from_secs(86_400);
        let ack_timer = tokio::time::sleep(far);
        tokio::pin!(ack_timer);
        let mut ack_armed = false;
        loop {
            let idle_at = last_seen + idle.unwrap_or(far);
            let accepting = self.unacked.len() < MAX_UNACKED_ROUTES;
            tokio::select! {
                command = commands.recv(), if accepting => match command {
                    None => return self.end(socket).await,
                    Some(Command::Close(reply)) => {
                        if self.session.is_none() {
                            // No session: nothing to lose, nothing to resume.
                            let _ = self.end(socket).await;
                            let _ = reply.send(Ok(()));
                            return Lost::Closed;
                        }
                        self.closing = Some(reply);
                        return self.end(socket).await;
                    }
                    Some(Command::Init(reply)) => {
                        if let Some(old) = self.init.replace(reply) {
                            let _ = old.send(Err(Error::Closed { code: None, reason: "superseded by a later INIT".into() }));
                        }
                        if bounded(idle, socket.send(Frame::text(Message::init().to_json()))).await.is_err() {
                            return broken(None, "the connection broke or stalled while sending INIT");
                        }
                    }
                    Some(Command::Route(to, msg)) => {
                        let seq = self.next_route;
                        self.next_route += 1;
                        let mut message = Message::route(to, msg);
                        if let Message::Route { seq: s, .. } = &mut message {
                            *s = Some(seq);
                        }
                        let frame = message.to_json();
                        self.unacked.push_back((seq, frame.clone()));
                        let flush = commands.is_empty();
                        let write = async {
                            socket.feed(Frame::text(frame)).await?;
                            if flush { socket.flush().await } else { Ok(()) }
                        };
                        if bounded(idle, write).await.is_err() {
                            return broken(None, "the connection broke or stalled while sending");
                        }
                    }
                },
                frame = socket.next() => {
                    last_seen = Instant::now();
                    match frame {
                        None => return broken(None, "the connection ended without a close frame"),
                        Some(Err(err)) => return broken(None, &err.to_string()),
                        Some(Ok(Frame::Close(close))) => {
                            let (code, reason) = close.map_or((None, "closed by the relay".to_owned()), |c| (Some(u16::from(c.code)), c.reason.to_string()));
                            return Lost::Broken { code, reason };
                        }
                        Some(Ok(Frame::Text(text))) => {
                            let new = self.on_text(text.as_str()).await;
                            if new && !ack_armed {
                                ack_armed = true;
                                ack_timer.as_mut().reset(Instant::now() + ACK_DELAY);
                            }
                            if self.received >= self.acked + ACK_EVERY {
                                ack_armed = false;
                                if self.send_ack(socket).await.is_err() {
                                    return broken(None, "the connection broke or stalled while acknowledging");
                                }
                            }
                        }
                        Some(Ok(Frame::Binary(_))) => {
                            let _ = self.events.send(Event::Error(Error::InvalidFrame(
                                "the relay sent a binary frame; the protocol uses text frames only".into(),
                            ))).await;
                        }
                        Some(Ok(_)) => {}
                    }
                }
                () = &mut ack_timer, if ack_armed => {
                    ack_armed = false;
                    if self.send_ack(socket).await.is_err() {
                        return broken(None, "the connection broke or stalled while acknowledging");
                    }
                }
                () = tick(&mut ping) => {
                    if bounded(idle, socket.send(Frame::Ping(Default::default()))).await.is_err() {
                        return broken(None, "the connection broke or stalled while pinging");
                    }
                }
                () = tokio::time::sleep_until(idle_at), if idle.is_some() => {
                    return broken(None, &format!("no frame from the relay for {:?}: the link is presumed dead", idle.unwrap_or(far)));
                }
            }
        }
    }

    async fn send_ack(&mut self, socket: &mut Socket) -> std::result::Result<(), ()> {
        if self.received <= self.acked {
            return Ok(());
        }
        self.acked = self.received;
        let ack = socket.send(Frame::text(Message::new_ack(self.acked).to_json()));
        bounded(self.options.idle_timeout, ack).await
    }

    /// END, then read until the relay's close (delivering what arrives meanwhile).
    /// [`Lost::Closed`] once the relay confirms it (close code 1000, rule 6.7), or ends the
    /// session otherwise (4001, 4002), or does not answer within the close timeout;
    /// [`Lost::Broken`] if the connection ends first: the END and the ROUTEs before it
    /// may not have been read, so the session is resumed and END sent again.
    async fn end(&mut self, socket: &mut Socket) -> Lost {
        let end = socket.send(Frame::text(Message::new_end().to_json()));
        if bounded(self.options.idle_timeout, end).await.is_err() {
            return broken(None, "the connection broke or stalled while sending END");
        }
        let answer = tokio::time::timeout(self.options.close_timeout, async {
            while let Some(Ok(frame)) = socket.next().await {
                match frame {
                    Frame::Text(text) => {
                        self.on_text(text.as_str()).await;
                    }
                    Frame::Close(close) => {
                        return close.map(|c| (u16::from(c.code), c.reason.to_string()));
                    }
                    _ => {}
                }
            }
            None
        })
        .await;
        match answer {
            // No answer in time: the relay is not confirming anything; stop waiting.
            Err(_) => Lost::Closed,
            Ok(Some((1000 | 4001 | 4002, _))) => Lost::Closed,
            Ok(Some((code, reason))) => broken(Some(code), &reason),
            Ok(None) => broken(None, "the connection broke before the relay confirmed END"),
        }
    }

    /// One frame from the relay; returns whether it was a new numbered frame to ACK.
    async fn on_text(&mut self, text: &str) -> bool {
        let message = match Message::parse(text) {
            Ok(message) => message,
            Err(err) => {
                let _ = self
                    .events
                    .send(Event::Error(Error::invalid_frame(&err)))
                    .await;
                return false;
            }
        };
        match message {
            Message::Deliver { msg, seq, .. } => {
                let Some(seq) = seq else {
                    let _ = self.events.send(Event::Deliver(msg)).await;
                    return false;
                };
                if seq <= self.received {
                    return false; // seen already: a replay overlap
                }
                self.received = seq;
                let _ = self.events.send(Event::Deliver(msg)).await;
                true
            }
            Message::Err {
                err_code,
                err_msg,
                seq,
                route,
                ..
            } => {
                let numbered = seq.is_some();
                if let Some(seq) = seq {
                    if seq <= self.received {
                        return false;
                    }
                    self.received = seq;
                }
                let error = Error::Server {
                    code: err_code,
                    message: match route {
                        Some(route) => format!("ROUTE #{route}: {err_msg}"),
                        None => err_msg,
                    },
                };
                match (numbered, self.init.take()) {
                    (false, Some(init)) => {
                        let _ = init.send(Err(error));
                    }
                    (_, init) => {
                        self.init = init;
                        let _ = self.events.send(Event::Error(error)).await;
                    }
                }
                numbered
            }
            Message::Initresp {
                ephe_wss_addr,
                secret,
                grace,
                ..
            } => {
                let (Some(secret), Some(grace)) = (secret, grace) else {
                    let _ = self
                        .events
                        .send(Event::Error(Error::InvalidFrame(
                            "the relay selected version 2 but its INITRESP has no secret or grace"
                                .into(),
                        )))
                        .await;
                    return false;
                };
                // A new session: both streams start again.
                self.session = Some(SessionKeys {
                    address: ephe_wss_addr,
                    secret,
                    grace: Duration::from_secs(u64::from(grace)),
                });
                self.next_route = 1;
                self.unacked.clear();
                self.received = 0;
                self.acked = 0;
                if let Some(init) = self.init.take() {
                    let _ = init.send(Ok(ephe_wss_addr));
                }
                false
            }
            Message::Routeack { seq, .. } => {
                self.forget_routes(seq);
                false
            }
            other => {
                let _ = self
                    .events
                    .send(Event::Error(Error::InvalidFrame(format!(
                        "the relay sent {}, which a version 2 client does not expect here",
                        other.type_name()
                    ))))
                    .await;
                false
            }
        }
    }
}

/// `write`, given up if it has not finished within the idle timeout: a link whose writes
/// make no progress for that long (a frozen relay, a network gone silent with the TCP
/// buffers full) is as dead as one silent that long — and while a write is awaited,
/// nothing else (the idle timer included) can notice. `Err` if it failed or ran out.
async fn bounded<E>(
    idle: Option<Duration>,
    write: impl Future<Output = std::result::Result<(), E>>,
) -> std::result::Result<(), ()> {
    match idle {
        Some(idle) => match tokio::time::timeout(idle, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(()),
        },
        None => write.await.map_err(|_| ()),
    }
}

fn broken(code: Option<u16>, reason: &str) -> Lost {
    Lost::Broken {
        code,
        reason: reason.to_owned(),
    }
}

/// A number in [0, 1) from the OS's random source (1.0 if it fails: plain backoff).
fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 1.0,
    }
}

async fn tick(ping: &mut Option<tokio::time::Interval>) {
    match ping {
        Some(ping) => {
            ping.tick().await;
        }
        None => std::future::pending().await,
    }
}
