//! The call table both halves of a QUIC link share: which stream each
//! call's frames go on.
//!
//! The sending half opens a stream for each call it starts and keeps its
//! sending side here until the call is answered (a Cancel may still have to
//! follow the Request). The receiving half files the sending side of each
//! stream the peer opened with a Request, for the Response to go back on,
//! and marks this side's calls answered as their Responses arrive.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use quinn::SendStream;

/// Streams by call id.
#[derive(Debug, Default)]
pub(super) struct Calls {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The sending half has closed: no more frames will be written.
    closed: bool,
    /// Calls this side started, by call id.
    ours: HashMap<u64, Slot>,
    /// Calls the peer started that wait for a Response, by call id.
    theirs: HashMap<u64, SendStream>,
}

/// The sending side of a stream this side opened for a call.
#[derive(Debug)]
enum Slot {
    /// Between frames: a Cancel would go here.
    Idle(SendStream),
    /// The sending half is writing a frame on it; `answered` if the
    /// Response came meanwhile (the stream is finished once the frame ends).
    Busy { answered: bool },
}

impl Calls {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The table stays consistent whatever panicked while holding it:
        // every change is a single insert or remove.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ------------------------------------------------ the receiving half

    /// The peer opened a stream with a Request: its Response goes back on
    /// `stream`. Once the sending half has closed there will be none, so
    /// the stream is finished at once.
    pub(super) fn expect_response(&self, call_id: u64, stream: SendStream) {
        let mut inner = self.lock();
        let unused = if inner.closed {
            Some(stream)
        } else {
            inner.theirs.insert(call_id, stream)
        };
        drop(inner);
        // Dropping a quinn stream finishes it.
        drop(unused);
    }

    /// The peer cancelled its call: no Response is wanted any more.
    pub(super) fn cancelled(&self, call_id: u64) {
        let stream = self.lock().theirs.remove(&call_id);
        drop(stream);
    }

    /// This side's call is over on the peer's side (its Response came, or
    /// the peer finished the stream): finish this side of the stream too,
    /// so that QUIC can retire it.
    pub(super) fn settle(&self, call_id: u64) {
        let mut inner = self.lock();
        let stream = match inner.ours.get_mut(&call_id) {
            Some(Slot::Busy { answered }) => {
                *answered = true;
                None
            }
            Some(Slot::Idle(_)) => match inner.ours.remove(&call_id) {
                Some(Slot::Idle(stream)) => Some(stream),
                _ => None,
            },
            None => None,
        };
        drop(inner);
        drop(stream);
    }

    // -------------------------------------------------- the sending half

    /// The stream of the peer's call `call_id`, for its Response.
    pub(super) fn take_response_stream(&self, call_id: u64) -> Option<SendStream> {
        self.lock().theirs.remove(&call_id)
    }

    /// The stream of this side's call `call_id` if it is still open (for a
    /// Cancel, or bytes that follow its Request).
    pub(super) fn take_open(&self, call_id: u64) -> Option<SendStream> {
        let mut inner = self.lock();
        match inner.ours.get(&call_id) {
            Some(Slot::Idle(_)) => match inner.ours.remove(&call_id) {
                Some(Slot::Idle(stream)) => Some(stream),
                _ => None,
            },
            _ => None,
        }
    }

    /// The sending half starts writing the Request of call `call_id`.
    pub(super) fn begin_request(&self, call_id: u64) {
        self.lock()
            .ours
            .insert(call_id, Slot::Busy { answered: false });
    }

    /// The Request of call `call_id` is written: its stream stays open for
    /// a Cancel, unless the call was answered meanwhile. Returns the stream
    /// if it is to be finished.
    pub(super) fn end_request(&self, call_id: u64, stream: SendStream) -> Option<SendStream> {
        let mut inner = self.lock();
        match inner.ours.get(&call_id) {
            Some(Slot::Busy { answered: false }) if !inner.closed => {
                inner.ours.insert(call_id, Slot::Idle(stream));
                None
            }
            _ => {
                inner.ours.remove(&call_id);
                Some(stream)
            }
        }
    }

    /// Call `call_id` will get no more frames from this side.
    pub(super) fn forget(&self, call_id: u64) {
        let slot = self.lock().ours.remove(&call_id);
        drop(slot);
    }

    /// The sending half closes: returns the open streams of this side's
    /// calls and of the peer's calls, to be finished. Streams filed later
    /// are finished as they come.
    pub(super) fn close(&self) -> (Vec<SendStream>, Vec<SendStream>) {
        let mut inner = self.lock();
        inner.closed = true;
        let ours = inner
            .ours
            .drain()
            .filter_map(|(_, slot)| match slot {
                Slot::Idle(stream) => Some(stream),
                Slot::Busy { .. } => None,
            })
            .collect();
        let theirs = inner.theirs.drain().map(|(_, stream)| stream).collect();
        (ours, theirs)
    }
}
