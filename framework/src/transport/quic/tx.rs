//! The sending half of a QUIC link: splits the byte stream of frames it is
//! given at the frame boundaries and writes each frame on its call's
//! stream (see the [module docs](super) for which frame goes where).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use quinn::{Connection, Endpoint, RecvStream, SendStream, WriteError};
use tokio::sync::mpsc;

use super::calls::Calls;
use super::connection_error;
use crate::protocol::frame::{HEADER_LEN, Header, Kind, MAGIC};
use crate::transport::LinkTx;

/// Finished streams are checked for acknowledgement once this many wait.
const PRUNE_MIN: usize = 64;

/// A stream this half opened, handed to the receiving half, which reads
/// what the peer sends back on it.
#[derive(Debug)]
pub(super) struct Opened {
    /// The call the stream carries.
    pub(super) call_id: u64,
    /// Its receiving side.
    pub(super) recv: RecvStream,
}

/// The sending half of a [`QuicLink`](super::QuicLink).
#[derive(Debug)]
pub struct QuicTx {
    conn: Connection,
    calls: Arc<Calls>,
    opened: mpsc::UnboundedSender<Opened>,
    /// This side's control stream, opened with the first frame it carries.
    control: Option<SendStream>,
    /// The start of a header that has not all arrived.
    head: Vec<u8>,
    /// The frame being written.
    writing: Option<Writing>,
    /// Set once the bytes stopped being frames: all further bytes go here.
    raw: Option<Dest>,
    /// The call id of the previous frame, if it was a Request.
    last_request: Option<u64>,
    /// Streams this side opened and finished whose data the peer may not
    /// have acknowledged yet.
    draining: Vec<SendStream>,
    prune_at: usize,
    /// How long the streams may take to drain once the half is closed.
    linger: Duration,
    shut: bool,
    /// A client's endpoint, kept while the connection is used.
    endpoint: Option<Endpoint>,
}

/// Where the bytes of a frame go.
#[derive(Debug)]
enum Dest {
    Control,
    Stream(SendStream),
    /// The peer stopped reading the stream: the rest of the frame is dropped.
    Discard,
}

/// What happens once a frame is written.
#[derive(Debug)]
enum Then {
    Nothing,
    /// The stream stays open for the call's Cancel.
    Request(u64),
    /// The stream is finished; `drain`: the peer may not know it yet.
    Finish {
        drain: bool,
    },
    /// The stream of the peer's call stays open for the rest of its
    /// stream and its Response.
    Refile(u64),
}

#[derive(Debug)]
struct Writing {
    dest: Dest,
    /// Body bytes still to come.
    remaining: u64,
    then: Then,
}

impl QuicTx {
    pub(super) fn new(
        conn: Connection,
        calls: Arc<Calls>,
        opened: mpsc::UnboundedSender<Opened>,
        linger: Duration,
        endpoint: Option<Endpoint>,
    ) -> Self {
        Self {
            endpoint,
            conn,
            calls,
            opened,
            control: None,
            head: Vec::with_capacity(HEADER_LEN),
            writing: None,
            raw: None,
            last_request: None,
            draining: Vec::new(),
            prune_at: PRUNE_MIN,
            linger,
            shut: false,
        }
    }

    /// Routes the frame whose header is `header`; its bytes follow.
    async fn begin(&mut self, header: Header) -> io::Result<()> {
        let id = header.call_id;
        let (dest, then) = match header.kind {
            Kind::Request => {
                let stream = match self.calls.take_open(id) {
                    Some(stream) => stream,
                    None => self.open(id).await?,
                };
                self.calls.begin_request(id);
                (Dest::Stream(stream), Then::Request(id))
            }
            Kind::OneWay => (
                Dest::Stream(self.open(id).await?),
                Then::Finish { drain: true },
            ),
            Kind::Cancel => match self.calls.take_open(id) {
                Some(stream) => (Dest::Stream(stream), Then::Finish { drain: true }),
                None => (Dest::Control, Then::Nothing),
            },
            Kind::Response => match self.calls.take_response_stream(id) {
                Some(stream) => (Dest::Stream(stream), Then::Finish { drain: false }),
                None => (Dest::Control, Then::Nothing),
            },
            // A stream frame goes on its call's stream, behind the frames
            // before it; once the call is over, on the control stream
            // (the peer drops it as stray).
            Kind::Data | Kind::Credit if header.from_callee() => {
                match self.calls.take_response_stream(id) {
                    Some(stream) => (Dest::Stream(stream), Then::Refile(id)),
                    None => (Dest::Control, Then::Nothing),
                }
            }
            Kind::Data | Kind::Credit | Kind::End => match self.calls.take_open(id) {
                Some(stream) => {
                    self.calls.begin_request(id);
                    (Dest::Stream(stream), Then::Request(id))
                }
                None => (Dest::Control, Then::Nothing),
            },
            Kind::Hello | Kind::Ping | Kind::Pong | Kind::GoAway => (Dest::Control, Then::Nothing),
        };
        self.last_request = (header.kind == Kind::Request).then_some(id);
        self.writing = Some(Writing {
            dest,
            remaining: header.body_len(),
            then,
        });
        Ok(())
    }

    /// Opens a stream for call `call_id` and hands its receiving side to
    /// the receiving half.
    async fn open(&mut self, call_id: u64) -> io::Result<SendStream> {
        // Waits while the peer's limit of concurrent streams is reached.
        let (send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|err| connection_error(&err))?;
        // Without a receiving half, dropping `recv` asks the peer to stop
        // sending on it.
        let _ = self.opened.send(Opened { call_id, recv });
        Ok(send)
    }

    /// The frame being written is complete.
    fn end_frame(&mut self) {
        let Some(Writing { dest, then, .. }) = self.writing.take() else {
            return;
        };
        match (dest, then) {
            (Dest::Stream(stream), Then::Request(id)) => {
                if let Some(mut answered) = self.calls.end_request(id, stream) {
                    // The peer answered while the Request was being written
                    // (say, refusing it for its size): the call is over.
                    let _ = answered.finish();
                }
            }
            (Dest::Stream(stream), Then::Refile(id)) => {
                self.calls.expect_response(id, stream);
            }
            (Dest::Stream(mut stream), Then::Finish { drain }) => {
                let _ = stream.finish();
                if drain {
                    self.drain(stream);
                }
            }
            (_, Then::Request(id)) => self.calls.forget(id),
            _ => {}
        }
    }

    /// Keeps a finished stream until the peer has acknowledged it.
    fn drain(&mut self, stream: SendStream) {
        self.draining.push(stream);
        if self.draining.len() >= self.prune_at {
            self.draining
                .retain(|stream| stream.stopped().now_or_never().is_none());
            self.prune_at = (2 * self.draining.len()).max(PRUNE_MIN);
        }
    }

    /// Where bytes that are not frames go: after the previous frame if its
    /// stream is still open (so that the peer's decoder meets them right
    /// behind it, as on a byte stream), else on the control stream.
    fn loose_dest(&mut self) -> Dest {
        match self
            .last_request
            .take()
            .and_then(|id| self.calls.take_open(id))
        {
            Some(stream) => Dest::Stream(stream),
            None => Dest::Control,
        }
    }

    /// The bytes stopped being frames: they all go to one place from now
    /// on, where the peer's decoder reports them.
    async fn go_raw(&mut self) -> io::Result<()> {
        let mut dest = self.loose_dest();
        let head = std::mem::take(&mut self.head);
        let written = write(&self.conn, &mut self.control, &mut dest, &head).await;
        self.raw = Some(dest);
        written
    }

    /// Ends this half: finishes every stream it writes. Returns the work
    /// that still has to wait for the peer, once.
    fn shut(&mut self) -> Option<Linger> {
        if std::mem::replace(&mut self.shut, true) {
            return None;
        }
        let mut finish = std::mem::take(&mut self.draining);
        // A header cut short goes where bytes that are not frames go.
        let tail = (!self.head.is_empty()).then(|| {
            let dest = self.raw.take().unwrap_or_else(|| self.loose_dest());
            (dest, std::mem::take(&mut self.head))
        });
        // A frame cut short: its stream ends here, and the peer reports it.
        if let Some(writing) = self.writing.take() {
            if let Dest::Stream(stream) = writing.dest {
                finish.push(stream);
            }
            if let Then::Request(id) = writing.then {
                self.calls.forget(id);
            }
        }
        if let Some(Dest::Stream(stream)) = self.raw.take() {
            finish.push(stream);
        }
        let (ours, theirs) = self.calls.close();
        finish.extend(ours);
        // The peer opened these, so it knows them; but they carry the last
        // responses, which must be acknowledged before the connection may
        // go (a server that exits right after its graceful shutdown would
        // otherwise lose them, and its client would wait out the idle
        // timeout).
        finish.extend(theirs);
        Some(Linger {
            conn: self.conn.clone(),
            control: self.control.take(),
            tail,
            finish,
            limit: self.linger,
            _endpoint: self.endpoint.clone(),
        })
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "this side closed the link")
}

/// Writes `bytes` to `dest`, opening the control stream if it is that.
async fn write(
    conn: &Connection,
    control: &mut Option<SendStream>,
    dest: &mut Dest,
    bytes: &[u8],
) -> io::Result<()> {
    match dest {
        Dest::Control => {
            let stream = match control {
                Some(stream) => stream,
                None => control.insert(
                    conn.open_uni()
                        .await
                        .map_err(|err| connection_error(&err))?,
                ),
            };
            stream.write_all(bytes).await.map_err(write_error)
        }
        Dest::Stream(stream) => match stream.write_all(bytes).await {
            Ok(()) => Ok(()),
            Err(WriteError::Stopped(code)) => {
                // The peer wants nothing more of this call (it dropped its
                // receiving half): like a response nobody waits for.
                tracing::debug!(stream = %stream.id(), %code, "the peer stopped a call's stream; dropping the rest of its frame");
                *dest = Dest::Discard;
                Ok(())
            }
            Err(err) => Err(write_error(err)),
        },
        Dest::Discard => Ok(()),
    }
}

fn write_error(err: WriteError) -> io::Error {
    match err {
        WriteError::ConnectionLost(err) => connection_error(&err),
        WriteError::Stopped(code) => io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("the peer stopped reading this link (code {code})"),
        ),
        WriteError::ClosedStream => closed(),
        other => io::Error::other(other),
    }
}

impl LinkTx for QuicTx {
    async fn send(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if self.shut {
            return Err(closed());
        }
        while !bytes.is_empty() {
            if let Some(dest) = &mut self.raw {
                return write(&self.conn, &mut self.control, dest, bytes).await;
            }
            if let Some(writing) = &mut self.writing {
                let n = usize::try_from(writing.remaining)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                write(
                    &self.conn,
                    &mut self.control,
                    &mut writing.dest,
                    &bytes[..n],
                )
                .await?;
                writing.remaining -= n as u64;
                bytes = &bytes[n..];
                if writing.remaining == 0 {
                    self.end_frame();
                }
                continue;
            }
            if self.head.is_empty() && bytes.len() >= HEADER_LEN {
                // A whole header here: write it with as much of the body as
                // follows, in one go.
                let mut raw = [0u8; HEADER_LEN];
                raw.copy_from_slice(&bytes[..HEADER_LEN]);
                let Ok(header) = Header::parse(&raw) else {
                    self.go_raw().await?;
                    continue;
                };
                self.begin(header).await?;
                if let Some(writing) = &mut self.writing {
                    let body = usize::try_from(writing.remaining)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - HEADER_LEN);
                    let n = HEADER_LEN + body;
                    write(
                        &self.conn,
                        &mut self.control,
                        &mut writing.dest,
                        &bytes[..n],
                    )
                    .await?;
                    writing.remaining -= body as u64;
                    bytes = &bytes[n..];
                    if writing.remaining == 0 {
                        self.end_frame();
                    }
                }
                continue;
            }
            // A header arriving in pieces.
            let take = (HEADER_LEN - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if let [a, b, ..] = self.head[..]
                && u16::from_le_bytes([a, b]) != MAGIC
            {
                // As the decoder does: no need to wait for 40 bytes to know.
                self.go_raw().await?;
                continue;
            }
            let Ok(raw) = <[u8; HEADER_LEN]>::try_from(&self.head[..]) else {
                continue; // not all there yet
            };
            let Ok(header) = Header::parse(&raw) else {
                self.go_raw().await?;
                continue;
            };
            self.begin(header).await?;
            self.head.clear();
            if let Some(writing) = &mut self.writing {
                write(&self.conn, &mut self.control, &mut writing.dest, &raw).await?;
                if writing.remaining == 0 {
                    self.end_frame();
                }
            }
        }
        Ok(())
    }

    /// Finishes every stream and waits (at most the linger time, the idle
    /// timeout) until the peer has acknowledged them: what was sent has
    /// arrived when this returns, so a process may exit after it.
    async fn close(&mut self) -> io::Result<()> {
        if let Some(linger) = self.shut() {
            linger.run().await;
        }
        Ok(())
    }
}

impl Drop for QuicTx {
    fn drop(&mut self) {
        let Some(linger) = self.shut() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(linger.run());
            }
            Err(_) => tracing::debug!(
                "a QUIC link's sending half was dropped outside a runtime; frames the peer has \
                 not acknowledged may be lost"
            ),
        }
    }
}

/// What is left to do once the sending half has closed: finish its
/// streams, wait until the peer has acknowledged them, and only then end
/// the control stream. The peer takes the end of the control stream for
/// the end of everything this side sends, so it must know of every stream
/// by then. Holding the connection meanwhile keeps it open: it closes when
/// this and the receiving half are both gone.
#[derive(Debug)]
struct Linger {
    conn: Connection,
    control: Option<SendStream>,
    tail: Option<(Dest, Vec<u8>)>,
    finish: Vec<SendStream>,
    limit: Duration,
    _endpoint: Option<Endpoint>,
}

impl Linger {
    async fn run(self) {
        let limit = self.limit;
        match tokio::time::timeout(limit, self.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(%err, "could not end a QUIC link cleanly"),
            Err(_) => tracing::debug!(
                ?limit,
                "the peer did not acknowledge a closed QUIC link's streams in time"
            ),
        }
    }

    async fn drain(self) -> io::Result<()> {
        let Self {
            conn,
            mut control,
            tail,
            mut finish,
            ..
        } = self;
        if let Some((mut dest, bytes)) = tail {
            write(&conn, &mut control, &mut dest, &bytes).await?;
            if let Dest::Stream(stream) = dest {
                finish.push(stream);
            }
        }
        for stream in &mut finish {
            let _ = stream.finish();
        }
        futures_util::future::join_all(finish.iter().map(SendStream::stopped)).await;
        let mut control = match control {
            Some(control) => control,
            None => conn
                .open_uni()
                .await
                .map_err(|err| connection_error(&err))?,
        };
        let _ = control.finish();
        let _ = control.stopped().await;
        Ok(())
    }
}
