//! The client: [`Channel`] (a connection to one server, reconnecting when it
//! breaks) and [`ClientCore`], which the generated `FooClient` types wrap.

mod call;
pub(crate) mod connection;
mod driver;
mod oneway;
#[cfg(target_os = "linux")]
mod shm;
#[cfg(target_os = "linux")]
mod upgrade;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::descriptor::ServiceDescriptor;
use crate::discovery::Registry;
use crate::protocol::frame::DEFAULT_FRAME_LIMIT;
use crate::protocol::hello::Hello;
use crate::protocol::status::{Code, Status};
use crate::select::{self, Endpoint, Forced, Selection, Target, Transport};
use crate::transport::{Link, PeerInfo, tcp, unix};

pub use call::ClientCore;
pub(crate) use connection::{Connection, ConnectionConfig};

/// Configures and opens a [`Channel`].
#[derive(Clone, Debug)]
pub struct ChannelBuilder {
    timeout: Option<Duration>,
    prefer: Option<Transport>,
    connect_timeout: Duration,
    frame_limit: u32,
    max_pending: usize,
    runtime_dir: Option<PathBuf>,
    shm_spin: Option<Duration>,
    bulk_threshold: Option<usize>,
}

impl Default for ChannelBuilder {
    fn default() -> Self {
        Self {
            timeout: None,
            prefer: None,
            connect_timeout: Duration::from_secs(5),
            frame_limit: DEFAULT_FRAME_LIMIT,
            max_pending: 1 << 16,
            runtime_dir: None,
            shm_spin: None,
            bulk_threshold: None,
        }
    }
}

impl ChannelBuilder {
    /// A builder with defaults: no call deadline, transport chosen
    /// automatically, 5 s to connect, 16 MiB frames.
    pub fn new() -> Self {
        Self::default()
    }

    /// The deadline every call gets unless it sets its own.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Demands a transport; connecting fails with a reason if it cannot be
    /// used. Takes precedence over `SWITCHYARD_TRANSPORT`.
    pub fn prefer(mut self, transport: Transport) -> Self {
        self.prefer = Some(transport);
        self
    }

    /// How long connecting and the handshake may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The largest response body accepted (1 byte to 1 GiB).
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.frame_limit = bytes.clamp(1, crate::protocol::frame::MAX_FRAME_LIMIT);
        self
    }

    /// How many calls may wait for responses at once.
    pub fn max_pending(mut self, calls: usize) -> Self {
        self.max_pending = calls.max(1);
        self
    }

    /// On shared memory, the longest a caller polls the ring for its
    /// response before it parks (default 50 µs; the budget adapts below it
    /// to how long responses take). Zero never polls: the least CPU, and a
    /// thread wake-up (tens of µs) on every call.
    pub fn shm_spin(mut self, max: Duration) -> Self {
        self.shm_spin = Some(max);
        self
    }

    /// On shared memory, the request body size above which the body
    /// travels as a memory-mapped bulk region (a sealed memfd, mapped by the
    /// server) instead of through the ring (default 256 KiB).
    pub fn bulk_threshold(mut self, bytes: usize) -> Self {
        self.bulk_threshold = Some(bytes);
        self
    }

    /// The runtime directory whose registry names are looked up in
    /// (default: [`runtime_dir`](crate::discovery::runtime_dir())).
    pub fn runtime_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.runtime_dir = Some(dir.into());
        self
    }

    /// Connects to `target`: a service name published in the local registry
    /// (`"calculator"`), `unix:///path/to.sock` or `tcp://host:port`.
    pub async fn connect(self, target: &str) -> Result<Channel, Status> {
        crate::debug::ensure_from_env();
        let parsed = Target::parse(target)?;
        if let Target::Name(name) = &parsed {
            let forced = self.forced()?;
            if forced.is_none_or(|f| f.transport == Transport::Pipe)
                && let Some(conn) = crate::process::parent_connection_for(name).await?
            {
                return Ok(Channel::from_connection(conn, self));
            }
            if let Some(f) = forced.filter(|f| f.transport == Transport::Pipe) {
                let parent = crate::process::parent().map_or_else(
                    || "this process was not started by a switchyard parent".to_owned(),
                    |p| {
                        format!(
                            "its parent (pid {}) serves [{}]",
                            p.pid,
                            p.services.join(", ")
                        )
                    },
                );
                return Err(Status::failed_precondition(format!(
                    "{}=pipe cannot work for {name:?}: pipes reach only a parent or child                      process, and {parent}",
                    f.source
                )));
            }
        }
        let conn = match open(&self, &parsed).await {
            Ok(conn) => conn,
            Err(status) => match self.queue_standin(&parsed, &status) {
                Some(conn) => conn,
                None => return Err(status),
            },
        };
        Ok(Channel {
            shared: Arc::new(Shared {
                target: Some((target.to_owned(), parsed)),
                builder: self,
                current: Mutex::new(conn),
                reconnect: tokio::sync::Mutex::new(()),
                queue_only: oneway::OnewayRoutes::default(),
            }),
        })
    }

    /// Runs the handshake over a link you opened yourself (for example one
    /// end of [`memory::pair`](crate::transport::memory::pair)). Such a
    /// channel does not reconnect.
    pub async fn connect_link<L: Link>(self, link: L) -> Result<Channel, Status> {
        crate::debug::ensure_from_env();
        let transport = link.transport();
        let selection = Selection {
            transport,
            reason: format!("the caller supplied a {transport} link"),
            rejected: Vec::new(),
        };
        let config = self.connection_config();
        // Shared memory gets its caller-driven reading, whoever made the link.
        let mut slot = Some(link);
        #[cfg(target_os = "linux")]
        if let Some(shm) = (&mut slot as &mut dyn std::any::Any)
            .downcast_mut::<Option<crate::transport::shm::ShmLink>>()
            .and_then(Option::take)
        {
            let conn = Connection::open_shm(shm, selection, &config).await?;
            return Ok(self.channel_over(conn));
        }
        let Some(link) = slot else {
            return Err(Status::internal("the link was taken twice"));
        };
        let conn = Connection::open(link, selection, &config).await?;
        Ok(self.channel_over(conn))
    }

    fn channel_over(self, conn: Arc<Connection>) -> Channel {
        Channel {
            shared: Arc::new(Shared {
                target: None,
                builder: self,
                current: Mutex::new(conn),
                reconnect: tokio::sync::Mutex::new(()),
                queue_only: oneway::OnewayRoutes::default(),
            }),
        }
    }

    /// When no live server publishes `target` but its message queue is
    /// there, a stand-in connection: one-way calls wait in the queue, other
    /// calls try to reconnect.
    fn queue_standin(&self, target: &Target, status: &Status) -> Option<Arc<Connection>> {
        let Target::Name(name) = target else {
            return None;
        };
        if status.code() != Code::NotFound
            || self
                .forced()
                .ok()
                .flatten()
                .is_some_and(|f| f.transport != Transport::MessageQueue)
        {
            return None;
        }
        #[cfg(target_os = "linux")]
        {
            let root = self
                .runtime_dir
                .clone()
                .unwrap_or_else(crate::discovery::runtime_dir);
            let queue = crate::server::queue::queue_name(&root, name);
            crate::transport::mqueue::MqSender::open(&queue).ok()?;
            Some(Connection::placeholder(
                name,
                &queue,
                &self.connection_config(),
            ))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            None
        }
    }

    pub(crate) fn connection_config(&self) -> ConnectionConfig {
        ConnectionConfig {
            frame_limit: self.frame_limit,
            max_pending: self.max_pending,
            handshake_timeout: self.connect_timeout,
            shm_spin: self.shm_spin,
            bulk_threshold: self.bulk_threshold,
        }
    }

    fn forced(&self) -> Result<Option<Forced>, Status> {
        match self.prefer {
            Some(transport) => Ok(Some(Forced {
                transport,
                source: "ChannelBuilder::prefer",
            })),
            None => select::forced_from_env(),
        }
    }
}

/// Resolves, selects and connects.
async fn open(builder: &ChannelBuilder, target: &Target) -> Result<Arc<Connection>, Status> {
    let forced = builder.forced()?;
    let registry_dir = builder
        .runtime_dir
        .clone()
        .unwrap_or_else(crate::discovery::runtime_dir);
    let entry = match target {
        Target::Name(name) => Registry::open(&registry_dir)
            .map_err(|err| Status::unavailable(err.to_string()))?
            .lookup(name)
            .map_err(|err| Status::invalid_argument(err.to_string()))?,
        _ => None,
    };
    let plan = select::plan(target, entry.as_ref(), &registry_dir, forced)?;
    let config = builder.connection_config();
    let timeout = builder.connect_timeout;
    let unreachable = |what: String, err: std::io::Error| {
        Status::unavailable(format!(
            "could not connect to {what}: {err}; is the server running and listening there?"
        ))
    };
    let connected = tokio::time::timeout(timeout, async {
        match &plan.endpoint {
            #[cfg(target_os = "linux")]
            Endpoint::Shm(path) => {
                match crate::transport::shm::connect(path, crate::transport::shm::DEFAULT_CAPACITY)
                    .await
                {
                    Ok(link) => Connection::open_shm(link, plan.selection.clone(), &config).await,
                    Err(err) if forced.is_some() => Err(unreachable(
                        format!("shm over unix://{}", path.display()),
                        err,
                    )),
                    Err(err) => {
                        // Not forced: say why and take the Unix socket.
                        tracing::debug!(%err, "shared memory refused; using the Unix socket");
                        let mut selection = plan.selection.clone();
                        selection.transport = Transport::Unix;
                        selection.rejected.retain(|(t, _)| *t != Transport::Unix);
                        selection.rejected.push((
                            Transport::Shm,
                            format!("the shared-memory set-up failed: {err}"),
                        ));
                        selection.reason = selection.reason.replace(
                            "shared memory is the fastest track",
                            "the Unix socket, since shared memory could not be set up",
                        );
                        let link = unix::connect(path)
                            .await
                            .map_err(|err| unreachable(unix::url(path), err))?;
                        Connection::open(link, selection, &config).await
                    }
                }
            }
            #[cfg(not(target_os = "linux"))]
            Endpoint::Shm(path) => Err(Status::unavailable(format!(
                "shared memory is not available on this platform ({})",
                path.display()
            ))),
            Endpoint::Unix(path) => {
                let link = unix::connect(path)
                    .await
                    .map_err(|err| unreachable(unix::url(path), err))?;
                Connection::open(link, plan.selection.clone(), &config).await
            }
            Endpoint::Tcp(host_port) => {
                let link = tcp::connect(host_port)
                    .await
                    .map_err(|err| unreachable(format!("tcp://{host_port}"), err))?;
                let conn = Connection::open(link, plan.selection.clone(), &config).await?;
                #[cfg(target_os = "linux")]
                if forced.is_none()
                    && let Some(upgraded) = upgrade::to_shm(&conn, &config).await
                {
                    return Ok(upgraded);
                }
                Ok(conn)
            }
        }
    })
    .await
    .map_err(|_| {
        Status::unavailable(format!(
            "connecting to {:?} took longer than {timeout:?}; is the server overloaded or \
             the network down?",
            plan.endpoint
        ))
    })??;
    Ok(connected)
}

/// A connection to one server, shared by every client made from it.
///
/// Cheap to clone; all clones multiplex their calls over one connection.
/// When the connection breaks, calls in flight fail with `Unavailable` and
/// the next call connects again (looking the name up afresh, so a restarted
/// server is found).
#[derive(Clone, Debug)]
pub struct Channel {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    target: Option<(String, Target)>,
    builder: ChannelBuilder,
    current: Mutex<Arc<Connection>>,
    reconnect: tokio::sync::Mutex<()>,
    /// One-way routes used while no server is connected.
    queue_only: oneway::OnewayRoutes,
}

impl Channel {
    /// A channel over an established connection that something else drives
    /// (a peer link); it does not reconnect.
    pub(crate) fn from_connection(conn: Arc<Connection>, builder: ChannelBuilder) -> Self {
        Self {
            shared: Arc::new(Shared {
                target: None,
                builder,
                current: Mutex::new(conn),
                reconnect: tokio::sync::Mutex::new(()),
                queue_only: oneway::OnewayRoutes::default(),
            }),
        }
    }

    /// Connects with default settings; see [`ChannelBuilder::connect`].
    pub async fn connect(target: &str) -> Result<Self, Status> {
        ChannelBuilder::new().connect(target).await
    }

    /// A builder for a channel with non-default settings.
    pub fn builder() -> ChannelBuilder {
        ChannelBuilder::new()
    }

    fn current(&self) -> Arc<Connection> {
        // The lock only guards a pointer swap; a poisoned lock still holds a
        // valid Arc.
        match self.shared.current.lock() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The connection to use for a call: the current one, or a new one if
    /// it broke.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>, Status> {
        let conn = self.current();
        if conn.is_usable() {
            return Ok(conn);
        }
        let Some((target, parsed)) = &self.shared.target else {
            return Err(conn
                .unusable_reason()
                .unwrap_or_else(|| Status::unavailable("the connection is closed")));
        };
        let _one_at_a_time = self.shared.reconnect.lock().await;
        let conn = self.current();
        if conn.is_usable() {
            return Ok(conn);
        }
        let fresh = open(&self.shared.builder, parsed).await.map_err(|status| {
            // This channel reached a server before: one that is gone or
            // restarting is a transient condition (UNAVAILABLE, as gRPC
            // reports it, and what retry policies retry), even where a
            // first connect to the same name says NOT_FOUND.
            let code = match status.code() {
                Code::NotFound => Code::Unavailable,
                code => code,
            };
            Status::new(
                code,
                format!("reconnecting to {target}: {}", status.message()),
            )
        })?;
        tracing::debug!(%target, "reconnected");
        fresh.stats.event(
            "reconnected",
            format!(
                "replaces connection #{}: {}",
                conn.stats.id(),
                conn.unusable_reason()
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            ),
        );
        match self.shared.current.lock() {
            Ok(mut guard) => *guard = Arc::clone(&fresh),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&fresh),
        }
        Ok(fresh)
    }

    /// Which transport the current connection uses, and why.
    pub fn selection(&self) -> Selection {
        self.current().selection.clone()
    }

    /// What the kernel or transport says about the server.
    pub fn peer(&self) -> PeerInfo {
        self.current().peer.clone()
    }

    /// The server's hello: its process, host identity, limits and services.
    pub fn server_hello(&self) -> Hello {
        self.current().peer_hello.clone()
    }

    /// Whether the server serves `service`.
    pub fn serves(&self, service: &ServiceDescriptor) -> bool {
        self.current().peer_hello.service(service.name).is_some()
    }

    /// The override in force for this channel, if any.
    pub(crate) fn forced(&self) -> Option<Forced> {
        self.shared.builder.forced().ok().flatten()
    }

    /// How one-way calls of `service` leave this process, and why: through
    /// the server's message queue on the same host, else over the
    /// connection.
    pub fn oneway_selection(&self, service: &'static ServiceDescriptor) -> Selection {
        let (route, transport) = self.oneway_route(service);
        oneway::selection(&route, transport)
    }

    /// The one-way route for `service`: the current connection's, or, when
    /// no server is connected, the queue alone.
    pub(crate) fn oneway_route(
        &self,
        service: &'static ServiceDescriptor,
    ) -> (oneway::OnewayRoute, Option<Transport>) {
        let conn = self.current();
        if conn.is_usable() {
            let facts = || conn.server_facts(service.name);
            let route = conn.oneway.route(service, facts, self.forced());
            return (route, Some(conn.selection.transport));
        }
        let facts = || oneway::ServerFacts {
            locality: None,
            uid: None,
            queue: self.standin_queue(service.name),
        };
        (
            self.shared.queue_only.route(service, facts, self.forced()),
            None,
        )
    }

    /// The queue a server of this channel's runtime directory would drain
    /// for `service`.
    fn standin_queue(&self, service: &str) -> Option<String> {
        #[cfg(target_os = "linux")]
        {
            let root = self
                .shared
                .builder
                .runtime_dir
                .clone()
                .unwrap_or_else(crate::discovery::runtime_dir);
            Some(crate::server::queue::queue_name(&root, service))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = service;
            None
        }
    }

    /// Forgets a route whose queue went away.
    pub(crate) fn forget_oneway_route(&self, service: &'static ServiceDescriptor) {
        self.current().oneway.forget(service);
        self.shared.queue_only.forget(service);
    }

    /// The default call deadline.
    pub(crate) fn default_timeout(&self) -> Option<Duration> {
        self.shared.builder.timeout
    }
}
