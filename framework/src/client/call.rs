//! Making calls: [`ClientCore`], what every generated client wraps.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::Channel;
use super::connection::{Connection, Waiter};
use super::driver::{Waited, wait_response};
use super::oneway::{OnewayRoute, QueueRoute};
use crate::codec::Codec;
use crate::context::Context;
use crate::debug::recorder::MethodCounters;
use crate::descriptor::{MethodDescriptor, ServiceDescriptor};
use crate::layers::{Call, Response};
use crate::protocol::call::deadline_budget;
use crate::protocol::frame::{FLAG_NOT_STARTED, HEADER_LEN, Kind, start_frame};
use crate::protocol::metadata::Metadata;
use crate::protocol::session::encode::{
    RequestHead, frame_status, seal_bulk_request, seal_request,
};
use crate::protocol::status::{Code, Status};
use crate::select::{self, CallKind, CallTrack, Selection, Tracks, Transport};
use crate::session::Outgoing;
use crate::trace::{TRACEPARENT, TraceContext};
use crate::transport::bulk::{BulkBody, SpillWriter};

/// Decodes a response's payload as `Resp`; a failure is INTERNAL naming
/// the method.
fn decode_response<C: Codec, Resp: DeserializeOwned>(
    payload: &bytes::Bytes,
    method: &'static MethodDescriptor,
) -> Result<Resp, Status> {
    C::decode_shared(payload).map_err(|err| {
        Status::internal(format!(
            "the response of {} could not be decoded ({err}); do client and server use the \
             same version of the trait?",
            method.full_name
        ))
    })
}

/// Runs a call through a channel's layers within its deadline: a layer
/// that waits past it ends the call with DEADLINE_EXCEEDED.
pub(super) async fn within_deadline<T>(
    deadline: Option<Instant>,
    started: Instant,
    method: &'static MethodDescriptor,
    layered: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match deadline {
        None => layered.await,
        Some(deadline) => tokio::time::timeout_at(deadline.into(), layered)
            .await
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "{} did not complete within its deadline of {:?} (it was still in the \
                     channel's layers or on its way); raise the timeout if the work needs longer",
                    method.full_name,
                    deadline.saturating_duration_since(started)
                )))
            }),
    }
}

/// An encoded request: the frame (or, with `bulk`, its header room), the
/// metadata's length, and the body when it went into a bulk region.
pub(super) struct Encoded {
    pub(super) buf: Vec<u8>,
    pub(super) metadata_len: usize,
    pub(super) bulk: Option<BulkBody>,
}

impl Encoded {
    /// Writes the request's header (`head`) and hands back the frame to
    /// send and its length, the bulk body included; a body over `conn`'s
    /// peer limit is refused.
    pub(super) fn seal(
        self,
        conn: &Connection,
        head: RequestHead,
        method: &'static MethodDescriptor,
    ) -> Result<(Outgoing, usize), Status> {
        let Self {
            mut buf,
            metadata_len,
            bulk,
        } = self;
        let len = match &bulk {
            None => {
                conn.limits()
                    .seal_request(&mut buf, head, metadata_len, method.full_name)?;
                buf.len()
            }
            Some(body) => {
                // The limit was checked while the body was written.
                seal_bulk_request(&mut buf, head, metadata_len, body.len());
                HEADER_LEN + body.len()
            }
        };
        let outgoing = Outgoing {
            bytes: buf,
            written: None,
            bulk,
            budget: None,
        };
        Ok((outgoing, len))
    }
}

/// The untyped client that generated `FooClient`s wrap: a [`Channel`], the
/// service it calls, and per-client call options (deadline, metadata).
#[derive(Clone, Debug)]
pub struct ClientCore {
    pub(super) channel: Channel,
    pub(super) service: &'static ServiceDescriptor,
    timeout: Option<Duration>,
    metadata: Arc<Metadata>,
    /// Set when an option was invalid; every call fails with it.
    pub(super) invalid: Option<Status>,
}

impl ClientCore {
    /// A client of `service` over `channel`.
    pub fn new(channel: Channel, service: &'static ServiceDescriptor) -> Self {
        let timeout = channel.default_timeout();
        Self {
            channel,
            service,
            timeout,
            metadata: Arc::new(Metadata::new()),
            invalid: None,
        }
    }

    /// Connects to `target` and checks that the server serves `service`.
    pub async fn connect(
        target: &str,
        service: &'static ServiceDescriptor,
    ) -> Result<Self, Status> {
        let channel = Channel::connect(target).await?;
        let conn = channel.current();
        // A stand-in for a server that is down (its queue is there) knows no
        // services yet; calls check when they reconnect.
        if conn.is_usable() && conn.peer_hello.service(service.name).is_none() {
            return Err(conn.missing(service, None));
        }
        Ok(Self::new(channel, service))
    }

    /// The channel calls go over.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Which transport the calls use, and why.
    pub fn selection(&self) -> Selection {
        self.channel.selection()
    }

    /// A copy whose calls have this deadline (from when each call starts).
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// A copy whose calls also carry this metadata entry. An invalid key
    /// (not 1 to 255 visible ASCII characters) makes each call fail with
    /// InvalidArgument saying so.
    pub fn with_metadata(&self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        let mut metadata = (*self.metadata).clone();
        let key = key.into();
        if let Err(err) = metadata.insert(key, value) {
            return Self {
                invalid: Some(Status::invalid_argument(format!(
                    "with_metadata: {err}; calls from this client are refused until it is fixed"
                ))),
                ..self.clone()
            };
        }
        Self {
            metadata: Arc::new(metadata),
            ..self.clone()
        }
    }

    /// A copy whose calls also carry every entry of `metadata`, after the
    /// entries this client already has.
    pub fn with_all_metadata(&self, metadata: &Metadata) -> Self {
        let mut merged = (*self.metadata).clone();
        for (key, value) in metadata.iter() {
            // The keys were checked when `metadata` was built.
            let _ = merged.insert(key, value);
        }
        Self {
            metadata: Arc::new(merged),
            ..self.clone()
        }
    }

    /// The deadline and trace of a call starting `now`: this client's
    /// timeout, capped by the deadline of the call being handled when this
    /// runs inside a handler, whose trace it also continues (else a new
    /// trace starts).
    pub(super) fn call_context(&self, now: Instant) -> (Option<Instant>, TraceContext) {
        let (inherited, parent) = Context::inherited();
        let own = self.timeout.map(|timeout| now + timeout);
        let deadline = match (own, inherited) {
            (Some(own), Some(inherited)) => Some(own.min(inherited)),
            (own, inherited) => own.or(inherited),
        };
        let trace = parent.map_or_else(TraceContext::root, |parent| parent.child());
        (deadline, trace)
    }

    /// Encodes a request frame (header room, metadata with the trace
    /// context, arguments).
    fn encode<C: Codec, Req: Serialize>(
        &self,
        method: &'static MethodDescriptor,
        request: &Req,
        trace: &TraceContext,
    ) -> Result<(Vec<u8>, usize), Status> {
        let encoded = self.encode_spilling::<C, Req>(method, request, trace, None)?;
        Ok((encoded.buf, encoded.metadata_len))
    }

    /// [`encode`](Self::encode) into `conn`'s bulk path when the body
    /// passes its threshold (the arguments are then copied once, into the
    /// region the server maps); a body over the server's limit is refused
    /// before its bytes are copied.
    pub(super) fn encode_spilling<C: Codec, Req: Serialize>(
        &self,
        method: &'static MethodDescriptor,
        request: &Req,
        trace: &TraceContext,
        conn: Option<&Connection>,
    ) -> Result<Encoded, Status> {
        let mut buf = Vec::with_capacity(192);
        let start = start_frame(&mut buf);
        self.metadata.encode_into(&mut buf);
        let mut metadata_len = self.metadata.encoded_len();
        if self.metadata.get(TRACEPARENT).is_none() {
            let traceparent = trace.to_string();
            Metadata::encode_entry(TRACEPARENT, traceparent.as_bytes(), &mut buf);
            metadata_len += Metadata::entry_len(TRACEPARENT, traceparent.as_bytes());
        }
        debug_assert_eq!(start, 0);
        let threshold = conn.and_then(|conn| conn.outgoing.spill_to());
        let limit = conn.map(|conn| conn.limits().peer as usize);
        let mut writer =
            SpillWriter::new(&mut buf, HEADER_LEN, threshold.as_ref()).with_limit(limit);
        let encoded = C::encode_to(request, &mut writer);
        let too_large = writer.over_limit();
        let bulk = writer.finish();
        if let (Some(len), Some(conn)) = (too_large, conn) {
            return Err(conn.limits().request_too_large(method.full_name, len));
        }
        encoded.map_err(|err| {
            Status::invalid_argument(format!(
                "the arguments of {} could not be encoded: {err}",
                method.full_name
            ))
        })?;
        let bulk = bulk.map_err(|err| {
            Status::resource_exhausted(format!(
                "the arguments of {} could not be written to shared memory: {err}",
                method.full_name
            ))
        })?;
        Ok(Encoded {
            buf,
            metadata_len,
            bulk,
        })
    }

    /// Calls `method` with `request` (a tuple of the arguments) and decodes
    /// the result.
    pub async fn call<C: Codec, Req: Serialize + Send, Resp: DeserializeOwned>(
        &self,
        method: &'static MethodDescriptor,
        request: Req,
    ) -> Result<Resp, Status> {
        if let Some(invalid) = &self.invalid {
            return Err(invalid.clone());
        }
        let now = Instant::now();
        let (deadline, trace) = self.call_context(now);
        let span = tracing::debug_span!(
            "switchyard.call",
            method = method.full_name,
            transport = tracing::field::Empty,
            trace_id = %format_args!("{:032x}", trace.trace_id),
        );
        let Some(stack) = self.channel.layers().stack() else {
            let decode = |payload: &bytes::Bytes| decode_response::<C, Resp>(payload, method);
            return self
                .call_traced::<C, Req, Resp>(method, request, now, deadline, trace, &decode)
                .instrument(span)
                .await;
        };
        let layered = self.call_layered::<C, Req>(stack, method, request, now, deadline, trace);
        let response = within_deadline(deadline, now, method, layered)
            .instrument(span)
            .await?;
        decode_response::<C, Resp>(&response.into_encoded(method.full_name)?, method)
    }

    /// A call through this channel's layers: the response as encoded.
    async fn call_layered<C: Codec, Req: Serialize + Send>(
        &self,
        stack: &crate::layers::LayerStack,
        method: &'static MethodDescriptor,
        request: Req,
        now: Instant,
        deadline: Option<Instant>,
        trace: TraceContext,
    ) -> Result<Response, Status> {
        crate::layers::LayerStack::run(
            stack,
            self.layer_call(method, deadline),
            |call| async move {
                let core = self.with_layer_metadata(call);
                let keep = |payload: &bytes::Bytes| Ok(payload.clone());
                // Boxed once: the chain then moves a small future around,
                // not the call's (kilobytes of state, copied at each move).
                Box::pin(core.call_traced::<C, Req, bytes::Bytes>(
                    method, request, now, deadline, trace, &keep,
                ))
                .await
                .map(Response::from_encoded)
            },
        )
        .await
    }

    /// The call as this channel's layers see it.
    pub(super) fn layer_call(
        &self,
        method: &'static MethodDescriptor,
        deadline: Option<Instant>,
    ) -> Call {
        Call::client(
            method,
            deadline,
            (*self.metadata).clone(),
            Some(self.channel.current().selection.transport),
        )
    }

    /// This client, or a copy that sends the metadata the layers left on
    /// `call` when they changed it.
    pub(super) fn with_layer_metadata(&self, call: Call) -> std::borrow::Cow<'_, Self> {
        if call.metadata() == &*self.metadata {
            return std::borrow::Cow::Borrowed(self);
        }
        std::borrow::Cow::Owned(Self {
            metadata: Arc::new(call.into_client_metadata()),
            ..self.clone()
        })
    }

    /// Makes the call; a server that refused it as never started (it was
    /// letting the connection go) gets it once more, on a new connection.
    async fn call_traced<C: Codec, Req: Serialize + Send, Out>(
        &self,
        method: &'static MethodDescriptor,
        request: Req,
        now: Instant,
        deadline: Option<Instant>,
        trace: TraceContext,
        accept: &(dyn Fn(&bytes::Bytes) -> Result<Out, Status> + Sync),
    ) -> Result<Out, Status> {
        let request = Mutex::new(Some(request));
        if let Some(hedge) = self.channel.hedge_policy(method) {
            return self
                .hedged::<C, Req, Out>(method, &request, now, deadline, &trace, hedge, accept)
                .await;
        }
        let mut retried = false;
        let mut attempts = 1u32;
        let mut avoid = None;
        let policy = self.channel.retry_policy(method);
        let throttle = self.channel.retry_throttle();
        loop {
            let not_started = AtomicBool::new(false);
            let used = AtomicU64::new(0);
            let result = self
                .attempt::<C, Req, Out>(
                    method,
                    &request,
                    now,
                    deadline,
                    &trace,
                    Tried {
                        not_started: &not_started,
                        avoid,
                        used: &used,
                    },
                    accept,
                )
                .await;
            let used = Some(used.into_inner()).filter(|id| *id != 0);
            let status = match result {
                Ok(out) => {
                    if policy.is_some() {
                        throttle.succeeded();
                    }
                    return Ok(out);
                }
                // Once, and only with the arguments kept for it (small ones).
                Err(status)
                    if not_started.load(Relaxed) && !retried && !arguments_dropped(&request) =>
                {
                    tracing::debug!(%status, "the server did not start the call; making it again on a new connection");
                    retried = true;
                    avoid = used;
                    continue;
                }
                Err(status) => status,
            };
            let Some(policy) = policy.filter(|p| p.retryable.contains(&status.code())) else {
                return Err(status);
            };
            throttle.failed();
            let why_not = if !policy.retries(status.code(), attempts) {
                Some(format!(
                    "after {attempts} attempt{} (RetryPolicy::max_attempts)",
                    if attempts == 1 { "" } else { "s" }
                ))
            } else if arguments_dropped(&request) {
                Some("not retried: its arguments were already dropped".to_owned())
            } else if !throttle.allow() {
                Some(format!(
                    "not retried after attempt {attempts}: most recent attempts on this channel \
                     failed, and its retry budget (ChannelBuilder::retry_budget) holds retries \
                     back until calls succeed again"
                ))
            } else {
                let wait = policy.backoff(attempts, super::backoff::random_unit());
                if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                    Some(format!(
                        "not retried after attempt {attempts}: the call's deadline leaves no \
                         time for another"
                    ))
                } else {
                    tracing::debug!(%status, attempt = attempts, ?wait, "retrying an idempotent call");
                    tokio::time::sleep(wait).await;
                    None
                }
            };
            if let Some(why_not) = why_not {
                return Err(if attempts > 1 || why_not.starts_with("not retried") {
                    Status::new(status.code(), format!("{} ({why_not})", status.message()))
                } else {
                    status
                });
            }
            attempts += 1;
            avoid = used;
        }
    }

    /// Makes the call as a hedge (gRPC's A6): the first attempt at once,
    /// another every `hedge.delay` while none has answered (each on a
    /// replica the previous did not use, when one is ready), up to
    /// `hedge.max_attempts`; the first answer that is a success or a
    /// fatal error wins, and the others are cancelled (dropped: their
    /// servers get a Cancel). A failure with a non-fatal code starts the
    /// next attempt at once. The retry budget holds hedges back as it
    /// holds retries.
    #[allow(clippy::too_many_arguments)]
    async fn hedged<C: Codec, Req: Serialize + Send, Out>(
        &self,
        method: &'static MethodDescriptor,
        request: &Mutex<Option<Req>>,
        now: Instant,
        deadline: Option<Instant>,
        trace: &TraceContext,
        hedge: &super::HedgePolicy,
        accept: &(dyn Fn(&bytes::Bytes) -> Result<Out, Status> + Sync),
    ) -> Result<Out, Status> {
        use futures_util::StreamExt;
        let max = hedge.max_attempts.clamp(1, 5) as usize;
        let throttle = self.channel.retry_throttle();
        // One slot per attempt: the connection it used, and whether the
        // server refused it as never started.
        let used: Vec<AtomicU64> = (0..max).map(|_| AtomicU64::new(0)).collect();
        let not_started: Vec<AtomicBool> = (0..max).map(|_| AtomicBool::new(false)).collect();
        let (used, not_started) = (&used, &not_started);
        let attempt = |i: usize| {
            let avoid = i
                .checked_sub(1)
                .map(|prev| used[prev].load(Relaxed))
                .filter(|id| *id != 0);
            self.attempt::<C, Req, Out>(
                method,
                request,
                now,
                deadline,
                trace,
                Tried {
                    not_started: &not_started[i],
                    avoid,
                    used: &used[i],
                },
                accept,
            )
        };
        let mut running = futures_util::stream::FuturesUnordered::new();
        running.push(attempt(0));
        let mut started = 1;
        let mut next_at = tokio::time::Instant::now() + hedge.delay;
        let mut last: Option<Status> = None;
        loop {
            let more = started < max;
            tokio::select! {
                done = running.next(), if !running.is_empty() => {
                    match done {
                        Some(Ok(out)) => {
                            throttle.succeeded();
                            return Ok(out);
                        }
                        Some(Err(status)) if hedge.non_fatal.contains(&status.code()) => {
                            throttle.failed();
                            last = Some(status);
                            // The next attempt now, not after the delay.
                            next_at = tokio::time::Instant::now();
                        }
                        Some(Err(status)) => return Err(status),
                        None => {}
                    }
                }
                () = tokio::time::sleep_until(next_at), if more => {
                    if throttle.allow_hedge() {
                        tracing::debug!(attempt = started + 1, "hedging an idempotent call");
                        running.push(attempt(started));
                        started += 1;
                    } else {
                        // The budget holds hedges back: no more.
                        started = max;
                    }
                    next_at += hedge.delay;
                }
            }
            if running.is_empty() && started >= max {
                let status = last.unwrap_or_else(|| {
                    Status::unavailable(format!("{}: no attempt was made", method.full_name))
                });
                return Err(Status::new(
                    status.code(),
                    format!(
                        "{} (after {started} hedged attempt{})",
                        status.message(),
                        if started == 1 { "" } else { "s" }
                    ),
                ));
            }
        }
    }

    /// One try of a call.
    #[allow(clippy::too_many_arguments)]
    async fn attempt<C: Codec, Req: Serialize + Send, Out>(
        &self,
        method: &'static MethodDescriptor,
        request: &Mutex<Option<Req>>,
        now: Instant,
        deadline: Option<Instant>,
        trace: &TraceContext,
        tried: Tried<'_>,
        accept: &(dyn Fn(&bytes::Bytes) -> Result<Out, Status> + Sync),
    ) -> Result<Out, Status> {
        let Tried {
            not_started,
            avoid,
            used,
        } = tried;
        // A deadline already past fails before anything else happens.
        deadline_budget(now, deadline, method.full_name)?;
        if arguments_dropped(request) {
            return Err(Status::internal(
                "the call's arguments were already dropped",
            ));
        }
        // A connection that closes between being handed out and the call
        // registering in its table never saw the call: it is retried once
        // on a fresh connection (gRPC's transparent retry).
        let mut retried = false;
        let (conn, counters, encoded, started, response) = loop {
            let want = super::Want {
                service: Some(self.service.name),
                avoid,
            };
            let conn = self.channel.connection_for(deadline, want).await?;
            used.store(conn.stats.id(), Relaxed);
            tracing::Span::current().record("transport", conn.selection.transport.as_str());
            let counters = Arc::clone(conn.check_method(self.service, method)?);
            // Behind a lock, held only here: `Req` need not be `Sync` for
            // the call's future to be `Send` (a channel's layers need it
            // to be), and hedged attempts share the arguments.
            let encoded = {
                let arguments = request.lock().unwrap_or_else(PoisonError::into_inner);
                match arguments.as_ref() {
                    Some(arguments) => {
                        self.encode_spilling::<C, Req>(method, arguments, trace, Some(&conn))?
                    }
                    None => {
                        return Err(Status::internal(
                            "the call's arguments were already dropped",
                        ));
                    }
                }
            };
            let (waiter, response) = oneshot::channel();
            let started = {
                let mut session = conn
                    .session
                    .lock()
                    .map_err(|_| Status::internal("the call table lock is poisoned"))?;
                match session.start_call(
                    Instant::now(),
                    deadline,
                    method.full_name,
                    Waiter::Call(waiter),
                ) {
                    Ok(started) => started,
                    Err(_) if session.closed().is_some() && !retried => {
                        retried = true;
                        tracing::debug!(url = %conn.url, "the connection closed before the call was sent; retrying on a new one");
                        continue;
                    }
                    Err((status, _)) => return Err(status),
                }
            };
            break (conn, counters, encoded, started, response);
        };
        // Large arguments are freed before the call waits (their memory
        // then serves the response); only small ones are kept to make the
        // call again if the server refuses it as never started.
        let encoded_len = encoded.buf.len() + encoded.bulk.as_ref().map_or(0, BulkBody::len);
        // A retried or hedged method's are kept whatever their size: the
        // next attempt needs them.
        let retries = self
            .channel
            .retry_policy(method)
            .is_some_and(|policy| policy.max_attempts > 1)
            || self.channel.hedge_policy(method).is_some();
        if encoded_len > KEEP_ARGUMENTS_UP_TO && !retries {
            *request.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        let mut guard = PendingGuard {
            conn: &conn,
            counters: &counters,
            call_id: started.call_id,
            started: now,
            armed: true,
            sent: 0,
            code: Code::Cancelled,
            received: 0,
            tell_server: true,
        };
        let head = RequestHead {
            flags: method.frame_flags(),
            credit: 0,
            kind: Kind::Request,
            call_id: started.call_id,
            method_id: method.id,
            deadline_us: started.deadline_us,
        };
        let (outgoing, len) = encoded.seal(&conn, head, method)?;
        let send = conn.outgoing.send(outgoing);
        let sent = match deadline {
            None => send.await,
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), send).await {
                Ok(sent) => sent,
                Err(_) => {
                    // Never sent: the server never saw the call.
                    guard.code = Code::DeadlineExceeded;
                    return Err(Status::deadline_exceeded(format!(
                        "{} could not even be sent within its deadline of {:?}: {} bytes are \
                         already queued for {} and the server is not reading them (backed up \
                         or stalled); retry later or raise the timeout",
                        method.full_name,
                        deadline.saturating_duration_since(now),
                        crate::session::OUTGOING_BYTES,
                        conn.url
                    )));
                }
            },
        };
        sent.map_err(|_| {
            conn.unusable_reason()
                .unwrap_or_else(|| Status::unavailable("the connection's writer has stopped"))
        })?;
        guard.sent = len;
        conn.stats.started();
        let frame = match wait_response(conn.driver(), &*conn, response, now, deadline).await {
            Waited::Response(Ok(frame)) => {
                guard.armed = false;
                frame
            }
            Waited::Response(Err(status)) => {
                guard.armed = false;
                guard.code = status.code();
                return Err(Status::new(
                    status.code(),
                    format!("{}: {}", method.full_name, status.message()),
                ));
            }
            Waited::Dropped => {
                guard.armed = false;
                guard.code = Code::Unavailable;
                return Err(Status::unavailable(format!(
                    "{}: the connection to {} closed before the response arrived",
                    method.full_name, conn.url
                )));
            }
            Waited::Deadline => {
                guard.code = Code::DeadlineExceeded;
                // The server's timer ends the handler at the same deadline;
                // a Cancel would only cost it a token of its flood budget.
                guard.tell_server = false;
                return Err(Status::deadline_exceeded(format!(
                    "{} did not complete within its deadline of {:?} ({}); the call was \
                     cancelled — raise the timeout if the work needs longer",
                    method.full_name,
                    deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(now)),
                    conn.url
                )));
            }
        };
        guard.received = HEADER_LEN + frame.payload.len() + frame.metadata.len();
        if let Err(status) = super::response_metadata::record(
            method.full_name,
            &frame.metadata,
            conn.metadata_limits,
        ) {
            guard.code = status.code();
            return Err(status);
        }
        guard.code = Code::from_u16(frame.header.status);
        if guard.code != Code::Ok {
            // The server refused it before starting it (HTTP/2's
            // REFUSED_STREAM): it may be made again.
            not_started.store(frame.header.flags & FLAG_NOT_STARTED != 0, Relaxed);
            return Err(frame_status(&frame));
        }
        accept(&frame.payload).inspect_err(|_| guard.code = Code::Internal)
    }

    /// Sends a one-way call: returns once the transport has it. When the
    /// transport is backed up, waits (up to the call's deadline).
    pub async fn oneway<C: Codec, Req: Serialize + Send>(
        &self,
        method: &'static MethodDescriptor,
        request: Req,
    ) -> Result<(), Status> {
        self.send_oneway::<C, Req>(method, request, true).await
    }

    /// Sends a one-way call only if the transport takes it at once: a full
    /// queue is ResourceExhausted instead of a wait.
    pub async fn try_oneway<C: Codec, Req: Serialize + Send>(
        &self,
        method: &'static MethodDescriptor,
        request: Req,
    ) -> Result<(), Status> {
        self.send_oneway::<C, Req>(method, request, false).await
    }

    async fn send_oneway<C: Codec, Req: Serialize + Send>(
        &self,
        method: &'static MethodDescriptor,
        request: Req,
        wait: bool,
    ) -> Result<(), Status> {
        if let Some(invalid) = &self.invalid {
            return Err(invalid.clone());
        }
        let Some(stack) = self.channel.layers().stack() else {
            return self
                .send_oneway_direct::<C, Req>(method, request, wait)
                .await;
        };
        let now = Instant::now();
        let (deadline, _) = self.call_context(now);
        let layered = crate::layers::LayerStack::run(
            &**stack,
            self.layer_call(method, deadline),
            |call| async move {
                let core = self.with_layer_metadata(call);
                Box::pin(core.send_oneway_direct::<C, Req>(method, request, wait))
                    .await
                    .map(|()| Response::sent())
            },
        );
        within_deadline(deadline, now, method, layered)
            .await
            .map(drop)
    }

    /// [`send_oneway`](Self::send_oneway) past the layers.
    async fn send_oneway_direct<C: Codec, Req: Serialize + Send>(
        &self,
        method: &'static MethodDescriptor,
        request: Req,
        wait: bool,
    ) -> Result<(), Status> {
        let now = Instant::now();
        let (deadline, trace) = self.call_context(now);
        let deadline_us = deadline_budget(now, deadline, method.full_name)?;
        let (mut buf, metadata_len) = self.encode::<C, Req>(method, &request, &trace)?;
        drop(request);
        // A queue takes the call even while no server is connected.
        let (route, _) = self.channel.oneway_route(self.service);
        if let OnewayRoute::Queue(queue) = route {
            if self.channel.current().is_usable() {
                self.channel.current().check_method(self.service, method)?;
            }
            let head = RequestHead {
                flags: 0,
                credit: 0,
                kind: Kind::OneWay,
                call_id: QUEUE_CALL_IDS.fetch_add(1, Relaxed),
                method_id: method.id,
                deadline_us,
            };
            let limit = u32::try_from(queue.max_message()).unwrap_or(u32::MAX);
            let tracks = Tracks {
                connection: self.channel.current().selection.transport,
                queue_max: Some(queue.max_message()),
                bulk_threshold: None,
            };
            if seal_request(&mut buf, head, metadata_len, limit).is_ok()
                && select::select(CallTrack {
                    kind: CallKind::OneWay { bytes: buf.len() },
                    tracks,
                }) == Transport::MessageQueue
            {
                return self
                    .send_queued(&queue, method, &buf, wait, deadline, now)
                    .await;
            }
            tracing::debug!(
                method = method.full_name,
                len = buf.len(),
                max = queue.max_message(),
                "one-way call larger than the queue's message size: sent over the connection"
            );
        }
        let want = super::Want {
            service: Some(self.service.name),
            avoid: None,
        };
        let conn = self.channel.connection_for(deadline, want).await?;
        let counters = Arc::clone(conn.check_method(self.service, method)?);
        let call_id = conn
            .session
            .lock()
            .map_err(|_| Status::internal("the call table lock is poisoned"))?
            .allocate_id();
        let head = RequestHead {
            flags: method.frame_flags(),
            credit: 0,
            kind: Kind::OneWay,
            call_id,
            method_id: method.id,
            deadline_us,
        };
        conn.limits()
            .seal_request(&mut buf, head, metadata_len, method.full_name)?;
        let len = buf.len();
        conn.stats.started();
        let (done, written) = oneshot::channel();
        let outgoing = Outgoing {
            bytes: buf,
            written: Some(done),
            bulk: None,
            budget: None,
        };
        let mut pending = Some(outgoing);
        if !wait {
            // `pending` was set just above.
            let outgoing = pending.take().expect("set above");
            if let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) =
                conn.outgoing.try_send(outgoing)
            {
                conn.stats.finished(
                    &counters,
                    Code::ResourceExhausted,
                    Some(now.elapsed()),
                    0,
                    0,
                );
                return Err(Status::resource_exhausted(format!(
                    "{}: the connection's send queue is full; nothing was sent — retry later \
                     or use the waiting form",
                    method.full_name
                )));
            }
        }
        let send = async {
            let queued = match pending {
                Some(outgoing) => conn.outgoing.send(outgoing).await.is_ok(),
                None => true,
            };
            queued && written.await.is_ok()
        };
        let sent = match deadline {
            None => send.await,
            Some(deadline) => tokio::time::timeout_at(deadline.into(), send)
                .await
                .map_err(|_| {
                    Status::deadline_exceeded(format!(
                        "{}: the transport did not take the call before its deadline; the \
                         server is not keeping up",
                        method.full_name
                    ))
                })?,
        };
        let code = if sent { Code::Ok } else { Code::Unavailable };
        conn.stats
            .finished(&counters, code, Some(now.elapsed()), len, 0);
        if sent {
            Ok(())
        } else {
            Err(conn.unusable_reason().unwrap_or_else(|| {
                Status::unavailable(format!(
                    "{}: the connection to {} failed before the call was sent",
                    method.full_name, conn.url
                ))
            }))
        }
    }

    /// Puts an encoded one-way frame in the server's queue.
    #[cfg(target_os = "linux")]
    async fn send_queued(
        &self,
        queue: &QueueRoute,
        method: &'static MethodDescriptor,
        frame: &[u8],
        wait: bool,
        deadline: Option<Instant>,
        started: Instant,
    ) -> Result<(), Status> {
        use crate::transport::mqueue::MqSendError;
        // A full queue is waited on until the call's deadline; with none, for
        // the channel's queue_full_wait: never forever.
        let bound = self.channel.queue_full_wait();
        let result = if wait {
            let until = deadline.unwrap_or_else(|| Instant::now() + bound);
            queue.sender.send(frame, method.priority, Some(until)).await
        } else {
            queue.sender.try_send(frame, method.priority)
        };
        let result = result.map_err(|err| match err {
            MqSendError::DeadlineExceeded { name } if deadline.is_none() => {
                MqSendError::StayedFull {
                    name,
                    waited: bound,
                }
            }
            other => other,
        });
        let code = match &result {
            Ok(()) => Code::Ok,
            Err(err) => err.code(),
        };
        if let Some(counters) = queue.counters(method.id) {
            counters.finished(code, Some(started.elapsed()), frame.len(), 0);
        }
        result.map_err(|err| {
            if matches!(err, MqSendError::Removed { .. }) {
                self.channel.forget_oneway_route(self.service);
            }
            Status::new(err.code(), format!("{}: {err}", method.full_name))
        })
    }

    #[cfg(not(target_os = "linux"))]
    async fn send_queued(
        &self,
        _queue: &QueueRoute,
        method: &'static MethodDescriptor,
        _frame: &[u8],
        _wait: bool,
        _deadline: Option<Instant>,
        _started: Instant,
    ) -> Result<(), Status> {
        Err(Status::unavailable(format!(
            "{}: message queues are not available on this platform",
            method.full_name
        )))
    }
}

/// What one attempt of a call reports back, and what it should avoid.
struct Tried<'a> {
    /// Set when the server refused the call as never started.
    not_started: &'a AtomicBool,
    /// The connection id of the previous attempt: another replica is
    /// preferred.
    avoid: Option<u64>,
    /// Set to the connection id this attempt used (0: none yet); read by
    /// hedging while the attempt runs.
    used: &'a AtomicU64,
}

/// Whether the call's arguments were dropped (large ones, once sent).
fn arguments_dropped<Req>(request: &Mutex<Option<Req>>) -> bool {
    request
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_none()
}

/// Arguments whose encoding is at most this many bytes are kept until the
/// response, to make the call again when a server refuses it as never
/// started (it was letting an idle connection go); larger ones are freed
/// as soon as they are encoded.
const KEEP_ARGUMENTS_UP_TO: usize = 64 * 1024;

/// Call ids of one-way frames sent through queues (the server ignores them;
/// they tell frames apart in logs).
static QUEUE_CALL_IDS: AtomicU64 = AtomicU64::new(1);

/// Ends a call's bookkeeping however the call ends: records it in the
/// debug counters, and if it is dropped (or times out) before its response,
/// takes it out of the table and tells the server to stop the handler.
struct PendingGuard<'a> {
    conn: &'a Connection,
    counters: &'a MethodCounters,
    call_id: u64,
    started: Instant,
    /// The call still waits for its response.
    armed: bool,
    /// Bytes of the request handed to the writer; 0 while not sent, in which
    /// case the server never saw the call.
    sent: usize,
    /// How the call ended (Cancelled unless a path says otherwise).
    code: Code,
    /// Bytes of the response.
    received: usize,
    /// Send a Cancel if dropped while armed (not when the deadline, which
    /// the server enforces too, ended the call).
    tell_server: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.sent > 0 {
            let elapsed = self.started.elapsed();
            if self.code != Code::Cancelled {
                self.conn.stats.unary_latency(elapsed);
            }
            if let Some(outlier) = self.conn.outlier.get()
                && outlier.record(self.code, super::outlier::now_ns())
            {
                tracing::info!(url = %self.conn.url, code = ?self.code, "a replica failing call after call is ejected");
                self.conn.stats.event(
                    "ejected",
                    format!(
                        "its calls failed {} times in a row (last: {:?}); the channel picks \
                         other replicas for {:?} (ChannelBuilder::outlier_ejection)",
                        outlier.threshold(),
                        self.code,
                        outlier
                            .ejected_for(super::outlier::now_ns())
                            .unwrap_or_default()
                    ),
                );
            }
            self.conn.stats.finished(
                self.counters,
                self.code,
                Some(elapsed),
                self.sent,
                self.received,
            );
        }
        if !self.armed {
            return;
        }
        let tell_server = self.sent > 0 && self.tell_server;
        let cancel = self
            .conn
            .session
            .lock()
            .ok()
            .and_then(|mut session| session.abandon(self.call_id, tell_server));
        if let Some(cancel) = cancel {
            self.conn.stats.sent(cancel.len());
            // A full queue drops the cancel: the server then finishes the
            // handler and its response is ignored.
            let _ = self.conn.outgoing.try_send(cancel.into());
        }
    }
}
