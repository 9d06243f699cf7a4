//! Spinning before sleeping, on links a reader can poll without a syscall:
//! a budget that adapts to how long data takes to come.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest a reader spins before it sleeps, unless configured otherwise.
pub(crate) const DEFAULT_SPIN: Duration = Duration::from_micros(50);
/// The shortest spin while spinning is on at all.
const MIN_SPIN: Duration = Duration::from_micros(1);
/// Data that came later than the maximum, but within this many maxima,
/// came soon after the spin gave up: the wait it measures holds a wake-up
/// (tens of µs), so the data itself was nearly in reach. Such waits keep
/// the budget at its maximum; only later ones shrink it.
const LATE_FACTOR: u64 = 2;
/// The pace the peer is assumed to work through a large body at (copying
/// it out, or a response as large into its pool): bytes per µs. 4 KiB/µs
/// (4 GB/s) allows 256 µs for 1 MiB.
const ALLOWANCE_BYTES_PER_US: u64 = 4096;
/// The allowance large bodies earn is at most this many maxima (20 × 50 µs
/// = 1 ms by default): a waiter never spins more than that on their account.
const ALLOWANCE_MAXIMA: u64 = 20;

/// How long to spin before sleeping: adapts to how long data took to come,
/// within a configured maximum (zero: never spin), plus an allowance for
/// large bodies (see [`Traffic`]).
#[derive(Debug)]
pub(crate) struct SpinBudget {
    ns: AtomicU64,
    max_ns: AtomicU64,
    /// The sizes moved last on the link this budget waits on.
    pub(crate) traffic: Traffic,
}

/// What a link moved last each way: the bytes of its last write (a batch
/// of frames, or one bulk body) and the largest body it last received. A waiter
/// right after a large body spins longer: the peer's part of the exchange
/// (copying the body out, writing a response as large) takes time in
/// proportion to it, and that time is no sign of a slow peer. Small
/// frames bring the allowance back to nothing at once, so a link that
/// carried one large body does not spin long for ever after.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    sent: AtomicU64,
    received: AtomicU64,
}

impl Traffic {
    /// This side wrote `bytes` (a batch of frames, or one bulk body).
    pub(crate) fn sent(&self, bytes: usize) {
        store_if_changed(&self.sent, bytes as u64);
    }

    /// This side received frames whose largest body had `bytes`.
    pub(crate) fn received(&self, bytes: usize) {
        store_if_changed(&self.received, bytes as u64);
    }

    /// The larger of the last write and the largest body last received.
    pub(crate) fn largest(&self) -> u64 {
        self.sent
            .load(Ordering::Relaxed)
            .max(self.received.load(Ordering::Relaxed))
    }
}

/// Stores `value` unless it is there already: small frames, one after
/// another, leave the cache line shared by both halves alone.
fn store_if_changed(slot: &AtomicU64, value: u64) {
    if slot.load(Ordering::Relaxed) != value {
        slot.store(value, Ordering::Relaxed);
    }
}

impl SpinBudget {
    /// A budget of at most `max`, starting at half of it.
    pub(crate) fn new(max: Duration) -> Self {
        let max_ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Self {
            ns: AtomicU64::new(max_ns / 2),
            max_ns: AtomicU64::new(max_ns),
            traffic: Traffic::default(),
        }
    }

    /// Sets the maximum (zero turns spinning off).
    pub(crate) fn set_max(&self, max: Duration) {
        let max_ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        self.max_ns.store(max_ns, Ordering::Relaxed);
        self.ns.store(max_ns / 2, Ordering::Relaxed);
    }

    /// The budget now: what it adapted to, plus the allowance the link's
    /// last bodies earn.
    pub(crate) fn current(&self) -> Duration {
        self.current_with(self.traffic.largest())
    }

    /// [`current`](Self::current), with the allowance for a largest body of
    /// `bytes` moved last (a budget that waits on another's link).
    pub(crate) fn current_with(&self, bytes: u64) -> Duration {
        let adapted = self.ns.load(Ordering::Relaxed);
        Duration::from_nanos(adapted.saturating_add(self.allowance_ns(bytes)))
    }

    /// The extra spin a body of `bytes` earns: the time the peer needs for
    /// it at [`ALLOWANCE_BYTES_PER_US`], at most [`ALLOWANCE_MAXIMA`]
    /// maxima (nothing while spinning is off).
    fn allowance_ns(&self, bytes: u64) -> u64 {
        let max = self.max_ns.load(Ordering::Relaxed);
        (bytes / ALLOWANCE_BYTES_PER_US)
            .saturating_mul(1_000)
            .min(max.saturating_mul(ALLOWANCE_MAXIMA))
    }

    /// Data came `waited` after a side began to wait: a spin that long
    /// would have caught it, so grow the budget to cover it (twice over);
    /// data that came soon after the maximum (within [`LATE_FACTOR`] of it,
    /// a wake-up included) keeps the budget at the maximum; data slower than
    /// that shrinks it, as spinning was wasted. The allowance for large
    /// bodies is taken off `waited` first.
    pub(crate) fn found_after(&self, waited: Duration) {
        self.found_after_with(waited, self.traffic.largest());
    }

    /// [`found_after`](Self::found_after), with the allowance for a
    /// largest body of `bytes` moved last.
    pub(crate) fn found_after_with(&self, waited: Duration, bytes: u64) {
        let max = self.max_ns.load(Ordering::Relaxed);
        if max == 0 {
            return;
        }
        let now = self.ns.load(Ordering::Relaxed);
        let waited = u64::try_from(waited.as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_sub(self.allowance_ns(bytes));
        let next = if waited <= max {
            now.saturating_mul(2).max(waited.saturating_mul(2)).min(max)
        } else if waited <= max.saturating_mul(LATE_FACTOR) {
            max
        } else {
            (now / 2).max(MIN_SPIN.as_nanos() as u64)
        };
        if next != now {
            self.ns.store(next, Ordering::Relaxed);
        }
    }

    /// Spins until `ready` holds or the budget is spent, giving way every
    /// [`SLICE`] (see [`Slices`]): a long spin (the allowance for a large
    /// body) never holds up the tasks and threads that share this one.
    pub(crate) async fn spin(&self, ready: impl Fn() -> bool) -> bool {
        let budget = self.current();
        if budget.is_zero() {
            return ready();
        }
        let start = Instant::now();
        let mut slices = Slices::new(start);
        loop {
            if ready() {
                return true;
            }
            let now = Instant::now();
            if now.duration_since(start) >= budget {
                return false;
            }
            slices.tick(now).await;
        }
    }
}

/// How long a spinner spins before it lets this thread's other tasks run.
const SLICE: Duration = Duration::from_micros(5);
/// Every this many slices (40 µs) a spinner also lets this CPU's other
/// threads run: a spinner on a thread pinned beside the one that must
/// write what it waits for (a runtime's workers share their parent's
/// affinity) would otherwise hold it off for a whole scheduler time slice
/// (about a millisecond). Not at every slice: `sched_yield` costs a
/// system call, and a small call's reply comes within the first.
const SLICES_PER_THREAD_YIELD: u32 = 8;

/// A spinner's slices: where the current one began and how many passed.
#[derive(Debug)]
pub(crate) struct Slices {
    start: Instant,
    count: u32,
}

impl Slices {
    /// Slices from `now` on.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            start: now,
            count: 0,
        }
    }

    /// Starts a new slice at `now` (progress was made).
    pub(crate) fn restart(&mut self, now: Instant) {
        self.start = now;
    }

    /// One turn of a spin loop at `now`: a spin-loop hint within a slice;
    /// at its end a tokio yield, and every [`SLICES_PER_THREAD_YIELD`]
    /// slices a `sched_yield` too.
    pub(crate) async fn tick(&mut self, now: Instant) {
        if now.duration_since(self.start) < SLICE {
            std::hint::spin_loop();
            return;
        }
        tokio::task::yield_now().await;
        self.count = self.count.wrapping_add(1);
        if self.count.is_multiple_of(SLICES_PER_THREAD_YIELD) {
            std::thread::yield_now();
        }
        self.start = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::SpinBudget;

    const MAX: Duration = Duration::from_micros(50);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn data_just_past_the_budget_keeps_it_at_the_maximum() {
        let budget = SpinBudget::new(MAX);
        assert_eq!(budget.current(), us(25));
        // The spin gave up at 25 µs; the data came at 40 µs, the sleeper
        // woke at 80 µs: it was nearly in reach, spin the whole maximum.
        budget.found_after(us(80));
        assert_eq!(budget.current(), MAX);
        // Again and again: it stays there (it used to halve each time, and
        // then every wait slept).
        for _ in 0..10 {
            budget.found_after(us(90));
        }
        assert_eq!(budget.current(), MAX);
    }

    #[test]
    fn slow_data_shrinks_the_budget_and_quick_data_grows_it_back() {
        let budget = SpinBudget::new(MAX);
        for _ in 0..10 {
            budget.found_after(us(500));
        }
        assert_eq!(budget.current(), us(1), "a slow peer is not spun for");
        budget.found_after(us(3));
        assert_eq!(budget.current(), us(6));
        budget.found_after(us(4));
        assert_eq!(budget.current(), us(12));
    }

    #[test]
    fn large_bodies_earn_an_allowance_that_small_frames_take_back() {
        let budget = SpinBudget::new(MAX);
        budget.traffic.sent(1 << 20);
        // 1 MiB at 4 KiB/µs: 256 µs on top of the adapted 25 µs.
        assert_eq!(budget.current(), us(25 + 256));
        // A response 300 µs after a 1 MiB request is on time: it grows
        // the budget rather than shrinking it.
        budget.found_after(us(300));
        assert_eq!(budget.current(), us(50 + 256));
        // The allowance is at most 20 maxima.
        budget.traffic.received(64 << 20);
        assert_eq!(budget.current(), us(50 + 1000));
        // Small frames each way: no allowance any more.
        budget.traffic.sent(64);
        budget.traffic.received(64);
        assert_eq!(budget.current(), MAX);
        // Another's traffic counts where asked.
        assert_eq!(budget.current_with(1 << 20), us(50 + 256));
    }

    #[test]
    fn no_spinning_means_no_allowance_either() {
        let budget = SpinBudget::new(Duration::ZERO);
        budget.traffic.sent(64 << 20);
        assert_eq!(budget.current(), Duration::ZERO);
        budget.found_after(us(10));
        assert_eq!(budget.current(), Duration::ZERO);
    }

    #[test]
    fn a_spin_lets_the_tasks_beside_it_run() {
        // One thread: the flag is set by a task the spinner must let run.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let budget = SpinBudget::new(Duration::from_secs(10));
        let flag = Arc::new(AtomicBool::new(false));
        let found = runtime.block_on(async {
            let setter = Arc::clone(&flag);
            tokio::spawn(async move { setter.store(true, Ordering::Release) });
            budget.spin(|| flag.load(Ordering::Acquire)).await
        });
        assert!(found, "the spin never let the task that sets the flag run");
    }
}
