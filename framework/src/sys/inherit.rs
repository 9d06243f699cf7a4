//! Handing pipe ends to a child process, and taking them over in the child.
//!
//! Every fd switchyard creates is close-on-exec, so no child inherits it by
//! accident. For the one child a pipe pair is meant for, close-on-exec is
//! cleared on exactly those fds between `fork` and `exec`; the child takes
//! them over once (and sets close-on-exec again, so its own children do not
//! inherit them).

#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::Mutex;

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
/// Crate-private: its only caller is the process module, for the two fds
/// `SWITCHYARD_PIPE` names, which were handed to this process for its
/// switchyard link alone (nothing else owns them). An fd is taken over at
/// most once per process: asking again is an error, not a second owner
/// (which would close it twice: an abort in debug builds, a double close of
/// whatever reuses the number in release).
pub(crate) fn take_inherited_pipe(raw: RawFd) -> io::Result<OwnedFd> {
    static TAKEN: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());
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
    let mut taken = TAKEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !taken.insert(raw) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("fd {raw} was already taken over as an inherited pipe"),
        ));
    }
    fcntl_setfd(borrowed, FdFlags::CLOEXEC)?;
    // SAFETY: `raw` is open (fstat succeeded) and is the pipe the parent
    // handed us for the switchyard link, which nothing else in the process
    // owns (the function is crate-private and its one caller passes only
    // the fds of SWITCHYARD_PIPE); TAKEN makes this the only `OwnedFd` ever
    // made of it here.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use std::os::fd::IntoRawFd;

    use super::take_inherited_pipe;

    #[test]
    fn one_fd_is_taken_over_once() {
        let (read, _write) = rustix::pipe::pipe().unwrap();
        let raw = read.into_raw_fd();
        let first = take_inherited_pipe(raw).expect("a pipe is taken over");
        let again = take_inherited_pipe(raw).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists, "{again}");
        drop(first);
        assert!(
            take_inherited_pipe(0).is_err(),
            "standard streams are refused"
        );
    }
}
