//! Transports: one module each, all behind the same three traits.
//!
//! A [`Link`] is one established connection that moves encoded frames both
//! ways; a [`Listener`] accepts links; a connector (each module's `connect`
//! function) opens one. Which transport a connection uses is decided in
//! [`select`](crate::select), the only code that knows them all; adding a
//! transport touches its module and the selector, nothing else.
//!
//! Every transport runs the conformance suite in `tests/conformance.rs`.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::futures::Notified;

use crate::protocol::frame::{Decoded, FrameError};

pub use endpoint::{Endpoint, EndpointError, PipeSide};

pub mod bulk;
pub mod endpoint;
pub mod intake;
pub mod memory;
#[cfg(target_os = "linux")]
pub mod mqueue;
pub mod pipe;
#[cfg(feature = "quic")]
pub mod quic;
#[cfg(target_os = "linux")]
pub mod shm;
pub mod socket_tx;
pub(crate) mod spin;
pub mod stream;
pub mod tcp;
pub mod unix;

/// The tracks a call can travel on. The lower-case names (`Display`,
/// [`Transport::as_str`]) are what selections, logs and the debug endpoint
/// show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Transport {
    /// Pipes inherited from a parent process.
    Pipe,
    /// Shared-memory rings on one host.
    Shm,
    /// Memory-mapped regions for large payloads.
    Mmap,
    /// POSIX message queues for one-way calls.
    MessageQueue,
    /// Unix-domain stream sockets.
    Unix,
    /// TCP.
    Tcp,
    /// QUIC.
    Quic,
    /// An in-process link (tests, and a client and server in one process).
    Memory,
}

impl Transport {
    /// Every transport, fastest track first.
    pub const ALL: [Self; 8] = [
        Self::Memory,
        Self::Pipe,
        Self::Shm,
        Self::Mmap,
        Self::MessageQueue,
        Self::Unix,
        Self::Tcp,
        Self::Quic,
    ];

    /// The lower-case name: `pipe`, `shm`, `mmap`, `mqueue`, `unix`, `tcp`,
    /// `quic`, `memory`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pipe => "pipe",
            Self::Shm => "shm",
            Self::Mmap => "mmap",
            Self::MessageQueue => "mqueue",
            Self::Unix => "unix",
            Self::Tcp => "tcp",
            Self::Quic => "quic",
            Self::Memory => "memory",
        }
    }

    /// Parses a lower-case name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this build can open connections over the transport.
    pub fn is_available(self) -> bool {
        match self {
            Self::Unix | Self::Tcp | Self::Memory | Self::Pipe => true,
            Self::Shm | Self::Mmap | Self::MessageQueue => cfg!(target_os = "linux"),
            Self::Quic => cfg!(feature = "quic"),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What the kernel or the transport says about the other end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's address, as a URL (`unix:///path`, `tcp://1.2.3.4:5`).
    pub addr: String,
    /// The peer's process id, where the kernel vouches for it (SO_PEERCRED).
    pub pid: Option<u32>,
    /// The peer's user id, where the kernel vouches for it.
    pub uid: Option<u32>,
}

/// Who the peer is by its certificate, where the transport verified one
/// (QUIC with mutual TLS): the fingerprint of its own certificate and the
/// names the certificate holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// SHA-256 of the peer's certificate, 64 hex digits.
    pub fingerprint: String,
    /// The DNS names (subject alternative names) of the certificate.
    pub dns_names: Vec<String>,
    /// The URI names (e.g. SPIFFE ids) of the certificate.
    pub uri_names: Vec<String>,
}

/// Why a link could not deliver frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The operating system reported an error.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer sent bytes that are not a frame; the link cannot continue.
    #[error("malformed frame from peer: {0}")]
    Frame(#[from] FrameError),
    /// The peer closed the link in the middle of a frame.
    #[error(
        "the peer closed the connection in the middle of a frame ({buffered} bytes of it received)"
    )]
    TruncatedFrame {
        /// Bytes of the partial frame that had arrived.
        buffered: usize,
    },
    /// A frame did not arrive whole within its deadline (see
    /// [`intake`]); its bytes were dropped.
    #[error(
        "the peer did not finish a frame within {allowed:?} of its first byte (this server gives \
         a frame {rule}); a client on a slow link should send smaller bodies, or the server's \
         operator raise ServerBuilder::frame_timeout"
    )]
    FrameTimeout {
        /// The time this frame had.
        allowed: Duration,
        /// The rule that gave it.
        rule: intake::FrameDeadline,
    },
}

/// The sending half of a link.
pub trait LinkTx: Send + 'static {
    /// Sends `frames`: one or more whole encoded frames, back to back.
    /// Completes when the transport has taken all of them.
    fn send(&mut self, frames: &[u8]) -> impl Future<Output = io::Result<()>> + Send;

    /// Tells the peer no more frames will follow (half-close where the
    /// transport has one).
    fn close(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// Capability: a handle through which any task writes whole frames at
    /// once, in order with this half, when they fit without waiting (shared
    /// memory has one: a caller's request goes into the ring from the
    /// caller's own thread; so have sockets and pipes, `socket_tx.rs`).
    /// `None` (the default) for transports where every write goes through
    /// this half. Asked once, when a connection is set up.
    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        None
    }

    /// Capability: the bulk path ([`BulkTx`](bulk::BulkTx): its threshold,
    /// its counters, and the send of a frame whose body is a
    /// [`BulkBody`](bulk::BulkBody)); `None` (the default): this link has
    /// none, and every body is encoded into its frame. Shared memory has
    /// one, the sending half itself. Its threshold and counters are read
    /// once, when a connection is set up; the writer reaches the send
    /// through it, without dynamic dispatch.
    fn bulk(&mut self) -> Option<&mut impl bulk::BulkTx> {
        None::<&mut bulk::NoBulk>
    }
}

/// What a direct write did ([`DirectWrite::try_write`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Nothing (no room, another writer busy, the link closed or broken):
    /// send the frames through the link's sending half.
    Nothing,
    /// All of the frames.
    All,
    /// Their first bytes: the link keeps the rest for its sending half,
    /// which writes it before anything else once it is woken (a send of
    /// no frames wakes it).
    Started,
}

/// Writes frames without waiting, from any task (see [`LinkTx::direct`]).
pub trait DirectWrite: Send + Sync + fmt::Debug {
    /// Writes `frames` now, all of them or their start (the link keeps the
    /// rest), or nothing.
    fn try_write(&self, frames: &[u8]) -> Written;

    /// Frames shorter than this go through the link's sending half: where
    /// a direct write is a system call, small frames are cheaper gathered
    /// by the writer task into one write when many callers send at once.
    fn min_len(&self) -> usize {
        0
    }

    /// Sends the frame `header` heads, whose body is the bulk body `body`,
    /// now (the body gone), or gives the body back: then send it through
    /// the link's sending half. Only links whose bulk bodies can go without
    /// their writer (a shared-memory pool) take any.
    fn try_write_bulk(&self, _header: &[u8], body: bulk::BulkBody) -> Result<(), bulk::BulkBody> {
        Err(body)
    }
}

/// What a poll of a receiving half found ([`LinkRx::try_recv`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// Frames were appended.
    Frames,
    /// Nothing has arrived.
    Empty,
    /// The peer closed the link cleanly between frames; all it sent is out.
    Closed,
}

/// The receiving half of a link.
///
/// Every link is read with [`recv`](Self::recv). A link whose frames can be
/// read without a syscall (shared memory) also offers
/// [`try_recv`](Self::try_recv) and [`wake`](Self::wake): then a caller
/// waiting for its response reads the link itself ("whoever waits,
/// drives"), and a task that has nothing to do sleeps on the wake-up line.
pub trait LinkRx: Send + 'static {
    /// Waits for at least one frame and appends every frame already received
    /// to `out`. Returns `Ok(false)` when the peer closed the link cleanly
    /// between frames. Cancel-safe: dropping the future loses no bytes.
    fn recv(
        &mut self,
        out: &mut Vec<Decoded>,
    ) -> impl Future<Output = Result<bool, LinkError>> + Send;

    /// Appends the frames that have arrived to `out`, without waiting and
    /// without a syscall. The default: nothing is ever ready this way.
    fn try_recv(&mut self, out: &mut Vec<Decoded>) -> Result<Polled, LinkError> {
        let _ = out;
        Ok(Polled::Empty)
    }

    /// The wake-up line of a link read with [`try_recv`](Self::try_recv);
    /// `None` (the default): read it with [`recv`](Self::recv).
    fn wake(&self) -> Option<Arc<dyn RxWake>> {
        None
    }

    /// Announces that nobody polls: the peer then wakes sleepers of
    /// [`wake`](Self::wake) when it writes. `false`: data arrived
    /// meanwhile, poll again.
    fn arm(&mut self) -> bool {
        true
    }

    /// Withdraws [`arm`](Self::arm): a task polls, the peer need not wake
    /// anyone.
    fn disarm(&mut self) {}
}

/// How a task sleeps until the peer of a polled link writes
/// ([`LinkRx::wake`]).
pub trait RxWake: Send + Sync + fmt::Debug {
    /// A ticket for [`sleep`](Self::sleep), taken before
    /// [`LinkRx::arm`] so that no wake-up between the two is lost.
    fn ticket(&self) -> Pin<Box<Notified<'_>>>;

    /// Sleeps until the peer writes, another sleeper saw it (`ticket`), or
    /// a bounded time passes; `Err` when the peer left (`UnexpectedEof`
    /// after a clean goodbye).
    fn sleep<'a>(
        &'a self,
        ticket: Pin<Box<Notified<'a>>>,
    ) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>>;

    /// The bytes the link moved last (the larger of its last write and the
    /// largest body it last received): a waiter spins longer right after a
    /// large body, as the peer's part takes time in proportion to it. 0
    /// where the link does not say.
    fn largest_moved(&self) -> u64 {
        0
    }
}

/// Settings a connection applies to its link before splitting it, on
/// links that have them; other links ignore them.
#[derive(Clone, Debug, Default)]
pub struct LinkTuning {
    /// Shared memory: the longest a receiver spins on an empty link before
    /// it sleeps.
    pub spin: Option<Duration>,
    /// Shared memory: frame bodies above this travel as bulk regions.
    pub bulk_threshold: Option<usize>,
    /// Shared memory: the most the sending side's pool for large bodies
    /// may hold (zero: no pool).
    pub pool_limit: Option<usize>,
    /// Shared memory: read the peer's pooled bodies in place where it runs
    /// as this user.
    pub read_in_place: Option<bool>,
    /// Unix, TCP and QUIC: the deadline of a frame once started and the
    /// budget of partial frames (see [`intake`]).
    pub intake: intake::IntakeLimits,
}

/// One established connection.
pub trait Link: Send + 'static {
    /// The sending half.
    type Tx: LinkTx;
    /// The receiving half.
    type Rx: LinkRx;

    /// Which transport this is.
    fn transport(&self) -> Transport;

    /// What is known of the peer.
    fn peer(&self) -> PeerInfo;

    /// The peer's verified certificate identity, where the transport has
    /// one (QUIC with client certificates).
    fn identity(&self) -> Option<PeerIdentity> {
        None
    }

    /// Applies the settings it has of `tuning` (the default: none).
    fn tune(&mut self, tuning: &LinkTuning) {
        let _ = tuning;
    }

    /// Splits into halves that can be driven from different tasks; the
    /// receiver rejects frame bodies over `frame_limit` bytes.
    fn split(self, frame_limit: u32) -> (Self::Tx, Self::Rx);
}

/// Whether a failed accept means this process is out of descriptors or
/// memory (the listener must back off), rather than a problem with the one
/// connection it was accepting (reset or aborted before it was accepted,
/// refused by a firewall), after which accepting goes on at once.
pub(crate) fn accept_exhausted(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
            || code == rustix::io::Errno::NFILE.raw_os_error()
            || code == rustix::io::Errno::NOBUFS.raw_os_error()
            || code == rustix::io::Errno::NOMEM.raw_os_error()
    ) || err.kind() == io::ErrorKind::OutOfMemory
}

/// Opens links of one transport, as a [`Listener`] accepts them. Each
/// transport module has one (`UnixConnector`, `TcpConnector`,
/// `ShmConnector`, `QuicConnector`); the client picks the one an
/// [`Endpoint`] names in one place (`client/open.rs`).
pub trait Connector: Send + Sync {
    /// The links it opens.
    type Link: Link;
    /// Why a connect failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a link to `endpoint`. An endpoint of another transport is an
    /// error saying so.
    fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> impl Future<Output = Result<Self::Link, Self::Error>> + Send;
}

/// Checks who answered a connect before anything is sent to it, by what
/// the kernel says of the peer ([`PeerInfo`]'s pid and uid, from
/// SO_PEERCRED); an error refuses the link (use
/// [`io::ErrorKind::PermissionDenied`] with a message saying why).
pub type PeerCheck = Arc<dyn Fn(&PeerInfo) -> io::Result<()> + Send + Sync>;

/// The error of a connector given an endpoint of another transport.
pub(crate) fn wrong_endpoint(connector: Transport, endpoint: &Endpoint) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "the {connector} connector cannot open {endpoint}; open it with the {} connector",
            endpoint.transport()
        ),
    )
}

/// Accepts links.
pub trait Listener: Send + 'static {
    /// The links it accepts.
    type Link: Link;

    /// Waits for the next link. An error concerns that one attempt only;
    /// the listener stays usable.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Link>> + Send;

    /// The address peers connect to, as a URL.
    fn local_url(&self) -> String;
}
