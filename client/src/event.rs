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
    /// The connection ended: the relay's close code and reason, or what broke it (e.g. no
    /// frame within the idle timeout). This is always the last event.
    Closed {
        /// The close code, if the relay sent a close frame.
        code: Option<u16>,
        /// The close reason, or a description of how the connection ended.
        reason: String,
    },
}
