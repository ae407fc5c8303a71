//! A verdict that comes later: the slot a forwarded ROUTE's verdict (or a held ROUTE's
//! final one) lands in, and the [`Pending`] handle its connection polls. Shared by the
//! relay's rules (held ROUTEs, rule 6.8) and the cluster link (forwarded ROUTEs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::task::AtomicWaker;

use super::Verdict;

/// Where a forwarded ROUTE's verdict lands.
pub(crate) struct VerdictSlot {
    /// 0 while waiting, else the verdict's code. `fill` writes it then reads `urgent`;
    /// `poll` writes `urgent` then reads it: sequentially consistent, so that at least one
    /// of the two sees the other's write and no wake-up is lost.
    state: AtomicU8,
    waker: AtomicWaker,
    /// Wake the connection for a delivery too (not only for a refusal).
    urgent: AtomicBool,
    /// When it was forwarded, for the verdict latency metric.
    pub(crate) started: Instant,
}

impl std::fmt::Debug for VerdictSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerdictSlot({:?})", self.get())
    }
}

impl VerdictSlot {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            urgent: AtomicBool::new(false),
            started: Instant::now(),
        })
    }

    /// Put the verdict in (the first one wins); wakes the connection for a refusal, or
    /// for a delivery it is waiting on. Returns whether this was the first verdict.
    pub(crate) fn fill(&self, verdict: Verdict) -> bool {
        let code = code(verdict);
        if self
            .state
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        if verdict != Verdict::Delivered || self.urgent.load(Ordering::SeqCst) {
            self.waker.wake();
        }
        true
    }

    /// The verdict, if it is in.
    pub(crate) fn get(&self) -> Option<Verdict> {
        decode(self.state.load(Ordering::SeqCst))
    }

    /// The verdict, or `Pending` with this task to be woken when it comes — for a delivery
    /// too when `urgent`.
    pub(crate) fn poll(&self, cx: &mut Context<'_>, urgent: bool) -> Poll<Verdict> {
        if urgent {
            self.urgent.store(true, Ordering::SeqCst);
        }
        self.waker.register(cx.waker());
        match self.get() {
            Some(verdict) => Poll::Ready(verdict),
            None => Poll::Pending,
        }
    }
}

fn code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Delivered => 1,
        Verdict::NotFound => 2,
        Verdict::Full => 3,
        Verdict::Unreachable => 4,
        Verdict::Absent => 5,
        Verdict::TimedOut => 6,
        Verdict::Refused => 7,
        Verdict::Away => 8,
        Verdict::Silent => 9,
        Verdict::Moved => 10,
        Verdict::Held => 11,
    }
}

fn decode(code: u8) -> Option<Verdict> {
    Some(match code {
        1 => Verdict::Delivered,
        2 => Verdict::NotFound,
        3 => Verdict::Full,
        4 => Verdict::Unreachable,
        5 => Verdict::Absent,
        6 => Verdict::TimedOut,
        7 => Verdict::Refused,
        8 => Verdict::Away,
        9 => Verdict::Silent,
        10 => Verdict::Moved,
        11 => Verdict::Held,
        _ => return None,
    })
}

/// The verdict of a forwarded ROUTE, when it comes.
pub(crate) struct Pending(PendingState);

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            PendingState::Ready(verdict) => write!(f, "Pending({verdict:?})"),
            PendingState::Waiting(slot) => write!(f, "Pending(waiting: {:?})", slot.get()),
        }
    }
}

enum PendingState {
    Ready(Verdict),
    Waiting(Arc<VerdictSlot>),
}

impl Pending {
    fn ready(verdict: Verdict) -> Self {
        Self(PendingState::Ready(verdict))
    }

    /// The verdict that will land in `slot`.
    pub(crate) fn waiting(slot: Arc<VerdictSlot>) -> Self {
        Self(PendingState::Waiting(slot))
    }

    /// The verdict of a ROUTE held for a detached session on this node (rule 6.8).
    pub(crate) fn held(slot: Arc<VerdictSlot>) -> Self {
        Self(PendingState::Waiting(slot))
    }

    /// The verdict of a ROUTE that could not be sent: the cluster is unreachable.
    pub(crate) fn unreachable() -> Self {
        Self::ready(Verdict::Unreachable)
    }

    /// The verdict, or `Pending` with this task to be woken when it comes. A delivery
    /// needs no reply, so it wakes the task only if `urgent` (something waits behind it);
    /// any other verdict always does.
    pub(crate) fn poll_verdict(&self, cx: &mut Context<'_>, urgent: bool) -> Poll<Verdict> {
        match &self.0 {
            PendingState::Ready(verdict) => Poll::Ready(*verdict),
            PendingState::Waiting(slot) => slot.poll(cx, urgent),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Wake;

    use super::*;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn woken(f: impl FnOnce(&mut Context<'_>)) -> usize {
        let count = Arc::new(Count(Default::default()));
        let waker = std::task::Waker::from(Arc::clone(&count));
        f(&mut Context::from_waker(&waker));
        count.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_delivery_wakes_only_a_connection_that_waits_on_it_and_a_refusal_always() {
        let slot = VerdictSlot::new();
        let wakes = woken(|cx| {
            assert!(slot.poll(cx, false).is_pending());
            assert!(slot.fill(Verdict::Delivered));
        });
        assert_eq!(wakes, 0);
        assert_eq!(slot.get(), Some(Verdict::Delivered));
        let slot = VerdictSlot::new();
        let wakes = woken(|cx| {
            assert!(slot.poll(cx, true).is_pending());
            slot.fill(Verdict::Delivered);
        });
        assert_eq!(wakes, 1);
        let slot = VerdictSlot::new();
        let wakes = woken(|cx| {
            assert!(slot.poll(cx, false).is_pending());
            slot.fill(Verdict::Full);
            assert!(!slot.fill(Verdict::Delivered), "the first verdict wins");
        });
        assert_eq!(wakes, 1);
        assert_eq!(slot.get(), Some(Verdict::Full));
    }
}
