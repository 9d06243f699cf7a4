//! The shared-memory link: one sealed memfd holding two rings (one each
//! way), an eventfd per side to sleep on, and the Unix socket they were set
//! up over, kept as the line that tells either side the other has gone.
//!
//! Set-up, on a Unix socket to the server's ordinary listener: the client
//! sends [`OFFER`] (magic, version, ring capacity) with the memfd and its
//! eventfd attached (SCM_RIGHTS); the server checks the seals and size,
//! maps the rings and answers [`ACCEPT`] with its own eventfd. Then the
//! switchyard protocol (hello first) runs over the rings. A server that sees
//! anything else first treats those bytes as the start of an ordinary frame
//! stream, so plain Unix clients are served as before.
//!
//! The hot path has no hand-off between threads: any task may write whole
//! frames straight into the ring ([`ShmTx::direct`]), and a receiver can be
//! polled without waiting ([`ShmRx::try_recv`]), so the task that waits for
//! a frame reads it itself.
//!
//! Waiting: a side that finds its ring empty (or full) spins for a budget
//! that adapts to how long data took to come (bounded by
//! [`ShmLink::with_spin`], zero allowed, plus an allowance after large
//! bodies), giving way to other tasks and threads every few µs, then
//! announces it sleeps (the
//! ring's waiter word) and waits on its eventfd through tokio; the peer
//! writes that eventfd only when the word says it sleeps. A missed wake-up
//! cannot hang a side: sleeps are bounded and the ring is checked again
//! after each.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::peer_pool::{PeerSegments, Releases, Resolved};
use super::pool::{DEFAULT_POOL_LIMIT, PooledBody, Refused, SendPool};
use super::ring::{Consumer, Producer, Ring, RingError, Role, region_len};
use super::words::{POOL_WORDS_LEN, PoolWords};
use crate::protocol::frame::{
    BulkDescriptor, Decoded, FLAG_BULK, Frame, FrameDecoder, HEADER_LEN, Header, PoolDescriptor,
};
use crate::select::{CallKind, CallTrack, Tracks, select};
use crate::sys::shm as sys;
use crate::transport::bulk::{BodyPlace, BulkBody, BulkCounters, BulkTx};
pub(crate) use crate::transport::spin::SpinBudget;
use crate::transport::stream::{decode_available, end_of_stream};
use crate::transport::{
    DirectWrite, Endpoint, Link, LinkError, LinkRx, LinkTuning, LinkTx, PeerInfo, Polled, RxWake,
    Transport, Written,
};

/// What a client sends first to ask for shared memory: `SYSHM`, version 3,
/// then the ring capacity as u32 little endian; attached: the memfd (the
/// two rings, then the pool words), the client's eventfd and one end of the
/// bulk-region socket pair.
pub const OFFER: &[u8; 6] = b"SYSHM\x03";
/// The offer of version 2 (no pool words, no pool): still accepted.
pub const OFFER_V2: &[u8; 6] = b"SYSHM\x02";
/// The server's answer.
pub const ACCEPT: &[u8; 6] = b"SYSHM+";
/// Bytes of data each ring holds by default.
pub const DEFAULT_CAPACITY: usize = 1 << 20;
/// Frame bodies larger than this travel as bulk regions (a sealed memfd of
/// their own, mapped by the receiver) instead of through the ring, unless
/// configured otherwise.
pub const DEFAULT_BULK_THRESHOLD: usize = 256 * 1024;
/// How long a sender waits for the peer to take a bulk region.
const REGION_SEND_LIMIT: Duration = Duration::from_secs(10);
/// A sender waiting this long for room in its pool says so (debug log).
const POOL_LOG_AFTER: Duration = Duration::from_secs(1);
/// The longest a side spins before it sleeps, unless configured otherwise.
pub const DEFAULT_SPIN: Duration = crate::transport::spin::DEFAULT_SPIN;
/// A sleep is re-checked at least this often (a lost wake-up costs this
/// much latency, never a hang).
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// A shared-memory link.
#[derive(Debug)]
pub struct ShmLink {
    producer: Producer,
    consumer: Consumer,
    wake: Arc<Wake>,
    peer: PeerInfo,
    bulk_threshold: usize,
    /// The pool words, where both sides speak version 3 (pools).
    words: Option<(Arc<memmap2::MmapRaw>, bool)>,
    pool_limit: usize,
    /// Read the peer's pooled bodies in place where it runs as this user.
    read_in_place: bool,
}

/// Bulk regions this process sent and received over shared memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BulkTransfers {
    /// Frames whose body went out as a bulk region.
    pub sent: u64,
    /// Frames whose body came in as a bulk region.
    pub received: u64,
    /// Body bytes sent that way.
    pub bytes_sent: u64,
    /// Body bytes received that way.
    pub bytes_received: u64,
    /// Of the bodies sent, those through a pool.
    pub pool_sent: u64,
    /// Bodies sent as a region of their own because a pool could not take
    /// them.
    pub pool_fallbacks: u64,
    /// Of those, bodies sent from a loan, where the caller wrote them.
    pub pool_loaned: u64,
    /// Bytes of the pools holding bodies their peers have not copied out.
    pub pool_in_use: u64,
    /// Bytes of shared memory the pools hold.
    pub pool_held: u64,
}

static BULK_SENT: AtomicU64 = AtomicU64::new(0);
static BULK_RECEIVED: AtomicU64 = AtomicU64::new(0);
static BULK_BYTES_SENT: AtomicU64 = AtomicU64::new(0);
static BULK_BYTES_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// The bulk regions this process has moved so far (the `mmap` path).
pub fn bulk_transfers() -> BulkTransfers {
    BulkTransfers {
        sent: BULK_SENT.load(Ordering::Relaxed),
        received: BULK_RECEIVED.load(Ordering::Relaxed),
        bytes_sent: BULK_BYTES_SENT.load(Ordering::Relaxed),
        bytes_received: BULK_BYTES_RECEIVED.load(Ordering::Relaxed),
        pool_sent: super::pool::totals::SENT.load(Ordering::Relaxed),
        pool_fallbacks: super::pool::totals::FALLBACKS.load(Ordering::Relaxed),
        pool_loaned: super::pool::totals::LOANED.load(Ordering::Relaxed),
        pool_in_use: super::pool::totals::IN_USE.load(Ordering::Relaxed),
        pool_held: super::pool::totals::HELD.load(Ordering::Relaxed),
    }
}

/// The wake-up lines and the control socket, shared by both halves.
#[derive(Debug)]
pub(crate) struct Wake {
    /// Our eventfd: the peer writes it to wake us.
    mine: AsyncFd<OwnedFd>,
    /// The peer's eventfd.
    theirs: OwnedFd,
    /// The socket the link was set up over; end-of-file means the peer left.
    control: UnixStream,
    /// Our end of the bulk-region socket pair (regions go both ways).
    regions: OwnedFd,
    /// How long the receiving side spins.
    pub(crate) budget: SpinBudget,
    /// The peer said it sends no more ([`END`] on the control socket).
    peer_done: AtomicBool,
    /// Tells every sleeper of this side when one of them saw the eventfd
    /// (a reader waiting for data and a writer waiting for space share it).
    woken: Notify,
}

/// The byte a side sends on the control socket when it will send no more
/// frames (its half-close); the socket's end-of-file means the peer is gone.
const END: u8 = b'E';

impl Wake {
    fn wake_peer(&self) {
        let _ = sys::eventfd_write(self.theirs.as_fd(), 1);
    }

    /// A ticket for [`sleep`](Self::sleep), taken before announcing the
    /// sleep in the ring so that no wake-up between the two is lost.
    pub(crate) fn ticket(&self) -> Pin<Box<Notified<'_>>> {
        // Sleeping is the slow path; the box keeps the ticket movable.
        let mut notified = Box::pin(self.woken.notified());
        notified.as_mut().enable();
        notified
    }

    /// Sleeps until our eventfd is written, another sleeper of this side
    /// saw it (`ticket`), the control socket says the peer left (`Err`) or
    /// sent [`END`], or [`MAX_SLEEP`] passes.
    pub(crate) async fn sleep(&self, ticket: Pin<Box<Notified<'_>>>) -> io::Result<()> {
        let woken = tokio::time::timeout(MAX_SLEEP, async {
            tokio::select! {
                guard = self.mine.readable() => {
                    let mut guard = guard?;
                    // 0: nothing pending (non-blocking eventfd): stale
                    // readiness, wait for the next write.
                    if sys::eventfd_read(self.mine.get_ref().as_fd())? == 0 {
                        guard.clear_ready();
                    }
                    self.woken.notify_waiters();
                    Ok(())
                }
                () = ticket => Ok(()),
                gone = self.peer_gone() => {
                    self.woken.notify_waiters();
                    gone
                }
            }
        })
        .await;
        woken.unwrap_or(Ok(()))
    }

    /// Resolves with an error when the control socket reaches end-of-file
    /// (the peer is gone); notes the peer's half-close ([`END`]) on the way.
    async fn peer_gone(&self) -> io::Result<()> {
        loop {
            self.control.readable().await?;
            let mut byte = [0u8; 1];
            match self.control.try_read(&mut byte) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the shared-memory link",
                    ));
                }
                Ok(_) if byte[0] == END => {
                    self.peer_done.store(true, Ordering::Release);
                    // The receiving half looks at the flag when it wakes.
                    return Ok(());
                }
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected bytes on the shared-memory control socket",
                    ));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
        }
    }
}

fn corrupt(err: RingError) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the peer corrupted shared memory ({err})"),
    )
}

/// The two rings in a mapping: (client to server, server to client).
fn rings(map: Arc<memmap2::MmapRaw>, capacity: usize, role: Role) -> io::Result<(Ring, Ring)> {
    let ring_len = region_len(capacity);
    let to_server = Ring::from_mmap(Arc::clone(&map), 0, ring_len, role)?;
    let to_client = Ring::from_mmap(map, ring_len, ring_len, role)?;
    Ok((to_server, to_client))
}

/// The length of the link's memfd: two rings, then (version 3) the pool
/// words.
fn link_len(capacity: usize, pool: bool) -> usize {
    2 * region_len(capacity) + if pool { POOL_WORDS_LEN } else { 0 }
}

impl ShmLink {
    fn new(
        (to_server, to_client): (Ring, Ring),
        words: Option<Arc<memmap2::MmapRaw>>,
        client: bool,
        (mine, theirs, regions): (OwnedFd, OwnedFd, OwnedFd),
        control: UnixStream,
        peer: PeerInfo,
    ) -> io::Result<Self> {
        let (producer, consumer) = if client {
            (to_server.into_producer(), to_client.into_consumer())
        } else {
            (to_client.into_producer(), to_server.into_consumer())
        };
        Ok(Self {
            producer,
            consumer,
            wake: Arc::new(Wake {
                mine: crate::sys::reactor::register_readable(mine)?,
                theirs,
                control,
                regions,
                budget: SpinBudget::new(DEFAULT_SPIN),
                peer_done: AtomicBool::new(false),
                woken: Notify::new(),
            }),
            peer,
            bulk_threshold: DEFAULT_BULK_THRESHOLD,
            words: words.map(|map| (map, client)),
            pool_limit: DEFAULT_POOL_LIMIT,
            read_in_place: false,
        })
    }

    /// Sets the most shared memory this side's pool for large bodies may
    /// hold (default 128 MiB); larger bodies travel as regions of their
    /// own. Zero turns the pool off.
    pub fn with_pool_limit(mut self, bytes: usize) -> Self {
        self.pool_limit = bytes;
        self
    }

    /// Reads the peer's pooled bodies in place, without copying them out,
    /// where the peer runs as this user (the kernel vouches for its uid):
    /// see `ChannelBuilder::shm_read_in_place`.
    pub fn with_read_in_place(mut self, on: bool) -> Self {
        self.read_in_place = on;
        self
    }

    /// Whether pooled bodies are read in place on this link: asked for,
    /// and the peer runs as this user.
    pub fn reads_in_place(&self) -> bool {
        self.read_in_place && self.peer.uid == Some(crate::sys::uid())
    }

    /// Whether both sides speak pools (version 3 of the offer).
    pub fn has_pool(&self) -> bool {
        self.words.is_some()
    }

    /// Sets the body size above which a frame travels as a bulk region
    /// rather than through the ring (default [`DEFAULT_BULK_THRESHOLD`]).
    pub fn with_bulk_threshold(mut self, bytes: usize) -> Self {
        self.bulk_threshold = bytes;
        self
    }

    /// Sets the longest this side spins on an empty ring before it sleeps
    /// (default [`DEFAULT_SPIN`]; zero: sleep at once, the least CPU and
    /// the most latency). The budget adapts below it.
    pub fn with_spin(self, max: Duration) -> Self {
        self.wake.budget.set_max(max);
        self
    }
}

/// Opens shared-memory links: over a Unix socket to the server's listener
/// (opened and checked by its [`UnixConnector`](crate::transport::unix::UnixConnector)),
/// with rings of `capacity` bytes.
#[derive(Clone, Debug)]
pub struct ShmConnector {
    unix: crate::transport::unix::UnixConnector,
    capacity: usize,
}

impl ShmConnector {
    /// Sets up over sockets `unix` opens, with rings of `capacity` bytes.
    pub fn new(unix: crate::transport::unix::UnixConnector, capacity: usize) -> Self {
        Self { unix, capacity }
    }
}

impl crate::transport::Connector for ShmConnector {
    type Link = ShmLink;
    type Error = io::Error;

    async fn connect(&self, endpoint: &Endpoint) -> io::Result<ShmLink> {
        let Endpoint::Shm(path) = endpoint else {
            return Err(crate::transport::wrong_endpoint(Transport::Shm, endpoint));
        };
        // Who answers is checked before anything is shared with it.
        let control = self.unix.stream(path).await?;
        connect_over(control, path, self.capacity).await
    }
}

/// Opens a shared-memory link to the server listening at `path`.
pub async fn connect(path: &Path, capacity: usize) -> io::Result<ShmLink> {
    let control = UnixStream::connect(path).await?;
    connect_over(control, path, capacity).await
}

/// Opens a shared-memory link over `control`, a socket already connected to
/// the server listening at `path` (whose peer the caller may have checked
/// before anything is shared with it).
pub async fn connect_over(
    control: UnixStream,
    path: &Path,
    capacity: usize,
) -> io::Result<ShmLink> {
    let cred = control.peer_cred().ok();
    let peer = PeerInfo {
        addr: Endpoint::Shm(path.to_owned()).to_string(),
        pid: cred
            .as_ref()
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok()),
        uid: cred.as_ref().map(|c| c.uid()),
    };
    let len = link_len(capacity, true);
    let memfd = sys::create_memfd("switchyard-shm", len as u64)?;
    let map = Arc::new(sys::map_sealed(memfd.as_fd(), len)?);
    let mine = sys::eventfd()?;
    let (regions, their_regions) = crate::sys::bulk::region_socketpair()?;
    let mut offer = OFFER.to_vec();
    offer.extend_from_slice(&u32::try_from(capacity).unwrap_or(u32::MAX).to_le_bytes());
    // Initialise the rings before the server can attach to them.
    let rings = rings(Arc::clone(&map), capacity, Role::Init { capacity })?;
    send_with_fds(
        &control,
        &offer,
        &[memfd.as_fd(), mine.as_fd(), their_regions.as_fd()],
    )
    .await?;
    drop((memfd, their_regions));
    let (reply, mut fds) = recv_with_fds(&control, 16, 1).await?;
    if reply.as_slice() != ACCEPT || fds.len() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "the server did not accept shared memory (an older server, or shm turned off)",
        ));
    }
    let theirs = fds.remove(0);
    ShmLink::new(
        rings,
        Some(map),
        true,
        (mine, theirs, regions),
        control,
        peer,
    )
}

/// How a connection on the server's Unix listener starts.
#[derive(Debug)]
pub enum Accepted {
    /// It asked for shared memory and got it.
    Shm(ShmLink),
    /// An ordinary stream; these bytes were read while looking.
    Stream(UnixStream, Vec<u8>),
}

/// Looks at the first bytes of a connection accepted on a Unix listener:
/// an [`OFFER`] with a memfd and an eventfd becomes a shared-memory link;
/// anything else stays a stream (the bytes read are handed back).
pub async fn accept(stream: UnixStream, peer: PeerInfo) -> io::Result<Accepted> {
    let (bytes, fds) = recv_with_fds(&stream, 64, 3).await?;
    let pool = bytes.starts_with(OFFER);
    if !pool && !bytes.starts_with(OFFER_V2) {
        // Any fds that came with ordinary bytes are closed here.
        drop(fds);
        return Ok(Accepted::Stream(stream, bytes));
    }
    let [memfd, theirs, regions]: [OwnedFd; 3] = fds.try_into().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "a shm offer without its three fds (memfd, eventfd, region socket)",
        )
    })?;
    let capacity = bytes
        .get(OFFER.len()..OFFER.len() + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .filter(|c| c.is_power_of_two() && *c <= super::ring::MAX_CAPACITY)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a shm offer with a bad capacity",
            )
        })?;
    let len = link_len(capacity, pool);
    let map = Arc::new(sys::map_sealed(memfd.as_fd(), len)?);
    drop(memfd);
    let mine = sys::eventfd()?;
    // The Unix socket's peer, now reached through shared memory.
    let addr = match peer.addr.parse() {
        Ok(Endpoint::Unix(path)) => Endpoint::Shm(path).to_string(),
        _ => peer.addr.clone(),
    };
    let peer = PeerInfo { addr, ..peer };
    let rings = rings(Arc::clone(&map), capacity, Role::Attach)?;
    let words = pool.then_some(map);
    let link = ShmLink::new(rings, words, false, (mine, theirs, regions), stream, peer)?;
    send_with_fds(
        &link.wake.control,
        ACCEPT,
        &[link.wake.mine.get_ref().as_fd()],
    )
    .await?;
    Ok(Accepted::Shm(link))
}

/// Sends `payload` with `fds`, waiting for the socket through tokio (so its
/// readiness is kept right).
async fn send_with_fds(
    socket: &UnixStream,
    payload: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<()> {
    loop {
        socket.writable().await?;
        match socket.try_io(tokio::io::Interest::WRITABLE, || {
            sys::send_fds(socket.as_fd(), payload, fds)
        }) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            done => return done,
        }
    }
}

/// Receives up to `len` bytes and `max_fds` fds (0 bytes: the peer closed).
async fn recv_with_fds(
    socket: &UnixStream,
    len: usize,
    max_fds: usize,
) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; len];
    loop {
        socket.readable().await?;
        match socket.try_io(tokio::io::Interest::READABLE, || {
            sys::recv_fds(socket.as_fd(), &mut buf, max_fds)
        }) {
            Ok((n, fds)) => {
                buf.truncate(n);
                return Ok((buf, fds));
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => return Err(err),
        }
    }
}

impl Link for ShmLink {
    type Tx = ShmTx;
    type Rx = ShmRx;

    fn transport(&self) -> Transport {
        Transport::Shm
    }

    fn peer(&self) -> PeerInfo {
        self.peer.clone()
    }

    fn tune(&mut self, tuning: &LinkTuning) {
        if let Some(spin) = tuning.spin {
            self.wake.budget.set_max(spin);
        }
        if let Some(bytes) = tuning.bulk_threshold {
            self.bulk_threshold = bytes;
        }
        if let Some(bytes) = tuning.pool_limit {
            self.pool_limit = bytes;
        }
        if let Some(on) = tuning.read_in_place {
            self.read_in_place = on;
        }
    }

    fn split(self, frame_limit: u32) -> (ShmTx, ShmRx) {
        let counters = Arc::new(BulkCounters::default());
        let words_at = 2 * region_len(self.producer.capacity());
        let words = |(map, client): &(Arc<memmap2::MmapRaw>, bool)| {
            PoolWords::new(Arc::clone(map), words_at, *client)
        };
        let pool = self
            .words
            .as_ref()
            .filter(|_| self.pool_limit > 0)
            .and_then(words)
            .map(|words| Arc::new(SendPool::new(words, self.pool_limit, Arc::clone(&counters))));
        if let Some(pool) = &pool {
            let _ = counters.pool.set(Arc::downgrade(pool));
        }
        let rx_words = self.words.as_ref().and_then(words);
        let in_place = self.reads_in_place();
        counters
            .reads_in_place
            .store(in_place && rx_words.is_some(), Ordering::Relaxed);
        let rx_pool = rx_words.map(|words| {
            // Weak: a body read in place and kept does not keep the link's
            // sockets open.
            let wake = Arc::downgrade(&self.wake);
            let wake_peer = move || {
                if let Some(wake) = wake.upgrade() {
                    wake.wake_peer();
                }
            };
            RxPool {
                segments: PeerSegments::default(),
                releases: Arc::new(Releases::new(words, Box::new(wake_peer))),
                in_place,
            }
        });
        (
            ShmTx {
                counters: Arc::clone(&counters),
                shared: Arc::new(TxShared {
                    side: Mutex::new(TxSide {
                        producer: self.producer,
                        partial: false,
                        closed: false,
                    }),
                    wake: Arc::clone(&self.wake),
                    bulk_threshold: self.bulk_threshold,
                }),
                next_region: 0,
                pool,
                pool_sleep: 0,
            },
            ShmRx {
                consumer: self.consumer,
                wake: self.wake,
                buf: BytesMut::with_capacity(64 * 1024),
                decoder: FrameDecoder::new(frame_limit),
                next_region: 0,
                counters,
                pool: rx_pool,
            },
        )
    }
}

/// The producer, shared by the sending half and its direct writers.
#[derive(Debug)]
struct TxShared {
    side: Mutex<TxSide>,
    wake: Arc<Wake>,
    /// Bodies larger than this go as bulk regions.
    bulk_threshold: usize,
}

#[derive(Debug)]
struct TxSide {
    producer: Producer,
    /// A frame is half written (the ring filled up): nobody else may write
    /// until the sending half finishes it.
    partial: bool,
    /// This side half-closed the link.
    closed: bool,
}

impl TxShared {
    fn lock(&self) -> MutexGuard<'_, TxSide> {
        // Nothing panics while holding it; a poisoned lock is still sound.
        self.side.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending half.
#[derive(Debug)]
pub struct ShmTx {
    shared: Arc<TxShared>,
    /// This link's bulk regions, both halves.
    counters: Arc<BulkCounters>,
    /// The sequence number of the next bulk region.
    next_region: u64,
    /// Shared memory for large bodies, mapped once and reused.
    pool: Option<Arc<SendPool>>,
    /// This sender's sleep sequence in the pool words.
    pool_sleep: u32,
}

impl ShmTx {
    /// Writes `bytes` into the ring, waiting for room as needed.
    async fn write_ring(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut rest = bytes;
        loop {
            let written = {
                let mut side = self.shared.lock();
                if side.closed {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "this side closed the link",
                    ));
                }
                let outcome = side.producer.write(rest).map_err(corrupt)?;
                if outcome.wake_peer {
                    self.shared.wake.wake_peer();
                }
                rest = &rest[outcome.written..];
                side.partial = !rest.is_empty();
                outcome.written
            };
            if rest.is_empty() {
                return Ok(());
            }
            if written > 0 {
                continue;
            }
            // Full: spin for space, then sleep until the consumer frees some.
            let wake = &self.shared.wake;
            if wake
                .budget
                .spin(|| {
                    self.shared
                        .lock()
                        .producer
                        .free_space()
                        .is_ok_and(|f| f > 0)
                })
                .await
            {
                continue;
            }
            let ticket = wake.ticket();
            if self.shared.lock().producer.prepare_to_wait() {
                let slept = wake.sleep(ticket).await;
                self.shared.lock().producer.cancel_wait();
                slept?;
            }
        }
    }

    /// Sends the frame `header` heads, whose body is `body`, as a bulk
    /// region (for bodies that reached the link already encoded).
    async fn send_bulk_copy(&mut self, header: &Header, body: &[u8]) -> io::Result<()> {
        if let Some(pooled) = self.pool_room(body.len()).await? {
            if !pooled.write(0, body) {
                return Err(io::Error::other(
                    "the pool gave less room than asked (a switchyard bug: please report it)",
                ));
            }
            return self.send_pooled(header, pooled).await;
        }
        let region = crate::sys::bulk::create_region(&[body])?;
        self.pass_region(header, region, body.len() as u64).await
    }

    /// Room for `len` bytes in the pool, waiting for the peer to release
    /// bodies while the pool is at its limit; `None` if there is no pool or
    /// it can never take the body (counted: it goes as a region of its own).
    async fn pool_room(&mut self, len: usize) -> io::Result<Option<PooledBody>> {
        let Some(pool) = self.pool.clone() else {
            return Ok(None);
        };
        let mut waiting_since: Option<Instant> = None;
        loop {
            let seen = pool.peer_released();
            match pool.allocate(len) {
                Ok(Some(body)) => return Ok(Some(body)),
                Err(Refused::OverLimit | Refused::NoMemory) => {
                    pool.fell_back();
                    return Ok(None);
                }
                Ok(None) if pool.held_here() => {
                    // Room this side holds (a loan, a body queued behind
                    // this one) may never be freed while we wait.
                    pool.fell_back();
                    return Ok(None);
                }
                Ok(None) => {}
            }
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() > POOL_LOG_AFTER && since.elapsed() < POOL_LOG_AFTER * 2 {
                tracing::debug!(
                    len,
                    limit = pool.limit(),
                    "the shared-memory pool is full: waiting for the peer to copy out bodies"
                );
            }
            let wake = &self.shared.wake;
            if wake.budget.spin(|| pool.peer_released() != seen).await {
                continue;
            }
            let ticket = wake.ticket();
            if pool.words().prepare_to_wait(seen, &mut self.pool_sleep) {
                pool.writer_waiting(true);
                let slept = wake.sleep(ticket).await;
                pool.writer_waiting(false);
                pool.words().cancel_wait(&mut self.pool_sleep);
                slept?;
            } else {
                // Released meanwhile, or someone else is reserving: look again
                // after letting them run.
                tokio::task::yield_now().await;
            }
        }
    }

    /// Sends a body that is in the pool: its segment first if the peer does
    /// not have it yet (over the region socket), then its descriptor
    /// through the ring, numbered under the ring's lock.
    async fn send_pooled(&mut self, header: &Header, body: PooledBody) -> io::Result<()> {
        let pool = Arc::clone(body.pool());
        if let Some((id, mem)) = pool.to_announce(&body) {
            let socket = self.shared.wake.regions.as_fd();
            send_on_region_socket("pool segment", || {
                crate::sys::pool::send_segment(socket, id, mem.len() as u64, mem.fd())
            })
            .await?;
            pool.announced(id);
        }
        let len = body.len() as u64;
        let (stand_in, written) = {
            let mut side = self.shared.lock();
            if side.closed {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "this side closed the link",
                ));
            }
            let stand_in = pooled_stand_in(header, &pool.commit_send(body));
            let outcome = side.producer.write(&stand_in).map_err(corrupt)?;
            if outcome.wake_peer {
                self.shared.wake.wake_peer();
            }
            side.partial = outcome.written < stand_in.len();
            (stand_in, outcome.written)
        };
        count_pooled(&self.counters, len);
        // The rest (if the ring was nearly full) before anything else.
        self.write_ring(&stand_in[written..]).await
    }

    /// Passes a sealed region holding the body of the frame `header` heads:
    /// the memfd goes over the region socket, then a descriptor through the
    /// ring.
    async fn pass_region(&mut self, header: &Header, region: OwnedFd, len: u64) -> io::Result<()> {
        let seq = self.next_region;
        let socket = self.shared.wake.regions.as_fd();
        send_on_region_socket("bulk region", || {
            crate::sys::bulk::send_region(socket, seq, region.as_fd())
        })
        .await?;
        drop(region);
        self.next_region += 1;
        let descriptor = BulkDescriptor {
            seq,
            metadata_len: header.metadata_len,
            payload_len: header.payload_len,
        };
        let mut stand_in = [0u8; HEADER_LEN + BulkDescriptor::LEN];
        BulkDescriptor::stand_in(header).write_to(&mut stand_in);
        stand_in[HEADER_LEN..].copy_from_slice(&descriptor.to_bytes());
        BULK_SENT.fetch_add(1, Ordering::Relaxed);
        BULK_BYTES_SENT.fetch_add(len, Ordering::Relaxed);
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
        self.write_ring(&stand_in).await
    }
}

impl LinkTx for ShmTx {
    async fn send(&mut self, frames: &[u8]) -> io::Result<()> {
        self.shared.wake.budget.traffic.sent(frames.len());
        let threshold = self.shared.bulk_threshold;
        if frames.len() <= HEADER_LEN + threshold {
            return self.write_ring(frames).await;
        }
        // Frames with large bodies go as bulk regions, the rest (in order
        // with them) through the ring.
        let (mut start, mut pos) = (0, 0);
        while let Some(head) = frames.get(pos..pos + HEADER_LEN) {
            let mut bytes = [0u8; HEADER_LEN];
            bytes.copy_from_slice(head);
            let Ok(header) = Header::parse(&bytes) else {
                break;
            };
            let end = pos + HEADER_LEN + usize::try_from(header.body_len()).unwrap_or(usize::MAX);
            let Some(body) = frames.get(pos + HEADER_LEN..end) else {
                break;
            };
            let track = select(CallTrack {
                kind: CallKind::Unary { bytes: body.len() },
                tracks: Tracks {
                    connection: Transport::Shm,
                    queue_max: None,
                    bulk_threshold: Some(threshold),
                },
            });
            if track == Transport::Mmap && header.flags & FLAG_BULK == 0 {
                self.write_ring(&frames[start..pos]).await?;
                self.send_bulk_copy(&header, body).await?;
                start = end;
            }
            pos = end;
        }
        self.write_ring(&frames[start..]).await
    }

    async fn close(&mut self) -> io::Result<()> {
        if std::mem::replace(&mut self.shared.lock().closed, true) {
            return Ok(());
        }
        // Everything written is in the ring before the END byte goes, and
        // the peer drains the ring before it believes it.
        let control = &self.shared.wake.control;
        loop {
            control.writable().await?;
            match control.try_write(&[END]) {
                Ok(_) => break,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
        }
        self.shared.wake.wake_peer();
        Ok(())
    }

    fn bulk(&mut self) -> Option<&mut impl BulkTx> {
        Some(self)
    }

    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        Some(Arc::new(ShmDirect {
            shared: Arc::clone(&self.shared),
            counters: Arc::clone(&self.counters),
        }))
    }
}

/// The bulk path is the sending half itself: regions are numbered and
/// their descriptors written into the ring in order with its frames.
impl BulkTx for ShmTx {
    fn threshold(&self) -> usize {
        self.shared.bulk_threshold
    }

    fn counters(&self) -> Arc<BulkCounters> {
        Arc::clone(&self.counters)
    }

    async fn send_bulk(&mut self, header: &[u8], body: BulkBody) -> io::Result<()> {
        let parsed = header
            .get(..HEADER_LEN)
            .and_then(|h| <&[u8; HEADER_LEN]>::try_from(h).ok())
            .map(Header::parse)
            .and_then(Result::ok)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "send_bulk needs a frame header",
                )
            })?;
        let len = body.len() as u64;
        self.shared.wake.budget.traffic.sent(body.len());
        if parsed.body_len() != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the header gives a body of {} bytes, the bulk body has {len}",
                    parsed.body_len()
                ),
            ));
        }
        match body.into_place() {
            BodyPlace::Region(fd, len) => {
                crate::sys::bulk::seal_body(fd.as_fd(), len)?;
                self.pass_region(&parsed, fd, len).await
            }
            BodyPlace::Pooled(body) => self.send_pooled(&parsed, body).await,
        }
    }

    fn pool(&self) -> Option<Arc<SendPool>> {
        self.pool.clone()
    }
}

/// Sends one message on the region socket with `send` (`Ok(false)`: the
/// socket is full), retrying every 200 µs for at most
/// [`REGION_SEND_LIMIT`]; `what` names the message for the error.
async fn send_on_region_socket(
    what: &str,
    mut send: impl FnMut() -> io::Result<bool>,
) -> io::Result<()> {
    let started = Instant::now();
    while !send()? {
        if started.elapsed() > REGION_SEND_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the peer took no {what} for {REGION_SEND_LIMIT:?}; it is stuck or not \
                     reading: check that its process is alive and its connection is being \
                     served"
                ),
            ));
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(())
}

/// Writes whole frames into the ring from any task, when they fit now.
#[derive(Debug)]
struct ShmDirect {
    shared: Arc<TxShared>,
    counters: Arc<BulkCounters>,
}

/// The stand-in frame of a pooled body: `header` with the bulk flag and
/// the body's descriptor as its payload.
fn pooled_stand_in(
    header: &Header,
    sending: &super::pool::Sending,
) -> [u8; HEADER_LEN + PoolDescriptor::LEN] {
    let descriptor = PoolDescriptor {
        seq: sending.seq,
        offset: sending.offset,
        segment: sending.segment,
        oldest: sending.oldest,
        metadata_len: header.metadata_len,
        payload_len: header.payload_len,
    };
    let mut stand_in = [0u8; HEADER_LEN + PoolDescriptor::LEN];
    PoolDescriptor::stand_in(header).write_to(&mut stand_in);
    stand_in[HEADER_LEN..].copy_from_slice(&descriptor.to_bytes());
    stand_in
}

/// Counts a pooled body of `len` bytes as sent.
fn count_pooled(counters: &BulkCounters, len: u64) {
    BULK_SENT.fetch_add(1, Ordering::Relaxed);
    BULK_BYTES_SENT.fetch_add(len, Ordering::Relaxed);
    counters.sent.fetch_add(1, Ordering::Relaxed);
    counters.pool_sent.fetch_add(1, Ordering::Relaxed);
    counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
}

impl ShmDirect {
    /// Writes all of `frames` into the ring now, or nothing.
    fn try_write_all(&self, frames: &[u8]) -> bool {
        let Ok(mut side) = self.shared.side.try_lock() else {
            return false;
        };
        // Large frames may need the bulk path: the sending half decides.
        if side.partial || side.closed || frames.len() > HEADER_LEN + self.shared.bulk_threshold {
            return false;
        }
        // A corrupt ring is reported by the sending half's next write.
        if !side.producer.free_space().is_ok_and(|f| f >= frames.len()) {
            return false;
        }
        self.shared.wake.budget.traffic.sent(frames.len());
        match side.producer.write(frames) {
            Ok(outcome) => {
                if outcome.wake_peer {
                    self.shared.wake.wake_peer();
                }
                // `free_space` just re-read the consumer's index, so all fit.
                debug_assert_eq!(outcome.written, frames.len());
                side.partial = outcome.written < frames.len();
                outcome.written == frames.len()
            }
            Err(_) => false,
        }
    }
}

impl DirectWrite for ShmDirect {
    fn try_write(&self, frames: &[u8]) -> Written {
        if self.try_write_all(frames) {
            Written::All
        } else {
            Written::Nothing
        }
    }

    /// A pooled body's stand-in goes straight into the ring when the ring
    /// has room for all of it now and the peer has the body's segment
    /// (else the sending half sends the segment first): the caller's task
    /// sends it without waking the writer.
    fn try_write_bulk(&self, header: &[u8], body: BulkBody) -> Result<(), BulkBody> {
        let pooled = match body.into_place() {
            BodyPlace::Pooled(pooled) => pooled,
            place => return Err(BulkBody::from_place(place)),
        };
        let give_back = |pooled| Err(BulkBody::from_pooled(pooled));
        let header = match header
            .get(..HEADER_LEN)
            .and_then(|h| <&[u8; HEADER_LEN]>::try_from(h).ok())
            .map(Header::parse)
        {
            Some(Ok(header)) if header.body_len() == pooled.len() as u64 => header,
            _ => return give_back(pooled),
        };
        let pool = Arc::clone(pooled.pool());
        if !pool.is_announced(&pooled) {
            return give_back(pooled);
        }
        let Ok(mut side) = self.shared.side.try_lock() else {
            return give_back(pooled);
        };
        let need = HEADER_LEN + PoolDescriptor::LEN;
        if side.partial || side.closed || !side.producer.free_space().is_ok_and(|f| f >= need) {
            return give_back(pooled);
        }
        // Numbered only once written: every number is given under this lock.
        let stand_in = pooled_stand_in(&header, &pool.preview(&pooled));
        let Ok(outcome) = side.producer.write(&stand_in) else {
            // A corrupt ring is reported by the sending half's next write.
            return give_back(pooled);
        };
        if outcome.wake_peer {
            self.shared.wake.wake_peer();
        }
        // `free_space` just re-read the consumer's index, so all fit.
        side.partial = outcome.written < stand_in.len();
        let len = pooled.len() as u64;
        self.shared.wake.budget.traffic.sent(pooled.len());
        let sending = pool.commit_send(pooled);
        debug_assert_eq!(pooled_stand_in(&header, &sending), stand_in);
        count_pooled(&self.counters, len);
        Ok(())
    }
}

/// The receiving half.
#[derive(Debug)]
pub struct ShmRx {
    consumer: Consumer,
    wake: Arc<Wake>,
    buf: BytesMut,
    decoder: FrameDecoder,
    /// The sequence number the next bulk region must have.
    next_region: u64,
    /// This link's bulk regions, both halves.
    counters: Arc<BulkCounters>,
    /// The peer's pool, where both sides speak pools.
    pool: Option<RxPool>,
}

/// The receiving side's view of the peer's pool.
#[derive(Debug)]
struct RxPool {
    /// The peer's segments mapped here, and the bodies taken from them.
    segments: PeerSegments,
    /// Bodies done with, told to the peer through the pool words.
    releases: Arc<Releases>,
    /// Bodies are read in place (the peer is trusted), not copied out.
    in_place: bool,
}

impl ShmRx {
    /// Moves whatever the ring holds into the buffer; wakes a producer
    /// waiting for space. Returns the bytes moved.
    fn drain_ring(&mut self) -> Result<usize, LinkError> {
        let outcome = self
            .consumer
            .read_buf(&mut self.buf, usize::MAX)
            .map_err(|err| LinkError::Io(corrupt(err)))?;
        if outcome.wake_peer {
            self.wake.wake_peer();
        }
        Ok(outcome.read)
    }

    /// Replaces a bulk frame's stand-in by the frame: takes the next region
    /// from the region socket (the peer sent it before the stand-in),
    /// checks it, maps it, and lends the body out of the mapping.
    fn resolve_bulk(&mut self, stand_in: &Frame) -> io::Result<Decoded> {
        let bad = |what: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the peer sent a bad bulk region: {what}; the connection is closed — if \
                     the peer is not hostile, check that both sides run the same switchyard \
                     version"
                ),
            )
        };
        if stand_in.payload.len() == PoolDescriptor::LEN {
            return self.resolve_pooled(stand_in).map_err(&bad);
        }
        let descriptor = BulkDescriptor::parse(&stand_in.payload)
            .filter(|_| stand_in.metadata.is_empty())
            .ok_or_else(|| bad("its descriptor is malformed".into()))?;
        let (seq, fd) = crate::sys::bulk::recv_region(self.wake.regions.as_fd())?
            .ok_or_else(|| bad("the descriptor came without its region".into()))?;
        if seq != self.next_region || descriptor.seq != seq {
            return Err(bad(format!(
                "region {seq} with descriptor {} arrived where {} was due",
                descriptor.seq, self.next_region
            )));
        }
        self.next_region += 1;
        let header = Header {
            flags: stand_in.header.flags & !FLAG_BULK,
            metadata_len: descriptor.metadata_len,
            payload_len: descriptor.payload_len,
            ..stand_in.header
        };
        if header.body_len() > u64::from(self.decoder.limit()) {
            return Ok(Decoded::Oversized(header));
        }
        let len = usize::try_from(header.body_len()).map_err(|_| bad("too long".into()))?;
        let region = crate::sys::bulk::Region::map(&fd, len).map_err(|err| bad(err.to_string()))?;
        drop(fd);
        Ok(received(&self.counters, header, Bytes::from_owner(region)))
    }
}

impl ShmRx {
    /// Replaces a pooled body's stand-in by the frame: maps the segment if
    /// it is new (its memfd is the next message on the region socket),
    /// copies the body out, and tells the peer it may reuse the room.
    /// `Err`: what the peer did wrong (connection-fatal).
    fn resolve_pooled(&mut self, stand_in: &Frame) -> Result<Decoded, String> {
        let limit = u64::from(self.decoder.limit());
        let socket = self.wake.regions.as_fd();
        let Some(pool) = self.pool.as_mut() else {
            return Err("a pooled body on a link without pools".into());
        };
        let descriptor = PoolDescriptor::parse(&stand_in.payload)
            .filter(|_| stand_in.metadata.is_empty())
            .ok_or("its pool descriptor is malformed")?;
        let next_segment = || crate::sys::pool::recv_segment(socket);
        let body_len = u64::from(descriptor.metadata_len) + u64::from(descriptor.payload_len);
        let resolved = if pool.in_place && pool.releases.may_lend(body_len) {
            let releases = &pool.releases;
            pool.segments
                .resolve_in_place(&descriptor, limit, next_segment, releases)?
        } else {
            let resolved = pool.segments.resolve(&descriptor, limit, next_segment)?;
            // Copied out (or refused): the room is free again.
            pool.releases.done(descriptor.seq);
            resolved
        };
        let header = Header {
            flags: stand_in.header.flags & !FLAG_BULK,
            metadata_len: descriptor.metadata_len,
            payload_len: descriptor.payload_len,
            ..stand_in.header
        };
        match resolved {
            Resolved::Body(body) => Ok(received(&self.counters, header, body)),
            Resolved::Oversized => Ok(Decoded::Oversized(header)),
        }
    }
}

/// A bulk body received: counted, and split into the frame `header`
/// heads (its lengths are the body's).
fn received(counters: &BulkCounters, header: Header, body: Bytes) -> Decoded {
    let len = body.len() as u64;
    BULK_RECEIVED.fetch_add(1, Ordering::Relaxed);
    BULK_BYTES_RECEIVED.fetch_add(len, Ordering::Relaxed);
    counters.received.fetch_add(1, Ordering::Relaxed);
    counters.bytes_received.fetch_add(len, Ordering::Relaxed);
    let metadata = body.slice(..(header.metadata_len as usize).min(body.len()));
    let payload = body.slice(metadata.len()..);
    Decoded::Frame(Frame {
        header,
        metadata,
        payload,
    })
}

impl LinkRx for ShmRx {
    /// Appends the frames that have arrived to `out`, without waiting.
    fn try_recv(&mut self, out: &mut Vec<Decoded>) -> Result<Polled, LinkError> {
        loop {
            let before = out.len();
            if decode_available(&mut self.decoder, &mut self.buf, out)? {
                let mut largest = 0;
                for decoded in &mut out[before..] {
                    if let Decoded::Frame(frame) = decoded
                        && frame.header.flags & FLAG_BULK != 0
                    {
                        *decoded = self.resolve_bulk(frame).map_err(LinkError::Io)?;
                    }
                    if let Decoded::Frame(frame) = decoded {
                        largest = largest.max(frame.metadata.len() + frame.payload.len());
                    }
                }
                self.wake.budget.traffic.received(largest);
                return Ok(Polled::Frames);
            }
            if self.drain_ring()? > 0 {
                continue;
            }
            if !self.wake.peer_done.load(Ordering::Acquire) {
                return Ok(Polled::Empty);
            }
            // The peer sends no more: drain what it wrote before it said so.
            if self.drain_ring()? > 0 {
                continue;
            }
            // Ends cleanly between frames, or it is an error.
            end_of_stream(&self.decoder, &self.buf)?;
            return Ok(Polled::Closed);
        }
    }

    /// Announces that this side sleeps until data arrives (the producer
    /// then wakes it). `false`: data is there already, poll again.
    fn arm(&mut self) -> bool {
        self.consumer.prepare_to_wait()
    }

    /// Withdraws [`arm`](Self::arm): a task is polling, the producer need
    /// not wake anyone.
    fn disarm(&mut self) {
        self.consumer.cancel_wait();
    }

    fn wake(&self) -> Option<Arc<dyn RxWake>> {
        Some(Arc::clone(&self.wake) as Arc<dyn RxWake>)
    }

    async fn recv(&mut self, out: &mut Vec<Decoded>) -> Result<bool, LinkError> {
        let mut waiting_since: Option<Instant> = None;
        loop {
            match self.try_recv(out)? {
                Polled::Frames => {
                    if let Some(since) = waiting_since {
                        self.wake.budget.found_after(since.elapsed());
                    }
                    return Ok(true);
                }
                Polled::Closed => return Ok(false),
                Polled::Empty => {}
            }
            waiting_since.get_or_insert_with(Instant::now);
            // Held as `&mut` across the spin's yields: the consumer is not
            // `Sync`.
            let consumer = &mut self.consumer;
            if self
                .wake
                .budget
                .spin(move || consumer.available().is_ok_and(|n| n > 0))
                .await
            {
                continue;
            }
            let wake = Arc::clone(&self.wake);
            let ticket = wake.ticket();
            if !self.consumer.prepare_to_wait() {
                continue;
            }
            let slept = wake.sleep(ticket).await;
            self.consumer.cancel_wait();
            if let Err(err) = slept {
                // The peer left: deliver what it wrote before it did.
                if self.drain_ring()? > 0 {
                    continue;
                }
                if err.kind() != io::ErrorKind::UnexpectedEof {
                    return Err(LinkError::Io(err));
                }
                return end_of_stream(&self.decoder, &self.buf);
            }
        }
    }
}

impl RxWake for Wake {
    fn ticket(&self) -> Pin<Box<Notified<'_>>> {
        Self::ticket(self)
    }

    fn sleep<'a>(
        &'a self,
        ticket: Pin<Box<Notified<'a>>>,
    ) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>> {
        Box::pin(Self::sleep(self, ticket))
    }

    fn largest_moved(&self) -> u64 {
        self.budget.traffic.largest()
    }
}
