//! The introspection model: what a process serves, where it listens, and
//! every connection with the transport it chose and why.
//!
//! One model serves every view: the HTML page, the JSON endpoint, the
//! Prometheus text, the `Introspection` RPC service and `switchyard
//! inspect`. Field names are stable; `docs/debug-endpoint.md` documents the
//! schema. Transports appear by their lower-case names (`pipe`, `shm`,
//! `mmap`, `mqueue`, `unix`, `tcp`, `quic`, `memory`), so a transport added
//! later shows up without a change here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Everything the debug views show, taken at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Schema version of this model.
    pub schema: u32,
    /// When the snapshot was taken, milliseconds since the Unix epoch.
    pub taken_unix_ms: u64,
    /// The process.
    pub process: ProcessInfo,
    /// Services this process serves.
    pub services: Vec<ServiceInfo>,
    /// Addresses this process listens on.
    pub listeners: Vec<ListenerInfo>,
    /// Open connections, then recently closed ones (newest first).
    pub connections: Vec<ConnectionInfo>,
    /// Per service, method, transport and role: counters and latency.
    pub methods: Vec<MethodStats>,
    /// Everything this process moved over the mmap track so far (all
    /// shared-memory connections, closed ones included).
    #[serde(default)]
    pub mmap: MmapTrack,
    /// Every server's and channel's layers, in the order they run.
    #[serde(default)]
    pub layers: Vec<LayerStackInfo>,
    /// Everything this process's connections compressed and decompressed
    /// so far (closed ones included).
    #[serde(default)]
    pub compression: CompressionTrack,
    /// This process's channels to names, with their replicas.
    #[serde(default)]
    pub channels: Vec<ChannelInfo>,
}

/// A channel to a target and the replicas behind it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// What the channel connects to (a name or an address).
    pub target: String,
    /// How calls are spread (`pick_first`, `round_robin`,
    /// `least_in_flight`, `peak_ewma`).
    pub balance: String,
    /// Who listed the replicas (the local registry, a resolver), if the
    /// target is a name.
    pub source: Option<String>,
    /// Why the last lookup failed or found nothing, while the channel
    /// keeps the replicas it knew.
    pub discovery_error: Option<String>,
    /// The replicas, in discovery's order.
    pub replicas: Vec<ReplicaInfo>,
    /// What changed (replicas added, removed, not answering), oldest first.
    pub changes: Vec<String>,
    /// What the last lookup left out and why: records that are not usable
    /// endpoints (an SRV record with port 0, a target with no address).
    pub skipped: Vec<String>,
    /// Retries of idempotent calls made (each after a failed attempt).
    pub retries: u64,
    /// Retries (and hedges) the retry budget refused.
    pub retries_throttled: u64,
    /// Hedged attempts made (after the first of a call;
    /// `ChannelBuilder::hedge`).
    pub hedges: u64,
}

/// One replica behind a channel and its connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// What tells it apart (`pid 1234` on this host, else its addresses).
    pub key: String,
    /// Its addresses, as discovery listed them.
    pub addresses: Vec<String>,
    /// `ready` (takes calls), `ejected` (connected, but its calls failed
    /// too often in a row), `idle` (no connection yet), `connecting`,
    /// `draining` (its server is shutting down) or `failed` (the last
    /// attempt failed).
    pub state: String,
    /// The id of its connection in [`Snapshot::connections`], if one is
    /// open.
    pub connection: Option<u64>,
    /// The transport its connection uses, and why.
    pub transport: Option<String>,
    /// Why that transport.
    pub reason: Option<String>,
    /// Calls in flight on it now.
    pub in_flight: u64,
    /// Calls started on its current connection.
    pub calls_started: u64,
    /// The peak-sensitive moving average of its unary call latency, in
    /// microseconds, as [`Balance::PeakEwma`](crate::Balance::PeakEwma)
    /// weighs it.
    pub latency_ewma_us: Option<f64>,
    /// How often it was ejected for failing call after call.
    pub ejections: u32,
    /// The services its health service reports NOT_SERVING (`""`: the
    /// server as a whole): it gets no calls of them while others serve.
    pub not_serving: Vec<String>,
    /// How much longer it stays ejected, in milliseconds, if it is.
    pub ejected_for_ms: Option<u64>,
    /// Why the last attempt to connect failed, until one succeeds.
    pub last_error: Option<String>,
}

/// The layers of one server or channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerStackInfo {
    /// `server` or `client` (a channel).
    pub side: String,
    /// The server's services, or the channel's target.
    pub owner: String,
    /// Its layers, outermost first.
    pub layers: Vec<LayerInfo>,
}

/// One layer and how often it answered a call itself instead of calling on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// The layer's name.
    pub name: String,
    /// Calls it refused (answered with an error without calling on).
    pub rejected: u64,
}

/// The process the snapshot describes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process name.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Host name.
    pub hostname: String,
    /// Kernel boot id.
    pub boot_id: String,
    /// Machine id (empty if unknown).
    pub machine_id: String,
    /// IPC namespace inode.
    pub ipc_ns: u64,
    /// Network namespace inode.
    pub net_ns: u64,
    /// When switchyard started recording in this process, ms since the epoch.
    pub started_unix_ms: u64,
    /// The switchyard version.
    pub version: String,
}

/// A service and its methods.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Service name.
    pub name: String,
    /// Methods in declaration order.
    pub methods: Vec<MethodInfo>,
}

/// A method of a served service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodInfo {
    /// Method name.
    pub name: String,
    /// Method id (FNV-1a 32 of `Service.method`).
    pub id: u32,
    /// Whether it is one-way.
    pub oneway: bool,
    /// Signature text.
    pub signature: String,
}

/// An address the process listens on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerInfo {
    /// The URL (`unix:///...`, `tcp://...`).
    pub url: String,
    /// The transport.
    pub transport: String,
    /// What the listener did with connection attempts, where it counts
    /// them (QUIC: `retried`, `ignored_at_limit`, `ignored_per_address`,
    /// `handshakes_started`, `handshakes_timed_out`); only those that
    /// happened. (Always serialized: the snapshot also travels as
    /// bincode, which has no optional fields.)
    #[serde(default)]
    pub attempts: BTreeMap<String, u64>,
}

/// One connection, from this process's side.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Process-unique id.
    pub id: u64,
    /// `client` (this process connected) or `server` (it accepted).
    pub role: String,
    /// `open`, `draining` or `closed`.
    pub state: String,
    /// The transport (lower-case name).
    pub transport: String,
    /// Why the transport was chosen.
    pub reason: String,
    /// Alternatives rejected, and why.
    pub rejected: Vec<Rejected>,
    /// The other end.
    pub peer: PeerInfo,
    /// When it opened, ms since the epoch.
    pub opened_unix_ms: u64,
    /// When it closed, if it did.
    pub closed_unix_ms: Option<u64>,
    /// Calls started.
    pub calls_started: u64,
    /// Calls that succeeded.
    pub calls_succeeded: u64,
    /// Calls that failed (any status but OK).
    pub calls_failed: u64,
    /// Bytes this side sent.
    pub bytes_sent: u64,
    /// Bytes this side received.
    pub bytes_received: u64,
    /// Call latency on this connection.
    pub latency: Latency,
    /// The most recent events, oldest first (bounded).
    pub events: Vec<Event>,
    /// What went over the mmap track (bodies above the bulk threshold, as
    /// sealed memory-mapped regions beside the ring): on shared-memory
    /// connections only. Included in `bytes_sent` and `bytes_received`.
    #[serde(default)]
    pub mmap: Option<MmapTrack>,
    /// The streams of this connection's calls.
    #[serde(default)]
    pub streams: StreamsInfo,
    /// Whether this side compresses what it sends, why, and what
    /// compression moved both ways.
    #[serde(default)]
    pub compression: CompressionInfo,
}

/// A connection's compression: this side's choice for what it sends, and
/// the payloads compressed and decompressed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompressionInfo {
    /// Whether this side compresses what it sends.
    pub on: bool,
    /// Why (or why not), e.g. "zstd level 1 for payloads of 1024 bytes or
    /// more: tcp to another host".
    pub reason: String,
    /// What it moved.
    pub moved: CompressionTrack,
}

/// Payloads compressed and decompressed, and their bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionTrack {
    /// Payloads sent compressed.
    pub payloads_sent: u64,
    /// Their bytes before compression.
    pub raw_bytes_sent: u64,
    /// Their bytes on the wire.
    pub wire_bytes_sent: u64,
    /// Payloads big enough to compress that did not shrink by a sixteenth
    /// and went as they were.
    pub incompressible: u64,
    /// Compressed payloads received.
    pub payloads_received: u64,
    /// Their bytes on the wire.
    pub wire_bytes_received: u64,
    /// Their bytes after decompression.
    pub raw_bytes_received: u64,
}

impl CompressionTrack {
    /// Bytes compression kept off the wire, both ways.
    pub fn saved(&self) -> u64 {
        self.raw_bytes_sent.saturating_sub(self.wire_bytes_sent)
            + self
                .raw_bytes_received
                .saturating_sub(self.wire_bytes_received)
    }

    /// Raw bytes per wire byte of what was sent compressed (0 if nothing).
    pub fn ratio_sent(&self) -> f64 {
        if self.wire_bytes_sent == 0 {
            0.0
        } else {
            self.raw_bytes_sent as f64 / self.wire_bytes_sent as f64
        }
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Self) {
        self.payloads_sent += other.payloads_sent;
        self.raw_bytes_sent += other.raw_bytes_sent;
        self.wire_bytes_sent += other.wire_bytes_sent;
        self.incompressible += other.incompressible;
        self.payloads_received += other.payloads_received;
        self.wire_bytes_received += other.wire_bytes_received;
        self.raw_bytes_received += other.raw_bytes_received;
    }

    /// The counts of `counters` now.
    pub(crate) fn read(counters: &crate::protocol::compress::CompressionCounters) -> Self {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Self {
            payloads_sent: load(&counters.compressed),
            raw_bytes_sent: load(&counters.sent_raw),
            wire_bytes_sent: load(&counters.sent_wire),
            incompressible: load(&counters.incompressible),
            payloads_received: load(&counters.inflated),
            wire_bytes_received: load(&counters.received_wire),
            raw_bytes_received: load(&counters.received_raw),
        }
    }
}

/// The streams of a connection: open now, waiting for credit now, and
/// the messages they moved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamsInfo {
    /// Streaming calls open now.
    pub open: u64,
    /// Of them, how many wait for the peer's credit now (their reader is
    /// slower than their sender).
    pub stalled: u64,
    /// Stream messages sent.
    pub messages_sent: u64,
    /// Stream messages received.
    pub messages_received: u64,
}

/// Bodies a shared-memory connection moved as memory-mapped regions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmapTrack {
    /// Bodies sent that way.
    pub bodies_sent: u64,
    /// Bodies received that way.
    pub bodies_received: u64,
    /// Their bytes, sent.
    pub bytes_sent: u64,
    /// Their bytes, received.
    pub bytes_received: u64,
    /// Of the bodies sent, those that went through the sender's
    /// shared-memory pool (segments mapped once and reused).
    #[serde(default)]
    pub pool_bodies_sent: u64,
    /// Bodies sent as a memfd of their own because the pool could not take
    /// them (larger than its limit, or no memory for a segment).
    #[serde(default)]
    pub pool_fallbacks: u64,
    /// Of the pooled bodies sent, those sent from a loan
    /// ([`Loan`](crate::Loan)): written in place by the caller, not copied.
    #[serde(default)]
    pub pool_loaned_bodies: u64,
    /// The peer's pooled bodies are read in place on this side, not copied
    /// out (`shm_read_in_place`, a peer running as this user).
    #[serde(default)]
    pub reads_in_place: bool,
    /// Bytes of the sending pools holding bodies the peer has not copied
    /// out yet (0 once the connections are closed).
    #[serde(default)]
    pub pool_in_use_bytes: u64,
    /// Bytes of shared memory the sending pools hold.
    #[serde(default)]
    pub pool_held_bytes: u64,
}

/// A transport not chosen, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The transport.
    pub transport: String,
    /// Why not.
    pub why: String,
}

/// The other end of a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its address as a URL.
    pub addr: String,
    /// Its pid: the kernel's word where available, else what it announced.
    pub pid: Option<u32>,
    /// Its uid, where the kernel vouches for it.
    pub uid: Option<u32>,
    /// Its process name, as announced in its hello.
    pub process: String,
    /// Its host name, as announced.
    pub hostname: String,
    /// How it relates to this host: `same host, same IPC namespace`, ...
    pub locality: String,
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Calls measured.
    pub count: u64,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
}

/// Something that happened to a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, ms since the epoch.
    pub at_unix_ms: u64,
    /// What: `connected`, `accepted`, `goaway`, `closed`, `peer died`,
    /// `protocol error`, `upgraded`, `fell back`.
    pub kind: String,
    /// Details.
    pub detail: String,
}

/// Counters and latency of one method over one transport in one role.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MethodStats {
    /// Service name.
    pub service: String,
    /// Method name.
    pub method: String,
    /// Transport (lower-case name).
    pub transport: String,
    /// `client` or `server`.
    pub role: String,
    /// Calls finished (succeeded or failed).
    pub calls: u64,
    /// Calls that ended with each non-OK status, by gRPC code name.
    pub errors: BTreeMap<String, u64>,
    /// Latency percentiles.
    pub latency: Latency,
    /// Cumulative histogram: (upper bound in seconds, calls at or below).
    pub histogram: Vec<(f64, u64)>,
    /// Sum of latencies, seconds.
    pub latency_sum_seconds: f64,
    /// Bytes sent by this side for these calls.
    pub bytes_sent: u64,
    /// Bytes received by this side for these calls.
    pub bytes_received: u64,
    /// Stream messages this side sent in these calls.
    #[serde(default)]
    pub stream_messages_sent: u64,
    /// Stream messages this side received in these calls.
    #[serde(default)]
    pub stream_messages_received: u64,
}
