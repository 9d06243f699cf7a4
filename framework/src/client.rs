//! The client: [`Channel`] (a connection to one server, reconnecting when it
//! breaks) and [`ClientCore`], which the generated `FooClient` types wrap.

mod backoff;
pub(crate) mod balance;
mod call;
pub(crate) mod connection;
mod driver;
mod oneway;
mod open;
pub(crate) mod outlier;
mod polled;
#[cfg(feature = "quic")]
mod quic;
mod replicas;
mod response_metadata;
mod retry;
mod stream_call;
#[cfg(target_os = "linux")]
mod upgrade;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::time::Instant;

use crate::descriptor::{MethodDescriptor, ServiceDescriptor};
use crate::discovery::Resolver;
use crate::protocol::frame::DEFAULT_FRAME_LIMIT;
use crate::protocol::hello::Hello;
use crate::protocol::status::{Code, Status};
use crate::select::{self, Decision, Forced, HostFacts, Known, Selection, Target, Transport};
use crate::transport::{Link, PeerInfo};
use replicas::ReplicaSet;

pub use backoff::Backoff;
pub use balance::Balance;
pub use call::ClientCore;
pub(crate) use connection::{Connection, ConnectionConfig};
pub use outlier::OutlierEjection;
pub use response_metadata::with_response_metadata;
pub use retry::{HedgePolicy, RetryBudget, RetryPolicy};

/// Configures and opens a [`Channel`].
#[derive(Clone, Debug)]
pub struct ChannelBuilder {
    timeout: Option<Duration>,
    prefer: Option<Transport>,
    connect_timeout: Duration,
    frame_limit: u32,
    metadata_limits: crate::protocol::metadata::MetadataLimits,
    max_pending: usize,
    runtime_dir: Option<PathBuf>,
    shm_spin: Option<Duration>,
    timers: crate::protocol::session::Timers,
    bulk_threshold: Option<usize>,
    pool_limit: Option<usize>,
    read_in_place: Option<bool>,
    resolver: Option<Arc<dyn Resolver>>,
    discovery_file: Option<PathBuf>,
    attempt_timeout: Duration,
    backoff: Backoff,
    queue_full_wait: Duration,
    stream_window: u32,
    layers: crate::layers::LayerList,
    compression: crate::protocol::compress::Compression,
    balance: Balance,
    /// Spread calls over the replicas on this host while one is ready.
    prefer_local: bool,
    resolve_interval: Duration,
    retry: RetryPolicy,
    retry_budget: RetryBudget,
    hedge: Option<HedgePolicy>,
    /// Per method (`Service.method`) or service (`Service`): the retry
    /// policy that overrides `retry`, idempotent or not.
    method_retry: std::collections::HashMap<String, RetryPolicy>,
    /// The same for hedging.
    method_hedge: std::collections::HashMap<String, HedgePolicy>,
    ejection: OutlierEjection,
    #[cfg(feature = "quic")]
    quic: quic::QuicSettings,
}

/// How often a channel looks its name up again by default, to follow
/// replicas that come and go.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest time between two lookups a resolver's watch
/// ([`Resolver::changed`]) asks for.
const MIN_CHANGE_GAP: Duration = Duration::from_millis(20);

/// How long a one-way call with no deadline waits for room in a full
/// message queue, by default.
pub const DEFAULT_QUEUE_FULL_WAIT: Duration = Duration::from_secs(10);

impl Default for ChannelBuilder {
    fn default() -> Self {
        Self {
            timeout: None,
            prefer: None,
            connect_timeout: Duration::from_secs(5),
            frame_limit: DEFAULT_FRAME_LIMIT,
            metadata_limits: crate::protocol::metadata::MetadataLimits::default(),
            max_pending: 1 << 16,
            runtime_dir: None,
            shm_spin: None,
            timers: crate::protocol::session::Timers::default(),
            bulk_threshold: None,
            pool_limit: None,
            read_in_place: None,
            resolver: None,
            discovery_file: None,
            attempt_timeout: open::DEFAULT_ATTEMPT_TIMEOUT,
            backoff: Backoff::default(),
            queue_full_wait: DEFAULT_QUEUE_FULL_WAIT,
            stream_window: crate::streaming::DEFAULT_STREAM_WINDOW,
            layers: crate::layers::LayerList::default(),
            compression: crate::protocol::compress::Compression::auto(),
            balance: Balance::default(),
            prefer_local: false,
            resolve_interval: DEFAULT_RESOLVE_INTERVAL,
            retry: RetryPolicy::default(),
            retry_budget: RetryBudget::default(),
            hedge: None,
            method_retry: Default::default(),
            method_hedge: Default::default(),
            ejection: OutlierEjection::default(),
            #[cfg(feature = "quic")]
            quic: quic::QuicSettings::default(),
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

    /// How long a one-way call that has no deadline waits for room when the
    /// server's message queue is full (default
    /// [`DEFAULT_QUEUE_FULL_WAIT`], 10 s), before it fails with
    /// ResourceExhausted. A call with a deadline waits until its deadline
    /// instead (then DeadlineExceeded); `try_` methods never wait.
    pub fn queue_full_wait(mut self, wait: Duration) -> Self {
        self.queue_full_wait = wait;
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

    /// How many frames of a stream the server may send this client
    /// before the client grants more (default
    /// [`DEFAULT_STREAM_WINDOW`](crate::streaming::DEFAULT_STREAM_WINDOW),
    /// 64; at least 1). A frame is one message, or a batch of small ones
    /// (at most 16 KiB of them). A stream its reader stops reading holds at
    /// most this many frames in memory; more lets a fast stream run with
    /// fewer pauses.
    pub fn stream_window(mut self, frames: u32) -> Self {
        self.stream_window = frames.max(1);
        self
    }

    /// How this client compresses what it sends (default
    /// [`Compression::auto`](crate::Compression::auto): zstd for payloads
    /// of 1 KiB or more over TCP and QUIC to another host or network
    /// namespace, nothing where bytes move through memory). The server
    /// decides the same for its replies; each connection's choice and why
    /// are on the debug page. `#[switchyard(compress = false)]` exempts a
    /// method whose payloads are compressed already.
    pub fn compression(mut self, compression: crate::protocol::compress::Compression) -> Self {
        self.compression = compression;
        self
    }

    /// How calls are spread over the replicas behind the name this channel
    /// connects to (default [`Balance::PickFirst`]: one connection, to the
    /// first replica that answers). Each replica gets its own connection
    /// and transport (shared memory to one on this host, QUIC or TCP to
    /// others); [`Channel::replicas`] and the debug endpoint show them.
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// Sends calls only to replicas on this host (reached over shared
    /// memory, a Unix socket or pipes) while one of them is ready, spread
    /// over those by the [`balance`](Self::balance) policy; the others take
    /// calls when none on this host can (default off: every replica takes
    /// calls). A same-host call costs microseconds, a call to another host
    /// a network round trip. The debug views say which replicas are
    /// preferred and why.
    pub fn prefer_local(mut self, prefer: bool) -> Self {
        self.prefer_local = prefer;
        self
    }

    /// How often the channel looks its name up again (default
    /// [`DEFAULT_RESOLVE_INTERVAL`], 1 s), so that replicas that appear get
    /// calls and replicas that go away get none; it also looks again
    /// whenever no replica it knows answers.
    pub fn resolve_interval(mut self, interval: Duration) -> Self {
        self.resolve_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How calls of methods declared `#[switchyard(idempotent)]` are
    /// retried (default [`RetryPolicy::default`]: up to 3 attempts on
    /// UNAVAILABLE, each retry on another replica when one is ready;
    /// [`RetryPolicy::off`] for none). Other methods are never retried. The
    /// call's deadline bounds every attempt and wait.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Hedges calls of methods declared `#[switchyard(idempotent)]`
    /// instead of retrying them (see [`HedgePolicy`]; off by default): a
    /// slow replica's call is raced by another replica's after
    /// `policy.delay`, and the loser is cancelled.
    pub fn hedge(mut self, policy: HedgePolicy) -> Self {
        self.hedge = Some(policy);
        self
    }

    /// The retry policy of one method (`"Inventory.stock"`) or of every
    /// method of a service (`"Inventory"`), instead of
    /// [`retry`](Self::retry)'s: a method named here is retried whether or
    /// not it is declared `#[switchyard(idempotent)]` (naming it says that
    /// making it twice does no harm), and [`RetryPolicy::off`] turns
    /// retries off for an idempotent one. A method's own entry wins over
    /// its service's. Unary methods only: streams and one-way calls are
    /// never retried.
    pub fn retry_method(mut self, name: impl Into<String>, policy: RetryPolicy) -> Self {
        self.method_retry.insert(name.into(), policy);
        self
    }

    /// Hedges one method (`"Inventory.stock"`) or every method of a
    /// service (`"Inventory"`) with `policy`, whether or not it is declared
    /// idempotent, instead of [`hedge`](Self::hedge)'s. Unary methods only.
    pub fn hedge_method(mut self, name: impl Into<String>, policy: HedgePolicy) -> Self {
        self.method_hedge.insert(name.into(), policy);
        self
    }

    /// The budget that keeps retries from multiplying an outage (default
    /// [`RetryBudget::default`]: a bucket of 10 tokens, 0.1 back per
    /// success; retries stop while half of it is spent).
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.retry_budget = budget;
        self
    }

    /// When a replica whose calls keep failing (UNAVAILABLE, INTERNAL,
    /// UNKNOWN, DATA_LOSS) is left out of picking (default: 5 in a row,
    /// for 10 s, then 20 s, ... up to 5 min; [`OutlierEjection::off`] for
    /// never). The last ready replica is never left out.
    pub fn outlier_ejection(mut self, ejection: OutlierEjection) -> Self {
        self.ejection = ejection;
        self
    }

    /// Runs every call through `layer` before it is made, after the layers
    /// added before it (the first added is the outermost); see
    /// [`layers`](crate::layers).
    pub fn layer<L: crate::layers::Layer>(mut self, layer: L) -> Self {
        self.layers.push(Arc::new(layer));
        self
    }

    /// The largest response body accepted (1 byte to 1 GiB).
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.frame_limit = bytes.clamp(1, crate::protocol::frame::MAX_FRAME_LIMIT);
        self
    }

    /// The most response metadata this client takes from one call when it
    /// reads it ([`with_response_metadata`]):
    /// `bytes` of wire form (default 16 KiB) in at most `entries` entries
    /// (default 256). Over either, the call fails with RESOURCE_EXHAUSTED,
    /// as gRPC fails a call whose headers exceed the client's limit.
    pub fn max_metadata(mut self, bytes: usize, entries: usize) -> Self {
        self.metadata_limits = crate::protocol::metadata::MetadataLimits {
            max_bytes: bytes,
            max_entries: entries,
        };
        self
    }

    /// How many calls may wait for responses at once.
    pub fn max_pending(mut self, calls: usize) -> Self {
        self.max_pending = calls.max(1);
        self
    }

    /// Pings the server after `interval` without a frame from it, and
    /// fails the connection's calls when nothing answers within `timeout`
    /// (a server whose link was cut sends no FIN): they fail within
    /// `interval + timeout` instead of at their deadlines, and calls made
    /// then reconnect. Off by default.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.timers.keepalive_interval = Some(interval);
        self.timers.keepalive_timeout = timeout;
        self
    }

    /// On shared memory, the longest a caller polls the ring for its
    /// response before it parks (default 50 µs; the budget adapts below it
    /// to how long responses take). Right after a large body (a request or
    /// response over about 200 KiB) the caller polls longer, in proportion
    /// to its size (4 GB/s, at most 20 times this maximum), as the server's
    /// part grows with it. Zero never polls: the least CPU, and a thread
    /// wake-up (tens of µs) on every call.
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

    /// On shared memory, the most memory this side's pool for large bodies
    /// may hold (default 128 MiB, [`DEFAULT_POOL_LIMIT`](crate::transport::shm::DEFAULT_POOL_LIMIT)).
    /// Request bodies over the bulk threshold are written into the pool's
    /// segments, which are mapped once and reused; the server copies each
    /// body out and releases its room. A body larger than the limit travels
    /// as a sealed memfd of its own; when the pool is full (the server is
    /// not copying bodies out), requests wait for room. Zero: no pool.
    pub fn shm_pool_limit(mut self, bytes: usize) -> Self {
        self.pool_limit = Some(bytes);
        self
    }

    /// On shared memory, reads large response bodies in place, in the
    /// server's pool, instead of copying each out before decoding it
    /// (default off). A `Bytes` result then points into the server's
    /// shared memory, and the server may reuse that room only once the
    /// result is dropped: hold it no longer than needed (at most 96 MiB
    /// per connection is lent out at once, later bodies are copied; a
    /// server whose pool limit is smaller than what is held waits, and its
    /// replies with it). Only where the server runs as this user (the
    /// kernel vouches for its uid). Turn it on only for servers trusted as
    /// much as this process's own code: a server that writes a body after
    /// sending it changes bytes this process is reading, which can break
    /// what decoding checked (a string's UTF-8, say) and is undefined
    /// behaviour; by default a copy guards against that.
    pub fn shm_read_in_place(mut self, on: bool) -> Self {
        self.read_in_place = Some(on);
        self
    }

    /// The runtime directory whose registry names are looked up in
    /// (default: [`runtime_dir`](crate::discovery::runtime_dir())).
    pub fn runtime_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.runtime_dir = Some(dir.into());
        self
    }

    /// Where names the local registry does not know are looked up (default:
    /// the discovery file, if one is set).
    pub fn resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Where names the local registry does not know are looked up: the
    /// same as [`resolver`](Self::resolver), for a resolver not yet shared
    /// (`.discovery(Etcd::new("http://127.0.0.1:2379")?)`).
    pub fn discovery(self, resolver: impl Resolver + 'static) -> Self {
        self.resolver(Arc::new(resolver))
    }

    /// A static discovery file (TOML, see
    /// [`StaticFile`](crate::discovery::StaticFile)) for names the local
    /// registry does not know (default: the file named by
    /// `SWITCHYARD_DISCOVERY`, if set).
    pub fn discovery_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.discovery_file = Some(path.into());
        self
    }

    /// How long one address may take to answer when a name has others
    /// behind it (default 2 s): e.g. a `quic://` address whose UDP is
    /// blocked before the `tcp://` one.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The delays between reconnect attempts after a connection broke
    /// (default: gRPC's, 1 s × 1.6 per failure up to 120 s, ±20 %).
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Connects to `target`: a service name (`"calculator"`: the local
    /// registry, then the resolver or discovery file), `unix:///path/to.sock`,
    /// `tcp://host:port` or `quic://host:port[?pin=<fingerprint>]`.
    pub async fn connect(self, target: &str) -> Result<Channel, Status> {
        crate::debug::ensure_from_env();
        let parsed = Target::parse(target)?;
        if let Target::Name(_) = &parsed {
            let forced = self.forced()?;
            // Only a connection that may take pipes looks at the parent
            // (whose variable, when malformed, is an error).
            let parent = match forced {
                Some(f) if f.transport != Transport::Pipe => None,
                _ => crate::process::parent_facts()?,
            };
            let facts = HostFacts::of_this_process(parent);
            let decision = select::select(select::Connect {
                target: &parsed,
                known: Known::NotLookedUp,
                facts: &facts,
                forced,
            })?;
            if let Decision::Parent { .. } = decision {
                let conn = crate::process::parent_connection().await?;
                return Ok(Channel::from_connection(conn, self));
            }
        }
        if let Target::Name(name) = &parsed {
            let name = name.clone();
            return self.connect_name(target, parsed, &name).await;
        }
        let conn = open::open(&self, &parsed, None).await?;
        Ok(Channel {
            shared: Shared::new(
                Some((target.to_owned(), parsed)),
                self,
                Arc::clone(&conn),
                ReplicaSet::fixed(conn),
            ),
        })
    }

    /// Connects to the replicas behind `name`: the first that answers
    /// ([`Balance::PickFirst`]), or all of them at once (any other policy;
    /// at least one must answer).
    async fn connect_name(
        self,
        target: &str,
        parsed: Target,
        name: &str,
    ) -> Result<Channel, Status> {
        let found = match open::discover(&self, name).await? {
            Some(found) if !found.replicas.is_empty() => found,
            _ => {
                let status = open::not_found(&self, &parsed, name).await;
                let ejection = self.ejection;
                return match self.queue_standin(&parsed, &status) {
                    Some(conn) => Ok(Channel {
                        shared: Shared::new(
                            Some((target.to_owned(), parsed)),
                            self,
                            conn,
                            ReplicaSet {
                                ejection,
                                ..ReplicaSet::default()
                            },
                        ),
                    }),
                    None => Err(status),
                };
            }
        };
        let mut set = ReplicaSet {
            ejection: self.ejection,
            ..ReplicaSet::default()
        };
        let subchannels = set.follow(found);
        set.changes.clear();
        let mut failures = Vec::new();
        let mut first = None;
        if self.balance.connects_all() && subchannels.len() > 1 {
            let mut attempts = tokio::task::JoinSet::new();
            for (i, sub) in subchannels.iter().enumerate() {
                let (builder, parsed) = (self.clone(), parsed.clone());
                let replica = sub.replica();
                attempts.spawn(async move {
                    let result = match replica {
                        Some(replica) => {
                            open::open_replica(&builder, &parsed, &replica, None).await
                        }
                        None => Err(Status::internal("a replica without an address")),
                    };
                    (i, result)
                });
            }
            let mut results: Vec<_> = attempts.join_all().await;
            results.sort_by_key(|(i, _)| *i);
            for (i, result) in results {
                let sub = &subchannels[i];
                match result {
                    Ok(conn) => {
                        first.get_or_insert_with(|| Arc::clone(&conn));
                        sub.connected(conn);
                    }
                    Err(status) => {
                        sub.failed(&self.backoff, status.clone());
                        failures.push((sub.key.clone(), status));
                    }
                }
            }
        } else {
            for sub in &subchannels {
                let Some(replica) = sub.replica() else {
                    continue;
                };
                match open::open_replica(&self, &parsed, &replica, None).await {
                    Ok(conn) => {
                        sub.connected(Arc::clone(&conn));
                        first = Some(conn);
                        break;
                    }
                    // A replica whose answer fails the peer check (an
                    // impostor, a tampered registry) is not passed over
                    // for the next: that is said, loudly.
                    Err(status) if status.code() == Code::Unauthenticated => return Err(status),
                    Err(status) => {
                        sub.failed(&self.backoff, status.clone());
                        failures.push((sub.key.clone(), status));
                    }
                }
            }
        }
        let Some(conn) = first else {
            return Err(none_answered(name, failures));
        };
        for (key, status) in failures {
            set.note(format!("{key} did not answer: {status}"));
        }
        let shared = Shared::new(Some((target.to_owned(), parsed)), self, conn, set);
        shared.watch_health();
        Shared::follow_in_background(&shared);
        Ok(Channel { shared })
    }

    /// Runs the handshake over a link you opened yourself (for example one
    /// end of [`memory::pair`](crate::transport::memory::pair)). Such a
    /// channel does not reconnect.
    pub async fn connect_link<L: Link>(self, link: L) -> Result<Channel, Status> {
        crate::debug::ensure_from_env();
        let transport = link.transport();
        let selection = select::select(select::Fixed::CallerLink(transport));
        let config = self.connection_config();
        let conn = Connection::open(link, selection, &config).await?;
        Ok(self.channel_over(conn))
    }

    fn channel_over(self, conn: Arc<Connection>) -> Channel {
        Channel {
            shared: Shared::new(None, self, Arc::clone(&conn), ReplicaSet::fixed(conn)),
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
            pool_limit: self.pool_limit,
            read_in_place: self.read_in_place,
            metadata_limits: self.metadata_limits,
            knobs: crate::session::LimitKnobs::CLIENT,
            timers: self.timers,
            compression: self.compression,
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
    /// The replicas behind the target and their connections.
    replicas: Mutex<ReplicaSet>,
    /// Where the policy is between calls.
    picker: balance::Picker,
    /// The retry budget and what retrying did.
    retries: retry::RetryThrottle,
    /// The connection opened last (or the queue stand-in): what the
    /// channel describes when no replica is ready.
    last: Mutex<Arc<Connection>>,
    /// Held while reconnecting; the backoff between failed attempts.
    reconnect: tokio::sync::Mutex<backoff::BackoffState>,
    /// One-way routes used while no server is connected.
    queue_only: oneway::OnewayRoutes,
    /// What every call runs through before it is made.
    layers: crate::layers::Layers,
}

/// Locks a mutex whose value stays valid if a holder panicked (every
/// client-side lock guards such values).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The status when no replica of `name` answered: the one replica's own,
/// or each replica's in turn.
fn none_answered(name: &str, failures: Vec<(String, Status)>) -> Status {
    if failures.len() == 1 {
        return failures
            .into_iter()
            .next()
            .map(|(_, s)| s)
            .unwrap_or_else(|| Status::unavailable(format!("no replica of {name:?} answered")));
    }
    let code = failures
        .first()
        .map_or(Code::Unavailable, |(_, s)| s.code());
    let each: Vec<String> = failures
        .iter()
        .map(|(key, s)| format!("{key}: {}", s.message()))
        .collect();
    Status::new(
        code,
        format!(
            "none of the {} replicas of {name:?} answered ({}); are their servers running?",
            failures.len(),
            each.join("; ")
        ),
    )
}

/// What a call wants of the replica it is given.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Want<'a> {
    /// The service it calls: replicas not serving it are left out.
    pub(crate) service: Option<&'a str>,
    /// A retry's previous connection id: another replica is preferred.
    pub(crate) avoid: Option<u64>,
}

/// The channels to names this process holds, for the debug views.
static CHANNELS: Mutex<Vec<std::sync::Weak<Shared>>> = Mutex::new(Vec::new());

/// Every live channel to a name, as the debug views show them.
pub(crate) fn channels_snapshot() -> Vec<crate::debug::ChannelInfo> {
    let live: Vec<Arc<Shared>> = {
        let mut channels = lock(&CHANNELS);
        channels.retain(|weak| weak.strong_count() > 0);
        channels
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    };
    live.iter().map(|shared| shared.info()).collect()
}

impl Shared {
    fn new(
        target: Option<(String, Target)>,
        builder: ChannelBuilder,
        conn: Arc<Connection>,
        replicas: ReplicaSet,
    ) -> Arc<Self> {
        let owner = match &target {
            Some((name, _)) => name.clone(),
            None => conn.url.clone(),
        };
        let named = matches!(target, Some((_, Target::Name(_))));
        let retries = retry::RetryThrottle::new(builder.retry_budget);
        let shared = Arc::new(Self {
            layers: builder.layers.build(crate::layers::Side::Client, &owner),
            target,
            builder,
            replicas: Mutex::new(replicas),
            picker: balance::Picker::default(),
            retries,
            last: Mutex::new(conn),
            reconnect: tokio::sync::Mutex::new(backoff::BackoffState::default()),
            queue_only: oneway::OnewayRoutes::default(),
        });
        if named {
            let mut channels = lock(&CHANNELS);
            channels.retain(|weak| weak.strong_count() > 0);
            channels.push(Arc::downgrade(&shared));
        }
        shared
    }

    /// What the debug views show of this channel.
    fn info(&self) -> crate::debug::ChannelInfo {
        let set = lock(&self.replicas);
        crate::debug::ChannelInfo {
            target: self
                .target
                .as_ref()
                .map_or_else(|| lock(&self.last).url.clone(), |(t, _)| t.clone()),
            balance: if self.builder.prefer_local {
                format!("{}, preferring replicas on this host", self.builder.balance)
            } else {
                self.builder.balance.to_string()
            },
            source: set.source.clone(),
            discovery_error: set.discovery_error.clone(),
            replicas: set
                .subchannels
                .iter()
                .map(|s| {
                    let mut info = s.info();
                    if self.builder.prefer_local
                        && s.ready().is_some_and(|c| is_local(c.selection.transport))
                        && let Some(reason) = &mut info.reason
                    {
                        reason.push_str(
                            "; preferred: on this host (ChannelBuilder::prefer_local), it takes \
                             the calls while it is ready",
                        );
                    }
                    info
                })
                .collect(),
            changes: set.changes.iter().cloned().collect(),
            skipped: set.skipped.clone(),
            retries: self
                .retries
                .retries
                .load(std::sync::atomic::Ordering::Relaxed),
            retries_throttled: self
                .retries
                .throttled
                .load(std::sync::atomic::Ordering::Relaxed),
            hedges: self
                .retries
                .hedges
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Looks the channel's name up again every resolve interval, for as
    /// long as the channel lives, and connects to new replicas when the
    /// policy wants them all.
    fn follow_in_background(shared: &Arc<Self>) {
        let weak = Arc::downgrade(shared);
        let interval = shared.builder.resolve_interval;
        // A resolver with a watch (etcd) says when to look again; the
        // interval still bounds how stale the replicas can get.
        let watched = match (&shared.target, &shared.builder.resolver) {
            (Some((_, Target::Name(name))), Some(resolver)) => {
                Some((name.clone(), resolver.clone()))
            }
            _ => None,
        };
        tokio::spawn(async move {
            let subscribe = || {
                watched
                    .as_ref()
                    .and_then(|(name, resolver)| resolver.changed(name))
            };
            let mut changed = subscribe();
            let mut looked = Instant::now();
            loop {
                match changed.as_mut() {
                    Some(pending) => {
                        let fired = tokio::select! {
                            () = tokio::time::sleep(interval) => false,
                            () = pending => true,
                        };
                        if fired {
                            // Listening again before the lookup: a change
                            // made while it runs is not missed.
                            changed = subscribe();
                            // However often a resolver says so, at most one
                            // lookup per MIN_CHANGE_GAP.
                            let since = looked.elapsed();
                            if since < MIN_CHANGE_GAP {
                                tokio::time::sleep(MIN_CHANGE_GAP - since).await;
                            }
                        }
                    }
                    None => tokio::time::sleep(interval).await,
                }
                let Some(shared) = weak.upgrade() else { return };
                looked = Instant::now();
                shared.rediscover().await;
                shared.connect_in_background();
                shared.watch_health();
            }
        });
    }

    /// Looks the name up and follows what changed; a failed lookup, or one
    /// that finds nothing, keeps the replicas known and records why.
    async fn rediscover(&self) {
        let Some((_, Target::Name(name))) = &self.target else {
            return;
        };
        let lookup = tokio::time::timeout(
            self.builder.connect_timeout,
            open::discover(&self.builder, name),
        )
        .await;
        let problem = match lookup {
            Ok(Ok(Some(found))) if !found.replicas.is_empty() => {
                lock(&self.replicas).follow(found);
                return;
            }
            Ok(Ok(_)) => format!("{name:?} is no longer listed anywhere"),
            Ok(Err(status)) => format!("looking {name:?} up failed: {status}"),
            Err(_) => format!(
                "looking {name:?} up did not finish within {:?}",
                self.builder.connect_timeout
            ),
        };
        let mut set = lock(&self.replicas);
        if set.discovery_error.as_deref() != Some(problem.as_str()) {
            let kept = set.subchannels.len();
            set.note(format!("{problem}; keeping the {kept} replica(s) known"));
            set.discovery_error = Some(problem);
        }
    }

    /// With more than one replica, watches each ready replica's health
    /// (once per connection), so that picking can leave out those not
    /// serving. A channel to a single replica opens no watch: there is
    /// nothing to pick between, and the watches would take two of its
    /// server's call slots.
    fn watch_health(&self) {
        let subchannels = {
            let set = lock(&self.replicas);
            if set.subchannels.len() < 2 {
                return;
            }
            set.subchannels.clone()
        };
        for sub in subchannels {
            sub.watch_health(&self.builder);
        }
    }

    /// Starts connecting to every replica without a connection that is out
    /// of its backoff, when the policy spreads calls over them all.
    fn connect_in_background(&self) {
        if !self.builder.balance.connects_all() {
            return;
        }
        let Some((_, parsed)) = &self.target else {
            return;
        };
        let subchannels = lock(&self.replicas).subchannels.clone();
        for sub in subchannels {
            let Some(replica) = sub.replica() else {
                continue;
            };
            if !sub.claim_background_connect() {
                continue;
            }
            let (builder, parsed) = (self.builder.clone(), parsed.clone());
            tokio::spawn(async move {
                match open::open_replica(&builder, &parsed, &replica, None).await {
                    Ok(conn) => sub.connected(conn),
                    Err(status) => {
                        tracing::debug!(replica = %sub.key, %status, "connecting to a replica failed");
                        sub.failed(&builder.backoff, status);
                    }
                }
                sub.done_connecting();
            });
        }
    }
}

impl Channel {
    /// A channel over an established connection that something else drives
    /// (a peer link); it does not reconnect.
    pub(crate) fn from_connection(conn: Arc<Connection>, builder: ChannelBuilder) -> Self {
        Self {
            shared: Shared::new(None, builder, Arc::clone(&conn), ReplicaSet::fixed(conn)),
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

    /// The channel's layers.
    pub(crate) fn layers(&self) -> &crate::layers::Layers {
        &self.shared.layers
    }

    /// The connection the channel describes: the first ready replica's,
    /// else the one opened last.
    fn current(&self) -> Arc<Connection> {
        let first_ready = lock(&self.shared.replicas)
            .subchannels
            .iter()
            .find_map(|s| s.ready());
        first_ready.unwrap_or_else(|| Arc::clone(&lock(&self.shared.last)))
    }

    /// Room for a large argument of `len` bytes in the shared-memory pool
    /// of this channel's first ready replica's connection, to fill in place
    /// and pass (frozen): a call over that connection then copies nothing
    /// on this side. On the heap where that connection has no pool. A call
    /// the channel balances onto another replica copies the bytes (with
    /// several replicas, loans pay off with `Balance::PickFirst`). See
    /// [`Loan`](crate::Loan).
    pub fn loan(&self, len: usize) -> crate::Loan {
        crate::Loan::new(self.current().outgoing.spill_to().as_ref(), len)
    }

    /// A ready replica's connection, as the policy picks it among those
    /// serving `want.service`; not the one with the connection id
    /// `want.avoid` when another is ready.
    fn pick(&self, want: Want<'_>) -> Option<Arc<Connection>> {
        let set = lock(&self.shared.replicas);
        if let [only] = set.subchannels.as_slice() {
            return only.ready();
        }
        // Pick-first's common case, without collecting: the first ready
        // replica that serves the call's service and is not ejected.
        let prefer_local = self.shared.builder.prefer_local;
        if self.shared.builder.balance == Balance::PickFirst
            && want.avoid.is_none()
            && !prefer_local
            && let Some(conn) = set.subchannels.iter().find_map(|s| {
                s.ready().filter(|_| {
                    !s.is_ejected() && want.service.is_none_or(|service| s.serves(service))
                })
            })
        {
            return Some(conn);
        }
        let mut ready = set.ready(want.service);
        let avoid = want.avoid;
        drop(set);
        if let Some(avoid) = avoid
            && ready.iter().any(|(_, c)| c.stats.id() != avoid)
        {
            ready.retain(|(_, c)| c.stats.id() != avoid);
        }
        let local = |conn: &Arc<Connection>| is_local(conn.selection.transport);
        if prefer_local
            && ready.iter().any(|(_, c)| local(c))
            && ready.iter().any(|(_, c)| !local(c))
        {
            ready.retain(|(_, c)| local(c));
        }
        let loads: Vec<balance::Load> = ready
            .iter()
            .map(|(_, conn)| replicas::Subchannel::load(conn))
            .collect();
        let i = self
            .shared
            .picker
            .pick(self.shared.builder.balance, &loads)?;
        ready.into_iter().nth(i).map(|(_, conn)| conn)
    }

    /// The connection to use for a call: a ready replica's, as the policy
    /// picks it, or a new one if none is ready. Reconnecting (looking the
    /// name up afresh) is bounded by `deadline` (the call's) and waits out
    /// the reconnect backoff after failures by failing at once.
    ///
    /// For a call of `want.service`, replicas whose health service says
    /// they do not serve it are left out while others do, and a replica
    /// other than the one whose connection id is `want.avoid` (a retry's)
    /// is preferred.
    pub(crate) async fn connection_for(
        &self,
        deadline: Option<Instant>,
        want: Want<'_>,
    ) -> Result<Arc<Connection>, Status> {
        if let Some(conn) = self.pick(want) {
            return Ok(conn);
        }
        let Some((target, parsed)) = &self.shared.target else {
            let conn = self.current();
            return Err(conn
                .unusable_reason()
                .unwrap_or_else(|| Status::unavailable("the connection is closed")));
        };
        // Another call may be reconnecting: wait for it, but not past this
        // call's deadline.
        let mut backoff = match deadline {
            Some(deadline) => {
                tokio::time::timeout_at(deadline.into(), self.shared.reconnect.lock())
                    .await
                    .map_err(|_| {
                        Status::deadline_exceeded(format!(
                            "reconnecting to {target} (another call's attempt) had not finished \
                         when this call's deadline came; give the call a later deadline"
                        ))
                    })?
            }
            None => self.shared.reconnect.lock().await,
        };
        if let Some(conn) = self.pick(want) {
            return Ok(conn);
        }
        let conn = self.current();
        backoff.check(target, Instant::now())?;
        let fresh = match self.reconnect(parsed, deadline).await {
            Ok(fresh) => fresh,
            // The call's deadline ended the attempt, not the server: no
            // backoff for it.
            Err(failure) if failure.code() == Code::DeadlineExceeded => {
                return Err(Status::deadline_exceeded(format!(
                    "reconnecting to {target}: {}",
                    failure.message()
                )));
            }
            Err(failure) => {
                // This channel reached a server before: one that is gone or
                // restarting is a transient condition (UNAVAILABLE, as gRPC
                // reports it, and what retry policies retry), even where a
                // first connect to the same name says NOT_FOUND.
                let code = match failure.code() {
                    Code::NotFound => Code::Unavailable,
                    code => code,
                };
                let failure = Status::new(code, failure.message());
                let status = Status::new(
                    code,
                    format!("reconnecting to {target}: {}", failure.message()),
                );
                let delay = backoff.failed(&self.shared.builder.backoff, failure, Instant::now());
                tracing::debug!(%target, ?delay, %status, "reconnect failed");
                conn.stats.event(
                    "reconnect failed",
                    format!("{status}; next attempt in {delay:?}"),
                );
                return Err(status);
            }
        };
        backoff.succeeded();
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
        *lock(&self.shared.last) = Arc::clone(&fresh);
        // Replicas that came back with the name get connections too.
        self.shared.connect_in_background();
        self.shared.watch_health();
        Ok(fresh)
    }

    /// Opens a connection when no replica is ready: an address again, or
    /// the name looked up afresh and its replicas tried in turn (from
    /// where the policy is).
    async fn reconnect(
        &self,
        parsed: &Target,
        deadline: Option<Instant>,
    ) -> Result<Arc<Connection>, Status> {
        let builder = &self.shared.builder;
        let Target::Name(name) = parsed else {
            let fresh = open::open(builder, parsed, deadline).await?;
            *lock(&self.shared.replicas) = ReplicaSet::fixed(Arc::clone(&fresh));
            return Ok(fresh);
        };
        self.shared.rediscover().await;
        let mut subchannels = lock(&self.shared.replicas).subchannels.clone();
        if subchannels.is_empty() {
            return Err(open::not_found(builder, parsed, name).await);
        }
        let start = self.shared.picker.start(builder.balance, subchannels.len());
        subchannels.rotate_left(start);
        let mut failures = Vec::new();
        for sub in subchannels {
            if let Some(conn) = sub.ready() {
                return Ok(conn);
            }
            let Some(replica) = sub.replica() else {
                continue;
            };
            match open::open_replica(builder, parsed, &replica, deadline).await {
                Ok(fresh) => {
                    sub.connected(Arc::clone(&fresh));
                    return Ok(fresh);
                }
                Err(status)
                    if matches!(
                        status.code(),
                        Code::DeadlineExceeded | Code::Unauthenticated
                    ) =>
                {
                    sub.failed(&builder.backoff, status.clone());
                    return Err(status);
                }
                Err(status) => {
                    sub.failed(&builder.backoff, status.clone());
                    failures.push((sub.key.clone(), status));
                }
            }
        }
        Err(none_answered(name, failures))
    }

    /// The replicas behind this channel's target, each with its state,
    /// transport and why, calls in flight and latency (one for a channel
    /// to an address or over a link).
    pub fn replicas(&self) -> Vec<crate::debug::ReplicaInfo> {
        self.info().replicas
    }

    /// The channel as the debug endpoint shows it: its target, policy,
    /// where its replicas were found, and each replica.
    pub fn info(&self) -> crate::debug::ChannelInfo {
        self.shared.info()
    }

    /// Which transport the current connection uses, and why.
    pub fn selection(&self) -> Selection {
        self.current().selection.clone()
    }

    /// Whether the current connection compresses what this side sends,
    /// and why (the compression half of the selection; the server decides
    /// apart for its replies). The debug endpoint shows both sides, and
    /// what compression saved.
    pub fn compression(&self) -> crate::protocol::compress::CompressionChoice {
        self.current().compression_choice.clone()
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
            let facts = || oneway::ServerFacts {
                expected: self.standin_queue(service.name),
                ..conn.server_facts(service.name)
            };
            let route = conn.oneway.route(service, facts, self.forced());
            return (route, Some(conn.selection.transport));
        }
        let facts = || oneway::ServerFacts {
            locality: None,
            uid: None,
            queue: self.standin_queue(service.name),
            expected: None,
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

    /// The window of the streams this channel receives.
    pub(crate) fn stream_window(&self) -> u32 {
        self.shared.builder.stream_window
    }

    /// How calls of `method` are retried: its own policy or its
    /// service's if the builder names one, else the channel's for an
    /// idempotent method; `None`, never.
    pub(crate) fn retry_policy(&self, method: &MethodDescriptor) -> Option<&RetryPolicy> {
        let builder = &self.shared.builder;
        per_method(&builder.method_retry, method)
            .or_else(|| method.idempotent.then_some(&builder.retry))
    }

    /// How calls of `method` are hedged, as [`retry_policy`](Self::retry_policy)
    /// chooses; `None`: not hedged.
    pub(crate) fn hedge_policy(&self, method: &MethodDescriptor) -> Option<&HedgePolicy> {
        let builder = &self.shared.builder;
        per_method(&builder.method_hedge, method)
            .or_else(|| builder.hedge.as_ref().filter(|_| method.idempotent))
    }

    /// The channel's retry budget.
    pub(crate) fn retry_throttle(&self) -> &retry::RetryThrottle {
        &self.shared.retries
    }

    /// How long a one-way call with no deadline waits on a full queue.
    pub(crate) fn queue_full_wait(&self) -> Duration {
        self.shared.builder.queue_full_wait
    }
}

/// `method`'s entry in a per-method map, else its service's.
fn per_method<'a, T>(
    policies: &'a std::collections::HashMap<String, T>,
    method: &MethodDescriptor,
) -> Option<&'a T> {
    if policies.is_empty() {
        return None;
    }
    policies
        .get(method.full_name)
        .or_else(|| policies.get(method.service))
}

/// Whether a connection over `transport` reaches a server on this host.
fn is_local(transport: Transport) -> bool {
    matches!(
        transport,
        Transport::Shm | Transport::Unix | Transport::Pipe | Transport::Memory | Transport::Mmap
    )
}
