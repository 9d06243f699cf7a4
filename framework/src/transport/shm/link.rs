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
//! Waiting: a side that finds its ring empty (or full) spins for a budget
//! that adapts (doubling after a spin that found data, halving after one
//! that did not; bounded, zero allowed), then announces it sleeps (the
//! ring's waiter flag) and waits on its eventfd through tokio; the peer
//! writes that eventfd only when the flag is set. A missed wake-up cannot
//! hang a side: sleeps are bounded and the ring is checked again after each.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;

use super::ring::{Consumer, Producer, Ring, RingError, Role, region_len};
use crate::protocol::frame::{Decoded, FrameDecoder};
use crate::sys::shm as sys;
use crate::transport::stream::{decode_available, end_of_stream};
use crate::transport::{Link, LinkError, LinkRx, LinkTx, PeerInfo, Transport};

/// What a client sends first to ask for shared memory: `SYSHM`, version 1,
/// then the ring capacity as u32 little endian.
pub const OFFER: &[u8; 6] = b"SYSHM\x01";
/// The server's answer.
pub const ACCEPT: &[u8; 6] = b"SYSHM+";
/// Bytes of data each ring holds by default.
pub const DEFAULT_CAPACITY: usize = 1 << 20;
/// The longest a side spins before it sleeps.
const MAX_SPIN: Duration = Duration::from_micros(50);
/// A sleep is re-checked at least this often (a lost wake-up costs this
/// much latency, never a hang).
const MAX_SLEEP: Duration = Duration::from_millis(20);

/// A shared-memory link.
#[derive(Debug)]
pub struct ShmLink {
    producer: Producer,
    consumer: Consumer,
    wake: Arc<Wake>,
    peer: PeerInfo,
}

/// The wake-up lines and the control socket, shared by both halves.
#[derive(Debug)]
struct Wake {
    /// Our eventfd: the peer writes it to wake us.
    mine: AsyncFd<OwnedFd>,
    /// The peer's eventfd.
    theirs: OwnedFd,
    /// The socket the link was set up over; end-of-file means the peer left.
    control: UnixStream,
    /// The current spin budget in nanoseconds.
    spin_ns: AtomicU64,
    /// The peer said it sends no more ([`END`] on the control socket).
    peer_done: std::sync::atomic::AtomicBool,
}

/// The byte a side sends on the control socket when it will send no more
/// frames (its half-close); the socket's end-of-file means the peer is gone.
const END: u8 = b'E';

impl Wake {
    fn wake_peer(&self) {
        let _ = sys::eventfd_write(self.theirs.as_fd(), 1);
    }

    /// Spins up to the budget for `ready` to hold; adapts the budget.
    fn spin(&self, ready: impl Fn() -> bool) -> bool {
        let budget = Duration::from_nanos(self.spin_ns.load(Ordering::Relaxed));
        if budget.is_zero() {
            return ready();
        }
        let start = Instant::now();
        loop {
            if ready() {
                let doubled = (budget * 2).min(MAX_SPIN);
                self.spin_ns
                    .store(doubled.as_nanos() as u64, Ordering::Relaxed);
                return true;
            }
            if start.elapsed() >= budget {
                let halved = budget / 2;
                self.spin_ns
                    .store(halved.as_nanos().max(1_000) as u64, Ordering::Relaxed);
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// Sleeps until our eventfd is written, the control socket says the
    /// peer left (`Err`), or [`MAX_SLEEP`] passes.
    async fn sleep(&self) -> io::Result<()> {
        let woken = tokio::time::timeout(MAX_SLEEP, async {
            tokio::select! {
                guard = self.mine.readable() => {
                    let mut guard = guard?;
                    // 0: nothing pending (non-blocking eventfd): stale
                    // readiness, wait for the next write.
                    if sys::eventfd_read(self.mine.get_ref().as_fd())? == 0 {
                        guard.clear_ready();
                    }
                    Ok(())
                }
                gone = self.peer_gone() => gone,
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
        format!("the peer corrupted shared memory ({err}); closing the connection"),
    )
}

/// The two rings in a mapping: (client to server, server to client).
fn rings(map: Arc<memmap2::MmapRaw>, capacity: usize, role: Role) -> io::Result<(Ring, Ring)> {
    let ring_len = region_len(capacity);
    let to_server = Ring::from_mmap(Arc::clone(&map), 0, ring_len, role)?;
    let to_client = Ring::from_mmap(map, ring_len, ring_len, role)?;
    Ok((to_server, to_client))
}

impl ShmLink {
    fn new(
        (to_server, to_client): (Ring, Ring),
        client: bool,
        mine: OwnedFd,
        theirs: OwnedFd,
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
                spin_ns: AtomicU64::new(MAX_SPIN.as_nanos() as u64 / 2),
                peer_done: std::sync::atomic::AtomicBool::new(false),
            }),
            peer,
        })
    }
}

/// Opens a shared-memory link to the server listening at `path`.
pub async fn connect(path: &Path, capacity: usize) -> io::Result<ShmLink> {
    let control = UnixStream::connect(path).await?;
    let cred = control.peer_cred().ok();
    let peer = PeerInfo {
        addr: format!("shm://{}", path.display()),
        pid: cred
            .as_ref()
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok()),
        uid: cred.as_ref().map(|c| c.uid()),
    };
    let len = 2 * region_len(capacity);
    let memfd = sys::create_memfd("switchyard-shm", len as u64)?;
    let map = Arc::new(sys::map_sealed(memfd.as_fd(), len)?);
    let mine = sys::eventfd()?;
    let mut offer = OFFER.to_vec();
    offer.extend_from_slice(&u32::try_from(capacity).unwrap_or(u32::MAX).to_le_bytes());
    // Initialise the rings before the server can attach to them.
    let rings = rings(map, capacity, Role::Init { capacity })?;
    send_with_fds(&control, &offer, &[memfd.as_fd(), mine.as_fd()]).await?;
    drop(memfd);
    let (reply, mut fds) = recv_with_fds(&control, 16, 1).await?;
    if reply.as_slice() != ACCEPT || fds.len() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "the server did not accept shared memory (an older server, or shm turned off)",
        ));
    }
    let theirs = fds.remove(0);
    ShmLink::new(rings, true, mine, theirs, control, peer)
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
    let (bytes, fds) = recv_with_fds(&stream, 64, 2).await?;
    if !bytes.starts_with(OFFER) {
        // Any fds that came with ordinary bytes are closed here.
        drop(fds);
        return Ok(Accepted::Stream(stream, bytes));
    }
    let [memfd, theirs]: [OwnedFd; 2] = fds.try_into().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "a shm offer without its two fds",
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
    let len = 2 * region_len(capacity);
    let map = Arc::new(sys::map_sealed(memfd.as_fd(), len)?);
    drop(memfd);
    let mine = sys::eventfd()?;
    let peer = PeerInfo {
        addr: peer.addr.replacen("unix://", "shm://", 1),
        ..peer
    };
    let rings = rings(map, capacity, Role::Attach)?;
    let link = ShmLink::new(rings, false, mine, theirs, stream, peer)?;
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

    fn split(self, frame_limit: u32) -> (ShmTx, ShmRx) {
        (
            ShmTx {
                producer: self.producer,
                wake: Arc::clone(&self.wake),
                closed: false,
            },
            ShmRx {
                consumer: self.consumer,
                wake: self.wake,
                buf: BytesMut::with_capacity(64 * 1024),
                decoder: FrameDecoder::new(frame_limit),
            },
        )
    }
}

/// The sending half.
#[derive(Debug)]
pub struct ShmTx {
    producer: Producer,
    wake: Arc<Wake>,
    closed: bool,
}

impl LinkTx for ShmTx {
    async fn send(&mut self, frames: &[u8]) -> io::Result<()> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "this side closed the link",
            ));
        }
        let mut rest = frames;
        while !rest.is_empty() {
            let outcome = self.producer.write(rest).map_err(corrupt)?;
            if outcome.wake_peer {
                self.wake.wake_peer();
            }
            rest = &rest[outcome.written..];
            if rest.is_empty() || outcome.written > 0 {
                continue;
            }
            // Full: spin for space, then sleep until the consumer frees some.
            let producer = &self.producer;
            if self
                .wake
                .spin(|| producer.free_space().is_ok_and(|f| f > 0))
            {
                continue;
            }
            if self.producer.prepare_to_wait() {
                let slept = self.wake.sleep().await;
                self.producer.cancel_wait();
                slept?;
            }
        }
        Ok(())
    }

    async fn close(&mut self) -> io::Result<()> {
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        // Everything written is in the ring before the END byte goes, and
        // the peer drains the ring before it believes it.
        loop {
            self.wake.control.writable().await?;
            match self.wake.control.try_write(&[END]) {
                Ok(_) => break,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
        }
        self.wake.wake_peer();
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
}

impl LinkRx for ShmRx {
    async fn recv(&mut self, out: &mut Vec<Decoded>) -> Result<bool, LinkError> {
        loop {
            if decode_available(&mut self.decoder, &mut self.buf, out)? {
                return Ok(true);
            }
            if self.drain_ring()? > 0 {
                continue;
            }
            let consumer = &self.consumer;
            if self.wake.spin(|| consumer.available().is_ok_and(|n| n > 0)) {
                continue;
            }
            if self.wake.peer_done.load(Ordering::Acquire) {
                // The peer sends no more: whatever it wrote is drained.
                if self.drain_ring()? > 0 {
                    continue;
                }
                return end_of_stream(&self.decoder, &self.buf);
            }
            if !self.consumer.prepare_to_wait() {
                continue;
            }
            let slept = self.wake.sleep().await;
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
