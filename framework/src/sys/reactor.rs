//! Registering an owned fd with the tokio reactor.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

/// Registers `fd` with the current tokio reactor for readability.
pub fn register_readable(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: tokio requires that the descriptor stays open and unchanged
    // while registered. `OwnedFd` closes it only on drop, and the `AsyncFd`
    // owns it from here, deregistering before the drop closes it; nothing
    // else holds this fd.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}
