//! The receiving end of one stream: the messages that arrived and are not
//! read yet, and how the stream ended. The connection pushes; the
//! [`Streaming`](super::Streaming) reader pops, and grants the peer credit
//! for what it read, in batches.
//!
//! Nothing here bounds the queue by itself: the session refuses a frame
//! beyond the credit granted (the peer's connection closes), and credit is
//! granted only for frames read, so at most the window is ever queued.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::protocol::metadata::Metadata;
use crate::protocol::session::StreamChunk;
use crate::protocol::status::Status;

/// Gives the peer credit for frames this side read: to the connection's
/// driver (server side) or through the connection's session (client side).
pub(crate) trait Granter: Send + Sync {
    /// Grants `credit` more frames on the stream.
    fn grant(&self, credit: u32);
}

/// How a stream's messages ended.
#[derive(Clone, Debug)]
pub(crate) enum Ending {
    /// The sender ended it cleanly; `trailers` came with the end (the
    /// callee's response metadata; empty from a caller's half-close).
    Done {
        /// The response metadata sent with the final status.
        trailers: Metadata,
    },
    /// It failed: the callee's status, a cancel, a lost connection.
    Failed {
        /// Why.
        status: Status,
        /// The response metadata sent with the status, if any.
        trailers: Metadata,
    },
}

#[derive(Default)]
struct State {
    queue: VecDeque<StreamChunk>,
    ending: Option<Ending>,
    waker: Option<Waker>,
}

/// One stream's received messages.
pub(crate) struct Inbox {
    state: Mutex<State>,
    /// Frames the peer may send before it is granted more.
    window: u32,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Inbox")
            .field("queued", &state.queue.len())
            .field("ended", &state.ending.is_some())
            .field("window", &self.window)
            .finish()
    }
}

impl Inbox {
    /// An empty inbox whose peer was granted `window` messages.
    pub(crate) fn new(window: u32) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            window: window.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is one push or pop: consistent whatever panicked.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The window the peer was granted.
    pub(crate) fn window(&self) -> u32 {
        self.window
    }

    /// Messages arrived, in order: one lock, one wake-up (ignored once the
    /// stream ended).
    pub(crate) fn push_all(&self, messages: impl IntoIterator<Item = StreamChunk>) {
        let waker = {
            let mut state = self.lock();
            if state.ending.is_some() {
                return;
            }
            state.queue.extend(messages);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The stream ended (the first ending is kept); messages queued before
    /// it are still read.
    pub(crate) fn end(&self, ending: Ending) {
        let waker = {
            let mut state = self.lock();
            if state.ending.is_none() {
                state.ending = Some(ending);
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Moves every message queued into `into` (`Ready(None)`; the reader
    /// then takes them without the lock), or says how the stream ended
    /// once nothing is left (`Ready(Some)`), or keeps the waker
    /// (`Pending`).
    pub(crate) fn poll_drain(
        &self,
        cx: &mut Context<'_>,
        into: &mut VecDeque<StreamChunk>,
    ) -> Poll<Option<Ending>> {
        let mut state = self.lock();
        if !state.queue.is_empty() {
            into.append(&mut state.queue);
            return Poll::Ready(None);
        }
        if let Some(ending) = &state.ending {
            return Poll::Ready(Some(ending.clone()));
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Counts the frames a reader finished (a message of its own, or the
/// last message of a batch) and says when to grant them back: in batches
/// of half the window, one Credit frame per many frames, so that the
/// sender never runs dry while the reader keeps up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GrantBatch {
    read: u32,
    batch: u32,
}

impl GrantBatch {
    /// Batches for a stream of `window`.
    pub(crate) fn new(window: u32) -> Self {
        Self {
            read: 0,
            batch: window.max(1).div_ceil(2),
        }
    }

    /// One more frame was read to its end: the credit to grant now (0:
    /// not yet).
    pub(crate) fn frame_read(&mut self) -> u32 {
        self.read += 1;
        if self.read >= self.batch {
            std::mem::take(&mut self.read)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn credit_goes_back_in_batches_of_half_the_window() {
        let mut batch = GrantBatch::new(4);
        let grants: Vec<u32> = (0..4).map(|_| batch.frame_read()).collect();
        assert_eq!(grants, [0, 2, 0, 2]);
        assert_eq!(GrantBatch::new(1).frame_read(), 1);
    }

    #[test]
    fn a_reader_takes_every_queued_message_at_once_then_the_end() {
        let inbox = Inbox::new(4);
        inbox.push_all((0..4u8).map(|n| StreamChunk::One(bytes::Bytes::from(vec![n]))));
        let mut cx = Context::from_waker(Waker::noop());
        let mut local = VecDeque::new();
        assert!(matches!(
            inbox.poll_drain(&mut cx, &mut local),
            Poll::Ready(None)
        ));
        assert_eq!(local.len(), 4);
        assert!(inbox.poll_drain(&mut cx, &mut local).is_pending());
        inbox.end(Ending::Done {
            trailers: Metadata::new(),
        });
        assert!(matches!(
            inbox.poll_drain(&mut cx, &mut local),
            Poll::Ready(Some(Ending::Done { .. }))
        ));
    }
}
