//! One client connection: the handshake, a reader task that matches
//! responses to waiting calls, and a writer task that batches frames.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::driver::ResponseDriver;
use super::oneway::{OnewayRoutes, ServerFacts};
use super::polled::{PolledDriver, PolledReader};
use super::stream_call::StreamCall;
use crate::debug::model::PeerInfo as PeerModel;
use crate::debug::recorder::{ConnectionStats, MethodCounters, Side, recorder};
use crate::descriptor::{MethodDescriptor, ServiceDescriptor};
use crate::driver::{Driver, End, NoService};
use crate::protocol::frame::{Decoded, Frame};
use crate::protocol::hello::{Hello, Locality, MethodInfo, Role};
use crate::protocol::metadata::MetadataLimits;
use crate::protocol::session::cancel_budget::CancelRate;
use crate::protocol::session::{Event, FrameLimits, Session, SessionConfig, Sides, Timers};
use crate::protocol::status::Status;
use crate::select::Selection;
use crate::session::{CallerSide, Outbound, hello_frame, local_hello, read_hello};
use crate::transport::{Link, LinkError, LinkRx, LinkTuning, PeerInfo};

/// What a waiting call is answered through: a unary call's one-shot, or
/// a streaming call's receiving end.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// A unary call: the response frame, or why there is none.
    Call(oneshot::Sender<Result<Frame, Status>>),
    /// A streaming call.
    Stream(Arc<StreamCall>),
}

impl Waiter {
    /// Answers the call: its response frame, or why there is none.
    pub(crate) fn answer(self, result: Result<Frame, Status>) {
        match self {
            Self::Call(waiter) => {
                let _ = waiter.send(result);
            }
            Self::Stream(call) => call.answer(result),
        }
    }
}

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
    /// Shared memory: the most this side's pool for large bodies holds.
    pub(crate) pool_limit: Option<usize>,
    /// Shared memory: read the server's pooled bodies in place.
    pub(crate) read_in_place: Option<bool>,
    /// How much response metadata one call may carry.
    pub(crate) metadata_limits: MetadataLimits,
    /// Which settings set the frame limits, for messages.
    pub(crate) knobs: crate::session::LimitKnobs,
    /// Keepalive pings to the server.
    pub(crate) timers: Timers,
    /// How requests are compressed.
    pub(crate) compression: crate::protocol::compress::Compression,
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
    /// The largest body each end takes, and the settings that set them.
    limits: FrameLimits,
    /// How much response metadata one call may carry.
    pub(crate) metadata_limits: MetadataLimits,
    pub(crate) outgoing: Outbound,
    /// The connection's rules: this side's calls waiting for responses.
    pub(crate) session: Mutex<ClientSession>,
    closed: OnceLock<Status>,
    /// The record of the replica this connection reaches, once a channel's
    /// replica set owns it: its calls' outcomes feed outlier ejection.
    pub(crate) outlier: OnceLock<Arc<super::outlier::Outlier>>,
    draining: AtomicBool,
    _stop_reader: Option<oneshot::Sender<()>>,
    /// Set on links the waiting caller reads itself (shared memory).
    driver: OnceLock<Arc<dyn ResponseDriver>>,
    /// Where the server runs relative to this process.
    pub(crate) locality: Locality,
    /// How one-way calls to each service leave this process.
    pub(crate) oneway: OnewayRoutes,
    /// When the connection opened.
    opened: Instant,
    /// What compression did on this connection, both ways.
    compression: Arc<crate::protocol::compress::CompressionCounters>,
    /// Whether this side compresses what it sends, and why.
    pub(crate) compression_choice: crate::protocol::compress::CompressionChoice,
    /// This side's hello listed no codec: compressed payloads are refused.
    refuses_compressed: bool,
}

impl Connection {
    /// Runs the handshake on `link` and starts the connection's driver.
    /// On a link a caller can poll without a syscall (shared memory),
    /// callers read their responses themselves, polling for at most
    /// [`ConnectionConfig::shm_spin`].
    pub(crate) async fn open<L: Link>(
        mut link: L,
        selection: Selection,
        config: &ConnectionConfig,
    ) -> Result<Arc<Self>, Status> {
        link.tune(&LinkTuning {
            spin: config.shm_spin,
            bulk_threshold: config.bulk_threshold,
            pool_limit: config.pool_limit,
            read_in_place: config.read_in_place,
            ..LinkTuning::default()
        });
        let (conn, rx, rest, stopped) = Self::handshake(link, selection, config).await?;
        match rx.wake() {
            Some(wake) => {
                let polled = PolledDriver::new(rx, wake, config.shm_spin);
                let _ = conn
                    .driver
                    .set(Arc::clone(&polled) as Arc<dyn ResponseDriver>);
                conn.spawn_driver(PolledReader(polled), rest, stopped, config.timers);
            }
            None => conn.spawn_driver(rx, rest, stopped, config.timers),
        }
        Ok(conn)
    }

    /// Starts the task that reads `rx` (after `rest`, the frames that came
    /// behind the hello) and hands this connection its frames, until the
    /// link ends (then calls fail) or the connection is dropped (`stopped`).
    fn spawn_driver<R: LinkRx>(
        self: &Arc<Self>,
        mut rx: R,
        rest: Vec<Decoded>,
        stopped: oneshot::Receiver<()>,
        timers: Timers,
    ) {
        let session = Session::new(
            Instant::now(),
            SessionConfig {
                role: Role::Client,
                sides: Sides {
                    calls: false,
                    serves: false,
                    forwards_to_caller: true,
                },
                limits: self.limits(),
                max_pending: 0,
                max_in_flight: 0,
                cancel_rate: CancelRate::default(),
                timers,
            },
        )
        .with_compression_counters(Arc::clone(&self.compression))
        .refusing_compressed_if(self.refuses_compressed);
        let caller = Arc::downgrade(self) as Weak<dyn CallerSide>;
        let weak = Arc::downgrade(self);
        let url = self.url.clone();
        let mut driver = Driver::new(
            session,
            self.outgoing.clone(),
            NoService,
            Some(caller),
            url.clone(),
        );
        tokio::spawn(async move {
            let end = driver.run(&mut rx, rest, None, Some(stopped)).await;
            let status = match end {
                End::PeerClosed => ended_status(&url, Ok(false)),
                End::Failed(why) => link_failed(&url, &why),
                // The connection was dropped: nobody is left to tell. (A
                // failed writer closes the connection itself, saying so.)
                End::Stopped | End::WriteFailed(_) => return,
            };
            if let Some(conn) = weak.upgrade() {
                conn.close(status);
            }
        });
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
        let mut hello = local_hello(Role::Client, Vec::new(), config.frame_limit, 0);
        // A client whose compression is off reads none either.
        if config.compression.mode() == crate::protocol::compress::CompressionMode::Off {
            hello.codecs = 0;
        }
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
        selection: Selection,
        peer: PeerInfo,
        hello: &Hello,
        peer_hello: Hello,
        outgoing: Outbound,
        config: &ConnectionConfig,
        stop_reader: Option<oneshot::Sender<()>>,
    ) -> Arc<Self> {
        let selection = crate::select::select(crate::select::HandshakeNote {
            selection,
            local: &hello.host,
            peer: &peer_hello.host,
        });
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
        let compression = Arc::new(crate::protocol::compress::CompressionCounters::default());
        let choice =
            crate::session::compression_choice(&config.compression, transport, hello, &peer_hello);
        if let Some(compressor) = choice.compressor(Arc::clone(&compression)) {
            outgoing.compress_with(compressor);
        }
        outgoing.peer_reads(peer_hello.features);
        stats.track_compression(&choice, Arc::clone(&compression));
        stats.event("compression", choice.reason.clone());
        let locality = hello.host.locality(&peer_hello.host);
        let limits = FrameLimits {
            own: config.frame_limit,
            peer: peer_hello.max_frame,
            knobs: config.knobs,
        };
        Arc::new(Self {
            locality,
            oneway: OnewayRoutes::default(),
            selection,
            peer,
            limits,
            metadata_limits: config.metadata_limits,
            peer_hello,
            url,
            methods,
            stats,
            outgoing,
            session: Mutex::new(
                Session::new(
                    Instant::now(),
                    SessionConfig {
                        role: hello.role,
                        sides: Sides {
                            calls: true,
                            serves: false,
                            forwards_to_caller: false,
                        },
                        limits,
                        max_pending: config.max_pending,
                        max_in_flight: 0,
                        cancel_rate: CancelRate::default(),
                        timers: Timers::default(),
                    },
                )
                .with_compression_counters(Arc::clone(&compression))
                .refusing_compressed_if(hello.codecs == 0),
            ),
            closed: OnceLock::new(),
            outlier: OnceLock::new(),
            draining: AtomicBool::new(false),
            _stop_reader: stop_reader,
            driver: OnceLock::new(),
            opened: Instant::now(),
            compression,
            compression_choice: choice,
            refuses_compressed: hello.codecs == 0,
        })
    }

    /// A stand-in for a server that is down but whose message queue is
    /// there: it takes no calls (every call reconnects first), and its
    /// selection says that one-way calls wait in the queue.
    pub(crate) fn placeholder(target: &str, queue: &str, config: &ConnectionConfig) -> Arc<Self> {
        let selection = crate::select::select(crate::select::Fixed::QueueStandIn { target, queue });
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

    /// Whether the connection is closed (not merely draining).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get().is_some()
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
        let waiters: Vec<Waiter> = match self.session.lock() {
            Ok(mut session) => session.close(status.clone()).collect(),
            Err(_) => Vec::new(),
        };
        if first {
            tracing::debug!(url = %self.url, pending = waiters.len(), %status, "connection closed");
        }
        for waiter in waiters {
            waiter.answer(Err(status.clone()));
        }
    }

    /// The frame limits of both ends.
    pub(crate) fn limits(&self) -> FrameLimits {
        self.limits
    }

    /// Takes a frame the peer sent this side as a caller: a response, a
    /// goaway, a ping, a stream's message or credit.
    pub(crate) fn handle(&self, decoded: Decoded) {
        self.handle_all(std::iter::once(decoded));
    }

    /// Takes the frames the peer sent this side as a caller, in order,
    /// under one lock of the call table: a stream's messages that arrived
    /// together reach its reader together (one lock, one wake-up).
    pub(crate) fn handle_all(&self, frames: impl IntoIterator<Item = Decoded>) {
        let mut answers: Vec<(Waiter, Result<Frame, Status>)> = Vec::new();
        let mut transmits = Vec::new();
        let mut going_away = Vec::new();
        let mut broken = None;
        {
            let Ok(mut session) = self.session.lock() else {
                return;
            };
            let mut handled = |session: &mut ClientSession| {
                while let Some(event) = session.poll_event() {
                    match event {
                        // In before the answers below end their streams.
                        Event::StreamData {
                            call_id,
                            ours: true,
                            messages,
                        } => {
                            if let Some(Waiter::Stream(call)) = session.waiter(call_id) {
                                call.data(messages);
                            }
                        }
                        Event::StreamCredit {
                            call_id,
                            ours: true,
                            credit,
                        } => {
                            if let Some(Waiter::Stream(call)) = session.waiter(call_id) {
                                call.credit(credit);
                            }
                        }
                        Event::Response { waiter, frame } => answers.push((waiter, Ok(frame))),
                        Event::CallFailed { waiter, status } => answers.push((waiter, Err(status))),
                        Event::PeerGoingAway(status) => going_away.push(status),
                        Event::Cancelled { handle, .. } | Event::StreamFailed { handle, .. } => {
                            match handle {}
                        }
                        Event::Stray { kind, call_id } => {
                            tracing::debug!(url = %self.url, ?kind, call_id, "dropped a stream frame of a call that has no stream (it ended)");
                        }
                        // This session runs no clocks and serves nothing.
                        Event::Request(_)
                        | Event::ForCaller(_)
                        | Event::Dropped { .. }
                        | Event::StreamData { .. }
                        | Event::StreamEnd { .. }
                        | Event::StreamCredit { .. }
                        | Event::PeerSilent(_)
                        | Event::Idle(_) => {}
                    }
                }
                transmits.extend(std::iter::from_fn(|| session.poll_transmit()));
            };
            for decoded in frames {
                // A stream's messages that come one after another are
                // taken as one run; anything else after what came before
                // it (a Response must not end a stream before its last
                // messages are in).
                let data = decoded.is_stream_data();
                if !data {
                    handled(&mut session);
                }
                // A session that serves nothing runs no clocks (the
                // driver's session pings), so it is given the instant the
                // connection opened rather than a clock read per frame.
                if let Err(status) = session.handle_frame(self.opened, decoded) {
                    // Only the server's streams can break a rule here (a
                    // message beyond the credit this side granted): the
                    // connection is not to be trusted any more.
                    broken = Some(status);
                    break;
                }
                if !data {
                    handled(&mut session);
                }
            }
            handled(&mut session);
        }
        for transmit in transmits {
            // Control frames (Pong, Unimplemented, Cancel) wait for nothing.
            let _ = self.outgoing.try_send(transmit.bytes.into());
        }
        for status in going_away {
            self.draining.store(true, Ordering::Release);
            self.stats.draining();
            self.stats.event("goaway", status.to_string());
            tracing::debug!(url = %self.url, %status, "server sent goaway");
        }
        for (waiter, result) in answers {
            waiter.answer(result);
        }
        if let Some(status) = broken {
            tracing::warn!(url = %self.url, %status, "the server broke the protocol; closing the connection");
            self.stats.event("protocol error", status.to_string());
            self.close(Status::unavailable(format!(
                "{}: the server broke the protocol ({status}); calls made now reconnect",
                self.url
            )));
        }
    }
}

impl CallerSide for Connection {
    fn handle(&self, decoded: Decoded) {
        Self::handle(self, decoded);
    }

    fn handle_all(&self, frames: Vec<Decoded>) {
        Self::handle_all(self, frames);
    }

    fn link_ended(&self, end: Result<bool, LinkError>) {
        self.close(ended_status(&self.url, end));
    }
}

/// The session of a client connection: its calls wait on [`Waiter`]s; it
/// serves nothing.
pub(crate) type ClientSession = Session<Waiter, std::convert::Infallible>;

/// The status calls in flight get when the link to `url` ended: cleanly
/// (`Ok(false)`) or with an error.
pub(crate) fn ended_status(url: &str, end: Result<bool, LinkError>) -> Status {
    match end {
        Ok(_) => Status::unavailable(format!(
            "{url}: the server closed the connection; it may have exited or restarted — calls \
             in flight fail, calls made now reconnect"
        )),
        Err(err) => link_failed(url, &err),
    }
}

/// The status calls in flight get when the link to `url` failed with `err`.
fn link_failed(url: &str, err: &dyn std::fmt::Display) -> Status {
    Status::unavailable(format!(
        "{url}: the connection failed ({err}); calls made now reconnect"
    ))
}
