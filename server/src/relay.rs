//! The relay's rules (docs/protocol.md sections 3 and 6), with no sockets and no clock of
//! their own: a connection task feeds each inbound frame in, with the time, and gets back
//! an [`Outcome`] — what to answer and what to count. Frames for *other* connections go
//! through the [`Directory`], or, for an address another node of a cluster holds, out as
//! an [`Outcome::Forward`] whose verdict [`Relay::verdict`] judges when it comes back.
//!
//! A connection that negotiated version 2 (`compendium.v2`) has a [`SessionCell`]
//! (`session.rs`) once it has sent INIT or RESUME: its DELIVERs and the ERRs that answer
//! its numbered ROUTEs go into that session's stream, not straight to the socket.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use compendium_messages::{Address, Direction, Message, SUBPROTOCOL_V2, Secret, codes};
use tokio::sync::mpsc;

use crate::addressing::{Addressing, Home};
use crate::directory::{ConnId, Delivery, Directory, Mailbox};
use crate::rate::TokenBucket;
use crate::remote::Pending;
use crate::remote::{Claim, Claimed, Forward, Verdict};
use crate::session::{self, Detach, Hold, Owed, Resume, RouteSeq, SessionCell, Sessions};

/// The exact 404 text of the first implementation, which clients match on (rule 3.6).
pub(crate) const NOT_FOUND_TEXT: &str = "Socket address not found";

/// The one answer to every RESUME that does not resume (rule 6.3): the same whatever the
/// reason, so that it tells a guesser nothing.
pub(crate) const REFUSED_TEXT: &str = "this session cannot be resumed (it ended, expired, or \
     never existed, or the secret is wrong); send INIT for a new address and give it to \
     your peer again";

/// Failed RESUMEs one connection may make before it is closed (rule 6.9).
const FAILED_RESUMES_PER_CONNECTION: u8 = 3;

/// One inbound data frame.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Input<'a> {
    Text(&'a str),
    Binary,
}

/// What handling one frame came to.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// INIT: answer INITRESP with `address` (the connection's previous one, if any, is
    /// retired already); on a version 2 connection with the session's secret and grace.
    Assigned {
        address: Address,
        session: Option<(Secret, u32)>,
    },
    /// ROUTE: the DELIVER is queued for the target; nothing is sent back (rule 3.3).
    Routed,
    /// ROUTE refused because the target's queue is full: answer ERR 503 (rule 3.8).
    TargetFull,
    /// ROUTE to an address another node holds: the connection forwards it over the
    /// cluster link, and answers in request order once [`Relay::verdict`] has judged what
    /// came back.
    Forward(Forward),
    /// ROUTE from a version 1 sender to a detached session: held (rule 6.8); the verdict
    /// comes later, and the connection answers in request order as for a forward.
    Held(Pending),
    /// RESUME of a session this node does not hold: the connection asks the cluster for
    /// it, then [`Relay::claimed`] says what to answer (docs/cluster.md).
    Claim(Claim),
    /// Refused: answer ERR `code` with `message`.
    Error { code: u16, message: String },
    /// Version 2: the answer went into the session's stream (an ERR naming its ROUTE,
    /// rule 6.6) or none is due (an ACK, a resent ROUTE); `code` is the ERR's, to count.
    Streamed { code: Option<u16> },
    /// RESUME succeeded (rule 6.3): answer RESUMED; the replay follows from the stream.
    Resumed {
        address: Address,
        secret: Secret,
        grace: u32,
        routes_accepted: u64,
        replayed: usize,
        took_over: bool,
    },
    /// RESUME refused (rule 6.3); `close` when the connection has failed too often
    /// (rule 6.9) and is to be closed after the answer.
    Refused { close: bool, limited: bool },
    /// END (rule 6.7): the session is over; flush the stream and close with 1000.
    Ended,
}

impl PartialEq for Outcome {
    /// For tests: outcomes are equal when their replies are.
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

impl Outcome {
    /// The frame to send back to the connection that sent the input, if any.
    pub(crate) fn reply(&self) -> Option<Message> {
        match self {
            Self::Assigned { address, session } => {
                let mut message = Message::init_resp(*address);
                if let (Message::Initresp { secret, grace, .. }, Some((s, g))) =
                    (&mut message, session)
                {
                    *secret = Some(s.clone());
                    *grace = Some(*g);
                }
                Some(message)
            }
            Self::Routed
            | Self::Forward(_)
            | Self::Held(_)
            | Self::Claim(_)
            | Self::Streamed { .. }
            | Self::Ended => None,
            Self::TargetFull => Some(Message::err(codes::UNAVAILABLE, TARGET_FULL_TEXT)),
            Self::Error { code, message } => Some(Message::err(*code, message.clone())),
            Self::Resumed {
                address,
                secret,
                grace,
                routes_accepted,
                ..
            } => Some(Message::new_resumed(
                *address,
                secret.clone(),
                *grace,
                *routes_accepted,
            )),
            Self::Refused { limited: true, .. } => Some(Message::err(
                codes::RATE_LIMITED,
                "too many failed RESUMEs from your network address; wait a minute before \
                 trying again"
                    .to_owned(),
            )),
            Self::Refused { .. } => Some(Message::err(codes::SESSION_GONE, REFUSED_TEXT)),
        }
    }

    fn error(code: u16, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }
}

const TARGET_FULL_TEXT: &str =
    "the target is not reading fast enough and its queue is full; this message was not delivered";

/// The rules, shared by every connection of one server.
pub(crate) struct Relay<M> {
    directory: Arc<Directory<M>>,
    max_msgs_per_sec: Option<u32>,
    addressing: Arc<dyn Addressing>,
    /// How long a forwarded ROUTE waits for its verdict, for the 503's text.
    cluster_timeout: std::time::Duration,
    /// Version 2 sessions; `None` when `--resume-grace 0` turned them off.
    sessions: Option<Arc<Sessions>>,
}

/// What a version 2 connection has beyond a version 1 one.
pub(crate) struct V2 {
    /// The connection's outbox, to wake it when its session has frames.
    wake: mpsc::Sender<String>,
    /// Its session, once it has sent INIT or RESUME.
    session: Option<Arc<SessionCell>>,
    peer: IpAddr,
    failed_resumes: u8,
}

/// One connection's state as the rules see it. Dropping it releases the connection's
/// address, however the connection ended (rule 3.10); a version 2 connection's session
/// is detached first by [`Relay::close`] (rule 6.2).
pub(crate) struct Session<M: Mailbox> {
    conn: ConnId,
    mailbox: M,
    address: Option<Address>,
    bucket: Option<TokenBucket>,
    directory: Arc<Directory<M>>,
    v2: Option<Box<V2>>,
}

impl<M: Mailbox> Drop for Session<M> {
    fn drop(&mut self) {
        if let Some(address) = self.address.take() {
            self.directory.release(self.conn, address);
        }
        // A session not detached by `Relay::close` ends with its connection.
        if let Some(cell) = self.v2.as_mut().and_then(|v2| v2.session.take()) {
            for owed in cell.end() {
                owed.settle(Verdict::NotFound, &|_| None);
            }
            self.directory.release(cell.claimed_by, cell.address);
        }
    }
}

impl<M: Mailbox> Session<M> {
    /// The address this connection holds, if it has sent INIT.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn address(&self) -> Option<Address> {
        self.address
            .or_else(|| self.v2.as_ref()?.session.as_ref().map(|c| c.address))
    }

    /// The version 2 session, if this connection has one.
    pub(crate) fn cell(&self) -> Option<&Arc<SessionCell>> {
        self.v2.as_ref()?.session.as_ref()
    }
}

/// How a version 2 connection ended, for [`Relay::close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaving {
    /// Without END: keep the session for the grace period.
    Detach,
    /// After END, takeover or revocation: the session is not this connection's to keep.
    Gone,
}

impl<M: Mailbox + Clone> Relay<M> {
    pub(crate) fn new(
        directory: Arc<Directory<M>>,
        max_msgs_per_sec: Option<u32>,
        addressing: Arc<dyn Addressing>,
        cluster_timeout: std::time::Duration,
        sessions: Option<Arc<Sessions>>,
    ) -> Self {
        Self {
            directory,
            max_msgs_per_sec,
            addressing,
            cluster_timeout,
            sessions,
        }
    }

    pub(crate) fn directory(&self) -> &Directory<M> {
        &self.directory
    }

    /// Version 2 sessions, if enabled.
    pub(crate) fn sessions(&self) -> Option<&Arc<Sessions>> {
        self.sessions.as_ref()
    }

    /// State for a new connection whose frames go to `mailbox`. `v2`: the connection
    /// negotiated version 2; its outbox (for wake-ups) and its peer's address.
    pub(crate) fn open(
        &self,
        conn: ConnId,
        mailbox: M,
        now: Instant,
        v2: Option<(mpsc::Sender<String>, IpAddr)>,
    ) -> Session<M> {
        Session {
            conn,
            mailbox,
            address: None,
            bucket: self
                .max_msgs_per_sec
                .map(|rate| TokenBucket::new(rate, now)),
            directory: Arc::clone(&self.directory),
            v2: v2.filter(|_| self.sessions.is_some()).map(|(wake, peer)| {
                Box::new(V2 {
                    wake,
                    session: None,
                    peer,
                    failed_resumes: 0,
                })
            }),
        }
    }

    /// Apply the rules to one inbound frame.
    pub(crate) fn handle(
        &self,
        session: &mut Session<M>,
        input: Input<'_>,
        now: Instant,
    ) -> Outcome {
        if let Some(bucket) = &mut session.bucket
            && !bucket.try_take(now)
        {
            let text = format!(
                "rate limit exceeded: at most {} messages per second; this one was not acted on",
                self.max_msgs_per_sec.unwrap_or_default()
            );
            // A numbered ROUTE's 429 names it in the stream, like any answer to it.
            if let (Some(cell), Input::Text(text_in)) = (session.cell(), input)
                && let Ok(Message::Route { seq: Some(seq), .. }) = Message::parse(text_in)
            {
                return match cell.accept_route(seq) {
                    RouteSeq::Next => {
                        cell.push_err(codes::RATE_LIMITED, &text, seq);
                        Outcome::Streamed {
                            code: Some(codes::RATE_LIMITED),
                        }
                    }
                    RouteSeq::Duplicate => Outcome::Streamed { code: None },
                    RouteSeq::Gap { .. } => Outcome::error(codes::RATE_LIMITED, text),
                };
            }
            return Outcome::error(codes::RATE_LIMITED, text);
        }
        let text = match input {
            Input::Text(text) => text,
            Input::Binary => {
                return Outcome::error(
                    codes::INVALID_MESSAGE,
                    "binary frames are not supported: send each message as one JSON text frame",
                );
            }
        };
        let message = match Message::parse(text) {
            Err(err) => return Outcome::error(codes::INVALID_MESSAGE, err.to_string()),
            Ok(message) => message,
        };
        if session.v2.is_some() {
            return self.handle_v2(session, message, now);
        }
        match message {
            Message::Init { .. } => self.init(session),
            Message::Route { seq: Some(_), .. } => Outcome::error(
                codes::INVALID_MESSAGE,
                not_negotiated("/seq: the member seq"),
            ),
            Message::Route {
                ephe_wss_addr, msg, ..
            } => self.route(ephe_wss_addr, msg, Hold::ForReply, None, now),
            Message::Resume { .. } | Message::Ack { .. } | Message::End { .. } => Outcome::error(
                codes::INVALID_MESSAGE,
                not_negotiated(&format!("/type: {}", message.type_name())),
            ),
            other => Self::other(&other),
        }
    }

    /// Deliver `msg` to `to`: the same for both versions, but for where refusals go.
    fn route(
        &self,
        to: Address,
        msg: compendium_messages::Payload,
        hold: Hold,
        route: Option<u64>,
        now: Instant,
    ) -> Outcome {
        if let Home::Node(node) = self.addressing.home(to) {
            // (Also when the target is a session that moved to this very node: see
            // `Directory::deliver`.)
            return Outcome::Forward(Forward {
                node: Some(node),
                address: to,
                msg,
                route,
            });
        }
        match self
            .directory
            .deliver(to, msg.deliver_frame(), hold, now, false)
        {
            Delivery::Queued | Delivery::Held(None) => Outcome::Routed,
            Delivery::Held(Some(slot)) => Outcome::Held(Pending::held(slot)),
            Delivery::NotFound => Outcome::error(codes::NOT_FOUND, NOT_FOUND_TEXT),
            Delivery::Full => Outcome::TargetFull,
            Delivery::Away => self.verdict(Verdict::Away),
            // Drawn here, it moved: straight to its subject.
            Delivery::Moved => Outcome::Forward(Forward {
                node: None,
                address: to,
                msg,
                route,
            }),
        }
    }

    /// Whatever else the schema defines: a server's message (rule 2.4), or a client's
    /// that these rules do not implement (rule 3.12).
    fn other(other: &Message) -> Outcome {
        match other.direction() {
            Direction::ServerToClient => Outcome::error(
                codes::INVALID_MESSAGE,
                format!(
                    "/type: {} is sent by servers, not clients; a client sends INIT or ROUTE",
                    other.type_name()
                ),
            ),
            Direction::ClientToServer => Outcome::error(
                codes::NOT_IMPLEMENTED,
                format!(
                    "/type: this relay does not implement {} messages; nothing was done",
                    other.type_name()
                ),
            ),
        }
    }

    /// The rules of a version 2 connection (section 6).
    fn handle_v2(&self, session: &mut Session<M>, message: Message, now: Instant) -> Outcome {
        match message {
            Message::Init { .. } => self.init_v2(session),
            Message::Route {
                ephe_wss_addr,
                msg,
                seq,
                ..
            } => {
                let Some(cell) = session.cell().cloned() else {
                    return Outcome::error(
                        codes::INVALID_MESSAGE,
                        "a version 2 connection sends INIT or RESUME before its first ROUTE",
                    );
                };
                let Some(seq) = seq else {
                    return Outcome::error(
                        codes::INVALID_MESSAGE,
                        "/seq: a ROUTE on a version 2 connection needs its number (seq); nothing was done",
                    );
                };
                match cell.accept_route(seq) {
                    RouteSeq::Duplicate => return Outcome::Streamed { code: None },
                    RouteSeq::Gap { expected } => {
                        return Outcome::error(
                            codes::INVALID_MESSAGE,
                            format!(
                                "/seq: {seq} skips numbers; the next ROUTE is number {expected}"
                            ),
                        );
                    }
                    RouteSeq::Next => {}
                }
                let hold = Hold::ForStream {
                    session: Arc::downgrade(&cell),
                    route: seq,
                };
                let outcome = self.route(ephe_wss_addr, msg, hold, Some(seq), now);
                self.to_stream(&cell, seq, outcome)
            }
            Message::Ack { seq, .. } => match session.cell() {
                None => Outcome::error(
                    codes::INVALID_MESSAGE,
                    "ACK before INIT or RESUME: there is nothing to acknowledge",
                ),
                Some(cell) => match cell.ack(session.conn, seq) {
                    Ok(()) => Outcome::Streamed { code: None },
                    Err(text) => Outcome::error(codes::INVALID_MESSAGE, text),
                },
            },
            Message::Resume {
                ephe_wss_addr,
                secret,
                seq,
                ..
            } => self.resume(session, ephe_wss_addr, &secret, seq, now),
            Message::End { .. } => {
                if let Some(cell) = session.cell() {
                    self.end_if_mine(cell, session.conn);
                }
                Outcome::Ended
            }
            other => Self::other(&other),
        }
    }

    /// A ROUTE's refusal, for a version 2 sender: into its stream, naming the ROUTE.
    pub(crate) fn to_stream(&self, cell: &SessionCell, route: u64, outcome: Outcome) -> Outcome {
        match outcome.reply() {
            Some(Message::Err {
                err_code, err_msg, ..
            }) => {
                cell.push_err(err_code, &err_msg, route);
                Outcome::Streamed {
                    code: Some(err_code),
                }
            }
            _ => outcome,
        }
    }

    /// The ERR a held or forwarded ROUTE gets for `verdict`, if any.
    pub(crate) fn refusal(&self, verdict: Verdict) -> Option<(u16, String)> {
        match self.verdict(verdict).reply() {
            Some(Message::Err {
                err_code, err_msg, ..
            }) => Some((err_code, err_msg)),
            _ => None,
        }
    }

    /// Settle what is owed for held ROUTEs.
    pub(crate) fn settle(&self, owed: Vec<Owed>, verdict: Verdict) {
        for owed in owed {
            owed.settle(verdict, &|v| self.refusal(v));
        }
    }

    /// End `cell` now (END, re-INIT, revocation): its address is released at once.
    fn end(&self, cell: &SessionCell) {
        self.settle(cell.end(), Verdict::NotFound);
        self.directory.release(cell.claimed_by, cell.address);
    }

    /// End `cell` if `conn` still holds it; a connection taken over ends nothing.
    fn end_if_mine(&self, cell: &SessionCell, conn: ConnId) {
        if cell.is_attached_to(conn) {
            self.end(cell);
        }
    }

    fn grace_secs(&self) -> u32 {
        self.sessions.as_ref().map_or(0, |s| {
            u32::try_from(s.limits.grace.as_secs()).unwrap_or(u32::MAX)
        })
    }

    fn init_v2(&self, session: &mut Session<M>) -> Outcome {
        let (Some(sessions), Some(v2)) = (&self.sessions, session.v2.as_mut()) else {
            return self.init(session);
        };
        if let Some(old) = v2.session.take() {
            self.end_if_mine(&old, session.conn);
        }
        let secret = match session::draw_secret() {
            Ok(secret) => secret,
            Err(reason) => return random_failed(&reason),
        };
        let address = loop {
            let candidate = match self.addressing.draw() {
                Ok(candidate) => candidate,
                Err(reason) => return random_failed(&reason),
            };
            let cell = SessionCell::new(
                candidate,
                secret.clone(),
                session.conn,
                v2.wake.clone(),
                Arc::clone(sessions),
            );
            if self
                .directory
                .claim_session(candidate, session.conn, Arc::clone(&cell))
            {
                v2.session = Some(cell);
                break candidate;
            }
        };
        Outcome::Assigned {
            address,
            session: Some((secret, self.grace_secs())),
        }
    }

    fn resume(
        &self,
        session: &mut Session<M>,
        address: Address,
        secret: &Secret,
        seq: u64,
        now: Instant,
    ) -> Outcome {
        let (Some(sessions), Some(v2)) = (&self.sessions, session.v2.as_mut()) else {
            return Outcome::Refused {
                close: false,
                limited: false,
            };
        };
        if !sessions.may_try(v2.peer, now) {
            return Outcome::Refused {
                close: false,
                limited: true,
            };
        }
        let fresh = match session::draw_secret() {
            Ok(fresh) => fresh,
            Err(reason) => return random_failed(&reason),
        };
        let result = match self.directory.session(address) {
            Some(cell) => {
                let result = cell.resume(secret, seq, session.conn, v2.wake.clone(), fresh);
                Some((cell, result))
            }
            None => {
                // Another node holds it, or did: a cluster claims it (docs/cluster.md).
                let home = match self.addressing.home(address) {
                    Home::Node(node) => Some(Some(node)),
                    Home::Here if self.directory.has_moved(address) => Some(None),
                    Home::Here => None,
                };
                if let Some(home) = home {
                    return Outcome::Claim(Claim {
                        address,
                        secret: secret.clone(),
                        seq,
                        home,
                    });
                }
                None
            }
        };
        match result {
            Some((
                cell,
                Resume::Resumed {
                    secret,
                    routes_accepted,
                    replayed,
                    took_over,
                    settled,
                },
            )) => {
                self.settle(settled, Verdict::Delivered);
                let resumed = (secret, routes_accepted, replayed, took_over);
                self.resumed(v2, session.conn, cell, resumed)
            }
            Some((cell, Resume::Stolen { settled })) => {
                tracing::warn!(
                    %address,
                    "a superseded resume secret was used: the session is revoked (docs/security.md)"
                );
                self.settle(settled, Verdict::NotFound);
                self.directory.release(cell.claimed_by, cell.address);
                self.failed(session, now)
            }
            Some((_, Resume::Refused)) | None => self.failed(session, now),
        }
    }

    /// What to answer a RESUME whose session was claimed from another node (the
    /// [`Outcome::Claim`] of [`Relay::handle`]): RESUMED once it is installed here, as
    /// for a local resume; 410 when no node has it; 503 when its holder could not be asked.
    pub(crate) fn claimed(
        &self,
        session: &mut Session<M>,
        claimed: Claimed,
        now: Instant,
    ) -> Outcome {
        let exported = match claimed {
            Claimed::Moved(exported) => exported,
            Claimed::Refused => return self.failed(session, now),
            Claimed::Unavailable => {
                return Outcome::error(
                    codes::UNAVAILABLE,
                    "the relay node holding this session did not answer in time; send the \
                     same RESUME again",
                );
            }
        };
        let (Some(sessions), Some(v2)) = (&self.sessions, session.v2.as_mut()) else {
            return self.failed(session, now);
        };
        let address = exported.address;
        let (secret, routes_accepted, replayed) = (
            exported.secret.clone(),
            exported.routes_accepted,
            exported.stream.len(),
        );
        let cell = SessionCell::import(
            exported,
            session.conn,
            v2.wake.clone(),
            Arc::clone(sessions),
        );
        if !self
            .directory
            .install_session(address, session.conn, Arc::clone(&cell))
        {
            // Live here already: a second RESUME on this node won the race for it.
            return Outcome::error(
                codes::UNAVAILABLE,
                "this session is being resumed by another connection; send the same RESUME again",
            );
        }
        self.resumed(
            v2,
            session.conn,
            cell,
            (secret, routes_accepted, replayed, false),
        )
    }

    /// The connection has `cell` now (resumed, here or from another node): the session it
    /// had before, if another, ends; the answer is RESUMED with `(secret, routes accepted,
    /// replayed, taken over)`.
    fn resumed(
        &self,
        v2: &mut V2,
        conn: ConnId,
        cell: Arc<SessionCell>,
        (secret, routes_accepted, replayed, took_over): (Secret, u64, usize, bool),
    ) -> Outcome {
        let address = cell.address;
        if let Some(old) = v2.session.replace(Arc::clone(&cell))
            && !Arc::ptr_eq(&old, &cell)
        {
            self.end_if_mine(&old, conn);
        }
        Outcome::Resumed {
            address,
            secret,
            grace: self.grace_secs(),
            routes_accepted,
            replayed,
            took_over,
        }
    }

    fn failed(&self, session: &mut Session<M>, now: Instant) -> Outcome {
        let Some(v2) = session.v2.as_mut() else {
            return Outcome::Refused {
                close: false,
                limited: false,
            };
        };
        if let Some(sessions) = &self.sessions {
            sessions.failed(v2.peer, now);
        }
        v2.failed_resumes = v2.failed_resumes.saturating_add(1);
        Outcome::Refused {
            close: v2.failed_resumes >= FAILED_RESUMES_PER_CONNECTION,
            limited: false,
        }
    }

    /// The connection of `session` is ending. Returns the session to watch for expiry,
    /// with its detachment's generation, when it stays resumable (rule 6.2).
    pub(crate) fn close(
        &self,
        session: &mut Session<M>,
        leaving: Leaving,
        now: Instant,
    ) -> Option<(Arc<SessionCell>, u64)> {
        let cell = session.v2.as_mut()?.session.take()?;
        if leaving == Leaving::Gone {
            return None;
        }
        match cell.detach(session.conn, now) {
            Detach::Detached(generation) => Some((cell, generation)),
            Detach::Overflow => {
                tracing::warn!(
                    address = %cell.address,
                    "session ended at disconnect: the node's bound on detached sessions is reached"
                );
                self.end(&cell);
                None
            }
            Detach::NotMine => None,
        }
    }

    /// What to answer for a forwarded ROUTE, given what came back from the cluster: the
    /// same answers as for a local target (rules 3.3, 3.6, 3.8), plus 503 when the cluster
    /// could not be asked.
    pub(crate) fn verdict(&self, verdict: Verdict) -> Outcome {
        match verdict {
            Verdict::Delivered => Outcome::Routed,
            // (`Moved` and `Held` never reach a connection: the cluster link acts on them.)
            Verdict::NotFound | Verdict::Moved | Verdict::Held => {
                Outcome::error(codes::NOT_FOUND, NOT_FOUND_TEXT)
            }
            Verdict::Full => Outcome::TargetFull,
            Verdict::Unreachable => Outcome::error(
                codes::UNAVAILABLE,
                "the relay cluster is unreachable from this node; this message was not \
                 delivered, try again or reconnect",
            ),
            Verdict::Absent => Outcome::error(
                codes::UNAVAILABLE,
                "the relay node holding the target is not answering right now (it may be \
                 reconnecting to the cluster); this message was not delivered, try again",
            ),
            Verdict::TimedOut => Outcome::error(
                codes::UNAVAILABLE,
                format!(
                    "the relay node holding the target did not answer within {} ms; the \
                     message may not have been delivered",
                    self.cluster_timeout.as_millis()
                ),
            ),
            Verdict::Silent => Outcome::error(
                codes::UNAVAILABLE,
                "the relay node holding the target stopped answering (its heartbeats \
                 stopped: it died or froze) before it confirmed this message; the message \
                 may not have been delivered",
            ),
            Verdict::Refused => Outcome::error(
                codes::UNAVAILABLE,
                "the relay node holding the target refused the forwarded message; it was \
                 not delivered",
            ),
            Verdict::Away => Outcome::error(
                codes::UNAVAILABLE,
                format!(
                    "the target lost its connection and did not resume within {} s; this \
                     message was not delivered",
                    self.sessions
                        .as_ref()
                        .map_or(0, |s| s.limits.hold.as_secs())
                ),
            ),
        }
    }

    fn init(&self, session: &mut Session<M>) -> Outcome {
        let address = loop {
            let candidate = match self.addressing.draw() {
                Ok(candidate) => candidate,
                Err(reason) => return random_failed(&reason),
            };
            if self
                .directory
                .claim(candidate, session.conn, session.mailbox.clone())
            {
                break candidate;
            }
        };
        if let Some(old) = session.address.replace(address) {
            self.directory.release(session.conn, old);
        }
        Outcome::Assigned {
            address,
            session: None,
        }
    }
}

fn random_failed(reason: &str) -> Outcome {
    tracing::error!(%reason, "the OS random source failed; cannot draw an address or secret");
    Outcome::error(
        codes::UNAVAILABLE,
        "the relay cannot draw a random address right now; try again",
    )
}

/// The 400 text for something of version 2 on a version 1 connection.
fn not_negotiated(what: &str) -> String {
    format!(
        "{what} belongs to protocol version 2, which this connection did not negotiate \
         (offer the WebSocket subprotocol {SUBPROTOCOL_V2})"
    )
}

#[cfg(test)]
mod tests {
    //! The rules, driven without sockets: each test names the protocol rule it checks.
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;
    use crate::directory::Refusal;

    /// A mailbox that records frames, with an optional bound.
    #[derive(Clone, Default)]
    struct Recorder {
        frames: Arc<Mutex<Vec<String>>>,
        bound: Option<usize>,
        gone: Arc<AtomicBool>,
    }

    impl Recorder {
        fn frames(&self) -> Vec<String> {
            self.frames.lock().unwrap().clone()
        }
    }

    impl Mailbox for Recorder {
        fn try_push(&self, frame: String) -> Result<(), Refusal> {
            if self.gone.load(Ordering::Relaxed) {
                return Err(Refusal::Gone);
            }
            let mut frames = self.frames.lock().unwrap();
            if self.bound.is_some_and(|b| frames.len() >= b) {
                return Err(Refusal::Full);
            }
            frames.push(frame);
            Ok(())
        }
    }

    /// Addresses 1, 2, 3, ...: all here.
    #[derive(Default)]
    struct Counting(AtomicU64);

    impl Addressing for Counting {
        fn draw(&self) -> Result<Address, String> {
            Ok(Address::from_bits(u128::from(
                self.0.fetch_add(1, Ordering::Relaxed) + 1,
            )))
        }

        fn home(&self, _: Address) -> Home {
            Home::Here
        }
    }

    fn relay(rate: Option<u32>) -> Relay<Recorder> {
        Relay::new(
            Arc::new(Directory::new()),
            rate,
            Arc::new(Counting::default()),
            std::time::Duration::from_secs(2),
            None,
        )
    }

    fn init(relay: &Relay<Recorder>, s: &mut Session<Recorder>) -> Address {
        match relay.handle(s, Input::Text(r#"{"type":"INIT"}"#), Instant::now()) {
            Outcome::Assigned { address, .. } => address,
            other => panic!("{other:?}"),
        }
    }

    fn route(to: Address, msg: &str) -> String {
        format!(r#"{{"type":"ROUTE","EpheWssAddr":"{to}","msg":{msg}}}"#)
    }

    #[test]
    fn rule_3_1_init_assigns_a_live_address() {
        let relay = relay(None);
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now(), None);
        let address = init(&relay, &mut a);
        assert_eq!(a.address(), Some(address));
        assert_eq!(relay.directory().live(), 1);
    }

    #[test]
    fn rule_3_2_reinit_retires_the_old_address() {
        let relay = relay(None);
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now(), None);
        let old = init(&relay, &mut a);
        let new = init(&relay, &mut a);
        assert_ne!(old, new);
        assert_eq!(relay.directory().live(), 1);
        let outcome = relay.handle(&mut a, Input::Text(&route(old, "{}")), Instant::now());
        assert_eq!(outcome, Outcome::error(404, NOT_FOUND_TEXT));
    }

    #[test]
    fn rule_3_3_and_3_4_route_delivers_the_exact_bytes_and_answers_nothing() {
        let relay = relay(None);
        let b_box = Recorder::default();
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now(), None);
        let mut b = relay.open(ConnId(2), b_box.clone(), Instant::now(), None);
        let b_addr = init(&relay, &mut b);
        let msg = r#"{ "z":1, "a" : "\u00e9" }"#;
        let outcome = relay.handle(&mut a, Input::Text(&route(b_addr, msg)), Instant::now());
        assert_eq!(outcome, Outcome::Routed);
        assert_eq!(outcome.reply(), None);
        assert_eq!(
            b_box.frames(),
            [format!(r#"{{"type":"DELIVER","msg":{msg}}}"#)]
        );
    }

    #[test]
    fn rule_3_6_unknown_address_is_404() {
        let relay = relay(None);
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now(), None);
        let outcome = relay.handle(
            &mut a,
            Input::Text(&route(Address::from_bits(7), "{}")),
            Instant::now(),
        );
        assert_eq!(outcome, Outcome::error(404, NOT_FOUND_TEXT));
    }

    #[test]
    fn rule_3_7_invalid_input_and_server_types_are_400() {
        let relay = relay(None);
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now(), None);
        for (input, expected) in [
            (
                Input::Text("nope"),
                "invalid JSON: expected ident at line 1 column 2",
            ),
            (
                Input::Text(r#"{"type":"DELIVER","msg":{}}"#),
                "/type: DELIVER is sent by servers, not clients; a client sends INIT or ROUTE",
            ),
            (
                Input::Binary,
                "binary frames are not supported: send each message as one JSON text frame",
            ),
        ] {
            assert_eq!(
                relay.handle(&mut a, input, Instant::now()),
                Outcome::error(400, expected)
            );
        }
    }

    #[test]
    fn rule_3_8_a_full_target_gives_503_and_keeps_nothing() {
        let relay = relay(None);
        let b_box = Recorder {
            bound: Some(1),
            ..Recorder::default()
        };
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now(), None);
        let mut b = relay.open(ConnId(2), b_box.clone(), Instant::now(), None);
        let b_addr = init(&relay, &mut b);
        assert_eq!(
            relay.handle(
                &mut a,
                Input::Text(&route(b_addr, r#"{"n":1}"#)),
                Instant::now()
            ),
            Outcome::Routed
        );
        let refused = relay.handle(
            &mut a,
            Input::Text(&route(b_addr, r#"{"n":2}"#)),
            Instant::now(),
        );
        assert_eq!(refused, Outcome::TargetFull);
        assert!(matches!(
            refused.reply(),
            Some(Message::Err { err_code: 503, .. })
        ));
        assert_eq!(b_box.frames().len(), 1);
    }

    #[test]
    fn rule_3_9_excess_messages_get_429() {
        let relay = relay(Some(2));
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now(), None);
        let now = Instant::now();
        let codes: Vec<Option<u16>> = (0..3)
            .map(
                |_| match relay.handle(&mut a, Input::Text(r#"{"type":"INIT"}"#), now) {
                    Outcome::Error { code, .. } => Some(code),
                    _ => None,
                },
            )
            .collect();
        assert_eq!(codes, [None, None, Some(429)]);
    }

    #[test]
    fn rule_3_10_dropping_a_session_releases_its_address() {
        let relay = relay(None);
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now(), None);
        let mut b = relay.open(ConnId(2), Recorder::default(), Instant::now(), None);
        let b_addr = init(&relay, &mut b);
        drop(b);
        assert_eq!(relay.directory().live(), 0);
        let outcome = relay.handle(&mut a, Input::Text(&route(b_addr, "{}")), Instant::now());
        assert_eq!(outcome, Outcome::error(404, NOT_FOUND_TEXT));
    }

    #[test]
    fn rule_3_10_a_closing_target_is_404_not_a_silent_drop() {
        let relay = relay(None);
        let b_box = Recorder::default();
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now(), None);
        let mut b = relay.open(ConnId(2), b_box.clone(), Instant::now(), None);
        let b_addr = init(&relay, &mut b);
        b_box.gone.store(true, Ordering::Relaxed);
        let outcome = relay.handle(&mut a, Input::Text(&route(b_addr, "{}")), Instant::now());
        assert_eq!(outcome, Outcome::error(404, NOT_FOUND_TEXT));
    }

    #[test]
    fn rule_3_3_self_route_and_route_before_init_are_allowed() {
        let relay = relay(None);
        let a_box = Recorder::default();
        let mut a = relay.open(ConnId(1), a_box.clone(), Instant::now(), None);
        let mut b = relay.open(ConnId(2), Recorder::default(), Instant::now(), None);
        let a_addr = init(&relay, &mut a);
        assert_eq!(
            relay.handle(&mut a, Input::Text(&route(a_addr, "{}")), Instant::now()),
            Outcome::Routed
        );
        assert_eq!(
            relay.handle(&mut b, Input::Text(&route(a_addr, "{}")), Instant::now()),
            Outcome::Routed
        );
        assert_eq!(a_box.frames().len(), 2);
    }

    /// A connection taken over (rule 6.3) may still send frames before it is closed: its
    /// ACK, END or INIT must not touch the session that is now its successor's.
    #[test]
    fn rule_6_3_a_taken_over_connection_cannot_end_or_acknowledge_the_session() {
        let limits = crate::session::Limits {
            grace: std::time::Duration::from_secs(120),
            hold: std::time::Duration::from_secs(10),
            max_messages: 16,
            max_bytes: 1 << 20,
            max_detached: 10,
            max_detached_bytes: 1 << 20,
            failed_resumes_per_minute: 10,
        };
        let relay = Relay::new(
            Arc::new(Directory::new()),
            None,
            Arc::new(Counting::default()),
            std::time::Duration::from_secs(2),
            Some(Arc::new(Sessions::new(limits))),
        );
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let v2 = || Some((mpsc::channel(4).0, ip));
        let now = Instant::now();
        let mut old = relay.open(ConnId(1), Recorder::default(), now, v2());
        let Outcome::Assigned {
            address,
            session: Some((secret, _)),
        } = relay.handle(&mut old, Input::Text(r#"{"type":"INIT"}"#), now)
        else {
            panic!("a version 2 INITRESP");
        };
        let mut new = relay.open(ConnId(2), Recorder::default(), now, v2());
        let resume = format!(
            r#"{{"type":"RESUME","EpheWssAddr":"{address}","secret":"{}","seq":0}}"#,
            secret.expose_hex()
        );
        let outcome = relay.handle(&mut new, Input::Text(&resume), now);
        assert!(
            matches!(
                outcome,
                Outcome::Resumed {
                    took_over: true,
                    ..
                }
            ),
            "{outcome:?}"
        );
        for late in [
            r#"{"type":"ACK","seq":0}"#,
            r#"{"type":"END"}"#,
            r#"{"type":"INIT"}"#,
        ] {
            relay.handle(&mut old, Input::Text(late), now);
        }
        let cell = new.cell().expect("the successor holds the session");
        assert!(cell.is_attached_to(ConnId(2)));
        let mut pc = relay.open(ConnId(3), Recorder::default(), now, None);
        let deliver = relay.handle(&mut pc, Input::Text(&route(address, "{}")), now);
        assert_eq!(
            deliver,
            Outcome::Routed,
            "the session's address still routes"
        );
    }
}
