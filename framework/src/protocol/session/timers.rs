//! The session's clocks: keepalive pings that find a peer which went
//! silent (a cut cable sends no FIN), and the idle timeout after which a
//! serving side lets a connection with no calls go.

use std::time::{Duration, Instant};

/// When a session pings its peer and when it lets an idle connection go.
/// Both are off unless set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// Ping the peer after this long without a frame from it (`None`:
    /// never).
    pub keepalive_interval: Option<Duration>,
    /// Close the connection when nothing arrives this long after a Ping.
    pub keepalive_timeout: Duration,
    /// A serving side drains a connection that has had no call in flight
    /// for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// How long a side that drained an idle connection keeps reading, so
    /// that a call which crossed its GoAway is refused as not started
    /// (and retried by the caller) rather than lost with the link.
    pub drain_grace: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(20),
            idle_timeout: None,
            drain_grace: Duration::from_secs(1),
        }
    }
}

/// What the clocks know.
#[derive(Debug)]
pub(super) struct Clock {
    pub(super) timers: Timers,
    /// When the last frame arrived.
    received: Instant,
    /// When a call last started or ended.
    busy: Instant,
    /// The Ping in flight: its id and when it went.
    ping: Option<(u64, Instant)>,
    next_ping: u64,
    /// Until when a draining side keeps reading.
    linger_until: Option<Instant>,
}

/// What a timeout asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// Nothing yet.
    Nothing,
    /// Send a Ping with this id.
    Ping(u64),
    /// The peer did not answer the Ping: it is gone.
    PeerSilent(Duration),
    /// The connection has been idle this long: drain it.
    Idle(Duration),
}

impl Clock {
    pub(super) fn new(timers: Timers, now: Instant) -> Self {
        Self {
            timers,
            received: now,
            busy: now,
            ping: None,
            next_ping: 1,
            linger_until: None,
        }
    }

    /// A frame arrived: the peer is alive.
    pub(super) fn received(&mut self, now: Instant) {
        self.received = self.received.max(now);
        self.ping = None;
    }

    /// A call started or ended.
    pub(super) fn busy(&mut self, now: Instant) {
        self.busy = self.busy.max(now);
    }

    /// When a call last started or ended (or the connection opened).
    pub(super) fn idle_since(&self) -> Instant {
        self.busy
    }

    /// Keeps reading until `grace` after `now`.
    pub(super) fn linger(&mut self, now: Instant) {
        self.linger_until = Some(now + self.timers.drain_grace);
    }

    /// Whether a draining side still keeps reading at `now`.
    #[must_use]
    pub(super) fn lingering(&self, now: Instant) -> bool {
        self.linger_until.is_some_and(|until| now < until)
    }

    /// The next instant something is due, given whether the connection
    /// has calls in flight and whether idle draining applies.
    pub(super) fn next(&self, idle_applies: bool) -> Option<Instant> {
        let keepalive = self
            .timers
            .keepalive_interval
            .map(|interval| match self.ping {
                Some((_, sent)) => sent + self.timers.keepalive_timeout,
                None => self.received + interval,
            });
        let idle = self
            .timers
            .idle_timeout
            .filter(|_| idle_applies)
            .map(|idle| self.busy + idle);
        [keepalive, idle, self.linger_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// What is due at `now`.
    pub(super) fn due(&mut self, now: Instant, idle_applies: bool) -> Due {
        if let Some(interval) = self.timers.keepalive_interval {
            match self.ping {
                Some((_, sent)) if now >= sent + self.timers.keepalive_timeout => {
                    // Said once: the clock stops pinging a dead peer.
                    self.ping = None;
                    self.timers.keepalive_interval = None;
                    return Due::PeerSilent(now.saturating_duration_since(self.received));
                }
                None if now >= self.received + interval => {
                    let id = self.next_ping;
                    self.next_ping = self.next_ping.wrapping_add(1).max(1);
                    self.ping = Some((id, now));
                    return Due::Ping(id);
                }
                _ => {}
            }
        }
        if let Some(idle) = self.timers.idle_timeout
            && idle_applies
            && now >= self.busy + idle
        {
            return Due::Idle(idle);
        }
        Due::Nothing
    }
}
