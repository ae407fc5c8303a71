//! The client's handling of inbound text frames, driven directly, without a socket or a
//! runtime: the entry point of the `client_frames` fuzz target (`fuzz/`).
//!
//! Compiled only under `--cfg fuzzing` (set by `cargo xtask fuzz`) and in this crate's
//! own tests. It uses the very functions the reader and writer tasks call.

use std::collections::VecDeque;

use compendium_messages::Address;
use tokio::sync::oneshot;

use crate::driver::{SharedState, note_init, note_route, on_text};
use crate::error::{Error, Result};
use crate::event::Event;

/// What one inbound frame came to.
#[derive(Debug)]
pub enum Handled {
    /// It became an event for the application.
    Event(Event),
    /// It answered the oldest pending [`Inbound::init_sent`].
    InitAnswered(Result<Address>),
    /// It was consumed without effect (cannot happen today; kept so a change shows).
    Nothing,
}

/// A client connection's inbound side, with INITs and ROUTEs "written" on demand.
#[derive(Debug, Default)]
pub struct Inbound {
    state: SharedState,
    replies: VecDeque<oneshot::Receiver<Result<Address>>>,
}

impl Inbound {
    /// A connection with nothing written yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The writer wrote an INIT.
    pub fn init_sent(&mut self) {
        let (reply, answer) = oneshot::channel();
        note_init(&self.state, reply);
        self.replies.push_back(answer);
    }

    /// The writer wrote a ROUTE.
    pub fn route_sent(&mut self) {
        note_route(&self.state);
    }

    /// How many INITs still wait for their answer.
    #[must_use]
    pub fn pending_inits(&self) -> usize {
        self.replies.len()
    }

    /// A text frame arrived from the relay.
    pub fn frame(&mut self, text: &str) -> Handled {
        if let Some(event) = on_text(text, &self.state) {
            return Handled::Event(event);
        }
        // Replies are resolved oldest first, so only the front can have been answered.
        let answered = self
            .replies
            .front_mut()
            .and_then(|answer| answer.try_recv().ok());
        match answered {
            Some(result) => {
                self.replies.pop_front();
                Handled::InitAnswered(result)
            }
            None => Handled::Nothing,
        }
    }
}

impl Handled {
    /// Whether this reports a frame the relay should never have sent.
    #[must_use]
    pub fn is_invalid_frame(&self) -> bool {
        matches!(self, Self::Event(Event::Error(Error::InvalidFrame(_))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_err_after_routes_is_not_taken_for_the_inits() {
        let mut inbound = Inbound::new();
        inbound.route_sent();
        inbound.init_sent();
        let err = inbound.frame(r#"{"type":"ERR","errCode":503,"errMsg":"full"}"#);
        assert!(matches!(err, Handled::Event(Event::Error(_))), "{err:?}");
        assert_eq!(inbound.pending_inits(), 1);
        let address = "0123456789abcdef0123456789abcdef";
        let answer = inbound.frame(&format!(
            r#"{{"type":"INITRESP","EpheWssAddr":"{address}"}}"#
        ));
        assert!(matches!(answer, Handled::InitAnswered(Ok(a)) if a.to_string() == address));
        assert!(inbound.frame("[").is_invalid_frame());
    }
}
