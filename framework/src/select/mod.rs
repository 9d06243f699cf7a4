//! Transport selection: the one place that knows every transport.
//!
//! One entry point, [`select`]: a pure function from a [`Question`] to its
//! answer. Each question type names a decision and carries its inputs:
//! what the caller named ([`Target`]), what is known of its endpoints
//! ([`Known`]), facts about this host and process ([`HostFacts`],
//! [`OnewayFacts`], gathered by the caller), the call ([`CallKind`]) and
//! the policy ([`Forced`]). Its answer type is the decision's outcome, so
//! a caller never handles an answer to a question it did not ask:
//!
//! - [`Connect`] → [`Decision`]: pipe (a parent serving the name), shm,
//!   unix, tcp, quic for a connection, in the order to try them, or an
//!   error saying why none can work ([`ConnectError`]);
//! - [`OnewayRoute`] → [`OnewayVerdict`]: message queue or connection for
//!   a service's one-way calls; [`OnewaySelection`] → the [`Selection`]
//!   they show;
//! - [`CallTrack`] → [`Transport`]: the track of one call by its kind and
//!   size (bulk bodies on mapped regions, one-way calls that fit a queue
//!   message);
//! - [`HandshakeNote`] → [`Selection`]: what the handshake showed of where
//!   the peer runs; [`MoveToShm`] → [`Upgrade`]: a TCP or QUIC connection
//!   moving to shared memory after its handshake; [`ShmFallback`] →
//!   [`Selection`]: shared memory that could not be set up;
//! - [`Fixed`] → [`Selection`]: the selections with one outcome (a link a
//!   server accepted, its queue, the stand-in for a server whose queue
//!   outlived it, a link the caller made, pipes to a child or the parent).
//!   Nothing is decided there: the case names the selection. They go
//!   through [`select`] so that every selection a connection records comes
//!   from it.
//!
//! A [`Selection`] is the transport, a typed [`Reason`] it won and typed
//! [`Rejection`]s of the alternatives, kept on the connection for
//! [`selection()`](crate::Channel::selection) and the debug endpoint (which
//! show their `Display` text). An override that cannot work is an error
//! saying why, never a silent fallback.
//!
//! Not one call per connection: the decisions are asked at the moments
//! their inputs exist. [`Connect`] is asked first with
//! [`Known::NotLookedUp`] (which settles the parent's pipes) and again with
//! what the registry or resolver said, since looking up is I/O; the
//! one-way route, the upgrade and the track of each call need the server's
//! hello or the call itself. [`forced_from_env`] reads the environment and
//! is not a question.
//!
//! The rules behind the questions are public too, as building blocks:
//! [`connect`], [`oneway()`], [`oneway_selection`], [`per_call`],
//! [`note_locality`], [`upgrade`], [`shm_fallback`] and the fixed
//! selections ([`accepted`], [`queue_owned`], [`queue_stand_in`],
//! [`caller_link`], [`spawned_child`], [`parent_pipe`]).

use std::fmt;

pub use crate::transport::Transport;

use crate::protocol::status::Status;
use crate::transport::Endpoint;

mod after;
mod connect;
mod error;
mod facts;
mod fixed;
mod oneway;
mod question;
mod reason;
mod rejection;
mod target;

pub use after::{NotUpgraded, Upgrade, note_locality, shm_fallback, upgrade};
pub use connect::connect;
pub use error::ConnectError;
pub use facts::{CallKind, HostFacts, Known, ParentFacts};
pub use fixed::{accepted, caller_link, parent_pipe, queue_owned, queue_stand_in, spawned_child};
pub use oneway::{
    OnewayFacts, OnewayTrack, OnewayVerdict, Tracks, oneway, oneway_selection, per_call,
};
pub use question::{
    CallTrack, Connect, Fixed, HandshakeNote, MoveToShm, OnewayRoute, OnewaySelection, Question,
    ShmFallback, select,
};
pub use reason::{Listing, Published, Reason};
pub use rejection::{PassedOver, Rejection};
pub use target::Target;

/// The environment variable that forces a transport for every connection a
/// process opens.
pub const TRANSPORT_ENV: &str = "SWITCHYARD_TRANSPORT";

/// Which transport a connection uses and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The transport chosen.
    pub transport: Transport,
    /// Why it was chosen; `Display` writes the sentence, e.g. "same host:
    /// ...".
    pub reason: Reason,
    /// The alternatives considered and why each was not used.
    pub rejected: Vec<(Transport, Rejection)>,
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.transport, self.reason)?;
        if !self.rejected.is_empty() {
            f.write_str(" (not ")?;
            for (i, (transport, why)) in self.rejected.iter().enumerate() {
                if i > 0 {
                    f.write_str("; ")?;
                }
                write!(f, "{transport}: {why}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// An override and where it came from, for messages. `Display` writes
/// `SOURCE=transport`, e.g. `SWITCHYARD_TRANSPORT=tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forced {
    /// The transport demanded.
    pub transport: Transport,
    /// Who demanded it, e.g. `SWITCHYARD_TRANSPORT`.
    pub source: &'static str,
}

impl fmt::Display for Forced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.source, self.transport)
    }
}

/// Reads [`TRANSPORT_ENV`]; unset or empty is `None`, an unknown name an
/// error listing the valid ones.
pub fn forced_from_env() -> Result<Option<Forced>, Status> {
    let Ok(value) = std::env::var(TRANSPORT_ENV) else {
        return Ok(None);
    };
    if value.trim().is_empty() {
        return Ok(None);
    }
    let transport = Transport::from_name(&value).ok_or_else(|| {
        Status::invalid_argument(format!(
            "{TRANSPORT_ENV}={value} is not a transport; use one of {} (pipes, memory maps and \
             message queues are chosen by switchyard where they apply, and cannot be demanded)",
            forceable_names()
        ))
    })?;
    Ok(Some(Forced {
        transport,
        source: "SWITCHYARD_TRANSPORT",
    }))
}

/// The transports a connection can be made to take, as a list for messages.
fn forceable_names() -> String {
    [
        Transport::Shm,
        Transport::Unix,
        Transport::Tcp,
        Transport::Quic,
    ]
    .iter()
    .filter(|t| t.is_available())
    .map(|t| t.as_str())
    .collect::<Vec<_>>()
    .join(", ")
}

/// One candidate: where to connect and the selection to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Where to connect; [`Endpoint::Shm`] is shared memory set up over
    /// the Unix socket at its path.
    pub endpoint: Endpoint,
    /// Whether the caller wrote the QUIC pin (in the target it connected
    /// to), rather than a registry entry or resolver: only the caller's own
    /// pin outranks the channel's configured trust.
    pub caller_pin: bool,
    /// Why.
    pub selection: Selection,
}

impl Plan {
    /// The candidate as messages name it: `unix:///…`, `tcp://…`,
    /// `quic://…` (without the pin), `shm over unix:///…`.
    pub fn url(&self) -> String {
        match &self.endpoint {
            Endpoint::Shm(path) => format!("shm over unix://{}", path.display()),
            other => other.address(),
        }
    }
}

/// What the connection decision returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The parent process serves the name over inherited pipes.
    Parent {
        /// The parent's pid.
        pid: u32,
    },
    /// The name must be looked up (registry, then resolver); decide again
    /// with what they say.
    LookUp,
    /// Connect to these candidates, in order.
    Connect(Vec<Plan>),
}

#[cfg(test)]
mod tests;
