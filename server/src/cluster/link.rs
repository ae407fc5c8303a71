//! Whether this node is connected to NATS, as its client's events say: the state other
//! parts watch (connections, health) and the clock that silence of other nodes is
//! measured from.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_nats::Event;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Whether the node is connected to NATS, as its client's events say.
pub(crate) struct LinkState {
    up: AtomicBool,
    /// When the link last came up: no heartbeat could arrive before, so silence until
    /// then says nothing about other nodes.
    up_since: Mutex<Instant>,
    /// Every change, as the link's state and how many times it was lost: a watcher that
    /// looks too late for a short outage (a failover within milliseconds) still sees
    /// the count go up.
    changes: watch::Sender<Link>,
    metrics: Arc<Metrics>,
}

/// The link's state as [`LinkState::watch`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    /// Connected to NATS.
    pub(crate) up: bool,
    /// Times the link was lost since the node started.
    pub(crate) losses: u64,
}

impl LinkState {
    pub(super) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            up: AtomicBool::new(false),
            up_since: Mutex::new(Instant::now()),
            changes: watch::Sender::new(Link {
                up: false,
                losses: 0,
            }),
            metrics,
        }
    }

    pub(super) fn up_since(&self) -> Instant {
        *self.up_since.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the link to NATS is up.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Record the link's state; logs and counts only changes, never once per message.
    pub(super) fn set(&self, up: bool, how: &str) {
        if self.up.swap(up, Ordering::AcqRel) == up {
            return;
        }
        if up {
            *self.up_since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        }
        self.metrics.cluster_link_up.set(i64::from(up));
        if !up {
            self.metrics.cluster_link_losses.inc();
        }
        self.changes.send_modify(|link| {
            link.up = up;
            link.losses += u64::from(!up);
        });
        if up {
            tracing::info!(event = "cluster_link_up", "cluster link up ({how})");
        } else {
            tracing::warn!(
                event = "cluster_link_down",
                "cluster link down ({how}): routes to other nodes get ERR 503 until it is back"
            );
        }
    }

    pub(super) fn on_event(&self, event: &Event) {
        match event {
            Event::Connected => self.set(true, "connected to NATS"),
            Event::Disconnected => self.set(false, "disconnected from NATS"),
            Event::SlowConsumer(sid) => {
                self.metrics.cluster_slow_consumer.inc();
                tracing::warn!(
                    subscription = sid,
                    "cluster link: NATS messages dropped for a slow subscription; the \
                     ROUTEs concerned get ERR 503 when their verdicts time out"
                );
            }
            Event::ServerError(err) => tracing::warn!(error = %err, "cluster link: NATS error"),
            // While the link is down, every failed reconnect attempt (one a second) reports
            // one: the "link down" line already said it, so they go to debug.
            Event::ClientError(err) if !self.is_up() => {
                tracing::debug!(error = %err, "cluster link: client error while down");
            }
            Event::ClientError(err) => tracing::warn!(error = %err, "cluster link: client error"),
            Event::LameDuckMode => tracing::info!("cluster link: the NATS server is going away"),
            Event::Draining | Event::Closed => {}
        }
    }

    /// A receiver of the link's state and losses.
    pub(crate) fn watch(&self) -> watch::Receiver<Link> {
        self.changes.subscribe()
    }
}
