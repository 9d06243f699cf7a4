//! How many connections a server keeps, and which one goes when it must
//! make room.
//!
//! Every connection takes a file descriptor (or more), and a process that
//! runs out of them cannot accept the next client: idle connections kept
//! forever would starve new ones. So a server keeps at most
//! `max_connections` (by default its `RLIMIT_NOFILE` less an eighth, at
//! least 64, kept for listeners, files and new clients). A connection past
//! that, or an accept that ran out of descriptors, sheds the connection
//! that has been idle longest (no calls in flight either way): it gets a
//! GoAway, and a call that crosses it is refused as never started, which the
//! client makes again on a new connection (as after the idle timeout).
//! When no connection is idle, the new one is refused with a
//! RESOURCE_EXHAUSTED GoAway naming the limit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::driver::{IdleMark, Tenancy};
use crate::protocol::status::Status;

/// The connections of one server.
#[derive(Debug)]
pub(crate) struct Slots {
    cap: usize,
    /// Where the cap came from, for messages.
    source: String,
    epoch: Instant,
    table: Mutex<BTreeMap<u64, Tenant>>,
    next: AtomicU64,
    shed: AtomicU64,
}

/// One connection, as the table sees it.
#[derive(Debug)]
struct Tenant {
    idle: Arc<IdleMark>,
    /// Taken when the connection is asked to go.
    evict: Option<oneshot::Sender<Status>>,
}

/// A connection's place in the table; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().remove(&self.id);
    }
}

/// What [`Slots::admit`] decided about a new connection.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// Its place; held for as long as the connection lives.
    pub(crate) slot: Slot,
    /// What its driver marks and listens to.
    pub(crate) tenancy: Tenancy,
    /// Why it is refused, when the table is full of busy connections.
    pub(crate) refused: Option<Status>,
}

/// The descriptors kept free beside the connections: an eighth of the
/// limit, at least 64.
fn reserve(limit: usize) -> usize {
    (limit / 8).max(64)
}

/// The default cap, from this process's `RLIMIT_NOFILE` (soft), and how it
/// was found.
pub(crate) fn default_cap() -> (usize, String) {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    if limit == usize::MAX {
        return (usize::MAX, "no RLIMIT_NOFILE".to_owned());
    }
    let cap = limit.saturating_sub(reserve(limit)).max(1);
    (
        cap,
        format!(
            "from RLIMIT_NOFILE {limit} less {} kept free",
            reserve(limit)
        ),
    )
}

impl Slots {
    /// A table of at most `cap` connections; `source` says where the cap
    /// came from.
    pub(crate) fn new(cap: usize, source: String) -> Arc<Self> {
        Arc::new(Self {
            cap,
            source,
            epoch: Instant::now(),
            table: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            shed: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Tenant>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connections kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// The idle connections shed so far.
    #[cfg(test)]
    pub(crate) fn shed_count(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Takes a new connection: past the cap, the longest idle one is asked
    /// to go; with none idle, the new one is refused.
    pub(crate) fn admit(self: &Arc<Self>) -> Admitted {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let idle = Arc::new(IdleMark::new(self.epoch));
        let (evict, evicted) = oneshot::channel();
        let mut table = self.lock();
        let over = table.len() >= self.cap;
        let refused = if over && !self.shed_one(&mut table, "a new client") {
            Some(Status::resource_exhausted(format!(
                "this server keeps at most {} connections ({}) and none is idle; try again \
                 shortly or another replica, or raise the limit (ulimit -n, \
                 ServerBuilder::max_connections)",
                self.cap, self.source
            )))
        } else {
            None
        };
        table.insert(
            id,
            Tenant {
                idle: Arc::clone(&idle),
                evict: Some(evict),
            },
        );
        drop(table);
        Admitted {
            slot: Slot {
                slots: Arc::clone(self),
                id,
            },
            tenancy: Tenancy {
                idle,
                evict: evicted,
            },
            refused,
        }
    }

    /// Asks the longest idle connection to go (the accept loop ran out of
    /// descriptors); whether there was one.
    pub(crate) fn make_room(&self) -> bool {
        let mut table = self.lock();
        self.shed_one(&mut table, "descriptors for new clients")
    }

    fn shed_one(&self, table: &mut BTreeMap<u64, Tenant>, for_what: &str) -> bool {
        let longest_idle = table
            .iter()
            .filter(|(_, t)| t.evict.is_some())
            .filter_map(|(id, t)| t.idle.idle_since().map(|since| (since, *id)))
            .min();
        let Some((since, id)) = longest_idle else {
            return false;
        };
        let Some(evict) = table.get_mut(&id).and_then(|t| t.evict.take()) else {
            return false;
        };
        let status = Status::unavailable(format!(
            "this server is making room for {for_what} (it keeps at most {} connections, {}) and \
             closes connections that are idle, this one for {:?}; the call was not started — make \
             it again (a new connection is opened)",
            self.cap,
            self.source,
            since.elapsed()
        ));
        self.shed.fetch_add(1, Ordering::Relaxed);
        let _ = evict.send(status);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Marks `tenancy` idle since `at`, as its driver would.
    fn idle_since(tenancy: &Tenancy, at: Instant) {
        tenancy.idle.set(Some(at));
    }

    #[test]
    fn past_the_cap_the_longest_idle_connection_is_asked_to_go() {
        let slots = Slots::new(2, "a test".into());
        let mut a = slots.admit();
        let mut b = slots.admit();
        assert!(a.refused.is_none() && b.refused.is_none());
        let now = Instant::now();
        idle_since(&a.tenancy, now);
        idle_since(&b.tenancy, now - Duration::from_secs(5));
        let c = slots.admit();
        assert!(c.refused.is_none());
        let status = b.tenancy.evict.try_recv().expect("b idled longest");
        assert!(status.message().contains("not started"), "{status}");
        assert!(
            status.message().contains("at most 2 connections"),
            "{status}"
        );
        assert!(a.tenancy.evict.try_recv().is_err(), "a stays");
        assert_eq!(slots.shed_count(), 1);
        assert_eq!(slots.len(), 3, "b leaves when its driver ends");
        drop(b.slot);
        assert_eq!(slots.len(), 2);
    }

    #[test]
    fn with_none_idle_the_new_connection_is_refused_naming_the_limit() {
        let slots = Slots::new(1, "from RLIMIT_NOFILE 64".into());
        let busy = slots.admit();
        let refused = slots.admit();
        let status = refused.refused.expect("nothing to shed");
        assert_eq!(status.code(), crate::Code::ResourceExhausted);
        assert!(
            status.message().contains("ServerBuilder::max_connections")
                && status.message().contains("RLIMIT_NOFILE 64"),
            "{status}"
        );
        drop(refused.slot);
        drop(busy);
        assert_eq!(slots.len(), 0);
    }

    #[test]
    fn a_connection_is_asked_to_go_once() {
        let slots = Slots::new(usize::MAX, "a test".into());
        let a = slots.admit();
        idle_since(&a.tenancy, Instant::now());
        assert!(slots.make_room());
        assert!(!slots.make_room(), "already asked");
    }

    #[test]
    fn the_default_keeps_an_eighth_of_the_descriptors_free() {
        assert_eq!(reserve(1024), 128);
        assert_eq!(reserve(256), 64);
        let (cap, source) = default_cap();
        assert!(cap >= 1, "{source}");
    }
}
