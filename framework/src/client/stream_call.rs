//! Streaming calls from the client side: a call whose arguments are
//! followed by a stream of messages (client streaming), whose result is a
//! stream (server streaming), or both. Each is a call in the connection's
//! table like a unary one; its messages travel as Data frames within the
//! credit the receiver grants.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::connection::{Connection, Waiter};
use super::driver::{Waited, wait_response};
use crate::codec::Codec;
use crate::debug::recorder::{ConnectionStats, MethodCounters};
use crate::descriptor::MethodDescriptor;
use crate::layers::Response;
use crate::protocol::call::deadline_budget;
use crate::protocol::frame::{FLAG_CLIENT_STREAM, FLAG_SERVER_STREAM, Frame, HEADER_LEN, Kind};
use crate::protocol::metadata::{Metadata, MetadataLimits};
use crate::protocol::session::StreamMessages;
use crate::protocol::session::encode::{RequestHead, end_frame, frame_status};
use crate::protocol::status::{Code, Status};
use crate::streaming::pump::{Sent, StreamSink, pump};
use crate::streaming::{
    CallEnd, Ending, GrantBatch, Granter, Inbox, Received, SendGate, Streaming, deadline_timer,
};

use super::ClientCore;

/// The receiving end of a streaming call this side made: where the
/// connection hands its messages, credit and end.
#[derive(Debug)]
pub(crate) struct StreamCall {
    /// The callee's messages (server streaming).
    inbox: Option<Arc<Inbox>>,
    /// The credit for this side's messages (client streaming).
    gate: Arc<SendGate>,
    /// The single response of a call that streams only this way.
    response: Mutex<Option<oneshot::Sender<Result<Frame, Status>>>>,
    metadata_limits: MetadataLimits,
    what: &'static str,
    /// The method's counters on this connection.
    counters: Arc<MethodCounters>,
    /// The connection's counters.
    stats: Arc<ConnectionStats>,
}

impl StreamCall {
    /// Messages from the callee, in order.
    pub(crate) fn data(&self, messages: StreamMessages) {
        if let Some(inbox) = &self.inbox {
            let count = messages.len();
            self.counters.stream_received(count, messages.wire_bytes);
            self.stats.stream_messages(0, count);
            inbox.push_all(messages.chunks);
        }
    }

    /// The callee granted `credit` more messages.
    pub(crate) fn credit(&self, credit: u32) {
        self.gate.grant(credit);
    }

    /// The call ended: its Response, or why there is none.
    pub(crate) fn answer(&self, result: Result<Frame, Status>) {
        self.gate.close(Status::cancelled(format!(
            "{}: the call ended; the rest of the stream was not sent",
            self.what
        )));
        let waiter = self
            .response
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(waiter) = waiter {
            let _ = waiter.send(result);
            return;
        }
        let Some(inbox) = &self.inbox else {
            return;
        };
        let ending = match result {
            Ok(frame) => {
                let trailers = Metadata::decode_limited(&frame.metadata, self.metadata_limits);
                match (trailers, Code::from_u16(frame.header.status)) {
                    (Ok(trailers), Code::Ok) => Ending::Done { trailers },
                    (Ok(trailers), _) => Ending::Failed {
                        status: prefixed(self.what, &frame_status(&frame)),
                        trailers,
                    },
                    (Err(err), _) => Ending::Failed {
                        status: Status::internal(format!(
                            "the trailers of {} could not be read ({err}); ask the server for \
                             less metadata, or raise ChannelBuilder::max_metadata",
                            self.what
                        )),
                        trailers: Metadata::new(),
                    },
                }
            }
            Err(status) => Ending::Failed {
                status: prefixed(self.what, &status),
                trailers: Metadata::new(),
            },
        };
        inbox.end(ending);
    }
}

fn prefixed(what: &str, status: &Status) -> Status {
    Status::new(status.code(), format!("{what}: {}", status.message()))
}

/// Grants the callee credit through the connection's session.
struct ConnectionGrants {
    conn: Arc<Connection>,
    call_id: u64,
}

impl Granter for ConnectionGrants {
    fn grant(&self, credit: u32) {
        let frames: Vec<Vec<u8>> = match self.conn.session.lock() {
            Ok(mut session) => {
                session.grant(true, self.call_id, credit);
                std::iter::from_fn(|| session.poll_transmit())
                    .map(|transmit| transmit.bytes)
                    .collect()
            }
            Err(_) => return,
        };
        for frame in frames {
            self.conn.stats.sent(frame.len());
            // A grant must not be lost (the stream would stall): when the
            // writer's queue is full, it waits on a task of its own.
            if let Err(tokio::sync::mpsc::error::TrySendError::Full(frame)) =
                self.conn.outgoing.try_send_control(frame.into())
            {
                let outgoing = self.conn.outgoing.clone();
                tokio::spawn(async move {
                    let _ = outgoing.send_control(frame).await;
                });
            }
        }
    }
}

/// Ends a streaming call's bookkeeping however it ends, and cancels it
/// (telling the server) when it is dropped before its end.
struct StreamGuard {
    conn: Arc<Connection>,
    counters: Arc<MethodCounters>,
    call_id: u64,
    started: Instant,
    /// Bytes sent (request and messages); 0 while the request is not sent.
    sent: usize,
    armed: bool,
    /// The task sending this side's messages, if it has one.
    sender: Option<AbortHandle>,
}

impl CallEnd for StreamGuard {
    fn ended(&mut self, code: Code, received: usize) {
        if !self.armed {
            return;
        }
        self.armed = false;
        self.conn.stats.stream_open(false);
        // Gone from the table (the Response took it) unless a deadline
        // ended it here: the server's timer ends it there too.
        if let Ok(mut session) = self.conn.session.lock() {
            let _ = session.abandon(self.call_id, false);
        }
        self.conn.stats.finished(
            &self.counters,
            code,
            Some(self.started.elapsed()),
            self.sent,
            received,
        );
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            sender.abort();
        }
        if !self.armed {
            return;
        }
        self.conn.stats.stream_open(false);
        if self.sent > 0 {
            self.conn.stats.finished(
                &self.counters,
                Code::Cancelled,
                Some(self.started.elapsed()),
                self.sent,
                0,
            );
        }
        let cancel = self
            .conn
            .session
            .lock()
            .ok()
            .and_then(|mut session| session.abandon(self.call_id, self.sent > 0));
        if let Some(cancel) = cancel {
            self.conn.stats.sent(cancel.len());
            // A full queue drops the cancel: the handler then runs on until
            // its stream stalls for credit and its deadline ends it.
            let _ = self.conn.outgoing.try_send(cancel.into());
        }
    }
}

/// A streaming call whose request is sent.
struct Opened {
    conn: Arc<Connection>,
    call: Arc<StreamCall>,
    guard: StreamGuard,
    response: Option<oneshot::Receiver<Result<Frame, Status>>>,
    started: Instant,
    deadline: Option<Instant>,
}

impl Opened {
    fn sink(&self, method: &'static MethodDescriptor) -> StreamSink {
        StreamSink {
            outbound: self.conn.outgoing.clone(),
            gate: Arc::clone(&self.call.gate),
            call_id: self.guard.call_id,
            from_callee: false,
            limit: self.conn.limits().peer,
            spill_to: self.conn.outgoing.spill_to(),
            batches: self.conn.outgoing.peer_reads_batches(),
            what: method.full_name,
            flags: method.frame_flags(),
        }
    }

    /// The reading end of the callee's stream.
    fn into_streaming<C: Codec, Resp: DeserializeOwned>(
        self,
        method: &'static MethodDescriptor,
    ) -> Streaming<Resp> {
        let Some(inbox) = self.call.inbox.clone() else {
            unreachable!("a call with a stream result has an inbox");
        };
        let window = inbox.window();
        Streaming::received(Received {
            inbox,
            granter: Arc::new(ConnectionGrants {
                conn: Arc::clone(&self.conn),
                call_id: self.guard.call_id,
            }),
            decode: |bytes, range| {
                C::decode_shared_part(bytes, range).map_err(|err| err.to_string())
            },
            what: method.full_name,
            deadline: deadline_timer(self.started, self.deadline),
            call: Some(Box::new(self.guard)),
            received: 0,
            trailers: None,
            unchecked: 0,
            local: std::collections::VecDeque::new(),
            batch: None,
            grants: GrantBatch::new(window),
        })
    }
}

/// Sends this side's messages, then its half-close; how it ended and what
/// it sent.
async fn send_stream<C: Codec, Item: Serialize>(
    sink: StreamSink,
    mut items: Pin<Box<dyn Stream<Item = Result<Item, Status>> + Send>>,
) -> (Result<(), Status>, Sent) {
    let mut sent = Sent::default();
    let result = pump::<C, Item>(&sink, &mut items, &mut sent).await;
    if result.is_ok() {
        let end = end_frame(sink.call_id);
        sent.bytes += end.len() as u64;
        if sink.outbound.send(end.into()).await.is_err() {
            return (
                Err(Status::unavailable(format!(
                    "{}: the connection's writer stopped before the stream's end was sent",
                    sink.what
                ))),
                sent,
            );
        }
    }
    (result, sent)
}

impl ClientCore {
    /// Calls `method`, whose result is a stream, with `request` (a tuple of
    /// the arguments): the stream of its messages. Dropping it before its
    /// end cancels the call.
    pub async fn server_streaming<C, Req, Resp>(
        &self,
        method: &'static MethodDescriptor,
        request: Req,
    ) -> Result<Streaming<Resp>, Status>
    where
        C: Codec,
        Req: Serialize + Send,
        Resp: DeserializeOwned + Send + 'static,
    {
        let opened = self
            .open_stream::<C, Req>(method, request, FLAG_SERVER_STREAM)
            .await?;
        Ok(opened.into_streaming::<C, Resp>(method))
    }

    /// Calls `method` with `request` (a tuple of the other arguments) and
    /// the messages of `items`, sent as the server grants credit; its
    /// result once the server answered. A server that answers before it
    /// read everything ends the call: the rest of `items` is not sent.
    pub async fn client_streaming<C, Req, Item, Resp, S>(
        &self,
        method: &'static MethodDescriptor,
        request: Req,
        items: S,
    ) -> Result<Resp, Status>
    where
        C: Codec,
        Req: Serialize + Send,
        Item: Serialize + Send + 'static,
        Resp: DeserializeOwned,
        S: Stream<Item = Item> + Send + 'static,
    {
        let mut opened = self
            .open_stream::<C, Req>(method, request, FLAG_CLIENT_STREAM)
            .await?;
        let sink = opened.sink(method);
        let items: Pin<Box<dyn Stream<Item = Result<Item, Status>> + Send>> =
            Box::pin(items.map(Ok));
        let Some(response) = opened.response.take() else {
            unreachable!("a call with a single result waits on a one-shot");
        };
        let conn = Arc::clone(&opened.conn);
        let wait = wait_response(
            conn.driver(),
            &*conn,
            response,
            opened.started,
            opened.deadline,
        );
        tokio::pin!(wait);
        let sending = send_stream::<C, Item>(sink, items);
        tokio::pin!(sending);
        let mut sending_done = false;
        let waited = loop {
            tokio::select! {
                biased;
                waited = &mut wait => break waited,
                (result, sent) = &mut sending, if !sending_done => {
                    sending_done = true;
                    opened.guard.sent += sent.bytes as usize;
                    opened.conn.stats.stream_messages(sent.messages, 0);
                    if let Err(status) = result
                        && !gate_closed(&opened.call.gate)
                    {
                        // This side's stream failed (a message over the
                        // server's limit): the call is cancelled.
                        return Err(status);
                    }
                }
            }
        };
        let frame = self.waited(method, &mut opened, waited)?;
        opened.guard.ended(
            Code::Ok,
            HEADER_LEN + frame.payload.len() + frame.metadata.len(),
        );
        C::decode_shared(&frame.payload).map_err(|err| {
            Status::internal(format!(
                "the response of {} could not be decoded ({err}); do client and server use \
                 the same version of the trait?",
                method.full_name
            ))
        })
    }

    /// Calls `method`, whose argument and result are streams: the stream of
    /// its messages, while the messages of `items` are sent as the server
    /// grants credit. Dropping the result cancels the call.
    pub async fn bidi_streaming<C, Req, Item, Resp, S>(
        &self,
        method: &'static MethodDescriptor,
        request: Req,
        items: S,
    ) -> Result<Streaming<Resp>, Status>
    where
        C: Codec,
        Req: Serialize + Send,
        Item: Serialize + Send + 'static,
        Resp: DeserializeOwned + Send + 'static,
        S: Stream<Item = Item> + Send + 'static,
    {
        let mut opened = self
            .open_stream::<C, Req>(method, request, FLAG_CLIENT_STREAM | FLAG_SERVER_STREAM)
            .await?;
        let sink = opened.sink(method);
        let items: Pin<Box<dyn Stream<Item = Result<Item, Status>> + Send>> =
            Box::pin(items.map(Ok));
        let call = Arc::clone(&opened.call);
        let conn = Arc::clone(&opened.conn);
        let call_id = opened.guard.call_id;
        let sender = tokio::spawn(async move {
            let (result, sent) = send_stream::<C, Item>(sink, items).await;
            conn.stats.stream_messages(sent.messages, 0);
            if let Err(status) = result
                && !gate_closed(&call.gate)
            {
                // This side's stream failed: the call ends with why, and
                // the server is told.
                call.answer(Err(status));
                let cancel = conn
                    .session
                    .lock()
                    .ok()
                    .and_then(|mut session| session.abandon(call_id, true));
                if let Some(cancel) = cancel {
                    let _ = conn.outgoing.try_send(cancel.into());
                }
            }
        });
        opened.guard.sender = Some(sender.abort_handle());
        Ok(opened.into_streaming::<C, Resp>(method))
    }

    /// What a wait for a client-streaming call's response means.
    fn waited(
        &self,
        method: &'static MethodDescriptor,
        opened: &mut Opened,
        waited: Waited,
    ) -> Result<Frame, Status> {
        let frame = match waited {
            Waited::Response(Ok(frame)) => frame,
            Waited::Response(Err(status)) => {
                opened.guard.ended(status.code(), 0);
                return Err(prefixed(method.full_name, &status));
            }
            Waited::Dropped => {
                opened.guard.ended(Code::Unavailable, 0);
                return Err(Status::unavailable(format!(
                    "{}: the connection to {} closed before the response arrived",
                    method.full_name, opened.conn.url
                )));
            }
            Waited::Deadline => {
                opened.guard.ended(Code::DeadlineExceeded, 0);
                return Err(Status::deadline_exceeded(format!(
                    "{} did not complete within its deadline of {:?}; the call was cancelled \
                     — raise the timeout if the stream needs longer",
                    method.full_name,
                    opened
                        .deadline
                        .map(|d| d.saturating_duration_since(opened.started))
                        .unwrap_or_default()
                )));
            }
        };
        if let Err(status) = super::response_metadata::record(
            method.full_name,
            &frame.metadata,
            opened.conn.metadata_limits,
        ) {
            opened.guard.ended(status.code(), 0);
            return Err(status);
        }
        let code = Code::from_u16(frame.header.status);
        if code != Code::Ok {
            opened.guard.ended(code, 0);
            return Err(prefixed(method.full_name, &frame_status(&frame)));
        }
        Ok(frame)
    }

    /// Starts a streaming call: registers it, sends its request.
    async fn open_stream<C: Codec, Req: Serialize + Send>(
        &self,
        method: &'static MethodDescriptor,
        request: Req,
        flags: u16,
    ) -> Result<Opened, Status> {
        if let Some(invalid) = &self.invalid {
            return Err(invalid.clone());
        }
        let Some(stack) = self.channel.layers().stack() else {
            return self
                .open_stream_direct::<C, Req>(method, request, flags)
                .await;
        };
        // The layers see the stream opened; its messages go beside them.
        let now = Instant::now();
        let (deadline, _) = self.call_context(now);
        let mut opened = None;
        let slot = &mut opened;
        let layered = crate::layers::LayerStack::run(
            &**stack,
            self.layer_call(method, deadline),
            |call| async move {
                let core = self.with_layer_metadata(call);
                let stream =
                    Box::pin(core.open_stream_direct::<C, Req>(method, request, flags)).await?;
                *slot = Some(stream);
                Ok(Response::stream())
            },
        );
        super::call::within_deadline(deadline, now, method, layered).await?;
        opened.ok_or_else(|| {
            Status::internal(format!(
                "a layer answered the stream call {} without calling on; a stream cannot be \
                 made up by a layer",
                method.full_name
            ))
        })
    }

    /// [`open_stream`](Self::open_stream) past the layers.
    async fn open_stream_direct<C: Codec, Req: Serialize + Send>(
        &self,
        method: &'static MethodDescriptor,
        request: Req,
        flags: u16,
    ) -> Result<Opened, Status> {
        let started = Instant::now();
        let (deadline, trace) = self.call_context(started);
        deadline_budget(started, deadline, method.full_name)?;
        let want = super::Want {
            service: Some(self.service.name),
            avoid: None,
        };
        let conn = self.channel.connection_for(deadline, want).await?;
        let counters = Arc::clone(conn.check_method(self.service, method)?);
        let encoded = self.encode_spilling::<C, Req>(method, &request, &trace, Some(&conn))?;
        drop(request);
        let window = self.channel.stream_window();
        let server_streams = flags & FLAG_SERVER_STREAM != 0;
        let (response_tx, response) = if server_streams {
            (None, None)
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        };
        let call = Arc::new(StreamCall {
            inbox: server_streams.then(|| Inbox::new(window)),
            gate: Arc::new(SendGate::watched(0, Arc::clone(&conn.stats))),
            response: Mutex::new(response_tx),
            metadata_limits: conn.metadata_limits,
            what: method.full_name,
            counters: Arc::clone(&counters),
            stats: Arc::clone(&conn.stats),
        });
        let begun = conn
            .session
            .lock()
            .map_err(|_| Status::internal("the call table lock is poisoned"))?
            .start_stream_call(
                Instant::now(),
                deadline,
                method.full_name,
                Waiter::Stream(Arc::clone(&call)),
                flags,
                window,
            )
            .map_err(|(status, _)| status)?;
        let mut guard = StreamGuard {
            conn: Arc::clone(&conn),
            counters,
            call_id: begun.call_id,
            started,
            sent: 0,
            armed: true,
            sender: None,
        };
        // Counted open once the guard that counts it closed exists.
        conn.stats.stream_open(true);
        let head = RequestHead {
            kind: Kind::Request,
            call_id: begun.call_id,
            method_id: method.id,
            deadline_us: begun.deadline_us,
            flags: flags | method.frame_flags(),
            credit: if server_streams { window } else { 0 },
        };
        let (outgoing, len) = encoded.seal(&conn, head, method)?;
        let send = conn.outgoing.send(outgoing);
        let sent = match deadline {
            None => send.await,
            Some(at) => tokio::time::timeout_at(at.into(), send)
                .await
                .map_err(|_| {
                    Status::deadline_exceeded(format!(
                        "{} could not even be sent within its deadline: the server is not \
                         reading this connection (backed up or stalled); retry later or raise \
                         the timeout",
                        method.full_name
                    ))
                })?,
        };
        sent.map_err(|_| {
            conn.unusable_reason()
                .unwrap_or_else(|| Status::unavailable("the connection's writer has stopped"))
        })?;
        guard.sent = len;
        conn.stats.started();
        Ok(Opened {
            conn,
            call,
            guard,
            response,
            started,
            deadline,
        })
    }
}

/// Whether `gate` was closed because the call ended.
fn gate_closed(gate: &SendGate) -> bool {
    gate.is_closed()
}
