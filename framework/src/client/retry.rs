//! Retries of idempotent calls, after gRPC's design A6: a per-channel
//! [`RetryPolicy`] (attempts, exponential backoff with full jitter,
//! retryable codes) applied only to methods declared
//! `#[switchyard(idempotent)]`, and a [`RetryBudget`] (A6's retry
//! throttling) so that retries cannot multiply an outage. The deadline
//! bounds the whole call, retries and their waits included.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::protocol::status::Code;

/// How a channel retries calls of methods declared
/// `#[switchyard(idempotent)]` (others are never retried, except a call the
/// server refused as never started, which is made once more).
///
/// The default makes up to 3 attempts on UNAVAILABLE, waiting a random
/// time up to 20 ms, 40 ms, ... (at most 1 s) between them; each retry goes
/// to another replica when the channel has one ready.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retries; at most 10).
    pub max_attempts: u32,
    /// The cap of the first wait (each wait is random up to its cap).
    pub initial_backoff: Duration,
    /// The largest cap.
    pub max_backoff: Duration,
    /// How much the cap grows per retry.
    pub multiplier: f64,
    /// The codes that are retried.
    pub retryable: Vec<Code>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            retryable: vec![Code::Unavailable],
        }
    }
}

impl RetryPolicy {
    /// No retries, even for idempotent methods.
    pub fn off() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Whether a failure with `code` after `attempts` attempts is retried
    /// (the budget and the deadline permitting).
    pub(crate) fn retries(&self, code: Code, attempts: u32) -> bool {
        attempts < self.max_attempts.min(10) && self.retryable.contains(&code)
    }

    /// The wait before retry number `retry` (1 for the first), for `unit`
    /// uniform in [0, 1): A6's full jitter, random up to the cap.
    pub(crate) fn backoff(&self, retry: u32, unit: f64) -> Duration {
        let factor = if self.multiplier.is_finite() {
            self.multiplier.max(1.0)
        } else {
            1.0
        };
        let cap = self.initial_backoff.as_secs_f64()
            * factor.powi(i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX));
        let cap = cap.min(self.max_backoff.as_secs_f64());
        Duration::try_from_secs_f64(cap * unit.clamp(0.0, 1.0)).unwrap_or(self.max_backoff)
    }
}

/// How a channel hedges calls of methods declared
/// `#[switchyard(idempotent)]` (gRPC's A6 hedging policy; off unless set
/// with [`ChannelBuilder::hedge`](crate::ChannelBuilder::hedge), and then
/// instead of retries): the first attempt at once, another every `delay`
/// while none has answered, each on another replica when one is ready, up
/// to `max_attempts` in all; the first answer wins and the others are
/// cancelled. A tail-latency cure that costs load: the retry budget holds
/// hedges back when most attempts fail.
#[derive(Clone, Debug, PartialEq)]
pub struct HedgePolicy {
    /// Attempts in all, the first included (at most 5).
    pub max_attempts: u32,
    /// How long an attempt runs alone before the next starts.
    pub delay: Duration,
    /// Failures that start the next attempt at once instead of ending the
    /// call.
    pub non_fatal: Vec<Code>,
}

impl HedgePolicy {
    /// Up to `max_attempts` attempts, one more every `delay`; UNAVAILABLE
    /// is not fatal.
    pub fn new(max_attempts: u32, delay: Duration) -> Self {
        Self {
            max_attempts,
            delay,
            non_fatal: vec![Code::Unavailable],
        }
    }
}

/// The retry budget of a channel (A6's `retryThrottling`): a bucket of
/// `max_tokens` tokens, full at first. Each failed attempt with a
/// retryable code takes one token, each success puts back `token_ratio`;
/// retries are made only while more than half the bucket is left. With
/// every replica failing, a channel makes at most about `max_tokens / 2`
/// retries in all, then `token_ratio` per successful call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    /// The bucket's size (default 10).
    pub max_tokens: f64,
    /// What a success puts back (default 0.1).
    pub token_ratio: f64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            max_tokens: 10.0,
            token_ratio: 0.1,
        }
    }
}

/// A channel's [`RetryBudget`] in use, and what retrying did.
#[derive(Debug)]
pub(crate) struct RetryThrottle {
    budget: RetryBudget,
    tokens: Mutex<f64>,
    /// Retries made.
    pub(crate) retries: AtomicU64,
    /// Retries the budget refused.
    pub(crate) throttled: AtomicU64,
    /// Hedged attempts made (after the first of a call).
    pub(crate) hedges: AtomicU64,
}

impl RetryThrottle {
    /// A full bucket.
    pub(crate) fn new(budget: RetryBudget) -> Self {
        let max = if budget.max_tokens.is_finite() {
            budget.max_tokens.max(0.0)
        } else {
            RetryBudget::default().max_tokens
        };
        Self {
            budget: RetryBudget {
                max_tokens: max,
                token_ratio: if budget.token_ratio.is_finite() {
                    budget.token_ratio.max(0.0)
                } else {
                    0.0
                },
            },
            tokens: Mutex::new(max),
            retries: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            hedges: AtomicU64::new(0),
        }
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, f64> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An attempt failed with a retryable code.
    pub(crate) fn failed(&self) {
        let mut tokens = self.tokens();
        *tokens = (*tokens - 1.0).max(0.0);
    }

    /// An attempt succeeded.
    pub(crate) fn succeeded(&self) {
        let mut tokens = self.tokens();
        *tokens = (*tokens + self.budget.token_ratio).min(self.budget.max_tokens);
    }

    /// Whether a hedged attempt may be made now; counts it either way
    /// (one held back counts as a retry held back).
    pub(crate) fn allow_hedge(&self) -> bool {
        let allowed = *self.tokens() > self.budget.max_tokens / 2.0;
        let counter = if allowed {
            &self.hedges
        } else {
            &self.throttled
        };
        counter.fetch_add(1, Ordering::Relaxed);
        allowed
    }

    /// Whether a retry may be made now; counts it either way.
    pub(crate) fn allow(&self) -> bool {
        let allowed = *self.tokens() > self.budget.max_tokens / 2.0;
        let counter = if allowed {
            &self.retries
        } else {
            &self.throttled
        };
        counter.fetch_add(1, Ordering::Relaxed);
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_codes_are_retried_up_to_the_attempts() {
        let p = RetryPolicy::default();
        assert!(p.retries(Code::Unavailable, 1));
        assert!(p.retries(Code::Unavailable, 2));
        assert!(!p.retries(Code::Unavailable, 3));
        assert!(!p.retries(Code::Internal, 1));
        assert!(!RetryPolicy::off().retries(Code::Unavailable, 1));
        let many = RetryPolicy {
            max_attempts: 1000,
            ..RetryPolicy::default()
        };
        assert!(!many.retries(Code::Unavailable, 10), "capped at 10");
    }

    #[test]
    fn waits_are_random_up_to_a_cap_that_grows_to_the_max() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(20));
        assert_eq!(p.backoff(3, 1.0), Duration::from_millis(80));
        assert_eq!(p.backoff(30, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(2, 0.5), Duration::from_millis(20));
        let odd = RetryPolicy {
            multiplier: f64::NAN,
            initial_backoff: Duration::MAX,
            ..RetryPolicy::default()
        };
        assert_eq!(odd.backoff(u32::MAX, 0.99), Duration::from_millis(990));
    }

    #[test]
    fn the_budget_stops_retries_when_most_attempts_fail() {
        let t = RetryThrottle::new(RetryBudget::default());
        // Every attempt fails: 5 failures leave half the bucket, no more.
        let mut allowed = 0;
        for _ in 0..100 {
            t.failed();
            if t.allow() {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 4, "tokens 9, 8, 7, 6 allow; 5 does not");
        assert_eq!(t.throttled.load(Ordering::Relaxed), 96);
        // Successes refill it at the ratio: 10 successes buy one token.
        for _ in 0..60 {
            t.succeeded();
        }
        assert!(t.allow());
    }
}
