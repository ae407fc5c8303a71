//! The sending node's side of forwarded ROUTEs: a slot per ROUTE that its verdict fills,
//! and the table of ROUTEs still waiting, by destination node and request id.
//!
//! A delivered ROUTE usually needs no answer to its client, so filling its slot wakes the
//! connection only when the connection said it is waiting on it (a reply queued behind,
//! or shutting down); a refused one always wakes it, so that the ERR goes out at once.
//! That keeps a cross-node message from costing its sender's task an extra wake-up.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::addressing::NodeId;
use crate::remote::VerdictSlot;

/// Where a forwarded ROUTE stands.
#[derive(Debug, Clone)]
pub(crate) enum Stage {
    /// Sent to the node that drew the target address (its home), which owes the verdict.
    /// `payload` is kept to send again to the session's subject, should the home say the
    /// session moved, or nobody answer for the home (docs/cluster.md).
    Home {
        node: NodeId,
        address: compendium_messages::Address,
        payload: bytes::Bytes,
    },
    /// Sent to the subject of the target's session, which moved away from its home.
    /// `home`: the home that nobody answered for (if that is why); `None` when the home
    /// said the session moved, or is this node.
    Session { home: Option<NodeId> },
}

/// A forwarded ROUTE waiting for its verdict.
pub(crate) struct Waiting {
    pub(crate) slot: Arc<VerdictSlot>,
    pub(crate) stage: Stage,
    /// When its sender stops waiting (503): the cluster timeout after it was forwarded,
    /// or, once its holder said it holds it for a detached session, the hold window more.
    pub(crate) deadline: Instant,
}

/// The forwarded ROUTEs still waiting for a verdict, by request id.
///
/// A ROUTE to an address whose home has said goodbye goes straight to the session's
/// subject; while earlier ROUTEs to the same address still wait on that home (which may
/// yet say the session moved, and so send them on there), it is held back ([`defer`]),
/// and sent on after them, so that one sender's ROUTEs to one target keep their order.
///
/// [`defer`]: Outstanding::defer
#[derive(Default)]
pub(crate) struct Outstanding {
    waiting: HashMap<u64, Waiting>,
    /// How many of `waiting` wait on their target's home, by target.
    homing: HashMap<compendium_messages::Address, usize>,
    /// Requests held back, by target, in the order they were made; and whether a task is
    /// sending them on now.
    deferred: HashMap<compendium_messages::Address, (VecDeque<(u64, bytes::Bytes)>, bool)>,
}

impl Outstanding {
    pub(crate) fn insert(&mut self, id: u64, waiting: Waiting) {
        if let Stage::Home { address, .. } = &waiting.stage {
            *self.homing.entry(*address).or_default() += 1;
        }
        self.waiting.insert(id, waiting);
    }

    /// Request `id`, taken out.
    pub(crate) fn take(&mut self, id: u64) -> Option<Waiting> {
        let waiting = self.waiting.remove(&id)?;
        self.left_home(&waiting.stage);
        Some(waiting)
    }

    fn left_home(&mut self, stage: &Stage) {
        if let Stage::Home { address, .. } = stage
            && let Some(count) = self.homing.get_mut(address)
        {
            *count -= 1;
            if *count == 0 {
                self.homing.remove(address);
            }
        }
    }

    /// Whether a request to `address` must wait behind others (see [`Outstanding`]).
    pub(crate) fn must_wait(&self, address: compendium_messages::Address) -> bool {
        self.homing.contains_key(&address) || self.deferred.contains_key(&address)
    }

    /// Hold request `id` (its bytes for the session's subject) back behind the others to
    /// `address`.
    pub(crate) fn defer(
        &mut self,
        address: compendium_messages::Address,
        id: u64,
        request: bytes::Bytes,
    ) {
        self.deferred
            .entry(address)
            .or_default()
            .0
            .push_back((id, request));
    }

    /// The targets whose held-back requests may go now (none waits on its home any
    /// more, and no task is sending them), each marked as being sent by the caller.
    pub(crate) fn ready(&mut self) -> Vec<compendium_messages::Address> {
        if self.deferred.is_empty() {
            return Vec::new();
        }
        let homing = &self.homing;
        self.deferred
            .iter_mut()
            .filter(|(address, (_, sending))| !*sending && !homing.contains_key(*address))
            .map(|(address, (_, sending))| {
                *sending = true;
                *address
            })
            .collect()
    }

    /// The next held-back request to `address` (one still waiting for its verdict) for
    /// the task that [`ready`](Outstanding::ready) marked; `None` once there is none, and
    /// the target is not held back any more.
    pub(crate) fn next_deferred(
        &mut self,
        address: compendium_messages::Address,
    ) -> Option<(u64, bytes::Bytes)> {
        loop {
            let (queue, _) = self.deferred.get_mut(&address)?;
            match queue.pop_front() {
                Some((id, request)) if self.waiting.contains_key(&id) => {
                    return Some((id, request));
                }
                Some(_) => {} // answered meanwhile (its deadline passed)
                None => {
                    self.deferred.remove(&address);
                    return None;
                }
            }
        }
    }

    /// Every request whose deadline is `now` or earlier, taken out.
    pub(crate) fn take_overdue(&mut self, now: Instant) -> Vec<Arc<VerdictSlot>> {
        let mut old = Vec::new();
        let mut left = Vec::new();
        self.waiting.retain(|_, waiting| {
            let keep = waiting.deadline > now;
            if !keep {
                old.push(Arc::clone(&waiting.slot));
                if matches!(waiting.stage, Stage::Home { .. }) {
                    left.push(waiting.stage.clone());
                }
            }
            keep
        });
        for stage in left {
            self.left_home(&stage);
        }
        old
    }

    /// Every request waiting on one of `nodes` (as the home that owes its verdict), taken
    /// out, with the node it waits on.
    pub(crate) fn take_for(&mut self, nodes: &[NodeId]) -> Vec<(NodeId, Arc<VerdictSlot>)> {
        let mut owed = Vec::new();
        if nodes.is_empty() {
            return owed;
        }
        let mut left = Vec::new();
        self.waiting.retain(|_, waiting| match &waiting.stage {
            Stage::Home { node, .. } if nodes.contains(node) => {
                owed.push((*node, Arc::clone(&waiting.slot)));
                left.push(waiting.stage.clone());
                false
            }
            _ => true,
        });
        for stage in left {
            self.left_home(&stage);
        }
        owed
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(node: u32, deadline: Instant) -> Waiting {
        Waiting {
            slot: VerdictSlot::new(),
            stage: Stage::Home {
                node: NodeId(node),
                address: compendium_messages::Address::from_bits(1),
                payload: bytes::Bytes::new(),
            },
            deadline,
        }
    }

    #[test]
    fn a_request_is_taken_once_and_the_old_ones_are_swept() {
        let mut table = Outstanding::default();
        let now = Instant::now();
        for id in 1..=3 {
            table.insert(id, waiting(id as u32 % 2, now));
        }
        assert!(matches!(
            table.take(2).map(|w| w.stage),
            Some(Stage::Home {
                node: NodeId(0),
                ..
            })
        ));
        assert!(table.take(2).is_none(), "a verdict is used once");
        let later = now + std::time::Duration::from_millis(1);
        table.insert(4, waiting(0, later));
        table.insert(5, waiting(0, later + std::time::Duration::from_millis(1)));
        assert_eq!(table.take_overdue(later).len(), 3, "1, 3 and 4 are due");
        assert_eq!(table.len(), 1, "5 is not due yet");
    }

    #[test]
    fn a_request_held_back_goes_once_those_before_it_have_left_its_home() {
        let mut table = Outstanding::default();
        let now = Instant::now();
        let address = compendium_messages::Address::from_bits(1);
        let other = compendium_messages::Address::from_bits(2);
        table.insert(1, waiting(7, now));
        table.insert(2, waiting(7, now));
        assert!(table.must_wait(address) && !table.must_wait(other));
        let behind = || {
            let mut sent_on = waiting(7, now);
            sent_on.stage = Stage::Session {
                home: Some(NodeId(7)),
            };
            sent_on
        };
        for id in [3, 4] {
            table.insert(id, behind());
            table.defer(address, id, bytes::Bytes::from(vec![id as u8]));
        }
        assert!(table.ready().is_empty(), "1 and 2 still wait on their home");
        assert!(table.take(1).is_some());
        assert!(table.ready().is_empty(), "2 still waits");
        table.insert(1, behind());
        assert!(table.take(2).is_some());
        assert!(table.must_wait(address), "held back until sent");
        assert_eq!(table.ready(), [address]);
        assert!(table.ready().is_empty(), "one task sends them");
        assert!(
            table.take(4).is_some(),
            "4 is answered meanwhile (its deadline)"
        );
        assert_eq!(table.next_deferred(address).map(|(id, _)| id), Some(3));
        assert_eq!(table.next_deferred(address), None, "4 is not sent");
        assert!(!table.must_wait(address));
    }

    #[test]
    fn the_requests_owed_by_silent_nodes_are_taken_and_no_others() {
        let mut table = Outstanding::default();
        let now = Instant::now();
        for id in 1..=6 {
            table.insert(id, waiting(id as u32 % 3, now));
        }
        // Sent on to a session's subject: no longer owed by its home.
        let mut sent_on = waiting(1, now);
        sent_on.stage = Stage::Session {
            home: Some(NodeId(1)),
        };
        table.insert(7, sent_on);
        assert!(table.take_for(&[]).is_empty());
        assert_eq!(table.take_for(&[NodeId(1), NodeId(2)]).len(), 4);
        assert_eq!(
            table.len(),
            3,
            "node 0's requests 3 and 6 still wait, and 7"
        );
        assert!(table.take(3).is_some() && table.take(6).is_some() && table.take(7).is_some());
    }
}
