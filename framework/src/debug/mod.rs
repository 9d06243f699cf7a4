//! Introspection: what this process serves and every connection it has,
//! with the transport each chose and why, counters and latency.
//!
//! The runtime records into a process-wide model as calls happen (relaxed
//! atomic counters; nothing on the call path takes a lock). [`snapshot`]
//! reads it; the debug endpoint, `/metrics`, the `Introspection` service and
//! `switchyard inspect` all render that one [`Snapshot`].

mod histogram;
mod html;
mod http;
pub mod model;
mod prometheus;
pub(crate) mod recorder;
pub mod service;
pub mod table;

pub use model::{
    ChannelInfo, ConnectionInfo, Event, Latency, ListenerInfo, MethodInfo, MethodStats, MmapTrack,
    PeerInfo, ProcessInfo, Rejected, ReplicaInfo, ServiceInfo, Snapshot,
};

pub use http::{DEBUG_ADDR_ENV, DebugEndpoint, HTML_PATH, JSON_PATH, METRICS_PATH};
pub(crate) use http::{endpoint_url, ensure_from_env, env_endpoint, start_configured};

pub use service::{
    INTROSPECTION_DESCRIPTOR, Introspection, IntrospectionClient, IntrospectionServer,
    ProcessIntrospection,
};

/// The version of the [`Snapshot`] schema.
pub const SCHEMA_VERSION: u32 = 6;

/// What this process moved over the mmap track so far.
fn mmap_totals() -> MmapTrack {
    #[cfg(target_os = "linux")]
    {
        let moved = crate::transport::shm::bulk_transfers();
        MmapTrack {
            bodies_sent: moved.sent,
            bodies_received: moved.received,
            bytes_sent: moved.bytes_sent,
            bytes_received: moved.bytes_received,
            pool_bodies_sent: moved.pool_sent,
            pool_fallbacks: moved.pool_fallbacks,
            pool_loaned_bodies: moved.pool_loaned,
            reads_in_place: false,
            pool_in_use_bytes: moved.pool_in_use,
            pool_held_bytes: moved.pool_held,
        }
    }
    #[cfg(not(target_os = "linux"))]
    MmapTrack::default()
}

/// The model as it stands now.
pub fn snapshot() -> Snapshot {
    let recorder = recorder::recorder();
    let host = crate::sys::host_identity();
    let (services, listeners) = recorder.services_and_listeners();
    Snapshot {
        schema: SCHEMA_VERSION,
        taken_unix_ms: recorder::now_unix_ms(),
        process: ProcessInfo {
            name: crate::sys::process_name(),
            pid: crate::sys::pid(),
            uid: crate::sys::uid(),
            hostname: host.hostname,
            boot_id: host.boot_id,
            machine_id: host.machine_id,
            ipc_ns: host.ipc_ns,
            net_ns: host.net_ns,
            started_unix_ms: recorder.started_unix_ms,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        services,
        listeners,
        connections: recorder.connections(),
        methods: recorder.method_stats(),
        mmap: mmap_totals(),
        layers: crate::layers::stack_snapshot(),
        compression: recorder.compression_totals(),
        channels: crate::client::channels_snapshot(),
    }
}

/// `snapshot` as the HTML page the debug endpoint serves.
pub fn render_html(snapshot: &Snapshot) -> String {
    html::render(snapshot)
}

/// `snapshot` as the JSON the debug endpoint serves.
pub fn render_json(snapshot: &Snapshot) -> String {
    // A Snapshot holds only strings, numbers and maps with string keys.
    serde_json::to_string_pretty(snapshot).unwrap_or_default()
}

/// `snapshot` as the Prometheus text `/metrics` serves.
pub fn render_prometheus(snapshot: &Snapshot) -> String {
    prometheus::render(snapshot)
}
