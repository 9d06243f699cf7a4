//! Opening a connection: look the target up (local registry, then the
//! resolver), decide on the candidates in order (`select`), and connect to
//! the first that answers, recording in its selection why the ones before
//! it were passed over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ChannelBuilder;
use super::connection::{Connection, ConnectionConfig};
use crate::discovery::{Entry, Registry, Resolved, Resolver, StaticFile};
use crate::protocol::status::{Code, Status};
use crate::select::{
    self, Decision, Forced, HostFacts, Known, PassedOver, Plan, Reason, Rejection, Target,
    Transport,
};
use crate::transport::tcp::TcpConnector;
use crate::transport::unix::{self, UnixConnector};
use crate::transport::{Connector, Endpoint, PeerCheck, PeerInfo};

/// Resolves, selects and connects, within the builder's connect timeout
/// and `deadline`.
pub(super) async fn open(
    builder: &ChannelBuilder,
    target: &Target,
    deadline: Option<Instant>,
) -> Result<Arc<Connection>, Status> {
    let forced = builder.forced()?;
    let (plans, local) = plans(builder, target, forced).await?;
    connect_plans(builder, target, plans, local, forced, deadline).await
}

/// Connects to one replica of the name `target` (found by [`discover`]).
pub(super) async fn open_replica(
    builder: &ChannelBuilder,
    target: &Target,
    replica: &Replica,
    deadline: Option<Instant>,
) -> Result<Arc<Connection>, Status> {
    let forced = builder.forced()?;
    let (plans, local) = replica_plans(builder, target, replica, forced)?;
    connect_plans(builder, target, plans, local, forced, deadline).await
}

/// Connects to the first of `plans` that answers, within the builder's
/// connect timeout and `deadline`.
async fn connect_plans(
    builder: &ChannelBuilder,
    target: &Target,
    plans: Vec<Plan>,
    local: Option<Local>,
    forced: Option<Forced>,
    deadline: Option<Instant>,
) -> Result<Arc<Connection>, Status> {
    let started = Instant::now();
    let mut end = started + builder.connect_timeout;
    let mut by_deadline = false;
    if let Some(deadline) = deadline.filter(|d| *d < end) {
        end = deadline;
        by_deadline = true;
    }
    let count = plans.len();
    let mut passed_over: Vec<(Transport, PassedOver)> = Vec::new();
    for (i, mut plan) in plans.into_iter().enumerate() {
        let now = Instant::now();
        let last = i + 1 == count;
        let attempt_end = if last {
            end
        } else {
            end.min(now + builder.attempt_timeout)
        };
        // Whether this attempt has all the time that is left: if it runs
        // out, so does the connect.
        let out_of_time = end <= attempt_end;
        if !passed_over.is_empty() {
            plan.selection.reason = Reason::FellBack {
                transport: plan.selection.transport,
                passed_over: passed_over.iter().map(|(_, why)| why.clone()).collect(),
                then: Box::new(plan.selection.reason),
            };
            plan.selection.rejected.extend(
                passed_over
                    .iter()
                    .map(|(t, why)| (*t, Rejection::PassedOver(why.clone()))),
            );
        }
        let url = plan.url();
        let before = |passed_over: Vec<(Transport, PassedOver)>| {
            if passed_over.is_empty() {
                String::new()
            } else {
                let why: Vec<String> = passed_over.iter().map(|(_, w)| w.to_string()).collect();
                format!(" (before it: {})", why.join("; "))
            }
        };
        let attempt = tokio::time::timeout_at(
            attempt_end.into(),
            connect(builder, &plan, forced, local.as_ref()),
        );
        let failure = match attempt.await {
            Ok(Ok(conn)) => return Ok(conn),
            // A peer that fails authentication, or a channel whose own
            // settings are unusable, is not passed over for another (maybe
            // weaker) transport.
            Ok(Err(status))
                if last
                    || matches!(
                        status.code(),
                        Code::Unauthenticated | Code::FailedPrecondition | Code::InvalidArgument
                    ) =>
            {
                return Err(Status::new(
                    status.code(),
                    format!("{}{}", status.message(), before(passed_over)),
                ));
            }
            Ok(Err(status)) => PassedOver::Failed {
                url: url.clone(),
                message: status.message().to_owned(),
            },
            Err(_) if out_of_time && by_deadline => {
                // The call's deadline, not the server, ended the attempt:
                // DeadlineExceeded, and no reconnect backoff for it.
                return Err(Status::deadline_exceeded(format!(
                    "connecting to {url} had not finished when the call's deadline came ({:?} \
                     after starting){}; give the call a later deadline, or connect the channel \
                     before the call",
                    end.saturating_duration_since(started),
                    before(passed_over)
                )));
            }
            Err(_) if out_of_time => {
                return Err(Status::unavailable(format!(
                    "connecting to {url} did not finish within {:?}: the connect timeout is \
                     {:?} (ChannelBuilder::connect_timeout){}; is the server running, and is \
                     the network between you up?",
                    attempt_end.saturating_duration_since(started),
                    builder.connect_timeout,
                    before(passed_over)
                )));
            }
            Err(_) => PassedOver::Silent {
                url: url.clone(),
                waited: attempt_end.saturating_duration_since(now),
                quic: plan.endpoint.transport() == Transport::Quic,
            },
        };
        tracing::debug!(%url, %failure, "passing over a candidate");
        passed_over.push((plan.endpoint.transport(), failure));
    }
    Err(Status::failed_precondition(format!(
        "{target:?} resolved to no address this client can use; check the discovery file or \
         resolver"
    )))
}

/// A server found in the local registry: the registry (whose directory
/// handles its sockets are reached through) and who must answer there.
struct Local {
    registry: Registry,
    name: String,
    pid: u32,
}

impl Local {
    /// The connector that reaches the socket published at `path`: through
    /// the runtime directory's checked handle when it is one of its
    /// sockets, refusing a peer that is not the entry's process of this
    /// user (SO_PEERCRED) before anything is sent.
    fn unix_connector(&self, path: &std::path::Path) -> UnixConnector {
        let mut connector = UnixConnector::new().check(self.check());
        if cfg!(target_os = "linux")
            && let Some(name) = self.registry.runtime_dir().socket_name(path)
        {
            connector = connector.through(crate::discovery::runtime_dir::path_via_fd(
                self.registry.runtime_dir().sockets_fd(),
                name,
            ));
        }
        connector
    }

    /// The kernel's word on who answered against the registry entry: this
    /// user (the owner of the runtime directory), and the process that
    /// published the name.
    fn check(&self) -> PeerCheck {
        let name = self.name.clone();
        let dir = self.registry.root().display().to_string();
        let pid_want = self.pid;
        Arc::new(move |peer: &PeerInfo| {
            let want_uid = crate::sys::uid();
            let show = |v: Option<u32>| v.map_or_else(|| "unknown".to_owned(), |v| v.to_string());
            // A pid of 0 is a process outside our pid namespace: the entry
            // could not have been seen alive, so there is nothing to compare.
            let pid_ok = match peer.pid {
                Some(0) => true,
                Some(found) => found == pid_want,
                None => false,
            };
            if peer.uid == Some(want_uid) && pid_ok {
                return Ok(());
            }
            Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "refusing {url} for {name:?}: the registry in {dir} names pid {pid_want} \
                     (uid {want_uid}) as its server, but the process answering there is pid \
                     {pid_found} (uid {uid_found}); another process is impersonating the \
                     server, or the runtime directory was tampered with: nothing was sent. \
                     Check who can write {dir}, or set SWITCHYARD_RUNTIME_DIR to a directory \
                     only you can write",
                    url = peer.addr,
                    pid_found = show(peer.pid),
                    uid_found = show(peer.uid),
                ),
            ))
        })
    }
}

/// The connector for a Unix socket at `path` (see [`Local::unix_connector`]).
fn unix_connector(local: Option<&Local>, path: &std::path::Path) -> UnixConnector {
    local.map_or_else(UnixConnector::new, |local| local.unix_connector(path))
}

/// The status of a failed connect to `what`: a peer refused by its check
/// is Unauthenticated (the check says why), anything else Unavailable.
fn connect_failed(what: String, err: &std::io::Error) -> Status {
    if err.kind() == std::io::ErrorKind::PermissionDenied {
        return Status::unauthenticated(err.to_string());
    }
    unreachable(what, err)
}

/// One server behind a name, as discovery found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Replica {
    /// A live entry of the local registry.
    Local(Entry),
    /// A replica a resolver or the discovery file lists.
    Listed(Resolved),
}

impl Replica {
    /// What tells this replica apart from the others of its name: the
    /// publishing process (pid and start time) on this host, else its
    /// addresses.
    pub(super) fn key(&self) -> String {
        match self {
            Self::Local(entry) => format!("pid {}", entry.pid),
            Self::Listed(resolved) => resolved.urls().join(" "),
        }
    }

    /// The same server as `other` (a local entry republished by the same
    /// process, with the same start time).
    pub(super) fn same_server(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Local(a), Self::Local(b)) => a.pid == b.pid && a.start_time == b.start_time,
            (Self::Listed(a), Self::Listed(b)) => a.addresses == b.addresses,
            _ => false,
        }
    }

    /// Its addresses as URLs.
    pub(super) fn urls(&self) -> Vec<String> {
        match self {
            Self::Local(entry) => entry.urls(),
            Self::Listed(resolved) => resolved.urls(),
        }
    }
}

/// What discovery found for a name.
#[derive(Debug)]
pub(super) struct Discovered {
    /// The replicas, in the order discovery gives them (the local
    /// registry's newest first).
    pub(super) replicas: Vec<Replica>,
    /// Who answered: the local registry or the resolver.
    pub(super) source: String,
    /// What the resolver left out and why.
    pub(super) skipped: Vec<String>,
}

/// Looks `name` up: the local registry's live entries if it has any, else
/// the resolver or discovery file. `Ok(None)`: nobody knows the name.
pub(super) async fn discover(
    builder: &ChannelBuilder,
    name: &str,
) -> Result<Option<Discovered>, Status> {
    let registry_dir = builder
        .runtime_dir
        .clone()
        .unwrap_or_else(crate::discovery::runtime_dir);
    let registry =
        Registry::open(&registry_dir).map_err(|err| Status::unavailable(err.to_string()))?;
    let entries = registry
        .lookup_all(name)
        .map_err(|err| Status::invalid_argument(err.to_string()))?;
    if !entries.is_empty() {
        return Ok(Some(Discovered {
            replicas: entries.into_iter().map(Replica::Local).collect(),
            source: format!("the local registry in {}", registry_dir.display()),
            skipped: Vec::new(),
        }));
    }
    let (resolved, consulted) = resolve(builder, name).await?;
    let skipped = builder
        .resolver
        .as_ref()
        .map(|resolver| resolver.skipped(name))
        .unwrap_or_default();
    Ok(resolved.map(|replicas| Discovered {
        skipped,
        source: replicas
            .first()
            .map_or_else(|| consulted.clone(), |r| r.source.clone()),
        replicas: replicas.into_iter().map(Replica::Listed).collect(),
    }))
}

/// The candidates for one replica of the name `target`, in order, and
/// the local registry entry they came from.
fn replica_plans(
    builder: &ChannelBuilder,
    target: &Target,
    replica: &Replica,
    forced: Option<Forced>,
) -> Result<(Vec<Plan>, Option<Local>), Status> {
    let facts = HostFacts::of_this_process(None);
    let Target::Name(name) = target else {
        return Err(Status::internal(format!(
            "a replica of {target:?}, which is not a name"
        )));
    };
    match replica {
        Replica::Local(entry) => {
            let registry_dir = builder
                .runtime_dir
                .clone()
                .unwrap_or_else(crate::discovery::runtime_dir);
            let registry = Registry::open(&registry_dir)
                .map_err(|err| Status::unavailable(err.to_string()))?;
            let plans = decide(target, Known::Entry(entry), &facts, forced)?;
            let local = Local {
                registry,
                name: name.clone(),
                pid: entry.pid,
            };
            Ok((plans, Some(local)))
        }
        Replica::Listed(resolved) => Ok((
            decide(target, Known::Resolved(resolved), &facts, forced)?,
            None,
        )),
    }
}

/// The selection's candidates for `target` from what is `known` of it.
fn decide(
    target: &Target,
    known: Known<'_>,
    facts: &HostFacts,
    forced: Option<Forced>,
) -> Result<Vec<Plan>, Status> {
    match select::select(select::Connect {
        target,
        known,
        facts,
        forced,
    })? {
        Decision::Connect(plans) => Ok(plans),
        other => Err(Status::internal(format!(
            "selection answered {other:?} for {target:?} after its lookup"
        ))),
    }
}

/// The candidates for `target`, in order, and the local registry entry
/// they came from: looks the name up (registry, then resolver; the first
/// replica found) and lets [`select`](select::select) decide
/// ([`select::Connect`]) on what was found.
async fn plans(
    builder: &ChannelBuilder,
    target: &Target,
    forced: Option<Forced>,
) -> Result<(Vec<Plan>, Option<Local>), Status> {
    let Target::Name(name) = target else {
        let facts = HostFacts::of_this_process(None);
        return Ok((decide(target, Known::NotLookedUp, &facts, forced)?, None));
    };
    match discover(builder, name).await? {
        Some(Discovered { replicas, .. }) if !replicas.is_empty() => {
            replica_plans(builder, target, &replicas[0], forced)
        }
        _ => Err(not_found(builder, target, name).await),
    }
}

/// Why `name` cannot be reached: nobody knows it (NotFound, saying where
/// it was looked for), or its resolver lists no replica now.
pub(super) async fn not_found(builder: &ChannelBuilder, target: &Target, name: &str) -> Status {
    let registry_dir = builder
        .runtime_dir
        .clone()
        .unwrap_or_else(crate::discovery::runtime_dir);
    let consulted = match resolve(builder, name).await {
        Ok((Some(_), _)) => format!(
            "{} lists no replica of it now",
            resolver_name(builder).unwrap_or_else(|| "the resolver".to_owned())
        ),
        Ok((None, consulted)) => consulted,
        Err(status) => return status,
    };
    let facts = HostFacts::of_this_process(None);
    match decide(
        target,
        Known::Nothing {
            registry_dir: &registry_dir,
            consulted: &consulted,
        },
        &facts,
        None,
    ) {
        Err(status) => status,
        Ok(_) => Status::not_found(format!("nothing publishes {name:?}")),
    }
}

/// The resolver a name is looked up in after the local registry, as
/// messages name it.
fn resolver_name(builder: &ChannelBuilder) -> Option<String> {
    if let Some(resolver) = &builder.resolver {
        return Some(format!("the resolver {resolver:?}"));
    }
    let path = builder.discovery_file.clone().or_else(|| {
        std::env::var_os(crate::discovery::DISCOVERY_ENV)
            .filter(|p| !p.is_empty())
            .map(Into::into)
    })?;
    Some(format!("the discovery file {}", path.display()))
}

/// Asks the builder's resolver, or the discovery file; the second value
/// says whom, for a not-found message.
async fn resolve(
    builder: &ChannelBuilder,
    name: &str,
) -> Result<(Option<Vec<Resolved>>, String), Status> {
    if let Some(resolver) = &builder.resolver {
        let resolved = resolver.resolve(name).await?;
        return Ok((
            resolved,
            format!("the resolver {resolver:?} does not know it"),
        ));
    }
    let path = match &builder.discovery_file {
        Some(path) => path.clone(),
        None => match std::env::var_os(crate::discovery::DISCOVERY_ENV) {
            Some(path) if !path.is_empty() => path.into(),
            _ => {
                return Ok((
                    None,
                    format!(
                        "no discovery file is set (ChannelBuilder::discovery_file or {})",
                        crate::discovery::DISCOVERY_ENV
                    ),
                ));
            }
        },
    };
    let file =
        StaticFile::open(&path).map_err(|err| Status::failed_precondition(err.to_string()))?;
    let resolved = file.resolve(name).await?;
    Ok((
        resolved,
        format!("the discovery file {} does not list it", path.display()),
    ))
}

fn unreachable(what: String, err: &std::io::Error) -> Status {
    Status::unavailable(format!(
        "could not connect to {what}: {err}; is the server running and listening there?"
    ))
}

/// Connects to one candidate.
async fn connect(
    builder: &ChannelBuilder,
    plan: &Plan,
    forced: Option<Forced>,
    local: Option<&Local>,
) -> Result<Arc<Connection>, Status> {
    let config = builder.connection_config();
    match &plan.endpoint {
        #[cfg(target_os = "linux")]
        Endpoint::Shm(path) => connect_shm(path, plan, forced, &config, local).await,
        #[cfg(not(target_os = "linux"))]
        Endpoint::Shm(path) => Err(Status::unavailable(format!(
            "shared memory is not available on this platform ({})",
            path.display()
        ))),
        Endpoint::Unix(path) => {
            let link = unix_connector(local, path)
                .connect(&plan.endpoint)
                .await
                .map_err(|err| connect_failed(plan.url(), &err))?;
            Connection::open(link, plan.selection.clone(), &config).await
        }
        Endpoint::Tcp(_) => {
            let link = TcpConnector
                .connect(&plan.endpoint)
                .await
                .map_err(|err| unreachable(plan.url(), &err))?;
            let conn = Connection::open(link, plan.selection.clone(), &config).await?;
            Ok(upgraded(conn, forced, false, &config).await)
        }
        #[cfg(feature = "quic")]
        Endpoint::Quic { host_port, pin, .. } => {
            let tls = builder
                .quic
                .client_tls(host_port, pin.as_deref(), plan.caller_pin)?;
            let presented_certificate = tls.identity.is_some();
            let connector =
                crate::transport::quic::QuicConnector::new(tls, builder.quic.config.clone());
            let link = connector
                .connect(&plan.endpoint)
                .await
                .map_err(|err| super::quic::connect_status(host_port, err))?;
            let conn = Connection::open(link, plan.selection.clone(), &config).await?;
            // Shared memory would lose the certificate identity the server's
            // handlers see (Context::peer_identity).
            Ok(upgraded(conn, forced, presented_certificate, &config).await)
        }
        #[cfg(not(feature = "quic"))]
        Endpoint::Quic { host_port, .. } => Err(Status::failed_precondition(format!(
            "cannot connect to quic://{host_port}: switchyard was built without its `quic` \
             feature; enable it, or connect over tcp://"
        ))),
        other => Err(Status::invalid_argument(format!(
            "cannot connect to {other}: use a service name, unix:///path or tcp://host:port"
        ))),
    }
}

/// `conn`, or the shared-memory connection it moved to if the server turned
/// out to be on this host (unless a transport was demanded).
async fn upgraded(
    conn: Arc<Connection>,
    forced: Option<Forced>,
    presented_certificate: bool,
    config: &ConnectionConfig,
) -> Arc<Connection> {
    #[cfg(target_os = "linux")]
    if let Some(upgraded) =
        super::upgrade::to_shm(&conn, config, forced, presented_certificate).await
    {
        return upgraded;
    }
    let _ = (forced, presented_certificate, config);
    conn
}

#[cfg(target_os = "linux")]
async fn connect_shm(
    path: &std::path::Path,
    plan: &Plan,
    forced: Option<Forced>,
    config: &ConnectionConfig,
    local: Option<&Local>,
) -> Result<Arc<Connection>, Status> {
    // Who answers is checked before anything is shared with it (what
    // ShmConnector does, in two steps here: a socket that does not answer
    // is not a set-up that failed).
    let unix = unix_connector(local, path);
    let control = unix
        .stream(path)
        .await
        .map_err(|err| connect_failed(unix::url(path), &err))?;
    let set_up =
        crate::transport::shm::connect_over(control, path, crate::transport::shm::DEFAULT_CAPACITY);
    match set_up.await {
        Ok(link) => Connection::open(link, plan.selection.clone(), config).await,
        Err(err) if forced.is_some() => Err(unreachable(plan.url(), &err)),
        Err(err) => {
            // Not forced: say why and take the Unix socket.
            tracing::debug!(%err, "shared memory refused; using the Unix socket");
            let selection = select::select(select::ShmFallback {
                planned: &plan.selection,
                error: err.to_string(),
            });
            let link = unix
                .connect(&Endpoint::Unix(path.to_owned()))
                .await
                .map_err(|err| connect_failed(unix::url(path), &err))?;
            Connection::open(link, selection, config).await
        }
    }
}

/// How long one candidate may take when others remain behind it.
pub(super) const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
