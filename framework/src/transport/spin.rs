//! Spinning before sleeping, on links a reader can poll without a syscall:
//! a budget that adapts to how long data takes to come.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest a reader spins before it sleeps, unless configured otherwise.
pub(crate) const DEFAULT_SPIN: Duration = Duration::from_micros(50);
/// The shortest spin while spinning is on at all.
const MIN_SPIN: Duration = Duration::from_micros(1);

/// How long to spin before sleeping: adapts to how long data took to come,
/// within a configured maximum (zero: never spin).
#[derive(Debug)]
pub(crate) struct SpinBudget {
    ns: AtomicU64,
    max_ns: AtomicU64,
}

impl SpinBudget {
    /// A budget of at most `max`, starting at half of it.
    pub(crate) fn new(max: Duration) -> Self {
        let max_ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Self {
            ns: AtomicU64::new(max_ns / 2),
            max_ns: AtomicU64::new(max_ns),
        }
    }

    /// Sets the maximum (zero turns spinning off).
    pub(crate) fn set_max(&self, max: Duration) {
        let max_ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        self.max_ns.store(max_ns, Ordering::Relaxed);
        self.ns.store(max_ns / 2, Ordering::Relaxed);
    }

    /// The budget now.
    pub(crate) fn current(&self) -> Duration {
        Duration::from_nanos(self.ns.load(Ordering::Relaxed))
    }

    /// Data came `waited` after a side began to wait: a spin that long
    /// would have caught it, so grow the budget to cover it (twice over);
    /// data slower than the maximum shrinks it, as spinning was wasted.
    pub(crate) fn found_after(&self, waited: Duration) {
        let max = self.max_ns.load(Ordering::Relaxed);
        if max == 0 {
            return;
        }
        let now = self.ns.load(Ordering::Relaxed);
        let waited = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        let next = if waited <= max {
            now.saturating_mul(2).max(waited.saturating_mul(2)).min(max)
        } else {
            (now / 2).max(MIN_SPIN.as_nanos() as u64)
        };
        self.ns.store(next, Ordering::Relaxed);
    }

    /// Spins until `ready` holds or the budget is spent.
    pub(crate) fn spin(&self, ready: impl Fn() -> bool) -> bool {
        let budget = self.current();
        if budget.is_zero() {
            return ready();
        }
        let start = Instant::now();
        loop {
            if ready() {
                return true;
            }
            if start.elapsed() >= budget {
                return false;
            }
            std::hint::spin_loop();
        }
    }
}
