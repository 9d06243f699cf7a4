//! One server connection: handlers run inside the task that reads requests
//! (no hand-off to another task on the hot path), responses are batched by
//! a writer task, cancellation and deadlines stop handlers.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::{AbortHandle, Abortable, Either};
use tokio::sync::watch;
use tracing::Instrument;

use super::slots::Admitted;
use super::{Phase, ServerShared};
use crate::context::{ConnectionInfo, Context};
use crate::debug::model::PeerInfo as PeerModel;
use crate::debug::recorder::{ConnectionStats, MethodCounters, Side, counters_by_id, recorder};
pub(crate) use crate::driver::End;
use crate::driver::{Driver, HandlerFuture, Serve, Tenancy};
use crate::protocol::frame::{
    Decoded, FLAG_CLIENT_STREAM, FLAG_SERVER_STREAM, Frame, HEADER_LEN, Kind,
};
use crate::protocol::hello::{Hello, Role};
use crate::protocol::metadata::{Metadata, MetadataError};
use crate::protocol::session::{
    FrameLimits, ReplyBody, Session, SessionConfig, Sides, StreamMessages,
};
use crate::protocol::status::Code;
use crate::protocol::status::Status;
use crate::select::{Selection, Transport};
use crate::service::{Reply, Request, RequestStream};
use crate::session::{
    CallerSide, Outbound, Outgoing, hello_frame, local_hello, read_hello, status_frame,
};
use crate::streaming::pump::StreamSink;
use crate::streaming::{Ending, Grants, Inbox, SendGate};
use crate::transport::bulk::BulkBody;
use crate::transport::{Link, LinkRx, LinkTuning, PeerIdentity, PeerInfo};

/// How a handler ended: its call id, whether it was one-way, its result,
/// and the response metadata it set that its reply did not carry yet.
type Outcome = (u64, bool, Result<Reply, Status>, Metadata);

/// Serves one link until the peer leaves or the server stops.
pub(crate) async fn serve<L: Link>(
    shared: Arc<ServerShared>,
    mut link: L,
    mut phase: watch::Receiver<Phase>,
) {
    link.tune(&LinkTuning {
        intake: shared.intake.clone(),
        ..LinkTuning::default()
    });
    let transport = link.transport();
    let peer = link.peer();
    let identity = link.identity();
    // Counted from accept on; the place is freed when this returns.
    let Admitted {
        slot: _slot,
        tenancy,
        refused,
    } = shared.slots.admit();
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
    if let Some(status) = refused {
        tracing::warn!(peer = %peer.addr, %status, "refused a connection");
        let _ =
            crate::transport::LinkTx::send(&mut tx, &status_frame(Kind::GoAway, 0, &status)).await;
        return;
    }
    let hello = server_hello(&shared, Role::Server);
    if crate::transport::LinkTx::send(&mut tx, &hello_frame(&hello))
        .await
        .is_err()
    {
        return;
    }
    let (outgoing, writer) = Outbound::new(tx);
    let writer = tokio::spawn(writer);
    let selection = crate::select::select(crate::select::Fixed::Accepted(transport));
    let link = Established {
        peer,
        identity,
        hello,
        peer_hello: client,
        selection,
        frames,
        outgoing,
        client: None,
        tenancy: Some(tenancy),
    };
    drive(shared, link, &mut rx, &mut phase).await;
    let _ = writer.await;
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
    // A server whose compression is off reads none either.
    if shared.config.compression.mode() == crate::protocol::compress::CompressionMode::Off {
        hello.codecs = 0;
    }
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
    pub(crate) client: Option<Arc<dyn CallerSide>>,
    /// Its place among the server's connections (not on a peer link).
    pub(crate) tenancy: Option<Tenancy>,
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
        spill_to: link.outgoing.spill_to(),
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
    let compression = Arc::new(crate::protocol::compress::CompressionCounters::default());
    let choice = crate::session::compression_choice(
        &shared.config.compression,
        transport,
        &link.hello,
        peer_hello,
    );
    if let Some(compressor) = choice.compressor(Arc::clone(&compression)) {
        link.outgoing.compress_with(compressor);
    }
    link.outgoing.peer_reads(peer_hello.features);
    stats.track_compression(&choice, Arc::clone(&compression));
    stats.event("compression", choice.reason.clone());
    stats.event(
        "accepted",
        format!(
            "{} (pid {}) over {transport}",
            peer_hello.process_name, peer_hello.pid
        ),
    );
    let counters = counters_by_id(shared.router.methods(), transport, Side::Server);
    let session = Session::new(
        Instant::now(),
        SessionConfig {
            role: link.hello.role,
            sides: Sides {
                calls: false,
                serves: true,
                forwards_to_caller: link.client.is_some(),
            },
            limits: FrameLimits {
                own: shared.config.frame_limit,
                peer: peer_hello.max_frame,
                knobs: shared.config.knobs,
            },
            max_pending: 0,
            max_in_flight: shared.config.max_in_flight,
            cancel_rate: shared.config.cancel_rate,
            timers: shared.config.timers,
        },
    )
    .with_compression_counters(compression);
    let session = session.refusing_compressed_if(link.hello.codecs == 0);
    let mut serving = Serving {
        shared,
        info,
        stats,
        counters,
        introspection_denied: None,
        outbound: link.outgoing.clone(),
        grants: Arc::new(Grants::default()),
    };
    serving.introspection_denied = introspection_denied(&serving.shared, &serving.info);
    let peer = serving.info.peer.addr.clone();
    let caller = link.client.as_ref().map(Arc::downgrade);
    let mut driver = Driver::new(session, link.outgoing, serving, caller, peer);
    if let Some(tenancy) = link.tenancy {
        driver = driver.with_tenancy(tenancy);
    }
    let end = driver.run(rx, link.frames, Some(phase), None).await;
    let stats = &driver.serve().stats;
    stats.closed();
    stats.event(
        "closed",
        format!(
            "{} calls still running were cancelled",
            driver.session().serving_calls()
        ),
    );
    // Dropping the driver cancels the handlers that still run; dropping its
    // sender lets the writer flush and close.
    end
}

/// The serving side of one connection: routes requests to their handlers
/// and counts every call for the debug views.
struct Serving {
    shared: Arc<ServerShared>,
    info: Arc<ConnectionInfo>,
    /// What the debug views show of this connection.
    stats: Arc<ConnectionStats>,
    /// Per-method counters, by method id.
    counters: HashMap<u32, Arc<MethodCounters>>,
    /// Why this connection's peer may not call the introspection service
    /// (decided once per connection), if it may not.
    introspection_denied: Option<String>,
    /// Where stream results' messages go.
    outbound: Outbound,
    /// Credit the handlers give back for the stream messages they read.
    grants: Arc<Grants>,
}

/// The session of a serving connection.
type ServerSession = Session<std::convert::Infallible, InFlight>;

/// A call being handled.
struct InFlight {
    abort: AbortHandle,
    started: Instant,
    received: usize,
    counters: Arc<MethodCounters>,
    /// The call's stream argument, where its messages go.
    inbox: Option<Arc<Inbox>>,
    /// The credit of the call's stream result.
    gate: Option<Arc<SendGate>>,
}

impl Serving {
    /// A call ended: a streaming one no longer counts as an open stream.
    fn stream_ended(&self, call: &InFlight) {
        if call.inbox.is_some() || call.gate.is_some() {
            self.stats.stream_open(false);
        }
    }
}

impl InFlight {
    /// The call ended early: nobody waits for its stream any more.
    fn end_streams(&self, status: &Status) {
        if let Some(inbox) = &self.inbox {
            inbox.end(Ending::Failed {
                status: status.clone(),
                trailers: Metadata::new(),
            });
        }
        if let Some(gate) = &self.gate {
            gate.close(status.clone());
        }
    }
}

impl Serve for Serving {
    type Handle = InFlight;
    type Outcome = Outcome;

    fn start(
        &mut self,
        now: Instant,
        session: &mut ServerSession,
        frame: Frame,
    ) -> Option<HandlerFuture<Outcome>> {
        self.route(now, session, frame)
    }

    fn cancelled(&mut self, call: InFlight) {
        self.stream_ended(&call);
        call.end_streams(&Status::cancelled("cancelled by the caller"));
        call.abort.abort();
        self.stats.finished(
            &call.counters,
            Code::Cancelled,
            Some(call.started.elapsed()),
            0,
            call.received,
        );
    }

    fn finished(&mut self, session: &mut ServerSession, outcome: Outcome) -> Option<Outgoing> {
        let (call_id, oneway, result, metadata) = outcome;
        self.finish(session, call_id, oneway, result, &metadata)
    }

    fn event(&self, what: &'static str, detail: String) {
        self.stats.event(what, detail);
    }

    fn draining(&self) {
        self.stats.draining();
    }

    fn stream_data(&mut self, session: &ServerSession, call_id: u64, messages: StreamMessages) {
        let Some(call) = session.handler(call_id) else {
            return;
        };
        if let Some(inbox) = &call.inbox {
            let count = messages.len();
            call.counters.stream_received(count, messages.wire_bytes);
            self.stats.stream_messages(0, count);
            // A run of messages that arrived together: one lock, one
            // wake-up of the handler.
            inbox.push_all(messages.chunks);
        }
    }

    fn stream_end(&mut self, session: &ServerSession, call_id: u64) {
        if let Some(inbox) = session
            .handler(call_id)
            .and_then(|call| call.inbox.as_ref())
        {
            inbox.end(Ending::Done {
                trailers: Metadata::new(),
            });
        }
    }

    fn stream_credit(&mut self, session: &ServerSession, call_id: u64, credit: u32) {
        if let Some(gate) = session.handler(call_id).and_then(|call| call.gate.as_ref()) {
            gate.grant(credit);
        }
    }

    fn stream_failed(&mut self, call: InFlight, status: Status) {
        self.stream_ended(&call);
        call.end_streams(&status);
        call.abort.abort();
        self.stats.finished(
            &call.counters,
            status.code(),
            Some(call.started.elapsed()),
            0,
            call.received,
        );
    }

    fn reading_stopped(&mut self, session: &ServerSession, status: &Status) {
        let status = Status::new(
            status.code(),
            format!(
                "the connection stopped reading ({}); the call's stream ended",
                status.message()
            ),
        );
        for call in session.handlers() {
            call.end_streams(&status);
        }
    }

    fn grants(&self) -> Option<Arc<Grants>> {
        Some(Arc::clone(&self.grants))
    }
}

/// Why a request was not started, and the counters of its method.
struct Refused {
    status: Status,
    counters: Option<Arc<MethodCounters>>,
    /// Refused because the connection drains (the caller may make the
    /// call again elsewhere when the drain is for idleness).
    draining: bool,
}

impl Refused {
    fn new(status: Status, counters: Option<Arc<MethodCounters>>) -> Self {
        Self {
            status,
            counters,
            draining: false,
        }
    }
}

impl Serving {
    /// Routes a request to its handler (whose future it returns), or
    /// answers and counts it when it is refused.
    fn route(
        &mut self,
        started: Instant,
        session: &mut ServerSession,
        frame: Frame,
    ) -> Option<HandlerFuture<Outcome>> {
        let oneway = frame.header.kind == Kind::OneWay;
        let call_id = frame.header.call_id;
        let received = HEADER_LEN + frame.metadata.len() + frame.payload.len();
        self.stats.started();
        let refused = match self.start_handler(started, received, session, frame) {
            Ok(handler) => return Some(handler),
            Err(refused) => refused,
        };
        let status = refused.status;
        let sent = if refused.draining {
            session.refuse_admission(call_id, oneway, &status)
        } else {
            session.refuse(call_id, oneway, &status)
        };
        if let Some(counters) = refused.counters {
            self.stats.finished(
                &counters,
                status.code(),
                Some(started.elapsed()),
                sent,
                received,
            );
        }
        None
    }

    /// Starts the handler of a routed, admitted request: its future, or
    /// why the request is refused.
    fn start_handler(
        &mut self,
        started: Instant,
        received: usize,
        session: &mut ServerSession,
        frame: Frame,
    ) -> Result<HandlerFuture<Outcome>, Refused> {
        let oneway = frame.header.kind == Kind::OneWay;
        let call_id = frame.header.call_id;
        let counters = self.counters.get(&frame.header.method_id).cloned();
        let Some((service, method)) = self.shared.router.route(frame.header.method_id).cloned()
        else {
            let status = self.shared.router.unknown(frame.header.method_id);
            tracing::debug!(%status, "unknown method");
            return Err(Refused::new(status, None));
        };
        // The router and the counters are built from the same routes.
        let Some(counters) = counters else {
            return Err(Refused::new(
                Status::internal(format!("{} has no counters", method.full_name)),
                None,
            ));
        };
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
            return Err(Refused::new(status, Some(counters)));
        }
        if let Some(status) = session.admission_closed() {
            return Err(Refused {
                status,
                counters: Some(counters),
                draining: true,
            });
        }
        let limits = self.shared.config.metadata_limits;
        let metadata = match Metadata::decode_limited(&frame.metadata, limits) {
            Ok(metadata) => metadata,
            Err(err) => {
                let status =
                    metadata_refused(method.full_name, &err, self.shared.config.knobs.metadata);
                return Err(Refused::new(status, Some(counters)));
            }
        };
        let (abort, registration) = AbortHandle::new_pair();
        let flags = if oneway { 0 } else { frame.header.flags };
        let inbox =
            (flags & FLAG_CLIENT_STREAM != 0).then(|| Inbox::new(self.shared.config.stream_window));
        let gate = (flags & FLAG_SERVER_STREAM != 0).then(|| {
            Arc::new(SendGate::watched(
                frame.header.credit,
                Arc::clone(&self.stats),
            ))
        });
        if inbox.is_some() || gate.is_some() {
            self.stats.stream_open(true);
        }
        let in_flight = InFlight {
            abort,
            started,
            received,
            counters: Arc::clone(&counters),
            inbox: inbox.clone(),
            gate: gate.clone(),
        };
        let admitted = match session.admit(started, &frame.header, in_flight) {
            Ok(admitted) => admitted,
            Err(status) => {
                return Err(Refused::new(status, Some(counters)));
            }
        };
        let request = match &inbox {
            Some(inbox) => {
                // The caller's messages may come now.
                session.grant(false, call_id, inbox.window());
                Request::with_stream(
                    frame.payload,
                    RequestStream {
                        inbox: Arc::clone(inbox),
                        granter: self.grants.granter(call_id),
                    },
                )
            }
            None => Request::new(frame.payload),
        };
        // The introspection service has its own rule of who may read it;
        // health is for anyone who probes (balancers, orchestrators).
        let layers = self
            .shared
            .layers
            .stack()
            .filter(|_| {
                let name = service.descriptor().name;
                name != crate::debug::INTROSPECTION_DESCRIPTOR.name
                    && name != crate::health::HEALTH_DESCRIPTOR.name
            })
            .cloned();
        let (handler, request) = match layers {
            // Without layers the handler starts at once.
            None => {
                // The router found the method, so the service has it.
                let Some(handler) = service.call(method.id, request) else {
                    session.finish(started, call_id);
                    let status = self.shared.router.unknown(method.id);
                    return Err(Refused::new(status, Some(counters)));
                };
                (Some(handler), None)
            }
            Some(_) => (None, Some(request)),
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
        let sink = gate.map(|gate| StreamSink {
            outbound: self.outbound.clone(),
            gate,
            call_id,
            from_callee: true,
            limit: session.limits().peer,
            spill_to: self.outbound.spill_to(),
            batches: self.outbound.peer_reads_batches(),
            what: method.full_name,
            flags: method.frame_flags(),
        });
        let stream_call = sink.is_some();
        // A unary handler's reply, refused if it is a stream (the caller
        // did not ask for one).
        let unary = move |handler: crate::service::HandlerFuture| async move {
            let mut reply = handler.await?;
            match reply.take_stream() {
                None => Ok(reply),
                Some(_) => Err(Status::invalid_argument(format!(
                    "{} returns a stream, but the caller did not ask for one; do client and \
                     server use the same version of the trait?",
                    method.full_name
                ))),
            }
        };
        let counters_for_stream = Arc::clone(&counters);
        let stats_for_stream = Arc::clone(&self.stats);
        // A stream result is sent inside the handler's scope and deadline;
        // its end is the reply, with the handler's metadata as trailers.
        let complete = move |handler: crate::service::HandlerFuture| async move {
            let mut reply = handler.await?;
            match (reply.take_stream(), sink) {
                (None, None) => Ok(reply),
                (None, Some(_)) => Err(Status::invalid_argument(format!(
                    "the caller asked {} for a stream, but it returns one value; do client and \
                     server use the same version of the trait?",
                    method.full_name
                ))),
                (Some(run), Some(sink)) => {
                    let (ended, sent) = run(sink).await;
                    counters_for_stream.stream_sent(sent.messages, sent.bytes);
                    stats_for_stream.stream_messages(sent.messages, 0);
                    ended.map(|()| Reply::end_of_stream())
                }
                (Some(_), None) => Err(Status::invalid_argument(format!(
                    "{} returns a stream, but the caller did not ask for one; do client and \
                     server use the same version of the trait?",
                    method.full_name
                ))),
            }
        };
        let span = tracing::debug_span!(
            "switchyard.handle",
            method = method.full_name,
            transport = self.info.transport.as_str(),
            call_id,
            trace_id = %ctx.trace().map(|t| t.trace_id_hex()).unwrap_or_default(),
        );
        let layered = handler.is_none();
        let run = match (handler, stream_call) {
            // A unary or one-way call without layers: the common case, kept
            // small (its future is boxed per call; past glibc's per-thread
            // cache of 1032 bytes every call would take the slow malloc).
            (Some(handler), false) => Either::Left(ctx.scope(unary(handler))),
            (Some(handler), true) => Either::Right(Box::pin(ctx.scope(complete(handler)))
                as std::pin::Pin<Box<dyn Future<Output = Result<Reply, Status>> + Send>>),
            // Boxed: the layered branch's larger future stays out of the
            // handler future of every call without layers. A unary call's
            // end is the small `unary`, as without layers, and the box
            // holds the layers' future alone (1024 bytes: glibc's
            // per-thread cache still serves it).
            (None, stream) => match (layers, request) {
                (Some(stack), Some(request)) if !stream => Either::Right(Box::pin(
                    crate::layers::LayerStack::serve(stack, ctx, request, service, unary),
                )
                    as std::pin::Pin<Box<dyn Future<Output = Result<Reply, Status>> + Send>>),
                (Some(stack), Some(request)) => Either::Right(Box::pin(
                    crate::layers::LayerStack::serve(stack, ctx, request, service, complete),
                )
                    as std::pin::Pin<Box<dyn Future<Output = Result<Reply, Status>> + Send>>),
                _ => Either::Right(Box::pin(std::future::ready(Err(Status::internal(
                    "a layered call lost its layers",
                ))))
                    as std::pin::Pin<Box<dyn Future<Output = Result<Reply, Status>> + Send>>),
            },
        };
        // Combinators, not an `async` block: a block would keep `run` both
        // as its capture and as the future it awaits (twice the size, and a
        // box per call past glibc's per-thread cache).
        let run = AssertUnwindSafe(run.instrument(span)).catch_unwind();
        let timed = match deadline {
            None => Either::Left(run.map(Ok)),
            Some(deadline) => Either::Right(tokio::time::timeout_at(deadline.into(), run)),
        };
        let guarded = timed.map(move |timed| {
            let result = timed.unwrap_or_else(|_| {
                Ok(Err(Status::deadline_exceeded(format!(
                    "{} did not finish within the caller's deadline; the handler was stopped",
                    method.full_name
                ))))
            });
            let result = result.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string payload".to_owned());
                tracing::error!(method = method.full_name, panic = %what, "handler panicked");
                let who = if layered {
                    "a layer or the handler of"
                } else {
                    "the handler of"
                };
                Err(Status::internal(format!(
                    "{who} {} panicked: {what}",
                    method.full_name
                )))
            });
            (call_id, oneway, result, response_metadata.take())
        });
        let abortable = Abortable::new(guarded, registration).map(move |outcome| {
            outcome.unwrap_or((
                call_id,
                true,
                Err(Status::cancelled("cancelled by the caller")),
                Metadata::new(),
            ))
        });
        Ok(Box::pin(abortable))
    }

    /// The reply to a call whose handler finished (`None`: one-way, or
    /// cancelled meanwhile and already counted).
    fn finish(
        &self,
        session: &mut ServerSession,
        call_id: u64,
        oneway: bool,
        result: Result<Reply, Status>,
        metadata: &Metadata,
    ) -> Option<Outgoing> {
        let now = Instant::now();
        let call = session.finish(now, call_id)?;
        self.stream_ended(&call);
        let took = now.saturating_duration_since(call.started);
        if oneway {
            let code = match &result {
                Ok(_) => Code::Ok,
                Err(status) => {
                    tracing::warn!(call_id, %status, "one-way call failed");
                    status.code()
                }
            };
            self.stats
                .finished(&call.counters, code, Some(took), 0, call.received);
            return None;
        }
        let mut bulk_body = None;
        let body = result.map(|reply| {
            let flags = reply.frame_flags();
            let (buf, bulk, metadata_len) = reply.into_parts();
            let bulk_len = bulk.as_ref().map(BulkBody::len);
            bulk_body = bulk;
            ReplyBody {
                buf,
                metadata_len,
                bulk_len,
                flags,
            }
        });
        let sealed = session.reply(call_id, body, metadata);
        if sealed.metadata_dropped {
            tracing::warn!(
                call_id,
                len = metadata.encoded_len(),
                limit = session.limits().peer,
                "the response metadata does not fit the client's frame limit beside the \
                 error status; the status goes without it"
            );
        }
        if !sealed.bulk {
            bulk_body = None;
        }
        let sent = sealed.bytes.len() + bulk_body.as_ref().map_or(0, BulkBody::len);
        self.stats
            .finished(&call.counters, sealed.code, Some(took), sent, call.received);
        Some(Outgoing {
            bytes: sealed.bytes,
            written: None,
            bulk: bulk_body,
            budget: None,
        })
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
