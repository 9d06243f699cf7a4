//! POSIX message queues for one-way calls between processes on one host
//! (Linux).
//!
//! Not a [`Link`](super::Link): a queue carries one-way calls from any
//! number of clients to one server and nothing back. A client sends through
//! an [`MqSender`]; the server drains its [`MqReceiver`]. One message is
//! one whole encoded frame of kind [`OneWay`](Kind::OneWay) (header,
//! metadata, payload, as [`start_frame`](crate::protocol::frame::start_frame)
//! and [`finish_frame`](crate::protocol::frame::finish_frame) make it);
//! [`decode_message`] checks that. The kernel hands messages out highest
//! priority first, oldest first within a priority.
//!
//! * **Readiness.** Queue descriptors are pollable on Linux, so both ends
//!   wait through tokio's [`AsyncFd`]: the sender for room, the receiver
//!   for a message. Nothing blocks a thread.
//! * **Limits** come from `/proc/sys/fs/mqueue` ([`limits`]). A frame longer
//!   than the queue's message size is refused with
//!   [`MqSendError::TooLarge`] before anything is sent; the caller sends it
//!   over the connection instead.
//! * **Backpressure.** A full queue is never a silent drop:
//!   [`MqSender::send`] waits for room until the call's deadline, then
//!   fails with [`MqSendError::DeadlineExceeded`]; [`MqSender::try_send`]
//!   fails with [`MqSendError::Full`] at once. Both map to a
//!   [`Status`] through [`MqSendError::code`].
//!
//! # Queue lifecycle
//!
//! Durability wins over tidiness:
//!
//! 1. A server creates its queue when it starts ([`MqReceiver::create`],
//!    exclusively, mode 0600). If the queue exists, is this user's and has
//!    mode 0600, it is the queue of a previous run of the same service: the
//!    server reopens it and drains what waited. Any other queue of that name
//!    is refused ([`MqError::Foreign`]).
//! 2. The queue outlives the server process. Clients that find the queue
//!    enqueue whether or not a server is running; their calls wait in the
//!    kernel until a server drains them.
//! 3. On graceful shutdown the server keeps its queue, empty or not, so
//!    one-way calls sent while it restarts wait for the next run. A server
//!    built with `ServerBuilder::remove_queues_on_shutdown` removes it
//!    ([`remove`]) instead.
//! 4. A queue whose owner is gone for good is removed only explicitly:
//!    [`remove`] (behind `switchyard services --remove-queue SERVICE`) or
//!    [`prune`] (behind `switchyard services --prune`), both reporting how
//!    many messages they discarded. Nothing removes queues implicitly.
//!
//! A client holding a descriptor of a queue that was removed since would
//! send into a queue nobody can open any more. [`MqSender`] checks that the
//! queue still has its name before every send and fails with
//! [`MqSendError::Removed`] otherwise, so the caller reopens by name (and
//! uses the connection if there is no queue).
//!
//! One-way frames carry their deadline as a budget relative to when they
//! were sent; a message may wait in the queue for longer than that (the
//! server may be down), so the server cannot tell how much budget remains.

use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::unix::AsyncFd;

use crate::protocol::frame::{FrameError, HEADER_LEN, Header, Kind};
use crate::protocol::status::{Code, Status};
use crate::sys::mqueue::{self as sys, OwnedQueue, SendQueue};

pub use crate::protocol::frame::Frame;
pub use crate::sys::mqueue::{
    MAX_PRIORITY, MqAttributes, MqError, MqLimits, limits, list_own_queues, queue_name,
};

/// The queue a server drains for `service`, among the servers that share
/// the runtime directory `root` (servers with other runtime directories,
/// such as parallel tests, get other queues): `/sy-<uid>-<scope>-<service>`
/// with `scope` the FNV-1a 32 hash of the directory.
pub fn service_queue_name(root: &std::path::Path, service: &str) -> String {
    let scope = crate::descriptor::method_id(&root.to_string_lossy());
    queue_name(
        &format!("{scope:08x}-{}", service.to_ascii_lowercase()),
        crate::sys::uid(),
    )
}

/// Why a one-way call could not be put in the queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqSendError {
    /// The queue is full and the caller asked not to wait.
    #[error(
        "message queue {name} is full ({max_messages} messages): the server is not keeping up or is not running"
    )]
    Full {
        /// The queue's name.
        name: String,
        /// Its capacity.
        max_messages: usize,
    },
    /// The queue stayed full until the deadline.
    #[error(
        "message queue {name} stayed full until the call's deadline; nothing was sent: the server \
         that drains it is not running or not keeping up: start it, give the call a later \
         deadline, or use the try_ form to fail at once"
    )]
    DeadlineExceeded {
        /// The queue's name.
        name: String,
    },
    /// The queue stayed full for as long as a call without a deadline waits
    /// (`ChannelBuilder::queue_full_wait`).
    #[error(
        "message queue {name} stayed full for {waited:?} (the call has no deadline; \
         ChannelBuilder::queue_full_wait bounds the wait); nothing was sent: the server that \
         drains it is not running or not keeping up: start it, or give the call a deadline \
         (with_timeout) to wait longer"
    )]
    StayedFull {
        /// The queue's name.
        name: String,
        /// How long the call waited.
        waited: std::time::Duration,
    },
    /// The frame is longer than the queue's message size; nothing was sent.
    #[error(
        "a frame of {len} bytes does not fit the message queue (at most {max} bytes); send it over the connection"
    )]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The queue's message size.
        max: usize,
    },
    /// The queue was removed since this sender opened it; nothing was sent.
    /// Open the queue again by name, or use the connection if it is gone.
    #[error("message queue {name} was removed since it was opened; reopen it by name")]
    Removed {
        /// The queue's name.
        name: String,
    },
    /// Another queue error.
    #[error(transparent)]
    Queue(#[from] MqError),
}

impl MqSendError {
    /// The status a caller sees: Full and StayedFull are ResourceExhausted,
    /// the deadline DeadlineExceeded, a bad priority InvalidArgument, anything else
    /// Unavailable.
    pub fn code(&self) -> Code {
        match self {
            Self::Full { .. } | Self::StayedFull { .. } => Code::ResourceExhausted,
            Self::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Self::TooLarge { .. } => Code::ResourceExhausted,
            Self::Queue(MqError::BadPriority { .. }) => Code::InvalidArgument,
            Self::Removed { .. } | Self::Queue(_) => Code::Unavailable,
        }
    }
}

impl From<MqSendError> for Status {
    fn from(err: MqSendError) -> Self {
        Self::new(err.code(), err.to_string())
    }
}

/// The client's end of a server's queue.
pub struct MqSender {
    fd: AsyncFd<SendQueue>,
}

impl fmt::Debug for MqSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqSender")
            .field("queue", self.fd.get_ref())
            .finish()
    }
}

impl MqSender {
    /// Opens queue `name` (see [`queue_name`]) for sending; it must be this
    /// user's with mode 0600. A missing queue is [`MqError::NotFound`]. A
    /// queue whose server is not running is fine: calls wait in it.
    ///
    /// Must be called within a tokio runtime.
    pub fn open(name: &str) -> Result<Self, MqError> {
        let queue = sys::open_send(name)?;
        Ok(Self {
            fd: queue.into_async()?,
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        self.fd.get_ref().name()
    }

    /// The longest frame the queue takes.
    pub fn max_message(&self) -> usize {
        self.fd.get_ref().message_size()
    }

    /// The queue's attributes now, including waiting messages.
    pub fn attributes(&self) -> Result<MqAttributes, MqError> {
        self.fd.get_ref().attributes()
    }

    fn check(&self, frame: &[u8]) -> Result<(), MqSendError> {
        let queue = self.fd.get_ref();
        if frame.len() > queue.message_size() {
            return Err(MqSendError::TooLarge {
                len: frame.len(),
                max: queue.message_size(),
            });
        }
        if !queue.is_linked()? {
            return Err(MqSendError::Removed {
                name: queue.name().to_owned(),
            });
        }
        Ok(())
    }

    fn send_now(&self, frame: &[u8], priority: u32) -> Result<(), MqSendError> {
        self.fd
            .get_ref()
            .send(frame, priority)
            .map_err(|err| match err {
                MqError::Full { name, max_messages } => MqSendError::Full { name, max_messages },
                MqError::TooLarge { len, max, .. } => MqSendError::TooLarge { len, max },
                other => MqSendError::Queue(other),
            })
    }

    /// Puts `frame` in the queue with `priority` (0 to [`MAX_PRIORITY`],
    /// higher first) without waiting. A full queue is
    /// [`MqSendError::Full`]; nothing is sent then.
    pub fn try_send(&self, frame: &[u8], priority: u32) -> Result<(), MqSendError> {
        self.check(frame)?;
        self.send_now(frame, priority)
    }

    /// Puts `frame` in the queue with `priority`, waiting for room while the
    /// queue is full, until `deadline` ([`MqSendError::DeadlineExceeded`]).
    /// Returns as soon as the kernel has the message. A deadline already
    /// past fails without sending. Cancel-safe: the frame is sent whole or
    /// not at all.
    pub async fn send(
        &self,
        frame: &[u8],
        priority: u32,
        deadline: Option<Instant>,
    ) -> Result<(), MqSendError> {
        let expired = || MqSendError::DeadlineExceeded {
            name: self.name().to_owned(),
        };
        if deadline.is_some_and(|deadline| deadline <= Instant::now()) {
            return Err(expired());
        }
        self.check(frame)?;
        match self.send_now(frame, priority) {
            Err(MqSendError::Full { .. }) => {}
            done => return done,
        }
        let wait = async {
            loop {
                let mut guard = self.fd.writable().await.map_err(|source| MqError::Io {
                    op: "waiting for room",
                    name: self.name().to_owned(),
                    source,
                })?;
                match self.send_now(frame, priority) {
                    Err(MqSendError::Full { .. }) => guard.clear_ready(),
                    done => return done,
                }
            }
        };
        match deadline {
            None => wait.await,
            Some(deadline) => tokio::time::timeout_at(deadline.into(), wait)
                .await
                .unwrap_or_else(|_| Err(expired())),
        }
    }
}

/// One message taken from a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The message: an encoded frame, if the sender is well-behaved (check
    /// with [`decode_message`]).
    pub bytes: Bytes,
    /// Its priority.
    pub priority: u32,
}

/// The server's end of its queue.
pub struct MqReceiver {
    fd: AsyncFd<OwnedQueue>,
    buf: Vec<u8>,
    malformed: u64,
}

impl fmt::Debug for MqReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqReceiver")
            .field("queue", self.fd.get_ref())
            .field("malformed", &self.malformed)
            .finish()
    }
}

impl MqReceiver {
    /// Creates queue `name` for `max_messages` messages of `message_size`
    /// bytes, or reopens this server's own queue from a previous run, see
    /// `sys::mqueue::create_exclusive` and the lifecycle in the
    /// [module docs](self). Typical sizes are the system's [`limits`].
    ///
    /// Must be called within a tokio runtime.
    pub fn create(name: &str, max_messages: usize, message_size: usize) -> Result<Self, MqError> {
        Self::new(sys::create_exclusive(name, max_messages, message_size)?)
    }

    /// Drains an already open queue. Must be called within a tokio runtime.
    pub fn new(queue: OwnedQueue) -> Result<Self, MqError> {
        let buf = vec![0; queue.message_size()];
        Ok(Self {
            fd: queue.into_async()?,
            buf,
            malformed: 0,
        })
    }

    /// The queue.
    pub fn queue(&self) -> &OwnedQueue {
        self.fd.get_ref()
    }

    /// Gives the queue back, for example to [`remove_if_empty`] it.
    pub fn into_queue(self) -> OwnedQueue {
        self.fd.into_inner()
    }

    /// Messages [`recv_frame`](Self::recv_frame) dropped as malformed.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Takes the next message if there is one, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<Received>, MqError> {
        match self.fd.get_ref().receive(&mut self.buf) {
            Ok((len, priority)) => Ok(Some(Received {
                bytes: Bytes::copy_from_slice(&self.buf[..len]),
                priority,
            })),
            Err(MqError::WouldBlock { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Waits for the next message: highest priority first, oldest first
    /// within a priority. Cancel-safe: a message is taken only when the
    /// future completes.
    pub async fn recv(&mut self) -> Result<Received, MqError> {
        loop {
            let mut guard = self.fd.readable().await.map_err(|source| MqError::Io {
                op: "waiting for a message",
                name: self.fd.get_ref().name().to_owned(),
                source,
            })?;
            match guard.get_inner().receive(&mut self.buf) {
                Ok((len, priority)) => {
                    return Ok(Received {
                        bytes: Bytes::copy_from_slice(&self.buf[..len]),
                        priority,
                    });
                }
                Err(MqError::WouldBlock { .. }) => guard.clear_ready(),
                Err(err) => return Err(err),
            }
        }
    }

    /// Waits for the next well-formed one-way frame and returns it with its
    /// priority. Malformed messages are dropped, logged as errors and
    /// counted ([`malformed`](Self::malformed)); draining goes on.
    pub async fn recv_frame(&mut self) -> Result<(Frame, u32), MqError> {
        loop {
            let received = self.recv().await?;
            match decode_message(received.bytes) {
                Ok(frame) => return Ok((frame, received.priority)),
                Err(err) => {
                    self.malformed += 1;
                    tracing::error!(
                        queue = self.fd.get_ref().name(),
                        priority = received.priority,
                        dropped = self.malformed,
                        "dropped a malformed message: {err}"
                    );
                }
            }
        }
    }
}

/// Why a message is not one whole one-way frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedMessage {
    /// Shorter than a frame header.
    #[error(
        "a message of {len} bytes is shorter than a {HEADER_LEN}-byte frame header: not a switchyard frame"
    )]
    Short {
        /// The message's length.
        len: usize,
    },
    /// The header is not valid.
    #[error("the message does not start with a valid frame header: {0}")]
    Header(#[from] FrameError),
    /// A valid frame of a kind other than OneWay.
    #[error("the message is a {kind:?} frame; only one-way calls travel through message queues")]
    NotOneWay {
        /// The frame's kind.
        kind: Kind,
    },
    /// The header's lengths do not match the message's.
    #[error(
        "the frame header declares {declared} bytes of metadata and payload but the message has {actual}"
    )]
    LengthMismatch {
        /// What the header declares.
        declared: u64,
        /// What the message holds after the header.
        actual: usize,
    },
}

/// Decodes one message: it must be exactly one whole frame of kind
/// [`OneWay`](Kind::OneWay), no more and no less.
pub fn decode_message(bytes: Bytes) -> Result<Frame, MalformedMessage> {
    let Some(head) = bytes.get(..HEADER_LEN) else {
        return Err(MalformedMessage::Short { len: bytes.len() });
    };
    let mut raw = [0u8; HEADER_LEN];
    raw.copy_from_slice(head);
    let header = Header::parse(&raw)?;
    if header.kind != Kind::OneWay {
        return Err(MalformedMessage::NotOneWay { kind: header.kind });
    }
    let actual = bytes.len() - HEADER_LEN;
    if header.body_len() != actual as u64 {
        return Err(MalformedMessage::LengthMismatch {
            declared: header.body_len(),
            actual,
        });
    }
    let metadata_end = HEADER_LEN + header.metadata_len as usize;
    Ok(Frame {
        header,
        metadata: bytes.slice(HEADER_LEN..metadata_end),
        payload: bytes.slice(metadata_end..),
    })
}

/// What [`remove_if_empty`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The queue was empty and is gone.
    Removed,
    /// The queue holds messages and stays for the next run.
    Kept {
        /// Messages waiting in it.
        messages: usize,
    },
    /// There was no such queue.
    Absent,
}

/// Removes queue `name` only if it holds no
/// messages. A queue that is not this user's with mode 0600 is refused.
///
/// A message sent between the check and the removal is not lost: it is
/// still in this function's descriptor, and the queue is created again
/// with it (the result is then [`Removal::Kept`]).
pub fn remove_if_empty(name: &str) -> Result<Removal, MqError> {
    let queue = match sys::open_existing(name) {
        Ok(queue) => queue,
        Err(MqError::NotFound { .. }) => return Ok(Removal::Absent),
        Err(err) => return Err(err),
    };
    let waiting = queue.attributes()?.current_messages;
    if waiting > 0 {
        return Ok(Removal::Kept { messages: waiting });
    }
    match sys::unlink(name) {
        Ok(()) | Err(MqError::NotFound { .. }) => {}
        Err(err) => return Err(err),
    }
    let raced = queue.attributes()?.current_messages;
    if raced == 0 {
        return Ok(Removal::Removed);
    }
    // Put back what arrived in the meantime, in the order it would have
    // been received.
    let restored = sys::create_exclusive(name, queue.max_messages(), queue.message_size())?;
    let sender = sys::open_send(restored.name())?;
    let mut buf = vec![0; queue.message_size()];
    let mut moved = 0;
    loop {
        match queue.receive(&mut buf) {
            Ok((len, priority)) => {
                sender.send(&buf[..len], priority)?;
                moved += 1;
            }
            Err(MqError::WouldBlock { .. }) => break,
            Err(err) => return Err(err),
        }
    }
    Ok(Removal::Kept { messages: moved })
}

/// Removes queue `name` for good, messages and all; returns how many
/// messages were discarded (`None`: there was no such queue). A queue that
/// is not this user's with mode 0600 is refused.
pub fn remove(name: &str) -> Result<Option<usize>, MqError> {
    let queue = match sys::open_existing(name) {
        Ok(queue) => queue,
        Err(MqError::NotFound { .. }) => return Ok(None),
        Err(err) => return Err(err),
    };
    let discarded = queue.attributes()?.current_messages;
    match sys::unlink(name) {
        Ok(()) | Err(MqError::NotFound { .. }) => Ok(Some(discarded)),
        Err(err) => Err(err),
    }
}

/// How many messages wait in queue `name` (`None`: there is no such
/// queue), without taking any.
pub fn waiting(name: &str) -> Result<Option<usize>, MqError> {
    match sys::open_existing(name) {
        Ok(queue) => Ok(Some(queue.attributes()?.current_messages)),
        Err(MqError::NotFound { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

/// A queue that [`prune`] removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pruned {
    /// Its name.
    pub name: String,
    /// Messages that were waiting in it and are now gone.
    pub discarded: usize,
}

/// What [`prune`] did, queue by queue.
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Queues removed because their owner is gone.
    pub pruned: Vec<Pruned>,
    /// Queues left alone because their owner is alive.
    pub kept: Vec<String>,
    /// Queues that could not be examined or removed, and why.
    pub failed: Vec<(String, MqError)>,
}

/// The prune command: removes each of this user's switchyard queues (listed
/// from `/dev/mqueue`, see [`list_own_queues`]) for which `owner_alive`
/// returns false, messages and all. `owner_alive` gets the queue name; the
/// caller answers from its registry, e.g. by comparing with
/// [`queue_name`] of each live service.
pub fn prune(owner_alive: impl Fn(&str) -> bool) -> Result<PruneReport, MqError> {
    Ok(prune_named(list_own_queues()?, owner_alive))
}

/// [`prune`] over the given queue names, for systems where `/dev/mqueue`
/// is not mounted (the caller names the candidates, e.g. from its
/// registry). Names that do not exist are skipped.
pub fn prune_named<S: AsRef<str>>(
    names: impl IntoIterator<Item = S>,
    owner_alive: impl Fn(&str) -> bool,
) -> PruneReport {
    let mut report = PruneReport::default();
    for name in names {
        let name = name.as_ref();
        if owner_alive(name) {
            report.kept.push(name.to_owned());
            continue;
        }
        let outcome = sys::open_existing(name).and_then(|queue| {
            let discarded = queue.attributes()?.current_messages;
            sys::unlink(name)?;
            Ok(discarded)
        });
        match outcome {
            Ok(discarded) => report.pruned.push(Pruned {
                name: name.to_owned(),
                discarded,
            }),
            Err(MqError::NotFound { .. }) => {}
            Err(err) => report.failed.push((name.to_owned(), err)),
        }
    }
    report
}

/// Checks a priority from `#[switchyard(priority = N)]`: 0 to
/// [`MAX_PRIORITY`], else [`MqError::BadPriority`].
pub fn check_priority(priority: u32) -> Result<u32, MqError> {
    if priority > MAX_PRIORITY {
        Err(MqError::BadPriority { priority })
    } else {
        Ok(priority)
    }
}
