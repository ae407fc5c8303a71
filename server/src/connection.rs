//! One connection's task: a single `select!` over inbound frames, the outbound queue, the
//! keepalive timers and shutdown. It moves bytes and asks [`Relay`](crate::relay::Relay)
//! what they mean; it decides nothing about the protocol itself.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as Frame};

use compendium_messages::Message;

use crate::directory::ConnId;
use crate::metrics::{CodeLabel, ReasonLabel, VerdictLabel};
use crate::outbox::Outbox;
use crate::relay::{Input, Leaving, Outcome};
use crate::remote::{Pending, Verdict};
use crate::session::{Expiry, Pull, SessionCell};
use crate::shared::Shared;

/// A version 2 connection acknowledges ROUTEs (ROUTEACK) after this many, or after
/// [`ROUTEACK_DELAY`] without one, whichever comes first (rule 6.5): batched, not one
/// frame per ROUTE.
const ROUTEACK_EVERY: u64 = 32;
const ROUTEACK_DELAY: Duration = Duration::from_millis(20);

/// Frames written per flush when the outbound queue has a backlog: batching saves
/// syscalls; the bound keeps inbound frames from waiting behind a long backlog.
const WRITE_BATCH: usize = 64;

/// How long a connection closed for a reason of ours gets to answer our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long an END waits for the verdicts of its session's ROUTEs still on their way from
/// other nodes (at most 1¼ cluster timeouts, 2.5 s by default) before the close. The
/// client's own close timeout (5 s by default) must be longer.
const END_VERDICTS: Duration = Duration::from_secs(3);

/// Why a connection ended; logged and counted (`compendium_connections_closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The client closed (close handshake or clean EOF).
    ClientClosed,
    /// The TCP connection broke without a close handshake.
    Reset,
    /// Nothing arrived for the idle timeout (rule 4.1); closed with 1001.
    IdleTimeout,
    /// A message above the size limit (rule 1.4); closed with 1009.
    TooLarge,
    /// A text frame that is not UTF-8; closed with 1007.
    InvalidUtf8,
    /// A WebSocket protocol violation (unmasked frame, bad opcode, ...); closed with 1002.
    ProtocolViolation,
    /// The server is shutting down (rule 4.4); closed with 1001 after flushing.
    Shutdown,
    /// Version 2, a cluster node draining: closed with 1012; the session stays, detached,
    /// for the node the client resumes on.
    Restart,
    /// The node was cut off from its cluster for longer than the grace period; closed with
    /// 1001 so that the client reconnects to a node that still has its cluster.
    ClusterLost,
    /// Version 2: the client sent END; the session's stream was flushed; closed with 1000.
    Ended,
    /// Version 2: another connection resumed this session (takeover); closed with 4001.
    TakenOver,
    /// Version 2: the session was revoked (a superseded secret was used); closed with 4002.
    Revoked,
    /// Version 2: too many failed RESUMEs, or a stream the client does not acknowledge;
    /// closed with 1008.
    Policy,
}

/// The close code for a session taken over by a new connection (docs/protocol.md 6.3).
pub(crate) const CLOSE_TAKEN_OVER: u16 = 4001;
/// The close code for a revoked session (docs/protocol.md 6.9).
pub(crate) const CLOSE_REVOKED: u16 = 4002;

impl Exit {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::Reset => "reset",
            Self::IdleTimeout => "idle_timeout",
            Self::TooLarge => "too_large",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::ProtocolViolation => "protocol_violation",
            Self::Shutdown => "shutdown",
            Self::Restart => "restart",
            Self::ClusterLost => "cluster_lost",
            Self::Ended => "session_ended",
            Self::TakenOver => "session_taken_over",
            Self::Revoked => "session_revoked",
            Self::Policy => "policy",
        }
    }

    fn of(err: &WsError) -> Self {
        match err {
            WsError::ConnectionClosed | WsError::AlreadyClosed => Self::ClientClosed,
            WsError::Capacity(_) => Self::TooLarge,
            WsError::Utf8(_) => Self::InvalidUtf8,
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) | WsError::Io(_) => {
                Self::Reset
            }
            _ => Self::ProtocolViolation,
        }
    }

    /// The close frame this exit sends, if the connection is still there to receive one.
    fn close_frame(self, max_message_bytes: usize) -> Option<CloseFrame> {
        let (code, reason) = match self {
            Self::ClientClosed | Self::Reset => return None,
            Self::IdleTimeout => (CloseCode::Away, "idle timeout".to_owned()),
            Self::TooLarge => (
                CloseCode::Size,
                format!("message too big: the limit is {max_message_bytes} bytes"),
            ),
            Self::InvalidUtf8 => (
                CloseCode::Invalid,
                "text frame is not valid UTF-8".to_owned(),
            ),
            Self::ProtocolViolation => (
                CloseCode::Protocol,
                "WebSocket protocol violation".to_owned(),
            ),
            Self::Shutdown => (CloseCode::Away, "server shutting down".to_owned()),
            Self::Restart => (
                CloseCode::Restart,
                "this relay node is restarting: reconnect and resume the session".to_owned(),
            ),
            Self::ClusterLost => (
                CloseCode::Away,
                "this relay node lost its cluster; reconnect".to_owned(),
            ),
            Self::Ended => (CloseCode::Normal, "session ended".to_owned()),
            Self::TakenOver => (
                CloseCode::from(CLOSE_TAKEN_OVER),
                "session taken over by a newer connection".to_owned(),
            ),
            Self::Revoked => (
                CloseCode::from(CLOSE_REVOKED),
                "session revoked: a superseded resume secret was used".to_owned(),
            ),
            Self::Policy => (
                CloseCode::Policy,
                "too many failed RESUMEs, or messages not acknowledged".to_owned(),
            ),
        };
        Some(CloseFrame {
            code,
            reason: reason.into(),
        })
    }
}

/// Serve one upgraded connection until it ends; returns why it ended. `v2`: it
/// negotiated protocol version 2 (docs/protocol.md section 6).
pub(crate) async fn run<S>(
    mut ws: WebSocketStream<S>,
    shared: Arc<Shared>,
    peer: std::net::IpAddr,
    v2: bool,
) -> Exit
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = &shared.config;
    let metrics = &shared.metrics;
    let (tx, mut rx) = mpsc::channel::<String>(config.max_queue);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let wake = v2.then(|| (tx.clone(), peer));
    let outbox = Outbox::new(tx, Arc::clone(&queued_bytes), config.max_queue_bytes);
    let conn = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let mut session = shared
        .relay
        .open(conn, outbox, std::time::Instant::now(), wake);
    // Version 2: the highest ROUTE acknowledged to the client, and whether the keepalive
    // timer is armed early to send the next ROUTEACK.
    let mut routeack_sent = 0u64;
    let mut routeack_due = false;
    let mut attached = false;
    metrics.connections_open.inc();

    // One timer serves both keepalive duties (rule 4.1): it fires at the next ping or the
    // idle deadline, whichever is first. Frames only move `last_seen`; the timer is re-armed
    // lazily when it fires, so the hot path never touches the timer wheel.
    let mut last_seen = Instant::now();
    let mut next_ping = last_seen + config.ping_interval;
    let keepalive = tokio::time::sleep_until(next_ping.min(last_seen + config.idle_timeout));
    tokio::pin!(keepalive);

    // Created once: building and registering a fresh `cancelled()` future on every turn of
    // the loop costs a lock per message.
    let shutdown = shared.shutdown.cancelled();
    tokio::pin!(shutdown);

    // Replies waiting for a verdict from another node, and the replies behind them: a
    // connection's replies keep request order (the CLI's `send` relies on it). Empty, and
    // unallocated, unless a ROUTE went to another node.
    let mut replies: VecDeque<Reply> = VecDeque::new();
    // Closes the connection when the node is cut off from its cluster for too long.
    let mut evictions = shared.evictions.subscribe();

    // Not `biased`: a busy outbound queue must not starve the client's own frames, and
    // vice versa.
    let exit = loop {
        let waiting = !replies.is_empty();
        // Past this many outstanding verdicts, stop reading: the client waits, not memory.
        let reading = replies.len() < MAX_PENDING_REPLIES;
        tokio::select! {
            () = &mut shutdown => {
                // Draining: a resumable connection is told to resume elsewhere, and its
                // session stays for the node it resumes on (docs/cluster.md, "Drain").
                break if session.cell().is_some() && shared.draining.load(Ordering::Acquire) {
                    Exit::Restart
                } else {
                    Exit::Shutdown
                };
            }
            Ok(()) = evictions.changed() => break Exit::ClusterLost,
            Some(frame) = rx.recv() => {
                if let Some(cell) = session.cell() {
                    // A version 2 wake-up: pull what the session has for this connection.
                    match pull_and_write(&mut ws, cell, conn, &shared).await {
                        Ok(None) => {}
                        Ok(Some(exit)) => break exit,
                        Err(err) => break Exit::of(&err),
                    }
                } else if frame.is_empty() {
                    // A wake-up for a session this connection no longer has.
                } else if let Err(err) = write_batch(&mut ws, frame, &mut rx, &queued_bytes, &shared).await {
                    break Exit::of(&err);
                }
            }
            verdict = head_verdict(&mut replies, false), if waiting => {
                let route = pop_route(&mut replies);
                let stream = route.zip(session.cell().map(Arc::as_ref));
                // Boxed: only ROUTEs to other nodes or held ones wait here; the common path stays small.
                if let Err(err) = Box::pin(answer_verdict(&mut ws, &shared, verdict, stream, &mut replies)).await {
                    break Exit::of(&err);
                }
            }
            inbound = ws.next(), if reading => {
                let frame = match inbound {
                    None => break Exit::ClientClosed,
                    Some(Err(err)) => break Exit::of(&err),
                    Some(Ok(frame)) => frame,
                };
                last_seen = Instant::now();
                // Pings, pongs and close frames are answered by tungstenite itself.
                let (input, len) = match &frame {
                    Frame::Text(text) => (Input::Text(text.as_str()), text.len()),
                    Frame::Binary(bytes) => (Input::Binary, bytes.len()),
                    _ => continue,
                };
                metrics.messages_in.inc();
                metrics.bytes_in.inc_by(len as u64);
                let mut outcome = shared.relay.handle(&mut session, input, std::time::Instant::now());
                if let Outcome::Claim(claim) = outcome {
                    // Boxed: only a RESUME of a session another node holds waits here.
                    outcome = Box::pin(claim_session(&shared, &mut session, claim)).await;
                }
                match outcome {
                    Outcome::Forward(forward) => {
                        let route = forward.route;
                        let pending = shared.remote.forward(forward);
                        replies.push_back(Reply::Remote { pending, route });
                        continue;
                    }
                    Outcome::Held(pending) => {
                        replies.push_back(Reply::Remote { pending, route: None });
                        continue;
                    }
                    _ => {}
                }
                count(&shared, &outcome);
                let close = session_events(&shared, &outcome, &mut attached);
                if let Some(reply) = outcome.reply() {
                    let text = reply.to_json();
                    if waiting {
                        replies.push_back(Reply::Ready(text));
                    } else if let Err(err) = send_reply(&mut ws, &shared, text).await {
                        break Exit::of(&err);
                    }
                }
                if let Some(exit) = close {
                    break exit;
                }
                if let Some(cell) = session.cell() {
                    if cell.overflowing() {
                        break Exit::Policy;
                    }
                    let accepted = cell.routes_accepted();
                    if accepted >= routeack_sent + ROUTEACK_EVERY {
                        routeack_sent = accepted;
                        let ack = Message::new_routeack(accepted).to_json();
                        if let Err(err) = send_reply(&mut ws, &shared, ack).await {
                            break Exit::of(&err);
                        }
                    } else if accepted > routeack_sent && !routeack_due {
                        routeack_due = true;
                        keepalive.as_mut().reset(Instant::now() + ROUTEACK_DELAY);
                    }
                }
            }
            () = &mut keepalive => {
                let now = Instant::now();
                if std::mem::take(&mut routeack_due)
                    && let Some(cell) = session.cell()
                    && cell.routes_accepted() > routeack_sent
                {
                    routeack_sent = cell.routes_accepted();
                    let ack = Message::new_routeack(routeack_sent).to_json();
                    if let Err(err) = send_reply(&mut ws, &shared, ack).await {
                        break Exit::of(&err);
                    }
                }
                let idle_deadline = last_seen + config.idle_timeout;
                if now >= idle_deadline {
                    break Exit::IdleTimeout;
                }
                if now >= next_ping {
                    next_ping = now + config.ping_interval;
                    if let Err(err) = ws.send(Frame::Ping(Default::default())).await {
                        break Exit::of(&err);
                    }
                }
                keepalive.as_mut().reset(next_ping.min(idle_deadline));
            }
        }
    };

    if exit == Exit::Ended
        && let Some(cell) = session.cell()
    {
        // END (rule 6.7): what the session accepted before it goes out before the close.
        let cell = Arc::clone(cell);
        // Boxed, like `finish` below: futures awaited once per connection, at its end,
        // need not make every idle connection's task bigger (rule 6 costs a v1
        // connection nothing).
        let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, async {
            while let Ok(None) = pull_and_write(&mut ws, &cell, conn, &shared).await {
                if cell.is_drained_for(conn) {
                    break;
                }
            }
        }))
        .await;
        // Then the refusals of its ROUTEs still waiting for a verdict from another node:
        // the session is over, so each goes unnumbered, naming its ROUTE (rule 6.7). A
        // client told its END is done must not have lost a message unawares.
        let _ = Box::pin(tokio::time::timeout(
            END_VERDICTS,
            refuse_after_end(&mut ws, &shared, &mut replies),
        ))
        .await;
    }
    if attached {
        shared.metrics.sessions_attached.dec();
    }
    if let Some(cell) = session.cell() {
        // A version 2 session's ROUTEs still waiting for a verdict from another node do
        // not hold up the close: their refusals go into the session's stream, wherever it
        // is by then (here, or the node it moved to). Waiting for them here could wait on
        // the client itself: in a drain, two sessions of this node routing to each other
        // each wait for the other's client to resume elsewhere, and neither client hears
        // the close that tells it to.
        let (waiting, ready): (VecDeque<_>, _) = std::mem::take(&mut replies)
            .into_iter()
            .partition(|reply| matches!(reply, Reply::Remote { .. }));
        replies = ready;
        if !waiting.is_empty() {
            shared.owed.spawn(settle_in_stream(
                waiting,
                Arc::clone(cell),
                Arc::clone(&shared),
            ));
        }
    }
    // A version 2 session lost without END stays resumable for the grace (rule 6.2).
    let leaving = match exit {
        Exit::Ended | Exit::TakenOver | Exit::Revoked => Leaving::Gone,
        _ => Leaving::Detach,
    };
    if let Some((cell, generation)) =
        shared
            .relay
            .close(&mut session, leaving, std::time::Instant::now())
    {
        tracing::info!(address = %cell.address, reason = exit.as_str(), "session detached; resumable for the grace period");
        tokio::spawn(expire(cell, generation, Arc::clone(&shared)));
    }
    // Release the address first (rule 3.10): from here on, ROUTEs to it get 404 and
    // nothing new can be queued, so what the queue holds now is all there is to flush.
    drop(session);
    rx.close();
    let grace = if matches!(exit, Exit::Shutdown | Exit::Restart) {
        config.shutdown_timeout
    } else {
        CLOSE_GRACE
    };
    let _ = Box::pin(tokio::time::timeout(
        grace,
        finish(&mut ws, &mut rx, &mut replies, exit, &queued_bytes, &shared),
    ))
    .await;
    metrics.connections_open.dec();
    metrics
        .connections_closed
        .get_or_create(&ReasonLabel {
            reason: exit.as_str(),
        })
        .inc();
    exit
}

/// Flush what was accepted (on shutdown), answer the ROUTEs still waiting for a verdict
/// (when the client is still there to hear it), send our close frame if the exit calls for
/// one, and wait for the client's answer.
async fn finish<S>(
    ws: &mut WebSocketStream<S>,
    rx: &mut mpsc::Receiver<String>,
    replies: &mut VecDeque<Reply>,
    exit: Exit,
    queued_bytes: &AtomicUsize,
    shared: &Shared,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if matches!(exit, Exit::Shutdown | Exit::ClusterLost | Exit::Restart) {
        // Every ROUTE gets its answer (rule 4.4); a pending verdict resolves within the
        // cluster timeout at worst.
        while !replies.is_empty() {
            let verdict = head_verdict(replies, true).await;
            let _ = pop_route(replies);
            if answer_verdict(ws, shared, verdict, None, replies)
                .await
                .is_err()
            {
                return;
            }
        }
    }
    if exit == Exit::Shutdown {
        // Rule 4.4: DELIVERs accepted before shutdown are sent before the close frame.
        while let Some(frame) = rx.recv().await {
            if write_batch(ws, frame, rx, queued_bytes, shared)
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let Some(frame) = exit.close_frame(shared.config.max_message_bytes) else {
        return;
    };
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    // Read until the client's close frame (or the end): a clean close handshake.
    while let Some(Ok(_)) = ws.next().await {}
}

/// The most ROUTEs one connection may have waiting for a verdict from another node.
const MAX_PENDING_REPLIES: usize = 256;

/// A reply owed to the client, in request order.
enum Reply {
    /// The verdict of a ROUTE forwarded to another node or held for a detached session;
    /// `route` is its `seq` when a version 2 session sent it.
    Remote {
        pending: Pending,
        route: Option<u64>,
    },
    /// A reply ready to send once the ones before it are sent.
    Ready(String),
}

/// The verdict at the head of `replies` (always a [`Reply::Remote`]: ready replies at the
/// head are sent at once). A delivery at the head wakes the task only when something waits
/// behind it, or when `finishing`: otherwise there is nothing to send, and the resolved
/// head is taken on the task's next turn.
fn head_verdict(
    replies: &mut VecDeque<Reply>,
    finishing: bool,
) -> impl Future<Output = Verdict> + '_ {
    std::future::poll_fn(move |cx| {
        let urgent = finishing || replies.len() > 1;
        match replies.front() {
            Some(Reply::Remote { pending, .. }) => pending.poll_verdict(cx, urgent),
            _ => Poll::Pending,
        }
    })
}

/// Ask the other nodes for the session a RESUME names, and install it here
/// (docs/cluster.md, "Resume on any node"); what to answer the RESUME.
async fn claim_session(
    shared: &Shared,
    session: &mut crate::relay::Session<Outbox>,
    claim: crate::remote::Claim,
) -> Outcome {
    let (claimed, adopt) = shared.remote.claim(&claim).await;
    let outcome = shared
        .relay
        .claimed(session, claimed, std::time::Instant::now());
    if let (Outcome::Resumed { .. }, Some(adopt), Some(cell)) = (&outcome, adopt, session.cell()) {
        adopt(Arc::clone(cell));
    }
    outcome
}

/// Put the refusals of a version 2 session's ROUTEs that were still waiting for their
/// verdicts when its connection ended into the session's stream, as they come.
async fn settle_in_stream(waiting: VecDeque<Reply>, cell: Arc<SessionCell>, shared: Arc<Shared>) {
    for reply in waiting {
        let Reply::Remote { pending, route } = reply else {
            continue;
        };
        let verdict = std::future::poll_fn(|cx| pending.poll_verdict(cx, true)).await;
        judged(&shared, verdict, route.map(|route| (route, cell.as_ref())));
    }
}

/// The verdicts of the ROUTEs in `replies`, waited for in turn after END; each refusal
/// sent as an unnumbered ERR naming its ROUTE (the session, and its stream, are over).
async fn refuse_after_end<S>(
    ws: &mut WebSocketStream<S>,
    shared: &Shared,
    replies: &mut VecDeque<Reply>,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(reply) = replies.pop_front() {
        let text = match reply {
            Reply::Ready(text) => Some(text),
            Reply::Remote { pending, route } => {
                let verdict = std::future::poll_fn(|cx| pending.poll_verdict(cx, true)).await;
                judged(shared, verdict, None).reply().map(|mut message| {
                    if let Message::Err { route: r, .. } = &mut message {
                        *r = route;
                    }
                    message.to_json()
                })
            }
        };
        if let Some(text) = text {
            send_reply(ws, shared, text).await?;
        }
    }
    Ok(())
}

/// What a ROUTE's verdict makes of it, counted: for a version 2 session (`stream`: the
/// ROUTE's `seq` and the session) a refusal goes into its stream.
fn judged(shared: &Shared, verdict: Verdict, stream: Option<(u64, &SessionCell)>) -> Outcome {
    shared
        .metrics
        .cluster_verdicts
        .get_or_create(&VerdictLabel::of(verdict))
        .inc();
    let mut outcome = shared.relay.verdict(verdict);
    if let Some((route, cell)) = stream {
        outcome = shared.relay.to_stream(cell, route, outcome);
    }
    count(shared, &outcome);
    outcome
}

/// Take the head reply, returning its ROUTE's `seq` if a version 2 session sent it.
fn pop_route(replies: &mut VecDeque<Reply>) -> Option<u64> {
    match replies.pop_front() {
        Some(Reply::Remote { route, .. }) => route,
        _ => None,
    }
}

/// Answer the ROUTE whose verdict came, then every ready reply behind it, up to the next
/// one still waiting. `stream`: the ROUTE's `seq` and its version 2 session, whose stream
/// gets a refusal.
async fn answer_verdict<S>(
    ws: &mut WebSocketStream<S>,
    shared: &Shared,
    verdict: Verdict,
    stream: Option<(u64, &SessionCell)>,
    replies: &mut VecDeque<Reply>,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let outcome = judged(shared, verdict, stream);
    if let Some(reply) = outcome.reply() {
        send_reply(ws, shared, reply.to_json()).await?;
    }
    while let Some(Reply::Ready(_)) = replies.front() {
        if let Some(Reply::Ready(text)) = replies.pop_front() {
            send_reply(ws, shared, text).await?;
        }
    }
    Ok(())
}

async fn send_reply<S>(
    ws: &mut WebSocketStream<S>,
    shared: &Shared,
    text: String,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    shared.metrics.bytes_out.inc_by(text.len() as u64);
    ws.send(Frame::text(text)).await
}

async fn write_batch<S>(
    ws: &mut WebSocketStream<S>,
    first: String,
    rx: &mut mpsc::Receiver<String>,
    queued_bytes: &AtomicUsize,
    shared: &Shared,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut next = Some(first);
    let mut written = 0;
    let mut bytes = 0;
    while let Some(frame) = next.take() {
        queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
        bytes += frame.len();
        ws.feed(Frame::text(frame)).await?;
        written += 1;
        if written < WRITE_BATCH {
            next = rx.try_recv().ok();
        }
    }
    ws.flush().await?;
    shared.metrics.bytes_out.inc_by(bytes as u64);
    Ok(())
}

/// Write what `cell` has for this connection. `Ok(Some(exit))` when the connection is
/// to close: the session was taken over or ended.
async fn pull_and_write<S>(
    ws: &mut WebSocketStream<S>,
    cell: &SessionCell,
    conn: ConnId,
    shared: &Shared,
) -> Result<Option<Exit>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frames = match cell.pull(conn, WRITE_BATCH) {
        Pull::Frames(frames) => frames,
        Pull::TakenOver => return Ok(Some(Exit::TakenOver)),
        Pull::Ended => return Ok(Some(Exit::Revoked)),
    };
    if frames.is_empty() {
        return Ok(None);
    }
    let mut bytes = 0;
    for frame in frames {
        bytes += frame.len();
        ws.feed(Frame::Text(frame)).await?;
    }
    ws.flush().await?;
    shared.metrics.bytes_out.inc_by(bytes as u64);
    Ok(None)
}

/// Watch a detached session until it resumes, or its grace passes (rules 6.2, 6.8).
async fn expire(cell: Arc<SessionCell>, generation: u64, shared: Arc<Shared>) {
    loop {
        let next = match cell.expiry(generation, std::time::Instant::now()) {
            Expiry::Stop => return,
            Expiry::Expired { settled } => {
                shared.relay.settle(settled, Verdict::NotFound);
                shared.directory.release(cell.claimed_by, cell.address);
                shared.metrics.session("expired");
                tracing::info!(address = %cell.address, "session expired: not resumed within the grace period");
                return;
            }
            Expiry::Wait { next, refused } => {
                shared.relay.settle(refused, Verdict::Away);
                next
            }
        };
        tokio::select! {
            // (Not at shutdown: a draining node keeps its sessions for their new nodes.)
            () = shared.exiting.cancelled() => return,
            () = cell.held_arrived.notified() => {}
            () = tokio::time::sleep_until(Instant::from_std(next)) => {}
        }
    }
}

/// Count a version 2 session event; the exit it calls for, if any.
fn session_events(shared: &Shared, outcome: &Outcome, attached: &mut bool) -> Option<Exit> {
    let metrics = &shared.metrics;
    let mut attach = || {
        if !std::mem::replace(attached, true) {
            metrics.sessions_attached.inc();
        }
    };
    match outcome {
        Outcome::Assigned {
            session: Some(_), ..
        } => {
            attach();
            metrics.session("started");
        }
        Outcome::Resumed {
            replayed,
            took_over,
            ..
        } => {
            attach();
            metrics.session("resumed");
            if *took_over {
                metrics.session("taken_over");
            }
            metrics.messages_replayed.inc_by(*replayed as u64);
        }
        Outcome::Refused { close, .. } => {
            metrics.session("refused");
            if *close {
                return Some(Exit::Policy);
            }
        }
        Outcome::Ended => {
            metrics.session("ended");
            return Some(Exit::Ended);
        }
        _ => {}
    }
    None
}

fn count(shared: &Shared, outcome: &Outcome) {
    let metrics = &shared.metrics;
    match outcome {
        Outcome::Assigned { .. }
        | Outcome::Forward(_)
        | Outcome::Held(_)
        | Outcome::Claim(_)
        | Outcome::Resumed { .. }
        | Outcome::Refused { .. }
        | Outcome::Ended
        | Outcome::Streamed { code: None } => {}
        Outcome::Streamed { code: Some(code) } => {
            metrics
                .errors
                .get_or_create(&CodeLabel { code: *code })
                .inc();
        }
        Outcome::Routed => {
            metrics.messages_routed.inc();
        }
        Outcome::TargetFull => {
            metrics.queue_full.inc();
            let code = compendium_messages::codes::UNAVAILABLE;
            metrics.errors.get_or_create(&CodeLabel { code }).inc();
        }
        Outcome::Error { code, .. } => {
            metrics
                .errors
                .get_or_create(&CodeLabel { code: *code })
                .inc();
        }
    }
}
