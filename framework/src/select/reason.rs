//! Why a transport was chosen: one variant per reason, written out as the
//! sentence selections, logs and the debug endpoint show.

use std::fmt;
use std::path::PathBuf;

use super::Forced;
use super::rejection::PassedOver;
use crate::protocol::hello::Locality;
use crate::transport::Transport;

/// Why a [`Selection`](super::Selection) chose its transport. `Display`
/// writes the sentence shown to people.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The caller wrote an address of this transport (`unix://`, `tcp://`,
    /// `quic://`), possibly under an override that demanded the same.
    CallerNamed {
        /// The address's transport.
        transport: Transport,
        /// The override in force, if any.
        forced: Option<Forced>,
    },
    /// An override picked the transport among a registry entry's
    /// endpoints.
    ForcedOnEntry {
        /// The override.
        forced: Forced,
        /// Who published the name.
        published: Published,
    },
    /// The registry's server shares this host's boot id and IPC namespace:
    /// shared memory.
    SameHostShm {
        /// Who published the name.
        published: Published,
    },
    /// As [`SameHostShm`](Self::SameHostShm), but setting shared memory up
    /// failed, so the Unix socket carries the connection.
    ShmSetUpFailed {
        /// Who published the name.
        published: Published,
    },
    /// The registry's server is on this host; its Unix socket is the
    /// fastest track it offers.
    SameHostUnix {
        /// Who published the name.
        published: Published,
    },
    /// The registry entry offers only this transport.
    OnlyEndpoint {
        /// Who published the name.
        published: Published,
        /// The transport of its one usable endpoint.
        transport: Transport,
    },
    /// A resolver listed the address; this transport ranks first among
    /// what it lists (or an override demanded it).
    Listed {
        /// What the resolver answered.
        listing: Listing,
        /// The transport of the address.
        transport: Transport,
        /// The override in force, if any.
        forced: Option<Forced>,
    },
    /// Candidates before this one failed or stayed silent.
    FellBack {
        /// The transport connected.
        transport: Transport,
        /// The candidates passed over, in order.
        passed_over: Vec<PassedOver>,
        /// The reason this candidate had on its own.
        then: Box<Self>,
    },
    /// What the handshake showed about where the peer runs (TCP and QUIC).
    Handshake {
        /// The reason before the handshake.
        then: Box<Self>,
        /// Where the peer runs.
        locality: Locality,
    },
    /// A TCP or QUIC connection moved to shared memory after its handshake
    /// showed the server on this host.
    Upgraded {
        /// The address first reached.
        from: String,
        /// The transport that carried the handshake.
        via: Transport,
        /// The Unix socket shared memory was set up over.
        socket: PathBuf,
    },
    /// The caller handed in an established link.
    CallerLink {
        /// Its transport.
        transport: Transport,
    },
    /// This process spawned the peer with inherited pipes.
    SpawnedChild {
        /// The program spawned.
        program: String,
        /// Its pid.
        pid: u32,
    },
    /// The parent process serves the service over inherited pipes.
    ParentPipe {
        /// The parent's pid.
        ppid: u32,
    },
    /// (Server) the client set up shared memory over the Unix socket.
    ClientSetUpShm,
    /// (Server) the client connected to a listener of this transport.
    ClientConnected {
        /// The listener's transport.
        transport: Transport,
    },
    /// (Server) one-way calls arrive through this server's own queue.
    QueueOwned {
        /// The queue's name.
        queue: String,
    },
    /// No live server publishes the name, but its queue exists.
    QueueStandIn {
        /// The name connected to.
        target: String,
        /// The queue's name.
        queue: String,
    },
    /// One-way calls go through the server's queue.
    OnewayQueue {
        /// The queue's name.
        queue: String,
        /// The largest message it takes, in bytes.
        max_message: usize,
    },
    /// No server is reachable, but one-way calls go through its queue.
    OnewayQueueOnly {
        /// The queue's name.
        queue: String,
    },
    /// One-way calls go over the connection (the rejection of the queue
    /// says why).
    OnewayConnection,
}

/// Who published a name in the local registry, for reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The name looked up.
    pub name: String,
    /// The publishing process.
    pub pid: u32,
}

/// What a resolver answered for a name, for reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// Who answered, e.g. "the discovery file /etc/x.toml".
    pub source: String,
    /// The name looked up.
    pub name: String,
    /// The addresses it gave, as written.
    pub addresses: Vec<String>,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CallerNamed { transport, forced } => {
                write!(f, "the caller named a {transport}:// address")?;
                match forced {
                    Some(forced) => write!(f, " ({forced})"),
                    None => Ok(()),
                }
            }
            Self::ForcedOnEntry { forced, published } => {
                write!(f, "forced by {forced}; {published}")
            }
            Self::SameHostShm { published } => write!(
                f,
                "same host: boot id and IPC namespace match; {published}; shared memory is the \
                 fastest track"
            ),
            Self::ShmSetUpFailed { published } => write!(
                f,
                "same host: boot id and IPC namespace match; {published}; the Unix socket, since \
                 shared memory could not be set up"
            ),
            Self::SameHostUnix { published } => write!(
                f,
                "same host: {published}; a Unix socket is the fastest track it offers"
            ),
            Self::OnlyEndpoint {
                published,
                transport,
            } => write!(f, "{published}; {transport} is the only endpoint it offers"),
            Self::Listed {
                listing,
                transport,
                forced,
            } => {
                write!(f, "{listing}; ")?;
                match (forced, transport) {
                    (Some(forced), _) => write!(f, "forced by {forced}"),
                    (None, Transport::Quic) => f.write_str(
                        "quic is the fastest track across machines (encrypted, one stream per \
                         call)",
                    ),
                    (None, Transport::Unix) => {
                        f.write_str("a Unix socket is the fastest track it lists")
                    }
                    (None, transport) => write!(f, "{transport} is the fastest track it lists"),
                }
            }
            Self::FellBack {
                transport,
                passed_over,
                then,
            } => {
                write!(f, "fell back to {transport}: ")?;
                for (i, passed) in passed_over.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{passed}")?;
                }
                write!(f, "; {then}")
            }
            Self::Handshake { then, locality } => match locality {
                Locality::SameHostSameIpc | Locality::SameHostOtherIpc => write!(
                    f,
                    "{then}; the handshake shows the peer is on this host ({})",
                    locality.describe()
                ),
                Locality::OtherHost => write!(f, "{then}; {}", locality.describe()),
            },
            Self::Upgraded { from, via, socket } => write!(
                f,
                "upgraded: reached {from} over {via}, whose handshake showed the server on this \
                 host (same boot id and IPC namespace), so the connection moved to shared memory \
                 set up over its Unix socket {}",
                socket.display()
            ),
            Self::CallerLink { transport } => {
                write!(f, "the caller supplied a {transport} link")
            }
            Self::SpawnedChild { program, pid } => write!(
                f,
                "this process spawned {program} (pid {pid}) with inherited pipes"
            ),
            Self::ParentPipe { ppid } => write!(
                f,
                "the parent process (pid {ppid}) serves this service over inherited pipes"
            ),
            Self::ClientSetUpShm => {
                f.write_str("the client set up shared memory over this server's Unix socket")
            }
            Self::ClientConnected { transport } => {
                write!(
                    f,
                    "the client connected to this server's {transport} listener"
                )
            }
            Self::QueueOwned { queue } => {
                write!(f, "one-way calls queued in {queue}, owned by this server")
            }
            Self::QueueStandIn { target, queue } => write!(
                f,
                "no live process publishes {target:?}, but its queue {queue} is there: one-way \
                 calls wait in the kernel until the server is back; other calls reconnect"
            ),
            Self::OnewayQueue { queue, max_message } => write!(
                f,
                "same host, IPC namespace and user: the server's queue {queue} takes one-way \
                 calls (up to {max_message} bytes each; larger ones go over the connection) and \
                 keeps them across a server restart"
            ),
            Self::OnewayQueueOnly { queue } => write!(
                f,
                "no live server is reachable, but its queue {queue} is: one-way calls wait in \
                 the kernel until the server is back"
            ),
            Self::OnewayConnection => f.write_str("one-way calls ride the connection"),
        }
    }
}

impl PartialEq<Reason> for String {
    fn eq(&self, reason: &Reason) -> bool {
        shows(self, reason)
    }
}

impl PartialEq<Reason> for &str {
    fn eq(&self, reason: &Reason) -> bool {
        shows(self, reason)
    }
}

/// Whether `value`'s `Display` writes exactly `text` (compared piece by
/// piece as it is written, without building the string).
pub(super) fn shows(text: &str, value: &dyn fmt::Display) -> bool {
    struct Rest<'a>(&'a str);
    impl fmt::Write for Rest<'_> {
        fn write_str(&mut self, piece: &str) -> fmt::Result {
            self.0 = self.0.strip_prefix(piece).ok_or(fmt::Error)?;
            Ok(())
        }
    }
    let mut rest = Rest(text);
    fmt::write(&mut rest, format_args!("{value}")).is_ok() && rest.0.is_empty()
}

impl fmt::Display for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is published in the local registry by pid {}",
            self.name, self.pid
        )
    }
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} gives {:?} [{}]",
            self.source,
            self.name,
            self.addresses.join(", ")
        )
    }
}
