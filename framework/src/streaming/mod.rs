//! Streams of messages in a call: [`Streaming<T>`], what a handler gets for
//! a stream argument and returns for a stream result, and what a client
//! gets back from a call whose result is a stream.
//!
//! ```no_run
//! use switchyard::{Status, Streaming};
//!
//! #[switchyard::service]
//! pub trait Logs {
//!     /// Server streaming: the lines of `path` from `from` on.
//!     async fn tail(&self, path: String, from: u64) -> Streaming<String>;
//!     /// Client streaming: counts the bytes sent.
//!     async fn upload(&self, chunks: Streaming<switchyard::Bytes>) -> Result<u64, Status>;
//!     /// Bidirectional: echoes each line back.
//!     async fn echo(&self, lines: Streaming<String>) -> Streaming<String>;
//! }
//! ```
//!
//! Every stream is flow controlled: a receiver grants its peer a window of
//! frames ([`ChannelBuilder::stream_window`](crate::ChannelBuilder::stream_window),
//! [`ServerBuilder::stream_window`](crate::ServerBuilder::stream_window))
//! and more as it reads, so a reader that stops holds at most the window
//! in memory, and its sender waits. A frame is one message, or a batch of
//! small ones of at most 16 KiB, so small messages move many per credit.

mod gate;
mod grants;
mod inbox;
pub(crate) mod pump;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

pub(crate) use self::gate::SendGate;
pub(crate) use self::grants::Grants;
pub(crate) use self::inbox::{Ending, GrantBatch, Granter, Inbox};
use crate::protocol::frame::BatchMessages;
use crate::protocol::metadata::Metadata;
use crate::protocol::session::StreamChunk;
use crate::protocol::status::{Code, Status};

/// Frames a receiver lets its peer send before granting more, unless
/// configured: 64 (a frame is a message, or a batch of small messages of
/// at most 16 KiB).
pub const DEFAULT_STREAM_WINDOW: u32 = 64;

/// What a stream may yield where a [`Streaming<T>`] is built from it: a
/// message, or a `Result` whose `Err` ends the stream with that status.
pub trait IntoStreamItem<T> {
    /// The message, or the status that ends the stream.
    fn into_item(self) -> Result<T, Status>;
}

impl<T> IntoStreamItem<T> for T {
    fn into_item(self) -> Result<T, Status> {
        Ok(self)
    }
}

impl<T> IntoStreamItem<T> for Result<T, Status> {
    fn into_item(self) -> Self {
        self
    }
}

/// A stream of `T` in a call: each item a message, or an `Err` with the
/// status that ended the stream (the last item then).
///
/// - A handler receives one for a stream argument and returns one for a
///   stream result, built from any stream ([`Streaming::new`]), an iterator
///   ([`Streaming::from_iter`]) or a channel ([`Streaming::channel`]).
/// - A client gets one from a call with a stream result. Dropping it before
///   its end cancels the call (the handler is stopped); the call's deadline
///   covers the whole stream. Once it ended, [`trailers`](Self::trailers)
///   has the metadata the handler set.
pub struct Streaming<T> {
    inner: Inner<T>,
}

enum Inner<T> {
    /// Built by a handler or a caller from a stream of its own.
    Local(Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>),
    /// Read off a connection.
    Received(Box<Received<T>>),
    /// Ended.
    Done,
}

/// Ends the bookkeeping of a client's call when its stream ends, or
/// cancels the call when the stream is dropped before that.
pub(crate) trait CallEnd: Send {
    /// The stream ended with `code` (the call is over on both sides).
    fn ended(&mut self, code: Code, received: usize);
}

/// The reading end of a stream that comes over a connection.
pub(crate) struct Received<T> {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) granter: Arc<dyn Granter>,
    /// Decodes the message at a range of a buffer.
    pub(crate) decode: fn(&Bytes, std::ops::Range<usize>) -> Result<T, String>,
    /// The method, for messages.
    pub(crate) what: &'static str,
    /// When the call's deadline passes, and its length.
    pub(crate) deadline: Option<(Pin<Box<tokio::time::Sleep>>, std::time::Duration)>,
    pub(crate) call: Option<Box<dyn CallEnd>>,
    /// Bytes of messages read.
    pub(crate) received: usize,
    /// The metadata that came with the end, once it came.
    pub(crate) trailers: Option<Metadata>,
    /// Messages read since the deadline was last looked at.
    pub(crate) unchecked: u32,
    /// Messages taken from the inbox and not read yet.
    pub(crate) local: std::collections::VecDeque<StreamChunk>,
    /// The batch being read, and where its next message is.
    pub(crate) batch: Option<(Bytes, usize)>,
    /// When to grant back what was read.
    pub(crate) grants: GrantBatch,
}

impl<T> Streaming<T> {
    /// A stream of the items of `stream`: messages, or `Result`s whose
    /// `Err` ends the stream with that status.
    pub fn new<S, I>(stream: S) -> Self
    where
        S: Stream<Item = I> + Send + 'static,
        I: IntoStreamItem<T> + 'static,
        T: 'static,
    {
        Self {
            inner: Inner::Local(Box::pin(stream.map(IntoStreamItem::into_item))),
        }
    }

    /// A stream of the items of `iter`.
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter<I>(iter: I) -> Self
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: IntoStreamItem<T> + 'static,
        T: 'static,
    {
        Self::new(futures_util::stream::iter(iter))
    }

    /// A stream with no messages.
    pub fn empty() -> Self
    where
        T: Send + 'static,
    {
        Self::new(futures_util::stream::empty::<T>())
    }

    /// A stream that ends at once with `status`.
    pub fn failed(status: Status) -> Self
    where
        T: Send + 'static,
    {
        Self::new(futures_util::stream::once(async move {
            Err::<T, Status>(status)
        }))
    }

    /// A stream fed through the returned [`StreamSender`], which holds at
    /// most `capacity` messages the stream has not yielded yet: its
    /// [`send`](StreamSender::send) then waits, and
    /// [`try_send`](StreamSender::try_send) says RESOURCE_EXHAUSTED. The
    /// stream ends when every sender is dropped.
    pub fn channel(capacity: usize) -> (StreamSender<T>, Self)
    where
        T: Send + 'static,
    {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        (StreamSender { tx }, Self::new(stream))
    }

    /// A stream read off a connection.
    pub(crate) fn received(received: Received<T>) -> Self {
        Self {
            inner: Inner::Received(Box::new(received)),
        }
    }

    /// The next message: `Ok(None)` at the end, `Err` when the stream
    /// failed (its status).
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        self.next().await.transpose()
    }

    /// The metadata the handler set, once a stream received from a
    /// connection has ended; `None` before, and for local streams.
    pub fn trailers(&self) -> Option<&Metadata> {
        match &self.inner {
            Inner::Received(received) => received.trailers(),
            _ => None,
        }
    }

    /// Takes the stream apart for sending (what a local stream yields).
    pub(crate) fn into_local(self) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>
    where
        T: Send + 'static,
    {
        match self.inner {
            Inner::Local(stream) => stream,
            Inner::Received(_) => Box::pin(self),
            Inner::Done => Box::pin(futures_util::stream::empty()),
        }
    }
}

impl<T> Received<T> {
    fn trailers(&self) -> Option<&Metadata> {
        self.trailers.as_ref()
    }

    /// The next message taken from the inbox, decoded, if one is at hand:
    /// from the batch being read, else the next chunk; and whether it was
    /// its frame's last (the frame's credit may go back).
    fn next_message(&mut self) -> Option<(Result<T, String>, bool)> {
        let decode = self.decode;
        loop {
            if let Some((bytes, at)) = &mut self.batch {
                let mut messages = BatchMessages::new(bytes, *at);
                if let Some(range) = messages.next() {
                    *at = messages.position();
                    let last = *at >= bytes.len();
                    self.received += range.len();
                    let item = decode(bytes, range);
                    if last {
                        self.batch = None;
                    }
                    return Some((item, last));
                }
                // A checked batch holds at least one message, and the
                // last one clears it: not reached.
                self.batch = None;
            }
            match self.local.pop_front()? {
                StreamChunk::One(bytes) => {
                    self.received += bytes.len();
                    return Some((decode(&bytes, 0..bytes.len()), true));
                }
                StreamChunk::Batch(bytes) => self.batch = Some((bytes, 0)),
            }
        }
    }

    /// The status that ends the stream when its call's deadline passed.
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> Option<Status> {
        let (sleep, length) = self.deadline.as_mut()?;
        if sleep.as_mut().poll(cx).is_pending() {
            return None;
        }
        let length = *length;
        self.deadline = None;
        self.trailers = Some(Metadata::new());
        if let Some(mut call) = self.call.take() {
            call.ended(Code::DeadlineExceeded, self.received);
        }
        Some(Status::deadline_exceeded(format!(
            "{} did not end its stream within the call's deadline of {length:?}; the call was \
             cancelled — raise the timeout if the stream needs longer",
            self.what
        )))
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, Status>>> {
        if self.trailers.is_some() {
            return Poll::Ready(None);
        }
        // The deadline covers the whole stream, a reader that keeps up
        // included: looked at when nothing is there to read, and every
        // so many messages (a timer read per message would cost more than
        // a small message does).
        self.unchecked += 1;
        if self.unchecked >= DEADLINE_CHECK_EVERY {
            self.unchecked = 0;
            if let Some(status) = self.deadline_passed(cx) {
                return Poll::Ready(Some(Err(status)));
            }
        }
        loop {
            if let Some((item, frame_done)) = self.next_message() {
                if frame_done {
                    let grant = self.grants.frame_read();
                    if grant > 0 {
                        self.granter.grant(grant);
                    }
                }
                let item = item.map_err(|err| {
                    Status::internal(format!(
                        "a message of {} could not be decoded ({err}); do both sides use the \
                         same version of the trait?",
                        self.what
                    ))
                });
                return Poll::Ready(Some(item));
            }
            match self.inbox.poll_drain(cx, &mut self.local) {
                Poll::Ready(None) => {}
                Poll::Ready(Some(Ending::Done { trailers })) => {
                    self.trailers = Some(trailers);
                    if let Some(mut call) = self.call.take() {
                        call.ended(Code::Ok, self.received);
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ending::Failed { status, trailers })) => {
                    self.trailers = Some(trailers);
                    if let Some(mut call) = self.call.take() {
                        call.ended(status.code(), self.received);
                    }
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Pending => {
                    return match self.deadline_passed(cx) {
                        Some(status) => Poll::Ready(Some(Err(status))),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }
}

/// A stream read off a connection looks at its deadline at least once per
/// this many messages.
const DEADLINE_CHECK_EVERY: u32 = 64;

impl<T> Stream for Streaming<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = match &mut self.inner {
            Inner::Local(stream) => stream.as_mut().poll_next(cx),
            // It keeps its trailers after the end.
            Inner::Received(received) => return received.poll(cx),
            Inner::Done => return Poll::Ready(None),
        };
        // An error ends the stream; so does its end.
        if let Poll::Ready(None | Some(Err(_))) = &polled {
            self.inner = Inner::Done;
        }
        polled
    }
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.inner {
            Inner::Local(_) => "local",
            Inner::Received(_) => "received",
            Inner::Done => "ended",
        };
        f.debug_struct("Streaming").field("state", &what).finish()
    }
}

/// Feeds a [`Streaming`] made by [`Streaming::channel`]. Cheap to clone.
#[derive(Debug)]
pub struct StreamSender<T> {
    tx: mpsc::Sender<Result<T, Status>>,
}

impl<T> Clone for StreamSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T> StreamSender<T> {
    /// Sends a message, waiting while the stream holds `capacity` unsent
    /// ones (its peer reads slower than this side sends). CANCELLED when
    /// the stream is gone (its call ended).
    pub async fn send(&self, message: T) -> Result<(), Status> {
        self.tx.send(Ok(message)).await.map_err(|_| gone())
    }

    /// Sends a message if there is room now: RESOURCE_EXHAUSTED (nothing
    /// sent) while the stream holds `capacity` unsent ones.
    pub fn try_send(&self, message: T) -> Result<(), Status> {
        self.tx.try_send(Ok(message)).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => Status::resource_exhausted(
                "the stream's buffer is full: its peer has not granted credit for more (it \
                 reads slower than this side sends); nothing was sent — wait with send(), or \
                 retry later",
            ),
            mpsc::error::TrySendError::Closed(_) => gone(),
        })
    }

    /// Ends the stream with `status` once the messages before it are sent.
    pub async fn fail(self, status: Status) {
        let _ = self.tx.send(Err(status)).await;
    }

    /// Whether the stream is gone (its call ended).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

fn gone() -> Status {
    Status::cancelled("the stream is gone: its call ended; nothing was sent")
}

/// The deadline of a stream read off a connection: a timer, and how long
/// the call was given.
pub(crate) fn deadline_timer(
    started: Instant,
    deadline: Option<Instant>,
) -> Option<(Pin<Box<tokio::time::Sleep>>, std::time::Duration)> {
    deadline.map(|at| {
        (
            Box::pin(tokio::time::sleep_until(at.into())),
            at.saturating_duration_since(started),
        )
    })
}
