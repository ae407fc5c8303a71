//! The order of the ROUTEs that reach a session that moved (docs/cluster.md, "Resume on
//! any node"). Each sending node numbers its ROUTEs to the session (1, 2, 3, …); while
//! the session moves, one of them can reach both the old and the new holder, or reach the
//! new holder late, passed on by the old one (NATS orders one publisher's messages, not
//! those of several). The holder delivers each sender's ROUTEs in their numbers' order,
//! once: an old number is a duplicate, a number past the next is held until the ones
//! before it arrive — or, if they do not come within a patience, given up on (their
//! senders hear 503 from the cluster timeout; nothing is delivered out of order).
//!
//! Pure: the caller supplies the time and does the delivering.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::addressing::NodeId;

/// A sending node's stream of ROUTEs to one session.
pub(crate) type Stream = (NodeId, u32);

/// The most ROUTEs held for missing ones before them, per session; beyond, the gaps are
/// given up on at once.
const MAX_WAITING: usize = 4096;

/// The most streams remembered per session; beyond, the oldest-numbered are forgotten
/// (their next ROUTE then waits out the patience before it is delivered).
const MAX_STREAMS: usize = 4096;

/// Where each sender's stream to one session stands, and what waits.
pub(crate) struct Inbound<T> {
    /// The number due next, per stream (absent: 1).
    next: HashMap<Stream, u64>,
    waiting: HashMap<Stream, BTreeMap<u64, T>>,
    held: usize,
    /// When the oldest wait began.
    since: Option<Instant>,
}

impl<T> Inbound<T> {
    /// The streams as a session's previous holder left them.
    pub(crate) fn new(next: impl IntoIterator<Item = (Stream, u64)>) -> Self {
        Self {
            next: next.into_iter().collect(),
            waiting: HashMap::new(),
            held: 0,
            since: None,
        }
    }

    /// The number due next per stream, to hand the session on.
    pub(crate) fn state(&self) -> Vec<(Stream, u64)> {
        self.next.iter().map(|(s, n)| (*s, *n)).collect()
    }

    /// ROUTE number `seq` of `stream` arrived: what to deliver now, in order (it, and
    /// any that waited for it); nothing for a duplicate or one that must wait.
    pub(crate) fn offer(&mut self, stream: Stream, seq: u64, item: T, now: Instant) -> Vec<T> {
        let next = self.next.get(&stream).copied().unwrap_or(1);
        if seq < next {
            return Vec::new();
        }
        if seq > next {
            let waiting = self.waiting.entry(stream).or_default();
            if waiting.insert(seq, item).is_none() {
                self.held += 1;
            }
            self.since.get_or_insert(now);
            if self.held > MAX_WAITING {
                return self.give_up();
            }
            return Vec::new();
        }
        let mut out = vec![item];
        self.advance(stream, seq + 1, &mut out);
        if self.next.len() > MAX_STREAMS {
            self.forget_oldest();
        }
        out
    }

    /// When the patience for the oldest wait runs out, if anything waits.
    pub(crate) fn deadline(&self, patience: Duration) -> Option<Instant> {
        self.since.map(|since| since + patience)
    }

    /// The patience ran out: deliver everything that waits, in each stream's order.
    pub(crate) fn give_up(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        let streams: Vec<Stream> = self.waiting.keys().copied().collect();
        for stream in streams {
            if let Some(waiting) = self.waiting.remove(&stream) {
                let mut last = 0;
                for (seq, item) in waiting {
                    out.push(item);
                    last = seq;
                }
                self.next.insert(stream, last + 1);
            }
        }
        self.held = 0;
        self.since = None;
        out
    }

    /// Everything that waits, in no particular order, emptied: what a holder that lets
    /// the session go passes on to the next.
    pub(crate) fn take_waiting(&mut self) -> Vec<T> {
        self.held = 0;
        self.since = None;
        self.waiting
            .drain()
            .flat_map(|(_, waiting)| waiting.into_values())
            .collect()
    }

    fn advance(&mut self, stream: Stream, mut next: u64, out: &mut Vec<T>) {
        if let Some(waiting) = self.waiting.get_mut(&stream) {
            while let Some(item) = waiting.remove(&next) {
                out.push(item);
                self.held -= 1;
                next += 1;
            }
            if waiting.is_empty() {
                self.waiting.remove(&stream);
            }
        }
        self.next.insert(stream, next);
        if self.waiting.is_empty() {
            self.since = None;
        }
    }

    fn forget_oldest(&mut self) {
        let waiting = &self.waiting;
        let mut idle: Vec<(Stream, u64)> = self
            .next
            .iter()
            .filter(|(s, _)| !waiting.contains_key(s))
            .map(|(s, n)| (*s, *n))
            .collect();
        idle.sort_by_key(|(_, n)| *n);
        for (stream, _) in idle.into_iter().take(self.next.len() - MAX_STREAMS / 2) {
            self.next.remove(&stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Stream = (NodeId(1), 1);
    const B: Stream = (NodeId(2), 1);

    #[test]
    fn each_stream_is_delivered_in_order_once() {
        let now = Instant::now();
        let mut inbound = Inbound::new([]);
        assert_eq!(inbound.offer(A, 1, "a1", now), ["a1"]);
        assert_eq!(
            inbound.offer(A, 3, "a3", now),
            Vec::<&str>::new(),
            "waits for 2"
        );
        assert_eq!(
            inbound.offer(B, 1, "b1", now),
            ["b1"],
            "other streams go on"
        );
        assert_eq!(inbound.offer(A, 1, "a1 again", now), Vec::<&str>::new());
        assert!(inbound.deadline(Duration::from_secs(1)).is_some());
        assert_eq!(inbound.offer(A, 2, "a2", now), ["a2", "a3"]);
        assert_eq!(inbound.deadline(Duration::from_secs(1)), None);
        assert_eq!(inbound.offer(A, 3, "a3 again", now), Vec::<&str>::new());
    }

    #[test]
    fn a_gap_that_never_fills_is_given_up_on_without_reordering() {
        let now = Instant::now();
        let mut inbound = Inbound::new([(A, 5)]);
        assert!(
            inbound.offer(A, 4, "old", now).is_empty(),
            "the previous holder had it"
        );
        assert!(inbound.offer(A, 7, "a7", now).is_empty());
        assert!(inbound.offer(A, 6, "a6", now).is_empty());
        assert_eq!(inbound.give_up(), ["a6", "a7"]);
        assert_eq!(inbound.offer(A, 8, "a8", now), ["a8"]);
        assert_eq!(
            inbound.offer(A, 5, "late", now),
            Vec::<&str>::new(),
            "too late"
        );
    }

    #[test]
    fn the_state_moves_and_what_waits_is_handed_on() {
        let now = Instant::now();
        let mut here = Inbound::new([]);
        here.offer(A, 1, "a1", now);
        here.offer(A, 3, "a3", now);
        let mut there = Inbound::new(here.state());
        let passed = here.take_waiting();
        assert_eq!(passed, ["a3"]);
        assert!(there.offer(A, 1, "a1 twice", now).is_empty());
        assert!(there.offer(A, 3, "a3", now).is_empty());
        assert_eq!(there.offer(A, 2, "a2", now), ["a2", "a3"]);
    }

    #[test]
    fn too_much_waiting_gives_up_at_once() {
        let now = Instant::now();
        let mut inbound = Inbound::new([]);
        for seq in 2..=(MAX_WAITING as u64 + 1) {
            assert!(inbound.offer(A, seq, seq, now).is_empty());
        }
        let out = inbound.offer(A, MAX_WAITING as u64 + 2, 0, now);
        assert_eq!(out.len(), MAX_WAITING + 1);
        assert!(out.windows(2).all(|w| w[0] < w[1] || w[1] == 0));
    }
}
