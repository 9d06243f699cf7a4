//! The raw baseline of the shared-memory row, "raw spin ring": the best a
//! same-host IPC can do, as iceoryx2's busy-polling request-response.
//!
//! Parent and child share one memfd holding two of switchyard's own SPSC
//! rings ([`switchyard::transport::shm::ring`], so the baseline runs the
//! same ring code as the transport), one each way, back to back:
//!
//! | offset | ring | written by |
//! |--------|------|------------|
//! | 0 | parent to child | the parent |
//! | `region_len(CAPACITY)` | child to parent | the child |
//!
//! The parent creates and seals the memfd, initialises both rings
//! (`Role::Init`) and starts the `raw-shm` child with a copy of the fd that
//! is not close-on-exec (its number in [`FD_ENV`]); the child reopens it
//! through `/proc/self/fd` (no unsafe code takes over the inherited
//! number), maps it after checking its seals and size, attaches to both
//! rings (`Role::Attach`) and announces itself. Both sides then move
//! [`MESSAGE`](crate::bench::MESSAGE)-byte messages through
//! [`SpinStream`], which polls its ring without a system call or a sleep
//! until bytes move, and the rows are measured by the same loops as the
//! socket rows (`bench::raw_run` in the parent, `bench::raw_echo` in the
//! child). The wake-up words of the rings are never used: neither side
//! waits.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::sys::shm::{create_memfd, map_sealed};
use switchyard::transport::shm::DEFAULT_CAPACITY;
use switchyard::transport::shm::ring::{Consumer, Producer, Ring, Role, region_len};

use crate::bench::{ChildGuard, Figures, Settings, raw_run, spawn_announcing};

/// Set in the `raw-shm` child: the number of the inherited memfd holding
/// both rings.
const FD_ENV: &str = "SWITCHYARD_BENCH_SHM_FD";
/// Data bytes of each ring: the shm transport's default.
const CAPACITY: usize = DEFAULT_CAPACITY;
/// Empty polls between looks at the clock.
const POLLS_PER_LOOK: u32 = 1 << 14;
/// How long a side polls without bytes moving before it gives up: the peer
/// is gone or stuck.
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// The bytes of the mapping: the two rings.
const fn mapping_len() -> usize {
    2 * region_len(CAPACITY)
}

/// The parent's side: creates the rings, starts the echoing child, and
/// measures round trips over them.
pub(crate) fn raw_figures(s: &Settings) -> Result<Figures, String> {
    let (stream, child) = spawn_with_rings("raw-shm", &[])?;
    raw_run(stream, &child, s)
}

/// Creates the rings and starts this binary as a child in `role` (one that
/// calls [`attach`] and announces itself) with `env` added; returns this
/// side's stream and the child once it attached.
pub(crate) fn spawn_with_rings(
    role: &str,
    env: &[(&str, &OsStr)],
) -> Result<(SpinStream, ChildGuard), String> {
    let len = mapping_len();
    let memfd = create_memfd("switchyard-bench-ring", len as u64)
        .map_err(|e| format!("creating the spin rings' memfd: {e}"))?;
    let map = map_sealed(memfd.as_fd(), len)
        .map_err(|e| format!("mapping the spin rings' memfd: {e}"))?;
    // Initialised before the child can attach.
    let stream = SpinStream::open(map, Side::Parent)?;
    // A copy without close-on-exec for the child, closed here once the
    // child has started with its own.
    let inherited =
        rustix::io::dup(&memfd).map_err(|e| format!("duplicating the spin rings' memfd: {e}"))?;
    let number = inherited.as_raw_fd().to_string();
    let mut env = env.to_vec();
    env.push((FD_ENV, OsStr::new(&number)));
    let spawned = spawn_announcing(role, &env, "that it attached");
    drop(inherited);
    let (child, _stdout, _attached) = spawned?;
    Ok((stream, child))
}

/// The child's side: attaches to the rings of the memfd it inherited.
pub(crate) fn attach() -> Result<SpinStream, String> {
    let number: u32 = std::env::var(FD_ENV)
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{FD_ENV} does not name an inherited fd"))?;
    let path = format!("/proc/self/fd/{number}");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("reopening the spin rings' memfd as {path}: {e}"))?;
    let map = map_sealed(file.as_fd(), mapping_len())
        .map_err(|e| format!("mapping the spin rings' memfd: {e}"))?;
    SpinStream::open(map, Side::Child)
}

/// Which process a [`SpinStream`] is in.
#[derive(Clone, Copy)]
enum Side {
    /// Initialises the rings; writes the first one.
    Parent,
    /// Attaches to them; writes the second one.
    Child,
}

/// One side's ends of the two rings as a byte stream: writes go into one
/// ring, reads come from the other, each polling until bytes move.
pub(crate) struct SpinStream {
    tx: Producer,
    rx: Consumer,
}

impl SpinStream {
    /// Opens both rings of `map` from `side`.
    fn open(map: memmap2::MmapRaw, side: Side) -> Result<Self, String> {
        let map = Arc::new(map);
        let len = region_len(CAPACITY);
        let role = match side {
            Side::Parent => Role::Init { capacity: CAPACITY },
            Side::Child => Role::Attach,
        };
        let ring = |offset| {
            Ring::from_mmap(Arc::clone(&map), offset, len, role)
                .map_err(|e| format!("opening a spin ring: {e}"))
        };
        let (to_child, to_parent) = (ring(0)?, ring(len)?);
        Ok(match side {
            Side::Parent => Self {
                tx: to_child.into_producer(),
                rx: to_parent.into_consumer(),
            },
            Side::Child => Self {
                tx: to_parent.into_producer(),
                rx: to_child.into_consumer(),
            },
        })
    }
}

impl Read for SpinStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll(|| Ok(self.rx.read(buf)?.read))
    }
}

impl Write for SpinStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll(|| Ok(self.tx.write(buf)?.written))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Calls `step` until it moves some bytes, and returns how many.
///
/// Busy-polls: no system call while the peer keeps up. Only after
/// [`POLLS_PER_LOOK`] empty polls (far longer than a round trip) does it
/// look at the clock, give up after [`STALL_LIMIT`] without progress, and
/// yield the CPU, so that a run where both sides share one CPU (unpinned,
/// or a one-CPU machine) still ends.
fn poll(mut step: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    let mut empty = 0u32;
    let mut stalled_since = None;
    loop {
        let moved = step()?;
        if moved > 0 {
            return Ok(moved);
        }
        empty += 1;
        if empty == POLLS_PER_LOOK {
            empty = 0;
            let since = *stalled_since.get_or_insert_with(Instant::now);
            if since.elapsed() > STALL_LIMIT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the peer moved no bytes through the spin ring for {STALL_LIMIT:?}"),
                ));
            }
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    // Full paths, no imports: see the note in bench.rs's tests.

    #[test]
    fn the_two_sides_echo_through_the_rings() {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        const MESSAGE: usize = crate::bench::MESSAGE;
        let len = super::mapping_len();
        let memfd =
            switchyard::sys::shm::create_memfd("bench-ring-test", len as u64).expect("a memfd");
        // Two mappings, as in two processes: a ring is opened once per address.
        let map = || switchyard::sys::shm::map_sealed(memfd.as_fd(), len).expect("mapped");
        let mut parent = super::SpinStream::open(map(), super::Side::Parent).expect("initialised");
        let mut child = super::SpinStream::open(map(), super::Side::Child).expect("attached");
        let mut back = [0u8; MESSAGE];
        // Past the end of the rings, so that the data wraps around.
        for i in 0..2 * super::CAPACITY / MESSAGE + 3 {
            let message = [i as u8; MESSAGE];
            parent.write_all(&message).expect("sent");
            child.read_exact(&mut back).expect("received");
            child.write_all(&back).expect("echoed");
            back = [0; MESSAGE];
            parent.read_exact(&mut back).expect("echo received");
            assert_eq!(back, message);
        }
    }
}
