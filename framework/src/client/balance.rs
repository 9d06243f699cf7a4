//! How a channel spreads calls over the replicas behind its name: the
//! policies ([`Balance`]) and the choice among the replicas ready to take
//! a call, which is pure (no I/O, no clock) and tested on its own.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How a [`Channel`](crate::Channel) spreads calls over the replicas
/// behind its name (several servers publishing it in the local registry,
/// or several replicas from a resolver or discovery file).
///
/// Every policy picks among the replicas whose connection is up and takes
/// calls (not draining); a replica that is down is reconnected in the
/// background (with its own backoff) and picked again once it answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Balance {
    /// Every call to the first replica that answers, in discovery's order
    /// (the local registry's newest first); the next only when it fails or
    /// drains. Only one connection is open. The default, as in gRPC.
    #[default]
    PickFirst,
    /// Each call to the next ready replica in turn.
    RoundRobin,
    /// Of two ready replicas drawn at random, the one with fewer calls in
    /// flight (the "power of two choices").
    LeastInFlight,
    /// Of two ready replicas, the one with the lower expected wait: its
    /// peak-sensitive moving average of call latency times its calls in
    /// flight plus one (Finagle's and tower's `PeakEwma`). One of the two
    /// is the replica the previous call went to, the other is drawn at
    /// random: a channel stays with a replica while it is the cheaper, and
    /// moves when another looks cheaper or it queues. Prefers a replica on
    /// this host over shared memory without being told to, because it
    /// answers sooner; and a replica that is awake over ones that must be
    /// woken for each call.
    PeakEwma,
}

impl Balance {
    /// The policy's name, as the debug endpoint shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PickFirst => "pick_first",
            Self::RoundRobin => "round_robin",
            Self::LeastInFlight => "least_in_flight",
            Self::PeakEwma => "peak_ewma",
        }
    }

    /// Whether every replica gets a connection up front (all but
    /// `PickFirst`, which connects to the next only when it needs it).
    pub(crate) fn connects_all(self) -> bool {
        self != Self::PickFirst
    }
}

impl std::fmt::Display for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the policy knows of one ready replica.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Load {
    /// Calls started on it and not yet finished.
    pub(crate) in_flight: u64,
    /// Its peak-EWMA call latency, in nanoseconds (`None`: no call has
    /// finished on it yet).
    pub(crate) latency_ns: Option<f64>,
}

/// The state a policy keeps between picks: the round-robin position and
/// a random source. Shared by every call of a channel; lock-free.
#[derive(Debug)]
pub(crate) struct Picker {
    next: AtomicUsize,
    random: AtomicU64,
    /// Where peak_ewma's previous call went (an index into the ready
    /// replicas of that pick: a hint, right while the set is unchanged).
    last: AtomicUsize,
}

impl Default for Picker {
    fn default() -> Self {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            // Channels of one process start at different replicas.
            next: AtomicUsize::new((seed >> 32) as usize),
            random: AtomicU64::new(seed | 1),
            last: AtomicUsize::new(0),
        }
    }
}

impl Picker {
    /// The index in `ready` (ready replicas, in discovery's order) that
    /// takes the next call; `None` when none is ready.
    pub(crate) fn pick(&self, policy: Balance, ready: &[Load]) -> Option<usize> {
        match ready.len() {
            0 => None,
            1 => Some(0),
            n => Some(match policy {
                Balance::PickFirst => 0,
                Balance::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
                Balance::LeastInFlight => {
                    let (a, b) = self.two(n);
                    if ready[b].in_flight < ready[a].in_flight {
                        b
                    } else {
                        a
                    }
                }
                Balance::PeakEwma => {
                    // The previous pick against one other drawn at random:
                    // staying costs nothing while it is the cheaper, and a
                    // replica kept busy answers sooner than one woken for
                    // each call (on few cores, most of a same-host call).
                    let a = self.last.load(Ordering::Relaxed) % n;
                    let other = (self.random() % (n as u64 - 1)) as usize;
                    let b = if other >= a { other + 1 } else { other };
                    // A replica with no latency yet is assumed twice as
                    // fast as the fastest known, so it gets the next call
                    // and is measured, but not a whole burst.
                    let known = ready
                        .iter()
                        .filter_map(|l| l.latency_ns)
                        .fold(f64::INFINITY, f64::min);
                    let guess = if known.is_finite() { known / 2.0 } else { 1.0 };
                    let cost = |l: &Load| l.latency_ns.unwrap_or(guess) * (l.in_flight + 1) as f64;
                    let picked = if cost(&ready[b]) < cost(&ready[a]) {
                        b
                    } else {
                        a
                    };
                    self.last.store(picked, Ordering::Relaxed);
                    picked
                }
            }),
        }
    }

    /// Where round robin starts its next turn (for connecting when no
    /// replica is ready: attempts spread as calls would).
    pub(crate) fn start(&self, policy: Balance, n: usize) -> usize {
        if n == 0 || policy == Balance::PickFirst {
            return 0;
        }
        self.next.load(Ordering::Relaxed) % n
    }

    /// Two distinct indices below `n` (n ≥ 2), uniformly.
    fn two(&self, n: usize) -> (usize, usize) {
        let r = self.random();
        let a = (r % n as u64) as usize;
        let b = ((r >> 32) % (n as u64 - 1)) as usize;
        (a, if b >= a { b + 1 } else { b })
    }

    /// xorshift64*: fast, good enough for spreading calls, no crate.
    fn random(&self) -> u64 {
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A peak-sensitive exponentially weighted moving average of call
/// latency: a sample above the average replaces it at once (a replica
/// that slows down is avoided at once), one below pulls it down with a
/// time constant of [`PeakEwma::DECAY`]. Lock-free; racing updates lose
/// a sample, which an average can afford.
#[derive(Debug, Default)]
pub(crate) struct PeakEwma {
    /// The average in nanoseconds (as f64 bits); 0: no sample yet.
    average: AtomicU64,
    /// When it was last updated, nanoseconds on the process clock.
    at_ns: AtomicU64,
}

impl PeakEwma {
    /// How fast the average forgets a peak.
    pub(crate) const DECAY_NS: f64 = 1e9;

    /// Records a call that took `latency_ns`, finished at `now_ns`.
    pub(crate) fn record(&self, latency_ns: f64, now_ns: u64) {
        let average = f64::from_bits(self.average.load(Ordering::Relaxed));
        let last = self.at_ns.swap(now_ns, Ordering::Relaxed);
        let next = if average == 0.0 || latency_ns > average {
            latency_ns
        } else {
            let elapsed = now_ns.saturating_sub(last) as f64;
            let w = (-elapsed / Self::DECAY_NS).exp();
            average * w + latency_ns * (1.0 - w)
        };
        self.average.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The average, in nanoseconds (`None` before the first sample).
    pub(crate) fn get(&self) -> Option<f64> {
        let average = f64::from_bits(self.average.load(Ordering::Relaxed));
        (average > 0.0).then_some(average)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(n: usize) -> Vec<Load> {
        vec![
            Load {
                in_flight: 0,
                latency_ns: None,
            };
            n
        ]
    }

    #[test]
    fn none_ready_none_picked_one_ready_always_it() {
        let p = Picker::default();
        for policy in [
            Balance::PickFirst,
            Balance::RoundRobin,
            Balance::LeastInFlight,
            Balance::PeakEwma,
        ] {
            assert_eq!(p.pick(policy, &[]), None);
            assert_eq!(p.pick(policy, &idle(1)), Some(0));
        }
    }

    #[test]
    fn pick_first_takes_the_first_and_round_robin_takes_turns() {
        let p = Picker::default();
        assert!((0..10).all(|_| p.pick(Balance::PickFirst, &idle(3)) == Some(0)));
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[p.pick(Balance::RoundRobin, &idle(3)).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn least_in_flight_avoids_the_busy_replica_and_spreads_over_idle_ones() {
        let p = Picker::default();
        let mut loads = idle(3);
        loads[1].in_flight = 50;
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[p.pick(Balance::LeastInFlight, &loads).unwrap()] += 1;
        }
        // The busy one wins only when drawn twice, which cannot happen.
        assert_eq!(counts[1], 0, "{counts:?}");
        assert!(counts[0] > 1200 && counts[2] > 1200, "{counts:?}");
    }

    #[test]
    fn peak_ewma_prefers_the_faster_replica_until_it_queues() {
        let p = Picker::default();
        let fast = Load {
            in_flight: 0,
            latency_ns: Some(5_000.0),
        };
        let slow = Load {
            in_flight: 0,
            latency_ns: Some(500_000.0),
        };
        assert!((0..100).all(|_| p.pick(Balance::PeakEwma, &[slow, fast]) == Some(1)));
        // 200 calls queued on the fast one cost more than one on the slow.
        let queued = Load {
            in_flight: 200,
            ..fast
        };
        assert!((0..100).all(|_| p.pick(Balance::PeakEwma, &[slow, queued]) == Some(0)));
        // A replica not measured yet is tried first, but not by a burst.
        let new = Load {
            in_flight: 0,
            latency_ns: None,
        };
        let picks: Vec<_> = (0..100)
            .map(|_| p.pick(Balance::PeakEwma, &[slow, new]))
            .collect();
        assert!(picks.iter().all(|&i| i == Some(1)), "{picks:?}");
        let busy_new = Load {
            in_flight: 3,
            ..new
        };
        assert!((0..100).all(|_| p.pick(Balance::PeakEwma, &[slow, busy_new]) == Some(0)));
    }

    #[test]
    fn peak_ewma_stays_with_the_cheapest_and_leaves_it_when_it_queues() {
        let p = Picker::default();
        let at = |latency: f64, in_flight: u64| Load {
            in_flight,
            latency_ns: Some(latency),
        };
        // Three replicas, the middle one the fastest: once found, it takes
        // every call (P2C drawing two at random would give a third of the
        // calls to the other two).
        let loads = [at(100_000.0, 0), at(4_000.0, 0), at(120_000.0, 0)];
        let picks: Vec<_> = (0..300)
            .map(|_| p.pick(Balance::PeakEwma, &loads).unwrap())
            .collect();
        // From the first replica, each pick draws the fastest with
        // probability 1/2: found within 40 picks but for 2^-40 (within 10
        // it failed about once in a thousand runs).
        let found = picks.iter().position(|&i| i == 1);
        assert!(found.is_some_and(|at| at < 40), "{picks:?}");
        assert!(picks[found.unwrap()..].iter().all(|&i| i == 1), "{picks:?}");
        // Queued behind 40 calls, it costs more than an idle slow one.
        let loads = [at(100_000.0, 0), at(4_000.0, 40), at(120_000.0, 0)];
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[p.pick(Balance::PeakEwma, &loads).unwrap()] += 1;
        }
        assert!(counts[1] == 0 && counts[0] > 0, "{counts:?}");
    }

    #[test]
    fn two_draws_distinct_indices_uniformly() {
        let p = Picker::default();
        let mut seen = [[0u32; 4]; 4];
        for _ in 0..12_000 {
            let (a, b) = p.two(4);
            assert_ne!(a, b);
            seen[a][b] += 1;
        }
        for (a, row) in seen.iter().enumerate() {
            for (b, &count) in row.iter().enumerate() {
                if a != b {
                    assert!((700..1300).contains(&count), "{seen:?}");
                }
            }
        }
    }

    #[test]
    fn the_average_jumps_to_peaks_and_decays_from_them() {
        let e = PeakEwma::default();
        assert_eq!(e.get(), None);
        e.record(100.0, 0);
        assert_eq!(e.get(), Some(100.0));
        e.record(1_000.0, 1);
        assert_eq!(e.get(), Some(1_000.0));
        // One decay constant later, a low sample pulls it 63 % of the way.
        e.record(100.0, 1 + PeakEwma::DECAY_NS as u64);
        let got = e.get().unwrap();
        assert!((420.0..440.0).contains(&got), "{got}");
        // A sample right after barely moves it.
        e.record(100.0, 2 + PeakEwma::DECAY_NS as u64);
        assert!(e.get().unwrap() > 420.0);
    }
}
