//! The server: [`ServerBuilder`] collects services and listeners,
//! [`ServerHandle`] runs them, publishes them in the local registry, and
//! shuts down gracefully.

pub(crate) mod connection;

#[cfg(target_os = "linux")]
pub(crate) mod queue;
#[cfg(feature = "quic")]
mod quic;
pub(crate) mod router;
pub(crate) mod slots;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use crate::discovery::{Entry, PublishGuard, Registry};
use crate::protocol::frame::{DEFAULT_FRAME_LIMIT, MAX_FRAME_LIMIT};
use crate::protocol::metadata::MetadataLimits;
use crate::protocol::status::Status;
use crate::service::Service;
use crate::transport::intake::{
    DEFAULT_PARTIAL_BUDGET, FrameDeadline, IntakeLimits, PartialBudget,
};
use crate::transport::tcp::TcpListener;
use crate::transport::unix::UnixListener;
use crate::transport::{Endpoint, Link, Listener};

pub(crate) use router::Router;

pub(crate) use crate::driver::Phase;

/// How long a server waits without a frame before it pings a client, by
/// default (gRPC servers' `keepalive_time`).
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2 * 60 * 60);

#[derive(Clone, Debug)]
pub(crate) struct ServerConfig {
    pub(crate) frame_limit: u32,
    pub(crate) max_in_flight: usize,
    pub(crate) handshake_timeout: Duration,
    /// Shared memory: the longest the server spins on an empty ring.
    pub(crate) shm_spin: Option<Duration>,
    /// Shared memory: bodies above this go as bulk regions.
    pub(crate) bulk_threshold: Option<usize>,
    pub(crate) pool_limit: Option<usize>,
    /// Shared memory: read clients' pooled bodies in place.
    pub(crate) read_in_place: Option<bool>,
    /// How fast one connection may cancel calls.
    pub(crate) cancel_rate: crate::protocol::session::cancel_budget::CancelRate,
    /// Keepalive pings and the idle timeout.
    pub(crate) timers: crate::protocol::session::Timers,
    /// Whether the introspection service answers over TCP and QUIC (and to
    /// local peers of another user); off by default.
    pub(crate) remote_introspection: bool,
    /// How much request metadata one call may carry.
    pub(crate) metadata_limits: MetadataLimits,
    /// Which settings set the frame limits, for messages.
    pub(crate) knobs: crate::session::LimitKnobs,
    /// How long a frame may take to arrive once started (Unix, TCP, QUIC).
    pub(crate) frame_deadline: Option<FrameDeadline>,
    /// The bytes all connections may hold of partial frames beyond what
    /// each holds freely.
    pub(crate) partial_budget: usize,
    /// The most connections kept (`None`: from `RLIMIT_NOFILE`).
    pub(crate) max_connections: Option<usize>,
    /// Messages a client may send on a stream before it is granted more.
    pub(crate) stream_window: u32,
    /// How replies are compressed.
    pub(crate) compression: crate::protocol::compress::Compression,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            frame_limit: DEFAULT_FRAME_LIMIT,
            max_in_flight: 1024,
            stream_window: crate::streaming::DEFAULT_STREAM_WINDOW,
            compression: crate::protocol::compress::Compression::auto(),
            handshake_timeout: Duration::from_secs(5),
            shm_spin: None,
            bulk_threshold: None,
            pool_limit: None,
            read_in_place: None,
            cancel_rate: crate::protocol::session::cancel_budget::CancelRate::default(),
            // gRPC servers' defaults: a Ping after 2 h of silence, 20 s
            // for the answer; no idle timeout.
            timers: crate::protocol::session::Timers {
                keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
                ..crate::protocol::session::Timers::default()
            },
            remote_introspection: false,
            metadata_limits: MetadataLimits::default(),
            knobs: crate::session::LimitKnobs::SERVER,
            frame_deadline: Some(FrameDeadline::default()),
            partial_budget: DEFAULT_PARTIAL_BUDGET,
            max_connections: None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct ServerShared {
    pub(crate) router: Router,
    pub(crate) config: ServerConfig,
    /// (service, queue name) of the message queues this server drains.
    pub(crate) queues: Vec<(String, String)>,
    /// Where it listens, once every listener is bound (told in the hello).
    pub(crate) endpoints: std::sync::OnceLock<Vec<Endpoint>>,
    /// What every connection's receiver holds partial frames under.
    pub(crate) intake: IntakeLimits,
    /// Its connections, capped.
    pub(crate) slots: Arc<slots::Slots>,
    /// What every call runs through before its handler.
    pub(crate) layers: crate::layers::Layers,
}

#[derive(Clone, Debug)]
enum UnixSetting {
    Auto,
    Path(PathBuf),
    Off,
}

/// Collects services and settings; [`start`](Self::start) runs them.
#[derive(Debug)]
pub struct ServerBuilder {
    router: Router,
    errors: Vec<Status>,
    names: Vec<String>,
    publish: bool,
    unix: UnixSetting,
    tcp: Option<String>,
    #[cfg(feature = "quic")]
    quic: quic::QuicSetting,
    config: ServerConfig,
    grace: Duration,
    runtime_dir: Option<PathBuf>,
    introspection: bool,
    health: bool,
    message_queues: bool,
    remove_queues_on_shutdown: bool,
    require_queues: bool,
    debug_addr: Option<String>,
    layers: crate::layers::LayerList,
}

/// Entry point: `Server::builder()`.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with defaults: a Unix socket in the runtime directory,
    /// published under each service's name; no TCP; 1024 calls in flight per
    /// connection; 16 MiB frames; 30 s grace on shutdown.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            router: Router::default(),
            errors: Vec::new(),
            names: Vec::new(),
            publish: true,
            unix: UnixSetting::Auto,
            tcp: None,
            #[cfg(feature = "quic")]
            quic: quic::QuicSetting::default(),
            config: ServerConfig::default(),
            grace: Duration::from_secs(30),
            runtime_dir: None,
            introspection: true,
            health: true,
            message_queues: true,
            remove_queues_on_shutdown: false,
            require_queues: false,
            debug_addr: None,
            layers: crate::layers::LayerList::default(),
        }
    }
}

static SOCKET_SEQ: AtomicU64 = AtomicU64::new(0);

impl ServerBuilder {
    /// Adds a service (a generated `FooServer`). Adding two services with
    /// the same name, or whose method ids collide, makes `start` fail.
    pub fn add_service<S: Service>(mut self, service: S) -> Self {
        if let Err(status) = self.router.add(Arc::new(service)) {
            self.errors.push(status);
        }
        self
    }

    /// Runs every call through `layer` before its handler, after the layers
    /// added before it (the first added is the outermost); see
    /// [`layers`](crate::layers). The introspection service that
    /// `switchyard inspect` reads is not layered: it answers only local
    /// callers of the server's own user.
    pub fn layer<L: crate::layers::Layer>(mut self, layer: L) -> Self {
        self.layers.push(Arc::new(layer));
        self
    }

    /// Also publishes the server under `name` (services are always published
    /// under their own names, lower-cased).
    pub fn publish(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }

    /// Publishes nothing in the registry: reachable only by address.
    pub fn unpublished(mut self) -> Self {
        self.publish = false;
        self
    }

    /// Listens on this Unix socket path instead of one in the runtime dir.
    pub fn unix_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.unix = UnixSetting::Path(path.into());
        self
    }

    /// Opens no Unix socket.
    pub fn no_unix(mut self) -> Self {
        self.unix = UnixSetting::Off;
        self
    }

    /// Also listens on TCP at `addr` (`"127.0.0.1:0"` picks a free port).
    pub fn tcp(mut self, addr: impl Into<String>) -> Self {
        self.tcp = Some(addr.into());
        self
    }

    /// Calls one connection may have in flight; beyond it calls are answered
    /// with ResourceExhausted.
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.config.max_in_flight = calls;
        self
    }

    /// How many frames of a stream a client may send before the server
    /// grants more (default
    /// [`DEFAULT_STREAM_WINDOW`](crate::streaming::DEFAULT_STREAM_WINDOW),
    /// 64; at least 1; a frame is one message, or a batch of small ones of
    /// at most 16 KiB): a handler that stops reading its stream holds at
    /// most this many frames of it in memory. Streams count against
    /// [`max_in_flight`](Self::max_in_flight) as calls do.
    pub fn stream_window(mut self, frames: u32) -> Self {
        self.config.stream_window = frames.max(1);
        self
    }

    /// How many calls one connection may cancel per second on average
    /// (bursts of twice that pass); a connection that cancels faster is
    /// closed with ResourceExhausted, the defence against "Rapid Reset"
    /// floods. Default 1000.
    pub fn max_cancel_rate(mut self, per_second: u32) -> Self {
        self.config.cancel_rate =
            crate::protocol::session::cancel_budget::CancelRate::per_second(per_second);
        self
    }

    /// Pings a client after `interval` without a frame from it, and closes
    /// the connection when nothing answers within `timeout`: a client whose
    /// link was cut (no FIN or RST ever comes) is dropped within
    /// `interval + timeout` instead of being kept forever. Default, as
    /// gRPC servers: a Ping after 2 h ([`DEFAULT_KEEPALIVE_INTERVAL`]),
    /// 20 s for the answer.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.config.timers.keepalive_interval = Some(interval);
        self.config.timers.keepalive_timeout = timeout;
        self
    }

    /// Lets a connection go once it has had no call in flight for
    /// `timeout`: the client is told with a GoAway, and a call that crosses
    /// it is refused as never started, which the client makes again on a
    /// new connection. Off by default.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.timers.idle_timeout = Some(timeout);
        self
    }

    /// How long a frame may take to arrive once its first byte is in (on
    /// Unix, TCP and QUIC): `base` plus one second for every `min_rate`
    /// bytes its header announces. A frame that misses it ends the
    /// connection (the client gets INVALID_ARGUMENT naming this setting) and
    /// its bytes are freed, so a peer that starts a large frame and stops
    /// cannot pin that memory. Default: 10 s plus 1 s per MiB (a 16 MiB
    /// frame gets 26 s), as Apache's `mod_reqtimeout` gives request bodies
    /// a base time and a minimum rate.
    pub fn frame_timeout(mut self, base: Duration, min_rate: u64) -> Self {
        self.config.frame_deadline = Some(FrameDeadline { base, min_rate });
        self
    }

    /// Turns the frame deadline off ([`frame_timeout`](Self::frame_timeout)):
    /// only for peers you trust.
    pub fn no_frame_timeout(mut self) -> Self {
        self.config.frame_deadline = None;
        self
    }

    /// The bytes all connections together may hold of frames still
    /// arriving, beyond 512 KiB each (64 KiB per QUIC stream) that need no
    /// budget. When it is spent, one connection at a time may still grow
    /// (so some frame always completes); the others stop reading until
    /// bytes are freed, and the peer sees TCP or QUIC flow control. Default
    /// 64 MiB. Memory for partial frames is then at most this, plus one
    /// frame, plus the free part of each connection.
    pub fn partial_frame_budget(mut self, bytes: usize) -> Self {
        self.config.partial_budget = bytes;
        self
    }

    /// The most connections this server keeps at once (default: its
    /// `RLIMIT_NOFILE` less an eighth, at least 64, kept free for listeners,
    /// files and new clients). Past it the connection idle longest is let
    /// go (a GoAway; a call crossing it is made again by the client on a
    /// new connection); with none idle, the new connection is refused with
    /// RESOURCE_EXHAUSTED naming the limit. Running out of descriptors in
    /// accept lets the longest idle connection go too.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.config.max_connections = Some(connections.max(1));
        self
    }

    /// How this server compresses its replies and stream messages
    /// (default [`Compression::auto`](crate::Compression::auto): zstd for
    /// payloads of 1 KiB or more over TCP and QUIC to another host or
    /// network namespace, nothing where bytes move through memory). Each
    /// connection's choice and why are on the debug page.
    pub fn compression(mut self, compression: crate::protocol::compress::Compression) -> Self {
        self.config.compression = compression;
        self
    }

    /// The largest request body accepted (at most 1 GiB).
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.config.frame_limit = bytes.min(MAX_FRAME_LIMIT);
        self
    }

    /// The most request metadata one call may carry: `bytes` of wire form
    /// (keys, values and 6 bytes each; default 16 KiB) in at most `entries`
    /// entries (default 256). A call over either fails with
    /// RESOURCE_EXHAUSTED before its handler runs; the check costs at most
    /// `entries` entries of work however large the frame.
    pub fn max_metadata(mut self, bytes: usize, entries: usize) -> Self {
        self.config.metadata_limits = MetadataLimits {
            max_bytes: bytes,
            max_entries: entries,
        };
        self
    }

    /// On shared memory, the longest a connection spins on an empty ring
    /// before it sleeps (default 50 µs; the budget adapts below it, and
    /// grows past it right after a large body, in proportion to its size:
    /// 4 GB/s, at most 20 times this maximum; zero sleeps at once: the
    /// least CPU, a thread wake-up per call).
    pub fn shm_spin(mut self, max: Duration) -> Self {
        self.config.shm_spin = Some(max);
        self
    }

    /// On shared memory, the response body size above which the body
    /// travels as a memory-mapped bulk region instead of through the ring
    /// (default 256 KiB).
    pub fn bulk_threshold(mut self, bytes: usize) -> Self {
        self.config.bulk_threshold = Some(bytes);
        self
    }

    /// On shared memory, the most memory each connection's pool for large
    /// response bodies may hold (default 128 MiB,
    /// [`DEFAULT_POOL_LIMIT`](crate::transport::shm::DEFAULT_POOL_LIMIT)):
    /// see [`ChannelBuilder::shm_pool_limit`](crate::ChannelBuilder::shm_pool_limit).
    /// Zero: no pool.
    pub fn shm_pool_limit(mut self, bytes: usize) -> Self {
        self.config.pool_limit = Some(bytes);
        self
    }

    /// On shared memory, reads large request bodies in place, in the
    /// client's pool, instead of copying each out (default off): see
    /// [`ChannelBuilder::shm_read_in_place`](crate::ChannelBuilder::shm_read_in_place),
    /// whose warning holds here: only for clients running as this user and
    /// trusted as much as this server's own code.
    pub fn shm_read_in_place(mut self, on: bool) -> Self {
        self.config.read_in_place = Some(on);
        self
    }

    /// How long [`ServerHandle::shutdown`] waits for calls in flight.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Whether to serve the
    /// [`Introspection`](crate::debug::Introspection) service (on by
    /// default), which `switchyard inspect` calls. It shows this process's
    /// connections, peers (pids, uids, process and host names, socket
    /// paths) and counters, so by default it answers only local peers of
    /// this user (Unix socket, shared memory, pipes, in-process links);
    /// see [`remote_introspection`](Self::remote_introspection).
    pub fn introspection(mut self, enabled: bool) -> Self {
        self.introspection = enabled;
        self
    }

    /// Whether to serve the [`Health`](crate::health::Health) service (on
    /// by default): `check` and `watch` per service, set through
    /// [`ServerHandle::health`].
    pub fn health(mut self, enabled: bool) -> Self {
        self.health = enabled;
        self
    }

    /// Also answers introspection calls over TCP and QUIC, and from local
    /// peers of another user (off by default): turn it on only where every
    /// peer that can reach those listeners may read the connection table,
    /// for example behind mutual TLS.
    pub fn remote_introspection(mut self, enabled: bool) -> Self {
        self.config.remote_introspection = enabled;
        self
    }

    /// Serves the debug endpoint (HTML page, JSON, `/metrics`) at `addr`
    /// for the rest of the process's life: a port alone (`9901`) binds
    /// 127.0.0.1, otherwise `host:port`; `0` picks a free port, which
    /// [`ServerHandle::debug_addr`] returns and the registry entries
    /// publish. An address that cannot be bound (malformed, taken) fails
    /// `start` naming the address and the cause. `SWITCHYARD_DEBUG_ADDR`
    /// does the same without code; see `docs/debug-endpoint.md`.
    pub fn debug_addr(mut self, addr: impl Into<String>) -> Self {
        self.debug_addr = Some(addr.into());
        self
    }

    /// Whether services with one-way methods receive them through a POSIX
    /// message queue (on by default, where the system has them): one-way
    /// calls then wait in the kernel while the server restarts.
    pub fn message_queues(mut self, enabled: bool) -> Self {
        self.message_queues = enabled;
        self
    }

    /// Whether [`ServerHandle::shutdown`] removes this server's message
    /// queues for good, discarding any one-way calls still waiting in them
    /// (off by default). By default a graceful stop keeps the queues, so
    /// one-way calls sent while the server restarts wait in the kernel and
    /// are delivered, in order, by the next start. Turn this on for a
    /// service that is being retired; `switchyard services --remove-queue
    /// SERVICE` does the same from the command line.
    pub fn remove_queues_on_shutdown(mut self, remove: bool) -> Self {
        self.remove_queues_on_shutdown = remove;
        self
    }

    /// Whether `start` fails (FailedPrecondition) when a service with
    /// one-way methods cannot have its message queue, for example because
    /// another user made a queue of that name first. Off by default: the
    /// server then starts, logs an error, lists the problem in
    /// [`ServerHandle::queue_problems`], and its one-way calls travel over
    /// connections, without surviving a restart.
    pub fn require_queues(mut self, require: bool) -> Self {
        self.require_queues = require;
        self
    }

    /// The runtime directory for the registry and the default socket.
    pub fn runtime_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.runtime_dir = Some(dir.into());
        self
    }

    /// Binds the listeners, publishes the services, and starts serving.
    pub async fn start(mut self) -> Result<ServerHandle, Status> {
        if let Some(status) = self.errors.into_iter().next() {
            return Err(status);
        }
        #[cfg(feature = "quic")]
        self.quic.check_tcp(self.tcp.as_deref())?;
        // A debug endpoint that was asked for and cannot start fails the
        // start: an operator would otherwise find no endpoint and no why.
        let env_debug = crate::debug::env_endpoint()?;
        let debug_addr = match &self.debug_addr {
            Some(addr) => Some(crate::debug::start_configured(
                addr,
                "ServerBuilder::debug_addr",
            )?),
            None => env_debug,
        };
        // Published names are the user's services, not the introspection one.
        let service_names = self.router.names();
        let service_infos = self.router.infos();
        if self.introspection {
            self.router
                .add(Arc::new(crate::debug::IntrospectionServer::new(
                    crate::debug::ProcessIntrospection,
                )))?;
        }
        let health = crate::health::HealthReporter::new(&service_names);
        if self.health {
            self.router.add(Arc::new(crate::health::HealthServer::new(
                crate::health::HealthService {
                    reporter: health.clone(),
                },
            )))?;
        }
        let needs_registry = self.publish || matches!(self.unix, UnixSetting::Auto);
        let registry = if needs_registry {
            let registry = match &self.runtime_dir {
                Some(dir) => Registry::open(dir),
                None => Registry::open_default(),
            };
            Some(registry.map_err(|err| Status::unavailable(err.to_string()))?)
        } else {
            None
        };
        #[cfg(target_os = "linux")]
        let (opened, missing) = if self.message_queues {
            let root = self
                .runtime_dir
                .clone()
                .unwrap_or_else(crate::discovery::runtime_dir);
            let with_oneway: Vec<(String, bool)> = service_infos
                .iter()
                .map(|s| (s.name.clone(), s.methods.iter().any(|m| m.oneway)))
                .collect();
            queue::open(&root, &with_oneway)
        } else {
            (Vec::new(), Vec::new())
        };
        #[cfg(target_os = "linux")]
        if self.require_queues
            && let Some(missing) = missing.first()
        {
            return Err(Status::failed_precondition(format!(
                "{} has no message queue (ServerBuilder::require_queues): {}",
                missing.service, missing.reason
            )));
        }
        #[cfg(target_os = "linux")]
        let queue_problems: Vec<String> =
            missing.into_iter().map(|m| m.reason.to_string()).collect();
        #[cfg(not(target_os = "linux"))]
        let queue_problems: Vec<String> = Vec::new();
        #[cfg(target_os = "linux")]
        let queue_names = opened
            .iter()
            .map(|q| (q.service.clone(), q.name.clone()))
            .collect();
        #[cfg(not(target_os = "linux"))]
        let queue_names = Vec::new();
        let intake = IntakeLimits {
            deadline: self.config.frame_deadline,
            budget: Some(PartialBudget::new(self.config.partial_budget)),
        };
        let (cap, source) = match self.config.max_connections {
            Some(cap) => (cap, "ServerBuilder::max_connections".to_owned()),
            None => slots::default_cap(),
        };
        let shared = Arc::new(ServerShared {
            router: self.router,
            config: self.config,
            queues: queue_names,
            endpoints: std::sync::OnceLock::new(),
            intake,
            slots: slots::Slots::new(cap, source),
            layers: self
                .layers
                .build(crate::layers::Side::Server, &service_names.join(", ")),
        });
        let (phase, _) = watch::channel(Phase::Serving);
        let (alive, connections_done) = mpsc::channel::<()>(1);
        let mut endpoints = Vec::new();
        let mut unix_path = None;
        let unix_path_wanted = match (&self.unix, &registry) {
            (UnixSetting::Auto, Some(registry)) => {
                let path = registry.socket_path(SOCKET_SEQ.fetch_add(1, Ordering::Relaxed));
                Some((path, Some(registry.runtime_dir())))
            }
            (UnixSetting::Path(path), _) => Some((path.clone(), None)),
            _ => None,
        };
        let mut tasks = Vec::new();
        #[cfg(target_os = "linux")]
        if let Some(registry) = &registry {
            // Served again: no longer a stopped server's kept queue.
            for queue in &opened {
                registry.forget_kept_queue(&queue.service);
            }
        }
        #[cfg(target_os = "linux")]
        let queues = queue::spawn(&shared, opened, &phase);
        if let Some((path, dir)) = unix_path_wanted {
            // In the runtime directory: bound through its checked handle, so a
            // path swapped meanwhile cannot redirect it.
            let bound = match (dir, path.file_name().and_then(|n| n.to_str())) {
                (Some(dir), Some(name)) if cfg!(target_os = "linux") => {
                    UnixListener::bind_at(dir.sockets_fd(), name, &path)
                }
                _ => UnixListener::bind(&path),
            };
            let listener = bound.map_err(|err| {
                Status::unavailable(format!(
                    "could not listen on unix://{}: {err}; pick another path or stop the \
                     process using it",
                    path.display()
                ))
            })?;
            endpoints.push(Endpoint::Unix(path.clone()));
            unix_path = Some(path);
            tasks.push(tokio::spawn(accept_loop(
                listener,
                Arc::clone(&shared),
                phase.subscribe(),
                alive.clone(),
                spawn_local_connection,
            )));
        }
        let mut tcp_addr = None;
        if let Some(addr) = &self.tcp {
            let listener = TcpListener::bind(addr).await.map_err(|err| {
                Status::unavailable(format!(
                    "could not listen on tcp://{addr}: {err}; pick another address or port 0"
                ))
            })?;
            tcp_addr = Some(listener.local_addr());
            endpoints.push(Endpoint::Tcp(listener.local_addr().to_string()));
            tasks.push(tokio::spawn(accept_loop(
                listener,
                Arc::clone(&shared),
                phase.subscribe(),
                alive.clone(),
                spawn_connection,
            )));
        }
        #[cfg(feature = "quic")]
        let mut quic_bound = None;
        #[cfg_attr(not(feature = "quic"), allow(unused_mut))]
        let mut attempt_sources: Vec<(Endpoint, crate::debug::recorder::AttemptSource)> =
            Vec::new();
        #[cfg(feature = "quic")]
        if let Some(bound) = self.quic.bind().await? {
            endpoints.push(bound.endpoint.clone());
            quic_bound = Some((bound.addr, bound.fingerprint));
            let tally = bound.listener.attempt_tally();
            attempt_sources.push((bound.endpoint.clone(), tally));
            tasks.push(tokio::spawn(accept_loop(
                bound.listener,
                Arc::clone(&shared),
                phase.subscribe(),
                alive.clone(),
                spawn_connection,
            )));
        }
        // Before the registry names this server, so every hello lists them.
        let _ = shared.endpoints.set(endpoints.clone());
        let mut published = Vec::new();
        if let (true, Some(registry)) = (self.publish, &registry) {
            let mut names: Vec<String> = service_names.clone();
            names.extend(self.names);
            let mut seen = std::collections::HashSet::new();
            let published_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0);
            for name in names {
                let normalized = crate::discovery::registry::normalize_name(&name)
                    .map_err(|err| Status::invalid_argument(err.to_string()))?;
                if !seen.insert(normalized.clone()) {
                    continue;
                }
                let entry = Entry {
                    name: normalized,
                    pid: crate::sys::pid(),
                    start_time: crate::sys::process_start_time(crate::sys::pid()),
                    boot_id: crate::sys::host_identity().boot_id,
                    ipc_ns: crate::sys::host_identity().ipc_ns,
                    endpoints: endpoints.clone(),
                    unknown_endpoints: Vec::new(),
                    services: service_names.clone(),
                    published_ms,
                    debug: debug_addr.map(crate::debug::endpoint_url),
                };
                published.push(
                    registry
                        .publish(entry)
                        .map_err(|err| Status::unavailable(err.to_string()))?,
                );
            }
        }
        let urls: Vec<String> = endpoints.iter().map(Endpoint::to_string).collect();
        tracing::info!(endpoints = ?urls, services = %shared.router.summary(), "serving");
        let registration = crate::debug::recorder::recorder().server(
            service_infos
                .iter()
                .map(|s| crate::debug::ServiceInfo {
                    name: s.name.clone(),
                    methods: s
                        .methods
                        .iter()
                        .map(|m| crate::debug::MethodInfo {
                            name: m.name.clone(),
                            id: m.id,
                            oneway: m.oneway,
                            signature: m.signature.clone(),
                        })
                        .collect(),
                })
                .collect(),
            endpoints
                .iter()
                .map(|endpoint| {
                    let info = crate::debug::ListenerInfo {
                        url: endpoint.to_string(),
                        transport: endpoint.transport().as_str().to_owned(),
                        attempts: Default::default(),
                    };
                    let source = attempt_sources
                        .iter()
                        .find(|(at, _)| at == endpoint)
                        .map(|(_, source)| Arc::clone(source));
                    (info, source)
                })
                .collect(),
        );
        if let Some(addr) = debug_addr {
            tracing::info!(
                "switchyard debug endpoint for this server: {}",
                crate::debug::endpoint_url(addr)
            );
        }
        Ok(ServerHandle {
            debug_addr,
            shared,
            phase,
            alive: Some(alive),
            connections_done,
            endpoints: urls,
            unix_path,
            tcp_addr,
            #[cfg(feature = "quic")]
            quic: quic_bound,
            published,
            tasks,
            grace: self.grace,
            remove_queues: self.remove_queues_on_shutdown,
            queue_problems,
            registry,
            _registration: registration,
            #[cfg(target_os = "linux")]
            queues,
            health,
            registrations: Vec::new(),
        })
    }
}

/// How long an accept loop waits after running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Starts serving one accepted link.
type Spawn<L> = fn(&Arc<ServerShared>, L, watch::Receiver<Phase>, mpsc::Sender<()>);

async fn accept_loop<L: Listener>(
    mut listener: L,
    shared: Arc<ServerShared>,
    mut phase: watch::Receiver<Phase>,
    alive: mpsc::Sender<()>,
    spawn: Spawn<L::Link>,
) {
    // Failures in a row that were not fd exhaustion: a listener that fails
    // every accept for a reason of its own must not spin a core.
    let mut failures = 0u32;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(link) => {
                    failures = 0;
                    spawn(&shared, link, phase.clone(), alive.clone());
                }
                Err(err) if crate::transport::accept_exhausted(&err) => {
                    // Out of descriptors or memory: let the connection idle
                    // longest go, and wait for some to free.
                    let shed = shared.slots.make_room();
                    tracing::warn!(
                        listener = %listener.local_url(),
                        %err,
                        shed,
                        "accept failed: out of file descriptors or memory; raise RLIMIT_NOFILE \
                         (ulimit -n), lower ServerBuilder::max_connections, or serve fewer \
                         connections"
                    );
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                Err(err) => {
                    // That one connection failed (reset or aborted before
                    // it was accepted, say): drop it and go on at once.
                    tracing::debug!(listener = %listener.local_url(), %err, "dropped a connection that failed while being accepted");
                    failures += 1;
                    if failures.is_multiple_of(1000) {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            },
            _ = phase.changed() => return,
        }
    }
}

/// A connection on the Unix listener: shared memory if it asks for it (see
/// `transport::shm`), else the socket itself.
fn spawn_local_connection(
    shared: &Arc<ServerShared>,
    link: crate::transport::unix::UnixLink,
    phase: watch::Receiver<Phase>,
    alive: mpsc::Sender<()>,
) {
    #[cfg(target_os = "linux")]
    {
        use crate::transport::shm::{Accepted, accept};
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let (stream, peer) = link.into_parts();
            let timeout = shared.config.handshake_timeout;
            match tokio::time::timeout(timeout, accept(stream, peer.clone())).await {
                Ok(Ok(Accepted::Shm(mut shm))) => {
                    if let Some(spin) = shared.config.shm_spin {
                        shm = shm.with_spin(spin);
                    }
                    if let Some(bytes) = shared.config.bulk_threshold {
                        shm = shm.with_bulk_threshold(bytes);
                    }
                    if let Some(bytes) = shared.config.pool_limit {
                        shm = shm.with_pool_limit(bytes);
                    }
                    if let Some(on) = shared.config.read_in_place {
                        shm = shm.with_read_in_place(on);
                    }
                    connection::serve(shared, shm, phase).await;
                }
                Ok(Ok(Accepted::Stream(stream, prefix))) => {
                    let link = crate::transport::unix::UnixLink::from_parts(stream, peer, prefix);
                    connection::serve(shared, link, phase).await;
                }
                Ok(Err(err)) => {
                    tracing::debug!(peer = %peer.addr, %err, "refused a connection's first bytes");
                }
                Err(_) => {
                    tracing::debug!(peer = %peer.addr, "the client sent nothing within {timeout:?}");
                }
            }
            drop(alive);
        });
    }
    #[cfg(not(target_os = "linux"))]
    spawn_connection(shared, link, phase, alive);
}

fn spawn_connection<L: Link>(
    shared: &Arc<ServerShared>,
    link: L,
    phase: watch::Receiver<Phase>,
    alive: mpsc::Sender<()>,
) {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        connection::serve(shared, link, phase).await;
        drop(alive);
    });
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    /// Where this server's debug endpoint listens, if it has one.
    debug_addr: Option<SocketAddr>,
    shared: Arc<ServerShared>,
    phase: watch::Sender<Phase>,
    alive: Option<mpsc::Sender<()>>,
    connections_done: mpsc::Receiver<()>,
    endpoints: Vec<String>,
    unix_path: Option<PathBuf>,
    tcp_addr: Option<SocketAddr>,
    #[cfg(feature = "quic")]
    quic: Option<(SocketAddr, crate::transport::quic::Fingerprint)>,
    published: Vec<PublishGuard>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    grace: Duration,
    /// Whether shutdown removes the queues for good.
    remove_queues: bool,
    /// Services whose one-way calls have no queue, and why.
    queue_problems: Vec<String>,
    /// The runtime directory's registry, if the server uses one.
    registry: Option<Registry>,
    _registration: crate::debug::recorder::ServerRegistration,
    #[cfg(target_os = "linux")]
    queues: Vec<queue::QueueHandle>,
    /// What the health service reports.
    health: crate::health::HealthReporter,
    /// Records in discovery systems, withdrawn when draining starts.
    registrations: Vec<Box<dyn crate::discovery::Registration>>,
}

impl ServerHandle {
    /// Sets what this server's [`Health`](crate::health::Health) service
    /// reports: a service NOT_SERVING while it cannot do its work, say.
    pub fn health(&self) -> crate::health::HealthReporter {
        self.health.clone()
    }

    /// The POSIX message queues one-way calls reach this server through.
    #[cfg(target_os = "linux")]
    pub fn queues(&self) -> Vec<String> {
        self.queues.iter().map(|q| q.name.clone()).collect()
    }

    /// Where the debug endpoint this server asked for
    /// ([`ServerBuilder::debug_addr`] or `SWITCHYARD_DEBUG_ADDR`) listens:
    /// the bound port, so `:0` can be used. It is also published in the
    /// registry entry (`switchyard services` shows it).
    pub fn debug_addr(&self) -> Option<SocketAddr> {
        self.debug_addr
    }

    /// Why services with one-way methods have no message queue (empty when
    /// every one has its queue): their one-way calls travel over
    /// connections and are not kept across a restart. Each is also logged
    /// as an error or warning at start.
    pub fn queue_problems(&self) -> &[String] {
        &self.queue_problems
    }

    /// The URLs the server listens on.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The Unix socket path, if any.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix_path.as_deref()
    }

    /// The TCP address, if any.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The QUIC address, if any.
    #[cfg(feature = "quic")]
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic.map(|(addr, _)| addr)
    }

    /// The SHA-256 fingerprint of the certificate the QUIC listener
    /// presents: what clients pin.
    #[cfg(feature = "quic")]
    pub fn quic_fingerprint(&self) -> Option<crate::transport::quic::Fingerprint> {
        self.quic.map(|(_, fingerprint)| fingerprint)
    }

    /// An address clients can connect to:
    /// `quic://<addr>?pin=<fingerprint>` (an unspecified bind address such
    /// as 0.0.0.0 is given as loopback).
    #[cfg(feature = "quic")]
    pub fn quic_url(&self) -> Option<String> {
        self.quic.map(|(mut addr, fingerprint)| {
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            Endpoint::Quic {
                host_port: addr.to_string(),
                pin: Some(fingerprint.to_string()),
                name: None,
            }
            .to_string()
        })
    }

    /// Withdraws `registration` (say an
    /// [`EtcdRegistration`](crate::discovery::EtcdRegistration)) when this
    /// server shuts down gracefully: after its health turns NOT_SERVING and
    /// before it tells its clients to go away, so no new client finds it
    /// while it drains. Dropped without a graceful shutdown, the record
    /// goes as its discovery system lets it (an etcd lease expires).
    pub fn withdraw_on_shutdown(&mut self, registration: impl crate::discovery::Registration) {
        self.registrations.push(Box::new(registration));
    }

    /// Serves an already-established link (for example one end of
    /// [`memory::pair`](crate::transport::memory::pair)).
    pub fn serve_link<L: Link>(&self, link: L) {
        if let Some(alive) = &self.alive {
            spawn_connection(&self.shared, link, self.phase.subscribe(), alive.clone());
        }
    }

    /// Stops accepting, removes the registry entries, tells every client to
    /// go away, waits up to the grace period for calls in flight, then
    /// closes every connection. Message queues stay for the next start
    /// (clients keep enqueueing one-way calls meanwhile) unless
    /// [`ServerBuilder::remove_queues_on_shutdown`] was set.
    pub async fn shutdown(mut self) {
        // Watchers of its health learn first, and their watches end.
        self.health.shutting_down();
        self.published.clear();
        // Every record at once, all of them within 5 s.
        let withdrawals = futures_util::future::join_all(
            self.registrations
                .drain(..)
                .map(|registration| registration.withdraw()),
        );
        if tokio::time::timeout(Duration::from_secs(5), withdrawals)
            .await
            .is_err()
        {
            tracing::warn!("withdrawing the discovery records took over 5 s; draining anyway");
        }
        let _ = self.phase.send(Phase::Draining);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.alive = None;
        let drained = tokio::time::timeout(self.grace, self.connections_done.recv()).await;
        if drained.is_err() {
            tracing::warn!(grace = ?self.grace, "calls still in flight after the grace period; cancelling them");
        }
        let _ = self.phase.send(Phase::Stopped);
        let _ = self.connections_done.recv().await;
        // Queues stop after the call in hand and stay, with whatever waits
        // in them, for the next start (unless asked to remove them).
        #[cfg(target_os = "linux")]
        for queue in std::mem::take(&mut self.queues) {
            queue
                .close(self.remove_queues, self.registry.as_ref())
                .await;
        }
        tracing::info!("server stopped");
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
        self.shutdown().await;
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.health.shutting_down();
        let _ = self.phase.send(Phase::Stopped);
        for task in &self.tasks {
            task.abort();
        }
    }
}
