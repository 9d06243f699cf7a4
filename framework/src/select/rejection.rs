//! Why a transport was not used: one variant per reason, written out as the
//! sentence selections, logs and the debug endpoint show.

use std::fmt;
use std::time::Duration;

use super::Forced;
use crate::protocol::hello::Locality;
use crate::transport::Transport;

/// Why a transport lost. `Display` writes the sentence shown to people.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// This build cannot make memfds.
    ShmNeedsLinux,
    /// Mapped regions ride a shared-memory connection.
    MmapIsNotAConnection,
    /// Pipes reach only a parent or child.
    NotOurParent,
    /// Message queues carry only one-way calls.
    OnlyOneWayCalls,
    /// QUIC to a server on this host.
    LocalIsFaster,
    /// The Unix socket only sets shared memory up.
    UnixOnlySetsUpShm,
    /// Shared memory beats a socket on the same host.
    ShmIsFaster,
    /// The registry entry does not say which IPC namespace the server is in.
    IpcNamespaceUnknown,
    /// Same host, different IPC namespace: no shared memory.
    OtherIpcNamespace,
    /// A Unix socket beats TCP on the same host.
    UnixIsFaster,
    /// The registry entry lists no Unix socket.
    NoUnixSocket,
    /// An override demanded another transport.
    Overridden(Forced),
    /// Setting shared memory up failed.
    ShmSetUpFailed {
        /// What failed.
        error: String,
    },
    /// An earlier candidate failed or stayed silent.
    PassedOver(PassedOver),
    /// The parent's inherited pipe needs no socket.
    InheritedPipeSuffices,
    /// Not built in this version.
    NotImplemented,
    /// After an upgrade: the transport that only carried the handshake.
    HandshakeOnly {
        /// That transport.
        via: Transport,
    },
    /// The connection, for one-way calls a queue takes.
    QueueKeepsOneWayCalls,
    /// (One-way) an override keeps one-way calls on the connection.
    OverriddenForOneWay(Forced),
    /// (One-way) the server is not in this host's IPC namespace.
    NotSharedNamespace(Locality),
    /// (One-way) the server runs as another user.
    OtherUser {
        /// The server's uid.
        theirs: u32,
        /// This process's uid.
        ours: u32,
    },
    /// (One-way) someone else holds the queue's name.
    QueueSquatted {
        /// The service.
        service: String,
        /// What the queue error says about the holder.
        held: String,
    },
    /// (One-way) the server's hello names no queue for the service.
    NoQueueAnnounced {
        /// The service.
        service: String,
    },
    /// (One-way) the service has no one-way methods.
    NoOneWayMethods {
        /// The service.
        service: String,
    },
    /// (One-way) the announced queue does not exist.
    QueueNotKept {
        /// The queue's name.
        queue: String,
    },
    /// (One-way) the queue exists but cannot be used.
    QueueUnusable {
        /// The queue's name.
        queue: String,
        /// Why.
        error: String,
    },
    /// (One-way) this platform has no POSIX message queues.
    QueuesUnsupported,
}

/// A candidate address that was tried and passed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassedOver {
    /// Connecting failed.
    Failed {
        /// The address, as messages name it.
        url: String,
        /// What failed.
        message: String,
    },
    /// It did not answer in its time.
    Silent {
        /// The address, as messages name it.
        url: String,
        /// How long it was given.
        waited: Duration,
        /// Whether it was a QUIC address (UDP may be blocked).
        quic: bool,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShmNeedsLinux => f.write_str("shared memory needs Linux memfds"),
            Self::MmapIsNotAConnection => f.write_str(
                "not a connection of its own: bodies over the bulk threshold travel as mapped \
                 regions inside a shm connection",
            ),
            Self::NotOurParent => f.write_str(
                "the server is not this process's parent (pipes reach only a parent or child)",
            ),
            Self::OnlyOneWayCalls => {
                f.write_str("carries only one-way calls (see Channel::oneway_selection)")
            }
            Self::LocalIsFaster => f.write_str(
                "the server is on this host: a local transport is faster, and QUIC's encryption \
                 protects nothing here",
            ),
            Self::UnixOnlySetsUpShm => f.write_str(
                "shared memory is faster on the same host; the Unix socket only sets it up",
            ),
            Self::ShmIsFaster => f.write_str("shared memory is faster on the same host"),
            Self::IpcNamespaceUnknown => {
                f.write_str("the registry entry does not say which IPC namespace the server is in")
            }
            Self::OtherIpcNamespace => {
                f.write_str("same host (boot id matches) but a different IPC namespace")
            }
            Self::UnixIsFaster => f.write_str("a Unix socket is faster on the same host"),
            Self::NoUnixSocket => f.write_str("the server publishes no Unix socket"),
            Self::Overridden(forced) => write!(f, "{forced} overrides it"),
            Self::ShmSetUpFailed { error } => {
                write!(f, "the shared-memory set-up failed: {error}")
            }
            Self::PassedOver(passed) => passed.fmt(f),
            Self::InheritedPipeSuffices => {
                f.write_str("the parent's inherited pipe reaches it without a socket")
            }
            Self::NotImplemented => f.write_str("not implemented in this version"),
            Self::HandshakeOnly { via } => write!(
                f,
                "the server is on this host: shared memory is faster ({via} only carried the \
                 handshake)"
            ),
            Self::QueueKeepsOneWayCalls => f.write_str(
                "one-way calls need no response; the queue keeps them if the server restarts",
            ),
            Self::OverriddenForOneWay(forced) => {
                write!(f, "{forced} keeps one-way calls on the connection")
            }
            Self::NotSharedNamespace(locality) => write!(
                f,
                "{}: a message queue is shared only within one host's IPC namespace",
                locality.describe()
            ),
            Self::OtherUser { theirs, ours } => write!(
                f,
                "the server runs as uid {theirs} and this process as uid {ours}; a queue is \
                 open only to its owner"
            ),
            Self::QueueSquatted { service, held } => write!(
                f,
                "the server announced no message queue for {service}: {held}; one-way calls go \
                 over the connection and are NOT kept if the server restarts"
            ),
            Self::NoQueueAnnounced { service } => write!(
                f,
                "the server announced no message queue for {service} (queues are off or \
                 unavailable there)"
            ),
            Self::NoOneWayMethods { service } => write!(f, "{service} has no one-way methods"),
            Self::QueueNotKept { queue } => write!(
                f,
                "the server keeps no queue {queue} (message queues are off or unavailable there)"
            ),
            Self::QueueUnusable { queue, error } => {
                write!(f, "the queue {queue} is unusable: {error}")
            }
            Self::QueuesUnsupported => {
                f.write_str("POSIX message queues are not available on this platform")
            }
        }
    }
}

impl fmt::Display for PassedOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed { url, message } => write!(f, "{url} failed: {message}"),
            Self::Silent { url, waited, quic } => {
                write!(f, "{url} did not answer within {waited:?}")?;
                if *quic {
                    f.write_str(" (is UDP blocked on the way?)")?;
                }
                Ok(())
            }
        }
    }
}

impl PartialEq<Rejection> for String {
    fn eq(&self, rejection: &Rejection) -> bool {
        super::reason::shows(self, rejection)
    }
}
