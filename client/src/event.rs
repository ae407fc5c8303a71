//! [`Event`]: what arrives from the relay that nobody asked for by a call.

use compendium_messages::Payload;

use crate::error::Error;

/// Something that arrived on a connection, in arrival order.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A DELIVER: the `msg` another client routed to this connection's address, exactly
    /// as it was sent.
    Deliver(Payload),
    /// An ERR from the relay that answers a ROUTE (e.g. 404: the target address is not
    /// live) — [`Error::Server`] — or a frame the relay should never have sent
    /// ([`Error::InvalidFrame`]). The connection goes on.
    Error(Error),
    /// Resumable mode: the connection was lost and the session is back on a new one —
    /// same address; nothing was lost; `resent` ROUTEs the relay had not acted on were
    /// sent again (the relay acts on each once).
    Resumed {
        /// The session's address (unchanged).
        address: compendium_messages::Address,
        /// ROUTEs sent again after the resume.
        resent: usize,
    },
    /// Resumable mode: the session is gone and will not come back (refused, revoked,
    /// taken over, or not resumed within its grace); `reason` says which. The peer must
    /// be given a new address. [`Event::Closed`] follows.
    SessionLost {
        /// Why, in words.
        reason: String,
    },
    /// The connection ended: the relay's close code and reason, or what broke it (e.g. no
    /// frame within the idle timeout). This is always the last event.
    Closed {
        /// The close code, if the relay sent a close frame.
        code: Option<u16>,
        /// The close reason, or a description of how the connection ended.
        reason: String,
    },
}
