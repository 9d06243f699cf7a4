//! The pool words: four cache lines after the two rings in the link's
//! memfd, through which each side's pool (`pool.rs`) learns what the peer
//! has released, and a sender waiting for room says so.
//!
//! | line | word | written by |
//! |------|------|------------|
//! | 0 | `released` `u64`: pooled bodies client to server copied out | server |
//! | 1 | `waiting` `u32`: the client's sleep sequence, odd while it waits for room | client |
//! | 2 | `released` `u64`: pooled bodies server to client copied out | client |
//! | 3 | `waiting` `u32`: the server's sleep sequence | server |
//!
//! Waiting follows the rings' "wake only sleepers" discipline (see
//! `ring.rs`): a sender about to sleep publishes an odd sequence, fences and
//! re-reads `released`; a receiver fences after publishing `released` and
//! wakes the sender when it sees a new odd sequence. Each word has one
//! writer; the peer's words are read once per use and never trusted beyond
//! what they can harm (a lying receiver only makes its own copies wrong).

#![allow(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use memmap2::MmapRaw;

use super::ring::CACHE_LINE;

/// The bytes the pool words take after the rings.
pub(crate) const POOL_WORDS_LEN: usize = 4 * CACHE_LINE;

/// One side's view of the pool words.
#[derive(Debug)]
pub(crate) struct PoolWords {
    map: Arc<MmapRaw>,
    /// Where the words start in the mapping.
    offset: usize,
    client: bool,
}

impl PoolWords {
    /// The words at `offset` of `map` (which must hold [`POOL_WORDS_LEN`]
    /// bytes there, `CACHE_LINE`-aligned), seen by the client or the
    /// server; `None` if the mapping is too short or misaligned.
    pub(crate) fn new(map: Arc<MmapRaw>, offset: usize, client: bool) -> Option<Self> {
        let end = offset.checked_add(POOL_WORDS_LEN)?;
        let aligned = (map.as_ptr() as usize + offset).is_multiple_of(CACHE_LINE);
        (end <= map.len() && aligned).then_some(Self {
            map,
            offset,
            client,
        })
    }

    fn u64_at(&self, line: usize) -> &AtomicU64 {
        debug_assert!(line < 4);
        // SAFETY: `new` checked that the four lines lie inside the mapping
        // at a CACHE_LINE-aligned address; the mapping lives as long as
        // `self` (the Arc). An `&AtomicU64` over memory another process
        // writes is sound: atomics are interior-mutable and every access
        // on our side is atomic.
        unsafe {
            AtomicU64::from_ptr(
                self.map
                    .as_mut_ptr()
                    .add(self.offset + line * CACHE_LINE)
                    .cast(),
            )
        }
    }

    fn u32_at(&self, line: usize) -> &AtomicU32 {
        debug_assert!(line < 4);
        // SAFETY: as in `u64_at`; a CACHE_LINE-aligned address is 4-aligned.
        unsafe {
            AtomicU32::from_ptr(
                self.map
                    .as_mut_ptr()
                    .add(self.offset + line * CACHE_LINE)
                    .cast(),
            )
        }
    }

    /// Lines of the direction this side sends: (released, waiting).
    fn sending(&self) -> (usize, usize) {
        if self.client { (0, 1) } else { (2, 3) }
    }

    /// Lines of the direction this side receives: (released, waiting).
    fn receiving(&self) -> (usize, usize) {
        if self.client { (2, 3) } else { (0, 1) }
    }

    /// How many of our pooled bodies the peer says it has copied out.
    pub(crate) fn peer_released(&self) -> u64 {
        self.u64_at(self.sending().0).load(Ordering::Acquire)
    }

    /// Announces that this sender sleeps until the peer releases more than
    /// `seen`; `false` (nothing announced) if it already has.
    pub(crate) fn prepare_to_wait(&self, seen: u64, sleep: &mut u32) -> bool {
        *sleep = sleep.wrapping_add(2) | 1;
        self.u32_at(self.sending().1)
            .store(*sleep, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.peer_released() != seen {
            self.cancel_wait(sleep);
            return false;
        }
        true
    }

    /// Withdraws [`prepare_to_wait`](Self::prepare_to_wait).
    pub(crate) fn cancel_wait(&self, sleep: &mut u32) {
        *sleep &= !1;
        self.u32_at(self.sending().1)
            .store(*sleep, Ordering::Relaxed);
    }

    /// Publishes that this receiver has copied out `count` pooled bodies;
    /// `true` if the peer sleeps waiting for that (a sleep not woken yet:
    /// `woken` remembers the last one) and must be woken.
    pub(crate) fn release(&self, count: u64, woken: &mut u32) -> bool {
        let (released, waiting) = self.receiving();
        self.u64_at(released).store(count, Ordering::Release);
        fence(Ordering::SeqCst);
        let sleep = self.u32_at(waiting).load(Ordering::Relaxed);
        if sleep & 1 == 1 && sleep != *woken {
            *woken = sleep;
            return true;
        }
        false
    }
}
