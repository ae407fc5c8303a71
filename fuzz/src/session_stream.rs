//! One version 2 session (compendium-server's `fuzzing::SessionHarness`, the real
//! `SessionCell`) against a model of docs/protocol.md section 6, over arbitrary scripts of
//! DELIVERs, ERRs, pulls by current and stale connections, ACKs, numbered ROUTEs, cuts,
//! RESUMEs with the current, a superseded or an unknown secret, END and time.
//!
//! Properties, after every step: each answer is the model's (held or in the stream or
//! refused, and why; refused, resumed or revoked, with the counts); what a connection
//! pulls is exactly the stream messages after what it wrote, numbered 1, 2, 3 … with no
//! gap or repeat, each DELIVER's `msg` unchanged, each ERR naming its ROUTE; a connection
//! taken over pulls nothing more; every held DELIVER is settled exactly once (delivered,
//! 503 or 404); and the node's accounting of detached sessions and their bytes comes back
//! to zero whenever the session is attached or over — a leak there would, over time,
//! refuse every session on the node.

use std::collections::VecDeque;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use compendium_messages::Message;
use compendium_server::fuzzing::{Expired, Presented, Pulled, Resumed, SessionHarness};

#[derive(Arbitrary, Debug)]
struct Script {
    /// Messages the session keeps (1 + this % 8).
    bound: u8,
    /// Grace in ms (1 + this); the hold is 1 + `hold` % grace.
    grace: u8,
    hold: u8,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Deliver,
    Err {
        code: u16,
        route: u16,
    },
    /// Connection number `conn` % (connections so far + 1) pulls at most 1 + `max` % 4.
    Pull {
        conn: u8,
        max: u8,
    },
    /// ACK of `seq` % (next number + 2) (sometimes beyond what was sent) from
    /// connection number `conn` % (connections so far + 1).
    Ack {
        conn: u8,
        seq: u16,
    },
    Route(u8),
    Detach {
        conn: u8,
    },
    /// 0: the current secret; 1..=6: one superseded that many times ago; 7: unknown.
    Resume {
        secret: u8,
        seq: u16,
    },
    End,
    Advance(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Deliver(u64),
    Err { code: u16, route: u64 },
}

/// What docs/protocol.md section 6 says the session holds.
struct Model {
    bound: usize,
    grace: u64,
    hold: u64,
    now: u64,
    connections: u64,
    attached: Option<u64>,
    ended: bool,
    next_seq: u64,
    /// Stream messages after the last acknowledged, with their numbers.
    stream: VecDeque<(u64, Item)>,
    /// The attached connection has pulled everything up to here.
    written: u64,
    /// Held DELIVERs (their `k`) and since when.
    held: VecDeque<(u64, u64)>,
    detached_at: Option<u64>,
    /// Secrets the session has had, by index (0: INITRESP's; `rotations`: the current).
    rotations: usize,
    /// The secret of the last RESUME (index) and that RESUME's `seq`: good until an ACK
    /// beyond the `seq` or a RESUME with the current secret (rule 6.9).
    previous: Option<(usize, u64)>,
    /// Superseded secrets (indices), newest first, as many as the relay remembers.
    superseded: VecDeque<usize>,
    routes_accepted: u64,
    delivers: u64,
}

/// Superseded secrets a session remembers (compendium-server's `OLD_SECRETS`).
const OLD_SECRETS: usize = 4;

impl Model {
    fn held_bytes_free(&self) -> bool {
        let count = self.stream.len() + self.held.len();
        count == 0 || count < self.bound
    }

    fn supersede(&mut self, index: usize) {
        self.superseded.push_front(index);
        self.superseded.truncate(OLD_SECRETS);
    }

    fn forget_upto(&mut self, seq: u64) {
        while self.stream.front().is_some_and(|(s, _)| *s <= seq) {
            self.stream.pop_front();
        }
    }
}

fn deliver_frame(k: u64) -> String {
    format!(r#"{{"type":"DELIVER","msg":{{"k":{k}}}}}"#)
}

/// Check one pulled frame against the model's item numbered `seq`.
fn check_frame(frame: &str, seq: u64, item: &Item) {
    match (Message::parse(frame), item) {
        (
            Ok(Message::Deliver {
                seq: Some(s), msg, ..
            }),
            Item::Deliver(k),
        ) => {
            assert_eq!(s, seq, "DELIVER numbered {s}, expected {seq}: {frame}");
            assert_eq!(
                msg.as_str(),
                format!(r#"{{"k":{k}}}"#),
                "msg changed: {frame}"
            );
        }
        (
            Ok(Message::Err {
                err_code,
                route: Some(r),
                seq: Some(s),
                ..
            }),
            Item::Err { code, route },
        ) => {
            assert_eq!(
                (s, err_code, r),
                (seq, *code, *route),
                "ERR mismatch: {frame}"
            );
        }
        (parsed, _) => panic!("pulled {frame} ({parsed:?}), expected {item:?} numbered {seq}"),
    }
}

pub fn run(data: &[u8]) {
    let Ok(script) = Script::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let grace = 1 + u64::from(script.grace);
    let mut model = Model {
        bound: 1 + usize::from(script.bound % 8),
        grace,
        hold: 1 + u64::from(script.hold) % grace,
        now: 0,
        connections: 1,
        attached: Some(0),
        ended: false,
        next_seq: 1,
        stream: VecDeque::new(),
        written: 0,
        held: VecDeque::new(),
        detached_at: None,
        rotations: 0,
        previous: None,
        superseded: VecDeque::new(),
        routes_accepted: 0,
        delivers: 0,
    };
    let mut real = SessionHarness::new(
        model.bound,
        Duration::from_millis(model.grace),
        Duration::from_millis(model.hold),
    );
    for step in script.steps.iter().take(256) {
        apply(&mut model, &mut real, step);
        let (detached, bytes) = real.accounting();
        if model.ended || model.attached.is_some() {
            assert_eq!(
                (detached, bytes),
                (0, 0),
                "after {step:?}: the node still counts this session as detached"
            );
        } else {
            assert_eq!(
                detached, 1,
                "after {step:?}: a detached session not counted"
            );
        }
    }
}

#[allow(clippy::too_many_lines)]
fn apply(model: &mut Model, real: &mut SessionHarness, step: &Step) {
    match *step {
        Step::Deliver => {
            let k = model.delivers;
            model.delivers += 1;
            let want = if model.ended {
                Err("gone")
            } else if !model.held_bytes_free() {
                Err("full")
            } else if model.attached.is_none() {
                model.held.push_back((k, model.now));
                Ok(false)
            } else {
                model.stream.push_back((model.next_seq, Item::Deliver(k)));
                model.next_seq += 1;
                Ok(true)
            };
            assert_eq!(real.deliver(deliver_frame(k)), want, "DELIVER {k}");
        }
        Step::Err { code, route } => {
            let (code, route) = (400 + code % 200, u64::from(route));
            if !model.ended {
                model
                    .stream
                    .push_back((model.next_seq, Item::Err { code, route }));
                model.next_seq += 1;
            }
            real.err(code, route);
        }
        Step::Pull { conn, max } => {
            let conn = u64::from(conn) % (model.connections + 1);
            let max = 1 + usize::from(max % 4);
            let got = real.pull(conn, max);
            let mine = model.attached == Some(conn);
            if !mine {
                let want = if model.ended {
                    Pulled::Ended
                } else {
                    Pulled::TakenOver
                };
                assert_eq!(got, want, "pull by connection {conn}, not attached");
                return;
            }
            let Pulled::Frames(frames) = got else {
                panic!("the attached connection {conn} pulled {got:?}");
            };
            let due: Vec<(u64, Item)> = model
                .stream
                .iter()
                .filter(|(seq, _)| *seq > model.written)
                .take(max)
                .cloned()
                .collect();
            assert_eq!(
                frames.len(),
                due.len(),
                "pulled {frames:?}, expected {due:?}"
            );
            for (frame, (seq, item)) in frames.iter().zip(&due) {
                check_frame(frame, *seq, item);
            }
            model.written += frames.len() as u64;
        }
        Step::Ack { conn, seq } => {
            let conn = u64::from(conn) % (model.connections + 1);
            let seq = u64::from(seq) % (model.next_seq + 2);
            let got = real.ack(conn, seq);
            if model.attached != Some(conn) {
                // Not the session's connection: ignored (a taken-over or detached one).
                assert_eq!(
                    got,
                    Ok(()),
                    "ACK {seq} from connection {conn}, not attached"
                );
            } else if seq >= model.next_seq {
                assert!(
                    got.is_err(),
                    "ACK {seq} beyond {} accepted",
                    model.next_seq - 1
                );
            } else {
                assert_eq!(got, Ok(()), "ACK {seq}");
                model.forget_upto(seq);
                if let Some((index, at)) = model.previous
                    && seq > at
                {
                    model.previous = None;
                    model.supersede(index);
                }
            }
        }
        Step::Route(seq) => {
            let seq = u64::from(seq % 8) + model.routes_accepted.saturating_sub(3);
            let want = if seq <= model.routes_accepted {
                "duplicate"
            } else if seq == model.routes_accepted + 1 {
                model.routes_accepted = seq;
                "next"
            } else {
                "gap"
            };
            assert_eq!(real.accept_route(seq), want, "ROUTE {seq}");
        }
        Step::Detach { conn } => {
            let conn = u64::from(conn) % (model.connections + 1);
            let want = !model.ended && model.attached == Some(conn);
            if want {
                model.attached = None;
                model.detached_at = Some(model.now);
            }
            assert_eq!(real.detach(conn), want, "detach of connection {conn}");
        }
        Step::Resume { secret, seq } => {
            let seq = u64::from(seq) % (model.next_seq + 1);
            let presented = match secret % 8 {
                0 => Presented::Current,
                7 => Presented::Unknown,
                back => Presented::Old(usize::from(back)),
            };
            let (conn, got) = real.resume(presented, seq);
            model.connections = conn + 1;
            let index = match presented {
                Presented::Current => Some(model.rotations),
                Presented::Old(back) => model.rotations.checked_sub(back),
                Presented::Unknown => None,
            };
            let current = index == Some(model.rotations);
            let previous = index.is_some() && index == model.previous.map(|(i, _)| i);
            let want = match index {
                _ if model.ended => Resumed::Refused,
                Some(index) if !current && !previous && model.superseded.contains(&index) => {
                    let settled = model.held.len();
                    model.held.clear();
                    model.ended = true;
                    model.attached = None;
                    Resumed::Stolen { settled }
                }
                _ if !current && !previous => Resumed::Refused,
                _ if seq >= model.next_seq => Resumed::Refused,
                _ => {
                    if current {
                        if let Some((index, _)) = model.previous.take() {
                            model.supersede(index);
                        }
                        model.previous = Some((model.rotations, seq));
                    } else {
                        model.supersede(model.rotations);
                        model.previous = model.previous.map(|(index, _)| (index, seq));
                    }
                    model.rotations += 1;
                    let took_over = model.attached.is_some();
                    model.forget_upto(seq);
                    model.written = seq;
                    let settled = model.held.len();
                    while let Some((k, _)) = model.held.pop_front() {
                        model.stream.push_back((model.next_seq, Item::Deliver(k)));
                        model.next_seq += 1;
                    }
                    model.attached = Some(conn);
                    model.detached_at = None;
                    Resumed::Resumed {
                        replayed: model.stream.len(),
                        took_over,
                        settled,
                        routes_accepted: model.routes_accepted,
                    }
                }
            };
            assert_eq!(
                got, want,
                "RESUME ({presented:?}, seq {seq}) on connection {conn}"
            );
        }
        Step::End => {
            let want = if model.ended {
                0
            } else {
                model.ended = true;
                let settled = model.held.len();
                model.held.clear();
                settled
            };
            assert_eq!(real.end(), want, "END: held DELIVERs settled");
        }
        Step::Advance(ms) => {
            model.now += u64::from(ms);
            let got = real.advance(Duration::from_millis(u64::from(ms)));
            let want = match model.detached_at {
                _ if model.ended || model.attached.is_some() => Expired::Stop,
                None => Expired::Stop,
                Some(since) if model.now >= since + model.grace => {
                    model.ended = true;
                    let settled = model.held.len();
                    model.held.clear();
                    Expired::Ended { settled }
                }
                Some(_) => {
                    let mut refused = 0;
                    while model
                        .held
                        .front()
                        .is_some_and(|(_, since)| model.now >= since + model.hold)
                    {
                        model.held.pop_front();
                        refused += 1;
                    }
                    Expired::Wait { refused }
                }
            };
            assert_eq!(got, want, "after {ms} ms more (now {} ms)", model.now);
        }
    }
}
