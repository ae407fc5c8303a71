//! What the relay's rules know of other nodes: a ROUTE forwarded to the node that holds its
//! target, and the verdict that comes back. Plain data; the cluster link (`cluster/`)
//! carries it.

use compendium_messages::{Address, Payload};

use crate::addressing::NodeId;

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
