//! A bound on how fast one connection may cancel calls: the defence against
//! "Rapid Reset" floods (CVE-2023-44487), where a client starts and cancels
//! calls as fast as it can so that the server does work for calls nobody
//! waits for. A token bucket: each Cancel that stops a running call takes a
//! token (one for a call already ended does not; clients send none when a
//! deadline ends a call, since the server's timer ends it too); tokens come
//! back at
//! the configured rate up to a burst. A connection that runs out is closed
//! with ResourceExhausted (HTTP/2's ENHANCE_YOUR_CALM).

use std::time::{Duration, Instant};

/// How many cancels a connection may send: `per_second` on average, up to
/// `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CancelRate {
    /// Cancels per second, on average.
    pub per_second: u32,
    /// Cancels at once, at most.
    pub burst: u32,
}

impl CancelRate {
    /// `per_second` cancels on average (at least 1), in bursts of twice that.
    pub fn per_second(per_second: u32) -> Self {
        let per_second = per_second.max(1);
        Self {
            per_second,
            burst: per_second.saturating_mul(2),
        }
    }
}

impl Default for CancelRate {
    fn default() -> Self {
        Self {
            per_second: 1_000,
            burst: 2_000,
        }
    }
}

/// The tokens of one connection.
#[derive(Debug)]
pub struct CancelBudget {
    rate: CancelRate,
    tokens: f64,
    refilled: Instant,
    /// Cancels seen, for the message.
    seen: u64,
    since: Instant,
}

impl CancelBudget {
    /// A full bucket at `now`.
    pub fn new(rate: CancelRate, now: Instant) -> Self {
        Self {
            rate,
            tokens: f64::from(rate.burst),
            refilled: now,
            seen: 0,
            since: now,
        }
    }

    /// Takes a token for one cancel; `Err` with what happened once the
    /// connection has used up its budget.
    pub fn take(&mut self, now: Instant) -> Result<(), String> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(self.rate.per_second))
            .min(f64::from(self.rate.burst));
        self.refilled = now;
        self.seen += 1;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let over = now
            .saturating_duration_since(self.since)
            .max(Duration::from_millis(1));
        Err(format!(
            "the client cancelled {} calls in {:.1} s, more than this server allows ({} per \
             second, bursts of {}): closing the connection as a cancel flood (Rapid Reset); a \
             client that cancels this often should rethink its deadlines, or the server's \
             ServerBuilder::max_cancel_rate be raised",
            self.seen,
            over.as_secs_f64(),
            self.rate.per_second,
            self.rate.burst
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_a_flood_does_not_and_tokens_come_back() {
        let rate = CancelRate {
            per_second: 100,
            burst: 10,
        };
        let start = Instant::now();
        let mut budget = CancelBudget::new(rate, start);
        for _ in 0..10 {
            budget.take(start).unwrap();
        }
        let err = budget.take(start).unwrap_err();
        assert!(err.contains("cancelled 11 calls"), "{err}");
        // 100 ms later, 10 more.
        let later = start + Duration::from_millis(100);
        for _ in 0..10 {
            budget.take(later).unwrap();
        }
        assert!(budget.take(later).is_err());
        // A steady 50 per second never runs out.
        let mut steady = CancelBudget::new(rate, start);
        for i in 0..1_000u64 {
            steady.take(start + Duration::from_millis(20 * i)).unwrap();
        }
    }
}
