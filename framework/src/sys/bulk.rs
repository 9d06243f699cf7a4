//! Bulk regions: a large frame body travels as a memfd of its own, written
//! once by the sender and sealed against writing, shrinking and growing,
//! then mapped read-only by the receiver. The fd goes over a
//! `SOCK_SEQPACKET` socket pair made for the purpose at set-up (one message
//! per region: its 8-byte sequence number and the fd), so a region is never
//! confused with anything else on the connection.
//!
//! The receiver's mapping can be lent out as `&[u8]` (and as zero-copy
//! [`Bytes`](crate::Bytes)) because the seals make the memory immutable:
//! that is the one `unsafe` block here. (The sender writes with `pwrite`,
//! never through a mapping: sealing against writes waits while pages a
//! mapping used are still referenced, tens of milliseconds.)

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use memmap2::{Mmap, MmapOptions};
use rustix::fs::{FallocateFlags, MemfdFlags, SealFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use super::shm::{CreateError, MapError, check_seals, recv_fds, send_fds};

/// The seals a bulk region must carry: nobody can change its bytes or its
/// size once it is sent.
pub const BULK_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE);

/// A connected, non-blocking, close-on-exec `SOCK_SEQPACKET` pair that
/// carries bulk regions.
pub fn region_socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

/// A new, empty, close-on-exec memfd that accepts seals: a bulk body being
/// written.
pub fn new_body() -> Result<OwnedFd, CreateError> {
    rustix::fs::memfd_create(
        "switchyard-bulk",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| CreateError::Create(e.into()))
}

/// Writes all of `bytes` into `fd` at `offset` (the file grows as needed).
pub fn write_at(fd: BorrowedFd<'_>, bytes: &[u8], offset: u64) -> io::Result<()> {
    let mut rest = bytes;
    let mut offset = offset;
    while !rest.is_empty() {
        match rustix::io::pwrite(fd, rest, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the bulk memfd took no bytes",
                ));
            }
            Ok(n) => {
                rest = &rest[n..];
                offset += n as u64;
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sizes a written body to exactly `len` bytes and seals it with
/// [`BULK_SEALS`] (and against further seals): from here on nobody can
/// change it.
pub fn seal_body(fd: BorrowedFd<'_>, len: u64) -> Result<(), CreateError> {
    rustix::fs::ftruncate(fd, len).map_err(|e| CreateError::Resize {
        len,
        source: e.into(),
    })?;
    rustix::fs::fcntl_add_seals(fd, BULK_SEALS | SealFlags::SEAL)
        .map_err(|e| CreateError::Seal(e.into()))
}

/// Creates a sealed memfd holding `parts` back to back.
pub fn create_region(parts: &[&[u8]]) -> io::Result<OwnedFd> {
    let fd = new_body()?;
    let mut offset = 0u64;
    for part in parts {
        write_at(fd.as_fd(), part, offset)?;
        offset += part.len() as u64;
    }
    seal_body(fd.as_fd(), offset)?;
    Ok(fd)
}

/// A memfd with its pages allocated ahead (`fallocate`), not yet shared
/// with anyone: writing a bulk body into it skips the page allocation,
/// which costs about as much as the copy itself for fresh shared memory.
#[derive(Debug)]
pub struct PreparedRegion {
    fd: OwnedFd,
    capacity: usize,
}

impl PreparedRegion {
    /// A fresh memfd of `capacity` bytes (at least 1), allocated.
    pub fn new(capacity: usize) -> Result<Self, CreateError> {
        let capacity = capacity.max(1);
        let fd = new_body()?;
        rustix::fs::fallocate(&fd, FallocateFlags::empty(), 0, capacity as u64).map_err(|e| {
            CreateError::Resize {
                len: capacity as u64,
                source: e.into(),
            }
        })?;
        Ok(Self { fd, capacity })
    }

    /// Bytes allocated.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The memfd, to write the body into.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The memfd.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// Sends region `seq` over the region socket. `Ok(false)`: the socket is
/// full, try again shortly.
pub fn send_region(socket: BorrowedFd<'_>, seq: u64, region: BorrowedFd<'_>) -> io::Result<bool> {
    match send_fds(socket, &seq.to_le_bytes(), &[region]) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(err) => Err(err),
    }
}

/// Receives the next region from the region socket: `None` if none is
/// waiting.
pub fn recv_region(socket: BorrowedFd<'_>) -> io::Result<Option<(u64, OwnedFd)>> {
    let mut seq = [0u8; 8];
    match recv_fds(socket, &mut seq, 1) {
        Ok((8, mut fds)) if fds.len() == 1 => Ok(Some((u64::from_le_bytes(seq), fds.remove(0)))),
        Ok((0, _)) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed its bulk-region socket",
        )),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a bulk-region message that is not a sequence number and one fd",
        )),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(err) => Err(err),
    }
}

/// A bulk region mapped read-only; derefs to its bytes. A large mapping is
/// unmapped on a background thread (unmapping, and freeing the pages when
/// this was the last user, takes milliseconds for tens of MiB).
#[derive(Debug)]
pub struct Region {
    map: Option<Mmap>,
}

/// Mappings at least this large are unmapped off the caller's thread.
const REAP_AT_LEAST: usize = 1 << 20;

impl Drop for Region {
    fn drop(&mut self) {
        if let Some(map) = self.map.take()
            && map.len() >= REAP_AT_LEAST
        {
            reaper::unmap_later(map);
        }
    }
}

mod reaper {
    //! One thread per process that drops large mappings handed to it.

    use std::sync::Mutex;
    use std::sync::mpsc::{Sender, channel};

    use memmap2::Mmap;

    static REAPER: Mutex<Option<Sender<Mmap>>> = Mutex::new(None);

    /// Drops `map` on the reaper thread (here, if it cannot be started).
    pub(super) fn unmap_later(map: Mmap) {
        let Ok(mut slot) = REAPER.lock() else { return };
        if slot.is_none() {
            let (sender, receiver) = channel::<Mmap>();
            let started = std::thread::Builder::new()
                .name("switchyard-unmap".into())
                .spawn(move || receiver.into_iter().for_each(drop));
            if started.is_err() {
                return;
            }
            *slot = Some(sender);
        }
        if let Some(sender) = slot.as_ref()
            && let Err(returned) = sender.send(map)
        {
            drop(returned);
        }
    }
}

impl Region {
    /// Checks that `fd` carries [`BULK_SEALS`] and is `len` bytes, then maps
    /// it read-only with its pages populated.
    pub fn map(fd: impl AsFd, len: usize) -> Result<Self, MapError> {
        let fd = fd.as_fd();
        check_seals(fd, len as u64, BULK_SEALS)?;
        if len == 0 {
            // mmap refuses zero lengths; an empty body needs no mapping.
            return Ok(Self { map: None });
        }
        // SAFETY: the memfd is sealed against writing, shrinking and growing
        // (checked above, and seals can only be added, never removed), so
        // no process can change or truncate the bytes behind this read-only
        // mapping while it lives: lending them out as `&[u8]` is sound.
        let map =
            unsafe { MmapOptions::new().len(len).populate().map(&fd) }.map_err(MapError::Map)?;
        Ok(Self { map: Some(map) })
    }
}

impl AsRef<[u8]> for Region {
    fn as_ref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}
