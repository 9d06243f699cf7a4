//! The sending end's credit: how many more Data frames (a message each, or
//! a batch of small ones) the peer accepts on a stream. A sender takes
//! credit before it takes a message from its source, so a peer that stops
//! reading stops the sender (and the source is not drained into a buffer).

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::debug::recorder::ConnectionStats;
use crate::protocol::status::Status;

#[derive(Default)]
struct State {
    credit: u32,
    /// The stream can take no more messages: why.
    closed: Option<Status>,
    waker: Option<Waker>,
    /// A sender waits for credit now.
    stalled: bool,
}

/// One stream's send credit.
pub(crate) struct SendGate {
    state: Mutex<State>,
    /// The connection's counters, told when a sender starts and stops
    /// waiting for credit.
    stats: Option<Arc<ConnectionStats>>,
}

impl std::fmt::Debug for SendGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("SendGate")
            .field("credit", &state.credit)
            .field("closed", &state.closed.is_some())
            .finish()
    }
}

impl SendGate {
    /// A gate whose stalls show in `stats`.
    pub(crate) fn watched(credit: u32, stats: Arc<ConnectionStats>) -> Self {
        Self {
            state: Mutex::new(State {
                credit,
                ..State::default()
            }),
            stats: Some(stats),
        }
    }

    /// A gate with `credit` whose stalls show nowhere.
    #[cfg(test)]
    pub(crate) fn unwatched(credit: u32) -> Self {
        Self {
            state: Mutex::new(State {
                credit,
                ..State::default()
            }),
            stats: None,
        }
    }

    /// Tells the connection's counters that a sender stalled or resumed.
    fn note_stall(&self, stalled: bool) {
        if let Some(stats) = &self.stats {
            stats.stream_stalled(stalled);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The peer granted `credit` more frames.
    pub(crate) fn grant(&self, credit: u32) {
        let waker = {
            let mut state = self.lock();
            state.credit = state.credit.saturating_add(credit);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Nothing more may be sent (the call ended): a waiting sender stops
    /// with `status`.
    pub(crate) fn close(&self, status: Status) {
        let (waker, was_stalled) = {
            let mut state = self.lock();
            if state.closed.is_none() {
                state.closed = Some(status);
            }
            (state.waker.take(), std::mem::take(&mut state.stalled))
        };
        if was_stalled {
            self.note_stall(false);
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Takes up to `most` frames' credit: how many (at least 1), or why
    /// none will come, or `Pending` until some is granted.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>, most: u32) -> Poll<Result<u32, Status>> {
        let mut state = self.lock();
        if let Some(status) = &state.closed {
            return Poll::Ready(Err(status.clone()));
        }
        if state.credit > 0 {
            let taken = state.credit.min(most.max(1));
            state.credit -= taken;
            let resumed = std::mem::take(&mut state.stalled);
            drop(state);
            if resumed {
                self.note_stall(false);
            }
            return Poll::Ready(Ok(taken));
        }
        state.waker = Some(cx.waker().clone());
        if !state.stalled {
            state.stalled = true;
            drop(state);
            self.note_stall(true);
        }
        Poll::Pending
    }

    /// Takes up to `most` frames' credit if there is any, without waiting:
    /// how many (0 if none, or the gate closed).
    pub(crate) fn try_take(&self, most: u32) -> u32 {
        let mut state = self.lock();
        if state.closed.is_some() {
            return 0;
        }
        let taken = state.credit.min(most);
        state.credit -= taken;
        taken
    }

    /// Gives back credit taken and not used.
    pub(crate) fn give_back(&self, credit: u32) {
        if credit > 0 {
            let mut state = self.lock();
            state.credit = state.credit.saturating_add(credit);
        }
    }

    /// Whether the gate was closed (the call ended).
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }
}

impl Drop for SendGate {
    fn drop(&mut self) {
        if self.lock().stalled {
            self.note_stall(false);
        }
    }
}
