//! The receiving side's view of the peer's pool: the peer's segments mapped
//! read-only here, and the checks every pooled body's descriptor passes
//! before its bytes are copied out.
//!
//! No I/O of its own beyond mapping: the segment that may come with a body
//! is handed in by the caller (read from the region socket by the link,
//! made up by the `shm_pool` fuzz target in `framework/fuzz`), so every
//! check a hostile peer can reach runs the same way in both.
//!
//! By default a body is copied out, and released at once. A receiver that
//! trusts its peer (same user, and asked for with
//! `ChannelBuilder::shm_read_in_place`) may read bodies in place instead:
//! the body is lent out of the mapping ([`Borrowed`]) and released when its
//! last user drops it. The sender frees bodies in the order they were
//! released, so `Releases` counts the prefix of bodies done.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use super::spares::Spares;
use super::words::PoolWords;
use crate::protocol::frame::PoolDescriptor;
use crate::sys::pool::{Borrowed, ReceiverSegment};

/// The most bytes of the peer's segments one connection maps.
pub const MAX_MAPPED: usize = 1 << 30;
/// The most segments of the peer's one connection maps.
pub const MAX_SEGMENTS: usize = 64;
/// The most bytes of the peer's bodies one connection lends out in place
/// at once; past it, bodies are copied out (and released at once), so that
/// bodies kept by the application hold at most this much of the peer's
/// pool.
pub const MAX_LENT: usize = 96 << 20;

/// A segment the peer sent: its id, its length and its memfd.
pub type ArrivingSegment = (u32, u64, OwnedFd);

/// What a descriptor resolved to.
#[derive(Debug)]
pub enum Resolved {
    /// The body (metadata then payload), copied out of the segment.
    Body(Bytes),
    /// The body is over the frame limit; it was not copied, and its room
    /// is released all the same.
    Oversized,
}

/// The peer's segments mapped here, and how many of its pooled bodies have
/// been taken (they are released in that order).
#[derive(Debug)]
pub struct PeerSegments {
    segments: Vec<(u32, Arc<ReceiverSegment>)>,
    received: u64,
    max_mapped: usize,
    max_segments: usize,
    spares: Spares,
}

impl Default for PeerSegments {
    fn default() -> Self {
        Self::new(MAX_MAPPED, MAX_SEGMENTS)
    }
}

impl PeerSegments {
    /// No segments yet; at most `max_mapped` bytes in `max_segments`
    /// segments may be mapped at once.
    pub fn new(max_mapped: usize, max_segments: usize) -> Self {
        Self {
            segments: Vec::new(),
            received: 0,
            max_mapped,
            max_segments,
            spares: Spares::default(),
        }
    }

    /// Pooled bodies taken so far: the count the sender may reuse room up to.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Segments mapped now, and their bytes.
    pub fn mapped(&self) -> (usize, usize) {
        let bytes = self.segments.iter().map(|(_, s)| s.len()).sum();
        (self.segments.len(), bytes)
    }

    /// Takes the body `descriptor` points at, `limit` being the frame
    /// limit: drops the segments older than the descriptor's oldest, maps
    /// the body's segment if it is new (then it is the one
    /// `next_segment` returns), checks the body lies inside it, and copies
    /// it out. `Err`: what the peer did wrong, in words for the message
    /// that closes the connection; nothing is counted as received then.
    pub fn resolve(
        &mut self,
        descriptor: &PoolDescriptor,
        limit: u64,
        next_segment: impl FnOnce() -> io::Result<Option<ArrivingSegment>>,
    ) -> Result<Resolved, String> {
        let Some((segment, len)) = self.locate(descriptor, limit, next_segment)? else {
            self.received += 1;
            return Ok(Resolved::Oversized);
        };
        let buffer = self.spares.take(len);
        let copy = segment
            .copy_into(descriptor.offset, len, buffer)
            .ok_or("a pooled body outside its segment")?;
        // The room is free again: the body is copied out.
        self.received += 1;
        Ok(Resolved::Body(Bytes::from_owner(self.spares.lend(copy))))
    }

    /// [`resolve`](Self::resolve) without the copy: the body is lent out of
    /// the mapping, and `releases` hears of it when its last user drops it.
    /// Only for a peer trusted not to write what it sent.
    pub(crate) fn resolve_in_place(
        &mut self,
        descriptor: &PoolDescriptor,
        limit: u64,
        next_segment: impl FnOnce() -> io::Result<Option<ArrivingSegment>>,
        releases: &Arc<Releases>,
    ) -> Result<Resolved, String> {
        let Some((segment, len)) = self.locate(descriptor, limit, next_segment)? else {
            self.received += 1;
            releases.done(descriptor.seq);
            return Ok(Resolved::Oversized);
        };
        // SAFETY: the sender reuses the body's room only once the receiver
        // releases it, which `InPlace::drop` does after the borrow is gone;
        // the caller trusts the sender not to write a body it sent.
        #[allow(unsafe_code)]
        let borrowed = unsafe { Borrowed::new(segment, descriptor.offset, len) }
            .ok_or("a pooled body outside its segment")?;
        self.received += 1;
        releases.lent.fetch_add(len, Ordering::Relaxed);
        Ok(Resolved::Body(Bytes::from_owner(InPlace {
            borrowed,
            len,
            seq: descriptor.seq,
            releases: Arc::clone(releases),
        })))
    }

    /// Checks `descriptor` and maps its segment if it is new: the segment
    /// and the body's length, or `None` if the body is over `limit`.
    fn locate(
        &mut self,
        descriptor: &PoolDescriptor,
        limit: u64,
        next_segment: impl FnOnce() -> io::Result<Option<ArrivingSegment>>,
    ) -> Result<Option<(Arc<ReceiverSegment>, usize)>, String> {
        if descriptor.seq != self.received {
            return Err(format!(
                "pooled body {} arrived where {} was due",
                descriptor.seq, self.received
            ));
        }
        self.segments.retain(|(id, _)| *id >= descriptor.oldest);
        if !self.segments.iter().any(|(id, _)| *id == descriptor.segment) {
            self.map_next(descriptor, next_segment)?;
        }
        let segment = self
            .segments
            .iter()
            .find(|(id, _)| *id == descriptor.segment)
            .map(|(_, segment)| Arc::clone(segment))
            .ok_or("a pooled body in a segment already given up")?;
        let body_len = u64::from(descriptor.metadata_len) + u64::from(descriptor.payload_len);
        if body_len > limit {
            return Ok(None);
        }
        let len = usize::try_from(body_len).map_err(|_| "a body too long")?;
        Ok(Some((segment, len)))
    }

    /// Maps the segment that comes with `descriptor`'s body.
    fn map_next(
        &mut self,
        descriptor: &PoolDescriptor,
        next_segment: impl FnOnce() -> io::Result<Option<ArrivingSegment>>,
    ) -> Result<(), String> {
        let (id, len, fd) = next_segment()
            .map_err(|err| err.to_string())?
            .ok_or("a pooled body came without its segment")?;
        let (count, mapped) = self.mapped();
        let fits = usize::try_from(len)
            .ok()
            .filter(|len| mapped.saturating_add(*len) <= self.max_mapped);
        let Some(len) = fits.filter(|_| id == descriptor.segment && count < self.max_segments)
        else {
            return Err(format!(
                "segment {id} of {len} bytes came for a body in segment {} (with {mapped} bytes \
                 in {count} segments mapped already)",
                descriptor.segment,
            ));
        };
        let segment = ReceiverSegment::map(&fd, len).map_err(|err| err.to_string())?;
        self.segments.push((id, Arc::new(segment)));
        Ok(())
    }
}

/// The receiver's releases of the peer's pooled bodies: the count the
/// sender may free up to is the number of bodies done from the first on,
/// whatever order they are done in (bodies read in place are done when
/// their last user drops them).
pub(crate) struct Releases {
    state: Mutex<ReleaseState>,
    /// Bytes of bodies lent out in place and not done with yet.
    lent: AtomicUsize,
    words: PoolWords,
    /// Wakes the peer (a sender asleep waiting for room).
    wake_peer: Box<dyn Fn() + Send + Sync>,
}

#[derive(Debug, Default)]
struct ReleaseState {
    /// Bodies done from the first on: what the pool words say.
    released: u64,
    /// Bodies done after a body not done yet.
    ahead: BTreeSet<u64>,
    /// The peer's last sleep we woke.
    woken: u32,
}

impl std::fmt::Debug for Releases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Releases")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Releases {
    /// Releases through `words`, waking the peer with `wake_peer`.
    pub(crate) fn new(words: PoolWords, wake_peer: Box<dyn Fn() + Send + Sync>) -> Self {
        Self {
            state: Mutex::new(ReleaseState::default()),
            lent: AtomicUsize::new(0),
            words,
            wake_peer,
        }
    }

    /// Whether a body of `len` bytes may be lent out in place now (else it
    /// is copied): what is lent out stays within [`MAX_LENT`].
    pub(crate) fn may_lend(&self, len: u64) -> bool {
        (self.lent.load(Ordering::Relaxed) as u64).saturating_add(len) <= MAX_LENT as u64
    }

    /// Body `seq` is done with: the sender may reuse its room once every
    /// body before it is done too.
    pub(crate) fn done(&self, seq: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if seq != state.released {
            state.ahead.insert(seq);
            return;
        }
        state.released += 1;
        while state.ahead.first() == Some(&state.released) {
            state.ahead.pop_first();
            state.released += 1;
        }
        let ReleaseState {
            released, woken, ..
        } = &mut *state;
        if self.words.release(*released, woken) {
            (self.wake_peer)();
        }
    }
}

/// A body read in place: released when its last user drops it.
#[derive(Debug)]
struct InPlace {
    borrowed: Borrowed,
    len: usize,
    seq: u64,
    releases: Arc<Releases>,
}

impl AsRef<[u8]> for InPlace {
    fn as_ref(&self) -> &[u8] {
        self.borrowed.as_ref()
    }
}

impl Drop for InPlace {
    fn drop(&mut self) {
        self.releases.lent.fetch_sub(self.len, Ordering::Relaxed);
        self.releases.done(self.seq);
    }
}
