//! The receiving side's view of the peer's pool: the peer's segments mapped
//! read-only here, and the checks every pooled body's descriptor passes
//! before its bytes are copied out.
//!
//! No I/O of its own beyond mapping: the segment that may come with a body
//! is handed in by the caller (read from the region socket by the link,
//! made up by the `shm_pool` fuzz target in `framework/fuzz`), so every
//! check a hostile peer can reach runs the same way in both.

use std::io;
use std::os::fd::OwnedFd;

use bytes::Bytes;

use crate::protocol::frame::PoolDescriptor;
use crate::sys::pool::ReceiverSegment;

use super::spares::Spares;

/// The most bytes of the peer's segments one connection maps.
pub const MAX_MAPPED: usize = 1 << 30;
/// The most segments of the peer's one connection maps.
pub const MAX_SEGMENTS: usize = 64;

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
    segments: Vec<(u32, ReceiverSegment)>,
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
            .map(|(_, segment)| segment)
            .ok_or("a pooled body in a segment already given up")?;
        let body_len = u64::from(descriptor.metadata_len) + u64::from(descriptor.payload_len);
        let resolved = if body_len > limit {
            Resolved::Oversized
        } else {
            let len = usize::try_from(body_len).map_err(|_| "a body too long")?;
            let buffer = self.spares.take(len);
            let copy = segment
                .copy_into(descriptor.offset, len, buffer)
                .ok_or("a pooled body outside its segment")?;
            Resolved::Body(Bytes::from_owner(self.spares.lend(copy)))
        };
        // The room is free again: the body is copied out, or refused.
        self.received += 1;
        Ok(resolved)
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
        self.segments.push((id, segment));
        Ok(())
    }
}
