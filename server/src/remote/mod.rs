//! What the relay knows of other nodes: a ROUTE forwarded to the node that holds its
//! target and the verdict that comes back, a RESUME's claim of a session held elsewhere,
//! and [`Remote`], the seam a connection reaches them through. The cluster link
//! (`cluster/`) is one side of the seam, [`Alone`] (a single relay) the other; connection
//! code does not know which it talks to.

mod pending;

pub(crate) use pending::{Pending, VerdictSlot};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use compendium_messages::{Address, Payload};

use crate::addressing::NodeId;
use crate::session::SessionCell;

/// The other nodes, as a connection sees them: where a ROUTE whose target lives
/// elsewhere goes, and where a RESUME of a session held elsewhere asks for it.
pub(crate) trait Remote: Send + Sync {
    /// Send a ROUTE to the node that holds its target. Calls from one connection are
    /// sent in the order they are made, so DELIVERs from one sender to one target keep
    /// their order (rule 3.5).
    fn forward(&self, forward: Forward) -> Pending;

    /// Ask for the session `claim` names. With [`Claimed::Moved`] comes what takes the
    /// session in once the relay installed it here ([`Adopt`]): call it then, and only
    /// then.
    fn claim<'a>(&'a self, claim: &'a Claim) -> ClaimFuture<'a>;
}

/// What [`Remote::claim`] returns.
pub(crate) type ClaimFuture<'a> =
    Pin<Box<dyn Future<Output = (Claimed, Option<Adopt>)> + Send + 'a>>;

/// Takes a session that moved here in: from now on ROUTEs to it find it on this node.
pub(crate) type Adopt = Box<dyn FnOnce(Arc<SessionCell>) + Send>;

/// A single relay: every address is its own, so nothing is ever forwarded (it would get
/// 503), and no other node holds a session.
pub(crate) struct Alone;

impl Remote for Alone {
    fn forward(&self, _: Forward) -> Pending {
        Pending::unreachable()
    }

    fn claim<'a>(&'a self, _: &'a Claim) -> ClaimFuture<'a> {
        Box::pin(std::future::ready((Claimed::Refused, None)))
    }
}

/// A ROUTE whose target lives on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Forward {
    /// The node that drew `address` (its home), which holds it or knows it moved; `None`
    /// when this node is its home and knows it moved: the ROUTE goes straight to the
    /// session's own subject (docs/cluster.md, "Resume on any node").
    pub(crate) node: Option<NodeId>,
    /// The target.
    pub(crate) address: Address,
    /// What to deliver (the sender's exact bytes).
    pub(crate) msg: Payload,
    /// The ROUTE's `seq`, when a version 2 session sent it: its refusal goes to the
    /// session's stream, naming it (rule 6.6).
    pub(crate) route: Option<u64>,
}

/// What became of a forwarded ROUTE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Queued for the target on its node.
    Delivered,
    /// No live connection holds the address (rule 3.6); also when its node is gone.
    NotFound,
    /// The target's queue is full (rule 3.8).
    Full,
    /// The cluster link is down: nothing was sent.
    Unreachable,
    /// Nobody answered for the holder's node, which was alive a moment ago: it may be
    /// failing over to another NATS server. Nothing was delivered.
    Absent,
    /// No verdict within the cluster timeout: the link or the holder's node failed while
    /// the message was on its way, so whether it was delivered is unknown.
    TimedOut,
    /// The holder's node refused the forwarded message as malformed (a version mismatch
    /// between nodes, or a forgery): nothing was delivered.
    Refused,
    /// Held for a detached session that did not resume within the hold window (rule 6.8);
    /// nothing was delivered.
    Away,
    /// The holder's node fell silent (no heartbeat for the peer timeout) while this ROUTE
    /// waited for its verdict: it died or froze. As for [`Verdict::TimedOut`], whether it
    /// was delivered is unknown; the sender hears so sooner.
    Silent,
    /// The target's home node says its session moved to another node: the cluster link
    /// sends the ROUTE on to the session's subject (never a connection's answer).
    Moved,
    /// The holder holds the ROUTE for a detached session (rule 6.8): the final verdict
    /// follows within the hold window (never a connection's answer).
    Held,
}

/// A RESUME for a session this node does not hold (docs/cluster.md, "Resume on any
/// node"): the cluster link asks the session's holder for it.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub(crate) address: compendium_messages::Address,
    pub(crate) secret: compendium_messages::Secret,
    /// The RESUME's `seq`.
    pub(crate) seq: u64,
    /// The node that drew the address; `None` when it is this node, which knows the
    /// session moved away.
    pub(crate) home: Option<NodeId>,
}

/// What a [`Claim`] came to.
#[derive(Debug)]
pub(crate) enum Claimed {
    /// The session, sent over by its holder: install it and answer RESUMED.
    Moved(crate::session::Exported),
    /// No node holds a session that this RESUME resumes: ERR 410, as on one node.
    Refused,
    /// The holder did not answer in time, or the cluster is unreachable: ERR 503, and
    /// the client tries again.
    Unavailable,
}
