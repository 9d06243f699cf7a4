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

use memmap2::MmapRaw;

use super::ring::CACHE_LINE;
use crate::sync::{AtomicU32, AtomicU64, Ordering, fence};

/// The bytes the pool words take after the rings.
pub(crate) const POOL_WORDS_LEN: usize = 4 * CACHE_LINE;

/// One side's view of the pool words.
#[derive(Debug)]
pub(crate) struct PoolWords {
    lines: Lines,
    client: bool,
}

/// Where the four lines are: in the link's mapping, or (under loom, whose
/// atomics cannot live in shared memory) on the heap.
#[derive(Debug)]
enum Lines {
    #[cfg(not(loom))]
    Mapped {
        map: Arc<MmapRaw>,
        /// Where the words start in the mapping.
        offset: usize,
    },
    #[cfg(loom)]
    Heap(Arc<HeapLines>),
}

#[cfg(loom)]
#[derive(Debug, Default)]
struct HeapLines {
    released: [AtomicU64; 2],
    waiting: [AtomicU32; 2],
}

impl PoolWords {
    /// The words at `offset` of `map` (which must hold [`POOL_WORDS_LEN`]
    /// bytes there, `CACHE_LINE`-aligned), seen by the client or the
    /// server; `None` if the mapping is too short or misaligned (or under
    /// loom, which cannot model shared memory).
    #[cfg(not(loom))]
    pub(crate) fn new(map: Arc<MmapRaw>, offset: usize, client: bool) -> Option<Self> {
        let end = offset.checked_add(POOL_WORDS_LEN)?;
        let aligned = (map.as_ptr() as usize + offset).is_multiple_of(CACHE_LINE);
        (end <= map.len() && aligned).then_some(Self {
            lines: Lines::Mapped { map, offset },
            client,
        })
    }

    /// Under loom there is no shared memory: see [`in_heap`](Self::in_heap).
    #[cfg(loom)]
    pub(crate) fn new(_map: Arc<MmapRaw>, _offset: usize, _client: bool) -> Option<Self> {
        None
    }

    /// The client's and the server's views of words on the heap (the loom
    /// models).
    #[cfg(loom)]
    pub(crate) fn in_heap() -> (Self, Self) {
        let lines = Arc::new(HeapLines::default());
        (
            Self {
                lines: Lines::Heap(Arc::clone(&lines)),
                client: true,
            },
            Self {
                lines: Lines::Heap(lines),
                client: false,
            },
        )
    }

    /// `released` of direction `line / 2` (line 0: client to server).
    fn u64_at(&self, line: usize) -> &AtomicU64 {
        debug_assert!(line == 0 || line == 2);
        match &self.lines {
            #[cfg(not(loom))]
            Lines::Mapped { map, offset } => {
                // SAFETY: `new` checked that the four lines lie inside the
                // mapping at a CACHE_LINE-aligned address; the mapping
                // lives as long as `self` (the Arc). An `&AtomicU64` over
                // memory another process writes is sound: atomics are
                // interior-mutable and every access on our side is atomic.
                unsafe {
                    AtomicU64::from_ptr(map.as_mut_ptr().add(offset + line * CACHE_LINE).cast())
                }
            }
            #[cfg(loom)]
            Lines::Heap(lines) => &lines.released[line / 2],
        }
    }

    /// `waiting` of direction `line / 2`.
    fn u32_at(&self, line: usize) -> &AtomicU32 {
        debug_assert!(line == 1 || line == 3);
        match &self.lines {
            #[cfg(not(loom))]
            Lines::Mapped { map, offset } => {
                // SAFETY: as in `u64_at`; a CACHE_LINE-aligned address is
                // 4-aligned.
                unsafe {
                    AtomicU32::from_ptr(map.as_mut_ptr().add(offset + line * CACHE_LINE).cast())
                }
            }
            #[cfg(loom)]
            Lines::Heap(lines) => &lines.waiting[line / 2],
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

/// The hand-off of pooled bodies under the model checker (see
/// `crate::sync`): `.ci/run` runs these with the ring's models.
#[cfg(all(test, loom))]
mod loom_tests {
    use loom::thread;

    use super::*;

    /// A sender decides to wait for room while the receiver releases a
    /// body: either the sender saw the release or the receiver its sleep.
    #[test]
    fn a_sender_waiting_for_room_never_misses_a_release() {
        loom::model(|| {
            let (client, server) = PoolWords::in_heap();
            let receiver = thread::spawn(move || {
                let mut woken = 0;
                server.release(1, &mut woken)
            });
            let mut sleep = 0;
            let sleeps = client.prepare_to_wait(0, &mut sleep);
            let woken = receiver.join().unwrap();
            assert!(
                !sleeps || woken,
                "lost wake-up: the sender sleeps, the receiver saw no sleep"
            );
            if !sleeps {
                assert_eq!(client.peer_released(), 1, "it saw the release");
            }
        });
    }

    /// Two releases while the sender waits for each, sleeping on a loom
    /// `Notify` (the eventfd) the receiver notifies when `release` says so:
    /// a lost wake-up is a deadlock loom reports.
    #[test]
    fn a_sender_sleeping_for_each_release_is_always_woken() {
        use loom::sync::Notify;
        loom::model(|| {
            let (client, server) = PoolWords::in_heap();
            let eventfd = Arc::new(Notify::new());
            let wake = eventfd.clone();
            let receiver = thread::spawn(move || {
                let mut woken = 0;
                for count in 1..=2 {
                    if server.release(count, &mut woken) {
                        wake.notify();
                    }
                }
            });
            let mut sleep = 0;
            let mut seen = 0;
            while seen < 2 {
                if client.prepare_to_wait(seen, &mut sleep) {
                    eventfd.wait();
                    client.cancel_wait(&mut sleep);
                }
                seen = client.peer_released();
            }
            receiver.join().unwrap();
        });
    }
}
