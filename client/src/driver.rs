//! The two tasks behind a [`Client`](crate::Client): a writer that owns the socket's sink
//! and executes commands strictly in order, and a reader that validates every frame and
//! turns it into events.
//!
//! "Close after the last send" holds by construction: `close()` is just another command
//! in the writer's queue, so every ROUTE queued before it is written before the close frame.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use compendium_messages::{Address, Direction, Message, codes};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::connect::Socket;
use crate::error::{Error, Result};
use crate::event::Event;

/// What the public handles ask the writer to do.
pub(crate) enum Command {
    /// Write a ROUTE of `msg` to the address (numbered in resumable mode).
    Route(Address, compendium_messages::Payload),
    /// Write INIT; the reader answers `reply` when the INITRESP (or ERR) arrives.
    Init(oneshot::Sender<Result<Address>>),
    /// Write the close frame after everything queued before, then wait for the relay's.
    Close(oneshot::Sender<Result<()>>),
}

/// How a connection ended: the relay's close code and reason, or what broke it.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    pub(crate) code: Option<u16>,
    pub(crate) reason: String,
}

impl Ended {
    pub(crate) fn error(&self) -> Error {
        Error::Closed {
            code: self.code,
            reason: self.reason.clone(),
        }
    }
}

#[derive(Debug)]
struct PendingInit {
    reply: oneshot::Sender<Result<Address>>,
    /// Whether ROUTEs were written between the previous INIT and this one: then an ERR
    /// 429/503 arriving now may be theirs, not this INIT's.
    after_routes: bool,
}

/// Shared between writer (pushes pending INITs) and reader (resolves them).
#[derive(Debug, Default)]
pub(crate) struct State {
    inits: VecDeque<PendingInit>,
    routes_since_init: usize,
    pub(crate) ended: Option<Ended>,
    /// A resumable client's session was lost (not ended by a confirmed END): a later
    /// `close()` must not report success, as what was not acknowledged may be lost.
    pub(crate) session_lost: bool,
}

pub(crate) type SharedState = Arc<Mutex<State>>;

pub(crate) fn lock(state: &SharedState) -> std::sync::MutexGuard<'_, State> {
    // A panic elsewhere cannot leave `State` half-updated in a way that matters more than
    // refusing all further work would.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn ended(state: &SharedState) -> Option<Ended> {
    lock(state).ended.clone()
}

pub(crate) struct Options {
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) close_timeout: Duration,
}

/// Start both tasks on the current runtime.
pub(crate) fn spawn(
    socket: Socket,
    options: Options,
    state: SharedState,
) -> (mpsc::Sender<Command>, mpsc::Receiver<Event>) {
    let (sink, stream) = socket.split();
    let (command_tx, command_rx) = mpsc::channel(1024);
    let (event_tx, event_rx) = mpsc::channel(1024);
    let (ended_tx, ended_rx) = watch::channel(false);
    tokio::spawn(reader(
        stream,
        event_tx,
        Arc::clone(&state),
        options.idle_timeout,
        ended_tx,
    ));
    tokio::spawn(writer(sink, command_rx, state, options, ended_rx));
    (command_tx, event_rx)
}

async fn writer(
    mut sink: SplitSink<Socket, Frame>,
    mut commands: mpsc::Receiver<Command>,
    state: SharedState,
    options: Options,
    mut reader_ended: watch::Receiver<bool>,
) {
    let mut ping = options.ping_interval.map(|every| {
        let mut ping = tokio::time::interval_at(Instant::now() + every, every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping
    });
    // A second receiver for the select branch, so `close` can borrow the first.
    let mut watch_ended = reader_ended.clone();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Route(to, msg)) => {
                    note_route(&state);
                    // Batch while more is queued; flush when the queue runs dry.
                    let flush = commands.is_empty();
                    let write = async {
                        sink.feed(Frame::text(Message::route(to, msg).to_json())).await?;
                        if flush { sink.flush().await } else { Ok(()) }
                    };
                    if unless_ended(&mut reader_ended, write).await.is_err() {
                        break;
                    }
                }
                Some(Command::Init(reply)) => {
                    note_init(&state, reply);
                    let init = sink.send(Frame::text(Message::init().to_json()));
                    if unless_ended(&mut reader_ended, init).await.is_err() {
                        break;
                    }
                }
                Some(Command::Close(reply)) => {
                    let result = close(&mut sink, &mut reader_ended, options.close_timeout).await;
                    let _ = reply.send(result);
                    return;
                }
                None => {
                    // Every handle is gone: close politely, nobody is waiting for the result.
                    let _ = close(&mut sink, &mut reader_ended, options.close_timeout).await;
                    return;
                }
            },
            () = tick(&mut ping) => {
                let ping = sink.send(Frame::Ping(Default::default()));
                if unless_ended(&mut reader_ended, ping).await.is_err() {
                    break;
                }
            }
            // (The watch guard is not Send; drop it inside the branch future.)
            () = async { let _ = watch_ended.wait_for(|ended| *ended).await; } => break,
        }
    }
    // The connection is gone. Answer what is still queued so no caller waits forever.
    commands.close();
    let ended = ended(&state).unwrap_or(Ended {
        code: None,
        reason: "connection lost".into(),
    });
    while let Ok(command) = commands.try_recv() {
        match command {
            Command::Route(..) => {}
            Command::Init(reply) => {
                let _ = reply.send(Err(ended.error()));
            }
            Command::Close(reply) => {
                let _ = reply.send(Ok(()));
            }
        }
    }
}

/// The writer is about to write a ROUTE.
pub(crate) fn note_route(state: &SharedState) {
    lock(state).routes_since_init += 1;
}

/// The writer is about to write an INIT whose answer goes to `reply`.
pub(crate) fn note_init(state: &SharedState, reply: oneshot::Sender<Result<Address>>) {
    let mut state = lock(state);
    let after_routes = state.routes_since_init > 0;
    state.routes_since_init = 0;
    state.inits.push_back(PendingInit {
        reply,
        after_routes,
    });
}

/// `write`, unless the reader ends first. Once it has, the link is dead (closed, broken,
/// or silent past the idle timeout), and a write stalled on full TCP buffers would wait
/// for ever — holding every caller behind it. `Err` if it failed or the reader ended.
async fn unless_ended<E>(
    reader_ended: &mut watch::Receiver<bool>,
    write: impl Future<Output = std::result::Result<(), E>>,
) -> std::result::Result<(), ()> {
    tokio::select! {
        written = write => written.map_err(|_| ()),
        // (The watch guard is not Send; drop it inside the branch future.)
        () = async { let _ = reader_ended.wait_for(|ended| *ended).await; } => Err(()),
    }
}

/// The next keepalive tick, or never when keepalive pings are off.
async fn tick(ping: &mut Option<tokio::time::Interval>) {
    match ping {
        Some(ping) => {
            ping.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Send our close frame (after everything already fed) and wait for the relay's close
/// frame to arrive at the reader, both within `timeout` (a stalled link must not hold
/// a close for ever).
async fn close(
    sink: &mut SplitSink<Socket, Frame>,
    reader_ended: &mut watch::Receiver<bool>,
    timeout: Duration,
) -> Result<()> {
    if *reader_ended.borrow() {
        return Ok(());
    }
    tokio::time::timeout(timeout, async {
        if sink.send(Frame::Close(None)).await.is_err() {
            return; // already closing or closed
        }
        let _ = reader_ended.wait_for(|ended| *ended).await;
    })
    .await
    .map_err(|_| Error::Timeout {
        what: "close",
        after: timeout,
    })
}

async fn reader(
    mut stream: SplitStream<Socket>,
    events: mpsc::Sender<Event>,
    state: SharedState,
    idle_timeout: Option<Duration>,
    ended_tx: watch::Sender<bool>,
) {
    let mut last_seen = Instant::now();
    let mut close_frame = None;
    let ended = loop {
        let next = match idle_timeout {
            Some(idle) => match tokio::time::timeout_at(last_seen + idle, stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    break Ended {
                        code: None,
                        reason: format!("no frame from the relay for {idle:?}"),
                    };
                }
            },
            None => stream.next().await,
        };
        let frame = match next {
            None => {
                break close_frame.take().unwrap_or(Ended {
                    code: None,
                    reason: "connection ended without a close frame".into(),
                });
            }
            Some(Err(err)) => {
                break close_frame.take().unwrap_or(Ended {
                    code: None,
                    reason: err.to_string(),
                });
            }
            Some(Ok(frame)) => frame,
        };
        last_seen = Instant::now();
        let event = match frame {
            Frame::Text(text) => on_text(text.as_str(), &state),
            Frame::Binary(_) => Some(Event::Error(Error::InvalidFrame(
                "the relay sent a binary frame; the protocol uses text frames only".into(),
            ))),
            Frame::Close(frame) => {
                // tungstenite answers it; the stream ends right after.
                close_frame = Some(match frame {
                    Some(f) => Ended {
                        code: Some(f.code.into()),
                        reason: f.reason.to_string(),
                    },
                    None => Ended {
                        code: None,
                        reason: "closed by the relay".into(),
                    },
                });
                None
            }
            Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_) => None,
        };
        if let Some(event) = event {
            // A receiver that was dropped just means nobody wants events.
            let _ = events.send(event).await;
        }
    };
    let pending = {
        let mut state = lock(&state);
        state.ended = Some(ended.clone());
        std::mem::take(&mut state.inits)
    };
    for init in pending {
        let _ = init.reply.send(Err(ended.error()));
    }
    let _ = events
        .send(Event::Closed {
            code: ended.code,
            reason: ended.reason,
        })
        .await;
    let _ = ended_tx.send(true);
}

/// One text frame: validate it and decide what it means for this client.
pub(crate) fn on_text(text: &str, state: &SharedState) -> Option<Event> {
    let message = match Message::parse(text) {
        Ok(message) => message,
        Err(err) => return Some(Event::Error(Error::invalid_frame(&err))),
    };
    match message {
        Message::Deliver { msg, .. } => Some(Event::Deliver(msg)),
        Message::Initresp { ephe_wss_addr, .. } => match lock(state).inits.pop_front() {
            Some(init) => {
                let _ = init.reply.send(Ok(ephe_wss_addr));
                None
            }
            None => Some(Event::Error(Error::InvalidFrame(
                "the relay sent an INITRESP nobody asked for".into(),
            ))),
        },
        Message::Err {
            err_code, err_msg, ..
        } => {
            // Replies come in request order, so an ERR that arrives while an INIT waits
            // answers that INIT or a ROUTE written since the previous INIT. It is the
            // INIT's only when no ROUTE was written in between (a ROUTE's 404, 429 or 503
            // would arrive here too) and its code is one an INIT can get: not 404 (an
            // INIT names no address) and not 400 (the INIT we write is always valid).
            let mut state = lock(state);
            let for_init = state.inits.front().is_some_and(|init| {
                !init.after_routes
                    && err_code != codes::NOT_FOUND
                    && err_code != codes::INVALID_MESSAGE
            });
            if for_init && let Some(init) = state.inits.pop_front() {
                let _ = init.reply.send(Err(Error::Server {
                    code: err_code,
                    message: err_msg,
                }));
                return None;
            }
            Some(Event::Error(Error::Server {
                code: err_code,
                message: err_msg,
            }))
        }
        other => Some(Event::Error(Error::InvalidFrame(match other.direction() {
            Direction::ClientToServer => format!(
                "the relay sent {}, a message only clients send",
                other.type_name()
            ),
            Direction::ServerToClient => format!(
                "the relay sent {}, a message this client does not handle",
                other.type_name()
            ),
        }))),
    }
}
