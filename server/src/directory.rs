//! The directory of live addresses: which address belongs to which connection's mailbox,
//! on this node.
//!
//! Everything the relay's rules need from it is three operations — [`Directory::claim`],
//! [`Directory::release`] and [`Directory::deliver`]. In cluster mode it still holds only
//! this node's addresses: an address says which node holds it, so no node needs another's
//! directory.
//!
//! It is sharded by address so that connections on different cores rarely meet on a lock,
//! and no lock is ever held across an `.await` (the methods are synchronous).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use compendium_messages::Address;

use crate::cluster::VerdictSlot;
use crate::session::{Hold, Pushed, SessionCell};

/// Where frames for one connection go. The connection task implements it over a bounded
/// channel; the rules' unit tests implement it over a `Vec`.
pub(crate) trait Mailbox {
    /// Queue `frame` for the connection without waiting.
    ///
    /// # Errors
    /// [`Refusal::Full`] when the connection's queue is at its bound (the sender gets 503),
    /// [`Refusal::Gone`] when the connection is closing (the sender gets 404).
    fn try_push(&self, frame: String) -> Result<(), Refusal>;
}

/// Why a mailbox did not take a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The queue is at its bound (in frames or bytes).
    Full,
    /// The connection is going away.
    Gone,
    /// The target is a detached session and the sender cannot wait for it (rule 6.8).
    Away,
}

/// Identifies a connection for the lifetime of the process (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnId(pub(crate) u64);

/// What happened to a frame handed to [`Directory::deliver`].
#[derive(Debug)]
pub(crate) enum Delivery {
    /// Queued for the target connection.
    Queued,
    /// No live connection holds the address (or its connection is closing).
    NotFound,
    /// The target's queue is full.
    Full,
    /// The target is a detached session: held until it resumes or the hold passes; the
    /// slot (for a version 1 sender) gets the verdict (rule 6.8).
    Held(Option<Arc<VerdictSlot>>),
    /// The target is a detached session and this sender cannot wait (rule 6.8).
    Away,
}

const SHARDS: usize = 64;

struct Holder<M> {
    conn: ConnId,
    target: Target<M>,
}

/// Where an address's frames go: a version 1 connection's mailbox, or a version 2
/// session, which outlives its connections (docs/protocol.md section 6).
enum Target<M> {
    Connection(M),
    Session(Arc<SessionCell>),
}

type Shard<M> = Mutex<HashMap<Address, Holder<M>>>;

/// The live addresses of this node's connections, in memory.
pub(crate) struct Directory<M> {
    shards: Box<[Shard<M>]>,
    live: AtomicUsize,
}

impl<M: Mailbox> Directory<M> {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            live: AtomicUsize::new(0),
        }
    }

    fn shard(&self, address: Address) -> std::sync::MutexGuard<'_, HashMap<Address, Holder<M>>> {
        // Addresses are uniformly random, so their low bits spread the load evenly.
        let index = (address.to_bits() % SHARDS as u128) as usize;
        // A poisoned shard only means another thread panicked mid-insert/remove of a
        // whole entry; the map itself is still consistent, so keep serving.
        self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Make `address` live for `conn`, delivering to `mailbox` — unless it is already
    /// live (rule 3.1: unique among live addresses), in which case nothing changes and the
    /// caller draws another.
    pub(crate) fn claim(&self, address: Address, conn: ConnId, mailbox: M) -> bool {
        let mut shard = self.shard(address);
        match shard.entry(address) {
            Entry::Vacant(slot) => {
                slot.insert(Holder {
                    conn,
                    target: Target::Connection(mailbox),
                });
                self.live.fetch_add(1, Ordering::Relaxed);
                true
            }
            Entry::Occupied(_) => false,
        }
    }

    /// Make `address` live for the version 2 session `session`, claimed by `conn`; as
    /// [`Directory::claim`].
    pub(crate) fn claim_session(
        &self,
        address: Address,
        conn: ConnId,
        session: Arc<SessionCell>,
    ) -> bool {
        let mut shard = self.shard(address);
        match shard.entry(address) {
            Entry::Vacant(slot) => {
                slot.insert(Holder {
                    conn,
                    target: Target::Session(session),
                });
                self.live.fetch_add(1, Ordering::Relaxed);
                true
            }
            Entry::Occupied(_) => false,
        }
    }

    /// The version 2 session that holds `address`, if one does (rule 6.3).
    pub(crate) fn session(&self, address: Address) -> Option<Arc<SessionCell>> {
        match &self.shard(address).get(&address)?.target {
            Target::Session(session) => Some(Arc::clone(session)),
            Target::Connection(_) => None,
        }
    }

    /// Retire `address` if `conn` still holds it (rules 3.2, 3.10).
    pub(crate) fn release(&self, conn: ConnId, address: Address) {
        let mut shard = self.shard(address);
        if shard.get(&address).is_some_and(|h| h.conn == conn) {
            shard.remove(&address);
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Hand `frame` to whoever holds `address` (rules 3.3, 3.6, 3.8); `hold` says whether
    /// it may wait for a detached session, and who is owed its verdict (rule 6.8).
    pub(crate) fn deliver(
        &self,
        address: Address,
        frame: String,
        hold: Hold,
        now: Instant,
    ) -> Delivery {
        let shard = self.shard(address);
        let Some(holder) = shard.get(&address) else {
            return Delivery::NotFound;
        };
        let pushed = match &holder.target {
            Target::Connection(mailbox) => mailbox.try_push(frame).map(|()| Pushed::Now),
            Target::Session(session) => {
                let session = Arc::clone(session);
                // The session has its own lock; the shard's is not needed to push into it.
                drop(shard);
                session.push_deliver(frame, hold, now)
            }
        };
        match pushed {
            Ok(Pushed::Now) => Delivery::Queued,
            Ok(Pushed::Held(slot)) => Delivery::Held(slot),
            Err(Refusal::Gone) => Delivery::NotFound,
            Err(Refusal::Full) => Delivery::Full,
            Err(Refusal::Away) => Delivery::Away,
        }
    }

    /// How many addresses are live.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}
