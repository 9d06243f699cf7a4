//! One client connection: the handshake, a reader task that matches
//! responses to waiting calls, and a writer task that batches frames.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

use super::driver::ResponseDriver;
use super::oneway::{OnewayRoutes, ServerFacts};
use crate::debug::model::PeerInfo as PeerModel;
use crate::debug::recorder::{ConnectionStats, MethodCounters, Side, recorder};
use crate::descriptor::{MethodDescriptor, ServiceDescriptor};
use crate::protocol::call::ClientCalls;
use crate::protocol::frame::{Decoded, Frame, Kind};
use crate::protocol::hello::{Hello, Locality, MethodInfo, Role};
use crate::protocol::metadata::MetadataLimits;
use crate::protocol::status::Status;
use crate::select::Selection;
use crate::session::{
    Outbound, frame_status, hello_frame, local_hello, pong_frame, read_hello, status_frame,
};
use crate::transport::{Link, LinkError, LinkRx, PeerInfo};

/// What a waiting call receives: the response frame, or why there is none.
pub(crate) type Waiter = oneshot::Sender<Result<Frame, Status>>;

/// Settings a connection is opened with.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionConfig {
    pub(crate) frame_limit: u32,
    pub(crate) max_pending: usize,
    pub(crate) handshake_timeout: Duration,
    /// The longest a caller polls a shared-memory ring (None: the default).
    pub(crate) shm_spin: Option<Duration>,
    /// Request bodies above this go as bulk regions (None: the default).
    pub(crate) bulk_threshold: Option<usize>,
    /// How much response metadata one call may carry.
    pub(crate) metadata_limits: MetadataLimits,
    /// Which settings set the frame limits, for messages.
    pub(crate) knobs: crate::session::LimitKnobs,
}

/// One established connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) selection: Selection,
    pub(crate) peer: PeerInfo,
    pub(crate) peer_hello: Hello,
    pub(crate) url: String,
    /// The peer's methods by id, with this connection's counters for each.
    methods: HashMap<u32, (MethodInfo, Arc<MethodCounters>)>,
    /// What the debug views show of this connection.
    pub(crate) stats: Arc<ConnectionStats>,
    /// Largest request body the peer accepts.
    pub(crate) peer_frame_limit: u32,
    /// Largest response body this side accepts.
    pub(crate) frame_limit: u32,
    /// How much response metadata one call may carry.
    pub(crate) metadata_limits: MetadataLimits,
    /// Which settings set the frame limits, for messages.
    pub(crate) knobs: crate::session::LimitKnobs,
    pub(crate) outgoing: Outbound,
    pub(crate) calls: Mutex<ClientCalls<Waiter>>,
    closed: OnceLock<Status>,
    draining: AtomicBool,
    _stop_reader: Option<oneshot::Sender<()>>,
    /// Set on links the waiting caller reads itself (shared memory).
    driver: OnceLock<Arc<dyn ResponseDriver>>,
    /// Where the server runs relative to this process.
    pub(crate) locality: Locality,
    /// How one-way calls to each service leave this process.
    pub(crate) oneway: OnewayRoutes,
}

impl Connection {
    /// Runs the handshake on `link` and starts the connection's tasks.
    pub(crate) async fn open<L: Link>(
        link: L,
        selection: Selection,
        config: &ConnectionConfig,
    ) -> Result<Arc<Self>, Status> {
        let (conn, rx, rest, stopped) = Self::handshake(link, selection, config).await?;
        tokio::spawn(read_loop(Arc::downgrade(&conn), rx, rest, stopped));
        Ok(conn)
    }

    /// [`open`](Self::open) for shared memory: callers read their responses
    /// from the ring themselves, polling for at most `spin`.
    #[cfg(target_os = "linux")]
    pub(crate) async fn open_shm(
        link: crate::transport::shm::ShmLink,
        selection: Selection,
        config: &ConnectionConfig,
    ) -> Result<Arc<Self>, Status> {
        let spin = config.shm_spin;
        let link = match spin {
            Some(spin) => link.with_spin(spin),
            None => link,
        };
        let link = match config.bulk_threshold {
            Some(bytes) => link.with_bulk_threshold(bytes),
            None => link,
        };
        let (conn, rx, rest, stopped) = Self::handshake(link, selection, config).await?;
        let driver = super::shm::ShmDriver::new(rx, spin);
        let _ = conn
            .driver
            .set(Arc::clone(&driver) as Arc<dyn ResponseDriver>);
        for decoded in rest {
            conn.handle(decoded);
        }
        tokio::spawn(super::shm::read_loop(
            Arc::downgrade(&conn),
            driver,
            stopped,
        ));
        Ok(conn)
    }

    /// Exchanges hellos and starts the writer; the caller starts a reader
    /// on the receiving half (frames that came behind the hello included)
    /// that stops when the connection is dropped.
    async fn handshake<L: Link>(
        link: L,
        selection: Selection,
        config: &ConnectionConfig,
    ) -> Result<(Arc<Self>, L::Rx, Vec<Decoded>, oneshot::Receiver<()>), Status> {
        let peer = link.peer();
        let url = peer.addr.clone();
        let (mut tx, mut rx) = link.split(config.frame_limit);
        let hello = local_hello(Role::Client, Vec::new(), config.frame_limit, 0);
        crate::transport::LinkTx::send(&mut tx, &hello_frame(&hello))
            .await
            .map_err(|err| {
                let message = format!("could not send hello to {url}: {err}");
                // A TLS refusal (QUIC: after the handshake) is no outage.
                if err.kind() == std::io::ErrorKind::PermissionDenied {
                    Status::unauthenticated(message)
                } else {
                    Status::unavailable(message)
                }
            })?;
        let mut rest = Vec::new();
        let peer_hello = read_hello(&mut rx, Role::Server, config.handshake_timeout, &mut rest)
            .await
            .map_err(|s| Status::new(s.code(), format!("handshake with {url}: {}", s.message())))?;
        let (outgoing, writer) = Outbound::new(tx);
        let (stop_reader, stopped) = oneshot::channel();
        let conn = Self::established(
            selection,
            peer,
            &hello,
            peer_hello,
            outgoing,
            config,
            Some(stop_reader),
        );
        let weak = Arc::downgrade(&conn);
        tokio::spawn(async move {
            if let Err(err) = writer.await
                && let Some(conn) = weak.upgrade()
            {
                conn.close(Status::unavailable(format!(
                    "writing to {} failed: {err}",
                    conn.url
                )));
            }
        });
        tracing::debug!(url = %conn.url, transport = %conn.selection.transport, "connected");
        Ok((conn, rx, rest, stopped))
    }

    /// A connection whose handshake is done, for calls over a link that
    /// something else reads (a peer link such as a pipe, where one driver
    /// serves the other side's calls and hands this connection the
    /// responses through [`handle`](Self::handle)).
    pub(crate) fn established(
        mut selection: Selection,
        peer: PeerInfo,
        hello: &Hello,
        peer_hello: Hello,
        outgoing: Outbound,
        config: &ConnectionConfig,
        stop_reader: Option<oneshot::Sender<()>>,
    ) -> Arc<Self> {
        crate::select::note_locality(&mut selection, &hello.host, &peer_hello.host);
        let transport = selection.transport;
        let url = peer.addr.clone();
        let methods = peer_hello
            .services
            .iter()
            .flat_map(|s| {
                s.methods.iter().map(move |m| {
                    let counters = recorder().method(&s.name, &m.name, transport, Side::Client);
                    (m.id, (m.clone(), counters))
                })
            })
            .collect();
        let stats = recorder().connection(
            Side::Client,
            &selection,
            PeerModel {
                addr: peer.addr.clone(),
                pid: peer.pid.or(Some(peer_hello.pid)),
                uid: peer.uid,
                process: peer_hello.process_name.clone(),
                hostname: peer_hello.host.hostname.clone(),
                locality: hello.host.locality(&peer_hello.host).describe().to_owned(),
            },
        );
        stats.track_bulk(outgoing.bulk_counters());
        stats.event(
            "connected",
            format!("{transport} to {url}: {}", selection.reason),
        );
        let locality = hello.host.locality(&peer_hello.host);
        Arc::new(Self {
            locality,
            oneway: OnewayRoutes::default(),
            selection,
            peer,
            peer_frame_limit: peer_hello.max_frame,
            frame_limit: config.frame_limit,
            metadata_limits: config.metadata_limits,
            knobs: config.knobs,
            peer_hello,
            url,
            methods,
            stats,
            outgoing,
            calls: Mutex::new(ClientCalls::new(config.max_pending)),
            closed: OnceLock::new(),
            draining: AtomicBool::new(false),
            _stop_reader: stop_reader,
            driver: OnceLock::new(),
        })
    }

    /// A stand-in for a server that is down but whose message queue is
    /// there: it takes no calls (every call reconnects first), and its
    /// selection says that one-way calls wait in the queue.
    pub(crate) fn placeholder(target: &str, queue: &str, config: &ConnectionConfig) -> Arc<Self> {
        let selection = crate::select::queue_stand_in(target, queue);
        let hello = local_hello(Role::Client, Vec::new(), config.frame_limit, 0);
        let peer_hello = Hello {
            role: Role::Server,
            ..hello.clone()
        };
        let outgoing = Outbound::closed();
        let peer = PeerInfo {
            addr: crate::transport::Endpoint::MessageQueue(queue.to_owned()).to_string(),
            pid: None,
            uid: Some(crate::sys::uid()),
        };
        let conn = Self::established(selection, peer, &hello, peer_hello, outgoing, config, None);
        conn.close(Status::unavailable(format!(
            "no live server for {target:?} yet; one-way calls wait in its queue {queue}"
        )));
        conn
    }

    /// What one-way routing needs to know of this connection's server.
    pub(crate) fn server_facts(&self, service: &str) -> ServerFacts {
        ServerFacts {
            locality: Some(self.locality),
            uid: Some(self.peer_hello.uid),
            queue: self.peer_hello.queue(service).map(str::to_owned),
            expected: None,
        }
    }

    /// The driver callers poll while waiting, on links that have one.
    pub(crate) fn driver(&self) -> Option<&dyn ResponseDriver> {
        self.driver.get().map(|driver| &**driver)
    }

    /// Whether new calls may use this connection.
    pub(crate) fn is_usable(&self) -> bool {
        self.closed.get().is_none() && !self.draining.load(Ordering::Acquire)
    }

    /// Why the connection cannot take calls, if it cannot.
    pub(crate) fn unusable_reason(&self) -> Option<Status> {
        if let Some(status) = self.closed.get() {
            return Some(status.clone());
        }
        self.draining.load(Ordering::Acquire).then(|| {
            Status::unavailable(format!(
                "the server at {} is shutting down and takes no new calls; retry on a new connection",
                self.url
            ))
        })
    }

    /// Checks that the peer serves `method` with the same signature; returns
    /// the method's counters on this connection.
    pub(crate) fn check_method(
        &self,
        service: &ServiceDescriptor,
        method: &MethodDescriptor,
    ) -> Result<&Arc<MethodCounters>, Status> {
        match self.methods.get(&method.id) {
            Some((theirs, counters)) if theirs.fingerprint == method.fingerprint => Ok(counters),
            Some((theirs, _)) => Err(Status::failed_precondition(format!(
                "{} has a different signature on each side: this client has `{}`, the server \
                 (pid {}) has `{}`; rebuild both against the same version of the trait",
                method.full_name, method.signature, self.peer_hello.pid, theirs.signature
            ))),
            None => Err(self.missing(service, Some(method))),
        }
    }

    /// The Unimplemented status for a service or method the peer lacks.
    pub(crate) fn missing(
        &self,
        service: &ServiceDescriptor,
        method: Option<&MethodDescriptor>,
    ) -> Status {
        let process = format!(
            "the server at {} ({} pid {})",
            self.url, self.peer_hello.process_name, self.peer_hello.pid
        );
        match (self.peer_hello.service(service.name), method) {
            (None, _) => {
                let served: Vec<&str> = self
                    .peer_hello
                    .services
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                Status::unimplemented(format!(
                    "{process} does not serve {}; it serves [{}] — is the name or address right?",
                    service.name,
                    served.join(", ")
                ))
            }
            (Some(theirs), Some(method)) => {
                let names: Vec<&str> = theirs.methods.iter().map(|m| m.name.as_str()).collect();
                Status::unimplemented(format!(
                    "{process} does not implement {}; its {} has [{}] — the server and this \
                     client were built from different versions of the trait; rebuild both \
                     against the same one",
                    method.full_name,
                    service.name,
                    names.join(", ")
                ))
            }
            (Some(_), None) => Status::internal("service present; no method given"),
        }
    }

    /// Fails every pending call with `status` and refuses new ones.
    pub(crate) fn close(&self, status: Status) {
        let first = self.closed.set(status.clone()).is_ok();
        if first {
            self.stats.closed();
            self.stats.event("closed", status.message());
        }
        let waiters: Vec<Waiter> = match self.calls.lock() {
            Ok(mut calls) => calls.close(status.clone()).collect(),
            Err(_) => Vec::new(),
        };
        if first {
            tracing::debug!(url = %self.url, pending = waiters.len(), %status, "connection closed");
        }
        for waiter in waiters {
            let _ = waiter.send(Err(status.clone()));
        }
    }

    /// Takes a frame the peer sent this side as a caller: a response, a
    /// goaway, a ping.
    pub(crate) fn handle(&self, decoded: Decoded) {
        let frame = match decoded {
            Decoded::Frame(frame) => frame,
            Decoded::Oversized(header) => {
                if let Some(waiter) = self.take_waiter(header.call_id) {
                    let _ = waiter.send(Err(Status::resource_exhausted(format!(
                        "the response of {} bytes exceeds this client's limit of {} bytes (the \
                         server takes requests up to {} bytes); raise this side's limit with {} \
                         or ask for less per call",
                        header.body_len(),
                        self.frame_limit,
                        self.peer_frame_limit,
                        self.knobs.own
                    ))));
                }
                return;
            }
        };
        match frame.header.kind {
            Kind::Response => {
                if let Some(waiter) = self.take_waiter(frame.header.call_id) {
                    let _ = waiter.send(Ok(frame));
                }
            }
            Kind::GoAway => {
                self.draining.store(true, Ordering::Release);
                self.stats.draining();
                self.stats.event("goaway", frame_status(&frame).to_string());
                tracing::debug!(url = %self.url, status = %frame_status(&frame), "server sent goaway");
            }
            Kind::Ping => {
                let _ = self
                    .outgoing
                    .try_send(pong_frame(frame.header.call_id).into());
            }
            Kind::Request => {
                let status =
                    Status::unimplemented("this process serves nothing on its client connections");
                let _ = self
                    .outgoing
                    .try_send(status_frame(Kind::Response, frame.header.call_id, &status).into());
            }
            _ => {}
        }
    }

    fn take_waiter(&self, call_id: u64) -> Option<Waiter> {
        self.calls.lock().ok()?.complete(call_id)
    }
}

async fn read_loop<R: LinkRx>(
    conn: Weak<Connection>,
    mut rx: R,
    mut frames: Vec<Decoded>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut received = Ok(true);
    loop {
        // Frames decoded before an error or the end still count.
        if !frames.is_empty() {
            let Some(conn) = conn.upgrade() else { return };
            for decoded in frames.drain(..) {
                conn.handle(decoded);
            }
        }
        if let Ok(true) = received {
            received = tokio::select! {
                received = rx.recv(&mut frames) => received,
                _ = &mut stopped => return,
            };
            continue;
        }
        if let Some(conn) = conn.upgrade() {
            conn.close(ended_status(&conn.url, received));
        }
        return;
    }
}

/// The status calls in flight get when the link to `url` ended: cleanly
/// (`Ok(false)`) or with an error.
pub(crate) fn ended_status(url: &str, end: Result<bool, LinkError>) -> Status {
    let why = match end {
        Ok(_) => "the server closed the connection; it may have exited or restarted — calls in \
                  flight fail, calls made now reconnect"
            .to_owned(),
        Err(err) => format!("the connection failed ({err}); calls made now reconnect"),
    };
    Status::unavailable(format!("{url}: {why}"))
}
