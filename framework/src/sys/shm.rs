//! Shared memory for the shm transport: sealed memfds and their mappings,
//! eventfds for wake-ups, and passing fds over a Unix socket (SCM_RIGHTS).
//!
//! A region travels as a memfd sealed with `F_SEAL_SHRINK | F_SEAL_GROW`:
//! a peer that could truncate the file under our mapping would make our
//! next access raise SIGBUS. The receiving side checks the seals and the
//! size with [`check_sealed`] (done by [`map_sealed`]) before mapping.
//! Everything here is a safe wrapper over rustix and memmap2; there is no
//! `unsafe` in this file.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};
use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The seals a received memfd must carry before we map it.
pub const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW);

/// Why a memfd could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// `memfd_create` failed.
    #[error(
        "memfd_create failed: {0}; shared memory needs Linux memfd support, use another transport"
    )]
    Create(#[source] io::Error),
    /// `ftruncate` to the region size failed.
    #[error(
        "cannot size the memfd to {len} bytes: {source}; lower the ring capacity or raise the memory limit"
    )]
    Resize {
        /// The size asked for.
        len: u64,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Adding the seals failed.
    #[error("cannot seal the memfd: {0}; the kernel must support F_ADD_SEALS")]
    Seal(#[source] io::Error),
}

impl From<CreateError> for io::Error {
    fn from(error: CreateError) -> Self {
        let kind = match &error {
            CreateError::Create(e)
            | CreateError::Resize { source: e, .. }
            | CreateError::Seal(e) => e.kind(),
        };
        Self::new(kind, error)
    }
}

/// Why a shared-memory fd is refused or cannot be mapped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The fd does not support seals: not a memfd.
    #[error("shared-memory fd does not support seals ({0}); only sealed memfds are accepted")]
    NotSealable(#[source] io::Error),
    /// Seals the peer must have added are missing.
    #[error(
        "shared-memory fd lacks seals {missing:?} (has {found:?}); the peer must add F_SEAL_SHRINK|F_SEAL_GROW before sending it, or it could truncate it under our mapping"
    )]
    NotSealed {
        /// The required seals that are missing.
        missing: SealFlags,
        /// The seals present.
        found: SealFlags,
    },
    /// The fd's size is not the one agreed on.
    #[error(
        "shared-memory fd is {actual} bytes, expected {expected}; both sides must size the region from the same handshake values"
    )]
    WrongSize {
        /// The size agreed on.
        expected: u64,
        /// The size `fstat` reports.
        actual: u64,
    },
    /// `fstat` failed.
    #[error("cannot fstat the shared-memory fd: {0}")]
    Stat(#[source] io::Error),
    /// `mmap` failed.
    #[error("cannot map the shared-memory fd: {0}; check the address-space and map-count limits")]
    Map(#[source] io::Error),
}

impl From<MapError> for io::Error {
    fn from(error: MapError) -> Self {
        let kind = match &error {
            MapError::Stat(e) | MapError::Map(e) => e.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        Self::new(kind, error)
    }
}

/// Creates a close-on-exec memfd of `len` zero bytes, sealed against
/// shrinking, growing and further sealing. `name` shows in
/// `/proc/<pid>/fd` (as `memfd:<name>`) and need not be unique.
pub fn create_memfd(name: &str, len: u64) -> Result<OwnedFd, CreateError> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(|e| CreateError::Create(e.into()))?;
    rustix::fs::ftruncate(&fd, len).map_err(|e| CreateError::Resize {
        len,
        source: e.into(),
    })?;
    rustix::fs::fcntl_add_seals(&fd, REQUIRED_SEALS | SealFlags::SEAL)
        .map_err(|e| CreateError::Seal(e.into()))?;
    Ok(fd)
}

/// Checks that `fd` (typically received from the peer) carries
/// [`REQUIRED_SEALS`] and is exactly `len` bytes. The seals are checked
/// first, so the size cannot change after it is checked.
pub fn check_sealed(fd: BorrowedFd<'_>, len: u64) -> Result<(), MapError> {
    check_seals(fd, len, REQUIRED_SEALS)
}

/// Checks that `fd` carries at least the seals `required` and is exactly
/// `len` bytes (seals first, so the size cannot change after the check).
pub fn check_seals(fd: BorrowedFd<'_>, len: u64, required: SealFlags) -> Result<(), MapError> {
    let found = rustix::fs::fcntl_get_seals(fd).map_err(|e| MapError::NotSealable(e.into()))?;
    let missing = required.difference(found);
    if !missing.is_empty() {
        return Err(MapError::NotSealed { missing, found });
    }
    let stat = rustix::fs::fstat(fd).map_err(|e| MapError::Stat(e.into()))?;
    let actual = u64::try_from(stat.st_size).unwrap_or(0);
    if actual != len {
        return Err(MapError::WrongSize {
            expected: len,
            actual,
        });
    }
    Ok(())
}

/// Maps all `len` bytes of a sealed memfd shared and read-write, after
/// [`check_sealed`]. The mapping hands out raw pointers only (memory the
/// peer writes must never be borrowed as `&[u8]`); it outlives `fd`.
pub fn map_sealed(fd: BorrowedFd<'_>, len: usize) -> Result<MmapRaw, MapError> {
    check_sealed(fd, len as u64)?;
    MmapOptions::new()
        .len(len)
        .map_raw(&fd)
        .map_err(MapError::Map)
}

/// A close-on-exec, non-blocking eventfd with count zero: the wake-up line
/// of one side of a shm connection.
pub fn eventfd() -> io::Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

/// Adds `value` (non-zero) to the eventfd's count, waking a poller. A count
/// already at its maximum means a wake-up is pending anyway, so that is not
/// an error.
pub fn eventfd_write(fd: BorrowedFd<'_>, value: u64) -> io::Result<()> {
    loop {
        match rustix::io::write(fd, &value.to_ne_bytes()) {
            Ok(_) | Err(Errno::AGAIN) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Takes the eventfd's count, resetting it to zero; 0 when nothing was
/// pending (the fd is non-blocking).
pub fn eventfd_read(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut count = [0u8; 8];
    loop {
        match rustix::io::read(fd, &mut count) {
            Ok(8) => return Ok(u64::from_ne_bytes(count)),
            Ok(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("eventfd read returned {n} bytes instead of 8; is this fd an eventfd?"),
                ));
            }
            Err(Errno::AGAIN) => return Ok(0),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Blocks until `fd` is readable or `timeout` passes (`None`: no limit);
/// returns whether it is readable. For threads that sleep on an eventfd
/// without a tokio reactor.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let timeout = timeout.map(|t| {
        Timespec::try_from(t).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        })
    });
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    match rustix::event::poll(&mut fds, timeout.as_ref()) {
        Ok(n) => Ok(n > 0),
        Err(Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Sends `payload` (at least one byte: fds ride on data) with `fds`
/// attached as SCM_RIGHTS over the Unix stream socket `socket`. The kernel
/// duplicates the fds into the receiver; the caller still owns its copies.
pub fn send_fds(socket: BorrowedFd<'_>, payload: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if payload.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "send_fds needs a non-empty payload to carry the fds",
        ));
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} fds do not fit one control message", fds.len()),
        ));
    }
    let sent = loop {
        match rustix::net::sendmsg(
            socket,
            &[IoSlice::new(payload)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) => break n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    // The fds went with the first byte; a short send leaves only data.
    let mut rest = &payload[sent..];
    while !rest.is_empty() {
        match rustix::net::send(socket, rest, SendFlags::NOSIGNAL) {
            Ok(n) => rest = &rest[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes and up to `max_fds` fds sent with
/// [`send_fds`]. The fds arrive close-on-exec (`MSG_CMSG_CLOEXEC`). Returns
/// the byte count (0: the peer closed) and the fds; more fds than `max_fds`
/// (which the kernel would have dropped or we would not expect) is an
/// error, and every fd received is closed then.
pub fn recv_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(max_fds.max(1)))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(msg) => break msg,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() > max_fds {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the peer sent more than the {max_fds} fds expected; closing them"),
        ));
    }
    Ok((msg.bytes, fds))
}
