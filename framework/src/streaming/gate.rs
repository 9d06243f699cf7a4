//! The sending end's credit: how many more messages the peer accepts on a
//! stream. A sender takes credit before it takes a message from its
//! source, so a peer that stops reading stops the sender (and the source
//! is not drained into a buffer).

use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::protocol::status::Status;

#[derive(Default)]
struct State {
    credit: u32,
    /// The stream can take no more messages: why.
    closed: Option<Status>,
    waker: Option<Waker>,
    /// Times a sender found no credit and waited.
    stalls: u64,
    /// A sender waits for credit now.
    stalled: bool,
}

/// One stream's send credit.
#[derive(Default)]
pub(crate) struct SendGate {
    state: Mutex<State>,
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
    /// A gate with `credit` granted at once.
    pub(crate) fn new(credit: u32) -> Self {
        Self {
            state: Mutex::new(State {
                credit,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The peer granted `credit` more messages.
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
        let waker = {
            let mut state = self.lock();
            if state.closed.is_none() {
                state.closed = Some(status);
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Takes up to `most` messages' credit: how many (at least 1), or why
    /// none will come, or `Pending` until some is granted.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>, most: u32) -> Poll<Result<u32, Status>> {
        let mut state = self.lock();
        if let Some(status) = &state.closed {
            return Poll::Ready(Err(status.clone()));
        }
        if state.credit > 0 {
            let taken = state.credit.min(most.max(1));
            state.credit -= taken;
            state.stalled = false;
            return Poll::Ready(Ok(taken));
        }
        if !state.stalled {
            state.stalled = true;
            state.stalls += 1;
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Takes one message's credit if there is some now.
    pub(crate) fn try_take(&self) -> Result<bool, Status> {
        let mut state = self.lock();
        if let Some(status) = &state.closed {
            return Err(status.clone());
        }
        if state.credit == 0 {
            return Ok(false);
        }
        state.credit -= 1;
        Ok(true)
    }

    /// Gives back credit taken and not used.
    pub(crate) fn give_back(&self, credit: u32) {
        if credit > 0 {
            self.lock().credit += credit;
        }
    }

    /// Whether a sender waits for credit now, and how often one has.
    pub(crate) fn stalls(&self) -> (bool, u64) {
        let state = self.lock();
        (state.stalled, state.stalls)
    }
}
