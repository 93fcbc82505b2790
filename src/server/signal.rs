//! A one-shot, single-executor "close" signal that any number of local tasks can await.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Set once; every task awaiting [`CloseSignal::closed`] then wakes.
#[derive(Debug, Default)]
pub(crate) struct CloseSignal {
    set: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl CloseSignal {
    /// Sets the signal and wakes every waiter. Idempotent.
    pub(crate) fn set(&self) {
        if !self.set.replace(true) {
            for waker in self.waiters.take() {
                waker.wake();
            }
        }
    }

    /// Whether the signal is set.
    #[cfg(test)]
    pub(crate) fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Resolves once the signal is set.
    pub(crate) async fn closed(&self) {
        poll_fn(|cx| {
            if self.set.get() {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            // Few waiters per signal (a connection's reader and writer): a linear check is cheapest.
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_signal_resolves_immediately_and_stays_set() {
        let s = CloseSignal::default();
        assert!(!s.is_set());
        s.set();
        s.set();
        futures_lite::future::block_on(s.closed());
        assert!(s.is_set());
    }
}
