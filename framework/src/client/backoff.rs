//! Reconnect backoff, as gRPC does it: after a failed attempt to reconnect,
//! the next waits 1 s, then 1.6 times longer each time, up to 120 s, each
//! delay spread by ±20 % so that many clients of one server do not all come
//! back at once. Calls made while waiting fail at once with the last
//! failure's code (usually Unavailable), saying when the next attempt is; a
//! success starts over.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use crate::protocol::status::Status;

/// The delays between reconnect attempts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The delay after the first failed attempt. Default 1 s.
    pub initial: Duration,
    /// Each further failure multiplies the delay by this. Default 1.6.
    pub multiplier: f64,
    /// The longest delay. Default 120 s.
    pub max: Duration,
    /// Each delay is spread uniformly by up to this fraction either way.
    /// Default 0.2.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 1.6,
            max: Duration::from_secs(120),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay after `failures` failed attempts in a row (at least 1),
    /// before jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX);
        let multiplier = if self.multiplier.is_finite() {
            self.multiplier.max(1.0)
        } else {
            1.0
        };
        let secs = self.initial.as_secs_f64() * multiplier.powi(exponent);
        // Whatever the settings, never a panic: NaN or overflow is the cap.
        Duration::try_from_secs_f64(secs.min(self.max.as_secs_f64())).unwrap_or(self.max)
    }

    /// [`delay`](Self::delay) spread by the jitter, `unit` in [0, 1).
    fn jittered(&self, failures: u32, unit: f64) -> Duration {
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        let factor = 1.0 + jitter * (2.0 * unit - 1.0);
        let delay = self.delay(failures);
        Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(delay)
    }
}

/// A channel's reconnect state.
#[derive(Debug, Default)]
pub(crate) struct BackoffState {
    failures: u32,
    retry_at: Option<Instant>,
    last: Option<Status>,
}

impl BackoffState {
    /// `Err` while waiting out a delay: why the last attempt failed and when
    /// the next one is.
    pub(crate) fn check(&self, target: &str, now: Instant) -> Result<(), Status> {
        match (self.retry_at, &self.last) {
            (Some(at), Some(last)) if now < at => Err(Status::new(
                last.code(),
                format!(
                    "reconnecting to {target} failed {} time{} in a row (last: {}); the next \
                     attempt is in {:?} (reconnect backoff: ChannelBuilder::reconnect_backoff)",
                    self.failures,
                    if self.failures == 1 { "" } else { "s" },
                    last.message(),
                    Duration::from_millis(
                        u64::try_from(at.saturating_duration_since(now).as_millis())
                            .unwrap_or(u64::MAX)
                    )
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Records a failed attempt; returns the delay before the next.
    pub(crate) fn failed(&mut self, backoff: &Backoff, status: Status, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = backoff.jittered(self.failures, random_unit());
        self.retry_at = Some(
            now.checked_add(delay)
                .unwrap_or(now + Duration::from_secs(120)),
        );
        self.last = Some(status);
        delay
    }

    /// Records a success.
    pub(crate) fn succeeded(&mut self) {
        *self = Self::default();
    }
}

/// A number in [0, 1) that differs between processes and calls: the
/// standard library's randomly keyed hasher, so no RNG crate is needed.
pub(super) fn random_unit() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_the_multiplier_up_to_the_cap() {
        let b = Backoff::default();
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(2), Duration::from_millis(1600));
        assert_eq!(b.delay(3).as_millis(), 2560);
        assert_eq!(b.delay(12), Duration::from_secs(120));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(120));
        for unit in [0.0, 0.5, 0.999] {
            let d = b.jittered(2, unit).as_secs_f64();
            assert!((1.28..=1.92).contains(&d), "{d}");
        }
        // Settings that make no sense do not panic.
        let odd = Backoff {
            initial: Duration::MAX,
            multiplier: f64::NAN,
            max: Duration::MAX,
            jitter: f64::NAN,
        };
        let _ = odd.jittered(u32::MAX, 0.99);
        let mut state = BackoffState::default();
        state.failed(&odd, Status::unavailable("x"), Instant::now());
        let spread: std::collections::HashSet<u64> =
            (0..50).map(|_| (random_unit() * 1e9) as u64).collect();
        assert!(spread.len() > 40, "random_unit repeats: {}", spread.len());
    }

    #[test]
    fn calls_fail_fast_until_the_next_attempt() {
        let b = Backoff::default();
        let mut state = BackoffState::default();
        let now = Instant::now();
        assert!(state.check("x", now).is_ok());
        let delay = state.failed(&b, Status::unavailable("refused"), now);
        assert!(delay >= Duration::from_millis(800), "{delay:?}");
        let err = state.check("tcp://h:1", now).unwrap_err();
        assert_eq!(err.code(), crate::Code::Unavailable);
        assert!(err.message().contains("failed 1 time in a row"), "{err}");
        assert!(err.message().contains("refused"), "{err}");
        assert!(state.check("x", now + delay).is_ok());
        state.failed(&b, Status::unavailable("again"), now);
        assert!(
            state
                .check("x", now)
                .unwrap_err()
                .message()
                .contains("2 times")
        );
        state.succeeded();
        assert!(state.check("x", now).is_ok());
    }
}
