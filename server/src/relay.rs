//! The relay's rules (docs/protocol.md section 3), with no sockets and no clock of their
//! own: a connection task feeds each inbound frame in, with the time, and gets back an
//! [`Outcome`] — what to answer and what to count. Frames for *other* connections go
//! through the [`Directory`], or, for an address another node of a cluster holds, out as
//! an [`Outcome::Forward`] whose verdict [`Relay::verdict`] judges when it comes back.

use std::sync::Arc;
use std::time::Instant;

use compendium_messages::{Address, Direction, Message, codes};

use crate::addressing::{Addressing, Home};
use crate::directory::{ConnId, Delivery, Directory, Mailbox};
use crate::rate::TokenBucket;
use crate::remote::{Forward, Verdict};

/// The exact 404 text of the first implementation, which clients match on (rule 3.6).
pub(crate) const NOT_FOUND_TEXT: &str = "Socket address not found";

/// One inbound data frame.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Input<'a> {
    Text(&'a str),
    Binary,
}

/// What handling one frame came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// INIT: answer INITRESP with `address` (the connection's previous one, if any, is
    /// retired already).
    Assigned { address: Address },
    /// ROUTE: the DELIVER is queued for the target; nothing is sent back (rule 3.3).
    Routed,
    /// ROUTE refused because the target's queue is full: answer ERR 503 (rule 3.8).
    TargetFull,
    /// ROUTE to an address another node holds: the connection forwards it over the
    /// cluster link, and answers in request order once [`Relay::verdict`] has judged what
    /// came back.
    Forward(Forward),
    /// Refused: answer ERR `code` with `message`.
    Error { code: u16, message: String },
}

impl Outcome {
    /// The frame to send back to the connection that sent the input, if any.
    pub(crate) fn reply(&self) -> Option<Message> {
        match self {
            Self::Assigned { address } => Some(Message::init_resp(*address)),
            Self::Routed | Self::Forward(_) => None,
            Self::TargetFull => Some(Message::err(
                codes::UNAVAILABLE,
                "the target is not reading fast enough and its queue is full; this message was not delivered",
            )),
            Self::Error { code, message } => Some(Message::err(*code, message.clone())),
        }
    }

    fn error(code: u16, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }
}

/// The rules, shared by every connection of one server.
pub(crate) struct Relay<M> {
    directory: Arc<Directory<M>>,
    max_msgs_per_sec: Option<u32>,
    addressing: Arc<dyn Addressing>,
    /// How long a forwarded ROUTE waits for its verdict, for the 503's text.
    cluster_timeout: std::time::Duration,
}

/// One connection's state as the rules see it. Dropping it releases the connection's
/// address, however the connection ended (rule 3.10).
pub(crate) struct Session<M: Mailbox> {
    conn: ConnId,
    mailbox: M,
    address: Option<Address>,
    bucket: Option<TokenBucket>,
    directory: Arc<Directory<M>>,
}

impl<M: Mailbox> Drop for Session<M> {
    fn drop(&mut self) {
        if let Some(address) = self.address.take() {
            self.directory.release(self.conn, address);
        }
    }
}

impl<M: Mailbox> Session<M> {
    /// The address this connection holds, if it has sent INIT.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn address(&self) -> Option<Address> {
        self.address
    }
}

impl<M: Mailbox + Clone> Relay<M> {
    pub(crate) fn new(
        directory: Arc<Directory<M>>,
        max_msgs_per_sec: Option<u32>,
        addressing: Arc<dyn Addressing>,
        cluster_timeout: std::time::Duration,
    ) -> Self {
        Self {
            directory,
            max_msgs_per_sec,
            addressing,
            cluster_timeout,
        }
    }

    pub(crate) fn directory(&self) -> &Directory<M> {
        &self.directory
    }

    /// State for a new connection whose frames go to `mailbox`.
    pub(crate) fn open(&self, conn: ConnId, mailbox: M, now: Instant) -> Session<M> {
        Session {
            conn,
            mailbox,
            address: None,
            bucket: self
                .max_msgs_per_sec
                .map(|rate| TokenBucket::new(rate, now)),
            directory: Arc::clone(&self.directory),
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
            return Outcome::error(
                codes::RATE_LIMITED,
                format!(
                    "rate limit exceeded: at most {} messages per second; this one was not acted on",
                    self.max_msgs_per_sec.unwrap_or_default()
                ),
            );
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
        match Message::parse(text) {
            Err(err) => Outcome::error(codes::INVALID_MESSAGE, err.to_string()),
            Ok(Message::Init { .. }) => self.init(session),
            Ok(Message::Route {
                ephe_wss_addr, msg, ..
            }) => match self.addressing.home(ephe_wss_addr) {
                Home::Here => match self.directory.deliver(ephe_wss_addr, msg.deliver_frame()) {
                    Delivery::Queued => Outcome::Routed,
                    Delivery::NotFound => Outcome::error(codes::NOT_FOUND, NOT_FOUND_TEXT),
                    Delivery::Full => Outcome::TargetFull,
                },
                Home::Node(node) => Outcome::Forward(Forward {
                    node,
                    address: ephe_wss_addr,
                    msg,
                }),
            },
            // Whatever else the schema defines: a server's message (rule 2.4), or a
            // client's that these rules do not implement yet (rule 3.12).
            Ok(other) => match other.direction() {
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
            },
        }
    }

    /// What to answer for a forwarded ROUTE, given what came back from the cluster: the
    /// same answers as for a local target (rules 3.3, 3.6, 3.8), plus 503 when the cluster
    /// could not be asked.
    pub(crate) fn verdict(&self, verdict: Verdict) -> Outcome {
        match verdict {
            Verdict::Delivered => Outcome::Routed,
            Verdict::NotFound => Outcome::error(codes::NOT_FOUND, NOT_FOUND_TEXT),
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
            Verdict::Refused => Outcome::error(
                codes::UNAVAILABLE,
                "the relay node holding the target refused the forwarded message; it was \
                 not delivered",
            ),
        }
    }

    fn init(&self, session: &mut Session<M>) -> Outcome {
        let address = loop {
            let candidate = match self.addressing.draw() {
                Ok(candidate) => candidate,
                Err(reason) => {
                    tracing::error!(%reason, "the OS random source failed; cannot assign an address");
                    return Outcome::error(
                        codes::UNAVAILABLE,
                        "the relay cannot draw a random address right now; try again",
                    );
                }
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
        Outcome::Assigned { address }
    }
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
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now());
        let address = init(&relay, &mut a);
        assert_eq!(a.address(), Some(address));
        assert_eq!(relay.directory().live(), 1);
    }

    #[test]
    fn rule_3_2_reinit_retires_the_old_address() {
        let relay = relay(None);
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now());
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
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now());
        let mut b = relay.open(ConnId(2), b_box.clone(), Instant::now());
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
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now());
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
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now());
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
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now());
        let mut b = relay.open(ConnId(2), b_box.clone(), Instant::now());
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
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now());
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
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now());
        let mut b = relay.open(ConnId(2), Recorder::default(), Instant::now());
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
        let mut a = relay.open(ConnId(1), Recorder::default(), Instant::now());
        let mut b = relay.open(ConnId(2), b_box.clone(), Instant::now());
        let b_addr = init(&relay, &mut b);
        b_box.gone.store(true, Ordering::Relaxed);
        let outcome = relay.handle(&mut a, Input::Text(&route(b_addr, "{}")), Instant::now());
        assert_eq!(outcome, Outcome::error(404, NOT_FOUND_TEXT));
    }

    #[test]
    fn rule_3_3_self_route_and_route_before_init_are_allowed() {
        let relay = relay(None);
        let a_box = Recorder::default();
        let mut a = relay.open(ConnId(1), a_box.clone(), Instant::now());
        let mut b = relay.open(ConnId(2), Recorder::default(), Instant::now());
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
}
