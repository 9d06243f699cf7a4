//! A lock-free single-producer/single-consumer byte ring over shared memory.
//!
//! The shm transport carries the same byte stream of frames as the socket
//! transports, so a ring is a byte pipe: the producer copies bytes in, the
//! consumer copies them out, and the sans-IO `FrameDecoder` splits them into
//! frames afterwards. Each direction of a connection has its own ring.
//!
//! # Layout
//!
//! A ring occupies [`region_len`]`(capacity)` bytes starting at a 128-byte
//! aligned address (in practice: a page of a mapped memfd). The header is
//! [`RING_HEADER_LEN`] bytes of cache-line separated words (offsets in
//! [`layout`], all little-endian native atomics):
//!
//! | line | word | written by |
//! |------|------|------------|
//! | 0 | magic `u64`, version `u32`, capacity `u64` | the side that initialises it, once |
//! | 1 | `tail` `u64`: bytes ever written | producer |
//! | 2 | `head` `u64`: bytes ever read | consumer |
//! | 3 | `consumer_waiting` `u32`: sleep sequence, odd while waiting | consumer |
//! | 4 | `producer_waiting` `u32`: sleep sequence, odd while waiting | producer |
//!
//! then `capacity` data bytes (a power of two); byte `i` of the stream lives
//! at `data[i % capacity]`.
//!
//! # The peer is not trusted
//!
//! The other process can write any value into any byte of the region at any
//! time. So each side keeps its own index in private memory (the shared
//! word is only a publication of it), reads every peer-written word exactly
//! once into a local, validates it (`tail - head <= capacity`, wrapping)
//! before using it, and copies data with raw-pointer copies into private
//! memory: no `&[u8]` or `&T` is ever formed over the region (only
//! `&AtomicU64`/`&AtomicU32`, which are interior-mutable). A violation is
//! [`RingError::Corrupt`], which is connection-fatal; nothing the peer
//! writes can make this module panic or access memory outside the region.
//! The capacity is read once, when attaching, and kept privately.
//!
//! # Waking only sleepers
//!
//! The ring does not sleep or wake anyone; it tells the caller when to. A
//! consumer about to sleep calls [`Consumer::prepare_to_wait`], which
//! publishes a new odd value in `consumer_waiting` (a sleep sequence number:
//! odd while waiting, even while awake), issues a `SeqCst` fence and
//! re-checks `tail`: it returns `false` (and publishes "awake") if data
//! arrived meanwhile. The producer, after publishing `tail`, issues a
//! `SeqCst` fence and reads `consumer_waiting`: if it is odd and not the
//! sleep it already woke (remembered privately),
//! [`WriteOutcome::wake_peer`] is `true` and the caller must wake the
//! consumer (write its eventfd). The two fences make it impossible for the
//! consumer to miss the data *and* the producer to miss the announcement
//! (the store-buffering litmus test; modelled by the loom tests below). So
//! each sleep is woken at most once, and no flag is written by both sides:
//! every shared word has a single writer. `producer_waiting` works the same
//! way for a producer waiting for space, with [`ReadOutcome::wake_peer`].
//! Wake-ups can be spurious, so a woken side re-checks the ring; after
//! waking (or giving up on sleeping) it calls `cancel_wait`.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::sync::Arc;

use bytes::BytesMut;

use crate::sync::{AtomicU32, AtomicU64, Ordering, fence};

/// The cache-line size the header separates its words by (two 64-byte lines,
/// because adjacent-line prefetching shares pairs of lines).
pub const CACHE_LINE: usize = 128;
/// The alignment a ring region must start at.
pub const RING_ALIGN: usize = CACHE_LINE;
/// The bytes of header before the data area.
pub const RING_HEADER_LEN: usize = 5 * CACHE_LINE;
/// The smallest capacity a ring accepts.
pub const MIN_CAPACITY: usize = 8;
/// The largest capacity a ring accepts (1 GiB).
pub const MAX_CAPACITY: usize = 1 << 30;
/// The first word of an initialised ring: `b"SWYDRING"` little-endian.
pub const RING_MAGIC: u64 = u64::from_le_bytes(*b"SWYDRING");
/// The layout version this build writes and accepts.
pub const RING_VERSION: u32 = 1;

/// Byte offsets of the header words from the start of a ring region.
pub mod layout {
    /// `u64`: [`RING_MAGIC`](super::RING_MAGIC), written last at init.
    pub const MAGIC: usize = 0;
    /// `u32`: [`RING_VERSION`](super::RING_VERSION).
    pub const VERSION: usize = 8;
    /// `u64`: the data capacity in bytes, a power of two.
    pub const CAPACITY: usize = 16;
    /// `u64`: bytes ever written (producer-owned).
    pub const TAIL: usize = super::CACHE_LINE;
    /// `u64`: bytes ever read (consumer-owned).
    pub const HEAD: usize = 2 * super::CACHE_LINE;
    /// `u32`: the consumer's sleep sequence, odd while it sleeps or is about
    /// to.
    pub const CONSUMER_WAITING: usize = 3 * super::CACHE_LINE;
    /// `u32`: the producer's sleep sequence, odd while it sleeps or is about
    /// to.
    pub const PRODUCER_WAITING: usize = 4 * super::CACHE_LINE;
    /// The first data byte.
    pub const DATA: usize = super::RING_HEADER_LEN;
}

/// The bytes a ring of `capacity` data bytes occupies: header plus data,
/// rounded up to [`RING_ALIGN`] so that rings can be laid out back to back
/// (the second at offset `region_len(first_capacity)`).
///
/// Meaningful for capacities up to [`MAX_CAPACITY`].
pub const fn region_len(capacity: usize) -> usize {
    (RING_HEADER_LEN + capacity).next_multiple_of(RING_ALIGN)
}

/// Whether a ring is created over the region or joins one the peer created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Write a fresh header (indices zero) for `capacity` data bytes, a
    /// power of two between [`MIN_CAPACITY`] and [`MAX_CAPACITY`].
    Init {
        /// The data capacity in bytes.
        capacity: usize,
    },
    /// Validate the header the peer wrote (magic, version, capacity, length)
    /// and take the capacity from it.
    Attach,
}

/// The peer broke the ring's invariants. Connection-fatal: stop using the
/// ring and close the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// A peer-written word failed validation.
    #[error("shared-memory ring corrupted by the peer: {what}; close the connection")]
    Corrupt {
        /// Which check failed.
        what: &'static str,
    },
}

impl From<RingError> for io::Error {
    fn from(error: RingError) -> Self {
        Self::new(io::ErrorKind::InvalidData, error)
    }
}

/// Why a region cannot hold (or does not hold) a ring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// A build with `cfg(loom)` cannot put a ring in shared memory: the
    /// model tests use [`Ring::in_heap`].
    #[error("loom builds cannot model shared memory; use Ring::in_heap in loom tests")]
    ModelOnly,
    /// The region does not start on a [`RING_ALIGN`] boundary.
    #[error(
        "ring region at {addr:#x} is not {RING_ALIGN}-byte aligned; place rings at page offsets or at multiples of region_len()"
    )]
    Misaligned {
        /// The region's address.
        addr: usize,
    },
    /// The region is shorter than the ring needs.
    #[error("ring region is {len} bytes but needs {needed}; size it with region_len(capacity)")]
    TooShort {
        /// The region's length.
        len: usize,
        /// The length the ring needs.
        needed: usize,
    },
    /// The capacity is not a power of two in range.
    #[error(
        "ring capacity {capacity} is not a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}"
    )]
    BadCapacity {
        /// The capacity asked for or found in the header.
        capacity: u64,
    },
    /// The region does not start with [`RING_MAGIC`].
    #[error(
        "region holds no switchyard ring (magic {found:#018x}); the peer must initialise it (Role::Init) before sharing it"
    )]
    BadMagic {
        /// The word found.
        found: u64,
    },
    /// The ring was laid out by a build with another layout version.
    #[error(
        "ring layout version {found} is not supported (this build speaks {RING_VERSION}); run matching switchyard versions on both sides"
    )]
    BadVersion {
        /// The version found.
        found: u32,
    },
    /// The sub-range asked for is not inside the mapping.
    #[error(
        "ring range {offset}+{len} lies outside the {map_len}-byte mapping; map the whole region"
    )]
    OutsideMapping {
        /// Start of the range.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// Length of the mapping.
        map_len: usize,
    },
    /// Another ring in this process already uses these addresses.
    #[error(
        "memory at {addr:#x} already backs a ring in this process; split one Ring into its producer and consumer instead of opening it twice"
    )]
    InUse {
        /// The region's address.
        addr: usize,
    },
}

impl From<RegionError> for io::Error {
    fn from(error: RegionError) -> Self {
        Self::new(io::ErrorKind::InvalidData, error)
    }
}

/// What a write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "when wake_peer is set the consumer sleeps until the caller wakes it"]
pub struct WriteOutcome {
    /// Bytes copied into the ring (fewer than offered when it is full).
    pub written: usize,
    /// The consumer was waiting for data: wake it (write its eventfd).
    pub wake_peer: bool,
}

/// What a read did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "when wake_peer is set the producer sleeps until the caller wakes it"]
pub struct ReadOutcome {
    /// Bytes copied out of the ring.
    pub read: usize,
    /// The producer was waiting for space: wake it (write its eventfd).
    pub wake_peer: bool,
}

/// A ring over a region, before it is split into its two ends.
///
/// In one process the ring is usually either produced into or consumed
/// from ([`into_producer`](Self::into_producer),
/// [`into_consumer`](Self::into_consumer)); the peer process holds the other
/// end. [`split`](Self::split) gives both ends (tests, one-process use).
pub struct Ring {
    inner: Arc<Inner>,
}

impl Ring {
    /// Opens a ring over `len` bytes at `ptr`.
    ///
    /// Alignment, length and (for [`Role::Attach`]) the header are checked
    /// and reported as [`RegionError`]; a second ring over the same
    /// addresses in this process is refused ([`RegionError::InUse`]).
    ///
    /// # Safety
    ///
    /// The caller guarantees that `ptr..ptr + len` is mapped readable and
    /// writable, and stays mapped and at least `len` long until the `Ring`
    /// and every [`Producer`] and [`Consumer`] made from it are dropped
    /// (for a memfd: sealed against shrinking, see `sys::shm::map_sealed`).
    /// No Rust reference (`&[u8]`, `&mut [u8]`, `&T`) to any of these bytes
    /// may exist in this process while the ring is in use: other processes
    /// may write them at any time, and this module only touches them through
    /// atomics and raw-pointer copies.
    #[cfg(not(loom))]
    pub unsafe fn from_raw(ptr: *mut u8, len: usize, role: Role) -> Result<Self, RegionError> {
        // SAFETY: forwarded: the caller upholds `Inner::open`'s contract,
        // which is this function's.
        let inner = unsafe { Inner::open(ptr, len, role, Backing::Borrowed) }?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Opens a ring over `len` bytes at `offset` of `map`, which the ring
    /// and its ends keep alive.
    ///
    /// `map` must not shrink while mapped: map memfds with
    /// `sys::shm::map_sealed`, which checks the seals first (a truncated
    /// mapping raises SIGBUS on access).
    #[cfg(not(loom))]
    pub fn from_mmap(
        map: Arc<memmap2::MmapRaw>,
        offset: usize,
        len: usize,
        role: Role,
    ) -> Result<Self, RegionError> {
        let outside = RegionError::OutsideMapping {
            offset,
            len,
            map_len: map.len(),
        };
        match offset.checked_add(len) {
            Some(end) if end <= map.len() => {}
            _ => return Err(outside),
        }
        let ptr = map.as_mut_ptr().wrapping_add(offset);
        // SAFETY: `offset..offset + len` lies inside the mapping (checked
        // above), which stays mapped while `Backing::Mapped` holds the Arc;
        // the mapping's length cannot change (the caller's seals, see the
        // doc). `MmapRaw` hands out only raw pointers, so no reference into
        // the bytes exists on our side; a second ring over the same
        // addresses is refused by the claim registry in `Inner::open`.
        let inner = unsafe { Inner::open(ptr, len, role, Backing::Mapped(map)) }?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Under loom, memory shared with another process cannot be modelled:
    /// the model tests use [`in_heap`](Self::in_heap). Present so that the
    /// transport built on the ring compiles under `cfg(loom)`.
    ///
    /// # Safety
    ///
    /// As without loom; this version touches nothing and returns
    /// [`RegionError::ModelOnly`].
    #[cfg(loom)]
    pub unsafe fn from_raw(_ptr: *mut u8, _len: usize, _role: Role) -> Result<Self, RegionError> {
        Err(RegionError::ModelOnly)
    }

    /// Under loom, see [`from_raw`](Self::from_raw).
    #[cfg(loom)]
    pub fn from_mmap(
        _map: Arc<memmap2::MmapRaw>,
        _offset: usize,
        _len: usize,
        _role: Role,
    ) -> Result<Self, RegionError> {
        Err(RegionError::ModelOnly)
    }

    /// A ring over a fresh, zeroed heap buffer of `region_len(capacity)`
    /// bytes: for one-process use and tests, and the only constructor under
    /// loom and miri (which cannot see shared memory).
    pub fn in_heap(capacity: usize) -> Result<Self, RegionError> {
        let capacity = check_capacity(capacity as u64)?;
        Ok(Self {
            inner: Arc::new(Inner::heap(capacity)?),
        })
    }

    /// The data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Both ends of the ring.
    pub fn split(self) -> (Producer, Consumer) {
        (Producer::new(self.inner.clone()), Consumer::new(self.inner))
    }

    /// The producing end; the peer consumes.
    pub fn into_producer(self) -> Producer {
        Producer::new(self.inner)
    }

    /// The consuming end; the peer produces.
    pub fn into_consumer(self) -> Consumer {
        Consumer::new(self.inner)
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

/// The writing end of a ring. `Send`, not `Sync`: one thread writes at a
/// time (wrap it in a mutex to share it).
pub struct Producer {
    inner: Arc<Inner>,
    /// Our index; the shared `tail` word only publishes it.
    tail: Cell<u64>,
    /// The last validated `head`; space is re-read only when it runs out.
    head: Cell<u64>,
    /// Our sleep sequence, published in `producer_waiting`.
    sleep: Sleep,
    /// The consumer sleep we last woke.
    woken: Cell<u32>,
}

impl Producer {
    fn new(inner: Arc<Inner>) -> Self {
        let tail = inner.header.tail().load(Ordering::Relaxed);
        // Pretend the ring is full, so the first write reads `head`.
        let head = tail.wrapping_sub(inner.capacity as u64);
        let sleep = Sleep::new(inner.header.producer_waiting());
        Self {
            inner,
            tail: Cell::new(tail),
            head: Cell::new(head),
            sleep,
            woken: Cell::new(0),
        }
    }

    /// The data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Copies as much of `bytes` as fits and publishes it.
    ///
    /// Writes nothing when the ring is full (`written == 0`): spin, or
    /// [`prepare_to_wait`](Self::prepare_to_wait) and sleep until the
    /// consumer's [`ReadOutcome::wake_peer`] wakes this side. When the
    /// result's `wake_peer` is set, wake the consumer.
    pub fn write(&self, bytes: &[u8]) -> Result<WriteOutcome, RingError> {
        let capacity = self.inner.capacity;
        let tail = self.tail.get();
        let mut free = capacity.saturating_sub(used(tail, self.head.get()));
        if free < bytes.len() {
            free = capacity - self.reload_head()?;
        }
        let n = free.min(bytes.len());
        if n == 0 {
            return Ok(WriteOutcome::default());
        }
        self.inner.data.copy_in(tail, &bytes[..n]);
        let tail = tail.wrapping_add(n as u64);
        self.tail.set(tail);
        let header = &self.inner.header;
        header.tail().store(tail, Ordering::Release);
        // Pairs with the fence in `Consumer::prepare_to_wait`: either the
        // consumer sees the new tail or we see its flag.
        fence(Ordering::SeqCst);
        Ok(WriteOutcome {
            written: n,
            wake_peer: must_wake(header.consumer_waiting(), &self.woken),
        })
    }

    /// Free bytes now (reads `head` once).
    pub fn free_space(&self) -> Result<usize, RingError> {
        Ok(self.inner.capacity - self.reload_head()?)
    }

    /// Announces that this side is about to sleep until there is space.
    /// Returns `false` (and withdraws the announcement) if there is space
    /// already, or if `head` is corrupt (the next write reports it); on
    /// `true`, sleep until woken, then call
    /// [`cancel_wait`](Self::cancel_wait) and retry.
    pub fn prepare_to_wait(&self) -> bool {
        let word = self.inner.header.producer_waiting();
        self.sleep.begin(word);
        // Pairs with the fence in `Consumer::finish`.
        fence(Ordering::SeqCst);
        let full = matches!(self.reload_head(), Ok(used) if used == self.inner.capacity);
        if !full {
            self.sleep.end(word);
        }
        full
    }

    /// Withdraws a [`prepare_to_wait`](Self::prepare_to_wait): this side is
    /// awake.
    pub fn cancel_wait(&self) {
        self.sleep.end(self.inner.header.producer_waiting());
    }

    /// Reads and validates the peer's `head` once; returns the bytes in use.
    fn reload_head(&self) -> Result<usize, RingError> {
        let head = self.inner.header.head().load(Ordering::Acquire);
        let in_use = self.tail.get().wrapping_sub(head);
        if in_use > self.inner.capacity as u64 {
            return Err(RingError::Corrupt {
                what: "head is ahead of tail or more than the capacity behind it",
            });
        }
        self.head.set(head);
        Ok(in_use as usize)
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.inner.capacity)
            .field("tail", &self.tail.get())
            .finish_non_exhaustive()
    }
}

/// The reading end of a ring. `Send`, not `Sync`: one thread reads at a
/// time (wrap it in a mutex to share it).
pub struct Consumer {
    inner: Arc<Inner>,
    /// Our index; the shared `head` word only publishes it.
    head: Cell<u64>,
    /// Our sleep sequence, published in `consumer_waiting`.
    sleep: Sleep,
    /// The producer sleep we last woke.
    woken: Cell<u32>,
}

impl Consumer {
    fn new(inner: Arc<Inner>) -> Self {
        let head = inner.header.head().load(Ordering::Relaxed);
        let sleep = Sleep::new(inner.header.consumer_waiting());
        Self {
            inner,
            head: Cell::new(head),
            sleep,
            woken: Cell::new(0),
        }
    }

    /// The data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Copies up to `out.len()` available bytes into `out`.
    ///
    /// Reads nothing when the ring is empty (`read == 0`): spin, or
    /// [`prepare_to_wait`](Self::prepare_to_wait) and sleep. When the
    /// result's `wake_peer` is set, wake the producer.
    pub fn read(&self, out: &mut [u8]) -> Result<ReadOutcome, RingError> {
        let (head, available) = self.readable()?;
        let n = available.min(out.len());
        if n == 0 {
            return Ok(ReadOutcome::default());
        }
        let out = &mut out[..n];
        // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and
        // `copy_out` writes only initialised bytes, so `out` stays
        // initialised; the cast keeps the borrow's length and lifetime.
        let out = unsafe { &mut *(std::ptr::from_mut(out) as *mut [MaybeUninit<u8>]) };
        self.inner.data.copy_out(head, out);
        Ok(self.finish(head, n))
    }

    /// Appends up to `max` available bytes to `out` (reserving room).
    pub fn read_buf(&self, out: &mut BytesMut, max: usize) -> Result<ReadOutcome, RingError> {
        let (head, available) = self.readable()?;
        let n = available.min(max);
        if n == 0 {
            return Ok(ReadOutcome::default());
        }
        out.reserve(n);
        self.inner
            .data
            .copy_out(head, &mut out.spare_capacity_mut()[..n]);
        // SAFETY: `copy_out` initialised the first `n` bytes of the spare
        // capacity, which `reserve` made at least `n` long.
        unsafe { out.set_len(out.len() + n) };
        Ok(self.finish(head, n))
    }

    /// Bytes available now (reads `tail` once).
    pub fn available(&self) -> Result<usize, RingError> {
        Ok(self.readable()?.1)
    }

    /// Announces that this side is about to sleep until data arrives.
    /// Returns `false` (and withdraws the announcement) if data is there
    /// already, or if `tail` is corrupt (the next read reports it); on
    /// `true`, sleep until woken, then call
    /// [`cancel_wait`](Self::cancel_wait) and retry.
    pub fn prepare_to_wait(&self) -> bool {
        let word = self.inner.header.consumer_waiting();
        self.sleep.begin(word);
        // Pairs with the fence in `Producer::write`.
        fence(Ordering::SeqCst);
        let empty = matches!(self.readable(), Ok((_, 0)));
        if !empty {
            self.sleep.end(word);
        }
        empty
    }

    /// Withdraws a [`prepare_to_wait`](Self::prepare_to_wait): this side is
    /// awake.
    pub fn cancel_wait(&self) {
        self.sleep.end(self.inner.header.consumer_waiting());
    }

    /// Reads and validates the peer's `tail` once: (our head, bytes
    /// available).
    fn readable(&self) -> Result<(u64, usize), RingError> {
        let head = self.head.get();
        let tail = self.inner.header.tail().load(Ordering::Acquire);
        let available = tail.wrapping_sub(head);
        if available > self.inner.capacity as u64 {
            return Err(RingError::Corrupt {
                what: "tail is behind head or more than the capacity ahead of it",
            });
        }
        Ok((head, available as usize))
    }

    /// Publishes that `n` bytes from `head` were consumed.
    fn finish(&self, head: u64, n: usize) -> ReadOutcome {
        let head = head.wrapping_add(n as u64);
        self.head.set(head);
        let header = &self.inner.header;
        header.head().store(head, Ordering::Release);
        // Pairs with the fence in `Producer::prepare_to_wait`.
        fence(Ordering::SeqCst);
        ReadOutcome {
            read: n,
            wake_peer: must_wake(header.producer_waiting(), &self.woken),
        }
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.inner.capacity)
            .field("head", &self.head.get())
            .finish_non_exhaustive()
    }
}

/// Bytes in use between two indices we validated earlier.
fn used(tail: u64, head: u64) -> usize {
    // Both came from validated states (tail - head <= capacity), so this
    // fits; `min` keeps it so even if that ever stopped being true.
    tail.wrapping_sub(head).min(usize::MAX as u64) as usize
}

/// Whether the peer announced a sleep in `word` (read once; odd means
/// asleep or about to be) that we have not woken yet; remembers it.
fn must_wake(word: &AtomicU32, woken: &Cell<u32>) -> bool {
    let seq = word.load(Ordering::Relaxed);
    if seq & 1 == 1 && seq != woken.get() {
        woken.set(seq);
        true
    } else {
        false
    }
}

/// One side's sleep sequence: a private counter published in a header word
/// only this side writes; odd while waiting, even while awake. Every
/// `begin` starts a new odd value, so the peer wakes each sleep once.
struct Sleep {
    seq: Cell<u32>,
}

impl Sleep {
    fn new(word: &AtomicU32) -> Self {
        Self {
            seq: Cell::new(word.load(Ordering::Relaxed)),
        }
    }

    fn begin(&self, word: &AtomicU32) {
        let seq = self.seq.get();
        let next = seq.wrapping_add(if seq & 1 == 1 { 2 } else { 1 });
        self.seq.set(next);
        word.store(next, Ordering::Relaxed);
    }

    fn end(&self, word: &AtomicU32) {
        let seq = self.seq.get();
        if seq & 1 == 1 {
            self.seq.set(seq.wrapping_add(1));
            word.store(seq.wrapping_add(1), Ordering::Relaxed);
        }
    }
}

fn check_capacity(capacity: u64) -> Result<usize, RegionError> {
    if capacity.is_power_of_two()
        && capacity >= MIN_CAPACITY as u64
        && capacity <= MAX_CAPACITY as u64
    {
        Ok(capacity as usize)
    } else {
        Err(RegionError::BadCapacity { capacity })
    }
}

/// The shared state of one ring: header words, data bytes, what keeps the
/// memory alive.
struct Inner {
    header: Header,
    data: Data,
    capacity: usize,
    #[cfg(not(loom))]
    _claim: Claim,
    #[cfg(not(loom))]
    _backing: Backing,
}

// SAFETY: the raw pointers in `Header` and `Data` point into memory that
// `Backing` (or the `from_raw` caller) keeps alive for the `Inner`'s life.
// All shared words are atomics. Data bytes are written only by the one
// `Producer` and read only by the one `Consumer` of this `Inner` (`Ring`
// splits at most once, both ends are `!Sync`, and the claim registry refuses
// a second `Inner` over the same addresses), in ranges the index protocol
// keeps disjoint with Release/Acquire. Under loom the same protocol is
// checked by the model.
unsafe impl Send for Inner {}
// SAFETY: as for `Send`: `&Inner` only exposes atomics and the producer's
// and consumer's disjoint raw-pointer copies.
unsafe impl Sync for Inner {}

#[cfg(not(loom))]
impl Inner {
    /// Validates and claims the region, and initialises or checks its
    /// header.
    ///
    /// # Safety
    ///
    /// As [`Ring::from_raw`]: `base..base + len` is mapped read-write and
    /// stays so while the returned `Inner` lives, and no reference to it
    /// exists in this process.
    unsafe fn open(
        base: *mut u8,
        len: usize,
        role: Role,
        backing: Backing,
    ) -> Result<Self, RegionError> {
        let addr = base as usize;
        if !addr.is_multiple_of(RING_ALIGN) {
            return Err(RegionError::Misaligned { addr });
        }
        if len < RING_HEADER_LEN {
            return Err(RegionError::TooShort {
                len,
                needed: RING_HEADER_LEN,
            });
        }
        let header = Header { base };
        let capacity = match role {
            Role::Init { capacity } => check_capacity(capacity as u64)?,
            Role::Attach => {
                let found = header.u64_at(layout::MAGIC).load(Ordering::Acquire);
                if found != RING_MAGIC {
                    return Err(RegionError::BadMagic { found });
                }
                let found = header.u32_at(layout::VERSION).load(Ordering::Relaxed);
                if found != RING_VERSION {
                    return Err(RegionError::BadVersion { found });
                }
                check_capacity(header.u64_at(layout::CAPACITY).load(Ordering::Relaxed))?
            }
        };
        let needed = region_len(capacity);
        if len < needed {
            return Err(RegionError::TooShort { len, needed });
        }
        let claim = Claim::take(addr, needed)?;
        if let Role::Init { .. } = role {
            header.tail().store(0, Ordering::Relaxed);
            header.head().store(0, Ordering::Relaxed);
            header.consumer_waiting().store(0, Ordering::Relaxed);
            header.producer_waiting().store(0, Ordering::Relaxed);
            header
                .u32_at(layout::VERSION)
                .store(RING_VERSION, Ordering::Relaxed);
            header
                .u64_at(layout::CAPACITY)
                .store(capacity as u64, Ordering::Relaxed);
            header
                .u64_at(layout::MAGIC)
                .store(RING_MAGIC, Ordering::Release);
        }
        Ok(Self {
            header,
            data: Data {
                base: base.wrapping_add(layout::DATA),
                capacity,
            },
            capacity,
            _claim: claim,
            _backing: backing,
        })
    }

    fn heap(capacity: usize) -> Result<Self, RegionError> {
        let len = region_len(capacity);
        let heap = HeapRegion::zeroed(len);
        let base = heap.base();
        // SAFETY: the buffer is `len` bytes, 128-byte aligned, owned by the
        // `Backing::Heap` stored in the result (so it lives as long as the
        // `Inner`), and only reached through the raw pointer `base`.
        unsafe { Self::open(base, len, Role::Init { capacity }, Backing::Heap(heap)) }
    }
}

#[cfg(loom)]
impl Inner {
    fn heap(capacity: usize) -> Result<Self, RegionError> {
        Ok(Self {
            header: Header::default(),
            data: Data {
                cells: (0..capacity)
                    .map(|_| crate::sync::UnsafeCell::new(0))
                    .collect(),
                capacity,
            },
            capacity,
        })
    }
}

/// The header words, reached through raw pointers into the region.
#[cfg(not(loom))]
struct Header {
    base: *mut u8,
}

#[cfg(not(loom))]
impl Header {
    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset.is_multiple_of(8) && offset + 8 <= RING_HEADER_LEN);
        // SAFETY: `base` is RING_ALIGN-aligned and the header's
        // RING_HEADER_LEN bytes are mapped for as long as `self` (part of
        // `Inner`, see `Inner::open`); `offset` is one of the 8-aligned
        // `layout` constants inside the header. An `&AtomicU64` over memory
        // other processes write is sound: atomics are interior-mutable, and
        // every access on our side is atomic.
        unsafe { AtomicU64::from_ptr(self.base.add(offset).cast()) }
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset.is_multiple_of(4) && offset + 4 <= RING_HEADER_LEN);
        // SAFETY: as in `u64_at`, with a 4-aligned `layout` offset.
        unsafe { AtomicU32::from_ptr(self.base.add(offset).cast()) }
    }

    fn tail(&self) -> &AtomicU64 {
        self.u64_at(layout::TAIL)
    }

    fn head(&self) -> &AtomicU64 {
        self.u64_at(layout::HEAD)
    }

    fn consumer_waiting(&self) -> &AtomicU32 {
        self.u32_at(layout::CONSUMER_WAITING)
    }

    fn producer_waiting(&self) -> &AtomicU32 {
        self.u32_at(layout::PRODUCER_WAITING)
    }
}

/// Under loom the header is a struct of loom atomics beside the data.
#[cfg(loom)]
#[derive(Default)]
struct Header {
    tail: AtomicU64,
    head: AtomicU64,
    consumer_waiting: AtomicU32,
    producer_waiting: AtomicU32,
}

#[cfg(loom)]
impl Header {
    fn tail(&self) -> &AtomicU64 {
        &self.tail
    }

    fn head(&self) -> &AtomicU64 {
        &self.head
    }

    fn consumer_waiting(&self) -> &AtomicU32 {
        &self.consumer_waiting
    }

    fn producer_waiting(&self) -> &AtomicU32 {
        &self.producer_waiting
    }
}

/// The data bytes, reached through a raw pointer into the region.
#[cfg(not(loom))]
struct Data {
    base: *mut u8,
    capacity: usize,
}

#[cfg(not(loom))]
impl Data {
    /// Copies `src` to stream position `pos` (wrapping around the end).
    fn copy_in(&self, pos: u64, src: &[u8]) {
        let (start, first, rest) = self.spans(pos, src.len());
        // SAFETY: `spans` keeps `start + first <= capacity` and
        // `rest <= capacity`, so both destinations lie in the data area,
        // which `Inner` keeps mapped; `src` is private memory (we never
        // hand out references into the region), so the ranges cannot
        // overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(start), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), self.base, rest);
        }
    }

    /// Copies `dst.len()` bytes from stream position `pos` into `dst`.
    fn copy_out(&self, pos: u64, dst: &mut [MaybeUninit<u8>]) {
        let (start, first, rest) = self.spans(pos, dst.len());
        let dst = dst.as_mut_ptr().cast::<u8>();
        // SAFETY: as in `copy_in`, both sources lie in the data area and
        // `dst` (private, `first + rest` bytes long) cannot overlap it.
        // The bytes may be changing under a hostile peer; we only copy
        // them, never look at them in place.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(start), dst, first);
            std::ptr::copy_nonoverlapping(self.base, dst.add(first), rest);
        }
    }
}

/// Under loom the data is a heap array of loom cells, so the model checks
/// that producer and consumer never touch the same byte concurrently.
#[cfg(loom)]
struct Data {
    cells: Box<[crate::sync::UnsafeCell<u8>]>,
    capacity: usize,
}

#[cfg(loom)]
impl Data {
    fn copy_in(&self, pos: u64, src: &[u8]) {
        let (start, first, _) = self.spans(pos, src.len());
        for (i, &byte) in src.iter().enumerate() {
            let at = if i < first { start + i } else { i - first };
            // SAFETY: loom tracks the cell and fails the model on a racy
            // access; `at < capacity` by `spans`.
            self.cells[at].with_mut(|p| unsafe { p.write(byte) });
        }
    }

    fn copy_out(&self, pos: u64, dst: &mut [MaybeUninit<u8>]) {
        let (start, first, _) = self.spans(pos, dst.len());
        for (i, out) in dst.iter_mut().enumerate() {
            let at = if i < first { start + i } else { i - first };
            // SAFETY: as in `copy_in`.
            out.write(self.cells[at].with(|p| unsafe { p.read() }));
        }
    }
}

impl Data {
    /// Splits a copy of `n` bytes at stream position `pos` into
    /// `(start, first, rest)`: `first` bytes at `start`, then `rest` at 0.
    fn spans(&self, pos: u64, n: usize) -> (usize, usize, usize) {
        // Callers pass n <= available/free <= capacity, both validated; a
        // larger n would be a bug in this module, not the peer's doing.
        assert!(n <= self.capacity, "ring copy larger than its capacity");
        let start = (pos & (self.capacity as u64 - 1)) as usize;
        let first = n.min(self.capacity - start);
        (start, first, n - first)
    }
}

/// What keeps a ring's memory alive.
#[cfg(not(loom))]
enum Backing {
    /// The `from_raw` caller does.
    Borrowed,
    /// A mapping shared with the other ends of this region.
    Mapped(#[allow(dead_code)] Arc<memmap2::MmapRaw>),
    /// A heap buffer owned here.
    Heap(#[allow(dead_code)] HeapRegion),
}

/// One cache line, the unit (and alignment) of a heap region.
#[cfg(not(loom))]
#[repr(C, align(128))]
struct Line([u8; CACHE_LINE]);

/// A zeroed, 128-byte aligned heap buffer reached only by raw pointer.
#[cfg(not(loom))]
struct HeapRegion {
    lines: *mut [Line],
}

#[cfg(not(loom))]
impl HeapRegion {
    fn zeroed(len: usize) -> Self {
        let lines: Box<[Line]> = (0..len.div_ceil(CACHE_LINE))
            .map(|_| Line([0; CACHE_LINE]))
            .collect();
        Self {
            lines: Box::into_raw(lines),
        }
    }

    fn base(&self) -> *mut u8 {
        self.lines.cast()
    }
}

#[cfg(not(loom))]
impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: `lines` came from `Box::into_raw` in `zeroed` and is
        // released only here, once; the `Inner` holding this region (and
        // with it every pointer into it) is being dropped.
        drop(unsafe { Box::from_raw(self.lines) });
    }
}

/// This process's claim on the addresses of one ring, so that a second
/// ring (a second producer) over the same bytes is refused.
#[cfg(not(loom))]
struct Claim {
    start: usize,
    end: usize,
}

#[cfg(not(loom))]
static CLAIMS: std::sync::Mutex<Vec<(usize, usize)>> = std::sync::Mutex::new(Vec::new());

#[cfg(not(loom))]
impl Claim {
    fn take(start: usize, len: usize) -> Result<Self, RegionError> {
        let end = start.saturating_add(len);
        let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
        if claims.iter().any(|&(s, e)| start < e && s < end) {
            return Err(RegionError::InUse { addr: start });
        }
        claims.push((start, end));
        Ok(Self { start, end })
    }
}

#[cfg(not(loom))]
impl Drop for Claim {
    fn drop(&mut self) {
        let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = claims.iter().position(|&c| c == (self.start, self.end)) {
            claims.swap_remove(i);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn heap_round_trip_and_wrap() {
        let (p, c) = Ring::in_heap(16).unwrap().split();
        let mut out = [0u8; 16];
        for round in 0..40u8 {
            let bytes: Vec<u8> = (0..11)
                .map(|i| round.wrapping_mul(31).wrapping_add(i))
                .collect();
            assert_eq!(p.write(&bytes).unwrap().written, 11);
            assert_eq!(c.available().unwrap(), 11);
            assert_eq!(c.read(&mut out).unwrap().read, 11);
            assert_eq!(&out[..11], &bytes[..]);
        }
        assert_eq!(p.write(&[0; 20]).unwrap().written, 16);
        assert_eq!(p.write(&[0; 1]).unwrap().written, 0);
        assert!(p.prepare_to_wait());
        let outcome = c.read(&mut out[..3]).unwrap();
        assert!(outcome.wake_peer && outcome.read == 3);
        assert!(!p.prepare_to_wait());
    }

    #[test]
    fn consumer_flag_is_seen_by_the_next_write() {
        let (p, c) = Ring::in_heap(8).unwrap().split();
        assert!(c.prepare_to_wait());
        let first = p.write(b"ab").unwrap();
        assert!(first.wake_peer, "the sleeping consumer must be woken");
        let second = p.write(b"c").unwrap();
        assert!(!second.wake_peer, "only sleepers are woken, once");
        assert!(!c.prepare_to_wait(), "data is there: no sleep");
        let mut buf = BytesMut::new();
        assert_eq!(c.read_buf(&mut buf, 100).unwrap().read, 3);
        assert_eq!(&buf[..], b"abc");

        // Sleeping again without cancel_wait in between is a new sleep,
        // woken again.
        assert!(c.prepare_to_wait());
        assert!(p.write(b"d").unwrap().wake_peer);
        assert_eq!(c.read(&mut [0; 4]).unwrap().read, 1);
        assert!(c.prepare_to_wait());
        assert!(p.write(b"e").unwrap().wake_peer);
        c.cancel_wait();
        assert!(!p.write(b"f").unwrap().wake_peer, "awake: no wake");
    }

    #[test]
    fn capacity_is_checked() {
        for bad in [0, 4, 12, 1000, MAX_CAPACITY * 2] {
            assert!(matches!(
                Ring::in_heap(bad),
                Err(RegionError::BadCapacity { .. })
            ));
        }
        assert_eq!(region_len(64), RING_HEADER_LEN + 128);
        assert_eq!(region_len(4096), RING_HEADER_LEN + 4096);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use loom::sync::Notify;
    use loom::thread;
    use std::sync::Arc;

    use super::*;

    /// The consumer decides to sleep while the producer writes: either the
    /// consumer saw the data or the producer saw its flag.
    #[test]
    fn consumer_sleep_never_misses_a_write() {
        loom::model(|| {
            let (p, c) = Ring::in_heap(8).unwrap().split();
            let producer = thread::spawn(move || p.write(&[7]).unwrap().wake_peer);
            let sleeps = c.prepare_to_wait();
            let woken = producer.join().unwrap();
            assert!(
                !sleeps || woken,
                "lost wake-up: consumer sleeps, producer saw no flag"
            );
        });
    }

    /// The producer decides to sleep on a full ring while the consumer
    /// reads: either the producer saw the space or the consumer its flag.
    #[test]
    fn producer_sleep_never_misses_a_read() {
        loom::model(|| {
            let (p, c) = Ring::in_heap(8).unwrap().split();
            assert_eq!(p.write(&[1; 8]).unwrap().written, 8);
            let consumer = thread::spawn(move || c.read(&mut [0; 3]).unwrap().wake_peer);
            let sleeps = p.prepare_to_wait();
            let woken = consumer.join().unwrap();
            assert!(
                !sleeps || woken,
                "lost wake-up: producer sleeps, consumer saw no flag"
            );
        });
    }

    /// A 12-byte stream through an 8-byte ring (so it wraps), both sides
    /// sleeping on a loom `Notify` (an eventfd) when they cannot progress: a
    /// lost wake-up is a deadlock loom reports; a data race on a byte is a
    /// causality violation loom reports; the bytes arrive in order.
    #[test]
    fn stream_wraps_and_sleepers_are_woken() {
        const LEN: u8 = 12;
        loom::model(|| {
            let (p, c) = Ring::in_heap(8).unwrap().split();
            let wake_consumer = Arc::new(Notify::new());
            let wake_producer = Arc::new(Notify::new());
            let (wc, wp) = (wake_consumer.clone(), wake_producer.clone());
            let producer = thread::spawn(move || {
                let stream: Vec<u8> = (0..LEN).collect();
                let mut sent = 0;
                while sent < stream.len() {
                    let end = (sent + 5).min(stream.len());
                    let outcome = p.write(&stream[sent..end]).unwrap();
                    if outcome.wake_peer {
                        wc.notify();
                    }
                    sent += outcome.written;
                    if outcome.written == 0 && p.prepare_to_wait() {
                        wp.wait();
                        p.cancel_wait();
                    }
                }
            });
            let mut got = Vec::new();
            while got.len() < usize::from(LEN) {
                let mut buf = [0; 4];
                let outcome = c.read(&mut buf).unwrap();
                if outcome.wake_peer {
                    wake_producer.notify();
                }
                got.extend_from_slice(&buf[..outcome.read]);
                if outcome.read == 0 && c.prepare_to_wait() {
                    wake_consumer.wait();
                    c.cancel_wait();
                }
            }
            producer.join().unwrap();
            assert_eq!(got, (0..LEN).collect::<Vec<_>>());
        });
    }
}
