//! The replicas of a channel: one sub-connection ([`Subchannel`]) per
//! server behind its target, each with its own transport selection and
//! reconnect backoff, kept in step with discovery ([`ReplicaSet::follow`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use futures_util::StreamExt;

use super::backoff::{Backoff, BackoffState};
use super::balance::Load;
use super::connection::Connection;
use super::lock;
use super::open::{Discovered, Replica};
use super::outlier::{Outlier, OutlierEjection};
use crate::health::ServingStatus;
use crate::protocol::status::Status;

/// One server behind a channel's target and the connection to it, if one
/// is open.
#[derive(Debug)]
pub(crate) struct Subchannel {
    /// How discovery found it (`None`: the channel's own target, an
    /// address or a link).
    replica: Mutex<Option<Replica>>,
    /// What tells it apart from its siblings (for the debug views).
    pub(super) key: String,
    conn: Mutex<Option<Arc<Connection>>>,
    /// Between failed background reconnects.
    backoff: Mutex<BackoffState>,
    /// A background connect is under way.
    connecting: AtomicBool,
    /// Why the last attempt to connect failed, until one succeeds.
    last_error: Mutex<Option<Status>>,
    /// Failures in a row and ejections, across its connections.
    pub(super) outlier: Arc<Outlier>,
    /// What its server's health service reports, per service (`""`: the
    /// server as a whole), while its connection is watched.
    health: Mutex<HashMap<String, ServingStatus>>,
    /// The tasks watching its health; stopped when it goes.
    watchers: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The id of the connection they watch over (0: none).
    watched: std::sync::atomic::AtomicU64,
}

impl Drop for Subchannel {
    fn drop(&mut self) {
        for watcher in lock(&self.watchers).drain(..) {
            watcher.abort();
        }
    }
}

impl Subchannel {
    /// A sub-connection to `replica`, connected over `conn` if given.
    pub(super) fn new(
        replica: Option<Replica>,
        key: String,
        conn: Option<Arc<Connection>>,
        ejection: OutlierEjection,
    ) -> Self {
        let outlier = Arc::new(Outlier::new(ejection));
        if let Some(conn) = &conn {
            let _ = conn.outlier.set(Arc::clone(&outlier));
        }
        Self {
            replica: Mutex::new(replica),
            key,
            conn: Mutex::new(conn),
            backoff: Mutex::new(BackoffState::default()),
            connecting: AtomicBool::new(false),
            last_error: Mutex::new(None),
            outlier,
            health: Mutex::new(HashMap::new()),
            watchers: Mutex::new(Vec::new()),
            watched: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether its server serves `service` as far as its health service
    /// says (not NOT_SERVING for it, nor for the server as a whole).
    pub(super) fn serves(&self, service: &str) -> bool {
        let health = lock(&self.health);
        let not_serving = |name: &str| health.get(name) == Some(&ServingStatus::NotServing);
        !not_serving("") && !not_serving(service)
    }

    /// The services its server reports NOT_SERVING (`""`: all of them).
    fn not_serving(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.health)
            .iter()
            .filter(|(_, status)| **status == ServingStatus::NotServing)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// Watches the health of every service its ready connection's server
    /// lists (and of the server as a whole), over that connection, unless
    /// it does already; replaces watches of an earlier connection.
    pub(super) fn watch_health(self: &Arc<Self>, builder: &super::ChannelBuilder) {
        let Some(conn) = self.ready() else { return };
        let id = conn.stats.id();
        if self.watched.swap(id, Ordering::AcqRel) == id {
            return;
        }
        let conn = &conn;
        let mut watchers = lock(&self.watchers);
        for watcher in watchers.drain(..) {
            watcher.abort();
        }
        lock(&self.health).clear();
        if conn
            .peer_hello
            .service(crate::health::HEALTH_DESCRIPTOR.name)
            .is_none()
            || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        // The watches bypass the channel's layers, as the server's health
        // service bypasses its own.
        let plain = super::ChannelBuilder {
            layers: crate::layers::LayerList::default(),
            ..builder.clone()
        };
        let channel = super::Channel::from_connection(Arc::clone(conn), plain);
        let services = std::iter::once(String::new()).chain(
            conn.peer_hello
                .services
                .iter()
                .map(|s| s.name.clone())
                .filter(|name| !name.starts_with("Switchyard")),
        );
        for service in services {
            let client = crate::health::HealthClient::new(channel.clone());
            let me: Weak<Self> = Arc::downgrade(self);
            let stats = Arc::clone(&conn.stats);
            let task = tokio::spawn(async move {
                // Not a call of the application's: balancing does not
                // count it in flight.
                let _background = Background::open(stats);
                let Ok(mut updates) = client.watch(service.clone()).await else {
                    return;
                };
                while let Some(Ok(status)) = updates.next().await {
                    let Some(me) = me.upgrade() else { return };
                    let was = lock(&me.health).insert(service.clone(), status);
                    if was.is_some_and(|was| was != status) || status == ServingStatus::NotServing {
                        tracing::debug!(replica = %me.key, %service, ?status, "replica health changed");
                    }
                }
                // The watch ended (the connection closed, or the server
                // went away): nothing is known any more.
                if let Some(me) = me.upgrade() {
                    lock(&me.health).remove(&service);
                }
            });
            watchers.push(task.abort_handle());
        }
    }

    /// Whether it is ejected for failing call after call.
    pub(super) fn is_ejected(&self) -> bool {
        self.outlier.is_ejected(super::outlier::now_ns())
    }

    /// The replica as discovery last described it.
    pub(super) fn replica(&self) -> Option<Replica> {
        lock(&self.replica).clone()
    }

    /// Its connection, if one was opened (usable or not).
    pub(super) fn connection(&self) -> Option<Arc<Connection>> {
        lock(&self.conn).clone()
    }

    /// Its connection when it takes calls.
    pub(super) fn ready(&self) -> Option<Arc<Connection>> {
        lock(&self.conn).as_ref().filter(|c| c.is_usable()).cloned()
    }

    /// Records a connection that was just opened.
    pub(super) fn connected(&self, conn: Arc<Connection>) {
        let _ = conn.outlier.set(Arc::clone(&self.outlier));
        *lock(&self.conn) = Some(conn);
        lock(&self.backoff).succeeded();
        *lock(&self.last_error) = None;
    }

    /// Records a failed attempt; returns when the background may try again.
    pub(super) fn failed(&self, backoff: &Backoff, status: Status) {
        lock(&self.backoff).failed(backoff, status.clone(), Instant::now());
        *lock(&self.last_error) = Some(status);
    }

    /// Why the last attempt failed, while no attempt has succeeded since.
    pub(super) fn last_error(&self) -> Option<Status> {
        lock(&self.last_error).clone()
    }

    /// Claims the right to connect in the background: not ready, nobody
    /// else connecting, and out of its backoff. Release with
    /// [`done_connecting`](Self::done_connecting).
    pub(super) fn claim_background_connect(&self) -> bool {
        if self.ready().is_some()
            || lock(&self.backoff)
                .check(&self.key, Instant::now())
                .is_err()
        {
            return false;
        }
        !self.connecting.swap(true, Ordering::AcqRel)
    }

    /// Ends a background connect.
    pub(super) fn done_connecting(&self) {
        self.connecting.store(false, Ordering::Release);
    }

    /// What the debug views show of it.
    pub(super) fn info(&self) -> crate::debug::ReplicaInfo {
        let conn = self.connection();
        let last_error = self.last_error();
        let now = super::outlier::now_ns();
        let state = match &conn {
            Some(c) if c.is_usable() && self.outlier.is_ejected(now) => "ejected",
            Some(c) if c.is_usable() => "ready",
            Some(c) if !c.is_closed() => "draining",
            _ if self.connecting.load(Ordering::Acquire) => "connecting",
            Some(_) => "failed",
            None if last_error.is_some() => "failed",
            None => "idle",
        };
        crate::debug::ReplicaInfo {
            key: self.key.clone(),
            addresses: self.replica().map(|r| r.urls()).unwrap_or_default(),
            state: state.to_owned(),
            connection: conn.as_ref().map(|c| c.stats.id()),
            transport: conn.as_ref().map(|c| c.selection.transport.to_string()),
            reason: conn.as_ref().map(|c| c.selection.reason.to_string()),
            in_flight: conn.as_ref().map_or(0, |c| c.stats.in_flight()),
            calls_started: conn.as_ref().map_or(0, |c| c.stats.calls_started()),
            latency_ewma_us: conn
                .as_ref()
                .and_then(|c| c.stats.latency_ewma())
                .map(|ns| (ns / 100.0).round() / 10.0),
            ejections: self.outlier.ejections(),
            not_serving: self.not_serving(),
            ejected_for_ms: self
                .outlier
                .ejected_for(now)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            last_error: last_error.map(|s| s.to_string()).or_else(|| {
                conn.as_ref()
                    .and_then(|c| c.unusable_reason())
                    .map(|s| s.to_string())
            }),
        }
    }

    /// What a policy weighs.
    pub(super) fn load(conn: &Connection) -> Load {
        Load {
            in_flight: conn.stats.in_flight(),
            latency_ns: conn.stats.latency_ewma(),
        }
    }
}

/// A call the framework keeps open on a connection, while it lives.
struct Background(Arc<crate::debug::recorder::ConnectionStats>);

impl Background {
    fn open(stats: Arc<crate::debug::recorder::ConnectionStats>) -> Self {
        stats.background(true);
        Self(stats)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.0.background(false);
    }
}

/// The sub-connections of a channel, in discovery's order, and what
/// discovery last said.
#[derive(Debug, Default)]
pub(crate) struct ReplicaSet {
    pub(super) subchannels: Vec<Arc<Subchannel>>,
    /// When a replica failing call after call is ejected.
    pub(super) ejection: OutlierEjection,
    /// Who listed the replicas (the local registry, a resolver).
    pub(super) source: Option<String>,
    /// Why the last lookup failed or found nothing, while the channel keeps
    /// the replicas it knew.
    pub(super) discovery_error: Option<String>,
    /// What changed, newest last (bounded).
    pub(super) changes: std::collections::VecDeque<String>,
    /// What the last lookup left out and why (records that are not
    /// usable endpoints).
    pub(super) skipped: Vec<String>,
}

/// How many changes a channel remembers for its debug view.
const CHANGES_KEPT: usize = 32;

impl ReplicaSet {
    /// A set of one sub-connection that is never looked up again.
    pub(super) fn fixed(conn: Arc<Connection>) -> Self {
        let key = conn.url.clone();
        Self {
            subchannels: vec![Arc::new(Subchannel::new(
                None,
                key,
                Some(conn),
                OutlierEjection::off(),
            ))],
            ..Self::default()
        }
    }

    /// Takes in what discovery found: keeps the sub-connections of
    /// replicas still listed (in the new order), adds the new ones, drops
    /// the vanished ones (their connections close once their calls are
    /// done). Returns the added sub-connections.
    pub(super) fn follow(&mut self, found: Discovered) -> Vec<Arc<Subchannel>> {
        let mut added = Vec::new();
        let mut next = Vec::with_capacity(found.replicas.len());
        for replica in found.replicas {
            let key = replica.key();
            let kept = self.subchannels.iter().position(|s| {
                s.key == key && s.replica().is_some_and(|known| known.same_server(&replica))
            });
            match kept {
                Some(i) => {
                    let sub = self.subchannels.swap_remove(i);
                    *lock(&sub.replica) = Some(replica);
                    next.push(sub);
                }
                None => {
                    let urls = replica.urls().join(", ");
                    let sub = Arc::new(Subchannel::new(Some(replica), key, None, self.ejection));
                    self.note(format!("added {} ({urls})", sub.key));
                    added.push(Arc::clone(&sub));
                    next.push(sub);
                }
            }
        }
        let gone = std::mem::replace(&mut self.subchannels, next);
        for sub in gone {
            self.note(format!(
                "removed {}: {} no longer lists it",
                sub.key, found.source
            ));
        }
        self.source = Some(found.source);
        self.skipped = found.skipped;
        self.discovery_error = None;
        added
    }

    /// Remembers a change for the debug view.
    pub(super) fn note(&mut self, change: String) {
        tracing::debug!(%change, "replicas changed");
        if self.changes.len() == CHANGES_KEPT {
            self.changes.pop_front();
        }
        self.changes.push_back(change);
    }

    /// The ready sub-connections with their connections, in order: those
    /// serving `service` (as their health service says) and not ejected;
    /// failing that, those serving it; failing that, every ready one.
    pub(super) fn ready(&self, service: Option<&str>) -> Vec<(Arc<Subchannel>, Arc<Connection>)> {
        let mut ready: Vec<_> = self
            .subchannels
            .iter()
            .filter_map(|s| s.ready().map(|c| (Arc::clone(s), c)))
            .collect();
        if let Some(service) = service
            && ready.iter().any(|(s, _)| s.serves(service))
        {
            ready.retain(|(s, _)| s.serves(service));
        }
        if ready.iter().any(|(s, _)| !s.is_ejected()) {
            ready.retain(|(s, _)| !s.is_ejected());
        }
        ready
    }
}
