//! The live side of the introspection model: counters the runtime bumps on
//! every call (relaxed atomics, no locks on the call path) and the process
//! registry of servers and connections that snapshots are taken from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::histogram::Histogram;
use super::model::{
    CompressionInfo, CompressionTrack, ConnectionInfo, Event, Latency, ListenerInfo, MethodStats,
    MmapTrack, PeerInfo, Rejected, ServiceInfo, StreamsInfo,
};
use crate::protocol::compress::{CompressionChoice, CompressionCounters};
use crate::protocol::status::Code;
use crate::select::{Selection, Transport};

/// Closed connections kept for the debug views.
const CLOSED_KEPT: usize = 32;
/// Events kept per connection.
const EVENTS_KEPT: usize = 16;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here only copies data; a poisoned lock still
    // holds consistent data.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Which side of a connection this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Side {
    Client,
    Server,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

/// The process-wide registry.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub(crate) started_unix_ms: u64,
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, Weak<ConnectionStats>>>,
    /// Closed connections, newest first, with their shared-memory pool
    /// counters: a pool outlives its connection's close by as long as the
    /// frames still queued for it, so its gauges are read when asked.
    closed: Mutex<
        VecDeque<(
            ConnectionInfo,
            Option<Arc<crate::transport::bulk::BulkCounters>>,
        )>,
    >,
    methods: Mutex<BTreeMap<MethodKey, Arc<MethodCounters>>>,
    servers: Mutex<BTreeMap<u64, ServerEntry>>,
}

type MethodKey = (String, String, Transport, Side);

/// What one running server serves and where it listens.
type ServerEntry = (Vec<ServiceInfo>, Vec<(ListenerInfo, Option<AttemptSource>)>);

/// Reads a listener's attempt counts as named events.
pub(crate) type AttemptSource = Arc<dyn AttemptEvents>;

/// A listener that counts what it did with connection attempts.
pub(crate) trait AttemptEvents: Send + Sync + std::fmt::Debug {
    /// The counts, by event name.
    fn events(&self) -> Vec<(&'static str, u64)>;
}

#[cfg(feature = "quic")]
impl AttemptEvents for crate::transport::quic::AttemptTally {
    fn events(&self) -> Vec<(&'static str, u64)> {
        Self::events(self)
    }
}

/// The recorder of this process.
pub(crate) fn recorder() -> &'static Recorder {
    static RECORDER: OnceLock<Recorder> = OnceLock::new();
    RECORDER.get_or_init(|| Recorder {
        started_unix_ms: now_unix_ms(),
        next_id: AtomicU64::new(1),
        open: Mutex::new(BTreeMap::new()),
        closed: Mutex::new(VecDeque::new()),
        methods: Mutex::new(BTreeMap::new()),
        servers: Mutex::new(BTreeMap::new()),
    })
}

impl Recorder {
    /// Registers a connection; it leaves the open list when the returned
    /// stats are dropped.
    pub(crate) fn connection(
        &self,
        side: Side,
        selection: &Selection,
        peer: PeerInfo,
    ) -> Arc<ConnectionStats> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::new(ConnectionStats {
            id,
            side,
            transport: selection.transport,
            reason: selection.reason.to_string(),
            rejected: selection
                .rejected
                .iter()
                .map(|(t, why)| Rejected {
                    transport: t.to_string(),
                    why: why.to_string(),
                })
                .collect(),
            peer,
            opened_unix_ms: now_unix_ms(),
            state: AtomicU8::new(STATE_OPEN),
            closed_unix_ms: AtomicU64::new(0),
            calls_started: AtomicU64::new(0),
            calls_succeeded: AtomicU64::new(0),
            calls_failed: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            latency: Histogram::default(),
            events: Mutex::new(VecDeque::new()),
            bulk: OnceLock::new(),
            compression: OnceLock::new(),
            streams_open: AtomicU64::new(0),
            streams_stalled: AtomicU64::new(0),
            stream_messages_sent: AtomicU64::new(0),
            stream_messages_received: AtomicU64::new(0),
            latency_ewma: Default::default(),
            background: AtomicU64::new(0),
        });
        lock(&self.open).insert(id, Arc::downgrade(&stats));
        stats
    }

    /// The counters of `method` over `transport` on `side`.
    pub(crate) fn method(
        &self,
        service: &str,
        method: &str,
        transport: Transport,
        side: Side,
    ) -> Arc<MethodCounters> {
        let key = (service.to_owned(), method.to_owned(), transport, side);
        Arc::clone(lock(&self.methods).entry(key).or_default())
    }

    /// Registers a running server; removed when the guard drops.
    pub(crate) fn server(
        &'static self,
        services: Vec<ServiceInfo>,
        listeners: Vec<(ListenerInfo, Option<AttemptSource>)>,
    ) -> ServerRegistration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.servers).insert(id, (services, listeners));
        ServerRegistration { id }
    }

    pub(crate) fn services_and_listeners(&self) -> (Vec<ServiceInfo>, Vec<ListenerInfo>) {
        let servers = lock(&self.servers);
        let mut services = Vec::new();
        let mut listeners = Vec::new();
        for (s, l) in servers.values() {
            services.extend(s.iter().cloned());
            listeners.extend(l.iter().map(|(info, attempts)| {
                let mut info = info.clone();
                if let Some(attempts) = attempts {
                    info.attempts = attempts
                        .events()
                        .into_iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(name, n)| (name.to_owned(), n))
                        .collect();
                }
                info
            }));
        }
        (services, listeners)
    }

    /// Open connections (oldest first), then closed ones (newest first).
    pub(crate) fn connections(&self) -> Vec<ConnectionInfo> {
        let open: Vec<Arc<ConnectionStats>> = lock(&self.open)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let mut out: Vec<ConnectionInfo> = open.iter().map(|c| c.snapshot()).collect();
        out.extend(lock(&self.closed).iter().map(|(info, bulk)| {
            let mut info = info.clone();
            if let (Some(mmap), Some(bulk)) = (info.mmap.as_mut(), bulk) {
                mmap.pool_in_use_bytes = bulk.pool_in_use.load(Ordering::Relaxed);
                mmap.pool_held_bytes = bulk.pool_capacity.load(Ordering::Relaxed);
            }
            info
        }));
        out
    }

    /// What every connection compressed and decompressed so far, closed
    /// ones included (process totals that only grow).
    pub(crate) fn compression_totals(&self) -> CompressionTrack {
        CompressionTrack::read(crate::protocol::compress::process_totals())
    }

    pub(crate) fn method_stats(&self) -> Vec<MethodStats> {
        lock(&self.methods)
            .iter()
            .map(|((service, method, transport, side), counters)| {
                counters.snapshot(service, method, *transport, *side)
            })
            .collect()
    }
}

/// Removes a server from the recorder when dropped.
#[derive(Debug)]
pub(crate) struct ServerRegistration {
    id: u64,
}

impl Drop for ServerRegistration {
    fn drop(&mut self) {
        lock(&recorder().servers).remove(&self.id);
    }
}

const STATE_OPEN: u8 = 0;
const STATE_DRAINING: u8 = 1;
const STATE_CLOSED: u8 = 2;

/// One connection's live counters.
#[derive(Debug)]
pub(crate) struct ConnectionStats {
    id: u64,
    side: Side,
    transport: Transport,
    reason: String,
    rejected: Vec<Rejected>,
    peer: PeerInfo,
    opened_unix_ms: u64,
    state: AtomicU8,
    closed_unix_ms: AtomicU64,
    calls_started: AtomicU64,
    calls_succeeded: AtomicU64,
    calls_failed: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    latency: Histogram,
    events: Mutex<VecDeque<Event>>,
    /// The link's bulk regions (the mmap track), where it has them.
    bulk: OnceLock<Arc<crate::transport::bulk::BulkCounters>>,
    /// Whether this side compresses, why, and what compression moved.
    compression: OnceLock<(bool, String, Arc<CompressionCounters>)>,
    /// Streaming calls open, those waiting for credit, and their messages.
    streams_open: AtomicU64,
    streams_stalled: AtomicU64,
    stream_messages_sent: AtomicU64,
    stream_messages_received: AtomicU64,
    /// The peak-EWMA latency of unary calls, which balancing weighs.
    latency_ewma: crate::client::balance::PeakEwma,
    /// Calls the framework keeps open on its own (health watches), left
    /// out of [`in_flight`](Self::in_flight).
    background: AtomicU64,
}

impl ConnectionStats {
    /// Calls started on this connection.
    pub(crate) fn calls_started(&self) -> u64 {
        self.calls_started.load(Ordering::Relaxed)
    }

    /// Calls started and not yet finished, but for the framework's own
    /// ([`background`](Self::background)).
    pub(crate) fn in_flight(&self) -> u64 {
        let done = self.calls_succeeded.load(Ordering::Relaxed)
            + self.calls_failed.load(Ordering::Relaxed)
            + self.background.load(Ordering::Relaxed);
        self.calls_started
            .load(Ordering::Relaxed)
            .saturating_sub(done)
    }

    /// A call the framework keeps open on its own starts (`true`) or ends.
    pub(crate) fn background(&self, open: bool) {
        gauge(&self.background, open);
    }

    /// A unary call took `elapsed`: what balancing learns of this peer.
    pub(crate) fn unary_latency(&self, elapsed: Duration) {
        self.latency_ewma
            .record(elapsed.as_nanos() as f64, crate::client::outlier::now_ns());
    }

    /// The peak-EWMA latency of unary calls, nanoseconds (`None`: no call
    /// finished yet).
    pub(crate) fn latency_ewma(&self) -> Option<f64> {
        self.latency_ewma.get()
    }

    /// Shows what the link moves as bulk regions (the mmap track) with this
    /// connection.
    pub(crate) fn track_bulk(&self, counters: Option<Arc<crate::transport::bulk::BulkCounters>>) {
        if let Some(counters) = counters {
            let _ = self.bulk.set(counters);
        }
    }

    /// Shows this connection's compression: the choice for what this side
    /// sends, and the counters of both ways.
    pub(crate) fn track_compression(
        &self,
        choice: &CompressionChoice,
        counters: Arc<CompressionCounters>,
    ) {
        let _ = self
            .compression
            .set((choice.on.is_some(), choice.reason.clone(), counters));
    }

    /// A streaming call opened (`true`) or ended.
    pub(crate) fn stream_open(&self, open: bool) {
        gauge(&self.streams_open, open);
    }

    /// A stream's sender started (`true`) or stopped waiting for credit.
    pub(crate) fn stream_stalled(&self, stalled: bool) {
        gauge(&self.streams_stalled, stalled);
    }

    /// Stream messages sent and received on this connection.
    pub(crate) fn stream_messages(&self, sent: u64, received: u64) {
        self.stream_messages_sent.fetch_add(sent, Ordering::Relaxed);
        self.stream_messages_received
            .fetch_add(received, Ordering::Relaxed);
    }

    /// The process-unique id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Appends to the bounded event log.
    pub(crate) fn event(&self, kind: &str, detail: impl Into<String>) {
        let mut events = lock(&self.events);
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(Event {
            at_unix_ms: now_unix_ms(),
            kind: kind.to_owned(),
            detail: detail.into(),
        });
    }

    /// The connection takes no new calls.
    pub(crate) fn draining(&self) {
        let _ = self.state.compare_exchange(
            STATE_OPEN,
            STATE_DRAINING,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The connection is closed.
    pub(crate) fn closed(&self) {
        if self.state.swap(STATE_CLOSED, Ordering::Relaxed) != STATE_CLOSED {
            self.closed_unix_ms.store(now_unix_ms(), Ordering::Relaxed);
        }
    }

    /// A call started.
    pub(crate) fn started(&self) {
        self.calls_started.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes handed to the transport outside any call (hello, cancel, ...).
    pub(crate) fn sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A call ended.
    pub(crate) fn finished(
        &self,
        method: &MethodCounters,
        code: Code,
        elapsed: Option<Duration>,
        sent: usize,
        received: usize,
    ) {
        let counter = if code == Code::Ok {
            &self.calls_succeeded
        } else {
            &self.calls_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(sent as u64, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(received as u64, Ordering::Relaxed);
        if let Some(elapsed) = elapsed {
            self.latency.record(elapsed);
        }
        method.finished(code, elapsed, sent, received);
    }

    fn snapshot(&self) -> ConnectionInfo {
        let (count, p50_us, p99_us) = self.latency.percentiles();
        let closed = self.closed_unix_ms.load(Ordering::Relaxed);
        ConnectionInfo {
            id: self.id,
            role: self.side.as_str().to_owned(),
            state: match self.state.load(Ordering::Relaxed) {
                STATE_OPEN => "open",
                STATE_DRAINING => "draining",
                _ => "closed",
            }
            .to_owned(),
            transport: self.transport.to_string(),
            reason: self.reason.clone(),
            rejected: self.rejected.clone(),
            peer: self.peer.clone(),
            opened_unix_ms: self.opened_unix_ms,
            closed_unix_ms: (closed != 0).then_some(closed),
            calls_started: self.calls_started.load(Ordering::Relaxed),
            calls_succeeded: self.calls_succeeded.load(Ordering::Relaxed),
            calls_failed: self.calls_failed.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            latency: Latency {
                count,
                p50_us,
                p99_us,
            },
            events: lock(&self.events).iter().cloned().collect(),
            streams: StreamsInfo {
                open: self.streams_open.load(Ordering::Relaxed),
                stalled: self.streams_stalled.load(Ordering::Relaxed),
                messages_sent: self.stream_messages_sent.load(Ordering::Relaxed),
                messages_received: self.stream_messages_received.load(Ordering::Relaxed),
            },
            mmap: self.bulk.get().map(|bulk| {
                bulk.refresh();
                MmapTrack {
                    bodies_sent: bulk.sent.load(Ordering::Relaxed),
                    bodies_received: bulk.received.load(Ordering::Relaxed),
                    bytes_sent: bulk.bytes_sent.load(Ordering::Relaxed),
                    bytes_received: bulk.bytes_received.load(Ordering::Relaxed),
                    pool_bodies_sent: bulk.pool_sent.load(Ordering::Relaxed),
                    pool_fallbacks: bulk.pool_fallbacks.load(Ordering::Relaxed),
                    pool_loaned_bodies: bulk.pool_loaned.load(Ordering::Relaxed),
                    reads_in_place: bulk.reads_in_place.load(Ordering::Relaxed),
                    pool_in_use_bytes: bulk.pool_in_use.load(Ordering::Relaxed),
                    pool_held_bytes: bulk.pool_capacity.load(Ordering::Relaxed),
                }
            }),
            compression: match self.compression.get() {
                Some((on, reason, counters)) => CompressionInfo {
                    on: *on,
                    reason: reason.clone(),
                    moved: CompressionTrack::read(counters),
                },
                None => CompressionInfo::default(),
            },
        }
    }
}

impl Drop for ConnectionStats {
    fn drop(&mut self) {
        self.closed();
        let info = self.snapshot();
        let recorder = recorder();
        lock(&recorder.open).remove(&self.id);
        let mut closed = lock(&recorder.closed);
        if closed.len() == CLOSED_KEPT {
            closed.pop_back();
        }
        closed.push_front((info, self.bulk.get().cloned()));
    }
}

/// Counters of one method over one transport on one side.
#[derive(Debug, Default)]
pub(crate) struct MethodCounters {
    calls: AtomicU64,
    errors: [AtomicU64; Code::ALL.len()],
    latency: Histogram,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    /// Stream messages sent and received, and their bytes.
    stream_messages_sent: AtomicU64,
    stream_messages_received: AtomicU64,
}

impl MethodCounters {
    /// A stream of a call of this method sent `messages` messages in
    /// `bytes` bytes (headers included).
    pub(crate) fn stream_sent(&self, messages: u64, bytes: u64) {
        self.stream_messages_sent
            .fetch_add(messages, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A stream of a call of this method received `messages` messages in
    /// `bytes` bytes.
    pub(crate) fn stream_received(&self, messages: u64, bytes: u64) {
        self.stream_messages_received
            .fetch_add(messages, Ordering::Relaxed);
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn finished(
        &self,
        code: Code,
        elapsed: Option<Duration>,
        sent: usize,
        received: usize,
    ) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if code != Code::Ok {
            self.errors[usize::from(code.as_u16())].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(elapsed) = elapsed {
            self.latency.record(elapsed);
        }
        self.bytes_sent.fetch_add(sent as u64, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(received as u64, Ordering::Relaxed);
    }

    fn snapshot(
        &self,
        service: &str,
        method: &str,
        transport: Transport,
        side: Side,
    ) -> MethodStats {
        let (count, p50_us, p99_us) = self.latency.percentiles();
        let (histogram, latency_sum_seconds) = self.latency.cumulative();
        let errors = Code::ALL
            .iter()
            .zip(&self.errors)
            .filter_map(|(code, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| (code.as_str().to_owned(), n))
            })
            .collect();
        MethodStats {
            service: service.to_owned(),
            method: method.to_owned(),
            transport: transport.to_string(),
            role: side.as_str().to_owned(),
            calls: self.calls.load(Ordering::Relaxed),
            errors,
            latency: Latency {
                count,
                p50_us,
                p99_us,
            },
            histogram,
            latency_sum_seconds,
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            stream_messages_sent: self.stream_messages_sent.load(Ordering::Relaxed),
            stream_messages_received: self.stream_messages_received.load(Ordering::Relaxed),
        }
    }
}

/// Moves a gauge up (`up`) or down, never below 0.
fn gauge(value: &AtomicU64, up: bool) {
    if up {
        value.fetch_add(1, Ordering::Relaxed);
    } else {
        let _ = value.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// Counters for every method a peer announced, by method id.
pub(crate) fn counters_by_id<'a>(
    methods: impl Iterator<Item = (u32, &'a str, &'a str)>,
    transport: Transport,
    side: Side,
) -> HashMap<u32, Arc<MethodCounters>> {
    let recorder = recorder();
    methods
        .map(|(id, service, method)| (id, recorder.method(service, method, transport, side)))
        .collect()
}
