//! One server connection: handlers run inside the task that reads requests
//! (no hand-off to another task on the hot path), responses are batched by
//! a writer task, cancellation and deadlines stop handlers.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use super::{Phase, ServerShared};
use crate::context::{ConnectionInfo, Context};
use crate::protocol::call::ServerCalls;
use crate::protocol::frame::{Decoded, Frame, HEADER_LEN, Header, Kind};
use crate::protocol::hello::Role;
use crate::protocol::metadata::Metadata;
use crate::protocol::status::Status;
use crate::service::{Reply, Request};
use crate::session::{
    OUTGOING_QUEUE, Outgoing, hello_frame, local_hello, pong_frame, read_hello, status_frame,
    write_loop,
};
use crate::transport::{Link, LinkRx};

type Outcome = (u64, bool, Result<Reply, Status>);

/// Serves one link until the peer leaves or the server stops.
pub(crate) async fn serve<L: Link>(
    shared: Arc<ServerShared>,
    link: L,
    mut phase: watch::Receiver<Phase>,
) {
    let transport = link.transport();
    let peer = link.peer();
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
    let hello = local_hello(
        Role::Server,
        shared.router.infos(),
        shared.config.frame_limit,
        u32::try_from(shared.config.max_in_flight).unwrap_or(u32::MAX),
    );
    if crate::transport::LinkTx::send(&mut tx, &hello_frame(&hello))
        .await
        .is_err()
    {
        return;
    }
    let (outgoing, queue) = mpsc::channel(OUTGOING_QUEUE);
    let writer = tokio::spawn(write_loop(tx, queue));
    let info = Arc::new(ConnectionInfo {
        transport,
        peer,
        peer_process: client.process_name.clone(),
        peer_claimed_pid: client.pid,
    });
    tracing::debug!(peer = %info.peer.addr, %transport, client = %client.process_name, "accepted");
    let max_in_flight = shared.config.max_in_flight;
    let mut conn = ServerConnection {
        shared,
        info,
        outgoing,
        calls: ServerCalls::new(max_in_flight),
        handlers: FuturesUnordered::new(),
        client_frame_limit: client.max_frame,
        draining: false,
        reading: true,
    };
    conn.run(&mut rx, frames, &mut phase).await;
    // Dropping the handlers cancels whatever still runs; dropping the sender
    // lets the writer flush and close.
    drop(conn);
    let _ = writer.await;
}

struct ServerConnection {
    shared: Arc<ServerShared>,
    info: Arc<ConnectionInfo>,
    outgoing: mpsc::Sender<Outgoing>,
    calls: ServerCalls<AbortHandle>,
    handlers: FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>>>,
    client_frame_limit: u32,
    /// No new calls are admitted; the connection ends when the last
    /// handler finishes.
    draining: bool,
    /// Frames are still read (false after a protocol error).
    reading: bool,
}

impl ServerConnection {
    async fn run<R: LinkRx>(
        &mut self,
        rx: &mut R,
        mut frames: Vec<Decoded>,
        phase: &mut watch::Receiver<Phase>,
    ) {
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
                Some((call_id, oneway, result)) = self.handlers.next(), if !self.handlers.is_empty() => {
                    self.finish(call_id, oneway, result).await;
                }
                received = rx.recv(&mut frames), if self.reading => match received {
                    Ok(true) => {}
                    // The client is gone: nobody waits for the handlers.
                    Ok(false) => return,
                    Err(err) => {
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
                        let status = Status::unavailable(
                            "the server is shutting down; calls in flight finish, new calls go elsewhere",
                        );
                        self.send(status_frame(Kind::GoAway, 0, &status)).await;
                    }
                }
            }
        }
    }

    /// The peer broke the protocol: say why, read nothing more, let the calls
    /// in flight finish, then close.
    async fn protocol_error(&mut self, status: Status) {
        tracing::warn!(peer = %self.info.peer.addr, %status, "closing connection");
        self.send(status_frame(Kind::GoAway, 0, &status)).await;
        self.reading = false;
        self.draining = true;
    }

    async fn send(&mut self, frame: Vec<u8>) {
        let _ = self.outgoing.send(frame.into()).await;
    }

    /// Handles one frame; an error closes the connection.
    async fn handle(&mut self, decoded: Decoded) -> Result<(), Status> {
        let frame = match decoded {
            Decoded::Frame(frame) => frame,
            Decoded::Oversized(header) => {
                if header.kind == Kind::Request {
                    let status = Status::resource_exhausted(format!(
                        "the request of {} bytes exceeds this server's limit of {} bytes; send \
                         less per call or raise ServerBuilder::max_frame",
                        header.body_len(),
                        self.shared.config.frame_limit
                    ));
                    self.send(status_frame(Kind::Response, header.call_id, &status))
                        .await;
                } else {
                    tracing::warn!(kind = ?header.kind, len = header.body_len(), "dropped an oversized frame");
                }
                return Ok(());
            }
        };
        match frame.header.kind {
            Kind::Request | Kind::OneWay => self.start(frame).await,
            Kind::Cancel => {
                if let Some(handle) = self.calls.cancel(frame.header.call_id) {
                    handle.abort();
                }
            }
            Kind::Ping => self.send(pong_frame(frame.header.call_id)).await,
            Kind::Hello => {
                return Err(Status::invalid_argument("a second hello on one connection"));
            }
            Kind::Response | Kind::Pong | Kind::GoAway => {}
        }
        Ok(())
    }

    async fn start(&mut self, frame: Frame) {
        let oneway = frame.header.kind == Kind::OneWay;
        let call_id = frame.header.call_id;
        let refuse =
            |status: Status| (!oneway).then(|| status_frame(Kind::Response, call_id, &status));
        if self.draining {
            let status = Status::unavailable(
                "the server is shutting down; retry on another instance or after it restarts",
            );
            if let Some(f) = refuse(status) {
                self.send(f).await;
            }
            return;
        }
        let Some((service, method)) = self.shared.router.route(frame.header.method_id).cloned()
        else {
            let status = self.shared.router.unknown(frame.header.method_id);
            tracing::debug!(%status, "unknown method");
            if let Some(f) = refuse(status) {
                self.send(f).await;
            }
            return;
        };
        let metadata = match Metadata::decode(&frame.metadata) {
            Ok(metadata) => metadata,
            Err(err) => {
                if let Some(f) = refuse(Status::invalid_argument(format!(
                    "{}: {err}",
                    method.full_name
                ))) {
                    self.send(f).await;
                }
                return;
            }
        };
        let (abort, registration) = AbortHandle::new_pair();
        let admitted = match self.calls.admit(Instant::now(), &frame.header, abort) {
            Ok(admitted) => admitted,
            Err(status) => {
                if let Some(f) = refuse(status) {
                    self.send(f).await;
                }
                return;
            }
        };
        // The router found the method, so the service has it.
        let Some(handler) = service.call(method.id, Request::new(frame.payload)) else {
            self.calls.finish(call_id);
            if let Some(f) = refuse(self.shared.router.unknown(method.id)) {
                self.send(f).await;
            }
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
        let guarded = async move {
            let run = AssertUnwindSafe(ctx.scope(handler)).catch_unwind();
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
            (call_id, oneway, result)
        };
        let abortable = Abortable::new(guarded, registration).map(move |outcome| {
            outcome.unwrap_or((
                call_id,
                true,
                Err(Status::cancelled("cancelled by the caller")),
            ))
        });
        self.handlers.push(Box::pin(abortable));
    }

    async fn finish(&mut self, call_id: u64, oneway: bool, result: Result<Reply, Status>) {
        if self.calls.finish(call_id).is_none() || oneway {
            // Cancelled meanwhile, or nobody waits for an answer.
            if let Err(status) = &result
                && oneway
            {
                tracing::warn!(call_id, %status, "one-way call failed");
            }
            return;
        }
        let frame = match result {
            Ok(reply) => {
                let mut buf = reply.into_framed_buf();
                let body = buf.len() - HEADER_LEN;
                if body > self.client_frame_limit as usize {
                    status_frame(
                        Kind::Response,
                        call_id,
                        &Status::resource_exhausted(format!(
                            "the response is {body} bytes, over the client's limit of {} bytes; ask \
                         for less per call or raise the client's ChannelBuilder::max_frame",
                            self.client_frame_limit
                        )),
                    )
                } else {
                    let mut header = Header::new(Kind::Response, call_id);
                    header.payload_len = crate::protocol::frame::len_u32(body);
                    header.write_to(&mut buf);
                    buf
                }
            }
            Err(status) => status_frame(Kind::Response, call_id, &status),
        };
        self.send(frame).await;
    }
}
