//! The receiving half of a QUIC link: accepts the peer's streams and reads
//! every stream of the connection, each through its own frame decoder, into
//! one sequence of frames. No task of its own: whoever waits in `recv`
//! drives the reading.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, SelectAll};
use quinn::{Connection, ConnectionError, Endpoint, ReadError, RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;

use super::calls::Calls;
use super::tx::Opened;
use super::{clean_close, connection_error};
use crate::protocol::frame::{Decoded, FrameDecoder, Header, Kind};
use crate::transport::intake::{Due, FREE_PER_STREAM, Intake, IntakeLimits};
use crate::transport::stream::{decode_available, end_of_stream};
use crate::transport::{LinkError, LinkRx};

/// The most a stream hands over per read.
const READ_CHUNK: usize = 256 * 1024;
/// Frames delivered by one `recv` before it returns what it has; the next
/// `recv` then lets the runtime's other tasks run first (see
/// `recv` on [`QuicRx`]). 16 measured best with 32 calls in flight on the
/// bench machine (`switchyard-bench --only quic`): 8 sends more, smaller
/// packets, and 32 or more lets a whole window of calls move as one
/// batch.
const BATCH: usize = 16;

type AcceptBi = BoxFuture<'static, Result<(SendStream, RecvStream), ConnectionError>>;
type AcceptUni = BoxFuture<'static, Result<RecvStream, ConnectionError>>;

/// The receiving half of a [`QuicLink`](super::QuicLink).
pub struct QuicRx {
    conn: Connection,
    calls: Arc<Calls>,
    frame_limit: u32,
    /// Streams the sending half opened.
    opened: mpsc::UnboundedReceiver<Opened>,
    /// Waits for the peer's next call stream; `None` once none can come.
    accept_bi: Option<AcceptBi>,
    /// Waits for the peer's control stream; `None` once it came.
    accept_uni: Option<AcceptUni>,
    readers: SelectAll<BoxStream<'static, Event>>,
    /// The peer will send nothing more: its control stream ended, or the
    /// connection did.
    peer_done: bool,
    /// The peer sent bytes that are not frames: reported once the frames
    /// that arrived are delivered.
    fatal: Option<LinkError>,
    /// How the link ended, if not cleanly: reported once every stream has.
    ended_badly: Option<LinkError>,
    /// The last `recv` stopped at [`BATCH`] frames: more may be there.
    more: bool,
    /// The limits each stream's receiver holds partial frames under.
    intake: IntakeLimits,
    /// A client's endpoint, kept while the connection is used.
    _endpoint: Option<Endpoint>,
}

impl std::fmt::Debug for QuicRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicRx")
            .field("remote", &self.conn.remote_address())
            .field("streams", &self.readers.len())
            .field("peer_done", &self.peer_done)
            .finish_non_exhaustive()
    }
}

/// What a stream's reader reports.
enum Event {
    Frames(Vec<Decoded>),
    /// The stream ended (the reader is done).
    End {
        control: bool,
        result: Result<(), LinkError>,
    },
}

impl QuicRx {
    pub(super) fn new(
        conn: Connection,
        calls: Arc<Calls>,
        opened: mpsc::UnboundedReceiver<Opened>,
        frame_limit: u32,
        endpoint: Option<Endpoint>,
    ) -> Self {
        let bi = conn.clone();
        let uni = conn.clone();
        Self {
            accept_bi: Some(accept_bi(bi)),
            accept_uni: Some(Box::pin(async move { uni.accept_uni().await })),
            conn,
            calls,
            frame_limit,
            opened,
            readers: SelectAll::new(),
            peer_done: false,
            fatal: None,
            ended_badly: None,
            more: false,
            intake: IntakeLimits::default(),
            _endpoint: endpoint,
        }
    }

    /// Holds each stream's partial frames under `limits`.
    pub(super) fn with_limits(mut self, limits: IntakeLimits) -> Self {
        self.intake = limits;
        self
    }

    fn read(&mut self, recv: RecvStream, role: Role) {
        let reader = Reader {
            recv,
            role,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(self.frame_limit),
            intake: Intake::new(self.intake.clone(), FREE_PER_STREAM),
            calls: Arc::clone(&self.calls),
            error: None,
        };
        self.readers.push(reader.into_stream());
    }

    /// The connection is gone: no more streams; those open still give up
    /// what arrived.
    fn connection_ended(&mut self, err: &ConnectionError) {
        self.peer_done = true;
        self.accept_bi = None;
        self.accept_uni = None;
        if !clean_close(err) && self.ended_badly.is_none() {
            self.ended_badly = Some(LinkError::Io(connection_error(err)));
        }
    }

    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Decoded>,
    ) -> Poll<Result<bool, LinkError>> {
        let before = out.len();
        loop {
            let mut progress = false;
            while let Poll::Ready(Some(opened)) = self.opened.poll_recv(cx) {
                self.read(opened.recv, Role::Ours(opened.call_id));
            }
            if let Some(accept) = &mut self.accept_uni
                && let Poll::Ready(accepted) = accept.as_mut().poll(cx)
            {
                self.accept_uni = None;
                progress = true;
                match accepted {
                    Ok(recv) => self.read(recv, Role::Control),
                    Err(err) => self.connection_ended(&err),
                }
            }
            if let Some(accept) = &mut self.accept_bi {
                match accept.as_mut().poll(cx) {
                    Poll::Ready(Ok((send, recv))) => {
                        self.accept_bi = Some(accept_bi(self.conn.clone()));
                        self.read(recv, Role::Theirs(Some(send)));
                        progress = true;
                    }
                    Poll::Ready(Err(err)) => {
                        self.connection_ended(&err);
                        progress = true;
                    }
                    // The peer acknowledged-waits for every stream it opened
                    // before ending its control stream: once that ended,
                    // whatever stream is not here now never will be.
                    Poll::Pending if self.peer_done => self.accept_bi = None,
                    Poll::Pending => {}
                }
            }
            match self.readers.poll_next_unpin(cx) {
                Poll::Ready(Some(Event::Frames(frames))) => {
                    out.extend(frames);
                    progress = true;
                }
                Poll::Ready(Some(Event::End { control, result })) => {
                    progress = true;
                    if control {
                        self.peer_done = true;
                    }
                    match result {
                        Ok(()) => {}
                        Err(err @ (LinkError::Frame(_) | LinkError::FrameTimeout { .. })) => {
                            self.fatal.get_or_insert(err);
                        }
                        Err(err) => {
                            self.ended_badly.get_or_insert(err);
                        }
                    }
                }
                Poll::Ready(None) | Poll::Pending => {}
            }
            if !progress {
                break;
            }
            if out.len() - before >= BATCH {
                self.more = true;
                break;
            }
        }
        if out.len() > before {
            return Poll::Ready(Ok(true));
        }
        if let Some(err) = self.fatal.take() {
            return Poll::Ready(Err(err));
        }
        if self.peer_done && self.accept_bi.is_none() && self.readers.is_empty() {
            return Poll::Ready(self.ended_badly.take().map_or(Ok(false), Err));
        }
        Poll::Pending
    }
}

fn accept_bi(conn: Connection) -> AcceptBi {
    Box::pin(async move { conn.accept_bi().await })
}

impl LinkRx for QuicRx {
    async fn recv(&mut self, out: &mut Vec<Decoded>) -> Result<bool, LinkError> {
        if std::mem::take(&mut self.more) {
            // Many calls arrived at once. Before taking the next ones, let
            // the tasks that answer the ones handed over (the handlers, the
            // writer, quinn's connection driver) put their frames on the
            // wire: the peer then works on those while this side reads the
            // rest, instead of the whole window travelling as one batch
            // that each side handles while the other waits. Measured with
            // 32 calls in flight: 0.55x of raw quinn's calls/s without this,
            // at or above 1x with it.
            tokio::task::yield_now().await;
        }
        poll_fn(|cx| self.poll_recv(cx, out)).await
    }
}

/// Which stream a reader reads.
enum Role {
    /// The peer's control stream.
    Control,
    /// A stream this side opened for its call.
    Ours(u64),
    /// A stream the peer opened, with its sending side until the first
    /// frame shows whether a Response will go back on it.
    Theirs(Option<SendStream>),
}

/// Reads one stream and decodes its frames.
struct Reader {
    recv: RecvStream,
    role: Role,
    buf: BytesMut,
    decoder: FrameDecoder,
    intake: Intake,
    calls: Arc<Calls>,
    /// A decode error met behind frames that were handed over first.
    error: Option<LinkError>,
}

impl Reader {
    fn into_stream(self) -> BoxStream<'static, Event> {
        futures_util::stream::unfold(Some(self), |reader| async move {
            let mut reader = reader?;
            let event = reader.next().await;
            let reader = matches!(event, Event::Frames(_)).then_some(reader);
            Some((event, reader))
        })
        .boxed()
    }

    async fn next(&mut self) -> Event {
        if let Some(err) = self.error.take() {
            return self.end(Err(err));
        }
        loop {
            let mut frames = Vec::new();
            match decode_available(&mut self.decoder, &mut self.buf, &mut frames) {
                Ok(true) => {
                    self.intake.settle(true, &self.decoder, &self.buf);
                    self.observe(&frames);
                    return Event::Frames(frames);
                }
                Ok(false) => self.intake.settle(false, &self.decoder, &self.buf),
                Err(err) if !frames.is_empty() => {
                    self.observe(&frames);
                    self.error = Some(err);
                    return Event::Frames(frames);
                }
                Err(err) => return self.end(Err(err)),
            }
            let due = self.intake.due();
            let read = Due::run(due, async {
                self.intake.room(&self.buf, READ_CHUNK).await?;
                Ok(self.recv.read_chunk(READ_CHUNK, true).await)
            })
            .await;
            let read = match read {
                Ok(read) => read,
                Err(err) => {
                    // What arrived of the frame is of no use: free it now,
                    // and stop the peer sending the rest.
                    self.buf = BytesMut::new();
                    self.intake.abandon();
                    let _ = self.recv.stop(VarInt::from_u32(0));
                    return self.end(Err(err));
                }
            };
            match read {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    let result = end_of_stream(&self.decoder, &self.buf).map(|_| ());
                    return self.end(result);
                }
                Err(ReadError::ConnectionLost(err)) => {
                    // Cut off: what arrived counts as on any byte stream
                    // whose peer vanished, unless the connection died.
                    let result = match end_of_stream(&self.decoder, &self.buf) {
                        Ok(_) if !clean_close(&err) => Err(LinkError::Io(connection_error(&err))),
                        other => other.map(|_| ()),
                    };
                    return self.end(result);
                }
                Err(ReadError::Reset(code)) => {
                    tracing::debug!(stream = %self.recv.id(), %code, "the peer reset a stream");
                    let result = end_of_stream(&self.decoder, &self.buf).map(|_| ());
                    return self.end(result);
                }
                Err(err) => return self.end(Err(LinkError::Io(std::io::Error::other(err)))),
            }
        }
    }

    /// What frames tell the call table.
    fn observe(&mut self, frames: &[Decoded]) {
        for decoded in frames {
            let header: &Header = match decoded {
                Decoded::Frame(frame) => &frame.header,
                Decoded::Oversized(header) => header,
            };
            match &mut self.role {
                Role::Theirs(send) => {
                    // The first frame decides; unless it is a Request,
                    // the sending side is dropped, which finishes it:
                    // nothing goes back on this stream.
                    if let Some(send) = send.take()
                        && header.kind == Kind::Request
                    {
                        self.calls.expect_response(header.call_id, send);
                    }
                    if header.kind == Kind::Cancel {
                        self.calls.cancelled(header.call_id);
                    }
                }
                Role::Ours(call_id) => {
                    if header.kind == Kind::Response {
                        self.calls.settle(*call_id);
                    }
                }
                Role::Control => {}
            }
        }
    }

    fn end(&mut self, result: Result<(), LinkError>) -> Event {
        match &mut self.role {
            Role::Ours(call_id) => self.calls.settle(*call_id),
            Role::Theirs(send) => drop(send.take()),
            Role::Control => {}
        }
        Event::End {
            control: matches!(self.role, Role::Control),
            result,
        }
    }
}
