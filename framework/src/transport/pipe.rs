//! Pipes between a parent and a child process: one pipe each way, inherited
//! by the child, with the kernel's pipe buffer enlarged where it allows.
//!
//! A pipe link is a *peer* link: both ends serve and call over it (see
//! [`process`](crate::process)).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use tokio::net::unix::pipe;

use super::socket_tx::SocketTx;
use super::stream::StreamRx;
use super::{Link, PeerInfo, Transport};

/// The pipe buffer asked for: 1 MiB moves bulk data ~5x faster than the
/// default 64 KiB here; the kernel caps it at `/proc/sys/fs/pipe-max-size`.
pub const PIPE_BUFFER: usize = 1 << 20;

/// One end of a pipe pair.
#[derive(Debug)]
pub struct PipeLink {
    reader: pipe::Receiver,
    writer: pipe::Sender,
    peer: PeerInfo,
}

impl PipeLink {
    /// A link over a read end and a write end (made non-blocking).
    pub fn from_fds(read: OwnedFd, write: OwnedFd, peer: PeerInfo) -> io::Result<Self> {
        Ok(Self {
            reader: pipe::Receiver::from_owned_fd(read)?,
            writer: pipe::Sender::from_owned_fd(write)?,
            peer,
        })
    }
}

impl Link for PipeLink {
    type Tx = SocketTx<pipe::Sender>;
    type Rx = StreamRx<pipe::Receiver>;

    fn transport(&self) -> Transport {
        Transport::Pipe
    }

    fn peer(&self) -> PeerInfo {
        self.peer.clone()
    }

    fn split(self, frame_limit: u32) -> (Self::Tx, Self::Rx) {
        (
            SocketTx::new(self.writer),
            StreamRx::new(self.reader, frame_limit),
        )
    }
}

/// Two pipes, one each way, all ends close-on-exec.
#[derive(Debug)]
pub struct PipePair {
    /// The parent reads here (the child writes the other end).
    pub parent_read: OwnedFd,
    /// The parent writes here.
    pub parent_write: OwnedFd,
    /// The child reads here.
    pub child_read: OwnedFd,
    /// The child writes here.
    pub child_write: OwnedFd,
    /// The pipe buffer the kernel granted, in bytes.
    pub buffer: usize,
}

impl PipePair {
    /// Creates both pipes and enlarges their buffers.
    pub fn new() -> io::Result<Self> {
        let flags = rustix::pipe::PipeFlags::CLOEXEC;
        let (parent_read, child_write) = rustix::pipe::pipe_with(flags)?;
        let (child_read, parent_write) = rustix::pipe::pipe_with(flags)?;
        let buffer = enlarge(&parent_read).min(enlarge(&child_read));
        Ok(Self {
            parent_read,
            parent_write,
            child_read,
            child_write,
            buffer,
        })
    }

    /// The child's fds, as numbers for its environment.
    pub fn child_fds(&self) -> [RawFd; 2] {
        [self.child_read.as_raw_fd(), self.child_write.as_raw_fd()]
    }
}

/// Sets a pipe's buffer to [`PIPE_BUFFER`], or the largest the kernel
/// allows; returns what it has.
pub fn enlarge(fd: impl AsFd) -> usize {
    let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(PIPE_BUFFER);
    let want = PIPE_BUFFER.min(max);
    rustix::pipe::fcntl_setpipe_size(&fd, want)
        .or_else(|_| rustix::pipe::fcntl_getpipe_size(&fd))
        .unwrap_or(0)
}
