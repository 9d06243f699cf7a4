//! Bulk bodies: a frame body too large for the shared-memory ring is
//! written, as it is encoded, straight into a memfd of its own
//! (`SpillWriter`): the bytes are copied once, from the caller's value
//! into the region the receiver maps. Only links that pass such regions
//! (shared memory) enable the spill; elsewhere the writer is a plain `Vec`.
//!
//! Allocating the pages of a fresh memfd costs about as much as copying
//! into them, so a background thread keeps one region ready (its pages
//! allocated), sized like the largest body that spilled lately; the spare
//! is dropped after a few idle seconds.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

#[cfg(doc)]
use crate::protocol::frame::HEADER_LEN;
#[cfg(target_os = "linux")]
use crate::transport::shm::pool::{LoanSite, PooledBody, Reservation, SendPool};

/// The bulk path of a link's sending half, a capability that
/// [`LinkTx::bulk`](super::LinkTx::bulk) offers where the link has one
/// (shared memory): frame bodies over [`threshold`](Self::threshold) are
/// encoded into a [`BulkBody`] and sent with
/// [`send_bulk`](Self::send_bulk), in order with the half's other frames.
pub trait BulkTx: Send {
    /// Frame bodies larger than this should be encoded into a
    /// [`BulkBody`] (the encoder spills such a body into one as it grows).
    fn threshold(&self) -> usize;

    /// What this link has moved as bulk regions, for the debug views.
    fn counters(&self) -> Arc<BulkCounters>;

    /// Sends one frame whose header is `header` (the [`HEADER_LEN`]
    /// bytes, lengths included) and whose body is `body`.
    fn send_bulk(
        &mut self,
        header: &[u8],
        body: BulkBody,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// The shared-memory pool encoders write large bodies into, where the
    /// link has one.
    #[cfg(target_os = "linux")]
    fn pool(&self) -> Option<Arc<SendPool>> {
        None
    }
}

/// The bulk path of links without one: no value of it exists.
#[derive(Debug)]
pub(crate) enum NoBulk {}

impl BulkTx for NoBulk {
    fn threshold(&self) -> usize {
        match *self {}
    }

    fn counters(&self) -> Arc<BulkCounters> {
        match *self {}
    }

    async fn send_bulk(&mut self, _header: &[u8], _body: BulkBody) -> io::Result<()> {
        match *self {}
    }
}

/// Bodies one link moved as memory-mapped bulk regions (the `mmap` track
/// of a shared-memory connection), shared by its two halves and read by the
/// debug views.
#[derive(Debug, Default)]
pub struct BulkCounters {
    /// Bodies sent as a bulk region.
    pub sent: std::sync::atomic::AtomicU64,
    /// Bodies received as a bulk region.
    pub received: std::sync::atomic::AtomicU64,
    /// Body bytes sent that way.
    pub bytes_sent: std::sync::atomic::AtomicU64,
    /// Body bytes received that way.
    pub bytes_received: std::sync::atomic::AtomicU64,
    /// Bytes of this side's shared-memory pool holding bodies the peer has
    /// not released yet.
    pub pool_in_use: std::sync::atomic::AtomicU64,
    /// Bytes of shared memory this side's pool holds (its segments).
    pub pool_capacity: std::sync::atomic::AtomicU64,
    /// Bodies sent as a region of their own because the pool could not
    /// take them (larger than its limit, or no memory for a segment).
    pub pool_fallbacks: std::sync::atomic::AtomicU64,
    /// Bodies sent through the pool (counted in `sent` too).
    pub pool_sent: std::sync::atomic::AtomicU64,
    /// Of those, bodies sent from a loan, where the caller wrote them.
    pub pool_loaned: std::sync::atomic::AtomicU64,
    /// The peer's pooled bodies are read in place here, not copied out.
    pub reads_in_place: std::sync::atomic::AtomicBool,
    /// The sending pool, to bring `pool_in_use` up to date before it is
    /// read (releases are otherwise applied when the pool next allocates).
    #[cfg(target_os = "linux")]
    pub(crate) pool: std::sync::OnceLock<std::sync::Weak<SendPool>>,
}

impl BulkCounters {
    /// Applies the releases the peer has made since the pool last looked,
    /// so that `pool_in_use` is current.
    pub fn refresh(&self) {
        #[cfg(target_os = "linux")]
        if let Some(pool) = self.pool.get().and_then(std::sync::Weak::upgrade) {
            pool.note_releases();
        }
    }
}

/// A frame body too large for the ring, encoded: in a memfd of its own
/// (not yet sealed: the link seals it and passes it to the peer), or in the
/// sending side's shared-memory pool.
#[derive(Debug)]
pub struct BulkBody {
    kind: BodyKind,
}

#[derive(Debug)]
enum BodyKind {
    Region {
        fd: OwnedFd,
        len: u64,
    },
    #[cfg(target_os = "linux")]
    Pooled(PooledBody),
}

/// Where an encoded bulk body is.
#[derive(Debug)]
pub(crate) enum BodyPlace {
    /// A memfd of its own and its length.
    Region(OwnedFd, u64),
    /// The sending side's pool.
    #[cfg(target_os = "linux")]
    Pooled(PooledBody),
}

impl BulkBody {
    /// Bytes written.
    pub fn len(&self) -> usize {
        match &self.kind {
            BodyKind::Region { len, .. } => usize::try_from(*len).unwrap_or(usize::MAX),
            #[cfg(target_os = "linux")]
            BodyKind::Pooled(body) => body.len(),
        }
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A body in the sending side's pool.
    #[cfg(target_os = "linux")]
    pub(crate) fn from_pooled(body: PooledBody) -> Self {
        Self {
            kind: BodyKind::Pooled(body),
        }
    }

    /// The body at `place`.
    pub(crate) fn from_place(place: BodyPlace) -> Self {
        let kind = match place {
            BodyPlace::Region(fd, len) => BodyKind::Region { fd, len },
            #[cfg(target_os = "linux")]
            BodyPlace::Pooled(body) => BodyKind::Pooled(body),
        };
        Self { kind }
    }

    /// Where the body is.
    pub(crate) fn into_place(self) -> BodyPlace {
        match self.kind {
            BodyKind::Region { fd, len } => BodyPlace::Region(fd, len),
            #[cfg(target_os = "linux")]
            BodyKind::Pooled(body) => BodyPlace::Pooled(body),
        }
    }
}

/// Where an encoder spills a large body: above `threshold` bytes, into the
/// link's pool where it has one, else into a memfd of its own.
#[derive(Clone, Debug)]
pub(crate) struct SpillTo {
    /// Bodies larger than this spill.
    pub(crate) threshold: usize,
    /// The sending side's shared-memory pool.
    #[cfg(target_os = "linux")]
    pub(crate) pool: Option<Arc<SendPool>>,
}

impl SpillTo {
    /// Spills above `threshold` into memfds of their own (no pool).
    #[cfg(test)]
    pub(crate) fn threshold(threshold: usize) -> Self {
        Self {
            threshold,
            #[cfg(target_os = "linux")]
            pool: None,
        }
    }
}

/// Bytes staged before a write to the memfd (encoders write small pieces).
const STAGING: usize = 64 * 1024;
/// Writes this long are looked up among the pool's loans (a loan shorter
/// than this is copied as any bytes are).
#[cfg(target_os = "linux")]
const LOAN_MIN: usize = 4096;

/// An encoder's output: bytes go into `vec` until the frame body (what
/// follows `body_start`) would pass `threshold`; then the body so far and
/// everything after it go into a [`BulkBody`].
pub(crate) struct SpillWriter<'a> {
    vec: &'a mut Vec<u8>,
    body_start: usize,
    to: Option<&'a SpillTo>,
    spill: Option<Spill>,
    /// The body may not pass this; a write that would is refused.
    limit: Option<usize>,
    /// The body length a refused write would have reached.
    over_limit: Option<usize>,
}

struct Spill {
    target: Target,
    written: u64,
    staging: Vec<u8>,
}

/// Where a spilled body goes.
enum Target {
    /// Room reserved in the link's pool: bytes are copied straight in.
    #[cfg(target_os = "linux")]
    Pool(Reservation),
    /// A prepared region: its pages are allocated already.
    #[cfg(target_os = "linux")]
    Mapped(crate::sys::bulk::PreparedRegion),
    /// Around a loan of the link's pool: the body starts at `start` of the
    /// loan's segment, its loaned bytes are where the caller wrote them,
    /// and the rest is copied in before and after them.
    #[cfg(target_os = "linux")]
    Loan { site: LoanSite, start: usize },
    /// A plain memfd: `pwrite`.
    File(OwnedFd),
}

impl<'a> SpillWriter<'a> {
    /// Writes after `vec`'s current contents; the body starts at
    /// `body_start`; `to: None` never spills.
    pub(crate) fn new(vec: &'a mut Vec<u8>, body_start: usize, to: Option<&'a SpillTo>) -> Self {
        Self {
            vec,
            body_start,
            to,
            spill: None,
            limit: None,
            over_limit: None,
        }
    }

    /// Refuses (with an error, before copying them) bytes that would take
    /// the body past `limit`.
    pub(crate) fn with_limit(mut self, limit: Option<usize>) -> Self {
        self.limit = limit;
        self
    }

    /// The body length a refused write would have reached, if one was
    /// refused.
    pub(crate) fn over_limit(&self) -> Option<usize> {
        self.over_limit
    }

    /// Body bytes written so far.
    fn body_len(&self) -> usize {
        match &self.spill {
            Some(spill) => spill.written as usize + spill.staging.len(),
            None => self.vec.len() - self.body_start,
        }
    }

    /// The body, if it spilled (`vec` then holds only what precedes the
    /// body).
    pub(crate) fn finish(self) -> io::Result<Option<BulkBody>> {
        let Some(mut spill) = self.spill else {
            return Ok(None);
        };
        spill.flush()?;
        let fd = match spill.target {
            #[cfg(target_os = "linux")]
            Target::Pool(reservation) => {
                let body = reservation.commit(spill.written as usize);
                return Ok(Some(BulkBody {
                    kind: BodyKind::Pooled(body),
                }));
            }
            #[cfg(target_os = "linux")]
            Target::Loan { site, start } => {
                let body = site.into_body(start, spill.written as usize);
                return Ok(Some(BulkBody {
                    kind: BodyKind::Pooled(body),
                }));
            }
            #[cfg(target_os = "linux")]
            Target::Mapped(region) => region.into_fd(),
            Target::File(fd) => fd,
        };
        pool::expect(spill.written as usize);
        Ok(Some(BulkBody {
            kind: BodyKind::Region {
                fd,
                len: spill.written,
            },
        }))
    }

    /// The room to spill into: the link's pool where it has room (or may
    /// grow), else a memfd of its own. `None`: the pool may take the body
    /// later but has no room now, so it stays in the frame's `Vec` (the
    /// link's writer moves it into the pool when there is room).
    fn spill_target(&self, len: usize) -> io::Result<Option<Target>> {
        #[cfg(target_os = "linux")]
        if let Some(pool) = self.to.and_then(|to| to.pool.as_ref()) {
            if len > pool.limit() {
                pool.fell_back();
            } else {
                return Ok(pool.reserve(len).map(Target::Pool));
            }
        }
        Ok(Some(match pool::take(len) {
            Some(region) => region,
            None => Target::File(new_body()?),
        }))
    }

    fn start_spill(&mut self, next: usize) -> io::Result<Option<Spill>> {
        let so_far = self.vec.len() - self.body_start;
        let Some(target) = self.spill_target(so_far + next)? else {
            return Ok(None);
        };
        let mut spill = Spill {
            target,
            written: 0,
            staging: Vec::with_capacity(STAGING),
        };
        spill.write_direct(&self.vec[self.body_start..])?;
        self.vec.truncate(self.body_start);
        Ok(Some(spill))
    }

    /// Where `buf` is a loan of the link's pool and the body so far fits
    /// the loan's headroom: the body so far goes in front of the loaned
    /// bytes, which stay where the caller wrote them.
    #[cfg(target_os = "linux")]
    fn spill_around_loan(&mut self, buf: &[u8]) -> Option<Spill> {
        let pool = self.to?.pool.as_ref()?;
        let site = pool.take_loaned(buf)?;
        let before = &self.vec[self.body_start..];
        let start = site.data_offset().checked_sub(before.len())?;
        if before.len() > site.headroom() || !site.write(start, before) {
            return None;
        }
        let written = (before.len() + buf.len()) as u64;
        self.vec.truncate(self.body_start);
        Some(Spill {
            target: Target::Loan { site, start },
            written,
            staging: Vec::new(),
        })
    }

    /// The body outgrew its room in the pool: it goes back into the `Vec`
    /// (and the link's writer moves it into the pool, which can grow then).
    fn unspill(&mut self) -> io::Result<()> {
        let Some(mut spill) = self.spill.take() else {
            return Ok(());
        };
        #[cfg(target_os = "linux")]
        let written = match &spill.target {
            Target::Pool(reservation) => Some(reservation.read(spill.written as usize)),
            Target::Loan { site, start } => Some(site.read(*start, spill.written as usize)),
            _ => None,
        };
        #[cfg(target_os = "linux")]
        if let Some(written) = written {
            let written = written.ok_or_else(|| {
                io::Error::other(
                    "the pool lost the body being written into it (a switchyard bug: please \
                     report it)",
                )
            })?;
            self.vec.extend_from_slice(&written);
            self.vec.append(&mut spill.staging);
        }
        self.to = None;
        Ok(())
    }
}

impl io::Write for SpillWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let after = self.body_len() + buf.len();
        if self.limit.is_some_and(|limit| after > limit) {
            self.over_limit = Some(after);
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("the body would reach {after} bytes, over the limit"),
            ));
        }
        #[cfg(target_os = "linux")]
        if self.spill.is_none()
            && buf.len() >= LOAN_MIN
            && let Some(spill) = self.spill_around_loan(buf)
        {
            self.spill = Some(spill);
            return Ok(buf.len());
        }
        if self.spill.is_none() {
            let body = self.vec.len() - self.body_start + buf.len();
            let threshold = self.to.map(|to| to.threshold);
            if threshold.is_none_or(|threshold| body <= threshold) {
                self.vec.extend_from_slice(buf);
                return Ok(buf.len());
            }
            self.spill = self.start_spill(buf.len())?;
            if self.spill.is_none() {
                self.to = None;
                self.vec.extend_from_slice(buf);
                return Ok(buf.len());
            }
        }
        if let Some(spill) = &mut self.spill
            && !spill.write(buf)?
        {
            self.unspill()?;
            self.vec.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Spill {
    /// `Ok(false)`: the pool's room is too small for `buf` (nothing
    /// written).
    fn write(&mut self, buf: &[u8]) -> io::Result<bool> {
        let after = self.written as usize + self.staging.len() + buf.len();
        #[cfg(target_os = "linux")]
        match &self.target {
            Target::Pool(reservation) if after > reservation.capacity() => return Ok(false),
            Target::Loan { site, start } if start + after > site.room_end() => return Ok(false),
            _ => {}
        }
        if buf.len() >= STAGING {
            self.flush()?;
            self.write_direct(buf)?;
            return Ok(true);
        }
        if self.staging.len() + buf.len() > STAGING {
            self.flush()?;
        }
        self.staging.extend_from_slice(buf);
        Ok(true)
    }

    fn flush(&mut self) -> io::Result<()> {
        let staged = std::mem::take(&mut self.staging);
        self.write_direct(&staged)?;
        self.staging = staged;
        self.staging.clear();
        Ok(())
    }

    fn write_direct(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let fd = match &self.target {
            #[cfg(target_os = "linux")]
            Target::Pool(reservation) => {
                if !reservation.write(self.written as usize, bytes) {
                    return Err(io::Error::other(
                        "the body did not fit the pool room reserved for it (a switchyard bug: \
                         please report it)",
                    ));
                }
                self.written += bytes.len() as u64;
                return Ok(());
            }
            #[cfg(target_os = "linux")]
            Target::Loan { site, start } => {
                if !site.write(*start + self.written as usize, bytes) {
                    return Err(io::Error::other(
                        "the body did not fit around its loan (a switchyard bug: please report \
                         it)",
                    ));
                }
                self.written += bytes.len() as u64;
                return Ok(());
            }
            #[cfg(target_os = "linux")]
            Target::Mapped(region) => region.fd(),
            Target::File(fd) => fd.as_fd(),
        };
        write_at(fd, bytes, self.written)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn new_body() -> io::Result<OwnedFd> {
    Ok(crate::sys::bulk::new_body()?)
}

#[cfg(target_os = "linux")]
fn write_at(fd: BorrowedFd<'_>, bytes: &[u8], offset: u64) -> io::Result<()> {
    crate::sys::bulk::write_at(fd, bytes, offset)
}

#[cfg(not(target_os = "linux"))]
fn new_body() -> io::Result<OwnedFd> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "bulk regions need Linux memfds",
    ))
}

#[cfg(not(target_os = "linux"))]
fn write_at(_fd: BorrowedFd<'_>, _bytes: &[u8], _offset: u64) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "bulk regions need Linux memfds",
    ))
}

/// The spare region kept ready by a background thread.
#[cfg(target_os = "linux")]
mod pool {
    use std::sync::{Condvar, Mutex, OnceLock};
    use std::time::{Duration, Instant};

    use super::Target;
    use crate::sys::bulk::PreparedRegion;

    /// A spare unused this long is dropped (its memory given back).
    const IDLE: Duration = Duration::from_secs(3);
    /// Spares are sized in steps of this.
    const STEP: usize = 1 << 20;
    /// Smaller bodies are not worth a spare: allocating their pages costs
    /// little, and a spare's pages (fresh from another thread) can make
    /// the seal wait for them.
    const MIN_SPARE: usize = 4 << 20;
    /// No spare larger than this is kept ready.
    const MAX_SPARE: usize = 256 << 20;

    #[derive(Default)]
    struct State {
        spare: Option<PreparedRegion>,
        /// The capacity the next spare should have (0: none wanted).
        wanted: usize,
        last_used: Option<Instant>,
        started: bool,
    }

    struct Pool {
        state: Mutex<State>,
        changed: Condvar,
    }

    fn pool() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| Pool {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    }

    /// The spare, if it holds at least `len` bytes.
    pub(super) fn take(len: usize) -> Option<Target> {
        if len < MIN_SPARE {
            return None;
        }
        let mut state = pool().state.lock().ok()?;
        state.last_used = Some(Instant::now());
        if state.spare.as_ref()?.capacity() < len {
            return None;
        }
        let spare = state.spare.take()?;
        pool().changed.notify_one();
        Some(Target::Mapped(spare))
    }

    /// A body of `len` bytes spilled: keep a spare that size ready.
    pub(super) fn expect(len: usize) {
        let wanted = len.div_ceil(STEP).saturating_mul(STEP);
        if !(MIN_SPARE..=MAX_SPARE).contains(&wanted) {
            return;
        }
        let Ok(mut state) = pool().state.lock() else {
            return;
        };
        state.wanted = state.wanted.max(wanted);
        state.last_used = Some(Instant::now());
        if !state.started {
            let started = std::thread::Builder::new()
                .name("switchyard-bulk".into())
                .spawn(prepare_loop);
            state.started = started.is_ok();
        }
        pool().changed.notify_one();
    }

    /// Prepares a spare whenever one is wanted and missing; drops it after
    /// [`IDLE`] without use.
    fn prepare_loop() {
        let pool = pool();
        let Ok(mut state) = pool.state.lock() else {
            return;
        };
        loop {
            let idle = state.last_used.is_some_and(|t| t.elapsed() >= IDLE);
            if idle {
                state.spare = None;
                state.wanted = 0;
                state.last_used = None;
            }
            let missing = state
                .spare
                .as_ref()
                .is_none_or(|s| s.capacity() < state.wanted);
            if missing && state.wanted > 0 {
                let wanted = state.wanted;
                drop(state);
                let prepared = PreparedRegion::new(wanted).ok();
                let Ok(relocked) = pool.state.lock() else {
                    return;
                };
                state = relocked;
                if prepared.is_some() {
                    state.spare = prepared;
                }
                continue;
            }
            state = match pool.changed.wait_timeout(state, IDLE) {
                Ok((state, _)) => state,
                Err(_) => return,
            };
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod pool {
    use super::Target;

    pub(super) fn take(_len: usize) -> Option<Target> {
        None
    }

    pub(super) fn expect(_len: usize) {}
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Write;
    use std::os::fd::AsFd;

    use super::*;

    fn read_all(body: BulkBody) -> Vec<u8> {
        let BodyPlace::Region(fd, len) = body.into_place() else {
            panic!("no pool here")
        };
        let mut out = vec![0u8; len as usize];
        let n = rustix::io::pread(fd.as_fd(), &mut out, 0).unwrap();
        assert_eq!(n as u64, len);
        out
    }

    #[test]
    fn small_bodies_stay_in_the_vec() {
        let mut vec = vec![0u8; 4];
        let to = SpillTo::threshold(10);
        let mut writer = SpillWriter::new(&mut vec, 4, Some(&to));
        writer.write_all(b"0123456789").unwrap();
        assert!(writer.finish().unwrap().is_none());
        assert_eq!(&vec[4..], b"0123456789");
    }

    #[test]
    fn large_bodies_spill_whole_and_in_order() {
        let mut vec = vec![9u8; 4];
        vec.extend_from_slice(b"meta");
        let big = vec![5u8; 300_000];
        let to = SpillTo::threshold(1000);
        let mut writer = SpillWriter::new(&mut vec, 4, Some(&to));
        writer.write_all(b"ab").unwrap();
        writer.write_all(&big).unwrap();
        for byte in 0..100u8 {
            writer.write_all(&[byte]).unwrap();
        }
        let body = writer.finish().unwrap().expect("spilled");
        assert_eq!(vec, [9u8; 4], "the vec keeps what precedes the body");
        let bytes = read_all(body);
        assert_eq!(bytes.len(), 4 + 2 + 300_000 + 100);
        assert_eq!(&bytes[..6], b"metaab");
        assert!(bytes[6..300_006].iter().all(|&b| b == 5));
        assert_eq!(bytes[300_006..], (0..100u8).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn no_threshold_never_spills() {
        let mut vec = Vec::new();
        let mut writer = SpillWriter::new(&mut vec, 0, None);
        writer.write_all(&vec![1u8; 1 << 20]).unwrap();
        assert!(writer.finish().unwrap().is_none());
        assert_eq!(vec.len(), 1 << 20);
    }
}
