//! Decisions made once a connection exists: what its handshake showed,
//! moving to shared memory, and falling back when shared memory could not
//! be set up.

use std::fmt;
use std::path::PathBuf;

use super::reason::Reason;
use super::rejection::Rejection;
use super::{Forced, Selection};
use crate::protocol::hello::{HostIdentity, Locality};
use crate::transport::{Endpoint, Transport};

/// Adds what the handshake revealed about where the peer runs to a TCP or
/// QUIC selection's reason ([`Reason::Handshake`]); others are unchanged.
pub fn note_locality(selection: &mut Selection, local: &HostIdentity, peer: &HostIdentity) {
    if !matches!(selection.transport, Transport::Tcp | Transport::Quic) {
        return;
    }
    selection.reason = Reason::Handshake {
        then: Box::new(selection.reason.clone()),
        locality: local.locality(peer),
    };
}

/// Whether a connection moves to shared memory after its handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// It stays; with why, when that is worth an event on the connection.
    Stay(Option<NotUpgraded>),
    /// Set up shared memory over the Unix socket at `socket` and move there
    /// with `selection`.
    Move {
        /// The server's Unix socket, from its hello.
        socket: PathBuf,
        /// The new connection's selection.
        selection: Selection,
    },
}

/// Why a connection that could have moved to shared memory stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotUpgraded {
    /// The client presented a certificate the server would no longer see.
    ClientCertificate,
    /// The server's hello lists no Unix socket.
    NoUnixSocket,
}

impl fmt::Display for NotUpgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClientCertificate => {
                "this client presented a certificate (mutual TLS): staying on QUIC so the \
                 server keeps seeing its identity"
            }
            Self::NoUnixSocket => {
                "the server is on this host but lists no Unix socket to set up shared memory over"
            }
        })
    }
}

/// Decides whether the TCP or QUIC connection with `current` selection,
/// reached at `url`, moves to shared memory: only when no transport was
/// demanded, the client presented no certificate (mutual TLS), the
/// handshake showed the same host and IPC namespace, and the server's hello
/// (`peer_endpoints`) lists a Unix socket.
pub fn upgrade(
    current: &Selection,
    url: &str,
    locality: Locality,
    peer_endpoints: &[Endpoint],
    forced: Option<Forced>,
    presented_certificate: bool,
) -> Upgrade {
    let via = current.transport;
    if !matches!(via, Transport::Tcp | Transport::Quic) {
        return Upgrade::Stay(None);
    }
    if presented_certificate {
        return Upgrade::Stay(Some(NotUpgraded::ClientCertificate));
    }
    if forced.is_some() || locality != Locality::SameHostSameIpc {
        return Upgrade::Stay(None);
    }
    let Some(socket) = peer_endpoints.iter().find_map(|e| match e {
        Endpoint::Unix(path) => Some(path.clone()),
        _ => None,
    }) else {
        return Upgrade::Stay(Some(NotUpgraded::NoUnixSocket));
    };
    Upgrade::Move {
        selection: Selection {
            transport: Transport::Shm,
            reason: Reason::Upgraded {
                from: url.to_owned(),
                via,
                socket: socket.clone(),
            },
            rejected: vec![(via, Rejection::HandshakeOnly { via })],
        },
        socket,
    }
}

/// The selection of a shared-memory candidate whose set-up failed with
/// `error`, when the Unix socket it was set up over carries the connection
/// instead (only without an override: a demanded `shm` fails).
pub fn shm_fallback(selection: &Selection, error: String) -> Selection {
    let mut rejected = selection.rejected.clone();
    rejected.retain(|(t, _)| *t != Transport::Unix);
    rejected.push((Transport::Shm, Rejection::ShmSetUpFailed { error }));
    let reason = match &selection.reason {
        Reason::SameHostShm { published } => Reason::ShmSetUpFailed {
            published: published.clone(),
        },
        other => other.clone(),
    };
    Selection {
        transport: Transport::Unix,
        reason,
        rejected,
    }
}
