//! The relay's rules (compendium-server's `fuzzing::Core`) against a model of
//! docs/protocol.md section 3, over arbitrary scripts of connections, frames and time.
//!
//! Properties, after every step: each reply is a valid server message and the one the
//! model expects (INITRESP with a fresh address, ERR 400 with parse's exact text, 404 with
//! the fixed text, 503 when the target's queue is full, nothing for a delivered ROUTE);
//! DELIVERs reach exactly the holder of the address, in order, with `msg`'s bytes
//! unchanged; the directory holds exactly one address per open connection that sent INIT;
//! with a rate limit, a connection is never granted more than the bucket allows.

use std::collections::VecDeque;

use arbitrary::{Arbitrary, Unstructured};
use compendium_messages::{Address, Direction, Message, codes};
use compendium_server::NOT_FOUND_TEXT;
use compendium_server::fuzzing::Core;

use crate::msg::Msg;

#[derive(Arbitrary, Debug)]
struct Script {
    /// Frames each connection's queue holds (1 + this % 4).
    queue_bound: u8,
    /// Messages per second per connection (1 + this % 8), or none.
    rate: Option<u8>,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Open,
    Close(u8),
    Init(u8),
    Route { from: u8, to: Target, msg: Msg },
    Text { from: u8, text: String },
    Binary(u8),
    Drain(u8),
    AdvanceMillis(u16),
}

#[derive(Arbitrary, Debug)]
enum Target {
    /// The address connection N holds now (if it holds none: a never-assigned address).
    Holder(u8),
    /// Retired address N.
    Retired(u8),
    /// Any 128 bits.
    Bits(u128),
}

struct Conn {
    id: u64,
    open: bool,
    address: Option<Address>,
    /// `msg` texts that should be waiting in its queue, oldest first.
    queued: VecDeque<String>,
    /// Messages the rules acted on (not refused with 429), and when it opened.
    granted: u64,
    opened_ms: u64,
}

struct Model {
    core: Core,
    conns: Vec<Conn>,
    retired: Vec<Address>,
    bound: usize,
    rate: Option<u64>,
    now_ms: u64,
}

/// One input.
pub fn run(data: &[u8]) {
    let Ok(script) = Script::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let bound = 1 + usize::from(script.queue_bound % 4);
    let rate = script.rate.map(|r| 1 + u32::from(r % 8));
    let mut model = Model {
        core: Core::new(bound, rate),
        conns: Vec::new(),
        retired: Vec::new(),
        bound,
        rate: rate.map(u64::from),
        now_ms: 0,
    };
    for step in script.steps {
        model.step(step);
        let expected = model
            .conns
            .iter()
            .filter(|c| c.open && c.address.is_some())
            .count();
        assert_eq!(model.core.live(), expected, "live addresses");
    }
}

/// What the model expects the relay to answer.
#[derive(Debug, PartialEq)]
enum Expect {
    Nothing,
    Assigned,
    Err(u16, String),
}

impl Model {
    fn conn(&self, n: u8) -> Option<usize> {
        (!self.conns.is_empty()).then(|| usize::from(n) % self.conns.len())
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Open => {
                let id = self.core.open();
                self.conns.push(Conn {
                    id,
                    open: true,
                    address: None,
                    queued: VecDeque::new(),
                    granted: 0,
                    opened_ms: self.now_ms,
                });
            }
            Step::Close(n) => {
                if let Some(i) = self.conn(n) {
                    self.core.close(self.conns[i].id);
                    let conn = &mut self.conns[i];
                    if conn.open {
                        conn.open = false;
                        self.retired.extend(conn.address.take());
                        conn.queued.clear();
                    }
                }
            }
            Step::Init(n) => {
                if let Some(i) = self.conn(n) {
                    self.send(i, r#"{"type":"INIT"}"#);
                }
            }
            Step::Route { from, to, msg } => {
                if let Some(i) = self.conn(from) {
                    let to = self.target(&to);
                    let text = format!(
                        r#"{{"type":"ROUTE","EpheWssAddr":"{to}","msg":{}}}"#,
                        msg.render()
                    );
                    self.send(i, &text);
                }
            }
            Step::Text { from, text } => {
                if let Some(i) = self.conn(from) {
                    self.send(i, &text);
                }
            }
            Step::Binary(n) => {
                if let Some(i) = self.conn(n) {
                    let reply = self.core.binary(self.conns[i].id);
                    self.judge(i, reply, Expect::Err(codes::INVALID_MESSAGE, String::new()));
                }
            }
            Step::Drain(n) => {
                if let Some(i) = self.conn(n) {
                    let frames = self.core.drain(self.conns[i].id);
                    let expected: Vec<String> = self.conns[i].queued.drain(..).collect();
                    assert_eq!(frames.len(), expected.len(), "queued frames");
                    for (frame, msg) in frames.iter().zip(&expected) {
                        match Message::parse(frame) {
                            Ok(Message::Deliver { msg: got, .. }) => assert_eq!(got.as_str(), msg),
                            other => panic!("queued {frame:?}: {other:?}"),
                        }
                    }
                }
            }
            Step::AdvanceMillis(ms) => {
                self.now_ms += u64::from(ms);
                self.core
                    .advance(std::time::Duration::from_millis(u64::from(ms)));
            }
        }
    }

    fn target(&self, target: &Target) -> Address {
        match target {
            Target::Holder(n) => self
                .conn(*n)
                .and_then(|i| self.conns[i].address)
                .unwrap_or(Address::from_bits(u128::MAX)),
            Target::Retired(n) if !self.retired.is_empty() => {
                self.retired[usize::from(*n) % self.retired.len()]
            }
            Target::Retired(_) => Address::from_bits(u128::MAX - 1),
            Target::Bits(bits) => Address::from_bits(*bits),
        }
    }

    /// Conn `i` sends `text`: work out the expected answer and update the model with it.
    fn send(&mut self, i: usize, text: &str) {
        let reply = self.core.text(self.conns[i].id, text);
        let expect = match Message::parse(text) {
            Err(err) => Expect::Err(codes::INVALID_MESSAGE, err.to_string()),
            Ok(Message::Init { .. }) => Expect::Assigned,
            Ok(Message::Route {
                ephe_wss_addr, msg, ..
            }) => {
                match self
                    .conns
                    .iter()
                    .position(|c| c.open && c.address == Some(ephe_wss_addr))
                {
                    None => Expect::Err(codes::NOT_FOUND, NOT_FOUND_TEXT.into()),
                    Some(h) if self.conns[h].queued.len() >= self.bound => {
                        Expect::Err(codes::UNAVAILABLE, String::new())
                    }
                    Some(h) => {
                        // Queued only if the relay agrees it acted on it (not a 429).
                        if self.conns[i].open && !is_rate_limited(reply.as_deref()) {
                            self.conns[h].queued.push_back(msg.as_str().to_owned());
                        }
                        Expect::Nothing
                    }
                }
            }
            Ok(other) => match other.direction() {
                Direction::ServerToClient => Expect::Err(
                    codes::INVALID_MESSAGE,
                    format!("/type: {} is sent", other.type_name()),
                ),
                // A client's type the relay's rules do not implement (rule 3.12).
                Direction::ClientToServer => Expect::Err(codes::NOT_IMPLEMENTED, String::new()),
            },
        };
        self.judge(i, reply, expect);
    }

    /// Check the relay's `reply` to conn `i` against `expect`. An empty expected ERR text
    /// matches any text; a text ending in "is sent" matches as a prefix.
    fn judge(&mut self, i: usize, reply: Option<String>, expect: Expect) {
        if !self.conns[i].open {
            assert_eq!(reply, None, "a closed connection got a reply");
            return;
        }
        let reply = reply
            .map(|r| Message::parse(&r).unwrap_or_else(|e| panic!("invalid reply {r:?}: {e}")));
        if let Some(Message::Err {
            err_code: codes::RATE_LIMITED,
            ..
        }) = &reply
        {
            assert!(self.rate.is_some(), "429 without a rate limit");
            return;
        }
        let conn = &mut self.conns[i];
        conn.granted += 1;
        if let Some(rate) = self.rate {
            // A bucket of `rate` tokens refilled at `rate` per second.
            let allowed = rate + rate * (self.now_ms - conn.opened_ms) / 1000 + 1;
            assert!(
                conn.granted <= allowed,
                "{} messages granted, at most {allowed} allowed",
                conn.granted
            );
        }
        match (expect, reply) {
            (Expect::Nothing, None) => {}
            (Expect::Assigned, Some(Message::Initresp { ephe_wss_addr, .. })) => {
                let clash = self
                    .conns
                    .iter()
                    .any(|c| c.open && c.address == Some(ephe_wss_addr));
                assert!(!clash, "rule 3.1: {ephe_wss_addr} is already live");
                let conn = &mut self.conns[i];
                self.retired.extend(conn.address.replace(ephe_wss_addr));
            }
            (
                Expect::Err(code, text),
                Some(Message::Err {
                    err_code, err_msg, ..
                }),
            ) => {
                assert_eq!(err_code, code, "{err_msg}");
                let matches = if let Some(prefix) = text.strip_suffix("is sent") {
                    err_msg.starts_with(prefix)
                } else {
                    text.is_empty() || err_msg == text
                };
                assert!(matches, "expected {text:?}, got {err_msg:?}");
            }
            (expect, reply) => panic!("expected {expect:?}, got {reply:?}"),
        }
    }
}

fn is_rate_limited(reply: Option<&str>) -> bool {
    reply.is_some_and(|r| {
        matches!(
            Message::parse(r),
            Ok(Message::Err {
                err_code: codes::RATE_LIMITED,
                ..
            })
        )
    })
}
