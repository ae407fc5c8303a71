//! The relay's rules driven directly, without sockets, tasks or a real clock: the
//! entry point of the `relay_core` fuzz target (`fuzz/`), which checks them against a model.
//!
//! Compiled only under `--cfg fuzzing` (set by `cargo xtask fuzz`) and in this crate's
//! own tests, after quinn's `fuzzing` module: the rules stay `pub(crate)` for everyone else.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use compendium_messages::Address;

use crate::addressing::{Addressing, Home};
use crate::directory::{ConnId, Directory, Mailbox, Refusal};
use crate::relay::{Input, Relay, Session};

/// Deterministic draws (so a fuzz finding replays exactly) that repeat every value once,
/// so the "already live, draw again" path of rule 3.1 is exercised too. One relay: every
/// address is here.
#[derive(Default)]
struct RepeatingDraws(AtomicU64);

impl Addressing for RepeatingDraws {
    fn draw(&self) -> Result<Address, String> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Address::from_bits(u128::from(n / 2)))
    }

    fn home(&self, _: Address) -> Home {
        Home::Here
    }
}

/// One connection's outbound queue, bounded in frames like the real one.
#[derive(Clone)]
struct Inbox {
    frames: Arc<Mutex<VecDeque<String>>>,
    bound: usize,
    gone: Arc<Mutex<bool>>,
}

impl Mailbox for Inbox {
    fn try_push(&self, frame: String) -> Result<(), Refusal> {
        if *self.gone.lock().unwrap_or_else(PoisonError::into_inner) {
            return Err(Refusal::Gone);
        }
        let mut frames = self.frames.lock().unwrap_or_else(PoisonError::into_inner);
        if frames.len() >= self.bound {
            return Err(Refusal::Full);
        }
        frames.push_back(frame);
        Ok(())
    }
}

/// A relay's rules with any number of simulated connections and a manual clock.
pub struct Core {
    relay: Relay<Inbox>,
    conns: BTreeMap<u64, (Session<Inbox>, Inbox)>,
    next_conn: u64,
    queue_bound: usize,
    now: Instant,
}

impl Core {
    /// Rules with per-connection queues of `queue_bound` frames and an optional rate limit.
    #[must_use]
    pub fn new(queue_bound: usize, max_msgs_per_sec: Option<u32>) -> Self {
        Self {
            relay: Relay::new(
                Arc::new(Directory::new()),
                max_msgs_per_sec,
                Arc::new(RepeatingDraws::default()),
                Duration::ZERO,
                None,
            ),
            conns: BTreeMap::new(),
            next_conn: 0,
            queue_bound,
            now: Instant::now(),
        }
    }

    /// A new connection; returns its id (never reused).
    pub fn open(&mut self) -> u64 {
        let id = self.next_conn;
        self.next_conn += 1;
        let inbox = Inbox {
            frames: Arc::default(),
            bound: self.queue_bound,
            gone: Arc::default(),
        };
        let session = self.relay.open(ConnId(id), inbox.clone(), self.now, None);
        self.conns.insert(id, (session, inbox));
        id
    }

    /// The connection ends (however it ended: the rules cannot tell).
    pub fn close(&mut self, conn: u64) {
        if let Some((session, inbox)) = self.conns.remove(&conn) {
            *inbox.gone.lock().unwrap_or_else(PoisonError::into_inner) = true;
            drop(session);
        }
    }

    /// A text frame from `conn`; returns the reply frame's JSON, if the rules send one.
    /// `None` also when `conn` is not open.
    pub fn text(&mut self, conn: u64, text: &str) -> Option<String> {
        self.input(conn, Input::Text(text))
    }

    /// A binary frame from `conn`; returns the reply frame's JSON, if any.
    pub fn binary(&mut self, conn: u64) -> Option<String> {
        self.input(conn, Input::Binary)
    }

    fn input(&mut self, conn: u64, input: Input<'_>) -> Option<String> {
        let (session, _) = self.conns.get_mut(&conn)?;
        let outcome = self.relay.handle(session, input, self.now);
        outcome.reply().map(|m| m.to_json())
    }

    /// Let `by` pass on the manual clock.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// The address `conn` holds, if it is open and has sent INIT.
    #[must_use]
    pub fn address(&self, conn: u64) -> Option<Address> {
        self.conns.get(&conn).and_then(|(s, _)| s.address())
    }

    /// Take the frames queued for `conn` (DELIVERs), oldest first.
    pub fn drain(&mut self, conn: u64) -> Vec<String> {
        self.conns.get(&conn).map_or_else(Vec::new, |(_, inbox)| {
            inbox
                .frames
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain(..)
                .collect()
        })
    }

    /// How many addresses the directory holds.
    #[must_use]
    pub fn live(&self) -> usize {
        self.relay.directory().live()
    }
}

/// Which secret a RESUME of [`SessionHarness`] presents.
#[derive(Debug, Clone, Copy)]
pub enum Presented {
    /// The one the last INITRESP or RESUMED gave.
    Current,
    /// The one `back` rotations before the current (1 = the one before), if any: still
    /// good if it is the secret of the last RESUME and that RESUMED is not known to have
    /// arrived (rule 6.9), superseded otherwise.
    Old(usize),
    /// One the session never had.
    Unknown,
}

/// What [`SessionHarness::resume`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// The session is the new connection's.
    Resumed {
        /// Frames in its stream then (to replay).
        replayed: usize,
        /// An attached connection was taken over.
        took_over: bool,
        /// Held DELIVERs settled (delivered).
        settled: usize,
        /// The highest ROUTE number acted on.
        routes_accepted: u64,
    },
    /// Refused, all reasons alike.
    Refused,
    /// A superseded secret: the session is revoked.
    Stolen {
        /// Held DELIVERs settled (404).
        settled: usize,
    },
}

/// What a connection of [`SessionHarness`] pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    /// Frames to write, in order.
    Frames(Vec<String>),
    /// Another connection resumed the session.
    TakenOver,
    /// The session ended.
    Ended,
}

/// What the expiry of a detached [`SessionHarness`] did at the current time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expired {
    /// Not detached (or not this detachment): nothing.
    Stop,
    /// Past the grace: ended.
    Ended {
        /// Held DELIVERs settled (404).
        settled: usize,
    },
    /// Still in grace.
    Wait {
        /// Held DELIVERs whose hold passed, settled (503).
        refused: usize,
    },
}

/// One version 2 session (`session::SessionCell`) driven directly, with connections
/// that are only numbers and a manual clock: the entry point of the `session_stream`
/// fuzz target, which checks it against a model of docs/protocol.md section 6.
pub struct SessionHarness {
    sessions: Arc<crate::session::Sessions>,
    cell: Arc<crate::session::SessionCell>,
    secrets: Vec<compendium_messages::Secret>,
    next_conn: u64,
    generation: Option<u64>,
    now: Instant,
}

impl SessionHarness {
    /// A session just INITed on connection 0, keeping at most `max_messages` messages,
    /// with the grace and the hold window given; no byte bound gets in the way.
    #[must_use]
    pub fn new(max_messages: usize, grace: Duration, hold: Duration) -> Self {
        let sessions = Arc::new(crate::session::Sessions::new(crate::session::Limits {
            grace,
            hold,
            max_messages,
            max_bytes: usize::MAX / 4,
            max_detached: 16,
            max_detached_bytes: usize::MAX / 4,
            failed_resumes_per_minute: u32::MAX,
        }));
        let secret = compendium_messages::Secret::from_bytes([7; 32]);
        let cell = crate::session::SessionCell::new(
            Address::from_bits(1),
            secret.clone(),
            ConnId(0),
            tokio::sync::mpsc::channel(1).0,
            Arc::clone(&sessions),
        );
        Self {
            sessions,
            cell,
            secrets: vec![secret],
            next_conn: 1,
            generation: None,
            now: Instant::now(),
        }
    }

    /// A DELIVER frame (`{"type":"DELIVER","msg":…}`) routed to the session by a version
    /// 1 sender: `Ok(true)` in the stream, `Ok(false)` held, `Err` refused (`"full"`,
    /// `"gone"`, `"away"`).
    ///
    /// # Errors
    /// The refusal, by name.
    pub fn deliver(&mut self, frame: String) -> Result<bool, &'static str> {
        match self
            .cell
            .push_deliver(frame, crate::session::Hold::ForReply, self.now)
        {
            Ok(crate::session::Pushed::Now) => Ok(true),
            Ok(crate::session::Pushed::Held(_)) => Ok(false),
            Err(Refusal::Full) => Err("full"),
            Err(Refusal::Gone) => Err("gone"),
            Err(Refusal::Away) => Err("away"),
            Err(Refusal::Moved) => Err("moved"),
        }
    }

    /// An ERR answering the session's ROUTE `route`, into its stream.
    pub fn err(&mut self, code: u16, route: u64) {
        self.cell.push_err(code, "refused", route);
    }

    /// What connection `conn` may write next (at most `max` frames).
    pub fn pull(&mut self, conn: u64, max: usize) -> Pulled {
        match self.cell.pull(ConnId(conn), max) {
            crate::session::Pull::Frames(frames) => {
                Pulled::Frames(frames.iter().map(|f| f.as_str().to_owned()).collect())
            }
            crate::session::Pull::TakenOver => Pulled::TakenOver,
            crate::session::Pull::Ended => Pulled::Ended,
        }
    }

    /// ACK `seq` from connection `conn`.
    ///
    /// # Errors
    /// The ERR 400 text for an ACK beyond what was sent.
    pub fn ack(&mut self, conn: u64, seq: u64) -> Result<(), String> {
        self.cell.ack(ConnId(conn), seq)
    }

    /// A ROUTE numbered `seq` from the session: `"next"`, `"duplicate"` or `"gap"`.
    pub fn accept_route(&mut self, seq: u64) -> &'static str {
        match self.cell.accept_route(seq) {
            crate::session::RouteSeq::Next => "next",
            crate::session::RouteSeq::Duplicate => "duplicate",
            crate::session::RouteSeq::Gap { .. } => "gap",
        }
    }

    /// Connection `conn` is lost without END: whether the session detached.
    pub fn detach(&mut self, conn: u64) -> bool {
        match self.cell.detach(ConnId(conn), self.now) {
            crate::session::Detach::Detached(generation) => {
                self.generation = Some(generation);
                true
            }
            crate::session::Detach::Overflow | crate::session::Detach::NotMine => false,
        }
    }

    /// A RESUME on a new connection (its number: the next one) with `seq` received.
    pub fn resume(&mut self, presented: Presented, seq: u64) -> (u64, Resumed) {
        let conn = self.next_conn;
        self.next_conn += 1;
        let secret = match presented {
            Presented::Current => self.secrets.last().cloned(),
            Presented::Old(back) => self
                .secrets
                .len()
                .checked_sub(1 + back)
                .and_then(|i| self.secrets.get(i).cloned()),
            Presented::Unknown => None,
        }
        .unwrap_or_else(|| compendium_messages::Secret::from_bytes([9; 32]));
        // Distinct for every connection (and from the unknown one above).
        let mut bytes = [10u8; 32];
        bytes[..8].copy_from_slice(&conn.to_le_bytes());
        let fresh = compendium_messages::Secret::from_bytes(bytes);
        let outcome = match self.cell.resume(
            &secret,
            seq,
            ConnId(conn),
            tokio::sync::mpsc::channel(1).0,
            fresh.clone(),
        ) {
            crate::session::Resume::Resumed {
                routes_accepted,
                replayed,
                took_over,
                settled,
                ..
            } => {
                self.secrets.push(fresh);
                self.generation = None;
                Resumed::Resumed {
                    replayed,
                    took_over,
                    settled: settled.len(),
                    routes_accepted,
                }
            }
            crate::session::Resume::Refused => Resumed::Refused,
            crate::session::Resume::Stolen { settled } => Resumed::Stolen {
                settled: settled.len(),
            },
        };
        (conn, outcome)
    }

    /// END (or re-INIT): the session is over; how many held DELIVERs were settled (404).
    pub fn end(&mut self) -> usize {
        self.cell.end().len()
    }

    /// Let `by` pass, then run the expiry of the current detachment.
    pub fn advance(&mut self, by: Duration) -> Expired {
        self.now += by;
        let Some(generation) = self.generation else {
            return Expired::Stop;
        };
        match self.cell.expiry(generation, self.now) {
            crate::session::Expiry::Stop => Expired::Stop,
            crate::session::Expiry::Expired { settled } => Expired::Ended {
                settled: settled.len(),
            },
            crate::session::Expiry::Wait { refused, .. } => Expired::Wait {
                refused: refused.len(),
            },
        }
    }

    /// The node's accounting: detached sessions, and the bytes they keep.
    #[must_use]
    pub fn accounting(&self) -> (usize, usize) {
        (self.sessions.detached(), self.sessions.detached_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_drives_the_real_rules() {
        let mut core = Core::new(1, None);
        let (a, b) = (core.open(), core.open());
        let reply = core.text(b, r#"{"type":"INIT"}"#).unwrap();
        let address = core.address(b).unwrap();
        assert_eq!(
            reply,
            format!(r#"{{"type":"INITRESP","EpheWssAddr":"{address}"}}"#)
        );
        // The second draw repeats the first, so a's INIT exercises the retry.
        core.text(a, r#"{"type":"INIT"}"#).unwrap();
        assert_ne!(core.address(a), Some(address));
        let route = format!(r#"{{"type":"ROUTE","EpheWssAddr":"{address}","msg":{{"k":1}}}}"#);
        assert_eq!(core.text(a, &route), None);
        assert!(core.text(a, &route).unwrap().contains("503"));
        assert_eq!(core.drain(b), [r#"{"type":"DELIVER","msg":{"k":1}}"#]);
        core.close(b);
        assert_eq!(core.live(), 1);
        assert!(core.text(a, &route).unwrap().contains("404"));
    }
}
