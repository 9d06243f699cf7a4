//! The sending side's pool for large bodies: shared-memory segments mapped
//! once, their pages populated, and reused, instead of a fresh memfd per
//! body whose pages the kernel must allocate and zero every time.
//!
//! - **Segments** (`sys/pool.rs`): the current one takes new bodies; it is
//!   used as a ring (a body goes after the previous one, or at the start
//!   when the end has no room), and a body is freed when the receiver says
//!   it has copied it out. When a body finds no room, a larger segment is
//!   made while the pool stays within its limit (the old one goes when its
//!   last body is freed); past the limit the sender waits for releases (the
//!   peer's back-pressure), and a body larger than the limit travels as a
//!   bulk region of its own, the reason counted.
//! - **Hand-off**: a body is written into the pool as it is encoded (a
//!   [`Reservation`] of the free room, committed to the length written) or
//!   copied in by the link's writer; the ring then carries a
//!   [`PoolDescriptor`](crate::protocol::frame::PoolDescriptor) (segment,
//!   offset, lengths), and a segment's memfd goes over the region socket
//!   before the first descriptor that names it.
//! - **Release**: the receiver copies each body out before decoding it and
//!   counts it in the pool words (`words.rs`); bodies are released in the
//!   order they were sent, so that count names them.
//! - **Loans** ([`PoolLoan`]): room a caller fills in place, with
//!   [`LOAN_HEADROOM`] before it and [`LOAN_TAILROOM`] after it. When an
//!   encoder meets the loan's bytes ([`SendPool::take_loaned`]), it writes
//!   what came before them into the headroom and what follows into the
//!   tailroom, and the body is sent from where it lies: the loaned bytes
//!   are not copied. Its room is freed once both the caller has dropped
//!   the loan and the peer has released the body (a chunk's `holds`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::words::PoolWords;
use crate::sys::pool::{Lease, SenderSegment};
use crate::transport::bulk::BulkCounters;

/// The most shared memory one side of a connection keeps for large bodies,
/// unless configured otherwise.
pub const DEFAULT_POOL_LIMIT: usize = 128 << 20;
/// The smallest segment made.
const MIN_SEGMENT: usize = 4 << 20;
/// Room before a loan's bytes for what an encoder writes ahead of them:
/// the frame's metadata, and the arguments before the loaned bytes with
/// their length prefix.
pub(crate) const LOAN_HEADROOM: usize = 4096;
/// Room after a loan's bytes for the arguments that follow them.
pub(crate) const LOAN_TAILROOM: usize = 1024;

/// One side's pool (shared by the encoders that write into it and the
/// link's writer that sends what they wrote).
#[derive(Debug)]
pub struct SendPool {
    state: Mutex<State>,
    /// Loans alive (lets encoders skip the lock when there are none).
    loans_alive: std::sync::atomic::AtomicUsize,
    words: PoolWords,
    limit: usize,
    counters: Arc<BulkCounters>,
}

/// What every pool of this process holds and has sent (the debug views'
/// process totals).
pub(crate) mod totals {
    use std::sync::atomic::AtomicU64;

    /// Bodies sent through a pool.
    pub(crate) static SENT: AtomicU64 = AtomicU64::new(0);
    /// Bodies a pool could not take.
    pub(crate) static FALLBACKS: AtomicU64 = AtomicU64::new(0);
    /// Bytes holding bodies not copied out yet.
    pub(crate) static IN_USE: AtomicU64 = AtomicU64::new(0);
    /// Bytes of segments.
    pub(crate) static HELD: AtomicU64 = AtomicU64::new(0);
    /// Bodies sent from a loan, where the caller wrote them.
    pub(crate) static LOANED: AtomicU64 = AtomicU64::new(0);
}

/// Moves a process total by the change of one pool's figure.
fn track(total: &std::sync::atomic::AtomicU64, before: u64, now: u64) {
    if now >= before {
        total.fetch_add(now - before, Ordering::Relaxed);
    } else {
        total.fetch_sub(before - now, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct State {
    /// Oldest first; the last takes new bodies.
    segments: VecDeque<Segment>,
    next_segment: u32,
    /// Bodies not freed yet, by id (the order they were allocated in). A
    /// body is forgotten as soon as it is freed, so a loan kept for ever
    /// holds one entry, not every body allocated after it.
    chunks: BTreeMap<u64, Chunk>,
    /// The id of the next chunk.
    next_chunk: u64,
    /// Someone is encoding into the free room of the current segment.
    reserved: bool,
    /// Ids of the bodies sent and not yet released, in sending order.
    sent: VecDeque<u64>,
    /// Pooled bodies sent so far.
    sent_total: u64,
    /// Releases applied so far.
    released: u64,
    /// Bytes of bodies allocated and not freed.
    in_use: usize,
    /// Loans not dropped yet.
    loans: Vec<LoanEntry>,
    /// Bodies in the pool not sent yet (an encoder's, a loan's): room that
    /// only this side can free.
    unsent: usize,
    /// The link's writer waits for room: encoders must not take it first
    /// (their bodies would queue behind the one waiting).
    writer_waiting: bool,
}

/// A loan, as the pool finds it when an encoder meets its bytes.
#[derive(Debug)]
struct LoanEntry {
    chunk: u64,
    /// The address and length of its bytes in this process.
    addr: usize,
    len: usize,
    /// A body is being (or was) sent from it in place.
    in_place: bool,
}

#[derive(Debug)]
struct Segment {
    id: u32,
    mem: Arc<SenderSegment>,
    /// Where the next body goes.
    cursor: usize,
    /// Chunks of this segment not freed yet.
    chunks: usize,
    /// Whether its memfd went to the peer.
    announced: Announced,
}

/// How far a segment's memfd is on its way to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Announced {
    /// Not sent.
    No,
    /// The writer is sending it.
    Sending,
    /// Sent: descriptors naming the segment may go into the ring.
    Yes,
}

#[derive(Debug)]
struct Chunk {
    segment: u32,
    start: usize,
    len: usize,
    /// Owners left: a body unsent or not released yet, a loan not dropped.
    holds: u8,
}

/// Why a body cannot go into the pool at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// It is larger than the pool may ever be.
    OverLimit,
    /// No segment can be made (the kernel refused the memory).
    NoMemory,
}

/// A body in the pool, not yet sent (dropping it frees its room).
#[derive(Debug)]
pub(crate) struct PooledBody {
    pool: Arc<SendPool>,
    mem: Arc<SenderSegment>,
    id: u64,
    segment: u32,
    offset: usize,
    len: usize,
    sent: bool,
    /// Sent from a loan: if it is dropped unsent, the loan may go in place
    /// again.
    loan: bool,
}

/// What a pooled body's descriptor says.
#[derive(Debug)]
pub(crate) struct Sending {
    /// The segment the body is in.
    pub(crate) segment: u32,
    /// The oldest segment the sender still has (the receiver may unmap
    /// older ones).
    pub(crate) oldest: u32,
    /// The body's offset in its segment.
    pub(crate) offset: u64,
    /// The body's number among the pooled bodies sent on this link.
    pub(crate) seq: u64,
}

/// Free room of the current segment that one encoder writes into.
#[derive(Debug)]
pub(crate) struct Reservation {
    pool: Arc<SendPool>,
    mem: Arc<SenderSegment>,
    segment: u32,
    start: usize,
    capacity: usize,
    committed: bool,
}

impl SendPool {
    /// A pool of at most `limit` bytes whose releases come through `words`.
    pub(crate) fn new(words: PoolWords, limit: usize, counters: Arc<BulkCounters>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            loans_alive: std::sync::atomic::AtomicUsize::new(0),
            words,
            limit,
            counters,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most bytes this pool may hold.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Pooled bodies the peer has released so far.
    pub(crate) fn peer_released(&self) -> u64 {
        self.words.peer_released()
    }

    /// The pool words, to wait on.
    pub(crate) fn words(&self) -> &PoolWords {
        &self.words
    }

    /// Room for a body of exactly `len` bytes: `Ok(None)` when there is
    /// none now (wait for releases and try again).
    pub(crate) fn allocate(self: &Arc<Self>, len: usize) -> Result<Option<PooledBody>, Refused> {
        let Some((id, segment, mem, start)) = self.allocate_chunk(len)? else {
            return Ok(None);
        };
        self.lock().unsent += 1;
        Ok(Some(PooledBody {
            pool: Arc::clone(self),
            mem,
            id,
            segment,
            offset: start,
            len,
            sent: false,
            loan: false,
        }))
    }

    /// Room for `len` bytes lent to the caller to fill in place (see the
    /// module docs); `None` if the pool cannot take it now.
    pub(crate) fn loan(self: &Arc<Self>, len: usize) -> Option<PoolLoan> {
        let total = len.checked_add(LOAN_HEADROOM + LOAN_TAILROOM)?;
        let (chunk, _segment, mem, start) = self.allocate_chunk(total).ok().flatten()?;
        // SAFETY: the allocator gave `start..start + total` to this loan
        // alone; of it, the lease is the middle, which encoders never
        // write (`LoanSite::write` keeps to the headroom and the tailroom
        // around it) and nothing else reads through `mem` (a body sent from
        // it is read by the peer's read-only mapping).
        #[allow(unsafe_code)]
        let lease = unsafe { Lease::new(mem, start + LOAN_HEADROOM, len) };
        let Some(lease) = lease else {
            self.give_back(&mut self.lock(), chunk);
            return None;
        };
        self.lock().loans.push(LoanEntry {
            chunk,
            addr: lease.as_slice().as_ptr() as usize,
            len,
            in_place: false,
        });
        self.loans_alive.fetch_add(1, Ordering::Relaxed);
        Some(PoolLoan {
            pool: Arc::clone(self),
            lease,
            chunk,
        })
    }

    /// Where `bytes` lie, if they are a loan of this pool not sent in place
    /// yet: the encoder then writes around them and sends the body from
    /// there. The site holds the loan's room until it becomes a body or is
    /// dropped.
    pub(crate) fn take_loaned(self: &Arc<Self>, bytes: &[u8]) -> Option<LoanSite> {
        if self.loans_alive.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut state = self.lock();
        let addr = bytes.as_ptr() as usize;
        let at = state
            .loans
            .iter()
            .position(|e| e.addr == addr && e.len == bytes.len() && !e.in_place)?;
        let chunk_id = state.loans[at].chunk;
        let (segment, start, len) = {
            let chunk = state.chunks.get(&chunk_id)?;
            (chunk.segment, chunk.start, chunk.len)
        };
        let mem = state
            .segments
            .iter()
            .find(|s| s.id == segment)
            .map(|s| Arc::clone(&s.mem))?;
        state.loans[at].in_place = true;
        if let Some(chunk) = state.chunks.get_mut(&chunk_id) {
            chunk.holds += 1;
        }
        Some(LoanSite {
            pool: Arc::clone(self),
            mem,
            chunk: chunk_id,
            segment,
            room: (start, start + len),
            data: (start + LOAN_HEADROOM, bytes.len()),
            used: false,
        })
    }

    /// Room for a chunk of `len` bytes: its id, segment and offset.
    #[allow(clippy::type_complexity)]
    fn allocate_chunk(
        &self,
        len: usize,
    ) -> Result<Option<(u64, u32, Arc<SenderSegment>, usize)>, Refused> {
        if len > self.limit {
            return Err(Refused::OverLimit);
        }
        let mut state = self.lock();
        self.apply_releases(&mut state);
        if state.reserved {
            return Ok(None);
        }
        let start = match find(&state, len) {
            Some((start, _)) => start,
            None => {
                if !self.grow(&mut state, len)? {
                    return Ok(None);
                }
                match find(&state, len) {
                    Some((start, _)) => start,
                    None => return Ok(None),
                }
            }
        };
        let Some(current) = state.segments.back() else {
            return Ok(None);
        };
        let (segment, mem) = (current.id, Arc::clone(&current.mem));
        let id = commit(&mut state, segment, start, len);
        self.publish(&state);
        Ok(Some((id, segment, mem, start)))
    }

    /// The free room at the current segment's cursor, at least `min` bytes,
    /// for one encoder to write into (a larger segment is made if the pool
    /// may grow); `None` if there is none now.
    pub(crate) fn reserve(self: &Arc<Self>, min: usize) -> Option<Reservation> {
        if min > self.limit {
            return None;
        }
        let mut state = self.lock();
        self.apply_releases(&mut state);
        if state.reserved || state.writer_waiting {
            return None;
        }
        let (start, capacity) = match find(&state, min) {
            Some(run) => run,
            None => {
                if !self.grow(&mut state, min).ok()? {
                    return None;
                }
                find(&state, min)?
            }
        };
        let current = state.segments.back()?;
        let reservation = Reservation {
            pool: Arc::clone(self),
            mem: Arc::clone(&current.mem),
            segment: current.id,
            start,
            capacity,
            committed: false,
        };
        state.reserved = true;
        Some(reservation)
    }

    /// The segment of `body`, if its memfd has not gone to the peer yet:
    /// the caller (the link's writer, the only one to send segments) sends
    /// it, then calls [`announced`](Self::announced).
    pub(crate) fn to_announce(&self, body: &PooledBody) -> Option<(u32, Arc<SenderSegment>)> {
        let mut state = self.lock();
        let segment = state.segments.iter_mut().find(|s| s.id == body.segment)?;
        (segment.announced == Announced::No).then(|| {
            segment.announced = Announced::Sending;
            (segment.id, Arc::clone(&segment.mem))
        })
    }

    /// Segment `id`'s memfd went to the peer.
    pub(crate) fn announced(&self, id: u32) {
        let mut state = self.lock();
        if let Some(segment) = state.segments.iter_mut().find(|s| s.id == id) {
            segment.announced = Announced::Yes;
        }
    }

    /// Whether `body`'s segment is known to the peer (its descriptor may go
    /// into the ring from any task).
    pub(crate) fn is_announced(&self, body: &PooledBody) -> bool {
        self.lock()
            .segments
            .iter()
            .any(|s| s.id == body.segment && s.announced == Announced::Yes)
    }

    /// What [`commit_send`](Self::commit_send) would return for `body` now
    /// (the same, while the caller holds the ring's lock).
    pub(crate) fn preview(&self, body: &PooledBody) -> Sending {
        let state = self.lock();
        Sending {
            segment: body.segment,
            oldest: state.segments.front().map_or(body.segment, |s| s.id),
            offset: body.offset as u64,
            seq: state.sent_total,
        }
    }

    /// Numbers `body` among the bodies sent (it is freed when the peer
    /// releases it) and returns what its descriptor says. Call this under
    /// the ring's lock, with the descriptor written in the same hold, so
    /// the numbers follow the ring's order.
    pub(crate) fn commit_send(&self, mut body: PooledBody) -> Sending {
        body.sent = true;
        let mut state = self.lock();
        state.unsent = state.unsent.saturating_sub(1);
        state.sent.push_back(body.id);
        totals::SENT.fetch_add(1, Ordering::Relaxed);
        let seq = state.sent_total;
        state.sent_total += 1;
        let oldest = state.segments.front().map_or(body.segment, |s| s.id);
        Sending {
            segment: body.segment,
            oldest,
            offset: body.offset as u64,
            seq,
        }
    }

    /// Whether room is held by what only this side can free (a loan, a
    /// body not sent yet, an encoder writing): a writer waiting for the
    /// peer's releases might then wait for ever, so it sends its body
    /// another way.
    pub(crate) fn held_here(&self) -> bool {
        let state = self.lock();
        state.reserved || state.unsent > 0 || !state.loans.is_empty()
    }

    /// The link's writer waits for room (`true`) or no longer does.
    pub(crate) fn writer_waiting(&self, waiting: bool) {
        self.lock().writer_waiting = waiting;
    }

    /// Frees what the peer has released since the last look (the debug
    /// views call this before they read the pool's gauges).
    pub(crate) fn note_releases(&self) {
        let mut state = self.lock();
        self.apply_releases(&mut state);
    }

    /// Counts a body that travelled as a region of its own because the
    /// pool could not take it.
    pub(crate) fn fell_back(&self) {
        self.counters.pool_fallbacks.fetch_add(1, Ordering::Relaxed);
        totals::FALLBACKS.fetch_add(1, Ordering::Relaxed);
    }

    /// Frees what the peer has released since the last look.
    fn apply_releases(&self, state: &mut State) {
        // A peer claiming more than was sent only hurts its own copies.
        let released = self.words.peer_released().min(state.sent_total);
        while state.released < released {
            state.released += 1;
            if let Some(id) = state.sent.pop_front() {
                free(state, id);
            }
        }
        reclaim(state);
        self.publish(state);
    }

    /// Makes a segment that can take `len` bytes, if the pool may grow;
    /// `Ok(false)`: it may not (wait for releases).
    fn grow(&self, state: &mut State, len: usize) -> Result<bool, Refused> {
        let held: usize = state
            .segments
            .iter()
            .filter(|s| s.chunks > 0)
            .map(|s| s.mem.len())
            .sum();
        let current = state.segments.back().map_or(0, |s| s.mem.len());
        // Twice the current segment: a pool that keeps running out grows
        // to its working set in a few steps.
        let mut size = MIN_SEGMENT
            .max(len.saturating_mul(2).next_power_of_two())
            .max(current.saturating_mul(2));
        if held + size > self.limit {
            size = (self.limit - held.min(self.limit)) & !4095;
        }
        if size < len {
            return Ok(false);
        }
        let mem = match SenderSegment::new(size) {
            Ok(mem) => mem,
            Err(err) => {
                tracing::warn!(size, %err, "cannot make a shared-memory pool segment");
                return if held == 0 {
                    Err(Refused::NoMemory)
                } else {
                    Ok(false)
                };
            }
        };
        let id = state.next_segment;
        state.next_segment = state.next_segment.wrapping_add(1);
        state.segments.push_back(Segment {
            id,
            mem: Arc::new(mem),
            cursor: 0,
            chunks: 0,
            announced: Announced::No,
        });
        reclaim(state);
        tracing::debug!(size, id, "shared-memory pool segment made");
        Ok(true)
    }

    /// Gives up one hold on chunk `id` (freed once none is left), forgets
    /// what is free at the front, and updates the counters.
    fn give_back(&self, state: &mut State, id: u64) {
        free(state, id);
        reclaim(state);
        self.publish(state);
    }

    /// Updates the counters the debug views read.
    fn publish(&self, state: &State) {
        let capacity: usize = state.segments.iter().map(|s| s.mem.len()).sum();
        let in_use = self
            .counters
            .pool_in_use
            .swap(state.in_use as u64, Ordering::Relaxed);
        track(&totals::IN_USE, in_use, state.in_use as u64);
        let held = self
            .counters
            .pool_capacity
            .swap(capacity as u64, Ordering::Relaxed);
        track(&totals::HELD, held, capacity as u64);
    }
}

impl Drop for SendPool {
    fn drop(&mut self) {
        // Its segments go with it.
        let in_use = self.counters.pool_in_use.swap(0, Ordering::Relaxed);
        track(&totals::IN_USE, in_use, 0);
        let held = self.counters.pool_capacity.swap(0, Ordering::Relaxed);
        track(&totals::HELD, held, 0);
    }
}

#[cfg(test)]
impl SendPool {
    /// Chunks the pool keeps track of (bodies and loans not freed).
    pub(crate) fn chunks_tracked(&self) -> usize {
        self.lock().chunks.len()
    }

    /// Writes `byte` over every segment, as a hostile sender could.
    pub(crate) fn scribble(&self, byte: u8) {
        let state = self.lock();
        for segment in &state.segments {
            let junk = vec![byte; segment.mem.len()];
            assert!(segment.mem.write(0, &junk));
        }
    }
}

/// The loan of chunk `chunk` (if it is still alive) was not sent in place
/// after all: a later send may try again.
fn loan_may_go_in_place(state: &mut State, chunk: u64) {
    if let Some(entry) = state.loans.iter_mut().find(|e| e.chunk == chunk) {
        entry.in_place = false;
    }
}

/// Gives up one hold on chunk `id`; with none left it is freed and
/// forgotten.
fn free(state: &mut State, id: u64) {
    let Some(chunk) = state.chunks.get_mut(&id) else {
        return;
    };
    chunk.holds = chunk.holds.saturating_sub(1);
    if chunk.holds == 0 {
        let (len, segment) = (chunk.len, chunk.segment);
        state.chunks.remove(&id);
        state.in_use -= len;
        // Its segment goes (in `reclaim`) once it holds no live chunk.
        if let Some(segment) = state.segments.iter_mut().find(|s| s.id == segment) {
            segment.chunks -= 1;
        }
    }
}

/// Forgets segments (not the current one) that hold no chunk any more.
fn reclaim(state: &mut State) {
    let current = state.segments.back().map(|s| s.id);
    state
        .segments
        .retain(|s| s.chunks > 0 || Some(s.id) == current);
}

/// Free room in the current segment of at least `min` bytes: (offset,
/// length) of the first run found (at the cursor, else at the start).
fn find(state: &State, min: usize) -> Option<(usize, usize)> {
    let current = state.segments.back()?;
    let len = current.mem.len();
    // The oldest body of this segment still in use.
    let head = state
        .chunks
        .values()
        .find(|c| c.segment == current.id)
        .map(|c| c.start);
    let Some(head) = head else {
        return (len >= min).then_some((0, len));
    };
    let cursor = current.cursor;
    let runs = if head < cursor {
        [(cursor, len - cursor), (0, head)]
    } else {
        [(cursor, head - cursor), (0, 0)]
    };
    runs.into_iter().find(|&(_, room)| room >= min)
}

/// Records a body at `start` of segment `segment`; returns its id.
fn commit(state: &mut State, segment: u32, start: usize, len: usize) -> u64 {
    let id = state.next_chunk;
    state.next_chunk += 1;
    state.chunks.insert(
        id,
        Chunk {
            segment,
            start,
            len,
            holds: 1,
        },
    );
    state.in_use += len;
    if let Some(current) = state.segments.iter_mut().find(|s| s.id == segment) {
        current.cursor = start + len;
        current.chunks += 1;
    }
    id
}

impl PooledBody {
    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies `bytes` into the body at `at`; `false` if they do not fit.
    pub(crate) fn write(&self, at: usize, bytes: &[u8]) -> bool {
        if at.checked_add(bytes.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        self.mem.write(self.offset + at, bytes)
    }

    /// The pool it is in.
    pub(crate) fn pool(&self) -> &Arc<SendPool> {
        &self.pool
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if !self.sent {
            let mut state = self.pool.lock();
            state.unsent = state.unsent.saturating_sub(1);
            if self.loan {
                loan_may_go_in_place(&mut state, self.id);
            }
            self.pool.give_back(&mut state, self.id);
        }
    }
}

impl Reservation {
    /// Bytes it can take.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Copies `bytes` to `at` of the reserved room; `false` if they do not
    /// fit.
    pub(crate) fn write(&self, at: usize, bytes: &[u8]) -> bool {
        at.checked_add(bytes.len())
            .is_some_and(|end| end <= self.capacity)
            && self.mem.write(self.start + at, bytes)
    }

    /// The first `len` bytes written, copied back out.
    pub(crate) fn read(&self, len: usize) -> Option<Vec<u8>> {
        self.mem.read(self.start, len.min(self.capacity))
    }

    /// Keeps the first `len` bytes as a body; the rest of the room is free
    /// again.
    pub(crate) fn commit(mut self, len: usize) -> PooledBody {
        let len = len.min(self.capacity);
        self.committed = true;
        let pool = Arc::clone(&self.pool);
        let mut state = pool.lock();
        state.reserved = false;
        state.unsent += 1;
        let id = commit(&mut state, self.segment, self.start, len);
        pool.publish(&state);
        drop(state);
        PooledBody {
            pool,
            mem: Arc::clone(&self.mem),
            id,
            segment: self.segment,
            offset: self.start,
            len,
            sent: false,
            loan: false,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.committed {
            self.pool.lock().reserved = false;
        }
    }
}

/// Room lent to a caller to fill in place: the bytes of a body it will
/// send (see the module docs). Dropping it gives its hold on the room up.
#[derive(Debug)]
pub(crate) struct PoolLoan {
    pool: Arc<SendPool>,
    lease: Lease,
    chunk: u64,
}

impl PoolLoan {
    /// Its bytes, to write.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        self.lease.as_mut_slice()
    }
}

impl AsRef<[u8]> for PoolLoan {
    fn as_ref(&self) -> &[u8] {
        self.lease.as_slice()
    }
}

impl Drop for PoolLoan {
    fn drop(&mut self) {
        self.pool.loans_alive.fetch_sub(1, Ordering::Relaxed);
        let mut state = self.pool.lock();
        state.loans.retain(|e| e.chunk != self.chunk);
        self.pool.give_back(&mut state, self.chunk);
    }
}

/// A loan an encoder met: it writes the body's other bytes around the
/// loaned ones ([`write`](Self::write)), then makes it the body
/// ([`into_body`](Self::into_body)). Dropped unused, the loan may be sent
/// in place again.
#[derive(Debug)]
pub(crate) struct LoanSite {
    pool: Arc<SendPool>,
    mem: Arc<SenderSegment>,
    chunk: u64,
    segment: u32,
    /// The loan's whole room in the segment: start and end.
    room: (usize, usize),
    /// The loaned bytes: offset and length.
    data: (usize, usize),
    used: bool,
}

impl LoanSite {
    /// Where the loaned bytes start in the segment.
    pub(crate) fn data_offset(&self) -> usize {
        self.data.0
    }

    /// Where the loaned bytes end in the segment.
    pub(crate) fn data_end(&self) -> usize {
        self.data.0 + self.data.1
    }

    /// Bytes that fit before the loaned ones.
    pub(crate) fn headroom(&self) -> usize {
        self.data.0 - self.room.0
    }

    /// Where the room ends in the segment.
    pub(crate) fn room_end(&self) -> usize {
        self.room.1
    }

    /// Copies `bytes` to `offset` of the segment, which must be in the
    /// room and not over the loaned bytes; `false` (nothing written)
    /// otherwise.
    pub(crate) fn write(&self, offset: usize, bytes: &[u8]) -> bool {
        let Some(end) = offset.checked_add(bytes.len()) else {
            return false;
        };
        let before = offset >= self.room.0 && end <= self.data.0;
        let after = offset >= self.data_end() && end <= self.room.1;
        (before || after) && self.mem.write(offset, bytes)
    }

    /// The `len` bytes at `offset` of the segment, copied out (a body that
    /// outgrew the room goes back to the heap).
    pub(crate) fn read(&self, offset: usize, len: usize) -> Option<Vec<u8>> {
        (offset >= self.room.0 && offset.checked_add(len)? <= self.room.1)
            .then(|| self.mem.read(offset, len))?
    }

    /// The body of `len` bytes at `offset`, sent from where it lies.
    pub(crate) fn into_body(mut self, offset: usize, len: usize) -> PooledBody {
        self.used = true;
        self.pool
            .counters
            .pool_loaned
            .fetch_add(1, Ordering::Relaxed);
        totals::LOANED.fetch_add(1, Ordering::Relaxed);
        self.pool.lock().unsent += 1;
        PooledBody {
            pool: Arc::clone(&self.pool),
            mem: Arc::clone(&self.mem),
            id: self.chunk,
            segment: self.segment,
            offset,
            len,
            sent: false,
            loan: true,
        }
    }
}

impl Drop for LoanSite {
    fn drop(&mut self) {
        if self.used {
            // The body holds the room now.
            return;
        }
        let mut state = self.pool.lock();
        loan_may_go_in_place(&mut state, self.chunk);
        self.pool.give_back(&mut state, self.chunk);
    }
}
