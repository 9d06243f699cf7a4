//! Bounds on what a receiver holds of frames that have not arrived whole.
//!
//! A peer that sends the start of a large frame and stops would otherwise
//! pin that much memory for as long as it keeps the connection open. Two
//! rules stop it, both configured on the server (`ServerBuilder::
//! frame_timeout` and `ServerBuilder::partial_frame_budget`):
//!
//! - **a deadline for each frame**: once a frame's first byte is in, the
//!   whole frame must arrive within the base timeout plus one second for
//!   every [`FrameDeadline::min_rate`] bytes its header announces (Apache's
//!   `mod_reqtimeout` works the same way). A frame that misses it ends the
//!   connection with [`LinkError::FrameTimeout`], and its bytes are freed at
//!   once;
//! - **a budget of bytes shared by every connection of a server**: each
//!   receiver holds up to [`FREE_PER_RECEIVER`] (or [`FREE_PER_STREAM`] for
//!   a QUIC stream) without asking; beyond that its buffer grows only while
//!   the server's total stays under the budget. When the budget is spent, one
//!   receiver at a time (the first to ask) may still grow, so that some
//!   frame always completes; the others stop reading (their peers see TCP
//!   or QUIC flow control) until bytes are freed or their deadline passes.
//!
//! Receivers without limits (clients, pipes, in-process links) pay nothing:
//! every method returns at once.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::sync::Notify;

use super::LinkError;
use crate::protocol::frame::FrameDecoder;

/// What a byte-stream receiver (Unix, TCP) holds without asking the budget.
pub const FREE_PER_RECEIVER: usize = 512 << 10;
/// What one QUIC stream's receiver holds without asking the budget (a
/// connection has many streams).
pub const FREE_PER_STREAM: usize = 64 << 10;
/// The default base of a frame's deadline.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// The default slowest rate a frame may arrive at: 1 MiB/s.
pub const DEFAULT_MIN_RATE: u64 = 1 << 20;
/// The default budget of a server's partial frames: 64 MiB.
pub const DEFAULT_PARTIAL_BUDGET: usize = 64 << 20;

/// How long a frame may take to arrive, once its first byte is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameDeadline {
    /// The time every frame gets.
    pub base: Duration,
    /// One more second for every this many bytes the frame's header
    /// announces.
    pub min_rate: u64,
}

impl Default for FrameDeadline {
    fn default() -> Self {
        Self {
            base: DEFAULT_FRAME_TIMEOUT,
            min_rate: DEFAULT_MIN_RATE,
        }
    }
}

impl FrameDeadline {
    /// The time a frame of `len` bytes (header included) gets.
    pub fn allowed(&self, len: u64) -> Duration {
        let rate = self.min_rate.max(1);
        self.base
            .saturating_add(Duration::from_millis(len.saturating_mul(1000) / rate))
    }
}

impl fmt::Display for FrameDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} plus 1 s per {} KiB",
            self.base,
            self.min_rate.max(1) >> 10
        )
    }
}

/// The bytes a server's receivers may hold of frames not yet whole,
/// beyond what each holds freely; shared by all its connections.
pub struct PartialBudget {
    limit: usize,
    used: AtomicUsize,
    /// The receiver allowed past the limit (0: none).
    exempt: AtomicU64,
    /// Receivers waiting for bytes to be freed.
    waiting: AtomicUsize,
    freed: Notify,
    next_id: AtomicU64,
}

impl fmt::Debug for PartialBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartialBudget")
            .field("limit", &self.limit)
            .field("used", &self.used())
            .finish_non_exhaustive()
    }
}

impl PartialBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            exempt: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
            next_id: AtomicU64::new(1),
        })
    }

    /// The bytes it allows.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes charged to it now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` if they fit.
    fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// Makes `id` the one receiver allowed past the limit, if none is.
    fn claim_exemption(&self, id: u64) -> bool {
        self.exempt
            .compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Lets go of the exemption (its holder calls this).
    fn release_exemption(&self) {
        self.exempt.store(0, Ordering::Release);
        self.wake_waiters();
    }

    /// Moves the charge of one receiver from `from` to `to` bytes.
    fn recharge(&self, from: usize, to: usize) {
        if to > from {
            self.used.fetch_add(to - from, Ordering::AcqRel);
        } else if to < from {
            self.used.fetch_sub(from - to, Ordering::AcqRel);
            self.wake_waiters();
        }
    }

    fn wake_waiters(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// The limits one receiver works under.
#[derive(Clone, Debug, Default)]
pub struct IntakeLimits {
    /// The deadline of each frame, if frames have one.
    pub deadline: Option<FrameDeadline>,
    /// The server's budget of partial frames, if there is one.
    pub budget: Option<Arc<PartialBudget>>,
}

impl IntakeLimits {
    /// Whether there is anything to enforce.
    pub fn is_none(&self) -> bool {
        self.deadline.is_none() && self.budget.is_none()
    }
}

/// One receiver's account under its [`IntakeLimits`].
#[derive(Debug)]
pub(crate) struct Intake {
    limits: IntakeLimits,
    /// What it holds without asking.
    free: usize,
    /// Its id with the budget.
    id: u64,
    /// When the frame under way started, and by when it must be whole.
    started: Option<(Instant, Instant)>,
    /// Whether the deadline counts the frame's announced length yet.
    sized: bool,
    /// The bytes charged to the budget.
    charged: usize,
    /// Whether it is the one receiver allowed past the budget.
    exempt: bool,
}

impl Intake {
    /// An account under `limits`, holding `free` bytes without asking.
    pub(crate) fn new(limits: IntakeLimits, free: usize) -> Self {
        let id = limits
            .budget
            .as_ref()
            .map_or(0, |b| b.next_id.fetch_add(1, Ordering::Relaxed));
        Self {
            limits,
            free,
            id,
            started: None,
            sized: false,
            charged: 0,
            exempt: false,
        }
    }

    /// Notes what `buf` holds after decoding: whether a frame is under way
    /// (and its deadline), and what the buffer costs the budget.
    /// `completed`: a frame was just taken off the buffer, so whatever is
    /// left starts the next one now.
    pub(crate) fn settle(&mut self, completed: bool, decoder: &FrameDecoder, buf: &BytesMut) {
        if self.limits.is_none() {
            return;
        }
        let under_way = !(buf.is_empty() && decoder.at_frame_boundary());
        if let Some(deadline) = self.limits.deadline {
            if completed || !under_way {
                self.started = None;
                self.sized = false;
            }
            if under_way {
                let (since, _) = *self.started.get_or_insert_with(|| {
                    let now = Instant::now();
                    (now, now + deadline.base)
                });
                if !self.sized
                    && let Some(total) = decoder.frame_len()
                {
                    self.sized = true;
                    self.started = Some((since, since + deadline.allowed(total)));
                }
            }
        }
        if let Some(budget) = &self.limits.budget {
            let charge = buf.capacity().saturating_sub(self.free);
            if charge != self.charged {
                budget.recharge(self.charged, charge);
                self.charged = charge;
            }
            if !under_way && std::mem::take(&mut self.exempt) {
                budget.release_exemption();
            }
        }
    }

    /// Before reading into `buf` with room for `want` more bytes: waits
    /// until the budget allows the buffer to grow that much (or this
    /// receiver is the one allowed past it), and fails once the frame's
    /// deadline passes first.
    pub(crate) async fn room(&mut self, buf: &BytesMut, want: usize) -> Result<(), LinkError> {
        let Some(budget) = self.limits.budget.clone() else {
            return Ok(());
        };
        if buf.capacity() - buf.len() >= want {
            return Ok(());
        }
        // BytesMut (a Vec inside) at least doubles when it must grow.
        let grown = (buf.len() + want).max(2 * buf.capacity());
        let growth = grown.saturating_sub(self.free).saturating_sub(self.charged);
        if growth == 0 {
            return Ok(());
        }
        loop {
            if budget.try_take(growth) {
                self.charged += growth;
                return Ok(());
            }
            if self.exempt || budget.claim_exemption(self.id) {
                self.exempt = true;
                budget.used.fetch_add(growth, Ordering::AcqRel);
                self.charged += growth;
                return Ok(());
            }
            let freed = budget.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            budget.waiting.fetch_add(1, Ordering::AcqRel);
            // Freed between the checks above and `enable`: look again.
            let ready = budget.used() + growth <= budget.limit
                || budget.exempt.load(Ordering::Acquire) == 0;
            let waited = if ready {
                Ok(())
            } else {
                Due::run(self.due(), freed.map(Ok)).await
            };
            budget.waiting.fetch_sub(1, Ordering::AcqRel);
            waited?;
        }
    }

    /// The deadline of the frame under way, if there is one.
    pub(crate) fn due(&self) -> Option<Due> {
        self.started.map(|(since, by)| Due {
            since,
            by,
            rule: self.limits.deadline.unwrap_or_default(),
        })
    }

    /// Forgets the frame under way: its bytes were dropped.
    pub(crate) fn abandon(&mut self) {
        self.started = None;
        self.sized = false;
        self.release();
    }

    /// Gives back every byte charged, and the exemption if it holds it.
    fn release(&mut self) {
        if let Some(budget) = &self.limits.budget {
            budget.recharge(self.charged, 0);
            self.charged = 0;
            if std::mem::take(&mut self.exempt) {
                budget.release_exemption();
            }
        }
    }
}

/// By when the frame under way must be whole.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Due {
    since: Instant,
    by: Instant,
    rule: FrameDeadline,
}

impl Due {
    /// Runs `work` until the deadline: its output, or
    /// [`LinkError::FrameTimeout`].
    pub(crate) async fn run<T, F: Future<Output = Result<T, LinkError>>>(
        due: Option<Self>,
        work: F,
    ) -> Result<T, LinkError> {
        match due {
            Some(due) => tokio::time::timeout_at(due.by.into(), work)
                .await
                .unwrap_or_else(|_| Err(due.expired())),
            None => work.await,
        }
    }

    fn expired(&self) -> LinkError {
        LinkError::FrameTimeout {
            allowed: self.by - self.since,
            rule: self.rule,
        }
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests;
