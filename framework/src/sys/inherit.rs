//! Handing pipe ends to a child process, and taking them over in the child.
//!
//! Every fd switchyard creates is close-on-exec, so no child inherits it by
//! accident. For the one child a pipe pair is meant for, close-on-exec is
//! cleared on exactly those fds between `fork` and `exec`; the child takes
//! them over once (and sets close-on-exec again, so its own children do not
//! inherit them).

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use rustix::fs::FileType;
use rustix::io::{FdFlags, fcntl_setfd};

/// Makes `fds` survive `exec` in the child `command` starts, and only there.
pub fn inherit_in_child(command: &mut tokio::process::Command, fds: [RawFd; 2]) {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe work is allowed: it makes two fcntl(2) syscalls
    // through rustix (no allocation, no locks). The fds are open in the
    // parent when `spawn` forks (the caller keeps them alive until then), so
    // they are open in the child and borrowing them is sound.
    unsafe {
        command.pre_exec(move || {
            for fd in fds {
                let fd = BorrowedFd::borrow_raw(fd);
                fcntl_setfd(fd, FdFlags::empty())?;
            }
            Ok(())
        });
    }
}

/// Takes ownership of `raw`, an fd this process inherited, after checking
/// that it is open and is a pipe; it is made close-on-exec.
///
/// # Safety
///
/// `raw` must not be owned by anything else in this process, and this must
/// be called at most once per fd: the returned `OwnedFd` closes it on drop,
/// so a second owner would close it twice (an abort in debug builds, a
/// double close of whatever reuses the number in release). The process
/// module takes its two pipe fds once, behind a once-only cell, and refuses
/// a `SWITCHYARD_PIPE` that names one fd twice.
pub(crate) unsafe fn take_inherited_pipe(raw: RawFd) -> io::Result<OwnedFd> {
    if raw < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {raw} is a standard stream, not an inherited pipe"),
        ));
    }
    // SAFETY: borrowing only for fstat/fcntl below; if `raw` is not open,
    // fstat fails with EBADF and we return before taking ownership.
    let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
    let stat = rustix::fs::fstat(borrowed)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Fifo {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {raw} is not a pipe"),
        ));
    }
    fcntl_setfd(borrowed, FdFlags::CLOEXEC)?;
    // SAFETY: `raw` is open (fstat succeeded), it is the pipe the parent
    // handed us, and the caller guarantees (this function's contract) that
    // nothing else owns it and it is taken over only once.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}
