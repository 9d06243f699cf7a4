//! The caller-driven receiving side of a connection over a link that can
//! be polled without a syscall ([`LinkRx::try_recv`]; shared memory).
//!
//! A waiting caller leads: it polls the link itself (see
//! [`driver`](super::driver)); the connection's driver task sleeps on the
//! link's wake-up line for everything else: responses while nobody leads,
//! server-initiated frames (goaway, ping) and the end of the link. The
//! link is armed (the peer wakes this side) only while nobody leads, so the
//! server pays for a wake-up syscall only when this side really sleeps.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::driver::ResponseDriver;
use crate::protocol::frame::Decoded;
use crate::session::CallerSide;
use crate::transport::spin::{DEFAULT_SPIN, SpinBudget};
use crate::transport::{LinkError, LinkRx, Polled, RxWake};

/// The receiving half of a polled link, shared by the leading caller and
/// the connection's driver task (through a [`PolledReader`]).
pub(crate) struct PolledDriver<R> {
    state: Mutex<State<R>>,
    wake: Arc<dyn RxWake>,
    budget: SpinBudget,
    /// A caller leads (polls the link).
    leading: AtomicBool,
    /// Callers parked on their one-shot.
    parked: AtomicUsize,
    /// Passes the lead to a parked caller.
    baton: Notify,
}

struct State<R> {
    rx: R,
    frames: Vec<Decoded>,
    /// The link ended (seen by a leader or by the driver task).
    ended: bool,
}

impl<R> std::fmt::Debug for PolledDriver<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolledDriver")
            .field("leading", &self.leading)
            .field("parked", &self.parked)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// How the link ended, seen by a poll.
type Ending = Option<Result<bool, LinkError>>;

impl<R: LinkRx> PolledDriver<R> {
    /// Wraps a receiving half whose [`LinkRx::wake`] is `wake`; a leader
    /// polls for at most `spin` with nothing arriving.
    pub(crate) fn new(rx: R, wake: Arc<dyn RxWake>, spin: Option<Duration>) -> Arc<Self> {
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

    fn lock(&self) -> MutexGuard<'_, State<R>> {
        // Nothing panics while holding it (frames are handed over, not
        // run); a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads once, handing frames to `sink`: whether anything came, and how
    /// the link ended if it did (then it is marked ended).
    fn poll_locked(state: &mut State<R>, sink: &mut impl FnMut(Decoded)) -> (bool, Ending) {
        if state.ended {
            return (false, None);
        }
        let polled = state.rx.try_recv(&mut state.frames);
        // Frames decoded before an error or the end still count.
        let progress = !state.frames.is_empty();
        for decoded in state.frames.drain(..) {
            sink(decoded);
        }
        let end = match polled {
            Ok(Polled::Frames | Polled::Empty) => return (progress, None),
            Ok(Polled::Closed) => Ok(false),
            Err(err) => Err(err),
        };
        state.ended = true;
        (true, Some(end))
    }

    /// Reads everything that has arrived.
    fn poll_all(state: &mut State<R>, sink: &mut impl FnMut(Decoded)) -> Ending {
        loop {
            match Self::poll_locked(state, sink) {
                (true, None) => {}
                (_, end) => return end,
            }
        }
    }

    /// Nobody leads: arm the link so the peer wakes the driver task,
    /// reading whatever slips in first.
    fn rearm(state: &mut State<R>, sink: &mut impl FnMut(Decoded)) -> Ending {
        loop {
            let end = Self::poll_all(state, sink);
            if end.is_some() || state.ended || state.rx.arm() {
                return end;
            }
        }
    }

    /// A leader saw the end: the connection's calls fail with it.
    fn leader_saw(caller: &dyn CallerSide, end: Ending) {
        if let Some(end) = end {
            caller.link_ended(end);
        }
    }
}

impl<R: LinkRx> ResponseDriver for PolledDriver<R> {
    fn spin_budget(&self) -> Duration {
        self.budget.current_with(self.wake.largest_moved())
    }

    fn found_after(&self, waited: Duration) {
        self.budget
            .found_after_with(waited, self.wake.largest_moved());
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

    fn poll(&self, caller: &dyn CallerSide) -> bool {
        let (progress, end) = Self::poll_locked(&mut self.lock(), &mut |d| caller.handle(d));
        Self::leader_saw(caller, end);
        progress
    }

    fn step_down(&self, caller: &dyn CallerSide, hand_off: bool) {
        let mut state = self.lock();
        if hand_off && self.parked.load(Ordering::Acquire) > 0 && !state.ended {
            // The link stays unarmed: the next leader polls it.
            self.leading.store(false, Ordering::Release);
            self.baton.notify_one();
            return;
        }
        self.leading.store(false, Ordering::Release);
        let end = Self::rearm(&mut state, &mut |d| caller.handle(d));
        drop(state);
        Self::leader_saw(caller, end);
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

/// The driver task's view of a polled link: it reads what no caller is
/// polling for, sleeping on the link's wake-up line in between.
pub(crate) struct PolledReader<R>(pub(crate) Arc<PolledDriver<R>>);

impl<R: LinkRx> LinkRx for PolledReader<R> {
    async fn recv(&mut self, out: &mut Vec<Decoded>) -> Result<bool, LinkError> {
        let driver = &self.0;
        let wake = Arc::clone(&driver.wake);
        loop {
            // Taken before the link is armed, so no wake-up is lost.
            let ticket = wake.ticket();
            {
                let mut state = driver.lock();
                if state.ended {
                    // A leader saw the end (and closed the connection).
                    return Ok(false);
                }
                let mut sink = |decoded| out.push(decoded);
                let mut end = PolledDriver::poll_all(&mut state, &mut sink);
                if end.is_none() && !driver.leading.load(Ordering::Acquire) {
                    end = PolledDriver::rearm(&mut state, &mut sink);
                }
                if let Some(end) = end {
                    return end;
                }
                if !out.is_empty() {
                    return Ok(true);
                }
            }
            if let Err(err) = wake.sleep(ticket).await {
                // The peer left: deliver what it wrote before it did.
                let mut state = driver.lock();
                let mut sink = |decoded| out.push(decoded);
                if let Some(end) = PolledDriver::poll_all(&mut state, &mut sink) {
                    return end;
                }
                if state.ended {
                    return Ok(false);
                }
                state.ended = true;
                return if err.kind() == std::io::ErrorKind::UnexpectedEof {
                    Ok(false)
                } else {
                    Err(LinkError::Io(err))
                };
            }
        }
    }
}
