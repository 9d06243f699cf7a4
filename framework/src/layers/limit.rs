//! Limits: calls in flight ([`ConcurrencyLimit`], [`LoadShed`]) and calls
//! per second ([`RateLimit`]), per method or for all calls together.
//!
//! A call over a limit is answered at once, never queued: RESOURCE_EXHAUSTED
//! (a limit the caller should respect: back off) or, for [`LoadShed`],
//! UNAVAILABLE (this server is busy: try another replica).

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::{Call, Layer, LayerFuture, Next};
use crate::protocol::status::{Code, Status};

/// Per method (keyed by method id) or one for every call.
#[derive(Debug)]
enum Keyed<T> {
    Total(Arc<T>),
    PerMethod(RwLock<HashMap<u32, Arc<T>>>),
}

impl<T> Keyed<T> {
    fn get(&self, method_id: u32, make: impl FnOnce() -> T) -> Arc<T> {
        match self {
            Self::Total(one) => Arc::clone(one),
            Self::PerMethod(map) => {
                if let Some(found) = map
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&method_id)
                {
                    return Arc::clone(found);
                }
                let mut map = map.write().unwrap_or_else(PoisonError::into_inner);
                Arc::clone(map.entry(method_id).or_insert_with(|| Arc::new(make())))
            }
        }
    }

    fn per_method() -> Self {
        Self::PerMethod(RwLock::new(HashMap::new()))
    }
}

/// Calls in flight, counted while a permit lives.
#[derive(Debug, Default)]
struct InFlight(AtomicUsize);

/// One call's place among those in flight; freed when dropped.
struct Permit(Arc<InFlight>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Relaxed);
    }
}

impl InFlight {
    /// A permit, unless `limit` calls are in flight already.
    fn try_acquire(self: &Arc<Self>, limit: usize) -> Option<Permit> {
        let mut now = self.0.load(Acquire);
        loop {
            if now >= limit {
                return None;
            }
            match self.0.compare_exchange_weak(now, now + 1, AcqRel, Acquire) {
                Ok(_) => return Some(Permit(Arc::clone(self))),
                Err(seen) => now = seen,
            }
        }
    }
}

/// Runs `next` holding `permit` until the call (its stream too) ended.
fn holding<'a>(permit: Permit, call: Call, next: Next<'a>) -> LayerFuture<'a> {
    LayerFuture::new(async move {
        let _permit = permit;
        next.run(call).await
    })
}

/// Answers calls beyond a number in flight with RESOURCE_EXHAUSTED: per
/// method ([`per_method`](Self::per_method)) or for all calls
/// ([`total`](Self::total)). A stream is in flight until it ended.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    limit: usize,
    counts: Keyed<InFlight>,
    name: &'static str,
}

impl ConcurrencyLimit {
    /// At most `limit` calls of each method in flight at once.
    pub fn per_method(limit: usize) -> Self {
        Self {
            limit,
            counts: Keyed::per_method(),
            name: "concurrency-limit-per-method",
        }
    }

    /// At most `limit` calls in flight at once, all methods together.
    pub fn total(limit: usize) -> Self {
        Self {
            limit,
            counts: Keyed::Total(Arc::default()),
            name: "concurrency-limit",
        }
    }
}

impl Layer for ConcurrencyLimit {
    fn name(&self) -> &str {
        self.name
    }

    fn call<'a>(&'a self, call: Call, next: Next<'a>) -> LayerFuture<'a> {
        let method = call.method();
        let count = self.counts.get(method.id, InFlight::default);
        match count.try_acquire(self.limit) {
            Some(permit) => holding(permit, call, next),
            None => {
                let over = match self.counts {
                    Keyed::Total(_) => format!("{} calls are in flight", self.limit),
                    Keyed::PerMethod(_) => {
                        format!("{} calls of {} are in flight", self.limit, method.full_name)
                    }
                };
                super::refuse(Status::resource_exhausted(format!(
                    "{}: {over}, the {} side's concurrency limit; retry with backoff, or \
                     make fewer calls at once",
                    method.full_name,
                    call.side().as_str()
                )))
            }
        }
    }
}

/// Answers calls beyond a number in flight with UNAVAILABLE, the code
/// clients retry on another replica: for a server that would rather
/// refuse work than queue it when it is busy.
#[derive(Debug)]
pub struct LoadShed {
    limit: usize,
    count: Arc<InFlight>,
}

impl LoadShed {
    /// Sheds calls once `limit` are in flight.
    pub fn max_in_flight(limit: usize) -> Self {
        Self {
            limit,
            count: Arc::default(),
        }
    }
}

impl Layer for LoadShed {
    fn name(&self) -> &str {
        "load-shed"
    }

    fn call<'a>(&'a self, call: Call, next: Next<'a>) -> LayerFuture<'a> {
        match self.count.try_acquire(self.limit) {
            Some(permit) => holding(permit, call, next),
            None => super::refuse(Status::new(
                Code::Unavailable,
                format!(
                    "{}: shed, {} calls are in flight on this {}; try again later or on \
                     another replica",
                    call.method().full_name,
                    self.limit,
                    call.side().as_str()
                ),
            )),
        }
    }
}

/// A token bucket: `rate` tokens a second, up to `burst`.
#[derive(Debug)]
struct Bucket {
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn full(burst: f64) -> Self {
        Self {
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token; or how long until one is there.
    fn take(&self, rate: f64, burst: f64) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * rate).min(burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / rate))
        }
    }
}

/// Answers calls beyond a rate with RESOURCE_EXHAUSTED: `calls` per
/// `period`, per method or all together, with bursts up to `calls`.
#[derive(Debug)]
pub struct RateLimit {
    calls: u32,
    period: Duration,
    buckets: Keyed<Bucket>,
    name: &'static str,
}

impl RateLimit {
    /// At most `calls` calls of each method per `period`.
    pub fn per_method(calls: u32, period: Duration) -> Self {
        Self {
            calls: calls.max(1),
            period: period.max(Duration::from_micros(1)),
            buckets: Keyed::per_method(),
            name: "rate-limit-per-method",
        }
    }

    /// At most `calls` calls per `period`, all methods together.
    pub fn total(calls: u32, period: Duration) -> Self {
        let calls = calls.max(1);
        Self {
            calls,
            period: period.max(Duration::from_micros(1)),
            buckets: Keyed::Total(Arc::new(Bucket::full(f64::from(calls)))),
            name: "rate-limit",
        }
    }
}

impl Layer for RateLimit {
    fn name(&self) -> &str {
        self.name
    }

    fn call<'a>(&'a self, call: Call, next: Next<'a>) -> LayerFuture<'a> {
        let burst = f64::from(self.calls);
        let rate = burst / self.period.as_secs_f64();
        let method = call.method();
        let bucket = self.buckets.get(method.id, || Bucket::full(burst));
        match bucket.take(rate, burst) {
            Ok(()) => next.run(call),
            Err(wait) => super::refuse(Status::resource_exhausted(format!(
                "{}: over the {} side's rate limit of {} calls per {:?}; retry in {:?} or \
                 later",
                method.full_name,
                call.side().as_str(),
                self.calls,
                self.period,
                wait
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_refills_at_its_rate() {
        let bucket = Bucket::full(3.0);
        for _ in 0..3 {
            assert!(bucket.take(10.0, 3.0).is_ok());
        }
        let wait = bucket.take(10.0, 3.0).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        std::thread::sleep(Duration::from_millis(120));
        assert!(bucket.take(10.0, 3.0).is_ok());
    }

    #[test]
    fn permits_stop_at_the_limit_and_come_back_when_dropped() {
        let count = Arc::new(InFlight::default());
        let a = count.try_acquire(2).unwrap();
        let _b = count.try_acquire(2).unwrap();
        assert!(count.try_acquire(2).is_none());
        drop(a);
        assert!(count.try_acquire(2).is_some());
    }
}
