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

use crate::remote::VerdictSlot;
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
    /// The target session has moved to another node of the cluster (docs/cluster.md).
    Moved,
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
    /// The target session has moved to another node: send it on (docs/cluster.md).
    Moved,
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
    /// A session drawn here that moved to another node of the cluster: the address stays
    /// taken (no INIT here may draw it) and ROUTEs to it are sent on.
    Moved,
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
        self.insert(address, conn, Target::Connection(mailbox), false)
    }

    /// Make `address` live for the version 2 session `session`, claimed by `conn`; as
    /// [`Directory::claim`].
    pub(crate) fn claim_session(
        &self,
        address: Address,
        conn: ConnId,
        session: Arc<SessionCell>,
    ) -> bool {
        self.insert(address, conn, Target::Session(session), false)
    }

    fn insert(&self, address: Address, conn: ConnId, target: Target<M>, over_moved: bool) -> bool {
        let mut shard = self.shard(address);
        let holder = Holder { conn, target };
        match shard.entry(address) {
            Entry::Vacant(slot) => {
                slot.insert(holder);
            }
            Entry::Occupied(mut slot)
                if over_moved && matches!(slot.get().target, Target::Moved) =>
            {
                slot.insert(holder);
            }
            Entry::Occupied(_) => return false,
        }
        self.live.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The version 2 session that holds `address`, if one does (rule 6.3).
    pub(crate) fn session(&self, address: Address) -> Option<Arc<SessionCell>> {
        match &self.shard(address).get(&address)?.target {
            Target::Session(session) => Some(Arc::clone(session)),
            Target::Connection(_) | Target::Moved => None,
        }
    }

    /// Whether `address` is a session that moved from here to another node.
    pub(crate) fn has_moved(&self, address: Address) -> bool {
        matches!(
            self.shard(address).get(&address).map(|h| &h.target),
            Some(Target::Moved)
        )
    }

    /// Make `address` live for `session`, which moved here from another node for `conn`:
    /// in place of this node's mark that it moved away, if it was drawn here. `false` if
    /// the address is live here already (a second resume raced this one).
    pub(crate) fn install_session(
        &self,
        address: Address,
        conn: ConnId,
        session: Arc<SessionCell>,
    ) -> bool {
        self.insert(address, conn, Target::Session(session), true)
    }

    /// The session at `address`, claimed by `conn`, moved to another node. If it was
    /// drawn here (`home`), its address stays taken and ROUTEs to it are sent on;
    /// otherwise it is simply no longer here.
    pub(crate) fn moved_away(&self, conn: ConnId, address: Address, home: bool) {
        let mut shard = self.shard(address);
        if shard.get(&address).is_some_and(|h| h.conn == conn) {
            self.live.fetch_sub(1, Ordering::Relaxed);
            if home {
                shard.insert(
                    address,
                    Holder {
                        conn,
                        target: Target::Moved,
                    },
                );
            } else {
                shard.remove(&address);
            }
        }
    }

    /// Forget that the session at `address` moved away: it ended where it went.
    pub(crate) fn forget_moved(&self, address: Address) {
        let mut shard = self.shard(address);
        if shard
            .get(&address)
            .is_some_and(|h| matches!(h.target, Target::Moved))
        {
            shard.remove(&address);
        }
    }

    /// Retire `address` if `conn` still holds it (rules 3.2, 3.10).
    pub(crate) fn release(&self, conn: ConnId, address: Address) {
        let mut shard = self.shard(address);
        if shard
            .get(&address)
            .is_some_and(|h| h.conn == conn && !matches!(h.target, Target::Moved))
        {
            shard.remove(&address);
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Hand `frame` to whoever holds `address` (rules 3.3, 3.6, 3.8); `hold` says whether
    /// it may wait for a detached session, and who is owed its verdict (rule 6.8).
    ///
    /// A session that moved between nodes takes ROUTEs only from its own cluster subject
    /// (`from_subject`): every sender's ROUTEs to it take the same path, so that they keep
    /// their order while it moves (docs/cluster.md, "Resume on any node").
    pub(crate) fn deliver(
        &self,
        address: Address,
        frame: String,
        hold: Hold,
        now: Instant,
        from_subject: bool,
    ) -> Delivery {
        let shard = self.shard(address);
        let Some(holder) = shard.get(&address) else {
            return Delivery::NotFound;
        };
        let pushed = match &holder.target {
            Target::Connection(mailbox) => mailbox.try_push(frame).map(|()| Pushed::Now),
            Target::Session(session) if session.roaming && !from_subject => Err(Refusal::Moved),
            Target::Session(session) => {
                let session = Arc::clone(session);
                // The session has its own lock; the shard's is not needed to push into it.
                drop(shard);
                session.push_deliver(frame, hold, now)
            }
            Target::Moved => Err(Refusal::Moved),
        };
        match pushed {
            Ok(Pushed::Now) => Delivery::Queued,
            Ok(Pushed::Held(slot)) => Delivery::Held(slot),
            Err(Refusal::Gone) => Delivery::NotFound,
            Err(Refusal::Full) => Delivery::Full,
            Err(Refusal::Away) => Delivery::Away,
            Err(Refusal::Moved) => Delivery::Moved,
        }
    }

    /// How many addresses are live.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use compendium_messages::Secret;
    use tokio::sync::mpsc;

    use super::*;
    use crate::session::{Limits, Sessions};

    struct Nowhere;
    impl Mailbox for Nowhere {
        fn try_push(&self, _: String) -> Result<(), Refusal> {
            Ok(())
        }
    }

    fn sessions() -> Arc<Sessions> {
        Arc::new(Sessions::new(Limits {
            grace: std::time::Duration::from_secs(60),
            hold: std::time::Duration::from_secs(10),
            max_messages: 8,
            max_bytes: 1 << 16,
            max_detached: 8,
            max_detached_bytes: 1 << 16,
            failed_resumes_per_minute: 10,
        }))
    }

    fn cell(address: Address) -> Arc<SessionCell> {
        let (tx, _) = mpsc::channel(8);
        SessionCell::new(
            address,
            Secret::from_bytes([1; 32]),
            ConnId(1),
            tx,
            sessions(),
        )
    }

    fn deliver(directory: &Directory<Nowhere>, address: Address, from_subject: bool) -> Delivery {
        directory.deliver(
            address,
            "{}".to_owned(),
            Hold::Never,
            Instant::now(),
            from_subject,
        )
    }

    #[test]
    fn a_session_that_moved_away_leaves_a_mark_at_home_and_nothing_elsewhere() {
        let directory = Directory::<Nowhere>::new();
        let (home, away) = (Address::from_bits(1), Address::from_bits(2));
        for address in [home, away] {
            assert!(directory.claim_session(address, ConnId(1), cell(address)));
        }
        directory.moved_away(ConnId(1), home, true);
        directory.moved_away(ConnId(1), away, false);
        assert_eq!(directory.live(), 0);
        assert!(matches!(deliver(&directory, home, false), Delivery::Moved));
        assert!(matches!(
            deliver(&directory, away, false),
            Delivery::NotFound
        ));
        assert!(
            !directory.claim(home, ConnId(2), Nowhere),
            "still taken: no INIT draws it"
        );
        assert!(directory.session(home).is_none() && directory.has_moved(home));
        directory.release(ConnId(1), home);
        assert!(
            directory.has_moved(home),
            "the mark is not a connection's to release"
        );
        directory.forget_moved(home);
        assert!(matches!(
            deliver(&directory, home, false),
            Delivery::NotFound
        ));
    }

    #[test]
    fn a_session_that_came_from_another_node_takes_routes_only_from_its_subject() {
        let directory = Directory::<Nowhere>::new();
        let address = Address::from_bits(3);
        assert!(directory.claim_session(address, ConnId(1), cell(address)));
        let Some(here) = directory.session(address) else {
            panic!("a session")
        };
        let Ok((exported, _)) =
            here.export(&Secret::from_bytes([1; 32]), 0, Secret::from_bytes([2; 32]))
        else {
            panic!("exports")
        };
        directory.moved_away(ConnId(1), address, true);
        // ... and comes back.
        let (tx, _rx) = mpsc::channel(8);
        let back = SessionCell::import(exported, ConnId(5), tx, sessions());
        assert!(
            directory.install_session(address, ConnId(5), back),
            "in place of the mark"
        );
        assert_eq!(directory.live(), 1);
        assert!(matches!(
            deliver(&directory, address, false),
            Delivery::Moved
        ));
        assert!(matches!(
            deliver(&directory, address, true),
            Delivery::Queued
        ));
        assert!(
            !directory.install_session(address, ConnId(6), cell(address)),
            "live already"
        );
    }
}
