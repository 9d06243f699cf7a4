//! Outlier ejection: a replica whose calls fail several times in a row
//! (UNAVAILABLE, INTERNAL, UNKNOWN, DATA_LOSS: the server's trouble, not
//! the caller's) gets no calls for a while, longer each time it is
//! ejected again (Envoy's consecutive-failure detection, gRPC's A50). A
//! channel never ejects its last ready replica.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::protocol::status::Code;

/// When a channel stops picking a replica whose calls keep failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierEjection {
    /// Failures in a row that eject a replica (default 5; 0: never eject).
    pub consecutive_failures: u32,
    /// How long the first ejection lasts (default 10 s); the n-th lasts n
    /// times as long.
    pub base_ejection: Duration,
    /// The longest an ejection lasts (default 5 min).
    pub max_ejection: Duration,
}

impl Default for OutlierEjection {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
        }
    }
}

impl OutlierEjection {
    /// Never eject.
    pub fn off() -> Self {
        Self {
            consecutive_failures: 0,
            ..Self::default()
        }
    }
}

/// Whether a call that ended with `code` counts against its replica.
pub(crate) fn is_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Internal | Code::Unknown | Code::DataLoss
    )
}

/// Nanoseconds on the process's monotonic clock (since the first call):
/// the clock of ejections and of the latency averages balancing weighs.
pub(crate) fn now_ns() -> u64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One replica's record: failures in a row, and its ejection. Shared by
/// the replica and its connections; lock-free.
#[derive(Debug, Default)]
pub(crate) struct Outlier {
    settings: OnceLock<OutlierEjection>,
    consecutive: AtomicU32,
    /// Ejected until this time on [`now_ns`]'s clock (0: never).
    ejected_until_ns: AtomicU64,
    ejections: AtomicU32,
}

impl Outlier {
    /// A record under `settings`.
    pub(crate) fn new(settings: OutlierEjection) -> Self {
        let outlier = Self::default();
        let _ = outlier.settings.set(settings);
        outlier
    }

    /// A call on this replica ended with `code` at `now_ns`; `true` when
    /// that ejected it.
    pub(crate) fn record(&self, code: Code, now_ns: u64) -> bool {
        if !is_failure(code) {
            // Only a write when there is something to reset: the common
            // case stays a read.
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let Some(settings) = self.settings.get().filter(|s| s.consecutive_failures > 0) else {
            return false;
        };
        let failures = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < settings.consecutive_failures || self.is_ejected(now_ns) {
            return false;
        }
        self.consecutive.store(0, Ordering::Relaxed);
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = settings
            .base_ejection
            .saturating_mul(n)
            .min(settings.max_ejection);
        let length = u64::try_from(length.as_nanos()).unwrap_or(u64::MAX);
        self.ejected_until_ns
            .store(now_ns.saturating_add(length), Ordering::Relaxed);
        true
    }

    /// Whether it is ejected at `now_ns`.
    pub(crate) fn is_ejected(&self, now_ns: u64) -> bool {
        now_ns < self.ejected_until_ns.load(Ordering::Relaxed)
    }

    /// How much longer it stays ejected, if it is.
    pub(crate) fn ejected_for(&self, now_ns: u64) -> Option<Duration> {
        let until = self.ejected_until_ns.load(Ordering::Relaxed);
        (now_ns < until).then(|| Duration::from_nanos(until - now_ns))
    }

    /// The failures in a row that eject it.
    pub(crate) fn threshold(&self) -> u32 {
        self.settings.get().map_or(0, |s| s.consecutive_failures)
    }

    /// How often it was ejected.
    pub(crate) fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn failures_in_a_row_eject_for_longer_each_time_and_a_success_resets() {
        let o = Outlier::new(OutlierEjection::default());
        for _ in 0..4 {
            assert!(!o.record(Code::Unavailable, 0));
        }
        assert!(!o.record(Code::Ok, 0), "a success resets the count");
        for _ in 0..4 {
            assert!(!o.record(Code::Internal, 0));
        }
        // Application errors are the caller's, not the replica's.
        assert!(!o.record(Code::NotFound, 0));
        for _ in 0..4 {
            assert!(!o.record(Code::Unavailable, 0));
        }
        assert!(o.record(Code::Unavailable, 0), "the fifth in a row ejects");
        assert!(o.is_ejected(9 * S));
        assert!(!o.is_ejected(10 * S));
        assert_eq!(o.ejected_for(4 * S), Some(Duration::from_secs(6)));
        // Back, and failing again: twice as long.
        for _ in 0..4 {
            o.record(Code::Unavailable, 11 * S);
        }
        assert!(o.record(Code::Unavailable, 11 * S));
        assert!(o.is_ejected(30 * S) && !o.is_ejected(31 * S));
        assert_eq!(o.ejections(), 2);
    }

    #[test]
    fn off_never_ejects_and_the_length_is_capped() {
        let off = Outlier::new(OutlierEjection::off());
        assert!((0..100).all(|_| !off.record(Code::Unavailable, 0)));
        let capped = Outlier::new(OutlierEjection {
            consecutive_failures: 1,
            base_ejection: Duration::from_secs(200),
            max_ejection: Duration::from_secs(300),
        });
        assert!(capped.record(Code::Unavailable, 0));
        assert!(capped.record(Code::Unavailable, 200 * S));
        assert_eq!(capped.ejected_for(200 * S), Some(Duration::from_secs(300)));
    }
}
