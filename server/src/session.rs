//! Version 2 sessions (docs/protocol.md section 6): the state that outlives a connection.
//!
//! A session is the address, its resume secret, and two numbered streams:
//! - **out**: every DELIVER, and every ERR that answers a numbered ROUTE, gets the next
//!   `seq` and stays in [`State::stream`] until the client acknowledges it (ACK, or the
//!   `seq` of a RESUME). A connection does not get frames pushed to it: it is woken (an
//!   empty marker in its outbox) and *pulls* what it has not written yet, under the lock,
//!   after checking it is still the one attached. That makes takeover atomic: the moment a
//!   RESUME attaches a new connection, the old one can pull nothing more.
//! - **in**: the highest ROUTE `seq` acted on ([`State::routes_accepted`]); a ROUTE at or
//!   below it is a resend and is dropped, so each ROUTE is acted on once.
//!
//! While no connection is attached (detached, for at most the grace period), DELIVERs
//! for the session are *held* with the sender's verdict still open: they join the stream
//! when the client resumes (the sender's verdict: delivered), or are refused with 503 when
//! the hold window passes (404 if the session ends first). So every ROUTE the relay
//! accepts is delivered once or answered with an ERR (rule 6.8).
//!
//! Everything here is synchronous and takes the time as an argument: no sockets, no
//! clock, no lock held across an await; the connection task and the expiry task do the
//! waiting.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use compendium_messages::{Address, Message, Secret};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::directory::{ConnId, Refusal};
use crate::remote::Verdict;
use crate::remote::VerdictSlot;

/// How many superseded secrets a session remembers, to recognise a stolen one (rule 6.9).
const OLD_SECRETS: usize = 4;

/// The bounds and windows of version 2 sessions (flags of `compendium-server`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// How long a session outlives its connection; zero disables version 2.
    pub(crate) grace: Duration,
    /// How long a DELIVER for a detached session is held before its sender gets 503.
    pub(crate) hold: Duration,
    /// Unacknowledged plus held messages per session.
    pub(crate) max_messages: usize,
    /// Unacknowledged plus held bytes per session.
    pub(crate) max_bytes: usize,
    /// Detached sessions on this node.
    pub(crate) max_detached: usize,
    /// Bytes held by all detached sessions on this node.
    pub(crate) max_detached_bytes: usize,
    /// Failed RESUMEs allowed per source address per minute.
    pub(crate) failed_resumes_per_minute: u32,
}

/// Node-wide accounting of sessions: what the per-session bounds cannot see.
pub(crate) struct Sessions {
    pub(crate) limits: Limits,
    detached: AtomicUsize,
    detached_bytes: AtomicUsize,
    failures: Mutex<HashMap<IpAddr, Window>>,
    /// Sessions handed over to another node, ever.
    moved: AtomicUsize,
    /// Notified whenever a detached session resumes, moves or ends (a drain waits on it).
    pub(crate) detached_changed: tokio::sync::Notify,
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

/// The most source addresses whose failed RESUMEs are remembered at once; past it the
/// oldest windows are forgotten first.
const MAX_FAILURE_SOURCES: usize = 65_536;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

impl Sessions {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            detached: AtomicUsize::new(0),
            detached_bytes: AtomicUsize::new(0),
            failures: Mutex::new(HashMap::new()),
            moved: AtomicUsize::new(0),
            detached_changed: tokio::sync::Notify::new(),
        }
    }

    /// Whether `ip` may try another RESUME now (rule 6.9).
    pub(crate) fn may_try(&self, ip: IpAddr, now: Instant) -> bool {
        let failures = lock(&self.failures);
        failures.get(&ip).is_none_or(|w| {
            now.duration_since(w.start) >= FAILURE_WINDOW
                || w.count < self.limits.failed_resumes_per_minute
        })
    }

    /// Count a failed RESUME from `ip`.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) {
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_FAILURE_SOURCES && !failures.contains_key(&ip) {
            failures.retain(|_, w| now.duration_since(w.start) < FAILURE_WINDOW);
            if failures.len() >= MAX_FAILURE_SOURCES {
                // Under a spray from this many sources, forget the lot rather than grow:
                // the secrets' 256 bits, not this table, are what stops guessing.
                failures.clear();
            }
        }
        let window = failures.entry(ip).or_insert(Window {
            start: now,
            count: 0,
        });
        if now.duration_since(window.start) >= FAILURE_WINDOW {
            *window = Window {
                start: now,
                count: 0,
            };
        }
        window.count = window.count.saturating_add(1);
    }

    /// Detached sessions now.
    pub(crate) fn detached(&self) -> usize {
        self.detached.load(Ordering::Relaxed)
    }

    /// Bytes held by detached sessions now.
    pub(crate) fn detached_bytes(&self) -> usize {
        self.detached_bytes.load(Ordering::Relaxed)
    }

    /// Sessions handed over to other nodes since the start.
    pub(crate) fn moved(&self) -> usize {
        self.moved.load(Ordering::Relaxed)
    }

    /// A detached session is detached no more (resumed, moved or ended).
    fn reattached(&self, bytes: usize) {
        self.detached.fetch_sub(1, Ordering::AcqRel);
        self.detached_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.detached_changed.notify_waiters();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves the state consistent at each step that can
    // panic (none should), so a poisoned lock is still a usable one.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Draw a fresh secret from the OS's CSPRNG.
pub(crate) fn draw_secret() -> Result<Secret, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
    Ok(Secret::from_bytes(bytes))
}

/// Who is owed the verdict of a held DELIVER.
pub(crate) enum Owed {
    /// A version 1 sender's connection, waiting in its reply order.
    Slot(Arc<VerdictSlot>),
    /// A version 2 sender's session: a refusal becomes an ERR in its stream naming the
    /// ROUTE (`route`).
    Stream {
        session: Weak<SessionCell>,
        route: u64,
    },
    /// A sender on another node: its verdict goes back over the cluster link.
    Remote(RemoteVerdict),
}

/// Sends a held ROUTE's verdict to a sender on another node.
pub(crate) type RemoteVerdict = Box<dyn FnOnce(Verdict) + Send + Sync>;

impl Owed {
    /// Tell the sender what became of its ROUTE. Call with no session lock held.
    pub(crate) fn settle(self, verdict: Verdict, texts: &dyn Fn(Verdict) -> Option<(u16, String)>) {
        match self {
            Self::Slot(slot) => {
                slot.fill(verdict);
            }
            Self::Stream { session, route } => {
                if let (Some(session), Some((code, text))) = (session.upgrade(), texts(verdict)) {
                    session.push_err(code, &text, route);
                }
            }
            Self::Remote(send) => send(verdict),
        }
    }
}

/// Whether a DELIVER for a detached session may be held, and for whom.
pub(crate) enum Hold {
    /// No: refuse it at once.
    Never,
    /// Yes; a version 1 sender waits for the verdict in its reply order.
    ForReply,
    /// Yes; a version 2 sender hears only of a refusal, in its stream.
    ForStream {
        session: Weak<SessionCell>,
        route: u64,
    },
    /// Yes; a sender on another node hears the verdict over the cluster link.
    ForRemote(RemoteVerdict),
}

/// What [`SessionCell::push_deliver`] did with a DELIVER.
pub(crate) enum Pushed {
    /// In the stream; the attached connection was woken.
    Now,
    /// Held for a detached session; the slot gets the verdict (none for a version 2
    /// sender, whose refusal goes to its stream).
    Held(Option<Arc<VerdictSlot>>),
}

struct Held {
    frame: String,
    since: Instant,
    owed: Option<Owed>,
}

struct Attachment {
    conn: ConnId,
    /// The connection's outbox: an empty string is a wake-up, never a frame.
    wake: mpsc::Sender<String>,
}

impl Attachment {
    fn wake(&self) {
        // Full means a wake-up is already queued; closed means the connection is ending.
        let _ = self.wake.try_send(String::new());
    }
}

struct State {
    secret: Secret,
    /// The secret of the last RESUME, still good until the client shows that the RESUMED
    /// carrying `secret` reached it (rule 6.9): a RESUMED lost with a link that died at
    /// once must not make the client look like a thief. With the resume's `seq`: an ACK
    /// beyond it acknowledges a frame sent after the RESUMED, on the same ordered stream.
    previous: Option<(Secret, u64)>,
    old_secrets: VecDeque<Secret>,
    attached: Option<Attachment>,
    ended: bool,
    /// Handed over to another node of the cluster (docs/cluster.md, "Resume on any
    /// node"): what still arrives here goes there.
    moved: bool,
    /// The `seq` the next frame of the out stream gets.
    next_seq: u64,
    /// The client has everything up to here.
    acked: u64,
    /// The attached connection has pulled everything up to here.
    written: u64,
    /// Out-stream frames after `acked`, in order.
    stream: VecDeque<(u64, Utf8Bytes)>,
    /// Bytes in `stream` and `held`.
    bytes: usize,
    /// DELIVERs that arrived while detached, in arrival order.
    held: VecDeque<Held>,
    routes_accepted: u64,
    detached_at: Option<Instant>,
    /// Bumped at each attach and detach, so that an expiry task knows whether the
    /// detachment it watches is still the current one.
    generation: u64,
}

/// One version 2 session, shared by the directory (as the address's target), its
/// connection while attached, and its expiry task while detached.
pub(crate) struct SessionCell {
    /// Fixed for the session's life.
    pub(crate) address: Address,
    /// The connection that claimed the address in the directory (releasing needs it).
    pub(crate) claimed_by: ConnId,
    /// Moved here from another node: ROUTEs reach it through its cluster subject only.
    pub(crate) roaming: bool,
    sessions: Arc<Sessions>,
    state: Mutex<State>,
    /// Wakes the expiry task when a detached session's first held DELIVER arrives, so
    /// that its hold window is timed from then.
    pub(crate) held_arrived: tokio::sync::Notify,
    /// Set once the session has moved to another node: where an ERR that answers one of
    /// its ROUTEs, and comes back after the move, is sent (to the session's new holder).
    late_errs: std::sync::OnceLock<LateErrs>,
    /// Cancelled when the session ends or moves on: what its cluster subscription, if
    /// it has one (a session resumed from another node), waits for to stop.
    pub(crate) over: tokio_util::sync::CancellationToken,
}

/// Where the ERRs of a session that moved to another node go: code, text, ROUTE `seq`.
pub(crate) type LateErrs = Box<dyn Fn(u16, &str, u64) + Send + Sync>;

/// A session as it moves to another node: everything its client's RESUME needs there
/// (docs/cluster.md, "Resume on any node"). The secrets are already rotated for the
/// RESUME that asked for it; the stream holds what the client has not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exported {
    pub(crate) address: Address,
    /// The secret the RESUMED carries.
    pub(crate) secret: Secret,
    /// The secret the RESUME used and its `seq`, good until the new one is confirmed.
    pub(crate) previous: Option<(Secret, u64)>,
    pub(crate) old_secrets: Vec<Secret>,
    pub(crate) next_seq: u64,
    /// The `seq` of the RESUME: the client has everything up to here.
    pub(crate) acked: u64,
    pub(crate) routes_accepted: u64,
    /// Every frame after `acked`, in order.
    pub(crate) stream: Vec<(u64, Utf8Bytes)>,
}

impl Exported {
    /// Why this session cannot be taken in as it is: it came from another node, and is
    /// checked like any input from the network.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.acked >= self.next_seq {
            return Some(format!(
                "acknowledged {} of {} sent",
                self.acked,
                self.next_seq.saturating_sub(1)
            ));
        }
        let mut last = self.acked;
        for (seq, _) in &self.stream {
            if *seq <= last || *seq >= self.next_seq {
                return Some(format!("stream seq {seq} out of order or range"));
            }
            last = *seq;
        }
        if self.old_secrets.len() > OLD_SECRETS {
            return Some(format!("{} old secrets", self.old_secrets.len()));
        }
        None
    }
}

/// What a RESUME came to.
pub(crate) enum Resume {
    /// The session is the connection's now.
    Resumed {
        secret: Secret,
        routes_accepted: u64,
        replayed: usize,
        took_over: bool,
        settled: Vec<Owed>,
    },
    /// Unknown, ended, expired or a wrong secret: all the same to the client.
    Refused,
    /// A superseded secret: the session is ended (rule 6.9); the caller releases the
    /// address and settles `settled` with 404.
    Stolen { settled: Vec<Owed> },
}

/// What an attached connection may write next.
pub(crate) enum Pull {
    Frames(Vec<Utf8Bytes>),
    /// Another connection resumed the session (rule 6.3, takeover).
    TakenOver,
    /// The session ended (END, or revoked).
    Ended,
}

/// What a detached session's expiry task should do next.
pub(crate) enum Expiry {
    /// Resumed, or detached again by another connection: not this task's business.
    Stop,
    /// Past the grace: the session is over; release the address, settle with 404.
    Expired { settled: Vec<Owed> },
    /// Still in grace: settle `refused` with 503 (their hold passed), look again at `next`.
    Wait { next: Instant, refused: Vec<Owed> },
}

/// Where a numbered ROUTE stands (rule 6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteSeq {
    /// The next one: act on it.
    Next,
    /// Acted on already: drop it.
    Duplicate,
    /// Skips numbers: refuse it, `expected` is the next number.
    Gap { expected: u64 },
}

/// The v1 DELIVER head that [`compendium_messages::Payload::deliver_frame`] writes.
const DELIVER_HEAD: &str = r#"{"type":"DELIVER","#;

/// `{"type":"DELIVER","seq":N,"msg":…}` from the v1 frame `{"type":"DELIVER","msg":…}`,
/// in place (`deliver_frame` leaves room for it): no second copy of the message.
fn numbered_deliver(mut frame: String, seq: u64) -> String {
    // `"seq":N,` formatted on the stack (at most 27 bytes).
    let mut buf = [0u8; 32];
    let room = buf.len();
    let mut cursor = &mut buf[..];
    let _ = std::io::Write::write_fmt(&mut cursor, format_args!("\"seq\":{seq},"));
    let written = room - cursor.len();
    let member = std::str::from_utf8(&buf[..written]).unwrap_or_default();
    if frame.starts_with(DELIVER_HEAD) {
        frame.insert_str(DELIVER_HEAD.len(), member);
        frame
    } else {
        format!("{DELIVER_HEAD}{member}{frame}")
    }
}

impl SessionCell {
    pub(crate) fn new(
        address: Address,
        secret: Secret,
        conn: ConnId,
        wake: mpsc::Sender<String>,
        sessions: Arc<Sessions>,
    ) -> Arc<Self> {
        Arc::new(Self {
            address,
            claimed_by: conn,
            roaming: false,
            sessions,
            held_arrived: tokio::sync::Notify::new(),
            late_errs: std::sync::OnceLock::new(),
            over: tokio_util::sync::CancellationToken::new(),
            state: Mutex::new(State {
                secret,
                previous: None,
                old_secrets: VecDeque::new(),
                attached: Some(Attachment { conn, wake }),
                ended: false,
                moved: false,
                next_seq: 1,
                acked: 0,
                written: 0,
                stream: VecDeque::new(),
                bytes: 0,
                held: VecDeque::new(),
                routes_accepted: 0,
                detached_at: None,
                generation: 0,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn limits(&self) -> &Limits {
        &self.sessions.limits
    }

    /// Accept a DELIVER for this session (rules 6.4, 6.8).
    pub(crate) fn push_deliver(
        &self,
        frame: String,
        hold: Hold,
        now: Instant,
    ) -> Result<Pushed, Refusal> {
        let mut state = self.state();
        if state.moved {
            return Err(Refusal::Moved);
        }
        if state.ended {
            return Err(Refusal::Gone);
        }
        let count = state.stream.len() + state.held.len();
        let len = frame.len();
        // As for a v1 queue, an empty session always takes one message.
        if count > 0
            && (count >= self.limits().max_messages || state.bytes + len > self.limits().max_bytes)
        {
            return Err(Refusal::Full);
        }
        if state.attached.is_none() {
            let owed = match hold {
                Hold::Never => return Err(Refusal::Away),
                Hold::ForReply => Some(Owed::Slot(VerdictSlot::new())),
                Hold::ForStream { session, route } => Some(Owed::Stream { session, route }),
                Hold::ForRemote(send) => Some(Owed::Remote(send)),
            };
            let total = self
                .sessions
                .detached_bytes
                .fetch_add(len, Ordering::AcqRel);
            if total + len > self.limits().max_detached_bytes {
                self.sessions
                    .detached_bytes
                    .fetch_sub(len, Ordering::AcqRel);
                return Err(Refusal::Full);
            }
            let slot = match &owed {
                Some(Owed::Slot(slot)) => Some(Arc::clone(slot)),
                _ => None,
            };
            state.bytes += len;
            state.held.push_back(Held {
                frame,
                since: now,
                owed,
            });
            if state.held.len() == 1 {
                self.held_arrived.notify_one();
            }
            return Ok(Pushed::Held(slot));
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let frame = numbered_deliver(frame, seq);
        state.bytes += frame.len();
        state.stream.push_back((seq, Utf8Bytes::from(frame)));
        if let Some(attached) = &state.attached {
            attached.wake();
        }
        Ok(Pushed::Now)
    }

    /// Put an ERR answering ROUTE `route` into the out stream (rule 6.6). Never refused:
    /// an ERR is small and answers something the client sent, so a client that floods
    /// without acknowledging is stopped by [`SessionCell::overflowing`] instead.
    pub(crate) fn push_err(&self, code: u16, text: &str, route: u64) {
        let mut state = self.state();
        if state.moved {
            drop(state);
            // The ROUTE was accepted here before the session moved: its answer follows it.
            if let Some(send) = self.late_errs.get() {
                send(code, text, route);
            }
            return;
        }
        if state.ended {
            return;
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let mut message = Message::err(code, text.to_owned());
        if let Message::Err {
            seq: s, route: r, ..
        } = &mut message
        {
            *s = Some(seq);
            *r = Some(route);
        }
        let frame = message.to_json();
        state.bytes += frame.len();
        if state.attached.is_none() {
            self.sessions
                .detached_bytes
                .fetch_add(frame.len(), Ordering::AcqRel);
        }
        state.stream.push_back((seq, Utf8Bytes::from(frame)));
        if let Some(attached) = &state.attached {
            attached.wake();
        }
    }

    /// Whether the out stream has grown to twice its bound (only ERRs can take it past
    /// the bound): the client is not acknowledging, and its connection is closed.
    pub(crate) fn overflowing(&self) -> bool {
        self.state().stream.len() > 2 * self.limits().max_messages.max(1)
    }

    /// The next frames `conn` should write (rule 6.4).
    pub(crate) fn pull(&self, conn: ConnId, max: usize) -> Pull {
        let mut state = self.state();
        if state.moved {
            // Resumed on another node: as a takeover here (4001).
            return Pull::TakenOver;
        }
        if state.ended && state.attached.is_none() {
            return Pull::Ended;
        }
        match &state.attached {
            Some(attached) if attached.conn == conn => {}
            _ => {
                return if state.ended {
                    Pull::Ended
                } else {
                    Pull::TakenOver
                };
            }
        }
        let written = state.written;
        let frames: Vec<Utf8Bytes> = state
            .stream
            .iter()
            .skip_while(|(seq, _)| *seq <= written)
            .take(max)
            .map(|(_, frame)| frame.clone())
            .collect();
        state.written += frames.len() as u64;
        if frames.len() == max
            && let Some(attached) = &state.attached
        {
            attached.wake(); // more to pull
        }
        Pull::Frames(frames)
    }

    /// ACK `seq` from connection `conn`: the client has everything up to it (rule 6.4).
    /// Ignored unless `conn` is attached: a connection taken over speaks for nobody (its
    /// successor's RESUME said what arrived), and forgetting frames of a detached session
    /// would skew the node's count of detached bytes.
    ///
    /// # Errors
    /// The text of the ERR 400 when `seq` is beyond what was sent.
    pub(crate) fn ack(&self, conn: ConnId, seq: u64) -> Result<(), String> {
        let mut state = self.state();
        if !state.attached.as_ref().is_some_and(|a| a.conn == conn) {
            return Ok(());
        }
        if seq >= state.next_seq {
            return Err(format!(
                "/seq: {seq} acknowledges more than was sent; the last message sent is {}",
                state.next_seq - 1
            ));
        }
        Self::forget_upto(&mut state, seq);
        if state.previous.as_ref().is_some_and(|(_, at)| seq > *at) {
            Self::confirm(&mut state);
        }
        Ok(())
    }

    /// The client has the current secret: the previous one is superseded.
    fn confirm(state: &mut State) {
        if let Some((previous, _)) = state.previous.take() {
            Self::supersede(state, previous);
        }
    }

    fn supersede(state: &mut State, secret: Secret) {
        state.old_secrets.push_front(secret);
        state.old_secrets.truncate(OLD_SECRETS);
    }

    fn forget_upto(state: &mut State, seq: u64) {
        while state.stream.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((_, frame)) = state.stream.pop_front() {
                state.bytes -= frame.len();
            }
        }
        state.acked = state.acked.max(seq);
    }

    /// Number a ROUTE from this session (rule 6.5).
    pub(crate) fn accept_route(&self, seq: u64) -> RouteSeq {
        let mut state = self.state();
        if state.moved || seq <= state.routes_accepted {
            // (A ROUTE that reaches a session after it moved is not acted on here: the
            // client sends it again to the node that has the session now.)
            RouteSeq::Duplicate
        } else if seq == state.routes_accepted + 1 {
            state.routes_accepted = seq;
            RouteSeq::Next
        } else {
            RouteSeq::Gap {
                expected: state.routes_accepted + 1,
            }
        }
    }

    /// The highest ROUTE `seq` acted on.
    pub(crate) fn routes_accepted(&self) -> u64 {
        self.state().routes_accepted
    }

    /// Take the session for `conn` (rule 6.3), if `secret` is its current secret.
    pub(crate) fn resume(
        &self,
        secret: &Secret,
        seq: u64,
        conn: ConnId,
        wake: mpsc::Sender<String>,
        fresh: Secret,
    ) -> Resume {
        let mut state = self.state();
        let (took_over, settled) = match self.admit(&mut state, secret, seq, fresh.clone()) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal,
        };
        state.written = seq;
        let replayed = state.stream.len();
        let attachment = Attachment { conn, wake };
        attachment.wake();
        state.attached = Some(attachment);
        state.detached_at = None;
        state.generation += 1;
        Resume::Resumed {
            secret: fresh,
            routes_accepted: state.routes_accepted,
            replayed,
            took_over,
            settled,
        }
    }

    /// Whether a RESUME with `secret` and `seq` would resume this session, without
    /// resuming it: the first step of a resume on another node (docs/cluster.md). A
    /// superseded secret revokes the session here as it would in [`SessionCell::resume`].
    pub(crate) fn check(&self, secret: &Secret, seq: u64) -> Resume {
        let mut state = self.state();
        match Self::presented(&state, secret) {
            Presented::Wrong => Resume::Refused,
            Presented::Stale => Resume::Stolen {
                settled: self.revoke_locked(&mut state),
            },
            Presented::Current | Presented::Previous if seq >= state.next_seq || state.ended => {
                Resume::Refused
            }
            Presented::Current | Presented::Previous => Resume::Resumed {
                secret: state.secret.clone(),
                routes_accepted: state.routes_accepted,
                replayed: 0,
                took_over: state.attached.is_some(),
                settled: Vec::new(),
            },
        }
    }

    /// Resume the session for a RESUME that reached another node: as
    /// [`SessionCell::resume`] (the secrets rotate, the connection attached here is taken
    /// over, held DELIVERs join the stream), but instead of attaching a connection, the
    /// session leaves this node: the returned state is all there is of it, and whatever
    /// still arrives here is refused as [`Refusal::Moved`] (its senders send it on).
    ///
    /// # Errors
    /// [`Resume::Refused`] or [`Resume::Stolen`], as [`SessionCell::resume`].
    pub(crate) fn export(
        &self,
        secret: &Secret,
        seq: u64,
        fresh: Secret,
    ) -> Result<(Exported, Vec<Owed>), Resume> {
        let mut state = self.state();
        let (_, settled) = self.admit(&mut state, secret, seq, fresh)?;
        state.moved = true;
        state.ended = true;
        state.bytes = 0;
        self.sessions.moved.fetch_add(1, Ordering::Relaxed);
        let stream: Vec<(u64, Utf8Bytes)> = state.stream.drain(..).collect();
        self.over.cancel();
        Ok((
            Exported {
                address: self.address,
                secret: state.secret.clone(),
                previous: state.previous.clone(),
                old_secrets: state.old_secrets.iter().cloned().collect(),
                next_seq: state.next_seq,
                acked: state.acked,
                routes_accepted: state.routes_accepted,
                stream,
            },
            settled,
        ))
    }

    /// A session that moved here from another node, attached to `conn` (the connection
    /// whose RESUME asked for it); `exported` has passed [`Exported::problem`].
    pub(crate) fn import(
        exported: Exported,
        conn: ConnId,
        wake: mpsc::Sender<String>,
        sessions: Arc<Sessions>,
    ) -> Arc<Self> {
        let bytes = exported.stream.iter().map(|(_, f)| f.len()).sum();
        let attachment = Attachment { conn, wake };
        attachment.wake();
        Arc::new(Self {
            address: exported.address,
            claimed_by: conn,
            roaming: true,
            sessions,
            held_arrived: tokio::sync::Notify::new(),
            late_errs: std::sync::OnceLock::new(),
            over: tokio_util::sync::CancellationToken::new(),
            state: Mutex::new(State {
                secret: exported.secret,
                previous: exported.previous,
                old_secrets: exported.old_secrets.into(),
                attached: Some(attachment),
                ended: false,
                moved: false,
                next_seq: exported.next_seq,
                acked: exported.acked,
                written: exported.acked,
                stream: exported.stream.into(),
                bytes,
                held: VecDeque::new(),
                routes_accepted: exported.routes_accepted,
                detached_at: None,
                generation: 0,
            }),
        })
    }

    /// Where ERRs that answer this session's ROUTEs go once it has moved (set once, by
    /// the cluster link, when it exports the session).
    pub(crate) fn set_late_errs(&self, send: LateErrs) {
        let _ = self.late_errs.set(send);
    }

    /// Whether the session has moved to another node.
    pub(crate) fn has_moved(&self) -> bool {
        self.state().moved
    }

    fn presented(state: &State, secret: &Secret) -> Presented {
        // Compare with every secret, not stopping at a match, so that the time taken says
        // nothing about which matched.
        let current = *secret == state.secret;
        let previous = state
            .previous
            .as_ref()
            .is_some_and(|(previous, _)| previous == secret);
        let stale = state
            .old_secrets
            .iter()
            .fold(false, |found, old| found | (old == secret));
        if current {
            Presented::Current
        } else if previous {
            Presented::Previous
        } else if stale {
            Presented::Stale
        } else {
            Presented::Wrong
        }
    }

    /// A superseded secret was used: the session ends (rule 6.9).
    fn revoke_locked(&self, state: &mut State) -> Vec<Owed> {
        let settled = self.end_locked(state);
        // The live connection, if any, pulls, finds the session over, and closes (4002).
        state.attached = None;
        settled
    }

    /// What [`SessionCell::resume`] and [`SessionCell::export`] share: check the secret
    /// and `seq`, rotate the secrets, take the session from the connection attached (if
    /// any), forget what `seq` acknowledges, and move held DELIVERs into the stream.
    /// Returns whether a connection was taken over, and who is owed "delivered".
    fn admit(
        &self,
        state: &mut State,
        secret: &Secret,
        seq: u64,
        fresh: Secret,
    ) -> Result<(bool, Vec<Owed>), Resume> {
        if state.ended {
            return Err(Resume::Refused);
        }
        let current = match Self::presented(state, secret) {
            Presented::Wrong => return Err(Resume::Refused),
            Presented::Stale => {
                return Err(Resume::Stolen {
                    settled: self.revoke_locked(state),
                });
            }
            Presented::Current => true,
            Presented::Previous => false,
        };
        if seq >= state.next_seq {
            // The client claims more than was ever sent: not this session's client.
            return Err(Resume::Refused);
        }
        let replaced = std::mem::replace(&mut state.secret, fresh);
        if current {
            // The last RESUMED arrived: its predecessor is superseded, and the secret just
            // used stays good until this RESUMED is known to have arrived.
            Self::confirm(state);
            state.previous = Some((replaced, seq));
        } else {
            // The last RESUMED was lost: the secret it carried reached nobody we know of.
            Self::supersede(state, replaced);
            state.previous = Some((secret.clone(), seq));
        }
        let took_over = match state.attached.take() {
            Some(old) => {
                // It pulls, finds it is no longer attached, and closes (4001).
                old.wake();
                true
            }
            None => {
                self.sessions.reattached(state.bytes);
                false
            }
        };
        Self::forget_upto(state, seq);
        let mut settled = Vec::new();
        while let Some(held) = state.held.pop_front() {
            state.bytes -= held.frame.len();
            let seq = state.next_seq;
            state.next_seq += 1;
            let frame = numbered_deliver(held.frame, seq);
            state.bytes += frame.len();
            state.stream.push_back((seq, Utf8Bytes::from(frame)));
            settled.extend(held.owed);
        }
        Ok((took_over, settled))
    }

    /// The connection `conn` is gone without END: keep the session for the grace period
    /// (rule 6.2). Returns the detachment's generation for the expiry task, or `None`
    /// when `conn` was not attached (taken over), the session is over, or the node's
    /// detached bounds are full (then the session ends now and the caller releases it).
    pub(crate) fn detach(&self, conn: ConnId, now: Instant) -> Detach {
        let mut state = self.state();
        if state.ended {
            return Detach::NotMine;
        }
        if !state.attached.as_ref().is_some_and(|a| a.conn == conn) {
            return Detach::NotMine;
        }
        state.attached = None;
        let sessions = &self.sessions;
        let count = sessions.detached.fetch_add(1, Ordering::AcqRel) + 1;
        let bytes = sessions
            .detached_bytes
            .fetch_add(state.bytes, Ordering::AcqRel)
            + state.bytes;
        if count > self.limits().max_detached || bytes > self.limits().max_detached_bytes {
            sessions.detached.fetch_sub(1, Ordering::AcqRel);
            sessions
                .detached_bytes
                .fetch_sub(state.bytes, Ordering::AcqRel);
            state.ended = true;
            self.over.cancel();
            return Detach::Overflow;
        }
        state.detached_at = Some(now);
        state.generation += 1;
        Detach::Detached(state.generation)
    }

    /// END, re-INIT, or revocation: the session is over; returns what is owed 404.
    pub(crate) fn end(&self) -> Vec<Owed> {
        let mut state = self.state();
        self.end_locked(&mut state)
    }

    fn end_locked(&self, state: &mut State) -> Vec<Owed> {
        if state.ended {
            return Vec::new();
        }
        state.ended = true;
        self.over.cancel();
        if state.attached.is_none() {
            self.sessions.reattached(state.bytes);
        } else if let Some(attached) = &state.attached {
            attached.wake();
        }
        let held: Vec<Owed> = state.held.drain(..).filter_map(|h| h.owed).collect();
        state.bytes = state.stream.iter().map(|(_, f)| f.len()).sum();
        held
    }

    /// Look at a detached session at `now` (rule 6.2 grace, rule 6.8 hold).
    pub(crate) fn expiry(&self, generation: u64, now: Instant) -> Expiry {
        let mut state = self.state();
        if state.ended || state.generation != generation || state.attached.is_some() {
            return Expiry::Stop;
        }
        let Some(since) = state.detached_at else {
            return Expiry::Stop;
        };
        let limits = *self.limits();
        if now >= since + limits.grace {
            let settled = self.end_locked(&mut state);
            return Expiry::Expired { settled };
        }
        let mut refused = Vec::new();
        while state
            .held
            .front()
            .is_some_and(|h| now >= h.since + limits.hold)
        {
            if let Some(held) = state.held.pop_front() {
                state.bytes -= held.frame.len();
                self.sessions
                    .detached_bytes
                    .fetch_sub(held.frame.len(), Ordering::AcqRel);
                refused.extend(held.owed);
            }
        }
        let hold_due = state.held.front().map(|h| h.since + limits.hold);
        let next = [Some(since + limits.grace), hold_due]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(since + limits.grace);
        Expiry::Wait { next, refused }
    }

    /// Whether `conn` is the connection the session is attached to. A connection taken
    /// over (rule 6.3) may still have frames of its own in flight for a moment: its ACK,
    /// END or INIT must not touch the session that is now its successor's.
    pub(crate) fn is_attached_to(&self, conn: ConnId) -> bool {
        self.state()
            .attached
            .as_ref()
            .is_some_and(|a| a.conn == conn)
    }

    /// Whether `conn` has pulled everything in the stream (END's flush is done).
    pub(crate) fn is_drained_for(&self, conn: ConnId) -> bool {
        let state = self.state();
        !state.attached.as_ref().is_some_and(|a| a.conn == conn)
            || state
                .stream
                .back()
                .is_none_or(|(seq, _)| *seq <= state.written)
    }
}

/// What a secret presented by a RESUME is to a session (rule 6.9).
enum Presented {
    Current,
    /// The one the last RESUME used, while its RESUMED is not known to have arrived.
    Previous,
    /// Superseded: whoever holds it is not the client.
    Stale,
    Wrong,
}

/// What [`SessionCell::detach`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detach {
    /// Detached; the expiry task watches this generation.
    Detached(u64),
    /// The node's detached bounds are full: the session ended instead.
    Overflow,
    /// Not this connection's session any more (taken over or ended).
    NotMine,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            grace: Duration::from_secs(120),
            hold: Duration::from_secs(10),
            max_messages: 4,
            max_bytes: 1 << 20,
            max_detached: 10,
            max_detached_bytes: 1 << 20,
            failed_resumes_per_minute: 2,
        }
    }

    fn cell() -> (Arc<SessionCell>, mpsc::Receiver<String>, Secret) {
        let (tx, rx) = mpsc::channel(8);
        let secret = Secret::from_bytes([1; 32]);
        let sessions = Arc::new(Sessions::new(limits()));
        let cell = SessionCell::new(
            Address::from_bits(1),
            secret.clone(),
            ConnId(1),
            tx,
            sessions,
        );
        (cell, rx, secret)
    }

    fn frame(n: u32) -> String {
        format!(r#"{{"type":"DELIVER","msg":{{"n":{n}}}}}"#)
    }

    fn texts(frames: &[Utf8Bytes]) -> Vec<String> {
        frames.iter().map(|f| f.as_str().to_owned()).collect()
    }

    #[test]
    fn an_exported_session_is_the_same_session_on_its_new_node_and_nothing_here() {
        let (cell, _rx, secret) = cell();
        let now = Instant::now();
        for n in 1..=3 {
            assert!(cell.push_deliver(frame(n), Hold::ForReply, now).is_ok());
        }
        assert_eq!(cell.accept_route(1), RouteSeq::Next);
        // The check alone changes nothing.
        assert!(matches!(cell.check(&secret, 1), Resume::Resumed { .. }));
        assert!(matches!(
            cell.check(&Secret::from_bytes([9; 32]), 1),
            Resume::Refused
        ));
        assert!(
            matches!(cell.check(&secret, 4), Resume::Refused),
            "beyond what was sent"
        );
        let fresh = Secret::from_bytes([2; 32]);
        let Ok((exported, settled)) = cell.export(&secret, 1, fresh.clone()) else {
            panic!("exports")
        };
        assert!(settled.is_empty());
        assert_eq!(exported.problem(), None);
        assert_eq!(
            (exported.acked, exported.next_seq, exported.routes_accepted),
            (1, 4, 1)
        );
        assert_eq!(
            exported.stream.iter().map(|f| f.0).collect::<Vec<_>>(),
            [2, 3]
        );
        assert!(
            exported.secret == fresh && exported.previous.as_ref().is_some_and(|p| p.0 == secret)
        );
        // What is left here: nothing to pull, nothing taken, the old connection told.
        assert!(matches!(cell.pull(ConnId(1), 64), Pull::TakenOver));
        assert!(matches!(
            cell.push_deliver(frame(4), Hold::ForReply, now),
            Err(Refusal::Moved)
        ));
        assert_eq!(
            cell.accept_route(2),
            RouteSeq::Duplicate,
            "acted on where it went"
        );
        assert!(cell.over.is_cancelled() && cell.has_moved());

        let (tx, _rx2) = mpsc::channel(8);
        let sessions = Arc::new(Sessions::new(limits()));
        let there = SessionCell::import(exported, ConnId(7), tx, sessions);
        assert!(there.roaming);
        let Pull::Frames(frames) = there.pull(ConnId(7), 64) else {
            panic!()
        };
        assert_eq!(frames.len(), 2, "the replay");
        assert!(there.push_deliver(frame(4), Hold::ForReply, now).is_ok());
        let Pull::Frames(frames) = there.pull(ConnId(7), 64) else {
            panic!()
        };
        assert_eq!(
            texts(&frames),
            [r#"{"type":"DELIVER","seq":4,"msg":{"n":4}}"#]
        );
        assert_eq!(there.accept_route(2), RouteSeq::Next);
        // The secret it was resumed with stays good until the new one is confirmed.
        assert!(matches!(there.check(&secret, 1), Resume::Resumed { .. }));
        assert!(matches!(there.check(&fresh, 1), Resume::Resumed { .. }));
    }

    #[test]
    fn an_inconsistent_state_from_another_node_is_refused() {
        let good = Exported {
            address: Address::from_bits(1),
            secret: Secret::from_bytes([1; 32]),
            previous: None,
            old_secrets: Vec::new(),
            next_seq: 5,
            acked: 2,
            routes_accepted: 0,
            stream: vec![
                (3, Utf8Bytes::from_static("a")),
                (4, Utf8Bytes::from_static("b")),
            ],
        };
        assert_eq!(good.problem(), None);
        let mut bad = good.clone();
        bad.stream.swap(0, 1);
        assert!(bad.problem().is_some());
        let mut bad = good.clone();
        bad.acked = 5;
        assert!(bad.problem().is_some());
        let mut bad = good;
        bad.stream.push((5, Utf8Bytes::from_static("c")));
        assert!(
            bad.problem().is_some(),
            "a frame numbered past what was sent"
        );
    }

    #[test]
    fn delivers_are_numbered_and_pulled_once() {
        let (cell, _rx, _) = cell();
        let now = Instant::now();
        assert!(matches!(
            cell.push_deliver(frame(1), Hold::ForReply, now),
            Ok(Pushed::Now)
        ));
        assert!(matches!(
            cell.push_deliver(frame(2), Hold::ForReply, now),
            Ok(Pushed::Now)
        ));
        let Pull::Frames(frames) = cell.pull(ConnId(1), 64) else {
            panic!()
        };
        assert_eq!(
            texts(&frames),
            [
                r#"{"type":"DELIVER","seq":1,"msg":{"n":1}}"#,
                r#"{"type":"DELIVER","seq":2,"msg":{"n":2}}"#
            ]
        );
        let Pull::Frames(again) = cell.pull(ConnId(1), 64) else {
            panic!()
        };
        assert!(again.is_empty());
    }

    #[test]
    fn resume_replays_what_was_not_acknowledged_and_rotates_the_secret() {
        let (cell, _rx, secret) = cell();
        let now = Instant::now();
        for n in 1..=3 {
            let _ = cell.push_deliver(frame(n), Hold::ForReply, now);
        }
        let _ = cell.pull(ConnId(1), 64);
        assert_eq!(cell.detach(ConnId(1), now), Detach::Detached(1));
        let (tx, _rx2) = mpsc::channel(8);
        let fresh = Secret::from_bytes([2; 32]);
        let Resume::Resumed {
            replayed,
            took_over,
            ..
        } = cell.resume(&secret, 1, ConnId(2), tx.clone(), fresh.clone())
        else {
            panic!("not resumed")
        };
        assert_eq!((replayed, took_over), (2, false));
        let Pull::Frames(frames) = cell.pull(ConnId(2), 64) else {
            panic!()
        };
        assert_eq!(
            texts(&frames)[0],
            r#"{"type":"DELIVER","seq":2,"msg":{"n":2}}"#
        );
        // Acknowledging a frame sent after the RESUMED shows the client has the new
        // secret: the old one works no more, and using it is theft: the session ends.
        cell.ack(ConnId(2), 2).expect("ACK 2");
        assert!(matches!(
            cell.resume(&secret, 3, ConnId(3), tx, fresh),
            Resume::Stolen { .. }
        ));
        assert!(matches!(cell.pull(ConnId(2), 64), Pull::Ended));
    }

    #[test]
    fn a_lost_resumed_leaves_the_secret_used_good_and_the_one_it_carried_stale() {
        let (cell, _rx, secret) = cell();
        let now = Instant::now();
        let _ = cell.push_deliver(frame(1), Hold::ForReply, now);
        assert_eq!(cell.detach(ConnId(1), now), Detach::Detached(1));
        let (tx, _rx2) = mpsc::channel(8);
        let lost = Secret::from_bytes([2; 32]);
        assert!(matches!(
            cell.resume(&secret, 0, ConnId(2), tx.clone(), lost.clone()),
            Resume::Resumed { .. }
        ));
        // The link dies with the RESUMED (and `lost` in it) on the wire, before any ACK:
        // the client still has only `secret`, and it still works (taking over the half-open
        // connection).
        let fresh = Secret::from_bytes([3; 32]);
        assert!(matches!(
            cell.resume(&secret, 0, ConnId(3), tx.clone(), fresh.clone()),
            Resume::Resumed {
                took_over: true,
                ..
            }
        ));
        // `lost` reached someone after all: that someone is not the client.
        assert!(matches!(
            cell.resume(&lost, 0, ConnId(4), tx.clone(), Secret::from_bytes([4; 32])),
            Resume::Stolen { .. }
        ));
        // A RESUME with the new secret shows the last RESUMED arrived, without any ACK:
        // the secret before it is superseded, and using it is theft.
        let (cell, _rx, secret) = cell_with_detached();
        let (tx, _rx2) = mpsc::channel(8);
        let first = Secret::from_bytes([5; 32]);
        let _ = cell.resume(&secret, 0, ConnId(2), tx.clone(), first.clone());
        let _ = cell.resume(
            &first,
            0,
            ConnId(3),
            tx.clone(),
            Secret::from_bytes([6; 32]),
        );
        assert!(matches!(
            cell.resume(&secret, 0, ConnId(4), tx, Secret::from_bytes([7; 32])),
            Resume::Stolen { .. }
        ));
    }

    fn cell_with_detached() -> (Arc<SessionCell>, mpsc::Receiver<String>, Secret) {
        let (cell, rx, secret) = cell();
        let now = Instant::now();
        let _ = cell.push_deliver(frame(1), Hold::ForReply, now);
        assert_eq!(cell.detach(ConnId(1), now), Detach::Detached(1));
        (cell, rx, secret)
    }

    #[test]
    fn a_wrong_secret_or_an_impossible_seq_is_refused() {
        let (cell, _rx, secret) = cell();
        let (tx, _rx2) = mpsc::channel(8);
        let wrong = Secret::from_bytes([9; 32]);
        assert!(matches!(
            cell.resume(&wrong, 0, ConnId(2), tx.clone(), wrong.clone()),
            Resume::Refused
        ));
        assert!(matches!(
            cell.resume(&secret, 5, ConnId(2), tx, wrong),
            Resume::Refused
        ));
    }

    #[test]
    fn takeover_stops_the_old_connection_at_once() {
        let (cell, _rx, secret) = cell();
        let (tx, _rx2) = mpsc::channel(8);
        let Resume::Resumed { took_over, .. } =
            cell.resume(&secret, 0, ConnId(2), tx, Secret::from_bytes([3; 32]))
        else {
            panic!()
        };
        assert!(took_over);
        let _ = cell.push_deliver(frame(1), Hold::ForReply, Instant::now());
        assert!(matches!(cell.pull(ConnId(1), 64), Pull::TakenOver));
        assert!(matches!(cell.pull(ConnId(2), 64), Pull::Frames(f) if f.len() == 1));
        assert_eq!(cell.detach(ConnId(1), Instant::now()), Detach::NotMine);
    }

    #[test]
    fn held_delivers_are_refused_when_the_hold_passes_and_delivered_on_resume() {
        let (cell, _rx, secret) = cell();
        let t0 = Instant::now();
        let Detach::Detached(generation) = cell.detach(ConnId(1), t0) else {
            panic!()
        };
        let Ok(Pushed::Held(Some(first))) = cell.push_deliver(frame(1), Hold::ForReply, t0) else {
            panic!()
        };
        let later = t0 + Duration::from_secs(9);
        let Ok(Pushed::Held(Some(second))) = cell.push_deliver(frame(2), Hold::ForReply, later)
        else {
            panic!()
        };
        assert!(matches!(
            cell.push_deliver(frame(3), Hold::Never, later),
            Err(Refusal::Away)
        ));
        let Expiry::Wait { refused, next } = cell.expiry(generation, t0 + Duration::from_secs(10))
        else {
            panic!()
        };
        assert_eq!(refused.len(), 1);
        assert_eq!(next, later + Duration::from_secs(10));
        for owed in refused {
            owed.settle(Verdict::Away, &|_| None);
        }
        assert_eq!(first.get(), Some(Verdict::Away));
        let (tx, _rx2) = mpsc::channel(8);
        let Resume::Resumed {
            settled, replayed, ..
        } = cell.resume(&secret, 0, ConnId(2), tx, Secret::from_bytes([4; 32]))
        else {
            panic!()
        };
        assert_eq!(replayed, 1);
        for owed in settled {
            owed.settle(Verdict::Delivered, &|_| None);
        }
        assert_eq!(second.get(), Some(Verdict::Delivered));
        let Pull::Frames(frames) = cell.pull(ConnId(2), 64) else {
            panic!()
        };
        assert_eq!(
            texts(&frames),
            [r#"{"type":"DELIVER","seq":1,"msg":{"n":2}}"#]
        );
    }

    #[test]
    fn grace_expiry_ends_the_session() {
        let (cell, _rx, secret) = cell();
        let t0 = Instant::now();
        let Detach::Detached(generation) = cell.detach(ConnId(1), t0) else {
            panic!()
        };
        assert!(matches!(
            cell.expiry(generation, t0 + Duration::from_secs(120)),
            Expiry::Expired { .. }
        ));
        let (tx, _rx2) = mpsc::channel(8);
        assert!(matches!(
            cell.resume(&secret, 0, ConnId(2), tx, secret.clone()),
            Resume::Refused
        ));
        assert_eq!(cell.sessions.detached(), 0);
    }

    #[test]
    fn bounds_refuse_with_full() {
        let (cell, _rx, _) = cell();
        for n in 0..4 {
            assert!(
                cell.push_deliver(frame(n), Hold::ForReply, Instant::now())
                    .is_ok()
            );
        }
        assert!(matches!(
            cell.push_deliver(frame(9), Hold::ForReply, Instant::now()),
            Err(Refusal::Full)
        ));
        cell.ack(ConnId(1), 2).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            cell.push_deliver(frame(9), Hold::ForReply, Instant::now())
                .is_ok()
        );
        assert!(cell.ack(ConnId(1), 99).is_err());
    }

    /// Found by the `session_stream` fuzz target: an ACK reaching a detached session
    /// (from a connection taken over, say) forgot frames without the node's count of
    /// detached bytes knowing, which then never came back to zero.
    #[test]
    fn only_the_attached_connection_acknowledges() {
        let (cell, _rx, _) = cell();
        for n in 0..3 {
            assert!(
                cell.push_deliver(frame(n), Hold::ForReply, Instant::now())
                    .is_ok()
            );
        }
        assert!(matches!(
            cell.detach(ConnId(1), Instant::now()),
            Detach::Detached(_)
        ));
        assert!(cell.sessions.detached_bytes() > 0);
        assert_eq!(cell.ack(ConnId(1), 3), Ok(()), "ignored, not refused");
        assert_eq!(cell.ack(ConnId(7), 3), Ok(()));
        let _ = cell.end();
        assert_eq!(
            (cell.sessions.detached(), cell.sessions.detached_bytes()),
            (0, 0)
        );
    }

    #[test]
    fn routes_are_acted_on_once_in_order() {
        let (cell, _rx, _) = cell();
        assert_eq!(cell.accept_route(1), RouteSeq::Next);
        assert_eq!(cell.accept_route(1), RouteSeq::Duplicate);
        assert_eq!(cell.accept_route(3), RouteSeq::Gap { expected: 2 });
        assert_eq!(cell.accept_route(2), RouteSeq::Next);
    }

    #[test]
    fn failed_resumes_are_limited_per_source() {
        let sessions = Sessions::new(limits());
        let ip: IpAddr = [127, 0, 0, 1].into();
        let now = Instant::now();
        assert!(sessions.may_try(ip, now));
        sessions.failed(ip, now);
        sessions.failed(ip, now);
        assert!(!sessions.may_try(ip, now));
        assert!(sessions.may_try(ip, now + FAILURE_WINDOW));
    }
}
