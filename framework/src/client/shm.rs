//! The caller-driven receiving side of a shared-memory connection.
//!
//! A waiting caller leads: it polls the ring itself (see
//! [`driver`](super::driver)); a reader task sleeps on the link's eventfd
//! for everything else: responses while nobody leads, server-initiated
//! frames (goaway, ping) and the end of the link. The ring's waiter word is
//! set only while nobody leads, so the server pays for a wake-up syscall
//! only when this side really sleeps.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use super::connection::{Connection, ended_status};
use super::driver::ResponseDriver;
use crate::protocol::frame::Decoded;
use crate::transport::LinkError;
use crate::transport::shm::link::{SpinBudget, Wake};
use crate::transport::shm::{DEFAULT_SPIN, Polled, ShmRx};

/// The receiving half of a shared-memory connection, shared by the leading
/// caller and the reader task.
#[derive(Debug)]
pub(crate) struct ShmDriver {
    state: Mutex<State>,
    wake: Arc<Wake>,
    budget: SpinBudget,
    /// A caller leads (polls the ring).
    leading: AtomicBool,
    /// Callers parked on their one-shot.
    parked: AtomicUsize,
    /// Passes the lead to a parked caller.
    baton: Notify,
}

#[derive(Debug)]
struct State {
    rx: ShmRx,
    frames: Vec<Decoded>,
    /// The link ended and the connection is closed.
    ended: bool,
}

impl ShmDriver {
    /// Wraps the receiving half; a leader polls for at most `spin` with
    /// nothing arriving.
    pub(crate) fn new(rx: ShmRx, spin: Option<Duration>) -> Arc<Self> {
        let wake = rx.wake();
        Arc::new(Self {
            state: Mutex::new(State {
                rx,
                frames: Vec::new(),
                ended: false,
            }),
            wake,
            budget: SpinBudget::new(spin.unwrap_or(DEFAULT_SPIN)),
            leading: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            baton: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it (frames are handed over, not
        // run); a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads once; hands frames to `conn`; closes it when the link ended.
    fn poll_locked(state: &mut State, conn: &Connection) -> bool {
        if state.ended {
            return false;
        }
        let polled = state.rx.try_recv(&mut state.frames);
        // Frames decoded before an error or the end still count.
        let progress = !state.frames.is_empty();
        for decoded in state.frames.drain(..) {
            conn.handle(decoded);
        }
        let end = match polled {
            Ok(Polled::Frames | Polled::Empty) => return progress,
            Ok(Polled::Closed) => Ok(false),
            Err(err) => Err(err),
        };
        state.ended = true;
        conn.close(ended_status(&conn.url, end));
        true
    }

    /// Reads everything that has arrived.
    fn poll_all(state: &mut State, conn: &Connection) {
        while Self::poll_locked(state, conn) {}
    }

    /// Nobody leads: set the waiter word so the server wakes the reader
    /// task, reading whatever slips in first.
    fn rearm(state: &mut State, conn: &Connection) {
        loop {
            Self::poll_all(state, conn);
            if state.ended || state.rx.arm() {
                return;
            }
        }
    }
}

impl ResponseDriver for ShmDriver {
    fn spin_budget(&self) -> Duration {
        self.budget.current()
    }

    fn found_after(&self, waited: Duration) {
        self.budget.found_after(waited);
    }

    fn lead(&self) -> bool {
        if self.leading.swap(true, Ordering::AcqRel) {
            return false;
        }
        let mut state = self.lock();
        if !state.ended {
            state.rx.disarm();
        }
        true
    }

    fn poll(&self, conn: &Connection) -> bool {
        Self::poll_locked(&mut self.lock(), conn)
    }

    fn step_down(&self, conn: &Connection, hand_off: bool) {
        let mut state = self.lock();
        if hand_off && self.parked.load(Ordering::Acquire) > 0 && !state.ended {
            // The ring stays unarmed: the next leader polls it.
            self.leading.store(false, Ordering::Release);
            self.baton.notify_one();
            return;
        }
        self.leading.store(false, Ordering::Release);
        Self::rearm(&mut state, conn);
    }

    fn parked(&self, parked: bool) {
        if parked {
            self.parked.fetch_add(1, Ordering::AcqRel);
        } else {
            self.parked.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn parked_now(&self) -> usize {
        self.parked.load(Ordering::Acquire)
    }

    fn baton(&self) -> &Notify {
        &self.baton
    }
}

/// Reads what no caller is polling for, until the link ends or the
/// connection is dropped (`stopped`).
pub(crate) async fn read_loop(
    conn: Weak<Connection>,
    driver: Arc<ShmDriver>,
    mut stopped: oneshot::Receiver<()>,
) {
    let wake = Arc::clone(&driver.wake);
    loop {
        // Taken before the waiter word is set, so no wake-up is lost.
        let ticket = wake.ticket();
        {
            let Some(conn) = conn.upgrade() else { return };
            let mut state = driver.lock();
            ShmDriver::poll_all(&mut state, &conn);
            if !driver.leading.load(Ordering::Acquire) {
                ShmDriver::rearm(&mut state, &conn);
            }
            if state.ended {
                return;
            }
        }
        let slept = tokio::select! {
            slept = wake.sleep(ticket) => slept,
            _ = &mut stopped => return,
        };
        if let Err(err) = slept {
            // The server left: deliver what it wrote before it did.
            let Some(conn) = conn.upgrade() else { return };
            let mut state = driver.lock();
            ShmDriver::poll_all(&mut state, &conn);
            if !state.ended {
                state.ended = true;
                let end = if err.kind() == std::io::ErrorKind::UnexpectedEof {
                    Ok(false)
                } else {
                    Err(LinkError::Io(err))
                };
                conn.close(ended_status(&conn.url, end));
            }
            return;
        }
    }
}
