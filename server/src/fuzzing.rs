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
