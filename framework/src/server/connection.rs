//! One server connection: handlers run inside the task that reads requests
//! (no hand-off to another task on the hot path), responses are batched by
//! a writer task, cancellation and deadlines stop handlers.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tracing::Instrument;

use super::cancel_budget::CancelBudget;
use super::{Phase, ServerShared};
use crate::client::Connection;
use crate::context::{ConnectionInfo, Context};
use crate::debug::model::PeerInfo as PeerModel;
use crate::debug::recorder::{ConnectionStats, MethodCounters, Side, counters_by_id, recorder};
use crate::protocol::call::ServerCalls;
use crate::protocol::frame::{Decoded, Frame, HEADER_LEN, Header, Kind};
use crate::protocol::hello::{Hello, Role};
use crate::protocol::metadata::{Metadata, MetadataError};
use crate::protocol::status::Code;
use crate::protocol::status::Status;
use crate::select::{Selection, Transport};
use crate::service::{Reply, Request};
use crate::session::{
    Outbound, Outgoing, hello_frame, local_hello, pong_frame, read_hello, status_frame,
    status_frame_with,
};
use crate::transport::bulk::BulkBody;
use crate::transport::{Link, LinkError, LinkRx, PeerIdentity, PeerInfo};

/// How a handler ended: its call id, whether it was one-way, its result,
/// and the response metadata it set that its reply did not carry yet.
type Outcome = (u64, bool, Result<Reply, Status>, Metadata);

/// Serves one link until the peer leaves or the server stops.
pub(crate) async fn serve<L: Link>(
    shared: Arc<ServerShared>,
    link: L,
    mut phase: watch::Receiver<Phase>,
) {
    let transport = link.transport();
    let peer = link.peer();
    let identity = link.identity();
    let (mut tx, mut rx) = link.split(shared.config.frame_limit);
    let mut frames = Vec::new();
    let client = match read_hello(
        &mut rx,
        Role::Client,
        shared.config.handshake_timeout,
        &mut frames,
    )
    .await
    {
        Ok(hello) => hello,
        Err(status) => {
            tracing::debug!(peer = %peer.addr, %status, "handshake failed");
            let _ =
                crate::transport::LinkTx::send(&mut tx, &status_frame(Kind::GoAway, 0, &status))
                    .await;
            return;
        }
    };
    let hello = server_hello(&shared, Role::Server);
    if crate::transport::LinkTx::send(&mut tx, &hello_frame(&hello))
        .await
        .is_err()
    {
        return;
    }
    let (outgoing, writer) = Outbound::new(tx);
    let writer = tokio::spawn(writer);
    let selection = crate::select::accepted(transport);
    let link = Established {
        peer,
        identity,
        hello,
        peer_hello: client,
        selection,
        frames,
        outgoing,
        client: None,
    };
    drive(shared, link, &mut rx, &mut phase).await;
    let _ = writer.await;
}

/// Whether a receive error means the peer is gone (as opposed to a peer
/// that broke the protocol, which is told why before the connection ends).
fn link_lost(err: &LinkError) -> bool {
    use std::io::ErrorKind;
    match err {
        LinkError::TruncatedFrame { .. } => true,
        LinkError::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::TimedOut
                | ErrorKind::NotConnected
                | ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// This server's hello in `role`.
pub(crate) fn server_hello(shared: &ServerShared, role: Role) -> Hello {
    let mut hello = local_hello(
        role,
        shared.router.infos(),
        shared.config.frame_limit,
        u32::try_from(shared.config.max_in_flight).unwrap_or(u32::MAX),
    );
    hello.queues = shared.queues.clone();
    hello.endpoints = shared.endpoints.get().cloned().unwrap_or_default();
    hello
}

/// A link whose handshake is done, ready for [`drive`].
pub(crate) struct Established {
    pub(crate) peer: PeerInfo,
    /// The peer's verified certificate identity, if the link has one.
    pub(crate) identity: Option<PeerIdentity>,
    pub(crate) hello: Hello,
    pub(crate) peer_hello: Hello,
    pub(crate) selection: Selection,
    /// Frames that arrived right behind the peer's hello.
    pub(crate) frames: Vec<Decoded>,
    /// The queue of the link's writer task.
    pub(crate) outgoing: Outbound,
    /// On a peer link, this side's calls to the other side: responses are
    /// handed to it.
    pub(crate) client: Option<Arc<Connection>>,
}

/// Why [`drive`] returned.
#[derive(Debug)]
pub(crate) enum End {
    /// The peer closed the link.
    PeerClosed,
    /// The peer broke the protocol or the link failed.
    Failed(String),
    /// The server stopped.
    Stopped,
}

/// Serves requests arriving on `rx` (and, on a peer link, passes responses
/// to this side's caller) until the link ends or the server stops.
pub(crate) async fn drive<R: LinkRx>(
    shared: Arc<ServerShared>,
    link: Established,
    rx: &mut R,
    phase: &mut watch::Receiver<Phase>,
) -> End {
    let transport = link.selection.transport;
    let peer_hello = &link.peer_hello;
    let info = Arc::new(ConnectionInfo {
        transport,
        peer: link.peer,
        identity: link.identity,
        peer_process: peer_hello.process_name.clone(),
        peer_claimed_pid: peer_hello.pid,
        bulk_threshold: link.outgoing.bulk_threshold(),
        peer_frame_limit: peer_hello.max_frame,
        knobs: shared.config.knobs,
        own_frame_limit: shared.config.frame_limit,
    });
    tracing::debug!(peer = %info.peer.addr, %transport, client = %peer_hello.process_name, "accepted");
    let stats = recorder().connection(
        Side::Server,
        &link.selection,
        PeerModel {
            addr: info.peer.addr.clone(),
            pid: info.peer.pid.or(Some(peer_hello.pid)),
            uid: info.peer.uid,
            process: peer_hello.process_name.clone(),
            hostname: peer_hello.host.hostname.clone(),
            locality: link
                .hello
                .host
                .locality(&peer_hello.host)
                .describe()
                .to_owned(),
        },
    );
    stats.track_bulk(link.outgoing.bulk_counters());
    stats.event(
        "accepted",
        format!(
            "{} (pid {}) over {transport}",
            peer_hello.process_name, peer_hello.pid
        ),
    );
    let counters = counters_by_id(shared.router.methods(), transport, Side::Server);
    let max_in_flight = shared.config.max_in_flight;
    let shared_cancel_rate = shared.config.cancel_rate;
    let mut conn = ServerConnection {
        shared,
        info,
        outgoing: link.outgoing,
        calls: ServerCalls::new(max_in_flight),
        handlers: FuturesUnordered::new(),
        client_frame_limit: peer_hello.max_frame,
        draining: false,
        reading: true,
        stats,
        counters,
        client: link.client,
        end: End::Stopped,
        cancels: CancelBudget::new(shared_cancel_rate, Instant::now()),
        introspection_denied: None,
    };
    conn.introspection_denied = introspection_denied(&conn.shared, &conn.info);
    conn.run(rx, link.frames, phase).await;
    conn.stats.closed();
    conn.stats.event(
        "closed",
        format!("{} calls still running were cancelled", conn.calls.len()),
    );
    // Dropping the handlers cancels whatever still runs; dropping the sender
    // lets the writer flush and close.
    std::mem::replace(&mut conn.end, End::Stopped)
}

struct ServerConnection {
    shared: Arc<ServerShared>,
    info: Arc<ConnectionInfo>,
    outgoing: Outbound,
    calls: ServerCalls<InFlight>,
    handlers: FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>>>,
    client_frame_limit: u32,
    /// No new calls are admitted; the connection ends when the last
    /// handler finishes.
    draining: bool,
    /// Frames are still read (false after a protocol error).
    reading: bool,
    /// What the debug views show of this connection.
    stats: Arc<ConnectionStats>,
    /// Per-method counters, by method id.
    counters: HashMap<u32, Arc<MethodCounters>>,
    /// This side's calls over the same link (peer links only).
    client: Option<Arc<Connection>>,
    /// Why the connection ended.
    end: End,
    /// How many more cancels the client may send.
    cancels: CancelBudget,
    /// Why this connection's peer may not call the introspection service
    /// (decided once per connection), if it may not.
    introspection_denied: Option<String>,
}

/// A call being handled.
struct InFlight {
    abort: AbortHandle,
    started: Instant,
    received: usize,
    counters: Arc<MethodCounters>,
}

impl ServerConnection {
    async fn run<R: LinkRx>(
        &mut self,
        rx: &mut R,
        mut frames: Vec<Decoded>,
        phase: &mut watch::Receiver<Phase>,
    ) {
        let writer_failed = self.outgoing.writer_failed();
        tokio::pin!(writer_failed);
        loop {
            for decoded in std::mem::take(&mut frames) {
                if let Err(status) = self.handle(decoded).await {
                    self.protocol_error(status).await;
                    break;
                }
            }
            if self.draining && self.handlers.is_empty() {
                return;
            }
            tokio::select! {
                biased;
                // Nothing more reaches the client: end the connection, so
                // its calls fail now instead of at their deadlines. First,
                // so that a client that keeps sending cannot starve it.
                failure = &mut writer_failed => {
                    let reason = failure.reason;
                    if failure.peer_left {
                        tracing::debug!(peer = %self.info.peer.addr, %reason, "the client left (seen writing)");
                    } else {
                        tracing::warn!(peer = %self.info.peer.addr, %reason, "writing to the client failed; closing the connection");
                    }
                    self.stats.event("write failed", reason.clone());
                    self.end = End::Failed(format!("writing to the client failed: {reason}"));
                    return;
                }
                Some((call_id, oneway, result, metadata)) = self.handlers.next(), if !self.handlers.is_empty() => {
                    // Sending waits while the client does not read its
                    // replies (OUTGOING_BYTES queued); a server that stops
                    // must not wait for it.
                    tokio::select! {
                        biased;
                        _ = phase.wait_for(|p| *p == Phase::Stopped) => {
                            self.end = End::Stopped;
                            return;
                        }
                        () = self.finish(call_id, oneway, result, &metadata) => {}
                    }
                }
                received = rx.recv(&mut frames), if self.reading => match received {
                    Ok(true) => {}
                    // The client is gone: nobody waits for the handlers.
                    Ok(false) => {
                        self.stats.event("peer closed", "the client closed the connection");
                        self.end = End::PeerClosed;
                        return;
                    }
                    // The link itself is gone (reset, timed out, cut mid-frame):
                    // nobody can receive a response, so the handlers are
                    // dropped (cancelled) at once.
                    Err(err) if link_lost(&err) => {
                        self.stats.event("peer lost", err.to_string());
                        self.end = End::Failed(err.to_string());
                        return;
                    }
                    Err(err) => {
                        self.end = End::Failed(err.to_string());
                        // Frames decoded before the bad bytes are still served.
                        for decoded in std::mem::take(&mut frames) {
                            if self.handle(decoded).await.is_err() {
                                break;
                            }
                        }
                        self.protocol_error(Status::invalid_argument(format!(
                            "{err}; closing the connection"
                        )))
                        .await;
                    }
                },
                changed = phase.changed() => {
                    let now = *phase.borrow();
                    if changed.is_err() || now == Phase::Stopped {
                        return;
                    }
                    if now == Phase::Draining && !self.draining {
                        self.draining = true;
                        self.stats.draining();
                        self.stats.event("goaway", "the server is shutting down");
                        let status = Status::unavailable(
                            "the server is shutting down; calls in flight finish, new calls go elsewhere",
                        );
                        self.send_unless_backed_up(status_frame(Kind::GoAway, 0, &status));
                    }
                }
            }
        }
    }

    /// The peer broke the protocol: say why, read nothing more, let the calls
    /// in flight finish, then close.
    async fn protocol_error(&mut self, status: Status) {
        tracing::warn!(peer = %self.info.peer.addr, %status, "closing connection");
        self.stats.draining();
        self.stats.event("protocol error", status.to_string());
        self.send_unless_backed_up(status_frame(Kind::GoAway, 0, &status));
        self.reading = false;
        self.draining = true;
    }

    async fn send(&mut self, frame: Vec<u8>) {
        let _ = self.outgoing.send(frame.into()).await;
    }

    /// Sends a control frame (GoAway) if the client is reading; one whose
    /// replies are backed up would not read it either, and waiting for it
    /// must not hold up a drain or a close.
    fn send_unless_backed_up(&mut self, frame: Vec<u8>) {
        let _ = self.outgoing.try_send(frame.into());
    }

    /// Handles one frame; an error closes the connection.
    async fn handle(&mut self, decoded: Decoded) -> Result<(), Status> {
        let frame = match decoded {
            Decoded::Frame(frame) => frame,
            Decoded::Oversized(header) => {
                if header.kind == Kind::Request {
                    let status = Status::resource_exhausted(format!(
                        "the request of {} bytes exceeds this server's limit of {} bytes (the \
                         client takes responses up to {} bytes); send less per call or raise {}",
                        header.body_len(),
                        self.shared.config.frame_limit,
                        self.client_frame_limit,
                        self.shared.config.knobs.own
                    ));
                    self.send(status_frame(Kind::Response, header.call_id, &status))
                        .await;
                } else if let (Kind::Response, Some(client)) = (header.kind, &self.client) {
                    client.handle(Decoded::Oversized(header));
                } else {
                    tracing::warn!(kind = ?header.kind, len = header.body_len(), "dropped an oversized frame");
                }
                return Ok(());
            }
        };
        match frame.header.kind {
            Kind::Request | Kind::OneWay => self.start(frame).await,
            Kind::Cancel => {
                let call = self.calls.cancel(frame.header.call_id);
                // A cancel that stops a running call counts against the
                // flood budget; one for a call already ended costs nothing.
                // (Clients send none when a deadline ends a call: the
                // server's own timer ends it too.)
                if call.is_some() {
                    self.cancels
                        .take(Instant::now())
                        .map_err(Status::resource_exhausted)?;
                }
                if let Some(call) = call {
                    call.abort.abort();
                    self.stats.finished(
                        &call.counters,
                        Code::Cancelled,
                        Some(call.started.elapsed()),
                        0,
                        call.received,
                    );
                }
            }
            Kind::Ping => self.send(pong_frame(frame.header.call_id)).await,
            Kind::Hello => {
                return Err(Status::invalid_argument("a second hello on one connection"));
            }
            Kind::Response | Kind::Pong | Kind::GoAway => {
                if let Some(client) = &self.client {
                    client.handle(Decoded::Frame(frame));
                }
            }
        }
        Ok(())
    }

    async fn start(&mut self, frame: Frame) {
        let oneway = frame.header.kind == Kind::OneWay;
        let call_id = frame.header.call_id;
        let started = Instant::now();
        let received = HEADER_LEN + frame.metadata.len() + frame.payload.len();
        self.stats.started();
        let counters = self.counters.get(&frame.header.method_id).cloned();
        let Some((service, method)) = self.shared.router.route(frame.header.method_id).cloned()
        else {
            let status = self.shared.router.unknown(frame.header.method_id);
            tracing::debug!(%status, "unknown method");
            self.refused(None, started, received, oneway, call_id, status)
                .await;
            return;
        };
        // The router and the counters are built from the same routes.
        let Some(counters) = counters else { return };
        if let Some(why) = &self.introspection_denied
            && service.descriptor().name == crate::debug::INTROSPECTION_DESCRIPTOR.name
        {
            let status = Status::permission_denied(format!(
                "this server does not show its connection table {why}: it names processes, \
                 users and paths; inspect it over a local transport as the same user \
                 (switchyard inspect <name>), or turn it on with \
                 ServerBuilder::remote_introspection(true)"
            ));
            tracing::debug!(%status, peer = %self.info.peer.addr, "introspection refused");
            self.refused(Some(&counters), started, received, oneway, call_id, status)
                .await;
            return;
        }
        if self.draining {
            let status = Status::unavailable(
                "the server is shutting down; retry on another instance or after it restarts",
            );
            self.refused(Some(&counters), started, received, oneway, call_id, status)
                .await;
            return;
        }
        let limits = self.shared.config.metadata_limits;
        let metadata = match Metadata::decode_limited(&frame.metadata, limits) {
            Ok(metadata) => metadata,
            Err(err) => {
                let status =
                    metadata_refused(method.full_name, &err, "ServerBuilder::max_metadata");
                self.refused(Some(&counters), started, received, oneway, call_id, status)
                    .await;
                return;
            }
        };
        let (abort, registration) = AbortHandle::new_pair();
        let in_flight = InFlight {
            abort,
            started,
            received,
            counters: Arc::clone(&counters),
        };
        let admitted = match self.calls.admit(started, &frame.header, in_flight) {
            Ok(admitted) => admitted,
            Err(status) => {
                self.refused(Some(&counters), started, received, oneway, call_id, status)
                    .await;
                return;
            }
        };
        // The router found the method, so the service has it.
        let Some(handler) = service.call(method.id, Request::new(frame.payload)) else {
            self.calls.finish(call_id);
            let status = self.shared.router.unknown(method.id);
            self.refused(Some(&counters), started, received, oneway, call_id, status)
                .await;
            return;
        };
        let ctx = Context::new(
            Arc::clone(&self.info),
            method,
            call_id,
            admitted.deadline,
            metadata,
        );
        let deadline = admitted.deadline;
        let response_metadata = ctx.response_metadata_handle();
        let span = tracing::debug_span!(
            "switchyard.handle",
            method = method.full_name,
            transport = self.info.transport.as_str(),
            call_id,
            trace_id = %ctx.trace().map(|t| t.trace_id_hex()).unwrap_or_default(),
        );
        let guarded = async move {
            let run = AssertUnwindSafe(ctx.scope(handler).instrument(span)).catch_unwind();
            let result = match deadline {
                None => run.await,
                Some(deadline) => match tokio::time::timeout_at(deadline.into(), run).await {
                    Ok(result) => result,
                    Err(_) => Ok(Err(Status::deadline_exceeded(format!(
                        "{} did not finish within the caller's deadline; the handler was stopped",
                        method.full_name
                    )))),
                },
            };
            let result = result.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string payload".to_owned());
                tracing::error!(method = method.full_name, panic = %what, "handler panicked");
                Err(Status::internal(format!(
                    "the handler of {} panicked: {what}",
                    method.full_name
                )))
            });
            (call_id, oneway, result, response_metadata.take())
        };
        let abortable = Abortable::new(guarded, registration).map(move |outcome| {
            outcome.unwrap_or((
                call_id,
                true,
                Err(Status::cancelled("cancelled by the caller")),
                Metadata::new(),
            ))
        });
        self.handlers.push(Box::pin(abortable));
    }

    /// Answers a call that was not started (unless it is one-way) and
    /// counts it.
    async fn refused(
        &mut self,
        counters: Option<&Arc<MethodCounters>>,
        started: Instant,
        received: usize,
        oneway: bool,
        call_id: u64,
        status: Status,
    ) {
        let mut sent = 0;
        if !oneway {
            let frame = status_frame(Kind::Response, call_id, &status);
            sent = frame.len();
            self.send(frame).await;
        }
        if let Some(counters) = counters {
            self.stats.finished(
                counters,
                status.code(),
                Some(started.elapsed()),
                sent,
                received,
            );
        }
    }

    async fn finish(
        &mut self,
        call_id: u64,
        oneway: bool,
        result: Result<Reply, Status>,
        metadata: &Metadata,
    ) {
        // None: cancelled meanwhile (already counted).
        let Some(call) = self.calls.finish(call_id) else {
            return;
        };
        if oneway {
            let code = match &result {
                Ok(_) => Code::Ok,
                Err(status) => {
                    tracing::warn!(call_id, %status, "one-way call failed");
                    status.code()
                }
            };
            self.stats.finished(
                &call.counters,
                code,
                Some(call.started.elapsed()),
                0,
                call.received,
            );
            return;
        }
        let mut bulk_body = None;
        // A handler's `Err` with code OK would read as a success with no
        // body at the caller.
        let result = result.map_err(|status| {
            if status.code() == Code::Ok {
                Status::unknown(format!(
                    "the handler failed with the code OK, which is not a failure: {}",
                    status.message()
                ))
            } else {
                status
            }
        });
        let (code, frame) = match result {
            Ok(reply) => {
                let (mut buf, bulk, metadata_len) = reply.into_parts();
                let body = buf.len() - HEADER_LEN + bulk.as_ref().map_or(0, BulkBody::len);
                if body > self.client_frame_limit as usize {
                    let status = Status::resource_exhausted(format!(
                        "the response is {body} bytes, over the client's limit of {} bytes (this \
                         server takes requests up to {} bytes); ask for less per call or raise {}",
                        self.client_frame_limit,
                        self.shared.config.frame_limit,
                        self.shared.config.knobs.peer
                    ));
                    (
                        status.code(),
                        status_frame(Kind::Response, call_id, &status),
                    )
                } else {
                    let mut header = Header::new(Kind::Response, call_id);
                    header.metadata_len = crate::protocol::frame::len_u32(metadata_len);
                    header.payload_len = crate::protocol::frame::len_u32(body - metadata_len);
                    header.write_to(&mut buf);
                    bulk_body = bulk;
                    (Code::Ok, buf)
                }
            }
            // An error carries the handler's response metadata too (gRPC's
            // trailers), unless that passes the client's frame limit: the
            // status matters more than the metadata.
            Err(status) => {
                let mut frame = status_frame_with(Kind::Response, call_id, &status, metadata);
                if frame.len() - HEADER_LEN > self.client_frame_limit as usize
                    && !metadata.is_empty()
                {
                    tracing::warn!(
                        call_id,
                        len = metadata.encoded_len(),
                        limit = self.client_frame_limit,
                        "the response metadata does not fit the client's frame limit beside the \
                         error status; the status goes without it"
                    );
                    frame = status_frame(Kind::Response, call_id, &status);
                }
                (status.code(), frame)
            }
        };
        let sent = frame.len() + bulk_body.as_ref().map_or(0, BulkBody::len);
        self.stats.finished(
            &call.counters,
            code,
            Some(call.started.elapsed()),
            sent,
            call.received,
        );
        let _ = self
            .outgoing
            .send(Outgoing {
                bytes: frame,
                written: None,
                bulk: bulk_body,
                budget: None,
            })
            .await;
    }
}

/// Why the peer of a connection over `info` may not read the connection
/// table through the introspection service: it answers only local peers of
/// this server's own uid, unless
/// [`ServerBuilder::remote_introspection`](crate::ServerBuilder::remote_introspection)
/// is on.
fn introspection_denied(shared: &ServerShared, info: &ConnectionInfo) -> Option<String> {
    if shared.config.remote_introspection {
        return None;
    }
    match info.transport {
        Transport::Tcp | Transport::Quic => Some(format!("over {}", info.transport)),
        _ => match info.peer.uid {
            Some(uid) if uid != crate::sys::uid() => Some(format!(
                "to uid {uid} (this server runs as uid {})",
                crate::sys::uid()
            )),
            _ => None,
        },
    }
}

/// The status for request or response metadata of `method` that could not
/// be taken: RESOURCE_EXHAUSTED naming the limit and `knob` when it is over
/// a limit, INVALID_ARGUMENT when it is malformed.
pub(crate) fn metadata_refused(method: &str, err: &MetadataError, knob: &str) -> Status {
    match err {
        MetadataError::TooLarge { .. } | MetadataError::TooManyEntries { .. } => {
            Status::resource_exhausted(format!(
                "{method}: {err}; send less metadata per call, or raise the receiver's limit \
                 ({knob})"
            ))
        }
        _ => Status::invalid_argument(format!("{method}: {err}")),
    }
}
