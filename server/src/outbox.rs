//! [`Outbox`]: a connection's bounded outbound queue, where the directory (and the
//! cluster link, for ROUTEs from other nodes) puts its frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use crate::directory::{Mailbox, Refusal};

/// A connection's bounded outbound queue, as the directory sees it (rule 3.8).
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<String>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl Outbox {
    /// The outbox that queues into `tx`, holding at most `max_bytes` (counted in
    /// `queued_bytes`, which the connection decrements as it writes).
    pub(crate) fn new(
        tx: mpsc::Sender<String>,
        queued_bytes: Arc<AtomicUsize>,
        max_bytes: usize,
    ) -> Self {
        Self {
            tx,
            queued_bytes,
            max_bytes,
        }
    }
}

impl Mailbox for Outbox {
    fn try_push(&self, frame: String) -> Result<(), Refusal> {
        let len = frame.len();
        // Reserve first, so concurrent senders cannot all slip under the bound; an empty
        // queue always takes one frame, so a message that fits the size limit can always
        // reach a connection that is keeping up.
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        // (An empty frame is a version 2 connection's wake-up, never data: `session.rs`.)
        if before > 0 && before + len > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(Refusal::Full);
        }
        self.tx.try_send(frame).map_err(|err| {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            match err {
                mpsc::error::TrySendError::Full(_) => Refusal::Full,
                mpsc::error::TrySendError::Closed(_) => Refusal::Gone,
            }
        })
    }
}
