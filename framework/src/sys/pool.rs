//! Pool segments: the shared memory a shm connection's sender keeps, maps
//! once and reuses for large bodies (see `transport/shm/pool.rs` for the
//! allocator and the hand-off).
//!
//! A segment is a memfd the sender sizes, maps read-write with its pages
//! populated, and only then seals with `F_SEAL_SHRINK | F_SEAL_GROW |
//! F_SEAL_FUTURE_WRITE`: the sender's own mapping stays writable, but nobody
//! else can ever map it writable or `write(2)` it, and nobody can truncate
//! it under a mapping (which would raise SIGBUS). The receiver checks the
//! seals and the size before it maps the segment read-only; it copies a
//! body out with raw-pointer copies before anything decodes it, because the
//! sender may still be writing there (a hostile sender scribbling after it
//! sent a body changes nothing the receiver already copied).
//!
//! The `unsafe` here is the pointer copies into and out of the mappings.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{MemfdFlags, SealFlags};

use super::shm::{CreateError, MapError, check_seals, recv_fds, send_fds};

/// The seals a pool segment must carry: its size is fixed, and only the
/// mapping its creator made before sealing can write it.
pub const SEGMENT_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::FUTURE_WRITE);

/// The first bytes of a segment message on the region socket (a bulk
/// region's message is its 8-byte sequence number, so the two cannot be
/// confused).
const SEGMENT_MAGIC: [u8; 4] = *b"SEG1";

/// A segment as its sender holds it: the memfd and a read-write mapping.
#[derive(Debug)]
pub struct SenderSegment {
    fd: OwnedFd,
    map: MmapRaw,
}

impl SenderSegment {
    /// A fresh segment of `len` bytes (at least one page), its pages
    /// allocated and mapped, sealed with [`SEGMENT_SEALS`].
    pub fn new(len: usize) -> Result<Self, CreateError> {
        let len = len.max(4096);
        let fd = rustix::fs::memfd_create(
            "switchyard-pool",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| CreateError::Create(e.into()))?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| CreateError::Resize {
            len: len as u64,
            source: e.into(),
        })?;
        let map = MmapOptions::new()
            .len(len)
            .populate()
            .map_raw(&fd)
            .map_err(|e| CreateError::Resize {
                len: len as u64,
                source: e,
            })?;
        rustix::fs::fcntl_add_seals(&fd, SEGMENT_SEALS | SealFlags::SEAL)
            .map_err(|e| CreateError::Seal(e.into()))?;
        Ok(Self { fd, map })
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it has no bytes (never: segments are at least a page).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The memfd, to pass to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Copies `bytes` to `offset`; `false` (nothing written) if they would
    /// not fit.
    pub fn write(&self, offset: usize, bytes: &[u8]) -> bool {
        if offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.map.len())
        {
            return false;
        }
        // SAFETY: `offset + bytes.len()` is inside the mapping (checked
        // above), which lives as long as `self`; `bytes` is private memory
        // that cannot overlap a mapping only this type hands out pointers
        // into. Only this process can write the segment (F_SEAL_FUTURE_WRITE
        // was added after this mapping was made), and the allocator gives
        // each range to one writer at a time.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_mut_ptr().add(offset),
                bytes.len(),
            );
        }
        true
    }

    /// Copies `len` bytes at `offset` out (a body that outgrew its
    /// reservation goes back to the heap); `None` if out of range.
    pub fn read(&self, offset: usize, len: usize) -> Option<Vec<u8>> {
        copy_out(&self.map, offset, len)
    }
}

/// A range of a segment lent to one owner, who may read and write it as a
/// slice (a loan the caller fills in place, see `transport/shm/pool.rs`).
#[derive(Debug)]
pub struct Lease {
    mem: Arc<SenderSegment>,
    offset: usize,
    len: usize,
}

impl Lease {
    /// Lends `len` bytes at `offset` of `mem`; `None` if they are not all
    /// inside it.
    ///
    /// # Safety
    ///
    /// Until the lease is dropped, nothing else reads or writes that range
    /// through `mem` (the pool's allocator hands each range to one owner;
    /// the peer maps segments read-only, and their seals keep anyone else
    /// from writing them).
    pub unsafe fn new(mem: Arc<SenderSegment>, offset: usize, len: usize) -> Option<Self> {
        let end = offset.checked_add(len)?;
        (end <= mem.len()).then_some(Self { mem, offset, len })
    }

    /// The segment it is in.
    pub fn segment(&self) -> &Arc<SenderSegment> {
        &self.mem
    }

    /// Its offset in the segment.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Its bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `offset..offset + len` is inside the mapping (checked in
        // `new`), which `mem` keeps alive; by `new`'s contract nothing else
        // writes the range while the lease lives, and `&self` rules out a
        // `&mut` from `as_mut_slice` at the same time. Memory of a shared
        // mapping is always initialized.
        unsafe { std::slice::from_raw_parts(self.mem.map.as_ptr().add(self.offset), self.len) }
    }

    /// Its bytes, to write.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only
        // reference to the range, and the mapping is writable (only the
        // creator's mapping made before sealing is, and this is it).
        unsafe {
            std::slice::from_raw_parts_mut(self.mem.map.as_mut_ptr().add(self.offset), self.len)
        }
    }
}

/// A peer's segment as the receiver maps it: read-only.
#[derive(Debug)]
pub struct ReceiverSegment {
    map: MmapRaw,
}

impl ReceiverSegment {
    /// Checks that `fd` carries [`SEGMENT_SEALS`] and is `len` bytes, then
    /// maps it read-only with its pages populated.
    pub fn map(fd: impl AsFd, len: usize) -> Result<Self, MapError> {
        let fd = fd.as_fd();
        check_seals(fd, len as u64, SEGMENT_SEALS)?;
        let map = MmapOptions::new()
            .len(len)
            .populate()
            .map_raw_read_only(&fd)
            .map_err(MapError::Map)?;
        Ok(Self { map })
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// A private copy of the `len` bytes at `offset`; `None` if they are
    /// not all inside the segment.
    pub fn copy_out(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        self.copy_into(offset, len, Vec::new())
    }

    /// [`copy_out`](Self::copy_out) into `out` (its contents replaced, its
    /// capacity reused).
    pub fn copy_into(&self, offset: u64, len: usize, out: Vec<u8>) -> Option<Vec<u8>> {
        copy_into(&self.map, usize::try_from(offset).ok()?, len, out)
    }
}

/// A body read in place: a range of a peer's segment mapped here, lent
/// out as a slice without a copy (only where the receiver trusts the
/// sender not to write what it sent, see `transport/shm/peer_pool.rs`).
#[derive(Debug)]
pub struct Borrowed {
    mem: Arc<ReceiverSegment>,
    offset: usize,
    len: usize,
}

impl Borrowed {
    /// Lends `len` bytes at `offset` of `mem`; `None` if they are not all
    /// inside it.
    ///
    /// # Safety
    ///
    /// Until the borrow is dropped, nobody writes that range: the sender's
    /// pool does not reuse a body's room before the receiver releases it
    /// (which it does when the borrow is dropped), and the receiver trusts
    /// the sender not to write a body it has sent.
    pub unsafe fn new(mem: Arc<ReceiverSegment>, offset: u64, len: usize) -> Option<Self> {
        let offset = usize::try_from(offset).ok()?;
        let end = offset.checked_add(len)?;
        (end <= mem.len()).then_some(Self { mem, offset, len })
    }
}

impl AsRef<[u8]> for Borrowed {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the range is inside the read-only mapping (checked in
        // `new`), which `mem` keeps alive; by `new`'s contract nobody
        // writes it while the borrow lives. Memory of a shared mapping is
        // always initialized.
        unsafe { std::slice::from_raw_parts(self.mem.map.as_ptr().add(self.offset), self.len) }
    }
}

fn copy_out(map: &MmapRaw, offset: usize, len: usize) -> Option<Vec<u8>> {
    copy_into(map, offset, len, Vec::new())
}

fn copy_into(map: &MmapRaw, offset: usize, len: usize, mut out: Vec<u8>) -> Option<Vec<u8>> {
    let end = offset.checked_add(len)?;
    if end > map.len() {
        return None;
    }
    out.clear();
    out.reserve(len);
    // SAFETY: `offset..end` lies inside the mapping (checked above), which
    // lives as long as `map`; `out` has room for `len` bytes and is private
    // memory, so the ranges cannot overlap. The source may be changing under
    // a hostile sender: we only copy it, never form a reference to it, and
    // every byte of `out[..len]` is written before `set_len`.
    unsafe {
        std::ptr::copy_nonoverlapping(map.as_ptr().add(offset), out.as_mut_ptr(), len);
        out.set_len(len);
    }
    Some(out)
}

/// Passes segment `id` of `len` bytes over the region socket. `Ok(false)`:
/// the socket is full, try again shortly.
pub fn send_segment(
    socket: BorrowedFd<'_>,
    id: u32,
    len: u64,
    segment: BorrowedFd<'_>,
) -> io::Result<bool> {
    let mut message = [0u8; 16];
    message[..4].copy_from_slice(&SEGMENT_MAGIC);
    message[4..8].copy_from_slice(&id.to_le_bytes());
    message[8..].copy_from_slice(&len.to_le_bytes());
    match send_fds(socket, &message, &[segment]) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(err) => Err(err),
    }
}

/// Receives the next message of the region socket as a segment: its id,
/// length and memfd; `None` if nothing is waiting.
pub fn recv_segment(socket: BorrowedFd<'_>) -> io::Result<Option<(u32, u64, OwnedFd)>> {
    let mut message = [0u8; 16];
    match recv_fds(socket, &mut message, 1) {
        Ok((16, mut fds)) if fds.len() == 1 && message[..4] == SEGMENT_MAGIC => {
            let id = u32::from_le_bytes([message[4], message[5], message[6], message[7]]);
            let mut len = [0u8; 8];
            len.copy_from_slice(&message[8..]);
            Ok(Some((id, u64::from_le_bytes(len), fds.remove(0))))
        }
        Ok((0, _)) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed its bulk-region socket",
        )),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a region-socket message where a pool segment was due",
        )),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receiver_copies_what_the_sender_wrote_and_nothing_outside() {
        let sender = SenderSegment::new(1 << 16).unwrap();
        assert!(sender.write(100, b"hello"));
        assert!(!sender.write((1 << 16) - 2, b"hello"), "past the end");
        let receiver = ReceiverSegment::map(sender.fd(), sender.len()).unwrap();
        assert_eq!(receiver.copy_out(100, 5).unwrap(), b"hello");
        assert!(receiver.copy_out((1 << 16) - 2, 5).is_none());
        assert!(receiver.copy_out(u64::MAX, 5).is_none());
        // A copy taken is the receiver's: later writes do not reach it.
        let copy = receiver.copy_out(100, 5).unwrap();
        assert!(sender.write(100, b"HELLO"));
        assert_eq!(copy, b"hello");
        assert_eq!(receiver.copy_out(100, 5).unwrap(), b"HELLO");
    }

    #[test]
    fn nobody_else_can_write_or_resize_a_segment() {
        let sender = SenderSegment::new(1 << 16).unwrap();
        let fd = sender.fd();
        assert!(rustix::io::pwrite(fd, b"x", 0).is_err(), "write(2) refused");
        assert!(rustix::fs::ftruncate(fd, 10).is_err(), "shrinking refused");
        assert!(
            MmapOptions::new().len(4096).map_raw(&fd).is_err(),
            "a new writable mapping refused"
        );
    }

    #[test]
    fn an_unsealed_or_wrongly_sized_fd_is_refused() {
        let plain = rustix::fs::memfd_create("plain", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&plain, 4096).unwrap();
        assert!(ReceiverSegment::map(&plain, 4096).is_err());
        let sender = SenderSegment::new(8192).unwrap();
        assert!(ReceiverSegment::map(sender.fd(), 4096).is_err());
    }
}
