//! A lock-free latency histogram: log-scale buckets of atomic counters,
//! four per doubling, from 1 µs to about 70 minutes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB: usize = 4;
const OCTAVES: usize = 32;
const BUCKETS: usize = SUB * OCTAVES + 1;

/// Records durations; readers compute percentiles and cumulative counts.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// The bucket of a value in µs: bucket `0` holds < 1 µs; bucket `1 + 4k + j`
/// holds [2^k · (1 + j/4), 2^k · (1 + (j+1)/4)) µs.
fn bucket_of(us: u64) -> usize {
    if us == 0 {
        return 0;
    }
    let octave = 63 - us.leading_zeros() as usize;
    let sub = if octave >= 2 {
        ((us >> (octave - 2)) & 3) as usize
    } else {
        ((us << (2 - octave)) & 3) as usize
    };
    (1 + octave * SUB + sub).min(BUCKETS - 1)
}

/// The upper bound in µs of bucket `i`.
fn upper_us(i: usize) -> f64 {
    if i == 0 {
        return 1.0;
    }
    let octave = (i - 1) / SUB;
    let sub = (i - 1) % SUB;
    (1u64 << octave) as f64 * (1.0 + (sub as f64 + 1.0) / SUB as f64)
}

impl Histogram {
    /// Records one duration.
    pub(crate) fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// Calls recorded, and the value in µs at `quantile` (bucket upper
    /// bound, so at most 25 % above the true value).
    pub(crate) fn percentiles(&self) -> (u64, f64, f64) {
        let counts = self.counts();
        let total: u64 = counts.iter().sum();
        let at = |q: f64| {
            if total == 0 {
                return 0.0;
            }
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return upper_us(i);
                }
            }
            upper_us(BUCKETS - 1)
        };
        (total, at(0.5), at(0.99))
    }

    /// Cumulative counts at every octave boundary (1 µs, 2 µs, 4 µs, ...),
    /// as (upper bound in seconds, count); and the sum in seconds.
    pub(crate) fn cumulative(&self) -> (Vec<(f64, u64)>, f64) {
        let counts = self.counts();
        let mut out = Vec::with_capacity(OCTAVES + 1);
        let mut seen = counts[0];
        out.push((1e-6, seen));
        for octave in 0..OCTAVES {
            for sub in 0..SUB {
                seen += counts[1 + octave * SUB + sub];
            }
            out.push(((2u64 << octave) as f64 * 1e-6, seen));
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 * 1e-9;
        (out, sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bound_their_values() {
        let mut last = 0;
        for us in [0u64, 1, 2, 3, 4, 5, 6, 7, 8, 100, 1_000, 65_000, 1 << 40] {
            let b = bucket_of(us);
            assert!(b >= last, "{us}");
            last = b;
            if us > 0 && b < BUCKETS - 1 {
                assert!(upper_us(b) > us as f64, "{us} -> {}", upper_us(b));
                assert!(
                    upper_us(b) <= us as f64 * 1.25 + 1.0,
                    "{us} -> {}",
                    upper_us(b)
                );
            }
        }
    }

    #[test]
    fn percentiles_and_cumulative_counts() {
        let h = Histogram::default();
        for _ in 0..98 {
            h.record(Duration::from_micros(50));
        }
        h.record(Duration::from_millis(10));
        h.record(Duration::from_millis(10));
        let (count, p50, p99) = h.percentiles();
        assert_eq!(count, 100);
        assert!((50.0..=64.0).contains(&p50), "{p50}");
        assert!((10_000.0..=12_500.0).contains(&p99), "{p99}");
        let (cumulative, sum) = h.cumulative();
        assert_eq!(cumulative.last().unwrap().1, 100);
        assert!(
            cumulative
                .windows(2)
                .all(|w| w[0].1 <= w[1].1 && w[0].0 < w[1].0)
        );
        let at_64us = cumulative
            .iter()
            .find(|(le, _)| (*le - 64e-6).abs() < 1e-12)
            .unwrap();
        assert_eq!(at_64us.1, 98);
        assert!((sum - (98.0 * 50e-6 + 0.02)).abs() < 1e-6);
    }
}
